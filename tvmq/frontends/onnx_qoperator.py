"""QOperator ONNX (QLinearConv, QGemm, ...) rewritten into QDQ form: DequantizeLinear -> float op -> QuantizeLinear.

onnxruntime's ``quantize_static(quant_format=QuantFormat.QOperator)`` writes each quantized op as one node holding
its inputs' and output's scales and zero points, and runs data-movement ops (MaxPool, Flatten, ...) on the int8
tensors directly. Spelled out as DequantizeLinear -> float op -> QuantizeLinear with the very same scales, zero
points and integer weights, such a model is a QDQ model, which ``onnx_qdq`` imports: one import path for both
formats, nothing re-derived. The integer bias of QLinearConv is on ``x_scale * w_scale`` by definition, so its
DequantizeLinear gets exactly that scale.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from ..errors import ModelLoadError, UnsupportedOpError

#: QOperator nodes that become DequantizeLinear -> float op -> QuantizeLinear.
QOPERATOR_OPS: frozenset[str] = frozenset(
    {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearAveragePool", "QLinearGlobalAveragePool",
     "QLinearConcat", "QLinearSigmoid"}
)  # fmt: skip
#: Ops onnxruntime runs on int8 tensors as they are (the output keeps the input's scale and zero point).
DIRECT_INT8_OPS: frozenset[str] = frozenset(
    {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
)

# (scale, zero point) tensor names of an int8 activation; the zero point name is "" when it is left out.
_QParamNames = tuple[str, str]


class QOperatorRewriter:
    """One pass over the nodes in order (ONNX keeps them topologically sorted), tracking each int8 tensor's
    scale and zero point names. ``consts`` (name -> array) receives the new constants (bias scales)."""

    def __init__(self, consts: dict[str, np.ndarray], names: set[str], label: str) -> None:
        self.consts, self.names, self.label = consts, names, label
        self.qtensors: dict[str, _QParamNames] = {}
        self.out: list[onnx.NodeProto] = []

    def rewrite(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        expand: dict[str, Callable[[onnx.NodeProto], None]] = {
            "QLinearConv": self._conv, "QLinearMatMul": self._matmul, "QGemm": self._gemm, "QLinearAdd": self._add,
            "QLinearAveragePool": self._unary, "QLinearGlobalAveragePool": self._unary, "QLinearSigmoid": self._unary,
            "QLinearConcat": self._concat,
        }  # fmt: skip
        for node in nodes:
            if node.op_type == "QuantizeLinear":
                self.qtensors[node.output[0]] = (node.input[1], _input(node, 2))
                self.out.append(node)
            elif node.op_type in expand:
                expand[node.op_type](node)
            elif node.op_type != "DequantizeLinear" and any(i in self.qtensors for i in node.input):
                self._direct(node)
            else:
                self.out.append(node)
        return self.out

    # -- helpers -------------------------------------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        name, k = f"{base}_tvmq", 0
        while name in self.names:
            k += 1
            name = f"{base}_tvmq{k}"
        self.names.add(name)
        return name

    def _dq(self, tensor: str, scale: str, zero_point: str, where: onnx.NodeProto, axis: int | None = None) -> str:
        out = self._fresh(f"{tensor}_dequantized")
        attrs = {} if axis is None else {"axis": axis}
        self.out.append(helper.make_node("DequantizeLinear", [tensor, scale, zero_point], [out],
                                         name=self._fresh(f"{where.name}_dq"), **attrs))  # fmt: skip
        return out

    def _q(self, float_tensor: str, tensor: str, scale: str, zero_point: str, where: onnx.NodeProto) -> None:
        self.out.append(helper.make_node("QuantizeLinear", [float_tensor, scale, zero_point], [tensor],
                                         name=self._fresh(f"{where.name}_q")))  # fmt: skip
        self.qtensors[tensor] = (scale, zero_point)

    def _float_op(self, node: onnx.NodeProto, op_type: str, inputs: list[str], drop: tuple[str, ...] = ()) -> str:
        out = self._fresh(f"{node.output[0]}_float")
        new = helper.make_node(op_type, inputs, [out], name=node.name)
        new.attribute.extend(a for a in node.attribute if a.name not in drop)
        self.out.append(new)
        return out

    def _const(self, name: str, node: onnx.NodeProto, what: str) -> np.ndarray:
        if name not in self.consts:
            raise ModelLoadError(f"'{self.label}': {node.op_type} node '{node.name}': {what} '{name}' is not a "
                                 "constant; tvmq needs the quantization parameters stored in the model")  # fmt: skip
        return self.consts[name]

    # -- QOperator nodes -----------------------------------------------------------------------------------------
    def _bias(self, bias: str, x_scale: str, w_scale: str, node: onnx.NodeProto) -> str:
        """DequantizeLinear of an int32 bias on ``x_scale * w_scale`` (zero point 0), as QLinearConv/QGemm define it."""
        scale = self._const(x_scale, node, "input scale").astype(np.float32) * self._const(w_scale, node, "w_scale")
        scale_name, zero_name = self._fresh(f"{bias}_scale"), self._fresh(f"{bias}_zero_point")
        self.consts[scale_name] = np.asarray(scale, np.float32).reshape(-1)
        self.consts[zero_name] = np.zeros(self.consts[scale_name].shape, np.int32)
        return self._dq(bias, scale_name, zero_name, node, axis=0)

    def _conv(self, node: onnx.NodeProto) -> None:
        x, xs, xz, w, ws, wz, ys, yz = (_input(node, k) for k in range(8))
        inputs = [self._dq(x, xs, xz, node), self._dq(w, ws, wz, node, axis=0)]
        if _input(node, 8):
            inputs.append(self._bias(_input(node, 8), xs, ws, node))
        self._q(self._float_op(node, "Conv", inputs), node.output[0], ys, yz, node)

    def _gemm(self, node: onnx.NodeProto) -> None:
        """com.microsoft QGemm (what quantize_static writes for Gemm): alpha 1 only, int32 C on a_scale * b_scale."""
        a, a_s, az, b, bs, bz, c, ys, yz = (_input(node, k) for k in range(9))
        attrs = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("transA", 0) or not ys:
            raise UnsupportedOpError(f"'{self.label}': QGemm node '{node.name}' with alpha != 1, transA or a float "
                                     "output is not supported by tvmq's pre-quantized import")  # fmt: skip
        per_column = np.size(self.consts.get(bs, 1)) > 1
        axis = (0 if attrs.get("transB", 0) else 1) if per_column else None
        inputs = [self._dq(a, a_s, az, node), self._dq(b, bs, bz, node, axis=axis)]
        if c:
            inputs.append(self._bias(c, a_s, bs, node))
        self._q(self._float_op(node, "Gemm", inputs, drop=("alpha",)), node.output[0], ys, yz, node)

    def _matmul(self, node: onnx.NodeProto) -> None:
        a, a_s, az, b, bs, bz, ys, yz = (_input(node, k) for k in range(8))
        per_column = np.size(self.consts.get(bs, 1)) > 1  # per output column: axis 1 of the (K, N) matrix
        inputs = [self._dq(a, a_s, az, node), self._dq(b, bs, bz, node, axis=1 if per_column else None)]
        self._q(self._float_op(node, "MatMul", inputs), node.output[0], ys, yz, node)

    def _add(self, node: onnx.NodeProto) -> None:
        a, a_s, az, b, bs, bz, cs, cz = (_input(node, k) for k in range(8))
        inputs = [self._dq(a, a_s, az, node), self._dq(b, bs, bz, node)]
        self._q(self._float_op(node, "Add", inputs), node.output[0], cs, cz, node)

    def _unary(self, node: onnx.NodeProto) -> None:
        """QLinearAveragePool, QLinearGlobalAveragePool, QLinearSigmoid: X, X_scale, X_zp, Y_scale, Y_zp."""
        if any(a.name == "channels_last" and a.i for a in node.attribute):
            raise UnsupportedOpError(f"'{self.label}': {node.op_type} node '{node.name}' has channels_last=1; tvmq "
                                     "reads ONNX pools in NCHW (channels_last=0)")  # fmt: skip
        x, xs, xz, ys, yz = (_input(node, k) for k in range(5))
        op_type = node.op_type.removeprefix("QLinear")
        out = self._float_op(node, op_type, [self._dq(x, xs, xz, node)], drop=("channels_last",))
        self._q(out, node.output[0], ys, yz, node)

    def _concat(self, node: onnx.NodeProto) -> None:
        ys, yz = _input(node, 0), _input(node, 1)
        rest = list(node.input[2:])
        if len(rest) % 3:
            raise ModelLoadError(f"'{self.label}': QLinearConcat node '{node.name}' has {len(node.input)} inputs; "
                                 "expected Y_scale, Y_zero_point and (X, X_scale, X_zero_point) triples")  # fmt: skip
        inputs = [self._dq(*rest[k : k + 3], node) for k in range(0, len(rest), 3)]
        self._q(self._float_op(node, "Concat", inputs), node.output[0], ys, yz, node)

    def _direct(self, node: onnx.NodeProto) -> None:
        """An op run on int8 codes: the same op on the dequantized tensor, quantized back onto the input's grid."""
        quantized = [i for i in node.input if i in self.qtensors]
        if node.op_type not in DIRECT_INT8_OPS or len(quantized) != 1:
            raise UnsupportedOpError(
                f"'{self.label}': {node.op_type} node '{node.name}' reads the int8 tensor '{quantized[0]}' directly; "
                f"tvmq's pre-quantized ONNX import takes that only for {', '.join(sorted(DIRECT_INT8_OPS))} "
                "(QDQ models: put DequantizeLinear/QuantizeLinear around the op)"
            )
        (tensor,) = quantized
        scale, zero_point = self.qtensors[tensor]
        inputs = [self._dq(i, scale, zero_point, node) if i == tensor else i for i in node.input]
        out = self._float_op(node, node.op_type, inputs)
        self._q(out, node.output[0], scale, zero_point, node)


def _input(node: onnx.NodeProto, k: int) -> str:
    """Name of input ``k`` of ``node``, or "" when it is left out."""
    return node.input[k] if len(node.input) > k else ""
