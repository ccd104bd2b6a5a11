/*
 * Q8_0 head kernels for AVX-512 with VNNI: the shared x86 code of q8_x86.h with the
 * 4-byte-group dot done by one vpdpbusd (u8 x s8, summed into int32 without saturation),
 * and a GEMM of its own for many tokens.
 *
 * GEMM: activations are offset to unsigned once per call, u = q + 128 (q ^ 0x80), so
 * vpdpbusd(c, u, w) = c + sum (q + 128) w; starting it from c = -128 * sum w (per lane,
 * computed once per weight block for 16 tokens) leaves exactly sum q w, the canonical lane
 * sum, without the per-token sign step. Two tokens share one 512-bit register (their
 * 4-byte groups interleaved, the weights' doubled), so one vpdpbusd, one conversion and
 * one FMA serve both; each token keeps its own 8 canonical lanes. A tile is 2 rows x 16
 * tokens: each weight block serves 16 tokens, each activation load 2 rows.
 * Those three instructions per 64 multiply-adds are the floor the canonical order sets
 * (a float FMA per block and lane). The weights are prefetched 4 KiB ahead: with 16 or
 * fewer tokens each row is read once, straight from memory, and without it the loads'
 * latency, not the arithmetic, set the pace (bench/bench_q8.c: 16 tokens 50 -> 75
 * GMAC/s, 32 tokens 67 -> 78 on one core of the development machine).
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

#define VNNI_PAIRS 8 /* token pairs sharing a weight block: 16 tokens */
#define VNNI_ROWS  2 /* rows sharing an activation load */
#ifndef Q8_GEMM_PREFETCH
#define Q8_GEMM_PREFETCH 4096 /* bytes ahead of the weight block in use */
#endif
#ifndef Q8_R1
#define Q8_R1 8
#endif

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

/* The pairs' activation scales interleaved the same way: dxp (npairs, nb + 8, 2) with
 * dxp[p][b] = (dx of token 2p, dx of token 2p + 1) for block b; a missing partner copies
 * token 2p, and the 8 blocks of padding (zero) let a group of 8 blocks be read whole. */
static void interleave_scales(const float *dx, size_t dx_stride, int32_t ntok, int32_t nb,
                              float *dxp)
{
    int32_t npairs = (ntok + 1) / 2;
    size_t pstride = 2 * ((size_t)nb + 8);
    for (int32_t p = 0; p < npairs; p++) {
        const float *a = dx + (size_t)(2 * p) * dx_stride;
        const float *b = 2 * p + 1 < ntok ? a + dx_stride : a;
        float *o = dxp + (size_t)p * pstride;
        for (int32_t k = 0; k < nb; k++) o[2 * k] = a[k], o[2 * k + 1] = b[k];
        for (size_t k = 2 * (size_t)nb; k < pstride; k++) o[k] = 0.0f;
    }
}

/* R rows (1 or VNNI_ROWS) starting at r against np <= VNNI_PAIRS token pairs (tokens
 * 0 .. nt - 1 of the group): each activation load serves the R rows, each weight block
 * the np pairs. Per block and pair, s_b = f16(d_b) * dx_b is one float multiply (16 at a
 * time, both tokens of a pair for 8 blocks), then one vpdpbusd, one conversion and one
 * FMA give both tokens' canonical lanes. */
