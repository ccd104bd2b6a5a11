/*
 * Q6_K matrices: the scalar reference product (q6k.h documents the order) and the
 * dispatch to the variant matching the ternary kernels the process runs.
 */
#include "kernels/q6k.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "bitrack/fp.h"
#include "bitrack/status.h"
#include "kernels/kernel_impl.h"
#include "kernels/kset.h"
#include "kernels/q8_impl.h"

int br_q6kmat_view(struct br_q6kmat *m, const void *data, int64_t rows, int32_t cols)
{
    memset(m, 0, sizeof *m);
    if (rows < 0 || cols <= 0 || cols % BR_Q6K_BLOCK) return BR_E_INVALID;
    m->data = data;
    m->rows = rows;
    m->cols = cols;
    m->nsb = cols / BR_Q6K_BLOCK;
    m->row_bytes = (size_t)m->nsb * BR_Q6K_BLOCK_BYTES;
    return BR_OK;
}

/* u_k of q6k.h for value k of the super-block at blk */
static int q6k_u(const uint8_t *blk, int k)
{
    int h = k / 128, g = (k % 128) / 32, l = k % 32;
    int lo = (blk[64 * h + 32 * (g & 1) + l] >> (4 * (g >> 1))) & 15;
    int hi = (blk[128 + 32 * h + l] >> (2 * g)) & 3;
    return lo | hi << 4;
}

static float dot_ref(const struct br_q6kmat *m, int64_t r, const int8_t *q, const float *dx)
{
    const uint8_t *row = m->data + (size_t)r * m->row_bytes;
    float acc[8] = {0};
    for (int32_t b = 0; b < m->nsb * 8; b++) {
        const uint8_t *blk = row + (size_t)(b / 8) * BR_Q6K_BLOCK_BYTES;
        const int8_t *sc = (const int8_t *)(blk + 192);
        float s = br_f16_to_f32((uint16_t)(blk[208] | blk[209] << 8)) * dx[b];
        for (int j = 0; j < 8; j++) {
            int k0 = 32 * (b % 8) + 4 * j; /* within the super-block */
            int32_t e = 0;
            for (int i = 0; i < 4; i++) {
                int8_t x = q[32 * (size_t)b + 4 * (size_t)j + (size_t)i];
                assert(x != -128);
                e += (q6k_u(blk, k0 + i) - 32) * (int32_t)x;
            }
            acc[j] = fmaf((float)e * (float)sc[k0 / 16], s, acc[j]);
        }
    }
    return br_q8_combine8(acc);
}

void br_q6k_gemm_ref(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                     const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride, float *y,
                     size_t y_stride)
{
    for (int32_t t = 0; t < ntok; t++)
        for (int64_t r = r0; r < r1; r++)
            y[(size_t)t * y_stride + (size_t)(r - r0)] =
                dot_ref(m, r, q + (size_t)t * q_stride, dx + (size_t)t * dx_stride);
}

#if defined(BR_HAVE_AVX2)
void br_q6k_gemm_avx2(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                      const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride, float *y,
                      size_t y_stride);
#endif
#if defined(BR_HAVE_AVX512)
void br_q6k_gemm_avx512(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                        const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                        float *y, size_t y_stride);
#endif
#if defined(BR_HAVE_NEON)
void br_q6k_gemm_neon_dot(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                          const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                          float *y, size_t y_stride);
void br_q6k_gemm_neon_plain(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                            const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                            float *y, size_t y_stride);
#endif

br_q6k_gemm_fn br_q6k_find(const char *name)
{
    if (!br_kernels_find(name)) return NULL;
#if defined(BR_HAVE_AVX2)
    if (strcmp(name, "avx2") == 0) return br_q6k_gemm_avx2;
#endif
#if defined(BR_HAVE_AVX512)
    if (strcmp(name, "avx512") == 0) return br_q6k_gemm_avx512;
#endif
#if defined(BR_HAVE_NEON)
    if (strcmp(name, "neon") == 0)
        return br_cpu_has_dotprod() ? br_q6k_gemm_neon_dot : br_q6k_gemm_neon_plain;
    if (strcmp(name, "neon-nodot") == 0) return br_q6k_gemm_neon_plain;
#endif
    return br_q6k_gemm_ref;
}

void br_q6k_gemm(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok, const int8_t *q,
                 size_t q_stride, const float *dx, size_t dx_stride, float *y, size_t y_stride)
{
    br_kernel_set_active()->q6k(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
}
