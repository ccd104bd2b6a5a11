/*
 * Serving coordinator (see server.h).
 *
 * Front end <-> main thread, over one inproc PAIR socket, one frame per message:
 *   front end -> main   'J' + pointer to a struct job (ownership moves to main)
 *                       'C' + route length (2) + route + request id  (cancel / timeout)
 *   main -> front end   'E' + final flag (1) + route length (2) + route + payload
 * The payload is an encoded response, forwarded to the route (the client's ROUTER
 * identity). A final event ends the request: the front end forgets it.
 *
 * Scheduler (main thread), per step:
 *   1. requests waiting in FIFO order are admitted while a sequence slot is free and
 *      their worst-case KV blocks (prompt + max_tokens) fit the unreserved pool;
 *   2. every running sequence with a token to feed contributes that token (decode);
 *   3. the rest of the token budget goes to prompt chunks of admitted sequences, oldest
 *      first; a chunk that completes its prompt asks for logits;
 *   4. slots of finished sequences are freed in the next step's descriptor.
 * Reserving blocks at admission means a running sequence never runs out of cache, so no
 * preemption is needed; the price is that a long max_tokens holds blocks it may not use.
 */
#include "coordinator/server.h"
#include "coordinator/transport.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bitrack/progress.h"
#include "coordinator/chat.h"
#include "coordinator/stop.h"
#include "worker/sample.h"
#include "proto/keyfile.h"
#include "proto/proto.h"
#include "worker/dist.h"

/* A struct job changes threads as a pointer sent over the inproc PAIR socket. libzmq is
 * not built with ThreadSanitizer, so TSan cannot see the synchronisation inside its pipe
 * and would report the main thread's first use of a job as a race with the front end
 * that filled it; under TSan the hand-over is declared explicitly. */
#if defined(__SANITIZE_THREAD__)
#define BR_SERVER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BR_SERVER_TSAN 1
#endif
#endif
#ifdef BR_SERVER_TSAN
#include <sanitizer/tsan_interface.h>
#define HANDOFF_RELEASE(p) __tsan_release(p)
#define HANDOFF_ACQUIRE(p) __tsan_acquire(p)
#else
#define HANDOFF_RELEASE(p) ((void)(p))
#define HANDOFF_ACQUIRE(p) ((void)(p))
#endif

#define ROUTE_MAX          255
#define BR_SCHED_MAX_BATCH 1024
#define INPROC             "inproc://bitrack-frontend"
#define MONITOR            "inproc://bitrack-monitor"

enum job_state { JOB_WAITING, JOB_PREFILL, JOB_DECODE, JOB_DONE };

struct job {
    uint8_t route[ROUTE_MAX];
    size_t route_len;
    struct br_req req;
    int32_t *prompt; /* (n_prompt,) */
    int32_t n_prompt;
    double t_arrival, t_admit, t_first, t_last;
    /* main thread */
    enum job_state state;
    int32_t slot, n_fed, n_gen, max_new, next_token, blocks;
    int inflight;  /* a step that will sample this job's next token is in flight */
    int32_t *hist; /* prompt then generated, (n_prompt + max_new,) */
    int32_t n_hist;
    struct br_sample_params sp;
    struct br_sample_stop stop;
    struct br_detok *dt;
    char *text; /* detokenized output so far */
    size_t text_len, text_cap, emitted;
    int cancelled;
    struct job *next;
};

/* Front end's record of a live request. */
struct live {
    uint8_t route[ROUTE_MAX];
    size_t route_len;
    char *id;
    double last_seen;
    int stream;
    int dropped; /* cancelled because its client could not be sent to */
    struct live *next;
};

struct br_server {
    struct br_server_opts o;
    char *listen;
    void *zctx;
    void *fe_pair;   /* used by the front-end thread only */
    void *main_pair; /* used by the main thread only */
    pthread_t fe_thread;
    int fe_started;
    atomic_int stop;
    atomic_int ready;
    char **info; /* NULL-terminated name/value pairs */
    /* shared read-only after ready */
    const struct br_tok *tok;
    const struct br_model *model;
    int32_t n_ctx;
    /* metrics */
    atomic_long n_requests, n_completed, n_rejected, n_tokens_out, n_tokens_in, n_steps;
    atomic_int n_live, n_running;
    _Atomic double step_since; /* when the running step began; 0 between steps */
    char chat_template[32];
    /* CurveZMQ: keys loaded by br_server_start, put on the router by the front end */
    char curve_secret[41];  /* the server's secret key, z85 (when o.curve_secret) */
    char (*curve_keys)[41]; /* (n_curve_keys,) authorized public keys, z85 */
    size_t n_curve_keys;
    void *zap;     /* ZAP REP socket, bound before the router; used by the ZAP thread */
    void *monitor; /* the router's failed handshakes (front end only) */
    double monitor_last_log;
    long monitor_unlogged;
    pthread_t zap_thread;
    int zap_started;
    int fe_send_errno; /* front end: why the last reply could not be sent (0: it was) */
};

static struct br_server *signal_server; /* for the signal handler only */

/* ---- small helpers ---- */

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int send_frame(void *sock, const void *data, size_t len, int flags)
{
    return zmq_send(sock, data, len, flags) < 0 ? BR_E_UNAVAILABLE : BR_OK;
}

/* main -> front end: an event for a route */
static void post_event(struct br_server *s, const struct job *j, const struct br_buf *payload,
                       int final)
{
    size_t n = 4 + j->route_len + payload->len;
    uint8_t *m = malloc(n);
    if (!m) return;
    m[0] = 'E';
    m[1] = (uint8_t) final;
    m[2] = (uint8_t)(j->route_len >> 8);
    m[3] = (uint8_t)j->route_len;
    memcpy(m + 4, j->route, j->route_len);
    memcpy(m + 4 + j->route_len, payload->data, payload->len);
    send_frame(s->main_pair, m, n, 0);
    free(m);
}

static void job_free(struct job *j)
{
    if (!j) return;
    br_req_free(&j->req);
    free(j->prompt);
    free(j->hist);
    free(j->text);
    br_detok_destroy(&j->dt);
    free((void *)j->stop.strings);
    free(j);
}

/* ---- front end ---- */

/* Never blocks: the router is ZMQ_ROUTER_MANDATORY, so a client whose queue is full
 * (EAGAIN) or who is gone (EHOSTUNREACH) makes this fail with errno saying which. */
static int fe_reply(struct br_server *s, void *router, const uint8_t *route, size_t route_len,
                    const struct br_buf *b)
{
    if (send_frame(router, route, route_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) == BR_OK &&
        send_frame(router, b->data, b->len, ZMQ_DONTWAIT) == BR_OK)
        return 0;
    s->fe_send_errno = zmq_errno();
    return -1;
}

static void fe_error(struct br_server *s, void *router, const uint8_t *route, size_t route_len,
                     const char *id, enum br_proto_code code, const char *msg)
{
    struct br_buf b = {0};
    if (br_proto_encode_error(&b, id, code, msg) == BR_OK)
        fe_reply(s, router, route, route_len, &b);
    br_buf_free(&b);
}

static struct live *live_find(struct live *l, const uint8_t *route, size_t rl, const char *id)
{
    for (; l; l = l->next)
        if (l->route_len == rl && !memcmp(l->route, route, rl) && !strcmp(l->id, id)) return l;
    return NULL;
}

static void live_remove(struct live **head, const uint8_t *route, size_t rl, const char *id)
{
    for (struct live **p = head; *p; p = &(*p)->next)
        if ((*p)->route_len == rl && !memcmp((*p)->route, route, rl) && !strcmp((*p)->id, id)) {
            struct live *d = *p;
            *p = d->next;
            free(d->id);
            free(d);
            return;
        }
}

static int live_count_route(const struct live *l, const uint8_t *route, size_t rl)
{
    int n = 0;
    for (; l; l = l->next) n += l->route_len == rl && !memcmp(l->route, route, rl);
    return n;
}

static void fe_cancel(struct br_server *s, const uint8_t *route, size_t rl, const char *id)
{
    size_t idl = strlen(id);
    uint8_t *m = malloc(3 + rl + idl);
    if (!m) return;
    m[0] = 'C';
    m[1] = (uint8_t)(rl >> 8);
    m[2] = (uint8_t)rl;
    memcpy(m + 3, route, rl);
    memcpy(m + 3 + rl, id, idl);
    send_frame(s->fe_pair, m, 3 + rl + idl, 0);
    free(m);
}

