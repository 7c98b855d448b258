"""Device schedules of conv2d and dense kernels: register tiles tensorized into tvmq's micro-kernels.

The default schedule computes one output at a time with the padding test inside the innermost loop (about 10
instructions per multiply-accumulate on a Cortex-M4). Here the output is tiled into P pixels x Q output channels;
each tile's whole reduction is one call of a micro-kernel (``schedules.intrin``: the description is the TE's own
multiply-accumulate, ``tensorize`` checks it), which keeps the P*Q sums in registers and reads each loaded word of
inputs or weights for several sums (SIMD ``SMLAD`` with the DSP extension). The tile's requantization follows as one
more micro-kernel (its description is ``schedules.fixed_point.requantize_output``), which prepares each channel's
multiplier and shifts once for the tile's P pixels.

- Padding: the padded input a block of tiles reads (KH rows x their columns x C, the input zero point outside the
  image) is copied into a small stack buffer, so the micro-kernels run without bounds tests. The copy is shared by
  all output channels (int8 weights) and costs about one instruction per byte.
- Codebook weights (``schedules.codebook``): the Q channels of a tile are decoded once per inference into a stack
  buffer (output channels outermost), then the int8 micro-kernel runs.
- Depthwise: G = 4 channels of one pixel per call (one word of input per tap), output rows blocked so that a copied
  input row serves several output rows.

Only the loop structure changes, never the arithmetic: the host (plain TE order) and the device (this) compute
identical bytes, which the QEMU tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx

from .inplace import MODES, slab_mode, slab_name
from .intrin import DwTile, MacTile, RequantTile, cb4_intrin, dw_intrin, mac_intrin, requant_intrin
from .primfuncs import GEOMETRY

ACC_BLOCKS = {"conv2d": "qconv2d_acc", "dense": "qdense_acc"}
SLAB_MODES = ("element", *MODES)  # the fused residual ADD's buffer, the in-place orders (``schedules.inplace``)
DECODE_BLOCK = "weight_decode"
WINDOW_MAX_BYTES = 1024  # stack bytes of one padded input window (a bigger one stays with the default schedule)
DECODE_MAX_BYTES = 2048  # stack bytes of one tile's decoded codebook weights


@dataclass(frozen=True)
class Plan:
    """How one kernel is tiled: P pixels (dense: rows) by Q output channels."""

    p: int
    q: int


def tiled_schedule(func: tirx.PrimFunc, *, simd: bool) -> tirx.PrimFunc | None:
    """``func`` scheduled with micro-kernel tiles, or None when it is not a conv2d/dense this handles (packed
    activation codes, LUT epilogues, fused residual ADDs and in-place orders keep the default schedule).

    ``simd``: the core has the DSP extension. The micro-kernels pick their instructions when compiled; the tile
    shapes are the same for both."""
    del simd
    geometry = (func.attrs or {}).get(GEOMETRY)
    if geometry is None:
        return None
    sch = s_tir.Schedule(func)
    try:
        ok = _schedule_dense(sch, geometry) if str(geometry["op"]) == "dense" else _schedule_conv(sch, geometry)
    except (s_tir.ScheduleError, ValueError):  # a shape the tiles do not cover: the default schedule
        return None
    return sch.mod["main"] if ok else None


def _block(sch: s_tir.Schedule, name: str):
    try:
        return sch.get_sblock(name)
    except s_tir.ScheduleError:
        return None


def _single_consumer(sch: s_tir.Schedule, block):
    consumers = sch.get_consumers(block)
    return consumers[0] if len(consumers) == 1 else None


@dataclass(frozen=True)
class Kernel:
    """The blocks of one conv2d/dense PrimFunc this module schedules.

    ``epilogue`` is the multiply-shift requantization of ``acc``. Without ``tail`` it writes the output; with one it
    writes a buffer the ``tail`` reads element by element: the fused residual ADD (mode "element"), or the copy of
    an in-place order's slab into the output ("pixel": 1x1 convolutions, "channel": depthwise,
    ``schedules.inplace``), whose order the schedule must keep."""

    acc: object
    epilogue: object
    pad: object | None
    decode: object | None
    tail: object | None
    mode: str | None


def _kernel(sch: s_tir.Schedule, op: str) -> Kernel | None:
    """The blocks of a conv2d/dense whose accumulator reads int8 data (a parameter, maybe padded) and int8 weights
    (a parameter, maybe decoded from a codebook) and whose epilogue is the multiply-shift requantization; None for
    other kernels (packed activation codes, LUT epilogues), which keep the default schedule."""
    func = sch.mod["main"]
    params = {p.name for p in func.params}
    stages = ["qconv2d", *(slab_name("qconv2d", m) for m in SLAB_MODES)]
    names = [ACC_BLOCKS[op]] if op == "dense" else [f"{n}_acc" for n in stages]
    acc = next((blk for blk in (_block(sch, n) for n in names) if blk is not None), None)
    if acc is None:
        return None
    prefix = sch.get(acc).name_hint.removesuffix("_acc")
    mode = slab_mode(prefix)
    epilogue = _single_consumer(sch, acc)
    if epilogue is None or sch.get(epilogue).name_hint != prefix:
        return None  # a LUT epilogue or packed output codes
    tail = _single_consumer(sch, epilogue) if mode else None
    last = tail if mode else epilogue
    if last is None or sch.get_consumers(last) or not {r.source.name for r in sch.get(last).writes} <= params:
        return None
    own = sch.get(acc).writes[0].source.name
    reads = {r.source.name: r.source for r in sch.get(acc).reads if r.source.name != own}
    if len(reads) != 2 or any(str(buf.dtype) != "int8" for buf in reads.values()):
        return None
    pad_name = prefix + "_pad"
    if not set(reads) <= params | {pad_name, DECODE_BLOCK}:
        return None
    decode = _block(sch, DECODE_BLOCK) if DECODE_BLOCK in reads else None
    if decode is not None and not {r.source.name for r in sch.get(decode).reads} <= params:
        return None
    pad = _block(sch, pad_name) if pad_name in reads else None
    return Kernel(acc, epilogue, pad, decode, tail, mode)


# (P, Q) in order of preference: instructions per multiply-accumulate of the SIMD loop, (3P + 3Q + 2PQ) / 4PQ,
# plus how many pixels share a channel's requantization parameters; the register budget caps P*Q
_TILES = ((2, 2), (5, 1), (3, 2), (1, 4), (3, 1), (1, 2), (2, 1), (1, 1))


def _tile_sizes(pixels: int, channels: int) -> Plan:
    """The preferred tile whose sides divide the output (no partial tiles, which tensorization cannot take)."""
    return next(Plan(p, q) for p, q in _TILES if pixels % p == 0 and channels % q == 0)


def _finish(sch: s_tir.Schedule, kern: Kernel, tile_loop, intrin: str, geometry, epilogue_loop, epilogue_tile: Plan,
            tail_loop=None) -> None:  # fmt: skip
    """Initialisation out of the reduction (unrolled) and the tile under ``tile_loop`` tensorized; the epilogue of all
    tiles under ``epilogue_loop`` (an ``epilogue_tile`` of pixels x channels) tensorized right after them: the more
    pixels it covers, the fewer times each channel's multiplier and shifts are prepared (the accumulators of those
    tiles wait in a small stack buffer). A tail (fused ADD, in-place copy) follows under ``tail_loop`` (default:
    right after the epilogue)."""
    acc, epilogue = kern.acc, kern.epilogue
    first = _depth(sch, acc, tile_loop) - 1
    depth = _depth(sch, acc, epilogue_loop)
    sch.reverse_compute_at(epilogue, epilogue_loop)
    if kern.tail is not None:
        tail_loop = epilogue_loop if tail_loop is None else tail_loop
        sch.reverse_compute_at(kern.tail, tail_loop)
        loops = sch.get_loops(kern.tail)[_depth(sch, kern.tail, tail_loop) :]
        if kern.mode != "element":  # the slab's copy into the output
            _unroll_copy(sch, kern.tail, int(sch.get(loops[-1]).extent))
        elif epilogue_tile.p * epilogue_tile.q <= 4:  # TFLM's ADD per element, unrolled for a small tile
            for loop in loops:
                sch.unroll(loop)
    init = sch.decompose_reduction(acc, tile_loop)
    for loop in sch.get_loops(init)[first:]:
        sch.unroll(loop)
    sch.tensorize(tile_loop, intrin)
    loops = sch.get_loops(epilogue)[depth:]
    tile = RequantTile(epilogue_tile.p, epilogue_tile.q, bool(geometry["bias"]), bool(geometry["pow2"]),
                       int(geometry["output_zp"]), int(geometry["act_min"]), int(geometry["act_max"]))  # fmt: skip
    try:
        sch.tensorize(loops[0] if loops else epilogue, requant_intrin(tile))
    except s_tir.ScheduleError:  # e.g. an output written into a slice of a concatenation: the plain TIR, unrolled
        for loop in sch.get_loops(epilogue)[depth:]:
            sch.unroll(loop)


def _depth(sch: s_tir.Schedule, block, loop) -> int:
    """How many loops of ``block`` enclose ``loop``, ``loop`` included."""
    loops = [sch.get(lp) for lp in sch.get_loops(block)]
    return next(n for n, lp in enumerate(loops) if lp.same_as(sch.get(loop))) + 1


def _unroll_copy(sch: s_tir.Schedule, block, channels: int) -> None:
    """Unroll a copy's channel loop by up to 16: gcc then tests the padding once per run of channels and merges the
    byte copies into word loads and stores (about 1 instruction per byte instead of 10)."""
    loop = sch.get_loops(block)[-1]
    step = max(f for f in (1, 2, 4, 8, 16) if channels % f == 0)
    if step < channels:
        loop = sch.split(loop, [None, step])[1]
    sch.unroll(loop)


def _copy_window(sch: s_tir.Schedule, acc, pad, loop, shape: tuple[int, int, int],
                 image: tuple[int, int] | None) -> None:  # fmt: skip
    """The padded input the tiles under ``loop`` read, a window of ``shape`` (rows, columns, channels), copied there
    into a stack buffer. ``image`` = (left padding, width) when the window spans whole rows: its column loop is
    split at the image's edges, so the column test disappears from the middle part."""
    pad_name = sch.get(pad).name_hint
    index = next(n for n, r in enumerate(sch.get(acc).reads) if r.source.name == pad_name)
    window = sch.cache_read(acc, index, "global")
    sch.compute_at(window, loop)
    sch.compute_inline(pad)
    named = [n for n, e in zip(("rows", "cols", "channels"), shape, strict=True) if e > 1]  # compute_at drops units
    loops = dict(zip(named, sch.get_loops(window)[-len(named) :], strict=True)) if named else {}
    if "channels" in loops:
        _unroll_copy(sch, window, shape[2])
    if image is not None and "cols" in loops:
        left, width = image
        factors = [f for f in (left, min(width, shape[1] - left)) if f > 0]
        if sum(factors) < shape[1]:
            sch.loop_partition(loops["cols"], [*factors, None])


