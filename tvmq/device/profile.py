"""``tvmq profile``: run samples on a device through the tvmq protocol and report latency per layer.

Why one entry point for every target: a bare-metal QEMU board (tvmq's protocol firmware, UART0 on stdio), a
Zephyr QEMU board (``west build -t run``) and a flashed board (``west flash``, then its serial port) all answer
the same frames, so the table, the JSON and the checks are the same code. Results are written only after every
sample came back valid: a time-out, an error frame or a corrupted frame fails the run and writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import CalibrationDataError, ConfigError, DeviceError
from .artifact import ArtifactInfo, load_artifact
from .boards import BOARDS, check_core
from .build import DEFAULT_STACK_BYTES, build_firmware
from .footprint import BARE_METAL_RESERVE, check_fits
from .link import DeviceLink, Transcript
from .protocol import Info, Result, Timer
from .qemu import _input_batch, default_timeout
from .toolchain import QEMU, check_toolchain
from .transport import ProcessTransport, SerialTransport, Transport

DEFAULT_SAMPLES = 50
DEFAULT_BAUD = 115200
# An open link: the transport, seconds to wait for the first INFO, the serial baud rate (None: no wire).
_Opened = tuple[Transport, float, "int | None"]


@dataclass
class ProfileResult:
    """Per-layer latency of a model on a device, from ``samples`` inferences through the protocol."""

    model: str
    board: str
    link: str
    firmware: str
    timer: Timer
    clock_hz: int
    inputs: str  # where the samples came from
    totals: np.ndarray  # (N,) counts of the whole run call
    steps: list[dict[str, Any]]  # name, op, macs, count (median), us, share (of the median total)
    raw_outputs: np.ndarray  # (N, *output_shape[1:]) int8
    accuracy: float | None  # argmax over the samples sent, when they had labels

    @property
    def unit(self) -> str:
        return self.timer.unit

    @property
    def total(self) -> int:
        return int(np.median(self.totals))

    @property
    def note(self) -> str:
        mhz = f"{self.clock_hz / 1e6:g} MHz"
        if self.timer is Timer.QEMU_INSTRUCTIONS:
            return (f"QEMU counts instructions, not cycles (-icount shift=0); microseconds assume one instruction "
                    f"per cycle at the board's {mhz}")  # fmt: skip
        if self.timer is Timer.CYCLES:
            return f"cycles of the DWT counter (Zephyr timing API) at {mhz}"
        return f"cycles of Zephyr's system timer (k_cycle_get_32) at {mhz}: resolution is that timer's"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "board": self.board, "link": self.link, "firmware": self.firmware,
                "timer": self.timer.name.lower(), "unit": self.unit, "clock_hz": self.clock_hz,
                "inputs": self.inputs, "samples": len(self.totals), "total": self.total,
                "total_us": self.total / self.clock_hz * 1e6 if self.clock_hz else None,
                "totals": self.totals.tolist(), "steps": self.steps, "accuracy": self.accuracy,
                "note": self.note}  # fmt: skip

    def table(self) -> str:
        mhz = f"{self.clock_hz / 1e6:g} MHz"
        head = [f"{self.model} on {self.board}: {len(self.totals)} samples ({self.inputs})",
                f"  {self.firmware}, over {self.link}",
                f"{'step':<22}{'op':<14}{'MACs':>11}{self.unit:>15}{'us @ ' + mhz:>17}{'share':>8}"]  # fmt: skip
        rows = []
        for s in self.steps:
            count = f"{s['count']:,}" if s["count"] is not None else "-"
            us = f"{s['us']:,.1f}" if s["us"] is not None else "-"
            share = f"{100 * s['share']:.1f}%" if s["share"] is not None else "-"
            rows.append(f"{s['name'][:21]:<22}{str(s['op'])[:13]:<14}{s['macs']:>11,}{count:>15}{us:>17}{share:>8}")
        macs = sum(s["macs"] for s in self.steps)
        total_us = self.total / self.clock_hz * 1e6 if self.clock_hz else float("nan")
        rows.append(f"{'total (run call)':<36}{macs:>11,}{self.total:>15,}{total_us:>17,.1f}{'100.0%':>8}")
        tail = [f"({self.note})"]
        if self.accuracy is not None:
            tail.append(f"accuracy on the device over the {len(self.totals)} samples sent: {self.accuracy:.4f}")
        return "\n".join([*head, *rows, *tail])


def choose_inputs(info: ArtifactInfo, inputs: Any = None, labels: Any = None,
                  samples: int | None = DEFAULT_SAMPLES) -> tuple[np.ndarray, np.ndarray | None, str]:  # fmt: skip
    """The samples to send: given ones, else the example data set of the same name, else random int8 codes."""
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise ConfigError(f"samples {samples!r} must be a positive number")
    source = "given inputs"
    if inputs is None:
        from .. import examples

        if info.name in examples.available():
            ex = examples.load(info.name)
            inputs, labels, source = ex.x_test, ex.y_test, f"test split of the example {info.name!r}"
        else:
            rng = np.random.default_rng(0)
            count = samples or DEFAULT_SAMPLES
            inputs = rng.integers(-128, 128, size=(count, *info.input.shape[1:])).astype(np.int8)
            source = "random int8 codes, seed 0"
    elif isinstance(inputs, (str, os.PathLike)):
        inputs = _load_npy(inputs, "input")
    batch, _ = _input_batch(inputs, info.input.shape)
    if labels is not None:
        labels = _load_npy(labels, "labels") if isinstance(labels, (str, os.PathLike)) else np.asarray(labels)
        if labels.ndim != 1 or len(labels) < len(batch):
            raise CalibrationDataError(f"labels have shape {labels.shape}; expected one class index per input "
                                       f"sample ({len(batch)})")  # fmt: skip
    n = len(batch) if samples is None else min(samples, len(batch))
    return batch[:n], (labels[:n] if labels is not None else None), source


def _load_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    file = Path(path)
    if not file.is_file() or file.suffix != ".npy":
        raise CalibrationDataError(f"{what} file {file} must be an existing .npy array")
    try:
        return np.load(file)
    except ValueError as err:
        raise CalibrationDataError(f"{what} file {file} is not a readable .npy array: {err}") from None


def check_device(dev: Info, info: ArtifactInfo, board: str, where: str) -> None:
    """The device must run this artifact's model, on the board asked for (else: wrong port or stale firmware)."""
    theirs = (dev.model, dev.input_bytes, dev.output_bytes, dev.num_steps)
    ours = (info.name, info.input.bytes, info.output.bytes, len(info.steps))
    if theirs != ours:
        raise DeviceError(f"{where} runs model {dev.model!r} ({dev.input_bytes} B in, {dev.output_bytes} B out, "
                          f"{dev.num_steps} steps), not {info.name!r} from {info.directory} ({ours[1]} B in, "
                          f"{ours[2]} B out, {ours[3]} steps): deploy this model first (tvmq deploy "
                          f"{info.directory} --board {board} --flash)")  # fmt: skip
    if dev.board.split("/")[0] != board.split("/")[0]:
        raise DeviceError(f"{where} reports board {dev.board!r}, not {board!r}: wrong port, or pass the board it is")


