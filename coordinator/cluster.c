/*
 * Rank 0's side of the step protocol (see cluster.h and worker/step.h): issuing steps,
 * running rank 0's own share, and gathering the last stage's answers (logit slices, best
 * logits or sampling candidates) into one result per row.
 *
 * Buffers: the descriptor, rank 0's own logits slice and the gathering scratch are sized
 * for max_batch rows when the driver is created, and a sampled step's parameters live in
 * the scheduler's entry of that step in flight (its step state: br_step_ext_ints int32),
 * so a step allocates nothing; only the sampling candidates' records and the merging's
 * working memory, whose sizes depend on a step's parameters, grow (never shrink) when a
 * step needs more than any before it (tests/unit/alloc_test.c).
 */
#include "coordinator/cluster.h"

#include <stdlib.h>
#include <string.h>

#include "worker/sample.h"
#include "worker/step.h"

/* A growable scratch buffer. */
struct scratch {
    void *p;
    size_t cap; /* bytes */
};

/* Makes s hold at least n bytes; BR_E_NOMEM when it cannot. Contents are not kept. */
static int scratch_need(struct scratch *s, size_t n, struct br_err *err)
{
    if (n <= s->cap) return BR_OK;
    void *q = malloc(n ? n : 1);
    if (!q) return br_err_set(err, BR_E_NOMEM, "out of memory (%zu bytes for a step)", n);
    free(s->p);
    s->p = q;
    s->cap = n;
    return BR_OK;
}

struct br_cluster {
    struct br_engine *e;
    struct br_comm *comm;
    int tp;
    bool last; /* rank 0 is on the last stage (one stage) */
    int32_t mb;
    int32_t *desc; /* (br_step_desc_ints,) */
    /* (max_batch, slice) float: rank 0's logits slice when it is the last stage; one step
     * is then in flight at a time (it completes as it is issued) */
    struct scratch mine;
    /* gathering scratch */
    struct scratch best, part, slice;
    struct scratch *recs; /* (tp,) candidate records per TP rank */
    size_t *rec_bytes;    /* (tp,) */
    int32_t *cap;         /* (tp,) */
    struct br_sample_slice *sl;
    struct br_sample_ws ws; /* merging's working memory */
};

