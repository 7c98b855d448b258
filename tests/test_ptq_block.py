"""Block-wise reconstruction (BRECQ), QDrop, LSQ (opt_qparam), BitSplit (opt_bits) and end-to-end bias tuning on
small ONNX models: the numpy graph they differentiate through matches TVM, each lowers the error it optimises
compared with round-to-nearest, block-wise beats layer-wise on the block output, and bad blocks are refused."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from test_ops import _model
from test_ptq import FAST, _data, _depthwise_model, _step
from tvmq.relay_passes import find_layers, normalize

import tvmq
from tvmq.errors import ConfigError
from tvmq.frontends import load_model
from tvmq.ptq import PTQState
from tvmq.ptq.bitsplit import _codes, planes_of
from tvmq.ptq.blocks import find_blocks
from tvmq.ptq.blockwise import BlockProblem
from tvmq.ptq.capture import float_pass, plan_of, quant_capture
from tvmq.ptq.layerwise import Grid
from tvmq.ptq.npgraph import Graph, plan_quantizers, run_model
from tvmq.quant.qparams import quantize_weights

BLOCK_FAST = {"adaround": {"iters": 200, "batch_size": 16}, "adaquant": {"iters": 150, "batch_size": 16},
              "lsq": {"iters": 100, "batch_size": 16}, "bias_tuning": {"iters": 150, "batch_size": 16}}  # fmt: skip


def _residual_model() -> object:
    """conv3x3-ReLU -> [conv3x3-ReLU -> conv3x3] + identity -> ReLU -> avg pool -> flatten -> dense."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r0"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    inits = {"w0": rng.normal(size=(6, 2, 3, 3)) * 0.4, "b0": np.full(6, 0.2),
             "w1": rng.normal(size=(6, 6, 3, 3)) * 0.25, "b1": np.full(6, 0.1),
             "w2": rng.normal(size=(6, 6, 3, 3)) * 0.25, "b2": np.zeros(6),
             "w3": rng.normal(size=(4, 54)) * 0.2, "b3": np.zeros(4)}  # fmt: skip
    return _model(nodes, [("x", [1, 2, 6, 6])], [("y", None)], inits)


def _res_data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2, 6, 6)).astype(np.float32)


def _res_state(config: tvmq.QuantConfig, n: int = 96) -> PTQState:
    mod = normalize()(load_model(_residual_model()))
    return PTQState(mod, find_layers(mod["main"]), config, _res_data(n, 0))


@pytest.fixture(scope="module")
def res_w2a4() -> PTQState:
    state = _res_state(tvmq.QuantConfig(weight_bits=2, act_bits=4, ptq_options={**FAST, **BLOCK_FAST}))
    state, _ = quant_capture(state)
    return state


