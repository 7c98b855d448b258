"""Zephyr deployment: the artifact's CMake fragment in a plain CMake project, west's command lines, bad set-ups.

Zephyr itself cannot be installed on this project's machines, so:
- the CMake fragment (tvmq.cmake, what zephyr_project includes) is consumed by a plain CMake project that
  cross-compiles the model for Cortex-M4 with arm-none-eabi-gcc into tvmq's protocol firmware, run on QEMU;
- `tvmq deploy` runs against a stand-in `west` script that records its arguments (and writes the .config a real
  `west build --cmake-only` writes), to check the commands and the refusals before flashing;
- the tests that need a real Zephyr workspace are marked and skipped without west and ZEPHYR_BASE.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from device_fixtures import write_fake_artifact

import tvmq
from tvmq.cli import main
from tvmq.device.artifact import load_artifact
from tvmq.device.boards import FIRMWARE_DIR, get_board
from tvmq.device.link import DeviceLink
from tvmq.device.profile import profile
from tvmq.device.protocol_firmware import runner_config, start_qemu
from tvmq.device.zephyr import APP_DIR, check_core_for, deploy, west_board, zephyr_board
from tvmq.errors import ConfigError, DeviceError, TargetError, ToolchainError

HAVE_ZEPHYR = shutil.which("west") is not None and bool(os.environ.get("ZEPHYR_BASE"))
needs_zephyr = pytest.mark.skipif(not HAVE_ZEPHYR, reason="needs a Zephyr workspace (west on PATH and ZEPHYR_BASE; "
                                  "see README 'Deploy with Zephyr'): not installed on this machine")  # fmt: skip

_TOOLCHAIN = """\
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_C_FLAGS_INIT "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -O2 --specs=nano.specs")
"""

# A plain CMake application: the model library comes only from the artifact's fragment; the rest is tvmq's
# bare-metal protocol firmware for QEMU mps2-an386.
_PROJECT = """\
cmake_minimum_required(VERSION 3.20)
project(tvmq_plain_cmake C)
include(${TVMQ_MODEL_DIR}/tvmq.cmake)
target_compile_options(tvmq_digits PRIVATE -include ${FW}/tvmq_profile.h)
add_executable(app.elf ${FW}/protocol_main.c ${FW}/tvmq_runner.c ${FW}/tvmq_protocol.c ${FW}/startup.c)
target_include_directories(app.elf PRIVATE ${CONFIG_DIR} ${FW})
target_link_libraries(app.elf PRIVATE tvmq_digits m)
target_link_options(app.elf PRIVATE --specs=rdimon.specs -nostartfiles -L${FW} -T${FW}/mps2-an386.ld
                    -Wl,--gc-sections)
"""


def test_cmake_fragment_cross_compiles_the_model_for_cortex_m4(digits_int8, digits, tmp_path):
    model = tvmq.build(digits_int8, target="c -mcpu=cortex-m4", name="digits").export(tmp_path / "digits")
    project, build, config = tmp_path / "project", tmp_path / "build", tmp_path / "config"
    for d in (project, config):
        d.mkdir()
    (project / "CMakeLists.txt").write_text(_PROJECT)
    (project / "cortex-m4.cmake").write_text(_TOOLCHAIN)
    b = get_board("mps2-an386")
    (config / "tvmq_runner_config.h").write_text(runner_config(load_artifact(model), b))
    subprocess.run(["cmake", "-S", project, "-B", build, "-G", "Ninja", f"-DCMAKE_TOOLCHAIN_FILE={project}/"
                    "cortex-m4.cmake", f"-DTVMQ_MODEL_DIR={model}", f"-DFW={FIRMWARE_DIR}",
                    f"-DCONFIG_DIR={config}"], check=True, capture_output=True)  # fmt: skip
    subprocess.run(["cmake", "--build", build], check=True, capture_output=True)
    library = build / "libtvmq_digits.a"
    sections = subprocess.run(["arm-none-eabi-objdump", "-h", library], capture_output=True, text=True).stdout
    assert "elf32-littlearm" in sections and ".rodata.tvmq_weights" in sections and ".bss.tvmq_arena" in sections
    x = digits.x_test[:4].astype(np.float32)
    with start_qemu("qemu-system-arm", build / "app.elf", b, tmp_path) as transport:
        link = DeviceLink(transport, b.name)
        assert link.hello(15).model == "digits"
        outputs = np.stack([link.infer(sample, 30).output for sample in x])
    np.testing.assert_array_equal(outputs.reshape(4, -1), digits_int8.run_int(digits_int8.quantize_input(x)))


# -- tvmq deploy with a stand-in west ---------------------------------------------------------------------------------
_WEST = """\
#!/bin/sh
# Stand-in for west: records its arguments; `build --cmake-only` writes the .config a real configure writes.
echo "$*" >> "$WEST_LOG"
echo "ZEPHYR_BASE=$ZEPHYR_BASE" >> "$WEST_LOG"
dir=""; cmake_only=0; prev=""
for a in "$@"; do
  [ "$prev" = "-d" ] && dir="$a"
  [ "$a" = "--cmake-only" ] && cmake_only=1
  prev="$a"
