/*
 * Shard files (sharding/shard.h) against the whole-file loader: for tiny synthetic models
 * and the layouts 1x1, 2x1, 1x2, 2x2, every rank's br_model_load_shard must hold exactly
 * what br_model_load_part of the original gives that rank (configuration, part, codes,
 * scales, norms, embedding and head rows at the same global indices). Models cover a
 * tied I2_S head, an untied Q8_0 head over TQ2_0 weights with per-row scales (.rowscale),
 * and F16 weights whose slices are not multiples of 128 wide (100-wide heads, an FFN of
 * 1000: the padded I2_S fallback). Mixed, renamed, truncated, foreign and missing files
 * must be refused with a message naming the file, and `synth --rank` must write the same
 * bytes as `shard` of the whole synthetic file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitrack/fp.h"
#include "sharding/gguf.h"
#include "sharding/shard.h"
#include "sharding/synth.h"
#include "sharding/types.h"
#include "test_util.h"
#include "worker/model.h"

static const int layouts[][2] = {{1, 1}, {2, 1}, {1, 2}, {2, 2}};

static void kv5_opts(struct br_synth_opts *o, uint64_t seed)
{
    br_synth_opts_default(o);
    o->arch = "bitnet-b1.58";
    o->n_embd = 1280, o->n_head = 10, o->n_head_kv = 5, o->n_ff = 1536;
    o->n_layer = 3, o->n_vocab = 700, o->seed = seed;
}

static void llama_opts(struct br_synth_opts *o)
{
    br_synth_opts_default(o);
    o->arch = "llama";
    o->weight_type = BR_GGML_TQ2_0;
    o->head_type = BR_GGML_Q8_0;
    o->tied = 0;
    o->n_embd = 1024, o->n_head = 8, o->n_head_kv = 4, o->n_ff = 1024;
    o->n_layer = 3, o->n_vocab = 600, o->seed = 23;
}

/* 100-wide heads and an FFN of 1000: O and down slices are not multiples of 128 wide. */
static void odd_opts(struct br_synth_opts *o)
{
    br_synth_opts_default(o);
    o->arch = "bitnet";
    o->weight_type = BR_GGML_F16;
    o->n_embd = 800, o->n_head = 8, o->n_head_kv = 8, o->n_ff = 1000;
    o->n_layer = 2, o->n_vocab = 400, o->seed = 5;
}

static char *make_dir(const char *stem)
{
    char *d = br_test_tmp_path(stem);
    assert_int_equal(mkdir(d, 0777), 0);
    return d;
}

static void remove_dir(char *dir)
{
    for (int r = 0; r < 16; r++) {
        char p[4096];
        br_shard_path(p, sizeof p, dir, r, NULL);
        remove(p);
    }
    rmdir(dir);
    free(dir);
}

static void check_tmat(const struct br_tmat *a, const struct br_tmat *b)
{
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    assert_int_equal(a->blocks, b->blocks);
    assert_int_equal(a->row_bytes, b->row_bytes);
    if (a->rows == 0) return;
    assert_memory_equal(a->codes, b->codes, a->row_bytes * (size_t)a->rows);
    assert_memory_equal(a->scale, b->scale, sizeof(float) * (size_t)a->rows);
}

static void check_floats(const float *a, const float *b, int64_t n)
{
    if (n == 0) return;
    assert_non_null(a);
    assert_non_null(b);
    assert_memory_equal(a, b, (size_t)n * sizeof(float));
}

