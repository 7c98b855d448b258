"""What flows through a PTQ pipeline: the float model, its layers, the config and the integer weights chosen so far.

Every algorithm has the signature ``step(state: PTQState, options: dict) -> PTQState`` and returns a new state
(``state.replace(...)``), so the same float model can go through several pipelines. How each stage changes the
state:

* pre-processing (CLE) rewrites ``float_mod`` (an equivalent float model) and so ``layers``;
* initialisation changes ``config`` (observers);
* optimisation fills ``rounded``: integer weights and scales per layer, handed to ``make_plan``;
* post-processing changes ``layers[i].bias``, the float bias ``make_plan`` quantizes (``float_mod`` keeps the
  float model's own, so it stays the accuracy reference and calibration sees the same activations).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm

from ..config import QuantConfig
from ..relay_passes.layers import WEIGHTED_KINDS, Layer


@dataclass(frozen=True)
class PTQState:
    """Input and output of every PTQ step."""

    float_mod: tvm.IRModule
    layers: list[Layer]
    config: QuantConfig
    samples: np.ndarray  # calibration inputs (N, *input_shape[1:]), float32
    rounded: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (int8 codes, scales)
    act_qparams: dict = field(default_factory=dict)  # layer name -> QParams of its output a step learned (LSQ)
    report: dict[str, dict[str, Any]] = field(default_factory=dict)  # step name -> what it did, per layer
    progress: bool = False
    cache: dict[str, Any] = field(default_factory=dict)  # float-model statistics, compiled capture modules

    def replace(self, **changes: Any) -> PTQState:
        """A new state; a new float model or config drops the cached data that depended on it."""
        cache = dict(self.cache)
        if "float_mod" in changes:
            cache.clear()
        elif ("config" in changes and _quantization(changes["config"]) != _quantization(self.config)) or (
            "act_qparams" in changes and changes["act_qparams"] != self.act_qparams
        ):
            cache.pop("capture", None)  # compiled with the activation qparams of the old config
        return dataclasses.replace(self, cache=cache, **changes)

    @property
    def input_var(self):
        return self.float_mod["main"].params[0]

    @property
    def weighted(self) -> list[Layer]:
        """The conv/dense layers, in execution order."""
        return [layer for layer in self.layers if layer.kind in WEIGHTED_KINDS]

    def observers(self, observed: dict) -> dict:
        """The activation observers ``make_plan`` takes: the float model's, with the qparams steps learned."""
        if not self.act_qparams:
            return observed
        return {**observed, **{layer.output: self.act_qparams[layer.name] for layer in self.layers
                               if layer.name in self.act_qparams}}  # fmt: skip

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)

    def rng(self, salt: str) -> np.random.Generator:
        """A generator fixed by ``config.ptq_seed`` and ``salt`` (e.g. the step and layer name)."""
        return np.random.default_rng([self.config.ptq_seed, *salt.encode()])


def _quantization(config: QuantConfig) -> QuantConfig:
    """The config without its PTQ fields: what the quantized model depends on."""
    return dataclasses.replace(config, ptq=[], ptq_options={}, ptq_seed=0)
