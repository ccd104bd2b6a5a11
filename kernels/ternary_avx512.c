/*
 * AVX-512 kernels (F, BW, VL, DQ, VNNI): ternary GEMV/GEMM with vpdpbusd, the canonical
 * float dots, and an alternative 1.6-bit weight layout that is not built by default.
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
 * Rows go four at a time (sharing the activation loads; 1 and 2 are calibration choices),
 * and each load also prefetches the same bytes of a later row group: the hardware
 * prefetcher alone does not keep these short interleaved streams at the DRAM bandwidth.
 * The four rows' lane sums are reduced together at the end of the group. The four
 * activation vectors of a step are loaded once into registers for all rows of the group,
 * except on rows longer than GEMV_QREG_MAX allows (see there).
 *
 * GEMM. vpdpbusd runs on two ports (two per cycle on Sapphire Rapids) and every other
 * vector instruction takes one of those slots, so the GEMM counts instructions per
 * multiply-add. A tile is 2 rows x up to 12 tokens: 24 accumulators in named registers
 * (an array of them would be stored to the stack on every iteration). Per block pair and bit
 * pair, each row's 64 codes are decoded once into true codes by one gf2p8affineqb where
 * the CPU has GFNI (a shift and an AND otherwise) and meet up to 12 tokens, so decoding
 * costs 1 instruction per 12 vpdpbusd. A tile's activations are permuted with its tokens
 * interleaved, so every load is one pointer plus a constant; each activation vector is
 * loaded once into a register for both rows (as a memory operand of both multiply-adds
 * the loads alone would fill the load ports). The lane sums are reduced once per tile
 * (24 registers in 68 instructions); longer rows are cut into column chunks whose sums
 * are carried in memory, not reduced. Decoding in registers, per tile, beats reading
 * back from L2 a copy of each row block's codes decoded once per 64 tokens. The shapes
 * tried and their fractions of the peak are in docs/PERFORMANCE.md ("Kernel shapes").
 *
 * 1.6-bit layout (BR_PACK_T5, needs VBMI): a row is cut into chunks of 320 columns, 64
 * bytes each; byte p of chunk j holds the codes of columns 320j + 64n + p (n = 0..4) as
 * v = sum c_n 3^n (v < 243). Decoding looks each trit up in 256-entry tables with two
 * vpermi2b and a blend on v's top bit. Columns past kpad hold code 1 and meet q = 0.
 *
 * Why 2 bits is the default: the 1.6-bit GEMV is bound by its decode, even from cache,
 * below the rate at which the 2-bit GEMV streams DRAM, so fewer bytes only pay off where
 * a core gets little DRAM bandwidth, and the packed copy would sit next to the canonical
 * codes (which must stay). So prepare() builds nothing; the 1.6-bit path stays, tested,
 * for machines where that balance differs (the rates: docs/PERFORMANCE.md, "Kernel
 * shapes").
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/combine_x86.h"
#include "kernels/kernel_impl.h"
#include "kernels/probe_impl.h"
#include "kernels/scratch.h"
#include "kernels/tune.h"
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

/* The 4 * pairs permuted 64-byte vectors of q (see the header comment), vector 4j + g at
 * qp + (4j + g) * step: step 64 packs them, a GEMM tile of T tokens interleaves its
 * tokens with step 64 T. */
