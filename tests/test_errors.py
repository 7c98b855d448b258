"""Bad input gets a clear tvmq error naming the problem, never a TVM traceback or a silent wrong answer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

import tvmq
from tvmq.errors import (
    CalibrationDataError,
    ConfigError,
    InvalidTensorError,
    ModelLoadError,
    UnsupportedOpError,
)


def conv_model(weight: np.ndarray | None = None, extra_nodes=(), output="y") -> onnx.ModelProto:
    weight = np.random.default_rng(0).normal(size=(4, 1, 3, 3)) if weight is None else weight
    nodes = [oh.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             oh.make_node("Relu", ["c"], ["y"], name="relu"), *extra_nodes]  # fmt: skip
    graph = oh.make_graph(
        nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [oh.make_tensor_value_info(output, TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )  # fmt: skip
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])


CALIB = np.random.default_rng(1).uniform(0, 1, size=(16, 1, 6, 6)).astype(np.float32)


def test_unsupported_ops_listed_all_at_once_before_any_work():
    extra = [oh.make_node("Tanh", ["y"], ["t"], name="my_tanh"), oh.make_node("Exp", ["t"], ["e"], name="my_exp"),
             oh.make_node("LSTM", ["e", "w", "w"], ["o"], name="my_lstm")]  # fmt: skip
    with pytest.raises(UnsupportedOpError) as err:
        tvmq.quantize(conv_model(extra_nodes=extra, output="o"), CALIB)
    message = str(err.value)
    for op, node in (("Tanh", "my_tanh"), ("Exp", "my_exp"), ("LSTM", "my_lstm")):
        assert f"{op} (node '{node}')" in message
    assert "3 node(s)" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (np.zeros((4, 1, 5, 5), np.float32), r"shape \(4, 1, 5, 5\); expected \(N, 1, 6, 6\)"),
        (np.zeros((4, 1, 6, 6), np.int8), "dtype int8; expected floating-point"),
        (np.zeros((0, 1, 6, 6), np.float32), "empty"),
        ([], "empty"),
        ("not_there.npz", "does not exist"),
    ],
)
def test_bad_calibration_data(data, expected):
    with pytest.raises(CalibrationDataError, match=expected):
        tvmq.quantize(conv_model(), data)


def test_nan_in_calibration_data_names_the_sample():
    data = CALIB.copy()
    data[5, 0, 2, 2] = np.nan
    with pytest.raises(CalibrationDataError, match="first at index 5"):
        tvmq.quantize(conv_model(), data)


def test_nan_weights_name_the_tensor():
    weight = np.ones((4, 1, 3, 3))
    weight[1, 0, 0, 0] = np.inf
    with pytest.raises(InvalidTensorError, match="weight tensor 'w'"):
        tvmq.quantize(conv_model(weight), CALIB)


def test_all_zero_weights_and_constant_inputs_give_finite_scales():
    qmodel = tvmq.quantize(conv_model(np.zeros((4, 1, 3, 3))), np.zeros((8, 1, 6, 6), np.float32), progress=False)
    for lp in qmodel.plan.layers:
        for qp in [*lp.inputs, lp.output]:
            assert np.isfinite(qp.scale) and qp.scale > 0
        if lp.weight_scale is not None:
            assert np.all(np.isfinite(lp.weight_scale)) and np.all(lp.weight_scale > 0)
    np.testing.assert_array_equal(qmodel.predict(np.ones((2, 1, 6, 6), np.float32)), 0.0)


@pytest.mark.parametrize("field", ["weight_bits", "act_bits"])
@pytest.mark.parametrize("bits", [0, 9, 16, -1, 4.0, True])
def test_bits_outside_1_to_8(field, bits):
    with pytest.raises(ConfigError, match=f"{field} must be an integer in 1..8"):
        tvmq.QuantConfig(**{field: bits})


def test_bad_override_field_and_unknown_layer():
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['wbits'\]"):
        tvmq.QuantConfig(overrides={"conv2d_0": {"wbits": 4}})
    with pytest.raises(ConfigError, match="weight_bits must be an integer in 1..8"):
        tvmq.QuantConfig(overrides={"conv2d_0": {"weight_bits": 12}})
    with pytest.raises(ConfigError, match=r"names layer\(s\) \['conv9'\].*its layers are: .*conv2d_0"):
        tvmq.quantize(conv_model(), CALIB, tvmq.QuantConfig(overrides={"conv9": {"weight_bits": 4}}))


def test_unknown_observer():
    with pytest.raises(ConfigError, match="act_observer must be one of"):
        tvmq.QuantConfig(act_observer="kl")


def test_truncated_and_non_model_files(tmp_path):
    model = conv_model().SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model[: len(model) // 3])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        tvmq.from_onnx(truncated)
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model")
    with pytest.raises(ModelLoadError, match="notes.onnx"):
        tvmq.from_onnx(text)
    with pytest.raises(ModelLoadError, match="does not exist"):
        tvmq.from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ModelLoadError, match=r"expected a \.onnx or \.tflite"):
        tvmq.quantize(str(tmp_path / "model.bin"), CALIB)


def test_run_int_refuses_float_and_wrong_shapes(digits_int8):
    with pytest.raises(CalibrationDataError, match="must be int8 codes"):
        digits_int8.run_int(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(CalibrationDataError, match=r"expected \(N, 1, 8, 8\)"):
        digits_int8.run_int(np.zeros((2, 8, 8), np.int8))
    with pytest.raises(CalibrationDataError, match=r"inputs .* shape \(2, 3\)"):
        digits_int8.predict(np.zeros((2, 3), np.float32))


def test_cli_reports_errors_without_traceback(capsys, tmp_path):
    from tvmq.cli import main

    missing = tmp_path / "none.onnx"
    assert main(["quantize", str(missing), "--calib", str(tmp_path / "c.npz")]) == 2
    assert "tvmq: error:" in capsys.readouterr().err
