"""Compile-time fixed-point parameters and lookup tables for the integer kernels.

Everything here is plain numpy/Python and runs once when a model is compiled. The arithmetic mirrors
TensorFlow Lite (``QuantizeMultiplier``, the int8 ADD prepare step) so that the integer kernels in
``tvmq.schedules`` reproduce TFLite Micro's reference kernels bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "quantize_multiplier",
    "tflite_add_params",
    "pow2_shift",
    "softmax_exp_lut",
    "lut_int8",
    "round_half_away",
]

_INT32_MAX = 2**31 - 1


def round_half_away(x: float | np.ndarray) -> np.ndarray:
    """Round half away from zero, like C's ``std::round`` (``np.round`` rounds half to even)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _quantize_multiplier_scalar(real: float) -> tuple[int, int]:
    if real == 0.0:
        return 0, 0
    if not math.isfinite(real):
        raise ValueError(f"quantize_multiplier: multiplier must be finite, got {real!r}")
    frac, shift = math.frexp(real)
    # std::round: half away from zero; frac * 2^31 is exact in double, so copysign(floor(|.| + 0.5)) is exact.
    q = int(math.copysign(math.floor(abs(frac) * 2.0**31 + 0.5), frac))
    if q == 2**31:
        q //= 2
        shift += 1
    if shift < -31:
        shift, q = 0, 0
    if q > _INT32_MAX:  # cannot happen after the branch above; TFLite checks it too
        raise ValueError(f"quantize_multiplier: {real!r} does not fit an int32 multiplier")
    return q, shift


def quantize_multiplier(real: float | np.ndarray) -> tuple[np.int32 | np.ndarray, np.int32 | np.ndarray]:
    """TFLite's ``QuantizeMultiplier``: ``real ~= multiplier * 2^(shift - 31)``.

    ``shift`` is the signed exponent (positive means a left shift), as TFLite Micro's kernels expect.
    A scalar gives two ``np.int32`` scalars; an array (per-channel scales) gives two int32 arrays of
    the same shape.
    """
    arr = np.asarray(real, dtype=np.float64)
    flat = arr.reshape(-1)
    pairs = [_quantize_multiplier_scalar(float(v)) for v in flat]
    mult = np.array([p[0] for p in pairs], dtype=np.int32).reshape(arr.shape)
    shift = np.array([p[1] for p in pairs], dtype=np.int32).reshape(arr.shape)
    if arr.ndim == 0:
        return np.int32(mult), np.int32(shift)
    return mult, shift


