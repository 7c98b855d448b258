"""Mixed precision: per-layer weight and activation bits (and schemes) under a budget in flash bytes, arena bytes
or BOPs, as a ``QuantConfig`` with overrides (``tvmq.mixed_precision``).

Sensitivity proxy: the output error of the fake-quant model (mean squared difference from the float model on
calibration samples, in numpy: ``tvmq.ptq.npgraph``) when one variable alone is lowered to an option, everything
else at its highest option. Errors of independent quantizers add up to first order, so the search minimises the
sum of the per-variable errors: greedy descent from the highest options, each step taking the move with the least
error added per unit of cost saved, until the budget is met, then greedy ascent spending what is left. Costs are
exact for the config: flash is the constant data of the integer program (weights, biases, requantization
parameters, tables: the ``weights_bytes`` of ``tvmq.build``'s metadata; code is not counted), arena is
``tvmq.build``'s memory plan (in-place kernels included), BOPs are ``sum(MACs x weight bits x input bits)``.
Validation: the chosen config and every uniform config within the budget are measured on the calibration samples
(output error of the fake-quant model); the best measured is returned, so a mixed config is only chosen where it
beats the uniform ones on the data.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tqdm.auto import tqdm

from ..config import QuantConfig
from ..errors import ConfigError
from ..quant.plan import make_plan
from ..quant.qparams import quantize_weights
from ..relay_passes.layers import SAME_QPARAMS_KINDS, WEIGHTED_KINDS, Layer
from .capture import float_pass
from .npgraph import run_model
from .state import PTQState

METRICS = ("flash", "arena", "bops")
UNITS = {"": 1, "b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "k": 1e3, "m": 1e6, "g": 1e9}
DEFAULT_WEIGHT_OPTIONS = ((8, "uniform"), (6, "uniform"), (5, "uniform"), (4, "uniform"), (3, "uniform"),
                          (2, "uniform"))  # fmt: skip
DEFAULT_ACT_OPTIONS = {"flash": ((8, "uniform"),), "bops": ((8, "uniform"), (6, "uniform"), (4, "uniform"),
                                                            (3, "uniform"), (2, "uniform")),
                       "arena": ((8, "uniform"), (4, "kmeans"), (3, "kmeans"), (2, "kmeans"))}  # fmt: skip


def parse_budget(budget: str | dict) -> tuple[str, float]:
    """``"flash=24KB"``, ``"arena=2048"``, ``"bops=1.5M"`` or ``{"flash": 24576}`` -> (metric, value). KB/KiB are
    1024 bytes, MB/MiB 1024^2; K, M, G are 10^3, 10^6, 10^9 (BOPs)."""
    if isinstance(budget, dict):
        if len(budget) != 1:
            raise ConfigError(f"budget: give one of {list(METRICS)}, e.g. {{'flash': 24576}}, got {budget!r}")
        ((metric, value),) = budget.items()
        text = f"{metric}={value}"
    else:
        text = str(budget)
    match = re.fullmatch(r"\s*(\w+)\s*=\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(1) not in METRICS or match.group(3).lower() not in UNITS:
        raise ConfigError(
            f"budget {text!r}: expected METRIC=VALUE with METRIC one of {list(METRICS)} and an "
            "optional unit (B, KB, KiB, MB; K, M, G), e.g. flash=24KB, arena=2048, bops=1.5M"
        )
    value = float(match.group(2)) * UNITS[match.group(3).lower()]
    if value <= 0:
        raise ConfigError(f"budget {text!r} must be positive")
    return match.group(1), value


@dataclass
class Variable:
    """One choice of the search: a conv/dense layer's weights, or a layer's output activation."""

    kind: str  # "weight" or "act"
    layer: str
    options: list[tuple[int, str]]  # (bits, scheme), highest precision first
    noise: list[float] = field(default_factory=list)  # proxy output error at each option (others highest)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.layer}"


@dataclass
class MixedPrecision:
    """The search's result: ``config`` and how it was reached."""

    config: QuantConfig
    metric: str
    budget: float
    cost: float
    chosen: str  # "mixed" or the uniform config it fell back to, e.g. "uniform w3"
    measured: dict[str, dict[str, float]]  # candidate -> {"cost", "mse", "agreement"} on calibration data
    variables: list[Variable]
    path: list[dict[str, Any]]  # greedy descent: {"cost", "proxy", "choice": {key: option index}}
    smallest: float  # the smallest reachable cost
    seconds: float

    def table(self) -> str:
        lines = [f"budget {self.metric} <= {self.budget:,.0f}: chose {self.chosen} ({self.metric} {self.cost:,.0f})",
                 f"{'candidate':<16}{self.metric:>14}{'output MSE':>14}{'agreement':>11}"]  # fmt: skip
        for name, row in self.measured.items():
            lines.append(f"{name:<16}{row['cost']:>14,.0f}{row['mse']:>14.5g}{row['agreement']:>11.4f}")
        return "\n".join(lines)


