"""Train tvmq's model zoo and write its example files plus int8 TFLite and QDQ ONNX references.

The zoo covers the four architecture families of tinyML post-training-quantization studies, on data that
ships inside pip packages (no download):

* ``digits`` (plain CNN) and ``basicmotions`` (1-D CNN): trained by ``train_digits.py`` and
  ``train_basicmotions.py``; this script never retrains them, it only adds their int8 references.
* ``digits_res8``: ResNet-8 (MLPerf Tiny topology) on scikit-learn's 8x8 digits.
* ``digits_mbv1``: MobileNetV1-style depthwise-separable stack (width 0.5) on the same digits.
* ``vowels_dscnn``: DS-CNN as used for keyword spotting, on aeon's bundled JapaneseVowels (12 cepstral
  coefficients per frame, 9 speakers), each utterance padded/cropped to 26 frames: a 1x26x12 "spectrogram".

For each new model it writes ``tvmq/examples/data/<name>.{onnx,npz,json}`` in the format the loader
``tvmq.examples`` reads (float ONNX opset 13, batch 1, BatchNorm unfused, eval mode). For every model,
the two existing ones included, it then writes ``<name>.int8.tflite`` (TensorFlow's full-integer int8
converter on a Keras rebuild carrying the same weights) and ``<name>.qdq.onnx`` (onnxruntime
``quantize_static``, QDQ, per-channel int8 weights, int8 activations) and records their accuracies on
the whole test set, plus parameters, MACs and peak int8 activation bytes, in ``<name>.json`` (for the
two existing models only these keys are added; every other key keeps its value).

TensorFlow and torch stay out of tvmq's venv; run this with a separate one, from the repository root::

    python3 -m venv /tmp/trainvenv
    /tmp/trainvenv/bin/pip install torch==2.13.0   # CPU wheel; install torch first so no CUDA build is pulled
    /tmp/trainvenv/bin/pip install torch==2.13.0 scikit-learn aeon onnx onnxruntime onnxscript tensorflow-cpu
    /tmp/trainvenv/bin/python examples/train_zoo.py                      # all five models
    /tmp/trainvenv/bin/python examples/train_zoo.py --models digits_res8 # a subset
    /tmp/trainvenv/bin/python examples/train_zoo.py --export-only        # int8 files from the shipped ONNX

Seeds are fixed (torch, numpy, python) and reset before each model, so any subset reproduces the same files.
Tests never run this script; they only read its output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_training  # noqa: E402  (the training loop and export every example script uses)
import train_digits  # noqa: E402  (the same split as the shipped digits model)
import zoo_common  # noqa: E402

SEED = 0
DATA_DIR = train_digits.DATA_DIR
DIGITS_CLASSES = [str(c) for c in range(10)]
VOWEL_FRAMES = 26
VOWEL_COEFFS = 12
VOWEL_CLASSES = [str(c) for c in range(1, 10)]


# ----------------------------------------------------------------------------------------------- models
def conv_bn(cin: int, cout: int, k, stride=1, padding=None, groups: int = 1, act: type | None = nn.ReLU) -> list:
    """Conv (no bias, BN follows) + BatchNorm2d (+ activation)."""
    if padding is None:
        padding = tuple(x // 2 for x in k) if isinstance(k, tuple) else k // 2
    layers = [nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + ([act()] if act is not None else [])


class ResBlock(nn.Module):
    """ResNet v1 basic block: conv-BN-ReLU, conv-BN, + shortcut (1x1 strided conv when the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, 3, stride), *conv_bn(cout, cout, 3, act=None))
        self.shortcut = nn.Conv2d(cin, cout, 1, stride) if (cin, stride) != (cout, 1) else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet8(nn.Module):
    """MLPerf Tiny ResNet-8: stem 3x3/16, stages 16/32/64 (stride 1/2/2), GAP, dense. 8x8 -> 8 -> 4 -> 2."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(1, 16, 3), ResBlock(16, 16, 1), ResBlock(16, 32, 2), ResBlock(32, 64, 2), nn.AdaptiveAvgPool2d(1)
        )
        self.classifier = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def ds_block(cin: int, cout: int, stride: int, act: type) -> list:
    """Depthwise 3x3 conv-BN-act + pointwise 1x1 conv-BN-act."""
    return [*conv_bn(cin, cin, 3, stride, groups=cin, act=act), *conv_bn(cin, cout, 1, act=act)]


class MobileNetV1(nn.Module):
    """MobileNetV1, width 0.5 (16 -> 32 -> 64/s2 -> 64 -> 128/s2), ReLU6, GAP, dense. 8x8 -> 8 -> 4 -> 2."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        blocks = [(16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]
        self.features = nn.Sequential(
            *conv_bn(1, 16, 3, act=nn.ReLU6),
            *[layer for cin, cout, s in blocks for layer in ds_block(cin, cout, s, nn.ReLU6)],
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class DSCNN(nn.Module):
    """DS-CNN (Hello Edge KWS): conv 5x3/s2 over time x coefficients, 4 DS blocks of 32 ch, GAP, dense."""

    def __init__(self, classes: int = 9, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(1, width, (5, 3), (2, 2), (2, 1)),
            *[layer for _ in range(4) for layer in ds_block(width, width, 1, nn.ReLU)],
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# ------------------------------------------------------------------------------------------------- data
def load_vowels() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """JapaneseVowels from aeon's bundled files, standardised per coefficient, zero-padded/cropped to 26 frames.

    Returns x_train, x_test as (n, 1, 26, 12) float32 (frames x coefficients), int64 labels 0..8 (speaker
    1..9) and the training mean/std per coefficient (over all real training frames).
    """
    from aeon.datasets import load_classification

    x_tr, y_tr = load_classification("JapaneseVowels", split="train")
    x_te, y_te = load_classification("JapaneseVowels", split="test")
    frames = np.concatenate([np.asarray(s, dtype=np.float64) for s in x_tr], axis=1)  # (12, total frames)
    mean, std = frames.mean(axis=1), frames.std(axis=1)

    def fix(series: list) -> np.ndarray:
        out = np.zeros((len(series), 1, VOWEL_FRAMES, VOWEL_COEFFS), dtype=np.float32)
        for i, s in enumerate(series):
            s = ((np.asarray(s, dtype=np.float64) - mean[:, None]) / std[:, None]).T[:VOWEL_FRAMES]
            out[i, 0, : len(s)] = s
        return out

    labels = lambda y: np.array([VOWEL_CLASSES.index(str(v)) for v in y], dtype=np.int64)  # noqa: E731
    return fix(x_tr), fix(x_te), labels(y_tr), labels(y_te), mean, std


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str
    build: Callable[[], nn.Module]
    epochs: int
    batch: int
    n_calibration: int
    weight_decay: float
    description: str
    extra_meta: Callable[[], dict]


def _digits_meta() -> dict:
    return {"split": train_digits.SPLIT, "input_range": "pixel / 16, in [0, 1]"}


def _vowels_meta() -> dict:
    *_, mean, std = load_vowels()
    return {
        "split": "aeon's own JapaneseVowels train/test split: 270 training utterances (all used, unlabeled, as "
        "calibration) and 370 test utterances; 12 LPC cepstral coefficients per frame, standardised per "
        "coefficient with the training frames' mean/std, then zero-padded at the end (or cropped) to 26 frames.",
        "input_mean": [float(v) for v in mean],
        "input_std": [float(v) for v in std],
        "input_normalised": "npz inputs are already (raw - input_mean) / input_std per coefficient, "
        "laid out [frame, coefficient], zero-padded after the last frame",
    }


NEW_MODELS = {
    "digits_res8": ZooModel(
        "digits_res8", "resnet", lambda: ResNet8(10), 40, 64, 512, 1e-4,
        "8x8 handwritten digits (scikit-learn load_digits), ResNet-8 (MLPerf Tiny topology: stem conv, "
        "three residual stages of 16/32/64 channels with BatchNorm, ReLU, 1x1 strided conv shortcuts, "
        "global average pooling, dense); 10 classes.",
        _digits_meta,
    ),
    "digits_mbv1": ZooModel(
        "digits_mbv1", "mobilenetv1", lambda: MobileNetV1(10), 40, 64, 512, 0.0,
        "8x8 handwritten digits (scikit-learn load_digits), MobileNetV1-style width-0.5 network: stem conv "
        "and four depthwise 3x3 + pointwise 1x1 blocks with BatchNorm and ReLU6 (two of stride 2), global "
        "average pooling, dense; 10 classes.",
        _digits_meta,
    ),
    "vowels_dscnn": ZooModel(
        "vowels_dscnn", "dscnn", lambda: DSCNN(9), 150, 32, 270, 1e-4,
        "JapaneseVowels speaker recognition (aeon's bundled copy: 12 cepstral coefficients x 26 frames, "
        "9 speakers), DS-CNN as in keyword spotting: a 5x3 stride-2 conv, four depthwise-separable blocks "
        "with BatchNorm and ReLU, global average pooling, dense.",
        _vowels_meta,
    ),
}  # fmt: skip
EXISTING = {"digits": "cnn", "basicmotions": "cnn1d"}
ALL = [*EXISTING, *NEW_MODELS]


def load_split(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if name.startswith("digits"):
        return train_digits.load_data()
    x_train, x_test, y_train, y_test, _, _ = load_vowels()
    return x_train, x_test, y_train, y_test


# ------------------------------------------------------------------------------------------------ train
def train_new(spec: ZooModel) -> None:
    """Train one new zoo model and write its .onnx, .npz and base .json."""
    torch_training.seed_everything(SEED)
    x_train, x_test, y_train, y_test = load_split(spec.name)
    model = spec.build()
    torch_training.train(model, x_train, y_train, epochs=spec.epochs, batch=spec.batch,
                         weight_decay=spec.weight_decay, seed=SEED)  # fmt: skip
    onnx_path = DATA_DIR / f"{spec.name}.onnx"
    input_shape = (1, *x_train.shape[1:])
    ops = torch_training.export_onnx(model, input_shape, onnx_path)
    accuracy = torch_training.onnx_accuracy(onnx_path, x_test, y_test)
    np.savez_compressed(
        DATA_DIR / f"{spec.name}.npz",
        calibration=np.ascontiguousarray(x_train[: spec.n_calibration], dtype=np.float32),
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_test=np.ascontiguousarray(y_test, dtype=np.int64),
    )
    meta = {
        "name": spec.name,
        "description": spec.description,
        "input_shape": list(input_shape),
        "input_layout": "NCHW",
        "classes": DIGITS_CLASSES if spec.name.startswith("digits") else VOWEL_CLASSES,
        "float_accuracy": accuracy,
        "train_command": f"python examples/train_zoo.py --models {spec.name} (see its docstring for the venv)",
        "onnx_ops": ops,
        "family": spec.family,
        **spec.extra_meta(),
    }
    (DATA_DIR / f"{spec.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{spec.name}: trained, ops={ops} float_accuracy={accuracy:.4f}", flush=True)


# ----------------------------------------------------------------------------------------------- int8
def export_int8(name: str) -> dict:
    """Write <name>.int8.tflite and <name>.qdq.onnx from the shipped float files; merge results into the json."""
    onnx_path = DATA_DIR / f"{name}.onnx"
    with np.load(DATA_DIR / f"{name}.npz") as data:
        calib, x_test, y_test = (np.asarray(data[k]) for k in ("calibration", "x_test", "y_test"))
    keras_model = zoo_common.onnx_to_keras(onnx_path)
    err = zoo_common.check_keras(keras_model, onnx_path, x_test[:64])
    tflite_path = DATA_DIR / f"{name}.int8.tflite"
    tflite_path.write_bytes(zoo_common.tflite_int8(keras_model, calib))
    tfl_acc, tfl_ops = zoo_common.tflite_accuracy(tflite_path.read_bytes(), x_test, y_test)
    qdq_path = DATA_DIR / f"{name}.qdq.onnx"
    zoo_common.qdq_onnx(onnx_path, qdq_path, calib)
    qdq_acc, qdq_cpu_acc = zoo_common.qdq_accuracies(qdq_path, x_test, y_test)
    rank = x_test.ndim - 1
    added = {
        "family": EXISTING.get(name) or NEW_MODELS[name].family,
        **zoo_common.graph_stats(onnx_path),
        "tflite_int8_file": tflite_path.name,
        "tflite_int8_accuracy": tfl_acc,
        "tflite_input_layout": {2: "NWC", 3: "NHWC"}[rank],
        "tflite_ops": tfl_ops,
        "qdq_onnx_file": qdq_path.name,
        "qdq_accuracy": qdq_acc,
        "qdq_accuracy_ort_cpu_kernels": qdq_cpu_acc,
        "int8_references": "tflite: TFLiteConverter full-integer int8 (int8 input/output, TFLITE_BUILTINS_INT8, "
        "representative data = calibration) of a channels-last Keras copy of the ONNX weights; qdq: "
        "onnxruntime quantize_static (QDQ, per-channel int8 weights, int8 activations, MinMax) over calibration; "
        "qdq_accuracy runs the QDQ graph as written (graph optimizations off), qdq_accuracy_ort_cpu_kernels with "
        "onnxruntime's fused int8 CPU kernels, whose u8s8 sums can saturate on AVX2 CPUs without VNNI",
    }
    meta_path = DATA_DIR / f"{name}.json"
    meta = json.loads(meta_path.read_text())
    meta.update(added)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(
        f"{name}: keras max err {err:.1e}; float {meta['float_accuracy']:.4f} tflite-int8 {tfl_acc:.4f} "
        f"qdq {qdq_acc:.4f} (ort int8 kernels {qdq_cpu_acc:.4f}); params {added['params']} macs {added['macs']} "
        f"peak act {added['peak_activation_bytes_int8']} B",
        flush=True,
    )
    return added


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", nargs="+", choices=ALL, default=ALL, help="models to build (default: all)")
    parser.add_argument(
        "--export-only", action="store_true", help="do not train; only write the int8 files from the shipped ONNX"
    )
    args = parser.parse_args(argv)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        start = time.perf_counter()
        if name in NEW_MODELS and not args.export_only:
            train_new(NEW_MODELS[name])
        export_int8(name)
        print(f"{name}: done in {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
