/* int8 kernels for the Cortex-M7 (Armv7E-M DSP), bit-exact with the portable ones.
 *
 * What makes them cheaper, in instructions per MAC:
 *  - four int8 are read with one LDR and split into two int16x2 with SXTB16 (weights) or SXTAB16
 *    (inputs: the input zero point is subtracted in the same instruction); SMLAD then does two
 *    MACs per instruction (conv, pointwise, fully connected), SMLABB/SMLATT one MAC on each of
 *    four channels (depthwise);
 *  - blocks of 2 output channels x 2 pixels reuse every unpacked weight and input twice;
 *  - small convolutions (the 3x3x3 stem) work on an int16 im2col of two pixels and weights
 *    unpacked once per block of channels: four LDR and eight SMLAD per 16 MACs;
 *  - depthwise: interior pixels of 3x3/5x5/7x7 layers take fully unrolled rows, border pixels
 *    visit only their valid taps, and small inputs (a quarter or more border pixels) are first
 *    copied into a zero-point-padded plane where every pixel takes the unrolled rows;
 *  - requantisation is SMMULR plus one shift, with the rounding constant and the output zero
 *    point folded per channel (rq_t), and SSAT when the activation range is all of int8; exact
 *    for shifts in [-20, 8] when the accumulator bound allows, which covers every layer TFLite
 *    produced for our spaces.
 * A layer outside that (or a depthwise layer with channels not a multiple of 4) runs on the
 * portable kernel. No arena scratch is used (the planned arena stays the whole activation
 * story); the kernels keep at most ~4 KB on the stack, and the linker scripts keep >= 8 KB free. */
#include <string.h>

#include "kernels.h"
#include "simd.h"

#define MAX_DW_TAPS 64
#define ALWAYS_INLINE inline __attribute__((always_inline))
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

/* simple: a compile-time promise that this layer's channels all have lsh == 1 and e >= 1 and
 * that its activation range is all of int8 (what TFLite produces almost always: calibrated ReLU6
 * outputs span [-128, 127] too), which saves two loads, an AND and the clamp (SSAT) per output. */
static ALWAYS_INLINE int8_t rq_out(int32_t acc, const rq_t *q, int lo, int hi, const int simple) {
    int32_t r;
    if (simple) {
        r = hw_smmulr(acc * 2, q->mult);
        return (int8_t)hw_ssat8((r + (r >> 31) + q->round) >> q->e);
    } else {
        r = hw_smmulr((int32_t)((uint32_t)acc << q->lsh), q->mult);
        r = (r + ((r >> 31) & q->neg) + q->round) >> q->e;
    }
    return (int8_t)(r < lo ? lo : r > hi ? hi : r);
}

/* |bias + sum(w * (x - zp))| over n taps is at most this. */
static int64_t acc_bound(const int32_t *bias, int ch, int n) {
    return (bias ? (bias[ch] < 0 ? -(int64_t)bias[ch] : bias[ch]) : 0) + (int64_t)n * 127 * 255;
}

/* 0: the fast requantisation is not exact for some channel (use the portable kernel);
 * 1: it is; 2: it is, every channel takes the simple form and the activation range is all of int8. */
