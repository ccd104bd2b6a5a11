/*
 * Layout exactness on the in-process communicator (worker/comm_local.h): every TP x PP
 * layout gives logits bit-identical to one process. Each rank is a thread holding its part
 * of the plan, driven through a fixed schedule of steps (a prompt split over two steps,
 * a second sequence joining mid-way, then decode steps of both), the last stage's ranks
 * writing their vocabulary slices into one shared array. Both residual layouts
 * (sharding/plan.h). Synthetic models: a small one, a GQA shape whose hidden size, KV
 * heads, FFN and vocabulary split unevenly 3 ways, a llama shape with a Q6_K head, and one
 * with more TP ranks than hidden chunks (replicated only).
 * The mpirun tests (tests/e2e/mpi_layouts.sh) run the same property across processes.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernels/ops.h"
#include "kernels/pool.h"
#include "sharding/plan.h"
#include "sharding/synth.h"
#include "sharding/types.h"
#include "test_util.h"
#include "worker/comm_local.h"
#include "worker/engine.h"
#include "worker/model.h"

/* The schedule: steps of (sequence, token) with positions following each sequence. */
#define MAX_STEP 8
struct step {
    int n;
    int32_t seq[MAX_STEP], tok[MAX_STEP];
};
static const struct step schedule[] = {
    {8, {0, 0, 0, 0, 0, 0, 0, 0}, {5, 77, 299, 0, 123, 42, 7, 250}},
    {7, {0, 0, 0, 1, 1, 1, 1}, {9, 31, 200, 11, 12, 13, 14}},
    {2, {0, 1}, {17, 90}},
    {2, {1, 0}, {3, 250}},
    {1, {0}, {44}},
};
#define N_STEPS ((int)(sizeof schedule / sizeof *schedule))

static int total_rows(void)
{
    int n = 0;
    for (int s = 0; s < N_STEPS; s++) n += schedule[s].n;
    return n;
}

struct job {
    const char *path;
    const struct br_plan *plan;
    struct br_comm_local *world; /* NULL: one process */
    int rank, threads;
    float *logits; /* (total_rows, vocab), shared */
    int rc;
    char msg[700];
};

static int rank_fail(struct job *j, int rc, const char *what, const char *why)
{
    j->rc = rc ? rc : BR_E_INVALID;
    snprintf(j->msg, sizeof j->msg, "rank %d: %s: %.600s", j->rank, what, why);
    if (j->world) br_comm_local_abort(j->world, j->msg);
    return j->rc;
}

static void *run_rank(void *arg)
{
    struct job *j = arg;
    struct br_err err = {{0}};
    struct br_model *m = NULL;
    struct br_engine *e = NULL;
    struct br_pool *pool = NULL;
    struct br_comm *comm = j->world ? br_comm_local_rank(j->world, j->rank) : NULL;
    const struct br_part *p = &j->plan->parts[j->rank];
    int rc;
    if ((rc = br_model_load_part(j->path, p, &m, &err))) {
        rank_fail(j, rc, "load", err.msg);
        goto done;
    }
    if ((rc = br_pool_create(j->threads, &pool))) {
        rank_fail(j, rc, "pool", "cannot start threads");
        goto done;
    }
    struct br_engine_opts eo = {
        .n_ctx = 64, .max_batch = MAX_STEP, .n_seq = 2, .pool = pool, .comm = comm};
    if ((rc = br_engine_create(m, &eo, &e, &err))) {
        rank_fail(j, rc, "engine", err.msg);
        goto done;
    }
    int32_t vocab = m->cfg.n_vocab, v0 = p->v0, v1 = p->v1;
    int32_t len[2] = {0, 0}, pos[MAX_STEP], rows[MAX_STEP];
    float *lg = malloc((size_t)MAX_STEP * (size_t)(v1 - v0 > 0 ? v1 - v0 : 1) * sizeof *lg);
    if (!lg) {
        rank_fail(j, BR_E_NOMEM, "logits", "out of memory");
        goto done;
    }
    int row0 = 0;
    for (int s = 0; s < N_STEPS && !j->rc; s++) {
        const struct step *st = &schedule[s];
        for (int t = 0; t < st->n; t++) pos[t] = len[st->seq[t]]++, rows[t] = t;
        struct br_batch b = {st->n, st->tok, pos, st->seq, 0, NULL};
        size_t res = (size_t)st->n * (size_t)br_engine_residual_width(e) * sizeof(float);
        if (p->first_stage)
            rc = br_engine_embed(e, &b, &err);
        else if ((rc = comm->ops->recv_prev(comm, br_engine_residual(e), res)))
            snprintf(err.msg, sizeof err.msg, "recv_prev: %s", comm->why);
        if (!rc) rc = br_engine_layers(e, &b, &err);
        if (!rc && !p->last_stage && (rc = comm->ops->send_next(comm, br_engine_residual(e), res)))
            snprintf(err.msg, sizeof err.msg, "send_next: %s", comm->why);
        if (!rc && p->last_stage) {
            rc = br_engine_head(e, &b, rows, st->n, lg, &err);
            for (int t = 0; !rc && t < st->n; t++)
                memcpy(j->logits + (size_t)(row0 + t) * (size_t)vocab + v0,
                       lg + (size_t)t * (size_t)(v1 - v0), (size_t)(v1 - v0) * sizeof *lg);
        }
        if (rc) rank_fail(j, rc, "step", err.msg);
        row0 += st->n;
    }
    free(lg);
done:
    br_engine_destroy(&e);
    br_pool_destroy(&pool);
    br_model_destroy(&m);
    return NULL;
}

