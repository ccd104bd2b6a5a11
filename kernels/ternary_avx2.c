/*
 * AVX2 kernels: ternary GEMV/GEMM on the canonical 2-bit codes, and the canonical float
 * dots (f32 and F16 rows via F16C). Built with -mavx2 -mfma -mf16c -mbmi2 and run only
 * when dispatch.c found those features.
 *
 * Ternary products use sum w*q = sum c*q - sum q with codes c in {0,1,2}: vpmaddubsw
 * multiplies unsigned codes by signed activations and adds adjacent pairs into int16.
 * One 32-byte block holds 128 weights; byte p has columns p, p+32, p+64, p+96 in bits
 * 7-6, 5-4, 3-2, 1-0, so each bit pair lines up with 32 contiguous activations.
 *
 * int16 budgets (why the flush intervals are what they are):
 *  - true codes (GEMM): one vpmaddubsw lane is c0*q0 + c1*q1 in [-512, 508]; a block adds
 *    4 of them, so 8 blocks stay within [-16384, 16256].
 *  - GEMV decodes with one shift: codes (w & 3) count once and (w & 12) = 4c count four
 *    times; the x4 accumulator grows by at most 4 * 2 * 512 = 4096 per block, so 8 blocks
 *    reach at most 32768 in magnitude on the negative side (-32768 fits) and 32512 on the
 *    positive side. The x4 sums are divided by 4 exactly after widening to int32.
 * Accumulators are flushed to int32 with vpmaddwd every BR_FLUSH blocks.
 *
 * Where the CPU has AVX-VNNI (checked at run time; the functions carry their own target
 * attribute), the GEMM uses the VEX vpdpbusd instead: one instruction per 32 weights and
 * token into int32 lanes, no int16 budget and no widening, so fewer instructions per
 * multiply-add than vpmaddubsw (docs/PERFORMANCE.md, "Kernel shapes").
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/combine_x86.h"
#include "kernels/kernel_impl.h"
#include "kernels/probe_impl.h"
#include "kernels/tune.h"
#include "kernels/ops.h"

#define BR_FLUSH 8 /* blocks per int16 accumulation run */

static inline int32_t hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static int32_t sum_i8_avx2(const int8_t *q, size_t n)
{
    /* n is a multiple of 128 (kpad). vpmaddubsw with ones then vpmaddwd widens exactly. */
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(q + i));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
    }
    int32_t s = hsum_i32(acc);
    for (; i < n; i++) s += q[i];
    return s;
}

/* R rows (R <= 4) starting at w (row stride `stride` bytes) times one activation vector. */
static inline __attribute__((always_inline)) void gemv_rows(const uint8_t *w, size_t stride,
                                                            int32_t blocks, const int8_t *q,
                                                            int32_t sumq, int R, size_t pf,
                                                            int hint, int32_t *out)
{
    const __m256i m3 = _mm256_set1_epi8(3), m12 = _mm256_set1_epi8(12);
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i acc1[4], acc4[4];
    for (int r = 0; r < R; r++) acc1[r] = acc4[r] = _mm256_setzero_si256();
    for (int32_t b0 = 0; b0 < blocks; b0 += BR_FLUSH) {
        int32_t b1 = b0 + BR_FLUSH < blocks ? b0 + BR_FLUSH : blocks;
        __m256i s1[4], s4[4];
        for (int r = 0; r < R; r++) s1[r] = s4[r] = _mm256_setzero_si256();
        for (int32_t b = b0; b < b1; b++) {
            const int8_t *qb = q + (size_t)b * BR_TMAT_BLOCK;
            __m256i q0 = _mm256_loadu_si256((const __m256i *)qb);
            __m256i q1 = _mm256_loadu_si256((const __m256i *)(qb + 32));
            __m256i q2 = _mm256_loadu_si256((const __m256i *)(qb + 64));
            __m256i q3 = _mm256_loadu_si256((const __m256i *)(qb + 96));
            for (int r = 0; r < R; r++) {
                __m256i x = _mm256_loadu_si256(
                    (const __m256i *)(w + (size_t)r * stride + (size_t)b * BR_TMAT_BLOCK_BYTES));
                /* later rows' bytes, pf ahead with the calibrated hint: see
                 * ternary_avx512.c on why (here on Zen 4, one-thread decode of 2B-4T, T1
                 * one group ahead 20.0-20.1 tokens/s, three ahead 24.2-24.8) */
                br_prefetch(w + (size_t)r * stride + pf + (size_t)b * BR_TMAT_BLOCK_BYTES, hint);
                __m256i x4 = _mm256_srli_epi16(x, 4);
                /* bits 1-0: columns +96, bits 3-2: +64 (x4), bits 5-4: +32, bits 7-6: +0 (x4) */
                s1[r] = _mm256_add_epi16(s1[r], _mm256_maddubs_epi16(_mm256_and_si256(x, m3), q3));
                s1[r] = _mm256_add_epi16(s1[r], _mm256_maddubs_epi16(_mm256_and_si256(x4, m3), q1));
                s4[r] = _mm256_add_epi16(s4[r], _mm256_maddubs_epi16(_mm256_and_si256(x, m12), q2));
                s4[r] =
                    _mm256_add_epi16(s4[r], _mm256_maddubs_epi16(_mm256_and_si256(x4, m12), q0));
            }
        }
        for (int r = 0; r < R; r++) {
            acc1[r] = _mm256_add_epi32(acc1[r], _mm256_madd_epi16(s1[r], ones16));
            acc4[r] = _mm256_add_epi32(acc4[r], _mm256_madd_epi16(s4[r], ones16));
        }
    }
    for (int r = 0; r < R; r++) {
        /* every x4 lane sum is a multiple of 4, so the arithmetic shift is exact */
        __m256i a = _mm256_add_epi32(acc1[r], _mm256_srai_epi32(acc4[r], 2));
        out[r] = hsum_i32(a) - sumq;
    }
}

