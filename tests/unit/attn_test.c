/*
 * Tests of the attention kernels (kernels/attn.h).
 *
 * The scalar reference is checked against a plain transcription of the canonical order
 * written here, and against double-precision attention with a tolerance; every SIMD
 * variant this CPU can run must then match the reference bit for bit: scores, value
 * accumulation, and whole queries the way the engine composes them (runs of KV blocks,
 * strided rows of one KV head among several, GQA groups reading the same rows). Shapes
 * cover head dims that are not multiples of 8 or 16, 1..70 positions, long contexts, and
 * signed zeros. Variants the CPU or build lacks are skipped with the reason printed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/fp.h"
#include "kernels/attn.h"
#include "test_util.h"

#define BLOCK 32 /* positions per call, like a KV-cache block */

static const struct br_attn_ops *variant_or_skip(void **state)
{
    const char *name = *state;
    const struct br_attn_ops *a = br_attn_find(name);
    if (!a) {
        print_message("[  SKIP  ] variant %s: not compiled in or not supported by this CPU\n",
                      name);
        skip();
    }
    return a;
}

/* Values spread over several binades, both signs, some exact zeros of either sign. */
static float rand_val(uint64_t *rng, float mag)
{
    uint64_t r = br_test_rand(rng);
    if (r % 23 == 0) return (r & 64) ? -0.0f : 0.0f;
    float mant = (float)((r >> 8) & 0xffffff) / 16777216.0f - 0.5f;
    return ldexpf(mant, (int)((r >> 40) % 5) - 2) * mag;
}

static void fill_f16(uint16_t *h, size_t n, uint64_t *rng, float mag)
{
    for (size_t i = 0; i < n; i++) h[i] = br_f32_to_f16(rand_val(rng, mag));
}

static void fill_q(float *q, int32_t n, uint64_t *rng, float mag)
{
    for (int32_t i = 0; i < n; i++) q[i] = br_f16_to_f32(br_f32_to_f16(rand_val(rng, mag)));
}

/* The canonical score of attn.h, transcribed directly. */
static float canon_score(const float *q, const uint16_t *k, int32_t hd, float scale)
{
    float l[8] = {0};
    for (int32_t j = 0; j < hd; j++) l[j % 8] = fmaf(q[j], br_f16_to_f32(k[j]), l[j % 8]);
    return (((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))) * scale;
}

static void expect_same(const char *what, const char *name, const float *want, const float *got,
                        size_t n, int32_t a, int32_t b)
{
    for (size_t i = 0; i < n; i++)
        if (br_fp32_to_bits(want[i]) != br_fp32_to_bits(got[i]))
            fail_msg("%s %s (%d, %d) at %zu: %08x (%g) vs %08x (%g)", name, what, a, b, i,
                     br_fp32_to_bits(want[i]), (double)want[i], br_fp32_to_bits(got[i]),
                     (double)got[i]);
}

static const int32_t dims[] = {1,   2,   3,   7,   8,   9,   15,  16,  17,  24,  31,
                               33,  48,  63,  64,  65,  80,  96,  100, 127, 128, 129,
                               160, 192, 200, 255, 256, 257, 384, 511, 512};
#define NDIMS ((int)(sizeof dims / sizeof dims[0]))

/* The reference scores are the canonical ones. */
static void test_ref_scores_canonical(void **state)
{
    (void)state;
    uint64_t rng = 11;
    const int32_t n = 13;
    uint16_t *k = malloc((size_t)n * 512 * sizeof *k);
    float q[512], s[13];
    assert_non_null(k);
    for (int d = 0; d < NDIMS; d++) {
        int32_t hd = dims[d];
        fill_q(q, hd, &rng, 2.0f);
        fill_f16(k, (size_t)n * (size_t)hd, &rng, 2.0f);
        br_attn_ref.scores(q, k, (size_t)hd, n, hd, 0.125f, s);
        for (int32_t p = 0; p < n; p++) {
            float want = canon_score(q, k + (size_t)p * (size_t)hd, hd, 0.125f);
            if (br_fp32_to_bits(want) != br_fp32_to_bits(s[p]))
                fail_msg("ref score hd=%d p=%d: %g vs %g", hd, p, (double)want, (double)s[p]);
        }
    }
    free(k);
}

