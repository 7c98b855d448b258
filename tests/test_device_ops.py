"""Every supported op on QEMU (Cortex-M4, mps2-an386): random shapes and attributes, int8 outputs equal to the host.

Each case draws its shapes and attributes from a seeded generator, quantizes the one-op model, builds the C
library and runs 12 random inputs in one QEMU boot. The device's int8 outputs must equal ``run_int`` on the host
bit for bit, and its float path (device quantize -> run -> device dequantize) must equal the host's as well.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_ops import _model, _node, _w

import tvmq
from tvmq.device import run

SEEDS = (0, 1, 2)
N_INPUTS = 12


def _ints(rng, lo: int, hi: int, n: int = 1) -> list[int]:
    return [int(v) for v in rng.integers(lo, hi + 1, size=n)]


def _conv_node(rng, c: int, rank: int, out: str = "c", src: str = "x") -> tuple[list, dict, int]:
    """A random Conv (kernel, stride, dilation, pads or SAME, groups, bias) on ``c`` channels."""
    groups = int(rng.choice([g for g in (1, 2, c) if c % g == 0]))
    o = groups * _ints(rng, 1, 4)[0]
    k = _ints(rng, 1, 3, rank)
    attrs = {"strides": _ints(rng, 1, 2, rank), "dilations": _ints(rng, 1, 2, rank), "group": groups}
    if rng.random() < 0.3:
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER"]))
        attrs["dilations"] = [1] * rank
    else:
        attrs["pads"] = [p for kk in k for p in _ints(rng, 0, kk - 1)] * 2
        attrs["pads"] = attrs["pads"][:rank] + attrs["pads"][rank : 2 * rank]
    inits = {f"w_{out}": _w(int(rng.integers(1 << 30)), o, c // groups, *k)}
    inputs = [src, f"w_{out}"]
    if rng.random() < 0.7:
        inits[f"b_{out}"] = _w(int(rng.integers(1 << 30)), o)
        inputs.append(f"b_{out}")
    nodes = [_node("Conv", inputs, out, **attrs)]
    return nodes, inits, o


def _spatial(rng, rank: int, lo: int = 4, hi: int = 11) -> list[int]:
    return _ints(rng, lo, hi, rank)


def conv(rng, rank: int):
    c = _ints(rng, 1, 6)[0]
    nodes, inits, _ = _conv_node(rng, c, rank)
    act = str(rng.choice(["none", "Relu", "Clip"]))
    if act == "Relu":
        nodes.append(_node("Relu", ["c"], "y"))
    elif act == "Clip":
        nodes.append(_node("Clip", ["c", "lo", "hi"], "y"))
        inits.update(lo=np.float32(0.0), hi=np.float32(rng.uniform(0.5, 6.0)))
    else:
        nodes[-1].output[0] = "y"
    return nodes, [1, c, *_spatial(rng, rank)], inits


def pool(rng, rank: int, op: str):
    """Pools run channels-last after a convolution (as in the models tvmq targets)."""
    c = _ints(rng, 1, 6)[0]
    nodes, inits, _ = _conv_node(rng, c, rank)
    k = _ints(rng, 1, 3, rank)
    attrs = {"kernel_shape": k, "strides": _ints(rng, 1, 2, rank)}
    if op == "GlobalAveragePool":
        attrs = {}
    elif rng.random() < 0.3:
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER"]))
    else:
        attrs["pads"] = [p for kk in k for p in _ints(rng, 0, kk - 1)] + [p for kk in k for p in _ints(rng, 0, kk - 1)]
        attrs["ceil_mode"] = int(rng.random() < 0.5)
    if op == "AveragePool" and "kernel_shape" in attrs:
        attrs["count_include_pad"] = int(rng.random() < 0.5)
    nodes.append(_node(op, ["c"], "y", **attrs))
    return nodes, [1, c, *_spatial(rng, rank, lo=5)], inits


def dense(rng):
    k, o = _ints(rng, 1, 40)[0], _ints(rng, 1, 20)[0]
    inits = {"w": _w(int(rng.integers(1 << 30)), o, k), "b": _w(1, o)}
    nodes = [_node("Gemm", ["x", "w", "b"], "g", transB=1), _node("Relu" if rng.random() < 0.5 else "Identity",
                                                                   ["g"], "y")]  # fmt: skip
    return nodes, [1, k], inits


def add(rng):
    c = _ints(rng, 1, 6)[0]
    nodes, inits, o = _conv_node(rng, c, 2)
    nodes[0].attribute.clear()
    nodes[0].attribute.extend(_node("Conv", [], pads=[1, 1, 1, 1], group=1).attribute)
    inits = {"w_c": _w(int(rng.integers(1 << 30)), c, c, 3, 3)}
    nodes[0].input[:] = ["x", "w_c"]
    nodes.append(_node("Add", ["c", "x"], "a"))
    nodes.append(_node("Relu", ["a"], "y"))
    return nodes, [1, c, *_spatial(rng, 2)], inits


def concat(rng):
    c = _ints(rng, 1, 5)[0]
    nodes, inits, _ = _conv_node(rng, c, 2)
    nodes[0].attribute.clear()
    nodes[0].attribute.extend(_node("Conv", [], pads=[1, 1, 1, 1]).attribute)
    o = _ints(rng, 1, 4)[0]
    inits = {"w_c": _w(int(rng.integers(1 << 30)), o, c, 3, 3)}
    nodes[0].input[:] = ["x", "w_c"]
    nodes.append(_node("Concat", ["c", "x"], "y", axis=1))
    return nodes, [1, c, *_spatial(rng, 2)], inits


def elementwise(rng, op: str):
    shape = [1, *_ints(rng, 1, 24, int(rng.integers(1, 3)))]
    if op == "Softmax":
        return [_node("Softmax", ["x"], "y", axis=-1)], shape, {}
    if op == "Clip":
        return [_node("Clip", ["x", "lo", "hi"], "y")], shape, {"lo": np.float32(-0.5), "hi": np.float32(0.7)}
    return [_node(op, ["x"], "y")], shape, {}


def data_movement(rng, op: str):
    shape = [1, *_ints(rng, 1, 7, 3)]
    if op == "Transpose":
        perm = [0, *(1 + rng.permutation(3))]
        return [_node("Transpose", ["x"], "y", perm=[int(p) for p in perm])], shape, {}
    if op == "Pad":
        pads = [0, *_ints(rng, 0, 2, 3), 0, *_ints(rng, 0, 2, 3)]
        return [_node("Pad", ["x", "p", "v"], "y")], shape, {"p": np.array(pads), "v": np.float32(rng.normal())}
    if op == "Reshape":
        return [_node("Reshape", ["x", "s"], "y")], shape, {"s": np.array([1, -1])}
    return [_node("GlobalAveragePool", ["x"], "y")], shape, {}


GENERATORS = {
    "conv2d": lambda rng: conv(rng, 2),
    "conv1d": lambda rng: conv(rng, 1),
    "max_pool2d": lambda rng: pool(rng, 2, "MaxPool"),
    "avg_pool2d": lambda rng: pool(rng, 2, "AveragePool"),
    "max_pool1d": lambda rng: pool(rng, 1, "MaxPool"),
    "avg_pool1d": lambda rng: pool(rng, 1, "AveragePool"),
    "global_avg_pool": lambda rng: pool(rng, 2, "GlobalAveragePool"),
    "dense": dense,
    "add": add,
    "concat": concat,
    "relu": lambda rng: elementwise(rng, "Relu"),
    "clip": lambda rng: elementwise(rng, "Clip"),
    "sigmoid": lambda rng: elementwise(rng, "Sigmoid"),
    "softmax": lambda rng: elementwise(rng, "Softmax"),
    "transpose": lambda rng: data_movement(rng, "Transpose"),
    "pad": lambda rng: data_movement(rng, "Pad"),
    "reshape": lambda rng: data_movement(rng, "Reshape"),
    "global_avg_pool_nchw": lambda rng: data_movement(rng, "GlobalAveragePool"),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op", sorted(GENERATORS))
def test_op_on_qemu_equals_host(op: str, seed: int, tmp_path) -> None:
    rng = np.random.default_rng([seed, sorted(GENERATORS).index(op)])
    nodes, shape, inits = GENERATORS[op](rng)
    model = _model(nodes, [("x", shape)], [("y", None)], inits)
    calib = rng.normal(size=(32, *shape[1:])).astype(np.float32)
    x = (rng.normal(size=(N_INPUTS, *shape[1:])) * 1.2).astype(np.float32)  # some values beyond the calibration
    qmodel = tvmq.quantize(model, calib, progress=False)
    artifact = tvmq.build(qmodel, target="c -mcpu=cortex-m4", name=f"op_{op}")
    host_codes = qmodel.run_int(qmodel.quantize_input(x))
    result = run(artifact, x, board="mps2-an386", progress=False)
    assert result.raw_outputs.shape == host_codes.shape
    np.testing.assert_array_equal(result.raw_outputs, host_codes, err_msg=f"{op} seed {seed}: {shape}")
    np.testing.assert_array_equal(result.outputs, qmodel.dequantize_output(host_codes))
    assert result.instructions > 0