/* A client that cannot be sent to (it stopped reading and its queue at the router is
 * full, or it is gone) would keep its sequences generating into the void and its events
 * piling up: its live requests are cancelled, once each, freeing their slots for others. */
static void fe_drop_route(struct br_server *s, struct live *lives, const uint8_t *route, size_t rl,
                          int why)
{
    int n = 0;
    for (struct live *l = lives; l; l = l->next)
        if (!l->dropped && l->route_len == rl && !memcmp(l->route, route, rl)) {
            l->dropped = 1;
            fe_cancel(s, l->route, rl, l->id);
            n++;
        }
    if (n)
        fprintf(stderr, "bitrack serve: %s; cancelled %d of its requests\n",
                why == EAGAIN ? "a client stopped reading (its send queue is full)"
                              : "a client went away",
                n);
}

/* Prepares a generate request: prompt tokens, limits. Returns 0 and hands the job to the
 * main thread, or answers an error itself. */
static void fe_generate(struct br_server *s, void *router, const uint8_t *route, size_t rl,
                        struct br_req *req, struct live **lives)
{
    char msg[256];
    if (!atomic_load(&s->ready)) {
        fe_error(s, router, route, rl, req->id, BR_PROTO_UNAVAILABLE, "the model is still loading");
        return;
    }
    if (atomic_load(&s->stop)) {
        fe_error(s, router, route, rl, req->id, BR_PROTO_UNAVAILABLE,
                 "the server is shutting down; retry later");
        return;
    }
    if (live_find(*lives, route, rl, req->id)) {
        fe_error(s, router, route, rl, req->id, BR_PROTO_BAD_REQUEST,
                 "id: a request with this id is already running");
        return;
    }
    if (atomic_load(&s->n_live) >= s->o.max_queue) {
        atomic_fetch_add(&s->n_rejected, 1);
        fe_error(s, router, route, rl, req->id, BR_PROTO_BUSY,
                 "the server queue is full; retry later");
        return;
    }
    if (live_count_route(*lives, route, rl) >= s->o.max_per_client) {
        atomic_fetch_add(&s->n_rejected, 1);
        snprintf(msg, sizeof msg,
                 "this connection already has %d requests in progress, the most the server "
                 "allows one client; retry when one ends",
                 s->o.max_per_client);
        fe_error(s, router, route, rl, req->id, BR_PROTO_BUSY, msg);
        return;
    }
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        fe_error(s, router, route, rl, req->id, BR_PROTO_INTERNAL, "out of memory");
        return;
    }
    j->t_arrival = br_now();
    memcpy(j->route, route, rl);
    j->route_len = rl;
    struct br_err err = {{0}};
    int rc = BR_OK;
    if (req->input == BR_INPUT_TOKENS) {
        j->n_prompt = (int32_t)req->n_tokens;
        j->prompt = malloc(((size_t)req->n_tokens + 1) * sizeof *j->prompt);
        if (!j->prompt)
            rc = br_err_set(&err, BR_E_NOMEM, "out of memory");
        else
            memcpy(j->prompt, req->tokens, (size_t)req->n_tokens * sizeof *j->prompt);
        for (uint32_t i = 0; !rc && i < req->n_tokens; i++)
            if (req->tokens[i] < 0 || req->tokens[i] >= s->model->cfg.n_vocab)
                rc = br_err_set(&err, BR_E_PROTOCOL, "tokens[%u]: id %d is outside the vocabulary",
                                i, req->tokens[i]);
    } else {
        char *text = NULL;
        size_t len = 0;
        unsigned flags = req->add_bos ? BR_TOK_ADD_BOS : 0;
        if (req->input == BR_INPUT_MESSAGES) {
            const char *tmpl = req->chat_template ? req->chat_template : s->chat_template;
            struct br_chat_turn *turns =
                calloc(req->n_messages ? req->n_messages : 1, sizeof *turns);
            if (!turns) rc = br_err_set(&err, BR_E_NOMEM, "out of memory");
            for (uint32_t i = 0; !rc && i < req->n_messages; i++) {
                turns[i].role = br_proto_role_name(req->messages[i].role);
                turns[i].content = req->messages[i].content;
            }
            if (!rc) rc = br_chat_render(tmpl, turns, req->n_messages, 1, &text, &len, &err);
            free(turns);
            flags |= BR_TOK_PARSE_SPECIAL; /* the template's control tokens */
        } else {
            text = req->prompt;
            len = req->prompt_len;
        }
        size_t n = 0;
        if (!rc) rc = br_tok_encode(s->tok, text, len, flags, &j->prompt, &n, &err);
        if (req->input == BR_INPUT_MESSAGES) free(text);
        j->n_prompt = (int32_t)n;
    }
    if (rc) {
        fe_error(s, router, route, rl, req->id,
                 rc == BR_E_NOMEM ? BR_PROTO_INTERNAL : BR_PROTO_BAD_REQUEST, err.msg);
        job_free(j);
        return;
    }
    if (j->n_prompt == 0) {
        fe_error(s, router, route, rl, req->id, BR_PROTO_BAD_REQUEST, "prompt: no tokens");
        job_free(j);
        return;
    }
    if (s->o.max_prompt_tokens > 0 && j->n_prompt > s->o.max_prompt_tokens) {
        snprintf(msg, sizeof msg, "the prompt has %d tokens; this server accepts at most %d",
                 j->n_prompt, s->o.max_prompt_tokens);
        fe_error(s, router, route, rl, req->id, BR_PROTO_TOO_LONG, msg);
        job_free(j);
        return;
    }
    if (j->n_prompt >= s->n_ctx) {
        snprintf(msg, sizeof msg,
                 "the prompt has %d tokens; the context holds %d (prompt and "
                 "at least one generated token)",
                 j->n_prompt, s->n_ctx);
        fe_error(s, router, route, rl, req->id, BR_PROTO_TOO_LONG, msg);
        job_free(j);
        return;
    }
    j->req = *req; /* the job owns the request's memory now */
    br_req_init(req);
    struct live *lv = calloc(1, sizeof *lv);
    if (!lv || !(lv->id = xstrdup(j->req.id))) {
        free(lv);
        fe_error(s, router, route, rl, j->req.id, BR_PROTO_INTERNAL, "out of memory");
        job_free(j);
        return;
    }
    memcpy(lv->route, route, rl);
    lv->route_len = rl;
    lv->last_seen = br_now();
    lv->stream = j->req.stream;
    lv->next = *lives;
    *lives = lv;
    atomic_fetch_add(&s->n_live, 1);
    atomic_fetch_add(&s->n_requests, 1);
    uint8_t m[1 + sizeof j];
    m[0] = 'J';
    memcpy(m + 1, &j, sizeof j);
    HANDOFF_RELEASE(j);
    send_frame(s->fe_pair, m, sizeof m, 0);
}

