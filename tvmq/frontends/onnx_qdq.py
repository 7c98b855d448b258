"""Pre-quantized ONNX import (QDQ and QOperator): the float graph between the Q/DQ pairs plus the model's integers.

A QDQ model (onnxruntime ``quantize_static``, ``QuantFormat.QDQ``) is a float graph whose activations pass through
QuantizeLinear -> DequantizeLinear pairs and whose weights and biases are int8/int32 initializers read through
DequantizeLinear. Everything tvmq's calibration would compute is already there, so nothing is re-derived:

* each QuantizeLinear gives the scale and zero point of the float tensor it reads (the output of the float op
  before it); the pair is dropped and the consumers read that tensor;
* each DequantizeLinear of a constant becomes the float constant it computes, and the integers behind it are kept
  (``FileWeights``) for the conv/dense that reads it;
* QOperator nodes (QLinearConv, ...) are first spelled out in QDQ form (``onnx_qoperator``);
* ops that commute with quantization onto one grid (Relu, Pad, Flatten, ...) left in float next to an unquantized
  tensor at the model's boundary give it their grid, and an AveragePool onto another grid becomes the depthwise
  conv it is (ones with scale 1/count), so that it requantizes once.

The remaining float graph is imported by tvmq's ONNX frontend with every node output bound to a Relax variable
named ``onnx_<k>`` (``QuantizedOnnx.tensors`` maps it back to the ONNX tensor), which is how
``tvmq.quant.prequantized`` finds each layer's qparams and integers. uint8 activations (QUInt8) are carried as int8
with the zero point moved by -128: the same real values on the same grid, codes shifted by 128.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
import tvm
from onnx import helper, numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from ..errors import ModelLoadError, TvmqError, UnsupportedOpError
from ..quant.qparams import QParams
from .onnx import SUPPORTED_ONNX_OPS, from_onnx, load_onnx_proto
from .onnx_qdq_strip import QDQStripper, dims
from .onnx_qoperator import QOPERATOR_OPS, QOperatorRewriter
from .support import raise_if_unsupported

__all__ = ["OUTPUT_KEY", "FileWeights", "QuantizedOnnx", "is_quantized_onnx", "read_quantized_onnx"]

_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_DYNAMIC_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"})
SUPPORTED_QUANTIZED_ONNX_OPS: frozenset[str] = SUPPORTED_ONNX_OPS | _QDQ_OPS | QOPERATOR_OPS
_WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
_PASS_THROUGH = ("Relu", "Clip", "Identity", "Dropout")  # ops tvmq fuses after a conv/dense
_VAR_PREFIX = "onnx_"
#: Key of the model output in ``QuantizedOnnx.tensors``/``weights`` (its value is the function's result, unnamed).
OUTPUT_KEY = "<output>"


@dataclass(frozen=True)
class FileWeights:
    """The stored integers of one conv/dense node: int8 weights, per-output-channel scales, int32 bias."""

    values: np.ndarray  # int8, the file's layout
    scales: np.ndarray  # float64 (O,) or (1,)
    bias: np.ndarray | None  # int32 (O,), or None (no bias, or a float bias)
    bias_scale: np.ndarray | None  # float64 (O,) or (1,): the scale the file gives the int32 bias
    what: str  # "Conv node 'name'"
    # tensors between the conv/dense and the layer output (before a bias Add or Relu) that the file quantizes
    inner: tuple[tuple[str, QParams], ...] = ()


@dataclass
class QuantizedOnnx:
    """A QDQ/QOperator ONNX model as a float Relax module plus its quantization, by Relax variable name."""

    mod: tvm.IRModule
    label: str
    input_qparams: QParams
    output_qparams: QParams
    qparams: dict[str, QParams] = field(default_factory=dict)  # quantized activation tensors
    tensors: dict[str, str] = field(default_factory=dict)  # variable name -> ONNX tensor name
    weights: dict[str, FileWeights] = field(default_factory=dict)  # variable name -> the conv/dense writing it

    def describe(self, var_name: str) -> str:
        """The ONNX tensor behind a Relax variable, for messages."""
        tensor = self.tensors.get(var_name)
        return f"tensor '{tensor}'" if tensor is not None else f"value '{var_name}'"


def is_quantized_onnx(model: onnx.ModelProto) -> bool:
    """True if the model holds any quantization node (QDQ, QOperator or dynamic quantization)."""
    return any(_is_quantization_op(n.op_type) for n in model.graph.node)


def read_quantized_onnx(model: str | os.PathLike[str] | bytes | onnx.ModelProto) -> QuantizedOnnx:
    """Parse, validate and import a QDQ or QOperator ONNX model (see the module docstring)."""
    proto, label = _load(model)
    nodes = list(proto.graph.node)
    if not is_quantized_onnx(proto):
        raise ModelLoadError(
            f"'{label}' is a float ONNX model (no QuantizeLinear/DequantizeLinear or QLinear* node): "
            "load_quantized keeps the quantization a model already has; calibrate and quantize a float model "
            "with tvmq.quantize (CLI: --calib)"
        )
    dynamic = [f"{n.op_type} (node '{n.name}')" for n in nodes if n.op_type in _DYNAMIC_OPS]
    if dynamic:
        raise UnsupportedOpError(
            f"'{label}' is dynamically quantized ({', '.join(dynamic)}): its activation scales are computed at run "
            "time. tvmq needs static scales: quantize with onnxruntime.quantization.quantize_static (QDQ or "
            "QOperator), or quantize the float model with tvmq.quantize"
        )
    found = [(n.op_type, n.name or (n.output[0] if n.output else "?")) for n in nodes]
    raise_if_unsupported("quantized ONNX", found, SUPPORTED_QUANTIZED_ONNX_OPS)
    consts = _constants(proto, label)
    nodes = [n for n in nodes if n.op_type != "Constant"]
    names = {t for n in nodes for t in (*n.input, *n.output)} | set(consts) | {i.name for i in proto.graph.input}
    nodes = QOperatorRewriter(consts, names, label).rewrite(nodes)
    return _import_float(QDQStripper(proto, consts, label).strip(nodes), proto)


def _is_quantization_op(op_type: str) -> bool:
    return op_type in _QDQ_OPS or op_type in _DYNAMIC_OPS or op_type.startswith("QLinear") or op_type == "QGemm"


def _load(model: str | os.PathLike[str] | bytes | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if not isinstance(model, bytes | bytearray):
        return load_onnx_proto(model)
    try:
        proto = onnx.load_model_from_string(bytes(model))
    except Exception as err:  # protobuf raises several unrelated types on garbage input
        raise ModelLoadError(f"the given bytes are not a valid ONNX model (truncated or damaged): {err}") from None
    if not proto.graph.node:
        raise ModelLoadError("the given bytes are not a valid ONNX model: its graph has no nodes (truncated?)")
    return proto, "<ONNX bytes>"


def _constants(proto: onnx.ModelProto, label: str) -> dict[str, np.ndarray]:
    """Initializers and Constant node values by name."""
    consts = {}
    try:
        for tensor in proto.graph.initializer:
            consts[tensor.name] = numpy_helper.to_array(tensor)
        for node in proto.graph.node:
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is None:
                    raise ModelLoadError(f"'{label}': Constant node '{node.name}' has no tensor 'value'")
                consts[node.output[0]] = numpy_helper.to_array(value.t)
    except TvmqError:
        raise
    except Exception as err:  # a damaged initializer (wrong size for its dims, unknown data type)
        raise ModelLoadError(f"'{label}' holds a damaged constant tensor: {err}") from None
    return consts


def _import_float(g: QDQStripper, original: onnx.ModelProto) -> QuantizedOnnx:
    """The float graph through tvmq's ONNX frontend, every node output bound to ``onnx_<k>``."""
    output = g.output_tensor()
    used = {i for n in g.nodes for i in n.input}
    initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in g.consts.items() if k in used]
    initializers += [numpy_helper.from_array(v, k) for k, v in g.float_consts.items() if k in used]
    producers = {o: n for n in g.nodes for o in n.output}
    info = QuantizedOnnx(mod=None, label=g.label, input_qparams=g.input_qparams,
                         output_qparams=g.qparams[output])  # fmt: skip
    keys = [(f"{_VAR_PREFIX}{k}", n.output[0]) for k, n in enumerate(g.nodes)] + [(OUTPUT_KEY, output)]
    for key, tensor in keys:
        info.tensors[key] = tensor
        if tensor in g.qparams:
            info.qparams[key] = g.qparams[tensor]
        weights = _file_weights(g, tensor, producers)
        if weights is not None:
            info.weights[key] = weights
    hints: dict[str, str] = {}
    for k, node in enumerate(g.nodes):  # unique names: TVM hands the converter only the node name
        node.name = f"tvmq_node_{k}"
        hints[node.name] = f"{_VAR_PREFIX}{k}"
    out_value = helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, dims(original.graph.output[0]))
    graph = helper.make_graph(g.nodes, "tvmq_float", [g.input], [out_value], initializers)
    proto = helper.make_model(graph, opset_imports=g.opsets, ir_version=original.ir_version)
    with _named_outputs(hints):
        try:
            info.mod = from_onnx(proto)
        except TvmqError as err:
            raise type(err)(str(err).replace("<onnx.ModelProto>", f"'{g.label}' (float graph)")) from None
    return info


