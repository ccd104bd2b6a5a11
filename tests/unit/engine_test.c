/*
 * The engine against an independent implementation of the model math (docs/FORMATS.md §3-4)
 * written here with plain loops and double accumulation, on tiny synthetic models of each
 * architecture and each ternary storage type; plus the exactness properties the design
 * promises: identical logits whatever the thread count, whether tokens are evaluated as
 * one batch or one by one, whatever the storage type of one seed's weights, and whatever
 * kernel set (kernels/kset.h) the engine is given.
 *
 * Tolerance of the comparison with the independent implementation: both quantize every
 * BitLinear input to int8 with the same rule, but they sum floats in different orders
 * (double here, the canonical float order there). Where no rounding decision differs, the
 * logits agree to ~1e-6. But an activation within an ulp of an int8 rounding boundary (or
 * of an f16 boundary in the KV cache) can round the other way in one implementation; one
 * such flip moves a projection input by 1/127 of its absmax, and observed worst cases
 * reach 1% of the logit range at later positions. The test allows a max difference of 3%
 * of the range and a mean difference of 0.2%, and requires the same top token at 80% of
 * positions; a real bug (wrong RoPE pairing, a missing norm, a transposed weight) moves
 * logits by a large fraction of their range at nearly every position.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/fp.h"
#include "kernels/kset.h"
#include "kernels/pool.h"
#include "sharding/synth.h"
#include "sharding/types.h"
#include "test_util.h"
#include "worker/engine.h"
#include "worker/model.h"

/* ---- independent reference ---- */

static float fround16(float x)
{
    return br_f16_to_f32(br_f32_to_f16(x));
}

static void ref_rmsnorm(const float *x, const float *w, int n, float eps, float *y)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) y[i] = x[i] * scale * w[i];
}

/* The canonical BitLinear input (kernels/ops.h): y = x * g (x alone when g is NULL),
 * q = round(y * 127 / max|y|), and the output scale s = 127 / max(max|y| * r, 1e-5) with
 * r the RMS normalization factor (1 without a norm). */
static float ref_quant(const float *x, const float *g, int n, float eps, int *q)
{
    double ss = 0;
    float mx = 0;
    for (int k = 0; k < n; k++) {
        ss += (double)x[k] * x[k];
        mx = fmaxf(mx, fabsf(g ? x[k] * g[k] : x[k]));
    }
    float r = g ? (float)(1.0 / sqrt(ss / n + eps)) : 1.0f;
    for (int k = 0; k < n; k++) {
        float v = rintf((g ? x[k] * g[k] : x[k]) * (127.0f / mx));
        q[k] = (int)fminf(127.0f, fmaxf(-128.0f, v));
    }
    return 127.0f / fmaxf(mx * r, 1e-5f);
}

/* BitLinear: y[r] = (sum_k w[r][k] q[k]) / s * scale[r], exact integer sum */
static void ref_bitlinear(const struct br_tmat *m, const float *x, const float *g, float eps,
                          float *y)
{
    int *q = malloc((size_t)m->cols * sizeof *q);
    float s = ref_quant(x, g, m->cols, eps, q);
    for (int r = 0; r < m->rows; r++) {
        long acc = 0;
        for (int k = 0; k < m->cols; k++) acc += br_tmat_get(m, r, k) * q[k];
        y[r] = (float)acc / s * m->scale[r];
    }
    free(q);
}

static void ref_rope(float *v, int n_rot, int pos, float base, int neox)
{
    for (int i = 0; i < n_rot / 2; i++) {
        double th = pos * pow(base, -2.0 * i / n_rot);
        int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
        double x0 = v[a], x1 = v[b];
        v[a] = (float)(x0 * cos(th) - x1 * sin(th));
        v[b] = (float)(x0 * sin(th) + x1 * cos(th));
    }
}