def _quantize_multiplier_smaller_than_one_exp(real: float, what: str) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplierSmallerThanOneExp``: like quantize_multiplier, but checked < 1."""
    if not 0.0 < real < 1.0:
        raise ValueError(f"tflite_add_params: {what} multiplier must be in (0, 1), got {real!r}")
    q, shift = _quantize_multiplier_scalar(real)
    if shift > 0:
        raise ValueError(f"tflite_add_params: {what} multiplier {real!r} gives a left shift {shift}")
    return q, shift


def tflite_add_params(s1: float, s2: float, s_out: float, left_shift: int = 20) -> dict[str, int]:
    """The fixed-point parameters TFLite's int8 ADD prepare step derives from the three scales.

    Scales are rounded to float32 first, as a .tflite file stores them, then promoted to double like
    TFLite does. Returns a dict with keys ``left_shift``, ``a_mult``, ``a_shift``, ``b_mult``,
    ``b_shift``, ``out_mult``, ``out_shift`` (the keyword names of ``tvmq.schedules.qadd``).
    """
    f1, f2, fo = (float(np.float32(s)) for s in (s1, s2, s_out))
    for name, s in (("s1", f1), ("s2", f2), ("s_out", fo)):
        if not (math.isfinite(s) and s > 0.0):
            raise ValueError(f"tflite_add_params: scale {name} must be positive and finite, got {s!r}")
    twice_max_input_scale = 2.0 * max(f1, f2)
    real1 = f1 / twice_max_input_scale
    real2 = f2 / twice_max_input_scale
    real_out = twice_max_input_scale / (float(1 << left_shift) * fo)
    a_mult, a_shift = _quantize_multiplier_smaller_than_one_exp(real1, "input1")
    b_mult, b_shift = _quantize_multiplier_smaller_than_one_exp(real2, "input2")
    out_mult, out_shift = _quantize_multiplier_smaller_than_one_exp(real_out, "output")
    return {
        "left_shift": int(left_shift),
        "a_mult": a_mult,
        "a_shift": a_shift,
        "b_mult": b_mult,
        "b_shift": b_shift,
        "out_mult": out_mult,
        "out_shift": out_shift,
    }


def pow2_shift(real: float | np.ndarray) -> int | np.ndarray:
    """Exponent ``e`` with ``real == 2**e`` exactly (for power-of-two requantization).

    Raises ValueError naming the first value that is not an exact positive power of two.
    """
    arr = np.asarray(real, dtype=np.float64)
    out = np.empty(arr.shape, dtype=np.int32)
    for idx, v in np.ndenumerate(arr):
        v = float(v)
        if not (math.isfinite(v) and v > 0.0):
            raise ValueError(f"pow2_shift: {v!r} is not an exact power of two")
        frac, exp = math.frexp(v)
        if frac != 0.5:
            raise ValueError(f"pow2_shift: {v!r} is not an exact power of two")
        out[idx] = exp - 1
    if arr.ndim == 0:
        return int(out)
    return out


def softmax_exp_lut(input_scale: float, beta: float = 1.0) -> np.ndarray:
    """Table of ``exp(-d * input_scale * beta)`` in Q16 for d = max(x) - x_j in 0..255 (int32, 256).

    Used by ``tvmq.schedules.qsoftmax``; lut[0] is always 65536, so the softmax sum is never zero.
    """
    if not (math.isfinite(input_scale) and input_scale > 0.0):
        raise ValueError(f"softmax_exp_lut: input_scale must be positive and finite, got {input_scale!r}")
    if not (math.isfinite(beta) and beta >= 0.0):
        raise ValueError(f"softmax_exp_lut: beta must be non-negative and finite, got {beta!r}")
    d = np.arange(256, dtype=np.float64)
    lut = round_half_away(np.exp(-d * float(input_scale) * float(beta)) * 2.0**16)
    return np.clip(lut, 0, 2**16).astype(np.int32)


def lut_int8(
    fn: Callable[[np.ndarray], np.ndarray],
    in_scale: float,
    in_zp: int,
    out_scale: float,
    out_zp: int,
    qmin: int = -128,
    qmax: int = 127,
) -> np.ndarray:
    """int8 table of a float function for ``tvmq.schedules.qlut``: table[q + 128] = quantized fn(real(q)).

    ``fn`` gets a float64 array of the 256 dequantized inputs (e.g. ``lambda x: 1 / (1 + np.exp(-x))``).
    """
    if not (math.isfinite(in_scale) and in_scale > 0.0 and math.isfinite(out_scale) and out_scale > 0.0):
        raise ValueError(f"lut_int8: scales must be positive and finite, got {in_scale!r}, {out_scale!r}")
    if not -128 <= qmin <= qmax <= 127:
        raise ValueError(f"lut_int8: need -128 <= qmin <= qmax <= 127, got {qmin}, {qmax}")
    q = np.arange(-128, 128, dtype=np.float64)
    y = np.asarray(fn((q - int(in_zp)) * float(in_scale)), dtype=np.float64)
    if y.shape != q.shape:
        raise ValueError(f"lut_int8: fn must map 256 inputs elementwise, returned shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("lut_int8: fn returned non-finite values")
    out = round_half_away(y / float(out_scale)) + int(out_zp)
    return np.clip(out, qmin, qmax).astype(np.int8)


def mean_multiplier(real: float, count: int) -> tuple[int, int]:
    """Multiplier and shift of TFLite's quantized MEAN: ``QuantizeMultiplier(real)`` with ``1 / count`` folded in
    as TFLite's reference ``QuantizedMeanOrSum`` does (shift by floor(log2(count)) <= 32, integer division)."""
    mult, shift = quantize_multiplier(np.array([real], np.float64))
    mult, shift = int(mult[0]), int(shift[0])
    extra = min(count.bit_length() - 1, 32, 31 + shift)
    return int((mult << extra) // count), shift - extra


# ---------------------------------------------------------------------- TFLite Micro's int8 softmax (gemmlowp)
# Compile-time part of TFLM's reference int8 softmax: the exp of every possible input difference (an int8 row
# minus its max takes 256 values) in gemmlowp's fixed point, exactly as its integer arithmetic computes it. The
# run-time part (sum, reciprocal, scaling) is the TE compute ``schedules.softmax.qsoftmax_tflm``.
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


def _srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on Python ints."""
    if a == b == _I32_MIN:
        return _I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    total = ab + nudge
    return (abs(total) >> 31) * (1 if total >= 0 else -1)  # C truncating division by 2^31


def _rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT on Python ints."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _exp_on_interval(a: int) -> int:
    """exp(a) for a in [-1/4, 0), Q0.31 (gemmlowp exp_on_interval_between_negative_one_quarter_and_0_excl)."""
    constant_term, one_third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbpot(x4, 2)
    poly = _rdbpot(_srdhm(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + _srdhm(constant_term, x + poly)


def _exp_on_negative_values_q5(a: int) -> int:
    """gemmlowp exp_on_negative_values for a Q5.26 input a <= 0, result Q0.31."""
    fractional_bits, integer_bits = 26, 5
    one_quarter = 1 << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod = (a & mask) - one_quarter
    shifted = a_mod << integer_bits  # Rescale<0>: saturating, but |a_mod| <= 2^24 never saturates here
    result = _exp_on_interval(max(_I32_MIN, min(_I32_MAX, shifted)))
    remainder = a_mod - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):  # fmt: skip
        if remainder & (1 << (fractional_bits + exponent)):
            result = _srdhm(result, multiplier)
    return _I32_MAX if a == 0 else result


def tflm_softmax_tables(input_scale: float, beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(exp, sum) int32 tables indexed by ``max - x`` (0..255) of TFLM's reference int8 softmax.

    ``exp[d]`` is ``exp_on_negative_values`` of the rescaled difference -d (Q0.31), 0 where -d < diff_min (TFLM
    skips those: they add nothing and output -128, which a zero exp reproduces); ``sum[d]`` is its
    ``Rescale<12>`` into the Q12.19 accumulator.
    """
    real = min(beta * float(np.float32(input_scale)) * float(1 << 26), float((1 << 31) - 1))
    mult, left_shift = _quantize_multiplier_scalar(real)
    if left_shift < 0:
        raise ValueError(f"softmax input scale {input_scale} is too small for TFLite's int8 softmax")
    radius = math.floor(((1 << 5) - 1) * (1 << 26) / (1 << left_shift))
    diff_min = -radius
    exp = np.zeros(256, np.int64)
    for d in range(256):
        if -d >= diff_min:
            exp[d] = _exp_on_negative_values_q5(_srdhm(-d * (1 << left_shift), mult))
    return exp.astype(np.int32), np.array([_rdbpot(int(e), 12) for e in exp], np.int32)
