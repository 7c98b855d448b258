"""ONNX import: file or ModelProto -> float Relax IRModule with weights bound as constants."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import tvm
from onnx import numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from ..errors import InvalidTensorError, ModelLoadError, TvmqError
from .support import raise_if_unsupported

SUPPORTED_ONNX_OPS = frozenset(
    {
        "Conv", "BatchNormalization", "Relu", "Clip", "Gemm", "MatMul", "Add", "Concat",
        "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
        "Transpose", "Pad", "Softmax", "Sigmoid", "Identity", "Dropout", "Constant",
    }
)  # fmt: skip


def load_onnx_proto(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Read and validate an ONNX model; returns it with a label naming its origin for error messages."""
    if isinstance(model, onnx.ModelProto):
        return model, "<onnx.ModelProto>"
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"ONNX model file '{path}' does not exist")
    try:
        proto = onnx.load(str(path))
    except Exception as err:  # protobuf raises several unrelated types on garbage input
        raise ModelLoadError(f"'{path}' is not a valid ONNX model (truncated or wrong format): {err}") from None
    if not proto.graph.node:
        raise ModelLoadError(f"'{path}' is not a valid ONNX model: its graph has no nodes (truncated file?)")
    return proto, str(path)


def from_onnx(model: str | os.PathLike | onnx.ModelProto) -> tvm.IRModule:
    """Import an ONNX model as a float Relax module (batch fixed to 1, weights as constants).

    Checks every node's op type first and refuses the model, listing all unsupported nodes, before any work.
    """
    proto, origin = load_onnx_proto(model)
    quantized = ("QuantizeLinear", "DequantizeLinear")
    if any(n.op_type in quantized or n.op_type.startswith("QLinear") for n in proto.graph.node):
        raise ModelLoadError(f"ONNX model {origin} is already quantized (QuantizeLinear/DequantizeLinear or QLinear* "
                             "nodes): keep its quantization with tvmq.load_quantized (CLI: no --calib)")  # fmt: skip
    raise_if_unsupported(
        "ONNX",
        [(n.op_type, n.name or (n.output[0] if n.output else "?")) for n in proto.graph.node],
        SUPPORTED_ONNX_OPS,
    )
    _check_initializers(proto, origin)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise ModelLoadError(f"ONNX model {origin} is invalid: {str(err).splitlines()[0]}") from None
    inputs = _graph_inputs(proto)
    if len(inputs) != 1:
        raise ModelLoadError(
            f"ONNX model {origin} has {len(inputs)} inputs ({[i.name for i in inputs]}); tvmq supports one"
        )
    if len(proto.graph.output) != 1:
        raise ModelLoadError(f"ONNX model {origin} has {len(proto.graph.output)} outputs; tvmq supports one")
    shape = _fixed_input_shape(inputs[0], origin)
    with _tvmq_converters():
        try:
            mod = relax.frontend.onnx.from_onnx(proto, shape_dict={inputs[0].name: shape}, keep_params_in_input=False)
        except TvmqError:
            raise
        except Exception as err:  # TVM's converters raise assorted types; the user needs file + reason only
            reason = str(err).strip().splitlines()[-1]
            raise ModelLoadError(f"TVM could not import ONNX model {origin}: {reason}") from None
    return mod.with_attr("tvmq.source", origin).with_attr("tvmq.input_name", inputs[0].name)


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def _fixed_input_shape(value: onnx.ValueInfoProto, origin: str) -> list[int]:
    """The input shape with a symbolic batch dimension fixed to 1 (microcontrollers infer one sample at a time)."""
    if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ModelLoadError(f"ONNX model {origin}: input '{value.name}' must be float32 for a float model")
    dims = value.type.tensor_type.shape.dim
    shape = []
    for axis, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(dim.dim_value)
        elif axis == 0:
            shape.append(1)
        else:
            raise ModelLoadError(
                f"ONNX model {origin}: input '{value.name}' has a symbolic dimension {axis} "
                f"('{dim.dim_param}'); only the batch dimension may be symbolic"
            )
    if shape and shape[0] != 1:
        raise ModelLoadError(f"ONNX model {origin}: input '{value.name}' has batch {shape[0]}; export with batch 1")
    return shape


def _check_initializers(proto: onnx.ModelProto, origin: str) -> None:
    for tensor in proto.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise InvalidTensorError(
                f"ONNX model {origin}: weight tensor '{tensor.name}' holds {bad} NaN/Inf value(s); "
                "fix the trained model before quantizing"
            )


class _Clip(onnx_frontend.OnnxOpConverter):
    """Clip with constant bounds as ``R.maximum``/``R.minimum`` of scalar constants.

    TVM's converter emits opaque TE calls tvmq cannot fuse, and ``R.clip`` stops ConvertLayout (it has no layout
    rule), while binary ops with scalar constants follow any layout.
    """

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return _clamp(bb, inputs[0], float(attr.get("min", -np.inf)), float(attr.get("max", np.inf)))

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        bounds = []
        for bound, default in ((_input(inputs, 1), -np.inf), (_input(inputs, 2), np.inf)):
            if bound is None:
                bounds.append(default)
            elif isinstance(bound, tvm.ir.GenericConst):
                bounds.append(float(bound.value.numpy()))
            else:
                raise ModelLoadError("ONNX Clip with non-constant min/max is not supported by tvmq")
        return _clamp(bb, inputs[0], bounds[0], bounds[1])

    _impl_v13 = _impl_v11


