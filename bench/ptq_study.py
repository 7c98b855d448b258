"""The seed study's Table 2 and Figure 8 on tvmq's zoo: post-training quantization pipelines x bit-widths x seeds.

Why: the seed study ("An Empirical Study of Low Precision Quantization for TinyML") concludes that MSE
initialisation beats MinMax, that optimising the rounding (AdaRound) or the bits (BitSplit) beats optimising the
weights through the straight-through estimator (AdaQuant) at low bits, that block-wise reconstruction helps below
4 bits and that bias tuning always helps. This runs the same pipelines with tvmq's implementations (``tvmq.ptq``)
on every zoo model and reports the accuracy of tvmq's integer-only model (``QuantizedModel.predict``, bit-exact
with the device) on the whole test split, mean and standard deviation over seeds. A seed draws the calibration
subset (80% of the shipped unlabeled calibration samples: 410 digits images, 192 BasicMotions windows, 216 vowels
utterances; the seed used 1024 of a larger set) and every random choice of the algorithms (``ptq_seed``).

Rows (pipelines): RTN MinMax; +MSE; +CLE; each optimisation variable (opt_round = AdaRound, opt_weights = AdaQuant,
opt_qparam = LSQ, opt_bits = BitSplit) layer-wise and, except opt_bits, block-wise (BRECQ); opt_round with bias
tuning; GPTQ; and the best combination (block-wise AdaRound with QDrop, then bias tuning), all after CLE and MSE
initialisation like the seed's Table 2; last, that best pipeline with the first conv/dense layer's input and output
at 8 bits (one per-layer override: the cheapest mixed precision); and that best pipeline with per-layer weight
and activation bits chosen by ``tvmq.mixed_precision`` under the uniform config's BOPs (W4A4 and below).
Columns: W8A8, W6A6, W4A8, W4A4, W3A3, W2A4, W2A2 (weights symmetric per channel, activations asymmetric per
tensor). Also: calibration time per pipeline (the PTQ steps and the integer plan, on this machine's shared cores),
and for the best pipeline per config the BOPs and memory (flash weights bytes + arena bytes, exactly as
``tvmq.build`` plans them), as the seed's Figure 8.

``--mixed`` adds the mixed-precision Pareto front (``tvmq.mixed_precision`` under flash budgets between uniform
W2's and W8's, test accuracy vs flash, with the uniform W8..W2 configs on it).

Run: ``.venv/bin/python bench/ptq_study.py`` (the full grid; ``--models``, ``--pipelines``, ``--configs``,
``--seeds`` take subsets, ``--list`` shows the names). Writes ``bench/results/ptq_study.json``, ``.md`` and PNGs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tvmq.relay_passes import RealizeIntegerOps, find_layers, normalize
from tvmq.relay_passes.layers import WEIGHTED_KINDS

import tvmq
from tvmq.ptq import PTQState
from tvmq.ptq.capture import float_pass
from tvmq.ptq.pipeline import check_samples
from tvmq.ptq.registry import REGISTRY, options_for, resolve
from tvmq.quant.model import QuantizedModel
from tvmq.quant.plan import make_plan

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("digits", "basicmotions", "digits_res8", "digits_mbv1", "vowels_dscnn")
CONFIGS = {"W8A8": (8, 8), "W6A6": (6, 6), "W4A8": (4, 8), "W4A4": (4, 4), "W3A3": (3, 3), "W2A4": (2, 4),
           "W2A2": (2, 2)}  # fmt: skip
PRE = ["cle", "mse_init"]
PIPELINES = {
    "RTN MinMax": ["minmax_init"],
    "+MSE": ["mse_init"],
    "+CLE": PRE,
    "opt_round": [*PRE, "opt_round"],
    "opt_round:block": [*PRE, "opt_round:block"],
    "opt_weights": [*PRE, "opt_weights"],
    "opt_weights:block": [*PRE, "opt_weights:block"],
    "opt_qparam": [*PRE, "opt_qparam"],
    "opt_qparam:block": [*PRE, "opt_qparam:block"],
    "opt_bits": [*PRE, "opt_bits"],
    "opt_round +BT": [*PRE, "opt_round", "bias_tuning"],
    "GPTQ": [*PRE, "gptq"],
    "best: opt_round:block+QDrop +BT": [*PRE, "opt_round:block", "bias_tuning"],
    # the same with the first conv/dense layer's input and output at 8 bits (mixed precision by one override)
    "best, first layer A8": [*PRE, "opt_round:block", "bias_tuning"],
    # the same with per-layer bits from tvmq.mixed_precision at the uniform config's BOPs (sub-8-bit configs)
    "best, mixed bits at equal BOPs": [*PRE, "opt_round:block", "bias_tuning"],
}
FIRST_LAYER_A8 = {"best, first layer A8"}
MIXED_BOPS = {"best, mixed bits at equal BOPs"}
MIXED_CONFIGS = ("W4A4", "W3A3", "W2A4", "W2A2")
# Iterations chosen for a study that runs on two shared cores; each option is the algorithm's own.
OPTIONS = {"adaround": {"iters": 300, "batch_size": 32}, "adaquant": {"iters": 200, "batch_size": 32},
           "lsq": {"iters": 150, "batch_size": 32}, "bitsplit": {"iters": 2},
           "bias_tuning": {"iters": 150}}  # fmt: skip
QDROP = {"adaround": {"qdrop": 0.5}}
CALIB_FRACTION = 0.8


def _options(pipeline: str) -> dict:
    options = {k: dict(v) for k, v in OPTIONS.items()}
    if "QDrop" in pipeline or pipeline in FIRST_LAYER_A8 | MIXED_BOPS:
        for k, v in QDROP.items():
            options[k].update(v)
    return options


class ModelRun:
    """One zoo model and one seed: the float model's statistics (with and without CLE) shared by every pipeline."""

    def __init__(self, name: str, seed: int) -> None:
        self.name, self.example = name, tvmq.examples.load(name)
        calib = self.example.calibration
        rng = np.random.default_rng([seed, 1234])
        keep = np.sort(rng.choice(len(calib), int(round(CALIB_FRACTION * len(calib))), replace=False))
        self.samples, self.seed = calib[keep], seed
        mod = normalize()(tvmq.load_model(self.example.model_path))
        state = PTQState(mod, find_layers(mod["main"]), tvmq.QuantConfig(ptq_seed=seed), self.samples)
        start = time.perf_counter()
        self.base = float_pass(state)[0]
        first = next(layer.name for layer in self.base.layers if layer.kind in WEIGHTED_KINDS)
        self.first_layer_a8 = {first: {"act_bits": 8}}  # the model input follows the first layer's act_bits
        self.float_seconds = time.perf_counter() - start  # calibration pass shared by the pipelines, counted in each
        self._cle: PTQState | None = None
        self.cle_seconds = 0.0

    def start(self, pipeline: list[str]) -> tuple[PTQState, list[str]]:
        """The state to run ``pipeline`` from (CLE done once per model and seed) and the steps left."""
        if pipeline and pipeline[0] == "cle":
            if self._cle is None:
                start = time.perf_counter()
                self._cle = float_pass(REGISTRY["cle"].run(self.base, options_for("cle", {})))[0]
                self.cle_seconds = time.perf_counter() - start
            return self._cle, pipeline[1:]
        return self.base, pipeline

    def overrides(self, pipeline_name: str, bits: tuple[int, int]) -> dict:
        if pipeline_name in FIRST_LAYER_A8:
            return self.first_layer_a8
        if pipeline_name in MIXED_BOPS:
            return mixed_at_equal_bops(self.name, bits)["overrides"]
        return {}

    def quantize(self, pipeline_name: str, pipeline: list[str], bits: tuple[int, int]) -> tuple[QuantizedModel, float]:
        start = time.perf_counter()
        state, steps = self.start(pipeline)
        config = tvmq.QuantConfig(weight_bits=bits[0], act_bits=bits[1], ptq=pipeline,
                                  ptq_options=_options(pipeline_name), ptq_seed=self.seed,
                                  overrides=self.overrides(pipeline_name, bits))  # fmt: skip
        state = state.replace(config=config)
        for entry in steps:
            check = REGISTRY[resolve(entry)[0]].check
            if check is not None:
                check(entry, state.layers, config)
        check_samples(config, state.layers, len(self.samples))
        for entry in steps:
            state = REGISTRY[resolve(entry)[0]].run(state, options_for(entry, config.ptq_options))
        state, stats = float_pass(state)
        plan = make_plan(state.layers, state.input_var, state.observers(stats.observers), state.config,
                         rounded_weights=state.rounded)  # fmt: skip
        int_mod = RealizeIntegerOps(state.layers, plan)(state.float_mod)
        model = QuantizedModel(state.float_mod, int_mod, state.layers, plan, state.config, state.report)
        seconds = time.perf_counter() - start + self.float_seconds
        return model, seconds + (self.cle_seconds if pipeline and pipeline[0] == "cle" else 0.0)

    def accuracy(self, model: QuantizedModel) -> float:
        y = model.predict(self.example.x_test)
        return float(np.mean(np.argmax(y.reshape(len(y), -1), axis=1) == self.example.y_test))


