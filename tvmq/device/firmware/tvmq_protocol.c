/* tvmq device protocol v1: CRC-32, frame writer and streaming reader (layout in tvmq_protocol.h).
 *
 * Plain C99 without libc calls, so the same file builds for the bare-metal firmware, the Zephyr application and a
 * host test program that checks it against the Python implementation.
 */
#include "tvmq_protocol.h"

enum { RX_HUNT = 0, RX_BODY = 1, RX_SKIP = 2 };

static const char tvmq_hex[] = "0123456789abcdef";

uint32_t tvmq_crc32(uint32_t crc, const void *data, uint32_t len) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t c = ~crc;
    for (uint32_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
        }
    }
    return ~c;
}

static void tvmq_put_hex(tvmq_writer_t *w, uint8_t b) {
    w->putc((uint8_t)tvmq_hex[b >> 4]);
    w->putc((uint8_t)tvmq_hex[b & 0xFu]);
}

void tvmq_frame_bytes(tvmq_writer_t *w, const void *data, uint32_t len) {
    const uint8_t *p = (const uint8_t *)data;
    w->crc = tvmq_crc32(w->crc, p, len);
    for (uint32_t i = 0; i < len; i++) {
        tvmq_put_hex(w, p[i]);
    }
}

void tvmq_frame_u8(tvmq_writer_t *w, uint8_t v) { tvmq_frame_bytes(w, &v, 1); }

void tvmq_frame_u16(tvmq_writer_t *w, uint16_t v) {
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    tvmq_frame_bytes(w, b, 2);
}

void tvmq_frame_u32(tvmq_writer_t *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    tvmq_frame_bytes(w, b, 4);
}

void tvmq_frame_i64(tvmq_writer_t *w, int64_t v) {
    uint64_t u = (uint64_t)v;
    tvmq_frame_u32(w, (uint32_t)u);
    tvmq_frame_u32(w, (uint32_t)(u >> 32));
}

static uint32_t tvmq_strlen255(const char *s) {
    uint32_t n = 0;
    while (s[n] != '\0' && n < 255u) {
        n++;
    }
    return n;
}

uint32_t tvmq_str_field_bytes(const char *s) { return 1u + tvmq_strlen255(s); }

void tvmq_frame_str(tvmq_writer_t *w, const char *s) {
    uint32_t n = tvmq_strlen255(s);
    tvmq_frame_u8(w, (uint8_t)n);
    tvmq_frame_bytes(w, s, n);
}

void tvmq_frame_begin(tvmq_writer_t *w, uint8_t type, uint16_t seq, uint32_t length) {
    const char *m = TVMQ_PROTO_MARKER;
    for (uint32_t i = 0; i < TVMQ_PROTO_MARKER_LEN; i++) {
        w->putc((uint8_t)m[i]);
    }
    w->crc = 0;
    tvmq_frame_u8(w, (uint8_t)TVMQ_PROTO_VERSION);
    tvmq_frame_u8(w, type);
    tvmq_frame_u16(w, seq);
    tvmq_frame_u32(w, length);
}

void tvmq_frame_end(tvmq_writer_t *w) {
    uint32_t crc = w->crc;
    uint8_t b[4] = {(uint8_t)crc, (uint8_t)(crc >> 8), (uint8_t)(crc >> 16), (uint8_t)(crc >> 24)};
    for (int i = 0; i < 4; i++) {
        tvmq_put_hex(w, b[i]);
    }
    w->putc((uint8_t)'\n');
}

void tvmq_send_error(tvmq_putc_fn putc, uint16_t seq, uint16_t code, const char *message) {
    uint32_t n = 0;
    while (message[n] != '\0' && n < 1024u) {
        n++;
    }
    tvmq_writer_t w = {putc, 0};
    tvmq_frame_begin(&w, TVMQ_FRAME_ERROR, seq, 4u + n);
    tvmq_frame_u16(&w, code);
    tvmq_frame_u16(&w, (uint16_t)n);
    tvmq_frame_bytes(&w, message, n);
    tvmq_frame_end(&w);
}

const char *tvmq_error_text(uint16_t code) {
    switch (code) {
    case TVMQ_ERR_CHECKSUM: return "frame checksum (CRC-32) mismatch";
    case TVMQ_ERR_VERSION: return "unsupported protocol version";
    case TVMQ_ERR_MALFORMED: return "malformed frame (not hex, or longer than its length field)";
    case TVMQ_ERR_TRUNCATED: return "truncated frame (the line ended early)";
    case TVMQ_ERR_TOO_LONG: return "payload larger than the device's buffer";
    case TVMQ_ERR_UNKNOWN_TYPE: return "unknown frame type";
    case TVMQ_ERR_BAD_PAYLOAD: return "bad payload size or input kind";
    case TVMQ_ERR_MODEL: return "the model's run function returned non-zero";
    case TVMQ_ERR_TIMER: return "the timer failed its self-test";
    case TVMQ_ERR_MARKS: return "more step marks than the firmware holds";
    default: return "unknown error";
    }
}

