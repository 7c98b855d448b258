"""The tvmq protocol against the bare-metal QEMU firmware, end to end; `tvmq profile --board mps2-an386`.

Both firmwares count instructions with the same SysTick marks (firmware/tvmq_systick.h) and remove the same
calibrated overhead, but each mark sees the SysTick edge only within one 4-instruction spin iteration, and the
two firmwares reach their marks at different SysTick phases. So counts agree to the method's resolution: a few
instructions per step and per inference (``AGREE``), with equal outputs. Needs the toolchain and QEMU.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from device_fixtures import STEPS, expected_raw, quantize, write_fake_artifact

import tvmq
from tvmq.cli import main
from tvmq.device.artifact import load_artifact
from tvmq.device.boards import get_board
from tvmq.device.build import build_firmware
from tvmq.device.link import DeviceLink
from tvmq.device.profile import check_device, profile
from tvmq.device.protocol import (
    ErrorCode,
    ErrorReport,
    FrameType,
    InferRequest,
    Timer,
    encode_frame,
)
from tvmq.device.protocol_firmware import start_qemu
from tvmq.device.transport import ProcessTransport
from tvmq.errors import DeviceError

AGREE = 8  # instructions: two marks' spin resolution (4 each)
RNG = np.random.default_rng(11)
X_INT8 = RNG.integers(-128, 128, size=(12, 8, 8, 1)).astype(np.int8)


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return write_fake_artifact(tmp_path_factory.mktemp("pfake") / "artifact")


@pytest.fixture(scope="module")
def link(fake_dir, tmp_path_factory):
    b = get_board("mps2-an386")
    work = tmp_path_factory.mktemp("pqemu")
    elf = build_firmware(fake_dir, b, "-O2", work / "build", protocol=True)
    transport = start_qemu("qemu-system-arm", elf, b, work)
    yield DeviceLink(transport, b.name)
    transport.close()


def test_info_describes_model_board_and_timer(link):
    info = link.hello(15)
    assert (info.model, info.input_bytes, info.output_bytes, info.num_steps) == ("fake", 64, 10, len(STEPS))
    assert (info.board, info.timer, info.clock_hz) == ("mps2-an386", Timer.QEMU_INSTRUCTIONS, 25_000_000)
    assert info.step_marks and info.float_input and info.max_payload == 4 + 4 * 64
    assert info.mark_overhead_x16 > 0


def test_outputs_and_counts_agree_with_the_semihosting_run(link, fake_dir):
    link.hello(15)
    results = [link.infer(x, 30) for x in X_INT8]
    np.testing.assert_array_equal(np.stack([r.output for r in results]), expected_raw(X_INT8))
    ref = tvmq.qemu.run(fake_dir, X_INT8, board="mps2-an386", progress=False)
    totals = np.array([r.total for r in results])
    assert np.abs(totals - ref.instructions_per_sample).max() <= AGREE
    for i, step in enumerate(ref.steps):
        ours = np.median([r.steps[i] for r in results])
        assert abs(ours - step["instructions"]) <= AGREE, step["name"]


def test_float_inputs_are_quantized_on_the_device(link):
    x = np.linspace(-8.4, 8.4, 64, dtype=np.float32).reshape(8, 8, 1)
    r = link.infer(x, 30)
    np.testing.assert_array_equal(r.output, expected_raw(quantize(x[None]))[0])


def test_the_firmware_answers_bad_frames_with_error_frames_and_keeps_going(link):
    hello = encode_frame(FrameType.HELLO, b"", 100)
    corrupt = bytearray(encode_frame(FrameType.INFER, InferRequest(X_INT8[0]).encode(), 101))
    corrupt[40] = ord("0") if corrupt[40] != ord("0") else ord("1")
    cases = [
        (bytes(corrupt), ErrorCode.CHECKSUM, 101),
        (encode_frame(FrameType.HELLO, b"", 102, version=2), ErrorCode.VERSION, 102),
        (encode_frame(FrameType.INFER, bytes(4 + 63), 103), ErrorCode.BAD_PAYLOAD, 103),
        (encode_frame(9, b"", 104), ErrorCode.UNKNOWN_TYPE, 104),
        (encode_frame(FrameType.INFER, bytes(4 + 4 * 64 + 1), 105), ErrorCode.TOO_LONG, 105),
        (hello[:26] + b"\n", ErrorCode.TRUNCATED, 100),
    ]
    for line, code, seq in cases:
        link.transport.write(line)
        frame = link.receive(_deadline(10))
        assert frame is not None and frame.type == FrameType.ERROR and frame.seq == seq
        assert ErrorReport.decode(frame.payload).code == code
    link.transport.write(hello)
    assert link.receive(_deadline(10)).type == FrameType.INFO


def _deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def test_profile_api_outputs_equal_run_int_and_qemu_run(digits_int8, digits, tmp_path):
    artifact = tvmq.build(digits_int8, target="c -mcpu=cortex-m4", name="digits")
    out = artifact.export(tmp_path / "digits")
    x = digits.x_test[:10].astype(np.float32)
    result = profile(out, "mps2-an386", inputs=x, labels=digits.y_test[:10], progress=False)
    host = digits_int8.run_int(digits_int8.quantize_input(x))
    np.testing.assert_array_equal(result.raw_outputs, host)
    assert result.accuracy == pytest.approx(np.mean(np.argmax(host.reshape(10, -1), 1) == digits.y_test[:10]))
    ref = tvmq.qemu.run(out, x, board="mps2-an386", progress=False)
    np.testing.assert_array_equal(result.raw_outputs, ref.raw_outputs)
    assert abs(result.total - ref.instructions) <= AGREE
    assert [s["name"] for s in result.steps] == [s["name"] for s in ref.steps]
    for ours, theirs in zip(result.steps, ref.steps, strict=True):
        assert abs(ours["count"] - theirs["instructions"]) <= AGREE, ours["name"]


def test_cli_profile_on_mps2_an386_prints_the_table_and_agrees_with_qemu_run(digits_int8, digits, tmp_path, capsys):
    out = tvmq.build(digits_int8, target="c -mcpu=cortex-m4", name="digits").export(tmp_path / "digits")
    report = tmp_path / "profile.json"
    assert main(["profile", str(out), "--board", "mps2-an386", "--samples", "8", "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "instructions" in table and "us @ 25 MHz" in table and "total (run call)" in table
    assert "conv2d_1" in table and "%" in table and "accuracy on the device over the 8 samples" in table
    data = json.loads(report.read_text())
    assert data["samples"] == 8 and data["unit"] == "instructions" and data["board"] == "mps2-an386"
    ref = tvmq.qemu.run(out, digits.x_test[:8].astype(np.float32), board="mps2-an386", progress=False)
    assert abs(data["total"] - ref.instructions) <= AGREE
    for ours, theirs in zip(data["steps"], ref.steps, strict=True):
        assert abs(ours["count"] - theirs["instructions"]) <= AGREE
        assert ours["share"] == pytest.approx(ours["count"] / data["total"])
        assert ours["us"] == pytest.approx(ours["count"] / 25e6 * 1e6)


def test_a_model_the_board_does_not_run_is_refused(fake_dir, tmp_path):
    other = write_fake_artifact(tmp_path / "other", name="other")
    b = get_board("mps2-an386")
    elf = build_firmware(fake_dir, b, "-O2", tmp_path / "build", protocol=True)
    with start_qemu("qemu-system-arm", elf, b, tmp_path) as transport:
        info = DeviceLink(transport, b.name).hello(15)
        with pytest.raises(DeviceError, match="runs model 'fake'.*not 'other'.*tvmq deploy"):
            check_device(info, load_artifact(other), "mps2-an386", "board mps2-an386 on QEMU")


def test_a_device_process_that_dies_is_reported_with_its_output():
    script = "echo booting; echo 'qemu: fatal: oops' >&2; exit 3"
    said = r"(?s)the process exited \(status 3\).*fatal: oops"  # on sending HELLO or on reading its answer
    with ProcessTransport(["sh", "-c", script], "fake QEMU") as t, pytest.raises(DeviceError, match=said):
        DeviceLink(t, "mps2-an386").hello(5)


@pytest.mark.parametrize(("board", "mcpu"), [("mps2-an385", "cortex-m3"), ("mps2-an500", "cortex-m7"),
                                             ("mps2-an505", "cortex-m33")])  # fmt: skip
def test_protocol_firmware_on_the_other_qemu_boards(board, mcpu, tmp_path):
    fake = write_fake_artifact(tmp_path / "fake", mcpu=mcpu)
    result = profile(fake, board, inputs=X_INT8[:3], progress=False)
    np.testing.assert_array_equal(result.raw_outputs, expected_raw(X_INT8[:3]))
    ref = tvmq.qemu.run(fake, X_INT8[:3], board=board, progress=False)
    assert abs(result.total - ref.instructions) <= AGREE
    for ours, theirs in zip(result.steps, ref.steps, strict=True):
        assert abs(ours["count"] - theirs["instructions"]) <= AGREE
