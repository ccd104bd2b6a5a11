/*
 * The scale model: a loopback communicator, the per-rank step measurement, and the
 * projection arithmetic (formulas in bench/scale.h, docs/SCALING.md).
 *
 * The loopback communicator lets the engine run one rank's part of a plan in a single
 * process: the collectives return data of the right size at once, so the timed step is
 * the rank's compute only, and the counts say what a real run would send.
 */
#include "bench/scale.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "sharding/plan.h"
#include "worker/engine.h"

/* ---- loopback communicator ------------------------------------------------------------ */

struct loopback {
    struct br_comm comm;
    struct br_scale_trace trace;
};

static struct loopback *lb(struct br_comm *c)
{
    return c->impl;
}

static int lb_allgather(struct br_comm *c, const void *send, void *recv, const int *counts,
                        const int *displs)
{
    size_t mine = (size_t)counts[c->tp_rank];
    uint64_t total = 0;
    for (int r = 0; r < c->tp; r++) {
        uint8_t *dst = (uint8_t *)recv + displs[r];
        size_t n = (size_t)counts[r];
        for (size_t off = 0; off < n && mine > 0; off += mine)
            memcpy(dst + off, send, n - off < mine ? n - off : mine);
        total += (uint64_t)counts[r];
    }
    lb(c)->trace.allgather_n++;
    lb(c)->trace.allgather_bytes += total;
    if (br_coll_direct_fits(BR_COLL_ALLGATHER, c->tp, (double)total))
        lb(c)->trace.agd_n++, lb(c)->trace.agd_bytes += total;
    c->stats.bytes_sent += (uint64_t)mine * (uint64_t)(c->tp - 1);
    c->stats.messages++;
    return BR_OK;
}

static int lb_reduce_scatter_i32(struct br_comm *c, const int32_t *send, int32_t *recv,
                                 const int *counts)
{
    size_t off = 0;
    uint64_t total = 0;
    for (int r = 0; r < c->tp; r++) {
        if (r < c->tp_rank) off += (size_t)counts[r];
        total += (uint64_t)counts[r];
    }
    memcpy(recv, send + off, (size_t)counts[c->tp_rank] * sizeof *recv);
    lb(c)->trace.rs_n++;
    lb(c)->trace.rs_bytes += 4 * total;
    c->stats.bytes_sent += 4 * (total - (uint64_t)counts[c->tp_rank]);
    c->stats.messages++;
    return BR_OK;
}

/* All-reduce: the buffer stays this rank's own (as if the others contributed zeros). */
static int lb_allreduce(struct br_comm *c, int n, uint64_t *calls, uint64_t *bytes)
{
    (*calls)++;
    *bytes += 4 * (uint64_t)n;
    c->stats.bytes_sent += 4 * (uint64_t)n;
    c->stats.messages++;
    return BR_OK;
}

static int lb_allreduce_i32(struct br_comm *c, int32_t *buf, int n)
{
    (void)buf;
    return lb_allreduce(c, n, &lb(c)->trace.ar_n, &lb(c)->trace.ar_bytes);
}

static int lb_allreduce_max_f32(struct br_comm *c, float *buf, int n)
{
    (void)buf;
    return lb_allreduce(c, n, &lb(c)->trace.arm_n, &lb(c)->trace.arm_bytes);
}

static int lb_send(struct br_comm *c, const void *buf, size_t bytes)
{
    (void)buf;
    lb(c)->trace.other_n++;
    c->stats.bytes_sent += bytes;
    c->stats.messages++;
    return BR_OK;
}

static int lb_recv(struct br_comm *c, void *buf, size_t bytes)
{
    (void)c, (void)buf, (void)bytes;
    return BR_OK;
}

static int lb_send_root(struct br_comm *c, const void *buf, size_t bytes, void **pending)
{
    *pending = NULL;
    return lb_send(c, buf, bytes);
}

static int lb_wait_root(struct br_comm *c, void **pending)
{
    (void)c;
    *pending = NULL;
    return BR_OK;
}

static int lb_recv_from(struct br_comm *c, int world_rank, void *buf, size_t bytes)
{
    (void)world_rank;
    return lb_recv(c, buf, bytes);
}

static int lb_bcast(struct br_comm *c, void *buf, size_t bytes)
{
    if (c->tp_rank == 0) return lb_send(c, buf, bytes);
    return BR_OK;
}