class _Pad(onnx_frontend.OnnxOpConverter):
    """Constant-mode Pad as ``R.nn.pad`` so that layout conversion and quantization can see it."""

    @classmethod
    def _impl_v2(cls, bb, inputs, attr, params):
        return cls._make(inputs[0], list(attr["pads"]), float(attr.get("value", 0.0)), attr)

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        pads, value = _input(inputs, 1), _input(inputs, 2)
        constant = tvm.ir.GenericConst
        if not isinstance(pads, constant) or (value is not None and not isinstance(value, constant)):
            raise ModelLoadError("ONNX Pad with non-constant pads or value is not supported by tvmq")
        fill = float(value.value.numpy()) if value is not None else 0.0
        return cls._make(inputs[0], [int(p) for p in pads.value.numpy()], fill, attr)

    _impl_v13 = _impl_v11

    @staticmethod
    def _make(data, pads: list[int], value: float, attr):
        mode = attr.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise ModelLoadError(f"ONNX Pad mode '{mode}' is not supported by tvmq (only 'constant')")
        rank = len(pads) // 2
        width = [v for axis in range(rank) for v in (pads[axis], pads[axis + rank])]
        return relax.op.nn.pad(data, width, "constant", value)


class _ExplicitPads(onnx_frontend.OnnxOpConverter):
    """TVM's own converter for ``tvm_op``, with ``auto_pad`` first resolved into explicit ``pads``.

    TVM pads a SAME_* Conv input with an opaque TE ``call_tir`` that tvmq cannot see through (and computes the
    output of a SAME_LOWER MaxPool with floor instead of ceil); explicit pads make every auto_pad mode an ordinary
    padded conv/pool. Subclasses name the TVM converter; everything else stays TVM's.
    """

    tvm_op: type[onnx_frontend.OnnxOpConverter]

    @classmethod
    def get_converter(cls, opset):
        convert = cls.tvm_op.get_converter(opset)

        def impl(bb, inputs, attr, params):
            return convert(bb, inputs, _resolve_auto_pad(inputs, attr), params)

        return impl


class _Conv(_ExplicitPads):
    tvm_op = onnx_frontend.Conv


class _MaxPool(_ExplicitPads):
    tvm_op = onnx_frontend.MaxPool


class _AveragePool(_ExplicitPads):
    tvm_op = onnx_frontend.AveragePool


def _resolve_auto_pad(inputs, attr: dict) -> dict:
    """``attr`` with ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID replaced by the explicit ``pads`` it means.

    ONNX: SAME_* keeps ``ceil(size / stride)`` outputs with the total padding
    ``max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)`` split in half, the odd one at the end
    (SAME_UPPER) or at the beginning (SAME_LOWER); VALID pads nothing. Other values are left to TVM to reject.
    """
    mode = attr.get("auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        return attr
    try:
        sizes = [int(d) for d in inputs[0].ty.shape.values[2:]]
    except (AttributeError, TypeError):
        raise ModelLoadError(f"ONNX auto_pad={mode} needs a static input shape, got {inputs[0].ty}") from None
    rank = len(sizes)
    kernel = [int(k) for k in attr.get("kernel_shape") or inputs[1].ty.shape.values[2:]]
    strides = list(attr.get("strides", [1] * rank))
    dilations = list(attr.get("dilations", [1] * rank))
    begin, end = [], []
    for size, k, stride, dilation in zip(sizes, kernel, strides, dilations, strict=True):
        out = -(-size // stride)
        total = 0 if mode == "VALID" else max(0, (out - 1) * stride + (k - 1) * dilation + 1 - size)
        before = total - total // 2 if mode == "SAME_LOWER" else total // 2
        begin.append(before)
        end.append(total - before)
    resolved = {key: value for key, value in attr.items() if key != "auto_pad"}
    resolved["pads"] = begin + end
    return resolved


def _clamp(bb, data, low: float, high: float):
    if low == 0.0 and high == np.inf:
        return relax.op.nn.relu(data)
    if low > -np.inf:
        data = bb.emit(relax.op.maximum(data, relax.const(low, "float32")))
    if high < np.inf:
        data = relax.op.minimum(data, relax.const(high, "float32"))
    return data


def _input(inputs, index: int):
    return inputs[index] if len(inputs) > index else None


@contextlib.contextmanager
def _tvmq_converters() -> Iterator[None]:
    """Swap in tvmq's converters for the duration of one import (TVM reads the map per import)."""
    original = onnx_frontend._get_convert_map

    def patched():
        table = original()
        table.update({"Clip": _Clip, "Pad": _Pad, "Conv": _Conv, "MaxPool": _MaxPool, "AveragePool": _AveragePool})
        return table

    onnx_frontend._get_convert_map = patched
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original