static void fe_handle_client(struct br_server *s, void *router, struct live **lives)
{
    /* [route][payload] (a DEALER sends one frame; tolerate an empty delimiter) */
    uint8_t route[ROUTE_MAX];
    int rl = zmq_recv(router, route, sizeof route, 0);
    if (rl < 0) return;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int more = 1, have = 0;
    while (more) {
        zmq_msg_close(&msg);
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, router, 0) < 0) break;
        have = 1;
        more = zmq_msg_more(&msg);
    }
    if (!have || rl > ROUTE_MAX) {
        zmq_msg_close(&msg);
        return;
    }
    struct br_req req;
    br_req_init(&req);
    struct br_err err = {{0}};
    struct br_proto_limits lim;
    br_proto_limits_default(&lim);
    lim.max_msg_bytes = (size_t)s->o.max_request_bytes;
    /* s->model, s->tok and s->n_ctx are written by the main thread before it sets ready;
     * read them only after seeing ready (the atomic load orders the reads after those
     * writes) */
    const int ready = atomic_load(&s->ready);
    lim.vocab_size = ready ? s->model->cfg.n_vocab : 0;
    int rc = br_proto_decode_request(zmq_msg_data(&msg), zmq_msg_size(&msg), &lim, &req, &err);
    zmq_msg_close(&msg);
    if (rc) {
        fe_error(s, router, route, (size_t)rl, req.id,
                 rc == BR_E_NOMEM ? BR_PROTO_INTERNAL : BR_PROTO_BAD_REQUEST, err.msg);
        br_req_free(&req);
        return;
    }
    struct live *lv = live_find(*lives, route, (size_t)rl, req.id);
    if (lv) lv->last_seen = br_now();
    struct br_buf b = {0};
    switch (req.type) {
    case BR_REQ_GENERATE:
        fe_generate(s, router, route, (size_t)rl, &req, lives);
        break;
    case BR_REQ_CANCEL:
        if (lv) fe_cancel(s, route, (size_t)rl, req.id);
        break;
    case BR_REQ_PING:
        if (br_proto_encode_pong(&b, req.id) == BR_OK) fe_reply(s, router, route, (size_t)rl, &b);
        break;
    case BR_REQ_HEALTH:
        if (br_proto_encode_health(&b, req.id,
                                   atomic_load(&s->stop)    ? BR_HEALTH_DRAINING
                                   : atomic_load(&s->ready) ? BR_HEALTH_READY
                                                            : BR_HEALTH_LOADING) == BR_OK)
            fe_reply(s, router, route, (size_t)rl, &b);
        break;
    case BR_REQ_INFO: {
        struct br_kv kv[64];
        size_t n = 0;
        for (size_t i = 0; s->info && s->info[i] && s->info[i + 1] && n < 60; i += 2)
            kv[n++] = (struct br_kv){s->info[i], BR_KV_STR, 0, 0, s->info[i + 1]};
        kv[n++] = (struct br_kv){"protocol_version", BR_KV_INT, BR_PROTO_VERSION, 0, NULL};
        kv[n++] = (struct br_kv){"context_length", BR_KV_INT, ready ? s->n_ctx : 0, 0, NULL};
        kv[n++] = (struct br_kv){"state", BR_KV_STR, 0, 0, ready ? "ready" : "loading"};
        if (br_proto_encode_info(&b, req.id, kv, n) == BR_OK)
            fe_reply(s, router, route, (size_t)rl, &b);
        break;
    }
    case BR_REQ_METRICS: {
        struct br_kv kv[] = {
            {"requests", BR_KV_INT, atomic_load(&s->n_requests), 0, NULL},
            {"completed", BR_KV_INT, atomic_load(&s->n_completed), 0, NULL},
            {"rejected_busy", BR_KV_INT, atomic_load(&s->n_rejected), 0, NULL},
            {"live", BR_KV_INT, atomic_load(&s->n_live), 0, NULL},
            {"running", BR_KV_INT, atomic_load(&s->n_running), 0, NULL},
            {"prompt_tokens", BR_KV_INT, atomic_load(&s->n_tokens_in), 0, NULL},
            {"generated_tokens", BR_KV_INT, atomic_load(&s->n_tokens_out), 0, NULL},
            {"steps", BR_KV_INT, atomic_load(&s->n_steps), 0, NULL},
        };
        if (br_proto_encode_metrics(&b, req.id, kv, sizeof kv / sizeof *kv) == BR_OK)
            fe_reply(s, router, route, (size_t)rl, &b);
        break;
    }
    case BR_REQ_TOKENIZE: {
        int32_t *ids = NULL;
        size_t n = 0;
        if (!ready) {
            fe_error(s, router, route, (size_t)rl, req.id, BR_PROTO_UNAVAILABLE,
                     "the model is still loading");
        } else if (br_tok_encode(s->tok, req.prompt, req.prompt_len,
                                 req.add_bos ? BR_TOK_ADD_BOS : 0, &ids, &n, &err)) {
            fe_error(s, router, route, (size_t)rl, req.id, BR_PROTO_BAD_REQUEST, err.msg);
        } else if (br_proto_encode_tokenize(&b, req.id, ids, (uint32_t)n) == BR_OK) {
            fe_reply(s, router, route, (size_t)rl, &b);
        }
        free(ids);
        break;
    }
    case BR_REQ_DETOKENIZE: {
        char *text = NULL;
        size_t len = 0;
        if (!ready) {
            fe_error(s, router, route, (size_t)rl, req.id, BR_PROTO_UNAVAILABLE,
                     "the model is still loading");
        } else if (br_tok_decode(s->tok, req.tokens, req.n_tokens, 0, &text, &len, &err)) {
            fe_error(s, router, route, (size_t)rl, req.id, BR_PROTO_BAD_REQUEST, err.msg);
        } else if (br_proto_encode_detokenize(&b, req.id, text, len) == BR_OK) {
            fe_reply(s, router, route, (size_t)rl, &b);
        }
        free(text);
        break;
    }
    default:
        fe_error(s, router, route, (size_t)rl, req.id, BR_PROTO_BAD_REQUEST, "type: not handled");
        break;
    }
    br_buf_free(&b);
    br_req_free(&req);
    /* a client that cannot take its replies cannot take its streams either */
    if (s->fe_send_errno) fe_drop_route(s, *lives, route, (size_t)rl, s->fe_send_errno);
    s->fe_send_errno = 0;
}

/* dropped: the front end already answered every request (fe_answer_all) */
static void fe_handle_main(struct br_server *s, void *router, struct live **lives, int dropped)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, s->fe_pair, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return;
    }
    const uint8_t *m = zmq_msg_data(&msg);
    size_t n = zmq_msg_size(&msg);
    if (n >= 4 && m[0] == 'E' && !dropped) {
        size_t rl = (size_t)m[2] << 8 | m[3];
        if (4 + rl <= n) {
            struct br_buf b = {(uint8_t *)m + 4 + rl, n - 4 - rl, 0};
            if (fe_reply(s, router, m + 4, rl, &b)) {
                fe_drop_route(s, *lives, m + 4, rl, s->fe_send_errno);
                s->fe_send_errno = 0;
            }
            if (m[1]) {
                /* final: the response carries the id; find the live entry by decoding */
                struct br_resp r;
                memset(&r, 0, sizeof r);
                if (br_proto_decode_response(b.data, b.len, NULL, &r, NULL) == BR_OK && r.id) {
                    if (live_find(*lives, m + 4, rl, r.id)) atomic_fetch_sub(&s->n_live, 1);
                    live_remove(lives, m + 4, rl, r.id);
                }
                br_resp_free(&r);
            }
        }
    }
    zmq_msg_close(&msg);
}

static int load_curve(struct br_server *s, void *router, struct br_err *err);
static void fe_handle_monitor(struct br_server *s);

/* How long after a stop signal the main thread may take to end its requests before the
 * front end answers them itself: mpirun follows SIGTERM with SIGKILL one second later,
 * and the main thread may be waiting on a rank that is gone. */
#define STOP_GRACE_S 0.25

/* Every live request is answered `unavailable` and forgotten. */
static void fe_answer_all(struct br_server *s, void *router, struct live **lives, const char *why)
{
    int n = 0;
    while (*lives) {
        struct live *d = *lives;
        *lives = d->next;
        fe_error(s, router, d->route, d->route_len, d->id, BR_PROTO_UNAVAILABLE, why);
        atomic_fetch_sub(&s->n_live, 1);
        free(d->id);
        free(d);
        n++;
    }
    if (n)
        fprintf(stderr, "bitrack serve: answered %d open request%s `unavailable`\n", n,
                n == 1 ? "" : "s");
}