def costs(model: QuantizedModel) -> dict[str, int]:
    """BOPs, and flash weights bytes and arena bytes as tvmq.build plans them (no C compiled)."""
    from tvmq.codegen.graph import read_program
    from tvmq.codegen.planner import plan_memory
    from tvmq.codegen.slices import write_concat_slices

    program = read_program(model.int_mod)
    flash = sum(t.nbytes for s in program.steps for t in s.inputs if t.kind == "const")
    arena = plan_memory(write_concat_slices(program)).arena_bytes
    return {"bops": int(sum(r["bops"] for r in model.layer_stats())), "flash": int(flash), "arena": int(arena)}


@functools.cache
def mixed_at_equal_bops(name: str, bits: tuple[int, int]) -> dict:
    """Per-layer bits from ``tvmq.mixed_precision`` (MSE initialisation, all the shipped calibration samples: one
    choice per model and config, the same for every seed) under the BOPs of the uniform config ``bits``."""
    from tvmq.ptq.mixed import search

    ex = tvmq.examples.load(name)
    base = tvmq.QuantConfig(weight_bits=bits[0], act_bits=bits[1], weight_observer="mse", act_observer="mse")
    budget = costs(tvmq.quantize(ex.model_path, ex.calibration, base, progress=False))["bops"]
    result = search(ex.model_path, ex.calibration, {"bops": budget}, base, progress=False)
    return {"budget_bops": budget, "chosen": result.chosen, "overrides": result.config.overrides}


