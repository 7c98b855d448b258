"""int8 NHWC max and average pooling, as TFLite Micro's reference kernels compute them."""

from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

from .fixed_point import clamp, dtype_of, i32


def pool_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int) -> int:
    """Output extent of a pooling/conv window (floor mode)."""
    out = (size + pad_lo + pad_hi - k) // stride + 1
    if out <= 0:
        raise ValueError(f"window {k} with stride {stride} and padding ({pad_lo},{pad_hi}) exceeds input {size}")
    return out


def _window(x: te.Tensor, pool: Sequence[int], strides: Sequence[int], padding: Sequence[int]):
    n, h, w, c = (int(d) for d in x.shape)
    kh, kw = (int(p) for p in pool)
    sh, sw = (int(s) for s in strides)
    pt, pl, pb, pr = (int(p) for p in padding)
    if min(pt, pl, pb, pr) < 0 or min(kh, kw, sh, sw) <= 0:
        raise ValueError(f"bad pool geometry pool={pool} strides={strides} padding={padding}")
    oh = pool_out_size(h, kh, sh, pt, pb)
    ow = pool_out_size(w, kw, sw, pl, pr)
    return (n, h, w, c), (kh, kw), (sh, sw), (pt, pl), (oh, ow)


def qmax_pool2d(
    x: te.Tensor,
    pool: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    *,
    act_min: int = -128,
    act_max: int = 127,
    name: str = "qmax_pool2d",
) -> te.Tensor:
    """Max over the valid (non-padded) taps, then the activation clamp. padding = (top, left, bottom, right)."""
    (n, h, w, c), (kh, kw), (sh, sw), (pt, pl), (oh, ow) = _window(x, pool, strides, padding)
    has_pad = any(int(p) for p in padding)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def f(b, i, j, k):
        yy = i * sh + ry - pt
        xx = j * sw + rx - pl
        if not has_pad:
            return te.max(x[b, yy, xx, k], axis=[ry, rx])
        # Padded taps read as the int8 minimum (every window has a valid tap), guarded by if_then_else so
        # no padded copy of the input is materialised. (TE's `where=` is silently dropped in TVM 0.27.)
        valid = tirx.all(yy >= 0, yy < h, xx >= 0, xx < w)
        low = tirx.const(-128 if dtype_of(x) == "int8" else 0, dtype_of(x))
        return te.max(tirx.if_then_else(valid, x[b, yy, xx, k], low), axis=[ry, rx])

    m = te.compute((n, oh, ow, c), f, name=name + "_max")
    return te.compute((n, oh, ow, c), lambda *idx: clamp(m[idx], act_min, act_max), name=name)


def qavg_pool2d(
    x: te.Tensor,
    pool: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    *,
    count_include_pad: bool = False,
    act_min: int = -128,
    act_max: int = 127,
    name: str = "qavg_pool2d",
) -> te.Tensor:
    """TFLM AveragePool: int32 sum of the valid taps, divided by the tap count rounding half away from
    zero (C truncating division after adding +-count/2), then clamped. ``count_include_pad`` divides by
    the full window instead (TFLite itself never counts padding). Exact for any window size."""
    (n, h, w, c), (kh, kw), (sh, sw), (pt, pl), (oh, ow) = _window(x, pool, strides, padding)
    has_pad = any(int(p) for p in padding)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def fsum(b, i, j, k):
        yy = i * sh + ry - pt
        xx = j * sw + rx - pl
        if not has_pad:
            return te.sum(i32(x[b, yy, xx, k]), axis=[ry, rx])
        valid = tirx.all(yy >= 0, yy < h, xx >= 0, xx < w)
        return te.sum(tirx.if_then_else(valid, i32(x[b, yy, xx, k]), tirx.const(0, "int32")), axis=[ry, rx])

    acc = te.compute((n, oh, ow, c), fsum, name=name + "_sum")

    def count(i: tirx.Var, j: tirx.Var) -> tirx.PrimExpr:
        if count_include_pad or not has_pad:
            return tirx.const(kh * kw, "int32")
        y0, x0 = i * sh - pt, j * sw - pl
        zero = tirx.const(0, "int32")
        rows = tirx.min(y0 + kh, tirx.const(h, "int32")) - tirx.max(y0, zero)
        cols = tirx.min(x0 + kw, tirx.const(w, "int32")) - tirx.max(x0, zero)
        return rows * cols

    def favg(b, i, j, k):
        s = acc[b, i, j, k]
        cnt = count(i, j)
        half = tirx.truncdiv(cnt, tirx.const(2, "int32"))
        avg = tirx.Select(s > tirx.const(0, "int32"), tirx.truncdiv(s + half, cnt), tirx.truncdiv(s - half, cnt))
        return clamp(avg, act_min, act_max).astype(dtype_of(x))

    return te.compute((n, oh, ow, c), favg, name=name)


def qglobal_avg_pool2d(
    x: te.Tensor, *, act_min: int = -128, act_max: int = 127, name: str = "qglobal_avg_pool2d"
) -> te.Tensor:
    """Average over the whole H x W plane (TFLM AveragePool with a full-size window): NHWC -> N11C."""
    _, h, w, _ = (int(d) for d in x.shape)
    return qavg_pool2d(x, (h, w), (1, 1), (0, 0, 0, 0), act_min=act_min, act_max=act_max, name=name)
