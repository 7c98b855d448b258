"""Train the ``digits`` example CNN and write tvmq's shipped example files.

Run from the repository root::

    pip install -e .[train]
    python examples/train_digits.py

Writes ``tvmq/examples/data/digits.{onnx,npz,json}``. Tests never run this script; they only read its
output. Data: scikit-learn's bundled ``load_digits`` (1797 8x8 grey images, no download), scaled from
0..16 to [0, 1]. Split: ``train_test_split(test_size=0.25, random_state=0, stratify=y)``.

The network is small but covers Conv2d, unfused BatchNorm2d, ReLU, ReLU6 (ONNX Clip), MaxPool2d, Flatten
and Linear (Gemm), the op kinds tvmq's quantizer supports. BatchNorm is exported unfused
(``do_constant_folding=False``, eval mode) so the quantizer's BN-folding pass has something to fold.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

NAME = "digits"
SEED = 0
OPSET = 13
INPUT_SHAPE = (1, 1, 8, 8)
N_CALIBRATION = 512
EPOCHS = 40
BATCH = 64
DATA_DIR = Path(__file__).resolve().parent.parent / "tvmq" / "examples" / "data"
SPLIT = (
    "scikit-learn load_digits split by train_test_split(test_size=0.25, random_state=0, stratify=y): "
    "1347 training images (calibration = the first 512 of them, unlabeled) and 450 test images."
)


def seed_everything(seed: int) -> None:
    """Seed every RNG training touches so reruns give the same shipped files."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x2, pool, Conv-BN-ReLU6, pool, Linear: 8x8 -> 4x4 -> 2x2 -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU6(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.flatten(x, 1) exports as a single ONNX Flatten node (no Shape/Gather/Concat).
        return self.classifier(torch.flatten(self.features(x), 1))


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 NCHW in [0, 1] with int64 labels, split as documented in SPLIT."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_train, x_test, y_train, y_test


def train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    """Plain Adam with cosine decay; enough for >97% on this easy data set."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    gen = torch.Generator().manual_seed(SEED)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), BATCH):
            idx = perm[i : i + BATCH]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    model.eval()


def export_onnx(model: nn.Module, path: Path) -> list[str]:
    """Export with a fixed batch of 1 and BatchNorm left unfused; return the graph's sorted op kinds."""
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(INPUT_SHAPE, dtype=torch.float32),),
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


def main() -> None:
    seed_everything(SEED)
    x_train, x_test, y_train, y_test = load_data()
    model = DigitsCNN()
    train(model, x_train, y_train)

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    onnx_path = DATA_DIR / f"{NAME}.onnx"
    ops = export_onnx(model, onnx_path)
    accuracy = onnx_accuracy(onnx_path, x_test, y_test)

    np.savez_compressed(
        DATA_DIR / f"{NAME}.npz",
        calibration=np.ascontiguousarray(x_train[:N_CALIBRATION], dtype=np.float32),
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_test=np.ascontiguousarray(y_test, dtype=np.int64),
    )
    meta = {
        "name": NAME,
        "description": "8x8 handwritten digits (scikit-learn load_digits), small 2-D CNN with BatchNorm, "
        "ReLU/ReLU6 and max pooling; 10 classes.",
        "input_shape": list(INPUT_SHAPE),
        "input_layout": "NCHW",
        "classes": [str(c) for c in range(10)],
        "float_accuracy": accuracy,
        "split": SPLIT,
        "train_command": "pip install -e .[train] && python examples/train_digits.py",
        "onnx_ops": ops,
        "input_range": "pixel / 16, in [0, 1]",
    }
    (DATA_DIR / f"{NAME}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{NAME}: ops={ops} float_accuracy={accuracy:.4f} calibration={N_CALIBRATION} test={len(x_test)}")


if __name__ == "__main__":
    main()
