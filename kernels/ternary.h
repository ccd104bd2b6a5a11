/*
 * Ternary weight matrices and the BitLinear integer product.
 *
 * Canonical layout (what loaders produce, what the reference kernels read):
 *   A matrix of `rows` x `cols` weights w in {-1, 0, +1} is stored as codes c = w + 1 in
 *   {0, 1, 2}, two bits each, row after row. A row is ceil(cols / 128) blocks of 32 bytes;
 *   byte p of block b holds the codes of columns 128b + p, +32, +64, +96 in bits 7-6, 5-4,
 *   3-2 and 1-0 (the I2_S block order, so an I2_S tensor is already in this layout).
 *   Padding columns (cols..128*blocks-1) hold code 1 (weight 0). row_bytes is the stride.
 *   Each row has its own float scale (one value repeated when the file has one per tensor).
 *
 * Activations: int8 vectors of length kpad = 128 * blocks, zero past cols.
 * The product acc[r] = sum_k w[r][k] * q[k] is an exact int32 (|acc| <= 128 * cols).
 *
 * Kernels may keep a repacked copy of the weights (br_tmat_prepare); results never depend
 * on the layout, the ISA or the thread count.
 */
#ifndef BR_KERNELS_TERNARY_H
#define BR_KERNELS_TERNARY_H

#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"

#define BR_TMAT_BLOCK       128 /* weights per block */
#define BR_TMAT_BLOCK_BYTES 32  /* bytes per block */

struct br_tmat {
    int32_t rows, cols;
    int32_t blocks;   /* per row */
    size_t row_bytes; /* blocks * 32 */
    uint8_t *codes;   /* (rows, row_bytes), 64-byte aligned */
    size_t codes_own; /* bytes of codes allocated by br_tmat_init (kernels/bigmem.h), 0 when
                         they are the caller's (br_tmat_init_in) */
    float *scale;     /* (rows,), owned */
    void *packed;     /* kernel-specific copy, owned by kernels/, may be NULL */
    int packed_kind;  /* which kernel layout `packed` holds; 0 = none */
};

static inline int32_t br_tmat_blocks(int32_t cols)
{
    return (cols + BR_TMAT_BLOCK - 1) / BR_TMAT_BLOCK;
}

/* Bytes of the codes of a rows x cols matrix, a multiple of 64 (what br_tmat_init_in
 * takes); 0 for an empty shape. */
size_t br_tmat_bytes(int32_t rows, int32_t cols);
/* Allocates rows x cols, all weights 0 (code 1), scales 1. The codes are huge-page backed
 * where the system allows (kernels/bigmem.h). */
int br_tmat_init(struct br_tmat *m, int32_t rows, int32_t cols);
/* The same, with the codes in the caller's memory: br_tmat_bytes(rows, cols) bytes,
 * 64-byte aligned, which must outlive the matrix (a model keeps all its matrices in one
 * huge-page region this way); codes NULL allocates as br_tmat_init does. */
int br_tmat_init_in(struct br_tmat *m, int32_t rows, int32_t cols, uint8_t *codes);
/* Frees everything it owns; NULL-safe; leaves *m zeroed. */
void br_tmat_free(struct br_tmat *m);

/* Weight at (r, k) as -1, 0 or +1. */
static inline int br_tmat_get(const struct br_tmat *m, int32_t r, int32_t k)
{
    const uint8_t *row = m->codes + (size_t)r * m->row_bytes;
    int32_t b = k / BR_TMAT_BLOCK, e = k % BR_TMAT_BLOCK;
    int shift = 6 - 2 * (e / 32);
    return ((row[b * BR_TMAT_BLOCK_BYTES + e % 32] >> shift) & 3) - 1;
}

static inline void br_tmat_set(struct br_tmat *m, int32_t r, int32_t k, int w)
{
    uint8_t *row = m->codes + (size_t)r * m->row_bytes;
    int32_t b = k / BR_TMAT_BLOCK, e = k % BR_TMAT_BLOCK;
    int shift = 6 - 2 * (e / 32);
    uint8_t *byte = &row[b * BR_TMAT_BLOCK_BYTES + e % 32];
    *byte = (uint8_t)((*byte & ~(3u << shift)) | ((unsigned)(w + 1) << shift));
}

/* Lets the active kernels build their own copy (call once after the codes are final).
 * May free nothing: the canonical codes stay valid for the reference path. */
int br_tmat_prepare(struct br_tmat *m);

/* acc[r - r0] = sum_k w[r][k] q[k] for rows r0..r1-1; q has kpad = 128 * blocks entries.
 * Dispatches to the active kernel. */
void br_tmat_gemv(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q, int32_t *acc);

/* Many tokens: acc[t * acc_stride + (r - r0)] for t < ntok, q[t * q_stride + k]. */
void br_tmat_gemm(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok, const int8_t *q,
                  size_t q_stride, int32_t *acc, size_t acc_stride);

/* The scalar reference of both, reading the canonical codes only. */
void br_tmat_gemv_ref(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q,
                      int32_t *acc);
void br_tmat_gemm_ref(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                      const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride);

#endif
