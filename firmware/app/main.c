/* Profiling firmware: answers the host's framed requests (protocol/protocol.h) forever. */
#include <stddef.h>
#include <string.h>

#include "board.h"
#include "hw_model.h"
#include "protocol.h"
#ifdef HW_BUILTIN_MODEL
#include "model.h" /* exported with `hwnas export --format c` */
#endif

#ifndef HW_BLOB_CAPACITY
#define HW_BLOB_CAPACITY (1024u * 1024u)
#endif
#ifndef HW_ARENA_CAPACITY
#define HW_ARENA_CAPACITY (320u * 1024u)
#endif
#define FW_VERSION "hwnas-fw 0.11.0"
#define MAX_OPS 512

/* The blob and what it is (`held`) are not zeroed at start-up: after a reset the board still
 * holds the last blob it loaded (checked by CRC) and a LOAD_BEGIN naming it is answered "have
 * it". LOAD_END's keep flag also writes both to the board's flash slot, if it has one, so the
 * blob survives a power cycle. */
typedef struct {
    uint32_t magic, size, crc, named;
    uint8_t sha[32];
    uint32_t reserved[3];
    uint32_t check; /* CRC-32 of the fields before it */
} held_t;
_Static_assert(sizeof(held_t) == 64, "a flash slot's header is 64 bytes: two 256-bit flash words");
#define HELD_MAGIC 0x444C4548u /* "HELD" */
static uint8_t blob[HW_BLOB_CAPACITY] __attribute__((aligned(32), section(".noinit.blob")));
static held_t held __attribute__((aligned(32), section(".noinit.held")));
static uint8_t arena[HW_ARENA_CAPACITY] __attribute__((aligned(16)));
static uint8_t tx[HW_MAX_PAYLOAD + 10];
static uint8_t reply[HW_MAX_PAYLOAD];
static uint64_t layer_cycles[MAX_OPS];
static hw_parser_t parser;
static hw_model_t model;
static int model_ready;
static uint32_t load_size, load_crc, load_received;
static int loading;
/* the SHA-256 the host named the blob by (protocol 2): a LOAD_BEGIN naming the blob already
 * loaded is answered "have it" and nothing is sent again */
static uint8_t load_sha[32], model_sha[32];
static int load_named, model_named;

static void put_u16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get_u16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint32_t held_check(const held_t *h) {
    return hw_crc32(0, (const uint8_t *)h, offsetof(held_t, check));
}

static int held_valid(const held_t *h, const uint8_t *data, uint32_t capacity) {
    return h->magic == HELD_MAGIC && h->check == held_check(h) && h->size <= capacity &&
           hw_crc32(0, data, h->size) == h->crc;
}

/* The blob held before a reset: in RAM (a reset keeps it there), else in the flash slot. */
static void restore_held_blob(void) {
    if (!held_valid(&held, blob, HW_BLOB_CAPACITY)) {
        const uint8_t *slot;
        uint32_t slot_bytes = board_flash_slot(&slot);
        if (slot_bytes <= sizeof(held_t)) return;
        const held_t *kept = (const held_t *)slot;
        uint32_t room = slot_bytes - (uint32_t)sizeof(held_t);
        if (room > HW_BLOB_CAPACITY) room = HW_BLOB_CAPACITY;
        if (!held_valid(kept, slot + sizeof(held_t), room)) return;
        memcpy(blob, slot + sizeof(held_t), kept->size); /* run from RAM, as an uploaded blob */
        held = *kept;
    }
    int rc = hw_model_init(&model, blob, held.size, arena, HW_ARENA_CAPACITY);
    if (rc != HW_OK || model.header->n_ops > MAX_OPS) {
        held.magic = 0;
        return;
    }
    model_ready = 1;
    model_named = (int)held.named;
    memcpy(model_sha, held.sha, 32);
    load_size = held.size;
    load_crc = held.crc;
}

