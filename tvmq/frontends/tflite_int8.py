"""Pre-quantized import of full-integer int8 TFLite models: the float graph plus the file's own integers.

A model from the TensorFlow Lite converter with a representative dataset already carries everything tvmq's
calibration would compute: per-tensor activation scales and zero points, per-channel int8 weights, int32 biases.
Nothing is re-derived. The graph is imported by TVM's TFLite frontend with every tensor seen as float (weights and
biases dequantized, activations as their real values, QUANTIZE/DEQUANTIZE at the boundary as identities), so
tvmq's graph passes and layer grouping work as for a float model; each op's output is bound to a variable named
after its TFLite tensor, which is how ``tvmq.quant.prequantized`` finds the file's qparams of every layer.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm

from ..errors import ModelLoadError, TvmqError
from ..quant.qparams import QParams
from .support import raise_if_unsupported
from .tflite import (
    _FLOAT32,
    _INT8,
    _INT32,
    _RUNTIME_DEQUANTIZE,
    _TYPE_NAMES,
    _UINT8,
    _converter_class,
    _found_ops,
    _is_constant,
    _op_name,
    _parse,
    _read_model,
    _tensor_name,
)

__all__ = ["INT8_TFLITE_OPS", "QuantizedTFLite", "read_int8_tflite", "tensor_var_name"]

#: Ops of full-integer models whose TFLite Micro reference arithmetic tvmq reproduces bit for bit.
INT8_TFLITE_OPS: frozenset[str] = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE",
     "PAD", "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "SQUEEZE", "EXPAND_DIMS", "MEAN", "SOFTMAX", "CONCATENATION"}
)  # fmt: skip
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def tensor_var_name(index: int) -> str:
    """Name of the Relax variable bound to TFLite tensor ``index`` (other values of the same tensor, e.g. a
    flattened view, add a suffix that starts with a non-digit)."""
    return f"tfl_t{index}"


@dataclass
class QuantizedTFLite:
    """A full-integer TFLite model as a float Relax module plus the file's quantization, by tensor index."""

    mod: tvm.IRModule
    label: str
    input_qparams: QParams
    output_qparams: QParams
    output_tensor: int = -1  # the int8 tensor holding the model output (before a final DEQUANTIZE)
    qparams: dict[int, QParams] = field(default_factory=dict)  # activation tensors
    producer: dict[int, tuple[str, list[int]]] = field(default_factory=dict)  # output tensor -> (op, inputs)
    weights: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # int8 values, scales
    biases: dict[int, np.ndarray] = field(default_factory=dict)  # int32 values


def read_int8_tflite(model: str | os.PathLike[str] | bytes) -> QuantizedTFLite:
    """Parse, validate and import a full-integer int8 TFLite model (see the module docstring)."""
    from tvm.relax.frontend.tflite import from_tflite as tvm_from_tflite

    buf, label = _read_model(model)
    tfl = _parse(buf, label)
    sg = tfl.Subgraphs(0)
    _require_full_integer(tfl, sg, label)
    raise_if_unsupported("int8 TFLite", _found_ops(tfl, sg), INT8_TFLITE_OPS | {_RUNTIME_DEQUANTIZE})
    info = _Reader(tfl, sg, label).read()
    dequantized = {i: _real(w, s, sg, i) for i, (w, s) in info.weights.items()}
    dequantized |= {i: _real_bias(b, sg, i, label) for i, b in info.biases.items()}
    converter = functools.partial(_float_converter_class(), dequantized=dequantized)
    input_name = _tensor_name(sg, int(sg.InputsAsNumpy()[0]))
    try:
        mod = tvm_from_tflite(tfl, dtype_dict={input_name: "float32"}, op_converter=converter)
        mod = tvm.relax.transform.FoldConstant()(mod)
    except TvmqError:
        raise
    except Exception as err:
        raise ModelLoadError(f"TVM's TFLite frontend could not import '{label}': {type(err).__name__}: {err}") from err
    main = mod["main"]
    if main.attrs is not None and "params" in main.attrs:
        mod["main"] = main.without_attr("params")
    info.mod = mod
    return info


