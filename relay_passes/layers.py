"""Find the quantizable layers of a normalised float Relax function.

A layer is one anchor operator plus what fuses into its integer epilogue: conv/dense + constant bias add +
ReLU/ReLU6/Clip; residual add + activation; pools + activation; and single-op layers (concat, pad, softmax,
sigmoid, clamp, reshape, transpose). Layer names are ``<kind>_<index>`` in execution order; they are the names
``QuantConfig.overrides`` and ``QuantizedModel.summary()`` use.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

from ..errors import UnsupportedOpError
from ._util import const_array, is_op, prim_float, shape_of

CLAMP_OPS = ("relax.nn.relu", "relax.clip", "relax.maximum", "relax.minimum")
RESHAPE_OPS = ("relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.flatten")
POOL_KINDS = {
    "relax.nn.max_pool2d": "max_pool2d",
    "relax.nn.max_pool1d": "max_pool1d",
    "relax.nn.avg_pool2d": "avg_pool2d",
    "relax.nn.avg_pool1d": "avg_pool1d",
}
# Layers whose output keeps the input's scale and zero point (integer data movement or exact averaging).
SAME_QPARAMS_KINDS = frozenset(
    {"max_pool2d", "max_pool1d", "avg_pool2d", "avg_pool1d", "global_avg_pool", "pad", "clamp", "reshape",
     "transpose"}
)  # fmt: skip
WEIGHTED_KINDS = frozenset({"conv2d", "conv1d", "dense"})


@dataclass
class Layer:
    """One quantizable layer of the float graph."""

    name: str
    kind: str
    inputs: list[relax.Var]
    output: relax.Var
    out_shape: tuple[int, ...]
    in_shapes: list[tuple[int, ...]]
    weight: np.ndarray | None = None  # OHWI / OWI (conv) or (O, K) (dense), float32
    bias: np.ndarray | None = None  # (O,), float32
    clamp: tuple[float, float] | None = None  # fused activation range in real values
    attrs: dict[str, Any] = field(default_factory=dict)
    members: list[relax.Var] = field(default_factory=list)  # every float binding this layer replaces

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference of this layer."""
        if self.kind in ("conv2d", "conv1d", "dense"):
            per_output = int(np.prod(self.weight.shape[1:]))
            return int(np.prod(self.out_shape)) * per_output
        return 0


