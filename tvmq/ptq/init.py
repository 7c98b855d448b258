"""Quantizer initialisation: how each weight and activation clipping range is chosen (``tvmq.quant.observers``).

``minmax_init`` (the full range), ``mse_init`` (the range minimising the quantization MSE of the tensor, searched
per output channel for weights and per tensor for activations), ``percentile_init`` (``QuantConfig.percentile``).
They set the global ``weight_observer`` and ``act_observer``; per-layer overrides that name an observer keep it.
"""

from __future__ import annotations

from .registry import INIT, register
from .state import PTQState


def _init(state: PTQState, observer: str) -> PTQState:
    return state.replace(config=state.config.replace(weight_observer=observer, act_observer=observer))


@register("minmax_init", INIT)
def minmax_init(state: PTQState, options: dict) -> PTQState:
    """MinMax ranges for weights and activations."""
    return _init(state, "minmax")


@register("mse_init", INIT)
def mse_init(state: PTQState, options: dict) -> PTQState:
    """MSE-optimal ranges for weights (per channel) and activations (per tensor)."""
    return _init(state, "mse")


@register("percentile_init", INIT)
def percentile_init(state: PTQState, options: dict) -> PTQState:
    """Percentile ranges (``QuantConfig.percentile``) for weights and activations."""
    return _init(state, "percentile")
