"""Build, flash and run ``zephyr_project/`` (tvmq's Zephyr model runner) through west.

Why west and not CMake directly: west is how Zephyr users build and flash (``west build``, ``west flash`` with the
board's own runner: J-Link, ST-Link, pyOCD, ...), and ``west build -t run`` starts the board's QEMU with its
console on stdio. tvmq only assembles the commands, checks the set-up first (with the commands that fix it) and
refuses a model that cannot fit before anything is flashed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeviceError, TargetError, ToolchainError
from .boards import FIRMWARE_DIR

KiB, MiB = 1024, 1024 * 1024
APP_DIR = Path(__file__).resolve().parents[2] / "zephyr_project"

SETUP_COMMANDS = """\
  pip install west
  west init ~/zephyrproject && cd ~/zephyrproject && west update
  west zephyr-export && pip install -r ~/zephyrproject/zephyr/scripts/requirements.txt
  export ZEPHYR_BASE=~/zephyrproject/zephyr
  # a toolchain: the Zephyr SDK (cd ~/zephyrproject/zephyr && west sdk install), or Debian's:
  sudo apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi
  export ZEPHYR_TOOLCHAIN_VARIANT=gnuarmemb GNUARMEMB_TOOLCHAIN_PATH=/usr"""


@dataclass(frozen=True)
class ZephyrBoard:
    """A Zephyr board tvmq knows: what ``west build -b`` gets, its core, memory (from its DTS) and clock."""

    name: str
    west_board: str
    core: str
    flash_bytes: int
    ram_bytes: int
    clock_hz: int  # nominal CPU clock; the device's INFO frame reports the timer's real rate
    qemu: bool
    description: str


ZEPHYR_BOARDS: dict[str, ZephyrBoard] = {
    b.name: b
    for b in (
        ZephyrBoard("qemu_cortex_m3", "qemu_cortex_m3", "cortex-m3", 256 * KiB, 64 * KiB, 12_000_000, True,
                    "QEMU lm3s6965evb (TI Stellaris LM3S6965), Cortex-M3"),
        ZephyrBoard("mps2/an385", "mps2/an385", "cortex-m3", 4 * MiB, 4 * MiB, 25_000_000, True,
                    "QEMU Arm MPS2 AN385, Cortex-M3"),
        ZephyrBoard("mps2/an521", "mps2/an521/cpu0", "cortex-m33", 4 * MiB, 4 * MiB, 25_000_000, True,
                    "QEMU Arm MPS2 AN521, Cortex-M33 (secure cpu0)"),
        ZephyrBoard("nucleo_f746zg", "nucleo_f746zg", "cortex-m7", 1 * MiB, 256 * KiB, 216_000_000, False,
                    "ST Nucleo-144 STM32F746ZG, Cortex-M7 (ST-LINK: west flash; console /dev/ttyACM0)"),
        ZephyrBoard("nrf52840dk/nrf52840", "nrf52840dk/nrf52840", "cortex-m4", 1 * MiB, 256 * KiB, 64_000_000,
                    False, "Nordic nRF52840 DK, Cortex-M4F (J-Link: west flash; console /dev/ttyACM0)"),
        ZephyrBoard("disco_l475_iot1", "disco_l475_iot1", "cortex-m4", 1 * MiB, 96 * KiB, 80_000_000, False,
                    "ST B-L475E-IOT01A, STM32L475, Cortex-M4F (ST-LINK: west flash; console /dev/ttyACM0)"),
    )
}  # fmt: skip
_ALIASES = {"mps2/an521/cpu0": "mps2/an521", "nrf52840dk_nrf52840": "nrf52840dk/nrf52840"}
# Which cores' code each core executes (an ISA and FPU superset); as tvmq.device.boards for QEMU boards.
_RUNS_ON = {
    "cortex-m3": {"cortex-m0", "cortex-m0plus", "cortex-m3"},
    "cortex-m4": {"cortex-m0", "cortex-m0plus", "cortex-m3", "cortex-m4"},
    "cortex-m7": {"cortex-m0", "cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7"},
    "cortex-m33": {"cortex-m0", "cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m33"},
}


def zephyr_board(name: str) -> ZephyrBoard | None:
    """The known board ``name`` (or alias), None for a board tvmq passes through to west unchanged."""
    return ZEPHYR_BOARDS.get(_ALIASES.get(name, name))


def west_board(name: str) -> str:
    b = zephyr_board(name)
    return b.west_board if b else name


def check_core_for(core: str, board: ZephyrBoard) -> None:
    """Refuse a model compiled for a core the board's core cannot execute (e.g. cortex-m4 on qemu_cortex_m3)."""
    if core not in _RUNS_ON.get(board.core, {board.core}):
        raise TargetError(f"the artifact is compiled for {core}, which board {board.name} ({board.core}) cannot "
                          f"execute; re-export it: tvmq build --target 'c -mcpu={board.core}'")  # fmt: skip


