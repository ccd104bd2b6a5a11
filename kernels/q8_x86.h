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

#include "kernels/combine_x86.h"
#include "kernels/q8_impl.h"

#ifndef Q8_PDOT
#error "define Q8_PDOT before including kernels/q8_x86.h"
#endif

/* Tokens per pass over a row in the GEMM: the row's blocks are loaded once per group. */
#define Q8_TOK_GROUP 4
#ifndef Q8_PREFETCH
#define Q8_PREFETCH 4096 /* bytes ahead of the block in use */
#endif

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

/* s[j] = f16(d[j]) * dx[j] for 8 blocks: the canonical per-block products, 8 at a time. */
static inline void q8_scales8(const uint16_t *d, const float *dx, float *s)
{
    __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)d));
    _mm256_store_ps(s, _mm256_mul_ps(dw, _mm256_loadu_ps(dx)));
}

static inline __m256i q8_load(const int8_t *p)
{
    return _mm256_load_si256((const __m256i *)(const void *)p);
}

/* Up to Q8_TOK_GROUP tokens (n) against R rows (1 or 2) starting at row r of m: the
 * row's blocks are loaded once for all the tokens. y[t * y_stride + i] for row r + i. */
static inline void q8_tile(const struct br_q8mat *m, int64_t r, int R, int32_t n, const int8_t *q,
                           size_t q_stride, const float *dx, size_t dx_stride, float *y,
                           size_t y_stride)
{
    const int32_t nb = m->nb;
    const int8_t *w0 = m->qs + (size_t)r * (size_t)m->cols, *w1 = w0 + (R > 1 ? m->cols : 0);
    const uint16_t *d0 = m->d + (size_t)r * (size_t)nb, *d1 = d0 + (R > 1 ? nb : 0);
    __m256 a0[Q8_TOK_GROUP], a1[Q8_TOK_GROUP];
    _Alignas(32) float s0[Q8_TOK_GROUP][8], s1[Q8_TOK_GROUP][8];
    for (int t = 0; t < Q8_TOK_GROUP; t++) a0[t] = a1[t] = _mm256_setzero_ps();
    int32_t b0 = 0;
    for (; b0 + 8 <= nb; b0 += 8) {
        { /* stream the rows ahead of use: GEMV, and a GEMM row read once per token group */
            _mm_prefetch((const char *)(w0 + 32 * (size_t)b0 + Q8_PREFETCH), _MM_HINT_T0);
            _mm_prefetch((const char *)(w0 + 32 * (size_t)b0 + Q8_PREFETCH + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(w0 + 32 * (size_t)b0 + Q8_PREFETCH + 128), _MM_HINT_T0);
            _mm_prefetch((const char *)(w0 + 32 * (size_t)b0 + Q8_PREFETCH + 192), _MM_HINT_T0);
            if (R > 1) {
                _mm_prefetch((const char *)(w1 + 32 * (size_t)b0 + Q8_PREFETCH), _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + 32 * (size_t)b0 + Q8_PREFETCH + 64), _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + 32 * (size_t)b0 + Q8_PREFETCH + 128), _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + 32 * (size_t)b0 + Q8_PREFETCH + 192), _MM_HINT_T0);
            }
        }
        for (int t = 0; t < n; t++) {
            q8_scales8(d0 + b0, dx + (size_t)t * dx_stride + b0, s0[t]);
            if (R > 1) q8_scales8(d1 + b0, dx + (size_t)t * dx_stride + b0, s1[t]);
        }
        for (int j = 0; j < 8; j++) {
            size_t k = 32 * (size_t)(b0 + j);
            __m256i v0 = q8_load(w0 + k), av0 = _mm256_sign_epi8(v0, v0);
            __m256i v1 = R > 1 ? q8_load(w1 + k) : v0, av1 = _mm256_sign_epi8(v1, v1);
            for (int t = 0; t < n; t++) {
                const int8_t *xb = q + (size_t)t * q_stride + k;
                a0[t] = q8_block(v0, av0, xb, _mm256_broadcast_ss(&s0[t][j]), a0[t]);
                if (R > 1) a1[t] = q8_block(v1, av1, xb, _mm256_broadcast_ss(&s1[t][j]), a1[t]);
            }
        }
    }
    for (; b0 < nb; b0++) { /* the last nb % 8 blocks */
        size_t k = 32 * (size_t)b0;
        __m256i v0 = q8_load(w0 + k), av0 = _mm256_sign_epi8(v0, v0);
        __m256i v1 = q8_load(w1 + k), av1 = _mm256_sign_epi8(v1, v1);
        __m256 sw0 = _mm256_set1_ps(q8_f16(d0[b0])), sw1 = _mm256_set1_ps(q8_f16(d1[b0]));
        for (int t = 0; t < n; t++) {
            const int8_t *xb = q + (size_t)t * q_stride + k;
            __m256 sx = _mm256_broadcast_ss(dx + (size_t)t * dx_stride + b0);
            a0[t] = q8_block(v0, av0, xb, _mm256_mul_ps(sw0, sx), a0[t]);
            if (R > 1) a1[t] = q8_block(v1, av1, xb, _mm256_mul_ps(sw1, sx), a1[t]);
        }
    }
    for (int t = 0; t < n; t++) {
        y[(size_t)t * y_stride] = br_combine8_m256(a0[t]);
        if (R > 1) y[(size_t)t * y_stride + 1] = br_combine8_m256(a1[t]);
    }
}

/* Specializations the compiler unrolls: constant R and n. */
#define Q8_TILE(R, N)                                                                              \
    static void q8_tile_##R##_##N(const struct br_q8mat *m, int64_t r, const int8_t *q,            \
                                  size_t q_stride, const float *dx, size_t dx_stride, float *y,    \
                                  size_t y_stride)                                                 \
    {                                                                                              \
        q8_tile(m, r, R, N, q, q_stride, dx, dx_stride, y, y_stride);                              \
    }
Q8_TILE(2, 1)
Q8_TILE(1, 1)
Q8_TILE(1, 2)
Q8_TILE(1, 3)
Q8_TILE(1, 4)

static void q8_gemv_x86(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q,
                        const float *dx, float *y)
{
    int64_t r = r0;
    for (; r + 1 < r1; r += 2) q8_tile_2_1(m, r, q, 0, dx, 0, y + (r - r0), 0);
    if (r < r1) q8_tile_1_1(m, r, q, 0, dx, 0, y + (r - r0), 0);
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
    for (int64_t r = r0; r < r1; r++)
        for (int32_t t0 = 0; t0 < ntok; t0 += Q8_TOK_GROUP) {
            int32_t n = ntok - t0 < Q8_TOK_GROUP ? ntok - t0 : Q8_TOK_GROUP;
            const int8_t *qt = q + (size_t)t0 * q_stride;
            const float *dt = dx + (size_t)t0 * dx_stride;
            float *yt = y + (size_t)t0 * y_stride + (size_t)(r - r0);
            switch (n) {
            case 1:
                q8_tile_1_1(m, r, qt, q_stride, dt, dx_stride, yt, y_stride);
                break;
            case 2:
                q8_tile_1_2(m, r, qt, q_stride, dt, dx_stride, yt, y_stride);
                break;
            case 3:
                q8_tile_1_3(m, r, qt, q_stride, dt, dx_stride, yt, y_stride);
                break;
            default:
                q8_tile_1_4(m, r, qt, q_stride, dt, dx_stride, yt, y_stride);
                break;
            }
        }
}

#endif
