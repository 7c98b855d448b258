"""``tvmq deploy`` and ``tvmq profile``: the command-line face of tvmq.device.zephyr and tvmq.device.profile.

Kept out of tvmq/cli.py so the device commands live with the device code; cli.py only calls
``register_device_commands``.
"""

from __future__ import annotations

import argparse
import sys

from .boards import BOARDS
from .zephyr import ZEPHYR_BOARDS

_BOARD_HELP = (f"bare-metal QEMU: {', '.join(BOARDS)}; Zephyr QEMU: "
               f"{', '.join(b for b, z in ZEPHYR_BOARDS.items() if z.qemu)}; hardware: "
               f"{', '.join(b for b, z in ZEPHYR_BOARDS.items() if not z.qemu)}; any other Zephyr board name is "
               f"passed to west as it is")  # fmt: skip


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_deploy(args: argparse.Namespace) -> int:
    """Build zephyr_project with the exported model for a board (west build), optionally flash it."""
    from .zephyr import deploy

    _status(f"west build for {args.board} (model {args.artifact})")
    dep = deploy(args.artifact, args.board, zephyr_base=args.zephyr_base, build_dir=args.build_dir,
                 flash=args.flash, step_timing=not args.no_step_timing, app=args.app)  # fmt: skip
    print(f"built {dep.elf}" + (f" and flashed {args.board}" if dep.flashed else ""))
    if not dep.flashed:
        print(f"flash: west flash -d {dep.build_dir}   (or: tvmq deploy {args.artifact} --board {args.board} --flash)")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """Run samples on the board through the tvmq protocol; print the per-layer latency table."""
    from .profile import profile

    result = profile(args.artifact, args.board, port=args.port, baud=args.baud, samples=args.samples,
                     inputs=args.input, labels=args.labels, zephyr_base=args.zephyr_base,
                     build_dir=args.build_dir, flash=not args.no_flash, step_timing=not args.no_step_timing,
                     app=args.app, hello_timeout=args.timeout, record=args.record, json_path=args.json)  # fmt: skip
    print(result.table())
    if args.json:
        _status(f"wrote {args.json}")
    return 0


def _zephyr_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", help="directory written by `tvmq build -o DIR` (Artifact.export)")
    p.add_argument("--board", required=True, help=_BOARD_HELP)
    p.add_argument("--zephyr-base", help="Zephyr tree (default: $ZEPHYR_BASE)")
    p.add_argument("--build-dir", help="west build directory (default: DIR/zephyr-<board>)")
    p.add_argument("--app", help="the Zephyr application (default: tvmq's zephyr_project)")
    p.add_argument("--no-step-timing", action="store_true",
                   help="build without the per-layer hooks (production-like: only the total is timed)")  # fmt: skip


def register_device_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``deploy`` and ``profile`` to the ``tvmq`` sub-command parser."""
    d = sub.add_parser("deploy", help="build zephyr_project with an exported model for a Zephyr board (west build)")
    _zephyr_options(d)
    d.add_argument("--flash", action="store_true", help="west flash the board after building")
    d.set_defaults(func=cmd_deploy)

    p = sub.add_parser("profile", help="per-layer latency on a QEMU or hardware board through the tvmq protocol")
    _zephyr_options(p)
    p.add_argument("--port", help="the board's serial port, e.g. /dev/ttyACM0 (hardware boards)")
    p.add_argument("--baud", type=int, default=115200, help="serial baud rate (default 115200)")
    p.add_argument("--samples", type=int, default=50, help="samples to run (default 50)")
    p.add_argument("--input", help=".npy of int8 codes or float32 values (default: the example's test split "
                                   "when the model is a tvmq example, else random int8 codes)")  # fmt: skip
    p.add_argument("--labels", help=".npy of class indices for --input: accuracy on the device")
    p.add_argument("--no-flash", action="store_true",
                   help="the board already runs this model (tvmq deploy --flash): only open --port")  # fmt: skip
    p.add_argument("--timeout", type=float, help="seconds to wait for the device's first answer")
    p.add_argument("--record", help="write the session's protocol lines to this file (also when it fails)")
    p.add_argument("--json", help="write the results as JSON (only when every sample succeeded)")
    p.set_defaults(func=cmd_profile)