/* Whole-sequence reference forward: logits (n, vocab). */
static void ref_forward(const struct br_model *m, const int32_t *tok, int n, float *logits)
{
    const struct br_model_config *c = &m->cfg;
    int d = c->n_embd, hd = c->head_dim, nh = c->n_head, nkv = c->n_head_kv, ff = c->n_ff;
    float *x = calloc((size_t)n * d, sizeof *x);
    float *kc = calloc((size_t)c->n_layer * n * nkv * hd, sizeof *kc);
    float *vc = calloc((size_t)c->n_layer * n * nkv * hd, sizeof *vc);
    float *xn = malloc(sizeof(float) * (size_t)(d > ff ? d : ff));
    float *q = malloc(sizeof(float) * (size_t)nh * hd),
          *k = malloc(sizeof(float) * (size_t)nkv * hd);
    float *v = malloc(sizeof(float) * (size_t)nkv * hd),
          *a = malloc(sizeof(float) * (size_t)nh * hd);
    float *o = malloc(sizeof(float) * (size_t)d), *g = malloc(sizeof(float) * (size_t)ff);
    float *u = malloc(sizeof(float) * (size_t)ff), *row = malloc(sizeof(float) * (size_t)d);
    double *sc = malloc(sizeof(double) * (size_t)n);
    for (int t = 0; t < n; t++)
        assert_int_equal(br_dense_row(&m->embd, tok[t], x + (size_t)t * d, NULL), 0);
    for (int l = 0; l < c->n_layer; l++) {
        const struct br_layer_weights *lw = &m->layers[l];
        float *K = kc + (size_t)l * n * nkv * hd, *V = vc + (size_t)l * n * nkv * hd;
        for (int t = 0; t < n; t++) {
            float *xt = x + (size_t)t * d;
            ref_bitlinear(&lw->q, xt, lw->attn_norm, c->eps, q);
            ref_bitlinear(&lw->k, xt, lw->attn_norm, c->eps, k);
            ref_bitlinear(&lw->v, xt, lw->attn_norm, c->eps, v);
            for (int h = 0; h < nh; h++)
                ref_rope(q + h * hd, c->n_rot, t, c->rope_base, c->rope_neox);
            for (int h = 0; h < nkv; h++)
                ref_rope(k + h * hd, c->n_rot, t, c->rope_base, c->rope_neox);
            for (int i = 0; i < nkv * hd; i++) {
                K[(size_t)t * nkv * hd + i] = fround16(k[i]);
                V[(size_t)t * nkv * hd + i] = fround16(v[i]);
            }
            for (int h = 0; h < nh; h++) {
                int kh = h / (nh / nkv);
                double mx = -INFINITY, sum = 0;
                for (int p = 0; p <= t; p++) {
                    double dot = 0;
                    for (int i = 0; i < hd; i++)
                        dot +=
                            (double)fround16(q[h * hd + i]) * K[(size_t)p * nkv * hd + kh * hd + i];
                    sc[p] = dot / sqrt((double)hd);
                    mx = fmax(mx, sc[p]);
                }
                for (int p = 0; p <= t; p++) sum += (sc[p] = exp(sc[p] - mx));
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int p = 0; p <= t; p++)
                        acc +=
                            (double)fround16((float)sc[p]) * V[(size_t)p * nkv * hd + kh * hd + i];
                    a[h * hd + i] = (float)(acc / sum);
                }
            }
            ref_bitlinear(&lw->o, a, lw->attn_sub_norm, c->eps, o);
            for (int i = 0; i < d; i++) xt[i] += o[i];
            ref_bitlinear(&lw->gate, xt, lw->ffn_norm, c->eps, g);
            ref_bitlinear(&lw->up, xt, lw->ffn_norm, c->eps, u);
            for (int i = 0; i < ff; i++) {
                double gi = g[i];
                double act = c->act == BR_ACT_RELU2 ? (gi > 0 ? gi * gi : 0) : gi / (1 + exp(-gi));
                g[i] = (float)(act * u[i]);
            }
            ref_bitlinear(&lw->down, g, lw->ffn_sub_norm, c->eps, o);
            for (int i = 0; i < d; i++) xt[i] += o[i];
        }
    }
    for (int t = 0; t < n; t++) {
        ref_rmsnorm(x + (size_t)t * d, m->output_norm, d, c->eps, xn);
        for (int64_t vv = 0; vv < c->n_vocab; vv++) {
            assert_int_equal(br_dense_row(&m->head, vv, row, NULL), 0);
            double dot = 0;
            for (int i = 0; i < d; i++) dot += (double)row[i] * xn[i];
            logits[(size_t)t * c->n_vocab + vv] = (float)dot;
        }
    }
    free(x), free(kc), free(vc), free(xn), free(q), free(k), free(v), free(a), free(o);
    free(g), free(u), free(row), free(sc);
}

/* ---- helpers ---- */

static char *make_model(const char *arch, uint32_t type, int tied, uint64_t seed)
{
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    o.arch = arch;
    o.weight_type = type;
    o.seed = seed;
    o.tied = tied;
    o.n_vocab = 300;
    o.n_embd = 256;
    /* ffn not a multiple of 256 (I2_S) or of 128 (F16) exercises partial blocks; the TQ
     * types need whole 256-weight blocks. */
    o.n_ff = type == BR_GGML_I2_S ? 384 : type == BR_GGML_F16 ? 320 : 512;
    if (seed == 3) o.n_ff = 512; /* one shape for every type */
    o.n_head = 4;
    o.n_head_kv = 2;
    char *path = br_test_tmp_path("engine-model");
    struct br_err err = {{0}};
    int rc = br_synth_write(&o, path, &err);
    if (rc) fail_msg("synth: %s", err.msg);
    return path;
}