def run_study(models, pipelines, configs, seeds, log, journal: Path) -> list[dict[str, Any]]:
    """Every (model, seed, config, pipeline) not already in ``journal`` (one JSON row per line, appended as they
    come, so an interrupted run resumes and separate runs add up)."""
    done = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
    have = {(r["model"], r["seed"], r["config"], r["pipeline"]) for r in done}
    rows = [r for r in done if r["model"] in models and r["seed"] in seeds and r["config"] in configs
            and r["pipeline"] in pipelines]  # fmt: skip
    for seed in seeds:  # seed-major: an interrupted run has every model for the first seeds
        for name in models:
            todo = [(c, p) for c in configs for p in pipelines
                    if (name, seed, c, p) not in have and (p not in MIXED_BOPS or c in MIXED_CONFIGS)]  # fmt: skip
            if not todo:
                continue
            run = ModelRun(name, seed)
            for config, pipeline in todo:
                q, seconds = run.quantize(pipeline, PIPELINES[pipeline], CONFIGS[config])
                row = {"model": name, "seed": seed, "config": config, "pipeline": pipeline,
                           "accuracy": run.accuracy(q), "seconds": round(seconds, 2), **costs(q)}  # fmt: skip
                if pipeline in MIXED_BOPS:
                    row["mixed"] = mixed_at_equal_bops(name, CONFIGS[config])
                rows.append(row)
                with journal.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                log(f"{name} seed {seed} {config:5s} {pipeline:34s} {row['accuracy'] * 100:6.2f}% "
                        f"{row['seconds']:6.1f}s")  # fmt: skip
    return rows


