/* tvmq protocol runner: HELLO -> INFO, INFER -> one inference -> RESULT with per-step counts, errors as frames.
 *
 * Step accounting follows tvmq/device/timing.py: the count between two consecutive marks is the port's raw
 * interval minus the mean cost of an empty interval (the port's calibration at boot); a step's count is the sum of
 * the intervals from each BEGIN(i) (mark id 2i) to the next END(i) (2i + 1); the inference's count runs from the
 * START mark to the END mark around the run call. Sums are kept in 1/16 units (the calibration mean is exact
 * there) and rounded once at the end.
 */
#include "tvmq_runner.h"

#include <string.h>

#include "model.h"
#include "tvmq_profile.h"
#include "tvmq_protocol.h"
#include "tvmq_runner_config.h"

/* TVMQ_STEP_MARKS: 1 when model.c is compiled with the step hooks (tvmq_profile.h force-included). */
#define TVMQ_STEP_FLAG ((TVMQ_STEP_MARKS) ? TVMQ_INFO_FLAG_STEP_MARKS : 0u)
#define TVMQ_RX_CAP (4u + 4u * (uint32_t)(TVMQ_IN_BYTES))

static uint8_t tvmq_rx_buf[TVMQ_RX_CAP] __attribute__((aligned(8)));
static int8_t tvmq_in_q[TVMQ_IN_BYTES] __attribute__((aligned(8)));
static int8_t tvmq_out_q[TVMQ_OUT_BYTES] __attribute__((aligned(8)));
static int64_t tvmq_steps[TVMQ_NUM_STEPS + 1];
static int64_t tvmq_open_at[TVMQ_NUM_STEPS + 1];
static uint8_t tvmq_is_open[TVMQ_NUM_STEPS + 1];
static tvmq_reader_t tvmq_reader;
static int64_t tvmq_overhead_x16;
static const char *tvmq_timer_problem;

void tvmq_runner_init(void) {
    tvmq_overhead_x16 = tvmq_port_calibrate();
    tvmq_timer_problem = tvmq_port_timer_check(tvmq_overhead_x16);
    tvmq_reader_init(&tvmq_reader, tvmq_rx_buf, TVMQ_RX_CAP);
}

static int64_t tvmq_round_x16(int64_t v) { return v >= 0 ? (v + 8) / 16 : -((-v + 8) / 16); }

static void tvmq_send_info(uint16_t seq) {
    const char *name = TVMQ_MODEL_NAME, *board = tvmq_port_board(), *fw = tvmq_port_firmware();
    uint32_t length = 4u + 4u + 2u + 1u + 1u + 4u + 4u + 4u + tvmq_str_field_bytes(name) +
                      tvmq_str_field_bytes(board) + tvmq_str_field_bytes(fw);
    tvmq_writer_t w = {tvmq_port_putc, 0};
    tvmq_frame_begin(&w, TVMQ_FRAME_INFO, seq, length);
    tvmq_frame_u32(&w, (uint32_t)(TVMQ_IN_BYTES));
    tvmq_frame_u32(&w, (uint32_t)(TVMQ_OUT_BYTES));
    tvmq_frame_u16(&w, (uint16_t)(TVMQ_NUM_STEPS));
    tvmq_frame_u8(&w, tvmq_port_timer_kind());
    tvmq_frame_u8(&w, (uint8_t)(TVMQ_INFO_FLAG_FLOAT_INPUT | TVMQ_STEP_FLAG));
    tvmq_frame_u32(&w, tvmq_port_clock_hz());
    tvmq_frame_u32(&w, TVMQ_RX_CAP);
    tvmq_frame_u32(&w, (uint32_t)tvmq_overhead_x16);
    tvmq_frame_str(&w, name);
    tvmq_frame_str(&w, board);
    tvmq_frame_str(&w, fw);
    tvmq_frame_end(&w);
}

/* Counts of the last run from its marks; 0 on success, else an error code. */
static uint16_t tvmq_account(int64_t *total) {
    uint32_t n = tvmq_port_mark_count();
    if (tvmq_port_marks_dropped() != 0u) {
        return TVMQ_ERR_MARKS;
    }
    for (uint32_t s = 0; s < (uint32_t)(TVMQ_NUM_STEPS); s++) {
        tvmq_steps[s] = TVMQ_PROTO_NOT_MEASURED;
        tvmq_is_open[s] = 0;
    }
    if (n < 2u || tvmq_port_mark_id(0) != TVMQ_MARK_START || tvmq_port_mark_id(n - 1u) != TVMQ_MARK_END) {
        return TVMQ_ERR_MARKS;
    }
    int64_t cumulative = 0;
    for (uint32_t pos = 0; pos < n; pos++) {
        uint32_t id = tvmq_port_mark_id(pos);
        if (id < 2u * (uint32_t)(TVMQ_NUM_STEPS)) {
            uint32_t step = id / 2u;
            if ((id & 1u) == 0u) {
                tvmq_open_at[step] = cumulative;
                tvmq_is_open[step] = 1;
            } else if (tvmq_is_open[step]) {
                int64_t spent = cumulative - tvmq_open_at[step];
                tvmq_steps[step] = tvmq_steps[step] == TVMQ_PROTO_NOT_MEASURED ? spent : tvmq_steps[step] + spent;
                tvmq_is_open[step] = 0;
            }
        }
        if (pos + 1u < n) {
            cumulative += 16 * tvmq_port_mark_interval(pos) - tvmq_overhead_x16;
        }
    }
    for (uint32_t s = 0; s < (uint32_t)(TVMQ_NUM_STEPS); s++) {
        if (tvmq_steps[s] != TVMQ_PROTO_NOT_MEASURED) {
            tvmq_steps[s] = tvmq_round_x16(tvmq_steps[s]);
        }
    }
    *total = tvmq_round_x16(cumulative);
    return 0;
}

