/*
 * Per-token float operations of the forward pass, in their canonical order.
 *
 * Exactness across layouts and thread counts (docs/ARCHITECTURE.md "Exactness") rests on every
 * float reduction being done in one fixed order, written down here:
 *  - br_dot_f32: 8 running sums, element k into lane k % 8, each updated with fmaf in
 *    increasing k; lanes combined as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). SIMD versions
 *    must reproduce exactly this (8-lane FMA accumulators, same combine).
 *  - sums of squares (RMSNorm): per 256-element chunk, br_dot_f32 of the chunk with
 *    itself; chunk sums added in chunk order starting from 0.0f.
 *  - absmax: order-free.
 */
#ifndef BR_KERNELS_OPS_H
#define BR_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

#define BR_CHUNK 256 /* the canonical reduction chunk */

/* Canonical float dot product (see above). Dispatches to the active SIMD variant, which
 * returns the same bits as the scalar br_dot_f32_ref. */
float br_dot_f32(const float *a, const float *b, size_t n);
float br_dot_f32_ref(const float *a, const float *b, size_t n);
/* A variant's br_dot_f32 (struct br_kernel_ops in kernels/kernel_impl.h). */
typedef float (*br_dot_f32_fn)(const float *a, const float *b, size_t n);

/* Dot of an F16 row (output head, embeddings) with a float vector: each w is widened to
 * float (exact) and the products summed in br_dot_f32's order. Dispatching and scalar. */
float br_dot_f16_f32(const uint16_t *w_f16, const float *x, size_t n);
float br_dot_f16_f32_ref(const uint16_t *w_f16, const float *x, size_t n);

/* Chunk sums of squares: out[c] = dot(x[256c..], same) for c < ceil(n/256), with `dot`
 * (br_dot_f32 or one variant's copy of it: the same bits). */
void br_sumsq_chunks(br_dot_f32_fn dot, const float *x, size_t n, float *out);
/* Combines chunk sums in order. */
float br_sum_chunks(const float *chunks, size_t nchunks);

/* y = x / sqrt(mean(x^2) + eps) * w, with mean from the canonical chunk sums. */
void br_rmsnorm(const float *x, const float *w, size_t n, float eps, float *y);

/* BitLinear input quantization (docs/FORMATS.md §3): s = 127 / max(absmax, 1e-5);
 * q[k] = clamp(round_half_even(x[k] * s), -128, 127) for k < n, 0 for n <= k < npad.
 * Returns s. */
float br_quantize_absmax(const float *x, size_t n, size_t npad, int8_t *q);
/* Same with a given absmax (distributed case: the max is global). */
float br_quantize_with_max(const float *x, size_t n, size_t npad, float absmax, int8_t *q);
float br_absmax(const float *x, size_t n);

/* Norm-and-quantize, the canonical input of every BitLinear (docs/ARCHITECTURE.md, "The
 * model math": the RMS cancels out of the quantized values). With y_i = x_i * g_i (g NULL:
 * y = x):
 *   absmax = max |y_i|                                    (order-free)
 *   ss     = sum of chunk sums of x_i^2                   (canonical chunks)
 *   r      = 1 / sqrtf(ss / n + eps) if normed, else 1
 *   qm     = 127 / absmax if absmax * r >= 1e-5, else 127 * r / 1e-5
 *   q_i    = clamp(round_half_even(y_i * qm), -128, 127)
 *   s      = 127 / max(absmax * r, 1e-5)                 (BitLinear output = acc / s * w)
 * so a rank holding a slice of x needs only the global absmax and chunk sums. */
/* Local part: returns absmax of y over x[0..n); writes ceil(n / chunk) chunk sums of x^2,
 * each a `dot` (as br_sumsq_chunks). */
float br_normq_stats(br_dot_f32_fn dot, const float *x, const float *g, size_t n, size_t chunk,
                     float *chunk_sums);
/* r from the global statistics (1 when not normed). */
float br_normq_r(float ss, size_t n_total, float eps, int normed);
/* Quantizes x[0..n) with the global absmax and r; zero-fills q[n..npad). Returns s. */
float br_normq_quantize(const float *x, const float *g, size_t n, size_t npad, float absmax,
                        float r, int8_t *q);

/* RoPE on one head vector of head_dim values at position pos; n_rot dims rotated.
 * neox: dim i pairs with i + n_rot/2; else adjacent pairs (2i, 2i+1).
 * theta_i = pos * base^(-2i/n_rot), computed in double then rounded to float. */
void br_rope(float *v, int head_dim, int n_rot, int pos, float base, int neox);
/* The same in two steps, so a token's angles serve all its heads and layers: cs (n_rot,)
 * receives cos, sin of theta_i for i < n_rot / 2, and br_rope_apply rotates one head with
 * them. br_rope(v, ...) == br_rope_table then br_rope_apply, bit for bit. */
#define BR_ROPE_MAX_ROT 512
void br_rope_table(int n_rot, int pos, float base, float *cs);
void br_rope_apply(float *v, int n_rot, int neox, const float *cs);

/* Activations, elementwise. */
static inline float br_relu2(float x)
{
    return x > 0.0f ? x * x : 0.0f;
}
float br_silu(float x);
/* g[i] = act(g[i]) * u[i] for i < n, act relu^2 when relu2 is nonzero, else SiLU. */
void br_act_mul(int relu2, float *g, const float *u, size_t n);

#endif
