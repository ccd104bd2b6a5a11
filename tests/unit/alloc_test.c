/*
 * Steady-state decoding allocates nothing on rank 0: the real scheduler
 * (coordinator/sched.c) runs steps through the real cluster executor
 * (coordinator/cluster.c) and engine, in one process and as rank 0 of a 2 x 2 job whose
 * other ranks are threads over the in-process communicator (worker/comm_local.h), on a
 * small synthetic model. After the prompts and a few decode steps, every allocation rank
 * 0's thread makes during N further decode steps is counted and must be zero, for greedy,
 * sampled-on-the-last-stage and penalised (full logits) requests.
 *
 * Counting: the test is linked with --wrap for malloc, calloc, realloc, aligned_alloc,
 * posix_memalign and strdup (tests/CMakeLists.txt), so every such call from the
 * statically linked project libraries and from this file lands in the __wrap_ functions
 * below (with or without AddressSanitizer, whose allocator the __real_ ones reach).
 * Calls made inside shared libraries (libc's own, cmocka, ZeroMQ) are not seen.
 *
 * Scope: rank 0's thread only (a thread-local flag), with every rank's pool of one thread,
 * so all of rank 0's work (scheduler, driver, engine, kernels, sampling) runs on it. Not
 * counted: the other ranks, and rank 0's calls into the in-process transport (see struct
 * quiet). With pools of several threads the kernels' per-thread scratch
 * (kernels/scratch.h) is allocated on a thread's first use, which timing decides.
 *
 * Streaming requests are counted apart: each generated token is one event and its text,
 * allocated by the scheduler and handed to the sink, which owns them (sched.h); the test
 * checks that this is all they cost, 2 allocations per token.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "coordinator/cluster.h"
#include "coordinator/sched.h"
#include "coordinator/tokenizer.h"
#include "kernels/pool.h"
#include "sharding/plan.h"
#include "sharding/synth.h"
#include "test_util.h"
#include "worker/comm_local.h"
#include "worker/engine.h"
#include "worker/model.h"
#include "worker/step.h"

int main(void);

/* ---- counting allocator ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n);
int __wrap_posix_memalign(void **p, size_t align, size_t n);
char *__wrap_strdup(const char *s);

#define MAX_SITES 32
static atomic_int counting;
static _Thread_local int counted_thread; /* this thread's allocations are counted */
static atomic_long n_allocs;
/* where the allocations counted came from: distinct return addresses and their counts */
static pthread_mutex_t sites_lock = PTHREAD_MUTEX_INITIALIZER;
static void *sites[MAX_SITES];
static long site_n[MAX_SITES];

static inline void count(void *site)
{
    if (!counted_thread || !atomic_load_explicit(&counting, memory_order_relaxed)) return;
    atomic_fetch_add(&n_allocs, 1);
    pthread_mutex_lock(&sites_lock);
    for (int k = 0; k < MAX_SITES; k++)
        if (!sites[k] || sites[k] == site) {
            sites[k] = site;
            site_n[k]++;
            break;
        }
    pthread_mutex_unlock(&sites_lock);
}

void *__wrap_malloc(size_t n)
{
    count(__builtin_return_address(0));
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t size)
{
    count(__builtin_return_address(0));
    return __real_calloc(n, size);
}
void *__wrap_realloc(void *p, size_t n)
{
    count(__builtin_return_address(0));
    return __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t align, size_t n)
{
    count(__builtin_return_address(0));
    return __real_aligned_alloc(align, n);
}
int __wrap_posix_memalign(void **p, size_t align, size_t n)
{
    count(__builtin_return_address(0));
    return __real_posix_memalign(p, align, n);
}
char *__wrap_strdup(const char *s)
{
    count(__builtin_return_address(0));
    return __real_strdup(s);
}

/* Counts this thread's allocations from now on. */
static void count_begin(void)
{
    counted_thread = 1;
    memset(sites, 0, sizeof sites);
    memset(site_n, 0, sizeof site_n);
    atomic_store(&n_allocs, 0);
    atomic_store(&counting, 1);
}

/* Stops counting; returns the count, printing where they came from: return addresses,
 * also as offsets from main for `addr2line -e alloc_test` (add main's address in the
 * file, `nm alloc_test | grep ' main$'`). */
