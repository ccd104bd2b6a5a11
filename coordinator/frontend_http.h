/*
 * The OpenAI-compatible HTTP front end (`bitrack serve --http ADDR`), on libmicrohttpd.
 *
 *   POST /v1/completions, POST /v1/chat/completions   generation (coordinator/http_api.h)
 *   GET  /v1/models                                   the one model served
 *   GET  /health                                      200 ready; 503 loading, draining, lost
 *   GET  /metrics                                     Prometheus text (coordinator/metrics.h)
 *
 * A second transport on the server's scheduler (br_server_submit): requests become the
 * same jobs ZeroMQ clients make, so batching, sampling and exactness are the same. With
 * `stream: true` each token event becomes one Server-Sent Event as the scheduler emits it
 * (text pieces hold complete UTF-8 characters only); a client that goes away cancels its
 * request as soon as the connection is seen closed (at its next event, or within a second
 * through an SSE comment while it waits).
 *
 * Threads: libmicrohttpd's polling threads (opts.threads) parse requests and write
 * responses; the scheduler's thread only copies events into a request's queue and resumes
 * its connection; one ticker thread sends keep-alive comments and ends requests when a
 * rank is lost. A request's state is shared by these under its own mutex and freed by the
 * last of its two owners (the connection, the scheduler's job).
 */
#ifndef BR_COORDINATOR_FRONTEND_HTTP_H
#define BR_COORDINATOR_FRONTEND_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "bitrack/status.h"

struct br_server;
struct br_metrics;
struct br_reqlog;

struct br_http_opts {
    const char *addr;       /* host:port; default 127.0.0.1:8080 (host may be [v6]) */
    const char *model_name; /* the model id clients name (GET /v1/models); required */
    const char *api_key;    /* NULL: no authentication */
    bool auth_all;          /* the key is needed for /health and /metrics too */
    size_t max_body;        /* request bodies above this get 413; default 4 MiB */
    unsigned max_conns;     /* connections at once; default 1024 */
    unsigned timeout_s;     /* a connection silent this long is closed; default 30 */
    unsigned threads;       /* polling threads; default 2 */
};

struct br_http;

/* Binds and starts serving (generation answers 503 until the server is ready). The server,
 * metrics and log are borrowed and must outlive br_http_stop. BR_E_INVALID for a bad
 * address, BR_E_UNAVAILABLE when it cannot be bound. */
int br_http_start(const struct br_http_opts *o, struct br_server *srv, struct br_metrics *m,
                  struct br_reqlog *log, struct br_http **out, struct br_err *err);

/* Ends every open request, stops the threads and frees; NULL-safe. Call after
 * br_server_run returned (every job has had its final event) and before
 * br_server_destroy. */
void br_http_stop(struct br_http **h);

#endif
