"""Adam on dicts of numpy arrays, and the progress bar every optimisation shows (with its current loss)."""

from __future__ import annotations

import numpy as np

BETAS, EPS = (0.9, 0.999), 1e-8


class Adam:
    """Adam (Kingma and Ba) updating ``params[key]`` in place from ``grads[key]``."""

    def __init__(self, lr: float) -> None:
        self.lr, self.t = lr, 0
        self.m: dict = {}
        self.v: dict = {}

    def step(self, params: dict, grads: dict, lrs: dict | None = None) -> None:
        """One step; ``lrs`` gives some keys their own learning rate."""
        self.t += 1
        for key, g in grads.items():
            lr = self.lr if lrs is None else lrs.get(key, self.lr)
            m = self.m.get(key, 0.0) * BETAS[0] + (1 - BETAS[0]) * g
            v = self.v.get(key, 0.0) * BETAS[1] + (1 - BETAS[1]) * g * g
            self.m[key], self.v[key] = m, v
            m_hat, v_hat = m / (1 - BETAS[0] ** self.t), v / (1 - BETAS[1] ** self.t)
            params[key] = params[key] - lr * m_hat / (np.sqrt(v_hat) + EPS)


def checkpoints(iters: int, count: int = 20) -> set[int]:
    """Iterations after which an optimisation evaluates its hard (integer) solution on all the data."""
    every = max(iters // count, 1)
    return {t for t in range(iters) if (t + 1) % every == 0} | {iters - 1}
