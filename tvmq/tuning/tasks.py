"""Tuning tasks: one per distinct kernel (PrimFunc) of a model, with the data its candidates are measured on.

Why per PrimFunc: ``tvmq.build`` emits one C function per distinct PrimFunc (Relax shares structurally equal ones),
and the database is keyed by the PrimFunc, so a record applies to every step that calls the kernel. A task's weight
is the number of calls per inference: MetaSchedule's gradient task scheduler minimises sum(weight * latency), and
latency (QEMU instructions) already grows with the MACs. The MACs order the tasks for the first round.

Each task carries its kernel's real constants (weights, biases, multipliers as in the model: gcc folds constants of
small layers, so timing must see the same ones), random activations (``INPUT_SETS`` sets: uniform, and one biased
to the int8 extremes to exercise saturation), and the reference outputs: TVM's host (LLVM) build of the untuned
PrimFunc on those inputs. In-place kernels (PrimFunc attr ``tvmq.inplace`` non-empty) record which input the output
overwrites on the device and by how many bytes it starts before it (``tvmq.inplace_shift``), so candidates run
aliased exactly as ``tvmq.build`` plans them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, tirx

from ..codegen.emit import kernel_symbol
from ..codegen.graph import Program, read_program
from ..codegen.slices import write_concat_slices
from ..quant.model import QuantizedModel
from ..schedules.inplace import slab_mode
from .lower import func_hash

INPUT_SETS = 2
SEED = 20261101


@dataclass(frozen=True)
class InPlace:
    """On the device the output overwrites input ``index``, starting ``shift`` bytes before it."""

    index: int
    shift: int


@dataclass
class Task:
    """One distinct kernel to tune."""

    key: str  # structural hash of the PrimFunc (hex): names the task in candidates and in the database
    name: str  # the first step calling it, e.g. "conv2d_2"
    func: tirx.PrimFunc  # the untuned PrimFunc: MetaSchedule's workload
    symbols: list[str]  # C symbols of the program's kernels that are this PrimFunc
    calls: int  # calls per inference
    macs: int  # multiply-accumulates per call (0 for kernels without a reduction over weights)
    op: str
    inplace: InPlace | None
    slab: str | None  # "channel" | "pixel" | "element" when the PrimFunc has an in-place slab stage
    constant: list[bool]  # per input parameter: the model's constant (else random activations)
    inputs: list[list[np.ndarray]] = field(default_factory=list)  # per input set: one array per input parameter
    reference: list[np.ndarray] = field(default_factory=list)  # per input set: the expected output
    base: str | None = None  # set on a task whose workload is the default schedule of task ``base``

    @property
    def weight(self) -> float:
        return float(self.calls)

    @property
    def order_sensitive(self) -> bool:
        """The kernel writes over an input that other output elements still read (in-place channel/pixel slabs)."""
        return self.inplace is not None and self.slab in ("channel", "pixel")

    @property
    def out_param(self) -> tirx.Buffer:
        return self.func.params[-1]

    def out_bytes(self) -> int:
        return _nbytes(self.out_param)


def on_default(task: Task, scheduled: tirx.PrimFunc) -> Task:
    """The task of tuning *on top of* the default schedule: its workload is ``scheduled`` (the default schedule of
    ``task``'s PrimFunc), same data, reference and in-place layout. Keyed by that PrimFunc, its records only ever
    match while the default schedule stays the same."""
    return replace(task, key=func_hash(scheduled), func=scheduled, base=task.key)


def _nbytes(buf: Any) -> int:
    return int(np.prod([int(d) for d in buf.shape], dtype=np.int64)) * np.dtype(str(buf.dtype)).itemsize


def model_program(model: QuantizedModel) -> Program:
    """The program ``tvmq.build`` compiles (concat producers writing their slices)."""
    return write_concat_slices(read_program(model.int_mod))


def extract_tasks(model: QuantizedModel, *, seed: int = SEED) -> list[Task]:
    """One task per distinct PrimFunc of the model's ``main``, largest MACs first, with data and references."""
    program = model_program(model)
    tasks: dict[str, Task] = {}
    order: list[str] = []
    for step in program.steps:
        func = program.kernels[step.kernel]
        key = func_hash(func)
        task = tasks.get(key)
        if task is not None and not tvm_ffi.structural_equal(task.func, func):
            key = f"{key}-{len(order)}"  # a hash collision: keep them apart
            task = None
        if task is None:
            attrs = dict(func.attrs or {})
            inplace = [int(k) for k in attrs.get("tvmq.inplace", [])]
            task = Task(
                key=key, name=step.name, func=func, symbols=[], calls=0,
                macs=int(attrs.get("tvmq.macs", 0)), op=str(attrs.get("tvmq.op", step.name)),
                inplace=InPlace(inplace[0], int(attrs.get("tvmq.inplace_shift", 0))) if inplace else None,
                slab=_slab(func), constant=[t.kind == "const" for t in step.inputs],
            )  # fmt: skip
            consts = [t.value if t.kind == "const" else None for t in step.inputs]
            task.inputs, task.reference = _data(func, consts, np.random.default_rng([seed, len(order)]))
            tasks[key] = task
            order.append(key)
        symbol = kernel_symbol(step.kernel)
        if symbol not in task.symbols:
            task.symbols.append(symbol)
        task.calls += 1
    return sorted((tasks[k] for k in order), key=lambda t: -t.macs * t.calls)


def _slab(func: tirx.PrimFunc) -> str | None:
    modes = {slab_mode(name) for name in block_names(func)}
    return next((m for m in ("channel", "pixel", "element") if m in modes), None)


def block_names(func: tirx.PrimFunc) -> list[str]:
    """Names of every block of a PrimFunc in S-TIR form, outer first."""
    sch = s_tir.Schedule(func)
    names, todo = [], list(sch.get_child_blocks(sch.get_sblock("root")))
    while todo:
        block = todo.pop(0)
        names.append(sch.get(block).name_hint)
        todo += sch.get_child_blocks(block)
    return names


KernelSpec = tirx.PrimFunc | tuple[tirx.PrimFunc, Mapping[str, np.ndarray]]

# Ranges of tvmq's quantization parameters by PrimFunc parameter name (``schedules/primfuncs.py``'s convention), for
# kernels tuned without their constants: outside them the requantization shifts by 32 or more bits, which C and
# LLVM leave undefined, and host and device would disagree for reasons no schedule causes.
_PARAM_RANGES = {"mult": (1 << 30, (1 << 31) - 1), "shift": (-12, 0), "bias": (-(1 << 16), 1 << 16)}


def kernel_tasks(funcs: Mapping[str, KernelSpec], *, seed: int = SEED) -> list[Task]:
    """Tasks of kernels given alone (e.g. a benchmark's layers), one call each: ``name -> PrimFunc`` (inputs random;
    parameters named ``mult``, ``shift``, ``bias`` drawn in the ranges a quantized model has) or ``name ->
    (PrimFunc, {parameter name: constant array})`` with the kernel's real constants."""
    tasks: dict[str, Task] = {}
    for i, (name, spec) in enumerate(funcs.items()):
        func, given = (spec, {}) if isinstance(spec, tirx.PrimFunc) else (spec[0], dict(spec[1]))
        key = func_hash(func)
        if key in tasks:
            tasks[key].symbols.append(name)
            tasks[key].calls += 1
            continue
        attrs = dict(func.attrs or {})
        inplace = [int(k) for k in attrs.get("tvmq.inplace", [])]
        params = list(func.params)[:-1]
        unknown = set(given) - {p.name for p in params}
        if unknown:
            raise ValueError(f"kernel {name}: no input parameter named {sorted(unknown)}")
        rng = np.random.default_rng([seed, i])
        consts = [given.get(p.name, _quant_param(rng, p)) for p in params]
        task = Task(
            key=key, name=name, func=func, symbols=[name], calls=1, macs=int(attrs.get("tvmq.macs", 0)),
            op=str(attrs.get("tvmq.op", name)),
            inplace=InPlace(inplace[0], int(attrs.get("tvmq.inplace_shift", 0))) if inplace else None,
            slab=_slab(func), constant=[c is not None for c in consts],
        )  # fmt: skip
        task.inputs, task.reference = _data(func, consts, rng)
        tasks[key] = task
    return sorted(tasks.values(), key=lambda t: -t.macs * t.calls)


def _quant_param(rng: np.random.Generator, param: Any) -> np.ndarray | None:
    """A valid random quantization parameter for a parameter named like tvmq's (None: an activation, random)."""
    bounds = _PARAM_RANGES.get(str(param.name))
    if bounds is None or str(param.dtype) != "int32":
        return None
    shape = tuple(int(d) for d in param.shape)
    return rng.integers(bounds[0], bounds[1], size=shape, endpoint=True, dtype=np.int64).astype(np.int32)


def _data(func: tirx.PrimFunc, consts: Sequence[np.ndarray | None], rng: np.random.Generator):
    """Input sets (constants as given, random activations) and the host reference output of each."""
    params = list(func.params)
    geometry = dict((func.attrs or {}).get("tvmq.geometry", {}))
    centre = int(geometry.get("input_zp", 0))
    sets = []
    for s in range(INPUT_SETS):
        arrays = []
        for p, value in zip(params[:-1], consts, strict=True):
            shape = tuple(int(d) for d in p.shape)
            if value is not None:
                arrays.append(np.ascontiguousarray(np.asarray(value).astype(str(p.dtype)).reshape(shape)))
            else:
                arrays.append(_random(rng, shape, str(p.dtype), centre=None if s % 2 == 0 else centre))
        sets.append(arrays)
    lib = host_build(func)
    return sets, [host_run(lib, func, arrays) for arrays in sets]


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, *, centre: int | None) -> np.ndarray:
    """Uniform over the dtype (many outputs saturate: clamping paths), or with ``centre`` small values around it
    (an input zero point: accumulators stay in range, so outputs are mostly unsaturated)."""
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.floating):
        return rng.normal(size=shape).astype(dt)
    info = np.iinfo(dt)
    lo, hi = max(int(info.min), -(1 << 31)), min(int(info.max), (1 << 31) - 1)
    if centre is None or dt.itemsize > 1:
        values = rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64)
    else:
        values = np.clip(np.rint(centre + rng.normal(scale=12.0, size=shape)), lo, hi).astype(np.int64)
    return values.astype(dt)


def host_build(func: tirx.PrimFunc) -> tvm.runtime.Module:
    """TVM's LLVM build of the untuned PrimFunc: the reference every candidate must equal."""
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    return tvm.tirx.build(mod, target="llvm")


def host_run(lib: tvm.runtime.Module, func: tirx.PrimFunc, arrays: Sequence[np.ndarray]) -> np.ndarray:
    out = func.params[-1]
    result = np.zeros(tuple(int(d) for d in out.shape), dtype=str(out.dtype))
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (*arrays, result)]
    lib["main"](*tensors)
    return tensors[-1].numpy()