@dataclass(frozen=True)
class ZephyrEnv:
    """A usable west and Zephyr tree; ``env`` is the process environment to run west with."""

    west: str
    zephyr_base: Path
    env: dict[str, str]


def zephyr_env(zephyr_base: str | os.PathLike | None = None) -> ZephyrEnv:
    """Find west and the Zephyr tree (``zephyr_base`` or $ZEPHYR_BASE); a missing piece says how to set it up."""
    west = shutil.which("west")
    base_text = str(zephyr_base) if zephyr_base is not None else os.environ.get("ZEPHYR_BASE")
    missing = []
    if west is None:
        missing.append("`west` is not on PATH")
    if not base_text:
        missing.append("ZEPHYR_BASE is not set (and no --zephyr-base was given)")
    elif not (Path(base_text).expanduser() / "cmake" / "modules").is_dir():
        missing.append(f"ZEPHYR_BASE {base_text} is not a Zephyr tree (no cmake/modules in it)")
    if missing:
        raise ToolchainError(f"Zephyr is not set up: {'; '.join(missing)}. Set it up with:\n{SETUP_COMMANDS}\n"
                             f"then rerun (or pass --zephyr-base PATH).")  # fmt: skip
    base = Path(base_text).expanduser().resolve()  # type: ignore[arg-type]
    return ZephyrEnv(west, base, {**os.environ, "ZEPHYR_BASE": str(base)})  # type: ignore[arg-type]


def app_dir(app: str | os.PathLike | None = None) -> Path:
    """The Zephyr application to build: ``app`` or tvmq's ``zephyr_project`` next to the package."""
    path = Path(app) if app is not None else APP_DIR
    if not (path / "CMakeLists.txt").is_file():
        raise DeviceError(f"the Zephyr application {path} is missing (no CMakeLists.txt); pass --app pointing "
                          f"to tvmq's zephyr_project directory (it lives in the tvmq source tree)")  # fmt: skip
    return path.resolve()


def build_command(ze: ZephyrEnv, board: str, app: Path, build_dir: Path, model_dir: Path, *,
                  cmake_only: bool = False, step_timing: bool = True,
                  extra_args: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """``west build -b B -d BUILD -p auto APP -- -DTVMQ_MODEL_DIR=... -DTVMQ_FIRMWARE_DIR=...``."""
    cmd = [ze.west, "build", "-b", west_board(board), "-d", str(build_dir), "-p", "auto"]
    if cmake_only:
        cmd.append("--cmake-only")
    cmd += [str(app), "--", f"-DTVMQ_MODEL_DIR={model_dir}", f"-DTVMQ_FIRMWARE_DIR={FIRMWARE_DIR}"]
    if not step_timing:
        cmd.append("-DCONFIG_TVMQ_STEP_TIMING=n")
    return [*cmd, *extra_args]


def run_west(ze: ZephyrEnv, args: Sequence[str], what: str, timeout: float = 1800) -> str:
    """Run west to completion; a failure shows west's last lines (the compiler's or the runner's error)."""
    try:
        proc = subprocess.run(list(args), env=ze.env, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ToolchainError(f"{args[0]} was not found while {what}; set up Zephyr:\n{SETUP_COMMANDS}") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"west did not finish within {timeout:.0f} s while {what}") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()][-30:]
        raise DeviceError(f"west failed (exit status {proc.returncode}) while {what}:\n"
                          + "\n".join("  " + line for line in lines))  # fmt: skip
    return proc.stdout


