/* int8 kernels with TFLite / CMSIS-NN quantisation semantics: per-channel symmetric weights,
 * asymmetric activations (NHWC), requantisation by fixed-point multiplier and shift. */
#ifndef HWNAS_KERNELS_H
#define HWNAS_KERNELS_H

#include <stdint.h>

typedef struct {
    int h, w, c;
} hw_shape_t;

int32_t hw_requantize(int32_t acc, int32_t multiplier, int32_t shift);

void hw_conv2d_s8(const int8_t *in, hw_shape_t is, int32_t in_zp, const int8_t *w, int kh, int kw,
                  const int32_t *bias, int8_t *out, hw_shape_t os, int32_t out_zp, int stride_h, int stride_w,
                  int pad_top, int pad_left, const int32_t *mult, const int32_t *shift, int act_min, int act_max);

void hw_depthwise_conv2d_s8(const int8_t *in, hw_shape_t is, int32_t in_zp, const int8_t *w, int kh, int kw,
                            const int32_t *bias, int8_t *out, hw_shape_t os, int32_t out_zp, int stride_h,
                            int stride_w, int pad_top, int pad_left, const int32_t *mult, const int32_t *shift,
                            int act_min, int act_max);

void hw_add_s8(const int8_t *a, int32_t a_zp, const int8_t *b, int32_t b_zp, int8_t *out, int32_t out_zp,
               int n, int left_shift, int32_t a_mult, int32_t a_shift, int32_t b_mult, int32_t b_shift,
               int32_t out_mult, int32_t out_shift, int act_min, int act_max);

/* TFLite's int8 MEAN over H and W: sum of (x - in_zp), scaled by in_scale / out_scale (mult, shift),
 * divided by H*W with rounding half away from zero, plus out_zp. */
void hw_mean_hw_s8(const int8_t *in, hw_shape_t is, int32_t in_zp, int8_t *out, int32_t out_zp, int32_t mult,
                   int32_t shift);

void hw_fully_connected_s8(const int8_t *in, int n_in, int32_t in_zp, const int8_t *w, const int32_t *bias,
                           int8_t *out, int n_out, int32_t out_zp, const int32_t *mult, const int32_t *shift,
                           int act_min, int act_max);

void hw_pad_s8(const int8_t *in, hw_shape_t is, int8_t *out, hw_shape_t os, int top, int left, int8_t value);

#endif
