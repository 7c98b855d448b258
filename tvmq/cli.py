"""The ``tvmq`` command line: thin argument parsing over the library, progress on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import examples
from .config import OBSERVERS, QuantConfig
from .errors import TvmqError
from .quant.quantize import quantize


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs.reshape(len(outputs), -1), axis=1) == labels))


def cmd_demo(args: argparse.Namespace) -> int:
    """Quantize the example models to int8 and report float vs integer accuracy on the host."""
    results = []
    for name in args.models:
        example = examples.load(name)
        print(f"== {name}: {example.description}", file=sys.stderr)
        start = time.perf_counter()
        qmodel = quantize(example.model_path, example.calibration, QuantConfig())
        seconds = time.perf_counter() - start
        host = _accuracy(qmodel.predict(example.x_test), example.y_test)
        agreement = qmodel.int_vs_simulated(example.x_test)
        print(qmodel.summary())
        results.append({
            "model": name, "float_accuracy": example.float_accuracy, "host_accuracy": host,
            "test_samples": int(len(example.y_test)), "int_vs_simulated": agreement,
            "weight_bytes": sum(r["weight_bytes"] for r in qmodel.layer_stats()),
            "peak_activation_bytes": qmodel.peak_activation_bytes(), "quantize_seconds": round(seconds, 2),
        })  # fmt: skip
    print()
    print(f"{'model':<14}{'float acc':>10}{'int8 acc':>10}{'>1 LSB vs sim':>15}{'weights B':>11}{'peak act B':>12}")
    for r in results:
        print(f"{r['model']:<14}{r['float_accuracy']:>10.4f}{r['host_accuracy']:>10.4f}"
              f"{r['int_vs_simulated']['fraction_over_1_lsb']:>15.4f}{r['weight_bytes']:>11}"
              f"{r['peak_activation_bytes']:>12}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    """Quantize a model file and print its layer summary (and optionally its accuracy on labelled data)."""
    config = QuantConfig(
        weight_bits=args.weight_bits, act_bits=args.act_bits, weight_observer=args.weight_observer,
        act_observer=args.act_observer, per_channel=not args.per_tensor, pow2_scales=args.pow2,
    )  # fmt: skip
    qmodel = quantize(args.model, args.calib, config)
    print(qmodel.summary())
    if args.test:
        data = np.load(args.test)
        print(f"int8 accuracy on {args.test}: {_accuracy(qmodel.predict(data['x_test']), data['y_test']):.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvmq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="quantize the example models and report accuracies")
    demo.add_argument("--models", nargs="+", default=["digits", "basicmotions"], choices=examples.available())
    demo.add_argument("--json", help="also write the results to this JSON file")
    demo.set_defaults(func=cmd_demo)
    q = sub.add_parser("quantize", help="quantize a .onnx/.tflite model with calibration data")
    q.add_argument("model", help="float model file (.onnx or .tflite)")
    q.add_argument("--calib", required=True, help="calibration samples (.npy or .npz)")
    q.add_argument("--weight-bits", type=int, default=8)
    q.add_argument("--act-bits", type=int, default=8)
    q.add_argument("--weight-observer", choices=OBSERVERS, default="minmax")
    q.add_argument("--act-observer", choices=OBSERVERS, default="minmax")
    q.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weight scales")
    q.add_argument("--pow2", action="store_true", help="power-of-two scales (shift-only requantization)")
    q.add_argument("--test", help=".npz with x_test and y_test to report int8 accuracy")
    q.set_defaults(func=cmd_quantize)
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
