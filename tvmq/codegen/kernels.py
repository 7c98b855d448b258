"""Quantized PrimFuncs -> plain C functions with typed pointer arguments, via TVM's C backend.

TVM's default TIR pipeline wraps every function in the packed TVM-FFI calling convention (DLTensor arguments,
runtime checks), which needs TVM's runtime on the device. tvmq lowers with the same passes minus
``SplitHostDevice``/``MakePackedAPI`` and turns each buffer parameter into a typed pointer, so the C backend
emits ``void f(int8_t* data, int8_t* weight, ..., int8_t* out)``. TVM's preamble (``tvm/ffi`` includes,
``TVM_DLL``, the library context and entry function) is cut and replaced by tvmq's own small header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import tvm
from tvm import ir, s_tir, tirx

from ..schedules.default import default_schedule, device_schedule
from ..schedules.microkernels import runtime_c
from ..schedules.tiled import tiled_schedule
from ..target import MicroTarget

PIPELINE = "tvmq_c"

RUNTIME_HEADER = (
    """\
/* tvmq_runtime.h: the only header tvmq's generated C needs. No TVM runtime, no malloc. */
#ifndef TVMQ_RUNTIME_H_
#define TVMQ_RUNTIME_H_
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>

#define TVMQ_ALIGNED(n) __attribute__((aligned(n)))
/* used: the arrays stay whole in flash even where gcc folds a small layer's constants into its kernel */
#define TVMQ_WEIGHTS __attribute__((used, aligned(16), section(".rodata.tvmq_weights")))
/* Kernels stay functions: inlined into one large run function, gcc allocates registers worse (4-21% more
   instructions on the zoo models, bench/kernels.py). A build may define it empty to compare. No scheduling before
   register allocation: hoisting the micro-kernels' loads early needs more registers than a Cortex-M has and spills
   (3-15% more instructions on bench/kernels.py's layers); an in-order M0-M33 hides little load latency anyway.
   noclone: gcc 12's constant-propagating clones of a kernel (specialised to its weight arrays) computed wrong
   outputs for codebook convolutions on Cortex-M4 (tests/test_weight_codebooks.py, basicmotions). */
#ifndef TVMQ_KERNEL
#define TVMQ_KERNEL __attribute__((noinline, noclone, optimize("no-schedule-insns")))
#endif
#define TVMQ_ARENA __attribute__((aligned(16), section(".bss.tvmq_arena")))

"""
    + runtime_c()
    + """
#endif /* TVMQ_RUNTIME_H_ */
"""
)


def _lowering_pipeline():
    """The S-TIR default pipeline's CPU passes, without SplitHostDevice and MakePackedAPI."""

    @tvm.transform.module_pass(opt_level=0, name="tvmq.LowerToPlainC")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        passes = [
            s_tir.transform.CanonicalizeLoop(),
            s_tir.transform.LowerInitBlock(),
            s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
            s_tir.transform.ConvertBlocksToOpaque(),
            s_tir.transform.CompactBufferAllocation(),
            s_tir.transform.LowerMatchBuffer(),
            s_tir.transform.StmtSimplify(),
            s_tir.transform.LowerOpaqueBlock(),
            tirx.transform.FlattenBuffer(),
            tirx.transform.NarrowDataType(32),
            s_tir.transform.LoopPartition(),
            tirx.transform.VectorizeLoop(False),
            tirx.transform.StorageRewrite(),
            s_tir.transform.HoistIfThenElse(),
            tirx.transform.UnrollLoop(),
            s_tir.transform.RenormalizeSplitPattern(),
            tirx.transform.StmtSimplify(),
            tirx.transform.RemoveNoOp(),
            s_tir.transform.RewriteUnsafeSelect(),
            tirx.transform.CommonSubexprElim(),
            tirx.transform.VerifyMemory(),
        ]
        return tvm.transform.Sequential(passes)(mod)

    def _finalize() -> tvm.transform.Pass:
        return tvm.transform.Sequential([tirx.transform.LowerIntrin()])

    return _pipeline, _finalize, _finalize


tirx.register_tir_pipeline(PIPELINE, _lowering_pipeline)


