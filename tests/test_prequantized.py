"""Pre-quantized import: full-integer int8 TFLite models run byte for byte like TensorFlow Lite Micro."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tvmq
from tvmq.errors import ModelLoadError

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")

DATA = Path(tvmq.examples.__file__).parent / "data"
ZOO = ["basicmotions", "digits", "digits_mbv1", "digits_res8", "vowels_dscnn"]


def _tflm(path: Path, x: np.ndarray) -> np.ndarray:
    interp = runtime.Interpreter.from_file(str(path))
    out = []
    for sample in x:
        interp.set_input(sample[None], 0)
        interp.invoke()
        out.append(interp.get_output(0)[0].copy())
    return np.array(out)


@pytest.fixture(scope="module", params=ZOO)
def zoo(request) -> tuple[str, Path, tvmq.QuantizedModel]:
    path = DATA / f"{request.param}.int8.tflite"
    return request.param, path, tvmq.load_quantized(path)


def test_run_int_equals_tflite_micro_byte_for_byte(zoo) -> None:
    name, path, q = zoo
    x = np.random.default_rng(len(name)).integers(-128, 128, size=(40, *q.input_shape[1:])).astype(np.int8)
    np.testing.assert_array_equal(q.run_int(x), _tflm(path, x))


def test_accuracy_is_the_int8_tflite_accuracy(zoo) -> None:
    """Float inputs through the model's own input quantization: the accuracy TFLite recorded for the file."""
    name, _, q = zoo
    example = tvmq.examples.load(name)
    meta = json.loads((DATA / f"{name}.json").read_text())
    x = example.x_test.transpose(0, 2, 3, 1) if example.x_test.ndim == 4 else example.x_test.transpose(0, 2, 1)
    accuracy = float(np.mean(q.predict(x.reshape(len(x), *q.input_shape[1:])).argmax(-1) == example.y_test))
    assert accuracy == pytest.approx(meta["tflite_int8_accuracy"], abs=1e-9)


@pytest.mark.parametrize("name", ["basicmotions", "digits", "digits_res8", "digits_mbv1", "vowels_dscnn"])
def test_prequantized_models_run_bit_exactly_on_qemu(name: str) -> None:
    q = tvmq.load_quantized(DATA / f"{name}.int8.tflite")
    x = np.random.default_rng(7).integers(-128, 128, size=(8, *q.input_shape[1:])).astype(np.int8)
    result = tvmq.qemu.run(tvmq.build(q, name=name), x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, _tflm(DATA / f"{name}.int8.tflite", x))


def test_the_files_own_integers_are_kept() -> None:
    """No re-derivation: the weights, biases and activation qparams are the flatbuffer's."""
    q = tvmq.load_quantized(DATA / "digits.int8.tflite")
    interp_scales = {round(lp.output.scale, 12) for lp in q.plan.layers}
    assert q.plan.input.scale == pytest.approx(1 / 255, rel=1e-6) and q.plan.input.zero_point == -128
    assert len(interp_scales) > 2
    first = q.plan.layers[0]
    assert first.weight.dtype == np.int8 and np.abs(first.weight).max() == 127  # per-channel symmetric int8
    assert first.bias.dtype == np.int32


def test_float_and_dynamic_range_models_are_sent_to_quantize() -> None:
    for name in ("cnn_float", "cnn_dynamic_range"):
        with pytest.raises(ModelLoadError, match=r"not a full-integer model.*float32.*tvmq.quantize"):
            tvmq.load_quantized(Path(__file__).parent / "data" / "tflite" / f"{name}.tflite")


def test_softmax_model_equals_tflite_micro_on_host_and_qemu() -> None:
    """TFLM's gemmlowp softmax (exp table, Newton-Raphson reciprocal) reproduced byte for byte."""
    path = Path(__file__).parent / "data" / "tflite" / "int8_full.tflite"
    q = tvmq.load_quantized(path)
    x = np.random.default_rng(3).integers(-128, 128, size=(30, *q.input_shape[1:])).astype(np.int8)
    expected = _tflm(path, x)
    np.testing.assert_array_equal(q.run_int(x), expected)
    result = tvmq.qemu.run(tvmq.build(q, name="softmax_cnn"), x[:6], progress=False)
    np.testing.assert_array_equal(result.raw_outputs, expected[:6])


def test_damaged_files_and_other_formats_are_refused(tmp_path: Path) -> None:
    data = (DATA / "digits.int8.tflite").read_bytes()
    with pytest.raises(ModelLoadError, match="truncated or damaged|not a valid"):
        tvmq.load_quantized(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="not found"):
        tvmq.load_quantized(tmp_path / "missing.tflite")
    with pytest.raises(ModelLoadError, match="float ONNX model.*tvmq.quantize"):
        tvmq.load_quantized(DATA / "digits.onnx")


def test_cli_builds_an_int8_tflite_without_calibration(tmp_path: Path) -> None:
    out = tmp_path / "lib"
    cmd = [sys.executable, "-m", "tvmq.cli", "build", str(DATA / "digits.int8.tflite"), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / "model.c").is_file()
    float_model = [sys.executable, "-m", "tvmq.cli", "build", str(DATA / "digits.onnx"), "-o", str(tmp_path / "x")]
    done = subprocess.run(float_model, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "--calib is required" in done.stderr