static const struct br_comm_ops loopback_ops = {
    .allgather = lb_allgather,
    .reduce_scatter_i32 = lb_reduce_scatter_i32,
    .allreduce_i32 = lb_allreduce_i32,
    .allreduce_max_f32 = lb_allreduce_max_f32,
    .send_next = lb_send,
    .recv_prev = lb_recv,
    .send_root = lb_send_root,
    .wait_root = lb_wait_root,
    .recv_from = lb_recv_from,
    .bcast = lb_bcast,
};

int br_scale_loopback_create(int tp, int tp_rank, int pp, int pp_rank, struct br_comm **out)
{
    *out = NULL;
    if (tp < 1 || pp < 1 || tp_rank < 0 || tp_rank >= tp || pp_rank < 0 || pp_rank >= pp)
        return BR_E_INVALID;
    struct loopback *l = calloc(1, sizeof *l);
    if (!l) return BR_E_NOMEM;
    l->comm = (struct br_comm){.ops = &loopback_ops,
                               .impl = l,
                               .tp = tp,
                               .tp_rank = tp_rank,
                               .pp = pp,
                               .pp_rank = pp_rank,
                               .world_rank = pp_rank * tp + tp_rank,
                               .world_size = tp * pp};
    *out = &l->comm;
    return BR_OK;
}

void br_scale_loopback_destroy(struct br_comm **c)
{
    if (!c || !*c) return;
    free((*c)->impl); /* the comm is the first member of the loopback */
    *c = NULL;
}

const struct br_scale_trace *br_scale_loopback_trace(const struct br_comm *c)
{
    return &((const struct loopback *)c->impl)->trace;
}

void br_scale_loopback_reset(struct br_comm *c)
{
    memset(&lb(c)->trace, 0, sizeof lb(c)->trace);
    c->stats = (struct br_comm_stats){0, 0};
}