/* One function per (rows per group, prefetch hint), so each has constant shapes. */
typedef void (*gemv_group_fn)(const uint8_t *w, size_t stride, int32_t blocks, const int8_t *q,
                              int32_t sumq, size_t pf, int32_t *out);
#define GEMV_FN(R, H)                                                                              \
    static void gemv_##R##_##H(const uint8_t *w, size_t stride, int32_t blocks, const int8_t *q,   \
                               int32_t sumq, size_t pf, int32_t *out)                              \
    {                                                                                              \
        gemv_rows(w, stride, blocks, q, sumq, R, pf, H, out);                                      \
    }
GEMV_FN(1, 0)
GEMV_FN(1, 1)
GEMV_FN(1, 2)
GEMV_FN(1, 3)
GEMV_FN(2, 0)
GEMV_FN(2, 1)
GEMV_FN(2, 2)
GEMV_FN(2, 3)
GEMV_FN(4, 0)
GEMV_FN(4, 1)
GEMV_FN(4, 2)
GEMV_FN(4, 3)
#undef GEMV_FN
/* [rows per group: 1, 2, 4 -> 0, 1, 2][hint] */
static const gemv_group_fn g_gemv_group[3][4] = {{gemv_1_0, gemv_1_1, gemv_1_2, gemv_1_3},
                                                 {gemv_2_0, gemv_2_1, gemv_2_2, gemv_2_3},
                                                 {gemv_4_0, gemv_4_1, gemv_4_2, gemv_4_3}};

static void gemv_avx2(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q,
                      int32_t *acc)
{
    int32_t sumq = sum_i8_avx2(q, (size_t)m->blocks * BR_TMAT_BLOCK);
    const struct br_tune *tp = br_tune_active();
    int R = tp->gemv_rows == 1 ? 1 : tp->gemv_rows == 2 ? 2 : 4;
    size_t pf = (size_t)tp->gemv_ahead * (size_t)R * m->row_bytes;
    gemv_group_fn group = g_gemv_group[R == 1 ? 0 : R == 2 ? 1 : 2][tp->gemv_hint & 3];
    int32_t r = r0;
    for (; r + R <= r1; r += R)
        group(m->codes + (size_t)r * m->row_bytes, m->row_bytes, m->blocks, q, sumq, pf,
              acc + (r - r0));
    for (; r < r1; r++)
        gemv_rows(m->codes + (size_t)r * m->row_bytes, m->row_bytes, m->blocks, q, sumq, 1, pf,
                  BR_PF_T1, acc + (r - r0));
}

/* One row times T tokens (T <= 8): the row's codes are decoded once per block and reused
 * for every token, so each weight byte is loaded once per token block. */
