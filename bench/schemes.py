"""Quantization schemes: uniform vs non-linear codebooks (quantile, kmeans, pow2, apot) on the example models.

Why: a non-linear codebook places its 2^b levels where the values are, so at 4, 3 and 2 bits it should keep more
accuracy than uniform levels; it costs a table look-up per value in the kernels. This measures both sides for every
scheme, at W8..W1 with 8-bit uniform activations (``<scheme> W<b>A8``) and at W/A 4/4, 3/3, 2/2 with the same scheme
for weights and activations (``<scheme> W<b>A<b>``: ``act_scheme`` = ``weight_scheme``, so uniform stays uniform).

Activation storage differs by scheme. Uniform activations below 8 bits are still one int8 per value in the arena
(multiply-shift requantize onto a 2^b-level grid), so A4/A3/A2 uniform saves no arena bytes. Non-uniform activations
(quantile, kmeans, pow2, apot) make every conv/dense output end in LUT-requantize and store it as packed b-bit codes
(1/2/4-bit slots, where the channel count packs into whole bytes; never the model output, which stays int8); the next
layer decodes them through a 2^b-entry int8 table. The model input then gets a codebook too, but stays int8 levels.
So arena bytes and instructions at W/A b/b differ between uniform and the codebook schemes. Measured:

- accuracy of the integer-only host model (``QuantizedModel.predict``) on the whole test split;
- flash, weight and arena bytes and instructions per inference from one QEMU run (Cortex-M4, ``mps2-an386``) on a
  few test samples, whose raw outputs are checked against the host's ``run_int`` (``bit_exact``);
- the decode cost: instructions of each scheme minus those of W8A8 uniform (plain int8 weights and activations,
  nothing decoded) and minus those of uniform at the same W and A bits (the same packed weight storage, decoded
  through a table too; at W/A b/b this difference also holds the activation LUT-requantize and table decode).

Run: ``.venv/bin/python bench/schemes.py`` (``--quick`` for 4/3/2 bits only, ``--help`` for options). Writes JSON
(default ``bench/results/schemes.json``) and two PNG plots next to it, and prints a table. QEMU counts instructions,
not cycles.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from baseline_instructions import gcc_version, git_revision
from tqdm.auto import tqdm

import tvmq
import tvmq.device as device
from tvmq.config import WEIGHT_SCHEMES

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "schemes.json"
MODELS = ("digits", "basicmotions")
ALL_BITS = (8, 7, 6, 5, 4, 3, 2, 1)
QUICK_BITS = (4, 3, 2)
LOW_ACT_BITS = (4, 3, 2)  # W/A b/b rows (activations in the weights' scheme)
NONLINEAR = ("quantile", "kmeans")  # the schemes expected to beat uniform at low bits
WEIGHTED_OPS = ("conv2d", "conv1d", "dense")
MARKERS = {"uniform": "o", "quantile": "s", "kmeans": "D", "pow2": "^", "apot": "v"}
COLORS = {s: f"C{i}" for i, s in enumerate(WEIGHT_SCHEMES)}  # the same colour per scheme in both plots


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    scheme: str  # weight scheme
    weight_bits: int
    act_bits: int
    act_scheme: str = "uniform"

    @property
    def label(self) -> str:
        return label(self.scheme, self.weight_bits, self.act_bits, self.act_scheme)


def label(scheme: str, weight_bits: int, act_bits: int, act_scheme: str) -> str:
    """``quantile W4A4`` when weights and activations share the scheme, else ``quantile W4A8 (A uniform)``."""
    base = f"{scheme} W{weight_bits}A{act_bits}"
    return base if act_scheme == scheme else f"{base} (A {act_scheme})"


def row_label(r: dict) -> str:
    return f"{r['model']} {label(r['scheme'], r['weight_bits'], r['act_bits'], r['act_scheme'])}"


def row_key(r: dict) -> tuple:
    return r["model"], r["scheme"], r["weight_bits"], r["act_bits"], r["act_scheme"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write (the PNGs go beside it)")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="example models to measure")
    p.add_argument("--schemes", nargs="+", default=list(WEIGHT_SCHEMES), choices=WEIGHT_SCHEMES,
                   help="weight schemes to measure")  # fmt: skip
    p.add_argument("--bits", nargs="+", type=int, default=None, choices=ALL_BITS,
                   help="weight bits (default 8..1); W/A b/b rows run for those of 4, 3, 2 among them")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="smoke run: bits 4, 3, 2 only (unless --bits is given)")
    p.add_argument("--samples", type=int, default=8, help="test samples per QEMU run (instructions are their median)")
    p.add_argument("--board", default=device.DEFAULT_BOARD, help="QEMU board")
    p.add_argument("--opt", default="-O2", choices=device.OPT_LEVELS, help="gcc optimisation level")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.bits is None:
        args.bits = list(QUICK_BITS if args.quick else ALL_BITS)
    args.bits = sorted(set(args.bits), reverse=True)
    if args.samples < 1:
        p.error("--samples must be at least 1")
    return args


def configurations(args: argparse.Namespace) -> list[Config]:
    """W<b>A8 (uniform activations) for every scheme and bit width, W/A b/b for b in 4, 3, 2 with activations in the
    weights' scheme, and always W8A8 uniform (the int8 reference)."""
    configs = [Config(s, b, 8, "uniform") for b in args.bits for s in args.schemes]
    configs += [Config(s, b, b, s) for b in args.bits if b in LOW_ACT_BITS for s in args.schemes]
    reference = Config("uniform", 8, 8, "uniform")
    return configs if reference in configs else [reference, *configs]


