/*
 * AVX-512 kernels (F, BW, VL, DQ, VNNI): ternary GEMV/GEMM with vpdpbusd, the canonical
 * float dots, and an alternative 1.6-bit weight layout kept for measurement.
 *
 * vpdpbusd multiplies unsigned bytes by signed bytes and adds groups of four into int32
 * lanes without saturation, so sum w*q = sum c*q - sum q needs no int16 budget.
 *
 * Activation order. A 64-byte load of canonical codes covers two 128-weight blocks; bit
 * pair g (g = 0 for bits 7-6) of byte p belongs to column 32g + p of its block. So that
 * each bit pair meets 64 contiguous bytes, the activations are first copied into `qp`
 * (once per call, kpad bytes): for block pair j and group g,
 *     qp[256j + 64g + h*32 + p] = q[128(2j + h) + 32g + p],   h in {0,1}, p < 32.
 * An odd last block is handled with 256-bit vpdpbusd on the original q.
 *
 * GEMV extracts bit pairs with a single AND each, without shifting: (x & 0xC0) is 64c,
 * (x & 0x30) 16c, (x & 0x0C) 4c, (x & 0x03) c. Each scale gets its own accumulator and
 * is divided out exactly at the end (every lane sum is a multiple of its scale). Bound:
 * |64c*q| <= 16384, so a row of K columns stays below 4096*K < 2^31 for K < 524288.
 * Rows go four at a time (sharing the activation loads), and each load also prefetches
 * the same bytes of the next four rows: the hardware prefetcher alone left a third of
 * the DRAM bandwidth unused on these short interleaved streams.
 *
 * GEMM decodes true codes (shift + AND) once per row and block of 8 tokens, then issues
 * rows x tokens vpdpbusd from registers: each weight byte is loaded once per 8 tokens.
 *
 * 1.6-bit layout (BR_PACK_T5, needs VBMI): a row is cut into chunks of 320 columns, 64
 * bytes each; byte p of chunk j holds the codes of columns 320j + 64n + p (n = 0..4) as
 * v = sum c_n 3^n (v < 243). Decoding looks each trit up in 256-entry tables with two
 * vpermi2b and a blend on v's top bit. Columns past kpad hold code 1 and meet q = 0.
 *
 * Why 2 bits is the default (measured with bench_kernels on a Sapphire Rapids VM, one
 * thread): the 1.6-bit GEMV is bound by its decode at about 8 GB/s of packed bytes (about
 * 41 G weights/s) even from cache, while the 2-bit GEMV streams DRAM at about 13 GB/s
 * (about 52 G weights/s) and runs near 29 GB/s from cache. Fewer bytes only pay off where
 * a core gets less than about 8 GB/s of DRAM bandwidth, and the packed copy would sit next
 * to the canonical codes (which must stay). So prepare() builds nothing; the 1.6-bit path
 * stays, tested, for machines where that balance differs.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernel_impl.h"
#include "kernels/ops.h"

#define QP_STACK 16384 /* activations permuted on the stack up to this many columns */

static int32_t sum_i8_avx512(const int8_t *q, size_t n)
{
    /* n is a multiple of 32; vpdpbusd with all-ones codes sums groups of four exactly */
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) acc = _mm512_dpbusd_epi32(acc, ones, _mm512_loadu_si512(q + i));
    int32_t s = _mm512_reduce_add_epi32(acc);
    for (; i < n; i++) s += q[i];
    return s;
}

