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
    .to_f16 = to_f16_avx512,
    .round_f16 = round_f16_avx512,
};
