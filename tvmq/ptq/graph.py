"""Relax rewrites the PTQ steps need, each ``IRModule -> IRModule``.

* :func:`SetLayerParams`: new float weights/biases of conv/dense layers (CLE), adding a bias where a layer has
  none (bias correction needs one to correct);
* :func:`probe`: make ``main`` also return chosen intermediate tensors. Unlike ``ExposeTensors`` the result is
  one tuple var, so ``InsertFakeQuant`` can rebuild the probed module and the probes then read fake-quantized
  tensors, exactly what the next layer of the quantized model sees;
* :func:`parametrize_weights`: turn the weight and bias constants of a fake-quant module into parameters, so one
  compiled module serves every layer-by-layer step (only the weights change between steps).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from ..relay_passes._util import const_array, is_op
from ..relay_passes.layers import WEIGHTED_KINDS, Layer
from ..relay_passes.simulate import _substitute

WEIGHTED_OPS = ("relax.nn.conv2d", "relax.nn.conv1d", "relax.matmul")


def SetLayerParams(layers: list[Layer], params: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> tvm.transform.Pass:  # noqa: N802
    """Replace the float weight (layer layout, as ``Layer.weight``) and bias of the named conv/dense layers."""

    @tvm.transform.module_pass(opt_level=0, name="tvmq.ptq.SetLayerParams")
    def _set(mod: tvm.IRModule, ctx) -> tvm.IRModule:
        anchors, biases, added = {}, {}, {}
        for layer in layers:
            if layer.name not in params:
                continue
            weight, bias = params[layer.name]
            anchors[layer.members[0]] = weight.T if layer.kind == "dense" else weight
            if bias is not None and layer.bias is not None:
                biases[layer.members[1]] = bias
            elif bias is not None:
                added[layer.members[0]] = bias.reshape((1,) * (len(layer.out_shape) - 1) + (-1,))

        def edit(bb: relax.BlockBuilder, var: relax.Var, value: relax.Expr) -> relax.Expr:
            if var in anchors:
                value = _with_const(value, anchors[var])
            elif var in biases:
                value = _with_const(value, biases[var])
            new = bb.emit(value)
            if var in added:
                new = bb.emit(relax.op.add(new, relax.const(added[var].astype(np.float32))))
            return new

        # the output var re-bound by emit_output is a trivial binding find_layers would refuse: fold it away
        return relax.transform.CanonicalizeBindings()(_rebuild(mod, [], edit))

    return _set


def probe(mod: tvm.IRModule, tensors: list[relax.Var]) -> tvm.IRModule:
    """``main`` returning ``(output, *tensors)`` through one tuple var bound at the end of the last block."""
    func = mod["main"]
    blocks = list(func.body.blocks)
    last = blocks[-1]
    fields = [func.body.body, *tensors]
    var = relax.Var("tvmq_probe", relax.TupleType([f.ty for f in fields]))
    blocks[-1] = type(last)([*last.bindings, relax.VarBinding(var, relax.Tuple(fields))])
    new = relax.Function(func.params, relax.SeqExpr(blocks, var), var.ty, func.is_pure, func.attrs)
    out = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"})
    out["main"] = new
    return out


def parametrize_weights(mod: tvm.IRModule, layers: list[Layer]) -> tvm.IRModule:
    """``main(x)`` -> ``main(x, w_0, b_0, w_1, ...)``: the conv/matmul weight constant of each weighted layer (in
    order) and its bias constant (layers with a bias) become parameters, in the float graph's own layouts."""
    func = mod["main"]
    bindings = [b for block in func.body.blocks for b in block.bindings]
    weighted = [b for b in bindings if is_op(b.value, *WEIGHTED_OPS) and const_array(b.value.args[1]) is not None]
    layer_list = [layer for layer in layers if layer.kind in WEIGHTED_KINDS]
    if len(weighted) != len(layer_list):
        raise AssertionError(f"found {len(weighted)} weighted calls for {len(layer_list)} conv/dense layers")
    params, slots = [], {}
    for k, (binding, layer) in enumerate(zip(weighted, layer_list, strict=True)):
        w = relax.Var(f"w_{k}", relax.TensorType(const_array(binding.value.args[1]).shape, "float32"))
        params.append(w)
        slots[binding.var] = w
        if layer.bias is not None:
            bias_binding = next(b for b in bindings if _adds_const_to(b.value, binding.var))
            b = relax.Var(f"b_{k}", relax.TensorType(const_array(bias_binding.value.args[1]).shape, "float32"))
            params.append(b)
            slots[bias_binding.var] = b

    def edit(bb: relax.BlockBuilder, var: relax.Var, value: relax.Expr) -> relax.Expr:
        if var in slots:
            args = list(value.args)
            args[1] = slots[var]
            value = relax.Call(value.op, args, value.attrs, value.ty_args)
        return bb.emit(value)

    return _rebuild(mod, params, edit)


def _adds_const_to(value: relax.Expr, var: relax.Var) -> bool:
    return is_op(value, "relax.add") and value.args[0].same_as(var) and const_array(value.args[1]) is not None


def _with_const(call: relax.Call, array: np.ndarray) -> relax.Call:
    args = list(call.args)
    args[1] = relax.const(np.asarray(array, np.float32).reshape(const_array(args[1]).shape))
    return relax.Call(call.op, args, call.attrs, call.ty_args)


def _rebuild(mod: tvm.IRModule, extra_params: list[relax.Var],
             edit: Callable[[relax.BlockBuilder, relax.Var, relax.Expr], relax.Expr]) -> tvm.IRModule:  # fmt: skip
    """Re-emit ``main`` binding by binding (``edit`` emits each, possibly changed), with extra parameters."""
    func = mod["main"]
    bb = relax.BlockBuilder()
    x = relax.Var(func.params[0].name, func.params[0].ty)
    with bb.function("main", [x, *extra_params]):
        with bb.dataflow():
            env = {func.params[0]: x}
            for block in func.body.blocks:
                for binding in block.bindings:
                    env[binding.var] = edit(bb, binding.var, _substitute(binding.value, env))
            out = bb.emit_output(env[func.body.body])
        bb.emit_func_output(out)
    return bb.finalize()
