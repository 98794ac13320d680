/* The few Armv7E-M DSP instructions the optimised kernels use, as inline functions.
 *
 * On a Cortex-M4/M7 (__ARM_FEATURE_DSP) each maps to one instruction (ACLE or inline asm where
 * ACLE has no intrinsic); elsewhere (the host build the tests load) to plain C with the same
 * results, so the optimised kernels are checked bit for bit against the portable ones on the host
 * as well as on the board. */
#ifndef HWNAS_SIMD_H
#define HWNAS_SIMD_H

#include <stdint.h>
#include <string.h>

/* Two int16 lanes holding v (for SXTAB16's addend). */
static inline uint32_t hw_pack16x2(int32_t v) { return ((uint32_t)v & 0xFFFFu) * 0x00010001u; }

/* Four int8 from any address (Cortex-M7 LDR allows unaligned addresses). */
static inline uint32_t hw_read_s8x4(const int8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>

/* bytes 0 and 2, sign-extended to two int16 */
static inline uint32_t hw_sxtb16(uint32_t x) { return (uint32_t)__sxtb16((int8x4_t)x); }
/* bytes 1 and 3 */
static inline uint32_t hw_sxtb16_ror8(uint32_t x) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
/* a + bytes 0 and 2 (a holds two int16: the negated zero point, twice) */
static inline uint32_t hw_sxtab16(uint32_t a, uint32_t x) { return (uint32_t)__sxtab16((int16x2_t)a, (int8x4_t)x); }
static inline uint32_t hw_sxtab16_ror8(uint32_t a, uint32_t x) {
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
static inline int32_t hw_smlad(uint32_t a, uint32_t b, int32_t acc) {
    return __smlad((int16x2_t)a, (int16x2_t)b, acc);
}
static inline int32_t hw_smlabb(uint32_t a, uint32_t b, int32_t acc) { return __smlabb((int32_t)a, (int32_t)b, acc); }
static inline int32_t hw_smlatt(uint32_t a, uint32_t b, int32_t acc) { return __smlatt((int32_t)a, (int32_t)b, acc); }
/* (a * b + 2^31) >> 32, rounded most significant word */
static inline int32_t hw_smmulr(int32_t a, int32_t b) {
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
/* acc + SMMULR(a, b): the product's rounded most significant word plus acc, in one instruction */
static inline int32_t hw_smmlar(int32_t a, int32_t b, int32_t acc) {
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
/* saturate to int8 */
static inline int32_t hw_ssat8(int32_t x) { return __ssat(x, 8); }
/* two int16 additions (halves wrap independently) */
static inline uint32_t hw_sadd16(uint32_t a, uint32_t b) { return (uint32_t)__sadd16((int16x2_t)a, (int16x2_t)b); }

#else

static inline int32_t hw_lo16(uint32_t x) { return (int16_t)(x & 0xFFFFu); }
static inline int32_t hw_hi16(uint32_t x) { return (int16_t)(x >> 16); }
static inline uint32_t hw_sxtb16(uint32_t x) {
    return ((uint32_t)(int32_t)(int8_t)(x & 0xFFu) & 0xFFFFu) | ((uint32_t)(int32_t)(int8_t)((x >> 16) & 0xFFu) << 16);
}
static inline uint32_t hw_sxtb16_ror8(uint32_t x) { return hw_sxtb16((x >> 8) | (x << 24)); }
static inline uint32_t hw_sxtab16(uint32_t a, uint32_t x) {
    const uint32_t b = hw_sxtb16(x);
    return ((a + b) & 0xFFFFu) | (((a >> 16) + (b >> 16)) << 16);
}
static inline uint32_t hw_sxtab16_ror8(uint32_t a, uint32_t x) { return hw_sxtab16(a, (x >> 8) | (x << 24)); }
static inline int32_t hw_smlad(uint32_t a, uint32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(hw_lo16(a) * hw_lo16(b)) + (uint32_t)(hw_hi16(a) * hw_hi16(b)));
}
static inline int32_t hw_smlabb(uint32_t a, uint32_t b, int32_t acc) { return acc + hw_lo16(a) * hw_lo16(b); }
static inline int32_t hw_smlatt(uint32_t a, uint32_t b, int32_t acc) { return acc + hw_hi16(a) * hw_hi16(b); }
static inline int32_t hw_smmulr(int32_t a, int32_t b) {
    return (int32_t)(((int64_t)a * (int64_t)b + 0x80000000ll) >> 32);
}
static inline int32_t hw_smmlar(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)hw_smmulr(a, b));
}
static inline int32_t hw_ssat8(int32_t x) { return x < -128 ? -128 : x > 127 ? 127 : x; }
static inline uint32_t hw_sadd16(uint32_t a, uint32_t b) {
    return ((a + b) & 0xFFFFu) | ((((a >> 16) + (b >> 16)) & 0xFFFFu) << 16);
}

#endif

#endif
