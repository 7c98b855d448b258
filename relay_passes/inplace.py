"""Which layers may overwrite a dying input, decided on the layer graph before realisation.

Two rewrites cut the arena below TFLite Micro's, whose planner never lets an operator's output share bytes with
its inputs:

- a residual ADD fused into the epilogue of the convolution producing one of its operands: the convolution's
  output is never stored, and the sum is written over the other operand, element after element;
- a depthwise (or a 1x1) convolution whose input dies at it runs in place (``schedules.inplace``).

Only int8 storage qualifies (no packed codes, codebook weights or LUT epilogues). These are choices of kernel; the
memory planner still checks every overlap against the real lifetimes and keeps the buffers apart when a later step
reads the input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tvm import relax

from ..quant.plan import LayerPlan, QuantPlan
from .layers import Layer

CONV_KINDS = ("conv2d", "conv1d")


@dataclass(frozen=True)
class ResidualFusion:
    """The ADD ``add`` computed in the epilogue of a convolution; ``residual`` is its other operand."""

    add: Layer
    add_plan: LayerPlan
    residual: relax.Var
    conv_first: bool  # the convolution's output is the ADD's first operand


class InplacePlan:
    """Per layer name: the residual ADD it absorbs, the ADDs that vanish, and the in-place convolution mode."""

    def __init__(self, layers: list[Layer], plan: QuantPlan, model_input: relax.Var, model_output: relax.Var) -> None:
        self.uses: Counter = Counter(v for layer in layers for v in layer.inputs)
        self.uses[model_input] += 1  # the caller's buffer: never overwritten
        self.uses[model_output] += 1
        self.fusions: dict[str, ResidualFusion] = {}
        self.absorbed: set[str] = set()
        index = {layer.output: k for k, layer in enumerate(layers)}
        for k, (layer, lp) in enumerate(zip(layers, plan.layers, strict=True)):
            if layer.kind == "add" and _int8_only(lp) and _same_shapes(layer):
                self._fuse_add(layers, plan, index, k)

    def _fuse_add(self, layers: list[Layer], plan: QuantPlan, index: dict, k: int) -> None:
        """Fuse into the operand computed last: the other operand then exists when the convolution runs."""
        add = layers[k]
        producers = [index.get(v, -1) for v in add.inputs]
        last = max(range(2), key=lambda i: producers[i])
        p = producers[last]
        if p < 0 or add.inputs[0].same_as(add.inputs[1]):
            return
        conv, conv_plan = layers[p], plan.layers[p]
        if conv.kind not in CONV_KINDS or conv.name in self.fusions or self.uses[conv.output] != 1:
            return
        if not _int8_only(conv_plan):
            return
        self.fusions[conv.name] = ResidualFusion(add, plan.layers[k], add.inputs[1 - last], last == 0)
        self.absorbed.add(add.name)

    def conv_mode(self, layer: Layer, lp: LayerPlan) -> str | None:
        """Mode "channel" (depthwise), "pixel" (1x1) or None: how ``layer`` may run over its dying input."""
        if layer.name in self.fusions or not _int8_only(lp) or self.uses[layer.inputs[0]] != 1:
            return None
        c, o = layer.in_shapes[0][-1], layer.out_shape[-1]  # channels last
        kernel = layer.weight.shape[1:-1]
        if layer.attrs["groups"] == c == o:
            return "channel"
        if layer.attrs["groups"] == 1 and all(s == 1 for s in kernel) and not any(layer.attrs["padding"]):
            return "pixel"
        return None


def _int8_only(lp: LayerPlan) -> bool:
    return (
        lp.codebook is None
        and lp.thresholds is None
        and lp.out_codebook is None
        and all(cb is None for cb in lp.in_codebooks)
    )


def _same_shapes(layer: Layer) -> bool:
    return all(tuple(s) == tuple(layer.out_shape) for s in layer.in_shapes)
