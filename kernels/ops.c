/*
 * Scalar per-token float operations in the canonical order documented in ops.h. These
 * are the reference; any faster version must produce the same bits. br_dot_f32 and
 * br_dot_f16_f32 themselves dispatch (dispatch.c) to a SIMD copy of the *_ref functions.
 */
#include "kernels/ops.h"

#include <math.h>

#include "bitrack/fp.h"

float br_dot_f32_ref(const float *a, const float *b, size_t n)
{
    float l[8] = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) l[j] = fmaf(a[k + j], b[k + j], l[j]);
    for (; k < n; k++) l[k % 8] = fmaf(a[k], b[k], l[k % 8]);
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

float br_dot_f16_f32_ref(const uint16_t *w_f16, const float *x, size_t n)
{
    /* Same lanes and combine as br_dot_f32: the row is widened (exactly) element by element. */
    float l[8] = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) l[j] = fmaf(br_f16_to_f32(w_f16[k + j]), x[k + j], l[j]);
    for (; k < n; k++) l[k % 8] = fmaf(br_f16_to_f32(w_f16[k]), x[k], l[k % 8]);
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

void br_sumsq_chunks(br_dot_f32_fn dot, const float *x, size_t n, float *out)
{
    for (size_t c = 0; c * BR_CHUNK < n; c++) {
        size_t len = n - c * BR_CHUNK < BR_CHUNK ? n - c * BR_CHUNK : BR_CHUNK;
        out[c] = dot(x + c * BR_CHUNK, x + c * BR_CHUNK, len);
    }
}

float br_sum_chunks(const float *chunks, size_t nchunks)
{
    float s = 0.0f;
    for (size_t c = 0; c < nchunks; c++) s += chunks[c];
    return s;
}

void br_rmsnorm(const float *x, const float *w, size_t n, float eps, float *y)
{
    float chunks[64];
    float ss = 0.0f;
    size_t nch = (n + BR_CHUNK - 1) / BR_CHUNK;
    for (size_t c0 = 0; c0 < nch; c0 += 64) {
        /* groups of 64 chunks keep the stack small; summation order is unchanged */
        size_t cnt = nch - c0 < 64 ? nch - c0 : 64;
        size_t off = c0 * BR_CHUNK;
        br_sumsq_chunks(br_dot_f32, x + off, n - off < cnt * BR_CHUNK ? n - off : cnt * BR_CHUNK,
                        chunks);
        for (size_t c = 0; c < cnt; c++) ss += chunks[c];
    }
    float scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (size_t i = 0; i < n; i++) y[i] = x[i] * scale * w[i];
}

/* max |y_i| over 8 lanes (element i into lane i % 8), then across lanes: the same value as
 * a single running maximum (NaNs are skipped either way), but the loop vectorizes. */
static float absmax_lanes(const float *x, const float *g, size_t n)
{
    float m[8] = {0};
    size_t i = 0;
    if (g)
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) {
                float a = fabsf(x[i + j] * g[i + j]);
                m[j] = a > m[j] ? a : m[j];
            }
    else
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) {
                float a = fabsf(x[i + j]);
                m[j] = a > m[j] ? a : m[j];
            }
    for (; i < n; i++) {
        float a = fabsf(g ? x[i] * g[i] : x[i]);
        m[0] = a > m[0] ? a : m[0];
    }
    float r = 0.0f;
    for (int j = 0; j < 8; j++) r = m[j] > r ? m[j] : r;
    return r;
}

float br_absmax(const float *x, size_t n)
{
    return absmax_lanes(x, NULL, n);
}

/* clamp(round_half_even(v), -128, 127) for v that is not NaN. Clamping first changes
 * nothing (the bounds are integers), and in [-128, 127] adding and removing 1.5 * 2^23
 * rounds to the nearest integer, ties to even, like nearbyintf in the default rounding
 * mode: the sum's last place is 1 and 1.5 * 2^23 is even. Unlike a nearbyintf call
 * (libm, without SSE4.1 in a portable build) the loop around it vectorizes. */
static inline int8_t round_to_i8(float v)
{
    v = v > 127.0f ? 127.0f : v;
    v = v < -128.0f ? -128.0f : v;
    return (int8_t)(int32_t)((v + 12582912.0f) - 12582912.0f);
}

float br_quantize_with_max(const float *x, size_t n, size_t npad, float absmax, int8_t *q)
{
    float s = 127.0f / fmaxf(absmax, 1e-5f);
    for (size_t i = 0; i < n; i++) q[i] = round_to_i8(x[i] * s);
    for (size_t i = n; i < npad; i++) q[i] = 0;
    return s;
}

float br_quantize_absmax(const float *x, size_t n, size_t npad, int8_t *q)
{
    return br_quantize_with_max(x, n, npad, br_absmax(x, n), q);
}

void br_rope_table(int n_rot, int pos, float base, float *cs)
{
    for (int i = 0; i < n_rot / 2; i++) {
        double theta = (double)pos * pow((double)base, -2.0 * i / (double)n_rot);
        cs[2 * i] = (float)cos(theta);
        cs[2 * i + 1] = (float)sin(theta);
    }
}

void br_rope_apply(float *v, int n_rot, int neox, const float *cs)
{
    int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1];
        int a = neox ? i : 2 * i;
        int b = neox ? i + half : 2 * i + 1;
        float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}

void br_rope(float *v, int head_dim, int n_rot, int pos, float base, int neox)
{
    (void)head_dim;
    float cs[BR_ROPE_MAX_ROT];
    br_rope_table(n_rot, pos, base, cs);
    br_rope_apply(v, n_rot, neox, cs);
}

float br_silu(float x)
{
    return x / (1.0f + expf(-x));
}

void br_act_mul(int relu2, float *g, const float *u, size_t n)
{
    /* separate loops so the relu^2 one vectorizes (same operations as br_relu2) */
    if (relu2)
        for (size_t i = 0; i < n; i++) g[i] = (g[i] > 0.0f ? g[i] * g[i] : 0.0f) * u[i];
    else
        for (size_t i = 0; i < n; i++) g[i] = br_silu(g[i]) * u[i];
}

float br_normq_stats(br_dot_f32_fn dot, const float *x, const float *g, size_t n, size_t chunk,
                     float *chunk_sums)
{
    float m = absmax_lanes(x, g, n);
    for (size_t c = 0; c * chunk < n; c++) {
        size_t len = n - c * chunk < chunk ? n - c * chunk : chunk;
        chunk_sums[c] = dot(x + c * chunk, x + c * chunk, len);
    }
    return m;
}

float br_normq_r(float ss, size_t n_total, float eps, int normed)
{
    return normed ? 1.0f / sqrtf(ss / (float)n_total + eps) : 1.0f;
}

float br_normq_quantize(const float *x, const float *g, size_t n, size_t npad, float absmax,
                        float r, int8_t *q)
{
    float ar = absmax * r;
    float qm = ar >= 1e-5f ? 127.0f / absmax : 127.0f * r / 1e-5f;
    if (g)
        for (size_t i = 0; i < n; i++) q[i] = round_to_i8(x[i] * g[i] * qm);
    else
        for (size_t i = 0; i < n; i++) q[i] = round_to_i8(x[i] * qm);
    for (size_t i = n; i < npad; i++) q[i] = 0;
    return 127.0f / fmaxf(ar, 1e-5f);
}
