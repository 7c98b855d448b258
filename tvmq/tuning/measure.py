"""Measuring candidates on QEMU: each candidate compiled with arm-none-eabi-gcc, many per QEMU boot, outputs checked.

Why this shape:

- *One object per candidate*, compiled exactly as ``tvmq.build``'s ``model.c`` is (the core's flags, ``-O2``, the
  kernel a ``static TVMQ_KERNEL`` function of the same TU as the model's constants, called with constant addresses):
  gcc specialises a kernel to its constant arguments and folds small constant tables, so a kernel is timed as it
  will run in the model.
- *Many candidates per boot*: a boot costs more than most kernels (hundreds of ms against a few ms), so a batch is
  linked into at most ``jobs`` firmwares that run at the same time (both cores busy), each calling every candidate
  on every input set between two SysTick marks (``tvmq_systick.h``, the marks ``tvmq.qemu.run`` uses: exact to a few
  instructions under ``-icount shift=0``). A candidate that faults or hangs ends its boot: it is marked failed and
  the rest of the firmware runs again without it.
- *Every output checked*: each run's output bytes go back to the host and must equal the task's reference (the host
  LLVM build of the untuned PrimFunc). A candidate that changes any byte, or whose kernel writes outside its output,
  is a failed measurement, never a speed-up. In-place kernels run with the output over their input as on the device.
- *Flash counts too*: unrolling buys a few percent of instructions with several times the code (a tuned ResNet-8 went
  from 10 KB to 75 KB of kernel code for 0.7%). A candidate whose kernel code exceeds ``code_growth`` times the
  default schedule's code of the same kernel (plus ``CODE_SLACK`` bytes) is refused before it runs.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import tirx
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..codegen.emit import c_type
from ..codegen.kernels import RUNTIME_HEADER
from ..device.boards import FIRMWARE_DIR, Board
from ..device.build import COMMON_CFLAGS
from ..device.timing import parse_timing
from ..device.toolchain import GCC, NM, QEMU, find_tool, function_sizes
from ..errors import DeviceError, ToolchainError
from ..target import MicroTarget
from ._worker import WorkerPool
from .lower import TASK, StaleDefault, default_schedule, kernel_c, marks, realize
from .tasks import Task

OPT = "-O2"
STACK_BYTES = 4 * 1024  # tvmq.device's default stack: a tuned kernel must fit what the default build gives it
FLASH_BUDGET = 3 * 1024 * 1024  # bytes of candidate objects per firmware (the boards have 4 MiB)
POISON = 0xA5  # output bytes before each run: a kernel that skips an output byte leaves it, and is caught
KERNEL = "tvmq_kc"  # the candidate kernel's C symbol inside its object
CODE_GROWTH = 2.0  # default limit of a tuned kernel's code bytes, as a multiple of the default schedule's
CODE_SLACK = 512  # bytes a tuned kernel may always add to the default schedule's code

HARNESS = """\
/* tvmq tuning harness: calls every candidate on every input set between two SysTick marks. Generated. */
#include <stdint.h>
#include "tvmq_semihost.h"
#include "tvmq_startup.h"
#define TVMQ_MARK_CAPACITY 4u
#include "tvmq_systick.h"

typedef struct {{
    void (*prepare)(uint32_t set);
    void (*run)(void);
    const uint8_t *out;
    uint32_t out_bytes;
}} tvmq_cand_t;

{externs}
static const tvmq_cand_t *const tvmq_cands[] = {{{table}}};
#define TVMQ_N (sizeof(tvmq_cands) / sizeof(tvmq_cands[0]))
#define TVMQ_SETS {sets}u
#define TVMQ_PAINT 0xC0DEC0DEu

__attribute__((noinline)) static void tvmq_empty_run(void) {{ __asm__ volatile(""); }}
static const tvmq_cand_t tvmq_empty = {{0, tvmq_empty_run, 0, 0}};

