/*
 * Q8_0 head kernels for ARM NEON (aarch64), on the grouped layout of q8.h, in the two
 * flavours of ternary_neon.c: with the dot-product extension (SDOT: four int8 products per
 * int32 lane) and with plain ARMv8 NEON (SMULL to int16, then pairwise widening adds;
 * |w * q| <= 128 * 127 fits int16). A 64-byte vector of a group is four 16-byte vectors,
 * lanes (blocks) 0-3, 4-7, 8-11 and 12-15; the weights are turned back to signed (eor
 * 0x80). Eight steps finish 16 blocks' exact int32 products; then one conversion, the
 * scales' multiply and one FMLA per 4 lanes (FMLA rounds like fmaf), combined in the
 * canonical order.
 */
#include <arm_neon.h>
#include <stdint.h>
#include <stdlib.h>

#include "bitrack/fp.h"
#include "kernels/kernel_impl.h"
#include "kernels/q8_impl.h"

#define DOT_ATTR __attribute__((target("arch=armv8.2-a+dotprod")))

/* 16 lanes f0..f3 (4 each) in the canonical order: h = (f0 + f2, f1 + f3), then 8 lanes. */
static inline float combine(float32x4_t f0, float32x4_t f1, float32x4_t f2, float32x4_t f3)
{
    float32x4_t lo = vaddq_f32(f0, f2), hi = vaddq_f32(f1, f3);
    float32x4_t m = vaddq_f32(lo, hi); /* h0+h4, h1+h5, h2+h6, h3+h7 */
    float a = vgetq_lane_f32(m, 0) + vgetq_lane_f32(m, 2);
    float b = vgetq_lane_f32(m, 1) + vgetq_lane_f32(m, 3);
    return a + b;
}

/* The 4-element sums of 16 bytes, plain NEON. */
static inline int32x4_t sum4_plain(int32x4_t acc, int8x16_t w, int8x16_t x)
{
    int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    int32x4_t hi = vpaddlq_s16(vmull_high_s8(w, x));
    return vaddq_s32(acc, vpaddq_s32(lo, hi));
}

DOT_ATTR static inline int32x4_t sum4_sdot(int32x4_t acc, int8x16_t w, int8x16_t x)
{
    return vdotq_s32(acc, w, x);
}

/* One row (w: its grouped bytes, d: its scales) against one grouped token. */
#define Q8_NEON_DOT(NAME, SUM4, ATTR)                                                              \
    ATTR static float NAME(const uint8_t *w, const uint16_t *d, int32_t ng, const int8_t *qg,      \
                           const float *dxg)                                                       \
    {                                                                                              \
        const uint8x16_t k80 = vdupq_n_u8(0x80);                                                   \
        float32x4_t f[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f),               \
                            vdupq_n_f32(0.0f)};                                                    \
        for (int32_t G = 0; G < ng; G++) {                                                         \
            const uint8_t *wg = w + (size_t)G * BR_Q8_GROUP_BYTES;                                 \
            const int8_t *xg = qg + (size_t)G * BR_Q8_GROUP_BYTES;                                 \
            int32x4_t p[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};     \
            for (int s = 0; s < 8; s++)                                                            \
                for (int j = 0; j < 4; j++) {                                                      \
                    int8x16_t wv =                                                                 \
                        vreinterpretq_s8_u8(veorq_u8(vld1q_u8(wg + 64 * s + 16 * j), k80));        \
                    p[j] = SUM4(p[j], wv, vld1q_s8(xg + 64 * s + 16 * j));                         \
                }                                                                                  \
            for (int j = 0; j < 4; j++) {                                                          \
                float dw[4];                                                                       \
                for (int k = 0; k < 4; k++)                                                        \
                    dw[k] = br_f16_to_f32(d[(size_t)G * BR_Q8_GROUP + 4 * (size_t)j + (size_t)k]); \
                float32x4_t sc = vmulq_f32(                                                        \
                    vld1q_f32(dw), vld1q_f32(dxg + (size_t)G * BR_Q8_GROUP + 4 * (size_t)j));      \
                f[j] = vfmaq_f32(f[j], vcvtq_f32_s32(p[j]), sc);                                   \
            }                                                                                      \
        }                                                                                          \
        return combine(f[0], f[1], f[2], f[3]);                                                    \
    }
Q8_NEON_DOT(dot_plain, sum4_plain, )
Q8_NEON_DOT(dot_sdot, sum4_sdot, DOT_ATTR)
#undef Q8_NEON_DOT

/* Grouped copies of the tokens, then rows outer (a row stays in L1 across the tokens). */
#define Q8_NEON_VARIANT(NAME, DOT, ATTR)                                                           \
    ATTR static void gemm_##NAME(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok,   \
                                 const int8_t *q, size_t q_stride, const float *dx,                \
                                 size_t dx_stride, float *y, size_t y_stride)                      \
    {                                                                                              \
        if (r0 >= r1 || ntok <= 0) return;                                                         \
        struct br_q8_acts g;                                                                       \
        if (br_q8_acts_group(m, ntok, q, q_stride, dx, dx_stride, &g)) {                           \
            br_q8_gemm_ref(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);              \
            return;                                                                                \
        }                                                                                          \
        for (int64_t r = r0; r < r1; r++)                                                          \
            for (int32_t t = 0; t < ntok; t++)                                                     \
                y[(size_t)t * y_stride + (size_t)(r - r0)] =                                       \
                    DOT(m->qs + (size_t)r * m->row_bytes, br_q8mat_scale(m, r, 0), m->ng,          \
                        g.qg + (size_t)t * m->row_bytes, g.dxg + (size_t)t * g.lanes);             \
        br_q8_acts_free(&g);                                                                       \
    }                                                                                              \
    ATTR static void gemv_##NAME(const struct br_q8mat *m, int64_t r0, int64_t r1,                 \
                                 const int8_t *q, const float *dx, float *y)                       \
    {                                                                                              \
        gemm_##NAME(m, r0, r1, 1, q, 0, dx, 0, y, 0);                                              \
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