/* The shard model s must equal the whole-file part model w, field by field. */
static void check_same(const struct br_model *w, const struct br_model *s)
{
    const struct br_model_config *c = &w->cfg;
    assert_memory_equal(&w->cfg, &s->cfg, sizeof w->cfg);
    const struct br_part *p = &w->part, *q = &s->part;
    assert_int_equal(p->tp, q->tp);
    assert_int_equal(p->pp, q->pp);
    assert_int_equal(p->tp_rank, q->tp_rank);
    assert_int_equal(p->pp_rank, q->pp_rank);
    assert_int_equal(p->layer0, q->layer0);
    assert_int_equal(p->layer1, q->layer1);
    assert_int_equal(p->d0, q->d0);
    assert_int_equal(p->d1, q->d1);
    assert_int_equal(p->kv0, q->kv0);
    assert_int_equal(p->kv1, q->kv1);
    assert_int_equal(p->ff0, q->ff0);
    assert_int_equal(p->ff1, q->ff1);
    assert_int_equal(p->v0, q->v0);
    assert_int_equal(p->v1, q->v1);
    assert_int_equal(!p->first_stage, !q->first_stage);
    assert_int_equal(!p->last_stage, !q->last_stage);
    assert_int_equal(w->ternary_bytes, s->ternary_bytes);
    for (int l = p->layer0; l < p->layer1; l++) {
        const struct br_layer_weights *a = &w->layers[l], *b = &s->layers[l];
        check_tmat(&a->q, &b->q);
        check_tmat(&a->k, &b->k);
        check_tmat(&a->v, &b->v);
        check_tmat(&a->o, &b->o);
        check_tmat(&a->gate, &b->gate);
        check_tmat(&a->up, &b->up);
        check_tmat(&a->down, &b->down);
        int64_t r0, r1, c0, c1;
        br_shard_slice(c, p, BR_W_ATTN_NORM, &r0, &r1, &c0, &c1);
        check_floats(a->attn_norm, b->attn_norm, c1 - c0);
        br_shard_slice(c, p, BR_W_FFN_NORM, &r0, &r1, &c0, &c1);
        check_floats(a->ffn_norm, b->ffn_norm, c1 - c0);
        if (c->has_subnorm) {
            br_shard_slice(c, p, BR_W_ATTN_SUB_NORM, &r0, &r1, &c0, &c1);
            check_floats(a->attn_sub_norm, b->attn_sub_norm, c1 - c0);
            br_shard_slice(c, p, BR_W_FFN_SUB_NORM, &r0, &r1, &c0, &c1);
            check_floats(a->ffn_sub_norm, b->ffn_sub_norm, c1 - c0);
        } else {
            assert_null(b->attn_sub_norm);
            assert_null(b->ffn_sub_norm);
        }
    }
    float *x = malloc((size_t)c->n_embd * sizeof *x), *y = malloc((size_t)c->n_embd * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    if (p->first_stage) {
        /* the engine reads columns [d0, d1) of the row of each token */
        for (int32_t t = 0; t < c->n_vocab; t += 37) {
            assert_int_equal(br_dense_row(&w->embd, t, x, NULL), BR_OK);
            assert_int_equal(br_dense_row(&s->embd, t, y, NULL), BR_OK);
            assert_memory_equal(x + p->d0, y + p->d0, (size_t)(p->d1 - p->d0) * sizeof *x);
        }
        assert_int_equal(br_dense_row(&s->embd, c->n_vocab, y, NULL), BR_E_RANGE);
    }
    if (p->last_stage) {
        check_floats(w->output_norm, s->output_norm, p->d1 - p->d0);
        for (int32_t v = p->v0; v < p->v1; v++) {
            assert_int_equal(br_dense_row(&w->head, v, x, NULL), BR_OK);
            assert_int_equal(br_dense_row(&s->head, v, y, NULL), BR_OK);
            assert_memory_equal(x, y, (size_t)c->n_embd * sizeof *x);
        }
        assert_int_equal(s->head.cols, c->n_embd);
        if (p->v0 > 0) assert_int_equal(br_dense_row(&s->head, p->v0 - 1, y, NULL), BR_E_RANGE);
    }
    free(x);
    free(y);
}

/* Shards `model` for every layout and compares every rank with the whole-file loader. */
static void check_model(const char *model)
{
    struct br_err err = {{0}};
    for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++) {
        int tp = layouts[i][0], pp = layouts[i][1];
        char *dir = make_dir("shard");
        int rc = br_shard_model(model, tp, pp, dir, &err);
        if (rc) fail_msg("shard %dx%d: %s", tp, pp, err.msg);
        struct br_gguf *g = NULL;
        struct br_model_config cfg;
        struct br_plan *plan = NULL;
        assert_int_equal(br_gguf_open(model, &g, &err), BR_OK);
        assert_int_equal(br_config_from_gguf(g, &cfg, &err), BR_OK);
        assert_int_equal(br_plan_create(&cfg, tp, pp, &plan, &err), BR_OK);
        for (int r = 0; r < tp * pp; r++) {
            struct br_model *w = NULL, *s = NULL;
            assert_int_equal(br_model_load_part(model, &plan->parts[r], &w, &err), BR_OK);
            rc = br_model_load_shard(dir, tp, pp, r, &s, &err);
            if (rc) fail_msg("load shard %dx%d rank %d: %s", tp, pp, r, err.msg);
            check_same(w, s);
            br_model_destroy(&w);
            br_model_destroy(&s);
        }
        br_plan_destroy(&plan);
        br_gguf_close(&g);
        remove_dir(dir);
    }
}

