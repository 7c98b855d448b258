"""AdaQuant (Hubara et al. 2021), layer-wise: optimise the weights themselves through the rounding.

The weights move freely (Adam, in grid units of each output channel); the forward pass rounds them to the grid
and the gradient passes the rounding as if it were the identity (straight-through estimator) inside the clipping
range. Every iterate's hard-rounded error is exact and free (second moments, ``tvmq.ptq.layerwise``): the best one
is kept, and round-to-nearest is the start, so the result is never worse than it.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .blockwise import BLOCK_BOUNDS, BLOCK_OPTIONS, BlockProblem, check_granularity, reconstruct
from .layerwise import LayerProblem, min_samples_layerwise
from .optim import Adam, checkpoints
from .registry import OPTIMIZE, register
from .state import PTQState

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
OPTIONS = {"iters": 500, "lr": 0.01, "max_rows": 1 << 16, **BLOCK_OPTIONS}
BOUNDS = {"iters": (1, 1e7), "lr": (1e-9, 10.0), "max_rows": (1, 1e9), **BLOCK_BOUNDS}


@register("adaquant", OPTIMIZE, OPTIONS, BOUNDS, min_samples_layerwise, check_granularity)
def adaquant(state: PTQState, options: dict) -> PTQState:
    """Weights optimised through rounding with the straight-through estimator, layer or block-wise (opt_weights)."""
    return reconstruct(state, "adaquant", solve, solve_block, options)


def solve(problem: LayerProblem, rtn: np.ndarray, options: dict, progress: bool) -> np.ndarray:
    """Best hard-rounded codes ``(O, K)`` seen while optimising one layer."""
    grid, scales = problem.grid, problem.scales[:, None]
    u = grid.units(problem.weight / scales)
    best, best_loss = rtn, problem.code_loss(rtn)
    if best_loss == 0.0:
        return rtn
    m, s = np.zeros_like(u), np.zeros_like(u)
    bar = tqdm(range(int(options["iters"])), desc=f"adaquant {problem.name}", disable=not progress, leave=False)
    for t in bar:
        codes = grid.codes(np.floor(u + 0.5))
        loss, g_wq = problem.loss_and_grad(problem.dequantize(codes))
        if loss < best_loss:
            best, best_loss = codes, loss
        inside = (u >= -0.5) & (u <= grid.n - 0.5)
        g = g_wq * scales * grid.step * inside
        m = ADAM_BETAS[0] * m + (1 - ADAM_BETAS[0]) * g
        s = ADAM_BETAS[1] * s + (1 - ADAM_BETAS[1]) * g * g
        u = u - options["lr"] * (m / (1 - ADAM_BETAS[0] ** (t + 1))) / (np.sqrt(s / (1 - ADAM_BETAS[1] ** (t + 1)))
                                                                        + ADAM_EPS)  # fmt: skip
        if t % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4g}", best=f"{best_loss:.4g}")
    return best


def solve_block(problem: BlockProblem, rtn: dict, options: dict, progress: bool, start: dict | None = None) -> dict:
    """Best hard-rounded codes ``{layer: (O, K)}`` seen while optimising one block's weights on its output
    (from the float weights, or from the ``start`` codes)."""
    u = {layer.name: problem.grids[layer.name].units(layer.weight.reshape(len(layer.weight), -1).astype(np.float64)
                                                     / problem.scales[layer.name][:, None])
         for layer in problem.block.weighted}  # fmt: skip
    best, best_loss = rtn, problem.code_loss(rtn)
    norm = best_loss
    if start is not None:
        u = {n: problem.grids[n].units(start[n].astype(np.float64)) for n in u}
        if (start_loss := problem.code_loss(start)) < best_loss:
            best, best_loss = start, start_loss
    if best_loss == 0.0:
        return best
    iters = int(options["iters"])
    adam, checks = Adam(options["lr"]), checkpoints(iters)

    def hard() -> dict:
        return {n: problem.grids[n].codes(np.floor(u[n] + 0.5)) for n in u}

    bar = tqdm(range(iters), desc=f"adaquant {problem.block.name}", disable=not progress, leave=False)
    for t in bar:
        loss, grads = problem.loss_and_grads(problem.dequantize(hard()))
        g = {}
        for name in u:
            grid = problem.grids[name]
            inside = (u[name] >= -0.5) & (u[name] <= grid.n - 0.5)
            g[name] = grads.weight[name] * problem.scales[name][:, None] * grid.step * inside / norm
        adam.step(u, g)
        if t in checks:
            codes = hard()
            full = problem.code_loss(codes)
            if full < best_loss:
                best, best_loss = codes, full
            bar.set_postfix(loss=f"{full:.4g}", best=f"{best_loss:.4g}")
    return best
