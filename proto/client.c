/*
 * The C client of protocol v1 (see client.h): one DEALER socket, synchronous calls.
 *
 * Every call follows the same exchange(): encode the request, send it, then poll the socket
 * until the response that ends the call arrives, sending a `ping` every ping interval and
 * failing with BR_E_TIMEOUT (after a best-effort `cancel`) when nothing about the request
 * has arrived for timeout_ms. Responses carry the request id, so replies that belong to an
 * earlier call (one that timed out) are dropped rather than mistaken for this call's.
 * Invariant: between calls no request of ours is outstanding except abandoned ones.
 *
 * A monitor socket reports the DEALER's disconnections and failed handshakes: a call whose
 * connection drops while it waits (the server process died) fails at once with
 * BR_E_UNAVAILABLE instead of waiting out its timeout, and a refused handshake is reported
 * with its reason. ZeroMQ reconnects by itself, so the next call reaches a restarted
 * server. Drops from before a call are discarded when it starts.
 */
#include "proto/client.h"

#include "proto/keyfile.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define BR_CLIENT_MAX_ABANDONED 16

struct br_client {
    void *ctx;  /* own ZeroMQ context: no state shared between clients */
    void *sock; /* DEALER */
    char addr[256];
    int timeout_ms;    /* <= 0: wait forever */
    int connect_ms;    /* wait for a connection this long; <= 0: timeout_ms */
    int ping_ms;       /* <= 0: no pings */
    uint64_t seq;      /* for generated request ids */
    struct br_buf buf; /* reused encode buffer */
    struct br_proto_limits lim;
    void *mon;           /* PAIR receiving the DEALER's failed-handshake and disconnect events */
    const char *refusal; /* why the last handshake failed; NULL after a send succeeds */
    bool curve;          /* CurveZMQ credentials are set */
    int n_broken;        /* handshakes broken off without a reason since the last send */
    int n_drops;         /* connections lost since the current call began */
    /* ids of abandoned generate calls (timed out, failed) whose requests may still run on
     * the server: a caller-given id among them is refused, never sent while in flight */
    char abandoned[BR_CLIENT_MAX_ABANDONED][129];
    int n_abandoned;
};

#define MONITOR_EVENTS                                                                             \
    (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |                       \
     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_DISCONNECTED)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int br_client_curve_load(const char *server_key_file, const char *secret_key_file,
                         struct br_client_curve *out, struct br_err *err)
{
    if (!out || !server_key_file || !secret_key_file)
        return br_err_set(err, BR_E_INVALID, "CurveZMQ: need the server's key and a secret key");
    memset(out, 0, sizeof *out);
    if (!zmq_has("curve"))
        return br_err_set(err, BR_E_UNSUPPORTED, "this libzmq was built without CurveZMQ");
    /* each file must say it holds the kind of key it is given as (keyfile.h) */
    int rc = br_key_file_read(server_key_file, BR_KEY_PUBLIC, out->server_key, NULL, err);
    if (!rc) rc = br_key_file_read(secret_key_file, BR_KEY_SECRET, out->secret_key, NULL, err);
    if (!rc && zmq_curve_public(out->public_key, out->secret_key))
        rc = br_err_set(err, BR_E_FORMAT, "%s: not a CurveZMQ secret key", secret_key_file);
    return rc;
}

int br_client_connect(const char *addr, int timeout_ms, struct br_client **out, struct br_err *err)
{
    return br_client_connect_curve(addr, timeout_ms, NULL, out, err);
}

