"""Pre-quantized import, op by op: tiny full-integer int8 TFLite models run byte for byte like TFLite Micro.

The models are in tests/data/tflite_int8 (written by make_int8_op_models.py there, one op family per file).
Every file is in exactly one of the lists below. When tvmq learns an op, move its files from
NOT_YET_SUPPORTED to EQUAL_TO_TFLM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tvmq
from tvmq.errors import ModelLoadError, UnsupportedOpError

pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
from test_prequantized import _tflm  # noqa: E402  (TFLM's outputs, one interpreter per file)

tflite = pytest.importorskip("tflite")

DATA = Path(__file__).parent / "data" / "tflite_int8"
N_INPUTS = 20

# run_int equals the TFLM interpreter byte for byte.
EQUAL_TO_TFLM = [
    "conv2d_same_relu", "conv2d_s2_valid_relu6", "conv2d_dil2_nobias", "conv2d_s2_same_linear",
    "conv2d_1x1_nobias_relu", "conv2d_two_layers",
    "dwconv_dm1_same_relu", "dwconv_dm2_s2_valid", "dwconv_dm1_s2_same_relu6",
    "conv1d_valid_relu", "conv1d_s2_same",
    "dense_relu", "dense_nobias", "dense_after_flatten", "dense_softmax", "concat_two_convs",
    "dense_3d_input", "dense_3d_flat", "relu_on_input", "relu6_on_input",
    "add_two_branches", "add_relu_two_branches", "add_input_skip",
    "maxpool_valid_s2", "maxpool_same_s1", "maxpool_same_s2", "maxpool_on_input",
    "avgpool_valid_s2", "avgpool_same_s1", "avgpool_same_s2",
    "gap2d", "gap2d_dense", "gap1d",
    "zeropad2d", "zeropad1d",
    "reshape_conv", "flatten",
]  # fmt: skip

# Refused today with UnsupportedOpError; the pattern is what the message must contain.
NOT_YET_SUPPORTED = {
    # TFLM's int8 LOGISTIC is its own fixed-point algorithm; tvmq's sigmoid table would not give its bytes
    "logistic_after_dense": r"LOGISTIC \(node",
}

# Edited copies of conv2d_two_layers (first CONV_2D = operator 0): ModelLoadError naming the tensor and the problem.
# file -> (edited tensor: "activation" = op 0 output, "input" = model input, "weight"/"bias" = op 0 inputs 1/2,
#          pattern of the problem)
BAD = {
    "bad_act_scale_nan": ("activation", r"scale\(s\) \[nan\].*positive and finite"),
    "bad_act_scale_zero": ("activation", r"scale\(s\) \[0\.0\].*positive and finite"),
    "bad_act_scale_negative": ("activation", r"scale\(s\) \[-[0-9.e-]+\].*positive and finite"),
    "bad_act_zero_point_range": ("activation", r"int8 zero point.*zero point \[300\]"),
    "bad_input_scale_zero": ("input", r"model input.*scale\(s\) \[0\.0\]"),
    "bad_weight_zero_point": ("weight", r"non-zero zero points"),
    "bad_bias_scale_nan": ("bias", r"scales must be positive and finite"),
    # int8 model with uint8 I/O (QUANTIZE uint8 -> int8 first): refused, see also test_uint8_io_is_refused_as_uint8
    "uint8_io": ("input", r"is uint8 .*inference_input_type=tf.int8"),
}


def _path(name: str) -> Path:
    return DATA / f"{name}.tflite"


def _tensor_name(path: Path, role: str) -> str:
    sg = tflite.Model.GetRootAsModel(path.read_bytes(), 0).Subgraphs(0)
    op = sg.Operators(0)
    index = {"activation": op.Outputs(0), "input": sg.Inputs(0), "weight": op.Inputs(1), "bias": op.Inputs(2)}[role]
    return sg.Tensors(index).Name().decode()


def test_every_file_is_listed() -> None:
    listed = [*EQUAL_TO_TFLM, *NOT_YET_SUPPORTED, *BAD]
    assert len(listed) == len(set(listed))
    assert sorted(p.stem for p in DATA.glob("*.tflite")) == sorted(listed)


@pytest.mark.parametrize("name", EQUAL_TO_TFLM)
def test_run_int_equals_tflite_micro(name: str) -> None:
    q = tvmq.load_quantized(_path(name))
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.integers(-128, 128, size=(N_INPUTS, *q.input_shape[1:])).astype(np.int8)
    np.testing.assert_array_equal(q.run_int(x), _tflm(_path(name), x))


@pytest.mark.parametrize("name", NOT_YET_SUPPORTED)
def test_not_yet_supported_op_is_refused(name: str) -> None:
    with pytest.raises(UnsupportedOpError, match=NOT_YET_SUPPORTED[name]):
        tvmq.load_quantized(_path(name))


@pytest.mark.parametrize("name", BAD)
def test_bad_quantization_is_refused_naming_the_tensor(name: str) -> None:
    role, problem = BAD[name]
    with pytest.raises(ModelLoadError, match=problem) as err:
        tvmq.load_quantized(_path(name))
    assert f"'{_tensor_name(_path(name), role)}'" in str(err.value)


def test_uint8_io_is_refused_as_uint8() -> None:
    with pytest.raises(ModelLoadError) as err:
        tvmq.load_quantized(_path("uint8_io"))
    assert "uint8" in str(err.value).replace("uint8_io.tflite", "")  # not just in the file name


@pytest.mark.parametrize("name", BAD)
def test_bad_file_error_names_the_file(name: str) -> None:
    with pytest.raises(ModelLoadError) as err:
        tvmq.load_quantized(_path(name))
    assert f"{name}.tflite" in str(err.value)