static void *fe_main(void *arg)
{
    struct br_server *s = arg;
    void *router = zmq_socket(s->zctx, ZMQ_ROUTER);
    struct live *lives = NULL;
    /* a client's unread requests: past this many its own TCP connection pushes back, so
     * what one client can make the server hold is rcvhwm x max_request_bytes */
    int linger = 0, sndhwm = s->o.client_queue, rcvhwm = 1000, mandatory = 1;
    int64_t maxmsg = s->o.max_request_bytes;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(router, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
    zmq_setsockopt(router, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    /* sends fail instead of silently dropping a slow or vanished client's events */
    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    /* a larger message is refused by libzmq as it arrives (the connection is closed)
     * rather than being received whole and then refused by the decoder */
    zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    struct br_err err = {{0}};
    if (load_curve(s, router, &err) || zmq_bind(router, s->listen) != 0) {
        fprintf(stderr, "bitrack serve: cannot listen on %s: %s\n", s->listen,
                err.msg[0] ? err.msg : zmq_strerror(zmq_errno()));
        atomic_store(&s->stop, 2);
        if (s->monitor) zmq_close(s->monitor);
        s->monitor = NULL;
        zmq_close(router);
        return NULL;
    }
    double stop_seen = 0;
    int answered = 0;
    while (atomic_load(&s->stop) != 3) {
        zmq_pollitem_t items[3] = {{router, 0, ZMQ_POLLIN, 0},
                                   {s->fe_pair, 0, ZMQ_POLLIN, 0},
                                   {s->monitor, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, s->monitor ? 3 : 2, stop_seen > 0 && !answered ? 20 : 200);
        if (rc < 0 && zmq_errno() != EINTR) break;
        if (rc > 0 && s->monitor && (items[2].revents & ZMQ_POLLIN)) fe_handle_monitor(s);
        if (rc > 0 && (items[1].revents & ZMQ_POLLIN))
            for (int k = 0; k < 256; k++) {
                int ev = 0;
                size_t evl = sizeof ev;
                zmq_getsockopt(s->fe_pair, ZMQ_EVENTS, &ev, &evl);
                if (!(ev & ZMQ_POLLIN)) break;
                fe_handle_main(s, router, &lives, answered);
            }
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN))
            for (int k = 0; k < 64; k++) {
                int ev = 0;
                size_t evl = sizeof ev;
                zmq_getsockopt(router, ZMQ_EVENTS, &ev, &evl);
                if (!(ev & ZMQ_POLLIN)) break;
                fe_handle_client(s, router, &lives);
            }
        /* heartbeats: a streaming request whose client went silent is cancelled */
        double now = br_now();
        if (atomic_load(&s->stop) == 1 && stop_seen == 0) stop_seen = now;
        if (stop_seen > 0 && !answered && now - stop_seen > STOP_GRACE_S) {
            fe_answer_all(s, router, &lives,
                          "the server is shutting down (stopped by a signal); retry later");
            answered = 1;
        }
        /* a step that never ends: the main thread is stuck inside MPI on a lost rank */
        double since = atomic_load(&s->step_since);
        if (s->o.stuck_s > 0 && since > 0 && now - since > s->o.stuck_s && !answered) {
            fprintf(stderr,
                    "bitrack serve: rank 0: a step has not finished for %.1f s; a rank is "
                    "lost\n",
                    now - since);
            atomic_store(&s->stop, 1);
            stop_seen = now;
            fe_answer_all(s, router, &lives,
                          "a rank was lost (rank 0's step is stuck); the server is shutting down");
            answered = 1;
        }
        for (struct live *l = lives; l; l = l->next)
            if (l->stream && s->o.client_timeout_s > 0 &&
                now - l->last_seen > s->o.client_timeout_s) {
                l->last_seen = now; /* one cancel, not one per poll */
                fe_cancel(s, l->route, l->route_len, l->id);
            }
    }
    /* the server is going away: whatever is still open gets its final answer */
    fe_answer_all(s, router, &lives, "the server is shutting down; retry later");
    if (s->monitor) {
        zmq_socket_monitor(router, NULL, 0);
        zmq_close(s->monitor);
        s->monitor = NULL;
    }
    zmq_close(router);
    return NULL;
}

/* CurveZMQ. The server's secret key comes from a file (40 z85 characters on the first
 * line that is not a comment). With a directory of authorized client public keys, a ZAP
 * handler (RFC 27) on its own thread admits only those keys; its socket is bound before
 * the router, so no handshake can happen while no handler is there to refuse it. Every
 * refusal is logged: an unknown key by the handler, a client without CurveZMQ (or with
 * the wrong server key) by the front end, from the router's monitor. */
static void *zap_main(void *arg);

/* Start (caller's thread): the Curve flags as a complete, consistent set, and every key
 * file of the kind it is given as. Any misconfiguration stops the server before it
 * listens, with a message naming the flag: a server believed locked must never run open. */
int br_server_curve_check(const struct br_server_opts *o, struct br_err *err)
{
    if (o->curve_clients && !o->curve_secret)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-clients %s needs --curve-secret FILE (the server's secret "
                          "key): without it the socket would be plaintext and the client list "
                          "ignored",
                          o->curve_clients);
    if (o->curve_any_client && !o->curve_secret)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-any-client needs --curve-secret FILE (the server's secret key)");
    if (o->curve_any_client && o->curve_clients)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-any-client and --curve-clients %s contradict each other: give "
                          "one",
                          o->curve_clients);
    if (o->curve_secret && !o->curve_clients && !o->curve_any_client)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-secret needs --curve-clients DIR (the authorized client public "
                          "keys), or --curve-any-client to admit every client that has the "
                          "server's public key (encryption without client authentication)");
    if (o->curve_secret && !zmq_has("curve"))
        return br_err_set(err, BR_E_UNSUPPORTED, "--curve-secret: this libzmq has no CurveZMQ");
    return BR_OK;
}

static int curve_load_keys(struct br_server *s, struct br_err *err)
{
    int rc = br_server_curve_check(&s->o, err);
    if (rc || !s->o.curve_secret) return rc;
    struct br_err kerr = {{0}};
    rc = br_key_file_read(s->o.curve_secret, BR_KEY_SECRET, s->curve_secret, NULL, &kerr);
    if (rc) return br_err_set(err, rc, "--curve-secret: %s", kerr.msg);
    char pub[41];
    if (zmq_curve_public(pub, s->curve_secret))
        return br_err_set(err, BR_E_FORMAT, "--curve-secret: %s: not a usable CurveZMQ secret key",
                          s->o.curve_secret);
    fprintf(stderr, "bitrack serve: CurveZMQ on; the server's public key is %s\n", pub);
    if (!s->o.curve_clients) {
        fprintf(stderr, "bitrack serve: --curve-any-client: every client that has the server's "
                        "public key is admitted\n");
        return BR_OK;
    }
    DIR *d = opendir(s->o.curve_clients);
    if (!d)
        return br_err_set(err, BR_E_INVALID, "--curve-clients %s: %s", s->o.curve_clients,
                          strerror(errno));
    /* Only a public key in a NAME.pub file counts: another file, or a .pub file holding a
     * secret key or a key of no stated kind, is named and skipped, never taken for a
     * client's key. */
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".pub") != 0) {
            fprintf(stderr, "bitrack serve: --curve-clients: skipping %s/%s (not a .pub file)\n",
                    s->o.curve_clients, de->d_name);
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", s->o.curve_clients, de->d_name);
        char key[41];
        if (br_key_file_read(path, BR_KEY_PUBLIC, key, NULL, &kerr)) {
            fprintf(stderr, "bitrack serve: --curve-clients: skipping %s\n", kerr.msg);
            continue;
        }
        char(*nk)[41] = realloc(s->curve_keys, (s->n_curve_keys + 1) * sizeof *nk);
        if (!nk) {
            closedir(d);
            return br_err_set(err, BR_E_NOMEM, "out of memory");
        }
        s->curve_keys = nk;
        memcpy(s->curve_keys[s->n_curve_keys++], key, 41);
    }
    closedir(d);
    if (s->n_curve_keys == 0)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-clients %s holds no client public key (NAME.pub from bitrack "
                          "keygen): no client could connect",
                          s->o.curve_clients);
    fprintf(stderr, "bitrack serve: %zu authorized client key%s in %s\n", s->n_curve_keys,
            s->n_curve_keys == 1 ? "" : "s", s->o.curve_clients);
    return BR_OK;
}

/* Front end, before it binds: the keys loaded at start go on the router; with a client
 * list, the ZAP handler starts first. */
