/* tvmq firmware harness: runs an exported model on N samples read from host files through semihosting.
 *
 * Host files (in QEMU's working directory): tvmq_job.bin {magic, version, n, mode}, tvmq_in.bin (n samples, int8
 * codes or float32 values), and written back: tvmq_out_raw.bin (int8), tvmq_out_float.bin (the model's own
 * dequantize_output), tvmq_timing.bin (SysTick marks, see below). One line "tvmq-progress i/n" per sample.
 *
 * Timing: SysTick counts the 25 MHz (20 MHz on AN505) system clock; with QEMU -icount shift=0 one instruction is
 * 1 ns, so one tick is a fixed number of instructions. Each mark spins until the next tick edge and records the
 * edge and the number of spin iterations (4 instructions each), so the host can recover the instructions between
 * two marks to a few instructions instead of one tick. The SysTick interrupt counts 24-bit wraps.
 * harness_config.h is generated per model (function names, sizes).
 */
#include <stdint.h>

#include "harness_config.h"
#include "model.h"
#include "tvmq_profile.h"
#include "tvmq_semihost.h"
#include "tvmq_startup.h"
#include "tvmq_systick.h" /* tvmq_prof_mark, tvmq_spin_exact, the marks and SYST_* registers */

#define TVMQ_JOB_MAGIC 0x4A4D5654u    /* "TVMJ" */
#define TVMQ_TIMING_MAGIC 0x544D5654u /* "TVMT" */
#define TVMQ_END_MAGIC 0x444E4554u    /* "TEND" */
#define TVMQ_FORMAT_VERSION 1u
#define TVMQ_CAL_REPEATS 16u
#define TVMQ_KNOWN_LOOP 5000u
#define TVMQ_STACK_PAINT 0xC0DEC0DEu

static int8_t tvmq_in_q[TVMQ_IN_BYTES] __attribute__((aligned(8)));
static float tvmq_in_f[TVMQ_IN_BYTES] __attribute__((aligned(8)));
static int8_t tvmq_out_q[TVMQ_OUT_BYTES] __attribute__((aligned(8)));
static float tvmq_out_f[TVMQ_OUT_BYTES] __attribute__((aligned(8)));

static void tvmq_put_u32(char *text, uint32_t *pos, uint32_t value) {
    char digits[10];
    uint32_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (n > 0u) {
        text[(*pos)++] = digits[--n];
    }
}

static void tvmq_progress(uint32_t done, uint32_t total) {
    char text[48] = "tvmq-progress ";
    uint32_t pos = 14;
    tvmq_put_u32(text, &pos, done);
    text[pos++] = '/';
    tvmq_put_u32(text, &pos, total);
    text[pos++] = '\n';
    text[pos] = '\0';
    tvmq_sh_puts(text);
}

static int tvmq_fail(const char *what) {
    tvmq_sh_puts("tvmq-error: ");
    tvmq_sh_puts(what);
    tvmq_sh_puts("\n");
    return 2;
}

static int tvmq_write_marks(int32_t fd) {
    uint32_t head[2] = {tvmq_marks_n, tvmq_marks_dropped};
    if (tvmq_sh_write(fd, head, sizeof(head)) != 0) {
        return -1;
    }
    return tvmq_sh_write(fd, tvmq_marks, tvmq_marks_n * sizeof(tvmq_mark_t));
}

static void tvmq_marks_reset(void) {
    tvmq_marks_n = 0;
    tvmq_marks_dropped = 0;
}

/* Fills the unused part of the stack with a pattern; the lowest overwritten word gives the peak use. */
static void tvmq_stack_paint(void) {
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = __tvmq_stack_bottom__ + TVMQ_STACK_GUARD_BYTES / 4u; p < sp - 16; p++) {
        *p = TVMQ_STACK_PAINT;
    }
}

static uint32_t tvmq_stack_peak(void) {
    const uint32_t *p = __tvmq_stack_bottom__ + TVMQ_STACK_GUARD_BYTES / 4u;
    while (p < __tvmq_stack_top__ && *p == TVMQ_STACK_PAINT) {
        p++;
    }
    return (uint32_t)((const char *)__tvmq_stack_top__ - (const char *)p);
}

