"""TFLite import: float models, and models whose weights are stored quantized, to a float32 Relax module.

TVM's Relax TFLite frontend imports float graphs, but refuses "dynamic range quantized" models (int8 weights
feeding float ops). tvmq wants a float graph to quantize itself, so such weights are dequantized at import:
every constant int8/uint8/int16 tensor with scale/zero-point (per tensor or per channel) and every float16
constant becomes a float32 constant, and a DEQUANTIZE of a constant becomes that constant. This is done by
handing TVM's converter a subclass that substitutes the dequantized values when it reads those tensors, so
the flatbuffer itself is never rewritten. Full-integer models (int8 activations) are refused here: they
belong to the pre-quantized import.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from ..errors import ModelLoadError, TvmqError
from .support import raise_if_unsupported

__all__ = ["SUPPORTED_TFLITE_OPS", "from_tflite"]

#: Builtin op types tvmq imports. DEQUANTIZE only with a constant fp16/int8 input (dequantized weights).
SUPPORTED_TFLITE_OPS: frozenset[str] = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "ADD",
        "CONCATENATION",
        "MAX_POOL_2D",
        "AVERAGE_POOL_2D",
        "MEAN",
        "RESHAPE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "TRANSPOSE",
        "PAD",
        "RELU",
        "RELU6",
        "SOFTMAX",
        "LOGISTIC",
        "DEQUANTIZE",
    }
)

# Op type reported for a DEQUANTIZE whose input is computed at run time (i.e. a quantized activation).
_RUNTIME_DEQUANTIZE = "DEQUANTIZE (of a non-constant tensor)"

# tflite.TensorType values (schema.fbs); spelled out so the module imports without touching tflite.
_FLOAT32, _FLOAT16, _INT32, _UINT8, _INT16, _INT8 = 0, 1, 2, 3, 7, 9
_QUANT_INT_TYPES = {_INT8: np.int8, _UINT8: np.uint8, _INT16: np.int16}
_TYPE_NAMES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    6: "bool",
    7: "int16",
    9: "int8",
}
_CUSTOM = 32


def _read_model(model: str | os.PathLike[str] | bytes | bytearray | memoryview) -> tuple[bytes, str]:
    """Return the model bytes and a label naming where they came from, for error messages."""
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model), "<TFLite model bytes>"
    if not isinstance(model, str | os.PathLike):
        raise ModelLoadError(f"from_tflite expects a .tflite path or the file's bytes, got {type(model).__name__}")
    path = Path(model)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise ModelLoadError(f"TFLite model file not found: '{path}'") from None
    except OSError as err:
        raise ModelLoadError(f"cannot read TFLite model file '{path}': {err}") from None


def _parse(buf: bytes, label: str) -> Any:
    """Parse the flatbuffer and touch every table tvmq and TVM read, so truncation shows here, not in TVM."""
    import tflite

    bad = f"'{label}' is not a valid .tflite flatbuffer"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelLoadError(f"{bad} (no 'TFL3' file identifier at bytes 4..8; {len(buf)} bytes)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() < 1:
            raise ModelLoadError(f"{bad}: it has no subgraph")
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            code.BuiltinCode(), code.DeprecatedBuiltinCode(), code.CustomCode()
        for i in range(model.BuffersLength()):
            b = model.Buffers(i)
            if b.DataLength() and b.DataAsNumpy().size != b.DataLength():
                raise ValueError(f"buffer {i} runs past the end of the file")
        sg = model.Subgraphs(0)
        sg.InputsAsNumpy(), sg.OutputsAsNumpy()
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            t.Name(), t.Type(), t.ShapeAsNumpy(), model.Buffers(t.Buffer())
            q = t.Quantization()
            if q is not None:
                q.ScaleAsNumpy(), q.ZeroPointAsNumpy(), q.QuantizedDimension()
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            model.OperatorCodes(op.OpcodeIndex()), op.InputsAsNumpy(), op.OutputsAsNumpy()
    except ModelLoadError:
        raise
    except Exception as err:  # flatbuffers reports damage as struct/Index/Value/TypeErrors
        raise ModelLoadError(f"{bad} (the file is truncated or damaged: {type(err).__name__}: {err})") from None
    return model


def _op_name(model: Any, op: Any) -> str:
    """Builtin op name as in TFLite's schema (e.g. 'CONV_2D'); 'CUSTOM(<code>)' for custom ops."""
    from tflite.BuiltinOperator import BuiltinOperator

    code = model.OperatorCodes(op.OpcodeIndex())
    # Schema v3a: codes >= 127 live in BuiltinCode, older files only fill DeprecatedBuiltinCode.
    builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
    if builtin == _CUSTOM:
        custom = code.CustomCode()
        return f"CUSTOM({custom.decode(errors='replace') if custom else '?'})"
    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    return names.get(builtin, f"BUILTIN_{builtin}")