static void test_tied_i2s(void **state)
{
    (void)state;
    struct br_synth_opts o;
    kv5_opts(&o, 21);
    char *m = br_test_tmp_path("kv5.gguf");
    struct br_err err = {{0}};
    assert_int_equal(br_synth_write(&o, m, &err), BR_OK);
    check_model(m);
    remove(m);
    free(m);
}

/* Gives row 0 of blk.0.attn_q.weight (TQ2_0) another scale than the other rows. */
static void perturb_row_scale(const char *path)
{
    struct br_gguf *g = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_gguf_open(path, &g, &err), BR_OK);
    const struct br_gguf_tensor *t = br_gguf_find_tensor(g, "blk.0.attn_q.weight");
    assert_non_null(t);
    assert_int_equal(t->type, BR_GGML_TQ2_0);
    uint64_t at = br_gguf_data_offset(g) + t->offset;
    uint64_t nb = t->ne[0] / BR_QK_K;
    br_gguf_close(&g);
    size_t len;
    uint8_t *buf = br_test_read_file(path, &len);
    assert_non_null(buf);
    uint16_t h = br_f32_to_f16(0.375f);
    for (uint64_t b = 0; b < nb; b++)
        memcpy(buf + at + b * sizeof(struct br_block_tq2_0) + 64, &h, 2);
    assert_int_equal(br_test_write_file(path, buf, len), 0);
    free(buf);
}

static void test_untied_q8_tq2_rowscale(void **state)
{
    (void)state;
    struct br_synth_opts o;
    llama_opts(&o);
    char *m = br_test_tmp_path("llama.gguf");
    struct br_err err = {{0}};
    assert_int_equal(br_synth_write(&o, m, &err), BR_OK);
    perturb_row_scale(m);
    check_model(m);
    /* the perturbed projection carries its per-row scales in a .rowscale tensor */
    char *dir = make_dir("rowscale");
    assert_int_equal(br_shard_model(m, 1, 1, dir, &err), BR_OK);
    char p[4096];
    br_shard_path(p, sizeof p, dir, 0, NULL);
    struct br_gguf *g = NULL;
    assert_int_equal(br_gguf_open(p, &g, &err), BR_OK);
    assert_non_null(br_gguf_find_tensor(g, "blk.0.attn_q.rowscale"));
    assert_null(br_gguf_find_tensor(g, "blk.0.attn_k.rowscale"));
    assert_int_equal(br_gguf_find_tensor(g, "blk.0.attn_q.weight")->type, BR_GGML_I2_S);
    br_gguf_close(&g);
    remove_dir(dir);
    remove(m);
    free(m);
}

static void test_odd_widths(void **state)
{
    (void)state;
    struct br_synth_opts o;
    odd_opts(&o);
    char *m = br_test_tmp_path("odd.gguf");
    struct br_err err = {{0}};
    assert_int_equal(br_synth_write(&o, m, &err), BR_OK);
    check_model(m);
    remove(m);
    free(m);
}

/* synth --rank writes, rank by rank, the bytes shard cuts from the whole file. */
static void check_synth_rank(const struct br_synth_opts *o, int tp, int pp)
{
    struct br_err err = {{0}};
    char *m = br_test_tmp_path("whole.gguf");
    char *a = make_dir("cut"), *b = make_dir("gen");
    assert_int_equal(br_synth_write(o, m, &err), BR_OK);
    assert_int_equal(br_shard_model(m, tp, pp, a, &err), BR_OK);
    for (int r = 0; r < tp * pp; r++) {
        int rc = br_synth_write_shard(o, tp, pp, r, b, &err);
        if (rc) fail_msg("synth rank %d: %s", r, err.msg);
        char pa[4096], pb[4096];
        br_shard_path(pa, sizeof pa, a, r, NULL);
        br_shard_path(pb, sizeof pb, b, r, NULL);
        size_t la, lb;
        uint8_t *x = br_test_read_file(pa, &la), *y = br_test_read_file(pb, &lb);
        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(la, lb);
        assert_memory_equal(x, y, la);
        free(x);
        free(y);
    }
    /* nothing else is left in the directory (the temporary source header is gone) */
    char skel[4200];
    snprintf(skel, sizeof skel, "%s/.rank-0.source.gguf", b);
    assert_int_not_equal(access(skel, F_OK), 0);
    remove_dir(a);
    remove_dir(b);
    remove(m);
    free(m);
}

