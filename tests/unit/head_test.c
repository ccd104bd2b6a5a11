/*
 * The int8-activation output heads in the engine (worker/engine.c): Q8_0 (kernels/q8.h)
 * and Q6_K read in place (kernels/q6k.h):
 *  - logits of a model whose (tied) head is stored as Q8_0 against an independent double
 *    computation from the engine's final residual: RMSNorm, the canonical per-32 int8
 *    activation quantization, and dot products with the head rows decoded from the file;
 *  - bit-identical logits whatever the thread count and whether tokens come batched (the
 *    blocked GEMM) or one at a time (GEMV);
 *  - the error of a Q8_0 head against the F16 head it was quantized from (load-time
 *    quantization, br_model_quantize_head: the same model otherwise), of a Q6_K head
 *    written from the same values, and of the F16 head re-encoded as Q6_K at load, on
 *    a model of the 2B-4T width (d 2560): max and RMS logit error and top-1 agreement,
 *    printed with BR_TEST_VERBOSE=1 and bounded (docs/PERFORMANCE.md quotes them);
 *  - a head width that is not a multiple of 32 is refused with a message;
 *  - where the weights live: the layer matrices in one region, the head copied out of
 *    the mapping (and given back when re-encoded);
 *  - `bitrack synth --rank` writes a Q8_0-head model's shard files byte for byte as
 *    `bitrack shard` cuts them from the whole file (tied and untied heads).
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
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/pool.h"
#include "sharding/shard.h"
#include "sharding/synth.h"
#include "sharding/types.h"
#include "test_util.h"
#include "worker/engine.h"
#include "worker/model.h"

/* 40 tokens: batched, the head's GEMM runs two whole groups of 16 tokens and a partial one */
static const int32_t prompt[] = {
    5,  77,  299, 0,   123, 42,  7,  250, 9,   31,  200, 17, 64,  128, 3,   99, 180, 222, 11,  270,
    56, 140, 8,   199, 33,  287, 71, 1,   150, 260, 19,  88, 230, 44,  175, 2,  291, 66,  110, 245};
#define NP ((int)(sizeof prompt / sizeof *prompt))

static char *make_model(const struct br_synth_opts *o)
{
    char *path = br_test_tmp_path("head-model");
    struct br_err err = {{0}};
    if (br_synth_write(o, path, &err)) fail_msg("synth: %s", err.msg);
    return path;
}

static struct br_model *load(const char *path)
{
    struct br_model *m = NULL;
    struct br_err err = {{0}};
    if (br_model_load(path, &m, &err)) fail_msg("load %s: %s", path, err.msg);
    return m;
}

/* Logits (NP, vocab); with resid non-NULL also the final residual (NP, d) of the batch. */
static float *logits_of(const struct br_model *m, int threads, int one_by_one, float *resid)
{
    struct br_pool *pool = NULL;
    assert_int_equal(br_pool_create(threads, &pool), 0);
    struct br_engine_opts eo = {.n_ctx = 64, .max_batch = 64, .pool = pool};
    struct br_engine *e = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_engine_create(m, &eo, &e, &err), 0);
    size_t V = (size_t)m->cfg.n_vocab;
    float *lg = malloc((size_t)NP * V * sizeof *lg);
    assert_non_null(lg);
    if (one_by_one) {
        for (int t = 0; t < NP; t++)
            assert_int_equal(
                br_engine_eval(e, prompt + t, 1, t, lg + (size_t)t * V, BR_LOGITS_LAST, &err), 0);
    } else {
        assert_int_equal(br_engine_eval(e, prompt, NP, 0, lg, BR_LOGITS_ALL, &err), 0);
        if (resid)
            memcpy(resid, br_engine_residual(e),
                   (size_t)NP * (size_t)m->cfg.n_embd * sizeof *resid);
    }
    br_engine_destroy(&e);
    br_pool_destroy(&pool);
    return lg;
}

static void tiny_head_opts(struct br_synth_opts *o, int tied, uint32_t type)
{
    br_synth_opts_default(o);
    o->seed = 21;
    o->tied = tied;
    o->head_type = type;
    o->n_vocab = 300;
    if (type == BR_GGML_Q6_K) o->n_embd = 512; /* Q6_K rows are 256-value super-blocks */
}

static void tiny_q8_opts(struct br_synth_opts *o, int tied)
{
    tiny_head_opts(o, tied, BR_GGML_Q8_0);
}

/* type: the head's type as the engine reads it; at_load: written as F16 and re-encoded as
 * Q6_K at load (br_model_quantize_head_as), else written so by synth. (The independent
 * side reads m->head, which a Q8_0 head quantized at load leaves as the file's F16.) */
