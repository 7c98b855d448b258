"""The seed study's pipeline on the shipped digits model: 4-bit weights, at least round-to-nearest's accuracy, and
the integers it chose run bit-exactly on QEMU."""

from __future__ import annotations

import numpy as np

import tvmq

PIPELINE = ["cle", "mse_init", "adaround", "bias_correction"]


def _accuracy(q: tvmq.QuantizedModel, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(q.predict(x), axis=1) == y))


def test_digits_w4a8_pipeline_on_qemu(digits) -> None:
    config = tvmq.QuantConfig(weight_bits=4, act_bits=8)
    rtn = tvmq.quantize(digits.model_path, digits.calibration, config, progress=False)
    pipeline = config.replace(ptq=PIPELINE, ptq_options={"adaround": {"iters": 300}})
    ptq = tvmq.quantize(digits.model_path, digits.calibration, pipeline, progress=False)
    accuracy = {name: _accuracy(q, digits.x_test, digits.y_test) for name, q in (("rtn", rtn), ("ptq", ptq))}
    assert accuracy["ptq"] >= accuracy["rtn"], accuracy
    assert accuracy["ptq"] >= digits.float_accuracy - 0.005, accuracy
    for row in ptq.ptq_report["adaround"].values():
        assert row["loss"] <= row["rtn_loss"]
    changed = [lp.name for lp, lr in zip(ptq.plan.layers, rtn.plan.layers, strict=True)
               if lp.weight is not None and not np.array_equal(lp.weight, lr.weight)]  # fmt: skip
    assert changed  # the pipeline's own integers, not round-to-nearest's

    x = digits.x_test[:40]
    result = tvmq.qemu.run(tvmq.build(ptq, name="digits_ptq"), x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, ptq.run_int(ptq.quantize_input(x)))
    weights = sum(r["weight_bytes"] for r in ptq.layer_stats())
    assert weights == sum(r["weight_bytes"] for r in rtn.layer_stats())  # packed 4-bit, as round-to-nearest
