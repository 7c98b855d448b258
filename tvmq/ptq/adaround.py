"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"), layer-wise.

Each weight rounds down or up on its grid: ``Wq = s * clip(floor(W/s) + h(V))`` with the rectified sigmoid
``h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``. Adam minimises the layer's reconstruction error plus
``reg * mean(1 - |2h - 1|^beta)``, which pushes every ``h`` to 0 or 1 while ``beta`` anneals from ``beta_start``
to ``beta_end`` after a warm-up without it. The reconstruction error is relative to round-to-nearest's (so ``reg``
means the same on every layer) and exact (second moments, ``tvmq.ptq.layerwise``): no mini-batches, and the
hard rounding is checked on the way, keeping the best seen (round-to-nearest is the start, so never worse).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .blockwise import BLOCK_BOUNDS, BLOCK_OPTIONS, BlockProblem, check_granularity, reconstruct
from .layerwise import LayerProblem, min_samples_layerwise
from .optim import Adam, checkpoints
from .registry import OPTIMIZE, register
from .state import PTQState

ZETA, GAMMA = 1.1, -0.1
START_LEAN = 0.3  # a warm-started block's soft rounding begins this far from 0.5 towards the layer-wise choice
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8

OPTIONS = {"iters": 1000, "lr": 0.1, "reg": 0.3, "beta_start": 20.0, "beta_end": 2.0, "warmup": 0.2,
           "max_rows": 1 << 16, **BLOCK_OPTIONS}  # fmt: skip
BOUNDS = {"iters": (1, 1e7), "lr": (1e-9, 10.0), "reg": (0.0, 1e3), "beta_start": (1.0, 1e3), "beta_end": (1.0, 1e3),
          "warmup": (0.0, 1.0), "max_rows": (1, 1e9), **BLOCK_BOUNDS}  # fmt: skip


@register("adaround", OPTIMIZE, OPTIONS, BOUNDS, min_samples_layerwise, check_granularity)
def adaround(state: PTQState, options: dict) -> PTQState:
    """Learned rounding (up or down) per weight, layer by layer or block by block (opt_round)."""
    return reconstruct(state, "adaround", solve, solve_block, options)


