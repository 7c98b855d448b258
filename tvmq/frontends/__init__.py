"""Frontends: model files -> float Relax IRModules (ONNX, TFLite)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx as onnx_pkg
import tvm

from ..errors import ModelLoadError
from .onnx import from_onnx


def from_tflite(model: str | os.PathLike | bytes) -> tvm.IRModule:
    """Import a float TFLite model (weights stored quantized are dequantized at import)."""
    from .tflite import from_tflite as _from_tflite

    return _from_tflite(model)


def load_model(model: str | os.PathLike | bytes | onnx_pkg.ModelProto) -> tvm.IRModule:
    """Import a model by its type: ONNX ModelProto, ``.onnx`` path, ``.tflite`` path or TFLite bytes."""
    if isinstance(model, onnx_pkg.ModelProto):
        return from_onnx(model)
    if isinstance(model, bytes | bytearray):
        return from_tflite(bytes(model))
    if not isinstance(model, str | os.PathLike):
        raise ModelLoadError(f"expected a model path, bytes or onnx.ModelProto, got {type(model).__name__}")
    suffix = Path(model).suffix.lower()
    if suffix == ".onnx":
        return from_onnx(model)
    if suffix == ".tflite":
        return from_tflite(model)
    raise ModelLoadError(f"cannot tell the format of model file '{model}': expected a .onnx or .tflite file")


__all__ = ["from_onnx", "from_tflite", "load_model"]
