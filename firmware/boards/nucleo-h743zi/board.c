/* NUCLEO-H743ZI: Cortex-M7 at 400 MHz (voltage scale 1, every silicon revision) from the 8 MHz
 * ST-LINK clock (HSE bypass) (RM0433), I/D caches on, ST-LINK virtual COM port on USART3
 * (TX PD8, RX PD9, AF7) at HW_BAUD (921600 unless built with BAUD=...), DWT->CYCCNT timing. */
#include "board.h"
#include "cortex_m7.h"
#include "stm32_usart.h"

#define RCC 0x58024400u
#define RCC_CR REG32(RCC + 0x00u)
#define RCC_CFGR REG32(RCC + 0x10u)
#define RCC_D1CFGR REG32(RCC + 0x18u)
#define RCC_D2CFGR REG32(RCC + 0x1Cu)
#define RCC_D3CFGR REG32(RCC + 0x20u)
#define RCC_PLLCKSELR REG32(RCC + 0x28u)
#define RCC_PLLCFGR REG32(RCC + 0x2Cu)
#define RCC_PLL1DIVR REG32(RCC + 0x30u)
#define RCC_AHB4ENR REG32(RCC + 0xE0u)
#define RCC_APB1LENR REG32(RCC + 0xE8u)
#define PWR_CSR1 REG32(0x58024804u)
#define PWR_CR3 REG32(0x5802480Cu)
#define PWR_D3CR REG32(0x58024818u)
#define FLASH_ACR REG32(0x52002000u)
#define GPIOD 0x58020C00u
#define GPIO_MODER(p) REG32((p) + 0x00u)
#define GPIO_OSPEEDR(p) REG32((p) + 0x08u)
#define GPIO_AFRH(p) REG32((p) + 0x24u)
#define USART3_IRQ 39u
#define CORE_HZ 400000000u
#define APB1_HZ 100000000u

static stm32_usart_t vcp = {.base = 0x40004800u};

static const board_info_t info = {
    .board = "nucleo-h743zi",
    .core = "cortex-m7",
    .clock_hz = CORE_HZ,
    .sram_bytes = 512u * 1024u, /* AXI SRAM, where the firmware keeps its buffers */
    .flash_bytes = 2048u * 1024u,
    .timer_kind = HW_TIMER_DWT_CYCCNT,
    .rx_buffer_bytes = STM32_RX_BUF - 1u,
};

static void clock_400mhz(void) {
    PWR_CR3 = (PWR_CR3 & ~(1u << 2)) | (1u << 1); /* LDO supply, no bypass */
    while (!(PWR_CSR1 & (1u << 13))) {             /* ACTVOSRDY */
    }
    PWR_D3CR = (PWR_D3CR & ~(3u << 14)) | (3u << 14); /* VOS1 */
    while (!(PWR_D3CR & (1u << 13))) {                 /* VOSRDY */
    }
    RCC_CR |= (1u << 18) | (1u << 16); /* HSE bypass (ST-LINK MCO), HSEON */
    while (!(RCC_CR & (1u << 17))) {
    }
    /* PLL1: 8 MHz / M1 = 8 MHz (range 8-16), wide VCO 8 * N100 = 800 MHz, P2 = 400 MHz */
    RCC_PLLCKSELR = (RCC_PLLCKSELR & ~((0x3Fu << 4) | 3u)) | (1u << 4) | 2u;
    RCC_PLLCFGR = (RCC_PLLCFGR & ~(0xFu)) | (3u << 2) | (1u << 16) | (1u << 17) | (1u << 18);
    RCC_PLL1DIVR = (99u) | (1u << 9) | (3u << 16) | (1u << 24);
    RCC_CR |= 1u << 24; /* PLL1ON */
    while (!(RCC_CR & (1u << 25))) {
    }
    FLASH_ACR = 2u | (2u << 4); /* 2 wait states, WRHIGHFREQ 2 for a 200 MHz AXI clock at VOS1 */
    RCC_D1CFGR = (8u << 0) | (4u << 4); /* HPRE /2 -> 200 MHz, D1PPRE /2 -> 100 MHz */
    RCC_D2CFGR = (4u << 4) | (4u << 8); /* APB1, APB2 /2 -> 100 MHz */
    RCC_D3CFGR = (4u << 4);             /* APB4 /2 -> 100 MHz */
    RCC_CFGR = (RCC_CFGR & ~7u) | 3u;   /* SW = PLL1 */
    while (((RCC_CFGR >> 3) & 7u) != 3u) {
    }
}

