"""Side by side on Cortex-M4 (QEMU): instructions per MAC of tvmq's kernels and of Arm's CMSIS-NN, layer by layer.

Why: issue 8 asks tvmq's kernels (default schedules today, tuned ones later) to beat CMSIS-NN, the hand-written int8
and int4 kernels that TFLM and vendor stacks call on Cortex-M. This measures both on the same layers (the MLPerf Tiny
ResNet-8, DS-CNN and MobileNetV1-0.25 layers the issue lists, NHWC int8), with the same random weights, inputs and
requantization parameters, compiled by the same gcc with the same flags for the same board, each counted over the
same window around its one call. It also checks that they compute the same bytes: CMSIS-NN follows TFLM's
arithmetic, so any difference from tvmq is a finding, reported per layer.

- **tvmq default**: each layer's PrimFunc from ``schedules.primfuncs`` (exactly what ``tvmq.build`` makes of an
  int8 layer) through ``tvmq.codegen.kernels.emit_kernels`` with the default schedule; int4 weights take tvmq's
  packed-index path (uniform levels in a per-channel table, decoded once per output channel), which is also what a
  4-bit codebook costs. Kernels are ``noinline`` here so their code bytes can be read from the ELF.
- **tvmq tuned**: the same with the schedules of a tuning database (``--database``); null without one.
- **CMSIS-NN**: ``arm_convolve_wrapper_s8``, ``arm_depthwise_conv_wrapper_s8``, ``arm_fully_connected_s8`` (and the
  ``_s4`` variants for int4 weights), compiled from ``../shared/third_party`` (unmodified) into a static library; the
  scratch buffer is sized by the matching ``*_get_buffer_size`` before the timed window (``bench/cmsis/``).

One firmware per model family runs every variant of its layers in one QEMU boot (two boots at a time). A second part
measures the zoo models (``tvmq.load_quantized(<name>.int8.tflite)``): tvmq's whole inference and its conv/dense
steps vs CMSIS-NN's calls on the same layers with tvmq's own activations as inputs (outputs compared too).

Run: ``.venv/bin/python bench/kernels.py [--layers res8 dscnn.dw1 ...] [--out ...]`` (``--help``); with
``--tune 0 --database DIR`` it first tunes every layer and zoo model into DIR (``tvmq.tune``), then measures.
Writes JSON (default ``bench/results/kernels.json``), a bar chart beside it, and a table. QEMU counts
instructions, not cycles.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from baseline_instructions import _fmt, _ipm, _ratio, gcc_version, git_revision, write_report
from memory import channels_last, default_models, tflite_path
from plain_c_artifact import _BOUNDARY, _MODEL_H, _c_array
from ref_layers import WEIGHTED_OPS, RefLayer, capture_activations, ref_layers
from tqdm.auto import tqdm
from tvmq.schedules.codebook import pack_rows
from tvmq.schedules.primfuncs import qconv2d_primfunc, qdense_primfunc

import tvmq
import tvmq.device as device
from tvmq.codegen.emit import c_identifier, c_type, kernel_symbol
from tvmq.codegen.graph import read_program
from tvmq.codegen.kernels import RUNTIME_HEADER, emit_kernels
from tvmq.device.build import COMMON_CFLAGS
from tvmq.device.toolchain import GCC, find_tool, function_sizes, run_tool
from tvmq.quant.fixed_point import quantize_multiplier
from tvmq.quant.plan import _uniform_codebook
from tvmq.quant.qparams import weight_qmax
from tvmq.target import MicroTarget, parse_target

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "kernels.json"
CMSIS_BENCH_DIR = BENCH_DIR / "cmsis"
# ../shared/third_party next to the repository; TVMQ_THIRD_PARTY or --third-party point elsewhere.
DEFAULT_THIRD_PARTY = Path(os.environ.get("TVMQ_THIRD_PARTY", BENCH_DIR.parent.parent / "shared" / "third_party"))
CMSIS_SOURCE_DIRS = ("ConvolutionFunctions", "FullyConnectedFunctions", "NNSupportFunctions", "BasicMathFunctions")
SEED = 8  # issue 8
INPUT_STD = 73.9  # standard deviation of uniform random int8 codes
OUTPUT_STD = 48.0  # requantization aims the outputs' spread here: few saturate, most codes occur
ALIGN = 16  # every layer's input and output slot starts 16-byte aligned, like tvmq's arena tensors
FAMILIES = {"res8": "ResNet-8 (CIFAR-10 32x32)", "dscnn": "DS-CNN (KWS 49x10)",
            "mbv1": "MobileNetV1-0.25 (VWW 96x96)"}  # fmt: skip
IMPLS = ("tvmq", "tvmq_tuned", "cmsis")


# ------------------------------------------------------------------------------------------------------ the layers


@dataclass(frozen=True)
class LayerSpec:
    """One benchmark layer as the issue lists it; SAME padding (TFLite's split: the extra row/column at the end)."""

    name: str  # <family>.<layer>
    op: str  # conv | depthwise | dense
    hwc: tuple[int, int, int]  # input; dense: (1, 1, K)
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    relu: bool = True

    @property
    def family(self) -> str:
        return self.name.split(".")[0]

    def geometry(self) -> str:
        """``conv3x3 s2 32x32x16->32``, ``dw3x3 s1 25x5x64``, ``dense 64->12``."""
        h, w, c = self.hwc
        if self.op == "dense":
            return f"dense {c}->{self.out_channels}"
        kh, kw = self.kernel
        kind = "dw" if self.op == "depthwise" else "conv"
        out = "" if self.op == "depthwise" else f"->{self.out_channels}"
        return f"{kind}{kh}x{kw} s{self.stride} {h}x{w}x{c}{out}"


LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec("res8.conv1", "conv", (32, 32, 3), 16, (3, 3)),
    LayerSpec("res8.conv2", "conv", (32, 32, 16), 16, (3, 3)),
    LayerSpec("res8.conv3_s2", "conv", (32, 32, 16), 32, (3, 3), 2),
    LayerSpec("res8.skip1_s2", "conv", (32, 32, 16), 32, (1, 1), 2, relu=False),
    LayerSpec("res8.conv4", "conv", (16, 16, 32), 32, (3, 3)),
    LayerSpec("res8.conv5_s2", "conv", (16, 16, 32), 64, (3, 3), 2),
    LayerSpec("res8.skip2_s2", "conv", (16, 16, 32), 64, (1, 1), 2, relu=False),
    LayerSpec("res8.conv6", "conv", (8, 8, 64), 64, (3, 3)),
    LayerSpec("res8.dense", "dense", (1, 1, 64), 10, relu=False),
    LayerSpec("dscnn.conv1", "conv", (49, 10, 1), 64, (10, 4), 2),
    LayerSpec("dscnn.dw1", "depthwise", (25, 5, 64), 64, (3, 3)),
    LayerSpec("dscnn.pw1", "conv", (25, 5, 64), 64),
    LayerSpec("dscnn.dense", "dense", (1, 1, 64), 12, relu=False),
    LayerSpec("mbv1.conv1_s2", "conv", (96, 96, 3), 8, (3, 3), 2),
    LayerSpec("mbv1.dw1", "depthwise", (48, 48, 8), 8, (3, 3)),
    LayerSpec("mbv1.pw1", "conv", (48, 48, 8), 16),
    LayerSpec("mbv1.dw2_s2", "depthwise", (48, 48, 16), 16, (3, 3), 2),
    LayerSpec("mbv1.pw2", "conv", (24, 24, 16), 32),
    LayerSpec("mbv1.dw_6x6", "depthwise", (6, 6, 128), 128, (3, 3)),
    LayerSpec("mbv1.pw_6x6", "conv", (6, 6, 128), 128),
)


def same_padding(size: int, k: int, stride: int) -> tuple[int, int, int]:
    """(pad before, pad after, output size) of TFLite's SAME padding along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2, out


def _rng(name: str, *extra: int) -> np.random.Generator:
    """A generator that depends only on the layer's name (selecting other layers changes nothing)."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode()), *extra])


def layer_input(spec: LayerSpec, samples: int) -> tuple[np.ndarray, int]:
    """Random int8 input codes (N, H, W, C) ((N, K) for dense) and the input zero point (post-ReLU-like)."""
    rng = _rng(spec.name)
    zp = int(rng.integers(-128, 1))
    shape = (samples, spec.hwc[2]) if spec.op == "dense" else (samples, *spec.hwc)
    return rng.integers(-128, 128, size=shape).astype(np.int8), zp


