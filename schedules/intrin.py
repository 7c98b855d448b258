"""Tensor intrinsics of tvmq's micro-kernels: a tile of a conv2d/dense computation described in plain TIR.

Each intrinsic pairs a *description*, the computation the TE compute of a convolution or dense layer performs on a
tile (the multiply-accumulates of P pixels or rows x Q output channels over the whole reduction, or the tile's
requantization), with an *implementation* that calls a static inline C function of tvmq's runtime header
(``schedules.microkernels``). ``sch.tensorize`` checks that the scheduled block is exactly the description before it
substitutes the call, so a device schedule that tensorizes computes what the host (which never does) computes:
integer sums are exact in any order, and the requantization description is built by the very function the TE uses
(``schedules.fixed_point.requantize_output``).

Intrinsics are registered on first use, one per distinct shape (kernel size, channels, strides, zero points, buffer
scopes): tensorization needs constant extents. Descriptions keep every loop of the tile, even of extent 1, but give a
block iterator only to extents above 1, as ``blockize`` leaves the scheduled block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder.tirx import prim_func as build_prim_func

_REGISTERED: set[str] = set()


def _register(name: str, build: Callable[[bool], tirx.PrimFunc]) -> str:
    """Register the intrinsic ``name`` (description ``build(False)``, implementation ``build(True)``) once."""
    if name not in _REGISTERED:
        s_tir.TensorIntrin.register(name, build(False), build(True), override=True)
        _REGISTERED.add(name)
    return name


def _prim(name: str, make: Callable[[], None]) -> tirx.PrimFunc:
    """A PrimFunc built by ``make`` (arguments, buffers, body) inside TVMScript's IR builder."""
    with IRBuilder() as ib, build_prim_func():
        T.func_name(name)
        make()
    return ib.get()


def _strided(handle, shape: Sequence[int], dtype: str, scope: str = "global"):
    """A match buffer of ``shape`` with symbolic strides except the innermost (contiguous)."""
    strides = [T.int32() for _ in shape[:-1]] + [1]
    return T.match_buffer(handle, tuple(shape), dtype, strides=strides, offset_factor=1, scope=scope)


def _block_vars(axes: Sequence[tuple[str, int, str]]):
    """Open the tile's loops (all of ``axes``: name, extent, "S"/"R") and its block; return {name: iterator} with
    0 for extents of 1. The caller writes the block body inside the returned context."""

    class _Ctx:
        def __enter__(self) -> dict[str, tirx.PrimExpr]:
            self.grid = T.grid(*[e for _, e, _ in axes])
            loops = self.grid.__enter__()
            loops = [loops] if isinstance(loops, tirx.Var) else list(loops)
            self.block = T.sblock("update")
            self.block.__enter__()
            keep = [(ax, loop) for ax, loop in zip(axes, loops, strict=True) if ax[1] > 1]
            env: dict[str, tirx.PrimExpr] = {name: 0 for name in ("p", "q", "ry", "rx", "rc")}
            env.update({name: 0 for name, _, _ in axes})
            if keep:
                vs = T.axis.remap("".join(ax[2] for ax, _ in keep), [loop for _, loop in keep])
                vs = [vs] if isinstance(vs, tirx.Var) else list(vs)
                env.update({ax[0]: v for (ax, _), v in zip(keep, vs, strict=True)})
            return env

        def __exit__(self, *exc) -> None:
            self.block.__exit__(*exc)
            self.grid.__exit__(*exc)

    return _Ctx()


def _centred(x, izp: int):
    """The TE's ``i32(x) - input_zp`` (no subtraction for a zero point of 0)."""
    xv = T.Cast("int32", x)
    return xv - izp if izp else xv


# ------------------------------------------------------------------------------------------ conv2d / dense tiles


