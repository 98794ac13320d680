/* int8 kernels for the Cortex-M7 (Armv7E-M DSP), bit-exact with the portable ones.
 *
 * What makes them cheaper, in instructions per MAC:
 *  - four int8 are read with one LDR and split into two int16x2 with SXTB16 (weights) or SXTAB16
 *    (inputs: the input zero point is subtracted in the same instruction); SMLAD then does two
 *    MACs per instruction (conv, pointwise, fully connected), SMLABB/SMLATT one MAC on each of
 *    four channels (depthwise);
 *  - pointwise and convolutions whose kh * kw * ic is a multiple of 4 (im2col straight into
 *    unpacked words when ic is, through an int8 column when not): each pixel pair's inputs are
 *    unpacked once for every output channel, and blocks of 2 output channels x 2 pixels run in
 *    assembly (kernels_s8_m7.S: 2 LDRD + 2 LDR + 4 SXTB16 + 8 SMLAD per 16 MACs, two groups per
 *    branch, the block's requantisation and stores included); fully connected layers unpack their
 *    input once and run a 1 x 2 assembly loop;
 *  - weights the blob stores unpacked (HW_INT8_Q15, blob v2: the exporter does so for the layers
 *    with >= 16 output pixels, within the board's flash) skip the weights' SXTB16: 4 LDRD + 8 SMLAD
 *    per 16 MACs (13 per 16 with the loop's compare and branch, against 17);
 *  - small convolutions (the 3x3x3 stem): an int16 im2col of two pixels and weights unpacked once
 *    per block of 16 output channels; blocks of 4 channels x 2 pixels do six loads and eight SMLAD
 *    per 16 MACs, with the 27-tap count known at compile time (no loop);
 *  - depthwise 3x3/5x5/7x7 with stride 1 or 2: per output row, the four channels' input rows sit
 *    in a zero-point-padded strip (one word per pixel, fixed pitch: every tap is an LDR with an
 *    immediate offset, every pixel sees a whole kernel, each input row is copied once), the zero
 *    point is folded into the bias, and 4, 3 or 2 output pixels (3x3, 5x5, 7x7) are computed per
 *    pass with each kernel row's weights in registers and each input column unpacked once; other
 *    depthwise layers take unrolled interior rows and border pixels that visit only their valid
 *    taps;
 *  - ADD rescales each input through a 256-entry table made by the portable requantisation;
 *  - requantisation is SMMLAR (product, rounding constant and output zero point in one
 *    instruction) plus one shift, and SSAT when the activation range is all of int8; exact for
 *    shifts in [-20, 8] when the accumulator bound allows, which covers every layer TFLite
 *    produced for our spaces and the zoo. Each kernel is compiled once per requantisation mode.
 * A layer outside that (or a depthwise layer with channels not a multiple of 4) runs on the
 * portable kernel. No arena scratch is used (the planned arena stays the whole activation
 * story); the kernels keep at most ~4.5 KB on the stack, and the linker scripts keep >= 8 KB free.
 * The floors of this design, in instructions: 17 per 16 MACs in the pointwise loop, 13 with
 * unpacked weights (all fourteen registers live; a larger block needs more), 6-7 per requantised
 * output, about 1.8 per MAC in the depthwise passes (2P accumulators + k weights + the strip in
 * thirteen registers). */
#include <string.h>

#include "kernels.h"
#include "simd.h"

#define MAX_DW_TAPS 64
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))
#define HW_OPAQUE(v) __asm__("" : "+r"(v))

typedef struct {
    int32_t mult, round, e, lsh, neg; /* mult and round first: one LDRD */
} rq_t;

/* gemmlowp: out = RoundingDivideByPOT(SRDHM(acc << left, mult), e) + zp. SRDHM(a, m) equals
 * SMMULR(a << 1, m) (both round half up on the 64-bit product) while a << 1 fits in int32, and
 * for e >= 1 RoundingDivideByPOT(r, e) == (r - (r < 0) + 2^(e-1)) >> e; zp * 2^e rides along. */
static int rq_make(rq_t *q, int32_t mult, int32_t shift, int32_t out_zp, int64_t acc_bound) {
    const int left = shift > 0 ? shift : 0, e = shift > 0 ? 0 : -shift;
    if (e > 20 || left > 8 || acc_bound > (INT32_MAX >> (left + 1))) return 0;
    q->mult = mult;
    q->lsh = left + 1;
    q->e = e;
    q->neg = e ? -1 : 0;
    q->round = (e ? 1 << (e - 1) : 0) + out_zp * (1 << e);
    return 1;
}

/* How a layer's outputs are requantised, a compile-time argument of the kernels:
 *  RQ_CLAMP: any exact channel, clamped to the activation range;
 *  RQ_SAT: the activation range is all of int8 (what TFLite produces almost always: calibrated
 *    ReLU6 outputs span [-128, 127] too), so SSAT clamps in one instruction;
 *  RQ_SIMPLE: RQ_SAT and every channel has lsh == 1 and e >= 1, which saves a load and an AND. */
enum { RQ_NONE = -1, RQ_CLAMP = 0, RQ_SAT = 1, RQ_SIMPLE = 2 };

/* Calls F(..., mode) with mode as a constant, so each variant compiles to its own code (F is
 * always inlined). */
#define BY_MODE(mode, F, ...)                     \
    do {                                          \
        if ((mode) == RQ_SIMPLE)                  \
            F(__VA_ARGS__, RQ_SIMPLE);            \
        else if ((mode) == RQ_SAT)                \
            F(__VA_ARGS__, RQ_SAT);               \
        else                                      \
            F(__VA_ARGS__, RQ_CLAMP);             \
    } while (0)

/* One function per mode for an always-inlined F (PARAMS: its parameters but the mode), so a
 * large kernel is not inlined three times into one function, whose registers would suffer. */
#define MODE_VARIANTS(F, PARAMS, ...)                                        \
    static NOINLINE void F##_clamp PARAMS { F(__VA_ARGS__, RQ_CLAMP); }             \
    static NOINLINE void F##_sat PARAMS { F(__VA_ARGS__, RQ_SAT); }                 \
    static NOINLINE void F##_simple PARAMS { F(__VA_ARGS__, RQ_SIMPLE); }
#define CALL_BY_MODE(mode, F, ...)                \
    do {                                          \
        if ((mode) == RQ_SIMPLE)                  \
            F##_simple(__VA_ARGS__);              \
        else if ((mode) == RQ_SAT)                \
            F##_sat(__VA_ARGS__);                 \
        else                                      \
            F##_clamp(__VA_ARGS__);               \
    } while (0)

/* The rounding division needs the sign of r = SMMULR(acc << lsh, mult); acc's sign serves: the
 * multiplier is positive, so acc >= 0 gives r >= 0 and acc < 0 gives r <= 0, and for r = 0 both
 * corrections give the same (2^(e-1) - 1 and 2^(e-1) are both below 2^e). That leaves SMMLAR to add
 * the rounding constant and zero point with the product: five instructions in RQ_SIMPLE. */
static ALWAYS_INLINE int8_t rq_out(int32_t acc, const rq_t *q, int lo, int hi, const int mode) {
    int32_t r;
    if (mode == RQ_SIMPLE) {
        r = hw_smmlar(acc * 2, q->mult, q->round);
        return (int8_t)hw_ssat8((r + (acc >> 31)) >> q->e);
    }
    r = hw_smmlar((int32_t)((uint32_t)acc << q->lsh), q->mult, q->round);
    r = (r + ((acc >> 31) & q->neg)) >> q->e;
    if (mode == RQ_SAT) return (int8_t)hw_ssat8(r);
    return (int8_t)(r < lo ? lo : r > hi ? hi : r);
}

/* |bias + sum(w * (x - zp))| over n taps is at most this. */
static int64_t acc_bound(const int32_t *bias, int ch, int n) {
    return (bias ? (bias[ch] < 0 ? -(int64_t)bias[ch] : bias[ch]) : 0) + (int64_t)n * 127 * 255;
}

/* RQ_NONE when the fast requantisation is not exact for some channel (use the portable kernel),
 * else the cheapest exact mode. */
static int requant_mode(const int32_t *mult, const int32_t *shift, int n, int32_t out_zp, const int32_t *bias,
                        int n_taps, int lo, int hi) {
    rq_t q;
    const int sat = lo == -128 && hi == 127;
    int simple = sat;
    for (int c = 0; c < n; c++) {
        if (!rq_make(&q, mult[c], shift[c], out_zp, acc_bound(bias, c, n_taps))) return RQ_NONE;
        simple &= q.lsh == 1 && q.e >= 1;
    }
    return simple ? RQ_SIMPLE : sat ? RQ_SAT : RQ_CLAMP;
}

/* Two inputs (x, x + dx) times two weight rows (w, w + dw) over n int8: the 2 x 2 block. With
 * dx == dw (pointwise; im2col columns) both second operands share one offset register. */
static ALWAYS_INLINE void dot_2x2(const int8_t *x, int dx, const int8_t *w, int dw, int n, uint32_t nzp, int32_t *a) {
    int32_t s00 = a[0], s01 = a[1], s10 = a[2], s11 = a[3];
    const int8_t *end = w + (n & ~3);
    while (w != end) {
        const uint32_t wa = hw_read_s8x4(w), xa = hw_read_s8x4(x), xb = hw_read_s8x4(x + dx);
        uint32_t we = hw_sxtb16(wa), wo = hw_sxtb16_ror8(wa);
        const uint32_t xae = hw_sxtab16(nzp, xa), xao = hw_sxtab16_ror8(nzp, xa);
        const uint32_t xbe = hw_sxtab16(nzp, xb), xbo = hw_sxtab16_ror8(nzp, xb);
        s00 = hw_smlad(xae, we, s00);
        s00 = hw_smlad(xao, wo, s00);
        s10 = hw_smlad(xbe, we, s10);
        s10 = hw_smlad(xbo, wo, s10);
        const uint32_t wb = hw_read_s8x4(w + dw);
        we = hw_sxtb16(wb);
        wo = hw_sxtb16_ror8(wb);
        s01 = hw_smlad(xae, we, s01);
        s01 = hw_smlad(xao, wo, s01);
        s11 = hw_smlad(xbe, we, s11);
        s11 = hw_smlad(xbo, wo, s11);
        w += 4;
        x += 4;
    }
    const int32_t zp = -(int16_t)(nzp & 0xFFFFu);
    for (int k = 0; k < (n & 3); k++) {
        const int32_t xa = x[k] - zp, xb = x[dx + k] - zp;
        s00 += xa * w[k];
        s01 += xa * w[dw + k];
        s10 += xb * w[k];
        s11 += xb * w[dw + k];
    }
    a[0] = s00, a[1] = s01, a[2] = s10, a[3] = s11;
}

