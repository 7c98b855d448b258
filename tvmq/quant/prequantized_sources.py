"""What ``load_quantized`` needs from a pre-quantized file, per format: qparams and integers by layer.

Both readers import the model as a float Relax module whose bindings are named after the file's tensors (TFLite:
``tfl_t<index>``, ONNX: ``onnx_<k>``); a ``Source`` maps a layer (by its output variable) back to the file's
quantization of that tensor and to the stored integers of the conv/dense that writes it.
"""

from __future__ import annotations

import os
import re
from typing import Protocol

import numpy as np
import onnx
import tvm

from ..errors import ModelLoadError, UnsupportedOpError
from ..frontends.onnx_qdq import OUTPUT_KEY, QuantizedOnnx, read_quantized_onnx
from ..frontends.tflite_int8 import QuantizedTFLite, read_int8_tflite, tensor_var_name
from ..relay_passes.layers import Layer
from .qparams import QParams

#: int8 weights in the layer's layout, per-output-channel scales (O,), int32 bias (O,) or None.
FixedWeights = tuple[np.ndarray, np.ndarray, np.ndarray | None]


class FileWeights(Protocol):
    """The stored integers of one conv/dense (``tvmq.frontends.onnx_qdq.FileWeights`` and the TFLite ones)."""

    values: np.ndarray
    scales: np.ndarray
    bias: np.ndarray | None
    bias_scale: np.ndarray | None
    what: str
    inner: tuple[tuple[str, QParams], ...]


class Source(Protocol):
    """A pre-quantized model: float module, boundary qparams, and per-layer lookups into the file."""

    label: str
    mod: tvm.IRModule
    input_qparams: QParams
    float_requantization: bool  # the reference rounds real values once (onnxruntime), not TFLM's fixed point

    def layer_qparams(self, layer: Layer, is_output: bool) -> QParams | None: ...
    def layer_weights(self, layer: Layer, is_output: bool) -> FileWeights: ...
    def describe(self, layer: Layer, is_output: bool) -> str: ...
    def clamp_on_input_grid(self, layer: Layer, is_output: bool) -> bool: ...


class _Weights:
    """FileWeights of a TFLite conv/dense (its bias is on s_in * s_w by the format's definition)."""

    def __init__(self, values: np.ndarray, scales: np.ndarray, bias: np.ndarray | None, what: str) -> None:
        self.values, self.scales, self.bias, self.bias_scale, self.what = values, scales, bias, None, what
        self.inner: tuple[tuple[str, QParams], ...] = ()


class TFLiteSource:
    """A full-integer int8 TFLite model (``tvmq.frontends.tflite_int8``), layers found by tensor index."""

    float_requantization = False

    def __init__(self, info: QuantizedTFLite) -> None:
        self.info, self.label, self.mod, self.input_qparams = info, info.label, info.mod, info.input_qparams

    @classmethod
    def read(cls, model: str | os.PathLike[str] | bytes) -> TFLiteSource:
        return cls(read_int8_tflite(model))

    def _index(self, layer: Layer, is_output: bool) -> int:
        if is_output:
            return self.info.output_tensor
        prefix = tensor_var_name(0)[:-1]
        name = layer.output.name
        index = re.match(r"\d+", name[len(prefix) :]) if name.startswith(prefix) else None
        if index is None:
            raise ModelLoadError(f"'{self.label}': cannot tell which TFLite tensor layer {layer.name} ({layer.kind}) "
                                 f"writes (its value is '{name}')")  # fmt: skip
        return int(index.group())

    def layer_qparams(self, layer: Layer, is_output: bool) -> QParams:
        index = self._index(layer, is_output)
        qp = self.info.qparams.get(index)
        if qp is None:
            raise ModelLoadError(f"'{self.label}': tensor {index} written by layer {layer.name} has no int8 qparams")
        return qp

    def layer_weights(self, layer: Layer, is_output: bool) -> FileWeights:
        kind, inputs = self.info.producer[self._index(layer, is_output)]
        values, scales = self.info.weights[inputs[1]]
        bias = self.info.biases.get(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
        return _Weights(values, scales, None if bias is None else bias.reshape(-1).astype(np.int32), kind)

    def describe(self, layer: Layer, is_output: bool) -> str:
        return f"tensor {self._index(layer, is_output)}"

    def clamp_on_input_grid(self, layer: Layer, is_output: bool) -> bool:
        """TFLM's RELU6 clamps the input codes to [zero, six] of the input grid and writes them as they are."""
        return self.info.producer[self._index(layer, is_output)][0] == "RELU6"


class OnnxSource:
    """A QDQ or QOperator ONNX model (``tvmq.frontends.onnx_qdq``), layers found by variable name."""

    float_requantization = True

    def __init__(self, info: QuantizedOnnx) -> None:
        self.info, self.label, self.mod, self.input_qparams = info, info.label, info.mod, info.input_qparams

    @classmethod
    def read(cls, model: str | os.PathLike[str] | bytes | onnx.ModelProto) -> OnnxSource:
        return cls(read_quantized_onnx(model))

    @staticmethod
    def _key(layer: Layer, is_output: bool) -> str:
        return OUTPUT_KEY if is_output else layer.output.name

    def layer_qparams(self, layer: Layer, is_output: bool) -> QParams | None:
        return self.info.output_qparams if is_output else self.info.qparams.get(layer.output.name)

    def layer_weights(self, layer: Layer, is_output: bool) -> FileWeights:
        weights = self.info.weights.get(self._key(layer, is_output))
        if weights is None:
            raise ModelLoadError(f"'{self.label}': cannot find the stored integer weights of layer {layer.name} "
                                 f"({layer.kind}), which writes {self.describe(layer, is_output)}")  # fmt: skip
        out_qp = self.layer_qparams(layer, is_output)
        for tensor, qp in weights.inner:
            if qp != out_qp:  # onnxruntime rounds there too: fused into one requantization, 2 LSB apart
                raise UnsupportedOpError(
                    f"'{self.label}': {weights.what} writes '{tensor}', which the model quantizes ({qp}) before "
                    f"its bias/activation is applied and quantized again ({out_qp}); tvmq fuses them into layer "
                    f"{layer.name} with one requantization. Quantize the model with the bias in the op (Conv/Gemm; "
                    "onnxruntime.quantization.quant_pre_process fuses MatMul + Add into Gemm)"
                )
        return weights

    def describe(self, layer: Layer, is_output: bool) -> str:
        return self.info.describe(self._key(layer, is_output))

    def clamp_on_input_grid(self, layer: Layer, is_output: bool) -> bool:
        return False  # onnxruntime clamps real values and quantizes onto the output grid: a requantization
