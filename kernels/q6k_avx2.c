/*
 * Q6_K kernels for AVX2 (with FMA, F16C): q6k_x86.h with the 4-byte-group dot done as
 * maddubs (u8 x s8 pairs to int16, exact here) + madd with ones.
 */
#include <immintrin.h>

static inline __m256i q6k_edot_avx2(__m256i u, __m256i x, __m256i c)
{
    return _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)));
}
#define Q6_EDOT(u, x, c) q6k_edot_avx2(u, x, c)

#include "kernels/q6k_x86.h"

void br_q6k_gemm_avx2(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                      const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride, float *y,
                      size_t y_stride);
void br_q6k_gemm_avx2(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                      const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride, float *y,
                      size_t y_stride)
{
    q6k_gemm_x86(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
}
