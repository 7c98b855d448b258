"""The micro-kernel schedules (``schedules.tiled``) compute the host's bytes: random layers on QEMU, and the C
requantization on the host against TFLM's arithmetic.

Why: the device schedules replace loops by calls of hand-written C (``schedules.microkernels``) after
``tensorize`` has checked that each call's description is the TE's own computation; these tests check the C side.
Random conv2d/dense layers (odd sizes, strides 1 and 2, padding, dilation, channel counts that are not multiples
of 2 or 4, grouped and depthwise, codebook weights, power-of-two scales, a fused residual ADD, the in-place orders)
run in one QEMU boot per core: Cortex-M4 (``mps2-an386``) takes the SIMD kernels, Cortex-M3 (``mps2-an385``) the
scalar ones; every output must equal TVM's LLVM build of the same PrimFunc. In-place layers write over their own
input as ``tvmq.build`` plans them, and the fused ADD over its residual. About a minute per core.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvmq.schedules.codebook import pack_rows
from tvmq.schedules.inplace import inplace_shift
from tvmq.schedules.primfuncs import qconv2d_primfunc, qdense_primfunc
from tvmq.schedules.tiled import tiled_schedule

import tvmq.device as device
from tvmq.codegen.emit import c_type
from tvmq.codegen.kernels import RUNTIME_HEADER, emit_kernels
from tvmq.quant.fixed_point import tflite_add_params
from tvmq.target import parse_target

SAMPLES = 3
ALIGN = 16


@dataclass
class Case:
    """One kernel: its PrimFunc, constant arguments, runtime inputs (data, and a residual), output shape."""

    name: str
    func: tvm.tirx.PrimFunc
    consts: list[np.ndarray]
    inputs: list[np.ndarray]  # (SAMPLES, ...) int8 each
    out_shape: tuple[int, ...]
    inplace: str | None = None  # "pixel" | "channel": the output overlays the data; "residual": the residual
    shift: int = 0  # bytes the output starts before the data (in-place)
    tiled: bool = True  # the micro-kernel schedule must apply
    offsets: list[int] = field(default_factory=list)


def _epilogue(rng, o: int, pow2: bool) -> tuple[dict, list[np.ndarray]]:
    """Random requantization: bias, multipliers in [2^30, 2^31) (or none), shifts mostly right, some left."""
    bias = rng.integers(-20000, 20000, size=o).astype(np.int32)
    shift = rng.integers(-12, 1, size=o).astype(np.int32)
    shift[rng.random(o) < 0.15] = rng.integers(1, 3)
    zp = int(rng.integers(-40, 40))
    act_min = zp if rng.random() < 0.5 else -128
    act_max = int(rng.integers(zp + 10, 128)) if rng.random() < 0.3 else 127
    kwargs = {"output_zp": zp, "act_min": act_min, "act_max": act_max, "pow2": pow2, "has_bias": True}
    if pow2:
        return kwargs, [bias, (shift - 2).astype(np.int32)]
    mult = rng.integers(1 << 30, (1 << 31) - 1, size=o).astype(np.int32)
    return kwargs, [bias, mult, shift]


def _weights(rng, shape: tuple[int, ...], bits: int | None) -> tuple[dict, list[np.ndarray]]:
    if bits is None:
        return {}, [rng.integers(-127, 128, size=shape).astype(np.int8)]
    o = shape[0]
    indices = rng.integers(0, 2**bits, size=(o, int(np.prod(shape[1:]))))
    table = rng.integers(-127, 128, size=(o, 2**bits)).astype(np.int8)
    return {"codebook_bits": bits}, [pack_rows(indices, bits), table]


def _conv_case(rng, n: int) -> Case:
    kind = ["general", "pointwise", "depthwise", "grouped"][n % 4]
    h, w = (int(v) for v in rng.integers(3, 12, size=2))
    c = int(rng.choice([1, 3, 4, 5, 8, 12] if kind != "grouped" else [4, 6]))
    groups, o = 1, int(rng.choice([1, 2, 3, 5, 8, 16]))
    if kind == "depthwise":
        groups, o = c, c
    elif kind == "grouped":
        groups, o = 2, 2 * int(rng.integers(1, 4))
    k = (1, 1) if kind == "pointwise" else tuple(int(v) for v in rng.integers(1, 4, size=2))
    strides = tuple(int(v) for v in rng.integers(1, 3, size=2))
    dilation = (1, 1) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(1, 3, size=2))
    padding = (0, 0, 0, 0) if kind == "pointwise" else tuple(int(rng.integers(0, kk)) for kk in (k[0], k[1]) * 2)
    eff = [d * (kk - 1) + 1 for d, kk in zip(dilation, k, strict=True)]
    h, w = max(h, eff[0]), max(w, eff[1])
    bits = None if rng.random() < 0.6 else int(rng.choice([4, 2]))
    izp = int(rng.integers(-128, 20))
    epi, epi_consts = _epilogue(rng, o, pow2=rng.random() < 0.2)
    wk, w_consts = _weights(rng, (o, *k, c // groups), bits)
    func = qconv2d_primfunc((1, h, w, c), (o, *k, c // groups), strides=strides, padding=padding, dilation=dilation,
                            groups=groups, input_zp=izp, **epi, **wk)  # fmt: skip
    x = rng.integers(-128, 128, size=(SAMPLES, 1, h, w, c)).astype(np.int8)
    out = tuple(int(d) for d in func.params[-1].shape)
    return Case(f"conv{n}_{kind}", func, w_consts + epi_consts, [x], out, tiled=kind != "grouped")


def _dense_case(rng, n: int) -> Case:
    rows, k, o = int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 21))
    bits = None if n % 3 == 0 else (4 if n % 3 == 1 else 2)
    epi, epi_consts = _epilogue(rng, o, pow2=n % 5 == 4)
    wk, w_consts = _weights(rng, (o, k), bits)
    func = qdense_primfunc((rows, k), (o, k), input_zp=int(rng.integers(-128, 128)), **epi, **wk)
    x = rng.integers(-128, 128, size=(SAMPLES, rows, k)).astype(np.int8)
    return Case(f"dense{n}_cb{bits}", func, w_consts + epi_consts, [x], (rows, o))


def _inplace_case(rng, n: int, mode: str) -> Case:
    h, w = (int(v) for v in rng.integers(3, 10, size=2))
    c = int(rng.choice([4, 6, 8, 12]))
    izp = int(rng.integers(-128, 0))
    if mode == "channel":
        k, o, groups, pad = (3, 3), c, c, (1, 1, 1, 1)
        strides = (int(rng.integers(1, 3)),) * 2
    else:
        k, o, groups, pad, strides = (1, 1), int(rng.choice([c // 2, c, 2 * c])), 1, (0, 0, 0, 0), (1, 1)
    epi, epi_consts = _epilogue(rng, o, pow2=False)
    _, w_consts = _weights(rng, (o, *k, c // groups), None)
    func = qconv2d_primfunc((1, h, w, c), (o, *k, c // groups), strides=strides, padding=pad, groups=groups,
                            input_zp=izp, inplace=mode, **epi)  # fmt: skip
    out = tuple(int(d) for d in func.params[-1].shape)
    x = rng.integers(-128, 128, size=(SAMPLES, 1, h, w, c)).astype(np.int8)
    return Case(f"inplace{n}_{mode}", func, w_consts + epi_consts, [x], out, inplace=mode,
                shift=inplace_shift(mode, (1, h, w, c), out, strides))  # fmt: skip


def _residual_case(rng, n: int) -> Case:
    h, w, c = 6, 5, 8
    izp = int(rng.integers(-128, 0))
    epi, epi_consts = _epilogue(rng, c, pow2=False)
    _, w_consts = _weights(rng, (c, 3, 3, c), None)
    add = tflite_add_params(0.05, 0.03, 0.07)
    residual = {"conv_first": bool(n % 2), "a_zp": int(rng.integers(-20, 20)), "b_zp": int(rng.integers(-20, 20)),
                "out_zp": int(rng.integers(-20, 20)), **add}  # fmt: skip
    func = qconv2d_primfunc((1, h, w, c), (c, 3, 3, c), padding=(1, 1, 1, 1), input_zp=izp, residual=residual, **epi)
    x = rng.integers(-128, 128, size=(SAMPLES, 1, h, w, c)).astype(np.int8)
    r = rng.integers(-128, 128, size=(SAMPLES, 1, h, w, c)).astype(np.int8)
    return Case(f"residual{n}", func, w_consts + epi_consts, [x, r], (1, h, w, c), inplace="residual")


def cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = [_conv_case(rng, n) for n in range(16)]
    out += [_dense_case(rng, n) for n in range(6)]
    out += [_inplace_case(rng, n, m) for n, m in enumerate(["pixel", "pixel", "channel", "channel"])]
    out += [_residual_case(rng, n) for n in range(2)]
    return out


def host(case: Case) -> np.ndarray:
    """TVM's LLVM build of the unscheduled PrimFunc (what ``run_int`` runs), one sample at a time."""
    lib = tvm.compile(tvm.IRModule({"main": case.func.with_attr("global_symbol", "main")}), target="llvm")
    outs = []
    for s in range(SAMPLES):
        args = [tvm.runtime.tensor(np.ascontiguousarray(case.inputs[0][s])),
                *(tvm.runtime.tensor(np.ascontiguousarray(c)) for c in case.consts),
                *(tvm.runtime.tensor(np.ascontiguousarray(x[s])) for x in case.inputs[1:])]  # fmt: skip
        out = tvm.runtime.tensor(np.zeros(case.out_shape, np.int8))
        lib["main"](*args, out)
        outs.append(out.numpy())
    return np.stack(outs)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _c_array(name: str, a: np.ndarray) -> str:
    values = ", ".join(str(int(v)) for v in a.reshape(-1))
    return f"static const {c_type(str(a.dtype))} {name}[{a.size}] TVMQ_WEIGHTS = {{{values}}};"