static int load_curve(struct br_server *s, void *router, struct br_err *err)
{
    if (!s->o.curve_secret) return BR_OK;
    int one = 1;
    if (zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, s->curve_secret, 40) ||
        zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, "bitrack", 7))
        return br_err_set(err, BR_E_UNSUPPORTED, "%s: not a usable CurveZMQ secret key",
                          s->o.curve_secret);
    /* the monitor reports handshakes that failed before reaching the ZAP handler */
    if (zmq_socket_monitor(router, MONITOR,
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0) {
        s->monitor = zmq_socket(s->zctx, ZMQ_PAIR);
        if (s->monitor && zmq_connect(s->monitor, MONITOR)) {
            zmq_close(s->monitor);
            s->monitor = NULL;
        }
    }
    if (!s->o.curve_clients) return BR_OK;
    int timeout = 200, linger = 0;
    s->zap = zmq_socket(s->zctx, ZMQ_REP);
    if (!s->zap || zmq_setsockopt(s->zap, ZMQ_RCVTIMEO, &timeout, sizeof timeout) ||
        zmq_setsockopt(s->zap, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(s->zap, "inproc://zeromq.zap.01"))
        return br_err_set(err, BR_E_INTERNAL, "cannot start the ZAP handler: %s",
                          zmq_strerror(zmq_errno()));
    if (pthread_create(&s->zap_thread, NULL, zap_main, s))
        return br_err_set(err, BR_E_INTERNAL, "cannot start the ZAP handler thread");
    s->zap_started = 1;
    return BR_OK;
}

/* Front end: one monitor event (two frames: event number and value, then an address). */
static void fe_handle_monitor(struct br_server *s)
{
    static const char *const mismatch = "the client does not use CurveZMQ";
    uint8_t ev[6];
    char addr[256];
    int n = zmq_recv(s->monitor, ev, sizeof ev, ZMQ_DONTWAIT);
    if (n < 0) return;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(s->monitor, ZMQ_RCVMORE, &more, &ml);
    int al = more ? zmq_recv(s->monitor, addr, sizeof addr - 1, 0) : 0;
    addr[al > 0 ? (al < (int)sizeof addr ? al : (int)sizeof addr - 1) : 0] = '\0';
    if (n != 6) return;
    uint16_t event;
    uint32_t value;
    memcpy(&event, ev, 2);
    memcpy(&value, ev + 2, 4);
    /* a refused client retries every reconnect interval: one line per 10 s */
    double now = br_now();
    if (now - s->monitor_last_log < 10) {
        s->monitor_unlogged++;
        return;
    }
    s->monitor_last_log = now;
    char since[64] = "";
    if (s->monitor_unlogged)
        snprintf(since, sizeof since, "; %ld more since the last such line", s->monitor_unlogged);
    fprintf(stderr, "bitrack serve: refused a connection on %s: CurveZMQ handshake failed (%s%s)\n",
            addr,
            event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
                    value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                ? mismatch
            : event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                ? "protocol error; a wrong server key, or not a CurveZMQ client"
                : "the client broke off the handshake: it has no CurveZMQ, or another "
                  "server key",
            since);
    s->monitor_unlogged = 0;
}

/* ZAP handler: admits CURVE clients whose public key is authorized. A refused client
 * retries every reconnect interval; one line per key every 10 s is enough. */
static void *zap_main(void *arg)
{
    struct br_server *s = arg;
    void *zap = s->zap;
    char last_refused[41] = "";
    double last_log = 0;
    while (atomic_load(&s->stop) != 3) {
        char parts[7][256];
        size_t lens[7] = {0};
        int n = 0, more = 1;
        while (more && n < 7) {
            int r = zmq_recv(zap, parts[n], sizeof parts[n], 0);
            if (r < 0) break;
            lens[n] = (size_t)r < sizeof parts[n] ? (size_t)r : sizeof parts[n];
            n++;
            size_t ml = sizeof more;
            zmq_getsockopt(zap, ZMQ_RCVMORE, &more, &ml);
        }
        if (n == 0) continue;
        while (more) { /* drain */
            char junk[256];
            if (zmq_recv(zap, junk, sizeof junk, 0) < 0) break;
            size_t ml = sizeof more;
            zmq_getsockopt(zap, ZMQ_RCVMORE, &more, &ml);
        }
        int ok = 0;
        char z85[41] = "(none)";
        if (n >= 7 && lens[5] == 5 && !memcmp(parts[5], "CURVE", 5) && lens[6] == 32) {
            zmq_z85_encode(z85, (const uint8_t *)parts[6], 32);
            for (size_t i = 0; i < s->n_curve_keys; i++) ok |= !strcmp(z85, s->curve_keys[i]);
        }
        if (!ok && (strcmp(z85, last_refused) || br_now() - last_log > 10)) {
            fprintf(stderr, "bitrack serve: refused a client: CurveZMQ key %s is not authorized\n",
                    z85);
            snprintf(last_refused, sizeof last_refused, "%s", z85);
            last_log = br_now();
        }
        const char *code = ok ? "200" : "400";
        zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(zap, parts[1], n > 1 ? lens[1] : 0, ZMQ_SNDMORE);
        zmq_send(zap, code, 3, ZMQ_SNDMORE);
        zmq_send(zap, ok ? "OK" : "unauthorized", ok ? 2 : 12, ZMQ_SNDMORE);
        zmq_send(zap, "", 0, ZMQ_SNDMORE);
        zmq_send(zap, "", 0, 0);
    }
    zmq_close(zap);
    return NULL;
}

/* ---- lifecycle ---- */

int br_server_start(const struct br_server_opts *o, const char *const *info, struct br_server **out,
                    struct br_err *err)
{
    *out = NULL;
    struct br_server *s = calloc(1, sizeof *s);
    if (!s) return br_err_set(err, BR_E_NOMEM, "out of memory");
    s->o = *o;
    if (s->o.max_queue <= 0) s->o.max_queue = 256;
    if (s->o.max_per_client <= 0) s->o.max_per_client = 64;
    if (s->o.client_timeout_s < 0) s->o.client_timeout_s = 30;
    if (s->o.max_tokens_cap <= 0) s->o.max_tokens_cap = 4096;
    if (s->o.max_request_bytes <= 0) s->o.max_request_bytes = (int64_t)4 << 20;
    if (s->o.client_queue <= 0) s->o.client_queue = 10000;
    s->listen = xstrdup(o->listen ? o->listen : "tcp://127.0.0.1:5555");
    size_t n = 0;
    while (info && info[n]) n++;
    s->info = calloc(n + 2, sizeof *s->info);
    for (size_t i = 0; s->info && i < n; i++) s->info[i] = xstrdup(info[i]);
    snprintf(s->chat_template, sizeof s->chat_template, "bitnet");
    int krc = curve_load_keys(s, err);
    if (krc) {
        br_server_destroy(&s);
        return krc;
    }
    s->zctx = zmq_ctx_new();
    s->main_pair = zmq_socket(s->zctx, ZMQ_PAIR);
    s->fe_pair = zmq_socket(s->zctx, ZMQ_PAIR);
    int linger = 0, hwm = 0;
    zmq_setsockopt(s->main_pair, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s->fe_pair, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s->main_pair, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s->fe_pair, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s->main_pair, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s->fe_pair, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (!s->listen || !s->info || !s->zctx || zmq_bind(s->main_pair, INPROC) ||
        zmq_connect(s->fe_pair, INPROC)) {
        br_server_destroy(&s);
        return br_err_set(err, BR_E_INTERNAL, "cannot set up the front end");
    }
    if (pthread_create(&s->fe_thread, NULL, fe_main, s) != 0) {
        br_server_destroy(&s);
        return br_err_set(err, BR_E_INTERNAL, "cannot start the front-end thread");
    }
    s->fe_started = 1;
    /* give the bind a moment to fail loudly (bad address) */
    for (int i = 0; i < 20 && atomic_load(&s->stop) != 2; i++) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->stop) == 2) {
        br_server_destroy(&s);
        return br_err_set(err, BR_E_UNAVAILABLE, "cannot listen on %s",
                          o->listen ? o->listen : "tcp://127.0.0.1:5555");
    }
    *out = s;
    return BR_OK;
}

void br_server_request_stop(struct br_server *s)
{
    if (s) atomic_store(&s->stop, 1);
}

int br_server_stopping(struct br_server *s)
{
    return s && atomic_load(&s->stop) != 0;
}

static void on_signal(int sig)
{
    (void)sig;
    br_server_request_stop(signal_server);
}

