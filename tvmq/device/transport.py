"""Byte pipes to a device: a child process's stdin/stdout (QEMU, ``west build -t run``) or a serial port.

Why one small interface: the protocol code (``link.py``) must not care whether the frames come from QEMU's
``-serial stdio``, from Zephyr's QEMU run target or from a board's USB serial port; each transport only moves bytes,
says what it is (for error messages) and, when the other side died, why.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from ..errors import DeviceError


class Transport(ABC):
    """A duplex byte stream to one device."""

    description: str  # "serial port /dev/ttyACM0 at 115200 baud", "QEMU mps2-an386 (stdio)", ...

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def read(self, timeout: float) -> bytes:
        """Whatever arrived within ``timeout`` seconds (b"" if nothing)."""

    def closed_reason(self) -> str | None:
        """Why no more bytes can come (the process exited, ...), or None while the device can still answer."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessTransport(Transport):
    """A child process in its own session; its stdout is the device's output, its stdin the device's input.

    stderr goes to a temporary file whose tail is shown when the process dies. ``close`` kills the whole process
    group (west -> cmake -> ninja -> qemu).
    """

    def __init__(self, argv: Sequence[str | os.PathLike], description: str, *, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.description = description
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; closed in close()
        args = [str(a) for a in argv]
        try:
            self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, start_new_session=True)  # fmt: skip
        except OSError as err:
            self._stderr.close()
            raise DeviceError(f"cannot start {args[0]} for {description}: {err}") from None
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._eof = False
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self._chunks.put(None)
                return
            self._chunks.put(chunk)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise DeviceError(f"{self.description}: cannot send to the device, "
                              f"{self.closed_reason() or 'its input is closed'}") from None  # fmt: skip

    def read(self, timeout: float) -> bytes:
        if self._eof:
            return b""
        out = bytearray()
        try:
            chunk = self._chunks.get(timeout=max(timeout, 0.0))
            while True:
                if chunk is None:
                    self._eof = True
                    break
                out += chunk
                chunk = self._chunks.get_nowait()
        except queue.Empty:
            pass
        return bytes(out)

    def stderr_tail(self, lines: int = 15) -> list[str]:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace")
            return [line for line in text.splitlines() if line.strip()][-lines:]
        return []

    def closed_reason(self) -> str | None:
        status = self.proc.poll()
        if status is None and not self._eof:
            return None
        if status is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = self.proc.wait(timeout=2)
        tail = self.stderr_tail()
        said = ("; its error output:\n" + "\n".join("  " + line for line in tail)) if tail else ""
        return f"the process exited (status {status}){said}"

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()
        self._reader.join(timeout=2)
        self._stderr.close()


class SerialTransport(Transport):
    """A serial port through pyserial (a board's USB CDC/VCOM port, or a pty)."""

    def __init__(self, port: str, baud: int = 115200, *, board: str = "") -> None:
        import serial  # pyserial; imported here so QEMU-only use does not need it loaded

        on = f" for board {board}" if board else ""
        self.description = f"serial port {port} at {baud} baud"
        try:
            self.port = serial.Serial(port, baudrate=baud, timeout=0, write_timeout=10)
        except (serial.SerialException, OSError, ValueError) as err:
            raise DeviceError(f"cannot open serial port {port}{on}: {err}; check the port name (ls /dev/ttyACM* "
                              f"/dev/ttyUSB*), that the board is connected and that you may use it "
                              f"(group dialout)") from None  # fmt: skip
        self._serial = serial

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (self._serial.SerialException, OSError) as err:
            raise DeviceError(f"{self.description}: write failed: {err}") from None

    def read(self, timeout: float) -> bytes:
        try:
            wait = max(timeout, 0.0)
            if self.port.timeout != wait:  # setting it reconfigures the port: only when it changes
                self.port.timeout = wait
            first = self.port.read(1)
            if not first:
                return b""
            waiting = self.port.in_waiting
            return first + (self.port.read(waiting) if waiting else b"")
        except (self._serial.SerialException, OSError) as err:
            raise DeviceError(f"{self.description}: read failed: {err} (was the board unplugged?)") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.port.close()
