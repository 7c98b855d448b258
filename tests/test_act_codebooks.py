"""Activation codebooks: LUT-requantize, nl_quantize, packed codes between layers, host vs QEMU bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_ops import _model, _node, _w
from test_schedules import ref_mbqm
from test_schedules import run as run_prim

import tvmq
from tvmq import schedules as S
from tvmq.errors import ConfigError
from tvmq.quant.codebooks import lut_thresholds, nl_quantize_thresholds
from tvmq.quant.fixed_point import quantize_multiplier
from tvmq.quant.plan import LUT_FINE_BITS
from tvmq.quant.qparams import INT32_MAX, INT32_MIN


def _nearest_codes(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Oracle: index of the nearest level (ties to the upper one), straight from the distances."""
    dist = np.abs(values[..., None] - levels)
    best = dist.min(axis=-1, keepdims=True)
    return (levels.size - 1 - np.argmax((dist == best)[..., ::-1], axis=-1)).astype(np.int64)


def _random_levels(rng, bits: int) -> np.ndarray:
    count = int(rng.integers(1, 2**bits + 1))
    return np.unique(rng.normal(0, 2.0, size=count).round(3))


@pytest.mark.parametrize(
    ("bits", "packed"), [(1, True), (2, True), (3, True), (4, True), (1, False), (3, False), (6, False), (8, False)]
)  # packed codes exist up to 4 bits
def test_lut_requantize_equals_float_nearest_level(bits: int, packed: bool) -> None:
    rng = np.random.default_rng([bits, packed])
    n, k, o = 5, 24, 8
    levels = _random_levels(rng, bits)
    clamp = (float(rng.uniform(-3, 0)), math.inf) if bits % 2 else (-math.inf, math.inf)
    data = rng.integers(-128, 128, size=(n, k)).astype(np.int8)
    weight = rng.integers(-127, 128, size=(o, k)).astype(np.int8)
    bias = rng.integers(-2000, 2000, size=o).astype(np.int32)
    scale = rng.uniform(1e-4, 3e-3, size=o)
    thresholds = lut_thresholds(levels, bits, scale, bias, clamp)
    table = np.pad(np.arange(levels.size), (0, 2**bits - levels.size), mode="edge").astype(np.uint8).view(np.int8)
    prim = S.qdense_primfunc((n, k), (o, k), lut_bits=bits, lut_levels=not packed)
    args = [data, weight, thresholds] + ([] if packed else [table])
    out_shape = S.packed_shape((n, o), bits) if packed else (n, o)
    out = run_prim(prim, args, out_shape, "uint8" if packed else "int8")
    codes = S.unpack_rows(out, bits, o) if packed else out.view(np.uint8)  # table = the codes (mod 256)

    acc = data.astype(np.int64) @ weight.T.astype(np.int64) + bias
    real = np.clip(acc * scale, *clamp)
    np.testing.assert_array_equal(codes, _nearest_codes(real, levels))


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_shared_lut_requantize_is_nearest_level_up_to_the_fine_grid(bits: int) -> None:
    """Above 2 bits the accumulator is first requantized onto a grid 2^8 times finer than the output's, then
    searched in one row of thresholds: the code is the float nearest level except within a fine step of a
    midpoint, and exactly the oracle's count of thresholds reached by the TFLite-rounded fine value."""
    rng = np.random.default_rng(bits)
    n, k, o = 6, 32, 8
    levels = np.unique(rng.normal(0, 1.0, size=2**bits).round(4))
    data = rng.integers(-128, 128, size=(n, k)).astype(np.int8)
    weight = rng.integers(-127, 128, size=(o, k)).astype(np.int8)
    bias = rng.integers(-2000, 2000, size=o).astype(np.int32)
    scale = rng.uniform(1e-4, 3e-3, size=o)
    fine = 0.01 / 2**LUT_FINE_BITS
    mult, shift = quantize_multiplier(scale / fine)
    thresholds = lut_thresholds(levels, bits, np.array([fine]), None)[0]
    prim = S.qdense_primfunc((n, k), (o, k), lut_bits=bits, lut_levels=True, lut_shared=True)
    table = np.pad(np.arange(levels.size), (0, 2**bits - levels.size), mode="edge").astype(np.uint8).view(np.int8)
    args = [data, weight, bias, np.int32(mult), np.int32(shift), thresholds, table]
    codes = run_prim(prim, args, (n, o)).view(np.uint8)

    acc = data.astype(np.int64) @ weight.T.astype(np.int64) + bias
    value = ref_mbqm(acc, np.broadcast_to(np.int32(mult), acc.shape), np.broadcast_to(np.int32(shift), acc.shape))
    np.testing.assert_array_equal(codes, np.sum(value[..., None] >= thresholds, axis=-1))
    real = acc * scale
    mids = (levels[:-1] + levels[1:]) / 2
    near = np.any(np.abs(real[..., None] - mids) <= 2 * fine, axis=-1)
    np.testing.assert_array_equal(codes[~near], _nearest_codes(real, levels)[~near])
    assert near.mean() < 0.05