/* One input times two weight rows (w, w + dw): an odd last pixel, fully connected layers. */
static ALWAYS_INLINE void dot_1x2(const int8_t *x, const int8_t *w, int dw, int n, uint32_t nzp, int32_t *a) {
    int32_t s0 = a[0], s1 = a[1];
    const int8_t *end = w + (n & ~3);
    while (w != end) {
        const uint32_t wa = hw_read_s8x4(w), wb = hw_read_s8x4(w + dw), v = hw_read_s8x4(x);
        const uint32_t xe = hw_sxtab16(nzp, v), xo = hw_sxtab16_ror8(nzp, v);
        s0 = hw_smlad(xe, hw_sxtb16(wa), s0);
        s0 = hw_smlad(xo, hw_sxtb16_ror8(wa), s0);
        s1 = hw_smlad(xe, hw_sxtb16(wb), s1);
        s1 = hw_smlad(xo, hw_sxtb16_ror8(wb), s1);
        w += 4;
        x += 4;
    }
    const int32_t zp = -(int16_t)(nzp & 0xFFFFu);
    for (int k = 0; k < (n & 3); k++) {
        s0 += (x[k] - zp) * w[k];
        s1 += (x[k] - zp) * w[dw + k];
    }
    a[0] = s0, a[1] = s1;
}

/* Two rows' inputs unpacked once (zero point subtracted) serve every pair of output channels:
 * per group of 4 channels, xq holds (row 0 even, row 0 odd, row 1 even, row 1 odd) int16 pairs, so
 * the inner loop is 2 LDRD + 2 LDR + 4 SXTB16 + 8 SMLAD per 16 MACs. */
#define XQ_MAX 512 /* channels: 2 KB on the stack */
#define FC_Q_MAX 1024 /* fully connected inputs: 2 KB on the stack */

/* n int8 -> n4 / 2 words: per group of 4, (v0, v2) then (v1, v3) as int16 pairs, plus nzp. */
static ALWAYS_INLINE void unpack_q15(const int8_t *v, int n, uint32_t nzp, uint32_t *out) {
    int k = 0;
#pragma GCC unroll 8
    for (; k + 4 <= n; k += 4, out += 2) {
        const uint32_t x = hw_read_s8x4(v + k);
        out[0] = hw_sxtab16(nzp, x);
        out[1] = hw_sxtab16_ror8(nzp, x);
    }
    if (k < n) { /* the tail group, zero-filled */
        int8_t t[4] = {0, 0, 0, 0};
        for (int i = 0; k + i < n; i++) t[i] = v[k + i];
        const uint32_t x = hw_read_s8x4(t);
        const uint32_t valid_lo = n - k > 2 ? 0xFFFFFFFFu : 0xFFFFu, valid_hi = n - k > 3 ? 0xFFFFFFFFu : 0xFFFFu;
        out[0] = hw_sxtab16(nzp, x) & valid_lo;
        out[1] = hw_sxtab16_ror8(nzp, x) & (n - k > 1 ? valid_hi : 0u);
    }
}

static ALWAYS_INLINE void unpack_rows(const int8_t *x0, const int8_t *x1, int groups, uint32_t nzp, uint32_t *xq) {
    for (int g = 0; g < groups; g++, xq += 4) {
        const uint32_t a = hw_read_s8x4(x0 + 4 * g), b = hw_read_s8x4(x1 + 4 * g);
        xq[0] = hw_sxtab16(nzp, a);
        xq[1] = hw_sxtab16_ror8(nzp, a);
        xq[2] = hw_sxtab16(nzp, b);
        xq[3] = hw_sxtab16_ror8(nzp, b);
    }
}

/* Two weight rows (w0, w1) times two unpacked input rows over `groups` groups of 4: the 2 x 2
 * block, accumulated into a[0..3] = (row 0 x w0, row 0 x w1, row 1 x w0, row 1 x w1). On the
 * Cortex-M7 the loop is assembly: from C, GCC split each LDRD into two LDRs and kept the loop bound
 * on the stack (21-22 instructions per group); here a group is 2 LDRD + 2 LDR + 4 SXTB16 + 8 SMLAD,
 * and two groups share one compare and branch (17 instructions per 16 MACs). Fourteen registers
 * are live in the loop, all a Cortex-M has; a 2 x 4 or 4 x 2 block would need eighteen. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define DOT_2X2_GROUP                                 \
    "ldrd %[a0], %[a1], [%[xq]], #8\n\t"              \
    "ldrd %[b0], %[b1], [%[xq]], #8\n\t"              \
    "ldr %[v], [%[w0]], #4\n\t"                       \
    "sxtb16 %[we], %[v]\n\t"                          \
    "sxtb16 %[v], %[v], ror #8\n\t"                   \
    "smlad %[s00], %[a0], %[we], %[s00]\n\t"          \
    "smlad %[s00], %[a1], %[v], %[s00]\n\t"           \
    "smlad %[s10], %[b0], %[we], %[s10]\n\t"          \
    "smlad %[s10], %[b1], %[v], %[s10]\n\t"           \
    "ldr %[v], [%[w1]], #4\n\t"                       \
    "sxtb16 %[we], %[v]\n\t"                          \
    "sxtb16 %[v], %[v], ror #8\n\t"                   \
    "smlad %[s01], %[a0], %[we], %[s01]\n\t"          \
    "smlad %[s01], %[a1], %[v], %[s01]\n\t"           \
    "smlad %[s11], %[b0], %[we], %[s11]\n\t"          \
    "smlad %[s11], %[b1], %[v], %[s11]\n\t"
#define DOT_2X2_OPERANDS                                                                                      \
    : [xq] "+r"(xq), [w0] "+r"(w0), [w1] "+r"(w1), [s00] "+r"(s00), [s01] "+r"(s01), [s10] "+r"(s10),         \
      [s11] "+r"(s11), [a0] "=&r"(a0), [a1] "=&r"(a1), [b0] "=&r"(b0), [b1] "=&r"(b1), [v] "=&r"(v), [we] "=&r"(we)

static NOINLINE void dot_2x2_q(const uint32_t *xq, const int8_t *w0, const int8_t *w1, int groups, int32_t *a) {
    int32_t s00 = a[0], s01 = a[1], s10 = a[2], s11 = a[3];
    uint32_t a0, a1, b0, b1, v, we;
    if (groups & 1) __asm__(DOT_2X2_GROUP DOT_2X2_OPERANDS : : "memory");
    const uint32_t *end = xq + 4 * (groups & ~1);
    if (groups > 1)
        __asm__("1:\n\t" DOT_2X2_GROUP DOT_2X2_GROUP "cmp %[xq], %[end]\n\tbne 1b\n\t" DOT_2X2_OPERANDS
                : [end] "r"(end) : "cc", "memory");
    a[0] = s00, a[1] = s01, a[2] = s10, a[3] = s11;
}
#else
static NOINLINE void dot_2x2_q(const uint32_t *xq, const int8_t *w0, const int8_t *w1, int groups, int32_t *a) {
    int32_t s00 = a[0], s01 = a[1], s10 = a[2], s11 = a[3];
    for (int g = 0; g < groups; g++, xq += 4, w0 += 4, w1 += 4) {
        uint32_t v = hw_read_s8x4(w0), we = hw_sxtb16(v), wo = hw_sxtb16_ror8(v);
        s00 = hw_smlad(xq[0], we, s00);
        s00 = hw_smlad(xq[1], wo, s00);
        s10 = hw_smlad(xq[2], we, s10);
        s10 = hw_smlad(xq[3], wo, s10);
        v = hw_read_s8x4(w1);
        we = hw_sxtb16(v);
        wo = hw_sxtb16_ror8(v);
        s01 = hw_smlad(xq[0], we, s01);
        s01 = hw_smlad(xq[1], wo, s01);
        s11 = hw_smlad(xq[2], we, s11);
        s11 = hw_smlad(xq[3], wo, s11);
    }
    a[0] = s00, a[1] = s01, a[2] = s10, a[3] = s11;
}
#endif

/* One unpacked input row (per group of 4: even, odd int16 pairs) times two weight rows: fully
 * connected layers (11 instructions per 8 MACs, two groups per compare and branch). */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define DOT_1X2_GROUP                                 \
    "ldrd %[x0], %[x1], [%[xq]], #8\n\t"              \
    "ldr %[v], [%[w0]], #4\n\t"                       \
    "sxtb16 %[we], %[v]\n\t"                          \
    "sxtb16 %[v], %[v], ror #8\n\t"                   \
    "smlad %[s0], %[x0], %[we], %[s0]\n\t"            \
    "smlad %[s0], %[x1], %[v], %[s0]\n\t"             \
    "ldr %[v], [%[w1]], #4\n\t"                       \
    "sxtb16 %[we], %[v]\n\t"                          \
    "sxtb16 %[v], %[v], ror #8\n\t"                   \
    "smlad %[s1], %[x0], %[we], %[s1]\n\t"            \
    "smlad %[s1], %[x1], %[v], %[s1]\n\t"
#define DOT_1X2_OPERANDS                                                                                   \
    : [xq] "+r"(xq), [w0] "+r"(w0), [w1] "+r"(w1), [s0] "+r"(s0), [s1] "+r"(s1), [x0] "=&r"(x0),           \
      [x1] "=&r"(x1), [v] "=&r"(v), [we] "=&r"(we)

static NOINLINE void dot_1x2_q(const uint32_t *xq, const int8_t *w0, const int8_t *w1, int groups, int32_t *a) {
    int32_t s0 = a[0], s1 = a[1];
    uint32_t x0, x1, v, we;
    if (groups & 1) __asm__(DOT_1X2_GROUP DOT_1X2_OPERANDS : : "memory");
    const uint32_t *end = xq + 2 * (groups & ~1);
    if (groups > 1)
        __asm__("1:\n\t" DOT_1X2_GROUP DOT_1X2_GROUP "cmp %[xq], %[end]\n\tbne 1b\n\t" DOT_1X2_OPERANDS
                : [end] "r"(end) : "cc", "memory");
    a[0] = s0, a[1] = s1;
}
#else
static NOINLINE void dot_1x2_q(const uint32_t *xq, const int8_t *w0, const int8_t *w1, int groups, int32_t *a) {
    int32_t s0 = a[0], s1 = a[1];
    for (int g = 0; g < groups; g++, xq += 2, w0 += 4, w1 += 4) {
        uint32_t v = hw_read_s8x4(w0);
        s0 = hw_smlad(xq[0], hw_sxtb16(v), s0);
        s0 = hw_smlad(xq[1], hw_sxtb16_ror8(v), s0);
        v = hw_read_s8x4(w1);
        s1 = hw_smlad(xq[0], hw_sxtb16(v), s1);
        s1 = hw_smlad(xq[1], hw_sxtb16_ror8(v), s1);
    }
    a[0] = s0, a[1] = s1;
}
#endif

