"""Integer kernels (tvmq.schedules) against independent numpy oracles of TFLite Micro's reference arithmetic.

The oracles below are written from the reference-kernel formulas (gemmlowp's remainder/threshold form of
RoundingDivideByPOT, C truncating division, ...) and deliberately do not reuse tvmq code, so a shared
mistake cannot hide. Every kernel is compiled for the host with LLVM and run on random shapes/params.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import tvm
import tvmq.schedules as S

from tvmq.quant import fixed_point as FP

HAVE_CC = shutil.which("gcc") is not None or shutil.which("cc") is not None

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------------------------- oracles
def c_div(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """C/C++ integer division (truncation towards zero) on int64 arrays."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def ref_srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    res = c_div(ab + nudge, 1 << 31)
    return np.where(overflow, INT32_MAX, res).astype(np.int64)


def ref_rdbpot(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(e, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def wrap32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.int64).astype(np.int32).astype(np.int64)


def ref_mbqm(x: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return ref_rdbpot(ref_srdhm(wrap32(np.asarray(x, dtype=np.int64) << left), mult), right)


def ref_pow2(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    shift = np.asarray(shift, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    return np.where(shift >= 0, wrap32(x << np.maximum(shift, 0)), ref_rdbpot(x, np.maximum(-shift, 0)))


def ref_requant(x, mult, shift):
    return ref_pow2(x, shift) if mult is None else ref_mbqm(x, mult, shift)


def ref_round(x: np.ndarray) -> np.ndarray:
    """std::round: half away from zero."""
    return np.where(x >= 0, np.floor(x + 0.5), -np.floor(-x + 0.5))


def ref_conv(x, w, bias, mult, shift, strides, padding, dilation, groups, izp, ozp, amin, amax):
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    sh, sw = strides
    dh, dw = dilation
    pt, pl, pb, pr = padding
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x.astype(np.int64) - izp, ((0, 0), (pt, pb), (pl, pr), (0, 0)))  # zp padding -> 0
    acc = np.zeros((n, oh, ow, o), dtype=np.int64)
    opg = o // groups
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky * dh : ky * dh + sh * (oh - 1) + 1 : sh, kx * dw : kx * dw + sw * (ow - 1) + 1 : sw]
            for g in range(groups):
                acc[..., g * opg : (g + 1) * opg] += np.einsum(
                    "nhwc,oc->nhwo",
                    patch[..., g * cg : (g + 1) * cg],
                    w[g * opg : (g + 1) * opg, ky, kx, :].astype(np.int64),
                )
    if bias is not None:
        acc += bias.astype(np.int64)
    assert np.all(np.abs(acc) < 2**31)
    return np.clip(ref_requant(acc, mult, shift) + ozp, amin, amax).astype(np.int8)


def ref_pool_windows(x, pool, strides, padding):
    """Yield (i, j, window values (N,rows,cols,C), full window size) for each output position."""
    n, h, w, c = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    oh = (h + pt + pb - kh) // sh + 1
    ow = (w + pl + pr - kw) // sw + 1
    for i in range(oh):
        for j in range(ow):
            y0, x0 = i * sh - pt, j * sw - pl
            win = x[:, max(y0, 0) : min(y0 + kh, h), max(x0, 0) : min(x0 + kw, w), :]
            yield i, j, win, (oh, ow)


def ref_avg_pool(x, pool, strides, padding, include_pad, amin, amax):
    out = None
    for i, j, win, (oh, ow) in ref_pool_windows(x, pool, strides, padding):
        if out is None:
            out = np.zeros((x.shape[0], oh, ow, x.shape[3]), dtype=np.int8)
        acc = win.astype(np.int64).sum(axis=(1, 2))
        cnt = pool[0] * pool[1] if include_pad else win.shape[1] * win.shape[2]
        avg = np.where(acc > 0, c_div(acc + cnt // 2, cnt), c_div(acc - cnt // 2, cnt))
        out[:, i, j, :] = np.clip(avg, amin, amax)
    return out


def ref_max_pool(x, pool, strides, padding, amin, amax):
    out = None
    for i, j, win, (oh, ow) in ref_pool_windows(x, pool, strides, padding):
        if out is None:
            out = np.zeros((x.shape[0], oh, ow, x.shape[3]), dtype=np.int8)
        out[:, i, j, :] = np.clip(win.max(axis=(1, 2)), amin, amax)
    return out


# ----------------------------------------------------------------------------------------------- runner
_C_BUILD_DIR: list[str] = []


def _build_c(mod: tvm.IRModule):
    """The C backend (TVM's Cortex-M path) compiled with the host gcc into a loadable library."""
    import os
    import tempfile

    if not _C_BUILD_DIR:
        _C_BUILD_DIR.append(tempfile.mkdtemp(prefix="tvmq_test_c_"))
    path = os.path.join(_C_BUILD_DIR[0], f"m{len(os.listdir(_C_BUILD_DIR[0]))}.so")
    tvm.compile(mod, target="c").export_library(path)
    return tvm.runtime.load_module(path)


def run(func: tvm.tirx.PrimFunc, inputs: list[np.ndarray], out_shape, out_dtype: str = "int8") -> np.ndarray:
    """Compile a builder's PrimFunc for the host with LLVM and, when gcc exists, with TVM's C backend;
    run both on numpy inputs and require identical bytes (host/device agreement)."""
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    results = []
    backends = [tvm.compile(mod, target="llvm")]
    if HAVE_CC:
        backends.append(_build_c(mod))
    for ex in backends:
        args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs]
        out = tvm.runtime.tensor(np.zeros(out_shape, dtype=out_dtype))
        ex["main"](*args, out)
        results.append(out.numpy())
    for other in results[1:]:
        assert other.tobytes() == results[0].tobytes(), "C backend and LLVM disagree"
    return results[0]


def i8(rng, shape) -> np.ndarray:
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def rand_mult_shift(rng, n, lo=-4.0, hi=0.7):
    """Per-channel multipliers/shifts from random real scales (some > 1, i.e. positive shifts)."""
    return FP.quantize_multiplier(10.0 ** rng.uniform(lo, hi, size=n))


def rand_act(rng):
    lo = int(rng.integers(-128, 0))
    return lo, int(rng.integers(lo, 128))


# --------------------------------------------------------------------------------- fixed-point helpers
def test_quantize_multiplier_known_values():
    assert FP.quantize_multiplier(0.5) == (2**30, 0)
    assert FP.quantize_multiplier(1.0) == (2**30, 1)
    assert FP.quantize_multiplier(0.75) == (1610612736, 0)
    assert FP.quantize_multiplier(0.0) == (0, 0)
    assert FP.quantize_multiplier(2.0**-40) == (0, 0)  # shift < -31 flushes to zero
    assert FP.quantize_multiplier(1.0 - 2.0**-40) == (2**30, 1)  # q rounds up to 2^31
    assert FP.quantize_multiplier(3.0) == (1610612736, 2)
    m, s = FP.quantize_multiplier(-0.75)
    assert (m, s) == (-1610612736, 0)


def test_quantize_multiplier_vectorised_matches_frexp_oracle():
    rng = np.random.default_rng(1)
    real = 10.0 ** rng.uniform(-12, 3, size=500)
    m, s = FP.quantize_multiplier(real)
    assert m.dtype == np.int32 and s.dtype == np.int32 and m.shape == real.shape
    frac, exp = np.frexp(real)
    q = ref_round(frac * 2.0**31).astype(np.int64)
    exp = exp.astype(np.int64)
    up = q == 2**31
    q = np.where(up, q // 2, q)
    exp = np.where(up, exp + 1, exp)
    tiny = exp < -31
    q = np.where(tiny, 0, q)
    exp = np.where(tiny, 0, exp)
    np.testing.assert_array_equal(m, q)
    np.testing.assert_array_equal(s, exp)
    # Per-channel 2-D input keeps its shape; the approximation is tight.
    m2, s2 = FP.quantize_multiplier(real[:6].reshape(2, 3))
    assert m2.shape == (2, 3)
    approx = m.astype(np.float64) * 2.0 ** (s.astype(np.float64) - 31)
    ok = ~tiny
    assert np.all(np.abs(approx[ok] - real[ok]) <= real[ok] * 2.0**-30)


def test_tflite_add_params():
    p = FP.tflite_add_params(0.1, 0.1, 0.1)
    assert p == {
        "left_shift": 20,
        "a_mult": 2**30,
        "a_shift": 0,
        "b_mult": 2**30,
        "b_shift": 0,
        "out_mult": 2**30,
        "out_shift": -18,
    }
    p = FP.tflite_add_params(0.05, 0.2, 0.3)
    twice = 2 * float(np.float32(0.2))
    m, s = FP.quantize_multiplier(float(np.float32(0.05)) / twice)
    assert (p["a_mult"], p["a_shift"]) == (m, s) and s <= 0
    m, s = FP.quantize_multiplier(twice / (2**20 * float(np.float32(0.3))))
    assert (p["out_mult"], p["out_shift"]) == (m, s)
    with pytest.raises(ValueError, match="s_out"):
        FP.tflite_add_params(0.1, 0.1, 0.0)


def test_pow2_shift():
    assert FP.pow2_shift(0.25) == -2
    assert FP.pow2_shift(8.0) == 3
    np.testing.assert_array_equal(FP.pow2_shift(np.array([1.0, 0.5, 2.0**-20])), [0, -1, -20])
    with pytest.raises(ValueError, match="0.3"):
        FP.pow2_shift(0.3)
    with pytest.raises(ValueError):
        FP.pow2_shift(np.array([0.5, 0.75]))


def test_luts():
    lut = FP.softmax_exp_lut(0.1)
    assert lut.dtype == np.int32 and lut.shape == (256,)
    assert lut[0] == 65536
    np.testing.assert_array_equal(lut, ref_round(np.exp(-np.arange(256) * 0.1) * 65536).astype(np.int32))
    assert np.all(np.diff(lut) <= 0) and lut.min() >= 0

    def sig(v):
        return 1.0 / (1.0 + np.exp(-v))

    t = FP.lut_int8(sig, 0.05, 3, 1 / 256, -128)
    assert t.dtype == np.int8 and t.shape == (256,)
    q = np.arange(-128, 128)
    exp = np.clip(ref_round(sig((q - 3) * 0.05) * 256) - 128, -128, 127)
    np.testing.assert_array_equal(t, exp)
    t = FP.lut_int8(np.tanh, 0.1, 0, 1 / 128, 0, qmin=-127)
    assert t.min() >= -127


# --------------------------------------------------------------------------------- TIR fixed point
def _fp_inputs(rng, n):
    x = rng.integers(INT32_MIN, INT32_MAX, size=n, dtype=np.int64)
    x[:8] = [INT32_MIN, INT32_MAX, 0, -1, 1, INT32_MIN + 1, -(2**30), 2**30]
    m = rng.integers(INT32_MIN, INT32_MAX, size=n, dtype=np.int64)
    m[:4] = [INT32_MIN, INT32_MAX, INT32_MIN, 2**30]
    return x.astype(np.int32), m.astype(np.int32)


def test_fixed_point_tir_matches_reference():
    """SRDHM / RDBPOT / MBQM / pow2 on extreme and random int32 with tensor (runtime) parameters."""
    from tvm import te
    from tvmq.schedules import fixed_point as F

    n = 4096
    rng = np.random.default_rng(2)
    x, m = _fp_inputs(rng, n)
    sh = rng.integers(-31, 31, size=n).astype(np.int32)
    sh[:64] = np.arange(-31, 33)[:64].clip(-31, 30)
    e = rng.integers(0, 32, size=n).astype(np.int32)
    e[:32] = np.arange(32)
    # Ties for RDBPOT: x = k * 2^e +- 2^(e-1)
    ties = (rng.integers(-1000, 1000, size=n) * 2 + 1).astype(np.int64) << np.maximum(e - 1, 0)
    x_tie = np.where(np.abs(ties) < 2**31, ties, x).astype(np.int32)

    X = te.placeholder((n,), "int32", name="x")
    M = te.placeholder((n,), "int32", name="m")
    SH = te.placeholder((n,), "int32", name="s")
    outs = [
        te.compute((n,), lambda i: F.saturating_rounding_doubling_high_mul(X[i], M[i]), name="srdhm"),
        te.compute((n,), lambda i: F.rounding_divide_by_pot(X[i], SH[i]), name="rdbpot"),
        te.compute((n,), lambda i: F.multiply_by_quantized_multiplier(X[i], M[i], SH[i]), name="mbqm"),
        te.compute((n,), lambda i: F.pow2_requantize(X[i], SH[i]), name="pow2"),
    ]
    mod = tvm.IRModule({"main": te.create_prim_func([X, M, SH, *outs])})
    exes = [tvm.compile(mod, target="llvm")] + ([_build_c(mod)] if HAVE_CC else [])

    def go(xv, mv, sv):
        per_backend = []
        for ex in exes:
            res = [tvm.runtime.tensor(np.zeros(n, np.int32)) for _ in outs]
            ex["main"](*(tvm.runtime.tensor(a) for a in (xv, mv, sv)), *res)
            per_backend.append([r.numpy().astype(np.int64) for r in res])
        for other in per_backend[1:]:
            for k, (r0, r1) in enumerate(zip(per_backend[0], other, strict=True)):
                if k == 1 and (sv < 0).any():
                    continue  # RDBPOT of a negative exponent (outside 0..31) is undefined: shifts by < 0
                np.testing.assert_array_equal(r1, r0, err_msg="C backend and LLVM disagree")
        return per_backend[0]

    srdhm, _, mbqm, pow2 = go(x, m, sh)
    np.testing.assert_array_equal(srdhm, ref_srdhm(x, m))
    np.testing.assert_array_equal(mbqm, ref_mbqm(x, m, sh))
    np.testing.assert_array_equal(pow2, ref_pow2(x, sh))
    for xv in (x, x_tie):
        _, rd, _, _ = go(xv, m, e)
        np.testing.assert_array_equal(rd, ref_rdbpot(xv, e))


@pytest.mark.parametrize("shift", [-31, -20, -7, -1, 0, 1, 3, 12])
def test_fixed_point_tir_immediates(shift):
    """The same helpers with multiplier/shift baked in as immediates (the common case)."""
    from tvm import te
    from tvmq.schedules import fixed_point as F

    n = 2048
    rng = np.random.default_rng(100 + shift)
    x, m = _fp_inputs(rng, n)
    mult = int(m[rng.integers(0, n)]) if shift % 2 else 2**30 + 12345
    X = te.placeholder((n,), "int32", name="x")
    outs = [
        te.compute((n,), lambda i: F.multiply_by_quantized_multiplier(X[i], mult, shift), name="mbqm"),
        te.compute((n,), lambda i: F.pow2_requantize(X[i], shift), name="pow2"),
        te.compute((n,), lambda i: F.saturating_rounding_doubling_high_mul(X[i], INT32_MIN), name="sat"),
    ]
    mod = tvm.IRModule({"main": te.create_prim_func([X, *outs])})
    for ex in [tvm.compile(mod, target="llvm")] + ([_build_c(mod)] if HAVE_CC else []):
        res = [tvm.runtime.tensor(np.zeros(n, np.int32)) for _ in outs]
        ex["main"](tvm.runtime.tensor(x), *res)
        np.testing.assert_array_equal(res[0].numpy(), ref_mbqm(x, mult, shift))
        np.testing.assert_array_equal(res[1].numpy(), ref_pow2(x, shift))
        np.testing.assert_array_equal(res[2].numpy(), ref_srdhm(x, INT32_MIN))


# ------------------------------------------------------------------------------------------- conv/dense
CONV_CASES = [
    # data_shape, (O, KH, KW), strides, padding, dilation, groups
    ((1, 8, 8, 3), (4, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 7, 9, 4), (6, 3, 2), (2, 1), (0, 1, 2, 0), (1, 1), 1),
    ((1, 9, 9, 8), (8, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 8),  # depthwise
    ((1, 6, 6, 4), (8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),  # depthwise, multiplier 2
    ((1, 10, 10, 6), (9, 3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 3),  # grouped + dilation
    ((1, 5, 5, 16), (10, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # pointwise
    ((1, 12, 3, 5), (7, 5, 1), (3, 1), (2, 0, 2, 0), (1, 1), 1),  # 1-D-like
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_qconv2d(case):
    dshape, (o, kh, kw), strides, padding, dilation, groups = CONV_CASES[case]
    rng = np.random.default_rng(10 + case)
    c = dshape[3]
    wshape = (o, kh, kw, c // groups)
    has_bias = case % 3 != 2
    pow2 = case == 4
    izp, ozp = int(rng.integers(-128, 128)), int(rng.integers(-20, 20))
    amin, amax = rand_act(rng) if case % 2 else (-128, 127)
    x, w = i8(rng, dshape), i8(rng, wshape)
    bias = rng.integers(-20000, 20000, size=o).astype(np.int32) if has_bias else None
    if pow2:
        mult, shift = None, rng.integers(-14, 2, size=o).astype(np.int32)
    else:
        mult, shift = rand_mult_shift(rng, o, -4.5, 0.3)
    f = S.qconv2d_primfunc(
        dshape,
        wshape,
        has_bias=has_bias,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        input_zp=izp,
        output_zp=ozp,
        act_min=amin,
        act_max=amax,
        pow2=pow2,
    )
    assert "global_symbol" not in (f.attrs or {})
    params = [p.name for p in f.params]
    assert len(params) == 2 + has_bias + (not pow2) + 2
    expected = ref_conv(x, w, bias, mult, shift, strides, padding, dilation, groups, izp, ozp, amin, amax)
    inputs = [x, w] + ([bias] if has_bias else []) + ([mult] if mult is not None else []) + [shift]
    got = run(f, inputs, expected.shape)
    np.testing.assert_array_equal(got, expected)
    # Not everything saturates: the test exercises the rounding, not just the clamp.
    assert len(np.unique(got)) > 10


@pytest.mark.parametrize("seed", range(4))
def test_qdense(seed):
    rng = np.random.default_rng(100 + seed)
    n, k, o = int(rng.integers(1, 4)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
    has_bias = seed != 1
    pow2 = seed == 3
    izp, ozp = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    amin, amax = rand_act(rng)
    x, w = i8(rng, (n, k)), i8(rng, (o, k))
    bias = rng.integers(-50000, 50000, size=o).astype(np.int32) if has_bias else None
    if pow2:
        mult, shift = None, rng.integers(-16, 1, size=o).astype(np.int32)
    else:
        mult, shift = rand_mult_shift(rng, o, -5, -1)
    f = S.qdense_primfunc(
        (n, k),
        (o, k),
        has_bias=has_bias,
        input_zp=izp,
        output_zp=ozp,
        act_min=amin,
        act_max=amax,
        pow2=pow2,
    )
    acc = (x.astype(np.int64) - izp) @ w.astype(np.int64).T + (0 if bias is None else bias)
    expected = np.clip(ref_requant(acc, mult, shift) + ozp, amin, amax).astype(np.int8)
    inputs = [x, w] + ([bias] if has_bias else []) + ([mult] if mult is not None else []) + [shift]
    np.testing.assert_array_equal(run(f, inputs, (n, o)), expected)


def test_qdense_te_with_immediate_params():
    """Per-tensor mult/shift as Python ints (baked into the code) give the same result."""
    from tvm import te

    rng = np.random.default_rng(7)
    x, w = i8(rng, (3, 50)), i8(rng, (5, 50))
    mult, shift = FP.quantize_multiplier(0.0023)
    X = te.placeholder((3, 50), "int8", name="x")
    W = te.placeholder((5, 50), "int8", name="w")
    out = S.qdense(X, W, None, int(mult), int(shift), input_zp=-5, output_zp=7)
    f = te.create_prim_func([X, W, out]).without_attr("global_symbol")
    acc = (x.astype(np.int64) + 5) @ w.astype(np.int64).T
    expected = np.clip(ref_mbqm(acc, mult, shift) + 7, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(run(f, [x, w], (3, 5)), expected)


# ------------------------------------------------------------------------------------------ elementwise
@pytest.mark.parametrize(
    "shapes", [((2, 5, 7), (2, 5, 7)), ((3, 4, 6), (6,)), ((2, 1, 5), (1, 4, 1)), ((1, 33), (1, 33))]
)
def test_qadd(shapes):
    a_shape, b_shape = shapes
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    s1, s2, so = 10.0 ** rng.uniform(-3, -1, size=3)
    z1, z2, zo = (int(v) for v in rng.integers(-128, 128, size=3))
    amin, amax = rand_act(rng) if a_shape == b_shape else (-128, 127)
    p = FP.tflite_add_params(s1, s2, so)
    a, b = i8(rng, a_shape), i8(rng, b_shape)
    f = S.qadd_primfunc(a_shape, b_shape, a_zp=z1, b_zp=z2, out_zp=zo, act_min=amin, act_max=amax, **p)
    ls = p["left_shift"]
    sa = ref_mbqm((a.astype(np.int64) - z1) * (1 << ls), p["a_mult"], p["a_shift"])
    sb = ref_mbqm((b.astype(np.int64) - z2) * (1 << ls), p["b_mult"], p["b_shift"])
    raw = ref_mbqm(sa + sb, p["out_mult"], p["out_shift"]) + zo
    expected = np.clip(raw, amin, amax).astype(np.int8)
    got = run(f, [a, b], expected.shape)
    np.testing.assert_array_equal(got, expected)
    # Sanity against float arithmetic: within one step.
    real = s1 * (a.astype(np.float64) - z1) + s2 * (b.astype(np.float64) - z2)
    approx = np.clip(np.round(real / so) + zo, amin, amax)
    assert np.max(np.abs(approx - got)) <= 1


@pytest.mark.parametrize("pow2", [False, True])
def test_qrequantize(pow2):
    rng = np.random.default_rng(20 + pow2)
    x = i8(rng, (3, 17, 5))
    in_zp, out_zp = 11, -9
    amin, amax = -100, 120
    if pow2:
        mult, shift = None, -2
    else:
        mult, shift = (int(v) for v in FP.quantize_multiplier(1.37))
    f = S.qrequantize_primfunc(x.shape, in_zp=in_zp, mult=mult, shift=shift, out_zp=out_zp, act_min=amin, act_max=amax)
    expected = np.clip(ref_requant(x.astype(np.int64) - in_zp, mult, shift) + out_zp, amin, amax)
    np.testing.assert_array_equal(run(f, [x], x.shape), expected.astype(np.int8))


def test_qclamp_and_qlut():
    rng = np.random.default_rng(30)
    x = i8(rng, (4, 9, 3))
    x.flat[:2] = [-128, 127]
    f = S.qclamp_primfunc(x.shape, lo=-17, hi=64)
    np.testing.assert_array_equal(run(f, [x], x.shape), np.clip(x, -17, 64))
    table = FP.lut_int8(np.tanh, 0.03, -4, 1 / 128, 0)
    f = S.qlut_primfunc(x.shape)
    np.testing.assert_array_equal(run(f, [x, table], x.shape), table[x.astype(np.int64) + 128])


def test_quantize_dequantize():
    rng = np.random.default_rng(40)
    scale, zp = float(np.float32(0.0392157)), -7
    n = 5000
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    # Exact ties and near-ties of x / scale, huge values, signed zeros, +-inf.
    k = rng.integers(-200, 200, size=500)
    x[:500] = ((k + 0.5) * np.float64(scale)).astype(np.float32)
    x[500:1000] = np.nextafter(x[:500], np.float32(np.inf))
    x[1000:1007] = [0.0, -0.0, 1e30, -1e30, np.inf, -np.inf, np.nan]
    f = S.quantize_primfunc((n,), scale=scale, zero_point=zp)
    got = run(f, [x], (n,))
    q = x / np.float32(scale)  # float32 division, as TFLM
    assert q.dtype == np.float32
    with np.errstate(invalid="ignore"):
        expected = np.clip(ref_round(q.astype(np.float64)) + zp, -128, 127)
    expected[1006] = zp  # NaN (undefined in TFLM) maps to the zero point
    expected = expected.astype(np.int8)
    np.testing.assert_array_equal(got, expected)

    xi = np.arange(-128, 128, dtype=np.int8)
    f = S.dequantize_primfunc((256,), scale=scale, zero_point=zp)
    got = run(f, [xi], (256,), "float32")
    expected = (np.float64(scale) * (xi.astype(np.int64) - zp)).astype(np.float32)  # TFLM: double, then float
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------------- pooling
POOL_CASES = [
    # shape, pool, strides, padding
    ((1, 8, 8, 3), (2, 2), (2, 2), (0, 0, 0, 0)),
    ((2, 7, 9, 4), (3, 3), (2, 2), (1, 1, 1, 1)),
    ((1, 6, 5, 2), (3, 2), (1, 2), (0, 1, 2, 0)),
    ((1, 5, 5, 8), (5, 5), (1, 1), (2, 2, 2, 2)),
]


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_qmax_pool2d(case):
    shape, pool, strides, padding = POOL_CASES[case]
    rng = np.random.default_rng(50 + case)
    x = i8(rng, shape)
    amin, amax = rand_act(rng) if case % 2 else (-128, 127)
    f = S.qmax_pool2d_primfunc(shape, pool=pool, strides=strides, padding=padding, act_min=amin, act_max=amax)
    expected = ref_max_pool(x, pool, strides, padding, amin, amax)
    np.testing.assert_array_equal(run(f, [x], expected.shape), expected)


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
@pytest.mark.parametrize("include_pad", [False, True])
def test_qavg_pool2d(case, include_pad):
    shape, pool, strides, padding = POOL_CASES[case]
    rng = np.random.default_rng(60 + case)
    x = i8(rng, shape)
    amin, amax = rand_act(rng) if case % 2 else (-128, 127)
    f = S.qavg_pool2d_primfunc(
        shape,
        pool=pool,
        strides=strides,
        padding=padding,
        count_include_pad=include_pad,
        act_min=amin,
        act_max=amax,
    )
    expected = ref_avg_pool(x, pool, strides, padding, include_pad, amin, amax)
    np.testing.assert_array_equal(run(f, [x], expected.shape), expected)


def ref_out_size(size, k, stride, lo, hi, ceil_mode):
    """PyTorch's (and TVM's) pooling output size: ceil mode adds a window only if it starts before the end padding."""
    span = size + lo + hi - k
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    return out - 1 if ceil_mode and (out - 1) * stride >= size + lo else out


PAD_POOL_CASES = [
    # shape, pool, strides, padding, ceil_mode
    ((2, 7, 9, 4), (3, 3), (2, 2), (1, 1, 1, 1), False),
    ((1, 6, 5, 2), (3, 2), (1, 2), (0, 1, 2, 0), False),
    ((1, 8, 8, 3), (3, 3), (2, 2), (1, 1, 1, 1), True),  # last window overhangs the bottom/right padding by 1
    ((1, 5, 6, 2), (2, 3), (2, 2), (0, 1, 0, 0), True),  # overhang without explicit bottom/right padding
]


@pytest.mark.parametrize("case", range(len(PAD_POOL_CASES)))
@pytest.mark.parametrize("zp", [-128, -37, 0, 55])
def test_qavg_pool2d_pads_with_zero_point(case, zp):
    """count_include_pad: padded taps are real 0, i.e. code ``pad_value`` (the input zero point), and count; a
    ceil_mode window's overhang past the explicit padding neither adds nor counts (ONNX/PyTorch/TVM).

    Oracle: np.pad with the zero point, then each window sliced from the padded array (numpy slicing drops the
    overhang) and averaged with exact round-half-away-from-zero integer arithmetic.
    """
    shape, pool, strides, padding, ceil_mode = PAD_POOL_CASES[case]
    rng = np.random.default_rng(70 + case)
    x = i8(rng, shape)
    pt, pl, pb, pr = padding
    xp = np.pad(x.astype(np.int64), [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=zp)
    oh = ref_out_size(shape[1], pool[0], strides[0], pt, pb, ceil_mode)
    ow = ref_out_size(shape[2], pool[1], strides[1], pl, pr, ceil_mode)
    expected = np.zeros((shape[0], oh, ow, shape[3]), np.int64)
    real_mean = np.zeros(expected.shape)  # the float average of (code - zp), padding as real 0
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * strides[0] : i * strides[0] + pool[0], j * strides[1] : j * strides[1] + pool[1], :]
            cnt = win.shape[1] * win.shape[2]
            acc = win.sum(axis=(1, 2))
            expected[:, i, j, :] = np.sign(acc) * ((2 * np.abs(acc) + cnt) // (2 * cnt))
            real_mean[:, i, j, :] = (win - zp).mean(axis=(1, 2))
    f = S.qavg_pool2d_primfunc(shape, pool=pool, strides=strides, padding=padding, ceil_mode=ceil_mode,
                               count_include_pad=True, pad_value=zp)  # fmt: skip
    got = run(f, [x], expected.shape)
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got.astype(np.int64) - zp - real_mean).max() <= 0.5  # means what it should in real terms
    # Without count_include_pad padding is skipped, whatever the pad value; ceil_mode's overhang is just more of
    # it, so the floor-mode oracle on the padding extended to the window count agrees.
    ext = (pt, pl, pb + max(0, (oh - 1) * strides[0] + pool[0] - shape[1] - pt - pb),
           pr + max(0, (ow - 1) * strides[1] + pool[1] - shape[2] - pl - pr))  # fmt: skip
    f = S.qavg_pool2d_primfunc(shape, pool=pool, strides=strides, padding=padding, ceil_mode=ceil_mode, pad_value=zp)
    expected = ref_avg_pool(x, pool, strides, ext, False, -128, 127)
    np.testing.assert_array_equal(run(f, [x], expected.shape), expected)
    f = S.qmax_pool2d_primfunc(shape, pool=pool, strides=strides, padding=padding, ceil_mode=ceil_mode)
    expected = ref_max_pool(x, pool, strides, ext, -128, 127)
    np.testing.assert_array_equal(run(f, [x], expected.shape), expected)


@pytest.mark.parametrize("hw", [(5, 10), (8, 8), (7, 7), (1, 3)])
def test_global_avg_pool_exact(hw):
    """Full-window average (50, 64, 49, 3 taps) is exact, including ties (+-0.5 rounds away from 0)."""
    from tvm import te

    rng = np.random.default_rng(sum(hw))
    shape = (2, *hw, 6)
    x = i8(rng, shape)
    cnt = hw[0] * hw[1]
    if cnt % 2 == 0:  # construct exact ties: sum = +-(k + 0.5) * cnt
        x[0, :, :, 0] = 0
        x[0, 0, 0, 0], x[0, 0, 1 % hw[1], 0] = cnt // 2 if cnt // 2 < 128 else 1, 0
        x[1, :, :, 1] = 0
        x[1, 0, 0, 1] = -(cnt // 2) if cnt // 2 <= 128 else -1
    X = te.placeholder(shape, "int8", name="x")
    f = te.create_prim_func([X, S.qglobal_avg_pool2d(X)]).without_attr("global_symbol")
    expected = ref_avg_pool(x, hw, (1, 1), (0, 0, 0, 0), False, -128, 127)
    got = run(f, [x], expected.shape)
    np.testing.assert_array_equal(got, expected)
    exact = x.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    assert np.max(np.abs(got - exact)) <= 0.5


# ---------------------------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("shape_axis", [((4, 10), -1), ((2, 3, 7), 1), ((37,), 0), ((1, 1000), -1)])
def test_qsoftmax(shape_axis):
    shape, axis = shape_axis
    rng = np.random.default_rng(len(shape) + shape[-1])
    x = i8(rng, shape)
    scale = float(10 ** rng.uniform(-2, -0.5))
    lut = FP.softmax_exp_lut(scale, beta=1.0)
    f = S.qsoftmax_primfunc(shape, axis=axis)
    xi = x.astype(np.int64)
    m = xi.max(axis=axis, keepdims=True)
    e = lut.astype(np.int64)[m - xi]
    s = e.sum(axis=axis, keepdims=True)
    expected = np.clip(c_div(e * 256 + s // 2, s) - 128, -128, 127).astype(np.int8)
    got = run(f, [x, lut], shape)
    np.testing.assert_array_equal(got, expected)
    # Close to the float softmax (output scale 1/256, zp -128).
    z = np.exp((xi - m) * scale)
    ref = z / z.sum(axis=axis, keepdims=True)
    assert np.max(np.abs((got.astype(np.float64) + 128) / 256 - ref)) < 3 / 256


# ---------------------------------------------------------------------------------------- data movement
def test_qpad_and_qconcat():
    rng = np.random.default_rng(70)
    x = i8(rng, (2, 3, 4, 5))
    before, after = (0, 1, 2, 0), (1, 0, 3, 0)
    f = S.qpad_primfunc(x.shape, pad_before=before, pad_after=after, pad_value=-7)
    expected = np.pad(x, list(zip(before, after, strict=True)), constant_values=-7)
    np.testing.assert_array_equal(run(f, [x], expected.shape), expected)

    for axis in (-1, 1, 0):
        shapes = [list(x.shape) for _ in range(3)]
        for k, extent in enumerate((1, 4, 2)):
            shapes[k][axis] = extent
        xs = [i8(rng, s) for s in shapes]
        f = S.qconcat_primfunc(shapes, axis=axis)
        expected = np.concatenate(xs, axis=axis)
        np.testing.assert_array_equal(run(f, xs, expected.shape), expected)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="groups"):
        S.qconv2d_primfunc((1, 4, 4, 6), (4, 3, 3, 4), groups=2)
    with pytest.raises(ValueError, match="exceeds"):
        S.qconv2d_primfunc((1, 2, 2, 1), (1, 3, 3, 1))
    with pytest.raises(ValueError, match="broadcast"):
        S.qadd_primfunc((2, 3), (4,), **FP.tflite_add_params(0.1, 0.1, 0.1), a_zp=0, b_zp=0, out_zp=0)
    with pytest.raises(ValueError, match="off axis"):
        S.qconcat_primfunc([(1, 2, 3), (1, 3, 3)], axis=-1)


def test_c_codegen_float_constants_exact():
    """TVM's C backend prints float immediates with 7 digits; scales that need more go through ldexpf."""
    for scale in (0.0123456789, 1 / 255, 0.5, 3.0517578125e-05, 0.1):
        f = S.quantize_primfunc((8,), scale=scale, zero_point=-7)
        mod = tvm.IRModule({"quantize": f.with_attr("global_symbol", "quantize")})
        src = tvm.compile(mod, target="c").mod.inspect_source()
        body = src[src.index("for (int32_t") :]
        body = body[: body.index("return 0;")]
        # Every float literal in the loop parses back to the value TVM meant (float32 round trip).
        lits = re.findall(r"([-+]?\d\.\d+e[-+]\d+)f", body)
        assert lits
        if "ldexpf" not in body:
            assert any(np.float32(v) == np.float32(scale) for v in lits), (scale, body)
        else:
            assert np.float32(f"{float(np.float32(scale)):.6e}") != np.float32(scale)
