"""The shipped example models load, are self-consistent, and reach the float accuracy they record."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from tvmq.errors import ConfigError
from tvmq.examples import ExampleModel, available, load

ort = pytest.importorskip("onnxruntime")

NAMES = ["basicmotions", "digits", "digits_mbv1", "digits_res8", "vowels_dscnn"]
MIN_ACCURACY = {"digits": 0.95, "basicmotions": 0.85, "digits_res8": 0.95, "digits_mbv1": 0.95, "vowels_dscnn": 0.95}
EXPECTED_OPS = {
    "digits": {"Conv", "BatchNormalization", "Relu", "Clip", "MaxPool", "Flatten", "Gemm"},
    "basicmotions": {"Conv", "BatchNormalization", "Relu", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm"},
    "digits_res8": {"Add", "BatchNormalization", "Conv", "Flatten", "Gemm", "GlobalAveragePool", "Relu"},
    "digits_mbv1": {"BatchNormalization", "Clip", "Conv", "Flatten", "Gemm", "GlobalAveragePool"},
    "vowels_dscnn": {"BatchNormalization", "Conv", "Flatten", "Gemm", "GlobalAveragePool", "Relu"},
}


def _meta(ex: ExampleModel) -> dict:
    return json.loads(ex.model_path.with_suffix(".json").read_text())


def test_available_lists_every_example() -> None:
    assert available() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes_match_json(name: str) -> None:
    ex = load(name)
    meta = _meta(ex)
    assert ex.name == meta["name"] == name
    assert ex.model_path.is_file() and ex.model_path.suffix == ".onnx"
    assert ex.input_layout == meta["input_layout"] == {4: "NCHW", 3: "NCW"}[len(meta["input_shape"])]
    assert ex.description
    sample_shape = tuple(meta["input_shape"][1:])
    assert meta["input_shape"][0] == 1
    assert ex.calibration.dtype == np.float32 and ex.x_test.dtype == np.float32
    assert ex.y_test.dtype == np.int64
    assert ex.calibration.shape[1:] == sample_shape and ex.x_test.shape[1:] == sample_shape
    assert ex.y_test.shape == (len(ex.x_test),)
    assert len(ex.calibration) > 0
    assert np.isfinite(ex.calibration).all() and np.isfinite(ex.x_test).all()
    assert set(np.unique(ex.y_test)) <= set(range(len(meta["classes"])))
    assert 0.0 <= ex.float_accuracy <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_onnx_graph_is_fixed_batch_opset13_with_unfused_bn(name: str) -> None:
    ex = load(name)
    model = onnx.load(str(ex.model_path))
    onnx.checker.check_model(model)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {13}
    (inp,) = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == _meta(ex)["input_shape"]
    assert {n.op_type for n in model.graph.node} == EXPECTED_OPS[name]


@pytest.mark.parametrize("name", NAMES)
def test_recorded_float_accuracy_is_reproduced(name: str) -> None:
    ex = load(name)
    sess = ort.InferenceSession(str(ex.model_path), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    preds = np.array(
        [int(np.argmax(sess.run(None, {input_name: ex.x_test[i : i + 1]})[0])) for i in range(len(ex.x_test))]
    )
    accuracy = float(np.mean(preds == ex.y_test))
    assert accuracy == pytest.approx(ex.float_accuracy, abs=1e-9)
    assert accuracy >= MIN_ACCURACY[name]


def test_example_model_is_frozen() -> None:
    ex = load("digits")
    with pytest.raises(AttributeError):
        ex.name = "other"  # type: ignore[misc]


def test_unknown_name_raises_config_error_listing_available() -> None:
    with pytest.raises(ConfigError) as info:
        load("mnist")
    message = str(info.value)
    assert "mnist" in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize("name", ["digits_res8", "digits_mbv1", "vowels_dscnn"])
def test_zoo_models_quantize_to_int8_near_float_and_run_bit_exactly_on_qemu(name: str) -> None:
    """The seed study's families (residual ResNet-8, depthwise MobileNetV1, DS-CNN) through the whole pipeline."""
    import tvmq

    ex = load(name)
    q = tvmq.quantize(ex.model_path, ex.calibration, progress=False)
    assert float(np.mean(q.predict(ex.x_test).argmax(-1) == ex.y_test)) >= ex.float_accuracy - 0.01
    x = ex.x_test[:12]
    result = tvmq.qemu.run(tvmq.build(q, name=name), x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(q.quantize_input(x)))
