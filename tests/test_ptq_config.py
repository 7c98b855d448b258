"""Bad PTQ pipelines, options and data fail before any work with errors that say what is wrong; the CLI's --ptq."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_ptq import _data, _relu_model

import tvmq
from tvmq.cli import main
from tvmq.errors import CalibrationDataError, ConfigError


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ptq": ["adaroun"]}, "unknown algorithm 'adaroun'; known algorithms: cle, minmax_init, mse_init"),
        ({"ptq": "cle,adaround"}, "QuantConfig.ptq must be a list of algorithm names"),
        ({"ptq": ["cle", "cle"]}, "lists ['cle'] more than once"),
        ({"ptq": ["adaround", "cle"]}, "'cle' (pre-processing) must come before 'adaround' (optimisation)"),
        ({"ptq": ["bias_correction", "gptq"]}, "'gptq' (optimisation) must come before 'bias_correction'"),
        ({"ptq": ["adaround", "gptq"]}, "['adaround', 'gptq'] are alternative optimisation algorithms"),
        ({"ptq": ["mse_init", "minmax_init"]}, "are alternative initialisation algorithms"),
        ({"ptq_options": {"adaround": {"iter": 5}}}, "ptq_options['adaround'] has unknown option 'iter'"),
        ({"ptq_options": {"adaround": {"iters": "5"}}}, "ptq_options['adaround']['iters'] must be a int"),
        ({"ptq_options": {"gptq": {"damp": -0.1}}}, "ptq_options['gptq']['damp'] must be in [0.0, 10.0]"),
        ({"ptq_options": {"cle": {"absorb_bias": 1}}}, "ptq_options['cle']['absorb_bias'] must be a bool"),
        ({"ptq_options": {"qdrop": {}}}, "ptq_options: unknown algorithm 'qdrop'"),
        ({"ptq_seed": -1}, "QuantConfig.ptq_seed must be a non-negative int"),
        ({"ptq": ["adaround"], "weight_bits": 9}, "QuantConfig.weight_bits must be an integer in 1..8, got 9"),
        ({"ptq": ["gptq"], "act_bits": 0}, "QuantConfig.act_bits must be an integer in 1..8, got 0"),
        ({"ptq": ["gptq"], "overrides": {"dense_0": {"weight_bits": 12}}}, "overrides['dense_0'].weight_bits must be"),
    ],
)
def test_bad_pipelines_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        tvmq.QuantConfig(**fields)
    assert message in str(err.value)


def test_too_few_calibration_samples_says_how_many() -> None:
    """The dense layer reads 72 values from one row per sample: its second moment needs 72 samples."""
    config = tvmq.QuantConfig(weight_bits=4, ptq=["cle", "gptq"])
    with pytest.raises(CalibrationDataError) as err:
        tvmq.quantize(_relu_model(), _data("relu", 40, 0), config, progress=False)
    assert "'gptq' needs at least 72 calibration samples (layer dense_0 has 72 inputs per output" in str(err.value)
    assert "got 40" in str(err.value)
    with pytest.raises(CalibrationDataError, match="needs at least 72 .* got 64 .*max_calibration_samples=64"):
        tvmq.quantize(_relu_model(), _data("relu", 100, 0), config.replace(max_calibration_samples=64), progress=False)


def test_rounding_refuses_codebook_weights() -> None:
    config = tvmq.QuantConfig(weight_bits=4, ptq=["gptq"], overrides={"conv2d_1": {"weight_scheme": "kmeans"}})
    with pytest.raises(ConfigError, match="'gptq', layer conv2d_1: rounding optimisation works on the uniform grid"):
        tvmq.quantize(_relu_model(), _data("relu", 80, 0), config, progress=False)


def test_quantize_with_a_pipeline_reports_its_steps() -> None:
    x = _data("relu", 80, 0)
    config = tvmq.QuantConfig(weight_bits=4, act_bits=8, ptq=["cle", "mse_init", "gptq", "bias_correction"])
    q = tvmq.quantize(_relu_model(), x, config, progress=False)
    assert list(q.ptq_report["seconds"]) == config.ptq
    assert q.config.weight_observer == "mse" and q.config.ptq == config.ptq
    for lp in q.plan.layers:  # 4-bit weights still packed, on the 4-bit grid
        if lp.weight is not None:
            assert lp.codebook is not None and lp.codebook.bits == 4 and np.abs(lp.weight).max() <= 7


def test_cli_ptq(tmp_path, capsys) -> None:
    model = tmp_path / "relu.onnx"
    onnx.save(_relu_model(), model)
    calib = tmp_path / "calib.npz"
    np.savez(calib, calibration=_data("relu", 80, 0))
    base = ["quantize", str(model), "--calib", str(calib), "--weight-bits", "4"]
    assert main([*base, "--ptq", "cle,mse_init,gptq", "--ptq-option", "gptq.damp=0.05", "--ptq-seed", "3"]) == 0
    assert "dense_0" in capsys.readouterr().out
    assert main([*base, "--ptq", "cle,adarond"]) == 2
    assert "unknown algorithm 'adarond'; known algorithms: cle, minmax_init" in capsys.readouterr().err
    assert main([*base, "--ptq", "gptq", "--ptq-option", "damp=0.1"]) == 2
    assert "expected ALGORITHM.OPTION=VALUE" in capsys.readouterr().err
    assert main(["quantize", str(model), "--ptq", "gptq"]) == 2
    assert "--ptq runs on a float model with calibration data; give --calib" in capsys.readouterr().err
