"""Generate tiny full-integer int8 TFLite models, one op family each, for tests/test_prequantized_ops.py.

Run once (not by the tests). TensorFlow is kept out of the project venv; use a separate one:

    python3 -m venv /tmp/trainvenv && /tmp/trainvenv/bin/pip install tensorflow-cpu==2.21.0
    /tmp/trainvenv/bin/python tests/data/tflite_int8/make_int8_op_models.py              # every file
    /tmp/trainvenv/bin/python tests/data/tflite_int8/make_int8_op_models.py dense_3d_flat  # only these models

Every model is a small Keras graph converted by the TFLite converter with full-integer int8 quantization
(representative dataset of random data, int8 input/output, TFLITE_BUILTINS_INT8). Seeds are fixed, so the
files are reproducible (each model is seeded by its name). Weights are scaled up and biases made non-zero so
outputs are far from uniform.

What the converter (TF 2.21) does with some layers: Conv1D becomes RESHAPE + CONV_2D + RESHAPE (no EXPAND_DIMS
or SQUEEZE, not even for explicit tf.expand_dims/tf.squeeze); a ReLU after a conv, add, reshape or pool is fused
into that op, so standalone RELU/RELU6 only appear on the model input; GlobalAveragePooling is MEAN.

Besides the op models (``<family>_<variant>.tflite``) it writes:

* ``uint8_io.tflite`` if the converter still accepts ``inference_input_type=tf.uint8`` (it adds QUANTIZE ops
  uint8 <-> int8 at the boundary; legacy all-uint8 models are no longer produced by TF2's converter);
* ``bad_*.tflite``: a valid conv model edited with TensorFlow's flatbuffer object API so that one
  quantization parameter is invalid (inner activation scale NaN / 0 / negative, activation zero point 300,
  model input scale 0, non-zero weight zero point, bias scale NaN). ``BAD`` below says which tensor is edited.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.lite.python import schema_py_generated as schema  # noqa: E402
from tensorflow.lite.tools import flatbuffer_utils  # noqa: E402

OUT = Path(__file__).resolve().parent
L = tf.keras.layers
N_REPRESENTATIVE = 32


def randomize(model: tf.keras.Model, seed: int, gain: float = 2.0) -> tf.keras.Model:
    """Larger weights and non-zero biases for every layer that has weights."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        g = getattr(layer, "_tvmq_gain", gain)
        new = [ws[0] * g] + [rng.normal(0.0, 0.3, size=w.shape).astype(np.float32) for w in ws[1:]]
        layer.set_weights(new)
    return model


def seq(shape: tuple[int, ...], *layers: L.Layer) -> tf.keras.Model:
    return tf.keras.Sequential([tf.keras.Input(shape, batch_size=1), *layers])


def gain(layer: L.Layer, g: float) -> L.Layer:
    layer._tvmq_gain = g
    return layer


def residual(add_relu: bool) -> tf.keras.Model:
    """Two conv branches of very different output ranges added (ADD rescales both inputs)."""
    x = tf.keras.Input((6, 6, 3), batch_size=1)
    a = gain(L.Conv2D(4, 3, padding="same"), 0.5)(x)
    b = gain(L.Conv2D(4, 1), 6.0)(x)
    y = L.Add()([a, b])
    if add_relu:
        y = L.ReLU()(y)
    return tf.keras.Model(x, y)


def skip_add() -> tf.keras.Model:
    """The model input added to a conv of itself (input and conv output scales differ)."""
    x = tf.keras.Input((6, 6, 4), batch_size=1)
    h = gain(L.Conv2D(4, 3, padding="same", activation="relu"), 3.0)(x)
    return tf.keras.Model(x, L.Add()([x, h]))


def concat() -> tf.keras.Model:
    x = tf.keras.Input((6, 6, 3), batch_size=1)
    a = L.Conv2D(3, 3, padding="same")(x)
    b = gain(L.Conv2D(2, 1, activation="relu"), 4.0)(x)
    return tf.keras.Model(x, L.Concatenate()([a, b]))


