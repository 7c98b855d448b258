"""``tvmq.load_quantized``: a model quantized elsewhere -> ``QuantizedModel``, keeping its integers exactly.

No calibration and nothing re-derived: every activation's scale and zero point, every int8 weight and scale and
every int32 bias come from the file. The arithmetic between them is TFLite Micro's reference arithmetic (the
TE computes in ``tvmq.schedules``), so ``run_int`` and the generated C give TFLM's bytes.
"""

from __future__ import annotations

import os

import numpy as np

from ..config import QuantConfig
from ..errors import ModelLoadError, UnsupportedOpError
from ..frontends.tflite_int8 import QuantizedTFLite, read_int8_tflite, tensor_var_name
from ..relay_passes import RealizeIntegerOps, find_layers, normalize
from ..relay_passes.layers import SAME_QPARAMS_KINDS, WEIGHTED_KINDS, Layer
from .model import QuantizedModel
from .plan import make_plan
from .qparams import QParams


def load_quantized(model: str | os.PathLike[str] | bytes) -> QuantizedModel:
    """Import a full-integer int8 ``.tflite`` model (path or bytes) as a ``QuantizedModel``.

    Refused with a clear error: float models (use ``tvmq.quantize``), uint8 or int16 activations, ops whose
    TFLM arithmetic tvmq does not reproduce, damaged files and invalid quantization parameters.
    """
    if isinstance(model, str | os.PathLike) and str(model).lower().endswith(".onnx"):
        raise ModelLoadError(f"'{model}': pre-quantized ONNX (QDQ/QOperator) import is not available yet; "
                             "quantize the float ONNX model with tvmq.quantize")  # fmt: skip
    info = read_int8_tflite(model)
    float_mod = normalize()(info.mod)
    func = float_mod["main"]
    layers = find_layers(func)
    if not layers:
        raise UnsupportedOpError(f"'{info.label}' has no operation to run")
    output_var = func.body.body
    qparams = {func.params[0]: info.input_qparams}
    fixed_weights = {}
    for layer in layers:
        index = info.output_tensor if layer.output.same_as(output_var) else _tensor_index(info, layer)
        qparams[layer.output] = _tensor_qparams(info, layer, index)
        if layer.kind in WEIGHTED_KINDS:
            fixed_weights[layer.name] = _file_weights(info, layer, index)
    _check_same_qparams(info, layers, qparams)
    plan = make_plan(layers, func.params[0], qparams, QuantConfig(), fixed_weights)
    int_mod = RealizeIntegerOps(layers, plan)(float_mod)
    return QuantizedModel(float_mod=float_mod, int_mod=int_mod, layers=layers, plan=plan, config=QuantConfig())


def _tensor_index(info: QuantizedTFLite, layer: Layer) -> int:
    prefix = tensor_var_name(0)[:-1]
    name = layer.output.name
    if not name.startswith(prefix):
        raise ModelLoadError(f"'{info.label}': cannot tell which TFLite tensor layer {layer.name} ({layer.kind}) "
                             f"writes (its value is '{name}')")  # fmt: skip
    return int(name[len(prefix) :])


def _tensor_qparams(info: QuantizedTFLite, layer: Layer, index: int) -> QParams:
    qp = info.qparams.get(index)
    if qp is None:
        raise ModelLoadError(f"'{info.label}': tensor {index} written by layer {layer.name} has no int8 qparams")
    return qp


def _file_weights(info: QuantizedTFLite, layer: Layer, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The file's int8 weights (in the layer's layout), per-channel scales and int32 bias of a conv/dense layer."""
    kind, inputs = info.producer[index]
    values, scales = info.weights[inputs[1]]
    out = layer.weight.shape[0]
    scales = np.broadcast_to(scales.astype(np.float64), (out,)).copy()
    # The float graph holds q * scale in the layer's own layout; dividing back recovers q exactly (|q| <= 127).
    real = layer.weight.astype(np.float64) / scales.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
    codes = np.rint(real)
    if np.max(np.abs(real - codes), initial=0.0) > 1e-3 or sorted(codes.reshape(-1)) != sorted(
        values.astype(np.float64).reshape(-1)
    ):
        raise ModelLoadError(f"'{info.label}': the weights of layer {layer.name} ({kind}) do not map back onto the "
                             "file's int8 weights")  # fmt: skip
    bias = info.biases.get(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
    if bias is not None:
        bias = bias.reshape(-1).astype(np.int32)
    return codes.astype(np.int8), scales, bias


def _check_same_qparams(info: QuantizedTFLite, layers: list[Layer], qparams: dict) -> None:
    """Pools, pads and reshapes move int8 codes: TFLite gives their output the input's qparams; check it."""
    for layer in layers:
        moves_codes = layer.kind in SAME_QPARAMS_KINDS and layer.kind != "global_avg_pool"  # MEAN requantizes
        if moves_codes and qparams[layer.output] != qparams[layer.inputs[0]]:
            raise UnsupportedOpError(
                f"'{info.label}': layer {layer.name} ({layer.kind}) changes scale/zero point "
                f"({qparams[layer.inputs[0]]} -> {qparams[layer.output]}); tvmq runs this op on unchanged codes"
            )