/* qp (pairs * 256,) from q (pairs * 256 + ...,), see the header comment. */
static void permute_q(const int8_t *q, int32_t pairs, int8_t *qp)
{
    for (int32_t j = 0; j < pairs; j++) {
        const int8_t *a = q + (size_t)j * 256, *b = a + 128;
        int8_t *d = qp + (size_t)j * 256;
        for (int g = 0; g < 4; g++) {
            __m256i lo = _mm256_loadu_si256((const __m256i *)(a + 32 * g));
            __m256i hi = _mm256_loadu_si256((const __m256i *)(b + 32 * g));
            _mm512_storeu_si512(d + 64 * g, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
        }
    }
}

static inline int32_t hsum256(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Lane i of the result is the sum of the 16 lanes of a[i]: a transpose-and-add tree of 45
 * instructions, against about 9 per register for one horizontal sum at a time. */
static inline __m512i reduce16(const __m512i *a)
{
    __m512i b[8], c[4];
    for (int k = 0; k < 8; k++) /* each 128-bit lane: [a2k, a2k+1, a2k, a2k+1] partials */
        b[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * k], a[2 * k + 1]),
                                _mm512_unpackhi_epi32(a[2 * k], a[2 * k + 1]));
    for (int k = 0; k < 4; k++) /* each 128-bit lane: [a4k .. a4k+3] partials */
        c[k] = _mm512_add_epi32(_mm512_unpacklo_epi64(b[2 * k], b[2 * k + 1]),
                                _mm512_unpackhi_epi64(b[2 * k], b[2 * k + 1]));
    /* quarters [c0.0+c0.1, c0.2+c0.3, c1.0+c1.1, c1.2+c1.3], likewise for c2, c3 */
    __m512i d0 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512i d1 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i32x4(c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(d0, d1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* ---- GEMV, canonical codes ---- */

static inline __attribute__((always_inline)) void gemv_rows(const uint8_t *w, size_t stride,
                                                            int32_t blocks, const int8_t *q,
                                                            const int8_t *qp, int32_t sumq, int R,
                                                            int32_t *out)
{
    const __m512i mC0 = _mm512_set1_epi8((char)0xC0), m30 = _mm512_set1_epi8(0x30);
    const __m512i m0C = _mm512_set1_epi8(0x0C), m03 = _mm512_set1_epi8(0x03);
    __m512i a[4][4];
    for (int r = 0; r < R; r++)
        for (int g = 0; g < 4; g++) a[r][g] = _mm512_setzero_si512();
    int32_t pairs = blocks / 2;
    for (int32_t j = 0; j < pairs; j++) {
        const int8_t *qj = qp + (size_t)j * 256;
        __m512i q0 = _mm512_loadu_si512(qj), q1 = _mm512_loadu_si512(qj + 64);
        __m512i q2 = _mm512_loadu_si512(qj + 128), q3 = _mm512_loadu_si512(qj + 192);
        for (int r = 0; r < R; r++) {
            __m512i x = _mm512_loadu_si512(w + (size_t)r * stride + (size_t)j * 64);
            /* The hardware prefetcher ramps up too slowly on these short interleaved
             * streams; asking for the next row group's bytes now nearly doubles the
             * DRAM throughput on 2560-column rows. Prefetches past the matrix are harmless. */
            _mm_prefetch((const char *)(w + (size_t)(r + R) * stride + (size_t)j * 64),
                         _MM_HINT_T0);
            a[r][0] = _mm512_dpbusd_epi32(a[r][0], _mm512_and_si512(x, mC0), q0);
            a[r][1] = _mm512_dpbusd_epi32(a[r][1], _mm512_and_si512(x, m30), q1);
            a[r][2] = _mm512_dpbusd_epi32(a[r][2], _mm512_and_si512(x, m0C), q2);
            a[r][3] = _mm512_dpbusd_epi32(a[r][3], _mm512_and_si512(x, m03), q3);
        }
    }
    for (int r = 0; r < R; r++) {
        int32_t s0 = _mm512_reduce_add_epi32(a[r][0]), s1 = _mm512_reduce_add_epi32(a[r][1]);
        int32_t s2 = _mm512_reduce_add_epi32(a[r][2]), s3 = _mm512_reduce_add_epi32(a[r][3]);
        if (blocks & 1) {
            /* the odd last block: natural activation order, 256-bit */
            const int8_t *qb = q + (size_t)pairs * 256;
            __m256i x =
                _mm256_loadu_si256((const __m256i *)(w + (size_t)r * stride + (size_t)pairs * 64));
            __m256i m3 = _mm256_set1_epi8(3), z = _mm256_setzero_si256();
            __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(x, 6), m3);
            __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(x, 4), m3);
            __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(x, 2), m3);
            __m256i c3 = _mm256_and_si256(x, m3);
            __m256i t = _mm256_dpbusd_epi32(z, c0, _mm256_loadu_si256((const __m256i *)qb));
            t = _mm256_dpbusd_epi32(t, c1, _mm256_loadu_si256((const __m256i *)(qb + 32)));
            t = _mm256_dpbusd_epi32(t, c2, _mm256_loadu_si256((const __m256i *)(qb + 64)));
            t = _mm256_dpbusd_epi32(t, c3, _mm256_loadu_si256((const __m256i *)(qb + 96)));
            s3 += hsum256(t);
        }
        /* s0, s1, s2 hold 64, 16, 4 times their sums; the shifts divide exactly */
        out[r] = (s0 >> 6) + (s1 >> 4) + (s2 >> 2) + s3 - sumq;
    }
}

