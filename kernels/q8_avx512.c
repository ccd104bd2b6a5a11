/*
 * Q8_0 head kernels for AVX-512 with VNNI: the shared x86 code of q8_x86.h with the
 * 4-byte-group dot done by one vpdpbusd (u8 x s8, summed into int32 without saturation),
 * and a GEMM of its own for many tokens.
 *
 * GEMM: activations are offset to unsigned once per call, u = q + 128 (q ^ 0x80), so
 * vpdpbusd(c, u, w) = c + sum (q + 128) w; starting it from c = -128 * sum w (per lane,
 * computed once per weight block for 8 tokens) leaves exactly sum q w, the canonical lane
 * sum, without the per-token sign step. Eight tokens share each weight block.
 */
#include <immintrin.h>
#include <stdlib.h>

static inline __m256i q8_pdot_vnni(__m256i aw, __m256i sx)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
}
#define Q8_PDOT(aw, sx) q8_pdot_vnni(aw, sx)

#include "kernels/q8_x86.h"

#define VNNI_TOK 8 /* tokens sharing a weight block */

/* Row r of m against n <= VNNI_TOK tokens of offset activations u (token t at
 * u + t * cols); y[t * y_stride]. */
static inline void vnni_tile(const struct br_q8mat *m, int64_t r, int n, const uint8_t *u,
                             const float *dx, size_t dx_stride, float *y, size_t y_stride)
{
    const int32_t nb = m->nb;
    const size_t cols = (size_t)m->cols;
    const int8_t *w = m->qs + (size_t)r * cols;
    const uint16_t *d = m->d + (size_t)r * (size_t)nb;
    const __m256i k128 = _mm256_set1_epi8((char)0x80), zero = _mm256_setzero_si256();
    __m256 acc[VNNI_TOK];
    _Alignas(32) float s[VNNI_TOK][8];
    for (int t = 0; t < VNNI_TOK; t++) acc[t] = _mm256_setzero_ps();
    int32_t b0 = 0;
    for (; b0 + 8 <= nb; b0 += 8) {
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(d + b0)));
        for (int t = 0; t < n; t++)
            _mm256_store_ps(s[t],
                            _mm256_mul_ps(dw, _mm256_loadu_ps(dx + (size_t)t * dx_stride + b0)));
        for (int j = 0; j < 8; j++) {
            size_t k = 32 * (size_t)(b0 + j);
            __m256i v = q8_load(w + k);
            __m256i nc = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, k128, v));
            for (int t = 0; t < n; t++) {
                __m256i x = _mm256_load_si256((const __m256i *)(const void *)(u + t * cols + k));
                __m256i p = _mm256_dpbusd_epi32(nc, x, v);
                acc[t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&s[t][j]), acc[t]);
            }
        }
    }
    for (; b0 < nb; b0++) { /* the last nb % 8 blocks */
        size_t k = 32 * (size_t)b0;
        __m256i v = q8_load(w + k);
        __m256i nc = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, k128, v));
        __m256 sw = _mm256_set1_ps(q8_f16(d[b0]));
        for (int t = 0; t < n; t++) {
            __m256i x = _mm256_load_si256((const __m256i *)(const void *)(u + t * cols + k));
            __m256i p = _mm256_dpbusd_epi32(nc, x, v);
            __m256 sc = _mm256_mul_ps(sw, _mm256_broadcast_ss(dx + (size_t)t * dx_stride + b0));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[t]);
        }
    }
    for (int t = 0; t < n; t++) y[(size_t)t * y_stride] = q8_hsum_canonical(acc[t]);
}

static void vnni_tile_full(const struct br_q8mat *m, int64_t r, const uint8_t *u, const float *dx,
                           size_t dx_stride, float *y, size_t y_stride)
{
    vnni_tile(m, r, VNNI_TOK, u, dx, dx_stride, y, y_stride);
}

static void vnni_tile_part(const struct br_q8mat *m, int64_t r, int n, const uint8_t *u,
                           const float *dx, size_t dx_stride, float *y, size_t y_stride)
{
    vnni_tile(m, r, n, u, dx, dx_stride, y, y_stride);
}

static void q8_gemm_vnni(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok,
                         const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                         float *y, size_t y_stride)
{
    size_t cols = (size_t)m->cols;
    uint8_t *u = ntok > 1 ? aligned_alloc(32, (size_t)ntok * cols) : NULL;
    if (!u) { /* one token, or no memory for the offset copy: the shared path */
        q8_gemm_x86(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
        return;
    }
    const __m256i k128 = _mm256_set1_epi8((char)0x80);
    for (int32_t t = 0; t < ntok; t++)
        for (size_t k = 0; k < cols; k += 32) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(q + t * q_stride + k));
            _mm256_store_si256((__m256i *)(void *)(u + t * cols + k), _mm256_xor_si256(x, k128));
        }
    for (int64_t r = r0; r < r1; r++)
        for (int32_t t0 = 0; t0 < ntok; t0 += VNNI_TOK) {
            int n = ntok - t0 < VNNI_TOK ? ntok - t0 : VNNI_TOK;
            const uint8_t *ut = u + (size_t)t0 * cols;
            const float *dt = dx + (size_t)t0 * dx_stride;
            float *yt = y + (size_t)t0 * y_stride + (size_t)(r - r0);
            if (n == VNNI_TOK)
                vnni_tile_full(m, r, ut, dt, dx_stride, yt, y_stride);
            else
                vnni_tile_part(m, r, n, ut, dt, dx_stride, yt, y_stride);
        }
    free(u);
}

const struct br_q8_ops br_q8_ops_avx512 = {
    .name = "avx512",
    .gemv = q8_gemv_x86,
    .gemm = q8_gemm_vnni,
};
