/*
 * The HTTP front end (see frontend_http.h).
 *
 * One struct hreq per HTTP request, through these phases:
 *   RECEIVING  the body arrives (bounded by max_body; a larger Content-Length is refused
 *              before any of it is read)
 *   WAITING    submitted to the scheduler; the connection is suspended until an event
 *              arrives (for a non-streaming request, until the final one)
 *   STREAMING  an SSE response is queued; its reader turns queued events into `data:`
 *              lines and suspends the connection whenever the queue is empty
 *   ANSWERED   a complete response was queued
 * A connection is only ever suspended by its own polling thread (inside the access
 * handler or the content reader, as libmicrohttpd requires) and resumed by whoever queues
 * an event, under the request's mutex, so a wake-up cannot be lost between "queue empty"
 * and "suspend".
 *
 * Ownership: an hreq has a reference for the connection (dropped when libmicrohttpd
 * reports the request completed) and one for the request in flight at the gateway
 * (dropped on its final event). The gateway knows a request by its client key, which is
 * the hreq's address: the transport's thread takes the outbox's events (transport.h)
 * and queues each on its hreq; the polling thread turns them into bytes.
 *
 * Requests are counted (metrics) and logged once: when refused here, or on the final
 * event, whose status is the error's (when no token was sent yet) or 200.
 */
#include "coordinator/frontend_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bitrack/progress.h"
#include "coordinator/http_api.h"
#include "coordinator/metrics.h"
#include "coordinator/reqlog.h"
#include "coordinator/server.h"
#include "proto/proto.h"

#define KEEPALIVE_S 1.0 /* an SSE comment after this long without an event */

enum phase { RECEIVING, WAITING, STREAMING, ANSWERED };
enum route { R_NONE, R_COMPLETIONS, R_CHAT, R_MODELS, R_HEALTH, R_METRICS };

struct hreq {
    struct br_http *h;
    pthread_mutex_t mu;
    int refs;                 /* under mu: the connection, the job */
    struct MHD_Connection *c; /* valid while conn_alive */
    int conn_alive, suspended;
    enum phase phase;
    enum route route;
    struct br_buf body; /* (body.len) <= max_body */
    int too_big;
    char client[64];
    /* the generation */
    struct br_http_req hr;
    char id[64];
    int64_t created;
    double t_arrival;
    int submitted;                /* the job holds a reference */
    struct br_event *head, *tail; /* under mu: events not yet consumed (owned) */
    int final_queued;             /* under mu: no more events will be queued */
    int tokens_queued;            /* under mu: a token event was queued before the final */
    int accounted;                /* under mu: counted and logged */
    int ping_due;                 /* under mu: the transport thread asks for a keep-alive comment */
    int sse;                      /* under mu: the SSE response is queued (phase STREAMING) */
    double last_event;            /* under mu */
    /* the response, on the polling thread */
    struct br_buf text;       /* non-streaming: the completion so far */
    char **pieces;            /* (n_lp) token texts, when logprobs (each an event's text) */
    float *lps;               /* (n_lp) */
    struct br_http_top *tops; /* (n_lp) when top_logprobs: bytes point into pieces[i] */
    size_t n_lp, cap_lp;
    int role_sent, eos;
    struct br_buf out; /* SSE bytes not yet handed to libmicrohttpd */
    size_t out_off;
    struct hreq *prev_live, *next_live; /* in h->live while submitted (under h->mu) */
};

struct br_http {
    struct br_http_opts o;
    char *addr, *model_name, *api_key;
    size_t api_key_len;
    struct br_gateway *gw;
    struct br_outbox *box;
    struct br_metrics *metrics;
    struct br_reqlog *log;
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    struct hreq *live;       /* submitted requests whose final event has not come */
    int answering;           /* submitted requests whose connection has not completed them */
    pthread_cond_t answered; /* signalled when answering drops */
    int quit_fd;             /* written by stop: the transport's thread ends */
    pthread_t thread;
    int started;
    atomic_ullong next_id;
    uint32_t id_salt;
};

/* ---- request state ------------------------------------------------------------------- */

