"""RAM below TFLM by construction: in-place depthwise/1x1 convolutions, residual ADDs fused into convolutions
(written over the other operand), and concatenations whose producers write straight into their slices.

The arithmetic is the plain kernels' (the host runs them on separate buffers and keeps the concat copy); only the
device shares bytes, so QEMU equal to the host proves the kernel orders and strided writes safe, and the plan
proves the bytes are shared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_ops import _model, _node, _w

import tvmq
from tvmq import schedules as S
from tvmq.codegen.graph import read_program
from tvmq.codegen.planner import ALIGNMENT, plan_memory
from tvmq.codegen.slices import write_concat_slices


def _separable_residual_2d():
    """conv -> depthwise s1 (in place) -> depthwise s2 padded (in place) -> 1x1 s2 8->12 (in place: the stride
    leaves room, no shift) -> conv -> conv + ADD of the 1x1's output (fused, over it) -> 1x1 conv + ADD
    of its own input (fused; that input is also its data, so it keeps its own buffer) -> global pool -> dense."""
    inits = {"w1": _w(1, 8, 3, 3, 3), "dw1": _w(2, 8, 1, 3, 3), "dw2": _w(3, 8, 1, 3, 3), "pw": _w(4, 12, 8, 1, 1),
             "w5": _w(5, 6, 12, 3, 3), "b5": _w(6, 6), "w6": _w(7, 12, 6, 3, 3), "w7": _w(8, 12, 12, 1, 1),
             "w8": _w(9, 4, 12), "b8": _w(10, 4)}  # fmt: skip
    nodes = [
        _node("Conv", ["x", "w1"], "c1", pads=[1, 1, 1, 1]), _node("Relu", ["c1"], "r1"),
        _node("Conv", ["r1", "dw1"], "d1", group=8, pads=[1, 1, 1, 1]), _node("Relu", ["d1"], "r2"),
        _node("Conv", ["r2", "dw2"], "d2", group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
        _node("Conv", ["d2", "pw"], "p", strides=[2, 2]),
        _node("Conv", ["p", "w5", "b5"], "c5", pads=[1, 1, 1, 1]), _node("Relu", ["c5"], "r5"),
        _node("Conv", ["r5", "w6"], "c6", pads=[1, 1, 1, 1]), _node("Add", ["c6", "p"], "a1"),
        _node("Relu", ["a1"], "r6"),
        _node("Conv", ["r6", "w7"], "c7"), _node("Add", ["r6", "c7"], "a2"),
        _node("GlobalAveragePool", ["a2"], "g"), _node("Flatten", ["g"], "f"),
        _node("Gemm", ["f", "w8", "b8"], "y", transB=1),
    ]  # fmt: skip
    return _model(nodes, [("x", [1, 3, 10, 10])], [("y", None)], inits), (3, 10, 10)


def _separable_1d():
    """conv1d -> depthwise conv1d (in place) -> 1x1 conv1d 8->12 expanding (in place) -> conv1d -> conv1d + ADD of
    the 1x1's output (fused, over it) -> dense."""
    inits = {"w1": _w(11, 8, 4, 3), "dw": _w(12, 8, 1, 5), "pw": _w(13, 12, 8, 1), "w4": _w(14, 8, 12, 3),
             "w5": _w(15, 12, 8, 3), "w6": _w(16, 96, 3)}  # fmt: skip
    nodes = [
        _node("Conv", ["x", "w1"], "c1", pads=[1, 1]), _node("Relu", ["c1"], "r1"),
        _node("Conv", ["r1", "dw"], "d", group=8, pads=[2, 2]), _node("Relu", ["d"], "r2"),
        _node("Conv", ["r2", "pw"], "p"), _node("Conv", ["p", "w4"], "c4", pads=[1, 1]), _node("Relu", ["c4"], "r4"),
        _node("Conv", ["r4", "w5"], "c5", pads=[1, 1]), _node("Add", ["p", "c5"], "a"),
        _node("Flatten", ["a"], "f"), _node("MatMul", ["f", "w6"], "y"),
    ]  # fmt: skip
    return _model(nodes, [("x", [1, 4, 8])], [("y", None)], inits), (4, 8)


