"""tvmq: low-bit and non-linear quantization for microcontrollers, as an Apache TVM plugin.

Pipeline: ``from_onnx``/``from_tflite`` (float Relax) -> ``quantize`` (normalise, calibrate, realise integer ops)
-> ``QuantizedModel`` (host execution, simulation, summary).
"""

from . import examples
from .config import QuantConfig
from .errors import (
    CalibrationDataError,
    ConfigError,
    InvalidTensorError,
    ModelLoadError,
    TvmqError,
    UnsupportedOpError,
)
from .frontends import from_onnx, from_tflite, load_model
from .quant.model import QuantizedModel
from .quant.quantize import quantize

__version__ = "0.1.0"

__all__ = [
    "CalibrationDataError",
    "ConfigError",
    "InvalidTensorError",
    "ModelLoadError",
    "QuantConfig",
    "QuantizedModel",
    "TvmqError",
    "UnsupportedOpError",
    "examples",
    "from_onnx",
    "from_tflite",
    "load_model",
    "quantize",
]
