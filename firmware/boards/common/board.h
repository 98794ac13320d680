/* Board support interface: what the portable firmware needs from a board. */
#ifndef HWNAS_BOARD_H
#define HWNAS_BOARD_H

#include <stdint.h>
#include <stddef.h>

typedef struct {
    const char *board;      /* e.g. "qemu-mps2-an500" */
    const char *core;       /* e.g. "cortex-m7" */
    uint32_t clock_hz;      /* core clock the cycle counter runs at */
    uint32_t sram_bytes;    /* SRAM budget models must fit */
    uint32_t flash_bytes;   /* flash budget models must fit */
    uint8_t timer_kind;     /* HW_TIMER_* */
    uint32_t rx_buffer_bytes; /* what the serial receive buffer holds while the firmware is busy:
                               * a host keeps no more than this in flight behind the request
                               * being served (a windowed upload) */
} board_info_t;

enum {
    HW_TIMER_DWT_CYCCNT = 1,   /* real core cycles */
    HW_TIMER_ICOUNT = 2      /* QEMU -icount: timer ticks that scale to executed instructions */
};

void board_init(void);
const board_info_t *board_get_info(void);

/* Serial port: non-blocking receive, blocking transmit. */
int board_uart_getc(void);          /* -1 when nothing is waiting */
void board_uart_write(const uint8_t *data, size_t len);
void board_wait_for_input(void);    /* sleep (WFI) until a byte may have arrived */

/* Cycle counter (64-bit). It runs only while enabled: an idle board then has no timer
 * interrupt pending, so it sleeps in WFI (and its QEMU twin costs no host CPU). */
void board_timer_enable(int on);
uint64_t board_cycles(void);

void board_reset(void) __attribute__((noreturn));

/* A flash slot where LOAD_END's keep flag stores the blob (after a header), so it survives a
 * power cycle: its size in bytes (0: the board has none) and address. */
uint32_t board_flash_slot(const uint8_t **base);
/* Erase the sectors holding the slot's first `len` bytes; program `len` bytes at `offset`
 * (both multiples of 32: the largest flash word of our boards). 0 on success. */
int board_flash_slot_erase(uint32_t len);
int board_flash_slot_program(uint32_t offset, const uint8_t *data, uint32_t len);

#endif
