"""Weights as packed b-bit indices into per-channel int8 codebooks: decode, planning, and host == QEMU."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from test_device_ops import GENERATORS
from test_ops import _model
from tvm import te
from tvmq.schedules.codebook import decode_weight, pack_rows, packed_row_bytes

import tvmq
from tvmq.errors import ConfigError

SCHEMES = ("uniform", "quantile", "kmeans", "pow2", "apot")


@pytest.mark.parametrize("bits", range(1, 9))
def test_decode_weight_matches_the_table_lookup(bits: int) -> None:
    """The TE decoder reads back exactly what pack_rows stored, for every bit width and a ragged row length."""
    rng = np.random.default_rng(bits)
    shape = (5, 3, 1, 7)  # rows of 21 indices: the last byte is partly padding at 2 and 4 bits
    indices = rng.integers(0, 2**bits, size=shape)
    table = rng.integers(-127, 128, size=(5, 2**bits)).astype(np.int8)
    packed = pack_rows(indices, bits)
    assert packed.shape == (5, packed_row_bytes(21, bits))
    p, t = te.placeholder(packed.shape, "uint8"), te.placeholder(table.shape, "int8")
    func = tvm.compile(te.create_prim_func([p, t, decode_weight(p, t, shape, bits)]), target="llvm")
    out = tvm.runtime.tensor(np.zeros(shape, np.int8))
    func(tvm.runtime.tensor(packed), tvm.runtime.tensor(table), out)
    expected = np.take_along_axis(table, indices.reshape(5, -1), axis=1).reshape(shape)
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", [2, 4])
def test_plan_weights_are_the_decoded_codebook(digits, scheme: str, bits: int) -> None:
    q = tvmq.quantize(digits.model_path, digits.calibration[:64], tvmq.QuantConfig(weight_bits=bits,
                      weight_scheme=scheme), progress=False)  # fmt: skip
    for lp in q.plan.layers:
        if lp.weight is None:
            continue
        book = lp.codebook
        assert book is not None and book.bits == bits and book.table.shape == (lp.weight.shape[0], 2**bits)
        flat = book.indices.reshape(len(book.indices), -1).astype(np.int64)
        np.testing.assert_array_equal(np.take_along_axis(book.table, flat, axis=1).reshape(lp.weight.shape), lp.weight)
        assert max(len(np.unique(row)) for row in lp.weight.reshape(len(lp.weight), -1)) <= 2**bits
    stats = q.layer_stats()
    int8 = tvmq.quantize(digits.model_path, digits.calibration[:64], progress=False).layer_stats()
    assert sum(r["weight_bytes"] for r in stats) < 0.75 * sum(r["weight_bytes"] for r in int8)


def test_codebooks_above_4_bits_store_the_decoded_int8_weights(digits) -> None:
    """A 5..8-bit index takes a byte like an int8 weight: storing it plus a table would only cost flash."""
    cfg = tvmq.QuantConfig(weight_bits=6, weight_scheme="kmeans")
    q = tvmq.quantize(digits.model_path, digits.calibration[:64], cfg, progress=False)
    int8 = tvmq.quantize(digits.model_path, digits.calibration[:64], progress=False)
    for lp in q.plan.layers:
        if lp.weight is not None:
            assert lp.codebook is None
            assert max(len(np.unique(row)) for row in lp.weight.reshape(len(lp.weight), -1)) <= 64
    assert sum(r["weight_bytes"] for r in q.layer_stats()) == sum(r["weight_bytes"] for r in int8.layer_stats())


def test_quantile_differs_from_uniform(digits) -> None:
    """A codebook scheme that silently fell back to the uniform grid would pass every other test."""
    weights = {}
    for scheme in ("uniform", "quantile"):
        cfg = tvmq.QuantConfig(weight_bits=3, weight_scheme=scheme)
        q = tvmq.quantize(digits.model_path, digits.calibration[:64], cfg, progress=False)
        weights[scheme] = q.plan.layers[1].weight
    assert np.mean(weights["uniform"] != weights["quantile"]) > 0.3


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"act_scheme": "quantil"}, "QuantConfig.act_scheme must be one of"),
        ({"weight_scheme": "lloyd"}, "weight_scheme must be one of"),
        ({"codebook_mode": "per_tensor"}, "codebook_mode must be one of"),
        ({"overrides": {"conv2d_0": {"act_scheme": "k-means"}}}, "overrides['conv2d_0'].act_scheme must be one of"),
    ],
)
def test_bad_scheme_configs(config: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        tvmq.QuantConfig(**config)
    assert message in str(err.value)


def test_codebook_with_pow2_scales_is_refused(digits) -> None:
    cfg = tvmq.QuantConfig(weight_bits=4, weight_scheme="kmeans", pow2_scales=True)
    with pytest.raises(ConfigError, match="pow2_scales=True only applies to weight_scheme='uniform'"):
        tvmq.quantize(digits.model_path, digits.calibration[:16], cfg, progress=False)


WEIGHTED_OPS = ("conv2d", "conv1d", "dense")
CODEBOOK_CONFIGS = [("quantile", 4), ("kmeans", 2), ("uniform", 1), ("apot", 3), ("pow2", 5), ("quantile", 8)]


@pytest.mark.parametrize(("scheme", "bits"), CODEBOOK_CONFIGS)
@pytest.mark.parametrize("op", WEIGHTED_OPS)
def test_codebook_ops_on_qemu_equal_host(op: str, scheme: str, bits: int) -> None:
    rng = np.random.default_rng([bits, WEIGHTED_OPS.index(op)])
    nodes, shape, inits = GENERATORS[op](rng)
    model = _model(nodes, [("x", shape)], [("y", None)], inits)
    cfg = tvmq.QuantConfig(weight_bits=bits, weight_scheme=scheme, codebook_mode="normalized" if bits == 3 else
                           "per_channel")  # fmt: skip
    q = tvmq.quantize(model, rng.normal(size=(32, *shape[1:])).astype(np.float32), cfg, progress=False)
    x = rng.normal(size=(10, *shape[1:])).astype(np.float32)
    result = tvmq.qemu.run(tvmq.build(q, name=f"cb_{op}"), x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(q.quantize_input(x)))


@pytest.mark.parametrize(
    ("model", "scheme", "bits"),
    [("digits", "quantile", 4), ("digits", "kmeans", 2), ("basicmotions", "quantile", 2), ("basicmotions", "apot", 4)],
)
def test_example_models_with_codebooks_on_qemu(model: str, scheme: str, bits: int, request) -> None:
    example = request.getfixturevalue(model)
    cfg = tvmq.QuantConfig(weight_bits=bits, weight_scheme=scheme)
    q = tvmq.quantize(example.model_path, example.calibration, cfg, progress=False)
    x = example.x_test[:60]
    artifact = tvmq.build(q, name=model)
    result = tvmq.qemu.run(artifact, x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(q.quantize_input(x)))
    int8_weights = sum(r["weight_bytes"] for r in tvmq.quantize(example.model_path, example.calibration[:32],
                                                               progress=False).layer_stats())  # fmt: skip
    assert result.memory.weights_bytes < int8_weights  # the packed indices are what reaches flash
