#include "hw_model.h"

#include <string.h>

#include "kernels.h"
#include "protocol.h"

static const hw_tensor_t *T(const hw_model_t *m, uint16_t i) { return &m->tensors[i]; }

uint32_t hw_tensor_bytes(const hw_tensor_t *t) {
    uint32_t n = (uint32_t)t->dims[0] * t->dims[1] * t->dims[2] * t->dims[3];
    return t->dtype == HW_INT8 ? n : t->dtype == HW_INT8_Q15 ? 2u * n : 4u * n;
}

uint8_t *hw_tensor_data(const hw_model_t *m, uint16_t index) {
    const hw_tensor_t *t = T(m, index);
    if (t->kind == HW_TENSOR_CONST) return (uint8_t *)(m->data + t->offset);
    return m->arena + t->offset;
}

static uint32_t fmix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x;
}

void hw_generate_bytes(uint8_t *dst, uint32_t position, uint32_t n, uint32_t seed) {
    for (uint32_t i = 0; i < n; i++) {
        uint32_t at = position + i;
        dst[i] = (uint8_t)(fmix32(seed + (at >> 2) * 0x9E3779B9u) >> (8u * (at & 3u)));
    }
}

void hw_generate_q15(uint8_t *dst, uint32_t position, uint32_t n, uint32_t seed) {
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t at = position + i;
        uint8_t lo;
        hw_generate_bytes(&lo, at & ~1u, 1, seed);
        if (lo == 0x80u) lo = 0x81u; /* -128 -> -127: a weight TFLite could have written */
        dst[i] = (at & 1u) ? (uint8_t)((lo & 0x80u) ? 0xFFu : 0x00u) : lo;
    }
}

void hw_model_fill_input(const hw_model_t *m) {
    const uint16_t idx = m->header->input_tensor;
    int8_t *x = (int8_t *)hw_tensor_data(m, idx);
    uint32_t n = hw_tensor_bytes(&m->tensors[idx]), state = 0x9E3779B9u;
    for (uint32_t i = 0; i < n; i++) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        x[i] = (int8_t)((int8_t)(state >> 24) / 4);
    }
}

static hw_shape_t shape(const hw_tensor_t *t) {
    hw_shape_t s = {t->dims[1], t->dims[2], t->dims[3]};
    return s;
}

const char *hw_model_error(int code) {
    switch (code) {
        case HW_OK: return "ok";
        case HW_ERR_MAGIC: return "not a model blob (bad magic)";
        case HW_ERR_VERSION: return "unsupported blob version";
        case HW_ERR_SIZE: return "blob size does not match its header";
        case HW_ERR_CRC: return "blob CRC-32 mismatch";
        case HW_ERR_LAYOUT: return "a table or tensor lies outside the blob or arena";
        case HW_ERR_OPCODE: return "unsupported operator or operand";
        case HW_ERR_ARENA: return "arena too small for this model";
        default: return "unknown error";
    }
}

/* Every input of a concatenation has the output's type and dimensions but along the axis,
 * where they add up to the output's. */
static int concatenation_fits(const hw_model_t *m, const hw_op_t *op) {
    const hw_tensor_t *out = T(m, op->output);
    const int axis = op->p[0];
    if (axis < 0 || axis > 3) return 0;
    uint32_t along = 0;
    for (int k = 0; k < op->n_inputs; k++) {
        if (op->inputs[k] == HW_NO_TENSOR) return 0;
        const hw_tensor_t *t = T(m, op->inputs[k]);
        if (t->dtype != out->dtype) return 0;
        for (int d = 0; d < 4; d++)
            if (d != axis && t->dims[d] != out->dims[d]) return 0;
        along += t->dims[axis];
    }
    return along == out->dims[axis];
}

