"""`QuantConfig`: what to quantize how, with global defaults and per-layer overrides.

Later stages plug into the same dataclass: non-linear schemes (``weight_scheme``/``act_scheme``), lower bit-widths
and the PTQ pipeline (``ptq``). Every field is validated in one place so bad values fail before calibration starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

OBSERVERS = ("minmax", "mse", "percentile")
# Non-linear weight schemes: codebooks of 2^b levels placed where the weights are (tvmq/quant/codebooks.py).
WEIGHT_SCHEMES = ("uniform", "quantile", "kmeans", "pow2", "apot")
# Activation codebooks: one per tensor from calibration values, produced by LUT-requantize in conv/dense layers.
ACT_SCHEMES = WEIGHT_SCHEMES
CODEBOOK_MODES = ("per_channel", "normalized")
QUANTILE_CENTERS = ("mean", "median")  # which value of its bin a quantile level is

# Fields a per-layer override may change (everything that describes how one layer is quantized).
LAYER_FIELDS = (
    "weight_bits",
    "act_bits",
    "weight_observer",
    "act_observer",
    "per_channel",
    "percentile",
    "weight_scheme",
    "act_scheme",
    "codebook_mode",
    "quantile_center",
    "act_symmetric",
)


@dataclass(frozen=True)
class LayerQuantConfig:
    """The effective settings of one layer after overrides are applied."""

    weight_bits: int
    act_bits: int
    weight_observer: str
    act_observer: str
    per_channel: bool
    percentile: float
    weight_scheme: str
    act_scheme: str
    codebook_mode: str
    quantile_center: str
    act_symmetric: bool = False


@dataclass
class QuantConfig:
    """Quantization settings.

    Defaults follow the int8 deployment practice of TFLite Micro and CMSIS-NN: per-channel symmetric int8
    weights, per-tensor asymmetric int8 activations, int32 bias, MinMax ranges.

    ``overrides`` maps a layer name (as listed by ``QuantizedModel.summary()``, e.g. ``"conv2d_0"``) to a dict
    of the fields in ``LAYER_FIELDS``. ``pow2_scales`` restricts every scale to a power of two so that
    requantization is a shift.

    ``weight_scheme`` other than ``"uniform"`` stores each weighted layer's weights as packed ``weight_bits``-bit
    indices into an int8 codebook: ``"quantile"`` (equal-population bins), ``"kmeans"`` (MSE-optimal, Lloyd-Max),
    ``"pow2"``/``"apot"`` (power-of-two / additive powers-of-two levels). ``codebook_mode`` is ``"per_channel"``
    (one codebook per output channel) or ``"normalized"`` (one per layer on channel-normalised weights, each
    channel with its own scale). ``quantile_center`` makes each quantile level its bin's ``"mean"`` or
    ``"median"``. Uniform weights below 8 bits are packed the same way.

    ``act_scheme`` other than ``"uniform"`` gives the output of each conv/dense layer (and the model input, by the
    first layer's setting) a codebook of 2^``act_bits`` levels fitted to its calibration values: the layer ends in
    LUT-requantize and the tensor is stored as packed codes (``act_bits`` <= 4) that the next layer decodes.
    Other ops keep uniform outputs; an explicit per-layer act_scheme on them is refused.

    ``act_symmetric`` makes activations symmetric (zero point 0) instead of asymmetric. ``pack_activations``
    stores uniform activations of at most 4 bits packed in the arena like codebook codes: a conv/dense output
    becomes a codebook of its own uniform levels (LUT-requantize to the nearest level, packed codes the next layer
    decodes), so the arena shrinks with the bits as it does for codebook schemes.

    ``input_bits`` quantizes the model input with its own width (uniform input; None: the first conv/dense layer's
    ``act_bits``): sensor data often arrive with 8 or more meaningful bits while the layers run at fewer.

    ``ptq`` lists post-training quantization algorithms run in order before the integer weights are fixed
    (``tvmq.ptq``: e.g. ``["cle", "mse_init", "adaround", "bias_correction"]``); ``ptq_options`` sets their
    options (``{"adaround": {"iters": 2000}}``) and ``ptq_seed`` their random choices.
    """

    weight_bits: int = 8
    act_bits: int = 8
    weight_observer: str = "minmax"
    act_observer: str = "minmax"
    per_channel: bool = True
    percentile: float = 99.99
    weight_scheme: str = "uniform"
    act_scheme: str = "uniform"
    codebook_mode: str = "per_channel"
    quantile_center: str = "mean"
    act_symmetric: bool = False
    pow2_scales: bool = False
    pack_activations: bool = False
    input_bits: int | None = None
    max_calibration_samples: int = 1024
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    ptq: list[str] = field(default_factory=list)
    ptq_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    ptq_seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        _check_layer_fields({f: getattr(self, f) for f in LAYER_FIELDS}, where="QuantConfig")
        for flag in ("pow2_scales", "pack_activations"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"QuantConfig.{flag} must be True or False, got {getattr(self, flag)!r}")
        b = self.input_bits
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8):
            raise ConfigError(f"QuantConfig.input_bits must be None (the first layer's act_bits) or 1..8, got {b!r}")
        if not isinstance(self.max_calibration_samples, int) or self.max_calibration_samples < 1:
            raise ConfigError(
                f"QuantConfig.max_calibration_samples must be a positive int, got {self.max_calibration_samples!r}"
            )
        if not isinstance(self.overrides, dict):
            raise ConfigError("QuantConfig.overrides must be a dict {layer_name: {field: value}}")
        for layer, fields in self.overrides.items():
            if not isinstance(fields, dict):
                raise ConfigError(f"QuantConfig.overrides['{layer}'] must be a dict of fields, got {fields!r}")
            unknown = sorted(set(fields) - set(LAYER_FIELDS))
            if unknown:
                raise ConfigError(
                    f"QuantConfig.overrides['{layer}'] has unknown field(s) {unknown}; "
                    f"per-layer fields are {list(LAYER_FIELDS)}"
                )
            _check_layer_fields(fields, where=f"QuantConfig.overrides['{layer}']")
        if isinstance(self.ptq_seed, bool) or not isinstance(self.ptq_seed, int) or self.ptq_seed < 0:
            raise ConfigError(f"QuantConfig.ptq_seed must be a non-negative int, got {self.ptq_seed!r}")
        if self.ptq or self.ptq_options:
            from .ptq import check_pipeline  # the algorithms register there; imported only when a pipeline is asked

            check_pipeline(self.ptq, self.ptq_options)

    def for_layer(self, name: str) -> LayerQuantConfig:
        """Settings of layer ``name``: the global defaults with that layer's overrides applied."""
        values = {f: getattr(self, f) for f in LAYER_FIELDS}
        values.update(self.overrides.get(name, {}))
        return LayerQuantConfig(**values)

    def check_layer_names(self, known: list[str]) -> None:
        """Refuse overrides addressed to layers the model does not have (a typo would be silently ignored)."""
        unknown = sorted(set(self.overrides) - set(known))
        if unknown:
            raise ConfigError(
                f"QuantConfig.overrides names layer(s) {unknown} that the model does not have; "
                f"its layers are: {', '.join(known)}"
            )

    def replace(self, **changes: Any) -> QuantConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


def _check_layer_fields(fields: dict[str, Any], where: str) -> None:
    for name in ("weight_bits", "act_bits"):
        if name in fields:
            bits = fields[name]
            if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
                raise ConfigError(f"{where}.{name} must be an integer in 1..8, got {bits!r}")
    for name in ("weight_observer", "act_observer"):
        if name in fields and fields[name] not in OBSERVERS:
            raise ConfigError(f"{where}.{name} must be one of {list(OBSERVERS)}, got {fields[name]!r}")
    for name, allowed in (("weight_scheme", WEIGHT_SCHEMES), ("act_scheme", ACT_SCHEMES),
                          ("codebook_mode", CODEBOOK_MODES), ("quantile_center", QUANTILE_CENTERS)):  # fmt: skip
        if name in fields and fields[name] not in allowed:
            raise ConfigError(f"{where}.{name} must be one of {list(allowed)}, got {fields[name]!r}")
    for flag in ("per_channel", "act_symmetric"):
        if flag in fields and not isinstance(fields[flag], bool):
            raise ConfigError(f"{where}.{flag} must be True or False, got {fields[flag]!r}")
    if "percentile" in fields:
        p = fields["percentile"]
        if isinstance(p, bool) or not isinstance(p, int | float) or not 50.0 < float(p) <= 100.0:
            raise ConfigError(f"{where}.percentile must be a number in (50, 100], got {p!r}")
