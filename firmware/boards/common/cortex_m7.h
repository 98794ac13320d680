/* Cortex-M7 core peripherals the STM32 boards share (DWT cycle counter, caches, NVIC, reset). */
#ifndef HWNAS_CORTEX_M7_H
#define HWNAS_CORTEX_M7_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(addr))

#define SCB_CCR REG32(0xE000ED14u)
#define SCB_AIRCR REG32(0xE000ED0Cu)
#define SCB_CCSIDR REG32(0xE000ED80u)
#define SCB_CSSELR REG32(0xE000ED84u)
#define SCB_ICIALLU REG32(0xE000EF50u)
#define SCB_DCISW REG32(0xE000EF60u)
#define SCB_DCIMVAC REG32(0xE000EF5Cu)
#define DEMCR REG32(0xE000EDFCu)
#define DWT_CTRL REG32(0xE0001000u)
#define DWT_CYCCNT REG32(0xE0001004u)
#define DWT_LAR REG32(0xE0001FB0u)
#define NVIC_ISER(n) REG32(0xE000E100u + 4u * (n))

static inline void cm7_dsb_isb(void) { __asm volatile("dsb\n isb" ::: "memory"); }

/* Instruction and data caches on (CMSIS SCB_EnableICache / SCB_EnableDCache). */
static inline void cm7_enable_caches(void) {
    cm7_dsb_isb();
    SCB_ICIALLU = 0;
    cm7_dsb_isb();
    SCB_CCR |= 1u << 17;
    cm7_dsb_isb();
    SCB_CSSELR = 0; /* level 1 data cache */
    cm7_dsb_isb();
    uint32_t ccsidr = SCB_CCSIDR;
    uint32_t sets = (ccsidr >> 13) & 0x7FFFu;
    do {
        uint32_t ways = (ccsidr >> 3) & 0x3FFu;
        do {
            SCB_DCISW = ((sets & 0x1FFu) << 5) | ((ways & 3u) << 30);
        } while (ways-- != 0u);
    } while (sets-- != 0u);
    cm7_dsb_isb();
    SCB_CCR |= 1u << 16;
    cm7_dsb_isb();
}

/* Drop the data cache's lines over [addr, addr + len) (memory changed behind the cache: flash
 * erased and programmed). */
static inline void cm7_dcache_invalidate(uint32_t addr, uint32_t len) {
    cm7_dsb_isb();
    for (uint32_t a = addr & ~31u; a < addr + len; a += 32u) SCB_DCIMVAC = a;
    cm7_dsb_isb();
}

/* DWT->CYCCNT counts core cycles (32 bits); board_cycles() extends it to 64 bits. */
static inline void cm7_enable_cycle_counter(void) {
    DEMCR |= 1u << 24; /* TRCENA */
    DWT_LAR = 0xC5ACCE55u; /* the M7 locks DWT until this key is written */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
}

static inline void cm7_enable_irq(uint32_t irq) { NVIC_ISER(irq / 32u) = 1u << (irq % 32u); }

__attribute__((noreturn)) static inline void cm7_system_reset(void) {
    cm7_dsb_isb();
    SCB_AIRCR = (0x5FAu << 16) | (1u << 2); /* SYSRESETREQ */
    for (;;) {
    }
}

#endif
