/*
 * struct br_comm over threads of one process (see comm_local.h).
 *
 * Collectives: each stage has a slot per TP rank where a rank posts its buffers, then
 * the stage's ranks meet at a barrier, each reads what it needs from the others' posted
 * buffers, and they meet again before anyone returns (so no buffer is reused while a peer
 * still reads it). Reductions are computed by every rank for itself into a private
 * scratch, in rank order, then copied into place after the second barrier.
 *
 * Point to point: one FIFO per (sender, receiver, kind); a send copies the message in and
 * returns, a receive waits for the oldest and checks its size. A received message's
 * memory goes back to its queue and carries the next message of at most its size, so a
 * run of like steps allocates nothing, as an MPI send into the receiver's buffer does not.
 */
#include "worker/comm_local.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_PIPE = 0, KIND_ROOT = 1, N_KINDS = 2 };

struct msg {
    struct msg *next;
    size_t bytes, cap; /* cap: the room of data */
    unsigned char data[];
};

struct queue {
    struct msg *head, *tail;
    struct msg *spare; /* received messages, kept for the next ones */
};

struct post {
    const void *send; /* posted input */
    void *recv;       /* posted output (bcast: every rank's buffer) */
    const int *counts, *displs;
    int n;
};

struct stage {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    unsigned long generation;
    struct post *posts; /* (tp,) */
};

struct rank {
    struct br_comm comm;
    struct br_comm_local *w;
    void *scratch; /* reduction results */
    size_t scratch_size;
};

struct br_comm_local {
    int tp, pp, n;
    struct rank *ranks;   /* (n,) */
    struct stage *stages; /* (pp,) */
    pthread_mutex_t qmu;  /* the queues */
    pthread_cond_t qcv;
    struct queue *queues; /* (n * n * N_KINDS,) sender-major */
    atomic_int aborted;
    char why[200];
};

static struct rank *rk(struct br_comm *c)
{
    return c->impl;
}

static int failed(struct br_comm *c)
{
    snprintf(c->why, sizeof c->why, "%.200s", rk(c)->w->why);
    return BR_E_UNAVAILABLE;
}

/* Waits until every rank of the stage has arrived; BR_E_UNAVAILABLE once aborted. */
static int barrier(struct br_comm *c)
{
    struct br_comm_local *w = rk(c)->w;
    struct stage *s = &w->stages[c->pp_rank];
    pthread_mutex_lock(&s->mu);
    unsigned long gen = s->generation;
    if (++s->arrived == c->tp) {
        s->arrived = 0;
        s->generation++;
        pthread_cond_broadcast(&s->cv);
    } else {
        while (gen == s->generation && !w->aborted) pthread_cond_wait(&s->cv, &s->mu);
    }
    int bad = gen == s->generation && w->aborted;
    pthread_mutex_unlock(&s->mu);
    return bad ? failed(c) : BR_OK;
}

static struct post *posts(struct br_comm *c)
{
    return rk(c)->w->stages[c->pp_rank].posts;
}

static void *scratch(struct br_comm *c, size_t bytes)
{
    struct rank *r = rk(c);
    if (bytes > r->scratch_size) {
        void *p = realloc(r->scratch, bytes);
        if (!p) return NULL;
        r->scratch = p;
        r->scratch_size = bytes;
    }
    return r->scratch;
}

/* Posts, meets the stage, runs fn to read the others' posts, meets again. */
static int collective(struct br_comm *c, struct post p, void (*fn)(struct br_comm *, void *),
                      void *arg)
{
    posts(c)[c->tp_rank] = p;
    int rc = barrier(c);
    if (rc) return rc;
    fn(c, arg);
    return barrier(c);
}

static void read_allgather(struct br_comm *c, void *arg)
{
    (void)arg;
    const struct post *me = &posts(c)[c->tp_rank];
    for (int r = 0; r < c->tp; r++)
        memcpy((unsigned char *)me->recv + me->displs[r], posts(c)[r].send, (size_t)me->counts[r]);
}