def summarise(rows: list[dict], models, pipelines, configs) -> dict:
    """model -> pipeline -> config -> {mean, std, n}; plus the median seconds per pipeline and model."""
    table: dict = {}
    for m in models:
        for p in pipelines:
            for c in configs:
                acc = [r["accuracy"] for r in rows if (r["model"], r["pipeline"], r["config"]) == (m, p, c)]
                if acc:
                    table.setdefault(m, {}).setdefault(p, {})[c] = {
                        "mean": float(np.mean(acc)), "std": float(np.std(acc)), "n": len(acc)}  # fmt: skip
            secs = [r["seconds"] for r in rows if (r["model"], r["pipeline"]) == (m, p)]
            if secs:
                table[m][p]["seconds"] = float(np.median(secs))
    return table


def markdown(table: dict, floats: dict, configs) -> str:
    lines = []
    for m, by_pipeline in table.items():
        seeds = sorted({v["n"] for cells in by_pipeline.values() for k, v in cells.items() if k != "seconds"})
        lines.append(f"\n**{m}** (float {floats[m] * 100:.2f}%; seeds per cell: {'/'.join(map(str, seeds))})\n")
        lines.append("| pipeline | " + " | ".join(configs) + " | calibration s |")
        lines.append("|---|" + "---|" * (len(configs) + 1))
        best = {c: max((v[c]["mean"] for v in by_pipeline.values() if c in v), default=None) for c in configs}
        for p, cells in by_pipeline.items():
            out = []
            for c in configs:
                if c not in cells:
                    out.append("")
                    continue
                text = f"{cells[c]['mean'] * 100:.2f}"
                if cells[c]["n"] > 1:  # one seed has no spread to show
                    text += f"±{cells[c]['std'] * 100:.2f}"
                out.append(f"**{text}**" if cells[c]["mean"] == best[c] else text)
            lines.append(f"| {p} | " + " | ".join(out) + f" | {cells.get('seconds', 0):.1f} |")
    return "\n".join(lines) + "\n"


