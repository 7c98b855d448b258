"""TFLite frontend: imported modules match TensorFlow Lite's outputs; bad inputs raise tvmq's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from tvmq.errors import ModelLoadError, UnsupportedOpError
from tvmq.frontends.tflite import SUPPORTED_TFLITE_OPS, from_tflite

DATA = Path(__file__).resolve().parent / "data" / "tflite"
REFERENCE_MODELS = ["cnn_float", "cnn_dynamic_range", "cnn_fp16", "conv1d_float"]


def run(mod: tvm.IRModule, xs: np.ndarray) -> np.ndarray:
    """Compile for the host and run every sample through ``main``."""
    ex = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return np.stack([vm["main"](tvm.runtime.tensor(x)).numpy() for x in xs])


def main_params(mod: tvm.IRModule) -> list[relax.Var]:
    return list(mod["main"].params)


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_matches_tflite_reference(name: str) -> None:
    ref = np.load(DATA / f"{name}.npz")
    mod = from_tflite(DATA / f"{name}.tflite")
    params = main_params(mod)
    assert len(params) == 1, "weights must be bound as constants, not passed as inputs"
    assert params[0].ty.dtype == "float32"
    assert tuple(int(d) for d in params[0].ty.shape) == ref["x"].shape[1:]
    np.testing.assert_allclose(run(mod, ref["x"]), ref["y"], rtol=1e-4, atol=1e-4)


def test_dynamic_range_weights_are_dequantized_not_hybrid() -> None:
    """The reference is the dequantized-weight float graph; TFLite's hybrid kernels differ measurably."""
    ref = np.load(DATA / "cnn_dynamic_range.npz")
    assert np.abs(ref["y"] - ref["y_hybrid"]).max() > 1e-3  # otherwise the test above would prove nothing
    out = run(from_tflite(DATA / "cnn_dynamic_range.tflite"), ref["x"])
    np.testing.assert_allclose(out, ref["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["cnn_dynamic_range", "cnn_fp16"])
def test_quantized_weight_models_import_as_plain_float_graph(name: str) -> None:
    """No dequantize/astype remains: every weight is a float32 constant in its final layout."""
    text = from_tflite(DATA / f"{name}.tflite").script(show_meta=False)
    for op in ("R.dequantize", "R.astype", "float16", "int8", "R.permute_dims"):
        assert op not in text, op
    assert text.count("R.nn.conv2d(") == 3


def test_structure_of_float_cnn() -> None:
    text = from_tflite(DATA / "cnn_float.tflite").script(show_meta=False)
    assert 'data_layout="NHWC"' in text and 'kernel_layout="HWIO"' in text
    assert 'kernel_layout="HWOI"' in text  # depthwise
    for op in ("R.nn.relu", "R.clip", "R.nn.max_pool2d", "R.nn.avg_pool2d", "R.matmul", "R.nn.softmax"):
        assert op in text, op


def test_bytes_input_equals_path_input() -> None:
    ref = np.load(DATA / "cnn_float.npz")
    mod = from_tflite((DATA / "cnn_float.tflite").read_bytes())
    np.testing.assert_allclose(run(mod, ref["x"][:1]), ref["y"][:1], rtol=1e-4, atol=1e-4)
    tvm.ir.assert_structural_equal(mod, from_tflite(str(DATA / "cnn_float.tflite")))


def test_unsupported_ops_are_all_listed() -> None:
    with pytest.raises(UnsupportedOpError) as info:
        from_tflite(DATA / "with_unsupported.tflite")
    msg = str(info.value)
    for op, node in [("TANH", "Tanh"), ("EXP", "Exp"), ("SIN", "PartitionedCall:0")]:
        assert f"{op} (node '{node}')" in msg
        assert op not in SUPPORTED_TFLITE_OPS
    assert "FULLY_CONNECTED (node" not in msg


def test_truncated_file(tmp_path: Path) -> None:
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes((DATA / "cnn_float.tflite").read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="not a valid .tflite flatbuffer") as info:
        from_tflite(bad)
    assert str(bad) in str(info.value)


def test_truncated_bytes() -> None:
    with pytest.raises(ModelLoadError, match="not a valid .tflite flatbuffer"):
        from_tflite((DATA / "cnn_dynamic_range.tflite").read_bytes()[:-200])


def test_text_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.tflite"
    bad.write_text("this is not a TensorFlow Lite model, just some text\n" * 4)
    with pytest.raises(ModelLoadError, match="not a valid .tflite flatbuffer") as info:
        from_tflite(bad)
    assert str(bad) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"
    with pytest.raises(ModelLoadError, match="not found") as info:
        from_tflite(missing)
    assert str(missing) in str(info.value)


def test_full_integer_model_is_refused() -> None:
    with pytest.raises(ModelLoadError) as info:
        from_tflite(DATA / "int8_full.tflite")
    msg = str(info.value)
    assert "full-integer" in msg
    assert "tvmq.load_quantized" in msg
    assert "input tensor 'serving_default_keras_tensor:0' is int8" in msg