def write_artifact(directory: Path, all_cases: list[Case], core: str) -> tuple[int, int]:
    """model.c: every case's kernel, run on its slice of the input into its slice of the output (in-place cases
    through a scratch buffer laid out as ``tvmq.build`` lays them out)."""
    micro = parse_target(f"c -mcpu={core}")
    kernels = emit_kernels({f"tvmq_k_{i}": c.func for i, c in enumerate(all_cases)}, micro)
    body, pos = [], 0
    for case in all_cases:
        case.offsets = []
        for x in case.inputs:
            case.offsets.append(pos)
            pos += _aligned(x[0].size)
    in_bytes, out_pos = pos, 0
    parts = ['#include <string.h>\n#include "tvmq_runtime.h"\n#include "model.h"',
             "#ifndef TVMQ_STEP_BEGIN\n#define TVMQ_STEP_BEGIN(i)\n#endif",
             "#ifndef TVMQ_STEP_END\n#define TVMQ_STEP_END(i)\n#endif", kernels]  # fmt: skip
    for i, case in enumerate(all_cases):
        names = [f"c{i}_{j}" for j in range(len(case.consts))]
        parts += [_c_array(n, a) for n, a in zip(names, case.consts, strict=True)]
        consts = [f"({c_type(str(a.dtype))}*){n}" for n, a in zip(names, case.consts, strict=True)]
        data, out_size = case.inputs[0][0].size, int(np.prod(case.out_shape))
        if case.inplace in ("pixel", "channel"):
            start = max(case.shift, 0)
            scratch = max(start + data, start - case.shift + out_size)
            parts.append(f"static int8_t s{i}[{scratch}] TVMQ_ALIGNED(16);")
            call = [f"  memcpy(s{i} + {start}, input + {case.offsets[0]}, {data});",
                    f"  tvmq_k_{i}(s{i} + {start}, {', '.join(consts)}, s{i} + {start - case.shift});",
                    f"  memcpy(output + {out_pos}, s{i} + {start - case.shift}, {out_size});"]  # fmt: skip
        elif case.inplace == "residual":  # the output overwrites the residual
            call = [f"  memcpy(output + {out_pos}, input + {case.offsets[1]}, {out_size});",
                    f"  tvmq_k_{i}((int8_t*)(input + {case.offsets[0]}), {', '.join(consts)}, output + {out_pos}, "
                    f"output + {out_pos});"]  # fmt: skip
        else:
            call = [f"  tvmq_k_{i}((int8_t*)(input + {case.offsets[0]}), {', '.join(consts)}, output + {out_pos});"]
        body += [f"  TVMQ_STEP_BEGIN({i});", *call, f"  TVMQ_STEP_END({i});"]
        out_pos += _aligned(out_size)
    parts.append("int32_t tvmq_t_run(const int8_t* input, int8_t* output) {\n" + "\n".join(body) + "\n  return 0;\n}")
    parts.append(f"void tvmq_t_quantize_input(const float* x, int8_t* q) {{ for (int i = 0; i < {in_bytes}; i++) "
                 f"q[i] = (int8_t)x[i]; }}\nvoid tvmq_t_dequantize_output(const int8_t* q, float* y) {{ for (int i "
                 f"= 0; i < {out_pos}; i++) y[i] = q[i]; }}")  # fmt: skip
    directory.mkdir(parents=True)
    (directory / "model.c").write_text("\n".join(parts) + "\n")
    (directory / "tvmq_runtime.h").write_text(RUNTIME_HEADER)
    (directory / "model.h").write_text("#include <stdint.h>\nint32_t tvmq_t_run(const int8_t* input, int8_t* output);\n"
                                       "void tvmq_t_quantize_input(const float* x, int8_t* q);\n"
                                       "void tvmq_t_dequantize_output(const int8_t* q, float* y);\n")  # fmt: skip
    meta = {"name": "t", "target": micro.to_json(), "arena_bytes": 0,
            "input": {"shape": [1, in_bytes], "dtype": "int8", "bytes": in_bytes},
            "output": {"shape": [1, out_pos], "dtype": "int8", "bytes": out_pos},
            "steps": [{"name": c.name, "op": "conv2d", "macs": 0} for c in all_cases]}  # fmt: skip
    (directory / "metadata.json").write_text(json.dumps(meta))
    return in_bytes, out_pos