static int op_allgather(struct br_comm *c, const void *send, void *recv, const int *counts,
                        const int *displs)
{
    br_comm_count_allgather(c, counts);
    return collective(c, (struct post){send, recv, counts, displs, 0}, read_allgather, NULL);
}

static void read_reduce_scatter(struct br_comm *c, void *arg)
{
    (void)arg;
    const struct post *me = &posts(c)[c->tp_rank];
    size_t off = 0;
    for (int r = 0; r < c->tp_rank; r++) off += (size_t)me->counts[r];
    int32_t *out = me->recv;
    for (int i = 0; i < me->counts[c->tp_rank]; i++) {
        uint32_t s = 0; /* wrapping sum, as MPI's int32 sum does in practice */
        for (int r = 0; r < c->tp; r++) s += (uint32_t)((const int32_t *)posts(c)[r].send)[off + i];
        out[i] = (int32_t)s;
    }
}

static int op_reduce_scatter_i32(struct br_comm *c, const int32_t *send, int32_t *recv,
                                 const int *counts)
{
    br_comm_count_reduce_scatter(c, counts);
    /* recv may alias nothing the others read: the sums go straight there */
    return collective(c, (struct post){send, recv, counts, NULL, 0}, read_reduce_scatter, NULL);
}

struct reduce_arg {
    void *out;
    int max; /* float max, else int32 sum */
};

static void read_allreduce(struct br_comm *c, void *arg)
{
    struct reduce_arg *a = arg;
    int n = posts(c)[c->tp_rank].n;
    if (a->max) {
        float *out = a->out;
        for (int i = 0; i < n; i++) {
            float m = ((const float *)posts(c)[0].send)[i];
            for (int r = 1; r < c->tp; r++) {
                float v = ((const float *)posts(c)[r].send)[i];
                if (v > m) m = v;
            }
            out[i] = m;
        }
    } else {
        int32_t *out = a->out;
        for (int i = 0; i < n; i++) {
            uint32_t s = 0;
            for (int r = 0; r < c->tp; r++) s += (uint32_t)((const int32_t *)posts(c)[r].send)[i];
            out[i] = (int32_t)s;
        }
    }
}

static int allreduce(struct br_comm *c, void *buf, int n, int max)
{
    br_comm_count_allreduce(c, n);
    if (n < 0) return BR_E_INVALID;
    struct reduce_arg a = {scratch(c, 4 * (size_t)n + 4), max};
    /* the others must still post and meet even when this rank has no scratch: fail after */
    int nomem = a.out == NULL;
    struct post p = {buf, buf, NULL, NULL, n};
    posts(c)[c->tp_rank] = p;
    int rc = barrier(c);
    if (rc) return rc;
    if (!nomem) read_allreduce(c, &a);
    if ((rc = barrier(c))) return rc;
    if (nomem) return BR_E_NOMEM;
    memcpy(buf, a.out, 4 * (size_t)n);
    return BR_OK;
}

static int op_allreduce_i32(struct br_comm *c, int32_t *buf, int n)
{
    return allreduce(c, buf, n, 0);
}

static int op_allreduce_max_f32(struct br_comm *c, float *buf, int n)
{
    return allreduce(c, buf, n, 1);
}

static void read_bcast(struct br_comm *c, void *arg)
{
    (void)arg;
    const struct post *me = &posts(c)[c->tp_rank];
    if (c->tp_rank != 0) memcpy(me->recv, posts(c)[0].recv, (size_t)me->n);
}

static int op_bcast(struct br_comm *c, void *buf, size_t bytes)
{
    br_comm_count_bcast(c, bytes);
    if (c->tp == 1) return BR_OK;
    return collective(c, (struct post){buf, buf, NULL, NULL, (int)bytes}, read_bcast, NULL);
}

/* ---- point to point ---- */