int br_client_connect_curve(const char *addr, int timeout_ms, const struct br_client_curve *curve,
                            struct br_client **out, struct br_err *err)
{
    struct br_client *c;
    int zero = 0, one = 1, rc;
    if (!out) return br_err_set(err, BR_E_INVALID, "br_client_connect: out is NULL");
    *out = NULL;
    char norm[BR_CLIENT_ADDR_MAX];
    if ((rc = br_client_addr_normalize(addr ? addr : BR_CLIENT_DEFAULT_ADDR, norm, sizeof norm,
                                       err)))
        return rc;
    addr = norm;
    c = calloc(1, sizeof *c);
    if (!c) return br_err_set(err, BR_E_NOMEM, "client: out of memory");
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->timeout_ms = timeout_ms;
    c->connect_ms = BR_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    c->ping_ms = 1000;
    br_proto_limits_default(&c->lim);
    c->ctx = zmq_ctx_new();
    if (!c->ctx) {
        rc = br_err_set(err, BR_E_NOMEM, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail_ctx;
    }
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock) {
        rc = br_err_set(err, BR_E_IO, "zmq_socket: %s", zmq_strerror(errno));
        goto fail_sock;
    }
    int64_t maxmsg = (int64_t)c->lim.max_msg_bytes;
    int sndtimeo = timeout_ms > 0 ? timeout_ms : -1;
    /* IMMEDIATE: a send with no live connection waits (up to the timeout) instead of queueing
     * for a server that may never come, so an absent server reads as "unavailable". */
    if (zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof one) ||
        zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo) ||
        zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg)) {
        rc = br_err_set(err, BR_E_IO, "zmq_setsockopt: %s", zmq_strerror(errno));
        goto fail_connect;
    }
    if (curve && (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, curve->server_key, 40) ||
                  zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, curve->public_key, 40) ||
                  zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, curve->secret_key, 40))) {
        rc = br_err_set(err, BR_E_UNSUPPORTED, "CurveZMQ keys refused by libzmq: %s",
                        zmq_strerror(errno));
        goto fail_connect;
    }
    c->curve = curve != NULL;
    /* failed handshakes are otherwise silent (the socket just retries): watching them
     * lets a refused client say why it cannot reach the server */
    if (zmq_socket_monitor(c->sock, "inproc://bitrack-client-monitor", MONITOR_EVENTS) == 0) {
        c->mon = zmq_socket(c->ctx, ZMQ_PAIR);
        if (c->mon && (zmq_setsockopt(c->mon, ZMQ_LINGER, &zero, sizeof zero) ||
                       zmq_connect(c->mon, "inproc://bitrack-client-monitor"))) {
            zmq_close(c->mon);
            c->mon = NULL;
        }
    }
    if (zmq_connect(c->sock, addr)) {
        rc = br_err_set(err, BR_E_INVALID, "connecting to %s: %s", addr, zmq_strerror(errno));
        goto fail_connect;
    }
    *out = c;
    return BR_OK;

fail_connect:
    if (c->mon) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->mon);
    }
    zmq_close(c->sock);
fail_sock:
    zmq_ctx_term(c->ctx);
fail_ctx:
    free(c);
    return rc;
}

void br_client_close(struct br_client **cp)
{
    if (!cp || !*cp) return;
    struct br_client *c = *cp;
    if (c->mon) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->mon);
    }
    zmq_close(c->sock);
    zmq_ctx_term(c->ctx);
    br_buf_free(&c->buf);
    free(c);
    *cp = NULL;
}

void br_client_set_timeout(struct br_client *c, int timeout_ms)
{
    int sndtimeo = timeout_ms > 0 ? timeout_ms : -1;
    c->timeout_ms = timeout_ms;
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
}

void br_client_set_ping_interval(struct br_client *c, int interval_ms)
{
    c->ping_ms = interval_ms;
}

void br_client_set_connect_timeout(struct br_client *c, int timeout_ms)
{
    c->connect_ms = timeout_ms;
}

/* Reads every waiting monitor event: remembers why the last handshake failed, and counts
 * disconnections in c->n_drops. */
