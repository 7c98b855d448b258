"""The default schedule of every tvmq PrimFunc: no full-size temporaries, loops in the compute's order.

A TE compute writes each stage (padding, int32 accumulator, epilogue) as its own tensor. Lowered as is, a conv
would keep a padded copy of its input and an int32 tensor four times its output on the microcontroller's stack.
The default schedule inlines injective producers (padding reads the input directly, with a bounds test) and
computes each epilogue right after its reduction, so the accumulator shrinks to one register. It changes no
arithmetic: host and device results stay bit-identical. Tuned schedules (MetaSchedule) start from this one.
"""

from __future__ import annotations

import contextlib

from tvm import s_tir, tirx


def default_schedule(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Inline producers that are not reductions, then fuse each reduction's single consumer into its loops."""
    sch = s_tir.Schedule(func)
    for block in _blocks(sch):
        if not _is_reduction(sch, block) and sch.get_consumers(block):
            # a producer read by a reduction with a non-affine index cannot inline: it stays materialised
            with contextlib.suppress(s_tir.ScheduleError):
                sch.compute_inline(block)
    for block in _blocks(sch):
        consumers = sch.get_consumers(block)
        if _is_reduction(sch, block) and len(consumers) == 1:
            spatial = _spatial_loop_count(sch, block)
            if spatial:
                # a consumer reading other positions of the accumulator (e.g. softmax) stays where it is
                with contextlib.suppress(s_tir.ScheduleError):
                    sch.reverse_compute_at(consumers[0], sch.get_loops(block)[spatial - 1])
    for block in _blocks(sch):  # blocks moved by compute-at stay children of the root block
        spatial = _spatial_loop_count(sch, block)
        loops = sch.get_loops(block)
        if _is_reduction(sch, block) and len(loops) > spatial:
            # the initialisation leaves the reduction loop: no per-tap branch, no "maybe uninitialised" in C
            sch.decompose_reduction(block, loops[len(loops) - len(_iter_types(sch, block)) + spatial])
    return sch.mod["main"]


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
