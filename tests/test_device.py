"""tvmq.device end to end on QEMU: a fake artifact with known outputs, work and sizes, on every supported board.

Needs arm-none-eabi-gcc, newlib and qemu-system-arm (``make toolchain``); the whole file takes well under a minute.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from device_fixtures import (
    ARENA_BYTES,
    STEPS,
    WEIGHT_BYTES,
    FakeArtifact,
    dequantize,
    expected_raw,
    quantize,
    write_fake_artifact,
)

import tvmq.device as device
from tvmq.errors import CalibrationDataError, ConfigError, DeviceError, TargetError, ToolchainError

N = 50
RNG = np.random.default_rng(7)
X_INT8 = RNG.integers(-128, 128, size=(N, 8, 8, 1)).astype(np.int8)
X_FLOAT = RNG.uniform(-8.5, 8.5, size=(20, 8, 8, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return write_fake_artifact(tmp_path_factory.mktemp("fake") / "artifact")


@pytest.fixture(scope="module")
def an386_run(fake_dir):
    return device.run(fake_dir, X_INT8, board="mps2-an386", progress=False)


def test_int8_batch_matches_numpy_in_one_boot(an386_run):
    r = an386_run
    assert r.raw_outputs.dtype == np.int8 and r.raw_outputs.shape == (N, 10)
    np.testing.assert_array_equal(r.raw_outputs, expected_raw(X_INT8))
    assert r.outputs.dtype == np.float32
    np.testing.assert_array_equal(r.outputs, dequantize(r.raw_outputs))  # the device's own dequantize_output
    assert (r.board, r.core, r.opt) == ("mps2-an386", "cortex-m4", "-O2")
    assert "instructions, not cycles" in r.note
    assert json.loads(json.dumps(r.to_json()))["instructions"] == r.instructions


def test_instruction_counts_and_steps(an386_run):
    r = an386_run
    assert r.instructions > 0 and r.instructions_per_sample.shape == (N,)
    assert np.all(r.instructions_per_sample > 0)
    assert [s["name"] for s in r.steps] == [s["name"] for s in STEPS]
    total_steps = sum(s["instructions"] for s in r.steps)
    assert 0.95 * r.instructions <= total_steps <= r.instructions  # only call glue lies outside the steps
    conv, dense = r.steps[0], r.steps[1]  # same kernel, 3x the MACs: instructions per MAC agree to ~1%
    assert conv["instructions_per_mac"] == pytest.approx(dense["instructions_per_mac"], rel=0.01)
    assert dense["instructions"] == pytest.approx(3 * conv["instructions"], rel=0.01)
    assert "instr/MAC" in r.table()


def test_counts_are_deterministic_across_boots(fake_dir, an386_run):
    again = device.run(fake_dir, X_INT8, board="mps2-an386", progress=False)
    np.testing.assert_array_equal(again.instructions_per_sample, an386_run.instructions_per_sample)
    assert [s["instructions"] for s in again.steps] == [s["instructions"] for s in an386_run.steps]


def test_memory_report_counts_the_fake_exactly(an386_run):
    m = an386_run.memory
    assert (m.weights_bytes, m.arena_bytes, m.stack_bytes) == (WEIGHT_BYTES, ARENA_BYTES, device.DEFAULT_STACK_BYTES)
    assert 0 < m.model_code_bytes < 2048 and m.runtime_bytes > 0
    assert m.flash_bytes == m.weights_bytes + m.model_code_bytes + m.runtime_bytes
    assert m.sram_bytes == m.arena_bytes + m.stack_bytes + m.other_sram_bytes and m.other_sram_bytes > 0
    assert m.to_json()["weights_bytes"] == WEIGHT_BYTES
    assert re.search(r"weights\s+1,040", m.table())
    assert 0 < an386_run.stack_peak_bytes < device.DEFAULT_STACK_BYTES


def test_float_inputs_are_quantized_on_device_from_an_artifact_object():
    r = device.run(FakeArtifact(), X_FLOAT, opt="-Os", progress=True)
    np.testing.assert_array_equal(r.raw_outputs, expected_raw(quantize(X_FLOAT)))
    np.testing.assert_array_equal(r.outputs, dequantize(expected_raw(quantize(X_FLOAT))))
    assert r.opt == "-Os" and r.elf_path is None


@pytest.mark.parametrize(("board", "mcpu"), [("mps2-an385", "cortex-m3"), ("mps2-an500", "cortex-m7"),
                                             ("mps2-an505", "cortex-m33")])  # fmt: skip
def test_other_boards(board, mcpu, tmp_path):
    r = device.run(FakeArtifact(mcpu=mcpu), X_INT8[:8], board=board, progress=False, work_dir=tmp_path)
    np.testing.assert_array_equal(r.raw_outputs, expected_raw(X_INT8[:8]))
    assert r.instructions > 0 and r.core == mcpu and r.elf_path is not None and r.elf_path.is_file()
    assert (r.memory.board, r.memory.weights_bytes, r.memory.arena_bytes) == (board, WEIGHT_BYTES, ARENA_BYTES)
    assert device.memory_report(r.elf_path, board=board) == r.memory  # standalone, from the kept ELF and map


def test_single_sample_is_accepted(fake_dir):
    r = device.run(fake_dir, X_INT8[0], progress=False)
    np.testing.assert_array_equal(r.raw_outputs, expected_raw(X_INT8[:1]))


def test_hang_is_stopped_at_the_timeout(tmp_path):
    start = time.monotonic()
    with pytest.raises(DeviceError, match=r"hung on mps2-an386.*within 2 s.*timeout=") as err:
        device.run(FakeArtifact(variant="hang"), X_INT8[:4], timeout=2, progress=False)
    assert time.monotonic() - start < 15  # build (< 2 s) + 2 s limit + kill
    assert "0/4 samples" in str(err.value)


def test_compile_error_shows_the_compiler_output(tmp_path):
    art = write_fake_artifact(tmp_path / "broken", variant="broken")
    with pytest.raises(ToolchainError) as err:
        device.run(art, X_INT8[:2], progress=False)
    text = str(err.value)
    assert "model.c" in text and "error:" in text and "undeclared_variable" in text
    assert "Traceback" not in text


def test_stack_overflow_is_reported(tmp_path):
    with pytest.raises(DeviceError, match=r"stack overflow.*stack_bytes="):
        device.run(FakeArtifact(variant="stack_hog"), X_INT8[:2], stack_bytes=2048, progress=False)


def test_missing_toolchain_says_how_to_install(fake_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match=r"not found on PATH.*apt-get install -y gcc-arm-none-eabi"):
        device.run(fake_dir, X_INT8[:2], progress=False)
    with pytest.raises(ToolchainError, match="apt-get"):
        device.build_firmware(fake_dir, "mps2-an386", "-O2", tmp_path / "build")


def test_core_board_mismatch_is_refused(fake_dir):
    with pytest.raises(TargetError, match=r"cortex-m4.*mps2-an385.*board='mps2-an386'"):
        device.run(fake_dir, X_INT8[:2], board="mps2-an385", progress=False)
    assert device.core_runs_on("cortex-m3", "mps2-an386") and not device.core_runs_on("cortex-m7", "mps2-an505")
    with pytest.raises(TargetError, match="no tvmq board has a cortex-m55"):
        device.check_core("cortex-m55", "mps2-an386")


def test_unknown_board_lists_the_boards(fake_dir):
    with pytest.raises(TargetError, match=r"board 'stm32'.*mps2-an385 \(cortex-m3\).*mps2-an505 \(cortex-m33\)"):
        device.run(fake_dir, X_INT8[:2], board="stm32", progress=False)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (X_INT8.astype(np.uint8), "int8 codes .* or float32 values .* got dtype uint8"),
        (X_INT8.astype(np.int32), "got dtype int32"),
        (X_INT8[:, :, :, 0], r"shape \(50, 8, 8\); expected \(N, 8, 8, 1\)"),
        (np.zeros((3, 8, 8, 2), np.int8), r"shape \(3, 8, 8, 2\)"),
        (np.zeros((0, 8, 8, 1), np.int8), "no samples"),
        (np.full((2, 8, 8, 1), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_inputs(fake_dir, inputs, message):
    with pytest.raises(CalibrationDataError, match=message):
        device.run(fake_dir, inputs, progress=False)


def test_bad_arguments(fake_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"opt '-O3'.*-O2, -Os"):
        device.run(fake_dir, X_INT8[:2], opt="-O3", progress=False)
    with pytest.raises(ConfigError, match="timeout"):
        device.run(fake_dir, X_INT8[:2], timeout=0, progress=False)
    with pytest.raises(ConfigError, match=r"lacks model.h, model.c"):
        (tmp_path / "metadata.json").write_text("{}")
        device.run(tmp_path, X_INT8[:2], progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        device.run(tmp_path / "nowhere", X_INT8[:2], progress=False)


def test_linker_scripts_match_the_board_table():
    for board in device.BOARDS.values():
        text = board.linker_script.read_text()
        flash = re.search(r"FLASH \(rx\) : ORIGIN = (0x[0-9a-fA-F]+), LENGTH = (\d+)M", text)
        ram = re.search(r"RAM \(rwx\) : ORIGIN = (0x[0-9a-fA-F]+), LENGTH = (\d+)M", text)
        assert flash and ram, board.name
        assert (int(flash.group(1), 16), int(flash.group(2)) << 20) == (board.flash_origin, board.flash_size)
        assert (int(ram.group(1), 16), int(ram.group(2)) << 20) == (board.ram_origin, board.ram_size)
