/*
 * The x86 Q8_0 kernels, written once and compiled twice: q8_avx2.c and q8_avx512.c include
 * this file after defining Q8_PDOT(aw, sx), the 8-lane int32 dot of 4-byte groups of an
 * unsigned and a signed int8 vector (maddubs + madd on AVX2, one VNNI dpbusd on AVX-512).
 * Included only from those files, which carry the ISA flags.
 *
 * Block of 32 weights w and activations x (|x| <= 127, q8.h): aw = |w| (unsigned, up to
 * 128) and sx = x with the sign of w, so aw * sx = w * x; a pair of products is at most
 * 2 * 128 * 127 = 32512, so maddubs never saturates and both paths are exact. The 8 int32
 * lanes are the canonical lanes of q8.h, converted to float and accumulated with one FMA
 * per block against s_b = d_b * dx_b, then combined in the canonical order.
 */
#ifndef BR_KERNELS_Q8_X86_H
#define BR_KERNELS_Q8_X86_H

#include <immintrin.h>

#include "kernels/q8_impl.h"

#ifndef Q8_PDOT
#error "define Q8_PDOT before including kernels/q8_x86.h"
#endif

/* Tokens per pass over a row in the GEMM: the row's blocks are loaded once per group. */
#define Q8_TOK_GROUP 4

static inline float q8_hsum_canonical(__m256 acc)
{
    __m128 lo = _mm256_castps256_ps128(acc), hi = _mm256_extractf128_ps(acc, 1);
    __m128 m = _mm_add_ps(lo, hi);                 /* l0+l4, l1+l5, l2+l6, l3+l7 */
    __m128 n = _mm_add_ps(m, _mm_movehl_ps(m, m)); /* (l0+l4)+(l2+l6), (l1+l5)+(l3+l7) */
    return _mm_cvtss_f32(_mm_add_ss(n, _mm_movehdup_ps(n)));
}

static inline __m256 q8_block(__m256i w, __m256i aw, const int8_t *xb, __m256 s, __m256 acc)
{
    __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)xb);
    __m256i sx = _mm256_sign_epi8(x, w);
    __m256i p = Q8_PDOT(aw, sx);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc);
}

static inline float q8_f16(uint16_t h)
{
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

static void q8_gemv_x86(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q,
                        const float *dx, float *y)
{
    const int32_t nb = m->nb;
    int64_t r = r0;
    for (; r + 1 < r1; r += 2) {
        /* two rows at a time: two independent FMA chains */
        const int8_t *w0 = m->qs + (size_t)r * (size_t)m->cols, *w1 = w0 + m->cols;
        const uint16_t *d0 = m->d + (size_t)r * (size_t)nb, *d1 = d0 + nb;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int32_t b = 0; b < nb; b++) {
            __m256 sx = _mm256_broadcast_ss(dx + b);
            __m256i v0 = _mm256_load_si256((const __m256i *)(const void *)(w0 + 32 * b));
            __m256i v1 = _mm256_load_si256((const __m256i *)(const void *)(w1 + 32 * b));
            __m256 s0 = _mm256_mul_ps(_mm256_set1_ps(q8_f16(d0[b])), sx);
            __m256 s1 = _mm256_mul_ps(_mm256_set1_ps(q8_f16(d1[b])), sx);
            a0 = q8_block(v0, _mm256_sign_epi8(v0, v0), q + 32 * b, s0, a0);
            a1 = q8_block(v1, _mm256_sign_epi8(v1, v1), q + 32 * b, s1, a1);
        }
        y[r - r0] = q8_hsum_canonical(a0);
        y[r + 1 - r0] = q8_hsum_canonical(a1);
    }
    for (; r < r1; r++) {
        const int8_t *w0 = m->qs + (size_t)r * (size_t)m->cols;
        const uint16_t *d0 = m->d + (size_t)r * (size_t)nb;
        __m256 a0 = _mm256_setzero_ps();
        for (int32_t b = 0; b < nb; b++) {
            __m256i v0 = _mm256_load_si256((const __m256i *)(const void *)(w0 + 32 * b));
            __m256 s0 = _mm256_mul_ps(_mm256_set1_ps(q8_f16(d0[b])), _mm256_broadcast_ss(dx + b));
            a0 = q8_block(v0, _mm256_sign_epi8(v0, v0), q + 32 * b, s0, a0);
        }
        y[r - r0] = q8_hsum_canonical(a0);
    }
}

/* One row against up to Q8_TOK_GROUP tokens (n of them). */
static inline void q8_row_tokens(const int8_t *w, const uint16_t *d, int32_t nb, int32_t n,
                                 const int8_t *q, size_t q_stride, const float *dx,
                                 size_t dx_stride, float *y, size_t y_stride)
{
    __m256 acc[Q8_TOK_GROUP];
    for (int t = 0; t < Q8_TOK_GROUP; t++) acc[t] = _mm256_setzero_ps();
    if (n == Q8_TOK_GROUP) {
        for (int32_t b = 0; b < nb; b++) {
            __m256i v = _mm256_load_si256((const __m256i *)(const void *)(w + 32 * b));
            __m256i av = _mm256_sign_epi8(v, v);
            __m256 sw = _mm256_set1_ps(q8_f16(d[b]));
            for (int t = 0; t < Q8_TOK_GROUP; t++) {
                __m256 s = _mm256_mul_ps(sw, _mm256_broadcast_ss(dx + (size_t)t * dx_stride + b));
                acc[t] = q8_block(v, av, q + (size_t)t * q_stride + 32 * (size_t)b, s, acc[t]);
            }
        }
    } else {
        for (int32_t b = 0; b < nb; b++) {
            __m256i v = _mm256_load_si256((const __m256i *)(const void *)(w + 32 * b));
            __m256i av = _mm256_sign_epi8(v, v);
            __m256 sw = _mm256_set1_ps(q8_f16(d[b]));
            for (int t = 0; t < n; t++) {
                __m256 s = _mm256_mul_ps(sw, _mm256_broadcast_ss(dx + (size_t)t * dx_stride + b));
                acc[t] = q8_block(v, av, q + (size_t)t * q_stride + 32 * (size_t)b, s, acc[t]);
            }
        }
    }
    for (int t = 0; t < n; t++) y[(size_t)t * y_stride] = q8_hsum_canonical(acc[t]);
}

static void q8_gemm_x86(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok,
                        const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                        float *y, size_t y_stride)
{
    if (ntok == 1) {
        q8_gemv_x86(m, r0, r1, q, dx, y);
        return;
    }
    /* rows outer so a row (cols bytes) stays in L1 across all token groups */
    for (int64_t r = r0; r < r1; r++) {
        const int8_t *w = m->qs + (size_t)r * (size_t)m->cols;
        const uint16_t *d = m->d + (size_t)r * (size_t)m->nb;
        for (int32_t t0 = 0; t0 < ntok; t0 += Q8_TOK_GROUP) {
            int32_t n = ntok - t0 < Q8_TOK_GROUP ? ntok - t0 : Q8_TOK_GROUP;
            q8_row_tokens(w, d, m->nb, n, q + (size_t)t0 * q_stride, q_stride,
                          dx + (size_t)t0 * dx_stride, dx_stride,
                          y + (size_t)t0 * y_stride + (size_t)(r - r0), y_stride);
        }
    }
}

#endif
