/*
 * The seam between transports and the serving gateway.
 *
 * A transport (coordinator/frontend_zmq.c for ZeroMQ, a file per other protocol) turns
 * bytes from clients into requests and the gateway's events into bytes. Everything a
 * server promises about requests is decided behind this seam, once, for every transport:
 * readiness, draining, per-client and global limits (`busy`), duplicate request ids,
 * tokenization and chat-template rendering (off the transport's thread, fairly between
 * clients, with a cap on the input bytes in processing), the scheduler, and the final
 * answer of every request when the server stops or a rank is lost. A transport parses
 * strictly (one message, no duplicate keys, the limits of br_gateway_limits), answers
 * parse errors itself, and does nothing whose cost grows with a request's input.
 *
 * Requests are plain C: struct br_req (proto/proto.h), whatever the wire it came on,
 * plus the client that sent it (struct br_client_key). Events are plain C too
 * (struct br_event): token, done, error, tokenize, detokenize.
 *
 * Contract
 *  - Every request given to br_gateway_submit gets exactly one final event (done, error,
 *    tokenize or detokenize) on the outbox it was submitted with, after any token events
 *    of that request, in order. After the final event the id may be used again.
 *  - A request is known by (outbox, client, id). A generate request whose id is already in
 *    flight for the same client and outbox is refused with an error event of code
 *    `duplicate_id` (BR_PROTO_DUPLICATE_ID); the request in flight is not affected.
 *  - Threads: each outbox belongs to one transport thread, the only one that calls
 *    br_outbox_take on it. br_gateway_* calls are safe from any transport thread at
 *    once; they never block on the scheduler, never sleep, and cost O(1) in the size of
 *    the request's input (the request's memory changes owner, nothing is copied). Events
 *    are appended by gateway threads; br_outbox_fd becomes readable when events wait, so
 *    a transport's poll loop (zmq_poll, poll, epoll) waits on it beside its sockets: no
 *    thread ever waits by sleeping.
 *  - Memory: br_gateway_submit takes *req (leaves it re-initialised): a transport that
 *    fills one itself starts from br_req_init and mallocs every string and array, since
 *    the gateway releases it with br_req_free. Events belong to the transport from
 *    br_outbox_take on and are freed with br_event_free_list.
 *  - Lifecycle: the server creates the gateway, then each transport (its start function
 *    creates its outbox with br_outbox_create and its thread), and at the end stops each
 *    transport (the thread ends, then br_outbox_destroy) before destroying the gateway.
 *    When the server stops, every request in flight gets its final event (error
 *    `unavailable` naming why: a signal, a lost rank and its host) before the transports
 *    are asked to stop; a transport forwards what its outbox holds, then stops.
 *
 * Use from a transport thread, in outline:
 *
 *     br_outbox_create(gw, &box, &err);
 *     for (;;) {
 *         poll({listening sockets..., br_outbox_fd(box)});
 *         on a request:  parse strictly into struct br_req r (limits: br_gateway_limits)
 *                        ping/health/info/metrics: answer at once (br_gateway_health, ...)
 *                        cancel:   br_gateway_cancel(gw, box, &client, id);
 *                        generate, tokenize, detokenize: br_gateway_submit(gw, box, &client, &r);
 *         on a client gone (connection closed, cannot be written to):
 *                        br_gateway_client_gone(gw, box, &client);
 *         on the outbox: for (e = br_outbox_take(box); e; e = e->next) write e to e->client;
 *                        br_event_free_list(...);
 *     }
 */
#ifndef BR_COORDINATOR_TRANSPORT_H
#define BR_COORDINATOR_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "proto/proto.h"

struct br_gateway; /* one per server (coordinator/gateway.c) */
struct br_outbox;  /* one per transport */

/* Who sent a request, in the transport's terms (a ZeroMQ routing id, an HTTP connection
 * number): opaque bytes compared by value. Limits and fairness count per client. */
#define BR_CLIENT_KEY_MAX 255
struct br_client_key {
    uint16_t len;
    uint8_t bytes[BR_CLIENT_KEY_MAX];
};

enum br_event_kind {
    BR_EVENT_TOKEN = 0, /* a generated token (streaming requests only) */
    BR_EVENT_DONE,      /* final: generation ended */
    BR_EVENT_ERROR,     /* final: the request failed or was refused */
    BR_EVENT_TOKENIZE,  /* final: tokens of a tokenize request */
    BR_EVENT_DETOKENIZE /* final: text of a detokenize request */
};

/* One event for one request. Fields are meaningful only for the kinds noted; all strings
 * are NUL-terminated, valid UTF-8, and owned by the event. */
struct br_event {
    struct br_event *next; /* the outbox's order */
    enum br_event_kind kind;
    struct br_client_key client;
    char *id;    /* the request's id; NULL only for an error about an unreadable request */
    bool stream; /* generate: the request asked for streaming */