/* Blob and header into the flash slot, the header last (a write cut short leaves none valid):
 * 1 kept, 0 the board has no slot (or the blob does not fit it), 2 the flash refused. */
static uint8_t keep_in_flash(void) {
    const uint8_t *slot;
    uint32_t slot_bytes = board_flash_slot(&slot);
    uint32_t padded = (held.size + 31u) & ~31u; /* whole flash words; the buffer's capacity is one */
    if (slot_bytes < sizeof(held_t) + padded || padded > HW_BLOB_CAPACITY) return 0;
    if (board_flash_slot_erase((uint32_t)sizeof(held_t) + padded) != 0) return 2;
    if (board_flash_slot_program((uint32_t)sizeof(held_t), blob, padded) != 0) return 2;
    if (board_flash_slot_program(0, (const uint8_t *)&held, (uint32_t)sizeof(held_t)) != 0) return 2;
    const held_t *kept = (const held_t *)slot;
    return held_valid(kept, slot + sizeof(held_t), slot_bytes - (uint32_t)sizeof(held_t)) ? 1 : 2;
}

/* n_ops u16, arena bytes u32, input bytes u32, output bytes u32: what LOAD_END answers */
static uint32_t put_model_facts(uint8_t *at) {
    put_u16(at, model.header->n_ops);
    put_u32(at + 2, model.header->arena_size);
    put_u32(at + 6, hw_tensor_bytes(&model.tensors[model.header->input_tensor]));
    put_u32(at + 10, hw_tensor_bytes(&model.tensors[model.header->output_tensor]));
    return 14;
}

/* LOAD_SEGMENTS: after offset u32 and seed u32, segments, each a u32 head (kind << 30 | length)
 * followed by its data: kind 0 `length` bytes as they are, 1 nothing (the weight generator's
 * bytes from seed), 2 a 4-byte word repeated over `length` bytes, 3 nothing (protocol 5: the
 * generator's bytes as unpacked int16 weights, hw_generate_q15). The total length, or
 * UINT32_MAX where the segments do not fill the payload exactly. */
static uint32_t segment_data_bytes(uint32_t head) {
    const uint32_t kind = head >> 30;
    return kind == 0 ? head & 0x3FFFFFFFu : kind == 2 ? 4u : 0u;
}

static uint32_t segments_length(const uint8_t *at, uint32_t len) {
    uint32_t total = 0, used = 0;
    while (used < len) {
        if (len - used < 4) return UINT32_MAX;
        const uint32_t head = get_u32(at + used), n = head & 0x3FFFFFFFu, data = segment_data_bytes(head);
        if (data > len - used - 4u || n > UINT32_MAX - 1u - total) return UINT32_MAX;
        used += 4u + data;
        total += n;
    }
    return total;
}

static void apply_segments(uint32_t offset, uint32_t seed, const uint8_t *at, uint32_t len) {
    for (uint32_t used = 0; used < len;) {
        const uint32_t head = get_u32(at + used), kind = head >> 30, n = head & 0x3FFFFFFFu;
        const uint8_t *data = at + used + 4u;
        if (kind == 0)
            memcpy(blob + offset, data, n);
        else if (kind == 1)
            hw_generate_bytes(blob + offset, offset, n, seed);
        else if (kind == 3)
            hw_generate_q15(blob + offset, offset, n, seed);
        else
            for (uint32_t i = 0; i < n; i++) blob[offset + i] = data[i & 3u];
        used += 4u + segment_data_bytes(head);
        offset += n;
    }
}

static void send(uint8_t cmd, uint8_t seq, const uint8_t *payload, uint16_t len) {
    board_uart_write(tx, hw_frame_encode(tx, cmd, seq, payload, len));
}

static void send_err(uint8_t seq, uint8_t code, uint8_t cmd, const char *msg) {
    uint16_t n = 2;
    reply[0] = code;
    reply[1] = cmd;
    while (*msg && n < 200) reply[n++] = (uint8_t)*msg++;
    send(HW_ERR, seq, reply, n);
}

