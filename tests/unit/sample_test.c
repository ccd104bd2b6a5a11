/*
 * Tests of coordinator/rng and coordinator/sample: Philox known answers, the sampling
 * pipeline on hand-built distributions, bit-exact agreement of split-vocabulary merging
 * with the unsplit sampler and with a naive whole-vocabulary model, a chi-square check of
 * temperature sampling, independence from batch composition, logprobs and stop
 * conditions. Every random choice is seeded, so nothing can flake.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "worker/rng.h"
#include "coordinator/stop.h"
#include "worker/sample.h"
#include "test_util.h"

/* ---- helpers ---- */

static struct br_sample_params params(float temp)
{
    struct br_sample_params p;
    br_sample_params_default(&p);
    p.temperature = temp;
    p.seed = 0x5eed;
    return p;
}

static struct br_sample_result full(const struct br_sample_params *p, const float *logits,
                                    int32_t n, const int32_t *hist, size_t nh, uint64_t seq,
                                    uint64_t pos)
{
    struct br_sample_result r, again;
    struct br_err e = {{0}};
    int rc = br_sample_full(p, logits, n, hist, nh, seq, pos, NULL, &r, &e);
    if (rc != BR_OK) fail_msg("br_sample_full: %s", e.msg);
    /* with working memory kept from every earlier call (grown by other sizes): the same */
    static struct br_sample_ws ws;
    assert_int_equal(br_sample_full(p, logits, n, hist, nh, seq, pos, &ws, &again, &e), BR_OK);
    assert_int_equal(r.token, again.token);
    assert_int_equal(r.n_kept, again.n_kept);
    assert_memory_equal(&r.logit, &again.logit, sizeof r.logit);
    assert_memory_equal(&r.logprob, &again.logprob, sizeof r.logprob);
    return r;
}

/* Samples over the slices whose boundaries are bounds (n_slices + 1,). */
static struct br_sample_result split(const struct br_sample_params *p, const float *logits,
                                     const int32_t *bounds, int32_t n_slices, const int32_t *hist,
                                     size_t nh, uint64_t seq, uint64_t pos)
{
    struct br_sample_slice sl[8];
    struct br_cand *cands[8];
    struct br_sample_chunk_stat *stats[8];
    assert_true(n_slices <= 8);
    int32_t cap = br_sample_max_candidates(p);
    for (int32_t i = 0; i < n_slices; i++) {
        int32_t v0 = bounds[i], v1 = bounds[i + 1];
        cands[i] = malloc((size_t)cap * sizeof *cands[i]);
        stats[i] = malloc((size_t)br_sample_n_chunks(v0, v1) * sizeof *stats[i]);
        struct br_err e = {{0}};
        int n = br_sample_candidates(p, logits + v0, v0, v1, hist, nh, seq, pos, cands[i], cap,
                                     stats[i], &e);
        if (n < 0) fail_msg("candidates: %s", e.msg);
        sl[i] = (struct br_sample_slice){v0, v1, cands[i], n, stats[i]};
    }
    struct br_sample_result r;
    struct br_err e = {{0}};
    int rc = br_sample_merge(p, sl, n_slices, NULL, &r, &e);
    if (rc != BR_OK) fail_msg("merge: %s", e.msg);
    for (int32_t i = 0; i < n_slices; i++) {
        free(cands[i]);
        free(stats[i]);
    }
    return r;
}

static double rand_unit(uint64_t *s)
{
    return ((double)(br_test_rand(s) >> 11) + 0.5) * 0x1p-53;
}

static double rand_normal(uint64_t *s)
{
    return sqrt(-2.0 * log(rand_unit(s))) * cos(6.283185307179586 * rand_unit(s));
}

/* ---- RNG ---- */

static void test_philox_known_answers(void **state)
{
    (void)state;
    /* Random123 kat_vectors for philox4x32_10. */
    static const uint32_t v[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        br_rng_philox4x32_10(&v[i][0], &v[i][4], out);
        for (int j = 0; j < 4; j++) assert_int_equal(out[j], v[i][6 + j]);
    }
}

static void test_rng_pure_and_distinct(void **state)
{
    (void)state;
    uint64_t a = br_rng_u64(1, 2, 3, 4);
    assert_true(a == br_rng_u64(1, 2, 3, 4));
    assert_true(a != br_rng_u64(2, 2, 3, 4));
    assert_true(a != br_rng_u64(1, 3, 3, 4));
    assert_true(a != br_rng_u64(1, 2, 4, 4));
    assert_true(a != br_rng_u64(1, 2, 3, 5));
    assert_true(a != br_rng_u64(1, 2ull << 32, 3, 4)); /* high bits of seq count */
    double sum = 0.0;
    for (uint64_t i = 0; i < 100000; i++) {
        double u = br_rng_uniform(9, 1, i, 0);
        float f = br_rng_uniformf(9, 1, i, 0);
        assert_true(u > 0.0 && u < 1.0);
        assert_true(f > 0.0f && f < 1.0f);
        assert_true(br_rng_gumbel(9, 1, i, 0) < BR_RNG_GUMBEL_MAX);
        sum += u;
    }
    assert_true(fabs(sum / 100000 - 0.5) < 0.005);
    /* Per-token draws: pure, and different across tokens, positions and sequences. */
    struct br_rng_step k = br_rng_step_key(1, 2, 3);
    assert_true(br_rng_token_bits(k, 5) == br_rng_token_bits(br_rng_step_key(1, 2, 3), 5));
    assert_true(br_rng_token_bits(k, 5) != br_rng_token_bits(k, 6));
    assert_true(br_rng_token_bits(k, 5) != br_rng_token_bits(br_rng_step_key(1, 2, 4), 5));
    assert_true(br_rng_token_bits(k, 5) != br_rng_token_bits(br_rng_step_key(1, 3, 3), 5));
    assert_true(br_rng_token_gumbel(1, 2, 3, 5) ==
                br_rng_gumbel_from_bits(br_rng_token_bits(k, 5)));
    /* The extreme uniforms are what the Gumbel bound relies on. */
    assert_true(-log(-log(1.0 - 0x1p-53)) < BR_RNG_GUMBEL_MAX);
}