static void hreq_unref(struct hreq *q)
{
    pthread_mutex_lock(&q->mu);
    int left = --q->refs;
    pthread_mutex_unlock(&q->mu);
    if (left) return;
    br_event_free_list(q->head);
    for (size_t i = 0; i < q->n_lp; i++) free(q->pieces[i]);
    free(q->pieces);
    free(q->lps);
    free(q->tops);
    br_buf_free(&q->body);
    br_buf_free(&q->text);
    br_buf_free(&q->out);
    br_http_req_free(&q->hr);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* Under q->mu: appends an event (taking it); wakes the connection if it waits for one. */
static void queue_event(struct hreq *q, struct br_event *e)
{
    e->next = NULL;
    if (q->final_queued) {
        br_event_free_list(e);
        return;
    }
    int final = e->kind != BR_EVENT_TOKEN;
    if (q->tail)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
    if (final)
        q->final_queued = 1;
    else
        q->tokens_queued = 1;
    q->last_event = br_now();
    if (q->suspended && q->conn_alive && (final || q->hr.stream)) {
        q->suspended = 0;
        MHD_resume_connection(q->c);
    }
}

/* An error event made here (the server is going away and this request has no answer). */
static struct br_event *error_event(const char *id, enum br_proto_code code, const char *msg)
{
    struct br_event *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->kind = BR_EVENT_ERROR;
    e->code = code;
    e->id = strdup(id);
    e->message = strdup(msg);
    return e;
}

/* Counts and logs a request once. status 0: derived from the final event. Under q->mu. */
static void account(struct hreq *q, const struct br_event *final, const char *result, int status)
{
    if (q->accounted) return;
    q->accounted = 1;
    struct br_outcome o;
    br_outcome_init(&o, "http", q->client, q->id[0] ? q->id : "-", result);
    if (final) {
        br_outcome_from_event(&o, final);
        if (final->kind == BR_EVENT_ERROR && !q->tokens_queued) {
            struct br_http_error e;
            br_http_error_from_code(&e, final->code, NULL);
            status = e.status;
        } else {
            status = q->conn_alive ? 200 : 499;
        }
    }
    o.http_status = status;
    br_metrics_observe(q->h->metrics, &o);
    br_reqlog_write(q->h->log, &o);
}

static void live_remove(struct br_http *h, struct hreq *q)
{
    pthread_mutex_lock(&h->mu);
    if (q->prev_live)
        q->prev_live->next_live = q->next_live;
    else if (h->live == q)
        h->live = q->next_live;
    if (q->next_live) q->next_live->prev_live = q->prev_live;
    q->prev_live = q->next_live = NULL;
    pthread_mutex_unlock(&h->mu);
}

/* The transport's thread: every waiting event goes to its request; a final one counts
 * the request and drops the gateway's reference. */
static void dispatch(struct br_http *h)
{
    struct br_event *list = br_outbox_take(h->box);
    while (list) {
        struct br_event *e = list;
        list = e->next;
        struct hreq *q;
        if (e->client.len != sizeof q) {
            e->next = NULL;
            br_event_free_list(e);
            continue;
        }
        memcpy(&q, e->client.bytes, sizeof q);
        int final = e->kind != BR_EVENT_TOKEN;
        pthread_mutex_lock(&q->mu);
        if (final) account(q, e, NULL, 0);
        queue_event(q, e);
        pthread_mutex_unlock(&q->mu);
        if (final) {
            live_remove(h, q);
            hreq_unref(q);
        }
    }
}

/* ---- responses ------------------------------------------------------------------------ */

static enum MHD_Result send_body(struct MHD_Connection *c, int status, const char *ctype,
                                 const char *body, size_t len, int retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    if (retry_after) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, char *json)
{
    static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                              "\"param\":null,\"code\":null}}";
    enum MHD_Result ok = json ? send_body(c, status, "application/json", json, strlen(json), 0)
                              : send_body(c, 500, "application/json", oom, sizeof oom - 1, 0);
    free(json);
    return ok;
}

/* An error response; counted and logged unless it is a request outside generation. */
static enum MHD_Result send_error(struct hreq *q, struct MHD_Connection *c,
                                  const struct br_http_error *e, const char *result)
{
    char *json = br_http_error_json(e);
    enum MHD_Result ok =
        json ? send_body(c, e->status, "application/json", json, strlen(json), e->status == 429)
             : MHD_NO;
    free(json);
    q->phase = ANSWERED;
    pthread_mutex_lock(&q->mu);
    account(q, NULL, result, e->status);
    pthread_mutex_unlock(&q->mu);
    return ok;
}

/* ---- events -> bytes ----------------------------------------------------------------- */

/* The alternatives of a token event, as the response lists them (http_api.h). */
static void event_top(enum br_http_kind kind, const struct br_event *r, struct br_http_top *t)
{
    int listed = 0;
    t->n = 0;
    for (int i = 0; r->text && i < r->n_top; i++) {
        t->alt[t->n++] =
            (struct br_http_alt){r->text + r->top[i].off, r->top[i].len, r->top[i].logprob};
        listed |= r->top[i].token == r->token;
    }
    if (kind == BR_HTTP_COMPLETIONS && r->text && r->n_top > 0 && !listed)
        t->alt[t->n++] = (struct br_http_alt){r->text + r->self_off, r->self_len, r->logprob};
}

/* Non-streaming: keeps a token's piece, logprob and alternatives; the event's text moves
 * here (its alternatives' bytes live in it). */
static int keep_logprob(struct hreq *q, struct br_event *r)
{
    if (!q->hr.logprobs || r->token < 0) return BR_OK;
    if (q->n_lp == q->cap_lp) {
        size_t cap = q->cap_lp ? q->cap_lp * 2 : 64;
        char **p = realloc(q->pieces, cap * sizeof *p);
        if (p) q->pieces = p;
        float *l = realloc(q->lps, cap * sizeof *l);
        if (l) q->lps = l;
        struct br_http_top *t = NULL;
        if (q->hr.top_logprobs > 0 && (t = realloc(q->tops, cap * sizeof *t))) q->tops = t;
        if (!p || !l || (q->hr.top_logprobs > 0 && !t)) return BR_E_NOMEM;
        q->cap_lp = cap;
    }
    char *s = r->text ? r->text : strdup("");
    if (!s) return BR_E_NOMEM;
    if (q->tops) event_top(q->hr.kind, r, &q->tops[q->n_lp]);
    r->text = NULL;
    q->pieces[q->n_lp] = s;
    q->lps[q->n_lp++] = r->has_logprob ? r->logprob : 0.0f;
    return BR_OK;
}

static const char *finish_name(enum br_finish f)
{
    return f == BR_FINISH_LENGTH ? "length" : "stop";
}

static int sse_data(struct br_buf *out, const char *json)
{
    if (!json) return BR_E_NOMEM;
    int rc = br_buf_append(out, "data: ", 6);
    if (!rc) rc = br_buf_append(out, json, strlen(json));
    if (!rc) rc = br_buf_append(out, "\n\n", 2);
    return rc;
}

/* Streaming: turns one event into SSE bytes in q->out. */
static void stream_event(struct hreq *q, const struct br_event *r)
{
    const char *model = q->h->model_name;
    enum br_http_kind kind = q->hr.kind;
    char *json = NULL;
    if (r->kind == BR_EVENT_TOKEN) {
        const char *piece = r->text ? r->text : "";
        float lp = r->has_logprob ? r->logprob : 0.0f;
        struct br_http_top top;
        if (q->hr.top_logprobs > 0) event_top(kind, r, &top);
        struct br_http_logprobs one = {&piece, &lp, 1, q->hr.top_logprobs > 0 ? &top : NULL};
        json = br_http_chunk_json(kind, q->id, q->created, model, piece, r->text_len, !q->role_sent,
                                  NULL, q->hr.logprobs && r->token >= 0 ? &one : NULL, NULL);
        q->role_sent = 1;
        sse_data(&q->out, json);
    } else if (r->kind == BR_EVENT_DONE) {
        json = br_http_chunk_json(kind, q->id, q->created, model, "", 0, !q->role_sent,
                                  finish_name(r->finish), NULL, NULL);
        sse_data(&q->out, json);
        if (q->hr.include_usage) {
            free(json);
            json = br_http_chunk_json(kind, q->id, q->created, model, NULL, 0, false, NULL, NULL,
                                      &r->usage);
            sse_data(&q->out, json);
        }
        br_buf_append(&q->out, "data: [DONE]\n\n", 14);
        q->eos = 1;
    } else {
        struct br_http_error e;
        br_http_error_from_code(&e, r->kind == BR_EVENT_ERROR ? r->code : BR_PROTO_INTERNAL,
                                r->message);
        json = br_http_error_json(&e);
        sse_data(&q->out, json);
        q->eos = 1;
    }
    free(json);
}

/* Pops the oldest event (the caller frees it), or NULL. Under q->mu. */
static struct br_event *pop_event(struct hreq *q)
{
    struct br_event *e = q->head;
    if (!e) return NULL;
    q->head = e->next;
    if (!q->head) q->tail = NULL;
    e->next = NULL;
    return e;
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct hreq *q = cls;
    pthread_mutex_lock(&q->mu);
    if (q->out_off == q->out.len) {
        br_buf_reset(&q->out);
        q->out_off = 0;
        struct br_event *r;
        while (!q->eos && (r = pop_event(q))) {
            stream_event(q, r);
            br_event_free_list(r);
        }
        if (!q->out.len && !q->eos && q->ping_due) br_buf_append(&q->out, ": keep-alive\n\n", 14);
        q->ping_due = 0;
    }
    ssize_t n = 0;
    if (q->out_off < q->out.len) {
        size_t k = q->out.len - q->out_off;
        if (k > max) k = max;
        memcpy(buf, q->out.data + q->out_off, k);
        q->out_off += k;
        n = (ssize_t)k;
    } else if (q->eos) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        q->suspended = 1;
        MHD_suspend_connection(q->c);
    }
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* WAITING, on the polling thread: answer once there is something to answer with. */
static enum MHD_Result on_waiting(struct hreq *q, struct MHD_Connection *c)
{
    pthread_mutex_lock(&q->mu);
    if (q->hr.stream && q->head) {
        /* the first event decides: an error before any token keeps its status */
        if (q->head->kind == BR_EVENT_ERROR) {
            struct br_http_error e;
            br_http_error_from_code(&e, q->head->code, q->head->message);
            if (q->head->code == BR_PROTO_TOO_LONG)
                snprintf(e.param, sizeof e.param, "%s",
                         q->hr.kind == BR_HTTP_CHAT ? "messages" : "prompt");
            pthread_mutex_unlock(&q->mu);
            q->phase = ANSWERED;
            char *json = br_http_error_json(&e);
            enum MHD_Result ok = json ? send_body(c, e.status, "application/json", json,
                                                  strlen(json), e.status == 429)
                                      : MHD_NO;
            free(json);
            return ok;
        }
        q->sse = 1;
        pthread_mutex_unlock(&q->mu);
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_reader, q, NULL);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        q->phase = STREAMING;
        return ok;
    }
    if (!q->hr.stream && q->final_queued) {
        /* non-streaming: gather the pieces, answer with the final event */
        struct br_event *r, *last = NULL;
        int ok_mem = 1;
        while ((r = pop_event(q))) {
            if (r->kind == BR_EVENT_TOKEN) {
                ok_mem &= br_buf_append(&q->text, r->text ? r->text : "", r->text_len) == BR_OK;
                ok_mem &= keep_logprob(q, r) == BR_OK;
                br_event_free_list(r);
            } else {
                br_event_free_list(last);
                last = r;
            }
        }
        pthread_mutex_unlock(&q->mu);
        char *json = NULL;
        int status = 200;
        if (last && last->kind == BR_EVENT_DONE && ok_mem) {
            struct br_http_logprobs lp = {(const char *const *)q->pieces, q->lps, q->n_lp, q->tops};
            json = br_http_completion_json(q->hr.kind, q->id, q->created, q->h->model_name,
                                           q->text.data ? (const char *)q->text.data : "",
                                           q->text.len, finish_name(last->finish), &last->usage,
                                           q->hr.logprobs ? &lp : NULL);
        } else {
            int is_err = last && last->kind == BR_EVENT_ERROR;
            struct br_http_error e;
            br_http_error_from_code(&e, is_err ? last->code : BR_PROTO_INTERNAL,
                                    is_err ? last->message : "out of memory");
            if (is_err && last->code == BR_PROTO_TOO_LONG)
                snprintf(e.param, sizeof e.param, "%s",
                         q->hr.kind == BR_HTTP_CHAT ? "messages" : "prompt");
            status = e.status;
            json = br_http_error_json(&e);
        }
        br_event_free_list(last);
        q->phase = ANSWERED;
        if (status == 429) {
            enum MHD_Result ok =
                json ? send_body(c, status, "application/json", json, strlen(json), 1) : MHD_NO;
            free(json);
            return ok;
        }
        return send_json(c, status, json);
    }
    q->suspended = 1;
    MHD_suspend_connection(c);
    pthread_mutex_unlock(&q->mu);
    return MHD_YES;
}

