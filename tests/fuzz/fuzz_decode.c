/*
 * libFuzzer harness for the tensor decoders (sharding/decode.h). The first bytes of the
 * input choose a tensor type and a small shape, the rest is the tensor's data; the
 * harness decodes the whole tensor and a sub-rectangle and checks that the two agree.
 *
 * Input layout:
 *   [0] type: low 3 bits pick F32, F16, BF16, Q8_0, Q6_K, I2_S, TQ1_0, TQ2_0;
 *       bit 7 set: the data is exactly the remaining bytes (usually too short, which the
 *       decoders must refuse); clear: the data is as long as the shape needs, the
 *       remaining bytes repeated over it.
 *   [1] columns: bit 7 set: (b & 0x7f) columns, possibly 0 or not a multiple of the type's
 *       block; clear: 1 + (b & 3) blocks of the type (at least 32 columns for plain types)
 *   [2] rows: 1 + b % 8
 *   [3..7) the sub-rectangle: row0, row1, col0, col1, each reduced into the shape (and
 *       sometimes left outside it, which must be refused)
 *   [7..) the data
 *
 * The tensor's bytes live in a buffer of exactly t.nbytes bytes, so ASan sees any read
 * past it. Invariants checked (abort on failure):
 *  - a sub-range of float rows decodes to the same bits as those rows of the whole;
 *  - when the whole ternary tensor decodes, every in-range sub-rectangle decodes too, to
 *    the same codes and scales, with code 1 (weight 0) in the padding columns.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ternary.h"
#include "sharding/decode.h"
#include "sharding/gguf.h"
#include "sharding/types.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint32_t k_types[8] = {BR_GGML_F32,  BR_GGML_F16,  BR_GGML_BF16,  BR_GGML_Q8_0,
                                    BR_GGML_Q6_K, BR_GGML_I2_S, BR_GGML_TQ1_0, BR_GGML_TQ2_0};

/* Columns per "block" when the harness picks a well-formed width. */
static uint64_t unit_cols(uint32_t type)
{
    switch (type) {
    case BR_GGML_Q8_0:
        return BR_QK8_0;
    case BR_GGML_Q6_K:
    case BR_GGML_TQ1_0:
    case BR_GGML_TQ2_0:
        return BR_QK_K;
    case BR_GGML_I2_S:
        return BR_I2S_BLOCK;
    default:
        return 32;
    }
}

static bool is_float_rows(uint32_t type)
{
    return type == BR_GGML_F32 || type == BR_GGML_F16 || type == BR_GGML_BF16 ||
           type == BR_GGML_Q8_0 || type == BR_GGML_Q6_K;
}

static bool is_ternary_source(uint32_t type)
{
    return type == BR_GGML_F32 || type == BR_GGML_F16 || type == BR_GGML_BF16 ||
           type == BR_GGML_I2_S || type == BR_GGML_TQ1_0 || type == BR_GGML_TQ2_0;
}

/* Maps a byte into [0, n] mostly, and past n for 1 value in 16 (must be refused). */
static int32_t pick(uint8_t b, int32_t n)
{
    if ((b & 0xf0) == 0xf0) return n + 1 + (b & 0x0f);
    return (int32_t)(b % (uint32_t)(n + 1));
}

static void check_float_rows(uint32_t type, const uint8_t *buf, uint64_t nbytes, uint64_t ne0,
                             uint64_t ne1, int32_t r0, int32_t r1)
{
    struct br_err err;
    uint64_t need;
    /* br_decode_rows_f32 trusts the caller on the buffer's size, as its header says */
    if (!br_ggml_type_nbytes(type, ne0, ne0 * ne1, &need) || need > nbytes) {
        /* a width that does not fit the type must still be refused cleanly */
        float one;
        if (ne0 == 0 || br_ggml_type_nbytes(type, ne0, ne0, &need)) return;
        if (br_decode_rows_f32(type, buf, ne0, 0, 1, &one, &err) == BR_OK) abort();
        return;
    }
    float *all = malloc(ne0 * ne1 * sizeof *all);
    if (!all) return;
    int rc = br_decode_rows_f32(type, buf, ne0, 0, ne1, all, &err);
    if (rc != BR_OK) abort(); /* well-formed shape and enough bytes: must decode */
    if (r0 < r1 && (uint64_t)r1 <= ne1) {
        uint64_t n = (uint64_t)(r1 - r0);
        float *part = malloc(ne0 * n * sizeof *part);
        if (part) {
            if (br_decode_rows_f32(type, buf, ne0, (uint64_t)r0, n, part, &err) != BR_OK) abort();
            if (memcmp(part, all + (uint64_t)r0 * ne0, ne0 * n * sizeof *part) != 0) abort();
            free(part);
        }
    }
    free(all);
}