static inline __attribute__((always_inline)) void gemm_row(const uint8_t *w, int32_t blocks,
                                                           const int8_t *q, size_t q_stride,
                                                           const int32_t *sumq, int T, int32_t *out,
                                                           size_t out_stride)
{
    const __m256i m3 = _mm256_set1_epi8(3), ones16 = _mm256_set1_epi16(1);
    int32_t tot[8] = {0};
    for (int32_t b0 = 0; b0 < blocks; b0 += BR_FLUSH) {
        int32_t b1 = b0 + BR_FLUSH < blocks ? b0 + BR_FLUSH : blocks;
        __m256i s[8];
        for (int t = 0; t < T; t++) s[t] = _mm256_setzero_si256();
        for (int32_t b = b0; b < b1; b++) {
            __m256i x = _mm256_load_si256((const __m256i *)(w + (size_t)b * BR_TMAT_BLOCK_BYTES));
            __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(x, 6), m3);
            __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(x, 4), m3);
            __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(x, 2), m3);
            __m256i c3 = _mm256_and_si256(x, m3);
            for (int t = 0; t < T; t++) {
                const int8_t *qb = q + (size_t)t * q_stride + (size_t)b * BR_TMAT_BLOCK;
                __m256i p = _mm256_maddubs_epi16(c0, _mm256_loadu_si256((const __m256i *)qb));
                p = _mm256_add_epi16(
                    p, _mm256_maddubs_epi16(c1, _mm256_loadu_si256((const __m256i *)(qb + 32))));
                p = _mm256_add_epi16(
                    p, _mm256_maddubs_epi16(c2, _mm256_loadu_si256((const __m256i *)(qb + 64))));
                p = _mm256_add_epi16(
                    p, _mm256_maddubs_epi16(c3, _mm256_loadu_si256((const __m256i *)(qb + 96))));
                s[t] = _mm256_add_epi16(s[t], p);
            }
        }
        for (int t = 0; t < T; t++) tot[t] += hsum_i32(_mm256_madd_epi16(s[t], ones16));
    }
    for (int t = 0; t < T; t++) out[(size_t)t * out_stride] = tot[t] - sumq[t];
}

/* The same with AVX-VNNI (VEX vpdpbusd on 256 bits): codes times activations go straight
 * into int32 lanes, one instruction per 32 weights and token instead of vpmaddubsw, an
 * int16 add and the periodic widening. 8 accumulators, 4 decoded code vectors, one
 * activation and the mask fill 14 of the 16 registers. */
__attribute__((target("avxvnni"))) static inline __attribute__((always_inline)) void
gemm_row_vnni(const uint8_t *w, int32_t blocks, const int8_t *q, size_t q_stride,
              const int32_t *sumq, int T, int32_t *out, size_t out_stride)
{
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i s[8];
    for (int t = 0; t < T; t++) s[t] = _mm256_setzero_si256();
    for (int32_t b = 0; b < blocks; b++) {
        __m256i x = _mm256_load_si256((const __m256i *)(w + (size_t)b * BR_TMAT_BLOCK_BYTES));
        __m256i c[4] = {_mm256_and_si256(_mm256_srli_epi16(x, 6), m3),
                        _mm256_and_si256(_mm256_srli_epi16(x, 4), m3),
                        _mm256_and_si256(_mm256_srli_epi16(x, 2), m3), _mm256_and_si256(x, m3)};
        for (int g = 0; g < 4; g++)
            for (int t = 0; t < T; t++) {
                const int8_t *qb = q + (size_t)t * q_stride + (size_t)b * BR_TMAT_BLOCK + 32 * g;
                s[t] = _mm256_dpbusd_avx_epi32(s[t], c[g], _mm256_loadu_si256((const __m256i *)qb));
            }
    }
    for (int t = 0; t < T; t++) out[(size_t)t * out_stride] = hsum_i32(s[t]) - sumq[t];
}

#define GEMM_RB_BYTES (256 * 1024) /* weight bytes of a row block, kept in L2 */

typedef void (*gemm_rows_fn)(const uint8_t *w, size_t stride, int32_t nrows, int32_t blocks,
                             const int8_t *q, size_t q_stride, int T, int32_t *out,
                             size_t out_stride);

/* Rows 0..nrows-1 (w, stride apart) x T tokens; out[t * out_stride + r] holds the
 * activation sum of token t on entry and the product on return. A constant T lets the
 * compiler keep every accumulator in a register. */
