"""tvmq.ptq on small ONNX models: each algorithm improves the error it optimises over round-to-nearest, CLE keeps
the float model, the pipeline is deterministic, and bad pipelines, options and data fail with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from test_ops import _model
from tvmq.relay_passes import find_layers, normalize

import tvmq
from tvmq.frontends import load_model
from tvmq.host import HostRunner
from tvmq.ptq import REGISTRY, PTQState, known
from tvmq.ptq.bias_correction import output_shift
from tvmq.ptq.capture import float_pass, plan_of, quant_capture
from tvmq.ptq.cle import pre_activation
from tvmq.ptq.layerwise import build_problem, im2col
from tvmq.ptq.registry import options_for, resolve

FAST = {"adaround": {"iters": 300}, "adaquant": {"iters": 200}}


def _relu_model() -> object:
    """conv3x3-ReLU -> conv3x3-ReLU -> maxpool -> conv1x1-ReLU -> flatten -> dense: channel ranges spread over two
    decades, and positive biases on some channels so bias absorption has something to move."""
    rng = np.random.default_rng(0)
    spread = 10.0 ** np.linspace(-1, 1, 6)
    w0 = rng.normal(size=(6, 2, 3, 3)) * 0.4 * spread[:, None, None, None]
    b0 = np.where(np.arange(6) % 2 == 0, 3.0, 0.1) * spread
    w1 = rng.normal(size=(8, 6, 3, 3)) * 0.2 / spread[None, :, None, None]
    b1 = np.linspace(4.0, 6.0, 8)
    w2 = rng.normal(size=(8, 8, 1, 1)) * 0.4
    b2 = np.full(8, 1.0)
    w3 = rng.normal(size=(5, 72)) * 0.2
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    inits = {"w0": w0, "b0": b0, "w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": np.zeros(5)}
    return _model(nodes, [("x", [1, 2, 6, 6])], [("y", None)], inits)


def _depthwise_model() -> object:
    """conv-ReLU6 -> depthwise 3x3-ReLU -> pointwise-ReLU -> global average pool -> dense (a DS-CNN block)."""
    rng = np.random.default_rng(1)
    spread = 10.0 ** np.linspace(-1, 1, 8)
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c0", "lo", "hi"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    inits = {
        "w0": rng.normal(size=(8, 3, 3, 3)) * 0.3 * spread[:, None, None, None], "b0": 0.1 * spread,
        "w1": rng.normal(size=(8, 1, 3, 3)) * 0.5 / spread[:, None, None, None], "b1": np.full(8, 0.5),
        "w2": rng.normal(size=(12, 8, 1, 1)) * 0.4, "b2": np.full(12, 0.3),
        "w3": rng.normal(size=(4, 12)) * 0.5, "b3": np.zeros(4), "lo": np.float32(0.0), "hi": np.float32(6.0),
    }  # fmt: skip
    return _model(nodes, [("x", [1, 3, 8, 8])], [("y", None)], inits)


MODELS = {"relu": (_relu_model, (2, 6, 6)), "depthwise": (_depthwise_model, (3, 8, 8))}


def _data(kind: str, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *MODELS[kind][1])).astype(np.float32)


def _state(kind: str, config: tvmq.QuantConfig, n: int = 128) -> PTQState:
    mod = normalize()(load_model(MODELS[kind][0]()))
    return PTQState(mod, find_layers(mod["main"]), config, _data(kind, n, 0))


def _step(state: PTQState, name: str, **fields) -> PTQState:
    """One registered step on ``state`` (whose cached float statistics and capture module it reuses)."""
    config = state.config.replace(ptq=[name], **fields)
    state = state.replace(config=config)
    return REGISTRY[resolve(name)[0]].run(state, options_for(name, config.ptq_options))


@pytest.fixture(scope="module")
def relu_w3a4() -> PTQState:
    """The ReLU model at W3A4 with its float statistics and compiled capture module, shared by the tests."""
    state = _state("relu", tvmq.QuantConfig(weight_bits=3, act_bits=4, ptq_options=FAST))
    state, _ = quant_capture(state)
    return state


def _runner_outputs(mod, *batches: np.ndarray) -> list[np.ndarray]:
    runner = HostRunner(mod)
    return [np.concatenate([runner.run("main", s[None]) for s in x]) for x in batches]


# -- framework ----------------------------------------------------------------------------------------------------
def test_im2col_reproduces_every_conv_and_dense() -> None:
    """The rows every layer-wise objective is built on: im2col rows times the weight are the layer's output."""
    for kind in MODELS:
        state = _state(kind, tvmq.QuantConfig(), n=8)
        pre = [pre_activation(layer) for layer in state.weighted]
        state, stats = float_pass(state, extra=pre)
        for layer, var in zip(state.weighted, pre, strict=True):
            cols = im2col(stats.values[layer.inputs[0]], layer)  # (G, rows, K)
            w = layer.weight.reshape(cols.shape[0], -1, cols.shape[2])
            out = np.einsum("grk,gok->rgo", cols, w).reshape(cols.shape[1], -1) + layer.bias
            np.testing.assert_allclose(out, stats.values[var].reshape(out.shape), rtol=1e-4, atol=1e-4)


