/*
 * Serving metrics (see metrics.h).
 *
 * Request counters are keyed by (transport, result), and HTTP responses by status code;
 * both tables are small and fixed (the known transports and results), so rendering is a
 * walk over arrays. Histograms use fixed bucket bounds chosen for CPU inference: TTFT and
 * end-to-end latency from 5 ms to 5 min, time per output token from 1 ms to 2 s, step
 * time from 0.5 ms to 10 s.
 */
#include "coordinator/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const transports[] = {"zmq", "http"};
#define N_TRANSPORTS 2
static const char *const results[] = {
    "stop",        "length",   "cancelled",    "error",     "bad_request", "too_long", "busy",
    "unavailable", "internal", "unauthorized", "not_found", "too_large",   "other"};
#define N_RESULTS   (sizeof results / sizeof *results)
#define MAX_STATUS  16
#define MAX_BUCKETS 20

struct histo {
    const char *name, *help;
    const double *bounds; /* (n_bounds) seconds, increasing; +Inf implied */
    int n_bounds;
    uint64_t counts[MAX_BUCKETS + 1]; /* per bucket, not cumulative; last is +Inf */
    double sum;
    uint64_t n;
    pthread_mutex_t mu;
};

static const double lat_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                    2.5,   5,    10,    20,   30,  60,   120, 300};
static const double tpot_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
                                     0.1,   0.15,   0.2,   0.3,  0.5,   1,    2};
static const double step_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1,    0.25,  0.5,    1,     2.5,  5,     10};

enum { H_TTFT, H_TPOT, H_E2E, H_QUEUE, H_STEP, N_HISTO };

struct br_metrics {
    pthread_mutex_t mu; /* the counter tables */
    uint64_t requests[N_TRANSPORTS][N_RESULTS];
    uint64_t prompt_tokens[N_TRANSPORTS], gen_tokens[N_TRANSPORTS];
    int status_code[MAX_STATUS];
    uint64_t status_n[MAX_STATUS];
    int n_status;
    uint64_t lost_ranks;
    struct histo h[N_HISTO];
};

static void histo_init(struct histo *h, const char *name, const char *help, const double *b, int n)
{
    h->name = name, h->help = help, h->bounds = b, h->n_bounds = n;
    pthread_mutex_init(&h->mu, NULL);
}

int br_metrics_create(struct br_metrics **out)
{
    struct br_metrics *m = calloc(1, sizeof *m);
    *out = m;
    if (!m) return BR_E_NOMEM;
    pthread_mutex_init(&m->mu, NULL);
#define NB(a) (int)(sizeof a / sizeof *a)
    histo_init(&m->h[H_TTFT], "bitrack_time_to_first_token_seconds",
               "Time from a request's arrival to its first generated token.", lat_bounds,
               NB(lat_bounds));
    histo_init(&m->h[H_TPOT], "bitrack_time_per_output_token_seconds",
               "Mean time between generated tokens of a request, after the first.", tpot_bounds,
               NB(tpot_bounds));
    histo_init(&m->h[H_E2E], "bitrack_e2e_request_latency_seconds",
               "Time from a request's arrival to its last event.", lat_bounds, NB(lat_bounds));
    histo_init(&m->h[H_QUEUE], "bitrack_queue_time_seconds",
               "Time a request waited for a sequence slot and KV blocks.", lat_bounds,
               NB(lat_bounds));
    histo_init(&m->h[H_STEP], "bitrack_step_duration_seconds",
               "Wall time of one scheduler step on rank 0 (issue to collect).", step_bounds,
               NB(step_bounds));
#undef NB
    return BR_OK;
}

void br_metrics_destroy(struct br_metrics **mp)
{
    if (!mp || !*mp) return;
    struct br_metrics *m = *mp;
    for (int i = 0; i < N_HISTO; i++) pthread_mutex_destroy(&m->h[i].mu);
    pthread_mutex_destroy(&m->mu);
    free(m);
    *mp = NULL;
}

static void histo_observe(struct histo *h, double v)
{
    int b = 0;
    while (b < h->n_bounds && v > h->bounds[b]) b++;
    pthread_mutex_lock(&h->mu);
    h->counts[b]++;
    h->sum += v;
    h->n++;
    pthread_mutex_unlock(&h->mu);
}