static void watch_events(struct br_client *c)
{
    for (int k = 0; c->mon && k < 1000; k++) {
        uint8_t ev[6];
        char addr[256];
        if (zmq_recv(c->mon, ev, sizeof ev, ZMQ_DONTWAIT) != 6) break;
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(c->mon, ZMQ_RCVMORE, &more, &ml);
        if (more) zmq_recv(c->mon, addr, sizeof addr, 0);
        uint16_t event;
        uint32_t value;
        memcpy(&event, ev, 2);
        memcpy(&value, ev + 2, 4);
        if (event == ZMQ_EVENT_DISCONNECTED)
            c->n_drops++;
        else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            c->refusal = "the server refused this client's CurveZMQ key (not authorized)";
        else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
                 value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
            c->refusal = c->curve ? "the server does not use CurveZMQ"
                                  : "the server requires CurveZMQ (give --curve-server-key "
                                    "and --curve-key)";
        else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && ++c->n_broken < 3)
            continue; /* lost mid-handshake once or twice (a restart?): no refusal yet */
        else if (c->curve)
            c->refusal = "the CurveZMQ handshake failed (is --curve-server-key the server's "
                         "public key?)";
        else
            c->refusal = "the handshake failed (does the server require CurveZMQ? then give "
                         "--curve-server-key and --curve-key)";
    }
}

/* Sends c->buf as one frame. With ZMQ_IMMEDIATE a send can only proceed once a handshake
 * succeeded; it waits for that in slices of at most 100 ms (a blocking send, which wakes
 * as soon as the connection is up), and between slices reads the monitor, so that a
 * refusing server ends the wait at once with the reason instead of after the timeout.
 * follow_up: a message about a request already sent (ping, cancel): if the connection that
 * request went out on is lost, it fails at once. A new request instead waits for a
 * connection (a server restarting); drops before it is sent do not concern it. */
static int send_buf(struct br_client *c, const char *what, int follow_up, struct br_err *err)
{
    /* waiting here is waiting for a connection: the connect timeout bounds it */
    int wait_ms = c->connect_ms > 0 && (c->timeout_ms <= 0 || c->connect_ms < c->timeout_ms)
                      ? c->connect_ms
                      : c->timeout_ms;
    int64_t deadline = wait_ms > 0 ? now_ms() + wait_ms : -1;
    for (;;) {
        int64_t left = deadline < 0 ? 100 : deadline - now_ms();
        if (left <= 0)
            return br_err_set(err, BR_E_UNAVAILABLE,
                              "%s: no server reachable at %s within %d ms (is it running, on "
                              "that port?)",
                              what, c->addr, wait_ms);
        int slice = (int)(left < 100 ? left : 100);
        zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &slice, sizeof slice);
        if (zmq_send(c->sock, c->buf.data, c->buf.len, 0) >= 0) {
            c->refusal = NULL;
            c->n_broken = 0;
            if (!follow_up) c->n_drops = 0;
            return BR_OK;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN)
            return br_err_set(err, BR_E_IO, "%s: sending to %s: %s", what, c->addr,
                              zmq_strerror(errno));
        watch_events(c);
        if (follow_up && c->n_drops > 0)
            return br_err_set(err, BR_E_UNAVAILABLE, "%s: the connection to %s was lost", what,
                              c->addr);
        if (c->refusal)
            return br_err_set(err, BR_E_UNAVAILABLE, "%s: cannot connect to %s: %s", what, c->addr,
                              c->refusal);
    }
}

/* Encodes and sends a request with only an id (cancel, ping, health, ...). */
static int send_simple(struct br_client *c, enum br_req_type type, const char *id,
                       struct br_err *err)
{
    struct br_req r;
    br_req_init(&r);
    r.type = type;
    r.id = (char *)id;
    r.id_len = strlen(id);
    int rc = br_proto_encode_request(&r, &c->buf);
    if (rc) return br_err_set(err, rc, "%s: encoding failed", br_proto_req_type_name(type));
    return send_buf(c, br_proto_req_type_name(type), 1, err);
}

/* Receives one frame (further frames of the same message are discarded) and decodes it.
 * BR_E_TIMEOUT (with no message) when nothing is waiting. */