def make_layer(spec: LayerSpec, bits: int, input_zp: int) -> RefLayer:
    """Random symmetric ``bits``-bit weights, a bias that centres the accumulator, per-channel (dense: per-tensor,
    as TFLite's FULLY_CONNECTED) multipliers that spread the outputs over about OUTPUT_STD codes, a random output
    zero point and, with ``relu``, the fused ReLU clamp at it."""
    rng = _rng(spec.name, bits)
    h, w, c = spec.hwc
    o, (kh, kw) = spec.out_channels, spec.kernel
    qmax = weight_qmax(bits)
    if spec.op == "dense":
        wshape: tuple[int, ...] = (o, c)
    else:
        wshape = (o, kh, kw, 1 if spec.op == "depthwise" else c)
    weight = rng.integers(-qmax, qmax + 1, size=wshape).astype(np.int8)
    flat = weight.reshape(o, -1).astype(np.float64)
    rms = np.sqrt(np.mean(flat**2, axis=1)) + 1e-9
    if spec.op == "dense":
        rms = np.full(o, np.sqrt(np.mean(flat**2)))
    acc_std = np.sqrt(flat.shape[1]) * INPUT_STD * rms
    multiplier, shift = quantize_multiplier(OUTPUT_STD / acc_std)
    offset = (-0.5 - input_zp) * flat.sum(axis=1)  # mean of sum((x - zp) * w) over uniform random x
    bias = np.round(-offset + rng.normal(0.0, 0.5, o) * acc_std).astype(np.int32)
    output_zp = int(rng.integers(-64, 64))
    common = dict(name=spec.name, weight=weight, bias=bias, multiplier=multiplier, shift=shift, input_zp=input_zp,
                  output_zp=output_zp, act_min=output_zp if spec.relu else -128, act_max=127)  # fmt: skip
    if spec.op == "dense":
        return RefLayer(op="dense", in_shape=(1, c), out_shape=(1, o), macs=o * c, **common)
    pt, pb, oh = same_padding(h, kh, spec.stride)
    pl, pr, ow = same_padding(w, kw, spec.stride)
    groups = c if spec.op == "depthwise" else 1
    return RefLayer(op="conv2d", in_shape=(1, h, w, c), out_shape=(1, oh, ow, o), strides=(spec.stride,) * 2,
                    padding=(pt, pl, pb, pr), groups=groups, macs=oh * ow * o * kh * kw * wshape[3],
                    **common)  # fmt: skip


@dataclass(frozen=True)
class AddLayer:
    """A TFLite int8 ADD of two same-shape tensors (``tflite_add_params`` arithmetic), as CMSIS-NN's
    ``arm_elementwise_add_s8`` takes it."""

    name: str
    out_shape: tuple[int, ...]
    a_zp: int
    b_zp: int
    out_zp: int
    params: dict[str, int]  # left_shift, a_mult, a_shift, b_mult, b_shift, out_mult, out_shift
    act_min: int
    act_max: int
    op: str = "add"
    macs: int = 0

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.out_shape

    def shape_info(self) -> dict:
        return {"input_shape": list(self.out_shape), "output_shape": list(self.out_shape)}


def is_depthwise(layer: RefLayer) -> bool:
    c = layer.in_shape[-1]
    return layer.is_conv and layer.groups == c > 1 and layer.weight.shape[-1] == 1


# ------------------------------------------------------------------------------------------------- tvmq's kernels


def tvmq_kernel(layer: RefLayer, bits: int) -> tuple[tvm.tirx.PrimFunc, list[np.ndarray]]:
    """The PrimFunc ``tvmq.build`` makes of this layer and its constant arguments, in order (data and output
    excluded). Below 8 bits the weights are the packed indices into the uniform grid plus its per-channel table,
    as ``tvmq.quant.plan`` stores uniform low-bit weights."""
    if bits < 8:
        codebook = _uniform_codebook(layer.weight, bits)
        consts = [pack_rows(codebook.indices, bits), codebook.table]
    else:
        consts = [layer.weight]
    consts += [a for a in (layer.bias, layer.multiplier, layer.shift) if a is not None]
    kwargs = dict(has_bias=layer.bias is not None, input_zp=layer.input_zp, output_zp=layer.output_zp,
                  act_min=layer.act_min, act_max=layer.act_max, codebook_bits=bits if bits < 8 else None)  # fmt: skip
    if layer.is_conv:
        func = qconv2d_primfunc(layer.in_shape, layer.weight.shape, strides=layer.strides, padding=layer.padding,
                                dilation=layer.dilation, groups=layer.groups, **kwargs)  # fmt: skip
    else:
        func = qdense_primfunc(layer.in_shape, layer.weight.shape, **kwargs)
    return func, [np.ascontiguousarray(c) for c in consts]


