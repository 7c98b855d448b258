"""End-to-end: the example models quantized to int8 keep their accuracy, and integer == simulated within 1 LSB."""

from __future__ import annotations

import numpy as np
import pytest

import tvmq


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs.reshape(len(outputs), -1), axis=1) == labels))


def test_digits_int8_accuracy_within_half_a_point(digits, digits_int8):
    float_acc = accuracy(digits_int8.run_float(digits.x_test), digits.y_test)
    assert float_acc == pytest.approx(digits.float_accuracy)  # the normalised graph is the trained model
    host_acc = accuracy(digits_int8.predict(digits.x_test), digits.y_test)
    assert host_acc >= digits.float_accuracy - 0.005


def test_basicmotions_int8_accuracy_within_two_points(basicmotions):
    qmodel = tvmq.quantize(basicmotions.model_path, basicmotions.calibration, progress=False)
    assert accuracy(qmodel.predict(basicmotions.x_test), basicmotions.y_test) >= basicmotions.float_accuracy - 0.02
    agreement = qmodel.int_vs_simulated(basicmotions.x_test)
    assert agreement["fraction_over_1_lsb"] == 0.0


def test_integer_and_simulated_outputs_agree(digits, digits_int8):
    agreement = digits_int8.int_vs_simulated(digits.x_test)
    # Requantization rounding is the only difference; it may move an output by one step, never more.
    assert agreement["max_lsb"] <= 1
    assert agreement["fraction_exact"] > 0.8


def test_predict_is_quantize_run_int_dequantize(digits, digits_int8):
    x = digits.x_test[:8]
    codes = digits_int8.quantize_input(x)
    assert codes.dtype == np.int8 and codes.shape == (8, 1, 8, 8)
    raw = digits_int8.run_int(codes)
    assert raw.dtype == np.int8 and raw.shape == (8, 10)
    np.testing.assert_array_equal(digits_int8.dequantize_output(raw), digits_int8.predict(x))
    qp = digits_int8.output_qparams
    np.testing.assert_allclose(digits_int8.dequantize_output(raw), (raw.astype(np.float32) - qp.zero_point) * qp.scale)


def test_integer_graph_has_no_float_ops(digits_int8):
    main = digits_int8.int_mod["main"]
    assert main.params[0].ty.dtype == "int8" and main.body.body.ty.dtype == "int8"
    script = main.script()
    assert "float" not in script
    for gvar, func in digits_int8.int_mod.functions.items():
        if gvar.name_hint not in ("quantize", "dequantize") and hasattr(func, "buffer_map"):
            assert "float" not in func.script(), gvar.name_hint


def test_summary_reports_macs_bops_and_peak_memory(digits_int8):
    rows = digits_int8.layer_stats()
    convs = [r for r in rows if r["op"] == "conv2d"]
    assert [r["macs"] for r in convs] == [8 * 8 * 16 * 9, 8 * 8 * 32 * 9 * 16, 4 * 4 * 32 * 9 * 32]
    assert all(r["bops"] == r["macs"] * 64 for r in convs)
    dense = next(r for r in rows if r["op"] == "dense")
    assert dense["weight_bytes"] == 10 * 128 + 4 * 10 + 8 * 10  # int8 weights + int32 bias + multiplier/shift
    # conv2d_1 reads the 8x8x16 map while writing the 8x8x32 one: 1024 + 2048 bytes live at once.
    assert digits_int8.peak_activation_bytes() == 3072
    text = digits_int8.summary()
    assert "conv2d_1" in text and "peak activation memory: 3072 bytes" in text


def test_pow2_scales_make_requantization_shift_only(digits):
    qmodel = tvmq.quantize(digits.model_path, digits.calibration, tvmq.QuantConfig(pow2_scales=True), progress=False)
    for lp in qmodel.plan.layers:
        for qp in [*lp.inputs, lp.output]:
            assert np.log2(qp.scale) == np.round(np.log2(qp.scale))
        if lp.weight is not None:
            assert lp.multiplier is None
            assert np.all(np.log2(lp.weight_scale) == np.round(np.log2(lp.weight_scale)))
    assert accuracy(qmodel.predict(digits.x_test), digits.y_test) >= digits.float_accuracy - 0.02


@pytest.mark.parametrize("observer", ["mse", "percentile"])
def test_other_observers_keep_accuracy(digits, observer):
    config = tvmq.QuantConfig(weight_observer=observer, act_observer=observer)
    qmodel = tvmq.quantize(digits.model_path, digits.calibration[:128], config, progress=False)
    assert accuracy(qmodel.predict(digits.x_test), digits.y_test) >= digits.float_accuracy - 0.01


def test_per_layer_override_changes_only_that_layer(digits):
    config = tvmq.QuantConfig(overrides={"conv2d_1": {"weight_bits": 4}})
    qmodel = tvmq.quantize(digits.model_path, digits.calibration[:128], config, progress=False)
    bits = {lp.name: lp.config.weight_bits for lp in qmodel.plan.layers}
    assert bits["conv2d_1"] == 4 and bits["conv2d_0"] == 8 and bits["dense_0"] == 8
    w = qmodel.plan.layers[[lp.name for lp in qmodel.plan.layers].index("conv2d_1")].weight
    assert w.min() >= -7 and w.max() <= 7
    assert accuracy(qmodel.predict(digits.x_test), digits.y_test) >= digits.float_accuracy - 0.03


def test_calibration_inputs_accepted_as_iterable_and_npz(digits, tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, calibration=digits.calibration[:32])
    from_npz = tvmq.quantize(digits.model_path, path, progress=False)
    from_list = tvmq.quantize(digits.model_path, list(digits.calibration[:32]), progress=False)
    assert from_npz.plan.input == from_list.plan.input
    np.testing.assert_array_equal(from_npz.plan.layers[1].weight, from_list.plan.layers[1].weight)