CASES = {"separable_residual_2d": _separable_residual_2d, "separable_1d": _separable_1d}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    model, shape = CASES[request.param]()
    rng = np.random.default_rng(3)
    q = tvmq.quantize(model, rng.normal(size=(64, *shape)).astype(np.float32), progress=False)
    return request.param, q, rng.normal(size=(12, *shape)).astype(np.float32)


def _shares(plan, program, step, k: int) -> bool:
    """The step's output starts where input k starts, or ``tvmq.inplace_shift`` bytes before it."""
    out_where, out_offset = plan.location[program.storage(step.output)]
    in_where, in_offset = plan.location[program.storage(step.inputs[k])]
    return out_where == in_where == "arena" and out_offset == in_offset - int(step.attrs["tvmq.inplace_shift"])


def test_outputs_share_the_bytes_of_dying_inputs(case) -> None:
    name, q, _ = case
    program = read_program(q.int_mod)
    plan = plan_memory(program)
    ops = {s.name: str(s.attrs["tvmq.op"]) for s in program.steps}
    shared = {s.name for s in program.steps for k in s.attrs["tvmq.inplace"] if _shares(plan, program, s, int(k))}
    if name == "separable_residual_2d":
        assert ops["conv2d_5"] == ops["conv2d_6"] == "conv2d+add" and not {"add_0", "add_1"} & set(ops)
        assert {"conv2d_1", "conv2d_2", "conv2d_3", "conv2d_5"} <= shared and "conv2d_6" not in shared
    else:
        assert ops["conv1d_4"] == "conv1d+add" and "add_0" not in ops
        assert {"conv1d_1", "conv1d_2", "conv1d_4"} <= shared
        expand = next(s for s in program.steps if s.name == "conv1d_2")
        assert int(expand.attrs["tvmq.inplace_shift"]) == 7 * (12 - 8)  # (W - 1) * (O - C): output before input
    assert plan.arena_bytes - plan.lower_bound_bytes < ALIGNMENT  # the liveness bound, up to one alignment pad
    # without sharing, the plan needs more
    for step in program.steps:
        step.attrs = {**step.attrs, "tvmq.inplace": []}
    assert plan_memory(program).arena_bytes > plan.arena_bytes


def test_inplace_kernels_on_qemu_equal_host(case) -> None:
    name, q, x = case
    result = tvmq.qemu.run(tvmq.build(q, name=name), x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(q.quantize_input(x)))


def test_inplace_modes_refuse_convolutions_they_do_not_fit() -> None:
    with pytest.raises(ValueError, match="'channel' needs a depthwise convolution with O == C"):
        S.qconv2d_primfunc((1, 4, 4, 4), (8, 3, 3, 1), groups=4, inplace="channel")
    with pytest.raises(ValueError, match="'pixel' needs an unpadded 1x1 convolution"):
        S.qconv2d_primfunc((1, 4, 4, 4), (8, 3, 3, 4), inplace="pixel")
    with pytest.raises(ValueError, match="in-place mode 'row'"):
        S.qconv2d_primfunc((1, 4, 4, 4), (4, 1, 1, 4), inplace="row")
    with pytest.raises(ValueError, match="in-place convolutions work on int8 storage"):
        S.qconv2d_primfunc((1, 4, 4, 4), (4, 1, 1, 4), inplace="pixel", codebook_bits=4)


def test_depthwise_separable_zoo_model_runs_in_place_on_qemu() -> None:
    """DS-CNN (TFLite int8): every depthwise and pointwise convolution over its input, half TFLM's head."""
    q = tvmq.load_quantized(Path(tvmq.examples.__file__).parent / "data" / "vowels_dscnn.int8.tflite")
    program = read_program(q.int_mod)
    plan = plan_memory(program)
    inplace = [s for s in program.steps if list(s.attrs["tvmq.inplace"])]
    assert len(inplace) == 8 and all(_shares(plan, program, s, 0) for s in inplace)
    largest = max(s.output.nbytes for s in program.steps)
    assert plan.arena_bytes == largest + ALIGNMENT * 2  # the feature map, then the pooled vector beside it
    artifact = tvmq.build(q, name="vowels_dscnn")
    assert artifact.arena_bytes == plan.arena_bytes
    x = np.random.default_rng(5).integers(-128, 128, size=(6, *q.input_shape[1:])).astype(np.int8)
    np.testing.assert_array_equal(tvmq.qemu.run(artifact, x, progress=False).raw_outputs, q.run_int(x))