static int recv_resp(struct br_client *c, struct br_resp *resp, struct br_err *err)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int n;
    while ((n = zmq_msg_recv(&msg, c->sock, ZMQ_DONTWAIT)) < 0 && errno == EINTR) {
    }
    if (n < 0) {
        int e = errno;
        zmq_msg_close(&msg);
        if (e == EAGAIN) return BR_E_TIMEOUT;
        return br_err_set(err, BR_E_IO, "receiving from %s: %s", c->addr, zmq_strerror(e));
    }
    bool more = zmq_msg_more(&msg);
    int rc = br_proto_decode_response(zmq_msg_data(&msg), zmq_msg_size(&msg), &c->lim, resp, err);
    zmq_msg_close(&msg);
    while (more) { /* a well-behaved server sends one frame; drop any extra */
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, c->sock, 0) < 0) {
            zmq_msg_close(&msg);
            break;
        }
        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
    }
    if (rc) br_err_prefix(err, rc, "bad response from %s", c->addr);
    return rc;
}

static void abandon(struct br_client *c, const char *id)
{
    if (strlen(id) >= sizeof c->abandoned[0]) return;
    if (c->n_abandoned == BR_CLIENT_MAX_ABANDONED) { /* the oldest goes */
        memmove(c->abandoned[0], c->abandoned[1],
                (BR_CLIENT_MAX_ABANDONED - 1) * sizeof c->abandoned[0]);
        c->n_abandoned--;
    }
    snprintf(c->abandoned[c->n_abandoned++], sizeof c->abandoned[0], "%s", id);
}

static int abandoned_index(const struct br_client *c, const char *id)
{
    for (int i = 0; id && i < c->n_abandoned; i++)
        if (!strcmp(c->abandoned[i], id)) return i;
    return -1;
}

static void abandoned_ended(struct br_client *c, const char *id)
{
    int i = abandoned_index(c, id);
    if (i < 0) return;
    memmove(c->abandoned[i], c->abandoned[i + 1],
            (size_t)(c->n_abandoned - i - 1) * sizeof c->abandoned[0]);
    c->n_abandoned--;
}

static bool is_final(const struct br_resp *r, enum br_req_type type)
{
    switch (r->type) {
    case BR_RESP_ERROR:
        return true;
    case BR_RESP_DONE:
        return type == BR_REQ_GENERATE;
    case BR_RESP_TOKEN:
        return false;
    case BR_RESP_PONG:
        return type == BR_REQ_PING;
    case BR_RESP_TOKENIZE:
        return type == BR_REQ_TOKENIZE;
    case BR_RESP_DETOKENIZE:
        return type == BR_REQ_DETOKENIZE;
    case BR_RESP_HEALTH:
        return type == BR_REQ_HEALTH;
    case BR_RESP_INFO:
        return type == BR_REQ_INFO;
    case BR_RESP_METRICS:
        return type == BR_REQ_METRICS;
    default:
        return false;
    }
}

/* Sends req (its id set) and waits for the response that ends it. token events and the
 * final done/error go to cb when given. On success with final != NULL, *final owns the
 * last response (caller frees); on an `error` response the status it maps to is returned
 * and err holds the server's message. */
static int exchange(struct br_client *c, const struct br_req *req, br_client_cb cb, void *user,
                    struct br_resp *final, struct br_err *err)
{
    const char *what = br_proto_req_type_name(req->type);
    int rc = br_proto_encode_request(req, &c->buf);
    if (rc) return br_err_set(err, rc, "%s: request could not be encoded", what);
    watch_events(c); /* drops before this request do not concern it */
    c->n_drops = 0;
    if ((rc = send_buf(c, what, 0, err))) return rc;

