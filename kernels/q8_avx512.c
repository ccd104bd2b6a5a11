/*
 * Q8_0 head kernels for AVX-512 with VNNI, on the grouped layout of q8.h. A 64-byte vector
 * of weights holds one 4-byte group of each of 16 blocks (stored as unsigned, q + 128) and
 * the matching vector of a token's activations (br_q8_group_act) the same groups, so one
 * vpdpbusd adds four products to each block's int32 lane and eight of them finish 16
 * blocks. Started from -128 * (each block's activation sum), the lanes are the exact block
 * products p_b; then one conversion, one multiply (the 16 scales s_b) and one FMA per 16
 * blocks. That is 8 dpbusd + 3 other instructions per 512 multiply-adds, where an FMA per
 * block and lane would need 24.
 *
 * A tile is 4 rows x up to 6 tokens (one row x up to 6 for the last rows): 24 int32
 * accumulators in registers for the group in hand, the 16 float lanes of each in a small
 * array (a load, an FMA and a store per 16 blocks). Each weight vector meets T tokens, each
 * activation vector 4 rows. Rows are the outer loop: 4 rows (4 row_bytes) stay in L1 while
 * every token tile passes, and the next rows are prefetched a tile ahead. 4 x 6 rather
 * than 2 x 12: it reads half as many activation bytes per multiply-add, and 6 tokens'
 * activations (6 row_bytes) fit in L1 where 12 do not (docs/PERFORMANCE.md, "Kernel
 * shapes"). One token (decode) has no activations to share between rows and is bound by
 * memory: its tiles take one row from each of q8_streams runs of rows far apart
 * (q8_gemv_avx512), so that several sequential streams are in flight.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/combine_x86.h"
#include "kernels/q8_impl.h"
#include "kernels/tune.h"

#define RMAX 4 /* rows per tile */
#define TMAX 6 /* tokens per tile: 24 accumulators in registers */

/* The activations of every token of the call, grouped (br_q8_group_act). */
struct q8_acts {
    const int8_t *qg;    /* (ntok, qstride) */
    const int32_t *nsum; /* (ntok, lstride) */
    const float *dxg;    /* (ntok, lstride) */
    size_t qstride, lstride;
    size_t pf_rows; /* prefetch distance in rows (tiles ahead x 4, kernels/tune.h); 0: none */
    int pf_hint;
    size_t rgap; /* rows from one of a tile's rows to the next (1, or a stream's length) */
};

