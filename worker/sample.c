/*
 * Sampling over vocabulary slices (see sample.h for the pipeline and why splitting the
 * vocabulary cannot change the token).
 *
 * A slice scans its logits once, chunk by chunk: it applies bias and penalties through a
 * small sorted list of the affected ids (never a copy of the slice), records the chunk's
 * softmax statistics, and feeds each token to one of three selectors: the best logit
 * (greedy), the best Gumbel key (plain temperature sampling), or a bounded heap of the C
 * best logits (top-k/top-p/min-p). The total order everywhere is logit descending, then
 * id ascending, so ties never depend on the layout.
 */
#include "worker/sample.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "worker/rng.h"

void br_sample_params_default(struct br_sample_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = 0.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repeat_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->penalty_last_n = 64;
    p->bias = NULL;
    p->n_bias = 0;
    p->cand_cap = BR_SAMPLE_DEFAULT_CAND_CAP;
    p->seed = 0;
}

int br_sample_params_check(const struct br_sample_params *p, int32_t n_vocab, struct br_err *err)
{
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return br_err_set(err, BR_E_INVALID, "temperature %g: must be finite and >= 0",
                          (double)p->temperature);
    if (p->top_k < 0) return br_err_set(err, BR_E_INVALID, "top_k %d: must be >= 0", p->top_k);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return br_err_set(err, BR_E_INVALID, "top_p %g: must be in [0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return br_err_set(err, BR_E_INVALID, "min_p %g: must be in [0, 1]", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty))
        return br_err_set(err, BR_E_INVALID, "repeat_penalty %g: must be finite and > 0",
                          (double)p->repeat_penalty);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return br_err_set(err, BR_E_INVALID, "presence/frequency penalty must be finite");
    if (p->penalty_last_n < -1)
        return br_err_set(err, BR_E_INVALID, "penalty_last_n %d: must be >= -1", p->penalty_last_n);
    if (p->cand_cap < 1)
        return br_err_set(err, BR_E_INVALID, "cand_cap %d: must be >= 1", p->cand_cap);
    if (p->n_bias < 0 || (p->n_bias > 0 && !p->bias))
        return br_err_set(err, BR_E_INVALID, "logit bias: %d entries but no array", p->n_bias);
    for (int32_t i = 0; i < p->n_bias; i++) {
        if (p->bias[i].id < 0 || p->bias[i].id >= n_vocab)
            return br_err_set(err, BR_E_INVALID,
                              "logit bias entry %d: token id %d outside the vocabulary [0, %d)", i,
                              p->bias[i].id, n_vocab);
        float b = p->bias[i].bias;
        if (isnan(b) || (isinf(b) && b > 0))
            return br_err_set(err, BR_E_INVALID,
                              "logit bias entry %d (token %d): %g is not allowed (finite or "
                              "-inf only)",
                              i, p->bias[i].id, (double)b);
    }
    return BR_OK;
}

_Static_assert(sizeof(struct br_cand) == 16, "candidate layout");
_Static_assert(sizeof(struct br_sample_chunk_stat) == 8, "chunk statistics layout");

/* Which selector a slice runs. */
enum select_mode { SEL_GREEDY, SEL_GUMBEL, SEL_TOPC };

static int truncation_on(const struct br_sample_params *p)
{
    return p->top_k > 0 || p->top_p < 1.0f || p->min_p > 0.0f;
}

static enum select_mode select_mode(const struct br_sample_params *p)
{
    if (p->temperature <= 0.0f) return SEL_GREEDY;
    return truncation_on(p) ? SEL_TOPC : SEL_GUMBEL;
}

int32_t br_sample_max_candidates(const struct br_sample_params *p)
{
    if (select_mode(p) != SEL_TOPC) return 1;
    return p->top_k > 0 ? p->top_k : p->cand_cap;
}

int32_t br_sample_n_chunks(int32_t v0, int32_t v1)
{
    return v1 > v0 ? (v1 - v0 + BR_SAMPLE_CHUNK - 1) / BR_SAMPLE_CHUNK : 0;
}

/* ---- bias and penalties: a sorted list of the ids they touch ---- */

struct adj {
    int32_t id;
    int32_t count; /* occurrences in the penalty window */
    float bias;    /* sum of bias entries */
};

static int adj_cmp(const void *a, const void *b)
{
    int32_t x = ((const struct adj *)a)->id, y = ((const struct adj *)b)->id;
    return (x > y) - (x < y);
}

/* Fills adj (capacity cap) with the slice's affected ids, sorted and merged; returns the
 * count. */
static size_t adj_build(const struct br_sample_params *p, int32_t v0, int32_t v1,
                        const int32_t *win, size_t n_win, struct adj *adj)
{
    size_t n = 0;
    for (size_t i = 0; i < n_win; i++)
        if (win[i] >= v0 && win[i] < v1) adj[n++] = (struct adj){win[i], 1, 0.0f};
    for (int32_t i = 0; i < p->n_bias; i++)
        if (p->bias[i].id >= v0 && p->bias[i].id < v1)
            adj[n++] = (struct adj){p->bias[i].id, 0, p->bias[i].bias};
    if (n == 0) return 0;
    qsort(adj, n, sizeof *adj, adj_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && adj[m - 1].id == adj[i].id) {
            adj[m - 1].count += adj[i].count;
            adj[m - 1].bias += adj[i].bias;
        } else {
            adj[m++] = adj[i];
        }
    }
    return m;
}