/* Logits of tok[0..n) (n, vocab), on `threads` threads with kernel set ks (NULL: the
 * process's). */
static float *engine_logits_ks(const struct br_model *m, const struct br_kernel_set *ks,
                               int threads, const int32_t *tok, int n, int one_by_one)
{
    struct br_pool *pool = NULL;
    assert_int_equal(br_pool_create(threads, &pool), 0);
    struct br_engine_opts eo = {.n_ctx = 64, .max_batch = 8, .pool = pool, .kernels = ks};
    struct br_engine *e = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_engine_create(m, &eo, &e, &err), 0);
    size_t V = (size_t)m->cfg.n_vocab;
    float *lg = malloc((size_t)n * V * sizeof *lg);
    if (one_by_one) {
        for (int t = 0; t < n; t++)
            assert_int_equal(
                br_engine_eval(e, tok + t, 1, t, lg + (size_t)t * V, BR_LOGITS_LAST, &err), 0);
    } else {
        assert_int_equal(br_engine_eval(e, tok, n, 0, lg, BR_LOGITS_ALL, &err), 0);
    }
    br_engine_destroy(&e);
    br_pool_destroy(&pool);
    return lg;
}

static float *engine_logits(const struct br_model *m, int threads, const int32_t *tok, int n,
                            int one_by_one)
{
    return engine_logits_ks(m, NULL, threads, tok, n, one_by_one);
}

static const int32_t prompt[] = {5, 77, 299, 0, 123, 42, 7, 250, 9, 31, 200};
#define NP ((int)(sizeof prompt / sizeof *prompt))

static void check_against_reference(const char *arch, uint32_t type, int tied)
{
    char *path = make_model(arch, type, tied, 7);
    struct br_model *m = NULL;
    struct br_err err = {{0}};
    if (br_model_load(path, &m, &err)) fail_msg("load: %s", err.msg);
    size_t V = (size_t)m->cfg.n_vocab;
    float *want = malloc((size_t)NP * V * sizeof *want);
    ref_forward(m, prompt, NP, want);
    float *got = engine_logits(m, 1, prompt, NP, 0);
    double maxdiff = 0, sumdiff = 0, lo = INFINITY, hi = -INFINITY;
    int agree = 0;
    for (int t = 0; t < NP; t++) {
        size_t ag = 0, aw = 0;
        for (size_t v = 0; v < V; v++) {
            size_t i = (size_t)t * V + v;
            maxdiff = fmax(maxdiff, fabs((double)got[i] - want[i]));
            sumdiff += fabs((double)got[i] - want[i]);
            lo = fmin(lo, want[i]);
            hi = fmax(hi, want[i]);
            if (got[i] > got[(size_t)t * V + ag]) ag = v;
            if (want[i] > want[(size_t)t * V + aw]) aw = v;
        }
        agree += ag == aw;
    }
    double range = hi - lo, meandiff = sumdiff / ((double)NP * V);
    if (getenv("BR_TEST_VERBOSE"))
        print_message("%s/%s: max diff %g, mean %g, range %g, top-1 %d/%d\n", arch,
                      br_ggml_type_name(type), maxdiff, meandiff, range, agree, NP);
    assert_true(range > 1.0); /* a real spread, not all zeros */
    if (!(maxdiff <= 0.03 * range && meandiff <= 0.002 * range && agree * 5 >= NP * 4))
        fail_msg("%s/%s: engine vs reference: max diff %g, mean %g, range %g, top-1 %d/%d", arch,
                 br_ggml_type_name(type), maxdiff, meandiff, range, agree, NP);
    free(want);
    free(got);
    br_model_destroy(&m);
    remove(path);
    free(path);
}

static void test_bitnet_b158_i2s(void **s)
{
    (void)s;
    check_against_reference("bitnet-b1.58", BR_GGML_I2_S, 1);
}
static void test_bitnet_b158_tq2(void **s)
{
    (void)s;
    check_against_reference("bitnet-b1.58", BR_GGML_TQ2_0, 1);
}
static void test_bitnet_tq1(void **s)
{
    (void)s;
    check_against_reference("bitnet", BR_GGML_TQ1_0, 1);
}
static void test_bitnet_i2s(void **s)
{
    (void)s;
    check_against_reference("bitnet", BR_GGML_I2_S, 1);
}
static void test_llama_tq2_untied(void **s)
{
    (void)s;
    check_against_reference("llama", BR_GGML_TQ2_0, 0);
}
static void test_llama_f16(void **s)
{
    (void)s;
    check_against_reference("llama", BR_GGML_F16, 0);
}
static void test_llama_i2s(void **s)
{
    (void)s;
    check_against_reference("llama", BR_GGML_I2_S, 1);
}