def plots(rows: list[dict], table: dict, floats: dict, configs, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(table)
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.2), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        for k, (p, cells) in enumerate(table[m].items()):
            xs = [i for i, c in enumerate(configs) if c in cells]
            ax.errorbar(xs, [cells[configs[i]]["mean"] * 100 for i in xs],
                        yerr=[cells[configs[i]]["std"] * 100 for i in xs], label=p, marker="o", ms=3,
                        color=f"C{k % 10}", ls="-" if k < 10 else "--", capsize=2)  # fmt: skip
        ax.axhline(floats[m] * 100, color="k", lw=0.8, ls=":")
        ax.set_xticks(range(len(configs)), configs, rotation=45)
        ax.set_title(m)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(max(0, min(ax.get_ylim()[0], floats[m] * 100 - 40)), 101)
    axes[0][-1].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(out.with_name(out.stem + "_bits.png"), dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, m in enumerate(models):
        points = []
        for c in configs:
            candidates = [p for p in table[m] if c in table[m][p]]
            if not candidates:
                continue
            best_p = max(candidates, key=lambda p: table[m][p][c]["mean"])
            sel = [r for r in rows if (r["model"], r["pipeline"], r["config"]) == (m, best_p, c)]
            drop = (floats[m] - table[m][best_p][c]["mean"]) * 100
            points.append((sel[0]["bops"], sel[0]["flash"] + sel[0]["arena"], drop, c))
        for ax, idx, label in ((axes[0], 0, "BOPs (MACs x weight bits x input bits)"),
                               (axes[1], 1, "memory: flash weights + arena (bytes)")):  # fmt: skip
            ax.plot([p[idx] for p in points], [p[2] for p in points], marker="o", color=f"C{k}", label=m, ls="")
            for p in points:
                ax.annotate(p[3], (p[idx], p[2]), fontsize=6)
            ax.set_xlabel(label)
            ax.set_ylabel("accuracy drop of the best pipeline (points)")
            ax.set_xscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("Best PTQ pipeline per config (the seed's Figure 8)")
    fig.tight_layout()
    fig.savefig(out.with_name(out.stem + "_pareto.png"), dpi=120)
    plt.close(fig)


def mixed_front(models, out: Path, log) -> dict:
    """Test accuracy vs flash of uniform W8..W2 (A8, MSE init) and of mixed precision under flash budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tvmq.ptq.mixed import search

    results: dict = {}
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        ex = tvmq.examples.load(name)
        base = tvmq.QuantConfig(weight_observer="mse", act_observer="mse")

        def evaluate(config: tvmq.QuantConfig, ex=ex) -> tuple[float, int]:
            q = tvmq.quantize(ex.model_path, ex.calibration, config, progress=False)
            acc = float(np.mean(np.argmax(q.predict(ex.x_test), axis=1) == ex.y_test))
            return acc, costs(q)["flash"]

        uniform = {b: evaluate(base.replace(weight_bits=b)) for b in (8, 6, 5, 4, 3, 2)}
        budgets = np.geomspace(uniform[2][1], uniform[8][1], 9)[1:-1]
        mixed = []
        for budget in budgets:
            r = search(ex.model_path, ex.calibration, {"flash": float(budget)}, base, progress=False)
            acc, flash = evaluate(r.config)
            mixed.append({"budget": float(budget), "flash": flash, "accuracy": acc, "chosen": r.chosen,
                          "weight_bits": {k: v["weight_bits"] for k, v in r.config.overrides.items()}})  # fmt: skip
            log(f"mixed {name} budget {budget:,.0f}: {r.chosen} flash {flash:,} acc {acc * 100:.2f}%")
        results[name] = {"uniform": {f"W{b}A8": {"accuracy": a, "flash": f} for b, (a, f) in uniform.items()},
                         "mixed": mixed}  # fmt: skip
        ax.plot([f for _, f in uniform.values()], [a * 100 for a, _ in uniform.values()], "o--", label="uniform W8..W2")
        for b, (a, f) in uniform.items():
            ax.annotate(f"W{b}", (f, a * 100), fontsize=7)
        ax.plot([m["flash"] for m in mixed], [m["accuracy"] * 100 for m in mixed], "s-", label="mixed precision")
        ax.set_xlabel("flash bytes (weights, biases, requantization)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_name("ptq_mixed.png"), dpi=120)
    plt.close(fig)
    out.with_name("ptq_mixed.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), metavar="NAME")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..n-1)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ptq_study.json")
    parser.add_argument("--mixed", action="store_true", help="also the mixed-precision Pareto front")
    parser.add_argument("--mixed-only", action="store_true")
    parser.add_argument("--list", action="store_true", help="list the pipelines and exit")
    parser.add_argument("--summary-only", action="store_true",
                        help="only tabulate and plot the rows already in the journal (<out>.rows.jsonl)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.list:
        for name, steps in PIPELINES.items():
            print(f"{name:36s} {', '.join(steps)}")
        return 0
    unknown = [p for p in args.pipelines if p not in PIPELINES]
    if unknown:
        parser.error(f"unknown pipelines {unknown}; --list shows them")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TVM_NUM_THREADS", "1")  # one study process per core: threads only contend
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    start = time.time()

    def log(text: str) -> None:
        print(f"[{time.time() - start:7.0f}s] {text}", file=sys.stderr, flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.mixed_only:
        journal = args.out.with_suffix(".rows.jsonl")
        if args.summary_only:
            rows = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
            rows = [r for r in rows if r["model"] in args.models and r["pipeline"] in args.pipelines
                    and r["config"] in args.configs and r["seed"] < args.seeds]  # fmt: skip
        else:
            rows = run_study(args.models, args.pipelines, args.configs, list(range(args.seeds)), log, journal)
        floats = {m: tvmq.examples.load(m).float_accuracy for m in args.models}
        table = summarise(rows, args.models, args.pipelines, args.configs)
        payload = {"models": args.models, "pipelines": {p: PIPELINES[p] for p in args.pipelines},
                   "configs": args.configs, "seeds": args.seeds, "options": OPTIONS, "qdrop": QDROP,
                   "calibration_fraction": CALIB_FRACTION, "float_accuracy": floats, "table": table, "rows": rows,
                   "seconds": round(time.time() - start, 1)}  # fmt: skip
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
        text = markdown(table, floats, args.configs)
        args.out.with_suffix(".md").write_text(text)
        plots(rows, table, floats, args.configs, args.out)
        print(text)
        log(f"study done in {time.time() - start:.0f}s")
    if args.mixed or args.mixed_only:
        mixed_front(
            [m for m in args.models if m in ("digits", "digits_res8", "basicmotions")] or args.models, args.out, log
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
