"""Non-linear quantization: codebooks of at most 2^b levels placed where a tensor's values are.

A tensor is stored as b-bit indices into a small table. Inference stays integer-only because every level is snapped
onto an integer grid before deployment: int8 symmetric per output channel for weights (``weight_codebooks``), the
activation's own uniform int8 grid for activations (``activation_codebook``).

Representation: a ``Codebook`` is always one 1-D set of levels. Per-channel weights use one codebook per output
channel (or one shared, channel-normalised codebook), and the integer result is a ``(O, 2^b)`` table padded with each
channel's last level, so a kernel indexes ``table[o, index]`` without knowing how many levels a channel really has.

Every builder returns sorted, unique float64 levels, and drops levels that no input value is nearest to: a tensor
with fewer distinct values than 2^b (constant, sparse, already quantized) gets fewer levels, never NaN, never an
empty bin. An all-zero tensor gives the single level 0.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..config import OBSERVERS
from ..errors import ConfigError, InvalidTensorError
from .fixed_point import round_half_away
from .observers import weight_ranges
from .qparams import INT32_MAX, INT32_MIN, QParams

__all__ = [
    "BUILDERS",
    "Codebook",
    "activation_codebook",
    "apot_levels",
    "build_codebook",
    "equal_population_bins",
    "quantile_groups",
    "kmeans_levels",
    "pow2_levels",
    "quantile_levels",
    "snap_to_grid",
    "uniform_levels",
    "lut_thresholds",
    "nl_quantize_thresholds",
    "weight_codebooks",
]

MAX_BITS = 8
INT8_QMAX = 127  # symmetric int8 weight grid [-127, 127], as quantize_weights
ALPHA_FRACTIONS = np.geomspace(0.02, 1.0, 41)  # coarse alpha grid for pow2/apot, as fractions of max|x|
ALPHA_REFINE = np.linspace(0.9, 1.1, 21)  # fine grid around the best coarse alpha
ALPHA_PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99)
ALPHA_SAMPLE = 1 << 14  # values the alpha search looks at (sorted, strided)


# ----------------------------------------------------------------------------------------------- validation


def _check_bits(bits: object) -> int:
    """Codebooks index with uint8, so at most 2^8 levels."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"bits must be an integer in 1..{MAX_BITS} (a codebook has 2^bits levels), got {bits!r}")
    return int(bits)


def _check_finite(data: np.ndarray, name: str) -> None:
    """NaN/Inf would silently poison every level, so refuse them."""
    bad = ~np.isfinite(data)
    if bad.any():
        raise InvalidTensorError(
            f"{name} holds {int(bad.sum())} NaN/Inf value(s) (first at flat index {int(np.argmax(bad))}); "
            "fix the tensor or the calibration data before building a codebook"
        )


def _finite(values: object, name: str) -> np.ndarray:
    """Flat float64 copy of a non-empty, finite tensor."""
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    if data.size == 0:
        raise InvalidTensorError(f"{name} is empty; a codebook needs at least one value")
    _check_finite(data, name)
    return data


# ------------------------------------------------------------------------------------------ nearest levels