static float adj_apply(const struct br_sample_params *p, const struct adj *a, float l)
{
    l += a->bias;
    if (a->count > 0) {
        /* llama.cpp: a non-positive logit is multiplied, a positive one divided. */
        if (p->repeat_penalty != 1.0f)
            l = l <= 0.0f ? l * p->repeat_penalty : l / p->repeat_penalty;
        l -= (float)a->count * p->frequency_penalty + p->presence_penalty;
    }
    return l;
}

/* ---- selection order and the bounded heap ---- */

static int cand_better(const struct br_cand *a, const struct br_cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *a, const void *b)
{
    const struct br_cand *x = a, *y = b;
    if (cand_better(x, y)) return -1;
    if (cand_better(y, x)) return 1;
    return 0;
}

/* Min-heap of (cap,) candidates with the worst at the root. */
static void heap_sift_down(struct br_cand *h, int32_t n, int32_t i)
{
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_better(&h[w], &h[l])) w = l;
        if (r < n && cand_better(&h[w], &h[r])) w = r;
        if (w == i) return;
        struct br_cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_offer(struct br_cand *h, int32_t *n, int32_t cap, struct br_cand c)
{
    if (*n < cap) {
        int32_t i = (*n)++;
        h[i] = c;
        while (i > 0) {
            int32_t parent = (i - 1) / 2;
            if (!cand_better(&h[parent], &h[i])) break;
            struct br_cand t = h[i];
            h[i] = h[parent];
            h[parent] = t;
            i = parent;
        }
    } else if (cand_better(&c, &h[0])) {
        h[0] = c;
        heap_sift_down(h, *n, 0);
    }
}

/*
 * Plain temperature sampling draws a Gumbel key for every token; most tokens start far
 * behind the leader and need a draw near 1 to catch up. The gate rejects them from the
 * random bits alone, without the two logarithms. A token d >= 2 behind the best key can
 * only win if -log(-log u) > d - 1 (the 1 absorbs any rounding of the key), hence
 * -log u < e^-(d-1), and since -log u >= 1 - u, 1 - u < e^-K for K = floor(d) - 1. With
 * u = (m + 0.5) 2^-52 that is 2^52 - m < e^-K 2^52 + 1/2; the table holds those bounds
 * rounded generously up, so the gate only ever rejects tokens that would lose.
 */