static void pins(void) {
    RCC_AHB4ENR |= 1u << 3;   /* GPIOD */
    RCC_APB1LENR |= 1u << 18; /* USART3 */
    (void)RCC_APB1LENR;
    GPIO_MODER(GPIOD) = (GPIO_MODER(GPIOD) & ~(0xFu << 16)) | (0xAu << 16); /* PD8, PD9 alternate */
    GPIO_OSPEEDR(GPIOD) |= 0xFu << 16;
    GPIO_AFRH(GPIOD) = (GPIO_AFRH(GPIOD) & ~0xFFu) | 0x77u; /* AF7 */
}

void board_init(void) {
    clock_400mhz();
    cm7_enable_caches();
    pins();
    stm32_usart_init(&vcp, APB1_HZ, HW_BAUD);
    cm7_enable_irq(USART3_IRQ);
    cm7_enable_cycle_counter();
}

/* The flash slot: bank 2's sectors 5-7, the last 384 KB (RM0433 4.3: 8 sectors of 128 KB per
 * bank), outside the linker's FLASH region. Bank 2's own registers; programmed in 256-bit flash
 * words (8 words written, then the controller programs them). */
#define FLASH_KEYR2 REG32(0x52002104u)
#define FLASH_CR2 REG32(0x5200210Cu)
#define FLASH_SR2 REG32(0x52002110u)
#define FLASH_CCR2 REG32(0x52002114u)
#define SLOT_BASE 0x081A0000u
#define SLOT_BYTES (384u * 1024u)
#define SLOT_FIRST_SECTOR 5u
#define SECTOR_BYTES (128u * 1024u)
#define FLASH_ERRORS 0x07EE0000u /* WRPERR PGSERR STRBERR INCERR OPERR RDPERR RDSERR SNECCERR DBECCERR */

uint32_t board_flash_slot(const uint8_t **base) {
    *base = (const uint8_t *)SLOT_BASE;
    return SLOT_BYTES;
}

static int flash_done(void) {
    while (FLASH_SR2 & 5u) { /* BSY, QW */
    }
    uint32_t errors = FLASH_SR2 & FLASH_ERRORS;
    FLASH_CCR2 = errors | (1u << 16); /* and EOP */
    return errors ? -1 : 0;
}

static void flash_unlock(void) {
    if (FLASH_CR2 & 1u) { /* LOCK */
        FLASH_KEYR2 = 0x45670123u;
        FLASH_KEYR2 = 0xCDEF89ABu;
    }
}

int board_flash_slot_erase(uint32_t len) {
    if (len > SLOT_BYTES) return -1;
    flash_unlock();
    int rc = flash_done();
    for (uint32_t s = 0; s * SECTOR_BYTES < len && rc == 0; s++) {
        FLASH_CR2 = (2u << 4) | ((SLOT_FIRST_SECTOR + s) << 8) | (1u << 2); /* PSIZE x32, SNB, SER */
        FLASH_CR2 |= 1u << 7;                                               /* START */
        rc = flash_done();
    }
    FLASH_CR2 = 1u; /* LOCK */
    cm7_dcache_invalidate(SLOT_BASE, len);
    return rc;
}

int board_flash_slot_program(uint32_t offset, const uint8_t *data, uint32_t len) {
    if (offset % 32u || len % 32u || offset + len > SLOT_BYTES) return -1;
    flash_unlock();
    FLASH_CR2 = (2u << 4) | (1u << 1); /* PSIZE x32, PG */
    volatile uint32_t *to = (volatile uint32_t *)(SLOT_BASE + offset);
    int rc = 0;
    for (uint32_t i = 0; i < len / 4u && rc == 0; i++) {
        const uint8_t *b = data + 4u * i;
        to[i] = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
        if (i % 8u == 7u) { /* a whole flash word written: it programs */
            cm7_dsb_isb();
            rc = flash_done();
        }
    }
    FLASH_CR2 = 1u;
    cm7_dcache_invalidate(SLOT_BASE + offset, len);
    return rc;
}

#include "stm32_common.c.inc"
