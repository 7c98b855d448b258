"""Pre-quantized ONNX (QDQ and QOperator): ``run_int`` against onnxruntime, within 1 LSB on every output element.

onnxruntime runs the QDQ graph as written (graph optimizations off: every QuantizeLinear/DequantizeLinear executes,
each op computes in float) and QOperator nodes with its own kernels, which requantize in float; tvmq keeps the
model's scales, zero points and integers and requantizes in fixed point. Both see the same int8 input codes
(onnxruntime gets their real values, which its QuantizeLinear maps back to the same codes); its float output is
mapped back onto the output grid, which is exact. Single-op models are built and quantized by
tests/data/onnx_qdq/make_onnx_qdq_models.py into a temporary directory.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvmq
from tvmq.errors import ModelLoadError, UnsupportedOpError

ort = pytest.importorskip("onnxruntime")

DATA = Path(tvmq.examples.__file__).parent / "data"
ZOO = ["basicmotions", "digits", "digits_mbv1", "digits_res8", "vowels_dscnn"]
N_RANDOM = 40
_spec = importlib.util.spec_from_file_location("make_onnx_qdq_models", Path(__file__).parent / "data" / "onnx_qdq" /
                                               "make_onnx_qdq_models.py")  # fmt: skip
models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(models)

# single-op models onnxruntime's quantizer writes in a form tvmq refuses, and what the message says
REFUSED = {
    # MatMul quantized on its own, then Add of an int8 constant quantized again: two roundings tvmq would fuse
    "matmul_add": r"quantizes .*before its bias.*quant_pre_process fuses MatMul \+ Add into Gemm",
    # onnxruntime gives Softmax's output scale 1/255; TFLM's int8 softmax, which tvmq runs, writes 1/256
    "gemm_softmax": r"layer softmax_0 \(softmax\) writes tensor 'softmax\w+' with .*scale=0\.00392",
}
SINGLE_OPS = [name for name in models.MODELS if name not in REFUSED]
UINT8_OPS = ["conv_relu", "add", "concat", "avgpool_s2", "global_avgpool", "gemm"]


# -- onnxruntime reference ---------------------------------------------------------------------------------------
def _session(model: Path | onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _onnxruntime_codes(model: Path | onnx.ModelProto, q: tvmq.QuantizedModel, codes: np.ndarray) -> np.ndarray:
    """onnxruntime on the real values of int8 input codes; its outputs as codes on the model's output grid."""
    sess = _session(model)
    name = sess.get_inputs()[0].name
    out_qp = q.output_qparams
    outs = []
    for sample in codes:
        y = sess.run(None, {name: q.input_qparams.dequantize(sample[None])})[0]
        y = np.rint(y.astype(np.float64) / np.float32(out_qp.scale)) + out_qp.zero_point
        outs.append(np.clip(y, -128, 127).astype(np.int8).reshape(q.output_shape[1:]))
    return np.array(outs)


def _random_codes(q: tvmq.QuantizedModel, seed: int, n: int = N_RANDOM) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(n, *q.input_shape[1:])).astype(np.int8)


def _assert_within_one_lsb(model: Path | onnx.ModelProto, q: tvmq.QuantizedModel, codes: np.ndarray,
                           label: str) -> float:  # fmt: skip
    """max |run_int - onnxruntime| <= 1 on every element; returns (and prints) the fraction exactly equal."""
    diff = np.abs(q.run_int(codes).astype(np.int32) - _onnxruntime_codes(model, q, codes).astype(np.int32))
    equal = float(np.mean(diff == 0))
    print(f"{label}: max |diff| {diff.max()} LSB, {equal:.4%} of {diff.size} outputs equal")
    assert diff.max() <= 1, f"{label}: {np.count_nonzero(diff > 1)} outputs more than 1 LSB from onnxruntime"
    return equal


# -- models ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_qdq")


def _quantized_single_op(onnx_dir: Path, name: str, fmt: str, activations: str = "int8") -> Path:
    path = onnx_dir / f"{name}.{fmt}.{activations}.onnx"
    if not path.exists():
        model, calibration = models.float_model(name)
        models.quantize(model, calibration, path, fmt=fmt, activations=activations)
    return path


def _qoperator_zoo(onnx_dir: Path, name: str) -> Path:
    path = onnx_dir / f"{name}.qoperator.onnx"
    if not path.exists():
        example = tvmq.examples.load(name)
        calibration = example.calibration[:64].astype(np.float32)
        models.quantize(onnx.load(example.model_path), calibration, path, fmt="qoperator", preprocess=True)
    return path