/* Scores: row strides wider than head_dim (one KV head of several), 1..70 positions. */
static void test_scores(void **state)
{
    const struct br_attn_ops *a = variant_or_skip(state);
    uint64_t rng = 1234;
    const int32_t nmax = 70;
    for (int d = 0; d < NDIMS; d++) {
        int32_t hd = dims[d];
        for (int32_t extra = 0; extra <= 3 * hd; extra += hd + (hd % 3)) {
            size_t ks = (size_t)(hd + extra);
            /* exactly as long as needed, so an over-read shows up under ASan */
            size_t len = (size_t)(nmax - 1) * ks + (size_t)hd;
            uint16_t *k = malloc(len * sizeof *k);
            float *q = malloc((size_t)hd * sizeof *q);
            float want[70], got[70];
            assert_non_null(k);
            assert_non_null(q);
            fill_f16(k, len, &rng, 4.0f);
            fill_q(q, hd, &rng, 4.0f);
            for (int32_t n = 1; n <= nmax; n += (n < 20 ? 1 : 7)) {
                const uint16_t *kn = k + (size_t)(nmax - n) * ks; /* the last n rows */
                br_attn_ref.scores(q, kn, ks, n, hd, 0.0883883f, want);
                a->scores(q, kn, ks, n, hd, 0.0883883f, got);
                expect_same("scores", a->name, want, got, (size_t)n, hd, n);
            }
            free(k);
            free(q);
        }
    }
}

/* Signed zeros: products that underflow to -0.0 leave every lane at -0.0, and a head_dim
 * tail must not turn the lanes it does not touch into +0.0. */
static void test_scores_signed_zero(void **state)
{
    const struct br_attn_ops *a = variant_or_skip(state);
    float q[40];
    uint16_t k[9 * 40];
    for (int i = 0; i < 40; i++) q[i] = -1e-40f;
    for (int i = 0; i < 9 * 40; i++) k[i] = 0x0001; /* 2^-24 */
    for (int32_t hd = 1; hd <= 40; hd++)
        for (int32_t n = 1; n <= 9; n++) {
            float want[9], got[9];
            br_attn_ref.scores(q, k, (size_t)hd, n, hd, 1.0f, want);
            a->scores(q, k, (size_t)hd, n, hd, 1.0f, got);
            expect_same("scores(-0)", a->name, want, got, (size_t)n, hd, n);
            if (hd >= 8) assert_true(br_fp32_to_bits(want[0]) == 0x80000000u); /* every lane -0 */
        }
}

/* Value accumulation onto a nonzero output, strided rows, 1..70 positions. */
static void test_accum(void **state)
{
    const struct br_attn_ops *a = variant_or_skip(state);
    uint64_t rng = 777;
    const int32_t nmax = 70;
    for (int d = 0; d < NDIMS; d++) {
        int32_t hdv = dims[d];
        size_t vs = (size_t)hdv + (size_t)(d % 3) * 16;
        size_t len = (size_t)(nmax - 1) * vs + (size_t)hdv;
        uint16_t *v = malloc(len * sizeof *v);
        float *w = malloc((size_t)nmax * sizeof *w);
        float *o0 = malloc((size_t)hdv * sizeof *o0), *want = malloc((size_t)hdv * sizeof *want),
              *got = malloc((size_t)hdv * sizeof *got);
        assert_true(v && w && o0 && want && got);
        fill_f16(v, len, &rng, 8.0f);
        for (int32_t p = 0; p < nmax; p++) w[p] = br_f16_to_f32(br_f32_to_f16(rand_val(&rng, 1)));
        for (int32_t i = 0; i < hdv; i++) o0[i] = rand_val(&rng, 3.0f);
        for (int32_t n = 1; n <= nmax; n += (n < 20 ? 1 : 7)) {
            memcpy(want, o0, (size_t)hdv * sizeof *want);
            memcpy(got, o0, (size_t)hdv * sizeof *got);
            br_attn_ref.accum(w, v, vs, n, hdv, want);
            a->accum(w, v, vs, n, hdv, got);
            expect_same("accum", a->name, want, got, (size_t)hdv, hdv, n);
        }
        free(v), free(w), free(o0), free(want), free(got);
    }
}