static struct queue *queue_of(struct br_comm_local *w, int from, int to, int kind)
{
    return &w->queues[((size_t)from * (size_t)w->n + (size_t)to) * N_KINDS + (size_t)kind];
}

static int put(struct br_comm *c, int to, int kind, const void *buf, size_t bytes)
{
    struct br_comm_local *w = rk(c)->w;
    if (to < 0 || to >= w->n) {
        snprintf(c->why, sizeof c->why, "no rank %d in a world of %d", to, w->n);
        return BR_E_INVALID;
    }
    br_comm_count(c, bytes);
    struct queue *q = queue_of(w, c->world_rank, to, kind);
    /* the smallest spare that holds it: a queue carrying messages of a few sizes in turn
     * (descriptor, residual) keeps one of each */
    pthread_mutex_lock(&w->qmu);
    struct msg **best = NULL;
    for (struct msg **pm = &q->spare; *pm; pm = &(*pm)->next)
        if ((*pm)->cap >= bytes && (!best || (*pm)->cap < (*best)->cap)) best = pm;
    struct msg *m = best ? *best : NULL;
    if (m) *best = m->next;
    pthread_mutex_unlock(&w->qmu);
    if (!m) {
        if (!(m = malloc(sizeof *m + (bytes ? bytes : 1)))) return BR_E_NOMEM;
        m->cap = bytes ? bytes : 1;
    }
    m->next = NULL;
    m->bytes = bytes;
    if (bytes) memcpy(m->data, buf, bytes);
    pthread_mutex_lock(&w->qmu);
    int bad = w->aborted;
    if (!bad) {
        if (q->tail)
            q->tail->next = m;
        else
            q->head = m;
        q->tail = m;
        pthread_cond_broadcast(&w->qcv);
    }
    pthread_mutex_unlock(&w->qmu);
    if (bad) {
        free(m);
        return failed(c);
    }
    return BR_OK;
}

static int take(struct br_comm *c, int from, int kind, void *buf, size_t bytes)
{
    struct br_comm_local *w = rk(c)->w;
    if (from < 0 || from >= w->n) {
        snprintf(c->why, sizeof c->why, "no rank %d in a world of %d", from, w->n);
        return BR_E_INVALID;
    }
    struct queue *q = queue_of(w, from, c->world_rank, kind);
    pthread_mutex_lock(&w->qmu);
    while (!q->head && !w->aborted) pthread_cond_wait(&w->qcv, &w->qmu);
    struct msg *m = q->head;
    if (m) {
        q->head = m->next;
        if (!q->head) q->tail = NULL;
    }
    pthread_mutex_unlock(&w->qmu);
    if (!m) return failed(c);
    int rc = BR_OK;
    if (m->bytes != bytes) {
        snprintf(c->why, sizeof c->why, "rank %d sent %zu bytes, %zu expected", from, m->bytes,
                 bytes);
        rc = BR_E_MISMATCH;
    } else if (bytes) {
        memcpy(buf, m->data, bytes);
    }
    pthread_mutex_lock(&w->qmu);
    m->next = q->spare;
    q->spare = m;
    pthread_mutex_unlock(&w->qmu);
    return rc;
}

static int op_send_next(struct br_comm *c, const void *buf, size_t bytes)
{
    return put(c, c->world_rank + c->tp, KIND_PIPE, buf, bytes);
}

static int op_recv_prev(struct br_comm *c, void *buf, size_t bytes)
{
    return take(c, c->world_rank - c->tp, KIND_PIPE, buf, bytes);
}

static int op_send_root(struct br_comm *c, const void *buf, size_t bytes, void **pending)
{
    *pending = NULL; /* copied: the buffer is free at once */
    return put(c, 0, KIND_ROOT, buf, bytes);
}

static int op_wait_root(struct br_comm *c, void **pending)
{
    (void)c;
    *pending = NULL;
    return BR_OK;
}

static int op_recv_from(struct br_comm *c, int world_rank, void *buf, size_t bytes)
{
    return take(c, world_rank, KIND_ROOT, buf, bytes);
}