@pytest.mark.parametrize(("core", "board", "seed"), [("cortex-m4", "mps2-an386", 0), ("cortex-m3", "mps2-an385", 1)])
def test_tiled_kernels_on_qemu_equal_host(core: str, board: str, seed: int, tmp_path: Path) -> None:
    all_cases = cases(seed)
    for case in all_cases:  # the schedule under test applies (grouped convolutions keep the default one)
        assert (tiled_schedule(case.func, simd=True) is not None) == case.tiled, case.name
    in_bytes, out_bytes = write_artifact(tmp_path / "artifact", all_cases, core)
    batch = np.zeros((SAMPLES, in_bytes), np.int8)
    for case in all_cases:
        for x, off in zip(case.inputs, case.offsets, strict=True):
            batch[:, off : off + x[0].size] = x.reshape(SAMPLES, -1)
    result = device.run(tmp_path / "artifact", batch, board=board, progress=False)
    pos = 0
    for case in all_cases:
        size = int(np.prod(case.out_shape))
        got = result.raw_outputs[:, pos : pos + size].reshape(SAMPLES, *case.out_shape)
        want = host(case)
        assert np.array_equal(got, want), f"{case.name}: {np.count_nonzero(got != want)} of {want.size} codes differ"
        pos += _aligned(size)


