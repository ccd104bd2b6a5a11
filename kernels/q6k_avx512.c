/*
 * Q6_K kernels with AVX-512 VNNI: q6k_x86.h with the 4-byte-group dot done by one vpdpbusd
 * (256-bit, AVX-512 VL) accumulating onto the correction.
 */
#include <immintrin.h>

#define Q6_EDOT(u, x, c) _mm256_dpbusd_epi32(c, u, x)

#include "kernels/q6k_x86.h"

void br_q6k_gemm_avx512(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                        const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                        float *y, size_t y_stride);
void br_q6k_gemm_avx512(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                        const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                        float *y, size_t y_stride)
{
    q6k_gemm_x86(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
}