class _Model:
    """The float model, its observers and layers, and the costs and output error of any config."""

    def __init__(self, state: PTQState, samples: int) -> None:
        state, stats = float_pass(state)
        self.state, self.observers = state, stats.observers
        self.layers, self.input_var = state.layers, state.input_var
        self.x = state.samples[:samples]
        self.out = self.layers[-1].output
        self.reference = run_model(self.layers, self.input_var, self.x)[self.out].astype(np.float64)
        self._weights: dict = {}

    def rounded(self, config: QuantConfig) -> dict:
        """Round-to-nearest uniform weights of every layer, cached (the plan would recompute them each time)."""
        out = {}
        for layer in self.layers:
            if layer.kind not in WEIGHTED_KINDS:
                continue
            cfg = config.for_layer(layer.name)
            if cfg.weight_scheme != "uniform":
                continue
            key = (layer.name, cfg.weight_bits, cfg.per_channel, cfg.weight_observer, cfg.percentile,
                   config.pow2_scales)  # fmt: skip
            if key not in self._weights:
                self._weights[key] = quantize_weights(layer.weight, *key[1:])
            out[layer.name] = self._weights[key]
        return out

    def plan(self, config: QuantConfig):
        return make_plan(self.layers, self.input_var, self.observers, config, rounded_weights=self.rounded(config))

    def error(self, config: QuantConfig) -> tuple[float, float]:
        """Output MSE against the float model and top-1 agreement with it, on the calibration samples."""
        y = run_model(self.layers, self.input_var, self.x, self.plan(config))[self.out].astype(np.float64)
        flat, ref = y.reshape(len(y), -1), self.reference.reshape(len(y), -1)
        return float(np.mean((flat - ref) ** 2)), float(np.mean(np.argmax(flat, 1) == np.argmax(ref, 1)))

    def cost(self, metric: str, config: QuantConfig) -> float:
        """Exact flash bytes (constant data of the integer program), arena bytes (tvmq.build's plan) or BOPs."""
        plan = self.plan(config)
        if metric == "bops":
            return float(sum(layer.macs * lp.config.weight_bits * _code_bits(lp.in_codebooks[0], lp.inputs[0])
                             for layer, lp in zip(self.layers, plan.layers, strict=True)
                             if layer.kind in WEIGHTED_KINDS))  # fmt: skip
        from ..codegen.graph import read_program
        from ..codegen.planner import plan_memory
        from ..codegen.slices import write_concat_slices
        from ..relay_passes import RealizeIntegerOps

        program = read_program(RealizeIntegerOps(self.layers, plan)(self.state.float_mod))
        if metric == "flash":
            return float(sum(t.nbytes for s in program.steps for t in s.inputs if t.kind == "const"))
        return float(plan_memory(write_concat_slices(program)).arena_bytes)


def _code_bits(codebook, qparams) -> int:
    return codebook.bits if codebook is not None else qparams.bits


