/*
 * Q8_0 matrices: storage, repacking from GGUF blocks, the canonical activation
 * quantization and the scalar reference product (q8.h documents the order). The
 * dispatching entry points route to the table dispatch.c picks.
 */
#include "kernels/q8.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/fp.h"
#include "kernels/q8_impl.h"

int br_q8mat_init(struct br_q8mat *m, int64_t rows, int32_t cols)
{
    memset(m, 0, sizeof *m);
    if (rows <= 0 || cols <= 0 || cols % BR_Q8_BLOCK) return BR_E_INVALID;
    size_t qbytes = (size_t)rows * (size_t)cols;
    size_t alloc = (qbytes + 63) / 64 * 64;
    m->qs = aligned_alloc(64, alloc);
    m->d = calloc((size_t)rows * (size_t)(cols / BR_Q8_BLOCK), sizeof *m->d);
    if (!m->qs || !m->d) {
        free(m->qs);
        free(m->d);
        memset(m, 0, sizeof *m);
        return BR_E_NOMEM;
    }
    memset(m->qs, 0, alloc);
    m->rows = rows;
    m->cols = cols;
    m->nb = cols / BR_Q8_BLOCK;
    return BR_OK;
}

void br_q8mat_free(struct br_q8mat *m)
{
    if (!m) return;
    free(m->qs);
    free(m->d);
    memset(m, 0, sizeof *m);
}

void br_q8mat_set_rows_ggml(struct br_q8mat *m, int64_t r0, int64_t n, const uint8_t *blocks)
{
    assert(r0 >= 0 && n >= 0 && r0 + n <= m->rows);
    size_t nblk = (size_t)n * (size_t)m->nb, first = (size_t)r0 * (size_t)m->nb;
    for (size_t b = 0; b < nblk; b++) {
        const uint8_t *src = blocks + b * BR_Q8_BLOCK_BYTES;
        m->d[first + b] = (uint16_t)(src[0] | src[1] << 8);
        memcpy(m->qs + (first + b) * BR_Q8_BLOCK, src + 2, BR_Q8_BLOCK);
    }
}

void br_q8_quantize_act(const float *x, int32_t n, int8_t *q, float *dx)
{
    assert(n % BR_Q8_BLOCK == 0);
    for (int32_t b = 0; b < n / BR_Q8_BLOCK; b++) {
        const float *xb = x + (size_t)b * BR_Q8_BLOCK;
        float a = 0.0f;
        for (int i = 0; i < BR_Q8_BLOCK; i++) a = fmaxf(a, fabsf(xb[i]));
        float inv = a > 0.0f ? 127.0f / a : 0.0f;
        for (int i = 0; i < BR_Q8_BLOCK; i++) {
            /* |x * inv| <= 127 up to one rounding, which nearbyintf and the clamp absorb */
            float v = nearbyintf(xb[i] * inv);
            q[b * BR_Q8_BLOCK + i] = (int8_t)fminf(127.0f, fmaxf(-127.0f, v));
        }
        dx[b] = a / 127.0f;
    }
}

static float dot_ref(const struct br_q8mat *m, int64_t r, const int8_t *q, const float *dx)
{
    const int8_t *w = m->qs + (size_t)r * (size_t)m->cols;
    const uint16_t *d = m->d + (size_t)r * (size_t)m->nb;
    float acc[8] = {0};
    for (int32_t b = 0; b < m->nb; b++) {
        float s = br_f16_to_f32(d[b]) * dx[b];
        for (int j = 0; j < 8; j++) {
            int32_t p = 0;
            for (int i = 0; i < 4; i++) {
                size_t k = (size_t)b * BR_Q8_BLOCK + 4 * (size_t)j + (size_t)i;
                assert(q[k] != -128);
                p += (int32_t)w[k] * (int32_t)q[k];
            }
            acc[j] = fmaf((float)p, s, acc[j]);
        }
    }
    return br_q8_combine8(acc);
}

void br_q8_gemv_ref(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q,
                    const float *dx, float *y)
{
    for (int64_t r = r0; r < r1; r++) y[r - r0] = dot_ref(m, r, q, dx);
}

void br_q8_gemm_ref(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok, const int8_t *q,
                    size_t q_stride, const float *dx, size_t dx_stride, float *y, size_t y_stride)
{
    for (int32_t t = 0; t < ntok; t++)
        br_q8_gemv_ref(m, r0, r1, q + (size_t)t * q_stride, dx + (size_t)t * dx_stride,
                       y + (size_t)t * y_stride);
}

const struct br_q8_ops br_q8_ops_ref = {
    .name = "ref",
    .gemv = br_q8_gemv_ref,
    .gemm = br_q8_gemm_ref,
};

void br_q8_gemv(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q, const float *dx,
                float *y)
{
    br_q8_ops_active()->gemv(m, r0, r1, q, dx, y);
}

void br_q8_gemm(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok, const int8_t *q,
                size_t q_stride, const float *dx, size_t dx_stride, float *y, size_t y_stride)
{
    br_q8_ops_active()->gemm(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
}
