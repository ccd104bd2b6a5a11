/*
 * ggml tensor types that bitrack reads (docs/FORMATS.md §2): ids, block sizes and
 * byte sizes. I2_S (bitnet.cpp's id 36) is not block-regular: a tensor of n weights takes
 * n/4 bytes plus a 32-byte tail whose first 4 bytes hold its f32 scale.
 */
#ifndef BR_SHARDING_TYPES_H
#define BR_SHARDING_TYPES_H

#include <stdbool.h>
#include <stdint.h>

enum br_ggml_type {
    BR_GGML_F32 = 0,
    BR_GGML_F16 = 1,
    BR_GGML_Q4_0 = 2,
    BR_GGML_Q4_1 = 3,
    BR_GGML_Q5_0 = 6,
    BR_GGML_Q5_1 = 7,
    BR_GGML_Q8_0 = 8,
    BR_GGML_Q8_1 = 9,
    BR_GGML_Q2_K = 10,
    BR_GGML_Q3_K = 11,
    BR_GGML_Q4_K = 12,
    BR_GGML_Q5_K = 13,
    BR_GGML_Q6_K = 14,
    BR_GGML_Q8_K = 15,
    BR_GGML_I8 = 24,
    BR_GGML_I16 = 25,
    BR_GGML_I32 = 26,
    BR_GGML_I64 = 27,
    BR_GGML_F64 = 28,
    BR_GGML_BF16 = 30,
    BR_GGML_TQ1_0 = 34,
    BR_GGML_TQ2_0 = 35,
    BR_GGML_I2_S = 36,
    BR_GGML_TYPE_MAX = 64
};

#define BR_QK8_0     32
#define BR_QK_K      256
#define BR_I2S_BLOCK 128 /* weights per I2_S block */
#define BR_I2S_TAIL  32  /* bytes after the packed weights */

/* Transparent block layouts, pinned by static asserts in types.c. */
struct br_block_q8_0 {
    uint16_t d; /* f16 */
    int8_t qs[BR_QK8_0];
};
struct br_block_q6_k {
    uint8_t ql[BR_QK_K / 2];
    uint8_t qh[BR_QK_K / 4];
    int8_t scales[BR_QK_K / 16];
    uint16_t d; /* f16 */
};
struct br_block_tq1_0 {
    uint8_t qs[48];
    uint8_t qh[4];
    uint16_t d; /* f16 */
};
struct br_block_tq2_0 {
    uint8_t qs[64];
    uint16_t d; /* f16 */
};

/* Name ("F16", "I2_S", ...) or NULL for a type bitrack does not know. */
const char *br_ggml_type_name(uint32_t type);
/* Parses a name case-insensitively; -1 if unknown. */
int br_ggml_type_from_name(const char *name);
/* Elements per block (1 for plain types); 0 if unknown. */
uint32_t br_ggml_type_block(uint32_t type);
/* Bytes of a tensor of `nelem` elements whose rows have ne0 elements. False (and *out
 * untouched) when the type is unknown, ne0 (for I2_S, which packs the tensor as one flat
 * run of blocks: nelem) is not a multiple of the block size, or the size overflows. */
bool br_ggml_type_nbytes(uint32_t type, uint64_t ne0, uint64_t nelem, uint64_t *out);
/* True for the types whose weights are ternary by construction. */
bool br_ggml_type_is_ternary(uint32_t type);

#endif
