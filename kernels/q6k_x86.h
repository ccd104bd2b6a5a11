/*
 * The x86 Q6_K kernels, written once and compiled twice: q6k_avx2.c and q6k_avx512.c
 * include this file after defining Q6_EDOT(u, x, c), c + the 8-lane int32 dot of 4-byte
 * groups of an unsigned and a signed int8 vector (maddubs + madd on AVX2, one VNNI dpbusd
 * with AVX-512). Included only from those files, which carry the ISA flags.
 *
 * Half a super-block (128 values) is unpacked at once into four vectors of 32 unsigned
 * 6-bit values u (q6k.h): the low nibbles of ql[0..31] and ql[32..63], then their high
 * nibbles, each with two bits of qh[0..31] moved to bits 4-5 by a 16-bit shift and a mask
 * (bits that cross into the neighbouring byte are masked off). Per token, the canonical
 * lane sum e = sum (u - 32) q is the dot of u and q started from c = -32 sum q, computed
 * once per call and token; maddubs never saturates (2 * 63 * 127 < 32767). (float)e times
 * the float sub-block scale is exact, so p is the reference's p, accumulated with one FMA
 * per block against s_b = d * dx_b and combined in the canonical order.
 */
#ifndef BR_KERNELS_Q6K_X86_H
#define BR_KERNELS_Q6K_X86_H

#include <immintrin.h>
#include <stdlib.h>

#include "kernels/combine_x86.h"
#include "kernels/q6k.h"
#include "kernels/tune.h"

#ifndef Q6_EDOT
#error "define Q6_EDOT before including kernels/q6k_x86.h"
#endif

#define Q6_TOK_GROUP 4 /* tokens per pass over a row: its super-blocks are unpacked once */
/* Bytes ahead of the super-block in use (GEMV) and the hint come from the calibration
 * (kernels/tune.h; default T1 16 KiB ahead): on Zen 4, one thread, the 2B-4T Q6_K head's
 * row 25.5 ms with T0 4 KiB ahead, 14.9-15.3 with T1 4 KiB ahead, 13.8-14.6 with T1 16 KiB
 * ahead. */

static inline void q6k_unpack_half(const uint8_t *ql, const uint8_t *qh, __m256i u[4])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)ql);
    __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(ql + 32));
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)qh);
    u[0] = _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
    u[1] = _mm256_or_si256(_mm256_and_si256(b, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
    u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4), _mm256_and_si256(h, m30));
    u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
}

/* Up to Q6_TOK_GROUP tokens (n) against R rows (1 or 2) from row r. nc: the tokens'
 * -32 sum q per lane, (n, cols / 4). y[t * y_stride + i] for row r + i. One token (GEMV)
 * prefetches pf bytes ahead with `hint`. */
static inline __attribute__((always_inline)) void
q6k_tile(const struct br_q6kmat *m, int64_t r, int R, int32_t n, const int8_t *q, size_t q_stride,
         const float *dx, size_t dx_stride, const int32_t *nc, size_t nc_stride, float *y,
         size_t y_stride, size_t pf, int hint)
{
    const uint8_t *rows[2] = {m->data + (size_t)r * m->row_bytes,
                              m->data + (size_t)(r + (R > 1)) * m->row_bytes};
    /* lanes 0-3 take sub-block scale 2j, lanes 4-7 2j + 1 (j = block % 4 of a half) */
    const __m256i pick[4] = {
        _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3),
        _mm256_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5), _mm256_setr_epi32(6, 6, 6, 6, 7, 7, 7, 7)};
    __m256 acc[2][Q6_TOK_GROUP];
    for (int i = 0; i < 2; i++)
        for (int t = 0; t < Q6_TOK_GROUP; t++) acc[i][t] = _mm256_setzero_ps();
    for (int32_t sb = 0; sb < m->nsb; sb++) {
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = rows[i] + (size_t)sb * BR_Q6K_BLOCK_BYTES;
            if (n == 1) /* GEMV: stream the rows ahead of use, every line of the block */
                for (int l = 0; l < 4; l++) br_prefetch(blk + pf + 64 * l, hint);
            /* the 16 sub-block scales as floats, and s_b for 8 blocks of every token */
            __m128i sc8 = _mm_loadu_si128((const __m128i *)(const void *)(blk + 192));
            __m256 scf[2] = {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc8)),
                             _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc8, 8)))};
            __m256 d = _mm256_set1_ps(
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(blk[208] | blk[209] << 8))));
            _Alignas(32) float s[Q6_TOK_GROUP][8];
            for (int t = 0; t < n; t++)
                _mm256_store_ps(s[t], _mm256_mul_ps(d, _mm256_loadu_ps(dx + (size_t)t * dx_stride +
                                                                       8 * (size_t)sb)));
            for (int h = 0; h < 2; h++) {
                __m256i u[4];
                q6k_unpack_half(blk + 64 * h, blk + 128 + 32 * h, u);
                for (int g = 0; g < 4; g++) {
                    int j = 4 * h + g; /* block within the super-block */
                    __m256 scl = _mm256_permutevar8x32_ps(scf[h], pick[g]);
                    size_t k = 256 * (size_t)sb + 32 * (size_t)j;
                    for (int t = 0; t < n; t++) {
                        __m256i x = _mm256_loadu_si256(
                            (const __m256i *)(const void *)(q + (size_t)t * q_stride + k));
                        __m256i c = _mm256_loadu_si256(
                            (const __m256i *)(const void *)(nc + (size_t)t * nc_stride + k / 4));
                        __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(Q6_EDOT(u[g], x, c)), scl);
                        acc[i][t] = _mm256_fmadd_ps(p, _mm256_broadcast_ss(&s[t][j]), acc[i][t]);
                    }
                }
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < n; t++)
            y[(size_t)t * y_stride + (size_t)i] = br_combine8_m256(acc[i][t]);
}