static void permute_q(const int8_t *q, int32_t pairs, int8_t *qp, size_t step)
{
    for (int32_t j = 0; j < pairs; j++) {
        const int8_t *a = q + (size_t)j * 256, *b = a + 128;
        int8_t *d = qp + (size_t)j * 4 * step;
        for (int g = 0; g < 4; g++) {
            __m256i lo = _mm256_loadu_si256((const __m256i *)(a + 32 * g));
            __m256i hi = _mm256_loadu_si256((const __m256i *)(b + 32 * g));
            _mm512_storeu_si512(d + (size_t)g * step,
                                _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
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

/* The same for 24 registers: sums[i] = lane sum of a[i], i < 24 (68 instructions, against
 * 90 for two reduce16). */
static inline void reduce24(const __m512i *a, int32_t *sums)
{
    __m512i b[12], c[6];
    for (int k = 0; k < 12; k++)
        b[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * k], a[2 * k + 1]),
                                _mm512_unpackhi_epi32(a[2 * k], a[2 * k + 1]));
    for (int k = 0; k < 6; k++) /* each 128-bit lane: [a4k .. a4k+3] partials */
        c[k] = _mm512_add_epi32(_mm512_unpacklo_epi64(b[2 * k], b[2 * k + 1]),
                                _mm512_unpackhi_epi64(b[2 * k], b[2 * k + 1]));
    __m512i d[3];
    for (int k = 0; k < 3; k++)
        d[k] =
            _mm512_add_epi32(_mm512_shuffle_i32x4(c[2 * k], c[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_i32x4(c[2 * k], c[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_si512(
        sums, _mm512_add_epi32(_mm512_shuffle_i32x4(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_i32x4(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1))));
    /* d2 = [c4 half, c4 half, c5 half, c5 half]: add the neighbouring quarters */
    __m512i e = _mm512_add_epi32(d[2], _mm512_shuffle_i32x4(d[2], d[2], _MM_SHUFFLE(2, 3, 0, 1)));
    _mm256_storeu_si256((__m256i *)(sums + 16), _mm512_castsi512_si256(_mm512_shuffle_i32x4(
                                                    e, e, _MM_SHUFFLE(2, 0, 2, 0))));
}

/* ---- GEMV, canonical codes ---- */

/* The lane sums of one row's four accumulators (a0..a3 hold 64, 16, 4 and 1 times their
 * codes' products): every lane of a0, a1, a2 is a multiple of 64, 16, 4, so the lane-wise
 * shifts divide exactly and one vector serves the row instead of four. */
static inline __m512i row_lanes(__m512i a0, __m512i a1, __m512i a2, __m512i a3)
{
    return _mm512_add_epi32(_mm512_add_epi32(_mm512_srai_epi32(a0, 6), _mm512_srai_epi32(a1, 4)),
                            _mm512_add_epi32(_mm512_srai_epi32(a2, 2), a3));
}

/* The odd last block of a row: natural activation order, 256-bit. */
static inline int32_t odd_block(const uint8_t *w, const int8_t *qb)
{
    __m256i x = _mm256_loadu_si256((const __m256i *)w);
    __m256i m3 = _mm256_set1_epi8(3), z = _mm256_setzero_si256();
    __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(x, 6), m3);
    __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(x, 4), m3);
    __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(x, 2), m3);
    __m256i c3 = _mm256_and_si256(x, m3);
    __m256i t = _mm256_dpbusd_epi32(z, c0, _mm256_loadu_si256((const __m256i *)qb));
    t = _mm256_dpbusd_epi32(t, c1, _mm256_loadu_si256((const __m256i *)(qb + 32)));
    t = _mm256_dpbusd_epi32(t, c2, _mm256_loadu_si256((const __m256i *)(qb + 64)));
    t = _mm256_dpbusd_epi32(t, c3, _mm256_loadu_si256((const __m256i *)(qb + 96)));
    return hsum256(t);
}

/* The lane sums of four vectors as one 128-bit vector [sum v0, sum v1, sum v2, sum v3]:
 * a transpose-and-add tree of 13 instructions instead of four horizontal sums. */
static inline __m128i reduce4(__m512i v0, __m512i v1, __m512i v2, __m512i v3)
{
    __m512i b0 = _mm512_add_epi32(_mm512_unpacklo_epi32(v0, v1), _mm512_unpackhi_epi32(v0, v1));
    __m512i b1 = _mm512_add_epi32(_mm512_unpacklo_epi32(v2, v3), _mm512_unpackhi_epi32(v2, v3));
    /* each 128-bit lane: partials of [v0, v1, v2, v3] */
    __m512i c = _mm512_add_epi32(_mm512_unpacklo_epi64(b0, b1), _mm512_unpackhi_epi64(b0, b1));
    __m256i d = _mm256_add_epi32(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64(c, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
}

/* acc + vpdpbusd(c, q), in place. GCC 12 compiles the intrinsic in a loop with many
 * accumulators into a copy of each accumulator before the instruction and another after
 * it (and spills some of them); the asm operand "+v" keeps every accumulator in its
 * register. */
static inline __attribute__((always_inline)) __m512i dpbusd(__m512i acc, __m512i c, __m512i q)
{
    __asm__("vpdpbusd %[q], %[c], %[a]" : [a] "+v"(acc) : [c] "v"(c), [q] "v"(q));
    return acc;
}

/* The same with q read from memory (a folded load). */
static inline __attribute__((always_inline)) __m512i dpbusd_m(__m512i acc, __m512i c,
                                                              const int8_t *q)
{
    __asm__("vpdpbusd %[q], %[c], %[a]"
            : [a] "+v"(acc)
            : [c] "v"(c), [q] "m"(*(const __m512i *)(const void *)q));
    return acc;
}

/* Permuted activation bytes up to which the GEMV keeps each step's four activation vectors
 * in registers for all R rows; past it every row's vpdpbusd reads them from memory (folded
 * loads). Longer rows leave their activations to L2 (beyond half of a 32 KiB L1), and then
 * the four loads that open each step hold it up, so such rows stream memory faster with
 * folded loads; on shorter rows the folded loads are the slower form, from memory and
 * from L2 (docs/PERFORMANCE.md, "The decode GEMVs' instructions"). */
#define GEMV_QREG_MAX 16384

/* One pass over the activations for R rows (1, 2 or 4) of `blocks` blocks each. Per 64
 * bytes of a row's codes (256 weights): one load, one prefetch, four ANDs and four
 * vpdpbusd; the four permuted activation vectors are loaded once for all R rows. Every
 * accumulator is a named variable and goes through dpbusd() or dpbusd_m(): with an array
 * of them and the intrinsic, GCC 12 copied the sixteen registers into one another and
 * five of them to the stack on every iteration. */
static inline __attribute__((always_inline)) void
gemv_rows(const uint8_t *w, size_t stride, int32_t blocks, const int8_t *q, const int8_t *qp,
          int32_t sumq, int R, size_t pf, int hint, int qmem, int32_t *out)
{
    const __m512i mC0 = _mm512_set1_epi8((char)0xC0), m30 = _mm512_set1_epi8(0x30);
    const __m512i m0C = _mm512_set1_epi8(0x0C), m03 = _mm512_set1_epi8(0x03);
    const __m512i z = _mm512_setzero_si512();
    __m512i a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    __m512i a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
    const uint8_t *w0 = w, *w1 = w + stride, *w2 = w + 2 * stride, *w3 = w + 3 * stride;
    const int32_t pairs = blocks / 2;
    const size_t end = (size_t)pairs * 64;
    const int8_t *qj = qp;
    for (size_t o = 0; o < end; o += 64, qj += 256) {
        const __m512i q0 = qmem ? z : _mm512_loadu_si512(qj);
        const __m512i q1 = qmem ? z : _mm512_loadu_si512(qj + 64);
        const __m512i q2 = qmem ? z : _mm512_loadu_si512(qj + 128);
        const __m512i q3 = qmem ? z : _mm512_loadu_si512(qj + 192);
        /* The hardware prefetcher ramps up too slowly on these short interleaved streams;
         * asking for later rows' bytes now nearly doubles the DRAM throughput on 2560-column
         * rows (Sapphire Rapids). How far ahead (pf bytes: row groups times the group's
         * bytes) and into which cache is calibrated per CPU (kernels/tune.h): the default,
         * T1 three groups ahead, took one-thread decode of 2B-4T on Zen 4 from 13.7 to 24-25
         * tokens/s against T0 one group ahead, whose lines crowd the 32 KiB L1 and its miss
         * buffers. Prefetches past the matrix are harmless. */
#define GEMV_ROW(r)                                                                                \
    do {                                                                                           \
        const __m512i x = _mm512_loadu_si512(w##r + o);                                            \
        br_prefetch(w##r + pf + o, hint);                                                          \
        if (qmem) {                                                                                \
            a##r##0 = dpbusd_m(a##r##0, _mm512_and_si512(x, mC0), qj);                             \
            a##r##1 = dpbusd_m(a##r##1, _mm512_and_si512(x, m30), qj + 64);                        \
            a##r##2 = dpbusd_m(a##r##2, _mm512_and_si512(x, m0C), qj + 128);                       \
            a##r##3 = dpbusd_m(a##r##3, _mm512_and_si512(x, m03), qj + 192);                       \
        } else {                                                                                   \
            a##r##0 = dpbusd(a##r##0, _mm512_and_si512(x, mC0), q0);                               \
            a##r##1 = dpbusd(a##r##1, _mm512_and_si512(x, m30), q1);                               \
            a##r##2 = dpbusd(a##r##2, _mm512_and_si512(x, m0C), q2);                               \
            a##r##3 = dpbusd(a##r##3, _mm512_and_si512(x, m03), q3);                               \
        }                                                                                          \
    } while (0)
        GEMV_ROW(0);
        if (R > 1) GEMV_ROW(1);
        if (R > 2) {
            GEMV_ROW(2);
            GEMV_ROW(3);
        }
#undef GEMV_ROW
    }
    const int8_t *qb = q + (size_t)pairs * 256;
    if (R == 4) {
        __m128i s = reduce4(row_lanes(a00, a01, a02, a03), row_lanes(a10, a11, a12, a13),
                            row_lanes(a20, a21, a22, a23), row_lanes(a30, a31, a32, a33));
        s = _mm_sub_epi32(s, _mm_set1_epi32(sumq));
        if (blocks & 1)
            s = _mm_add_epi32(s, _mm_setr_epi32(odd_block(w0 + end, qb), odd_block(w1 + end, qb),
                                                odd_block(w2 + end, qb), odd_block(w3 + end, qb)));
        _mm_storeu_si128((__m128i *)out, s);
        return;
    }
    out[0] = _mm512_reduce_add_epi32(row_lanes(a00, a01, a02, a03)) - sumq +
             ((blocks & 1) ? odd_block(w0 + end, qb) : 0);
    if (R > 1)
        out[1] = _mm512_reduce_add_epi32(row_lanes(a10, a11, a12, a13)) - sumq +
                 ((blocks & 1) ? odd_block(w1 + end, qb) : 0);
}

static void gemv_t5(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q, int32_t *acc);

/* One function per (rows per group, prefetch hint), so each has constant shapes. */
typedef void (*gemv_group_fn)(const uint8_t *w, size_t stride, int32_t blocks, const int8_t *q,
                              const int8_t *qp, int32_t sumq, size_t pf, int32_t *out);
#define GEMV_FN(R, H, M)                                                                           \
    static void gemv_##R##_##H##_##M(const uint8_t *w, size_t stride, int32_t blocks,              \
                                     const int8_t *q, const int8_t *qp, int32_t sumq, size_t pf,   \
                                     int32_t *out)                                                 \
    {                                                                                              \
        gemv_rows(w, stride, blocks, q, qp, sumq, R, pf, H, M, out);                               \
    }
#define GEMV_FNS(M)                                                                                \
    GEMV_FN(1, 0, M)                                                                               \
    GEMV_FN(1, 1, M)                                                                               \
    GEMV_FN(1, 2, M)                                                                               \
    GEMV_FN(1, 3, M)                                                                               \
    GEMV_FN(2, 0, M)                                                                               \
    GEMV_FN(2, 1, M)                                                                               \
    GEMV_FN(2, 2, M)                                                                               \
    GEMV_FN(2, 3, M)                                                                               \
    GEMV_FN(4, 0, M)                                                                               \
    GEMV_FN(4, 1, M)                                                                               \
    GEMV_FN(4, 2, M)                                                                               \
    GEMV_FN(4, 3, M)
GEMV_FNS(0)
GEMV_FNS(1)
#define GEMV_ROWS(R, M)                                                                            \
    {                                                                                              \
        gemv_##R##_0_##M, gemv_##R##_1_##M, gemv_##R##_2_##M, gemv_##R##_3_##M                     \
    }
/* [activations from memory][rows per group: 1, 2, 4 -> 0, 1, 2][hint] */
static const gemv_group_fn g_gemv_group[2][3][4] = {
    {GEMV_ROWS(1, 0), GEMV_ROWS(2, 0), GEMV_ROWS(4, 0)},
    {GEMV_ROWS(1, 1), GEMV_ROWS(2, 1), GEMV_ROWS(4, 1)}};
#undef GEMV_ROWS
#undef GEMV_FNS
#undef GEMV_FN

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
        qp = br_kernel_scratch(0, (size_t)pairs * 256);
        if (!qp) { /* no memory for the copy: the reference needs none */
            br_tmat_gemv_ref(m, r0, r1, q, acc);
            return;
        }
    }
    permute_q(q, pairs, qp, 64);
    int32_t sumq = sum_i8_avx512(q, kpad);
    const struct br_tune *tp = br_tune_active();
    int R = tp->gemv_rows == 1 ? 1 : tp->gemv_rows == 2 ? 2 : 4;
    size_t pf = (size_t)tp->gemv_ahead * (size_t)R * m->row_bytes;
    int qmem = (size_t)pairs * 256 > GEMV_QREG_MAX;
    gemv_group_fn group = g_gemv_group[qmem][R == 1 ? 0 : R == 2 ? 1 : 2][tp->gemv_hint & 3];
    int32_t r = r0;
    for (; r + R <= r1; r += R)
        group(m->codes + (size_t)r * m->row_bytes, m->row_bytes, m->blocks, q, qp, sumq, pf,
              acc + (r - r0));
    for (; r < r1; r++)
        g_gemv_group[qmem][0][BR_PF_T1](m->codes + (size_t)r * m->row_bytes, m->row_bytes,
                                        m->blocks, q, qp, sumq, pf, acc + (r - r0));
}

/* ---- GEMM, canonical codes ---- */

/* gf2p8affineqb matrices that move bit pair g of every byte (bits 7-2g, 6-2g) to bits 1-0
 * and clear the rest: output bit i is the parity of (matrix byte 7 - i) AND the input. */
#define GF_PAIR(g) (((uint64_t)1 << (6 - 2 * (g))) << 56 | ((uint64_t)1 << (7 - 2 * (g))) << 48)
static const uint64_t g_gf_pair[4] = {GF_PAIR(0), GF_PAIR(1), GF_PAIR(2), GF_PAIR(3)};
#undef GF_PAIR

/* Codes of bit pair g of the 64 bytes in x, as bytes 0..2. GFNI does it in one instruction
 * (written in asm so this file needs no -mgfni; only called where the CPU has GFNI), the
 * fallback with a 16-bit shift and a mask; every other vector instruction takes a slot
 * from vpdpbusd, which shares its two ports. */
static inline __attribute__((always_inline)) __m512i unpack_pair(__m512i x, int g, int gfni)
{
    if (gfni) {
        __m512i c;
        __asm__("vgf2p8affineqb $0, %[m]%{1to8%}, %[x], %[c]"
                : [c] "=v"(c)
                : [x] "v"(x), [m] "m"(g_gf_pair[g]));
        return c;
    }
    const __m512i m3 = _mm512_set1_epi8(3);
    return g == 3 ? _mm512_and_si512(x, m3) : _mm512_and_si512(_mm512_srli_epi16(x, 6 - 2 * g), m3);
}

#define GEMM_TMAX     12 /* tokens per tile: 2 x 12 accumulators fill 24 of the 32 registers */
#define GEMM_TS       64 /* tokens whose activations are permuted together */
#define GEMM_QL1      (36 * 1024)  /* activation bytes of one tile's column chunk, kept in L1 */
#define GEMM_RB_BYTES (512 * 1024) /* weight bytes of a row block, kept in L2 */

/* R rows (1 or 2) x T tokens (1..GEMM_TMAX) over block pairs j0..j1-1, adding to the
 * R * T accumulators a[r * T + t] (lane sums still apart). w: the first row's codes;
 * qp: the tile's permuted activations, tokens interleaved (vector 4j + g of token t at
 * qp + ((4j + g) T + t) * 64), so every load has a constant offset from one pointer. Each block
 * pair of codes is unpacked once per bit pair and meets T tokens, so the unpacking costs one
 * instruction per T multiply-adds. The accumulators are named variables (r, t): held in
 * an array, they were stored to the stack on every iteration. */
#define CORE_ACC(t)                                                                                \
    __m512i a0_##t = (t) < T && !first ? carry[t] : _mm512_setzero_si512();                        \
    __m512i a1_##t = R == 2 && (t) < T && !first ? carry[T + (t)] : _mm512_setzero_si512()
/* one load for both rows: folded into each vpdpbusd as a memory operand, the loads alone
 * would fill the two load ports */
#define CORE_STEP(t)                                                                               \
    if ((t) < T) {                                                                                 \
        __m512i qv = _mm512_loadu_si512(qj + 64 * (t));                                            \
        if (R == 2) __asm__("" : "+v"(qv));                                                        \
        a0_##t = _mm512_dpbusd_epi32(a0_##t, c0, qv);                                              \
        if (R == 2) a1_##t = _mm512_dpbusd_epi32(a1_##t, c1, qv);                                  \
    }
#define CORE_STORE(t)                                                                              \
    if ((t) < T) {                                                                                 \
        carry[t] = a0_##t;                                                                         \
        if (R == 2) carry[T + (t)] = a1_##t;                                                       \
    }
#define CORE_GATHER(t)                                                                             \
    if ((t) < T) {                                                                                 \
        v[t] = a0_##t;                                                                             \
        if (R == 2) v[T + (t)] = a1_##t;                                                           \
    }
#define CORE_ALL(X)                                                                                \
    X(0);                                                                                          \
    X(1);                                                                                          \
    X(2);                                                                                          \
    X(3);                                                                                          \
    X(4);                                                                                          \
    X(5);                                                                                          \
    X(6);                                                                                          \
    X(7);                                                                                          \
    X(8);                                                                                          \
    X(9);                                                                                          \
    X(10);                                                                                         \
    X(11)
_Static_assert(GEMM_TMAX == 12, "gemm_core names 12 tokens");

static inline __attribute__((always_inline)) void
gemm_core(const uint8_t *w, size_t stride, int32_t j0, int32_t j1, const int8_t *qp, int R, int T,
          int gfni, int first, int last, __m512i *carry, int32_t *sums)
{
    CORE_ALL(CORE_ACC);
    for (int32_t j = j0; j < j1; j++) {
        __m512i x0 = _mm512_loadu_si512(w + (size_t)j * 64), x1 = x0;
        if (R == 2) x1 = _mm512_loadu_si512(w + stride + (size_t)j * 64);
        /* the next row pair's bytes, so memory streams while the multiply-adds run;
         * prefetches past the matrix are harmless */
        _mm_prefetch((const char *)(w + (size_t)R * stride + (size_t)j * 64), _MM_HINT_T0);
        if (R == 2) _mm_prefetch((const char *)(w + 3 * stride + (size_t)j * 64), _MM_HINT_T0);
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) {
            __m512i c0 = unpack_pair(x0, g, gfni), c1 = c0;
            if (R == 2) c1 = unpack_pair(x1, g, gfni);
            const int8_t *qj = qp + ((size_t)j * 4 + (size_t)g) * 64 * (size_t)T;
            CORE_ALL(CORE_STEP);
        }
    }
    if (!last) {
        CORE_ALL(CORE_STORE);
        return;
    }
    /* sums[r * T + t]: the lane sums */
    __m512i v[24];
    for (int i = 0; i < 24; i++) v[i] = _mm512_setzero_si512();
    CORE_ALL(CORE_GATHER);
    if (R * T <= 16)
        _mm512_storeu_si512(sums, reduce16(v));
    else
        reduce24(v, sums);
}
#undef CORE_GATHER
#undef CORE_ALL
#undef CORE_STORE
#undef CORE_STEP
#undef CORE_ACC

/* One tile's work for a column chunk: `first` starts the sums at zero, otherwise they
 * continue from `carry`; `last` adds the odd last block (when `tail`), subtracts the
 * activation sums and writes out[t * out_stride + r]; otherwise the sums go back to
 * `carry` (R * T vectors). q: original activations of the tile's first token. */
struct gemm_tile_args {
    const uint8_t *w;
    size_t stride;
    int32_t j0, j1;
    int first, last, tail;
    const int8_t *q, *qp;
    size_t q_stride;
    const int32_t *sumq; /* (T,) */
    __m512i *carry;      /* (R * T,) */
    int32_t *out;
    size_t out_stride;
};

static inline __attribute__((always_inline)) void gemm_tile(const struct gemm_tile_args *g, int R,
                                                            int T, int gfni)
{
    _Alignas(64) int32_t sums[32];
    gemm_core(g->w, g->stride, g->j0, g->j1, g->qp, R, T, gfni, g->first, g->last, g->carry, sums);
    if (!g->last) return;
    int32_t pairs = g->j1;
    if (g->tail) {
        /* the odd last block: natural activation order, 256-bit */
        const __m256i m3 = _mm256_set1_epi8(3);
        for (int r = 0; r < R; r++) {
            __m256i x = _mm256_loadu_si256(
                (const __m256i *)(g->w + (size_t)r * g->stride + (size_t)pairs * 64));
            __m256i c[4] = {_mm256_and_si256(_mm256_srli_epi16(x, 6), m3),
                            _mm256_and_si256(_mm256_srli_epi16(x, 4), m3),
                            _mm256_and_si256(_mm256_srli_epi16(x, 2), m3), _mm256_and_si256(x, m3)};
            for (int t = 0; t < T; t++) {
                const int8_t *qb = g->q + (size_t)t * g->q_stride + (size_t)pairs * 256;
                __m256i u = _mm256_setzero_si256();
                for (int k = 0; k < 4; k++)
                    u = _mm256_dpbusd_epi32(u, c[k],
                                            _mm256_loadu_si256((const __m256i *)(qb + 32 * k)));
                sums[r * T + t] += hsum256(u);
            }
        }
    }
    int32_t *out = g->out;
    for (int t = 0; t < T; t++, out += g->out_stride) {
        out[0] = sums[t] - g->sumq[t];
        if (R == 2) out[1] = sums[T + t] - g->sumq[t];
    }
}

typedef void (*gemm_tile_fn)(const struct gemm_tile_args *g);

/* One function per (unpacking, rows, tokens), so each has constant shapes. */
#define TILE_FN(G, R, T)                                                                           \
    static void tile_##G##_##R##_##T(const struct gemm_tile_args *g)                               \
    {                                                                                              \
        gemm_tile(g, R, T, G);                                                                     \
    }
#define TILE_FNS(G, R)                                                                             \
    TILE_FN(G, R, 1)                                                                               \
    TILE_FN(G, R, 2)                                                                               \
    TILE_FN(G, R, 3)                                                                               \
    TILE_FN(G, R, 4)                                                                               \
    TILE_FN(G, R, 5)                                                                               \
    TILE_FN(G, R, 6)                                                                               \
    TILE_FN(G, R, 7)                                                                               \
    TILE_FN(G, R, 8)                                                                               \
    TILE_FN(G, R, 9)                                                                               \
    TILE_FN(G, R, 10)                                                                              \
    TILE_FN(G, R, 11)                                                                              \
    TILE_FN(G, R, 12)
TILE_FNS(0, 1)
TILE_FNS(0, 2)
TILE_FNS(1, 1)
TILE_FNS(1, 2)
#define TILE_ROW(G, R)                                                                             \
    {                                                                                              \
        NULL, tile_##G##_##R##_1, tile_##G##_##R##_2, tile_##G##_##R##_3, tile_##G##_##R##_4,      \
            tile_##G##_##R##_5, tile_##G##_##R##_6, tile_##G##_##R##_7, tile_##G##_##R##_8,        \
            tile_##G##_##R##_9, tile_##G##_##R##_10, tile_##G##_##R##_11, tile_##G##_##R##_12      \
    }
/* [gfni][rows - 1][tokens] */
static const gemm_tile_fn g_tiles[2][2][GEMM_TMAX + 1] = {{TILE_ROW(0, 1), TILE_ROW(0, 2)},
                                                          {TILE_ROW(1, 1), TILE_ROW(1, 2)}};
#undef TILE_ROW
#undef TILE_FNS
#undef TILE_FN

/* Loop nest, outermost first: 64-token super-blocks (activations permuted once), row
 * blocks of about 512 KiB of weights (they stay in L2 while every token tile of the
 * super-block passes), token tiles of up to 12, column chunks (a tile's activations stay
 * in L1; the sums of each row pair are carried from chunk to chunk in memory rather than
 * reduced), row pairs. A weight byte comes from memory once per 64 tokens and from L2
 * once per tile. */
void br_tmat_gemm_avx512_unpack(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                                const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride,
                                int gfni)
{
    if (r0 >= r1 || ntok <= 0) return;
    size_t kpad = (size_t)m->blocks * BR_TMAT_BLOCK;
    int32_t pairs = m->blocks / 2;
    size_t qp_stride = (size_t)pairs * 256;
    /* equal chunks of at most kc_max pairs */
    int32_t kc_max = GEMM_QL1 / (GEMM_TMAX * 256);
    int32_t nchunks = pairs > 0 ? (pairs + kc_max - 1) / kc_max : 1;
    int32_t kc = pairs > 0 ? (pairs + nchunks - 1) / nchunks : 0;
    const struct br_tune *tp = br_tune_active();
    int tmax = tp->gemm_tmax >= 1 && tp->gemm_tmax <= GEMM_TMAX ? tp->gemm_tmax : GEMM_TMAX;
    size_t rb_bytes = tp->gemm_rb_kib > 0 ? (size_t)tp->gemm_rb_kib * 1024 : GEMM_RB_BYTES;
    int32_t rb = (int32_t)(rb_bytes / m->row_bytes) & ~1;
    if (rb < 2) rb = 2;
    if (nchunks > 1 && rb > 64) rb = 64; /* the carried sums of a row block stay near L1 */
    int32_t ts_max = ntok < GEMM_TS ? ntok : GEMM_TS;
    int8_t *qp = br_kernel_scratch(0, qp_stride * (size_t)ts_max + 64);
    __m512i *carry = NULL;
    if (nchunks > 1) carry = br_kernel_scratch(1, (size_t)rb * GEMM_TMAX * sizeof *carry);
    if (!qp || (nchunks > 1 && !carry)) {
        br_tmat_gemm_ref(m, r0, r1, ntok, q, q_stride, acc, acc_stride);
        return;
    }
    int32_t sumq[GEMM_TS];
    struct gemm_tile_args g = {
        .stride = m->row_bytes, .q_stride = q_stride, .out_stride = acc_stride};
    for (int32_t s0 = 0; s0 < ntok; s0 += GEMM_TS) {
        int32_t ts = ntok - s0 < GEMM_TS ? ntok - s0 : GEMM_TS;
        /* tiles of nearly equal size: 64 tokens go as 11, 11, 11, 11, 10, 10 */
        int32_t ntiles = (ts + tmax - 1) / tmax;
        for (int32_t i = 0, t0 = 0; i < ntiles; i++) {
            int T = (int)(ts / ntiles + (i < ts % ntiles));
            for (int t = 0; t < T; t++) {
                const int8_t *qt = q + (size_t)(s0 + t0 + t) * q_stride;
                permute_q(qt, pairs, qp + (size_t)t0 * qp_stride + (size_t)t * 64, (size_t)T * 64);
                sumq[t0 + t] = sum_i8_avx512(qt, kpad);
            }
            t0 += T;
        }
        for (int32_t b0 = r0; b0 < r1; b0 += rb) {
            int32_t b1 = b0 + rb < r1 ? b0 + rb : r1;
            for (int32_t i = 0, t0 = 0; i < ntiles; i++) {
                int T = (int)(ts / ntiles + (i < ts % ntiles));
                g.q = q + (size_t)(s0 + t0) * q_stride;
                g.qp = qp + (size_t)t0 * qp_stride;
                g.sumq = sumq + t0;
                for (int32_t c = 0; c < nchunks; c++) {
                    g.j0 = c * kc;
                    g.j1 = g.j0 + kc < pairs ? g.j0 + kc : pairs;
                    g.first = c == 0;
                    g.last = c == nchunks - 1;
                    g.tail = g.last && (m->blocks & 1);
                    for (int32_t r = b0; r < b1; r += 2) {
                        int R = r + 2 <= b1 ? 2 : 1;
                        g.w = m->codes + (size_t)r * m->row_bytes;
                        g.carry = carry ? carry + (size_t)(r - b0) * GEMM_TMAX : NULL;
                        g.out = acc + (size_t)(s0 + t0) * acc_stride + (size_t)(r - r0);
                        g_tiles[gfni != 0][R - 1][T](&g);
                    }
                }
                t0 += T;
            }
        }
    }
}

static void gemm_avx512(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                        const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    br_tmat_gemm_avx512_unpack(m, r0, r1, ntok, q, q_stride, acc, acc_stride, br_gemm_use_gfni());
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
        qz = br_kernel_scratch(0, qlen);
        if (!qz) {
            br_tmat_gemv_ref(m, r0, r1, q, acc);
            return;
        }
    }
    memcpy(qz, q, kpad);
    memset(qz + kpad, 0, qlen - kpad);
    gemv_t5_rows((const uint8_t *)m->packed + (size_t)r0 * rb, rb, r1 - r0, qz,
                 sum_i8_avx512(q, kpad), acc);
}

/* ---- canonical float dots ---- */

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
    return br_combine8_m256(l);
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
    return br_combine8_m256(l);
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

static uint64_t read_probe_avx512(const void *p, size_t bytes, int streams, size_t ahead)
{
    return br_read_probe_impl(p, bytes, streams, ahead);
}

const struct br_kernel_ops br_kernels_avx512 = {
    .name = "avx512",
    .gemv = gemv_avx512,
    .gemm = gemm_avx512,
    .prepare = NULL,
    .dot_f32 = dot_f32_avx512,
    .dot_f16_f32 = dot_f16_f32_avx512,
    .peak_macs = peak_macs_avx512,
    .read_probe = read_probe_avx512,
};
