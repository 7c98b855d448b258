"""A numpy forward and backward pass over a run of layers, with fake quantization: block-wise reconstruction,
learned step sizes, bias tuning and the mixed-precision proxy all differentiate (or just run) through it.

Why numpy and not ``relax.transform.Gradient``: every objective here differentiates through pieces Relax has no
gradient for and that would each need a hand-written expression (rounding with the straight-through estimator,
AdaRound's rectified sigmoid, LSQ's step-size gradient, QDrop's random masks), and each new parametrisation or
mask would mean a new module to compile. The ops of tvmq's layers are few (conv/dense through ``im2col``, the very
rows the layer-wise objectives are built on; clamp, add, pools, pad, reshape, transpose, concat, softmax,
sigmoid), the zoo's models cost under a million MACs per sample, and a mini-batch step is a few milliseconds in
numpy, deterministic and with nothing to compile. The forward pass is checked against TVM's float model and its
fake-quant simulation (``tests/test_ptq_graph.py``).

Tensors are channels-last and batched: a var of shape ``(1, *s)`` holds ``(N, *s)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..relay_passes.layers import WEIGHTED_KINDS, Layer
from .capture import first_seen
from .layerwise import im2col

POOL_MAX = ("max_pool2d", "max_pool1d")
POOL_AVG = ("avg_pool2d", "avg_pool1d")
SUPPORTED = frozenset({*WEIGHTED_KINDS, "add", *POOL_MAX, *POOL_AVG, "global_avg_pool", "pad", "clamp", "reshape",
                       "transpose", "concat", "softmax", "sigmoid"})  # fmt: skip


@dataclass
class FakeQuant:
    """``(clip(round(x / s) + z, qmin, qmax) - z) * s``, or the nearest of ``levels`` (an activation codebook).

    ``scale`` and ``zero_point`` are floats so that LSQ can move them (the plan takes them rounded)."""

    scale: float
    zero_point: float
    qmin: int
    qmax: int
    levels: np.ndarray | None = None  # real values, ascending

    @staticmethod
    def of(qparams, codebook=None) -> FakeQuant:
        levels = None
        if codebook is not None:
            levels = (codebook.levels.astype(np.float64) - qparams.zero_point) * qparams.scale
        return FakeQuant(float(qparams.scale), float(qparams.zero_point), qparams.qmin, qparams.qmax, levels)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.levels is not None:
            if self.levels.size == 1:
                return np.full_like(x, self.levels[0])
            mids = (self.levels[:-1] + self.levels[1:]) / 2
            return self.levels[np.searchsorted(mids, x, side="right")].astype(x.dtype)
        q = np.clip(np.round(x / self.scale) + self.zero_point, self.qmin, self.qmax)
        return ((q - self.zero_point) * self.scale).astype(x.dtype)

    def grads(self, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Straight-through gradients: d/dx (zero where clipped), and LSQ's d/ds and d/dz (Esser et al. 2020)."""
        if self.levels is not None:
            inside = (x >= self.levels[0]) & (x <= self.levels[-1])
            return g * inside, 0.0, 0.0
        u = x / self.scale
        r = np.round(u) + self.zero_point
        low, high = r < self.qmin, r > self.qmax
        inside = ~(low | high)
        ds = np.where(inside, np.round(u) - u, np.where(low, self.qmin - self.zero_point, self.qmax - self.zero_point))
        dz = np.where(inside, 0.0, -self.scale)
        return g * inside, float(np.sum(g * ds)), float(np.sum(g * dz))


@dataclass
class Tape:
    """What a forward pass keeps for the backward pass."""

    values: dict  # var -> value after its fake quant (what consumers read)
    raw: dict = field(default_factory=dict)  # var -> value before its fake quant
    saved: dict = field(default_factory=dict)  # layer name -> layer-specific intermediates
    drops: dict = field(default_factory=dict)  # var -> bool mask, True where the quantization was dropped (QDrop)


@dataclass
class Grads:
    weight: dict = field(default_factory=dict)  # layer name -> d/d(real weight), layer layout
    bias: dict = field(default_factory=dict)  # layer name -> (O,)
    scale: dict = field(default_factory=dict)  # var -> d/d(scale) of its fake quant
    zero_point: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # external var -> d/d(value)


