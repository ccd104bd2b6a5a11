/*
 * Q6_K matrices times int8 activations: the output head (or tied embedding) when the file
 * stores it as Q6_K, the type llama.cpp's quantizer gives the output tensor by default.
 *
 * Weights are read in place from the GGUF rows (docs/FORMATS.md §2): a row is cols / 256
 * super-blocks of 210 bytes, { ql[128], qh[64], sc[16] (int8), d (f16) }. Value k of a
 * super-block (0 <= k < 256; half h = k / 128, group g = (k % 128) / 32, l = k % 32) has
 *   u_k = (ql[64h + 32 (g & 1) + l] >> (4 (g >> 1))) & 15  |  ((qh[32h + l] >> 2g) & 3) << 4
 *   w_k = d * sc[k / 16] * (u_k - 32).
 *
 * Activations are those of the Q8_0 head (q8.h, br_q8_quantize_act): blocks of 32 int8
 * values q with one float scale dx each, |q| <= 127.
 *
 * Product (canonical order, every variant returns these bits): for row r and token t,
 *   for each block b of 32 values in increasing order (super-block s = b / 8):
 *     s_b = f16_to_f32(d_s) * dx[t][b]                           (one float multiply)
 *     for lane j in 0..7 (values 32b + 4j .. 32b + 4j + 3, all in sub-block (32b + 4j) / 16):
 *       e = sum_{i=0..3} (u - 32) * q                            (exact int32)
 *       p = (float)e * (float)sc[(32b + 4j) / 16]                (exact: |e sc| < 2^24)
 *       acc[j] = fmaf(p, s_b, acc[j])
 *   y = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))
 * with acc starting at +0, the effective integer weight being sc * (u - 32). (The Q8_0
 * head sums a whole block in one lane; here a lane's 4 values share a sub-block scale, so
 * the 8 lanes of a block stay apart.)
 */
#ifndef BR_KERNELS_Q6K_H
#define BR_KERNELS_Q6K_H

#include <stddef.h>
#include <stdint.h>

#define BR_Q6K_BLOCK       256 /* values per super-block */
#define BR_Q6K_BLOCK_BYTES 210

/* A view of GGUF Q6_K rows; nothing is owned. */
struct br_q6kmat {
    const uint8_t *data; /* row 0's first super-block */
    int64_t rows;
    int32_t cols, nsb; /* nsb = cols / 256 */
    size_t row_bytes;  /* nsb * 210 */
};

/* A view of `rows` rows of `cols` values at data. BR_E_INVALID when cols is not a positive
 * multiple of 256. */
int br_q6kmat_view(struct br_q6kmat *m, const void *data, int64_t rows, int32_t cols);

/* Many tokens: y[t * y_stride + (r - r0)] for rows [r0, r1) and t < ntok, token t's
 * activations at q + t * q_stride and dx + t * dx_stride (q8.h). Dispatches to the active
 * kernel variant. */
void br_q6k_gemm(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok, const int8_t *q,
                 size_t q_stride, const float *dx, size_t dx_stride, float *y, size_t y_stride);
/* The scalar reference. */
void br_q6k_gemm_ref(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                     const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride, float *y,
                     size_t y_stride);

typedef void (*br_q6k_gemm_fn)(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                               const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                               float *y, size_t y_stride);
/* The GEMM of kernel variant `name` ("ref", "avx2", "avx512", ...), NULL where that variant
 * is not available; variants without a Q6_K kernel of their own use the reference. */
br_q6k_gemm_fn br_q6k_find(const char *name);

#endif
