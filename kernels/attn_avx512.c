/*
 * AVX-512 attention kernels (attn.h), bit-identical to the scalar reference.
 *
 * Scores: one 512-bit accumulator holds the 8 canonical lanes of two positions (low half
 * position p, high half p + 1), so the query's 8-element groups are stored twice side by
 * side in `qd` and every FMA advances two dots; four such accumulators (8 positions) run
 * side by side to cover the FMA latency. Tails of head_dim use masked FMAs, which leave
 * the untouched lanes exactly as the reference leaves them. The 8-lane combine is done
 * for both halves at once with in-register shuffles in the canonical association.
 *
 * Accumulation: the output is cut into passes of up to 128 floats (8 registers) that stay
 * in registers while the positions stream past; each lane is its own chain over p.
 *
 * Grouped forms (several query heads sharing a KV head): up to 4 heads at a time, each
 * cache row converted from f16 once for all of them, every head's FMAs exactly those of
 * the single forms (the same operands in the same order), so the bits do not change. For
 * 4 heads that is a quarter of the conversions: 4 of 20 operations per 8 score dims of 2
 * positions, and 4 of 20 per 64 accumulated values.
 */
#include <assert.h>
#include <immintrin.h>

#include "kernels/attn.h"

/* Canonical combine of the 8 lanes of each 256-bit half: lane 0 of the low half and lane 8
 * of the high half receive ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). */
static inline __m512 combine8x2(__m512 l)
{
    /* swap 128-bit quarters within each half: lane i meets lane i ^ 4 */
    __m512 t = _mm512_add_ps(l, _mm512_shuffle_f32x4(l, l, _MM_SHUFFLE(2, 3, 0, 1)));
    /* lane i meets lane i ^ 2: (l0+l4)+(l2+l6), (l1+l5)+(l3+l7) */
    __m512 u = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
    /* lane i meets lane i ^ 1 */
    return _mm512_add_ps(u, _mm512_permute_ps(u, _MM_SHUFFLE(2, 3, 0, 1)));
}

static inline __m512 load_pair(const uint16_t *a, const uint16_t *b)
{
    __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const void *)a)),
                                        _mm_loadu_si128((const void *)b), 1);
    return _mm512_cvtph_ps(h);
}

static inline __m512 load_pair_masked(const uint16_t *a, const uint16_t *b, __mmask8 m)
{
    __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_maskz_loadu_epi16(m, a)),
                                        _mm_maskz_loadu_epi16(m, b), 1);
    return _mm512_cvtph_ps(h);
}

