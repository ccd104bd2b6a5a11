/*
 * Reference forward pass (see engine.h and FORMATS.md §4).
 *
 * Per layer, for a batch of T tokens (positions p0..p0+T-1):
 *   n = rmsnorm(x) * attn_norm; q8 = quant(n)            (T, d) -> int8 (T, kpad)
 *   q, k, v = BitLinear(Wq|Wk|Wv, q8)                    exact int32, then * scale / s
 *   rope(q), rope(k); k, v -> f16 KV cache               cache (n_ctx, n_kv * hd)
 *   a = causal GQA attention; a = subnorm(a)             (T, n_head * hd_v)
 *   x += BitLinear(Wo, quant(a))
 *   m = rmsnorm(x) * ffn_norm; g, u = BitLinear(Wg|Wu, quant(m))
 *   f = act(g) * u; f = subnorm(f); x += BitLinear(Wd, quant(f))
 * then logits = head(rmsnorm(x) * output_norm).
 *
 * Work is split over output rows (projections, head) and heads (attention), never over a
 * reduction, so results do not depend on the thread count.
 */
#include "worker/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/fp.h"
#include "kernels/ops.h"

struct layer_cache {
    uint16_t *k; /* (n_ctx, n_head_kv * head_dim) f16 */
    uint16_t *v; /* (n_ctx, n_head_kv * head_dim_v) f16 */
};

struct br_engine {
    const struct br_model *m;
    struct br_pool *pool;
    int32_t n_ctx, max_batch;
    int32_t kpad_max; /* widest padded activation */
    struct layer_cache *cache;
    /* scratch, all (max_batch, ...) */
    float *x;      /* residual (T, d) */
    float *xn;     /* normed input (T, max(d, ff, qdim)) */
    int8_t *q8;    /* quantized input (T, kpad_max) */
    float *qs;     /* quantization scales (T,) */
    int32_t *acc;  /* integer sums (T, max rows) */
    float *q, *k, *v; /* (T, n_head*hd), (T, n_kv*hd), (T, n_kv*hd_v) */
    float *att;    /* attention output (T, n_head*hd_v) */
    float *g, *u;  /* (T, ff) */
    float *scores; /* (n_head, n_ctx) softmax scratch per head */
    float *logits_tmp;
    float *layer_rms; /* (n_layer + 1,) */
};

static void *xalloc(size_t n)
{
    return calloc(1, n ? n : 1);
}

