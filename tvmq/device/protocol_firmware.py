"""The bare-metal protocol firmware on QEMU: its per-model configuration and the QEMU command that serves it.

Why stdio: QEMU's ``-serial stdio`` connects the board's UART0 to QEMU's own standard input and output, which the
host holds as pipes. No pty to allocate and no TCP port to pick, so it behaves the same in CI as on a laptop, and
the protocol bytes go through the same ``DeviceLink`` as a board's serial port.
"""

from __future__ import annotations

from pathlib import Path

from .artifact import ArtifactInfo
from .boards import Board
from .build import harness_config
from .transport import ProcessTransport

PROTOCOL_SOURCES = ("protocol_main.c", "tvmq_runner.c", "tvmq_protocol.c")

# UART0 of each QEMU board (QEMU 7.2 hw/arm/mps2.c, mps2-tz.c); the AN505 firmware runs secure: secure alias.
UART0_BASE = {"mps2-an385": 0x4000_4000, "mps2-an386": 0x4000_4000, "mps2-an500": 0x4000_4000,
              "mps2-an505": 0x5020_0000}  # fmt: skip


def runner_config(info: ArtifactInfo, b: Board) -> str:
    """tvmq_runner_config.h for the bare-metal protocol firmware (the Zephyr app's CMakeLists writes its own)."""
    return "\n".join([
        harness_config(info),
        f"#define TVMQ_NUM_STEPS {len(info.steps)}",
        f'#define TVMQ_MODEL_NAME "{info.name}"',
        "#define TVMQ_STEP_MARKS 1",
        f'#define TVMQ_BOARD_NAME "{b.name}"',
        f"#define TVMQ_UART_BASE {UART0_BASE[b.name]:#x}u",
        f"#define TVMQ_SYSCLK_HZ {b.sysclk_hz}u",
        f"#define TVMQ_INSTRUCTIONS_PER_TICK {b.instructions_per_tick}",
        "",
    ])  # fmt: skip


def qemu_command(qemu: str, elf: Path, b: Board) -> list[str]:
    """QEMU with UART0 on stdio, the monitor off, semihosting on (fault reports), instructions counted."""
    return [qemu, "-M", b.machine, "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]  # fmt: skip


def start_qemu(qemu: str, elf: Path, b: Board, run_dir: Path) -> ProcessTransport:
    """Boot the protocol firmware; the returned transport speaks to its UART0."""
    return ProcessTransport(qemu_command(qemu, elf, b), f"QEMU {b.name} (UART0 on stdio)", cwd=run_dir)
