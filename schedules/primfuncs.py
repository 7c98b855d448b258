"""One PrimFunc builder per integer op: concrete shapes and attributes in, a shape-static PrimFunc out.

Every builder returns a ``tirx.PrimFunc`` WITHOUT a ``global_symbol`` (add it to a Relax module with
``bb.add_func(f, name)``, or give it one with ``f.with_attr("global_symbol", name)``). Argument order is
always [data inputs..., weight, bias (if any), mult, shift, tables..., output] and each docstring spells
it out. Scalar quantization parameters are baked in as immediates; per-channel ones are tensor arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tvm import te, tirx

from .codebook import (
    LutEpilogue,
    decode_activation,
    decode_weight,
    nl_quantize,
    pack_codes,
    packed_row_bytes,
    packed_shape,
    unpack_codes,
)
from .conv import qconv2d
from .data_movement import qconcat, qpad, qtranspose
from .dense import qdense
from .elementwise import dequantize, qadd, qclamp, qlut, qrequantize, quantize
from .fixed_point import i32
from .inplace import ELEMENT, check_inplace, slab_name, write_slab
from .pool import qavg_pool2d, qmax_pool2d, qmean
from .softmax import qsoftmax, qsoftmax_tflm

# PrimFunc attribute of conv2d/dense kernels: their geometry and input zero point, which device schedules need to
# pick and check micro-kernels (``schedules.tiled``); the arithmetic itself is all in the TIR.
GEOMETRY = "tvmq.geometry"


def _epilogue_info(has_bias: bool, pow2: bool, output_zp: int, act_min: int, act_max: int) -> dict:
    return {"bias": bool(has_bias), "pow2": bool(pow2), "output_zp": int(output_zp), "act_min": int(act_min),
            "act_max": int(act_max)}  # fmt: skip


def _prim_func(args: Sequence[te.Tensor]) -> tirx.PrimFunc:
    return te.create_prim_func(list(args)).without_attr("global_symbol")


def _shape(s: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in s)
    if any(d <= 0 for d in shape):
        raise ValueError(f"shapes must be static and positive, got {tuple(s)}")
    return shape


def _data_param(shape: Sequence[int], code_bits: int | None) -> tuple[te.Tensor, list[te.Tensor]]:
    """The int8 data a compute reads, and its PrimFunc args: [data int8], or with ``code_bits`` the packed codes
    [data uint8 (..., packed channels), data_table int8 (2^bits,)] decoded by ``decode_activation``."""
    shape = _shape(shape)
    if code_bits is None:
        data = te.placeholder(shape, "int8", name="data")
        return data, [data]
    packed = te.placeholder(packed_shape(shape, code_bits), "uint8", name="data")
    table = te.placeholder((2**code_bits,), "int8", name="data_table")
    return decode_activation(packed, table, shape, code_bits), [packed, table]


def _weight_param(weight_shape: Sequence[int], codebook_bits: int | None) -> tuple[te.Tensor, list[te.Tensor]]:
    """The int8 weight a compute reads, and its args: [weight int8] or, with ``codebook_bits``, [packed uint8
    (O, row bytes), table int8 (O, 2^bits)] decoded by ``decode_weight``."""
    shape = _shape(weight_shape)
    if codebook_bits is None:
        weight = te.placeholder(shape, "int8", name="weight")
        return weight, [weight]
    row_bytes = packed_row_bytes(math.prod(shape[1:]), codebook_bits)
    packed = te.placeholder((shape[0], row_bytes), "uint8", name="packed")
    table = te.placeholder((shape[0], 2**codebook_bits), "int8", name="table")
    return decode_weight(packed, table, shape, codebook_bits), [packed, table]


def _epilogue_params(o: int, has_bias: bool, pow2: bool, lut_bits: int | None, lut_levels: bool, lut_shared: bool):
    """(bias, mult, shift, lut, args) of a weighted op's epilogue.

    Multiply-shift: args [bias int32 (O,)], [mult int32 (O,) unless pow2], shift int32 (O,). LUT-requantize
    (``lut_bits``): per-channel thresholds int32 (O, 2^bits - 1) holding the bias, or with ``lut_shared`` the
    multiply-shift args then one row of thresholds (2^bits - 1,); with ``lut_levels`` then the output table int8
    (2^bits,) (the output is int8 levels instead of packed codes).
    """
    bias = te.placeholder((o,), "int32", name="bias") if has_bias else None
    mult = None if pow2 else te.placeholder((o,), "int32", name="mult")
    shift = te.placeholder((o,), "int32", name="shift")
    if lut_bits is None:
        return bias, mult, shift, None, _present(bias, mult, shift)
    table = te.placeholder((2**lut_bits,), "int8", name="out_table") if lut_levels else None
    if not lut_shared:
        thresholds = te.placeholder((o, 2**lut_bits - 1), "int32", name="thresholds")
        return None, None, 0, LutEpilogue(thresholds, lut_bits, table), _present(thresholds, table)
    thresholds = te.placeholder((2**lut_bits - 1,), "int32", name="thresholds")
    lut = LutEpilogue(thresholds, lut_bits, table, mult, shift)
    return bias, None, 0, lut, _present(bias, mult, shift, thresholds, table)


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
    codebook_bits: int | None = None,
    input_code_bits: int | None = None,
    lut_bits: int | None = None,
    lut_levels: bool = False,
    lut_shared: bool = False,
    inplace: str | None = None,
    residual: dict | None = None,
) -> tirx.PrimFunc:
    """Args: data int8 (N,H,W,C) (or, with ``input_code_bits``, packed codes and their table), weight int8
    (O,KH,KW,C/groups) (or, with ``codebook_bits``, packed uint8 and table int8, see ``schedules.codebook``),
    epilogue args (``_epilogue_params``), [residual int8 (N,OH,OW,O) with ``residual``], output int8 (N,OH,OW,O)
    (packed uint8 codes with ``lut_bits`` unless ``lut_levels``). padding = (top, left, bottom, right).

    ``inplace`` ("channel" | "pixel", see ``schedules.inplace``): a kernel order that may write the output over
    the data. ``residual``: a residual ADD fused into the epilogue, ``qadd_primfunc``'s keyword arguments plus
    ``conv_first`` (the convolution's output is the ADD's first operand); each output element reads its residual
    element right before writing it, so the output may overwrite the residual."""
    coded = codebook_bits is not None or input_code_bits is not None or lut_bits is not None
    if inplace is not None:
        check_inplace(inplace, data_shape, weight_shape, groups=groups, padding=padding, coded=coded)
    if residual is not None and (coded or inplace is not None):
        raise ValueError(
            "a fused residual ADD needs int8 storage (no packed codes, codebook weights or LUT) and "
            "writes over the residual, not in place over the data"
        )
    data, data_args = _data_param(data_shape, input_code_bits)
    weight, weight_args = _weight_param(weight_shape, codebook_bits)
    bias, mult, shift, lut, epilogue_args = _epilogue_params(
        int(weight.shape[0]), has_bias, pow2, lut_bits, lut_levels, lut_shared
    )
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
        lut=lut,
        name=slab_name("qconv2d", ELEMENT if residual is not None else inplace) if residual or inplace else "qconv2d",
    )
    extra = []
    if residual is not None:
        add = dict(residual)
        conv_first = add.pop("conv_first")
        res = te.placeholder(out.shape, "int8", name="residual")
        out = qadd(out, res, **add) if conv_first else qadd(res, out, **add)
        extra.append(res)
    if inplace is not None:
        out = write_slab(out, "qconv2d_out")
    geometry = {"op": "conv2d", "strides": [int(v) for v in strides], "padding": [int(v) for v in padding],
                "dilation": [int(v) for v in dilation], "groups": int(groups), "input_zp": int(input_zp),
                **_epilogue_info(has_bias, pow2, output_zp, act_min, act_max)}  # fmt: skip
    return _prim_func([*data_args, *weight_args, *epilogue_args, *extra, out]).with_attr(GEOMETRY, geometry)


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
    codebook_bits: int | None = None,
    input_code_bits: int | None = None,
    lut_bits: int | None = None,
    lut_levels: bool = False,
    lut_shared: bool = False,
) -> tirx.PrimFunc:
    """Args: data int8 (N,K) (or packed codes + table), weight int8 (O,K) (or packed + table with
    ``codebook_bits``), epilogue args (``_epilogue_params``; per-tensor models repeat mult/shift), output int8
    (N,O) (packed codes with ``lut_bits`` unless ``lut_levels``)."""
    data, data_args = _data_param(data_shape, input_code_bits)
    weight, weight_args = _weight_param(weight_shape, codebook_bits)
    bias, mult, shift, lut, epilogue_args = _epilogue_params(
        int(weight.shape[0]), has_bias, pow2, lut_bits, lut_levels, lut_shared
    )
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
        lut=lut,
    )
    geometry = {"op": "dense", "input_zp": int(input_zp), **_epilogue_info(has_bias, pow2, output_zp, act_min, act_max)}
    return _prim_func([*data_args, *weight_args, *epilogue_args, out]).with_attr(GEOMETRY, geometry)


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
    code_bits: int | None = None,
) -> tirx.PrimFunc:
    """Args: x int8 (N,H,W,C), output int8 (N,OH,OW,C). padding = (top, left, bottom, right).

    With ``code_bits`` x and the output are packed codes of one ascending codebook: the max of the codes is the
    code of the max, so the pool never decodes. act_min/act_max are then ignored: the caller makes sure the
    clamp changes no level of the codebook.
    """
    if code_bits is None:
        x = te.placeholder(_shape(shape), "int8", name="x")
        return _prim_func([x, qmax_pool2d(x, pool, strides, padding, ceil_mode=ceil_mode, act_min=act_min,
                                          act_max=act_max)])  # fmt: skip
    packed = te.placeholder(packed_shape(_shape(shape), code_bits), "uint8", name="x")
    codes = unpack_codes(packed, shape, code_bits)
    out = qmax_pool2d(codes, pool, strides, padding, ceil_mode=ceil_mode, act_min=0, act_max=2**code_bits - 1)
    return _prim_func([packed, pack_codes(out.shape, lambda *idx: i32(out[idx]), code_bits)])


def qdecode_primfunc(shape: Sequence[int], *, bits: int) -> tirx.PrimFunc:
    """Args: x packed codes uint8, table int8 (2^bits,), output int8 (``shape``): for consumers that read int8."""
    x, args = _data_param(shape, bits)
    return _prim_func([*args, x])


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


def qmean_primfunc(shape: Sequence[int], *, mult: int, shift: int, in_zp: int, out_zp: int) -> tirx.PrimFunc:
    """Args: x int8 (N,H,W,C), output int8 (N,1,1,C): TFLM's MEAN between two grids (``schedules.pool.qmean``)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    return _prim_func([x, qmean(x, mult=mult, shift=shift, in_zp=in_zp, out_zp=out_zp)])