def variables(layers: list[Layer], metric: str, weight_options, act_options) -> list[Variable]:
    """The search's variables: every conv/dense layer's weights; the output of every layer with its own activation
    qparams (conv/dense, add, concat), codebook schemes only on conv/dense (LUT-requantize)."""
    out = []
    for layer in layers:
        if layer.kind in WEIGHTED_KINDS and len(weight_options) > 1:
            out.append(Variable("weight", layer.name, list(weight_options)))
        if layer.kind in SAME_QPARAMS_KINDS or layer.kind in ("softmax", "sigmoid", "requantize"):
            continue
        # codebook outputs only where a LUT-requantize makes them (conv/dense), and not at the model output, which
        # callers dequantize with one scale and zero point; its uniform bits are a choice like any other's (a
        # 3-bit logit vector ties often: BOPs do not count it, so the search keeps it at the highest option)
        options = [o for o in act_options
                   if o[1] == "uniform" or (layer.kind in WEIGHTED_KINDS and layer is not layers[-1])]  # fmt: skip
        if len(options) > 1:
            out.append(Variable("act", layer.name, options))
    return out


def _config(base: QuantConfig, variables_: list[Variable], choice: dict) -> QuantConfig:
    overrides = {name: dict(fields) for name, fields in base.overrides.items()}
    for var in variables_:
        bits, scheme = var.options[choice[var.key]]
        fields = overrides.setdefault(var.layer, {})
        if var.kind == "weight":
            fields.update(weight_bits=bits, weight_scheme=scheme)
        else:
            fields.update(act_bits=bits, act_scheme=scheme)
    return base.replace(overrides=overrides)


def _normalise_options(options, what: str) -> list[tuple[int, str]]:
    out = []
    for o in options:
        bits, scheme = (o, "uniform") if isinstance(o, int) else tuple(o)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ConfigError(f"mixed precision: {what} bits must be integers in 1..8, got {bits!r}")
        out.append((bits, scheme))
    if not out:
        raise ConfigError(f"mixed precision: no {what} options")
    return sorted(set(out), key=lambda o: (-o[0], o[1] != "uniform", o[1]))


def search(model, calibration, budget: str | dict, config: QuantConfig | None = None, *, weight_options=None,
           act_options=None, samples: int = 256, progress: bool = True) -> MixedPrecision:  # fmt: skip
    """Search per-layer bits (and schemes) under ``budget``; see the module doc. ``weight_options``/``act_options``:
    bits or (bits, scheme) pairs to choose from (defaults depend on the metric: weights 8, 6, 5, 4, 3, 2 uniform;
    activations fixed at the config's for flash, 8..2 uniform for BOPs, 8 uniform or 4..2 k-means codebooks, which
    the arena stores packed, for arena)."""
    start = time.perf_counter()
    metric, limit = parse_budget(budget)
    base = config if config is not None else QuantConfig()
    from ..frontends import load_model
    from ..quant.data import as_samples
    from ..relay_passes import find_layers, normalize

    mod = normalize()(model if isinstance(model, tvm.IRModule) else load_model(model))
    layers = find_layers(mod["main"])
    shape = tuple(int(d) for d in mod["main"].params[0].ty.shape)
    data = as_samples(calibration, shape)[: base.max_calibration_samples]
    if metric == "flash" and act_options is None:
        act_options = [(base.act_bits, base.act_scheme)]
    w_opts = _normalise_options(weight_options or DEFAULT_WEIGHT_OPTIONS, "weight")
    a_opts = _normalise_options(act_options or DEFAULT_ACT_OPTIONS[metric], "activation")
    model_ = _Model(PTQState(mod, layers, base.replace(ptq=[], ptq_options={}), data), samples)
    vars_ = variables(layers, metric, w_opts, a_opts)
    lowest = {v.key: len(v.options) - 1 for v in vars_}
    highest = {v.key: 0 for v in vars_}
    smallest = model_.cost(metric, _config(base, vars_, lowest))
    if smallest > limit:
        raise ConfigError(
            f"budget {metric} <= {limit:,.0f} cannot be met: the smallest reachable {metric} is {smallest:,.0f} "
            f"(weights {_describe(w_opts)}, activations {_describe(a_opts)})"
        )  # fmt: skip
    base_mse = model_.error(_config(base, vars_, highest))[0]
    bar = tqdm(vars_, desc="mixed precision: sensitivity", disable=not progress, leave=False)
    for var in bar:
        var.noise = [0.0] + [max(model_.error(_config(base, vars_, {**highest, var.key: k}))[0] - base_mse, 0.0)
                             for k in range(1, len(var.options))]  # fmt: skip
        bar.set_postfix(layer=var.layer, worst=f"{var.noise[-1]:.3g}")
    choice, path = _greedy(model_, base, vars_, metric, limit, progress)
    candidates = {"mixed": choice}
    for w in w_opts:  # uniform configs: every pair of a weight option and an activation option
        for a in a_opts:
            uniform = {v.key: _nearest(v.options, w if v.kind == "weight" else a) for v in vars_}
            candidates.setdefault(_uniform_name(vars_, uniform, base), uniform)
    measured, best = {}, None
    for name, ch in candidates.items():
        cfg = _config(base, vars_, ch)
        cost = model_.cost(metric, cfg)
        if cost > limit:
            continue
        mse, agreement = model_.error(cfg)
        measured[name] = {"cost": cost, "mse": mse, "agreement": agreement}
        if best is None or mse < measured[best]["mse"]:
            best = name
    result = _config(base, vars_, candidates[best])
    return MixedPrecision(result, metric, limit, measured[best]["cost"], best, measured, vars_, path, smallest,
                          round(time.perf_counter() - start, 2))  # fmt: skip