static void gemv_t5(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q, int32_t *acc);

static void gemv_avx512(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q,
                        int32_t *acc)
{
    if (m->packed_kind == BR_PACK_T5 && m->packed) {
        gemv_t5(m, r0, r1, q, acc);
        return;
    }
    size_t kpad = (size_t)m->blocks * BR_TMAT_BLOCK;
    int32_t pairs = m->blocks / 2;
    _Alignas(64) int8_t stack_qp[QP_STACK];
    int8_t *qp = stack_qp;
    if ((size_t)pairs * 256 > QP_STACK) {
        qp = aligned_alloc(64, (size_t)pairs * 256);
        if (!qp) { /* no memory for the copy: the reference needs none */
            br_tmat_gemv_ref(m, r0, r1, q, acc);
            return;
        }
    }
    permute_q(q, pairs, qp);
    int32_t sumq = sum_i8_avx512(q, kpad);
    int32_t r = r0;
    for (; r + 4 <= r1; r += 4)
        gemv_rows(m->codes + (size_t)r * m->row_bytes, m->row_bytes, m->blocks, q, qp, sumq, 4,
                  acc + (r - r0));
    for (; r < r1; r++)
        gemv_rows(m->codes + (size_t)r * m->row_bytes, m->row_bytes, m->blocks, q, qp, sumq, 1,
                  acc + (r - r0));
    if (qp != stack_qp) free(qp);
}

/* ---- GEMM, canonical codes ---- */

#define GEMM_T 8 /* tokens per block */
_Static_assert(GEMM_T == 8, "reduce16 sums 2 rows x 8 tokens");

#define GEMM_KC 16 /* most block pairs per column chunk: 8 tokens x 16 x 256 B = 32 KiB of L1 */

/* R rows (<= 2) times T tokens (<= 8) over block pairs j0..j1-1 (plus the odd last block
 * when `tail`), added to out. qp: (T, pairs * 256) permuted activations; q: original
 * activations, read for the odd last block. */
/* The hot shape, 2 rows x 8 tokens, written with named accumulators: with arrays the
 * compiler shuffled and spilled registers inside the loop, costing about a fifth of the
 * multiply-add rate. Leaves the 16 sums in acc[r * 8 + t]. */
#define G2X8_STEP(t)                                                                               \
    do {                                                                                           \
        __m512i qv = _mm512_loadu_si512(qj + (size_t)(t)*qp_stride);                               \
        a0##t = _mm512_dpbusd_epi32(a0##t, c0, qv);                                                \
        a1##t = _mm512_dpbusd_epi32(a1##t, c1, qv);                                                \
    } while (0)
#define G2X8_GROUP(g)                                                                              \
    do {                                                                                           \
        __m512i c0 = (g) == 3 ? _mm512_and_si512(x0, m3)                                           \
                              : _mm512_and_si512(_mm512_srli_epi16(x0, 6 - 2 * (g)), m3);          \
        __m512i c1 = (g) == 3 ? _mm512_and_si512(x1, m3)                                           \
                              : _mm512_and_si512(_mm512_srli_epi16(x1, 6 - 2 * (g)), m3);          \
        const int8_t *qj = qp + (size_t)j * 256 + 64 * (g);                                        \
        G2X8_STEP(0);                                                                              \
        G2X8_STEP(1);                                                                              \
        G2X8_STEP(2);                                                                              \
        G2X8_STEP(3);                                                                              \
        G2X8_STEP(4);                                                                              \
        G2X8_STEP(5);                                                                              \
        G2X8_STEP(6);                                                                              \
        G2X8_STEP(7);                                                                              \
    } while (0)