/* Weights the blob stores unpacked (HW_INT8_Q15: int16, per group of 4 the even then the odd pair):
 * the same 2 x 2 block without unpacking them, 4 LDRD + 8 SMLAD per 16 MACs (two groups per compare
 * and branch: 13 instructions per 16 MACs against 17). The flash they take doubles; the exporter
 * stores unpacked only the layers whose MACs pay for it (hwnas_deploy/mcu/blob.py). */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define DOT_2X2_W16_GROUP                             \
    "ldrd %[a0], %[a1], [%[xq]], #8\n\t"              \
    "ldrd %[c0], %[c1], [%[w0]], #8\n\t"              \
    "ldrd %[d0], %[d1], [%[w1]], #8\n\t"              \
    "smlad %[s00], %[a0], %[c0], %[s00]\n\t"          \
    "smlad %[s00], %[a1], %[c1], %[s00]\n\t"          \
    "smlad %[s01], %[a0], %[d0], %[s01]\n\t"          \
    "smlad %[s01], %[a1], %[d1], %[s01]\n\t"          \
    "ldrd %[a0], %[a1], [%[xq]], #8\n\t"              \
    "smlad %[s10], %[a0], %[c0], %[s10]\n\t"          \
    "smlad %[s10], %[a1], %[c1], %[s10]\n\t"          \
    "smlad %[s11], %[a0], %[d0], %[s11]\n\t"          \
    "smlad %[s11], %[a1], %[d1], %[s11]\n\t"
#define DOT_2X2_W16_OPERANDS                                                                                  \
    : [xq] "+r"(xq), [w0] "+r"(w0), [w1] "+r"(w1), [s00] "+r"(s00), [s01] "+r"(s01), [s10] "+r"(s10),         \
      [s11] "+r"(s11), [a0] "=&r"(a0), [a1] "=&r"(a1), [c0] "=&r"(c0), [c1] "=&r"(c1), [d0] "=&r"(d0),          \
      [d1] "=&r"(d1)

static NOINLINE void dot_2x2_w16(const uint32_t *xq, const int16_t *w0, const int16_t *w1, int groups, int32_t *a) {
    int32_t s00 = a[0], s01 = a[1], s10 = a[2], s11 = a[3];
    uint32_t a0, a1, c0, c1, d0, d1;
    for (int g = 0; g < groups; g++) __asm__(DOT_2X2_W16_GROUP DOT_2X2_W16_OPERANDS : : "memory");
    a[0] = s00, a[1] = s01, a[2] = s10, a[3] = s11;
}
#else
static ALWAYS_INLINE uint32_t read_w16x2(const int16_t *w) {
    uint32_t v;
    memcpy(&v, w, 4);
    return v;
}

static NOINLINE void dot_2x2_w16(const uint32_t *xq, const int16_t *w0, const int16_t *w1, int groups, int32_t *a) {
    int32_t s00 = a[0], s01 = a[1], s10 = a[2], s11 = a[3];
    for (int g = 0; g < groups; g++, xq += 4, w0 += 4, w1 += 4) {
        const uint32_t c0 = read_w16x2(w0), c1 = read_w16x2(w0 + 2), d0 = read_w16x2(w1), d1 = read_w16x2(w1 + 2);
        s00 = hw_smlad(xq[0], c0, s00);
        s00 = hw_smlad(xq[1], c1, s00);
        s01 = hw_smlad(xq[0], d0, s01);
        s01 = hw_smlad(xq[1], d1, s01);
        s10 = hw_smlad(xq[2], c0, s10);
        s10 = hw_smlad(xq[3], c1, s10);
        s11 = hw_smlad(xq[2], d0, s11);
        s11 = hw_smlad(xq[3], d1, s11);
    }
    a[0] = s00, a[1] = s01, a[2] = s10, a[3] = s11;
}
#endif

/* Output channels o, o + 1 of a pixel pair (weights int8, or unpacked with w16), requantised in
 * RQ_SAT (or RQ_SIMPLE) mode and stored: kernels_s8_m7.S on the Cortex-M7 (see there why), the
 * C below on the host. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
void hw_pair_2x2_q15_sat(const uint32_t *xq, const int8_t *w0, int n, int groups, const int32_t *b, const rq_t *q,
                         int8_t *y, int o_n);
void hw_pair_2x2_w16_sat(const uint32_t *xq, const int16_t *w0, int n, int groups, const int32_t *b, const rq_t *q,
                         int8_t *y, int o_n);
#endif

/* The 2 x 2 block's sums for output channels o, o1 over weights w (n per channel). */
static ALWAYS_INLINE void dot_2x2_rows(const uint32_t *xq, const void *w, int n, int o, int o1, int32_t *a,
                                       const int w16) {
    if (w16)
        dot_2x2_w16(xq, (const int16_t *)w + o * n, (const int16_t *)w + o1 * n, n / 4, a);
    else
        dot_2x2_q(xq, (const int8_t *)w + o * n, (const int8_t *)w + o1 * n, n / 4, a);
}

static ALWAYS_INLINE void pair_2x2_sat(const uint32_t *xq, const void *w, int n, int o, const int32_t *b,
                                       const rq_t *q, int8_t *y, int o_n, const int w16) {
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    if (w16)
        hw_pair_2x2_w16_sat(xq, (const int16_t *)w + o * n, n, n / 4, b, q, y, o_n);
    else
        hw_pair_2x2_q15_sat(xq, (const int8_t *)w + o * n, n, n / 4, b, q, y, o_n);
#else
    int32_t a[4] = {b[0], b[1], b[0], b[1]};
    dot_2x2_rows(xq, w, n, o, o + 1, a, w16);
    y[0] = rq_out(a[0], &q[0], -128, 127, RQ_SAT);
    y[1] = rq_out(a[1], &q[1], -128, 127, RQ_SAT);
    y[o_n] = rq_out(a[2], &q[0], -128, 127, RQ_SAT);
    y[o_n + 1] = rq_out(a[3], &q[1], -128, 127, RQ_SAT);
#endif
}

/* Every output channel pair of one row pair over unpacked inputs (rows: 2, or 1 for a last odd
 * row, whose second row is computed and not stored); weights int8, or unpacked with w16. */
static ALWAYS_INLINE void rowpair(const uint32_t *xq, int n, const void *w, int o_begin, int o_end, int o_n,
                                  const int32_t *bias, int8_t *y, const rq_t *q, int lo, int hi, int rows,
                                  const int w16, const int mode) {
    static const int32_t no_bias[2] = {0, 0};
    int o = o_begin;
    if (mode != RQ_CLAMP && rows == 2)
        for (; o + 1 < o_end; o += 2)
            pair_2x2_sat(xq, w, n, o, bias ? bias + o : no_bias, &q[o - o_begin], y + o, o_n, w16);
    for (; o < o_end; o += 2) {
        const int o1 = o + 1 < o_end ? o + 1 : o;
        const int32_t b0 = bias ? bias[o] : 0, b1 = bias ? bias[o1] : 0;
        int32_t a[4] = {b0, b1, b0, b1};
        dot_2x2_rows(xq, w, n, o, o1, a, w16);
        const rq_t q0 = q[o - o_begin], q1 = q[o1 - o_begin]; /* each loaded once for both rows */
        y[o] = rq_out(a[0], &q0, lo, hi, mode);
        y[o1] = rq_out(a[1], &q1, lo, hi, mode);
        if (rows == 2) {
            y[o_n + o] = rq_out(a[2], &q0, lo, hi, mode);
            y[o_n + o1] = rq_out(a[3], &q1, lo, hi, mode);
        }
    }
}

#define ROWPAIR_PARAMS                                                                                             \
    (const uint32_t *xq, int n, const int8_t *w, int o_begin, int o_end, int o_n, const int32_t *bias, int8_t *y, \
     const rq_t *q, int lo, int hi, int rows)
#define ROWPAIR_W16_PARAMS                                                                                          \
    (const uint32_t *xq, int n, const int16_t *w, int o_begin, int o_end, int o_n, const int32_t *bias, int8_t *y, \
     const rq_t *q, int lo, int hi, int rows)
static ALWAYS_INLINE void rowpair_q(const uint32_t *xq, int n, const int8_t *w, int o_begin, int o_end, int o_n,
                                   const int32_t *bias, int8_t *y, const rq_t *q, int lo, int hi, int rows,
                                   const int mode) {
    rowpair(xq, n, w, o_begin, o_end, o_n, bias, y, q, lo, hi, rows, 0, mode);
}

static ALWAYS_INLINE void rowpair_w16(const uint32_t *xq, int n, const int16_t *w, int o_begin, int o_end, int o_n,
                                     const int32_t *bias, int8_t *y, const rq_t *q, int lo, int hi, int rows,
                                     const int mode) {
    rowpair(xq, n, w, o_begin, o_end, o_n, bias, y, q, lo, hi, rows, 1, mode);
}

MODE_VARIANTS(rowpair_q, ROWPAIR_PARAMS, xq, n, w, o_begin, o_end, o_n, bias, y, q, lo, hi, rows)
MODE_VARIANTS(rowpair_w16, ROWPAIR_W16_PARAMS, xq, n, w, o_begin, o_end, o_n, bias, y, q, lo, hi, rows)

/* rows of n int8 (x, stride n) times weights [o][n] -> out[row * o_n + o]: pointwise and fully
 * connected layers, and convolutions over their im2col buffer (rows = 2). */