struct gumbel_gate {
    uint64_t bound[41]; /* (41,) bound[K] >= e^-K 2^52 + 1/2, for K = 0 .. 40 */
};

static void gumbel_gate_init(struct gumbel_gate *g)
{
    for (int k = 0; k <= 40; k++) g->bound[k] = (uint64_t)(exp(-(double)k) * 0x1p52 * 1.001) + 2;
}

static int gumbel_cannot_win(const struct gumbel_gate *g, double d, uint64_t bits)
{
    int k = (int)d - 1; /* d in [2, 40]: k in [1, 39] */
    uint64_t m = bits >> 12;
    return (UINT64_C(1) << 52) - m >= g->bound[k];
}

static double gumbel_key(const struct br_sample_params *p, struct br_rng_step step, int32_t id,
                         float logit)
{
    if (logit == -INFINITY) return -INFINITY;
    return (double)logit / (double)p->temperature +
           br_rng_gumbel_from_bits(br_rng_token_bits(step, (uint64_t)id));
}

int br_sample_candidates(const struct br_sample_params *p, const float *logits, int32_t v0,
                         int32_t v1, const int32_t *history, size_t n_history, uint64_t seq,
                         uint64_t pos, struct br_cand *out, int32_t max_out,
                         struct br_sample_chunk_stat *stats, struct br_err *err)
{
    if (v0 < 0 || v1 <= v0 || v0 % BR_SAMPLE_CHUNK != 0)
        return br_err_set(err, BR_E_INVALID,
                          "vocabulary slice [%d, %d): must be non-empty and start on a "
                          "multiple of %d",
                          v0, v1, BR_SAMPLE_CHUNK);
    if (!logits || !out || !stats || (n_history > 0 && !history))
        return br_err_set(err, BR_E_INVALID, "sample candidates: missing buffer");
    enum select_mode mode = select_mode(p);
    int sums = !p->no_logprob || p->top_p < 1.0f; /* top-p normalises with them */
    int32_t cap = br_sample_max_candidates(p);
    if (cap > v1 - v0) cap = v1 - v0;
    if (max_out < cap)
        return br_err_set(err, BR_E_INVALID, "sample candidates: room for %d, need %d", max_out,
                          cap);

    /* Penalty window: the last penalty_last_n history tokens (all for -1). */
    size_t n_win = 0;
    const int32_t *win = history;
    int penalties =
        p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (penalties && p->penalty_last_n != 0) {
        n_win = p->penalty_last_n < 0 || (size_t)p->penalty_last_n > n_history
                    ? n_history
                    : (size_t)p->penalty_last_n;
        win = history + (n_history - n_win);
    }
    struct adj adj_stack[256];
    struct adj *adj = adj_stack;
    size_t adj_cap = n_win + (size_t)p->n_bias;
    if (adj_cap > sizeof adj_stack / sizeof adj_stack[0]) {
        adj = malloc(adj_cap * sizeof *adj);
        if (!adj) return br_err_set(err, BR_E_NOMEM, "sample candidates: penalty list");
    }
    size_t n_adj = adj_build(p, v0, v1, win, n_win, adj);

