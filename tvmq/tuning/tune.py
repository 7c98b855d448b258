"""``tvmq.tune``: MetaSchedule + XGBoost over every kernel of a model, measured in QEMU instructions.

The flow: one task per distinct kernel (``tasks``), each kernel's default schedule measured first (the baseline,
recorded like any candidate), then rounds of MetaSchedule's evolutionary search, each round ``TRIALS_PER_ITER``
candidates of the task with the largest expected gain (calls x recent improvement): candidates sampled and evolved in
the kernel's design space (``space``), ranked by the XGBoost cost model on MetaSchedule's per-store features,
built by ``QemuBuilder`` and measured by ``QemuRunner`` (``measure``). Every measurement, failed ones included, goes
into the JSON database in ``database``. Each kernel has two workloads: its PrimFunc (default schedule and templates
built from the PrimFunc) and its default-scheduled PrimFunc (knobs on top of today's default schedule).

Resuming: ``trials`` is the budget of the database for these kernels. Records already there count, so re-running the
same command continues where an interrupted run stopped (and does nothing after a complete one); candidates already
measured are never measured again (``_fresh_candidates``: MetaSchedule's evolutionary search only remembers what it
measured in its own session, and reseeds from the database's best records).

Everything MetaSchedule and the measurements write (logs, candidate sources, objects, firmwares) lives in a fresh
temporary directory removed at the end; MetaSchedule's ``RemoveBuildArtifact`` (which deletes the parent directory of
artifact paths) is never used, and the database directory is only ever given as its two file paths.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from tqdm.auto import tqdm
from tvm import s_tir, tirx
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..device.boards import DEFAULT_BOARD, Board, check_core, get_board
from ..device.toolchain import check_toolchain
from ..errors import ConfigError
from ..quant.model import QuantizedModel
from ..target import MicroTarget, parse_target
from .database import (
    candidate_key,
    database_dir,
    instructions,
    kernel_records,
    open_database,
    workload_mod,
)
from .lower import TEMPLATE, default_schedule, realize
from .measure import CODE_GROWTH, Measurement, Measurer, QemuBuilder, QemuRunner, Session
from .space import default_hash, mark_default, space_fn, templates_for
from .tasks import KernelSpec, Task, extract_tasks, kernel_tasks, on_default

TRIALS_PER_KERNEL = 40  # default budget: per kernel with a traced design space
TRIALS_PER_ITER = 16  # candidates per MetaSchedule round of one task (XGBoost retrains after each)
POPULATION = 64  # evolutionary search population: small spaces; each member costs a feature extraction


@dataclass
class KernelResult:
    """Tuned vs default for one kernel (instructions per call, QEMU ``-icount shift=0``)."""

    name: str
    op: str
    calls: int
    macs: int
    spaces: list[str]
    inplace: str | None  # "aliased (order-preserving space)" etc. for in-place kernels
    default_instructions: int | None
    best_instructions: int | None
    best: str  # "default", or the template and its inner factors
    records: int
    failed: int
    errors: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        if not self.default_instructions or not self.best_instructions:
            return None
        return self.default_instructions / self.best_instructions

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "calls": self.calls, "macs": self.macs, "spaces": self.spaces,
                "inplace": self.inplace, "default_instructions": self.default_instructions,
                "best_instructions": self.best_instructions, "speedup": self.speedup, "best": self.best,
                "records": self.records, "failed": self.failed, "errors": self.errors}  # fmt: skip


@dataclass
class TuningReport:
    """What ``tvmq.tune`` did and found."""

    database: Path
    board: str
    core: str
    kernels: list[KernelResult]
    trials_run: int
    trials_budget: int
    seconds: float
    qemu_boots: int
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds: search, compile, run

    def total(self, which: str) -> int:
        """Instructions of all kernel calls of one inference (default or best schedules)."""
        out = 0
        for k in self.kernels:
            value = k.default_instructions if which == "default" else (k.best_instructions or k.default_instructions)
            out += k.calls * int(value or 0)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"database": str(self.database), "board": self.board, "core": self.core,
                "trials_run": self.trials_run, "trials_budget": self.trials_budget, "seconds": round(self.seconds, 1),
                "qemu_boots": self.qemu_boots, "phase_seconds": {k: round(v, 1) for k, v in self.phases.items()},
                "default_total": self.total("default"),
                "tuned_total": self.total("best"), "kernels": [k.to_json() for k in self.kernels],
                "note": "QEMU instructions per kernel call (-icount shift=0), each kernel measured alone"}  # fmt: skip

    def table(self) -> str:
        lines = [f"{'kernel':<22}{'op':<16}{'calls':>5}{'default':>12}{'tuned':>12}{'x':>7}  best",
                 "-" * 96]  # fmt: skip
        for k in self.kernels:
            d = f"{k.default_instructions:,}" if k.default_instructions else "-"
            b = f"{k.best_instructions:,}" if k.best_instructions else "-"
            x = f"{k.speedup:.2f}" if k.speedup else "-"
            lines.append(f"{k.name:<22}{k.op:<16}{k.calls:>5}{d:>12}{b:>12}{x:>7}  {k.best}")
        dt, tt = self.total("default"), self.total("best")
        x = f"{dt / tt:.2f}" if tt else "-"
        lines.append(f"{'all kernel calls':<43}{dt:>12,}{tt:>12,}{x:>7}")
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in self.phases.items())
        lines.append(f"{self.trials_run} trials this run ({self.trials_budget} budget), {self.qemu_boots} QEMU boots, "
                     f"{self.seconds:.0f} s ({phases}); QEMU instructions (-icount shift=0), not cycles")  # fmt: skip
        return "\n".join(lines)


def _check_trials(trials: Any) -> int | None:
    if trials is None:
        return None
    if isinstance(trials, bool) or not isinstance(trials, int) or trials <= 0:
        raise ConfigError(f"trials {trials!r} must be a positive integer (measured candidates in the database)")
    return trials


def _check_jobs(jobs: Any) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs <= 0:
        raise ConfigError(f"jobs {jobs!r} must be a positive integer (parallel compilers and QEMU processes)")
    return jobs


def tune(
    model: QuantizedModel | Mapping[str, KernelSpec],
    target: Any = "c -mcpu=cortex-m4",
    *,
    database: str | os.PathLike,
    board: str | Board = DEFAULT_BOARD,
    trials: int | None = None,
    progress: bool = True,
    jobs: int = 2,
    seed: int = 1,
    code_growth: float | None = CODE_GROWTH,
) -> TuningReport:
    """Tune every kernel of ``model`` for ``target`` on QEMU ``board`` and record everything in ``database``.

    ``model``: a ``QuantizedModel`` (its kernels, weighted by calls per inference, with the model's constants), or a
    mapping name -> PrimFunc or (PrimFunc, {parameter: constant}) for kernels alone (``tasks.kernel_tasks``).
    ``trials``: measured candidates the database should
    hold for these kernels (default: 40 per kernel with a tunable space); what is there already counts, so a
    re-run continues an interrupted one. ``jobs``: compiler and QEMU processes at a time. ``code_growth``: a
    candidate whose kernel has more than this times the default schedule's machine code (+ ``CODE_SLACK`` B) is refused
    (flash is scarce; None: no limit). Apply the result with ``tvmq.build(model, target, database=database)``.
    """
    micro = parse_target(target)
    if code_growth is not None and (isinstance(code_growth, bool) or not isinstance(code_growth, int | float)
                                    or not code_growth >= 1.0):  # fmt: skip
        raise ConfigError(f"code_growth {code_growth!r} must be a number >= 1 (tuned code / default code) or None")
    b = get_board(board)
    check_core(micro.core, b)
    trials = _check_trials(trials)
    jobs = _check_jobs(jobs)
    kernels = (
        isinstance(model, Mapping)
        and model
        and all(
            isinstance(f, tirx.PrimFunc) or (isinstance(f, tuple) and isinstance(f[0], tirx.PrimFunc))
            for f in model.values()
        )
    )
    if not isinstance(model, QuantizedModel) and not kernels:
        raise ConfigError(f"tvmq.tune takes a QuantizedModel or a non-empty mapping name -> PrimFunc, got "
                          f"{type(model).__name__}")  # fmt: skip
    directory = database_dir(database, create=True)
    check_toolchain()
    tasks = extract_tasks(model) if isinstance(model, QuantizedModel) else kernel_tasks(model)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tvmq-tune-"))
    try:
        return _tune(tasks, micro, b, directory, workdir, trials, progress, jobs, seed, started, code_growth)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class _TaskState:
    task: Task
    spaces: list[str]
    default_hash: str
    measured: set[str]  # candidate keys in the database
    default_instructions: int | None = None
    best_instructions: int | None = None
    best: str = "default"
    records: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def note(self, label: str, m: Measurement) -> None:
        self.records += 1
        if m.instructions is None:
            self.failed += 1
            if m.error and len(self.errors) < 3 and m.error not in self.errors:
                self.errors.append(m.error)
            return
        if self.best_instructions is None or m.instructions < self.best_instructions:
            self.best_instructions, self.best = m.instructions, label


def _tune(tasks: list[Task], micro: MicroTarget, b: Board, directory: Path, workdir: Path, trials: int | None,
          progress: bool, jobs: int, seed: int, started: float, code_growth: float | None) -> TuningReport:  # fmt: skip
    db = open_database(directory)
    default = default_schedule(micro)
    derived: dict[str, Task] = {}  # raw key -> the task on top of its default schedule (none if that is the PrimFunc)
    for t in tasks:
        scheduled = default(workload_mod(t.func)["main"])
        if not tvm_ffi.structural_equal(workload_mod(scheduled), workload_mod(t.func)):
            derived[t.key] = on_default(t, scheduled)
    measurer = Measurer([*tasks, *derived.values()], micro, b, workdir / "measure", jobs=jobs,
                        code_growth=code_growth)  # fmt: skip
    session = Session(measurer)
    try:
        states = [_state(db, t, micro) for t in tasks]
        _baseline(db, states, measurer, micro)
        extra = {k: _state(db, d, micro) for k, d in derived.items()}
        for s in states:
            if s.task.key in extra:
                extra[s.task.key].default_instructions = s.default_instructions  # the same kernel's baseline
        tunable = [s for s in [*states, *extra.values()] if s.spaces]
        kernels_tunable = sum(1 for s in states if s.spaces or (s.task.key in extra and extra[s.task.key].spaces))
        budget = trials if trials is not None else TRIALS_PER_KERNEL * max(1, kernels_tunable)
        done_before = sum(s.records for s in [*states, *extra.values()])
        remaining = max(0, budget - done_before)
        ran, search_seconds = 0, 0.0
        if remaining > 0 and tunable:
            everything = [*states, *extra.values()]
            ran, search_seconds = _search(db, tunable, everything, micro, session, workdir / "ms", remaining, progress,
                                          jobs, seed)  # fmt: skip
    finally:
        measurer.close()
    kernels = [_result(s, extra.get(s.task.key)) for s in states]
    phases = {"search": search_seconds, "compile": measurer.compile_seconds, "run": measurer.run_seconds}
    return TuningReport(directory, b.name, micro.core.name, kernels, ran, budget, time.monotonic() - started,
                        measurer.boots, phases)  # fmt: skip


def _state(db: ms.database.Database, task: Task, micro: MicroTarget) -> _TaskState:
    scheduled = task.base is not None
    info = kernel_records(db, task.func, micro, scheduled=scheduled)
    state = _TaskState(task, templates_for(task), "" if scheduled else default_hash(task, micro), info.measured)
    state.records, state.failed = len(info.measured), info.failed
    if info.default_seconds is not None:
        state.default_instructions = instructions(info.default_seconds)
    if info.valid:
        secs, record = info.valid[0]
        state.best_instructions, state.best = instructions(secs), describe(record.trace)
    return state


def describe(trace: s_tir.Trace) -> str:
    """A record's schedule in a few words: its template and the inner factors it sampled."""
    name = "?"
    inner = []
    for inst in trace.insts:
        if inst.kind.name == "Annotate" and str(inst.attrs[0]) == TEMPLATE:
            name = str(inst.inputs[1]).strip('"')
        if inst.kind.name == "SamplePerfectTile":
            decision = trace.decisions.get(inst)
            if decision is not None:
                inner.append(int(decision[-1]))
    return name if not inner else f"{name} inner={inner}"


def _baseline(db: ms.database.Database, states: list[_TaskState], measurer: Measurer, micro: MicroTarget) -> None:
    """Measure today's default schedule of every kernel the database has no measurement of."""
    todo = [s for s in states if s.default_instructions is None]
    if not todo:
        return
    items, schedules = [], []
    for s in todo:
        sch = s_tir.Schedule(workload_mod(s.task.func))
        mark_default(sch, s.task, s.default_hash)
        schedules.append(sch)
        items.append((s.task, realize(sch.mod, micro), None))
    results = measurer.measure(measurer.compile(items))
    for s, sch, m in zip(todo, schedules, results, strict=True):
        key = candidate_key(sch.mod)
        if key not in s.measured:
            _commit(db, s, sch.trace, sch.mod, m, micro)
        if m.instructions is None:
            warnings.warn(f"the default schedule of kernel {s.task.name} failed on QEMU: {m.error}", stacklevel=3)
        else:
            s.default_instructions = m.instructions


def _commit(db: ms.database.Database, s: _TaskState, trace: s_tir.Trace, mod: Any, m: Measurement,
            micro: MicroTarget) -> None:  # fmt: skip
    workload = db.commit_workload(workload_mod(s.task.func))
    secs = None if m.instructions is None else [m.instructions * 1e-9]
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    db.commit_tuning_record(ms.database.TuningRecord(trace, workload, secs, micro.tvm_target, args))
    s.measured.add(candidate_key(mod))
    s.note(describe(trace), m)


def _result(s: _TaskState, x: _TaskState | None) -> KernelResult:
    """One kernel's result from its two workloads (its PrimFunc ``s``; its default schedule ``x``, if different)."""
    t = s.task
    inplace = None
    if t.inplace is not None:
        inplace = "order-preserving space, run aliased" if t.order_sensitive else "run aliased"
    best_ins, best = s.best_instructions, s.best
    if x is not None and x.best_instructions is not None and (best_ins is None or x.best_instructions < best_ins):
        best_ins, best = x.best_instructions, x.best
    x_spaces, x_records, x_failed, x_errors = ([], 0, 0, []) if x is None else (x.spaces, x.records, x.failed, x.errors)
    return KernelResult(t.name, t.op, t.calls, t.macs, ["default", *s.spaces, *x_spaces], inplace,
                        s.default_instructions, best_ins, best if best_ins is not None else "-",
                        s.records + x_records, s.failed + x_failed, (s.errors + x_errors)[:3])  # fmt: skip


# -- MetaSchedule ------------------------------------------------------------------------------------------------
@dataclass
class _Search:
    """One task's MetaSchedule state: its tuning context (design space, evolutionary search) and progress."""

    state: _TaskState
    ctx: ms.TuneContext
    history: list[int] = field(default_factory=list)  # best instructions before the first round and after each
    done: bool = False

    def priority(self) -> tuple[int, float]:
        """Every task gets one round first (costliest first); then the expected gain of one more round
        (MetaSchedule's gradient idea): weight x the improvement per round over the last rounds, plus a little
        optimism in proportion to the task's share of the total, so large kernels keep being explored."""
        s = self.state
        best = s.best_instructions or s.default_instructions or 0
        if len(self.history) < 2:  # not tuned yet: the costliest kernels first (measured instructions, then MACs)
            return (1, s.task.weight * (s.default_instructions or 0) + s.task.macs * 1e-3)
        window = self.history[-4:]
        slope = (window[0] - window[-1]) / (len(window) - 1)
        return (0, s.task.weight * (slope + 0.05 * best))


@derived_object
class StoreFeatures(ms.feature_extractor.PyFeatureExtractor):
    """MetaSchedule's per-store features, with a zero row for a candidate that has no buffer store of its own (a
    kernel made only of micro-kernel calls): XGBoost's pack-sum input cannot take a batch where no candidate has a
    row (numpy fails to cast the empty id list), which stopped the search of fully tensorized kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ms.feature_extractor.PerStoreFeature()

    def extract_from(self, context: ms.TuneContext, candidates: list) -> list:
        out = []
        for feature in self.inner.extract_from(context, candidates):
            rows = feature.numpy()
            if rows.shape[0] == 0:
                rows = np.zeros((1, rows.shape[1] if rows.ndim == 2 else 1), dtype="float32")
            out.append(tvm.runtime.tensor(rows))
        return out


def _search(db: ms.database.Database, tunable: list[_TaskState], states: list[_TaskState], micro: MicroTarget,
            session: Session, work: Path, trials: int, progress: bool, jobs: int,
            seed: int) -> tuple[int, float]:  # fmt: skip
    """MetaSchedule's search, one round (``TRIALS_PER_ITER`` candidates of one task) at a time.

    The rounds are driven here rather than by MetaSchedule's ``TaskScheduler``: its task records estimate each
    workload's FLOPs (``EstimateTIRFlops``), which fails on the ``Let`` expressions of tvmq's requantization. The
    rest is MetaSchedule's: ``TuneContext`` with the ``ScheduleFn`` space, ``EvolutionarySearch``, the XGBoost cost
    model on per-store features (updated after every round), the builder and runner interfaces, the JSON database.
    The next task is the one with the largest expected gain (weight x recent improvement), each task first once.
    """
    work.mkdir(parents=True, exist_ok=True)
    names = [f"{i}_{s.task.name}" for i, s in enumerate(tunable)]
    loggers = [_file_logger(work, n) for n in names]
    cost_model = ms.cost_model.XGBModel(extractor=StoreFeatures(), num_warmup_samples=32, num_tuning_cores=jobs,
                                        adaptive_training=True)  # fmt: skip
    searches = []
    for i, (s, logger) in enumerate(zip(tunable, loggers, strict=True)):
        space = ms.space_generator.ScheduleFn(space_fn(s.task, s.default_hash, s.spaces), sch_rules=[], postprocs=[],
                                              mutator_probs={ms.mutator.MutateTileSize(): 1.0})  # fmt: skip
        strategy = ms.search_strategy.EvolutionarySearch(population_size=POPULATION, init_min_unmeasured=16,
                                                         genetic_num_iters=2)  # fmt: skip
        ctx = _tune_context(workload_mod(s.task.func), micro, space, strategy, names[i], jobs, seed + i, logger)
        ctx.pre_tuning(max_trials=1 << 30, num_trials_per_iter=TRIALS_PER_ITER,
                       design_spaces=ctx.generate_design_space(), database=db, cost_model=cost_model)  # fmt: skip
        searches.append(_Search(s, ctx, [s.best_instructions or s.default_instructions or 0]))
    builder, runner = QemuBuilder(session), QemuRunner(session)
    count, search_seconds = 0, 0.0
    with tqdm(total=trials, desc="tvmq tune", unit="trial", disable=not progress, dynamic_ncols=True) as bar:
        try:
            while count < trials:
                active = [x for x in searches if not x.done]
                if not active:
                    break
                search = max(active, key=lambda x: x.priority())
                tick = time.monotonic()
                cands = _fresh_candidates(search)
                search_seconds += time.monotonic() - tick
                if not cands:
                    search.done = True
                    continue
                cands = cands[: trials - count]
                results = _measure(builder, runner, session, cands, micro)
                tick = time.monotonic()
                search.ctx.notify_runner_results(cands, [m.runner_result() for m in results])
                cost_model.update(search.ctx, cands, [m.runner_result() for m in results])
                search_seconds += time.monotonic() - tick
                s = search.state
                for cand, m in zip(cands, results, strict=True):
                    _commit(db, s, cand.sch.trace, cand.sch.mod, m, micro)
                count += len(cands)
                search.history.append(s.best_instructions or s.default_instructions or 0)
                bar.update(len(cands))
                best, default = _totals(states)
                bar.set_postfix_str(f"best {best:,} instr (default {default:,})", refresh=False)
        finally:
            for search in searches:
                search.ctx.post_tuning()
            for logger in loggers:
                for handler in list(logger.handlers):
                    logger.removeHandler(handler)
                    handler.close()
    return count, search_seconds


def _file_logger(work: Path, name: str) -> logging.Logger:
    """A task's MetaSchedule log, a file in the work directory only (MetaSchedule's own logging set-up configures
    global handlers and fails when a process tunes twice)."""
    logger = logging.getLogger(f"tvmq.tuning.metaschedule.{id(work)}.{name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = logging.FileHandler(work / f"{name}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    return logger


def _tune_context(mod: tvm.IRModule, micro: MicroTarget, space: ms.SpaceGenerator, strategy: ms.SearchStrategy,
                  name: str, jobs: int, seed: int, logger: logging.Logger) -> ms.TuneContext:  # fmt: skip
    """``ms.TuneContext(...)`` minus its ``import tvm.s_tir.tensor_intrin``: that module parses TVM's whole CUDA,
    x86 and ARM intrinsic library as TVMScript (20-80 s, more than a whole small tuning run), and tvmq's spaces use
    only tvmq's own intrinsics. Same FFI constructor and initialisation as the Python one."""
    from tvm.s_tir.meta_schedule import _ffi_api

    ctx = ms.TuneContext.__new__(ms.TuneContext)
    ctx.__init_handle_by_constructor__(_ffi_api.TuneContext, mod, micro.tvm_target, space, strategy, name, jobs, seed,
                                       ms.logging.get_logging_func(logger))  # fmt: skip
    _ffi_api.TuneContextInitialize(ctx)
    return ctx