int main(void) {
    tvmq_stack_paint();
    uint32_t job[4];
    int32_t fd_job = tvmq_sh_open("tvmq_job.bin", TVMQ_OPEN_RB);
    if (fd_job < 0 || tvmq_sh_read(fd_job, job, sizeof(job)) != 0 || job[0] != TVMQ_JOB_MAGIC ||
        job[1] != TVMQ_FORMAT_VERSION || job[3] > 1u) {
        return tvmq_fail("cannot read a valid tvmq_job.bin");
    }
    tvmq_sh_close(fd_job);
    const uint32_t n = job[2];
    const uint32_t float_inputs = job[3];

    int32_t fd_in = tvmq_sh_open("tvmq_in.bin", TVMQ_OPEN_RB);
    int32_t fd_raw = tvmq_sh_open("tvmq_out_raw.bin", TVMQ_OPEN_WB);
    int32_t fd_float = tvmq_sh_open("tvmq_out_float.bin", TVMQ_OPEN_WB);
    int32_t fd_time = tvmq_sh_open("tvmq_timing.bin", TVMQ_OPEN_WB);
    if (fd_in < 0 || fd_raw < 0 || fd_float < 0 || fd_time < 0) {
        return tvmq_fail("cannot open the host files (is QEMU running with -semihosting-config target=native?)");
    }

    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 7u; /* processor clock, interrupt on wrap (counts wraps), enable */

    uint32_t header[5] = {TVMQ_TIMING_MAGIC, TVMQ_FORMAT_VERSION, n, TVMQ_CAL_REPEATS, TVMQ_KNOWN_LOOP};
    if (tvmq_sh_write(fd_time, header, sizeof(header)) != 0) {
        return tvmq_fail("cannot write tvmq_timing.bin");
    }
    for (uint32_t i = 0; i < TVMQ_CAL_REPEATS; i++) {
        tvmq_marks_reset();
        tvmq_prof_mark(TVMQ_MARK_CAL);
        tvmq_prof_mark(TVMQ_MARK_CAL);
        if (tvmq_write_marks(fd_time) != 0) {
            return tvmq_fail("cannot write tvmq_timing.bin");
        }
    }
    tvmq_marks_reset();
    tvmq_prof_mark(TVMQ_MARK_CAL);
    tvmq_spin_exact(TVMQ_KNOWN_LOOP);
    tvmq_prof_mark(TVMQ_MARK_CAL);
    if (tvmq_write_marks(fd_time) != 0) {
        return tvmq_fail("cannot write tvmq_timing.bin");
    }

    for (uint32_t s = 0; s < n; s++) {
        if (float_inputs) {
            if (tvmq_sh_read(fd_in, tvmq_in_f, sizeof(tvmq_in_f)) != 0) {
                return tvmq_fail("tvmq_in.bin is shorter than the job says");
            }
            TVMQ_QUANTIZE_INPUT(tvmq_in_f, tvmq_in_q);
        } else if (tvmq_sh_read(fd_in, tvmq_in_q, sizeof(tvmq_in_q)) != 0) {
            return tvmq_fail("tvmq_in.bin is shorter than the job says");
        }
        tvmq_marks_reset();
        tvmq_prof_mark(TVMQ_MARK_START);
        int32_t status = TVMQ_RUN(tvmq_in_q, tvmq_out_q);
        tvmq_prof_mark(TVMQ_MARK_END);
        if (status != 0) {
            return tvmq_fail("the model's run function returned non-zero");
        }
        TVMQ_DEQUANTIZE_OUTPUT(tvmq_out_q, tvmq_out_f);
        if (tvmq_sh_write(fd_raw, tvmq_out_q, sizeof(tvmq_out_q)) != 0 ||
            tvmq_sh_write(fd_float, tvmq_out_f, sizeof(tvmq_out_f)) != 0 || tvmq_write_marks(fd_time) != 0) {
            return tvmq_fail("cannot write the output files");
        }
        tvmq_progress(s + 1, n);
    }

    uint32_t trailer[3] = {TVMQ_END_MAGIC, tvmq_stack_peak(),
                           (uint32_t)((char *)__tvmq_stack_top__ - (char *)__tvmq_stack_bottom__)};
    if (tvmq_sh_write(fd_time, trailer, sizeof(trailer)) != 0) {
        return tvmq_fail("cannot write tvmq_timing.bin");
    }
    tvmq_sh_close(fd_in);
    tvmq_sh_close(fd_raw);
    tvmq_sh_close(fd_float);
    tvmq_sh_close(fd_time);
    tvmq_sh_puts("tvmq-done\n");
    return 0;
}