static inline __attribute__((always_inline)) void
vnni_tile(const struct br_q8mat *m, int64_t r, int R, int np, int32_t nt, const uint32_t *u2,
          size_t pair_dw, const float *dxp, size_t dxp_stride, float *y, size_t y_stride)
{
    const int32_t nb = m->nb;
    const int8_t *w[VNNI_ROWS];
    const uint16_t *d[VNNI_ROWS];
    for (int i = 0; i < VNNI_ROWS; i++) {
        int64_t ri = i < R ? r + i : r;
        w[i] = m->qs + (size_t)ri * (size_t)m->cols;
        d[i] = m->d + (size_t)ri * (size_t)nb;
    }
    const __m512i k128 = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    __m512 acc[VNNI_ROWS][VNNI_PAIRS];
    /* (row, pair, block in group, token of the pair) */
    _Alignas(64) float s[VNNI_ROWS][VNNI_PAIRS][16];
    for (int i = 0; i < R; i++)
        for (int p = 0; p < np; p++) acc[i][p] = _mm512_setzero_ps();
    for (int32_t b0 = 0; b0 < nb; b0 += 8) {
        int32_t nblk = nb - b0 < 8 ? nb - b0 : 8;
        for (int i = 0; i < R; i++) {
            __m128i dh;
            if (nblk == 8) {
                dh = _mm_loadu_si128((const __m128i *)(const void *)(d[i] + b0));
            } else {
                uint16_t tmp[8] = {0};
                memcpy(tmp, d[i] + b0, (size_t)nblk * sizeof *tmp);
                dh = _mm_loadu_si128((const __m128i *)(const void *)tmp);
            }
            /* (d0, d0, d1, d1, ..., d7, d7) */
            __m512 dd = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_cvtph_ps(dh)));
            for (int p = 0; p < np; p++)
                _mm512_store_ps(s[i][p],
                                _mm512_mul_ps(dd, _mm512_loadu_ps(dxp + (size_t)p * dxp_stride +
                                                                  2 * (size_t)b0)));
        }
        for (int32_t j = 0; j < nblk; j++) {
            size_t b = (size_t)(b0 + j);
            __m512i v[VNNI_ROWS], nc[VNNI_ROWS];
            for (int i = 0; i < R; i++) {
                if (j % 2 == 0) /* the row's next cache lines, ahead of use */
                    _mm_prefetch((const char *)(w[i] + 32 * b + Q8_GEMM_PREFETCH), _MM_HINT_T0);
                v[i] =
                    _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(q8_load(w[i] + 32 * b)));
                nc[i] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k128, v[i]));
            }
            for (int p = 0; p < np; p++) {
                __m512i x = _mm512_load_si512((const void *)(u2 + (size_t)p * pair_dw + 16 * b));
                for (int i = 0; i < R; i++) {
                    __m512i pr = _mm512_dpbusd_epi32(nc[i], x, v[i]);
                    double sd;
                    memcpy(&sd, &s[i][p][2 * j], sizeof sd);
                    __m512 sc = _mm512_castpd_ps(_mm512_set1_pd(sd));
                    acc[i][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pr), sc, acc[i][p]);
                }
            }
        }
    }
    const __m512i even = _mm512_set_epi32(15, 13, 11, 9, 7, 5, 3, 1, 14, 12, 10, 8, 6, 4, 2, 0);
    for (int i = 0; i < R; i++)
        for (int p = 0; p < np; p++) {
            __m512 sep = _mm512_permutexvar_ps(even, acc[i][p]); /* token 2p | token 2p + 1 */
            int32_t t = 2 * p;
            y[(size_t)t * y_stride + (size_t)i] = br_combine8_m256(_mm512_castps512_ps256(sep));
            if (t + 1 < nt)
                y[(size_t)(t + 1) * y_stride + (size_t)i] =
                    br_combine8_m256(_mm512_extractf32x8_ps(sep, 1));
        }
}

/* Every tile shape as its own function, so the compiler unrolls each: R rows (1, 2) x NP
 * token pairs (1 .. 8); NT is the token count (2 NP, or 2 NP - 1 for an odd group). */
typedef void (*vnni_tile_fn)(const struct br_q8mat *m, int64_t r, int32_t nt, const uint32_t *u2,
                             size_t pair_dw, const float *dxp, size_t dxp_stride, float *y,
                             size_t y_stride);