static void gemm_core_2x8(const uint8_t *w, size_t stride, int32_t j0, int32_t j1, const int8_t *qp,
                          size_t qp_stride, __m512i *acc)
{
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a04 = a00, a05 = a00,
            a06 = a00, a07 = a00;
    __m512i a10 = a00, a11 = a00, a12 = a00, a13 = a00, a14 = a00, a15 = a00, a16 = a00, a17 = a00;
    for (int32_t j = j0; j < j1; j++) {
        __m512i x0 = _mm512_loadu_si512(w + (size_t)j * 64);
        __m512i x1 = _mm512_loadu_si512(w + stride + (size_t)j * 64);
        /* the next row pair's bytes, so DRAM streams while the multiply-adds run */
        _mm_prefetch((const char *)(w + 2 * stride + (size_t)j * 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + 3 * stride + (size_t)j * 64), _MM_HINT_T0);
        G2X8_GROUP(0);
        G2X8_GROUP(1);
        G2X8_GROUP(2);
        G2X8_GROUP(3);
    }
    acc[0] = a00, acc[1] = a01, acc[2] = a02, acc[3] = a03;
    acc[4] = a04, acc[5] = a05, acc[6] = a06, acc[7] = a07;
    acc[8] = a10, acc[9] = a11, acc[10] = a12, acc[11] = a13;
    acc[12] = a14, acc[13] = a15, acc[14] = a16, acc[15] = a17;
}
#undef G2X8_GROUP
#undef G2X8_STEP

static inline __attribute__((always_inline)) void
gemm_rows(const uint8_t *w, size_t stride, int32_t j0, int32_t j1, int tail, const int8_t *q,
          size_t q_stride, const int8_t *qp, size_t qp_stride, int R, int T, int32_t *out,
          size_t out_stride)
{
    __m512i a[2][GEMM_T];
    int32_t pairs = j1;
    if (R == 2 && T == GEMM_T) {
        gemm_core_2x8(w, stride, j0, j1, qp, qp_stride, &a[0][0]);
    } else {
        const __m512i m3 = _mm512_set1_epi8(3);
        for (int r = 0; r < 2; r++)
            for (int t = 0; t < GEMM_T; t++) a[r][t] = _mm512_setzero_si512();
        for (int32_t j = j0; j < j1; j++) {
            __m512i x[2];
            for (int r = 0; r < R; r++)
                x[r] = _mm512_loadu_si512(w + (size_t)r * stride + (size_t)j * 64);
            /* one bit pair at a time keeps few code registers live next to the R*T sums */
            for (int g = 0; g < 4; g++) {
                __m512i c[2];
                for (int r = 0; r < R; r++)
                    c[r] = _mm512_and_si512(_mm512_srli_epi16(x[r], 6 - 2 * g), m3);
                const int8_t *qj = qp + (size_t)j * 256 + 64 * g;
                for (int t = 0; t < T; t++) {
                    __m512i qv = _mm512_loadu_si512(qj + (size_t)t * qp_stride);
                    for (int r = 0; r < R; r++) a[r][t] = _mm512_dpbusd_epi32(a[r][t], c[r], qv);
                }
            }
        }
    }
    int32_t sums[2 * GEMM_T];
    _mm512_storeu_si512(sums, reduce16(&a[0][0]));
    for (int r = 0; r < R; r++) {
        __m256i c[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                        _mm256_setzero_si256()};
        if (tail) {
            __m256i x =
                _mm256_loadu_si256((const __m256i *)(w + (size_t)r * stride + (size_t)pairs * 64));
            __m256i m3y = _mm256_set1_epi8(3);
            c[0] = _mm256_and_si256(_mm256_srli_epi16(x, 6), m3y);
            c[1] = _mm256_and_si256(_mm256_srli_epi16(x, 4), m3y);
            c[2] = _mm256_and_si256(_mm256_srli_epi16(x, 2), m3y);
            c[3] = _mm256_and_si256(x, m3y);
        }
        for (int t = 0; t < T; t++) {
            int32_t s = sums[r * GEMM_T + t];
            if (tail) {
                const int8_t *qb = q + (size_t)t * q_stride + (size_t)pairs * 256;
                __m256i u = _mm256_setzero_si256();
                for (int g = 0; g < 4; g++)
                    u = _mm256_dpbusd_epi32(u, c[g],
                                            _mm256_loadu_si256((const __m256i *)(qb + 32 * g)));
                s += hsum256(u);
            }
            out[(size_t)t * out_stride + (size_t)r] += s;
        }
    }
}

/* One tile: R rows (1 or 2) x T tokens (1..8) over pairs j0..j1-1; constant shapes keep
 * every accumulator in a register. */
