"""The ``tvmq`` command line: thin argument parsing over the library, progress on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import examples
from .codegen import build
from .config import ACT_SCHEMES, CODEBOOK_MODES, OBSERVERS, QUANTILE_CENTERS, WEIGHT_SCHEMES, QuantConfig
from .errors import CalibrationDataError, ConfigError, TvmqError
from .frontends.onnx_qdq import is_quantized_onnx
from .quant.prequantized import load_quantized
from .quant.quantize import quantize
from .target import CORES, parse_target

DEFAULT_TARGET = "c -mcpu=cortex-m4"


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs.reshape(len(outputs), -1), axis=1) == labels))


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- demo ------------------------------------------------------------------------------------------------------------
# The demo's quantization settings: TFLM-style int8, and tvmq's non-linear 4-bit codebooks for weights and activations.
DEMO_CONFIGS = {
    "int8": QuantConfig(),
    "w4a4-quantile": QuantConfig(weight_bits=4, act_bits=4, weight_scheme="quantile", act_scheme="quantile"),
}


def demo_one(name: str, target: str, board: str, samples: int | None, opt: str,
             config: str = "int8") -> dict[str, Any]:  # fmt: skip
    """Example model -> quantized -> C for the target -> QEMU board: accuracies, bit-exactness, memory, speed."""
    from .device import qemu

    example = examples.load(name)
    _status(f"== {name} ({config}): {example.description}")
    qmodel = quantize(example.model_path, example.calibration, DEMO_CONFIGS[config])
    x, y = example.x_test[:samples], example.y_test[:samples]
    host_codes = qmodel.run_int(qmodel.quantize_input(x))
    host_accuracy = _accuracy(qmodel.dequantize_output(host_codes), y)
    _status(f"building C for {target}")
    artifact = build(qmodel, target=target, name=name)
    _status(f"running {len(x)} samples on QEMU {board}")
    device = qemu.run(artifact, x.astype(np.float32), board=board, opt=opt)
    plan = artifact.plan
    return {
        "model": name, "config": config, "target": target, "board": board, "samples": int(len(x)),
        "float_accuracy": float(_accuracy(qmodel.run_float(x), y)), "host_accuracy": host_accuracy,
        "device_accuracy": _accuracy(device.outputs, y),
        "bit_exact": bool(np.array_equal(device.raw_outputs, host_codes)),
        "flash_bytes": device.memory.flash_bytes, "sram_bytes": device.memory.sram_bytes,
        "weights_bytes": device.memory.weights_bytes, "arena_bytes": plan.arena_bytes,
        "arena_lower_bound_bytes": plan.lower_bound_bytes, "arena_to_lower_bound": round(plan.ratio, 4),
        "stack_peak_bytes": device.stack_peak_bytes,
        "instructions_per_inference": device.instructions, "macs": artifact.metadata["macs"],
        "instructions_per_mac": round(device.instructions / max(artifact.metadata["macs"], 1), 3),
        "steps": device.steps, "note": device.note,
    }  # fmt: skip


def _demo_table(results: list[dict[str, Any]]) -> str:
    rows = [("float accuracy", "float_accuracy", "{:.4f}"), ("host accuracy", "host_accuracy", "{:.4f}"),
            ("device accuracy", "device_accuracy", "{:.4f}"), ("bit_exact", "bit_exact", "{}"),
            ("flash bytes", "flash_bytes", "{:,}"), ("sram bytes", "sram_bytes", "{:,}"),
            ("arena bytes", "arena_bytes", "{:,}"), ("arena / lower bound", "arena_to_lower_bound", "{:.3f}"),
            ("stack peak bytes", "stack_peak_bytes", "{:,}"),
            ("instructions/inference", "instructions_per_inference", "{:,}"),
            ("instructions/MAC", "instructions_per_mac", "{:.2f}")]  # fmt: skip
    width = 16
    lines = [f"{'':<26}" + "".join(f"{r['model']:>{width}}" for r in results),
             f"{'quantization':<26}" + "".join(f"{r['config']:>{width}}" for r in results),
             f"{'target':<26}" + "".join(f"{r['target'].split('=')[-1]:>{width}}" for r in results),
             f"{'board (QEMU)':<26}" + "".join(f"{r['board']:>{width}}" for r in results)]  # fmt: skip
    for label, key, fmt in rows:
        cells = []
        for r in results:
            value = ("yes" if r[key] else "NO") if key == "bit_exact" else r[key]
            cells.append(f"{fmt.format(value):>{width}}")
        lines.append(f"{label:<26}" + "".join(cells))
    lines.append("(instructions counted by QEMU with -icount shift=0; QEMU does not model cycles)")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: example models -> int8 -> C for Cortex-M -> QEMU, bit-exact against the host."""
    results = [demo_one(m, args.target, args.board, args.samples, args.opt, c) for m in args.models
               for c in args.configs]  # fmt: skip
    print()
    print(_demo_table(results))
    for r in results:
        print(f"{r['model']} ({r['config']}): bit_exact: {'yes' if r['bit_exact'] else 'no'}")
    if args.json:
        payload = results[0] if len(results) == 1 else results
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if all(r["bit_exact"] for r in results) else 1