/* ---- pipeline on hand-built distributions ---- */

static void test_greedy_ties_lowest(void **state)
{
    (void)state;
    struct br_sample_params p = params(0.0f);
    const float l[6] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f, 3.0f};
    for (uint64_t pos = 0; pos < 20; pos++) {
        struct br_sample_result r = full(&p, l, 6, NULL, 0, 1, pos);
        assert_int_equal(r.token, 1);
        assert_int_equal(r.n_kept, 1);
    }
    /* A slice whose every token is banned takes no part. */
    float two[512];
    for (int i = 0; i < 512; i++) two[i] = (float)(i % 7);
    struct br_sample_bias ban[256];
    for (int i = 0; i < 256; i++) ban[i] = (struct br_sample_bias){i, -INFINITY};
    p.bias = ban;
    p.n_bias = 256;
    const int32_t b2[3] = {0, 256, 512};
    for (int t = 0; t < 3; t++) {
        p.temperature = (float)t * 0.6f;
        p.top_k = t == 2 ? 3 : 0;
        for (uint64_t pos = 0; pos < 20; pos++) {
            struct br_sample_result r = split(&p, two, b2, 2, NULL, 0, 1, pos);
            assert_true(r.token >= 256);
            assert_int_equal(r.token, full(&p, two, 512, NULL, 0, 1, pos).token);
        }
    }
    p = params(0.0f);
    /* Same across a split whose first slice holds none of the maxima. */
    float big[600] = {0};
    big[300] = 5.0f;
    big[599] = 5.0f;
    int32_t b[3] = {0, 256, 600};
    assert_int_equal(split(&p, big, b, 2, NULL, 0, 0, 0).token, 300);
}

/* The kept set is always a head of the order (logit desc, id asc), so n_kept names it;
 * the draws over many positions must cover exactly that head. */
static void check_kept(const struct br_sample_params *p, const float *l, int32_t n,
                       int32_t expect_kept, const int32_t *head)
{
    int seen[64] = {0};
    assert_true(n <= 64);
    for (uint64_t pos = 0; pos < 2000; pos++) {
        struct br_sample_result r = full(p, l, n, NULL, 0, 3, pos);
        assert_int_equal(r.n_kept, expect_kept);
        seen[r.token]++;
    }
    for (int32_t i = 0; i < n; i++) {
        int in_head = 0;
        for (int32_t j = 0; j < expect_kept; j++) in_head |= head[j] == i;
        if (in_head)
            assert_true(seen[i] > 0);
        else
            assert_int_equal(seen[i], 0);
    }
}

static void test_top_k(void **state)
{
    (void)state;
    struct br_sample_params p = params(1.0f);
    const float l[8] = {0.1f, 2.0f, 1.0f, 2.0f, -1.0f, 1.5f, 0.0f, 1.0f};
    p.top_k = 3;
    check_kept(&p, l, 8, 3, (const int32_t[]){1, 3, 5});
    p.top_k = 4; /* tie at 1.0 between ids 2 and 7: the lower id is kept */
    check_kept(&p, l, 8, 4, (const int32_t[]){1, 3, 5, 2});
    p.top_k = 1;
    check_kept(&p, l, 8, 1, (const int32_t[]){1});
    p.top_k = 100; /* more than the vocabulary: nothing cut */
    check_kept(&p, l, 8, 8, (const int32_t[]){1, 3, 5, 2, 7, 0, 6, 4});
}

