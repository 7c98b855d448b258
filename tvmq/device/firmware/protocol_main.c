/* tvmq protocol firmware for QEMU's mps2 boards: the tvmq device protocol on UART0, SysTick marks for timing.
 *
 * The second firmware mode next to the semihosting harness (harness.c): the same startup code, linker script and
 * SysTick marks (tvmq_systick.h), but inputs and results travel as protocol frames over the board's CMSDK APB
 * UART0, which QEMU connects to its standard input/output (-serial stdio). So the host code that talks to a
 * Zephyr board over its serial port is exercised on every QEMU run. Counts are instructions (QEMU -icount
 * shift=0: one instruction per ns, one SysTick tick = TVMQ_INSTRUCTIONS_PER_TICK instructions).
 */
#include <stdint.h>

#include "tvmq_runner_config.h"
#include "tvmq_profile.h"
#include "tvmq_protocol.h"
#include "tvmq_runner.h"
#include "tvmq_systick.h"

/* ARM CMSDK APB UART (QEMU hw/char/cmsdk-apb-uart.c). */
#define UART_REG(offset) (*(volatile uint32_t *)((uint32_t)(TVMQ_UART_BASE) + (offset)))
#define UART_DATA UART_REG(0x00u)
#define UART_STATE UART_REG(0x04u)
#define UART_CTRL UART_REG(0x08u)
#define UART_BAUDDIV UART_REG(0x10u)
#define UART_STATE_TX_FULL 1u
#define UART_STATE_RX_FULL 2u
#define UART_CTRL_TX_RX_ENABLE 3u

#define TVMQ_WRAP 0x1000000LL
#define TVMQ_RELOAD 0xFFFFFFLL
#define TVMQ_SPIN_INSTRUCTIONS 4
#define TVMQ_KNOWN_LOOP 5000u

void tvmq_port_putc(uint8_t c) {
    while (UART_STATE & UART_STATE_TX_FULL) {
    }
    UART_DATA = c;
}

void tvmq_port_marks_reset(void) {
    tvmq_marks_n = 0;
    tvmq_marks_dropped = 0;
}

uint32_t tvmq_port_mark_count(void) { return tvmq_marks_n; }
uint32_t tvmq_port_marks_dropped(void) { return tvmq_marks_dropped; }
uint32_t tvmq_port_mark_id(uint32_t i) { return tvmq_marks[i].id; }

/* Ticks since SysTick start at the recorded edge (the counter counts down; `wraps` counts 1 -> 0 reloads). */
static int64_t tvmq_edge(const tvmq_mark_t *m) {
    return m->cvr > 0u ? (int64_t)m->wraps * TVMQ_WRAP + TVMQ_RELOAD - (int64_t)m->cvr
                       : ((int64_t)m->wraps - 1) * TVMQ_WRAP + TVMQ_RELOAD;
}

int64_t tvmq_port_mark_interval(uint32_t i) {
    const tvmq_mark_t *a = &tvmq_marks[i], *b = &tvmq_marks[i + 1u];
    return (tvmq_edge(b) - tvmq_edge(a)) * (int64_t)(TVMQ_INSTRUCTIONS_PER_TICK) -
           (int64_t)b->spins * TVMQ_SPIN_INSTRUCTIONS;
}

/* Exactly 2n + 1 and 2n + 2 instructions (n >= 1): with the table below, a delay of base + k instructions whose
 * call path is the same for every k. */
__attribute__((noinline, naked)) static void tvmq_delay_even(uint32_t n) {
    (void)n;
    __asm__ volatile(
        ".syntax unified\n\t"
        "1: subs r0, r0, #1\n\t"
        "bne 1b\n\t"
        "bx lr");
}

__attribute__((noinline, naked)) static void tvmq_delay_odd(uint32_t n) {
    (void)n;
    __asm__ volatile(
        ".syntax unified\n\t"
        "nop\n\t"
        "1: subs r0, r0, #1\n\t"
        "bne 1b\n\t"
        "bx lr");
}

static void (*volatile const tvmq_delays[2])(uint32_t) = {tvmq_delay_even, tvmq_delay_odd};

/* The empty interval exactly as the semihosting harness measures it (two marks called back to back from the
 * mark's own translation unit), so both firmwares remove the same overhead. A mark sees the SysTick edge within
 * one 4-instruction spin iteration, so one empty interval reads as a multiple of 4; delaying pair i by i mod 4
 * instructions makes the 16 pairs sample the four phases equally (whatever the loop's own length), and their
 * mean is the overhead without that quantization. */
int64_t tvmq_port_calibrate(void) {
    int64_t sum = 0;
    for (uint32_t i = 0; i < 16u; i++) {
        tvmq_delays[i & 1u]((i >> 1 & 1u) + 1u);
        tvmq_port_marks_reset();
        tvmq_prof_mark(TVMQ_MARK_CAL);
        tvmq_prof_mark(TVMQ_MARK_CAL);
        sum += tvmq_port_mark_interval(0);
    }
    return sum;
}

/* A loop of exactly 2 x TVMQ_KNOWN_LOOP instructions must measure as such: QEMU runs with -icount shift=0 and the
 * board's clock is what the host's board table says (the same check as tvmq/device/timing.py). */
const char *tvmq_port_timer_check(int64_t overhead_x16) {
    tvmq_port_marks_reset();
    tvmq_prof_mark(TVMQ_MARK_CAL);
    tvmq_spin_exact(TVMQ_KNOWN_LOOP);
    tvmq_prof_mark(TVMQ_MARK_CAL);
    const int64_t expected_x16 = 16 * 2 * (int64_t)TVMQ_KNOWN_LOOP;
    const int64_t measured_x16 = 16 * tvmq_port_mark_interval(0) - overhead_x16;
    const int64_t slack_x16 = 16 * (16 + (2 * (int64_t)TVMQ_KNOWN_LOOP) / 500);
    int64_t diff = measured_x16 - expected_x16;
    if (diff < -slack_x16 || diff > slack_x16) {
        return "SysTick calibration failed: a loop of 10000 instructions measured otherwise; QEMU must run with "
               "-icount shift=0 and the board's system clock must match tvmq's board table";
    }
    return 0;
}

uint8_t tvmq_port_timer_kind(void) { return TVMQ_TIMER_QEMU_INSTRUCTIONS; }
uint32_t tvmq_port_clock_hz(void) { return TVMQ_SYSCLK_HZ; }
const char *tvmq_port_board(void) { return TVMQ_BOARD_NAME; }
const char *tvmq_port_firmware(void) { return "tvmq bare-metal (QEMU, SysTick instruction counts)"; }

int main(void) {
    UART_BAUDDIV = 16u; /* the smallest divider QEMU accepts; the emulated line has no real rate */
    UART_CTRL = UART_CTRL_TX_RX_ENABLE;
    tvmq_systick_start();
    tvmq_runner_init();
    for (;;) {
        if (UART_STATE & UART_STATE_RX_FULL) {
            tvmq_runner_feed((uint8_t)UART_DATA);
        }
    }
}