static ALWAYS_INLINE void matmul_s8(const int8_t *x, int rows, int n, int32_t in_zp, const int8_t *w, int o_begin,
                                    int o_end, int o_n, const int32_t *bias, int8_t *out, const rq_t *q, int lo,
                                    int hi, const int mode) {
    const uint32_t nzp = hw_pack16x2(-in_zp);
    /* with the 2 x 2 block in assembly this beats the path below at every width (MobileNetV1's
     * 8-input layer: 3.59 against 3.73 instructions/MAC; the 16-input one 2.25 against 2.71) */
    if (rows >= 2 && (n & 3) == 0 && n <= XQ_MAX) {
        uint32_t xq[2 * XQ_MAX / 2] __attribute__((aligned(8)));
        int r = 0;
        for (; r + 1 < rows; r += 2) {
            unpack_rows(x + r * n, x + (r + 1) * n, n / 4, nzp, xq);
            CALL_BY_MODE(mode, rowpair_q, xq, n, w, o_begin, o_end, o_n, bias, out + r * o_n, q, lo, hi, 2);
        }
        if (r == rows) return;
        x += r * n; /* an odd last row: below */
        out += r * o_n;
        rows = 1;
    }
    if (rows == 1 && (n & 3) == 0 && n <= FC_Q_MAX) { /* fully connected layers: the input unpacked once */
        uint32_t xq[FC_Q_MAX / 2] __attribute__((aligned(8)));
        unpack_q15(x, n, nzp, xq);
        for (int o = o_begin; o < o_end; o += 2) {
            const int o1 = o + 1 < o_end ? o + 1 : o;
            int32_t a[2] = {bias ? bias[o] : 0, bias ? bias[o1] : 0};
            dot_1x2_q(xq, w + o * n, w + o1 * n, n / 4, a);
            out[o] = rq_out(a[0], &q[o - o_begin], lo, hi, mode);
            out[o1] = rq_out(a[1], &q[o1 - o_begin], lo, hi, mode);
        }
        return;
    }
    for (int o = o_begin; o < o_end; o += 2) {
        const int o1 = o + 1 < o_end ? o + 1 : o; /* an odd last channel pairs with itself */
        const int8_t *w0 = w + o * n;
        const int dw = (o1 - o) * n;
        const rq_t *q0 = &q[o - o_begin], *q1 = &q[o1 - o_begin];
        const int32_t b0 = bias ? bias[o] : 0, b1 = bias ? bias[o1] : 0;
        int r = 0;
        for (; r + 1 < rows; r += 2) {
            int32_t a[4] = {b0, b1, b0, b1};
            dot_2x2(x + r * n, n, w0, dw, n, nzp, a);
            int8_t *y = out + r * o_n;
            y[o] = rq_out(a[0], q0, lo, hi, mode);
            y[o1] = rq_out(a[1], q1, lo, hi, mode);
            y[o_n + o] = rq_out(a[2], q0, lo, hi, mode);
            y[o_n + o1] = rq_out(a[3], q1, lo, hi, mode);
        }
        if (r < rows) {
            int32_t a[2] = {b0, b1};
            dot_1x2(x + r * n, w0, dw, n, nzp, a);
            out[r * o_n + o] = rq_out(a[0], q0, lo, hi, mode);
            out[r * o_n + o1] = rq_out(a[1], q1, lo, hi, mode);
        }
    }
}

/* Output channels are processed in blocks whose requantisation parameters live on the stack. */
#define RQ_BLOCK 32

static int rq_block(rq_t *q, int ob, int o_n, int block, const int32_t *mult, const int32_t *shift,
                    int32_t out_zp) {
    const int oe = ob + block < o_n ? ob + block : o_n;
    for (int o = ob; o < oe; o++) rq_make(&q[o - ob], mult[o], shift[o], out_zp, 0);
    return oe;
}

static void matmul_layer(const int8_t *x, int rows, int n, int32_t in_zp, const int8_t *w, int o_n,
                         const int32_t *bias, int8_t *out, int32_t out_zp, const int32_t *mult, const int32_t *shift,
                         int lo, int hi, int mode) {
    rq_t q[RQ_BLOCK];
    for (int ob = 0; ob < o_n; ob += RQ_BLOCK) {
        const int oe = rq_block(q, ob, o_n, RQ_BLOCK, mult, shift, out_zp);
        BY_MODE(mode, matmul_s8, x, rows, n, in_zp, w, ob, oe, o_n, bias, out, q, lo, hi);
    }
}

/* Pointwise layers over unpacked weights (n % 4 == 0, n <= XQ_MAX): each row pair unpacked once for
 * every output channel pair; a last odd row is unpacked twice and stored once. */
static void matmul_w16_layer(const int8_t *x, int rows, int n, int32_t in_zp, const int16_t *w, int o_n,
                             const int32_t *bias, int8_t *out, int32_t out_zp, const int32_t *mult,
                             const int32_t *shift, int lo, int hi, int mode) {
    const uint32_t nzp = hw_pack16x2(-in_zp);
    uint32_t xq[2 * XQ_MAX / 2] __attribute__((aligned(8)));
    rq_t q[RQ_BLOCK];
    for (int ob = 0; ob < o_n; ob += RQ_BLOCK) {
        const int oe = rq_block(q, ob, o_n, RQ_BLOCK, mult, shift, out_zp);
        for (int r = 0; r < rows; r += 2) {
            const int pair = r + 1 < rows;
            unpack_rows(x + r * n, x + (r + pair) * n, n / 4, nzp, xq);
            CALL_BY_MODE(mode, rowpair_w16, xq, n, w, ob, oe, o_n, bias, out + r * o_n, q, lo, hi, pair ? 2 : 1);
        }
    }
}

/* Largest kh * kw * ic a convolution may have for the im2col path (two columns on the stack). */
#define IM2COL_MAX 1024

/* newlib-nano's memcpy/memset go byte by byte; kernel rows are short, so copy words inline. */
static ALWAYS_INLINE void copy_s8(int8_t *dst, const int8_t *src, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint32_t v = hw_read_s8x4(src + i);
        memcpy(dst + i, &v, 4);
    }
    for (; i < n; i++) dst[i] = src[i];
}

static ALWAYS_INLINE void fill_s8(int8_t *dst, int8_t value, int n) {
    for (int i = 0; i < n; i++) dst[i] = value;
}

/* The receptive field of output pixel (oy, ox) as one column, padding filled with the input zero
 * point (so it contributes nothing, as TFLite's padding). */
static void im2col(const hw_conv_params_t *p, const int8_t *in, int oy, int ox, int8_t *col) {
    const int ic = p->is.c, row_n = p->kw * ic;
    const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    const int inside_x = ix0 >= 0 && ix0 + p->kw <= p->is.w;
    const int8_t zp = (int8_t)p->in_zp;
    for (int ky = 0; ky < p->kh; ky++, col += row_n) {
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= p->is.h) {
            fill_s8(col, zp, row_n);
        } else if (inside_x) {
            copy_s8(col, in + (iy * p->is.w + ix0) * ic, row_n);
        } else {
            for (int kx = 0; kx < p->kw; kx++) {
                const int ix = ix0 + kx;
                if (ix < 0 || ix >= p->is.w)
                    fill_s8(col + kx * ic, zp, ic);
                else
                    copy_s8(col + kx * ic, in + (iy * p->is.w + ix) * ic, ic);
            }
        }
    }
}

/* Small kernels (the 3x3x3 stem): kh * kw * ic <= SMALL_KERNEL int8, rounded up to groups of 4.
 * Both operands are unpacked to int16 pairs once (the weights per block of output channels, each
 * column per pixel pair, with the zero point subtracted and padding as zeros). */
#define SMALL_KERNEL 64
#define SMALL_BLOCK 16 /* output channels whose unpacked weights sit on the stack at once (2 KB) */

/* One block of 4 output channels x 2 pixels over `words` unpacked words: per word, two input and
 * four weight loads feed eight SMLAD (16 MACs). x: the two pixels' columns, SMALL_KERNEL / 2
 * words apart; w: four channels' unpacked weights, as far apart. */
static ALWAYS_INLINE void small_dot_4x2_body(const uint32_t *x, const uint32_t *w, const int32_t *b,
                                             const int words, int32_t *a) {
    int32_t a0 = b[0], a1 = b[1], a2 = b[2], a3 = b[3], b0 = a0, b1 = a1, b2 = a2, b3 = a3;
    const int n = SMALL_KERNEL / 2;
#pragma GCC unroll 32
    for (int k = 0; k < words; k++) {
        const uint32_t x0 = x[k], x1 = x[n + k];
        uint32_t v = w[k];
        a0 = hw_smlad(x0, v, a0);
        b0 = hw_smlad(x1, v, b0);
        v = w[n + k];
        a1 = hw_smlad(x0, v, a1);
        b1 = hw_smlad(x1, v, b1);
        v = w[2 * n + k];
        a2 = hw_smlad(x0, v, a2);
        b2 = hw_smlad(x1, v, b2);
        v = w[3 * n + k];
        a3 = hw_smlad(x0, v, a3);
        b3 = hw_smlad(x1, v, b3);
    }
    a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3, a[4] = b0, a[5] = b1, a[6] = b2, a[7] = b3;
}

static NOINLINE void small_dot_4x2_stem(const uint32_t *x, const uint32_t *w, const int32_t *b, int32_t *a) {
    small_dot_4x2_body(x, w, b, 14, a); /* 3x3x3: 27 taps, 14 words */
}

static NOINLINE void small_dot_4x2_any(const uint32_t *x, const uint32_t *w, const int32_t *b, int words,
                                       int32_t *a) {
    small_dot_4x2_body(x, w, b, words, a);
}

/* im2col for a small kernel whose rows (kw * ic int8) have a compile-time length: an interior
 * pixel's rows are copied with constant-size memcpy (inline word moves). */
static ALWAYS_INLINE void im2col_small(const hw_conv_params_t *p, const int8_t *in, int oy, int ox, int8_t *col,
                                       const int kh, const int row_n) {
    const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    if (ix0 < 0 || ix0 + p->kw > p->is.w || iy0 < 0 || iy0 + kh > p->is.h) {
        im2col(p, in, oy, ox, col);
        return;
    }
    const int8_t *src = in + (iy0 * p->is.w + ix0) * p->is.c;
    const int in_row = p->is.w * p->is.c;
#pragma GCC unroll 7
    for (int ky = 0; ky < kh; ky++) memcpy(col + ky * row_n, src + ky * in_row, row_n);
}