static void check_ternary(const struct br_gguf_tensor *t, int32_t r0, int32_t r1, int32_t c0,
                          int32_t c1)
{
    struct br_err err;
    struct br_tmat all, sub;
    const int32_t rows = (int32_t)t->ne[1], cols = (int32_t)t->ne[0];
    int rc_all = br_decode_ternary(t, 0, rows, 0, cols, &all, &err);
    int rc_sub = br_decode_ternary(t, r0, r1, c0, c1, &sub, &err);
    bool in_range = r0 >= 0 && r0 < r1 && r1 <= rows && c0 >= 0 && c0 < c1 && c1 <= cols;
    if (rc_sub == BR_OK && !in_range) abort();
    if (rc_all == BR_OK) {
        if (all.rows != rows || all.cols != cols) abort();
        for (int32_t r = 0; r < rows; r++) {
            if (!(all.scale[r] >= 0.0f)) abort(); /* finite or +inf, never NaN or negative */
            for (int32_t c = 0; c < cols; c++) {
                int w = br_tmat_get(&all, r, c);
                if (w < -1 || w > 1) abort();
            }
        }
        if (in_range) {
            if (rc_sub != BR_OK) abort();
            for (int32_t r = r0; r < r1; r++) {
                if (memcmp(&sub.scale[r - r0], &all.scale[r], sizeof(float)) != 0) abort();
                for (int32_t c = c0; c < c1; c++)
                    if (br_tmat_get(&sub, r - r0, c - c0) != br_tmat_get(&all, r, c)) abort();
                for (int32_t c = c1 - c0; c < sub.blocks * BR_TMAT_BLOCK; c++)
                    if (br_tmat_get(&sub, r - r0, c) != 0) abort();
            }
        }
    }
    br_tmat_free(&all);
    br_tmat_free(&sub);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 7) return 0;
    const uint32_t type = k_types[data[0] & 7];
    const bool exact = (data[0] & 0x80) != 0;
    const uint64_t ne0 = (data[1] & 0x80) ? (uint64_t)(data[1] & 0x7f)
                                          : unit_cols(type) * (1 + (uint64_t)(data[1] & 3));
    const uint64_t ne1 = 1 + (uint64_t)(data[2] % 8);
    const int32_t r0 = pick(data[3], (int32_t)ne1), r1 = pick(data[4], (int32_t)ne1);
    const int32_t c0 = pick(data[5], (int32_t)ne0), c1 = pick(data[6], (int32_t)ne0);
    const uint8_t *payload = data + 7;
    const size_t plen = size - 7;

    /* The bytes the shape needs (I2_S: packed codes plus the scale tail). */
    uint64_t need = 0;
    if (!br_ggml_type_nbytes(type, ne0, ne0 * ne1, &need)) need = 0;
    size_t nbytes = exact || need == 0 ? plen : (size_t)need;
    uint8_t *buf = malloc(nbytes ? nbytes : 1);
    if (!buf) return 0;
    if (exact || need == 0) {
        if (plen) memcpy(buf, payload, plen);
    } else if (plen == 0) {
        memset(buf, 0, nbytes);
    } else {
        for (size_t i = 0; i < nbytes; i++) buf[i] = payload[i % plen];
    }

    if (is_float_rows(type)) check_float_rows(type, buf, nbytes, ne0, ne1, r0, r1);

    if (is_ternary_source(type)) {
        struct br_gguf_tensor t;
        memset(&t, 0, sizeof t);
        t.name = "fuzz.weight";
        t.n_dims = 2;
        t.ne[0] = ne0;
        t.ne[1] = ne1;
        for (int d = 2; d < BR_GGUF_MAX_DIMS; d++) t.ne[d] = 1;
        t.type = type;
        t.nbytes = nbytes;
        t.nelem = ne0 * ne1;
        t.data = nbytes ? buf : NULL;
        check_ternary(&t, r0, r1, c0, c1);
    }
    free(buf);
    return 0;
}
