"""A protocol session with one device: handshake, one inference per request, time-outs, an optional transcript.

Why here and not in the transport: what to wait for, what to skip (boot banners, log lines, stale replies) and what
to call a failure is protocol knowledge; every failure names the board and the transport, and a corrupted frame
stops the session (no retry that could hide a flaky link behind plausible numbers).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DeviceError
from .protocol import (
    ErrorCode,
    ErrorReport,
    Frame,
    FrameType,
    InferRequest,
    Info,
    ProtocolError,
    Result,
    decode_frame,
    encode_frame,
    find_frame,
)
from .transport import Transport

_TAIL_LINES = 20
# Errors a device may send while the host's first HELLO lands in its boot (a cut or garbled line): retry.
_BOOT_NOISE = {ErrorCode.MALFORMED, ErrorCode.TRUNCATED, ErrorCode.CHECKSUM}


@dataclass
class Transcript:
    """The lines of a session, in order: ``>`` host to device, ``<`` device to host (frames and other output)."""

    header: str = ""
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, direction: str, line: bytes) -> None:
        self.lines.append((direction, line.decode(errors="replace").rstrip("\r\n")))

    def text(self) -> str:
        head = [f"# {self.header}"] if self.header else []
        return "\n".join([*head, *(f"{d} {line}" for d, line in self.lines)]) + "\n"

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.text())

    @classmethod
    def read(cls, path: str | Path) -> Transcript:
        t = cls()
        for raw in Path(path).read_text().splitlines():
            if raw.startswith("#"):
                t.header = t.header or raw[1:].strip()
            elif raw[:2] in ("> ", "< "):
                t.lines.append((raw[0], raw[2:]))
            elif raw in (">", "<"):
                t.lines.append((raw, ""))
        return t


class DeviceLink:
    """Talk the tvmq protocol over ``transport`` to ``board``."""

    def __init__(self, transport: Transport, board: str, transcript: Transcript | None = None) -> None:
        self.transport, self.board, self.transcript = transport, board, transcript
        self._buffer = bytearray()
        self._seq = 0
        self.other_output: deque[str] = deque(maxlen=_TAIL_LINES)

    @property
    def where(self) -> str:
        return f"board {self.board} on {self.transport.description}"

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1
        return self._seq

    def send(self, frame_type: FrameType, payload: bytes = b"") -> int:
        seq = self._next_seq()
        line = encode_frame(frame_type, payload, seq)
        if self.transcript is not None:
            self.transcript.add(">", line)
        self.transport.write(line)
        return seq

    def _line(self, deadline: float) -> bytes | None:
        """The next complete line, or None at the deadline; a device that went away raises."""
        while True:
            at = self._buffer.find(b"\n")
            if at >= 0:
                line = bytes(self._buffer[: at + 1])
                del self._buffer[: at + 1]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            chunk = self.transport.read(min(left, 0.5))
            if chunk:
                self._buffer += chunk
                continue
            reason = self.transport.closed_reason()
            if reason is not None:
                if self._buffer:  # a last line without its newline: a frame cut short
                    line, self._buffer = bytes(self._buffer), bytearray()
                    return line
                raise DeviceError(f"{self.where}: the device went away ({reason}){self._tail()}")

    def _tail(self) -> str:
        if not self.other_output:
            return ""
        return "\nits last other output:\n" + "\n".join("  " + line for line in self.other_output)

    def receive(self, deadline: float) -> Frame | None:
        """The next frame (other lines are kept as ``other_output``); None at the deadline."""
        while True:
            line = self._line(deadline)
            if line is None:
                return None
            if self.transcript is not None:
                self.transcript.add("<", line)
            text = find_frame(line)
            if text is None:
                stripped = line.decode(errors="replace").strip()
                if stripped:
                    self.other_output.append(stripped)
                continue
            if not line.endswith(b"\n"):
                raise ProtocolError("truncated", f"{self.where}: the last frame was cut short (no end of line)")
            try:
                return decode_frame(text)
            except ProtocolError as err:
                raise ProtocolError(err.kind, f"{self.where}: a corrupted frame arrived: {err}") from None

    def hello(self, timeout: float, retry_every: float = 2.0) -> Info:
        """Send HELLO until the device answers INFO (a board may still be booting or resetting)."""
        started = time.monotonic()
        deadline = started + timeout
        sent: set[int] = set()
        while True:
            sent.add(self.send(FrameType.HELLO))
            frame = self.receive(min(deadline, time.monotonic() + retry_every))
            while frame is not None:
                if frame.type == FrameType.INFO and frame.seq in sent:
                    return Info.decode(frame.payload)
                if frame.type == FrameType.ERROR:
                    report = ErrorReport.decode(frame.payload)
                    if report.code not in _BOOT_NOISE:
                        raise DeviceError(f"{self.where} refused HELLO: {report.name}: {report.message}")
                frame = self.receive(min(deadline, time.monotonic() + 0.05))
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"no answer from {self.where} within {timeout:.0f} s ({len(sent)} HELLO frames sent): wrong "
                    f"port or board, the board does not run tvmq's firmware (flash it: tvmq deploy DIR --board "
                    f"{self.board} --flash), or another baud rate{self._tail()}"
                )

    def infer(self, sample: np.ndarray, timeout: float) -> Result:
        """Run one sample (int8 codes or float32 values) and return the device's RESULT."""
        seq = self.send(FrameType.INFER, InferRequest(np.ascontiguousarray(sample).reshape(-1)).encode())
        deadline = time.monotonic() + timeout
        while True:
            frame = self.receive(deadline)
            if frame is None:
                raise DeviceError(f"{self.where} stopped answering: no RESULT within {timeout:.0f} s (the model "
                                  f"may hang or crash on the device, or the link dropped){self._tail()}")  # fmt: skip
            if frame.seq != seq:
                continue  # a late reply to an earlier HELLO
            if frame.type == FrameType.RESULT:
                return Result.decode(frame.payload)
            if frame.type == FrameType.ERROR:
                report = ErrorReport.decode(frame.payload)
                raise DeviceError(f"{self.where} failed the inference: {report.name}: {report.message}")
            raise ProtocolError("malformed", f"{self.where} answered INFER with frame type {frame.type}")