# name -> builder (seeded by its name). Inputs are small (a few hundred values) so every file is a few KB.
MODELS: dict[str, Callable[[], tf.keras.Model]] = {
    # CONV_2D
    "conv2d_same_relu": lambda: seq((8, 8, 3), L.Conv2D(4, 3, padding="same", activation="relu")),
    "conv2d_s2_valid_relu6": lambda: seq((9, 9, 3), L.Conv2D(4, 3, strides=2, activation="relu6")),
    "conv2d_dil2_nobias": lambda: seq((9, 9, 2), L.Conv2D(4, 3, dilation_rate=2, padding="same", use_bias=False)),
    "conv2d_s2_same_linear": lambda: seq((8, 8, 3), L.Conv2D(5, 3, strides=2, padding="same")),
    "conv2d_1x1_nobias_relu": lambda: seq((5, 5, 6), L.Conv2D(3, 1, use_bias=False, activation="relu")),
    "conv2d_two_layers": lambda: seq((6, 6, 2), L.Conv2D(4, 3, padding="same", activation="relu"), L.Conv2D(3, 1)),
    # DEPTHWISE_CONV_2D
    "dwconv_dm1_same_relu": lambda: seq((8, 8, 4), L.DepthwiseConv2D(3, padding="same", activation="relu")),
    "dwconv_dm2_s2_valid": lambda: seq((9, 9, 3), L.DepthwiseConv2D(3, strides=2, depth_multiplier=2)),
    "dwconv_dm1_s2_same_relu6": lambda: seq(
        (8, 8, 4), L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6")
    ),
    # Conv1D: RESHAPE + CONV_2D + RESHAPE
    "conv1d_valid_relu": lambda: seq((16, 3), L.Conv1D(4, 3, activation="relu")),
    "conv1d_s2_same": lambda: seq((16, 3), L.Conv1D(4, 5, strides=2, padding="same")),
    # FULLY_CONNECTED
    "dense_relu": lambda: seq((16,), L.Dense(8, activation="relu")),
    "dense_nobias": lambda: seq((16,), L.Dense(8, use_bias=False)),
    "dense_after_flatten": lambda: seq((4, 4, 2), L.Conv2D(3, 3, activation="relu"), L.Flatten(), L.Dense(5)),
    "dense_3d_input": lambda: seq((4, 6), L.Dense(5)),
    # keep_num_dims false (set by EDITS below): the (1, 4, 6) input flattened to (4, 6), output (4, 5)
    "dense_3d_flat": lambda: seq((4, 6), L.Dense(5), L.Flatten()),
    # ADD
    "add_two_branches": lambda: residual(False),
    "add_relu_two_branches": lambda: residual(True),
    "add_input_skip": skip_add,
    # MAX_POOL_2D / AVERAGE_POOL_2D (after a conv so their input is not the model input)
    "maxpool_valid_s2": lambda: seq((8, 8, 2), L.Conv2D(3, 3, padding="same"), L.MaxPooling2D(2)),
    "maxpool_same_s1": lambda: seq(
        (6, 6, 2), L.Conv2D(3, 3, padding="same"), L.MaxPooling2D(3, strides=1, padding="same")
    ),
    "maxpool_same_s2": lambda: seq((7, 7, 2), L.Conv2D(3, 1), L.MaxPooling2D(3, strides=2, padding="same")),
    "avgpool_valid_s2": lambda: seq((8, 8, 2), L.Conv2D(3, 3, padding="same"), L.AveragePooling2D(2)),
    "avgpool_same_s1": lambda: seq(
        (6, 6, 2), L.Conv2D(3, 3, padding="same"), L.AveragePooling2D(3, strides=1, padding="same")
    ),
    "avgpool_same_s2": lambda: seq((7, 7, 2), L.Conv2D(3, 1), L.AveragePooling2D(3, strides=2, padding="same")),
    "maxpool_on_input": lambda: seq((6, 6, 3), L.MaxPooling2D(2)),
    # MEAN
    "gap2d": lambda: seq((6, 6, 3), L.Conv2D(4, 3, activation="relu"), L.GlobalAveragePooling2D()),
    "gap2d_dense": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.GlobalAveragePooling2D(), L.Dense(3)),
    "gap1d": lambda: seq((12, 3), L.Conv1D(4, 3, activation="relu"), L.GlobalAveragePooling1D()),
    # PAD
    "zeropad2d": lambda: seq((5, 5, 2), L.Conv2D(3, 1), L.ZeroPadding2D(((1, 2), (2, 1))), L.Conv2D(2, 3)),
    "zeropad1d": lambda: seq((10, 3), L.Conv1D(4, 1), L.ZeroPadding1D(2), L.Conv1D(2, 3)),
    # RESHAPE
    "reshape_conv": lambda: seq((48,), L.Reshape((4, 4, 3)), L.Conv2D(4, 3, activation="relu")),
    "flatten": lambda: seq((5, 5, 2), L.Conv2D(3, 3), L.Flatten()),
    # standalone RELU / RELU6: on the model input, where there is no op to fuse them into
    "relu_on_input": lambda: seq((4, 4, 2), L.ReLU(), L.Conv2D(3, 3)),
    "relu6_on_input": lambda: seq((16,), L.ReLU(6.0), L.Dense(4)),
    # CONCATENATION, SOFTMAX
    "concat_two_convs": concat,
    "dense_softmax": lambda: seq((16,), L.Dense(6), L.Softmax()),
    # LOGISTIC: TFLM's int8 logistic is its own fixed-point algorithm, which tvmq does not reproduce (refused)
    "logistic_after_dense": lambda: seq((16,), L.Dense(6), L.Activation("sigmoid")),
}

