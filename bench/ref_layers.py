"""The conv/dense layers of a quantized model as plain numbers, and their int8 activations as tvmq computes them.

Why both: the plain-C baseline needs each layer's real weights, requantization parameters, zero points and shapes
(``RefLayer``), and checking it computes what tvmq computes needs every layer's real int8 input and output on
real samples (``capture_activations``), which ``QuantizedModel.run_int`` does not expose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm

from tvmq.codegen.graph import Program, read_program
from tvmq.quant.model import QuantizedModel

WEIGHTED_OPS = ("conv2d", "conv1d", "dense")


@dataclass(frozen=True)
class RefLayer:
    """One conv/dense layer; a conv1d is stored as a conv2d of height 1 (as tvmq lowers it)."""

    name: str
    op: str  # conv2d | conv1d | dense
    in_shape: tuple[int, ...]  # NHWC for convs, (N, K) for dense
    out_shape: tuple[int, ...]
    weight: np.ndarray  # int8, OHWI for convs, (O, K) for dense
    bias: np.ndarray | None  # int32 (O,)
    multiplier: np.ndarray  # int32 (O,)
    shift: np.ndarray  # int32 (O,)
    input_zp: int
    output_zp: int
    act_min: int
    act_max: int
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    macs: int = 0

    @property
    def is_conv(self) -> bool:
        return self.op != "dense"

    def shape_info(self) -> dict:
        """JSON-ready geometry of the layer (for the report)."""
        info = {"input_shape": list(self.in_shape), "output_shape": list(self.out_shape),
                "weight_shape": list(self.weight.shape)}  # fmt: skip
        if self.is_conv:
            info.update(strides=list(self.strides), padding=list(self.padding), dilation=list(self.dilation),
                        groups=self.groups)  # fmt: skip
        return info


def ref_layers(model: QuantizedModel) -> list[RefLayer]:
    """Every conv/dense layer of ``model`` in execution order, with the integer parameters tvmq uses."""
    out = []
    for layer, lp in zip(model.layers, model.plan.layers, strict=True):
        if layer.kind not in WEIGHTED_OPS:
            continue
        if lp.multiplier is None:
            raise ValueError(f"{layer.name}: power-of-two requantization has no plain-C baseline here")
        common = dict(name=layer.name, op=layer.kind, bias=lp.bias, multiplier=lp.multiplier, shift=lp.shift,
                      input_zp=int(lp.inputs[0].zero_point), output_zp=int(lp.output.zero_point),
                      act_min=int(lp.act_min), act_max=int(lp.act_max), macs=int(layer.macs))  # fmt: skip
        if layer.kind == "dense":
            out.append(RefLayer(in_shape=tuple(layer.in_shapes[0]), out_shape=tuple(layer.out_shape),
                                weight=lp.weight, **common))  # fmt: skip
        else:
            out.append(_conv_layer(layer, lp.weight, common))
    return out


def _conv_layer(layer, weight: np.ndarray, common: dict) -> RefLayer:
    """A conv2d as is; a conv1d (N, W, C) as a conv2d (N, 1, W, C), the way tvmq's realisation maps it."""
    a = layer.attrs
    in_shape, out_shape = tuple(layer.in_shapes[0]), tuple(layer.out_shape)
    strides, padding, dilation = tuple(a["strides"]), tuple(a["padding"]), tuple(a["dilation"])
    if layer.kind == "conv1d":
        in_shape, out_shape = (in_shape[0], 1, *in_shape[1:]), (out_shape[0], 1, *out_shape[1:])
        weight = weight.reshape(weight.shape[0], 1, *weight.shape[1:])
        strides, dilation = (1, strides[0]), (1, dilation[0])
        padding = (0, padding[0], 0, padding[1])
    return RefLayer(in_shape=in_shape, out_shape=out_shape, weight=weight, strides=strides, padding=padding,
                    dilation=dilation, groups=int(a["groups"]), **common)  # fmt: skip


def capture_activations(model: QuantizedModel, x_int8: np.ndarray, names: list[str]) -> dict[str, tuple]:
    """{layer name: (inputs (N, ...), outputs (N, ...))} for the named steps, on the host, sample by sample.

    Runs the very program ``tvmq.build`` emits C for (same PrimFuncs, same order) with TVM's LLVM backend, keeping
    every step's data input and output. The final output is checked against ``run_int`` so the capture is known
    to be tvmq's own computation.
    """
    program = read_program(model.int_mod)
    lib = _compile_kernels(program)
    captured: dict[str, tuple[list, list]] = {n: ([], []) for n in names}
    finals = []
    for sample in x_int8:
        values = _run_program(program, lib, sample[None])
        for name in names:
            captured[name][0].append(values[name][0])
            captured[name][1].append(values[name][1])
        finals.append(values["__output__"][1])
    expected = model.run_int(x_int8)
    if not np.array_equal(np.concatenate(finals), expected):
        raise AssertionError("the host step-by-step run of tvmq's program disagrees with QuantizedModel.run_int")
    return {n: (np.stack(i), np.stack(o)) for n, (i, o) in captured.items()}


def _compile_kernels(program: Program) -> tvm.runtime.Module:
    mod = tvm.IRModule({k: f.with_attr("global_symbol", k) for k, f in program.kernels.items()})
    return tvm.compile(mod, target="llvm")


def _run_program(program: Program, lib, x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One sample through every step; {step name: (data input, output)} plus ``__output__``."""
    values: dict[int, np.ndarray] = {id(program.input): x}

    def get(t) -> np.ndarray:
        owner = program.storage(t)
        data = owner.value if owner.kind == "const" else values[id(owner)]
        return np.ascontiguousarray(np.asarray(data).reshape(t.shape))

    seen = {}
    for step in program.steps:
        args = [tvm.runtime.tensor(get(t)) for t in step.inputs]
        out = tvm.runtime.tensor(np.zeros(step.output.shape, step.output.dtype))
        lib[step.kernel](*args, out)
        values[id(step.output)] = out.numpy()
        seen[step.name] = (get(step.inputs[0]), values[id(step.output)])
    seen["__output__"] = (x, get(program.output))
    return seen
