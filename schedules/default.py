"""The default schedule of every tvmq PrimFunc: no full-size temporaries, loops in the compute's order.

A TE compute writes each stage (padding, int32 accumulator, epilogue) as its own tensor. Lowered as is, a conv
would keep a padded copy of its input and an int32 tensor four times its output on the microcontroller's stack.
The default schedule inlines injective producers (padding reads the input directly, with a bounds test) and
computes each epilogue right after its reduction, so the accumulator shrinks to one register. It changes no
arithmetic: host and device results stay bit-identical. Tuned schedules (MetaSchedule) start from this one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from tvm import s_tir, tirx

from .codebook import ACT_DECODE, ACT_PACK
from .inplace import in_slab_kernel, place_slabs, slab_mode
from .softmax import KEEP_STAGE

WEIGHT_DECODE = "weight_decode"  # the block name ``schedules.codebook.decode_weight`` gives its compute


def device_schedule(*, simd: bool) -> Callable[[tirx.PrimFunc], tirx.PrimFunc]:
    """The schedule of a core: conv2d/dense kernels tiled into micro-kernels (``schedules.tiled``; SIMD ones when the
    core has the DSP extension), every other kernel (and any conv the tiles do not cover) by ``default_schedule``."""

    def schedule(func: tirx.PrimFunc) -> tirx.PrimFunc:
        from .tiled import tiled_schedule  # imports the intrinsics, which need the whole package

        tiled = tiled_schedule(func, simd=simd)
        return default_schedule(func) if tiled is None else tiled

    return schedule


def default_schedule(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Inline producers that are not reductions, then fuse each reduction's single consumer into its loops."""
    sch = s_tir.Schedule(func)
    hoist = _hoistable_weight_decode(sch)
    for block in _blocks(sch):
        if hoist is not None and sch.get(block).same_as(sch.get(hoist)):
            continue
        if sch.get(block).name_hint == ACT_DECODE:
            continue  # placed (or inlined) by _decode_input_rows
        if KEEP_STAGE in sch.get(block).name_hint:
            continue  # a chain of per-row steps (softmax's reciprocal): inlined, it would blow up exponentially
        if slab_mode(sch.get(block).name_hint):
            continue  # the buffer of an in-place convolution, placed by place_slabs
        if not _is_reduction(sch, block) and sch.get_consumers(block):
            # a producer read by a reduction with a non-affine index cannot inline: it stays materialised
            with contextlib.suppress(s_tir.ScheduleError):
                sch.compute_inline(block)
    place_slabs(sch)
    _compute_into_pack(sch)
    if hoist is not None:
        _hoist_weight_decode(sch, hoist)
    _decode_input_rows(sch, row_loop=2 if hoist is not None else 1)
    for block in _blocks(sch):
        consumers = sch.get_consumers(block)
        if in_slab_kernel(sch.get(block).name_hint):
            continue  # placed by place_slabs
        if _is_reduction(sch, block) and len(consumers) == 1:
            spatial = _spatial_loop_count(sch, block)
            if spatial:
                # a consumer reading other positions of the accumulator (e.g. softmax) stays where it is
                with contextlib.suppress(s_tir.ScheduleError):
                    sch.reverse_compute_at(consumers[0], sch.get_loops(block)[spatial - 1])
    for block in _blocks(sch):  # blocks moved by compute-at stay children of the root block
        spatial = _spatial_loop_count(sch, block)
        loops = sch.get_loops(block)
        if _is_reduction(sch, block) and len(loops) > spatial and not in_slab_kernel(sch.get(block).name_hint):
            # the initialisation leaves the reduction loop: no per-tap branch, no "maybe uninitialised" in C
            sch.decompose_reduction(block, loops[len(loops) - len(_iter_types(sch, block)) + spatial])
    return sch.mod["main"]


def _compute_into_pack(sch: s_tir.Schedule) -> None:
    """Outputs stored as packed codes: compute the reduction a packed byte needs inside the packing loop.

    One byte holds 8/b channels, so the accumulator (conv, dense, max pool) shrinks to 8/b int32 per byte instead
    of a full-size int32 tensor on the stack.
    """
    try:
        pack = sch.get_sblock(ACT_PACK)
    except s_tir.ScheduleError:
        return
    for producer in sch.get_producers(pack):
        if _is_reduction(sch, producer):
            sch.compute_at(producer, sch.get_loops(pack)[-1])


def _decode_input_rows(sch: s_tir.Schedule, row_loop: int) -> None:
    """Convolutions reading packed codes: decode the input rows one output row needs into a small int8 buffer.

    Inlined, every multiply-accumulate would unpack and look up its input tap again (about KH*KW times per
    input value and output channel); decoded per output row, each value is decoded about KH times per row of
    output (per output channel byte when the weights are hoisted). Other readers decode inline.
    """
    try:
        decode = sch.get_sblock(ACT_DECODE)
    except s_tir.ScheduleError:
        return
    consumers = sch.get_consumers(decode)
    if len(consumers) == 1 and _is_reduction(sch, consumers[0]) and _spatial_loop_count(sch, consumers[0]) == 4:
        with contextlib.suppress(s_tir.ScheduleError):
            sch.compute_at(decode, sch.get_loops(consumers[0])[row_loop])
            return
    with contextlib.suppress(s_tir.ScheduleError):
        sch.compute_inline(decode)


def _hoistable_weight_decode(sch: s_tir.Schedule):
    """The codebook weight decode of a convolution (its consumer has 4 spatial loops), or None."""
    try:
        decode = sch.get_sblock(WEIGHT_DECODE)
    except s_tir.ScheduleError:
        return None
    consumers = sch.get_consumers(decode)
    return decode if len(consumers) == 1 and _spatial_loop_count(sch, consumers[0]) == 4 else None


def _hoist_weight_decode(sch: s_tir.Schedule, decode) -> None:
    """Convolutions with codebook weights: output channel outermost, its weights decoded once into a small buffer.

    Inlined, the table decode would run for every multiply-accumulate, OH*OW times per weight. With the output
    channel loop outside the pixel loops, one channel's KH*KW*C/groups weights are decoded once per inference
    (an int8 buffer of that size on the stack; 8/b channels' with a packed b-bit output). Dense layers use each
    weight once: they decode inline.
    """
    consumer = sch.get_consumers(decode)[0]
    _, i, j, k = sch.get_loops(consumer)[:4]  # batch, row, column, output channel (or packed channel byte)
    sch.reorder(k, i, j)
    sch.compute_at(decode, sch.get_loops(consumer)[1])


def _blocks(sch: s_tir.Schedule) -> list:
    root = sch.get_sblock("root") if _has_root(sch) else None
    return list(sch.get_child_blocks(root)) if root is not None else []


def _has_root(sch: s_tir.Schedule) -> bool:
    try:
        sch.get_sblock("root")
    except s_tir.ScheduleError:
        return False
    return True


def _iter_types(sch: s_tir.Schedule, block) -> list:
    return [iv.iter_type for iv in sch.get(block).iter_vars]


def _is_reduction(sch: s_tir.Schedule, block) -> bool:
    return any(t == tirx.IterVar.CommReduce for t in _iter_types(sch, block))


def _spatial_loop_count(sch: s_tir.Schedule, block) -> int:
    """How many outer loops of the block are spatial (the reduction loops come last in tvmq's computes)."""
    count = 0
    for t in _iter_types(sch, block):
        if t != tirx.IterVar.DataPar:
            break
        count += 1
    return count
