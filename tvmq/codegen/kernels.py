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

from ..schedules.default import default_schedule
from ..target import MicroTarget

PIPELINE = "tvmq_c"

RUNTIME_HEADER = """\
/* tvmq_runtime.h: the only header tvmq's generated C needs. No TVM runtime, no malloc. */
#ifndef TVMQ_RUNTIME_H_
#define TVMQ_RUNTIME_H_
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>

#define TVMQ_ALIGNED(n) __attribute__((aligned(n)))
#define TVMQ_WEIGHTS __attribute__((aligned(16), section(".rodata.tvmq_weights")))
/* Kernels stay functions (noinline): each step is one call, timed exactly, and gcc allocates registers better
   than in one large run function (digits 5.94M -> 5.03M instructions; basicmotions 1.15M -> 1.30M, the one
   loss). noclone: gcc 12's constant-propagating clones of a kernel (specialised to its weight arrays) computed
   wrong outputs for codebook convolutions on Cortex-M4 (tests/test_weight_codebooks.py, basicmotions).
   A build may define it empty to compare. */
#ifndef TVMQ_KERNEL
#define TVMQ_KERNEL __attribute__((noinline, noclone))
#endif
#define TVMQ_ARENA __attribute__((aligned(16), section(".bss.tvmq_arena")))

#endif /* TVMQ_RUNTIME_H_ */
"""


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
    schedule=default_schedule,
    out_strides: Mapping[str, tuple[int, ...]] | None = None,
) -> str:
    """C source defining one ``static`` function per PrimFunc, named by the mapping's keys, in order.

    ``schedule`` maps a PrimFunc to a scheduled PrimFunc (the default, or a tuned one) and must not change its
    arithmetic. ``out_strides``: kernels writing a slice of a larger tensor (``strided_output``). The text assumes
    ``tvmq_runtime.h`` is included before it.
    """
    out_strides = out_strides or {}

    def lower(name: str, func: tirx.PrimFunc) -> tirx.PrimFunc:
        func = schedule(func)
        if name in out_strides:
            func = strided_output(func, out_strides[name])
        return with_pointer_params(func).with_attr("global_symbol", name)

    mod = tvm.IRModule({name: lower(name, f) for name, f in funcs.items()})
    lib = tvm.tirx.build(mod, target=target.tvm_target, pipeline=PIPELINE)
    return _strip_tvm_preamble(lib.inspect_source(), list(funcs))


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