/* ---- measurement ---------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static double now(enum br_scale_clock clock, const struct br_pool *pool)
{
    return clock == BR_SCALE_WALL ? br_now() : br_cpu_s() / br_pool_threads(pool);
}

/* One batch size: a fresh engine, `batch` sequences decoding one token per step. */
static int measure_one(const struct br_model *m, struct br_pool *pool, int32_t batch, int reps,
                       int32_t n_ctx, enum br_scale_clock clock, struct br_scale_cost *out,
                       struct br_err *err)
{
    const struct br_part *p = &m->part;
    struct br_comm *comm = NULL;
    struct br_engine *e = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    double *t_layers = NULL, *t_embed = NULL, *t_head = NULL;
    int rc = BR_OK;
    int steps = reps + 1, nl = p->layer1 - p->layer0;
    if ((p->tp > 1 || p->pp > 1) &&
        (rc = br_scale_loopback_create(p->tp, p->tp_rank, p->pp, p->pp_rank, &comm))) {
        rc = br_err_set(err, rc, "cannot make the loopback communicator");
        goto done;
    }
    struct br_engine_opts eo = {.n_ctx = n_ctx > steps ? n_ctx : steps + 1,
                                .max_batch = batch > 64 ? batch : 64,
                                .n_seq = batch,
                                .pool = pool,
                                .comm = comm};
    if ((rc = br_engine_create(m, &eo, &e, err))) goto done;
    ids = malloc(4 * (size_t)batch * sizeof *ids);
    logits =
        malloc((size_t)batch * (size_t)(p->v1 - p->v0 > 0 ? p->v1 - p->v0 : 1) * sizeof *logits);
    t_layers = calloc((size_t)steps * 3, sizeof *t_layers);
    if (!ids || !logits || !t_layers) {
        rc = br_err_set(err, BR_E_NOMEM, "out of memory");
        goto done;
    }
    t_embed = t_layers + steps;
    t_head = t_layers + 2 * steps;
    int32_t *tok = ids, *pos = ids + batch, *seq = ids + 2 * batch, *rows = ids + 3 * batch;
    struct br_scale_trace tr_layers = {0}, tr_all = {0};
    uint64_t s = 0x5ca1eULL + (uint64_t)batch;
    for (int step = 0; step < steps; step++) {
        for (int32_t i = 0; i < batch; i++) {
            tok[i] = (int32_t)(lcg(&s) % (uint64_t)m->cfg.n_vocab);
            pos[i] = step;
            seq[i] = i;
            rows[i] = i;
        }
        struct br_batch b = {batch, tok, pos, seq, 0, NULL};
        if (comm) br_scale_loopback_reset(comm);
        double t0 = now(clock, pool);
        if (p->first_stage) {
            if ((rc = br_engine_embed(e, &b, err))) goto done;
        } else {
            /* a later stage gets its residual from the previous one: any unit-scale data */
            float *x = br_engine_residual(e);
            size_t n = (size_t)batch * (size_t)br_engine_residual_width(e);
            for (size_t i = 0; i < n; i++) x[i] = (float)((double)lcg(&s) / 2147483648.0 - 1.0);
        }
        double t1 = now(clock, pool);
        if ((rc = br_engine_layers(e, &b, err))) goto done;
        double t2 = now(clock, pool);
        if (comm) tr_layers = *br_scale_loopback_trace(comm);
        if (p->last_stage && (rc = br_engine_head(e, &b, rows, batch, logits, err))) goto done;
        double t3 = now(clock, pool);
        t_embed[step] = p->first_stage ? t1 - t0 : 0.0;
        t_layers[step] = t2 - t1;
        t_head[step] = t3 - t2;
        if (comm) tr_all = *br_scale_loopback_trace(comm);
    }
    /* the counts of the last step: those inside br_engine_layers, and the head's */
    const struct br_scale_trace *tr = comm ? &tr_layers : NULL;
    *out = (struct br_scale_cost){
        .tp = p->tp,
        .batch = batch,
        .layer_s = median(t_layers + 1, reps) / (nl > 0 ? nl : 1),
        .embed_s = p->first_stage ? median(t_embed + 1, reps) : 0.0,
        .head_s = p->last_stage ? median(t_head + 1, reps) : -1.0,
        .ag_n = tr && nl ? (double)tr->allgather_n / nl : 0,
        .ag_bytes = tr && nl ? (double)tr->allgather_bytes / nl : 0,
        .agd_n = tr && nl ? (double)tr->agd_n / nl : 0,
        .agd_bytes = tr && nl ? (double)tr->agd_bytes / nl : 0,
        .rs_n = tr && nl ? (double)tr->rs_n / nl : 0,
        .rs_bytes = tr && nl ? (double)tr->rs_bytes / nl : 0,
        .ar_n = tr && nl ? (double)tr->ar_n / nl : 0,
        .ar_bytes = tr && nl ? (double)tr->ar_bytes / nl : 0,
        .arm_n = tr && nl ? (double)tr->arm_n / nl : 0,
        .arm_bytes = tr && nl ? (double)tr->arm_bytes / nl : 0,
        .head_ag_n = (double)(tr_all.allgather_n - tr_layers.allgather_n),
        .head_ag_bytes = (double)(tr_all.allgather_bytes - tr_layers.allgather_bytes),
    };
done:
    free(t_layers);
    free(logits);
    free(ids);
    br_engine_destroy(&e);
    br_scale_loopback_destroy(&comm);
    return rc;
}

int br_scale_measure(const struct br_model *m, struct br_pool *pool, const int32_t *batches,
                     int n_batches, int reps, int32_t n_ctx, enum br_scale_clock clock,
                     struct br_scale_cost *out, struct br_err *err)
{
    if (reps < 1) return br_err_set(err, BR_E_INVALID, "reps must be at least 1");
    for (int i = 0; i < n_batches; i++) {
        if (batches[i] < 1 || batches[i] > 4096)
            return br_err_set(err, BR_E_INVALID, "batch size %d (1..4096)", batches[i]);
        int rc = measure_one(m, pool, batches[i], reps, n_ctx, clock, &out[i], err);
        if (rc) return br_err_prefix(err, rc, "batch %d: ", batches[i]);
    }
    return BR_OK;
}