# -- the numpy graph ----------------------------------------------------------------------------------------------
def test_numpy_graph_is_tvms_float_and_fake_quant_model() -> None:
    """Float outputs to 1e-5, and the fake-quant simulation (``QuantizedModel.simulate``) exactly, on the residual
    model (avg pool, add) and the depthwise one (clip, global average pool)."""
    for model, x in ((_residual_model(), _res_data(16, 1)), (_depthwise_model(), _data("depthwise", 16, 1))):
        q = tvmq.quantize(model, x, tvmq.QuantConfig(weight_bits=3, act_bits=4), progress=False)
        var, out = q.float_mod["main"].params[0], q.layers[-1].output
        np.testing.assert_allclose(run_model(q.layers, var, x)[out], q.run_float(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(run_model(q.layers, var, x, q.plan)[out], q.simulate(x), rtol=1e-6, atol=1e-6)


def test_numpy_gradients_match_finite_differences() -> None:
    mod = normalize()(load_model(_residual_model()))
    layers = find_layers(mod["main"])
    graph, var = Graph(layers), mod["main"].params[0]
    x = _res_data(3, 2).astype(np.float64)
    weights = {layer.name: layer.weight.astype(np.float64) for layer in layers if layer.weight is not None}
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(3, 4))

    def loss(w: dict, x_: np.ndarray) -> float:
        return float(np.sum(graph.forward({var: x_}, w, keep=False).values[graph.outputs[0]] * probe))

    tape = graph.forward({var: x}, weights)
    grads = graph.backward(tape, {graph.outputs[0]: probe})
    eps = 1e-5
    for name, w in weights.items():
        for _ in range(3):
            idx = tuple(int(rng.integers(0, s)) for s in w.shape)
            up, down = {k: v.copy() for k, v in weights.items()}, {k: v.copy() for k, v in weights.items()}
            up[name][idx] += eps
            down[name][idx] -= eps
            assert grads.weight[name][idx] == pytest.approx((loss(up, x) - loss(down, x)) / (2 * eps), rel=1e-3,
                                                            abs=1e-6), name  # fmt: skip
    idx = (1, 0, 2, 3)
    up, down = x.copy(), x.copy()
    up[idx] += eps
    down[idx] -= eps
    assert grads.inputs[var][idx] == pytest.approx((loss(weights, up) - loss(weights, down)) / (2 * eps), rel=1e-3)


# -- blocks -------------------------------------------------------------------------------------------------------
def test_blocks_are_found_in_the_graph() -> None:
    state = _res_state(tvmq.QuantConfig())
    (block,) = find_blocks(state.layers, state.float_mod["main"].body.body)
    assert (block.kind, [layer.name for layer in block.layers]) == ("residual", ["conv2d_1", "conv2d_2", "add_0"])
    mod = normalize()(load_model(_depthwise_model()))
    (pair,) = find_blocks(find_layers(mod["main"]), mod["main"].body.body)
    assert (pair.kind, [layer.name for layer in pair.layers]) == ("depthwise-pointwise", ["conv2d_1", "conv2d_2"])


@pytest.mark.parametrize(
    ("entry", "options", "message"),
    [
        ("adaround:block", {"blocks": [["conv2d_1", "dense_0"]]},
         "block ['conv2d_1', 'dense_0'] does not match the graph: it reads 2 tensors from outside the block "
         "(outputs of conv2d_0, reshape_0)"),
        ("adaround:block", {"blocks": [["conv2d_0", "conv2d_1"]]},
         "block ['conv2d_0', 'conv2d_1'] does not match the graph: its result must be the output of its last layer "
         "conv2d_1, used outside; layers whose outputs are used outside the block: conv2d_0, conv2d_1"),
        ("adaquant:block", {"blocks": [["conv2d_1", "conv2d_7"]]}, "block ['conv2d_1', 'conv2d_7']: unknown layer(s) "
         "['conv2d_7']; the model's layers are: transpose_0, conv2d_0"),
        ("adaround:block", {"blocks": [["add_0"]]}, "block ['add_0'] has no conv or dense layer to reconstruct"),
        ("adaround", {"blocks": [["conv2d_1", "conv2d_2", "add_0"]]}, "blocks are given but granularity is 'layer'"),
        ("lsq:block", {"blocks": [["conv2d_1", "conv2d_2", "add_0"], ["add_0", "avg_pool2d_0"]]},
         "layer add_0 is already in block 0"),
    ],
)  # fmt: skip
def test_a_block_that_does_not_match_the_graph_is_refused(entry: str, options: dict, message: str) -> None:
    config = tvmq.QuantConfig(weight_bits=3, ptq=[entry], ptq_options={entry.split(":")[0]: options})
    with pytest.raises(ConfigError) as err:
        tvmq.quantize(_residual_model(), _res_data(64, 0), config, progress=False)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("ptq", "message"),
    [
        (["gptq:block"], "'gptq:block': gptq has no block-wise form"),
        (["opt_bits:block"], "'opt_bits:block': bitsplit has no block-wise form"),
        (["adaround:blocks"], "granularity must be one of ['layer', 'block']"),
        (["opt_round", "opt_weights"], "['opt_round', 'opt_weights'] are alternative optimisation algorithms"),
        (["opt_qparm"], "unknown algorithm 'opt_qparm'; known algorithms: cle, minmax_init"),
    ],
)
def test_granularity_and_alias_errors(ptq: list, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        tvmq.QuantConfig(ptq=ptq)
    assert message in str(err.value)


def test_aliases_are_the_seed_studys_names() -> None:
    config = tvmq.QuantConfig(
        weight_bits=3, ptq=["mse_init", "opt_round:block"], ptq_options={"opt_round": {"iters": 7}}
    )
    from tvmq.ptq.registry import options_for, resolve

    assert resolve("opt_round:block") == ("adaround", {"granularity": "block"})
    assert [resolve(a)[0] for a in ("opt_weights", "opt_qparam", "opt_bits")] == ["adaquant", "lsq", "bitsplit"]
    options = options_for("opt_round:block", config.ptq_options)
    assert options["iters"] == 7 and options["granularity"] == "block"


# -- block-wise reconstruction ------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["adaround:block", "adaquant:block", "lsq:block"])
def test_block_reconstruction_lowers_the_block_error(res_w2a4: PTQState, entry: str) -> None:
    state = _step(res_w2a4, entry)
    report = state.report[entry.split(":")[0]]
    assert list(report) == ["conv2d_0", "conv2d_1..add_0", "dense_0"]
    assert report["conv2d_1..add_0"]["loss"] < report["conv2d_1..add_0"]["rtn_loss"]
    for name, row in report.items():  # the layers alone: layer-wise (AdaQuant's STE may not beat 2-bit rounding)
        assert row["loss"] <= row["rtn_loss"], (name, row)


def _block_error(state: PTQState, rounded: dict) -> float:
    """The residual block's output error with the given integer weights (round-to-nearest elsewhere)."""
    state, stats = float_pass(state, extra=[state.layers[2].inputs[0], state.layers[4].output])
    state, capture = quant_capture(state)
    current = state.replace(rounded=rounded)
    plan = plan_of(current, stats.observers)
    (block,) = find_blocks(state.layers, state.float_mod["main"].body.body)
    xq = capture.run_tensors(plan, state.samples)[block.input]
    quant = plan_quantizers(state.layers, plan, state.input_var)
    inner = {layer.output: quant[layer.output] for layer in block.layers[:-1]}
    scales, codes = {}, {}
    for layer in block.weighted:
        codes[layer.name], scales[layer.name] = rounded[layer.name] if layer.name in rounded else quantize_weights(
            layer.weight, 2, True, "minmax", 99.99)  # fmt: skip
        codes[layer.name] = codes[layer.name].reshape(len(codes[layer.name]), -1)
    problem = BlockProblem(block, stats.values[block.input], xq, stats.values[block.output], inner, scales,
                           {n: Grid.of(2) for n in scales}, np.random.default_rng(0))  # fmt: skip
    return problem.code_loss(codes)


def test_block_wise_beats_layer_wise_on_the_block_output(res_w2a4: PTQState) -> None:
    """Same inputs (conv2d_0 left round-to-nearest), same iterations: the residual block's output error after
    block-wise AdaRound is below layer-wise AdaRound's, which only sees each conv's own output."""
    blocks = {"blocks": [["conv2d_1", "conv2d_2", "add_0"]], "iters": 300, "batch_size": 32}
    layer = _step(res_w2a4, "adaround", ptq_options={"adaround": {"iters": 300}})
    block = _step(res_w2a4, "adaround:block", ptq_options={"adaround": blocks})
    pick = {"conv2d_1", "conv2d_2"}
    errors = {name: _block_error(res_w2a4, {k: v for k, v in s.rounded.items() if k in pick})
              for name, s in (("layer", layer), ("block", block))}  # fmt: skip
    errors["rtn"] = _block_error(res_w2a4, {})
    assert errors["block"] < errors["layer"] < errors["rtn"], errors


def test_block_steps_and_qdrop_are_seeded(res_w2a4: PTQState) -> None:
    options = {"adaround": {"iters": 60, "batch_size": 8, "qdrop": 0.5}}
    runs = [_step(res_w2a4, "adaround:block", ptq_options=options, ptq_seed=s) for s in (0, 0, 3)]
    for name, (codes, _) in runs[0].rounded.items():
        np.testing.assert_array_equal(codes, runs[1].rounded[name][0])
    assert any(not np.array_equal(c, runs[2].rounded[n][0]) for n, (c, _) in runs[0].rounded.items())
    for row in runs[0].report["adaround"].values():
        assert row["loss"] < row["rtn_loss"]


# -- opt_qparam (LSQ), opt_bits (BitSplit) ------------------------------------------------------------------------
def test_lsq_learns_scales_and_zero_points_that_lower_the_layer_error(res_w2a4: PTQState) -> None:
    state = _step(res_w2a4, "opt_qparam")
    report = state.report["lsq"]
    for name, row in report.items():
        assert row["loss"] < row["rtn_loss"], (name, row)
    assert set(state.act_qparams) >= {"conv2d_0", "conv2d_1", "conv2d_2"}
    stats = float_pass(state)[1]
    plan = plan_of(state, stats.observers)
    learned = {lp.name: lp.output for lp in plan.layers if lp.name in state.act_qparams}
    assert learned == state.act_qparams  # the plan takes the learned activation qparams
    for name, (codes, scales) in state.rounded.items():  # weights round-to-nearest on the learned scales
        layer = state.layer(name)
        expected = np.clip(np.round(layer.weight / scales.reshape((-1,) + (1,) * (layer.weight.ndim - 1))), -1, 1)
        np.testing.assert_array_equal(codes, expected)


def test_bitsplit_lowers_the_layer_error(res_w2a4: PTQState) -> None:
    state = _step(res_w2a4.replace(config=res_w2a4.config.replace(weight_bits=4)), "opt_bits")
    for name, row in state.report["bitsplit"].items():
        assert row["loss"] < row["rtn_loss"], (name, row)
        assert np.abs(state.rounded[name][0]).max() <= 7
    codes = np.arange(-7, 8)
    assert set(np.unique(planes_of(codes, 4))) <= {-1, 0, 1}
    np.testing.assert_array_equal(_codes(planes_of(codes, 4).astype(float)), codes)


# -- bias tuning --------------------------------------------------------------------------------------------------
def test_bias_tuning_lowers_the_output_error() -> None:
    """The fake-quant model's output MSE against the float model (TVM's simulation, held-out inputs too), before
    and after tuning; deterministic for a seed."""
    x, held_out = _res_data(96, 0), _res_data(64, 5)
    base = tvmq.QuantConfig(weight_bits=3, act_bits=3, ptq=["mse_init"], ptq_options=BLOCK_FAST)
    tuned_config = base.replace(ptq=["mse_init", "bias_tuning"])
    plain = tvmq.quantize(_residual_model(), x, base, progress=False)
    tuned = tvmq.quantize(_residual_model(), x, tuned_config, progress=False)
    again = tvmq.quantize(_residual_model(), x, tuned_config, progress=False)
    report = tuned.ptq_report["bias_tuning"]
    assert report["loss"] < report["initial_loss"]
    for data in (x, held_out):
        ref = plain.run_float(data)
        mse = {name: float(np.mean((q.simulate(data) - ref) ** 2)) for name, q in (("plain", plain), ("tuned", tuned))}
        assert mse["tuned"] < mse["plain"], mse
    for a, b in zip(tuned.plan.layers, again.plan.layers, strict=True):
        if a.bias is not None:
            np.testing.assert_array_equal(a.bias, b.bias)


def test_new_steps_refuse_too_few_samples_and_are_deterministic(res_w2a4: PTQState) -> None:
    from test_ptq import _relu_model

    from tvmq.errors import CalibrationDataError

    for ptq, need in ((["opt_bits"], 72), (["opt_round:block"], 72), (["opt_qparam"], 2)):
        with pytest.raises(CalibrationDataError, match=f"'{ptq[0]}' needs at least {need} calibration samples"):
            tvmq.quantize(_relu_model(), _data("relu", 1, 0), tvmq.QuantConfig(weight_bits=3, ptq=ptq), progress=False)
    runs = [_step(res_w2a4, "opt_qparam") for _ in range(2)]
    assert runs[0].act_qparams == runs[1].act_qparams
    for name, (codes, scales) in runs[0].rounded.items():
        np.testing.assert_array_equal(codes, runs[1].rounded[name][0])
        np.testing.assert_array_equal(scales, runs[1].rounded[name][1])
