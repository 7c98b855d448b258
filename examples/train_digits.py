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
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch_training import export_onnx, onnx_accuracy, seed_everything, train

NAME = "digits"
SEED = 0
INPUT_SHAPE = (1, 1, 8, 8)
N_CALIBRATION = 512
EPOCHS = 40
BATCH = 64
DATA_DIR = Path(__file__).resolve().parent.parent / "tvmq" / "examples" / "data"
SPLIT = (
    "scikit-learn load_digits split by train_test_split(test_size=0.25, random_state=0, stratify=y): "
    "1347 training images (calibration = the first 512 of them, unlabeled) and 450 test images."
)


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


def main() -> None:
    seed_everything(SEED)
    x_train, x_test, y_train, y_test = load_data()
    model = DigitsCNN()
    train(model, x_train, y_train, epochs=EPOCHS, batch=BATCH, seed=SEED)

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    onnx_path = DATA_DIR / f"{NAME}.onnx"
    ops = export_onnx(model, INPUT_SHAPE, onnx_path)
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
