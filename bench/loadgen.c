/*
 * The load generator's run loop and metric arithmetic (see loadgen.h).
 *
 * A phase (warmup, then the measured requests) starts `slots` threads over one shared
 * ticket counter. A slot takes the next ticket i, waits until request i is due (open loop)
 * or not at all (closed loop), sends it with its own br_client and fills record i from the
 * timestamps its streaming callback took. Tickets are handed out in order, so in the open
 * loop a request is late only when every slot is busy: that is the max-concurrency bound.
 * The main thread only draws progress from atomic counters and joins; aggregates are
 * computed after the join from the records alone.
 */
#include "bench/loadgen.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitrack/progress.h"
#include "worker/rng.h"
#include "proto/client.h"

/* PRNG streams: each use of randomness has its own, so changing one does not shift others. */
enum {
    STREAM_ARRIVAL = 1,
    STREAM_REQ_SEED = 2,
    STREAM_IN_LEN = 3,
    STREAM_OUT_LEN = 4,
    STREAM_TOKEN = 5,
};

static const char *const code_names[] = {
#define BR_LOADGEN_CODE_NAME(name, text) text,
    BR_LOADGEN_CODE_LIST(BR_LOADGEN_CODE_NAME)
#undef BR_LOADGEN_CODE_NAME
};

const char *br_loadgen_code_name(enum br_loadgen_code c)
{
    return (unsigned)c < BR_LOADGEN_N_CODES ? code_names[c] : "unknown";
}

enum br_loadgen_code br_loadgen_code_of_status(int status)
{
    switch (status) {
    case BR_OK:
        return BR_LOADGEN_OK;
    case BR_E_BUSY:
        return BR_LOADGEN_BUSY;
    case BR_E_TOO_LONG:
        return BR_LOADGEN_TOO_LONG;
    case BR_E_TIMEOUT:
        return BR_LOADGEN_TIMEOUT;
    case BR_E_PROTOCOL:
        return BR_LOADGEN_BAD_REQUEST;
    case BR_E_CANCELLED:
        return BR_LOADGEN_CANCELLED;
    case BR_E_UNAVAILABLE:
        return BR_LOADGEN_UNAVAILABLE;
    case BR_E_INTERNAL:
        return BR_LOADGEN_INTERNAL;
    default:
        return BR_LOADGEN_OTHER;
    }
}

/* ---- arithmetic ----------------------------------------------------------------------- */

