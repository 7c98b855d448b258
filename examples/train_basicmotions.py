"""Train the ``basicmotions`` example 1-D CNN and write tvmq's shipped example files.

Run from the repository root::

    pip install -e .[train]
    python examples/train_basicmotions.py

Writes ``tvmq/examples/data/basicmotions.{onnx,npz,json}``. Tests never run this script; they only read
its output. Data: the UEA BasicMotions data set that ships inside the aeon wheel (no download): 80
series of 6 channels (3-axis accelerometer, 3-axis gyroscope) x 100 steps, 4 activities, aeon's own
40 train / 40 test split. Each series is cut into sliding windows of length 50, stride 10 (6 windows
per series, label = series label), giving 240 training and 240 test windows. Every channel is
standardised with the mean/std of the training windows; the npz holds the *normalised* windows and
the json records ``input_mean``/``input_std`` so raw sensor data can be brought to the model's input.

The network is the usual small 1-D CNN for activity recognition: Conv1d, unfused BatchNorm1d, ReLU,
MaxPool1d, AdaptiveAvgPool1d(1) (ONNX GlobalAveragePool), Flatten and Linear (Gemm), all op kinds
tvmq's quantizer supports. BatchNorm is exported unfused so the quantizer's BN-folding pass runs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

NAME = "basicmotions"
SEED = 0
OPSET = 13
CHANNELS = 6
SERIES_LENGTH = 100
WINDOW = 50
STRIDE = 10
INPUT_SHAPE = (1, CHANNELS, WINDOW)
CLASSES = ["Standing", "Running", "Walking", "Badminton"]
EPOCHS = 150
BATCH = 32
DATA_DIR = Path(__file__).resolve().parent.parent / "tvmq" / "examples" / "data"
SPLIT = (
    "aeon's own BasicMotions train/test split (40/40 series), each series cut into 6 windows of length "
    "50 at stride 10 (labels from the series): 240 training windows (all used, unlabeled, as "
    "calibration) and 240 test windows, standardised per channel with the training windows' mean/std."
)


def _parse_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an equal-length multivariate .ts file: one series per line, channels split by ':'."""
    xs: list[list[list[float]]] = []
    ys: list[str] = []
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *channels, label = line.split(":")
        xs.append([[float(v) for v in ch.split(",")] for ch in channels])
        ys.append(label)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """BasicMotions ``split`` ("train"/"test") as (n, 6, 100) float64 and int64 labels indexing CLASSES.

    Uses aeon's loader when it imports; aeon's loader needs numba, so when numba is missing it falls back
    to parsing the same .ts file aeon ships (identical values, no download either way).
    """
    try:
        from aeon.datasets import load_classification

        x, y = load_classification("BasicMotions", split=split)
    except ImportError:
        import aeon

        folder = Path(aeon.__file__).parent / "datasets" / "data" / "BasicMotions"
        x, y = _parse_ts(folder / f"BasicMotions_{split.upper()}.ts")
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1:] != (CHANNELS, SERIES_LENGTH):
        raise RuntimeError(f"unexpected BasicMotions {split} shape {x.shape}")
    labels = np.array([CLASSES.index(str(v)) for v in y], dtype=np.int64)
    return x, labels


def windows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut (n, C, 100) series into (n*6, C, 50) windows, series-major, each with its series' label."""
    starts = range(0, SERIES_LENGTH - WINDOW + 1, STRIDE)
    xw = np.stack([s[:, t : t + WINDOW] for s in x for t in starts])
    yw = np.repeat(y, len(starts))
    return xw, yw


class MotionCNN(nn.Module):
    """Conv-BN-ReLU, pool, Conv-BN-ReLU, pool, Conv-ReLU, global average pool, Linear: 6x50 -> 4 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(CHANNELS, 16, 5, padding=2),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 3, padding=1),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.classifier = nn.Linear(32, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.flatten(x, 1) exports as a single ONNX Flatten node (no Shape/Gather/Concat).
        return self.classifier(torch.flatten(self.features(x), 1))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    """Adam with cosine decay over the 240 training windows."""
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


def seed_everything(seed: int) -> None:
    """Seed every RNG training touches so reruns give the same shipped files."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


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
    x_train, y_train = windows(*load_split("train"))
    x_test, y_test = windows(*load_split("test"))
    mean = x_train.mean(axis=(0, 2))
    std = x_train.std(axis=(0, 2))
    x_train = ((x_train - mean[None, :, None]) / std[None, :, None]).astype(np.float32)
    x_test = ((x_test - mean[None, :, None]) / std[None, :, None]).astype(np.float32)

    model = MotionCNN()
    train(model, x_train, y_train)

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    onnx_path = DATA_DIR / f"{NAME}.onnx"
    ops = export_onnx(model, onnx_path)
    accuracy = onnx_accuracy(onnx_path, x_test, y_test)

    np.savez_compressed(
        DATA_DIR / f"{NAME}.npz",
        calibration=np.ascontiguousarray(x_train, dtype=np.float32),
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_test=np.ascontiguousarray(y_test, dtype=np.int64),
    )
    meta = {
        "name": NAME,
        "description": "BasicMotions activity recognition (6-axis IMU windows of 50 steps, 4 activities), "
        "small 1-D CNN with BatchNorm, ReLU, max pooling and global average pooling.",
        "input_shape": list(INPUT_SHAPE),
        "input_layout": "NCW",
        "classes": CLASSES,
        "float_accuracy": accuracy,
        "split": SPLIT,
        "train_command": "pip install -e .[train] && python examples/train_basicmotions.py",
        "onnx_ops": ops,
        "input_mean": [float(v) for v in mean],
        "input_std": [float(v) for v in std],
        "input_normalised": "npz inputs are already (raw - input_mean) / input_std per channel",
    }
    (DATA_DIR / f"{NAME}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{NAME}: ops={ops} float_accuracy={accuracy:.4f} calibration={len(x_train)} test={len(x_test)}")


if __name__ == "__main__":
    main()