static long count_end(const char *what)
{
    atomic_store(&counting, 0);
    counted_thread = 0;
    long n = atomic_load(&n_allocs);
    for (int k = 0; k < MAX_SITES && sites[k]; k++)
        print_message("%s: %ld allocations from %p (main %+ld)\n", what, site_n[k], sites[k],
                      (long)((char *)sites[k] - (char *)(uintptr_t)main));
    return n;
}

/* Warm-up proof: the wrappers see an allocation made by a project library. */
static void test_counter_counts(void **state)
{
    (void)state;
    count_begin();
    struct br_pool *pool = NULL;
    assert_int_equal(br_pool_create(1, &pool), BR_OK);
    long n = count_end("pool");
    br_pool_destroy(&pool);
    assert_true(n >= 1);
}

/* ---- the job ---- */

#define VOCAB     512
#define N_SEQ     4
#define N_REQ     3
#define MAX_BATCH 8
#define WARMUP    6  /* decode steps before counting */
#define WINDOW    24 /* decode steps counted */

static char *make_model(void)
{
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    o.arch = "bitnet-b1.58";
    o.seed = 21;
    o.n_layer = 2;
    o.n_embd = 512;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_ff = 512;
    o.n_vocab = VOCAB;
    o.n_ctx = 256;
    char *path = br_test_tmp_path("alloc-model");
    struct br_err err = {{0}};
    if (br_synth_write(&o, path, &err)) fail_msg("synth: %s", err.msg);
    return path;
}

/* Tokens "t0" .. "t511", no end-of-generation token: sequences end by length only. */
static struct br_tok *make_tok(void)
{
    static char text[VOCAB][8];
    const char *tokens[VOCAB];
    for (int i = 0; i < VOCAB; i++) {
        snprintf(text[i], sizeof text[i], "t%d", i);
        tokens[i] = text[i];
    }
    struct br_tok_params p;
    br_tok_params_init(&p);
    p.model = BR_TOK_MODEL_BPE;
    p.pre = "gpt2";
    p.n_tokens = VOCAB;
    p.tokens = tokens;
    p.bos_id = p.eos_id = p.eot_id = -1;
    p.add_bos = 0;
    struct br_tok *t = NULL;
    struct br_err err = {{0}};
    if (br_tok_create(&p, &t, &err)) fail_msg("tokenizer: %s", err.msg);
    return t;
}

struct rank {
    const char *path;
    const struct br_plan *plan;
    struct br_comm_local *world;
    struct br_comm *comm; /* NULL: the world's for this rank */
    int r;
    struct br_model *m;
    struct br_pool *pool;
    struct br_engine *e;
    int rc;
    char msg[600];
};

static int rank_open(struct rank *k)
{
    struct br_err err = {{0}};
    const struct br_part *p = &k->plan->parts[k->r];
    struct br_comm *comm = k->comm ? k->comm : k->world ? br_comm_local_rank(k->world, k->r) : NULL;
    struct br_engine_opts eo = {.n_ctx = 256, .max_batch = MAX_BATCH, .n_seq = N_SEQ};
    int rc = br_model_load_part(k->path, p, &k->m, &err);
    if (!rc && (rc = br_pool_create(1, &k->pool))) snprintf(err.msg, sizeof err.msg, "pool");
    eo.pool = k->pool, eo.comm = comm;
    if (!rc) rc = br_engine_create(k->m, &eo, &k->e, &err);
    if (rc) {
        k->rc = rc;
        snprintf(k->msg, sizeof k->msg, "rank %d: %s", k->r, err.msg);
        if (k->world) br_comm_local_abort(k->world, k->msg);
    }
    return rc;
}

static void rank_close(struct rank *k)
{
    br_engine_destroy(&k->e);
    br_pool_destroy(&k->pool);
    br_model_destroy(&k->m);
}

static void *follower(void *arg)
{
    struct rank *k = arg;
    struct br_err err = {{0}};
    if (!rank_open(k) && (k->rc = br_step_follow(k->e, br_comm_local_rank(k->world, k->r), &err)))
        snprintf(k->msg, sizeof k->msg, "rank %d: %s", k->r, err.msg);
    rank_close(k);
    return NULL;
}