static void test_synth_rank_identical(void **state)
{
    (void)state;
    struct br_synth_opts o;
    kv5_opts(&o, 21);
    check_synth_rank(&o, 2, 2);
    check_synth_rank(&o, 1, 2);
    llama_opts(&o);
    check_synth_rank(&o, 2, 2);
    odd_opts(&o);
    check_synth_rank(&o, 2, 1);
}

static void copy_file(const char *from, const char *to)
{
    size_t n;
    uint8_t *b = br_test_read_file(from, &n);
    assert_non_null(b);
    assert_int_equal(br_test_write_file(to, b, n), 0);
    free(b);
}

/* A refusal with status rc whose message names `needle`. */
static void expect_refusal(const char *dir, int tp, int pp, int rank, int rc, const char *needle)
{
    struct br_err err = {{0}};
    struct br_model *m = NULL;
    int got = br_model_load_shard(dir, tp, pp, rank, &m, &err);
    assert_null(m);
    if (got != rc || !strstr(err.msg, needle))
        fail_msg("expected status %d naming '%s', got %d: %s", rc, needle, got, err.msg);
}

static void test_refusals(void **state)
{
    (void)state;
    struct br_err err = {{0}};
    struct br_synth_opts o;
    char *m1 = br_test_tmp_path("seed1.gguf"), *m2 = br_test_tmp_path("seed2.gguf");
    kv5_opts(&o, 21);
    assert_int_equal(br_synth_write(&o, m1, &err), BR_OK);
    kv5_opts(&o, 22);
    assert_int_equal(br_synth_write(&o, m2, &err), BR_OK);
    char *d1 = make_dir("a"), *d2 = make_dir("b");
    assert_int_equal(br_shard_model(m1, 2, 2, d1, &err), BR_OK);
    assert_int_equal(br_shard_model(m2, 2, 2, d2, &err), BR_OK);
    char p0[4096], p1[4096], q1[4096];
    br_shard_path(p0, sizeof p0, d1, 0, NULL);
    br_shard_path(p1, sizeof p1, d1, 1, NULL);
    br_shard_path(q1, sizeof q1, d2, 1, NULL);

    /* wrong layout asked of a good directory */
    expect_refusal(d1, 4, 1, 0, BR_E_MISMATCH, "rank-0.gguf is rank 0 of a 2x2");
    expect_refusal(d1, 2, 2, 4, BR_E_INVALID, "rank 4");
    /* another seed's rank 1 mixed in: refused from rank 0's side and from its own */
    copy_file(q1, p1);
    expect_refusal(d1, 2, 2, 0, BR_E_MISMATCH, "different models");
    expect_refusal(d1, 2, 2, 1, BR_E_MISMATCH, "different models");
    /* rank 2's file under rank 1's name */
    char p2[4096];
    br_shard_path(p2, sizeof p2, d1, 2, NULL);
    copy_file(p2, p1);
    expect_refusal(d1, 2, 2, 1, BR_E_MISMATCH, "rank-1.gguf is rank 2 of a 2x2");
    /* a whole model file is not a shard */
    copy_file(m1, p1);
    expect_refusal(d1, 2, 2, 1, BR_E_MISMATCH, "not a bitrack shard");
    remove(p1);
    /* a missing rank file is refused for that rank; the others load without it */
    expect_refusal(d1, 2, 2, 1, BR_E_NOTFOUND, "rank-1.gguf");
    struct br_model *m = NULL;
    assert_int_equal(br_model_load_shard(d1, 2, 2, 0, &m, &err), BR_OK);
    br_model_destroy(&m);
    /* truncated: the reader's error, naming the file */
    size_t n;
    uint8_t *b = br_test_read_file(p0, &n);
    assert_non_null(b);
    assert_int_equal(br_test_write_file(p0, b, n / 2), 0);
    free(b);
    expect_refusal(d1, 2, 2, 0, BR_E_FORMAT, "rank-0.gguf");
    /* a shard is not a source for sharding */
    char *d3 = make_dir("c");
    br_shard_path(p0, sizeof p0, d2, 0, NULL);
    assert_int_equal(br_shard_model(p0, 1, 1, d3, &err), BR_E_FORMAT);
    remove_dir(d3);
    remove_dir(d1);
    remove_dir(d2);
    remove(m1);
    remove(m2);
    free(m1);
    free(m2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tied_i2s),   cmocka_unit_test(test_untied_q8_tq2_rowscale),
        cmocka_unit_test(test_odd_widths), cmocka_unit_test(test_synth_rank_identical),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
