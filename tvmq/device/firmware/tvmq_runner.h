/* The device side of the tvmq protocol for one model, shared by the bare-metal QEMU firmware and the Zephyr app.
 *
 * Why one runner: the frames, the inference call and the step accounting must be the same code on every target,
 * so a number from a board means what the same number from QEMU means. A port (protocol_main.c for bare metal,
 * zephyr_project/src/main.c for Zephyr) supplies the byte output and the timer behind tvmq_prof_mark, and feeds
 * received bytes to tvmq_runner_feed.
 *
 * Configuration (tvmq_runner_config.h, generated per model by tvmq.device or by the Zephyr CMakeLists.txt):
 * TVMQ_RUN, TVMQ_QUANTIZE_INPUT, TVMQ_IN_BYTES, TVMQ_OUT_BYTES, TVMQ_NUM_STEPS, TVMQ_MODEL_NAME, TVMQ_STEP_MARKS.
 */
#ifndef TVMQ_RUNNER_H
#define TVMQ_RUNNER_H

#include <stdint.h>

/* Provided by the port. */
void tvmq_port_putc(uint8_t c);
void tvmq_port_marks_reset(void);
uint32_t tvmq_port_mark_count(void);
uint32_t tvmq_port_marks_dropped(void);
uint32_t tvmq_port_mark_id(uint32_t i);
/* Timer counts from mark i to mark i + 1, the marks' own cost included (the runner removes it). */
int64_t tvmq_port_mark_interval(uint32_t i);
/* 16 x the mean count of an empty interval (two back-to-back marks), over 16 pairs. In the port because it must
 * call the mark as model.c and the semihosting harness do, and may need to vary the timer phase (QEMU). */
int64_t tvmq_port_calibrate(void);
/* After calibration: 0 when the timer works, else a message (reported as an ERROR frame to every HELLO). */
const char *tvmq_port_timer_check(int64_t overhead_x16);
uint8_t tvmq_port_timer_kind(void);
uint32_t tvmq_port_clock_hz(void);
const char *tvmq_port_board(void);
const char *tvmq_port_firmware(void);

/* Calibrates the marks (tvmq_port_calibrate) and runs the port's timer check; call once before feeding. */
void tvmq_runner_init(void);
/* One received byte; a complete frame is answered (and an inference run) before this returns. */
void tvmq_runner_feed(uint8_t c);

/* The mark hook model.c calls through TVMQ_STEP_BEGIN/END (tvmq_profile.h); defined by the port. */
void tvmq_prof_mark(uint32_t id);

#endif