def test_objective_is_the_direct_output_error(relu_w3a4: PTQState) -> None:
    """The second-moment form of the objective equals the mean squared output error computed row by row."""
    state, stats = float_pass(relu_w3a4)
    state, capture = quant_capture(state)
    inputs = capture.run(plan_of(state, stats.observers), state.samples)
    layer = state.weighted[1]
    x, xq = stats.values[layer.inputs[0]], inputs[layer.name]
    scales = np.abs(layer.weight).reshape(len(layer.weight), -1).max(axis=1) / 3
    problem = build_problem(layer, x, xq, scales, 3, 1 << 20, np.random.default_rng(0))
    wq = problem.dequantize(problem.grid.nearest(problem.weight / scales[:, None]))
    direct = np.mean((im2col(x, layer)[0] @ problem.weight.T - im2col(xq, layer)[0] @ wq.T) ** 2)
    assert problem.loss(wq) == pytest.approx(direct, rel=1e-6)


def test_algorithms_are_registered_in_pipeline_order() -> None:
    assert known() == ["cle", "minmax_init", "mse_init", "percentile_init", "adaquant", "adaround", "bitsplit", "gptq",
                       "lsq", "bias_correction", "bias_tuning"]  # fmt: skip


# -- cle ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(MODELS))
def test_cle_keeps_float_outputs_and_balances_ranges(kind: str) -> None:
    """Exact on any input without bias absorption; with it, exact where pre-activations stay above their
    calibration minimum (checked on the calibration data itself)."""
    before = _state(kind, tvmq.QuantConfig())
    after = _step(before, "cle", ptq_options={"cle": {"absorb_bias": False}})
    absorbed = _step(before, "cle")
    report = after.report["cle"]
    assert len(report) == 3  # every conv/dense pair, through pools, flatten and the depthwise layer
    held_out = _data(kind, 32, 7)
    ref, ref_held = _runner_outputs(before.float_mod, before.samples, held_out)
    for mod, batches in ((after.float_mod, (before.samples, held_out)), (absorbed.float_mod, (before.samples,))):
        for new, old in zip(_runner_outputs(mod, *batches), (ref, ref_held), strict=False):
            assert np.max(np.abs(new - old)) <= 1e-5 * np.max(np.abs(old))
    for pair in report.values():
        assert pair["balance_after"] > pair["balance_before"]
    first = (before.weighted[0].weight, after.weighted[0].weight)
    spread = [np.ptp(np.log(np.abs(w).reshape(len(w), -1).max(axis=1))) for w in first]
    # per-channel ranges of the first layer more equal (less so behind ReLU6, whose channels near 6 stay put)
    assert spread[1] < {"relu": 0.5, "depthwise": 0.8}[kind] * spread[0]
    if kind == "relu":
        assert absorbed.report["cle"]["conv2d_1->conv2d_2"]["max_absorbed"] > 0.1  # ReLU, max pool, 1x1 conv
        assert absorbed.report["cle"]["conv2d_0->conv2d_1"]["max_absorbed"] == 0.0  # padded 3x3: border error
        assert report["conv2d_1->conv2d_2"]["max_absorbed"] == 0.0


# -- initialisation -----------------------------------------------------------------------------------------------
def test_mse_init_lowers_weight_and_activation_error(relu_w3a4: PTQState) -> None:
    """Summed squared weight error and mean squared activation error (every quantized tensor's calibration values)
    of the plans after minmax_init and mse_init."""
    state, stats = float_pass(relu_w3a4)
    errors = {}
    for init in ("minmax_init", "mse_init"):
        after = _step(state, init)
        assert after.config.weight_observer == after.config.act_observer == init.split("_")[0]
        plan = plan_of(after, stats.observers)
        w_err = sum(float(np.sum((lp.dequantized_weight() - layer.weight) ** 2))
                    for layer, lp in zip(after.layers, plan.layers, strict=True) if lp.weight is not None)  # fmt: skip
        a_err = 0.0
        for layer, lp in zip(after.layers, plan.layers, strict=True):
            values = stats.observers[layer.output].values()
            a_err += float(np.mean((lp.output.dequantize(lp.output.quantize(values)) - values) ** 2))
        errors[init] = (w_err, a_err)
    assert errors["mse_init"][0] < errors["minmax_init"][0]
    assert errors["mse_init"][1] < errors["minmax_init"][1]


# -- rounding -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["adaround", "gptq", "adaquant"])
def test_rounding_lowers_the_layer_error(relu_w3a4: PTQState, algorithm: str) -> None:
    state = _step(relu_w3a4, algorithm)
    report = state.report[algorithm]
    assert set(report) == {layer.name for layer in state.weighted}
    for name, row in report.items():
        assert row["loss"] < row["rtn_loss"], name
    # independent of the second moments: the first layer's output error from the rows themselves
    layer = state.weighted[0]
    state, stats = float_pass(state)
    state, capture = quant_capture(state)
    xq = capture.run(plan_of(state, stats.observers), state.samples)[layer.name]
    cols, qcols = im2col(stats.values[layer.inputs[0]], layer)[0], im2col(xq, layer)[0]
    codes, scales = state.rounded[layer.name]
    w = layer.weight.reshape(len(layer.weight), -1)
    rtn = np.clip(np.round(w / scales[:, None]), -3, 3)

    def error(c: np.ndarray) -> float:
        return float(np.mean((cols @ w.T - qcols @ (c.reshape(len(c), -1) * scales[:, None]).T) ** 2))

    assert error(codes) < error(rtn)