def test_lut_thresholds_edges() -> None:
    levels = np.array([0.0, 1.0, 3.0])
    t = lut_thresholds(levels, 2, np.array([0.5]), np.array([4]), clamp=(0.6, 1.5))
    # midpoint 0.5 lies below the clamp (always reached), 2.0 above it (never), the unused slot is never reached
    np.testing.assert_array_equal(t, [[INT32_MIN, INT32_MAX, INT32_MAX]])
    t = lut_thresholds(levels, 2, np.array([0.5]), np.array([4]))
    np.testing.assert_array_equal(t, [[1 - 4, 4 - 4, INT32_MAX]])  # acc >= ceil(mid / scale) - bias
    assert np.all(lut_thresholds(np.array([0.7]), 3, np.ones(2)) == INT32_MAX)  # one level: always code 0
    with pytest.raises(ConfigError, match="distinct ascending"):
        lut_thresholds(np.array([1.0, 1.0]), 2, np.ones(1))


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_nl_quantize_equals_nearest_level(bits: int) -> None:
    rng = np.random.default_rng(bits)
    levels = _random_levels(rng, bits)
    table = np.pad(np.arange(levels.size) * 3 - 60, (0, 2**bits - levels.size), mode="edge").astype(np.int8)
    x = rng.normal(0, 3.0, size=(4, 50)).astype(np.float32)
    x[0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    out = run_prim(S.nl_quantize_primfunc(x.shape, bits=bits), [x, nl_quantize_thresholds(levels, bits), table],
                   x.shape)  # fmt: skip
    expected = table[_nearest_codes(np.clip(np.nan_to_num(x.astype(np.float64)), -1e6, 1e6), levels)]
    expected[0, 0] = table[0]  # NaN reaches no threshold
    mids = (levels[:-1] + levels[1:]) / 2
    near_tie = np.any(np.abs(x[..., None] - mids) < 1e-5, axis=-1)  # float32 midpoints may round either way
    np.testing.assert_array_equal(out[~near_tie], expected[~near_tie])


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_packed_codes_decode_max_pool_and_transpose(bits: int) -> None:
    rng = np.random.default_rng(bits)
    shape = (1, 5, 6, 8)
    codes = rng.integers(0, 2**bits, size=shape).astype(np.uint8)
    packed = S.pack_rows(codes.reshape(-1, shape[-1]), bits).reshape(S.packed_shape(shape, bits))
    table = np.sort(rng.integers(-128, 128, size=2**bits)).astype(np.int8)
    decoded = run_prim(S.qdecode_primfunc(shape, bits=bits), [packed, table], shape)
    np.testing.assert_array_equal(decoded, table[codes])

    prim = S.qmax_pool2d_primfunc(shape, pool=(2, 2), strides=(2, 2), code_bits=bits)
    pooled = run_prim(prim, [packed], S.packed_shape((1, 2, 3, 8), bits), "uint8")
    expected = codes[:, :4, :, :].reshape(1, 2, 2, 3, 2, 8).max(axis=(2, 4))
    np.testing.assert_array_equal(S.unpack_rows(pooled, bits, 8), expected)

    moved_shape = (1, 6, 5, 8)
    prim = S.qtranspose_primfunc(shape, axes=(0, 2, 1, 3), code_bits=bits)
    moved = run_prim(prim, [packed], S.packed_shape(moved_shape, bits), "uint8")
    np.testing.assert_array_equal(S.unpack_rows(moved, bits, 8), codes.transpose(0, 2, 1, 3))


# ------------------------------------------------------------------------------------------- whole models
def _chain_2d() -> tuple:
    """conv -> relu -> max pool (codes) -> conv (codes in and out) -> avg pool (decoded) -> flatten -> dense."""
    inits = {"w1": _w(1, 8, 3, 3, 3), "b1": _w(2, 8), "w2": _w(3, 8, 8, 1, 1), "w3": _w(4, 5, 32), "b3": _w(5, 5)}
    nodes = [
        _node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), _node("Relu", ["c1"], "r1"),
        _node("MaxPool", ["r1"], "p1", kernel_shape=[2, 2], strides=[2, 2]),
        _node("Conv", ["p1", "w2"], "c2"), _node("Relu", ["c2"], "r2"),
        _node("AveragePool", ["r2"], "p2", kernel_shape=[2, 2], strides=[2, 2]),
        _node("Flatten", ["p2"], "f"), _node("Gemm", ["f", "w3", "b3"], "y", transB=1),
    ]  # fmt: skip
    return _model(nodes, [("x", [1, 3, 8, 8])], [("y", None)], inits), (3, 8, 8)