/* Logits (total_rows, vocab) of the schedule on a tp x pp layout, threads per rank. */
static float *layout_logits(const char *path, int tp, int pp, int layout, int threads)
{
    struct br_model *whole = NULL;
    struct br_err err = {{0}};
    if (br_model_load(path, &whole, &err)) fail_msg("load %s: %s", path, err.msg);
    struct br_model_config cfg = whole->cfg;
    br_model_destroy(&whole);
    struct br_plan *plan = NULL;
    if (br_plan_create_layout(&cfg, tp, pp, layout, &plan, &err))
        fail_msg("plan %dx%d %s: %s", tp, pp, br_layout_name(layout), err.msg);
    int n = tp * pp;
    struct br_comm_local *world = NULL;
    if (n > 1 && br_comm_local_create(tp, pp, &world, &err)) fail_msg("world: %s", err.msg);
    float *logits = calloc((size_t)total_rows() * (size_t)cfg.n_vocab, sizeof *logits);
    struct job *jobs = calloc((size_t)n, sizeof *jobs);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    assert_non_null(logits);
    assert_non_null(jobs);
    assert_non_null(th);
    for (int r = 0; r < n; r++) {
        jobs[r] = (struct job){path, plan, world, r, threads, logits, 0, ""};
        assert_int_equal(pthread_create(&th[r], NULL, run_rank, &jobs[r]), 0);
    }
    for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < n; r++)
        if (jobs[r].rc) fail_msg("%dx%d %s: %s", tp, pp, br_layout_name(layout), jobs[r].msg);
    free(jobs);
    free(th);
    br_comm_local_destroy(&world);
    br_plan_destroy(&plan);
    return logits;
}

static char *make_model(const char *arch, int32_t embd, int32_t heads, int32_t kv, int32_t ff,
                        int32_t vocab, uint32_t head_type, uint64_t seed)
{
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    o.arch = arch;
    o.seed = seed;
    o.n_layer = 3;
    o.n_embd = embd;
    o.n_head = heads;
    o.n_head_kv = kv;
    o.n_ff = ff;
    o.n_vocab = vocab;
    o.n_ctx = 64;
    if (head_type) {
        o.tied = 0;
        o.head_type = head_type;
    }
    char *path = br_test_tmp_path("layout-model");
    struct br_err err = {{0}};
    if (br_synth_write(&o, path, &err)) fail_msg("synth: %s", err.msg);
    return path;
}

static const int layouts[][2] = {{2, 1}, {1, 2}, {2, 2}, {3, 1}, {1, 3}};

static size_t n_logits(const char *path)
{
    struct br_model *whole = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_model_load(path, &whole, &err), 0);
    size_t n = (size_t)total_rows() * (size_t)whole->cfg.n_vocab;
    br_model_destroy(&whole);
    return n;
}

static void expect_same(const float *ref, const float *got, size_t n, int tp, int pp, int layout)
{
    size_t bad = 0;
    for (size_t i = 0; i < n && !bad; i++)
        if (memcmp(&ref[i], &got[i], sizeof *got)) bad = i + 1;
    if (bad)
        fail_msg("%dx%d %s: logit %zu differs: %.9g vs one process %.9g", tp, pp,
                 br_layout_name(layout), bad - 1, (double)got[bad - 1], (double)ref[bad - 1]);
}

