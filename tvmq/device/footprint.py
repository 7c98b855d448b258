"""Will the model fit the board? Flash and RAM the model needs, against what the board has, before flashing.

Why before: a model that does not fit fails late and obscurely (a linker "region overflowed" deep in a Zephyr
build, or a board that faults at boot); tvmq knows the model's weights, code and arena, so it refuses early and
says by how much. The model is measured by compiling its ``model.c`` for its core with arm-none-eabi-gcc (exact
sections: code + weights in flash, arena and other state in RAM); without that compiler, from metadata.json's
``weights_bytes`` and ``arena_bytes`` (a lower bound: code not counted).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeviceError, ToolchainError
from .artifact import ArtifactInfo
from .memory import section_sizes
from .toolchain import GCC, SIZE, run_tool

# What the runner adds around the model: Zephyr kernel, console, protocol code; its main stack (prj.conf) and
# kernel RAM. The bare-metal QEMU firmware adds startup code, newlib-nano and its stack.
ZEPHYR_RESERVE = (48 * 1024, 8 * 1024 + 8 * 1024)  # flash, RAM
BARE_METAL_RESERVE = (24 * 1024, 4 * 1024 + 2 * 1024)


@dataclass(frozen=True)
class Footprint:
    """Bytes the model needs: flash (code + constants) and RAM (arena and other state), how they were found."""

    flash: int
    ram: int
    method: str  # "compiled" or "metadata"

    def describe(self) -> str:
        return f"model {self.flash:,} B flash and {self.ram:,} B RAM ({self.method})"


def runner_buffers(info: ArtifactInfo) -> int:
    """RAM of the protocol runner's per-model buffers: the INFER payload, int8 input and output, step counts."""
    return (4 + 4 * info.input.bytes) + info.input.bytes + info.output.bytes + 24 * (len(info.steps) + 1)


def model_footprint(info: ArtifactInfo) -> Footprint:
    """Sections of ``model.c`` compiled for the artifact's core, or metadata.json's numbers without a compiler."""
    gcc = shutil.which(GCC)
    if gcc is not None and shutil.which(SIZE) is not None:
        with tempfile.TemporaryDirectory(prefix="tvmq-footprint-") as tmp:
            obj = Path(tmp) / "model.o"
            try:
                run_tool([gcc, *info.core.cflags, "-O2", "-std=c11", "-ffunction-sections", "-fdata-sections",
                          f"-I{info.directory}", "-c", info.directory / "model.c", "-o", obj],
                         what=f"compiling {info.directory / 'model.c'} to measure it")  # fmt: skip
                sections = section_sizes(obj)
            except (ToolchainError, DeviceError):
                sections = {}
        if sections:
            flash = sum(s for n, (s, _) in sections.items() if n.startswith((".text", ".rodata", ".data")))
            ram = sum(s for n, (s, _) in sections.items() if n.startswith((".bss", ".data", "COMMON")))
            return Footprint(flash, ram, "compiled")
    meta = info.metadata
    return Footprint(int(meta.get("weights_bytes") or 0), int(meta.get("arena_bytes") or 0), "metadata")


def check_fits(info: ArtifactInfo, board: str, flash_bytes: int | None, ram_bytes: int | None, *,
               reserve: tuple[int, int], source: str) -> Footprint:  # fmt: skip
    """Refuse (DeviceError with the numbers) a model that cannot fit ``board``; sizes None are not checked."""
    fp = model_footprint(info)
    need_flash = fp.flash + reserve[0]
    need_ram = fp.ram + runner_buffers(info) + reserve[1]
    problems = []
    if flash_bytes is not None and need_flash > flash_bytes:
        problems.append(f"flash: needs {need_flash:,} B (model {fp.flash:,} + runner ~{reserve[0]:,}), the board "
                        f"has {flash_bytes:,} B ({need_flash - flash_bytes:,} B over)")  # fmt: skip
    if ram_bytes is not None and need_ram > ram_bytes:
        problems.append(f"RAM: needs {need_ram:,} B (model {fp.ram:,} + I/O buffers {runner_buffers(info):,} + "
                        f"runner and stack ~{reserve[1]:,}), the board has {ram_bytes:,} B "
                        f"({need_ram - ram_bytes:,} B over)")  # fmt: skip
    if problems:
        raise DeviceError(f"model {info.name!r} does not fit board {board} ({source}); nothing was flashed:\n  "
                          + "\n  ".join(problems) + "\nquantize to fewer bits, use a smaller model or a larger "
                          "board")  # fmt: skip
    return fp