_KCONFIG_KIB = re.compile(r"^CONFIG_(FLASH_SIZE|SRAM_SIZE)=(\d+)\s*$", re.MULTILINE)


def dts_memory(build_dir: Path) -> tuple[int | None, int | None]:
    """Flash and RAM bytes of the configured board, from the build's .config (Zephyr fills CONFIG_FLASH_SIZE and
    CONFIG_SRAM_SIZE, in KiB, from the devicetree's chosen zephyr,flash and zephyr,sram nodes)."""
    config = build_dir / "zephyr" / ".config"
    if not config.is_file():
        return None, None
    found = {m.group(1): int(m.group(2)) * KiB for m in _KCONFIG_KIB.finditer(config.read_text(errors="replace"))}
    return found.get("FLASH_SIZE") or None, found.get("SRAM_SIZE") or None


@dataclass(frozen=True)
class Deployment:
    """A built (and maybe flashed) Zephyr runner for one model and board."""

    board: str
    build_dir: Path
    elf: Path
    flashed: bool
    env: ZephyrEnv


def default_build_dir(model_dir: Path, board: str) -> Path:
    return model_dir / f"zephyr-{board.replace('/', '_')}"


def deploy(model_dir: str | os.PathLike, board: str, *, zephyr_base: str | os.PathLike | None = None,
           build_dir: str | os.PathLike | None = None, flash: bool = False, step_timing: bool = True,
           app: str | os.PathLike | None = None) -> Deployment:  # fmt: skip
    """``west build`` zephyr_project for ``board`` with the exported model in ``model_dir`` (then ``west flash``).

    Checks, in order: the model's core against a known board's core and its size against the board's flash and
    RAM (tvmq's table); west and ZEPHYR_BASE; after ``west build --cmake-only``, the size against the devicetree's
    sizes of the configured board (also for boards tvmq does not know); then builds and, with ``flash``, flashes.
    """
    from .artifact import load_artifact
    from .footprint import ZEPHYR_RESERVE, check_fits

    info = load_artifact(model_dir)
    known = zephyr_board(board)
    if known is not None:
        check_core_for(info.core.name, known)
        check_fits(info, board, known.flash_bytes, known.ram_bytes, reserve=ZEPHYR_RESERVE,
                   source="sizes of the board's devicetree in tvmq's board table")  # fmt: skip
    ze = zephyr_env(zephyr_base)
    app_path = app_dir(app)
    model = info.directory.resolve()
    build = Path(build_dir).resolve() if build_dir is not None else default_build_dir(model, board)
    where = f"for board {board} (model {info.name!r}, build directory {build})"
    run_west(ze, build_command(ze, board, app_path, build, model, cmake_only=True, step_timing=step_timing),
             what=f"configuring zephyr_project {where}")  # fmt: skip
    flash_bytes, ram_bytes = dts_memory(build)
    check_fits(info, board, flash_bytes, ram_bytes, reserve=ZEPHYR_RESERVE,
               source=f"devicetree sizes from {build / 'zephyr' / '.config'}")  # fmt: skip
    run_west(ze, build_command(ze, board, app_path, build, model, step_timing=step_timing),
             what=f"building zephyr_project {where}")  # fmt: skip
    if flash:
        run_west(ze, [ze.west, "flash", "-d", str(build)], what=f"flashing board {board} (west flash; is the "
                 f"board connected and its debug probe's tools installed?)")  # fmt: skip
    return Deployment(board, build, build / "zephyr" / "zephyr.elf", flash, ze)


def qemu_run_command(dep: Deployment) -> list[str]:
    """``west build -d BUILD -t run``: Zephyr's QEMU target with the console on stdio (``-serial mon:stdio``)."""
    return [dep.env.west, "build", "-d", str(dep.build_dir), "-t", "run"]
