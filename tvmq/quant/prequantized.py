"""``tvmq.load_quantized``: a model quantized elsewhere -> ``QuantizedModel``, keeping its integers exactly.

No calibration and nothing re-derived: every activation's scale and zero point, every int8 weight and scale and
every int32 bias come from the file. Full-integer int8 TFLite models run TFLite Micro's reference arithmetic (the
TE computes in ``tvmq.schedules``), so ``run_int`` and the generated C give TFLM's bytes. QDQ and QOperator ONNX
models run the same fixed-point arithmetic; onnxruntime requantizes in float, so the two agree within one LSB.
"""

from __future__ import annotations

import math
import os

import numpy as np
import onnx

from ..config import QuantConfig
from ..errors import ModelLoadError, UnsupportedOpError
from ..relay_passes import RealizeIntegerOps, find_layers, normalize
from ..relay_passes.layers import SAME_QPARAMS_KINDS, WEIGHTED_KINDS, Layer
from .fixed_point import quantize_multiplier
from .model import QuantizedModel
from .plan import PROBABILITY_QPARAMS, QuantPlan, make_plan
from .prequantized_sources import FixedWeights, OnnxSource, Source, TFLiteSource
from .qparams import QParams, quantize_bias

#: TFLite files start with a 4-byte offset, then this identifier.
_TFLITE_IDENTIFIER = b"TFL3"


def load_quantized(model: str | os.PathLike[str] | bytes | onnx.ModelProto) -> QuantizedModel:
    """Import a pre-quantized model as a ``QuantizedModel``: a full-integer int8 ``.tflite`` (path or bytes) or a
    QDQ/QOperator ``.onnx`` (path, bytes or ``onnx.ModelProto``).

    Refused with a clear error: float models (use ``tvmq.quantize``), int16 or per-channel activations, ops whose
    arithmetic tvmq does not reproduce, damaged files and invalid quantization parameters.
    """
    return _build(_source(model))


def _source(model: str | os.PathLike[str] | bytes | onnx.ModelProto) -> Source:
    if isinstance(model, onnx.ModelProto):
        return OnnxSource.read(model)
    if isinstance(model, bytes | bytearray):
        is_tflite = bytes(model[4:8]) == _TFLITE_IDENTIFIER
        return TFLiteSource.read(bytes(model)) if is_tflite else OnnxSource.read(bytes(model))
    if isinstance(model, str | os.PathLike) and str(model).lower().endswith(".onnx"):
        return OnnxSource.read(model)
    return TFLiteSource.read(model)


def _build(source: Source) -> QuantizedModel:
    float_mod = normalize()(source.mod)
    func = float_mod["main"]
    layers = find_layers(func)
    if not layers:
        raise UnsupportedOpError(f"'{source.label}' has no operation to run")
    output_var = func.body.body
    qparams = {func.params[0]: source.input_qparams}  # what the file gives
    grid = dict(qparams)  # every tensor's qparams, those a data-movement layer passes on included
    fixed_weights: dict[str, FixedWeights] = {}
    input_grid_clamps: dict[str, tuple[float, float]] = {}
    for layer in layers:
        is_output = layer.output.same_as(output_var)
        qp = source.layer_qparams(layer, is_output)
        if qp is not None:
            qparams[layer.output] = qp
        elif layer.kind not in SAME_QPARAMS_KINDS:
            raise ModelLoadError(f"'{source.label}': layer {layer.name} ({layer.kind}) writes "
                                 f"{source.describe(layer, is_output)}, which the model does not quantize")  # fmt: skip
        grid[layer.output] = qp if qp is not None else grid[layer.inputs[0]]
        if layer.kind in WEIGHTED_KINDS:
            fixed_weights[layer.name] = _fixed_weights(source, layer, is_output, grid[layer.inputs[0]])
        if _grid_change(source, layer, is_output, grid) == "input_grid":
            input_grid_clamps[layer.name] = layer.clamp
        if layer.kind == "softmax" and grid[layer.output] != PROBABILITY_QPARAMS:
            raise UnsupportedOpError(f"'{source.label}': layer {layer.name} (softmax) writes "
                                     f"{source.describe(layer, is_output)} with {grid[layer.output]}; tvmq's int8 "
                                     f"softmax (TFLM's) writes {PROBABILITY_QPARAMS}")  # fmt: skip
    _name_requantize_layers(layers)
    plan = make_plan(layers, func.params[0], qparams, QuantConfig(), fixed_weights)
    for lp in plan.layers:
        if lp.name in input_grid_clamps:  # TFLM's RELU6: the input codes clamped, then relabelled (no rescale)
            lp.act_min, lp.act_max = lp.inputs[0].clamp_codes(*input_grid_clamps[lp.name])
    if source.float_requantization:
        _single_rounding_plan(layers, plan)
    int_mod = RealizeIntegerOps(layers, plan)(float_mod)
    return QuantizedModel(float_mod=float_mod, int_mod=int_mod, layers=layers, plan=plan, config=QuantConfig())


