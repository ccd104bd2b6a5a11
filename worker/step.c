/*
 * The step protocol (see step.h). The descriptor is a fixed-size int32 array so that it can
 * be broadcast and sent without a length exchange:
 *   [0] n tokens  [1] flags  [2] n_rows  [3] n_free
 *   then tokens[max_batch], pos[max_batch], seq[max_batch], rows[max_batch],
 *   free_seqs[max_batch] (sequence slots released before the step).
 * Per step, stage s > 0 receives the descriptor and then the residual slice (n, dl) from
 * the same TP rank of stage s - 1; the last stage sends (n_rows, v1 - v0) logits to rank 0,
 * or 8 bytes per row (BR_STEP_TOP1), or per row its sampling candidates (BR_STEP_SAMPLE).
 *
 * A sampled step's parameters follow its descriptor as a second fixed-size int32 array
 * (broadcast and forwarded the same way, only when BR_STEP_SAMPLE is set):
 *   [0] bias entries in all, then per row EXT_ROW values: temperature, top_k, top_p,
 *   min_p, cand_cap, seed (low, high), seq (low, high), pos (low, high), first bias entry,
 *   bias entries, no_logprob (0 or 1), floats as their bits; then BR_STEP_MAX_BIAS
 *   (id, bias) pairs.
 * A last-stage rank answers each row of a sampled step with one record of fixed size
 * (for its slice width w and the step's rows): n_cands (or a negative status), a pad,
 * cap candidates (cap = the most any row may produce from w tokens) and its chunk
 * statistics, so that rank 0 knows every message's size from the descriptor alone.
 */
#include "worker/step.h"

#include <stdlib.h>
#include <string.h>

#include "worker/sample.h"
#include "sharding/plan.h"

/* (value, id) of the best logit in each row of a (n_rows, w) slice starting at id v0. */
void br_step_top1(const float *logits, int32_t n_rows, int32_t w, int32_t v0,
                  struct br_step_top1 *out)
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
int br_step_fail(struct br_err *err, const struct br_comm *c, int rc, const char *what)
{
    if (c && c->why[0]) return br_err_set(err, rc, "%s: %s", what, c->why);
    return br_err_set(err, rc, "%s", what);
}

size_t br_step_desc_ints(const struct br_engine *e)
{
    return HDR + 5 * (size_t)br_engine_max_batch(e);
}