void tvmq_reader_init(tvmq_reader_t *r, uint8_t *buf, uint32_t cap) {
    r->buf = buf;
    r->cap = cap;
    r->state = RX_HUNT;
    r->matched = 0;
    r->high = -1;
    r->pos = 0;
    r->crc = 0;
    r->version = r->type = 0;
    r->seq = 0;
    r->length = 0;
    r->error = 0;
}

static int tvmq_nibble(uint8_t c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Enter SKIP: the error is reported when its line ends, so the reply never lands inside a half-sent line. */
static tvmq_rx_event_t tvmq_reader_fail(tvmq_reader_t *r, uint16_t code, uint8_t c) {
    r->error = code;
    if (r->pos < TVMQ_PROTO_HEADER_BYTES) {
        r->seq = 0;
    }
    if (c == '\n') {
        r->state = RX_HUNT;
        r->matched = 0;
        return TVMQ_RX_ERROR;
    }
    r->state = RX_SKIP;
    return TVMQ_RX_NONE;
}

static uint16_t tvmq_reader_header(tvmq_reader_t *r) {
    const uint8_t *h = r->header;
    r->version = h[0];
    r->type = h[1];
    r->seq = (uint16_t)(h[2] | (h[3] << 8));
    r->length = (uint32_t)h[4] | ((uint32_t)h[5] << 8) | ((uint32_t)h[6] << 16) | ((uint32_t)h[7] << 24);
    if (r->version != TVMQ_PROTO_VERSION) {
        return TVMQ_ERR_VERSION;
    }
    if (r->length > r->cap) {
        return TVMQ_ERR_TOO_LONG;
    }
    return 0;
}

static tvmq_rx_event_t tvmq_reader_end_of_line(tvmq_reader_t *r) {
    const uint32_t total = TVMQ_PROTO_HEADER_BYTES + r->length + TVMQ_PROTO_CRC_BYTES;
    r->state = RX_HUNT;
    r->matched = 0;
    if (r->high >= 0 || r->pos < TVMQ_PROTO_HEADER_BYTES || r->pos < total) {
        r->error = r->pos == 0 && r->high < 0 ? TVMQ_ERR_MALFORMED : TVMQ_ERR_TRUNCATED;
        if (r->pos < TVMQ_PROTO_HEADER_BYTES) {
            r->seq = 0;
        }
        return TVMQ_RX_ERROR;
    }
    const uint8_t *b = r->crc_bytes;
    uint32_t sent = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    if (sent != r->crc) {
        r->error = TVMQ_ERR_CHECKSUM;
        return TVMQ_RX_ERROR;
    }
    return TVMQ_RX_FRAME;
}

static tvmq_rx_event_t tvmq_reader_byte(tvmq_reader_t *r, uint8_t byte, uint8_t c) {
    const uint32_t payload_end = TVMQ_PROTO_HEADER_BYTES + r->length;
    if (r->pos < TVMQ_PROTO_HEADER_BYTES) {
        r->header[r->pos++] = byte;
        r->crc = tvmq_crc32(r->crc, &byte, 1);
        if (r->pos == TVMQ_PROTO_HEADER_BYTES) {
            uint16_t code = tvmq_reader_header(r);
            if (code != 0) {
                return tvmq_reader_fail(r, code, c);
            }
        }
    } else if (r->pos < payload_end) {
        r->buf[r->pos - TVMQ_PROTO_HEADER_BYTES] = byte;
        r->crc = tvmq_crc32(r->crc, &byte, 1);
        r->pos++;
    } else if (r->pos < payload_end + TVMQ_PROTO_CRC_BYTES) {
        r->crc_bytes[r->pos - payload_end] = byte;
        r->pos++;
    } else {
        return tvmq_reader_fail(r, TVMQ_ERR_MALFORMED, c);
    }
    return TVMQ_RX_NONE;
}

tvmq_rx_event_t tvmq_reader_feed(tvmq_reader_t *r, uint8_t c) {
    if (r->state == RX_SKIP) {
        if (c == '\n') {
            r->state = RX_HUNT;
            r->matched = 0;
            return TVMQ_RX_ERROR;
        }
        return TVMQ_RX_NONE;
    }
    if (r->state == RX_HUNT) {
        const char *m = TVMQ_PROTO_MARKER;
        if (c == (uint8_t)m[r->matched]) {
            r->matched++;
        } else {
            r->matched = c == (uint8_t)m[0] ? 1u : 0u;
        }
        if (r->matched == TVMQ_PROTO_MARKER_LEN) {
            r->state = RX_BODY;
            r->high = -1;
            r->pos = 0;
            r->crc = 0;
            r->length = 0;
            r->seq = 0;
            r->error = 0;
        }
        return TVMQ_RX_NONE;
    }
    /* RX_BODY */
    if (c == '\r') {
        return TVMQ_RX_NONE;
    }
    if (c == '\n') {
        return tvmq_reader_end_of_line(r);
    }
    int v = tvmq_nibble(c);
    if (v < 0) {
        return tvmq_reader_fail(r, TVMQ_ERR_MALFORMED, c);
    }
    if (r->high < 0) {
        r->high = (int16_t)v;
        return TVMQ_RX_NONE;
    }
    uint8_t byte = (uint8_t)((r->high << 4) | v);
    r->high = -1;
    return tvmq_reader_byte(r, byte, c);
}