# -- quantize / build / run ------------------------------------------------------------------------------------------
def _config(args: argparse.Namespace) -> QuantConfig:
    return QuantConfig(
        weight_bits=args.weight_bits, act_bits=args.act_bits, weight_observer=args.weight_observer,
        act_observer=args.act_observer, per_channel=not args.per_tensor, pow2_scales=args.pow2,
        weight_scheme=args.weight_scheme, act_scheme=args.act_scheme, codebook_mode=args.codebook_mode,
        quantile_center=args.quantile_center, act_symmetric=args.act_symmetric,
        pack_activations=args.pack_activations, input_bits=args.input_bits,
        ptq=_ptq_list(args.ptq), ptq_options=_ptq_options(args.ptq_option),
        ptq_seed=args.ptq_seed,
    )  # fmt: skip


def _ptq_list(text: str | None) -> list[str]:
    """``--ptq cle,mse_init,adaround`` -> the list (names are checked by QuantConfig)."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else []


def _ptq_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--ptq-option adaround.iters=2000`` (repeatable) -> ``{"adaround": {"iters": 2000}}``."""
    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        algorithm, dot, name = key.partition(".")
        if not sep or not dot or not algorithm or not name:
            raise ConfigError(f"--ptq-option {item!r}: expected ALGORITHM.OPTION=VALUE, e.g. adaround.iters=2000")
        options.setdefault(algorithm, {})[name] = _option_value(text)
    return options


def _option_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _load(args: argparse.Namespace) -> Any:
    """Calibrate and quantize a float model, or, without --calib, take a pre-quantized model as it is."""
    if args.calib is None:
        if args.ptq or args.budget:
            flag = "--ptq" if args.ptq else "--budget"
            raise ConfigError(f"{args.model}: {flag} runs on a float model with calibration data; give --calib")
        if not _is_prequantized(args.model):
            raise ConfigError(f"{args.model}: --calib is required to quantize a float model; only full-integer "
                              "int8 .tflite and QDQ/QOperator .onnx models are taken without it")  # fmt: skip
        return load_quantized(args.model)
    config = _config(args)
    if args.budget:
        from .ptq.mixed import search

        _status(f"mixed precision under {args.budget}")
        result = search(args.model, args.calib, args.budget, config)
        _status(result.table())
        config = result.config
    return quantize(args.model, args.calib, config)


def _is_prequantized(model: str) -> bool:
    """A .tflite (load_quantized says if it is float), or an .onnx holding quantization nodes (or unreadable:
    load_quantized then says what is wrong with the file)."""
    suffix = Path(model).suffix.lower()
    if suffix != ".onnx":
        return suffix == ".tflite"
    try:
        return is_quantized_onnx(onnx.load(model, load_external_data=False))
    except Exception:  # noqa: BLE001 - missing or damaged: load_quantized reports it with the file name
        return True


