/*
 * Attention over the f16 KV cache, in one canonical order.
 *
 * For one query vector q (head_dim values, already rounded to f16 precision by the caller)
 * against n cache positions with keys k_p and values v_p (f16, widened exactly):
 *   s_p  = dot(q, k_p) * scale        dot in br_dot_f32's order (ops.h): 8 lanes, element
 *                                     j into lane j % 8 with fmaf in increasing j, lanes
 *                                     combined as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))
 *   m    = max_p s_p                  (order-free)
 *   e_p  = expf(s_p - m), sum = e_0 + e_1 + ... in increasing p, starting from 0.0f
 *   w_p  = e_p rounded to f16 precision
 *   o_i  = fmaf(w_p, v_p[i], o_i) for p = 0, 1, ... starting from o_i = 0
 *   out_i = o_i * (1 / sum)
 * Every output element has its own chain over p, so SIMD lanes along i give the same bits;
 * the score dots keep the 8-lane order whatever the vector width. Hardware FMA in the SIMD
 * files and fmaf in the reference round identically (fmaf is exact even where it is a libm
 * call). Rounding q and w to f16 matches the reference CPU implementations, whose greedy
 * continuations the engine reproduces (tests/unit/bitnet_cpp_test.c).
 *
 * Positions come in runs of contiguous cache rows (a KV block): br_attn_scores and
 * br_attn_accum take one run each, and a query over several blocks calls them once per
 * block in increasing position order. br_attn_accum reads and writes `out` in f32, so
 * splitting the positions into runs leaves the chain over p, and the bits, unchanged.
 */
#ifndef BR_KERNELS_ATTN_H
#define BR_KERNELS_ATTN_H

#include <stddef.h>
#include <stdint.h>

#define BR_ATTN_MAX_HEAD_DIM 512

/* s[p] = dot(q, k + p * k_stride) * scale for p < n; q (hd,) f32, each key row hd f16. */
typedef void (*br_attn_scores_fn)(const float *q, const uint16_t *k, size_t k_stride, int32_t n,
                                  int32_t hd, float scale, float *s);
/* out[i] = fmaf(w[p], v[p * v_stride + i], out[i]) for p = 0..n-1 in order, i < hdv. */
typedef void (*br_attn_accum_fn)(const float *w, const uint16_t *v, size_t v_stride, int32_t n,
                                 int32_t hdv, float *out);

/* The same for G query heads that share one KV head (grouped-query attention): head g's
 * query at q + g * q_stride, its scores at s + g * s_stride, its weights at w + g * w_stride
 * and its output at out + g * out_stride; every head gets exactly the bits of the single
 * forms, and a variant may read each cache row once for all G heads. NULL in a table
 * without them (see br_attn_scores_g). */
typedef void (*br_attn_scores_g_fn)(const float *q, size_t q_stride, int32_t G, const uint16_t *k,
                                    size_t k_stride, int32_t n, int32_t hd, float scale, float *s,
                                    size_t s_stride);
typedef void (*br_attn_accum_g_fn)(const float *w, size_t w_stride, int32_t G, const uint16_t *v,
                                   size_t v_stride, int32_t n, int32_t hdv, float *out,
                                   size_t out_stride);

/* h[i] = x[i] rounded to f16, to nearest even (br_f32_to_f16), i < n: KV-cache stores. */
typedef void (*br_attn_to_f16_fn)(const float *x, int32_t n, uint16_t *h);
/* x[i] = x[i] rounded to f16 precision and widened back, in place, i < n: the query and
 * the softmax weights. */
typedef void (*br_attn_round_f16_fn)(float *x, int32_t n);

struct br_attn_ops {
    const char *name;
    br_attn_scores_fn scores;
    br_attn_accum_fn accum;
    br_attn_scores_g_fn scores_g;
    br_attn_accum_g_fn accum_g;
    br_attn_to_f16_fn to_f16;
    br_attn_round_f16_fn round_f16;
};

extern const struct br_attn_ops br_attn_ref;
#if defined(BR_HAVE_AVX2)
extern const struct br_attn_ops br_attn_avx2;
#endif
#if defined(BR_HAVE_AVX512)
extern const struct br_attn_ops br_attn_avx512;
#endif

/* The attention variant matching the kernel variant `name` (dispatch.h): "avx512", "avx2" or
 * "ref" when compiled in and supported by this CPU, else NULL. */
const struct br_attn_ops *br_attn_find(const char *name);
/* The variant of the active kernels (br_kernels_name()); the reference for variants without
 * their own attention code (NEON). */
const struct br_attn_ops *br_attn_active(void);

/* The grouped forms through a variant's table: its scores_g / accum_g where it has them
 * (AVX-512) and G > 1, else its single forms head by head (the reference, AVX2). */
void br_attn_scores_g(const struct br_attn_ops *ops, const float *q, size_t q_stride, int32_t G,
                      const uint16_t *k, size_t k_stride, int32_t n, int32_t hd, float scale,
                      float *s, size_t s_stride);
void br_attn_accum_g(const struct br_attn_ops *ops, const float *w, size_t w_stride, int32_t G,
                     const uint16_t *v, size_t v_stride, int32_t n, int32_t hdv, float *out,
                     size_t out_stride);

/* Softmax of s[0..n) in the canonical order above: replaces s[p] by w_p (e_p rounded to
 * f16 precision) and returns 1 / sum. n >= 1. Scalar. */
float br_attn_softmax(float *s, int32_t n);
/* Its first step, shared by every variant: replaces s[p] by e_p (not rounded) and returns
 * 1 / sum; a variant's round_f16 then gives the weights. */
float br_attn_exp(float *s, int32_t n);

#endif
