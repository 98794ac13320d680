/* The USART of STM32F7 and STM32H7 (same register layout) with an RX-interrupt ring buffer,
 * shared by the STM32 boards; each board sets the base address, pins and clocks. */
#ifndef HWNAS_STM32_USART_H
#define HWNAS_STM32_USART_H

#include <stddef.h>
#include <stdint.h>

#include "cortex_m7.h"

#define USART_CR1(b) REG32((b) + 0x00u)
#define USART_BRR(b) REG32((b) + 0x0Cu)
#define USART_ISR(b) REG32((b) + 0x1Cu)
#define USART_ICR(b) REG32((b) + 0x20u)
#define USART_RDR(b) REG32((b) + 0x24u)
#define USART_TDR(b) REG32((b) + 0x28u)

/* requests of up to half of it follow the one being served (a windowed upload) */
#define STM32_RX_BUF 4096u

typedef struct {
    uint32_t base;
    volatile uint8_t buf[STM32_RX_BUF];
    volatile uint32_t head, tail;
} stm32_usart_t;

static inline void stm32_usart_init(stm32_usart_t *u, uint32_t kernel_hz, uint32_t baud) {
    USART_CR1(u->base) = 0;
    USART_BRR(u->base) = (kernel_hz + baud / 2u) / baud; /* oversampling by 16 */
    USART_CR1(u->base) = (1u << 5) | (1u << 3) | (1u << 2) | 1u; /* RXNEIE, TE, RE, UE */
}

static inline void stm32_usart_irq(stm32_usart_t *u) {
    uint32_t isr = USART_ISR(u->base);
    if (isr & (1u << 3)) USART_ICR(u->base) = 1u << 3; /* overrun: clear, the host retries */
    while (USART_ISR(u->base) & (1u << 5)) {           /* RXNE */
        uint8_t c = (uint8_t)USART_RDR(u->base);
        uint32_t next = (u->head + 1u) & (STM32_RX_BUF - 1u);
        if (next != u->tail) {
            u->buf[u->head] = c;
            u->head = next;
        }
    }
}

static inline int stm32_usart_getc(stm32_usart_t *u) {
    if (u->tail == u->head) return -1;
    uint8_t c = u->buf[u->tail];
    u->tail = (u->tail + 1u) & (STM32_RX_BUF - 1u);
    return c;
}

static inline void stm32_usart_write(stm32_usart_t *u, const uint8_t *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        while (!(USART_ISR(u->base) & (1u << 7))) { /* TXE */
        }
        USART_TDR(u->base) = data[i];
    }
}

static inline int stm32_usart_idle(stm32_usart_t *u) { return u->tail == u->head; }

#endif