void br_outcome_init(struct br_outcome *o, const char *transport, const char *client,
                     const char *id, const char *result)
{
    memset(o, 0, sizeof *o);
    o->transport = transport;
    o->client = client ? client : "";
    o->id = id ? id : "";
    o->result = result;
    o->queue_ms = o->ttft_ms = o->total_ms = o->tpot_ms = -1;
}

void br_outcome_from_event(struct br_outcome *o, const struct br_event *r)
{
    if (r->kind == BR_EVENT_DONE) {
        o->result = br_proto_finish_name(r->finish);
        o->prompt_tokens = r->usage.prompt_tokens;
        o->completion_tokens = r->usage.completion_tokens;
        o->queue_ms = r->timings.queue_ms;
        o->ttft_ms = r->usage.completion_tokens ? r->timings.ttft_ms : -1;
        o->total_ms = r->timings.total_ms;
        o->tpot_ms = r->timings.tokens_per_s > 0 ? 1e3 / r->timings.tokens_per_s : -1;
    } else if (r->kind == BR_EVENT_ERROR) {
        o->result = br_proto_code_name(r->code);
    }
}

void br_metrics_observe(struct br_metrics *m, const struct br_outcome *o)
{
    if (!m) return;
    int t = o->transport && !strcmp(o->transport, "http");
    size_t r = N_RESULTS - 1;
    for (size_t i = 0; o->result && i < N_RESULTS; i++)
        if (!strcmp(results[i], o->result)) r = i;
    pthread_mutex_lock(&m->mu);
    m->requests[t][r]++;
    m->prompt_tokens[t] += o->prompt_tokens;
    m->gen_tokens[t] += o->completion_tokens;
    if (o->http_status > 0) {
        int k = 0;
        while (k < m->n_status && m->status_code[k] != o->http_status) k++;
        if (k == m->n_status && k < MAX_STATUS) m->status_code[m->n_status++] = o->http_status;
        if (k < m->n_status) m->status_n[k]++;
    }
    pthread_mutex_unlock(&m->mu);
    if (o->ttft_ms >= 0) histo_observe(&m->h[H_TTFT], o->ttft_ms * 1e-3);
    if (o->tpot_ms >= 0) histo_observe(&m->h[H_TPOT], o->tpot_ms * 1e-3);
    if (o->total_ms >= 0) histo_observe(&m->h[H_E2E], o->total_ms * 1e-3);
    if (o->queue_ms >= 0) histo_observe(&m->h[H_QUEUE], o->queue_ms * 1e-3);
}

void br_metrics_observe_step(struct br_metrics *m, double seconds)
{
    if (m) histo_observe(&m->h[H_STEP], seconds);
}

void br_metrics_lost_rank(struct br_metrics *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->lost_ranks++;
    pthread_mutex_unlock(&m->mu);
}