int br_engine_create(const struct br_model *m, const struct br_engine_opts *o,
                     struct br_engine **out, struct br_err *err)
{
    *out = NULL;
    const struct br_model_config *c = &m->cfg;
    struct br_engine *e = xalloc(sizeof *e);
    if (!e) return br_err_set(err, BR_E_NOMEM, "out of memory");
    e->m = m;
    e->pool = o ? o->pool : NULL;
    e->n_ctx = o && o->n_ctx > 0 ? o->n_ctx : c->n_ctx;
    e->max_batch = o && o->max_batch > 0 ? o->max_batch : 64;
    int32_t qd = c->n_head * c->head_dim, kd = c->n_head_kv * c->head_dim;
    int32_t vd = c->n_head_kv * c->head_dim_v, od = c->n_head * c->head_dim_v;
    int32_t widest = c->n_embd;
    if (c->n_ff > widest) widest = c->n_ff;
    if (od > widest) widest = od;
    if (qd > widest) widest = qd;
    e->kpad_max = br_tmat_blocks(widest) * BR_TMAT_BLOCK;
    int32_t rows_max = qd + 2 * kd > widest ? qd + 2 * kd : widest;
    size_t T = (size_t)e->max_batch;
    e->cache = xalloc((size_t)c->n_layer * sizeof *e->cache);
    e->x = xalloc(T * (size_t)c->n_embd * sizeof(float));
    e->xn = xalloc(T * (size_t)widest * sizeof(float));
    e->q8 = xalloc(T * (size_t)e->kpad_max);
    e->qs = xalloc(T * sizeof(float));
    e->acc = xalloc(T * (size_t)rows_max * sizeof(int32_t));
    e->q = xalloc(T * (size_t)qd * sizeof(float));
    e->k = xalloc(T * (size_t)kd * sizeof(float));
    e->v = xalloc(T * (size_t)vd * sizeof(float));
    e->att = xalloc(T * (size_t)od * sizeof(float));
    e->g = xalloc(T * (size_t)c->n_ff * sizeof(float));
    e->u = xalloc(T * (size_t)c->n_ff * sizeof(float));
    e->scores = xalloc((size_t)c->n_head * (size_t)e->n_ctx * sizeof(float));
    e->layer_rms = xalloc(((size_t)c->n_layer + 1) * sizeof(float));
    if (!e->cache || !e->x || !e->xn || !e->q8 || !e->qs || !e->acc || !e->q || !e->k || !e->v ||
        !e->att || !e->g || !e->u || !e->scores || !e->layer_rms)
        goto nomem;
    for (int l = 0; l < c->n_layer; l++) {
        e->cache[l].k = xalloc((size_t)e->n_ctx * (size_t)kd * sizeof(uint16_t));
        e->cache[l].v = xalloc((size_t)e->n_ctx * (size_t)vd * sizeof(uint16_t));
        if (!e->cache[l].k || !e->cache[l].v) goto nomem;
    }
    *out = e;
    return BR_OK;
nomem:
    br_engine_destroy(&e);
    return br_err_set(err, BR_E_NOMEM, "out of memory allocating the engine (context %d)",
                      o && o->n_ctx > 0 ? o->n_ctx : c->n_ctx);
}

void br_engine_destroy(struct br_engine **ep)
{
    if (!ep || !*ep) return;
    struct br_engine *e = *ep;
    if (e->cache)
        for (int l = 0; l < e->m->cfg.n_layer; l++) {
            free(e->cache[l].k);
            free(e->cache[l].v);
        }
    free(e->cache);
    free(e->x);
    free(e->xn);
    free(e->q8);
    free(e->qs);
    free(e->acc);
    free(e->q);
    free(e->k);
    free(e->v);
    free(e->att);
    free(e->g);
    free(e->u);
    free(e->scores);
    free(e->logits_tmp);
    free(e->layer_rms);
    free(e);
    *ep = NULL;
}

int32_t br_engine_n_ctx(const struct br_engine *e)
{
    return e->n_ctx;
}

const float *br_engine_layer_rms(const struct br_engine *e)
{
    return e->layer_rms;
}

/* ---- BitLinear: quantize T rows, integer product split over output rows, scale ---- */

struct proj_job {
    const struct br_tmat *w;
    const int8_t *q8;
    size_t kpad;
    int32_t T;
    int32_t *acc; /* (T, w->rows) */
};

static void proj_task(void *ctx, int task, int n_tasks)
{
    struct proj_job *j = ctx;
    int32_t rows = j->w->rows;
    int32_t r0 = (int32_t)((int64_t)rows * task / n_tasks);
    int32_t r1 = (int32_t)((int64_t)rows * (task + 1) / n_tasks);
    if (r0 == r1) return;
    if (j->T == 1)
        br_tmat_gemv(j->w, r0, r1, j->q8, j->acc + r0);
    else
        br_tmat_gemm(j->w, r0, r1, j->T, j->q8, j->kpad, j->acc + r0, (size_t)rows);
}

static int n_tasks_for(const struct br_engine *e, int32_t rows)
{
    int t = br_pool_threads(e->pool);
    if (t == 1) return 1;
    int n = t * 4;
    return n > rows ? rows : n;
}

