/*
 * TP x PP plan (see plan.h for the rules). Splitting n units over k ranks gives the first
 * n % k ranks one extra unit; units are 256-chunks (residual, FFN), KV-head groups
 * (attention) or vocabulary rows (head). Layers go to stages greedily so that each stage
 * carries about the same weight bytes, counting the embedding on the first stage and the
 * head on the last.
 */
#include "sharding/plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "sharding/types.h"

static void split(int32_t n, int32_t k, int32_t i, int32_t *a, int32_t *b)
{
    int32_t base = n / k, extra = n % k;
    *a = i * base + (i < extra ? i : extra);
    *b = *a + base + (i < extra ? 1 : 0);
}

/* Splits `len` elements as whole 256-chunks; the last chunk may be partial. */
static void split_chunks(int32_t len, int32_t k, int32_t i, int32_t *a, int32_t *b)
{
    int32_t chunks = (len + BR_CHUNK - 1) / BR_CHUNK, c0, c1;
    split(chunks, k, i, &c0, &c1);
    *a = c0 * BR_CHUNK;
    *b = c1 * BR_CHUNK < len ? c1 * BR_CHUNK : len;
}

void br_part_whole(const struct br_model_config *c, struct br_part *p)
{
    memset(p, 0, sizeof *p);
    p->tp = p->pp = 1;
    p->layer1 = c->n_layer;
    p->d1 = c->n_embd;
    p->kv1 = c->n_head_kv;
    p->ff1 = c->n_ff;
    p->v1 = c->n_vocab;
    p->first_stage = p->last_stage = 1;
}

static uint64_t layer_bytes(const struct br_model_config *c)
{
    uint64_t d = (uint64_t)c->n_embd;
    uint64_t qd = (uint64_t)c->n_head * c->head_dim, kd = (uint64_t)c->n_head_kv * c->head_dim;
    uint64_t vd = (uint64_t)c->n_head_kv * c->head_dim_v, od = (uint64_t)c->n_head * c->head_dim_v;
    uint64_t w = d * (qd + kd + vd) + od * d + 3 * d * (uint64_t)c->n_ff;
    return w / 4;
}

const char *br_layout_name(int layout)
{
    return layout == BR_LAYOUT_SHARDED ? "sharded" : "replicated";
}

int br_layout_parse(const char *s)
{
    if (!strcmp(s, "replicated")) return BR_LAYOUT_REPLICATED;
    if (!strcmp(s, "sharded")) return BR_LAYOUT_SHARDED;
    if (!strcmp(s, "auto")) return BR_LAYOUT_AUTO;
    return -2;
}

int br_part_layout(const struct br_model_config *c, const struct br_part *p)
{
    return p->tp > 1 && p->d1 - p->d0 < c->n_embd ? BR_LAYOUT_SHARDED : BR_LAYOUT_REPLICATED;
}

int br_plan_create(const struct br_model_config *c, int32_t tp, int32_t pp, struct br_plan **out,
                   struct br_err *err)
{
    return br_plan_create_layout(c, tp, pp, BR_LAYOUT_REPLICATED, out, err);
}

