"""TIR expressions of TFLite's fixed-point arithmetic (gemmlowp ``SaturatingRoundingDoublingHighMul`` etc.).

These are the single definition of integer requantization in tvmq: the same expressions compile for the
host (LLVM) and for Cortex-M (C), so both give identical bytes. Semantics follow TFLite Micro's reference
kernels (double rounding, i.e. without ``TFLITE_SINGLE_ROUNDING``).

Each helper takes ``PrimExpr`` operands or Python ints; Python ints become immediates, and the helpers
fold the branches they make unnecessary (e.g. no left shift when the shift is a non-positive constant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import numpy as np
from tvm import ir, te, tirx
from tvm.te.tensor import TensorSlice

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

Expr = ir.Expr
IntOrExpr = Union[int, Expr, TensorSlice]  # noqa: UP007  (TensorSlice is not a type for `|` at runtime)


def as_expr(v: IntOrExpr) -> Expr | int:
    """Normalise a tensor element access (``TensorSlice``) to its expression; ints stay ints."""
    if isinstance(v, TensorSlice):
        return v.asobject()
    if isinstance(v, Expr):
        return v
    return int(v)


def dtype_of(v: Expr | te.Tensor) -> str:
    """The dtype string of an expression or tensor (TVM 0.27 expressions have ``.ty``, not ``.dtype``)."""
    if isinstance(v, te.Tensor):
        return str(v.dtype)
    ty = v.ty
    return str(ty.dtype if hasattr(ty, "dtype") else ty)


def i32(v: IntOrExpr) -> Expr:
    """An int32 expression from an int or an expression of any integer type."""
    v = as_expr(v)
    if isinstance(v, Expr):
        return v if dtype_of(v) == "int32" else v.astype("int32")
    return tirx.const(v, "int32")


def let(value: Expr, name: str, body: Callable[[Expr], Expr]) -> Expr:
    """``body(value)`` with ``value`` bound once by a ``Let`` when it is not trivial.

    Without this, nested requantizations (qadd has three) duplicate their operands exponentially and
    TVM's simplifier takes minutes; the Let also keeps the emitted C readable.
    """
    if isinstance(value, (tirx.Var, tirx.IntImm)):
        return body(value)
    var = tirx.Var(name, dtype_of(value))
    return tirx.Let(var, value, body(var))


def _i64(v: IntOrExpr) -> Expr:
    v = as_expr(v)
    if isinstance(v, Expr):
        return v if dtype_of(v) == "int64" else v.astype("int64")
    return tirx.const(v, "int64")


def _u32(v: Expr) -> Expr:
    """``v`` reinterpreted as uint32 (two's complement; C and LLVM agree)."""
    return v if dtype_of(v) == "uint32" else v.astype("uint32")


def saturating_rounding_doubling_high_mul(a: IntOrExpr, b: IntOrExpr) -> Expr:
    """gemmlowp SRDHM: ``round(a * b / 2^31)``, INT32_MIN^2 saturates to INT32_MAX.

    The reference adds ``2^30`` (``1 - 2^30`` for a negative product) and divides truncating towards zero. For a
    negative product ``trunc((ab + 1 - 2^30) / 2^31) == floor((ab + 2^30) / 2^31)`` (ceil(n/d) = floor((n+d-1)/d)),
    so both signs are one arithmetic shift: ``(ab + 2^30) >> 31`` -- a 32x32->64 multiply-accumulate (``smlal``)
    and two shifts on Cortex-M, no 64-bit division. The quotient exceeds INT32_MAX only for a == b == INT32_MIN;
    the saturation is ``min(q, INT32_MAX)`` on the int64 quotient: TVM's simplifier assumes casts do not wrap and
    folds any test on the wrapped int32 value (or the reference's ``a == INT32_MIN && b == INT32_MIN``) to false.
    """
    a, b = as_expr(a), as_expr(b)
    saturate = not ((isinstance(a, int) and a != INT32_MIN) or (isinstance(b, int) and b != INT32_MIN))
    q = tirx.shift_right(_i64(a) * _i64(b) + tirx.const(1 << 30, "int64"), tirx.const(31, "int64"))
    if saturate:
        q = tirx.min(q, tirx.const(INT32_MAX, "int64"))
    return q.astype("int32")


def rounding_divide_by_pot(x: IntOrExpr, exponent: IntOrExpr, *, bind: bool = True) -> Expr:
    """gemmlowp RDBPOT: ``x / 2^exponent`` rounded to nearest, ties away from zero; 0 <= exponent <= 31.

    The reference's form, ``(x >> e) + (rem > threshold)`` with ``rem = x & (2^e - 1)`` and ``threshold =
    ((2^e - 1) >> 1) + (x < 0)``, in 32 bits (a shift, an and, a compare and a conditional add on Cortex-M; the
    per-channel mask is shared by a tile's pixels). Mask, remainder and threshold are uint32: with int32 operands
    and a symbolic mask TVM's simplifier folds ``rem > threshold`` to false.
    """
    x = i32(x)
    exponent = as_expr(exponent)
    if isinstance(exponent, int):
        if not 0 <= exponent <= 31:
            raise ValueError(f"rounding_divide_by_pot: exponent must be in 0..31, got {exponent}")
        if exponent == 0:
            return x
        e = tirx.const(exponent, "int32")
        mask = tirx.const((1 << exponent) - 1, "uint32")
    else:
        e = i32(exponent)
        mask = tirx.bitwise_not(tirx.shift_left(tirx.const(0xFFFFFFFF, "uint32"), _u32(e)))

    def body(xv: Expr) -> Expr:
        one, zero = tirx.const(1, "uint32"), tirx.const(0, "uint32")
        threshold = tirx.shift_right(mask, one) + tirx.Select(xv < tirx.const(0, "int32"), one, zero)
        up = tirx.Select(tirx.bitwise_and(_u32(xv), mask) > threshold, tirx.const(1, "int32"), tirx.const(0, "int32"))
        return tirx.shift_right(xv, e) + up

    return let(x, "rdbpot_x", body) if bind else body(x)


def _wrapping_shift_left(x: Expr, left: IntOrExpr) -> Expr:
    """``x * (1 << left)`` with two's-complement wrap-around (done in int64: no signed-overflow UB).

    Not in uint32: TVM's analyser assumes a uint32 -> int32 cast does not wrap (so the result would be >= 0) and
    folds later tests on it, e.g. SRDHM's saturation."""
    return tirx.shift_left(_i64(x), _i64(left)).astype("int32")


def multiply_by_quantized_multiplier(x: IntOrExpr, mult: IntOrExpr, shift: IntOrExpr, *, bind: bool = True) -> Expr:
    """TFLite ``MultiplyByQuantizedMultiplier``: ``x * mult * 2^(shift - 31)``, double rounding.

    ``shift`` is the signed exponent from ``QuantizeMultiplier`` (positive = left shift, at most 31).
    """
    x = i32(x)
    mult, shift = as_expr(mult), as_expr(shift)
    if isinstance(shift, int):
        left, right = max(shift, 0), max(-shift, 0)
        if left:
            x = _wrapping_shift_left(x, left)
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, mult), right, bind=bind)
    s = i32(shift)
    zero = tirx.const(0, "int32")
    left = tirx.max(s, zero)
    right = tirx.max(zero - s, zero)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(_wrapping_shift_left(x, left), mult), right,
                                  bind=bind)  # fmt: skip


