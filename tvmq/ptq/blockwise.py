"""Block-wise reconstruction (BRECQ, Li et al. 2021) with QDrop (Wei et al. 2022), and the driver shared with the
layer-wise objectives.

A block's objective is the mean squared error of its output, ``E||f(x; W) - f~(x~; Wq)||^2``: ``f`` the float
block on the float model's block input ``x``; ``f~`` the block with quantized weights and its inner activations
fake-quantized, on ``x~``, its input in the model quantized so far. Cross-layer dependencies inside the block (a
residual branch's two convs and its shortcut, a depthwise conv and its pointwise conv) are optimised together,
which layer-wise reconstruction cannot do. The gradient goes back through the block's ops in numpy
(``tvmq.ptq.npgraph``) on seeded mini-batches of calibration samples.

QDrop: with probability ``qdrop`` each element of each activation quantized inside the block (and of the block
input: ``x`` instead of ``x~``) keeps its unquantized value for that step, so the weights learn to be robust to
activation quantization noise rather than fitted to one draw of it (flatter optimum). Layer-wise objectives take
the expectation of the same random dropping exactly (``tvmq.ptq.layerwise.build_problem``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..quant.qparams import quantize_weights
from .blocks import Block, find_blocks, units, user_blocks
from .capture import float_pass, plan_of
from .layerwise import MAX_ROWS, Grid, build_problem, check_uniform
from .npgraph import Grads, Graph, plan_quantizers, run_model
from .state import PTQState

# Options of every step that reconstructs layer-wise or block-wise: ``blocks`` names the blocks (a list of lists of
# layer names; default: the graph's residual blocks and depthwise-pointwise pairs), ``batch_size`` the samples per
# block step, ``qdrop`` the probability of keeping an activation element unquantized, ``warm_start`` starts a block
# from its layers' layer-wise solutions (mini-batch optimisation of a block from scratch, within a few hundred
# steps, often ends above the exact layer-wise optimum; from there it can only go down).
BLOCK_OPTIONS = {"granularity": "layer", "blocks": [], "batch_size": 32, "qdrop": 0.0, "warm_start": True}
BLOCK_BOUNDS = {"batch_size": (1, 1e6), "qdrop": (0.0, 0.99)}
EVAL_BATCH = 256  # samples per forward pass when a block's loss is measured on all the calibration data


@dataclass
class BlockProblem:
    """The reconstruction objective of one block; weights as ``(O, K)`` per conv/dense layer (by name)."""

    block: Block
    x: np.ndarray  # float block input (N, ...)
    xq: np.ndarray  # block input in the model quantized so far
    target: np.ndarray  # float block output
    quant: dict  # var -> FakeQuant inside the block (and its output's, when ``output_quant``)
    scales: dict  # layer name -> (O,)
    grids: dict  # layer name -> Grid
    rng: np.random.Generator
    batch: int = 32
    qdrop: float = 0.0
    graph: Graph = field(init=False)

    def __post_init__(self) -> None:
        self.graph = Graph(self.block.layers)
        self.shapes = {layer.name: layer.weight.shape for layer in self.block.weighted}

    @property
    def samples(self) -> int:
        return len(self.x)

    def _weights(self, wq: dict) -> dict:
        return {name: w.reshape(self.shapes[name]).astype(np.float32) for name, w in wq.items()}

    def loss_and_grads(self, wq: dict) -> tuple[float, Grads]:
        """Loss and gradients on one seeded mini-batch (with QDrop's random dropping); weight gradients ``(O, K)``."""
        n = self.samples
        idx = np.sort(self.rng.choice(n, self.batch, replace=False)) if self.batch < n else np.arange(n)
        xin = self.xq[idx]
        drop: dict = {}
        if self.qdrop > 0.0:
            xin = np.where(self.rng.random(xin.shape) < self.qdrop, self.x[idx], xin)
            drop = {var: self.qdrop for var in self.quant if not var.same_as(self.block.output)}
            drop["rng"] = self.rng
        tape = self.graph.forward({self.block.input: xin}, self._weights(wq), quant=self.quant, drop=drop)
        diff = tape.values[self.block.output].astype(np.float64) - self.target[idx]
        grads = self.graph.backward(tape, {self.block.output: 2.0 * diff / diff.size}, self.quant)
        grads.weight = {name: g.reshape(len(g), -1).astype(np.float64) for name, g in grads.weight.items()}
        return float(np.mean(diff * diff)), grads

    def loss(self, wq: dict) -> float:
        """Mean squared block-output error on all the calibration samples (no dropping)."""
        total, weights = 0.0, self._weights(wq)
        for start in range(0, self.samples, EVAL_BATCH):
            part = slice(start, start + EVAL_BATCH)
            tape = self.graph.forward({self.block.input: self.xq[part]}, weights, quant=self.quant, keep=False)
            total += float(np.sum((tape.values[self.block.output].astype(np.float64) - self.target[part]) ** 2))
        return total / self.target.size

    def dequantize(self, codes: dict) -> dict:
        return {n: c.reshape(len(c), -1).astype(np.float64) * self.scales[n][:, None] for n, c in codes.items()}

    def code_loss(self, codes: dict) -> float:
        return self.loss(self.dequantize(codes))


# (LayerProblem, rtn codes (O, K), options, progress) -> codes, or (codes, scales) for a solver that moves scales
LayerSolver = Callable[..., np.ndarray | tuple[np.ndarray, np.ndarray]]
# (BlockProblem, rtn codes {name: (O, K)}, options, progress, start codes or None) -> codes
BlockSolver = Callable[..., dict]


def block_units(state: PTQState, options: dict) -> list[Block]:
    """The units a step reconstructs: the user's blocks, else the graph's, plus every other conv/dense layer."""
    output = state.float_mod["main"].body.body
    spec = options.get("blocks") or []
    blocks = user_blocks(state.layers, spec, output) if spec else find_blocks(state.layers, output)
    return units(state.layers, blocks)


def check_granularity(step: str, layers: list, config) -> None:
    """Before any work: uniform weights, a known granularity, user blocks that match the graph."""
    from .registry import options_for

    check_uniform(step, layers, config)
    options = options_for(step, config.ptq_options)
    granularity = options.get("granularity", "layer")
    if granularity not in ("layer", "block"):
        raise ConfigError(f"ptq step {step!r}: granularity must be 'layer' or 'block', got {granularity!r}")
    if options.get("blocks") and granularity != "block":
        raise ConfigError(f"ptq step {step!r}: blocks are given but granularity is {granularity!r}; "
                          f"use '{step.split(':')[0]}:block'")  # fmt: skip
    if options.get("blocks"):
        user_blocks(layers, options["blocks"], layers[-1].output)
    if not 0.0 <= float(options.get("qdrop", 0.0)) < 1.0:
        raise ConfigError(f"ptq step {step!r}: qdrop is a probability in [0, 1), got {options['qdrop']!r}")


def reconstruct(state: PTQState, step: str, solve_layer: LayerSolver, solve_block: BlockSolver | None,
                options: dict) -> PTQState:  # fmt: skip
    """Choose the integer weights unit by unit in execution order (a unit: a block, or a conv/dense layer alone,
    solved by ``solve_layer`` on its exact second-moment objective); each unit's inputs come from the model with
    the units before it already chosen."""
    check_uniform(step, state.layers, state.config)
    blockwise = options.get("granularity", "layer") == "block"
    todo = block_units(state, options) if blockwise else units(state.layers, [])
    extra = [v for unit in todo if unit.kind != "layer" for v in (unit.input, unit.output)]
    state, stats = float_pass(state, extra=extra)
    rounded = dict(state.rounded)
    report = {}
    for unit in todo:
        start = time.perf_counter()
        plan = plan_of(state.replace(rounded=rounded), stats.observers)
        # the unit's input in the model quantized so far: numpy's fake-quant model, equal to TVM's (tested)
        tensors = run_model(state.layers, state.input_var, state.samples, plan, outputs=[unit.input])
        rtn, scales = {}, {}
        for layer in unit.weighted:
            cfg = state.config.for_layer(layer.name)
            codes, scales[layer.name] = quantize_weights(layer.weight, cfg.weight_bits, cfg.per_channel,
                                                         cfg.weight_observer, cfg.percentile,
                                                         state.config.pow2_scales)  # fmt: skip
            rtn[layer.name] = codes.reshape(len(codes), -1)
        rng = state.rng(f"{step}:{unit.name}")
        if unit.kind == "layer":
            layer = unit.layers[0]
            cfg = state.config.for_layer(layer.name)
            problem = build_problem(layer, stats.values[layer.inputs[0]], tensors[layer.inputs[0]], scales[layer.name],
                                    cfg.weight_bits, int(options.get("max_rows", MAX_ROWS)), rng,
                                    float(options.get("qdrop", 0.0)))  # fmt: skip
            solved = solve_layer(problem, rtn[layer.name], options, state.progress)
            if isinstance(solved, tuple):  # codes and new scales (BitSplit)
                solved, scales[layer.name] = solved
            codes = {layer.name: solved}
            rtn_loss = problem.code_loss(rtn[layer.name])
            loss = problem.loss(solved.astype(np.float64) * scales[layer.name][:, None])
            row = {"rows": problem.rows, "reference": problem.reference}
        else:
            quant = plan_quantizers(state.layers, plan, state.input_var)
            inner = {layer.output: quant[layer.output] for layer in unit.layers if layer is not unit.layers[-1]}
            grids = {n: Grid.of(state.config.for_layer(n).weight_bits) for n in rtn}
            problem = BlockProblem(unit, stats.values[unit.input], tensors[unit.input], stats.values[unit.output],
                                   inner, scales, grids, rng, int(options.get("batch_size", 32)),
                                   float(options.get("qdrop", 0.0)))  # fmt: skip
            start_codes = None
            if options.get("warm_start", True):
                start_codes = _layerwise_start(problem, stats, rtn, state, solve_layer, options)
            codes = solve_block(problem, rtn, options, state.progress, start_codes)
            rtn_loss, loss = problem.code_loss(rtn), problem.code_loss(codes)
            row = {"layers": [layer.name for layer in unit.layers], "block": unit.kind,
                   "reference": float(np.mean(problem.target.astype(np.float64) ** 2))}  # fmt: skip
            if start_codes is not None:
                row["layerwise_loss"] = problem.code_loss(start_codes)
        for layer in unit.weighted:
            rounded[layer.name] = (codes[layer.name].reshape(layer.weight.shape).astype(np.int8), scales[layer.name])
        report[unit.name] = {"rtn_loss": rtn_loss, "loss": loss, **row,
                             "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
    return state.replace(rounded=rounded, report={**state.report, step: report})


def _layerwise_start(problem: BlockProblem, stats, rtn: dict, state: PTQState, solve_layer: LayerSolver,
                     options: dict) -> dict:  # fmt: skip
    """The block's layers solved layer-wise in order (each on its input in the block with the layers before it
    chosen): the block-wise optimisation starts from here and keeps it unless it finds a lower block error."""
    codes = dict(rtn)
    for layer in problem.block.weighted:
        tape = problem.graph.forward({problem.block.input: problem.xq}, problem._weights(problem.dequantize(codes)),
                                     quant=problem.quant, keep=False)  # fmt: skip
        xq = tape.values[layer.inputs[0]]
        bits = state.config.for_layer(layer.name).weight_bits
        lp = build_problem(layer, stats.values[layer.inputs[0]], xq, problem.scales[layer.name], bits,
                           int(options.get("max_rows", MAX_ROWS)), state.rng(f"warm:{layer.name}"),
                           float(options.get("qdrop", 0.0)))  # fmt: skip
        solved = solve_layer(lp, rtn[layer.name], options, False)
        codes[layer.name] = solved[0] if isinstance(solved, tuple) else solved
    return codes