def _fixed_weights(source: Source, layer: Layer, is_output: bool, in_qp: QParams) -> FixedWeights:
    """The file's int8 weights (in the layer's layout), per-channel scales and int32 bias of a conv/dense layer."""
    file = source.layer_weights(layer, is_output)
    out = layer.weight.shape[0]
    scales = np.broadcast_to(file.scales.astype(np.float64).reshape(-1), (out,)).copy()
    # The float graph holds q * scale in the layer's own layout; dividing back recovers q exactly (|q| <= 128).
    real = layer.weight.astype(np.float64) / scales.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
    codes = np.rint(real)
    if np.max(np.abs(real - codes), initial=0.0) > 1e-3 or sorted(codes.reshape(-1)) != sorted(
        file.values.astype(np.float64).reshape(-1)
    ):
        raise ModelLoadError(f"'{source.label}': the weights of layer {layer.name} ({file.what}) do not map back "
                             "onto the file's int8 weights")  # fmt: skip
    bias = file.bias
    if bias is None and layer.bias is not None:  # a float bias next to int8 weights: put it on s_in * s_w
        bias = quantize_bias(layer.bias, in_qp.scale, scales)
    elif bias is not None and file.bias_scale is not None:
        expected = in_qp.scale * scales
        given = np.broadcast_to(file.bias_scale.reshape(-1), (out,))
        if not np.allclose(given, expected, rtol=1e-6, atol=0.0):  # another bias scale: onto s_in * s_w
            bias = quantize_bias(bias.astype(np.float64) * given, in_qp.scale, scales)
    return codes.astype(np.int8), scales, None if bias is None else bias.reshape(-1).astype(np.int32)


def _grid_change(source: Source, layer: Layer, is_output: bool, grid: dict) -> str | None:
    """How a layer that keeps the grid in tvmq runs when the file gives its output another scale/zero point:
    a MEAN requantizes (TFLM's arithmetic), a standalone clamp becomes a ``requantize`` layer or, as TFLM's RELU6,
    clamps on the input grid; a layer that moves codes is refused. None if the grid is kept."""
    if layer.kind not in SAME_QPARAMS_KINDS or grid[layer.output] == grid[layer.inputs[0]]:
        return None
    if layer.kind == "global_avg_pool":
        return "mean"
    if layer.kind == "clamp":
        if source.clamp_on_input_grid(layer, is_output):
            return "input_grid"
        layer.kind = "requantize"
        return "requantize"
    raise UnsupportedOpError(
        f"'{source.label}': layer {layer.name} ({layer.kind}) changes scale/zero point "
        f"({grid[layer.inputs[0]]} -> {grid[layer.output]}); tvmq runs this op on unchanged codes"
    )


def _single_rounding_plan(layers: list[Layer], plan: QuantPlan) -> None:
    """Multipliers for a model whose reference requantizes in float (onnxruntime): one rounding, not two.

    TFLite's ``(multiplier, shift)`` with a right shift rounds twice (SRDHM at 2^31, then the shift), which misses
    the exactly rounded value on about 2^-shift of the outputs; the differences then grow layer by layer. The
    same kernels with shift 0 and ``multiplier = round(real * 2^31)`` round once, exactly unless the multiplier's
    own precision (``real * 2^31`` is small for a tiny ``real``) is the worse of the two (``_single_rounding``).
    """
    for layer, lp in zip(layers, plan.layers, strict=True):
        if lp.multiplier is not None:  # conv / dense
            lp.multiplier, lp.shift = _single_rounding(lp.inputs[0].scale * lp.weight_scale / lp.output.scale)
        elif layer.kind == "requantize":
            mult, shift = _single_rounding(np.array([lp.inputs[0].scale / lp.output.scale]))
            lp.params = {"mult": int(mult[0]), "shift": int(shift[0])}
        elif layer.kind == "concat":
            rescale = []
            for qp, old in zip(lp.inputs, lp.params["rescale"], strict=True):
                mult, shift = _single_rounding(np.array([qp.scale / lp.output.scale]))
                rescale.append(None if old is None else (int(mult[0]), int(shift[0])))
            lp.params = {"rescale": rescale}
        elif layer.kind == "global_avg_pool" and lp.output != lp.inputs[0]:  # read by RealizeIntegerOps
            count = math.prod(layer.in_shapes[0]) // math.prod(layer.out_shape)
            mult, shift = _single_rounding(np.array([lp.inputs[0].scale / lp.output.scale / count]))
            lp.params = {"mean": (int(mult[0]), int(shift[0]))}


def _single_rounding(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per element, ``(round(real * 2^31), 0)`` (one rounding) where it is the more exact choice, else TFLite's
    ``QuantizeMultiplier``. Expected misses on outputs up to 128 LSB: about ``128 / multiplier`` for the first,
    ``2^(shift - 1)`` for a right shift (a left shift rounds once already)."""
    real = np.asarray(real, np.float64)
    mult, shift = quantize_multiplier(real)
    single = np.floor(real * 2.0**31 + 0.5)
    better = (shift < 0) & (single < 2**31) & (128.0 / np.maximum(single, 1.0) < 2.0 ** (shift - 1.0))
    return np.where(better, single, mult).astype(np.int32), np.where(better, 0, shift).astype(np.int32)


def _name_requantize_layers(layers: list[Layer]) -> None:
    """Layer names are ``<kind>_<index>``: clamps that became requantizations get their own counter."""
    for k, layer in enumerate(x for x in layers if x.kind == "requantize"):
        layer.name = f"requantize_{k}"
