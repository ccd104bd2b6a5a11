/*
 * Scalar reference of the attention kernels (attn.h) and their dispatch.
 *
 * The variant follows the ternary kernels' choice (dispatch.c), so BITRACK_KERNELS selects
 * both at once and a process never mixes variants. The softmax between the two kernel
 * passes stays scalar for every variant: one expf per position, against head_dim
 * multiply-adds on each side of it.
 */
#include "kernels/attn.h"
#include "kernels/kset.h"

#include <math.h>
#include <string.h>

#include "bitrack/fp.h"
#include "kernels/dispatch.h"
#include "kernels/kernel_impl.h"
#include "kernels/ops.h"

static void scores_ref(const float *q, const uint16_t *k, size_t k_stride, int32_t n, int32_t hd,
                       float scale, float *s)
{
    for (int32_t p = 0; p < n; p++)
        s[p] = br_dot_f16_f32_ref(k + (size_t)p * k_stride, q, (size_t)hd) * scale;
}

static void accum_ref(const float *w, const uint16_t *v, size_t v_stride, int32_t n, int32_t hdv,
                      float *out)
{
    for (int32_t p = 0; p < n; p++) {
        const uint16_t *vp = v + (size_t)p * v_stride;
        for (int32_t i = 0; i < hdv; i++) out[i] = fmaf(w[p], br_f16_to_f32(vp[i]), out[i]);
    }
}

static void to_f16_ref(const float *x, int32_t n, uint16_t *h)
{
    for (int32_t i = 0; i < n; i++) h[i] = br_f32_to_f16(x[i]);
}

static void round_f16_ref(float *x, int32_t n)
{
    for (int32_t i = 0; i < n; i++) x[i] = br_f16_to_f32(br_f32_to_f16(x[i]));
}

void br_attn_scores_g(const struct br_attn_ops *ops, const float *q, size_t q_stride, int32_t G,
                      const uint16_t *k, size_t k_stride, int32_t n, int32_t hd, float scale,
                      float *s, size_t s_stride)
{
    if (ops->scores_g && G > 1) {
        ops->scores_g(q, q_stride, G, k, k_stride, n, hd, scale, s, s_stride);
        return;
    }
    for (int32_t g = 0; g < G; g++)
        ops->scores(q + (size_t)g * q_stride, k, k_stride, n, hd, scale, s + (size_t)g * s_stride);
}

void br_attn_accum_g(const struct br_attn_ops *ops, const float *w, size_t w_stride, int32_t G,
                     const uint16_t *v, size_t v_stride, int32_t n, int32_t hdv, float *out,
                     size_t out_stride)
{
    if (ops->accum_g && G > 1) {
        ops->accum_g(w, w_stride, G, v, v_stride, n, hdv, out, out_stride);
        return;
    }
    for (int32_t g = 0; g < G; g++)
        ops->accum(w + (size_t)g * w_stride, v, v_stride, n, hdv, out + (size_t)g * out_stride);
}

const struct br_attn_ops br_attn_ref = {
    .name = "ref",
    .scores = scores_ref,
    .accum = accum_ref,
    .to_f16 = to_f16_ref,
    .round_f16 = round_f16_ref,
};

float br_attn_exp(float *s, int32_t n)
{
    float mx = -INFINITY;
    for (int32_t p = 0; p < n; p++)
        if (s[p] > mx) mx = s[p];
    float sum = 0.0f;
    for (int32_t p = 0; p < n; p++) {
        s[p] = expf(s[p] - mx);
        sum += s[p];
    }
    return 1.0f / sum;
}

float br_attn_softmax(float *s, int32_t n)
{
    float inv = br_attn_exp(s, n);
    round_f16_ref(s, n);
    return inv;
}

const struct br_attn_ops *br_attn_find(const char *name)
{
    if (!name || !br_kernels_find(name)) return NULL;
    if (strcmp(name, "ref") == 0) return &br_attn_ref;
#if defined(BR_HAVE_AVX2)
    if (strcmp(name, "avx2") == 0) return &br_attn_avx2;
#endif
#if defined(BR_HAVE_AVX512)
    if (strcmp(name, "avx512") == 0) return &br_attn_avx512;
#endif
    return NULL;
}

const struct br_attn_ops *br_attn_active(void)
{
    return br_kernel_set_active()->attn;
}
