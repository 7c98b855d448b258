"""Run a ``QuantConfig.ptq`` list on a normalised float model: the steps in order, each ``state -> state``."""

from __future__ import annotations

import time

import numpy as np
import tvm
from threadpoolctl import threadpool_limits

from ..config import QuantConfig
from ..errors import CalibrationDataError
from ..relay_passes.layers import Layer
from .registry import REGISTRY, options_for, resolve
from .state import PTQState


def run_pipeline(float_mod: tvm.IRModule, layers: list[Layer], samples: np.ndarray, config: QuantConfig,
                 progress: bool = False) -> PTQState:  # fmt: skip
    """Apply ``config.ptq``; the result's ``float_mod``, ``layers``, ``config`` and ``rounded`` go to ``make_plan``
    (``report`` holds what each step did and ``report['seconds']`` its time)."""
    config.validate()
    for entry in config.ptq:
        name = resolve(entry)[0]
        if REGISTRY[name].check is not None:
            REGISTRY[name].check(entry, layers, config)
    check_samples(config, layers, len(samples))
    state = PTQState(float_mod=float_mod, layers=layers, config=config, samples=samples, progress=progress)
    seconds = {}
    with threadpool_limits(limits=1, user_api="blas"):  # K x K products: threads cost more than they bring
        for entry in config.ptq:
            start = time.perf_counter()
            state = REGISTRY[resolve(entry)[0]].run(state, options_for(entry, config.ptq_options))
            seconds[entry] = round(time.perf_counter() - start, 3)
    return state.replace(report={**state.report, "seconds": seconds})


def check_samples(config: QuantConfig, layers: list[Layer], count: int) -> None:
    """Refuse a calibration set smaller than a step of the pipeline needs, saying how many and why."""
    for entry in config.ptq:
        algorithm = REGISTRY[resolve(entry)[0]]
        if algorithm.min_samples is None:
            continue
        need, why = algorithm.min_samples(layers, config, options_for(entry, config.ptq_options))
        if count < need:
            raise CalibrationDataError(
                f"ptq algorithm {entry!r} needs at least {need} calibration samples ({why}); got {count}"
                + (f" (QuantConfig.max_calibration_samples={config.max_calibration_samples})"
                   if count == config.max_calibration_samples else "")
            )  # fmt: skip
