"""The tvmq device protocol (version 1): framed lines over a console UART, host side.

Why a protocol of its own: the same host code must drive the bare-metal QEMU firmware, a Zephyr application on
QEMU and a flashed board, and tell a corrupted line from a result. Every frame is one text line,
``@tvmq:`` + hex + newline, so boot banners and log output around it are skipped, not misread; a CRC-32 per frame
catches what the UART mangled. The device side is ``firmware/tvmq_protocol.c`` (layout documented there too):

    frame = version u8 | type u8 | seq u16 | length u32 | payload[length] | crc32 u32   (little-endian)

``crc32`` is zlib's CRC-32 over version..payload. Payloads: HELLO (empty), INFO, INFER, RESULT, ERROR; see the
dataclasses below. A reply echoes its request's ``seq``.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ..errors import DeviceError

VERSION = 1
MARKER = b"@tvmq:"
HEADER = struct.Struct("<BBHI")
CRC = struct.Struct("<I")
NOT_MEASURED = -(2**63)
MAX_PAYLOAD = 1 << 24  # what this host accepts from a device: far above any model's output


class FrameType(IntEnum):
    HELLO = 1
    INFO = 2
    INFER = 3
    RESULT = 4
    ERROR = 5


class ErrorCode(IntEnum):
    """Error frame codes (firmware/tvmq_protocol.h ``enum tvmq_error_code``)."""

    CHECKSUM = 1
    VERSION = 2
    MALFORMED = 3
    TRUNCATED = 4
    TOO_LONG = 5
    UNKNOWN_TYPE = 6
    BAD_PAYLOAD = 7
    MODEL = 8
    TIMER = 9
    MARKS = 10


class Timer(IntEnum):
    """What the device's counts are."""

    QEMU_INSTRUCTIONS = 0  # bare-metal QEMU: instructions from SysTick marks under -icount shift=0
    CYCLES = 1  # DWT cycle counter through Zephyr's timing API
    KERNEL_CYCLES = 2  # Zephyr's system timer (k_cycle_get_32), where the DWT is missing or not emulated

    @property
    def unit(self) -> str:
        return "instructions" if self is Timer.QEMU_INSTRUCTIONS else "cycles"


class InputKind(IntEnum):
    INT8 = 0
    FLOAT32 = 1


