"""The tvmq device protocol: Python encoder/decoder, and the firmware's C implementation checked against it.

The C file (tvmq/device/firmware/tvmq_protocol.c) is plain C99, so the host compiler builds it into a small driver
here: frames encoded by Python decode in C and the other way round, and C's error codes match the defects.
"""

from __future__ import annotations

import shutil
import subprocess
import zlib

import numpy as np
import pytest

from tvmq.device.boards import FIRMWARE_DIR
from tvmq.device.protocol import (
    MARKER,
    VERSION,
    ErrorCode,
    ErrorReport,
    Frame,
    FrameType,
    InferRequest,
    Info,
    ProtocolError,
    Result,
    Timer,
    decode_line,
    encode_frame,
    parse_payload,
)

INFO = Info(64, 10, 7, Timer.CYCLES, 3, 216_000_000, 260, 352, "digits", "nucleo_f746zg", "tvmq Zephyr 4.2.0")
RESULT = Result(0, 123_456_789_012, [5, None, 0, -3], np.array([1, -2, 127, -128], dtype=np.int8))


def _flip(line: bytes, at: int) -> bytes:
    """Change one hex digit of a frame line (``at`` counts from the first digit after the marker)."""
    pos = len(MARKER) + at
    digit = line[pos : pos + 1]
    return line[:pos] + (b"1" if digit == b"0" else b"0") + line[pos + 1 :]


def test_every_frame_type_round_trips():
    x8 = np.arange(-32, 32, dtype=np.int8)
    xf = np.linspace(-1, 1, 64, dtype=np.float32)
    cases = [(FrameType.HELLO, b""), (FrameType.INFO, INFO.encode()), (FrameType.INFER, InferRequest(x8).encode()),
             (FrameType.INFER, InferRequest(xf).encode()), (FrameType.RESULT, RESULT.encode()),
             (FrameType.ERROR, ErrorReport(ErrorCode.TIMER, "SysTick calibration failed").encode())]  # fmt: skip
    for seq, (ftype, payload) in enumerate(cases, start=65530):
        line = encode_frame(ftype, payload, seq % 65536)
        assert line.startswith(MARKER) and line.endswith(b"\n") and line.count(b"\n") == 1
        frame = decode_line(line)
        assert frame == Frame(ftype, seq % 65536, payload, VERSION)
    assert parse_payload(decode_line(encode_frame(FrameType.INFO, INFO.encode()))) == INFO
    got = parse_payload(decode_line(encode_frame(FrameType.RESULT, RESULT.encode())))
    assert (got.status, got.total, got.steps) == (0, 123_456_789_012, [5, None, 0, -3])
    np.testing.assert_array_equal(got.output, RESULT.output)
    req = parse_payload(decode_line(encode_frame(FrameType.INFER, InferRequest(xf).encode())))
    assert req.data.dtype == np.float32 and np.array_equal(req.data, xf)
    assert parse_payload(decode_line(encode_frame(FrameType.HELLO))) is None


def test_layout_is_the_documented_one():
    line = encode_frame(FrameType.HELLO, b"", 7)
    body = bytes.fromhex(line[len(MARKER) :].strip().decode())
    assert body[:8] == bytes([1, 1, 7, 0, 0, 0, 0, 0])  # version, type, seq u16 LE, length u32 LE
    assert int.from_bytes(body[8:], "little") == zlib.crc32(body[:8])
    assert decode_line(line.upper().replace(b"@TVMQ:", MARKER)) == Frame(FrameType.HELLO, 7, b"")  # hex any case


def test_lines_without_a_frame_are_skipped_and_noise_before_the_marker_is_tolerated():
    assert decode_line(b"*** Booting Zephyr OS build v4.2.0 ***\r\n") is None
    assert decode_line(b"\n") is None
    line = encode_frame(FrameType.INFO, INFO.encode(), 2)
    assert decode_line(b"[00:00:00.010] " + line.replace(b"\n", b"\r\n")).seq == 2


@pytest.mark.parametrize("at", [0, 3, 17, -12, -3])
def test_a_changed_digit_fails_the_checksum_or_the_header(at):
    line = encode_frame(FrameType.RESULT, RESULT.encode(), 9)
    digits = len(line) - len(MARKER) - 1
    bad = _flip(line, at % digits)
    with pytest.raises(ProtocolError) as err:
        decode_line(bad)
    if at % digits >= 16:  # payload or CRC: only the checksum can tell
        assert err.value.kind == "checksum" and "corrupted in transit" in str(err.value)
    else:
        assert err.value.kind in ("version", "checksum", "truncated", "malformed")


def test_truncated_frames():
    line = encode_frame(FrameType.RESULT, RESULT.encode(), 9).rstrip(b"\n")
    with pytest.raises(ProtocolError, match="truncated") as err:
        decode_line(line[:-8])  # whole bytes missing: the length field says more
    assert err.value.kind == "truncated"
    with pytest.raises(ProtocolError, match="odd number"):
        decode_line(line[:-1])
    with pytest.raises(ProtocolError, match="fewer than a header"):
        decode_line(MARKER + b"0101")


def test_unknown_version_malformed_and_unknown_type():
    with pytest.raises(ProtocolError, match="version 2; this tvmq speaks version 1") as err:
        decode_line(encode_frame(FrameType.HELLO, b"", 1, version=2))
    assert err.value.kind == "version"
    with pytest.raises(ProtocolError, match="not hex") as err:
        decode_line(MARKER + b"01zz000000000000\n")
    assert err.value.kind == "malformed"
    good = encode_frame(FrameType.HELLO, b"", 1).rstrip(b"\n")
    with pytest.raises(ProtocolError, match="beyond its length"):
        decode_line(good + b"00\n")
    with pytest.raises(ProtocolError, match="unknown frame type 9"):
        parse_payload(decode_line(encode_frame(9, b"")))
    with pytest.raises(ProtocolError, match="INFO payload is too short"):
        Info.decode(INFO.encode()[:10])
    with pytest.raises(ProtocolError, match="extra bytes"):
        ErrorReport.decode(ErrorReport(1, "x").encode() + b"\0")