#define VNNI_TILE(R, NP)                                                                           \
    static void vnni_tile_##R##_##NP(const struct br_q8mat *m, int64_t r, int32_t nt,              \
                                     const uint32_t *u2, size_t pair_dw, const float *dxp,         \
                                     size_t dxp_stride, float *y, size_t y_stride)                 \
    {                                                                                              \
        vnni_tile(m, r, R, NP, nt, u2, pair_dw, dxp, dxp_stride, y, y_stride);                     \
    }
VNNI_TILE(1, 1)
VNNI_TILE(1, 2)
VNNI_TILE(1, 3)
VNNI_TILE(1, 4)
VNNI_TILE(1, 5)
VNNI_TILE(1, 6)
VNNI_TILE(1, 7)
VNNI_TILE(1, 8)
VNNI_TILE(2, 1)
VNNI_TILE(2, 2)
VNNI_TILE(2, 3)
VNNI_TILE(2, 4)
VNNI_TILE(2, 5)
VNNI_TILE(2, 6)
VNNI_TILE(2, 7)
VNNI_TILE(2, 8)

/* [R - 1][np - 1] */
static const vnni_tile_fn vnni_tiles[VNNI_ROWS][VNNI_PAIRS] = {
    {vnni_tile_1_1, vnni_tile_1_2, vnni_tile_1_3, vnni_tile_1_4, vnni_tile_1_5, vnni_tile_1_6,
     vnni_tile_1_7, vnni_tile_1_8},
    {vnni_tile_2_1, vnni_tile_2_2, vnni_tile_2_3, vnni_tile_2_4, vnni_tile_2_5, vnni_tile_2_6,
     vnni_tile_2_7, vnni_tile_2_8},
};

static void q8_gemm_vnni(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok,
                         const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                         float *y, size_t y_stride)
{
    size_t pair_bytes = 2 * (size_t)m->cols, npairs = (size_t)(ntok + 1) / 2;
    size_t dxp_stride = 2 * ((size_t)m->nb + 8);
    uint32_t *u2 = ntok > 1 ? aligned_alloc(64, npairs * pair_bytes) : NULL;
    float *dxp = ntok > 1 ? malloc(npairs * dxp_stride * sizeof *dxp) : NULL;
    if (!u2 || !dxp) { /* one token, or no memory for the interleaved copies: the shared path */
        free(u2);
        free(dxp);
        q8_gemm_x86(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
        return;
    }
    interleave_pairs(q, q_stride, ntok, m->cols, u2);
    interleave_scales(dx, dx_stride, ntok, m->nb, dxp);
    const size_t pair_dw = pair_bytes / 4;
    /* rows outer so a row pair (2 * cols bytes) stays in L1 across all token groups; Q8_R1
     * tokens or fewer go one row at a time */
    int rows_per_tile = ntok > Q8_R1 ? VNNI_ROWS : 1;
    for (int64_t r = r0; r < r1; r += rows_per_tile) {
        int R = r1 - r < rows_per_tile ? (int)(r1 - r) : rows_per_tile;
        for (int32_t t0 = 0; t0 < ntok; t0 += 2 * VNNI_PAIRS) {
            int32_t nt = ntok - t0 < 2 * VNNI_PAIRS ? ntok - t0 : 2 * VNNI_PAIRS;
            const uint32_t *ut = u2 + (size_t)(t0 / 2) * pair_dw;
            const float *dt = dxp + (size_t)(t0 / 2) * dxp_stride;
            float *yt = y + (size_t)t0 * y_stride + (size_t)(r - r0);
            vnni_tiles[R - 1][(nt + 1) / 2 - 1](m, r, nt, ut, pair_dw, dt, dxp_stride, yt,
                                                y_stride);
        }
    }
    free(u2);
    free(dxp);
}

const struct br_q8_ops br_q8_ops_avx512 = {
    .name = "avx512",
    .gemv = q8_gemv_x86,
    .gemm = q8_gemm_vnni,
};
