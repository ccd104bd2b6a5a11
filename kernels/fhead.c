/*
 * F16/BF16 head rows: the scalar reference (fhead.h documents the order) and the dispatch
 * to the variant matching the ternary kernels the process runs.
 */
#include "kernels/fhead.h"
#include "kernels/kset.h"

#include <math.h>
#include <string.h>

#include "bitrack/fp.h"
#include "kernels/kernel_impl.h"

static float dot_ref(const struct br_fhead *m, int64_t r, const float *x)
{
    const uint8_t *row = m->data + (size_t)r * m->row_bytes;
    float l[8] = {0};
    for (int32_t k = 0; k < m->cols; k++) {
        uint16_t h = (uint16_t)(row[2 * k] | row[2 * k + 1] << 8);
        float w = m->bf16 ? br_bf16_to_f32(h) : br_f16_to_f32(h);
        l[k % 8] = fmaf(w, x[k], l[k % 8]);
    }
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

void br_fhead_gemm_ref(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                       const float *x, size_t x_stride, float *y, size_t y_stride)
{
    for (int32_t t = 0; t < ntok; t++)
        for (int64_t r = r0; r < r1; r++)
            y[(size_t)t * y_stride + (size_t)(r - r0)] = dot_ref(m, r, x + (size_t)t * x_stride);
}

#if defined(BR_HAVE_AVX2)
void br_fhead_gemm_avx2(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                        const float *x, size_t x_stride, float *y, size_t y_stride);
#endif
#if defined(BR_HAVE_AVX512)
void br_fhead_gemm_avx512(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                          const float *x, size_t x_stride, float *y, size_t y_stride);
#endif
#if defined(BR_HAVE_NEON)
void br_fhead_gemm_neon(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok,
                        const float *x, size_t x_stride, float *y, size_t y_stride);
#endif

br_fhead_gemm_fn br_fhead_find(const char *name)
{
    if (!br_kernels_find(name)) return NULL;
#if defined(BR_HAVE_AVX2)
    if (strcmp(name, "avx2") == 0) return br_fhead_gemm_avx2;
#endif
#if defined(BR_HAVE_AVX512)
    if (strcmp(name, "avx512") == 0) return br_fhead_gemm_avx512;
#endif
#if defined(BR_HAVE_NEON)
    /* plain NEON: the same kernel with or without the dot-product extension */
    if (strcmp(name, "neon") == 0 || strcmp(name, "neon-nodot") == 0) return br_fhead_gemm_neon;
#endif
    return br_fhead_gemm_ref;
}

void br_fhead_gemm(const struct br_fhead *m, int64_t r0, int64_t r1, int32_t ntok, const float *x,
                   size_t x_stride, float *y, size_t y_stride)
{
    br_kernel_set_active()->fhead(m, r0, r1, ntok, x, x_stride, y, y_stride);
}