static int tvmq_write_marks(int32_t fd) {{
    uint32_t head[2] = {{tvmq_marks_n, tvmq_marks_dropped}};
    if (tvmq_sh_write(fd, head, sizeof(head)) != 0) return -1;
    return tvmq_sh_write(fd, tvmq_marks, tvmq_marks_n * sizeof(tvmq_mark_t));
}}

static void tvmq_mark_pair(void (*f)(void)) {{
    tvmq_marks_n = 0;
    tvmq_marks_dropped = 0;
    tvmq_prof_mark(0xFFFF0001u);
    f();
    tvmq_prof_mark(0xFFFF0002u);
}}

__attribute__((noinline)) static void tvmq_paint(void) {{
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = __tvmq_stack_bottom__ + TVMQ_STACK_GUARD_BYTES / 4u; p < sp - 32; p++) *p = TVMQ_PAINT;
}}

static uint32_t tvmq_stack_used(void) {{
    const uint32_t *p = __tvmq_stack_bottom__ + TVMQ_STACK_GUARD_BYTES / 4u;
    while (p < __tvmq_stack_top__ && *p == TVMQ_PAINT) p++;
    return (uint32_t)((const char *)__tvmq_stack_top__ - (const char *)p);
}}

int main(void) {{
    int32_t fd_time = tvmq_sh_open("tvmq_timing.bin", TVMQ_OPEN_WB);
    int32_t fd_out = tvmq_sh_open("tvmq_out.bin", TVMQ_OPEN_WB);
    if (fd_time < 0 || fd_out < 0) {{
        tvmq_sh_puts("tvmq-error: cannot open the host files\\n");
        return 2;
    }}
    tvmq_systick_start();
    /* runs: the empty function first (the call's own cost), then each candidate on each set */
    uint32_t header[5] = {{0x544D5654u, 1u, 1u + TVMQ_N * TVMQ_SETS, 16u, 5000u}};
    tvmq_sh_write(fd_time, header, sizeof(header));
    for (uint32_t i = 0; i < 16u; i++) {{
        tvmq_marks_n = 0;
        tvmq_prof_mark(0xFFFF0003u);
        tvmq_prof_mark(0xFFFF0003u);
        tvmq_write_marks(fd_time);
    }}
    tvmq_marks_n = 0;
    tvmq_prof_mark(0xFFFF0003u);
    tvmq_spin_exact(5000u);
    tvmq_prof_mark(0xFFFF0003u);
    tvmq_write_marks(fd_time);
    tvmq_mark_pair(tvmq_empty.run);
    tvmq_write_marks(fd_time);
    for (uint32_t c = 0; c < TVMQ_N; c++) {{
        for (uint32_t s = 0; s < TVMQ_SETS; s++) {{
            tvmq_cands[c]->prepare(s);
            tvmq_paint();
            tvmq_mark_pair(tvmq_cands[c]->run);
            uint32_t used = tvmq_stack_used();
            if (tvmq_write_marks(fd_time) != 0 || tvmq_sh_write(fd_out, &used, 4u) != 0 ||
                tvmq_sh_write(fd_out, tvmq_cands[c]->out, tvmq_cands[c]->out_bytes) != 0) {{
                tvmq_sh_puts("tvmq-error: cannot write the results\\n");
                return 2;
            }}
            tvmq_sh_puts("tvmq-run\\n");
        }}
    }}
    uint32_t trailer[3] = {{0x444E4554u, 0u, 0u}};
    tvmq_sh_write(fd_time, trailer, sizeof(trailer));
    tvmq_sh_close(fd_time);
    tvmq_sh_close(fd_out);
    tvmq_sh_puts("tvmq-done\\n");
    return 0;
}}
"""


def _c_values(values: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1)
    if np.issubdtype(flat.dtype, np.floating):
        items = [f"{float(v)!r}f" if np.isfinite(v) else ("INFINITY" if v > 0 else "-INFINITY") for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    return ",\n  ".join(", ".join(items[i : i + 24]) for i in range(0, len(items), 24))


ID = "@ID@"  # placeholder of the candidate's number in a task frame


@dataclass
class TaskFrame:
    """The C around a task's kernel: its constants, input sets, RAM buffers and the call, with ``ID`` to fill."""

    text: str
    out_bytes: int
    const_bytes: int