static inline __attribute__((always_inline)) void tile(const struct br_q8mat *m, int64_t r, int R,
                                                       int T, const struct q8_acts *a, float *y,
                                                       size_t y_stride)
{
    const size_t pf = a->pf_rows * m->row_bytes; /* the rows `pf_rows` ahead */
    const int hint = a->pf_hint;
    const size_t rb = m->row_bytes, dstride = (size_t)m->ng * BR_Q8_GROUP;
    const size_t rs = a->rgap * rb, ds = a->rgap * dstride; /* tile row i: + i * rs */
    const uint8_t *w = m->qs + (size_t)r * rb;
    const uint16_t *d = br_q8mat_scale(m, r, 0);
    _Alignas(64) float facc[RMAX * TMAX][16];
    for (int k = 0; k < R * T; k++) _mm512_store_ps(facc[k], _mm512_setzero_ps());
    for (int32_t G = 0; G < m->ng; G++) {
        __m512i acc[RMAX * TMAX];
        const int8_t *qg = a->qg + (size_t)G * BR_Q8_GROUP_BYTES;
        const uint8_t *wg = w + (size_t)G * BR_Q8_GROUP_BYTES;
#pragma GCC unroll 12
        for (int t = 0; t < T; t++) {
            __m512i c = _mm512_load_si512(
                (const void *)(a->nsum + (size_t)t * a->lstride + (size_t)G * BR_Q8_GROUP));
#pragma GCC unroll 4
            for (int i = 0; i < R; i++) acc[i * T + t] = c;
        }
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            __m512i x[RMAX];
#pragma GCC unroll 4
            for (int i = 0; i < R; i++) {
                x[i] = _mm512_load_si512((const void *)(wg + (size_t)i * rs + 64 * (size_t)s));
                /* the same bytes of the rows `pf_rows` on, into L2 (into L1 they crowd out
                 * the tile's weights and activations) */
                if (pf) br_prefetch(wg + pf + (size_t)i * rs + 64 * (size_t)s, hint);
            }
#pragma GCC unroll 12
            for (int t = 0; t < T; t++) {
                __m512i v =
                    _mm512_load_si512((const void *)(qg + (size_t)t * a->qstride + 64 * (size_t)s));
                /* one load for all R rows: folded into each vpdpbusd as a memory operand,
                 * the loads alone would fill the load ports */
                if (R > 1) __asm__("" : "+v"(v));
#pragma GCC unroll 4
                for (int i = 0; i < R; i++)
                    acc[i * T + t] = _mm512_dpbusd_epi32(acc[i * T + t], x[i], v);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(
                (const __m256i *)(const void *)(d + (size_t)i * ds + (size_t)G * BR_Q8_GROUP)));
#pragma GCC unroll 12
            for (int t = 0; t < T; t++) {
                __m512 s = _mm512_mul_ps(
                    dw, _mm512_load_ps(a->dxg + (size_t)t * a->lstride + (size_t)G * BR_Q8_GROUP));
                __m512 f = _mm512_load_ps(facc[i * T + t]);
                _mm512_store_ps(facc[i * T + t],
                                _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i * T + t]), s, f));
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) {
            __m512 f = _mm512_load_ps(facc[i * T + t]);
            __m256 h = _mm256_add_ps(_mm512_castps512_ps256(f), _mm512_extractf32x8_ps(f, 1));
            y[(size_t)t * y_stride + (size_t)i * a->rgap] = br_combine8_m256(h);
        }
}

typedef void (*tile_fn)(const struct br_q8mat *m, int64_t r, const struct q8_acts *a, float *y,
                        size_t y_stride);
/* One function per shape, so each has constant loops the compiler unrolls. */
#define TILE_FN(R, T)                                                                              \
    static void tile_##R##_##T(const struct br_q8mat *m, int64_t r, const struct q8_acts *a,       \
                               float *y, size_t y_stride)                                          \
    {                                                                                              \
        tile(m, r, R, T, a, y, y_stride);                                                          \
    }
#define TILE_FNS(R)                                                                                \
    TILE_FN(R, 1)                                                                                  \
    TILE_FN(R, 2)                                                                                  \
    TILE_FN(R, 3)                                                                                  \
    TILE_FN(R, 4)                                                                                  \
    TILE_FN(R, 5)                                                                                  \
    TILE_FN(R, 6)
TILE_FNS(1)
TILE_FNS(4)
TILE_FN(2, 1)
#define TILE_ROW(R)                                                                                \
    {                                                                                              \
        NULL, tile_##R##_1, tile_##R##_2, tile_##R##_3, tile_##R##_4, tile_##R##_5, tile_##R##_6   \
    }
/* [rows == 4][tokens] */
static const tile_fn g_tiles[2][TMAX + 1] = {TILE_ROW(1), TILE_ROW(4)};
#undef TILE_ROW
#undef TILE_FNS
#undef TILE_FN

static void q8_gemv_avx512(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q,
                           const float *dx, float *y);