static int put(struct br_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(struct br_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return BR_E_INTERNAL;
    return br_buf_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* A counter with a value per transport (v: (N_TRANSPORTS,)). */
static int put_by_transport(struct br_buf *b, const char *name, const char *help, const uint64_t *v)
{
    int rc = put(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (int t = 0; !rc && t < N_TRANSPORTS; t++)
        rc = put(b, "%s{transport=\"%s\"} %llu\n", name, transports[t], (unsigned long long)v[t]);
    return rc;
}

static int render_histo(struct histo *h, struct br_buf *b)
{
    uint64_t counts[MAX_BUCKETS + 1], n;
    double sum;
    pthread_mutex_lock(&h->mu);
    memcpy(counts, h->counts, sizeof counts);
    n = h->n;
    sum = h->sum;
    pthread_mutex_unlock(&h->mu);
    int rc = put(b, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    uint64_t cum = 0;
    for (int i = 0; !rc && i < h->n_bounds; i++) {
        cum += counts[i];
        rc = put(b, "%s_bucket{le=\"%g\"} %llu\n", h->name, h->bounds[i], (unsigned long long)cum);
    }
    if (!rc) rc = put(b, "%s_bucket{le=\"+Inf\"} %llu\n", h->name, (unsigned long long)n);
    if (!rc)
        rc = put(b, "%s_sum %.9g\n%s_count %llu\n", h->name, sum, h->name, (unsigned long long)n);
    return rc;
}

int br_metrics_render(struct br_metrics *m, const struct br_metrics_gauges *g, struct br_buf *b)
{
    struct br_metrics c;
    pthread_mutex_lock(&m->mu);
    memcpy(c.requests, m->requests, sizeof c.requests);
    memcpy(c.prompt_tokens, m->prompt_tokens, sizeof c.prompt_tokens);
    memcpy(c.gen_tokens, m->gen_tokens, sizeof c.gen_tokens);
    memcpy(c.status_code, m->status_code, sizeof c.status_code);
    memcpy(c.status_n, m->status_n, sizeof c.status_n);
    c.n_status = m->n_status;
    c.lost_ranks = m->lost_ranks;
    pthread_mutex_unlock(&m->mu);
    int rc = put(b, "# HELP bitrack_requests_total Finished requests by transport and result "
                    "(finish reason or error code).\n# TYPE bitrack_requests_total counter\n");
    for (int t = 0; !rc && t < N_TRANSPORTS; t++)
        for (size_t r = 0; !rc && r < N_RESULTS; r++)
            rc = put(b, "bitrack_requests_total{transport=\"%s\",result=\"%s\"} %llu\n",
                     transports[t], results[r], (unsigned long long)c.requests[t][r]);
    if (!rc)
        rc = put(b, "# HELP bitrack_http_responses_total HTTP generation responses by status "
                    "code.\n# TYPE bitrack_http_responses_total counter\n");
    for (int k = 0; !rc && k < c.n_status; k++)
        rc = put(b, "bitrack_http_responses_total{code=\"%d\"} %llu\n", c.status_code[k],
                 (unsigned long long)c.status_n[k]);
    if (!rc)
        rc = put_by_transport(b, "bitrack_prompt_tokens_total",
                              "Prompt tokens of finished requests.", c.prompt_tokens);
    if (!rc)
        rc = put_by_transport(b, "bitrack_generation_tokens_total",
                              "Generated tokens of finished requests.", c.gen_tokens);
    uint64_t busy = c.requests[0][6] + c.requests[1][6];
    if (!rc)
        rc = put(b,
                 "# HELP bitrack_busy_rejections_total Requests refused because the queue was "
                 "full.\n# TYPE bitrack_busy_rejections_total counter\n"
                 "bitrack_busy_rejections_total %llu\n"
                 "# HELP bitrack_lost_rank_events_total Times a rank was declared lost.\n"
                 "# TYPE bitrack_lost_rank_events_total counter\n"
                 "bitrack_lost_rank_events_total %llu\n",
                 (unsigned long long)busy, (unsigned long long)c.lost_ranks);
    if (!rc)
        rc = put(b,
                 "# HELP bitrack_ready 1 while the model is loaded and serving.\n"
                 "# TYPE bitrack_ready gauge\nbitrack_ready %d\n"
                 "# HELP bitrack_sequences_running Sequences holding a slot (prefill or "
                 "decode).\n# TYPE bitrack_sequences_running gauge\n"
                 "bitrack_sequences_running %lld\n"
                 "# HELP bitrack_sequences_waiting Requests accepted and waiting for a slot.\n"
                 "# TYPE bitrack_sequences_waiting gauge\nbitrack_sequences_waiting %lld\n",
                 g->ready, (long long)g->running, (long long)g->waiting);
    if (!rc)
        rc = put(b,
                 "# HELP bitrack_kv_blocks_used KV cache blocks reserved by admitted "
                 "sequences.\n# TYPE bitrack_kv_blocks_used gauge\nbitrack_kv_blocks_used %lld\n"
                 "# HELP bitrack_kv_blocks_total KV cache blocks in the pool.\n"
                 "# TYPE bitrack_kv_blocks_total gauge\nbitrack_kv_blocks_total %lld\n"
                 "# HELP bitrack_steps_total Scheduler steps issued.\n"
                 "# TYPE bitrack_steps_total counter\nbitrack_steps_total %lld\n",
                 (long long)g->kv_blocks_used, (long long)g->kv_blocks_total, (long long)g->steps);
    for (int i = 0; !rc && i < N_HISTO; i++) rc = render_histo(&m->h[i], b);
    return rc;
}