static void check_independent(int tied, uint32_t type, int at_load)
{
    struct br_synth_opts o;
    tiny_head_opts(&o, tied, type);
    if (at_load) o.head_type = BR_GGML_F16;
    char *path = make_model(&o);
    struct br_model *m = load(path);
    int d = m->cfg.n_embd, V = m->cfg.n_vocab;
    struct br_err err = {{0}};
    if (at_load) assert_int_equal(br_model_quantize_head_as(m, type, &err), BR_OK);
    if (type == BR_GGML_Q6_K) assert_int_equal(m->head.type, type);
    /* the path under test: Q8_0 rows repacked at load, Q6_K rows read in place */
    assert_int_equal(m->head_q8.rows, type == BR_GGML_Q8_0 ? V : 0);
    float *resid = malloc(sizeof(float) * (size_t)NP * (size_t)d);
    float *w = malloc(sizeof(float) * (size_t)d), *xq = malloc(sizeof(float) * (size_t)d);
    assert_true(resid && w && xq);
    float *got = logits_of(m, 2, 0, resid);
    double maxdiff = 0, lo = INFINITY, hi = -INFINITY;
    for (int t = 0; t < NP; t++) {
        const float *x = resid + (size_t)t * d;
        double ss = 0;
        for (int k = 0; k < d; k++) ss += (double)x[k] * x[k];
        double r = 1.0 / sqrt(ss / d + m->cfg.eps);
        /* dequantized activations: per 32 block, dx = amax / 127, q = round(y / dx) */
        for (int b = 0; b < d / 32; b++) {
            float y[32], amax = 0;
            for (int i = 0; i < 32; i++) {
                y[i] = (float)(x[32 * b + i] * r) * m->output_norm[32 * b + i];
                amax = fmaxf(amax, fabsf(y[i]));
            }
            for (int i = 0; i < 32; i++)
                xq[32 * b + i] =
                    amax > 0
                        ? (float)((double)amax / 127.0 * (double)nearbyintf(y[i] * (127.0f / amax)))
                        : 0.0f;
        }
        for (int v = 0; v < V; v++) {
            assert_int_equal(br_dense_row(&m->head, v, w, NULL), BR_OK);
            double s = 0;
            for (int k = 0; k < d; k++) s += (double)w[k] * xq[k];
            double g = got[(size_t)t * V + v];
            maxdiff = fmax(maxdiff, fabs(g - s));
            lo = fmin(lo, s), hi = fmax(hi, s);
        }
    }
    const char *tn = br_ggml_type_name(type);
    if (getenv("BR_TEST_VERBOSE"))
        print_message("%s head (%s) vs independent: max diff %g, range %g\n", tn,
                      tied ? "tied" : "untied", maxdiff, hi - lo);
    assert_true(hi - lo > 1.0);
    /* only float summation order (and a rare rounding tie of the RMS factor) differs */
    if (!(maxdiff <= 1e-3 * (hi - lo)))
        fail_msg("%s head vs independent: max diff %g, range %g", tn, maxdiff, hi - lo);
    free(got), free(resid), free(w), free(xq);
    br_model_destroy(&m);
    remove(path);
    free(path);
}

static void test_tied_vs_independent(void **state)
{
    (void)state;
    check_independent(1, BR_GGML_Q8_0, 0);
    check_independent(1, BR_GGML_Q6_K, 0);
    check_independent(1, BR_GGML_Q6_K, 1);
}

static void test_untied_vs_independent(void **state)
{
    (void)state;
    check_independent(0, BR_GGML_Q8_0, 0);
    check_independent(0, BR_GGML_Q6_K, 0);
    check_independent(0, BR_GGML_Q6_K, 1);
}

static void check_exact_threads_batching(uint32_t type)
{
    struct br_synth_opts o;
    tiny_head_opts(&o, 1, type);
    char *path = make_model(&o);
    struct br_model *m = load(path);
    size_t n = (size_t)NP * (size_t)m->cfg.n_vocab * sizeof(float);
    float *a = logits_of(m, 1, 0, NULL), *b = logits_of(m, 3, 0, NULL);
    float *c = logits_of(m, 2, 1, NULL);
    assert_memory_equal(a, b, n);
    assert_memory_equal(a, c, n);
    free(a), free(b), free(c);
    br_model_destroy(&m);
    remove(path);
    free(path);
}

static void test_exact_threads_batching(void **state)
{
    (void)state;
    check_exact_threads_batching(BR_GGML_Q8_0);
    check_exact_threads_batching(BR_GGML_Q6_K);
}

