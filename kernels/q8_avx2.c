/*
 * Q8_0 head kernels for AVX2 (with FMA, F16C): the shared x86 code of q8_x86.h with the
 * 4-byte-group dot done as maddubs (u8 x s8 pairs to int16, exact here) + madd with ones.
 */
#include <immintrin.h>

static inline __m256i q8_pdot_avx2(__m256i aw, __m256i sx)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1));
}
#define Q8_PDOT(aw, sx) q8_pdot_avx2(aw, sx)

#include "kernels/q8_x86.h"

const struct br_q8_ops br_q8_ops_avx2 = {
    .name = "avx2",
    .gemv = q8_gemv_x86,
    .gemm = q8_gemm_x86,
};
