/*
 * ARM NEON kernels (aarch64): ternary GEMV/GEMM and the canonical float dots, in two
 * flavours chosen at run time: with the dot-product extension (SDOT, ARMv8.2+ "asimddp")
 * and with plain ARMv8 NEON. The file is compiled for baseline ARMv8; the SDOT functions
 * carry a target attribute and run only where getauxval reports the extension.
 *
 * Ternary products use sum w*q = sum c*q - sum q with codes c in {0,1,2}. A 32-byte
 * block (128 weights) is two 16-byte vectors; bit pair g (g = 0 for bits 7-6) of byte p
 * is column 32g + p, so each decoded vector meets 16 contiguous activations.
 *  - SDOT: codes (as signed bytes) times activations, four products per int32 lane.
 *  - plain: SMLAL into int16 lanes; a lane gains 8 products of at most 2*128 = 256 in
 *    magnitude per block, so 8 blocks stay within 16384 before widening with SADALP.
 *
 * Float dots keep the 8 canonical lanes in two float32x4 FMA accumulators; the tail and
 * the fixed combine are done lane by lane with fmaf, which rounds exactly like FMLA.
 */
#include <arm_neon.h>
#include <math.h>
#include <stdint.h>

#include "bitrack/fp.h"
#include "kernels/kernel_impl.h"
#include "kernels/probe_impl.h"
#include "kernels/ops.h"

#define DOT_ATTR __attribute__((target("arch=armv8.2-a+dotprod")))
#define FLUSH    8 /* blocks per int16 run (plain NEON) */

static int32_t sum_i8_neon(const int8_t *q, size_t n)
{
    int32x4_t acc = vdupq_n_s32(0);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) acc = vpadalq_s16(acc, vpaddlq_s8(vld1q_s8(q + i)));
    int32_t s = vaddvq_s32(acc);
    for (; i < n; i++) s += q[i];
    return s;
}

/* Codes of bit pair g of 16 packed bytes. */
static inline int8x16_t codes(uint8x16_t x, int g)
{
    uint8x16_t m3 = vdupq_n_u8(3);
    switch (g) {
    case 0:
        return vreinterpretq_s8_u8(vshrq_n_u8(x, 6));
    case 1:
        return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(x, 4), m3));
    case 2:
        return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(x, 2), m3));
    default:
        return vreinterpretq_s8_u8(vandq_u8(x, m3));
    }
}

/* ---- with SDOT ---- */

DOT_ATTR static int32_t row_dot_sdot(const uint8_t *w, int32_t blocks, const int8_t *q)
{
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
    for (int32_t b = 0; b < blocks; b++) {
        const uint8_t *wb = w + (size_t)b * BR_TMAT_BLOCK_BYTES;
        const int8_t *qb = q + (size_t)b * BR_TMAT_BLOCK;
        uint8x16_t x0 = vld1q_u8(wb), x1 = vld1q_u8(wb + 16);
        a0 = vdotq_s32(a0, codes(x0, 0), vld1q_s8(qb));
        a1 = vdotq_s32(a1, codes(x1, 0), vld1q_s8(qb + 16));
        a2 = vdotq_s32(a2, codes(x0, 1), vld1q_s8(qb + 32));
        a3 = vdotq_s32(a3, codes(x1, 1), vld1q_s8(qb + 48));
        a0 = vdotq_s32(a0, codes(x0, 2), vld1q_s8(qb + 64));
        a1 = vdotq_s32(a1, codes(x1, 2), vld1q_s8(qb + 80));
        a2 = vdotq_s32(a2, codes(x0, 3), vld1q_s8(qb + 96));
        a3 = vdotq_s32(a3, codes(x1, 3), vld1q_s8(qb + 112));
    }
    return vaddvq_s32(vaddq_s32(vaddq_s32(a0, a1), vaddq_s32(a2, a3)));
}

