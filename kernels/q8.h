/*
 * Int8 (Q8_0) matrices and their product with int8 activations: the output head when it is
 * stored (or quantized at load) as Q8_0.
 *
 * Weights: ggml's Q8_0, blocks of 32 int8 values q with one f16 scale d (x = d * q),
 * docs/FORMATS.md §2. The file's 34-byte blocks are repacked at load. Blocks go in groups of
 * 16 (512 columns); a row is ng = ceil(nb / 16) groups of 512 bytes, 64-byte aligned:
 *   byte 512 G + 64 i + 4 k + e  =  q[32 (16 G + k) + 4 i + e] ^ 0x80
 * (step i < 8, lane k < 16, e < 4): the 4-byte groups of 16 blocks interleaved, so that a
 * 64-byte vector holds one 4-byte group of each of 16 blocks, stored as unsigned bytes
 * (q + 128). Blocks past nb hold q = 0 with scale 0. d (rows, ng * 16) f16 holds the
 * block scales in block order (padding 0). br_q8mat_get/set read and write one weight.
 * Any int8 weight, -128 included, is accepted.
 *
 * Activations (canonical quantization, br_q8_quantize_act): a float vector of n values
 * (n a multiple of 32) is cut into blocks of 32; block b has a = max |x_i|,
 *   dx[b] = a / 127 (a float), and q_i = nearbyintf(x_i * (127 / a)) (0 when a == 0),
 * so |q_i| <= 127: activations never hold -128.
 *
 * Product (canonical order, every variant returns these bits): for row r and token t,
 *   for each block b in increasing order:
 *     p_b = sum_{i<32} w[r][32b + i] * q[t][32b + i]            (exact int32)
 *     s_b = f16_to_f32(d[r][b]) * dx[t][b]                      (one float multiply)
 *     acc[b % 16] = fmaf((float)p_b, s_b, acc[b % 16])
 *   h[j] = acc[j] + acc[j + 8] (j < 8)
 *   y = ((h0 + h4) + (h2 + h6)) + ((h1 + h5) + (h3 + h7))
 * with acc starting at +0. Each of 16 float lanes accumulates every 16th block, so a SIMD
 * kernel sums a block's 32 products in one int32 lane (8 four-byte multiply-adds, VNNI
 * dpbusd or SDOT) and needs one conversion and one FMA per 16 blocks; the int32 sums are
 * exact, so their order is free. A logit thus depends only on its row and its token's
 * activations: not on the ISA, the tiling, the thread count or which rank holds the row.
 */
#ifndef BR_KERNELS_Q8_H
#define BR_KERNELS_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"

#define BR_Q8_BLOCK       32 /* values per block */
#define BR_Q8_BLOCK_BYTES 34 /* f16 scale + 32 int8, the GGUF block */

#define BR_Q8_GROUP       16 /* blocks per group: the 16 float lanes of the product */
#define BR_Q8_GROUP_BYTES (BR_Q8_GROUP * BR_Q8_BLOCK)

struct br_q8mat {
    int64_t rows;
    int32_t cols, nb; /* nb = cols / 32 */
    int32_t ng;       /* groups of 16 blocks per row: ceil(nb / 16) */
    size_t row_bytes; /* ng * 512 */
    uint8_t *qs;      /* (rows, row_bytes) grouped, offset weights (above), 64-byte aligned */
    uint16_t *d;      /* (rows, ng * 16) f16 block scales, padding 0 */
};

/* Where weight (r, c) lives in m->qs (stored as q + 128). */
static inline size_t br_q8mat_offset(const struct br_q8mat *m, int64_t r, int32_t c)
{
    int32_t b = c / BR_Q8_BLOCK, i = c % BR_Q8_BLOCK;
    return (size_t)r * m->row_bytes + (size_t)(b / BR_Q8_GROUP) * BR_Q8_GROUP_BYTES +
           (size_t)(i / 4) * 64 + (size_t)(b % BR_Q8_GROUP) * 4 + (size_t)(i % 4);
}
static inline int8_t br_q8mat_get(const struct br_q8mat *m, int64_t r, int32_t c)
{
    return (int8_t)(m->qs[br_q8mat_offset(m, r, c)] ^ 0x80);
}
static inline void br_q8mat_set(struct br_q8mat *m, int64_t r, int32_t c, int8_t w)
{
    m->qs[br_q8mat_offset(m, r, c)] = (uint8_t)((uint8_t)w ^ 0x80);
}
/* The f16 scale of block b of row r. */
static inline uint16_t *br_q8mat_scale(const struct br_q8mat *m, int64_t r, int32_t b)
{
    return m->d + (size_t)r * (size_t)m->ng * BR_Q8_GROUP + (size_t)b;
}

/* Allocates rows x cols (cols a multiple of 32), all zero. BR_E_INVALID for a bad shape,
 * BR_E_NOMEM. On failure *m is zeroed. */
int br_q8mat_init(struct br_q8mat *m, int64_t rows, int32_t cols);
/* Frees everything; NULL-safe; leaves *m zeroed. */
void br_q8mat_free(struct br_q8mat *m);

/* Copies rows [r0, r0 + n) of m from GGUF Q8_0 blocks: `blocks` points at the first of
 * them, n * nb blocks of 34 bytes. */
void br_q8mat_set_rows_ggml(struct br_q8mat *m, int64_t r0, int64_t n, const uint8_t *blocks);

/* Canonical activation quantization (above): x (n,), n a multiple of 32 -> q (n,),
 * dx (n / 32,). Scalar; every variant uses it. */
void br_q8_quantize_act(const float *x, int32_t n, int8_t *q, float *dx);

/* y[r - r0] = dot(row r, token) for rows [r0, r1) of one token (q: (cols,), dx: (nb,)).
 * Dispatches to the active kernel variant. */
void br_q8_gemv(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q, const float *dx,
                float *y);
/* Many tokens: y[t * y_stride + (r - r0)] for t < ntok, token t's activations at
 * q + t * q_stride and dx + t * dx_stride. Each weight block is read once per group of
 * tokens. */
void br_q8_gemm(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok, const int8_t *q,
                size_t q_stride, const float *dx, size_t dx_stride, float *y, size_t y_stride);

/* The scalar reference of both. */
void br_q8_gemv_ref(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q,
                    const float *dx, float *y);
void br_q8_gemm_ref(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok, const int8_t *q,
                    size_t q_stride, const float *dx, size_t dx_stride, float *y, size_t y_stride);

#endif
