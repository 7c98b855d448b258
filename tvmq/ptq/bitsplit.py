"""BitSplit (Wang et al. 2020, "Towards Accurate Post-training Network Quantization via Bit-Split and Stitching"):
the seed study's ``opt_bits``, layer by layer.

A ``b``-bit weight code is split into ``b - 1`` ternary bit planes, ``code = sum_m 2^m t_m`` with ``t_m`` in
``{-1, 0, 1}`` (1-bit weights: one binary plane), which spans exactly tvmq's symmetric grid ``[-(2^(b-1) - 1),
2^(b-1) - 1]``. The layer's reconstruction error (``tvmq.ptq.layerwise``: second moments, exact) is minimised one
plane at a time, most significant first, each weight of the plane set to its best ternary value with the others
fixed (coordinate descent: each move is exact and never increases the error), alternating with the per-channel
scale's least-squares optimum for the codes. Starting from round-to-nearest, the result is never worse than it.
By design it has no block-wise form (the seed study excludes it from its block-wise comparison too).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .blockwise import reconstruct
from .layerwise import LayerProblem, check_uniform, min_samples_layerwise
from .registry import OPTIMIZE, register
from .state import PTQState

OPTIONS = {"iters": 4, "update_scales": True, "max_rows": 1 << 16}
BOUNDS = {"iters": (1, 1e4), "max_rows": (1, 1e9)}


@register("bitsplit", OPTIMIZE, OPTIONS, BOUNDS, min_samples_layerwise, check_uniform)
def bitsplit(state: PTQState, options: dict) -> PTQState:
    """Bit-plane by bit-plane optimisation of the integer weights, layer by layer (opt_bits)."""
    if state.config.pow2_scales:  # the scales stay powers of two: only the bits move
        options = {**options, "update_scales": False}
    return reconstruct(state, "bitsplit", solve, None, options)


def planes_of(codes: np.ndarray, bits: int) -> np.ndarray:
    """Sign-magnitude split of integer codes into ``(planes, *codes.shape)`` values in {-1, 0, 1}."""
    if bits == 1:
        return codes[None].astype(np.int64)
    mag, sign = np.abs(codes.astype(np.int64)), np.sign(codes.astype(np.int64))
    return np.stack([sign * ((mag >> m) & 1) for m in range(bits - 1)])


def solve(problem: LayerProblem, rtn: np.ndarray, options: dict, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """BitSplit codes ``(O, K)`` and scales ``(O,)`` of one layer."""
    bits = _bits(problem)
    planes = planes_of(rtn, bits).astype(np.float64)
    scales = problem.scales.copy()
    shared = bool(np.all(scales == scales[0])) and len(scales) > 1  # per-tensor scales stay one scale
    best = (rtn.copy(), scales.copy())
    best_loss = problem.loss(rtn * scales[:, None])
    allowed = np.array([-1.0, 1.0]) if bits == 1 else np.array([-1.0, 0.0, 1.0])
    bar = tqdm(range(int(options["iters"])), desc=f"bitsplit {problem.name}", disable=not progress, leave=False)
    for _ in bar:
        for m in reversed(range(len(planes))):
            _sweep(problem, planes, m, scales, allowed)
        codes = _codes(planes)
        if options["update_scales"]:
            scales = _best_scales(problem, codes, scales, shared)
        loss = problem.loss(codes * scales[:, None])
        if loss < best_loss:
            best, best_loss = (codes.astype(np.int8), scales.copy()), loss
        bar.set_postfix(loss=f"{loss:.4g}", best=f"{best_loss:.4g}")
    return best


def _bits(problem: LayerProblem) -> int:
    return 1 if problem.grid.step == 2 else int(np.log2(problem.grid.n + 1))


def _codes(planes: np.ndarray) -> np.ndarray:
    return np.tensordot(2.0 ** np.arange(len(planes)), planes, axes=1)


def _sweep(problem: LayerProblem, planes: np.ndarray, m: int, scales: np.ndarray, allowed: np.ndarray) -> None:
    """Coordinate descent over plane ``m``: each column in turn, every row's best value in ``allowed``."""
    out, k = problem.weight.shape
    per_group = out // problem.groups
    weight = 2.0**m
    for g in range(problem.groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        h, hfq = problem.hqq[g], problem.hfq[g]
        alpha = scales[rows] * weight  # real change of a weight per unit change of its plane value
        wq = _codes(planes[:, rows]) * scales[rows, None]
        resid = wq @ h - problem.weight[rows] @ hfq  # (O_g, K): half the gradient, times O
        for col in range(k):
            if h[col, col] <= 0.0:
                continue
            old = planes[m, rows, col]
            delta = allowed[None, :] - old[:, None]  # (O_g, values)
            change = alpha[:, None] * delta
            cost = 2.0 * change * resid[:, col : col + 1] + change * change * h[col, col]
            pick = allowed[np.argmin(cost, axis=1)]
            moved = pick - old
            if np.any(moved):
                planes[m, rows, col] = pick
                resid += np.outer(alpha * moved, h[col])


def _best_scales(problem: LayerProblem, codes: np.ndarray, scales: np.ndarray, shared: bool) -> np.ndarray:
    """Least-squares scales for fixed codes: ``s_o = (w_o Hfq c_o) / (c_o Hqq c_o)`` per channel (one for all with
    per-tensor scales); a channel without a positive denominator keeps its scale."""
    out, k = codes.shape
    per_group = out // problem.groups
    c = codes.reshape(problem.groups, per_group, k)
    w = problem.weight.reshape(problem.groups, per_group, k)
    num = np.einsum("gok,gkl,gol->go", w, problem.hfq, c).reshape(-1)
    den = np.einsum("gok,gkl,gol->go", c, problem.hqq, c).reshape(-1)
    if shared:
        total = float(np.sum(den))
        return np.full_like(scales, np.sum(num) / total) if total > 0 and np.sum(num) > 0 else scales
    ok = (den > 0) & (num > 0)
    return np.where(ok, num / np.where(ok, den, 1.0), scales)
