"""LSQ (Esser et al. 2020, "Learned Step Size Quantization") as post-training reconstruction: the seed study's
``opt_qparam``. Only quantization parameters move: each conv/dense layer's weight scales (per output channel, or
one per layer with ``per_channel=False``) and the scale and zero point of every activation quantized in the unit,
its output included, so the objective is the unit's output *after* its own quantization, ``E||f(x) - q(f~(x~))||^2``
(a layer alone, or a block with ``granularity="block"``). The weights stay round-to-nearest on the learned grid.

Gradients are LSQ's straight-through ones (``tvmq.ptq.npgraph.FakeQuant.grads``; for a weight ``w`` on scale
``s``: ``round(w/s) - w/s`` inside the grid, ``+-qmax`` where clipped); scales move as logarithms (always
positive), zero points as reals that the plan takes rounded. The best parameters measured on all the calibration
data at the checkpoints are kept, the initial ones (the observers') included, so the unit's error never grows.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..quant.qparams import QParams, quantize_weights, weight_qmax
from ..relay_passes.layers import SAME_QPARAMS_KINDS
from .blocks import Block
from .blockwise import BLOCK_BOUNDS, BLOCK_OPTIONS, BlockProblem, block_units, check_granularity
from .capture import float_pass, plan_of
from .layerwise import Grid
from .npgraph import plan_quantizers, run_model
from .optim import Adam, checkpoints
from .registry import OPTIMIZE, register
from .state import PTQState

OPTIONS = {"iters": 300, "lr": 0.01, "lr_zero_point": 0.05, "learn_activations": True, **BLOCK_OPTIONS}
BOUNDS = {"iters": (1, 1e7), "lr": (1e-9, 10.0), "lr_zero_point": (0.0, 100.0), **BLOCK_BOUNDS}


def _check(step: str, layers: list, config) -> None:
    check_granularity(step, layers, config)
    if config.pow2_scales:
        raise ConfigError(f"ptq step {step!r} learns free scales; pow2_scales=True fixes them to powers of two")


def _min_samples(layers: list, config, options: dict) -> tuple[int, str]:
    return 2, "its mini-batch gradients need more than one sample"


@register("lsq", OPTIMIZE, OPTIONS, BOUNDS, _min_samples, _check)
def lsq(state: PTQState, options: dict) -> PTQState:
    """Learned weight and activation step sizes (and activation zero points), layer or block-wise (opt_qparam)."""
    todo = block_units(state, options) if options["granularity"] == "block" else _layer_units(state)
    extra = [v for unit in todo for v in (unit.input, unit.output)]
    state, stats = float_pass(state, extra=extra)
    rounded, act_qparams, report = dict(state.rounded), dict(state.act_qparams), {}
    for unit in todo:
        start = time.perf_counter()
        current = state.replace(rounded=rounded, act_qparams=act_qparams)
        plan = plan_of(current, stats.observers)
        xq = run_model(state.layers, state.input_var, state.samples, plan, outputs=[unit.input])[unit.input]
        quant = plan_quantizers(state.layers, plan, state.input_var)
        learn = {}  # var -> layer name, the activation quantizers LSQ moves
        for layer in unit.layers:
            fq = quant[layer.output]
            if (options["learn_activations"] and fq.levels is None and layer.kind not in SAME_QPARAMS_KINDS
                    and layer.kind not in ("softmax", "sigmoid")):  # fmt: skip
                learn[layer.output] = layer.name
        unit_quant = {layer.output: quant[layer.output] for layer in unit.layers}
        scales, grids = {}, {}
        for layer in unit.weighted:
            cfg = state.config.for_layer(layer.name)
            _, scales[layer.name] = quantize_weights(layer.weight, cfg.weight_bits, cfg.per_channel,
                                                     cfg.weight_observer, cfg.percentile)  # fmt: skip
            grids[layer.name] = Grid.of(cfg.weight_bits)
        problem = BlockProblem(unit, stats.values[unit.input], xq, stats.values[unit.output], unit_quant, scales,
                               grids, state.rng(f"lsq:{unit.name}"), int(options["batch_size"]),
                               float(options["qdrop"]))  # fmt: skip
        solver = _Solver(problem, state, learn)
        init_loss = solver.loss()
        solver.run(options, state.progress)
        loss = solver.loss()
        for layer in unit.weighted:
            codes = solver.codes(layer.name)
            rounded[layer.name] = (codes.reshape(layer.weight.shape).astype(np.int8), solver.scale_of(layer.name))
        for var, name in learn.items():
            fq = unit_quant[var]
            zp = int(np.clip(np.round(fq.zero_point), fq.qmin, fq.qmax))
            act_qparams[name] = QParams(scale=float(fq.scale), zero_point=zp, bits=int(np.log2(fq.qmax - fq.qmin + 1)))
        report[unit.name] = {"rtn_loss": init_loss, "loss": loss, "layers": [layer.name for layer in unit.layers],
                             "activations": sorted(learn.values()),
                             "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
    return state.replace(rounded=rounded, act_qparams=act_qparams, report={**state.report, "lsq": report})


def _layer_units(state: PTQState) -> list[Block]:
    return [Block([layer], layer.inputs[0], layer.output, "layer") for layer in state.weighted]


class _Solver:
    """Log-scales of the unit's weights and activations, activation zero points, Adam on the unit's output error."""

    def __init__(self, problem: BlockProblem, state: PTQState, learn: dict) -> None:
        self.problem, self.learn = problem, learn
        self.weights = {layer.name: layer.weight.reshape(len(layer.weight), -1).astype(np.float64)
                        for layer in problem.block.weighted}  # fmt: skip
        self.shared = {name: not state.config.for_layer(name).per_channel for name in self.weights}
        self.bits = {name: state.config.for_layer(name).weight_bits for name in self.weights}
        self.params = {("w", n): np.log(problem.scales[n][:1] if self.shared[n] else problem.scales[n])
                       for n in self.weights}  # fmt: skip
        for var in learn:
            fq = problem.quant[var]
            self.params[("s", var)] = np.array([np.log(fq.scale)])
            self.params[("z", var)] = np.array([fq.zero_point])

    def scale_of(self, name: str) -> np.ndarray:
        s = np.exp(self.params[("w", name)])
        return np.repeat(s, len(self.weights[name])) if self.shared[name] else s

    def _apply_activations(self, round_zero: bool = False) -> None:
        for var in self.learn:
            fq = self.problem.quant[var]
            fq.scale = float(np.exp(self.params[("s", var)][0]))
            z = float(self.params[("z", var)][0])
            fq.zero_point = float(np.clip(np.round(z), fq.qmin, fq.qmax)) if round_zero else z

    def codes(self, name: str) -> np.ndarray:
        w, s = self.weights[name], self.scale_of(name)[:, None]
        if self.bits[name] == 1:
            return np.where(w >= 0, 1, -1)
        qmax = weight_qmax(self.bits[name])
        return np.clip(np.round(w / s), -qmax, qmax)

    def _wq(self) -> tuple[dict, dict]:
        """Fake-quant weights and d wq / d s (per element)."""
        wq, dws = {}, {}
        for name, w in self.weights.items():
            s = self.scale_of(name)[:, None]
            c = self.codes(name)
            wq[name] = c * s
            if self.bits[name] == 1:
                dws[name] = c.astype(np.float64)
            else:
                qmax = weight_qmax(self.bits[name])
                inside = np.abs(np.round(w / s)) <= qmax
                dws[name] = np.where(inside, c - w / s, c)
        return wq, dws

    def loss(self) -> float:
        self._apply_activations(round_zero=True)
        return self.problem.loss(self._wq()[0])

    def run(self, options: dict, progress: bool) -> None:
        iters = int(options["iters"])
        adam, checks = Adam(options["lr"]), checkpoints(iters)
        lrs = {key: options["lr_zero_point"] for key in self.params if key[0] == "z"}
        best = {k: v.copy() for k, v in self.params.items()}
        best_loss = norm = self.loss()
        if best_loss == 0.0:
            return
        bar = tqdm(range(iters), desc=f"lsq {self.problem.block.name}", disable=not progress, leave=False)
        for t in bar:
            self._apply_activations()
            wq, dws = self._wq()
            _, grads = self.problem.loss_and_grads(wq)
            g = {}
            for name in self.weights:
                per_channel = np.sum(grads.weight[name] * dws[name], axis=1) * self.scale_of(name)  # d/d log s
                g[("w", name)] = (np.sum(per_channel, keepdims=True) if self.shared[name] else per_channel) / norm
            for var in self.learn:
                g[("s", var)] = np.array([grads.scale.get(var, 0.0) * self.problem.quant[var].scale / norm])
                g[("z", var)] = np.array([grads.zero_point.get(var, 0.0) / norm])
            adam.step(self.params, g, lrs)  # zero points move in code units, scales as logarithms
            if t in checks:
                loss = self.loss()
                if loss < best_loss:
                    best, best_loss = {k: v.copy() for k, v in self.params.items()}, loss
                bar.set_postfix(loss=f"{loss / norm:.4f}", best=f"{best_loss / norm:.4f}")
        self.params = best
        self._apply_activations(round_zero=True)