DOT_ATTR static void gemv_sdot(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q,
                               int32_t *acc)
{
    int32_t sumq = sum_i8_neon(q, (size_t)m->blocks * BR_TMAT_BLOCK);
    for (int32_t r = r0; r < r1; r++)
        acc[r - r0] = row_dot_sdot(m->codes + (size_t)r * m->row_bytes, m->blocks, q) - sumq;
}

/* One row times up to 4 tokens: codes decoded once per block, reused per token. */
DOT_ATTR static void gemm_sdot(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                               const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    size_t kpad = (size_t)m->blocks * BR_TMAT_BLOCK;
    for (int32_t t0 = 0; t0 < ntok; t0 += 4) {
        int T = ntok - t0 < 4 ? (int)(ntok - t0) : 4;
        int32_t sumq[4];
        for (int t = 0; t < T; t++) sumq[t] = sum_i8_neon(q + (size_t)(t0 + t) * q_stride, kpad);
        for (int32_t r = r0; r < r1; r++) {
            const uint8_t *w = m->codes + (size_t)r * m->row_bytes;
            int32x4_t a[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
            for (int32_t b = 0; b < m->blocks; b++) {
                uint8x16_t x0 = vld1q_u8(w + (size_t)b * 32),
                           x1 = vld1q_u8(w + (size_t)b * 32 + 16);
                int8x16_t c[8];
                for (int g = 0; g < 4; g++) {
                    c[2 * g] = codes(x0, g);
                    c[2 * g + 1] = codes(x1, g);
                }
                for (int t = 0; t < T; t++) {
                    const int8_t *qb = q + (size_t)(t0 + t) * q_stride + (size_t)b * BR_TMAT_BLOCK;
                    for (int k = 0; k < 8; k++) a[t] = vdotq_s32(a[t], c[k], vld1q_s8(qb + 16 * k));
                }
            }
            for (int t = 0; t < T; t++)
                acc[(size_t)(t0 + t) * acc_stride + (size_t)(r - r0)] = vaddvq_s32(a[t]) - sumq[t];
        }
    }
}

/* ---- plain NEON ---- */

static int32_t row_dot_plain(const uint8_t *w, int32_t blocks, const int8_t *q)
{
    int32x4_t acc = vdupq_n_s32(0);
    for (int32_t b0 = 0; b0 < blocks; b0 += FLUSH) {
        int32_t b1 = b0 + FLUSH < blocks ? b0 + FLUSH : blocks;
        int16x8_t lo = vdupq_n_s16(0), hi = vdupq_n_s16(0);
        for (int32_t b = b0; b < b1; b++) {
            const uint8_t *wb = w + (size_t)b * BR_TMAT_BLOCK_BYTES;
            const int8_t *qb = q + (size_t)b * BR_TMAT_BLOCK;
            uint8x16_t x0 = vld1q_u8(wb), x1 = vld1q_u8(wb + 16);
            for (int g = 0; g < 4; g++) {
                int8x16_t c0 = codes(x0, g), c1 = codes(x1, g);
                int8x16_t q0 = vld1q_s8(qb + 32 * g), q1 = vld1q_s8(qb + 32 * g + 16);
                lo = vmlal_s8(lo, vget_low_s8(c0), vget_low_s8(q0));
                hi = vmlal_high_s8(hi, c0, q0);
                lo = vmlal_s8(lo, vget_low_s8(c1), vget_low_s8(q1));
                hi = vmlal_high_s8(hi, c1, q1);
            }
        }
        acc = vpadalq_s16(acc, lo);
        acc = vpadalq_s16(acc, hi);
    }
    return vaddvq_s32(acc);
}

static void gemv_plain(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q,
                       int32_t *acc)
{
    int32_t sumq = sum_i8_neon(q, (size_t)m->blocks * BR_TMAT_BLOCK);
    for (int32_t r = r0; r < r1; r++)
        acc[r - r0] = row_dot_plain(m->codes + (size_t)r * m->row_bytes, m->blocks, q) - sumq;
}

static void gemm_plain(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                       const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    size_t kpad = (size_t)m->blocks * BR_TMAT_BLOCK;
    for (int32_t t0 = 0; t0 < ntok; t0 += 4) {
        int T = ntok - t0 < 4 ? (int)(ntok - t0) : 4;
        int32_t sumq[4];
        for (int t = 0; t < T; t++) sumq[t] = sum_i8_neon(q + (size_t)(t0 + t) * q_stride, kpad);
        for (int32_t r = r0; r < r1; r++) {
            const uint8_t *w = m->codes + (size_t)r * m->row_bytes;
            int32x4_t a[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
            for (int32_t b0 = 0; b0 < m->blocks; b0 += FLUSH) {
                int32_t b1 = b0 + FLUSH < m->blocks ? b0 + FLUSH : m->blocks;
                int16x8_t lo[4], hi[4];
                for (int t = 0; t < T; t++) lo[t] = hi[t] = vdupq_n_s16(0);
                for (int32_t b = b0; b < b1; b++) {
                    uint8x16_t x0 = vld1q_u8(w + (size_t)b * 32),
                               x1 = vld1q_u8(w + (size_t)b * 32 + 16);
                    int8x16_t c[8];
                    for (int g = 0; g < 4; g++) {
                        c[2 * g] = codes(x0, g);
                        c[2 * g + 1] = codes(x1, g);
                    }
                    for (int t = 0; t < T; t++) {
                        const int8_t *qb =
                            q + (size_t)(t0 + t) * q_stride + (size_t)b * BR_TMAT_BLOCK;
                        for (int k = 0; k < 8; k++) {
                            int8x16_t qv = vld1q_s8(qb + 16 * k);
                            lo[t] = vmlal_s8(lo[t], vget_low_s8(c[k]), vget_low_s8(qv));
                            hi[t] = vmlal_high_s8(hi[t], c[k], qv);
                        }
                    }
                }
                for (int t = 0; t < T; t++) a[t] = vpadalq_s16(vpadalq_s16(a[t], lo[t]), hi[t]);
            }
            for (int t = 0; t < T; t++)
                acc[(size_t)(t0 + t) * acc_stride + (size_t)(r - r0)] = vaddvq_s32(a[t]) - sumq[t];
        }
    }
}

/* ---- canonical float dots ---- */

static float finish8(float32x4_t v0, float32x4_t v1, const float *a, const float *b, size_t k,
                     size_t n)
{
    float l[8];
    vst1q_f32(l, v0);
    vst1q_f32(l + 4, v1);
    for (; k < n; k++) l[k % 8] = fmaf(a[k], b[k], l[k % 8]);
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

static float dot_f32_neon(const float *a, const float *b, size_t n)
{
    float32x4_t v0 = vdupq_n_f32(0.0f), v1 = vdupq_n_f32(0.0f);
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        v0 = vfmaq_f32(v0, vld1q_f32(a + k), vld1q_f32(b + k));
        v1 = vfmaq_f32(v1, vld1q_f32(a + k + 4), vld1q_f32(b + k + 4));
    }
    return finish8(v0, v1, a, b, k, n);
}

static float dot_f16_f32_neon(const uint16_t *w, const float *x, size_t n)
{
    float32x4_t v0 = vdupq_n_f32(0.0f), v1 = vdupq_n_f32(0.0f);
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(w + k));
        v0 = vfmaq_f32(v0, vcvt_f32_f16(vget_low_f16(h)), vld1q_f32(x + k));
        v1 = vfmaq_f32(v1, vcvt_high_f32_f16(h), vld1q_f32(x + k + 4));
    }
    float l[8];
    vst1q_f32(l, v0);
    vst1q_f32(l + 4, v1);
    for (; k < n; k++) l[k % 8] = fmaf(br_f16_to_f32(w[k]), x[k], l[k % 8]);
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* ---- peak loops: independent multiply-add chains, operands hidden from the compiler ---- */

DOT_ATTR static int64_t peak_macs_sdot(int64_t iters)
{
    int8x16_t c = vdupq_n_s8(1), q = vdupq_n_s8(1);
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t i = 0; i < iters; i++) {
        __asm__ volatile("sdot %0.4s, %8.16b, %9.16b\n\t"
                         "sdot %1.4s, %8.16b, %9.16b\n\t"
                         "sdot %2.4s, %8.16b, %9.16b\n\t"
                         "sdot %3.4s, %8.16b, %9.16b\n\t"
                         "sdot %4.4s, %8.16b, %9.16b\n\t"
                         "sdot %5.4s, %8.16b, %9.16b\n\t"
                         "sdot %6.4s, %8.16b, %9.16b\n\t"
                         "sdot %7.4s, %8.16b, %9.16b"
                         : "+w"(a0), "+w"(a1), "+w"(a2), "+w"(a3), "+w"(a4), "+w"(a5), "+w"(a6),
                           "+w"(a7)
                         : "w"(c), "w"(q));
    }
    int32x4_t s = vaddq_s32(vaddq_s32(vaddq_s32(a0, a1), vaddq_s32(a2, a3)),
                            vaddq_s32(vaddq_s32(a4, a5), vaddq_s32(a6, a7)));
    __asm__ volatile("" ::"w"(s));
    return iters * 8 * 16;
}