def _unroll_decode(sch: s_tir.Schedule, decode) -> None:
    """Unroll the decode's innermost loop by 8: each index's position in its packed byte becomes a constant (no
    variable shift) and gcc loads each packed byte once."""
    loop = sch.get_loops(decode)[-1]
    extent = int(sch.get(loop).extent)
    if extent % 8 == 0 and extent > 8:
        loop = sch.split(loop, [None, 8])[1]
    if extent % 8 == 0 or extent < 8:
        sch.unroll(loop)


ACC_MAX_BYTES = 512  # stack bytes of the accumulators waiting for one requantization call


def _acc_cols(cols: int, step: int, channels: int) -> int:
    """The most pixels (a divisor of ``cols``, a multiple of the tile's ``step``) whose accumulators for ``channels``
    channels fit ACC_MAX_BYTES."""
    return max([d for d in _divisors(cols) if d % step == 0 and d * channels * 4 <= ACC_MAX_BYTES] or [step])


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _window(oh: int, ow: int, step: int, rows: int, span: int, sh: int, sw: int, channels: int):
    """(output rows, output columns) one padded window serves, dividing the output (columns a multiple of the pixel
    tile ``step``): whole rows when they fit WINDOW_MAX_BYTES, then as many rows as fit (every further row saves
    copying the KH - sh input rows it shares with the previous one). None when not even one tile fits."""

    def size(r: int, c: int) -> int:
        return ((r - 1) * sh + rows) * ((c - 1) * sw + span) * channels

    cols = [c for c in _divisors(ow) if c % step == 0 and size(1, c) <= WINDOW_MAX_BYTES]
    if not cols:
        return None
    col = max(cols)
    return max(r for r in _divisors(oh) if size(r, col) <= WINDOW_MAX_BYTES), col


