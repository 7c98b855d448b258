"""One PrimFunc builder per integer op: concrete shapes and attributes in, a shape-static PrimFunc out.

Every builder returns a ``tirx.PrimFunc`` WITHOUT a ``global_symbol`` (add it to a Relax module with
``bb.add_func(f, name)``, or give it one with ``f.with_attr("global_symbol", name)``). Argument order is
always [data inputs..., weight, bias (if any), mult, shift, tables..., output] and each docstring spells
it out. Scalar quantization parameters are baked in as immediates; per-channel ones are tensor arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

from .conv import qconv2d
from .data_movement import qconcat, qpad, qtranspose
from .dense import qdense
from .elementwise import dequantize, qadd, qclamp, qlut, qrequantize, quantize
from .pool import qavg_pool2d, qmax_pool2d
from .softmax import qsoftmax


def _prim_func(args: Sequence[te.Tensor]) -> tirx.PrimFunc:
    return te.create_prim_func(list(args)).without_attr("global_symbol")


def _shape(s: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in s)
    if any(d <= 0 for d in shape):
        raise ValueError(f"shapes must be static and positive, got {tuple(s)}")
    return shape


def _weight_params(weight_shape: Sequence[int], has_bias: bool, pow2: bool):
    """Placeholders of a weighted op: weight int8, bias int32 (O,) or None, mult int32 (O,) or None, shift."""
    o = int(weight_shape[0])
    weight = te.placeholder(_shape(weight_shape), "int8", name="weight")
    bias = te.placeholder((o,), "int32", name="bias") if has_bias else None
    mult = None if pow2 else te.placeholder((o,), "int32", name="mult")
    return weight, bias, mult, te.placeholder((o,), "int32", name="shift")


def _present(*tensors: te.Tensor | None) -> list[te.Tensor]:
    """The PrimFunc argument list of the optional parameters that exist, in order."""
    return [t for t in tensors if t is not None]


def qconv2d_primfunc(
    data_shape: Sequence[int],
    weight_shape: Sequence[int],
    *,
    has_bias: bool = True,
    strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
    input_zp: int = 0,
    output_zp: int = 0,
    act_min: int = -128,
    act_max: int = 127,
    pow2: bool = False,
) -> tirx.PrimFunc:
    """Args: data int8 (N,H,W,C), weight int8 (O,KH,KW,C/groups), [bias int32 (O,)], [mult int32 (O,)
    unless pow2], shift int32 (O,), output int8 (N,OH,OW,O). padding = (top, left, bottom, right)."""
    data = te.placeholder(_shape(data_shape), "int8", name="data")
    weight, bias, mult, shift = _weight_params(weight_shape, has_bias, pow2)
    out = qconv2d(
        data,
        weight,
        bias,
        mult,
        shift,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        input_zp=input_zp,
        output_zp=output_zp,
        act_min=act_min,
        act_max=act_max,
    )
    return _prim_func([data, *_present(weight, bias, mult, shift), out])


def qdense_primfunc(
    data_shape: Sequence[int],
    weight_shape: Sequence[int],
    *,
    has_bias: bool = True,
    input_zp: int = 0,
    output_zp: int = 0,
    act_min: int = -128,
    act_max: int = 127,
    pow2: bool = False,
) -> tirx.PrimFunc:
    """Args: data int8 (N,K), weight int8 (O,K), [bias int32 (O,)], [mult int32 (O,) unless pow2],
    shift int32 (O,), output int8 (N,O). Per-tensor models pass mult/shift repeated O times."""
    data = te.placeholder(_shape(data_shape), "int8", name="data")
    weight, bias, mult, shift = _weight_params(weight_shape, has_bias, pow2)
    out = qdense(
        data,
        weight,
        bias,
        mult,
        shift,
        input_zp=input_zp,
        output_zp=output_zp,
        act_min=act_min,
        act_max=act_max,
    )
    return _prim_func([data, *_present(weight, bias, mult, shift), out])


def qadd_primfunc(
    a_shape: Sequence[int],
    b_shape: Sequence[int],
    *,
    a_zp: int,
    b_zp: int,
    out_zp: int,
    a_mult: int,
    a_shift: int,
    b_mult: int,
    b_shift: int,
    out_mult: int,
    out_shift: int,
    left_shift: int = 20,
    act_min: int = -128,
    act_max: int = 127,
) -> tirx.PrimFunc:
    """Args: a int8, b int8 (numpy-broadcastable to a), output int8 (broadcast shape).

    The keyword arguments are exactly ``tvmq.quant.fixed_point.tflite_add_params(...)`` plus the zero
    points and activation range."""
    a = te.placeholder(_shape(a_shape), "int8", name="a")
    b = te.placeholder(_shape(b_shape), "int8", name="b")
    out = qadd(
        a,
        b,
        a_zp=a_zp,
        b_zp=b_zp,
        out_zp=out_zp,
        a_mult=a_mult,
        a_shift=a_shift,
        b_mult=b_mult,
        b_shift=b_shift,
        out_mult=out_mult,
        out_shift=out_shift,
        left_shift=left_shift,
        act_min=act_min,
        act_max=act_max,
    )
    return _prim_func([a, b, out])


def qrequantize_primfunc(
    shape: Sequence[int],
    *,
    in_zp: int,
    mult: int | None,
    shift: int,
    out_zp: int,
    act_min: int = -128,
    act_max: int = 127,
) -> tirx.PrimFunc:
    """Args: x int8, output int8 (same shape). ``mult=None`` is power-of-two requantization."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    out = qrequantize(x, in_zp=in_zp, mult=mult, shift=shift, out_zp=out_zp, act_min=act_min, act_max=act_max)
    return _prim_func([x, out])