static ALWAYS_INLINE void conv_small_kernel(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                            const int32_t *bias, int8_t *out, const int words, const int mode) {
    const int oc_n = p->os.c, lo = p->act_min, hi = p->act_max;
    const int kernel_n = p->kh * p->kw * p->is.c;
    const int pixels = p->os.h * p->os.w;
    const int stem = words == 14 && p->kh == 3 && p->kw * p->is.c == 9;
    const uint32_t nzp = hw_pack16x2(-p->in_zp);
    /* the tail of the last group of 4 is never used (its weights unpack to zero), but is read */
    int8_t col8[2][SMALL_KERNEL] __attribute__((aligned(4))) = {{0}};
    uint32_t col[2][SMALL_KERNEL / 2] __attribute__((aligned(8)));
    uint32_t wq[SMALL_BLOCK][SMALL_KERNEL / 2] __attribute__((aligned(8)));
    rq_t q[SMALL_BLOCK];
    int32_t bq[SMALL_BLOCK];
    for (int ob = 0; ob < oc_n; ob += SMALL_BLOCK) {
        const int oe = rq_block(q, ob, oc_n, SMALL_BLOCK, p->mult, p->shift, p->out_zp);
        for (int o = ob; o < ob + SMALL_BLOCK; o++) bq[o - ob] = bias && o < oe ? bias[o] : 0;
        for (int o = ob; o < oe; o++) unpack_q15(w + o * kernel_n, kernel_n, 0, wq[o - ob]);
        for (int o = oe; o < ob + SMALL_BLOCK; o++) memset(wq[o - ob], 0, sizeof wq[0]); /* a last partial 4x2 block */
        for (int px = 0; px < pixels; px += 2) {
            const int rows = px + 1 < pixels ? 2 : 1;
            for (int r = 0; r < rows; r++) {
                const int oy = (px + r) / p->os.w, ox = (px + r) % p->os.w;
                if (stem)
                    im2col_small(p, in, oy, ox, col8[r], 3, 9);
                else
                    im2col(p, in, oy, ox, col8[r]);
                unpack_q15(col8[r], 2 * words, nzp, col[r]); /* whole groups of 4: the tail is read as is */
            }
            int8_t *y = out + px * oc_n;
            for (int o = ob; o < oe; o += 4) {
                int32_t a[8];
                if (stem)
                    small_dot_4x2_stem(col[0], wq[o - ob], &bq[o - ob], a);
                else
                    small_dot_4x2_any(col[0], wq[o - ob], &bq[o - ob], words, a);
                const rq_t *qo = &q[o - ob];
                if (oe - o >= 4 && rows == 2) {
#pragma GCC unroll 4
                    for (int i = 0; i < 4; i++) {
                        y[o + i] = rq_out(a[i], &qo[i], lo, hi, mode);
                        y[oc_n + o + i] = rq_out(a[4 + i], &qo[i], lo, hi, mode);
                    }
                } else {
                    for (int i = 0; i < 4 && o + i < oe; i++) {
                        y[o + i] = rq_out(a[i], &qo[i], lo, hi, mode);
                        if (rows == 2) y[oc_n + o + i] = rq_out(a[4 + i], &qo[i], lo, hi, mode);
                    }
                }
            }
        }
    }
}

static ALWAYS_INLINE void conv_small_stem(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                          const int32_t *bias, int8_t *out, const int mode) {
    conv_small_kernel(p, in, w, bias, out, 14, mode); /* 3x3x3: 27 taps, 14 words */
}

static ALWAYS_INLINE void conv_small_any(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                         const int32_t *bias, int8_t *out, const int mode) {
    conv_small_kernel(p, in, w, bias, out, ((p->kh * p->kw * p->is.c + 3) / 4) * 2, mode);
}

static ALWAYS_INLINE void conv_im2col(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                      const int32_t *bias, int8_t *out, const int mode) {
    /* two output pixels at a time: their columns side by side, then a 2-row matrix product */
    const int oc_n = p->os.c, kernel_n = p->kh * p->kw * p->is.c;
    int8_t cols[2 * IM2COL_MAX] __attribute__((aligned(4)));
    rq_t q[RQ_BLOCK];
    const int pixels = p->os.h * p->os.w;
    for (int ob = 0; ob < oc_n; ob += RQ_BLOCK) {
        const int oe = rq_block(q, ob, oc_n, RQ_BLOCK, p->mult, p->shift, p->out_zp);
        for (int px = 0; px < pixels; px += 2) {
            const int rows = px + 1 < pixels ? 2 : 1;
            for (int r = 0; r < rows; r++)
                im2col(p, in, (px + r) / p->os.w, (px + r) % p->os.w, cols + r * kernel_n);
            matmul_s8(cols, rows, kernel_n, p->in_zp, w, ob, oe, oc_n, bias, out + px * oc_n, q, p->act_min,
                      p->act_max, mode);
        }
    }
}

/* The receptive field of output pixel (oy, ox), unpacked as unpack_rows lays out one row: per
 * group of 4 taps, (even, odd) int16 pairs with the zero point subtracted, at xq[4g], xq[4g + 1]
 * (xq: the pixel's first word; the other pixel of the pair sits in the other two words). Padding
 * is zero. Needs ic % 4 == 0, so that no group straddles two taps. */
static void im2col_q15(const hw_conv_params_t *p, const int8_t *in, int oy, int ox, uint32_t nzp, uint32_t *xq) {
    const int ic = p->is.c, row_groups = p->kw * ic / 4, tap_groups = ic / 4;
    const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    const int inside_x = ix0 >= 0 && ix0 + p->kw <= p->is.w;
    for (int ky = 0; ky < p->kh; ky++) {
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= p->is.h) {
            for (int g = 0; g < row_groups; g++, xq += 4) xq[0] = xq[1] = 0;
            continue;
        }
        const int8_t *row = in + iy * p->is.w * ic;
        for (int kx = 0; kx < p->kw; kx += inside_x ? p->kw : 1) {
            const int ix = ix0 + kx, groups = inside_x ? row_groups : tap_groups;
            if (ix < 0 || ix >= p->is.w) {
                for (int g = 0; g < groups; g++, xq += 4) xq[0] = xq[1] = 0;
                continue;
            }
            const int8_t *src = row + ix * ic;
            for (int g = 0; g < groups; g++, xq += 4, src += 4) {
                const uint32_t v = hw_read_s8x4(src);
                xq[0] = hw_sxtab16(nzp, v);
                xq[1] = hw_sxtab16_ror8(nzp, v);
            }
        }
    }
}

/* Convolutions whose input channels are a multiple of 4 and whose kh * kw * ic <= IM2COL_Q_MAX:
 * each pixel pair's receptive fields are unpacked once (im2col_q15) for every output channel,
 * whose parameters sit on the stack for up to Q_BLOCK channels at once. Other channel counts with
 * kh * kw * ic a multiple of 4 and <= IM2COL_Q8_MAX (DS-CNN's 10 x 4 convolution over one
 * channel) go through an int8 column first. */
#define IM2COL_Q_MAX 576  /* 3x3x64: 2.3 KB of unpacked columns */
#define IM2COL_Q8_MAX 256 /* 512 B of int8 columns */
#define Q_BLOCK 64        /* 1.3 KB of requantisation parameters */

static ALWAYS_INLINE void conv_im2col_q_body(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                             const int32_t *bias, int8_t *out, const int w16, const int mode) {
    const int oc_n = p->os.c, n = p->kh * p->kw * p->is.c, pixels = p->os.h * p->os.w;
    const int direct = (p->is.c & 3) == 0;
    const uint32_t nzp = hw_pack16x2(-p->in_zp);
    uint32_t xq[IM2COL_Q_MAX] __attribute__((aligned(8)));
    int8_t cols[2][IM2COL_Q8_MAX] __attribute__((aligned(4)));
    rq_t q[Q_BLOCK];
    for (int ob = 0; ob < oc_n; ob += Q_BLOCK) {
        const int oe = rq_block(q, ob, oc_n, Q_BLOCK, p->mult, p->shift, p->out_zp);
        for (int px = 0; px < pixels; px += 2) {
            const int rows = px + 1 < pixels ? 2 : 1;
            for (int r = 0; r < 2; r++) {
                const int pr = px + (r < rows ? r : 0); /* a last odd pixel fills both slots */
                if (direct)
                    im2col_q15(p, in, pr / p->os.w, pr % p->os.w, nzp, xq + 2 * r);
                else
                    im2col(p, in, pr / p->os.w, pr % p->os.w, cols[r]);
            }
            if (!direct) unpack_rows(cols[0], cols[1], n / 4, nzp, xq);
            if (w16)
                CALL_BY_MODE(mode, rowpair_w16, xq, n, (const int16_t *)(const void *)w, ob, oe, oc_n, bias,
                             out + px * oc_n, q, p->act_min, p->act_max, rows);
            else
                CALL_BY_MODE(mode, rowpair_q, xq, n, w, ob, oe, oc_n, bias, out + px * oc_n, q, p->act_min,
                             p->act_max, rows);
        }
    }
}

static ALWAYS_INLINE void conv_im2col_q(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                        const int32_t *bias, int8_t *out, const int mode) {
    conv_im2col_q_body(p, in, w, bias, out, 0, mode);
}

static ALWAYS_INLINE void conv_im2col_w16(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                          const int32_t *bias, int8_t *out, const int mode) {
    conv_im2col_q_body(p, in, w, bias, out, 1, mode);
}

#define CONV_PARAMS \
    (const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias, int8_t *out)
MODE_VARIANTS(conv_small_stem, CONV_PARAMS, p, in, w, bias, out)
MODE_VARIANTS(conv_small_any, CONV_PARAMS, p, in, w, bias, out)
MODE_VARIANTS(conv_im2col, CONV_PARAMS, p, in, w, bias, out)
MODE_VARIANTS(conv_im2col_q, CONV_PARAMS, p, in, w, bias, out)
MODE_VARIANTS(conv_im2col_w16, CONV_PARAMS, p, in, w, bias, out)

/* Which path a conv2d with unpacked weights (w_q15) takes, as the exporter decides which layers to
 * store so (hwnas_deploy/mcu/blob.py, unpacked_path): 1 pointwise, 2 im2col, 0 the portable kernel. */
static int w16_path(const hw_conv_params_t *p, int kernel_n) {
    if (kernel_n & 3) return 0;
    if (p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_top == 0 && p->pad_left == 0 &&
        kernel_n <= XQ_MAX)
        return 1;
    return ((p->is.c & 3) == 0 && kernel_n <= IM2COL_Q_MAX) || kernel_n <= IM2COL_Q8_MAX ? 2 : 0;
}

void hw_conv2d_s8_opt(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                      int8_t *out) {
    const int ic = p->is.c, oc_n = p->os.c, lo = p->act_min, hi = p->act_max;
    const int kernel_n = p->kh * p->kw * ic;
    const int mode = requant_mode(p->mult, p->shift, oc_n, p->out_zp, bias, kernel_n, lo, hi);
    if (p->w_q15) {
        const int path = mode == RQ_NONE ? 0 : w16_path(p, kernel_n);
        if (path == 1)
            matmul_w16_layer(in, p->os.h * p->os.w, ic, p->in_zp, (const int16_t *)(const void *)w, oc_n, bias, out,
                             p->out_zp, p->mult, p->shift, lo, hi, mode);
        else if (path == 2)
            CALL_BY_MODE(mode, conv_im2col_w16, p, in, w, bias, out);
        else
            hw_conv2d_s8(p, in, w, bias, out);
    } else if (mode == RQ_NONE || kernel_n > IM2COL_MAX) {
        hw_conv2d_s8(p, in, w, bias, out);
    } else if (p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_top == 0 &&
               p->pad_left == 0) {
        matmul_layer(in, p->os.h * p->os.w, ic, p->in_zp, w, oc_n, bias, out, p->out_zp, p->mult, p->shift, lo, hi,
                     mode);
    } else if (kernel_n == 27) {
        CALL_BY_MODE(mode, conv_small_stem, p, in, w, bias, out);
    } else if (((ic & 3) == 0 && kernel_n <= IM2COL_Q_MAX) || ((kernel_n & 3) == 0 && kernel_n <= IM2COL_Q8_MAX)) {
        CALL_BY_MODE(mode, conv_im2col_q, p, in, w, bias, out);
    } else if (kernel_n <= SMALL_KERNEL) {
        CALL_BY_MODE(mode, conv_small_any, p, in, w, bias, out);
    } else {
        CALL_BY_MODE(mode, conv_im2col, p, in, w, bias, out);
    }
}

