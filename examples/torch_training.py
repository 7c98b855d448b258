"""What every example training script shares: seeding, the training loop, the float ONNX export and its accuracy.

Used by ``train_digits.py``, ``train_basicmotions.py`` and ``train_zoo.py`` (run from the repository root with
torch installed; tests never import this). One copy, so the shipped models are all trained and exported alike.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

OPSET = 13


def seed_everything(seed: int) -> None:
    """Seed every RNG training touches so reruns give the same shipped files."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int, weight_decay: float = 1e-4,
    seed: int = 0,
) -> None:  # fmt: skip
    """Adam (lr 3e-3) with cosine decay, shuffled mini-batches from a seeded generator; leaves the model in eval."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    model.eval()


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> list[str]:
    """Float ONNX, opset 13, batch 1, BatchNorm left unfused (the quantizer's folding pass has something to fold),
    eval mode; returns the graph's sorted op kinds."""
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(input_shape, dtype=torch.float32),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        opset_version=OPSET,
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.EVAL,
        dynamo=False,
    )
    proto = constants_to_initializers(onnx.load(str(path)))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    ops = sorted({node.op_type for node in proto.graph.node})
    if "BatchNormalization" not in ops:
        raise RuntimeError(f"BatchNormalization was folded away during export; ops: {ops}")
    return ops


def constants_to_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Turn Constant nodes (Clip's min/max, emitted because constant folding is off) into initializers.

    Keeps the graph to the op kinds the quantizer supports; the values are unchanged.
    """
    graph = proto.graph
    kept = []
    for node in graph.node:
        if node.op_type == "Constant":
            (attr,) = node.attribute
            if attr.name != "value":
                raise RuntimeError(f"unexpected Constant attribute {attr.name!r} in {node.name}")
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attr.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return proto


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the ONNX model run with onnxruntime one sample at a time (its batch is fixed to 1)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = np.array([int(np.argmax(sess.run(None, {name: x[i : i + 1]})[0])) for i in range(len(x))])
    return float(np.mean(preds == y))