static void scores_avx512(const float *q, const uint16_t *k, size_t ks, int32_t n, int32_t hd,
                          float scale, float *s)
{
    int32_t nb = hd / 8, rem = hd % 8;
    __mmask8 m8 = (__mmask8)((1u << rem) - 1);
    __mmask16 m16 = (__mmask16)(m8 | (m8 << 8));
    assert(hd > 0 && hd <= BR_ATTN_MAX_HEAD_DIM);
    __m512 qd[BR_ATTN_MAX_HEAD_DIM / 8];
    for (int32_t j = 0; j * 8 < hd; j++) {
        __m256 g = j < nb ? _mm256_loadu_ps(q + 8 * j) : _mm256_maskz_loadu_ps(m8, q + 8 * j);
        qd[j] = _mm512_insertf32x8(_mm512_castps256_ps512(g), g, 1);
    }
    int32_t p = 0;
    for (; p + 8 <= n; p += 8) {
        const uint16_t *k0 = k + (size_t)p * ks;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int32_t j = 0; j < nb; j++) {
            const uint16_t *kj = k0 + 8 * j;
            a0 = _mm512_fmadd_ps(qd[j], load_pair(kj, kj + ks), a0);
            a1 = _mm512_fmadd_ps(qd[j], load_pair(kj + 2 * ks, kj + 3 * ks), a1);
            a2 = _mm512_fmadd_ps(qd[j], load_pair(kj + 4 * ks, kj + 5 * ks), a2);
            a3 = _mm512_fmadd_ps(qd[j], load_pair(kj + 6 * ks, kj + 7 * ks), a3);
        }
        if (rem) {
            const uint16_t *kj = k0 + 8 * nb;
            a0 = _mm512_mask3_fmadd_ps(qd[nb], load_pair_masked(kj, kj + ks, m8), a0, m16);
            a1 = _mm512_mask3_fmadd_ps(qd[nb], load_pair_masked(kj + 2 * ks, kj + 3 * ks, m8), a1,
                                       m16);
            a2 = _mm512_mask3_fmadd_ps(qd[nb], load_pair_masked(kj + 4 * ks, kj + 5 * ks, m8), a2,
                                       m16);
            a3 = _mm512_mask3_fmadd_ps(qd[nb], load_pair_masked(kj + 6 * ks, kj + 7 * ks, m8), a3,
                                       m16);
        }
        /* lanes 0 and 8 of each register hold the two dots */
        const __m512i pick = _mm512_setr_epi32(0, 8, 16, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        __m512 c01 = _mm512_permutex2var_ps(combine8x2(a0), pick, combine8x2(a1));
        __m512 c23 = _mm512_permutex2var_ps(combine8x2(a2), pick, combine8x2(a3));
        __m256 d = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm512_castps512_ps128(c01)),
                                        _mm512_castps512_ps128(c23), 1);
        _mm256_storeu_ps(s + p, _mm256_mul_ps(d, _mm256_set1_ps(scale)));
    }
    for (; p < n; p += 2) {
        /* one or two positions; a lone last position pairs with itself */
        const uint16_t *ka = k + (size_t)p * ks;
        const uint16_t *kb = p + 1 < n ? ka + ks : ka;
        __m512 a = _mm512_setzero_ps();
        for (int32_t j = 0; j < nb; j++)
            a = _mm512_fmadd_ps(qd[j], load_pair(ka + 8 * j, kb + 8 * j), a);
        if (rem)
            a = _mm512_mask3_fmadd_ps(qd[nb], load_pair_masked(ka + 8 * nb, kb + 8 * nb, m8), a,
                                      m16);
        a = combine8x2(a);
        float r[16];
        _mm512_storeu_ps(r, a);
        s[p] = r[0] * scale;
        if (p + 1 < n) s[p + 1] = r[8] * scale;
    }
}

/* Output values [i0, i0 + 16 * NV) (the last register masked to hdv) over all n positions. */
#define ACCUM_PASS(NV)                                                                             \
    static inline void accum_pass##NV(const float *w, const uint16_t *v, size_t vs, int32_t n,     \
                                      int32_t i0, int32_t hdv, float *out)                         \
    {                                                                                              \
        __m512 a[NV];                                                                              \
        __mmask16 mk[NV];                                                                          \
        for (int c = 0; c < NV; c++) {                                                             \
            int32_t left = hdv - i0 - 16 * c;                                                      \
            mk[c] = left >= 16  ? (__mmask16)0xffff                                                \
                    : left <= 0 ? (__mmask16)0                                                     \
                                : (__mmask16)((1u << left) - 1);                                   \
            a[c] = _mm512_maskz_loadu_ps(mk[c], out + i0 + 16 * c);                                \
        }                                                                                          \
        for (int32_t p = 0; p < n; p++) {                                                          \
            __m512 wb = _mm512_set1_ps(w[p]);                                                      \
            const uint16_t *vp = v + (size_t)p * vs + i0;                                          \
            for (int c = 0; c < NV; c++)                                                           \
                a[c] = _mm512_fmadd_ps(                                                            \
                    wb, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk[c], vp + 16 * c)), a[c]);      \
        }                                                                                          \
        for (int c = 0; c < NV; c++) _mm512_mask_storeu_ps(out + i0 + 16 * c, mk[c], a[c]);        \
    }
ACCUM_PASS(8)
ACCUM_PASS(4)
ACCUM_PASS(2)
ACCUM_PASS(1)

