/* STM32F746G-DISCO: Cortex-M7 at 216 MHz from the 25 MHz HSE crystal (RM0385), I/D caches on,
 * ST-LINK virtual COM port on USART1 (TX PA9, RX PB7, AF7) at HW_BAUD (921600 unless built with BAUD=...), DWT->CYCCNT timing. */
#include "board.h"
#include "cortex_m7.h"
#include "stm32_usart.h"

#define RCC 0x40023800u
#define RCC_CR REG32(RCC + 0x00u)
#define RCC_PLLCFGR REG32(RCC + 0x04u)
#define RCC_CFGR REG32(RCC + 0x08u)
#define RCC_AHB1ENR REG32(RCC + 0x30u)
#define RCC_APB1ENR REG32(RCC + 0x40u)
#define RCC_APB2ENR REG32(RCC + 0x44u)
#define PWR_CR1 REG32(0x40007000u)
#define PWR_CSR1 REG32(0x40007004u)
#define FLASH_ACR REG32(0x40023C00u)
#define GPIOA 0x40020000u
#define GPIOB 0x40020400u
#define GPIO_MODER(p) REG32((p) + 0x00u)
#define GPIO_OSPEEDR(p) REG32((p) + 0x08u)
#define GPIO_AFRL(p) REG32((p) + 0x20u)
#define GPIO_AFRH(p) REG32((p) + 0x24u)
#define USART1_IRQ 37u
#define CORE_HZ 216000000u
#define APB2_HZ 108000000u

static stm32_usart_t vcp = {.base = 0x40011000u};

static const board_info_t info = {
    .board = "stm32f746-disco",
    .core = "cortex-m7",
    .clock_hz = CORE_HZ,
    .sram_bytes = 320u * 1024u,
    .flash_bytes = 1024u * 1024u,
    .timer_kind = HW_TIMER_DWT_CYCCNT,
    .rx_buffer_bytes = STM32_RX_BUF - 1u,
};

static void clock_216mhz(void) {
    RCC_APB1ENR |= 1u << 28;                     /* PWREN */
    PWR_CR1 = (PWR_CR1 & ~(3u << 14)) | (3u << 14); /* voltage scale 1 */
    RCC_CR |= 1u << 16;                          /* HSEON */
    while (!(RCC_CR & (1u << 17))) {
    }
    /* PLL: 25 MHz / M25 * N432 / P2 = 216 MHz; Q9 = 48 MHz */
    RCC_PLLCFGR = 25u | (432u << 6) | (0u << 16) | (1u << 22) | (9u << 24);
    RCC_CR |= 1u << 24; /* PLLON */
    while (!(RCC_CR & (1u << 25))) {
    }
    PWR_CR1 |= 1u << 16; /* over-drive on, needed above 180 MHz */
    while (!(PWR_CSR1 & (1u << 16))) {
    }
    PWR_CR1 |= 1u << 17; /* over-drive switch */
    while (!(PWR_CSR1 & (1u << 17))) {
    }
    FLASH_ACR = 7u | (1u << 8) | (1u << 9); /* 7 wait states, prefetch, ART */
    RCC_CFGR = (RCC_CFGR & ~0xFCF3u) | (5u << 10) | (4u << 13) | 2u; /* APB1 /4, APB2 /2, SW = PLL */
    while (((RCC_CFGR >> 2) & 3u) != 2u) {
    }
}

static void pins(void) {
    RCC_AHB1ENR |= (1u << 0) | (1u << 1); /* GPIOA, GPIOB */
    RCC_APB2ENR |= 1u << 4;               /* USART1 */
    GPIO_MODER(GPIOA) = (GPIO_MODER(GPIOA) & ~(3u << 18)) | (2u << 18); /* PA9 alternate */
    GPIO_OSPEEDR(GPIOA) |= 3u << 18;
    GPIO_AFRH(GPIOA) = (GPIO_AFRH(GPIOA) & ~(0xFu << 4)) | (7u << 4);
    GPIO_MODER(GPIOB) = (GPIO_MODER(GPIOB) & ~(3u << 14)) | (2u << 14); /* PB7 alternate */
    GPIO_AFRL(GPIOB) = (GPIO_AFRL(GPIOB) & ~(0xFu << 28)) | (7u << 28);
}

void board_init(void) {
    clock_216mhz();
    cm7_enable_caches();
    pins();
    stm32_usart_init(&vcp, APB2_HZ, HW_BAUD);
    cm7_enable_irq(USART1_IRQ);
    cm7_enable_cycle_counter();
}

/* The flash slot: sector 7, the last 256 KB (RM0385 3.3: sectors 0-3 32 KB, 4 128 KB, 5-7 256 KB),
 * outside the linker's FLASH region. Programmed 32 bits at a time (PSIZE x32, 2.7-3.6 V). */
#define FLASH_KEYR REG32(0x40023C04u)
#define FLASH_SR REG32(0x40023C0Cu)
#define FLASH_CR REG32(0x40023C10u)
#define SLOT_BASE 0x080C0000u
#define SLOT_BYTES (256u * 1024u)
#define SLOT_SECTOR 7u

uint32_t board_flash_slot(const uint8_t **base) {
    *base = (const uint8_t *)SLOT_BASE;
    return SLOT_BYTES;
}

static int flash_done(void) {
    while (FLASH_SR & (1u << 16)) { /* BSY */
    }
    uint32_t errors = FLASH_SR & 0xF2u; /* ERSERR, PGPERR, PGAERR, WRPERR, OPERR */
    FLASH_SR = errors | 1u;             /* cleared by writing 1 (and EOP) */
    return errors ? -1 : 0;
}

int board_flash_slot_erase(uint32_t len) {
    if (len > SLOT_BYTES) return -1;
    if (FLASH_CR & (1u << 31)) { /* LOCK */
        FLASH_KEYR = 0x45670123u;
        FLASH_KEYR = 0xCDEF89ABu;
    }
    int rc = flash_done();
    FLASH_CR = (2u << 8) | (SLOT_SECTOR << 3) | (1u << 1); /* PSIZE x32, SNB, SER */
    FLASH_CR |= 1u << 16;                                  /* STRT */
    rc |= flash_done();
    FLASH_CR = 1u << 31;
    cm7_dcache_invalidate(SLOT_BASE, len);
    return rc;
}

int board_flash_slot_program(uint32_t offset, const uint8_t *data, uint32_t len) {
    if (offset % 32u || len % 32u || offset + len > SLOT_BYTES) return -1;
    FLASH_KEYR = 0x45670123u;
    FLASH_KEYR = 0xCDEF89ABu;
    FLASH_CR = (2u << 8) | 1u; /* PSIZE x32, PG */
    volatile uint32_t *to = (volatile uint32_t *)(SLOT_BASE + offset);
    int rc = 0;
    for (uint32_t i = 0; i < len / 4u && rc == 0; i++) {
        const uint8_t *b = data + 4u * i;
        to[i] = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
        cm7_dsb_isb();
        rc = flash_done();
    }
    FLASH_CR = 1u << 31;
    cm7_dcache_invalidate(SLOT_BASE + offset, len);
    return rc;
}

#include "stm32_common.c.inc"