void br_scale_cost_from_plan(struct br_scale_cost *k, const struct br_plan *p)
{
    struct br_coll c[BR_PLAN_MAX_COLLS];
    k->ag_n = k->ag_bytes = k->agd_n = k->agd_bytes = k->rs_n = k->rs_bytes = 0;
    k->ar_n = k->ar_bytes = k->arm_n = k->arm_bytes = 0;
    k->head_ag_n = k->head_ag_bytes = 0;
    int n = br_plan_layer_colls(p, k->batch, c);
    for (int i = 0; i < n; i++) {
        double b = (double)c[i].bytes;
        switch (c[i].kind) {
        case BR_COLL_ALLGATHER:
            k->ag_n++, k->ag_bytes += b;
            if (br_coll_direct_fits(BR_COLL_ALLGATHER, p->tp, b)) k->agd_n++, k->agd_bytes += b;
            break;
        case BR_COLL_REDUCE_SCATTER:
            k->rs_n++, k->rs_bytes += b;
            break;
        case BR_COLL_ALLREDUCE_I32:
            k->ar_n++, k->ar_bytes += b;
            break;
        default:
            k->arm_n++, k->arm_bytes += b;
            break;
        }
    }
    n = br_plan_head_colls(p, k->batch, c);
    for (int i = 0; i < n; i++) k->head_ag_n++, k->head_ag_bytes += (double)c[i].bytes;
}

double br_scale_node_factor(const struct br_scale_node *node, double here_gbs, int here_threads)
{
    if (!node || node->cores <= 0 || !(node->gbs > 0) || !(here_gbs > 0)) return 1.0;
    double bw = here_gbs / node->gbs, cores = (double)here_threads / node->cores;
    return bw > cores ? bw : cores;
}

struct stream_job {
    const double *a;
    size_t n;
    double sums[256];
};

static void stream_task(void *ctx, int task, int n_tasks)
{
    struct stream_job *j = ctx;
    size_t a = j->n * (size_t)task / (size_t)n_tasks,
           b = j->n * (size_t)(task + 1) / (size_t)n_tasks;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = a; i + 4 <= b; i += 4)
        s0 += j->a[i], s1 += j->a[i + 1], s2 += j->a[i + 2], s3 += j->a[i + 3];
    j->sums[task % 256] = s0 + s1 + s2 + s3;
}

double br_scale_stream_gbs(struct br_pool *pool, enum br_scale_clock clock)
{
    size_t n = (size_t)64 << 20; /* 512 MiB of doubles */
    double *a = malloc(n * sizeof *a);
    if (!a) return 0.0;
    for (size_t i = 0; i < n; i++) a[i] = (double)(i & 7);
    struct stream_job j = {a, n, {0}};
    int tasks = br_pool_threads(pool);
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now(clock, pool);
        br_pool_run(pool, stream_task, &j, tasks);
        double dt = now(clock, pool) - t0;
        double gbs = (double)(n * sizeof *a) / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    free(a);
    return best;
}

/* ---- projection ----------------------------------------------------------------------- */

double br_scale_allgather_s(const struct br_scale_net *n, int32_t ranks, double total_bytes)
{
    return br_coll_time(BR_COLL_ALLGATHER, ranks, total_bytes, n->alpha_s, n->bw_bytes_s);
}

double br_scale_bcast_s(const struct br_scale_net *n, int32_t ranks, double bytes)
{
    if (ranks <= 1) return 0.0;
    return ceil(log2((double)ranks)) * (n->alpha_s + bytes / n->bw_bytes_s);
}

static double share(const struct br_scale_env *env, int32_t ranks_busy)
{
    if (env->cores <= 0) return 1.0;
    double k = (double)ranks_busy * (env->threads > 0 ? env->threads : 1) / env->cores;
    return k > 1.0 ? k : 1.0;
}