@dataclass(frozen=True)
class MacTile:
    """``acc[p, q] += (x[ry*dh, p*sw + rx*dw, rc] - izp) * w[q, ry, rx, rc]`` over ry < kh, rx < kw, rc < c.

    ``x`` is a (rows, columns, channels) window of NHWC data (or of its padded copy). ``dense``: ``x`` is (P, K)
    rows and ``w`` (Q, K), ``acc[p, q] += (x[p, r] - izp) * w[q, r]``. The C function is ``tvmq_mac_s8_<P>x<Q>``.
    """

    p: int
    q: int
    kh: int
    kw: int
    c: int
    sw: int = 1
    dh: int = 1
    dw: int = 1
    izp: int = 0
    dense: bool = False

    @property
    def x_shape(self) -> tuple[int, ...]:
        if self.dense:
            return (self.p, self.c)
        return ((self.kh - 1) * self.dh + 1, (self.p - 1) * self.sw + (self.kw - 1) * self.dw + 1, self.c)

    @property
    def w_shape(self) -> tuple[int, ...]:
        return (self.q, self.c) if self.dense else (self.q, self.kh, self.kw, self.c)

    @property
    def name(self) -> str:
        kind = "dense" if self.dense else f"k{self.kh}x{self.kw}_s{self.sw}_d{self.dh}x{self.dw}"
        return f"tvmq_mac_{self.p}x{self.q}_{kind}_c{self.c}_z{self.izp}"


def mac_intrin(tile: MacTile) -> str:
    """The name of the (registered) tensor intrinsic of a conv2d/dense tile."""
    return _register(tile.name, lambda impl: _prim(f"{tile.name}_{'impl' if impl else 'desc'}",
                                                   lambda: _mac_func(tile, impl)))  # fmt: skip


def _mac_func(t: MacTile, impl: bool) -> None:
    x, w, a = T.arg("x", T.handle()), T.arg("w", T.handle()), T.arg("acc", T.handle())
    X, W, A = _strided(x, t.x_shape, "int8"), _strided(w, t.w_shape, "int8"), _strided(a, (t.p, t.q), "int32")
    with T.sblock("root"):
        T.reads(A[0 : t.p, 0 : t.q], X[tuple(slice(0, e) for e in t.x_shape)],
                W[tuple(slice(0, e) for e in t.w_shape)])  # fmt: skip
        T.writes(A[0 : t.p, 0 : t.q])
        if impl:
            _mac_call(t, X, W, A)
            return
        axes = [("p", t.p, "S"), ("q", t.q, "S"), ("ry", t.kh, "R"), ("rx", t.kw, "R"), ("rc", t.c, "R")]
        with _block_vars([axes[0], axes[1], axes[4]] if t.dense else axes) as v:
            p, q, ry, rx, rc = (v[n] for n in ("p", "q", "ry", "rx", "rc"))
            xi = (p, rc) if t.dense else (ry * t.dh, p * t.sw + rx * t.dw, rc)
            wi = (q, rc) if t.dense else (q, ry, rx, rc)
            T.reads(A[p, q], X[xi], W[wi])
            T.writes(A[p, q])
            T.buffer_store(A, A[p, q] + _centred(X[xi], t.izp) * T.Cast("int32", W[wi]), [p, q])


def _mac_call(t: MacTile, X, W, A) -> None:
    """``tvmq_mac_s8_PxQ(acc, acc_stride, x, x_pixel, x_row, x_col, w, w_channel, w_row, w_col, rows, cols, len,
    izp)``: with dw == 1 a kernel row's KW*C taps are contiguous in both operands, one run of ``len`` = KW*C."""
    kernel = f"tvmq_mac_s8_{t.p}x{t.q}"
    if t.dense:
        strides = (X.strides[0], 0, 0, W.access_ptr("r"), W.strides[0], 0, 0, 1, 1, t.c)
    else:
        cols, length = (1, t.kw * t.c) if t.dw == 1 else (t.kw, t.c)
        strides = (X.strides[1] * t.sw, X.strides[0] * t.dh, X.strides[1] * t.dw, W.access_ptr("r"), W.strides[0],
                   W.strides[1], W.strides[2], t.kh, cols, length)  # fmt: skip
    T.evaluate(T.call_extern("int32", kernel, A.access_ptr("rw"), A.strides[0], X.access_ptr("r"), *strides, t.izp))


@dataclass(frozen=True)
class DwTile:
    """Depthwise, one input channel per output channel: ``acc[g] += (x[ry*dh, rx*dw, g] - izp) * w[g, ry, rx, 0]``
    over ry < kh, rx < kw for G consecutive channels of one output pixel (C function ``tvmq_dw_s8_<G>``)."""

    g: int
    kh: int
    kw: int
    dh: int = 1
    dw: int = 1
    izp: int = 0

    @property
    def name(self) -> str:
        return f"tvmq_dw_{self.g}_k{self.kh}x{self.kw}_d{self.dh}x{self.dw}_z{self.izp}"