def pow2_requantize(x: IntOrExpr, shift: IntOrExpr, *, bind: bool = True) -> Expr:
    """Power-of-two requantization ``x * 2^shift``: a rounding right shift (RDBPOT) or a plain left shift.

    No multiply; used when every scale ratio is an exact power of two (``pow2=True`` / ``mult=None``).
    """
    x = i32(x)
    shift = as_expr(shift)
    if isinstance(shift, int):
        if shift >= 0:
            return _wrapping_shift_left(x, shift) if shift else x
        return rounding_divide_by_pot(x, -shift, bind=bind)
    s = i32(shift)
    zero = tirx.const(0, "int32")
    down = rounding_divide_by_pot(x, tirx.min(tirx.max(zero - s, zero), tirx.const(31, "int32")), bind=bind)
    up = _wrapping_shift_left(x, tirx.max(s, zero))
    return tirx.Select(s >= zero, up, down)


def requantize(x: IntOrExpr, mult: IntOrExpr | None, shift: IntOrExpr, *, bind: bool = True) -> Expr:
    """MBQM with a multiplier, or the power-of-two shift when ``mult`` is None.

    ``bind=False`` repeats a reused intermediate instead of binding it with a ``Let`` (which tensorization cannot
    match); fine for one requantization, exponential for nested ones (``qadd``)."""
    if mult is None:
        return pow2_requantize(x, shift, bind=bind)
    return multiply_by_quantized_multiplier(x, mult, shift, bind=bind)


