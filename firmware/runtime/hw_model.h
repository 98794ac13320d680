/* The model blob and the interpreter that runs it (portable C99, no allocation).
 *
 * Blob v1/v2 (little endian, written by hwnas_deploy/mcu/blob.py; v2: some conv2d weights are
 * HW_INT8_Q15, which firmware before 0.11.0 does not know and refuses by version):
 *   header (48 B) | tensors (24 B each) | ops (64 B each) | data (weights, biases, multipliers)
 * The CRC-32 covers every byte after the first 16. Activations live in one arena whose layout
 * the host planned (offsets per tensor), so the peak SRAM is known before anything runs. */
#ifndef HWNAS_MODEL_H
#define HWNAS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define HW_BLOB_MAGIC 0x424E5748u /* "HWNB" */
#define HW_BLOB_VERSION 2u /* the newest this firmware reads; it reads every one from 1 */

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t header_size;
    uint32_t total_size;
    uint32_t crc32;
    uint16_t n_tensors;
    uint16_t n_ops;
    uint32_t arena_size;
    uint16_t input_tensor;
    uint16_t output_tensor;
    uint32_t tensors_offset;
    uint32_t ops_offset;
    uint32_t data_offset;
    uint32_t data_size;
    uint32_t reserved;
} hw_blob_header_t;

/* HW_INT8_Q15: int8 weights of a CONV_2D stored as int16, each group of four in the order 0, 2, 1, 3
 * (hw_q15_index in kernels.h): the Cortex-M7 kernels' inner loop reads them without unpacking. */
enum { HW_INT8 = 1, HW_INT32 = 2, HW_FLOAT32 = 3, HW_INT8_Q15 = 4 };
enum { HW_TENSOR_ARENA = 0, HW_TENSOR_CONST = 1 };

typedef struct {
    uint16_t dims[4]; /* N, H, W, C */
    uint8_t dtype;
    uint8_t kind;
    uint16_t reserved;
    uint32_t offset; /* into the arena or the data section */
    float scale;
    int32_t zero_point;
} hw_tensor_t;

enum {
    HW_OP_CONV_2D = 1,
    HW_OP_DEPTHWISE_CONV_2D = 2,
    HW_OP_ADD = 3,
    HW_OP_MEAN = 4,
    HW_OP_FULLY_CONNECTED = 5,
    HW_OP_PAD = 6,
    HW_OP_HARD_SWISH = 7,
    HW_OP_AVERAGE_POOL_2D = 8,
    HW_OP_MAX_POOL_2D = 9,
    HW_OP_TRANSPOSE = 10,
    HW_OP_RELU = 11,
    HW_OP_LOGISTIC = 12,
    HW_OP_MUL = 13,
    HW_OP_SOFTMAX = 14,
    HW_OP_CONCATENATION = 15,
    HW_OP_LOOKUP = 16,
    HW_OP_TANH = 17,
    HW_OP_CLAMP = 18,
    HW_OP_LEAKY_RELU = 19,
    HW_OP_COUNT
};

#define HW_NO_TENSOR 0xFFFFu

/* An op runs in int8 or float32, as its input tensor says (every tensor of an op has one type).
 * Parameters by opcode (p[]); a float32 op's activation bounds are float bit patterns:
 *  CONV_2D / DEPTHWISE_CONV_2D: stride_h, stride_w, pad_top, pad_left, act_min, act_max,
 *                               mult_offset, shift_offset (int32 per output channel in data);
 *                               a depthwise output with M times the input's channels has depth
 *                               multiplier M (output channel c reads input channel c / M)
 *  ADD:             left_shift, in1_mult, in1_shift, in2_mult, in2_shift, out_mult, out_shift,
 *                   act_min, act_max
 *  MEAN (over H,W): mult, shift, folded (1: 1/(H*W) is in the multiplier, as LiteRT; 0: divided after)
 *  FULLY_CONNECTED: act_min, act_max, mult_offset, shift_offset, single_rounding (1: weights with one
 *                   scale per output channel, requantised with one rounding as LiteRT's reference
 *                   kernel does; 0: gemmlowp's two roundings, as before firmware 0.5.1)
 *  PAD:             top, bottom, left, right (spatial; the value is the zero point, 0.0 in float)
 *  HARD_SWISH:      - (float32 only)
 *  AVERAGE/MAX_POOL_2D: stride_h, stride_w, pad_top, pad_left, filter_h, filter_w, act_min, act_max
 *  TRANSPOSE:       perm[4] (output dim i is input dim perm[i]; any element type)
 *  RELU:            mult, shift, act_min, act_max (int8: requantised from the input's scale;
 *                   float32: max(x, 0), no parameters)
 *  LOGISTIC:        int8: lut_offset (256 int8 outputs in data, indexed by input + 128, computed by
 *                   the converter as TFLite's int8 lookup table); float32: 1 / (1 + exp(-x))
 *  MUL:             mult, shift, act_min, act_max, broadcast (0: both inputs one shape; 1: the
 *                   second is one value per channel, [1,1,1,C], over the first's H and W)
 *  SOFTMAX:         over C; int8: exp_table_offset (256 float32 in data, LiteRT's table), out_scale
 *                   (float bits); float32: beta (float bits)
 *  CONCATENATION:   axis (0-3, along N, H, W or C) of up to 4 inputs (any element type; int8
 *                   inputs have the output's scale and zero point)
 *  LOOKUP:          int8 only: lut_offset (256 int8 outputs, indexed by input + 128): any int8
 *                   element-wise operator, its table computed by the converter with LiteRT
 *  TANH:            float32 only; CLAMP: lo, hi (float32 bits; RELU6, RELU_N1_TO_1);
 *  LEAKY_RELU:      float32 only: alpha (float bits)
 * float32: CONV/DEPTHWISE p[4], p[5] = act bounds (no multipliers); FULLY_CONNECTED p[0], p[1];
 * ADD p[7], p[8]; MUL p[2], p[3] (and p[4]); MEAN no parameters. */
