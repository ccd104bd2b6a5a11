/*
 * Ternary matrices: allocation and the scalar reference product. The dispatching entry
 * points (br_tmat_prepare, br_tmat_gemv, br_tmat_gemm) live in dispatch.c.
 *
 * The reference multiplies unsigned codes by signed activations and subtracts the
 * activation sum (sum w*q = sum c*q - sum q), the same identity the SIMD kernels use,
 * but it is written plainly so it can serve as the oracle.
 */
#include "kernels/ternary.h"

#include "kernels/bigmem.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

size_t br_tmat_bytes(int32_t rows, int32_t cols)
{
    if (rows <= 0 || cols <= 0) return 0;
    size_t total = (size_t)br_tmat_blocks(cols) * BR_TMAT_BLOCK_BYTES * (size_t)rows;
    return (total + 63) / 64 * 64;
}

int br_tmat_init_in(struct br_tmat *m, int32_t rows, int32_t cols, uint8_t *codes)
{
    memset(m, 0, sizeof *m);
    if (rows <= 0 || cols <= 0) return BR_E_INVALID;
    m->rows = rows;
    m->cols = cols;
    m->blocks = br_tmat_blocks(cols);
    m->row_bytes = (size_t)m->blocks * BR_TMAT_BLOCK_BYTES;
    size_t bytes = br_tmat_bytes(rows, cols);
    if (!codes) {
        codes = br_big_alloc(bytes);
        m->codes_own = codes ? bytes : 0;
    }
    m->codes = codes;
    m->scale = malloc((size_t)rows * sizeof *m->scale);
    if (!m->codes || !m->scale) {
        br_tmat_free(m);
        return BR_E_NOMEM;
    }
    memset(m->codes, 0x55, bytes); /* code 1 everywhere: weight 0 */
    for (int32_t r = 0; r < rows; r++) m->scale[r] = 1.0f;
    return BR_OK;
}

int br_tmat_init(struct br_tmat *m, int32_t rows, int32_t cols)
{
    return br_tmat_init_in(m, rows, cols, NULL);
}

void br_tmat_free(struct br_tmat *m)
{
    if (!m) return;
    if (m->codes_own) br_big_free(m->codes, m->codes_own);
    free(m->scale);
    free(m->packed);
    memset(m, 0, sizeof *m);
}

static int32_t row_dot_ref(const uint8_t *row, int32_t blocks, const int8_t *q)
{
    int32_t acc = 0;
    for (int32_t b = 0; b < blocks; b++) {
        const uint8_t *blk = row + (size_t)b * BR_TMAT_BLOCK_BYTES;
        const int8_t *qb = q + (size_t)b * BR_TMAT_BLOCK;
        for (int g = 0; g < 4; g++) {
            int shift = 6 - 2 * g;
            for (int p = 0; p < 32; p++) {
                int c = (blk[p] >> shift) & 3;
                acc += (c - 1) * qb[32 * g + p];
            }
        }
    }
    return acc;
}

void br_tmat_gemv_ref(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q,
                      int32_t *acc)
{
    assert(0 <= r0 && r0 <= r1 && r1 <= m->rows);
    for (int32_t r = r0; r < r1; r++)
        acc[r - r0] = row_dot_ref(m->codes + (size_t)r * m->row_bytes, m->blocks, q);
}

void br_tmat_gemm_ref(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                      const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    for (int32_t t = 0; t < ntok; t++)
        br_tmat_gemv_ref(m, r0, r1, q + (size_t)t * q_stride, acc + (size_t)t * acc_stride);
}
