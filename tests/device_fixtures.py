"""A fake exported artifact that follows the model.h/model.c/metadata.json spec, for tests of ``tvmq.device``.

Why not a real model: the C generator is written elsewhere; this fake has exactly known outputs (``out[i] =
saturate(in[i] + 1)``), known weight and arena sizes, and steps with a known amount of work (``macs`` multiply-adds
through the same kernel), so the runner, the timing and the memory report can be checked to the byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tvmq.target import CORES

INPUT_SHAPE = (1, 8, 8, 1)
OUTPUT_SHAPE = (1, 10)
IN_SCALE, IN_ZP = 0.0625, -3  # powers of two: float32 quantize/dequantize are exact on host and device alike
OUT_SCALE, OUT_ZP = 0.125, 2
WEIGHT_BYTES = 1000 + 10 * 4  # an int8 array of 1000 and an int32 array of 10, both in .rodata.tvmq_weights
ARENA_BYTES = 3072
STEPS = [
    {"name": "conv2d_0", "op": "conv2d", "macs": 2000},
    {"name": "dense_1", "op": "dense", "macs": 6000},
    {"name": "add_2", "op": "add", "macs": 10},
]

_MODEL_H = """\
#ifndef TVMQ_{NAME}_MODEL_H
#define TVMQ_{NAME}_MODEL_H
#include <stdint.h>
int32_t tvmq_{name}_run(const int8_t* input, int8_t* output);
void tvmq_{name}_quantize_input(const float* x, int8_t* q);
void tvmq_{name}_dequantize_output(const int8_t* q, float* y);
#endif
"""

_RUNTIME_H = """\
#ifndef TVMQ_RUNTIME_H
#define TVMQ_RUNTIME_H
#include <stdint.h>
static inline int8_t tvmq_sat8(int32_t v) {{ return (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v)); }}
#endif
"""

_MODEL_C = """\
#include <math.h>
#include "model.h"
#include "tvmq_runtime.h"
#ifndef TVMQ_STEP_BEGIN
#define TVMQ_STEP_BEGIN(i)
#endif
#ifndef TVMQ_STEP_END
#define TVMQ_STEP_END(i)
#endif

/* Pairs (+c, -c) hit the same input element, so every MAC loop sums to 0 whatever the input. */
static const int8_t tvmq_{name}_w0[1000] __attribute__((section(".rodata.tvmq_weights"), aligned(4))) = {{{w0}}};
static const int32_t tvmq_{name}_w1[10] __attribute__((section(".rodata.tvmq_weights"), aligned(4))) = {{{w1}}};
static int8_t tvmq_{name}_arena[{arena}] __attribute__((section(".bss.tvmq_arena"), aligned(16)));

__attribute__((noipa)) static int32_t mac8(const int8_t* w, int32_t n_w, const int8_t* x, int32_t macs) {{
    int32_t acc = 0;
    for (int32_t j = 0; j < macs; j++) acc += (int32_t)w[j % n_w] * x[(j >> 1) % 64];
    return acc;
}}

__attribute__((noipa)) static int32_t mac32(const int32_t* w, int32_t n_w, const int8_t* x, int32_t macs) {{
    int32_t acc = 0;
    for (int32_t j = 0; j < macs; j++) acc += w[j % n_w] * x[(j >> 1) % 64];
    return acc;
}}

int32_t tvmq_{name}_run(const int8_t* input, int8_t* output) {{
    int8_t* buf = tvmq_{name}_arena;
    TVMQ_STEP_BEGIN(0);
    {hang}{hog}int32_t acc = mac8(tvmq_{name}_w0, 1000, input, {macs0});
    TVMQ_STEP_END(0);
    TVMQ_STEP_BEGIN(1);
    acc += mac8(tvmq_{name}_w0, 1000, input, {macs1});
    TVMQ_STEP_END(1);
    TVMQ_STEP_BEGIN(2);
    acc += mac32(tvmq_{name}_w1, 10, input, {macs2});
    for (int32_t i = 0; i < 64; i++) buf[i] = input[i];
    for (int32_t i = 0; i < 10; i++) output[i] = tvmq_sat8((int32_t)buf[i] + 1 + acc);
    TVMQ_STEP_END(2);
    return 0;
}}

void tvmq_{name}_quantize_input(const float* x, int8_t* q) {{
    for (int32_t i = 0; i < 64; i++) q[i] = tvmq_sat8((int32_t)floorf(x[i] * {inv_in}f + 0.5f) + ({in_zp}));
}}

