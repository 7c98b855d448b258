"""C source of tvmq's micro-kernels: the static inline functions the tensor intrinsics of ``schedules.intrin`` call.

They go into ``tvmq_runtime.h`` (``tvmq.codegen.kernels.RUNTIME_HEADER``). Every argument of a call is a constant
of the layer, so gcc inlines each call and specialises its loops (``always_inline``). Cores with the DSP extension
(``__ARM_FEATURE_DSP``: Cortex-M4/M7/M33/M55) take SIMD: ``SXTAB16`` widens two int8 values and adds the input
offset in one instruction, ``SMLAD`` does two 16x16 multiply-accumulates; one loaded word of 4 inputs feeds Q
output channels, one word of 4 weights feeds P pixels. Other cores (M0/M0+/M3) run the same tile with scalar
multiply-accumulates, still register-blocked. Sums are exact int32 (wrapping) in any order, so every variant equals
the plain TIR of the description.
"""

from __future__ import annotations

# (pixels P, output channels Q) of tvmq_mac_s8_<P>x<Q>
MAC_TILES = ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (3, 1), (3, 2), (5, 1))
DW_TILES = (1, 2, 4)  # channels G of tvmq_dw_s8_<G>

_PRELUDE = """\
/* ---- micro-kernels (tensor intrinsics of tvmq.schedules.intrin) ---- */
#define TVMQ_INLINE static inline __attribute__((always_inline))
#if defined(__arm__)
#include <arm_acle.h>
#endif
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define TVMQ_SIMD 1
/* 4 bytes from any address (Cortex-M4/M7/M33 load words unaligned) */
TVMQ_INLINE uint32_t tvmq_ld32(const int8_t* p) { uint32_t v; __builtin_memcpy(&v, p, 4); return v; }
/* bytes 1 and 3 sign-extended to halfwords (+ a): SXTB16/SXTAB16 with the rotation gcc does not fold itself */
TVMQ_INLINE uint32_t tvmq_sxtb16_ror8(uint32_t x) {
  uint32_t r; __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x)); return r;
}
TVMQ_INLINE uint32_t tvmq_sxtab16_ror8(uint32_t a, uint32_t x) {
  uint32_t r; __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x)); return r;
}
#endif
"""


def mac_kernel_c(p: int, q: int) -> str:
    """``tvmq_mac_s8_<p>x<q>``: ``acc[i*acc_stride + j] += sum (x_i - izp) * w_j`` over ``rows`` x ``cols`` runs of
    ``len`` contiguous taps; pixel i starts ``i*x_pix`` after ``x``, channel j ``j*w_ch`` after ``w``."""
    name = f"tvmq_mac_s8_{p}x{q}"
    pairs = [(i, j) for i in range(p) for j in range(q)]
    accs = ", ".join(f"a{i}{j} = acc[{i} * acc_stride + {j}]" for i, j in pairs)
    lines = [
        f"TVMQ_INLINE void {name}(int32_t* acc, int32_t acc_stride, const int8_t* x, int32_t x_pix, int32_t x_row,",
        "    int32_t x_col, const int8_t* w, int32_t w_ch, int32_t w_row, int32_t w_col, int32_t rows, int32_t cols,",
        "    int32_t len, int32_t izp) {",
        f"  int32_t {accs};",
        "  for (int32_t r = 0; r < rows; ++r) {",
        "    for (int32_t c = 0; c < cols; ++c) {",
        "      const int8_t* xr = x + r * x_row + c * x_col;",
        "      const int8_t* wr = w + r * w_row + c * w_col;",
        "      int32_t t = 0;",
        "#ifdef TVMQ_SIMD",
        "      const uint32_t off = (uint32_t)(uint16_t)(-izp) * 0x00010001u;",
        "      for (; t + 4 <= len; t += 4) {",
    ]
    xs = [
        [
            f"        const uint32_t x{i} = tvmq_ld32(xr + {i} * x_pix + t);",
            f"        const uint32_t x{i}e = __sxtab16(off, x{i}), x{i}o = tvmq_sxtab16_ror8(off, x{i});",
        ]
        for i in range(p)
    ]
    ws = [
        [
            f"        const uint32_t w{j} = tvmq_ld32(wr + {j} * w_ch + t);",
            f"        const uint32_t w{j}e = __sxtb16(w{j}), w{j}o = tvmq_sxtb16_ror8(w{j});",
        ]
        for j in range(q)
    ]
    macs = {
        (i, j): f"        a{i}{j} = __smlad(x{i}e, w{j}e, a{i}{j}); a{i}{j} = __smlad(x{i}o, w{j}o, a{i}{j});"
        for i, j in pairs
    }
    # the operand of which there are fewer is widened first and stays live; the other streams past it
    outer, inner = (xs, ws) if p <= q else (ws, xs)
    for block in outer:
        lines += block
    for n, block in enumerate(inner):
        lines += block
        lines += [macs[(i, n) if p <= q else (n, i)] for i in range(len(outer))]
    # the whole run without SIMD (M0/M3), the last len % 4 taps with it: unrolled, no loop test per tap
    lines += ["      }", "#endif", "#pragma GCC unroll 4", "      for (; t < len; ++t) {"]
    lines += [f"        const int32_t x{i} = xr[{i} * x_pix + t] - izp;" for i in range(p)]
    lines += [f"        const int32_t w{j} = wr[{j} * w_ch + t];" for j in range(q)]
    lines += [f"        a{i}{j} += x{i} * w{j};" for i, j in pairs]
    lines += ["      }", "    }", "  }"]
    lines += [f"  acc[{i} * acc_stride + {j}] = a{i}{j};" for i, j in pairs]
    lines.append("}")
    return "\n".join(lines) + "\n"