def _two_concats():
    """Two branches concatenated mid-graph (channels), then two 1x1 branches concatenated as the model output."""
    inits = {"w1": _w(1, 6, 3, 3, 3), "w2": _w(2, 4, 3, 1, 1), "w3": _w(3, 5, 10, 3, 3), "w4": _w(4, 3, 5, 1, 1),
             "w5": _w(5, 2, 5, 1, 1)}  # fmt: skip
    nodes = [
        _node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), _node("Relu", ["a"], "ra"),
        _node("Conv", ["x", "w2"], "b"), _node("Concat", ["ra", "b"], "c", axis=1),
        _node("Conv", ["c", "w3"], "d", pads=[1, 1, 1, 1]), _node("Relu", ["d"], "rd"),
        _node("Conv", ["rd", "w4"], "e"), _node("Conv", ["rd", "w5"], "f"), _node("Concat", ["e", "f"], "y", axis=1),
    ]  # fmt: skip
    return _model(nodes, [("x", [1, 3, 6, 6])], [("y", None)], inits)


def test_concat_producers_write_into_their_slices_on_qemu() -> None:
    rng = np.random.default_rng(0)
    q = tvmq.quantize(_two_concats(), rng.normal(size=(64, 3, 6, 6)).astype(np.float32), progress=False)
    program = read_program(q.int_mod)
    sliced = write_concat_slices(program)
    assert [s for s in program.steps if s.attrs["tvmq.op"] == "concat"]
    assert not [s for s in sliced.steps if s.attrs["tvmq.op"] == "concat"]
    writers = [s for s in sliced.steps if s.out_strides is not None]
    assert [sliced.byte_offset(s.output) for s in writers] == [0, 6, 0, 3]  # channel offsets, NHWC
    x = rng.normal(size=(6, 3, 6, 6)).astype(np.float32)
    result = tvmq.qemu.run(tvmq.build(q, name="two_concats"), x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(q.quantize_input(x)))


def test_int8_tflite_concat_of_two_convs_needs_no_arena() -> None:
    """Both convolutions write into the caller's output buffer: TFLM keeps both of their outputs and the concat."""
    q = tvmq.load_quantized(Path(__file__).parent / "data" / "tflite_int8" / "concat_two_convs.tflite")
    program = read_program(q.int_mod)
    assert plan_memory(program).arena_bytes > 0
    artifact = tvmq.build(q, name="concat_two_convs")
    assert artifact.arena_bytes == 0
    x = np.random.default_rng(2).integers(-128, 128, size=(5, *q.input_shape[1:])).astype(np.int8)
    np.testing.assert_array_equal(tvmq.qemu.run(artifact, x, progress=False).raw_outputs, q.run_int(x))


@pytest.mark.parametrize("name", ["basicmotions", "vowels_dscnn"])
def test_io_in_the_arena_counts_like_tflm_and_runs_on_qemu(name: str) -> None:
    """``io_in_arena``: the model's input and output get arena buffers, as TFLM's head holds them; the caller may
    use them without a copy. The arena then holds everything, and stays below TFLM's head (1200 / 4992 B)."""
    q = tvmq.load_quantized(Path(tvmq.examples.__file__).parent / "data" / f"{name}.int8.tflite")
    caller_io, in_arena = tvmq.build(q, name=name), tvmq.build(q, name=name, io_in_arena=True)
    io_bytes = in_arena.metadata["input"]["bytes"] + in_arena.metadata["output"]["bytes"]
    assert caller_io.arena_bytes <= in_arena.arena_bytes <= caller_io.arena_bytes + io_bytes + 2 * ALIGNMENT
    assert in_arena.arena_bytes <= {"basicmotions": 1200, "vowels_dscnn": 4992}[name]
    assert in_arena.metadata["io_in_arena"] and not caller_io.metadata["io_in_arena"]
    header = in_arena.files["model.h"]
    assert f"int8_t* tvmq_{name}_input(void);" in header and f"#define TVMQ_{name.upper()}_IO_IN_ARENA 1" in header
    x = np.random.default_rng(4).integers(-128, 128, size=(4, *q.input_shape[1:])).astype(np.int8)
    np.testing.assert_array_equal(tvmq.qemu.run(in_arena, x, progress=False).raw_outputs, q.run_int(x))
