#include "protocol.h"

uint32_t hw_crc32(uint32_t crc, const uint8_t *data, size_t len) {
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    crc = ~crc;
    for (size_t i = 0; i < len; i++) crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

void hw_parser_reset(hw_parser_t *p) {
    p->pos = 0;
    p->need = 0;
}

/* States by position: 0 waits for SOF0, 1 for SOF1, then header (len, cmd, seq), payload, crc.
 * Anything that does not fit is dropped and the parser hunts for the next SOF (resync). */
int hw_parser_feed(hw_parser_t *p, uint8_t byte, hw_frame_t *out) {
    if (p->pos == 0) {
        if (byte == HW_SOF0) p->buf[p->pos++] = byte;
        return 0;
    }
    if (p->pos == 1) {
        if (byte == HW_SOF1) {
            p->buf[p->pos++] = byte;
        } else {
            p->pos = (byte == HW_SOF0) ? 1 : 0;
        }
        return 0;
    }
    p->buf[p->pos++] = byte;
    if (p->pos == 4) {
        uint32_t len = (uint32_t)p->buf[2] | ((uint32_t)p->buf[3] << 8);
        if (len > HW_MAX_PAYLOAD) { /* cannot be a frame of ours: resync */
            hw_parser_reset(p);
            return 0;
        }
        p->need = 2 + 2 + 2 + len + 4;
        return 0;
    }
    if (p->pos < 6 || p->pos < p->need) return 0;
    uint16_t len = (uint16_t)(p->buf[2] | (p->buf[3] << 8));
    const uint8_t *crc_at = p->buf + 6 + len;
    uint32_t got = (uint32_t)crc_at[0] | ((uint32_t)crc_at[1] << 8) | ((uint32_t)crc_at[2] << 16) |
                   ((uint32_t)crc_at[3] << 24);
    out->len = len;
    out->cmd = p->buf[4];
    out->seq = p->buf[5];
    out->payload = p->buf + 6;
    out->crc_ok = hw_crc32(0, p->buf + 2, 4u + len) == got;
    p->pos = 0;
    p->need = 0;
    return 1;
}

size_t hw_frame_encode(uint8_t *out, uint8_t cmd, uint8_t seq, const uint8_t *payload, uint16_t len) {
    out[0] = HW_SOF0;
    out[1] = HW_SOF1;
    out[2] = (uint8_t)(len & 0xFFu);
    out[3] = (uint8_t)(len >> 8);
    out[4] = cmd;
    out[5] = seq;
    for (uint16_t i = 0; i < len; i++) out[6 + i] = payload[i];
    uint32_t crc = hw_crc32(0, out + 2, 4u + len);
    for (int i = 0; i < 4; i++) out[6 + len + i] = (uint8_t)(crc >> (8 * i));
    return 10u + len;
}