void tvmq_{name}_dequantize_output(const int8_t* q, float* y) {{
    for (int32_t i = 0; i < 10; i++) y[i] = (float)((int32_t)q[i] - ({out_zp})) * {out_scale}f;
}}
{broken}"""

_HANG = "volatile int32_t forever = 1;\n    while (forever) {}\n    "
_STACK_HOG = "volatile int8_t hog[4096];\n    for (int32_t i = 0; i < 4096; i++) hog[i] = input[i % 64];\n    "
_BROKEN = "\nint32_t tvmq_broken(void) { return undeclared_variable + ; }\n"


def metadata(name: str = "fake", mcpu: str = "cortex-m4") -> dict[str, Any]:
    """The metadata.json of the fake artifact."""
    return {
        "name": name,
        "target": {"mcpu": mcpu, "cflags": CORES[mcpu].cflags},
        "input": {"shape": list(INPUT_SHAPE), "dtype": "int8", "bytes": 64, "scale": IN_SCALE, "zero_point": IN_ZP},
        "output": {"shape": list(OUTPUT_SHAPE), "dtype": "int8", "bytes": 10, "scale": OUT_SCALE,
                   "zero_point": OUT_ZP},
        "steps": [dict(s) for s in STEPS],
        "arena_bytes": ARENA_BYTES,
    }  # fmt: skip


def write_fake_artifact(
    directory: str | Path, name: str = "fake", mcpu: str = "cortex-m4", variant: str = "ok"
) -> Path:
    """Write the fake artifact; ``variant`` is "ok", "hang" (run never returns), "broken" (does not
    compile) or "stack_hog" (4 KiB of locals, to overflow a small stack)."""
    if variant not in ("ok", "hang", "broken", "stack_hog"):
        raise ValueError(f"unknown variant {variant!r}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    w0 = ", ".join(str((1 + (k // 2) % 100) * (1 if k % 2 == 0 else -1)) for k in range(1000))
    w1 = ", ".join(str((1000 + k // 2) * (1 if k % 2 == 0 else -1)) for k in range(10))
    (out / "model.h").write_text(_MODEL_H.format(name=name, NAME=name.upper()))
    (out / "tvmq_runtime.h").write_text(_RUNTIME_H.format())
    (out / "model.c").write_text(_MODEL_C.format(
        name=name, w0=w0, w1=w1, arena=ARENA_BYTES, macs0=STEPS[0]["macs"], macs1=STEPS[1]["macs"],
        macs2=STEPS[2]["macs"], inv_in=1 / IN_SCALE, in_zp=IN_ZP, out_zp=OUT_ZP, out_scale=OUT_SCALE,
        hang=_HANG if variant == "hang" else "", hog=_STACK_HOG if variant == "stack_hog" else "",
        broken=_BROKEN if variant == "broken" else "",
    ))  # fmt: skip
    (out / "metadata.json").write_text(json.dumps(metadata(name, mcpu), indent=2))
    return out


class FakeArtifact:
    """Stands in for ``tvmq.codegen.Artifact``: ``.name``, ``.metadata`` and ``.export(directory)``."""

    def __init__(self, name: str = "fake", mcpu: str = "cortex-m4", variant: str = "ok") -> None:
        self.name, self.mcpu, self.variant = name, mcpu, variant
        self.metadata = metadata(name, mcpu)

    def export(self, directory: str | Path) -> Path:
        return write_fake_artifact(directory, self.name, self.mcpu, self.variant)


def expected_raw(x: np.ndarray) -> np.ndarray:
    """Host reference of the fake's run: ``out[i] = saturate(in[i] + 1)`` for the first 10 input codes."""
    flat = np.asarray(x, dtype=np.int32).reshape(len(x), -1)[:, :10]
    return np.clip(flat + 1, -128, 127).astype(np.int8)


def quantize(x: np.ndarray) -> np.ndarray:
    """Host reference of the fake's quantize_input (float32 arithmetic, as on the device)."""
    x = np.asarray(x, dtype=np.float32)
    q = np.floor(x * np.float32(1 / IN_SCALE) + np.float32(0.5)).astype(np.int64) + IN_ZP
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray) -> np.ndarray:
    """Host reference of the fake's dequantize_output."""
    return ((np.asarray(q, dtype=np.int32) - OUT_ZP) * np.float32(OUT_SCALE)).astype(np.float32)
