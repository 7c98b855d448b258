"""Codebooks for non-linear quantization: builders, degenerate tensors, integer snapping and index packing."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tvmq.schedules.codebook import pack_rows, slot_bits, unpack_rows

from tvmq.errors import ConfigError, InvalidTensorError
from tvmq.quant import codebooks as cb
from tvmq.quant.qparams import activation_qparams, quantize_weights

SCHEMES = list(cb.BUILDERS)
RNG = np.random.default_rng(0)
DISTRIBUTIONS = {
    "normal": RNG.normal(size=3000),
    "laplace": RNG.laplace(size=3000),
    "bimodal": np.concatenate((RNG.normal(-3, 0.5, 1500), RNG.normal(2, 1.0, 1500))),
    "heavy_tailed": RNG.standard_t(2, size=3000),
}
FAST = settings(max_examples=40, deadline=None)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
tensors = arrays(np.float64, st.integers(1, 200), elements=finite) | arrays(
    np.float64, st.integers(1, 200), elements=st.sampled_from([0.0, -1.5, 0.25, 3.0])
)  # the second kind has ties and few distinct values


def mse(x: np.ndarray, book: cb.Codebook) -> float:
    return float(np.mean((x - book.decode(book.assign(x))) ** 2))


def assert_clean(levels: np.ndarray, data: np.ndarray, bits: int) -> None:
    """Sorted, unique, finite, at most 2^bits, and every level is the nearest one of some value (no empty bin)."""
    assert levels.dtype == np.float64 and levels.ndim == 1
    assert 1 <= levels.size <= 2**bits
    assert np.all(np.isfinite(levels)) and np.all(np.diff(levels) > 0)
    used = np.unique(cb.Codebook(levels, bits).assign(data))
    assert used.size == levels.size


# ---------------------------------------------------------------------------------------------- builders


@FAST
@given(data=tensors, bits=st.integers(1, 8), scheme=st.sampled_from(SCHEMES))
def test_levels_sorted_unique_and_every_bin_used(data, bits, scheme):
    assert_clean(cb.BUILDERS[scheme](data, bits), data, bits)


@FAST
@given(data=arrays(np.float64, st.integers(1, 300), elements=finite), bits=st.integers(1, 8))
def test_quantile_bins_hold_equal_counts(data, bits):
    bins = cb.equal_population_bins(np.sort(data), 2**bits)
    sizes = [b.size for b in bins]
    assert max(sizes) - min(sizes) <= 1 and len(bins) == min(2**bits, data.size)
    np.testing.assert_array_equal(np.concatenate(bins), np.sort(data))


def test_quantile_gives_a_point_mass_its_own_level_and_splits_the_rest_equally():
    """ReLU outputs: 60% exact zeros. Plain equal-population bins would spend 5 of 8 levels on the zeros."""
    data = np.sort(np.concatenate((np.zeros(600), RNG.exponential(size=400))))
    groups = cb.quantile_groups(data, 8)
    assert [g.size for g in groups] == [600, 58, 57, 57, 57, 57, 57, 57]
    levels = cb.quantile_levels(data, 3)
    assert levels.size == 8 and levels[0] == 0.0
    np.testing.assert_allclose(levels[1:], [g.mean() for g in groups[1:]])


@pytest.mark.parametrize("center", ["mean", "median"])
def test_quantile_levels_are_bin_centers(center):
    data = DISTRIBUTIONS["laplace"]
    reduce = np.mean if center == "mean" else np.median
    expected = [reduce(b) for b in cb.equal_population_bins(np.sort(data), 16)]
    np.testing.assert_allclose(cb.quantile_levels(data, 4, center=center), expected, rtol=1e-12)


def test_one_bit_quantile_is_the_means_of_the_halves_and_kmeans_refines_it():
    data = DISTRIBUTIONS["bimodal"]
    low, high = np.split(np.sort(data), 2)
    np.testing.assert_allclose(cb.quantile_levels(data, 1), [low.mean(), high.mean()])
    kmeans = cb.build_codebook(data, 1, "kmeans")
    assert kmeans.size == 2 and mse(data, kmeans) <= mse(data, cb.build_codebook(data, 1, "quantile"))


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
@pytest.mark.parametrize("bits", range(1, 9))
def test_kmeans_never_worse_than_quantile(name, bits):
    data = DISTRIBUTIONS[name]
    assert mse(data, cb.build_codebook(data, bits, "kmeans")) <= mse(data, cb.build_codebook(data, bits, "quantile"))


@FAST
@given(data=tensors, bits=st.integers(1, 6))
def test_kmeans_never_worse_than_quantile_on_any_tensor(data, bits):
    assert mse(data, cb.build_codebook(data, bits, "kmeans")) <= mse(data, cb.build_codebook(data, bits, "quantile"))


def test_kmeans_is_a_lloyd_fixed_point():
    """Converged levels are the means of their cells (the Lloyd-Max optimality condition)."""
    data = DISTRIBUTIONS["normal"]
    book = cb.build_codebook(data, 3, "kmeans")
    idx = book.assign(data)
    np.testing.assert_allclose(book.levels, [data[idx == i].mean() for i in range(book.size)], atol=1e-6)


def test_non_uniform_codebooks_beat_uniform_at_4_bits_on_laplace():
    """The premise of the feature. (Quantile does not beat the MSE-clipped uniform grid: see the report.)"""
    data = RNG.laplace(size=10_000)
    errors = {s: mse(data, cb.build_codebook(data, 4, s)) for s in SCHEMES}
    assert errors["quantile"] < errors["uniform"] and errors["kmeans"] < errors["uniform"]
    assert errors["kmeans"] < mse(data, cb.build_codebook(data, 4, "uniform", observer="mse"))
    assert errors["kmeans"] == min(errors.values())


def test_pow2_levels_are_powers_of_two_of_alpha():
    for bits in range(2, 9):
        levels = cb.pow2_levels(DISTRIBUTIONS["laplace"], bits)
        ratios = np.abs(levels[levels != 0]) / np.max(np.abs(levels))
        np.testing.assert_array_equal(np.log2(ratios), np.round(np.log2(ratios)))
        assert np.count_nonzero(levels > 0) <= 2 ** (bits - 1) - 1
        assert 0.0 in levels or bits >= 5  # from 5 bits alpha * 2^-14 is nearer to every small value than 0 is


@pytest.mark.parametrize("bits", range(2, 9))
def test_apot_levels_are_sums_of_few_powers_of_two(bits):
    """level = alpha * S / S_max with S a sum of at most n = ceil((b-1)/2) distinct powers of two."""
    data = DISTRIBUTIONS["laplace"]
    levels = cb.apot_levels(data, bits, alpha=3.0)
    terms = max(1, -(-(bits - 1) // 2))
    s_max = sum(2.0**-i for i in range(terms))
    sums = np.abs(levels) / 3.0 * s_max * 2.0**40
    np.testing.assert_allclose(sums, np.round(sums), atol=1e-3)
    assert max(bin(int(round(s))).count("1") for s in sums) <= terms
    assert levels[0] == -3.0 and levels[-1] == 3.0
    if bits <= 4:  # symmetric; at more bits some levels of the symmetric set go unused and are dropped
        np.testing.assert_array_equal(levels, -levels[::-1])
    searched = cb.build_codebook(data, bits, "apot")
    assert mse(data, searched) <= mse(data, cb.build_codebook(data, bits, "apot", alpha=3.0))


def test_unsigned_levels_for_non_negative_data():
    data = np.abs(DISTRIBUTIONS["laplace"])
    for scheme in ("pow2", "apot", "uniform"):
        levels = cb.BUILDERS[scheme](data, 3)
        assert levels.min() >= 0 and levels.size > 4  # all codes on the positive side
    assert cb.pow2_levels(data, 3, signed=True).min() >= 0  # negative levels of the symmetric set were never used


def test_kmeans_ends_on_values_a_few_ulps_apart():
    """Clusters of values 1e-13 apart near 1e3 (a few ulps): splitting a cell yields means that round onto existing
    levels. k-means used to loop forever there (hypothesis found it in a test run); it must end, each value on a
    level within 1e-9. An alarm turns a hang into a failure."""

    def hang(*_):
        raise TimeoutError("kmeans did not end within 30 s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(30)
    try:
        _kmeans_on_close_values()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _kmeans_on_close_values() -> None:
    rng = np.random.default_rng(3)
    base = rng.uniform(-1e3, 1e3, 5)
    for bits in (5, 6, 8):
        data = rng.choice(base, 60) + rng.choice([0, 1e-13, 2e-13, 1e-12], 60)
        book = cb.build_codebook(data, bits, "kmeans")
        assert book.levels.size <= np.unique(data).size
        np.testing.assert_allclose(book.levels[book.assign(data)], data, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------------ Codebook


@FAST
@given(data=tensors, x=arrays(np.float64, st.integers(0, 50), elements=finite), bits=st.integers(1, 8))
def test_assign_is_the_nearest_level(data, x, bits):
    book = cb.build_codebook(data, bits, "kmeans")
    distance = np.abs(x[:, None] - book.levels[None, :])
    idx = book.assign(x)
    assert idx.dtype == np.uint8 and idx.shape == x.shape
    np.testing.assert_array_equal(distance[np.arange(x.size), idx], distance.min(axis=1, initial=np.inf))
    unique_best = np.sum(distance == distance.min(axis=1, keepdims=True), axis=1) == 1
    np.testing.assert_array_equal(idx[unique_best], np.argmin(distance, axis=1)[unique_best])


def test_assign_ties_go_to_the_lower_index_and_thresholds_are_midpoints():
    book = cb.Codebook(np.array([-1.0, 0.0, 2.0]), 2)
    np.testing.assert_array_equal(book.thresholds, [-0.5, 1.0])
    np.testing.assert_array_equal(book.assign(np.array([-0.5, 1.0, 1.0000001, -9.0, 9.0])), [0, 1, 2, 0, 2])
    np.testing.assert_array_equal(book.decode(np.array([[2, 0]])), [[2.0, -1.0]])


def test_codebook_validates_levels_and_indices():
    with pytest.raises(ConfigError, match="strictly increasing"):
        cb.Codebook(np.array([1.0, 0.0]), 2)
    with pytest.raises(ConfigError, match="1..4 entries"):
        cb.Codebook(np.arange(5.0), 2)
    book = cb.Codebook(np.array([0.0, 1.0]), 1)
    with pytest.raises(ConfigError, match=r"indices must be integers in \[0, 2\)"):
        book.decode(np.array([2]))
    assert book == cb.Codebook(np.array([0.0, 1.0]), 1) and hash(book) == hash(cb.Codebook([0.0, 1.0], 1))


# --------------------------------------------------------------------------------------- degenerate inputs


@pytest.mark.parametrize("scheme", SCHEMES)
def test_degenerate_tensors_collapse(scheme):
    np.testing.assert_array_equal(cb.BUILDERS[scheme](np.zeros((3, 4)), 4), [0.0])
    np.testing.assert_array_equal(cb.BUILDERS[scheme](np.full(9, -0.3), 8), [-0.3])
    three = np.repeat([-1.0, 0.0, 2.5], [40, 30, 30])
    assert_clean(cb.BUILDERS[scheme](three, 4), three, 4)
    assert cb.BUILDERS[scheme](three, 4).size <= 3
    binary = RNG.integers(0, 2, size=500).astype(np.float64)
    np.testing.assert_array_equal(cb.BUILDERS[scheme](binary, 8), [0.0, 1.0])


def test_kmeans_is_exact_on_few_distinct_values_and_refills_levels_on_sparse_data():
    three = np.repeat([-1.0, 0.0, 2.5], [40, 30, 30])
    np.testing.assert_array_equal(cb.kmeans_levels(three, 4), [-1.0, 0.0, 2.5])
    sparse = RNG.laplace(size=2000) * (RNG.random(2000) < 0.3)  # 70% zeros: one level, the others for the rest
    quantile = cb.quantile_levels(sparse, 4)
    assert quantile.size == 16 and 0.0 in quantile and cb.kmeans_levels(sparse, 4).size == 16


# ---------------------------------------------------------------------------------------- integer snapping


def test_snap_to_grid_gives_unique_int8_levels():
    ints, scale = cb.snap_to_grid(np.array([-2.0, -1.999, 0.001, 0.0, 1.0]))
    assert scale == 2.0 / 127 and ints.dtype == np.int8
    np.testing.assert_array_equal(ints, [-127, 0, 64])  # -1.999 joins -2, 0.001 joins 0; 63.5 rounds away
    ints, scale = cb.snap_to_grid(np.zeros(1))
    np.testing.assert_array_equal(ints, [0])
    assert scale == 1.0


def check_weight_tables(weight, bits, indices, tables, scales, mode):
    out = weight.shape[0]
    assert indices.shape == weight.shape and indices.dtype == np.uint8
    assert tables.shape == (out, 2**bits) and tables.dtype == np.int8 and scales.shape == (out,)
    assert np.all(tables >= -127) and np.all(scales > 0)
    for o in range(out):
        real = np.unique(tables[o])  # the real levels; padding repeats the last one
        np.testing.assert_array_equal(tables[o, : real.size], real)
        assert np.all(tables[o, real.size :] == real[-1]) and indices[o].max() < real.size
        if mode is True:  # pruned again after snapping: every level of a channel's own codebook is used
            assert np.unique(indices[o]).size == real.size
    if mode is not True:  # one shared table (all-zero channels aside)
        live = np.any(weight.reshape(out, -1) != 0, axis=1)
        assert np.all(tables[live] == tables[live][0])


@pytest.mark.parametrize("mode", [True, "normalized", False])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_weight_codebooks(scheme, mode):
    rng = np.random.default_rng(6)  # own generator: the outcome must not depend on which tests ran before
    weight = rng.normal(size=(6, 3, 3, 3)) * np.array([1, 0.01, 5, 0, 1, 1])[:, None, None, None]
    weight[5] = 0.7  # constant channel
    indices, tables, scales = cb.weight_codebooks(weight, 3, scheme, per_channel=mode)
    check_weight_tables(weight, 3, indices, tables, scales, mode)
    decoded = scales[:, None] * np.take_along_axis(tables, indices.reshape(6, -1).astype(np.int64), 1)
    assert np.all(decoded[3] == 0)  # the all-zero channel stays exactly zero
    if mode is not False:
        # a shared pow2/APoT table's top level is the MSE-fitted alpha, not necessarily the channel maximum
        rtol = 0.05 if mode == "normalized" and scheme in ("pow2", "apot") else 0.01
        np.testing.assert_allclose(decoded[5], 0.7, rtol=rtol)


def test_uniform_weight_codebook_at_8_bits_is_quantize_weights():
    weight = RNG.normal(size=(4, 2, 3, 3))
    indices, tables, scales = cb.weight_codebooks(weight, 8, "uniform")
    codes, expected_scales = quantize_weights(weight, 8, True, "minmax", 99.99)
    decoded = np.take_along_axis(tables, indices.reshape(4, -1).astype(np.int64), 1)
    np.testing.assert_array_equal(decoded, codes.reshape(4, -1))
    np.testing.assert_allclose(scales, expected_scales)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_activation_codebook_is_on_the_activation_grid(scheme):
    samples = np.maximum(RNG.normal(size=4000), 0)
    qp = activation_qparams(samples.min(), samples.max(), 8)
    table = cb.activation_codebook(samples, 4, scheme, qp)
    real = np.unique(table)
    assert table.shape == (16,) and table.dtype == np.int8
    np.testing.assert_array_equal(table[: real.size], real)
    assert np.all(table[real.size :] == real[-1])
    assert qp.zero_point in table  # ReLU's many zeros keep an exact zero level
    assert np.all(qp.dequantize(table) >= 0)


# ---------------------------------------------------------------------------------------------- packing


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_round_trip_every_length(bits):
    slot = slot_bits(bits)
    for count in range(1, 40):
        indices = RNG.integers(0, 2**bits, size=(3, count)).astype(np.uint8)
        packed = pack_rows(indices, bits)
        assert packed.dtype == np.uint8 and packed.shape == (3, -(-count * slot // 8))
        np.testing.assert_array_equal(unpack_rows(packed, bits, count), indices)


def test_pack_layout_low_bits_first_row_major():
    assert [slot_bits(b) for b in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    np.testing.assert_array_equal(pack_rows(np.array([[1, 2, 3, 0]]), 2), [[0b00_11_10_01]])
    np.testing.assert_array_equal(pack_rows(np.array([[5, 2, 7]]), 3), [[0x25, 0x07]])  # 3-bit stored in 4
    np.testing.assert_array_equal(pack_rows(np.array([[1, 0, 1]]), 1), [[0b101]])


def test_packing_rejects_bad_input():
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        pack_rows(np.array([[4]]), 2)
    with pytest.raises(ValueError, match="do not hold 2 indices"):
        unpack_rows(np.zeros((1, 2), np.uint8), 4, 2)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bits", [0, 9, 2.5, True, "4"])
def test_bad_bits_raise_config_error(bits):
    with pytest.raises(ConfigError, match=r"bits must be an integer in 1..8"):
        cb.build_codebook(np.ones(4), bits, "kmeans")
    with pytest.raises(ConfigError, match=r"bits must be an integer in 1..8"):
        cb.weight_codebooks(np.ones((2, 2)), bits, "kmeans")


def test_non_finite_values_raise_invalid_tensor_error():
    with pytest.raises(InvalidTensorError, match=r"my_tensor holds 1 NaN/Inf value\(s\) \(first at flat index 2\)"):
        cb.build_codebook(np.array([0.0, 1.0, np.nan]), 2, "quantile", name="my_tensor")
    weight = np.ones((3, 4))
    weight[1, 2] = np.inf
    with pytest.raises(InvalidTensorError, match="weight holds 1 NaN/Inf"):
        cb.weight_codebooks(weight, 2, "kmeans")
    with pytest.raises(InvalidTensorError, match="empty"):
        cb.build_codebook(np.zeros(0), 2, "kmeans")


def test_bad_scheme_options_and_modes_raise_config_error():
    with pytest.raises(ConfigError, match=r"unknown codebook scheme 'lloyd'; choose one of \['uniform'"):
        cb.build_codebook(np.ones(4), 2, "lloyd")
    with pytest.raises(ConfigError, match=r"'quantile' has no option\(s\) \['iters'\]; its options are \['center'\]"):
        cb.build_codebook(np.ones(4), 2, "quantile", iters=3)
    with pytest.raises(ConfigError, match="center must be 'mean' or 'median'"):
        cb.build_codebook(np.arange(4.0), 2, "quantile", center="mode")
    with pytest.raises(ConfigError, match="option alpha must be a positive finite number"):
        cb.build_codebook(np.arange(4.0), 2, "pow2", alpha=-1.0)
    with pytest.raises(ConfigError, match="per_channel must be True, False or 'normalized'"):
        cb.weight_codebooks(np.ones((2, 2)), 2, "kmeans", per_channel="yes")