/* Rank 0's communicator seen through a wrapper that stops counting inside the transport:
 * the in-process transport copies each message into memory it keeps and reuses, but how
 * many messages a queue holds at once, and so when it last needs one more, depends on
 * thread timing; MPI (worker/comm_mpi.c) sends from the caller's buffer. Everything else
 * on rank 0's thread is counted. */
struct quiet {
    struct br_comm c; /* what rank 0 is given; impl: the transport's communicator */
};

static struct br_comm *inner(struct br_comm *c)
{
    return c->impl;
}

/* Runs the transport's op with counting paused, then mirrors what it reports. */
#define QUIET(c, call)                                                                             \
    do {                                                                                           \
        struct br_comm *in_ = inner(c);                                                            \
        int saved_ = counted_thread;                                                               \
        counted_thread = 0;                                                                        \
        in_->idle = (c)->idle;                                                                     \
        int rc_ = in_->ops->call;                                                                  \
        counted_thread = saved_;                                                                   \
        (c)->stats = in_->stats;                                                                   \
        memcpy((c)->why, in_->why, sizeof(c)->why);                                                \
        return rc_;                                                                                \
    } while (0)

static int q_allgather(struct br_comm *c, const void *s, void *r, const int *n, const int *d)
{
    QUIET(c, allgather(in_, s, r, n, d));
}
static int q_reduce_scatter_i32(struct br_comm *c, const int32_t *s, int32_t *r, const int *n)
{
    QUIET(c, reduce_scatter_i32(in_, s, r, n));
}
static int q_allreduce_i32(struct br_comm *c, int32_t *b, int n)
{
    QUIET(c, allreduce_i32(in_, b, n));
}
static int q_allreduce_max_f32(struct br_comm *c, float *b, int n)
{
    QUIET(c, allreduce_max_f32(in_, b, n));
}
static int q_send_next(struct br_comm *c, const void *b, size_t n)
{
    QUIET(c, send_next(in_, b, n));
}
static int q_recv_prev(struct br_comm *c, void *b, size_t n)
{
    QUIET(c, recv_prev(in_, b, n));
}
static int q_send_root(struct br_comm *c, const void *b, size_t n, void **pending)
{
    QUIET(c, send_root(in_, b, n, pending));
}
static int q_wait_root(struct br_comm *c, void **pending)
{
    QUIET(c, wait_root(in_, pending));
}
static int q_recv_from(struct br_comm *c, int r, void *b, size_t n)
{
    QUIET(c, recv_from(in_, r, b, n));
}
static int q_bcast(struct br_comm *c, void *b, size_t n)
{
    QUIET(c, bcast(in_, b, n));
}
static const struct br_comm_ops quiet_ops = {
    .allgather = q_allgather,
    .reduce_scatter_i32 = q_reduce_scatter_i32,
    .allreduce_i32 = q_allreduce_i32,
    .allreduce_max_f32 = q_allreduce_max_f32,
    .send_next = q_send_next,
    .recv_prev = q_recv_prev,
    .send_root = q_send_root,
    .wait_root = q_wait_root,
    .recv_from = q_recv_from,
    .bcast = q_bcast,
};

static void quiet_init(struct quiet *q, struct br_comm *in)
{
    q->c = *in;
    q->c.ops = &quiet_ops;
    q->c.impl = in;
}

/* The executor between scheduler and cluster, recording each step's shape. */
struct spy {
    struct br_executor ex;
    int32_t last_n, last_rows, other_shapes;
    long rows; /* rows issued */
    int modes; /* bit per enum br_sched_mode issued */
};

