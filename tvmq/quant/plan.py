"""The quantization plan: every layer's integer parameters, derived from observed ranges and the config.

This is the hand-off between calibration (float statistics) and the graph rewrites: ``RealizeIntegerOps`` emits
integer ops from it and ``InsertFakeQuant`` builds the fake-quant float model from the very same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import LayerQuantConfig, QuantConfig
from ..relay_passes.layers import SAME_QPARAMS_KINDS, WEIGHTED_KINDS, Layer
from .fixed_point import lut_int8, pow2_shift, quantize_multiplier, softmax_exp_lut, tflite_add_params
from .observers import ActivationObserver
from .qparams import QParams, activation_qparams, quantize_bias, quantize_weights

# Softmax and sigmoid outputs lie in [0, 1]: the fixed TFLite output grid.
PROBABILITY_QPARAMS = QParams(scale=1.0 / 256.0, zero_point=-128, bits=8)


@dataclass
class LayerPlan:
    """Integer parameters of one layer."""

    name: str
    kind: str
    config: LayerQuantConfig
    inputs: list[QParams]
    output: QParams
    act_min: int
    act_max: int
    weight: np.ndarray | None = None  # int8 codes, same layout as Layer.weight
    weight_scale: np.ndarray | None = None  # (O,)
    bias: np.ndarray | None = None  # int32 (O,)
    multiplier: np.ndarray | None = None  # int32 (O,), None with power-of-two scales
    shift: np.ndarray | None = None  # int32 (O,)
    params: dict[str, Any] = field(default_factory=dict)  # kind-specific immediates and tables

    def dequantized_weight(self) -> np.ndarray:
        shape = (-1,) + (1,) * (self.weight.ndim - 1)
        return (self.weight.astype(np.float64) * self.weight_scale.reshape(shape)).astype(np.float32)

    def dequantized_bias(self) -> np.ndarray:
        return (self.bias.astype(np.float64) * self.inputs[0].scale * self.weight_scale).astype(np.float32)


@dataclass
class QuantPlan:
    """Qparams of every tensor (by Relax var) and the plan of every layer, in execution order."""

    input: QParams
    tensors: dict  # relax.Var -> QParams
    layers: list[LayerPlan]

    @property
    def output(self) -> QParams:
        return self.layers[-1].output


def make_plan(
    layers: list[Layer], input_var, observers: dict, config: QuantConfig
) -> QuantPlan:  # fmt: skip
    """Derive all integer parameters. ``observers`` maps the input var and each layer output var to its observer."""
    pow2 = config.pow2_scales
    first_bits = config.for_layer(layers[0].name).act_bits if layers else config.act_bits
    input_qp = _observed(observers[input_var], first_bits, config.act_observer, config.percentile, pow2)
    tensors = {input_var: input_qp}
    plans = []
    for layer in layers:
        cfg = config.for_layer(layer.name)
        in_qps = [tensors[v] for v in layer.inputs]
        if layer.kind in SAME_QPARAMS_KINDS:
            out_qp = in_qps[0]
        elif layer.kind in ("softmax", "sigmoid"):
            out_qp = PROBABILITY_QPARAMS
        else:
            out_qp = _observed(observers[layer.output], cfg.act_bits, cfg.act_observer, cfg.percentile, pow2)
        act_min, act_max = out_qp.clamp_codes(*(layer.clamp or (-math.inf, math.inf)))
        plan = LayerPlan(layer.name, layer.kind, cfg, in_qps, out_qp, act_min, act_max)
        _fill_kind_params(plan, layer, cfg, pow2)
        tensors[layer.output] = out_qp
        plans.append(plan)
    return QuantPlan(input=input_qp, tensors=tensors, layers=plans)


def _observed(observer: ActivationObserver, bits: int, method: str, percentile: float, pow2: bool) -> QParams:
    low, high = observer.range(method, bits, percentile)
    return activation_qparams(low, high, bits, pow2)


def _requant(real: np.ndarray, pow2: bool) -> tuple[np.ndarray | None, np.ndarray]:
    real = np.asarray(real, np.float64)
    if pow2:
        return None, np.asarray(pow2_shift(real), np.int32).reshape(real.shape)
    mult, shift = quantize_multiplier(real)
    return np.asarray(mult, np.int32).reshape(real.shape), np.asarray(shift, np.int32).reshape(real.shape)


def _fill_kind_params(plan: LayerPlan, layer: Layer, cfg: LayerQuantConfig, pow2: bool) -> None:
    in_qp, out_qp = plan.inputs[0], plan.output
    if layer.kind in WEIGHTED_KINDS:
        plan.weight, plan.weight_scale = quantize_weights(
            layer.weight, cfg.weight_bits, cfg.per_channel, cfg.weight_observer, cfg.percentile, pow2
        )
        if layer.bias is not None:
            plan.bias = quantize_bias(layer.bias, in_qp.scale, plan.weight_scale)
        plan.multiplier, plan.shift = _requant(in_qp.scale * plan.weight_scale / out_qp.scale, pow2)
    elif layer.kind == "add":
        a, b = plan.inputs
        plan.params = tflite_add_params(a.scale, b.scale, out_qp.scale)
    elif layer.kind == "concat":
        rescale = []
        for qp in plan.inputs:
            if qp == out_qp:
                rescale.append(None)
            else:
                mult, shift = _requant(np.array([qp.scale / out_qp.scale]), pow2)
                rescale.append((None if mult is None else int(mult[0]), int(shift[0])))
        plan.params = {"rescale": rescale}
    elif layer.kind == "pad":
        plan.params = {"pad_code": int(in_qp.quantize(np.array([layer.attrs["pad_value"]]))[0])}
    elif layer.kind == "softmax":
        plan.params = {"lut": softmax_exp_lut(in_qp.scale)}
    elif layer.kind == "sigmoid":
        table = lut_int8(lambda x: 1.0 / (1.0 + np.exp(-x)), in_qp.scale, in_qp.zero_point,
                         out_qp.scale, out_qp.zero_point)  # fmt: skip
        plan.params = {"table": table}
