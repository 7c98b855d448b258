"""Write ``model.c`` and ``model.h``: kernels, constants in flash, the arena, and the ahead-of-time call sequence."""

from __future__ import annotations

import re

import numpy as np

from .graph import Program, Step, Tensor
from .planner import MemoryPlan

_C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float"}


def c_type(dtype: str) -> str:
    return _C_TYPES[dtype]


def c_identifier(name: str) -> str:
    """A C identifier from a layer or model name (``conv2d_0``, ``my-model.v2`` -> ``my_model_v2``)."""
    ident = re.sub(r"\W", "_", name)
    return ident if re.match(r"[A-Za-z_]", ident) else f"m_{ident}"


def kernel_symbol(kernel: str) -> str:
    return f"tvmq_k_{c_identifier(kernel)}"


def _const_symbol(t: Tensor) -> str:
    return f"tvmq_w_{c_identifier(t.name)}"


def _c_float(v: float) -> str:
    """A float32 literal; infinities (e.g. unused nl_quantize thresholds) as <math.h>'s INFINITY."""
    v = float(v)
    if np.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return f"{v!r}f"


def _format_array(t: Tensor) -> str:
    values = np.asarray(t.value).reshape(-1)
    items = [_c_float(v) for v in values] if t.dtype == "float32" else [str(int(v)) for v in values]
    lines = [", ".join(items[i : i + 16]) for i in range(0, len(items), 16)]
    shape = "x".join(map(str, t.shape))
    return (f"/* {t.name}: {t.dtype} {shape} */\n"
            f"static const {c_type(t.dtype)} {_const_symbol(t)}[{values.size}] TVMQ_WEIGHTS = {{\n  "
            + ",\n  ".join(lines) + "\n};\n")  # fmt: skip


