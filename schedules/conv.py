"""int8 NHWC / OHWI convolution (grouped, depthwise) with per-channel requantization, as TFLM computes it."""

from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

from .codebook import LutEpilogue
from .data_movement import qpad
from .fixed_point import channel_param, dtype_of, i32, requantize_output


def conv_out_size(size: int, k: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> int:
    """Output extent of a convolution along one spatial axis."""
    eff = dilation * (k - 1) + 1
    out = (size + pad_lo + pad_hi - eff) // stride + 1
    if out <= 0:
        raise ValueError(
            f"kernel {k} (dilation {dilation}) with stride {stride}, padding ({pad_lo},{pad_hi}) exceeds input {size}"
        )
    return out


def qconv2d(
    data: te.Tensor,
    weight: te.Tensor,
    bias: te.Tensor | None,
    mult: te.Tensor | int | None,
    shift: te.Tensor | int,
    *,
    strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
    input_zp: int = 0,
    output_zp: int = 0,
    act_min: int = -128,
    act_max: int = 127,
    name: str = "qconv2d",
    lut: LutEpilogue | None = None,
) -> te.Tensor:
    """TFLM ConvPerChannel / DepthwiseConvPerChannel.

    data (N,H,W,C) int8, weight (O,KH,KW,C/groups) int8, bias (O,) int32 or None, mult/shift (O,) int32
    tensors or ints (immediates); ``mult=None`` selects power-of-two requantization by ``shift``.
    padding = (top, left, bottom, right), filled with ``input_zp`` so padded taps contribute 0.
    acc = bias + sum((x - input_zp) * w); out = clamp(MBQM(acc, mult[o], shift[o]) + output_zp).
    Output channel o belongs to group o // (O / groups) and reads input channels of that group;
    depthwise is groups == C with weight (C*M, KH, KW, 1), matching TFLite's channel order.
    """
    n, h, w, c = (int(d) for d in data.shape)
    o, kh, kw, cg = (int(d) for d in weight.shape)
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    pt, pl, pb, pr = (int(p) for p in padding)
    if groups <= 0 or c % groups or o % groups or c // groups != cg:
        raise ValueError(f"{name}: groups={groups} does not fit data channels {c}, weight {tuple(weight.shape)}")
    if bias is not None and tuple(int(d) for d in bias.shape) != (o,):
        raise ValueError(f"{name}: bias shape {tuple(bias.shape)} != ({o},)")
    oh = conv_out_size(h, kh, sh, dh, pt, pb)
    ow = conv_out_size(w, kw, sw, dw, pl, pr)
    opg = o // groups

    src = data
    if pt or pl or pb or pr:
        src = qpad(data, (0, pt, pl, 0), (0, pb, pr, 0), input_zp, name=name + "_pad")

    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rc = te.reduce_axis((0, cg), name="rc")
    izp = tirx.const(int(input_zp), "int32")

    def facc(b, i, j, k):
        ic = rc if groups == 1 else (k // opg) * cg + rc
        x = i32(src[b, i * sh + ry * dh, j * sw + rx * dw, ic])
        xv = x - izp if input_zp else x
        return te.sum(xv * i32(weight[k, ry, rx, rc]), axis=[ry, rx, rc])

    acc = te.compute((n, oh, ow, o), facc, name=name + "_acc")
    if lut is not None:
        return lut.apply(acc, bias, name)

    def fout(b, i, j, k):
        return requantize_output(acc[b, i, j, k], None if bias is None else bias[k], channel_param(mult, k),
                                 channel_param(shift, k), output_zp, act_min, act_max, dtype_of(data))  # fmt: skip

    return te.compute((n, oh, ow, o), fout, name=name)