static void test_top_p_boundaries(void **state)
{
    (void)state;
    struct br_sample_params p = params(1.0f);
    /* Four equal logits: each p is exactly 1/4, so cumulative sums hit 0.5 exactly. */
    const float flat[6] = {0.0f, 0.0f, 0.0f, 0.0f, -INFINITY, -INFINITY};
    p.top_p = 0.5f;
    check_kept(&p, flat, 6, 2, (const int32_t[]){0, 1});
    p.top_p = 0.75f;
    check_kept(&p, flat, 6, 3, (const int32_t[]){0, 1, 2});
    p.top_p = 0.5000001f;
    check_kept(&p, flat, 6, 3, (const int32_t[]){0, 1, 2});
    p.top_p = 0.0f; /* keeps the head token at least */
    check_kept(&p, flat, 6, 1, (const int32_t[]){0});
    p.top_p = 1.0f - 1e-7f;
    check_kept(&p, flat, 6, 4, (const int32_t[]){0, 1, 2, 3});
    /* With top-k on, probabilities are renormalised over the top-k set: of 2 kept tokens
     * each has 1/2, so top_p 0.5 keeps one. */
    p.top_k = 2;
    p.top_p = 0.5f;
    check_kept(&p, flat, 6, 1, (const int32_t[]){0});
    /* A skewed distribution: probabilities about .5, .25, .125, .125. */
    const float sk[4] = {logf(0.5f), logf(0.25f), logf(0.125f), logf(0.125f)};
    p.top_k = 0;
    p.top_p = 0.4f;
    check_kept(&p, sk, 4, 1, (const int32_t[]){0});
    p.top_p = 0.7f;
    check_kept(&p, sk, 4, 2, (const int32_t[]){0, 1});
    p.top_p = 0.8f;
    check_kept(&p, sk, 4, 3, (const int32_t[]){0, 1, 2});
}

static void test_min_p(void **state)
{
    (void)state;
    struct br_sample_params p = params(1.0f);
    const float l[5] = {-1.0f, 0.0f, -0.5f, -2.0f, 0.0f};
    p.min_p = 0.5f; /* exp(-0.5) = .61 kept, exp(-1) = .37 not */
    check_kept(&p, l, 5, 3, (const int32_t[]){1, 4, 2});
    p.min_p = 0.3f;
    check_kept(&p, l, 5, 4, (const int32_t[]){1, 4, 2, 0});
    p.min_p = 1.0f; /* ties with the maximum survive */
    check_kept(&p, l, 5, 2, (const int32_t[]){1, 4});
    /* Order: top-p first (keeps 1, 4, 2 of mass ~.72), then min-p cuts 2. */
    p.min_p = 0.7f;
    p.top_p = 0.6f;
    check_kept(&p, l, 5, 2, (const int32_t[]){1, 4});
}

/* Candidates of the whole vocabulary with top-k = n show the adjusted logits. */
static void adjusted(const struct br_sample_params *p0, const float *l, int32_t n,
                     const int32_t *hist, size_t nh, float *out)
{
    struct br_sample_params p = *p0;
    p.temperature = 1.0f;
    p.top_k = n;
    struct br_cand c[16];
    struct br_sample_chunk_stat st[1];
    struct br_err e = {{0}};
    int k = br_sample_candidates(&p, l, 0, n, hist, nh, 0, 0, c, 16, st, &e);
    assert_int_equal(k, n);
    for (int i = 0; i < k; i++) out[c[i].id] = c[i].logit;
}

static void test_penalties_hand_computed(void **state)
{
    (void)state;
    struct br_sample_params p = params(0.0f);
    const float l[5] = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f};
    const int32_t hist[4] = {0, 1, 0, 2};
    float a[5];
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    adjusted(&p, l, 5, hist, 4, a);
    assert_true(a[0] == 0.0f);   /* 2/2 - (2*.25 + .5) */
    assert_true(a[1] == -2.75f); /* -1*2 - (.25 + .5) */
    assert_true(a[2] == -0.5f);  /* .5/2 - .75 */
    assert_true(a[3] == 3.0f);
    assert_true(a[4] == 0.0f);
    /* A zero logit counts as non-positive: multiplied by the repetition penalty. */
    const int32_t h4[1] = {4};
    adjusted(&p, l, 5, h4, 1, a);
    assert_true(a[4] == -0.75f);
    /* Window: only the last 2 history tokens {0, 2}. */
    p.penalty_last_n = 2;
    adjusted(&p, l, 5, hist, 4, a);
    assert_true(a[0] == 0.25f);
    assert_true(a[1] == -1.0f);
    assert_true(a[2] == -0.5f);
    p.penalty_last_n = 0;
    adjusted(&p, l, 5, hist, 4, a);
    assert_true(a[0] == 2.0f && a[1] == -1.0f);
    /* Bias comes before penalties: -1 + 1.5 = .5 is positive, so it is divided. */
    p.penalty_last_n = -1;
    const struct br_sample_bias bias[2] = {{1, 1.0f}, {1, 0.5f}};
    p.bias = bias;
    p.n_bias = 2;
    adjusted(&p, l, 5, hist, 4, a);
    assert_true(a[1] == -0.5f); /* .5/2 - .75 */
}

