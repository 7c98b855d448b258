"""Normalisation passes: one canonical float graph for every frontend.

Internal layout is channels-last (NHWC for 2-D, NWC for 1-D, weights OHWI/OWI): Cortex-M kernels (CMSIS-NN,
TinyEngine) iterate over contiguous channels for SIMD and in-place depthwise, and TFLite models arrive NHWC.
NCHW models (ONNX) get a transpose at the input, which becomes a cheap int8 copy.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ._util import const_array, is_op

CONV_OPS = ("relax.nn.conv1d", "relax.nn.conv2d")


@relax.expr_functor.mutator
class _BatchNormFolder(relax.PyExprMutator):
    """Rewrites ``batch_norm(conv|matmul [+ bias])[0]`` into the same op with scaled weights plus one bias."""

    def __init__(self, mod: tvm.IRModule, var2val: dict) -> None:
        super().__init__(mod)
        self.var2val = var2val

    def visit_tuple_getitem_(self, op: relax.TupleGetItem) -> relax.Expr:
        folded = self._fold(op) if op.index == 0 else None
        return folded if folded is not None else super().visit_tuple_getitem_(op)

    def _producer(self, expr: relax.Expr) -> relax.Expr | None:
        return self.var2val.get(expr) if isinstance(expr, relax.Var) else None

    def _fold(self, op: relax.TupleGetItem) -> relax.Expr | None:
        bn = self._producer(op.tuple_value)
        if not is_op(bn, "relax.nn.batch_norm"):
            return None
        params = [const_array(a) for a in bn.args[1:5]]
        if any(p is None for p in params):
            return None
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        eps = float(bn.attrs.epsilon)
        gamma = gamma if bn.attrs.scale else np.ones_like(gamma)
        beta = beta if bn.attrs.center else np.zeros_like(beta)
        k = gamma / np.sqrt(var + eps)

        bias = np.zeros_like(k)
        anchor = self._producer(bn.args[0])
        if is_op(anchor, "relax.add"):
            b = const_array(anchor.args[1])
            if b is None or b.size != k.size:
                return None
            bias = b.reshape(-1).astype(np.float64)
            anchor = self._producer(anchor.args[0])
        if is_op(anchor, *CONV_OPS):
            weight = const_array(anchor.args[1])
            if weight is None or str(anchor.attrs.kernel_layout)[0] != "O" or str(anchor.attrs.out_layout)[1] != "C":
                return None
            scaled = weight * k.reshape((-1,) + (1,) * (weight.ndim - 1))
            bias_shape = (1, -1) + (1,) * (weight.ndim - 2)
        elif is_op(anchor, "relax.matmul"):
            weight = const_array(anchor.args[1])
            if weight is None or weight.ndim != 2:
                return None
            scaled = weight * k.reshape(1, -1)
            bias_shape = (-1,)
        else:
            return None
        new_bias = ((bias - mean) * k + beta).astype(np.float32).reshape(bias_shape)
        data = self.visit_expr(anchor.args[0])
        call = relax.Call(anchor.op, [data, relax.const(scaled.astype(np.float32))], anchor.attrs)
        return relax.op.add(self.builder_.emit(call), relax.const(new_bias))


@relax.transform.function_pass(opt_level=0, name="tvmq.FoldBatchNorm")
class FoldBatchNorm:
    """Fold inference BatchNorm into the preceding conv/dense (weights scaled per output channel, bias shifted)."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        folder = _BatchNormFolder(mod, relax.analysis.get_var2val(func))
        return relax.analysis.remove_all_unused(folder.visit_expr(func))


@relax.expr_functor.mutator
class _PadIntoConv(relax.PyExprMutator):
    """Rewrites ``conv(pad(x, 0), w)`` into ``conv(x, w)`` with the pad added to the conv's own padding."""

    def __init__(self, mod: tvm.IRModule, var2val: dict) -> None:
        super().__init__(mod)
        self.var2val = var2val

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        pad = self.var2val.get(call.args[0]) if is_op(call, *CONV_OPS) else None
        if not is_op(pad, "relax.nn.pad") or pad.attrs.pad_mode != "constant" or float(pad.attrs.pad_value) != 0.0:
            return super().visit_call_(call)
        width = [int(v) for v in pad.attrs.pad_width]
        layout = str(call.attrs.data_layout)
        spatial = [i for i, c in enumerate(layout) if c not in "NC"]
        if any(width[2 * i] or width[2 * i + 1] for i in range(len(layout)) if i not in spatial):
            return super().visit_call_(call)  # padding of batch or channels cannot move into the conv
        conv_pad = [int(v) for v in call.attrs.padding]
        n = len(spatial)
        before = [conv_pad[k] + width[2 * spatial[k]] for k in range(n)]
        after = [conv_pad[n + k] + width[2 * spatial[k] + 1] for k in range(n)]
        op = relax.op.nn.conv2d if n == 2 else relax.op.nn.conv1d
        a = call.attrs
        return op(
            self.visit_expr(pad.args[0]),
            self.visit_expr(call.args[1]),
            strides=a.strides,
            padding=before + after,
            dilation=a.dilation,
            groups=a.groups,
            data_layout=a.data_layout,
            kernel_layout=a.kernel_layout,
            out_layout=a.out_layout,
        )


@relax.transform.function_pass(opt_level=0, name="tvmq.FoldPadIntoConv")
class FoldPadIntoConv:
    """Fold a zero constant pad of the spatial axes into the padding of the convolution it feeds."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        folder = _PadIntoConv(mod, relax.analysis.get_var2val(func))
        return relax.analysis.remove_all_unused(folder.visit_expr(func))


def to_channels_last() -> tvm.transform.Pass:
    """Convert convolutions (and, following them, pools and elementwise ops) to NWC/NHWC with OWI/OHWI weights."""
    return relax.transform.ConvertLayout({"relax.nn.conv1d": ["NWC", "OWI"], "relax.nn.conv2d": ["NHWC", "OHWI"]})


def normalize() -> tvm.transform.Pass:
    """The full normalisation pipeline applied to every imported float model before calibration."""
    return tvm.transform.Sequential(
        [
            relax.transform.FoldConstant(),
            FoldBatchNorm(),
            FoldPadIntoConv(),
            to_channels_last(),
            relax.transform.FoldConstant(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination(),
        ],
        name="tvmq.normalize",
    )