class Graph:
    """The layers between some external input vars and chosen output vars, runnable forward and backward."""

    def __init__(self, layers: list[Layer], outputs: list | None = None) -> None:
        for layer in layers:
            if layer.kind not in SUPPORTED:
                raise ConfigError(f"layer {layer.name} ({layer.kind}) has no numpy gradient in tvmq.ptq; supported: "
                                  f"{', '.join(sorted(SUPPORTED))}")  # fmt: skip
        self.layers = layers
        produced = {layer.output for layer in layers}
        self.inputs = first_seen([v for layer in layers for v in layer.inputs if v not in produced])
        self.outputs = list(outputs) if outputs is not None else [layers[-1].output]

    # -- forward ---------------------------------------------------------------------------------------------------
    def forward(self, feeds: dict, weights: dict | None = None, biases: dict | None = None,
                quant: dict | None = None, drop: dict | None = None, keep: bool = True) -> Tape:  # fmt: skip
        """Run on ``feeds`` (external var -> batch). ``weights``/``biases``: real values by layer name (default: the
        layer's float ones). ``quant``: var -> FakeQuant applied to that tensor where it is produced (external
        inputs are taken as given). ``drop``: var -> probability of keeping the unquantized value per element
        (QDrop), drawn from ``drop['rng']``. ``keep=False`` saves nothing for a backward pass."""
        weights, biases, quant, drop = weights or {}, biases or {}, quant or {}, drop or {}
        tape = Tape(values=dict(feeds))
        for layer in self.layers:
            x = [tape.values[v] for v in layer.inputs]
            y = self._forward(layer, x, weights.get(layer.name), biases.get(layer.name, layer.bias), tape, keep)
            fq = quant.get(layer.output)
            if fq is not None:
                if keep:
                    tape.raw[layer.output] = y
                q = fq(y)
                p = drop.get(layer.output, 0.0)
                if p > 0.0:
                    mask = drop["rng"].random(y.shape) < p
                    tape.drops[layer.output] = mask
                    q = np.where(mask, y, q)
                y = q
            tape.values[layer.output] = y
        return tape

    def _forward(self, layer: Layer, x: list, weight, bias, tape: Tape, keep: bool) -> np.ndarray:
        kind, n = layer.kind, len(x[0])
        out_shape = (n, *layer.out_shape[1:])
        if kind in WEIGHTED_KINDS:
            w = layer.weight if weight is None else weight
            cols = im2col(x[0], layer)  # (G, rows, K)
            wg = w.reshape(cols.shape[0], -1, cols.shape[2]).astype(cols.dtype)
            y = np.matmul(cols, wg.transpose(0, 2, 1))  # (G, rows, O/G)
            y = y.transpose(1, 0, 2).reshape(out_shape)
            if bias is not None:
                y = y + bias.astype(y.dtype)
            if keep:
                tape.saved[layer.name] = (cols, wg)
            return self._clamp(layer, y, tape, keep)
        if kind == "add":
            return self._clamp(layer, x[0] + x[1], tape, keep)
        if kind == "clamp":
            return self._clamp(layer, x[0], tape, keep)
        if kind in POOL_MAX or kind in POOL_AVG:
            return self._clamp(layer, self._pool(layer, x[0], tape, keep), tape, keep)
        if kind == "global_avg_pool":
            return self._clamp(layer, np.mean(x[0], axis=_spatial(layer, x[0]), keepdims=True).reshape(out_shape),
                               tape, keep)  # fmt: skip
        if kind == "reshape":
            return x[0].reshape(out_shape)
        if kind == "transpose":
            return np.transpose(x[0], layer.attrs["axes"])
        if kind == "pad":
            width = layer.attrs["pad_width"]
            return np.pad(x[0], list(zip(width[0::2], width[1::2], strict=True)),
                          constant_values=layer.attrs["pad_value"])  # fmt: skip
        if kind == "concat":
            return np.concatenate(x, axis=layer.attrs["axis"])
        if kind == "softmax":
            e = np.exp(x[0] - np.max(x[0], axis=-1, keepdims=True))
            y = e / np.sum(e, axis=-1, keepdims=True)
        else:  # sigmoid
            y = 1.0 / (1.0 + np.exp(-x[0]))
        if keep:
            tape.saved[layer.name] = y
        return y.astype(x[0].dtype)

    @staticmethod
    def _clamp(layer: Layer, y: np.ndarray, tape: Tape, keep: bool) -> np.ndarray:
        if layer.clamp is None:
            return y
        low, high = layer.clamp
        if keep:
            tape.saved[layer.name + ":clamp"] = (y > low) & (y < high)
        return np.clip(y, low, high)

    def _pool(self, layer: Layer, x: np.ndarray, tape: Tape, keep: bool) -> np.ndarray:
        win = _PoolWindow(layer, x.shape)
        if layer.kind in POOL_MAX:
            patches = win.patches(x, -np.inf)  # (N, *out, kk, C)
            arg = np.argmax(patches, axis=-2)
            if keep:
                tape.saved[layer.name] = arg
            return np.take_along_axis(patches, arg[..., None, :], axis=-2)[..., 0, :]
        sums = win.patches(x, 0.0).sum(axis=-2)
        return (sums / win.counts()).astype(x.dtype)

    # -- backward --------------------------------------------------------------------------------------------------
    def backward(self, tape: Tape, grad_out: dict, quant: dict | None = None, weights: dict | None = None) -> Grads:
        """Gradients of a scalar loss whose derivative w.r.t. each output var is ``grad_out[var]``."""
        quant, weights = quant or {}, weights or {}
        grads = Grads()
        pending = {var: np.asarray(g) for var, g in grad_out.items()}
        for layer in reversed(self.layers):
            g = pending.pop(layer.output, None)
            if g is None:
                continue
            fq = quant.get(layer.output)
            if fq is not None:
                raw = tape.raw[layer.output]
                mask = tape.drops.get(layer.output)
                g_q, ds, dz = fq.grads(raw, g if mask is None else g * ~mask)
                g = g_q if mask is None else g_q + g * mask
                grads.scale[layer.output] = grads.scale.get(layer.output, 0.0) + ds
                grads.zero_point[layer.output] = grads.zero_point.get(layer.output, 0.0) + dz
            for var, gx in zip(layer.inputs, self._backward(layer, g, tape, grads, weights), strict=True):
                if gx is not None:
                    pending[var] = pending[var] + gx if var in pending else gx
        grads.inputs = {var: pending[var] for var in self.inputs if var in pending}
        return grads

    def _backward(self, layer: Layer, g: np.ndarray, tape: Tape, grads: Grads, weights: dict) -> list:
        kind = layer.kind
        x_shapes = [tape.values[v].shape for v in layer.inputs]
        if layer.clamp is not None and kind not in ("reshape", "transpose", "pad", "concat"):
            g = g * tape.saved[layer.name + ":clamp"]
        if kind in WEIGHTED_KINDS:
            cols, wg = tape.saved[layer.name]
            groups = cols.shape[0]
            gy = g.reshape(cols.shape[1], groups, -1).transpose(1, 0, 2)  # (G, rows, O/G)
            grads.weight[layer.name] = np.matmul(gy.transpose(0, 2, 1), cols).reshape(layer.weight.shape)
            grads.bias[layer.name] = gy.transpose(1, 0, 2).reshape(cols.shape[1], -1).sum(axis=0)
            dcols = np.matmul(gy, wg)  # (G, rows, K)
            return [col2im(dcols, layer, x_shapes[0])]
        if kind in ("add",):
            return [g, g]
        if kind == "clamp":
            return [g]
        if kind in POOL_MAX:
            win = _PoolWindow(layer, x_shapes[0])
            arg = tape.saved[layer.name]
            onehot = np.zeros((*arg.shape[:-1], win.taps, arg.shape[-1]), g.dtype)
            np.put_along_axis(onehot, arg[..., None, :], g[..., None, :], axis=-2)
            return [win.scatter(onehot)]
        if kind in POOL_AVG:
            win = _PoolWindow(layer, x_shapes[0])
            per_tap = (g / win.counts())[..., None, :]
            return [win.scatter(np.broadcast_to(per_tap, (*g.shape[:-1], win.taps, g.shape[-1])))]
        if kind == "global_avg_pool":
            axes = _spatial(layer, np.empty(x_shapes[0], np.float32))
            count = math.prod(x_shapes[0][a] for a in axes)
            keep_shape = [1 if a in axes else d for a, d in enumerate(x_shapes[0])]
            return [np.broadcast_to(g.reshape(keep_shape) / count, x_shapes[0]).astype(g.dtype)]
        if kind == "reshape":
            return [g.reshape(x_shapes[0])]
        if kind == "transpose":
            return [np.transpose(g, np.argsort(layer.attrs["axes"]))]
        if kind == "pad":
            width = layer.attrs["pad_width"]
            index = tuple(slice(b, b + n) for b, n in zip(width[0::2], x_shapes[0], strict=True))
            return [g[index]]
        if kind == "concat":
            bounds = np.cumsum([s[layer.attrs["axis"]] for s in x_shapes])[:-1]
            return list(np.split(g, bounds, axis=layer.attrs["axis"]))
        y = tape.saved[layer.name]
        if kind == "softmax":
            return [y * (g - np.sum(g * y, axis=-1, keepdims=True))]
        return [g * y * (1.0 - y)]  # sigmoid


