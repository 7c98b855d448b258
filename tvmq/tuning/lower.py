"""A tuning candidate (an IRModule MetaSchedule produced) -> the scheduled PrimFunc tvmq compiles -> plain C.

Two kinds of candidates exist (``tvmq.tuning.space``):

- *traced* ones, whose schedule MetaSchedule replays from the trace: the candidate module already is the scheduled
  PrimFunc;
- the *default* candidate, the core's own ``device_schedule`` (whatever ``schedules/`` makes of the kernel today). It
  is no trace of MetaSchedule's, so its design space only marks the root block with ``DEFAULT`` and the hash of
  what the default schedule produced when it was measured; ``realize`` applies the default schedule to the
  unmarked PrimFunc. A record whose hash no longer matches (``schedules/`` changed since) is *stale*.

Every candidate also carries ``TASK`` (the tuning task's key) on its root block: MetaSchedule's builder sees only
modules, and this tells it which task's data and reference a candidate is measured with. ``realize`` removes both
marks, so they never reach the generated C.
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
import tvm_ffi
from tvm import s_tir, tirx

from ..codegen.kernels import emit_kernels
from ..schedules.default import device_schedule
from ..target import MicroTarget

DEFAULT = "tvmq.schedule_default"  # root-block annotation of the default candidate: structural hash of its result
TASK = "tvmq.task"  # root-block annotation of every candidate: its task's key
TEMPLATE = "tvmq.template"  # root-block annotation of every candidate: its design space, for reports
_MARKS = (DEFAULT, TASK, TEMPLATE)

Schedule = Callable[[tirx.PrimFunc], tirx.PrimFunc]


def default_schedule(micro: MicroTarget) -> Schedule:
    """The core's default schedule, what ``tvmq.build`` applies without a database."""
    return device_schedule(simd=micro.core.has_dsp)


def func_hash(func: tirx.PrimFunc) -> str:
    """A stable text key of a PrimFunc's structure (MetaSchedule's structural hashing, as hex)."""
    return f"{tvm_ffi.structural_hash(func) & 0xFFFFFFFFFFFFFFFF:016x}"


def _main(mod: tvm.IRModule | tirx.PrimFunc) -> tirx.PrimFunc:
    return mod if isinstance(mod, tirx.PrimFunc) else mod["main"]


def marks(mod: tvm.IRModule | tirx.PrimFunc) -> dict[str, str]:
    """The tuning marks on the root block of a candidate (empty for a plain PrimFunc)."""
    func = _main(mod)
    root = _root_block(func)
    if root is None:
        return {}
    return {str(k): str(v) for k, v in dict(root.annotations).items() if str(k) in _MARKS}


def strip_marks(mod: tvm.IRModule | tirx.PrimFunc) -> tirx.PrimFunc:
    """The candidate's PrimFunc without tuning marks."""
    func = _main(mod)
    found = marks(func)
    if not found:
        return func
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    for key in found:
        sch.unannotate(root, key)
    return sch.mod["main"]


def realize(mod: tvm.IRModule | tirx.PrimFunc, micro: MicroTarget) -> tirx.PrimFunc:
    """The scheduled PrimFunc a candidate stands for (the default schedule for the default candidate).

    Raises ``StaleDefault`` when a default candidate was measured with another default schedule than today's.
    """
    found = marks(mod)
    func = strip_marks(mod)
    if DEFAULT not in found:
        return func
    scheduled = default_schedule(micro)(func)
    if func_hash(scheduled) != found[DEFAULT]:
        raise StaleDefault("the default schedule changed since this record was measured")
    return scheduled


class StaleDefault(Exception):
    """A default-schedule record that no longer describes what the default schedule produces."""


def kernel_c(func: tirx.PrimFunc, micro: MicroTarget, symbol: str) -> str:
    """C text of one already-scheduled PrimFunc as ``static TVMQ_KERNEL void <symbol>(...)``, through exactly the
    lowering ``tvmq.build`` uses (``emit_kernels``: typed pointer parameters, the ``tvmq_c`` pipeline)."""
    return emit_kernels({symbol: func}, micro, schedule=_identity)


def _identity(func: tirx.PrimFunc) -> tirx.PrimFunc:
    return func


def _root_block(func: tirx.PrimFunc) -> s_tir.stmt.SBlock | None:
    """The root block of a PrimFunc in S-TIR form (TE-made and scheduled functions have one)."""
    body = func.body
    return body.block if isinstance(body, s_tir.stmt.SBlockRealize) else None
