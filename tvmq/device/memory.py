"""Flash and RAM of a built firmware, split into what the model needs and what the harness/runtime adds.

Why both ``arm-none-eabi-size -A`` and the map file: ``size`` gives the output sections (what occupies flash and
RAM), the map gives the input sections and the object each came from, which is the only way to tell the model's
code (``model.o``) from the startup code, the harness and newlib, and to count weights and arena exactly.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import DeviceError
from .boards import BOARDS, Board, get_board
from .build import MAP_NAME, MODEL_OBJECT
from .toolchain import SIZE, find_tool, run_tool

WEIGHTS_SECTION, ARENA_SECTION, STACK_SECTION = ".rodata.tvmq_weights", ".bss.tvmq_arena", ".stack"
_NON_ALLOC = (".debug", ".comment", ".ARM.attributes", ".stab", ".gnu.attributes", ".note", ".gnu_debug")
_SECTION_LINE = re.compile(r"^(\S+)\s+(\d+)\s+(\d+)\s*$")
_MAP_ONE_LINE = re.compile(r"^ (\S+)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
_MAP_NAME_ONLY = re.compile(r"^ (\.\S+)$")
_MAP_CONTINUATION = re.compile(r"^\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
_MAP_OUTPUT = re.compile(r"^(\.\S+)")


@dataclass(frozen=True)
class MemoryReport:
    """Bytes of flash (code + constants + .data image) and SRAM (.data, .bss, arena, stack) of one firmware."""

    board: str
    flash_bytes: int
    weights_bytes: int  # .rodata.tvmq_weights input sections
    model_code_bytes: int  # model.o's code and non-weight constants
    runtime_bytes: int  # everything else in flash: startup, harness, newlib, libgcc
    sram_bytes: int
    arena_bytes: int  # .bss.tvmq_arena input sections
    stack_bytes: int  # the fixed .stack region
    other_sram_bytes: int  # .data, .bss of the harness and newlib
    elf_path: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A small human-readable table."""
        rows = [
            ("flash", self.flash_bytes, ""),
            ("  weights", self.weights_bytes, ".rodata.tvmq_weights"),
            ("  model code", self.model_code_bytes, "model.o .text/.rodata"),
            ("  runtime/startup", self.runtime_bytes, "startup, harness, newlib"),
            ("SRAM", self.sram_bytes, ""),
            ("  arena", self.arena_bytes, ".bss.tvmq_arena"),
            ("  stack", self.stack_bytes, "fixed .stack region"),
            ("  other", self.other_sram_bytes, ".data/.bss of harness, newlib"),
        ]
        lines = [f"memory of {Path(self.elf_path).name} on {self.board} (bytes)"]
        lines += [f"{label:<18}{value:>10,}  {note}".rstrip() for label, value, note in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def section_sizes(elf: Path) -> dict[str, tuple[int, int]]:
    """Output sections of ``elf`` as {name: (size, address)} from ``arm-none-eabi-size -A``."""
    out = run_tool([find_tool(SIZE), "-A", "-d", elf], what=f"reading the section sizes of {elf}")
    sections = {}
    for line in out.splitlines():
        m = _SECTION_LINE.match(line.strip())
        if m and m.group(1) != "Total":
            sections[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return sections


def input_sections(map_path: Path) -> list[tuple[str, str, int, str]]:
    """Input sections placed by the linker as (output section, input section, size, object file)."""
    try:
        text = map_path.read_text(errors="replace")
    except OSError as err:
        raise DeviceError(f"cannot read the linker map file {map_path}: {err}; rebuild the firmware") from None
    marker = text.find("Linker script and memory map")
    if marker < 0:
        raise DeviceError(f"{map_path} is not a GNU ld map file (no 'Linker script and memory map'); rebuild")
    found, output, pending = [], "", None
    for line in text[marker:].splitlines():
        if pending is not None:
            m = _MAP_CONTINUATION.match(line)
            if m:
                found.append((output, pending, int(m.group(2), 16), m.group(3).strip()))
            pending = None
            continue
        if (m := _MAP_ONE_LINE.match(line)) is not None:
            found.append((output, m.group(1), int(m.group(3), 16), m.group(4).strip()))
        elif (m := _MAP_NAME_ONLY.match(line)) is not None:
            pending = m.group(1)
        elif (m := _MAP_OUTPUT.match(line)) is not None:
            output = m.group(1)
    return found


def _board_for(sections: dict[str, tuple[int, int]], board: str | Board | None) -> Board:
    if board is not None:
        return get_board(board)
    text = sections.get(".text")
    for b in BOARDS.values():
        if text and b.flash_origin <= text[1] < b.flash_origin + b.flash_size:
            return b
    raise DeviceError("cannot tell which board the ELF was linked for (no .text in a known flash range); "
                      "pass board=")  # fmt: skip


def memory_report(
    elf_path: str | Path, map_path: str | Path | None = None, board: str | Board | None = None
) -> MemoryReport:
    """Memory report of a firmware built by ``build_firmware`` (map file defaults to ``app.map`` next to it)."""
    elf = Path(elf_path)
    if not elf.is_file():
        raise DeviceError(f"ELF file {elf} does not exist; build it with tvmq.device.build_firmware")
    sections = section_sizes(elf)
    b = _board_for(sections, board)

    def in_range(addr: int, origin: int, size: int) -> bool:
        return origin <= addr < origin + size

    alloc = {n: sa for n, sa in sections.items() if sa[0] > 0 and not n.startswith(_NON_ALLOC)}
    flash_out = {n for n, (_, a) in alloc.items() if in_range(a, b.flash_origin, b.flash_size)}
    ram_out = {n for n, (_, a) in alloc.items() if in_range(a, b.ram_origin, b.ram_size)}
    data_image = sum(alloc[n][0] for n in ram_out if n == ".data" or n.startswith(".data."))
    flash = sum(alloc[n][0] for n in flash_out) + data_image
    sram = sum(alloc[n][0] for n in ram_out)

    placed = input_sections(Path(map_path) if map_path is not None else elf.parent / MAP_NAME)
    weights = sum(size for _, name, size, _ in placed if name.startswith(WEIGHTS_SECTION))
    arena = sum(size for _, name, size, _ in placed if name.startswith(ARENA_SECTION))
    model = sum(
        size
        for out, name, size, obj in placed
        if out in flash_out and Path(obj).name == MODEL_OBJECT and not name.startswith(WEIGHTS_SECTION)
    )
    stack = alloc.get(STACK_SECTION, (0, 0))[0]
    return MemoryReport(
        board=b.name, flash_bytes=flash, weights_bytes=weights, model_code_bytes=model,
        runtime_bytes=flash - weights - model, sram_bytes=sram, arena_bytes=arena, stack_bytes=stack,
        other_sram_bytes=sram - arena - stack, elf_path=str(elf),
    )  # fmt: skip
