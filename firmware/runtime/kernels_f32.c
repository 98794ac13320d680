/* float32 kernels: NHWC, weights as the int8 ones ([O][KH][KW][I], depthwise [1][KH][KW][C]),
 * fused activation as a clamp. Only taps inside the input are visited (padding adds zero), so
 * no tap is bounds-checked. Built with -mfpu=fpv5-(sp-)d16 they use the M7's VFMA. */
#include <math.h>

#include "kernels.h"

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

static float dot_f32(const float *x, const float *w, int n) {
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f; /* four chains hide the FMA latency */
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        a0 += x[k] * w[k];
        a1 += x[k + 1] * w[k + 1];
        a2 += x[k + 2] * w[k + 2];
        a3 += x[k + 3] * w[k + 3];
    }
    for (; k < n; k++) a0 += x[k] * w[k];
    return (a0 + a1) + (a2 + a3);
}

void hw_conv2d_f32(const hw_conv_params_f32_t *p, const float *in, const float *w, const float *bias, float *out) {
    const int ic = p->is.c, oc_n = p->os.c, kernel_n = p->kh * p->kw * ic;
    for (int oy = 0; oy < p->os.h; oy++) {
        const int iy = oy * p->stride_h - p->pad_top;
        int y0, y1;
        hw_valid_range(iy, p->kh, p->is.h, &y0, &y1);
        for (int ox = 0; ox < p->os.w; ox++) {
            const int ix = ox * p->stride_w - p->pad_left;
            int x0, x1;
            hw_valid_range(ix, p->kw, p->is.w, &x0, &x1);
            const int seg = (x1 - x0) * ic; /* a kernel row's valid taps are contiguous */
            float *y = out + (oy * p->os.w + ox) * oc_n;
            for (int oc = 0; oc < oc_n; oc++) {
                const float *f = w + oc * kernel_n;
                float acc = bias ? bias[oc] : 0.f;
                for (int ky = y0; ky < y1; ky++)
                    acc += dot_f32(in + ((iy + ky) * p->is.w + ix + x0) * ic, f + (ky * p->kw + x0) * ic, seg);
                y[oc] = clampf(acc, p->act_min, p->act_max);
            }
        }
    }
}

void hw_depthwise_conv2d_f32(const hw_conv_params_f32_t *p, const float *in, const float *w, const float *bias,
                             float *out) {
    /* output channel oc reads input channel oc / M (depth multiplier M = os.c / is.c) */
    const int ic_n = p->is.c, oc_n = p->os.c, mult = oc_n / ic_n;
    for (int oy = 0; oy < p->os.h; oy++) {
        const int iy = oy * p->stride_h - p->pad_top;
        int y0, y1;
        hw_valid_range(iy, p->kh, p->is.h, &y0, &y1);
        for (int ox = 0; ox < p->os.w; ox++) {
            const int ix = ox * p->stride_w - p->pad_left;
            int x0, x1;
            hw_valid_range(ix, p->kw, p->is.w, &x0, &x1);
            float *y = out + (oy * p->os.w + ox) * oc_n;
            for (int c = 0; c < oc_n; c++) y[c] = bias ? bias[c] : 0.f;
            for (int ky = y0; ky < y1; ky++)
                for (int kx = x0; kx < x1; kx++) {
                    const float *x = in + ((iy + ky) * p->is.w + ix + kx) * ic_n;
                    const float *f = w + (ky * p->kw + kx) * oc_n;
                    if (mult == 1)
                        for (int c = 0; c < oc_n; c++) y[c] += x[c] * f[c];
                    else
                        for (int c = 0; c < oc_n; c++) y[c] += x[c / mult] * f[c];
                }
            for (int c = 0; c < oc_n; c++) y[c] = clampf(y[c], p->act_min, p->act_max);
        }
    }
}

void hw_fully_connected_f32(const float *in, int n_in, const float *w, const float *bias, float *out, int n_out,
                            float act_min, float act_max) {
    for (int o = 0; o < n_out; o++)
        out[o] = clampf((bias ? bias[o] : 0.f) + dot_f32(in, w + o * n_in, n_in), act_min, act_max);
}

void hw_add_f32(const float *a, const float *b, float *out, int n, float act_min, float act_max) {
    for (int i = 0; i < n; i++) out[i] = clampf(a[i] + b[i], act_min, act_max);
}