def dw_intrin(tile: DwTile) -> str:
    """The name of the (registered) tensor intrinsic of a depthwise tile."""
    return _register(tile.name, lambda impl: _prim(f"{tile.name}_{'impl' if impl else 'desc'}",
                                                   lambda: _dw_func(tile, impl)))  # fmt: skip


def _dw_func(t: DwTile, impl: bool) -> None:
    rows, cols = (t.kh - 1) * t.dh + 1, (t.kw - 1) * t.dw + 1
    x, w, a = T.arg("x", T.handle()), T.arg("w", T.handle()), T.arg("acc", T.handle())
    X, W = _strided(x, (rows, cols, t.g), "int8"), _strided(w, (t.g, t.kh, t.kw, 1), "int8")
    A = T.match_buffer(a, (t.g,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(A[0 : t.g], X[0:rows, 0:cols, 0 : t.g], W[0 : t.g, 0 : t.kh, 0 : t.kw, 0:1])
        T.writes(A[0 : t.g])
        if impl:
            T.evaluate(T.call_extern("int32", f"tvmq_dw_s8_{t.g}", A.access_ptr("rw"), X.access_ptr("r"),
                                     X.strides[0] * t.dh, X.strides[1] * t.dw, W.access_ptr("r"), W.strides[0],
                                     W.strides[1], W.strides[2], t.kh, t.kw, t.izp))  # fmt: skip
            return
        with _block_vars([("g", t.g, "S"), ("ry", t.kh, "R"), ("rx", t.kw, "R"), ("rc", 1, "R")]) as v:
            g, ry, rx = v["g"], v["ry"], v["rx"]
            xi, wi = (ry * t.dh, rx * t.dw, g), (g, ry, rx, 0)
            T.reads(A[g], X[xi], W[wi])
            T.writes(A[g])
            T.buffer_store(A, A[g] + _centred(X[xi], t.izp) * T.Cast("int32", W[wi]), [g])


_CB4_COUNT = [0]


def cb4_intrin(packed: tirx.Buffer, channels: int, k: int, table_len: int, izp: int) -> str:
    """Register the intrinsic of a dense layer's whole output row against 4-bit codebook weights decoded on the fly
    (each weight is used once: a decoded copy would cost a store and a load per weight) and return its name:
    ``acc[0, q] += (x[0, r] - izp) * table[q, nibble r of packed row q]`` for every output channel q (C function
    ``tvmq_mac_cb4``, which loops over the channels itself).

    Tensorization compares the table's index, a load of ``packed`` nested in another load, as an expression: the
    description must read the kernel's own ``packed`` there, at the same offset (channel 0, hence a tile of every
    channel). Its declared read of a match buffer of the same rows binds the buffer the C call takes. One
    registration per kernel."""
    _CB4_COUNT[0] += 1
    name = f"tvmq_cb4_{channels}x{k}_t{table_len}_z{izp}_{_CB4_COUNT[0]}"

    def build(impl: bool) -> tirx.PrimFunc:
        return _prim(
            f"{name}_{'impl' if impl else 'desc'}", lambda: _cb4_func(packed, channels, k, table_len, izp, impl)
        )

    return _register(name, build)


def _cb4_func(packed: tirx.Buffer, q: int, k: int, table_len: int, izp: int, impl: bool) -> None:
    from .codebook import packed_index

    row = int(packed.shape[1])
    x, pk, tb, a = (T.arg(n, T.handle()) for n in ("x", "packed", "table", "acc"))
    X, PK = _strided(x, (1, k), "int8"), _strided(pk, (q, row), "uint8")
    TB, A = _strided(tb, (q, table_len), "int8"), _strided(a, (1, q), "int32")
    with T.sblock("root"):
        T.reads(A[0, 0:q], X[0, 0:k], TB[0:q, 0:table_len], PK[0:q, 0:row])
        T.writes(A[0, 0:q])
        if impl:
            T.evaluate(T.call_extern("int32", "tvmq_mac_cb4", A.access_ptr("rw"), X.access_ptr("r"),
                                     PK.access_ptr("r"), PK.strides[0], TB.access_ptr("r"), TB.strides[0], q, k,
                                     izp))  # fmt: skip
            return
        with _block_vars([("q", q, "S"), ("r", k, "R")]) as v:
            vq, vr = v["q"], v["r"]
            index = packed_index(lambda byte: packed[vq, byte], vr, 4)
            T.reads(A[0, vq], X[0, vr], TB[vq, 0:table_len], PK[vq, vr // 2])
            T.writes(A[0, vq])
            T.buffer_store(A, A[0, vq] + _centred(X[0, vr], izp) * T.Cast("int32", TB[vq, index]), [0, vq])


# --------------------------------------------------------------------------------------------- requantization


@dataclass(frozen=True)
class RequantTile:
    """The conv/dense epilogue of a P x Q tile: ``out[p, q] = requantize_output(acc[p, q], bias[q], mult[q],
    shift[q], zp, lo, hi)`` (``schedules.fixed_point``), int8 out; ``pow2``: no multiplier, a power-of-two shift.
    C functions ``tvmq_requant_s8`` and ``tvmq_requant_pow2_s8``."""

    p: int
    q: int
    bias: bool
    pow2: bool
    zp: int
    lo: int
    hi: int

    @property
    def name(self) -> str:
        return f"tvmq_requant_{self.p}x{self.q}_b{int(self.bias)}_p{int(self.pow2)}_z{self.zp}_{self.lo}_{self.hi}"


def requant_intrin(tile: RequantTile) -> str:
    """The name of the (registered) tensor intrinsic of a tile's requantization."""
    return _register(tile.name, lambda impl: _prim(f"{tile.name}_{'impl' if impl else 'desc'}",
                                                   lambda: _requant_func(tile, impl)))  # fmt: skip


def _requant_func(t: RequantTile, impl: bool) -> None:
    from .fixed_point import requantize_output

    absent = {"bias"} if not t.bias else set()
    names = [n for n in ("acc", "bias", "mult", "shift", "out") if n not in absent | ({"mult"} if t.pow2 else set())]
    handles = {n: T.arg(n, T.handle()) for n in names}
    acc, out = _strided(handles["acc"], (t.p, t.q), "int32"), _strided(handles["out"], (t.p, t.q), "int8")
    bias = T.match_buffer(handles["bias"], (t.q,), "int32", offset_factor=1) if t.bias else None
    mult = None if t.pow2 else T.match_buffer(handles["mult"], (t.q,), "int32", offset_factor=1)
    shift = T.match_buffer(handles["shift"], (t.q,), "int32", offset_factor=1)
    params = [b for b in (bias, shift, mult) if b is not None]  # the TE's order: accumulator, bias, shift, mult
    with T.sblock("root"):
        T.reads(acc[0 : t.p, 0 : t.q], *[b[0 : t.q] for b in params])
        T.writes(out[0 : t.p, 0 : t.q])
        if impl:
            kernel = "tvmq_requant_pow2_s8" if t.pow2 else "tvmq_requant_s8"
            T.evaluate(T.call_extern("int32", kernel, acc.access_ptr("r"), acc.strides[0], out.access_ptr("w"),
                                     out.strides[0], int(t.bias),
                                     bias.access_ptr("r") if bias is not None else T.int32(0),
                                     *([] if mult is None else [mult.access_ptr("r")]), shift.access_ptr("r"), t.p,
                                     t.q, t.zp, t.lo, t.hi))  # fmt: skip
            return
        # only the tile's extents above 1 are loops, as ``reverse_compute_at`` leaves them
        extents = [e for e in (t.p, t.q) if e > 1] or [1]
        with T.grid(*extents) as loops, T.sblock("out"):
            loops = [loops] if isinstance(loops, tirx.Var) else list(loops)
            vs = T.axis.remap("S" * len(loops), loops) if extents != [1] else []
            vs = iter([vs] if isinstance(vs, tirx.Var) else list(vs))
            p = next(vs) if t.p > 1 else 0
            q = next(vs) if t.q > 1 else 0
            T.reads(acc[p, q], *[b[q] for b in params])
            T.writes(out[p, q])
            value = requantize_output(acc[p, q], None if bias is None else bias[q], None if mult is None else mult[q],
                                      shift[q], t.zp, t.lo, t.hi, "int8")  # fmt: skip
            T.buffer_store(out, value, [p, q])
