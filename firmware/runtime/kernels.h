/* int8 kernels with TFLite / CMSIS-NN quantisation semantics: per-channel symmetric weights,
 * asymmetric activations (NHWC), requantisation by fixed-point multiplier and shift. */
#ifndef HWNAS_KERNELS_H
#define HWNAS_KERNELS_H

#include <stdint.h>

typedef struct {
    int h, w, c;
} hw_shape_t;

int32_t hw_requantize(int32_t acc, int32_t multiplier, int32_t shift);
/* TFLite's single-rounding form (its 64-bit MultiplyByQuantizedMultiplier): (acc * m + 2^(30 -
 * shift)) >> (31 - shift); LiteRT's reference per-channel FULLY_CONNECTED requantises this way. */
int32_t hw_requantize_single(int32_t acc, int32_t multiplier, int32_t shift);

/* A convolution's geometry and quantisation (NHWC activations, weights [O][KH][KW][I] for conv2d,
 * [1][KH][KW][C*M] for depthwise with depth multiplier M = os.c / is.c); the same for every kernel variant. */
typedef struct {
    hw_shape_t is, os;
    int32_t in_zp, out_zp;
    int kh, kw, stride_h, stride_w, pad_top, pad_left;
    const int32_t *mult, *shift; /* per output channel */
    int act_min, act_max;
    int w_q15; /* conv2d weights stored unpacked (blob dtype HW_INT8_Q15): see hw_q15_index */
} hw_conv_params_t;

/* Where weight i of a conv2d's [O][KH][KW][I] weights sits when the blob stores them unpacked (w_q15:
 * what the Cortex-M7 kernels' inner loop reads without unpacking): int16, each group of four in
 * the order 0, 2, 1, 3 (the even pair, then the odd pair, as SXTB16 splits a word); a row's length
 * is a multiple of 4 there. */
static inline int hw_q15_index(int i) { return (i & ~3) | ((i & 1) << 1) | ((i >> 1) & 1); }

/* sum over t < n of weight (f + t) * (x[t] - in_zp), int8 or unpacked: the portable kernels' inner
 * loop, with the layout test hoisted out of it */
static inline __attribute__((always_inline)) int32_t hw_conv_taps_layout(const hw_conv_params_t *p, const int8_t *w,
                                                                         int f, const int8_t *x, int n,
                                                                         const int q15) {
    int32_t acc = 0;
    for (int t = 0; t < n; t++) {
        const int32_t wi = q15 ? ((const int16_t *)(const void *)w)[hw_q15_index(f + t)] : w[f + t];
        acc += wi * ((int32_t)x[t] - p->in_zp);
    }
    return acc;
}

static inline int32_t hw_conv_taps(const hw_conv_params_t *p, const int8_t *w, int f, const int8_t *x, int n) {
    return p->w_q15 ? hw_conv_taps_layout(p, w, f, x, n, 1) : hw_conv_taps_layout(p, w, f, x, n, 0);
}

/* The taps [*t0, *t1) of a window of k starting at input position `start` that lie in [0, n). */
static inline void hw_valid_range(int start, int k, int n, int *t0, int *t1) {
    *t0 = start < 0 ? -start : 0;
    *t1 = start + k > n ? n - start : k;
    if (*t1 < *t0) *t1 = *t0;
}

/* A rectangle of output pixels [y0, y1) x [x0, x1). */
typedef struct {
    int y0, y1, x0, x1;
} hw_region_t;

/* Portable reference kernels. */
void hw_conv2d_s8(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias, int8_t *out);
void hw_depthwise_conv2d_s8(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                            int8_t *out);
/* The same over part of the output (the optimised kernels use these for the padded border). */
void hw_conv2d_s8_region(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                         int8_t *out, hw_region_t r);
void hw_depthwise_conv2d_s8_region(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                   const int32_t *bias, int8_t *out, hw_region_t r);

/* Cortex-M7 (Armv7E-M DSP) kernels, kernels_s8_opt.c: the same results bit for bit; they fall
 * back to the portable kernels for what they do not cover (see there). */
void hw_conv2d_s8_opt(const hw_conv_params_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                      int8_t *out);
void hw_depthwise_conv2d_s8_opt(const hw_conv_params_t *p, const int8_t *in, const int8_t *w,
                                const int32_t *bias, int8_t *out);
void hw_fully_connected_s8_opt(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w, const int32_t *bias,
                               int8_t *out, int n_out, int32_t out_zp, const int32_t *mult, const int32_t *shift,
                               int act_min, int act_max);
void hw_fully_connected_s8_single_opt(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w,
                                      const int32_t *bias, int8_t *out, int n_out, int32_t out_zp,
                                      const int32_t *mult, const int32_t *shift, int act_min, int act_max);

void hw_add_s8(const int8_t *a, int32_t a_zp, const int8_t *b, int32_t b_zp, int8_t *out, int32_t out_zp,
               int n, int left_shift, int32_t a_mult, int32_t a_shift, int32_t b_mult, int32_t b_shift,
               int32_t out_mult, int32_t out_shift, int act_min, int act_max);
/* The same by two 256-entry tables of each input's rescaled values (kernels_s8_opt.c). */
void hw_add_s8_opt(const int8_t *a, int32_t a_zp, const int8_t *b, int32_t b_zp, int8_t *out, int32_t out_zp,
                   int n, int left_shift, int32_t a_mult, int32_t a_shift, int32_t b_mult, int32_t b_shift,
                   int32_t out_mult, int32_t out_shift, int act_min, int act_max);

