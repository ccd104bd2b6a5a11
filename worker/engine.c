/*
 * Forward pass of one part of the model (see engine.h, docs/FORMATS.md §4, and
 * docs/ARCHITECTURE.md, "Tensor parallelism").
 *
 * Per layer, for a batch of T tokens, on a rank holding KV heads [kv0, kv1) (and their
 * query heads) and FFN rows [ff0, ff1), in one of the plan's two layouts (sharding/plan.h):
 *
 * replicated residual (every rank holds all d columns), 4 collectives:
 *   attn_norm of the whole residual, here -> int8 -> Q/K/V of its heads; RoPE; f16 KV
 *   cache; attention
 *   attn_sub_norm: absmax and per-head sums of squares packed per token, each slot written
 *     by its owner and 0 elsewhere -> max-all-reduce (exact) -> int8 of its heads' outputs
 *   O partial sums over its columns (all d rows) -> int32 sum-all-reduce -> residual
 *   ffn_norm as attn_norm; gate/up of its FFN rows; act(g) * u
 *   ffn_sub_norm statistics as attn_sub_norm (per 256-chunk) -> down partial sums ->
 *     all-reduce
 * sharded residual (rank holds columns [d0, d1)), 8 collectives:
 *   attn_norm statistics of its slice -> all-gather -> int8 slice -> all-gather; the rest
 *   as above, but sub-norm statistics all-gathered and the partial sums reduce-scattered
 *   to each rank's slice.
 * Statistics are always summed in chunk order (rank order = chunk order), and integer
 * partial sums are exact, so every layout gives the single-process bits. With one rank the
 * collectives are copies and the code is the single-process reference.
 *
 * Work inside a rank is split over output rows (projections, head) and heads (attention),
 * never over a reduction, so results do not depend on the thread count.
 */
#include "worker/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/fp.h"
#include "kernels/attn.h"
#include "kernels/bigmem.h"
#include "kernels/fhead.h"
#include "kernels/kset.h"
#include "kernels/ops.h"
#include "kernels/q6k.h"
#include "kernels/q8.h"
#include "kernels/tune.h"
#include "sharding/plan.h"
#include "sharding/types.h"
#include "worker/kvcache.h"

struct layer_cache {
    uint16_t *k; /* (kv_blocks * BR_KV_BLOCK, kdl) f16 */
    uint16_t *v; /* (kv_blocks * BR_KV_BLOCK, vdl) f16 */
};

/* What every rank of the TP group holds, for laying out collectives. */
struct group_dims {
    int32_t d0, dl;   /* residual slice */
    int32_t ff0, ffl; /* FFN rows */
    int32_t qh0, qhl; /* query heads */
    int32_t v0, v1;   /* vocabulary rows on the last stage */
};

struct br_engine {
    const struct br_model *m;
    const struct br_kernel_set *ks; /* every kernel call goes through this set */
    struct br_pool *pool;
    struct br_comm *comm;
    int tp, tp_rank;
    int repl;  /* TP > 1 with the residual replicated (BR_LAYOUT_REPLICATED) */
    int whole; /* the residual is whole here: one rank, or replicated */
    int32_t n_ctx, max_batch, n_seq;
    /* local sizes */
    int32_t g;           /* query heads per KV head */
    int32_t attn_chunks; /* grouped attention: token strides per KV head (g), 0 = per head */
    int32_t dl, qhl, kvl, qdl, kdl, vdl, odl, ffl, vl;
    size_t kpad_d, kpad_o, kpad_f;       /* padded widths of the int8 inputs */
    struct group_dims *grp;              /* (tp,) */
    struct layer_cache *cache;           /* (n_layer,), only own layers allocated */
    size_t cache_k_bytes, cache_v_bytes; /* of each layer's k and v (kernels/bigmem.h) */
    struct br_kv_alloc *kv;              /* block tables */
    int64_t *rows;                       /* (max_batch,) cache row of each batch token */
    float *rope_cs;                      /* (max_batch, n_rot) RoPE cos/sin of each batch token */
    /* scratch, all sized for max_batch tokens */
    float *x;      /* residual slice (T, dl) */
    int8_t *q8;    /* full or local int8 input (T, max kpad) */
    int8_t *q8loc; /* local int8 slice before the all-gather (T, dl) */
    float *qs;     /* per-token quantization scale s (T,) */
    float *stats;  /* local statistics (T, 1 + chunks) */
    float *gstats; /* gathered statistics */
    int32_t *acc;  /* integer sums (T, max rows) */
    int32_t *rs;   /* reduce-scatter send (T, d) / recv (T, dl) scratch */
    float *q, *k, *v, *att, *gbuf, *ubuf;
    float *xn;     /* normalized full residual for the head (T, d) */
    float *xnl;    /* local normalized slice (T, dl) */
    float *scores; /* (qhl, n_ctx) */
    float *layer_rms;
    int *counts, *displs; /* (tp,) collective layout scratch */
    void *gbuf_raw;       /* all-gather receive scratch */
    size_t gbuf_raw_size;
    int8_t *hq; /* Q8_0 head: quantized normalized rows (T, d) */
    float *hdx; /* their block scales (T, d / 32) */
};

/* Query heads per KV head up to which attention runs grouped (attn_group_task). */
#define ATTN_GMAX 8

/* The head takes int8 activations (Q8_0 after quantization at load, or Q6_K in place). */
static int head_int8(const struct br_model *m)
{
    return m->head_q8.rows || (m->part.last_stage && m->head.type == BR_GGML_Q6_K);
}

static void *xalloc(size_t n)
{
    return calloc(1, n ? n : 1);
}

static size_t pad128(int32_t n)
{
    return (size_t)br_tmat_blocks(n) * BR_TMAT_BLOCK;
}

static size_t chunks_of(int32_t n, int32_t chunk)
{
    return (size_t)((n + chunk - 1) / chunk);
}

void br_engine_destroy(struct br_engine **ep)
{
    if (!ep || !*ep) return;
    struct br_engine *e = *ep;
    if (e->cache)
        for (int l = 0; l < e->m->cfg.n_layer; l++) {
            br_big_free(e->cache[l].k, e->cache_k_bytes);
            br_big_free(e->cache[l].v, e->cache_v_bytes);
        }
    free(e->cache);
    br_kv_alloc_destroy(&e->kv);
    free(e->rows);
    free(e->rope_cs);
    free(e->grp);
    free(e->x), free(e->q8), free(e->q8loc), free(e->qs), free(e->stats), free(e->gstats);
    free(e->acc), free(e->rs), free(e->q), free(e->k), free(e->v), free(e->att);
    free(e->gbuf), free(e->ubuf), free(e->xn), free(e->xnl), free(e->scores);
    free(e->layer_rms), free(e->counts), free(e->displs), free(e->gbuf_raw);
    free(e->hq), free(e->hdx);
    free(e);
    *ep = NULL;
}