# bad file -> (tensor of the conv2d_two_layers model to edit, what to do to it); "activation" is the output of
# the first CONV_2D (an inner tensor), "input" the model input, "weight" the first CONV_2D's filter.
BAD_SOURCE = "conv2d_two_layers"
BAD: dict[str, tuple[str, str]] = {
    "bad_act_scale_nan": ("activation", "scale_nan"),
    "bad_act_scale_zero": ("activation", "scale_zero"),
    "bad_act_scale_negative": ("activation", "scale_negative"),
    "bad_input_scale_zero": ("input", "scale_zero"),
    "bad_weight_zero_point": ("weight", "zero_point"),
    "bad_act_zero_point_range": ("activation", "zero_point_range"),
    "bad_bias_scale_nan": ("bias", "scale_nan"),
}


def convert(model: tf.keras.Model, seed: int, io_type: tf.dtypes.DType = tf.int8) -> bytes:
    shape = [int(d) for d in model.inputs[0].shape]

    def representative():
        rng = np.random.default_rng(seed)
        for _ in range(N_REPRESENTATIVE):
            yield [rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = io_type
    conv.inference_output_type = io_type
    return conv.convert()


def save(name: str, data: bytes) -> None:
    path = OUT / f"{name}.tflite"
    path.write_bytes(data)
    print(f"{path.name}: {len(data)} bytes")
    assert len(data) < 16_000, name


def op_names(data: bytes) -> list[str]:
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [m.operatorCodes[op.opcodeIndex] for op in m.subgraphs[0].operators]
    return [names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in codes]


def make_bad(source: bytes, what: str, how: str) -> bytes:
    """Edit one quantization parameter of the BAD_SOURCE model (int8 I/O: no QUANTIZE ops at the boundary)."""
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(source))
    sg = m.subgraphs[0]
    conv = sg.operators[0]
    assert m.operatorCodes[conv.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D
    index = {"activation": conv.outputs[0], "input": sg.inputs[0], "weight": conv.inputs[1], "bias": conv.inputs[2]}[
        what
    ]
    q = sg.tensors[index].quantization
    if how == "zero_point_range":
        q.zeroPoint = np.asarray([300], dtype=np.int64)
    elif how == "zero_point":
        zp = np.asarray(q.zeroPoint, dtype=np.int64).copy()
        zp[1] = 3
        q.zeroPoint = zp
    else:
        scale = np.asarray(q.scale, dtype=np.float32).copy()
        scale[0] = {"scale_nan": np.nan, "scale_zero": 0.0, "scale_negative": -scale[0]}[how]
        q.scale = scale
    print(f"  edited {what} tensor {index} '{sg.tensors[index].name.decode()}' ({how})")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def flat_fully_connected(data: bytes) -> bytes:
    """FULLY_CONNECTED with keep_num_dims false on a 3-d input: its output tensor becomes [rows, units] (what TFLM
    writes then); the converter only emits keep_num_dims true for Dense on a 3-d input."""
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    sg = m.subgraphs[0]
    fully_connected = schema.BuiltinOperator.FULLY_CONNECTED
    (fc,) = [op for op in sg.operators if m.operatorCodes[op.opcodeIndex].builtinCode == fully_connected]
    fc.builtinOptions.keepNumDims = False
    out = sg.tensors[fc.outputs[0]]
    rows = int(np.prod(sg.tensors[fc.inputs[0]].shape[:-1]))
    out.shape = np.array([rows, out.shape[-1]], dtype=np.int32)
    out.shapeSignature = None
    print(f"  FULLY_CONNECTED keep_num_dims false, output '{out.name.decode()}' {out.shape.tolist()}")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


# model -> edit of the converted flatbuffer
EDITS: dict[str, Callable[[bytes], bytes]] = {"dense_3d_flat": flat_fully_connected}


def main(names: list[str]) -> None:
    """Write every model, or only ``names`` (each file is seeded by its name, so a subset leaves the others)."""
    for name, build in MODELS.items():
        if names and name not in names:
            continue
        seed = zlib.crc32(name.encode()) % 10_000  # per name: adding a model does not change the others
        tf.keras.utils.set_random_seed(seed)
        model = randomize(build(), seed)
        data = convert(model, seed)
        if name in EDITS:
            data = EDITS[name](data)
        save(name, data)
        print("  ops:", " ".join(op_names(data)))
    if names:
        return

    tf.keras.utils.set_random_seed(100)
    try:
        data = convert(randomize(MODELS["conv2d_same_relu"](), 100), 100, tf.uint8)
    except Exception as err:  # noqa: BLE001 - any converter refusal means: no uint8 file
        print(f"uint8_io: the converter refused inference types uint8: {type(err).__name__}: {err}")
    else:
        save("uint8_io", data)
        print("  ops:", " ".join(op_names(data)))

    source = (OUT / f"{BAD_SOURCE}.tflite").read_bytes()
    for name, (what, how) in BAD.items():
        save(name, make_bad(source, what, how))


if __name__ == "__main__":
    main(sys.argv[1:])