#define Q6_TILE(R, N)                                                                              \
    static void q6k_tile_##R##_##N(const struct br_q6kmat *m, int64_t r, const int8_t *q,          \
                                   size_t q_stride, const float *dx, size_t dx_stride,             \
                                   const int32_t *nc, size_t nc_stride, float *y, size_t y_stride) \
    {                                                                                              \
        q6k_tile(m, r, R, N, q, q_stride, dx, dx_stride, nc, nc_stride, y, y_stride, 0, BR_PF_T1); \
    }
Q6_TILE(1, 1)
/* The GEMV's tiles (one token), prefetching as calibrated. */
#define Q6_GEMV(R)                                                                                 \
    static void q6k_gemv_##R(const struct br_q6kmat *m, int64_t r, const int8_t *q,                \
                             const float *dx, const int32_t *nc, float *y, size_t pf, int hint)    \
    {                                                                                              \
        q6k_tile(m, r, R, 1, q, 0, dx, 0, nc, 0, y, 0, pf, hint);                                  \
    }
Q6_GEMV(2)
Q6_GEMV(1)
#undef Q6_GEMV
Q6_TILE(1, 2)
Q6_TILE(1, 3)
Q6_TILE(1, 4)

/* nc[t][g] = -32 * (sum of token t's 4-byte group g) */
static void q6k_neg_corr(const int8_t *q, size_t q_stride, int32_t ntok, int32_t cols, int32_t *nc)
{
    for (int32_t t = 0; t < ntok; t++) {
        const int8_t *x = q + (size_t)t * q_stride;
        int32_t *o = nc + (size_t)t * (size_t)(cols / 4);
        for (int32_t g = 0; g < cols / 4; g++)
            o[g] = -32 * ((int32_t)x[4 * g] + x[4 * g + 1] + x[4 * g + 2] + x[4 * g + 3]);
    }
}

static void q6k_gemm_x86(const struct br_q6kmat *m, int64_t r0, int64_t r1, int32_t ntok,
                         const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                         float *y, size_t y_stride)
{
    size_t nc_stride = (size_t)m->cols / 4;
    int32_t *nc = malloc((size_t)ntok * nc_stride * sizeof *nc);
    if (!nc) {
        br_q6k_gemm_ref(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
        return;
    }
    q6k_neg_corr(q, q_stride, ntok, m->cols, nc);
    if (ntok == 1) {
        const struct br_tune *tp = br_tune_active();
        size_t pf = tp->q6k_ahead > 0 ? (size_t)tp->q6k_ahead : 16384;
        int hint = tp->q6k_hint & 3;
        int64_t r = r0;
        for (; r + 1 < r1; r += 2) q6k_gemv_2(m, r, q, dx, nc, y + (r - r0), pf, hint);
        if (r < r1) q6k_gemv_1(m, r, q, dx, nc, y + (r - r0), pf, hint);
        free(nc);
        return;
    }
    typedef void (*tile_fn)(const struct br_q6kmat *, int64_t, const int8_t *, size_t,
                            const float *, size_t, const int32_t *, size_t, float *, size_t);
    static const tile_fn tiles[Q6_TOK_GROUP] = {q6k_tile_1_1, q6k_tile_1_2, q6k_tile_1_3,
                                                q6k_tile_1_4};
    for (int64_t r = r0; r < r1; r++)
        for (int32_t t0 = 0; t0 < ntok; t0 += Q6_TOK_GROUP) {
            int32_t n = ntok - t0 < Q6_TOK_GROUP ? ntok - t0 : Q6_TOK_GROUP;
            const int8_t *qt = q + (size_t)t0 * q_stride;
            const float *dt = dx + (size_t)t0 * dx_stride;
            const int32_t *ct = nc + (size_t)t0 * nc_stride;
            float *yt = y + (size_t)t0 * y_stride + (size_t)(r - r0);
            tiles[n - 1](m, r, qt, q_stride, dt, dx_stride, ct, nc_stride, yt, y_stride);
        }
    free(nc);
}

#endif
