/*
 * Step protocol (see dist.h). The descriptor is a fixed-size int32 array so that it can
 * be broadcast and sent without a length exchange:
 *   [0] n tokens  [1] flags  [2] n_rows  [3] n_free
 *   then tokens[max_batch], pos[max_batch], seq[max_batch], rows[max_batch],
 *   free_seqs[max_batch] (sequence slots released before the step).
 * Per step, stage s > 0 receives the descriptor and then the residual slice (n, dl) from
 * the same TP rank of stage s - 1; the last stage sends (n_rows, v1 - v0) logits to rank 0.
 */
#include "worker/dist.h"

#include <stdlib.h>
#include <string.h>

#include "sharding/plan.h"

enum { DESC_STOP = 1, DESC_TOP1 = 2 };

/* (value, id) of the best logit in each row of a (n_rows, w) slice starting at id v0. */
struct top1 {
    float value;
    int32_t id;
};

static void slice_top1(const float *logits, int32_t n_rows, int32_t w, int32_t v0, struct top1 *out)
{
    for (int32_t i = 0; i < n_rows; i++) {
        const float *row = logits + (size_t)i * (size_t)w;
        int32_t best = 0;
        for (int32_t v = 1; v < w; v++)
            if (row[v] > row[best]) best = v;
        out[i].value = row[best];
        out[i].id = v0 + best;
    }
}
enum { HDR = 4 };

/* A failed operation's error: what failed, and why as the transport saw it (naming the
 * peer rank and host when it knows them). */
static int comm_fail(struct br_err *err, const struct br_comm *c, int rc, const char *what)
{
    if (c && c->why[0]) return br_err_set(err, rc, "%s: %s", what, c->why);
    return br_err_set(err, rc, "%s", what);
}

static size_t desc_ints(const struct br_engine *e)
{
    return HDR + 5 * (size_t)br_engine_max_batch(e);
}

static void desc_pack(int32_t *d, int32_t mb, const struct br_batch *b, const int32_t *rows,
                      int32_t n_rows, int32_t flags)
{
    d[0] = b ? b->n : 0;
    d[1] = flags;
    d[2] = n_rows;
    d[3] = b ? b->n_free : 0;
    if (!b) return;
    memcpy(d + HDR, b->tokens, (size_t)b->n * 4);
    memcpy(d + HDR + mb, b->pos, (size_t)b->n * 4);
    memcpy(d + HDR + 2 * mb, b->seq, (size_t)b->n * 4);
    memcpy(d + HDR + 3 * mb, rows, (size_t)n_rows * 4);
    if (b->n_free > 0) memcpy(d + HDR + 4 * mb, b->free_seqs, (size_t)b->n_free * 4);
}

/* Runs this rank's share of the step described by d; forwards it down the pipeline. */
static int run_desc(struct br_engine *e, struct br_comm *c, int32_t *d, float *logits,
                    struct br_err *err)
{
    int32_t mb = br_engine_max_batch(e);
    struct br_batch b = {d[0], d + HDR, d + HDR + mb, d + HDR + 2 * mb, d[3], d + HDR + 4 * mb};
    const int32_t *rows = d + HDR + 3 * mb;
    int32_t n_rows = d[2];
    int rc = BR_OK;
    int first = c ? c->pp_rank == 0 : 1, last = c ? c->pp_rank == c->pp - 1 : 1;
    if (b.n < 1 || b.n > mb || n_rows < 0 || n_rows > b.n || b.n_free < 0 || b.n_free > mb)
        return br_err_set(err, BR_E_PROTOCOL, "bad step descriptor (%d tokens, %d rows)", b.n,
                          n_rows);
    if (first && (rc = br_engine_embed(e, &b, err))) return rc;
    if ((rc = br_engine_layers(e, &b, err))) return rc;
    if (!last) {
        size_t bytes = (size_t)b.n * (size_t)br_engine_residual_width(e) * sizeof(float);
        if ((rc = c->ops->send_next(c, d, desc_ints(e) * 4)) ||
            (rc = c->ops->send_next(c, br_engine_residual(e), bytes)))
            return comm_fail(err, c, rc, "sending to the next stage failed");
        return BR_OK;
    }
    return br_engine_head(e, &b, rows, n_rows, logits, err);
}