def mixed_precision(model, calibration, budget: str | dict, config: QuantConfig | None = None, **kwargs) -> QuantConfig:
    """Per-layer weight and activation bits under ``budget`` (``"flash=24KB"``, ``"arena=2KB"``, ``"bops=2M"``): a
    ``QuantConfig`` with overrides, ready for ``tvmq.quantize``. See ``tvmq.ptq.mixed.search`` for the options."""
    return search(model, calibration, budget, config, **kwargs).config


def _greedy(model_: _Model, base: QuantConfig, vars_: list[Variable], metric: str, limit: float,
            progress: bool) -> tuple[dict, list]:  # fmt: skip
    """Start from the knapsack's choice, descend greedily while the exact cost is over the budget, then climb back
    where the budget allows."""
    relevant = [v for v in vars_ if metric != "arena" or v.kind == "act"]
    choice = _knapsack(model_, base, vars_, relevant, metric, limit)
    cost = model_.cost(metric, _config(base, vars_, choice))
    path = [{"cost": cost, "proxy": sum(v.noise[choice[v.key]] for v in vars_), "choice": dict(choice)}]
    bar = tqdm(desc=f"mixed precision: {metric} {limit:,.0f}", disable=not progress, leave=False)
    while cost > limit:
        moves = []
        for var in relevant:  # any lower option (packing makes some steps free: 6- and 5-bit weights take bytes)
            k = choice[var.key]
            for j in range(k + 1, len(var.options)):
                new = {**choice, var.key: j}
                saved = cost - model_.cost(metric, _config(base, vars_, new))
                if saved > 0:
                    moves.append(((var.noise[j] - var.noise[k]) / saved, var.key, new))
        if not moves:
            raise ConfigError(f"budget {metric} <= {limit:,.0f}: the greedy search stopped at {cost:,.0f}")
        _, _, choice = min(moves, key=lambda m: (m[0], m[1]))
        cost = model_.cost(metric, _config(base, vars_, choice))
        proxy = sum(v.noise[choice[v.key]] for v in vars_)
        path.append({"cost": cost, "proxy": proxy, "choice": dict(choice)})
        bar.update()
        bar.set_postfix(cost=f"{cost:,.0f}", proxy=f"{proxy:.4g}")
    while True:  # climb: the move removing the most error per unit of cost that still fits
        moves = []
        for var in relevant:
            k = choice[var.key]
            for j in range(k):
                new = {**choice, var.key: j}
                new_cost = model_.cost(metric, _config(base, vars_, new))
                gain = var.noise[k] - var.noise[j]
                if new_cost <= limit and gain > 0:
                    moves.append((-gain / max(new_cost - cost, 1e-9), var.key, new, new_cost))
        if not moves:
            break
        _, _, choice, cost = min(moves, key=lambda m: (m[0], m[1]))
        path.append({"cost": cost, "proxy": sum(v.noise[choice[v.key]] for v in vars_), "choice": dict(choice)})
    bar.close()
    return choice, path