int br_cluster_create(struct br_engine *e, struct br_comm *comm, struct br_cluster **out,
                      struct br_err *err)
{
    struct br_cluster *c = calloc(1, sizeof *c);
    if (!c) return br_err_set(err, BR_E_NOMEM, "out of memory");
    c->e = e;
    c->comm = comm;
    c->tp = comm ? comm->tp : 1;
    c->last = !comm || comm->pp == 1;
    c->mb = br_engine_max_batch(e);
    c->desc = calloc(br_step_desc_ints(e), sizeof *c->desc);
    c->recs = calloc((size_t)c->tp, sizeof *c->recs);
    c->rec_bytes = calloc((size_t)c->tp, sizeof *c->rec_bytes);
    c->cap = calloc((size_t)c->tp, sizeof *c->cap);
    c->sl = calloc((size_t)c->tp, sizeof *c->sl);
    if (!c->desc || !c->recs || !c->rec_bytes || !c->cap || !c->sl) {
        br_cluster_destroy(&c);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    /* every per-step buffer, for max_batch rows */
    int32_t v0, v1, wmax = 0;
    for (int t = 0; t < c->tp; t++) {
        br_engine_vocab_slice(e, t, &v0, &v1);
        if (v1 - v0 > wmax) wmax = v1 - v0;
    }
    size_t rows = (size_t)c->mb, top1 = rows * sizeof(struct br_step_top1);
    int rc = scratch_need(&c->best, top1, err);
    if (!rc) rc = scratch_need(&c->part, top1, err);
    if (!rc && (!c->last || c->tp > 1))
        rc = scratch_need(&c->slice, rows * (size_t)wmax * sizeof(float), err);
    if (!rc && c->last) rc = scratch_need(&c->mine, rows * (size_t)wmax * sizeof(float), err);
    if (rc) {
        br_cluster_destroy(&c);
        return rc;
    }
    *out = c;
    return BR_OK;
}

void br_cluster_destroy(struct br_cluster **cp)
{
    struct br_cluster *c = cp ? *cp : NULL;
    if (!c) return;
    free(c->mine.p);
    for (int t = 0; c->recs && t < c->tp; t++) free(c->recs[t].p);
    free(c->recs), free(c->rec_bytes), free(c->cap), free(c->sl);
    free(c->best.p), free(c->part.p), free(c->slice.p);
    free(c->desc);
    br_sample_ws_free(&c->ws);
    free(c);
    *cp = NULL;
}

/* Sends a step down the pipeline (and runs this rank's share): its rows' next tokens come
 * back as mode says; SAMPLED rows are sampled on the last stage with sp[i] at (rseq[i],
 * rpos[i]) of the counter RNG, their parameters packed into step until it is collected. */
static int exec_issue(void *ctx, void *step, const struct br_batch *b, const int32_t *rows,
                      int32_t n_rows, enum br_sched_mode mode,
                      const struct br_sample_params *const *sp, const uint64_t *rseq,
                      const uint64_t *rpos, struct br_err *err)
{
    struct br_cluster *c = ctx;
    struct br_comm *comm = c->comm;
    int rc = br_engine_check(c->e, b, err);
    if (rc) return rc;
    if (n_rows < 0 || n_rows > b->n)
        return br_err_set(err, BR_E_INVALID, "%d rows for a step of %d tokens", n_rows, b->n);
    int32_t *x = mode == BR_SCHED_SAMPLED ? step : NULL;
    if (x && !br_step_can_sample(c->e, sp, n_rows))
        return br_err_set(err, BR_E_INVALID, "these rows cannot be sampled on the last stage");
    if (x) {
        memset(x, 0, br_step_ext_ints(c->e) * sizeof(int32_t));
        br_step_ext_pack(x, c->mb, n_rows, sp, rseq, rpos);
    }
    int32_t flags = x ? BR_STEP_SAMPLE : mode == BR_SCHED_FULL ? 0 : BR_STEP_TOP1;
    br_step_desc_pack(c->desc, c->mb, b, rows, n_rows, flags);
    if (comm && comm->tp > 1 &&
        ((rc = comm->ops->bcast(comm, c->desc, br_step_desc_ints(c->e) * 4)) ||
         (x && (rc = comm->ops->bcast(comm, x, br_step_ext_ints(c->e) * 4)))))
        return br_step_fail(err, comm, rc, "broadcast of the step failed");
    /* this rank's own logits slice when it is the last stage: the whole vocabulary alone */
    return br_step_run(c->e, comm, c->desc, x, c->last ? c->mine.p : NULL, err);
}

/* Receives n bytes from TP rank t of the last stage. */
static int recv_last(struct br_cluster *c, int t, void *buf, size_t n, const char *what,
                     struct br_err *err)
{
    struct br_comm *comm = c->comm;
    int src = (comm->pp - 1) * comm->tp + t;
    int rc = comm->ops->recv_from(comm, src, buf, n);
    return rc ? br_step_fail(err, comm, rc, what) : BR_OK;
}

/* The oldest step's results, issued sampled with the parameters x: res and row_rc
 * (n_rows,), BR_OK or the status with which that row's sampling failed (a NaN logit, say).
 * The return value is about the transport: BR_OK, or the error that ends the step. */
static int collect_sampled(struct br_cluster *c, const int32_t *x, int32_t n_rows,
                           struct br_sample_result *res, int *row_rc, struct br_err *err)
{
    int32_t mb = c->mb;
    int rc = BR_OK;
    for (int t = 0; t < c->tp && !rc && n_rows > 0; t++) {
        int32_t a, z;
        br_engine_vocab_slice(c->e, t, &a, &z);
        c->cap[t] = br_step_rec_cap(x, mb, n_rows, z - a);
        c->rec_bytes[t] = br_step_rec_bytes(c->cap[t], a, z);
        if ((rc = scratch_need(&c->recs[t], (size_t)n_rows * c->rec_bytes[t], err))) break;
        if (c->last && t == 0)
            br_step_records(c->e, x, mb, n_rows, c->mine.p, a, z, c->recs[t].p);
        else
            rc = recv_last(c, t, c->recs[t].p, (size_t)n_rows * c->rec_bytes[t],
                           "receiving candidates failed", err);
        c->sl[t].v0 = a, c->sl[t].v1 = z;
    }
    for (int32_t r = 0; r < n_rows && !rc; r++) {
        struct br_sample_params sp;
        struct br_sample_bias bias[BR_STEP_MAX_BIAS];
        uint64_t seq, pos;
        row_rc[r] = br_step_ext_row(x, mb, r, &sp, bias, &seq, &pos);
        for (int t = 0; t < c->tp && !row_rc[r]; t++) {
            const uint8_t *rec = (const uint8_t *)c->recs[t].p + (size_t)r * c->rec_bytes[t];
            struct br_step_rec_head h;
            memcpy(&h, rec, sizeof h);
            if (h.n < 0) {
                row_rc[r] = h.n;
            } else if (h.n < 1 || h.n > c->cap[t]) {
                row_rc[r] = BR_E_PROTOCOL;
            } else {
                c->sl[t].cands = (const struct br_cand *)(const void *)(rec + sizeof h);
                c->sl[t].n_cands = h.n;
                c->sl[t].stats =
                    (const struct br_sample_chunk_stat *)(const void *)(c->sl[t].cands + c->cap[t]);
            }
        }
        struct br_err serr = {{0}};
        if (!row_rc[r]) row_rc[r] = br_sample_merge(&sp, c->sl, c->tp, &c->ws, &res[r], &serr);
    }
    return rc;
}

/* The oldest step's results: logits (n_rows, vocab), or with logits NULL the greedy choice
 * top1 (n_rows,): the highest logit, ties to the lowest id. */
static int collect_rows(struct br_cluster *c, int32_t n_rows, float *logits, int32_t *top1,
                        struct br_err *err)
{
    int32_t vocab = br_engine_vocab(c->e);
    int rc = BR_OK;
    if (n_rows == 0) return BR_OK;
    if (!logits) {
        size_t n = (size_t)n_rows * sizeof(struct br_step_top1);
        struct br_step_top1 *best = c->best.p, *part = c->part.p;
        for (int t = 0; t < c->tp && !rc; t++) {
            int32_t a, z;
            br_engine_vocab_slice(c->e, t, &a, &z);
            if (c->last && t == 0)
                br_step_top1(c->mine.p, n_rows, z - a, a, part);
            else if ((rc = recv_last(c, t, part, n, "receiving results failed", err)))
                break;
            /* slices come in vocabulary order: a strictly greater value wins, so ties keep
             * the lowest id */
            for (int32_t i = 0; i < n_rows; i++)
                if (t == 0 || part[i].value > best[i].value) best[i] = part[i];
        }
        for (int32_t i = 0; i < n_rows && !rc; i++) top1[i] = best[i].id;
        return rc;
    }
    /* the last stage's logits slices: world ranks (pp - 1) * tp + t */
    for (int t = 0; t < c->tp && !rc; t++) {
        int32_t a, z;
        br_engine_vocab_slice(c->e, t, &a, &z);
        size_t w = (size_t)(z - a);
        const float *slice = c->mine.p;
        if (!(c->last && t == 0)) {
            size_t n = (size_t)n_rows * w * sizeof(float);
            if ((rc = recv_last(c, t, c->slice.p, n, "receiving logits failed", err))) break;
            slice = c->slice.p;
        }
        for (int32_t i = 0; i < n_rows; i++)
            memcpy(logits + (size_t)i * vocab + a, slice + (size_t)i * w, w * sizeof(float));
    }
    return rc;
}

int br_cluster_stop(struct br_cluster *c, struct br_err *err)
{
    struct br_comm *comm = c->comm;
    if (!comm || (comm->tp == 1 && comm->pp == 1)) return BR_OK;
    size_t n = br_step_desc_ints(c->e);
    memset(c->desc, 0, n * sizeof *c->desc);
    c->desc[1] = BR_STEP_STOP;
    int rc = BR_OK;
    if (comm->tp > 1) rc = comm->ops->bcast(comm, c->desc, n * 4);
    if (!rc && comm->pp > 1) rc = comm->ops->send_next(comm, c->desc, n * 4);
    return rc ? br_step_fail(err, comm, rc, "stopping the ranks failed") : BR_OK;
}

/* ---- the scheduler's executor ---- */

static bool exec_can_sample(void *ctx, const struct br_sample_params *const *sp, int32_t n)
{
    return br_step_can_sample(((struct br_cluster *)ctx)->e, sp, n);
}

static int exec_collect(void *ctx, void *step, int32_t n_rows, enum br_sched_mode mode,
                        float *logits, int32_t *top1, struct br_sample_result *res, int *row_rc,
                        struct br_err *err)
{
    if (mode == BR_SCHED_SAMPLED) return collect_sampled(ctx, step, n_rows, res, row_rc, err);
    return collect_rows(ctx, n_rows, mode == BR_SCHED_FULL ? logits : NULL, top1, err);
}

void br_cluster_executor(struct br_cluster *c, struct br_executor *ex)
{
    int depth = c->comm ? c->comm->pp : 1; /* one step per stage in flight keeps every stage busy */
    *ex = (struct br_executor){
        .ctx = c,
        .max_batch = br_engine_max_batch(c->e),
        .n_seq = br_engine_n_seq(c->e),
        .n_ctx = br_engine_n_ctx(c->e),
        .n_blocks = br_engine_free_blocks(c->e),
        .vocab = br_engine_vocab(c->e),
        .depth = depth > BR_SCHED_MAX_INFLIGHT ? BR_SCHED_MAX_INFLIGHT : depth,
        .step_bytes = br_step_ext_ints(c->e) * sizeof(int32_t),
        .can_sample = exec_can_sample,
        .issue = exec_issue,
        .collect = exec_collect,
    };
}