class ProtocolError(DeviceError):
    """A line that starts like a frame but is not a valid one: ``kind`` is checksum, truncated, version, ..."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes
    version: int = VERSION


def encode_frame(frame_type: int, payload: bytes = b"", seq: int = 0, *, version: int = VERSION) -> bytes:
    """One protocol line (with its newline) carrying ``payload``."""
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"seq {seq} does not fit 16 bits")
    body = HEADER.pack(version, int(frame_type), seq, len(payload)) + payload
    return MARKER + binascii.hexlify(body + CRC.pack(zlib.crc32(body))) + b"\n"


def find_frame(line: bytes) -> bytes | None:
    """The frame text of a received line (after the marker), or None for a line that holds no frame."""
    at = line.find(MARKER)
    return None if at < 0 else line[at + len(MARKER) :].strip()


def decode_frame(text: bytes) -> Frame:
    """Decode the hex after the marker; any defect raises ProtocolError saying which."""
    if len(text) % 2:
        raise ProtocolError("truncated", f"the frame has an odd number of hex digits ({len(text)}): cut short")
    try:
        raw = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise ProtocolError("malformed", "the frame holds characters that are not hex digits") from None
    if len(raw) < HEADER.size + CRC.size:
        raise ProtocolError("truncated", f"the frame has {len(raw)} bytes, fewer than a header and a checksum")
    version, ftype, seq, length = HEADER.unpack_from(raw)
    if version != VERSION:
        raise ProtocolError("version", f"the frame is protocol version {version}; this tvmq speaks version "
                                       f"{VERSION}: rebuild and flash the firmware with this tvmq")  # fmt: skip
    expected = HEADER.size + length + CRC.size
    if len(raw) < expected:
        raise ProtocolError("truncated", f"the frame is truncated: {len(raw)} of {expected} bytes arrived")
    if len(raw) > expected:
        raise ProtocolError("malformed", f"the frame has {len(raw) - expected} bytes beyond its length field")
    body = raw[: HEADER.size + length]
    (sent,) = CRC.unpack_from(raw, HEADER.size + length)
    computed = zlib.crc32(body)
    if sent != computed:
        raise ProtocolError("checksum", f"checksum mismatch (CRC-32 sent {sent:#010x}, computed {computed:#010x}): "
                                        f"the line was corrupted in transit")  # fmt: skip
    return Frame(ftype, seq, body[HEADER.size :], version)


def decode_line(line: bytes) -> Frame | None:
    """A received line as a Frame; None for a line without a frame (boot banner, log output)."""
    text = find_frame(line)
    return None if text is None else decode_frame(text)


class _Reader:
    """Sequential little-endian reads from a payload, with a ProtocolError naming the frame on a short one."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise ProtocolError("malformed", f"the {self.what} payload is too short ({len(self.data)} bytes)")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("malformed", f"the {self.what} payload is too short ({len(self.data)} bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def text(self) -> str:
        (n,) = self.take("B")
        return self.raw(n).decode("utf-8", errors="replace")

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError("malformed", f"the {self.what} payload has {len(self.data) - self.pos} extra bytes")


def _text(value: str) -> bytes:
    data = value.encode()[:255]
    return bytes([len(data)]) + data


@dataclass(frozen=True)
class Info:
    """The device's answer to HELLO: which model it runs and how it counts."""

    input_bytes: int
    output_bytes: int
    num_steps: int
    timer: Timer
    flags: int
    clock_hz: int
    max_payload: int
    mark_overhead_x16: int
    model: str
    board: str
    firmware: str

    @property
    def step_marks(self) -> bool:
        return bool(self.flags & 1)

    @property
    def float_input(self) -> bool:
        return bool(self.flags & 2)

    def encode(self) -> bytes:
        head = struct.pack("<IIHBBIII", self.input_bytes, self.output_bytes, self.num_steps, int(self.timer),
                           self.flags, self.clock_hz, self.max_payload, self.mark_overhead_x16)  # fmt: skip
        return head + _text(self.model) + _text(self.board) + _text(self.firmware)

    @classmethod
    def decode(cls, payload: bytes) -> Info:
        r = _Reader(payload, "INFO")
        ib, ob, steps, timer, flags, clock, max_payload, overhead = r.take("IIHBBIII")
        model, board, firmware = r.text(), r.text(), r.text()
        r.done()
        try:
            kind = Timer(timer)
        except ValueError:
            raise ProtocolError("malformed", f"INFO names an unknown timer {timer}") from None
        return cls(ib, ob, steps, kind, flags, clock, max_payload, overhead, model, board, firmware)


@dataclass(frozen=True)
class InferRequest:
    """One sample: int8 codes, or float32 values the device quantizes with the model's own quantize_input."""

    data: np.ndarray

    @property
    def kind(self) -> InputKind:
        return InputKind.INT8 if self.data.dtype == np.int8 else InputKind.FLOAT32

    def encode(self) -> bytes:
        values = self.data.astype("<f4") if self.kind is InputKind.FLOAT32 else self.data
        return bytes([int(self.kind), 0, 0, 0]) + np.ascontiguousarray(values).tobytes()

    @classmethod
    def decode(cls, payload: bytes) -> InferRequest:
        if len(payload) < 4 or payload[0] not in (0, 1):
            raise ProtocolError("malformed", "INFER payload must start with kind 0 (int8) or 1 (float32)")
        dtype = np.int8 if payload[0] == 0 else np.dtype("<f4")
        body = payload[4:]
        if payload[0] == 1 and len(body) % 4:
            raise ProtocolError("malformed", "INFER float32 data is not a whole number of values")
        return cls(np.frombuffer(body, dtype=dtype).copy())


@dataclass(frozen=True)
class Result:
    """One inference: the model's status, its count, the count of each step (None: not measured), int8 output."""

    status: int
    total: int
    steps: list[int | None]
    output: np.ndarray = field(repr=False)

    def encode(self) -> bytes:
        steps = [NOT_MEASURED if s is None else s for s in self.steps]
        out = np.ascontiguousarray(self.output, dtype=np.int8).tobytes()
        return (struct.pack("<IqHH", self.status, self.total, len(steps), 0) + struct.pack(f"<{len(steps)}q", *steps)
                + struct.pack("<I", len(out)) + out)  # fmt: skip

    @classmethod
    def decode(cls, payload: bytes) -> Result:
        r = _Reader(payload, "RESULT")
        status, total, n, _ = r.take("IqHH")
        steps = [None if s == NOT_MEASURED else int(s) for s in r.take(f"{n}q")]
        (nout,) = r.take("I")
        out = np.frombuffer(r.raw(nout), dtype=np.int8).copy()
        r.done()
        return cls(status, total, steps, out)


@dataclass(frozen=True)
class ErrorReport:
    """An ERROR frame: the device refused a frame or failed to run it."""

    code: int
    message: str

    @property
    def name(self) -> str:
        try:
            return ErrorCode(self.code).name.lower()
        except ValueError:
            return f"error {self.code}"

    def encode(self) -> bytes:
        text = self.message.encode()
        return struct.pack("<HH", self.code, len(text)) + text

    @classmethod
    def decode(cls, payload: bytes) -> ErrorReport:
        r = _Reader(payload, "ERROR")
        code, n = r.take("HH")
        message = r.raw(n).decode("utf-8", errors="replace")
        r.done()
        return cls(code, message)


PAYLOADS = {FrameType.INFO: Info, FrameType.INFER: InferRequest, FrameType.RESULT: Result,
            FrameType.ERROR: ErrorReport}  # fmt: skip


def parse_payload(frame: Frame) -> Info | InferRequest | Result | ErrorReport | None:
    """The typed payload of ``frame`` (None for HELLO); an unknown type is a ProtocolError."""
    if frame.type == FrameType.HELLO:
        return None
    kind = PAYLOADS.get(frame.type)  # type: ignore[call-overload]
    if kind is None:
        raise ProtocolError("malformed", f"unknown frame type {frame.type}")
    return kind.decode(frame.payload)