def requantize_output(
    acc: IntOrExpr, bias: IntOrExpr | None, mult: IntOrExpr | None, shift: IntOrExpr, output_zp: int, act_min: int,
    act_max: int, dtype: str,
) -> Expr:  # fmt: skip
    """The conv/dense epilogue, TFLM's: ``clamp(requantize(acc + bias) + output_zp, act_min, act_max)`` in ``dtype``.

    One definition for the TE computes and for the description of the micro-kernels that implement it (without
    ``Let`` bindings, which tensorization cannot match; the C compilers share the repeated term)."""
    a = i32(acc) if bias is None else i32(acc) + as_expr(bias)
    r = requantize(a, mult, shift, bind=False)
    return clamp(r + tirx.const(int(output_zp), "int32"), act_min, act_max).astype(dtype)


def clamp(x: Expr, lo: IntOrExpr, hi: IntOrExpr) -> Expr:
    """``min(max(x, lo), hi)`` in x's dtype.

    An int32 clamped into the int8 range by constant bounds saturates to [-128, 127] first (the same value):
    gcc turns that pair into one ``ssat`` and needs no branch, and the bounds that remain are at most one
    compare each."""
    lo, hi = as_expr(lo), as_expr(hi)
    x = as_expr(x)
    dt = dtype_of(x)
    if dt == "int32" and isinstance(lo, int) and isinstance(hi, int) and -128 <= lo <= hi <= 127:
        x = tirx.min(tirx.max(x, tirx.const(-128, dt)), tirx.const(127, dt))
        if lo > -128:
            x = tirx.max(x, tirx.const(lo, dt))
        return tirx.min(x, tirx.const(hi, dt)) if hi < 127 else x
    lo_e = lo if isinstance(lo, Expr) else tirx.const(lo, dt)
    hi_e = hi if isinstance(hi, Expr) else tirx.const(hi, dt)
    return tirx.min(tirx.max(x, lo_e), hi_e)


def f32_const(value: float) -> Expr:
    """A float32 immediate that survives TVM's C backend exactly.

    The C codegen prints float immediates with ``%e`` (7 significant digits), which does not round-trip
    every float32 (a scale like float32(1/255) would come back 1 ulp off on the device). Such values are
    emitted as ``ldexpf(hi, e + 12) + ldexpf(lo, e)`` with 12-bit integer mantissa halves, which print
    exactly and which both LLVM and gcc fold to the exact constant.
    """
    v = np.float32(value)
    if not np.isfinite(v) or np.float32(f"{float(v):.6e}") == v:
        return tirx.const(float(v), "float32")
    frac, exp = np.frexp(np.float64(v))  # v = frac * 2^exp, |frac| in [0.5, 1)
    mant = int(frac * 2**24)  # exact: a float32 mantissa has 24 bits
    e = int(exp) - 24
    sign = -1 if mant < 0 else 1
    hi, lo = divmod(abs(mant), 1 << 12)

    def part(m: int, k: int) -> Expr:
        return tirx.ldexp(tirx.const(float(sign * m), "float32"), tirx.const(k, "int32"))

    if lo == 0:
        return part(hi, e + 12)
    return part(hi, e + 12) + part(lo, e)


def channel_param(p: te.Tensor | int | None, idx: Expr) -> IntOrExpr | None:
    """A per-channel parameter: ``p[idx]`` for a tensor, the int itself (an immediate), or None."""
    if p is None:
        return None
    if isinstance(p, te.Tensor):
        if len(p.shape) == 0:
            return p()
        return p[idx]
    return int(p)