/* ---- requests ------------------------------------------------------------------------ */

/* Constant-time for a given key: the work depends only on the key's length. */
static int key_ok(const struct br_http *h, struct MHD_Connection *c)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7)) return 0;
    const char *given = auth + 7;
    size_t n = strlen(given);
    unsigned char d = n != h->api_key_len;
    for (size_t i = 0; i < h->api_key_len; i++)
        d |= (unsigned char)h->api_key[i] ^ (unsigned char)(i < n ? given[i] : 0);
    return d == 0;
}

static void new_id(struct br_http *h, struct hreq *q)
{
    unsigned long long n = atomic_fetch_add(&h->next_id, 1);
    snprintf(q->id, sizeof q->id, "%s%08x%016llx",
             q->hr.kind == BR_HTTP_CHAT ? "chatcmpl-" : "cmpl-", h->id_salt, n);
    q->created = (int64_t)time(NULL);
}

/* POST, body complete: parse, check, submit. */
static enum MHD_Result on_generate(struct hreq *q, struct MHD_Connection *c)
{
    struct br_http *h = q->h;
    struct br_http_error e;
    enum br_http_kind kind = q->route == R_CHAT ? BR_HTTP_CHAT : BR_HTTP_COMPLETIONS;
    q->hr.kind = kind;
    new_id(h, q);
    if (q->too_big) {
        br_http_error_set(&e, 413, NULL, "request_too_large",
                          "the request body is larger than this server accepts (%zu bytes)",
                          h->o.max_body);
        return send_error(q, c, &e, "too_large");
    }
    enum br_health_state hs = br_gateway_health(h->gw);
    if (hs != BR_HEALTH_READY) {
        br_http_error_set(&e, 503, NULL, "unavailable", "%s",
                          hs == BR_HEALTH_LOADING ? "the model is still loading"
                                                  : "the server is shutting down; retry later");
        return send_error(q, c, &e, "unavailable");
    }
    struct br_proto_limits lim; /* the server's field limits and vocabulary */
    br_gateway_limits(h->gw, &lim);
    if (br_http_parse_request(kind, (const char *)q->body.data, q->body.len, &lim, &q->hr, &e)) {
        q->hr.kind = kind;
        return send_error(q, c, &e, e.status == 400 ? "bad_request" : "internal");
    }
    br_buf_free(&q->body);
    if (q->hr.model && strcmp(q->hr.model, h->model_name)) {
        br_http_error_set(&e, 404, "model", "model_not_found",
                          "The model `%.200s` does not exist; this server serves `%s`", q->hr.model,
                          h->model_name);
        return send_error(q, c, &e, "not_found");
    }
    q->hr.req.id = strdup(q->id);
    if (!q->hr.req.id) {
        br_http_error_set(&e, 500, NULL, NULL, "out of memory");
        return send_error(q, c, &e, "internal");
    }
    q->hr.req.id_len = strlen(q->id);
    q->t_arrival = br_now();
    /* the gateway's reference, and a place on the live list, before the first event */
    pthread_mutex_lock(&q->mu);
    q->refs++;
    q->submitted = 1;
    q->phase = WAITING;
    pthread_mutex_unlock(&q->mu);
    pthread_mutex_lock(&h->mu);
    q->next_live = h->live;
    if (h->live) h->live->prev_live = q;
    h->live = q;
    h->answering++;
    pthread_mutex_unlock(&h->mu);
    /* refusals (busy, too_long, draining...) come back as the request's final event */
    struct br_client_key key = {.len = sizeof q};
    memcpy(key.bytes, &q, sizeof q);
    br_gateway_submit(h->gw, h->box, &key, &q->hr.req);
    return on_waiting(q, c);
}