def test_error_frames_carry_code_name_and_message():
    report = ErrorReport.decode(ErrorReport(ErrorCode.BAD_PAYLOAD, "INFER needs 64 bytes").encode())
    assert (report.code, report.name, report.message) == (7, "bad_payload", "INFER needs 64 bytes")
    assert ErrorReport(99, "?").name == "error 99"
    with pytest.raises(ValueError, match="16 bits"):
        encode_frame(FrameType.HELLO, b"", 70000)


# -- the C implementation --------------------------------------------------------------------------------------------
_DRIVER = r"""
#include <stdio.h>
#include <string.h>
#include "tvmq_protocol.h"

static void out(uint8_t c) { putchar(c); }

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "encode") == 0) {
        tvmq_writer_t w = {out, 0};
        tvmq_frame_begin(&w, TVMQ_FRAME_HELLO, 7, 0);
        tvmq_frame_end(&w);
        tvmq_send_error(out, 3, TVMQ_ERR_TIMER, "timer broke");
        const int8_t output[3] = {1, -2, 127};
        tvmq_frame_begin(&w, TVMQ_FRAME_RESULT, 65535, 4 + 8 + 2 + 2 + 2 * 8 + 4 + 3);
        tvmq_frame_u32(&w, 0);
        tvmq_frame_i64(&w, 123456789012LL);
        tvmq_frame_u16(&w, 2);
        tvmq_frame_u16(&w, 0);
        tvmq_frame_i64(&w, 5);
        tvmq_frame_i64(&w, TVMQ_PROTO_NOT_MEASURED);
        tvmq_frame_u32(&w, 3);
        tvmq_frame_bytes(&w, output, 3);
        tvmq_frame_end(&w);
        return 0;
    }
    static uint8_t buf[64];
    tvmq_reader_t r;
    tvmq_reader_init(&r, buf, sizeof buf);
    int c;
    while ((c = getchar()) != EOF) {
        tvmq_rx_event_t e = tvmq_reader_feed(&r, (uint8_t)c);
        if (e == TVMQ_RX_FRAME) {
            printf("FRAME %u %u ", r.type, r.seq);
            for (uint32_t i = 0; i < r.length; i++) printf("%02x", buf[i]);
            printf("\n");
        } else if (e == TVMQ_RX_ERROR) {
            printf("ERROR %u %u\n", r.error, r.seq);
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_driver(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler (cc/gcc) to build the protocol's C implementation for the host")
    tmp = tmp_path_factory.mktemp("cproto")
    (tmp / "driver.c").write_text(_DRIVER)
    exe = tmp / "driver"
    subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{FIRMWARE_DIR}", tmp / "driver.c",
                    FIRMWARE_DIR / "tvmq_protocol.c", "-o", exe], check=True, capture_output=True)  # fmt: skip
    return exe


def _c_decode(exe, data: bytes) -> list[str]:
    return subprocess.run([exe], input=data, capture_output=True, check=True).stdout.decode().splitlines()


def test_python_frames_decode_in_c(c_driver):
    payload = bytes(range(60))
    upper = MARKER + encode_frame(FrameType.INFO, INFO.encode()[:64], 65535)[len(MARKER) :].upper()
    lines = (b"boot noise @tvm not a frame\r\n" + encode_frame(FrameType.HELLO, b"", 1)
             + encode_frame(FrameType.INFER, payload, 513).replace(b"\n", b"\r\n") + b"log line\n" + upper)  # fmt: skip
    assert _c_decode(c_driver, lines) == ["FRAME 1 1 ", f"FRAME 3 513 {payload.hex()}",
                                          f"FRAME 2 65535 {INFO.encode()[:64].hex()}"]  # fmt: skip


def test_c_reports_each_defect_with_its_code(c_driver):
    good = encode_frame(FrameType.INFER, bytes(range(20)), 40)
    cases = [
        (_flip(good, 30), ErrorCode.CHECKSUM, 40),
        (encode_frame(FrameType.HELLO, b"", 41, version=3), ErrorCode.VERSION, 41),
        (good[:-9] + b"\n", ErrorCode.TRUNCATED, 40),
        (good[:20] + b"xy" + good[22:], ErrorCode.MALFORMED, 0),
        (good.rstrip(b"\n") + b"00\n", ErrorCode.MALFORMED, 40),
        (encode_frame(FrameType.INFER, bytes(100), 42), ErrorCode.TOO_LONG, 42),
        (MARKER + b"\n", ErrorCode.MALFORMED, 0),
    ]
    for line, code, seq in cases:
        assert _c_decode(c_driver, line + encode_frame(FrameType.HELLO, b"", 5)) == [
            f"ERROR {int(code)} {seq}", "FRAME 1 5 "], line  # fmt: skip


def test_c_frames_decode_in_python(c_driver):
    out = subprocess.run([c_driver, "encode"], capture_output=True, check=True).stdout
    hello, error, result = (decode_line(line) for line in out.splitlines(keepends=True))
    assert hello == Frame(FrameType.HELLO, 7, b"")
    assert error.seq == 3 and parse_payload(error) == ErrorReport(ErrorCode.TIMER, "timer broke")
    r = parse_payload(result)
    assert result.seq == 65535 and (r.status, r.total, r.steps) == (0, 123_456_789_012, [5, None])
    np.testing.assert_array_equal(r.output, np.array([1, -2, 127], dtype=np.int8))
