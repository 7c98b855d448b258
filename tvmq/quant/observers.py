"""Observers: how a tensor's clipping range is chosen (MinMax, MSE search, percentile).

Activation observers see every calibration batch once and keep the exact min/max plus a bounded random sample of
values, so MSE and percentile ranges cost fixed memory however large the calibration set is.
"""

from __future__ import annotations

import numpy as np

from .fixed_point import round_half_away

SAMPLE_LIMIT = 1 << 18  # values kept per activation tensor for MSE/percentile searches
MSE_GRID = np.linspace(0.2, 1.0, 81)  # fractions of the MinMax range searched by the MSE observer


class ActivationObserver:
    """Running range statistics of one activation tensor over the calibration set."""

    def __init__(self, seed: int = 0) -> None:
        self.low = np.inf
        self.high = -np.inf
        self.count = 0
        self._samples: list[np.ndarray] = []
        self._kept = 0
        self._rng = np.random.default_rng(seed)

    def update(self, values: np.ndarray) -> None:
        flat = np.asarray(values, np.float32).reshape(-1)
        self.low = min(self.low, float(flat.min()))
        self.high = max(self.high, float(flat.max()))
        self.count += flat.size
        budget = SAMPLE_LIMIT // 64  # per update, so early and late batches are both represented
        if flat.size > budget:
            flat = self._rng.choice(flat, budget, replace=False)
        self._samples.append(flat)
        self._kept += flat.size

    def values(self) -> np.ndarray:
        data = np.concatenate(self._samples) if self._samples else np.zeros(1, np.float32)
        if data.size > SAMPLE_LIMIT:
            data = self._rng.choice(data, SAMPLE_LIMIT, replace=False)
        return data

    def range(self, method: str, bits: int, percentile: float) -> tuple[float, float]:
        """Clipping range ``(low, high)`` chosen by ``method`` for a ``bits``-bit asymmetric grid."""
        if method == "minmax":
            return self.low, self.high
        data = self.values().astype(np.float64)
        if method == "percentile":
            return float(np.percentile(data, 100.0 - percentile)), float(np.percentile(data, percentile))
        return _mse_asymmetric(data, min(self.low, 0.0), max(self.high, 0.0), bits)


def _mse_asymmetric(data: np.ndarray, low: float, high: float, bits: int) -> tuple[float, float]:
    levels = 2**bits - 1
    best, best_err = (low, high), np.inf
    for frac in MSE_GRID:
        lo, hi = low * frac, high * frac
        scale = (hi - lo) / levels
        if scale <= 0:
            continue
        zp = round_half_away(-lo / scale)
        q = np.clip(round_half_away(data / scale) + zp, 0, levels)
        err = float(np.mean(((q - zp) * scale - data) ** 2))
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


def weight_ranges(flat: np.ndarray, bits: int, method: str, percentile: float) -> np.ndarray:
    """Per-row symmetric clipping magnitude of a (channels, values) weight matrix."""
    magnitude = np.max(np.abs(flat), axis=1)
    if method == "minmax":
        return magnitude
    if method == "percentile":
        return np.percentile(np.abs(flat), percentile, axis=1)
    qmax = 2 ** (bits - 1) - 1
    best = magnitude.copy()
    best_err = np.full(flat.shape[0], np.inf)
    for frac in MSE_GRID:
        clip = magnitude * frac
        scale = np.where(clip > 0, clip / qmax, 1.0)[:, None]
        err = np.mean((np.clip(round_half_away(flat / scale), -qmax, qmax) * scale - flat) ** 2, axis=1)
        better = err < best_err
        best[better], best_err[better] = clip[better], err[better]
    return best
