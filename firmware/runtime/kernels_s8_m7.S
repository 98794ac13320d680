/* The pointwise / im2col convolutions' 2 x 2 block in assembly, for the Cortex-M7 build (the host
 * build runs its C twin in kernels_s8_opt.c, hw_pair_2x2_q15_sat's #else branch).
 *
 * void hw_pair_2x2_q15_sat(const uint32_t *xq, const int8_t *w0, int n, int groups,
 *                          const int32_t *b, const rq_t *q, int8_t *y, int o_n);
 *
 * Output channels o, o + 1 (weight rows w0 and w0 + n, n int8 each) of two pixels whose inputs
 * xq holds unpacked (per group of 4 inputs: pixel 0 even, odd, pixel 1 even, odd int16 pairs):
 * accumulators start at b[0], b[1]; each is requantised as rq_out in RQ_SAT mode (SMMULR after
 * the left shift, gemmlowp's rounding divide by 2^e with the output zero point folded in, SSAT to
 * int8; RQ_SIMPLE is the same with lsh = 1, neg = -1) with q[0], q[1], and stored at y[0], y[1]
 * (pixel 0) and y[o_n], y[o_n + 1] (pixel 1).
 *
 * Why assembly: with the loop in inline assembly and the requantisation in C, GCC spent ~135
 * instructions per block outside the loop (the accumulators through memory, every rq_t field
 * reloaded, loop state spilled around the call); here it is ~45. The loop is 2 LDRD + 2 LDR +
 * 4 SXTB16 + 8 SMLAD per group of 4 inputs, two groups per compare and branch (17 per 16 MACs).
 * All fourteen registers are live in it; a larger block would not fit.
 *
 * rq_t is { int32_t mult, round, e, lsh, neg } (kernels_s8_opt.c): one LDM loads a channel's. */
    .syntax unified
    .thumb
    .text

    .macro CHANNEL w, acc0, acc1    @ four weights of one output channel against both pixels
    ldr     r12, [\w], #4
    sxtb16  lr, r12
    sxtb16  r12, r12, ror #8
    smlad   \acc0, r4, lr, \acc0     @ pixel 0: even, odd pairs in r4, r5
    smlad   \acc0, r5, r12, \acc0
    smlad   \acc1, r6, lr, \acc1     @ pixel 1: r6, r7
    smlad   \acc1, r7, r12, \acc1
    .endm

    .macro GROUP                    @ 16 MACs: r0 xq, r1 w0, r2 w1; accumulators r8-r11
    ldrd    r4, r5, [r0], #8        @ pixel 0: even, odd pairs
    ldrd    r6, r7, [r0], #8        @ pixel 1
    CHANNEL r1, r8, r10             @ channel o
    CHANNEL r2, r9, r11             @ channel o + 1
    .endm

    .macro REQUANT acc, dst, off    @ r4 mult, r5 round, r6 e, r7 lsh, r12 neg; r3, lr scratch
    lsl     r3, \acc, r7
    smmlar  r3, r3, r4, r5          @ round + SMMULR: the sign correction takes acc's sign (rq_out)
    and     lr, r12, \acc, asr #31
    add     r3, r3, lr
    asr     r3, r3, r6
    ssat    r3, #8, r3
    strb    r3, [\dst, #\off]
    .endm

    /* One function of the 2 x 2 block: `group` the loop body (16 MACs), w1 = w0 + (n << w_shift) */
    .macro PAIR_2X2 name, group, w_shift
    .align  2
    .global \name
    .type   \name, %function
    .thumb_func
\name:
    push    {r4-r11, lr}            @ the stack arguments now start at sp + 36
    ldr     r4, [sp, #36]           @ b
    ldrd    r8, r9, [r4]            @ pixel 0: channels o, o + 1
    mov     r10, r8                 @ pixel 1
    mov     r11, r9
    add     r2, r1, r2, lsl #\w_shift @ w1, n weights after w0
    lsls    r12, r3, #31            @ Z clear when the group count is odd
    add     r3, r0, r3, lsl #4      @ end of xq
    beq     1f
    \group                          @ the odd group
1:  cmp     r0, r3
    beq     3f
2:  \group
    \group
    cmp     r0, r3
    bne     2b
3:  ldrd    r0, r1, [sp, #40]       @ q, y
    ldr     r2, [sp, #48]           @ o_n
    add     r2, r1, r2              @ pixel 1's outputs
    ldm     r0!, {r4, r5, r6, r7, r12}
    REQUANT r8, r1, 0
    REQUANT r10, r2, 0
    ldm     r0, {r4, r5, r6, r7, r12}
    REQUANT r9, r1, 1
    REQUANT r11, r2, 1
    pop     {r4-r11, pc}
    .size   \name, . - \name
    .endm

    PAIR_2X2 hw_pair_2x2_q15_sat, GROUP, 0

/* void hw_pair_2x2_w16_sat(const uint32_t *xq, const int16_t *w0, int n, int groups,
 *                          const int32_t *b, const rq_t *q, int8_t *y, int o_n);
 *
 * hw_pair_2x2_q15_sat over weights the blob stores unpacked (HW_INT8_Q15: n int16 per row, per group
 * of 4 the even pair then the odd pair): 4 LDRD + 8 SMLAD per group, two groups per compare and
 * branch (13 instructions per 16 MACs). Fourteen registers again: r4, r5 hold one pixel's pairs at
 * a time, r6, r7 channel o's weights, r12, lr channel o + 1's. */
    .macro GROUP16                  @ 16 MACs: r0 xq, r1 w0, r2 w1; accumulators r8-r11
    ldrd    r4, r5, [r0], #8        @ pixel 0: even, odd pairs
    ldrd    r6, r7, [r1], #8        @ channel o
    ldrd    r12, lr, [r2], #8       @ channel o + 1
    smlad   r8, r4, r6, r8
    smlad   r8, r5, r7, r8
    smlad   r9, r4, r12, r9
    smlad   r9, r5, lr, r9
    ldrd    r4, r5, [r0], #8        @ pixel 1
    smlad   r10, r4, r6, r10
    smlad   r10, r5, r7, r10
    smlad   r11, r4, r12, r11
    smlad   r11, r5, lr, r11
    .endm

    PAIR_2X2 hw_pair_2x2_w16_sat, GROUP16, 1
