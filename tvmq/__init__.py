"""tvmq: low-bit and non-linear quantization for microcontrollers, as an Apache TVM plugin.

Pipeline: ``from_onnx``/``from_tflite`` (float Relax) -> ``quantize`` (normalise, calibrate, realise integer ops)
-> ``QuantizedModel`` (host execution, simulation, summary) -> ``build`` (standalone C for a Cortex-M core)
-> ``tvmq.qemu.run`` (= ``tvmq.device.run``: bit-exact check and instruction counts on QEMU boards).
``QuantConfig(ptq=[...])`` adds post-training quantization (``tvmq.ptq``); ``mixed_precision`` picks per-layer bits
under a flash, arena or BOPs budget.
"""

from . import device, examples
from .codegen import Artifact, build
from .config import QuantConfig
from .device import qemu
from .errors import (
    CalibrationDataError,
    ConfigError,
    DeviceError,
    ExportError,
    InvalidTensorError,
    ModelLoadError,
    TargetError,
    ToolchainError,
    TvmqError,
    UnsupportedOpError,
)
from .frontends import from_onnx, from_tflite, load_model
from .ptq.mixed import mixed_precision
from .quant.model import QuantizedModel
from .quant.prequantized import load_quantized
from .quant.quantize import quantize
from .tuning import tune

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "CalibrationDataError",
    "ConfigError",
    "DeviceError",
    "ExportError",
    "InvalidTensorError",
    "ModelLoadError",
    "QuantConfig",
    "QuantizedModel",
    "TargetError",
    "ToolchainError",
    "TvmqError",
    "UnsupportedOpError",
    "build",
    "device",
    "examples",
    "from_onnx",
    "from_tflite",
    "load_model",
    "mixed_precision",
    "qemu",
    "quantize",
    "load_quantized",
    "tune",
]
