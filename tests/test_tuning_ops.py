"""Tuned kernels stay bit-exact: every op (random shapes, as in test_device_ops) and every zoo model, tuned for a
few rounds on QEMU, built from the database and run on QEMU against the host. Slow (about 15 minutes on 2 cores), so
only with ``TVMQ_SLOW_TESTS=1 pytest tests/test_tuning_ops.py``."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_device_ops import GENERATORS
from test_ops import _model

import tvmq

TARGET = "c -mcpu=cortex-m4"
BOARD = "mps2-an386"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.environ.get("TVMQ_SLOW_TESTS"),
                                                   reason="minutes of tuning: set TVMQ_SLOW_TESTS=1")]  # fmt: skip


def _check(qmodel: tvmq.QuantizedModel, x: np.ndarray, database, trials: int) -> tvmq.tuning.TuningReport:
    report = tvmq.tune(qmodel, TARGET, board=BOARD, trials=trials, database=database, progress=False)
    artifact = tvmq.build(qmodel, TARGET, database=database)
    codes = qmodel.quantize_input(x)
    result = tvmq.qemu.run(artifact, codes, board=BOARD, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, qmodel.run_int(codes))
    return report


@pytest.mark.parametrize("op", sorted(GENERATORS))
def test_tuned_op_on_qemu_equals_host(op: str, tmp_path) -> None:
    rng = np.random.default_rng([0, sorted(GENERATORS).index(op)])
    nodes, shape, inits = GENERATORS[op](rng)
    model = _model(nodes, [("x", shape)], [("y", None)], inits)
    qmodel = tvmq.quantize(model, rng.normal(size=(32, *shape[1:])).astype(np.float32), progress=False)
    x = (rng.normal(size=(8, *shape[1:])) * 1.2).astype(np.float32)
    report = _check(qmodel, x, tmp_path / "db", trials=40)
    # candidates TVM miscompiles (e.g. its CommonSubexprElim reusing a one-element accumulator's first value across
    # unrolled iterations) are rejected by the output check; whatever was applied is bit-exact (``_check``)
    assert report.total("best") <= report.total("default")


@pytest.mark.parametrize("name", ["basicmotions", "digits", "digits_mbv1", "digits_res8", "vowels_dscnn"])
def test_tuned_zoo_model_on_qemu_equals_host(name: str, tmp_path) -> None:
    from pathlib import Path

    qmodel = tvmq.load_quantized(Path(tvmq.examples.__file__).parent / "data" / f"{name}.int8.tflite")
    example = tvmq.examples.load(name)
    x = example.x_test[:8]
    if x.shape[1:] != qmodel.input_shape[1:]:  # the TFLite twins are channels-last
        x = np.moveaxis(x, 1, -1).reshape(len(x), *qmodel.input_shape[1:])
    report = _check(qmodel, x.astype(np.float32), tmp_path / "db", trials=80)
    assert report.total("best") <= report.total("default")