/* Same seed, every storage type: the decoded weights and so the logits are identical. */
static void test_types_bit_identical(void **state)
{
    (void)state;
    const uint32_t types[] = {BR_GGML_I2_S, BR_GGML_TQ2_0, BR_GGML_TQ1_0, BR_GGML_F16};
    float *first = NULL;
    size_t n = 0;
    for (size_t i = 0; i < 4; i++) {
        char *path = make_model("bitnet-b1.58", types[i], 1, 3);
        struct br_model *m = NULL;
        struct br_err err = {{0}};
        if (br_model_load(path, &m, &err)) fail_msg("load: %s", err.msg);
        float *lg = engine_logits(m, 1, prompt, NP, 0);
        n = (size_t)NP * (size_t)m->cfg.n_vocab;
        if (!first)
            first = lg;
        else {
            assert_memory_equal(first, lg, n * sizeof(float));
            free(lg);
        }
        br_model_destroy(&m);
        remove(path);
        free(path);
    }
    free(first);
}

/* Thread count and batching do not change a single bit. The model has 2 KV heads for 4
 * query heads, so attention takes every path: a batch goes grouped by token strides, one
 * token at a time goes grouped one task per KV head on 1 and 2 threads and a task per query
 * head on 3. */
static void test_threads_and_batching_exact(void **state)
{
    (void)state;
    char *path = make_model("bitnet", BR_GGML_I2_S, 1, 11);
    struct br_model *m = NULL;
    struct br_err err = {{0}};
    if (br_model_load(path, &m, &err)) fail_msg("load: %s", err.msg);
    assert_int_equal(m->cfg.n_head_kv * 2, m->cfg.n_head);
    size_t n = (size_t)NP * (size_t)m->cfg.n_vocab * sizeof(float);
    float *a = engine_logits(m, 1, prompt, NP, 0);
    float *b = engine_logits(m, 2, prompt, NP, 0);
    float *c = engine_logits(m, 3, prompt, NP, 1);
    float *d = engine_logits(m, 1, prompt, NP, 1);
    float *e = engine_logits(m, 2, prompt, NP, 1);
    assert_memory_equal(a, b, n);
    assert_memory_equal(a, c, n);
    assert_memory_equal(a, d, n);
    assert_memory_equal(a, e, n);
    free(a), free(b), free(c), free(d), free(e);
    br_model_destroy(&m);
    remove(path);
    free(path);
}

/* A copy of the reference set whose ternary GEMV/GEMM and dot products count their calls:
 * shows that the engine's kernel calls go through the set it is given. */
static int counted_calls;
static void counted_gemv(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q,
                         int32_t *acc)
{
    __atomic_add_fetch(&counted_calls, 1, __ATOMIC_RELAXED);
    br_kernels_ref.gemv(m, r0, r1, q, acc);
}
static void counted_gemm(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                         const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    __atomic_add_fetch(&counted_calls, 1, __ATOMIC_RELAXED);
    br_kernels_ref.gemm(m, r0, r1, ntok, q, q_stride, acc, acc_stride);
}

/* Every kernel set compiled in and runnable here gives the reference set's bits, for a
 * float head read in place and for the Q8_0 head; a set of counting wrappers is called. */