static uint16_t put_str(uint16_t n, const char *s) {
    while (*s) reply[n++] = (uint8_t)*s++;
    reply[n++] = 0;
    return n;
}

/* RUN and INVOKE may name the kernel set in an optional last byte (HW_KERNELS_*; default the
 * optimised ones), so one firmware measures both side by side. */
static int select_kernels(const hw_frame_t *f, uint16_t at) {
    int kernels = f->len > at ? f->payload[at] : HW_KERNELS_OPTIMISED;
    if (hw_model_set_kernels(&model, kernels) != HW_OK) {
        send_err(f->seq, HW_E_UNSUPPORTED, f->cmd, "unknown kernel set (0 optimised, 1 portable)");
        return 0;
    }
    return 1;
}

static void handle(const hw_frame_t *f) {
    const uint8_t *p = f->payload;
    const uint8_t ok = (uint8_t)(f->cmd | HW_REPLY);
    switch (f->cmd) {
        case HW_HELLO: {
            const board_info_t *b = board_get_info();
            put_u16(reply, HW_PROTOCOL_VERSION);
            put_u16(reply + 2, HW_MAX_PAYLOAD);
            put_u32(reply + 4, b->clock_hz);
            put_u32(reply + 8, b->sram_bytes);
            put_u32(reply + 12, b->flash_bytes);
            put_u32(reply + 16, HW_ARENA_CAPACITY);
            put_u32(reply + 20, HW_BLOB_CAPACITY);
            reply[24] = b->timer_kind;
            reply[25] = (uint8_t)model_ready;
            uint16_t n = put_str(26, b->board);
            n = put_str(n, b->core);
            n = put_str(n, FW_VERSION);
            /* after the strings (older hosts stop before them): the receive buffer, the flash slot */
            const uint8_t *slot;
            put_u32(reply + n, b->rx_buffer_bytes);
            put_u32(reply + n + 4u, board_flash_slot(&slot));
            send(ok, f->seq, reply, (uint16_t)(n + 8u));
            return;
        }
        case HW_LOAD_BEGIN:
            if (f->len != 8 && f->len != 40) break;
            load_size = get_u32(p);
            load_crc = get_u32(p + 4);
            load_named = f->len == 40;
            if (load_named) memcpy(load_sha, p + 8, 32);
            if (load_named && model_ready && model_named && load_size == model.header->total_size &&
                memcmp(load_sha, model_sha, 32) == 0) {
                loading = 0;
                reply[0] = 1; /* have it: the model stays loaded, LOAD_END's facts follow */
                send(ok, f->seq, reply, (uint16_t)(1 + put_model_facts(reply + 1)));
                return;
            }
            model_ready = 0;
            loading = 0;
            held.magic = 0; /* the blob buffer is about to change */
            if (load_size > HW_BLOB_CAPACITY) {
                send_err(f->seq, HW_E_TOO_BIG, f->cmd, "blob larger than the board's blob capacity");
                return;
            }
            loading = 1;
            load_received = 0;
            reply[0] = 0; /* send it */
            send(ok, f->seq, reply, load_named ? 1 : 0);
            return;
        case HW_LOAD_CHUNK:
        case HW_LOAD_FILL:
        case HW_LOAD_SEGMENTS: {
            if (f->len < 4 || (f->cmd == HW_LOAD_FILL && f->len != 12) || (f->cmd == HW_LOAD_SEGMENTS && f->len < 8))
                break;
            uint32_t offset = get_u32(p), n = f->cmd == HW_LOAD_FILL ? get_u32(p + 4)
                                             : f->cmd == HW_LOAD_SEGMENTS ? segments_length(p + 8, f->len - 8u)
                                                                          : f->len - 4u;
            if (n == UINT32_MAX) {
                send_err(f->seq, HW_E_BAD_LENGTH, f->cmd, "malformed segments");
                return;
            }
            /* a request held already (its reply was lost, or a windowed host went back to an
             * earlier one): acknowledged again with what the board holds, nothing rewritten */
            if (loading && n > 0 && offset + n <= load_received) {
                put_u32(reply, load_received);
                send(ok, f->seq, reply, 4);
                return;
            }
            if (!loading || offset != load_received) {
                send_err(f->seq, HW_E_SEQUENCE, f->cmd, "chunk out of sequence");
                return;
            }
            if (n > load_size - offset) {
                send_err(f->seq, HW_E_BAD_LENGTH, f->cmd, "chunk past the announced size");
                return;
            }
            if (f->cmd == HW_LOAD_FILL)
                hw_generate_bytes(blob + offset, offset, n, get_u32(p + 8));
            else if (f->cmd == HW_LOAD_SEGMENTS)
                apply_segments(offset, get_u32(p + 4), p + 8, f->len - 8u);
            else
                memcpy(blob + offset, p + 4, n);
            load_received += n;
            put_u32(reply, load_received);
            send(ok, f->seq, reply, 4);
            return;
        }
        case HW_LOAD_END: {
            if (!loading || load_received != load_size) {
                send_err(f->seq, HW_E_SEQUENCE, f->cmd, "blob incomplete");
                return;
            }
            loading = 0;
            if (hw_crc32(0, blob, load_size) != load_crc) {
                send_err(f->seq, HW_E_BAD_BLOB, f->cmd, "blob CRC-32 does not match LOAD_BEGIN");
                return;
            }
            int rc = hw_model_init(&model, blob, load_size, arena, HW_ARENA_CAPACITY);
            if (rc == HW_OK && model.header->n_ops > MAX_OPS) rc = HW_ERR_OPCODE;
            if (rc != HW_OK) {
                send_err(f->seq, rc == HW_ERR_ARENA ? HW_E_ARENA : HW_E_BAD_BLOB, f->cmd, hw_model_error(rc));
                return;
            }
            model_ready = 1;
            model_named = load_named;
            memcpy(model_sha, load_sha, 32);
            held = (held_t){.magic = HELD_MAGIC, .size = load_size, .crc = load_crc,
                            .named = (uint32_t)load_named};
            memcpy(held.sha, load_sha, 32);
            held.check = held_check(&held);
            uint32_t n = put_model_facts(reply);
            if (f->len >= 1) reply[n++] = (p[0] & 1u) ? keep_in_flash() : 0; /* keep u8 (protocol 4) */
            send(ok, f->seq, reply, (uint16_t)n);
            return;
        }
        case HW_RUN: {
            if (f->len != 5 && f->len != 6) break;
            if (!model_ready) {
                send_err(f->seq, HW_E_NO_MODEL, f->cmd, "no model loaded");
                return;
            }
            uint32_t warmup = get_u16(p), repeats = get_u16(p + 2), per_layer = p[4];
            if (!select_kernels(f, 5)) return;
            uint32_t n_ops = model.header->n_ops;
            uint32_t need = 4u + 8u * repeats + (per_layer ? 8u * n_ops : 0u);
            if (repeats == 0 || need > HW_MAX_PAYLOAD) {
                send_err(f->seq, HW_E_BAD_LENGTH, f->cmd, "repeats out of range for one reply");
                return;
            }
            for (uint32_t i = 0; i < warmup; i++) {
                hw_model_fill_input(&model);
                hw_model_invoke(&model, 0, 0);
            }
            board_timer_enable(1);
            put_u16(reply, repeats);
            for (uint32_t i = 0; i < repeats; i++) {
                hw_model_fill_input(&model);
                uint64_t t0 = board_cycles();
                /* per-layer counting always runs (the same work whether or not it is reported):
                 * it also polls the timer often enough to see every wrap of a 32-bit counter */
                hw_model_invoke(&model, board_cycles, layer_cycles);
                put_u64(reply + 2 + 8 * i, board_cycles() - t0);
            }
            board_timer_enable(0);
            uint32_t n = 2u + 8u * repeats;
            put_u16(reply + n, per_layer ? n_ops : 0);
            n += 2;
            if (per_layer)
                for (uint32_t i = 0; i < n_ops; i++, n += 8) put_u64(reply + n, layer_cycles[i]);
            send(ok, f->seq, reply, (uint16_t)n);
            return;
        }
        case HW_SET_INPUT: {
            if (f->len < 4) break;
            if (!model_ready) {
                send_err(f->seq, HW_E_NO_MODEL, f->cmd, "no model loaded");
                return;
            }
            uint16_t idx = model.header->input_tensor;
            uint32_t offset = get_u32(p), n = f->len - 4u;
            if (offset + n > hw_tensor_bytes(&model.tensors[idx])) {
                send_err(f->seq, HW_E_BAD_LENGTH, f->cmd, "input past the input tensor");
                return;
            }
            memcpy(hw_tensor_data(&model, idx) + offset, p + 4, n);
            send(ok, f->seq, 0, 0);
            return;
        }
        case HW_INPUT_FILL:
            if (f->len != 0) break;
            if (!model_ready) {
                send_err(f->seq, HW_E_NO_MODEL, f->cmd, "no model loaded");
                return;
            }
            hw_model_fill_input(&model);
            put_u32(reply, hw_tensor_bytes(&model.tensors[model.header->input_tensor]));
            send(ok, f->seq, reply, 4);
            return;
        case HW_INVOKE: {
            if (f->len > 1) break;
            if (!model_ready) {
                send_err(f->seq, HW_E_NO_MODEL, f->cmd, "no model loaded");
                return;
            }
            uint16_t idx = model.header->output_tensor;
            uint32_t n = hw_tensor_bytes(&model.tensors[idx]);
            if (n > HW_MAX_PAYLOAD) {
                send_err(f->seq, HW_E_BAD_LENGTH, f->cmd, "output larger than one reply");
                return;
            }
            if (!select_kernels(f, 0)) return;
            hw_model_invoke(&model, 0, 0);
            send(ok, f->seq, hw_tensor_data(&model, idx), (uint16_t)n);
            return;
        }
        case HW_MEM:
            put_u32(reply, model_ready ? model.header->arena_size : 0);
            put_u32(reply + 4, HW_ARENA_CAPACITY);
            put_u32(reply + 8, model_ready ? load_size : 0);
            put_u32(reply + 12, HW_BLOB_CAPACITY);
            send(ok, f->seq, reply, 16);
            return;
        case HW_RESET:
            send(ok, f->seq, 0, 0);
            board_reset();
        default:
            send_err(f->seq, HW_E_UNKNOWN_CMD, f->cmd, "unknown command");
            return;
    }
    send_err(f->seq, HW_E_BAD_LENGTH, f->cmd, "payload length wrong for this command");
}

int main(void) {
    board_init();
#ifdef HW_BUILTIN_MODEL
    /* a model compiled into the firmware: ready without LOAD, read in place from flash */
    if (hw_model_init(&model, hwnas_model_blob, HWNAS_MODEL_BLOB_BYTES, arena, HW_ARENA_CAPACITY) == HW_OK) {
        model_ready = 1;
        load_size = HWNAS_MODEL_BLOB_BYTES;
    }
#else
    restore_held_blob();
#endif
    hw_parser_reset(&parser);
    send(HW_BOOT, 0, (const uint8_t *)FW_VERSION, (uint16_t)(sizeof(FW_VERSION) - 1));
    for (;;) {
        int c = board_uart_getc();
        if (c < 0) {
            board_wait_for_input();
            continue;
        }
        hw_frame_t frame;
        if (hw_parser_feed(&parser, (uint8_t)c, &frame)) {
            if (!frame.crc_ok)
                send_err(frame.seq, HW_E_CRC, frame.cmd, "frame CRC-32 mismatch");
            else
                handle(&frame);
        }
    }
}