def _file_weights(g: QDQStripper, tensor: str, producers: dict[str, onnx.NodeProto]) -> FileWeights | None:
    """The integers of the conv/dense whose output (through Relu/Clip and a constant bias Add) is ``tensor``."""
    node, extra_bias, inner = producers.get(tensor), None, []
    while node is not None and node.op_type not in _WEIGHTED_OPS:
        if node.op_type == "Add" and sum(i in g.float_consts or i in g.consts for i in node.input) == 1:
            extra_bias = next(i for i in node.input if i in g.float_consts or i in g.consts)
            source = next(i for i in node.input if i != extra_bias)
        elif node.op_type in _PASS_THROUGH:
            source = node.input[0]
        else:
            return None
        if source in g.qparams:
            inner.append((source, g.qparams[source]))
        node = producers.get(source)
    if node is None:
        return None
    weight = g.dequantized.get(node.input[1])
    what = f"{node.op_type} node '{node.name}'"
    if weight is None:
        raise ModelLoadError(f"'{g.label}': the weight '{node.input[1]}' of {what} is not an int8 constant "
                             "read through DequantizeLinear (a float weight in a quantized model?)")  # fmt: skip
    out_axis = 0 if node.op_type == "Conv" else (0 if _attr(node, "transB", 0) else 1)
    if weight.values.dtype != np.int8 or np.any(weight.zero_point != 0):
        raise ModelLoadError(
            f"'{g.label}': the weight '{weight.tensor}' of {what} is {weight.values.dtype} with zero point(s) "
            f"{np.unique(weight.zero_point).tolist()[:4]}; tvmq needs symmetric int8 weights (zero point 0, "
            "onnxruntime: weight_type=QuantType.QInt8)"
        )
    if weight.scale.size > 1 and weight.axis != out_axis:
        raise ModelLoadError(f"'{g.label}': the weight '{weight.tensor}' of {what} has scales along axis "
                             f"{weight.axis}; tvmq needs them per output channel (axis {out_axis})")  # fmt: skip
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else extra_bias
    bias = g.dequantized.get(bias_name) if bias_name else None
    if bias is not None and bias.values.dtype != np.int32:
        bias = None  # e.g. an int8 constant added after a MatMul: its real value goes onto s_in * s_w
    if bias is not None and np.any(bias.zero_point != 0):
        raise ModelLoadError(f"'{g.label}': the int32 bias '{bias.tensor}' of {what} has a non-zero zero "
                             "point; tvmq needs int32 biases with zero point 0")  # fmt: skip
    return FileWeights(
        values=weight.values, scales=weight.scale, what=what,
        bias=None if bias is None else bias.values.reshape(-1).astype(np.int32),
        bias_scale=None if bias is None else bias.scale, inner=tuple(inner),
    )  # fmt: skip


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


@contextlib.contextmanager
def _named_outputs(hints: dict[str, str]) -> Iterator[None]:
    """Bind each converted node's result to a variable named ``hints[node name]`` (TVM names them ``lv<k>``)."""
    importer = onnx_frontend.ONNXGraphImporter
    original = importer._convert_operator

    def convert(self, op_name, inputs, attrs, opset):
        hint = hints.get(attrs.get("tvm_custom", {}).get("name"))
        result = original(self, op_name, inputs, attrs, opset)
        if hint is not None and isinstance(result, relax.Call) and isinstance(result.ty, relax.TensorType):
            result = self.bb.emit(result, name_hint=hint)
        return result

    importer._convert_operator = convert
    try:
        yield
    finally:
        importer._convert_operator = original