/* The grouped forms (G query heads on one KV head) give every head the reference's single
 * bits: G = 1..9 (whole and partial passes of 4), head dims with and without tails, row
 * counts around the 8-position step, padded strides. */
static void test_grouped(void **state)
{
    const struct br_attn_ops *a = variant_or_skip(state);
    uint64_t rng = 4321;
    static const int32_t hds[] = {8, 24, 64, 80, 100, 128, 256};
    const int32_t nmax = 37, gmax = 9;
    for (size_t d = 0; d < sizeof hds / sizeof *hds; d++) {
        int32_t hd = hds[d];
        size_t ks = (size_t)hd + (d % 2) * 8, qs = (size_t)hd + 3, ss = (size_t)nmax + 5;
        size_t len = (size_t)(nmax - 1) * ks + (size_t)hd;
        uint16_t *k = malloc(len * sizeof *k);
        float *q = malloc((size_t)gmax * qs * sizeof *q);
        float *want = malloc((size_t)gmax * ss * sizeof *want),
              *got = malloc((size_t)gmax * ss * sizeof *got);
        float *ow = malloc((size_t)gmax * qs * sizeof *ow),
              *og = malloc((size_t)gmax * qs * sizeof *og);
        assert_true(k && q && want && got && ow && og);
        fill_f16(k, len, &rng, 4.0f);
        fill_q(q, (int32_t)((size_t)gmax * qs), &rng, 4.0f);
        for (int32_t G = 1; G <= gmax; G++)
            for (int32_t n = 1; n <= nmax; n += (n < 18 ? 1 : 6)) {
                for (size_t i = 0; i < (size_t)gmax * ss; i++) want[i] = got[i] = 7.0f;
                for (int32_t g = 0; g < G; g++)
                    br_attn_ref.scores(q + (size_t)g * qs, k, ks, n, hd, 0.125f,
                                       want + (size_t)g * ss);
                br_attn_scores_g(a, q, qs, G, k, ks, n, hd, 0.125f, got, ss);
                expect_same("scores_g", a->name, want, got, (size_t)gmax * ss, hd, G * 100 + n);
                /* the scores (rounded to f16 like softmax weights) as the accumulation's weights */
                for (size_t i = 0; i < (size_t)gmax * ss; i++)
                    want[i] = br_f16_to_f32(br_f32_to_f16(want[i]));
                for (size_t i = 0; i < (size_t)gmax * qs; i++) ow[i] = og[i] = rand_val(&rng, 2.0f);
                for (int32_t g = 0; g < G; g++)
                    br_attn_ref.accum(want + (size_t)g * ss, k, ks, n, hd, ow + (size_t)g * qs);
                br_attn_accum_g(a, want, ss, G, k, ks, n, hd, og, qs);
                expect_same("accum_g", a->name, ow, og, (size_t)gmax * qs, hd, G * 100 + n);
            }
        free(k), free(q), free(want), free(got), free(ow), free(og);
    }
}

/* One query the way the engine runs it: scores and accumulation one block of rows at a
 * time, softmax over all positions in between. */
static void attend(const struct br_attn_ops *a, const float *q, const uint16_t *k,
                   const uint16_t *v, size_t ks, size_t vs, int32_t n, int32_t hd, int32_t hdv,
                   int32_t block, float *s, float *out)
{
    float scale = 1.0f / sqrtf((float)hd);
    for (int32_t p0 = 0; p0 < n; p0 += block)
        a->scores(q, k + (size_t)p0 * ks, ks, n - p0 < block ? n - p0 : block, hd, scale, s + p0);
    float inv;
    if (a == &br_attn_ref) {
        inv = br_attn_softmax(s, n);
    } else {
        inv = br_attn_exp(s, n);
        a->round_f16(s, n);
    }
    for (int32_t i = 0; i < hdv; i++) out[i] = 0.0f;
    for (int32_t p0 = 0; p0 < n; p0 += block)
        a->accum(s + p0, v + (size_t)p0 * vs, vs, n - p0 < block ? n - p0 : block, hdv, out);
    for (int32_t i = 0; i < hdv; i++) out[i] *= inv;
}

