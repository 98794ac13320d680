/* Vector table and reset handler shared by the Cortex-M7 boards. The board's board.mk sets
 * HW_IRQ_COUNT (entries after the 16 system vectors) and HW_UART_IRQ (its serial RX line). */
#include <stdint.h>

#ifndef HW_IRQ_COUNT
#error "board.mk must define HW_IRQ_COUNT"
#endif
#ifndef HW_UART_IRQ
#error "board.mk must define HW_UART_IRQ"
#endif

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
void board_uart_irq_handler(void);

static void default_handler(void) {
    for (;;) {
    }
}

/* boards that count SysTick wraps define this; the others never enable its interrupt */
void board_systick_handler(void) __attribute__((weak, alias("default_handler")));

void reset_handler(void) {
    /* enable the FPU (CP10, CP11 full access) before any float instruction */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm volatile("dsb\n isb" ::: "memory");
    uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    main();
    for (;;) {
    }
}

/* Ranges fill every slot with the default handler, later designators override single slots:
 * intended, so the override warning is silenced for this table only. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
__attribute__((section(".isr_vector"), used)) const void *vectors[16 + HW_IRQ_COUNT] = {
    [0] = &_estack,
    [1] = (void *)reset_handler,
    [2 ... 15] = (void *)default_handler,
    [7 ... 10] = 0,
    [13] = 0,
    [15] = (void *)board_systick_handler,
    [16 ... 16 + HW_IRQ_COUNT - 1] = (void *)default_handler,
    [16 + HW_UART_IRQ] = (void *)board_uart_irq_handler,
};
#pragma GCC diagnostic pop
