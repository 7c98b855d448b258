"""Layer-wise reconstruction: the shared objective of AdaRound, GPTQ and AdaQuant, and the layer-by-layer driver.

For a conv/dense layer with float weights ``W``, float input ``x`` (float model) and input ``x~`` (the model
quantized so far, activations fake-quantized), the objective of integer weights ``Wq = s * codes`` is the mean
squared error of the pre-activation outputs, ``E ||W x - Wq x~||^2`` over calibration rows and output channels.
With ``x`` as im2col rows it only needs the second moments ``Hqq = E[x~ x~^T]``, ``Hfq = E[x x~^T]`` and
``Hff = E[x x^T]`` (per group: one ``K x K`` matrix, ``K`` = kernel size x input channels per group), so every
optimisation step costs ``O x K^2`` whatever the number of calibration samples.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..quant.fixed_point import round_half_away
from ..quant.qparams import weight_qmax
from ..relay_passes.layers import Layer

MAX_ROWS = 1 << 16  # default cap on im2col rows per layer (a seeded random subset beyond it)
GRAM_CHUNK = 8192  # rows per matmul when accumulating the second moments


@dataclass(frozen=True)
class Grid:
    """The uniform integer weight grid of ``bits`` as ``code = offset + step * u``, ``u`` in ``0..n-1``."""

    offset: int
    step: int
    n: int

    @staticmethod
    def of(bits: int) -> Grid:
        if bits == 1:  # binary weights: -1, +1
            return Grid(-1, 2, 2)
        qmax = weight_qmax(bits)
        return Grid(-qmax, 1, 2 * qmax + 1)

    def units(self, real_codes: np.ndarray) -> np.ndarray:
        """Continuous grid position of ``w / s``."""
        return (real_codes - self.offset) / self.step

    def codes(self, units: np.ndarray) -> np.ndarray:
        return (self.offset + self.step * np.clip(units, 0, self.n - 1)).astype(np.int8)

    def nearest(self, real_codes: np.ndarray) -> np.ndarray:
        """Nearest grid codes of ``w / s`` (ties away from zero, as round-to-nearest; binary: the sign)."""
        if self.step == 2:
            return np.where(real_codes >= 0, 1, -1).astype(np.int8)
        return np.clip(round_half_away(real_codes), self.offset, -self.offset).astype(np.int8)


@dataclass
class LayerProblem:
    """The reconstruction objective of one layer. Weights are ``(O, K)`` (flattened layer layout)."""

    name: str
    weight: np.ndarray  # (O, K) float64: the float weights
    scales: np.ndarray  # (O,) float64
    grid: Grid
    groups: int
    hqq: np.ndarray  # (G, K, K)
    hfq: np.ndarray  # (G, K, K)
    reference: float  # mean squared float pre-activation without bias, E (W x)^2 (for relative numbers)
    const: float  # the Hff term of the loss
    rows: int

    def _grouped(self, w: np.ndarray) -> np.ndarray:
        return w.reshape(self.groups, -1, w.shape[-1])

    def loss(self, wq: np.ndarray) -> float:
        """Mean squared pre-activation error of real-valued weights ``wq`` (O, K)."""
        q, f = self._grouped(wq.astype(np.float64)), self._grouped(self.weight)
        quad = np.einsum("gok,gkl,gol->", q, self.hqq, q) - 2.0 * np.einsum("gok,gkl,gol->", f, self.hfq, q)
        return float(max((quad + self.const) / self.weight.shape[0], 0.0))

    def grad(self, wq: np.ndarray) -> np.ndarray:
        """d loss / d wq, (O, K)."""
        return self.loss_and_grad(wq)[1]

    def loss_and_grad(self, wq: np.ndarray) -> tuple[float, np.ndarray]:
        """Both at the cost of one ``(O, K) x (K, K)`` product."""
        if not hasattr(self, "_target"):
            self._target = self._grouped(self.weight) @ self.hfq  # W Hfq, fixed
        q = self._grouped(wq.astype(np.float64))
        q_h = q @ self.hqq
        out = self.weight.shape[0]
        loss = (np.sum(q * q_h) - 2.0 * np.sum(q * self._target) + self.const) / out
        return float(max(loss, 0.0)), (2.0 * (q_h - self._target) / out).reshape(wq.shape)

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float64) * self.scales[:, None]

    def code_loss(self, codes: np.ndarray) -> float:
        return self.loss(self.dequantize(codes))


def im2col(x: np.ndarray, layer: Layer) -> np.ndarray:
    """Layer inputs ``(N, *spatial, C)`` -> rows ``(G, N * positions, K)`` whose dot product with the flattened
    weight of a group's output channel is that channel's output at that position (bias aside)."""
    if layer.kind == "dense":
        return x.reshape(1, len(x), -1)
    weight, attrs = layer.weight, layer.attrs
    kernel = weight.shape[1:-1]
    rank = len(kernel)
    pad = attrs["padding"]
    widths = [(0, 0)] + [(pad[i], pad[i + rank]) for i in range(rank)] + [(0, 0)]
    xp = np.pad(x, widths)
    out_spatial = layer.out_shape[1:-1]
    cols = []
    for offsets in itertools.product(*(range(k) for k in kernel)):
        index = [slice(None)]
        for o, d, s, n in zip(offsets, attrs["dilation"], attrs["strides"], out_spatial, strict=True):
            index.append(slice(o * d, o * d + s * (n - 1) + 1, s))
        cols.append(xp[tuple(index + [slice(None)])])
    patches = np.stack(cols, axis=-2)  # (N, *out_spatial, prod(kernel), C)
    groups, channels = attrs["groups"], x.shape[-1]
    patches = patches.reshape(-1, len(cols), groups, channels // groups)
    return patches.transpose(2, 0, 1, 3).reshape(groups, patches.shape[0], -1)


def rows_per_sample(layer: Layer) -> int:
    return 1 if layer.kind == "dense" else math.prod(layer.out_shape[1:-1])


def fan_in(layer: Layer) -> int:
    return math.prod(layer.weight.shape[1:])


def min_samples_layerwise(layers: list[Layer], config, options: dict) -> tuple[int, str]:
    """Enough rows for a full-rank second moment: at least ``K`` rows for the layer with the largest fan-in ``K``
    per input row of a sample."""
    need, why = 1, ""
    for layer in layers:
        if layer.weight is None:
            continue
        n = math.ceil(fan_in(layer) / rows_per_sample(layer))
        if n > need:
            need = n
            why = (f"layer {layer.name} has {fan_in(layer)} inputs per output and {rows_per_sample(layer)} "
                   "input row(s) per sample")  # fmt: skip
    return need, why


def check_uniform(step: str, layers: list[Layer], config) -> None:
    """Rounding algorithms choose codes on the uniform grid: refuse a layer with a codebook scheme."""
    for layer in layers:
        scheme = config.for_layer(layer.name).weight_scheme
        if layer.weight is not None and scheme != "uniform":
            raise ConfigError(
                f"ptq step {step!r}, layer {layer.name}: rounding optimisation works on the uniform grid; "
                f"weight_scheme={scheme!r} (set it to 'uniform' for this layer)"
            )


def build_problem(layer: Layer, x: np.ndarray, xq: np.ndarray, scales: np.ndarray, bits: int, max_rows: int,
                  rng: np.random.Generator, qdrop: float = 0.0) -> LayerProblem:  # fmt: skip
    """Second moments of the float and quantized inputs of ``layer`` (paired rows, a seeded subset past
    ``max_rows``). ``qdrop`` > 0: the expected objective when each input element independently keeps its float
    value with that probability (QDrop): with ``y = p x + (1 - p) x~``, ``E[d d^T] = E[y y^T] + diag(p (1 - p)
    E[(x - x~)^2])`` and ``E[x d^T] = E[x y^T]`` (the elements of one im2col row are distinct, hence independent)."""
    cols, qcols = im2col(x.astype(np.float32), layer), im2col(xq.astype(np.float32), layer)
    rows = cols.shape[1]
    if rows > max_rows:
        keep = np.sort(rng.choice(rows, max_rows, replace=False))
        cols, qcols, rows = cols[:, keep], qcols[:, keep], max_rows
    drop_var = None
    if qdrop > 0.0:
        drop_var = qdrop * (1.0 - qdrop) * np.mean((cols.astype(np.float64) - qcols) ** 2, axis=1)  # (G, K)
        qcols = qdrop * cols + (1.0 - qdrop) * qcols
    groups, k = cols.shape[0], cols.shape[2]
    hqq, hfq, hff = (np.zeros((groups, k, k)) for _ in range(3))
    for start in range(0, rows, GRAM_CHUNK):
        c = cols[:, start : start + GRAM_CHUNK].astype(np.float64)
        q = qcols[:, start : start + GRAM_CHUNK].astype(np.float64)
        hqq += q.transpose(0, 2, 1) @ q
        hfq += c.transpose(0, 2, 1) @ q
        hff += c.transpose(0, 2, 1) @ c
    hqq, hfq, hff = hqq / rows, hfq / rows, hff / rows
    if drop_var is not None:
        for g in range(groups):
            hqq[g][np.diag_indices_from(hqq[g])] += drop_var[g]
    weight = layer.weight.reshape(layer.weight.shape[0], -1).astype(np.float64)
    f = weight.reshape(groups, -1, k)
    const = float(np.einsum("gok,gkl,gol->", f, hff, f))
    return LayerProblem(layer.name, weight, scales.astype(np.float64), Grid.of(bits), groups, hqq, hfq,
                        reference=const / weight.shape[0], const=const, rows=rows)  # fmt: skip