int br_plan_create_layout(const struct br_model_config *c, int32_t tp, int32_t pp, int layout,
                          struct br_plan **out, struct br_err *err)
{
    *out = NULL;
    if (tp < 1 || pp < 1) return br_err_set(err, BR_E_INVALID, "--tp and --pp must be at least 1");
    if (tp > BR_PLAN_MAX_TP)
        return br_err_set(err, BR_E_INVALID,
                          "--tp %d exceeds %d ranks per TP group (BR_PLAN_MAX_TP: the engine "
                          "keeps per-rank arrays of that size)",
                          tp, BR_PLAN_MAX_TP);
    if (pp > 4096) return br_err_set(err, BR_E_INVALID, "--pp %d exceeds 4096 stages", pp);
    if (layout != BR_LAYOUT_REPLICATED && layout != BR_LAYOUT_SHARDED)
        return br_err_set(err, BR_E_INVALID, "unknown layout %d", layout);
    int32_t d_chunks = (c->n_embd + BR_CHUNK - 1) / BR_CHUNK;
    int32_t ff_chunks = (c->n_ff + BR_CHUNK - 1) / BR_CHUNK;
    if (tp > c->n_head_kv)
        return br_err_set(err, BR_E_INVALID,
                          "--tp %d exceeds the %d KV heads (attention is split "
                          "by whole KV-head groups)",
                          tp, c->n_head_kv);
    /* FFN rows go in whole chunks so that the sub-norm's chunk sums combine in one order */
    if (tp > ff_chunks)
        return br_err_set(err, BR_E_INVALID,
                          "--tp %d exceeds the %d FFN chunks of 256 (FFN rows are split in "
                          "whole chunks: the sub-norm's statistics are per chunk)",
                          tp, ff_chunks);
    if (layout == BR_LAYOUT_SHARDED && tp > d_chunks)
        return br_err_set(err, BR_E_INVALID,
                          "--tp %d exceeds the %d hidden chunks of 256 of the sharded layout "
                          "(the replicated layout has no such bound)",
                          tp, d_chunks);
    int32_t v_chunks = (c->n_vocab + BR_CHUNK - 1) / BR_CHUNK;
    if (tp > v_chunks)
        return br_err_set(err, BR_E_INVALID,
                          "--tp %d exceeds the %d vocabulary chunks of 256 (each rank's head "
                          "rows start on a chunk: the sampler's statistics are per chunk)",
                          tp, v_chunks);
    if (pp > c->n_layer)
        return br_err_set(err, BR_E_INVALID, "--pp %d exceeds the %d layers", pp, c->n_layer);
    struct br_plan *p = calloc(1, sizeof *p);
    if (!p || !(p->parts = calloc((size_t)tp * (size_t)pp, sizeof *p->parts))) {
        free(p);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    p->cfg = *c;
    p->tp = tp;
    p->pp = pp;
    p->layout = layout;
    /* Stages: greedy fill to the average bytes touched per token. The head is streamed
     * once per token, so it counts on the last stage; the embedding is only looked up. */
    uint64_t lb = layer_bytes(c);
    uint64_t hb = 0;
    if (!br_ggml_type_nbytes(c->head_type, (uint64_t)c->n_embd,
                             (uint64_t)c->n_embd * (uint64_t)c->n_vocab, &hb))
        hb = (uint64_t)c->n_embd * (uint64_t)c->n_vocab * 2;
    uint64_t total = lb * (uint64_t)c->n_layer + hb;
    int32_t *bounds = calloc((size_t)pp + 1, sizeof *bounds);
    if (!bounds) {
        br_plan_destroy(&p);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    /* In layer units the model is n_layer + h (the head); each stage should carry
     * (n_layer + h) / pp. The last stage gets what is left of that after the head (at
     * least one layer); the other stages share the rest evenly. */
    double h = lb ? (double)hb / (double)lb : 0.0;
    double ideal = ((double)c->n_layer + h) / pp;
    int32_t last_layers = (int32_t)(ideal - h + 0.5);
    if (last_layers < 1) last_layers = 1;
    if (last_layers > c->n_layer - (pp - 1)) last_layers = c->n_layer - (pp - 1);
    if (pp == 1) last_layers = c->n_layer;
    (void)total;
    for (int32_t s = 0; s < pp - 1; s++) {
        int32_t a, b;
        split(c->n_layer - last_layers, pp - 1, s, &a, &b);
        bounds[s] = a;
    }
    bounds[pp - 1] = c->n_layer - last_layers;
    bounds[pp] = c->n_layer;
    for (int32_t s = 0; s < pp; s++)
        for (int32_t t = 0; t < tp; t++) {
            struct br_part *q = &p->parts[s * tp + t];
            q->tp = tp, q->pp = pp, q->tp_rank = t, q->pp_rank = s;
            q->layer0 = bounds[s], q->layer1 = bounds[s + 1];
            if (layout == BR_LAYOUT_SHARDED)
                split_chunks(c->n_embd, tp, t, &q->d0, &q->d1);
            else
                q->d0 = 0, q->d1 = c->n_embd;
            split(c->n_head_kv, tp, t, &q->kv0, &q->kv1);
            split_chunks(c->n_ff, tp, t, &q->ff0, &q->ff1);
            q->first_stage = s == 0;
            q->last_stage = s == pp - 1;
            /* vocabulary slices start on 256-token chunks: the sampler's statistics are
             * per chunk (worker/sample.h), so they combine the same in any layout */
            if (q->last_stage) split_chunks(c->n_vocab, tp, t, &q->v0, &q->v1);
        }
    free(bounds);
    *out = p;
    return BR_OK;
}

void br_plan_destroy(struct br_plan **pp)
{
    if (!pp || !*pp) return;
    free((*pp)->parts);
    free(*pp);
    *pp = NULL;
}

void br_part_cost(const struct br_model_config *c, const struct br_part *p, int embd_bytes,
                  int head_bytes, struct br_part_cost *o)
{
    memset(o, 0, sizeof *o);
    int32_t g = c->n_head / c->n_head_kv;
    uint64_t nl = (uint64_t)(p->layer1 - p->layer0);
    uint64_t d = (uint64_t)c->n_embd, dl = (uint64_t)(p->d1 - p->d0);
    uint64_t kvh = (uint64_t)(p->kv1 - p->kv0), qh = kvh * (uint64_t)g;
    uint64_t ffl = (uint64_t)(p->ff1 - p->ff0);
    uint64_t blk = (d + 127) / 128 * 32; /* packed bytes per row of d inputs */
    uint64_t per_layer = qh * (uint64_t)c->head_dim * blk + 2 * kvh * (uint64_t)c->head_dim * blk +
                         d * ((qh * (uint64_t)c->head_dim_v + 127) / 128 * 32) + 2 * ffl * blk +
                         d * ((ffl + 127) / 128 * 32);
    per_layer += 4 * (2 * dl + qh * (uint64_t)c->head_dim_v + ffl); /* norms */
    o->weight_bytes = nl * per_layer;
    if (p->first_stage) o->weight_bytes += (uint64_t)c->n_vocab * dl * (uint64_t)embd_bytes;
    if (p->last_stage)
        o->weight_bytes += (uint64_t)(p->v1 - p->v0) * d * (uint64_t)head_bytes + 4 * d;
    o->kv_bytes_per_1k = nl * kvh * (uint64_t)(c->head_dim + c->head_dim_v) * 2 * 1000;
}

/* ---- collectives ---- */

static uint64_t ceil_div(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

/* Per token: the statistics blocks of one norm over the group (absmax + chunk sums of each
 * rank), summed over ranks; ranks' chunk counts from the plan. */
static uint64_t stats_all(const struct br_plan *p, int what)
{
    const struct br_model_config *c = &p->cfg;
    int32_t g = c->n_head / c->n_head_kv;
    uint64_t s = 0;
    for (int32_t r = 0; r < p->tp; r++) {
        const struct br_part *q = &p->parts[r];
        uint64_t ch = what == 0   ? ceil_div((uint64_t)(q->d1 - q->d0), BR_CHUNK)
                      : what == 1 ? (uint64_t)(q->kv1 - q->kv0) * (uint64_t)g
                                  : ceil_div((uint64_t)(q->ff1 - q->ff0), BR_CHUNK);
        s += 4 * (1 + ch);
    }
    return s;
}

int br_plan_layer_colls(const struct br_plan *p, int64_t n, struct br_coll *o)
{
    if (p->tp < 2) return 0;
    const struct br_model_config *c = &p->cfg;
    uint64_t N = (uint64_t)n, d = (uint64_t)c->n_embd;
    if (p->layout == BR_LAYOUT_REPLICATED) {
        /* the packed statistics: absmax and every chunk sum of the group, per token */
        uint64_t head_ch = 4 * (1 + (uint64_t)c->n_head);
        uint64_t ff_ch = 4 * (1 + ceil_div((uint64_t)c->n_ff, BR_CHUNK));
        o[0] = (struct br_coll){BR_COLL_ALLREDUCE_MAX, N * head_ch, "attn sub-norm statistics"};
        o[1] = (struct br_coll){BR_COLL_ALLREDUCE_I32, N * 4 * d, "O partial sums"};
        o[2] = (struct br_coll){BR_COLL_ALLREDUCE_MAX, N * ff_ch, "FFN sub-norm statistics"};
        o[3] = (struct br_coll){BR_COLL_ALLREDUCE_I32, N * 4 * d, "down partial sums"};
        return 4;
    }
    uint64_t res = N * stats_all(p, 0);
    o[0] = (struct br_coll){BR_COLL_ALLGATHER, res, "attn norm statistics"};
    o[1] = (struct br_coll){BR_COLL_ALLGATHER, N * d, "attn norm int8"};
    o[2] = (struct br_coll){BR_COLL_ALLGATHER, N * stats_all(p, 1), "attn sub-norm statistics"};
    o[3] = (struct br_coll){BR_COLL_REDUCE_SCATTER, N * 4 * d, "O partial sums"};
    o[4] = (struct br_coll){BR_COLL_ALLGATHER, res, "FFN norm statistics"};
    o[5] = (struct br_coll){BR_COLL_ALLGATHER, N * d, "FFN norm int8"};
    o[6] = (struct br_coll){BR_COLL_ALLGATHER, N * stats_all(p, 2), "FFN sub-norm statistics"};
    o[7] = (struct br_coll){BR_COLL_REDUCE_SCATTER, N * 4 * d, "down partial sums"};
    return 8;
}

int br_plan_head_colls(const struct br_plan *p, int64_t n, struct br_coll *o)
{
    if (p->tp < 2 || p->layout == BR_LAYOUT_REPLICATED) return 0;
    uint64_t N = (uint64_t)n;
    /* chunk sums only (no absmax), then the normalized float slices */
    o[0] = (struct br_coll){BR_COLL_ALLGATHER, N * (stats_all(p, 0) - 4 * (uint64_t)p->tp),
                            "final norm statistics"};
    o[1] =
        (struct br_coll){BR_COLL_ALLGATHER, N * 4 * (uint64_t)p->cfg.n_embd, "final norm slices"};
    return 2;
}

const char *br_coll_kind_name(int kind)
{
    switch (kind) {
    case BR_COLL_ALLGATHER:
        return "all-gather";
    case BR_COLL_REDUCE_SCATTER:
        return "reduce-scatter i32";
    case BR_COLL_ALLREDUCE_I32:
        return "all-reduce i32 sum";
    case BR_COLL_ALLREDUCE_MAX:
        return "all-reduce f32 max";
    default:
        return "?";
    }
}

int br_coll_direct_fits(int kind, int32_t T, double bytes)
{
    if (T < 3 || !(bytes >= 0)) return 0;
    switch (kind) {
    case BR_COLL_ALLREDUCE_MAX:
        return bytes <= BR_COLL_DIRECT_MAX;
    case BR_COLL_ALLREDUCE_I32:
    case BR_COLL_REDUCE_SCATTER:
        /* whole int32s: the largest block holds ceil(n / T) of them */
        return 4.0 * ceil(bytes / 4.0 / T) <= BR_COLL_DIRECT_BLOCK_MAX;
    case BR_COLL_ALLGATHER:
        return bytes / T <= BR_COLL_DIRECT_BLOCK_MAX;
    default:
        return 0;
    }
}

int br_coll_direct_mode(void)
{
    static volatile int mode = -2; /* read once (comm_mpi.h) */
    if (mode == -2) {
        const char *v = getenv("BITRACK_COLL_DIRECT");
        mode = v && !strcmp(v, "0") ? 0 : v && !strcmp(v, "1") ? 1 : -1;
    }
    return mode;
}

/* MPI's algorithms (plan.h) */
static double mpi_time(int kind, int32_t T, double bytes, double a, double bw)
{
    double rounds = ceil(log2((double)T)), part = (T - 1) * (bytes / T) / bw;
    if (kind == BR_COLL_ALLGATHER || kind == BR_COLL_REDUCE_SCATTER) return rounds * a + part;
    double doubling = rounds * (a + bytes / bw), rabenseifner = 2 * rounds * a + 2 * part;
    return doubling < rabenseifner ? doubling : rabenseifner;
}

/* The direct ones (plan.h) */
static double direct_time(int kind, int32_t T, double bytes, double a, double bw)
{
    double round = a + (T - 1) * (bytes / T / bw + BR_COLL_MSG_S);
    if (kind == BR_COLL_ALLREDUCE_MAX) return a + (T - 1) * (bytes / bw + BR_COLL_MSG_S);
    return kind == BR_COLL_ALLREDUCE_I32 ? 2 * round : round;
}

int br_coll_direct(int kind, int32_t T, double bytes, double a, double bw)
{
    int mode = br_coll_direct_mode();
    if (mode == 0 || !br_coll_direct_fits(kind, T, bytes)) return 0;
    return mode == 1 || direct_time(kind, T, bytes, a, bw) < mpi_time(kind, T, bytes, a, bw);
}

double br_coll_time(int kind, int32_t T, double bytes, double a, double bw)
{
    if (T <= 1) return 0.0;
    return br_coll_direct(kind, T, bytes, a, bw) ? direct_time(kind, T, bytes, a, bw)
                                                 : mpi_time(kind, T, bytes, a, bw);
}

int br_plan_choose_layout(const struct br_model_config *c, int32_t tp, int32_t batch, double gbit,
                          double alpha_us)
{
    double t[2] = {0, 0};
    for (int l = 0; l < 2; l++) {
        struct br_plan *p = NULL;
        struct br_err err;
        if (br_plan_create_layout(c, tp, 1, l, &p, &err)) return BR_LAYOUT_REPLICATED;
        struct br_coll k[BR_PLAN_MAX_COLLS];
        int n = br_plan_layer_colls(p, batch, k);
        for (int i = 0; i < n; i++)
            t[l] +=
                br_coll_time(k[i].kind, tp, (double)k[i].bytes, alpha_us * 1e-6, gbit * 1e9 / 8);
        br_plan_destroy(&p);
    }
    return t[BR_LAYOUT_SHARDED] < t[BR_LAYOUT_REPLICATED] ? BR_LAYOUT_SHARDED
                                                          : BR_LAYOUT_REPLICATED;
}

/* What this rank sends for one collective (worker/comm.h's count). */
static uint64_t coll_sent(const struct br_plan *p, const struct br_part *q, const struct br_coll *k,
                          int64_t n, int index, int head)
{
    uint64_t tp1 = (uint64_t)(p->tp - 1), N = (uint64_t)n;
    uint64_t d = (uint64_t)p->cfg.n_embd, dl = (uint64_t)(q->d1 - q->d0);
    int32_t g = p->cfg.n_head / p->cfg.n_head_kv;
    switch (k->kind) {
    case BR_COLL_ALLREDUCE_I32:
    case BR_COLL_ALLREDUCE_MAX:
        return k->bytes; /* the buffer once (worker/comm.h) */
    case BR_COLL_REDUCE_SCATTER:
        return N * 4 * (d - dl);
    default:
        break;
    }
    /* all-gathers: this rank's block times the others */
    uint64_t own;
    if (head)
        own = index == 0 ? 4 * ceil_div(dl, BR_CHUNK) : 4 * dl;
    else if (index == 1 || index == 5)
        own = dl; /* int8 slice */
    else if (index == 2)
        own = 4 * (1 + (uint64_t)(q->kv1 - q->kv0) * (uint64_t)g);
    else if (index == 6)
        own = 4 * (1 + ceil_div((uint64_t)(q->ff1 - q->ff0), BR_CHUNK));
    else
        own = 4 * (1 + ceil_div(dl, BR_CHUNK));
    return N * own * tp1;
}

void br_plan_traffic(const struct br_plan *p, int32_t rank, uint64_t tokens, uint64_t steps,
                     uint64_t rows, uint64_t row_steps, int32_t max_batch, int top1,
                     uint64_t *bytes, uint64_t *messages)
{
    const struct br_part *q = &p->parts[rank];
    uint64_t tp1 = (uint64_t)(p->tp - 1), nl = (uint64_t)(q->layer1 - q->layer0);
    uint64_t dl = (uint64_t)(q->d1 - q->d0);
    uint64_t desc = 4 * (4 + 5 * (uint64_t)max_batch);
    uint64_t b = 0, m = 0;
    if (p->tp > 1) {
        /* every size is linear in the tokens: per token, summed over the layer's calls */
        struct br_coll k[BR_PLAN_MAX_COLLS];
        int n = br_plan_layer_colls(p, 1, k);
        for (int i = 0; i < n; i++) b += nl * tokens * coll_sent(p, q, &k[i], 1, i, 0);
        m += nl * steps * (uint64_t)n;
        if (q->last_stage && rows > 0) {
            n = br_plan_head_colls(p, 1, k);
            for (int i = 0; i < n; i++) b += rows * coll_sent(p, q, &k[i], 1, i, 1);
            m += (uint64_t)n * row_steps;
        }
        if (q->first_stage && q->tp_rank == 0) {
            b += (steps + 1) * desc * tp1; /* the step broadcasts and the stop */
            m += steps + 1;
        }
    }
    if (!q->last_stage) {
        b += (steps + 1) * desc + tokens * 4 * dl; /* descriptors, residuals, the stop */
        m += 2 * steps + 1;
    }
    if (q->last_stage && rank != 0 && rows > 0) {
        b += rows * (top1 ? 8 : 4 * (uint64_t)(q->v1 - q->v0));
        m += row_steps;
    }
    *bytes = b;
    *messages = m;
}

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

void br_plan_rank_figures(const struct br_plan *p, int32_t r, uint64_t mem_limit,
                          struct br_rank_figures *out)
{
    const struct br_model_config *c = &p->cfg;
    int eb = c->embd_type == 0 ? 4 : 2, hb = c->head_type == 0 ? 4 : 2;
    br_part_cost(c, &p->parts[r], eb, hb, &out->cost);
    uint64_t tb, tm;
    br_plan_traffic(p, r, 1000, 1000, 1000, 1000, 64, 1, &tb, &tm);
    out->decode_bytes = tb / 1000;
    out->decode_messages = tm / 1000;
    out->over = mem_limit && out->cost.weight_bytes + out->cost.kv_bytes_per_1k * 4 > mem_limit;
}

int br_plan_describe(const struct br_plan *p, uint64_t mem_limit, FILE *f)
{
    const struct br_model_config *c = &p->cfg;
    int over = 0;
    fprintf(f,
            "plan: tp %d x pp %d = %d ranks, %s residual; %s d %d, %d layers, %d/%d heads, ffn "
            "%d, vocab %d\n",
            p->tp, p->pp, p->tp * p->pp, br_layout_name(p->layout), c->arch_name, c->n_embd,
            c->n_layer, c->n_head, c->n_head_kv, c->n_ff, c->n_vocab);
    fprintf(f, "%5s %5s %9s %9s %11s %11s %12s %11s %12s %10s\n", "rank", "stage", "layers",
            "kv heads", "ffn rows", "hidden", "weights MiB", "KV MiB/1k", "decode B/tok",
            "msgs/tok");
    uint64_t maxw = 0, minw = UINT64_MAX;
    for (int32_t r = 0; r < p->tp * p->pp; r++) {
        const struct br_part *q = &p->parts[r];
        struct br_rank_figures e;
        br_plan_rank_figures(p, r, mem_limit, &e);
        char layers[32], heads[32], ff[32], hid[32];
        snprintf(layers, sizeof layers, "%d-%d", q->layer0, q->layer1 - 1);
        snprintf(heads, sizeof heads, "%d-%d", q->kv0, q->kv1 - 1);
        snprintf(ff, sizeof ff, "%d-%d", q->ff0, q->ff1 - 1);
        snprintf(hid, sizeof hid, "%d-%d", q->d0, q->d1 - 1);
        over += e.over;
        fprintf(f, "%5d %5d %9s %9s %11s %11s %12.1f %11.1f %12llu %10u%s\n", r, q->pp_rank, layers,
                heads, ff, hid, mib(e.cost.weight_bytes), mib(e.cost.kv_bytes_per_1k),
                (unsigned long long)e.decode_bytes, (unsigned)e.decode_messages,
                e.over ? "  OVER" : "");
        if (e.cost.weight_bytes > maxw) maxw = e.cost.weight_bytes;
        if (e.cost.weight_bytes < minw) minw = e.cost.weight_bytes;
    }
    fprintf(f, "imbalance: largest rank holds %.2fx the smallest's weights\n",
            minw ? (double)maxw / (double)minw : 0.0);
    return over;
}