def _schedule_conv(sch: s_tir.Schedule, geometry) -> bool:
    kern = _kernel(sch, "conv2d")
    if kern is None:
        return False
    pad, decode = kern.pad, kern.decode
    func = sch.mod["main"]
    _, _, w, c = (int(d) for d in func.params[0].shape)
    b, i, j, k, ry, rx, rc = sch.get_loops(kern.acc)
    o = int(sch.get(k).extent)
    kh, kw, cg = (int(sch.get(loop).extent) for loop in (ry, rx, rc))
    groups = int(geometry["groups"])
    if groups == c == o and c > 1 and cg == 1:
        return _schedule_depthwise(sch, kern, geometry)
    if groups != 1 or kern.mode == "channel":
        return False
    sh, sw = (int(v) for v in geometry["strides"])
    dh, dw = (int(v) for v in geometry["dilation"])
    oh, ow = int(sch.get(i).extent), int(sch.get(j).extent)
    plan = _tile_sizes(ow, o)
    if decode is not None and plan.q * kh * kw * c > DECODE_MAX_BYTES:
        return False
    rows, cols = 1, _acc_cols(ow, plan.p, plan.q)
    if kern.mode == "pixel":  # every channel of a few pixels before they are written (over their own input)
        cols = plan.p
    elif pad is not None:
        window = _window(oh, ow, plan.p, (kh - 1) * dh + 1, (kw - 1) * dw + 1, sh, sw, c)
        if window is None:
            return False
        rows, cols = window
        if decode is not None:
            cols = _acc_cols(cols, plan.p, plan.q)
    io, ii = sch.split(i, [None, rows])
    jo, jr = sch.split(j, [None, cols])
    jm, ji = sch.split(jr, [None, plan.p])
    ko, ki = sch.split(k, [None, plan.q])
    tail_loop = jo if kern.mode == "pixel" else None
    if kern.mode == "pixel" or (pad is not None and decode is None):  # channels innermost: the window (or the
        sch.reorder(b, io, jo, ii, jm, ko, ji, ki, ry, rx, rc)  # in-place pixel block) serves all of them
        epilogue_at = (ko, plan)
    else:  # output channels outermost: one requantization per row of pixels; codebook weights decoded once
        sch.reorder(b, ko, io, jo, ii, jm, ji, ki, ry, rx, rc)
        if decode is not None:
            sch.compute_at(decode, ko)
            _unroll_decode(sch, decode)
        epilogue_at = (ii, Plan(cols, plan.q))
    if pad is not None:
        shape = ((rows - 1) * sh + (kh - 1) * dh + 1, (cols - 1) * sw + (kw - 1) * dw + 1, c)
        _copy_window(sch, kern.acc, pad, jo, shape, (int(geometry["padding"][1]), w) if cols == ow else None)
    tile = MacTile(plan.p, plan.q, kh, kw, c, sw=sw, dh=dh, dw=dw, izp=int(geometry["input_zp"]))
    _finish(sch, kern, ji, mac_intrin(tile), geometry, *epilogue_at, tail_loop=tail_loop)
    return True


