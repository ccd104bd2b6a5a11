/*
 * Serving metrics shared by every transport, rendered in the Prometheus text exposition
 * format (version 0.0.4) for GET /metrics.
 *
 * Counters and histograms are fed from one place per finished request, the request's
 * outcome (struct br_outcome: what its final `done` or `error` said, or why a front end
 * refused it), so a request counts the same whichever transport carried it. Gauges that
 * belong to the scheduler (running and waiting sequences, KV blocks) are read from it when
 * a scrape renders them. Step times are observed by the scheduler loop.
 *
 * Thread safety: any thread may observe and render at once; each histogram and the
 * counter table have their own mutex (observations are per request or per step, never
 * per token).
 */
#ifndef BR_COORDINATOR_METRICS_H
#define BR_COORDINATOR_METRICS_H

#include <stdint.h>

#include "bitrack/status.h"
#include "coordinator/transport.h"
#include "proto/proto.h"

/* How one request ended, as a transport saw it. Times are milliseconds, < 0 unknown. */
struct br_outcome {
    const char *transport; /* "zmq" or "http" */
    const char *client;    /* peer address, or "" */
    const char *id;        /* request id, or "" */
    int http_status;       /* HTTP only; 0 for ZeroMQ */
    /* finish reason of a done (stop, length, cancelled, error) or the error code
     * (bad_request, too_long, busy, unavailable, internal, unauthorized, not_found,
     * too_large) */
    const char *result;
    uint32_t prompt_tokens, completion_tokens;
    double queue_ms, ttft_ms, total_ms, tpot_ms;
};

/* An outcome with unknown times and no tokens, result `result`. */
void br_outcome_init(struct br_outcome *o, const char *transport, const char *client,
                     const char *id, const char *result);
/* Fills result, tokens and times from a request's final event (done or error). */
void br_outcome_from_event(struct br_outcome *o, const struct br_event *final);

/* Scheduler gauges at the time of a scrape. */
struct br_metrics_gauges {
    int ready; /* 1 serving, 0 loading or stopped */
    int64_t running, waiting;
    int64_t kv_blocks_used, kv_blocks_total;
    int64_t steps;
};

struct br_metrics;

int br_metrics_create(struct br_metrics **out);
/* NULL-safe; NULLs the pointer. */
void br_metrics_destroy(struct br_metrics **m);

/* Counts one finished request (both transports). NULL m is a no-op. */
void br_metrics_observe(struct br_metrics *m, const struct br_outcome *o);
/* One scheduler step took `seconds`. */
void br_metrics_observe_step(struct br_metrics *m, double seconds);
/* A rank was declared lost. */
void br_metrics_lost_rank(struct br_metrics *m);

/* Appends the exposition text to out. BR_E_NOMEM on failure. */
int br_metrics_render(struct br_metrics *m, const struct br_metrics_gauges *g, struct br_buf *out);

#endif
