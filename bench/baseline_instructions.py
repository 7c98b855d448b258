"""Baseline: instructions per MAC of every conv/dense layer of the example models, tvmq vs a plain C loop nest.

Why: a later tuning issue must beat today's default schedules; this records where they stand on Cortex-M4 (QEMU
mps2-an386), beside portable reference-style C kernels (bench/plain_c/ref_kernels.h) compiled with the same flags
and run on the same layers, the same weights and the same activations. Before any number is reported, the plain-C
outputs of every layer are checked to equal tvmq's, byte for byte, and tvmq's device outputs its host outputs.

Run: ``.venv/bin/python bench/baseline_instructions.py`` (``--help`` for options). Writes JSON (default
``bench/results/baseline_m4.json``) and a bar chart next to it, and prints a table. QEMU counts instructions, not
cycles.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from plain_c_artifact import pack, unpack, write_plain_c_artifact
from ref_layers import WEIGHTED_OPS, RefLayer, capture_activations, ref_layers
from tqdm.auto import tqdm

import tvmq
import tvmq.device as device

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "baseline_m4.json"
MODELS = ("digits", "basicmotions")


@dataclass
class ModelRun:
    """Everything measured and checked for one example model."""

    name: str
    layers: list[RefLayer]
    tvmq_steps: dict[str, dict[str, Any]]  # conv/dense steps of the tvmq run, by name
    plain_steps: dict[str, dict[str, Any]]
    tvmq_instructions: int  # the whole inference, for context
    verification: dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write (the PNG goes beside it)")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="example models to measure")
    p.add_argument("--samples", type=int, default=10, help="test samples per model (median per step)")
    p.add_argument("--board", default=device.DEFAULT_BOARD, help="QEMU board")
    p.add_argument("--opt", default="-O2", choices=device.OPT_LEVELS, help="gcc optimisation level")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def measure_model(name: str, args: argparse.Namespace, work: Path) -> ModelRun:
    """Quantize, build and run tvmq on the board; capture layer activations; run and check the plain-C baseline."""
    ex = tvmq.examples.load(name)
    qmodel = tvmq.quantize(ex.model_path, ex.calibration, progress=False)
    mcpu = device.get_board(args.board).core.name
    x = qmodel.quantize_input(ex.x_test[: args.samples])
    artifact = tvmq.build(qmodel, target=f"c -mcpu={mcpu}", name=name)
    tvmq_result = device.run(artifact, x, board=args.board, opt=args.opt, progress=not args.no_progress)
    layers = ref_layers(qmodel)
    acts = capture_activations(qmodel, x, [layer.name for layer in layers])
    plain_dir = write_plain_c_artifact(layers, work / f"plain_{name}", f"plain_{name}", mcpu)
    plain_in = pack([acts[layer.name][0] for layer in layers])
    plain_result = device.run(plain_dir, plain_in, board=args.board, opt=args.opt, progress=not args.no_progress)
    verification = verify(qmodel, x, tvmq_result, plain_result, layers, acts)
    return ModelRun(
        name=name, layers=layers,
        tvmq_steps={s["name"]: s for s in tvmq_result.steps if s["op"] in WEIGHTED_OPS},
        plain_steps={s["name"]: s for s in plain_result.steps},
        tvmq_instructions=tvmq_result.instructions, verification=verification,
    )  # fmt: skip


def verify(qmodel, x: np.ndarray, tvmq_result, plain_result, layers: list[RefLayer], acts: dict) -> dict[str, Any]:
    """Fail unless tvmq's device output equals its host output and every plain-C layer output equals tvmq's."""
    if not np.array_equal(tvmq_result.raw_outputs, qmodel.run_int(x)):
        raise AssertionError("tvmq's device outputs differ from QuantizedModel.run_int: the tvmq numbers are void")
    got = unpack(plain_result.raw_outputs, layers)
    per_layer = {}
    for layer in layers:
        want = acts[layer.name][1].reshape(got[layer.name].shape)
        wrong = int(np.count_nonzero(got[layer.name] != want))
        if wrong:
            raise AssertionError(f"plain C {layer.name}: {wrong}/{want.size} output codes differ from tvmq's; "
                                 f"the baseline computes something else")  # fmt: skip
        per_layer[layer.name] = {"output_codes_compared": int(want.size), "distinct_codes": len(np.unique(want))}
    return {
        "samples": len(x),
        "tvmq_device_equals_host_run_int": True,
        "plain_c_layer_outputs_equal_tvmq": True,
        "how": "each plain-C layer ran on the device on tvmq's own int8 input of that layer (captured on the host "
        "by running tvmq's program step by step, whose final output equals run_int); its int8 output was "
        "compared code by code with tvmq's output of the same layer, for every sample",
        "layers": per_layer,
    }


def layer_rows(run: ModelRun) -> list[dict[str, Any]]:
    """One JSON row per conv/dense layer: geometry, MACs, both instruction counts, ratio."""
    rows = []
    for layer in run.layers:
        t, p = run.tvmq_steps[layer.name], run.plain_steps[layer.name]
        rows.append({
            "name": layer.name, "op": layer.op, **layer.shape_info(), "macs": layer.macs,
            "tvmq_instructions": t["instructions"], "tvmq_instructions_per_mac": _ipm(t["instructions"], layer.macs),
            "plain_c_instructions": p["instructions"],
            "plain_c_instructions_per_mac": _ipm(p["instructions"], layer.macs),
            "ratio_tvmq_over_plain_c": _ratio(t["instructions"], p["instructions"]),
        })  # fmt: skip
    return rows


def _ipm(instructions: int | None, macs: int) -> float | None:
    return None if instructions is None or macs <= 0 else round(instructions / macs, 4)


def _ratio(a: int | None, b: int | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over a model's conv/dense layers."""
    macs = sum(r["macs"] for r in rows)
    t = sum(r["tvmq_instructions"] or 0 for r in rows)
    p = sum(r["plain_c_instructions"] or 0 for r in rows)
    return {"macs": macs, "tvmq_instructions": t, "tvmq_instructions_per_mac": _ipm(t, macs),
            "plain_c_instructions": p, "plain_c_instructions_per_mac": _ipm(p, macs),
            "ratio_tvmq_over_plain_c": _ratio(t, p)}  # fmt: skip