    int rc = BR_OK;
    size_t ai = 0;     /* next entry of adj not yet passed */
    int32_t n_out = 0; /* heap size (SEL_TOPC) or 0/1 */
    struct br_cand best = {v0, -INFINITY, -INFINITY};
    float buf[BR_SAMPLE_CHUNK]; /* one chunk of adjusted logits */
    struct gumbel_gate gate;
    struct br_rng_step step = br_rng_step_key(p->seed, seq, pos);
    if (mode == SEL_GUMBEL) gumbel_gate_init(&gate);
    for (int32_t c0 = v0, ci = 0; c0 < v1; c0 += BR_SAMPLE_CHUNK, ci++) {
        int32_t n = v1 - c0 < BR_SAMPLE_CHUNK ? v1 - c0 : BR_SAMPLE_CHUNK;
        memcpy(buf, logits + (c0 - v0), (size_t)n * sizeof *buf);
        for (; ai < n_adj && adj[ai].id < c0 + n; ai++)
            buf[adj[ai].id - c0] = adj_apply(p, &adj[ai], buf[adj[ai].id - c0]);
        /* Branch-free so the compiler can vectorise it; the rare bad value is located
         * afterwards. !(l < inf) is true for NaN and +inf alike. */
        float mx = -INFINITY;
        int bad = 0;
        for (int32_t j = 0; j < n; j++) {
            bad |= !(buf[j] < INFINITY);
            mx = buf[j] > mx ? buf[j] : mx;
        }
        if (bad) {
            int32_t j = 0;
            while (buf[j] < INFINITY) j++;
            int32_t id = c0 + j;
            float raw = logits[id - v0];
            rc = br_err_set(err, BR_E_RANGE, "logit of token %d is %g%s", id, (double)raw,
                            raw < INFINITY ? " (after bias and penalties)" : "");
            goto done;
        }
        /* Summed in index order inside the chunk, so the same on every layout. Single
         * precision exp is ample for a logprob and several times cheaper than double over
         * a whole vocabulary; the sum is kept in double. */
        double sum = 0.0;
        if (!sums)
            sum = NAN; /* the merge's logprob becomes NaN; the max still finds bans */
        else if (mx != -INFINITY)
            for (int32_t j = 0; j < n; j++) sum += (double)expf(buf[j] - mx);
        stats[ci] = (struct br_sample_chunk_stat){mx, (float)sum};

        switch (mode) {
        case SEL_GREEDY:
            for (int32_t j = 0; j < n; j++)
                if (buf[j] > best.logit) best = (struct br_cand){c0 + j, buf[j], -INFINITY};
            break;
        case SEL_GUMBEL:
            for (int32_t j = 0; j < n; j++) {
                if (buf[j] == -INFINITY) continue;
                double lt = (double)buf[j] / (double)p->temperature;
                double d = best.key - lt; /* how far behind the leader this token starts */
                /* A Gumbel draw is below BR_RNG_GUMBEL_MAX, so a token that far behind
                 * cannot win: skipping it changes nothing. */
                if (d > BR_RNG_GUMBEL_MAX) continue;
                uint64_t bits = br_rng_token_bits(step, (uint64_t)(c0 + j));
                if (d >= 2.0 && gumbel_cannot_win(&gate, d, bits)) continue;
                double key = lt + br_rng_gumbel_from_bits(bits);
                if (key > best.key) best = (struct br_cand){c0 + j, buf[j], key};
            }
            break;
        case SEL_TOPC:
            for (int32_t j = 0; j < n; j++) {
                struct br_cand c = {c0 + j, buf[j], 0.0};
                if (n_out < cap || cand_better(&c, &out[0])) heap_offer(out, &n_out, cap, c);
            }
            break;
        }
    }

    if (mode == SEL_TOPC) {
        qsort(out, (size_t)n_out, sizeof *out, cand_cmp);
        for (int32_t i = 0; i < n_out; i++)
            out[i].key = gumbel_key(p, step, out[i].id, out[i].logit);
        rc = n_out;
    } else {
        /* An all-banned slice still reports a (-inf) candidate; merge never picks it
         * unless everything is banned, which it reports as an error. */
        if (best.logit == -INFINITY) best = (struct br_cand){v0, -INFINITY, -INFINITY};
        out[0] = best;
        rc = 1;
    }
done:
    if (adj != adj_stack) free(adj);
    return rc;
}

/* ---- merge on the coordinator ---- */