static void test_bias_bans(void **state)
{
    (void)state;
    struct br_sample_params p = params(0.0f);
    const float l[4] = {1.0f, 5.0f, 4.0f, 0.0f};
    const struct br_sample_bias ban[2] = {{1, -INFINITY}, {3, 2.0f}};
    p.bias = ban;
    p.n_bias = 2;
    assert_int_equal(full(&p, l, 4, NULL, 0, 0, 0).token, 2);
    p.temperature = 5.0f; /* flat enough that every unbanned token appears */
    int seen[4] = {0};
    for (uint64_t pos = 0; pos < 3000; pos++) seen[full(&p, l, 4, NULL, 0, 0, pos).token]++;
    assert_int_equal(seen[1], 0);
    assert_true(seen[0] > 0 && seen[2] > 0 && seen[3] > 0);
    p.top_p = 0.99f;
    for (uint64_t pos = 0; pos < 500; pos++)
        assert_int_not_equal(full(&p, l, 4, NULL, 0, 0, pos).token, 1);
    /* The banned token's logprob is -inf; everything banned is an error. */
    const struct br_sample_bias all[4] = {
        {0, -INFINITY}, {1, -INFINITY}, {2, -INFINITY}, {3, -INFINITY}};
    p.bias = all;
    p.n_bias = 4;
    struct br_sample_result r;
    struct br_err e = {{0}};
    assert_int_equal(br_sample_full(&p, l, 4, NULL, 0, 0, 0, NULL, &r, &e), BR_E_INVALID);
    assert_non_null(strstr(e.msg, "banned"));
}

/* ---- a naive whole-vocabulary model of the pipeline ---- */

struct naive_tok {
    int32_t id;
    float l;
};

