/*
 * F16 and BF16 matrices times float vectors: the output head when the file stores it as
 * F16 (the official BitNet-b1.58-2B-4T file) or BF16, read in place.
 *
 * Each logit is exactly br_dot_f16_f32's (kernels/ops.h): the row's values widened to
 * float (exact for both types) and multiplied into 8 float lanes with fmaf, element k into
 * lane k % 8, in increasing k, lanes starting at +0 and combined as
 *   ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
 * The kernels only change which (row, token) pairs run side by side: a GEMV keeps several
 * rows' chains in flight (one chain waits on FMA latency), and a GEMM widens each group of
 * 8 row values once for several tokens.
 */
#ifndef BR_KERNELS_FHEAD_H
#define BR_KERNELS_FHEAD_H

#include <stddef.h>
#include <stdint.h>

/* A view of rows of 16-bit floats; nothing is owned. */
struct br_fhead {
    const uint8_t *data; /* row 0 */
    size_t row_bytes;    /* at least 2 * cols */
    int64_t rows;
    int32_t cols;
    int bf16; /* 0: F16 (IEEE half), 1: BF16 */
};

/* y[t * y_stride + (r - r0)] = dot(row r, x + t * x_stride) for rows [r0, r1), t < ntok.
 * Dispatches to the active kernel variant. */
void br_fhead_gemm(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok, const float *x,
                   size_t x_stride, float *y, size_t y_stride);
/* The scalar reference. */
void br_fhead_gemm_ref(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                       const float *x, size_t x_stride, float *y, size_t y_stride);

typedef void (*br_fhead_gemm_fn)(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                                 const float *x, size_t x_stride, float *y, size_t y_stride);
/* The GEMM of kernel variant `name`, NULL where that variant is not available; variants
 * without one of their own use the reference. */
br_fhead_gemm_fn br_fhead_find(const char *name);

#endif