static int64_t peak_macs_plain(int64_t iters)
{
    int8x8_t c = vdup_n_s8(1), q = vdup_n_s8(1);
    int16x8_t a0 = vdupq_n_s16(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t i = 0; i < iters; i++) {
        __asm__ volatile("smlal %0.8h, %8.8b, %9.8b\n\t"
                         "smlal %1.8h, %8.8b, %9.8b\n\t"
                         "smlal %2.8h, %8.8b, %9.8b\n\t"
                         "smlal %3.8h, %8.8b, %9.8b\n\t"
                         "smlal %4.8h, %8.8b, %9.8b\n\t"
                         "smlal %5.8h, %8.8b, %9.8b\n\t"
                         "smlal %6.8h, %8.8b, %9.8b\n\t"
                         "smlal %7.8h, %8.8b, %9.8b"
                         : "+w"(a0), "+w"(a1), "+w"(a2), "+w"(a3), "+w"(a4), "+w"(a5), "+w"(a6),
                           "+w"(a7)
                         : "w"(c), "w"(q));
    }
    int16x8_t s = vaddq_s16(vaddq_s16(vaddq_s16(a0, a1), vaddq_s16(a2, a3)),
                            vaddq_s16(vaddq_s16(a4, a5), vaddq_s16(a6, a7)));
    __asm__ volatile("" ::"w"(s));
    return iters * 8 * 8;
}

static uint64_t read_probe_neon(const void *p, size_t bytes, int streams, size_t ahead)
{
    return br_read_probe_impl(p, bytes, streams, ahead);
}

const struct br_kernel_ops br_kernels_neon_dot = {
    .name = "neon",
    .gemv = gemv_sdot,
    .gemm = gemm_sdot,
    .prepare = NULL,
    .dot_f32 = dot_f32_neon,
    .dot_f16_f32 = dot_f16_f32_neon,
    .peak_macs = peak_macs_sdot,
    .read_probe = read_probe_neon,
};

const struct br_kernel_ops br_kernels_neon_plain = {
    .name = "neon-nodot",
    .gemv = gemv_plain,
    .gemm = gemm_plain,
    .prepare = NULL,
    .dot_f32 = dot_f32_neon,
    .dot_f16_f32 = dot_f16_f32_neon,
    .peak_macs = peak_macs_plain,
    .read_probe = read_probe_neon,
};
