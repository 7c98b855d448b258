/* tvmq device protocol, version 1: framed lines over a console UART, spoken by every tvmq firmware.
 *
 * Why lines of hex: a console UART also carries boot banners and log lines, may translate "\n" into "\r\n" and is
 * read by terminal programs; printable frames that start with a marker survive all of that, and a reader can skip
 * whatever is not a frame. The host side is tvmq/device/protocol.py; both follow this layout:
 *
 *   line    = "@tvmq:" HEX(frame) "\n"          (hex digits in either case; "\r" before "\n" is ignored)
 *   frame   = version u8 | type u8 | seq u16 | length u32 | payload[length] | crc32 u32
 *
 * Integers are little-endian. crc32 is CRC-32/ISO-HDLC (zlib's crc32) over version..payload. A request carries a
 * host-chosen seq that the reply echoes. Payloads by type:
 *
 *   HELLO  (host -> device) empty; the device answers INFO (or ERROR when its timer failed its self-test)
 *   INFO   (device -> host) u32 input_bytes, u32 output_bytes, u16 num_steps, u8 timer, u8 flags, u32 clock_hz,
 *                           u32 max_payload, u32 mark_overhead_x16, then three strings (u8 length + bytes):
 *                           model name, board, firmware
 *   INFER  (host -> device) u8 kind (0: int8 codes, 1: float32 values quantized on the device), u8 reserved[3],
 *                           data (input_bytes codes or 4 * input_bytes bytes of float32)
 *   RESULT (device -> host) u32 status, i64 total, u16 num_steps, u16 reserved, i64 steps[num_steps],
 *                           u32 output_bytes, int8 output[output_bytes]
 *   ERROR  (device -> host) u16 code, u16 length, message[length] (UTF-8)
 *
 * total and steps are counts of the timer's unit (timer 0: instructions on QEMU -icount, from SysTick marks;
 * 1: cycles of the DWT counter through Zephyr's timing API; 2: cycles of Zephyr's system timer), with the marks'
 * own cost removed; a step that left no marks is INT64_MIN.
 */
#ifndef TVMQ_PROTOCOL_H
#define TVMQ_PROTOCOL_H

#include <stdint.h>

#define TVMQ_PROTO_VERSION 1u
#define TVMQ_PROTO_MARKER "@tvmq:"
#define TVMQ_PROTO_MARKER_LEN 6u
#define TVMQ_PROTO_HEADER_BYTES 8u
#define TVMQ_PROTO_CRC_BYTES 4u
#define TVMQ_PROTO_NOT_MEASURED INT64_MIN

enum tvmq_frame_type {
    TVMQ_FRAME_HELLO = 1,
    TVMQ_FRAME_INFO = 2,
    TVMQ_FRAME_INFER = 3,
    TVMQ_FRAME_RESULT = 4,
    TVMQ_FRAME_ERROR = 5,
};

enum tvmq_error_code {
    TVMQ_ERR_CHECKSUM = 1,     /* the frame's CRC-32 does not match its bytes */
    TVMQ_ERR_VERSION = 2,      /* the frame's protocol version is not this firmware's */
    TVMQ_ERR_MALFORMED = 3,    /* not hex, or longer than its length field */
    TVMQ_ERR_TRUNCATED = 4,    /* the line ended before the frame did */
    TVMQ_ERR_TOO_LONG = 5,     /* the payload exceeds the device's buffer (INFO's max_payload) */
    TVMQ_ERR_UNKNOWN_TYPE = 6, /* a frame type the device does not handle */
    TVMQ_ERR_BAD_PAYLOAD = 7,  /* wrong payload size or input kind */
    TVMQ_ERR_MODEL = 8,        /* the model's run function returned non-zero */
    TVMQ_ERR_TIMER = 9,        /* the timer failed its self-test at boot */
    TVMQ_ERR_MARKS = 10,       /* the model made more step marks than the firmware can hold */
};

enum tvmq_timer_kind {
    TVMQ_TIMER_QEMU_INSTRUCTIONS = 0,
    TVMQ_TIMER_CYCLES = 1,
    TVMQ_TIMER_KERNEL_CYCLES = 2,
};

#define TVMQ_INFO_FLAG_STEP_MARKS 1u
#define TVMQ_INFO_FLAG_FLOAT_INPUT 2u

#define TVMQ_INPUT_INT8 0u
#define TVMQ_INPUT_FLOAT32 1u

/* zlib-compatible CRC-32: start with 0, chain calls over consecutive pieces. */
uint32_t tvmq_crc32(uint32_t crc, const void *data, uint32_t len);

/* Frame writer: begin (header), any number of payload pieces totalling `length` bytes, end (CRC and newline). */
typedef void (*tvmq_putc_fn)(uint8_t c);
typedef struct {
    tvmq_putc_fn putc;
    uint32_t crc;
} tvmq_writer_t;

void tvmq_frame_begin(tvmq_writer_t *w, uint8_t type, uint16_t seq, uint32_t length);
void tvmq_frame_bytes(tvmq_writer_t *w, const void *data, uint32_t len);
void tvmq_frame_u8(tvmq_writer_t *w, uint8_t v);
void tvmq_frame_u16(tvmq_writer_t *w, uint16_t v);
void tvmq_frame_u32(tvmq_writer_t *w, uint32_t v);
void tvmq_frame_i64(tvmq_writer_t *w, int64_t v);
void tvmq_frame_str(tvmq_writer_t *w, const char *s); /* u8 length + bytes (at most 255) */
void tvmq_frame_end(tvmq_writer_t *w);
uint32_t tvmq_str_field_bytes(const char *s);          /* what tvmq_frame_str adds to a payload */
void tvmq_send_error(tvmq_putc_fn putc, uint16_t seq, uint16_t code, const char *message);

/* Streaming frame reader: feed every received byte; the payload is decoded straight into `buf`, so the device
 * needs no line buffer. Text outside frames is skipped. */
typedef enum {
    TVMQ_RX_NONE = 0,  /* nothing complete yet */
    TVMQ_RX_FRAME = 1, /* a valid frame: type, seq, length, buf */
    TVMQ_RX_ERROR = 2, /* a bad frame ended: error, seq (0 when the header was not read) */
} tvmq_rx_event_t;

typedef struct {
    uint8_t *buf;
    uint32_t cap;
    uint8_t state;
    uint8_t matched;
    int16_t high; /* pending high nibble, or -1 */
    uint8_t header[TVMQ_PROTO_HEADER_BYTES];
    uint8_t crc_bytes[TVMQ_PROTO_CRC_BYTES];
    uint32_t pos; /* frame bytes decoded so far */
    uint32_t crc;
    uint8_t version, type;
    uint16_t seq;
    uint32_t length;
    uint16_t error;
} tvmq_reader_t;

void tvmq_reader_init(tvmq_reader_t *r, uint8_t *buf, uint32_t cap);
tvmq_rx_event_t tvmq_reader_feed(tvmq_reader_t *r, uint8_t c);
const char *tvmq_error_text(uint16_t code);

#endif
