/*
 * Serving coordinator (see server.h): the server's lifecycle on world rank 0.
 *
 *   br_server_start   the gateway (coordinator/gateway.h) and each transport
 *                     (coordinator/transport.h; the ZeroMQ one in frontend_zmq.c); a
 *                     misconfiguration or an endpoint that cannot be bound fails here
 *   br_server_run     the scheduler (coordinator/sched.h) on this thread, driving the
 *                     ranks through the cluster executor (coordinator/cluster.h)
 *   stop              a signal or br_server_request_stop sets the stop state and wakes
 *                     this thread; the scheduler finishes its steps in flight, every
 *                     request gets its final event, the ranks are told to stop
 *   br_server_destroy the transports (each forwards what its outbox holds), then the
 *                     gateway
 *
 * Threads: this one (MPI, the scheduler), the gateway's (preparing requests, the stuck
 * and stop-grace checks), one per transport (the HTTP one, with --http, adds
 * libmicrohttpd's), and CurveZMQ's ZAP handler. This thread
 * waits only in poll() on the gateway's descriptor, woken by new work or a stop.
 */
#include "coordinator/server.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "coordinator/chat.h"
#include "coordinator/cluster.h"
#include "coordinator/curve.h"
#include "coordinator/frontend_http.h"
#include "coordinator/frontend_zmq.h"
#include "coordinator/gateway.h"
#include "coordinator/metrics.h"
#include "worker/sample.h"
#include "coordinator/sched.h"

/* The transports a server runs, in order; each sees every option. */
static const struct br_transport_ops *const transports[] = {&br_frontend_zmq, &br_frontend_http};
#define N_TRANSPORTS (sizeof transports / sizeof *transports)

struct br_server {
    struct br_server_opts o;
    atomic_int stop; /* enum br_stop_state */
    struct br_gateway *gw;
    void *tstate[N_TRANSPORTS];
};

static struct br_server *signal_server; /* for the signal handler only */

int br_server_curve_check(const struct br_server_opts *o, struct br_err *err)
{
    return br_curve_check(o->curve_secret, o->curve_clients, o->curve_any_client, err);
}

int br_server_start(const struct br_server_opts *o, const char *const *info, struct br_server **out,
                    struct br_err *err)
{
    *out = NULL;
    struct br_server *s = calloc(1, sizeof *s);
    if (!s) return br_err_set(err, BR_E_NOMEM, "out of memory");
    s->o = *o;
    if (s->o.client_timeout_s < 0) s->o.client_timeout_s = 30;
    struct br_gateway_opts go = {
        .max_queue = o->max_queue,
        .max_per_client = o->max_per_client,
        .max_prompt_tokens = o->max_prompt_tokens,
        .max_request_bytes = o->max_request_bytes,
        .max_prep_bytes = o->max_prep_bytes,
        .stuck_s = o->stuck_s,
        .stop_grace_s = 0.25, /* mpirun follows SIGTERM with SIGKILL one second later */
        .info = info,
        .stop = &s->stop,
        .loss = o->loss,
        .loss_ctx = o->loss_ctx,
    };
    int rc = br_gateway_create(&go, &s->gw, err);
    for (size_t i = 0; !rc && i < N_TRANSPORTS; i++)
        rc = transports[i]->start(s->gw, &s->o, &s->tstate[i], err);
    if (rc) {
        br_server_destroy(&s);
        return rc;
    }
    *out = s;
    return BR_OK;
}

void br_server_request_stop(struct br_server *s)
{
    if (!s) return;
    int none = BR_STOP_NONE;
    atomic_compare_exchange_strong(&s->stop, &none, BR_STOP_ASKED);
    br_gateway_wake(s->gw);
}

int br_server_stopping(struct br_server *s)
{
    return s && atomic_load(&s->stop) != BR_STOP_NONE;
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
    atomic_store(&s->stop, BR_STOP_GONE);
    if (signal_server == s) signal_server = NULL;
    /* whatever is still open gets its final answer before the transports forward it */
    if (s->gw) br_gateway_answer_all(s->gw, "the server is shutting down; retry later");
    for (size_t i = N_TRANSPORTS; i-- > 0;)
        if (s->tstate[i]) transports[i]->stop(s->tstate[i]);
    br_gateway_destroy(&s->gw);
    free(s);
    *sp = NULL;
}

static const char *chat_template_of(const struct br_model *m)
{
    const struct br_gguf_kv *kv =
        m->gguf ? br_gguf_find_kv(m->gguf, "tokenizer.chat_template") : NULL;
    char *ttext = NULL;
    if (kv && kv->type == BR_GGUF_STRING && (ttext = malloc(kv->v.str.len + 1))) {
        memcpy(ttext, kv->v.str.ptr, kv->v.str.len);
        ttext[kv->v.str.len] = '\0';
    }
    const char *tmpl = br_chat_template_detect(ttext, m->cfg.arch_name);
    free(ttext);
    return tmpl ? tmpl : "chatml";
}

int br_server_run(struct br_server *s, const struct br_model *m, struct br_cluster *cl,
                  const struct br_tok *tok, struct br_err *err)
{
    int rc;
    struct br_executor ex;
    br_cluster_executor(cl, &ex);
    struct br_sched_opts so = {
        .batch_tokens = s->o.batch_tokens,
        .micro_batches = s->o.micro_batches,
        .max_tokens_cap = s->o.max_tokens_cap,
        .stats = br_gateway_stats(s->gw),
    };
    struct br_sched_sink sink = br_gateway_sink(s->gw);
    struct br_sched *sc = NULL;
    if ((rc = br_sched_create(&so, &ex, &sink, tok, &sc, err))) return rc;
    br_gateway_set_ready(s->gw, tok, m->cfg.n_vocab, ex.n_ctx, chat_template_of(m));
    struct pollfd pfd = {br_gateway_fd(s->gw), POLLIN, 0};
    while (atomic_load(&s->stop) == BR_STOP_NONE) {
        /* idle: block until the gateway has work or a stop wakes us */
        if (!br_sched_busy(sc) && poll(&pfd, 1, -1) < 0 && errno != EINTR) break;
        br_gateway_feed(s->gw, sc);
        br_gateway_step_begins(s->gw, 1);
        long steps = atomic_load(&so.stats->steps);
        double t0 = br_now();
        rc = br_sched_step(sc, err);
        if (s->o.metrics && atomic_load(&so.stats->steps) != steps)
            br_metrics_observe_step(s->o.metrics, br_now() - t0);
        br_gateway_step_begins(s->gw, 0);
        if (rc) break;
    }
    if (rc) br_metrics_lost_rank(s->o.metrics);
    /* every request still here gets its final answer */
    char why[600];
    if (rc)
        snprintf(why, sizeof why, "a rank was lost (%s); the server is shutting down", err->msg);
    else
        snprintf(why, sizeof why, "the server is shutting down");
    br_gateway_feed(s->gw, sc); /* requests already on their way get theirs too */
    br_sched_finish_all(sc, rc == BR_OK, BR_PROTO_UNAVAILABLE, why);
    br_gateway_answer_all(s->gw, rc ? why : "the server is shutting down; retry later");
    br_sched_destroy(&sc);
    if (!rc) rc = br_cluster_stop(cl, err);
    return rc;
}