void br_server_install_signals(struct br_server *s)
{
    signal_server = s;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void br_server_destroy(struct br_server **sp)
{
    if (!sp || !*sp) return;
    struct br_server *s = *sp;
    atomic_store(&s->stop, 3);
    if (s->fe_started) pthread_join(s->fe_thread, NULL);
    if (s->zap_started)
        pthread_join(s->zap_thread, NULL); /* it closes its socket */
    else if (s->zap)
        zmq_close(s->zap);
    if (s->main_pair) zmq_close(s->main_pair);
    if (s->fe_pair) zmq_close(s->fe_pair);
    if (s->zctx) zmq_ctx_term(s->zctx);
    for (size_t i = 0; s->info && s->info[i]; i++) free(s->info[i]);
    free(s->info);
    free(s->listen);
    free(s->curve_keys);
    if (signal_server == s) signal_server = NULL;
    free(s);
    *sp = NULL;
}

/* ---- main thread: scheduler ---- */

struct sched {
    struct br_server *s;
    const struct br_model *m;
    struct br_engine *e;
    struct br_comm *comm;
    const struct br_tok *tok;
    int32_t n_slots, free_blocks, total_blocks, budget, vocab;
    struct job **slots;  /* (n_slots,) */
    struct job *waiting; /* FIFO */
    struct job *waiting_tail;
    int32_t *to_free; /* slots to release in the next descriptor */
    int32_t n_to_free;
    /* steps in flight, oldest first (pipeline parallelism keeps up to pp of them) */
    struct br_dist dist;
    struct inflight {
        int32_t n_rows;
        int full, sampled;
        struct job *row_job[BR_SCHED_MAX_BATCH];
    } steps[BR_DIST_MAX_INFLIGHT];
    int step_head, step_count, depth;
    float *logits;     /* (max_batch, vocab) when a step needs logits */
    int shutting_down; /* final errors are `unavailable`: the server (or a rank) is going */
};

static int32_t blocks_for(int32_t positions)
{
    return (positions + BR_KV_BLOCK - 1) / BR_KV_BLOCK;
}

static void finish(struct sched *sc, struct job *j, enum br_finish reason, const char *err_msg)
{
    struct br_buf b = {0};
    double now = br_now();
    if (err_msg) {
        br_proto_encode_error(
            &b, j->req.id, sc->shutting_down ? BR_PROTO_UNAVAILABLE : BR_PROTO_INTERNAL, err_msg);
    } else {
        struct br_usage u = {(uint32_t)j->n_prompt, (uint32_t)j->n_gen};
        double dec = j->t_first > 0 ? now - j->t_first : 0;
        struct br_timings t = {
            (j->t_admit > 0 ? j->t_admit : now) * 1e3 - j->t_arrival * 1e3,
            j->t_first > 0 ? (j->t_first - j->t_arrival) * 1e3 : 0,
            (now - j->t_arrival) * 1e3,
            j->n_gen > 1 && dec > 0 ? (j->n_gen - 1) / dec : 0,
        };
        br_proto_encode_done(&b, j->req.id, reason, &u, &t, j->req.stream ? NULL : j->text,
                             j->req.stream ? 0 : j->emitted);
    }
    post_event(sc->s, j, &b, 1);
    br_buf_free(&b);
    if (j->slot >= 0) {
        sc->slots[j->slot] = NULL;
        sc->to_free[sc->n_to_free++] = j->slot;
        sc->free_blocks += j->blocks;
        atomic_fetch_sub(&sc->s->n_running, 1);
    }
    atomic_fetch_add(&sc->s->n_completed, 1);
    atomic_fetch_add(&sc->s->n_tokens_out, j->n_gen);
    job_free(j);
}

static int job_setup(struct sched *sc, struct job *j, struct br_err *err)
{
    const struct br_req_sampling *q = &j->req.sampling;
    br_sample_params_default(&j->sp);
    j->sp.temperature = q->temperature;
    j->sp.top_k = q->top_k;
    j->sp.top_p = q->top_p;
    j->sp.min_p = q->min_p;
    j->sp.repeat_penalty = q->repeat_penalty;
    j->sp.presence_penalty = q->presence_penalty;
    j->sp.frequency_penalty = q->frequency_penalty;
    j->sp.penalty_last_n = q->repeat_last_n;
    j->sp.seed = q->has_seed ? q->seed : (uint64_t)(br_now() * 1e6);
    j->sp.bias = (const struct br_sample_bias *)q->logit_bias;
    j->sp.n_bias = (int32_t)q->n_logit_bias;
    j->sp.no_logprob = !j->req.logprobs;
    _Static_assert(sizeof(struct br_sample_bias) == sizeof(struct br_logit_bias),
                   "bias entries share a layout");
    int rc = br_sample_params_check(&j->sp, sc->vocab, err);
    if (rc) return rc;
    j->max_new = j->req.max_tokens;
    if (j->max_new > sc->s->o.max_tokens_cap) j->max_new = sc->s->o.max_tokens_cap;
    int32_t room = br_engine_n_ctx(sc->e) - j->n_prompt;
    if (j->max_new > room) j->max_new = room;
    j->stop.tokens = q->stop_tokens;
    j->stop.n_tokens = (int32_t)q->n_stop_tokens;
    j->stop.strings = (const char *const *)q->stop;
    j->stop.n_strings = (int32_t)q->n_stop;
    j->stop.max_tokens = j->max_new;
    /* stop.strings aliases the request's array: job_free must not free it twice */
    j->stop.strings = NULL;
    if (q->n_stop) {
        const char **copy = malloc(q->n_stop * sizeof *copy);
        if (!copy) return br_err_set(err, BR_E_NOMEM, "out of memory");
        for (uint32_t i = 0; i < q->n_stop; i++) copy[i] = q->stop[i];
        j->stop.strings = copy;
    }
    j->hist = malloc(((size_t)j->n_prompt + (size_t)j->max_new + 1) * sizeof *j->hist);
    if (!j->hist || br_detok_create(sc->tok, 0, &j->dt))
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    memcpy(j->hist, j->prompt, (size_t)j->n_prompt * sizeof *j->hist);
    j->n_hist = j->n_prompt;
    j->blocks = blocks_for(j->n_prompt + j->max_new);
    return BR_OK;
}

static void take_messages(struct sched *sc, int block_ms)
{
    struct br_server *s = sc->s;
    zmq_pollitem_t it = {s->main_pair, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, block_ms) <= 0) return;
    for (int k = 0; k < 1024; k++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, s->main_pair, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            break;
        }
        const uint8_t *m = zmq_msg_data(&msg);
        size_t n = zmq_msg_size(&msg);
        if (n == 1 + sizeof(struct job *) && m[0] == 'J') {
            struct job *j;
            memcpy(&j, m + 1, sizeof j);
            HANDOFF_ACQUIRE(j);
            j->slot = -1;
            struct br_err err = {{0}};
            if (job_setup(sc, j, &err)) {
                struct br_buf b = {0};
                br_proto_encode_error(&b, j->req.id, BR_PROTO_BAD_REQUEST, err.msg);
                post_event(s, j, &b, 1);
                br_buf_free(&b);
                job_free(j);
            } else if (j->blocks > sc->total_blocks) {
                struct br_buf b = {0};
                br_proto_encode_error(
                    &b, j->req.id, BR_PROTO_TOO_LONG,
                    "prompt and max_tokens need more KV cache than the server has");
                post_event(s, j, &b, 1);
                br_buf_free(&b);
                job_free(j);
            } else {
                atomic_fetch_add(&s->n_tokens_in, j->n_prompt);
                if (sc->waiting_tail)
                    sc->waiting_tail->next = j;
                else
                    sc->waiting = j;
                sc->waiting_tail = j;
            }
        } else if (n >= 3 && m[0] == 'C') {
            size_t rl = (size_t)m[1] << 8 | m[2];
            if (3 + rl <= n) {
                const uint8_t *route = m + 3;
                size_t idl = n - 3 - rl;
                const char *id = (const char *)m + 3 + rl;
                for (int32_t i = 0; i < sc->n_slots; i++) {
                    struct job *j = sc->slots[i];
                    if (j && j->route_len == rl && !memcmp(j->route, route, rl) &&
                        strlen(j->req.id) == idl && !memcmp(j->req.id, id, idl))
                        j->cancelled = 1;
                }
                for (struct job *j = sc->waiting; j; j = j->next)
                    if (j->route_len == rl && !memcmp(j->route, route, rl) &&
                        strlen(j->req.id) == idl && !memcmp(j->req.id, id, idl))
                        j->cancelled = 1;
            }
        }
        zmq_msg_close(&msg);
    }
}

/* Appends a generated token's text and emits what is safe to stream. Returns non-zero
 * when a stop string ended the sequence. */