static void test_kernel_sets_exact(void **state)
{
    (void)state;
    static const char *const names[] = {"ref", "avx2", "avx512", "neon", "neon-nodot"};
    char *path = make_model("llama", BR_GGML_TQ2_0, 0, 13);
    for (int q8head = 0; q8head < 2; q8head++) {
        struct br_model *m = NULL;
        struct br_err err = {{0}};
        if (br_model_load(path, &m, &err)) fail_msg("load: %s", err.msg);
        if (q8head && br_model_quantize_head(m, &err)) fail_msg("q8 head: %s", err.msg);
        size_t n = (size_t)NP * (size_t)m->cfg.n_vocab * sizeof(float);
        struct br_kernel_set ref;
        assert_int_equal(br_kernel_set_find("ref", &ref), BR_OK);
        float *want = engine_logits_ks(m, &ref, 2, prompt, NP, 0);
        int tried = 0;
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            struct br_kernel_set ks;
            if (br_kernel_set_find(names[i], &ks) != BR_OK) continue;
            float *got = engine_logits_ks(m, &ks, 2, prompt, NP, i % 2);
            if (memcmp(want, got, n))
                fail_msg("kernel set %s, q8 head %d: other bits", names[i], q8head);
            free(got);
            tried++;
        }
        assert_true(tried >= 1);
        struct br_kernel_ops counting = br_kernels_ref;
        counting.gemv = counted_gemv;
        counting.gemm = counted_gemm;
        struct br_kernel_set cks = ref;
        cks.ternary = &counting;
        counted_calls = 0;
        float *got = engine_logits_ks(m, &cks, 1, prompt, NP, 1);
        assert_memory_equal(want, got, n);
        /* one call per projection per layer per token (evaluated one by one) at least */
        assert_true(counted_calls >= NP * 7 * m->cfg.n_layer);
        free(got);
        free(want);
        br_model_destroy(&m);
    }
    remove(path);
    free(path);
}

/* Activations stay in a realistic range through every layer of each architecture. */
static void test_activation_range(void **state)
{
    (void)state;
    const char *arches[] = {"bitnet-b1.58", "bitnet", "llama"};
    for (int i = 0; i < 3; i++) {
        struct br_synth_opts o;
        br_synth_opts_default(&o);
        o.arch = arches[i];
        o.n_layer = 12;
        char *path = br_test_tmp_path("engine-range");
        struct br_err err = {{0}};
        assert_int_equal(br_synth_write(&o, path, &err), 0);
        struct br_model *m = NULL;
        assert_int_equal(br_model_load(path, &m, &err), 0);
        float *lg = engine_logits(m, 1, prompt, NP, 0);
        struct br_engine *e = NULL;
        struct br_engine_opts eo = {.n_ctx = 64};
        assert_int_equal(br_engine_create(m, &eo, &e, &err), 0);
        assert_int_equal(br_engine_eval(e, prompt, NP, 0, lg, BR_LOGITS_LAST, &err), 0);
        const float *rms = br_engine_layer_rms(e);
        for (int l = 1; l <= m->cfg.n_layer; l++) {
            if (!(rms[l] > 0.3f && rms[l] < 30.0f))
                fail_msg("%s: residual rms after layer %d is %g", arches[i], l - 1, rms[l]);
        }
        double mean = 0, var = 0;
        for (int v = 0; v < m->cfg.n_vocab; v++) mean += lg[v];
        mean /= m->cfg.n_vocab;
        for (int v = 0; v < m->cfg.n_vocab; v++) var += (lg[v] - mean) * (lg[v] - mean);
        double sd = sqrt(var / m->cfg.n_vocab);
        if (!(sd > 0.5 && sd < 10)) fail_msg("%s: logit std %g", arches[i], sd);
        br_engine_destroy(&e);
        free(lg);
        br_model_destroy(&m);
        remove(path);
        free(path);
    }
}

static void test_bad_token_and_context(void **state)
{
    (void)state;
    char *path = make_model("bitnet-b1.58", BR_GGML_I2_S, 1, 5);
    struct br_model *m = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_model_load(path, &m, &err), 0);
    struct br_engine *e = NULL;
    struct br_engine_opts eo = {.n_ctx = 4};
    assert_int_equal(br_engine_create(m, &eo, &e, &err), 0);
    float *lg = malloc((size_t)m->cfg.n_vocab * sizeof *lg);
    int32_t bad = 300;
    assert_int_equal(br_engine_eval(e, &bad, 1, 0, lg, BR_LOGITS_LAST, &err), BR_E_RANGE);
    assert_non_null(strstr(err.msg, "300"));
    assert_int_equal(br_engine_eval(e, prompt, 5, 0, lg, BR_LOGITS_LAST, &err), BR_E_TOO_LONG);
    free(lg);
    br_engine_destroy(&e);
    br_model_destroy(&m);
    remove(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bitnet_b158_i2s),
        cmocka_unit_test(test_bitnet_b158_tq2),
        cmocka_unit_test(test_bitnet_tq1),
        cmocka_unit_test(test_bitnet_i2s),
        cmocka_unit_test(test_llama_tq2_untied),
        cmocka_unit_test(test_llama_f16),
        cmocka_unit_test(test_llama_i2s),
        cmocka_unit_test(test_types_bit_identical),
        cmocka_unit_test(test_threads_and_batching_exact),
        cmocka_unit_test(test_kernel_sets_exact),
        cmocka_unit_test(test_activation_range),
        cmocka_unit_test(test_bad_token_and_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
