"""Pad and concatenate int8 tensors (pure data movement; no rescaling)."""

from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

from .fixed_point import dtype_of


def qpad(
    x: te.Tensor,
    pad_before: Sequence[int],
    pad_after: Sequence[int],
    pad_value: int = 0,
    *,
    name: str = "qpad",
) -> te.Tensor:
    """Constant padding; quantized tensors pad with their zero point so the padding reads as real 0."""
    shape = [int(d) for d in x.shape]
    if not (len(pad_before) == len(pad_after) == len(shape)):
        raise ValueError(f"qpad: pad_before/pad_after need {len(shape)} entries, got {pad_before}, {pad_after}")
    if min(list(pad_before) + list(pad_after)) < 0:
        raise ValueError(f"qpad: negative padding {pad_before}, {pad_after}")
    out_shape = tuple(d + int(b) + int(a) for d, b, a in zip(shape, pad_before, pad_after, strict=True))

    def f(*idx: tirx.Var) -> tirx.PrimExpr:
        conds = []
        src = []
        for i, d, b in zip(idx, shape, pad_before, strict=True):
            b = int(b)
            if b or out_shape[len(src)] != d:
                conds.append(tirx.all(i >= b, i < b + d))
            src.append(i - b if b else i)
        if not conds:
            return x[tuple(src)]
        # if_then_else, not Select: the load must not run for padded positions (it would be out of bounds).
        return tirx.if_then_else(tirx.all(*conds), x[tuple(src)], tirx.const(int(pad_value), dtype_of(x)))

    return te.compute(out_shape, f, name=name)


def qconcat(xs: Sequence[te.Tensor], axis: int = -1, *, name: str = "qconcat") -> te.Tensor:
    """Concatenate tensors that share dtype and quantization (rescale first with ``qrequantize``)."""
    if not xs:
        raise ValueError("qconcat: need at least one tensor")
    ndim = len(xs[0].shape)
    ax = axis + ndim if axis < 0 else axis
    if not 0 <= ax < ndim:
        raise ValueError(f"qconcat: axis {axis} out of range for rank {ndim}")
    shapes = [[int(d) for d in t.shape] for t in xs]
    for t, s in zip(xs, shapes, strict=True):
        if len(s) != ndim or any(s[k] != shapes[0][k] for k in range(ndim) if k != ax):
            raise ValueError(f"qconcat: shape {tuple(s)} does not match {tuple(shapes[0])} off axis {ax}")
        if dtype_of(t) != dtype_of(xs[0]):
            raise ValueError(f"qconcat: dtypes differ ({t.dtype} vs {xs[0].dtype})")
    offsets = [0]
    for s in shapes:
        offsets.append(offsets[-1] + s[ax])
    out_shape = list(shapes[0])
    out_shape[ax] = offsets[-1]

    def f(*idx: tirx.Var) -> tirx.PrimExpr:
        def load(k: int) -> tirx.PrimExpr:
            src = list(idx)
            src[ax] = idx[ax] - offsets[k] if offsets[k] else idx[ax]
            return xs[k][tuple(src)]

        expr = load(len(xs) - 1)
        for k in range(len(xs) - 2, -1, -1):
            expr = tirx.if_then_else(idx[ax] < offsets[k + 1], load(k), expr)
        return expr

    return te.compute(tuple(out_shape), f, name=name)


def qtranspose(x: te.Tensor, axes: Sequence[int], *, name: str = "qtranspose") -> te.Tensor:
    """out[i_0, ..., i_n] = x[j] with j[axes[k]] = i_k (numpy.transpose semantics)."""
    shape = [int(d) for d in x.shape]
    axes = [int(a) + len(shape) if int(a) < 0 else int(a) for a in axes]
    if sorted(axes) != list(range(len(shape))):
        raise ValueError(f"qtranspose: axes {list(axes)} are not a permutation of {len(shape)} dimensions")
    out_shape = tuple(shape[a] for a in axes)

    def f(*idx: tirx.Var) -> tirx.PrimExpr:
        src = [None] * len(shape)
        for k, a in enumerate(axes):
            src[a] = idx[k]
        return x[tuple(src)]

    return te.compute(out_shape, f, name=name)
