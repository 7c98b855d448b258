"""Scales and zero points: activation qparams, per-channel weight quantization, integer bias.

Conventions (as TFLite): activations asymmetric on ``[-2^(b-1), 2^(b-1)-1]`` stored in int8; weights symmetric on
``[-(2^(b-1)-1), 2^(b-1)-1]`` (b >= 2) or binary ``{-1, +1}`` (b == 1), per output channel; bias int32 on the
scale ``s_in * s_w``. Real zero is always exactly representable, so zero padding and ReLU stay exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .fixed_point import round_half_away
from .observers import weight_ranges

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantization ``real = scale * (q - zero_point)`` with ``q`` in ``[qmin, qmax]``."""

    scale: float
    zero_point: int
    bits: int = 8

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float -> int8 codes (numpy; tests and compile-time constants only, the model uses the TE op)."""
        q = round_half_away(np.asarray(x, np.float64) / self.scale) + self.zero_point
        return np.clip(q, self.qmin, self.qmax).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((np.asarray(q, np.int32) - self.zero_point) * np.float32(self.scale)).astype(np.float32)

    def clamp_codes(self, low: float, high: float) -> tuple[int, int]:
        """The integer range of a fused activation clamp ``[low, high]`` (real values) on this grid."""

        def code(value: float) -> int:  # float32 division, as TFLM's CalculateActivationRangeQuantized
            return int(round_half_away(np.float32(value) / np.float32(self.scale))) + self.zero_point

        lo = self.qmin if low == -math.inf else max(self.qmin, code(low))
        hi = self.qmax if high == math.inf else min(self.qmax, code(high))
        return lo, max(lo, hi)


def to_pow2(scale: float) -> float:
    """The smallest power of two >= scale (rounding up keeps the clipping range)."""
    return float(2.0 ** math.ceil(math.log2(scale)))


def activation_qparams(low: float, high: float, bits: int, pow2: bool = False, symmetric: bool = False) -> QParams:
    """Asymmetric qparams covering ``[low, high]`` (widened to include 0); safe for constant tensors.
    ``symmetric``: zero point 0, the scale covering both ends (``low`` on ``-2^(b-1)``, ``high`` on ``2^(b-1)-1``)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if symmetric:
        scale = max(-low / -qmin, high / qmax) if bits > 1 else max(-low, high)
        scale = scale if scale > 0 else 1.0
        return QParams(scale=to_pow2(scale) if pow2 else scale, zero_point=0, bits=bits)
    span = high - low
    scale = span / (qmax - qmin) if span > 0 else 1.0
    if pow2:
        scale = to_pow2(scale)
    zero_point = int(np.clip(round_half_away(qmin - low / scale), qmin, qmax))
    return QParams(scale=scale, zero_point=zero_point, bits=bits)


def weight_qmax(bits: int) -> int:
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def quantize_weights(
    weight: np.ndarray, bits: int, per_channel: bool, observer: str, percentile: float, pow2: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric weight quantization along axis 0 (output channels): returns (int8 codes, float scales (O,)).

    1-bit weights are binary: sign(w) with the L2-optimal scale mean|w| per channel.
    """
    out_channels = weight.shape[0]
    flat = weight.reshape(out_channels, -1).astype(np.float64)
    if not per_channel:
        flat_all = flat.reshape(1, -1)
    if bits == 1:
        magnitude = np.mean(np.abs(flat if per_channel else flat_all), axis=1)
    else:
        magnitude = weight_ranges(flat if per_channel else flat_all, bits, observer, percentile) / weight_qmax(bits)
    scales = np.where(magnitude > 0, magnitude, 1.0)
    if pow2:
        scales = np.array([to_pow2(s) for s in scales])
    if not per_channel:
        scales = np.repeat(scales, out_channels)
    qmax = weight_qmax(bits)
    binary = bits == 1  # 1-bit weights are the sign: +-1, never 0
    codes = np.where(flat >= 0, 1, -1) if binary else np.clip(round_half_away(flat / scales[:, None]), -qmax, qmax)
    return codes.astype(np.int8).reshape(weight.shape), scales.astype(np.float64)


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> np.ndarray:
    """int32 bias on the accumulator scale ``s_in * s_w[o]`` (saturated: a huge bias means a broken scale)."""
    q = round_half_away(bias.astype(np.float64) / (input_scale * weight_scales))
    return np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)