/* Four channels of one output pixel over rows x cols taps; x and wp point at the first tap. */
static ALWAYS_INLINE void dw_taps(const int8_t *x, const uint32_t *wp, int rows, int cols, int x_row_skip,
                                  int w_row_skip, int c_n, uint32_t nzp, int32_t *a) {
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
#pragma GCC unroll 7
    for (int ky = 0; ky < rows; ky++, x += x_row_skip, wp += w_row_skip) {
#pragma GCC unroll 7
        for (int kx = 0; kx < cols; kx++, wp += 2) {
            const uint32_t v = hw_read_s8x4(x);
            x += c_n;
            HW_OPAQUE(x); /* keep one pointer stepping by c_n: no per-tap address registers to spill */
            const uint32_t ve = hw_sxtab16(nzp, v), vo = hw_sxtab16_ror8(nzp, v);
            a0 = hw_smlabb(ve, wp[0], a0);
            a2 = hw_smlatt(ve, wp[0], a2);
            a1 = hw_smlabb(vo, wp[1], a1);
            a3 = hw_smlatt(vo, wp[1], a3);
        }
    }
    a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3;
}

static ALWAYS_INLINE void dw_store(int8_t *y, const int32_t *a, const rq_t *q, int lo, int hi, const int mode) {
    y[0] = rq_out(a[0], &q[0], lo, hi, mode);
    y[1] = rq_out(a[1], &q[1], lo, hi, mode);
    y[2] = rq_out(a[2], &q[2], lo, hi, mode);
    y[3] = rq_out(a[3], &q[3], lo, hi, mode);
}

/* The interior pixels of one output row, for a kernel size known at compile time.
 * x_step: input bytes between the row's pixels; in_row: between input rows; tap: between taps
 * (the channel count, or 4 in a padded plane); y_step: between output pixels. */
static ALWAYS_INLINE void dw_row_interior(const int8_t *x, const uint32_t *wq, const int kh, const int kw, int n_px,
                                          int x_step, int in_row, const int tap, int y_step, uint32_t nzp,
                                          const int32_t *b, const rq_t *q, int8_t *y, int lo, int hi,
                                          const int mode) {
    for (int i = 0; i < n_px; i++, x += x_step, y += y_step) {
        int32_t a[4] = {b[0], b[1], b[2], b[3]};
        dw_taps(x, wq, kh, kw, in_row - kw * tap, 0, tap, nzp, a);
        dw_store(y, a, q, lo, hi, mode);
    }
}

typedef struct {
    const int8_t *in;
    int8_t *out;
    const uint32_t *wq;
    const int32_t *b;
    const rq_t *q;
    int c; /* first of the four channels */
    hw_region_t inner;
} dw_quad_t;

/* Interior rows with the kernel size as a constant where the kernel is square 3/5/7 (every
 * layer of our spaces): both tap loops unroll completely. */
#define DW_ROW_BY_KERNEL(kh, kw, x, wq, n_px, x_step, in_row, tap, y_step, nzp, b, q, y, lo, hi, mode)            \
    do {                                                                                                       \
        if ((kh) == 3 && (kw) == 3)                                                                            \
            dw_row_interior(x, wq, 3, 3, n_px, x_step, in_row, tap, y_step, nzp, b, q, y, lo, hi, mode);       \
        else if ((kh) == 5 && (kw) == 5)                                                                       \
            dw_row_interior(x, wq, 5, 5, n_px, x_step, in_row, tap, y_step, nzp, b, q, y, lo, hi, mode);       \
        else if ((kh) == 7 && (kw) == 7)                                                                       \
            dw_row_interior(x, wq, 7, 7, n_px, x_step, in_row, tap, y_step, nzp, b, q, y, lo, hi, mode);       \
        else                                                                                                   \
            dw_row_interior(x, wq, kh, kw, n_px, x_step, in_row, tap, y_step, nzp, b, q, y, lo, hi, mode);     \
    } while (0)

static ALWAYS_INLINE void dw_quad(const hw_conv_params_t *p, const dw_quad_t *d, const int mode) {
    const int c_n = p->is.c, kh = p->kh, kw = p->kw, lo = p->act_min, hi = p->act_max;
    const int in_row = p->is.w * c_n, x_step = p->stride_w * c_n, ow = p->os.w;
    const uint32_t nzp = hw_pack16x2(-p->in_zp);
    const hw_region_t inner = d->inner;
    for (int oy = 0; oy < p->os.h; oy++) {
        const int8_t *x_row = d->in + ((oy * p->stride_h - p->pad_top) * p->is.w - p->pad_left) * c_n + d->c;
        int8_t *y = d->out + oy * ow * c_n + d->c;
        const int rows_inside = oy >= inner.y0 && oy < inner.y1;
        for (int ox = 0; ox < ow;) {
            if (rows_inside && ox == inner.x0 && inner.x1 > inner.x0) {
                DW_ROW_BY_KERNEL(kh, kw, x_row + ox * x_step, d->wq, inner.x1 - inner.x0, x_step, in_row, c_n, c_n,
                                 nzp, d->b, d->q, y + ox * c_n, lo, hi, mode);
                ox = inner.x1;
                continue;
            }
            /* a border pixel: only the taps inside the input */
            int y0, y1, x0, x1;
            hw_valid_range(oy * p->stride_h - p->pad_top, kh, p->is.h, &y0, &y1);
            hw_valid_range(ox * p->stride_w - p->pad_left, kw, p->is.w, &x0, &x1);
            int32_t a[4] = {d->b[0], d->b[1], d->b[2], d->b[3]};
            const int cols = x1 - x0;
            if (y1 > y0 && cols > 0)
                dw_taps(x_row + ox * x_step + (y0 * p->is.w + x0) * c_n, d->wq + 2 * (y0 * kw + x0), y1 - y0, cols,
                        in_row - cols * c_n, 2 * (kw - cols), c_n, nzp, a);
            dw_store(y + ox * c_n, a, d->q, lo, hi, mode);
            ox++;
        }
    }
}

/* Small inputs: most output pixels are border pixels (a 7x7 kernel on a 4x4 map has no
 * interior), so the four channels' receptive area is copied once into a plane padded with the
 * zero point, where every pixel takes the unrolled rows and taps sit 4 bytes apart. */
#define PLANE_WORDS 512 /* 2 KB on the stack */

static ALWAYS_INLINE void dw_quad_plane(const hw_conv_params_t *p, const dw_quad_t *d, int ph, int pw,
                                        const int mode) {
    uint32_t plane[PLANE_WORDS];
    const uint32_t zp4 = (uint32_t)(uint8_t)p->in_zp * 0x01010101u;
    for (int r = 0; r < ph; r++) {
        const int iy = r - p->pad_top;
        uint32_t *dst = plane + r * pw;
        for (int col = 0; col < pw; col++) {
            const int ix = col - p->pad_left;
            const int inside = iy >= 0 && iy < p->is.h && ix >= 0 && ix < p->is.w;
            dst[col] = inside ? hw_read_s8x4(d->in + (iy * p->is.w + ix) * p->is.c + d->c) : zp4;
        }
    }
    const int8_t *pl = (const int8_t *)plane;
    const int c_n = p->is.c, ow = p->os.w;
    const uint32_t nzp = hw_pack16x2(-p->in_zp);
    for (int oy = 0; oy < p->os.h; oy++)
        DW_ROW_BY_KERNEL(p->kh, p->kw, pl + oy * p->stride_h * pw * 4, d->wq, ow, p->stride_w * 4, pw * 4, 4, c_n,
                         nzp, d->b, d->q, d->out + oy * ow * c_n + d->c, p->act_min, p->act_max, mode);
}

MODE_VARIANTS(dw_quad, (const hw_conv_params_t *p, const dw_quad_t *d), p, d)
MODE_VARIANTS(dw_quad_plane, (const hw_conv_params_t *p, const dw_quad_t *d, int ph, int pw), p, d, ph, pw)

/* The strip path, for square 3x3/5x5/7x7 kernels with stride 1 or 2 (every depthwise layer of our
 * spaces): for each output row, the four channels' kh input rows are copied into a strip padded
 * with the input zero point, one word per pixel and a fixed row pitch, so every tap is an LDR
 * with an immediate offset and every output pixel sees a full kernel. The zero point is then
 * folded into the bias (b - zp * sum(w)), which frees the register SXTAB16 needed, and two
 * output pixels are computed together: their k + stride input columns are read and unpacked
 * once, and each weight pair feeds both. */
#define STRIP_PITCH 96 /* words per strip row: output rows up to (96 - k) / stride + 1 pixels */
#define STRIP_ROWS 10  /* 3.75 KB on the stack */

/* Strip row `r` (padded coordinates: input row r - pad_top) of the four channels at c. */
static ALWAYS_INLINE void dw_strip_fill_row(const hw_conv_params_t *p, const int8_t *in, int c, int r, int pw,
                                            uint32_t *dst) {
    const uint32_t zp4 = (uint32_t)(uint8_t)p->in_zp * 0x01010101u;
    const int c_n = p->is.c, iw = p->is.w, left = p->pad_left, iy = r - p->pad_top;
    if (iy < 0 || iy >= p->is.h) {
        for (int col = 0; col < pw; col++) dst[col] = zp4;
        return;
    }
    const int x_end = iw + left < pw ? iw + left : pw; /* columns [left, x_end) hold input */
    int col = 0;
    for (; col < left; col++) dst[col] = zp4;
    const int8_t *src = in + iy * iw * c_n + c;
    for (; col < x_end; col++, src += c_n) dst[col] = hw_read_s8x4(src);
    for (; col < pw; col++) dst[col] = zp4;
}

/* Two output pixels (strip columns 0 and s) of four channels over a k x k kernel, in two passes
 * over the channel pairs (c0, c2) and (c1, c3): four accumulators per pass keep everything in
 * registers (with eight, GCC spilled at every tap). */
static ALWAYS_INLINE void dw_pair_body(const uint32_t *x, const uint32_t *wq, const int k, const int s, int32_t *a) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        int32_t p0 = a[h], p2 = a[h + 2], q0 = a[4 + h], q2 = a[6 + h];
#pragma GCC unroll 7
        for (int ky = 0; ky < k; ky++) {
#pragma GCC unroll 9
            for (int j = 0; j < k + s; j++) {
                const uint32_t v = x[ky * STRIP_PITCH + j];
                const uint32_t u = h ? hw_sxtb16_ror8(v) : hw_sxtb16(v);
                if (j < k) {
                    const uint32_t w = wq[2 * (ky * k + j) + h];
                    p0 = hw_smlabb(u, w, p0);
                    p2 = hw_smlatt(u, w, p2);
                }
                if (j >= s) {
                    const uint32_t w = wq[2 * (ky * k + j - s) + h];
                    q0 = hw_smlabb(u, w, q0);
                    q2 = hw_smlatt(u, w, q2);
                }
            }
        }
        a[h] = p0, a[h + 2] = p2, a[4 + h] = q0, a[6 + h] = q2;
    }
}