void br_scale_project_stages(int32_t d, int32_t tp, int32_t pp, const int32_t *layers,
                             const struct br_scale_cost *cost, const struct br_scale_env *env,
                             struct br_scale_proj *out)
{
    const struct br_scale_net *n = &env->net;
    double B = cost->batch;
    double desc = 4.0 * (4.0 + 5.0 * (env->max_batch > 0 ? env->max_batch : 64));
    /* On a shared machine the ranks that compute compete for the cores; a waiting rank
     * yields its core (Open MPI yields in its waits when ranks outnumber cores, and the
     * serve loop's polled waits sleep). One step at a time keeps one stage, T ranks, busy;
     * with P steps in flight every stage is. */
    double f = env->compute_factor > 0 ? env->compute_factor : 1.0;
    double k1 = f * share(env, tp), kfull = f * share(env, tp * pp);
    /* the collectives of one layer, each as br_coll_time says (MPI's algorithm or the
     * direct one, sharding/plan.h), per call of its kind's average size; the all-gathers
     * that fit the direct path apart from those that do not */
    double a = n->alpha_s, bw = n->bw_bytes_s, layer_net = 0.0;
    if (tp > 1) {
        double agd_n = cost->agd_n, ag_n = cost->ag_n - agd_n;
        if (agd_n > 0)
            layer_net +=
                agd_n * br_coll_time(BR_COLL_ALLGATHER, tp, cost->agd_bytes / agd_n, a, bw);
        if (ag_n > 0)
            layer_net += ag_n * br_coll_time(BR_COLL_ALLGATHER, tp,
                                             (cost->ag_bytes - cost->agd_bytes) / ag_n, a, bw);
        if (cost->rs_n > 0)
            layer_net += cost->rs_n * br_coll_time(BR_COLL_REDUCE_SCATTER, tp,
                                                   cost->rs_bytes / cost->rs_n, a, bw);
        if (cost->ar_n > 0)
            layer_net += cost->ar_n * br_coll_time(BR_COLL_ALLREDUCE_I32, tp,
                                                   cost->ar_bytes / cost->ar_n, a, bw);
        if (cost->arm_n > 0)
            layer_net += cost->arm_n * br_coll_time(BR_COLL_ALLREDUCE_MAX, tp,
                                                    cost->arm_bytes / cost->arm_n, a, bw);
    }
    double ds = env->layout == BR_LAYOUT_SHARDED ? (double)d / tp : (double)d;
    double hop = pp > 1 ? 2.0 * n->alpha_s + (desc + 4.0 * B * ds) / n->bw_bytes_s : 0.0;
    double back = (pp > 1 ? tp : tp - 1) * (n->alpha_s + 8.0 * B / n->bw_bytes_s);
    /* the final norm's all-gathers (sharded), per call of their average size */
    double head_net =
        tp > 1 && cost->head_ag_n > 0
            ? cost->head_ag_n *
                  br_coll_time(BR_COLL_ALLGATHER, tp, cost->head_ag_bytes / cost->head_ag_n, a, bw)
            : 0.0;
    if (env->layer_net_s > 0) layer_net = env->layer_net_s;
    if (env->layer_net_s > 0) head_net = env->head_net_s > 0 ? env->head_net_s : 0.0;
    double head = cost->head_s > 0 ? cost->head_s : 0.0;
    double sum_compute = 0, sum_comm = 0, stage_max = 0;
    for (int32_t s = 0; s < pp; s++) {
        double comp =
            layers[s] * cost->layer_s + (s == 0 ? cost->embed_s : 0.0) + (s == pp - 1 ? head : 0.0);
        double net =
            br_scale_bcast_s(n, tp, desc) + layers[s] * layer_net + (s == pp - 1 ? head_net : 0.0);
        sum_compute += k1 * comp;
        sum_comm += net;
        double st = kfull * comp + net + (s < pp - 1 ? hop : back);
        if (st > stage_max) stage_max = st;
    }
    sum_comm += (pp - 1) * hop + back;
    out->compute_s = sum_compute;
    out->comm_s = sum_comm;
    out->latency_s = sum_compute + sum_comm;
    out->stage_max_s = stage_max;
    out->tok_s = B / out->latency_s;
    out->tok_s_pipelined = pp > 1 ? B / stage_max : out->tok_s;
}

int br_scale_project(const struct br_model_config *c, int32_t tp, int32_t pp,
                     const struct br_scale_cost *cost, const struct br_scale_env *env,
                     struct br_scale_proj *out, struct br_err *err)
{
    if (cost->tp != tp)
        return br_err_set(err, BR_E_INVALID, "cost measured at tp %d, layout has tp %d", cost->tp,
                          tp);
    struct br_plan *plan = NULL;
    int rc = br_plan_create_layout(c, tp, pp, env->layout, &plan, err);
    if (rc) return rc;
    int32_t *layers = malloc((size_t)pp * sizeof *layers);
    if (!layers) {
        br_plan_destroy(&plan);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    for (int32_t s = 0; s < pp; s++)
        layers[s] = plan->parts[s * tp].layer1 - plan->parts[s * tp].layer0;
    br_scale_project_stages(c->n_embd, tp, pp, layers, cost, env, out);
    free(layers);
    br_plan_destroy(&plan);
    return BR_OK;
}
