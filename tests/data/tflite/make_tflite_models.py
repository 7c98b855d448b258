"""Generate the TFLite test models and their TensorFlow Lite reference outputs (run once, not by the tests).

TensorFlow is kept out of the project venv; run this with a separate one:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
    /tmp/tfvenv/bin/python tests/data/tflite/make_tflite_models.py

The CNN is wider than strictly needed (128 channels in the first two layers, 32 in the 1x1 conv) because
TFLite's dynamic-range quantizer leaves weight tensors with fewer than 1024 elements in float32: with 8/16
channels nothing would be quantized and the dynamic-range model would be a float model.

For the dynamic-range model the stored reference ``y`` is the TFLite interpreter run on the same graph with
its int8 weights dequantized to float32 (w = (q - zero_point) * scale, per channel), rewritten here with
TensorFlow's own flatbuffer object API. TFLite's hybrid kernels would also quantize the activations on the
fly, which tvmq does not do; that output is stored as ``y_hybrid`` for information only.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.lite.python import schema_py_generated as schema  # noqa: E402
from tensorflow.lite.tools import flatbuffer_utils  # noqa: E402

OUT = Path(__file__).resolve().parent
N_SAMPLES = 4
L = tf.keras.layers


def randomize(model: tf.keras.Model, seed: int, gain: float) -> tf.keras.Model:
    """Non-zero biases and larger weights, so outputs are far from uniform and weight errors show in them."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if len(ws) == 2:
            layer.set_weights([ws[0] * gain, rng.normal(0.0, 0.2, size=ws[1].shape).astype(np.float32)])
    return model


def build_cnn() -> tf.keras.Model:
    """CNN with CONV_2D, DEPTHWISE_CONV_2D, pools, RESHAPE, FULLY_CONNECTED, SOFTMAX, fused relu/relu6."""
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 1), batch_size=1),
            L.Conv2D(128, 3, padding="same", activation="relu"),
            L.DepthwiseConv2D(3, padding="same", activation="relu6"),
            L.MaxPooling2D(2),
            L.Conv2D(32, 1),
            L.AveragePooling2D(2),
            L.Flatten(),
            L.Dense(10),
            L.Softmax(),
        ]
    )
    return randomize(model, 0, 3.0)


def build_conv1d() -> tf.keras.Model:
    """1-D sensor model: TFLite lowers Conv1D/MaxPool1D to RESHAPE + 2-D op + RESHAPE, and GAP to MEAN."""
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((50, 6), batch_size=1),
            L.Conv1D(16, 5, activation="relu"),
            L.MaxPooling1D(2),
            L.GlobalAveragePooling1D(),
            L.Dense(4),
        ]
    )
    return randomize(model, 1, 1.0)


def build_unsupported() -> tf.Module:
    """Small graph with TANH, EXP and SIN, which tvmq does not accept."""
    rng = np.random.default_rng(2)
    w = tf.constant(rng.normal(size=(16, 8)).astype(np.float32))

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((1, 16), tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            h = tf.tanh(tf.matmul(x, w))
            return tf.sin(tf.exp(h))

    return M()


def run_tflite(model: bytes, xs: np.ndarray) -> np.ndarray:
    """Outputs of the TFLite interpreter for each sample in ``xs``."""
    it = tf.lite.Interpreter(model_content=model)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    ys = []
    for x in xs:
        it.set_tensor(inp["index"], x)
        it.invoke()
        ys.append(it.get_tensor(out["index"]).copy())
    return np.stack(ys)


def dequantize_weights(model: bytes) -> bytes:
    """Rewrite constant int8 weight tensors to float32, so TFLite runs the dequantized-weight float graph."""
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    for sg in m.subgraphs:
        for t in sg.tensors:
            buf = m.buffers[t.buffer]
            if t.type != schema.TensorType.INT8 or buf.data is None or len(buf.data) == 0:
                continue
            q = np.asarray(buf.data, dtype=np.uint8).view(np.int8).reshape(t.shape).astype(np.float64)
            scale = np.asarray(t.quantization.scale, dtype=np.float64)
            zp = np.asarray(t.quantization.zeroPoint, dtype=np.float64)
            if scale.size > 1:
                bshape = [1] * q.ndim
                bshape[t.quantization.quantizedDimension] = -1
                scale, zp = scale.reshape(bshape), zp.reshape(bshape)
            w = ((q - zp) * scale).astype(np.float32)
            buf.data = np.frombuffer(w.tobytes(), dtype=np.uint8)
            t.type = schema.TensorType.FLOAT32
            t.quantization = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def save(name: str, model: bytes) -> None:
    path = OUT / f"{name}.tflite"
    path.write_bytes(model)
    print(f"{path.name}: {len(model)} bytes")
    assert len(model) < 100_000, name


def convert(model: tf.keras.Model, **opts: object) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    for k, v in opts.items():
        setattr(conv, k, v)
    return conv.convert()


def main() -> None:
    rng = np.random.default_rng(123)

    cnn = build_cnn()
    x_cnn = rng.uniform(-1.0, 1.0, size=(N_SAMPLES, 1, 8, 8, 1)).astype(np.float32)

    cnn_float = convert(cnn)
    save("cnn_float", cnn_float)
    np.savez(OUT / "cnn_float.npz", x=x_cnn, y=run_tflite(cnn_float, x_cnn))

    dyn = convert(cnn, optimizations=[tf.lite.Optimize.DEFAULT])
    save("cnn_dynamic_range", dyn)
    np.savez(
        OUT / "cnn_dynamic_range.npz",
        x=x_cnn,
        y=run_tflite(dequantize_weights(dyn), x_cnn),
        y_hybrid=run_tflite(dyn, x_cnn),
    )

    conv16 = tf.lite.TFLiteConverter.from_keras_model(cnn)
    conv16.optimizations = [tf.lite.Optimize.DEFAULT]
    conv16.target_spec.supported_types = [tf.float16]
    fp16 = conv16.convert()
    save("cnn_fp16", fp16)
    np.savez(OUT / "cnn_fp16.npz", x=x_cnn, y=run_tflite(fp16, x_cnn))

    def representative():
        for _ in range(64):
            yield [rng.uniform(-1.0, 1.0, size=(1, 8, 8, 1)).astype(np.float32)]

    conv8 = tf.lite.TFLiteConverter.from_keras_model(cnn)
    conv8.optimizations = [tf.lite.Optimize.DEFAULT]
    conv8.representative_dataset = representative
    conv8.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv8.inference_input_type = tf.int8
    conv8.inference_output_type = tf.int8
    save("int8_full", conv8.convert())

    c1d = build_conv1d()
    x_1d = rng.normal(size=(N_SAMPLES, 1, 50, 6)).astype(np.float32)
    c1d_float = convert(c1d)
    save("conv1d_float", c1d_float)
    np.savez(OUT / "conv1d_float.npz", x=x_1d, y=run_tflite(c1d_float, x_1d))

    mod = build_unsupported()
    conv_u = tf.lite.TFLiteConverter.from_concrete_functions([mod.__call__.get_concrete_function()], mod)
    save("with_unsupported", conv_u.convert())


if __name__ == "__main__":
    main()