int hw_model_init(hw_model_t *m, const uint8_t *blob, uint32_t size, uint8_t *arena, uint32_t arena_capacity) {
    const hw_blob_header_t *h = (const hw_blob_header_t *)blob;
    if (size < sizeof(hw_blob_header_t) || h->magic != HW_BLOB_MAGIC) return HW_ERR_MAGIC;
    if (h->version < 1 || h->version > HW_BLOB_VERSION || h->header_size != sizeof(hw_blob_header_t))
        return HW_ERR_VERSION;
    if (h->total_size != size) return HW_ERR_SIZE;
    if (hw_crc32(0, blob + 16, size - 16) != h->crc32) return HW_ERR_CRC;
    if ((uint64_t)h->tensors_offset + (uint64_t)h->n_tensors * sizeof(hw_tensor_t) > size ||
        (uint64_t)h->ops_offset + (uint64_t)h->n_ops * sizeof(hw_op_t) > size ||
        (uint64_t)h->data_offset + h->data_size > size || (h->tensors_offset & 3u) || (h->ops_offset & 3u) ||
        (h->data_offset & 3u) || h->input_tensor >= h->n_tensors || h->output_tensor >= h->n_tensors)
        return HW_ERR_LAYOUT;
    if (h->arena_size > arena_capacity) return HW_ERR_ARENA;
    m->blob = blob;
    m->header = h;
    m->tensors = (const hw_tensor_t *)(blob + h->tensors_offset);
    m->ops = (const hw_op_t *)(blob + h->ops_offset);
    m->data = blob + h->data_offset;
    m->arena = arena;
    m->arena_capacity = arena_capacity;
    m->kernels = HW_KERNELS_OPTIMISED;
    for (uint16_t i = 0; i < h->n_tensors; i++) {
        const hw_tensor_t *t = T(m, i);
        uint64_t end = (uint64_t)t->offset + hw_tensor_bytes(t);
        if (t->kind == HW_TENSOR_CONST ? end > h->data_size : end > h->arena_size) return HW_ERR_LAYOUT;
        if (t->dtype == HW_INT8_Q15 && ((t->offset & 3u) || t->kind != HW_TENSOR_CONST)) /* read by LDRD */
            return HW_ERR_LAYOUT;
    }
    for (uint16_t i = 0; i < h->n_ops; i++) {
        const hw_op_t *op = &m->ops[i];
        if (op->opcode == 0 || op->opcode >= HW_OP_COUNT || op->n_inputs < 1 || op->n_inputs > 4 ||
            op->output >= h->n_tensors || op->inputs[0] >= h->n_tensors)
            return HW_ERR_OPCODE;
        for (int k = 0; k < op->n_inputs; k++)
            if (op->inputs[k] != HW_NO_TENSOR && op->inputs[k] >= h->n_tensors) return HW_ERR_OPCODE;
        const uint8_t dtype = T(m, op->inputs[0])->dtype;
        if ((dtype != HW_INT8 && dtype != HW_FLOAT32) || T(m, op->output)->dtype != dtype ||
            (op->opcode == HW_OP_HARD_SWISH && dtype != HW_FLOAT32) ||
            (op->opcode == HW_OP_LOOKUP && dtype != HW_INT8) ||
            ((op->opcode == HW_OP_TANH || op->opcode == HW_OP_CLAMP || op->opcode == HW_OP_LEAKY_RELU) &&
             dtype != HW_FLOAT32))
            return HW_ERR_OPCODE;
        if ((op->opcode == HW_OP_LOOKUP || op->opcode == HW_OP_SOFTMAX) && dtype == HW_INT8 &&
            (op->p[0] < 0 || (uint64_t)op->p[0] + (op->opcode == HW_OP_SOFTMAX ? 1024u : 256u) > h->data_size))
            return HW_ERR_LAYOUT;
        if (op->opcode == HW_OP_DEPTHWISE_CONV_2D &&
            (T(m, op->inputs[0])->dims[3] == 0 || T(m, op->output)->dims[3] % T(m, op->inputs[0])->dims[3]))
            return HW_ERR_OPCODE;
        if (op->opcode == HW_OP_CONCATENATION && !concatenation_fits(m, op)) return HW_ERR_OPCODE;
        for (int k = 1; k < op->n_inputs; k++) { /* unpacked weights: a v2 int8 conv2d's, rows of 4k */
            if (op->inputs[k] == HW_NO_TENSOR || T(m, op->inputs[k])->dtype != HW_INT8_Q15) continue;
            const hw_tensor_t *w = T(m, op->inputs[k]);
            if (k != 1 || h->version < 2 || op->opcode != HW_OP_CONV_2D || dtype != HW_INT8 ||
                ((uint32_t)w->dims[1] * w->dims[2] * w->dims[3]) % 4u)
                return HW_ERR_OPCODE;
        }
        if (op->opcode == HW_OP_SOFTMAX && T(m, op->output)->dims[3] == 0) return HW_ERR_OPCODE;
        if (op->opcode == HW_OP_MUL &&
            (op->n_inputs < 2 || op->inputs[1] == HW_NO_TENSOR || op->p[4] < 0 || op->p[4] > 1))
            return HW_ERR_OPCODE;
        if (op->opcode == HW_OP_LOGISTIC && dtype == HW_INT8 &&
            (op->p[0] < 0 || (uint64_t)op->p[0] + 256 > h->data_size))
            return HW_ERR_LAYOUT;
        if (op->opcode == HW_OP_TRANSPOSE) {
            int seen = 0;
            for (int k = 0; k < 4; k++) {
                if (op->p[k] < 0 || op->p[k] > 3) return HW_ERR_OPCODE;
                seen |= 1 << op->p[k];
            }
            if (seen != 15 || hw_tensor_bytes(T(m, op->inputs[0])) != hw_tensor_bytes(T(m, op->output)))
                return HW_ERR_OPCODE;
        }
    }
    return HW_OK;
}

