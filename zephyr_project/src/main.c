/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * tvmq model runner for Zephyr: the Zephyr port of tvmq's protocol runner (tvmq/device/firmware/tvmq_runner.c).
 *
 * The runner answers HELLO with INFO and runs one inference per INFER frame; this file gives it bytes from the
 * console UART (console_getchar, interrupt driven), sends its frames (console_putchar) and implements the step
 * marks: with CONFIG_TVMQ_TIMING_API each mark reads timing_counter_get() (the DWT cycle counter); intervals come
 * from timing_cycles_get(), the rate from timing_freq_get(), and the boot self-test checks timing_cycles_to_ns()
 * against a busy wait. Otherwise the kernel's cycle counter (k_cycle_get_32) at sys_clock_hw_cycles_per_sec().
 * The bare-metal QEMU firmware (protocol_main.c) is the other port of the same runner, so the host reads both with
 * the same code.
 */
#include <zephyr/kernel.h>
#include <zephyr/kernel_version.h>
#include <zephyr/console/console.h>
#include <zephyr/sys/printk.h>
#include <zephyr/sys_clock.h>
#if defined(CONFIG_TVMQ_TIMING_API)
#include <zephyr/timing/timing.h>
#endif

#include "tvmq_runner_config.h"
#include "tvmq_profile.h"
#include "tvmq_protocol.h"
#include "tvmq_runner.h"

#if defined(CONFIG_BOARD_TARGET)
#define TVMQ_BOARD_NAME CONFIG_BOARD_TARGET
#else
#define TVMQ_BOARD_NAME CONFIG_BOARD
#endif

struct tvmq_zmark {
	uint32_t id;
	uint64_t t;
};

static struct tvmq_zmark tvmq_zmarks[TVMQ_MARK_CAPACITY];
static uint32_t tvmq_zmarks_n;
static uint32_t tvmq_zmarks_dropped;
static bool tvmq_use_timing_api;
static char tvmq_firmware[48];

static inline uint64_t tvmq_now(void)
{
#if defined(CONFIG_TVMQ_TIMING_API)
	if (tvmq_use_timing_api) {
		return (uint64_t)timing_counter_get();
	}
#endif
	return (uint64_t)k_cycle_get_32();
}

/* One fixed path, out of line: its cost is the constant the runner's calibration removes. */
__attribute__((noinline)) void tvmq_prof_mark(uint32_t id)
{
	uint64_t t = tvmq_now();
	uint32_t n = tvmq_zmarks_n;

	if (n < TVMQ_MARK_CAPACITY) {
		tvmq_zmarks[n].id = id;
		tvmq_zmarks[n].t = t;
		tvmq_zmarks_n = n + 1;
	} else {
		tvmq_zmarks_dropped++;
	}
}

void tvmq_port_putc(uint8_t c)
{
	(void)console_putchar((char)c);
}

void tvmq_port_marks_reset(void)
{
	tvmq_zmarks_n = 0;
	tvmq_zmarks_dropped = 0;
}

uint32_t tvmq_port_mark_count(void)
{
	return tvmq_zmarks_n;
}

uint32_t tvmq_port_marks_dropped(void)
{
	return tvmq_zmarks_dropped;
}

uint32_t tvmq_port_mark_id(uint32_t i)
{
	return tvmq_zmarks[i].id;
}

int64_t tvmq_port_mark_interval(uint32_t i)
{
#if defined(CONFIG_TVMQ_TIMING_API)
	if (tvmq_use_timing_api) {
		timing_t start = (timing_t)tvmq_zmarks[i].t;
		timing_t end = (timing_t)tvmq_zmarks[i + 1].t;

		return (int64_t)timing_cycles_get(&start, &end);
	}
#endif
	return (int64_t)(uint32_t)((uint32_t)tvmq_zmarks[i + 1].t - (uint32_t)tvmq_zmarks[i].t);
}