/* Whole queries for a GQA group (4 query heads on one of 3 KV heads) over contexts up to
 * 1500 positions: each variant equals the reference, splitting into blocks changes
 * nothing, and the result is close to attention in double precision. */
static void test_attention(void **state)
{
    const struct br_attn_ops *a = variant_or_skip(state);
    static const int32_t shapes[][3] = {{64, 64, 1},   {128, 128, 5}, {128, 128, 33},
                                        {80, 80, 100}, {100, 60, 31}, {128, 128, 1500},
                                        {17, 9, 257}};
    uint64_t rng = 99;
    const int32_t n_kv = 3, g = 4;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int32_t hd = shapes[si][0], hdv = shapes[si][1], n = shapes[si][2];
        size_t ks = (size_t)n_kv * (size_t)hd, vs = (size_t)n_kv * (size_t)hdv;
        uint16_t *k = malloc((size_t)n * ks * sizeof *k), *v = malloc((size_t)n * vs * sizeof *v);
        float *q = malloc((size_t)hd * sizeof *q), *s = malloc((size_t)n * sizeof *s);
        float *want = malloc((size_t)hdv * sizeof *want), *got = malloc((size_t)hdv * sizeof *got);
        double *sd = malloc((size_t)n * sizeof *sd);
        assert_true(k && v && q && s && want && got && sd);
        fill_f16(k, (size_t)n * ks, &rng, 3.0f);
        fill_f16(v, (size_t)n * vs, &rng, 3.0f);
        for (int32_t h = 0; h < n_kv * g; h++) {
            int32_t kvh = h / g;
            const uint16_t *kh = k + (size_t)kvh * (size_t)hd, *vh = v + (size_t)kvh * (size_t)hdv;
            fill_q(q, hd, &rng, 3.0f);
            attend(&br_attn_ref, q, kh, vh, ks, vs, n, hd, hdv, n, s, want);
            attend(a, q, kh, vh, ks, vs, n, hd, hdv, BLOCK, s, got);
            expect_same("attention", a->name, want, got, (size_t)hdv, hd, n);
            /* double-precision attention with the same f16 inputs */
            double mx = -INFINITY, sum = 0.0;
            for (int32_t p = 0; p < n; p++) {
                double d = 0.0;
                for (int32_t i = 0; i < hd; i++)
                    d += (double)q[i] * br_f16_to_f32(kh[(size_t)p * ks + (size_t)i]);
                sd[p] = d / sqrt((double)hd);
                if (sd[p] > mx) mx = sd[p];
            }
            for (int32_t p = 0; p < n; p++) sum += (sd[p] = exp(sd[p] - mx));
            for (int32_t i = 0; i < hdv; i++) {
                double o = 0.0, mag = 0.0;
                for (int32_t p = 0; p < n; p++) {
                    double x = br_f16_to_f32(vh[(size_t)p * vs + (size_t)i]);
                    o += sd[p] * x;
                    mag += sd[p] * fabs(x);
                }
                /* the f16 weights are within 2^-11 relative of the exact ones */
                double tol = 2e-3 * mag / sum + 1e-6;
                if (fabs(o / sum - got[i]) > tol)
                    fail_msg("%s attention hd=%d n=%d i=%d: %g vs exact %g", a->name, hd, n, i,
                             (double)got[i], o / sum);
            }
        }
        free(k), free(v), free(q), free(s), free(want), free(got), free(sd);
    }
}

/* Softmax: weights are f16 values of expf(s - max), the largest is exactly 1, and the
 * returned factor is 1 / (their unrounded sum in order). */