int hw_model_set_kernels(hw_model_t *m, int kernels) {
    if (kernels != HW_KERNELS_OPTIMISED && kernels != HW_KERNELS_PORTABLE) return HW_ERR_OPCODE;
    m->kernels = kernels;
    return HW_OK;
}

static const int32_t *data_i32(const hw_model_t *m, int32_t offset) { return (const int32_t *)(m->data + offset); }

static float bits_f32(int32_t v) {
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}

static const float *f32_or_null(const hw_model_t *m, uint16_t index) {
    return index == HW_NO_TENSOR ? 0 : (const float *)hw_tensor_data(m, index);
}

static hw_pool_params_t pool_params(const hw_tensor_t *in, const hw_tensor_t *out, const int32_t *p) {
    const hw_pool_params_t pp = {shape(in), shape(out), p[4], p[5], p[0], p[1], p[2], p[3]};
    return pp;
}

static void run_op_f32(hw_model_t *m, const hw_op_t *op) {
    const hw_tensor_t *in = T(m, op->inputs[0]);
    const hw_tensor_t *out = T(m, op->output);
    const float *x = (const float *)hw_tensor_data(m, op->inputs[0]);
    float *y = (float *)hw_tensor_data(m, op->output);
    const int32_t *p = op->p;
    switch (op->opcode) {
        case HW_OP_CONV_2D:
        case HW_OP_DEPTHWISE_CONV_2D: {
            const hw_tensor_t *w = T(m, op->inputs[1]);
            const hw_conv_params_f32_t cp = {shape(in), shape(out), w->dims[1], w->dims[2], p[0], p[1], p[2], p[3],
                                             bits_f32(p[4]), bits_f32(p[5])};
            const float *wd = (const float *)hw_tensor_data(m, op->inputs[1]), *bias = f32_or_null(m, op->inputs[2]);
            if (op->opcode == HW_OP_CONV_2D)
                hw_conv2d_f32(&cp, x, wd, bias, y);
            else
                hw_depthwise_conv2d_f32(&cp, x, wd, bias, y);
            break;
        }
        case HW_OP_ADD:
            hw_add_f32(x, (const float *)hw_tensor_data(m, op->inputs[1]), y, (int)(hw_tensor_bytes(out) / 4),
                       bits_f32(p[7]), bits_f32(p[8]));
            break;
        case HW_OP_MEAN:
            hw_mean_hw_f32(x, shape(in), y);
            break;
        case HW_OP_FULLY_CONNECTED: {
            const hw_tensor_t *w = T(m, op->inputs[1]);
            hw_fully_connected_f32(x, w->dims[3], (const float *)hw_tensor_data(m, op->inputs[1]),
                                   f32_or_null(m, op->inputs[2]), y, w->dims[2], bits_f32(p[0]), bits_f32(p[1]));
            break;
        }
        case HW_OP_PAD:
            hw_pad_f32(x, shape(in), y, shape(out), p[0], p[2]);
            break;
        case HW_OP_HARD_SWISH:
            hw_hardswish_f32(x, y, (int)(hw_tensor_bytes(out) / 4));
            break;
        case HW_OP_RELU:
            hw_relu_f32(x, y, (int)(hw_tensor_bytes(out) / 4));
            break;
        case HW_OP_LOGISTIC:
            hw_logistic_f32(x, y, (int)(hw_tensor_bytes(out) / 4));
            break;
        case HW_OP_TANH:
            hw_tanh_f32(x, y, (int)(hw_tensor_bytes(out) / 4));
            break;
        case HW_OP_CLAMP:
            hw_clamp_f32(x, y, (int)(hw_tensor_bytes(out) / 4), bits_f32(p[0]), bits_f32(p[1]));
            break;
        case HW_OP_LEAKY_RELU:
            hw_leaky_relu_f32(x, y, (int)(hw_tensor_bytes(out) / 4), bits_f32(p[0]));
            break;
        case HW_OP_SOFTMAX:
            hw_softmax_f32(x, y, (int)(hw_tensor_bytes(out) / 4) / out->dims[3], out->dims[3], bits_f32(p[0]));
            break;
        case HW_OP_MUL:
            hw_mul_f32(x, (const float *)hw_tensor_data(m, op->inputs[1]), y, (int)(hw_tensor_bytes(out) / 4),
                       out->dims[3], p[4], bits_f32(p[2]), bits_f32(p[3]));
            break;
        case HW_OP_AVERAGE_POOL_2D:
        case HW_OP_MAX_POOL_2D: {
            const hw_pool_params_t pp = pool_params(in, out, p);
            (op->opcode == HW_OP_MAX_POOL_2D ? hw_max_pool_f32 : hw_avg_pool_f32)(&pp, x, y, bits_f32(p[6]),
                                                                                  bits_f32(p[7]));
            break;
        }
        default:
            break;
    }
}

