/*
 * Q6_K kernels with AVX-512 VNNI: q6k_x86.h with the 4-byte-group dot done by one vpdpbusd
 * (256-bit) accumulating onto the correction for one token, and a GEMM of its own for
 * several.
 *
 * GEMM: two tokens share one 512-bit register. Their activations and -32 sum q corrections
 * are interleaved by 4-byte group once per call (group g of token 2p at dword 2g, of token
 * 2p + 1 at dword 2g + 1) and the unpacked codes' dwords are doubled, so one vpdpbusd gives
 * token 2p's canonical lane g in int32 lane 2g and token 2p + 1's in lane 2g + 1; one
 * conversion, one multiply by the (doubled) sub-block scales and one FMA against the pair's
 * interleaved s_b then serve both. Tiles are 2 rows x 4 token pairs.
 */
#include <immintrin.h>
#include <string.h>

#define Q6_EDOT(u, x, c) _mm256_dpbusd_epi32(c, u, x)

#include "kernels/q6k_x86.h"

#define Q6_PAIRS 4

/* x2, c2: (npairs, cols / 32 blocks, 16 dwords) */
static void interleave(const int8_t *q, size_t q_stride, int32_t ntok, int32_t cols, uint32_t *x2,
                       int32_t *c2)
{
    int32_t groups = cols / 4, npairs = (ntok + 1) / 2;
    for (int32_t p = 0; p < npairs; p++)
        for (int h = 0; h < 2; h++) {
            int32_t t = 2 * p + h;
            uint32_t *xo = x2 + (size_t)p * (size_t)groups * 2 + (size_t)h;
            int32_t *co = c2 + (size_t)p * (size_t)groups * 2 + (size_t)h;
            const int8_t *src = q + (size_t)(t < ntok ? t : 0) * q_stride;
            for (int32_t g = 0; g < groups; g++) {
                uint32_t v = 0;
                int32_t s = 0;
                if (t < ntok) { /* a missing partner: zeros, computed and dropped */
                    memcpy(&v, src + 4 * (size_t)g, 4);
                    s = (int32_t)src[4 * g] + src[4 * g + 1] + src[4 * g + 2] + src[4 * g + 3];
                }
                xo[2 * (size_t)g] = v;
                co[2 * (size_t)g] = -32 * s;
            }
        }
}

static inline __attribute__((always_inline)) void
q6k_tile2(const struct br_q6kmat *m, int64_t r, int R, int np, int32_t nt, const uint32_t *x2,
          const int32_t *c2, const float *dx, size_t dx_stride, float *y, size_t y_stride)
{
    const size_t pstride = (size_t)m->cols / 2; /* dwords per pair */
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i pick[4] = {_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                             _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),
                             _mm512_set_epi32(5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4, 4),
                             _mm512_set_epi32(7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, 6, 6)};
    __m512 acc[2][Q6_PAIRS];
    for (int i = 0; i < 2; i++)
        for (int p = 0; p < Q6_PAIRS; p++) acc[i][p] = _mm512_setzero_ps();
    for (int32_t sb = 0; sb < m->nsb; sb++) {
        for (int i = 0; i < R; i++) {
            const uint8_t *blk =
                m->data + (size_t)(r + i) * m->row_bytes + (size_t)sb * BR_Q6K_BLOCK_BYTES;
            __m128i sc8 = _mm_loadu_si128((const __m128i *)(const void *)(blk + 192));
            __m256 scf[2] = {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc8)),
                             _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc8, 8)))};
            __m256 d = _mm256_set1_ps(
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(blk[208] | blk[209] << 8))));
            /* s_b of both tokens of each pair, as (token 2p, token 2p + 1) float pairs */
            _Alignas(64) float s[Q6_PAIRS][8][2];
            for (int p = 0; p < np; p++) {
                int32_t tb = 2 * p + 1 < nt ? 2 * p + 1 : 2 * p;
                __m256 sa = _mm256_mul_ps(
                    d, _mm256_loadu_ps(dx + (size_t)(2 * p) * dx_stride + 8 * (size_t)sb));
                __m256 sbv =
                    _mm256_mul_ps(d, _mm256_loadu_ps(dx + (size_t)tb * dx_stride + 8 * (size_t)sb));
                __m256 lo = _mm256_unpacklo_ps(sa, sbv), hi = _mm256_unpackhi_ps(sa, sbv);
                _mm256_store_ps(&s[p][0][0], _mm256_permute2f128_ps(lo, hi, 0x20));
                _mm256_store_ps(&s[p][4][0], _mm256_permute2f128_ps(lo, hi, 0x31));
            }
            for (int h = 0; h < 2; h++) {
                __m256i u[4];
                q6k_unpack_half(blk + 64 * h, blk + 128 + 32 * h, u);
                __m512 sc16 = _mm512_castps256_ps512(scf[h]);
                for (int g = 0; g < 4; g++) {
                    int j = 4 * h + g;
                    size_t b = 8 * (size_t)sb + (size_t)j; /* block of 32 in the row */
                    __m512i u2 = _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(u[g]));
                    __m512 scl = _mm512_permutexvar_ps(pick[g], sc16);
                    for (int p = 0; p < np; p++) {
                        size_t off = (size_t)p * pstride + 16 * b;
                        __m512i e =
                            _mm512_dpbusd_epi32(_mm512_load_si512((const void *)(c2 + off)), u2,
                                                _mm512_load_si512((const void *)(x2 + off)));
                        double sd;
                        memcpy(&sd, s[p][j], sizeof sd);
                        __m512 pf = _mm512_mul_ps(_mm512_cvtepi32_ps(e), scl);
                        acc[i][p] =
                            _mm512_fmadd_ps(pf, _mm512_castpd_ps(_mm512_set1_pd(sd)), acc[i][p]);
                    }
                }
            }
        }
    }
    const __m512i even = _mm512_set_epi32(15, 13, 11, 9, 7, 5, 3, 1, 14, 12, 10, 8, 6, 4, 2, 0);
    for (int i = 0; i < R; i++)
        for (int p = 0; p < np; p++) {
            __m512 sep = _mm512_permutexvar_ps(even, acc[i][p]); /* token 2p | token 2p + 1 */
            size_t t = 2 * (size_t)p;
            y[t * y_stride + (size_t)i] = br_combine8_m256(_mm512_castps512_ps256(sep));
            if ((int32_t)t + 1 < nt)
                y[(t + 1) * y_stride + (size_t)i] =
                    br_combine8_m256(_mm512_extractf32x8_ps(sep, 1));
        }
}