static int naive_cmp(const void *a, const void *b)
{
    const struct naive_tok *x = a, *y = b;
    if (x->l != y->l) return x->l > y->l ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int32_t naive_sample(const struct br_sample_params *p, const float *logits, int32_t n,
                            const int32_t *hist, size_t nh, uint64_t seq, uint64_t pos,
                            double *logprob)
{
    struct naive_tok *t = malloc((size_t)n * sizeof *t);
    for (int32_t i = 0; i < n; i++) {
        float l = logits[i];
        for (int32_t j = 0; j < p->n_bias; j++)
            if (p->bias[j].id == i) l += p->bias[j].bias;
        size_t w0 = p->penalty_last_n < 0 || (size_t)p->penalty_last_n > nh
                        ? 0
                        : nh - (size_t)p->penalty_last_n;
        int c = 0;
        for (size_t j = w0; j < nh; j++) c += hist[j] == i;
        if (c > 0 && (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f ||
                      p->frequency_penalty != 0.0f)) {
            if (p->repeat_penalty != 1.0f)
                l = l <= 0.0f ? l * p->repeat_penalty : l / p->repeat_penalty;
            l -= (float)c * p->frequency_penalty + p->presence_penalty;
        }
        t[i] = (struct naive_tok){i, l};
    }
    qsort(t, (size_t)n, sizeof *t, naive_cmp);
    double z = 0.0;
    for (int32_t i = 0; i < n; i++) z += exp((double)t[i].l - (double)t[0].l);
    int32_t k = n, pick = 0;
    if (p->temperature > 0.0f) {
        int trunc = p->top_k > 0 || p->top_p < 1.0f || p->min_p > 0.0f;
        if (trunc) {
            k = p->top_k > 0 ? p->top_k : p->cand_cap;
            if (k > n) k = n;
            while (k > 1 && t[k - 1].l == -INFINITY) k--;
        }
        if (p->top_p < 1.0f) {
            double zz = z;
            if (p->top_k > 0) {
                zz = 0.0;
                for (int32_t i = 0; i < k; i++) zz += exp((double)t[i].l - (double)t[0].l);
            }
            double cum = 0.0;
            for (int32_t i = 0; i < k; i++) {
                cum += exp((double)t[i].l - (double)t[0].l);
                if (cum >= (double)p->top_p * zz) {
                    k = i + 1;
                    break;
                }
            }
        }
        if (p->min_p > 0.0f) {
            int32_t i = 1;
            while (i < k && exp((double)t[i].l - (double)t[0].l) >= (double)p->min_p) i++;
            k = i;
        }
        double best = -INFINITY;
        for (int32_t i = 0; i < k; i++) {
            if (t[i].l == -INFINITY) continue;
            double key = (double)t[i].l / (double)p->temperature +
                         br_rng_token_gumbel(p->seed, seq, pos, (uint64_t)t[i].id);
            if (key > best || (key == best && t[i].id < t[pick].id)) {
                best = key;
                pick = i;
            }
        }
    }
    int32_t id = t[pick].id;
    *logprob = (double)t[pick].l - (double)t[0].l - log(z);
    free(t);
    return id;
}

/* Random logits with many exact ties (multiples of 1/4), a few banned tokens. */
static void random_logits(uint64_t *s, float *l, int32_t n, double scale)
{
    for (int32_t i = 0; i < n; i++) l[i] = (float)(round(rand_normal(s) * scale * 4.0) / 4.0);
    for (int i = 0; i < 5; i++) l[br_test_rand(s) % (uint64_t)n] = -INFINITY;
}

static void test_split_equals_full(void **state)
{
    (void)state;
    enum { N = 1500 }; /* 6 chunks: 5 full and one of 220 */
    float *l = malloc(N * sizeof *l);
    uint64_t s = 42;
    const struct br_sample_bias bias[3] = {{7, -INFINITY}, {300, 3.0f}, {1400, -2.5f}};
    int32_t hist[40];
    for (int i = 0; i < 40; i++) hist[i] = (int32_t)(br_test_rand(&s) % N);

    struct br_sample_params cfg[10];
    for (int i = 0; i < 10; i++) cfg[i] = params(0.8f);
    cfg[0].temperature = 0.0f;
    /* cfg[1]: plain temperature (Gumbel-max) */
    cfg[2].top_k = 5;
    cfg[3].top_p = 0.9f;
    cfg[4].min_p = 0.05f;
    cfg[5].top_k = 40, cfg[5].top_p = 0.95f, cfg[5].min_p = 0.02f;
    cfg[6].repeat_penalty = 1.3f, cfg[6].presence_penalty = 0.4f, cfg[6].frequency_penalty = 0.1f;
    cfg[6].penalty_last_n = -1, cfg[6].bias = bias, cfg[6].n_bias = 3, cfg[6].top_p = 0.8f;
    cfg[7].temperature = 1.7f, cfg[7].top_p = 0.5f, cfg[7].cand_cap = 8;
    cfg[8].temperature = 0.3f, cfg[8].bias = bias, cfg[8].n_bias = 3;
    cfg[9].temperature = 0.0f, cfg[9].bias = bias, cfg[9].n_bias = 3, cfg[9].repeat_penalty = 1.5f;

    int checked = 0;
    for (int trial = 0; trial < 60; trial++) {
        random_logits(&s, l, N, trial % 2 ? 1.0 : 4.0);
        for (int c = 0; c < 10; c++) {
            struct br_sample_params *p = &cfg[c];
            p->seed = br_test_rand(&s);
            uint64_t seq = br_test_rand(&s) % 1000, pos = br_test_rand(&s) % 4096;
            struct br_err e = {{0}};
            assert_int_equal(br_sample_params_check(p, N, &e), BR_OK);
            struct br_sample_result ref = full(p, l, N, hist, 40, seq, pos);
            double nlp;
            int32_t naive = naive_sample(p, l, N, hist, 40, seq, pos, &nlp);
            assert_int_equal(ref.token, naive);
            assert_true(fabs(ref.logprob - nlp) < 1e-6); /* chunk sums are floats */
            for (int32_t ns = 1; ns <= 5; ns++) {
                /* Random distinct chunk boundaries. */
                int32_t b[6] = {0};
                int used[6] = {0};
                for (int32_t i = 1; i < ns; i++) {
                    int32_t ch;
                    do ch = 1 + (int32_t)(br_test_rand(&s) % 5);
                    while (used[ch]);
                    used[ch] = 1;
                }
                int32_t k = 1;
                for (int32_t ch = 1; ch <= 5; ch++)
                    if (used[ch]) b[k++] = ch * BR_SAMPLE_CHUNK;
                b[ns] = N;
                struct br_sample_result r = split(p, l, b, ns, hist, 40, seq, pos);
                assert_int_equal(r.token, ref.token);
                assert_int_equal(r.n_kept, ref.n_kept);
                assert_memory_equal(&r.logit, &ref.logit, sizeof r.logit);
                assert_memory_equal(&r.logprob, &ref.logprob, sizeof r.logprob);
                checked++;
            }
        }
    }
    assert_int_equal(checked, 60 * 10 * 5);
    free(l);
}

/* top-p wider than the candidate cap is truncated to the cap, identically split or not. */
static void test_top_p_cap_boundary(void **state)
{
    (void)state;
    enum { N = 1024 };
    float l[N];
    for (int32_t i = 0; i < N; i++) l[i] = i % 5 == 0 && i / 5 < 200 ? 2.0f : -200.0f;
    /* 200 equal tokens (ids 0, 5, ..., 995) carry all the mass; top_p 0.9 needs 180. */
    struct br_sample_params p = params(1.0f);
    p.top_p = 0.9f;
    const int32_t caps[6] = {64, 179, 180, 181, 200, 400};
    const int32_t want[6] = {64, 179, 180, 180, 180, 180};
    const int32_t b[5] = {0, 256, 512, 768, N};
    for (int c = 0; c < 6; c++) {
        p.cand_cap = caps[c];
        for (uint64_t pos = 0; pos < 30; pos++) {
            struct br_sample_result r = full(&p, l, N, NULL, 0, 1, pos);
            assert_int_equal(r.n_kept, want[c]);
            assert_true(r.token % 5 == 0 && r.token / 5 < want[c]);
            struct br_sample_result q = split(&p, l, b, 4, NULL, 0, 1, pos);
            assert_int_equal(q.token, r.token);
            assert_int_equal(q.n_kept, r.n_kept);
        }
    }
    /* With top-k on, the cap does not apply: top-k bounds the set. */
    p.cand_cap = 8;
    p.top_k = 190;
    assert_int_equal(full(&p, l, N, NULL, 0, 1, 0).n_kept, 171); /* .9 of 190 = 171 */
}

/* Plain temperature sampling skips hopeless tokens (the Gumbel bound and the gate on the
 * random bits); top-k = vocabulary computes every key in full. Both must agree. */
static void test_gumbel_gate_exact(void **state)
{
    (void)state;
    enum { N = 1300 };
    float *l = malloc(N * sizeof *l);
    uint64_t s = 1234;
    const float temps[4] = {0.2f, 0.5f, 1.0f, 3.0f};
    int differ_from_greedy = 0;
    for (int t = 0; t < 4; t++) {
        for (uint64_t pos = 0; pos < 150; pos++) {
            for (int32_t i = 0; i < N; i++) l[i] = (float)(rand_normal(&s) * (pos % 2 ? 6.0 : 1.5));
            struct br_sample_params p = params(temps[t]);
            struct br_sample_result a = full(&p, l, N, NULL, 0, 4, pos);
            p.top_k = N;
            struct br_sample_result b = full(&p, l, N, NULL, 0, 4, pos);
            assert_int_equal(a.token, b.token);
            p = params(0.0f);
            differ_from_greedy += full(&p, l, N, NULL, 0, 4, pos).token != a.token;
        }
    }
    assert_true(differ_from_greedy > 100); /* the draws really are random */
    free(l);
}

static void chi_square_case(const struct br_sample_params *p, const float *l, int32_t n,
                            int32_t k_expect)
{
    enum { DRAWS = 20000 };
    int count[10] = {0};
    for (uint64_t pos = 0; pos < DRAWS; pos++) count[full(p, l, n, NULL, 0, 11, pos).token]++;
    /* Expected: softmax(l / T) over the k_expect best tokens (here ids 0 .. k-1). */
    double w[10], z = 0.0;
    for (int32_t i = 0; i < k_expect; i++) z += w[i] = exp((double)l[i] / p->temperature);
    double chi = 0.0;
    for (int32_t i = 0; i < n; i++) {
        if (i >= k_expect) {
            assert_int_equal(count[i], 0);
            continue;
        }
        double e = DRAWS * w[i] / z;
        chi += (count[i] - e) * (count[i] - e) / e;
    }
    /* 0.999 quantiles of chi-square: 9 dof 27.88, 4 dof 18.47. */
    double crit = k_expect == 10 ? 27.88 : 18.47;
    if (!(chi < crit)) fail_msg("chi-square %.2f >= %.2f", chi, crit);
}

static void test_temperature_chi_square(void **state)
{
    (void)state;
    const float l[10] = {2.0f, 1.5f, 1.2f, 1.0f, 0.5f, 0.3f, 0.0f, -0.5f, -1.0f, -1.5f};
    struct br_sample_params p = params(0.7f);
    p.seed = 20240601;
    chi_square_case(&p, l, 10, 10); /* Gumbel over the whole vocabulary */
    p.top_k = 10;
    chi_square_case(&p, l, 10, 10); /* the same through the candidate path */
    p.top_k = 5;
    chi_square_case(&p, l, 10, 5); /* renormalised over the top 5 */
}

/* ---- independence from batch composition and layout ---- */

/* A toy "model": logits depend on the sequence, position and previous token. */
static void toy_logits(uint64_t seq, uint64_t pos, int32_t prev, float *l, int32_t n)
{
    uint64_t s = seq * 1000003u + pos * 7919u + (uint64_t)prev + 1;
    for (int32_t i = 0; i < n; i++) l[i] = (float)(rand_normal(&s) * 2.0);
}

static void test_batch_composition(void **state)
{
    (void)state;
    enum { N = 1100, STEPS = 40 };
    float *l = malloc(N * sizeof *l);
    struct br_sample_params p = params(0.9f);
    p.top_p = 0.95f;
    p.repeat_penalty = 1.1f;
    /* Sequence A (id 5) alone, unsplit. */
    int32_t alone[STEPS], prev = 0;
    for (int t = 0; t < STEPS; t++) {
        toy_logits(5, (uint64_t)t, prev, l, N);
        prev = alone[t] = full(&p, l, N, alone, (size_t)t, 5, (uint64_t)t).token;
    }
    /* A interleaved with B (id 6, 17 tokens ahead) and C (id 9, just started), in an
     * order that changes every step, on a layout that changes every step. */
    int32_t hist[3][STEPS + 20], len[3] = {0, 17, 0};
    const uint64_t ids[3] = {5, 6, 9};
    for (int i = 0; i < 17; i++) hist[1][i] = i;
    uint64_t s = 99;
    for (int t = 0; t < STEPS; t++) {
        for (int j = 0; j < 3; j++) {
            int w = (int)((j + t) % 3);
            int32_t pv = len[w] ? hist[w][len[w] - 1] : 0;
            toy_logits(ids[w], (uint64_t)len[w], pv, l, N);
            int32_t b[6] = {0, 256, 512, 768, 1024, N};
            int32_t ns = 1 + (int32_t)(br_test_rand(&s) % 5);
            b[ns] = N;
            int32_t tok =
                split(&p, l, b, ns, hist[w], (size_t)len[w], ids[w], (uint64_t)len[w]).token;
            hist[w][len[w]++] = tok;
        }
    }
    for (int t = 0; t < STEPS; t++) assert_int_equal(hist[0][t], alone[t]);
    /* Different sequences do not share draws. */
    int same = 0;
    for (int t = 0; t < STEPS; t++) same += hist[0][t] == hist[2][t];
    assert_true(same < STEPS);
    free(l);
}

static void test_logprob(void **state)
{
    (void)state;
    enum { N = 700 };
    float l[N];
    uint64_t s = 7;
    for (int32_t i = 0; i < N; i++) l[i] = (float)(rand_normal(&s) * 3.0);
    double m = -INFINITY, z = 0.0;
    for (int32_t i = 0; i < N; i++) m = fmax(m, l[i]);
    for (int32_t i = 0; i < N; i++) z += exp((double)l[i] - m);
    const float temps[3] = {0.0f, 0.7f, 1.5f};
    for (int t = 0; t < 3; t++) {
        struct br_sample_params p = params(temps[t]);
        for (uint64_t pos = 0; pos < 50; pos++) {
            struct br_sample_result r = full(&p, l, N, NULL, 0, 2, pos);
            double direct = (double)l[r.token] - m - log(z);
            assert_true(fabs(r.logprob - direct) < 1e-6);
            assert_true(r.logit == l[r.token]);
        }
    }
}

/* no_logprob skips the softmax sums: the same token for every mode (bans, top-k, min-p,
 * over slices too), the logprob NaN; with top-p the sums are still computed (it needs
 * them), so the logprob stays. */
static void test_no_logprob(void **state)
{
    (void)state;
    enum { N = 1500 };
    float l[N];
    uint64_t s = 11;
    for (int32_t i = 0; i < N; i++) l[i] = (float)(rand_normal(&s) * 2.5);
    struct br_sample_bias ban[2] = {{3, -INFINITY}, {700, -INFINITY}};
    const int32_t bounds[3] = {0, 512, N};
    const float temps[3] = {0.0f, 0.8f, 1.3f};
    for (int t = 0; t < 3; t++)
        for (int mode = 0; mode < 4; mode++) {
            struct br_sample_params p = params(temps[t]);
            if (mode == 1) p.bias = ban, p.n_bias = 2;
            if (mode == 2) p.top_k = 20;
            if (mode == 3) p.min_p = 0.05f;
            struct br_sample_params q = p;
            q.no_logprob = 1;
            for (uint64_t pos = 0; pos < 20; pos++) {
                struct br_sample_result a = full(&p, l, N, NULL, 0, 1, pos);
                struct br_sample_result b = full(&q, l, N, NULL, 0, 1, pos);
                struct br_sample_result c = split(&q, l, bounds, 2, NULL, 0, 1, pos);
                assert_int_equal(a.token, b.token);
                assert_int_equal(a.token, c.token);
                assert_false(isnan(a.logprob));
                assert_true(isnan(b.logprob) && isnan(c.logprob));
            }
        }
    struct br_sample_params p = params(0.9f);
    p.top_p = 0.9f;
    p.no_logprob = 1;
    assert_false(isnan(full(&p, l, N, NULL, 0, 1, 5).logprob));
}

/* ---- argument checking ---- */

static void test_errors(void **state)
{
    (void)state;
    struct br_sample_params p = params(1.0f);
    struct br_err e = {{0}};
    assert_int_equal(br_sample_params_check(&p, 10, &e), BR_OK);
    p.top_p = 1.5f;
    assert_int_equal(br_sample_params_check(&p, 10, &e), BR_E_INVALID);
    assert_non_null(strstr(e.msg, "top_p"));
    p = params(-1.0f);
    assert_int_equal(br_sample_params_check(&p, 10, &e), BR_E_INVALID);
    p = params(1.0f);
    const struct br_sample_bias bad[1] = {{10, 1.0f}};
    p.bias = bad;
    p.n_bias = 1;
    assert_int_equal(br_sample_params_check(&p, 10, &e), BR_E_INVALID);
    assert_non_null(strstr(e.msg, "token id 10"));
    const struct br_sample_bias posinf[1] = {{1, INFINITY}};
    p.bias = posinf;
    assert_int_equal(br_sample_params_check(&p, 10, &e), BR_E_INVALID);

    p = params(1.0f);
    float l[300] = {0};
    struct br_cand c[4];
    struct br_sample_chunk_stat st[2];
    assert_int_equal(br_sample_candidates(&p, l + 10, 10, 300, NULL, 0, 0, 0, c, 4, st, &e),
                     BR_E_INVALID);
    assert_non_null(strstr(e.msg, "multiple of 256"));
    l[17] = NAN;
    assert_int_equal(br_sample_candidates(&p, l, 0, 300, NULL, 0, 0, 0, c, 4, st, &e), BR_E_RANGE);
    assert_non_null(strstr(e.msg, "token 17"));
    l[17] = 0.0f;
    l[290] = INFINITY;
    assert_int_equal(br_sample_candidates(&p, l, 0, 300, NULL, 0, 0, 0, c, 4, st, &e), BR_E_RANGE);
    assert_non_null(strstr(e.msg, "token 290"));
    l[290] = 0.0f;
    p.top_k = 8;
    assert_int_equal(br_sample_candidates(&p, l, 0, 300, NULL, 0, 0, 0, c, 4, st, &e),
                     BR_E_INVALID);
    /* A gap between slices is refused. */
    p.top_k = 0;
    struct br_cand c1 = {0, 0.0f, 0.0}, c2 = {600, 0.0f, 0.0};
    struct br_sample_chunk_stat s1[1] = {{0.0f, 1.0f}}, s2[1] = {{0.0f, 1.0f}};
    struct br_sample_slice sl[2] = {{0, 256, &c1, 1, s1}, {512, 700, &c2, 1, s2}};
    struct br_sample_result r;
    assert_int_equal(br_sample_merge(&p, sl, 2, NULL, &r, &e), BR_E_INVALID);
    assert_non_null(strstr(e.msg, "slice 1"));
}

/* ---- stop conditions ---- */

static void test_stop_tokens_and_length(void **state)
{
    (void)state;
    const int32_t stops[2] = {128001, 128009};
    struct br_sample_stop s = {stops, 2, NULL, 0, 5};
    assert_int_equal(br_sample_stop_token(&s, 42, 1), BR_SAMPLE_STOP_NONE);
    assert_int_equal(br_sample_stop_token(&s, 128009, 2), BR_SAMPLE_STOP_TOKEN);
    assert_int_equal(br_sample_stop_token(&s, 42, 5), BR_SAMPLE_STOP_LENGTH);
    assert_int_equal(br_sample_stop_token(&s, 128001, 5), BR_SAMPLE_STOP_TOKEN);
    s.max_tokens = 0;
    assert_int_equal(br_sample_stop_token(&s, 42, 100000), BR_SAMPLE_STOP_NONE);
}

/* Feeds pieces one by one, as a streaming server would; returns the text streamed. */
static enum br_sample_stop_reason stream(const struct br_sample_stop *s, const char *const *pieces,
                                         int n, const size_t *emits, char *streamed)
{
    char text[256] = "";
    size_t len = 0, sent = 0;
    streamed[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t pl = strlen(pieces[i]);
        memcpy(text + len, pieces[i], pl);
        len += pl;
        size_t emit;
        enum br_sample_stop_reason why = br_sample_stop_text(s, text, len, sent, &emit);
        assert_true(emit >= sent);
        strncat(streamed, text + sent, emit - sent);
        sent = emit;
        if (emits) assert_int_equal(emit, emits[i]);
        if (why != BR_SAMPLE_STOP_NONE) return why;
    }
    return BR_SAMPLE_STOP_NONE;
}

static void test_stop_strings(void **state)
{
    (void)state;
    const char *const strs[3] = {"</s>", "User:", ""};
    struct br_sample_stop s = {NULL, 0, strs, 3, 0};
    char out[256];
    /* "</s>" split over three tokens: held back while pending, never streamed. */
    const char *const p1[6] = {"Hello", " wor", "ld", "<", "/s", ">!"};
    const size_t e1[6] = {5, 9, 11, 11, 11, 11};
    assert_int_equal(stream(&s, p1, 6, e1, out), BR_SAMPLE_STOP_STRING);
    assert_string_equal(out, "Hello world");
    /* A false start is released once it can no longer match. */
    const char *const p2[3] = {"a <", "/b", "c"};
    const size_t e2[3] = {2, 5, 6};
    assert_int_equal(stream(&s, p2, 3, e2, out), BR_SAMPLE_STOP_NONE);
    assert_string_equal(out, "a </bc");
    /* Two stop strings: the earliest match wins, even if found in the same piece. */
    const char *const p3[2] = {"ok U", "ser: hi </s>"};
    assert_int_equal(stream(&s, p3, 2, NULL, out), BR_SAMPLE_STOP_STRING);
    assert_string_equal(out, "ok ");
    /* Self-overlapping stop string "abab": "ababab" matches at 0, "aabab" at 1. */
    const char *const ov[1] = {"abab"};
    struct br_sample_stop so = {NULL, 0, ov, 1, 0};
    const char *const p4[3] = {"a", "aba", "b"};
    const size_t e4[3] = {0, 1, 1};
    assert_int_equal(stream(&so, p4, 3, e4, out), BR_SAMPLE_STOP_STRING);
    assert_string_equal(out, "a");
    /* An incomplete UTF-8 character is held back too ("€" is e2 82 ac). */
    const char *const p5[3] = {"5 \xe2", "\x82", "\xac."};
    const size_t e5[3] = {2, 2, 6};
    assert_int_equal(stream(&s, p5, 3, e5, out), BR_SAMPLE_STOP_NONE);
    assert_string_equal(out, "5 \xe2\x82\xac.");
    /* No stop strings: everything streams at once. */
    struct br_sample_stop none = {NULL, 0, NULL, 0, 0};
    size_t emit;
    assert_int_equal(br_sample_stop_text(&none, "abc", 3, 0, &emit), BR_SAMPLE_STOP_NONE);
    assert_int_equal(emit, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_rng_pure_and_distinct),
        cmocka_unit_test(test_greedy_ties_lowest),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p_boundaries),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_penalties_hand_computed),
        cmocka_unit_test(test_bias_bans),
        cmocka_unit_test(test_split_equals_full),
        cmocka_unit_test(test_top_p_cap_boundary),
        cmocka_unit_test(test_gumbel_gate_exact),
        cmocka_unit_test(test_temperature_chi_square),
        cmocka_unit_test(test_batch_composition),
        cmocka_unit_test(test_logprob),
        cmocka_unit_test(test_no_logprob),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_stop_tokens_and_length),
        cmocka_unit_test(test_stop_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
