/* ref_kernels.h: plain C int8 convolution and fully connected kernels, the baseline tvmq's schedules are measured
 * against (bench/baseline_instructions.py).
 *
 * Why this shape: it is how a portable reference kernel library computes these layers (the style of TensorFlow Lite
 * Micro's reference kernels), written from the arithmetic, not copied. Every shape, stride, padding and quantization
 * parameter arrives at run time through a params struct and dims arrays; each output pixel loops over the kernel
 * window with a bounds check per tap; the accumulator is int32 with the input offset (-zero point) added to every
 * input value; then per output channel the gemmlowp-style fixed-point MultiplyByQuantizedMultiplier (64-bit product,
 * double rounding), the output offset and the activation clamp.
 *
 * The kernels are `noipa` (no inlining, no cloning, no constant propagation across the call) so gcc compiles them
 * once for every layer, as a separately compiled kernel library would be: without it gcc could specialise a kernel
 * to the constant shapes of the one model it is built with, which is tvmq's advantage, not the baseline's.
 * (`unused`: a model without dense layers leaves that kernel uncalled, and -Wall would say so.)
 *
 * Arithmetic matches tvmq's integer ops bit for bit (verified on the device by the benchmark).
 */
#ifndef TVMQ_BENCH_REF_KERNELS_H_
#define TVMQ_BENCH_REF_KERNELS_H_

#include <stdint.h>

#ifndef REF_NOIPA
#define REF_NOIPA __attribute__((noipa, unused))
#endif

/* Quantization and geometry of one convolution; activations are NHWC, filters OHWI (I = input channels / groups). */
typedef struct {
    int32_t input_offset;  /* -input zero point */
    int32_t output_offset; /* +output zero point */
    int32_t stride_height, stride_width;
    int32_t dilation_height, dilation_width;
    int32_t pad_top, pad_left; /* bottom/right padding is implied by the output size */
    int32_t groups;
    int32_t act_min, act_max;
} ref_conv_params_t;

/* Quantization of one fully connected layer; input (batches, depth), filter (out channels, depth). */
typedef struct {
    int32_t input_offset;
    int32_t output_offset;
    int32_t act_min, act_max;
} ref_fc_params_t;

/* ---- fixed-point helpers (gemmlowp semantics) ------------------------------------------------------------------ */

/* round(a * b / 2^31), ties away from zero; the one overflowing case (INT32_MIN * INT32_MIN) saturates. */
static inline int32_t ref_srdhm(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    return (int32_t)((ab + nudge) / (1LL << 31)); /* C division truncates towards zero, as the reference's */
}