static int emit_token(struct sched *sc, struct job *j, int32_t token, const float *logprob)
{
    const char *piece = NULL;
    size_t len = 0;
    br_detok_push(j->dt, token, &piece, &len);
    if (j->text_len + len + 1 > j->text_cap) {
        size_t cap = j->text_cap ? j->text_cap * 2 : 256;
        while (cap < j->text_len + len + 1) cap *= 2;
        char *nt = realloc(j->text, cap);
        if (!nt) return 1;
        j->text = nt;
        j->text_cap = cap;
    }
    memcpy(j->text + j->text_len, piece, len);
    j->text_len += len;
    j->text[j->text_len] = '\0';
    size_t emit = 0;
    enum br_sample_stop_reason r =
        br_sample_stop_text(&j->stop, j->text, j->text_len, j->emitted, &emit);
    if (emit < j->emitted) emit = j->emitted;
    if (j->req.stream) {
        struct br_buf b = {0};
        if (br_proto_encode_token(&b, j->req.id, (uint32_t)(j->n_gen - 1), token,
                                  j->text + j->emitted, emit - j->emitted, logprob) == BR_OK)
            post_event(sc->s, j, &b, 0);
        br_buf_free(&b);
    }
    j->emitted = emit;
    return r == BR_SAMPLE_STOP_STRING;
}

/* At the end: whatever was held back (a partial stop-string prefix that never completed,
 * a trailing partial character) is flushed, except text cut by a stop string. */
static void flush_text(struct sched *sc, struct job *j, int stopped_by_string)
{
    if (stopped_by_string) return;
    const char *piece = NULL;
    size_t len = 0;
    br_detok_flush(j->dt, &piece, &len);
    if (len) {
        char *nt = realloc(j->text, j->text_len + len + 1);
        if (!nt) return;
        j->text = nt;
        memcpy(j->text + j->text_len, piece, len);
        j->text_len += len;
        j->text[j->text_len] = '\0';
    }
    if (j->text_len > j->emitted && j->req.stream) {
        struct br_buf b = {0};
        if (br_proto_encode_token(&b, j->req.id, (uint32_t)(j->n_gen ? j->n_gen - 1 : 0), -1,
                                  j->text + j->emitted, j->text_len - j->emitted, NULL) == BR_OK)
            post_event(sc->s, j, &b, 0);
        br_buf_free(&b);
    }
    j->emitted = j->text_len;
}

/* Housekeeping before composing: cancelled requests end (unless a step in flight still
 * carries them: they end when it returns), waiting requests are admitted in order. */
static void admit(struct sched *sc)
{
    struct br_server *s = sc->s;
    for (struct job **pp = &sc->waiting; *pp;) {
        struct job *j = *pp;
        if (j->cancelled) {
            *pp = j->next;
            if (sc->waiting_tail == j) {
                sc->waiting_tail = NULL;
                for (struct job *t = sc->waiting; t; t = t->next) sc->waiting_tail = t;
            }
            finish(sc, j, BR_FINISH_CANCELLED, NULL);
        } else {
            pp = &j->next;
        }
    }
    for (int32_t i = 0; i < sc->n_slots; i++)
        if (sc->slots[i] && sc->slots[i]->cancelled && !sc->slots[i]->inflight) {
            flush_text(sc, sc->slots[i], 0);
            finish(sc, sc->slots[i], BR_FINISH_CANCELLED, NULL);
        }
    while (sc->waiting) {
        struct job *j = sc->waiting;
        int32_t slot = -1;
        for (int32_t i = 0; i < sc->n_slots && slot < 0; i++)
            if (!sc->slots[i]) slot = i;
        if (slot < 0 || j->blocks > sc->free_blocks) break;
        sc->waiting = j->next;
        if (!sc->waiting) sc->waiting_tail = NULL;
        j->next = NULL;
        j->slot = slot;
        j->state = JOB_PREFILL;
        j->t_admit = br_now();
        sc->slots[slot] = j;
        sc->free_blocks -= j->blocks;
        atomic_fetch_add(&s->n_running, 1);
    }
}

/* Composes and issues one step: a decode token for every running sequence not waiting on
 * a step in flight, then prompt chunks, oldest admission first, up to the budget.
 * Returns BR_OK with *issued 0 when there is nothing to do. */
static int issue(struct sched *sc, int *issued, struct br_err *err)
{
    *issued = 0;
    int32_t mb = br_engine_max_batch(sc->e);
    int32_t budget = sc->budget < mb ? sc->budget : mb;
    int32_t tokens[BR_SCHED_MAX_BATCH], pos[BR_SCHED_MAX_BATCH], seqs[BR_SCHED_MAX_BATCH];
    int32_t rows[BR_SCHED_MAX_BATCH];
    struct inflight *st = &sc->steps[(sc->step_head + sc->step_count) % BR_DIST_MAX_INFLIGHT];
    int32_t n = 0, n_rows = 0;
    /* Micro-batches: with depth d steps in flight (one per pipeline stage), the decoding
     * sequences are dealt into d groups of at most ceil(n_decode / d), so that d steps
     * alternate through the stages instead of one step carrying every sequence while
     * the other stages wait for its tokens. */
    int32_t n_decode = 0;
    for (int32_t i = 0; i < sc->n_slots; i++) {
        const struct job *j = sc->slots[i];
        n_decode += j && j->state == JOB_DECODE && !j->cancelled;
    }
    int32_t decode_cap = (n_decode + sc->depth - 1) / sc->depth;
    if (decode_cap > budget) decode_cap = budget;
    for (int32_t i = 0; i < sc->n_slots && n < decode_cap; i++) {
        struct job *j = sc->slots[i];
        if (!j || j->state != JOB_DECODE || j->inflight || j->cancelled) continue;
        tokens[n] = j->next_token, pos[n] = j->n_prompt + j->n_gen - 1, seqs[n] = j->slot;
        st->row_job[n_rows] = j;
        rows[n_rows++] = n++;
        j->inflight = 1;
    }
    while (n < budget) {
        struct job *best = NULL;
        for (int32_t k = 0; k < sc->n_slots; k++) {
            struct job *j = sc->slots[k];
            if (j && j->state == JOB_PREFILL && !j->cancelled && j->n_fed < j->n_prompt &&
                (!best || j->t_admit < best->t_admit))
                best = j;
        }
        if (!best) break;
        int32_t take = best->n_prompt - best->n_fed;
        if (take > budget - n) take = budget - n;
        for (int32_t t = 0; t < take; t++, n++)
            tokens[n] = best->prompt[best->n_fed + t], pos[n] = best->n_fed + t,
            seqs[n] = best->slot;
        best->n_fed += take;
        if (best->n_fed == best->n_prompt) {
            st->row_job[n_rows] = best;
            rows[n_rows++] = n - 1;
            best->state = JOB_DECODE; /* its first token comes from this step */
            best->inflight = 1;
        }
    }
    if (n == 0) return BR_OK;
    /* How the rows' tokens come back: greedy rows without logprobs or bias need only each
     * vocabulary slice's best (top1); rows whose sampling needs no history are sampled
     * where the logits are (candidates and softmax statistics come back); rows with
     * penalties need the full logits here. */
    int full = 0, plain = 1;
    const struct br_sample_params *sp[BR_SCHED_MAX_BATCH];
    uint64_t rseq[BR_SCHED_MAX_BATCH], rpos[BR_SCHED_MAX_BATCH];
    for (int32_t r = 0; r < n_rows; r++) {
        const struct job *j = st->row_job[r];
        plain &= j->sp.temperature == 0 && !j->req.logprobs && j->sp.repeat_penalty == 1.0f &&
                 j->sp.presence_penalty == 0 && j->sp.frequency_penalty == 0 && j->sp.n_bias == 0;
        sp[r] = &j->sp;
        rseq[r] = 0; /* the RNG is keyed by (seed, position), as in bitrack run */
        rpos[r] = (uint64_t)(j->n_prompt + j->n_gen);
    }
    int sampled = !plain && br_dist_can_sample(sc->e, sp, n_rows);
    full = !plain && !sampled;
    struct br_batch b = {n, tokens, pos, seqs, sc->n_to_free, sc->to_free};
    int rc = sampled ? br_dist_issue_sampled(&sc->dist, sc->e, sc->comm, &b, rows, n_rows, sp, rseq,
                                             rpos, err)
                     : br_dist_issue(&sc->dist, sc->e, sc->comm, &b, rows, n_rows, full, err);
    if (rc) return rc;
    sc->n_to_free = 0;
    st->n_rows = n_rows;
    st->full = full;
    st->sampled = sampled;
    sc->step_count++;
    atomic_fetch_add(&sc->s->n_steps, 1);
    *issued = 1;
    return BR_OK;
}

