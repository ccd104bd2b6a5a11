/*
 * Q8_0 head kernels for AVX-512 with VNNI: the shared x86 code of q8_x86.h with the
 * 4-byte-group dot done by one vpdpbusd (u8 x s8, summed into int32 without saturation),
 * and a GEMM of its own for many tokens.
 *
 * GEMM: activations are offset to unsigned once per call, u = q + 128 (q ^ 0x80), so
 * vpdpbusd(c, u, w) = c + sum (q + 128) w; starting it from c = -128 * sum w (per lane,
 * computed once per weight block for 8 tokens) leaves exactly sum q w, the canonical lane
 * sum, without the per-token sign step. Two tokens share one 512-bit register (their
 * 4-byte groups interleaved, the weights' doubled), so one vpdpbusd, one conversion and
 * one FMA serve both; each token keeps its own 8 canonical lanes. Eight tokens share each
 * weight block.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

static inline __m256i q8_pdot_vnni(__m256i aw, __m256i sx)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
}
#define Q8_PDOT(aw, sx) q8_pdot_vnni(aw, sx)

#include "kernels/q8_x86.h"

#define VNNI_PAIRS 4 /* token pairs sharing a weight block: 8 tokens */

/* Offset activations of a token pair, interleaved by 4-byte group: for block b, 64 bytes
 * holding group g of token 2p at dword 2g and of token 2p + 1 at dword 2g + 1. A zmm of
 * them against the block's weights with every dword doubled gives token 2p's canonical
 * lane g in int32 lane 2g and token 2p + 1's in lane 2g + 1. */
static void interleave_pairs(const int8_t *q, size_t q_stride, int32_t ntok, int32_t cols,
                             uint32_t *u2)
{
    int32_t groups = cols / 4, npairs = (ntok + 1) / 2;
    for (int32_t p = 0; p < npairs; p++)
        for (int32_t h = 0; h < 2; h++) {
            int32_t t = 2 * p + h;
            uint32_t *o = u2 + (size_t)p * (size_t)groups * 2 + (size_t)h;
            if (t >= ntok) { /* odd count: a zero partner, computed and dropped */
                for (int32_t g = 0; g < groups; g++) o[2 * (size_t)g] = 0x80808080u;
                continue;
            }
            const uint8_t *src = (const uint8_t *)(q + (size_t)t * q_stride);
            for (int32_t g = 0; g < groups; g++) {
                uint32_t v;
                memcpy(&v, src + 4 * (size_t)g, 4);
                o[2 * (size_t)g] = v ^ 0x80808080u;
            }
        }
}

