# QEMU mps2-an500: Cortex-M7 with a double-precision FPU, 4 MB code RAM, 4 MB SRAM.
BOARD_FPU = -mfpu=fpv5-d16 -mfloat-abi=hard
BLOB_CAPACITY = 2621440
ARENA_CAPACITY = 1310720
BOARD_CFLAGS = -DHW_IRQ_COUNT=32 -DHW_UART_IRQ=0
