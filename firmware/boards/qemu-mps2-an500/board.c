/* QEMU mps2-an500 (Cortex-M7 at 25 MHz): CMSDK APB UART0 with an RX interrupt, CMSDK timer timing.
 *
 * QEMU does not implement DWT->CYCCNT, so time is counted with CMSDK APB TIMER0 (25 MHz, 32-bit
 * down counter, no interrupt: wraps are found when polled, and the interpreter polls at every
 * layer). Run QEMU with `-icount shift=N`: each instruction then takes 2^N ns of virtual time, so
 * the count is deterministic and instructions = ticks * 40 / 2^N; with N = 7 one instruction is
 * 3.2 ticks, so a count rounds back to the exact number of instructions. */
#include "board.h"

#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04))
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08))
#define UART_INTCLEAR (*(volatile uint32_t *)(UART0_BASE + 0x0C))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10))

#define TIMER0_BASE 0x40000000u
#define TIMER_CTRL (*(volatile uint32_t *)(TIMER0_BASE + 0x00))
#define TIMER_VALUE (*(volatile uint32_t *)(TIMER0_BASE + 0x04))
#define TIMER_RELOAD (*(volatile uint32_t *)(TIMER0_BASE + 0x08))
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define AIRCR (*(volatile uint32_t *)0xE000ED0Cu)

#define RX_BUF 16384u /* power of two */

static volatile uint8_t rx_buf[RX_BUF];
static volatile uint32_t rx_head, rx_tail;
static uint32_t timer_last;
static uint64_t timer_high;

static const board_info_t info = {
    .board = "qemu-mps2-an500",
    .core = "cortex-m7",
    .clock_hz = 25000000u,
    .sram_bytes = 4u * 1024u * 1024u,
    .flash_bytes = 4u * 1024u * 1024u,
    .timer_kind = HW_TIMER_ICOUNT,
    .rx_buffer_bytes = RX_BUF - 1u,
};

/* A full ring leaves the byte in the UART and masks its interrupt until getc makes room:
 * QEMU then holds further input back (its 1-byte buffer is full), so nothing is ever lost,
 * however much a host keeps in flight. */
void board_uart_irq_handler(void) {
    UART_INTCLEAR = 2u;
    while (UART_STATE & 2u) {
        uint32_t next = (rx_head + 1u) & (RX_BUF - 1u);
        if (next == rx_tail) {
            UART_CTRL &= ~8u;
            return;
        }
        rx_buf[rx_head] = (uint8_t)UART_DATA;
        rx_head = next;
    }
}

void board_init(void) {
    UART_BAUDDIV = 16u;
    UART_CTRL = 1u | 2u | 8u; /* TX enable, RX enable, RX interrupt enable */
    NVIC_ISER0 = 1u << 0;     /* UART0 RX is IRQ 0 */
    TIMER_CTRL = 0;
}

/* The timer only runs during RUN, so an idle board has nothing pending and QEMU sleeps. */
void board_timer_enable(int on) {
    TIMER_CTRL = 0;
    if (on) {
        TIMER_RELOAD = 0xFFFFFFFFu;
        TIMER_VALUE = 0xFFFFFFFFu;
        timer_last = 0xFFFFFFFFu;
        timer_high = 0;
        TIMER_CTRL = 1u; /* enable, no interrupt */
    }
}

const board_info_t *board_get_info(void) { return &info; }

int board_uart_getc(void) {
    if (rx_tail == rx_head) return -1;
    uint8_t c = rx_buf[rx_tail];
    rx_tail = (rx_tail + 1u) & (RX_BUF - 1u);
    if (!(UART_CTRL & 8u)) {
        /* room again: unmask, and take the byte the UART held back here (QEMU before 8.1 raises
         * no interrupt for a byte that arrived while masked; a later one does, and then finds
         * the UART empty or holding the next byte) */
        __asm volatile("cpsid i" ::: "memory");
        UART_CTRL |= 8u;
        if (UART_STATE & 2u) {
            rx_buf[rx_head] = (uint8_t)UART_DATA;
            rx_head = (rx_head + 1u) & (RX_BUF - 1u);
        }
        __asm volatile("cpsie i" ::: "memory");
    }
    return c;
}

void board_wait_for_input(void) {
    __asm volatile("cpsid i" ::: "memory");
    if (rx_tail == rx_head) __asm volatile("wfi" ::: "memory");
    __asm volatile("cpsie i" ::: "memory");
}

void board_uart_write(const uint8_t *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        while (UART_STATE & 1u) {
        }
        UART_DATA = data[i];
    }
}

uint64_t board_cycles(void) {
    const uint32_t v = TIMER_VALUE;
    if (v > timer_last) timer_high += 1ull << 32; /* the down counter wrapped since the last poll */
    timer_last = v;
    return timer_high + (0xFFFFFFFFu - v);
}

/* No flash to keep a blob in: the blob buffer itself survives a reset (app/main.c). */
uint32_t board_flash_slot(const uint8_t **base) {
    *base = 0;
    return 0;
}

int board_flash_slot_erase(uint32_t len) {
    (void)len;
    return -1;
}

int board_flash_slot_program(uint32_t offset, const uint8_t *data, uint32_t len) {
    (void)offset;
    (void)data;
    (void)len;
    return -1;
}

void board_reset(void) {
    AIRCR = (0x5FAu << 16) | (1u << 2); /* SYSRESETREQ */
    for (;;) {
    }
}