double br_loadgen_percentile(const double *sorted, size_t n, double p)
{
    if (n == 0) return 0.0;
    double x = p / 100.0 * (double)n;
    /* p/100*n is often meant to be an integer (90% of 10) but lands a hair above it in
     * floating point; without the slack, ceil would pick the next rank. */
    double r = ceil(x - 1e-9 * (x > 1.0 ? x : 1.0));
    size_t rank = r < 1.0 ? 1 : r > (double)n ? n : (size_t)r;
    return sorted[rank - 1];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void br_loadgen_dist_compute(double *v, size_t n, struct br_loadgen_dist *d)
{
    memset(d, 0, sizeof *d);
    if (n == 0) return;
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    d->n = n;
    d->mean = sum / (double)n;
    d->p50 = br_loadgen_percentile(v, n, 50.0);
    d->p90 = br_loadgen_percentile(v, n, 90.0);
    d->p99 = br_loadgen_percentile(v, n, 99.0);
    d->min = v[0];
    d->max = v[n - 1];
}

double br_loadgen_interarrival(uint64_t seed, uint64_t i, double rate)
{
    /* Inverse transform: u is in the open interval (0, 1), so the log is finite. */
    double u = br_rng_uniform(seed, i, 0, STREAM_ARRIVAL);
    return -log(u) / rate;
}

/* ---- workloads ------------------------------------------------------------------------ */

/* Uniform integer in [lo, hi]; the modulo bias is below 2^-40 for any range we use. */
static int32_t uniform_int(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t stream, int64_t lo,
                           int64_t hi)
{
    uint64_t span = (uint64_t)(hi - lo) + 1;
    return (int32_t)(lo + (int64_t)(br_rng_u64(seed, seq, pos, stream) % span));
}

static void spread_range(int32_t len, double spread, int64_t *lo, int64_t *hi)
{
    *lo = llround((double)len * (1.0 - spread));
    *hi = llround((double)len * (1.0 + spread));
    if (*lo < 1) *lo = 1;
    if (*hi < *lo) *hi = *lo;
}

int br_loadgen_workload_random(size_t n, int32_t input_len, int32_t output_len, double spread,
                               int32_t vocab, uint64_t seed, struct br_loadgen_workload *out,
                               struct br_err *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0 || input_len < 1 || output_len < 1)
        return br_err_set(err, BR_E_INVALID,
                          "random workload: need requests, input and output "
                          "lengths >= 1");
    if (!(spread >= 0.0 && spread < 1.0))
        return br_err_set(err, BR_E_INVALID,
                          "random workload: len spread must be in [0, 1), got %g", spread);
    if (vocab <= 3)
        return br_err_set(err, BR_E_INVALID, "random workload: vocabulary size must be > 3, got %d",
                          vocab);
    out->items = calloc(n, sizeof *out->items);
    if (!out->items) return br_err_set(err, BR_E_NOMEM, "random workload: out of memory");
    out->n = n;
    int64_t ilo, ihi, olo, ohi;
    spread_range(input_len, spread, &ilo, &ihi);
    spread_range(output_len, spread, &olo, &ohi);
    for (size_t i = 0; i < n; i++) {
        struct br_loadgen_prompt *p = &out->items[i];
        p->n_tokens = (uint32_t)uniform_int(seed, i, 0, STREAM_IN_LEN, ilo, ihi);
        p->max_tokens = uniform_int(seed, i, 0, STREAM_OUT_LEN, olo, ohi);
        p->tokens = malloc(p->n_tokens * sizeof *p->tokens);
        if (!p->tokens) {
            br_loadgen_workload_free(out);
            return br_err_set(err, BR_E_NOMEM, "random workload: out of memory");
        }
        /* ids 0..2 are the usual unknown/begin/end specials; a prompt of them is odd */
        for (uint32_t t = 0; t < p->n_tokens; t++)
            p->tokens[t] = uniform_int(seed, i, t, STREAM_TOKEN, 3, vocab - 1);
    }
    return BR_OK;
}

void br_loadgen_workload_free(struct br_loadgen_workload *w)
{
    if (!w) return;
    for (size_t i = 0; w->items && i < w->n; i++) {
        free(w->items[i].tokens);
        free(w->items[i].text);
    }
    free(w->items);
    memset(w, 0, sizeof *w);
}

/* ---- one request ---------------------------------------------------------------------- */

/* What the streaming callback collects for one request. */
struct req_state {
    double *stamps; /* (cap) br_now() of each token event carrying an id */
    uint32_t n, cap;
    bool oom; /* a stamp could not be stored: the request counts as failed (other) */
    bool done;
    double t_done;
    struct br_usage usage;
    int32_t finish;
};

static int on_event(const struct br_resp *r, void *user)
{
    struct req_state *s = user;
    double t = br_now();
    if (r->type == BR_RESP_TOKEN) {
        if (r->token < 0) return 0; /* text-only flush: no new token */
        if (s->n == s->cap) {
            uint32_t cap = s->cap ? s->cap * 2 : 64;
            double *p = realloc(s->stamps, cap * sizeof *p);
            if (!p) {
                s->oom = true;
                return 0;
            }
            s->stamps = p;
            s->cap = cap;
        }
        s->stamps[s->n++] = t;
    } else if (r->type == BR_RESP_DONE) {
        s->done = true;
        s->t_done = t;
        s->usage = r->usage;
        s->finish = (int32_t)r->finish_reason;
    }
    return 0;
}

/* Everything a phase's slots share. Read-only while the slots run, except the atomics. */
struct phase {
    const struct br_loadgen_config *cfg;
    const struct br_loadgen_workload *wl;
    size_t item0;      /* workload index of ticket 0 */
    int32_t n;         /* tickets */
    const double *due; /* (n) seconds after t0, or NULL: closed loop */
    double t0;
    struct br_loadgen_record *rec; /* (n) */
    atomic_int next;
    atomic_int n_done, n_failed;
};

