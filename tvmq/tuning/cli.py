"""``tvmq tune MODEL ... --board B --trials N --database DIR``: the command-line face of ``tvmq.tune``.

Kept here (registered by ``tvmq.cli``) so the tuning command's options live beside the code they drive.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..target import CORES, parse_target
from .measure import CODE_GROWTH, CODE_SLACK


def register_tune_command(sub: Any, add_model_options: Callable[[argparse.ArgumentParser], None],
                          load: Callable[[argparse.Namespace], Any], boards: list[str],
                          default_target: str) -> None:  # fmt: skip
    """Add ``tvmq tune`` to the CLI's sub-commands; the model is read as ``tvmq build`` reads it (``load``)."""
    t = sub.add_parser("tune", help="auto-tune the model's kernels on QEMU (MetaSchedule + XGBoost) into a database")
    add_model_options(t)
    t.add_argument("--target", default=default_target, help=f'e.g. "c -mcpu=cortex-m4" (cores: {", ".join(CORES)})')
    t.add_argument("--board", default="mps2-an386", choices=boards, help="QEMU board the candidates run on")
    t.add_argument("--trials", type=int, default=None,
                   help="measured candidates the database should hold for this model's kernels (default: 40 per "
                        "tunable kernel); re-running continues from what is there")  # fmt: skip
    t.add_argument("--database", required=True, help="directory of the tuning database (created; resumable)")
    t.add_argument("--code-growth", type=float, default=CODE_GROWTH,
                   help=f"refuse candidates with more than this times the default schedule's kernel code "
                        f"(+{CODE_SLACK} B); default {CODE_GROWTH:g}")  # fmt: skip
    t.add_argument("--jobs", type=int, default=2, help="compilers and QEMU processes at a time (default 2)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--json", help="write the report (per kernel: default and tuned instructions) as JSON")
    t.set_defaults(func=lambda args: cmd_tune(args, load))


def cmd_tune(args: argparse.Namespace, load: Callable[[argparse.Namespace], Any]) -> int:
    """Tune a model's kernels and print default vs tuned instructions per kernel."""
    from .tune import tune

    parse_target(args.target)  # a typo in the target fails before calibration
    qmodel = load(args)
    report = tune(qmodel, args.target, board=args.board, trials=args.trials, database=args.database,
                  progress=not args.no_progress, jobs=args.jobs, code_growth=args.code_growth)  # fmt: skip
    print(report.table())
    print(f"database: {report.database} (apply with `tvmq build ... --database {report.database}`)")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0
