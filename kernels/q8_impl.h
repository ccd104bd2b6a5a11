/*
 * Internal interface between kernels/q8.c and the per-ISA Q8_0 files (q8_avx2.c,
 * q8_avx512.c, q8_neon.c): one constant table per variant, picked in dispatch.c to match
 * the ternary variant the process runs (BITRACK_KERNELS). Every table returns the
 * reference's bits.
 */
#ifndef BR_KERNELS_Q8_IMPL_H
#define BR_KERNELS_Q8_IMPL_H

#include "kernels/q8.h"

struct br_q8_ops {
    const char *name;
    void (*gemv)(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q, const float *dx,
                 float *y);
    void (*gemm)(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok, const int8_t *q,
                 size_t q_stride, const float *dx, size_t dx_stride, float *y, size_t y_stride);
};

extern const struct br_q8_ops br_q8_ops_ref;
#if defined(BR_HAVE_AVX2)
extern const struct br_q8_ops br_q8_ops_avx2;
#endif
#if defined(BR_HAVE_AVX512)
extern const struct br_q8_ops br_q8_ops_avx512;
#endif
#if defined(BR_HAVE_NEON)
extern const struct br_q8_ops br_q8_ops_neon_dot;   /* needs the dot-product extension */
extern const struct br_q8_ops br_q8_ops_neon_plain; /* baseline ARMv8 */
#endif

/* The Q8_0 table of kernel variant `name` ("ref", "avx2", ...; see kernel_impl.h), NULL
 * where that variant is not available. */
const struct br_q8_ops *br_q8_ops_find(const char *name);
/* The table of the variant this process runs. */
const struct br_q8_ops *br_q8_ops_active(void);

/* 8 lanes combined in the canonical order of ops.h's br_dot_f32 (the last step of q8.h's). */
static inline float br_q8_combine8(const float *l)
{
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* 16 lanes combined in the canonical order of q8.h: h[j] = l[j] + l[j + 8], then the
 * 8-lane combine. */
static inline float br_q8_combine16(const float *l)
{
    float h[8];
    for (int j = 0; j < 8; j++) h[j] = l[j] + l[j + 8];
    return br_q8_combine8(h);
}

/* One token's activations in the weights' grouped layout (q8.h), for the SIMD kernels:
 * qg (ng * 512) the int8 values (not offset) with zeros past nb blocks; nsum (ng * 16)
 * = -128 * (the sum of block b's values), which starts a dpbusd of offset weights at the
 * exact product; dxg (ng * 16) the block scales, 0 past nb. */
void br_q8_group_act(const struct br_q8mat *m, const int8_t *q, const float *dx, int8_t *qg,
                     int32_t *nsum, float *dxg);

/* Every token of a call grouped: token t at qg + t * m->row_bytes, nsum + t * lanes and
 * dxg + t * lanes (lanes = m->ng * 16), all 64-byte aligned. */
struct br_q8_acts {
    int8_t *qg;
    int32_t *nsum;
    float *dxg;
    size_t lanes;
};
/* Fills a, in this thread's kernel scratch (kernels/scratch.h, slots 0 to 2: valid until
 * the thread's next grouping); BR_E_NOMEM (a zeroed) when memory runs out, and the caller
 * then takes the reference path. br_q8_acts_free forgets the buffers. */
int br_q8_acts_group(const struct br_q8mat *m, int32_t ntok, const int8_t *q, size_t q_stride,
                     const float *dx, size_t dx_stride, struct br_q8_acts *a);
void br_q8_acts_free(struct br_q8_acts *a);

#endif
