"""QDQ graph -> float graph: the Q/DQ pairs dropped, each activation's qparams and each constant's integers kept.

Part of ``onnx_qdq`` (see its docstring). ``QDQStripper.strip`` walks the nodes once, in order: a QuantizeLinear
gives the float tensor it reads its qparams, the DequantizeLinear reading it back becomes an alias of that tensor,
and a DequantizeLinear of a constant becomes the float constant it computes, its integers kept in ``dequantized``.
Then grid-keeping ops pass qparams on, and AveragePools onto another grid become depthwise convs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelLoadError, UnsupportedOpError
from ..quant.qparams import QParams

# Ops that commute with quantization onto one grid (clamp, max, constant pad, moves): they run on the codes.
GRID_KEEPING_OPS = frozenset(
    {"Relu", "Clip", "MaxPool", "Pad", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
)


@dataclass
class DequantizedConst:
    """A DequantizeLinear of a constant: its integers and the float tensor it computes."""

    values: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    node: str
    tensor: str


class QDQStripper:
    """Drops the Q/DQ pairs of a QDQ graph, keeping each activation's qparams and each constant's integers."""

    def __init__(self, proto: onnx.ModelProto, consts: dict[str, np.ndarray], label: str) -> None:
        self.proto, self.consts, self.label = proto, consts, label
        self.alias: dict[str, str] = {}  # DequantizeLinear output -> the float tensor it stands for
        self.qparams: dict[str, QParams] = {}  # float tensor -> its QuantizeLinear's qparams
        self.quantized: dict[str, tuple[str, QParams]] = {}  # QuantizeLinear output -> (float input, qparams)
        self.dequantized: dict[str, DequantizedConst] = {}  # DequantizeLinear output of a constant -> its integers
        self.float_consts: dict[str, np.ndarray] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.input: onnx.ValueInfoProto | None = None
        self.input_qparams: QParams | None = None
        self.opsets = [o for o in proto.opset_import if o.domain in ("", "ai.onnx")] or [helper.make_opsetid("", 13)]

    def strip(self, nodes: list[onnx.NodeProto]) -> QDQStripper:
        inputs = [i for i in self.proto.graph.input if i.name not in self.consts]
        if len(inputs) != 1 or len(self.proto.graph.output) != 1:
            raise ModelLoadError(f"'{self.label}' has {len(inputs)} input(s) and {len(self.proto.graph.output)} "
                                 "output(s); tvmq supports one of each")  # fmt: skip
        self.input = inputs[0]
        for node in nodes:
            if node.op_type == "QuantizeLinear":
                self._quantize(node)
            elif node.op_type == "DequantizeLinear":
                self._dequantize(node)
            else:
                self._float_node(node)
        self._propagate_grids()
        self._average_pools_as_convs()
        if self.input_qparams is None:
            self.input_qparams = self.qparams.get(self.input.name)
        if self.input_qparams is None:
            raise ModelLoadError(f"'{self.label}': the model input '{self.input.name}' is not quantized (no "
                                 "QuantizeLinear reads it, nor is it an int8 input read by a "
                                 "DequantizeLinear)")  # fmt: skip
        return self

    # -- Q/DQ ----------------------------------------------------------------------------------------------------
    def _quantize(self, node: onnx.NodeProto) -> None:
        source = self.alias.get(node.input[0], node.input[0])
        qp = self._activation_qparams(node, source)
        if self.qparams.get(source, qp) != qp:
            raise ModelLoadError(f"'{self.label}': tensor '{source}' is quantized twice with different scales/zero "
                                 f"points ({self.qparams[source]} and {qp}, QuantizeLinear '{node.name}')")  # fmt: skip
        self.qparams[source] = qp
        self.quantized[node.output[0]] = (source, qp)

    def _dequantize(self, node: onnx.NodeProto) -> None:
        src, out = node.input[0], node.output[0]
        if src in self.consts:
            self._dequantize_const(node)
        elif src in self.quantized:
            source, qp = self.quantized[src]
            dq = self._activation_qparams(node, source)
            if dq != qp:
                raise UnsupportedOpError(
                    f"'{self.label}': DequantizeLinear '{node.name}' reads '{src}' with {dq}, but it was quantized "
                    f"with {qp}: a requantization between two grids inside the graph is not supported"
                )
            self.alias[out] = source
        elif src == self.input.name and self.input_qparams is None:  # an int8/uint8 model input
            self.input_qparams = self._activation_qparams(node, src)
            self.input = helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, dims(self.input))
            self.qparams[out] = self.input_qparams
        else:
            raise ModelLoadError(f"'{self.label}': DequantizeLinear '{node.name}' reads '{src}', which is neither a "
                                 "constant, a QuantizeLinear output nor the model input")  # fmt: skip

    def _dequantize_const(self, node: onnx.NodeProto) -> None:
        values = self.consts[node.input[0]]
        scale = self._const_input(node, 1, "scale").astype(np.float64)
        zero = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(1, values.dtype)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.size == 0 or not np.all(np.isfinite(scale) & (scale > 0)):
            raise ModelLoadError(f"'{self.label}': DequantizeLinear '{node.name}' of constant '{node.input[0]}' has "
                                 f"scale(s) {scale.reshape(-1).tolist()[:4]}; scales must be positive and "
                                 "finite")  # fmt: skip
        shape = [1] * values.ndim
        if scale.size > 1:
            if values.ndim == 0 or scale.size != values.shape[axis % values.ndim]:
                raise ModelLoadError(f"'{self.label}': DequantizeLinear '{node.name}': {scale.size} scales do not "
                                     f"match axis {axis} of '{node.input[0]}' {list(values.shape)}")  # fmt: skip
            shape[axis % values.ndim] = -1
        real = (values.astype(np.float64) - zero.astype(np.float64).reshape(shape)) * np.float32(scale).reshape(shape)
        self.float_consts[node.output[0]] = real.astype(np.float32)
        self.dequantized[node.output[0]] = DequantizedConst(values, scale.reshape(-1), zero.reshape(-1),
                                                  axis % max(values.ndim, 1), node.name, node.input[0])  # fmt: skip

    def _const_input(self, node: onnx.NodeProto, k: int, what: str) -> np.ndarray:
        name = node.input[k] if len(node.input) > k else ""
        if name not in self.consts:
            raise ModelLoadError(f"'{self.label}': {node.op_type} '{node.name}': {what} '{name}' is not a constant; "
                                 "tvmq needs the quantization parameters stored in the model")  # fmt: skip
        return self.consts[name]

    def _activation_qparams(self, node: onnx.NodeProto, tensor: str) -> QParams:
        """One positive scale and an int8 (or uint8, moved to int8) zero point: tvmq's activation grid."""
        scale = self._const_input(node, 1, "scale")
        zero = self._const_input(node, 2, "zero point") if len(node.input) > 2 and node.input[2] else np.uint8(0)
        where = f"activation '{tensor}' ({node.op_type} '{node.name}')"
        if np.size(scale) != 1:
            raise ModelLoadError(f"'{self.label}': {where} has {np.size(scale)} scales; tvmq needs one scale per "
                                 "activation tensor (per-tensor quantization)")  # fmt: skip
        value = float(np.asarray(scale, np.float32).reshape(-1)[0])
        if not (np.isfinite(value) and value > 0):
            raise ModelLoadError(f"'{self.label}': {where} has scale {value}; scales must be positive and finite")
        zero = np.asarray(zero)
        if zero.dtype not in (np.int8, np.uint8) or zero.size != 1:
            raise ModelLoadError(
                f"'{self.label}': {where} has zero point type {zero.dtype} {zero.reshape(-1).tolist()[:4]}; tvmq's "
                "pre-quantized import takes int8 (QInt8) and uint8 (QUInt8) activations with one zero point"
            )
        zp = int(zero.reshape(-1)[0]) - (128 if zero.dtype == np.uint8 else 0)
        return QParams(scale=value, zero_point=zp, bits=8)

    # -- float graph ---------------------------------------------------------------------------------------------
    def _float_node(self, node: onnx.NodeProto) -> None:
        for name in node.input:
            if name in self.quantized:
                raise ModelLoadError(f"'{self.label}': {node.op_type} node '{node.name}' reads the quantized tensor "
                                     f"'{name}' without a DequantizeLinear")  # fmt: skip
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(self.alias.get(i, i) for i in node.input)
        self.nodes.append(new)

    def _propagate_grids(self) -> None:
        """Give unquantized tensors next to grid-keeping ops the grid on the other side: exact, as these ops
        commute with quantization (e.g. a Relu or Pad that onnxruntime left in float before the first
        QuantizeLinear, a Flatten after the last one). Backwards only along the chain from the model input."""
        from_input = {self.input.name}
        for node in self.nodes:
            if node.op_type in GRID_KEEPING_OPS and node.input[0] in from_input:
                from_input.add(node.output[0])
        changed = True
        while changed:
            changed = False
            for node in self.nodes:
                if node.op_type not in GRID_KEEPING_OPS or not node.input or not node.output:
                    continue
                src, dst = node.input[0], node.output[0]
                if src in self.qparams and dst not in self.qparams:
                    self.qparams[dst], changed = self.qparams[src], True
                elif dst in self.qparams and src not in self.qparams and src in from_input:
                    self.qparams[src], changed = self.qparams[dst], True

    def _average_pools_as_convs(self) -> None:
        """An AveragePool onto another grid (QLinearAveragePool) as the depthwise conv it is: weights 1 with scale
        1/count, so tvmq's conv requantizes the window sum once. Needs every window to count the same taps."""
        for k, node in enumerate(self.nodes):
            src, dst = (node.input[0], node.output[0]) if node.op_type == "AveragePool" else ("", "")
            if not src or src not in self.qparams or self.qparams[src] == self.qparams.get(dst, self.qparams[src]):
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            padded = any(attrs.get("pads", [0])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
            if attrs.get("ceil_mode", 0) or (padded and not attrs.get("count_include_pad", 0)):
                raise UnsupportedOpError(
                    f"'{self.label}': AveragePool '{node.name}' changes scale/zero point ({self.qparams[src]} -> "
                    f"{self.qparams[dst]}) and its windows count different numbers of taps (padding without "
                    "count_include_pad, or ceil_mode); tvmq requantizes average pools only with equal counts"
                )
            kernel = list(attrs["kernel_shape"])
            channels = self._channels(src, node)
            count = int(np.prod(kernel))
            weight = self._fresh_name(f"{node.name}_ones")
            self.float_consts[weight] = np.full((channels, 1, *kernel), np.float32(1.0 / count), np.float32)
            ones = np.ones((channels, 1, *kernel), np.int8)
            self.dequantized[weight] = DequantizedConst(ones, np.full(channels, 1.0 / count), np.zeros(1, np.int8), 0,
                                                        node.name, weight)  # fmt: skip
            conv = helper.make_node("Conv", [src, weight], [dst], name=node.name, group=channels)
            geometry = ("kernel_shape", "strides", "pads", "auto_pad")
            conv.attribute.extend(a for a in node.attribute if a.name in geometry)
            self.nodes[k] = conv

    def _channels(self, tensor: str, node: onnx.NodeProto) -> int:
        graph = helper.make_graph(self.nodes, "shapes", [self.input], [], [
            numpy_helper.from_array(v, n) for n, v in {**self.consts, **self.float_consts}.items()
            if any(n in x.input for x in self.nodes)])  # fmt: skip
        try:
            inferred = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=self.opsets))
        except Exception as err:  # an inconsistent graph: say which pool needed the shape
            raise ModelLoadError(f"'{self.label}': cannot infer the channels of '{tensor}' read by AveragePool "
                                 f"'{node.name}': {err}") from None  # fmt: skip
        for value in inferred.graph.value_info:
            dims = value.type.tensor_type.shape.dim
            if value.name == tensor and len(dims) > 1 and dims[1].HasField("dim_value"):
                return int(dims[1].dim_value)
        raise ModelLoadError(f"'{self.label}': cannot infer the channels of '{tensor}' read by AveragePool "
                             f"'{node.name}'")  # fmt: skip

    def _fresh_name(self, base: str) -> str:
        taken = {t for n in self.nodes for t in (*n.input, *n.output)} | set(self.consts) | set(self.float_consts)
        name, k = f"{base}_tvmq", 0
        while name in taken:
            k += 1
            name = f"{base}_tvmq{k}"
        return name

    def output_tensor(self) -> str:
        name = self.proto.graph.output[0].name
        name = self.quantized[name][0] if name in self.quantized else self.alias.get(name, name)
        if name not in self.qparams:
            raise ModelLoadError(f"'{self.label}': the model output '{self.proto.graph.output[0].name}' is not "
                                 "quantized (no QuantizeLinear before it)")  # fmt: skip
        return name


def dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