#define GEMM_ROWS_BODY(ROW)                                                                        \
    for (int32_t r = 0; r < nrows; r++) {                                                          \
        const uint8_t *wr = w + (size_t)r * stride;                                                \
        int32_t *o = out + r;                                                                      \
        int32_t sumq[8]; /* stored in the output; read back before overwriting */                  \
        for (int t = 0; t < T; t++) sumq[t] = o[(size_t)t * out_stride];                           \
        switch (T) {                                                                               \
        case 8:                                                                                    \
            ROW(wr, blocks, q, q_stride, sumq, 8, o, out_stride);                                  \
            break;                                                                                 \
        case 7:                                                                                    \
            ROW(wr, blocks, q, q_stride, sumq, 7, o, out_stride);                                  \
            break;                                                                                 \
        case 6:                                                                                    \
            ROW(wr, blocks, q, q_stride, sumq, 6, o, out_stride);                                  \
            break;                                                                                 \
        case 5:                                                                                    \
            ROW(wr, blocks, q, q_stride, sumq, 5, o, out_stride);                                  \
            break;                                                                                 \
        case 4:                                                                                    \
            ROW(wr, blocks, q, q_stride, sumq, 4, o, out_stride);                                  \
            break;                                                                                 \
        case 3:                                                                                    \
            ROW(wr, blocks, q, q_stride, sumq, 3, o, out_stride);                                  \
            break;                                                                                 \
        case 2:                                                                                    \
            ROW(wr, blocks, q, q_stride, sumq, 2, o, out_stride);                                  \
            break;                                                                                 \
        default:                                                                                   \
            ROW(wr, blocks, q, q_stride, sumq, 1, o, out_stride);                                  \
            break;                                                                                 \
        }                                                                                          \
    }

static void gemm_rows_madd(const uint8_t *w, size_t stride, int32_t nrows, int32_t blocks,
                           const int8_t *q, size_t q_stride, int T, int32_t *out, size_t out_stride)
{
    GEMM_ROWS_BODY(gemm_row)
}

__attribute__((target("avxvnni"))) static void
gemm_rows_vnni(const uint8_t *w, size_t stride, int32_t nrows, int32_t blocks, const int8_t *q,
               size_t q_stride, int T, int32_t *out, size_t out_stride)
{
    GEMM_ROWS_BODY(gemm_row_vnni)
}
#undef GEMM_ROWS_BODY

/* Row blocks of about 256 KiB of weights stay in L2 while every 8-token block passes, so
 * a weight byte comes from memory once per call and from L2 once per 8 tokens. */
void br_tmat_gemm_avx2_vnni(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                            const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride,
                            int vnni)
{
    gemm_rows_fn rows = vnni ? gemm_rows_vnni : gemm_rows_madd;
    size_t kpad = (size_t)m->blocks * BR_TMAT_BLOCK;
    int32_t rb = (int32_t)(GEMM_RB_BYTES / m->row_bytes);
    if (rb < 1) rb = 1;
    for (int32_t t = 0; t < ntok; t++) {
        int32_t sumq = sum_i8_avx2(q + (size_t)t * q_stride, kpad);
        for (int32_t r = r0; r < r1; r++) acc[(size_t)t * acc_stride + (size_t)(r - r0)] = sumq;
    }
    for (int32_t b0 = r0; b0 < r1; b0 += rb) {
        int32_t b1 = b0 + rb < r1 ? b0 + rb : r1;
        for (int32_t t0 = 0; t0 < ntok; t0 += 8) {
            int T = ntok - t0 < 8 ? (int)(ntok - t0) : 8;
            rows(m->codes + (size_t)b0 * m->row_bytes, m->row_bytes, b1 - b0, m->blocks,
                 q + (size_t)t0 * q_stride, q_stride, T,
                 acc + (size_t)t0 * acc_stride + (size_t)(b0 - r0), acc_stride);
        }
    }
}

static void gemm_avx2(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                      const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    br_tmat_gemm_avx2_vnni(m, r0, r1, ntok, q, q_stride, acc, acc_stride, br_cpu_has_avxvnni());
}

/* ---- canonical float dots ---- */

/* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), the combine fixed in ops.h. */

/* Lane mask selecting the first `rem` lanes (rem < 8). */
static inline __m256i tail_mask(size_t rem)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), idx);
}

static float dot_f32_avx2(const float *a, const float *b, size_t n)
{
    __m256 l = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        l = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), l);
    if (k < n) {
        /* Lanes past n keep their value untouched (a blend, not an FMA with zero, which
         * could turn -0.0 into +0.0). */
        __m256i mask = tail_mask(n - k);
        __m256 p =
            _mm256_fmadd_ps(_mm256_maskload_ps(a + k, mask), _mm256_maskload_ps(b + k, mask), l);
        l = _mm256_blendv_ps(l, p, _mm256_castsi256_ps(mask));
    }
    return br_combine8_m256(l);
}

