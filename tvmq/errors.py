"""Error types raised at tvmq's public boundaries.

Every message names what is wrong (op, node, tensor, file or argument) and, where it helps, what to do.
"""


class TvmqError(Exception):
    """Base class of every error tvmq raises on bad input."""


class ModelLoadError(TvmqError):
    """A model file is missing, truncated or not a model of the expected format."""


class UnsupportedOpError(TvmqError):
    """A model uses operators tvmq cannot quantize; raised before any work starts."""


class ConfigError(TvmqError):
    """A QuantConfig field or an argument has an invalid value."""


class CalibrationDataError(TvmqError):
    """Calibration or inference data has the wrong shape, dtype, size or non-finite values."""


class InvalidTensorError(TvmqError):
    """A model tensor (weight, bias, parameter) holds NaN/Inf or otherwise unusable values."""


class TargetError(ConfigError):
    """A target string, dict or ``tvm.target.Target`` names an unknown kind or core."""


class ToolchainError(TvmqError):
    """The Cortex-M cross compiler, binutils or QEMU is missing or failed; the message says how to install or fix."""


class DeviceError(TvmqError):
    """A program on the device (QEMU or a board) hung, crashed or returned malformed results."""


class ExportError(TvmqError):
    """An artifact could not be written (unwritable or non-empty output directory, disk full, ...)."""
