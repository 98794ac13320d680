/* Portable int8 reference kernels (TFLite reference semantics, gemmlowp rounding). These stay
 * the reference that optimised kernels are tested against. */
#include <math.h>
#include <string.h>

#include "kernels.h"

static int32_t srdhm(int32_t a, int32_t b) { /* SaturatingRoundingDoublingHighMul */
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((ab + nudge) / (1ll << 31));
}

static int32_t rdivpot(int32_t x, int exponent) { /* RoundingDivideByPOT */
    if (exponent == 0) return x;
    int32_t mask = (int32_t)((1ll << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t hw_requantize(int32_t acc, int32_t multiplier, int32_t shift) {
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    return rdivpot(srdhm(acc * (1 << left), multiplier), right);
}

static inline int8_t clamp_s8(int32_t v, int lo, int hi) {
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    return (int8_t)v;
}

static void pointwise_s8(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                         int8_t *out) { /* a matrix product over pixels */
    const int ic_n = p->is.c, oc_n = p->os.c, pixels = p->os.h * p->os.w;
    for (int px = 0; px < pixels; px++) {
        const int8_t *x = in + px * ic_n;
        for (int oc = 0; oc < oc_n; oc++) {
            int32_t acc = hw_conv_taps(p, w, oc * ic_n, x, ic_n);
            if (bias) acc += bias[oc];
            out[px * oc_n + oc] =
                clamp_s8(hw_requantize(acc, p->mult[oc], p->shift[oc]) + p->out_zp, p->act_min, p->act_max);
        }
    }
}

void hw_conv2d_s8_region(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                         int8_t *out, hw_region_t r) {
    const int ic_n = p->is.c, kh = p->kh, kw = p->kw;
    for (int oy = r.y0; oy < r.y1; oy++) {
        for (int ox = r.x0; ox < r.x1; ox++) {
            const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
            for (int oc = 0; oc < p->os.c; oc++) {
                int32_t acc = 0;
                for (int ky = 0; ky < kh; ky++) {
                    const int iy = iy0 + ky;
                    if (iy < 0 || iy >= p->is.h) continue;
                    for (int kx = 0; kx < kw; kx++) {
                        const int ix = ix0 + kx;
                        if (ix < 0 || ix >= p->is.w) continue;
                        const int8_t *x = in + (iy * p->is.w + ix) * ic_n;
                        acc += hw_conv_taps(p, w, ((oc * kh + ky) * kw + kx) * ic_n, x, ic_n);
                    }
                }
                if (bias) acc += bias[oc];
                out[(oy * p->os.w + ox) * p->os.c + oc] =
                    clamp_s8(hw_requantize(acc, p->mult[oc], p->shift[oc]) + p->out_zp, p->act_min, p->act_max);
            }
        }
    }
}

void hw_conv2d_s8(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias, int8_t *out) {
    if (p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_top == 0 && p->pad_left == 0)
        pointwise_s8(p, in, w, bias, out);
    else
        hw_conv2d_s8_region(p, in, w, bias, out, (hw_region_t){0, p->os.h, 0, p->os.w});
}

void hw_depthwise_conv2d_s8_region(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                   const int32_t *bias, int8_t *out, hw_region_t r) {
    /* output channel oc reads input channel oc / M (depth multiplier M = os.c / is.c, TFLite's order) */
    const int ic_n = p->is.c, oc_n = p->os.c, mult = oc_n / ic_n, kh = p->kh, kw = p->kw;
    for (int oy = r.y0; oy < r.y1; oy++) {
        for (int ox = r.x0; ox < r.x1; ox++) {
            const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
            for (int c = 0; c < oc_n; c++) {
                const int ic = mult == 1 ? c : c / mult;
                int32_t acc = 0;
                for (int ky = 0; ky < kh; ky++) {
                    const int iy = iy0 + ky;
                    if (iy < 0 || iy >= p->is.h) continue;
                    for (int kx = 0; kx < kw; kx++) {
                        const int ix = ix0 + kx;
                        if (ix < 0 || ix >= p->is.w) continue;
                        acc += (int32_t)w[(ky * kw + kx) * oc_n + c] *
                               ((int32_t)in[(iy * p->is.w + ix) * ic_n + ic] - p->in_zp);
                    }
                }
                if (bias) acc += bias[c];
                out[(oy * p->os.w + ox) * oc_n + c] =
                    clamp_s8(hw_requantize(acc, p->mult[c], p->shift[c]) + p->out_zp, p->act_min, p->act_max);
            }
        }
    }
}

void hw_depthwise_conv2d_s8(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                            int8_t *out) {
    hw_depthwise_conv2d_s8_region(p, in, w, bias, out, (hw_region_t){0, p->os.h, 0, p->os.w});
}

void hw_add_s8(const int8_t *a, int32_t a_zp, const int8_t *b, int32_t b_zp, int8_t *out, int32_t out_zp,
               int n, int left_shift, int32_t a_mult, int32_t a_shift, int32_t b_mult, int32_t b_shift,
               int32_t out_mult, int32_t out_shift, int act_min, int act_max) {
    for (int i = 0; i < n; i++) {
        int32_t x = ((int32_t)a[i] - a_zp) * (1 << left_shift);
        int32_t y = ((int32_t)b[i] - b_zp) * (1 << left_shift);
        int32_t sum = hw_requantize(x, a_mult, a_shift) + hw_requantize(y, b_mult, b_shift);
        out[i] = clamp_s8(hw_requantize(sum, out_mult, out_shift) + out_zp, act_min, act_max);
    }
}

void hw_relu_s8(const int8_t *in, int32_t in_zp, int8_t *out, int32_t out_zp, int n, int32_t mult,
                int32_t shift, int act_min, int act_max) {
    for (int i = 0; i < n; i++)
        out[i] = clamp_s8(hw_requantize((int32_t)in[i] - in_zp, mult, shift) + out_zp, act_min, act_max);
}

void hw_mean_hw_s8(const int8_t *in, hw_shape_t is, int32_t in_zp, int8_t *out, int32_t out_zp, int32_t mult,
                   int32_t shift, int folded) {
    const int pixels = is.h * is.w;
    for (int c = 0; c < is.c; c++) {
        int32_t acc = 0;
        for (int p = 0; p < pixels; p++) acc += (int32_t)in[p * is.c + c] - in_zp;
        acc = hw_requantize(acc, mult, shift);
        if (!folded) acc = acc > 0 ? (acc + pixels / 2) / pixels : (acc - pixels / 2) / pixels;
        out[c] = clamp_s8(acc + out_zp, -128, 127);
    }
}

/* TFLite's MultiplyByQuantizedMultiplier for a 64-bit product: one rounding, (x * m + 2^(s-1)) >> s
 * with s = 31 - shift, where hw_requantize rounds twice (gemmlowp's doubling high multiply, then a
 * rounding right shift). LiteRT's reference kernel takes this one for per-channel FULLY_CONNECTED. */
int32_t hw_requantize_single(int32_t acc, int32_t multiplier, int32_t shift) {
    const int total = 31 - shift;
    return (int32_t)(((int64_t)acc * multiplier + ((int64_t)1 << (total - 1))) >> total);
}

/* Both requantisations share the loop; `single` picks hw_requantize_single (a constant at each call). */
static inline void fully_connected_s8(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w, const int32_t *bias,
                                      int8_t *out, int n_out, int32_t out_zp, const int32_t *mult,
                                      const int32_t *shift, int act_min, int act_max, int single) {
    for (int o = 0; o < n_out; o++) {
        const int8_t *f = w + o * n_in;
        int32_t acc = 0;
        for (int i = 0; i < n_in; i++) acc += (int32_t)f[i] * ((int32_t)in[i] - in_zp);
        if (bias) acc += bias[o];
        const int32_t r = single ? hw_requantize_single(acc, mult[o], shift[o]) : hw_requantize(acc, mult[o], shift[o]);
        out[o] = clamp_s8(r + out_zp, act_min, act_max);
    }
}

void hw_fully_connected_s8(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w, const int32_t *bias,
                           int8_t *out, int n_out, int32_t out_zp, const int32_t *mult, const int32_t *shift,
                           int act_min, int act_max) {
    fully_connected_s8(in, n_in, in_zp, w, bias, out, n_out, out_zp, mult, shift, act_min, act_max, 0);
}

void hw_fully_connected_s8_single(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w, const int32_t *bias,
                                  int8_t *out, int n_out, int32_t out_zp, const int32_t *mult, const int32_t *shift,
                                  int act_min, int act_max) {
    fully_connected_s8(in, n_in, in_zp, w, bias, out, n_out, out_zp, mult, shift, act_min, act_max, 1);
}

static void pool_s8(const hw_pool_params_t *p, const int8_t *in, int8_t *out, int act_min, int act_max, int max) {
    const int c_n = p->is.c;
    for (int oy = 0; oy < p->os.h; oy++) {
        const int iy = oy * p->stride_h - p->pad_top;
        int y0, y1;
        hw_valid_range(iy, p->fh, p->is.h, &y0, &y1);
        for (int ox = 0; ox < p->os.w; ox++) {
            const int ix = ox * p->stride_w - p->pad_left;
            int x0, x1;
            hw_valid_range(ix, p->fw, p->is.w, &x0, &x1);
            const int count = (y1 - y0) * (x1 - x0);
            int8_t *y = out + (oy * p->os.w + ox) * c_n;
            for (int c = 0; c < c_n; c++) {
                int32_t acc = max ? -128 : 0;
                for (int ky = y0; ky < y1; ky++)
                    for (int kx = x0; kx < x1; kx++) {
                        const int32_t v = in[((iy + ky) * p->is.w + ix + kx) * c_n + c];
                        acc = max ? (v > acc ? v : acc) : acc + v;
                    }
                if (!max && count) acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                y[c] = clamp_s8(acc, act_min, act_max);
            }
        }
    }
}

void hw_avg_pool_s8(const hw_pool_params_t *p, const int8_t *in, int8_t *out, int act_min, int act_max) {
    pool_s8(p, in, out, act_min, act_max, 0);
}

void hw_max_pool_s8(const hw_pool_params_t *p, const int8_t *in, int8_t *out, int act_min, int act_max) {
    pool_s8(p, in, out, act_min, act_max, 1);
}

void hw_pad_s8(const int8_t *in, hw_shape_t is, int8_t *out, hw_shape_t os, int top, int left, int8_t value) {
    for (int y = 0; y < os.h; y++) {
        for (int x = 0; x < os.w; x++) {
            int8_t *o = out + (y * os.w + x) * os.c;
            const int iy = y - top, ix = x - left;
            if (iy < 0 || iy >= is.h || ix < 0 || ix >= is.w) {
                for (int c = 0; c < os.c; c++) o[c] = value;
            } else {
                const int8_t *i = in + (iy * is.w + ix) * is.c;
                for (int c = 0; c < os.c; c++) o[c] = i[c];
            }
        }
    }
}

void hw_transpose(const uint8_t *in, const uint16_t *in_dims, uint8_t *out, const int32_t *perm, int elem) {
    int stride[4], od[4];
    stride[3] = elem;
    for (int i = 2; i >= 0; i--) stride[i] = stride[i + 1] * in_dims[i + 1];
    for (int i = 0; i < 4; i++) od[i] = in_dims[perm[i]];
    for (int a = 0; a < od[0]; a++)
        for (int b = 0; b < od[1]; b++)
            for (int c = 0; c < od[2]; c++)
                for (int d = 0; d < od[3]; d++, out += elem) {
                    const uint8_t *src = in + a * stride[perm[0]] + b * stride[perm[1]] + c * stride[perm[2]] +
                                         d * stride[perm[3]];
                    for (int k = 0; k < elem; k++) out[k] = src[k];
                }
}

void hw_lut_s8(const int8_t *in, int8_t *out, int n, const int8_t *lut) {
    for (int i = 0; i < n; i++) out[i] = lut[(uint8_t)(in[i] + 128)];
}

void hw_softmax_s8(const int8_t *in, int8_t *out, int rows, int depth, const float *exp_table, float out_scale,
                   int32_t out_zp) {
    for (int r = 0; r < rows; r++, in += depth, out += depth) {
        int max = -128;
        for (int j = 0; j < depth; j++)
            if (in[j] > max) max = in[j];
        const float *t = exp_table + 255 - max; /* t[x] = exp(beta * scale * (x - max)) */
        float sum = 0.f;
        for (int j = 0; j < depth; j++) sum += t[in[j]];
        const float inv = 1.f / (sum * out_scale);
        for (int j = 0; j < depth; j++) {
            out[j] = clamp_s8((int32_t)roundf(t[in[j]] * inv) + out_zp, -128, 127);
        }
    }
}

void hw_mul_s8(const int8_t *a, int32_t a_zp, const int8_t *b, int32_t b_zp, int8_t *out, int32_t out_zp, int n,
               int c, int broadcast, int32_t mult, int32_t shift, int act_min, int act_max) {
    for (int i = 0; i < n; i++) {
        const int32_t bv = (broadcast ? b[i % c] : b[i]) - b_zp;
        out[i] = clamp_s8(out_zp + hw_requantize((a[i] - a_zp) * bv, mult, shift), act_min, act_max);
    }
}

void hw_concatenation(const uint8_t *const *in, const uint16_t *const *in_dims, int n_in, uint8_t *out, int axis,
                      int elem) {
    /* each input contributes a contiguous run of (its dims from `axis` on) elements per outer index */
    int outer = 1;
    for (int d = 0; d < axis; d++) outer *= in_dims[0][d];
    uint32_t run[4];
    for (int k = 0; k < n_in; k++) {
        run[k] = (uint32_t)elem;
        for (int d = axis; d < 4; d++) run[k] *= in_dims[k][d];
    }
    for (int o = 0; o < outer; o++)
        for (int k = 0; k < n_in; k++) {
            memcpy(out, in[k] + (uint32_t)o * run[k], run[k]);
            out += run[k];
        }
}
