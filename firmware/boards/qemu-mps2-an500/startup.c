/* Vector table and reset handler for the Cortex-M7 (mps2-an500 loads the ELF at address 0). */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
void uart0_rx_handler(void);
void systick_handler(void);

static void default_handler(void) {
    for (;;) {
    }
}

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

__attribute__((section(".isr_vector"), used)) const void *vectors[16 + 32] = {
    &_estack,
    (void *)reset_handler,
    (void *)default_handler, /* NMI */
    (void *)default_handler, /* HardFault */
    (void *)default_handler, /* MemManage */
    (void *)default_handler, /* BusFault */
    (void *)default_handler, /* UsageFault */
    0, 0, 0, 0,
    (void *)default_handler, /* SVC */
    (void *)default_handler, /* DebugMon */
    0,
    (void *)default_handler, /* PendSV */
    (void *)systick_handler,
    (void *)uart0_rx_handler, /* IRQ 0: UART0 RX */
};