static void accum_avx512(const float *w, const uint16_t *v, size_t vs, int32_t n, int32_t hdv,
                         float *out)
{
    int32_t i0 = 0;
    for (; hdv - i0 > 64; i0 += 128) accum_pass8(w, v, vs, n, i0, hdv, out);
    if (hdv - i0 > 32)
        accum_pass4(w, v, vs, n, i0, hdv, out);
    else if (hdv - i0 > 16)
        accum_pass2(w, v, vs, n, i0, hdv, out);
    else if (hdv - i0 > 0)
        accum_pass1(w, v, vs, n, i0, hdv, out);
}

#define GMAX 4 /* heads per grouped pass */

/* GN heads over positions [0, n8) (n8 a multiple of 8), hd a multiple of 8 (nb groups):
 * qd holds head g's duplicated query groups at qd[g * nb + j]. */
static inline __attribute__((always_inline)) void scores_grp(const __m512 *qd, int32_t nb, int GN,
                                                             const uint16_t *k, size_t ks,
                                                             int32_t n8, float scale, float *s,
                                                             size_t ss)
{
    const __m512i pick = _mm512_setr_epi32(0, 8, 16, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    for (int32_t p = 0; p < n8; p += 8) {
        const uint16_t *k0 = k + (size_t)p * ks;
        __m512 a[GMAX][4];
        for (int g = 0; g < GN; g++)
            for (int i = 0; i < 4; i++) a[g][i] = _mm512_setzero_ps();
        for (int32_t j = 0; j < nb; j++) {
            const uint16_t *kj = k0 + 8 * j;
            __m512 k01 = load_pair(kj, kj + ks), k23 = load_pair(kj + 2 * ks, kj + 3 * ks);
            __m512 k45 = load_pair(kj + 4 * ks, kj + 5 * ks),
                   k67 = load_pair(kj + 6 * ks, kj + 7 * ks);
            for (int g = 0; g < GN; g++) {
                __m512 qv = qd[g * nb + j];
                a[g][0] = _mm512_fmadd_ps(qv, k01, a[g][0]);
                a[g][1] = _mm512_fmadd_ps(qv, k23, a[g][1]);
                a[g][2] = _mm512_fmadd_ps(qv, k45, a[g][2]);
                a[g][3] = _mm512_fmadd_ps(qv, k67, a[g][3]);
            }
        }
        for (int g = 0; g < GN; g++) {
            __m512 c01 = _mm512_permutex2var_ps(combine8x2(a[g][0]), pick, combine8x2(a[g][1]));
            __m512 c23 = _mm512_permutex2var_ps(combine8x2(a[g][2]), pick, combine8x2(a[g][3]));
            __m256 d = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm512_castps512_ps128(c01)),
                                            _mm512_castps512_ps128(c23), 1);
            _mm256_storeu_ps(s + (size_t)g * ss + p, _mm256_mul_ps(d, _mm256_set1_ps(scale)));
        }
    }
}

static void scores_g_avx512(const float *q, size_t qs, int32_t G, const uint16_t *k, size_t ks,
                            int32_t n, int32_t hd, float scale, float *s, size_t ss)
{
    assert(hd > 0 && hd <= BR_ATTN_MAX_HEAD_DIM);
    int32_t n8 = hd % 8 == 0 ? n / 8 * 8 : 0, nb = hd / 8;
    for (int32_t g0 = 0; g0 < G; g0 += GMAX) {
        int gn = G - g0 < GMAX ? (int)(G - g0) : GMAX;
        if (n8 > 0) {
            __m512 qd[GMAX * (BR_ATTN_MAX_HEAD_DIM / 8)];
            for (int g = 0; g < gn; g++)
                for (int32_t j = 0; j < nb; j++) {
                    __m256 v = _mm256_loadu_ps(q + (size_t)(g0 + g) * qs + 8 * (size_t)j);
                    qd[g * nb + j] = _mm512_insertf32x8(_mm512_castps256_ps512(v), v, 1);
                }
            float *sg = s + (size_t)g0 * ss;
            switch (gn) {
            case 1:
                scores_grp(qd, nb, 1, k, ks, n8, scale, sg, ss);
                break;
            case 2:
                scores_grp(qd, nb, 2, k, ks, n8, scale, sg, ss);
                break;
            case 3:
                scores_grp(qd, nb, 3, k, ks, n8, scale, sg, ss);
                break;
            default:
                scores_grp(qd, nb, 4, k, ks, n8, scale, sg, ss);
                break;
            }
        }
        if (n8 < n) /* the last positions (or a head_dim the grouped loop does not take) */
            for (int g = 0; g < gn; g++)
                scores_avx512(q + (size_t)(g0 + g) * qs, k + (size_t)n8 * ks, ks, n - n8, hd, scale,
                              s + (size_t)(g0 + g) * ss + n8);
    }
}