static void gemm_tile(const uint8_t *w, size_t stride, int R, int T, int32_t j0, int32_t j1,
                      int tail, const int8_t *q, size_t q_stride, const int8_t *qp,
                      size_t qp_stride, int32_t *o, size_t acc_stride)
{
#define GEMM_CASE(RR, TT)                                                                          \
    gemm_rows(w, stride, j0, j1, tail, q, q_stride, qp, qp_stride, RR, TT, o, acc_stride);         \
    return
    if (R == 2) {
        switch (T) {
        case 8:
            GEMM_CASE(2, 8);
        case 7:
            GEMM_CASE(2, 7);
        case 6:
            GEMM_CASE(2, 6);
        case 5:
            GEMM_CASE(2, 5);
        case 4:
            GEMM_CASE(2, 4);
        case 3:
            GEMM_CASE(2, 3);
        case 2:
            GEMM_CASE(2, 2);
        default:
            GEMM_CASE(2, 1);
        }
    }
    switch (T) {
    case 8:
        GEMM_CASE(1, 8);
    case 7:
        GEMM_CASE(1, 7);
    case 6:
        GEMM_CASE(1, 6);
    case 5:
        GEMM_CASE(1, 5);
    case 4:
        GEMM_CASE(1, 4);
    case 3:
        GEMM_CASE(1, 3);
    case 2:
        GEMM_CASE(1, 2);
    default:
        GEMM_CASE(1, 1);
    }
#undef GEMM_CASE
}

#define GEMM_TS       64           /* tokens whose activations are permuted together */
#define GEMM_RB_BYTES (512 * 1024) /* weight bytes of a row block, kept in L2 */

/* Loop nest, outermost first: 64-token super-blocks (activations permuted once), row
 * blocks of about 512 KiB of weights (stay in L2 while every token block of the
 * super-block passes), 8-token blocks, column chunks (their activations stay in L1),
 * row pairs. So a weight byte comes from memory once per 64 tokens, from L2 once per 8. */
static void gemm_avx512(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                        const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    size_t kpad = (size_t)m->blocks * BR_TMAT_BLOCK;
    int32_t pairs = m->blocks / 2;
    size_t qp_stride = (size_t)pairs * 256;
    /* equal chunks of at most GEMM_KC pairs: every chunk ends with a reduction */
    int32_t nchunks = (pairs + GEMM_KC - 1) / GEMM_KC;
    int32_t kc = nchunks ? (pairs + nchunks - 1) / nchunks : 1;
    int32_t rb = (int32_t)(GEMM_RB_BYTES / m->row_bytes) & ~1;
    if (rb < 2) rb = 2;
    int32_t ts_max = ntok < GEMM_TS ? ntok : GEMM_TS;
    int8_t *qp = aligned_alloc(64, qp_stride * (size_t)ts_max + 64);
    if (!qp) {
        br_tmat_gemm_ref(m, r0, r1, ntok, q, q_stride, acc, acc_stride);
        return;
    }
    for (int32_t s0 = 0; s0 < ntok; s0 += GEMM_TS) {
        int32_t ts = ntok - s0 < GEMM_TS ? ntok - s0 : GEMM_TS;
        for (int32_t t = 0; t < ts; t++) {
            const int8_t *qt = q + (size_t)(s0 + t) * q_stride;
            permute_q(qt, pairs, qp + (size_t)t * qp_stride);
            int32_t sumq = sum_i8_avx512(qt, kpad);
            int32_t *at = acc + (size_t)(s0 + t) * acc_stride;
            for (int32_t r = r0; r < r1; r++) at[r - r0] = -sumq;
        }
        for (int32_t b0 = r0; b0 < r1; b0 += rb) {
            int32_t b1 = b0 + rb < r1 ? b0 + rb : r1;
            for (int32_t t0 = 0; t0 < ts; t0 += GEMM_T) {
                int T = ts - t0 < GEMM_T ? (int)(ts - t0) : GEMM_T;
                const int8_t *qt = q + (size_t)(s0 + t0) * q_stride;
                const int8_t *qpt = qp + (size_t)t0 * qp_stride;
                int32_t *at = acc + (size_t)(s0 + t0) * acc_stride;
                for (int32_t j0 = 0;; j0 += kc) {
                    int32_t j1 = j0 + kc < pairs ? j0 + kc : pairs;
                    int tail = j1 == pairs && (m->blocks & 1);
                    for (int32_t r = b0; r < b1; r += 2)
                        gemm_tile(m->codes + (size_t)r * m->row_bytes, m->row_bytes,
                                  r + 2 <= b1 ? 2 : 1, T, j0, j1, tail, qt, q_stride, qpt,
                                  qp_stride, at + (r - r0), acc_stride);
                    if (j1 >= pairs) break;
                }
            }
        }
    }
    free(qp);
}