def _tensor_name(sg: Any, idx: int) -> str:
    name = sg.Tensors(idx).Name()
    return name.decode(errors="replace") if name else f"tensor_{idx}"


def _is_constant(model: Any, sg: Any, idx: int) -> bool:
    """A tensor is constant when its buffer holds data (run-time tensors point at an empty buffer)."""
    return model.Buffers(sg.Tensors(idx).Buffer()).DataLength() > 0 and idx not in set(sg.InputsAsNumpy())


def _is_quantized(t: Any) -> bool:
    q = t.Quantization()
    return q is not None and q.ScaleLength() > 0 and bool(np.any(q.ScaleAsNumpy() != 0))


def _refuse_full_integer(model: Any, sg: Any, label: str) -> None:
    """Full-integer models keep activations in int8; they need the pre-quantized import, not this one."""
    inputs = [int(i) for i in sg.InputsAsNumpy()]
    runtime = inputs + [i for i in range(sg.TensorsLength()) if not _is_constant(model, sg, i) and i not in inputs]
    for idx in runtime:
        t = sg.Tensors(idx)
        if t.Type() in _QUANT_INT_TYPES:
            kind = "input tensor" if idx in inputs else "activation tensor"
            raise ModelLoadError(
                f"'{label}' is a full-integer quantized TFLite model: {kind} '{_tensor_name(sg, idx)}' is "
                f"{_TYPE_NAMES[t.Type()]}. from_tflite imports float models and models with quantized "
                "weights only (dynamic-range or float16). Import this model with the pre-quantized import "
                "instead: tvmq.load_quantized(...)."
            )
    for idx in inputs:
        t = sg.Tensors(idx)
        if t.Type() != _FLOAT32:
            raise ModelLoadError(
                f"'{label}': model input '{_tensor_name(sg, idx)}' is {_TYPE_NAMES.get(t.Type(), t.Type())}; "
                "tvmq imports TFLite models with float32 inputs only."
            )


def _found_ops(model: Any, sg: Any) -> list[tuple[str, str]]:
    """Every operator of subgraph 0 as (op type, name of its first output tensor)."""
    found = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        kind = _op_name(model, op)
        if kind == "DEQUANTIZE" and not all(_is_constant(model, sg, int(j)) for j in op.InputsAsNumpy()):
            kind = _RUNTIME_DEQUANTIZE
        outs = op.OutputsAsNumpy()
        name = _tensor_name(sg, int(outs[0])) if len(outs) else f"operator_{i}"
        found.append((kind, name))
    return found


def _dequantize(t: Any, data: np.ndarray, name: str, label: str) -> np.ndarray:
    """w = (q - zero_point) * scale, per channel along quantized_dimension when there are several scales."""
    shape = [int(d) for d in t.ShapeAsNumpy()]
    q = np.frombuffer(data.tobytes(), dtype=_QUANT_INT_TYPES[t.Type()]).reshape(shape).astype(np.float64)
    quant = t.Quantization()
    scale = quant.ScaleAsNumpy().astype(np.float64)
    zp = quant.ZeroPointAsNumpy()
    zp = np.zeros_like(scale) if isinstance(zp, int) or np.size(zp) == 0 else zp.astype(np.float64)
    if scale.size > 1:
        axis = int(quant.QuantizedDimension())
        if axis >= q.ndim or q.shape[axis] != scale.size or zp.size not in (1, scale.size):
            raise ModelLoadError(
                f"'{label}': weight tensor '{name}' (shape {shape}) has {scale.size} scales for quantized "
                f"dimension {axis}; cannot dequantize it."
            )
        bshape = [1] * q.ndim
        bshape[axis] = -1
        scale = scale.reshape(bshape)
        zp = zp.reshape(bshape) if zp.size > 1 else zp.reshape(())
    else:
        scale, zp = scale.reshape(()), zp.reshape(-1)[0] if zp.size else 0.0
    w = ((q - zp) * scale).astype(np.float32)
    if not np.all(np.isfinite(w)):
        raise ModelLoadError(f"'{label}': dequantized weight tensor '{name}' holds NaN/Inf values.")
    return w