static void run_op(hw_model_t *m, const hw_op_t *op) {
    if (op->opcode == HW_OP_CONCATENATION) { /* type-agnostic */
        const uint8_t *ins[4];
        const uint16_t *dims[4];
        for (int k = 0; k < op->n_inputs; k++) {
            ins[k] = hw_tensor_data(m, op->inputs[k]);
            dims[k] = T(m, op->inputs[k])->dims;
        }
        hw_concatenation(ins, dims, op->n_inputs, hw_tensor_data(m, op->output), op->p[0],
                         T(m, op->output)->dtype == HW_INT8 ? 1 : 4);
        return;
    }
    if (op->opcode == HW_OP_TRANSPOSE) { /* type-agnostic */
        const hw_tensor_t *in = T(m, op->inputs[0]);
        hw_transpose(hw_tensor_data(m, op->inputs[0]), in->dims, hw_tensor_data(m, op->output), op->p,
                     in->dtype == HW_INT8 ? 1 : 4);
        return;
    }
    if (T(m, op->inputs[0])->dtype == HW_FLOAT32) {
        run_op_f32(m, op);
        return;
    }
    const hw_tensor_t *in = T(m, op->inputs[0]);
    const hw_tensor_t *out = T(m, op->output);
    const int8_t *x = (const int8_t *)hw_tensor_data(m, op->inputs[0]);
    int8_t *y = (int8_t *)hw_tensor_data(m, op->output);
    const int32_t *p = op->p;
    switch (op->opcode) {
        case HW_OP_CONV_2D:
        case HW_OP_DEPTHWISE_CONV_2D: {
            const hw_tensor_t *w = T(m, op->inputs[1]);
            const int32_t *bias =
                op->inputs[2] == HW_NO_TENSOR ? 0 : (const int32_t *)hw_tensor_data(m, op->inputs[2]);
            const int8_t *wd = (const int8_t *)hw_tensor_data(m, op->inputs[1]);
            const hw_conv_params_t cp = {shape(in), shape(out), in->zero_point, out->zero_point,
                                         w->dims[1], w->dims[2], p[0], p[1], p[2], p[3],
                                         data_i32(m, p[6]), data_i32(m, p[7]), p[4], p[5],
                                         w->dtype == HW_INT8_Q15};
            const int portable = m->kernels == HW_KERNELS_PORTABLE;
            if (op->opcode == HW_OP_CONV_2D)
                (portable ? hw_conv2d_s8 : hw_conv2d_s8_opt)(&cp, x, wd, bias, y);
            else
                (portable ? hw_depthwise_conv2d_s8 : hw_depthwise_conv2d_s8_opt)(&cp, x, wd, bias, y);
            break;
        }
        case HW_OP_ADD: {
            const hw_tensor_t *b = T(m, op->inputs[1]);
            (m->kernels == HW_KERNELS_PORTABLE ? hw_add_s8 : hw_add_s8_opt)(
                x, in->zero_point, (const int8_t *)hw_tensor_data(m, op->inputs[1]), b->zero_point, y,
                out->zero_point, (int)hw_tensor_bytes(out), p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
            break;
        }
        case HW_OP_RELU:
            hw_relu_s8(x, in->zero_point, y, out->zero_point, (int)hw_tensor_bytes(out), p[0], p[1], p[2], p[3]);
            break;
        case HW_OP_LOGISTIC: /* blobs before firmware 0.7.0; now LOOKUP */
        case HW_OP_LOOKUP:
            hw_lut_s8(x, y, (int)hw_tensor_bytes(out), (const int8_t *)(m->data + p[0]));
            break;
        case HW_OP_SOFTMAX:
            hw_softmax_s8(x, y, (int)hw_tensor_bytes(out) / out->dims[3], out->dims[3],
                          (const float *)(m->data + p[0]), bits_f32(p[1]), out->zero_point);
            break;
        case HW_OP_MUL:
            hw_mul_s8(x, in->zero_point, (const int8_t *)hw_tensor_data(m, op->inputs[1]),
                      T(m, op->inputs[1])->zero_point, y, out->zero_point, (int)hw_tensor_bytes(out), out->dims[3],
                      p[4], p[0], p[1], p[2], p[3]);
            break;
        case HW_OP_MEAN:
            hw_mean_hw_s8(x, shape(in), in->zero_point, y, out->zero_point, p[0], p[1], p[2]);
            break;
        case HW_OP_FULLY_CONNECTED: {
            const hw_tensor_t *w = T(m, op->inputs[1]);
            const int32_t *bias =
                op->inputs[2] == HW_NO_TENSOR ? 0 : (const int32_t *)hw_tensor_data(m, op->inputs[2]);
            /* weights are [out, in] stored as dims (1, 1, out, in) */
            const int8_t *wd = (const int8_t *)hw_tensor_data(m, op->inputs[1]);
            const int portable = m->kernels == HW_KERNELS_PORTABLE;
            (p[4] ? (portable ? hw_fully_connected_s8_single : hw_fully_connected_s8_single_opt)
                  : portable ? hw_fully_connected_s8 : hw_fully_connected_s8_opt)(
                x, w->dims[3], in->zero_point, wd, bias, y, w->dims[2], out->zero_point, data_i32(m, p[2]),
                data_i32(m, p[3]), p[0], p[1]);
            break;
        }
        case HW_OP_PAD:
            hw_pad_s8(x, shape(in), y, shape(out), p[0], p[2], (int8_t)in->zero_point);
            break;
        case HW_OP_AVERAGE_POOL_2D:
        case HW_OP_MAX_POOL_2D: {
            const hw_pool_params_t pp = pool_params(in, out, p);
            (op->opcode == HW_OP_MAX_POOL_2D ? hw_max_pool_s8 : hw_avg_pool_s8)(&pp, x, y, p[6], p[7]);
            break;
        }
        default:
            break;
    }
}

int hw_model_invoke(hw_model_t *m, uint64_t (*clock)(void), uint64_t *cycles_per_op) {
    for (uint16_t i = 0; i < m->header->n_ops; i++) {
        uint64_t t0 = cycles_per_op ? clock() : 0;
        run_op(m, &m->ops[i]);
        if (cycles_per_op) cycles_per_op[i] = clock() - t0;
    }
    return HW_OK;
}
