/* F16/BF16 head kernels for AVX2 with FMA and F16C: fhead_x86.h. */
#include "kernels/fhead_x86.h"

void br_fhead_gemm_avx2(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                        const float *x, size_t x_stride, float *y, size_t y_stride);
void br_fhead_gemm_avx2(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                        const float *x, size_t x_stride, float *y, size_t y_stride)
{
    fh_gemm_x86(m, r0, r1, ntok, x, x_stride, y, y_stride);
}