static void q8_gemm_avx512(const struct br_q8mat *m, int64_t r0, int64_t r1, int32_t ntok,
                           const int8_t *q, size_t q_stride, const float *dx, size_t dx_stride,
                           float *y, size_t y_stride)
{
    if (r0 >= r1 || ntok <= 0) return;
    if (ntok == 1) {
        q8_gemv_avx512(m, r0, r1, q, dx, y);
        return;
    }
    struct br_q8_acts g;
    if (br_q8_acts_group(m, ntok, q, q_stride, dx, dx_stride, &g)) { /* no memory: reference */
        br_q8_gemm_ref(m, r0, r1, ntok, q, q_stride, dx, dx_stride, y, y_stride);
        return;
    }
    const struct br_tune *tp = br_tune_active();
    struct q8_acts a = {.qstride = m->row_bytes,
                        .lstride = g.lanes,
                        .pf_rows = (size_t)(tp->q8_ahead > 0 ? tp->q8_ahead : 1) * RMAX,
                        .pf_hint = tp->q8_hint & 3,
                        .rgap = 1};
    /* token tiles of nearly equal size, at most TMAX; rows RMAX at a time */
    int32_t ntiles = (ntok + TMAX - 1) / TMAX;
    int64_t r = r0;
    for (; r + RMAX <= r1; r += RMAX) {
        for (int32_t i = 0, t0 = 0; i < ntiles; i++) {
            int T = (int)(ntok / ntiles + (i < ntok % ntiles));
            a.qg = g.qg + (size_t)t0 * m->row_bytes;
            a.nsum = g.nsum + (size_t)t0 * g.lanes;
            a.dxg = g.dxg + (size_t)t0 * g.lanes;
            float *yt = y + (size_t)t0 * y_stride + (size_t)(r - r0);
            g_tiles[1][T](m, r, &a, yt, y_stride);
            t0 += T;
        }
    }
    for (; r < r1; r++) /* the last rows, one at a time */
        for (int32_t i = 0, t0 = 0; i < ntiles; i++) {
            int T = (int)(ntok / ntiles + (i < ntok % ntiles));
            a.qg = g.qg + (size_t)t0 * m->row_bytes;
            a.nsum = g.nsum + (size_t)t0 * g.lanes;
            a.dxg = g.dxg + (size_t)t0 * g.lanes;
            g_tiles[0][T](m, r, &a, y + (size_t)t0 * y_stride + (size_t)(r - r0), y_stride);
            t0 += T;
        }
    br_q8_acts_free(&g);
}

/* One token. The rows are cut into q8_streams (kernels/tune.h) equal runs read in
 * lockstep, a tile taking one row of each: several sequential streams far apart keep more
 * misses in flight than one (or than a tile's adjacent rows, which the hardware sees as
 * one), without software prefetch; the rows left over go one at a time, prefetched. */
static void q8_gemv_avx512(const struct br_q8mat *m, int64_t r0, int64_t r1, const int8_t *q,
                           const float *dx, float *y)
{
    if (r0 >= r1) return;
    struct br_q8_acts g;
    if (br_q8_acts_group(m, 1, q, 0, dx, 0, &g)) { /* no memory: reference */
        br_q8_gemv_ref(m, r0, r1, q, dx, y);
        return;
    }
    const struct br_tune *tp = br_tune_active();
    int S = tp->q8_streams == 2 || tp->q8_streams == 4 ? tp->q8_streams : 1;
    int64_t run = (r1 - r0) / S;
    if (run < 1) S = 1, run = r1 - r0;
    struct q8_acts a = {.qg = g.qg,
                        .nsum = g.nsum,
                        .dxg = g.dxg,
                        .qstride = m->row_bytes,
                        .lstride = g.lanes,
                        .pf_rows = (size_t)(tp->q8_ahead > 0 ? tp->q8_ahead : 1) * RMAX,
                        .pf_hint = tp->q8_hint & 3,
                        .rgap = 1};
    int64_t r = r0;
    if (S > 1) {
        struct q8_acts as = a;
        as.pf_rows = 0, as.rgap = (size_t)run;
        tile_fn f = S == 4 ? tile_4_1 : tile_2_1;
        for (; r < r0 + run; r++) f(m, r, &as, y + (r - r0), 0);
        r = r0 + (int64_t)S * run;
    }
    for (; r < r1; r++) tile_1_1(m, r, &a, y + (r - r0), 0);
    br_q8_acts_free(&g);
}

const struct br_q8_ops br_q8_ops_avx512 = {
    .name = "avx512",
    .gemv = q8_gemv_avx512,
    .gemm = q8_gemm_avx512,
};