struct slot {
    struct phase *ph;
    struct br_client *client;
    struct br_loadgen_openai *http; /* instead of client, for an OpenAI-compatible server */
    int32_t first_err_index;        /* the slot's first failure, for the report */
    char first_err[256];
    pthread_t thread;
};

static void sleep_until(double t)
{
    for (;;) {
        double d = t - br_now();
        if (d <= 0.0) return;
        struct timespec ts = {(time_t)d, (long)((d - floor(d)) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static void run_one(struct slot *sl, int32_t i)
{
    struct phase *ph = sl->ph;
    const struct br_loadgen_config *cfg = ph->cfg;
    size_t item = (ph->item0 + (size_t)i) % ph->wl->n;
    const struct br_loadgen_prompt *p = &ph->wl->items[item];
    struct br_loadgen_record *rec = &ph->rec[i];
    struct br_logit_bias bias[64];
    uint32_t n_bias = cfg->n_ban < 64 ? cfg->n_ban : 64;
    for (uint32_t k = 0; k < n_bias; k++)
        bias[k] = (struct br_logit_bias){cfg->ban_tokens[k], -INFINITY};

    struct br_req req;
    br_req_init(&req);
    req.type = BR_REQ_GENERATE;
    if (p->tokens) {
        req.input = BR_INPUT_TOKENS;
        req.tokens = p->tokens;
        req.n_tokens = p->n_tokens;
        req.add_bos = false;
    } else {
        req.input = BR_INPUT_PROMPT;
        req.prompt = p->text;
        req.prompt_len = p->text_len;
    }
    req.max_tokens = p->max_tokens;
    req.stream = true;
    req.sampling.temperature = cfg->temperature;
    if (cfg->temperature == 0.0f) { /* plain greedy: no filters the server would run anyway */
        req.sampling.top_k = 0;
        req.sampling.top_p = 1.0f;
        req.sampling.min_p = 0.0f;
    }
    req.sampling.has_seed = true;
    /* a fixed seed per workload item, below 2^63 so no client reads it as negative */
    req.sampling.seed = br_rng_u64(cfg->seed, item, 0, STREAM_REQ_SEED) >> 1;
    req.sampling.logit_bias = n_bias ? bias : NULL;
    req.sampling.n_logit_bias = n_bias;

    /* a chat request needs text: a token-id prompt becomes one word per id */
    char *words = NULL;
    if (cfg->chat && p->tokens) {
        static const char *const dict[] = {
            "the", "rack",  "of",  "ternary", "weights", "runs",     "on",   "plain",
            "CPU", "nodes", "and", "answers", "every",   "question", "with", "care"};
        words = malloc((size_t)p->n_tokens * 10 + 1);
        if (words) {
            size_t at = 0;
            for (uint32_t t = 0; t < p->n_tokens; t++)
                at += (size_t)sprintf(words + at, "%s%s", t ? " " : "",
                                      dict[(uint32_t)p->tokens[t] % 16]);
            req.input = BR_INPUT_PROMPT;
            req.prompt = words;
            req.prompt_len = at;
        }
    }
    struct req_state st = {0};
    st.finish = -1;
    struct br_err err = {{0}};
    double t_send = br_now();
    int rc = sl->http ? br_loadgen_openai_generate(sl->http, &req, on_event, &st, &err)
                      : br_client_generate(sl->client, &req, on_event, &st, &err);
    double t_end = st.done ? st.t_done : br_now();
    free(words);

    rec->index = i;
    rec->status = rc;
    rec->finish = st.finish;
    rec->sched_ms = ph->due ? ph->due[i] * 1e3 : (t_send - ph->t0) * 1e3;
    rec->start_ms = (t_send - ph->t0) * 1e3;
    rec->e2e_ms = (t_end - t_send) * 1e3;
    /* over HTTP a chunk may carry no new token (text held back): the usage counts them */
    rec->n_out =
        sl->http && st.done && st.usage.completion_tokens ? st.usage.completion_tokens : st.n;
    rec->n_in = st.done ? st.usage.prompt_tokens : p->n_tokens;
    rec->ttft_ms = st.n ? (st.stamps[0] - t_send) * 1e3 : -1.0;
    rec->tpot_ms = st.n >= 2 ? (rec->e2e_ms - rec->ttft_ms) / (double)(st.n - 1) : -1.0;
    rec->code = br_loadgen_code_of_status(rc);
    if (rc == BR_OK && st.finish == BR_FINISH_ERROR) rec->code = BR_LOADGEN_INTERNAL;
    if (rc == BR_OK && st.finish == BR_FINISH_CANCELLED) rec->code = BR_LOADGEN_CANCELLED;
    if (rec->code == BR_LOADGEN_OK && st.oom) rec->code = BR_LOADGEN_OTHER;
    rec->itl_ms = NULL;
    if (st.n >= 2) {
        rec->itl_ms = malloc((st.n - 1) * sizeof *rec->itl_ms);
        if (rec->itl_ms)
            for (uint32_t k = 1; k < st.n; k++)
                rec->itl_ms[k - 1] = (st.stamps[k] - st.stamps[k - 1]) * 1e3;
        else if (rec->code == BR_LOADGEN_OK)
            rec->code = BR_LOADGEN_OTHER;
    }
    free(st.stamps);
    if (rec->code != BR_LOADGEN_OK && sl->first_err_index < 0) {
        sl->first_err_index = i;
        /* the server's message is cut to fit: the report wants one line */
        snprintf(sl->first_err, sizeof sl->first_err, "request %d: %s: %.200s", i,
                 br_loadgen_code_name(rec->code),
                 err.msg[0] ? err.msg
                 : rc       ? br_strerror(rc)
                            : br_proto_finish_name((enum br_finish)st.finish));
    }
    atomic_fetch_add(&ph->n_done, 1);
    if (rec->code != BR_LOADGEN_OK) atomic_fetch_add(&ph->n_failed, 1);
}

static void *slot_main(void *arg)
{
    struct slot *sl = arg;
    struct phase *ph = sl->ph;
    for (;;) {
        int32_t i = atomic_fetch_add(&ph->next, 1);
        if (i >= ph->n) break;
        if (ph->due) sleep_until(ph->t0 + ph->due[i]);
        run_one(sl, i);
    }
    return NULL;
}

static void draw_progress(const struct br_loadgen_config *cfg, struct phase *ph, bool warmup,
                          bool final)
{
    int done = atomic_load(&ph->n_done), failed = atomic_load(&ph->n_failed);
    double el = br_now() - ph->t0;
    fprintf(stderr, "\r%s%s: %d/%d requests, %.2f req/s, %d errors, %.1f s%s",
            cfg->label ? cfg->label : "bench", warmup ? " (warmup)" : "", done, ph->n,
            el > 0 ? done / el : 0.0, failed, el, final ? "\x1b[K\n" : "\x1b[K");
    fflush(stderr);
}

/* Runs tickets [0, ph->n) on the slots; returns BR_OK or the pthread_create failure. */
static int run_phase(struct phase *ph, struct slot *slots, int32_t n_slots, bool warmup,
                     struct br_err *err)
{
    int rc = BR_OK;
    int32_t started = 0;
    atomic_init(&ph->next, 0);
    atomic_init(&ph->n_done, 0);
    atomic_init(&ph->n_failed, 0);
    ph->t0 = br_now();
    for (; started < n_slots && started < ph->n; started++) {
        slots[started].ph = ph;
        if (pthread_create(&slots[started].thread, NULL, slot_main, &slots[started])) {
            /* no more tickets for anyone; the slots already running finish theirs */
            atomic_store(&ph->next, ph->n);
            rc = br_err_set(err, BR_E_INTERNAL, "bench: could not start slot thread %d", started);
            break;
        }
    }
    if (ph->cfg->progress && rc == BR_OK) {
        while (atomic_load(&ph->n_done) < ph->n) {
            draw_progress(ph->cfg, ph, warmup, false);
            struct timespec ts = {0, 250 * 1000000L};
            nanosleep(&ts, NULL);
        }
        draw_progress(ph->cfg, ph, warmup, true);
    }
    for (int32_t k = 0; k < started; k++) pthread_join(slots[k].thread, NULL);
    return rc;
}

/* ---- runs ----------------------------------------------------------------------------- */

void br_loadgen_config_default(struct br_loadgen_config *c)
{
    memset(c, 0, sizeof *c);
    c->concurrency = 1;
    c->requests = 100;
    c->timeout_ms = 30000;
}

int br_loadgen_aggregate(struct br_loadgen_result *r)
{
    size_t n = r->n_records, n_itl = 0;
    r->completed = r->failed = 0;
    memset(r->errors, 0, sizeof r->errors);
    r->in_tokens = r->out_tokens = 0;
    for (size_t i = 0; i < n; i++)
        if (r->records[i].code == BR_LOADGEN_OK && r->records[i].n_out >= 2)
            n_itl += r->records[i].n_out - 1;
    /* (n) ttft, (n) tpot, (n) e2e, (n_itl) itl */
    double *buf = malloc((3 * n + n_itl + 1) * sizeof *buf);
    if (!buf) return BR_E_NOMEM;
    double *ttft = buf, *tpot = buf + n, *e2e = buf + 2 * n, *itl = buf + 3 * n;
    size_t n_ttft = 0, n_tpot = 0, n_e2e = 0, k_itl = 0;
    double late = 0.0;
    for (size_t i = 0; i < n; i++) {
        const struct br_loadgen_record *rec = &r->records[i];
        late += rec->start_ms - rec->sched_ms;
        if (rec->code != BR_LOADGEN_OK) {
            r->failed++;
            r->errors[rec->code]++;
            continue;
        }
        r->completed++;
        r->in_tokens += rec->n_in;
        r->out_tokens += rec->n_out;
        e2e[n_e2e++] = rec->e2e_ms;
        if (rec->n_out >= 1) ttft[n_ttft++] = rec->ttft_ms;
        if (rec->n_out >= 2) {
            tpot[n_tpot++] = rec->tpot_ms;
            if (rec->itl_ms) memcpy(itl + k_itl, rec->itl_ms, (rec->n_out - 1) * sizeof *itl);
            k_itl += rec->itl_ms ? rec->n_out - 1 : 0;
        }
    }
    r->mean_lateness_ms = n ? late / (double)n : 0.0;
    br_loadgen_dist_compute(ttft, n_ttft, &r->ttft);
    br_loadgen_dist_compute(tpot, n_tpot, &r->tpot);
    br_loadgen_dist_compute(e2e, n_e2e, &r->e2e);
    br_loadgen_dist_compute(itl, k_itl, &r->itl);
    free(buf);
    double d = r->duration_s;
    r->req_per_s = d > 0 ? r->completed / d : 0.0;
    r->in_tok_per_s = d > 0 ? (double)r->in_tokens / d : 0.0;
    r->out_tok_per_s = d > 0 ? (double)r->out_tokens / d : 0.0;
    return BR_OK;
}

void br_loadgen_result_free(struct br_loadgen_result **r)
{
    if (!r || !*r) return;
    for (size_t i = 0; (*r)->records && i < (*r)->n_records; i++) free((*r)->records[i].itl_ms);
    free((*r)->records);
    free(*r);
    *r = NULL;
}

static void free_records(struct br_loadgen_record *rec, int32_t n)
{
    for (int32_t i = 0; rec && i < n; i++) free(rec[i].itl_ms);
    free(rec);
}

int br_loadgen_run(const struct br_loadgen_config *cfg, const struct br_loadgen_workload *wl,
                   struct br_loadgen_result **out, struct br_err *err)
{
    int rc;
    if (!cfg || !wl || !out) return br_err_set(err, BR_E_INVALID, "br_loadgen_run: NULL argument");
    *out = NULL;
    if (wl->n == 0) return br_err_set(err, BR_E_INVALID, "bench: the workload is empty");
    if (cfg->requests < 1 || cfg->warmup < 0)
        return br_err_set(err, BR_E_INVALID, "bench: need requests >= 1 and warmup >= 0");
    if (cfg->n_ban > 64) return br_err_set(err, BR_E_INVALID, "bench: at most 64 banned tokens");
    bool open_loop = cfg->rate > 0.0;
    if (cfg->rate < 0.0 || !isfinite(cfg->rate))
        return br_err_set(err, BR_E_INVALID, "bench: rate must be a positive number, got %g",
                          cfg->rate);
    int32_t n_slots = open_loop ? cfg->max_concurrency : cfg->concurrency;
    if (open_loop && n_slots <= 0)
        n_slots = cfg->requests < BR_LOADGEN_MAX_SLOTS ? cfg->requests : BR_LOADGEN_MAX_SLOTS;
    if (n_slots < 1 || n_slots > BR_LOADGEN_MAX_SLOTS)
        return br_err_set(err, BR_E_INVALID, "bench: concurrency must be in [1, %d], got %d",
                          BR_LOADGEN_MAX_SLOTS, n_slots);

    struct br_loadgen_result *r = calloc(1, sizeof *r);
    struct slot *slots = calloc((size_t)n_slots, sizeof *slots);
    double *due = open_loop ? malloc((size_t)cfg->requests * sizeof *due) : NULL;
    struct br_loadgen_record *warm = cfg->warmup ? calloc((size_t)cfg->warmup, sizeof *warm) : NULL;
    if (!r || !slots || (open_loop && !due) || (cfg->warmup && !warm)) {
        rc = br_err_set(err, BR_E_NOMEM, "bench: out of memory");
        goto fail_alloc;
    }
    r->records = calloc((size_t)cfg->requests, sizeof *r->records);
    if (!r->records) {
        rc = br_err_set(err, BR_E_NOMEM, "bench: out of memory");
        goto fail_alloc;
    }
    r->n_records = (size_t)cfg->requests;
    r->config = *cfg;
    r->slots = n_slots;
    if (open_loop) {
        double t = 0.0;
        for (int32_t i = 0; i < cfg->requests; i++)
            due[i] = t += br_loadgen_interarrival(cfg->seed, (uint64_t)i, cfg->rate);
    }
    int32_t n_clients = 0;
    for (; n_clients < n_slots; n_clients++) {
        slots[n_clients].first_err_index = -1;
        rc = cfg->openai_url ? br_loadgen_openai_open(cfg, &slots[n_clients].http, err)
                             : br_client_connect_curve(cfg->server, cfg->timeout_ms, cfg->curve,
                                                       &slots[n_clients].client, err);
        if (rc) goto fail_clients;
    }

    /* Warmup: closed loop on the same slots, so connections and server caches are warm. */
    if (cfg->warmup) {
        struct phase wp = {.cfg = cfg, .wl = wl, .item0 = 0, .n = cfg->warmup, .rec = warm};
        rc = run_phase(&wp, slots, n_slots, true, err);
        if (rc) goto fail_clients;
        for (int32_t k = 0; k < n_slots; k++) slots[k].first_err_index = -1;
    }
    struct phase mp = {.cfg = cfg,
                       .wl = wl,
                       .item0 = (size_t)cfg->warmup,
                       .n = cfg->requests,
                       .due = due,
                       .rec = r->records};
    rc = run_phase(&mp, slots, n_slots, false, err);
    if (rc) goto fail_clients;
    double end_ms = 0.0;
    for (size_t i = 0; i < r->n_records; i++)
        if (r->records[i].start_ms + r->records[i].e2e_ms > end_ms)
            end_ms = r->records[i].start_ms + r->records[i].e2e_ms;
    r->duration_s = end_ms * 1e-3;
    int32_t best = -1;
    for (int32_t k = 0; k < n_slots; k++)
        if (slots[k].first_err_index >= 0 &&
            (best < 0 || slots[k].first_err_index < slots[best].first_err_index))
            best = k;
    if (best >= 0) snprintf(r->first_error, sizeof r->first_error, "%s", slots[best].first_err);
    rc = br_loadgen_aggregate(r);
    if (rc) {
        br_err_set(err, rc, "bench: out of memory");
        goto fail_clients;
    }
    for (int32_t k = 0; k < n_clients; k++) {
        br_client_close(&slots[k].client);
        br_loadgen_openai_close(&slots[k].http);
    }
    free_records(warm, cfg->warmup);
    free(due);
    free(slots);
    *out = r;
    return BR_OK;

fail_clients:
    for (int32_t k = 0; k < n_clients; k++) {
        br_client_close(&slots[k].client);
        br_loadgen_openai_close(&slots[k].http);
    }
fail_alloc:
    free_records(warm, cfg->warmup);
    free(due);
    free(slots);
    br_loadgen_result_free(&r);
    return rc;
}
