/*
 * The serving coordinator on world rank 0 (docs/ARCHITECTURE.md, "Coordinator and serving").
 *
 * Modules, one way:  transports (frontend_zmq.c, transport.h)  ->  gateway (gateway.h:
 * limits, request ids, preparation off the transports' threads, final answers)  ->
 * scheduler (sched.h: continuous batching)  ->  executor (the ranks, coordinator/cluster.h).
 * This file owns the lifecycle: starting and stopping them, signals, the stop state.
 *
 * A sequence's output depends only on its own request (the sampler's counter RNG is keyed
 * by (seed, 0, position)), never on what shares its batches.
 */
#ifndef BR_COORDINATOR_SERVER_H
#define BR_COORDINATOR_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "coordinator/tokenizer.h"
#include "worker/comm.h"
#include "worker/engine.h"

struct br_cluster;

struct br_http_opts;
struct br_metrics;
struct br_reqlog;

struct br_server_opts {
    const char *listen;       /* ZeroMQ endpoint; default tcp://127.0.0.1:5555 */
    int32_t max_queue;        /* requests waiting or running before `busy`; default 256 */
    int32_t max_per_client;   /* concurrent requests of one client; default 64 */
    int32_t client_timeout_s; /* free a request whose client went silent; default 30 */
    int32_t batch_tokens;     /* token budget per step; default the engine's max batch */
    /* Steps in flight, each carrying its share of the decoding sequences; default (0) one
     * per pipeline stage. 1 runs one step at a time through the stages. */
    int32_t micro_batches;
    int32_t max_tokens_cap;    /* upper bound for a request's max_tokens; default 4096 */
    int32_t max_prompt_tokens; /* longer prompts are answered too_long; default the context */
    /* Larger client messages are dropped unread; default 4 MiB, above the largest request
     * the decoder's field limits admit, so that a request over a field's limit still gets
     * a bad_request naming the field. */
    int64_t max_request_bytes;
    /* Messages queued at the router for one client before it counts as not reading and
     * its requests are cancelled; default 10000 (64 streams lagging 150 tokens each; a
     * few MiB per stalled client, besides the kernel's socket buffers). */
    int32_t client_queue;
    double stuck_s; /* > 0: a step running this long means rank 0 is stuck in MPI (a lost
                     * rank): the front end answers every request `unavailable` and stops */
    /* CurveZMQ, all or nothing: curve_secret (the server's secret key file) with either
     * curve_clients (a directory of authorized clients' NAME.pub files) or curve_any_client
     * (admit any client that has the server's public key). Any other combination, or a key
     * file of the wrong kind (proto/keyfile.h), is an error at start. */
    const char *curve_secret;
    const char *curve_clients;
    int curve_any_client;
    /* input bytes of requests waiting for or in preparation (tokenization) at once; past
     * it a request is answered busy; default 64 MiB */
    int64_t max_prep_bytes;
    /* optional: names a lost rank and its host into buf (for `unavailable` messages);
     * stuck: rank 0's step has outlived stuck_s. Returns non-zero when it wrote one.
     * Called from the gateway's thread, never from the MPI one. */
    int (*loss)(void *ctx, int stuck, char *buf, size_t n);
    void *loss_ctx;
    /* the OpenAI-compatible HTTP transport (coordinator/frontend_http.h); NULL: none */
    const struct br_http_opts *http;
    struct br_metrics *metrics; /* borrowed; every finished request, both transports; may be NULL */
    struct br_reqlog *log;      /* borrowed; one line per finished request; may be NULL */
};

struct br_server;

/* Checks that the Curve options form a complete, consistent set (see br_server_opts),
 * naming the flag that is missing or contradicts another; loads no file. */
int br_server_curve_check(const struct br_server_opts *o, struct br_err *err);

/* Starts the front end (answering health with `loading`). Curve misconfiguration or a bad
 * key file fails here, before anything listens. info: name/value strings shown
 * by `info` requests (NULL-terminated pairs, copied). */
int br_server_start(const struct br_server_opts *o, const char *const *info, struct br_server **out,
                    struct br_err *err);

/* Serves until br_server_request_stop (or SIGINT/SIGTERM via br_server_install_signals)
 * with the loaded model, driving the ranks through cl (which it stops at the end). The
 * model, driver and tokenizer are borrowed. */
int br_server_run(struct br_server *s, const struct br_model *m, struct br_cluster *cl,
                  const struct br_tok *tok, struct br_err *err);

/* Asks br_server_run to finish its current step and return (async-signal-safe). */
void br_server_request_stop(struct br_server *s);
void br_server_install_signals(struct br_server *s);
/* True once a stop was asked for (a signal, or br_server_request_stop). */
int br_server_stopping(struct br_server *s);

/* Stops the front end and frees everything; NULL-safe. */
void br_server_destroy(struct br_server **s);

#endif