int br_engine_create(const struct br_model *m, const struct br_engine_opts *o,
                     struct br_engine **out, struct br_err *err)
{
    *out = NULL;
    const struct br_model_config *c = &m->cfg;
    const struct br_part *p = &m->part;
    struct br_engine *e = xalloc(sizeof *e);
    if (!e) return br_err_set(err, BR_E_NOMEM, "out of memory");
    e->m = m;
    e->ks = o && o->kernels ? o->kernels : br_kernel_set_active();
    e->pool = o ? o->pool : NULL;
    br_tune_init(e->pool); /* the kernels' parameters for this CPU (kernels/tune.h) */
    e->comm = o ? o->comm : NULL;
    e->tp = p->tp;
    e->tp_rank = p->tp_rank;
    e->repl = e->tp > 1 && br_part_layout(c, p) == BR_LAYOUT_REPLICATED;
    e->whole = e->tp == 1 || e->repl;
    if (e->tp > BR_PLAN_MAX_TP) {
        free(e);
        return br_err_set(err, BR_E_UNSUPPORTED, "TP %d exceeds %d", p->tp, BR_PLAN_MAX_TP);
    }
    if ((e->tp > 1 || p->pp > 1) && !e->comm) {
        free(e);
        return br_err_set(err, BR_E_INVALID, "a part of a %dx%d plan needs a communicator", p->tp,
                          p->pp);
    }
    e->n_ctx = o && o->n_ctx > 0 ? o->n_ctx : c->n_ctx;
    e->max_batch = o && o->max_batch > 0 ? o->max_batch : 64;
    e->n_seq = o && o->n_seq > 0 ? o->n_seq : 1;
    e->g = c->n_head / c->n_head_kv;
    e->dl = p->d1 - p->d0;
    e->kvl = p->kv1 - p->kv0;
    e->qhl = e->kvl * e->g;
    e->qdl = e->qhl * c->head_dim;
    e->kdl = e->kvl * c->head_dim;
    e->vdl = e->kvl * c->head_dim_v;
    e->odl = e->qhl * c->head_dim_v;
    e->ffl = p->ff1 - p->ff0;
    e->vl = p->v1 - p->v0;
    e->kpad_d = pad128(c->n_embd);
    e->kpad_o = pad128(e->odl);
    e->kpad_f = pad128(e->ffl);

    /* the group's layout, from the same plan every rank computes */
    e->grp = xalloc((size_t)e->tp * sizeof *e->grp);
    e->counts = xalloc((size_t)e->tp * sizeof *e->counts);
    e->displs = xalloc((size_t)e->tp * sizeof *e->displs);
    if (!e->grp || !e->counts || !e->displs) goto nomem;
    if (e->tp == 1) {
        e->grp[0] =
            (struct group_dims){p->d0, e->dl, p->ff0, e->ffl, p->kv0 * e->g, e->qhl, 0, c->n_vocab};
    } else {
        struct br_plan *plan = NULL;
        int rc = br_plan_create_layout(c, p->tp, p->pp, br_part_layout(c, p), &plan, err);
        if (rc) {
            br_engine_destroy(&e);
            return rc;
        }
        for (int r = 0; r < e->tp; r++) {
            const struct br_part *q = &plan->parts[p->pp_rank * p->tp + r];
            const struct br_part *lq = &plan->parts[(p->pp - 1) * p->tp + r];
            e->grp[r] =
                (struct group_dims){q->d0,           q->d1 - q->d0, q->ff0,
                                    q->ff1 - q->ff0, q->kv0 * e->g, (q->kv1 - q->kv0) * e->g,
                                    lq->v0,          lq->v1};
        }
        int same = e->grp[p->tp_rank].d0 == p->d0 && e->grp[p->tp_rank].dl == e->dl &&
                   e->grp[p->tp_rank].ff0 == p->ff0 && e->grp[p->tp_rank].ffl == e->ffl;
        br_plan_destroy(&plan);
        if (!same) {
            br_engine_destroy(&e);
            return br_err_set(err, BR_E_MISMATCH, "this rank's part differs from the plan");
        }
    }

