/*
 * F16/BF16 head kernels for AVX-512 machines: fhead_x86.h for one token, and a GEMM of its
 * own for several. Two tokens share a 512-bit register: their activations are interleaved
 * by groups of 8 (token 2p's 8 values, then token 2p + 1's) once per call, the 8 widened
 * row values are repeated in both halves, so one FMA advances both tokens' 8 canonical
 * lanes (fhead.h). A tile is 4 rows x 4 token pairs.
 */
#include <stdlib.h>

#include "kernels/fhead_x86.h"
#include "kernels/scratch.h"

#define FH_PAIRS 4 /* token pairs per tile */

/* xi: (npairs, groups, 16): pair p's group g = token 2p's values 8g..8g+7, then 2p + 1's
 * (zeros past cols, and for a missing partner) */
static void interleave(const float *x, size_t x_stride, int32_t ntok, int32_t cols, float *xi)
{
    int32_t groups = (cols + 7) / 8, npairs = (ntok + 1) / 2;
    for (int32_t p = 0; p < npairs; p++)
        for (int32_t g = 0; g < groups; g++)
            for (int h = 0; h < 2; h++) {
                int32_t t = 2 * p + h;
                float *o = xi + ((size_t)p * (size_t)groups + (size_t)g) * 16 + 8 * (size_t)h;
                for (int32_t i = 0; i < 8; i++) {
                    int32_t k = 8 * g + i;
                    o[i] = t < ntok && k < cols ? x[(size_t)t * x_stride + (size_t)k] : 0.0f;
                }
            }
}

static inline __m512 fh_widen2(const uint8_t *p, int bf16)
{
    __m256 w = fh_widen(_mm_loadu_si128((const __m128i *)(const void *)p), bf16);
    return _mm512_insertf32x8(_mm512_castps256_ps512(w), w, 1);
}

/* R rows (1..4) from r x np token pairs (nt tokens). */
static inline __attribute__((always_inline)) void fh_tile2(const struct br_fhead *m, int64_t r,
                                                           int R, int np, int32_t nt,
                                                           const float *xi, float *y,
                                                           size_t y_stride)
{
    const int bf16 = m->bf16;
    const int32_t cols = m->cols, full = cols & ~7, groups = (cols + 7) / 8;
    const size_t pstride = (size_t)groups * 16;
    const uint8_t *w[4];
    for (int i = 0; i < 4; i++) w[i] = m->data + (size_t)(r + (i < R ? i : 0)) * m->row_bytes;
    __m512 a[4][FH_PAIRS];
    for (int i = 0; i < 4; i++)
        for (int p = 0; p < FH_PAIRS; p++) a[i][p] = _mm512_setzero_ps();
    int32_t g = 0;
    for (int32_t k = 0; k < full; k += 8, g++) {
        __m512 v[4];
        for (int i = 0; i < R; i++) v[i] = fh_widen2(w[i] + 2 * (size_t)k, bf16);
        for (int p = 0; p < np; p++) {
            __m512 xv = _mm512_loadu_ps(xi + (size_t)p * pstride + 16 * (size_t)g);
            for (int i = 0; i < R; i++) a[i][p] = _mm512_fmadd_ps(v[i], xv, a[i][p]);
        }
    }
    if (full < cols) { /* the tail: its lanes only, the others left as they are */
        int rem = cols - full;
        __mmask16 mk = (__mmask16)(((1u << rem) - 1) | ((1u << rem) - 1) << 8);
        for (int i = 0; i < R; i++) {
            uint16_t t[8] = {0};
            memcpy(t, w[i] + 2 * (size_t)full, (size_t)rem * 2);
            __m512 v = fh_widen2((const uint8_t *)t, bf16);
            for (int p = 0; p < np; p++) {
                __m512 xv = _mm512_loadu_ps(xi + (size_t)p * pstride + 16 * (size_t)g);
                a[i][p] = _mm512_mask3_fmadd_ps(v, xv, a[i][p], mk);
            }
        }
    }
    for (int p = 0; p < np; p++)
        for (int h = 0; h < 2 && 2 * p + h < nt; h++)
            for (int i = 0; i < R; i++)
                y[(2 * (size_t)p + (size_t)h) * y_stride + (size_t)i] = br_combine8_m256(
                    h ? _mm512_extractf32x8_ps(a[i][p], 1) : _mm512_castps512_ps256(a[i][p]));
}

static void fh_tile2_full(const struct br_fhead *m, int64_t r, const float *xi, float *y,
                          size_t y_stride)
{
    fh_tile2(m, r, 4, FH_PAIRS, 2 * FH_PAIRS, xi, y, y_stride);
}

static void fh_tile2_part(const struct br_fhead *m, int64_t r, int R, int32_t nt, const float *xi,
                          float *y, size_t y_stride)
{
    switch (R) {
    case 4:
        fh_tile2(m, r, 4, (nt + 1) / 2, nt, xi, y, y_stride);
        break;
    case 3:
        fh_tile2(m, r, 3, (nt + 1) / 2, nt, xi, y, y_stride);
        break;
    case 2:
        fh_tile2(m, r, 2, (nt + 1) / 2, nt, xi, y, y_stride);
        break;
    default:
        fh_tile2(m, r, 1, (nt + 1) / 2, nt, xi, y, y_stride);
        break;
    }
}

void br_fhead_gemm_avx512(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                          const float *x, size_t x_stride, float *y, size_t y_stride);
void br_fhead_gemm_avx512(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                          const float *x, size_t x_stride, float *y, size_t y_stride)
{
    int32_t groups = (m->cols + 7) / 8, npairs = (ntok + 1) / 2;
    float *xi = ntok > 1 ? br_kernel_scratch(0, (size_t)npairs * (size_t)groups * 64) : NULL;
    if (!xi) { /* one token, or no memory for the interleaved copy */
        fh_gemm_x86(m, r0, r1, ntok, x, x_stride, y, y_stride);
        return;
    }
    interleave(x, x_stride, ntok, m->cols, xi);
    const size_t pstride = (size_t)groups * 16;
    for (int64_t r = r0; r < r1; r += 4) {
        int R = r1 - r < 4 ? (int)(r1 - r) : 4;
        for (int32_t t0 = 0; t0 < ntok; t0 += 2 * FH_PAIRS) {
            int32_t nt = ntok - t0 < 2 * FH_PAIRS ? ntok - t0 : 2 * FH_PAIRS;
            const float *xt = xi + (size_t)(t0 / 2) * pstride;
            float *yt = y + (size_t)t0 * y_stride + (size_t)(r - r0);
            if (R == 4 && nt == 2 * FH_PAIRS)
                fh_tile2_full(m, r, xt, yt, y_stride);
            else
                fh_tile2_part(m, r, R, nt, xt, yt, y_stride);
        }
    }
}