# ------------------------------------------------------------------------------------- the C requantization on the host
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _ref_requant(acc, bias, mult, shift, zp, lo, hi) -> np.ndarray:
    """TFLM: clamp(MultiplyByQuantizedMultiplier(acc + bias, mult, shift) + zp) (``test_schedules``' oracles)."""
    from test_schedules import ref_mbqm, wrap32

    r = wrap32(ref_mbqm(wrap32(acc.astype(np.int64) + bias), mult, shift) + zp)  # int32 adds wrap
    return np.clip(r, lo, hi).astype(np.int8)  # outside the int8 range the store wraps, as in the TIR


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a host C compiler")
def test_requant_micro_kernel_matches_tflm_on_extremes(tmp_path: Path) -> None:
    """``tvmq_requant_s8`` (the C every tiled epilogue calls) on extreme int32 values: SRDHM's saturation at
    INT32_MIN * INT32_MIN, ties of RDBPOT, shifts -31..31 (host build: the portable C of the M0/M3 path)."""
    src = tmp_path / "rq.c"
    src.write_text(
        RUNTIME_HEADER
        + """
void rq(const int32_t* acc, int8_t* out, const int32_t* bias, const int32_t* mult, const int32_t* shift, int32_t n,
        int32_t zp, int32_t lo, int32_t hi) {
  for (int32_t i = 0; i < n; ++i)
    tvmq_requant_s8(acc + i, 1, out + i, 1, 1, bias + i, mult + i, shift + i, 1, 1, zp, lo, hi);
}
"""
    )
    lib_path = tmp_path / "rq.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-std=c11", str(src), "-o", str(lib_path)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    rng = np.random.default_rng(7)
    n = 20000
    acc = rng.integers(INT32_MIN, INT32_MAX, size=n, dtype=np.int64)
    acc[:6] = [INT32_MIN, INT32_MAX, 0, -1, 1, INT32_MIN + 1]
    mult = rng.integers(INT32_MIN, INT32_MAX, size=n, dtype=np.int64)
    mult[:3] = [INT32_MIN, INT32_MAX, 1 << 30]
    shift = rng.integers(-31, 32, size=n).astype(np.int64)
    shift[:64] = np.arange(-31, 33)[:64].clip(-31, 31)
    bias = np.where(rng.random(n) < 0.5, 0, rng.integers(-(1 << 20), 1 << 20, size=n))
    for zp, lo, hi in [(0, -128, 127), (-7, -7, 127), (13, -128, 60), (0, -200, 200)]:
        out = np.zeros(n, np.int8)
        args = [np.ascontiguousarray(a, np.int32) for a in (acc, bias, mult, shift)]
        ptr = ctypes.POINTER(ctypes.c_int32)
        lib.rq(
            args[0].ctypes.data_as(ptr),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
            args[1].ctypes.data_as(ptr),
            args[2].ctypes.data_as(ptr),
            args[3].ctypes.data_as(ptr),
            n,
            zp,
            lo,
            hi,
        )
        want = _ref_requant(acc, bias, mult, shift, zp, lo, hi)
        np.testing.assert_array_equal(out, want, err_msg=f"zp={zp} lo={lo} hi={hi}")