/* Collects the oldest step in flight: samples each row and sends the events. */
static int collect(struct sched *sc, struct br_err *err)
{
    struct br_server *s = sc->s;
    struct inflight *st = &sc->steps[sc->step_head];
    int32_t top1[BR_SCHED_MAX_BATCH];
    int row_rc[BR_SCHED_MAX_BATCH];
    struct br_sample_result sres[BR_SCHED_MAX_BATCH];
    int rc = st->sampled ? br_dist_collect_sampled(&sc->dist, sc->e, sc->comm, sres, row_rc, err)
                         : br_dist_collect(&sc->dist, sc->e, sc->comm, st->full ? sc->logits : NULL,
                                           top1, err);
    sc->step_head = (sc->step_head + 1) % BR_DIST_MAX_INFLIGHT;
    sc->step_count--;
    if (rc) return rc;
    double now = br_now();
    for (int32_t r = 0; r < st->n_rows; r++) {
        struct job *j = st->row_job[r];
        j->inflight = 0;
        if (j->cancelled) {
            flush_text(sc, j, 0);
            finish(sc, j, BR_FINISH_CANCELLED, NULL);
            continue;
        }
        int32_t tok = st->sampled ? sres[r].token : top1[r];
        float lp = st->sampled ? (float)sres[r].logprob : 0.0f;
        if (st->sampled && row_rc[r]) {
            finish(sc, j, BR_FINISH_ERROR, "sampling failed on the last pipeline stage");
            continue;
        }
        if (st->full) {
            struct br_sample_result res;
            struct br_err serr = {{0}};
            if (br_sample_full(&j->sp, sc->logits + (size_t)r * sc->vocab, sc->vocab, j->hist,
                               (size_t)j->n_hist, 0, (uint64_t)(j->n_prompt + j->n_gen), &res,
                               &serr)) {
                finish(sc, j, BR_FINISH_ERROR, serr.msg);
                continue;
            }
            tok = res.token;
            lp = (float)res.logprob;
        }
        j->n_gen++;
        if (j->t_first == 0) j->t_first = now;
        j->hist[j->n_hist++] = tok;
        enum br_sample_stop_reason why = br_sample_stop_token(&j->stop, tok, j->n_gen);
        if (why == BR_SAMPLE_STOP_TOKEN || br_tok_is_eog(sc->tok, tok)) {
            /* a stop token is not part of the output */
            if (j->req.stream) {
                struct br_buf bb = {0};
                if (br_proto_encode_token(&bb, j->req.id, (uint32_t)(j->n_gen - 1), tok, "", 0,
                                          j->req.logprobs ? &lp : NULL) == BR_OK)
                    post_event(s, j, &bb, 0);
                br_buf_free(&bb);
            }
            flush_text(sc, j, 0);
            finish(sc, j, BR_FINISH_STOP, NULL);
            continue;
        }
        int stopped = emit_token(sc, j, tok, j->req.logprobs ? &lp : NULL);
        if (stopped) {
            flush_text(sc, j, 1);
            finish(sc, j, BR_FINISH_STOP, NULL);
        } else if (why == BR_SAMPLE_STOP_LENGTH || j->n_gen >= j->max_new) {
            flush_text(sc, j, 0);
            finish(sc, j, BR_FINISH_LENGTH, NULL);
        } else {
            j->next_token = tok;
        }
    }
    return BR_OK;
}

/* One round: admit, keep up to `depth` steps in flight, collect the oldest. */
static int step(struct sched *sc, struct br_err *err)
{
    admit(sc);
    while (sc->step_count < sc->depth) {
        int issued = 0;
        int rc = issue(sc, &issued, err);
        if (rc) return rc;
        if (!issued) break;
    }
    return sc->step_count > 0 ? collect(sc, err) : BR_OK;
}

int br_server_run(struct br_server *s, const struct br_model *m, struct br_engine *e,
                  struct br_comm *comm, const struct br_tok *tok, struct br_err *err)
{
    struct sched sc = {0};
    sc.s = s, sc.m = m, sc.e = e, sc.comm = comm, sc.tok = tok;
    sc.vocab = m->cfg.n_vocab;
    sc.n_slots = br_engine_n_seq(e);
    sc.total_blocks = sc.free_blocks = br_engine_free_blocks(e);
    sc.budget = s->o.batch_tokens > 0 ? s->o.batch_tokens : br_engine_max_batch(e);
    if (sc.budget > BR_SCHED_MAX_BATCH) sc.budget = BR_SCHED_MAX_BATCH;
    /* one step per stage in flight keeps every stage busy */
    sc.depth = comm ? comm->pp : 1;
    if (s->o.micro_batches > 0 && s->o.micro_batches < sc.depth) sc.depth = s->o.micro_batches;
    if (sc.depth > BR_DIST_MAX_INFLIGHT) sc.depth = BR_DIST_MAX_INFLIGHT;
    sc.logits = malloc((size_t)br_engine_max_batch(e) * (size_t)sc.vocab * sizeof *sc.logits);
    sc.slots = calloc((size_t)sc.n_slots, sizeof *sc.slots);
    sc.to_free = calloc((size_t)sc.n_slots + (size_t)br_engine_max_batch(e), sizeof *sc.to_free);
    if (!sc.slots || !sc.to_free || !sc.logits) {
        free(sc.slots), free(sc.to_free), free(sc.logits);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    s->tok = tok;
    s->model = m;
    s->n_ctx = br_engine_n_ctx(e);
    const char *tmpl = NULL;
    const struct br_gguf_kv *kv =
        m->gguf ? br_gguf_find_kv(m->gguf, "tokenizer.chat_template") : NULL;
    char *ttext = NULL;
    if (kv && kv->type == BR_GGUF_STRING && (ttext = malloc(kv->v.str.len + 1))) {
        memcpy(ttext, kv->v.str.ptr, kv->v.str.len);
        ttext[kv->v.str.len] = '\0';
    }
    tmpl = br_chat_template_detect(ttext, m->cfg.arch_name);
    free(ttext);
    snprintf(s->chat_template, sizeof s->chat_template, "%s", tmpl ? tmpl : "chatml");
    atomic_store(&s->ready, 1);
    int rc = BR_OK;
    while (atomic_load(&s->stop) == 0) {
        int busy = sc.waiting != NULL || sc.step_count > 0;
        for (int32_t i = 0; i < sc.n_slots; i++) busy |= sc.slots[i] != NULL;
        take_messages(&sc, busy ? 0 : 100);
        atomic_store(&s->step_since, br_now());
        rc = step(&sc, err);
        atomic_store(&s->step_since, 0.0);
        if (rc) break;
    }
    /* drain: every request still here gets a final answer */
    while (!rc && sc.step_count > 0) rc = collect(&sc, err);
    br_dist_clear(&sc.dist);
    for (int32_t i = 0; i < sc.n_slots; i++)
        if (sc.slots[i]) sc.slots[i]->inflight = 0;
    char why[600];
    if (rc)
        snprintf(why, sizeof why, "a rank was lost (%s); the server is shutting down", err->msg);
    else
        snprintf(why, sizeof why, "the server is shutting down");
    sc.shutting_down = 1;
    take_messages(&sc, 0); /* requests already on their way get their answer too */
    for (int32_t i = 0; i < sc.n_slots; i++)
        if (sc.slots[i]) finish(&sc, sc.slots[i], BR_FINISH_ERROR, why);
    while (sc.waiting) {
        struct job *j = sc.waiting;
        sc.waiting = j->next;
        struct br_buf b = {0};
        br_proto_encode_error(&b, j->req.id, BR_PROTO_UNAVAILABLE, why);
        post_event(s, j, &b, 1);
        br_buf_free(&b);
        job_free(j);
    }
    sc.waiting_tail = NULL;
    /* let the front end forward the last events */
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
    if (!rc) rc = br_dist_stop(e, comm, err);
    free(sc.slots);
    free(sc.to_free);
    free(sc.logits);
    return rc;
}