def qclamp_primfunc(shape: Sequence[int], *, lo: int, hi: int) -> tirx.PrimFunc:
    """Args: x int8, output int8 (same shape)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    return _prim_func([x, qclamp(x, lo, hi)])


def qlut_primfunc(shape: Sequence[int]) -> tirx.PrimFunc:
    """Args: x int8, table int8 (256,), output int8 (same shape as x): out = table[x + 128]."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    table = te.placeholder((256,), "int8", name="table")
    return _prim_func([x, table, qlut(x, table)])


def qmax_pool2d_primfunc(
    shape: Sequence[int],
    *,
    pool: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    ceil_mode: bool = False,
    act_min: int = -128,
    act_max: int = 127,
) -> tirx.PrimFunc:
    """Args: x int8 (N,H,W,C), output int8 (N,OH,OW,C). padding = (top, left, bottom, right)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    out = qmax_pool2d(x, pool, strides, padding, ceil_mode=ceil_mode, act_min=act_min, act_max=act_max)
    return _prim_func([x, out])


def qavg_pool2d_primfunc(
    shape: Sequence[int],
    *,
    pool: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    ceil_mode: bool = False,
    count_include_pad: bool = False,
    pad_value: int = 0,
    act_min: int = -128,
    act_max: int = 127,
) -> tirx.PrimFunc:
    """Args: x int8 (N,H,W,C), output int8 (N,OH,OW,C). Global average pool: pool = (H, W), strides 1.

    With ``count_include_pad`` the padded taps count as ``pad_value``: pass the input zero point (real 0).
    """
    x = te.placeholder(_shape(shape), "int8", name="x")
    out = qavg_pool2d(
        x, pool, strides, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad, pad_value=pad_value,
        act_min=act_min, act_max=act_max,
    )  # fmt: skip
    return _prim_func([x, out])


def qsoftmax_primfunc(shape: Sequence[int], *, axis: int = -1) -> tirx.PrimFunc:
    """Args: x int8, lut int32 (256,) from ``softmax_exp_lut``, output int8 (scale 1/256, zp -128)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    lut = te.placeholder((256,), "int32", name="lut")
    return _prim_func([x, lut, qsoftmax(x, lut, axis)])


def qpad_primfunc(
    shape: Sequence[int], *, pad_before: Sequence[int], pad_after: Sequence[int], pad_value: int = 0
) -> tirx.PrimFunc:
    """Args: x int8, output int8 (padded shape)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    return _prim_func([x, qpad(x, pad_before, pad_after, pad_value)])


def qconcat_primfunc(shapes: Sequence[Sequence[int]], *, axis: int = -1) -> tirx.PrimFunc:
    """Args: x0, x1, ... int8 (one per shape), output int8 (concatenated along axis)."""
    xs = [te.placeholder(_shape(s), "int8", name=f"x{k}") for k, s in enumerate(shapes)]
    return _prim_func(xs + [qconcat(xs, axis)])


def qtranspose_primfunc(shape: Sequence[int], *, axes: Sequence[int]) -> tirx.PrimFunc:
    """Args: x int8, output int8 (permuted shape)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    return _prim_func([x, qtranspose(x, axes)])


def quantize_primfunc(
    shape: Sequence[int], *, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127
) -> tirx.PrimFunc:
    """Args: x float32, output int8 (same shape)."""
    x = te.placeholder(_shape(shape), "float32", name="x")
    return _prim_func([x, quantize(x, scale=scale, zero_point=zero_point, qmin=qmin, qmax=qmax)])


def dequantize_primfunc(shape: Sequence[int], *, scale: float, zero_point: int) -> tirx.PrimFunc:
    """Args: x int8, output float32 (same shape)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    return _prim_func([x, dequantize(x, scale=scale, zero_point=zero_point)])