    size_t T = (size_t)e->max_batch;
    int32_t d = c->n_embd;
    size_t kmax = e->kpad_d;
    if (e->kpad_o > kmax) kmax = e->kpad_o;
    if (e->kpad_f > kmax) kmax = e->kpad_f;
    size_t rows_max = (size_t)d;
    if ((size_t)e->qdl > rows_max) rows_max = (size_t)e->qdl;
    if ((size_t)e->ffl > rows_max) rows_max = (size_t)e->ffl;
    size_t stat_max = 1 + chunks_of(d, BR_CHUNK);
    if (1 + (size_t)c->n_head > stat_max) stat_max = 1 + (size_t)c->n_head;
    if (1 + chunks_of(c->n_ff, BR_CHUNK) > stat_max) stat_max = 1 + chunks_of(c->n_ff, BR_CHUNK);
    e->x = xalloc(T * (size_t)e->dl * sizeof(float));
    e->q8 = xalloc(T * kmax);
    e->q8loc = xalloc(T * (size_t)e->dl);
    e->qs = xalloc(T * sizeof(float));
    e->stats = xalloc(T * stat_max * sizeof(float));
    e->gstats = xalloc(T * (stat_max + (size_t)e->tp) * sizeof(float));
    e->acc = xalloc(T * rows_max * sizeof(int32_t));
    e->rs = xalloc(T * (size_t)d * sizeof(int32_t));
    e->q = xalloc(T * (size_t)e->qdl * sizeof(float));
    e->k = xalloc(T * (size_t)e->kdl * sizeof(float));
    e->v = xalloc(T * (size_t)e->vdl * sizeof(float));
    e->att = xalloc(T * (size_t)e->odl * sizeof(float));
    e->gbuf = xalloc(T * (size_t)e->ffl * sizeof(float));
    e->ubuf = xalloc(T * (size_t)e->ffl * sizeof(float));
    e->xn = xalloc(T * (size_t)d * sizeof(float));
    e->xnl = xalloc(T * (size_t)e->dl * sizeof(float));
    e->attn_chunks = e->g >= 2 && e->g <= ATTN_GMAX ? e->g : 0;
    /* per task: one head's scores, or a KV head's g heads' (qhl tasks either way) */
    e->scores = xalloc((size_t)e->qhl * (size_t)(e->attn_chunks ? e->g : 1) * (size_t)e->n_ctx *
                       sizeof(float));
    e->layer_rms = xalloc(((size_t)c->n_layer + 1) * sizeof(float));
    e->gbuf_raw_size =
        T * (size_t)d * sizeof(float) + T * (stat_max + (size_t)e->tp) * sizeof(float);
    e->gbuf_raw = xalloc(e->gbuf_raw_size);
    e->cache = xalloc((size_t)c->n_layer * sizeof *e->cache);
    if (head_int8(m)) {
        e->hq = xalloc(T * (size_t)d);
        e->hdx = xalloc(T * (size_t)(d / BR_Q8_BLOCK) * sizeof(float));
        if (!e->hq || !e->hdx) goto nomem;
    }
    if (!e->x || !e->q8 || !e->q8loc || !e->qs || !e->stats || !e->gstats || !e->acc || !e->rs ||
        !e->q || !e->k || !e->v || !e->att || !e->gbuf || !e->ubuf || !e->xn || !e->xnl ||
        !e->scores || !e->layer_rms || !e->gbuf_raw || !e->cache)
        goto nomem;
    int32_t per_seq = (e->n_ctx + BR_KV_BLOCK - 1) / BR_KV_BLOCK;
    int32_t n_blocks = o && o->kv_blocks > 0 ? o->kv_blocks : per_seq * e->n_seq;
    if (br_kv_alloc_create(e->n_seq, e->n_ctx, BR_KV_BLOCK, n_blocks, &e->kv)) goto nomem;
    e->rows = xalloc(T * sizeof *e->rows);
    e->rope_cs = xalloc(T * (size_t)c->n_rot * sizeof *e->rope_cs);
    if (!e->rows || !e->rope_cs) goto nomem;
    size_t slots = (size_t)n_blocks * BR_KV_BLOCK;
    e->cache_k_bytes = slots * (size_t)e->kdl * sizeof(uint16_t);
    e->cache_v_bytes = slots * (size_t)e->vdl * sizeof(uint16_t);
    for (int l = p->layer0; l < p->layer1; l++) { /* attention streams them: huge pages */
        e->cache[l].k = br_big_alloc(e->cache_k_bytes);
        e->cache[l].v = br_big_alloc(e->cache_v_bytes);
        if (!e->cache[l].k || !e->cache[l].v) goto nomem;
    }
    *out = e;
    return BR_OK;
nomem:
    br_engine_destroy(&e);
    return br_err_set(err, BR_E_NOMEM,
                      "out of memory allocating the engine (%d sequences x %d positions)",
                      o && o->n_seq > 0 ? o->n_seq : 1, o && o->n_ctx > 0 ? o->n_ctx : c->n_ctx);
}

int32_t br_engine_n_ctx(const struct br_engine *e)
{
    return e->n_ctx;
}
int32_t br_engine_free_blocks(const struct br_engine *e)
{
    return br_kv_alloc_free_blocks(e->kv);
}
int32_t br_engine_max_batch(const struct br_engine *e)
{
    return e->max_batch;
}
int32_t br_engine_vocab(const struct br_engine *e)
{
    return e->m->cfg.n_vocab;
}
int32_t br_engine_n_seq(const struct br_engine *e)
{
    return e->n_seq;
}
int32_t br_engine_residual_width(const struct br_engine *e)
{
    return e->dl;
}
struct br_pool *br_engine_pool(const struct br_engine *e)
{
    return e->pool;
}

void br_engine_vocab_slice(const struct br_engine *e, int tp_rank, int32_t *v0, int32_t *v1)
{
    *v0 = e->grp[tp_rank].v0;
    *v1 = e->grp[tp_rank].v1;
}
float *br_engine_residual(struct br_engine *e)
{
    return e->x;
}
const float *br_engine_layer_rms(const struct br_engine *e)
{
    return e->layer_rms;
}

int br_engine_check(const struct br_engine *e, const struct br_batch *b, struct br_err *err)
{
    if (b->n <= 0 || b->n > e->max_batch)
        return br_err_set(err, BR_E_INVALID, "batch of %d tokens (1..%d)", b->n, e->max_batch);
    for (int32_t i = 0; i < b->n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= e->m->cfg.n_vocab)
            return br_err_set(err, BR_E_RANGE,
                              "token id %d at position %d is outside the "
                              "vocabulary (0..%d)",
                              b->tokens[i], b->pos[i], e->m->cfg.n_vocab - 1);
        if (b->pos[i] < 0 || b->pos[i] >= e->n_ctx)
            return br_err_set(err, BR_E_TOO_LONG, "position %d exceeds the context of %d tokens",
                              b->pos[i], e->n_ctx);
        if (b->seq[i] < 0 || b->seq[i] >= e->n_seq)
            return br_err_set(err, BR_E_RANGE, "sequence slot %d out of range (0..%d)", b->seq[i],
                              e->n_seq - 1);
    }
    if (b->n_free < 0 || b->n_free > e->max_batch)
        return br_err_set(err, BR_E_INVALID, "%d slots to free (0..%d)", b->n_free, e->max_batch);
    for (int32_t i = 0; i < b->n_free; i++)
        if (b->free_seqs[i] < 0 || b->free_seqs[i] >= e->n_seq)
            return br_err_set(err, BR_E_RANGE, "freed slot %d out of range", b->free_seqs[i]);
    return BR_OK;
}

/* ---- per-token work over the pool ---- */

typedef void (*tok_fn)(struct br_engine *e, void *ctx, int32_t t);

struct tok_job {
    struct br_engine *e;
    tok_fn fn;
    void *ctx;
    int32_t T;
};

static void tok_task(void *ctx, int task, int n_tasks)
{
    struct tok_job *j = ctx;
    int32_t t0 = (int32_t)((int64_t)j->T * task / n_tasks);
    int32_t t1 = (int32_t)((int64_t)j->T * (task + 1) / n_tasks);
    for (int32_t t = t0; t < t1; t++) j->fn(j->e, j->ctx, t);
}

/* fn(e, ctx, t) for every token t < T: the tokens spread over the pool, each computed by
 * one thread exactly as the serial loop would, so results do not depend on the thread
 * count. One token, or one thread, runs in the caller. */
static void for_tokens(struct br_engine *e, int32_t T, tok_fn fn, void *ctx)
{
    int threads = br_pool_threads(e->pool);
    if (T < 2 || threads < 2) {
        for (int32_t t = 0; t < T; t++) fn(e, ctx, t);
        return;
    }
    struct tok_job j = {e, fn, ctx, T};
    int n = T < 4 * threads ? T : 4 * threads;
    br_pool_run(e->pool, tok_task, &j, n);
}