int br_dist_issue(struct br_dist *q, struct br_engine *e, struct br_comm *c,
                  const struct br_batch *b, const int32_t *rows, int32_t n_rows, int want_logits,
                  struct br_err *err)
{
    int rc = br_engine_check(e, b, err);
    if (rc) return rc;
    if (q->count == BR_DIST_MAX_INFLIGHT)
        return br_err_set(err, BR_E_BUSY, "too many steps in flight");
    int32_t mb = br_engine_max_batch(e);
    int32_t *d = malloc(desc_ints(e) * sizeof *d);
    if (!d) return br_err_set(err, BR_E_NOMEM, "out of memory");
    desc_pack(d, mb, b, rows, n_rows, want_logits ? 0 : DESC_TOP1);
    int last = !c || c->pp == 1;
    float *mine = NULL;
    if (c && c->tp > 1 && (rc = c->ops->bcast(c, d, desc_ints(e) * 4))) {
        free(d);
        return comm_fail(err, c, rc, "broadcast of the step failed");
    }
    if (last) {
        /* this rank's own logits slice: the whole vocabulary when alone */
        int32_t v0, v1;
        br_engine_vocab_slice(e, 0, &v0, &v1);
        mine = malloc((size_t)(n_rows ? n_rows : 1) * (size_t)(v1 - v0) * sizeof *mine);
        if (!mine) {
            free(d);
            return br_err_set(err, BR_E_NOMEM, "out of memory");
        }
    }
    rc = run_desc(e, c, d, mine, err);
    free(d);
    if (rc) {
        free(mine);
        return rc;
    }
    struct br_dist_pending *p = &q->ring[(q->head + q->count) % BR_DIST_MAX_INFLIGHT];
    p->n_rows = n_rows;
    p->want_logits = want_logits;
    p->mine = mine;
    q->count++;
    return BR_OK;
}

int br_dist_collect(struct br_dist *q, struct br_engine *e, struct br_comm *c, float *logits,
                    int32_t *top1, struct br_err *err)
{
    if (q->count == 0) return br_err_set(err, BR_E_INVALID, "no step in flight");
    struct br_dist_pending p = q->ring[q->head];
    q->head = (q->head + 1) % BR_DIST_MAX_INFLIGHT;
    q->count--;
    int32_t n_rows = p.n_rows;
    int last = !c || c->pp == 1;
    int tp = c ? c->tp : 1;
    int32_t vocab = br_engine_vocab(e);
    int rc = BR_OK;
    float *slice = NULL;
    struct top1 *best = NULL, *part = NULL;
    if (n_rows == 0) goto done;
    if (!p.want_logits) {
        best = malloc((size_t)n_rows * sizeof *best);
        part = malloc((size_t)n_rows * sizeof *part);
        if (!best || !part) {
            rc = br_err_set(err, BR_E_NOMEM, "out of memory");
            goto done;
        }
        for (int t = 0; t < tp && !rc; t++) {
            int32_t a, z;
            br_engine_vocab_slice(e, t, &a, &z);
            if (last && t == 0) {
                slice_top1(p.mine, n_rows, z - a, a, part);
            } else {
                int src = (c->pp - 1) * c->tp + t;
                if ((rc = c->ops->recv_from(c, src, part, (size_t)n_rows * sizeof *part))) {
                    rc = comm_fail(err, c, rc, "receiving results failed");
                    break;
                }
            }
            /* slices come in vocabulary order: a strictly greater value wins, so ties keep
             * the lowest id */
            for (int32_t i = 0; i < n_rows; i++)
                if (t == 0 || part[i].value > best[i].value) best[i] = part[i];
        }
        for (int32_t i = 0; i < n_rows && !rc; i++) top1[i] = best[i].id;
        goto done;
    }
    /* the last stage's logits slices: world ranks (pp - 1) * tp + t */
    slice = malloc((size_t)n_rows * (size_t)vocab * sizeof *slice);
    if (!slice) {
        rc = br_err_set(err, BR_E_NOMEM, "out of memory");
        goto done;
    }
    for (int t = 0; t < tp && !rc; t++) {
        int32_t a, z;
        br_engine_vocab_slice(e, t, &a, &z);
        size_t w = (size_t)(z - a);
        if (last && t == 0) {
            memcpy(slice, p.mine, (size_t)n_rows * w * sizeof(float));
        } else {
            int src = (c->pp - 1) * c->tp + t;
            if ((rc = c->ops->recv_from(c, src, slice, (size_t)n_rows * w * sizeof(float))))
                rc = comm_fail(err, c, rc, "receiving logits failed");
        }
        for (int32_t i = 0; i < n_rows && !rc; i++)
            memcpy(logits + (size_t)i * vocab + a, slice + (size_t)i * w, w * sizeof(float));
    }
done:
    free(slice);
    free(best);
    free(part);
    free(p.mine);
    return rc;
}

void br_dist_clear(struct br_dist *q)
{
    while (q->count > 0) {
        free(q->ring[q->head].mine);
        q->head = (q->head + 1) % BR_DIST_MAX_INFLIGHT;
        q->count--;
    }
}

