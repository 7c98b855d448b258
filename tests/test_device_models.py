"""Both example models on QEMU: the device's int8 outputs equal the host's, so device accuracy is host accuracy."""

from __future__ import annotations

import numpy as np
import pytest

import tvmq


@pytest.fixture(scope="module")
def basicmotions_int8(basicmotions):
    return tvmq.quantize(basicmotions.model_path, basicmotions.calibration, progress=False)


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs.reshape(len(outputs), -1), axis=1) == labels))


@pytest.mark.parametrize(
    ("model", "target", "board", "samples"),
    [
        ("digits", "c -mcpu=cortex-m4", "mps2-an386", 450),  # every test image
        ("basicmotions", "c -mcpu=cortex-m4", "mps2-an386", 240),  # every test window
        ("digits", "c -mcpu=cortex-m3", "mps2-an385", 60),  # no DSP, soft float boundary functions
        ("basicmotions", "c -mcpu=cortex-m33", "mps2-an505", 60),  # ARMv8-M, secure-world memory map
        ("basicmotions", "c -mcpu=cortex-m7", "mps2-an500", 60),
    ],
)
def test_example_model_bit_exact_on_device(model, target, board, samples, request) -> None:
    example = request.getfixturevalue(model)
    qmodel = request.getfixturevalue(f"{model}_int8")
    x, y = example.x_test[:samples], example.y_test[:samples]
    host_codes = qmodel.run_int(qmodel.quantize_input(x))
    artifact = tvmq.build(qmodel, target=target, name=model)
    result = tvmq.qemu.run(artifact, x, board=board, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, host_codes)
    assert _accuracy(result.outputs, y) == _accuracy(qmodel.dequantize_output(host_codes), y)
    assert _accuracy(result.outputs, y) >= example.float_accuracy - 0.005
    assert result.memory.arena_bytes >= artifact.plan.arena_bytes
    assert result.memory.weights_bytes >= artifact.metadata["weights_bytes"]
    # every conv/dense step is timed and does real work
    for step in result.steps:
        if step["macs"]:
            assert step["instructions"] > step["macs"], step