static enum route route_of(const char *method, const char *url, int *method_ok)
{
    static const struct {
        const char *path, *method;
        enum route r;
    } routes[] = {{"/v1/completions", "POST", R_COMPLETIONS},
                  {"/v1/chat/completions", "POST", R_CHAT},
                  {"/v1/models", "GET", R_MODELS},
                  {"/health", "GET", R_HEALTH},
                  {"/metrics", "GET", R_METRICS}};
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (!strcmp(url, routes[i].path)) {
            *method_ok = !strcmp(method, routes[i].method);
            return routes[i].r;
        }
    *method_ok = 0;
    return R_NONE;
}

/* An integer the gateway reports in its info (info != 0) or metrics. */
static int64_t kv_int(struct br_http *h, const char *key, int info)
{
    struct br_kv kv[64];
    size_t n = info ? br_gateway_info(h->gw, kv, 64) : br_gateway_metrics(h->gw, kv, 64);
    for (size_t i = 0; i < n; i++)
        if (kv[i].kind == BR_KV_INT && !strcmp(kv[i].key, key)) return kv[i].i;
    return 0;
}

static void gauges(struct br_http *h, struct br_metrics_gauges *g)
{
    struct br_kv kv[64];
    size_t n = br_gateway_metrics(h->gw, kv, 64);
    memset(g, 0, sizeof *g);
    int64_t live = 0;
    for (size_t i = 0; i < n; i++) {
        if (kv[i].kind != BR_KV_INT) continue;
        if (!strcmp(kv[i].key, "running")) g->running = kv[i].i;
        if (!strcmp(kv[i].key, "live")) live = kv[i].i;
        if (!strcmp(kv[i].key, "steps")) g->steps = kv[i].i;
        if (!strcmp(kv[i].key, "kv_blocks_used")) g->kv_blocks_used = kv[i].i;
        if (!strcmp(kv[i].key, "kv_blocks_total")) g->kv_blocks_total = kv[i].i;
    }
    g->waiting = live > g->running ? live - g->running : 0;
    g->ready = br_gateway_health(h->gw) == BR_HEALTH_READY;
}