_CB4 = """\
/* One row of a dense layer against 4-bit codebook weights decoded on the fly (each weight is used once):
   acc[j] += sum_t (x[t] - izp) * tbl[j*tbl_ch + nibble t of row j of pk], nibbles low first. One channel at a time
   (the registers then hold 8 inputs' halfword pairs); with SIMD a word of packed indices gives 8 weights whose
   table values pair up (t, t+2), (t+1, t+3) like the SXTAB16 halves of the inputs. */
TVMQ_INLINE uint32_t tvmq_pkhbt(int32_t lo, int32_t hi) {
#ifdef TVMQ_SIMD
  uint32_t r; __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi)); return r;
#else
  return (uint32_t)(uint16_t)lo | ((uint32_t)hi << 16);
#endif
}
TVMQ_INLINE void tvmq_mac_cb4(int32_t* acc, const int8_t* x, const uint8_t* pk, int32_t pk_ch, const int8_t* tbl,
    int32_t tbl_ch, int32_t channels, int32_t len, int32_t izp) {
  for (int32_t j = 0; j < channels; ++j) {
    const uint8_t* p = pk + j * pk_ch;
    const int8_t* w = tbl + j * tbl_ch;
    int32_t a = acc[j], t = 0;
#ifdef TVMQ_SIMD
    const uint32_t off = (uint32_t)(uint16_t)(-izp) * 0x00010001u;
    for (; t + 8 <= len; t += 8) {
      uint32_t n;
      __builtin_memcpy(&n, p + (t >> 1), 4);
      const uint32_t x0 = tvmq_ld32(x + t), x1 = tvmq_ld32(x + t + 4);
      a = __smlad(__sxtab16(off, x0), tvmq_pkhbt(w[n & 15], w[(n >> 8) & 15]), a);
      a = __smlad(tvmq_sxtab16_ror8(off, x0), tvmq_pkhbt(w[(n >> 4) & 15], w[(n >> 12) & 15]), a);
      a = __smlad(__sxtab16(off, x1), tvmq_pkhbt(w[(n >> 16) & 15], w[(n >> 24) & 15]), a);
      a = __smlad(tvmq_sxtab16_ror8(off, x1), tvmq_pkhbt(w[(n >> 20) & 15], w[n >> 28]), a);
    }
#else
    for (; t + 2 <= len; t += 2) { /* two weights per packed byte */
      const uint32_t n = p[t >> 1];
      a += (x[t] - izp) * w[n & 15] + (x[t + 1] - izp) * w[n >> 4];
    }
#endif
    for (; t < len; ++t) a += (x[t] - izp) * w[(p[t >> 1] >> ((t & 1) * 4)) & 15];
    acc[j] = a;
  }
}
"""


def dw_kernel_c(g: int) -> str:
    """``tvmq_dw_s8_<g>``: depthwise taps of G consecutive channels of one pixel, ``acc[c] += sum (x_c - izp) *
    w[c*w_ch + r*w_row + k*w_col]`` over ``rows`` x ``cols`` taps. With SIMD one word holds 4 channels: SXTAB16
    splits it into channels (0, 2) and (1, 3) with the offset, SMLABB/SMLATB take the bottom/top half against
    the (sign-extended) weight byte."""
    name = f"tvmq_dw_s8_{g}"
    lines = [
        f"TVMQ_INLINE void {name}(int32_t* acc, const int8_t* x, int32_t x_row, int32_t x_col, const int8_t* w,",
        "    int32_t w_ch, int32_t w_row, int32_t w_col, int32_t rows, int32_t cols, int32_t izp) {",
        "  int32_t " + ", ".join(f"a{c} = acc[{c}]" for c in range(g)) + ";",
    ]
    if g == 4:
        lines += ["#ifdef TVMQ_SIMD", "  const uint32_t off = (uint32_t)(uint16_t)(-izp) * 0x00010001u;", "#endif"]
    lines += ["#pragma GCC unroll 16", "  for (int32_t r = 0; r < rows; ++r) {", "#pragma GCC unroll 16",
              "    for (int32_t k = 0; k < cols; ++k) {", "      const int8_t* xr = x + r * x_row + k * x_col;",
              "      const int8_t* wr = w + r * w_row + k * w_col;"]  # fmt: skip
    if g == 4:
        lines += [
            "#ifdef TVMQ_SIMD",
            "      const uint32_t xw = tvmq_ld32(xr);",
            "      const uint32_t xe = __sxtab16(off, xw), xo = tvmq_sxtab16_ror8(off, xw);",
            "      a0 = __smlabb(xe, wr[0], a0); a2 = __smlatb(xe, wr[2 * w_ch], a2);",
            "      a1 = __smlabb(xo, wr[w_ch], a1); a3 = __smlatb(xo, wr[3 * w_ch], a3);",
            "#else",
        ]
    lines += [f"      a{c} += (xr[{c}] - izp) * wr[{c} * w_ch];" for c in range(g)]
    if g == 4:
        lines.append("#endif")
    lines += ["    }", "  }"] + [f"  acc[{c}] = a{c};" for c in range(g)] + ["}"]
    return "\n".join(lines) + "\n"


