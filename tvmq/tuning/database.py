"""The tuning database (MetaSchedule's JSON database in a directory) and the schedule ``tvmq.build`` takes from it.

Layout: ``DIR/database_workload.json`` (one untuned PrimFunc per line) and ``DIR/database_tuning_record.json`` (one
measured candidate per line: its trace, ``run_secs`` = QEMU instructions x 1 ns, the target). Failed candidates
(wrong results, faults, compile errors) are recorded with no ``run_secs``: MetaSchedule never returns them as best,
and a resumed run knows they were tried. Nothing else is written there.

Which record is applied (``best_schedule``): the fastest valid record of the kernel, provided the database also
holds a measurement of *today's* default schedule for it (``lower.DEFAULT`` names the default's hash). Records are
only comparable with the default they were measured against: when ``schedules/`` has changed since tuning, the
kernel keeps the default schedule until ``tvmq tune`` runs again (it re-measures the new default and continues).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir import meta_schedule as ms
from tvm.script import tirx as T

from ..errors import ConfigError
from ..target import MicroTarget, parse_target
from .lower import DEFAULT, StaleDefault, default_schedule, func_hash, marks, realize

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


def database_dir(path: str | os.PathLike, *, create: bool) -> Path:
    """The database directory, checked (and created when ``create``); ConfigError names what is wrong."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"database must be the path of a directory, got {path!r}")
    directory = Path(path).expanduser()
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"database {str(directory)!r} exists and is not a directory; give a directory (it holds "
                          f"MetaSchedule's {WORKLOADS} and {RECORDS})")  # fmt: skip
    if not directory.exists():
        if not create:
            raise ConfigError(f"database {str(directory)!r} does not exist; create it with `tvmq tune ... "
                              f"--database {directory}` (tvmq.tune(..., database=...))")  # fmt: skip
        try:
            directory.mkdir(parents=True)
        except OSError as err:
            raise ConfigError(f"database {str(directory)!r} cannot be created: {err.strerror or err}") from None
    for name in (WORKLOADS, RECORDS):
        f = directory / name
        if f.exists() and not f.is_file():
            raise ConfigError(f"database {str(directory)!r}: {name} is not a file")
    if not create and not (directory / WORKLOADS).is_file():
        raise ConfigError(f"database {str(directory)!r} holds no {WORKLOADS}: it is no tvmq tuning database "
                          f"(run `tvmq tune ... --database {directory}` first)")  # fmt: skip
    return directory


_TENSORIZE = re.compile(r'\["Tensorize",\[[^\]]*\],\["([^"]+)"')
_MAC_SHAPE = re.compile(r"tvmq_mac_(\d+)x(\d+)_")  # only narrows which spaces to run; all of them otherwise


def ensure_intrinsics(directory: Path) -> None:
    """Register the tensor intrinsics the records' traces name, before MetaSchedule parses them (it refuses a trace
    naming an unknown intrinsic, and would refuse the whole database).

    tvmq registers its micro-kernel intrinsics on first use, one per shape: running the kernels' design spaces once
    registers every one they can use. A name no space produces any more (``schedules/`` changed) gets an empty
    placeholder: its records parse but never replay, so they are skipped, never applied."""
    records = directory / RECORDS
    if not records.is_file():
        return
    names = set(_TENSORIZE.findall(records.read_text()))
    if not names:
        return
    from . import space

    missing = {n for n in names if not _registered(n)}
    shapes = {m.groups() for m in (_MAC_SHAPE.match(n) for n in missing) if m} if missing else set()
    workloads = directory / WORKLOADS
    for line in workloads.read_text().splitlines() if missing and workloads.is_file() else []:
        try:
            func = ms.database.Workload.from_json(json.loads(line)).mod["main"]
        except Exception:  # noqa: BLE001,S112 - MetaSchedule reports a damaged workload file itself
            continue
        space.register_intrinsics(func, shapes={(int(p), int(q)) for p, q in shapes} or None)
    for name in sorted(names):
        if not _registered(name):
            s_tir.TensorIntrin.register(name, _PLACEHOLDER, _PLACEHOLDER, override=True)


def _registered(name: str) -> bool:
    try:
        s_tir.TensorIntrin.get(name)
    except Exception:  # noqa: BLE001 - TVM raises its own error type for an unknown name
        return False
    return True


@T.prim_func(s_tir=True)
def _PLACEHOLDER(a: T.handle) -> None:  # an intrinsic nothing matches: records naming it never replay
    A = T.match_buffer(a, (1,), "int8", offset_factor=1)
    with T.sblock("root"):
        T.reads(A[0:1])
        T.writes(A[0:1])
        A[0] = A[0]


def open_database(directory: Path) -> ms.database.JSONDatabase:
    """MetaSchedule's JSON database in ``directory`` (its two files are created when missing)."""
    ensure_intrinsics(directory)
    try:
        return ms.database.JSONDatabase(str(directory / WORKLOADS), str(directory / RECORDS), allow_missing=True)
    except Exception as err:  # noqa: BLE001 - TVM raises its own error types for unreadable files
        raise ConfigError(f"database {str(directory)!r} cannot be read ({_first_line(err)}); it is not a "
                          f"MetaSchedule JSON database, or it is damaged: use another directory") from None  # fmt: skip


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


def workload_mod(func: tirx.PrimFunc) -> tvm.IRModule:
    """The IRModule MetaSchedule keys a PrimFunc by (its ``TuneContext`` normalisation)."""
    if not (func.attrs and "global_symbol" in func.attrs):
        func = func.with_attr("global_symbol", "main")
    return tvm.IRModule({"main": func.with_attr("tirx.noalias", True)})