int br_dist_step(struct br_engine *e, struct br_comm *c, const struct br_batch *b,
                 const int32_t *rows, int32_t n_rows, float *logits, int32_t *top1,
                 struct br_err *err)
{
    struct br_dist q = {0};
    int rc = br_dist_issue(&q, e, c, b, rows, n_rows, logits != NULL, err);
    if (!rc) rc = br_dist_collect(&q, e, c, logits, top1, err);
    br_dist_clear(&q);
    return rc;
}

int br_dist_stop(struct br_engine *e, struct br_comm *c, struct br_err *err)
{
    if (!c || (c->tp == 1 && c->pp == 1)) return BR_OK;
    int32_t *d = calloc(desc_ints(e), sizeof *d);
    if (!d) return br_err_set(err, BR_E_NOMEM, "out of memory");
    d[1] = DESC_STOP;
    int rc = BR_OK;
    if (c->tp > 1) rc = c->ops->bcast(c, d, desc_ints(e) * 4);
    if (!rc && c->pp > 1) rc = c->ops->send_next(c, d, desc_ints(e) * 4);
    free(d);
    return rc ? comm_fail(err, c, rc, "stopping the ranks failed") : BR_OK;
}

int br_dist_serve(struct br_engine *e, struct br_comm *c, struct br_err *err)
{
    int32_t *d = malloc(desc_ints(e) * sizeof *d);
    int32_t v0, v1;
    br_engine_vocab_slice(e, c->tp_rank, &v0, &v1);
    int last = c->pp_rank == c->pp - 1;
    size_t mb = (size_t)br_engine_max_batch(e);
    /* two result buffers: one may still be on its way to rank 0 while the next step's
     * results are written to the other */
    float *logits[2] = {NULL, NULL};
    struct top1 *t1[2] = {NULL, NULL};
    void *pending[2] = {NULL, NULL};
    int cur = 0, rc = BR_OK;
    for (int k = 0; k < 2 && last; k++) {
        logits[k] = malloc(mb * (size_t)(v1 - v0) * sizeof(float));
        t1[k] = malloc(mb * sizeof(struct top1));
    }
    if (!d || (last && (!logits[0] || !logits[1] || !t1[0] || !t1[1]))) {
        rc = br_err_set(err, BR_E_NOMEM, "out of memory");
        goto done;
    }
    for (;;) {
        if (c->pp_rank == 0)
            rc = c->ops->bcast(c, d, desc_ints(e) * 4);
        else
            rc = c->ops->recv_prev(c, d, desc_ints(e) * 4);
        if (rc) {
            rc = comm_fail(err, c, rc, "lost contact with the previous stage or the coordinator");
            break;
        }
        if (d[1] & DESC_STOP) {
            if (c->pp_rank < c->pp - 1 && (rc = c->ops->send_next(c, d, desc_ints(e) * 4)))
                rc = comm_fail(err, c, rc, "forwarding stop failed");
            break;
        }
        if (c->pp_rank > 0) {
            size_t bytes = (size_t)d[0] * (size_t)br_engine_residual_width(e) * sizeof(float);
            if (d[0] < 1 || d[0] > br_engine_max_batch(e)) {
                rc = br_err_set(err, BR_E_PROTOCOL, "bad step descriptor");
                break;
            }
            if ((rc = c->ops->recv_prev(c, br_engine_residual(e), bytes))) {
                rc = comm_fail(err, c, rc, "receiving the residual failed");
                break;
            }
        }
        if (last && (rc = c->ops->wait_root(c, &pending[cur]))) {
            rc = comm_fail(err, c, rc, "sending results to rank 0 failed");
            break;
        }
        if ((rc = run_desc(e, c, d, last ? logits[cur] : NULL, err))) break;
        if (last && d[2] > 0) {
            if (d[1] & DESC_TOP1) {
                slice_top1(logits[cur], d[2], v1 - v0, v0, t1[cur]);
                rc = c->ops->send_root(c, t1[cur], (size_t)d[2] * sizeof(struct top1),
                                       &pending[cur]);
            } else {
                rc = c->ops->send_root(c, logits[cur],
                                       (size_t)d[2] * (size_t)(v1 - v0) * sizeof(float),
                                       &pending[cur]);
            }
            if (rc) {
                rc = comm_fail(err, c, rc, "sending results to rank 0 failed");
                break;
            }
            cur ^= 1;
        }
    }
done:
    for (int k = 0; k < 2; k++) {
        if (pending[k]) c->ops->wait_root(c, &pending[k]);
        free(logits[k]);
        free(t1[k]);
    }
    free(d);
    return rc;
}