def _nearest(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest level (ties to the lower index): only the two levels bracketing x can win."""
    upper = np.searchsorted(levels, x, side="left")
    hi = np.minimum(upper, levels.size - 1)
    lo = np.maximum(upper - 1, 0)
    return np.where(np.abs(levels[hi] - x) < np.abs(x - levels[lo]), hi, lo)


def _mse(data: np.ndarray, levels: np.ndarray) -> float:
    return float(np.mean((data - levels[_nearest(data, levels)]) ** 2))


def _prune(levels: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Unique levels that some value is nearest to; dropping the others never changes any value's level."""
    levels = np.unique(levels) + 0.0  # + 0.0 turns -0.0 into 0.0
    return levels[np.unique(_nearest(data, levels))]


@dataclass(frozen=True, eq=False)
class Codebook:
    """One tensor's (or one channel's) levels, sorted ascending and unique, at most 2^bits of them."""

    levels: np.ndarray
    bits: int

    def __post_init__(self) -> None:
        bits = _check_bits(self.bits)
        levels = np.array(self.levels, dtype=np.float64)
        if levels.ndim != 1 or not 1 <= levels.size <= 2**bits:
            raise ConfigError(f"Codebook.levels must be 1-D with 1..{2**bits} entries, got shape {levels.shape}")
        if not np.all(np.isfinite(levels)) or np.any(np.diff(levels) <= 0):
            raise ConfigError("Codebook.levels must be finite and strictly increasing; build them with build_codebook")
        levels.flags.writeable = False
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "bits", bits)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codebook) and self.bits == other.bits and np.array_equal(self.levels, other.levels)

    def __hash__(self) -> int:
        return hash((self.bits, self.levels.tobytes()))

    @property
    def size(self) -> int:
        return int(self.levels.size)

    @property
    def thresholds(self) -> np.ndarray:
        """Decision boundaries (midpoints): x <= thresholds[i] goes to level i or lower."""
        return self.levels[:-1] / 2 + self.levels[1:] / 2  # halves first: no overflow near float max

    def assign(self, x: np.ndarray) -> np.ndarray:
        """uint8 index of the nearest level for every value of x (same shape); ties go to the lower index."""
        data = np.asarray(x, dtype=np.float64)
        _check_finite(data.reshape(-1), "x")
        return _nearest(data, self.levels).astype(np.uint8)

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """float64 level of every index."""
        idx = np.asarray(indices)
        _check_indices(idx, self.size, "indices")
        return self.levels[idx]

    def mse(self, x: np.ndarray) -> float:
        """Mean squared error of x against its nearest levels (the quantity kmeans minimises)."""
        data = _finite(x, "x")
        return _mse(data, self.levels)


def _check_indices(idx: np.ndarray, limit: int, name: str) -> None:
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= limit):
        raise ConfigError(f"{name} must be integers in [0, {limit}), got dtype {idx.dtype} and values outside")


# ----------------------------------------------------------------------------------------------- builders

Builder = Callable[..., np.ndarray]


def _builder(fn: Builder) -> Builder:
    """Shared wrapper: validate, sort, scale into [1, 2) by a power of two (exact, no overflow), rescale, prune.

    Pruning again after rescaling matters only for subnormal data, where two levels can round to one.
    """

    @functools.wraps(fn)
    def build(values: np.ndarray, bits: int, *, name: str = "values", **options: object) -> np.ndarray:
        bits = _check_bits(bits)
        original = np.sort(_finite(values, name))
        peak = float(np.max(np.abs(original)))
        if peak == 0.0:
            return np.zeros(1)
        exponent = math.frexp(peak)[1] - 1
        data = np.ldexp(original, -exponent)
        if options.get("alpha") is not None:  # a scale option is in the data's units: scale it with the data
            options["alpha"] = _check_alpha(float(np.ldexp(_check_alpha(options["alpha"]), -exponent)))
        levels = np.asarray(fn(data, bits, **options), dtype=np.float64)
        return _prune(np.ldexp(_prune(levels, data), exponent), original)

    return build


def equal_population_bins(sorted_values: np.ndarray, count: int) -> list[np.ndarray]:
    """Split sorted values into `count` contiguous groups whose sizes differ by at most one (empty groups dropped)."""
    return [group for group in np.array_split(sorted_values, count) if group.size]


