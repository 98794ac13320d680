# STM32F746G-DISCO: single-precision FPU; uploaded blobs and the arena share the 320 KB SRAM
# (a blob kept in the flash slot is copied back there at start-up), so profiling here takes
# models up to 156 KB of weights (4 KB went to the serial receive buffer in 0.10.0).
BOARD_FPU = -mfpu=fpv5-sp-d16 -mfloat-abi=hard
BLOB_CAPACITY = 159744
ARENA_CAPACITY = 135168
BOARD_CFLAGS = -DHW_IRQ_COUNT=98 -DHW_UART_IRQ=37
