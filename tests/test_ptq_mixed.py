"""Mixed precision (``tvmq.mixed_precision``): meets its budget exactly as ``tvmq.build`` counts it, beats uniform W3
at uniform W3's flash size on digits, and refuses budgets no configuration can meet, saying the smallest reachable."""

from __future__ import annotations

import numpy as np
import pytest
from test_ptq import _data, _relu_model

import tvmq
from tvmq.cli import main
from tvmq.errors import ConfigError
from tvmq.ptq.mixed import parse_budget, search


def _accuracy(q: tvmq.QuantizedModel, example) -> float:
    return float(np.mean(np.argmax(q.predict(example.x_test), axis=1) == example.y_test))


def test_digits_mixed_precision_beats_uniform_w3_at_its_flash_size(digits) -> None:
    config = tvmq.QuantConfig(weight_bits=3)
    uniform = tvmq.quantize(digits.model_path, digits.calibration, config, progress=False)
    flash = tvmq.build(uniform).metadata["weights_bytes"]
    result = search(digits.model_path, digits.calibration, f"flash={flash}", tvmq.QuantConfig(), progress=False)
    assert result.chosen == "mixed" and result.cost <= flash
    assert result.measured["mixed"]["mse"] < result.measured["uniform w3"]["mse"]
    mixed = tvmq.quantize(digits.model_path, digits.calibration, result.config, progress=False)
    assert tvmq.build(mixed).metadata["weights_bytes"] == result.cost <= flash
    assert _accuracy(mixed, digits) > _accuracy(uniform, digits)
    assert {fields["weight_bits"] for fields in result.config.overrides.values()} != {3}


def test_an_unreachable_budget_says_the_smallest_reachable() -> None:
    x = _data("relu", 64, 0)
    with pytest.raises(ConfigError) as err:
        tvmq.mixed_precision(_relu_model(), x, "flash=100", progress=False)
    message = str(err.value)
    assert "budget flash <= 100 cannot be met: the smallest reachable flash is" in message
    smallest = float(message.split("reachable flash is ")[1].split(" ")[0].replace(",", ""))
    lowest = tvmq.QuantConfig(weight_bits=2)
    q = tvmq.quantize(_relu_model(), x, lowest, progress=False)
    assert smallest == tvmq.build(q).metadata["weights_bytes"]
    with pytest.raises(ConfigError, match="smallest reachable bops is"):
        tvmq.mixed_precision(_relu_model(), x, {"bops": 10}, progress=False)


@pytest.mark.parametrize("metric", ["bops", "arena"])
def test_bops_and_arena_budgets_are_met(metric: str) -> None:
    """BOPs (weight and activation bits) and arena (k-means activation codebooks, packed): 60% of int8's."""
    x = _data("relu", 64, 0)
    int8 = tvmq.quantize(_relu_model(), x, progress=False)
    full = {"bops": sum(r["bops"] for r in int8.layer_stats()), "arena": tvmq.build(int8).arena_bytes}[metric]
    result = search(_relu_model(), x, {metric: 0.6 * full}, progress=False, samples=64)
    assert result.cost <= 0.6 * full
    q = tvmq.quantize(_relu_model(), x, result.config, progress=False)
    got = {"bops": lambda: sum(r["bops"] for r in q.layer_stats()), "arena": lambda: tvmq.build(q).arena_bytes}
    assert got[metric]() == result.cost
    again = search(_relu_model(), x, {metric: 0.6 * full}, progress=False, samples=64)
    assert again.config == result.config  # deterministic


def test_bops_budget_of_uniform_w3a3_weighs_it_against_mixed_bits_and_keeps_the_output_at_8_bits() -> None:
    """Every uniform pair of the options is a candidate (W3A3 itself, at exactly its BOPs), the best measured wins;
    the model output is a variable like any other (a 3-bit logit vector ties), uniform only (dequantized with one
    scale), and costs no BOPs, so the mixed choice leaves it at 8 bits."""
    x = _data("relu", 64, 0)
    w3a3 = tvmq.QuantConfig(weight_bits=3, act_bits=3)
    bops = sum(r["bops"] for r in tvmq.quantize(_relu_model(), x, w3a3, progress=False).layer_stats())
    result = search(_relu_model(), x, {"bops": bops}, w3a3, progress=False, samples=64)
    assert result.measured["uniform w3 a3"]["cost"] == bops
    assert result.measured[result.chosen]["mse"] == min(row["mse"] for row in result.measured.values())
    output = {v.key: v for v in result.variables}["act:dense_0"]
    assert [bits for bits, _ in output.options] == [8, 6, 4, 3, 2]
    assert result.path[-1]["choice"]["act:dense_0"] == 0
    arena = search(_relu_model(), x, {"arena": 10**6}, progress=False, samples=64)  # codebook options elsewhere
    assert [v.options for v in arena.variables if v.key == "act:dense_0"] in ([], [[(8, "uniform")]])
    assert any(scheme == "kmeans" for v in arena.variables for _, scheme in v.options)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("flash=24KB", ("flash", 24576.0)), ("arena=2048", ("arena", 2048.0)), ("bops=1.5M", ("bops", 1.5e6)),
     (" flash = 3 KiB ", ("flash", 3072.0))],
)  # fmt: skip
def test_budget_strings(text: str, expected: tuple) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["flash", "ram=2KB", "flash=2XB", "flash=-3", "flash=0"])
def test_bad_budget_strings(text: str) -> None:
    with pytest.raises(ConfigError, match="budget"):
        parse_budget(text)


def test_cli_budget(tmp_path, capsys) -> None:
    import onnx

    model = tmp_path / "relu.onnx"
    onnx.save(_relu_model(), model)
    calib = tmp_path / "calib.npz"
    np.savez(calib, calibration=_data("relu", 64, 0))
    assert main(["quantize", str(model), "--calib", str(calib), "--budget", "flash=2KB"]) == 0
    captured = capsys.readouterr()
    assert "budget flash <= 2,048: chose" in captured.err and "dense_0" in captured.out
    assert main(["quantize", str(model), "--calib", str(calib), "--budget", "flash=10"]) == 2
    assert "smallest reachable flash is" in capsys.readouterr().err