static int check_slices(const struct br_sample_params *p, const struct br_sample_slice *s,
                        int32_t n_slices, size_t *total, struct br_err *err)
{
    if (n_slices < 1 || !s) return br_err_set(err, BR_E_INVALID, "sample merge: no slices");
    int32_t cap = br_sample_max_candidates(p);
    *total = 0;
    for (int32_t i = 0; i < n_slices; i++) {
        int32_t expect_v0 = i == 0 ? 0 : s[i - 1].v1;
        if (s[i].v0 != expect_v0 || s[i].v1 <= s[i].v0 || s[i].v0 % BR_SAMPLE_CHUNK != 0)
            return br_err_set(err, BR_E_INVALID,
                              "sample merge: slice %d is [%d, %d), expected to start at %d "
                              "(a multiple of %d) and be non-empty",
                              i, s[i].v0, s[i].v1, expect_v0, BR_SAMPLE_CHUNK);
        if (s[i].n_cands < 1 || s[i].n_cands > cap || !s[i].cands || !s[i].stats)
            return br_err_set(err, BR_E_INVALID,
                              "sample merge: slice %d sent %d candidates (1 to %d expected)", i,
                              s[i].n_cands, cap);
        for (int32_t j = 0; j < s[i].n_cands; j++) {
            int32_t id = s[i].cands[j].id;
            if (id < s[i].v0 || id >= s[i].v1)
                return br_err_set(err, BR_E_INVALID,
                                  "sample merge: slice %d candidate %d has token %d outside "
                                  "[%d, %d)",
                                  i, j, id, s[i].v0, s[i].v1);
        }
        *total += (size_t)s[i].n_cands;
    }
    return BR_OK;
}

/* Best Gumbel key among c (n,), ties to the lowest id. */
static const struct br_cand *best_key(const struct br_cand *c, size_t n)
{
    const struct br_cand *b = &c[0];
    for (size_t i = 1; i < n; i++)
        if (c[i].key > b->key || (c[i].key == b->key && c[i].id < b->id)) b = &c[i];
    return b;
}

/* Makes *buf hold at least n elements of size sz (grow-only); false when out of memory. */
static bool ws_need(void **buf, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap && *buf) return true;
    void *q = malloc((n ? n : 1) * sz);
    if (!q) return false;
    free(*buf);
    *buf = q;
    *cap = n;
    return true;
}

void br_sample_ws_free(struct br_sample_ws *ws)
{
    if (!ws) return;
    free(ws->all), free(ws->cands), free(ws->stats);
    memset(ws, 0, sizeof *ws);
}

int br_sample_merge(const struct br_sample_params *p, const struct br_sample_slice *slices,
                    int32_t n_slices, struct br_sample_ws *ws, struct br_sample_result *res,
                    struct br_err *err)
{
    if (!ws) {
        struct br_sample_ws own = {0};
        int rc = br_sample_merge(p, slices, n_slices, &own, res, err);
        br_sample_ws_free(&own);
        return rc;
    }
    size_t total = 0;
    int rc = check_slices(p, slices, n_slices, &total, err);
    if (rc != BR_OK) return rc;
    int32_t n_vocab = slices[n_slices - 1].v1;

    /* Global softmax sum: chunk statistics folded in chunk (= slice, then chunk) order,
     * relative to the exact global max, so every layout computes the same bits. */
    double gmax = -INFINITY, gsum = 0.0;
    for (int32_t i = 0; i < n_slices; i++)
        for (int32_t c = 0, nc = br_sample_n_chunks(slices[i].v0, slices[i].v1); c < nc; c++)
            if (slices[i].stats[c].max > gmax) gmax = (double)slices[i].stats[c].max;
    if (gmax == -INFINITY) return br_err_set(err, BR_E_INVALID, "sampling: every token is banned");
    for (int32_t i = 0; i < n_slices; i++)
        for (int32_t c = 0, nc = br_sample_n_chunks(slices[i].v0, slices[i].v1); c < nc; c++) {
            const struct br_sample_chunk_stat *st = &slices[i].stats[c];
            if (st->max != -INFINITY) gsum += (double)st->sum * exp((double)st->max - gmax);
        }
    double lse = gmax + log(gsum);