def _dequantized_constants(model: Any, sg: Any, label: str) -> dict[int, np.ndarray]:
    """Float32 values of every constant of subgraph 0 stored as quantized integers or float16."""
    out = {}
    for idx in range(sg.TensorsLength()):
        if not _is_constant(model, sg, idx):
            continue
        t = sg.Tensors(idx)
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        shape = [int(d) for d in t.ShapeAsNumpy()]
        if t.Type() == _FLOAT16:
            out[idx] = np.frombuffer(data.tobytes(), dtype=np.float16).reshape(shape).astype(np.float32)
        elif t.Type() in _QUANT_INT_TYPES and _is_quantized(t):
            out[idx] = _dequantize(t, data, _tensor_name(sg, idx), label)
    return out


def _converter_class() -> type:
    """TVM's OperatorConverter, reading dequantized float32 values for the weights tvmq dequantized."""
    import tflite
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter, TensorWrapper

    class _FloatTensor(tflite.Tensor):
        """The same tensor table, seen as an unquantized float32 tensor."""

        def __init__(self, tensor: Any) -> None:
            self._tab = tensor._tab

        def Type(self) -> int:  # noqa: N802 - flatbuffers accessor name
            return _FLOAT32

        def Quantization(self) -> None:  # noqa: N802
            return None

    class _FloatBuffer(tflite.Buffer):
        """A buffer whose data is the dequantized float32 array (TVM reinterprets it by tensor type)."""

        def __init__(self, buffer: Any, values: np.ndarray) -> None:
            self._tab = buffer._tab
            self._bytes = np.ascontiguousarray(values, dtype=np.float32).view(np.uint8).reshape(-1)

        def DataAsNumpy(self) -> np.ndarray:  # noqa: N802
            return self._bytes

        def DataLength(self) -> int:  # noqa: N802
            return int(self._bytes.size)

        def Data(self, j: int) -> int:  # noqa: N802
            return int(self._bytes[j])

        def DataIsNone(self) -> bool:  # noqa: N802
            return False

    class _DequantizingConverter(OperatorConverter):
        float_tensor = _FloatTensor  # the float32 view of a tensor table, for converters built on this one

        def __init__(
            self,
            model: Any,
            subgraph: Any,
            exp_tab: Any,
            ctx: Any,
            *args: Any,
            dequantized: dict[int, np.ndarray],
            **kwargs: Any,
        ) -> None:
            super().__init__(model, subgraph, exp_tab, ctx, *args, **kwargs)
            self._dequantized = dequantized

        def get_tensors(self, tensors_idx_list: Iterable[int]) -> list[Any]:
            wrappers = super().get_tensors(tensors_idx_list)
            for k, w in enumerate(wrappers):
                values = self._dequantized.get(int(w.tensor_idx))
                if values is not None:
                    wrappers[k] = TensorWrapper(w.tensor_idx, _FloatTensor(w.tensor), _FloatBuffer(w.buffer, values))
            return wrappers

        def convert_dequantize(self, op: Any) -> Any:
            # DEQUANTIZE of a weight tvmq already dequantized: its output is simply that float32 constant.
            (inp,) = self.get_input_tensors(op)
            if int(inp.tensor_idx) in self._dequantized:
                return self.get_tensor_expr(inp)
            return super().convert_dequantize(op)

    return _DequantizingConverter


def from_tflite(model: str | os.PathLike[str] | bytes) -> tvm.IRModule:
    """Import a float (or weight-quantized) .tflite model as a Relax module with float32 inputs.

    ``model`` is a path or the file's bytes. Raises ModelLoadError for a missing or damaged file and for
    full-integer models, UnsupportedOpError (listing every offending node) before any conversion work.
    """
    from tvm.relax.frontend.tflite import from_tflite as tvm_from_tflite

    buf, label = _read_model(model)
    tfl = _parse(buf, label)
    sg = tfl.Subgraphs(0)
    _refuse_full_integer(tfl, sg, label)
    raise_if_unsupported("TFLite", _found_ops(tfl, sg), SUPPORTED_TFLITE_OPS)
    dequantized = _dequantized_constants(tfl, sg, label)

    converter = functools.partial(_converter_class(), dequantized=dequantized)
    try:
        mod = tvm_from_tflite(tfl, op_converter=converter)
        # TVM emits layout changes of constant weights (permute_dims to HWIO/(in, out), depthwise reshape)
        # as graph ops when a weight comes out of a DEQUANTIZE; folding leaves every weight a plain constant.
        mod = tvm.relax.transform.FoldConstant()(mod)
    except TvmqError:
        raise
    except Exception as err:  # TVM reports unconvertible attributes as TVMError/OpNotImplemented/AssertionError
        raise ModelLoadError(f"TVM's TFLite frontend could not import '{label}': {type(err).__name__}: {err}") from err
    # Weights are already inlined as relax constants; the duplicate "params" attribute only holds copies.
    main = mod["main"]
    if main.attrs is not None and "params" in main.attrs:
        mod["main"] = main.without_attr("params")
    return mod
