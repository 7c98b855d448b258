"""Start QEMU on a firmware, follow its progress lines with a tqdm bar, stop it at the time limit, explain failures.

Why separate from the runner: this is the part that deals with a foreign process (a reader thread, a process group
to kill, the fault line printed by tvmq's startup code), kept apart from building and parsing results.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import DeviceError
from .boards import Board

_PROGRESS = re.compile(r"tvmq-progress (\d+)/(\d+)")
_FAULT = re.compile(r"tvmq-fault (0x[0-9a-f]+) cfsr=(0x[0-9a-f]+) hfsr=(0x[0-9a-f]+) mmfar=(0x[0-9a-f]+) "
                    r"bfar=(0x[0-9a-f]+) stack_bottom=(0x[0-9a-f]+)")  # fmt: skip
_TAIL_LINES = 25
_MMFSR_MSTKERR, _MMFSR_MMARVALID, _BFSR_STKERR = 1 << 4, 1 << 7, 1 << 12


def launch(qemu: str, elf: Path, b: Board, run_dir: Path, n: int, limit: float, progress: bool,
           stack_bytes: int) -> list[str]:  # fmt: skip
    """Boot the firmware once; a progress bar follows the device's progress lines; hangs are killed.

    Returns the last lines QEMU printed (besides progress), for error messages.
    """
    cmd = [qemu, "-M", b.machine, "-nographic", "-semihosting-config", "enable=on,target=native",
           "-icount", "shift=0", "-kernel", str(elf)]  # fmt: skip
    try:
        proc = subprocess.Popen(cmd, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    except OSError as err:
        raise DeviceError(f"{qemu} could not be started for board {b.name}: {err}") from None
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    done: queue.Queue[int] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc, tail, done), daemon=True)
    reader.start()
    finished = 0
    started = time.monotonic()
    with tqdm(total=n, desc=f"QEMU {b.name}", unit="sample", disable=not progress, leave=False) as bar:
        try:
            while True:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
                finished = _drain(done, bar, finished)
                if proc.returncode is not None:
                    break
                if time.monotonic() - started > limit:
                    raise DeviceError(f"the firmware hung on {b.name}: QEMU gave no result within {limit:.0f} s "
                                      f"({finished}/{n} samples done) and was stopped; the model's run function "
                                      f"may never return, or it is slower than the limit: pass a larger "
                                      f"timeout= (seconds) to tvmq.device.run")  # fmt: skip
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(timeout=5)
        finished = _drain(done, bar, finished)
    if proc.returncode != 0:
        raise DeviceError(_failure_message(b, proc.returncode, list(tail), stack_bytes, finished, n))
    if not any(line.startswith("tvmq-done") for line in tail):
        raise DeviceError(f"the firmware on {b.name} ended without finishing ({finished}/{n} samples); QEMU's "
                          f"last output:\n{format_tail(tail)}")  # fmt: skip
    return list(tail)


def _read_lines(proc: subprocess.Popen, tail: deque[str], done: queue.Queue[int]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        for m in _PROGRESS.finditer(line):
            done.put(int(m.group(1)))
        rest = _PROGRESS.sub("", line).strip()
        if rest:
            tail.append(rest)


def _drain(done: queue.Queue[int], bar: tqdm, finished: int) -> int:
    while True:
        try:
            count = done.get_nowait()
        except queue.Empty:
            return finished
        if count > finished:
            bar.update(count - finished)
            finished = count


def format_tail(tail: Any) -> str:
    lines = list(tail)
    return "\n".join("  " + line for line in lines) if lines else "  (no output)"


def _failure_message(b: Board, status: int, tail: list[str], stack_bytes: int, finished: int, n: int) -> str:
    where = f"the firmware on {b.name} failed after {finished}/{n} samples (QEMU exit status {status})"
    for line in tail:
        m = _FAULT.search(line)
        if m:
            exc, cfsr, hfsr, mmfar, bfar, bottom = (int(v, 16) for v in m.groups())
            in_guard = cfsr & _MMFSR_MMARVALID and bottom <= mmfar < bottom + 32
            overflow = in_guard or cfsr & (_MMFSR_MSTKERR | _BFSR_STKERR)
            if overflow:
                return (f"{where}: stack overflow, the program needed more than its {stack_bytes} B stack; pass a "
                        f"larger stack_bytes= to tvmq.device.run / build_firmware")  # fmt: skip
            return (f"{where}: CPU fault (exception {exc}, CFSR={cfsr:#010x}, HFSR={hfsr:#010x}, MMFAR={mmfar:#x}, "
                    f"BFAR={bfar:#x}): an out-of-bounds access, bad pointer or unaligned access in the model "
                    f"code\n{format_tail(tail)}")  # fmt: skip
        if line.startswith("tvmq-error:"):
            return f"{where}: {line[len('tvmq-error:') :].strip()}\n{format_tail(tail)}"
    return f"{where}; QEMU's last output:\n{format_tail(tail)}"
