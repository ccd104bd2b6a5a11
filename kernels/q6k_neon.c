/*
 * Q6_K head kernels for ARM NEON (aarch64), in the two flavours of ternary_neon.c: with the
 * dot-product extension (SDOT) and with plain ARMv8 NEON (SMULL to int16, then pairwise
 * widening adds). Each half super-block's 6-bit values are unpacked once per row into
 * signed bytes (u - 32) and serve up to 4 tokens. A block of 32 values is two 16-byte
 * vectors whose four 4-value sums are exactly the canonical lanes 0-3 and 4-7 of q6k.h;
 * each lane's sum is converted, multiplied by its sub-block scale (exact) and added with
 * FMLA by s_b (rounding like fmaf).
 */
#include <arm_neon.h>
#include <stdint.h>

#include "bitrack/fp.h"
#include "kernels/q6k.h"

#define DOT_ATTR  __attribute__((target("arch=armv8.2-a+dotprod")))
#define TOK_GROUP 4 /* tokens per pass over a row */

void br_q6k_gemm_neon_dot(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                          const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                          float *y, size_t y_stride);
void br_q6k_gemm_neon_plain(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                            const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                            float *y, size_t y_stride);

/* The 4-element sums of 16 bytes, plain NEON (|w q| <= 32 * 127 fits int16). */
static inline int32x4_t sum4_plain(int8x16_t w, int8x16_t x)
{
    int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    int32x4_t hi = vpaddlq_s16(vmull_high_s8(w, x));
    return vpaddq_s32(lo, hi);
}

DOT_ATTR static inline int32x4_t sum4_sdot(int8x16_t w, int8x16_t x)
{
    return vdotq_s32(vdupq_n_s32(0), w, x);
}

/* Half h of a super-block (128 values) as u - 32: w[g][0..1] holds group g's 32 values. */
static inline void unpack_half(const uint8_t *blk, int h, int8x16_t w[4][2])
{
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m30 = vdupq_n_u8(0x30);
    const int8x16_t k32 = vdupq_n_s8(32);
    const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
    for (int i = 0; i < 2; i++) {
        uint8x16_t a = vld1q_u8(ql + 16 * i), b = vld1q_u8(ql + 32 + 16 * i);
        uint8x16_t hb = vld1q_u8(qh + 16 * i);
        uint8x16_t u[4] = {
            vorrq_u8(vandq_u8(a, m4), vandq_u8(vshlq_n_u8(hb, 4), m30)),
            vorrq_u8(vandq_u8(b, m4), vandq_u8(vshlq_n_u8(hb, 2), m30)),
            vorrq_u8(vshrq_n_u8(a, 4), vandq_u8(hb, m30)),
            vorrq_u8(vshrq_n_u8(b, 4), vandq_u8(vshrq_n_u8(hb, 2), m30)),
        };
        for (int g = 0; g < 4; g++) w[g][i] = vsubq_s8(vreinterpretq_s8_u8(u[g]), k32);
    }
}

/* Row `row` (nsb super-blocks) against n <= TOK_GROUP tokens: y[t * y_stride]. */
#define Q6_NEON_ROW(NAME, SUM4, ATTR)                                                              \
    ATTR static void NAME(const uint8_t *row, int32_t nsb, int32_t n, const int8_t *q,             \
                          size_t q_stride, const float *dx, size_t dx_stride, float *y,            \
                          size_t y_stride)                                                         \
    {                                                                                              \
        float32x4_t acc[TOK_GROUP][2];                                                             \
        for (int32_t t = 0; t < n; t++) acc[t][0] = acc[t][1] = vdupq_n_f32(0.0f);                 \
        for (int32_t sb = 0; sb < nsb; sb++) {                                                     \
            const uint8_t *blk = row + (size_t)sb * BR_Q6K_BLOCK_BYTES;                            \
            const int8_t *sc = (const int8_t *)(blk + 192);                                        \
            float d = br_f16_to_f32((uint16_t)(blk[208] | blk[209] << 8));                         \
            for (int h = 0; h < 2; h++) {                                                          \
                int8x16_t w[4][2];                                                                 \
                unpack_half(blk, h, w);                                                            \
                for (int g = 0; g < 4; g++) {                                                      \
                    int j = 4 * h + g; /* block within the super-block */                          \
                    float s_lo = (float)sc[2 * j], s_hi = (float)sc[2 * j + 1];                    \
                    size_t k = 256 * (size_t)sb + 32 * (size_t)j;                                  \
                    for (int32_t t = 0; t < n; t++) {                                              \
                        const int8_t *x = q + (size_t)t * q_stride + k;                            \
                        float s = d * dx[(size_t)t * dx_stride + 8 * (size_t)sb + (size_t)j];      \
                        float32x4_t p0 =                                                           \
                            vmulq_n_f32(vcvtq_f32_s32(SUM4(w[g][0], vld1q_s8(x))), s_lo);          \
                        float32x4_t p1 =                                                           \
                            vmulq_n_f32(vcvtq_f32_s32(SUM4(w[g][1], vld1q_s8(x + 16))), s_hi);     \
                        acc[t][0] = vfmaq_n_f32(acc[t][0], p0, s);                                 \
                        acc[t][1] = vfmaq_n_f32(acc[t][1], p1, s);                                 \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int32_t t = 0; t < n; t++) {                                                          \
            /* ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) */                                \
            float32x4_t mm = vaddq_f32(acc[t][0], acc[t][1]);                                      \
            y[(size_t)t * y_stride] = (vgetq_lane_f32(mm, 0) + vgetq_lane_f32(mm, 2)) +            \
                                      (vgetq_lane_f32(mm, 1) + vgetq_lane_f32(mm, 3));             \
        }                                                                                          \
    }
Q6_NEON_ROW(row_plain, sum4_plain, )
Q6_NEON_ROW(row_sdot, sum4_sdot, DOT_ATTR)
#undef Q6_NEON_ROW

/* Rows outer (a row's super-blocks stay in L1 across its token groups). */
#define Q6_NEON_GEMM(NAME, ROW, ATTR)                                                              \
    ATTR void NAME(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,                \
                   const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride, float *y,  \
                   size_t y_stride)                                                                \
    {                                                                                              \
        for (int64_t r = r0; r < r1; r++)                                                          \
            for (int32_t t0 = 0; t0 < ntok; t0 += TOK_GROUP) {                                     \
                int32_t n = ntok - t0 < TOK_GROUP ? ntok - t0 : TOK_GROUP;                         \
                ROW(m->data + (size_t)r * m->row_bytes, m->nsb, n, q + (size_t)t0 * q_stride,      \
                    q_stride, dx + (size_t)t0 * dx_stride, dx_stride,                              \
                    y + (size_t)t0 * y_stride + (size_t)(r - r0), y_stride);                       \
            }                                                                                      \
    }
Q6_NEON_GEMM(br_q6k_gemm_neon_plain, row_plain, )
Q6_NEON_GEMM(br_q6k_gemm_neon_dot, row_sdot, DOT_ATTR)
#undef Q6_NEON_GEMM
