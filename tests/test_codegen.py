"""C generation: targets, the static memory plan, the emitted library's contract, and atomic export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tvm

import tvmq
from tvmq.codegen.graph import Program, Step, Tensor
from tvmq.codegen.planner import ALIGNMENT, plan_memory
from tvmq.errors import ConfigError, ExportError, TargetError
from tvmq.target import CORES, parse_target


# -- targets ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("core", sorted(CORES))
def test_every_core_parses_in_all_three_forms(core: str) -> None:
    forms = [f"c -mcpu={core}", {"kind": "c", "mcpu": core}, tvm.target.Target({"kind": "c", "mcpu": core})]
    assert {parse_target(f).core.name for f in forms} == {core}


def test_core_decides_dsp_and_float_abi() -> None:
    assert parse_target("c -mcpu=cortex-m4").core.has_dsp
    assert not parse_target("c -mcpu=cortex-m3").core.has_dsp
    assert "-mfloat-abi=soft" in parse_target("c -mcpu=cortex-m0").core.cflags
    assert "-mfpu=fpv4-sp-d16" in parse_target("c -mcpu=cortex-m4").core.cflags


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("llvm", "kind 'llvm' is not supported"),
        ("c -mcpu=cortex-a53", "core 'cortex-a53' is not supported; choose one of: cortex-m0"),
        ("c", "no -mcpu given"),
        ("c mcpu=cortex-m4", "not of the form -key=value"),
        ("c -mcpu=cortex-m4 -mattr=+dsp", "unknown option -mattr"),
        ("", "target is empty"),
        ({"kind": "c", "cpu": "cortex-m4"}, "unknown keys"),
        (tvm.target.Target("llvm"), "kind 'llvm' is not supported"),
        (42, "must be a string"),
    ],
)
def test_bad_targets_name_the_problem(target, message: str) -> None:
    with pytest.raises(TargetError, match=re.escape(message)):
        parse_target(target)


def test_build_rejects_what_is_not_a_quantized_model() -> None:
    with pytest.raises(ConfigError, match="takes a QuantizedModel"):
        tvmq.build("model.onnx", target="c -mcpu=cortex-m4")


# -- memory planner (synthetic programs: exact expectations) ------------------------------------------------------
def _t(name: str, nbytes: int, kind: str = "activation") -> Tensor:
    return Tensor(name, (1, nbytes), "int8", kind)


def _chain(sizes: list[int], inplace_at: tuple[int, ...] = ()) -> Program:
    """input -> s0 -> s1 -> ... : step i reads the previous tensor and writes ``sizes[i]`` bytes."""
    x = _t("input", 64, "input")
    steps, prev = [], x
    for i, size in enumerate(sizes):
        out = _t(f"t{i}", size)
        attrs = {"tvmq.inplace": [0]} if i in inplace_at else {}
        steps.append(Step(f"s{i}", f"k{i}", [prev], out, attrs))
        prev = out
    return Program(x, prev, steps, {}, {})


def test_chain_needs_two_buffers_and_reaches_the_lower_bound() -> None:
    plan = plan_memory(_chain([96, 64, 96, 32]))
    # the last tensor is the caller's output; t0..t2 ping-pong: peak is t1 + t2 = 64 + 96 (aligned)
    assert plan.lower_bound_bytes == 160
    assert plan.arena_bytes == 160
    assert plan.ratio == 1.0


def test_inplace_elementwise_shares_its_input_buffer() -> None:
    plan = plan_memory(_chain([64, 64, 32], inplace_at=(1,)))
    shared = [b for b in plan.buffers if len(b.tensors) == 2]
    assert [t.name for t in shared[0].tensors] == ["t0", "t1"]
    assert plan.arena_bytes == 64


def test_inplace_refused_when_the_input_is_read_later() -> None:
    program = _chain([64, 64, 32], inplace_at=(1,))
    program.steps[2].inputs.append(program.steps[0].output)  # t0 is still needed by step 2
    plan = plan_memory(program)
    assert all(len(b.tensors) == 1 for b in plan.buffers)
    assert plan.arena_bytes == 128


def test_model_input_and_output_take_no_arena_space() -> None:
    program = _chain([48])
    plan = plan_memory(program)
    assert plan.arena_bytes == 0
    assert plan.location[program.output] == ("output", 0)
    assert plan.location[program.input] == ("input", 0)


def _assert_no_live_overlap(plan) -> None:
    for a in plan.buffers:
        assert a.offset % ALIGNMENT == 0
        for b in plan.buffers:
            if a is not b and a.overlaps_in_time(b):
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset, (a, b)


@pytest.mark.parametrize("seed", range(20))
def test_random_graphs_never_overlap_live_buffers(seed: int) -> None:
    """Random DAGs (each step reads 1-3 earlier tensors): live buffers never share bytes, arena >= lower bound."""
    rng = np.random.default_rng(seed)
    x = _t("input", 64, "input")
    tensors, steps = [x], []
    for i in range(int(rng.integers(3, 14))):
        inputs = list(rng.choice(len(tensors), size=min(len(tensors), int(rng.integers(1, 4))), replace=False))
        out = _t(f"t{i}", int(rng.integers(1, 40)) * 8)
        steps.append(Step(f"s{i}", f"k{i}", [tensors[j] for j in inputs], out,
                          {"tvmq.inplace": [0]} if rng.random() < 0.3 else {}))  # fmt: skip
        tensors.append(out)
    plan = plan_memory(Program(x, tensors[-1], steps, {}, {}))
    _assert_no_live_overlap(plan)
    assert plan.arena_bytes >= plan.lower_bound_bytes


# -- the generated library ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_artifact(digits_int8):
    return tvmq.build(digits_int8, target="c -mcpu=cortex-m4", name="digits")


def _function_body(source: str, symbol: str) -> str:
    start = source.index(f"{symbol}(")
    return source[start : source.index("\n}\n", start)]


def test_library_contract(digits_artifact) -> None:
    files = digits_artifact.files
    assert set(files) == {"model.c", "model.h", "tvmq_runtime.h", "tvmq.mk", "tvmq.cmake"}
    source, header = files["model.c"], files["model.h"]
    for api in ("int32_t tvmq_digits_run(const int8_t* input, int8_t* output);",
                "void tvmq_digits_quantize_input(const float* x, int8_t* q);",
                "void tvmq_digits_dequantize_output(const int8_t* q, float* y);"):  # fmt: skip
        assert api in header
    text = "\n".join(files.values())
    for forbidden in ("malloc(", "tvm/", "TVM_DLL", "TVMBackend", "DLTensor", "__tvm_ffi"):
        assert forbidden not in text, forbidden
    # integer-only inference: no float in any kernel the run function calls
    for step in digits_artifact.metadata["steps"]:
        body = _function_body(source, f"static TVMQ_KERNEL void {step['kernel']}")
        assert "float" not in body and "double" not in body, step["kernel"]
    assert "TVMQ_WEIGHTS" in source and "static uint8_t tvmq_digits_arena[" in source


def test_metadata_matches_the_plan(digits_artifact, digits_int8) -> None:
    meta = digits_artifact.metadata
    assert meta["input"]["shape"] == list(digits_int8.input_shape)
    assert meta["output"]["bytes"] == int(np.prod(digits_int8.output_shape))
    assert meta["arena_bytes"] == digits_artifact.plan.arena_bytes >= meta["memory_plan"]["lower_bound_bytes"]
    assert meta["macs"] == sum(row["macs"] for row in digits_int8.layer_stats())
    _assert_no_live_overlap(digits_artifact.plan)


# -- export -------------------------------------------------------------------------------------------------------
def test_export_writes_everything(digits_artifact, tmp_path: Path) -> None:
    out = digits_artifact.export(tmp_path / "lib")
    assert sorted(p.name for p in out.iterdir()) == sorted([*digits_artifact.files, "metadata.json"])
    assert json.loads((out / "metadata.json").read_text())["name"] == "digits"
    assert [p.name for p in tmp_path.iterdir()] == ["lib"]  # no staging directory left behind


def test_export_refuses_a_non_empty_directory_unless_told(digits_artifact, tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        digits_artifact.export(tmp_path / "lib")
    assert (tmp_path / "lib" / "notes.txt").read_text() == "mine"
    digits_artifact.export(tmp_path / "lib", overwrite=True)
    assert not (tmp_path / "lib" / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib"]


def test_export_to_an_unwritable_place_fails_cleanly(digits_artifact, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="cannot export to"):
        digits_artifact.export(blocker / "lib")
    with pytest.raises(ExportError, match="not a directory"):
        digits_artifact.export(blocker)


def test_export_failing_midway_leaves_nothing(digits_artifact, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    original = Path.write_text

    def failing_write(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write)
    with pytest.raises(ExportError, match="No space left on device"):
        digits_artifact.export(tmp_path / "lib")
    assert list(tmp_path.iterdir()) == []
