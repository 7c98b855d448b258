"""Turn the harness's SysTick marks (tvmq_timing.bin) into instructions per inference and per step.

How the numbers arise (see firmware/harness.c): each mark spins until the next SysTick edge, counting spin
iterations of exactly ``SPIN_INSTRUCTIONS``, and records the edge. Between two marks the instructions executed are
``ticks * instructions_per_tick - spins * SPIN_INSTRUCTIONS - overhead``, where ``overhead`` (the mark's own fixed
path) is measured by the harness at boot with back-to-back marks. The edge is seen up to one spin iteration late,
so one interval is exact to about +-4 instructions, and the whole inference too (the errors telescope).
A known 2-instructions-per-iteration loop checks the board's instructions per tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DeviceError

SPIN_INSTRUCTIONS = 4  # ldr, adds, cmp, beq in tvmq_prof_mark's spin loop
TIMING_MAGIC, END_MAGIC, FORMAT_VERSION = 0x544D5654, 0x444E4554, 1
MARK_START, MARK_END = 0xFFFF0001, 0xFFFF0002
_WRAP = 1 << 24
_RELOAD = _WRAP - 1


@dataclass(frozen=True)
class Timing:
    """Instructions per sample (whole run call and per step) and the stack high-water mark."""

    per_sample: np.ndarray  # (N,) int64
    per_step: np.ndarray  # (N, num_steps) float64, NaN where a step left no marks
    overhead: float  # instructions of one mark's own fixed path (removed from every interval)
    stack_peak_bytes: int
    stack_bytes: int


def _edge_times(marks: np.ndarray) -> np.ndarray:
    """Ticks since SysTick start at each recorded edge (the counter counts down; ``wraps`` counts 1->0)."""
    wraps, cvr = marks[:, 1], marks[:, 2]
    return np.where(cvr > 0, wraps * _WRAP + _RELOAD - cvr, (wraps - 1) * _WRAP + _RELOAD)


class _Reader:
    def __init__(self, words: np.ndarray, where: str) -> None:
        self.words, self.pos, self.where = words, 0, where

    def take(self, count: int) -> np.ndarray:
        if self.pos + count > len(self.words):
            raise DeviceError(f"{self.where} is truncated (the firmware stopped writing early); "
                              f"rerun, and check QEMU's output for a fault")  # fmt: skip
        out = self.words[self.pos : self.pos + count]
        self.pos += count
        return out

    def marks(self) -> np.ndarray:
        count, dropped = (int(v) for v in self.take(2))
        if dropped:
            raise DeviceError(f"{self.where}: the model made {dropped} more TVMQ_STEP marks than metadata.json's "
                              f"steps allow; its steps list and model.c disagree, re-export the artifact")  # fmt: skip
        return self.take(4 * count).reshape(count, 4).astype(np.int64)


def _intervals(marks: np.ndarray, ipt: int, overhead: float) -> np.ndarray:
    """Instructions executed between consecutive marks (entry i: from mark i to mark i+1)."""
    ticks = np.diff(_edge_times(marks))
    return ticks * ipt - marks[1:, 3] * SPIN_INSTRUCTIONS - overhead


def parse_timing(data: bytes, n: int, num_steps: int, ipt: int, where: str, board: str) -> Timing:
    """Parse the timing file of a run of ``n`` samples on a board with ``ipt`` instructions per SysTick tick."""
    if len(data) % 4:
        raise DeviceError(f"{where} has {len(data)} bytes, not whole 32-bit words; the firmware output is corrupt")
    r = _Reader(np.frombuffer(data, dtype="<u4"), where)
    magic, version, count, cal_repeats, known_loop = (int(v) for v in r.take(5))
    if magic != TIMING_MAGIC or version != FORMAT_VERSION or count != n:
        raise DeviceError(f"{where} does not belong to this run (magic {magic:#x}, version {version}, {count} "
                          f"samples for {n}); the firmware and tvmq.device are out of step, rebuild")  # fmt: skip
    empty = [float(_intervals(r.marks(), ipt, 0.0)[0]) for _ in range(cal_repeats)]
    overhead = float(np.mean(empty))
    loop = float(_intervals(r.marks(), ipt, overhead)[0])
    expected = 2 * known_loop
    if abs(loop - expected) > 16 + 0.002 * expected:
        raise DeviceError(f"SysTick calibration on {board} failed: a loop of {expected} instructions measured "
                          f"{loop:.0f} with {ipt} instructions per tick; QEMU must run with -icount shift=0 and "
                          f"the board table's system clock must match QEMU's machine")  # fmt: skip
    per_sample = np.zeros(n, dtype=np.int64)
    per_step = np.full((n, num_steps), np.nan)
    for s in range(n):
        marks = r.marks()
        ids = marks[:, 0]
        if len(ids) < 2 or ids[0] != MARK_START or ids[-1] != MARK_END:
            raise DeviceError(f"{where}: sample {s} has no complete start/end marks around the run call")
        steps = _intervals(marks, ipt, overhead)
        cumulative = np.concatenate([[0.0], np.cumsum(steps)])
        per_sample[s] = round(cumulative[-1])
        per_step[s] = _step_sums(ids, cumulative, num_steps)
    end = r.take(3)
    if int(end[0]) != END_MAGIC:
        raise DeviceError(f"{where} lacks its end record; the firmware stopped before finishing")
    return Timing(per_sample, per_step, overhead, int(end[1]), int(end[2]))


def _step_sums(ids: np.ndarray, cumulative: np.ndarray, num_steps: int) -> np.ndarray:
    """Instructions inside each step: from BEGIN(i) (id 2i) to the next END(i) (id 2i+1), summed over entries."""
    out = np.full(num_steps, np.nan)
    open_at: dict[int, int] = {}
    for pos, mark in enumerate(ids.tolist()):
        if mark >= 2 * num_steps:
            continue
        step, is_end = divmod(mark, 2)
        if not is_end:
            open_at[step] = pos
        elif step in open_at:
            spent = cumulative[pos] - cumulative[open_at.pop(step)]
            out[step] = spent if np.isnan(out[step]) else out[step] + spent
    return out