def with_pointer_params(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Replace each buffer parameter by a typed pointer and declare the buffer on it inside the body."""
    params, decls = [], []
    for p in func.params:
        ptr = tirx.Var(p.name, ir.PointerType(p.ty.dtype))
        params.append(ptr)
        decls.append(tirx.DeclBuffer(p, data=ptr))
    return tirx.PrimFunc(params, tirx.SeqStmt([*decls, func.body]), func.ret_type, func.attrs)


def strided_output(func: tirx.PrimFunc, strides: tuple[int, ...]) -> tirx.PrimFunc:
    """``func`` writing its output with ``strides`` (elements) instead of densely: a slice of a larger tensor.

    The output becomes a flat buffer indexed by ``sum(i_d * strides[d])``; the caller passes a pointer to the
    slice's first element.
    """
    out = func.params[-1]
    sch = s_tir.Schedule(func)
    writer = next(
        b for b in _all_blocks(sch) if any(region.source.same_as(out) for region in sch.get(b).writes)
    )  # every tvmq kernel has exactly one block writing its output

    def flat(*idx):
        return (sum(i * s for i, s in zip(idx, strides, strict=True)),)

    sch.transform_layout(writer, out, flat, assume_injective_transform=True)
    return sch.mod["main"]


def _all_blocks(sch: s_tir.Schedule) -> list:
    blocks, todo = [], list(sch.get_child_blocks(sch.get_sblock("root")))
    while todo:
        block = todo.pop()
        blocks.append(block)
        todo += sch.get_child_blocks(block)
    return blocks


def emit_kernels(
    funcs: Mapping[str, tirx.PrimFunc],
    target: MicroTarget,
    *,
    schedule=None,
    out_strides: Mapping[str, tuple[int, ...]] | None = None,
) -> str:
    """C source defining one ``static`` function per PrimFunc, named by the mapping's keys, in order.

    ``schedule`` maps a PrimFunc to a scheduled PrimFunc (a tuned one; None: the core's ``device_schedule``) and must
    not change its arithmetic. ``out_strides``: kernels writing a slice of a larger tensor (``strided_output``). The
    text assumes ``tvmq_runtime.h`` is included before it.
    """
    out_strides = out_strides or {}
    simd = target.core.has_dsp

    def lower(name: str, func: tirx.PrimFunc) -> tirx.PrimFunc:
        strides = out_strides.get(name)
        if strides is None:
            func = (schedule or device_schedule(simd=simd))(func)
        elif schedule is not None:
            try:  # a tuned schedule that tensorized its output writer cannot take the strided layout afterwards
                func = strided_output(schedule(func), strides)
            except (s_tir.ScheduleError, RuntimeError):
                func = _strided_device_schedule(func, strides, simd)
        else:
            func = _strided_device_schedule(func, strides, simd)
        return with_pointer_params(func).with_attr("global_symbol", name)

    mod = tvm.IRModule({name: lower(name, f) for name, f in funcs.items()})
    lib = tvm.tirx.build(mod, target=target.tvm_target, pipeline=PIPELINE)
    return _strip_tvm_preamble(lib.inspect_source(), list(funcs))


def _strided_device_schedule(func: tirx.PrimFunc, strides: tuple[int, ...], simd: bool) -> tirx.PrimFunc:
    """The device schedule of a kernel writing a slice: the micro-kernel tiles take the strided output as it is
    (their tensorized output writer would refuse the layout change); other kernels get it after their schedule."""
    tiled = tiled_schedule(strided_output(func, strides), simd=simd)
    return tiled if tiled is not None else strided_output(default_schedule(func), strides)


_EXTERN_C = '#ifdef __cplusplus\nextern "C"\n#endif\n'


def _strip_tvm_preamble(source: str, names: list[str]) -> str:
    """Keep the function definitions only, as ``static TVMQ_KERNEL`` functions (one translation unit, no symbol
    clashes, not inlined into the run function)."""
    source = source.replace(_EXTERN_C, "")
    body = source[source.index("TVM_DLL ") :]
    body = body.split("// CodegenC: NOTE: Auto-generated entry function")[0]
    # drop forward declarations: each function is defined before its caller in model.c
    body = re.sub(r"^TVM_DLL [^\n{]*\);\n", "", body, flags=re.M)
    body = body.replace("TVM_DLL ", "static TVMQ_KERNEL ")
    missing = [n for n in names if f" {n}(" not in body]
    if missing:
        raise AssertionError(f"TVM's C backend did not emit {missing}")  # a TVM upgrade changed the C layout
    return body.strip() + "\n"
