/*
 * F16/BF16 head kernel for ARM NEON (aarch64 baseline). Eight row values are widened per
 * load (FCVTL for F16, a 16-bit shift for BF16, both exact) into two 4-lane vectors, the
 * canonical lanes 0-3 and 4-7 of fhead.h, and meet a token's 8 activations in two FMLA
 * (which round like fmaf). A tile is R rows x N tokens of independent chains: 4 x 1 for
 * one token (several rows in flight hide the FMA latency), 2 x 4 for several (each widened
 * group serves 4 tokens). The tail (cols % 8 values) continues each chain in scalar fmaf
 * on the same lanes.
 */
#include <arm_neon.h>
#include <math.h>

#include "bitrack/fp.h"
#include "kernels/fhead.h"

void br_fhead_gemm_neon(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                        const float *x, size_t x_stride, float *y, size_t y_stride);

/* 8 values at p (any alignment) widened to floats: lanes 0-3 in lo, 4-7 in hi. */
static inline void widen8(const uint8_t *p, int bf16, float32x4_t *lo, float32x4_t *hi)
{
    uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8(p));
    if (bf16) {
        *lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
        *hi = vreinterpretq_f32_u32(vshll_high_n_u16(h, 16));
    } else {
        float16x8_t f = vreinterpretq_f16_u16(h);
        *lo = vcvt_f32_f16(vget_low_f16(f));
        *hi = vcvt_high_f32_f16(f);
    }
}

static inline float widen1(const uint8_t *p, int bf16)
{
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    return bf16 ? br_bf16_to_f32(h) : br_f16_to_f32(h);
}

/* R rows from row r x N tokens. */
static inline __attribute__((always_inline)) void tile(const struct br_fhead *m, int64_t r, int R,
                                                       int N, const float *x, size_t x_stride,
                                                       float *y, size_t y_stride)
{
    const int bf16 = m->bf16;
    const int32_t cols = m->cols, full = cols & ~7;
    const uint8_t *w[4];
    for (int i = 0; i < R; i++) w[i] = m->data + (size_t)(r + i) * m->row_bytes;
    float32x4_t acc[4][4][2];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < N; t++) acc[i][t][0] = acc[i][t][1] = vdupq_n_f32(0.0f);
    for (int32_t k = 0; k < full; k += 8) {
        float32x4_t xl[4], xh[4];
        for (int t = 0; t < N; t++) {
            xl[t] = vld1q_f32(x + (size_t)t * x_stride + k);
            xh[t] = vld1q_f32(x + (size_t)t * x_stride + k + 4);
        }
        for (int i = 0; i < R; i++) {
            float32x4_t wl, wh;
            widen8(w[i] + 2 * (size_t)k, bf16, &wl, &wh);
            for (int t = 0; t < N; t++) {
                acc[i][t][0] = vfmaq_f32(acc[i][t][0], wl, xl[t]);
                acc[i][t][1] = vfmaq_f32(acc[i][t][1], wh, xh[t]);
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < N; t++) {
            float l[8];
            vst1q_f32(l, acc[i][t][0]);
            vst1q_f32(l + 4, acc[i][t][1]);
            const float *xt = x + (size_t)t * x_stride;
            for (int32_t k = full; k < cols; k++)
                l[k - full] = fmaf(widen1(w[i] + 2 * (size_t)k, bf16), xt[k], l[k - full]);
            y[(size_t)t * y_stride + (size_t)i] =
                ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
        }
}

typedef void (*tile_fn)(const struct br_fhead *m, int64_t r, const float *x, size_t x_stride,
                        float *y, size_t y_stride);
/* One function per shape, so each has constant loops the compiler unrolls. */
#define TILE_FN(R, N)                                                                              \
    static void tile_##R##_##N(const struct br_fhead *m, int64_t r, const float *x,                \
                               size_t x_stride, float *y, size_t y_stride)                         \
    {                                                                                              \
        tile(m, r, R, N, x, x_stride, y, y_stride);                                                \
    }
TILE_FN(4, 1)
TILE_FN(1, 1)
TILE_FN(1, 2)
TILE_FN(1, 3)
TILE_FN(1, 4)
TILE_FN(2, 1)
TILE_FN(2, 2)
TILE_FN(2, 3)
TILE_FN(2, 4)
#undef TILE_FN

void br_fhead_gemm_neon(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                        const float *x, size_t x_stride, float *y, size_t y_stride)
{
    if (ntok == 1) {
        int64_t r = r0;
        for (; r + 3 < r1; r += 4) tile_4_1(m, r, x, 0, y + (r - r0), 0);
        for (; r < r1; r++) tile_1_1(m, r, x, 0, y + (r - r0), 0);
        return;
    }
    /* pairs of rows (their 2 x cols values stay in L1) against groups of 4 tokens */
    static const tile_fn tiles[2][4] = {{tile_1_1, tile_1_2, tile_1_3, tile_1_4},
                                        {tile_2_1, tile_2_2, tile_2_3, tile_2_4}};
    for (int64_t r = r0; r < r1; r += 2) {
        int two = r + 1 < r1;
        for (int32_t t0 = 0; t0 < ntok; t0 += 4) {
            int32_t n = ntok - t0 < 4 ? ntok - t0 : 4;
            tiles[two][n - 1](m, r, x + (size_t)t0 * x_stride, x_stride,
                              y + (size_t)t0 * y_stride + (size_t)(r - r0), y_stride);
        }
    }
}
