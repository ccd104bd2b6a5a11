/*
 * The ZeroMQ transport (proto/PROTOCOL.md over a ROUTER socket), one thread.
 *
 * The thread owns the router, its Curve monitor and its outbox. A client message is
 * decoded strictly (exactly one frame after the routing id, one msgpack map without
 * duplicate keys, the gateway's limits); ping, health, info and metrics are answered at
 * once, cancel goes to the gateway, and generate, tokenize and detokenize are submitted
 * to it whole: nothing here costs more for a longer prompt than decoding it. Events from
 * the outbox are encoded and sent to their client's routing id. A client that cannot be
 * sent to (its queue at the router is full, or it is gone) has its requests cancelled;
 * those lines are logged at most once a second, with a count of the rest.
 *
 * The thread waits only in zmq_poll, on the router, the monitor, its outbox's descriptor
 * and its quit descriptor; the poll timeout paces the heartbeat check (client timeout).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "bitrack/progress.h"
#include "coordinator/curve.h"
#include "coordinator/frontend_zmq.h"
#include "coordinator/metrics.h"
#include "coordinator/reqlog.h"
#include "coordinator/server.h"

struct fe {
    struct br_gateway *gw;
    struct br_outbox *box;
    struct br_curve *curve;
    void *zctx, *router;
    char *listen;
    int client_timeout_s;
    struct br_metrics *metrics; /* borrowed, may be NULL */
    struct br_reqlog *log;      /* borrowed, may be NULL */
    int quit_fd;
    pthread_t thread;
    int started;
    /* churn log: lines about clients that went away or stopped reading, at most one a
     * second; the rest are counted into the next line */
    double churn_last;
    long churn_clients, churn_full, churn_cancelled;
};

