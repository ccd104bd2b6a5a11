/*
 * The serving gateway (see gateway.h and transport.h).
 *
 * Every request a transport submits becomes an entry of one table, from its arrival to
 * its final event. An entry moves through stages:
 *
 *   QUEUED   in its client's preparation queue (the request's memory is here)
 *   RUNNING  being prepared by the gateway's thread (rendered, tokenized)
 *   READY    prepared, waiting for the scheduler's thread to take it (br_gateway_feed)
 *   SCHED    in the scheduler, which emits its events through the sink
 *
 * and leaves the table with its final event. br_gateway_answer_all answers every entry
 * at once (`unavailable`) and marks it answered: an answered entry's later events are
 * dropped, and the entry goes when its owner is done with it (at once in QUEUED and READY,
 * after preparation in RUNNING, with the scheduler's final event in SCHED).
 *
 * Lock order: the gateway's mutex, then an outbox's.
 */
#include "coordinator/gateway.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bitrack/progress.h"
#include "coordinator/chat.h"
#include "coordinator/tokenizer.h"

struct br_outbox {
    struct br_gateway *gw;
    pthread_mutex_t mu;
    struct br_event *head, *tail; /* under mu */
    int fd;                       /* eventfd: non-zero while events wait */
    struct br_outbox *next;       /* the gateway's list, under the gateway's mutex */
};

enum stage { ST_QUEUED, ST_RUNNING, ST_READY, ST_SCHED };

struct entry {
    struct entry *next; /* the table */
    struct br_outbox *box;
    struct br_client_key client;
    char *id;
    enum br_req_type type;
    uint64_t ticket;
    enum stage stage;
    bool stream, answered, cancelled;
    double t_arrival, last_seen;
    size_t in_bytes;
    struct br_req req;          /* QUEUED, RUNNING */
    struct br_sched_job_in job; /* READY */
    struct entry *qnext;        /* its client's queue (QUEUED) or the ready list (READY) */
};

/* One client's preparation queue; the queues form a ring taken in turn. */
struct clientq {
    struct br_outbox *box;
    struct br_client_key client;
    struct entry *head, *tail;
    struct clientq *next;
};

struct cancel {
    uint64_t ticket;
    struct cancel *next;
};

struct br_gateway {
    struct br_gateway_opts o;
    char **info; /* NULL-terminated pairs (copied) */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the preparing thread: work or quit */
    pthread_t thread;
    int thread_started;
    int quit;     /* under mu */
    int wake_fd;  /* eventfd for the scheduler's thread */
    int answered; /* answer_all happened: no new requests */
    struct br_outbox *boxes;
    struct entry *table;
    struct clientq *queues; /* ring position: the next client to serve */
    struct entry *ready_head, *ready_tail;
    struct cancel *cancels;
    int64_t prep_bytes;
    uint64_t next_ticket;
    int n_generate; /* generate entries not answered */
    /* set once by br_gateway_set_ready, read after `ready` */
    atomic_int ready;
    const struct br_tok *tok;
    int32_t n_vocab, n_ctx;
    char chat_template[32];
    struct br_sched_stats stats;
    atomic_long n_requests, n_rejected;
    _Atomic double step_since;
    double stop_seen;
};

/* ---- events and outboxes ---- */

void br_event_free_list(struct br_event *e)
{
    while (e) {
        struct br_event *n = e->next;
        free(e->id);
        free(e->text);
        free(e->message);
        free(e->tokens);
        free(e);
        e = n;
    }
}

int br_outbox_create(struct br_gateway *gw, struct br_outbox **out, struct br_err *err)
{
    *out = NULL;
    struct br_outbox *b = calloc(1, sizeof *b);
    if (!b) return br_err_set(err, BR_E_NOMEM, "out of memory");
    b->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->fd < 0) {
        free(b);
        return br_err_set(err, BR_E_IO, "eventfd: %s", strerror(errno));
    }
    pthread_mutex_init(&b->mu, NULL);
    b->gw = gw;
    pthread_mutex_lock(&gw->mu);
    b->next = gw->boxes;
    gw->boxes = b;
    pthread_mutex_unlock(&gw->mu);
    *out = b;
    return BR_OK;
}

int br_outbox_fd(const struct br_outbox *box)
{
    return box->fd;
}

static void fd_signal(int fd)
{
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r; /* EAGAIN: the counter is already non-zero, which is all that matters */
}

static void fd_drain(int fd)
{
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
}

