"""Empirical bias correction (Nagel et al. 2019, section 4.2, with calibration data instead of BatchNorm statistics).

Quantized weights and quantized inputs shift the mean of each output channel: ``E[Wq x~] != E[W x]``. Layer by
layer in execution order, the shift measured on the calibration set (inputs from the model quantized so far, with
the corrections before it) is added to the float bias the integer bias is made from. The float model itself keeps
its biases (it stays the accuracy reference); a conv/dense layer without a bias gets a zero one first.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..relay_passes import find_layers
from .capture import float_pass, plan_of, quant_capture
from .graph import SetLayerParams
from .layerwise import im2col
from .registry import POSTPROCESS, register
from .state import PTQState


@register("bias_correction", POSTPROCESS)
def bias_correction(state: PTQState, options: dict) -> PTQState:
    """Per-channel mean output shift of the quantized model removed through the biases, layer by layer."""
    state = with_biases(state)
    state, stats = float_pass(state)
    state, capture = quant_capture(state)
    layers = list(state.layers)
    report = {}
    for index, layer in enumerate(layers):
        if layer.weight is None:
            continue
        start = time.perf_counter()
        current = state.replace(layers=layers)
        plan = plan_of(current, stats.observers)
        xq = capture.run(plan, state.samples, state.progress)[layer.name]
        lp = next(p for p in plan.layers if p.name == layer.name)
        shift = output_shift(layer, stats.values[layer.inputs[0]], xq, lp.dequantized_weight())
        layers[index] = dataclasses.replace(layer, bias=(layer.bias.astype(np.float64) + shift).astype(np.float32))
        report[layer.name] = {
            "mean_abs_shift": float(np.mean(np.abs(shift))),
            "max_abs_shift": float(np.max(np.abs(shift))),
            "seconds": round(time.perf_counter() - start, 3),
        }
    return state.replace(layers=layers, report={**state.report, "bias_correction": report})


def output_shift(layer, x: np.ndarray, xq: np.ndarray, quantized_weight: np.ndarray) -> np.ndarray:
    """``E[W x] - E[Wq x~]`` per output channel (pre-activation, bias aside), over every output position."""
    mean, mean_q = im2col(x, layer).mean(axis=1), im2col(xq, layer).mean(axis=1)  # (G, K)
    groups = mean.shape[0]
    w = layer.weight.reshape(groups, -1, mean.shape[1]).astype(np.float64)
    wq = quantized_weight.reshape(groups, -1, mean.shape[1]).astype(np.float64)
    return (np.einsum("gok,gk->go", w, mean) - np.einsum("gok,gk->go", wq, mean_q)).reshape(-1)


def with_biases(state: PTQState) -> PTQState:
    """Give every conv/dense layer without a bias a zero one (a new, equal float model)."""
    missing = {layer.name: (layer.weight, np.zeros(layer.weight.shape[0], np.float32)) for layer in state.weighted
               if layer.bias is None}  # fmt: skip
    if not missing:
        return state
    mod = SetLayerParams(state.layers, missing)(state.float_mod)
    return state.replace(float_mod=mod, layers=find_layers(mod["main"]))