/* x / 2^exponent rounded to nearest, ties away from zero; 0 <= exponent <= 31. */
static inline int32_t ref_rounding_divide_by_pot(int32_t x, int32_t exponent) {
    int32_t mask = (int32_t)((1u << exponent) - 1u);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * multiplier * 2^(shift - 31): shift > 0 is a left shift before the high multiply, shift < 0 a rounding right
 * shift after it (TFLite's QuantizeMultiplier convention). The left shift wraps like two's complement. */
static inline int32_t ref_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift) {
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    int32_t shifted = (int32_t)((uint32_t)x << left);
    return ref_rounding_divide_by_pot(ref_srdhm(shifted, multiplier), right);
}

static inline int32_t ref_clamp(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Flat index of (a, b, c, d) in a row-major 4-d tensor with run-time dims. */
static inline int32_t ref_offset4(const int32_t* dims, int32_t a, int32_t b, int32_t c, int32_t d) {
    return ((a * dims[1] + b) * dims[2] + c) * dims[3] + d;
}

/* ---- kernels ----------------------------------------------------------------------------------------------------- */

/* Per-channel int8 convolution: input_dims/filter_dims/output_dims are NHWC/OHWI/NHWC; bias may be NULL. */
REF_NOIPA static void ref_conv_per_channel(const ref_conv_params_t* params, const int32_t* multiplier,
                                           const int32_t* shift, const int32_t* input_dims, const int8_t* input,
                                           const int32_t* filter_dims, const int8_t* filter, const int32_t* bias,
                                           const int32_t* output_dims, int8_t* output) {
    const int32_t batches = input_dims[0];
    const int32_t input_height = input_dims[1];
    const int32_t input_width = input_dims[2];
    const int32_t filter_height = filter_dims[1];
    const int32_t filter_width = filter_dims[2];
    const int32_t filter_depth = filter_dims[3];
    const int32_t output_height = output_dims[1];
    const int32_t output_width = output_dims[2];
    const int32_t output_depth = output_dims[3];
    const int32_t channels_per_group = output_depth / params->groups;
    for (int32_t b = 0; b < batches; ++b) {
        for (int32_t out_y = 0; out_y < output_height; ++out_y) {
            const int32_t in_y_origin = out_y * params->stride_height - params->pad_top;
            for (int32_t out_x = 0; out_x < output_width; ++out_x) {
                const int32_t in_x_origin = out_x * params->stride_width - params->pad_left;
                for (int32_t out_c = 0; out_c < output_depth; ++out_c) {
                    const int32_t in_c_base = (out_c / channels_per_group) * filter_depth;
                    int32_t acc = 0;
                    for (int32_t f_y = 0; f_y < filter_height; ++f_y) {
                        const int32_t in_y = in_y_origin + params->dilation_height * f_y;
                        for (int32_t f_x = 0; f_x < filter_width; ++f_x) {
                            const int32_t in_x = in_x_origin + params->dilation_width * f_x;
                            const int inside = in_x >= 0 && in_x < input_width && in_y >= 0 && in_y < input_height;
                            if (!inside) {
                                continue; /* padding contributes (zero point + input offset) * w = 0 */
                            }
                            for (int32_t in_c = 0; in_c < filter_depth; ++in_c) {
                                const int32_t x = input[ref_offset4(input_dims, b, in_y, in_x, in_c_base + in_c)];
                                const int32_t w = filter[ref_offset4(filter_dims, out_c, f_y, f_x, in_c)];
                                acc += w * (x + params->input_offset);
                            }
                        }
                    }
                    if (bias != 0) {
                        acc += bias[out_c];
                    }
                    acc = ref_multiply_by_quantized_multiplier(acc, multiplier[out_c], shift[out_c]);
                    acc += params->output_offset;
                    acc = ref_clamp(acc, params->act_min, params->act_max);
                    output[ref_offset4(output_dims, b, out_y, out_x, out_c)] = (int8_t)acc;
                }
            }
        }
    }
}

/* Per-channel int8 fully connected layer: input (batches, depth), filter (output_depth, depth); bias may be NULL. */
REF_NOIPA static void ref_fully_connected_per_channel(const ref_fc_params_t* params, const int32_t* multiplier,
                                                      const int32_t* shift, int32_t batches, int32_t depth,
                                                      int32_t output_depth, const int8_t* input,
                                                      const int8_t* filter, const int32_t* bias, int8_t* output) {
    for (int32_t b = 0; b < batches; ++b) {
        for (int32_t out_c = 0; out_c < output_depth; ++out_c) {
            int32_t acc = 0;
            for (int32_t d = 0; d < depth; ++d) {
                const int32_t x = input[b * depth + d];
                const int32_t w = filter[out_c * depth + d];
                acc += w * (x + params->input_offset);
            }
            if (bias != 0) {
                acc += bias[out_c];
            }
            acc = ref_multiply_by_quantized_multiplier(acc, multiplier[out_c], shift[out_c]);
            acc += params->output_offset;
            acc = ref_clamp(acc, params->act_min, params->act_max);
            output[b * output_depth + out_c] = (int8_t)acc;
        }
    }
}

#endif /* TVMQ_BENCH_REF_KERNELS_H_ */