def test_rounding_is_deterministic_and_seeded(relu_w3a4: PTQState) -> None:
    """Same seed, same integers; a different seed draws other rows when the rows are capped (max_rows)."""
    options = {"adaround": {"iters": 100, "max_rows": 256}}
    runs = [_step(relu_w3a4, "adaround", ptq_options=options, ptq_seed=s).rounded for s in (0, 0, 1)]
    for name, (codes, scales) in runs[0].items():
        np.testing.assert_array_equal(codes, runs[1][name][0])
        np.testing.assert_array_equal(scales, runs[1][name][1])
    assert any(not np.array_equal(codes, runs[2][name][0]) for name, (codes, _) in runs[0].items())


# -- bias correction ----------------------------------------------------------------------------------------------
def test_bias_correction_removes_the_output_shift(relu_w3a4: PTQState) -> None:
    """Mean pre-activation error per channel, ``E[W x + b] - E[Wq x~ + bq]``, on the final plan's own fake-quant
    model (``b``: the float model's bias, which the step leaves in place). What remains is the rounding of the
    integer bias to its grid ``s_in * s_w`` (at 8-bit activations fine enough not to hide the correction)."""
    base = relu_w3a4.replace(config=relu_w3a4.config.replace(act_bits=8))
    residual = {}
    for corrected in (False, True):
        state = _step(base, "bias_correction") if corrected else base
        state, stats = float_pass(state)
        state, capture = quant_capture(state)
        plan = plan_of(state, stats.observers)
        inputs = capture.run(plan, state.samples)
        for layer, lp, original in zip(state.layers, plan.layers, base.layers, strict=True):
            if lp.weight is not None:
                shift = output_shift(layer, stats.values[layer.inputs[0]], inputs[layer.name], lp.dequantized_weight())
                error = shift + original.bias - lp.dequantized_bias()
                half_step = 0.5 * lp.inputs[0].scale * lp.weight_scale  # the integer bias rounds to this
                residual[(corrected, layer.name)] = (float(np.mean(np.abs(error))), float(np.mean(half_step)))
    for (corrected, name), (value, rounding) in residual.items():
        if corrected:
            assert value < 0.1 * residual[(False, name)][0] + rounding, name


def test_bias_correction_gives_a_bias_to_layers_without_one() -> None:
    """A conv without a bias gets a zero one in an equal float model, then its correction."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Flatten", ["r0"], ["f"]), helper.make_node("MatMul", ["f", "w1"], ["y"])]  # fmt: skip
    model = _model(nodes, [("x", [1, 1, 4, 4])], [("y", None)], {"w0": rng.normal(size=(4, 1, 3, 3)),
                                                                 "w1": rng.normal(size=(64, 3))})  # fmt: skip
    mod = normalize()(load_model(model))
    state = PTQState(mod, find_layers(mod["main"]), tvmq.QuantConfig(weight_bits=2), _data_of((1, 4, 4), 32))
    assert all(layer.bias is None for layer in state.weighted)
    after = _step(state, "bias_correction")
    assert all(layer.bias is not None and np.any(layer.bias != 0) for layer in after.weighted)
    (ref,), (new,) = _runner_outputs(state.float_mod, state.samples), _runner_outputs(after.float_mod, state.samples)
    np.testing.assert_array_equal(new, ref)


def _data_of(shape: tuple[int, ...], n: int) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(n, *shape)).astype(np.float32)


# -- the accuracy targets on the digits CNN ---------------------------------------------------------------
def test_digits_pipeline_meets_w4a4_and_w3a3_targets(digits) -> None:
    """CLE, MSE ranges and AdaRound; tvmq's integer-only model on the whole test split: W4A4 within 1 point of
    float, W3A3 within 3 and over a point above round-to-nearest with MinMax ranges (bench/ptq_study.py over 5
    seeds: 99.29, 99.11 and 96.36; float 99.33)."""

    def accuracy(config: tvmq.QuantConfig) -> float:
        q = tvmq.quantize(digits.model_path, digits.calibration, config, progress=False)
        return float(np.mean(np.argmax(q.predict(digits.x_test), axis=1) == digits.y_test))

    pipeline = ["cle", "mse_init", "opt_round"]
    got = {}
    for (w, a), allowed in (((4, 4), 0.01), ((3, 3), 0.03)):
        got[w, a] = accuracy(tvmq.QuantConfig(weight_bits=w, act_bits=a, ptq=pipeline, ptq_options=FAST))
        assert got[w, a] >= digits.float_accuracy - allowed, got
    rtn = accuracy(tvmq.QuantConfig(weight_bits=3, act_bits=3))
    assert rtn < got[3, 3] - 0.01, (rtn, got)