def qsoftmax_primfunc(shape: Sequence[int], *, axis: int = -1) -> tirx.PrimFunc:
    """Args: x int8, lut int32 (256,) from ``softmax_exp_lut``, output int8 (scale 1/256, zp -128)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    lut = te.placeholder((256,), "int32", name="lut")
    return _prim_func([x, lut, qsoftmax(x, lut, axis)])


def qsoftmax_tflm_primfunc(shape: Sequence[int]) -> tirx.PrimFunc:
    """Args: x int8, exp int32 (256,), sums int32 (256,) from ``tflm_softmax_tables``, output int8 (TFLM's)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    exp = te.placeholder((256,), "int32", name="exp")
    sums = te.placeholder((256,), "int32", name="sums")
    return _prim_func([x, exp, sums, qsoftmax_tflm(x, exp, sums)])


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


def qtranspose_primfunc(shape: Sequence[int], *, axes: Sequence[int], code_bits: int | None = None) -> tirx.PrimFunc:
    """Args: x int8, output int8 (permuted shape); with ``code_bits`` both are packed codes (unpacked, moved and
    packed again in one loop nest)."""
    if code_bits is None:
        x = te.placeholder(_shape(shape), "int8", name="x")
        return _prim_func([x, qtranspose(x, axes)])
    packed = te.placeholder(packed_shape(_shape(shape), code_bits), "uint8", name="x")
    moved = qtranspose(unpack_codes(packed, shape, code_bits), axes)
    return _prim_func([packed, pack_codes(moved.shape, lambda *idx: i32(moved[idx]), code_bits)])


def quantize_primfunc(
    shape: Sequence[int], *, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127
) -> tirx.PrimFunc:
    """Args: x float32, output int8 (same shape)."""
    x = te.placeholder(_shape(shape), "float32", name="x")
    return _prim_func([x, quantize(x, scale=scale, zero_point=zero_point, qmin=qmin, qmax=qmax)])


def nl_quantize_primfunc(shape: Sequence[int], *, bits: int) -> tirx.PrimFunc:
    """Args: x float32, thresholds float32 (2^bits - 1,), table int8 (2^bits,), output int8 (same shape): the
    input's nearest codebook level, as an int8 value on the input's grid."""
    x = te.placeholder(_shape(shape), "float32", name="x")
    thresholds = te.placeholder((2**bits - 1,), "float32", name="thresholds")
    table = te.placeholder((2**bits,), "int8", name="table")
    return _prim_func([x, thresholds, table, nl_quantize(x, thresholds, table, bits)])


def dequantize_primfunc(shape: Sequence[int], *, scale: float, zero_point: int) -> tirx.PrimFunc:
    """Args: x int8, output float32 (same shape)."""
    x = te.placeholder(_shape(shape), "int8", name="x")
    return _prim_func([x, dequantize(x, scale=scale, zero_point=zero_point)])