def cmd_quantize(args: argparse.Namespace) -> int:
    """Quantize a model file and print its layer summary (and optionally its accuracy on labelled data)."""
    qmodel = _load(args)
    print(qmodel.summary())
    if args.test:
        data = np.load(args.test)
        print(f"int8 accuracy on {args.test}: {_accuracy(qmodel.predict(data['x_test']), data['y_test']):.4f}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Quantize a model and write its standalone C library."""
    parse_target(args.target)  # a typo in the target fails before minutes of calibration
    qmodel = _load(args)
    name = args.name or Path(args.model).stem
    _status(f"building C for {args.target}")
    artifact = build(qmodel, target=args.target, name=name, io_in_arena=args.io_in_arena, database=args.database)
    out = artifact.export(args.output, overwrite=args.force)
    plan = artifact.plan
    print(qmodel.summary())
    print(f"wrote {out}: model.c, model.h, tvmq_runtime.h, tvmq.mk, tvmq.cmake, metadata.json")
    print(f"weights {artifact.metadata['weights_bytes']:,} B (flash), arena {plan.arena_bytes:,} B (RAM; "
          f"lower bound {plan.lower_bound_bytes:,} B, ratio {plan.ratio:.3f})")  # fmt: skip
    return 0


def _load_inputs(path: str) -> np.ndarray:
    file = Path(path)
    if not file.is_file():
        raise CalibrationDataError(f"input file {path} does not exist")
    if file.suffix != ".npy":
        raise CalibrationDataError(f"input file {path}: expected a .npy array (int8 codes or float32 values)")
    try:
        return np.load(file)
    except ValueError as err:
        raise CalibrationDataError(f"input file {path} is not a readable .npy array: {err}") from None


def cmd_run(args: argparse.Namespace) -> int:
    """Run an exported library on a QEMU board; print instructions and memory, optionally save outputs."""
    from .device import qemu

    result = qemu.run(args.artifact, _load_inputs(args.input), board=args.board, opt=args.opt, timeout=args.timeout)
    print(result.table())
    print(result.memory.table())
    if args.output:
        np.save(args.output, result.raw_outputs)
        _status(f"wrote raw int8 outputs {result.raw_outputs.shape} to {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return 0


# -- parser ----------------------------------------------------------------------------------------------------------
def _add_quant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="float model file (.onnx or .tflite)")
    p.add_argument(
        "--calib",
        help="calibration samples (.npy, or .npz with 'calibration'/'x'); leave out for a full-integer int8 "
        ".tflite or a QDQ/QOperator .onnx, whose own quantization is kept (tvmq.load_quantized)",
    )
    p.add_argument("--weight-bits", type=int, default=8)
    p.add_argument("--act-bits", type=int, default=8)
    p.add_argument("--weight-observer", choices=OBSERVERS, default="minmax")
    p.add_argument("--act-observer", choices=OBSERVERS, default="minmax")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weight scales")
    p.add_argument("--pow2", action="store_true", help="power-of-two scales (shift-only requantization)")
    p.add_argument("--act-symmetric", action="store_true", help="symmetric activations (zero point 0)")
    p.add_argument("--input-bits", type=int, default=None,
                   help="bits of the model input (default: the first layer's --act-bits); e.g. 8 at W3A3")  # fmt: skip
    p.add_argument("--pack-activations", action="store_true",
                   help="store uniform activations of at most 4 bits packed in the arena (LUT-requantize)")  # fmt: skip
    p.add_argument("--weight-scheme", choices=WEIGHT_SCHEMES, default="uniform",
                   help="weight levels: uniform grid or a codebook (quantile, kmeans, pow2, apot)")  # fmt: skip
    p.add_argument(
        "--act-scheme",
        choices=ACT_SCHEMES,
        default="uniform",
        help="activation levels of conv/dense outputs: uniform grid or a codebook (LUT-requantize)",
    )
    p.add_argument(
        "--quantile-center",
        choices=QUANTILE_CENTERS,
        default="mean",
        help="quantile codebooks: each level is its bin's mean or median",
    )
    p.add_argument("--codebook-mode", choices=CODEBOOK_MODES, default="per_channel",
                   help="one weight codebook per output channel, or one per layer on normalised channels")  # fmt: skip
    p.add_argument("--ptq", metavar="A,B,...",
                   help="post-training quantization steps in order, e.g. cle,mse_init,adaround,bias_correction "
                        "(tvmq.ptq; an unknown name lists the known ones)")  # fmt: skip
    p.add_argument("--ptq-option", action="append", metavar="ALG.OPTION=VALUE",
                   help="an option of a --ptq step, e.g. adaround.iters=2000 (repeatable)")  # fmt: skip
    p.add_argument("--ptq-seed", type=int, default=0, help="seed of the --ptq steps' random choices")
    p.add_argument("--budget", metavar="METRIC=VALUE",
                   help="mixed precision: per-layer bits under a budget, flash=24KB, arena=2KB or bops=1.5M "
                        "(tvmq.mixed_precision; the other options give the starting config)")  # fmt: skip


def _boards() -> list[str]:
    from .device import BOARDS

    return sorted(BOARDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvmq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cores = ", ".join(CORES)

    demo = sub.add_parser("demo", help="example model -> int8 -> C -> QEMU: accuracy, bit-exactness, size, speed")
    demo.add_argument("--models", nargs="+", default=["digits"], choices=examples.available())
    demo.add_argument("--target", default=DEFAULT_TARGET, help=f"C target (cores: {cores})")
    demo.add_argument("--board", default="mps2-an386", choices=_boards())
    demo.add_argument("--opt", default="-O2", choices=["-O2", "-Os"], help="device compiler optimisation")
    demo.add_argument("--samples", type=int, default=None, help="test samples to run (default: all)")
    demo.add_argument(
        "--configs",
        nargs="+",
        default=["int8"],
        choices=list(DEMO_CONFIGS),
        help="quantization settings to compare (int8; w4a4-quantile: 4-bit codebooks, LUT-requantize)",
    )
    demo.add_argument("--json", help="write the results as JSON (an object; a list for several runs)")
    demo.set_defaults(func=cmd_demo)

    q = sub.add_parser("quantize", help="quantize a .onnx/.tflite model and print its layer summary")
    _add_quant_options(q)
    q.add_argument("--test", help=".npz with x_test and y_test to report int8 accuracy")
    q.set_defaults(func=cmd_quantize)

    b = sub.add_parser("build", help="quantize a model and write its standalone C library")
    _add_quant_options(b)
    b.add_argument("--target", default=DEFAULT_TARGET, help=f'e.g. "c -mcpu=cortex-m4" (cores: {cores})')
    b.add_argument("-o", "--output", required=True, help="output directory (written atomically)")
    b.add_argument("--name", help="C name of the model (default: the model file's stem)")
    b.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    b.add_argument(
        "--io-in-arena",
        action="store_true",
        help="plan the model's input and output inside the arena (zero-copy tvmq_<name>_input/_output)",
    )
    b.add_argument("--database", help="tuning database written by `tvmq tune`: each kernel's best schedule")
    b.set_defaults(func=cmd_build)

    r = sub.add_parser("run", help="run an exported library on a QEMU Cortex-M board")
    r.add_argument("artifact", help="directory written by `tvmq build`")
    r.add_argument("--input", required=True, help=".npy: int8 codes or float32 values, (N, ...) or one sample")
    r.add_argument("--board", default="mps2-an386", choices=_boards())
    r.add_argument("--opt", default="-O2", choices=["-O2", "-Os"])
    r.add_argument("--timeout", type=float, default=None, help="seconds before QEMU counts as hung")
    r.add_argument("--output", help="save the raw int8 outputs to this .npy")
    r.add_argument("--json", help="write instructions, per-step counts and memory as JSON")
    r.set_defaults(func=cmd_run)

    from .device.cli_commands import register_device_commands  # tvmq deploy, tvmq profile (Zephyr, boards)

    register_device_commands(sub)
    from .tuning.cli import register_tune_command  # tvmq tune

    register_tune_command(sub, _add_quant_options, _load, _boards(), DEFAULT_TARGET)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TvmqError as err:
        print(f"tvmq: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
