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

#include "stm32_common.c.inc"