def gcc_version() -> str:
    try:
        out = subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def git_revision() -> str:
    """The commit the numbers were taken at, ``+dirty`` when the work tree had changes (they may move the counts)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def report(runs: list[ModelRun], args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """The JSON document."""
    models = {}
    for run in runs:
        rows = layer_rows(run)
        models[run.name] = {"layers": rows, "totals": totals(rows),
                            "tvmq_instructions_per_inference": run.tvmq_instructions,
                            "verification": run.verification}  # fmt: skip
    board = device.get_board(args.board)
    return {
        "benchmark": "baseline_instructions",
        "what": "instructions per MAC of each conv/dense layer: tvmq default schedules vs plain C reference-style "
        "loop nests (bench/plain_c/ref_kernels.h), same gcc flags, same board, same weights and activations",
        "board": board.name, "core": board.core.name, "cflags": [*board.core.cflags, args.opt], "opt": args.opt,
        "samples": args.samples, "statistic": "median over samples of each step's instructions",
        "tvmq_version": tvmq.__version__, "git": git_revision(), "gcc": gcc_version(), "note": device.NOTE,
        "ratio": "tvmq instructions / plain-C instructions (below 1: tvmq executes fewer)",
        "runtime_seconds": round(seconds, 1), "models": models,
    }  # fmt: skip


def table(doc: dict[str, Any]) -> str:
    """A readable per-layer table of both models."""
    head = f"{'model':<14}{'layer':<12}{'op':<8}{'MACs':>9}{'tvmq instr':>12}{'instr/MAC':>10}" \
           f"{'plain C instr':>15}{'instr/MAC':>10}{'ratio':>8}"  # fmt: skip
    lines = [f"{doc['board']} ({doc['core']}, {doc['opt']}), median of {doc['samples']} samples", head,
             "-" * len(head)]  # fmt: skip
    for model, m in doc["models"].items():
        lines += [_row(model, r) for r in [*m["layers"], {"name": "total", "op": "", **m["totals"]}]]
    lines.append("(" + doc["note"].split(":")[0] + ")")
    return "\n".join(lines)


def _row(model: str, r: dict[str, Any]) -> str:
    counts = f"{r['macs']:>9,}{r['tvmq_instructions']:>12,}{_fmt(r['tvmq_instructions_per_mac'])}"
    plain = f"{r['plain_c_instructions']:>15,}{_fmt(r['plain_c_instructions_per_mac'])}"
    return f"{model:<14}{r['name']:<12}{r['op']:<8}{counts}{plain}{_fmt(r['ratio_tvmq_over_plain_c'], 8)}"


def _fmt(v: float | None, width: int = 10) -> str:
    return f"{'-' if v is None else f'{v:.2f}':>{width}}"


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Grouped bars of instructions/MAC per layer, tvmq vs plain C."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, tv, pc = [], [], []
    for model, m in doc["models"].items():
        for r in m["layers"]:
            labels.append(f"{model}\n{r['name']}")
            tv.append(r["tvmq_instructions_per_mac"] or 0.0)
            pc.append(r["plain_c_instructions_per_mac"] or 0.0)
    pos = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.5))
    bars_t = ax.bar(pos - 0.2, tv, 0.4, label="tvmq (default schedules)")
    bars_p = ax.bar(pos + 0.2, pc, 0.4, label="plain C (reference-style loops)")
    ax.bar_label(bars_t, fmt="%.1f", fontsize=7)
    ax.bar_label(bars_p, fmt="%.1f", fontsize=7)
    ax.set_xticks(pos, labels, fontsize=8)
    ax.set_ylabel("instructions per MAC")
    where = f"{doc['board']} ({doc['core']}, gcc {doc['opt']})"
    ax.set_title(f"conv/dense layers on {where}; QEMU instructions, not cycles", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    runs = []
    with tempfile.TemporaryDirectory(prefix="tvmq-bench-") as tmp:
        for name in tqdm(args.models, desc="models", unit="model", disable=args.no_progress):
            runs.append(measure_model(name, args, Path(tmp)))
    doc = report(runs, args, time.monotonic() - started)
    write_report(doc, args.out, plot, table)
    return 0


def write_report(doc: dict, out: Path, plot, table) -> Path:
    """The benchmarks' ending: the JSON at ``out``, ``plot``'s PNG beside it, ``table`` printed; the PNG's path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    png = plot(doc, out.with_suffix(".png"))
    print(table(doc))
    print(f"wrote {out} and {png} in {doc['runtime_seconds']} s")
    return png


if __name__ == "__main__":
    sys.exit(main())