/* ---- collectives (copies when alone) ---- */

/* Gathers per-rank blocks of `elem` bytes x per_rank[r] elements for each of T tokens,
 * block r token-major, into out laid out rank-major: out + disp(r) (T, per_rank[r]). */
static int gather_blocks(struct br_engine *e, const void *mine, size_t elem,
                         const int32_t *per_rank, int32_t T, void *out)
{
    if (e->tp == 1) {
        memcpy(out, mine, (size_t)T * (size_t)per_rank[0] * elem);
        return BR_OK;
    }
    int off = 0;
    for (int r = 0; r < e->tp; r++) {
        e->counts[r] = (int)((size_t)T * (size_t)per_rank[r] * elem);
        e->displs[r] = off;
        off += e->counts[r];
    }
    return e->comm->ops->allgather(e->comm, mine, out, e->counts, e->displs);
}

struct normq_job {
    const float *x, *g;
    int32_t n_local, n_total, chunk, T;
    int nranks;                          /* statistics blocks to combine: tp, or 1 */
    const int32_t *chunks_per_rank, *pr; /* pr[r] = 1 + chunks_per_rank[r] */
    int normed;
    int8_t *q;
    size_t npad, stride; /* stride: this rank's statistics per token in e->stats */
    size_t own_off;      /* where its chunk sums start after the absmax (packed: its offset) */
    const float *gs;     /* the group's statistics: e->gstats, or e->stats */
};

/* Token t's local statistics: absmax, then its chunk sums, at e->stats + t * stride;
 * packed, the other ranks' slots of the token are zeros. */
static void normq_stats_tok(struct br_engine *e, void *ctx, int32_t t)
{
    const struct normq_job *j = ctx;
    float *st = e->stats + (size_t)t * j->stride;
    if (j->own_off) memset(st + 1, 0, j->own_off * sizeof *st);
    int32_t own = (int32_t)chunks_of(j->n_local, j->chunk);
    size_t tail = j->stride - 1 - j->own_off - (size_t)own;
    if (tail) memset(st + 1 + j->own_off + own, 0, tail * sizeof *st);
    st[0] = br_normq_stats(e->ks->ternary->dot_f32, j->x + (size_t)t * j->n_local, j->g,
                           (size_t)j->n_local, (size_t)j->chunk, st + 1 + j->own_off);
}

/* Token t's statistics combined in rank (= chunk) order, then its quantization. */
static void normq_quant_tok(struct br_engine *e, void *ctx, int32_t t)
{
    const struct normq_job *j = ctx;
    float absmax = 0.0f, ss = 0.0f;
    size_t off = 0;
    for (int r = 0; r < j->nranks; r++) {
        const float *blk = j->gs + off + (size_t)t * (size_t)j->pr[r];
        if (blk[0] > absmax) absmax = blk[0];
        for (int32_t c = 0; c < j->chunks_per_rank[r]; c++) ss += blk[1 + c];
        off += (size_t)j->T * (size_t)j->pr[r];
    }
    float rr = br_normq_r(ss, (size_t)j->n_total, e->m->cfg.eps, j->normed);
    e->qs[t] = br_normq_quantize(j->x + (size_t)t * j->n_local, j->g, (size_t)j->n_local, j->npad,
                                 absmax, rr, j->q + (size_t)t * j->npad);
}

/* Alone, the gather would be a copy: each token's statistics feed its quantization
 * directly, in one pass over the tokens. */
static void normq_both_tok(struct br_engine *e, void *ctx, int32_t t)
{
    normq_stats_tok(e, ctx, t);
    normq_quant_tok(e, ctx, t);
}

/* Norm-and-quantize (kernels/ops.h): x (T, n_local) with chunk sums over `chunk`. Writes
 * q (T, npad) and e->qs (T,). group: the statistics span the TP group, chunks_per_rank[r]
 * and n_total describing it (replicated layout: packed and max-all-reduced; sharded:
 * all-gathered); else x is the whole vector. Tokens are independent, so they spread over
 * the pool. */
static int normq(struct br_engine *e, const float *x, const float *g, int32_t n_local,
                 int32_t n_total, int32_t chunk, const int32_t *chunks_per_rank, int group,
                 int normed, int32_t T, int8_t *q, size_t npad)
{
    int32_t per_rank[BR_PLAN_MAX_TP], all = 0, before = 0, packed = 0;
    for (int r = 0; r < e->tp; r++) {
        per_rank[r] = 1 + chunks_per_rank[r];
        if (r < e->tp_rank) before += chunks_per_rank[r];
        all += chunks_per_rank[r];
    }
    struct normq_job j = {.x = x,
                          .g = g,
                          .n_local = n_local,
                          .n_total = n_total,
                          .chunk = chunk,
                          .T = T,
                          .nranks = 1,
                          .chunks_per_rank = chunks_per_rank + e->tp_rank,
                          .pr = per_rank + e->tp_rank,
                          .normed = normed,
                          .q = q,
                          .npad = npad,
                          .stride = (size_t)per_rank[e->tp_rank],
                          .own_off = 0,
                          .gs = e->stats};
    if (!group || e->tp == 1) {
        for_tokens(e, T, normq_both_tok, &j);
        return BR_OK;
    }
    int rc;
    if (e->repl) {
        /* one slot per chunk of the group, each written by its owner, 0 elsewhere: the
         * maximum over ranks is the owner's value, so the sums combine in chunk order */
        packed = 1 + all;
        j.stride = (size_t)packed;
        j.own_off = (size_t)before;
        j.chunks_per_rank = &all;
        j.pr = &packed;
        for_tokens(e, T, normq_stats_tok, &j);
        if ((rc = e->comm->ops->allreduce_max_f32(e->comm, e->stats, T * packed))) return rc;
    } else {
        for_tokens(e, T, normq_stats_tok, &j);
        if ((rc = gather_blocks(e, e->stats, sizeof(float), per_rank, T, e->gstats))) return rc;
        j.nranks = e->tp;
        j.chunks_per_rank = chunks_per_rank;
        j.pr = per_rank;
        j.gs = e->gstats;
    }
    for_tokens(e, T, normq_quant_tok, &j);
    return BR_OK;
}

/* Residual norm + quantize into e->q8 (T, kpad_d): of the whole residual where it is here;
 * sharded, of the slice, then the all-gather of the int8 slices. */
