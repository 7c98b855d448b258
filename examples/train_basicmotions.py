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
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch_training import export_onnx, onnx_accuracy, seed_everything, train

NAME = "basicmotions"
SEED = 0
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
    # aeon spells the labels "Standing" or "standing" depending on its version
    labels = np.array([[c.lower() for c in CLASSES].index(str(v).lower()) for v in y], dtype=np.int64)
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


def main() -> None:
    seed_everything(SEED)
    x_train, y_train = windows(*load_split("train"))
    x_test, y_test = windows(*load_split("test"))
    mean = x_train.mean(axis=(0, 2))
    std = x_train.std(axis=(0, 2))
    x_train = ((x_train - mean[None, :, None]) / std[None, :, None]).astype(np.float32)
    x_test = ((x_test - mean[None, :, None]) / std[None, :, None]).astype(np.float32)

    model = MotionCNN()
    train(model, x_train, y_train, epochs=EPOCHS, batch=BATCH, seed=SEED)

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    onnx_path = DATA_DIR / f"{NAME}.onnx"
    ops = export_onnx(model, INPUT_SHAPE, onnx_path)
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