/* Every layout in both residual layouts, and two threads per rank on 2x2. */
static void check_layouts(const char *path)
{
    size_t n = n_logits(path);
    float *ref = layout_logits(path, 1, 1, BR_LAYOUT_REPLICATED, 1);
    for (int layout = 0; layout < 2; layout++) {
        for (size_t k = 0; k < sizeof layouts / sizeof *layouts; k++) {
            int tp = layouts[k][0], pp = layouts[k][1];
            float *got = layout_logits(path, tp, pp, layout, 1);
            expect_same(ref, got, n, tp, pp, layout);
            free(got);
        }
        float *got = layout_logits(path, 2, 2, layout, 2);
        expect_same(ref, got, n, 2, 2, layout);
        free(got);
    }
    free(ref);
    unlink(path);
}

/* A small model: 3 hidden chunks, 3 KV heads, 3 FFN chunks, 4 vocabulary chunks. */
static void test_tiny(void **state)
{
    (void)state;
    char *path = make_model("bitnet-b1.58", 768, 6, 3, 768, 800, 0, 31);
    check_layouts(path);
    free(path);
}

/* Grouped-query attention (2 query heads per KV head) and 3-way splits that are uneven
 * everywhere: 5 hidden chunks, 5 KV heads, 6 FFN chunks (5.5 rounded up... 1536 = 6),
 * 5 vocabulary chunks (1100 rows, the last partial); Q8_0 head. */
static void test_gqa_uneven(void **state)
{
    (void)state;
    char *path = make_model("bitnet-b1.58", 1280, 10, 5, 1536, 1100, BR_GGML_Q8_0, 32);
    check_layouts(path);
    free(path);
}

/* A llama shape with a Q6_K head read in place by each vocabulary slice. */
static void test_llama_q6k(void **state)
{
    (void)state;
    char *path = make_model("llama", 768, 8, 4, 1024, 1030, BR_GGML_Q6_K, 33);
    check_layouts(path);
    free(path);
}

/* The replicated residual lifts the bound of whole hidden chunks per rank: d = 512 is 2
 * chunks, yet 4 ranks (4 KV heads, 4 FFN chunks) run it exactly; the sharded layout
 * refuses with a message naming the bound. */
static void test_bound_lifted(void **state)
{
    (void)state;
    char *path = make_model("bitnet-b1.58", 512, 8, 4, 1024, 1030, 0, 34);
    size_t n = n_logits(path);
    float *ref = layout_logits(path, 1, 1, BR_LAYOUT_REPLICATED, 1);
    float *got = layout_logits(path, 4, 1, BR_LAYOUT_REPLICATED, 1);
    expect_same(ref, got, n, 4, 1, BR_LAYOUT_REPLICATED);
    free(got);
    struct br_model *m = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_model_load(path, &m, &err), 0);
    struct br_plan *plan = NULL;
    assert_int_equal(br_plan_create_layout(&m->cfg, 4, 1, BR_LAYOUT_SHARDED, &plan, &err),
                     BR_E_INVALID);
    assert_non_null(strstr(err.msg, "hidden chunks"));
    /* KV heads stay a bound of both layouts, explained */
    assert_int_equal(br_plan_create(&m->cfg, 5, 1, &plan, &err), BR_E_INVALID);
    assert_non_null(strstr(err.msg, "KV heads"));
    br_model_destroy(&m);
    free(ref);
    unlink(path);
    free(path);
}

/* The 100B preset's shapes (bitrack synth --preset 100b), without writing a file. */
static void shape_100b(struct br_model_config *c)
{
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    o.preset = "100b";
    struct br_err err = {{0}};
    assert_int_equal(br_synth_shape(&o, c, &err), BR_OK);
}

/* The plan's choice: few bytes per step on a latency-bound link take the replicated
 * residual (4 collectives), many tokens per step on a slow link with little latency the
 * sharded one (fewer bytes); a model the sharded layout cannot split stays replicated. */
static void test_choose_layout(void **state)
{
    (void)state;
    struct br_model_config c;
    shape_100b(&c);
    assert_int_equal(br_plan_choose_layout(&c, 16, 1, 25, 25), BR_LAYOUT_REPLICATED);
    assert_int_equal(br_plan_choose_layout(&c, 16, 64, 10, 3), BR_LAYOUT_SHARDED);
    c.n_embd = 512; /* 2 hidden chunks: no sharded layout for 4 ranks */
    c.head_dim = c.head_dim_v = 8;
    assert_int_equal(br_plan_choose_layout(&c, 4, 64, 10, 3), BR_LAYOUT_REPLICATED);
}

/* TP is bounded by BR_PLAN_MAX_TP (the engine's per-rank arrays), refused where the plan is
 * made with a message naming the bound, on a model whose heads, FFN and vocabulary
 * chunks would otherwise split over more ranks; TP at the bound is accepted. */
