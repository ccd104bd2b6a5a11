/*
 * Int8 (Q8_0) matrices and their product with int8 activations: the output head when it is
 * stored (or quantized at load) as Q8_0.
 *
 * Weights: ggml's Q8_0, blocks of 32 int8 values q with one f16 scale d (x = d * q),
 * FORMATS.md §2. The file's 34-byte blocks are repacked at load into two arrays:
 *   qs (rows, nb * 32) int8, a row's blocks one after another, 64-byte aligned rows;
 *   d  (rows, nb) f16, the block scales in block order.
 * Any int8 weight, -128 included, is accepted.
 *
 * Activations (canonical quantization, br_q8_quantize_act): a float vector of n values
 * (n a multiple of 32) is cut into blocks of 32; block b has a = max |x_i|,
 *   dx[b] = a / 127 (a float), and q_i = nearbyintf(x_i * (127 / a)) (0 when a == 0),
 * so |q_i| <= 127: activations never hold -128 (the SIMD kernels rely on it).
 *
 * Product (canonical order, every variant returns these bits): for row r and token t,
 *   for each block b in increasing order:
 *     s_b = f16_to_f32(d[r][b]) * dx[t][b]                      (one float multiply)
 *     for lane j in 0..7:
 *       p = sum_{i=0..3} qs[r][32b + 4j + i] * q[t][32b + 4j + i]  (exact int32)
 *       acc[j] = fmaf((float)p, s_b, acc[j])
 *   y = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))
 * with acc starting at +0. This is the order of an 8-lane int32 vector of 4-element dot
 * products (VNNI dpbusd, or maddubs + madd) accumulated into 8 float lanes, so SIMD code
 * reproduces it without horizontal sums inside the loop. A logit thus depends only on its
 * row and its token's activations: not on the ISA, the tiling, the thread count or which
 * rank holds the row.
 */
#ifndef BR_KERNELS_Q8_H
#define BR_KERNELS_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"

#define BR_Q8_BLOCK       32 /* values per block */
#define BR_Q8_BLOCK_BYTES 34 /* f16 scale + 32 int8, the GGUF block */

struct br_q8mat {
    int64_t rows;
    int32_t cols, nb; /* nb = cols / 32 */
    int8_t *qs;       /* (rows, nb * 32), 64-byte aligned, owned */
    uint16_t *d;      /* (rows, nb) f16, owned */
};

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
