"""Small helpers to inspect Relax expressions shared by the passes."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def is_op(expr: relax.Expr | None, *names: str) -> bool:
    """True if ``expr`` is a call of one of the Relax operators ``names`` (e.g. ``"relax.nn.conv2d"``)."""
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in names


def const_array(expr: relax.Expr | None) -> np.ndarray | None:
    """The numpy value of a Relax constant, else None."""
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    return None


def prim_float(expr: relax.Expr) -> float:
    """The float value of a PrimValue / scalar constant argument (e.g. the bounds of ``R.clip``)."""
    if isinstance(expr, tvm.ir.GenericConst):
        return float(expr.value.numpy())
    value = getattr(expr, "value", expr)
    return float(getattr(value, "value", value))


def shape_of(expr: relax.Expr) -> tuple[int, ...]:
    """Static shape of a tensor-typed expression."""
    return tuple(int(d) for d in expr.ty.shape)