def _require_full_integer(model: Any, sg: Any, label: str) -> None:
    """A float or dynamic-range model has float32 activations between its ops: send it to tvmq.quantize."""
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        if _op_name(model, op) in ("QUANTIZE", "DEQUANTIZE"):
            continue
        for idx in (int(i) for i in op.OutputsAsNumpy()):
            if int(sg.Tensors(idx).Type()) == _FLOAT32:
                raise ModelLoadError(
                    f"'{label}' is not a full-integer model: {_op_name(model, op)} output '{_tensor_name(sg, idx)}' "
                    "is float32. load_quantized keeps the quantization of int8 models; calibrate and quantize a "
                    "float model with tvmq.quantize (CLI: --calib)"
                )


class _Reader:
    """Collects and checks the quantization of every tensor of subgraph 0."""

    def __init__(self, model: Any, sg: Any, label: str) -> None:
        self.model, self.sg, self.label = model, sg, label

    def read(self) -> QuantizedTFLite:
        model, sg = self.model, self.sg
        info = QuantizedTFLite(mod=None, label=self.label, input_qparams=None, output_qparams=None)
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            kind = _op_name(model, op)
            inputs, outputs = [int(i) for i in op.InputsAsNumpy()], [int(i) for i in op.OutputsAsNumpy()]
            for out in outputs:
                info.producer[out] = (kind, inputs)
                info.qparams[out] = self._activation_qparams(out, kind)
            if kind in _WEIGHTED_OPS:
                info.weights[inputs[1]] = self._weights(inputs[1], kind)
                if len(inputs) > 2 and inputs[2] >= 0:
                    info.biases[inputs[2]] = self._bias(inputs[2], kind)
            if kind == "QUANTIZE" and self._type(inputs[0]) == _UINT8:
                self._activation_qparams(inputs[0], "model input")  # raises the uint8 message
            if kind == "QUANTIZE" and self._type(inputs[0]) != _FLOAT32:
                raise ModelLoadError(
                    f"'{self.label}': QUANTIZE of int8 tensor '{_tensor_name(sg, inputs[0])}' (a requantization "
                    "inside the graph) is not supported by tvmq's pre-quantized import"
                )
        info.input_qparams = self._boundary(int(sg.InputsAsNumpy()[0]), info, "input")
        info.qparams.setdefault(int(sg.InputsAsNumpy()[0]), info.input_qparams)  # e.g. a flattened FC input
        info.output_qparams = self._boundary(int(sg.OutputsAsNumpy()[0]), info, "output")
        out = int(sg.OutputsAsNumpy()[0])
        info.output_tensor = info.producer[out][1][0] if self._type(out) == _FLOAT32 else out
        return info

    def _type(self, idx: int) -> int:
        return int(self.sg.Tensors(idx).Type())

    def _name(self, idx: int) -> str:
        return _tensor_name(self.sg, idx)

    def _quant(self, idx: int) -> tuple[np.ndarray, np.ndarray, int]:
        q = self.sg.Tensors(idx).Quantization()
        if q is None or q.ScaleLength() == 0:
            return np.zeros(0), np.zeros(0, np.int64), 0
        zp = q.ZeroPointAsNumpy()
        zp = np.zeros(q.ScaleLength(), np.int64) if isinstance(zp, int) or np.size(zp) == 0 else zp
        return q.ScaleAsNumpy().astype(np.float32), np.asarray(zp, np.int64), int(q.QuantizedDimension())

    def _scales_ok(self, idx: int, scales: np.ndarray, what: str) -> None:
        if scales.size == 0 or not np.all(np.isfinite(scales) & (scales > 0)):
            raise ModelLoadError(
                f"'{self.label}': {what} '{self._name(idx)}' has scale(s) {scales.tolist()[:4]}; scales must be "
                "positive and finite (is this a full-integer quantized model?)"
            )

    def _activation_qparams(self, idx: int, kind: str) -> QParams | None:
        t = self._type(idx)
        if t == _FLOAT32 and kind == "DEQUANTIZE":
            return None
        if t == _UINT8:
            raise ModelLoadError(
                f"'{self.label}': tensor '{self._name(idx)}' is uint8 (legacy asymmetric TFLite quantization); "
                "tvmq's pre-quantized import takes int8 models: re-convert with the TFLite converter's "
                "full-integer int8 settings (inference_input_type=tf.int8)"
            )
        if t != _INT8:
            raise ModelLoadError(
                f"'{self.label}': {kind} output '{self._name(idx)}' is {_TYPE_NAMES.get(t, t)}; tvmq's "
                "pre-quantized import supports int8 activations only (float models: tvmq.quantize)"
            )
        scales, zps, _ = self._quant(idx)
        self._scales_ok(idx, scales, f"activation tensor of {kind}")
        if scales.size != 1 or not -128 <= int(zps[0]) <= 127:
            raise ModelLoadError(
                f"'{self.label}': activation '{self._name(idx)}' must have one scale and an int8 zero point, got "
                f"{scales.size} scale(s), zero point {zps.tolist()[:4]}"
            )
        return QParams(scale=float(scales[0]), zero_point=int(zps[0]), bits=8)

    def _const(self, idx: int, dtype: type) -> np.ndarray:
        t = self.sg.Tensors(idx)
        data = self.model.Buffers(t.Buffer()).DataAsNumpy()
        return np.frombuffer(data.tobytes(), dtype=dtype).reshape([int(d) for d in t.ShapeAsNumpy()]).copy()

    def _weights(self, idx: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        if self._type(idx) != _INT8 or not _is_constant(self.model, self.sg, idx):
            raise ModelLoadError(
                f"'{self.label}': {kind} weight '{self._name(idx)}' is "
                f"{_TYPE_NAMES.get(self._type(idx), self._type(idx))}, not a constant int8 tensor; "
                "float models go through tvmq.quantize"
            )
        scales, zps, _ = self._quant(idx)
        self._scales_ok(idx, scales, f"{kind} weight")
        if np.any(zps != 0):
            raise ModelLoadError(f"'{self.label}': {kind} weight '{self._name(idx)}' has non-zero zero points; "
                                 "tvmq needs symmetric int8 weights")  # fmt: skip
        return self._const(idx, np.int8), scales

    def _bias(self, idx: int, kind: str) -> np.ndarray:
        if self._type(idx) != _INT32 or not _is_constant(self.model, self.sg, idx):
            raise ModelLoadError(f"'{self.label}': {kind} bias '{self._name(idx)}' must be a constant int32 tensor "
                                 f"(int8 models), got {_TYPE_NAMES.get(self._type(idx), self._type(idx))}")  # fmt: skip
        return self._const(idx, np.int32)

    def _boundary(self, idx: int, info: QuantizedTFLite, which: str) -> QParams:
        """qparams of the model input/output: its own (int8 I/O), or those of the QUANTIZE/DEQUANTIZE next to it."""
        if self._type(idx) == _INT8:
            scales, zps, _ = self._quant(idx)
            self._scales_ok(idx, scales, f"model {which}")
            return QParams(scale=float(scales[0]), zero_point=int(zps[0]), bits=8)
        if which == "input":
            for out, (kind, inputs) in info.producer.items():
                if kind == "QUANTIZE" and inputs[0] == idx:
                    return info.qparams[out]
        elif idx in info.producer and info.producer[idx][0] == "DEQUANTIZE":
            return info.qparams[info.producer[idx][1][0]]
        raise ModelLoadError(f"'{self.label}': the model {which} '{self._name(idx)}' is "
                             f"{_TYPE_NAMES.get(self._type(idx), self._type(idx))} and not quantized next to the "
                             "boundary: is this a full-integer model?")  # fmt: skip


def _real(values: np.ndarray, scales: np.ndarray, sg: Any, idx: int) -> np.ndarray:
    """Dequantized weights, per channel along the tensor's quantized dimension."""
    q = sg.Tensors(idx).Quantization()
    axis = int(q.QuantizedDimension()) if scales.size > 1 else 0
    shape = [1] * values.ndim
    if scales.size > 1:
        shape[axis] = -1
    return (values.astype(np.float64) * scales.astype(np.float64).reshape(shape)).astype(np.float32)


def _real_bias(values: np.ndarray, sg: Any, idx: int, label: str) -> np.ndarray:
    q = sg.Tensors(idx).Quantization()
    scales = q.ScaleAsNumpy().astype(np.float64) if q is not None and q.ScaleLength() else np.ones(1)
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise ModelLoadError(f"'{label}': bias '{_tensor_name(sg, idx)}' has scale(s) {scales.tolist()[:4]}; scales "
                             "must be positive and finite")  # fmt: skip
    return (values.astype(np.float64) * scales).astype(np.float32)


def _float_converter_class() -> type:
    """tvmq's dequantizing converter, also seeing int8 activations as float and naming every op output."""
    from tvm.relax.frontend.tflite.tflite_frontend import TensorWrapper, get_tensor_name

    base = _converter_class()

    class _Int8AsFloatConverter(base):
        def get_tensors(self, tensors_idx_list):
            wrappers = super().get_tensors(tensors_idx_list)
            for k, w in enumerate(wrappers):
                if w.qnn_params is not None and int(w.tensor_idx) not in self._dequantized:
                    wrappers[k] = TensorWrapper(w.tensor_idx, base.float_tensor(w.tensor), w.buffer, None)
            return wrappers

        def convert_quantize(self, op: Any) -> Any:
            return self.get_tensor_expr(self.get_input_tensors(op)[0])  # real values in, real values out

        def convert_dequantize(self, op: Any) -> Any:
            (inp,) = self.get_input_tensors(op)
            return self.get_tensor_expr(inp)

        def convert_fully_connected(self, op: Any) -> Any:
            """TFLM runs FULLY_CONNECTED on its input flattened to [rows, depth] and writes the output tensor's own
            shape (keep_num_dims or not); TVM's converter would emit an N-d matmul. Flatten, convert, reshape."""
            inp = self.get_input_tensors(op)[0]
            shape = [int(d) for d in inp.tensor.ShapeAsNumpy()]
            if len(shape) <= 2:
                return super().convert_fully_connected(op)
            index, out_index = int(inp.tensor_idx), int(self.get_output_tensors(op)[0].tensor_idx)
            name = get_tensor_name(self.subgraph, index)
            original = self.exp_tab.get_expr(name)
            # the flattened input and the 2-d product carry the qparams of the input and output tensors
            flat = tvm.relax.op.reshape(original, [int(np.prod(shape[:-1])), shape[-1]])
            flat = self.bb.emit(flat, name_hint=f"{tensor_var_name(index)}_2d")
            self.exp_tab.set_expr(name, flat, force_override=True)
            try:
                out = super().convert_fully_connected(op)
            finally:
                self.exp_tab.set_expr(name, original, force_override=True)
            if isinstance(out, tvm.relax.Call) and out.op.same_as(tvm.ir.Op.get("relax.reshape")):
                out = out.args[0]  # keep_num_dims's reshape of the 2-d product: replaced by the one below
            out_shape = [int(d) for d in self.subgraph.Tensors(out_index).ShapeAsNumpy()]
            return tvm.relax.op.reshape(self.bb.emit(out, name_hint=f"{tensor_var_name(out_index)}_2d"), out_shape)

        def convert_op_to_relax(self) -> None:
            for k in range(self.subgraph.OperatorsLength()):
                op = self.subgraph.Operators(k)
                outputs = self.get_output_tensors(op)
                ret = self.convert_map[self.get_op_code_str(op)](op=op)
                if ret is None:
                    continue
                index = int(outputs[0].tensor_idx)
                ret = self.bb.emit(self.bb.normalize(ret), name_hint=tensor_var_name(index))
                self.exp_tab.set_expr(get_tensor_name(self.subgraph, index), ret)

    return _Int8AsFloatConverter
