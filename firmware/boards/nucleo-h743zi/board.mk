# NUCLEO-H743ZI: double-precision FPU; blob buffer and arena in the 512 KB AXI SRAM.
BOARD_FPU = -mfpu=fpv5-d16 -mfloat-abi=hard
BLOB_CAPACITY = 262144
ARENA_CAPACITY = 229376
BOARD_CFLAGS = -DHW_IRQ_COUNT=150 -DHW_UART_IRQ=39