def task_frame(task: Task) -> TaskFrame:
    """C text (after the kernel) defining ``tvmq_c<ID>``: constants as the model stores them (``TVMQ_WEIGHTS``),
    input sets in flash, activations and output in aligned RAM, aliased as on the device for in-place kernels."""
    params = list(task.func.params)
    lines: list[str] = []
    const_bytes = 0
    pointers: list[str] = []
    prepare: list[str] = []
    region: dict[int, int] = {}  # activation param index -> byte offset in the aliasing region
    out_bytes = task.out_bytes()
    region_bytes = 0
    if task.inplace is not None:  # as the planner places them: the output starts ``shift`` bytes before the input
        src, shift = task.inplace.index, task.inplace.shift
        in_off, out_off = (shift, 0) if shift >= 0 else (0, -shift)
        region = {src: in_off, len(params) - 1: out_off}
        region_bytes = max(in_off + task.inputs[0][src].nbytes, out_off + out_bytes)
        lines.append(f"static uint8_t tvmq_region[{region_bytes}] TVMQ_ALIGNED(16);")
    for k, p in enumerate(params[:-1]):
        ctype = c_type(str(p.dtype))
        values = task.inputs[0][k]
        if task.constant[k]:
            lines.append(f"static const {ctype} tvmq_p{k}[{values.size}] TVMQ_WEIGHTS = {{\n  {_c_values(values)}\n}};")
            pointers.append(f"({ctype} *)tvmq_p{k}")
            const_bytes += values.nbytes
            continue
        for s, arrays in enumerate(task.inputs):
            lines.append(f"static const {ctype} tvmq_i{k}_s{s}[{values.size}] = {{\n  {_c_values(arrays[k])}\n}};")
        if k in region:
            dest = f"(tvmq_region + {region[k]})"
            pointers.append(f"({ctype} *){dest}")
        else:
            lines.append(f"static {ctype} tvmq_b{k}[{values.size}] TVMQ_ALIGNED(16);")
            dest = f"tvmq_b{k}"
            pointers.append(dest)
        sets = ", ".join(f"tvmq_i{k}_s{s}" for s in range(len(task.inputs)))
        lines.append(f"static const {ctype} *const tvmq_i{k}[] = {{{sets}}};")
        prepare.append(f"  memcpy({dest}, tvmq_i{k}[set], {values.nbytes});")
    out = params[-1]
    out_ctype = c_type(str(out.dtype))
    if len(params) - 1 in region:
        out_ptr = f"(tvmq_region + {region[len(params) - 1]})"
        prepare.insert(0, f"  memset(tvmq_region, {POISON}, {region_bytes});")
    else:
        count = out_bytes // np.dtype(str(out.dtype)).itemsize
        lines.append(f"static {out_ctype} tvmq_out[{count}] TVMQ_ALIGNED(16);")
        out_ptr = "tvmq_out"
        prepare.insert(0, f"  memset(tvmq_out, {POISON}, {out_bytes});")
    pointers.append(f"({out_ctype} *){out_ptr}")
    lines += [
        f"void tvmq_c{ID}_prepare(uint32_t set) {{",
        *prepare,
        "}",
        f"__attribute__((noinline)) void tvmq_c{ID}_run(void) {{ {KERNEL}({', '.join(pointers)}); }}",
        "typedef struct { void (*prepare)(uint32_t); void (*run)(void); const uint8_t *out; uint32_t out_bytes; } "
        "tvmq_cand_t;",
        f"const tvmq_cand_t tvmq_c{ID} = {{tvmq_c{ID}_prepare, tvmq_c{ID}_run, (const uint8_t *){out_ptr}, "
        f"{out_bytes}u}};",
    ]
    return TaskFrame("\n".join(lines) + "\n", out_bytes, const_bytes)


