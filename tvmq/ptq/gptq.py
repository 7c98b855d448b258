"""GPTQ (Frantar et al. 2023): one-shot rounding with second-order error feedback, layer by layer.

Columns (inputs) are quantized one at a time to the nearest grid point; the rounding error of each is pushed onto
the columns not yet quantized through the inverse Hessian ``Hqq^-1`` (its upper Cholesky factor), so the
layer's output error stays small. Inputs are taken in descending ``diag(Hqq)`` order (``act_order``); ``damp``
adds that fraction of the mean diagonal to ``Hqq`` for stability. The target is the least-squares weight on the
quantized inputs, ``W Hfq Hqq^-1``: for ``Wq`` the objective ``E||W x - Wq x~||^2`` equals a constant plus
``(W' - Wq) Hqq (W' - Wq)^T``, so GPTQ minimises the same layer-wise error as AdaRound, with quantized inputs.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .blockwise import reconstruct
from .layerwise import LayerProblem, check_uniform, min_samples_layerwise
from .registry import OPTIMIZE, register
from .state import PTQState

OPTIONS = {"damp": 0.01, "act_order": True, "max_rows": 1 << 16}
BOUNDS = {"damp": (0.0, 10.0), "max_rows": (1, 1e9)}


@register("gptq", OPTIMIZE, OPTIONS, BOUNDS, min_samples_layerwise, check_uniform)
def gptq(state: PTQState, options: dict) -> PTQState:
    """Hessian-based one-shot rounding with error feedback, layer by layer."""
    return reconstruct(state, "gptq", solve, None, options)


def solve(problem: LayerProblem, rtn: np.ndarray, options: dict, progress: bool) -> np.ndarray:
    """GPTQ codes ``(O, K)`` of one layer, per group (or round-to-nearest's, should those have the lower error)."""
    out, k = problem.weight.shape
    per_group = out // problem.groups
    codes = np.empty((out, k), np.int8)
    bar = tqdm(range(problem.groups), desc=f"gptq {problem.name}", unit="group", disable=not progress, leave=False)
    for g in bar:
        rows = slice(g * per_group, (g + 1) * per_group)
        codes[rows] = _group(problem, g, problem.weight[rows], problem.scales[rows], options)
    loss, rtn_loss = problem.code_loss(codes), problem.code_loss(rtn)
    bar.set_postfix(loss=f"{loss:.4g}", rtn=f"{rtn_loss:.4g}")
    bar.close()
    return codes if loss <= rtn_loss else rtn


def _group(problem: LayerProblem, g: int, weight: np.ndarray, scales: np.ndarray, options: dict) -> np.ndarray:
    hqq = problem.hqq[g].copy()
    k = hqq.shape[0]
    dead = np.diag(hqq) <= 0  # inputs that are always zero (padding-only, dead channels): any weight works
    hqq[dead, dead] = 1.0
    diag_mean = float(np.mean(np.diag(hqq)))
    h = hqq + options["damp"] * diag_mean * np.eye(k)
    target = np.linalg.solve(h, (weight @ problem.hfq[g]).T).T  # W Hfq H^-1 (H symmetric)
    target[:, dead] = 0.0
    order = np.argsort(-np.diag(h), kind="stable") if options["act_order"] else np.arange(k)
    w = target[:, order] / scales[:, None]  # in grid units of each row
    hp = h[np.ix_(order, order)]
    inverse = np.linalg.inv(hp)
    upper = np.linalg.cholesky((inverse + inverse.T) / 2).T  # Hinv = U^T U
    q = np.empty_like(w, dtype=np.int8)
    for i in range(k):
        q[:, i] = problem.grid.nearest(w[:, i])
        err = (w[:, i] - q[:, i]) / upper[i, i]
        w[:, i + 1 :] -= np.outer(err, upper[i, i + 1 :])
    codes = np.empty_like(q)
    codes[:, order] = q
    return codes