static float dot_f16_f32_avx2(const uint16_t *w, const float *x, size_t n)
{
    __m256 l = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 wf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + k)));
        l = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + k), l);
    }
    if (k < n) {
        uint16_t tmp[8] = {0};
        memcpy(tmp, w + k, (n - k) * sizeof *w);
        __m256i mask = tail_mask(n - k);
        __m256 wf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tmp));
        __m256 p = _mm256_fmadd_ps(wf, _mm256_maskload_ps(x + k, mask), l);
        l = _mm256_blendv_ps(l, p, _mm256_castsi256_ps(mask));
    }
    return br_combine8_m256(l);
}

/* 12 independent AVX-VNNI vpdpbusd chains (more than latency x throughput), 32 MACs
 * each; VEX encoding written out so the assembler needs no flag. */
#define DPV(i) "%{vex%} vpdpbusd %[q], %[c], %[a" #i "]\n\t"
static int64_t peak_macs_vnni(int64_t iters)
{
    __m256i c = _mm256_set1_epi8(1), q = _mm256_set1_epi8(1);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
            a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    for (int64_t i = 0; i < iters; i++)
        __asm__ volatile(DPV(0) DPV(1) DPV(2) DPV(3) DPV(4) DPV(5) DPV(6) DPV(7) DPV(8) DPV(9)
                             DPV(10) DPV(11)
                         : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3),
                           [a4] "+x"(a4), [a5] "+x"(a5), [a6] "+x"(a6), [a7] "+x"(a7),
                           [a8] "+x"(a8), [a9] "+x"(a9), [a10] "+x"(a10), [a11] "+x"(a11)
                         : [c] "x"(c), [q] "x"(q));
    __m256i s = _mm256_add_epi32(
        _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                         _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7))),
        _mm256_add_epi32(_mm256_add_epi32(a8, a9), _mm256_add_epi32(a10, a11)));
    __asm__ volatile("" ::"x"(s));
    return iters * 12 * 32;
}
#undef DPV

/* The GEMM's own multiply-add: AVX-VNNI vpdpbusd where the CPU has it, else 6
 * independent vpmaddubsw + vpaddw chains (32 MACs per vpmaddubsw). Written in asm
 * because the compiler would merge identical chains. */
static int64_t peak_macs_avx2(int64_t iters)
{
    if (br_cpu_has_avxvnni()) return peak_macs_vnni(iters);
    __m256i c = _mm256_set1_epi8(1), q = _mm256_set1_epi8(1);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m256i t0, t1, t2, t3, t4, t5;
    for (int64_t i = 0; i < iters; i++) {
        __asm__ volatile("vpmaddubsw %[q], %[c], %[t0]\n\t"
                         "vpmaddubsw %[q], %[c], %[t1]\n\t"
                         "vpmaddubsw %[q], %[c], %[t2]\n\t"
                         "vpmaddubsw %[q], %[c], %[t3]\n\t"
                         "vpmaddubsw %[q], %[c], %[t4]\n\t"
                         "vpmaddubsw %[q], %[c], %[t5]\n\t"
                         "vpaddw %[t0], %[a0], %[a0]\n\t"
                         "vpaddw %[t1], %[a1], %[a1]\n\t"
                         "vpaddw %[t2], %[a2], %[a2]\n\t"
                         "vpaddw %[t3], %[a3], %[a3]\n\t"
                         "vpaddw %[t4], %[a4], %[a4]\n\t"
                         "vpaddw %[t5], %[a5], %[a5]"
                         : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3),
                           [a4] "+x"(a4), [a5] "+x"(a5), [t0] "=&x"(t0), [t1] "=&x"(t1),
                           [t2] "=&x"(t2), [t3] "=&x"(t3), [t4] "=&x"(t4), [t5] "=&x"(t5)
                         : [c] "x"(c), [q] "x"(q));
    }
    __m256i s =
        _mm256_add_epi16(_mm256_add_epi16(_mm256_add_epi16(a0, a1), _mm256_add_epi16(a2, a3)),
                         _mm256_add_epi16(a4, a5));
    __asm__ volatile("" ::"x"(s));
    return iters * 6 * 32;
}

static uint64_t read_probe_avx2(const void *p, size_t bytes, int streams, size_t ahead)
{
    return br_read_probe_impl(p, bytes, streams, ahead);
}

const struct br_kernel_ops br_kernels_avx2 = {
    .name = "avx2",
    .gemv = gemv_avx2,
    .gemm = gemm_avx2,
    .prepare = NULL,
    .dot_f32 = dot_f32_avx2,
    .dot_f16_f32 = dot_f16_f32_avx2,
    .peak_macs = peak_macs_avx2,
    .read_probe = read_probe_avx2,
};