static void box_push(struct br_outbox *b, struct br_event *e)
{
    e->next = NULL;
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = e;
    else
        b->head = e;
    b->tail = e;
    pthread_mutex_unlock(&b->mu);
    fd_signal(b->fd);
}

struct br_event *br_outbox_take(struct br_outbox *b)
{
    pthread_mutex_lock(&b->mu);
    struct br_event *e = b->head;
    b->head = b->tail = NULL;
    fd_drain(b->fd);
    pthread_mutex_unlock(&b->mu);
    return e;
}

void br_outbox_destroy(struct br_outbox **bp)
{
    if (!bp || !*bp) return;
    struct br_outbox *b = *bp;
    struct br_gateway *gw = b->gw;
    pthread_mutex_lock(&gw->mu);
    for (struct br_outbox **p = &gw->boxes; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    /* entries of this box can no longer be delivered: mark them answered */
    for (struct entry *e = gw->table; e; e = e->next)
        if (e->box == b) {
            if (!e->answered && e->type == BR_REQ_GENERATE) gw->n_generate--;
            e->answered = true;
            e->box = NULL;
        }
    pthread_mutex_unlock(&gw->mu);
    br_event_free_list(b->head);
    close(b->fd);
    pthread_mutex_destroy(&b->mu);
    free(b);
    *bp = NULL;
}

/* ---- the table (under gw->mu) ---- */

static bool same_client(const struct entry *e, const struct br_outbox *box,
                        const struct br_client_key *c)
{
    return e->box == box && e->client.len == c->len && !memcmp(e->client.bytes, c->bytes, c->len);
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* An event addressed to (box, client, id), unless the box is gone. */
static void post(struct br_outbox *box, const struct br_client_key *client, const char *id,
                 struct br_event *ev)
{
    if (!ev) return;
    if (!box) {
        br_event_free_list(ev);
        return;
    }
    ev->client = *client;
    if (!ev->id && id) ev->id = xstrdup(id);
    box_push(box, ev);
}

static void post_error(struct br_outbox *box, const struct br_client_key *client, const char *id,
                       enum br_proto_code code, const char *msg)
{
    struct br_event *ev = calloc(1, sizeof *ev);
    if (!ev) return;
    ev->kind = BR_EVENT_ERROR;
    ev->code = code;
    ev->message = xstrdup(msg);
    post(box, client, id, ev);
}

static void post_cancelled(struct entry *e)
{
    struct br_event *ev = calloc(1, sizeof *ev);
    if (!ev) return;
    ev->kind = BR_EVENT_DONE;
    ev->finish = BR_FINISH_CANCELLED;
    ev->stream = e->stream;
    ev->timings.total_ms = (br_now() - e->t_arrival) * 1e3;
    if (!e->stream) ev->text = xstrdup("");
    post(e->box, &e->client, e->id, ev);
}

static void entry_free(struct entry *e)
{
    br_req_free(&e->req);
    br_req_free(&e->job.req);
    free(e->job.prompt);
    free(e->id);
    free(e);
}

static void table_remove(struct br_gateway *gw, struct entry *e)
{
    for (struct entry **p = &gw->table; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            break;
        }
    if (!e->answered && e->type == BR_REQ_GENERATE) gw->n_generate--;
    entry_free(e);
}

static struct entry *find_generate(struct br_gateway *gw, struct br_outbox *box,
                                   const struct br_client_key *c, const char *id)
{
    for (struct entry *e = gw->table; e; e = e->next)
        if (e->type == BR_REQ_GENERATE && !e->answered && same_client(e, box, c) &&
            !strcmp(e->id, id))
            return e;
    return NULL;
}

static struct clientq *queue_of(struct br_gateway *gw, struct br_outbox *box,
                                const struct br_client_key *c, bool create)
{
    struct clientq *q = gw->queues;
    if (q) do {
            if (q->box == box && q->client.len == c->len &&
                !memcmp(q->client.bytes, c->bytes, c->len))
                return q;
            q = q->next;
        } while (q != gw->queues);
    if (!create || !(q = calloc(1, sizeof *q))) return NULL;
    q->box = box;
    q->client = *c;
    if (gw->queues) {
        /* insert just before the ring position: served after everyone waiting now */
        struct clientq *last = gw->queues;
        while (last->next != gw->queues) last = last->next;
        last->next = q;
        q->next = gw->queues;
    } else {
        q->next = q;
        gw->queues = q;
    }
    return q;
}

/* Takes e off the list head..tail (linked by qnext) where it is on it. */
static void list_unlink(struct entry **head, struct entry **tail, struct entry *e)
{
    struct entry *prev = NULL;
    for (struct entry *x = *head; x; prev = x, x = x->qnext)
        if (x == e) {
            *(prev ? &prev->qnext : head) = x->qnext;
            if (*tail == x) *tail = prev;
            return;
        }
}

static void queue_unlink(struct br_gateway *gw, struct entry *e)
{
    struct clientq *q = queue_of(gw, e->box, &e->client, false);
    if (!q) return;
    list_unlink(&q->head, &q->tail, e);
    gw->prep_bytes -= (int64_t)e->in_bytes;
}

static void ready_unlink(struct br_gateway *gw, struct entry *e)
{
    list_unlink(&gw->ready_head, &gw->ready_tail, e);
}

/* Drops empty queues from the ring (not the one at the ring position while it is served). */
static void queues_prune(struct br_gateway *gw)
{
    if (!gw->queues) return;
    struct clientq *prev = gw->queues;
    while (prev->next != gw->queues) prev = prev->next;
    struct clientq *q = gw->queues;
    size_t n = 0;
    for (struct clientq *x = gw->queues->next; x != gw->queues; x = x->next) n++;
    for (size_t i = 0; i <= n; i++) {
        struct clientq *next = q->next;
        if (!q->head) {
            if (next == q) {
                free(q);
                gw->queues = NULL;
                return;
            }
            prev->next = next;
            if (gw->queues == q) gw->queues = next;
            free(q);
        } else {
            prev = q;
        }
        q = next;
    }
}

static void answer_all_locked(struct br_gateway *gw, const char *why)
{
    int n = 0;
    gw->answered = 1;
    for (struct entry *e = gw->table; e; e = e->next)
        if (!e->answered) {
            post_error(e->box, &e->client, e->id, BR_PROTO_UNAVAILABLE, why);
            if (e->type == BR_REQ_GENERATE) gw->n_generate--;
            e->answered = true;
            n++;
        }
    for (struct entry **p = &gw->table; *p;) {
        struct entry *e = *p;
        if (e->stage == ST_QUEUED || e->stage == ST_READY) {
            if (e->stage == ST_QUEUED)
                queue_unlink(gw, e);
            else
                ready_unlink(gw, e);
            *p = e->next;
            entry_free(e);
        } else {
            p = &e->next;
        }
    }
    queues_prune(gw);
    if (n)
        fprintf(stderr, "bitrack serve: answered %d open request%s `unavailable`: %s\n", n,
                n == 1 ? "" : "s", why);
}

void br_gateway_answer_all(struct br_gateway *gw, const char *why)
{
    pthread_mutex_lock(&gw->mu);
    answer_all_locked(gw, why);
    pthread_mutex_unlock(&gw->mu);
}

/* ---- transport side ---- */

void br_gateway_limits(struct br_gateway *gw, struct br_proto_limits *lim)
{
    br_proto_limits_default(lim);
    lim->max_msg_bytes = (size_t)gw->o.max_request_bytes;
    lim->vocab_size = atomic_load(&gw->ready) ? gw->n_vocab : 0;
}

static size_t input_bytes(const struct br_req *r)
{
    size_t n = r->prompt_len + (size_t)r->n_tokens * sizeof(int32_t) + r->chat_template_len;
    for (uint32_t i = 0; i < r->n_messages; i++) n += r->messages[i].content_len;
    return n;
}

void br_gateway_submit(struct br_gateway *gw, struct br_outbox *box,
                       const struct br_client_key *client, struct br_req *req)
{
    char msg[256];
    const char *refuse = NULL;
    enum br_proto_code code = BR_PROTO_UNAVAILABLE;
    size_t in_bytes = input_bytes(req);
    pthread_mutex_lock(&gw->mu);
    int n_client = 0;
    for (struct entry *e = gw->table; e; e = e->next)
        n_client += !e->answered && same_client(e, box, client);
    if (req->type != BR_REQ_GENERATE && req->type != BR_REQ_TOKENIZE &&
        req->type != BR_REQ_DETOKENIZE) {
        code = BR_PROTO_BAD_REQUEST, refuse = "type: not handled";
    } else if (!atomic_load(&gw->ready)) {
        refuse = "the model is still loading";
    } else if (gw->answered || (gw->o.stop && atomic_load(gw->o.stop) != BR_STOP_NONE)) {
        refuse = "the server is shutting down; retry later";
    } else if (req->type == BR_REQ_GENERATE && find_generate(gw, box, client, req->id)) {
        code = BR_PROTO_DUPLICATE_ID;
        refuse = "id: a request with this id is still in flight on this connection; the new "
                 "one is refused and the one in flight goes on";
    } else if (req->type == BR_REQ_GENERATE && gw->n_generate >= gw->o.max_queue) {
        code = BR_PROTO_BUSY, refuse = "the server queue is full; retry later";
    } else if (n_client >= gw->o.max_per_client) {
        code = BR_PROTO_BUSY;
        snprintf(msg, sizeof msg,
                 "this connection already has %d requests in progress, the most the server "
                 "allows one client; retry when one ends",
                 gw->o.max_per_client);
        refuse = msg;
    } else if (gw->prep_bytes > 0 && gw->prep_bytes + (int64_t)in_bytes > gw->o.max_prep_bytes) {
        code = BR_PROTO_BUSY;
        snprintf(msg, sizeof msg,
                 "the server is preparing %lld bytes of input, the most it takes at once; "
                 "retry later",
                 (long long)gw->prep_bytes);
        refuse = msg;
    }
    struct entry *e = refuse ? NULL : calloc(1, sizeof *e);
    struct clientq *q = e ? queue_of(gw, box, client, true) : NULL;
    if (!refuse && (!e || !q || !(e->id = xstrdup(req->id)))) {
        free(e);
        e = NULL;
        code = BR_PROTO_INTERNAL, refuse = "out of memory";
    }
    if (refuse) {
        if (code == BR_PROTO_BUSY) atomic_fetch_add(&gw->n_rejected, 1);
        post_error(box, client, req->id, code, refuse);
        pthread_mutex_unlock(&gw->mu);
        br_req_free(req);
        return;
    }
    e->box = box;
    e->client = *client;
    e->type = req->type;
    e->ticket = ++gw->next_ticket;
    e->stage = ST_QUEUED;
    e->stream = req->stream;
    e->t_arrival = e->last_seen = br_now();
    e->in_bytes = in_bytes;
    e->req = *req;
    br_req_init(req);
    e->next = gw->table;
    gw->table = e;
    if (e->type == BR_REQ_GENERATE) gw->n_generate++;
    if (q->tail)
        q->tail->qnext = e;
    else
        q->head = e;
    q->tail = e;
    gw->prep_bytes += (int64_t)in_bytes;
    pthread_cond_signal(&gw->cv);
    pthread_mutex_unlock(&gw->mu);
}

static void cancel_locked(struct br_gateway *gw, struct entry *e)
{
    if (e->cancelled || e->answered) return;
    e->cancelled = true;
    if (e->stage == ST_QUEUED) {
        queue_unlink(gw, e);
        queues_prune(gw);
        post_cancelled(e);
        table_remove(gw, e);
    } else if (e->stage == ST_READY) {
        ready_unlink(gw, e);
        post_cancelled(e);
        table_remove(gw, e);
    } else if (e->stage == ST_SCHED) {
        struct cancel *c = malloc(sizeof *c);
        if (!c) return;
        c->ticket = e->ticket;
        c->next = gw->cancels;
        gw->cancels = c;
        fd_signal(gw->wake_fd);
    } /* RUNNING: the preparing thread sees `cancelled` when it is done */
}

void br_gateway_cancel(struct br_gateway *gw, struct br_outbox *box,
                       const struct br_client_key *client, const char *id)
{
    pthread_mutex_lock(&gw->mu);
    struct entry *e = find_generate(gw, box, client, id);
    if (e) cancel_locked(gw, e);
    pthread_mutex_unlock(&gw->mu);
}

int br_gateway_client_gone(struct br_gateway *gw, struct br_outbox *box,
                           const struct br_client_key *client)
{
    int n = 0;
    pthread_mutex_lock(&gw->mu);
    for (struct entry *e = gw->table, *next; e; e = next) {
        next = e->next; /* cancel_locked may free e */
        if (same_client(e, box, client) && !e->cancelled && !e->answered &&
            e->type == BR_REQ_GENERATE) {
            cancel_locked(gw, e);
            n++;
        }
    }
    pthread_mutex_unlock(&gw->mu);
    return n;
}

bool br_gateway_client_live(struct br_gateway *gw, struct br_outbox *box,
                            const struct br_client_key *client)
{
    bool live = false;
    pthread_mutex_lock(&gw->mu);
    for (struct entry *e = gw->table; e && !live; e = e->next)
        live = !e->answered && same_client(e, box, client);
    pthread_mutex_unlock(&gw->mu);
    return live;
}

void br_gateway_touch(struct br_gateway *gw, struct br_outbox *box,
                      const struct br_client_key *client, const char *id)
{
    pthread_mutex_lock(&gw->mu);
    struct entry *e = id ? find_generate(gw, box, client, id) : NULL;
    if (e) e->last_seen = br_now();
    pthread_mutex_unlock(&gw->mu);
}

int br_gateway_expire(struct br_gateway *gw, struct br_outbox *box, double timeout_s)
{
    int n = 0;
    double now = br_now();
    pthread_mutex_lock(&gw->mu);
    for (struct entry *e = gw->table, *next; e; e = next) {
        next = e->next;
        if (e->box == box && e->type == BR_REQ_GENERATE && e->stream && !e->cancelled &&
            !e->answered && now - e->last_seen > timeout_s) {
            cancel_locked(gw, e);
            n++;
        }
    }
    pthread_mutex_unlock(&gw->mu);
    return n;
}

enum br_health_state br_gateway_health(struct br_gateway *gw)
{
    if (gw->o.stop && atomic_load(gw->o.stop) != BR_STOP_NONE) return BR_HEALTH_DRAINING;
    return atomic_load(&gw->ready) ? BR_HEALTH_READY : BR_HEALTH_LOADING;
}

size_t br_gateway_info(struct br_gateway *gw, struct br_kv *kv, size_t cap)
{
    size_t n = 0;
    int ready = atomic_load(&gw->ready);
    for (size_t i = 0; gw->info && gw->info[i] && gw->info[i + 1] && n + 3 < cap; i += 2)
        kv[n++] = (struct br_kv){gw->info[i], BR_KV_STR, 0, 0, gw->info[i + 1]};
    if (n + 3 > cap) return n;
    kv[n++] = (struct br_kv){"protocol_version", BR_KV_INT, BR_PROTO_VERSION, 0, NULL};
    kv[n++] = (struct br_kv){"context_length", BR_KV_INT, ready ? gw->n_ctx : 0, 0, NULL};
    kv[n++] = (struct br_kv){"state", BR_KV_STR, 0, 0, ready ? "ready" : "loading"};
    return n;
}

size_t br_gateway_metrics(struct br_gateway *gw, struct br_kv *kv, size_t cap)
{
    pthread_mutex_lock(&gw->mu);
    long live = gw->n_generate;
    pthread_mutex_unlock(&gw->mu);
    const struct br_kv all[] = {
        {"requests", BR_KV_INT, atomic_load(&gw->n_requests), 0, NULL},
        {"completed", BR_KV_INT, atomic_load(&gw->stats.completed), 0, NULL},
        {"rejected_busy", BR_KV_INT, atomic_load(&gw->n_rejected), 0, NULL},
        {"live", BR_KV_INT, live, 0, NULL},
        {"running", BR_KV_INT, atomic_load(&gw->stats.running), 0, NULL},
        {"prompt_tokens", BR_KV_INT, atomic_load(&gw->stats.tokens_in), 0, NULL},
        {"generated_tokens", BR_KV_INT, atomic_load(&gw->stats.tokens_out), 0, NULL},
        {"steps", BR_KV_INT, atomic_load(&gw->stats.steps), 0, NULL},
        {"kv_blocks_used", BR_KV_INT, atomic_load(&gw->stats.kv_blocks_used), 0, NULL},
        {"kv_blocks_total", BR_KV_INT, atomic_load(&gw->stats.kv_blocks_total), 0, NULL},
    };
    size_t n = sizeof all / sizeof *all < cap ? sizeof all / sizeof *all : cap;
    memcpy(kv, all, n * sizeof *kv);
    return n;
}

/* ---- preparation (the gateway's thread, without the lock) ---- */

/* Renders and tokenizes a generate request's input into e->job, or answers it. Returns the
 * event to post (an error), or NULL when the job is ready. */
static struct br_event *prepare_generate(struct br_gateway *gw, struct entry *e)
{
    struct br_req *req = &e->req;
    struct br_err err = {{0}};
    int rc = BR_OK;
    int32_t *prompt = NULL;
    size_t n = 0;
    char msg[256];
    if (req->input == BR_INPUT_TOKENS) {
        n = req->n_tokens;
        prompt = malloc(((size_t)req->n_tokens + 1) * sizeof *prompt);
        if (!prompt)
            rc = br_err_set(&err, BR_E_NOMEM, "out of memory");
        else
            memcpy(prompt, req->tokens, (size_t)req->n_tokens * sizeof *prompt);
        for (uint32_t i = 0; !rc && i < req->n_tokens; i++)
            if (req->tokens[i] < 0 || req->tokens[i] >= gw->n_vocab)
                rc = br_err_set(&err, BR_E_PROTOCOL, "tokens[%u]: id %d is outside the vocabulary",
                                i, req->tokens[i]);
    } else {
        char *text = NULL;
        size_t len = 0;
        unsigned flags = req->add_bos ? BR_TOK_ADD_BOS : 0;
        if (req->input == BR_INPUT_MESSAGES) {
            const char *tmpl = req->chat_template ? req->chat_template : gw->chat_template;
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
        if (!rc) rc = br_tok_encode(gw->tok, text, len, flags, &prompt, &n, &err);
        if (req->input == BR_INPUT_MESSAGES) free(text);
    }
    const char *fail = rc ? err.msg : NULL;
    enum br_proto_code code = rc == BR_E_NOMEM ? BR_PROTO_INTERNAL : BR_PROTO_BAD_REQUEST;
    if (!fail && n == 0) fail = "prompt: no tokens";
    if (!fail && gw->o.max_prompt_tokens > 0 && n > (size_t)gw->o.max_prompt_tokens) {
        snprintf(msg, sizeof msg, "the prompt has %zu tokens; this server accepts at most %d", n,
                 gw->o.max_prompt_tokens);
        fail = msg, code = BR_PROTO_TOO_LONG;
    }
    if (!fail && n >= (size_t)gw->n_ctx) {
        snprintf(msg, sizeof msg,
                 "the prompt has %zu tokens; the context holds %d (prompt and at least one "
                 "generated token)",
                 n, gw->n_ctx);
        fail = msg, code = BR_PROTO_TOO_LONG;
    }
    if (fail) {
        free(prompt);
        struct br_event *ev = calloc(1, sizeof *ev);
        if (ev) ev->kind = BR_EVENT_ERROR, ev->code = code, ev->message = xstrdup(fail);
        return ev;
    }
    e->job.ticket = e->ticket;
    e->job.req = *req;
    br_req_init(req);
    e->job.prompt = prompt;
    e->job.n_prompt = (int32_t)n;
    e->job.t_arrival = e->t_arrival;
    return NULL;
}

static struct br_event *prepare_other(struct br_gateway *gw, struct entry *e)
{
    struct br_req *req = &e->req;
    struct br_err err = {{0}};
    struct br_event *ev = calloc(1, sizeof *ev);
    if (!ev) return NULL;
    int rc;
    if (req->type == BR_REQ_TOKENIZE) {
        size_t n = 0;
        rc = br_tok_encode(gw->tok, req->prompt, req->prompt_len, req->add_bos ? BR_TOK_ADD_BOS : 0,
                           &ev->tokens, &n, &err);
        ev->kind = BR_EVENT_TOKENIZE;
        ev->n_tokens = (uint32_t)n;
    } else {
        rc = br_tok_decode(gw->tok, req->tokens, req->n_tokens, 0, &ev->text, &ev->text_len, &err);
        ev->kind = BR_EVENT_DETOKENIZE;
    }
    if (rc) {
        free(ev->tokens), free(ev->text);
        ev->tokens = NULL, ev->text = NULL, ev->n_tokens = 0, ev->text_len = 0;
        ev->kind = BR_EVENT_ERROR;
        ev->code = rc == BR_E_NOMEM ? BR_PROTO_INTERNAL : BR_PROTO_BAD_REQUEST;
        ev->message = xstrdup(err.msg);
    }
    return ev;
}

/* The next request to prepare: the head of the next client's queue in turn. */
static struct entry *take_next(struct br_gateway *gw)
{
    queues_prune(gw);
    struct clientq *q = gw->queues;
    if (!q || !q->head) return NULL;
    struct entry *e = q->head;
    q->head = e->qnext;
    if (!q->head) q->tail = NULL;
    e->qnext = NULL;
    gw->queues = q->next; /* the next client goes next */
    return e;
}

/* Periodic checks (under the lock): a step that never ends, a stop past its grace. */
static void tick(struct br_gateway *gw)
{
    if (gw->answered || !gw->o.stop) return;
    double now = br_now();
    int stop = atomic_load(gw->o.stop);
    char lost[256] = "", why[512];
    if (stop == BR_STOP_ASKED && gw->stop_seen == 0) gw->stop_seen = now;
    double since = atomic_load(&gw->step_since);
    bool stuck = gw->o.stuck_s > 0 && since > 0 && now - since > gw->o.stuck_s;
    bool grace = gw->stop_seen > 0 && now - gw->stop_seen > gw->o.stop_grace_s;
    if (!stuck && !grace) return;
    if (gw->o.loss && !gw->o.loss(gw->o.loss_ctx, stuck, lost, sizeof lost)) lost[0] = '\0';
    if (stuck) {
        fprintf(stderr,
                "bitrack serve: rank 0: a step has not finished for %.1f s; a rank is lost%s%s\n",
                now - since, lost[0] ? ": " : "", lost);
        if (atomic_load(gw->o.stop) == BR_STOP_NONE) atomic_store(gw->o.stop, BR_STOP_ASKED);
        snprintf(why, sizeof why, "a rank was lost (%s); the server is shutting down",
                 lost[0] ? lost : "rank 0's step is stuck");
    } else if (lost[0]) {
        snprintf(why, sizeof why, "a rank was lost (%s); the server is shutting down", lost);
    } else {
        snprintf(why, sizeof why, "the server is shutting down (stopped by a signal); retry later");
    }
    answer_all_locked(gw, why);
}

static void *gateway_main(void *arg)
{
    struct br_gateway *gw = arg;
    pthread_mutex_lock(&gw->mu);
    while (!gw->quit) {
        tick(gw);
        struct entry *e = atomic_load(&gw->ready) ? take_next(gw) : NULL;
        if (!e) {
            /* a timed wait on the condition: work arrives by signal; the timeout only
             * paces the checks in tick() */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&gw->cv, &gw->mu, &ts);
            continue;
        }
        e->stage = ST_RUNNING;
        pthread_mutex_unlock(&gw->mu);
        struct br_event *ev =
            e->type == BR_REQ_GENERATE ? prepare_generate(gw, e) : prepare_other(gw, e);
        pthread_mutex_lock(&gw->mu);
        gw->prep_bytes -= (int64_t)e->in_bytes;
        if (e->answered) {
            br_event_free_list(ev);
            table_remove(gw, e);
        } else if (e->cancelled) {
            br_event_free_list(ev);
            post_cancelled(e);
            table_remove(gw, e);
        } else if (ev) {
            ev->stream = e->stream;
            post(e->box, &e->client, e->id, ev);
            table_remove(gw, e);
        } else {
            /* counted as a request once it passed preparation, as the scheduler sees it */
            atomic_fetch_add(&gw->n_requests, 1);
            e->stage = ST_READY;
            if (gw->ready_tail)
                gw->ready_tail->qnext = e;
            else
                gw->ready_head = e;
            gw->ready_tail = e;
            fd_signal(gw->wake_fd);
        }
    }
    pthread_mutex_unlock(&gw->mu);
    return NULL;
}

/* ---- scheduler side ---- */

void br_gateway_set_ready(struct br_gateway *gw, const struct br_tok *tok, int32_t n_vocab,
                          int32_t n_ctx, const char *chat_template)
{
    pthread_mutex_lock(&gw->mu);
    gw->tok = tok;
    gw->n_vocab = n_vocab;
    gw->n_ctx = n_ctx;
    snprintf(gw->chat_template, sizeof gw->chat_template, "%s",
             chat_template ? chat_template : "chatml");
    atomic_store(&gw->ready, 1);
    pthread_cond_signal(&gw->cv);
    pthread_mutex_unlock(&gw->mu);
}

int br_gateway_fd(const struct br_gateway *gw)
{
    return gw->wake_fd;
}

void br_gateway_wake(struct br_gateway *gw)
{
    fd_signal(gw->wake_fd);
}

void br_gateway_feed(struct br_gateway *gw, struct br_sched *s)
{
    pthread_mutex_lock(&gw->mu);
    fd_drain(gw->wake_fd);
    struct entry *ready = gw->ready_head;
    gw->ready_head = gw->ready_tail = NULL;
    struct cancel *cancels = gw->cancels;
    gw->cancels = NULL;
    for (struct entry *e = ready; e; e = e->qnext) e->stage = ST_SCHED;
    /* the jobs' memory moves to the scheduler; the entries stay for the events */
    struct br_sched_job_in *jobs = NULL;
    size_t n = 0;
    for (struct entry *e = ready; e; e = e->qnext) n++;
    jobs = n ? malloc(n * sizeof *jobs) : NULL;
    size_t k = 0;
    for (struct entry *e = ready, *next; e; e = next) {
        next = e->qnext;
        e->qnext = NULL;
        if (jobs) {
            jobs[k++] = e->job;
            memset(&e->job, 0, sizeof e->job);
        } else {
            post_error(e->box, &e->client, e->id, BR_PROTO_INTERNAL, "out of memory");
            table_remove(gw, e);
        }
    }
    pthread_mutex_unlock(&gw->mu);
    /* outside the lock: the scheduler emits through the sink, which takes it */
    for (size_t i = 0; i < k; i++) br_sched_submit(s, &jobs[i]);
    free(jobs);
    while (cancels) {
        struct cancel *c = cancels;
        cancels = c->next;
        br_sched_cancel(s, c->ticket);
        free(c);
    }
}

static void sink_emit(void *ctx, uint64_t ticket, struct br_event *ev)
{
    struct br_gateway *gw = ctx;
    bool final = ev->kind != BR_EVENT_TOKEN;
    pthread_mutex_lock(&gw->mu);
    struct entry *e = gw->table;
    while (e && !(e->ticket == ticket && e->stage == ST_SCHED)) e = e->next;
    if (!e || e->answered) {
        br_event_free_list(ev);
    } else {
        ev->stream = e->stream;
        post(e->box, &e->client, e->id, ev);
    }
    if (e && final) table_remove(gw, e);
    pthread_mutex_unlock(&gw->mu);
}

struct br_sched_sink br_gateway_sink(struct br_gateway *gw)
{
    return (struct br_sched_sink){gw, sink_emit};
}

struct br_sched_stats *br_gateway_stats(struct br_gateway *gw)
{
    return &gw->stats;
}

void br_gateway_step_begins(struct br_gateway *gw, int begins)
{
    atomic_store(&gw->step_since, begins ? br_now() : 0.0);
}

/* ---- lifecycle ---- */

int br_gateway_create(const struct br_gateway_opts *o, struct br_gateway **out, struct br_err *err)
{
    *out = NULL;
    struct br_gateway *gw = calloc(1, sizeof *gw);
    if (!gw) return br_err_set(err, BR_E_NOMEM, "out of memory");
    gw->o = *o;
    gw->wake_fd = -1;
    if (gw->o.max_queue <= 0) gw->o.max_queue = 256;
    if (gw->o.max_per_client <= 0) gw->o.max_per_client = 64;
    if (gw->o.max_request_bytes <= 0) gw->o.max_request_bytes = (int64_t)4 << 20;
    if (gw->o.max_prep_bytes <= 0) gw->o.max_prep_bytes = (int64_t)64 << 20;
    if (gw->o.stop_grace_s <= 0) gw->o.stop_grace_s = 0.25;
    snprintf(gw->chat_template, sizeof gw->chat_template, "chatml");
    size_t n = 0;
    while (o->info && o->info[n]) n++;
    gw->info = calloc(n + 2, sizeof *gw->info);
    for (size_t i = 0; gw->info && i < n; i++) gw->info[i] = xstrdup(o->info[i]);
    gw->o.info = NULL;
    pthread_mutex_init(&gw->mu, NULL);
    pthread_cond_init(&gw->cv, NULL);
    gw->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!gw->info || gw->wake_fd < 0) {
        br_gateway_destroy(&gw);
        return br_err_set(err, BR_E_NOMEM, "cannot set up the gateway");
    }
    if (pthread_create(&gw->thread, NULL, gateway_main, gw)) {
        br_gateway_destroy(&gw);
        return br_err_set(err, BR_E_INTERNAL, "cannot start the gateway thread");
    }
    gw->thread_started = 1;
    *out = gw;
    return BR_OK;
}

void br_gateway_destroy(struct br_gateway **gp)
{
    if (!gp || !*gp) return;
    struct br_gateway *gw = *gp;
    if (gw->thread_started) {
        pthread_mutex_lock(&gw->mu);
        gw->quit = 1;
        pthread_cond_signal(&gw->cv);
        pthread_mutex_unlock(&gw->mu);
        pthread_join(gw->thread, NULL);
    }
    while (gw->table) {
        struct entry *e = gw->table;
        gw->table = e->next;
        entry_free(e);
    }
    while (gw->queues) {
        struct clientq *q = gw->queues;
        if (q->next == q) {
            gw->queues = NULL;
        } else {
            struct clientq *last = q;
            while (last->next != q) last = last->next;
            last->next = q->next;
            gw->queues = q->next;
        }
        free(q);
    }
    while (gw->cancels) {
        struct cancel *c = gw->cancels;
        gw->cancels = c->next;
        free(c);
    }
    for (size_t i = 0; gw->info && gw->info[i]; i++) free(gw->info[i]);
    free(gw->info);
    if (gw->wake_fd >= 0) close(gw->wake_fd);
    pthread_cond_destroy(&gw->cv);
    pthread_mutex_destroy(&gw->mu);
    free(gw);
    *gp = NULL;
}