static int residual_normq(struct br_engine *e, const float *g, int32_t T)
{
    const struct br_model_config *c = &e->m->cfg;
    int32_t cpr[BR_PLAN_MAX_TP], sizes[BR_PLAN_MAX_TP];
    for (int r = 0; r < e->tp; r++) {
        cpr[r] = (int32_t)chunks_of(e->grp[r].dl, BR_CHUNK);
        sizes[r] = e->grp[r].dl;
    }
    if (e->whole)
        return normq(e, e->x, g, e->dl, c->n_embd, BR_CHUNK, cpr, 0, 1, T, e->q8, e->kpad_d);
    int rc = normq(e, e->x, g, e->dl, c->n_embd, BR_CHUNK, cpr, 1, 1, T, e->q8loc, (size_t)e->dl);
    if (rc) return rc;
    int8_t *raw = e->gbuf_raw;
    if ((rc = gather_blocks(e, e->q8loc, 1, sizes, T, raw))) return rc;
    size_t off = 0;
    for (int r = 0; r < e->tp; r++) {
        for (int32_t t = 0; t < T; t++)
            memcpy(e->q8 + (size_t)t * e->kpad_d + e->grp[r].d0, raw + off + (size_t)t * sizes[r],
                   (size_t)sizes[r]);
        off += (size_t)T * (size_t)sizes[r];
    }
    for (int32_t t = 0; t < T; t++)
        memset(e->q8 + (size_t)t * e->kpad_d + c->n_embd, 0, e->kpad_d - (size_t)c->n_embd);
    return BR_OK;
}

/* ---- projections ---- */

struct proj_job {
    const struct br_kernel_ops *k;
    const struct br_tmat *w;
    const int8_t *q8;
    size_t kpad;
    int32_t T;
    int32_t *acc;    /* (T, w->rows) */
    const float *qs; /* (T,) each token's quantization scale s */
    float *y;        /* NULL, or (T, w->rows) = acc / s * scale */
    float *x;        /* NULL, or the residual (T, w->rows) += acc / s * scale */
};

/* Rows [r0, r1) of the integer product and, where asked, of its float outputs: every
 * element's arithmetic is the same whichever task computes it. */
static void proj_task(void *ctx, int task, int n_tasks)
{
    struct proj_job *j = ctx;
    int32_t rows = j->w->rows;
    int32_t r0 = (int32_t)((int64_t)rows * task / n_tasks);
    int32_t r1 = (int32_t)((int64_t)rows * (task + 1) / n_tasks);
    if (r0 == r1) return;
    if (j->T == 1)
        j->k->gemv(j->w, r0, r1, j->q8, j->acc + r0);
    else
        j->k->gemm(j->w, r0, r1, j->T, j->q8, j->kpad, j->acc + r0, (size_t)rows);
    const float *sc = j->w->scale;
    for (int32_t t = 0; t < j->T && (j->y || j->x); t++) {
        const int32_t *a = j->acc + (size_t)t * (size_t)rows;
        float s = j->qs[t];
        if (j->y) {
            float *yt = j->y + (size_t)t * (size_t)rows;
            for (int32_t r = r0; r < r1; r++) yt[r] = (float)a[r] / s * sc[r];
        } else {
            float *xt = j->x + (size_t)t * (size_t)rows;
            for (int32_t r = r0; r < r1; r++) xt[r] += (float)a[r] / s * sc[r];
        }
    }
}

static void integer_product(struct br_engine *e, const struct br_tmat *w, const int8_t *q8,
                            size_t kpad, int32_t T, float *y, float *x)
{
    struct proj_job j = {e->ks->ternary, w, q8, kpad, T, e->acc, e->qs, y, x};
    int t = br_pool_threads(e->pool);
    int n = t == 1 ? 1 : t * (T == 1 ? br_tune_gemv_tasks(t) : 4);
    if (n > w->rows) n = w->rows;
    br_pool_run(e->pool, proj_task, &j, n);
}

/* Column-split projection: y (T, w->rows) = acc / s * scale. */
static void project(struct br_engine *e, const struct br_tmat *w, const int8_t *q8, size_t kpad,
                    int32_t T, float *y)
{
    integer_product(e, w, q8, kpad, T, y, NULL);
}

/* Row-split projection (O, Down): partial sums over local columns for all d rows, summed
 * exactly across the group, then added to the residual slice. */
static int project_add_residual(struct br_engine *e, const struct br_tmat *w, const int8_t *q8,
                                size_t kpad, int32_t T)
{
    if (e->tp == 1) { /* the sums are the residual's own rows: added where computed */
        integer_product(e, w, q8, kpad, T, NULL, e->x);
        return BR_OK;
    }
    integer_product(e, w, q8, kpad, T, NULL, NULL);
    int32_t d = e->m->cfg.n_embd, d0 = e->m->part.d0;
    const int32_t *sums = e->acc;
    size_t stride = (size_t)d;
    int rc;
    if (e->repl) {
        /* every rank adds the group's sums to its whole residual */
        if ((rc = e->comm->ops->allreduce_i32(e->comm, e->acc, T * d))) return rc;
    } else {
        /* send blocks in rank order, each (T, dl_r) */
        size_t off = 0;
        for (int r = 0; r < e->tp; r++) {
            for (int32_t t = 0; t < T; t++)
                memcpy(e->rs + off + (size_t)t * e->grp[r].dl,
                       e->acc + (size_t)t * d + e->grp[r].d0,
                       (size_t)e->grp[r].dl * sizeof(int32_t));
            off += (size_t)T * (size_t)e->grp[r].dl;
            e->counts[r] = T * e->grp[r].dl;
        }
        int32_t *recv = e->acc; /* acc is free again once rs holds the blocks */
        if ((rc = e->comm->ops->reduce_scatter_i32(e->comm, e->rs, recv, e->counts))) return rc;
        sums = recv;
        stride = (size_t)e->dl;
        d0 = 0;
    }
    for (int32_t t = 0; t < T; t++) {
        float s = e->qs[t];
        float *xt = e->x + (size_t)t * e->dl;
        const int32_t *a = sums + (size_t)t * stride + d0;
        const float *sc = w->scale + e->m->part.d0;
        for (int32_t i = 0; i < e->dl; i++) xt[i] += (float)a[i] / s * sc[i];
    }
    return BR_OK;
}

/* ---- attention, one task per local query head ---- */

struct attn_job {
    struct br_engine *e;
    int layer;
    const struct br_batch *b;
    int32_t chunks; /* grouped: token strides per KV head (attn_group_task) */
};

_Static_assert(BR_MAX_HEAD_DIM <= BR_ATTN_MAX_HEAD_DIM,
               "attention kernels hold a head on the stack");