def _h(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rectified sigmoid and its derivative."""
    sig = 1.0 / (1.0 + np.exp(-v))
    raw = sig * (ZETA - GAMMA) + GAMMA
    inside = (raw > 0.0) & (raw < 1.0)
    return np.clip(raw, 0.0, 1.0), np.where(inside, (ZETA - GAMMA) * sig * (1.0 - sig), 0.0)


def solve(problem: LayerProblem, rtn: np.ndarray, options: dict, progress: bool) -> np.ndarray:
    """Optimised codes ``(O, K)`` of one layer."""
    grid, scales = problem.grid, problem.scales[:, None]
    units = grid.units(problem.weight / scales)
    floor = np.floor(units)
    rest = np.clip(units - floor, 1e-4, 1.0 - 1e-4)
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)  # h(v) = rest: start at the float weight itself
    best, best_loss = rtn, problem.code_loss(rtn)
    norm = best_loss if best_loss > 0 else 1.0
    if best_loss == 0.0:
        return rtn
    iters, warm = int(options["iters"]), int(options["warmup"] * options["iters"])
    m, s = np.zeros_like(v), np.zeros_like(v)
    step_size = grid.step * scales

    def hard(v_: np.ndarray) -> np.ndarray:
        return grid.codes(floor + (v_ >= 0.0))

    bar = tqdm(range(iters), desc=f"adaround {problem.name}", disable=not progress, leave=False)
    for t in bar:
        h, dh = _h(v)
        u = floor + h
        inside = (u >= 0) & (u <= grid.n - 1)
        wq = scales * (grid.offset + grid.step * np.clip(u, 0, grid.n - 1))
        g_h = problem.grad(wq) * step_size * inside / norm
        if t >= warm and options["reg"] > 0:
            anneal = 1.0 - (t - warm) / max(iters - warm, 1)
            beta = options["beta_end"] + (options["beta_start"] - options["beta_end"]) * anneal
            d = 2.0 * h - 1.0
            g_h = g_h - options["reg"] * beta * np.abs(d) ** (beta - 1.0) * np.sign(d) * 2.0 / h.size
        g = g_h * dh
        m = ADAM_BETAS[0] * m + (1 - ADAM_BETAS[0]) * g
        s = ADAM_BETAS[1] * s + (1 - ADAM_BETAS[1]) * g * g
        m_hat, s_hat = m / (1 - ADAM_BETAS[0] ** (t + 1)), s / (1 - ADAM_BETAS[1] ** (t + 1))
        v = v - options["lr"] * m_hat / (np.sqrt(s_hat) + ADAM_EPS)
        if (t + 1) % max(iters // 20, 1) == 0 or t == iters - 1:
            codes = hard(v)
            loss = problem.code_loss(codes)
            if loss < best_loss:
                best, best_loss = codes, loss
            bar.set_postfix(loss=f"{loss / norm:.4f}", best=f"{best_loss / norm:.4f}")
    return best


def _reg_grad(h: np.ndarray, t: int, iters: int, options: dict) -> np.ndarray:
    """Gradient w.r.t. ``h`` of ``reg * mean(1 - |2h - 1|^beta)`` at iteration ``t`` (zero during the warm-up)."""
    warm = int(options["warmup"] * iters)
    if t < warm or options["reg"] <= 0:
        return np.zeros_like(h)
    anneal = 1.0 - (t - warm) / max(iters - warm, 1)
    beta = options["beta_end"] + (options["beta_start"] - options["beta_end"]) * anneal
    d = 2.0 * h - 1.0
    return -options["reg"] * beta * np.abs(d) ** (beta - 1.0) * np.sign(d) * 2.0 / h.size


def solve_block(problem: BlockProblem, rtn: dict, options: dict, progress: bool, start: dict | None = None) -> dict:
    """Optimised codes ``{layer: (O, K)}`` of one block: every layer's rounding learned on the block output.
    ``start``: codes to start from (each rounding direction then begins at ``h = 0.5 +- START_LEAN``)."""
    weights = {layer.name: layer.weight.reshape(len(layer.weight), -1).astype(np.float64)
               for layer in problem.block.weighted}  # fmt: skip
    floor, v = {}, {}
    for name, w in weights.items():
        units = problem.grids[name].units(w / problem.scales[name][:, None])
        floor[name] = np.floor(units)
        rest = np.clip(units - floor[name], 1e-4, 1.0 - 1e-4)
        if start is not None:
            up = problem.grids[name].units(start[name].astype(np.float64)) > floor[name]
            rest = np.where(up, 0.5 + START_LEAN, 0.5 - START_LEAN)
        v[name] = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)
    best, best_loss = rtn, problem.code_loss(rtn)
    norm = best_loss
    if start is not None and (start_loss := problem.code_loss(start)) < best_loss:
        best, best_loss = start, start_loss
    if best_loss == 0.0:
        return best
    iters = int(options["iters"])
    adam, checks = Adam(options["lr"]), checkpoints(iters)

    def hard() -> dict:
        return {n: problem.grids[n].codes(floor[n] + (v[n] >= 0.0)) for n in v}

    bar = tqdm(range(iters), desc=f"adaround {problem.block.name}", disable=not progress, leave=False)
    for t in bar:
        soft, dh, inside = {}, {}, {}
        for name in v:
            grid, scales = problem.grids[name], problem.scales[name][:, None]
            h, dh[name] = _h(v[name])
            u = floor[name] + h
            inside[name] = (u >= 0) & (u <= grid.n - 1)
            soft[name] = scales * (grid.offset + grid.step * np.clip(u, 0, grid.n - 1))
        _, grads = problem.loss_and_grads(soft)
        g = {}
        for name in v:
            h = _h(v[name])[0]
            step = problem.grids[name].step * problem.scales[name][:, None]
            g_h = grads.weight[name] * step * inside[name] / norm + _reg_grad(h, t, iters, options)
            g[name] = g_h * dh[name]
        adam.step(v, g)
        if t in checks:
            codes = hard()
            loss = problem.code_loss(codes)
            if loss < best_loss:
                best, best_loss = codes, loss
            bar.set_postfix(loss=f"{loss / norm:.4f}", best=f"{best_loss / norm:.4f}")
    return best
