/*
 * Q8_0 head kernels for ARM NEON (aarch64), in the two flavours of ternary_neon.c: with
 * the dot-product extension (SDOT: four int8 products per int32 lane, exactly the
 * canonical 4-element lane sums of q8.h) and with plain ARMv8 NEON (SMULL to int16, then
 * pairwise widening adds; |w * q| <= 128 * 127 fits int16). The 8 canonical float lanes
 * are two float32x4 FMLA accumulators (FMLA rounds like fmaf), combined in the canonical
 * order. Rows of 32-byte blocks are two 16-byte vectors each.
 */
#include <arm_neon.h>
#include <stdint.h>

#include "bitrack/fp.h"
#include "kernels/kernel_impl.h"
#include "kernels/q8_impl.h"

#define DOT_ATTR __attribute__((target("arch=armv8.2-a+dotprod")))

static inline float combine(float32x4_t lo, float32x4_t hi)
{
    float32x4_t m = vaddq_f32(lo, hi); /* l0+l4, l1+l5, l2+l6, l3+l7 */
    float a = vgetq_lane_f32(m, 0) + vgetq_lane_f32(m, 2);
    float b = vgetq_lane_f32(m, 1) + vgetq_lane_f32(m, 3);
    return a + b;
}

/* The 4-element sums of 16 bytes, plain NEON. */
static inline int32x4_t sum4_plain(int8x16_t w, int8x16_t x)
{
    int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    int32x4_t hi = vpaddlq_s16(vmull_high_s8(w, x));
    return vpaddq_s32(lo, hi);
}

static float dot_plain(const int8_t *w, const uint16_t *d, int32_t nb, const int8_t *q,
                       const float *dx)
{
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
    for (int32_t b = 0; b < nb; b++) {
        const int8_t *wb = w + 32 * (size_t)b, *xb = q + 32 * (size_t)b;
        float s = br_f16_to_f32(d[b]) * dx[b];
        int32x4_t p0 = sum4_plain(vld1q_s8(wb), vld1q_s8(xb));
        int32x4_t p1 = sum4_plain(vld1q_s8(wb + 16), vld1q_s8(xb + 16));
        a0 = vfmaq_n_f32(a0, vcvtq_f32_s32(p0), s);
        a1 = vfmaq_n_f32(a1, vcvtq_f32_s32(p1), s);
    }
    return combine(a0, a1);
}

DOT_ATTR static float dot_sdot(const int8_t *w, const uint16_t *d, int32_t nb, const int8_t *q,
                               const float *dx)
{
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
    for (int32_t b = 0; b < nb; b++) {
        const int8_t *wb = w + 32 * (size_t)b, *xb = q + 32 * (size_t)b;
        float s = br_f16_to_f32(d[b]) * dx[b];
        int32x4_t p0 = vdotq_s32(vdupq_n_s32(0), vld1q_s8(wb), vld1q_s8(xb));
        int32x4_t p1 = vdotq_s32(vdupq_n_s32(0), vld1q_s8(wb + 16), vld1q_s8(xb + 16));
        a0 = vfmaq_n_f32(a0, vcvtq_f32_s32(p0), s);
        a1 = vfmaq_n_f32(a1, vcvtq_f32_s32(p1), s);
    }
    return combine(a0, a1);
}

#define Q8_NEON_VARIANT(NAME, DOT, ATTR)                                                           \
    ATTR static void gemv_##NAME(const struct br_q8mat *m, int64_t r0, int64_t r1,                 \
                                 const int8_t *q, const float *dx, float *y)                       \
    {                                                                                              \
        for (int64_t r = r0; r < r1; r++)                                                          \
            y[r - r0] = DOT(m->qs + (size_t)r * (size_t)m->cols, m->d + (size_t)r * (size_t)m->nb, \
                            m->nb, q, dx);                                                         \
    }                                                                                              \
    ATTR static void gemm_##NAME(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok,   \
                                 const int8_t *q, size_t q_stride, const float *dx,                \
                                 size_t dx_stride, float *y, size_t y_stride)                      \
    {                                                                                              \
        for (int64_t r = r0; r < r1; r++) /* a row stays in L1 across the tokens */                \
            for (int32_t t = 0; t < ntok; t++)                                                     \
                y[(size_t)t * y_stride + (size_t)(r - r0)] =                                       \
                    DOT(m->qs + (size_t)r * (size_t)m->cols, m->d + (size_t)r * (size_t)m->nb,     \
                        m->nb, q + (size_t)t * q_stride, dx + (size_t)t * dx_stride);              \
    }

Q8_NEON_VARIANT(plain, dot_plain, )
Q8_NEON_VARIANT(sdot, dot_sdot, DOT_ATTR)

const struct br_q8_ops br_q8_ops_neon_dot = {
    .name = "neon",
    .gemv = gemv_sdot,
    .gemm = gemm_sdot,
};

const struct br_q8_ops br_q8_ops_neon_plain = {
    .name = "neon-nodot",
    .gemv = gemv_plain,
    .gemm = gemm_plain,
};