static int spy_issue(void *ctx, void *step, const struct br_batch *b, const int32_t *rows,
                     int32_t n_rows, enum br_sched_mode mode,
                     const struct br_sample_params *const *sp, const uint64_t *rseq,
                     const uint64_t *rpos, struct br_err *err)
{
    struct spy *s = ctx;
    if (b->n != n_rows) s->other_shapes++; /* a prompt chunk */
    s->last_n = b->n, s->last_rows = n_rows;
    s->rows += n_rows;
    s->modes |= 1 << mode;
    return s->ex.issue(s->ex.ctx, step, b, rows, n_rows, mode, sp, rseq, rpos, err);
}
static int spy_collect(void *ctx, void *step, int32_t n_rows, enum br_sched_mode mode,
                       float *logits, int32_t *top1, struct br_sample_result *res, int *row_rc,
                       struct br_err *err)
{
    struct spy *s = ctx;
    return s->ex.collect(s->ex.ctx, step, n_rows, mode, logits, top1, res, row_rc, err);
}
static bool spy_can_sample(void *ctx, const struct br_sample_params *const *sp, int32_t n)
{
    struct spy *s = ctx;
    return s->ex.can_sample(s->ex.ctx, sp, n);
}

/* The sink: counts events and final ones; frees them (it owns them). */
struct sink {
    long events, finals, tokens;
};
static void sink_emit(void *ctx, uint64_t ticket, struct br_event *ev)
{
    (void)ticket;
    struct sink *s = ctx;
    s->events++;
    if (ev->kind == BR_EVENT_TOKEN) s->tokens++;
    if (ev->kind == BR_EVENT_DONE || ev->kind == BR_EVENT_ERROR) s->finals++;
    br_event_free_list(ev);
}

enum req_kind { REQ_GREEDY, REQ_SAMPLED, REQ_PENALTY, REQ_STREAM };

static void submit(struct br_sched *sc, uint64_t ticket, enum req_kind kind)
{
    struct br_sched_job_in in = {0};
    in.ticket = ticket;
    br_req_init(&in.req);
    in.req.type = BR_REQ_GENERATE;
    in.req.id = strdup("r");
    in.req.input = BR_INPUT_TOKENS;
    in.req.max_tokens = 200;
    in.req.stream = kind == REQ_STREAM;
    in.req.sampling.temperature = kind == REQ_SAMPLED || kind == REQ_PENALTY ? 0.8f : 0.0f;
    in.req.sampling.has_seed = true;
    in.req.sampling.seed = ticket;
    if (kind == REQ_PENALTY) in.req.sampling.repeat_penalty = 1.2f;
    in.n_prompt = 5 + (int32_t)ticket;
    in.prompt = malloc((size_t)in.n_prompt * sizeof *in.prompt);
    for (int32_t i = 0; i < in.n_prompt; i++)
        in.prompt[i] = (int32_t)((ticket * 37 + i * 11) % VOCAB);
    in.t_arrival = br_now();
    br_sched_submit(sc, &in);
}

/* Allocations over WINDOW steady decode steps of N_REQ requests of `kind` on a tp x pp
 * job (rank 0 here, the others on threads). */