def host_outputs(funcs: dict[str, tuple[tvm.tirx.PrimFunc, list[np.ndarray]]], inputs: dict[str, np.ndarray],
                 out_shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:  # fmt: skip
    """tvmq's own results on the host (TVM's LLVM backend on the same PrimFuncs, as ``run_int`` runs them)."""
    mod = tvm.IRModule({k: f.with_attr("global_symbol", k) for k, (f, _) in funcs.items()})
    lib = tvm.compile(mod, target="llvm")
    result = {}
    for key, (_, consts) in funcs.items():
        outs = []
        for sample in inputs[key]:
            out = tvm.runtime.tensor(np.zeros(out_shapes[key], np.int8))
            args = [tvm.runtime.tensor(np.ascontiguousarray(sample[None])), *map(tvm.runtime.tensor, consts)]
            lib[key](*args, out)
            outs.append(out.numpy()[0])
        result[key] = np.stack(outs)
    return result


# ----------------------------------------------------------------------------------------------------- CMSIS-NN


@dataclass(frozen=True)
class CmsisCall:
    """The CMSIS-NN API a layer calls, the kernel that API dispatches to on this core, and the C of the call."""

    api: str
    kernel: str
    size_call: str  # C expression of the scratch size, before the timed window
    call: str  # C of the timed call
    decls: str  # constants and parameter structs


def third_party_commit(third_party: Path) -> str:
    """The CMSIS-NN commit the third_party README records."""
    readme = third_party / "README.md"
    match = re.search(r"CMSIS-NN/[^|]*\|[^|]*\|\s*([0-9a-f]{40})", readme.read_text()) if readme.is_file() else None
    return match.group(1) if match else "unknown"


def build_cmsis_nn(third_party: Path, work: Path, core_flags: Sequence[str], jobs: int) -> Path:
    """Compile CMSIS-NN's integer conv/FC/support sources with tvmq's device flags into ``libcmsisnn.a``."""
    nn = third_party / "CMSIS-NN"
    if not (nn / "Include" / "arm_nnfunctions.h").is_file():
        raise SystemExit(f"CMSIS-NN not found in {third_party} (see ../shared/third_party/README.md); pass "
                         f"--third-party DIR or set TVMQ_THIRD_PARTY")  # fmt: skip
    sources = sorted(s for d in CMSIS_SOURCE_DIRS for s in (nn / "Source" / d).glob("*.c")
                     if not re.search(r"_f(16|32)\.c$", s.name))  # fmt: skip
    out = work / "cmsis-nn"
    out.mkdir(parents=True, exist_ok=True)
    gcc = find_tool(GCC)
    flags = [*core_flags, *cmsis_includes(third_party)]

    def compile_one(src: Path) -> Path:
        obj = out / f"{src.stem}.o"
        run_tool([gcc, *flags, "-c", src, "-o", obj], what=f"compiling CMSIS-NN {src.name}")
        return obj

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        objects = list(pool.map(compile_one, sources))
    lib = out / "libcmsisnn.a"
    run_tool([find_tool("arm-none-eabi-ar"), "rcs", lib, *objects], what="archiving CMSIS-NN")
    return lib


def cmsis_includes(third_party: Path) -> list[str]:
    return [
        f"-I{third_party / 'CMSIS-NN' / 'Include'}",
        f"-I{third_party / 'CMSIS-Core' / 'CMSIS' / 'Core' / 'Include'}",
    ]


def _pack_s4(values: np.ndarray) -> np.ndarray:
    """CMSIS-NN's int4 layout: consecutive values two per byte, the first in the low nibble."""
    return pack_rows((values.reshape(1, -1).astype(np.int16) & 0xF).astype(np.uint8), 4)[0].view(np.int8)


def _dims(shape: Sequence[int]) -> str:
    n, h, w, c = (int(d) for d in shape)
    return f"{{{n}, {h}, {w}, {c}}}"


def cmsis_call(layer: RefLayer | AddLayer, bits: int, sym: str, mve: bool = False) -> CmsisCall:
    """The CMSIS-NN call of one layer (its dispatch mirrors the wrappers' ``if``s to name the kernel that runs)."""
    if isinstance(layer, AddLayer):
        p = layer.params
        call = (f"arm_elementwise_add_s8(in, in2, {-layer.a_zp}, {p['a_mult']}, {p['a_shift']}, {-layer.b_zp}, "
                f"{p['b_mult']}, {p['b_shift']}, {p['left_shift']}, out, {layer.out_zp}, {p['out_mult']}, "
                f"{p['out_shift']}, {layer.act_min}, {layer.act_max}, {int(np.prod(layer.out_shape))})")  # fmt: skip
        return CmsisCall("arm_elementwise_add_s8", "arm_elementwise_add_s8", "0", call, "")
    sfx = "s8" if bits == 8 else "s4"
    o = int(layer.weight.shape[0])
    per_channel = len(np.unique(layer.multiplier)) > 1 or len(np.unique(layer.shift)) > 1
    bias = f"{sym}_bias" if layer.bias is not None else "NULL"
    act = f"{{{layer.act_min}, {layer.act_max}}}"
    decls = [_c_array("int32_t", f"{sym}_mult", layer.multiplier), _c_array("int32_t", f"{sym}_shift", layer.shift)]
    if layer.bias is not None:
        decls.append(_c_array("int32_t", f"{sym}_bias", layer.bias))
    if not layer.is_conv:
        if per_channel and bits != 8:
            raise ValueError(f"{layer.name}: CMSIS-NN has no per-channel int4 fully connected kernel")
        weight = layer.weight if bits == 8 else _pack_s4(layer.weight)
        decls.append(_c_array("int8_t", f"{sym}_filter", weight))
        k = int(layer.weight.shape[1])
        n = int(layer.in_shape[0])
        api = "arm_fully_connected_per_channel_s8" if per_channel else f"arm_fully_connected_{sfx}"
        quant_type = "cmsis_nn_per_channel_quant_params" if per_channel else "cmsis_nn_per_tensor_quant_params"
        quant = f"{{(int32_t *){sym}_mult, (int32_t *){sym}_shift}}" if per_channel else \
            f"{{{int(layer.multiplier[0])}, {int(layer.shift[0])}}}"  # fmt: skip
        decls.append(f"static const cmsis_nn_fc_params {sym}_params = {{{-layer.input_zp}, 0, {layer.output_zp}, "
                     f"{act}}};\nstatic const {quant_type} {sym}_quant = {quant};\n"
                     f"static const cmsis_nn_dims {sym}_in_dims = {_dims((n, 1, 1, k))}, {sym}_filter_dims = "
                     f"{_dims((k, 1, 1, o))}, {sym}_bias_dims = {_dims((1, 1, 1, o))}, {sym}_out_dims = "
                     f"{_dims((n, 1, 1, o))};")  # fmt: skip
        size = f"arm_fully_connected_s8_get_buffer_size(&{sym}_filter_dims)" if bits == 8 else "0"
        return CmsisCall(api, api, size, _call(api, sym, bias), "\n".join(decls))
    (pt, pl, _, _), (sh, sw), (dh, dw) = layer.padding, layer.strides, layer.dilation
    geometry = f"{{{sw}, {sh}}}, {{{pl}, {pt}}}, {{{dw}, {dh}}}, {act}"  # cmsis_nn_tile is {w, h}
    if is_depthwise(layer):
        filt = np.transpose(layer.weight, (3, 1, 2, 0))  # (C*M, KH, KW, 1) -> CMSIS-NN's (1, KH, KW, C*M)
        ch_mult = o // layer.in_shape[-1]
        params = f"cmsis_nn_dw_conv_params {sym}_params = {{{-layer.input_zp}, {layer.output_zp}, {ch_mult}, " \
                 f"{geometry}}}"  # fmt: skip
        api = f"arm_depthwise_conv_wrapper_{sfx}"
        kernel = _depthwise_kernel(layer, bits, ch_mult, mve)
    else:
        filt = layer.weight
        params = f"cmsis_nn_conv_params {sym}_params = {{{-layer.input_zp}, {layer.output_zp}, {geometry}}}"
        api = f"arm_convolve_wrapper_{sfx}"
        kernel = _conv_kernel(layer, sfx)
    decls.append(_c_array("int8_t", f"{sym}_filter", filt if bits == 8 else _pack_s4(filt)))
    decls.append(f"static const {params};\nstatic const cmsis_nn_per_channel_quant_params {sym}_quant = "
                 f"{{(int32_t *){sym}_mult, (int32_t *){sym}_shift}};\n"
                 f"static const cmsis_nn_dims {sym}_in_dims = {_dims(layer.in_shape)}, {sym}_filter_dims = "
                 f"{_dims(filt.shape)}, {sym}_bias_dims = {_dims((1, 1, 1, o))}, {sym}_out_dims = "
                 f"{_dims(layer.out_shape)};")  # fmt: skip
    size = f"{api}_get_buffer_size(&{sym}_params, &{sym}_in_dims, &{sym}_filter_dims, &{sym}_out_dims)"
    return CmsisCall(api, kernel, size, _call(api, sym, bias), "\n".join(decls))


def _call(api: str, sym: str, bias: str) -> str:
    return (f"{api}(&ctx, &{sym}_params, &{sym}_quant, &{sym}_in_dims, in, &{sym}_filter_dims, {sym}_filter, "
            f"&{sym}_bias_dims, {bias}, &{sym}_out_dims, out)")  # fmt: skip


def _conv_kernel(layer: RefLayer, sfx: str) -> str:
    """arm_convolve_wrapper_s8/_s4's choice (DSP and plain-C builds; MVE's even-s4 path is not modelled)."""
    (pt, pl, _, _), (sh, sw), (dh, dw) = layer.padding, layer.strides, layer.dilation
    _, h, _, c = layer.in_shape
    _, kh, kw, fc = layer.weight.shape
    if pt == pl == 0 and kh == kw == 1 and dh == dw == 1 and c == fc:
        return f"arm_convolve_1x1_{sfx}_fast" if sh == sw == 1 else f"arm_convolve_1x1_{sfx}"
    if h == 1 and dw == 1 and kh == 1 and (sw * c) % 4 == 0 and c == fc:
        return f"arm_convolve_1_x_n_{sfx}"
    return f"arm_convolve_{sfx}"


def _depthwise_kernel(layer: RefLayer, bits: int, ch_mult: int, mve: bool) -> str:
    """arm_depthwise_conv_wrapper_s8/_s4's choice."""
    (pt, pl, _, _), (dh, dw) = layer.padding, layer.dilation
    _, kh, kw, _ = layer.weight.shape
    if ch_mult == 1 and layer.in_shape[0] == 1 and dh == dw == 1:
        if bits == 8 and not mve and kh == kw == 3 and pt <= 1 and pl <= 1:
            return "arm_depthwise_conv_3x3_s8"
        return f"arm_depthwise_conv_{'s8' if bits == 8 else 's4'}_opt"
    return f"arm_depthwise_conv_{'s8' if bits == 8 else 's4'}"


# --------------------------------------------------------------------------------------------------- a firmware


@dataclass
class Step:
    """One timed call: a layer's kernel by one implementation on its input slot(s) (two for an ADD)."""

    name: str  # <layer>/<int8|int4>/<impl>
    impl: str  # tvmq | tvmq_tuned | cmsis
    layer: RefLayer | AddLayer
    bits: int
    slots: tuple[int, ...]  # indices of the inputs this step reads
    out_offset: int = 0  # bytes into the firmware's output

    @property
    def symbol(self) -> str:
        return c_identifier(self.name.replace("/", "_"))


@dataclass
class Firmware:
    """Many steps over many inputs, run in one QEMU boot; inputs are (N, ...) int8 per slot."""

    name: str
    steps: list[Step]
    inputs: list[np.ndarray]
    in_offsets: list[int] = field(default_factory=list)
    in_bytes: int = 0
    out_bytes: int = 0
    info_offset: int = 0

    def layout(self) -> None:
        """16-byte aligned input slots, output slots, then two int32 per CMSIS-NN step (status, scratch bytes)."""
        pos, self.in_offsets = 0, []
        for x in self.inputs:
            self.in_offsets.append(pos)
            pos += _aligned(x[0].size)
        self.in_bytes, pos = pos, 0
        for s in self.steps:
            s.out_offset = pos
            pos += _aligned(int(np.prod(s.layer.out_shape)))
        self.info_offset = pos
        self.out_bytes = pos + 8 * len(self.cmsis_steps)

    @property
    def cmsis_steps(self) -> list[Step]:
        return [s for s in self.steps if s.impl == "cmsis"]

    def batch(self) -> np.ndarray:
        """The harness's input: every slot of every sample at its offset."""
        n = len(self.inputs[0])
        out = np.zeros((n, self.in_bytes), np.int8)
        for x, off in zip(self.inputs, self.in_offsets, strict=True):
            out[:, off : off + x[0].size] = x.reshape(n, -1)
        return out


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def write_firmware(fw: Firmware, directory: Path, micro: MicroTarget, schedules: dict[str, Callable | None]) -> Path:
    """model.c (tvmq kernels and the run function), cmsis_layers.c (CMSIS-NN calls), model.h, metadata.json."""
    fw.layout()
    directory.mkdir(parents=True, exist_ok=True)
    name = c_identifier(fw.name)
    (directory / "model.h").write_text(_MODEL_H.format(name=name, macro=name.upper()))
    (directory / "tvmq_runtime.h").write_text(RUNTIME_HEADER)
    (directory / "model.c").write_text(_model_source(fw, name, micro, schedules))
    (directory / "cmsis_layers.c").write_text(_cmsis_source(fw, micro))
    meta = {
        "name": name,
        "target": micro.to_json(),
        "input": {"shape": [1, fw.in_bytes], "dtype": "int8", "bytes": fw.in_bytes, "scale": 1.0, "zero_point": 0},
        "output": {"shape": [1, fw.out_bytes], "dtype": "int8", "bytes": fw.out_bytes, "scale": 1.0, "zero_point": 0},
        "steps": [{"name": s.name, "op": s.layer.op, "macs": s.layer.macs} for s in fw.steps],
        "arena_bytes": 0,
    }
    (directory / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def _model_source(fw: Firmware, name: str, micro: MicroTarget, schedules: dict[str, Callable | None]) -> str:
    parts = [f"/* Kernel benchmark firmware '{name}' generated by bench/kernels.py. Do not edit. */",
             '#include <string.h>\n#include "tvmq_runtime.h"\n#include "model.h"\n',
             "#ifndef TVMQ_STEP_BEGIN\n#define TVMQ_STEP_BEGIN(index)\n#endif",
             "#ifndef TVMQ_STEP_END\n#define TVMQ_STEP_END(index)\n#endif\n"]  # fmt: skip
    calls = []
    for impl in ("tvmq", "tvmq_tuned"):
        steps = [s for s in fw.steps if s.impl == impl]
        if not steps:
            continue
        kernels = {kernel_symbol(s.symbol): tvmq_kernel(s.layer, s.bits) for s in steps}
        kwargs = {} if schedules.get(impl) is None else {"schedule": schedules[impl]}
        text = emit_kernels({k: f for k, (f, _) in kernels.items()}, micro, **kwargs)
        # noinline: each kernel stays one function (its code bytes show in the ELF; gcc still specialises it to its
        # constant arguments) instead of melting into one huge run function, which costs tvmq.build 4-21% today;
        # no_icf: a tuned kernel identical to the default one stays a separate function with its own constants
        parts.append(f"/* ---- tvmq kernels: {impl} ---- */")
        parts.append(re.sub(r"^static ", "static __attribute__((noinline, no_icf)) ", text, flags=re.M))
        for s in steps:
            consts = kernels[kernel_symbol(s.symbol)][1]
            for j, c in enumerate(consts):
                parts.append(_c_array(c_type(str(c.dtype)), f"{s.symbol}_a{j}", c))
            args = [f"(int8_t *)(input + {fw.in_offsets[s.slots[0]]})"]
            args += [f"({c_type(str(c.dtype))} *){s.symbol}_a{j}" for j, c in enumerate(consts)]
            args.append(f"(int8_t *)(output + {s.out_offset})")
            calls.append((s, f"{kernel_symbol(s.symbol)}({', '.join(args)});"))
    lines = [f"void cmsis_step_{i}(const int8_t *in, const int8_t *in2, int8_t *out, int32_t *info);"
             for i, s in enumerate(fw.steps) if s.impl == "cmsis"]  # fmt: skip
    lines.append(f"static int32_t bench_info[{max(2 * len(fw.cmsis_steps), 1)}];\n")
    lines.append(f"int32_t tvmq_{name}_run(const int8_t *input, int8_t *output) {{")
    by_step = dict((id(s), c) for s, c in calls)
    k = 0
    for i, s in enumerate(fw.steps):
        if s.impl == "cmsis":  # the marks sit inside, right around the CMSIS-NN call
            ins = [f"input + {fw.in_offsets[j]}" for j in s.slots] + ["NULL"] * (2 - len(s.slots))
            lines.append(f"  cmsis_step_{i}({', '.join(ins)}, output + {s.out_offset}, bench_info + {2 * k});"
                         f"  /* {s.name} */")  # fmt: skip
            k += 1
        else:
            lines += [f"  TVMQ_STEP_BEGIN({i});  /* {s.name} */", f"  {by_step[id(s)]}", f"  TVMQ_STEP_END({i});"]
    if fw.cmsis_steps:
        lines.append(f"  memcpy(output + {fw.info_offset}, bench_info, sizeof(bench_info));")
    lines += ["  return 0;", "}\n", _BOUNDARY.format(name=name, in_bytes=fw.in_bytes, out_bytes=fw.out_bytes)]
    return "\n".join(parts + lines)


def _cmsis_source(fw: Firmware, micro: MicroTarget) -> str:
    parts = ["/* CMSIS-NN steps generated by bench/kernels.py (compiled with CMSIS-NN's headers). Do not edit. */",
             '#include "tvmq_runtime.h"\n#include "cmsis_bench.h"\n']  # fmt: skip
    for i, s in enumerate(fw.steps):
        if s.impl != "cmsis":
            continue
        call = cmsis_call(s.layer, s.bits, s.symbol, micro.core.has_mve)
        parts += [f"/* ---- {s.name}: {call.api} -> {call.kernel} ---- */", call.decls,
            f"void cmsis_step_{i}(const int8_t *in, const int8_t *in2, int8_t *out, int32_t *info) {{",
            "  (void)in2;",
            "  cmsis_nn_context ctx;",
            f"  if (!cmsis_bench_context(&ctx, {call.size_call}, info)) return;",
            f"  TVMQ_STEP_BEGIN({i});",
            f"  const arm_cmsis_nn_status status = {call.call};",
            f"  TVMQ_STEP_END({i});",
            "  info[0] = (int32_t)status;",
            "}\n"]  # fmt: skip
    return "\n".join(parts)


def scratch_bound(fw: Firmware) -> int:
    """More than any CMSIS-NN kernel here asks for: im2col of two patches as int16 (4 bytes per tap of the input
    window), the depthwise kernels' int16 rows (2 per tap); the firmware still checks each *_get_buffer_size."""
    taps = [int(np.prod(s.layer.weight.shape[1:-1])) * s.layer.in_shape[-1] for s in fw.cmsis_steps
            if isinstance(s.layer, RefLayer)]  # fmt: skip
    return 8 * max([0, *taps]) + 1024


@dataclass
class FirmwareResult:
    """Per step: median instructions, outputs (N, *out_shape[1:]), and for CMSIS-NN steps status and scratch."""

    instructions: dict[str, int | None]
    outputs: dict[str, np.ndarray]
    info: dict[str, tuple[int, int]]
    sizes: dict[str, int]  # function -> bytes (nm)
    calls: dict[str, set[str]]  # function -> functions it branches to (objdump)
    seconds: float


def run_firmware(fw: Firmware, work: Path, micro: MicroTarget, args: argparse.Namespace,
                 cmsis_lib: Path | None) -> FirmwareResult:  # fmt: skip
    """Compile the firmware ``write_firmware`` wrote into ``work/artifact`` (its CMSIS-NN steps against the
    library), run it on QEMU, read back outputs, CMSIS-NN statuses and code sizes. No TVM here: thread-safe."""
    started = time.monotonic()
    art = work / "artifact"
    extra: list[Path] = []
    if fw.cmsis_steps:
        obj = work / "cmsis_layers.o"
        flags = [*micro.core.cflags, args.opt, *COMMON_CFLAGS, f"-I{art}", f"-I{CMSIS_BENCH_DIR}",
                 f"-I{device.boards.FIRMWARE_DIR}", *cmsis_includes(args.third_party),
                 f"-DCMSIS_BENCH_SCRATCH_BYTES={scratch_bound(fw)}"]  # fmt: skip
        run_tool([find_tool(GCC), *flags, "-include", device.boards.FIRMWARE_DIR / "tvmq_profile.h", "-c",
                  art / "cmsis_layers.c", "-o", obj], what=f"compiling the CMSIS-NN steps of {fw.name}")  # fmt: skip
        extra = [obj, cmsis_lib]
    result = device.run(art, fw.batch(), board=args.board, opt=args.opt, progress=False, work_dir=work / "run",
                        stack_bytes=2 * device.DEFAULT_STACK_BYTES, extra_objects=extra)  # fmt: skip
    raw = result.raw_outputs.reshape(len(result.raw_outputs), -1)
    outputs = {s.name: raw[:, s.out_offset : s.out_offset + int(np.prod(s.layer.out_shape))]
               .reshape(len(raw), *s.layer.out_shape[1:]) for s in fw.steps}  # fmt: skip
    info_words = raw[0, fw.info_offset :].copy().view("<i4")
    info = {s.name: (int(info_words[2 * k]), int(info_words[2 * k + 1])) for k, s in enumerate(fw.cmsis_steps)}
    sizes, calls = function_graph(result.elf_path)
    return FirmwareResult({s["name"]: s["instructions"] for s in result.steps}, outputs, info, sizes, calls,
                          time.monotonic() - started)  # fmt: skip


# ------------------------------------------------------------------------------------------------ code bytes


_FUNC = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
_BRANCH = re.compile(r"^\s+[0-9a-f]+:\s+(b\S*)\s+[0-9a-f]+ <([^>+]+)(?:\+0x[0-9a-f]+)?>")


def function_graph(elf: Path) -> tuple[dict[str, int], dict[str, set[str]]]:
    """Bytes of every function in the ELF (``nm -S``) and the functions each one branches to (``objdump -d``)."""
    sizes = function_sizes(elf)
    calls: dict[str, set[str]] = {}
    current = None
    for line in run_tool([find_tool("arm-none-eabi-objdump"), "-d", "--no-show-raw-insn", elf],
                         what="objdump").splitlines():  # fmt: skip
        if m := _FUNC.match(line):
            current = m.group(1)
            calls.setdefault(current, set())
        elif current is not None and (m := _BRANCH.match(line)) and m.group(2) != current:
            calls[current].add(m.group(2))
    return sizes, calls


def code_bytes(root: str, sizes: dict[str, int], calls: dict[str, set[str]]) -> tuple[int, list[str]]:
    """Bytes of ``root`` and every function it reaches by branches (its whole code in flash). gcc's clones of a
    static function (``root.constprop.0``, ``.isra.0``, ...) count as ``root``."""
    seen, todo = set(), [f for f in sizes if f == root or f.startswith(root + ".")]
    while todo:
        f = todo.pop()
        if f not in seen and f in sizes:
            seen.add(f)
            todo += sorted(calls.get(f, ()))
    return sum(sizes[f] for f in seen), sorted(seen)


# ------------------------------------------------------------------------------------------------- per layer


def layer_firmwares(specs: Sequence[LayerSpec], bits: Sequence[int], samples: int,
                    tuned: bool) -> tuple[list[Firmware], dict[tuple[str, int], RefLayer]]:  # fmt: skip
    """One firmware per family: for each layer and weight width, tvmq (default, tuned) and CMSIS-NN steps."""
    impls = ["tvmq", *(["tvmq_tuned"] if tuned else []), "cmsis"]
    layers: dict[tuple[str, int], RefLayer] = {}
    firmwares: dict[str, Firmware] = {}
    for spec in specs:
        fw = firmwares.setdefault(spec.family, Firmware(f"kernels_{spec.family}", [], []))
        x, zp = layer_input(spec, samples)
        fw.inputs.append(x)
        for b in bits:
            layer = layers[spec.name, b] = make_layer(spec, b, zp)
            fw.steps += [Step(f"{spec.name}/int{b}/{impl}", impl, layer, b, (len(fw.inputs) - 1,)) for impl in impls]
    return list(firmwares.values()), layers


def layer_rows(specs: Sequence[LayerSpec], bits: Sequence[int], layers: dict, results: dict[str, FirmwareResult],
               host: dict[str, np.ndarray], micro: MicroTarget,
               findings: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """One JSON row per layer: geometry, MACs, and per weight width each column's counts, code bytes, checks."""
    rows = []
    for spec in specs:
        res = results[spec.family]
        first = layers[spec.name, bits[0]]
        row: dict[str, Any] = {"name": spec.name, "model": FAMILIES[spec.family], "geometry": spec.geometry(),
                               "op": spec.op, **first.shape_info(), "macs": first.macs}  # fmt: skip
        for b in bits:
            layer = layers[spec.name, b]
            key = f"{spec.name}/int{b}"
            col = {impl: _column(key, impl, layer, b, res, micro) for impl in IMPLS}
            want = host[key]
            checks: dict[str, Any] = {"tvmq_device_equals_host": bool(np.array_equal(res.outputs[f"{key}/tvmq"], want))}
            if not checks["tvmq_device_equals_host"]:
                raise AssertionError(f"{key}: tvmq's device output differs from its host output; the numbers are void")
            if col["tvmq_tuned"] is not None:
                checks["tvmq_tuned_equals_host"] = bool(np.array_equal(res.outputs[f"{key}/tvmq_tuned"], want))
                if not checks["tvmq_tuned_equals_host"]:
                    findings.append(f"{key}: the tuned kernel's output differs from tvmq's host output (an error)")
            checks.update(compare(res.outputs[f"{key}/cmsis"], want))
            if not checks["cmsis_nn_equals_tvmq"]:
                findings.append(
                    f"{key}: CMSIS-NN {col['cmsis']['kernel']} differs from tvmq in "
                    f"{checks['mismatches']} of {want.size} codes (max |diff| {checks['max_abs_diff']})"
                )
            row[f"int{b}"] = {
                **col,
                "ratio_tvmq_over_cmsis_nn": _ratio(col["tvmq"]["instructions"], col["cmsis"]["instructions"]),
                "ratio_tvmq_tuned_over_cmsis_nn": None if col["tvmq_tuned"] is None else
                _ratio(col["tvmq_tuned"]["instructions"], col["cmsis"]["instructions"]),
                "outputs_equal": checks["cmsis_nn_equals_tvmq"], "checks": checks,
            }  # fmt: skip
        rows.append(row)
    return rows


def compare(got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    """Equality of CMSIS-NN's codes with tvmq's, and the size of any difference."""
    diff = np.abs(got.astype(np.int32) - want.reshape(got.shape).astype(np.int32))
    return {"cmsis_nn_equals_tvmq": bool(not diff.any()), "mismatches": int(np.count_nonzero(diff)),
            "max_abs_diff": int(diff.max(initial=0)), "codes_compared": int(diff.size),
            "distinct_codes": int(len(np.unique(want)))}  # fmt: skip


def _column(key: str, impl: str, layer: RefLayer, bits: int, res: FirmwareResult,
            micro: MicroTarget) -> dict[str, Any] | None:  # fmt: skip
    name = f"{key}/{impl}"
    if name not in res.instructions:
        return None
    ins = res.instructions[name]
    col: dict[str, Any] = {"instructions": ins, "instructions_per_mac": _ipm(ins, layer.macs)}
    sym = c_identifier(name.replace("/", "_"))
    if impl == "cmsis":
        call = cmsis_call(layer, bits, sym, micro.core.has_mve)
        status, scratch = res.info[name]
        if status != 0:
            raise AssertionError(f"{name}: {call.api} returned status {status} (scratch {scratch} bytes)")
        wrapper, reachable = code_bytes(call.api, res.sizes, res.calls)
        kernel, funcs = code_bytes(call.kernel, res.sizes, res.calls)
        if call.kernel not in reachable:
            raise AssertionError(f"{name}: {call.api} cannot reach {call.kernel}; the dispatch model is out of date")
        col.update(api=call.api, kernel=call.kernel, scratch_bytes=scratch,
                   code_bytes=kernel + (0 if call.api in funcs else res.sizes.get(call.api, 0)),
                   wrapper_code_bytes=wrapper, functions=sorted({call.api, *funcs}))  # fmt: skip
    else:
        col["code_bytes"], col["functions"] = code_bytes(kernel_symbol(sym), res.sizes, res.calls)
    return col


# ------------------------------------------------------------------------------------------------- zoo models


@dataclass
class ZooCall:
    """One CMSIS-NN call standing for (part of) a tvmq step: its operands and the bytes tvmq computes for it."""

    step: str  # the tvmq step (a fused residual ADD belongs to its convolution's step)
    layer_name: str  # the model's layer
    layer: RefLayer | AddLayer  # named <step> (<step>.add for an ADD)
    operands: list[np.ndarray]  # (N, ...) int8 each
    expected: np.ndarray
    fused: bool = False  # an ADD tvmq computes in the epilogue of the convolution


@dataclass
class ZooModel:
    """A zoo model from its int8 TFLite file: device samples, tvmq artifact(s), and the CMSIS-NN calls of its
    conv/depthwise/dense/ADD layers on tvmq's own activations."""

    name: str
    qmodel: Any
    x: np.ndarray
    artifacts: dict[str, Any]  # impl -> Artifact
    calls: list[ZooCall]


def _op(step: Any) -> str:
    return str(step.attrs.get("tvmq.op", ""))


def load_zoo(name: str, samples: int, micro: MicroTarget, schedules: dict[str, Callable | None]) -> ZooModel:
    """Load, build (default and tuned), capture every step's activations on the host, and pair each conv/dense
    layer (and each ADD, fused into a convolution's step or not) with the CMSIS-NN call that computes it."""
    q = tvmq.load_quantized(tflite_path(name))
    ex = tvmq.examples.load(name)
    x = q.quantize_input(channels_last(ex.x_test[:samples], q.input_shape))
    target = {"kind": "c", "mcpu": micro.core.name}
    arts = {impl: tvmq.build(q, target=target, name=name, **({} if sched is None else {"schedule": sched}))
            for impl, sched in schedules.items() if impl == "tvmq" or sched is not None}  # fmt: skip
    program = read_program(q.int_mod)
    acts = capture_activations(q, x, [s.name for s in program.steps])
    producer = {id(s.output): s.name for s in program.steps}

    def value(t: Any) -> np.ndarray:
        """tvmq's bytes of a program tensor (the model input or a step's output), (N, *t.shape[1:])."""
        owner = program.storage(t)
        data = x if owner is program.input else acts[producer[id(owner)]][1]
        return data.reshape(len(x), *t.shape[1:])

    steps = [s for s in program.steps if _op(s).split("+")[0] in WEIGHTED_OPS]
    refs = ref_layers(q)
    if [int(s.attrs.get("tvmq.macs", -1)) for s in steps] != [r.macs for r in refs]:
        raise AssertionError(f"{name}: the conv/dense steps of the C program do not follow its conv/dense layers")
    layer_of = {layer.name: layer for layer in q.layers}
    adds = [(layer, lp) for layer, lp in zip(q.layers, q.plan.layers, strict=True) if layer.kind == "add"]
    fused = {s.name: replace(r, name=s.name) for s, r in zip(steps, refs, strict=True) if _op(s).endswith("+add")}
    inter = host_outputs({c_identifier(k): tvmq_kernel(r, 8) for k, r in fused.items()},
                         {c_identifier(k): acts[k][0].reshape(len(x), *r.in_shape[1:]) for k, r in fused.items()},
                         {c_identifier(k): r.out_shape for k, r in fused.items()}) if fused else {}  # fmt: skip
    calls, fused_adds = [], set()
    for s, ref in zip(steps, refs, strict=True):
        layer = replace(ref, name=s.name)
        conv_out = inter[c_identifier(s.name)] if s.name in fused else acts[s.name][1]
        calls.append(ZooCall(s.name, ref.name, layer, [acts[s.name][0]], conv_out))
        if s.name in fused:  # the ADD whose operand this convolution's output is; the other operand is a step input
            conv = layer_of[ref.name]
            add, lp = next((a, lp) for a, lp in adds if any(v.same_as(conv.output) for v in a.inputs))
            fused_adds.add(add.name)
            (residual,) = [t for t in s.inputs[1:] if t.kind != "const"]
            pair = [conv_out, value(residual)]
            if not add.inputs[0].same_as(conv.output):
                pair.reverse()
            calls.append(ZooCall(s.name, add.name, _add_layer(f"{s.name}.add", add, lp), pair, acts[s.name][1],
                                 fused=True))  # fmt: skip
    add_steps = [s for s in program.steps if _op(s) == "add"]
    rest = [(a, lp) for a, lp in adds if a.name not in fused_adds]
    if len(add_steps) != len(rest):
        raise AssertionError(f"{name}: {len(rest)} ADD layers but {len(add_steps)} add steps in the C program")
    for s, (add, lp) in zip(add_steps, rest, strict=True):
        operands = [value(t) for t in s.inputs if t.kind != "const"]
        calls.append(ZooCall(s.name, add.name, _add_layer(s.name, add, lp), operands, acts[s.name][1]))
    return ZooModel(name, q, x, arts, calls)


def _add_layer(name: str, add: Any, lp: Any) -> AddLayer:
    a, b = lp.inputs
    return AddLayer(name, tuple(add.out_shape), int(a.zero_point), int(b.zero_point), int(lp.output.zero_point),
                    {k: int(v) for k, v in lp.params.items()}, int(lp.act_min), int(lp.act_max))  # fmt: skip


def zoo_firmware(models: Sequence[ZooModel]) -> Firmware:
    """One firmware with the CMSIS-NN calls of every zoo model, each on tvmq's activations."""
    fw = Firmware("kernels_zoo_cmsis", [], [])
    for m in models:
        for call in m.calls:
            slots = []
            for operand in call.operands:
                fw.inputs.append(operand)
                slots.append(len(fw.inputs) - 1)
            fw.steps.append(Step(f"{m.name}.{call.layer.name}/int8/cmsis", "cmsis", call.layer, 8, tuple(slots)))
    return fw


def zoo_rows(models: Sequence[ZooModel], runs: dict[Any, Any], cmsis: FirmwareResult,
             findings: list[str]) -> dict[str, Any]:  # fmt: skip
    """Per model: tvmq's whole inference, its conv/dense steps (with fused ADDs) and other ops, vs CMSIS-NN's
    calls for the same layers; per call, both counts and the byte check."""
    out = {}
    for m in models:
        entry: dict[str, Any] = {"samples": len(m.x), "layers": []}
        funcs: set[str] = set()
        sums = {"conv_dense": 0, "fused_add": 0, "add": 0}
        for call in m.calls:
            key = f"{m.name}.{call.layer.name}/int8/cmsis"
            status, scratch = cmsis.info[key]
            if status != 0:
                raise AssertionError(f"{key}: CMSIS-NN returned status {status}")
            c = cmsis_call(call.layer, 8, "x")
            funcs.update([c.api, *code_bytes(c.kernel, cmsis.sizes, cmsis.calls)[1]])
            checks = compare(cmsis.outputs[key], call.expected)
            if not checks["cmsis_nn_equals_tvmq"]:
                findings.append(f"{m.name} {call.layer_name}: CMSIS-NN {c.kernel} differs from tvmq in "
                                f"{checks['mismatches']} of {checks['codes_compared']} codes (max |diff| "
                                f"{checks['max_abs_diff']})")  # fmt: skip
            ins = cmsis.instructions[key] or 0
            kind = "conv_dense" if isinstance(call.layer, RefLayer) else "fused_add" if call.fused else "add"
            sums[kind] += ins
            op = "depthwise" if isinstance(call.layer, RefLayer) and is_depthwise(call.layer) else call.layer.op
            entry["layers"].append({"name": call.layer_name, "step": call.step, "op": op, "fused_into_step":
                                    call.fused, **call.layer.shape_info(), "macs": call.layer.macs,
                                    "cmsis_nn_api": c.api, "cmsis_nn_kernel": c.kernel, "cmsis_nn_instructions": ins,
                                    "cmsis_nn_scratch_bytes": scratch, "outputs_equal": checks["cmsis_nn_equals_tvmq"],
                                    "checks": checks})  # fmt: skip
        macs = sum(call.layer.macs for call in m.calls)
        entry.update(conv_dense_macs=macs, cmsis_nn_conv_dense_instructions=sums["conv_dense"],
                     cmsis_nn_conv_dense_instructions_per_mac=_ipm(sums["conv_dense"], macs),
                     cmsis_nn_fused_add_instructions=sums["fused_add"], cmsis_nn_add_instructions=sums["add"],
                     cmsis_nn_like_tvmq_steps_instructions=sums["conv_dense"] + sums["fused_add"],
                     cmsis_nn_like_tvmq_steps_instructions_per_mac=_ipm(sums["conv_dense"] + sums["fused_add"], macs),
                     cmsis_nn_code_bytes=sum(cmsis.sizes.get(f, 0) for f in funcs))  # fmt: skip
        for impl in ("tvmq", "tvmq_tuned"):
            res = runs.get((m.name, impl))
            entry[impl] = None if res is None else _zoo_column(m, impl, res, sums, entry["layers"])
        out[m.name] = entry
    return out


def _zoo_column(m: ZooModel, impl: str, res: Any, sums: dict[str, int], rows: list[dict]) -> dict[str, Any]:
    """tvmq's side of a zoo row: whole inference, conv/dense steps (ADD epilogues included), other ops by op."""
    if not np.array_equal(res.raw_outputs, m.qmodel.run_int(m.x)):
        raise AssertionError(f"{m.name} ({impl}): device outputs differ from run_int; the numbers are void")
    by_step = {s["name"]: s for s in res.steps}
    for row in rows:
        if row["op"] != "add" or not row["fused_into_step"]:
            ins = by_step[row["step"]]["instructions"]
            cmsis_ins = row["cmsis_nn_instructions"] + sum(
                r["cmsis_nn_instructions"] for r in rows if r["fused_into_step"] and r["step"] == row["step"]
            )
            row[f"{impl}_instructions"] = ins
            row[f"ratio_{impl}_over_cmsis_nn"] = _ratio(ins, cmsis_ins)  # a fused step against conv + ADD
    weighted = sum(s["instructions"] or 0 for s in res.steps if s["op"].split("+")[0] in WEIGHTED_OPS)
    other: dict[str, int] = {}
    for s in res.steps:
        if s["op"].split("+")[0] not in WEIGHTED_OPS:
            other[s["op"]] = other.get(s["op"], 0) + (s["instructions"] or 0)
    rest = res.instructions - weighted - other.get("add", 0)  # pools, softmax, reshapes: tvmq's on both sides
    return {
        "instructions": res.instructions, "conv_dense_instructions": weighted,
        "conv_dense_instructions_per_mac": _ipm(weighted, sum(c.layer.macs for c in m.calls)),
        "other_ops_instructions": other,
        "outside_steps_instructions": res.instructions - weighted - sum(other.values()),
        "ratio_conv_dense_over_cmsis_nn": _ratio(weighted, sums["conv_dense"] + sums["fused_add"]),
        "ratio_total_over_cmsis_nn_model": _ratio(res.instructions, sum(sums.values()) + rest),
        "model_code_bytes": res.memory.model_code_bytes, "device_equals_run_int": True,
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write (the PNG goes beside it)")
    p.add_argument("--layers", nargs="+", default=None,
                   help="layers by name or prefix (e.g. res8 dscnn.dw1); default: all of issue 8")  # fmt: skip
    p.add_argument("--bits", nargs="+", type=int, default=[8, 4], choices=[8, 4], help="weight widths")
    p.add_argument(
        "--models",
        nargs="*",
        default=None,
        help="zoo models for whole-model rows (default: all with an int8 TFLite file; none: --models)",
    )
    p.add_argument("--database", type=Path, default=None, help="tuning database: fills the 'tvmq tuned' column")
    p.add_argument("--tune", type=int, default=None, metavar="TRIALS",
                   help="first tune the layers and zoo models into --database with tvmq.tune (TRIALS: measured "
                        "candidates per layer family / model; 0: tvmq.tune's default, 40 per kernel)")  # fmt: skip
    p.add_argument("--samples", type=int, default=2, help="inputs per layer / zoo model (median per step)")
    p.add_argument("--jobs", type=int, default=2, help="QEMU boots and compilers at a time")
    p.add_argument("--board", default=device.DEFAULT_BOARD, help="QEMU board")
    p.add_argument("--opt", default="-O2", choices=device.OPT_LEVELS, help="gcc optimisation level")
    p.add_argument("--third-party", type=Path, default=DEFAULT_THIRD_PARTY, help="CMSIS-NN + CMSIS-Core folder")
    p.add_argument("--keep", type=Path, default=None, help="keep the build directories here (default: a temp dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.specs = select_layers(args.layers, p)
    args.models = default_models() if args.models is None else args.models
    if args.samples < 1:
        p.error("--samples must be at least 1")
    if args.tune is not None and (args.database is None or args.tune < 0):
        p.error("--tune TRIALS needs --database DIR (where the records go) and TRIALS >= 0")
    return args


def select_layers(names: list[str] | None, p: argparse.ArgumentParser) -> list[LayerSpec]:
    if not names:
        return list(LAYERS)
    chosen = [s for s in LAYERS if any(s.name == n or s.name.startswith(n.rstrip(".") + ".") for n in names)]
    unknown = [n for n in names if not any(s.name == n or s.name.startswith(n.rstrip(".") + ".") for s in LAYERS)]
    if unknown:
        p.error(f"unknown layers {unknown}; choose from {', '.join(FAMILIES)} or: {', '.join(s.name for s in LAYERS)}")
    return chosen


def tuned_schedule(database: Path | None, micro: MicroTarget) -> Callable | None:
    """The PrimFunc -> PrimFunc schedule of a tuning database, from ``tvmq.tuning.schedule_from_database``."""
    if database is None:
        return None
    try:
        from tvmq.tuning import schedule_from_database  # type: ignore[import-not-found]
    except ImportError as err:
        raise SystemExit(
            f"--database needs tvmq.tuning.schedule_from_database(database, target) -> "
            f"(PrimFunc -> PrimFunc), the schedule tvmq.build(schedule=...) takes ({err})"
        ) from None
    return schedule_from_database(database, micro)


def tune_all(args: argparse.Namespace, micro: MicroTarget) -> None:
    """Tune what this benchmark measures into ``args.database``: each layer family's kernels (the layers' own
    constants) and each zoo model, one ``tvmq.tune`` call each (a re-run resumes: measured candidates count)."""
    trials = args.tune or None
    families: dict[str, dict[str, Any]] = {}
    for spec in args.specs:
        _, zp = layer_input(spec, 1)
        for b in args.bits:
            func, consts = tvmq_kernel(make_layer(spec, b, zp), b)
            params = [p.name for p in func.params[1:-1]]
            families.setdefault(spec.family, {})[c_identifier(f"{spec.name}_int{b}")] = (
                func,
                dict(zip(params, consts, strict=True)),
            )
    jobs = [(f"layers {family}", kernels) for family, kernels in families.items()]
    jobs += [(f"model {name}", tvmq.load_quantized(tflite_path(name))) for name in args.models]
    for what, model in jobs:
        print(f"tuning {what} into {args.database}", flush=True)
        report = tvmq.tune(model, micro, board=args.board, database=args.database, trials=trials,
                           progress=not args.no_progress, jobs=args.jobs)  # fmt: skip
        print(report.table(), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    board = device.get_board(args.board)
    micro = parse_target({"kind": "c", "mcpu": board.core.name})
    if args.tune is not None:
        tune_all(args, micro)
    schedules = {"tvmq": None, "tvmq_tuned": tuned_schedule(args.database, micro)}
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tvmq-kernels-") as tmp:
        m = measure(args, micro, schedules, Path(args.keep or tmp))
    layer_results = {fw.name.removeprefix("kernels_"): m["results"][fw.name] for fw in m["firmwares"]}
    rows = layer_rows(args.specs, args.bits, m["layers"], layer_results, m["host"], micro, findings)
    models = zoo_rows(m["zoo"], m["results"], m["results"].get("kernels_zoo_cmsis"), findings) if m["zoo"] else {}
    doc = report(args, rows, models, findings, time.monotonic() - started, m["seconds"])
    write_report(doc, args.out, plot, table)
    return 0


def measure(args: argparse.Namespace, micro: MicroTarget, schedules: dict[str, Callable | None],
            work: Path) -> dict[str, Any]:  # fmt: skip
    """Everything on the device: the CMSIS-NN library, one firmware per layer family, the zoo models' tvmq runs and
    one CMSIS-NN firmware for their layers; QEMU boots overlap with the host work. Seconds per phase and per job."""
    seconds: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(phase: str) -> None:
        nonlocal t0
        seconds[phase] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()

    lib = build_cmsis_nn(args.third_party, work, [*micro.core.cflags, args.opt, *COMMON_CFLAGS], args.jobs)
    lap("cmsis_nn_library")
    firmwares, layers = layer_firmwares(args.specs, args.bits, args.samples, schedules["tvmq_tuned"] is not None)
    runs_per_model = 1 + (schedules["tvmq_tuned"] is not None)
    bar = tqdm(total=len(firmwares) + (runs_per_model * len(args.models) + 1 if args.models else 0),
               desc="QEMU runs", unit="run", disable=args.no_progress)  # fmt: skip
    jobs: dict[Any, Future] = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:

        def submit(key: Any, fn: Callable[[], Any]) -> None:
            def timed() -> Any:
                start = time.monotonic()
                try:
                    return fn()
                finally:
                    seconds["qemu " + (key if isinstance(key, str) else "/".join(key))] = \
                        round(time.monotonic() - start, 1)  # fmt: skip
                    bar.update()

            jobs[key] = pool.submit(timed)

        # TVM runs in this thread only (C generation, tvmq.build, host references); the pool compiles and boots
        for fw in firmwares:
            write_firmware(fw, work / fw.name / "artifact", micro, schedules)
            submit(fw.name, lambda fw=fw: run_firmware(fw, work / fw.name, micro, args, lib))
        lap("layer_codegen")
        zoo = [load_zoo(n, args.samples, micro, schedules) for n in args.models]
        for model in zoo:
            for impl, art in model.artifacts.items():
                submit(
                    (model.name, impl),
                    lambda art=art, x=model.x: device.run(art, x, board=args.board, opt=args.opt, progress=False),
                )
        if zoo:
            zfw = zoo_firmware(zoo)
            write_firmware(zfw, work / zfw.name / "artifact", micro, schedules)
            submit(zfw.name, lambda: run_firmware(zfw, work / zfw.name, micro, args, lib))
        lap("zoo_load_build_capture")
        host = host_reference(firmwares)
        lap("host_reference")
        results = {k: f.result() for k, f in jobs.items()}
        lap("waiting_for_qemu")
    bar.close()
    return {"firmwares": firmwares, "layers": layers, "zoo": zoo, "results": results, "host": host,
            "seconds": seconds}  # fmt: skip


def host_reference(firmwares: Sequence[Firmware]) -> dict[str, np.ndarray]:
    """tvmq's host outputs of every (layer, width), keyed ``<layer>/int<b>``."""
    funcs, inputs, shapes = {}, {}, {}
    for fw in firmwares:
        for s in fw.steps:
            key = s.name.rsplit("/", 1)[0]
            if s.impl == "tvmq" and key not in funcs:
                sym = c_identifier(key.replace("/", "_"))
                funcs[sym] = tvmq_kernel(s.layer, s.bits)
                inputs[sym] = fw.inputs[s.slots[0]].reshape(-1, *s.layer.in_shape[1:])
                shapes[sym] = s.layer.out_shape
    outs = host_outputs(funcs, inputs, shapes)
    return {k: outs[c_identifier(k.replace("/", "_"))] for k in {s.name.rsplit("/", 1)[0] for fw in firmwares
                                                                  for s in fw.steps}}  # fmt: skip


def report(args: argparse.Namespace, rows: list[dict[str, Any]], models: dict[str, Any], findings: list[str],
           seconds: float, phases: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    board = device.get_board(args.board)
    return {
        "benchmark": "kernels",
        "what": "QEMU instructions per MAC of each layer of issue 8: tvmq default schedule, tvmq tuned (with "
        "--database), CMSIS-NN (int8 and int4 weights); same weights, inputs, requantization, gcc flags and board",
        "board": board.name, "core": board.core.name, "cflags": [*board.core.cflags, args.opt, *COMMON_CFLAGS],
        "opt": args.opt, "gcc": gcc_version(), "tvmq_version": tvmq.__version__, "git": git_revision(),
        "cmsis_nn_commit": third_party_commit(args.third_party), "database": None if args.database is None
        else str(args.database), "samples": args.samples, "seed": SEED,
        "statistic": "median over samples of the instructions between the marks around each call",
        "window": "tvmq: TVMQ_STEP_BEGIN/END around the kernel call (noinline); CMSIS-NN: the same marks around the "
        "API call, after *_get_buffer_size and the context set-up",
        "code_bytes": "tvmq: the kernel function (it is specialised to its layer); CMSIS-NN: the API function plus "
        "the kernel it dispatches to and everything that kernel branches to (wrapper_code_bytes: all the wrapper "
        "can reach); .text only, from nm sizes and objdump branch targets of the linked ELF",
        "int4": "tvmq: uniform 4-bit weights stored as packed indices into a per-channel table (the codebook path), "
        "decoded per output channel; CMSIS-NN: *_s4 kernels on int4 weights packed two per byte",
        "note": device.NOTE, "runtime_seconds": round(seconds, 1),
        "seconds": phases,
        "findings": findings, "layers": rows, "models": models,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------------ output


def table(doc: dict[str, Any]) -> str:
    """Per layer and weight width: instructions/MAC of each column, the ratio, and the output check."""
    widths = [k for k in ("int8", "int4") if doc["layers"] and k in doc["layers"][0]]
    head = f"{'layer':<15}{'geometry':<26}{'MACs':>10}"
    for w in widths:
        head += f" | {w + ' tvmq':>10}{'tuned':>7}{'CMSIS':>7}{'ratio':>7}{'eq':>4}"
    lines = [f"{doc['board']} ({doc['core']}, {doc['opt']}): instructions per MAC", head, "-" * len(head)]
    for r in doc["layers"]:
        line = f"{r['name']:<15}{r['geometry']:<26}{r['macs']:>10,}"
        for w in widths:
            c = r[w]
            tuned = None if c["tvmq_tuned"] is None else c["tvmq_tuned"]["instructions_per_mac"]
            line += (f" | {_fmt(c['tvmq']['instructions_per_mac'])}{_fmt(tuned, 7)}"
                     f"{_fmt(c['cmsis']['instructions_per_mac'], 7)}{_fmt(c['ratio_tvmq_over_cmsis_nn'], 7)}"
                     f"{'yes' if c['outputs_equal'] else 'NO':>4}")  # fmt: skip
        lines.append(line)
    if doc["models"]:
        lines += ["", f"{'model':<15}{'tvmq total':>12}{'tvmq conv/dense':>17}{'other ops':>11}"
                  f"{'CMSIS-NN conv/dense':>21}{'ratio':>7}{'eq':>4}"]  # fmt: skip
        for name, m in doc["models"].items():
            t = m["tvmq"]
            eq = all(lr["outputs_equal"] for lr in m["layers"])
            lines.append(f"{name:<15}{t['instructions']:>12,}{t['conv_dense_instructions']:>17,}"
                         f"{sum(t['other_ops_instructions'].values()):>11,}"
                         f"{m['cmsis_nn_like_tvmq_steps_instructions']:>21,}"
                         f"{_fmt(t['ratio_conv_dense_over_cmsis_nn'], 7)}{'yes' if eq else 'NO':>4}")  # fmt: skip
    lines += [f"finding: {f}" for f in doc["findings"]]
    lines.append("(" + doc["note"].split(":")[0] + "; ratio = tvmq / CMSIS-NN instructions)")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Grouped bars of instructions/MAC per layer (top) and per zoo model's conv/dense layers (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for w in ("int8", "int4"):
        if doc["layers"] and w in doc["layers"][0]:
            series += [(w, "tvmq", f"tvmq default {w} weights"), (w, "tvmq_tuned", f"tvmq tuned {w}"),
                       (w, "cmsis", f"CMSIS-NN {'s8' if w == 'int8' else 's4'}")]  # fmt: skip
    series = [s for s in series if any(r[s[0]][s[1]] is not None for r in doc["layers"])]
    has_models = bool(doc["models"])
    fig, axes = plt.subplots(2 if has_models else 1, 1, figsize=(max(8.0, 0.75 * len(doc["layers"]) + 3), 9 if
                             has_models else 5), squeeze=False)  # fmt: skip
    ax = axes[0][0]
    pos = np.arange(len(doc["layers"]))
    width = 0.8 / max(1, len(series))
    for i, (w, impl, label) in enumerate(series):
        vals = [(r[w][impl] or {}).get("instructions_per_mac") or 0.0 for r in doc["layers"]]
        ax.bar(pos + (i - (len(series) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(pos, [f"{r['name']}\n{r['geometry']}" for r in doc["layers"]], fontsize=6, rotation=45, ha="right")
    families = [r["name"].split(".")[0] for r in doc["layers"]]
    for k in range(1, len(families)):  # a line between model families
        if families[k] != families[k - 1]:
            ax.axvline(k - 0.5, color="grey", linewidth=0.6, linestyle=":")
    ax.set_ylabel("instructions per MAC")
    ax.set_title(f"issue 8 layers on {doc['board']} ({doc['core']}, gcc {doc['opt']}); QEMU instructions, not cycles",
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=7, ncol=2)
    if has_models:
        ax = axes[1][0]
        names = list(doc["models"])
        pos = np.arange(len(names))
        cols = [("tvmq", "tvmq default"), ("tvmq_tuned", "tvmq tuned")]
        cols = [c for c in cols if any(doc["models"][n][c[0]] for n in names)]
        for i, (impl, label) in enumerate([*cols, ("cmsis", "CMSIS-NN")]):
            vals = [doc["models"][n]["cmsis_nn_like_tvmq_steps_instructions_per_mac"] if impl == "cmsis" else
                    doc["models"][n][impl]["conv_dense_instructions_per_mac"] for n in names]  # fmt: skip
            bars = ax.bar(pos + (i - len(cols) / 2) * 0.8 / (len(cols) + 1), vals, 0.8 / (len(cols) + 1), label=label)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(pos, names, fontsize=8)
        ax.set_ylabel("conv/dense instructions per MAC")
        ax.set_title("zoo models (int8 TFLite files): all conv/depthwise/dense layers (with the residual ADDs tvmq "
                     "fuses into them)", fontsize=9)  # fmt: skip
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