def sample_timeout(info: ArtifactInfo, dev: Info, baud: int | None) -> float:
    """Seconds to wait for one RESULT: generous compute (200 cycles per MAC) plus the frames' transfer time."""
    macs = sum(int(s.get("macs") or 0) for s in info.steps)
    if dev.timer is Timer.QEMU_INSTRUCTIONS:
        compute = default_timeout(info, 1)
    else:
        compute = 10.0 + macs * 200 / max(dev.clock_hz, 1_000_000)
    chars = 2 * (8 + 4 * info.input.bytes + 8 * len(info.steps) + info.output.bytes) + 200
    return compute + (3 * chars * 10 / baud if baud else 0.0)


@contextlib.contextmanager
def _open_link(info: ArtifactInfo, board: str, port: str | None, baud: int, flash: bool, zephyr_base: Any,
               build_dir: Any, step_timing: bool, app: Any, opt: str) -> Iterator[_Opened]:  # fmt: skip
    """The transport to the device running ``info``: started, flashed or opened as the board requires."""
    from . import zephyr

    if port is None and board in BOARDS:
        b = BOARDS[board]
        tools = check_toolchain()
        check_core(info.core, b)
        check_fits(info, board, b.flash_size, b.ram_size, reserve=BARE_METAL_RESERVE, source="tvmq's board table")
        with tempfile.TemporaryDirectory(prefix="tvmq-profile-") as tmp:
            elf = build_firmware(info.directory, b, opt, Path(tmp) / "build", stack_bytes=DEFAULT_STACK_BYTES,
                                 protocol=True)  # fmt: skip
            from .protocol_firmware import start_qemu

            with start_qemu(tools[QEMU], elf, b, Path(tmp)) as transport:
                yield transport, 30.0, None
        return
    known = zephyr.zephyr_board(board)
    if port is None:
        if known is not None and not known.qemu:
            raise ConfigError(f"board {board} is a hardware board: pass its serial port, e.g. --port /dev/ttyACM0 "
                              f"(ls /dev/ttyACM* /dev/ttyUSB*)")  # fmt: skip
        dep = zephyr.deploy(info.directory, board, zephyr_base=zephyr_base, build_dir=build_dir,
                            step_timing=step_timing, app=app)  # fmt: skip
        with ProcessTransport(zephyr.qemu_run_command(dep), f"QEMU {board} via `west build -t run` (console on "
                              f"stdio)", cwd=dep.build_dir, env=dep.env.env) as transport:  # fmt: skip
            yield transport, 180.0, None
        return
    if flash and board not in BOARDS:
        zephyr.deploy(info.directory, board, zephyr_base=zephyr_base, build_dir=build_dir, flash=True,
                      step_timing=step_timing, app=app)  # fmt: skip
    with SerialTransport(port, baud, board=board) as transport:
        yield transport, 20.0, baud


