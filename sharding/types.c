/*
 * The ggml tensor-type table: names, block sizes and byte sizes (docs/FORMATS.md §2). Block
 * structs are transparent and pinned here with static asserts, because their layout is
 * the file format.
 */
#include "sharding/types.h"

#include <ctype.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

_Static_assert(sizeof(struct br_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(struct br_block_q6_k) == 210, "Q6_K block is 210 bytes");
_Static_assert(sizeof(struct br_block_tq1_0) == 54, "TQ1_0 block is 54 bytes");
_Static_assert(sizeof(struct br_block_tq2_0) == 66, "TQ2_0 block is 66 bytes");
_Static_assert(offsetof(struct br_block_q6_k, d) == 208, "Q6_K d at the end");
_Static_assert(offsetof(struct br_block_tq1_0, d) == 52, "TQ1_0 d at the end");
_Static_assert(offsetof(struct br_block_tq2_0, d) == 64, "TQ2_0 d at the end");

struct type_info {
    const char *name;
    uint32_t block;
    uint32_t bytes;
};

/* Types whose sizes we know, so files carrying them parse even if we cannot compute on
 * them (e.g. a Q4_K output head is reported as unsupported by the loader, not as a
 * malformed file). */
static const struct type_info *info(uint32_t type)
{
    static const struct type_info table[BR_GGML_TYPE_MAX] = {
        [BR_GGML_F32] = {"F32", 1, 4},        [BR_GGML_F16] = {"F16", 1, 2},
        [BR_GGML_Q4_0] = {"Q4_0", 32, 18},    [BR_GGML_Q4_1] = {"Q4_1", 32, 20},
        [BR_GGML_Q5_0] = {"Q5_0", 32, 22},    [BR_GGML_Q5_1] = {"Q5_1", 32, 24},
        [BR_GGML_Q8_0] = {"Q8_0", 32, 34},    [BR_GGML_Q8_1] = {"Q8_1", 32, 36},
        [BR_GGML_Q2_K] = {"Q2_K", 256, 84},   [BR_GGML_Q3_K] = {"Q3_K", 256, 110},
        [BR_GGML_Q4_K] = {"Q4_K", 256, 144},  [BR_GGML_Q5_K] = {"Q5_K", 256, 176},
        [BR_GGML_Q6_K] = {"Q6_K", 256, 210},  [BR_GGML_Q8_K] = {"Q8_K", 256, 292},
        [BR_GGML_I8] = {"I8", 1, 1},          [BR_GGML_I16] = {"I16", 1, 2},
        [BR_GGML_I32] = {"I32", 1, 4},        [BR_GGML_I64] = {"I64", 1, 8},
        [BR_GGML_F64] = {"F64", 1, 8},        [BR_GGML_BF16] = {"BF16", 1, 2},
        [BR_GGML_TQ1_0] = {"TQ1_0", 256, 54}, [BR_GGML_TQ2_0] = {"TQ2_0", 256, 66},
        [BR_GGML_I2_S] = {"I2_S", 128, 32},
    };
    if (type >= BR_GGML_TYPE_MAX || !table[type].name) return NULL;
    return &table[type];
}

const char *br_ggml_type_name(uint32_t type)
{
    const struct type_info *t = info(type);
    return t ? t->name : NULL;
}

int br_ggml_type_from_name(const char *name)
{
    for (uint32_t i = 0; i < BR_GGML_TYPE_MAX; i++) {
        const struct type_info *t = info(i);
        if (t && strcasecmp(t->name, name) == 0) return (int)i;
    }
    return -1;
}

uint32_t br_ggml_type_block(uint32_t type)
{
    const struct type_info *t = info(type);
    return t ? t->block : 0;
}

bool br_ggml_type_nbytes(uint32_t type, uint64_t ne0, uint64_t nelem, uint64_t *out)
{
    const struct type_info *t = info(type);
    if (!t || ne0 == 0 || nelem % ne0 != 0) return false;
    /* I2_S packs the whole tensor as one flat run of blocks (docs/FORMATS.md §2): its
     * rows need not be whole blocks, the tensor must */
    if ((type == BR_GGML_I2_S ? nelem : ne0) % t->block != 0) return false;
    uint64_t blocks = nelem / t->block;
    if (blocks > UINT64_MAX / t->bytes) return false;
    uint64_t n = blocks * t->bytes;
    if (type == BR_GGML_I2_S) {
        /* n/4 packed bytes and a 32-byte tail (scale in its first 4 bytes) */
        if (n > UINT64_MAX - BR_I2S_TAIL) return false;
        n += BR_I2S_TAIL;
    }
    *out = n;
    return true;
}

bool br_ggml_type_is_ternary(uint32_t type)
{
    return type == BR_GGML_TQ1_0 || type == BR_GGML_TQ2_0 || type == BR_GGML_I2_S;
}