static enum MHD_Result on_get(struct hreq *q, struct MHD_Connection *c)
{
    struct br_http *h = q->h;
    q->phase = ANSWERED;
    q->accounted = 1; /* probes and scrapes are not requests to log */
    if (q->route == R_HEALTH) {
        enum br_health_state st = br_gateway_health(h->gw);
        char body[64];
        snprintf(body, sizeof body, "{\"status\":\"%s\"}",
                 st == BR_HEALTH_READY     ? "ok"
                 : st == BR_HEALTH_LOADING ? "loading"
                                           : "draining");
        return send_body(c, st == BR_HEALTH_READY ? 200 : 503, "application/json", body,
                         strlen(body), 0);
    }
    if (q->route == R_METRICS) {
        struct br_metrics_gauges g;
        gauges(h, &g);
        struct br_buf b = {0};
        enum MHD_Result ok;
        if (br_metrics_render(h->metrics, &g, &b) == BR_OK)
            ok = send_body(c, 200, "text/plain; version=0.0.4; charset=utf-8", (const char *)b.data,
                           b.len, 0);
        else
            ok = send_json(c, 500, NULL);
        br_buf_free(&b);
        return ok;
    }
    struct br_proto_limits lim;
    br_gateway_limits(h->gw, &lim);
    return send_json(c, 200,
                     br_http_models_json(h->model_name, 0, lim.vocab_size,
                                         (int32_t)kv_int(h, "context_length", 1)));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct br_http *h = cls;
    struct hreq *q = *con_cls;
    if (!q) {
        q = calloc(1, sizeof *q);
        if (!q) return MHD_NO;
        pthread_mutex_init(&q->mu, NULL);
        q->h = h;
        q->refs = 1;
        q->c = c;
        q->conn_alive = 1;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr)
            getnameinfo(ci->client_addr,
                        ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                               : sizeof(struct sockaddr_in),
                        q->client, sizeof q->client, NULL, 0, NI_NUMERICHOST);
        *con_cls = q;
        int method_ok = 0;
        q->route = route_of(method, url, &method_ok);
        struct br_http_error e;
        if (!method_ok) {
            br_http_error_set(&e, 404, NULL, "unknown_url", "Unknown request URL: %.16s %.200s",
                              method, url);
            return send_error(q, c, &e, "not_found");
        }
        int open_route = q->route == R_HEALTH || q->route == R_METRICS;
        if (h->api_key && (!open_route || h->o.auth_all) && !key_ok(h, c)) {
            br_http_error_set(&e, 401, NULL, "invalid_api_key",
                              "a valid API key is needed: send `Authorization: Bearer KEY`");
            return send_error(q, c, &e, "unauthorized");
        }
        if (q->route == R_COMPLETIONS || q->route == R_CHAT) {
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
            if (cl && strtoull(cl, NULL, 10) > h->o.max_body) {
                br_http_error_set(&e, 413, NULL, "request_too_large",
                                  "the request body is larger than this server accepts (%zu "
                                  "bytes)",
                                  h->o.max_body);
                return send_error(q, c, &e, "too_large");
            }
            return MHD_YES; /* the body follows */
        }
        return on_get(q, c);
    }
    if (q->phase == RECEIVING) {
        if (*upload_size) {
            if (!q->too_big && q->body.len + *upload_size <= q->h->o.max_body) {
                if (br_buf_append(&q->body, upload, *upload_size)) q->too_big = 1;
            } else {
                q->too_big = 1;
                br_buf_free(&q->body);
            }
            *upload_size = 0;
            return MHD_YES;
        }
        return on_generate(q, c);
    }
    if (q->phase == WAITING) return on_waiting(q, c);
    *upload_size = 0; /* ANSWERED: a body after an early answer is read and dropped */
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    struct hreq *q = *con_cls;
    if (!q) return;
    *con_cls = NULL;
    pthread_mutex_lock(&q->mu);
    q->conn_alive = 0;
    q->suspended = 0;
    int cancel = q->submitted && !q->final_queued, submitted = q->submitted;
    pthread_mutex_unlock(&q->mu);
    if (submitted) {
        pthread_mutex_lock(&q->h->mu);
        if (--q->h->answering == 0) pthread_cond_broadcast(&q->h->answered);
        pthread_mutex_unlock(&q->h->mu);
    }
    /* the client went away: its request stops now (its final event still comes) */
    if (cancel) {
        struct br_client_key key = {.len = sizeof q};
        memcpy(key.bytes, &q, sizeof q);
        br_gateway_client_gone(q->h->gw, q->h->box, &key);
    }
    hreq_unref(q);
}

