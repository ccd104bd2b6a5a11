/*
 * Q8_0 matrices: storage, repacking from GGUF blocks, the canonical activation
 * quantization and the scalar reference product (q8.h documents the order). The
 * dispatching entry points route to the table dispatch.c picks.
 */
#include "kernels/q8.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/fp.h"
#include "kernels/bigmem.h"
#include "kernels/q8_impl.h"
#include "kernels/scratch.h"

int br_q8mat_init(struct br_q8mat *m, int64_t rows, int32_t cols)
{
    memset(m, 0, sizeof *m);
    if (rows <= 0 || cols <= 0 || cols % BR_Q8_BLOCK) return BR_E_INVALID;
    int32_t nb = cols / BR_Q8_BLOCK, ng = (nb + BR_Q8_GROUP - 1) / BR_Q8_GROUP;
    size_t row_bytes = (size_t)ng * BR_Q8_GROUP_BYTES;
    if ((size_t)rows > SIZE_MAX / row_bytes) return BR_E_NOMEM;
    m->qs = br_big_alloc((size_t)rows * row_bytes); /* streamed per token: huge pages */
    m->d = calloc((size_t)rows * (size_t)ng * BR_Q8_GROUP, sizeof *m->d);
    if (!m->qs || !m->d) {
        br_big_free(m->qs, (size_t)rows * row_bytes);
        free(m->d);
        memset(m, 0, sizeof *m);
        return BR_E_NOMEM;
    }
    memset(m->qs, 0x80, (size_t)rows * row_bytes); /* weight 0, offset */
    m->rows = rows;
    m->cols = cols;
    m->nb = nb;
    m->ng = ng;
    m->row_bytes = row_bytes;
    return BR_OK;
}

void br_q8mat_free(struct br_q8mat *m)
{
    if (!m) return;
    br_big_free(m->qs, (size_t)m->rows * m->row_bytes);
    free(m->d);
    memset(m, 0, sizeof *m);
}

void br_q8mat_set_rows_ggml(struct br_q8mat *m, int64_t r0, int64_t n, const uint8_t *blocks)
{
    assert(r0 >= 0 && n >= 0 && r0 + n <= m->rows);
    for (int64_t r = r0; r < r0 + n; r++)
        for (int32_t b = 0; b < m->nb; b++) {
            const uint8_t *src =
                blocks + ((size_t)(r - r0) * (size_t)m->nb + (size_t)b) * BR_Q8_BLOCK_BYTES;
            *br_q8mat_scale(m, r, b) = (uint16_t)(src[0] | src[1] << 8);
            uint8_t *dst = m->qs + br_q8mat_offset(m, r, b * BR_Q8_BLOCK);
            for (int i = 0; i < BR_Q8_BLOCK / 4; i++) {
                uint32_t v;
                memcpy(&v, src + 2 + 4 * i, 4);
                v ^= 0x80808080u;
                memcpy(dst + 64 * i, &v, 4);
            }
        }
}

void br_q8_group_act(const struct br_q8mat *m, const int8_t *q, const float *dx, int8_t *qg,
                     int32_t *nsum, float *dxg)
{
    int32_t lanes = m->ng * BR_Q8_GROUP;
    for (int32_t b = m->nb; b < lanes; b++) { /* padding: value 0, scale 0 */
        int8_t *dst =
            qg + (size_t)(b / BR_Q8_GROUP) * BR_Q8_GROUP_BYTES + (size_t)(b % BR_Q8_GROUP) * 4;
        for (int i = 0; i < BR_Q8_BLOCK / 4; i++) memset(dst + 64 * i, 0, 4);
        nsum[b] = 0;
        dxg[b] = 0.0f;
    }
    for (int32_t b = 0; b < m->nb; b++) {
        const int8_t *src = q + (size_t)b * BR_Q8_BLOCK;
        int8_t *dst =
            qg + (size_t)(b / BR_Q8_GROUP) * BR_Q8_GROUP_BYTES + (size_t)(b % BR_Q8_GROUP) * 4;
        int32_t sum = 0;
        for (int i = 0; i < BR_Q8_BLOCK; i++) sum += src[i];
        for (int i = 0; i < BR_Q8_BLOCK / 4; i++) memcpy(dst + 64 * i, src + 4 * i, 4);
        nsum[b] = -128 * sum;
        dxg[b] = dx[b];
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

int br_q8_acts_group(const struct br_q8mat *m, int32_t ntok, const int8_t *q, size_t q_stride,
                     const float *dx, size_t dx_stride, struct br_q8_acts *a)
{
    a->lanes = (size_t)m->ng * BR_Q8_GROUP;
    a->qg = br_kernel_scratch(0, (size_t)ntok * m->row_bytes);
    a->nsum = br_kernel_scratch(1, (size_t)ntok * a->lanes * sizeof *a->nsum);
    a->dxg = br_kernel_scratch(2, (size_t)ntok * a->lanes * sizeof *a->dxg);
    if (!a->qg || !a->nsum || !a->dxg) {
        br_q8_acts_free(a);
        return BR_E_NOMEM;
    }
    for (int32_t t = 0; t < ntok; t++)
        br_q8_group_act(m, q + (size_t)t * q_stride, dx + (size_t)t * dx_stride,
                        a->qg + (size_t)t * m->row_bytes, a->nsum + (size_t)t * a->lanes,
                        a->dxg + (size_t)t * a->lanes);
    return BR_OK;
}

void br_q8_acts_free(struct br_q8_acts *a)
{
    memset(a, 0, sizeof *a); /* the buffers are the thread's scratch (kernels/scratch.h) */
}

static float dot_ref(const struct br_q8mat *m, int64_t r, const int8_t *q, const float *dx)
{
    float acc[BR_Q8_GROUP] = {0};
    for (int32_t b = 0; b < m->nb; b++) {
        int32_t p = 0;
        for (int i = 0; i < BR_Q8_BLOCK; i++) {
            int32_t c = b * BR_Q8_BLOCK + i;
            assert(q[c] != -128);
            p += (int32_t)br_q8mat_get(m, r, c) * (int32_t)q[c];
        }
        float s = br_f16_to_f32(*br_q8mat_scale(m, r, b)) * dx[b];
        acc[b % BR_Q8_GROUP] = fmaf((float)p, s, acc[b % BR_Q8_GROUP]);
    }
    return br_q8_combine16(acc);
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
