"""Find and call the Cortex-M tools (arm-none-eabi-gcc/-size, qemu-system-arm) with tvmq errors, not tracebacks.

Why a module: every missing tool must say the same thing (the apt-get line), and every failed call must show the
tool's own first error lines instead of a ``CalledProcessError``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..errors import ToolchainError

GCC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
NM = "arm-none-eabi-nm"
QEMU = "qemu-system-arm"
APT_COMMAND = "sudo apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
_INSTALL_HINT = f"install the Cortex-M toolchain and QEMU with `{APT_COMMAND}` (or run `make toolchain`)"


def find_tool(name: str) -> str:
    """Absolute path of ``name`` on PATH, or a ToolchainError telling how to install it."""
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"{name} was not found on PATH; {_INSTALL_HINT}")
    return path


def check_toolchain() -> dict[str, str]:
    """All tools a device run needs, plus newlib's semihosting specs; fails on the first missing piece."""
    tools = {name: find_tool(name) for name in (GCC, SIZE, QEMU)}
    specs = run_tool([tools[GCC], "-print-file-name=rdimon.specs"], what="asking arm-none-eabi-gcc for newlib").strip()
    if not Path(specs).is_file():
        raise ToolchainError(f"{GCC} has no newlib semihosting specs (rdimon.specs); the package "
                             f"libnewlib-arm-none-eabi is missing: {_INSTALL_HINT}")  # fmt: skip
    return tools


def run_tool(args: Sequence[str | Path], what: str, cwd: str | Path | None = None, timeout: float = 300) -> str:
    """Run a tool to completion and return its stdout; failures become ToolchainError naming ``what``."""
    argv = [str(a) for a in args]
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ToolchainError(f"{argv[0]} was not found while {what}; {_INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s while {what}") from None
    except OSError as err:
        raise ToolchainError(f"{argv[0]} could not be started while {what}: {err}") from None
    if proc.returncode != 0:
        raise ToolchainError(f"{Path(argv[0]).name} failed (exit status {proc.returncode}) while {what}:\n"
                             f"{first_errors(proc.stderr or proc.stdout)}")  # fmt: skip
    return proc.stdout


def function_sizes(path: str | Path, nm: str | None = None) -> dict[str, int]:
    """Bytes of machine code of every function defined in an object or ELF file (``nm -S``; local, global and
    weak text symbols). ``nm``: the tool's path when already found (e.g. in a worker process)."""
    out = run_tool([nm or find_tool(NM), "-S", "--defined-only", path], what=f"listing the functions of {path}")
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


def first_errors(output: str, limit: int = 12) -> str:
    """The compiler's first error lines (with their context), else the first lines: what a user reads first."""
    lines = [line for line in output.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if "error" in line.lower()), 0)
    start = max(0, first - 1)
    shown = lines[start : start + limit]
    more = len(lines) - start - len(shown)
    return "\n".join(["  " + line for line in shown] + ([f"  ... ({more} more lines)"] if more > 0 else []))