static long decode_allocs(const char *path, int tp, int pp, enum req_kind kind, long *tokens)
{
    struct br_err err = {{0}};
    struct br_model *whole = NULL;
    assert_int_equal(br_model_load(path, &whole, &err), BR_OK);
    struct br_plan *plan = NULL;
    assert_int_equal(br_plan_create(&whole->cfg, tp, pp, &plan, &err), BR_OK);
    br_model_destroy(&whole);
    int n = tp * pp;
    struct br_comm_local *world = NULL;
    if (n > 1) assert_int_equal(br_comm_local_create(tp, pp, &world, &err), BR_OK);
    struct rank ranks[16];
    pthread_t th[16];
    assert_true(n <= 16);
    for (int r = 0; r < n; r++)
        ranks[r] = (struct rank){.path = path, .plan = plan, .world = world, .r = r};
    for (int r = 1; r < n; r++)
        assert_int_equal(pthread_create(&th[r], NULL, follower, &ranks[r]), 0);
    struct rank *k0 = &ranks[0];
    struct quiet quiet;
    if (world) {
        quiet_init(&quiet, br_comm_local_rank(world, 0));
        k0->comm = &quiet.c;
    }
    if (rank_open(k0)) fail_msg("%s", k0->msg);
    struct br_comm *comm = k0->comm;
    struct br_cluster *cl = NULL;
    assert_int_equal(br_cluster_create(k0->e, comm, &cl, &err), BR_OK);
    struct spy spy = {0};
    br_cluster_executor(cl, &spy.ex);
    struct br_executor ex = spy.ex;
    ex.ctx = &spy, ex.issue = spy_issue, ex.collect = spy_collect;
    ex.can_sample = spy_can_sample;
    struct br_tok *tok = make_tok();
    struct sink sk = {0};
    struct br_sched_sink sink = {&sk, sink_emit};
    struct br_sched_opts so = {0};
    struct br_sched *sc = NULL;
    assert_int_equal(br_sched_create(&so, &ex, &sink, tok, &sc, &err), BR_OK);
    for (int i = 0; i < N_REQ; i++) submit(sc, (uint64_t)i + 1, kind);
    /* prompts, then WARMUP steps in which every request decodes */
    int steady = 0;
    for (int s = 0; s < 200 && steady < WARMUP; s++) {
        if (br_sched_step(sc, &err)) fail_msg("step: %s", err.msg);
        /* decode rows are dealt over the steps in flight (ex.depth of them) */
        steady = spy.last_n == spy.last_rows && spy.rows >= N_REQ ? steady + 1 : 0;
    }
    if (steady != WARMUP)
        fail_msg("no steady decoding: last step %d tokens, %d rows; %ld events, %ld final",
                 spy.last_n, spy.last_rows, sk.events, sk.finals);
    spy.other_shapes = 0;
    spy.rows = 0;
    spy.modes = 0;
    long tokens0 = sk.tokens;
    count_begin();
    for (int s = 0; s < WINDOW; s++)
        if (br_sched_step(sc, &err)) break;
    char what[64];
    snprintf(what, sizeof what, "%dx%d kind %d", tp, pp, (int)kind);
    long allocs = count_end(what);
    *tokens = sk.tokens - tokens0;
    if (kind == REQ_STREAM) assert_int_equal(*tokens, spy.rows); /* a token event per row */
    /* every counted step decoded, every request in every round of ex.depth steps */
    assert_int_equal(spy.other_shapes, 0);
    assert_int_equal(spy.rows, (long)WINDOW * N_REQ / ex.depth);
    /* each kind of request takes its own way back: best logit, sampled on the last stage,
     * full logits */
    static const int want_mode[] = {[REQ_GREEDY] = BR_SCHED_TOP1,
                                    [REQ_SAMPLED] = BR_SCHED_SAMPLED,
                                    [REQ_PENALTY] = BR_SCHED_FULL,
                                    [REQ_STREAM] = BR_SCHED_TOP1};
    assert_int_equal(spy.modes, 1 << want_mode[kind]);
    assert_int_equal(sk.finals, 0);
    br_sched_finish_all(sc, 1, BR_PROTO_UNAVAILABLE, "test over");
    assert_int_equal(sk.finals, N_REQ);
    br_sched_destroy(&sc);
    assert_int_equal(br_cluster_stop(cl, &err), BR_OK);
    br_cluster_destroy(&cl);
    br_tok_destroy(&tok);
    rank_close(k0);
    for (int r = 1; r < n; r++) {
        pthread_join(th[r], NULL);
        if (ranks[r].rc) fail_msg("%s", ranks[r].msg);
    }
    br_comm_local_destroy(&world);
    br_plan_destroy(&plan);
    return allocs;
}

static const int layouts[][2] = {{1, 1}, {2, 2}};

static void check_kind(enum req_kind kind)
{
    char *path = make_model();
    for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++) {
        int tp = layouts[i][0], pp = layouts[i][1];
        long tokens = 0;
        long n = decode_allocs(path, tp, pp, kind, &tokens);
        long want = kind == REQ_STREAM ? 2 * tokens : 0;
        if (n != want)
            fail_msg("%dx%d: %ld allocations in %d decode steps of %d requests (want %ld)", tp, pp,
                     n, WINDOW, N_REQ, want);
    }
    remove(path);
    free(path);
}

static void test_greedy(void **state)
{
    (void)state;
    check_kind(REQ_GREEDY);
}
static void test_sampled(void **state)
{
    (void)state;
    check_kind(REQ_SAMPLED);
}
static void test_penalty(void **state)
{
    (void)state;
    check_kind(REQ_PENALTY);
}
static void test_stream(void **state)
{
    (void)state;
    check_kind(REQ_STREAM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_counts), cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_sampled),        cmocka_unit_test(test_penalty),
        cmocka_unit_test(test_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
