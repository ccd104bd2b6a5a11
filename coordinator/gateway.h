/*
 * The serving gateway: the server's side of coordinator/transport.h.
 *
 * Transports submit requests; the gateway keeps the table of requests in flight (limits,
 * duplicate ids, the one final event of each), prepares generate requests for the
 * scheduler on its own thread (chat-template rendering and tokenization, whose cost grows
 * with the input, never run on a transport's thread nor on the scheduler's), and delivers
 * the scheduler's events to the outbox of the transport each request came from.
 *
 * Fairness: requests waiting for preparation queue per client, and the preparing thread
 * takes one request from each client in turn, so a client with many large prompts delays
 * another client's request by at most one preparation. The input bytes waiting or in
 * preparation are capped (opts.max_prep_bytes): past the cap a request is answered
 * `busy` at once.
 *
 * Threads: transports call the transport.h functions; the scheduler's thread calls
 * br_gateway_feed and the sink; the gateway's own thread prepares requests and, every
 * 50 ms, checks for a step that never ends and for a stop whose grace has passed. One
 * mutex guards the table and the queues; nothing in it waits for the scheduler.
 */
#ifndef BR_COORDINATOR_GATEWAY_H
#define BR_COORDINATOR_GATEWAY_H

#include <stdatomic.h>

#include "coordinator/sched.h"
#include "coordinator/transport.h"

struct br_tok;

/* Why the server stops (server.c); the gateway reads it. */
enum br_stop_state {
    BR_STOP_NONE = 0, /* serving */
    BR_STOP_ASKED,    /* a signal or br_server_request_stop: finish and leave */
    BR_STOP_FAILED,   /* the front end could not start */
    BR_STOP_GONE      /* the server is being destroyed: threads end */
};

struct br_gateway_opts {
    int32_t max_queue;      /* generate requests in flight before `busy` */
    int32_t max_per_client; /* of one client */
    int32_t max_prompt_tokens;
    int64_t max_request_bytes;
    int64_t max_prep_bytes;  /* input bytes waiting for or in preparation; default 64 MiB */
    double stuck_s;          /* > 0: a step running this long means a rank is lost */
    double stop_grace_s;     /* after a stop, requests still open are answered after this */
    const char *const *info; /* NULL-terminated name/value pairs (copied) */
    atomic_int *stop;        /* the server's enum br_stop_state */
    /* names the lost rank and its host into buf when one is known (may be NULL); stuck:
     * a step has outlived stuck_s */
    int (*loss)(void *ctx, int stuck, char *buf, size_t n);
    void *loss_ctx;
};

int br_gateway_create(const struct br_gateway_opts *o, struct br_gateway **out, struct br_err *err);
/* Ends the gateway's thread and frees everything; the transports are gone first. */
void br_gateway_destroy(struct br_gateway **gw);

/* Scheduler's thread, once the model is loaded: from now on requests are prepared. */
void br_gateway_set_ready(struct br_gateway *gw, const struct br_tok *tok, int32_t n_vocab,
                          int32_t n_ctx, const char *chat_template);

/* Readable while prepared requests or cancels wait for br_gateway_feed, and after a stop
 * was asked (br_gateway_wake). */
int br_gateway_fd(const struct br_gateway *gw);
/* Wakes whoever polls br_gateway_fd (async-signal-safe). */
void br_gateway_wake(struct br_gateway *gw);
/* Scheduler's thread: moves prepared requests and cancels into the scheduler. */
void br_gateway_feed(struct br_gateway *gw, struct br_sched *s);
/* The sink the scheduler emits to. */
struct br_sched_sink br_gateway_sink(struct br_gateway *gw);
/* Counters the scheduler updates (shared with metrics). */
struct br_sched_stats *br_gateway_stats(struct br_gateway *gw);
/* Scheduler's thread around each step: when it began (0 between steps). */
void br_gateway_step_begins(struct br_gateway *gw, int begins);

/* Every request in flight gets its final event now: error `unavailable` with why (once;
 * its later events are dropped). New requests are refused from now on. */
void br_gateway_answer_all(struct br_gateway *gw, const char *why);

#endif