SLAB_MAX_BYTES = 2048  # stack bytes of an in-place depthwise's slab (G channels x OH x OW)


def _schedule_depthwise(sch: s_tir.Schedule, kern: Kernel, geometry) -> bool:
    """Depthwise: G = 4 channels of one pixel per micro-kernel call (one word of input per tap). A padded input is
    copied per block of output rows and channel group (their input rows x columns x G), shared by the block's
    pixels: each input row is copied about once per output-row block instead of KH times. In place ("channel"
    order) the G channels' whole output waits in a slab until their input is read."""
    func = sch.mod["main"]
    _, _, w, c = (int(d) for d in func.params[0].shape)
    b, i, j, k, ry, rx, rc = sch.get_loops(kern.acc)
    kh, kw = int(sch.get(ry).extent), int(sch.get(rx).extent)
    sh, sw = (int(v) for v in geometry["strides"])
    dh, dw = (int(v) for v in geometry["dilation"])
    oh, ow = int(sch.get(i).extent), int(sch.get(j).extent)
    groups = [f for f in (4, 2, 1) if c % f == 0]
    if kern.mode == "channel":
        groups = [f for f in groups if f * oh * ow <= SLAB_MAX_BYTES]
    elif kern.mode == "pixel":
        return False
    if not groups:
        return False
    g = groups[0]
    rows, cols = 1, _acc_cols(ow, 1, g)
    if kern.pad is not None:
        window = _window(oh, ow, 1, (kh - 1) * dh + 1, (kw - 1) * dw + 1, sh, sw, g)
        if window is None:
            return False
        rows, cols = window[0], _acc_cols(window[1], 1, g)
    io, ii = sch.split(i, [None, rows])
    ko, ki = sch.split(k, [None, g])
    jo, ji = sch.split(j, [None, cols])
    sch.reorder(b, ko, io, jo, ii, ji, ki, ry, rx, rc)
    if kern.decode is not None:
        sch.compute_at(kern.decode, ko)
    if kern.pad is not None:
        shape = ((rows - 1) * sh + (kh - 1) * dh + 1, (cols - 1) * sw + (kw - 1) * dw + 1, g)
        _copy_window(sch, kern.acc, kern.pad, jo, shape, (int(geometry["padding"][1]), w) if cols == ow else None)
    tile = DwTile(g, kh, kw, dh=dh, dw=dw, izp=int(geometry["input_zp"]))
    tail_loop = ko if kern.mode == "channel" else None
    _finish(sch, kern, ki, dw_intrin(tile), geometry, ii, Plan(cols, g), tail_loop=tail_loop)
    return True