    int64_t last = now_ms(), next_ping = last + c->ping_ms;
    bool cancelling = false;
    zmq_pollitem_t items[2] = {{.socket = c->sock, .events = ZMQ_POLLIN},
                               {.socket = c->mon, .events = ZMQ_POLLIN}};
    for (;;) {
        int64_t now = now_ms(), wait = -1;
        if (c->timeout_ms > 0) {
            wait = last + c->timeout_ms - now;
            if (wait <= 0) {
                if (req->type == BR_REQ_GENERATE) {
                    send_simple(c, BR_REQ_CANCEL, req->id, NULL);
                    abandon(c, req->id);
                }
                return br_err_set(err, BR_E_TIMEOUT, "%s %s: no reply from %s for %d ms", what,
                                  req->id, c->addr, c->timeout_ms);
            }
        }
        if (c->ping_ms > 0 && req->type != BR_REQ_PING) {
            if (next_ping <= now) {
                /* A ping that cannot be sent now is not fatal: a lost connection ends the call
                 * below, anything else is left to the timeout. */
                send_simple(c, BR_REQ_PING, req->id, NULL);
                next_ping = now + c->ping_ms;
            }
            if (wait < 0 || next_ping - now < wait) wait = next_ping - now;
        }
        int n = c->n_drops > 0 ? 0 : zmq_poll(items, c->mon ? 2 : 1, (long)wait);
        if (n < 0) {
            if (errno == EINTR) continue;
            return br_err_set(err, BR_E_IO, "%s: poll: %s", what, zmq_strerror(errno));
        }
        if (n > 0 && (items[1].revents & ZMQ_POLLIN)) watch_events(c);
        if (c->n_drops > 0) {
            c->n_abandoned = 0; /* the server that ran them is gone */
            return br_err_set(err, BR_E_UNAVAILABLE, "%s %s: the connection to %s was lost", what,
                              req->id, c->addr);
        }
        if (!(items[0].revents & ZMQ_POLLIN)) continue;

        struct br_resp resp;
        rc = recv_resp(c, &resp, err);
        if (rc == BR_E_TIMEOUT) continue; /* spurious wake-up */
        if (rc) {
            br_resp_free(&resp);
            if (req->type == BR_REQ_GENERATE) {
                send_simple(c, BR_REQ_CANCEL, req->id, NULL);
                abandon(c, req->id);
            }
            return rc;
        }
        /* Replies to other (abandoned) requests, and pongs, are not about this call. An
         * error without an id answers a message the server could not read far enough to
         * find its id (too large, say); calls are sequential, so it is this call's. */
        bool ours = resp.id ? strcmp(resp.id, req->id) == 0 : resp.type == BR_RESP_ERROR;
        if (!ours || (resp.type == BR_RESP_PONG && req->type != BR_REQ_PING)) {
            if (!ours && (resp.type == BR_RESP_DONE || resp.type == BR_RESP_ERROR))
                abandoned_ended(c, resp.id); /* an abandoned request has ended */
            br_resp_free(&resp);
            continue;
        }
        last = now_ms();
        if (!is_final(&resp, req->type)) {
            if (resp.type == BR_RESP_TOKEN && req->type == BR_REQ_GENERATE && cb &&
                cb(&resp, user) != 0 && !cancelling) {
                cancelling = true;
                send_simple(c, BR_REQ_CANCEL, req->id, NULL);
            }
            br_resp_free(&resp);
            continue;
        }
        if (req->type == BR_REQ_GENERATE && cb) cb(&resp, user);
        if (resp.type == BR_RESP_ERROR) {
            rc = br_err_set(err, br_proto_code_status(resp.code), "%s %s: server error %s: %s",
                            what, req->id, br_proto_code_name(resp.code),
                            resp.message ? resp.message : "");
            br_resp_free(&resp);
            return rc;
        }
        if (final)
            *final = resp;
        else
            br_resp_free(&resp);
        return BR_OK;
    }
}

/* A fresh request id for this client ("c<seq>"). */
static void next_id(struct br_client *c, char *id, size_t n)
{
    snprintf(id, n, "c%" PRIu64, ++c->seq);
}

int br_client_generate(struct br_client *c, const struct br_req *req, br_client_cb cb, void *user,
                       struct br_err *err)
{
    char id[32];
    if (!c || !req || req->type != BR_REQ_GENERATE)
        return br_err_set(err, BR_E_INVALID, "generate: need a client and a generate request");
    struct br_req r = *req; /* shallow: only the id may be replaced */
    if (r.id && r.id[0] && abandoned_index(c, r.id) >= 0)
        return br_err_set(err, BR_E_DUPLICATE,
                          "generate %s: this id is still in flight on the server (an earlier "
                          "call with it was abandoned); use another id, or none",
                          r.id);
    if (!r.id || !r.id[0]) {
        next_id(c, id, sizeof id);
        r.id = id;
        r.id_len = strlen(id);
    }
    return exchange(c, &r, cb, user, NULL, err);
}

