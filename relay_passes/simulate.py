"""Fake-quant simulation: the float graph with quantize-dequantize at every quantized tensor.

Weights and biases are replaced by their dequantized integer values from the plan, and each layer output (and
the model input) goes through ``(clip(round(x / s) + z, qmin, qmax) - z) * s``, or, with an activation codebook,
snaps to the nearest level. This is the model the PTQ
literature calls "simulated quantization"; comparing it with the integer model measures the error of
fixed-point requantization alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..quant.plan import ActCodebook, QuantPlan
from ..quant.qparams import QParams
from ._util import const_array
from .layers import WEIGHTED_KINDS, Layer


def InsertFakeQuant(layers: list[Layer], plan: QuantPlan) -> tvm.transform.Pass:  # noqa: N802
    """A module pass rewriting the float ``main`` into its fake-quant simulation."""

    @tvm.transform.module_pass(opt_level=0, name="tvmq.InsertFakeQuant")
    def _simulate(mod: tvm.IRModule, ctx) -> tvm.IRModule:
        return _build(mod["main"], layers, plan)

    return _simulate


def _build(func: relax.Function, layers: list[Layer], plan: QuantPlan) -> tvm.IRModule:
    replacements: dict = {}  # float binding var -> {arg index: new constant}
    outputs: dict = {}  # layer output var -> (QParams, ActCodebook or None)
    for layer, lp in zip(layers, plan.layers, strict=True):
        outputs[layer.output] = (lp.output, lp.out_codebook)
        if layer.kind in WEIGHTED_KINDS:
            weight = lp.dequantized_weight()
            replacements[layer.members[0]] = {1: weight.T.copy() if layer.kind == "dense" else weight}
            if lp.bias is not None:
                replacements[layer.members[1]] = {1: lp.dequantized_bias()}

    bb = relax.BlockBuilder()
    param = func.params[0]
    x = relax.Var("x", param.ty)
    bindings = [b for block in func.body.blocks for b in block.bindings]
    with bb.function("main", [x]):
        with bb.dataflow():
            env = {param: _fake_quant(bb, x, plan.input, plan.input_codebook)}
            for binding in bindings:
                value = _substitute(binding.value, env)
                if binding.var in replacements:
                    args = list(value.args)
                    for index, array in replacements[binding.var].items():
                        original = const_array(args[index])
                        args[index] = relax.const(array.reshape(original.shape).astype(np.float32))
                    value = relax.Call(value.op, args, value.attrs)
                new = bb.emit(value)
                if binding.var in outputs:
                    new = _fake_quant(bb, new, *outputs[binding.var])
                env[binding.var] = new
            out = bb.emit_output(env[func.body.body])
        bb.emit_func_output(out)
    return bb.finalize()


def _fake_quant(bb: relax.BlockBuilder, x: relax.Expr, qp: QParams, codebook: ActCodebook | None = None):
    if codebook is not None:
        return _fake_codebook(bb, x, qp, codebook)
    scale = relax.const(np.float32(qp.scale))
    zp = relax.const(np.float32(qp.zero_point))
    q = relax.op.add(relax.op.round(relax.op.divide(x, scale)), zp)
    q = relax.op.clip(q, float(qp.qmin), float(qp.qmax))
    return bb.emit(relax.op.multiply(relax.op.subtract(q, zp), scale))


def _fake_codebook(bb: relax.BlockBuilder, x: relax.Expr, qp: QParams, codebook: ActCodebook) -> relax.Var:
    """Snap to the nearest codebook level (ties up): count the midpoints reached, then look the level up."""
    levels = (codebook.levels.astype(np.float64) - qp.zero_point) * qp.scale
    if levels.size == 1:
        return bb.emit(relax.op.full_like(x, relax.const(np.float32(levels[0]))))
    mids = relax.const(((levels[:-1] + levels[1:]) / 2).astype(np.float32))
    reached = relax.op.greater_equal(relax.op.expand_dims(x, -1), mids)
    code = bb.emit(relax.op.sum(relax.op.astype(reached, "int32"), axis=-1))
    return bb.emit(relax.op.take(relax.const(levels.astype(np.float32)), code, axis=0, mode="clip"))


def _substitute(expr: relax.Expr, env: dict) -> relax.Expr:
    """Replace the vars of one (normalised) binding value by their new definitions."""
    if isinstance(expr, relax.Var):
        return env.get(expr, expr)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_substitute(f, env) for f in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(_substitute(expr.tuple_value, env), expr.index)
    if isinstance(expr, relax.Call):
        return relax.Call(expr.op, [_substitute(a, env) for a in expr.args], expr.attrs, expr.ty_args)
    return expr