static int send_reply(void *router, const struct br_client_key *c, const struct br_buf *b)
{
    if (zmq_send(router, c->bytes, c->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return zmq_errno();
    if (zmq_send(router, b->data, b->len, ZMQ_DONTWAIT) < 0) return zmq_errno();
    return 0;
}

/* Logs the clients counted since the last line, at most once a second (force: now). */
static void churn_flush(struct fe *f, int force)
{
    double now = br_now();
    if (!f->churn_clients || (!force && now - f->churn_last < 1.0)) return;
    fprintf(stderr,
            "bitrack serve: %ld client%s could not be sent to: %ld stopped reading (send queue "
            "full), %ld went away; cancelled %ld request%s\n",
            f->churn_clients, f->churn_clients == 1 ? "" : "s", f->churn_full,
            f->churn_clients - f->churn_full, f->churn_cancelled,
            f->churn_cancelled == 1 ? "" : "s");
    f->churn_last = now;
    f->churn_clients = f->churn_full = f->churn_cancelled = 0;
}

static void churn_log(struct fe *f, int why, int n_cancelled)
{
    f->churn_clients++;
    f->churn_full += why == EAGAIN;
    f->churn_cancelled += n_cancelled;
    churn_flush(f, 0);
}

/* A client that cannot be sent to would keep its sequences generating into the void:
 * its requests are cancelled (once each), freeing their slots for others. */
static void client_unreachable(struct fe *f, const struct br_client_key *c, int why)
{
    int n = br_gateway_client_gone(f->gw, f->box, c);
    if (n) churn_log(f, why, n);
}

static void reply(struct fe *f, const struct br_client_key *c, const struct br_buf *b)
{
    int why = send_reply(f->router, c, b);
    if (why) client_unreachable(f, c, why);
}

static void reply_error(struct fe *f, const struct br_client_key *c, const char *id,
                        enum br_proto_code code, const char *msg)
{
    struct br_buf b = {0};
    if (br_proto_encode_error(&b, id, code, msg) == BR_OK) reply(f, c, &b);
    br_buf_free(&b);
}

static int encode_event(const struct br_event *e, struct br_buf *b)
{
    switch (e->kind) {
    case BR_EVENT_TOKEN: {
        /* the alternatives' bytes lie in the event's text (transport.h) */
        struct br_resp_alt top[BR_REQ_MAX_TOP_LOGPROBS];
        uint32_t n_top = e->text ? e->n_top : 0;
        for (uint32_t i = 0; i < n_top; i++)
            top[i] = (struct br_resp_alt){e->top[i].token, e->top[i].logprob,
                                          e->text + e->top[i].off, e->top[i].len};
        return br_proto_encode_token_top(b, e->id, e->index, e->token, e->text ? e->text : "",
                                         e->text_len, e->has_logprob ? &e->logprob : NULL, top,
                                         n_top);
    }
    case BR_EVENT_DONE:
        return br_proto_encode_done(b, e->id, e->finish, &e->usage, &e->timings,
                                    e->stream ? NULL : (e->text ? e->text : ""), e->text_len);
    case BR_EVENT_ERROR:
        return br_proto_encode_error(b, e->id, e->code, e->message ? e->message : "");
    case BR_EVENT_TOKENIZE:
        return br_proto_encode_tokenize(b, e->id, e->tokens, e->n_tokens);
    case BR_EVENT_DETOKENIZE:
        return br_proto_encode_detokenize(b, e->id, e->text ? e->text : "", e->text_len);
    }
    return BR_E_INVALID;
}

/* A request's final event: counted and logged (coordinator/metrics.h, reqlog.h); the
 * client is named by its routing id. */
static void account(struct fe *f, const struct br_event *e)
{
    if ((!f->metrics && !f->log) || (e->kind != BR_EVENT_DONE && e->kind != BR_EVENT_ERROR)) return;
    char client[2 * 16 + 1] = "";
    for (size_t i = 0; i < e->client.len && i < 16; i++)
        snprintf(client + 2 * i, 3, "%02x", e->client.bytes[i]);
    struct br_outcome o;
    br_outcome_init(&o, "zmq", client, e->id, NULL);
    br_outcome_from_event(&o, e);
    br_metrics_observe(f->metrics, &o);
    br_reqlog_write(f->log, &o);
}

static void forward_events(struct fe *f)
{
    struct br_event *list = br_outbox_take(f->box);
    struct br_buf b = {0};
    for (struct br_event *e = list; e; e = e->next) {
        account(f, e);
        if (encode_event(e, &b) != BR_OK) continue;
        int why = send_reply(f->router, &e->client, &b);
        if (why) client_unreachable(f, &e->client, why);
    }
    br_buf_free(&b);
    br_event_free_list(list);
}

static void handle_client(struct fe *f)
{
    /* [routing id][one payload frame]: a DEALER sends exactly one frame per message */
    struct br_client_key c = {0};
    int rl = zmq_recv(f->router, c.bytes, sizeof c.bytes, 0);
    if (rl < 0) return;
    if (rl > (int)sizeof c.bytes) rl = (int)sizeof c.bytes; /* ROUTER ids are 5 bytes */
    c.len = (uint16_t)rl;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int frames = 0, more = 1;
    zmq_msg_t first;
    zmq_msg_init(&first);
    while (more) {
        if (zmq_msg_recv(&msg, f->router, 0) < 0) break;
        more = zmq_msg_more(&msg);
        if (frames++ == 0) zmq_msg_move(&first, &msg);
    }
    zmq_msg_close(&msg);
    if (frames == 0) {
        zmq_msg_close(&first);
        return;
    }
    struct br_req req;
    br_req_init(&req);
    struct br_err err = {{0}};
    struct br_proto_limits lim;
    br_gateway_limits(f->gw, &lim);
    int rc = br_proto_decode_request(zmq_msg_data(&first), zmq_msg_size(&first), &lim, &req, &err);
    zmq_msg_close(&first);
    if (!rc && frames > 1) {
        snprintf(err.msg, sizeof err.msg,
                 "message: %d frames; a request is exactly one frame (one msgpack map)", frames);
        rc = BR_E_PROTOCOL;
    }
    if (rc) {
        reply_error(f, &c, req.id, rc == BR_E_NOMEM ? BR_PROTO_INTERNAL : BR_PROTO_BAD_REQUEST,
                    err.msg);
        br_req_free(&req);
        return;
    }
    br_gateway_touch(f->gw, f->box, &c, req.id);
    struct br_buf b = {0};
    switch (req.type) {
    case BR_REQ_GENERATE:
    case BR_REQ_TOKENIZE:
    case BR_REQ_DETOKENIZE:
        br_gateway_submit(f->gw, f->box, &c, &req);
        break;
    case BR_REQ_CANCEL:
        br_gateway_cancel(f->gw, f->box, &c, req.id);
        break;
    case BR_REQ_PING:
        if (br_proto_encode_pong(&b, req.id) == BR_OK) reply(f, &c, &b);
        break;
    case BR_REQ_HEALTH:
        if (br_proto_encode_health(&b, req.id, br_gateway_health(f->gw)) == BR_OK) reply(f, &c, &b);
        break;
    case BR_REQ_INFO: {
        struct br_kv kv[64];
        size_t n = br_gateway_info(f->gw, kv, 64);
        if (br_proto_encode_info(&b, req.id, kv, n) == BR_OK) reply(f, &c, &b);
        break;
    }
    case BR_REQ_METRICS: {
        struct br_kv kv[16];
        size_t n = br_gateway_metrics(f->gw, kv, 16);
        if (br_proto_encode_metrics(&b, req.id, kv, n) == BR_OK) reply(f, &c, &b);
        break;
    }
    default:
        reply_error(f, &c, req.id, BR_PROTO_BAD_REQUEST, "type: not handled");
        break;
    }
    br_buf_free(&b);
    br_req_free(&req);
}

static void *fe_main(void *arg)
{
    struct fe *f = arg;
    void *monitor = br_curve_monitor_socket(f->curve);
    double last_expire = br_now();
    for (;;) {
        zmq_pollitem_t items[4] = {{f->router, 0, ZMQ_POLLIN, 0},
                                   {NULL, br_outbox_fd(f->box), ZMQ_POLLIN, 0},
                                   {NULL, f->quit_fd, ZMQ_POLLIN, 0},
                                   {monitor, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, monitor ? 4 : 3, 200);
        if (rc < 0 && zmq_errno() != EINTR) break;
        if (rc > 0 && (items[1].revents & ZMQ_POLLIN)) forward_events(f);
        if (rc > 0 && (items[2].revents & ZMQ_POLLIN)) break;
        if (rc > 0 && monitor && (items[3].revents & ZMQ_POLLIN)) br_curve_handle_monitor(f->curve);
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN))
            for (int k = 0; k < 64; k++) {
                int ev = 0;
                size_t evl = sizeof ev;
                zmq_getsockopt(f->router, ZMQ_EVENTS, &ev, &evl);
                if (!(ev & ZMQ_POLLIN)) break;
                handle_client(f);
                /* events first between large messages: decoding a batch of 1 MiB
                 * requests must not hold back another client's tokens */
                forward_events(f);
            }
        churn_flush(f, 0);
        /* heartbeats: a streaming request whose client went silent is cancelled */
        double now = br_now();
        if (f->client_timeout_s > 0 && now - last_expire > 0.2) {
            br_gateway_expire(f->gw, f->box, f->client_timeout_s);
            last_expire = now;
        }
    }
    /* the gateway has given every request its final event: send what is left */
    forward_events(f);
    churn_flush(f, 1);
    return NULL;
}

static void fe_free(struct fe *f)
{
    br_curve_destroy(&f->curve, f->router);
    if (f->router) zmq_close(f->router);
    if (f->zctx) zmq_ctx_term(f->zctx);
    br_outbox_destroy(&f->box);
    if (f->quit_fd >= 0) close(f->quit_fd);
    free(f->listen);
    free(f);
}

static int fe_start(struct br_gateway *gw, const struct br_server_opts *o, void **state,
                    struct br_err *err)
{
    *state = NULL;
    struct fe *f = calloc(1, sizeof *f);
    if (!f) return br_err_set(err, BR_E_NOMEM, "out of memory");
    f->gw = gw;
    f->quit_fd = -1;
    f->client_timeout_s = o->client_timeout_s;
    f->metrics = o->metrics;
    f->log = o->log;
    f->listen = strdup(o->listen ? o->listen : "tcp://127.0.0.1:5555");
    int rc = br_curve_load(o->curve_secret, o->curve_clients, o->curve_any_client, &f->curve, err);
    if (rc) goto fail;
    rc = br_outbox_create(gw, &f->box, err);
    if (rc) goto fail;
    f->quit_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    f->zctx = zmq_ctx_new();
    f->router = f->zctx ? zmq_socket(f->zctx, ZMQ_ROUTER) : NULL;
    if (!f->listen || f->quit_fd < 0 || !f->router) {
        rc = br_err_set(err, BR_E_INTERNAL, "cannot set up the ZeroMQ front end");
        goto fail;
    }
    /* a client's unread requests: past this many its own TCP connection pushes back, so
     * what one client can make the server hold is rcvhwm x max_request_bytes */
    int linger = 0, sndhwm = o->client_queue > 0 ? o->client_queue : 10000, rcvhwm = 1000;
    int mandatory = 1;
    int64_t maxmsg = o->max_request_bytes > 0 ? o->max_request_bytes : (int64_t)4 << 20;
    zmq_setsockopt(f->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(f->router, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
    zmq_setsockopt(f->router, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    /* sends fail instead of silently dropping a slow or vanished client's events */
    zmq_setsockopt(f->router, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    /* a larger message is refused by libzmq as it arrives (the connection is closed)
     * rather than being received whole and then refused by the decoder */
    zmq_setsockopt(f->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    rc = br_curve_apply(f->curve, f->zctx, f->router, err);
    if (rc) goto fail;
    if (zmq_bind(f->router, f->listen) != 0) {
        rc = br_err_set(err, BR_E_UNAVAILABLE, "cannot listen on %s: %s", f->listen,
                        zmq_strerror(zmq_errno()));
        goto fail;
    }
    /* the socket moves to the thread; pthread_create orders everything before it */
    if (pthread_create(&f->thread, NULL, fe_main, f)) {
        rc = br_err_set(err, BR_E_INTERNAL, "cannot start the front-end thread");
        goto fail;
    }
    f->started = 1;
    *state = f;
    return BR_OK;
fail:
    fe_free(f);
    return rc;
}

static void fe_stop(void *state)
{
    struct fe *f = state;
    if (!f) return;
    if (f->started) {
        uint64_t one = 1;
        ssize_t r = write(f->quit_fd, &one, sizeof one);
        (void)r;
        pthread_join(f->thread, NULL);
    }
    fe_free(f);
}

const struct br_transport_ops br_frontend_zmq = {"zmq", fe_start, fe_stop};
