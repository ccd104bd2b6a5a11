/*
 * The x86 F16/BF16 head kernels, written once and compiled twice (fhead_avx2.c,
 * fhead_avx512.c, which carry the ISA flags). 8 row values are widened per load (F16C
 * vcvtph2ps, or a 16-bit shift for BF16) into one 256-bit vector whose lanes are the
 * canonical lanes of fhead.h, and meet each token's 8 activations in one FMA; a tile is R
 * rows x N tokens of independent chains. The tail (cols % 8 values) goes through the same
 * lanes with the others left as they are.
 */
#ifndef BR_KERNELS_FHEAD_X86_H
#define BR_KERNELS_FHEAD_X86_H

#include <immintrin.h>
#include <string.h>

#include "kernels/combine_x86.h"
#include "kernels/fhead.h"
#include "kernels/tune.h"

/* Bytes ahead of the values in use (GEMV) and the hint come from the calibration
 * (kernels/tune.h; default T1 16 KiB ahead): on Zen 4, one thread, the 2B-4T F16 head's row
 * took 45 ms with T0 4 KiB ahead, 35 ms with T1 4 KiB ahead and 26 with T1 16 KiB ahead
 * (32 and 64 KiB: 26-29). */

static inline __m256 fh_widen(__m128i h, int bf16)
{
    return bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                : _mm256_cvtph_ps(h);
}

/* R rows from row r x N tokens; one token prefetches pf bytes ahead with `hint`, and near
 * bytes ahead into L1 when near is not 0. */
static inline __attribute__((always_inline)) void
fh_tile(const struct br_fhead *m, int64_t r, int R, int N, const float *x, size_t x_stride,
        float *y, size_t y_stride, size_t pf, int hint, size_t near)
{
    const int bf16 = m->bf16;
    const int32_t cols = m->cols, full = cols & ~7;
    const uint8_t *w[4];
    for (int i = 0; i < 4; i++) w[i] = m->data + (size_t)(r + (i < R ? i : 0)) * m->row_bytes;
    __m256 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int t = 0; t < 4; t++) acc[i][t] = _mm256_setzero_ps();
    for (int32_t k = 0; k < full; k += 8) {
        if (N == 1 && (k & 31) == 0) {
            for (int i = 0; i < R; i++) br_prefetch(w[i] + 2 * (size_t)k + pf, hint);
            if (near)
                for (int i = 0; i < R; i++) br_prefetch(w[i] + 2 * (size_t)k + near, BR_PF_T0);
        }
        __m256 xv[4];
        for (int t = 0; t < N; t++) xv[t] = _mm256_loadu_ps(x + (size_t)t * x_stride + k);
        for (int i = 0; i < R; i++) {
            __m256 wf = fh_widen(
                _mm_loadu_si128((const __m128i *)(const void *)(w[i] + 2 * (size_t)k)), bf16);
            for (int t = 0; t < N; t++) acc[i][t] = _mm256_fmadd_ps(wf, xv[t], acc[i][t]);
        }
    }
    if (full < cols) {
        int rem = cols - full;
        __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256 mask = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(rem), lane));
        float xt[4][8];
        for (int t = 0; t < N; t++) {
            memset(xt[t], 0, sizeof xt[t]);
            memcpy(xt[t], x + (size_t)t * x_stride + full, (size_t)rem * sizeof(float));
        }
        for (int i = 0; i < R; i++) {
            uint16_t wt[8] = {0};
            memcpy(wt, w[i] + 2 * (size_t)full, (size_t)rem * 2);
            __m256 wf = fh_widen(_mm_loadu_si128((const __m128i *)(const void *)wt), bf16);
            for (int t = 0; t < N; t++) {
                __m256 p = _mm256_fmadd_ps(wf, _mm256_loadu_ps(xt[t]), acc[i][t]);
                acc[i][t] = _mm256_blendv_ps(acc[i][t], p, mask);
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < N; t++)
            y[(size_t)t * y_stride + (size_t)i] = br_combine8_m256(acc[i][t]);
}

#define FH_TILE(R, N)                                                                              \
    static void fh_tile_##R##_##N(const struct br_fhead *m, int64_t r, const float *x,             \
                                  size_t x_stride, float *y, size_t y_stride)                      \
    {                                                                                              \
        fh_tile(m, r, R, N, x, x_stride, y, y_stride, 0, BR_PF_T1, 0);                             \
    }
/* The GEMV's tiles, one per hint. */
#define FH_GEMV(R, H)                                                                              \
    static void fh_gemv_##R##_##H(const struct br_fhead *m, int64_t r, const float *x, float *y,   \
                                  size_t pf, size_t near)                                          \
    {                                                                                              \
        fh_tile(m, r, R, 1, x, 0, y, 0, pf, H, near);                                              \
    }
FH_GEMV(4, 0)
FH_GEMV(4, 1)
FH_GEMV(4, 2)
FH_GEMV(4, 3)
FH_GEMV(1, 0)
FH_GEMV(1, 1)
FH_GEMV(1, 2)
FH_GEMV(1, 3)
#undef FH_GEMV
typedef void (*fh_gemv_fn)(const struct br_fhead *m, int64_t r, const float *x, float *y, size_t pf,
                           size_t near);
/* [4 rows][hint] */
static const fh_gemv_fn g_fh_gemv[2][4] = {{fh_gemv_1_0, fh_gemv_1_1, fh_gemv_1_2, fh_gemv_1_3},
                                           {fh_gemv_4_0, fh_gemv_4_1, fh_gemv_4_2, fh_gemv_4_3}};
FH_TILE(1, 1)
FH_TILE(2, 4)
FH_TILE(1, 4)
FH_TILE(1, 2)
FH_TILE(1, 3)
FH_TILE(2, 1)
FH_TILE(2, 2)
FH_TILE(2, 3)

static void fh_gemm_x86(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                        const float *x, size_t x_stride, float *y, size_t y_stride)
{
    if (ntok == 1) {
        const struct br_tune *tp = br_tune_active();
        size_t pf = tp->fhead_ahead > 0 ? (size_t)tp->fhead_ahead : 16384;
        int hint = tp->fhead_hint & 3;
        size_t near = tp->fhead_near > 0 ? (size_t)tp->fhead_near : 0;
        int64_t r = r0;
        for (; r + 3 < r1; r += 4) g_fh_gemv[1][hint](m, r, x, y + (r - r0), pf, near);
        for (; r < r1; r++) g_fh_gemv[0][hint](m, r, x, y + (r - r0), pf, near);
        return;
    }
    /* pairs of rows (their 2 x cols values stay in L1) against groups of 4 tokens */
    typedef void (*tile_fn)(const struct br_fhead *, int64_t, const float *, size_t, float *,
                            size_t);
    static const tile_fn tiles[2][4] = {{fh_tile_1_1, fh_tile_1_2, fh_tile_1_3, fh_tile_1_4},
                                        {fh_tile_2_1, fh_tile_2_2, fh_tile_2_3, fh_tile_2_4}};
    for (int64_t r = r0; r < r1; r += 2) {
        int two = r + 1 < r1;
        for (int32_t t0 = 0; t0 < ntok; t0 += 4) {
            int32_t n = ntok - t0 < 4 ? ntok - t0 : 4;
            tiles[two][n - 1](m, r, x + (size_t)t0 * x_stride, x_stride,
                              y + (size_t)t0 * y_stride + (size_t)(r - r0), y_stride);
        }
    }
}

#endif
