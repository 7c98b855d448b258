"""The QEMU boards tvmq runs firmware on, with the memory maps its linker scripts use.

Why a table and not just ``-M <machine>``: the linker script, the SysTick rate (instructions per tick under
``-icount shift=0``) and which cores' code may run all depend on the board. Maps are QEMU 7.2's (hw/arm/mps2.c,
hw/arm/mps2-tz.c); the AN505 boots in the secure world, so code and data use the secure aliases (bit 28 set).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import TargetError
from ..target import CORES, Core

FIRMWARE_DIR = Path(__file__).parent / "firmware"
DEFAULT_BOARD = "mps2-an386"

MiB = 1024 * 1024


@dataclass(frozen=True)
class Board:
    """One QEMU machine: its core, where code ("flash") and data (RAM) live, and its system clock."""

    name: str
    machine: str  # qemu-system-arm -M
    core: Core
    flash_origin: int
    flash_size: int
    ram_origin: int
    ram_size: int
    sysclk_hz: int  # SysTick's processor clock (CSR.CLKSOURCE=1)
    secure: bool  # boots in the TrustZone secure world
    description: str

    @property
    def instructions_per_tick(self) -> int:
        """With ``-icount shift=0`` one instruction takes 1 ns of virtual time, so one SysTick tick is fixed."""
        return 1_000_000_000 // self.sysclk_hz

    @property
    def linker_script(self) -> Path:
        return FIRMWARE_DIR / f"{self.name}.ld"


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("mps2-an385", "mps2-an385", CORES["cortex-m3"], 0x0000_0000, 4 * MiB, 0x2000_0000, 4 * MiB,
              25_000_000, False, "Cortex-M3; code in ZBT SSRAM1, data in ZBT SSRAM2/3"),
        Board("mps2-an386", "mps2-an386", CORES["cortex-m4"], 0x0000_0000, 4 * MiB, 0x2000_0000, 4 * MiB,
              25_000_000, False, "Cortex-M4 with FPU and DSP; code in ZBT SSRAM1, data in ZBT SSRAM2/3"),
        Board("mps2-an500", "mps2-an500", CORES["cortex-m7"], 0x0000_0000, 4 * MiB, 0x2000_0000, 4 * MiB,
              25_000_000, False, "Cortex-M7 with double-precision FPU; code in ZBT SSRAM1, data in ZBT SSRAM2/3"),
        Board("mps2-an505", "mps2-an505", CORES["cortex-m33"], 0x1000_0000, 4 * MiB, 0x3800_0000, 4 * MiB,
              20_000_000, True, "Cortex-M33 (SSE-200 IoT Kit), secure world; secure aliases of ZBT SSRAM1 and 2/3"),
    )
}  # fmt: skip

# Which cores' code a board's core executes: the ISA (and FPU instructions) must be a subset of the board's.
_RUNS_ON: dict[str, frozenset[str]] = {
    "cortex-m3": frozenset({"cortex-m0", "cortex-m0plus", "cortex-m3"}),
    "cortex-m4": frozenset({"cortex-m0", "cortex-m0plus", "cortex-m3", "cortex-m4"}),
    "cortex-m7": frozenset({"cortex-m0", "cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7"}),
    "cortex-m33": frozenset({"cortex-m0", "cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m33"}),
}


def _board_list() -> str:
    return ", ".join(f"{b.name} ({b.core.name})" for b in BOARDS.values())


def get_board(board: str | Board) -> Board:
    """The board named ``board`` (e.g. ``"mps2-an386"``); an unknown name lists the boards."""
    if isinstance(board, Board):
        return board
    if not isinstance(board, str) or board not in BOARDS:
        raise TargetError(f"board {board!r} is not supported; choose one of: {_board_list()}")
    return BOARDS[board]


def core_runs_on(core: Core | str, board: str | Board) -> bool:
    """True when code built for ``core`` executes on ``board``'s core (same core, or an ISA subset of it)."""
    name = core.name if isinstance(core, Core) else core
    return name in _RUNS_ON[get_board(board).core.name]


def board_for_core(core: Core | str) -> Board | None:
    """The board whose core is exactly ``core``, if any (what to suggest after a mismatch)."""
    name = core.name if isinstance(core, Core) else core
    return next((b for b in BOARDS.values() if b.core.name == name), None)


def check_core(core: Core | str, board: str | Board) -> None:
    """Refuse to run code for ``core`` on a board whose core lacks its instructions (e.g. cortex-m4 on an385)."""
    b = get_board(board)
    name = core.name if isinstance(core, Core) else core
    if core_runs_on(name, b):
        return
    exact = board_for_core(name)
    hint = f"use board={exact.name!r}" if exact else f"no tvmq board has a {name}; boards: {_board_list()}"
    raise TargetError(
        f"the artifact is compiled for {name}, which board {b.name} ({b.core.name}) cannot execute "
        f"(its instruction set or FPU is missing there); {hint}, or re-export for {b.core.name}"
    )
