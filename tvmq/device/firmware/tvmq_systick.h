/* SysTick step marks on QEMU's mps2 boards, shared by the semihosting harness and the protocol firmware.
 *
 * Why shared: the two firmwares must count instructions the same way, so `tvmq profile` on a bare-metal QEMU board
 * agrees with tvmq.qemu.run. Each mark spins until the next SysTick edge and records the edge and the number of
 * spin iterations (4 instructions each); with QEMU -icount shift=0 one tick is a fixed number of instructions, so
 * the instructions between two marks are recovered to a few instructions (tvmq/device/timing.py, tvmq_runner.c).
 * Include once per firmware, after TVMQ_MARK_CAPACITY is defined; the SysTick interrupt counts 24-bit wraps.
 */
#ifndef TVMQ_SYSTICK_H
#define TVMQ_SYSTICK_H

#include <stdint.h>

#include "tvmq_startup.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

typedef struct {
    uint32_t id, wraps, cvr, spins;
} tvmq_mark_t;

static tvmq_mark_t tvmq_marks[TVMQ_MARK_CAPACITY];
static uint32_t tvmq_marks_n;
static uint32_t tvmq_marks_dropped;

/* Out of line with one fixed path, so its own cost is a constant the host removes by calibration. */
__attribute__((noinline)) void tvmq_prof_mark(uint32_t id) {
    volatile uint32_t *cvr = &SYST_CVR;
    uint32_t first = *cvr;
    uint32_t value;
    uint32_t spins = 0;
    __asm__ volatile(
        ".syntax unified\n\t" /* adds/subs with 3 operands also on ARMv6-M */
        "1: ldr %[value], [%[cvr]]\n\t"
        "adds %[spins], %[spins], #1\n\t"
        "cmp %[value], %[first]\n\t"
        "beq 1b\n\t"
        : [value] "=&l"(value), [spins] "+l"(spins)
        : [cvr] "l"(cvr), [first] "l"(first)
        : "cc", "memory");
    uint32_t wraps = tvmq_systick_wraps;
    uint32_t n = tvmq_marks_n;
    if (n < TVMQ_MARK_CAPACITY) {
        tvmq_marks[n].id = id;
        tvmq_marks[n].wraps = wraps;
        tvmq_marks[n].cvr = value;
        tvmq_marks[n].spins = spins;
        tvmq_marks_n = n + 1;
    } else {
        tvmq_marks_dropped++;
    }
}

/* Exactly 2 instructions per iteration: checks the host's instructions-per-tick for this board. */
__attribute__((noinline, naked, unused)) static void tvmq_spin_exact(uint32_t iterations) {
    (void)iterations;
    __asm__ volatile(
        ".syntax unified\n\t"
        "1: subs r0, r0, #1\n\t"
        "bne 1b\n\t"
        "bx lr");
}

/* SysTick free-running over its full 24 bits at the processor clock, interrupt on wrap (counts wraps). */
static inline void tvmq_systick_start(void) {
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 7u;
}

#endif