done
if [ "$cmake_only" = 1 ]; then
  mkdir -p "$dir/zephyr"
  printf 'CONFIG_FLASH_SIZE=%s\\nCONFIG_SRAM_SIZE=%s\\n' "${STUB_FLASH_KIB:-1024}" "${STUB_SRAM_KIB:-256}" \\
    > "$dir/zephyr/.config"
fi
exit 0
"""


@pytest.fixture
def west(tmp_path, monkeypatch):
    """A west stand-in on PATH and a directory that looks like a Zephyr tree; returns the argument log."""
    bin_dir, base = tmp_path / "bin", tmp_path / "zephyr"
    bin_dir.mkdir()
    (base / "cmake" / "modules").mkdir(parents=True)
    script = bin_dir / "west"
    script.write_text(_WEST)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "west.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ZEPHYR_BASE", str(base))
    monkeypatch.setenv("WEST_LOG", str(log))
    return log


def _calls(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if not line.startswith("ZEPHYR_BASE=")]


def test_deploy_runs_west_build_with_the_model_and_flashes(west, tmp_path):
    fake = write_fake_artifact(tmp_path / "fake", mcpu="cortex-m33")
    dep = deploy(fake, "mps2/an521")
    build = fake.resolve() / "zephyr-mps2_an521"
    args = f"-b mps2/an521/cpu0 -d {build} -p auto"
    tail = f"{APP_DIR} -- -DTVMQ_MODEL_DIR={fake.resolve()} -DTVMQ_FIRMWARE_DIR={FIRMWARE_DIR}"
    assert _calls(west) == [f"build {args} --cmake-only {tail}", f"build {args} {tail}"]
    assert f"ZEPHYR_BASE={tmp_path / 'zephyr'}" in west.read_text()
    assert (dep.build_dir, dep.elf, dep.flashed) == (build, build / "zephyr" / "zephyr.elf", False)
    m4 = write_fake_artifact(tmp_path / "m4")
    west.unlink()
    assert main(["deploy", str(m4), "--board", "nucleo_f746zg", "--flash", "--no-step-timing"]) == 0
    calls = _calls(west)
    assert calls[-1] == f"flash -d {m4.resolve() / 'zephyr-nucleo_f746zg'}" and len(calls) == 3
    assert all(c.endswith("-DCONFIG_TVMQ_STEP_TIMING=n") for c in calls[:2])


def test_unknown_boards_go_to_west_unchanged_and_are_checked_against_their_devicetree(west, tmp_path, monkeypatch):
    assert west_board("my_vendor_board/soc") == "my_vendor_board/soc" and zephyr_board("my_vendor_board") is None
    fake = write_fake_artifact(tmp_path / "fake")
    monkeypatch.setenv("STUB_FLASH_KIB", "16")  # the configured board's DTS: 16 KiB flash, 4 KiB RAM
    monkeypatch.setenv("STUB_SRAM_KIB", "4")
    with pytest.raises(DeviceError) as err:
        deploy(fake, "my_vendor_board", flash=True)
    text = str(err.value)
    assert "does not fit board my_vendor_board (devicetree sizes from" in text and "nothing was flashed" in text
    assert "the board has 16,384 B" in text and "the board has 4,096 B" in text
    assert len(_calls(west)) == 1 and "--cmake-only" in _calls(west)[0]  # configured, never built nor flashed


def _big_artifact(directory: Path, flash_bytes: int, ram_bytes: int) -> Path:
    """The fake model plus a large weight array and arena: what a too-large model looks like to the linker."""
    out = write_fake_artifact(directory)
    extra = (f"\nstatic const int8_t tvmq_big_weights[{flash_bytes}] __attribute__((section(\".rodata.tvmq_weights\"), "
             f"used)) = {{1}};\nstatic int8_t tvmq_big_arena[{ram_bytes}] __attribute__((section(\".bss.tvmq_arena\"), "
             f"used));\n")  # fmt: skip
    (out / "model.c").write_text((out / "model.c").read_text() + extra)
    return out


def test_a_model_too_large_for_the_board_is_refused_before_anything_runs(west, tmp_path):
    big = _big_artifact(tmp_path / "big", 1536 * 1024, 300 * 1024)
    with pytest.raises(DeviceError) as err:
        deploy(big, "nucleo_f746zg", flash=True)
    text = str(err.value)
    assert "model 'fake' does not fit board nucleo_f746zg" in text and "nothing was flashed" in text
    assert "flash: needs 1,6" in text and "the board has 1,048,576 B" in text
    assert "RAM: needs 3" in text and "the board has 262,144 B" in text
    assert _calls(west) == []  # refused from tvmq's board table, before west ran
    with pytest.raises(DeviceError, match="does not fit board mps2-an386"):  # bare-metal QEMU: 4 MiB each
        profile(_big_artifact(tmp_path / "huge", 5 * 1024 * 1024, 1024), "mps2-an386", progress=False)


def test_no_west_or_zephyr_base_says_how_to_set_up(tmp_path, monkeypatch, capsys):
    fake = write_fake_artifact(tmp_path / "fake")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("ZEPHYR_BASE", raising=False)
    with pytest.raises(ToolchainError) as err:
        deploy(fake, "nucleo_f746zg")
    text = str(err.value)
    for needed in ("`west` is not on PATH", "ZEPHYR_BASE is not set", "pip install west", "west init", "west update",
                   "ZEPHYR_TOOLCHAIN_VARIANT=gnuarmemb", "gcc-arm-none-eabi", "--zephyr-base"):  # fmt: skip
        assert needed in text
    assert main(["deploy", str(fake), "--board", "nucleo_f746zg", "--zephyr-base", str(tmp_path)]) == 2
    assert f"ZEPHYR_BASE {tmp_path} is not a Zephyr tree" in capsys.readouterr().err


def test_board_and_core_checks():
    assert west_board("mps2/an521") == "mps2/an521/cpu0" and zephyr_board("nrf52840dk/nrf52840").core == "cortex-m4"
    with pytest.raises(TargetError, match="compiled for cortex-m4, which board qemu_cortex_m3"):
        check_core_for("cortex-m4", zephyr_board("qemu_cortex_m3"))
    check_core_for("cortex-m4", zephyr_board("nucleo_f746zg"))  # M7 runs M4 code


def test_a_hardware_board_needs_a_port(tmp_path):
    fake = write_fake_artifact(tmp_path / "fake")
    with pytest.raises(ConfigError, match="nucleo_f746zg is a hardware board: pass its serial port"):
        profile(fake, "nucleo_f746zg", progress=False)


def test_zephyr_project_is_a_zephyr_application_consuming_the_fragment():
    cmake = (APP_DIR / "CMakeLists.txt").read_text()
    assert "find_package(Zephyr REQUIRED" in cmake and "include(${TVMQ_MODEL_DIR}/tvmq.cmake)" in cmake
    assert "zephyr_interface" in cmake and "tvmq_profile.h" in cmake and "tvmq_runner.c" in cmake
    assert 'source "Kconfig.zephyr"' in (APP_DIR / "Kconfig").read_text()
    assert "CONFIG_CONSOLE_GETCHAR=y" in (APP_DIR / "prj.conf").read_text()
    main_c = (APP_DIR / "src" / "main.c").read_text()
    for api in ("timing_counter_get", "timing_cycles_get", "timing_cycles_to_ns", "console_getchar"):
        assert api in main_c
    sample = (APP_DIR / "sample.yaml").read_text()
    for board in ("qemu_cortex_m3", "mps2/an385", "mps2/an521/cpu0", "nucleo_f746zg", "nrf52840dk/nrf52840",
                  "disco_l475_iot1"):  # fmt: skip
        assert f"- {board}\n" in sample


# -- with a real Zephyr workspace -------------------------------------------------------------------------------------
@needs_zephyr
def test_zephyr_qemu_cortex_m3_profile_matches_run_int(digits_int8, digits, tmp_path):
    model = tvmq.build(digits_int8, target="c -mcpu=cortex-m3", name="digits").export(tmp_path / "digits")
    x = digits.x_test[:5].astype(np.float32)
    result = profile(model, "qemu_cortex_m3", inputs=x, labels=digits.y_test[:5], progress=False)
    np.testing.assert_array_equal(result.raw_outputs, digits_int8.run_int(digits_int8.quantize_input(x)))
    assert result.unit == "cycles" and result.firmware.startswith("tvmq Zephyr")
    assert all(s["count"] is not None for s in result.steps)


@needs_zephyr
@pytest.mark.parametrize("board", ["nucleo_f746zg", "nrf52840dk/nrf52840", "disco_l475_iot1", "mps2/an521"])
def test_zephyr_project_builds_for_the_boards(digits_int8, tmp_path, board):
    core = zephyr_board(board).core
    model = tvmq.build(digits_int8, target=f"c -mcpu={core}", name="digits").export(tmp_path / "digits")
    assert deploy(model, board, build_dir=tmp_path / "build").elf.is_file()