/* TFLite's int8 MEAN over H and W: sum of (x - in_zp), requantised by (mult, shift), plus out_zp.
 * `folded`: (mult, shift) is in_scale / (out_scale * H * W), as LiteRT's kernel computes it;
 * otherwise in_scale / out_scale and the division by H*W follows, rounding half away from zero
 * (blobs before firmware 0.5.0; up to one step off LiteRT). */
/* TFLite's quantised ReLU: out = clamp(out_zp + requant(in - in_zp)), act_min = max(-128, out_zp) */
void hw_relu_s8(const int8_t *in, int32_t in_zp, int8_t *out, int32_t out_zp, int n, int32_t mult,
                int32_t shift, int act_min, int act_max);
/* A 256-entry table from int8 input to int8 output (TFLite's int8 LOGISTIC, TANH, HARD_SWISH, ...). */
void hw_lut_s8(const int8_t *in, int8_t *out, int n, const int8_t *lut);
/* LiteRT's int8 SOFTMAX over the last dimension (`rows` of `depth`): exp_table[255 - d] =
 * exp(-beta * in_scale * d), summed in float32 in order, out = round(exp / (sum * out_scale)) + zp. */
void hw_softmax_s8(const int8_t *in, int8_t *out, int rows, int depth, const float *exp_table, float out_scale,
                   int32_t out_zp);
/* Concatenation along blob dimension `axis` (0-3) of up to four inputs of `elem`-byte elements
 * (int8 inputs share the output's quantisation: a copy, as LiteRT requires). */
void hw_concatenation(const uint8_t *const *in, const uint16_t *const *in_dims, int n_in, uint8_t *out, int axis,
                      int elem);
/* TFLite's int8 MUL: out = clamp(out_zp + requant((a - a_zp) * (b - b_zp))); with `broadcast` b
 * holds one value per channel (c of them) for every pixel of a. */
void hw_mul_s8(const int8_t *a, int32_t a_zp, const int8_t *b, int32_t b_zp, int8_t *out, int32_t out_zp, int n,
               int c, int broadcast, int32_t mult, int32_t shift, int act_min, int act_max);
void hw_mean_hw_s8(const int8_t *in, hw_shape_t is, int32_t in_zp, int8_t *out, int32_t out_zp, int32_t mult,
                   int32_t shift, int folded);

void hw_fully_connected_s8(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w, const int32_t *bias,
                           int8_t *out, int n_out, int32_t out_zp, const int32_t *mult, const int32_t *shift,
                           int act_min, int act_max);
/* The same with TFLite's single-rounding requantisation, as LiteRT's reference kernel computes a
 * FULLY_CONNECTED whose weights have one scale per output channel (blob flag p[4]). */
void hw_fully_connected_s8_single(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w, const int32_t *bias,
                                  int8_t *out, int n_out, int32_t out_zp, const int32_t *mult, const int32_t *shift,
                                  int act_min, int act_max);

/* TFLite int8 pooling over valid (unpadded) taps; average rounds half away from zero. */
typedef struct {
    hw_shape_t is, os;
    int fh, fw, stride_h, stride_w, pad_top, pad_left;
} hw_pool_params_t;
void hw_avg_pool_s8(const hw_pool_params_t *p, const int8_t *in, int8_t *out, int act_min, int act_max);
void hw_max_pool_s8(const hw_pool_params_t *p, const int8_t *in, int8_t *out, int act_min, int act_max);

void hw_pad_s8(const int8_t *in, hw_shape_t is, int8_t *out, hw_shape_t os, int top, int left, int8_t value);

/* Any 4-D permutation of elements of `elem` bytes: out dim i is in dim perm[i]. */
void hw_transpose(const uint8_t *in, const uint16_t *in_dims, uint8_t *out, const int32_t *perm, int elem);

/* float32 kernels (kernels_f32.c), NHWC, same geometry; fused activations as a clamp range.
 * Built with the board's FPU flags they compile to VFMA; loops run over valid taps only. */
typedef struct {
    hw_shape_t is, os;
    int kh, kw, stride_h, stride_w, pad_top, pad_left;
    float act_min, act_max;
} hw_conv_params_f32_t;

void hw_conv2d_f32(const hw_conv_params_f32_t *p, const float *in, const float *w, const float *bias, float *out);
void hw_depthwise_conv2d_f32(const hw_conv_params_f32_t *p, const float *in, const float *w, const float *bias,
                             float *out);
void hw_fully_connected_f32(const float *in, int n_in, const float *w, const float *bias, float *out, int n_out,
                            float act_min, float act_max);
void hw_add_f32(const float *a, const float *b, float *out, int n, float act_min, float act_max);
void hw_mean_hw_f32(const float *in, hw_shape_t is, float *out);
void hw_pad_f32(const float *in, hw_shape_t is, float *out, hw_shape_t os, int top, int left);
void hw_hardswish_f32(const float *in, float *out, int n);
void hw_relu_f32(const float *in, float *out, int n);
void hw_logistic_f32(const float *in, float *out, int n);
void hw_tanh_f32(const float *in, float *out, int n);
void hw_clamp_f32(const float *in, float *out, int n, float lo, float hi);
void hw_leaky_relu_f32(const float *in, float *out, int n, float alpha);
void hw_softmax_f32(const float *in, float *out, int rows, int depth, float beta);
void hw_mul_f32(const float *a, const float *b, float *out, int n, int c, int broadcast, float act_min,
                float act_max);
void hw_avg_pool_f32(const hw_pool_params_t *p, const float *in, float *out, float act_min, float act_max);
void hw_max_pool_f32(const hw_pool_params_t *p, const float *in, float *out, float act_min, float act_max);

#endif