def _chain_1d() -> tuple:
    """conv1d -> relu -> max pool 1d (codes) -> conv1d -> residual add (decoded) -> global pool -> dense."""
    inits = {"w1": _w(6, 8, 4, 3), "w2": _w(7, 8, 8, 3), "w3": _w(8, 3, 8), "b3": _w(9, 3)}
    nodes = [
        _node("Conv", ["x", "w1"], "c1", pads=[1, 1]), _node("Relu", ["c1"], "r1"),
        _node("MaxPool", ["r1"], "p1", kernel_shape=[2], strides=[2]),
        _node("Conv", ["p1", "w2"], "c2", pads=[1, 1]), _node("Add", ["c2", "p1"], "a"), _node("Relu", ["a"], "r2"),
        _node("GlobalAveragePool", ["r2"], "g"), _node("Flatten", ["g"], "f"),
        _node("Gemm", ["f", "w3", "b3"], "y", transB=1),
    ]  # fmt: skip
    return _model(nodes, [("x", [1, 4, 16])], [("y", None)], inits), (4, 16)


CHAINS = {"chain_2d": _chain_2d, "chain_1d": _chain_1d}
ACT_CONFIGS = [("quantile", 4), ("kmeans", 2), ("apot", 3), ("pow2", 1), ("quantile", 6)]


@pytest.mark.parametrize(("scheme", "bits"), ACT_CONFIGS)
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_activation_codebook_chains_on_qemu_equal_host(chain: str, scheme: str, bits: int) -> None:
    model, shape = CHAINS[chain]()
    rng = np.random.default_rng(bits)
    cfg = tvmq.QuantConfig(weight_bits=max(bits, 2), weight_scheme=scheme, act_bits=bits, act_scheme=scheme)
    q = tvmq.quantize(model, rng.normal(size=(64, *shape)).astype(np.float32), cfg, progress=False)
    assert q.plan.input_codebook is not None  # nl_quantize at the input
    packed = [cb for cb in q.plan.codebooks.values() if cb.packed]
    assert bool(packed) == (bits <= 4)  # codes travel packed between layers exactly when they fit 4 bits
    x = rng.normal(size=(10, *shape)).astype(np.float32)
    result = tvmq.qemu.run(tvmq.build(q, name=chain), x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(q.quantize_input(x)))
    np.testing.assert_array_equal(result.outputs, q.predict(x))  # the device's own nl_quantize, too


@pytest.mark.parametrize(
    ("model", "scheme", "bits", "min_accuracy"),
    [("digits", "quantile", 4, 0.95), ("digits", "kmeans", 2, 0.4), ("basicmotions", "quantile", 4, 0.85),
     ("basicmotions", "kmeans", 2, 0.5)],
)  # fmt: skip
def test_example_models_with_activation_codebooks(model: str, scheme: str, bits: int, min_accuracy: float,
                                                  request) -> None:  # fmt: skip
    example = request.getfixturevalue(model)
    cfg = tvmq.QuantConfig(weight_bits=bits, weight_scheme=scheme, act_bits=bits, act_scheme=scheme)
    q = tvmq.quantize(example.model_path, example.calibration, cfg, progress=False)
    accuracy = float(np.mean(q.predict(example.x_test).argmax(-1) == example.y_test))
    assert accuracy >= min_accuracy
    # LUT-requantize is exact nearest-level assignment, so the float simulation (snap to levels) agrees
    assert q.int_vs_simulated(example.x_test[:100])["fraction_exact"] >= 0.98
    x = example.x_test[:40]
    artifact = tvmq.build(q, name=model)
    result = tvmq.qemu.run(artifact, x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(q.quantize_input(x)))
    int8 = tvmq.build(tvmq.quantize(example.model_path, example.calibration[:32], progress=False), name=model)
    assert artifact.plan.arena_bytes < int8.plan.arena_bytes  # codes packed in the arena