int br_client_cancel(struct br_client *c, const char *id, struct br_err *err)
{
    if (!c || !id || !id[0]) return br_err_set(err, BR_E_INVALID, "cancel: need an id");
    return send_simple(c, BR_REQ_CANCEL, id, err);
}

/* Runs a request of the given type with a fresh id; *final receives the response. */
static int simple_call(struct br_client *c, struct br_req *r, struct br_resp *final,
                       struct br_err *err)
{
    char id[32];
    next_id(c, id, sizeof id);
    r->id = id;
    r->id_len = strlen(id);
    int rc = exchange(c, r, NULL, NULL, final, err);
    r->id = NULL;
    return rc;
}

int br_client_tokenize(struct br_client *c, const char *text, size_t len, bool add_bos,
                       int32_t **tokens, uint32_t *n, struct br_err *err)
{
    struct br_req r;
    struct br_resp resp;
    if (!c || (!text && len) || !tokens || !n)
        return br_err_set(err, BR_E_INVALID, "tokenize: bad arguments");
    br_req_init(&r);
    r.type = BR_REQ_TOKENIZE;
    r.prompt = (char *)text;
    r.prompt_len = len;
    r.add_bos = add_bos;
    int rc = simple_call(c, &r, &resp, err);
    if (rc) return rc;
    *tokens = resp.tokens;
    *n = resp.n_tokens;
    resp.tokens = NULL;
    br_resp_free(&resp);
    return BR_OK;
}

int br_client_detokenize(struct br_client *c, const int32_t *tokens, uint32_t n, char **text,
                         size_t *len, struct br_err *err)
{
    struct br_req r;
    struct br_resp resp;
    if (!c || (!tokens && n) || !text)
        return br_err_set(err, BR_E_INVALID, "detokenize: bad arguments");
    br_req_init(&r);
    r.type = BR_REQ_DETOKENIZE;
    r.tokens = (int32_t *)tokens;
    r.n_tokens = n;
    int rc = simple_call(c, &r, &resp, err);
    if (rc) return rc;
    *text = resp.text;
    if (len) *len = resp.text_len;
    resp.text = NULL;
    br_resp_free(&resp);
    return BR_OK;
}

int br_client_health(struct br_client *c, enum br_health_state *state, struct br_err *err)
{
    struct br_req r;
    struct br_resp resp;
    if (!c || !state) return br_err_set(err, BR_E_INVALID, "health: bad arguments");
    br_req_init(&r);
    r.type = BR_REQ_HEALTH;
    int rc = simple_call(c, &r, &resp, err);
    if (rc) return rc;
    *state = resp.state;
    br_resp_free(&resp);
    return BR_OK;
}

/* A request of type t without fields, its whole response moved to out. */
static int whole_call(struct br_client *c, enum br_req_type t, struct br_resp *out,
                      struct br_err *err)
{
    struct br_req r;
    if (!c || !out)
        return br_err_set(err, BR_E_INVALID, "%s: bad arguments", br_proto_req_type_name(t));
    memset(out, 0, sizeof *out);
    br_req_init(&r);
    r.type = t;
    return simple_call(c, &r, out, err);
}

int br_client_info(struct br_client *c, struct br_resp *out, struct br_err *err)
{
    return whole_call(c, BR_REQ_INFO, out, err);
}

int br_client_metrics(struct br_client *c, struct br_resp *out, struct br_err *err)
{
    return whole_call(c, BR_REQ_METRICS, out, err);
}

int br_client_ping(struct br_client *c, struct br_err *err)
{
    struct br_req r;
    if (!c) return br_err_set(err, BR_E_INVALID, "ping: no client");
    br_req_init(&r);
    r.type = BR_REQ_PING;
    return simple_call(c, &r, NULL, err);
}