_REQUANT = """\
/* The conv/dense epilogue of a rows x cols tile, exactly schedules.fixed_point.requantize_output (TFLM's
   MultiplyByQuantizedMultiplier with double rounding, then the clamp), shifts in [-31, 31]. Per column (output
   channel) the parameters are prepared once. SRDHM is (x*m + 2^30) >> 31 for both signs; its only overflow,
   x == m == INT32_MIN, wraps to INT32_MIN, which is never a genuine result, and saturates to INT32_MAX. */
TVMQ_INLINE int32_t tvmq_rdbpot(int32_t x, int32_t e, uint32_t mask) {
  return (x >> e) + (((uint32_t)x & mask) > (mask >> 1) + (uint32_t)(x < 0));
}
TVMQ_INLINE int8_t tvmq_clamp_s8(int32_t r, int32_t lo, int32_t hi) {
  if (lo >= -128 && hi <= 127) { /* saturate to int8 first: the same result, one SSAT */
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
    r = __ssat(r, 8);
#else
    r = r < -128 ? -128 : (r > 127 ? 127 : r);
#endif
    if (lo > -128) r = r < lo ? lo : r;
    if (hi < 127) r = r > hi ? hi : r;
    return (int8_t)r;
  }
  r = r < lo ? lo : r; /* bounds beyond int8: the int8 store wraps, as the TIR's cast does */
  return (int8_t)(r > hi ? hi : r);
}
TVMQ_INLINE void tvmq_requant_s8(const int32_t* acc, int32_t acc_stride, int8_t* out, int32_t out_stride,
    int32_t has_bias, const int32_t* bias, const int32_t* mult, const int32_t* shift, int32_t rows, int32_t cols,
    int32_t zp, int32_t lo, int32_t hi) {
#pragma GCC unroll 8
  for (int32_t q = 0; q < cols; ++q) {
    const int32_t s = shift[q], m = mult[q];
    const uint32_t b = has_bias ? (uint32_t)bias[q] : 0u;
    const int32_t left = s > 0 ? s : 0, e = s < 0 ? -s : 0;
    const uint32_t mask = ~(0xFFFFFFFFu << e);
#pragma GCC unroll 8
    for (int32_t p = 0; p < rows; ++p) {
      const int32_t x = (int32_t)(((uint32_t)acc[p * acc_stride + q] + b) << left);
      int32_t r = (int32_t)(((int64_t)x * m + (1 << 30)) >> 31);
      r = r == INT32_MIN ? INT32_MAX : r;
      out[p * out_stride + q] = tvmq_clamp_s8((int32_t)((uint32_t)tvmq_rdbpot(r, e, mask) + (uint32_t)zp), lo, hi);
    }
  }
}
/* The power-of-two epilogue (no multiplier): a left shift for shift >= 0, else RDBPOT by min(-shift, 31). */
TVMQ_INLINE void tvmq_requant_pow2_s8(const int32_t* acc, int32_t acc_stride, int8_t* out, int32_t out_stride,
    int32_t has_bias, const int32_t* bias, const int32_t* shift, int32_t rows, int32_t cols, int32_t zp, int32_t lo,
    int32_t hi) {
#pragma GCC unroll 8
  for (int32_t q = 0; q < cols; ++q) {
    const int32_t s = shift[q];
    const uint32_t b = has_bias ? (uint32_t)bias[q] : 0u;
    const int32_t e = s < 0 ? (s < -31 ? 31 : -s) : 0;
    const uint32_t mask = ~(0xFFFFFFFFu << e);
#pragma GCC unroll 8
    for (int32_t p = 0; p < rows; ++p) {
      const int32_t x = (int32_t)((uint32_t)acc[p * acc_stride + q] + b);
      const int32_t r = s >= 0 ? (int32_t)((uint32_t)x << s) : tvmq_rdbpot(x, e, mask);
      out[p * out_stride + q] = tvmq_clamp_s8((int32_t)((uint32_t)r + (uint32_t)zp), lo, hi);
    }
  }
}
"""


def runtime_c() -> str:
    """All micro-kernels, for the runtime header."""
    kernels = [*(mac_kernel_c(p, q) for p, q in MAC_TILES), _CB4, *(dw_kernel_c(g) for g in DW_TILES), _REQUANT]
    return _PRELUDE + "\n".join(kernels)