def test_mixed_schemes_first_and_last_layer_int8(digits) -> None:
    layers = [r["name"] for r in tvmq.quantize(digits.model_path, digits.calibration[:8], progress=False).layer_stats()]
    weighted = [n for n in layers if n.startswith(("conv", "dense"))]
    uniform8 = {"weight_bits": 8, "act_bits": 8, "weight_scheme": "uniform", "act_scheme": "uniform"}
    cfg = tvmq.QuantConfig(weight_bits=4, weight_scheme="quantile", act_bits=4, act_scheme="quantile",
                           overrides={weighted[0]: uniform8, weighted[-1]: uniform8})  # fmt: skip
    q = tvmq.quantize(digits.model_path, digits.calibration, cfg, progress=False)
    stats = {r["name"]: r for r in q.layer_stats()}
    assert (stats[weighted[0]]["weight_bits"], stats[weighted[0]]["act_bits"]) == (8, 8)
    assert (stats[weighted[1]]["weight_bits"], stats[weighted[1]]["act_bits"]) == (4, 4)
    assert q.plan.input_codebook is None  # the first layer's setting decides the input
    assert np.mean(q.predict(digits.x_test).argmax(-1) == digits.y_test) >= 0.95
    x = digits.x_test[:20]
    result = tvmq.qemu.run(tvmq.build(q, name="mixed"), x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(q.quantize_input(x)))


def test_activation_codebook_on_an_op_that_cannot_make_one_names_it() -> None:
    model, shape = _chain_1d()
    cfg = tvmq.QuantConfig(overrides={"add_0": {"act_scheme": "kmeans"}})
    with pytest.raises(ConfigError, match=r"layer add_0 \(add\) cannot produce an activation codebook.*conv1d"):
        tvmq.quantize(model, np.zeros((4, *shape), np.float32), cfg, progress=False)


def test_unknown_act_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"act_scheme must be one of \['uniform', 'quantile'"):
        tvmq.QuantConfig(act_scheme="lloyd")


def test_constant_activations_collapse_to_one_level() -> None:
    """A ReLU that is always 0 leaves one level: no NaN, no empty bin, every code decodes to 0."""
    inits = {"w": -np.ones((8, 2, 1), np.float32), "w2": _w(3, 2, 8)}
    nodes = [_node("Conv", ["x", "w"], "c"), _node("Relu", ["c"], "r"), _node("Flatten", ["r"], "f"),
             _node("Gemm", ["f", "w2"], "y", transB=1)]  # fmt: skip
    model = _model(nodes, [("x", [1, 2, 1])], [("y", None)], inits)
    cfg = tvmq.QuantConfig(act_bits=2, act_scheme="kmeans")
    q = tvmq.quantize(model, np.abs(np.random.default_rng(0).normal(size=(32, 2, 1))).astype(np.float32), cfg,
                      progress=False)  # fmt: skip
    conv = next(lp for lp in q.plan.layers if lp.kind == "conv1d")
    cb = conv.out_codebook
    assert cb is not None and cb.levels.size == 1 and conv.output.dequantize(cb.levels)[0] == 0.0
    assert np.all(np.isfinite(q.predict(np.ones((3, 2, 1), np.float32))))


def test_quantile_center_median_is_a_config_option(digits) -> None:
    tables = {}
    for center in ("mean", "median"):
        cfg = tvmq.QuantConfig(weight_bits=3, weight_scheme="quantile", act_bits=3, act_scheme="quantile",
                               quantile_center=center)  # fmt: skip
        q = tvmq.quantize(digits.model_path, digits.calibration[:128], cfg, progress=False)
        conv = [lp for lp in q.plan.layers if lp.kind == "conv2d"][1]  # 144 weights per channel: real bins
        tables[center] = (conv.codebook.table.copy(), conv.out_codebook.table.copy())
    assert not np.array_equal(tables["mean"][0], tables["median"][0])
    assert not np.array_equal(tables["mean"][1], tables["median"][1])
    with pytest.raises(ConfigError, match="quantile_center must be one of"):
        tvmq.QuantConfig(quantile_center="mode")
