"""The quantization plan: every layer's integer parameters, derived from observed ranges and the config.

This is the hand-off between calibration (float statistics) and the graph rewrites: ``RealizeIntegerOps`` emits
integer ops from it and ``InsertFakeQuant`` builds the fake-quant float model from the very same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import schedules as S
from ..config import LayerQuantConfig, QuantConfig
from ..errors import ConfigError
from ..relay_passes.layers import SAME_QPARAMS_KINDS, WEIGHTED_KINDS, Layer
from ..schedules.codebook import pack_rows
from .codebooks import activation_codebook, lut_thresholds, weight_codebooks
from .fixed_point import lut_int8, pow2_shift, quantize_multiplier, tflite_add_params, tflm_softmax_tables
from .observers import ActivationObserver
from .qparams import QParams, activation_qparams, quantize_bias, quantize_weights, weight_qmax

# Softmax and sigmoid outputs lie in [0, 1]: the fixed TFLite output grid.
PROBABILITY_QPARAMS = QParams(scale=1.0 / 256.0, zero_point=-128, bits=8)


@dataclass(frozen=True)
class WeightCodebook:
    """Weights as ``bits``-bit indices into a per-output-channel int8 table: ``weight = table[o, indices[o, ...]]``.

    The kernels read the indices packed (``schedules.codebook.pack_rows``) and decode them through the table.
    """

    indices: np.ndarray  # uint8, same shape as the weight
    table: np.ndarray  # int8 (O, 2^bits)
    bits: int

    @property
    def packed(self) -> np.ndarray:
        return pack_rows(self.indices, self.bits)

    @property
    def nbytes(self) -> int:
        return int(self.packed.nbytes + self.table.nbytes)


@dataclass(frozen=True)
class ActCodebook:
    """An activation tensor quantized to ``bits``-bit codes: code ``i`` stands for the int8 value ``table[i]`` on the
    tensor's 8-bit grid (its ``QParams``). ``packed``: stored as codes packed along the last axis
    (``schedules.codebook``); otherwise stored as the int8 levels themselves, which any int8 op reads as is."""

    table: np.ndarray  # int8 (2^bits,), ascending, padded with the last level
    bits: int
    packed: bool

    @property
    def levels(self) -> np.ndarray:
        """The distinct int8 levels, ascending."""
        return np.unique(self.table)

    def storage_bytes(self, shape: tuple[int, ...]) -> int:
        return math.prod(S.packed_shape(shape, self.bits)) if self.packed else math.prod(shape)


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
    weight: np.ndarray | None = None  # int8 codes, same layout as Layer.weight (decoded, with a codebook)
    codebook: WeightCodebook | None = None  # packed storage of ``weight`` below 8 bits or with a non-uniform scheme
    weight_scale: np.ndarray | None = None  # (O,)
    bias: np.ndarray | None = None  # int32 (O,)
    multiplier: np.ndarray | None = None  # int32 (O,), None with power-of-two scales
    shift: np.ndarray | None = None  # int32 (O,)
    params: dict[str, Any] = field(default_factory=dict)  # kind-specific immediates and tables
    in_codebooks: list[ActCodebook | None] = field(default_factory=list)  # one per input
    out_codebook: ActCodebook | None = None
    thresholds: np.ndarray | None = None  # LUT-requantize: int32 (O, 2^b - 1), or (2^b - 1,) after multiply-shift

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
    codebooks: dict = field(default_factory=dict)  # relax.Var -> ActCodebook, for tensors quantized to codes
    input_codebook: ActCodebook | None = None  # never packed: ``quantize_input`` writes the int8 levels

    @property
    def output(self) -> QParams:
        return self.layers[-1].output


def make_plan(
    layers: list[Layer], input_var, observers: dict, config: QuantConfig, fixed_weights: dict | None = None,
    rounded_weights: dict | None = None,
) -> QuantPlan:  # fmt: skip
    """Derive all integer parameters. ``observers`` maps the input var and each layer output var to its observer,
    or to the ``QParams`` a pre-quantized model fixes; ``fixed_weights`` maps a layer name to its given
    ``(int8 weight, scales, int32 bias or None)``; ``rounded_weights`` maps a layer name to the ``(int8 weight,
    scales)`` a PTQ rounding algorithm chose on the uniform grid (stored and biased as round-to-nearest ones)."""
    pow2 = config.pow2_scales
    # the model input is quantized as its first conv/dense layer says (a layout transpose may come before it),
    # with config.input_bits when given
    first = config.for_layer(next((lay.name for lay in layers if lay.kind in WEIGHTED_KINDS), ""))
    coded_input = first.act_scheme != "uniform"
    input_bits = 8 if coded_input else (config.input_bits or first.act_bits)
    input_qp = _observed(observers[input_var], input_bits, first.act_observer, first.percentile, pow2,
                         first.act_symmetric)  # fmt: skip
    tensors = {input_var: input_qp}
    codebooks = {}
    if coded_input:
        codebooks[input_var] = _act_codebook(observers[input_var], first, input_qp, (-math.inf, math.inf), False)
    plans = []
    producers = {layer.output: layer for layer in layers}
    for k, layer in enumerate(layers):
        cfg = config.for_layer(layer.name)
        _check_act_scheme(layer, config, producers)
        in_qps = [tensors[v] for v in layer.inputs]
        in_cbs = [codebooks.get(v) for v in layer.inputs]
        coded = cfg.act_scheme != "uniform" and layer.kind in WEIGHTED_KINDS
        last = k == len(layers) - 1
        packed_uniform = (config.pack_activations and not coded and layer.kind in WEIGHTED_KINDS and not last
                          and cfg.act_bits <= 4 and S.packable(layer.out_shape[-1], cfg.act_bits))  # fmt: skip
        if isinstance(observers.get(layer.output), QParams):  # given by a pre-quantized model
            out_qp = observers[layer.output]
        elif layer.kind in SAME_QPARAMS_KINDS:
            out_qp = in_qps[0]
        elif layer.kind in ("softmax", "sigmoid"):
            out_qp = PROBABILITY_QPARAMS
        else:
            out_qp = _observed(observers[layer.output], 8 if coded else cfg.act_bits, cfg.act_observer,
                               cfg.percentile, pow2, cfg.act_symmetric)  # fmt: skip
        uniform_levels = None
        if packed_uniform:  # the b-bit grid on an int8 grid (b-bit code i -> int8 code i * 2^(8-b)), packed
            out_qp, uniform_levels = _uniform_on_int8(out_qp)
        clamp = layer.clamp or (-math.inf, math.inf)
        act_min, act_max = out_qp.clamp_codes(*clamp)
        plan = LayerPlan(layer.name, layer.kind, cfg, in_qps, out_qp, act_min, act_max, in_codebooks=in_cbs)
        if uniform_levels is not None:
            lo, hi = act_min, act_max
            levels = np.unique(np.clip(uniform_levels, lo, hi))
            table = np.pad(levels, (0, 2**cfg.act_bits - levels.size), mode="edge").astype(np.int8)
            plan.out_codebook = ActCodebook(table=table, bits=cfg.act_bits, packed=True)
        elif coded:
            packed = not last and S.packable(layer.out_shape[-1], cfg.act_bits)
            plan.out_codebook = _act_codebook(observers[layer.output], cfg, out_qp, clamp, packed)
        else:
            plan.out_codebook = _passed_codebook(layer, in_cbs[0] if in_cbs else None, out_qp, last)
        _fill_kind_params(plan, layer, cfg, pow2, (fixed_weights or {}).get(layer.name),
                          (rounded_weights or {}).get(layer.name))  # fmt: skip
        tensors[layer.output] = out_qp
        if plan.out_codebook is not None:
            codebooks[layer.output] = plan.out_codebook
        plans.append(plan)
    return QuantPlan(input=input_qp, tensors=tensors, layers=plans, codebooks=codebooks,
                     input_codebook=codebooks.get(input_var))  # fmt: skip


# Layers that can work on packed codes directly and keep them: the max of codes is the code of the max, and a
# transpose or reshape only moves codes.
CODE_PRESERVING_KINDS = frozenset({"max_pool2d", "max_pool1d", "transpose", "reshape"})


def _check_act_scheme(layer: Layer, config: QuantConfig, producers: dict) -> None:
    """An explicit per-layer activation codebook on a layer that cannot produce one is refused, naming why."""
    scheme = config.overrides.get(layer.name, {}).get("act_scheme", "uniform")
    if scheme != "uniform" and layer.kind not in WEIGHTED_KINDS:
        feeders = [f"{p.name} ({p.kind})" for v in layer.inputs if (p := producers.get(v)) is not None
                   and p.kind in WEIGHTED_KINDS]  # fmt: skip
        where = f"on {' or '.join(feeders)}" if feeders else "on the conv or dense layer that produces its input"
        raise ConfigError(
            f"layer {layer.name} ({layer.kind}) cannot produce an activation codebook (act_scheme={scheme!r}): "
            f"codes come from LUT-requantize, the epilogue of conv/dense layers. Set act_scheme {where} "
            "(max pool, reshape and transpose keep codes), or act_scheme='uniform' for this layer"
        )


def _act_codebook(observer: ActivationObserver, cfg: LayerQuantConfig, qp: QParams, clamp, packed: bool):
    """The codebook of an activation from its calibration values, levels kept inside the fused clamp."""
    table = activation_codebook(
        observer.values(), cfg.act_bits, cfg.act_scheme, qp, **_scheme_options(cfg.act_scheme, cfg)
    )
    lo, hi = qp.clamp_codes(*clamp)
    levels = np.unique(np.clip(table.astype(np.int32), lo, hi))
    table = np.pad(levels, (0, 2**cfg.act_bits - levels.size), mode="edge").astype(np.int8)
    return ActCodebook(table=table, bits=cfg.act_bits, packed=packed)


def _passed_codebook(layer: Layer, cb: ActCodebook | None, qp: QParams, last: bool) -> ActCodebook | None:
    """Whether a layer reading packed codes keeps them: only the code-preserving kinds, when the clamp they carry
    changes no level, the output packs, and it is not the model output (which is int8)."""
    if cb is None or not cb.packed or last or layer.kind not in CODE_PRESERVING_KINDS:
        return None
    if not S.packable(layer.out_shape[-1], cb.bits):
        return None
    lo, hi = qp.clamp_codes(*(layer.clamp or (-math.inf, math.inf)))
    if cb.levels.min() < lo or cb.levels.max() > hi:
        return None
    return cb


def _observed(observer: ActivationObserver | QParams, bits: int, method: str, percentile: float, pow2: bool,
              symmetric: bool = False) -> QParams:  # fmt: skip
    if isinstance(observer, QParams):  # a pre-quantized model's own qparams: kept exactly
        return observer
    low, high = observer.range(method, bits, percentile)
    return activation_qparams(low, high, bits, pow2, symmetric)


def _uniform_on_int8(qp: QParams) -> tuple[QParams, np.ndarray]:
    """A ``b``-bit uniform grid as int8 qparams and the int8 codes of its ``2^b`` levels: real values are equal
    (``(i - z) s = (i 2^(8-b) - z 2^(8-b)) s / 2^(8-b)``), so a packed-code tensor of these levels is exactly the
    uniform activation (``QuantConfig.pack_activations``)."""
    factor = 2 ** (8 - qp.bits)
    levels = np.arange(qp.qmin, qp.qmax + 1, dtype=np.int32) * factor
    return QParams(scale=qp.scale / factor, zero_point=qp.zero_point * factor, bits=8), levels


def _requant(real: np.ndarray, pow2: bool) -> tuple[np.ndarray | None, np.ndarray]:
    real = np.asarray(real, np.float64)
    if pow2:
        return None, np.asarray(pow2_shift(real), np.int32).reshape(real.shape)
    mult, shift = quantize_multiplier(real)
    return np.asarray(mult, np.int32).reshape(real.shape), np.asarray(shift, np.int32).reshape(real.shape)


def _fill_kind_params(plan: LayerPlan, layer: Layer, cfg: LayerQuantConfig, pow2: bool, fixed=None,
                      rounded=None) -> None:  # fmt: skip
    in_qp, out_qp = plan.inputs[0], plan.output
    if layer.kind in WEIGHTED_KINDS:
        if fixed is not None:
            plan.weight, plan.weight_scale, plan.bias = fixed
        else:
            _quantize_layer_weights(plan, layer, cfg, pow2, rounded)
            if layer.bias is not None:
                plan.bias = quantize_bias(layer.bias, in_qp.scale, plan.weight_scale)
        if plan.out_codebook is None:
            plan.multiplier, plan.shift = _requant(in_qp.scale * plan.weight_scale / out_qp.scale, pow2)
        else:
            _lut_requantize_params(plan, layer, pow2)
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
    elif layer.kind == "requantize":  # a clamp onto another grid (pre-quantized RELU): TFLM's ReluQuantized
        mult, shift = _requant(np.array([in_qp.scale / out_qp.scale]), pow2)
        plan.params = {"mult": None if mult is None else int(mult[0]), "shift": int(shift[0])}
    elif layer.kind == "pad":
        plan.params = {"pad_code": int(in_qp.quantize(np.array([layer.attrs["pad_value"]]))[0])}
    elif layer.kind == "softmax":  # TFLite Micro's int8 softmax, so tvmq and TFLM agree byte for byte
        if out_qp != PROBABILITY_QPARAMS:
            raise ConfigError(f"layer {layer.name} (softmax): int8 softmax writes scale 1/256, zero point -128; "
                              f"the model gives its output {out_qp}")  # fmt: skip
        exp, sums = tflm_softmax_tables(in_qp.scale)
        plan.params = {"exp": exp, "sums": sums}
    elif layer.kind == "sigmoid":
        table = lut_int8(lambda x: 1.0 / (1.0 + np.exp(-x)), in_qp.scale, in_qp.zero_point,
                         out_qp.scale, out_qp.zero_point)  # fmt: skip
        plan.params = {"table": table}


# LUT-requantize: up to this many bits, exact per-channel thresholds on the raw accumulator (no multiply, and
# 2^b - 1 words per channel cost no more than a multiplier and shift); above, one shared row of thresholds on a
# grid 2^LUT_FINE_BITS times finer than the output's, reached by the usual per-channel multiply-shift.
EXACT_LUT_MAX_BITS = 2
LUT_FINE_BITS = 8


def _lut_requantize_params(plan: LayerPlan, layer: Layer, pow2: bool) -> None:
    """Thresholds of the nearest-level search (and the multiply-shift onto the fine grid in the shared form)."""
    cb, in_qp, out_qp = plan.out_codebook, plan.inputs[0], plan.output
    levels = (cb.levels.astype(np.float64) - out_qp.zero_point) * out_qp.scale
    clamp = layer.clamp or (-math.inf, math.inf)
    acc_scale = in_qp.scale * plan.weight_scale
    if cb.bits <= EXACT_LUT_MAX_BITS:
        plan.thresholds = lut_thresholds(levels, cb.bits, acc_scale, plan.bias, clamp)
        return
    fine = out_qp.scale / 2**LUT_FINE_BITS
    plan.multiplier, plan.shift = _requant(acc_scale / fine, pow2)
    plan.thresholds = lut_thresholds(levels, cb.bits, np.array([fine]), None, clamp)[0]


def _quantize_layer_weights(plan: LayerPlan, layer: Layer, cfg: LayerQuantConfig, pow2: bool, rounded=None) -> None:
    """int8 weights and scales, and at 1..4 bits (any scheme) their packed index storage: above 4 bits an index
    takes a whole byte, so the decoded int8 weight is stored instead (same size, no table, no decode).
    ``rounded``: ``(codes, scales)`` chosen by a PTQ rounding algorithm instead of round-to-nearest."""
    bits, scheme = cfg.weight_bits, cfg.weight_scheme
    if rounded is not None and scheme != "uniform":
        raise ConfigError(f"layer {layer.name}: PTQ rounding chooses codes on the uniform grid; it cannot be used "
                          f"with weight_scheme={scheme!r}")  # fmt: skip
    if scheme == "uniform":
        plan.weight, plan.weight_scale = rounded if rounded is not None else quantize_weights(
            layer.weight, bits, cfg.per_channel, cfg.weight_observer, cfg.percentile, pow2
        )  # fmt: skip
        if S.slot_bits(bits) < 8:
            plan.codebook = _uniform_codebook(plan.weight, bits)
        return
    if pow2:
        raise ConfigError(
            f"layer {layer.name}: weight_scheme={scheme!r} has its own per-channel scales; pow2_scales=True only "
            "applies to weight_scheme='uniform' (pow2 levels: weight_scheme='pow2')"
        )
    mode = "normalized" if cfg.codebook_mode == "normalized" else cfg.per_channel
    indices, table, plan.weight_scale = weight_codebooks(layer.weight, bits, scheme, per_channel=mode,
                                                         **_scheme_options(scheme, cfg))  # fmt: skip
    flat = indices.reshape(indices.shape[0], -1).astype(np.int64)
    plan.weight = np.take_along_axis(table, flat, axis=1).reshape(indices.shape)
    # 5..8-bit indices fill a byte each: storing the decoded int8 weight itself is as small and needs no table
    plan.codebook = WeightCodebook(indices, table, bits) if S.slot_bits(bits) < 8 else None


def _scheme_options(scheme: str, cfg: LayerQuantConfig) -> dict:
    """Builder options the config sets for ``scheme`` (only quantile has one today)."""
    return {"center": cfg.quantile_center} if scheme == "quantile" else {}


def _uniform_codebook(codes: np.ndarray, bits: int) -> WeightCodebook:
    """Uniform b-bit codes as indices into the grid itself, so they are stored packed like any codebook."""
    grid = np.array([-1, 1]) if bits == 1 else np.arange(-weight_qmax(bits), weight_qmax(bits) + 1)
    indices = np.searchsorted(grid, codes).astype(np.uint8)
    table = np.pad(grid, (0, 2**bits - grid.size), mode="edge").astype(np.int8)
    return WeightCodebook(indices, np.repeat(table[None], codes.shape[0], axis=0), bits)