static void test_max_tp(void **state)
{
    (void)state;
    struct br_model_config c;
    shape_100b(&c);
    struct br_err err = {{0}};
    int32_t over = BR_PLAN_MAX_TP + 1;
    c.n_head = c.n_head_kv = 2 * over;
    c.n_embd = c.n_head * c.head_dim;
    c.n_ff = 2 * over * BR_CHUNK;
    c.n_vocab = 2 * over * BR_CHUNK;
    struct br_plan *plan = NULL;
    assert_int_equal(br_plan_create(&c, BR_PLAN_MAX_TP, 1, &plan, &err), BR_OK);
    assert_int_equal(plan->tp, BR_PLAN_MAX_TP);
    br_plan_destroy(&plan);
    for (int layout = BR_LAYOUT_REPLICATED; layout <= BR_LAYOUT_SHARDED; layout++) {
        assert_int_equal(br_plan_create_layout(&c, over, 1, layout, &plan, &err), BR_E_INVALID);
        assert_null(plan);
        char want[64];
        snprintf(want, sizeof want, "exceeds %d ranks per TP group", BR_PLAN_MAX_TP);
        if (!strstr(err.msg, want)) fail_msg("TP %d, layout %d: '%s'", over, layout, err.msg);
    }
    /* far beyond the bound the message still names it */
    assert_int_equal(br_plan_create(&c, 100000, 1, &plan, &err), BR_E_INVALID);
    assert_non_null(strstr(err.msg, "ranks per TP group"));
}

/* The communicator alone: collectives and queues give what comm.h promises. */
struct comm_job {
    struct br_comm *c;
    int rc;
};

static void *comm_rank(void *arg)
{
    struct comm_job *j = arg;
    struct br_comm *c = j->c;
    int r = c->tp_rank, T = c->tp;
    int32_t ar[3] = {r + 1, -r, 1000 * r};
    float mx[2] = {r == 1 ? 2.5f : 0.0f, (float)r};
    int counts[3] = {1, 2, 3}, displs[3] = {0, 1, 3};
    char mine[3] = {(char)('a' + r), (char)('a' + r), (char)('a' + r)}, all[6];
    int32_t rs_send[6] = {1, 2, 3, 4, 5, 6}, rs_recv[3] = {0};
    int rc = c->ops->allreduce_i32(c, ar, 3) || c->ops->allreduce_max_f32(c, mx, 2) ||
             c->ops->allgather(c, mine, all, counts, displs) ||
             c->ops->reduce_scatter_i32(c, rs_send, rs_recv, counts);
    if (!rc) {
        int off = r == 0 ? 0 : r == 1 ? 1 : 3;
        rc = ar[0] != 6 || ar[1] != -3 || ar[2] != 3000 || mx[0] != 2.5f || mx[1] != 2.0f ||
             memcmp(all, "abbccc", 6) != 0;
        for (int i = 0; i < counts[r]; i++) rc |= rs_recv[i] != T * rs_send[off + i];
    }
    j->rc = rc;
    return NULL;
}

static void test_comm_local(void **state)
{
    (void)state;
    struct br_comm_local *w = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_comm_local_create(3, 2, &w, &err), 0);
    pthread_t th[6];
    struct comm_job jobs[6];
    for (int r = 0; r < 6; r++) {
        jobs[r] = (struct comm_job){br_comm_local_rank(w, r), -1};
        assert_int_equal(pthread_create(&th[r], NULL, comm_rank, &jobs[r]), 0);
    }
    for (int r = 0; r < 6; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < 6; r++) assert_int_equal(jobs[r].rc, 0);
    /* every rank counted 4 collectives; all-reduce bytes are the buffer x the others */
    assert_int_equal(br_comm_local_rank(w, 4)->stats.messages, 4);
    /* point to point: a message of the wrong size is refused, not truncated */
    struct br_comm *a = br_comm_local_rank(w, 1), *b = br_comm_local_rank(w, 4);
    char x[4] = "abc", y[8];
    assert_int_equal(a->ops->send_next(a, x, 4), 0);
    assert_int_equal(b->ops->recv_prev(b, y, 8), BR_E_MISMATCH);
    /* an abort ends a receive that would wait forever */
    br_comm_local_abort(w, "rank 3 lost");
    assert_int_equal(b->ops->recv_prev(b, y, 4), BR_E_UNAVAILABLE);
    assert_non_null(strstr(b->why, "rank 3 lost"));
    br_comm_local_destroy(&w);
    assert_null(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comm_local),   cmocka_unit_test(test_tiny),
        cmocka_unit_test(test_gqa_uneven),   cmocka_unit_test(test_llama_q6k),
        cmocka_unit_test(test_bound_lifted), cmocka_unit_test(test_choose_layout),
        cmocka_unit_test(test_max_tp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
