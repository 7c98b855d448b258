"""Integer-only int8 softmax driven by an exp lookup table.

This is tvmq's own integer softmax, NOT TFLite Micro's (which uses gemmlowp exp on fixed-point). Output
quantization is fixed: scale 1/256, zero point -128, as TFLite requires for int8 softmax outputs.
"""

from __future__ import annotations

from tvm import te, tirx

from .fixed_point import clamp, i32


def qsoftmax(x: te.Tensor, lut: te.Tensor, axis: int = -1, *, name: str = "qsoftmax") -> te.Tensor:
    """m = max_j x_j; e_j = lut[m - x_j] (Q16 exp, see ``softmax_exp_lut``); s = sum_j e_j;
    out_j = clamp((e_j * 256 + s / 2) / s - 128, -128, 127) with C division.

    e_j is recomputed from the table instead of stored, so only two (…,1)-sized temporaries exist.
    The sum is clamped to >= 1 so a user table of zeros cannot divide by zero.
    """
    shape = [int(d) for d in x.shape]
    nd = len(shape)
    ax = axis + nd if axis < 0 else axis
    if not 0 <= ax < nd:
        raise ValueError(f"{name}: axis {axis} out of range for rank {nd}")
    red_shape = tuple(shape[:ax] + shape[ax + 1 :])
    size = shape[ax]

    def full(idx_red, j):
        return tuple(idx_red[:ax]) + (j,) + tuple(idx_red[ax:])

    r1 = te.reduce_axis((0, size), name="r")
    mx = te.compute(red_shape, lambda *idx: te.max(x[full(idx, r1)], axis=r1), name=name + "_max")

    def e(idx_red, j):
        return i32(lut[i32(mx[tuple(idx_red)]) - i32(x[full(idx_red, j)])])

    r2 = te.reduce_axis((0, size), name="r")
    sm = te.compute(red_shape, lambda *idx: te.sum(e(idx, r2), axis=r2), name=name + "_sum")

    def fout(*idx):
        red = idx[:ax] + idx[ax + 1 :]
        s = tirx.max(sm[tuple(red)], tirx.const(1, "int32"))
        q = tirx.truncdiv(e(red, idx[ax]) * tirx.const(256, "int32") + tirx.truncdiv(s, 2), s)
        return clamp(q - tirx.const(128, "int32"), -128, 127).astype("int8")

    return te.compute(tuple(shape), fout, name=name)
