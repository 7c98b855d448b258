"""Run an exported model on an emulated Cortex-M board (QEMU) and bring back outputs, instruction counts and memory.

Why QEMU with ``-icount shift=0``: every instruction then takes 1 ns of virtual time, so SysTick counts
instructions deterministically (the same number on every run). QEMU does not model pipelines, caches or wait
states: the counts are instructions, not cycles. All samples run in one boot; the firmware reads and writes host
files through semihosting in a private temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationDataError, ConfigError, DeviceError, ToolchainError
from .artifact import ArtifactInfo, load_artifact
from .boards import DEFAULT_BOARD, Board, check_core, get_board
from .build import DEFAULT_STACK_BYTES, build_firmware, check_opt, check_stack_bytes
from .launch import format_tail, launch
from .memory import MemoryReport, memory_report
from .timing import Timing, parse_timing
from .toolchain import QEMU, check_toolchain

NOTE = ("QEMU counts instructions, not cycles: with -icount shift=0 each instruction is 1 ns of virtual time and "
        "SysTick ticks are converted to instructions; pipeline stalls, memory wait states and caches are not "
        "modelled, so real cycle counts differ by core and memory system.")  # fmt: skip
JOB_MAGIC, JOB_VERSION = 0x4A4D5654, 1


@dataclass
class DeviceResult:
    """What one batch on the device produced; ``raw_outputs`` compares with the host's ``run_int``."""

    raw_outputs: np.ndarray  # int8, (N, *output_shape[1:])
    outputs: np.ndarray  # float32 from the device's own dequantize_output
    instructions: int  # per inference (the run call), median over samples
    instructions_per_sample: np.ndarray  # int64, (N,)
    steps: list[dict[str, Any]]  # name, op, macs, instructions (median), instructions_per_mac
    board: str
    core: str
    opt: str
    memory: MemoryReport
    stack_peak_bytes: int  # deepest stack use seen on the device (harness + model)
    elf_path: Path | None  # only kept when run(..., work_dir=...) was given
    note: str = field(default=NOTE)

    def to_json(self) -> dict[str, Any]:
        return {"board": self.board, "core": self.core, "opt": self.opt, "samples": len(self.raw_outputs),
                "instructions": self.instructions, "steps": self.steps, "memory": self.memory.to_json(),
                "stack_peak_bytes": self.stack_peak_bytes, "note": self.note}  # fmt: skip

    def table(self) -> str:
        """Per-step instructions as a human table."""
        lines = [f"{self.board} ({self.core}, {self.opt}): {self.instructions:,} instructions per inference",
                 f"{'step':<24}{'op':<14}{'MACs':>12}{'instructions':>14}{'instr/MAC':>11}"]  # fmt: skip
        for s in self.steps:
            ipm = f"{s['instructions_per_mac']:.2f}" if s["instructions_per_mac"] is not None else "-"
            ins = f"{s['instructions']:,}" if s["instructions"] is not None else "-"
            lines.append(f"{s['name']:<24}{str(s['op']):<14}{s['macs']:>12,}{ins:>14}{ipm:>11}")
        return "\n".join([*lines, f"({self.note.split(':')[0]})"])


def default_timeout(info: ArtifactInfo, samples: int) -> float:
    """Wall-clock seconds for QEMU: generous (30 instructions per MAC at 100 MIPS) so only a real hang hits it."""
    macs = sum(int(s.get("macs") or 0) for s in info.steps)
    return 30.0 + samples * (0.02 + macs * 30 / 100e6)


def run(
    artifact: Any,
    inputs: np.ndarray,
    board: str | Board = DEFAULT_BOARD,
    opt: str = "-O2",
    timeout: float | None = None,
    progress: bool = True,
    *,
    stack_bytes: int = DEFAULT_STACK_BYTES,
    work_dir: str | Path | None = None,
    extra_objects: Sequence[str | Path] = (),
) -> DeviceResult:
    """Build ``artifact`` for ``board`` and run every sample of ``inputs`` in one QEMU boot.

    ``artifact`` is a ``tvmq.codegen.Artifact`` (exported into a private temporary directory) or the path of an
    exported directory. ``inputs`` are int8 codes (given to ``run`` as they are) or floats (quantized on the device
    by the model's ``quantize_input``), shaped ``(N, *input_shape[1:])`` or one sample. ``timeout`` limits QEMU's
    wall-clock time in seconds (default scales with N and the model's MACs). ``work_dir`` keeps the build and run
    files there (``elf_path`` is then set); by default they are removed. ``extra_objects`` (objects or static
    libraries built by the caller for the same core) are linked into the firmware after the model.
    """
    b = get_board(board)
    check_opt(opt)
    check_stack_bytes(stack_bytes)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"timeout {timeout!r} must be a positive number of seconds (or None for the default)")
    tools = check_toolchain()
    with _workspace(work_dir) as ws:
        info = load_artifact(_materialize(artifact, ws / "artifact"))
        check_core(info.core, b)
        batch, float_inputs = _input_batch(inputs, info.input.shape)
        try:
            elf = build_firmware(
                info.directory, b, opt, ws / "build", stack_bytes=stack_bytes, extra_objects=extra_objects
            )
        except ToolchainError as err:
            if work_dir is None and not isinstance(artifact, (str, os.PathLike)) and "model.c" in str(err):
                raise ToolchainError(f"{err}\n(model {info.name!r} was exported to a temporary directory that is "
                                     f"now removed; pass work_dir= to keep its sources)") from None  # fmt: skip
            raise
        memory = memory_report(elf, board=b)
        run_dir = ws / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        n = len(batch)
        _write_job(run_dir, batch, float_inputs)
        limit = float(timeout) if timeout is not None else default_timeout(info, n)
        tail = launch(tools[QEMU], elf, b, run_dir, n, limit, progress, stack_bytes)
        raw, floats, timing = _read_results(run_dir, info, n, b, tail)
        return DeviceResult(
            raw_outputs=raw, outputs=floats, instructions=int(np.median(timing.per_sample)),
            instructions_per_sample=timing.per_sample, steps=_step_rows(info, timing), board=b.name,
            core=info.core.name, opt=opt, memory=memory, stack_peak_bytes=timing.stack_peak_bytes,
            elf_path=elf if work_dir is not None else None,
        )  # fmt: skip


