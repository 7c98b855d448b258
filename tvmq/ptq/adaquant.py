"""AdaQuant (Hubara et al. 2021), layer-wise: optimise the weights themselves through the rounding.

The weights move freely (Adam, in grid units of each output channel); the forward pass rounds them to the grid
and the gradient passes the rounding as if it were the identity (straight-through estimator) inside the clipping
range. Every iterate's hard-rounded error is exact and free (second moments, ``tvmq.ptq.layerwise``): the best one
is kept, and round-to-nearest is the start, so the result is never worse than it.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .layerwise import LayerProblem, check_uniform, min_samples_layerwise, reconstruct
from .registry import OPTIMIZE, register
from .state import PTQState

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
OPTIONS = {"iters": 500, "lr": 0.01, "max_rows": 1 << 16}
BOUNDS = {"iters": (1, 1e7), "lr": (1e-9, 10.0), "max_rows": (1, 1e9)}


@register("adaquant", OPTIMIZE, OPTIONS, BOUNDS, min_samples_layerwise, check_uniform)
def adaquant(state: PTQState, options: dict) -> PTQState:
    """Weights optimised through rounding with the straight-through estimator, layer by layer."""
    return reconstruct(state, "adaquant", solve, options)


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