static void test_softmax(void **state)
{
    (void)state;
    float s[5] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f}, e[5];
    float sum = 0.0f;
    for (int p = 0; p < 5; p++) {
        e[p] = expf(s[p] - 3.0f);
        sum += e[p];
    }
    float inv = br_attn_softmax(s, 5);
    assert_true(br_fp32_to_bits(inv) == br_fp32_to_bits(1.0f / sum));
    for (int p = 0; p < 5; p++) {
        assert_true(br_fp32_to_bits(s[p]) == br_fp32_to_bits(br_f16_to_f32(br_f32_to_f16(e[p]))));
        assert_true(br_f16_to_f32(br_f32_to_f16(s[p])) == s[p]);
    }
    assert_true(s[1] == 1.0f && s[3] == 1.0f);
    float one = -7.0f;
    assert_true(br_attn_softmax(&one, 1) == 1.0f && one == 1.0f);
}

/* KV-cache stores: every variant rounds like br_f32_to_f16, on sampled bit patterns
 * (ties, subnormals, overflow, infinities, NaNs) and on every length 0..40. */
static void test_to_f16(void **state)
{
    const struct br_attn_ops *a = variant_or_skip(state);
    enum { N = 1 << 16 };
    float *x = malloc(N * sizeof *x);
    uint16_t *want = malloc(N * sizeof *want), *got = malloc(N * sizeof *got);
    assert_true(x && want && got);
    uint64_t rng = 5;
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)br_test_rand(&rng);
        if (i % 4 == 1)
            u = (u & 0x8fffe000u) | 0x1000u | ((uint32_t)(i % 31 + 97) << 23); /* ties */
        if (i % 4 == 2) u = (uint32_t)i << 16; /* every exponent, NaNs and infinities */
        if (i % 4 == 3) u = (u & 0x80ffffffu) | (103u + (uint32_t)(i % 40)) << 23; /* f16 tiny */
        x[i] = br_fp32_from_bits(u);
        want[i] = br_f32_to_f16(x[i]);
    }
    a->to_f16(x, N, got);
    for (int i = 0; i < N; i++)
        if (want[i] != got[i])
            fail_msg("%s to_f16 %08x: %04x vs %04x", a->name, br_fp32_to_bits(x[i]), want[i],
                     got[i]);
    /* in place, widened back: the same values */
    a->round_f16(x, N);
    for (int i = 0; i < N; i++) {
        float w = br_f16_to_f32(want[i]);
        if (br_fp32_to_bits(w) != br_fp32_to_bits(x[i]))
            fail_msg("%s round_f16 at %d: %08x vs %08x", a->name, i, br_fp32_to_bits(w),
                     br_fp32_to_bits(x[i]));
        x[i] = w; /* NaN payloads may differ from the original; keep the rounded value */
    }
    for (int i = 0; i < N; i++) want[i] = br_f32_to_f16(x[i]);
    for (int32_t n = 0; n <= 40; n++) {
        uint16_t h[41];
        h[n] = 0xabcd; /* guard */
        a->to_f16(x + 7, n, h);
        assert_memory_equal(h, want + 7, (size_t)n * sizeof *h);
        assert_int_equal(h[n], 0xabcd);
    }
    free(x), free(want), free(got);
}

/* The active variant follows the kernel choice and is never missing. */
static void test_active(void **state)
{
    (void)state;
    const struct br_attn_ops *a = br_attn_active();
    assert_non_null(a);
    print_message("active attention kernels: %s\n", a->name);
    assert_non_null(br_attn_find("ref"));
    assert_null(br_attn_find("no-such-isa"));
    assert_null(br_attn_find(NULL));
}

#define VARIANT_TESTS(v)                                                                           \
    cmocka_unit_test_prestate(test_scores, (void *)v),                                             \
        cmocka_unit_test_prestate(test_scores_signed_zero, (void *)v),                             \
        cmocka_unit_test_prestate(test_accum, (void *)v),                                          \
        cmocka_unit_test_prestate(test_grouped, (void *)v),                                        \
        cmocka_unit_test_prestate(test_attention, (void *)v),                                      \
        cmocka_unit_test_prestate(test_to_f16, (void *)v)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_scores_canonical),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_active),
        VARIANT_TESTS("ref"),
        VARIANT_TESTS("avx2"),
        VARIANT_TESTS("avx512"),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
