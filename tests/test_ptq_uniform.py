"""Uniform sub-8-bit activations (issue 7, item 1): symmetric activations, and uniform activations of at most 4 bits
stored packed in the arena (``QuantConfig.pack_activations``), bit-exact on QEMU."""

from __future__ import annotations

import numpy as np
import pytest
from test_ptq import _data, _relu_model

import tvmq
from tvmq.errors import ConfigError


def test_symmetric_activations_have_zero_points_zero() -> None:
    x = _data("relu", 64, 0)
    q = tvmq.quantize(_relu_model(), x, tvmq.QuantConfig(weight_bits=4, act_bits=4, act_symmetric=True),
                      progress=False)  # fmt: skip
    assert q.plan.input.zero_point == 0 and all(lp.output.zero_point == 0 for lp in q.plan.layers)
    assert q.int_vs_simulated(x)["max_lsb"] <= 1
    one = tvmq.QuantConfig(act_bits=4, overrides={"conv2d_0": {"act_symmetric": True}})
    q = tvmq.quantize(_relu_model(), x, one, progress=False)
    assert [lp.output.zero_point == 0 for lp in q.plan.layers if lp.weight is not None] == [True, False, False, False]
    with pytest.raises(ConfigError, match="act_symmetric must be True or False"):
        tvmq.QuantConfig(act_symmetric=1)


@pytest.mark.parametrize("bits", [4, 2])
def test_packed_uniform_activations_keep_the_uniform_grid(bits: int) -> None:
    """Packed codes stand for exactly the b-bit uniform levels; the arena shrinks with the bits. (The models are not
    identical: a layer reading packed codes has its input on the int8 grid, 2^(8-b) times finer, so its int32 bias
    rounds on a finer grid too.)"""
    x = _data("relu", 64, 0)
    config = tvmq.QuantConfig(weight_bits=4, act_bits=bits)
    plain = tvmq.quantize(_relu_model(), x, config, progress=False)
    packed = tvmq.quantize(_relu_model(), x, config.replace(pack_activations=True), progress=False)
    checked = 0
    for a, b, layer in zip(plain.plan.layers[:-1], packed.plan.layers[:-1], packed.layers[:-1], strict=True):
        if a.weight is None or layer.out_shape[-1] % (8 // (4 if bits > 2 else 2)):
            continue  # channels that do not fill whole bytes stay int8
        cb = b.out_codebook
        assert cb is not None and cb.packed and cb.bits == bits
        checked += 1
        levels = b.output.dequantize(cb.levels)
        grid = a.output.dequantize(np.arange(a.output.qmin, a.output.qmax + 1))
        np.testing.assert_allclose(levels, grid[(grid >= levels.min() - 1e-9) & (grid <= levels.max() + 1e-9)],
                                   rtol=1e-6, atol=1e-7)  # fmt: skip
    assert checked >= 2
    assert tvmq.build(packed).arena_bytes < tvmq.build(plain).arena_bytes
    assert packed.int_vs_simulated(x)["max_lsb"] <= 1


def test_packed_uniform_activations_run_bit_exact_on_qemu(digits) -> None:
    config = tvmq.QuantConfig(weight_bits=4, act_bits=3, pack_activations=True)
    q = tvmq.quantize(digits.model_path, digits.calibration, config, progress=False)
    artifact = tvmq.build(q, name="digits_packed")
    assert artifact.arena_bytes == 1536  # int8 activations: 3,072
    x = digits.x_test[:24]
    result = tvmq.qemu.run(artifact, x, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, q.run_int(q.quantize_input(x)))
    accuracy = np.mean(np.argmax(q.predict(digits.x_test), 1) == digits.y_test)
    assert accuracy >= digits.float_accuracy - 0.02


def test_input_bits_quantizes_the_model_input_apart_from_the_activations() -> None:
    """W3A3 with an 8-bit input (the PTQ literature's convention): the input has 256 levels, the rest 8; the
    simulation and the integer model agree, and the finer input loses less."""
    x = _data("relu", 64, 0)
    a3 = tvmq.quantize(_relu_model(), x, tvmq.QuantConfig(weight_bits=3, act_bits=3), progress=False)
    in8 = tvmq.quantize(_relu_model(), x, tvmq.QuantConfig(weight_bits=3, act_bits=3, input_bits=8), progress=False)
    assert (a3.plan.input.qmin, a3.plan.input.qmax) == (-4, 3)
    assert (in8.plan.input.qmin, in8.plan.input.qmax) == (-128, 127)
    assert all(lp.output.qmax == 3 for lp in in8.plan.layers if lp.weight is not None)
    assert in8.int_vs_simulated(x)["max_lsb"] <= 1
    err = {k: float(np.mean((q.predict(x) - q.run_float(x)) ** 2)) for k, q in (("a3", a3), ("in8", in8))}
    assert err["in8"] < err["a3"]
    with pytest.raises(ConfigError, match="input_bits must be None"):
        tvmq.QuantConfig(input_bits=9)