/* Keep-alive comments for streams that waited a second for their next event: a closed
 * connection is noticed when one is written. */
static void keepalive(struct br_http *h)
{
    double now = br_now();
    pthread_mutex_lock(&h->mu);
    for (struct hreq *q = h->live; q; q = q->next_live) {
        pthread_mutex_lock(&q->mu);
        if (q->sse && q->suspended && q->conn_alive && now - q->last_event > KEEPALIVE_S) {
            q->ping_due = 1;
            q->last_event = now;
            q->suspended = 0;
            MHD_resume_connection(q->c);
        }
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_unlock(&h->mu);
}

/* The transport's thread: waits in poll() on the outbox and the quit descriptor; the
 * timeout paces the keep-alive check. */
static void *http_main(void *arg)
{
    struct br_http *h = arg;
    double last = br_now();
    for (;;) {
        struct pollfd p[2] = {{br_outbox_fd(h->box), POLLIN, 0}, {h->quit_fd, POLLIN, 0}};
        int rc = poll(p, 2, 100);
        if (rc < 0 && errno != EINTR) break;
        if (rc > 0 && (p[0].revents & POLLIN)) dispatch(h);
        if (rc > 0 && (p[1].revents & POLLIN)) break;
        if (br_now() - last >= 0.1) {
            keepalive(h);
            last = br_now();
        }
    }
    dispatch(h); /* the gateway has given every request its final event */
    return NULL;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len,
                      struct br_err *err)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1] || (size_t)(colon - addr) >= sizeof host)
        return br_err_set(err, BR_E_INVALID, "--http %s: expected HOST:PORT", addr);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host) - 2);
        host[strlen(host) - 2] = '\0';
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int g = getaddrinfo(host, colon + 1, &hints, &res);
    if (g || !res)
        return br_err_set(err, BR_E_INVALID, "--http %s: %s", addr,
                          g ? gai_strerror(g) : "no address");
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return BR_OK;
}

