"""RAM of tvmq vs TensorFlow Lite Micro (TFLM) for the same int8 network, per example model.

Why: tvmq plans every activation at compile time into one arena and has no interpreter, so it should need less RAM
than TFLM, whose arena holds both the planned activations ("head") and the interpreter's persistent structures
("tail"). This measures both on the example models that ship a full-integer int8 TFLite twin
(``tvmq/examples/data/<name>.int8.tflite``, written by ``examples/train_zoo.py`` from the same float weights):

- tvmq: the same ``.int8.tflite`` imported with its own scales, weights and biases (``tvmq.load_quantized``, which
  computes TFLM's bytes), built for Cortex-M4. ``plan.arena_bytes``
  (the static arena), ``plan.lower_bound_bytes`` (the largest sum of live activation bytes at one step of tvmq's
  execution order: no placement can use less), and one QEMU run (``mps2-an386``) on a few test samples for the
  flash (weights, model code) and the stack high-water mark (harness + model). tvmq's RAM = arena + stack peak;
  there is no runtime tail. The model input and output are caller buffers outside the arena (TFLM keeps them in
  its head), so ``arena + I/O`` is reported too.
- TFLM: the ``.int8.tflite`` in the ``tflite-micro`` Python package's interpreter (the x86-64 host build, reference
  kernels, ``RecordingMicroAllocator``). Its only accessor for arena use is ``Interpreter.print_allocations()``,
  which writes ``[RecordingMicroAllocator] Arena allocation total|head|tail N bytes`` and one line per persistent
  allocation type to the C ``stderr``; this script captures file descriptor 2 around that call and parses the text.
  head = ``GetNonPersistentUsedBytes`` (planned tensors incl. input/output + kernel scratch), tail =
  ``GetPersistentUsedBytes`` (TfLiteEvalTensors, node/registration structs, kernel OpData, ...), total = head +
  tail. The smallest ``arena_size`` with which the interpreter allocates and invokes is found by bisection; it can
  exceed total by the memory planner's temporary bookkeeping (freed once the head is planned).
  TFLM's total excludes the C stack (not measured here), and the tail comes from a 64-bit build: its pointer-holding
  structs are about half that size on a 32-bit Cortex-M. On a device with CMSIS-NN kernels the head can grow by the
  scratch buffers those kernels request; the reference kernels here request little.

Accuracy on the whole test split is informational: tvmq's integer-only host model (``QuantizedModel.predict``, which
the device matches bit for bit; checked on the QEMU samples) vs the TFLM interpreter on ``x_test`` quantized with
the TFLite input's scale and zero point (channels moved last).

Run: ``.venv/bin/python bench/memory.py`` (``--help`` for options). Writes JSON (default
``bench/results/memory.json``) and a PNG bar chart beside it, and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from baseline_instructions import gcc_version, git_revision, write_report
from tqdm.auto import tqdm

import tvmq
import tvmq.device as device

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "memory.json"
DATA_DIR = Path(tvmq.examples.__file__).resolve().parent / "data"
TFLITE_SUFFIX = ".int8.tflite"
DEVICE_SAMPLES = 2  # QEMU samples: enough for the stack high-water mark and a bit-exact check
GENEROUS_ARENA = 1 << 20  # bytes: the arena for measuring TFLM's use and its accuracy
_ALLOC_TOTAL = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_ALLOC_TYPE = re.compile(
    r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+) ([^)]*)\)"
)
_ITEMSIZE = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2, "INT8": 1,
             "FLOAT64": 8, "UINT64": 8, "UINT32": 4, "UINT16": 2, "BFLOAT16": 2}  # fmt: skip


def tflite_path(name: str) -> Path:
    return DATA_DIR / f"{name}{TFLITE_SUFFIX}"


def default_models() -> list[str]:
    """Every shipped example that has an int8 TFLite twin (looked up at run time: some appear later)."""
    return [n for n in tvmq.examples.available() if tflite_path(n).is_file()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write (the PNG goes beside it)")
    p.add_argument("--models", nargs="+", default=None,
                   help="example models to measure (default: every example with a <name>.int8.tflite)")  # fmt: skip
    p.add_argument("--board", default=device.DEFAULT_BOARD, help="QEMU board")
    p.add_argument("--opt", default="-O2", choices=device.OPT_LEVELS, help="gcc optimisation level")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.models is None:
        args.models = default_models()
    missing = [n for n in args.models if not tflite_path(n).is_file() or n not in tvmq.examples.available()]
    if missing:
        p.error(f"no example with an int8 TFLite twin for {', '.join(missing)}; have: {', '.join(default_models())}")
    if not args.models:
        p.error(f"no example model has a *{TFLITE_SUFFIX} file in {DATA_DIR}")
    return args


# ----------------------------------------------------------------------------------------------------------- tvmq


def measure_tvmq(ex: tvmq.examples.ExampleModel, args: argparse.Namespace, mcpu: str) -> dict[str, Any]:
    """The same int8 TFLite file TFLM runs, imported with its own integers (``tvmq.load_quantized``): evaluate on
    the host, build, run on QEMU; the plan, flash, stack and accuracy."""
    q = tvmq.load_quantized(tflite_path(ex.name))
    x_test = channels_last(ex.x_test, q.input_shape)
    pred = np.argmax(q.predict(x_test), axis=-1)
    art = tvmq.build(q, target=f"c -mcpu={mcpu}", name=ex.name)
    x = x_test[:DEVICE_SAMPLES]
    res = tvmq.qemu.run(art, x, board=args.board, opt=args.opt, progress=False)
    bit_exact = bool(np.array_equal(res.raw_outputs, q.run_int(q.quantize_input(x))))
    plan, meta = art.plan, art.metadata
    in_bytes, out_bytes = int(meta["input"]["bytes"]), int(meta["output"]["bytes"])
    stack = int(res.stack_peak_bytes)
    peak = tvmq_peak(art)
    largest = max((b.nbytes for b in plan.buffers), default=0)
    io_arena = tvmq.build(q, target=f"c -mcpu={mcpu}", name=ex.name, io_in_arena=True).plan.arena_bytes
    return {
        "arena_io_in_arena_bytes": io_arena,
        "arena_bytes": plan.arena_bytes, "lower_bound_bytes": plan.lower_bound_bytes,
        "arena_to_lower_bound": round(plan.ratio, 4), "device_arena_bytes": res.memory.arena_bytes,
        "input_bytes": in_bytes, "output_bytes": out_bytes,
        "arena_plus_io_bytes": plan.arena_bytes + in_bytes + out_bytes,
        "stack_peak_bytes": stack, "ram_bytes": plan.arena_bytes + stack,
        "ram_plus_io_bytes": plan.arena_bytes + stack + in_bytes + out_bytes,
        "largest_arena_tensor_bytes": largest,
        "largest_activation_bytes": max(largest, in_bytes, out_bytes),
        "weights_bytes": res.memory.weights_bytes, "model_code_bytes": res.memory.model_code_bytes,
        "flash_bytes": res.memory.flash_bytes, "firmware_sram_bytes": res.memory.sram_bytes,
        "correct": int(np.count_nonzero(pred == ex.y_test)), "accuracy": float(np.mean(pred == ex.y_test)),
        "predictions": pred, "device_samples": len(x), "bit_exact": bit_exact, "steps": len(meta["steps"]),
        "peak": peak,
    }  # fmt: skip


def tvmq_peak(art: tvmq.Artifact) -> dict[str, Any]:
    """The step of tvmq's order with the most live arena bytes and the buffers live there (the lower bound's step)."""
    steps = [s["name"] for s in art.metadata["steps"]]
    buffers = art.plan.buffers
    live = [sum(b.nbytes for b in buffers if b.first <= s <= b.last) for s in range(len(steps))]
    if not live:
        return {"step": None, "bytes": 0, "live": []}
    s = int(np.argmax(live))
    return {"step": s, "step_name": steps[s], "bytes": live[s],
            "live": [{"tensors": [t.name for t in b.tensors], "bytes": b.nbytes,
                      "written_by": steps[b.first], "last_read_by": steps[b.last]}
                     for b in sorted(buffers, key=lambda b: -b.nbytes) if b.first <= s <= b.last]}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- TFLM


@contextlib.contextmanager
def captured_fd2() -> Iterator[dict[str, str]]:
    """Redirect file descriptor 2 (C stderr, where TFLM's MicroPrintf writes) into a temporary file; the text is
    in ``box["text"]`` after the block."""
    box: dict[str, str] = {}
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield box
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box["text"] = tmp.read().decode(errors="replace")


def parse_allocations(text: str) -> dict[str, Any]:
    """``print_allocations`` text -> total/head/tail bytes and the persistent allocations by type."""
    totals = {k: int(v) for k, v in _ALLOC_TOTAL.findall(text)}
    if set(totals) != {"total", "head", "tail"}:
        raise RuntimeError(f"unexpected TFLM print_allocations output (no total/head/tail lines):\n{text}")
    types = [{"type": t, "bytes": int(used), "requested_bytes": int(req), "count": int(n), "unit": unit}
             for t, used, req, n, unit in _ALLOC_TYPE.findall(text)]  # fmt: skip
    return {"total_bytes": totals["total"], "head_bytes": totals["head"], "tail_bytes": totals["tail"],
            "tail_by_type": types, "tail_unlisted_bytes": totals["tail"] - sum(t["bytes"] for t in types)}  # fmt: skip


def _interpreter(model: bytes, arena_size: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena_size)


def _invoke_zeros(interp) -> None:
    d = interp.get_input_details(0)
    interp.set_input(np.zeros(d["shape"], dtype=d["dtype"]), 0)
    interp.invoke()


_PROBE = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
try:
    it = runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2]))
    d = it.get_input_details(0)
    it.set_input(np.zeros(d["shape"], dtype=d["dtype"]), 0)
    it.invoke()
except RuntimeError:
    sys.exit(3)
"""


def smallest_arena(path: Path, used: int, high: int) -> dict[str, Any]:
    """The smallest ``arena_size`` with which the interpreter allocates its tensors and invokes once.

    Each probe runs in a child process: with some too-small arenas TFLM crashes (SIGSEGV while a kernel's Prepare
    fails) instead of returning an error. Bisection between a failing size below ``used`` (TFLM's reported total)
    and a working one at or above it; assumes that any larger arena works too."""
    outcomes: dict[int, int] = {}

    def works(n: int) -> bool:
        if n not in outcomes:
            proc = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(n)], capture_output=True)
            outcomes[n] = proc.returncode
        return outcomes[n] == 0

    hi = used
    while not works(hi):
        if hi >= high:
            raise RuntimeError(f"TFLM does not run {path.name} even with a {high}-byte arena")
        hi = min(high, hi + max(16, hi // 8))
    lo, step = hi, 64
    while lo > 0 and works(lo):
        hi, lo, step = lo, max(0, lo - step), 2 * step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if works(mid) else (mid, hi)
    return {"bytes": hi, "minus_total": hi - used, "probes": len(outcomes),
            "crashed_probes": sorted(n for n, rc in outcomes.items() if rc < 0)}  # fmt: skip


def tflite_graph(model: bytes) -> dict[str, Any]:
    """Constant bytes, activation tensors and their liveness in TFLite's operator order (the order TFLM runs and
    plans in): the largest activation tensor and the peak sum of live activation bytes (a lower bound of TFLM's
    planned tensor area, before its 16-byte alignment and kernel scratch)."""
    from tflite_micro.python.tflite_micro import runtime
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    m = runtime.convert_bytearray_to_object(model)
    type_name = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_name = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sg = m.subgraphs[0]

    def const(i: int) -> bool:
        b = m.buffers[sg.tensors[i].buffer]
        return b.data is not None and len(b.data) > 0

    def nbytes(i: int) -> int:
        t = sg.tensors[i]
        n = int(np.prod(t.shape, dtype=np.int64)) if t.shape is not None else 1
        return n * _ITEMSIZE[type_name[t.type]]

    ops = [op_name[runtime.get_builtin_code_from_operator_code(m.operatorCodes[op.opcodeIndex])]
           for op in sg.operators]  # fmt: skip
    first, last = {}, {}
    for i in sg.inputs:
        first[i] = last[i] = 0
    for k, op in enumerate(sg.operators):
        for i in op.inputs:
            if i >= 0 and not const(i):
                first.setdefault(i, k)
                last[i] = k
        for i in op.outputs:
            first.setdefault(i, k)
            last[i] = max(last.get(i, k), k)
    for i in sg.outputs:
        last[i] = len(ops) - 1
    live = [sum(nbytes(i) for i in first if first[i] <= k <= last[i]) for k in range(len(ops))]
    k = int(np.argmax(live))
    name = lambda i: sg.tensors[i].name.decode(errors="replace")  # noqa: E731
    return {
        "ops": len(ops), "op_kinds": sorted(set(ops)),
        "const_bytes": sum(len(m.buffers[b].data) for b in {sg.tensors[i].buffer for i in range(len(sg.tensors))
                                                                 if const(i)}),
        "input_bytes": sum(nbytes(i) for i in sg.inputs), "output_bytes": sum(nbytes(i) for i in sg.outputs),
        "activation_tensors": len(first), "largest_activation_bytes": max(nbytes(i) for i in first),
        "liveness_lower_bound_bytes": live[k],
        "peak": {"op": k, "op_kind": ops[k], "bytes": live[k],
                 "live": [{"tensor": name(i), "bytes": nbytes(i), "shape": [int(d) for d in sg.tensors[i].shape],
                           "first_op": ops[first[i]], "last_op": ops[last[i]]}
                          for i in sorted(first, key=lambda i: -nbytes(i)) if first[i] <= k <= last[i]]},
    }  # fmt: skip


def measure_tflm(ex: tvmq.examples.ExampleModel, path: Path, progress: bool) -> dict[str, Any]:
    """TFLM's arena use (head/tail/total), the smallest working arena_size, the graph's liveness and accuracy."""
    model = path.read_bytes()
    generous = max(GENEROUS_ARENA, 10 * len(model))
    interp = _interpreter(model, generous)
    _invoke_zeros(interp)
    with captured_fd2() as box:
        interp.print_allocations()
    alloc = parse_allocations(box["text"])
    inp, outp = interp.get_input_details(0), interp.get_output_details(0)
    x = channels_last(ex.x_test, tuple(int(d) for d in inp["shape"]))
    if np.dtype(inp["dtype"]) == np.int8:
        scale, zero = float(inp["quantization_parameters"]["scales"][0]), int(inp["quantization_parameters"]
                                                                               ["zero_points"][0])  # fmt: skip
        x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    else:
        x = x.astype(inp["dtype"])
    preds = []
    for i in tqdm(range(len(x)), desc=f"{ex.name} TFLM", unit="sample", leave=False, disable=not progress):
        interp.set_input(x[i : i + 1], 0)
        interp.invoke()
        preds.append(int(np.argmax(interp.get_output(0).reshape(-1))))
    pred = np.array(preds)
    return {
        **alloc, "smallest_arena": smallest_arena(path, alloc["total_bytes"], generous),
        "tflite_file_bytes": len(model),
        "input": {"shape": [int(d) for d in inp["shape"]], "dtype": np.dtype(inp["dtype"]).name},
        "output": {"shape": [int(d) for d in outp["shape"]], "dtype": np.dtype(outp["dtype"]).name},
        "graph": tflite_graph(model), "correct": int(np.count_nonzero(pred == ex.y_test)),
        "accuracy": float(np.mean(pred == ex.y_test)), "predictions": pred,
        "allocations_text": box["text"].strip().splitlines(),
    }  # fmt: skip


def channels_last(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` (N, C, ...) in the TFLite input's (1, ..., C) layout; checked against the TFLite input shape."""
    if tuple(x.shape[1:]) == shape[1:]:
        return x
    moved = np.moveaxis(x, 1, -1)
    if tuple(moved.shape[1:]) != shape[1:]:
        raise RuntimeError(f"test inputs {x.shape} fit the TFLite input {shape} neither as is nor channels-last")
    return np.ascontiguousarray(moved)


# ----------------------------------------------------------------------------------------------------------- rows


def measure(name: str, args: argparse.Namespace, mcpu: str) -> dict[str, Any]:
    """One JSON row; an exception becomes an error row (reported at the end) so the other models still run."""
    row: dict[str, Any] = {"model": name, "status": "ok"}
    started = time.monotonic()
    try:
        ex = tvmq.examples.load(name)
        t = measure_tvmq(ex, args, mcpu)
        f = measure_tflm(ex, tflite_path(name), not args.no_progress)
    except Exception as err:
        row.update(status="error", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        return row
    agree = int(np.count_nonzero(t.pop("predictions") == f.pop("predictions")))
    row.update(
        description=ex.description, test_samples=len(ex.y_test), float_accuracy=ex.float_accuracy,
        tvmq=t, tflm=f, predictions_agree=agree,
        tflite_ref_accuracy=json.loads((DATA_DIR / f"{name}.json").read_text()).get("tflite_int8_accuracy"),
        ratios={
            "tvmq_arena_over_tflm_head": _ratio(t["arena_bytes"], f["head_bytes"]),
            "tvmq_arena_plus_io_over_tflm_head": _ratio(t["arena_plus_io_bytes"], f["head_bytes"]),
            "tvmq_io_in_arena_over_tflm_head": _ratio(t["arena_io_in_arena_bytes"], f["head_bytes"]),
            "tvmq_lower_bound_over_tflm_head": _ratio(t["lower_bound_bytes"], f["head_bytes"]),
            "tvmq_arena_plus_stack_over_tflm_total": _ratio(t["ram_bytes"], f["total_bytes"]),
            "tvmq_arena_plus_stack_plus_io_over_tflm_total": _ratio(t["ram_plus_io_bytes"], f["total_bytes"]),
            "tvmq_arena_plus_stack_over_tflm_smallest_arena": _ratio(t["ram_bytes"], f["smallest_arena"]["bytes"]),
            "tvmq_weights_over_tflm_const": _ratio(t["weights_bytes"], f["graph"]["const_bytes"]),
        },
        checks=checks(t, f), seconds=round(time.monotonic() - started, 2),
    )  # fmt: skip
    return row


def checks(t: dict[str, Any], f: dict[str, Any]) -> dict[str, bool]:
    """Sanity bounds that must hold if the numbers mean what they say."""
    g = f["graph"]
    return {
        "tvmq_largest_arena_tensor <= lower_bound <= arena": t["largest_arena_tensor_bytes"]
        <= t["lower_bound_bytes"]
        <= t["arena_bytes"],
        "tvmq_plan_arena == linked .bss.tvmq_arena": t["arena_bytes"] == t["device_arena_bytes"],
        "tvmq_device == host run_int": t["bit_exact"],
        "tflm_largest_activation <= liveness_bound <= head": g["largest_activation_bytes"]
        <= g["liveness_lower_bound_bytes"]
        <= f["head_bytes"],
        "tflm_head + tail == total": f["head_bytes"] + f["tail_bytes"] == f["total_bytes"],
        "tflm_head <= smallest_arena_size": f["head_bytes"] <= f["smallest_arena"]["bytes"],
        "same input/output bytes": (t["input_bytes"], t["output_bytes"]) == (g["input_bytes"], g["output_bytes"]),
    }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def report(rows: list[dict], args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """The JSON document."""
    from importlib.metadata import version

    board = device.get_board(args.board)
    failed_checks = [f"{r['model']}: {k}" for r in rows if r["status"] == "ok" for k, ok in r["checks"].items()
                     if not ok]  # fmt: skip
    return {
        "benchmark": "memory",
        "what": "RAM of tvmq (static arena, liveness lower bound, measured stack peak) vs TensorFlow Lite Micro "
        "(arena head = planned tensors + scratch, tail = persistent interpreter structures, total) for the same "
        "int8 network; flash for weights; accuracy of both on the test split (informational)",
        "board": board.name, "core": board.core.name, "cflags": [*board.core.cflags, args.opt], "opt": args.opt,
        "tvmq_version": tvmq.__version__, "tflite_micro_version": version("tflite_micro"), "git": git_revision(),
        "gcc": gcc_version(), "device_samples": DEVICE_SAMPLES,
        "tvmq_side": "tvmq.load_quantized(<name>.int8.tflite) (the file's own integers); tvmq.build(target="
        f"'c -mcpu={board.core.name}'); arena_bytes and lower_bound_bytes from artifact.plan (lower bound: the "
        "largest sum of live arena-buffer bytes at one step of tvmq's execution order); weights/flash from the "
        "linked firmware's map (tvmq.device.memory); stack_peak_bytes is the deepest stack seen on QEMU over the "
        "device samples, harness + model. ram_bytes = arena + stack peak (no runtime tail). The model input and "
        "output are caller buffers outside the arena: *_plus_io adds their bytes; arena_io_in_arena_bytes is the "
        "arena of tvmq.build(io_in_arena=True), which plans them inside it as TFLM's head does",
        "tflm_side": "tflite_micro.python.tflite_micro.runtime.Interpreter.from_bytes(<name>.int8.tflite, "
        f"arena_size={GENEROUS_ARENA}) (the package's x86-64 host build, reference kernels, "
        "RecordingMicroAllocator); after one invoke, print_allocations() writes '[RecordingMicroAllocator] Arena "
        "allocation total|head|tail N bytes' and per-type persistent allocation lines to the C stderr, which is "
        "captured at file descriptor 2 and parsed (the package exposes no other accessor). head = non-persistent "
        "bytes (planned tensors incl. the model input and output, kernel scratch), tail = persistent bytes "
        "(TfLiteEvalTensor array, NodeAndRegistration structs, kernel OpData, persistent TfLiteTensors), total = "
        "head + tail. smallest_arena: bisection on arena_size for a successful allocate + invoke, each probe in a "
        "child process (crashed_probes: sizes at which TFLM died with a signal instead of failing cleanly); it can "
        "exceed total: while allocating, TFLM's GreedyMemoryPlanner keeps its per-buffer bookkeeping in temporary "
        "arena memory ('Too many buffers (max is N)' when short), which is freed before the head is committed. "
        "tail_unlisted_bytes: tail not itemised by print_allocations (the allocator objects, subgraph and scratch "
        "handle arrays, ...). "
        "graph.liveness_lower_bound_bytes: the largest sum of live non-constant tensor bytes at one operator of "
        "the TFLite order (input/output included), computed here from the flatbuffer",
        "caveats": [
            "TFLM's total excludes the C stack (not measured); tvmq's ram_bytes includes its measured stack peak",
            "TFLM's tail is from a 64-bit host build: structs holding pointers (TfLiteEvalTensor 24 vs 12 bytes, "
            "NodeAndRegistration, OpData) are smaller on a 32-bit Cortex-M, so the device tail would be smaller",
            "TFLM with CMSIS-NN kernels on a Cortex-M requests kernel scratch buffers (e.g. im2col) in the head that "
            "the reference kernels here do not; tvmq's kernels keep their scratch on the stack",
            "the TFLite graph is the TFLiteConverter's (e.g. explicit PAD operators with their own padded tensors); "
            "tvmq's comes from the ONNX model (padding inside the conv kernels)",
        ],
        "accuracy": "tvmq: QuantizedModel.predict (integer-only host model, equal to the device's run: bit_exact "
        "on the device samples); TFLM: its interpreter on x_test moved channels-last and quantized with the "
        "TFLite input's scale/zero point; both on the whole test split. predictions_agree: test samples where both "
        "predict the same class; tflite_ref_accuracy: TensorFlow Lite's BUILTIN_REF interpreter on the same file, "
        "as recorded in <name>.json by examples/train_zoo.py (a cross-check of the TFLM run)",
        "failed_checks": failed_checks,
        "errors": [f"{r['model']}: {r['error']}" for r in rows if r["status"] == "error"],
        "runtime_seconds": round(seconds, 1), "rows": rows,
    }  # fmt: skip


def table(doc: dict[str, Any]) -> str:
    """RAM, flash and accuracy per model."""
    head = (f"{'model':<14}{'arena':>7}{'lower':>7}{'+I/O':>7}{'stack':>7}{'RAM':>7} |{'head':>7}{'tail':>7}"
            f"{'total':>7}{'min':>7}{'live':>7} |{'ar/hd':>7}{'ar+io/hd':>9}{'RAM/tot':>8} |{'weights':>8}"
            f"{'consts':>8}{'.tflite':>8} |{'acc tvmq':>9}{'acc TFLM':>9}")  # fmt: skip
    lines = ["bytes; tvmq: arena, liveness lower bound, arena + input + output, stack peak (QEMU, harness + model), "
             "RAM = arena + stack | TFLM: head, tail, total = head + tail (no stack), smallest working arena_size, "
             "liveness bound of the TFLite graph", head, "-" * len(head)]  # fmt: skip
    for r in doc["rows"]:
        if r["status"] != "ok":
            lines.append(f"{r['model']:<14}  error: {r['error'].splitlines()[0][:100]}")
            continue
        t, f, x = r["tvmq"], r["tflm"], r["ratios"]
        lines.append(
            f"{r['model']:<14}{t['arena_bytes']:>7,}{t['lower_bound_bytes']:>7,}{t['arena_plus_io_bytes']:>7,}"
            f"{t['stack_peak_bytes']:>7,}{t['ram_bytes']:>7,} |{f['head_bytes']:>7,}{f['tail_bytes']:>7,}"
            f"{f['total_bytes']:>7,}{f['smallest_arena']['bytes']:>7,}{f['graph']['liveness_lower_bound_bytes']:>7,} |"
            f"{x['tvmq_arena_over_tflm_head']:>7.3f}{x['tvmq_arena_plus_io_over_tflm_head']:>9.3f}"
            f"{x['tvmq_arena_plus_stack_over_tflm_total']:>8.3f} |{t['weights_bytes']:>8,}"
            f"{f['graph']['const_bytes']:>8,}{f['tflite_file_bytes']:>8,} |{100 * t['accuracy']:>8.2f}%"
            f"{100 * f['accuracy']:>8.2f}%"
        )
    lines.append("(ar/hd = tvmq arena / TFLM head; ar+io/hd counts tvmq's caller-owned input and output buffers, "
                 "which TFLM keeps in its head; RAM/tot = tvmq (arena + stack) / TFLM total, which excludes TFLM's "
                 "stack; weights: tvmq .rodata.tvmq_weights, consts: TFLite constant buffers)")  # fmt: skip
    lines.append("peak steps (tvmq: step of its lower bound; TFLM graph: operator of its liveness bound):")
    for r in doc["rows"]:
        if r["status"] != "ok":
            continue
        p, g = r["tvmq"]["peak"], r["tflm"]["graph"]["peak"]
        tv = " + ".join(f"{'/'.join(b['tensors'])} {b['bytes']}" for b in p["live"])
        tf = " + ".join(f"{b['first_op']}->{'x'.join(map(str, b['shape']))} {b['bytes']}" for b in g["live"])
        lines.append(f"  {r['model']}: tvmq @{p.get('step_name')} {p['bytes']:,} = {tv}")
        lines.append(f"  {'':<{len(r['model'])}}  TFLM @op {g['op']} {g['op_kind']} {g['bytes']:,} = {tf}")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Left: RAM bars per model (tvmq arena, lower bound, arena + stack; TFLM head, total). Right: weight flash."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["rows"] if r["status"] == "ok"]
    ram = [("tvmq arena", "C0", lambda r: r["tvmq"]["arena_bytes"], None),
           ("tvmq lower bound", "C0", lambda r: r["tvmq"]["lower_bound_bytes"], "//"),
           ("tvmq arena + stack", "C9", lambda r: r["tvmq"]["ram_bytes"], None),
           ("TFLM head", "C1", lambda r: r["tflm"]["head_bytes"], None),
           ("TFLM total (head + tail, no stack)", "C3", lambda r: r["tflm"]["total_bytes"], None)]  # fmt: skip
    flash = [("tvmq weights", "C0", lambda r: r["tvmq"]["weights_bytes"], None),
             ("TFLite constant buffers", "C1", lambda r: r["tflm"]["graph"]["const_bytes"], None),
             (".tflite file", "C3", lambda r: r["tflm"]["tflite_file_bytes"], None)]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(max(10.0, 2.6 * len(rows) + 5), 4.8),
                             gridspec_kw={"width_ratios": [1.6, 1]})  # fmt: skip
    pos = np.arange(len(rows))
    for ax, series, title in ((axes[0], ram, "RAM (bytes)"), (axes[1], flash, "flash for weights (bytes)")):
        width = 0.8 / len(series)
        for i, (lab, color, get, hatch) in enumerate(series):
            vals = [get(r) for r in rows]
            bars = ax.bar(pos + (i - (len(series) - 1) / 2) * width, vals, width, label=lab, color=color,
                          hatch=hatch, alpha=0.55 if hatch else 1.0, edgecolor="k", linewidth=0.4)  # fmt: skip
            ax.bar_label(bars, labels=[f"{v / 1024:.1f}k" for v in vals], fontsize=6, rotation=90, padding=2)
        ax.set_xticks(pos, [r["model"] for r in rows], fontsize=8)
        ax.set_ylabel(title)
        ax.margins(y=0.18)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    for r, p in zip(rows, pos, strict=True):
        axes[0].annotate(f"{r['ratios']['tvmq_arena_over_tflm_head']:.2f}x head", (p, 0), xytext=(0, -22),
                         textcoords="offset points", ha="center", fontsize=7, annotation_clip=False)  # fmt: skip
    fig.suptitle(f"tvmq ({doc['core']}, gcc {doc['opt']}, stack on QEMU {doc['board']}) vs TFLite Micro "
                 f"(host build, arena from RecordingMicroAllocator): same int8 networks", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    mcpu = device.get_board(args.board).core.name
    rows = []
    bar = tqdm(args.models, desc="models", unit="model", disable=args.no_progress)
    for name in bar:
        bar.set_postfix_str(name)
        rows.append(measure(name, args, mcpu))
    doc = report(rows, args, time.monotonic() - started)
    write_report(doc, args.out, plot, table)
    failed = False
    if doc["failed_checks"]:
        print("\nBUG: sanity checks failed: " + "; ".join(doc["failed_checks"]), file=sys.stderr)
        failed = True
    if doc["errors"]:
        print("\nERROR: models that failed:\n  " + "\n  ".join(doc["errors"]), file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