/* Own functions per kernel size and stride: inside, only the strip, the weights and the eight
 * accumulators are live, so none of them is spilled (inlined into the row loop, the row's own
 * variables pushed the accumulators onto the stack at every tap). */
#define DW_PAIR(k, s) \
    static NOINLINE void dw_pair_##k##_##s(const uint32_t *x, const uint32_t *wq, int32_t *a) { dw_pair_body(x, wq, k, s, a); }
DW_PAIR(3, 1)
DW_PAIR(3, 2)
DW_PAIR(5, 1)
DW_PAIR(5, 2)
DW_PAIR(7, 1)
DW_PAIR(7, 2)

static ALWAYS_INLINE void dw_pair(const uint32_t *x, const uint32_t *wq, const int k, const int s, int32_t *a) {
    if (k == 3 && s == 1)
        dw_pair_3_1(x, wq, a);
    else if (k == 3)
        dw_pair_3_2(x, wq, a);
    else if (k == 5 && s == 1)
        dw_pair_5_1(x, wq, a);
    else if (k == 5)
        dw_pair_5_2(x, wq, a);
    else if (s == 1)
        dw_pair_7_1(x, wq, a);
    else
        dw_pair_7_2(x, wq, a);
}

/* One output pixel (a last odd one) of four channels. */
static ALWAYS_INLINE void dw_single(const uint32_t *x, const uint32_t *wq, const int k, int32_t *a) {
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
#pragma GCC unroll 7
    for (int ky = 0; ky < k; ky++) {
#pragma GCC unroll 7
        for (int j = 0; j < k; j++) {
            const uint32_t v = x[ky * STRIP_PITCH + j], *wp = wq + 2 * (ky * k + j);
            const uint32_t ve = hw_sxtb16(v), vo = hw_sxtb16_ror8(v);
            a0 = hw_smlabb(ve, wp[0], a0);
            a2 = hw_smlatt(ve, wp[0], a2);
            a1 = hw_smlabb(vo, wp[1], a1);
            a3 = hw_smlatt(vo, wp[1], a3);
        }
    }
    a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3;
}

/* P output pixels (strip columns 0, s, ..., (P - 1) s) of one channel pair (h = 0: c0, c2; h = 1:
 * c1, c3): per kernel row its k weights are loaded once into registers, then each of the
 * (P - 1) s + k columns is read and unpacked once and feeds every pixel whose window holds it.
 * With 2P accumulators, k weights, the strip pointer and the column, 13 registers are live:
 * P = 4 for 3x3, 3 for 5x5, 2 for 7x7 kernels. a: (c_lo, c_hi) per pixel. */
static ALWAYS_INLINE void dw_multi_body(const uint32_t *x, const uint32_t *wq, const int k, const int s, const int P,
                                        const int h, const int32_t *b, int32_t *a) {
    int32_t lo[4], hi[4];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) lo[p] = b[h], hi[p] = b[h + 2];
#pragma GCC unroll 7
    for (int ky = 0; ky < k; ky++) {
        uint32_t w[7];
#pragma GCC unroll 7
        for (int j = 0; j < k; j++) w[j] = wq[2 * (ky * k + j) + h];
#pragma GCC unroll 13
        for (int c = 0; c < (P - 1) * s + k; c++) {
            const uint32_t v = x[ky * STRIP_PITCH + c];
            const uint32_t u = h ? hw_sxtb16_ror8(v) : hw_sxtb16(v);
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) {
                const int j = c - p * s;
                if (j >= 0 && j < k) {
                    lo[p] = hw_smlabb(u, w[j], lo[p]);
                    hi[p] = hw_smlatt(u, w[j], hi[p]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) a[2 * p] = lo[p], a[2 * p + 1] = hi[p];
}

#define DW_PIXELS(k) ((k) == 3 ? 4 : (k) == 5 ? 3 : 2)
#define DW_MULTI_HALF(k, s, h)                                                                              \
    static NOINLINE void dw_multi_##k##_##s##_##h(const uint32_t *x, const uint32_t *wq, const int32_t *b, \
                                                  int32_t *a) {                                          \
        dw_multi_body(x, wq, k, s, DW_PIXELS(k), h, b, a);                                                   \
    }
#define DW_MULTI(k, s) DW_MULTI_HALF(k, s, 0) DW_MULTI_HALF(k, s, 1)
DW_MULTI(3, 1)
DW_MULTI(3, 2)
DW_MULTI(5, 1)
DW_MULTI(5, 2)
DW_MULTI(7, 1)
DW_MULTI(7, 2)

static ALWAYS_INLINE void dw_multi(const uint32_t *x, const uint32_t *wq, const int k, const int s, const int32_t *b,
                                   int32_t *a0, int32_t *a1) {
#define DW_MULTI_CALL(kk, ss)                 \
    if (k == kk && s == ss) {                 \
        dw_multi_##kk##_##ss##_0(x, wq, b, a0); \
        dw_multi_##kk##_##ss##_1(x, wq, b, a1); \
        return;                               \
    }
    DW_MULTI_CALL(3, 1)
    DW_MULTI_CALL(3, 2)
    DW_MULTI_CALL(5, 1)
    DW_MULTI_CALL(5, 2)
    DW_MULTI_CALL(7, 1)
    DW_MULTI_CALL(7, 2)
#undef DW_MULTI_CALL
}

/* The P pixels' outputs of four channels (a0: (c0, c2) per pixel, a1: (c1, c3)), channel by
 * channel: one channel's requantisation parameters stay in registers for its P outputs (pixel by
 * pixel, GCC kept all four channels' on the stack and reloaded them: 15 instructions per output,
 * against 7-8 here). Its own function, so the row loop's state does not crowd it. */
static ALWAYS_INLINE void dw_store_pixels_any(int8_t *y, int c_n, const int32_t *a0, const int32_t *a1, const int P,
                                         const rq_t *q, int lo, int hi, const int mode) {
#pragma GCC unroll 4
    for (int ch = 0; ch < 4; ch++) {
        const int32_t *a = (ch & 1) ? a1 + (ch >> 1) : a0 + (ch >> 1);
        const rq_t qc = q[ch];
        int8_t *yc = y + ch;
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) yc[p * c_n] = rq_out(a[2 * p], &qc, lo, hi, mode);
    }
}

#define DW_STORE_VARIANT(P, name, m)                                                                        \
    static NOINLINE void dw_store_##P##_##name(int8_t *y, int c_n, const int32_t *a0, const int32_t *a1,     \
                                               const rq_t *q, int lo, int hi) {                             \
        dw_store_pixels_any(y, c_n, a0, a1, P, q, lo, hi, m);                                               \
    }
#define DW_STORE_P(P) DW_STORE_VARIANT(P, clamp, RQ_CLAMP) DW_STORE_VARIANT(P, sat, RQ_SAT) \
    DW_STORE_VARIANT(P, simple, RQ_SIMPLE)
DW_STORE_P(2)
DW_STORE_P(3)
DW_STORE_P(4)

static ALWAYS_INLINE void dw_store_pixels(int8_t *y, int c_n, const int32_t *a0, const int32_t *a1, const int P,
                                          const rq_t *q, int lo, int hi, const int mode) {
#define DW_STORE_CALL(PP)                                                   \
    if (P == PP) {                                                          \
        if (mode == RQ_SIMPLE)                                              \
            dw_store_##PP##_simple(y, c_n, a0, a1, q, lo, hi);              \
        else if (mode == RQ_SAT)                                            \
            dw_store_##PP##_sat(y, c_n, a0, a1, q, lo, hi);                 \
        else                                                                \
            dw_store_##PP##_clamp(y, c_n, a0, a1, q, lo, hi);               \
        return;                                                             \
    }
    DW_STORE_CALL(2)
    DW_STORE_CALL(3)
    DW_STORE_CALL(4)
#undef DW_STORE_CALL
}

static ALWAYS_INLINE void dw_strip_row(const uint32_t *strip, const uint32_t *wq, const int32_t *b, const rq_t *q,
                                       int8_t *y, int ow, int c_n, int lo, int hi, const int k, const int s,
                                       const int mode) {
    int ox = 0;
    const int P = DW_PIXELS(k);
    for (; ox + P <= ow; ox += P, strip += P * s, y += P * c_n) {
        int32_t a0[8], a1[8]; /* per pixel: (c0, c2), (c1, c3) */
        dw_multi(strip, wq, k, s, b, a0, a1);
        dw_store_pixels(y, c_n, a0, a1, P, q, lo, hi, mode);
    }
    for (; ox + 1 < ow; ox += 2, strip += 2 * s, y += 2 * c_n) {
        int32_t a[8] = {b[0], b[1], b[2], b[3], b[0], b[1], b[2], b[3]};
        dw_pair(strip, wq, k, s, a);
        for (int i = 0; i < 4; i++) { /* each channel's parameters loaded once for both pixels */
            const rq_t qi = q[i];
            y[i] = rq_out(a[i], &qi, lo, hi, mode);
            y[c_n + i] = rq_out(a[4 + i], &qi, lo, hi, mode);
        }
    }
    if (ox < ow) {
        int32_t a[4] = {b[0], b[1], b[2], b[3]};
        dw_single(strip, wq, k, a);
        dw_store(y, a, q, lo, hi, mode);
    }
}

static int dw_strip_fits(const hw_conv_params_t *p) {
    const int k = p->kh, s = p->stride_w;
    return k == p->kw && (k == 3 || k == 5 || k == 7) && (s == 1 || s == 2) && p->stride_h <= 2 &&
           (p->os.w - 1) * s + k <= STRIP_PITCH;
}

/* b: the four channels' bias with the zero point folded in. The strip holds STRIP_ROWS padded
 * rows from `top` on; each input row is copied once, and when the next output row's rows run
 * past the end, the rows it still needs move to the top. */