/* Logits of mq against those of mf (the F16 head), everything else identical: max and
 * RMS error bounded relative to the largest |logit|, top-1 agreement at least min_top1 of
 * the positions. */
static void compare_heads(const char *what, const struct br_model *mf, const struct br_model *mq,
                          double max_rel, double rms_rel, double min_top1)
{
    size_t V = (size_t)mf->cfg.n_vocab;
    float *f = logits_of(mf, 2, 0, NULL), *q = logits_of(mq, 2, 0, NULL);
    double maxerr = 0, se = 0, maxabs = 0, lo = INFINITY, hi = -INFINITY;
    int agree = 0;
    for (int t = 0; t < NP; t++) {
        size_t af = 0, aq = 0;
        for (size_t v = 0; v < V; v++) {
            size_t i = (size_t)t * V + v;
            double e = fabs((double)q[i] - f[i]);
            maxerr = fmax(maxerr, e);
            se += e * e;
            maxabs = fmax(maxabs, fabs(f[i]));
            lo = fmin(lo, f[i]), hi = fmax(hi, f[i]);
            if (f[i] > f[(size_t)t * V + af]) af = v;
            if (q[i] > q[(size_t)t * V + aq]) aq = v;
        }
        agree += af == aq;
    }
    double rms = sqrt(se / ((double)NP * (double)V));
    if (getenv("BR_TEST_VERBOSE"))
        print_message("%s vs F16 head (d %d, vocab %zu, %d positions): max abs error %.4g "
                      "(%.3g%% of max |logit| %.3g, range %.3g), rms %.4g, top-1 %d/%d\n",
                      what, mf->cfg.n_embd, V, NP, maxerr, 100.0 * maxerr / maxabs, maxabs, hi - lo,
                      rms, agree, NP);
    assert_true(hi - lo > 1.0);
    if (!(maxerr <= max_rel * maxabs && rms <= rms_rel * maxabs && agree >= min_top1 * NP))
        fail_msg("%s vs F16: max %g rms %g (max |logit| %g), top-1 %d/%d", what, maxerr, rms,
                 maxabs, agree, NP);
    free(f), free(q);
}

/* Q8_0 (quantized at load) and Q6_K (written by synth from the same values) heads vs the F16
 * head, at the 2B-4T width. */
static void test_error_vs_f16(void **state)
{
    (void)state;
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    o.preset = "2b-4t";
    o.seed = 5;
    o.n_layer = 1;
    o.n_ff = 512;
    o.n_vocab = 2048;
    o.n_ctx = 64;
    char *path = make_model(&o);
    /* untied, so that only the head differs (a tied Q6_K head is the embedding too) */
    o.tied = 0;
    char *pathu = make_model(&o);
    o.head_type = BR_GGML_Q6_K;
    char *path6 = make_model(&o);
    struct br_model *mf = load(path), *mq = load(path), *mu = load(pathu), *m6 = load(path6);
    struct br_err err = {{0}};
    assert_int_equal(mf->head.type, BR_GGML_F16);
    assert_int_equal(mu->head.type, BR_GGML_F16);
    assert_int_equal(m6->head.type, BR_GGML_Q6_K);
    assert_int_equal(m6->embd.type, BR_GGML_F16);
    assert_int_equal(br_model_quantize_head(mq, &err), BR_OK);
    assert_int_equal(mq->head_q8.rows, mq->cfg.n_vocab);
    compare_heads("Q8_0", mf, mq, 0.02, 0.004, 0.9);
    compare_heads("Q6_K", mu, m6, 0.03, 0.006, 0.9);
    /* the F16 head re-encoded at load: the tied embedding stays F16 */
    struct br_model *ml = load(path);
    assert_int_equal(br_model_quantize_head_as(ml, BR_GGML_Q6_K, &err), BR_OK);
    assert_int_equal(ml->head.type, BR_GGML_Q6_K);
    assert_int_equal(ml->embd.type, BR_GGML_F16);
    compare_heads("Q6_K at load", mf, ml, 0.03, 0.006, 0.9);
    br_model_destroy(&ml);
    br_model_destroy(&mf);
    br_model_destroy(&mq);
    br_model_destroy(&mu);
    br_model_destroy(&m6);
    const char *paths[] = {path, pathu, path6};
    for (int i = 0; i < 3; i++) remove(paths[i]);
    free(path);
    free(pathu);
    free(path6);
}

