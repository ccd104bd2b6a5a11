/*
 * AVX2 (with FMA and F16C) attention kernels (attn.h), bit-identical to the scalar
 * reference.
 *
 * Scores: one 256-bit accumulator is exactly the 8 canonical lanes of one position; four
 * positions run side by side to cover the FMA latency. A head_dim tail is zero-padded in
 * a copy of the query and the key, and its FMA result is blended in only on the lanes the
 * reference touches (an FMA with zeros could turn a -0 lane into +0).
 *
 * Accumulation: passes of up to 64 output floats (8 registers) stay in registers while
 * the positions stream past; each lane is its own chain over p.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/combine_x86.h"

static inline __m256 load8(const uint16_t *a)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const void *)a));
}

/* The first `rem` (< 8) f16 values at a, zero-padded, widened. */
static inline __m256 load_tail(const uint16_t *a, int32_t rem)
{
    uint16_t t[8] = {0};
    memcpy(t, a, (size_t)rem * sizeof *t);
    return load8(t);
}

static void scores_avx2(const float *q, const uint16_t *k, size_t ks, int32_t n, int32_t hd,
                        float scale, float *s)
{
    int32_t nb = hd / 8, rem = hd % 8;
    float qt[8] = {0};
    if (rem) memcpy(qt, q + 8 * nb, (size_t)rem * sizeof *qt);
    __m256 qtail = _mm256_loadu_ps(qt);
    __m256 tmask = _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    int32_t p = 0;
    for (; p + 4 <= n; p += 4) {
        const uint16_t *k0 = k + (size_t)p * ks;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int32_t j = 0; j < nb; j++) {
            __m256 qj = _mm256_loadu_ps(q + 8 * j);
            const uint16_t *kj = k0 + 8 * j;
            a0 = _mm256_fmadd_ps(qj, load8(kj), a0);
            a1 = _mm256_fmadd_ps(qj, load8(kj + ks), a1);
            a2 = _mm256_fmadd_ps(qj, load8(kj + 2 * ks), a2);
            a3 = _mm256_fmadd_ps(qj, load8(kj + 3 * ks), a3);
        }
        if (rem) {
            const uint16_t *kj = k0 + 8 * nb;
            a0 = _mm256_blendv_ps(a0, _mm256_fmadd_ps(qtail, load_tail(kj, rem), a0), tmask);
            a1 = _mm256_blendv_ps(a1, _mm256_fmadd_ps(qtail, load_tail(kj + ks, rem), a1), tmask);
            a2 = _mm256_blendv_ps(a2, _mm256_fmadd_ps(qtail, load_tail(kj + 2 * ks, rem), a2),
                                  tmask);
            a3 = _mm256_blendv_ps(a3, _mm256_fmadd_ps(qtail, load_tail(kj + 3 * ks, rem), a3),
                                  tmask);
        }
        s[p] = br_combine8_m256(a0) * scale;
        s[p + 1] = br_combine8_m256(a1) * scale;
        s[p + 2] = br_combine8_m256(a2) * scale;
        s[p + 3] = br_combine8_m256(a3) * scale;
    }
    for (; p < n; p++) {
        const uint16_t *kp = k + (size_t)p * ks;
        __m256 a = _mm256_setzero_ps();
        for (int32_t j = 0; j < nb; j++)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * j), load8(kp + 8 * j), a);
        if (rem)
            a = _mm256_blendv_ps(a, _mm256_fmadd_ps(qtail, load_tail(kp + 8 * nb, rem), a), tmask);
        s[p] = br_combine8_m256(a) * scale;
    }
}

/* Output values [i0, i0 + 8 * NV), all within hdv, over all n positions. */
#define ACCUM_PASS(NV)                                                                             \
    static inline void accum_pass##NV(const float *w, const uint16_t *v, size_t vs, int32_t n,     \
                                      int32_t i0, float *out)                                      \
    {                                                                                              \
        __m256 a[NV];                                                                              \
        for (int c = 0; c < NV; c++) a[c] = _mm256_loadu_ps(out + i0 + 8 * c);                     \
        for (int32_t p = 0; p < n; p++) {                                                          \
            __m256 wb = _mm256_set1_ps(w[p]);                                                      \
            const uint16_t *vp = v + (size_t)p * vs + i0;                                          \
            for (int c = 0; c < NV; c++) a[c] = _mm256_fmadd_ps(wb, load8(vp + 8 * c), a[c]);      \
        }                                                                                          \
        for (int c = 0; c < NV; c++) _mm256_storeu_ps(out + i0 + 8 * c, a[c]);                     \
    }
ACCUM_PASS(8)
ACCUM_PASS(4)
ACCUM_PASS(2)
ACCUM_PASS(1)

static void accum_avx2(const float *w, const uint16_t *v, size_t vs, int32_t n, int32_t hdv,
                       float *out)
{
    int32_t i0 = 0;
    for (; i0 + 64 <= hdv; i0 += 64) accum_pass8(w, v, vs, n, i0, out);
    if (i0 + 32 <= hdv) accum_pass4(w, v, vs, n, i0, out), i0 += 32;
    if (i0 + 16 <= hdv) accum_pass2(w, v, vs, n, i0, out), i0 += 16;
    if (i0 + 8 <= hdv) accum_pass1(w, v, vs, n, i0, out), i0 += 8;
    for (; i0 < hdv; i0++) /* fewer than 8 left: scalar with hardware FMA */
        for (int32_t p = 0; p < n; p++) {
            float x = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(v[(size_t)p * vs + i0])));
            out[i0] =
                _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(w[p]), _mm_set_ss(x), _mm_set_ss(out[i0])));
        }
}

/* F16C rounds to nearest even with rounding mode 0, like br_f32_to_f16. */
static void to_f16_avx2(const float *x, int32_t n, uint16_t *h)
{
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((void *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), 0));
    for (; i < n; i++) h[i] = (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x[i]), 0), 0);
}

static void round_f16_avx2(float *x, int32_t n)
{
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), 0)));
    for (; i < n; i++) x[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(x[i]), 0)));
}

const struct br_attn_ops br_attn_avx2 = {
    .name = "avx2",
    .scores = scores_avx2,
    .accum = accum_avx2,
    .to_f16 = to_f16_avx2,
    .round_f16 = round_f16_avx2,
};
