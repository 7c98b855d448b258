"""`tvmq profile --port`: the hardware path (pyserial on a serial port) against a fake board on a pty.

The fake board (tests/fake_board.py, its own process) replays recorded sessions (tests/data/sessions): one
recorded from the bare-metal QEMU firmware, one synthetic in the Zephyr application's shape for nucleo_f746zg
(no board is attached here). It checks that the host sends exactly the recorded frames, so these tests also pin
the protocol's bytes. Bad input: a corrupted frame, a board that never answers, a board running another model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from device_fixtures import expected_raw, write_fake_artifact

from tvmq.cli import main
from tvmq.device.profile import profile
from tvmq.errors import DeviceError

HERE = Path(__file__).resolve().parent
SESSIONS = HERE / "data" / "sessions"
X_SENT = np.random.default_rng(0).integers(-128, 128, size=(3, 8, 8, 1)).astype(np.int8)  # what profile sends


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return write_fake_artifact(tmp_path_factory.mktemp("replay") / "fake")


@pytest.fixture
def board(request):
    """Start the fake board on a pty: ``board(session, *options)`` returns its device path."""
    procs = []

    def start(session: str, *options: str) -> str:
        proc = subprocess.Popen([sys.executable, str(HERE / "fake_board.py"), str(SESSIONS / session), *options],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(proc)
        return proc.stdout.readline().strip()

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        err = proc.stderr.read()
        assert "host sent" not in err, err  # the host must send the recorded frames


def test_recorded_qemu_session_replays_through_the_serial_path(fake_dir, board):
    port = board("mps2-an386_fake.log")
    result = profile(fake_dir, "mps2-an386", port=port, samples=3, progress=False)
    assert result.link == f"serial port {port} at 115200 baud"
    assert result.unit == "instructions" and result.firmware.startswith("tvmq bare-metal")
    np.testing.assert_array_equal(result.raw_outputs, expected_raw(X_SENT))
    assert all(s["count"] is not None and s["count"] > 0 for s in result.steps)


def test_hardware_board_session_prints_cycles_and_writes_json(fake_dir, board, tmp_path, capsys):
    port = board("nucleo_f746zg_fake.log")
    report = tmp_path / "out" / "nucleo.json"
    argv = ["profile", str(fake_dir), "--board", "nucleo_f746zg", "--port", port, "--no-flash", "--samples", "3",
            "--json", str(report)]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "cycles" in table and "us @ 216 MHz" in table and "DWT" in table
    data = json.loads(report.read_text())
    assert (data["board"], data["unit"], data["clock_hz"], data["samples"]) == ("nucleo_f746zg", "cycles",
                                                                                216_000_000, 3)  # fmt: skip
    assert data["total"] == 9_124 and [s["count"] for s in data["steps"]] == [2_301, 6_411, 96]
    assert data["steps"][1]["us"] == pytest.approx(6_411 / 216)
    assert data["steps"][0]["share"] == pytest.approx(2_301 / 9_124)


def test_a_corrupted_frame_fails_the_run_and_writes_nothing(fake_dir, board, tmp_path, capsys):
    port = board("nucleo_f746zg_fake.log", "--corrupt", "3")  # the second RESULT frame
    report = tmp_path / "nucleo.json"
    argv = ["profile", str(fake_dir), "--board", "nucleo_f746zg", "--port", port, "--no-flash", "--samples", "3",
            "--json", str(report)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "corrupted frame" in err and "checksum mismatch" in err and port in err and "nucleo_f746zg" in err
    assert not report.exists() and not list(tmp_path.iterdir())


def test_a_board_that_never_answers_times_out_naming_port_and_board(fake_dir, board):
    port = board("nucleo_f746zg_fake.log", "--silent")
    with pytest.raises(DeviceError, match=rf"no answer from board nucleo_f746zg on serial port {port} .*within 2 s"):
        profile(fake_dir, "nucleo_f746zg", port=port, flash=False, samples=3, hello_timeout=2, progress=False)


def test_a_board_running_another_model_is_refused(tmp_path, board):
    other = write_fake_artifact(tmp_path / "other", name="other")
    port = board("nucleo_f746zg_fake.log")
    with pytest.raises(DeviceError, match="runs model 'fake'.*not 'other'"):
        profile(other, "nucleo_f746zg", port=port, flash=False, samples=3, progress=False)


def test_a_port_that_does_not_exist_is_named(fake_dir):
    with pytest.raises(DeviceError, match="cannot open serial port /dev/ttyNOPE for board nucleo_f746zg"):
        profile(fake_dir, "nucleo_f746zg", port="/dev/ttyNOPE", flash=False, samples=3, progress=False)


def test_record_writes_the_session_even_when_it_fails(fake_dir, board, tmp_path):
    port = board("nucleo_f746zg_fake.log", "--corrupt", "2")
    log = tmp_path / "session.log"
    with pytest.raises(DeviceError, match="checksum"):
        profile(fake_dir, "nucleo_f746zg", port=port, flash=False, samples=3, progress=False, record=log)
    lines = log.read_text().splitlines()
    assert lines[0] == "# tvmq device session: model fake, board nucleo_f746zg"
    frames = [line for line in lines[1:] if "@tvmq:" in line]  # the boot banner may be flushed at open
    assert [line[:8] for line in frames] == ["> @tvmq:", "< @tvmq:", "> @tvmq:", "< @tvmq:"]  # ends at the bad one
    assert lines[-1] == frames[-1]
    recorded = (SESSIONS / "nucleo_f746zg_fake.log").read_text().splitlines()
    assert lines[-1] != recorded[6] and len(lines[-1]) == len(recorded[6])  # one digit changed in transit