/* Quantizes x (T, n) into e->q8 (T, kpad) with per-token scales e->qs. */
static void quantize_rows(struct br_engine *e, const float *x, int32_t T, int32_t n, size_t kpad)
{
    for (int32_t t = 0; t < T; t++)
        e->qs[t] = br_quantize_absmax(x + (size_t)t * n, (size_t)n, kpad, e->q8 + (size_t)t * kpad);
}

/* y (T, w->rows) = BitLinear(w, e->q8) with the scales of quantize_rows. If add, y += . */
static void bitlinear(struct br_engine *e, const struct br_tmat *w, int32_t T, float *y, int add)
{
    struct proj_job j = {w, e->q8, (size_t)w->blocks * BR_TMAT_BLOCK, T, e->acc};
    br_pool_run(e->pool, proj_task, &j, n_tasks_for(e, w->rows));
    for (int32_t t = 0; t < T; t++) {
        const int32_t *a = e->acc + (size_t)t * w->rows;
        float *yt = y + (size_t)t * w->rows;
        float s = e->qs[t];
        for (int32_t r = 0; r < w->rows; r++) {
            float v = (float)a[r] / s * w->scale[r];
            yt[r] = add ? yt[r] + v : v;
        }
    }
}

/* ---- attention, one task per head ---- */

struct attn_job {
    struct br_engine *e;
    int layer;
    int32_t T, pos0;
};

static float f16_round(float x)
{
    return br_f16_to_f32(br_f32_to_f16(x));
}

/* Causal attention for one head over the f16 cache. Like the KV cache, the query and
 * the unnormalized softmax weights are rounded to f16 precision before their products: this is what
 * the reference CPU implementations compute, and matching it keeps greedy continuations
 * of real files identical to theirs (tests/unit/bitnet_cpp_test.c). */
static void attn_task(void *ctx, int h, int n_heads)
{
    (void)n_heads;
    struct attn_job *j = ctx;
    struct br_engine *e = j->e;
    const struct br_model_config *c = &e->m->cfg;
    int32_t hd = c->head_dim, hdv = c->head_dim_v;
    int32_t kd = c->n_head_kv * hd, vd = c->n_head_kv * hdv;
    int32_t kvh = h / (c->n_head / c->n_head_kv);
    const struct layer_cache *lc = &e->cache[j->layer];
    float *scores = e->scores + (size_t)h * e->n_ctx;
    float kbuf[BR_MAX_HEAD_DIM], qbuf[BR_MAX_HEAD_DIM];
    float scale = 1.0f / sqrtf((float)hd);
    for (int32_t t = 0; t < j->T; t++) {
        int32_t npos = j->pos0 + t + 1;
        const float *qh = e->q + (size_t)t * c->n_head * hd + (size_t)h * hd;
        for (int32_t i = 0; i < hd; i++) qbuf[i] = f16_round(qh[i]);
        float mx = -INFINITY;
        for (int32_t p = 0; p < npos; p++) {
            const uint16_t *kp = lc->k + (size_t)p * kd + (size_t)kvh * hd;
            for (int32_t i = 0; i < hd; i++) kbuf[i] = br_f16_to_f32(kp[i]);
            scores[p] = br_dot_f32(qbuf, kbuf, (size_t)hd) * scale;
            if (scores[p] > mx) mx = scores[p];
        }
        float sum = 0.0f;
        for (int32_t p = 0; p < npos; p++) {
            scores[p] = expf(scores[p] - mx);
            sum += scores[p];
        }
        float inv = 1.0f / sum;
        float *out = e->att + (size_t)t * c->n_head * hdv + (size_t)h * hdv;
        for (int32_t i = 0; i < hdv; i++) out[i] = 0.0f;
        for (int32_t p = 0; p < npos; p++) {
            const uint16_t *vp = lc->v + (size_t)p * vd + (size_t)kvh * hdv;
            float w = f16_round(scores[p]);
            for (int32_t i = 0; i < hdv; i++) out[i] = fmaf(w, br_f16_to_f32(vp[i]), out[i]);
        }
        for (int32_t i = 0; i < hdv; i++) out[i] *= inv;
    }
}

