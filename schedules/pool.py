"""int8 NHWC max and average pooling, as TFLite Micro's reference kernels compute them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tvm import te, tirx

from .fixed_point import clamp, dtype_of, i32, requantize


def pool_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, ceil_mode: bool = False) -> int:
    """Output extent of a pooling/conv window: floor mode, or ``ceil_mode`` as TVM and PyTorch round up (one more
    window may overhang the end padding, but it must start inside the input or the leading padding)."""
    span = size + pad_lo + pad_hi - k
    if span < 0:
        raise ValueError(f"window {k} with stride {stride} and padding ({pad_lo},{pad_hi}) exceeds input {size}")
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad_lo:
        out -= 1
    return out


@dataclass(frozen=True)
class _Window:
    """Where the pooling windows of an NHWC input lie: output (i, j) reads input rows ``i * sh - pt + [0, kh)``
    and columns ``j * sw - pl + [0, kw)``; its taps outside the input are padding."""

    shape: tuple[int, int, int, int]  # N, H, W, C
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # explicit (top, left, bottom, right); a ceil_mode overhang comes on top
    out: tuple[int, int]

    @classmethod
    def of(cls, x: te.Tensor, pool, strides, padding, ceil_mode: bool) -> _Window:
        n, h, w, c = (int(d) for d in x.shape)
        kh, kw = (int(p) for p in pool)
        sh, sw = (int(s) for s in strides)
        pt, pl, pb, pr = (int(p) for p in padding)
        if min(pt, pl, pb, pr) < 0 or min(kh, kw, sh, sw) <= 0:
            raise ValueError(f"bad pool geometry pool={pool} strides={strides} padding={padding}")
        out = (pool_out_size(h, kh, sh, pt, pb, ceil_mode), pool_out_size(w, kw, sw, pl, pr, ceil_mode))
        return cls((n, h, w, c), (kh, kw), (sh, sw), (pt, pl, pb, pr), out)

    @property
    def input_box(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(first row, first column), (end row, end column) of the input itself."""
        return (0, 0), self.shape[1:3]

    @property
    def padded_box(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The same for the input with its explicit padding (without any ceil_mode overhang)."""
        pt, pl, pb, pr = self.padding
        return (-pt, -pl), (self.shape[1] + pb, self.shape[2] + pr)

    def within(self, box) -> bool:
        """Whether every tap of every window lies inside ``box``."""
        lo, hi = box
        for axis in range(2):
            first = -self.padding[axis]  # where the first window starts, and the last one ends:
            end = first + (self.out[axis] - 1) * self.strides[axis] + self.kernel[axis]
            if first < lo[axis] or end > hi[axis]:
                return False
        return True

    def tap(self, x: te.Tensor, b, i, j, k, ry, rx, fill: tirx.PrimExpr) -> tirx.PrimExpr:
        """Tap (ry, rx) of window (i, j): the input there, or ``fill`` in the padding. The guard is an
        if_then_else so no padded copy of the input is materialised (TE's `where=` is silently dropped in TVM 0.27).
        """
        yy = i * self.strides[0] + ry - self.padding[0]
        xx = j * self.strides[1] + rx - self.padding[1]
        if self.within(self.input_box):
            return x[b, yy, xx, k]
        h, w = self.shape[1:3]
        return tirx.if_then_else(tirx.all(yy >= 0, yy < h, xx >= 0, xx < w), x[b, yy, xx, k], fill)

    def count(self, i: tirx.Var, j: tirx.Var, box) -> tirx.PrimExpr:
        """How many taps of window (i, j) lie inside ``box``."""
        kh, kw = self.kernel
        if self.within(box):
            return _i32(kh * kw)
        (top, left), (bottom, right) = box
        y0, x0 = i * self.strides[0] - self.padding[0], j * self.strides[1] - self.padding[1]
        rows = tirx.min(y0 + kh, _i32(bottom)) - tirx.max(y0, _i32(top))
        cols = tirx.min(x0 + kw, _i32(right)) - tirx.max(x0, _i32(left))
        return rows * cols


def _i32(value: int) -> tirx.PrimExpr:
    return tirx.const(value, "int32")


def qmax_pool2d(
    x: te.Tensor,
    pool: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    *,
    ceil_mode: bool = False,
    act_min: int = -128,
    act_max: int = 127,
    name: str = "qmax_pool2d",
) -> te.Tensor:
    """Max over the valid (non-padded) taps, then the activation clamp. padding = (top, left, bottom, right)."""
    win = _Window.of(x, pool, strides, padding, ceil_mode)
    (n, *_, c), (oh, ow) = win.shape, win.out
    # Padded taps read as the type's minimum: they never win, as every window has a valid tap.
    low = tirx.const(-128 if dtype_of(x) == "int8" else 0, dtype_of(x))
    if win.kernel == (1, 1):
        # One tap per window: a plain copy, not a max-reduction. TVM 0.27's C backend miscompiles a max-reduction
        # whose loops all have extent 1: it caches the register's load as the operand of max() and reuses that
        # stale value after the update (the device read -128 everywhere).
        m = te.compute((n, oh, ow, c), lambda b, i, j, k: win.tap(x, b, i, j, k, 0, 0, low), name=name + "_max")
    else:
        ry = te.reduce_axis((0, win.kernel[0]), name="ry")
        rx = te.reduce_axis((0, win.kernel[1]), name="rx")
        m = te.compute(
            (n, oh, ow, c), lambda b, i, j, k: te.max(win.tap(x, b, i, j, k, ry, rx, low), axis=[ry, rx]),
            name=name + "_max",
        )  # fmt: skip
    return te.compute((n, oh, ow, c), lambda *idx: clamp(m[idx], act_min, act_max), name=name)


def qavg_pool2d(
    x: te.Tensor,
    pool: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    *,
    ceil_mode: bool = False,
    count_include_pad: bool = False,
    pad_value: int = 0,
    act_min: int = -128,
    act_max: int = 127,
    name: str = "qavg_pool2d",
) -> te.Tensor:
    """TFLM AveragePool: int32 sum of the valid taps, divided by the tap count rounding half away from
    zero (C truncating division after adding +-count/2), then clamped. Exact for any window size.

    ``count_include_pad`` (TFLite itself never counts padding) also counts the taps in the explicit ``padding``,
    as ONNX and TVM do, each adding ``pad_value`` to the sum: pass the input zero point, the code of real 0. Taps
    a ``ceil_mode`` window overhangs beyond that padding never count."""
    win = _Window.of(x, pool, strides, padding, ceil_mode)
    (n, *_, c), (oh, ow) = win.shape, win.out
    ry = te.reduce_axis((0, win.kernel[0]), name="ry")
    rx = te.reduce_axis((0, win.kernel[1]), name="rx")
    zero = tirx.const(0, dtype_of(x))
    acc = te.compute(
        (n, oh, ow, c), lambda b, i, j, k: te.sum(i32(win.tap(x, b, i, j, k, ry, rx, zero)), axis=[ry, rx]),
        name=name + "_sum",
    )  # fmt: skip
    counted = win.padded_box if count_include_pad else win.input_box

    def favg(b, i, j, k):
        s = acc[b, i, j, k]
        cnt = win.count(i, j, counted)
        if count_include_pad and pad_value != 0 and not win.within(win.input_box):
            s = s + (cnt - win.count(i, j, win.input_box)) * _i32(int(pad_value))
        half = tirx.truncdiv(cnt, _i32(2))
        avg = tirx.Select(s > _i32(0), tirx.truncdiv(s + half, cnt), tirx.truncdiv(s - half, cnt))
        return clamp(avg, act_min, act_max).astype(dtype_of(x))

    return te.compute((n, oh, ow, c), favg, name=name)


def qglobal_avg_pool2d(
    x: te.Tensor, *, act_min: int = -128, act_max: int = 127, name: str = "qglobal_avg_pool2d"
) -> te.Tensor:
    """Average over the whole H x W plane (TFLM AveragePool with a full-size window): NHWC -> N11C."""
    _, h, w, _ = (int(d) for d in x.shape)
    return qavg_pool2d(x, (h, w), (1, 1), (0, 0, 0, 0), act_min=act_min, act_max=act_max, name=name)


def qmean(x: te.Tensor, *, mult: int, shift: int, in_zp: int, out_zp: int, name: str = "qmean") -> te.Tensor:
    """TFLM's int8 MEAN over H and W (NHWC -> N11C) onto another grid (reference ``QuantizedMeanOrSum``):
    ``clamp(MBQM(sum(x) - in_zp * count, mult, shift) + out_zp)``, where ``mult``/``shift`` already fold
    ``1 / count`` into the scale ratio (``tvmq.quant.fixed_point.mean_multiplier``)."""
    n, h, w, c = (int(d) for d in x.shape)
    rh = te.reduce_axis((0, h), name="rh")
    rw = te.reduce_axis((0, w), name="rw")
    acc = te.compute((n, 1, 1, c), lambda b, i, j, k: te.sum(i32(x[b, rh, rw, k]), axis=[rh, rw]), name=name + "_sum")

    def f(b, i, j, k):
        centred = acc[b, i, j, k] - tirx.const(int(in_zp) * h * w, "int32")
        return clamp(requantize(centred, int(mult), int(shift)) + tirx.const(int(out_zp), "int32"), -128, 127).astype(
            "int8"
        )

    return te.compute((n, 1, 1, c), f, name=name)
