"""Integer-only int8 softmax driven by an exp lookup table.

This is tvmq's own integer softmax, NOT TFLite Micro's (which uses gemmlowp exp on fixed-point). Output
quantization is fixed: scale 1/256, zero point -128, as TFLite requires for int8 softmax outputs.
"""

from __future__ import annotations

from tvm import te, tirx

from .fixed_point import INT32_MAX, INT32_MIN, clamp, i32, let, rounding_divide_by_pot
from .fixed_point import saturating_rounding_doubling_high_mul as srdhm


def qsoftmax(x: te.Tensor, lut: te.Tensor, axis: int = -1, *, name: str = "qsoftmax") -> te.Tensor:
    """m = max_j x_j; e_j = lut[m - x_j] (Q16 exp, see ``softmax_exp_lut``); s = sum_j e_j;
    out_j = clamp((e_j * 256 + s / 2) / s - 128, -128, 127) with C division.

    e_j is recomputed from the table instead of stored, so only two (…,1)-sized temporaries exist.
    The sum is clamped to >= 1 so a user table of zeros cannot divide by zero.
    """
    shape = [int(d) for d in x.shape]
    nd = len(shape)
    ax = axis + nd if axis < 0 else axis
    if not 0 <= ax < nd:
        raise ValueError(f"{name}: axis {axis} out of range for rank {nd}")
    red_shape = tuple(shape[:ax] + shape[ax + 1 :])
    size = shape[ax]

    def full(idx_red, j):
        return tuple(idx_red[:ax]) + (j,) + tuple(idx_red[ax:])

    r1 = te.reduce_axis((0, size), name="r")
    mx = te.compute(red_shape, lambda *idx: te.max(x[full(idx, r1)], axis=r1), name=name + "_max")

    def e(idx_red, j):
        return i32(lut[i32(mx[tuple(idx_red)]) - i32(x[full(idx_red, j)])])

    r2 = te.reduce_axis((0, size), name="r")
    sm = te.compute(red_shape, lambda *idx: te.sum(e(idx, r2), axis=r2), name=name + "_sum")

    def fout(*idx):
        red = idx[:ax] + idx[ax + 1 :]
        s = tirx.max(sm[tuple(red)], tirx.const(1, "int32"))
        q = tirx.truncdiv(e(red, idx[ax]) * tirx.const(256, "int32") + tirx.truncdiv(s, 2), s)
        return clamp(q - tirx.const(128, "int32"), -128, 127).astype("int8")

    return te.compute(tuple(shape), fout, name=name)


def _saturating_shift_left(x: tirx.PrimExpr, exponent: int) -> tirx.PrimExpr:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent > 0> on int32."""
    threshold = tirx.const((1 << (31 - exponent)) - 1, "int32")

    def body(v: tirx.PrimExpr) -> tirx.PrimExpr:
        shifted = tirx.shift_left(v, tirx.const(exponent, "int32"))
        return tirx.Select(v > threshold, tirx.const(INT32_MAX, "int32"),
                           tirx.Select(v < -threshold, tirx.const(INT32_MIN, "int32"), shifted))  # fmt: skip

    return let(x, "sat_in", body)


# Stages whose name contains this stay materialised (the default schedule does not inline them): inlining the
# Newton-Raphson chain would duplicate each step into the next and TVM's simplifier then takes forever.
KEEP_STAGE = "_state"


def _clz_positive(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """Leading zeros of a positive int32: how many of 2^0..2^31 exceed it (TVM's C backend cannot lower ``clz``;
    32 independent compares, once per row, keep the expression flat for TVM's simplifier)."""

    def count(v: tirx.PrimExpr) -> tirx.PrimExpr:
        terms = [tirx.Select(v < tirx.const(1 << k, "int64"), tirx.const(1, "int32"), tirx.const(0, "int32"))
                 for k in range(32)]  # fmt: skip
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total

    return let(value.astype("int64"), "clz_in", count)


def _newton_step(hd: te.Tensor, prev: te.Tensor):
    """x + x * (1 - hd * x), the gemmlowp Newton-Raphson step for 1 / (2 * hd), in Q2.29."""

    def step(*o: tirx.PrimExpr) -> tirx.PrimExpr:
        h, p = i32(hd[o]), i32(prev[o])
        return p + _saturating_shift_left(srdhm(p, tirx.const(1 << 29, "int32") - srdhm(h, p)), 2)

    return step


def _reciprocal_stages(total: te.Tensor, name: str) -> te.Tensor:
    """gemmlowp ``GetReciprocal`` of the row sums (Q12.19) as a chain of per-row stages: the Q0.31 scale.

    one_over_one_plus_x_for_x_in_0_1 on ``sum << clz(sum) - 1.0``: three Newton-Raphson steps in Q2.29."""
    shape = tuple(int(d) for d in total.shape)

    def half_den(*o):
        s = i32(total[o])
        shifted = (s.astype("int64") << _clz_positive(s).astype("int64")) - tirx.const(2**31, "int64")
        return ((shifted + tirx.const(2**31, "int64")) >> 1).astype("int32")  # RoundingHalfSum(x, One)

    hd = te.compute(shape, half_den, name=f"{name}{KEEP_STAGE}_hd")
    start = tirx.const(1515870810, "int32")  # 48/17 - 32/17 * hd, in Q2.29
    x = te.compute(shape, lambda *o: start + srdhm(i32(hd[o]), tirx.const(-1010580540, "int32")),
                   name=f"{name}{KEEP_STAGE}_x0")  # fmt: skip
    for k in range(3):
        x = te.compute(shape, _newton_step(hd, x), name=f"{name}{KEEP_STAGE}_x{k + 1}")
    return te.compute(shape, lambda *o: _saturating_shift_left(i32(x[o]), 1), name=f"{name}{KEEP_STAGE}_scale")


def qsoftmax_tflm(x: te.Tensor, exp: te.Tensor, sums: te.Tensor, *, name: str = "qsoftmax") -> te.Tensor:
    """TFLite Micro's reference int8 softmax over the last axis (output scale 1/256, zero point -128).

    ``exp``/``sums`` int32 (256,) come from ``tvmq.quant.fixed_point.tflm_softmax_tables`` (gemmlowp's exp of
    every row difference, and its Q12.19 accumulation term). At run time: the row's sum, its reciprocal by
    gemmlowp's Newton-Raphson (``GetReciprocal``), and ``RDBPOT(SRDHM(reciprocal, exp), 35 - clz(sum)) - 128``.
    """
    *outer, size = (int(d) for d in x.shape)
    r1 = te.reduce_axis((0, size), name="r")
    mx = te.compute(tuple(outer), lambda *o: te.max(x[(*o, r1)], axis=r1), name=name + "_max")

    def diff(o, j):
        return i32(mx[tuple(o)]) - i32(x[(*o, j)])

    r2 = te.reduce_axis((0, size), name="r")
    total = te.compute(tuple(outer), lambda *o: te.sum(sums[diff(o, r2)], axis=r2), name=name + "_sum")

    scale = _reciprocal_stages(total, name)
    shift = te.compute(tuple(outer), lambda *o: tirx.const(35, "int32") - _clz_positive(i32(total[o])),
                       name=f"{name}{KEEP_STAGE}_shift")  # fmt: skip

    def fout(*idx):
        o = idx[:-1]
        q = rounding_divide_by_pot(srdhm(scale[o], exp[diff(o, idx[-1])]), shift[o])
        return clamp(q - tirx.const(128, "int32"), -128, 127).astype("int8")

    return te.compute(tuple(int(d) for d in x.shape), fout, name=name)