    if (!ws_need((void **)&ws->all, &ws->all_cap, total, sizeof *ws->all))
        return br_err_set(err, BR_E_NOMEM, "sample merge: %zu candidates", total);
    struct br_cand *all = ws->all;
    size_t n = 0;
    for (int32_t i = 0; i < n_slices; i++)
        for (int32_t j = 0; j < slices[i].n_cands; j++) all[n++] = slices[i].cands[j];
    qsort(all, n, sizeof *all, cand_cmp);

    const struct br_cand *pick = NULL;
    int32_t n_kept = 0;
    switch (select_mode(p)) {
    case SEL_GREEDY:
        pick = &all[0];
        n_kept = 1;
        break;
    case SEL_GUMBEL:
        pick = best_key(all, n);
        n_kept = n_vocab;
        break;
    case SEL_TOPC: {
        /* The global C best are the first C of the union (see sample.h). */
        size_t k = (size_t)br_sample_max_candidates(p);
        if (k > n) k = n;
        while (k > 1 && all[k - 1].logit == -INFINITY) k--; /* banned tokens never kept */
        /* top-k is the truncation to C itself when on. top-p: probabilities exp(l - m) / z,
         * normalised over the top-k set when top-k is on, else the whole vocabulary (the
         * global statistics). The sum runs in sorted order, the same on every layout. */
        if (p->top_p < 1.0f) {
            double m = gmax, z = gsum;
            if (p->top_k > 0) {
                m = all[0].logit;
                z = 0.0;
                for (size_t i = 0; i < k; i++) z += exp((double)all[i].logit - m);
            }
            double target = (double)p->top_p * z, cum = 0.0;
            for (size_t i = 0; i < k; i++) {
                cum += exp((double)all[i].logit - m);
                if (cum >= target) {
                    k = i + 1;
                    break;
                }
            }
            /* Not reached within k: the nucleus is wider than the candidates and is
             * truncated to them (only possible with top-k off; documented cap). */
        }
        if (p->min_p > 0.0f) {
            /* p_i >= min_p * p_max  <=>  exp(l_i - l_max) >= min_p; the head is kept. */
            size_t i = 1;
            while (i < k && exp((double)all[i].logit - (double)all[0].logit) >= (double)p->min_p)
                i++;
            k = i;
        }
        pick = best_key(all, k);
        n_kept = (int32_t)k;
        break;
    }
    }
    res->token = pick->id;
    res->logit = pick->logit;
    res->logprob = (double)pick->logit - lse;
    res->n_kept = n_kept;
    return BR_OK;
}

int br_sample_full(const struct br_sample_params *p, const float *logits, int32_t n_vocab,
                   const int32_t *history, size_t n_history, uint64_t seq, uint64_t pos,
                   struct br_sample_ws *ws, struct br_sample_result *res, struct br_err *err)
{
    if (!ws) {
        struct br_sample_ws own = {0};
        int rc = br_sample_full(p, logits, n_vocab, history, n_history, seq, pos, &own, res, err);
        br_sample_ws_free(&own);
        return rc;
    }
    if (n_vocab < 1) return br_err_set(err, BR_E_INVALID, "sampling: empty vocabulary");
    int32_t cap = br_sample_max_candidates(p);
    if (cap > n_vocab) cap = n_vocab;
    if (!ws_need((void **)&ws->cands, &ws->cands_cap, (size_t)cap, sizeof *ws->cands) ||
        !ws_need((void **)&ws->stats, &ws->stats_cap, (size_t)br_sample_n_chunks(0, n_vocab),
                 sizeof *ws->stats))
        return br_err_set(err, BR_E_NOMEM, "sampling: candidate buffers");
    int rc = br_sample_candidates(p, logits, 0, n_vocab, history, n_history, seq, pos, ws->cands,
                                  cap, ws->stats, err);
    if (rc < 0) return rc;
    struct br_sample_slice s = {0, n_vocab, ws->cands, rc, ws->stats};
    return br_sample_merge(p, &s, 1, ws, res, err);
}