/* ---- 1.6-bit layout (VBMI) ---- */

#define T5_COLS 320 /* columns per 64-byte chunk */

static size_t t5_row_bytes(const struct br_tmat *m)
{
    size_t kpad = (size_t)m->blocks * BR_TMAT_BLOCK;
    return (kpad + T5_COLS - 1) / T5_COLS * 64;
}

int br_tmat_pack_t5_avx512(struct br_tmat *m)
{
    size_t rb = t5_row_bytes(m), kpad = (size_t)m->blocks * BR_TMAT_BLOCK;
    uint8_t *p = aligned_alloc(64, rb * (size_t)m->rows);
    if (!p) return BR_E_NOMEM;
    static const int pow3[5] = {1, 3, 9, 27, 81};
    for (int32_t r = 0; r < m->rows; r++) {
        uint8_t *dst = p + (size_t)r * rb;
        for (size_t j = 0; j < rb / 64; j++)
            for (int b = 0; b < 64; b++) {
                int v = 0;
                for (int n = 0; n < 5; n++) {
                    size_t k = j * T5_COLS + 64 * (size_t)n + (size_t)b;
                    int c = k < (size_t)m->cols ? br_tmat_get(m, r, (int32_t)k) + 1 : 1;
                    (void)kpad;
                    v += c * pow3[n];
                }
                dst[j * 64 + (size_t)b] = (uint8_t)v;
            }
    }
    free(m->packed);
    m->packed = p;
    m->packed_kind = BR_PACK_T5;
    return BR_OK;
}

__attribute__((target("avx512vbmi"))) static void gemv_t5_rows(const uint8_t *packed, size_t rb,
                                                               int32_t nrows, const int8_t *qz,
                                                               int32_t sumq, int32_t *out)
{
    /* tab[n][i]: entry 64i + e is trit n of the byte value 64i + e (0 for values >= 243) */
    _Alignas(64) uint8_t tabs[5][256];
    for (int v = 0; v < 256; v++) {
        int x = v;
        for (int n = 0; n < 5; n++) {
            tabs[n][v] = v < 243 ? (uint8_t)(x % 3) : 0;
            x /= 3;
        }
    }
    __m512i t[5][4];
    for (int n = 0; n < 5; n++)
        for (int i = 0; i < 4; i++) t[n][i] = _mm512_load_si512(tabs[n] + 64 * i);
    size_t chunks = rb / 64;
    for (int32_t r = 0; r < nrows; r++) {
        const uint8_t *w = packed + (size_t)r * rb;
        /* one accumulator per trit: a single chain would wait on vpdpbusd latency */
        __m512i acc[5];
        for (int n = 0; n < 5; n++) acc[n] = _mm512_setzero_si512();
        for (size_t j = 0; j < chunks; j++) {
            __m512i v = _mm512_load_si512(w + 64 * j);
            _mm_prefetch((const char *)(w + rb + 64 * j), _MM_HINT_T0);
            __mmask64 hi = _mm512_movepi8_mask(v);
            const int8_t *qj = qz + j * T5_COLS;
            for (int n = 0; n < 5; n++) {
                __m512i lo = _mm512_permutex2var_epi8(t[n][0], v, t[n][1]);
                __m512i up = _mm512_permutex2var_epi8(t[n][2], v, t[n][3]);
                __m512i c = _mm512_mask_blend_epi8(hi, lo, up);
                acc[n] = _mm512_dpbusd_epi32(acc[n], c, _mm512_loadu_si512(qj + 64 * n));
            }
        }
        __m512i sum = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]),
                                       _mm512_add_epi32(acc[2], _mm512_add_epi32(acc[3], acc[4])));
        out[r] = _mm512_reduce_add_epi32(sum) - sumq;
    }
}

static void gemv_t5(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q, int32_t *acc)
{
    size_t kpad = (size_t)m->blocks * BR_TMAT_BLOCK, rb = t5_row_bytes(m);
    size_t qlen = rb / 64 * T5_COLS;
    _Alignas(64) int8_t stack_q[QP_STACK];
    int8_t *qz = stack_q;
    if (qlen > QP_STACK) {
        qz = aligned_alloc(64, qlen);
        if (!qz) {
            br_tmat_gemv_ref(m, r0, r1, q, acc);
            return;
        }
    }
    memcpy(qz, q, kpad);
    memset(qz + kpad, 0, qlen - kpad);
    gemv_t5_rows((const uint8_t *)m->packed + (size_t)r0 * rb, rb, r1 - r0, qz,
                 sum_i8_avx512(q, kpad), acc);
    if (qz != stack_q) free(qz);
}