@dataclass
class Measurement:
    """The outcome of one candidate: instructions per call (``None`` when it failed) or why it failed."""

    instructions: int | None
    error: str | None = None
    stack_bytes: int | None = None
    code_key: str | None = None

    def runner_result(self) -> ms.runner.RunnerResult:
        if self.instructions is None:
            return ms.runner.RunnerResult(None, self.error or "failed")
        # with -icount shift=0 one instruction is one nanosecond of QEMU's virtual time: MetaSchedule's seconds
        return ms.runner.RunnerResult([self.instructions * 1e-9], None)


@dataclass
class Candidate:
    """A compiled candidate, waiting to run."""

    cid: int
    task: Task
    obj: Path | None
    code_key: str  # hash of its C text: candidates with the same code are measured once
    flash_bytes: int
    error: str | None = None
    code_bytes: int = 0  # the kernel function's machine code


@dataclass
class Toolchain:
    gcc: str
    qemu: str
    nm: str


def toolchain() -> Toolchain:
    return Toolchain(find_tool(GCC), find_tool(QEMU), find_tool(NM))


class Measurer:
    """Compiles candidates (one object each) and measures batches of them on QEMU, ``jobs`` boots at a time.

    All files live in ``workdir`` (a private temporary directory of the tuning session): one fresh sub-directory
    per candidate and per boot.
    """

    def __init__(self, tasks: Sequence[Task], micro: MicroTarget, board: Board, workdir: Path, *, jobs: int = 2,
                 code_growth: float | None = CODE_GROWTH):  # fmt: skip
        self.tasks = {t.key: t for t in tasks}
        self.code_growth = code_growth
        self.code_limits: dict[str, int] = {}  # task key -> code bytes a candidate may have
        self.micro, self.board, self.workdir, self.jobs = micro, board, Path(workdir), max(1, int(jobs))
        self.tools = toolchain()
        self.frames = {t.key: task_frame(t) for t in tasks}
        self.ids = itertools.count()
        self.cache: dict[tuple[str, str], Measurement] = {}  # (task key, code key) -> result, this session
        self.lock = threading.Lock()
        (self.workdir / "include").mkdir(parents=True, exist_ok=True)
        (self.workdir / "include" / "tvmq_runtime.h").write_text(RUNTIME_HEADER)
        self.boots = 0
        self.qemu_seconds = 0.0  # summed over the parallel boots
        self.compile_seconds = 0.0  # wall time lowering and compiling
        self.run_seconds = 0.0  # wall time linking and running batches
        self.pool: WorkerPool | None = None

    # -- compile -----------------------------------------------------------------------------------------------
    def _pool(self) -> WorkerPool:
        if self.pool is None:
            self.pool = WorkerPool(self.jobs)
        return self.pool

    def close(self) -> None:
        """Stop the compile workers."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def compile(self, items: Sequence[tuple[Task, tirx.PrimFunc | None, str | None]]) -> list[Candidate]:
        """Lower each (task, scheduled PrimFunc) to C and compile it, ``jobs`` worker processes at a time (TVM's
        lowering of an unrolled kernel takes about a second: the slowest part of a trial).

        An item whose PrimFunc is None failed earlier (its error is given) and stays failed."""
        started = time.monotonic()
        try:
            return self._compile(items)
        finally:
            self.compile_seconds += time.monotonic() - started

    def _compile(self, items: Sequence[tuple[Task, tirx.PrimFunc | None, str | None]]) -> list[Candidate]:
        out: list[Candidate] = []
        jobs: list[tuple[Candidate, tuple]] = []
        for task, func, error in items:
            cid = next(self.ids)
            if func is None:
                out.append(Candidate(cid, task, None, "", 0, error))
                continue
            directory = Path(tempfile.mkdtemp(prefix=f"cand{cid}-", dir=self.workdir))
            cand = Candidate(cid, task, directory / "cand.o", "", self.frames[task.key].const_bytes)
            out.append(cand)
            head = f"/* tvmq tuning candidate {cid} of task {task.name} ({task.key}). Generated. */\n"
            frame = self.frames[task.key].text.replace(ID, str(cid))
            jobs.append((cand, self._compile_args(func, head, frame, cid, directory)))
        if len(jobs) == 1:
            done = [compile_candidate(*jobs[0][1])]
        else:
            done = self._pool().map("compile_candidate", [args for _, args in jobs])
        for (cand, _), (key, size, code, error) in zip(jobs, done, strict=True):
            cand.code_key, cand.flash_bytes, cand.code_bytes = key, cand.flash_bytes + size, code
            if error is None:
                error = self._code_error(cand)
            if error is not None:
                cand.error, cand.obj = error, None
        return out

    def _compile_args(self, func: tirx.PrimFunc, head: str, frame: str, cid: int, directory: Path) -> tuple:
        cflags = [*self.micro.core.cflags, OPT, *COMMON_CFLAGS, f"-I{self.workdir / 'include'}"]
        return (tvm.ir.save_json(func), self.micro.core.name, head, frame, cid, self.tools.gcc, self.tools.nm, cflags,
                str(directory))  # fmt: skip

    def code_limit(self, task: Task) -> int | None:
        """Code bytes a candidate of ``task`` may have: ``code_growth`` x its default schedule's + CODE_SLACK
        (None: no limit). The default schedule's code is compiled once per session."""
        if self.code_growth is None:
            return None
        if task.key not in self.code_limits:
            func = task.func if task.base is not None else default_schedule(self.micro)(task.func)
            directory = Path(tempfile.mkdtemp(prefix="default-", dir=self.workdir))
            frame = self.frames[task.key].text.replace(ID, "0")
            _, _, code, error = compile_candidate(*self._compile_args(func, "", frame, 0, directory))
            if error is not None:
                raise ToolchainError(f"compiling the default schedule of kernel {task.name} failed: {error}")
            self.code_limits[task.key] = max(int(self.code_growth * code), code + CODE_SLACK)
        return self.code_limits[task.key]

    def _code_error(self, cand: Candidate) -> str | None:
        limit = self.code_limit(cand.task)
        if limit is None or cand.code_bytes <= limit:
            return None
        return (f"{cand.code_bytes} B of code, over the limit of {limit} B ({self.code_growth:g} x the default "
                f"schedule's + {CODE_SLACK} B; tvmq.tune(code_growth=...))")  # fmt: skip

    # -- run ---------------------------------------------------------------------------------------------------
    def measure(self, cands: Sequence[Candidate]) -> list[Measurement]:
        """Run every compiled candidate (cached code runs once), ``jobs`` boots at a time; check every output."""
        started = time.monotonic()
        try:
            return self._measure(cands)
        finally:
            self.run_seconds += time.monotonic() - started

    def _measure(self, cands: Sequence[Candidate]) -> list[Measurement]:
        results: dict[int, Measurement] = {}
        todo: list[Candidate] = []
        first_of: dict[tuple[str, str], int] = {}
        for c in cands:
            if c.obj is None:
                results[c.cid] = Measurement(None, c.error)
                continue
            key = (c.task.key, c.code_key)
            if key in self.cache:
                results[c.cid] = self.cache[key]
            elif key in first_of:
                continue  # same code as an earlier candidate of this batch: filled in below
            else:
                first_of[key] = c.cid
                todo.append(c)
        groups = self._groups(todo)
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for measured in pool.map(self._run_group, groups):
                results.update(measured)
        for c in todo:
            self.cache[(c.task.key, c.code_key)] = results[c.cid]
        return [results.get(c.cid) or self.cache[(c.task.key, c.code_key)] for c in cands]

    def _groups(self, todo: list[Candidate]) -> list[list[Candidate]]:
        """At most ``jobs`` groups of about equal count (more when the flash budget requires)."""
        if not todo:
            return []
        per = -(-len(todo) // min(self.jobs, len(todo)))
        groups: list[list[Candidate]] = []
        current: list[Candidate] = []
        size = 0
        for c in todo:
            if current and (len(current) >= per or size + c.flash_bytes > FLASH_BUDGET):
                groups.append(current)
                current, size = [], 0
            current.append(c)
            size += c.flash_bytes
        groups.append(current)
        return groups

    def _run_group(self, group: list[Candidate]) -> dict[int, Measurement]:
        """Boot until every candidate of the group is measured or failed: a fault or hang fails the candidate
        that was running and the remaining ones boot again."""
        out: dict[int, Measurement] = {}
        remaining = list(group)
        while remaining:
            done, failed = self._boot(remaining)
            out.update(done)
            measured = [c for c in remaining if c.cid in done]
            rest = remaining[len(measured) :]
            if failed is None or not rest:
                for c in rest:
                    out.setdefault(c.cid, Measurement(None, "the firmware stopped before this candidate ran"))
                break
            out[rest[0].cid] = Measurement(None, failed)
            remaining = rest[1:]
        return out

    def _boot(self, cands: list[Candidate]) -> tuple[dict[int, Measurement], str | None]:
        """Link and run one firmware; results of the candidates that finished, and the error that stopped it."""
        with self.lock:
            self.boots += 1
        directory = Path(tempfile.mkdtemp(prefix="boot-", dir=self.workdir))
        try:
            elf = self._link(cands, directory)
        except ToolchainError as err:
            return {}, f"link failed: {_first_line(err)}"
        sets = len(cands[0].task.inputs)
        timeout = 20.0 + sum(self._expected_seconds(c) for c in cands) * sets
        start = time.monotonic()
        status, lines = self._qemu(elf, directory, timeout)
        with self.lock:
            self.qemu_seconds += time.monotonic() - start
        runs = sum(1 for line in lines if line == "tvmq-run")
        complete = status == 0 and "tvmq-done" in lines
        finished = len(cands) if complete else runs // sets
        results = self._parse(cands[:finished], directory, sets, complete)
        shutil.rmtree(directory, ignore_errors=True)
        if complete:
            return results, None
        tail = " | ".join(line for line in lines[-4:] if line != "tvmq-run")
        why = "hung (no result in time)" if status is None else f"crashed the firmware ({tail or f'status {status}'})"
        return results, f"the candidate {why}"

    def _expected_seconds(self, c: Candidate) -> float:
        return max(c.task.macs, 1000) * 60 / 20e6  # 60 instructions per MAC at 20 MIPS: only a real hang is slower

    def _link(self, cands: list[Candidate], directory: Path) -> Path:
        externs = "\n".join(f"extern const tvmq_cand_t tvmq_c{c.cid};" for c in cands)
        table = ", ".join(f"&tvmq_c{c.cid}" for c in cands)
        sets = len(cands[0].task.inputs)
        (directory / "harness.c").write_text(HARNESS.format(externs=externs, table=table, sets=sets))
        cflags = [*self.micro.core.cflags, OPT, *COMMON_CFLAGS]
        inc = [f"-I{FIRMWARE_DIR}", f"-I{self.workdir / 'include'}"]
        from ..device.toolchain import run_tool

        for src in (directory / "harness.c", FIRMWARE_DIR / "startup.c"):
            run_tool([self.tools.gcc, *cflags, *inc, "-c", src, "-o", directory / (src.stem + ".o")],
                     what=f"compiling the tuning harness {src.name}")  # fmt: skip
        elf = directory / "tune.elf"
        run_tool([self.tools.gcc, *cflags, "--specs=rdimon.specs", "-nostartfiles", f"-L{FIRMWARE_DIR}",
                  "-T", self.board.linker_script, "-Wl,--gc-sections", f"-Wl,--defsym=__tvmq_stack_size={STACK_BYTES}",
                  directory / "startup.o", directory / "harness.o", *(c.obj for c in cands), "-lm", "-o", elf],
                 what="linking the tuning firmware")  # fmt: skip
        return elf

    def _qemu(self, elf: Path, directory: Path, timeout: float) -> tuple[int | None, list[str]]:
        cmd = [self.tools.qemu, "-M", self.board.machine, "-nographic", "-semihosting-config",
               "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]  # fmt: skip
        try:
            proc = subprocess.run(cmd, cwd=directory, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                                  check=False)  # fmt: skip
        except subprocess.TimeoutExpired as err:
            text = (err.stdout or b"").decode(errors="replace")
            return None, [line.strip() for line in text.splitlines() if line.strip()]
        except OSError as err:
            raise DeviceError(f"{self.tools.qemu} could not be started for board {self.board.name}: {err}") from None
        text = (proc.stdout or b"").decode(errors="replace") + (proc.stderr or b"").decode(errors="replace")
        return proc.returncode, [line.strip() for line in text.splitlines() if line.strip()]

    def _parse(self, cands: list[Candidate], directory: Path, sets: int, complete: bool) -> dict[int, Measurement]:
        if not cands:
            return {}
        timing_bytes = (directory / "tvmq_timing.bin").read_bytes()
        out_bytes = (directory / "tvmq_out.bin").read_bytes()
        runs = 1 + len(cands) * sets
        if not complete:  # cut the timing file after the last finished run and close it as the harness would
            timing_bytes = _truncate_timing(timing_bytes, runs)
        timing = parse_timing(timing_bytes, runs, 0, self.board.instructions_per_tick, "tvmq_timing.bin",
                              self.board.name)  # fmt: skip
        empty = int(timing.per_sample[0])
        results: dict[int, Measurement] = {}
        pos = 0
        for i, c in enumerate(cands):
            instructions, stack, error = [], 0, None
            for s in range(sets):
                used = int(np.frombuffer(out_bytes[pos : pos + 4], dtype="<u4")[0])
                pos += 4
                n = c.task.out_bytes()
                got = np.frombuffer(out_bytes[pos : pos + n], dtype=c.task.reference[s].dtype)
                pos += n
                stack = max(stack, used)
                instructions.append(int(timing.per_sample[1 + i * sets + s]) - empty)
                if error is None:
                    error = _compare(got, c.task.reference[s], s)
            if error is not None:
                results[c.cid] = Measurement(None, error, stack, c.code_key)
            else:
                results[c.cid] = Measurement(instructions[0], None, stack, c.code_key)
        return results


def compile_candidate(func_json: str, core: str, head: str, frame: str, cid: int, gcc: str, nm: str,
                      cflags: list[str], directory: str) -> tuple[str, int, int, str | None]:  # fmt: skip
    """In a worker: scheduled PrimFunc (JSON) -> ``cand.c`` -> ``cand.o``; (code key, C bytes, kernel code bytes,
    error or None)."""
    from ..target import CORES, MicroTarget

    try:
        func = tvm.ir.load_json(func_json)
        kernel = kernel_c(func, MicroTarget(CORES[core]), KERNEL)
    except Exception as err:  # noqa: BLE001 - a candidate TVM cannot lower is a failed candidate, not a crash
        return "", 0, 0, f"lowering to C failed: {_first_line(err)}"
    text = head + '#include <string.h>\n#include "tvmq_runtime.h"\n\n' + kernel + "\n" + frame
    key = hashlib.sha1(kernel.encode()).hexdigest()[:16]
    src, obj = Path(directory) / "cand.c", Path(directory) / "cand.o"
    src.write_text(text)
    proc = subprocess.run([gcc, *cflags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if proc.returncode != 0:
        return key, len(text), 0, f"gcc failed: {' '.join(proc.stderr.strip().splitlines()[:3])}"
    return key, len(text), kernel_code_bytes(nm, obj), None


def kernel_code_bytes(nm: str, obj: Path) -> int:
    """Machine-code bytes of the candidate kernel in ``obj`` (its function and any gcc clone of it)."""
    sizes = function_sizes(obj, nm)
    return sum(n for name, n in sizes.items() if name == KERNEL or name.startswith(KERNEL + "."))


def _truncate_timing(data: bytes, runs: int) -> bytes:
    """The timing records of a boot that stopped early, with the run count and trailer of the finished runs."""
    words = np.frombuffer(data, dtype="<u4").copy()
    pos = 5
    for _ in range(16 + 1 + runs):  # calibration, known loop, runs
        count = int(words[pos])
        pos += 2 + 4 * count
    words[2] = runs
    return words[:pos].tobytes() + np.array([0x444E4554, 0, 0], dtype="<u4").tobytes()


def _compare(got: np.ndarray, want: np.ndarray, s: int) -> str | None:
    want = want.reshape(-1)
    if got.shape != want.shape:
        return f"the output has {got.size} values, expected {want.size}"
    diff = np.flatnonzero(got != want)
    if diff.size == 0:
        return None
    i = int(diff[0])
    return (f"wrong result: {diff.size} of {want.size} output values differ from the reference on input set {s} "
            f"(first at {i}: {got[i]} instead of {want[i]})")  # fmt: skip


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# -- MetaSchedule adapters ---------------------------------------------------------------------------------------
@dataclass
class Session:
    """State shared by the builder, the runner and the callbacks of one tuning run."""

    measurer: Measurer
    built: dict[str, Candidate] = field(default_factory=dict)  # artifact path -> candidate
    measured: dict[str, Measurement] = field(default_factory=dict)  # artifact path -> result


@derived_object
class QemuBuilder(ms.builder.PyBuilder):
    """MetaSchedule builder: candidate module -> scheduled PrimFunc (``realize``) -> C (``emit_kernels``) -> object.

    The artifact path is ``<fresh private directory>/cand.o`` inside the session's temporary directory (MetaSchedule
    may remove an artifact's parent directory)."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        m = self.session.measurer
        items: list[tuple[Task, tirx.PrimFunc | None, str | None]] = []
        for inp in build_inputs:
            key = marks(inp.mod).get(TASK)
            task = m.tasks.get(key) if key is not None else None
            if task is None:
                items.append((next(iter(m.tasks.values())), None, "the candidate names no task of this session"))
                continue
            try:
                items.append((task, realize(inp.mod, m.micro), None))
            except StaleDefault as err:
                items.append((task, None, str(err)))
        results = []
        for cand in m.compile(items):
            if cand.obj is None:
                results.append(ms.builder.BuilderResult(None, cand.error))
                continue
            self.session.built[str(cand.obj)] = cand
            results.append(ms.builder.BuilderResult(str(cand.obj), None))
        return results


@derived_object
class _Done(ms.runner.PyRunnerFuture):
    def __init__(self, result: ms.runner.RunnerResult) -> None:
        super().__init__()
        self._result = result

    def done(self) -> bool:
        return True

    def result(self) -> ms.runner.RunnerResult:
        return self._result


@derived_object
class QemuRunner(ms.runner.PyRunner):
    """MetaSchedule runner: the batch's objects run on QEMU (``Measurer.measure``); run_secs = instructions * 1 ns."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def run(self, runner_inputs: list[ms.runner.RunnerInput]) -> list[ms.runner.RunnerFuture]:
        s = self.session
        cands = [s.built[str(inp.artifact_path)] for inp in runner_inputs]
        results = s.measurer.measure(cands)
        for inp, r in zip(runner_inputs, results, strict=True):
            s.measured[str(inp.artifact_path)] = r
            cand = s.built.pop(str(inp.artifact_path))
            if cand.obj is not None:
                shutil.rmtree(cand.obj.parent, ignore_errors=True)
        return [_Done(r.runner_result()) for r in results]