def profile(
    artifact: str | os.PathLike,
    board: str,
    *,
    port: str | None = None,
    baud: int = DEFAULT_BAUD,
    samples: int | None = DEFAULT_SAMPLES,
    inputs: Any = None,
    labels: Any = None,
    zephyr_base: str | os.PathLike | None = None,
    build_dir: str | os.PathLike | None = None,
    flash: bool = True,
    step_timing: bool = True,
    app: str | os.PathLike | None = None,
    opt: str = "-O2",
    hello_timeout: float | None = None,
    progress: bool = True,
    record: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
) -> ProfileResult:
    """Run ``samples`` inferences of the exported model ``artifact`` on ``board`` and time them per layer.

    Boards: tvmq's bare-metal QEMU boards (``mps2-an386``, ...: protocol firmware on QEMU), Zephyr QEMU boards
    (``qemu_cortex_m3``, ``mps2/an385``, ``mps2/an521``: ``west build -t run``) and hardware boards
    (``nucleo_f746zg``, ...; any other name goes to west as it is) with ``port`` (``west flash`` first unless
    ``flash=False``). ``inputs``: int8 codes or float32 values (array or .npy path); by default the test split of
    the example model of the same name, else random int8 codes. ``record`` writes the session's lines (also when
    it fails, for a bug report); ``json_path`` the results, only after every sample succeeded.
    """
    info = load_artifact(artifact)
    x, y, source = choose_inputs(info, inputs, labels, samples)
    transcript = Transcript(f"tvmq device session: model {info.name}, board {board}") if record else None
    results: list[Result] = []
    try:
        with _open_link(info, board, port, baud, flash, zephyr_base, build_dir, step_timing, app, opt) as (
            transport, wait, line_baud,
        ):  # fmt: skip
            link = DeviceLink(transport, board, transcript)
            dev = link.hello(hello_timeout or wait)
            check_device(dev, info, board, link.where)
            if x.dtype != np.int8 and not dev.float_input:
                raise DeviceError(f"{link.where} takes no float inputs; pass int8 codes")
            limit = sample_timeout(info, dev, line_baud)
            for sample in tqdm(x, desc=f"{info.name} on {board}", unit="sample", disable=not progress, leave=False):
                results.append(_checked(link.infer(sample, limit), info, link.where))
            where = transport.description
    finally:
        if transcript is not None and record is not None:
            transcript.write(record)
    result = summarize(info, board, dev, where, source, results, y)
    if json_path is not None:
        write_json(json_path, result.to_json())
    return result


def _checked(r: Result, info: ArtifactInfo, where: str) -> Result:
    if len(r.output) != info.output.bytes or len(r.steps) != len(info.steps):
        raise DeviceError(f"{where} sent a RESULT with {len(r.output)} output bytes and {len(r.steps)} steps; "
                          f"expected {info.output.bytes} and {len(info.steps)}")  # fmt: skip
    return r


def summarize(info: ArtifactInfo, board: str, dev: Info, where: str, source: str, results: list[Result],
              labels: np.ndarray | None) -> ProfileResult:  # fmt: skip
    """Medians over samples per step; share of the median total; microseconds at the device's clock."""
    totals = np.array([r.total for r in results], dtype=np.int64)
    total = float(np.median(totals))
    steps = []
    for i, step in enumerate(info.steps):
        measured = [r.steps[i] for r in results if r.steps[i] is not None]
        count = int(round(float(np.median(measured)))) if measured else None
        steps.append({"name": step["name"], "op": step.get("op"), "macs": int(step.get("macs") or 0),
                      "count": count, "us": count / dev.clock_hz * 1e6 if count is not None and dev.clock_hz
                      else None, "share": count / total if count is not None and total > 0 else None})  # fmt: skip
    raw = np.stack([r.output for r in results]).reshape(len(results), *info.output.shape[1:])
    accuracy = None
    if labels is not None:
        accuracy = float(np.mean(np.argmax(raw.reshape(len(raw), -1), axis=1) == labels[: len(raw)]))
    return ProfileResult(info.name, board, where, dev.firmware, dev.timer, dev.clock_hz, source, totals, steps,
                         raw, accuracy)  # fmt: skip


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write through a temporary sibling renamed at the end: never a partial file."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
