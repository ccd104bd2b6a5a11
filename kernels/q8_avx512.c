/*
 * Q8_0 head kernels for AVX-512 with VNNI: the shared x86 code of q8_x86.h with the
 * 4-byte-group dot done by one vpdpbusd (u8 x s8, summed into int32 without saturation).
 */
#include <immintrin.h>

static inline __m256i q8_pdot_vnni(__m256i aw, __m256i sx)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
}
#define Q8_PDOT(aw, sx) q8_pdot_vnni(aw, sx)

#include "kernels/q8_x86.h"

const struct br_q8_ops br_q8_ops_avx512 = {
    .name = "avx512",
    .gemv = q8_gemv_x86,
    .gemm = q8_gemm_x86,
};
