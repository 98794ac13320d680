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

#include "stm32_common.c.inc"