/* Causal attention of token t for the G query heads h0 .. h0 + G - 1, which share one KV
 * head, over the f16 cache in the canonical order of kernels/attn.h; scores: G rows of
 * n_ctx scratch floats. Like the KV cache, the query and the unnormalized softmax weights
 * are rounded to f16 precision before their products: this is what the reference CPU
 * implementations compute, and matching it keeps greedy continuations of real files
 * identical to theirs (tests/unit/bitnet_cpp_test.c). The kernels take one KV block (a
 * run of contiguous cache rows) at a time, each row once for the G heads; every head
 * gets the same bits whatever G. */
static void attend(struct br_engine *e, int layer, const struct br_batch *b, int32_t t, int32_t h0,
                   int32_t G, float *scores)
{
    const struct br_model_config *c = &e->m->cfg;
    const struct br_attn_ops *ops = e->ks->attn;
    int32_t hd = c->head_dim, hdv = c->head_dim_v, kvh = h0 / e->g;
    const struct layer_cache *lc = &e->cache[layer];
    const uint16_t *kbase = lc->k + (size_t)kvh * hd, *vbase = lc->v + (size_t)kvh * hdv;
    float qbuf[ATTN_GMAX * BR_MAX_HEAD_DIM], inv[ATTN_GMAX];
    float scale = 1.0f / sqrtf((float)hd);
    int32_t npos = b->pos[t] + 1, sq = b->seq[t];
    memcpy(qbuf, e->q + (size_t)t * e->qdl + (size_t)h0 * hd, (size_t)(G * hd) * sizeof *qbuf);
    for (int32_t g = 0; g < G; g++) ops->round_f16(qbuf + (size_t)g * hd, hd);
    for (int32_t p0 = 0; p0 < npos; p0 += BR_KV_BLOCK) {
        int32_t n = npos - p0 < BR_KV_BLOCK ? npos - p0 : BR_KV_BLOCK;
        size_t row = (size_t)br_kv_alloc_row(e->kv, sq, p0);
        br_attn_scores_g(ops, qbuf, (size_t)hd, G, kbase + row * e->kdl, (size_t)e->kdl, n, hd,
                         scale, scores + p0, (size_t)e->n_ctx);
    }
    for (int32_t g = 0; g < G; g++) {
        float *sg = scores + (size_t)g * e->n_ctx;
        inv[g] = br_attn_exp(sg, npos);
        ops->round_f16(sg, npos);
    }
    float *out = e->att + (size_t)t * e->odl + (size_t)h0 * hdv;
    for (int32_t i = 0; i < G * hdv; i++) out[i] = 0.0f;
    for (int32_t p0 = 0; p0 < npos; p0 += BR_KV_BLOCK) {
        int32_t n = npos - p0 < BR_KV_BLOCK ? npos - p0 : BR_KV_BLOCK;
        size_t row = (size_t)br_kv_alloc_row(e->kv, sq, p0);
        br_attn_accum_g(ops, scores + p0, (size_t)e->n_ctx, G, vbase + row * e->vdl, (size_t)e->vdl,
                        n, hdv, out, (size_t)hdv);
    }
    for (int32_t g = 0; g < G; g++)
        for (int32_t i = 0; i < hdv; i++) out[(size_t)g * hdv + i] *= inv[g];
}

/* One query head h for every token of the step. */
static void attn_task(void *ctx, int h, int n_heads)
{
    (void)n_heads;
    struct attn_job *j = ctx;
    float *scores = j->e->scores + (size_t)h * j->e->n_ctx;
    for (int32_t t = 0; t < j->b->n; t++) attend(j->e, j->layer, j->b, t, h, 1, scores);
}

/* Grouped-query attention: task = kvh * C + c takes the g query heads of local KV head kvh
 * for the tokens t = c, c + C, ... (C = j->chunks; strided, so that a long prompt's
 * expensive last tokens spread over the tasks), reading each cache row once for the g
 * heads. */
static void attn_group_task(void *ctx, int task, int n_tasks)
{
    (void)n_tasks;
    struct attn_job *j = ctx;
    struct br_engine *e = j->e;
    int32_t G = e->g, C = j->chunks;
    float *scores = e->scores + (size_t)task * (size_t)G * e->n_ctx;
    for (int32_t t = task % C; t < j->b->n; t += C)
        attend(e, j->layer, j->b, t, task / C * G, G, scores);
}

/* ---- the stages ---- */

int br_engine_embed(struct br_engine *e, const struct br_batch *b, struct br_err *err)
{
    int rc = br_engine_check(e, b, err);
    if (rc) return rc;
    const struct br_model *m = e->m;
    int32_t d = m->cfg.n_embd;
    float *row = e->xn; /* (d,) scratch */
    for (int32_t t = 0; t < b->n; t++) {
        if ((rc = br_dense_row(&m->embd, b->tokens[t], row, err))) return rc;
        memcpy(e->x + (size_t)t * e->dl, row + m->part.d0, (size_t)e->dl * sizeof(float));
    }
    (void)d;
    return BR_OK;
}

/* Token t of layer *(int *)ctx: RoPE on its query and key heads, then its key and value
 * rows into the f16 cache. */
static void rope_store_tok(struct br_engine *e, void *ctx, int32_t t)
{
    const struct br_model_config *c = &e->m->cfg;
    const struct layer_cache *lc = &e->cache[*(const int *)ctx];
    const struct br_attn_ops *aops = e->ks->attn;
    int32_t hd = c->head_dim;
    const float *cs = e->rope_cs + (size_t)t * c->n_rot;
    for (int32_t h = 0; h < e->qhl; h++)
        br_rope_apply(e->q + (size_t)t * e->qdl + (size_t)h * hd, c->n_rot, c->rope_neox, cs);
    for (int32_t h = 0; h < e->kvl; h++)
        br_rope_apply(e->k + (size_t)t * e->kdl + (size_t)h * hd, c->n_rot, c->rope_neox, cs);
    size_t slot = (size_t)e->rows[t];
    aops->to_f16(e->k + (size_t)t * e->kdl, e->kdl, lc->k + slot * e->kdl);
    aops->to_f16(e->v + (size_t)t * e->vdl, e->vdl, lc->v + slot * e->vdl);
}

/* Token t's gate row becomes act(gate) * up (elementwise). */
static void act_mul_tok(struct br_engine *e, void *ctx, int32_t t)
{
    (void)ctx;
    size_t off = (size_t)t * (size_t)e->ffl;
    br_act_mul(e->m->cfg.act == BR_ACT_RELU2, e->gbuf + off, e->ubuf + off, (size_t)e->ffl);
}

