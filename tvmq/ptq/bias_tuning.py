"""End-to-end bias tuning (Hubara et al. 2021; the seed study's low-precision post-processing): every conv/dense
bias moves to minimise the mean squared error between the float model's outputs and the quantized model's, with
the weights and all quantization parameters fixed.

Only biases move, a few hundred numbers, so the global objective cannot over-fit the calibration set the way
tuning all weights end to end would (the seed study's rationale); and, unlike bias correction, it sees the
network's non-linearities and the interplay of the layers. The backward pass runs through the whole quantized
model in numpy (``tvmq.ptq.npgraph``: fake quantization with the straight-through estimator, zero gradient where
a tensor is clipped). Each bias moves in units of its layer's output step (Adam, seeded mini-batches); the best
biases measured on all the calibration data at the checkpoints are kept, the starting ones included, so the
output error never grows. The float model keeps its own biases (the accuracy reference); the tuned ones go to
``layers[i].bias``, which the plan quantizes.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from tqdm.auto import tqdm

from .bias_correction import with_biases
from .capture import float_pass, plan_of
from .npgraph import Graph, plan_quantizers, plan_weights, run_model
from .optim import Adam, checkpoints
from .registry import POSTPROCESS, register
from .state import PTQState

OPTIONS = {"iters": 300, "lr": 0.02, "batch_size": 32}
BOUNDS = {"iters": (1, 1e7), "lr": (1e-9, 100.0), "batch_size": (1, 1e6)}
EVAL_BATCH = 256


@register("bias_tuning", POSTPROCESS, OPTIONS, BOUNDS)
def bias_tuning(state: PTQState, options: dict) -> PTQState:
    """Biases tuned end to end on the model output's error against the float model."""
    start = time.perf_counter()
    state = with_biases(state)
    state, stats = float_pass(state)
    plan = plan_of(state, stats.observers)
    quant = plan_quantizers(state.layers, plan, state.input_var)
    weights, _ = plan_weights(state.layers, plan)
    graph = Graph(state.layers)
    out = graph.outputs[0]
    target = run_model(state.layers, state.input_var, state.samples)[out].astype(np.float64)
    xq = quant[state.input_var](state.samples.astype(np.float32))
    unit = {lp.name: float(lp.output.scale) for lp in plan.layers if lp.weight is not None}
    params = {layer.name: layer.bias.astype(np.float64) / unit[layer.name] for layer in state.weighted}

    def biases() -> dict:
        return {name: (u * unit[name]).astype(np.float32) for name, u in params.items()}

    def full_loss() -> float:
        total, b = 0.0, biases()
        for s in range(0, len(xq), EVAL_BATCH):
            tape = graph.forward({state.input_var: xq[s : s + EVAL_BATCH]}, weights, b, quant, keep=False)
            total += float(np.sum((tape.values[out].astype(np.float64) - target[s : s + EVAL_BATCH]) ** 2))
        return total / target.size

    rng = state.rng("bias_tuning")
    iters, batch = int(options["iters"]), int(options["batch_size"])
    adam, checks = Adam(options["lr"]), checkpoints(iters)
    initial = best_loss = full_loss()
    best = {k: v.copy() for k, v in params.items()}
    bar = tqdm(range(iters), desc="bias_tuning", disable=not state.progress or initial == 0.0, leave=False)
    for t in bar if initial > 0.0 else ():
        idx = np.sort(rng.choice(len(xq), batch, replace=False)) if batch < len(xq) else np.arange(len(xq))
        tape = graph.forward({state.input_var: xq[idx]}, weights, biases(), quant)
        diff = tape.values[out].astype(np.float64) - target[idx]
        grads = graph.backward(tape, {out: 2.0 * diff / diff.size / initial}, quant)
        adam.step(params, {name: grads.bias[name].astype(np.float64) * unit[name] for name in params})
        if t in checks:
            loss = full_loss()
            if loss < best_loss:
                best, best_loss = {k: v.copy() for k, v in params.items()}, loss
            bar.set_postfix(loss=f"{loss / initial:.4f}", best=f"{best_loss / initial:.4f}")
    layers, report = list(state.layers), {"layers": {}}
    for k, layer in enumerate(layers):
        if layer.name in best:
            new = (best[layer.name] * unit[layer.name]).astype(np.float32)
            report["layers"][layer.name] = {"mean_abs_change": float(np.mean(np.abs(new - layer.bias))),
                                            "output_step": unit[layer.name]}  # fmt: skip
            layers[k] = dataclasses.replace(layer, bias=new)
    report.update({"initial_loss": initial, "loss": best_loss, "seconds": round(time.perf_counter() - start, 3)})
    return state.replace(layers=layers, report={**state.report, "bias_tuning": report})