static void tvmq_infer(uint16_t seq, uint32_t length) {
    const uint8_t kind = tvmq_rx_buf[0];
    if (kind == TVMQ_INPUT_FLOAT32 && length == 4u + 4u * (uint32_t)(TVMQ_IN_BYTES)) {
        TVMQ_QUANTIZE_INPUT((const float *)(const void *)(tvmq_rx_buf + 4), tvmq_in_q);
    } else if (kind == TVMQ_INPUT_INT8 && length == 4u + (uint32_t)(TVMQ_IN_BYTES)) {
        memcpy(tvmq_in_q, tvmq_rx_buf + 4, TVMQ_IN_BYTES);
    } else {
        tvmq_send_error(tvmq_port_putc, seq, TVMQ_ERR_BAD_PAYLOAD,
                        "INFER needs kind 0 with input_bytes int8 codes or kind 1 with input_bytes float32 values");
        return;
    }
    tvmq_port_marks_reset();
    tvmq_prof_mark(TVMQ_MARK_START);
    int32_t status = TVMQ_RUN(tvmq_in_q, tvmq_out_q);
    tvmq_prof_mark(TVMQ_MARK_END);
    if (status != 0) {
        tvmq_send_error(tvmq_port_putc, seq, TVMQ_ERR_MODEL, "the model's run function returned non-zero");
        return;
    }
    int64_t total = 0;
    uint16_t code = tvmq_account(&total);
    if (code != 0) {
        tvmq_send_error(tvmq_port_putc, seq, code,
                        "the run call left no complete START/END marks, or more step marks than the firmware holds "
                        "(metadata.json's steps and model.c disagree: re-export the artifact)");
        return;
    }
    uint32_t length_out = 4u + 8u + 2u + 2u + 8u * (uint32_t)(TVMQ_NUM_STEPS) + 4u + (uint32_t)(TVMQ_OUT_BYTES);
    tvmq_writer_t w = {tvmq_port_putc, 0};
    tvmq_frame_begin(&w, TVMQ_FRAME_RESULT, seq, length_out);
    tvmq_frame_u32(&w, (uint32_t)status);
    tvmq_frame_i64(&w, total);
    tvmq_frame_u16(&w, (uint16_t)(TVMQ_NUM_STEPS));
    tvmq_frame_u16(&w, 0);
    for (uint32_t s = 0; s < (uint32_t)(TVMQ_NUM_STEPS); s++) {
        tvmq_frame_i64(&w, tvmq_steps[s]);
    }
    tvmq_frame_u32(&w, (uint32_t)(TVMQ_OUT_BYTES));
    tvmq_frame_bytes(&w, tvmq_out_q, TVMQ_OUT_BYTES);
    tvmq_frame_end(&w);
}

void tvmq_runner_feed(uint8_t c) {
    tvmq_rx_event_t event = tvmq_reader_feed(&tvmq_reader, c);
    if (event == TVMQ_RX_ERROR) {
        tvmq_send_error(tvmq_port_putc, tvmq_reader.seq, tvmq_reader.error, tvmq_error_text(tvmq_reader.error));
        return;
    }
    if (event != TVMQ_RX_FRAME) {
        return;
    }
    const uint16_t seq = tvmq_reader.seq;
    switch (tvmq_reader.type) {
    case TVMQ_FRAME_HELLO:
        if (tvmq_timer_problem != 0) {
            tvmq_send_error(tvmq_port_putc, seq, TVMQ_ERR_TIMER, tvmq_timer_problem);
        } else {
            tvmq_send_info(seq);
        }
        break;
    case TVMQ_FRAME_INFER:
        if (tvmq_timer_problem != 0) {
            tvmq_send_error(tvmq_port_putc, seq, TVMQ_ERR_TIMER, tvmq_timer_problem);
        } else {
            tvmq_infer(seq, tvmq_reader.length);
        }
        break;
    default:
        tvmq_send_error(tvmq_port_putc, seq, TVMQ_ERR_UNKNOWN_TYPE, "unknown frame type (the device answers "
                                                                    "HELLO and INFER)");
        break;
    }
}