static void q6k_tile2_full(const struct br_q6kmat *m, int64_t r, const uint32_t *x2,
                           const int32_t *c2, const float *dx, size_t dx_stride, float *y,
                           size_t y_stride)
{
    q6k_tile2(m, r, 2, Q6_PAIRS, 2 * Q6_PAIRS, x2, c2, dx, dx_stride, y, y_stride);
}

static void q6k_tile2_part(const struct br_q6kmat *m, int64_t r, int R, int32_t nt,
                           const uint32_t *x2, const int32_t *c2, const float *dx, size_t dx_stride,
                           float *y, size_t y_stride)
{
    if (R > 1)
        q6k_tile2(m, r, 2, (nt + 1) / 2, nt, x2, c2, dx, dx_stride, y, y_stride);
    else
        q6k_tile2(m, r, 1, (nt + 1) / 2, nt, x2, c2, dx, dx_stride, y, y_stride);
}

void br_q6k_gemm_avx512(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                        const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                        float *y, size_t y_stride);
void br_q6k_gemm_avx512(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                        const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                        float *y, size_t y_stride)
{
    size_t pair_bytes = 2 * (size_t)m->cols, npairs = (size_t)(ntok + 1) / 2;
    uint32_t *x2 = ntok > 1 ? aligned_alloc(64, npairs * pair_bytes) : NULL;
    int32_t *c2 = x2 ? aligned_alloc(64, npairs * pair_bytes) : NULL;
    if (!c2) { /* one token, or no memory for the interleaved copies */
        free(x2);
        q6k_gemm_x86(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
        return;
    }
    interleave(q, q_stride, ntok, m->cols, x2, c2);
    const size_t pair_dw = pair_bytes / 4;
    for (int64_t r = r0; r < r1; r += 2) {
        int R = r + 1 < r1 ? 2 : 1;
        for (int32_t t0 = 0; t0 < ntok; t0 += 2 * Q6_PAIRS) {
            int32_t nt = ntok - t0 < 2 * Q6_PAIRS ? ntok - t0 : 2 * Q6_PAIRS;
            const uint32_t *xt = x2 + (size_t)(t0 / 2) * pair_dw;
            const int32_t *ct = c2 + (size_t)(t0 / 2) * pair_dw;
            const float *dt = dx + (size_t)t0 * dx_stride;
            float *yt = y + (size_t)t0 * y_stride + (size_t)(r - r0);
            if (R == 2 && nt == 2 * Q6_PAIRS)
                q6k_tile2_full(m, r, xt, ct, dt, dx_stride, yt, y_stride);
            else
                q6k_tile2_part(m, r, R, nt, xt, ct, dt, dx_stride, yt, y_stride);
        }
    }
    free(x2);
    free(c2);
}
