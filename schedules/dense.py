"""int8 fully connected layer with per-channel (or per-tensor) requantization, as TFLM computes it."""

from __future__ import annotations

from tvm import te, tirx

from .codebook import LutEpilogue
from .fixed_point import channel_param, dtype_of, i32, requantize_output


def qdense(
    data: te.Tensor,
    weight: te.Tensor,
    bias: te.Tensor | None,
    mult: te.Tensor | int | None,
    shift: te.Tensor | int,
    *,
    input_zp: int = 0,
    output_zp: int = 0,
    act_min: int = -128,
    act_max: int = 127,
    name: str = "qdense",
    lut: LutEpilogue | None = None,
) -> te.Tensor:
    """data (N,K) int8, weight (O,K) int8, bias (O,) int32 or None -> (N,O) int8.

    acc = bias + sum_k (x - input_zp) * w; out = clamp(MBQM(acc, mult[o], shift[o]) + output_zp).
    mult/shift are (O,) tensors or ints (TFLite's per-tensor FULLY_CONNECTED); ``mult=None`` is pow2.
    """
    n, k = (int(d) for d in data.shape)
    o, k2 = (int(d) for d in weight.shape)
    if k != k2:
        raise ValueError(f"{name}: data {tuple(data.shape)} and weight {tuple(weight.shape)} disagree on K")
    if bias is not None and tuple(int(d) for d in bias.shape) != (o,):
        raise ValueError(f"{name}: bias shape {tuple(bias.shape)} != ({o},)")
    rk = te.reduce_axis((0, k), name="rk")
    izp = tirx.const(int(input_zp), "int32")

    def facc(i, j):
        x = i32(data[i, rk])
        xv = x - izp if input_zp else x
        return te.sum(xv * i32(weight[j, rk]), axis=rk)

    acc = te.compute((n, o), facc, name=name + "_acc")
    if lut is not None:
        return lut.apply(acc, bias, name)

    def fout(i, j):
        return requantize_output(acc[i, j], None if bias is None else bias[j], channel_param(mult, j),
                                 channel_param(shift, j), output_zp, act_min, act_max, dtype_of(data))  # fmt: skip

    return te.compute((n, o), fout, name=name)