def _schedule_dense(sch: s_tir.Schedule, geometry) -> bool:
    kern = _kernel(sch, "dense")
    if kern is None:
        return False
    decode = kern.decode
    i, j, rk = sch.get_loops(kern.acc)
    n, o, k = (int(sch.get(loop).extent) for loop in (i, j, rk))
    izp = int(geometry["input_zp"])
    packed, table = (None, None) if decode is None else (sch.get(decode).reads[n].source for n in (1, 0))
    nibbles = decode is not None and _nibbles(packed, table, k)
    plan = Plan(1, o) if nibbles else _tile_sizes(n, o)
    io, ii = sch.split(i, [None, plan.p])
    jo, ji = sch.split(j, [None, plan.q])
    sch.reorder(jo, io, ii, ji, rk)
    intrin = mac_intrin(MacTile(plan.p, plan.q, 1, 1, k, izp=izp, dense=True))
    if nibbles:  # each weight is used once: decoded as the multiply-accumulates go
        sch.compute_inline(decode)
        intrin = cb4_intrin(packed, o, k, int(table.shape[1]), izp)
        ii = ji  # the row loop is a unit loop; the tile is all channels
    elif decode is not None:
        sch.compute_at(decode, jo)
        _unroll_decode(sch, decode)
    _finish(sch, kern, ii, intrin, geometry, io, plan)
    return True


def _nibbles(packed, table, k: int) -> bool:
    """Codebook weights stored as 4-bit indices (``schedules.codebook``: 2 per byte, low nibble first)."""
    return str(packed.dtype) == "uint8" and k > 2 and int(packed.shape[1]) == (k + 1) // 2 and int(table.shape[1]) <= 16
