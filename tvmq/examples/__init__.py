"""Example models shipped with tvmq, so the demo, benchmarks and tests run without any download.

Each example is a float ONNX model (opset 13, batch fixed to 1) plus its calibration and test data and a
json of metadata, all written by ``examples/train_<name>.py`` into ``tvmq/examples/data/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["ExampleModel", "available", "load"]

_DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class ExampleModel:
    """One shipped example: where its ONNX model is and the data to calibrate and evaluate it with.

    ``calibration`` and ``x_test`` are float32, batch-first, so ``x[i:i + 1]`` is one model input;
    ``y_test`` holds int64 class indices. ``float_accuracy`` is the float model's onnxruntime accuracy
    on the whole of ``x_test``, the reference a quantized model is compared against.
    """

    name: str
    model_path: Path
    calibration: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    float_accuracy: float
    input_layout: str
    description: str


def available() -> list[str]:
    """Names of the shipped examples (those with all of .onnx, .npz and .json present), sorted."""
    names = []
    for meta in sorted(_DATA_DIR.glob("*.json")):
        name = meta.stem
        if (_DATA_DIR / f"{name}.onnx").is_file() and (_DATA_DIR / f"{name}.npz").is_file():
            names.append(name)
    return names


def load(name: str) -> ExampleModel:
    """Load the shipped example ``name``; an unknown name raises ConfigError listing the known ones."""
    names = available()
    if name not in names:
        raise ConfigError(f"unknown example model {name!r}; available: {', '.join(names) or '(none)'}")
    meta = json.loads((_DATA_DIR / f"{name}.json").read_text())
    # Copy out of the NpzFile so the file handle is closed and the arrays outlive it.
    with np.load(_DATA_DIR / f"{name}.npz") as data:
        calibration = np.array(data["calibration"], dtype=np.float32)
        x_test = np.array(data["x_test"], dtype=np.float32)
        y_test = np.array(data["y_test"], dtype=np.int64)
    return ExampleModel(
        name=name,
        model_path=_DATA_DIR / f"{name}.onnx",
        calibration=calibration,
        x_test=x_test,
        y_test=y_test,
        float_accuracy=float(meta["float_accuracy"]),
        input_layout=str(meta["input_layout"]),
        description=str(meta["description"]),
    )
