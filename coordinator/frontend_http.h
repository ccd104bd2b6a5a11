/*
 * The OpenAI-compatible HTTP front end (`bitrack serve --http ADDR`), on libmicrohttpd.
 *
 *   POST /v1/completions, POST /v1/chat/completions   generation (coordinator/http_api.h)
 *   GET  /v1/models                                   the one model served
 *   GET  /health                                      200 ready; 503 loading or draining
 *   GET  /metrics                                     Prometheus text (coordinator/metrics.h)
 *
 * A second transport on the gateway (coordinator/transport.h): requests become the same
 * struct br_req a ZeroMQ `generate` decodes to and go through the same gateway and
 * scheduler, so limits, batching, sampling and exactness are the same. With
 * `stream: true` each token event becomes one Server-Sent Event as the scheduler emits it
 * (text pieces hold complete UTF-8 characters only); a client that goes away cancels its
 * request as soon as the connection is seen closed (at its next event, or within a second
 * through an SSE comment while it waits).
 *
 * Threads: libmicrohttpd's polling threads (opts.threads) parse requests and write
 * responses; the transport's own thread takes the outbox's events, hands each to its
 * request and resumes the connection, and sends keep-alive comments. A request's state is
 * shared by these under its own mutex and freed by the last of its two owners (the
 * connection, the request in flight at the gateway).
 */
#ifndef BR_COORDINATOR_FRONTEND_HTTP_H
#define BR_COORDINATOR_FRONTEND_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "bitrack/status.h"
#include "coordinator/transport.h"

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

/* The transport (coordinator/transport.h): br_server_opts.http set starts it, NULL leaves
 * it out. Binding fails start with BR_E_INVALID for a bad address, BR_E_UNAVAILABLE when
 * it cannot be bound. */
extern const struct br_transport_ops br_frontend_http;

#endif