typedef struct {
    uint8_t opcode;
    uint8_t n_inputs;
    uint16_t output;
    uint16_t inputs[4];
    int32_t p[12];
    uint32_t reserved;
} hw_op_t;

/* The blob's records are laid out with natural alignment, so no packing is needed. */
_Static_assert(sizeof(hw_blob_header_t) == 48, "blob header is 48 bytes");
_Static_assert(sizeof(hw_tensor_t) == 24, "tensor record is 24 bytes");
_Static_assert(sizeof(hw_op_t) == 64, "op record is 64 bytes");

typedef struct {
    const uint8_t *blob;
    const hw_blob_header_t *header;
    const hw_tensor_t *tensors;
    const hw_op_t *ops;
    const uint8_t *data;
    uint8_t *arena;
    uint32_t arena_capacity;
    int kernels; /* HW_KERNELS_* */
} hw_model_t;

/* Which kernel set runs a model: the Cortex-M7 DSP kernels (bit-exact with the portable ones,
 * emulated in C on hosts without the DSP extension) or the portable reference. */
enum { HW_KERNELS_OPTIMISED = 0, HW_KERNELS_PORTABLE = 1 };

enum {
    HW_OK = 0,
    HW_ERR_MAGIC = -1,
    HW_ERR_VERSION = -2,
    HW_ERR_SIZE = -3,
    HW_ERR_CRC = -4,
    HW_ERR_LAYOUT = -5,
    HW_ERR_OPCODE = -6,
    HW_ERR_ARENA = -7,
};

/* Check and bind a blob (kept in place, not copied) to an arena. */
int hw_model_init(hw_model_t *m, const uint8_t *blob, uint32_t size, uint8_t *arena, uint32_t arena_capacity);
const char *hw_model_error(int code);
int hw_model_set_kernels(hw_model_t *m, int kernels); /* HW_OK, or HW_ERR_OPCODE for an unknown set */

/* Run every op once; if cycles_per_op is given, fill it using clock(). */
int hw_model_invoke(hw_model_t *m, uint64_t (*clock)(void), uint64_t *cycles_per_op);

uint8_t *hw_tensor_data(const hw_model_t *m, uint16_t index);
uint32_t hw_tensor_bytes(const hw_tensor_t *t);

/* Latency-only uploads: the weight bytes of a blob generated on the board instead of sent.
 * Byte i of a blob (its absolute offset) is byte (i & 3) of fmix32(seed + (i >> 2) * 0x9E3779B9)
 * (MurmurHash3's finaliser): counter-based, so any range can be filled on its own, and the host
 * (hwnas_deploy/mcu/weights.py) computes the same bytes with numpy. `dst` is blob + position. */
void hw_generate_bytes(uint8_t *dst, uint32_t position, uint32_t n, uint32_t seed);
/* The same for unpacked (HW_INT8_Q15) weights: each little-endian int16 at an even position p is
 * the generator's byte p as an int8 (-128 made -127), sign-extended: valid int8 weights. */
void hw_generate_q15(uint8_t *dst, uint32_t position, uint32_t n, uint32_t seed);

/* The input RUN measures on (and INPUT_FILL writes for an output check): fixed pseudo-random
 * int8 values within +-32 steps of zero, a typical activation spread. RUN writes it before every
 * repetition (outside the timed region): the arena may reuse the input's memory once it is
 * consumed, and repeated runs still see the same data and take the same data-dependent paths. */
void hw_model_fill_input(const hw_model_t *m);

#endif
