"""Run exported tvmq models on emulated Cortex-M boards (QEMU) and report instructions and memory.

``run(artifact, inputs, board=...)`` builds tvmq's own firmware (startup code, linker script, semihosting harness)
around an exported artifact, runs every sample in one QEMU boot, and returns outputs, instruction counts per
inference and per step, and a flash/RAM report. ``build_firmware`` and ``memory_report`` are the building blocks.

``tvmq.device.profile.profile`` (CLI ``tvmq profile``) runs a model through the tvmq device protocol
(``protocol.py``, ``firmware/tvmq_protocol.c``) on a bare-metal QEMU board, a Zephyr QEMU board or a flashed board
and reports latency per layer; ``tvmq.device.zephyr.deploy`` (``tvmq deploy``) builds ``zephyr_project/``.
"""

from .artifact import ArtifactInfo, load_artifact
from .boards import BOARDS, DEFAULT_BOARD, Board, board_for_core, check_core, core_runs_on, get_board
from .build import DEFAULT_STACK_BYTES, OPT_LEVELS, build_firmware
from .memory import MemoryReport, memory_report
from .qemu import NOTE, DeviceResult, run
from .toolchain import APT_COMMAND, check_toolchain

__all__ = [
    "APT_COMMAND",
    "BOARDS",
    "DEFAULT_BOARD",
    "DEFAULT_STACK_BYTES",
    "NOTE",
    "OPT_LEVELS",
    "ArtifactInfo",
    "Board",
    "DeviceResult",
    "MemoryReport",
    "board_for_core",
    "build_firmware",
    "check_core",
    "check_toolchain",
    "core_runs_on",
    "get_board",
    "load_artifact",
    "memory_report",
    "run",
]
