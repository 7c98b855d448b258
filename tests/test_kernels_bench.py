"""CMSIS-NN computes tvmq's bytes: a conv and a depthwise layer through Arm's kernels on QEMU vs ``run_int``.

Why: bench/kernels.py compares tvmq's instruction counts with CMSIS-NN's, which is only meaningful while both compute
the same thing. This pins tvmq's int8 arithmetic (TFLM's) to CMSIS-NN's: two single-op int8 TFLite files loaded with
``tvmq.load_quantized``, their layers run by ``arm_convolve_wrapper_s8`` / ``arm_depthwise_conv_wrapper_s8`` in the
benchmark's firmware, outputs equal to the host's ``run_int`` byte for byte. Needs the Cortex-M toolchain and QEMU
(``make toolchain``) and the unmodified CMSIS-NN in ../shared/third_party (skipped without it); about 20 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

import tvmq
import tvmq.device as device
from tvmq.target import parse_target

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import kernels  # noqa: E402  (bench scripts, imported from their folder)
from ref_layers import ref_layers  # noqa: E402

DATA = Path(__file__).parent / "data" / "tflite_int8"
MODELS = {"conv2d_same_relu": "arm_convolve_s8", "dwconv_dm1_same_relu": "arm_depthwise_conv_3x3_s8"}
N = 4

pytestmark = pytest.mark.skipif(not (kernels.DEFAULT_THIRD_PARTY / "CMSIS-NN" / "Include").is_dir(),
                                reason=f"CMSIS-NN is not in {kernels.DEFAULT_THIRD_PARTY}")  # fmt: skip


def test_cmsis_nn_equals_run_int(tmp_path: Path) -> None:
    board = device.get_board(device.DEFAULT_BOARD)
    micro = parse_target({"kind": "c", "mcpu": board.core.name})
    fw = kernels.Firmware("kernels_test", [], [])
    expected = {}
    for i, (name, kernel) in enumerate(MODELS.items()):
        q = tvmq.load_quantized(DATA / f"{name}.tflite")
        (layer,) = ref_layers(q)
        assert kernels.cmsis_call(layer, 8, "s").kernel == kernel  # the wrapper's path this test exercises
        x = np.random.default_rng(i).integers(-128, 128, size=(N, *q.input_shape[1:])).astype(np.int8)
        assert layer.in_shape == q.input_shape  # a single op: the layer's input is the model's
        fw.inputs.append(x)
        fw.steps.append(kernels.Step(f"{name}/int8/cmsis", "cmsis", layer, 8, (i,)))
        expected[f"{name}/int8/cmsis"] = q.run_int(x)
    args = argparse.Namespace(opt="-O2", board=board.name, third_party=kernels.DEFAULT_THIRD_PARTY)
    lib = kernels.build_cmsis_nn(args.third_party, tmp_path, [*board.core.cflags, args.opt,
                                                              *device.build.COMMON_CFLAGS], jobs=2)  # fmt: skip
    kernels.write_firmware(fw, tmp_path / "fw" / "artifact", micro, {})
    result = kernels.run_firmware(fw, tmp_path / "fw", micro, args, lib)
    for step, want in expected.items():
        status, _ = result.info[step]
        assert status == 0, f"{step}: CMSIS-NN status {status}"
        got = result.outputs[step]
        assert got.shape == want.shape
        assert np.array_equal(got, want), f"{step}: {np.count_nonzero(got != want)} codes differ from run_int"
        assert result.instructions[step] > 0