static ALWAYS_INLINE void dw_quad_strip(const hw_conv_params_t *p, const int8_t *in, int c, const uint32_t *wq,
                                        const int32_t *b, const rq_t *q, int8_t *out, const int mode) {
    uint32_t strip[STRIP_ROWS * STRIP_PITCH];
    const int k = p->kh, s = p->stride_w, ow = p->os.w, c_n = p->is.c, lo = p->act_min, hi = p->act_max;
    const int pw = (ow - 1) * s + k;
    int top = 0, filled = 0; /* strip rows hold padded rows [top, top + filled) */
    for (int oy = 0; oy < p->os.h; oy++) {
        const int r0 = oy * p->stride_h;
        if (r0 + k > top + STRIP_ROWS) {
            const int keep = top + filled > r0 ? top + filled - r0 : 0;
            for (int i = 0; i < keep; i++)
                for (int col = 0; col < pw; col++)
                    strip[i * STRIP_PITCH + col] = strip[(r0 - top + i) * STRIP_PITCH + col];
            top = r0;
            filled = keep;
        }
        for (; top + filled < r0 + k; filled++)
            dw_strip_fill_row(p, in, c, top + filled, pw, strip + filled * STRIP_PITCH);
        const uint32_t *x = strip + (r0 - top) * STRIP_PITCH;
        int8_t *y = out + oy * ow * c_n + c;
        if (k == 3 && s == 1)
            dw_strip_row(x, wq, b, q, y, ow, c_n, lo, hi, 3, 1, mode);
        else if (k == 3)
            dw_strip_row(x, wq, b, q, y, ow, c_n, lo, hi, 3, 2, mode);
        else if (k == 5 && s == 1)
            dw_strip_row(x, wq, b, q, y, ow, c_n, lo, hi, 5, 1, mode);
        else if (k == 5)
            dw_strip_row(x, wq, b, q, y, ow, c_n, lo, hi, 5, 2, mode);
        else if (s == 1)
            dw_strip_row(x, wq, b, q, y, ow, c_n, lo, hi, 7, 1, mode);
        else
            dw_strip_row(x, wq, b, q, y, ow, c_n, lo, hi, 7, 2, mode);
    }
}

MODE_VARIANTS(dw_quad_strip, (const hw_conv_params_t *p, const int8_t *in, int c, const uint32_t *wq,
                              const int32_t *b, const rq_t *q, int8_t *out), p, in, c, wq, b, q, out)

/* Output rows/cols whose receptive field lies inside the input: [lo, hi). */
static void interior(int in_n, int out_n, int k, int stride, int pad, int *lo, int *hi) {
    *lo = (pad + stride - 1) / stride;
    *hi = in_n - k + pad < 0 ? 0 : (in_n - k + pad) / stride + 1;
    if (*hi > out_n) *hi = out_n;
    if (*lo > *hi) *lo = *hi;
}

void hw_depthwise_conv2d_s8_opt(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                                int8_t *out) {
    const int c_n = p->is.c, taps = p->kh * p->kw;
    const int mode = requant_mode(p->mult, p->shift, c_n, p->out_zp, bias, taps, p->act_min, p->act_max);
    if ((c_n & 3) || p->os.c != c_n || taps > MAX_DW_TAPS || mode == RQ_NONE) { /* depth multiplier > 1: portable */
        hw_depthwise_conv2d_s8(p, in, w, bias, out);
        return;
    }
    uint32_t wq[2 * MAX_DW_TAPS]; /* per tap, the four channels' weights unpacked: (c0, c2), (c1, c3) */
    rq_t q[4];
    int32_t b[4];
    dw_quad_t d = {in, out, wq, b, q, 0, {0, 0, 0, 0}};
    interior(p->is.h, p->os.h, p->kh, p->stride_h, p->pad_top, &d.inner.y0, &d.inner.y1);
    interior(p->is.w, p->os.w, p->kw, p->stride_w, p->pad_left, &d.inner.x0, &d.inner.x1);
    const int strip = dw_strip_fits(p);
    const int ph = (p->os.h - 1) * p->stride_h + p->kh, pw = (p->os.w - 1) * p->stride_w + p->kw;
    const int border = p->os.h * p->os.w - (d.inner.y1 - d.inner.y0) * (d.inner.x1 - d.inner.x0);
    const int use_plane = ph * pw <= PLANE_WORDS && 4 * border >= p->os.h * p->os.w; /* a quarter on the border */
    for (int c = 0; c < c_n; c += 4) {
        for (int i = 0; i < 4; i++) {
            rq_make(&q[i], p->mult[c + i], p->shift[c + i], p->out_zp, 0);
            b[i] = bias ? bias[c + i] : 0;
        }
        uint32_t sum_e = 0, sum_o = 0; /* the weights' sums, (c0, c2) and (c1, c3): |sum| <= 49 * 128 */
        for (int t = 0; t < taps; t++) {
            const uint32_t v = hw_read_s8x4(w + t * c_n + c);
            wq[2 * t] = hw_sxtb16(v);
            wq[2 * t + 1] = hw_sxtb16_ror8(v);
            sum_e = hw_sadd16(sum_e, wq[2 * t]);
            sum_o = hw_sadd16(sum_o, wq[2 * t + 1]);
        }
        if (strip) {
            b[0] -= p->in_zp * (int16_t)(sum_e & 0xFFFFu);
            b[2] -= p->in_zp * (int16_t)(sum_e >> 16);
            b[1] -= p->in_zp * (int16_t)(sum_o & 0xFFFFu);
            b[3] -= p->in_zp * (int16_t)(sum_o >> 16);
            CALL_BY_MODE(mode, dw_quad_strip, p, in, c, wq, b, q, out);
            continue;
        }
        d.c = c;
        if (use_plane)
            CALL_BY_MODE(mode, dw_quad_plane, p, &d, ph, pw);
        else
            CALL_BY_MODE(mode, dw_quad, p, &d);
    }
}

void hw_fully_connected_s8_opt(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w, const int32_t *bias,
                               int8_t *out, int n_out, int32_t out_zp, const int32_t *mult, const int32_t *shift,
                               int act_min, int act_max) {
    const int mode = requant_mode(mult, shift, n_out, out_zp, bias, n_in, act_min, act_max);
    if (mode == RQ_NONE) {
        hw_fully_connected_s8(in, n_in, in_zp, w, bias, out, n_out, out_zp, mult, shift, act_min, act_max);
        return;
    }
    matmul_layer(in, 1, n_in, in_zp, w, n_out, bias, out, out_zp, mult, shift, act_min, act_max, mode);
}

/* Per-channel fully connected with TFLite's single rounding: the input unpacked once, two output
 * channels per pass over it (SMLAD pairs), then the 64-bit requantisation (SMULL and a shift;
 * exact for every shift). */
void hw_fully_connected_s8_single_opt(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w,
                                      const int32_t *bias, int8_t *out, int n_out, int32_t out_zp,
                                      const int32_t *mult, const int32_t *shift, int act_min, int act_max) {
    const uint32_t nzp = hw_pack16x2(-in_zp);
    uint32_t xq[FC_Q_MAX / 2] __attribute__((aligned(8)));
    const int unpacked = (n_in & 3) == 0 && n_in <= FC_Q_MAX;
    if (unpacked) unpack_q15(in, n_in, nzp, xq);
    for (int o = 0; o < n_out; o += 2) {
        const int o1 = o + 1 < n_out ? o + 1 : o;
        int32_t a[2] = {bias ? bias[o] : 0, bias ? bias[o1] : 0};
        if (unpacked)
            dot_1x2_q(xq, w + o * n_in, w + o1 * n_in, n_in / 4, a);
        else
            dot_1x2(in, w + o * n_in, (o1 - o) * n_in, n_in, nzp, a);
        for (int k = 0; k < 2; k++) {
            const int oc = k ? o1 : o;
            int32_t r = hw_requantize_single(a[k], mult[oc], shift[oc]) + out_zp;
            out[oc] = (int8_t)(r < act_min ? act_min : r > act_max ? act_max : r);
        }
    }
}

/* int8 ADD (TFLite's: both inputs rescaled to a common scale with 20 bits of headroom, summed,
 * requantised). An input's rescaled value depends on its int8 value only, so each input's 256
 * values are rescaled once, by the portable requantisation itself, into a table (2 KB on the
 * stack); per element that leaves two loads, an addition and the output's requantisation (rq_out,
 * exact as in the convolutions when the sum's bound allows, else the portable one). Below
 * ADD_TABLE_MIN elements the tables cost more than they save. */
#define ADD_TABLE_MIN 256

static ALWAYS_INLINE void add_by_table(const int8_t *a, const int8_t *b, int8_t *out, int n, const int32_t *ta,
                                       const int32_t *tb, const rq_t *q, int lo, int hi, const int mode) {
    for (int i = 0; i < n; i++) out[i] = rq_out(ta[a[i]] + tb[b[i]], q, lo, hi, mode);
}

MODE_VARIANTS(add_by_table, (const int8_t *a, const int8_t *b, int8_t *out, int n, const int32_t *ta,
                             const int32_t *tb, const rq_t *q, int lo, int hi), a, b, out, n, ta, tb, q, lo, hi)

void hw_add_s8_opt(const int8_t *a, int32_t a_zp, const int8_t *b, int32_t b_zp, int8_t *out, int32_t out_zp, int n,
                   int left_shift, int32_t a_mult, int32_t a_shift, int32_t b_mult, int32_t b_shift,
                   int32_t out_mult, int32_t out_shift, int act_min, int act_max) {
    if (n < ADD_TABLE_MIN) {
        hw_add_s8(a, a_zp, b, b_zp, out, out_zp, n, left_shift, a_mult, a_shift, b_mult, b_shift, out_mult,
                  out_shift, act_min, act_max);
        return;
    }
    int32_t table[2][256]; /* indexed by the int8 value + 128 */
    int64_t bound = 0;
    for (int k = 0; k < 2; k++) {
        const int32_t zp = k ? b_zp : a_zp, mult = k ? b_mult : a_mult, shift = k ? b_shift : a_shift;
        int32_t peak = 0;
        for (int v = -128; v < 128; v++) {
            const int32_t r = hw_requantize((v - zp) * (1 << left_shift), mult, shift);
            table[k][v + 128] = r;
            peak = r < 0 && -r > peak ? -r : r > peak ? r : peak;
        }
        bound += peak;
    }
    const int32_t *ta = table[0] + 128, *tb = table[1] + 128;
    rq_t q;
    const int sat = act_min == -128 && act_max == 127;
    if (!rq_make(&q, out_mult, out_shift, out_zp, bound)) {
        for (int i = 0; i < n; i++) {
            const int32_t r = hw_requantize(ta[a[i]] + tb[b[i]], out_mult, out_shift) + out_zp;
            out[i] = (int8_t)(r < act_min ? act_min : r > act_max ? act_max : r);
        }
        return;
    }
    const int mode = sat && q.lsh == 1 && q.e >= 1 ? RQ_SIMPLE : sat ? RQ_SAT : RQ_CLAMP;
    CALL_BY_MODE(mode, add_by_table, a, b, out, n, ta, tb, &q, act_min, act_max);
}