/* 16 x the mean cost of two back-to-back marks: cycle counters need no phase dithering (QEMU's SysTick marks do,
 * see protocol_main.c). */
int64_t tvmq_port_calibrate(void)
{
	int64_t sum = 0;

	for (int i = 0; i < 16; i++) {
		tvmq_port_marks_reset();
		tvmq_prof_mark(TVMQ_MARK_CAL);
		tvmq_prof_mark(TVMQ_MARK_CAL);
		sum += tvmq_port_mark_interval(0);
	}
	return sum;
}

uint32_t tvmq_port_clock_hz(void)
{
#if defined(CONFIG_TVMQ_TIMING_API)
	if (tvmq_use_timing_api) {
		return (uint32_t)timing_freq_get();
	}
#endif
	return (uint32_t)sys_clock_hw_cycles_per_sec();
}

uint8_t tvmq_port_timer_kind(void)
{
	return tvmq_use_timing_api ? TVMQ_TIMER_CYCLES : TVMQ_TIMER_KERNEL_CYCLES;
}

/* A 2 ms busy wait (timed by the kernel's own clock) must measure about 2 ms: the counter runs, and INFO's
 * clock_hz converts it (with the timing API, timing_cycles_to_ns does the conversion). */
const char *tvmq_port_timer_check(int64_t overhead_x16)
{
	tvmq_port_marks_reset();
	tvmq_prof_mark(TVMQ_MARK_CAL);
	k_busy_wait(2000);
	tvmq_prof_mark(TVMQ_MARK_CAL);
	const int64_t cycles = tvmq_port_mark_interval(0) - overhead_x16 / 16;
	uint64_t ns = (uint64_t)cycles * 1000000000ull / tvmq_port_clock_hz();

#if defined(CONFIG_TVMQ_TIMING_API)
	if (tvmq_use_timing_api) {
		ns = timing_cycles_to_ns((uint64_t)cycles);
	}
#endif
	if (overhead_x16 < 0 || cycles <= 0 || ns < 1000000u || ns > 4000000u) {
		return "the cycle counter does not follow the kernel clock (a 2 ms busy wait measured outside "
		       "1..4 ms); rebuild with CONFIG_TVMQ_TIMING_API=n to count kernel cycles";
	}
	return 0;
}

const char *tvmq_port_board(void)
{
	return TVMQ_BOARD_NAME;
}

const char *tvmq_port_firmware(void)
{
	return tvmq_firmware;
}

/* The timing API on a core whose DWT does not count (QEMU, some debug setups) reads 0: fall back to kernel
 * cycles rather than report zeros. */
static void tvmq_timer_init(void)
{
#if defined(CONFIG_TVMQ_TIMING_API)
	timing_init();
	timing_start();
	timing_t start = timing_counter_get();

	k_busy_wait(1000);
	timing_t end = timing_counter_get();

	tvmq_use_timing_api = timing_cycles_get(&start, &end) > 0;
#endif
}

int main(void)
{
	uint32_t version = sys_kernel_version_get();

	snprintk(tvmq_firmware, sizeof(tvmq_firmware), "tvmq Zephyr %u.%u.%u", SYS_KERNEL_VER_MAJOR(version),
		 SYS_KERNEL_VER_MINOR(version), SYS_KERNEL_VER_PATCHLEVEL(version));
	tvmq_timer_init();
	if (console_init() != 0) {
		printk("tvmq: console_init failed: the console UART needs interrupt support\n");
		return 0;
	}
	tvmq_runner_init();
	printk("tvmq: model %s ready on %s (%s cycles at %u Hz): send tvmq protocol frames\n", TVMQ_MODEL_NAME,
	       TVMQ_BOARD_NAME, tvmq_use_timing_api ? "timing API" : "kernel", tvmq_port_clock_hz());
	for (;;) {
		int c = console_getchar();

		if (c >= 0) {
			tvmq_runner_feed((uint8_t)c);
		}
	}
	return 0;
}