/* Output values [i0, i0 + 64) (masked to hdv) of GN heads over all n positions. */
static inline __attribute__((always_inline)) void accum_grp(const float *w, size_t ws, int GN,
                                                            const uint16_t *v, size_t vs, int32_t n,
                                                            int32_t i0, int32_t hdv, float *out,
                                                            size_t os)
{
    __m512 a[GMAX][4];
    __mmask16 mk[4];
    for (int c = 0; c < 4; c++) {
        int32_t left = hdv - i0 - 16 * c;
        mk[c] = left >= 16  ? (__mmask16)0xffff
                : left <= 0 ? (__mmask16)0
                            : (__mmask16)((1u << left) - 1);
        for (int g = 0; g < GN; g++)
            a[g][c] = _mm512_maskz_loadu_ps(mk[c], out + (size_t)g * os + i0 + 16 * c);
    }
    for (int32_t p = 0; p < n; p++) {
        const uint16_t *vp = v + (size_t)p * vs + i0;
        __m512 vv[4];
        for (int c = 0; c < 4; c++)
            vv[c] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk[c], vp + 16 * c));
        for (int g = 0; g < GN; g++) {
            __m512 wb = _mm512_set1_ps(w[(size_t)g * ws + (size_t)p]);
            for (int c = 0; c < 4; c++) a[g][c] = _mm512_fmadd_ps(wb, vv[c], a[g][c]);
        }
    }
    for (int g = 0; g < GN; g++)
        for (int c = 0; c < 4; c++)
            _mm512_mask_storeu_ps(out + (size_t)g * os + i0 + 16 * c, mk[c], a[g][c]);
}

static void accum_g_avx512(const float *w, size_t ws, int32_t G, const uint16_t *v, size_t vs,
                           int32_t n, int32_t hdv, float *out, size_t os)
{
    for (int32_t g0 = 0; g0 < G; g0 += GMAX) {
        int gn = G - g0 < GMAX ? (int)(G - g0) : GMAX;
        const float *wg = w + (size_t)g0 * ws;
        float *og = out + (size_t)g0 * os;
        for (int32_t i0 = 0; i0 < hdv; i0 += 64) switch (gn) {
            case 1:
                accum_grp(wg, ws, 1, v, vs, n, i0, hdv, og, os);
                break;
            case 2:
                accum_grp(wg, ws, 2, v, vs, n, i0, hdv, og, os);
                break;
            case 3:
                accum_grp(wg, ws, 3, v, vs, n, i0, hdv, og, os);
                break;
            default:
                accum_grp(wg, ws, 4, v, vs, n, i0, hdv, og, os);
                break;
            }
    }
}

/* F16C rounds to nearest even with rounding mode 0, like br_f32_to_f16. */
static void to_f16_avx512(const float *x, int32_t n, uint16_t *h)
{
    int32_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((void *)(h + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), 0));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(h + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), 0));
    }
}

static void round_f16_avx512(float *x, int32_t n)
{
    int32_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(x + i), 0)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), 0));
        _mm512_mask_storeu_ps(x + i, m, v);
    }
}

const struct br_attn_ops br_attn_avx512 = {
    .name = "avx512",
    .scores = scores_avx512,
    .accum = accum_avx512,
    .scores_g = scores_g_avx512,
    .accum_g = accum_g_avx512,
    .to_f16 = to_f16_avx512,
    .round_f16 = round_f16_avx512,
};