def find_layers(func: relax.Function) -> list[Layer]:
    """Group the bindings of ``func`` (normalised, one dataflow block) into layers, in execution order.

    Raises UnsupportedOpError listing every binding that fits no layer pattern.
    """
    bindings = [b for block in func.body.blocks for b in block.bindings]
    values = {b.var: b.value for b in bindings}
    uses = _use_counts(func, bindings)
    taken: set[relax.Var] = set()
    counters: Counter[str] = Counter()
    layers: list[Layer] = []
    problems: list[str] = []

    def single_consumer(var: relax.Var, *ops: str) -> relax.Var | None:
        if uses[var] != 1:
            return None
        for b in bindings:
            if is_op(b.value, *ops) and any(a.same_as(var) for a in b.value.args):
                return b.var
        return None

    def absorb_clamp(layer: Layer) -> None:
        # Clip arrives as relu, clip, or maximum then minimum with scalar constants: fold the whole chain.
        while (nxt := single_consumer(layer.output, *CLAMP_OPS)) is not None and _is_clamp(values[nxt]):
            layer.clamp = _intersect(layer.clamp, _clamp_range(values[nxt]))
            layer.members.append(nxt)
            layer.output = nxt

    for binding in bindings:
        var, value = binding.var, binding.value
        if var in taken:
            continue
        layer = _anchor_layer(var, value, values, problems)
        if layer is None:
            continue
        if layer.kind in WEIGHTED_KINDS:
            nxt = single_consumer(layer.output, "relax.add")
            if nxt is not None:
                bias = const_array(values[nxt].args[1])
                if bias is not None and bias.size == layer.weight.shape[0]:
                    layer.bias = bias.reshape(-1).astype(np.float32) + (layer.bias if layer.bias is not None else 0)
                    layer.members.append(nxt)
                    layer.output = nxt
        if (
            layer.kind in WEIGHTED_KINDS
            or layer.kind == "add"
            or layer.kind in POOL_KINDS.values()
            or (layer.kind == "global_avg_pool")
        ):
            absorb_clamp(layer)
        layer.name = f"{layer.kind}_{counters[layer.kind]}"
        counters[layer.kind] += 1
        layer.out_shape = shape_of(layer.output)
        taken.update(layer.members)
        layers.append(layer)
    if problems:
        raise UnsupportedOpError(
            "the model has operations tvmq cannot quantize:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return layers


def _anchor_layer(var: relax.Var, value: relax.Expr, values: dict, problems: list[str]) -> Layer | None:
    def make(kind: str, inputs: list[relax.Var], **kw: Any) -> Layer:
        return Layer(
            name="",
            kind=kind,
            inputs=inputs,
            output=var,
            out_shape=(),
            in_shapes=[shape_of(i) for i in inputs],
            members=[var],
            **kw,
        )

    if isinstance(value, relax.Tuple | relax.TupleGetItem):
        return None  # tuples only feed concat, which reads through them
    if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
        problems.append(f"binding '{var.name}' = {type(value).__name__} (not an operator call)")
        return None
    op, args, attrs = value.op.name, value.args, value.attrs
    where = f"'{op}' at '{var.name}'"
    if op in ("relax.nn.conv2d", "relax.nn.conv1d"):
        weight = const_array(args[1])
        ok_layout = attrs.data_layout in ("NHWC", "NWC") and attrs.kernel_layout in ("OHWI", "OWI")
        if weight is None or not ok_layout:
            problems.append(f"{where}: convolution needs a constant weight in channels-last layout")
            return None
        return make(
            op.split(".")[-1], [args[0]], weight=weight.astype(np.float32),
            attrs={"strides": _ints(attrs.strides), "padding": _ints(attrs.padding),
                   "dilation": _ints(attrs.dilation), "groups": int(attrs.groups)},
        )  # fmt: skip
    if op == "relax.matmul":
        weight = const_array(args[1])
        if weight is None or weight.ndim != 2 or len(shape_of(args[0])) != 2:
            problems.append(f"{where}: only (batch, K) x constant (K, O) matmul/Gemm is supported")
            return None
        return make("dense", [args[0]], weight=np.ascontiguousarray(weight.T).astype(np.float32))
    if op == "relax.add":
        if const_array(args[0]) is not None or const_array(args[1]) is not None:
            problems.append(f"{where}: add of a constant that does not follow a conv/dense (no bias to fold into)")
            return None
        if shape_of(args[0]) != shape_of(args[1]):
            problems.append(f"{where}: add of different shapes {shape_of(args[0])} and {shape_of(args[1])}")
            return None
        return make("add", [args[0], args[1]])
    if op in POOL_KINDS:
        if attrs.layout not in ("NHWC", "NWC"):
            problems.append(f"{where}: pooling must follow a convolution (channels-last), got layout {attrs.layout}")
            return None
        if any(d != 1 for d in _ints(attrs.dilation)):
            problems.append(f"{where}: dilated pooling is not supported")
            return None
        return make(
            POOL_KINDS[op], [args[0]],
            attrs={"pool_size": _ints(attrs.pool_size), "strides": _ints(attrs.strides),
                   "padding": _ints(attrs.padding), "ceil_mode": bool(attrs.ceil_mode),
                   "count_include_pad": bool(attrs.count_include_pad)},
        )  # fmt: skip
    if op == "relax.mean":
        shape = shape_of(args[0])
        axes = sorted(int(a) % len(shape) for a in attrs.axis)
        if len(shape) in (3, 4) and axes == list(range(1, len(shape) - 1)):
            return make("global_avg_pool", [args[0]], attrs={"channels_last": True})
        if len(shape) in (3, 4) and axes == list(range(2, len(shape))):
            return make("global_avg_pool", [args[0]], attrs={"channels_last": False})
        problems.append(f"{where}: mean over axes {axes} of shape {shape} (only global average pooling)")
        return None
    if op == "relax.concat":
        parts = args[0]
        if isinstance(parts, relax.Var):
            parts = values.get(parts)
        if not isinstance(parts, relax.Tuple):
            problems.append(f"{where}: concat of a non-literal tuple")
            return None
        return make("concat", list(parts.fields), attrs={"axis": int(attrs.axis) % len(shape_of(var))})
    if op == "relax.nn.pad":
        if attrs.pad_mode != "constant":
            problems.append(f"{where}: pad mode '{attrs.pad_mode}' (only constant)")
            return None
        return make("pad", [args[0]], attrs={"pad_width": _ints(attrs.pad_width), "pad_value": float(attrs.pad_value)})
    if op == "relax.nn.softmax":
        if int(attrs.axis) % len(shape_of(var)) != len(shape_of(var)) - 1:
            problems.append(f"{where}: softmax over a non-last axis")
            return None
        return make("softmax", [args[0]])
    if op == "relax.sigmoid":
        return make("sigmoid", [args[0]])
    if op in CLAMP_OPS and _is_clamp(value):
        return make("clamp", [args[0]], clamp=_clamp_range(value))
    if op in RESHAPE_OPS:
        return make("reshape", [args[0]])
    if op == "relax.permute_dims":
        return make("transpose", [args[0]], attrs={"axes": _ints(attrs.axes)})
    problems.append(f"{where}: operator has no integer implementation in tvmq")
    return None


def _is_clamp(call: relax.Call) -> bool:
    """relu, clip, or maximum/minimum of a tensor and a scalar constant."""
    if is_op(call, "relax.maximum", "relax.minimum"):
        bound = const_array(call.args[1])
        return bound is not None and bound.size == 1
    return True


def _clamp_range(call: relax.Call) -> tuple[float, float]:
    if is_op(call, "relax.nn.relu"):
        return (0.0, float("inf"))
    if is_op(call, "relax.maximum"):
        return (float(const_array(call.args[1])), float("inf"))
    if is_op(call, "relax.minimum"):
        return (float("-inf"), float(const_array(call.args[1])))
    return (prim_float(call.args[1]), prim_float(call.args[2]))


def _intersect(a: tuple[float, float] | None, b: tuple[float, float]) -> tuple[float, float]:
    return b if a is None else (max(a[0], b[0]), min(a[1], b[1]))


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def _use_counts(func: relax.Function, bindings: list) -> Counter:
    counts: Counter = Counter()
    for b in bindings:
        for v in relax.analysis.free_vars(b.value):
            counts[v] += 1
    for v in relax.analysis.free_vars(func.body.body):
        counts[v] += 1
    return counts