/* libmicrohttpd's own complaints (a client's protocol error, a full connection table):
 * one line, at most one per second, counted in between. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    static _Atomic double last;
    static atomic_long skipped;
    double now = br_now();
    if (now - atomic_load(&last) < 1.0) {
        atomic_fetch_add(&skipped, 1);
        return;
    }
    atomic_store(&last, now);
    char line[256];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    long k = atomic_exchange(&skipped, 0);
    fprintf(stderr, "bitrack serve: http: %s%s\n", line, k ? " (and more like it)" : "");
}

static void http_free(struct br_http *h)
{
    if (h->d) {
        /* libmicrohttpd must not be stopped with suspended connections: a request still
         * without its final event (none, once the gateway answered all) gets one here */
        pthread_mutex_lock(&h->mu);
        for (struct hreq *q = h->live; q; q = q->next_live) {
            pthread_mutex_lock(&q->mu);
            struct br_event *e = q->final_queued ? NULL
                                                 : error_event(q->id, BR_PROTO_UNAVAILABLE,
                                                               "the server is shutting down");
            if (e) queue_event(q, e);
            if (q->suspended && q->conn_alive) {
                q->suspended = 0;
                MHD_resume_connection(q->c);
            }
            pthread_mutex_unlock(&q->mu);
        }
        /* the final events just queued (the server stops, or a rank was lost) are written
         * before the connections close: up to a second for the last of them */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        while (h->answering > 0)
            if (pthread_cond_timedwait(&h->answered, &h->mu, &until)) break;
        pthread_mutex_unlock(&h->mu);
        MHD_stop_daemon(h->d);
    }
    /* what is still on the live list lost its connection and waits for nothing more */
    while (h->live) {
        struct hreq *q = h->live;
        live_remove(h, q);
        hreq_unref(q);
    }
    br_outbox_destroy(&h->box);
    if (h->quit_fd >= 0) close(h->quit_fd);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->answered);
    free(h->addr);
    free(h->model_name);
    free(h->api_key);
    free(h);
}

