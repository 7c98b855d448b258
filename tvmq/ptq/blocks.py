"""Blocks for block-wise reconstruction (BRECQ, Li et al. 2021): runs of layers with one input and one output.

Found in the layer graph: a residual block (the layers from the tensor where the two branches of an ``add`` part,
through the ``add``) and a depthwise-pointwise pair (a depthwise conv whose only consumer is a 1x1 conv). A user
may name blocks instead (``ptq_options={"adaround": {"blocks": [["conv2d_1", "conv2d_2", "add_0"]]}}``); a list
that is not such a run of the graph is refused naming the layers and what is wrong. Conv/dense layers in no block
are reconstructed alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..relay_passes.layers import WEIGHTED_KINDS, Layer
from .npgraph import SUPPORTED


@dataclass
class Block:
    """A run of layers (execution order) reading one tensor from outside and producing one tensor used outside."""

    layers: list[Layer]
    input: object  # relax.Var
    output: object  # relax.Var
    kind: str  # "residual", "depthwise-pointwise", "user" or "layer" (a conv/dense layer alone)

    @property
    def name(self) -> str:
        return self.layers[0].name if len(self.layers) == 1 else f"{self.layers[0].name}..{self.layers[-1].name}"

    @property
    def weighted(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.kind in WEIGHTED_KINDS]


def find_blocks(layers: list[Layer], model_output) -> list[Block]:
    """Residual blocks and depthwise-pointwise pairs of the graph (not overlapping, execution order)."""
    order = {layer.output: k for k, layer in enumerate(layers)}
    producer = {layer.output: layer for layer in layers}
    consumers = _consumers(layers)
    ancestors: dict = {}
    for layer in layers:
        ancestors[layer.output] = {layer.output}.union(*(ancestors.get(v, {v}) for v in layer.inputs))
    found: list[Block] = []
    taken: set[str] = set()
    for layer in layers:
        if layer.kind != "add":
            continue
        a, b = (ancestors.get(v, {v}) for v in layer.inputs)
        common = a & b
        if not common:
            continue
        start = max(common, key=lambda v: order.get(v, -1))
        members = [lay for lay in layers if lay is layer or (lay.output in (a | b) and not lay.output.same_as(start)
                                                            and start in ancestors[lay.output])]  # fmt: skip
        block = _as_block(members, producer, consumers, model_output, "residual")
        if block is not None and block.weighted and not taken & {m.name for m in members}:
            found.append(block)
            taken.update(m.name for m in members)
    for layer in layers:
        if layer.name in taken or not _depthwise(layer):
            continue
        users = consumers.get(layer.output, [])
        if len(users) == 1 and _pointwise(users[0]) and users[0].name not in taken:
            block = _as_block([layer, users[0]], producer, consumers, model_output, "depthwise-pointwise")
            if block is not None:
                found.append(block)
                taken.update((layer.name, users[0].name))
    return sorted(found, key=lambda blk: layers.index(blk.layers[0]))


def user_blocks(layers: list[Layer], spec: list, model_output) -> list[Block]:
    """Blocks named by the user, checked against the graph (a clear error naming the layers otherwise)."""
    by_name = {layer.name: layer for layer in layers}
    producer = {layer.output: layer for layer in layers}
    consumers = _consumers(layers)
    seen: dict[str, int] = {}
    blocks = []
    for k, names in enumerate(spec):
        if isinstance(names, str) or not isinstance(names, list | tuple) or not names:
            raise ConfigError(f"block {k}: expected a non-empty list of layer names, got {names!r}")
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"block {list(names)}: unknown layer(s) {unknown}; the model's layers are: "
                              f"{', '.join(by_name)}")  # fmt: skip
        for n in names:
            if n in seen:
                raise ConfigError(f"block {list(names)}: layer {n} is already in block {seen[n]}")
            seen[n] = k
        members = sorted((by_name[n] for n in names), key=layers.index)
        unsupported = [f"{m.name} ({m.kind})" for m in members if m.kind not in SUPPORTED]
        if unsupported:
            raise ConfigError(f"block {list(names)}: layer(s) {unsupported} cannot be part of a block (no gradient)")
        if not any(m.kind in WEIGHTED_KINDS for m in members):
            raise ConfigError(f"block {list(names)} has no conv or dense layer to reconstruct")
        block = _as_block(members, producer, consumers, model_output, "user", explain=True)
        blocks.append(block)
    return sorted(blocks, key=lambda blk: layers.index(blk.layers[0]))


def units(layers: list[Layer], blocks: list[Block]) -> list[Block]:
    """The blocks plus every conv/dense layer in none of them as a block of its own, in execution order."""
    inside = {layer.name for blk in blocks for layer in blk.layers}
    alone = [Block([layer], layer.inputs[0], layer.output, "layer") for layer in layers
             if layer.kind in WEIGHTED_KINDS and layer.name not in inside]  # fmt: skip
    return sorted(blocks + alone, key=lambda blk: layers.index(blk.layers[0]))


def _as_block(members: list[Layer], producer: dict, consumers: dict, model_output, kind: str,
              explain: bool = False) -> Block | None:  # fmt: skip
    """The block of ``members`` if they read one outside tensor and only their last output leaves them."""
    names = [m.name for m in members]
    produced = {m.output for m in members}
    outside_in = []
    for m in members:
        for v in m.inputs:
            if v not in produced and v not in outside_in:
                outside_in.append(v)
    leaving = [m for m in members if m.output.same_as(model_output)
               or any(c.name not in names for c in consumers.get(m.output, []))]  # fmt: skip
    problem = None
    if len(outside_in) != 1:
        sources = [producer[v].name if v in producer else "the model input" for v in outside_in]
        problem = f"it reads {len(outside_in)} tensors from outside the block (outputs of {', '.join(sources)})"
    elif len(leaving) != 1 or leaving[0] is not members[-1]:
        used = ", ".join(m.name for m in leaving) or "none"
        problem = (f"its result must be the output of its last layer {members[-1].name}, used outside; layers whose "
                   f"outputs are used outside the block: {used}")  # fmt: skip
    if problem is not None:
        if explain:
            raise ConfigError(f"block {names} does not match the graph: {problem}. A block is a run of layers with "
                              "one input and one output, e.g. a residual block through its add")  # fmt: skip
        return None
    return Block(members, outside_in[0], members[-1].output, kind)


def _consumers(layers: list[Layer]) -> dict:
    out: dict = {}
    for layer in layers:
        for v in layer.inputs:
            out.setdefault(v, []).append(layer)
    return out


def _depthwise(layer: Layer) -> bool:
    if layer.kind not in ("conv2d", "conv1d"):
        return False
    groups = layer.attrs["groups"]
    return groups > 1 and groups == layer.in_shapes[0][-1] == layer.weight.shape[0]


def _pointwise(layer: Layer) -> bool:
    return (layer.kind in ("conv2d", "conv1d") and layer.attrs["groups"] == 1
            and all(k == 1 for k in layer.weight.shape[1:-1]))  # fmt: skip