/* Row r against np <= VNNI_PAIRS token pairs (tokens t0 .. t0 + nt - 1). */
static inline void vnni_tile2(const struct br_q8mat *m, int64_t r, int np, int32_t nt,
                              const uint32_t *u2, const float *dx, size_t dx_stride, float *y,
                              size_t y_stride)
{
    const int32_t nb = m->nb;
    const size_t pair_stride = (size_t)m->cols / 2; /* dwords per pair (2 * cols / 4) */
    const int8_t *w = m->qs + (size_t)r * (size_t)m->cols;
    const uint16_t *d = m->d + (size_t)r * (size_t)nb;
    const __m512i k128 = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    __m512 acc[VNNI_PAIRS];
    _Alignas(64) float s[VNNI_PAIRS][8][2]; /* (pair, block in group, token of the pair) */
    for (int p = 0; p < VNNI_PAIRS; p++) acc[p] = _mm512_setzero_ps();
    int32_t b0 = 0;
    for (; b0 < nb; b0 += 8) {
        int32_t nblk = nb - b0 < 8 ? nb - b0 : 8;
        if (nblk == 8) {
            /* 8 scales of each token, as (token 2p, token 2p + 1) pairs in block order */
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(d + b0)));
            for (int p = 0; p < np; p++) {
                int32_t t1 = 2 * p + 1 < nt ? 2 * p + 1 : 2 * p;
                __m256 sa =
                    _mm256_mul_ps(dw, _mm256_loadu_ps(dx + (size_t)(2 * p) * dx_stride + b0));
                __m256 sb = _mm256_mul_ps(dw, _mm256_loadu_ps(dx + (size_t)t1 * dx_stride + b0));
                __m256 lo = _mm256_unpacklo_ps(sa, sb), hi = _mm256_unpackhi_ps(sa, sb);
                _mm256_store_ps(&s[p][0][0], _mm256_permute2f128_ps(lo, hi, 0x20));
                _mm256_store_ps(&s[p][4][0], _mm256_permute2f128_ps(lo, hi, 0x31));
            }
        } else {
            for (int p = 0; p < np; p++)
                for (int h = 0; h < 2; h++) {
                    int32_t t = 2 * p + h < nt ? 2 * p + h : 2 * p;
                    const float *dt = dx + (size_t)t * dx_stride + b0;
                    for (int32_t j = 0; j < nblk; j++) s[p][j][h] = q8_f16(d[b0 + j]) * dt[j];
                }
        }
        for (int32_t j = 0; j < nblk; j++) {
            size_t b = (size_t)(b0 + j);
            __m512i v = _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(q8_load(w + 32 * b)));
            __m512i nc = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k128, v));
            for (int p = 0; p < np; p++) {
                __m512i x =
                    _mm512_load_si512((const void *)(u2 + (size_t)p * pair_stride + 16 * b));
                __m512i pr = _mm512_dpbusd_epi32(nc, x, v);
                double sd;
                memcpy(&sd, s[p][j], sizeof sd);
                __m512 sc = _mm512_castpd_ps(_mm512_set1_pd(sd));
                acc[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pr), sc, acc[p]);
            }
        }
    }
    const __m512i even = _mm512_set_epi32(15, 13, 11, 9, 7, 5, 3, 1, 14, 12, 10, 8, 6, 4, 2, 0);
    for (int p = 0; p < np; p++) {
        __m512 sep = _mm512_permutexvar_ps(even, acc[p]); /* token 2p | token 2p + 1 */
        int32_t t = 2 * p;
        y[(size_t)t * y_stride] = q8_hsum_canonical(_mm512_castps512_ps256(sep));
        if (t + 1 < nt)
            y[(size_t)(t + 1) * y_stride] = q8_hsum_canonical(_mm512_extractf32x8_ps(sep, 1));
    }
}

static void vnni_tile2_full(const struct br_q8mat *m, int64_t r, const uint32_t *u2,
                            const float *dx, size_t dx_stride, float *y, size_t y_stride)
{
    vnni_tile2(m, r, VNNI_PAIRS, 2 * VNNI_PAIRS, u2, dx, dx_stride, y, y_stride);
}

static void vnni_tile2_part(const struct br_q8mat *m, int64_t r, int32_t nt, const uint32_t *u2,
                            const float *dx, size_t dx_stride, float *y, size_t y_stride)
{
    vnni_tile2(m, r, (nt + 1) / 2, nt, u2, dx, dx_stride, y, y_stride);
}

static void q8_gemm_vnni(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok,
                         const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                         float *y, size_t y_stride)
{
    size_t pair_bytes = 2 * (size_t)m->cols, npairs = (size_t)(ntok + 1) / 2;
    uint32_t *u2 = ntok > 1 ? aligned_alloc(64, npairs * pair_bytes) : NULL;
    if (!u2) { /* one token, or no memory for the interleaved copy: the shared path */
        q8_gemm_x86(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
        return;
    }
    interleave_pairs(q, q_stride, ntok, m->cols, u2);
    const size_t pair_dw = pair_bytes / 4;
    for (int64_t r = r0; r < r1; r++)
        for (int32_t t0 = 0; t0 < ntok; t0 += 2 * VNNI_PAIRS) {
            int32_t nt = ntok - t0 < 2 * VNNI_PAIRS ? ntok - t0 : 2 * VNNI_PAIRS;
            const uint32_t *ut = u2 + (size_t)(t0 / 2) * pair_dw;
            const float *dt = dx + (size_t)t0 * dx_stride;
            float *yt = y + (size_t)t0 * y_stride + (size_t)(r - r0);
            if (nt == 2 * VNNI_PAIRS)
                vnni_tile2_full(m, r, ut, dt, dx_stride, yt, y_stride);
            else
                vnni_tile2_part(m, r, nt, ut, dt, dx_stride, yt, y_stride);
        }
    free(u2);
}

const struct br_q8_ops br_q8_ops_avx512 = {
    .name = "avx512",
    .gemv = q8_gemv_x86,
    .gemm = q8_gemm_vnni,
};
