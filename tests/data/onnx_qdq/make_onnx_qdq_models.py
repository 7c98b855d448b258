"""Tiny float ONNX models, one op family each, and their onnxruntime QDQ/QOperator quantizations.

Used by tests/test_prequantized_onnx.py, which builds and quantizes them into a temporary directory (each takes a
fraction of a second), so no binary file is committed. Run as a script to write them somewhere for inspection:

    .venv/bin/python tests/data/onnx_qdq/make_onnx_qdq_models.py OUT_DIR

Every model is written with ``onnx.helper`` (opset 13, batch 1, NCHW), weights drawn from a generator seeded by
the model's name, and quantized by ``onnxruntime.quantization.quantize_static`` (MinMax over 32 random inputs,
per-channel symmetric int8 weights, int32 biases) in QDQ or QOperator format, with int8 (QInt8) or uint8
(QUInt8) activations.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
N_CALIBRATION = 32


class Graph:
    """A float ONNX graph under construction, tracking each tensor's shape."""

    def __init__(self, name: str, input_shape: tuple[int, ...]) -> None:
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {"x": input_shape}
        self.x = "x"

    def _name(self, base: str) -> str:
        return f"{base}{len(self.nodes)}"

    def _const(self, base: str, value: np.ndarray) -> str:
        name = self._name(base) + f"_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _node(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{len(self.nodes)}", **attrs))
        self.shapes[out] = shape
        return out

    def conv(self, x: str, cout: int, k: int, *, stride: int = 1, pad: int = 0, dilation: int = 1, group: int = 1,
             gain: float = 1.0, bias: bool = True) -> str:  # fmt: skip
        n, cin, *spatial = self.shapes[x]
        rank = len(spatial)
        w = self.rng.normal(0, gain / np.sqrt(cin // group * k**rank), size=(cout, cin // group) + (k,) * rank)
        inputs = [x, self._const("w", w.astype(np.float32))]
        if bias:
            inputs.append(self._const("b", self.rng.normal(0, 0.3, size=cout).astype(np.float32)))
        out = [(s + 2 * pad - dilation * (k - 1) - 1) // stride + 1 for s in spatial]
        return self._node("Conv", inputs, (n, cout, *out), kernel_shape=[k] * rank, strides=[stride] * rank,
                          pads=[pad] * 2 * rank, dilations=[dilation] * rank, group=group)  # fmt: skip

    def gemm(self, x: str, units: int) -> str:
        n, k = self.shapes[x]
        w = self.rng.normal(0, 1 / np.sqrt(k), size=(units, k)).astype(np.float32)
        b = self.rng.normal(0, 0.3, size=units).astype(np.float32)
        return self._node("Gemm", [x, self._const("w", w), self._const("b", b)], (n, units), transB=1)

    def matmul_add(self, x: str, units: int) -> str:
        n, k = self.shapes[x]
        w = self.rng.normal(0, 1 / np.sqrt(k), size=(k, units)).astype(np.float32)
        y = self._node("MatMul", [x, self._const("w", w)], (n, units))
        return self._node("Add", [y, self._const("b", self.rng.normal(0, 0.3, size=units).astype(np.float32))],
                          (n, units))  # fmt: skip

    def unary(self, op: str, x: str, **attrs) -> str:
        return self._node(op, [x], self.shapes[x], **attrs)

    def clip(self, x: str, low: float, high: float) -> str:
        bounds = [self._const("lo", np.float32(low)), self._const("hi", np.float32(high))]
        return self._node("Clip", [x, *bounds], self.shapes[x])

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b], self.shapes[a])

    def pool(self, op: str, x: str, k: int, stride: int, pad: int = 0, **attrs) -> str:
        n, c, *spatial = self.shapes[x]
        out = [(s + 2 * pad - k) // stride + 1 for s in spatial]
        return self._node(op, [x], (n, c, *out), kernel_shape=[k] * len(spatial), strides=[stride] * len(spatial),
                          pads=[pad] * 2 * len(spatial), **attrs)  # fmt: skip

    def global_avg_pool(self, x: str) -> str:
        n, c, *spatial = self.shapes[x]
        return self._node("GlobalAveragePool", [x], (n, c) + (1,) * len(spatial))

    def flatten(self, x: str) -> str:
        shape = self.shapes[x]
        return self._node("Flatten", [x], (shape[0], int(np.prod(shape[1:]))), axis=1)

    def concat(self, parts: list[str]) -> str:
        shape = list(self.shapes[parts[0]])
        shape[1] = sum(self.shapes[p][1] for p in parts)
        return self._node("Concat", parts, tuple(shape), axis=1)

    def pad(self, x: str, pads: list[int]) -> str:
        shape = tuple(s + pads[k] + pads[k + len(pads) // 2] for k, s in enumerate(self.shapes[x]))
        return self._node("Pad", [x, self._const("pads", np.array(pads, np.int64))], shape, mode="constant")

    def model(self, out: str) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.shapes["x"]))
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, list(self.shapes[out]))
        graph = helper.make_graph(self.nodes, "single_op", [x], [y], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def _two_convs(g: Graph) -> tuple[str, str]:
    return g.conv(g.x, 4, 3, pad=1, gain=0.5), g.conv(g.x, 4, 1, gain=3.0)


# name -> (input shape, body). The names say which op is tested; the convs around pools and adds give those ops
# an input that is not the model input.
MODELS: dict[str, tuple[tuple[int, ...], Callable[[Graph], str]]] = {
    "conv_relu": ((1, 3, 8, 8), lambda g: g.unary("Relu", g.conv(g.x, 4, 3, pad=1))),
    "conv_s2_relu6": ((1, 3, 9, 9), lambda g: g.clip(g.conv(g.x, 5, 3, stride=2), 0.0, 6.0)),
    "conv_dil2_nobias": ((1, 2, 9, 9), lambda g: g.conv(g.x, 4, 3, pad=2, dilation=2, bias=False)),
    "conv_1x1": ((1, 6, 5, 5), lambda g: g.conv(g.x, 3, 1)),
    "dwconv_relu6": ((1, 4, 8, 8), lambda g: g.clip(g.conv(g.x, 4, 3, pad=1, group=4), 0.0, 6.0)),
    "dwconv_dm2_s2": ((1, 3, 9, 9), lambda g: g.conv(g.x, 6, 3, stride=2, group=3)),
    "conv1d_relu": ((1, 3, 16), lambda g: g.unary("Relu", g.conv(g.x, 4, 3))),
    "gemm_relu": ((1, 16), lambda g: g.unary("Relu", g.gemm(g.x, 8))),
    "gemm": ((1, 16), lambda g: g.gemm(g.x, 6)),
    "matmul_add": ((1, 16), lambda g: g.matmul_add(g.x, 8)),
    "add": ((1, 3, 6, 6), lambda g: g.add(*_two_convs(g))),
    "add_relu": ((1, 3, 6, 6), lambda g: g.unary("Relu", g.add(*_two_convs(g)))),
    "maxpool_s2": ((1, 2, 8, 8), lambda g: g.pool("MaxPool", g.conv(g.x, 3, 3, pad=1), 2, 2)),
    "maxpool_3x3_s1_pad": ((1, 2, 6, 6), lambda g: g.pool("MaxPool", g.conv(g.x, 3, 3, pad=1), 3, 1, pad=1)),
    "avgpool_s2": ((1, 2, 8, 8), lambda g: g.pool("AveragePool", g.conv(g.x, 3, 3, pad=1), 2, 2)),
    "avgpool_3x3_s1_pad": (
        (1, 2, 6, 6),
        lambda g: g.pool("AveragePool", g.conv(g.x, 3, 3, pad=1), 3, 1, pad=1, count_include_pad=1),
    ),
    "global_avgpool": ((1, 3, 6, 6), lambda g: g.flatten(g.global_avg_pool(g.unary("Relu", g.conv(g.x, 4, 3))))),
    "concat": ((1, 3, 6, 6), lambda g: g.concat(list(_two_convs(g)))),
    "relu_on_input": ((1, 2, 5, 5), lambda g: g.conv(g.unary("Relu", g.x), 3, 3)),
    "conv_sigmoid": ((1, 3, 6, 6), lambda g: g.unary("Sigmoid", g.conv(g.x, 4, 3))),
    "transpose_flatten": (
        (1, 3, 6, 6),
        lambda g: g.flatten(g.unary("Transpose", g.conv(g.x, 4, 3), perm=[0, 2, 3, 1])),
    ),
    "gemm_softmax": ((1, 16), lambda g: g.unary("Softmax", g.gemm(g.x, 6), axis=1)),
    "pad_conv": ((1, 2, 5, 5), lambda g: g.conv(g.pad(g.x, [0, 0, 1, 2, 0, 0, 2, 1]), 3, 3)),
}


def float_model(name: str) -> tuple[onnx.ModelProto, np.ndarray]:
    """The float model ``name`` and its calibration inputs (uniform in [-1, 1], seeded by the name)."""
    shape, body = MODELS[name]
    g = Graph(name, shape)
    model = g.model(body(g))
    calibration = g.rng.uniform(-1.0, 1.0, size=(N_CALIBRATION, *shape[1:])).astype(np.float32)
    return model, calibration


def quantize(model: onnx.ModelProto, calibration: np.ndarray, out: Path, *, fmt: str = "qdq",
             activations: str = "int8", preprocess: bool = False) -> Path:  # fmt: skip
    """onnxruntime ``quantize_static`` of ``model`` into ``out`` (``fmt`` "qdq" or "qoperator", ``activations``
    "int8" or "uint8"); the calibrator's scratch files go next to ``out``. ``preprocess``: onnxruntime's
    ``quant_pre_process`` first (folds BatchNormalization into the convs, as for the zoo's QDQ files).

    uint8 QOperator models get 7-bit weights (``reduce_range``): onnxruntime's u8s8 integer kernels on x86 CPUs
    without VNNI saturate int16 pair sums otherwise (its documented caveat), up to 63 LSB away from the model's
    own definition, so they would be no reference. tvmq itself gives the same bytes with or without it.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{model.graph.input[0].name: x[None]} for x in calibration])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    out = Path(out).resolve()
    src = out.with_suffix(".float.onnx")
    onnx.save(onnx.shape_inference.infer_shapes(model), src)
    if preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(src), str(src), skip_symbolic_shape=True)
    cwd = os.getcwd()
    os.chdir(out.parent)  # the calibrator writes its augmented model to the working directory
    try:
        quantize_static(
            str(src), str(out), Reader(),
            quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[fmt],
            per_channel=True,
            activation_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[activations],
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=fmt == "qoperator" and activations == "uint8",
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    return out


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        model, calibration = float_model(name)
        onnx.save(model, out / f"{name}.onnx")
        for fmt in ("qdq", "qoperator"):
            path = quantize(model, calibration, out / f"{name}.{fmt}.onnx", fmt=fmt)
            ops = sorted({n.op_type for n in onnx.load(path).graph.node})
            print(f"{path.name}: {' '.join(ops)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "onnx_qdq_models")
