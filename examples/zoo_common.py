"""Int8 reference exports and size metrics for tvmq's example models (used by ``examples/train_zoo.py``).

For a float example ONNX model (Conv, depthwise Conv, BatchNormalization, Relu, Clip(0, 6), MaxPool,
GlobalAveragePool, Flatten, Gemm, Add; 1-D or 2-D; batch 1) this module

* rebuilds it as a channels-last Keras model with the ONNX weights copied in (conv OIHW -> HWIO,
  depthwise C1HW -> HWC1, Gemm (out, in) -> (in, out) with rows permuted after a channels-last Flatten,
  BatchNorm kept as a layer so TFLite folds it), checked against onnxruntime to 1e-4;
* converts that to a full-integer int8 TFLite flatbuffer (int8 input and output, TFLITE_BUILTINS_INT8
  only, representative data = the example's calibration set);
* quantizes the ONNX model to a QDQ ONNX model with onnxruntime (per-channel int8 weights, int8
  activations, MinMax calibration over the calibration set, after ``quant_pre_process`` folds BN);
* counts deployed parameters, MACs and peak int8 activation memory from the float ONNX graph.

Needs TensorFlow and onnxruntime: run it in the separate training venv (see ``train_zoo.py``), never in
tvmq's own venv. TensorFlow is imported lazily so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

KERAS_TOLERANCE = 1e-4
# BN, activations and Flatten run in place / fused into the producing conv on a microcontroller.
_ALIAS_OPS = {"BatchNormalization", "Relu", "Clip", "Flatten", "Identity", "Dropout"}


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, *spatial) -> (N, *spatial, C), the layout of the Keras and TFLite models."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _padding(in_size: list[int], kernel: list[int], strides: list[int], pads: list[int]) -> tuple[str, list]:
    """Keras padding equal to ONNX ``pads``: 'valid', 'same' (when TF's rule gives the same pads) or explicit."""
    n = len(kernel)
    before, after = list(pads[:n]), list(pads[n:])
    if not any(pads):
        return "valid", []
    same = []
    for size, k, s in zip(in_size, kernel, strides, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        same.append((total // 2, total - total // 2))
    if same == list(zip(before, after, strict=True)):
        return "same", []
    return "explicit", list(zip(before, after, strict=True))


def onnx_to_keras(path: Path):
    """Channels-last Keras model computing the same function as the float ONNX model at ``path``."""
    import tensorflow as tf

    tf.keras.backend.clear_session()  # restart layer-name counters: same file whichever models ran before
    layers = tf.keras.layers
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output)
    }
    (inp,) = [i for i in proto.graph.input if i.name not in init]
    in_shape = shapes[inp.name]
    x_in = tf.keras.Input(shape=tuple(in_shape[2:]) + (in_shape[1],), batch_size=1, name="input")
    tensors = {inp.name: x_in}
    flat_perm: dict[str, np.ndarray] = {}  # Flatten output -> ONNX flat index of each Keras flat position
    weights: list[tuple[object, list[np.ndarray]]] = []

    def add(layer, name_in, values=None):
        out = layer(tensors[name_in] if isinstance(name_in, str) else [tensors[n] for n in name_in])
        if values is not None:
            weights.append((layer, values))
        return out

    for node in proto.graph.node:
        a, x, out = _attrs(node), node.input[0], node.output[0]
        op = node.op_type
        if op == "Conv":
            w = init[node.input[1]]
            bias = init[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            nd = w.ndim - 2
            kernel, strides = list(w.shape[2:]), list(a.get("strides", [1] * nd))
            if any(d != 1 for d in a.get("dilations", [1] * nd)) or nd not in (1, 2):
                raise NotImplementedError(f"Conv {node.name}: dilation or {nd}-D not handled")
            mode, explicit = _padding(shapes[x][2:], kernel, strides, list(a.get("pads", [0] * 2 * nd)))
            if mode == "explicit":
                pad_layer = layers.ZeroPadding1D(explicit[0]) if nd == 1 else layers.ZeroPadding2D(tuple(explicit))
                tensors[x + ":pad"] = pad_layer(tensors[x])
                x, mode = x + ":pad", "valid"
            group, cin = int(a.get("group", 1)), shapes[node.input[0]][1]
            common = {"strides": tuple(strides), "padding": mode, "use_bias": bias is not None}
            if group == 1:
                conv = (layers.Conv1D if nd == 1 else layers.Conv2D)(w.shape[0], tuple(kernel), **common)
                k = np.transpose(w, (2, 1, 0)) if nd == 1 else np.transpose(w, (2, 3, 1, 0))
            elif group == cin == w.shape[0] and nd == 2:
                conv = layers.DepthwiseConv2D(tuple(kernel), **common)
                k = np.transpose(w, (2, 3, 0, 1))
            else:
                raise NotImplementedError(f"Conv {node.name}: group={group} not handled")
            tensors[out] = add(conv, x, [k] + ([bias] if bias is not None else []))
        elif op == "BatchNormalization":
            gamma, beta, mean, var = (init[n] for n in node.input[1:5])
            bn = layers.BatchNormalization(epsilon=float(a.get("epsilon", 1e-5)))
            tensors[out] = add(bn, x, [gamma, beta, mean, var])
        elif op == "Relu":
            tensors[out] = add(layers.ReLU(), x)
        elif op == "Clip":
            lo, hi = (float(init[n]) for n in node.input[1:3])
            if (lo, hi) != (0.0, 6.0):
                raise NotImplementedError(f"Clip {node.name}: only Clip(0, 6) (ReLU6) is handled")
            tensors[out] = add(layers.ReLU(max_value=6.0), x)
        elif op == "MaxPool":
            nd = len(a["kernel_shape"])
            if any(a.get("pads", [])) or a.get("ceil_mode", 0):
                raise NotImplementedError(f"MaxPool {node.name}: padding/ceil_mode not handled")
            pool = (layers.MaxPooling1D if nd == 1 else layers.MaxPooling2D)(
                tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"]))
            )
            tensors[out] = add(pool, x)
        elif op == "GlobalAveragePool":
            nd = len(shapes[x]) - 2
            tensors[out] = add((layers.GlobalAveragePooling1D if nd == 1 else layers.GlobalAveragePooling2D)(), x)
            flat_perm[out] = np.arange(shapes[x][1])  # already flat (N, C): the next Flatten is a no-op
        elif op == "Flatten":
            if x in flat_perm:
                tensors[out], flat_perm[out] = tensors[x], flat_perm[x]
            else:
                c, spatial = shapes[x][1], shapes[x][2:]
                order = np.arange(c * int(np.prod(spatial))).reshape([c, *spatial])
                flat_perm[out] = np.moveaxis(order, 0, -1).ravel()
                tensors[out] = add(layers.Flatten(), x)
        elif op == "Gemm":
            if a.get("transA", 0) or not a.get("transB", 0) or a.get("alpha", 1.0) != 1 or a.get("beta", 1.0) != 1:
                raise NotImplementedError(f"Gemm {node.name}: only Y = X W^T + b is handled")
            w, bias = init[node.input[1]], init[node.input[2]]
            w = w[:, flat_perm[x]] if x in flat_perm else w
            tensors[out] = add(layers.Dense(w.shape[0]), x, [w.T, bias])
        elif op == "Add":
            tensors[out] = add(layers.Add(), list(node.input))
        else:
            raise NotImplementedError(f"ONNX op {op} ({node.name}) has no Keras counterpart here")
    model = tf.keras.Model(x_in, tensors[proto.graph.output[0].name])
    for layer, values in weights:
        layer.set_weights([np.asarray(v, dtype=np.float32) for v in values])
    return model


def check_keras(model, onnx_path: Path, x: np.ndarray) -> float:
    """Max |Keras - onnxruntime| over the samples ``x`` (NC... layout); raises if above KERAS_TOLERANCE."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ref = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    got = model.predict(channels_last(x), batch_size=1, verbose=0)
    err = float(np.max(np.abs(ref - got)))
    if err > KERAS_TOLERANCE:
        raise RuntimeError(f"Keras rebuild of {onnx_path.name} differs from onnxruntime by {err:.3g}")
    return err


def tflite_int8(model, calibration: np.ndarray) -> bytes:
    """Full-integer int8 TFLite flatbuffer, calibrated on ``calibration`` (NC... layout)."""
    import tensorflow as tf

    calib = channels_last(calibration)

    def representative():
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' export listing and "statistics for quantized inputs" chatter
        return conv.convert()


def tflite_accuracy(flatbuffer: bytes, x: np.ndarray, y: np.ndarray) -> tuple[float, list[str]]:
    """Accuracy of an int8-in/int8-out TFLite model and its sorted op kinds.

    Runs TFLite's reference kernels (BUILTIN_REF, no XNNPACK), the ones TFLite Micro's kernels follow.
    """
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interp = tf.lite.Interpreter(
            model_content=flatbuffer, experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF
        )
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = inp["quantization"]
    xs = channels_last(x)
    preds = []
    for i in range(len(xs)):
        q = np.clip(np.round(xs[i : i + 1] / scale) + zero, -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        preds.append(int(np.argmax(interp.get_tensor(outp["index"])[0])))
    ops = sorted({d["op_name"] for d in interp._get_ops_details()})
    return float(np.mean(np.array(preds) == y)), ops


def qdq_onnx(onnx_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    """onnxruntime static QDQ quantization: per-channel int8 weights, int8 activations, MinMax calibration."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.items = iter([{name: calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    name = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(onnx_path), str(pre))  # shape inference + BN folding
        cwd = os.getcwd()
        os.chdir(tmp)  # the calibrator writes its augmented model to the working directory
        try:
            quantize_static(
                str(pre),
                str(out_path),
                Reader(name),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        finally:
            os.chdir(cwd)


def qdq_accuracies(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy of a QDQ model (a) as the QDQ graph defines it and (b) with onnxruntime's fused int8 CPU kernels.

    (a) runs with graph optimizations off, so every QuantizeLinear/DequantizeLinear executes and each conv is
    float on dequantized values: the format's own semantics, the same on every machine. (b) is a default
    session, which fuses Q/DQ into QLinearConv & co.; on x86 CPUs with AVX2 but no VNNI their u8s8 int16
    intermediate sums can saturate (onnxruntime documents this; ``reduce_range`` avoids it), so (b) depends on
    the machine's instruction set and can be lower than (a).
    """
    results = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        preds = np.array([int(np.argmax(sess.run(None, {name: x[i : i + 1]})[0])) for i in range(len(x))])
        results.append(float(np.mean(preds == y)))
    return results[0], results[1]


def graph_stats(path: Path) -> dict:
    """Deployed parameters, MACs and peak int8 activation bytes of a float ONNX model.

    params: Conv/Gemm weights plus one bias per output channel (BN folded into it). macs: Conv and Gemm
    multiply-accumulates. peak_activation_bytes_int8: largest sum, over the graph's nodes in order, of the
    int8 activation tensors alive at that node (its inputs, its output and any tensor still needed later,
    e.g. a residual branch), with BN/ReLU/Clip/Flatten computed in place.
    """
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output)
    }
    params = macs = 0
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            w = init[node.input[1]]
            out_ch = w.shape[0]
            params += w.size + out_ch
            if node.op_type == "Conv":
                macs += int(np.prod(shapes[node.output[0]])) * int(np.prod(w.shape[1:]))
            else:
                macs += w.size
    alias: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type in _ALIAS_OPS:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
    root = lambda n: alias.get(n, n)  # noqa: E731
    nodes = [n for n in proto.graph.node if n.op_type not in _ALIAS_OPS]
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name and name not in init:
                last_use[root(name)] = i
    for out in proto.graph.output:
        last_use[root(out.name)] = len(nodes)
    size = lambda n: int(np.prod(shapes[n]))  # noqa: E731
    live = {root(i.name) for i in proto.graph.input if i.name not in init}
    peak = 0
    for i, node in enumerate(nodes):
        live.add(node.output[0])
        peak = max(peak, sum(size(n) for n in live))
        live = {n for n in live if last_use.get(n, -1) > i}
    return {"params": int(params), "macs": int(macs), "peak_activation_bytes_int8": int(peak)}