/* ---- canonical float dots ---- */

static inline float combine8(__m256 l)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(l), _mm256_extractf128_ps(l, 1));
    __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

/* The canonical order has 8 lanes, so the 256-bit FMA is the natural width; AVX-512
 * adds only masked tails (lanes outside the mask keep their value exactly). */
static float dot_f32_avx512(const float *a, const float *b, size_t n)
{
    __m256 l = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        l = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), l);
    if (k < n) {
        __mmask8 mk = (__mmask8)((1u << (n - k)) - 1);
        l = _mm256_mask3_fmadd_ps(_mm256_maskz_loadu_ps(mk, a + k),
                                  _mm256_maskz_loadu_ps(mk, b + k), l, mk);
    }
    return combine8(l);
}

static float dot_f16_f32_avx512(const uint16_t *w, const float *x, size_t n)
{
    __m256 l = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 wf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + k)));
        l = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + k), l);
    }
    if (k < n) {
        __mmask8 mk = (__mmask8)((1u << (n - k)) - 1);
        __m256 wf = _mm256_cvtph_ps(_mm_maskz_loadu_epi16(mk, w + k));
        l = _mm256_mask3_fmadd_ps(wf, _mm256_maskz_loadu_ps(mk, x + k), l, mk);
    }
    return combine8(l);
}

/* 20 independent vpdpbusd chains (more than latency x throughput); 64 MACs each.
 * Written in asm because the compiler would merge identical chains. */
#define DP(i) "vpdpbusd %[q], %[c], %[a" #i "]\n\t"
static int64_t peak_macs_avx512(int64_t iters)
{
    __m512i c = _mm512_set1_epi8(1), q = _mm512_set1_epi8(1);
    __m512i a[20];
    for (int k = 0; k < 20; k++) a[k] = _mm512_set1_epi32(k);
    __m512i a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5], a6 = a[6], a7 = a[7],
            a8 = a[8], a9 = a[9], a10 = a[10], a11 = a[11], a12 = a[12], a13 = a[13], a14 = a[14],
            a15 = a[15], a16 = a[16], a17 = a[17], a18 = a[18], a19 = a[19];
    for (int64_t i = 0; i < iters; i++) {
        __asm__ volatile(
            DP(0) DP(1) DP(2) DP(3) DP(4) DP(5) DP(6) DP(7) DP(8) DP(9)
            : [a0] "+v"(a0), [a1] "+v"(a1), [a2] "+v"(a2), [a3] "+v"(a3), [a4] "+v"(a4),
              [a5] "+v"(a5), [a6] "+v"(a6), [a7] "+v"(a7), [a8] "+v"(a8), [a9] "+v"(a9)
            : [c] "v"(c), [q] "v"(q));
        __asm__ volatile(
            DP(10) DP(11) DP(12) DP(13) DP(14) DP(15) DP(16) DP(17) DP(18) DP(19)
            : [a10] "+v"(a10), [a11] "+v"(a11), [a12] "+v"(a12), [a13] "+v"(a13), [a14] "+v"(a14),
              [a15] "+v"(a15), [a16] "+v"(a16), [a17] "+v"(a17), [a18] "+v"(a18), [a19] "+v"(a19)
            : [c] "v"(c), [q] "v"(q));
    }
    __m512i s =
        _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                         _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
    s = _mm512_add_epi32(s,
                         _mm512_add_epi32(_mm512_add_epi32(a12, a13), _mm512_add_epi32(a14, a15)));
    s = _mm512_add_epi32(s,
                         _mm512_add_epi32(_mm512_add_epi32(a16, a17), _mm512_add_epi32(a18, a19)));
    __asm__ volatile("" ::"v"(s));
    return iters * 20 * 64;
}
#undef DP

const struct br_kernel_ops br_kernels_avx512 = {
    .name = "avx512",
    .gemv = gemv_avx512,
    .gemm = gemm_avx512,
    .prepare = NULL,
    .dot_f32 = dot_f32_avx512,
    .dot_f16_f32 = dot_f16_f32_avx512,
    .peak_macs = peak_macs_avx512,
};