def candidate_key(mod: tvm.IRModule) -> str:
    """Identity of a measured candidate: MetaSchedule's structural hash of its scheduled module."""
    return f"{tvm_ffi.structural_hash(mod) & 0xFFFFFFFFFFFFFFFF:016x}"


def replay(record: ms.database.TuningRecord, mod: tvm.IRModule) -> tvm.IRModule:
    """The candidate module a record stands for (its trace replayed on the workload)."""
    sch = s_tir.Schedule(mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod


@dataclass
class KernelRecords:
    """What the database knows about one kernel."""

    measured: set[str]  # candidate keys of every record (valid or failed)
    valid: list[tuple[float, Any]]  # (seconds, record) of successful measurements, fastest first
    default_seconds: float | None  # today's default schedule, when measured
    failed: int


def kernel_records(db: ms.database.Database, func: tirx.PrimFunc, micro: MicroTarget, *, keys: bool = True,
                   scheduled: bool = False) -> KernelRecords:  # fmt: skip
    """Records of ``func`` in ``db``: replayed (``keys``) to know which candidates were measured. ``scheduled``:
    ``func`` is a default-scheduled PrimFunc (records tuned on top of the default: no default marks)."""
    mod = workload_mod(func)
    out = KernelRecords(set(), [], None, 0)
    if not db.has_workload(mod):
        return out
    workload = db.commit_workload(mod)  # an existing workload: nothing is written
    today = None if scheduled else _default_hash(mod, micro)
    for record in db.get_all_tuning_records():
        if not record.workload.same_as(workload):  # the JSON database shares one object per workload
            continue
        secs = _seconds(record)
        if keys:
            try:
                out.measured.add(candidate_key(replay(record, mod)))
            except Exception:  # noqa: BLE001,S112 - a trace TVM can no longer replay is simply not reused
                continue
        if secs is None:
            out.failed += 1
            continue
        hashed = _record_default_hash(record)
        if hashed is not None and hashed != today:
            continue  # measured against another default schedule: not comparable
        if hashed == today and (out.default_seconds is None or secs < out.default_seconds):
            out.default_seconds = secs
        out.valid.append((secs, record))
    out.valid.sort(key=lambda sr: sr[0])
    return out


def _seconds(record: Any) -> float | None:
    secs = record.run_secs
    if secs is None or len(secs) == 0:
        return None
    values = [float(s) for s in secs]
    return sum(values) / len(values) if all(v < 1e9 for v in values) else None


def _record_default_hash(record: Any) -> str | None:
    """The default-schedule hash a default record carries (None for traced records)."""
    for inst in record.trace.insts:
        if inst.kind.name == "Annotate" and str(inst.attrs[0]) == DEFAULT:
            return str(inst.inputs[1])
    return None


def _default_hash(mod: tvm.IRModule, micro: MicroTarget) -> str:
    return func_hash(default_schedule(micro)(mod["main"]))


def instructions(seconds: float) -> int:
    """QEMU instructions from MetaSchedule's seconds (``-icount shift=0``: one instruction per nanosecond)."""
    return int(round(seconds * 1e9))


def best_schedule(db: ms.database.Database, func: tirx.PrimFunc, micro: MicroTarget) -> tuple[tirx.PrimFunc, str]:
    """The best scheduled PrimFunc the database has for ``func`` and where it came from ("tuned", "default" or why
    the default is used).

    Two workloads may hold records of a kernel: its PrimFunc (the default schedule's measurement and the templates
    built from the PrimFunc) and its default-scheduled PrimFunc (knobs tuned on top of today's default, which only
    match while the default schedule is the same). The fastest valid record of either wins."""
    default = default_schedule(micro)
    baseline = default(func)
    info = kernel_records(db, func, micro, keys=False)
    same = tvm_ffi.structural_equal(workload_mod(baseline), workload_mod(func))  # the default changes nothing
    on_default = KernelRecords(set(), [], None, 0) if same else kernel_records(db, baseline, micro, keys=False,
                                                                                scheduled=True)  # fmt: skip
    if info.default_seconds is None and not on_default.valid:
        if info.valid:
            return baseline, "default (records were measured against another default schedule: re-run tvmq tune)"
        return baseline, "default (no record)"
    ranked = [(secs, r, workload_mod(func)) for secs, r in info.valid] if info.default_seconds is not None else []
    ranked += [(secs, r, workload_mod(baseline)) for secs, r in on_default.valid]
    ranked.sort(key=lambda item: item[0])
    for _, record, mod in ranked:
        try:
            candidate = replay(record, mod)
            if DEFAULT in marks(candidate):
                return baseline, "default (fastest measured)"
            return realize(candidate, micro), "tuned"
        except StaleDefault:
            continue
        except Exception as err:  # noqa: BLE001 - e.g. a TVM upgrade: the next record, or the default
            warnings.warn(f"a tuning record no longer replays ({_first_line(err)}); trying the next", stacklevel=2)
    return baseline, "default (no record replays)"


def schedule_from_database(database: str | os.PathLike, target: Any) -> Callable[[tirx.PrimFunc], tirx.PrimFunc]:
    """PrimFunc -> PrimFunc: the best tuned schedule of each kernel in ``database``, the core's default schedule for
    kernels it has no (comparable) record of. What ``tvmq.build(..., database=DIR)`` uses."""
    micro = parse_target(target)
    db = open_database(database_dir(database, create=False))
    cache: dict[str, tirx.PrimFunc] = {}

    def schedule(func: tirx.PrimFunc) -> tirx.PrimFunc:
        key = func_hash(func)
        if key not in cache:
            cache[key] = best_schedule(db, func, micro)[0]
        return cache[key]

    return schedule