static int http_start(struct br_gateway *gw, const struct br_server_opts *so, void **state,
                      struct br_err *err)
{
    *state = NULL;
    const struct br_http_opts *o = so->http;
    if (!o) return BR_OK; /* no --http */
    struct br_http *h = calloc(1, sizeof *h);
    if (!h) return br_err_set(err, BR_E_NOMEM, "out of memory");
    h->o = *o;
    h->quit_fd = -1;
    if (!h->o.max_body) h->o.max_body = (size_t)4 << 20;
    if (!h->o.max_conns) h->o.max_conns = 1024;
    if (!h->o.timeout_s) h->o.timeout_s = 30;
    if (!h->o.threads) h->o.threads = 2;
    h->gw = gw;
    h->metrics = so->metrics;
    h->log = so->log;
    h->addr = strdup(o->addr ? o->addr : "127.0.0.1:8080");
    h->model_name = strdup(o->model_name ? o->model_name : "bitrack");
    h->api_key = o->api_key ? strdup(o->api_key) : NULL;
    h->api_key_len = o->api_key ? strlen(o->api_key) : 0;
    h->id_salt = (uint32_t)((uint64_t)(br_now() * 1e6) ^ (uint64_t)getpid() << 16);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->answered, NULL);
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int rc = BR_OK;
    if (!h->addr || !h->model_name || (o->api_key && !h->api_key)) {
        rc = br_err_set(err, BR_E_NOMEM, "out of memory");
        goto fail;
    }
    rc = parse_addr(h->addr, &ss, &sl, err);
    if (rc) goto fail;
    rc = br_outbox_create(gw, &h->box, err);
    if (rc) goto fail;
    h->quit_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->quit_fd < 0) {
        rc = br_err_set(err, BR_E_INTERNAL, "cannot set up the HTTP front end");
        goto fail;
    }
    /* each connection is a descriptor: make room for the connection limit */
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < h->o.max_conns + 256 &&
        rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max < h->o.max_conns + 256 ? rl.rlim_max : h->o.max_conns + 256;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    uint16_t port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    h->d = MHD_start_daemon(
        flags, port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->o.max_conns, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)h->o.timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)h->o.threads, MHD_OPTION_LISTENING_ADDRESS_REUSE,
        (unsigned)1, MHD_OPTION_END);
    if (!h->d) {
        rc = br_err_set(err, BR_E_UNAVAILABLE, "--http %s: cannot listen there (%s)", h->addr,
                        strerror(errno));
        goto fail;
    }
    if (pthread_create(&h->thread, NULL, http_main, h)) {
        rc = br_err_set(err, BR_E_INTERNAL, "cannot start the HTTP front end's thread");
        goto fail;
    }
    h->started = 1;
    *state = h;
    return BR_OK;
fail:
    http_free(h);
    return rc;
}

/* Called once the gateway has given every request its final event: the thread forwards
 * what the outbox holds and ends, then every connection is answered and closed. */
static void http_stop(void *state)
{
    struct br_http *h = state;
    if (!h) return;
    if (h->started) {
        uint64_t one = 1;
        ssize_t r = write(h->quit_fd, &one, sizeof one);
        (void)r;
        pthread_join(h->thread, NULL);
    }
    http_free(h);
}

const struct br_transport_ops br_frontend_http = {"http", http_start, http_stop};