static const struct br_comm_ops local_ops = BR_COMM_OPS_OF_OP_FUNCTIONS;

/* ---- the world ---- */

int br_comm_local_create(int tp, int pp, struct br_comm_local **out, struct br_err *err)
{
    *out = NULL;
    if (tp < 1 || pp < 1 || tp > 4096 || pp > 4096 || tp * pp > 4096)
        return br_err_set(err, BR_E_INVALID, "a %d x %d world (1..4096 ranks)", tp, pp);
    struct br_comm_local *w = calloc(1, sizeof *w);
    if (!w) return br_err_set(err, BR_E_NOMEM, "out of memory");
    w->tp = tp, w->pp = pp, w->n = tp * pp;
    w->ranks = calloc((size_t)w->n, sizeof *w->ranks);
    w->stages = calloc((size_t)pp, sizeof *w->stages);
    w->queues = calloc((size_t)w->n * (size_t)w->n * N_KINDS, sizeof *w->queues);
    int s_ok = 0;
    if (w->stages)
        for (; s_ok < pp; s_ok++) {
            struct stage *s = &w->stages[s_ok];
            if (!(s->posts = calloc((size_t)tp, sizeof *s->posts))) break;
            pthread_mutex_init(&s->mu, NULL);
            pthread_cond_init(&s->cv, NULL);
        }
    pthread_mutex_init(&w->qmu, NULL);
    pthread_cond_init(&w->qcv, NULL);
    if (!w->ranks || !w->queues || s_ok < pp) {
        br_comm_local_destroy(&w);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    for (int r = 0; r < w->n; r++) {
        struct rank *k = &w->ranks[r];
        k->w = w;
        k->comm = (struct br_comm){.ops = &local_ops,
                                   .impl = k,
                                   .tp = tp,
                                   .tp_rank = r % tp,
                                   .pp = pp,
                                   .pp_rank = r / tp,
                                   .world_rank = r,
                                   .world_size = w->n};
    }
    *out = w;
    return BR_OK;
}

struct br_comm *br_comm_local_rank(struct br_comm_local *w, int world_rank)
{
    if (!w || world_rank < 0 || world_rank >= w->n) return NULL;
    return &w->ranks[world_rank].comm;
}

void br_comm_local_abort(struct br_comm_local *w, const char *why)
{
    pthread_mutex_lock(&w->qmu);
    if (!w->aborted) snprintf(w->why, sizeof w->why, "%s", why ? why : "the job was ended");
    w->aborted = 1;
    pthread_cond_broadcast(&w->qcv);
    pthread_mutex_unlock(&w->qmu);
    for (int s = 0; s < w->pp; s++) {
        pthread_mutex_lock(&w->stages[s].mu);
        pthread_cond_broadcast(&w->stages[s].cv);
        pthread_mutex_unlock(&w->stages[s].mu);
    }
}

void br_comm_local_destroy(struct br_comm_local **wp)
{
    if (!wp || !*wp) return;
    struct br_comm_local *w = *wp;
    if (w->queues)
        for (size_t i = 0; i < (size_t)w->n * (size_t)w->n * N_KINDS; i++)
            for (int list = 0; list < 2; list++)
                for (struct msg *m = list ? w->queues[i].spare : w->queues[i].head, *next; m;
                     m = next) {
                    next = m->next;
                    free(m);
                }
    if (w->stages)
        for (int s = 0; s < w->pp; s++)
            if (w->stages[s].posts) {
                free(w->stages[s].posts);
                pthread_mutex_destroy(&w->stages[s].mu);
                pthread_cond_destroy(&w->stages[s].cv);
            }
    if (w->ranks)
        for (int r = 0; r < w->n; r++) free(w->ranks[r].scratch);
    pthread_mutex_destroy(&w->qmu);
    pthread_cond_destroy(&w->qcv);
    free(w->queues), free(w->stages), free(w->ranks);
    free(w);
    *wp = NULL;
}