/* ---- head, one task per slice of the vocabulary ---- */

struct head_job {
    struct br_engine *e;
    const float *xn; /* (T, d) */
    int32_t T;
    float *logits; /* (T, vocab) */
    int failed;
};

static void head_task(void *ctx, int task, int n_tasks)
{
    struct head_job *j = ctx;
    const struct br_dense *h = &j->e->m->head;
    int64_t v0 = h->rows * task / n_tasks, v1 = h->rows * (task + 1) / n_tasks;
    float *row = malloc((size_t)h->cols * sizeof *row);
    if (!row) {
        j->failed = 1;
        return;
    }
    for (int64_t v = v0; v < v1; v++) {
        if (br_dense_row(h, v, row, NULL) != BR_OK) {
            j->failed = 1;
            break;
        }
        for (int32_t t = 0; t < j->T; t++)
            j->logits[(size_t)t * h->rows + v] =
                br_dot_f32(row, j->xn + (size_t)t * h->cols, (size_t)h->cols);
    }
    free(row);
}

static float rms_of(const float *x, int32_t n)
{
    double s = 0;
    for (int32_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return (float)sqrt(s / n);
}

static int eval_batch(struct br_engine *e, const int32_t *tokens, int32_t T, int32_t pos0,
                      float *logits, int want_all, int want_last, struct br_err *err)
{
    const struct br_model *m = e->m;
    const struct br_model_config *c = &m->cfg;
    int32_t d = c->n_embd, hd = c->head_dim, hdv = c->head_dim_v;
    int32_t qd = c->n_head * hd, kd = c->n_head_kv * hd, vd = c->n_head_kv * hdv;
    int32_t od = c->n_head * hdv, ff = c->n_ff;
    size_t kpad_d = (size_t)br_tmat_blocks(d) * BR_TMAT_BLOCK;
    size_t kpad_o = (size_t)br_tmat_blocks(od) * BR_TMAT_BLOCK;
    size_t kpad_f = (size_t)br_tmat_blocks(ff) * BR_TMAT_BLOCK;

    for (int32_t t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= c->n_vocab)
            return br_err_set(err, BR_E_RANGE, "token id %d at position %d is outside the "
                              "vocabulary (0..%d)", tokens[t], pos0 + t, c->n_vocab - 1);
        int rc = br_dense_row(&m->embd, tokens[t], e->x + (size_t)t * d, err);
        if (rc) return rc;
    }
    e->layer_rms[0] = rms_of(e->x + (size_t)(T - 1) * d, d);

    for (int l = 0; l < c->n_layer; l++) {
        const struct br_layer_weights *lw = &m->layers[l];
        /* attention */
        for (int32_t t = 0; t < T; t++)
            br_rmsnorm(e->x + (size_t)t * d, lw->attn_norm, (size_t)d, c->eps, e->xn + (size_t)t * d);
        quantize_rows(e, e->xn, T, d, kpad_d);
        bitlinear(e, &lw->q, T, e->q, 0);
        bitlinear(e, &lw->k, T, e->k, 0);
        bitlinear(e, &lw->v, T, e->v, 0);
        const struct layer_cache *lc = &e->cache[l];
        for (int32_t t = 0; t < T; t++) {
            int32_t pos = pos0 + t;
            float rpos = (float)pos;
            (void)rpos;
            for (int32_t h = 0; h < c->n_head; h++)
                br_rope(e->q + (size_t)t * qd + (size_t)h * hd, hd, c->n_rot, pos, c->rope_base,
                        c->rope_neox);
            for (int32_t h = 0; h < c->n_head_kv; h++)
                br_rope(e->k + (size_t)t * kd + (size_t)h * hd, hd, c->n_rot, pos, c->rope_base,
                        c->rope_neox);
            for (int32_t i = 0; i < kd; i++)
                lc->k[(size_t)pos * kd + i] = br_f32_to_f16(e->k[(size_t)t * kd + i]);
            for (int32_t i = 0; i < vd; i++)
                lc->v[(size_t)pos * vd + i] = br_f32_to_f16(e->v[(size_t)t * vd + i]);
        }
        struct attn_job aj = {e, l, T, pos0};
        br_pool_run(e->pool, attn_task, &aj, c->n_head);
        if (lw->attn_sub_norm)
            for (int32_t t = 0; t < T; t++)
                br_rmsnorm(e->att + (size_t)t * od, lw->attn_sub_norm, (size_t)od, c->eps,
                           e->att + (size_t)t * od);
        quantize_rows(e, e->att, T, od, kpad_o);
        bitlinear(e, &lw->o, T, e->x, 1);

        /* feed-forward */
        for (int32_t t = 0; t < T; t++)
            br_rmsnorm(e->x + (size_t)t * d, lw->ffn_norm, (size_t)d, c->eps, e->xn + (size_t)t * d);
        quantize_rows(e, e->xn, T, d, kpad_d);
        bitlinear(e, &lw->gate, T, e->g, 0);
        bitlinear(e, &lw->up, T, e->u, 0);
        for (size_t i = 0; i < (size_t)T * ff; i++) {
            float a = c->act == BR_ACT_RELU2 ? br_relu2(e->g[i]) : br_silu(e->g[i]);
            e->g[i] = a * e->u[i];
        }
        if (lw->ffn_sub_norm)
            for (int32_t t = 0; t < T; t++)
                br_rmsnorm(e->g + (size_t)t * ff, lw->ffn_sub_norm, (size_t)ff, c->eps,
                           e->g + (size_t)t * ff);
        quantize_rows(e, e->g, T, ff, kpad_f);
        bitlinear(e, &lw->down, T, e->x, 1);
        e->layer_rms[l + 1] = rms_of(e->x + (size_t)(T - 1) * d, d);
    }

    if (!want_all && !want_last) return BR_OK;
    int32_t t0 = want_all ? 0 : T - 1, nt = T - t0;
    for (int32_t t = t0; t < T; t++)
        br_rmsnorm(e->x + (size_t)t * d, m->output_norm, (size_t)d, c->eps,
                   e->xn + (size_t)(t - t0) * d);
    struct head_job hj = {e, e->xn, nt, logits, 0};
    int ntask = br_pool_threads(e->pool) * 8;
    br_pool_run(e->pool, head_task, &hj, ntask);
    if (hj.failed) return br_err_set(err, BR_E_NOMEM, "head evaluation failed");
    return BR_OK;
}

int br_engine_eval(struct br_engine *e, const int32_t *tokens, int32_t n, int32_t pos0,
                   float *logits, enum br_logits_mode mode, struct br_err *err)
{
    if (n <= 0) return br_err_set(err, BR_E_INVALID, "no tokens to evaluate");
    if (pos0 < 0 || n > e->n_ctx - pos0)
        return br_err_set(err, BR_E_TOO_LONG,
                          "positions %d..%d exceed the context of %d tokens", pos0, pos0 + n - 1,
                          e->n_ctx);
    int32_t vocab = e->m->cfg.n_vocab;
    for (int32_t off = 0; off < n; off += e->max_batch) {
        int32_t T = n - off < e->max_batch ? n - off : e->max_batch;
        int last_chunk = off + T == n;
        float *lg = NULL;
        int all = mode == BR_LOGITS_ALL, last = mode == BR_LOGITS_LAST && last_chunk;
        if (all) lg = logits + (size_t)off * vocab;
        if (last) lg = logits;
        int rc = eval_batch(e, tokens + off, T, pos0 + off, lg, all, last, err);
        if (rc) return rc;
    }
    return BR_OK;
}