static void test_bad_width(void **state)
{
    (void)state;
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    o.seed = 2;
    o.weight_type = BR_GGML_F16; /* I2_S needs widths in whole 128 blocks */
    o.n_embd = 272;              /* 8.5 blocks of 32: an F16 head that cannot become Q8_0 */
    o.n_head = 4;
    o.n_head_kv = 2;
    char *path = make_model(&o);
    struct br_model *m = load(path);
    struct br_err err = {{0}};
    assert_int_equal(br_model_quantize_head(m, &err), BR_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "multiple of 32"));
    assert_int_equal(m->head_q8.rows, 0);
    br_model_destroy(&m);
    remove(path);
    free(path);
}

static void check_rank_shards(int tied)
{
    struct br_synth_opts o;
    tiny_q8_opts(&o, tied);
    o.n_embd = 512; /* two 256-wide hidden chunks for tp 2 */
    char *path = make_model(&o);
    char *da = br_test_tmp_path("head-shard-a"), *db = br_test_tmp_path("head-shard-b");
    assert_int_equal(mkdir(da, 0777), 0);
    assert_int_equal(mkdir(db, 0777), 0);
    struct br_err err = {{0}};
    if (br_shard_model(path, 2, 2, da, &err)) fail_msg("shard: %s", err.msg);
    for (int r = 0; r < 4; r++) {
        if (br_synth_write_shard(&o, 2, 2, r, db, &err)) fail_msg("synth --rank: %s", err.msg);
        char pa[4096], pb[4096];
        assert_int_equal(br_shard_path(pa, sizeof pa, da, r, NULL), BR_OK);
        assert_int_equal(br_shard_path(pb, sizeof pb, db, r, NULL), BR_OK);
        size_t na = 0, nb = 0;
        uint8_t *a = br_test_read_file(pa, &na), *b = br_test_read_file(pb, &nb);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na);
        free(a), free(b);
        remove(pa), remove(pb);
    }
    rmdir(da), rmdir(db);
    remove(path);
    free(path), free(da), free(db);
}

static void test_rank_shards_tied(void **state)
{
    (void)state;
    check_rank_shards(1);
}

static void test_rank_shards_untied(void **state)
{
    (void)state;
    check_rank_shards(0);
}

/* Where the weights live (kernels/bigmem.h): every layer matrix inside the model's one
 * region, back to back; an F16 head copied out of the mapping into memory of the model's
 * own, byte for byte; a Q8_0 head quantized later gives the copy back and reads the file
 * again; the region and the copy 2 MiB aligned (a heap block under AddressSanitizer). */
static void test_weights_memory(void **state)
{
    (void)state;
    struct br_synth_opts o;
    tiny_head_opts(&o, 1, BR_GGML_F16);
    char *path = make_model(&o);
    struct br_model *m = load(path);
    assert_non_null(m->wmem);
    size_t used = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const struct br_tmat *t[] = {&m->layers[l].q,   &m->layers[l].k,    &m->layers[l].v,
                                     &m->layers[l].o,   &m->layers[l].gate, &m->layers[l].up,
                                     &m->layers[l].down};
        for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
            assert_ptr_equal(t[i]->codes, m->wmem + used); /* in load order, back to back */
            assert_int_equal(t[i]->codes_own, 0);
            used += br_tmat_bytes(t[i]->rows, t[i]->cols);
        }
    }
    assert_int_equal(used, m->wmem_bytes);
    assert_int_equal(m->wmem_used, m->wmem_bytes);
    size_t n = (size_t)m->cfg.n_vocab * m->head_file.row_bytes;
    assert_non_null(m->head_own);
    assert_int_equal(m->head_own_bytes, n);
    assert_ptr_equal(m->head.data, m->head_own);
    assert_true(m->head_file.data != m->head.data);
    assert_memory_equal(m->head_own, m->head_file.data, n);
#if !defined(__SANITIZE_ADDRESS__)
    assert_int_equal((uintptr_t)m->wmem % (2u << 20), 0);
    assert_int_equal((uintptr_t)m->head_own % (2u << 20), 0);
#endif
    struct br_err err = {{0}};
    assert_int_equal(br_model_quantize_head(m, &err), BR_OK);
    assert_null(m->head_own);
    assert_ptr_equal(m->head.data, m->head_file.data);
    assert_int_equal(m->head_q8.rows, m->cfg.n_vocab);
    br_model_destroy(&m);
    unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weights_memory),        cmocka_unit_test(test_tied_vs_independent),
        cmocka_unit_test(test_untied_vs_independent), cmocka_unit_test(test_exact_threads_batching),
        cmocka_unit_test(test_error_vs_f16),          cmocka_unit_test(test_bad_width),
        cmocka_unit_test(test_rank_shards_tied),      cmocka_unit_test(test_rank_shards_untied)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