static float rms_of(const float *x, int32_t n)
{
    double s = 0;
    for (int32_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return (float)sqrt(s / n);
}

int br_engine_layers(struct br_engine *e, const struct br_batch *b, struct br_err *err)
{
    int rc = br_engine_check(e, b, err);
    if (rc) return rc;
    const struct br_model *m = e->m;
    const struct br_model_config *c = &m->cfg;
    const struct br_part *p = &m->part;
    int32_t T = b->n;
    int32_t cpr_head[BR_PLAN_MAX_TP], cpr_ff[BR_PLAN_MAX_TP];
    for (int r = 0; r < e->tp; r++) {
        cpr_head[r] = e->grp[r].qhl;
        cpr_ff[r] = (int32_t)chunks_of(e->grp[r].ffl, BR_CHUNK);
    }
    /* KV blocks: frees, then each token's position, on every rank in the same order */
    for (int32_t i = 0; i < b->n_free; i++) br_kv_alloc_release(e->kv, b->free_seqs[i]);
    for (int32_t t = 0; t < T; t++) {
        int64_t row = br_kv_alloc_append(e->kv, b->seq[t], b->pos[t]);
        if (row < 0)
            return br_err_set(err, (int)row,
                              row == BR_E_BUSY ? "no free KV block for slot %d "
                                                 "position %d"
                                               : "slot %d position %d is not next in its sequence",
                              b->seq[t], b->pos[t]);
        e->rows[t] = row;
    }
    /* RoPE angles depend on the position only: once per token for all heads and layers */
    for (int32_t t = 0; t < T; t++)
        br_rope_table(c->n_rot, b->pos[t], c->rope_base, e->rope_cs + (size_t)t * c->n_rot);
    if (p->first_stage) e->layer_rms[0] = rms_of(e->x + (size_t)(T - 1) * e->dl, e->dl);
    for (int l = p->layer0; l < p->layer1; l++) {
        const struct br_layer_weights *lw = &m->layers[l];
        /* attention */
        if ((rc = residual_normq(e, lw->attn_norm, T))) goto comm_fail;
        project(e, &lw->q, e->q8, e->kpad_d, T, e->q);
        project(e, &lw->k, e->q8, e->kpad_d, T, e->k);
        project(e, &lw->v, e->q8, e->kpad_d, T, e->v);
        int layer = l;
        for_tokens(e, T, rope_store_tok, &layer);
        /* grouped: attn_chunks tasks per KV head once every task has a token; fewer tokens
         * (a decode step) one task per KV head, where there are at least as many KV heads
         * as threads; otherwise a task per query head, so that every thread has work */
        int32_t chunks = T >= e->attn_chunks ? e->attn_chunks : 1;
        struct attn_job aj = {e, l, b, chunks};
        if (e->attn_chunks && (chunks > 1 || e->kvl >= br_pool_threads(e->pool)))
            br_pool_run(e->pool, attn_group_task, &aj, e->kvl * chunks);
        else
            br_pool_run(e->pool, attn_task, &aj, e->qhl);
        if ((rc =
                 normq(e, e->att, lw->attn_sub_norm, e->odl, c->n_head * c->head_dim_v,
                       c->head_dim_v, cpr_head, 1, lw->attn_sub_norm != NULL, T, e->q8, e->kpad_o)))
            goto comm_fail;
        if ((rc = project_add_residual(e, &lw->o, e->q8, e->kpad_o, T))) goto comm_fail;

        /* feed-forward */
        if ((rc = residual_normq(e, lw->ffn_norm, T))) goto comm_fail;
        project(e, &lw->gate, e->q8, e->kpad_d, T, e->gbuf);
        project(e, &lw->up, e->q8, e->kpad_d, T, e->ubuf);
        for_tokens(e, T, act_mul_tok, NULL);
        if ((rc = normq(e, e->gbuf, lw->ffn_sub_norm, e->ffl, c->n_ff, BR_CHUNK, cpr_ff, 1,
                        lw->ffn_sub_norm != NULL, T, e->q8, e->kpad_f)))
            goto comm_fail;
        if ((rc = project_add_residual(e, &lw->down, e->q8, e->kpad_f, T))) goto comm_fail;
        e->layer_rms[l + 1] = rms_of(e->x + (size_t)(T - 1) * e->dl, e->dl);
    }
    return BR_OK;
comm_fail:
    return br_err_set(err, rc, "collective failed in the forward pass: %s", br_strerror(rc));
}

/* ---- head ---- */

struct head_job {
    struct br_engine *e;
    const float *xn; /* (n_rows, d) */
    int32_t n_rows;
    float *logits; /* (n_rows, vl) */
    int failed;
};

static void head_task(void *ctx, int task, int n_tasks)
{
    struct head_job *j = ctx;
    struct br_engine *e = j->e;
    const struct br_dense *h = &e->m->head;
    int64_t vl = e->vl, v0 = e->m->part.v0;
    int64_t a = vl * task / n_tasks, b = vl * (task + 1) / n_tasks;
    if (!e->m->head_q8.rows && h->type == BR_GGML_Q6_K) {
        /* Q6_K, read in place: every head row read once for all n_rows tokens (q6k.h) */
        struct br_q6kmat q6;
        int64_t l0 = v0 - h->row0;
        if (br_q6kmat_view(&q6, h->data, h->rows, (int32_t)h->cols)) {
            j->failed = 1;
            return;
        }
        e->ks->q6k(&q6, l0 + a, l0 + b, j->n_rows, e->hq, (size_t)h->cols, e->hdx,
                   (size_t)h->cols / BR_Q8_BLOCK, j->logits + a, (size_t)vl);
        return;
    }
    if (!e->m->head_q8.rows && (h->type == BR_GGML_F16 || h->type == BR_GGML_BF16)) {
        /* F16/BF16 in place, br_dense_dot's bits, rows and tokens tiled (kernels/fhead.h) */
        struct br_fhead fh = {h->data, h->row_bytes, h->rows, (int32_t)h->cols,
                              h->type == BR_GGML_BF16};
        int64_t l0 = v0 - h->row0;
        e->ks->fhead(&fh, l0 + a, l0 + b, j->n_rows, j->xn, (size_t)h->cols, j->logits + a,
                     (size_t)vl);
        return;
    }
    if (e->m->head_q8.rows) {
        /* Q8_0: every head row read once for all n_rows tokens (kernels/q8.h) */
        int64_t q0 = v0 - e->m->head_q8_row0;
        size_t d = (size_t)h->cols;
        e->ks->q8->gemm(&e->m->head_q8, q0 + a, q0 + b, j->n_rows, e->hq, d, e->hdx,
                        d / BR_Q8_BLOCK, j->logits + a, (size_t)vl);
        return;
    }
    float *row = malloc((size_t)h->cols * sizeof *row);
    if (!row) {
        j->failed = 1;
        return;
    }
    for (int64_t v = a; v < b; v++)
        for (int32_t t = 0; t < j->n_rows; t++)
            j->logits[(size_t)t * (size_t)vl + (size_t)v] =
                br_dense_dot(e->ks, h, v0 + v, j->xn + (size_t)t * (size_t)h->cols, row);
    free(row);
}

/* Row t of the normalized head input quantized for the Q8_0 head (kernels/q8.h). */
static void head_quant_tok(struct br_engine *e, void *ctx, int32_t t)
{
    (void)ctx;
    size_t d = (size_t)e->m->cfg.n_embd;
    br_q8_quantize_act(e->xn + (size_t)t * d, (int32_t)d, e->hq + (size_t)t * d,
                       e->hdx + (size_t)t * (d / BR_Q8_BLOCK));
}

int br_engine_head(struct br_engine *e, const struct br_batch *b, const int32_t *rows,
                   int32_t n_rows, float *logits, struct br_err *err)
{
    const struct br_model *m = e->m;
    const struct br_model_config *c = &m->cfg;
    if (!m->part.last_stage) return br_err_set(err, BR_E_INVALID, "head on a non-last stage");
    if (n_rows <= 0) return BR_OK;
    int32_t d = c->n_embd;
    /* final norm: chunk sums of the residual (sharded: of the slice, gathered), then the
     * canonical rmsnorm */
    size_t ch = chunks_of(e->dl, BR_CHUNK);
    for (int32_t i = 0; i < n_rows; i++) {
        if (rows[i] < 0 || rows[i] >= b->n) return br_err_set(err, BR_E_RANGE, "bad head row");
        br_sumsq_chunks(e->ks->ternary->dot_f32, e->x + (size_t)rows[i] * e->dl, (size_t)e->dl,
                        e->stats + (size_t)i * ch);
    }
    int32_t pr[BR_PLAN_MAX_TP], nblk = e->whole ? 1 : e->tp;
    const float *gs = e->stats;
    pr[0] = (int32_t)ch;
    if (!e->whole) {
        for (int r = 0; r < e->tp; r++) pr[r] = (int32_t)chunks_of(e->grp[r].dl, BR_CHUNK);
        int rc = gather_blocks(e, e->stats, sizeof(float), pr, n_rows, e->gstats);
        if (rc) return br_err_set(err, rc, "collective failed in the head");
        gs = e->gstats;
    }
    for (int32_t i = 0; i < n_rows; i++) {
        float ss = 0.0f;
        size_t off = 0;
        for (int r = 0; r < nblk; r++) {
            for (int32_t k = 0; k < pr[r]; k++) ss += gs[off + (size_t)i * pr[r] + k];
            off += (size_t)n_rows * (size_t)pr[r];
        }
        float scale = 1.0f / sqrtf(ss / (float)d + c->eps);
        const float *x = e->x + (size_t)rows[i] * e->dl;
        float *y = e->xnl + (size_t)i * e->dl;
        for (int32_t k = 0; k < e->dl; k++) y[k] = x[k] * scale * m->output_norm[k];
    }
    /* the full normalized vectors: (n_rows, d) */
    if (e->whole) {
        memcpy(e->xn, e->xnl, (size_t)n_rows * (size_t)d * sizeof(float));
    } else {
        int32_t sz[BR_PLAN_MAX_TP];
        for (int r = 0; r < e->tp; r++) sz[r] = e->grp[r].dl;
        float *raw = e->gbuf_raw;
        int rc = gather_blocks(e, e->xnl, sizeof(float), sz, n_rows, raw);
        if (rc) return br_err_set(err, rc, "collective failed in the head");
        size_t off = 0;
        for (int r = 0; r < e->tp; r++) {
            for (int32_t i = 0; i < n_rows; i++)
                memcpy(e->xn + (size_t)i * d + e->grp[r].d0, raw + off + (size_t)i * sz[r],
                       (size_t)sz[r] * sizeof(float));
            off += (size_t)n_rows * (size_t)sz[r];
        }
    }
    if (head_int8(m) && !e->hq)
        return br_err_set(err, BR_E_INVALID,
                          "the head was made Q8_0 after this engine was created");
    if (head_int8(m)) for_tokens(e, n_rows, head_quant_tok, NULL);
    struct head_job hj = {e, e->xn, n_rows, logits, 0};
    int ntask = br_pool_threads(e->pool) * 8;
    if (ntask > e->vl) ntask = e->vl;
    br_pool_run(e->pool, head_task, &hj, ntask);
    if (hj.failed) return br_err_set(err, BR_E_NOMEM, "head evaluation failed");
    return BR_OK;
}

/* ---- single process, one sequence ---- */

int br_engine_eval(struct br_engine *e, const int32_t *tokens, int32_t n, int32_t pos0,
                   float *logits, enum br_logits_mode mode, struct br_err *err)
{
    if (e->tp != 1 || e->m->part.pp != 1)
        return br_err_set(err, BR_E_INVALID, "br_engine_eval runs a whole model in one process");
    if (n <= 0) return br_err_set(err, BR_E_INVALID, "no tokens to evaluate");
    if (pos0 < 0 || n > e->n_ctx - pos0)
        return br_err_set(err, BR_E_TOO_LONG, "positions %d..%d exceed the context of %d tokens",
                          pos0, pos0 + n - 1, e->n_ctx);
    int32_t vocab = e->m->cfg.n_vocab;
    int32_t *pos = malloc((size_t)e->max_batch * sizeof *pos);
    int32_t *seq = calloc((size_t)e->max_batch, sizeof *seq);
    int32_t *rows = malloc((size_t)e->max_batch * sizeof *rows);
    if (!pos || !seq || !rows) {
        free(pos), free(seq), free(rows);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    int rc = BR_OK;
    for (int32_t off = 0; off < n && !rc; off += e->max_batch) {
        int32_t T = n - off < e->max_batch ? n - off : e->max_batch;
        for (int32_t t = 0; t < T; t++) pos[t] = pos0 + off + t, rows[t] = t;
        struct br_batch b = {T, tokens + off, pos, seq, 0, NULL};
        if ((rc = br_engine_embed(e, &b, err)) || (rc = br_engine_layers(e, &b, err))) break;
        if (mode == BR_LOGITS_ALL)
            rc = br_engine_head(e, &b, rows, T, logits + (size_t)off * vocab, err);
        else if (mode == BR_LOGITS_LAST && off + T == n)
            rc = br_engine_head(e, &b, rows + T - 1, 1, logits, err);
    }
    free(pos), free(seq), free(rows);
    return rc;
}
