/*
 * Q8_0 head kernels for AVX2 (with FMA, F16C), on the grouped layout of q8.h: a 64-byte
 * vector of a group is two 256-bit halves, lanes (blocks) 0-7 and 8-15. The weights are
 * turned back to signed (xor 0x80); the 4-byte-group dot is maddubs + madd with ones on
 * aw = |w| (unsigned, up to 128) and sx = x with the sign of w, so aw * sx = w * x and a
 * pair of products is at most 2 * 128 * 127 = 32512: maddubs never saturates. Eight such
 * dots per half finish 8 blocks' exact int32 products; then a conversion, the scales'
 * multiply and an FMA per half and 16 blocks, in the canonical order.
 *
 * A tile is one row x up to 4 tokens (the 16 registers hold 8 int32 accumulators, the
 * row's signed and absolute halves and the loads); the float lanes live in a small array.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/combine_x86.h"
#include "kernels/q8_impl.h"

#define TMAX 4

/* Row r against tokens t0 .. t0 + T - 1 of the grouped activations g. */
static inline __attribute__((always_inline)) void tile(const struct br_q8mat *m, int64_t r, int T,
                                                       const struct br_q8_acts *g, int32_t t0,
                                                       float *y, size_t y_stride)
{
    /* sizes in locals: the stores below may alias anything read through m or g */
    const size_t rb = m->row_bytes, lanes = g->lanes;
    const int32_t ng = m->ng;
    const int8_t *qg = g->qg + (size_t)t0 * rb;
    const float *dxg = g->dxg + (size_t)t0 * lanes;
    const uint8_t *w = m->qs + (size_t)r * rb;
    const uint16_t *d = br_q8mat_scale(m, r, 0);
    const __m256i k80 = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
    _Alignas(32) float facc[TMAX][2][8];
    for (int t = 0; t < T; t++)
        for (int h = 0; h < 2; h++) _mm256_store_ps(facc[t][h], _mm256_setzero_ps());
    for (int32_t G = 0; G < ng; G++) {
        const uint8_t *wg = w + (size_t)G * BR_Q8_GROUP_BYTES;
        const int8_t *xg = qg + (size_t)G * BR_Q8_GROUP_BYTES;
        __m256i acc[TMAX][2];
        for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            /* the next row's bytes, into L2 (see q8_avx512.c) */
            _mm_prefetch((const char *)(wg + rb + 64 * (size_t)s), _MM_HINT_T1);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i v = _mm256_xor_si256(
                    _mm256_load_si256((const __m256i *)(const void *)(wg + 64 * s + 32 * h)), k80);
                __m256i av = _mm256_sign_epi8(v, v);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    __m256i x = _mm256_load_si256(
                        (const __m256i *)(const void *)(xg + (size_t)t * rb + 64 * s + 32 * h));
                    __m256i p =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(av, _mm256_sign_epi8(x, v)), ones);
                    acc[t][h] = _mm256_add_epi32(acc[t][h], p);
                }
            }
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(
                (const __m128i *)(const void *)(d + (size_t)G * BR_Q8_GROUP + 8 * (size_t)h)));
            for (int t = 0; t < T; t++) {
                __m256 s = _mm256_mul_ps(
                    dw, _mm256_loadu_ps(dxg + (size_t)t * lanes + (size_t)G * BR_Q8_GROUP + 8 * h));
                __m256 f = _mm256_load_ps(facc[t][h]);
                _mm256_store_ps(facc[t][h], _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[t][h]), s, f));
            }
        }
    }
    for (int t = 0; t < T; t++)
        y[(size_t)t * y_stride] =
            br_combine8_m256(_mm256_add_ps(_mm256_load_ps(facc[t][0]), _mm256_load_ps(facc[t][1])));
}

#define TILE_FN(T)                                                                                 \
    static void tile_##T(const struct br_q8mat *m, int64_t r, const struct br_q8_acts *g,          \
                         int32_t t0, float *y, size_t y_stride)                                    \
    {                                                                                              \
        tile(m, r, T, g, t0, y, y_stride);                                                         \
    }
TILE_FN(1)
TILE_FN(2)
TILE_FN(3)
TILE_FN(4)
#undef TILE_FN
typedef void (*tile_fn)(const struct br_q8mat *m, int64_t r, const struct br_q8_acts *g, int32_t t0,
                        float *y, size_t y_stride);
static const tile_fn g_tiles[TMAX + 1] = {NULL, tile_1, tile_2, tile_3, tile_4};

static void q8_gemm_avx2(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok,
                         const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                         float *y, size_t y_stride)
{
    if (r0 >= r1 || ntok <= 0) return;
    struct br_q8_acts g;
    if (br_q8_acts_group(m, ntok, q, q_stride, dx, dx_stride, &g)) { /* no memory: reference */
        br_q8_gemm_ref(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
        return;
    }
    /* rows outer: a row stays in L1 across the token tiles */
    for (int64_t r = r0; r < r1; r++)
        for (int32_t t0 = 0; t0 < ntok; t0 += TMAX) {
            int T = ntok - t0 < TMAX ? (int)(ntok - t0) : TMAX;
            g_tiles[T](m, r, &g, t0, y + (size_t)t0 * y_stride + (size_t)(r - r0), y_stride);
        }
    br_q8_acts_free(&g);
}

static void q8_gemv_avx2(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q,
                         const float *dx, float *y)
{
    q8_gemm_avx2(m, r0, r1, 1, q, 0, dx, 0, y, 0);
}

const struct br_q8_ops br_q8_ops_avx2 = {
    .name = "avx2",
    .gemv = q8_gemv_avx2,
    .gemm = q8_gemm_avx2,
};
