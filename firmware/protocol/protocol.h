/* Framed serial protocol between host and firmware (see firmware/README.md).
 *
 * frame := 0xA5 0x5A len:u16 cmd:u8 seq:u8 payload[len] crc:u32      (little endian)
 * crc   := CRC-32 (IEEE 802.3, as zlib) over len, cmd, seq and payload
 * Every request gets exactly one reply: cmd|0x80 with a payload, or HW_ERR with
 * payload [code:u8][request cmd:u8][message...]. */
#ifndef HWNAS_PROTOCOL_H
#define HWNAS_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define HW_SOF0 0xA5u
#define HW_SOF1 0x5Au
#define HW_MAX_PAYLOAD 4096u
#define HW_PROTOCOL_VERSION 1u

enum hw_cmd {
    HW_HELLO = 0x01,
    HW_LOAD_BEGIN = 0x02,
    HW_LOAD_CHUNK = 0x03,
    HW_LOAD_END = 0x04,
    HW_RUN = 0x05,
    HW_SET_INPUT = 0x06,
    HW_INVOKE = 0x07,
    HW_MEM = 0x08,
    HW_RESET = 0x09,
    HW_BOOT = 0x7E, /* unsolicited, sent once at start-up: the host notices a reset */
    HW_ERR = 0x7F,
    HW_REPLY = 0x80,
};

enum hw_err {
    HW_E_CRC = 1,
    HW_E_UNKNOWN_CMD = 2,
    HW_E_BAD_LENGTH = 3,
    HW_E_TOO_BIG = 4,
    HW_E_BAD_BLOB = 5,
    HW_E_NO_MODEL = 6,
    HW_E_SEQUENCE = 7,
    HW_E_UNSUPPORTED = 8,
    HW_E_ARENA = 9,
};

uint32_t hw_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* Feed received bytes; returns 1 when a whole frame (good or bad CRC) is ready. */
typedef struct {
    uint8_t buf[HW_MAX_PAYLOAD + 10];
    uint32_t pos;
    uint32_t need;
} hw_parser_t;

typedef struct {
    uint8_t cmd, seq;
    uint16_t len;
    const uint8_t *payload;
    int crc_ok;
} hw_frame_t;

void hw_parser_reset(hw_parser_t *p);
int hw_parser_feed(hw_parser_t *p, uint8_t byte, hw_frame_t *out);

/* Encode a frame into out (needs len + 10 bytes); returns its size. */
size_t hw_frame_encode(uint8_t *out, uint8_t cmd, uint8_t seq, const uint8_t *payload, uint16_t len);

#endif