@contextlib.contextmanager
def _workspace(work_dir: str | Path | None) -> Iterator[Path]:
    if work_dir is not None:
        path = Path(work_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"work_dir {str(path)!r} cannot be created: {err}") from None
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="tvmq-device-") as tmp:
        yield Path(tmp)


def _materialize(artifact: Any, dest: Path) -> Path:
    """The directory of an exported artifact: a path as given, or an Artifact exported into ``dest``."""
    if isinstance(artifact, (str, os.PathLike)):
        return Path(artifact)
    if not callable(getattr(artifact, "export", None)):
        raise ConfigError(f"artifact must be a tvmq.codegen.Artifact or the path of an exported artifact directory, "
                          f"got {type(artifact).__name__}")  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    returned = artifact.export(dest)
    if returned is not None and (Path(returned) / "metadata.json").is_file():
        return Path(returned)
    if not (dest / "metadata.json").is_file():
        subdirs = [d for d in dest.iterdir() if (d / "metadata.json").is_file()]
        if len(subdirs) == 1:
            return subdirs[0]
    return dest


def _input_batch(inputs: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
    """(N, *shape[1:]) int8 codes or float32 values, and whether they are floats; house wording of errors."""
    x = np.asarray(inputs)
    if x.dtype == np.int8:
        is_float = False
    elif np.issubdtype(x.dtype, np.floating):
        x, is_float = x.astype(np.float32), True
    else:
        raise CalibrationDataError(f"inputs must be int8 codes (run as they are) or float32 values (quantized on "
                                   f"the device by quantize_input), got dtype {x.dtype}")  # fmt: skip
    sample = shape[1:]
    if x.shape == sample:
        x = x[None]
    if x.ndim != len(sample) + 1 or x.shape[1:] != sample:
        raise CalibrationDataError(f"inputs have shape {x.shape}; expected (N, {', '.join(map(str, sample))}) "
                                   f"or one sample of shape {sample}")  # fmt: skip
    if len(x) == 0:
        raise CalibrationDataError("inputs hold no samples; pass at least one")
    if is_float and not np.all(np.isfinite(x)):
        raise CalibrationDataError("inputs contain NaN or Inf; the device cannot quantize them")
    return np.ascontiguousarray(x), is_float


def _write_job(run_dir: Path, batch: np.ndarray, float_inputs: bool) -> None:
    job = np.array([JOB_MAGIC, JOB_VERSION, len(batch), int(float_inputs)], dtype="<u4")
    (run_dir / "tvmq_job.bin").write_bytes(job.tobytes())
    data = batch.astype("<f4") if float_inputs else batch.astype(np.int8)
    (run_dir / "tvmq_in.bin").write_bytes(data.tobytes())


def _read_results(run_dir: Path, info: ArtifactInfo, n: int, b: Board,
                  tail: list[str]) -> tuple[np.ndarray, np.ndarray, Timing]:  # fmt: skip
    files = {}
    for name in ("tvmq_out_raw.bin", "tvmq_out_float.bin", "tvmq_timing.bin"):
        path = run_dir / name
        if not path.is_file():
            raise DeviceError(f"the firmware on {b.name} finished but wrote no {name}; the semihosting file "
                              f"I/O failed (QEMU needs -semihosting-config enable=on,target=native); QEMU's last "
                              f"output:\n{format_tail(tail)}")  # fmt: skip
        files[name] = path.read_bytes()
    out_shape = (n, *info.output.shape[1:])
    raw = _exact(files["tvmq_out_raw.bin"], np.int8, out_shape, "tvmq_out_raw.bin", b)
    floats = _exact(files["tvmq_out_float.bin"], np.dtype("<f4"), out_shape, "tvmq_out_float.bin", b)
    timing = parse_timing(files["tvmq_timing.bin"], n, len(info.steps), b.instructions_per_tick,
                          "tvmq_timing.bin", b.name)  # fmt: skip
    return raw, floats.astype(np.float32), timing


def _exact(data: bytes, dtype: Any, shape: tuple[int, ...], name: str, b: Board) -> np.ndarray:
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise DeviceError(f"{name} from {b.name} has {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _step_rows(info: ArtifactInfo, timing: Timing) -> list[dict[str, Any]]:
    rows = []
    for i, step in enumerate(info.steps):
        column = timing.per_step[:, i]
        measured = not np.all(np.isnan(column))
        ins = int(round(float(np.nanmedian(column)))) if measured else None
        macs = int(step.get("macs") or 0)
        rows.append({"name": step["name"], "op": step.get("op"), "macs": macs, "instructions": ins,
                     "instructions_per_mac": ins / macs if ins is not None and macs > 0 else None})  # fmt: skip
    return rows