void br_step_desc_pack(int32_t *d, int32_t mb, const struct br_batch *b, const int32_t *rows,
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

/* ---- sampled steps: the parameters extension and the candidate records ---- */

enum { EXT_ROW = 14 };

size_t br_step_ext_ints(const struct br_engine *e)
{
    return 1 + EXT_ROW * (size_t)br_engine_max_batch(e) + 2 * (size_t)BR_STEP_MAX_BIAS;
}

static int32_t f2i(float f)
{
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i;
}

static float i2f(int32_t i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

static void put64(int32_t *d, uint64_t v)
{
    d[0] = (int32_t)(uint32_t)v;
    d[1] = (int32_t)(uint32_t)(v >> 32);
}

static uint64_t get64(const int32_t *d)
{
    return (uint64_t)(uint32_t)d[0] | (uint64_t)(uint32_t)d[1] << 32;
}

bool br_step_can_sample(const struct br_engine *e, const struct br_sample_params *const *sp,
                        int32_t n_rows)
{
    int32_t n_bias = 0;
    if (n_rows > br_engine_max_batch(e)) return false;
    for (int32_t r = 0; r < n_rows; r++) {
        const struct br_sample_params *p = sp[r];
        if (p->repeat_penalty != 1.0f || p->presence_penalty != 0 || p->frequency_penalty != 0)
            return false; /* penalties need the token history */
        n_bias += p->n_bias;
        if (n_bias > BR_STEP_MAX_BIAS) return false;
    }
    return true;
}

void br_step_ext_pack(int32_t *x, int32_t mb, int32_t n_rows,
                      const struct br_sample_params *const *sp, const uint64_t *seq,
                      const uint64_t *pos)
{
    int32_t nb = 0;
    int32_t *pool = x + 1 + (size_t)EXT_ROW * (size_t)mb;
    for (int32_t r = 0; r < n_rows; r++) {
        const struct br_sample_params *p = sp[r];
        int32_t *o = x + 1 + (size_t)EXT_ROW * (size_t)r;
        o[0] = f2i(p->temperature);
        o[1] = p->top_k;
        o[2] = f2i(p->top_p);
        o[3] = f2i(p->min_p);
        o[4] = p->cand_cap;
        put64(o + 5, p->seed);
        put64(o + 7, seq[r]);
        put64(o + 9, pos[r]);
        o[11] = nb;
        o[12] = p->n_bias;
        o[13] = p->no_logprob != 0;
        for (int32_t k = 0; k < p->n_bias; k++, nb++) {
            pool[2 * nb] = p->bias[k].id;
            pool[2 * nb + 1] = f2i(p->bias[k].bias);
        }
    }
    x[0] = nb;
}

/* Row r's parameters; bias (BR_STEP_MAX_BIAS,) receives its bias entries. Returns
 * BR_E_PROTOCOL for entries outside the pool. */
int br_step_ext_row(const int32_t *x, int32_t mb, int32_t r, struct br_sample_params *p,
                    struct br_sample_bias *bias, uint64_t *seq, uint64_t *pos)
{
    const int32_t *o = x + 1 + (size_t)EXT_ROW * (size_t)r;
    const int32_t *pool = x + 1 + (size_t)EXT_ROW * (size_t)mb;
    br_sample_params_default(p);
    p->temperature = i2f(o[0]);
    p->top_k = o[1];
    p->top_p = i2f(o[2]);
    p->min_p = i2f(o[3]);
    p->cand_cap = o[4];
    p->seed = get64(o + 5);
    *seq = get64(o + 7);
    *pos = get64(o + 9);
    int32_t b0 = o[11], nb = o[12];
    if (b0 < 0 || nb < 0 || nb > BR_STEP_MAX_BIAS - b0 || (o[13] != 0 && o[13] != 1))
        return BR_E_PROTOCOL;
    p->no_logprob = o[13];
    for (int32_t k = 0; k < nb; k++)
        bias[k] = (struct br_sample_bias){pool[2 * (b0 + k)], i2f(pool[2 * (b0 + k) + 1])};
    p->bias = nb ? bias : NULL;
    p->n_bias = nb;
    return BR_OK;
}

/* Candidates per record for a slice of width w: the most any row may produce. */
int32_t br_step_rec_cap(const int32_t *x, int32_t mb, int32_t n_rows, int32_t w)
{
    int32_t cap = 1;
    struct br_sample_bias bias[BR_STEP_MAX_BIAS];
    for (int32_t r = 0; r < n_rows; r++) {
        struct br_sample_params p;
        uint64_t seq, pos;
        if (br_step_ext_row(x, mb, r, &p, bias, &seq, &pos)) continue;
        int32_t c = br_sample_max_candidates(&p);
        if (c > w) c = w;
        if (c > cap) cap = c;
    }
    return cap;
}

size_t br_step_rec_bytes(int32_t cap, int32_t v0, int32_t v1)
{
    return sizeof(struct br_step_rec_head) + (size_t)cap * sizeof(struct br_cand) +
           (size_t)br_sample_n_chunks(v0, v1) * sizeof(struct br_sample_chunk_stat);
}

struct rec_job {
    const int32_t *x;
    int32_t mb, n_rows, v0, v1, cap;
    const float *logits;
    void *out;
    size_t rb;
};

/* Row r's record: its candidates and softmax statistics, or its failure status. */
static void make_record(void *ctx, int r, int n_tasks)
{
    (void)n_tasks;
    const struct rec_job *j = ctx;
    int32_t w = j->v1 - j->v0;
    uint8_t *rec = (uint8_t *)j->out + (size_t)r * j->rb;
    struct br_step_rec_head h = {0, 0};
    struct br_sample_params p;
    struct br_sample_bias bias[BR_STEP_MAX_BIAS];
    uint64_t seq, pos;
    struct br_err err = {{0}};
    struct br_cand *cands = (struct br_cand *)(void *)(rec + sizeof h);
    struct br_sample_chunk_stat *stats = (struct br_sample_chunk_stat *)(void *)(cands + j->cap);
    h.n = br_step_ext_row(j->x, j->mb, r, &p, bias, &seq, &pos);
    if (h.n == BR_OK)
        h.n = br_sample_candidates(&p, j->logits + (size_t)r * (size_t)w, j->v0, j->v1, NULL, 0,
                                   seq, pos, cands, j->cap, stats, &err);
    memcpy(rec, &h, sizeof h);
}

/* A slice's records for the n_rows rows of logits (n_rows, v1 - v0) into out
 * (n_rows * rec_bytes,). A row whose sampling fails carries the status instead. Rows are
 * independent, so they spread over the engine's pool (the thread that runs the steps
 * drives it here too). */
void br_step_records(struct br_engine *e, const int32_t *x, int32_t mb, int32_t n_rows,
                     const float *logits, int32_t v0, int32_t v1, void *out)
{
    int32_t cap = br_step_rec_cap(x, mb, n_rows, v1 - v0);
    struct rec_job j = {x, mb, n_rows, v0, v1, cap, logits, out, br_step_rec_bytes(cap, v0, v1)};
    br_pool_run(br_engine_pool(e), make_record, &j, n_rows);
}

int br_step_run(struct br_engine *e, struct br_comm *c, int32_t *d, int32_t *x, float *logits,
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
        if ((rc = c->ops->send_next(c, d, br_step_desc_ints(e) * 4)) ||
            ((d[1] & BR_STEP_SAMPLE) && (rc = c->ops->send_next(c, x, br_step_ext_ints(e) * 4))) ||
            (rc = c->ops->send_next(c, br_engine_residual(e), bytes)))
            return br_step_fail(err, c, rc, "sending to the next stage failed");
        return BR_OK;
    }
    return br_engine_head(e, &b, rows, n_rows, logits, err);
}

/* ---- the ranks other than 0 ---- */

int br_step_follow(struct br_engine *e, struct br_comm *c, struct br_err *err)
{
    int32_t *d = malloc(br_step_desc_ints(e) * sizeof *d);
    int32_t v0, v1;
    br_engine_vocab_slice(e, c->tp_rank, &v0, &v1);
    int last = c->pp_rank == c->pp - 1;
    size_t mb = (size_t)br_engine_max_batch(e);
    /* two result buffers: one may still be on its way to rank 0 while the next step's
     * results are written to the other */
    float *logits[2] = {NULL, NULL};
    struct br_step_top1 *t1[2] = {NULL, NULL};
    void *recs[2] = {NULL, NULL}; /* candidate records of sampled steps */
    size_t recs_cap[2] = {0, 0};
    int32_t *x = malloc(br_step_ext_ints(e) * sizeof *x);
    void *pending[2] = {NULL, NULL};
    int cur = 0, rc = BR_OK;
    for (int k = 0; k < 2 && last; k++) {
        logits[k] = malloc(mb * (size_t)(v1 - v0) * sizeof(float));
        t1[k] = malloc(mb * sizeof(struct br_step_top1));
    }
    if (!d || !x || (last && (!logits[0] || !logits[1] || !t1[0] || !t1[1]))) {
        rc = br_err_set(err, BR_E_NOMEM, "out of memory");
        goto done;
    }
    for (;;) {
        c->idle = 1; /* waiting for the next step, possibly for long */
        if (c->pp_rank == 0)
            rc = c->ops->bcast(c, d, br_step_desc_ints(e) * 4);
        else
            rc = c->ops->recv_prev(c, d, br_step_desc_ints(e) * 4);
        c->idle = 0;
        if (rc) {
            rc =
                br_step_fail(err, c, rc, "lost contact with the previous stage or the coordinator");
            break;
        }
        if (d[1] & BR_STEP_STOP) {
            if (c->pp_rank < c->pp - 1 && (rc = c->ops->send_next(c, d, br_step_desc_ints(e) * 4)))
                rc = br_step_fail(err, c, rc, "forwarding stop failed");
            break;
        }
        if ((d[1] & BR_STEP_SAMPLE) &&
            (rc = c->pp_rank == 0 ? c->ops->bcast(c, x, br_step_ext_ints(e) * 4)
                                  : c->ops->recv_prev(c, x, br_step_ext_ints(e) * 4))) {
            rc =
                br_step_fail(err, c, rc, "lost contact with the previous stage or the coordinator");
            break;
        }
        if (c->pp_rank > 0) {
            size_t bytes = (size_t)d[0] * (size_t)br_engine_residual_width(e) * sizeof(float);
            if (d[0] < 1 || d[0] > br_engine_max_batch(e)) {
                rc = br_err_set(err, BR_E_PROTOCOL, "bad step descriptor");
                break;
            }
            if ((rc = c->ops->recv_prev(c, br_engine_residual(e), bytes))) {
                rc = br_step_fail(err, c, rc, "receiving the residual failed");
                break;
            }
        }
        if (last && (rc = c->ops->wait_root(c, &pending[cur]))) {
            rc = br_step_fail(err, c, rc, "sending results to rank 0 failed");
            break;
        }
        if ((rc = br_step_run(e, c, d, x, last ? logits[cur] : NULL, err))) break;
        if (last && d[2] > 0) {
            if (d[1] & BR_STEP_SAMPLE) {
                int32_t mbi = (int32_t)mb;
                size_t bytes = (size_t)d[2] *
                               br_step_rec_bytes(br_step_rec_cap(x, mbi, d[2], v1 - v0), v0, v1);
                if (bytes > recs_cap[cur]) {
                    void *nr = realloc(recs[cur], bytes);
                    if (!nr) {
                        rc = br_err_set(err, BR_E_NOMEM, "out of memory");
                        break;
                    }
                    recs[cur] = nr, recs_cap[cur] = bytes;
                }
                br_step_records(e, x, mbi, d[2], logits[cur], v0, v1, recs[cur]);
                rc = c->ops->send_root(c, recs[cur], bytes, &pending[cur]);
            } else if (d[1] & BR_STEP_TOP1) {
                br_step_top1(logits[cur], d[2], v1 - v0, v0, t1[cur]);
                rc = c->ops->send_root(c, t1[cur], (size_t)d[2] * sizeof(struct br_step_top1),
                                       &pending[cur]);
            } else {
                rc = c->ops->send_root(c, logits[cur],
                                       (size_t)d[2] * (size_t)(v1 - v0) * sizeof(float),
                                       &pending[cur]);
            }
            if (rc) {
                rc = br_step_fail(err, c, rc, "sending results to rank 0 failed");
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
        free(recs[k]);
    }
    free(x);
    free(d);
    return rc;
}