def _zoo_inputs(q: tvmq.QuantizedModel, name: str) -> np.ndarray:
    """Random int8 codes and the first test samples of the example, through the model's input quantization."""
    example = tvmq.examples.load(name)
    real = q.quantize_input(example.x_test[:60].reshape(-1, *q.input_shape[1:]))
    return np.concatenate([_random_codes(q, len(name)), real])


# -- zoo -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO)
def test_zoo_qdq_within_one_lsb_of_onnxruntime(name: str) -> None:
    path = DATA / f"{name}.qdq.onnx"
    q = tvmq.load_quantized(path)
    _assert_within_one_lsb(path, q, _zoo_inputs(q, name), f"{name}.qdq.onnx")


@pytest.mark.parametrize("name", ZOO)
def test_zoo_qoperator_within_one_lsb_of_onnxruntime(name: str, onnx_dir: Path) -> None:
    path = _qoperator_zoo(onnx_dir, name)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops, ops  # really the QOperator format
    q = tvmq.load_quantized(path)
    _assert_within_one_lsb(path, q, _zoo_inputs(q, name), f"{name} QOperator")


def test_the_files_own_integers_are_kept() -> None:
    """Scales, zero points, int8 weights and int32 biases are the initializers', nothing recalibrated."""
    path = DATA / "digits.qdq.onnx"
    proto = onnx.load(path)
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    q = tvmq.load_quantized(path)
    assert q.plan.input.scale == float(init["input_scale"]) and q.plan.input.zero_point == int(init["input_zero_point"])
    assert q.plan.output.scale == float(init["logits_scale"])
    assert q.plan.output.zero_point == int(init["logits_zero_point"])
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    dq = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    weight, bias = init[dq[conv.input[1]].input[0]], init[dq[conv.input[2]].input[0]]
    first = q.plan.layers[1]  # after the input transpose to NHWC
    assert first.kind == "conv2d"
    np.testing.assert_array_equal(first.weight, weight.transpose(0, 2, 3, 1))  # OIHW -> OHWI
    np.testing.assert_array_equal(first.bias, bias)
    np.testing.assert_array_equal(first.weight_scale, init[dq[conv.input[1]].input[1]].astype(np.float64))


def test_qdq_and_qoperator_of_one_model_run_the_same_integers(onnx_dir: Path) -> None:
    """The QOperator nodes spelled out as Q/DQ around float ops are the QDQ model: same bytes."""
    codes = None
    outs = []
    for fmt in ("qdq", "qoperator"):
        q = tvmq.load_quantized(_quantized_single_op(onnx_dir, "add_relu", fmt))
        codes = _random_codes(q, 5) if codes is None else codes
        outs.append(q.run_int(codes))
    np.testing.assert_array_equal(*outs)


# -- single ops ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
@pytest.mark.parametrize("name", SINGLE_OPS)
def test_single_op_within_one_lsb_of_onnxruntime(name: str, fmt: str, onnx_dir: Path) -> None:
    path = _quantized_single_op(onnx_dir, name, fmt)
    q = tvmq.load_quantized(path)
    _assert_within_one_lsb(path, q, _random_codes(q, sum(map(ord, name))), f"{name} {fmt}")


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
@pytest.mark.parametrize("name", UINT8_OPS)
def test_uint8_activations_run_as_int8_with_the_zero_point_moved(name: str, fmt: str, onnx_dir: Path) -> None:
    """QUInt8 activations: the same grid in int8 (zero point - 128), so the same real values to 1 LSB."""
    path = _quantized_single_op(onnx_dir, name, fmt, "uint8")
    zero_points = [numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer if "zero_point" in t.name]
    assert any(z.dtype == np.uint8 for z in zero_points)
    q = tvmq.load_quantized(path)
    _assert_within_one_lsb(path, q, _random_codes(q, len(name)), f"{name} {fmt} uint8")


@pytest.mark.parametrize("name", REFUSED)
def test_refused_single_op_says_why(name: str, onnx_dir: Path) -> None:
    with pytest.raises(UnsupportedOpError, match=REFUSED[name]):
        tvmq.load_quantized(_quantized_single_op(onnx_dir, name, "qdq"))


