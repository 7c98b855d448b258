"""Expose intermediate tensors as extra outputs so observers can see them during calibration."""

from __future__ import annotations

import tvm
from tvm import relax


def ExposeTensors(tensors: list[relax.Var]) -> tvm.transform.Pass:  # noqa: N802 (TVM pass naming)
    """Make ``main`` return ``(original output, *tensors)``.

    Each dataflow var is bound to a new non-dataflow var at the end of its block (as ``R.output`` does), which
    leaves every existing binding, and so every ``Var`` the layer finder holds, untouched.
    """

    @tvm.transform.module_pass(opt_level=0, name="tvmq.ExposeTensors")
    def _expose(mod: tvm.IRModule, ctx) -> tvm.IRModule:
        func = mod["main"]
        blocks = list(func.body.blocks)
        last = blocks[-1]
        bindings = list(last.bindings)
        outputs = []
        for i, var in enumerate(tensors):
            if isinstance(var, relax.DataflowVar):
                exposed = relax.Var(f"tvmq_exposed_{i}", var.ty)
                bindings.append(relax.VarBinding(exposed, var))
                outputs.append(exposed)
            else:
                outputs.append(var)
        block_type = relax.DataflowBlock if isinstance(last, relax.DataflowBlock) else relax.BindingBlock
        blocks[-1] = block_type(bindings)
        results = [func.body.body, *outputs]
        body = relax.SeqExpr(blocks, relax.Tuple(results))
        ret_ty = relax.TupleType([r.ty for r in results])
        new = relax.Function(func.params, body, ret_ty, func.is_pure, func.attrs)
        out = tvm.IRModule({**{gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"}})
        out["main"] = new
        return relax.transform.Normalize()(out)

    return _expose