def _knapsack(model_: _Model, base: QuantConfig, vars_: list[Variable], relevant: list[Variable], metric: str,
              limit: float, buckets: int = 4000) -> dict:  # fmt: skip
    """The least total proxy error with costs taken as separable (each variable's cost change measured alone): a
    multiple-choice knapsack solved exactly by dynamic programming over the budget cut in ``buckets`` (costs rounded
    up, so the predicted cost never undershoots). Flash is separable exactly; where a metric is not (BOPs with
    activation bits: products), the caller's greedy descent takes the result the rest of the way."""
    highest = {v.key: 0 for v in vars_}
    top = model_.cost(metric, _config(base, vars_, highest))
    deltas = {v.key: [0.0] + [model_.cost(metric, _config(base, vars_, {**highest, v.key: j})) - top
                              for j in range(1, len(v.options))] for v in relevant}  # fmt: skip
    floor = top + sum(min(d) for d in deltas.values())
    room = limit - floor
    if room < 0 or not relevant:
        return {**highest, **{v.key: int(np.argmin(deltas[v.key])) for v in relevant}}
    unit = max(room / buckets, 1e-12)
    best = np.zeros(buckets + 1)  # best[b]: least error of the variables so far within b units above their floor
    picks = []
    for v in relevant:
        d = np.array(deltas[v.key])
        units = np.ceil((d - d.min()) / unit - 1e-9).astype(int)
        noise = np.array(v.noise)
        table = np.full((len(d), buckets + 1), np.inf)
        for j, (u, e) in enumerate(zip(units, noise, strict=True)):
            if u <= buckets:
                table[j, u:] = best[: buckets + 1 - u] + e
        picks.append(np.argmin(table, axis=0))
        best = table.min(axis=0)
    choice, b = dict(highest), buckets
    for v, pick in zip(reversed(relevant), reversed(picks), strict=True):
        j = int(pick[b])
        choice[v.key] = j
        d = np.array(deltas[v.key])
        b -= int(np.ceil((d[j] - d.min()) / unit - 1e-9))
    return choice


def _nearest(options: list[tuple[int, str]], option: tuple[int, str]) -> int:
    """Index of ``option`` in a variable's options, else of the one with the closest bits (a layer without
    codebook options takes the uniform grid of the same width)."""
    if option in options:
        return options.index(option)
    return min(range(len(options)), key=lambda k: (abs(options[k][0] - option[0]), options[k][1] != "uniform"))


def _uniform_name(vars_: list[Variable], choice: dict, base: QuantConfig) -> str:
    """``uniform w3`` (weights only vary), ``uniform w4 a4``; a scheme other than uniform is appended."""
    parts = ["uniform"]
    for kind, letter in (("weight", "w"), ("act", "a")):
        options = {v.options[choice[v.key]] for v in vars_ if v.kind == kind}
        if len(options) == 1:
            ((bits, scheme),) = options
            parts.append(f"{letter}{bits}" + ("" if scheme == "uniform" else f"-{scheme}"))
    return " ".join(parts)


def _describe(options: list[tuple[int, str]]) -> str:
    return ", ".join(f"{b}" + ("" if s == "uniform" else f" {s}") for b, s in options)