class ModelWriter:
    """Turns programs, their memory plan and the kernels' C text into the two files of the C library."""

    def __init__(self, name: str, main: Program, plan: MemoryPlan, boundary: dict[str, Program]) -> None:
        self.name, self.main, self.plan, self.boundary = c_identifier(name), main, plan, boundary
        self.prefix = f"tvmq_{self.name}"
        self.macro = self.prefix.upper()

    # -- model.c -------------------------------------------------------------------------------------------------
    def source(self, kernels_c: str, banner: str) -> str:
        consts = [t for p in (self.main, *self.boundary.values()) for s in p.steps for t in s.inputs
                  if t.kind == "const"]  # fmt: skip
        parts = [
            f"/* {banner} Do not edit. */",
            '#include "tvmq_runtime.h"\n#include "model.h"\n#include <math.h>\n#include <string.h>\n',
            "/* Profiling hooks: the firmware may define these to time each step. */",
            "#ifndef TVMQ_STEP_BEGIN\n#define TVMQ_STEP_BEGIN(index)\n#endif",
            "#ifndef TVMQ_STEP_END\n#define TVMQ_STEP_END(index)\n#endif\n",
            "/* ---- kernels (TVM C backend, tvmq default schedules) ---- */",
            kernels_c,
            "/* ---- weights, biases, requantization parameters and tables (flash) ---- */",
            *(_format_array(t) for t in consts),
            "/* ---- activations: one statically planned arena (RAM) ---- */",
            f"static uint8_t {self.prefix}_arena[{max(self.plan.arena_bytes, 1)}] TVMQ_ARENA;\n",
            self._run_function(),
            self._boundary_function("quantize_input", "const float* x, int8_t* q", "x", "q"),
            self._boundary_function("dequantize_output", "const int8_t* q, float* y", "q", "y"),
        ]
        return "\n".join(parts)

    def _pointer(self, t: Tensor, program: Program, in_name: str, out_name: str) -> str:
        storage = program.storage(t)
        ctype = c_type(t.dtype)
        if storage.kind == "const":
            return f"({ctype}*){_const_symbol(storage)}"
        part = program.byte_offset(t)  # a slice written straight into a concatenation
        where = self.plan.location.get(storage) if program is self.main else None
        if where is not None and where[0] == "arena":
            return f"({ctype}*)({self.prefix}_arena + {where[1] + part})"
        if storage is program.input:
            return f"({ctype}*){in_name}"
        if storage is program.storage(program.output):
            return f"({ctype}*)((uint8_t*){out_name} + {part})" if part else f"({ctype}*){out_name}"
        raise AssertionError(f"tensor {t.name} has no place in the memory plan")

    def _call(self, step: Step, program: Program, in_name: str, out_name: str) -> str:
        args = [self._pointer(t, program, in_name, out_name) for t in (*step.inputs, step.output)]
        return f"{kernel_symbol(step.kernel)}({', '.join(args)});"

    def _passthrough(self, program: Program, in_name: str, out_name: str) -> list[str]:
        """A model whose output is its input (reshapes only) copies it."""
        if program.storage(program.output) is program.input:
            return [f"  memcpy({out_name}, {in_name}, {program.input.nbytes});"]
        return []

    def _io_in_arena(self) -> tuple[int, int] | None:
        """Arena offsets of the model input and output when the plan holds them (``io_in_arena``), else None."""
        main = self.main
        where_in = self.plan.location.get(main.input)
        where_out = self.plan.location.get(main.storage(main.output))
        if where_in is None or where_in[0] != "arena":
            return None
        return where_in[1], where_out[1] + main.byte_offset(main.output)

    def _run_function(self) -> str:
        io = self._io_in_arena()
        lines = []
        if io is not None:  # zero-copy access for the application; run() copies only when given other buffers
            lines += [
                f"int8_t* {self.prefix}_input(void) {{ return (int8_t*)({self.prefix}_arena + {io[0]}); }}",
                f"int8_t* {self.prefix}_output(void) {{ return (int8_t*)({self.prefix}_arena + {io[1]}); }}\n",
            ]
        lines.append(f"int32_t {self.prefix}_run(const int8_t* input, int8_t* output) {{")
        if io is not None:
            lines.append(f"  if (input != {self.prefix}_input()) memcpy({self.prefix}_input(), input, "
                         f"{self.main.input.nbytes});")  # fmt: skip
        for i, step in enumerate(self.main.steps):
            lines.append(f"  TVMQ_STEP_BEGIN({i});  /* {step.name} */")
            lines.append("  " + self._call(step, self.main, "input", "output"))
            lines.append(f"  TVMQ_STEP_END({i});")
        if io is None:
            lines += self._passthrough(self.main, "input", "output")
        else:
            lines.append(f"  if (output != {self.prefix}_output()) memcpy(output, {self.prefix}_output(), "
                         f"{self.main.output.nbytes});")  # fmt: skip
        lines += ["  return 0;", "}\n"]
        return "\n".join(lines)

    def _boundary_function(self, which: str, params: str, in_name: str, out_name: str) -> str:
        program = self.boundary[which]
        body = ["  " + self._call(s, program, in_name, out_name) for s in program.steps]
        body += self._passthrough(program, in_name, out_name)
        return "\n".join([f"void {self.prefix}_{which}({params}) {{", *body, "}\n"])

    # -- model.h -------------------------------------------------------------------------------------------------
    def _io_header(self) -> str:
        p, m = self.prefix, self.macro
        if self._io_in_arena() is None:
            return f"#define {m}_IO_IN_ARENA 0\n"
        return f"""
/* The input and output live in the arena ({m}_IO_IN_ARENA): write the input codes to {p}_input(), call
   {p}_run({p}_input(), {p}_output()) and read {p}_output(), with no copy. The input is not kept after a run. */
#define {m}_IO_IN_ARENA 1
int8_t* {p}_input(void);
int8_t* {p}_output(void);
"""

    def header(self, banner: str, input_q: tuple[float, int], output_q: tuple[float, int]) -> str:
        m, p = self.macro, self.prefix
        ins, outs = self.main.input, self.main.output
        shape_in, shape_out = "x".join(map(str, ins.shape)), "x".join(map(str, outs.shape))
        return f"""/* {banner} Do not edit. */
#ifndef {m}_MODEL_H_
#define {m}_MODEL_H_
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {m}_INPUT_BYTES {ins.nbytes}   /* int8 {shape_in} */
#define {m}_OUTPUT_BYTES {outs.nbytes}   /* int8 {shape_out} */
#define {m}_ARENA_BYTES {self.plan.arena_bytes}
#define {m}_NUM_STEPS {len(self.main.steps)}
#define {m}_INPUT_SCALE {input_q[0]!r}f
#define {m}_INPUT_ZERO_POINT {input_q[1]}
#define {m}_OUTPUT_SCALE {output_q[0]!r}f
#define {m}_OUTPUT_ZERO_POINT {output_q[1]}

/* One inference on int8 codes. Integer-only; uses the static arena, so it is not reentrant. Returns 0. */
int32_t {p}_run(const int8_t* input, int8_t* output);
{self._io_header()}
/* Float input -> int8 codes: q = clamp(round(x / INPUT_SCALE) + INPUT_ZERO_POINT), or, when the model's input
   has a codebook (non-uniform act_scheme), the int8 code of the nearest codebook level on that grid. */
void {p}_quantize_input(const float* x, int8_t* q);

/* int8 output codes -> float (y = (q - OUTPUT_ZERO_POINT) * OUTPUT_SCALE). */
void {p}_dequantize_output(const int8_t* q, float* y);

#ifdef __cplusplus
}}
#endif
#endif /* {m}_MODEL_H_ */
"""