def col2im(dcols: np.ndarray, layer: Layer, x_shape: tuple[int, ...]) -> np.ndarray:
    """The adjoint of :func:`tvmq.ptq.layerwise.im2col`: row gradients ``(G, N * positions, K)`` -> ``(N, *spatial,
    C)`` (each input element receives the sum over the rows and taps that read it)."""
    if layer.kind == "dense":
        return dcols.reshape(x_shape)
    attrs, kernel = layer.attrs, layer.weight.shape[1:-1]
    rank, pad, groups = len(kernel), attrs["padding"], attrs["groups"]
    out_spatial = layer.out_shape[1:-1]
    n, channels = x_shape[0], x_shape[-1]
    taps = math.prod(kernel)
    d = dcols.reshape(groups, n, *out_spatial, taps, channels // groups)
    d = np.moveaxis(d, 0, -2).reshape(n, *out_spatial, taps, channels)
    padded = [n] + [x_shape[1 + i] + pad[i] + pad[i + rank] for i in range(rank)] + [channels]
    dx = np.zeros(padded, dcols.dtype)
    for j, offsets in enumerate(itertools.product(*(range(k) for k in kernel))):
        index = [slice(None)]
        for o, dil, s, size in zip(offsets, attrs["dilation"], attrs["strides"], out_spatial, strict=True):
            index.append(slice(o * dil, o * dil + s * (size - 1) + 1, s))
        dx[tuple(index + [slice(None)])] += d[..., j, :]
    crop = [slice(None)] + [slice(pad[i], pad[i] + x_shape[1 + i]) for i in range(rank)] + [slice(None)]
    return dx[tuple(crop)]


class _PoolWindow:
    """The windows of a pooling layer (channels-last): explicit padding plus any ceil_mode overhang."""

    def __init__(self, layer: Layer, x_shape: tuple[int, ...]) -> None:
        a = layer.attrs
        self.kernel, self.strides = list(a["pool_size"]), list(a["strides"])
        rank = len(self.kernel)
        self.rank, self.x_shape = rank, x_shape
        self.lo, self.hi = list(a["padding"][:rank]), list(a["padding"][rank:])
        self.out = list(layer.out_shape[1:-1])
        spans = zip(self.out, self.strides, self.kernel, x_shape[1:-1], self.lo, self.hi, strict=True)
        self.extra = [max(0, (o - 1) * s + k - (x + lo + hi)) for o, s, k, x, lo, hi in spans]
        self.taps = math.prod(self.kernel)
        self.include_pad = bool(a.get("count_include_pad", False))

    def _index(self, offsets) -> tuple:
        index = [slice(None)]
        for o, s, size in zip(offsets, self.strides, self.out, strict=True):
            index.append(slice(o, o + s * (size - 1) + 1, s))
        return tuple(index + [slice(None)])

    def _pad(self, x: np.ndarray, fill: float) -> np.ndarray:
        widths = [(0, 0)] + [(lo, hi + e) for lo, hi, e in zip(self.lo, self.hi, self.extra, strict=True)] + [(0, 0)]
        return np.pad(x, widths, constant_values=fill)

    def patches(self, x: np.ndarray, fill: float) -> np.ndarray:
        xp = self._pad(x, fill)
        return np.stack([xp[self._index(o)] for o in itertools.product(*(range(k) for k in self.kernel))], axis=-2)

    def counts(self) -> np.ndarray:
        """Taps counted by the average of each output position, ``(1, *out, 1)``."""
        ones = np.ones((1, *self.x_shape[1:-1], 1), np.float32)
        if self.include_pad:
            widths = [(0, 0)] + [(lo, hi) for lo, hi in zip(self.lo, self.hi, strict=True)] + [(0, 0)]
            ones = np.pad(ones, widths, constant_values=1.0)
            ones = np.pad(ones, [(0, 0)] + [(0, e) for e in self.extra] + [(0, 0)])
            xp = ones
        else:
            xp = self._pad(ones, 0.0)
        total = sum(xp[self._index(o)] for o in itertools.product(*(range(k) for k in self.kernel)))
        return np.maximum(total, 1.0)

    def scatter(self, d: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`patches`: ``(N, *out, taps, C)`` -> ``(N, *spatial, C)``."""
        shape = [self.x_shape[0]] + [x + lo + hi + e for x, lo, hi, e in
                                     zip(self.x_shape[1:-1], self.lo, self.hi, self.extra, strict=True)]  # fmt: skip
        dx = np.zeros(shape + [self.x_shape[-1]], d.dtype)
        for j, o in enumerate(itertools.product(*(range(k) for k in self.kernel))):
            dx[self._index(o)] += d[..., j, :]
        crop = [slice(None)] + [slice(lo, lo + x) for lo, x in zip(self.lo, self.x_shape[1:-1], strict=True)]
        return dx[tuple(crop + [slice(None)])]


def _spatial(layer: Layer, x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(1, x.ndim - 1)) if layer.attrs.get("channels_last", True) else tuple(range(2, x.ndim))


# -- the quantized model as numpy ----------------------------------------------------------------------------------
def plan_quantizers(layers: list[Layer], plan, input_var) -> dict:
    """Every fake quant of ``plan``'s simulation (``InsertFakeQuant``): the model input and each layer output."""
    quant = {input_var: FakeQuant.of(plan.input, plan.input_codebook)}
    for layer, lp in zip(layers, plan.layers, strict=True):
        quant[layer.output] = FakeQuant.of(lp.output, lp.out_codebook)
    return quant


def plan_weights(layers: list[Layer], plan) -> tuple[dict, dict]:
    """Dequantized weights and biases of every conv/dense layer of ``plan`` (by layer name)."""
    weights, biases = {}, {}
    for layer, lp in zip(layers, plan.layers, strict=True):
        if lp.weight is not None:
            weights[layer.name] = lp.dequantized_weight()
            biases[layer.name] = None if lp.bias is None else lp.dequantized_bias()
    return weights, biases


def run_model(layers: list[Layer], input_var, x: np.ndarray, plan=None, batch: int = 256,
              outputs: list | None = None) -> dict:  # fmt: skip
    """The float model (``plan`` None) or ``plan``'s fake-quant simulation on ``x``: the values of ``outputs``
    (default: the model output), in batches."""
    wanted = list(outputs) if outputs is not None else [layers[-1].output]
    graph = Graph(layers, [v for v in wanted if not v.same_as(input_var)] or [layers[0].output])
    weights, biases, quant = {}, {}, {}
    if plan is not None:
        weights, biases = plan_weights(layers, plan)
        quant = plan_quantizers(layers, plan, input_var)
    results: dict = {v: [] for v in wanted}
    for start in range(0, len(x), batch):
        xb = x[start : start + batch].astype(np.float32)
        if input_var in quant:
            xb = quant[input_var](xb)
        tape = graph.forward({input_var: xb}, weights, biases, quant, keep=False)
        for v in wanted:
            results[v].append(tape.values[v])
    return {v: np.concatenate(r) for v, r in results.items()}