def _relu_between_grids(op: str = "Relu", *, out_scale: float = 0.011, zp_dtype=np.int8) -> onnx.ModelProto:
    """x -> Q(0.02, -3) -> DQ -> Relu/Clip -> Q(out_scale, -100) -> DQ: a standalone activation between two grids."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6])
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "s_in"),
        numpy_helper.from_array(np.array(-3, zp_dtype), "z_in"),
        numpy_helper.from_array(np.array(out_scale, np.float32), "s_out"),
        numpy_helper.from_array(np.array(-100, np.int8), "z_out"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.5, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"], name="quantize_x"),
        helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xf"], name="dequantize_x"),
        helper.make_node(op, ["xf", "lo", "hi"] if op == "Clip" else ["xf"], ["r"], name="activation"),
        helper.make_node("QuantizeLinear", ["r", "s_out", "z_out"], ["rq"], name="quantize_r"),
        helper.make_node("DequantizeLinear", ["rq", "s_out", "z_out"], ["y"], name="dequantize_r"),
    ]
    graph = helper.make_graph(nodes, "relu_between_grids", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


@pytest.mark.parametrize("op", ["Relu", "Clip"])
def test_activation_between_two_grids_requantizes(op: str) -> None:
    model = _relu_between_grids(op)
    q = tvmq.load_quantized(model)
    assert q.layers[-1].kind == "requantize"  # (Clip: max on the input grid, then min in the requantization)
    _assert_within_one_lsb(model, q, _random_codes(q, 11, 200), f"{op} between two grids")


def test_int8_model_input_read_by_dequantize_linear() -> None:
    """An int8 graph input (no QuantizeLinear): its DequantizeLinear gives the input grid."""
    model = _relu_between_grids()
    graph = model.graph
    graph.input[0].type.tensor_type.elem_type = TensorProto.INT8
    graph.node.remove(graph.node[0])  # QuantizeLinear: the DequantizeLinear now reads the int8 input
    graph.node[0].input[0] = "x"
    q = tvmq.load_quantized(model)
    assert (q.input_qparams.scale, q.input_qparams.zero_point) == (float(np.float32(0.02)), -3)
    codes = _random_codes(q, 3, 50)
    sess = _session(model)
    expected = [np.rint(sess.run(None, {"x": c[None]})[0] / np.float32(0.011)) - 100 for c in codes]
    np.testing.assert_array_equal(q.run_int(codes), np.clip(expected, -128, 127).astype(np.int8).reshape(codes.shape))


def test_quantize_of_a_quantized_model_points_to_load_quantized() -> None:
    example = tvmq.examples.load("digits")
    with pytest.raises(ModelLoadError, match=r"already quantized.*tvmq\.load_quantized"):
        tvmq.quantize(DATA / "digits.qdq.onnx", example.calibration[:8], progress=False)


# -- QEMU ------------------------------------------------------------------------------------------------------
def test_qdq_model_runs_bit_exactly_on_qemu() -> None:
    q = tvmq.load_quantized(DATA / "digits_res8.qdq.onnx")
    codes = _random_codes(q, 7, 8)
    result = tvmq.qemu.run(tvmq.build(q, name="digits_res8_qdq"), codes, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(codes))


def test_cli_builds_a_qdq_model_without_calibration(tmp_path: Path) -> None:
    out = tmp_path / "lib"
    cmd = [sys.executable, "-m", "tvmq.cli", "build", str(DATA / "digits.qdq.onnx"), "--target", "c -mcpu=cortex-m4",
           "-o", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / "model.c").is_file() and "conv2d" in done.stdout


# -- bad input ---------------------------------------------------------------------------------------------------
def _edited(path: Path, edit) -> onnx.ModelProto:
    model = onnx.load(path)
    edit({t.name: t for t in model.graph.initializer}, model)
    return model


def _set(init: dict, name: str, value: np.ndarray) -> None:
    init[name].CopyFrom(numpy_helper.from_array(value, name))


@pytest.mark.parametrize(
    ("value", "shown"), [(np.nan, r"nan"), (0.0, r"0\.0"), (-0.01, r"-0\.0099")], ids=["nan", "zero", "negative"]
)
def test_bad_activation_scale_is_refused_naming_the_tensor(value: float, shown: str) -> None:
    tensor = "/features/features.2/Relu_output_0"
    model = _edited(DATA / "digits.qdq.onnx", lambda init, _: _set(init, f"{tensor}_scale", np.float32(value)))
    with pytest.raises(ModelLoadError, match=rf"activation '{tensor}'.*scale {shown}.*positive and finite"):
        tvmq.load_quantized(model)


def test_bad_weight_scale_is_refused_naming_the_tensor() -> None:
    name = "ConvBnFusion_W_features.0.weight_scale"

    def edit(init: dict, _) -> None:
        scales = numpy_helper.to_array(init[name]).copy()
        scales[3] = np.nan
        _set(init, name, scales)

    with pytest.raises(ModelLoadError, match=r"ConvBnFusion_W_features\.0\.weight_quantized.*positive and finite"):
        tvmq.load_quantized(_edited(DATA / "digits.qdq.onnx", edit))


def test_int16_activation_zero_point_is_refused() -> None:
    message = r"activation 'x' \(QuantizeLinear 'quantize_x'\) has zero point type int16"
    with pytest.raises(ModelLoadError, match=message):
        tvmq.load_quantized(_relu_between_grids(zp_dtype=np.int16))


def test_uint8_weights_are_refused_naming_the_tensor() -> None:
    """Asymmetric uint8 weights (QUInt8 weight_type) have no symmetric int8 form."""
    weight = "ConvBnFusion_W_features.0.weight"

    def edit(init: dict, _) -> None:
        codes = numpy_helper.to_array(init[f"{weight}_quantized"]).astype(np.int16) + 128
        _set(init, f"{weight}_quantized", codes.astype(np.uint8))
        _set(init, f"{weight}_zero_point", np.full(codes.shape[0], 128, np.uint8))

    with pytest.raises(ModelLoadError, match=rf"weight '{weight}_quantized' of Conv node .* is uint8.*symmetric int8"):
        tvmq.load_quantized(_edited(DATA / "digits.qdq.onnx", edit))


def test_per_channel_activation_scales_are_refused() -> None:
    model = _relu_between_grids()
    init = {t.name: t for t in model.graph.initializer}
    _set(init, "s_out", np.full(4, 0.01, np.float32))
    with pytest.raises(ModelLoadError, match=r"activation 'r' \(QuantizeLinear 'quantize_r'\) has 4 scales"):
        tvmq.load_quantized(model)


def test_float_model_is_sent_to_quantize() -> None:
    with pytest.raises(ModelLoadError, match=r"digits\.onnx' is a float ONNX model.*tvmq\.quantize"):
        tvmq.load_quantized(DATA / "digits.onnx")
    with pytest.raises(ModelLoadError, match=r"float ONNX model"):
        tvmq.load_quantized(onnx.load(DATA / "digits.onnx"))


def test_unsupported_quantized_op_is_named(onnx_dir: Path) -> None:
    model = onnx.load(_quantized_single_op(onnx_dir, "conv_relu", "qoperator"))
    conv = next(n for n in model.graph.node if n.op_type == "QLinearConv")
    # QLinearLeakyRelu (com.microsoft), as onnxruntime's QOperator format writes a LeakyRelu after the conv
    leaky = helper.make_node("QLinearLeakyRelu", [conv.output[0], *conv.input[6:8], *conv.input[6:8]], ["leaky"],
                             name="the_leaky_relu", domain="com.microsoft", alpha=0.1)  # fmt: skip
    index = list(model.graph.node).index(conv) + 1
    model.graph.node.insert(index, leaky)
    for node in model.graph.node[index + 1 :]:
        node.input[:] = ["leaky" if i == conv.output[0] else i for i in node.input]
    with pytest.raises(UnsupportedOpError, match=r"QLinearLeakyRelu \(node 'the_leaky_relu'\)"):
        tvmq.load_quantized(model)


def test_dynamic_quantization_is_refused(onnx_dir: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    model, _ = models.float_model("matmul_add")
    src, out = onnx_dir / "dynamic.float.onnx", onnx_dir / "dynamic.onnx"
    onnx.save(model, src)
    quantize_dynamic(str(src), str(out))
    with pytest.raises(UnsupportedOpError, match=r"dynamically quantized.*(MatMulInteger|DynamicQuantizeLinear).*"
                                                 r"quantize_static"):  # fmt: skip
        tvmq.load_quantized(out)


def test_damaged_files_are_refused(tmp_path: Path) -> None:
    data = (DATA / "digits.qdq.onnx").read_bytes()
    for damaged in (data[: len(data) // 3], data[:100], b"\x08\x07garbage" * 50):
        with pytest.raises(ModelLoadError):
            tvmq.load_quantized(damaged)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        tvmq.load_quantized(truncated)
    with pytest.raises(ModelLoadError, match="does not exist"):
        tvmq.load_quantized(tmp_path / "missing.onnx")
