"""Tensors of the float and of the partly quantized model on the calibration set, for the PTQ steps.

Both run through the machinery calibration uses (probe outputs on the Relax module, ``HostRunner``): the float
pass also feeds the activation observers (the same observers, seeds and order as ``tvmq.quantize``'s own
calibration, which then reuses them), and the quantized pass is ``InsertFakeQuant``'s simulation with its weights
and biases as parameters, compiled once and run again after each layer's integer weights are chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..host import HostRunner
from ..quant.observers import ActivationObserver
from ..quant.plan import QuantPlan, make_plan
from ..relay_passes import InsertFakeQuant
from .graph import parametrize_weights, probe
from .state import PTQState


@dataclass
class FloatStats:
    """The float model's activation observers and the values of the tensors a step asked for, per sample."""

    observers: dict  # relax.Var -> ActivationObserver (model input and every layer output)
    values: dict  # relax.Var -> (N, *shape[1:]) float32


def float_pass(state: PTQState, extra: list | None = None) -> tuple[PTQState, FloatStats]:
    """Observers of the float model plus the inputs of every conv/dense layer and the ``extra`` tensors (cached in
    the state until the float model changes)."""
    cached = state.cache.get("float")
    wanted = first_seen([layer.inputs[0] for layer in state.weighted] + list(extra or []))
    if cached is not None and all(v in cached.values for v in wanted):
        return state, cached
    watched = [state.input_var] + [layer.output for layer in state.layers]
    runner = HostRunner(probe(state.float_mod, watched + wanted))
    observers = {var: ActivationObserver(seed=i) for i, var in enumerate(watched)}
    collected: dict = {var: [] for var in wanted}
    for sample in tqdm(state.samples, desc="ptq: float model", unit="sample", disable=not state.progress, leave=False):
        results = runner.run("main", sample[None])
        for var, value in zip(watched, results[1 : 1 + len(watched)], strict=True):
            observers[var].update(value)
        for var, value in zip(wanted, results[1 + len(watched) :], strict=True):
            collected[var].append(value[0])
    observers = {var: _Memo(obs) for var, obs in observers.items()}
    stats = FloatStats(observers, {var: np.stack(v) for var, v in collected.items()})
    state.cache["float"] = stats
    return state, stats


class _Memo:
    """An observer whose ranges and kept values are computed once: steps rebuild the plan after every layer, and an
    MSE range search over every activation tensor each time would cost more than the step."""

    def __init__(self, observer: ActivationObserver) -> None:
        self._observer = observer
        self._ranges: dict = {}
        self._values: np.ndarray | None = None

    def range(self, method: str, bits: int, percentile: float) -> tuple[float, float]:
        key = (method, bits, percentile)
        if key not in self._ranges:
            self._ranges[key] = self._observer.range(method, bits, percentile)
        return self._ranges[key]

    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = self._observer.values()
        return self._values

    def __getattr__(self, name: str):
        return getattr(self._observer, name)


class QuantCapture:
    """The fake-quant model (activation qparams of ``state.config``, and those a step learned) returning every
    layer's inputs."""

    def __init__(self, state: PTQState, observers: dict) -> None:
        self.layers = state.weighted
        self.inputs = first_seen([v for layer in state.layers for v in layer.inputs])
        plan = make_plan(state.layers, state.input_var, state.observers(observers), state.config)
        fake = InsertFakeQuant(state.layers, plan)(probe(state.float_mod, self.inputs))
        module = parametrize_weights(fake, state.layers)
        self._shapes = [tuple(int(d) for d in p.ty.shape) for p in module["main"].params[1:]]
        self._runner = HostRunner(module)

    def run(self, plan: QuantPlan, samples: np.ndarray, progress: bool = False) -> dict[str, np.ndarray]:
        """Inputs of each conv/dense layer (by layer name) in the model quantized as ``plan`` says."""
        values = self.run_tensors(plan, samples, progress)
        return {layer.name: values[layer.inputs[0]] for layer in self.layers}

    def run_tensors(self, plan: QuantPlan, samples: np.ndarray, progress: bool = False) -> dict:
        """Every layer input (by var) in the model quantized as ``plan`` says."""
        by_name = {lp.name: lp for lp in plan.layers}
        params = []
        for layer in self.layers:
            lp = by_name[layer.name]
            weight = lp.dequantized_weight()
            params.append(np.ascontiguousarray(weight.T if layer.kind == "dense" else weight))
            if layer.bias is not None:
                params.append(lp.dequantized_bias())
        params = [p.reshape(s).astype(np.float32) for p, s in zip(params, self._shapes, strict=True)]
        out: dict = {var: [] for var in self.inputs}
        for sample in tqdm(samples, desc="ptq: quantized model", unit="sample", disable=not progress, leave=False):
            results = self._runner.run("main", sample[None], *params)
            for var, value in zip(self.inputs, results[1:], strict=True):
                out[var].append(value[0])
        return {var: np.stack(v) for var, v in out.items()}


def quant_capture(state: PTQState) -> tuple[PTQState, QuantCapture]:
    """The compiled capture module of the state's float model and activation qparams (cached)."""
    state, stats = float_pass(state)
    capture = state.cache.get("capture")
    if capture is None:
        capture = QuantCapture(state, stats.observers)
        state.cache["capture"] = capture
    return state, capture


def plan_of(state: PTQState, observers: dict) -> QuantPlan:
    """The plan of the state as it is: its layers' float biases, its integer weights, round-to-nearest elsewhere."""
    return make_plan(
        state.layers, state.input_var, state.observers(observers), state.config, rounded_weights=state.rounded
    )


def first_seen(items: list) -> list:
    """``items`` without repeats, in first-seen order (relax Vars hash by identity)."""
    return list(dict.fromkeys(items))
