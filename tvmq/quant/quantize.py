"""``tvmq.quantize``: float model + unlabeled samples -> integer-only ``QuantizedModel``."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import onnx
import tvm
from tqdm.auto import tqdm

from ..config import QuantConfig
from ..errors import ConfigError, InvalidTensorError, UnsupportedOpError
from ..host import HostRunner
from ..relay_passes import ExposeTensors, RealizeIntegerOps, find_layers, normalize
from ..relay_passes.layers import Layer
from .data import as_samples
from .model import QuantizedModel
from .observers import ActivationObserver
from .plan import make_plan

ModelInput = tvm.IRModule | str | os.PathLike | onnx.ModelProto | bytes


def quantize(
    model: ModelInput,
    calibration_data: np.ndarray | Iterable[np.ndarray] | str | os.PathLike,
    config: QuantConfig | None = None,
    progress: bool = True,
) -> QuantizedModel:
    """Calibrate ``model`` on ``calibration_data`` and rewrite it into integer-only ops.

    ``model`` is a float Relax module from ``tvmq.from_onnx``/``tvmq.from_tflite`` or a model file/bytes.
    """
    config = config if config is not None else QuantConfig()
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"config must be a tvmq.QuantConfig, got {type(config).__name__}")
    config.validate()
    from ..frontends import load_model

    mod = model if isinstance(model, tvm.IRModule) else load_model(model)
    float_mod = normalize()(mod)
    func = float_mod["main"]
    if len(func.params) != 1:
        raise UnsupportedOpError(f"the model has {len(func.params)} inputs; tvmq supports models with one input")
    layers = find_layers(func)
    if not layers:
        raise UnsupportedOpError("the model has no operation to quantize")
    _check_weights(layers)
    config.check_layer_names([layer.name for layer in layers])
    input_shape = tuple(int(d) for d in func.params[0].ty.shape)
    samples = as_samples(calibration_data, input_shape)[: config.max_calibration_samples]
    rounded, report, observers = None, {}, None
    if config.ptq:  # post-training quantization steps (tvmq.ptq): may rewrite the float model, config and weights
        from ..ptq import run_pipeline

        state = run_pipeline(float_mod, layers, samples, config, progress)
        float_mod, layers, config, rounded, report = (state.float_mod, state.layers, state.config, state.rounded,
                                                      state.report)  # fmt: skip
        func = float_mod["main"]
        observers = state.cache["float"].observers if "float" in state.cache else None
    if observers is None:
        observers = _calibrate(float_mod, func.params[0], layers, samples, progress)
    if config.ptq:
        observers = state.observers(observers)  # activation qparams a step learned (opt_qparam)
    plan = make_plan(layers, func.params[0], observers, config, rounded_weights=rounded)
    int_mod = RealizeIntegerOps(layers, plan)(float_mod)
    return QuantizedModel(float_mod=float_mod, int_mod=int_mod, layers=layers, plan=plan, config=config,
                          ptq_report=report)  # fmt: skip


def _check_weights(layers: list[Layer]) -> None:
    for layer in layers:
        for what, array in (("weight", layer.weight), ("bias", layer.bias)):
            if array is not None and not np.all(np.isfinite(array)):
                raise InvalidTensorError(f"layer '{layer.name}' ({layer.kind}): its {what} holds NaN/Inf values")


def _calibrate(float_mod: tvm.IRModule, input_var, layers: list[Layer], samples: np.ndarray, progress: bool) -> dict:
    watched = [input_var] + [layer.output for layer in layers]
    runner = HostRunner(ExposeTensors(watched)(float_mod))
    observers = {var: ActivationObserver(seed=i) for i, var in enumerate(watched)}
    for sample in tqdm(samples, desc="calibrating", unit="sample", disable=not progress, leave=False):
        results = runner.run("main", sample[None])
        for var, value in zip(watched, results[1:], strict=True):
            observers[var].update(value)
    return observers