def measure(name: str, ex: tvmq.examples.ExampleModel, cfg: Config, args: argparse.Namespace, mcpu: str) -> dict:
    """Quantize, evaluate on the host, build and run on QEMU; one JSON row. A ConfigError becomes a skipped row."""
    row: dict[str, Any] = {"model": name, "scheme": cfg.scheme, "weight_bits": cfg.weight_bits,
                           "act_bits": cfg.act_bits, "act_scheme": cfg.act_scheme, "label": cfg.label,
                           "status": "ok"}  # fmt: skip
    started = time.monotonic()
    try:
        qcfg = tvmq.QuantConfig(weight_bits=cfg.weight_bits, weight_scheme=cfg.scheme, act_bits=cfg.act_bits,
                                act_scheme=cfg.act_scheme)  # fmt: skip
        q = tvmq.quantize(ex.model_path, ex.calibration, qcfg, progress=False)
        pred = np.argmax(q.predict(ex.x_test), axis=-1)
        correct = int(np.count_nonzero(pred == ex.y_test))
        row.update(correct=correct, test_samples=len(ex.y_test), accuracy=correct / len(ex.y_test),
                   accuracy_drop_vs_float=ex.float_accuracy - correct / len(ex.y_test))  # fmt: skip
        x = ex.x_test[: args.samples]
        host_raw = q.run_int(q.quantize_input(x))
        art = tvmq.build(q, target=f"c -mcpu={mcpu}", name=name)
        res = tvmq.qemu.run(art, x, board=args.board, opt=args.opt, progress=False)
    except tvmq.ConfigError as err:
        row.update(status="config_error", error=str(err))
        return row
    except Exception as err:  # recorded, and reported as a failure at the end: one bad row does not lose the rest
        row.update(status="error", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        return row
    bit_exact = bool(np.array_equal(res.raw_outputs, host_raw))
    weighted = [s for s in res.steps if s["op"] in WEIGHTED_OPS]
    row.update(
        bit_exact=bit_exact, device_samples=len(x),
        differing_output_codes=int(np.count_nonzero(res.raw_outputs != host_raw)),
        device_agrees_on_class=int(np.count_nonzero(np.argmax(res.raw_outputs, -1) == np.argmax(host_raw, -1))),
        instructions=res.instructions,
        weighted_layer_instructions=sum(s["instructions"] or 0 for s in weighted),
        weighted_macs=sum(s["macs"] for s in weighted),
        flash_bytes=res.memory.flash_bytes, weights_bytes=res.memory.weights_bytes,
        model_code_bytes=res.memory.model_code_bytes, sram_bytes=res.memory.sram_bytes,
        arena_bytes=art.plan.arena_bytes, device_arena_bytes=res.memory.arena_bytes,
        packed_activations=sum(1 for cb in q.plan.codebooks.values() if cb.packed),
        metadata_weights_bytes=art.metadata.get("weights_bytes"), stack_peak_bytes=res.stack_peak_bytes,
        steps=[{"name": s["name"], "op": s["op"], "macs": s["macs"], "instructions": s["instructions"]}
               for s in weighted],
        seconds=round(time.monotonic() - started, 2),
    )  # fmt: skip
    return row


def decode_costs(rows: list[dict]) -> None:
    """Add, to every measured row (A8 and W/A b/b), its instructions and arena bytes minus W8A8 uniform's and minus
    uniform's (weights and activations) at the same W and A bits."""
    ok = {row_key(r): r for r in rows if r["status"] == "ok"}
    for r in ok.values():
        refs = {
            "vs_w8_uniform": ok.get((r["model"], "uniform", 8, 8, "uniform")),
            "vs_uniform_same_bits": ok.get((r["model"], "uniform", r["weight_bits"], r["act_bits"], "uniform")),
        }
        for key, ref in refs.items():
            if ref is None:
                continue
            extra = r["instructions"] - ref["instructions"]
            r[f"extra_instructions_{key}"] = extra
            r[f"instructions_ratio_{key}"] = round(r["instructions"] / ref["instructions"], 4)
            macs = r["weighted_macs"]
            r[f"extra_instructions_per_mac_{key}"] = round(extra / macs, 3) if macs else None
            r[f"extra_arena_bytes_{key}"] = r["arena_bytes"] - ref["arena_bytes"]


def comparison(rows: list[dict], models: list[str]) -> dict[str, Any]:
    """At 4, 3 and 2 bits, W-only (A8 uniform) and W/A b/b (activations in each scheme): the best scheme, and every
    case where quantile/kmeans do not beat uniform (equal counts as not beating)."""
    ok = {row_key(r): r for r in rows if r["status"] == "ok"}
    out: dict[str, Any] = {}
    for model in models:
        cases = []
        for bits in LOW_ACT_BITS:
            for act in (8, bits):
                keys = {s: (model, s, bits, act, "uniform" if act == 8 else s) for s in WEIGHT_SCHEMES}
                accs = {s: ok[k] for s, k in keys.items() if k in ok}
                if "uniform" not in accs:
                    continue
                uni = accs["uniform"]
                best = max(accs.values(), key=lambda r: r["correct"])["correct"]
                case = {"weight_bits": bits, "act_bits": act,
                        "activations": "uniform int8" if act == 8 else "same scheme as the weights",
                        "correct": {s: r["correct"] for s, r in accs.items()},
                        "accuracy": {s: round(r["accuracy"], 4) for s, r in accs.items()},
                        "arena_bytes": {s: r["arena_bytes"] for s, r in accs.items()},
                        "instructions": {s: r["instructions"] for s, r in accs.items()},
                        "best": [s for s, r in accs.items() if r["correct"] == best],
                        "not_beating_uniform": {}}  # fmt: skip
                for s in NONLINEAR:
                    if s in accs and accs[s]["correct"] <= uni["correct"]:
                        case["not_beating_uniform"][s] = accs[s]["correct"] - uni["correct"]  # in test samples
                cases.append(case)
        out[model] = cases
    return out


def report(rows: list[dict], examples: dict, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """The JSON document."""
    board = device.get_board(args.board)
    not_exact = [row_label(r) for r in rows if r["status"] == "ok" and not r["bit_exact"]]
    return {
        "benchmark": "schemes",
        "what": "uniform vs non-linear (codebook) quantization of weights (W8..W1, A8 uniform) and of weights and "
        "activations together (W/A 4/4, 3/3, 2/2, one scheme for both): host accuracy on the full test split, "
        "flash/weights/arena bytes and instructions per inference on QEMU, and the instruction cost of decoding "
        "packed b-bit weight indices (and, at W/A b/b, activation codes) through int8 tables",
        "board": board.name, "core": board.core.name, "cflags": [*board.core.cflags, args.opt], "opt": args.opt,
        "tvmq_version": tvmq.__version__, "git": git_revision(), "gcc": gcc_version(), "note": device.NOTE,
        "device_samples": args.samples, "statistic": "instructions: median over the device samples",
        "schemes": args.schemes, "weight_bits": args.bits,
        "activations": "W<b>A8 rows: uniform int8 activations for every weight scheme (act_scheme='uniform'); "
        "W/A b/b rows (b = 4, 3, 2): act_scheme = the weight scheme, so uniform rows have uniform b-bit "
        "activations and quantile/kmeans/pow2/apot rows have a 2^b-level activation codebook on every conv/dense "
        "output (and the model input) fitted to the calibration values",
        "storage": "weights below 8 bits (any scheme) are packed b-bit indices in 1/2/4/8-bit slots plus a "
        "per-output-channel int8 table; W8 uniform is plain int8 (nothing decoded). Uniform activations are one "
        "int8 per value in the arena at any act_bits (multiply-shift requantize onto a 2^b-level grid), so uniform "
        "A4/A3/A2 uses the same arena as A8. Non-uniform activations end each conv/dense layer in LUT-requantize and "
        "are stored as packed b-bit codes in 1/2/4-bit slots (when the channel count packs into whole bytes; the "
        "model output and the model input stay int8), decoded by the next layer through a 2^b-entry int8 table; "
        "so their arena bytes differ from uniform's (packed_activations counts the packed tensors)",
        "decode_cost": "extra_instructions_vs_w8_uniform = instructions - W8A8 uniform's; "
        "extra_instructions_vs_uniform_same_bits = instructions - uniform's (weights and activations) at the same W "
        "and A bits, for A8 and W/A b/b rows alike (at W/A b/b it includes the activation LUT-requantize and table "
        "decode); *_per_mac divides by the MACs of the conv/dense layers; extra_arena_bytes_* likewise for "
        "arena bytes",
        "models": {n: {"float_accuracy": ex.float_accuracy, "test_samples": len(ex.y_test)}
                   for n, ex in examples.items()},
        "bit_exact_failures": not_exact,
        "config_errors": [f"{row_label(r)}: {r['error']}" for r in rows if r["status"] == "config_error"],
        "errors": [f"{row_label(r)}: {r['error']}" for r in rows if r["status"] == "error"],
        "comparison": comparison(rows, list(examples)),
        "runtime_seconds": round(seconds, 1), "rows": rows,
    }  # fmt: skip


def table(doc: dict[str, Any]) -> str:
    """All rows, then the uniform vs non-linear comparison."""
    head = (f"{'model':<13}{'scheme':<9}{'W':>2}{'A':>3} {'A scheme':<9}{'accuracy':>9}{'vs float':>9}{'flash':>8}"
            f"{'weights':>9}{'arena':>8}{'vs uni@b':>9}{'instructions':>14}{'vs W8 uni':>11}{'vs uni@b':>10}"
            f"{'/MAC':>7}  exact")  # fmt: skip
    lines = [f"{doc['board']} ({doc['core']}, {doc['opt']}), instructions: median of {doc['device_samples']} samples; "
             "accuracy: host, full test split", head, "-" * len(head)]  # fmt: skip
    for r in doc["rows"]:
        lead = f"{r['model']:<13}{r['scheme']:<9}{r['weight_bits']:>2}{r['act_bits']:>3} {r['act_scheme']:<9}"
        if r["status"] != "ok":
            lines.append(f"{lead}  {r['status']}: {r['error'].splitlines()[0][:90]}")
            continue
        d8, db = r.get("extra_instructions_vs_w8_uniform"), r.get("extra_instructions_vs_uniform_same_bits")
        da = r.get("extra_arena_bytes_vs_uniform_same_bits")
        lines.append(
            f"{lead}{100 * r['accuracy']:>8.2f}%{-100 * r['accuracy_drop_vs_float']:>+8.2f}%{r['flash_bytes']:>8,}"
            f"{r['weights_bytes']:>9,}{r['arena_bytes']:>8,}{_signed(da, 9)}"
            f"{r['instructions']:>14,}{_signed(d8, 11)}{_signed(db, 10)}"
            f"{_num(r.get('extra_instructions_per_mac_vs_w8_uniform'), 7)}  {'yes' if r['bit_exact'] else 'NO!'}"
        )
    lines.append(
        "(arena: bytes, vs uni@b: minus uniform's at the same W and A bits; instructions vs W8 uni / vs uni@b:"
        " extra instructions per inference; /MAC: extra vs W8 uni per conv/dense MAC)"
    )
    lines.append("(A scheme uniform: one int8 per activation at any A bits; other A schemes: packed b-bit codes)")
    lines.append("")
    for model, cases in doc["comparison"].items():
        n = doc["models"][model]["test_samples"]
        lines.append(f"{model}: correct of {n} test samples (one sample = {100 / n:.2f}%), by scheme")
        for c in cases:
            accs = "  ".join(f"{s} {k}" for s, k in c["correct"].items())
            worse = ", ".join(f"{s} {d:+d}" for s, d in c["not_beating_uniform"].items())
            kind = "A8 uniform" if c["act_bits"] == 8 else "A same scheme"
            lines.append(f"  W{c['weight_bits']}A{c['act_bits']} ({kind}): {accs}  | best: {'/'.join(c['best'])}"
                         + (f"  | not beating uniform: {worse}" if worse else ""))  # fmt: skip
    lines.append("(" + doc["note"].split(":")[0] + ")")
    return "\n".join(lines)


def _signed(v: int | None, width: int) -> str:
    return f"{'-' if v is None else f'{v:+,}':>{width}}"


def _num(v: float | None, width: int) -> str:
    return f"{'-' if v is None else f'{v:+.2f}':>{width}}"


def plot_bits(doc: dict[str, Any], path: Path) -> Path:
    """Accuracy vs weight bits (A8 uniform activations), one line per scheme, one subplot per model."""
    plt = _pyplot()
    models = list(doc["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for scheme in doc["schemes"]:
            pts = sorted((r["weight_bits"], 100 * r["accuracy"]) for r in doc["rows"]
                         if r["model"] == model and r["scheme"] == scheme and r["act_bits"] == 8
                         and r["status"] == "ok")  # fmt: skip
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=MARKERS[scheme], color=COLORS[scheme], label=scheme)
        ax.axhline(100 * doc["models"][model]["float_accuracy"], color="grey", ls="--", lw=1, label="float")
        ax.set_title(f"{model} (A8 uniform, {doc['models'][model]['test_samples']} test samples)", fontsize=9)
        ax.set_xlabel("weight bits")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(sorted({r["weight_bits"] for r in doc["rows"]}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("host integer-only accuracy vs weight bits, per weight scheme", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pareto(doc: dict[str, Any], path: Path) -> Path:
    """Accuracy vs flash bytes, every configuration; filled markers A8 uniform, hollow W/A b/b (activations in the
    weights' scheme); the Pareto front as a step line."""
    plt = _pyplot()
    models = list(doc["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = [r for r in doc["rows"] if r["model"] == model and r["status"] == "ok"]
        for r in rows:
            c = COLORS[r["scheme"]]
            ax.scatter(r["flash_bytes"], 100 * r["accuracy"], marker=MARKERS[r["scheme"]], s=28, edgecolors=c,
                       facecolors=c if r["act_bits"] == 8 else "none", linewidths=1)  # fmt: skip
        front = pareto_front(rows)
        ax.step([r["flash_bytes"] for r in front], [100 * r["accuracy"] for r in front], where="post", color="k",
                lw=0.8, alpha=0.6)  # fmt: skip
        for r in front:
            ax.annotate(f"{r['scheme']} W{r['weight_bits']}A{r['act_bits']}", (r["flash_bytes"], 100 * r["accuracy"]),
                        fontsize=6, xytext=(3, -8), textcoords="offset points")  # fmt: skip
        ax.axhline(100 * doc["models"][model]["float_accuracy"], color="grey", ls="--", lw=1)
        ax.set_title(f"{model}: Pareto front (black); filled A8 uniform, hollow A=W scheme", fontsize=9)
        ax.set_xlabel("flash bytes (weights + code + runtime)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        for s in doc["schemes"]:
            ax.scatter([], [], marker=MARKERS[s], color=COLORS[s], label=s)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"accuracy vs flash on {doc['board']} ({doc['core']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows no other row beats on both flash (fewer bytes) and accuracy (more correct), by increasing flash."""
    front, best = [], -1
    for r in sorted(rows, key=lambda r: (r["flash_bytes"], -r["correct"])):
        if r["correct"] > best:
            front.append(r)
            best = r["correct"]
    return front


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    mcpu = device.get_board(args.board).core.name
    examples = {name: tvmq.examples.load(name) for name in args.models}
    jobs = [(name, cfg) for name in args.models for cfg in configurations(args)]
    rows = []
    bar = tqdm(jobs, desc="configurations", unit="cfg", disable=args.no_progress)
    for name, cfg in bar:
        bar.set_postfix_str(f"{name} {cfg.label}")
        row = measure(name, examples[name], cfg, args, mcpu)
        if row["status"] == "ok" and not row["bit_exact"]:
            tqdm.write(f"BUG: {name} {cfg.label}: device raw outputs differ from the host's run_int in "
                       f"{row['differing_output_codes']} codes", file=sys.stderr)  # fmt: skip
        rows.append(row)
    decode_costs(rows)
    doc = report(rows, examples, args, time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    pngs = [plot_bits(doc, args.out.with_name(args.out.stem + "_bits.png")),
            plot_pareto(doc, args.out.with_name(args.out.stem + "_flash.png"))]  # fmt: skip
    print(table(doc))
    print(f"wrote {args.out}, {pngs[0].name} and {pngs[1].name} in {doc['runtime_seconds']} s")
    failed = False
    if doc["bit_exact_failures"]:
        print(f"\nBUG: device != host run_int for {len(doc['bit_exact_failures'])} configuration(s): "
              + "; ".join(doc["bit_exact_failures"]), file=sys.stderr)  # fmt: skip
        failed = True
    if doc["errors"]:
        print("\nERROR: configurations that failed (not a ConfigError):\n  " + "\n  ".join(doc["errors"]),
              file=sys.stderr)  # fmt: skip
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
