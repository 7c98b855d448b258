"""Cross-layer equalisation with bias absorption (Nagel et al. 2019, "Data-Free Quantization").

For two conv/dense layers joined by a positive-homogeneous path (ReLU, max/average pooling, transpose, reshape,
zero pad; a depthwise layer on either side), scaling output channel ``i`` of the first by ``1/s_i`` and every
weight of the second that reads channel ``i`` by ``s_i`` leaves the float function unchanged. ``s_i =
sqrt(r1_i / r2_i)`` (``r``: the channel's weight range in each layer) makes both ranges ``sqrt(r1_i r2_i)``; sweeps
over all pairs repeat until the scales settle, since a middle layer belongs to two pairs.

ReLU6 (a clamp with a finite upper bound ``u``) is not positive-homogeneous, and DFQ replaces it by ReLU. tvmq
keeps it and the float outputs: a channel whose calibration pre-activations reach ``relu6_headroom * u`` keeps
``s_i = 1``; the others are scaled only as far as they stay below that. Inputs up to ``1 / relu6_headroom`` times
a channel's calibration maximum then give exactly the float outputs (the clamp binds on neither side).

Bias absorption: after a ReLU, ``c_i = max(0, min over calibration of the pre-activation)`` moves from the first
layer's bias into the second's (``relu(y - c) = relu(y) - c`` when ``y >= c``), shrinking the activation range;
only where the path holds no padding, which would turn the shift into a border error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..relay_passes import find_layers
from ..relay_passes.layers import WEIGHTED_KINDS, Layer
from .capture import float_pass
from .graph import SetLayerParams
from .registry import PREPROCESS, register
from .state import PTQState

OPTIONS = {"sweeps": 50, "tol": 1e-4, "absorb_bias": True, "relu6_headroom": 0.5}
BOUNDS = {"sweeps": (1, 1e6), "tol": (0.0, 1.0), "relu6_headroom": (1e-3, 1.0)}
# Layers a pair's path may cross: per-channel and positive-homogeneous (max/avg of scaled values is scaled).
SPATIAL_KINDS = {"max_pool2d", "max_pool1d", "avg_pool2d", "avg_pool1d", "global_avg_pool", "pad"}
MOVING_KINDS = {"transpose", "reshape"}


@dataclass
class Pair:
    """Two layers to equalise; ``chan_of[o, k]``: the channel of ``first`` that weight ``(o, k)`` of ``second``
    (flattened per output channel) reads."""

    first: Layer
    second: Layer
    chan_of: np.ndarray
    absorb: bool  # bias absorption keeps the function (ReLU, no padding on the path or in the second layer)


@register("cle", PREPROCESS, OPTIONS, BOUNDS)
def cle(state: PTQState, options: dict) -> PTQState:
    """Cross-layer equalisation of conv/dense pairs, with bias absorption."""
    pairs = find_pairs(state)
    if not pairs:
        return state.replace(report={**state.report, "cle": {}})
    pre = {p.first.name: pre_activation(p.first) for p in pairs}
    state, stats = float_pass(state, extra=list(pre.values()))
    low = {n: _channel(stats.values[v], np.min) for n, v in pre.items()}
    high = {n: _channel(stats.values[v], np.max) for n, v in pre.items()}
    weights = {layer.name: _flat(layer.weight) for layer in state.weighted}
    biases = {layer.name: (np.zeros(layer.weight.shape[0]) if layer.bias is None else layer.bias.astype(np.float64))
              for layer in state.weighted}  # fmt: skip
    total = {n: np.ones_like(high[n]) for n in pre}  # cumulative 1/s applied to each first layer's channels
    before = {f"{p.first.name}->{p.second.name}": _balance(weights, p) for p in pairs}
    for _ in range(int(options["sweeps"])):
        change = 0.0
        for pair in pairs:
            s = _scales(weights, pair, high[pair.first.name] / total[pair.first.name], options["relu6_headroom"])
            weights[pair.first.name] /= s[:, None]
            biases[pair.first.name] /= s
            weights[pair.second.name] *= s[pair.chan_of]
            total[pair.first.name] *= s
            change = max(change, float(np.max(np.abs(np.log(s)))))
        if change < options["tol"]:
            break
    report = {}
    for pair in pairs:
        key = f"{pair.first.name}->{pair.second.name}"
        absorbed = 0.0
        if options["absorb_bias"] and pair.absorb:
            c = np.maximum(low[pair.first.name] / total[pair.first.name], 0.0)
            biases[pair.first.name] -= c
            biases[pair.second.name] += np.sum(weights[pair.second.name] * c[pair.chan_of], axis=1)
            absorbed = float(np.max(c, initial=0.0))
        report[key] = {"balance_before": before[key], "balance_after": _balance(weights, pair),
                       "max_absorbed": absorbed}  # fmt: skip
    params = {}
    for layer in state.weighted:
        bias = biases[layer.name]
        keep_none = layer.bias is None and not np.any(bias)
        params[layer.name] = (weights[layer.name].reshape(layer.weight.shape).astype(np.float32),
                              None if keep_none else bias.astype(np.float32))  # fmt: skip
    mod = SetLayerParams(state.layers, params)(state.float_mod)
    return state.replace(float_mod=mod, layers=find_layers(mod["main"]), report={**state.report, "cle": report})


def _flat(weight: np.ndarray) -> np.ndarray:
    return weight.reshape(weight.shape[0], -1).astype(np.float64)


def _scales(weights: dict, pair: Pair, current_high: np.ndarray, headroom: float) -> np.ndarray:
    """Equalising scales of one pair, within a finite upper clamp of the first layer (see the module doc)."""
    r1 = np.max(np.abs(weights[pair.first.name]), axis=1)
    r2 = _input_ranges(weights[pair.second.name], pair.chan_of, r1.size)
    s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
    upper = (pair.first.clamp or (0.0, math.inf))[1]
    if math.isfinite(upper):
        limit = headroom * upper
        s = np.where(current_high > limit, 1.0, np.maximum(s, current_high / limit))
    return s


def _input_ranges(weight: np.ndarray, chan_of: np.ndarray, channels: int) -> np.ndarray:
    r = np.zeros(channels)
    np.maximum.at(r, chan_of.reshape(-1), np.abs(weight).reshape(-1))
    return r


def _balance(weights: dict, pair: Pair) -> float:
    """DFQ's objective, the summed product of each channel's range relative to its tensor's range, per channel
    (1 when every channel uses its layers' full ranges; higher is better balanced)."""
    r1 = np.max(np.abs(weights[pair.first.name]), axis=1)
    r2 = _input_ranges(weights[pair.second.name], pair.chan_of, r1.size)
    if r1.max() == 0 or r2.max() == 0:
        return 0.0
    return float(np.mean((r1 / r1.max()) * (r2 / r2.max())))


def _channel(values: np.ndarray, reduce) -> np.ndarray:
    """Per channel (last axis, channels-last) reduction over samples and positions."""
    return reduce(values.reshape(-1, values.shape[-1]), axis=0).astype(np.float64)


def pre_activation(layer: Layer):
    """The var holding the layer's output before its fused clamp (after the bias)."""
    return layer.members[1] if layer.bias is not None else layer.members[0]


def find_pairs(state: PTQState) -> list[Pair]:
    """Every conv/dense layer whose output reaches exactly one conv/dense layer through a path CLE can cross."""
    layers = state.layers
    consumers: dict = {}
    for layer in layers:
        for var in layer.inputs:
            consumers.setdefault(var, []).append(layer)
    output = state.float_mod["main"].body.body
    pairs = []
    for first in layers:
        if first.kind not in WEIGHTED_KINDS or not _homogeneous(first.clamp):
            continue
        channels = first.weight.shape[0]
        ids = np.broadcast_to(np.arange(channels), first.out_shape)
        absorb = first.clamp is not None and first.clamp == (0.0, math.inf)
        var = first.output
        while True:
            users = consumers.get(var, [])
            if len(users) != 1 or var.same_as(output) or sum(v.same_as(var) for v in users[0].inputs) != 1:
                break
            nxt = users[0]
            if nxt.kind in WEIGHTED_KINDS:
                chan_of = _chan_of(nxt, ids, channels)
                if chan_of is not None:
                    pairs.append(Pair(first, nxt, chan_of, absorb and _unpadded(nxt)))
                break
            ids = _follow(nxt, ids, channels)
            if ids is None:
                break
            absorb = absorb and _unpadded(nxt)
            var = nxt.output
    return pairs


def _homogeneous(clamp) -> bool:
    return clamp is None or clamp[0] == 0.0


def _follow(layer: Layer, ids: np.ndarray, channels: int) -> np.ndarray | None:
    """Channel ids after one crossed layer, or None when CLE cannot cross it."""
    if layer.kind in MOVING_KINDS:
        moved = np.transpose(ids, layer.attrs["axes"]) if layer.kind == "transpose" else ids
        return moved.reshape(layer.out_shape)
    if layer.kind == "clamp" and layer.clamp == (0.0, math.inf):
        return ids
    if layer.kind not in SPATIAL_KINDS or (layer.kind == "pad" and layer.attrs["pad_value"] != 0.0):
        return None
    axis = -1 if layer.attrs.get("channels_last", True) else 1
    if not _identity(ids, axis, channels):
        return None
    shape = [1] * len(layer.out_shape)
    shape[axis] = channels
    return np.broadcast_to(np.arange(channels).reshape(shape), layer.out_shape)


def _identity(ids: np.ndarray, axis: int, channels: int) -> bool:
    shape = [1] * ids.ndim
    shape[axis] = channels
    return ids.shape[axis] == channels and bool(np.all(ids == np.arange(channels).reshape(shape)))


def _chan_of(second: Layer, ids: np.ndarray, channels: int) -> np.ndarray | None:
    """Which first-layer channel each weight of ``second`` reads, from the channel ids of its input."""
    out = second.weight.shape[0]
    if second.kind == "dense":
        return np.broadcast_to(ids.reshape(-1), (out, ids.size)).copy()
    if not _identity(ids, -1, channels):
        return None
    groups = second.attrs["groups"]
    per_group_in, per_group_out = channels // groups, out // groups
    kernel = math.prod(second.weight.shape[1:-1])
    local = np.tile(np.arange(per_group_in), kernel)  # weight layout (O, *kernel, C/groups), flattened
    group = np.arange(out) // per_group_out
    return group[:, None] * per_group_in + local[None, :]


def _unpadded(layer: Layer) -> bool:
    """No padding (which adds zeros that a shifted input would not match)."""
    if layer.kind in ("dense", "transpose", "reshape", "clamp", "global_avg_pool"):
        return True
    if layer.kind == "pad":
        return False
    return not any(layer.attrs.get("padding", [0]))
