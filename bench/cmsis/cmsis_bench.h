/* cmsis_bench.h: the scratch buffer and per-call bookkeeping of bench/kernels.py's CMSIS-NN steps.
 *
 * Why a header of our own: every CMSIS-NN step of the generated cmsis_layers.c asks the kernel's *_get_buffer_size
 * function for its scratch size before the timed window, takes that many bytes of one shared buffer (as TFLM hands
 * out its scratch arena), and records the kernel's status and the size, so the host can report both. Written for the
 * benchmark; it contains no CMSIS-NN code.
 */
#ifndef TVMQ_BENCH_CMSIS_BENCH_H_
#define TVMQ_BENCH_CMSIS_BENCH_H_

#include <stdint.h>

#include "arm_nnfunctions.h"

#ifndef CMSIS_BENCH_SCRATCH_BYTES
#error "define CMSIS_BENCH_SCRATCH_BYTES (bench/kernels.py passes the largest scratch any layer may need)"
#endif

/* Recorded instead of a kernel status when the shared buffer is smaller than a kernel asks for. */
#define CMSIS_BENCH_SCRATCH_TOO_SMALL (-1000)

static int16_t cmsis_bench_scratch[(CMSIS_BENCH_SCRATCH_BYTES + 1) / 2] __attribute__((aligned(16)));

/* A context of ``size`` bytes (NULL buffer when the kernel needs none); 0 and a recorded error if it cannot fit. */
static inline int cmsis_bench_context(cmsis_nn_context *ctx, int32_t size, int32_t *info) {
    info[1] = size;
    if (size > (int32_t)sizeof(cmsis_bench_scratch)) {
        info[0] = CMSIS_BENCH_SCRATCH_TOO_SMALL;
        return 0;
    }
    ctx->buf = size > 0 ? (void *)cmsis_bench_scratch : NULL;
    ctx->size = size;
    return 1;
}

#endif /* TVMQ_BENCH_CMSIS_BENCH_H_ */