static int requant_kind(const int32_t *mult, const int32_t *shift, int n, int32_t out_zp, const int32_t *bias,
                        int n_taps, int lo, int hi) {
    rq_t q;
    int simple = lo == -128 && hi == 127;
    for (int c = 0; c < n; c++) {
        if (!rq_make(&q, mult[c], shift[c], out_zp, acc_bound(bias, c, n_taps))) return 0;
        simple &= q.lsh == 1 && q.e >= 1;
    }
    return simple ? 2 : 1;
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

/* rows of n int8 (x, stride n) times weights [o][n] -> out[row * o_n + o]: pointwise and fully
 * connected layers, and convolutions over their im2col buffer (rows = 2). */
static ALWAYS_INLINE void matmul_s8(const int8_t *x, int rows, int n, int32_t in_zp, const int8_t *w, int o_begin,
                                    int o_end, int o_n, const int32_t *bias, int8_t *out, const rq_t *q, int lo,
                                    int hi, const int simple) {
    const uint32_t nzp = hw_pack16x2(-in_zp);
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
            y[o] = rq_out(a[0], q0, lo, hi, simple);
            y[o1] = rq_out(a[1], q1, lo, hi, simple);
            y[o_n + o] = rq_out(a[2], q0, lo, hi, simple);
            y[o_n + o1] = rq_out(a[3], q1, lo, hi, simple);
        }
        if (r < rows) {
            int32_t a[2] = {b0, b1};
            dot_1x2(x + r * n, w0, dw, n, nzp, a);
            out[r * o_n + o] = rq_out(a[0], q0, lo, hi, simple);
            out[r * o_n + o1] = rq_out(a[1], q1, lo, hi, simple);
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
                         int lo, int hi, int simple) {
    rq_t q[RQ_BLOCK];
    for (int ob = 0; ob < o_n; ob += RQ_BLOCK) {
        const int oe = rq_block(q, ob, o_n, RQ_BLOCK, mult, shift, out_zp);
        if (simple)
            matmul_s8(x, rows, n, in_zp, w, ob, oe, o_n, bias, out, q, lo, hi, 1);
        else
            matmul_s8(x, rows, n, in_zp, w, ob, oe, o_n, bias, out, q, lo, hi, 0);
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
 * column per pixel pair, with the zero point subtracted and padding as zeros), so the inner loop
 * is four LDRD and eight SMLAD per 16 MACs. */
#define SMALL_KERNEL 64
#define SMALL_BLOCK 16 /* output channels whose unpacked weights sit on the stack at once (2 KB) */

/* n int8 -> n4 / 2 words: per group of 4, (v0, v2) then (v1, v3) as int16 pairs, plus nzp. */
static ALWAYS_INLINE void unpack_q15(const int8_t *v, int n, uint32_t nzp, uint32_t *out) {
    int k = 0;
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

static void conv_small_kernel(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                              int8_t *out, int simple) {
    const int ic = p->is.c, oc_n = p->os.c, lo = p->act_min, hi = p->act_max;
    const int kernel_n = p->kh * p->kw * ic, words = ((kernel_n + 3) / 4) * 2;
    const int pixels = p->os.h * p->os.w;
    const uint32_t nzp = hw_pack16x2(-p->in_zp);
    int8_t col8[2][SMALL_KERNEL] __attribute__((aligned(4)));
    uint32_t col[2][SMALL_KERNEL / 2];
    uint32_t wq[SMALL_BLOCK][SMALL_KERNEL / 2];
    rq_t q[SMALL_BLOCK];
    for (int ob = 0; ob < oc_n; ob += SMALL_BLOCK) {
        const int oe = rq_block(q, ob, oc_n, SMALL_BLOCK, p->mult, p->shift, p->out_zp);
        for (int o = ob; o < oe; o++) unpack_q15(w + o * kernel_n, kernel_n, 0, wq[o - ob]);
        for (int px = 0; px < pixels; px += 2) {
            const int rows = px + 1 < pixels ? 2 : 1;
            for (int r = 0; r < rows; r++) {
                im2col(p, in, (px + r) / p->os.w, (px + r) % p->os.w, col8[r]);
                unpack_q15(col8[r], kernel_n, nzp, col[r]);
            }
            int8_t *y = out + px * oc_n;
            for (int o = ob; o < oe; o += 2) {
                const int o1 = o + 1 < oe ? o + 1 : o;
                const uint32_t *w0 = wq[o - ob], *w1 = wq[o1 - ob], *x0 = col[0], *x1 = col[1];
                int32_t a00 = bias ? bias[o] : 0, a01 = bias ? bias[o1] : 0, a10 = a00, a11 = a01;
                for (int k = 0; k < words; k += 2) {
                    a00 = hw_smlad(x0[k], w0[k], a00);
                    a00 = hw_smlad(x0[k + 1], w0[k + 1], a00);
                    a01 = hw_smlad(x0[k], w1[k], a01);
                    a01 = hw_smlad(x0[k + 1], w1[k + 1], a01);
                    a10 = hw_smlad(x1[k], w0[k], a10);
                    a10 = hw_smlad(x1[k + 1], w0[k + 1], a10);
                    a11 = hw_smlad(x1[k], w1[k], a11);
                    a11 = hw_smlad(x1[k + 1], w1[k + 1], a11);
                }
                const rq_t *q0 = &q[o - ob], *q1 = &q[o1 - ob];
                if (simple) {
                    y[o] = rq_out(a00, q0, lo, hi, 1);
                    y[o1] = rq_out(a01, q1, lo, hi, 1);
                } else {
                    y[o] = rq_out(a00, q0, lo, hi, 0);
                    y[o1] = rq_out(a01, q1, lo, hi, 0);
                }
                if (rows == 2) {
                    y[oc_n + o] = rq_out(a10, q0, lo, hi, simple);
                    y[oc_n + o1] = rq_out(a11, q1, lo, hi, simple);
                }
            }
        }
    }
}

void hw_conv2d_s8_opt(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                      int8_t *out) {
    const int ic = p->is.c, oc_n = p->os.c, lo = p->act_min, hi = p->act_max;
    const int kernel_n = p->kh * p->kw * ic;
    const int kind = requant_kind(p->mult, p->shift, oc_n, p->out_zp, bias, kernel_n, lo, hi);
    if (!kind || kernel_n > IM2COL_MAX) {
        hw_conv2d_s8(p, in, w, bias, out);
        return;
    }
    if (p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_top == 0 && p->pad_left == 0) {
        matmul_layer(in, p->os.h * p->os.w, ic, p->in_zp, w, oc_n, bias, out, p->out_zp, p->mult, p->shift, lo, hi,
                     kind == 2);
        return;
    }
    if (kernel_n <= SMALL_KERNEL) {
        conv_small_kernel(p, in, w, bias, out, kind == 2);
        return;
    }
    /* two output pixels at a time: their columns side by side, then a 2-row matrix product */
    int8_t cols[2 * IM2COL_MAX] __attribute__((aligned(4)));
    rq_t q[RQ_BLOCK];
    const int pixels = p->os.h * p->os.w;
    for (int ob = 0; ob < oc_n; ob += RQ_BLOCK) {
        const int oe = rq_block(q, ob, oc_n, RQ_BLOCK, p->mult, p->shift, p->out_zp);
        for (int px = 0; px < pixels; px += 2) {
            const int rows = px + 1 < pixels ? 2 : 1;
            for (int r = 0; r < rows; r++)
                im2col(p, in, (px + r) / p->os.w, (px + r) % p->os.w, cols + r * kernel_n);
            if (kind == 2)
                matmul_s8(cols, rows, kernel_n, p->in_zp, w, ob, oe, oc_n, bias, out + px * oc_n, q, lo, hi, 1);
            else
                matmul_s8(cols, rows, kernel_n, p->in_zp, w, ob, oe, oc_n, bias, out + px * oc_n, q, lo, hi, 0);
        }
    }
}

/* Four channels of one output pixel over rows x cols taps; x and wp point at the first tap. */
static ALWAYS_INLINE void dw_taps(const int8_t *x, const uint32_t *wp, int rows, int cols, int x_row_skip,
                                  int w_row_skip, int c_n, uint32_t nzp, int32_t *a) {
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
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

static ALWAYS_INLINE void dw_store(int8_t *y, const int32_t *a, const rq_t *q, int lo, int hi, const int simple) {
    y[0] = rq_out(a[0], &q[0], lo, hi, simple);
    y[1] = rq_out(a[1], &q[1], lo, hi, simple);
    y[2] = rq_out(a[2], &q[2], lo, hi, simple);
    y[3] = rq_out(a[3], &q[3], lo, hi, simple);
}

/* The interior pixels of one output row, for a kernel width known at compile time. */
/* x_step: input bytes between the row's pixels; in_row: between input rows; tap: between taps
 * (the channel count, or 4 in a padded plane); y_step: between output pixels. */
static ALWAYS_INLINE void dw_row_interior(const int8_t *x, const uint32_t *wq, int kh, const int kw, int n_px,
                                          int x_step, int in_row, const int tap, int y_step, uint32_t nzp,
                                          const int32_t *b, const rq_t *q, int8_t *y, int lo, int hi,
                                          const int simple) {
    for (int i = 0; i < n_px; i++, x += x_step, y += y_step) {
        int32_t a[4] = {b[0], b[1], b[2], b[3]};
        dw_taps(x, wq, kh, kw, in_row - kw * tap, 0, tap, nzp, a);
        dw_store(y, a, q, lo, hi, simple);
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

static ALWAYS_INLINE void dw_quad(const hw_conv_params_t *p, const dw_quad_t *d, const int simple) {
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
                const int n_px = inner.x1 - inner.x0;
                const int8_t *x = x_row + ox * x_step;
                int8_t *yo = y + ox * c_n;
                if (kw == 3)
                    dw_row_interior(x, d->wq, kh, 3, n_px, x_step, in_row, c_n, c_n, nzp, d->b, d->q, yo, lo, hi,
                                    simple);
                else if (kw == 5)
                    dw_row_interior(x, d->wq, kh, 5, n_px, x_step, in_row, c_n, c_n, nzp, d->b, d->q, yo, lo, hi,
                                    simple);
                else if (kw == 7)
                    dw_row_interior(x, d->wq, kh, 7, n_px, x_step, in_row, c_n, c_n, nzp, d->b, d->q, yo, lo, hi,
                                    simple);
                else
                    dw_row_interior(x, d->wq, kh, kw, n_px, x_step, in_row, c_n, c_n, nzp, d->b, d->q, yo, lo,
                                    hi, simple);
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
            dw_store(y + ox * c_n, a, d->q, lo, hi, simple);
            ox++;
        }
    }
}

/* Small inputs: most output pixels are border pixels (a 7x7 kernel on a 4x4 map has no
 * interior), so the four channels' receptive area is copied once into a plane padded with the
 * zero point, where every pixel takes the unrolled rows and taps sit 4 bytes apart. */
#define PLANE_WORDS 512 /* 2 KB on the stack */

static ALWAYS_INLINE void dw_plane_rows(const hw_conv_params_t *p, const dw_quad_t *d, const int8_t *plane, int pw,
                                        const int kw, const int simple) {
    const int c_n = p->is.c, ow = p->os.w;
    const uint32_t nzp = hw_pack16x2(-p->in_zp);
    for (int oy = 0; oy < p->os.h; oy++)
        dw_row_interior(plane + oy * p->stride_h * pw * 4, d->wq, p->kh, kw, ow, p->stride_w * 4, pw * 4, 4, c_n, nzp,
                        d->b, d->q, d->out + oy * ow * c_n + d->c, p->act_min, p->act_max, simple);
}

static ALWAYS_INLINE void dw_quad_plane(const hw_conv_params_t *p, const dw_quad_t *d, int ph, int pw,
                                        const int simple) {
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
    if (p->kw == 3)
        dw_plane_rows(p, d, pl, pw, 3, simple);
    else if (p->kw == 5)
        dw_plane_rows(p, d, pl, pw, 5, simple);
    else if (p->kw == 7)
        dw_plane_rows(p, d, pl, pw, 7, simple);
    else
        dw_plane_rows(p, d, pl, pw, p->kw, simple);
}

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
    const int kind = requant_kind(p->mult, p->shift, c_n, p->out_zp, bias, taps, p->act_min, p->act_max);
    if ((c_n & 3) || taps > MAX_DW_TAPS || !kind) {
        hw_depthwise_conv2d_s8(p, in, w, bias, out);
        return;
    }
    uint32_t wq[2 * MAX_DW_TAPS]; /* per tap, the four channels' weights unpacked: (c0, c2), (c1, c3) */
    rq_t q[4];
    int32_t b[4];
    dw_quad_t d = {in, out, wq, b, q, 0, {0, 0, 0, 0}};
    interior(p->is.h, p->os.h, p->kh, p->stride_h, p->pad_top, &d.inner.y0, &d.inner.y1);
    interior(p->is.w, p->os.w, p->kw, p->stride_w, p->pad_left, &d.inner.x0, &d.inner.x1);
    for (int c = 0; c < c_n; c += 4) {
        for (int i = 0; i < 4; i++) {
            rq_make(&q[i], p->mult[c + i], p->shift[c + i], p->out_zp, 0);
            b[i] = bias ? bias[c + i] : 0;
        }
        for (int t = 0; t < taps; t++) {
            const uint32_t v = hw_read_s8x4(w + t * c_n + c);
            wq[2 * t] = hw_sxtb16(v);
            wq[2 * t + 1] = hw_sxtb16_ror8(v);
        }
        d.c = c;
        const int ph = (p->os.h - 1) * p->stride_h + p->kh, pw = (p->os.w - 1) * p->stride_w + p->kw;
        const int border = p->os.h * p->os.w - (d.inner.y1 - d.inner.y0) * (d.inner.x1 - d.inner.x0);
        if (ph * pw <= PLANE_WORDS && 4 * border >= p->os.h * p->os.w) { /* a quarter or more on the border */
            if (kind == 2)
                dw_quad_plane(p, &d, ph, pw, 1);
            else
                dw_quad_plane(p, &d, ph, pw, 0);
        } else if (kind == 2)
            dw_quad(p, &d, 1);
        else
            dw_quad(p, &d, 0);
    }
}

void hw_fully_connected_s8_opt(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w, const int32_t *bias,
                               int8_t *out, int n_out, int32_t out_zp, const int32_t *mult, const int32_t *shift,
                               int act_min, int act_max) {
    const int kind = requant_kind(mult, shift, n_out, out_zp, bias, n_in, act_min, act_max);
    if (!kind) {
        hw_fully_connected_s8(in, n_in, in_zp, w, bias, out, n_out, out_zp, mult, shift, act_min, act_max);
        return;
    }
    matmul_layer(in, 1, n_in, in_zp, w, n_out, bias, out, out_zp, mult, shift, act_min, act_max, kind == 2);
}