def _totals(states: list[_TaskState]) -> tuple[int, int]:
    """(best, default) instructions of all kernel calls, over both workloads of each kernel."""
    best: dict[str, int] = {}
    default: dict[str, int] = {}
    for t in states:
        kernel = t.task.base or t.task.key
        value = t.best_instructions or t.default_instructions or 0
        best[kernel] = min(best.get(kernel, value), value)
        default[kernel] = t.default_instructions or 0
    calls = {t.task.base or t.task.key: t.task.calls for t in states}
    return sum(calls[k] * v for k, v in best.items()), sum(calls[k] * v for k, v in default.items())


def _fresh_candidates(search: _Search, rounds: int = 4) -> list:
    """The search's next candidates that the database does not hold yet.

    MetaSchedule's evolutionary search remembers only what it measured in its own session and seeds its population
    with the database's best records, so on a resumed run it proposes them again: they are passed back to it as
    measured and new ones asked for, up to ``rounds`` times."""
    for _ in range(rounds):
        try:
            cands = search.ctx.generate_measure_candidates()
        except Exception as err:  # noqa: BLE001 - a space MetaSchedule cannot sample: stop this task, not the run
            warnings.warn(f"MetaSchedule stopped tuning kernel {search.state.task.name}: {err}", stacklevel=3)
            return []
        if cands is None:
            return []
        fresh = [c for c in cands if candidate_key(c.sch.mod) not in search.state.measured]
        if fresh:
            stale = [c for c in cands if candidate_key(c.sch.mod) in search.state.measured]
            if stale:
                search.ctx.notify_runner_results(stale, [ms.runner.RunnerResult(None, "measured before")] * len(stale))
            return fresh
        search.ctx.notify_runner_results(cands, [ms.runner.RunnerResult(None, "measured before")] * len(cands))
    return []


def _measure(builder: QemuBuilder, runner: QemuRunner, session: Session, cands: list,
             micro: MicroTarget) -> list[Measurement]:  # fmt: skip
    """Candidates through the MetaSchedule builder and runner interfaces; tvmq's measurement of each."""
    built = builder.build([ms.builder.BuilderInput(c.sch.mod, micro.tvm_target) for c in cands])
    ok = [(i, b) for i, b in enumerate(built) if b.artifact_path is not None]
    futures = runner.run([ms.runner.RunnerInput(str(b.artifact_path), "cpu", cands[i].args_info) for i, b in ok])
    out = [Measurement(None, str(b.error_msg or "build failed")) for b in built]
    for (i, b), future in zip(ok, futures, strict=True):
        future.result()
        out[i] = session.measured.pop(str(b.artifact_path))
    return out