    /* token: index among completion tokens; token -1 is a text-only event (bytes held
     * back for UTF-8 completeness or a possible stop string, flushed later) */
    uint32_t index;
    int32_t token;
    bool has_logprob;
    float logprob;
    /* token: the piece; done: the whole completion when not streaming (else NULL);
     * detokenize: the text */
    char *text;
    size_t text_len;
    /* token, when the request asked for top_logprobs (token >= 0): the n_top most likely
     * tokens at this position, logprob descending then id ascending (the sampled token's
     * logprob equals its entry's when listed), and the sampled token's own bytes. Each
     * token's bytes lie in `text` after the piece's NUL: text + off, len bytes (a token may
     * end inside a UTF-8 character, so they need not be valid UTF-8). */
    uint8_t n_top;
    struct br_event_alt {
        int32_t token;
        float logprob;
        uint32_t off, len;
    } top[BR_REQ_MAX_TOP_LOGPROBS];
    uint32_t self_off, self_len;

    /* done */
    enum br_finish finish;
    struct br_usage usage;
    struct br_timings timings;

    /* error: code and a message that names the problem */
    enum br_proto_code code;
    char *message;

    /* tokenize */
    int32_t *tokens; /* (n_tokens,) */
    uint32_t n_tokens;
};

/* Frees a list of events (following next); NULL-safe. */
void br_event_free_list(struct br_event *e);

/* ---- outbox: the transport's queue of events ---- */

/* Creates an outbox registered with the gateway (so that a stop reaches its requests). */
int br_outbox_create(struct br_gateway *gw, struct br_outbox **out, struct br_err *err);
/* A file descriptor that polls readable while events wait (level-triggered until
 * br_outbox_take empties the box). Owned by the outbox. */
int br_outbox_fd(const struct br_outbox *box);
/* Takes every waiting event, oldest first (NULL when none); never blocks. */
struct br_event *br_outbox_take(struct br_outbox *box);
/* Unregisters and frees the outbox and any events left in it; NULL-safe. Call after the
 * transport's thread has ended. */
void br_outbox_destroy(struct br_outbox **box);

/* ---- requests ---- */

/* Decode limits for requests: the server's message size, field limits and, once the
 * model is loaded, its vocabulary size. Copied into *lim. */
void br_gateway_limits(struct br_gateway *gw, struct br_proto_limits *lim);

/* Submits a generate, tokenize or detokenize request; *req's memory moves to the
 * gateway (req is left re-initialised). req->id must be set (a transport whose wire has
 * no ids, such as HTTP, makes one per request, unique among the client's requests in
 * flight); the request's fields must already satisfy br_gateway_limits, as
 * br_proto_decode_request guarantees for msgpack. The answer, refusals included (loading,
 * draining, busy, duplicate_id, bad_request, too_long), comes as events on box. */
void br_gateway_submit(struct br_gateway *gw, struct br_outbox *box,
                       const struct br_client_key *client, struct br_req *req);

/* Cancels the client's generate request `id` if it is in flight (its final event, a
 * done with finish reason `cancelled`, still comes); unknown ids are ignored. */
void br_gateway_cancel(struct br_gateway *gw, struct br_outbox *box,
                       const struct br_client_key *client, const char *id);

/* The client is gone or cannot be written to: all its requests are cancelled (once;
 * their final events still come, for the transport to drop). Returns how many. */
int br_gateway_client_gone(struct br_gateway *gw, struct br_outbox *box,
                           const struct br_client_key *client);

/* True while the client has requests in flight on box (a transport's heartbeat or
 * write-side bookkeeping may use it). */
bool br_gateway_client_live(struct br_gateway *gw, struct br_outbox *box,
                            const struct br_client_key *client);

/* Liveness, for transports whose clients send heartbeats: touch marks the client's
 * request `id` as heard from now; expire cancels (once) every streaming request on box not
 * heard from for timeout_s seconds, and returns how many. */
void br_gateway_touch(struct br_gateway *gw, struct br_outbox *box,
                      const struct br_client_key *client, const char *id);
int br_gateway_expire(struct br_gateway *gw, struct br_outbox *box, double timeout_s);

/* ---- a transport, as the server starts and stops it ---- */

struct br_server_opts; /* coordinator/server.h: every serving option */

/* server.c keeps a table of these: a new transport adds its file and one entry. */
struct br_transport_ops {
    const char *name; /* "zmq", "http" */
    /* Binds the transport's endpoint (from o), creates its outbox and its thread; returns
     * an error naming the endpoint when it cannot listen. *state is the transport's. A
     * transport whose endpoint is not configured returns BR_OK with *state NULL (its stop
     * is then not called). Runs on the server's thread before the model loads: requests
     * are answered `unavailable` (loading) until the gateway is ready. */
    int (*start)(struct br_gateway *gw, const struct br_server_opts *o, void **state,
                 struct br_err *err);
    /* Called after the gateway has given every request its final event: forwards what the
     * outbox still holds, ends the thread, frees everything (br_outbox_destroy). */
    void (*stop)(void *state);
};

/* ---- answers a transport gives at once ---- */

enum br_health_state br_gateway_health(struct br_gateway *gw);
/* Fills kv with the server's info entries (strings owned by the gateway, valid until it
 * is destroyed); returns the number written (at most cap). */
size_t br_gateway_info(struct br_gateway *gw, struct br_kv *kv, size_t cap);
/* Fills kv with the metrics counters (keys static); returns the number written. */
size_t br_gateway_metrics(struct br_gateway *gw, struct br_kv *kv, size_t cap);

#endif