void hw_mean_hw_f32(const float *in, hw_shape_t is, float *out) {
    const int pixels = is.h * is.w;
    for (int c = 0; c < is.c; c++) out[c] = 0.f;
    for (int px = 0; px < pixels; px++)
        for (int c = 0; c < is.c; c++) out[c] += in[px * is.c + c];
    for (int c = 0; c < is.c; c++) out[c] /= (float)pixels;
}

void hw_pad_f32(const float *in, hw_shape_t is, float *out, hw_shape_t os, int top, int left) {
    for (int y = 0; y < os.h; y++)
        for (int x = 0; x < os.w; x++) {
            float *o = out + (y * os.w + x) * os.c;
            const int iy = y - top, ix = x - left;
            const int inside = iy >= 0 && iy < is.h && ix >= 0 && ix < is.w;
            for (int c = 0; c < os.c; c++) o[c] = inside ? in[(iy * is.w + ix) * is.c + c] : 0.f;
        }
}

void hw_hardswish_f32(const float *in, float *out, int n) {
    for (int i = 0; i < n; i++) out[i] = in[i] * clampf(in[i] + 3.f, 0.f, 6.f) * (1.f / 6.f);
}

void hw_relu_f32(const float *in, float *out, int n) {
    for (int i = 0; i < n; i++) out[i] = in[i] > 0.f ? in[i] : 0.f;
}

void hw_logistic_f32(const float *in, float *out, int n) {
    for (int i = 0; i < n; i++) out[i] = 1.f / (1.f + expf(-in[i]));
}

void hw_mul_f32(const float *a, const float *b, float *out, int n, int c, int broadcast, float act_min,
                float act_max) {
    for (int i = 0; i < n; i++) out[i] = clampf(a[i] * (broadcast ? b[i % c] : b[i]), act_min, act_max);
}

static void pool_f32(const hw_pool_params_t *p, const float *in, float *out, float act_min, float act_max, int max) {
    const int c_n = p->is.c;
    for (int oy = 0; oy < p->os.h; oy++) {
        const int iy = oy * p->stride_h - p->pad_top;
        int y0, y1;
        hw_valid_range(iy, p->fh, p->is.h, &y0, &y1);
        for (int ox = 0; ox < p->os.w; ox++) {
            const int ix = ox * p->stride_w - p->pad_left;
            int x0, x1;
            hw_valid_range(ix, p->fw, p->is.w, &x0, &x1);
            float *y = out + (oy * p->os.w + ox) * c_n;
            const float count = (float)((y1 - y0) * (x1 - x0));
            for (int c = 0; c < c_n; c++) {
                float acc = max ? -3.402823466e38f : 0.f;
                for (int ky = y0; ky < y1; ky++)
                    for (int kx = x0; kx < x1; kx++) {
                        const float v = in[((iy + ky) * p->is.w + ix + kx) * c_n + c];
                        acc = max ? (v > acc ? v : acc) : acc + v;
                    }
                y[c] = clampf(max ? acc : acc / count, act_min, act_max);
            }
        }
    }
}

void hw_avg_pool_f32(const hw_pool_params_t *p, const float *in, float *out, float act_min, float act_max) {
    pool_f32(p, in, out, act_min, act_max, 0);
}

void hw_max_pool_f32(const hw_pool_params_t *p, const float *in, float *out, float act_min, float act_max) {
    pool_f32(p, in, out, act_min, act_max, 1);
}

void hw_tanh_f32(const float *in, float *out, int n) {
    for (int i = 0; i < n; i++) out[i] = tanhf(in[i]);
}

void hw_clamp_f32(const float *in, float *out, int n, float lo, float hi) {
    for (int i = 0; i < n; i++) out[i] = clampf(in[i], lo, hi);
}

void hw_leaky_relu_f32(const float *in, float *out, int n, float alpha) {
    for (int i = 0; i < n; i++) out[i] = in[i] > 0.f ? in[i] : in[i] * alpha;
}

void hw_softmax_f32(const float *in, float *out, int rows, int depth, float beta) {
    for (int r = 0; r < rows; r++, in += depth, out += depth) {
        float max = in[0], sum = 0.f;
        for (int j = 1; j < depth; j++)
            if (in[j] > max) max = in[j];
        for (int j = 0; j < depth; j++) sum += out[j] = expf((in[j] - max) * beta);
        const float inv = 1.f / sum;
        for (int j = 0; j < depth; j++) out[j] *= inv;
    }
}