def quantile_groups(sorted_values: np.ndarray, count: int) -> list[np.ndarray]:
    """Equal-population bins that respect point masses.

    A value repeated more often than a bin would hold (ReLU's zeros, a pruned weight's zeros) gets a bin of its
    own, and the remaining bins split the other values equally, run by run between such values (each run's share
    of bins proportional to its size). Without that, the mass would fill several bins that collapse into one
    level and leave the tail with few, coarse levels. Continuous data gives ``equal_population_bins`` exactly.
    """
    values, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    atoms = np.zeros(values.size, bool)
    while (free := count - int(atoms.sum())) > 0:
        rest = sorted_values.size - int(counts[atoms].sum())
        new = ~atoms & (counts * free > rest)
        if not new.any():
            break
        atoms |= new
    if not atoms.any():
        return equal_population_bins(sorted_values, count)
    cuts = np.sort(np.concatenate((first[atoms], first[atoms] + counts[atoms])))
    pieces = np.split(sorted_values, cuts)  # run, atom, run, atom, ..., run
    runs = pieces[0::2]
    sizes = np.array([r.size for r in runs], np.float64)
    free = max(count - int(atoms.sum()), 0)
    shares = free * sizes / sizes.sum() if sizes.sum() else np.zeros_like(sizes)
    alloc = np.floor(shares).astype(int)
    for k in np.argsort(alloc - shares)[: free - int(alloc.sum())]:  # largest remainders first
        alloc[k] += 1
    groups: list[np.ndarray] = []
    for k, piece in enumerate(pieces):
        groups += [piece] if k % 2 else equal_population_bins(piece, int(alloc[k // 2])) if alloc[k // 2] else []
    return [g for g in groups if g.size]


def _bin_centers(data: np.ndarray, bits: int, center: str) -> np.ndarray:
    if center not in ("mean", "median"):
        raise ConfigError(f"quantile option center must be 'mean' or 'median', got {center!r}")
    reduce = np.mean if center == "mean" else np.median
    # Clipping into the bin's range keeps constant bins exact despite rounding in the sum.
    return np.array([np.clip(reduce(g), g[0], g[-1]) for g in quantile_groups(data, 2**bits)])


@_builder
def quantile_levels(data: np.ndarray, bits: int, center: str = "mean") -> np.ndarray:
    """Equal-population bins (``quantile_groups``: point masses get their own level): dense levels where values are
    dense; each level the bin's mean (or median)."""
    return _bin_centers(data, bits, center)


def _cells(data: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Start offsets of each level's cell in sorted data (cell i: values nearest to level i; ties to the lower)."""
    thresholds = levels[:-1] / 2 + levels[1:] / 2
    return np.concatenate(([0], np.searchsorted(data, thresholds, side="right"), [data.size]))


def _lloyd_step(data: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """One exact 1-D Lloyd-Max update: every non-empty cell's level moves to the cell's mean."""
    bounds = _cells(data, levels)
    starts, ends = bounds[:-1], bounds[1:]
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    means = np.add.reduceat(data, starts) / (ends - starts)
    return np.clip(means, data[starts], data[ends - 1])


def _split_worst(data: np.ndarray, levels: np.ndarray, target: int) -> np.ndarray:
    """Re-use levels lost to empty cells: split the cell with the largest squared error at its mean."""
    while levels.size < target:
        bounds = _cells(data, levels)
        errors = [np.sum((data[a:b] - level) ** 2) for a, b, level in zip(bounds[:-1], bounds[1:], levels, strict=True)]
        worst = int(np.argmax(errors))
        cell = data[bounds[worst] : bounds[worst + 1]]
        if cell.size == 0 or cell[0] == cell[-1]:
            break  # the worst cell is constant, so every cell is: nothing left to split
        cut = min(np.clip(cell.mean(), cell[0], cell[-1]), np.nextafter(cell[-1], -np.inf))
        low, high = cell[cell <= cut], cell[cell > cut]
        means = [np.clip(part.mean(), part[0], part[-1]) for part in (low, high)]
        split = np.unique(np.concatenate((np.delete(levels, worst), means)))
        if split.size <= levels.size:
            break  # values a few ulps apart: the halves' means round onto existing levels, no split can add one
        levels = split
    return levels


def _cell_mse(data: np.ndarray, levels: np.ndarray) -> float:
    """MSE with cells from thresholds on sorted data: cheaper than a nearest-level search per value."""
    return float(np.mean((data - np.repeat(levels, np.diff(_cells(data, levels)))) ** 2))


def _lloyd(data: np.ndarray, levels: np.ndarray, target: int, max_iter: int, tol: float) -> np.ndarray:
    """Lloyd-Max iterations from `levels`; returns the best iterate (the start included)."""
    best, best_err = levels, _cell_mse(data, levels)
    for _ in range(max_iter):
        new = _split_worst(data, _lloyd_step(data, levels), target)
        err = _cell_mse(data, new)
        if err < best_err:
            best, best_err = new, err
        converged = new.size == levels.size and float(np.max(np.abs(new - levels))) <= tol
        levels = new
        if converged:
            break
    return best


@_builder
def kmeans_levels(data: np.ndarray, bits: int, max_iter: int = 300, tol: float = 1e-10) -> np.ndarray:
    """MSE-optimal levels by Lloyd-Max, never worse than quantile's (``tol`` is relative to max|x|).

    Lloyd runs from the quantile levels and from the MSE-clipped uniform grid, and the best result wins: from
    quantile alone it sticks in poor local minima at 6+ bits (10-30x the MSE of the uniform grid on Laplace data).
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ConfigError(f"kmeans option max_iter must be a non-negative int, got {max_iter!r}")
    if not tol >= 0:
        raise ConfigError(f"kmeans option tol must be >= 0, got {tol!r}")
    target = min(2**bits, int(np.count_nonzero(np.diff(data))) + 1)
    quantile = np.unique(_bin_centers(data, bits, "mean"))
    uniform = _prune(_uniform_grid(data, bits, "mse", 99.99, None), data)
    candidates = [quantile] + [_lloyd(data, start, target, max_iter, tol) for start in (quantile, uniform)]
    return min(candidates, key=lambda levels: _mse(data, levels))  # exact MSE; ties keep quantile


def _signed(data: np.ndarray, signed: bool | None) -> bool:
    """Auto: symmetric levels unless every value is >= 0 (then all codes go to the positive side)."""
    if signed is None:
        return bool(data[0] < 0)
    if not isinstance(signed, bool):
        raise ConfigError(f"option signed must be True, False or None (auto), got {signed!r}")
    return signed


def _with_sign(magnitudes: np.ndarray, signed: bool) -> np.ndarray:
    return np.concatenate((-magnitudes, magnitudes)) if signed else magnitudes


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"option alpha must be a positive finite number (or None to search it), got {alpha!r}")
    return float(alpha)


def _fit_alpha(data: np.ndarray, unit: np.ndarray, alpha: float | None) -> np.ndarray:
    """alpha * unit (max |unit| = 1) with the MSE-best alpha in (0, max|x|]: a coarse grid from max|x| and
    percentiles, then refined. (Capping at max|x| keeps every level finite even next to the float maximum.)

    Large tensors are searched on an evenly strided subsample of the sorted values (extremes included).
    A given alpha is used as is.
    """
    if alpha is not None:
        return np.sort(alpha * unit)
    if data.size > ALPHA_SAMPLE:
        data = data[np.linspace(0, data.size - 1, ALPHA_SAMPLE).astype(np.int64)]
    magnitude = np.abs(data)
    peak = float(magnitude.max())
    coarse = np.concatenate((peak * ALPHA_FRACTIONS, np.percentile(magnitude, ALPHA_PERCENTILES), [magnitude.mean()]))

    def best(alphas: np.ndarray) -> float:
        alphas = alphas[(alphas > 0) & (alphas <= peak)]
        return float(alphas[np.argmin([_mse(data, np.sort(a * unit)) for a in alphas])])

    return np.sort(best(best(coarse) * ALPHA_REFINE) * unit)


@_builder
def pow2_levels(data: np.ndarray, bits: int, signed: bool | None = None, alpha: float | None = None) -> np.ndarray:
    """0 and +-alpha * 2^-k (k = 0, 1, ...): multiplying by a level is a shift. 1-bit signed is {-alpha, alpha}.

    alpha (the largest level) is searched for the lowest MSE unless given.
    """
    signed = _signed(data, signed)
    magnitude_bits = bits - 1 if signed else bits
    powers = 2.0 ** -np.arange(2**magnitude_bits - 1)
    unit = _with_sign(np.concatenate(([0.0], powers)) if powers.size else np.ones(1), signed)
    return _fit_alpha(data, np.unique(unit), alpha)


def _apot_magnitudes(magnitude_bits: int) -> np.ndarray:
    """Li et al. 2020: sums of n = ceil(m/2) power-of-two terms, term i from {0} + {2^-(i + j n)}; max scaled to 1.

    Each term has 2 bits (the last has 1 if m is odd); exponents differ between terms, so all 2^m sums are distinct.
    """
    terms = max(1, -(-magnitude_bits // 2))
    term_bits = [2] * (magnitude_bits // 2) + [1] * (magnitude_bits % 2)
    sums = np.zeros(1)
    for i, k in enumerate(term_bits):
        choices = np.concatenate(([0.0], 2.0 ** -(i + terms * np.arange(2**k - 1))))
        sums = (sums[:, None] + choices[None, :]).reshape(-1)
    return np.unique(sums) / sums.max()


@_builder
def apot_levels(data: np.ndarray, bits: int, signed: bool | None = None, alpha: float | None = None) -> np.ndarray:
    """Additive powers of two: every level is alpha * (a sum of a few powers of two) / (their largest sum).

    alpha (the largest level) is searched for the lowest MSE unless given.
    """
    signed = _signed(data, signed)
    magnitude_bits = bits - 1 if signed else bits
    unit = _with_sign(_apot_magnitudes(magnitude_bits), signed) if magnitude_bits else np.array([-1.0, 1.0])
    return _fit_alpha(data, np.unique(unit), alpha)


@_builder
def uniform_levels(
    data: np.ndarray, bits: int, observer: str = "minmax", percentile: float = 99.99, signed: bool | None = None
) -> np.ndarray:
    """The existing uniform grid as a codebook: symmetric int grid times the observer's scale (as quantize_weights).

    Non-negative data (signed=None) uses the unsigned grid 0..2^b-1. 1-bit signed is {-mean|x|, mean|x|}.
    """
    return _uniform_grid(data, bits, observer, percentile, signed)


def _uniform_grid(data: np.ndarray, bits: int, observer: str, percentile: float, signed: bool | None) -> np.ndarray:
    if observer not in OBSERVERS:
        raise ConfigError(f"uniform option observer must be one of {list(OBSERVERS)}, got {observer!r}")
    signed = _signed(data, signed)
    if signed and bits == 1:
        return np.array([-1.0, 1.0]) * np.mean(np.abs(data))
    qmax = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    magnitude = float(weight_ranges(data[None, :], bits if signed else bits + 1, observer, percentile)[0])
    steps = np.arange(-qmax if signed else 0, qmax + 1)
    return steps / qmax * magnitude  # in this order the top level is exactly the magnitude


BUILDERS: dict[str, Builder] = {
    "uniform": uniform_levels,
    "quantile": quantile_levels,
    "kmeans": kmeans_levels,
    "pow2": pow2_levels,
    "apot": apot_levels,
}


def _builder_for(scheme: str, options: dict[str, object]) -> Builder:
    """Look up a scheme and refuse unknown options with a ConfigError instead of a TypeError."""
    if scheme not in BUILDERS:
        raise ConfigError(f"unknown codebook scheme {scheme!r}; choose one of {list(BUILDERS)}")
    builder = BUILDERS[scheme]
    allowed = list(inspect.signature(builder).parameters)[2:]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"codebook scheme {scheme!r} has no option(s) {unknown}; its options are {allowed}")
    return builder


def build_codebook(values: np.ndarray, bits: int, scheme: str, name: str = "values", **options: object) -> Codebook:
    """Levels of `scheme` fitted to `values` (`name` is used in error messages)."""
    levels = _builder_for(scheme, options)(values, bits, name=name, **options)
    return Codebook(levels=levels, bits=bits)


# ------------------------------------------------------------------------------------------ integer snapping


def snap_to_grid(levels: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Snap levels onto the symmetric int8 grid: (sorted unique int8 levels, scale); real level = scale * int.

    Default scale max|level| / 127 (1.0 if all zero). Levels closer than one step collapse into one integer.
    """
    levels = np.asarray(levels, dtype=np.float64)
    if scale is None:
        peak = float(np.max(np.abs(levels))) if levels.size else 0.0
        scale = peak / INT8_QMAX if peak > 0 else 1.0
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"snap_to_grid: scale must be positive and finite, got {scale!r}")
    ints = np.clip(round_half_away(levels / scale), -INT8_QMAX, INT8_QMAX)
    return np.unique(ints).astype(np.int8), float(scale)


def _pad(table: np.ndarray, bits: int) -> np.ndarray:
    """Pad with the last level so every table has 2^bits entries; unused indices decode to a valid level."""
    return np.pad(table, (0, 2**bits - table.size), mode="edge")


def _snapped(
    values: np.ndarray, bits: int, scheme: str, name: str, options: dict[str, object]
) -> tuple[np.ndarray, float]:
    """int8 levels and scale of one codebook, pruned again after snapping (so no index is unreachable)."""
    ints, scale = snap_to_grid(_builder_for(scheme, options)(values, bits, name=name, **options))
    return ints[np.unique(_nearest(np.ravel(values) / scale, ints.astype(np.float64)))], scale


def weight_codebooks(
    weight: np.ndarray, bits: int, scheme: str, per_channel: bool | str = True, **options: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codebook-quantize a weight along axis 0: (uint8 indices like weight, int8 tables (O, 2^b), scales (O,)).

    Real weight = scales[o] * tables[o, indices[o, ...]]. per_channel: True = one codebook per output channel;
    "normalized" = one codebook for the layer on w_o / max|w_o|, each channel with its own scale; False = one
    codebook and one scale for the whole layer. In both shared modes all-zero channels (pruned filters) are left
    out of the fit and get the table [0, ...], so they stay exactly zero.
    """
    bits = _check_bits(bits)
    if np.ndim(weight) == 0:
        raise ConfigError("weight must have an output-channel axis 0, got a scalar")
    flat = _finite(weight, "weight").reshape(np.shape(weight)[0], -1)
    if per_channel is True:
        tables, scales = _per_channel(flat, bits, scheme, options)
    elif per_channel in ("normalized", False):
        tables, scales = _shared(flat, bits, scheme, options, normalize=per_channel == "normalized")
    else:
        raise ConfigError(f"per_channel must be True, False or 'normalized', got {per_channel!r}")
    indices = [_nearest(row / s, t.astype(np.float64)) for row, t, s in zip(flat, tables, scales, strict=True)]
    table = np.stack([_pad(t, bits) for t in tables]).astype(np.int8)
    return np.array(indices, dtype=np.uint8).reshape(np.shape(weight)), table, np.array(scales, dtype=np.float64)


def _per_channel(flat: np.ndarray, bits: int, scheme: str, options: dict[str, object]) -> tuple[list, list]:
    pairs = [_snapped(row, bits, scheme, f"weight channel {o}", options) for o, row in enumerate(flat)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _shared(flat: np.ndarray, bits: int, scheme: str, options: dict[str, object], normalize: bool) -> tuple[list, list]:
    """One table for the layer (on w_o / max|w_o| if normalize); all-zero channels keep the exact table [0]."""
    peaks = np.max(np.abs(flat), axis=1)
    live = peaks > 0
    if not live.any():
        return [np.zeros(1, np.int8)] * flat.shape[0], [1.0] * flat.shape[0]
    divisors = peaks if normalize else np.ones_like(peaks)
    name = "weight (channel-normalised)" if normalize else "weight"
    ints, scale = _snapped(flat[live] / divisors[live, None], bits, scheme, name, options)
    tables = [ints if alive else np.zeros(1, np.int8) for alive in live]
    scales = np.where(live, divisors * scale, 1.0 if normalize else scale)
    return tables, list(scales)


def activation_codebook(samples: np.ndarray, bits: int, scheme: str, qparams: QParams, **options: object) -> np.ndarray:
    """int8 codes on the activation's own grid (2^b, sorted, unique, padded with the last).

    Index i stands for the real value ``qparams.dequantize(table[i])``; at run time an activation already on that
    grid goes to the index of its nearest table entry.
    """
    levels = _builder_for(scheme, options)(samples, bits, name="activation samples", **options)
    table = np.unique(qparams.quantize(levels)).astype(np.int64)
    codes = qparams.quantize(_finite(samples, "activation samples")).astype(np.float64)
    table = table[np.unique(_nearest(codes, table.astype(np.float64)))]
    return _pad(table, bits).astype(np.int8)


# --------------------------------------------------------------------------------------------- LUT-requantize


def lut_thresholds(
    levels: np.ndarray, bits: int, acc_scale: np.ndarray, bias: np.ndarray | None = None,
    clamp: tuple[float, float] = (-math.inf, math.inf),
) -> np.ndarray:  # fmt: skip
    """int32 thresholds (O, 2^bits - 1) of LUT-requantize, exact.

    An accumulator ``acc`` of output channel ``o`` (without bias) stands for the real value
    ``v = (acc + bias[o]) * acc_scale[o]``; its code is the index of the level nearest to ``clamp(v)`` (ties go
    up), i.e. how many midpoints between adjacent ``levels`` (real, ascending, distinct) it reaches. Threshold
    ``i`` is the least ``acc`` that reaches midpoint ``i``, computed in exact rational arithmetic; entries past the
    last level are INT32_MAX (never reached), midpoints outside the clamp become INT32_MIN or INT32_MAX.
    """
    levels = np.asarray(levels, np.float64)
    if levels.ndim != 1 or levels.size > 2**bits or np.any(np.diff(levels) <= 0):
        raise ConfigError(f"levels must be at most 2^{bits} distinct ascending values, got {levels}")
    scales = np.asarray(acc_scale, np.float64).reshape(-1)
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise ConfigError("acc_scale must be positive and finite")
    biases = np.zeros(scales.size, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(-1)
    lo, hi = (Fraction(c) if math.isfinite(c) else c for c in clamp)
    mids = [(Fraction(a) + Fraction(b)) / 2 for a, b in zip(levels[:-1], levels[1:], strict=True)]
    out = np.full((scales.size, 2**bits - 1), INT32_MAX, np.int64)
    for i, mid in enumerate(mids):
        if lo >= mid:
            out[:, i] = INT32_MIN
        elif hi >= mid:
            out[:, i] = [math.ceil(mid / Fraction(sc)) - b for sc, b in zip(scales, biases, strict=True)]
    return np.clip(out, INT32_MIN, INT32_MAX).astype(np.int32)


def nl_quantize_thresholds(levels: np.ndarray, bits: int) -> np.ndarray:
    """float32 thresholds (2^bits - 1,) of ``nl_quantize``: midpoints of the real ``levels``, then +inf."""
    levels = np.asarray(levels, np.float64)
    out = np.full(2**bits - 1, np.inf, np.float32)
    out[: levels.size - 1] = ((levels[:-1] + levels[1:]) / 2).astype(np.float32)
    return out
