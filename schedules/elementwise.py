"""Elementwise integer ops: add, requantize, clamp, table lookup, quantize and dequantize.

Arithmetic follows TFLite Micro's int8 reference kernels; parameters given as Python ints are baked into
the code as immediates.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

from .fixed_point import (
    IntOrExpr,
    clamp,
    dtype_of,
    f32_const,
    i32,
    let,
    multiply_by_quantized_multiplier,
    requantize,
)


def broadcast_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """numpy broadcasting of two static shapes; ValueError naming both shapes if they do not broadcast."""
    a, b = [int(d) for d in a], [int(d) for d in b]
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + a
    b = [1] * (n - len(b)) + b
    out = []
    for da, db in zip(a, b, strict=True):
        if da != db and 1 not in (da, db):
            raise ValueError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast")
        out.append(max(da, db))
    return tuple(out)


def _broadcast_index(t: te.Tensor, idx: Sequence[tirx.Var]) -> list:
    """Indices into ``t`` for output indices ``idx`` under numpy broadcasting (right-aligned)."""
    shape = [int(d) for d in t.shape]
    lead = len(idx) - len(shape)
    return [tirx.const(0, "int32") if d == 1 else idx[lead + k] for k, d in enumerate(shape)]


def qadd(
    a: te.Tensor,
    b: te.Tensor,
    *,
    a_zp: int,
    b_zp: int,
    out_zp: int,
    a_mult: int,
    a_shift: int,
    b_mult: int,
    b_shift: int,
    out_mult: int,
    out_shift: int,
    left_shift: int = 20,
    act_min: int = -128,
    act_max: int = 127,
    name: str = "qadd",
) -> te.Tensor:
    """TFLite int8 ADD: both inputs are lifted by ``2^left_shift``, rescaled to a common scale, summed,
    then rescaled to the output (see ``tvmq.quant.fixed_point.tflite_add_params``). a and b broadcast
    numpy-style (static shapes)."""
    shape = broadcast_shape(a.shape, b.shape)

    def f(*idx: tirx.Var) -> tirx.PrimExpr:
        xa = i32(a[tuple(_broadcast_index(a, idx))]) - tirx.const(a_zp, "int32")
        xb = i32(b[tuple(_broadcast_index(b, idx))]) - tirx.const(b_zp, "int32")
        lift = tirx.const(1 << left_shift, "int32")
        sa = multiply_by_quantized_multiplier(xa * lift, a_mult, a_shift)
        sb = multiply_by_quantized_multiplier(xb * lift, b_mult, b_shift)
        raw = multiply_by_quantized_multiplier(sa + sb, out_mult, out_shift) + tirx.const(out_zp, "int32")
        return clamp(raw, act_min, act_max).astype(dtype_of(a))

    return te.compute(shape, f, name=name)


def qrequantize(
    x: te.Tensor,
    *,
    in_zp: int,
    mult: IntOrExpr | None,
    shift: int,
    out_zp: int,
    act_min: int = -128,
    act_max: int = 127,
    out_dtype: str = "int8",
    name: str = "qrequantize",
) -> te.Tensor:
    """TFLite Requantize: ``clamp(MBQM(x - in_zp, mult, shift) + out_zp)``; ``mult=None`` is the
    power-of-two shift. Used for concat inputs with other scales and for standalone rescaling."""

    def f(*idx: tirx.Var) -> tirx.PrimExpr:
        v = i32(x[idx]) - tirx.const(in_zp, "int32")
        r = requantize(v, mult, shift) + tirx.const(out_zp, "int32")
        return clamp(r, act_min, act_max).astype(out_dtype)

    return te.compute(x.shape, f, name=name)


def qclamp(x: te.Tensor, lo: int, hi: int, *, name: str = "qclamp") -> te.Tensor:
    """Clamp in the quantized domain (fused ReLU/ReLU6 when it is not folded into the producer)."""
    return te.compute(x.shape, lambda *idx: clamp(x[idx], lo, hi), name=name)


def qlut(x: te.Tensor, table: te.Tensor, *, name: str = "qlut") -> te.Tensor:
    """Generic int8 elementwise lookup ``table[x + 128]`` (sigmoid, tanh, ... built by ``lut_int8``)."""
    return te.compute(x.shape, lambda *idx: table[i32(x[idx]) + tirx.const(128, "int32")], name=name)


def round_half_away_f32(t: tirx.PrimExpr) -> tirx.PrimExpr:
    """C ``roundf`` (ties away from zero) from trunc and compares only.

    ``tirx.round`` lowers to ``llvm.nearbyint`` (ties to even) on LLVM, so it cannot be used. ``t - trunc(t)``
    is exact in binary floating point (Sterbenz), so this is exact for every float; NaN maps to 0.
    """
    return let(
        tirx.trunc(t),
        "q_int",
        lambda r: tirx.Select(
            tirx.isnan(t),
            tirx.const(0.0, "float32"),
            r
            + tirx.Select(
                t - r >= tirx.const(0.5, "float32"),
                tirx.const(1.0, "float32"),
                tirx.Select(
                    t - r <= tirx.const(-0.5, "float32"), tirx.const(-1.0, "float32"), tirx.const(0.0, "float32")
                ),
            ),
        ),
    )


def quantize(
    x: te.Tensor,
    *,
    scale: float,
    zero_point: int,
    qmin: int = -128,
    qmax: int = 127,
    out_dtype: str = "int8",
    name: str = "quantize",
) -> te.Tensor:
    """TFLite AffineQuantize: ``clamp(round(x / scale) + zp)``, float32 division, ties away from zero.

    Division by the float32 scale (not multiplication by its reciprocal), and the clamp is applied to the
    still-float rounded value (shifted by ``zp``) so the float->int conversion never sees an out-of-range
    value: this is exactly the clamp of the integer sum and avoids UB for large inputs.
    """
    s = f32_const(scale)  # the float32 a .tflite file stores, exact in C too
    lo = tirx.const(float(qmin - zero_point), "float32")
    hi = tirx.const(float(qmax - zero_point), "float32")

    def f(*idx: tirx.Var) -> tirx.PrimExpr:
        r = let(x[idx] / s, "q", round_half_away_f32)
        r = tirx.min(tirx.max(r, lo), hi)
        return (r.astype("int32") + tirx.const(zero_point, "int32")).astype(out_dtype)

    return te.compute(x.shape, f, name=name)


def dequantize(x: te.Tensor, *, scale: float, zero_point: int, name: str = "dequantize") -> te.Tensor:
    """``(x - zp) * scale`` in float32 (bit-identical to TFLite's double product rounded to float)."""
    s = f32_const(scale)  # the float32 a .tflite file stores, exact in C too
    return te.compute(
        x.shape,
        lambda *idx: (i32(x[idx]) - tirx.const(zero_point, "int32")).astype("float32") * s,
        name=name,
    )
