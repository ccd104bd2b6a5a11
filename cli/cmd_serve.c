/*
 * `bitrack serve`: the model behind a ZeroMQ endpoint (coordinator/server.h).
 *
 *   bitrack serve -m MODEL [--listen 127.0.0.1:5555] [-t THREADS] [--ctx N]
 *                 [--max-seqs N] [--batch-tokens N] [--max-queue N] [--client-timeout S]
 *                 [--max-per-client N] [--max-tokens-cap N] [--max-prompt-tokens N]
 *                 [--max-request-bytes N] [--client-queue N]
 *                 [--curve-secret FILE (--curve-clients DIR | --curve-any-client)]
 *                 [--http HOST:PORT [--api-key KEY | --api-key-file F] [--auth-probes]
 *                  [--http-max-body N] [--http-max-conns N] [--http-timeout S]
 *                  [--http-threads N] [--model-name NAME]]
 *                 [--log-format text|json] [--log-file F]
 *   mpirun -np T*P bitrack serve -m MODEL|SHARD_DIR --tp T --pp P [--step-timeout S] ...
 *
 * Rank 0 answers health requests (state `loading`) while the model loads, prints the
 * plan, load progress and "ready", and serves until SIGINT/SIGTERM. The other ranks
 * follow rank 0's steps. With --http, rank 0 also serves the OpenAI-compatible HTTP API
 * (coordinator/frontend_http.h), a second transport on the same gateway. With --log-file
 * FILE (`-`: stderr) or --log-format, every finished request, on either transport, gets
 * one line in the request log.
 *
 * A lost rank (docs/RELIABILITY.md, "Lost ranks"): rank 0 gives up on a rank that has not
 * answered for --step-timeout seconds (default 3), or, after mpirun's SIGTERM, on a rank
 * of this machine that has died; every client then gets `unavailable`, the ranks that can
 * still be reached print which rank (and host) was lost, and the job exits non-zero.
 */
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "coordinator/frontend_http.h"
#include "coordinator/metrics.h"
#include "coordinator/rank.h"
#include "coordinator/reqlog.h"
#include "coordinator/server.h"
#include "worker/comm_mpi.h"
#include "worker/step.h"

static volatile sig_atomic_t g_term; /* a signal arrived (ranks other than 0) */
static pid_t g_parent;

static void on_term(int sig)
{
    (void)sig;
    g_term = 1;
}

/* br_comm_mpi_watch's question "did a signal arrive?", for each kind of rank */
static int worker_interrupted(void *arg)
{
    (void)arg;
    return g_term != 0;
}

/* Rank 0's gateway thread: which rank is lost, for the clients' `unavailable` message: a
 * rank of this machine that died, or, when a step is stuck, the peers of the collective it
 * waits in. Touches no MPI state (comm_mpi.h). */
static int server_loss(void *arg, int stuck, char *buf, size_t n)
{
    struct br_comm *comm = arg;
    if (!comm) return 0;
    if (br_comm_mpi_dead_rank(comm, buf, n) >= 0) return 1;
    if (!stuck || comm->tp < 2) return 0;
    char group[512];
    br_comm_mpi_name_group(comm, group, sizeof group);
    snprintf(buf, n, "no answer within the step timeout in a collective with %s", group);
    return 1;
}

static int server_interrupted(void *arg)
{
    return br_server_stopping(arg);
}

/* Every rank's watchdog: a rank blocked inside MPI cannot notice by itself that it should
 * go. It leaves when orphaned (the launcher died); after a signal, when a rank of this
 * machine has died (naming it: the job is lost, and mpirun's SIGKILL follows within a
 * second); rank 0, when still inside MPI well after a stop; the others, 5 s after a
 * signal without rank 0's stop message (also while stuck in MPI_Finalize). Rank 0's
 * front end has answered every client before (server.c, STOP_GRACE_S).
 *
 * The thread is detached, since the rank may be stuck in MPI at its very end; it uses
 * its context (server, comm) only under g_watch_mu and not at all once g_watch_quit is
 * set, which cleanup does before freeing them. */
struct watchdog_ctx {
    struct br_comm *comm;
    struct br_server *srv; /* rank 0 only */
    double stuck_s;        /* rank 0: leave this long after a stop the MPI thread never ends */
};

static volatile sig_atomic_t g_finished; /* the rank left its serving loop normally */
static pthread_mutex_t g_watch_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_watch_quit; /* under g_watch_mu */

/* The checks that need the context; called with g_watch_mu held. */
static void watch_context(const struct watchdog_ctx *w, int rank, double *since)
{
    int signalled = w->srv ? br_server_stopping(w->srv) : g_term != 0;
    if (signalled && *since == 0) *since = br_now();
    /* rank 0 leaves its front end time to answer every client first */
    if (*since == 0 || g_finished || (w->srv && br_now() - *since < 0.6)) return;
    char why[256];
    if (w->comm && br_comm_mpi_dead_rank(w->comm, why, sizeof why) >= 0) {
        /* a peer that left after a normal stop is not lost: give this rank time to take
         * the stop it was sent */
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        if (g_finished) return;
        fprintf(stderr, "bitrack serve: rank %d: %s; leaving\n", rank, why);
        _exit(1);
    }
    if (w->srv && w->stuck_s > 0 && br_now() - *since > w->stuck_s) {
        char group[512];
        br_comm_mpi_name_group(w->comm, group, sizeof group);
        fprintf(stderr,
                "bitrack serve: rank 0: still inside MPI %.1f s after the stop, in a collective "
                "with %s; leaving\n",
                br_now() - *since, group);
        _exit(1);
    }
}

static void *watchdog(void *arg)
{
    const struct watchdog_ctx *w = arg;
    double since = 0;
    int rank = w->comm ? w->comm->world_rank : 0;
    for (;;) {
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        if (getppid() != g_parent) {
            fprintf(stderr, "bitrack serve: rank %d: the launcher is gone; leaving\n", rank);
            _exit(3);
        }
        pthread_mutex_lock(&g_watch_mu);
        if (!g_watch_quit) watch_context(w, rank, &since);
        pthread_mutex_unlock(&g_watch_mu);
        if (rank != 0 && g_term && since == 0) since = br_now();
        if (rank != 0 && since > 0 && br_now() - since > 5.0) {
            fprintf(stderr,
                    "bitrack serve: rank %d: no stop from rank 0 within 5 s of a signal; "
                    "leaving\n",
                    rank);
            _exit(3);
        }
    }
    return NULL;
}

/* What rank 0 starts before the model loads (the front end answers `loading` meanwhile),
 * and how every rank watches the others. */
struct serve_start {
    struct br_server_opts *so;
    const struct br_http_opts *ho;
    const char *const *info;
    const char *log_file, *log_format;
    long long pp, step_timeout;
    struct br_metrics *metrics;
    struct br_reqlog *reqlog;
    struct br_server *srv;
};

static int serve_start(void *ctx, struct br_rank *r, struct br_err *err)
{
    struct serve_start *st = ctx;
    struct br_server_opts *so = st->so;
    if (r->comm && so->micro_batches == 0) {
        /* Micro-batches let the stages work at once; stages that share one machine's cores
         * and memory bandwidth gain nothing from that (decode streams the weights), and
         * each micro-batch streams every stage's weights again. So by default one step
         * per machine is in flight. */
        int machines = br_comm_mpi_machines(r->comm);
        so->micro_batches = (int32_t)(machines < st->pp ? machines : st->pp);
    }
    /* --step-timeout bounds a whole step. Each wait inside it gives up after that long
     * (naming the peer); a step that outlasts it by half a second more is stuck in a
     * blocking MPI call (a collective), and the front end answers the clients itself. */
    if (r->comm && st->step_timeout > 0) so->stuck_s = (double)st->step_timeout + 0.5;
    so->loss = server_loss;
    so->loss_ctx = r->comm;
    if (r->rank == 0) {
        /* the request log is asked for with --log-file or --log-format */
        int rc =
            br_metrics_create(&st->metrics) ? br_err_set(err, BR_E_NOMEM, "out of memory") : BR_OK;
        if (!rc && (st->log_file || st->log_format))
            rc = br_reqlog_open(st->log_file,
                                st->log_format && !strcmp(st->log_format, "json") ? BR_REQLOG_JSON
                                                                                  : BR_REQLOG_TEXT,
                                &st->reqlog, err);
        so->metrics = st->metrics;
        so->log = st->reqlog;
        so->http = st->ho->addr ? st->ho : NULL; /* a second transport on the same gateway */
        if (rc || (rc = br_server_start(so, st->info, &st->srv, err))) return rc;
        br_server_install_signals(st->srv);
        fprintf(stderr, "bitrack serve: listening on %s (loading)\n",
                so->listen ? so->listen : "tcp://127.0.0.1:5555");
        if (st->ho->addr)
            fprintf(stderr, "bitrack serve: HTTP on http://%s (model `%s`%s)\n", st->ho->addr,
                    st->ho->model_name, st->ho->api_key ? ", API key required" : "");
    }
    if (!r->comm) return BR_OK;
    /* rank 0 gives up on a silent rank after the step timeout; the others wait for steps
     * as long as it takes (an idle server sends none) */
    if (r->rank == 0)
        br_comm_mpi_watch(r->comm, (double)st->step_timeout, server_interrupted, st->srv);
    else
        br_comm_mpi_watch(r->comm, 0, worker_interrupted, NULL);
    /* an idle server sleeps: waiting ranks are woken as a step starts */
    br_comm_mpi_doorbell(r->comm);
    return BR_OK;
}

int br_cmd_serve(int argc, char **argv)
{
    const char *model_path = NULL, *head = NULL, *layout_s = NULL, *link_s = NULL;
    int layout;
    double link_gbit, link_us;
    struct br_server_opts so = {0};
    char listen[BR_ADDR_MAX] = BR_CLIENT_DEFAULT_ADDR;
    long long threads = 0, tp = 1, pp = 1, ctx = 0, seqs = 16, batch = 64, step_timeout = 3;
    long long max_queue = 256, per_client = 64, client_timeout = 30, cap = 4096, max_prompt = 0;
    long long client_queue = 10000, micro = 0;
    uint64_t max_bytes = (uint64_t)4 << 20;
    uint32_t head_type = 0;
    int any_client = 0;
    /* the HTTP API and the request log */
    struct br_http_opts ho = {0};
    const char *key_file = NULL, *log_file = NULL, *log_format = NULL;
    long long hconns = 1024, htimeout = 30, hthreads = 2;
    uint64_t hbody = (uint64_t)4 << 20;
    int auth_probes = 0;
    const struct br_opt opts[] = {
        BR_O_STR('m', "model", &model_path, "FILE", "model file, or a directory from `shard`"),
        BR_O_ADDR(0, "listen", listen, "endpoint to bind (host:port means tcp://host:port)"),
        BR_O_INT('t', "threads", &threads, 0, 1024, "N",
                 "threads per rank; 0: the available cores, shared by this machine's ranks"),
        BR_O_INT(0, "ctx", &ctx, 0, 1 << 22, "N", "context per sequence; 0: the model's"),
        BR_O_INT(0, "max-seqs", &seqs, 1, 4096, "N", "sequences decoded together"),
        BR_O_INT(0, "batch-tokens", &batch, 1, 1024, "N", "token budget per step"),
        BR_O_INT(0, "max-queue", &max_queue, 1, 1 << 20, "N",
                 "requests waiting or running before `busy`"),
        BR_O_INT(0, "max-per-client", &per_client, 1, 1 << 20, "N",
                 "concurrent requests of one client"),
        BR_O_INT(0, "client-timeout", &client_timeout, 0, 1 << 20, "S",
                 "cancel a streaming request whose client is silent this long"),
        BR_O_INT(0, "max-tokens-cap", &cap, 1, 1 << 20, "N", "upper bound for max_tokens"),
        BR_O_INT(0, "max-prompt-tokens", &max_prompt, 0, 1 << 22, "N",
                 "longer prompts are answered too_long; 0: the context"),
        {.long_name = "max-request-bytes",
         .kind = BR_OPT_SIZE,
         .dest = &max_bytes,
         .arg = "BYTES",
         .help = "larger client messages are dropped unread (at least 4096)"},
        BR_O_INT(0, "client-queue", &client_queue, 1, 1 << 24, "N",
                 "messages queued for one client before it counts as not reading"),
        BR_O_STR(0, "curve-secret", &so.curve_secret, "FILE",
                 "CurveZMQ secret key of the server (with --curve-clients)"),
        BR_O_STR(0, "curve-clients", &so.curve_clients, "DIR",
                 "directory of the authorized clients' public keys"),
        BR_O_FLAG(0, "curve-any-client", &any_client,
                  "with --curve-secret: accept any client key (encryption only)"),
        BR_O_INT(0, "tp", &tp, 1, 4096, "T", "tensor-parallel ranks (under mpirun)"),
        BR_O_INT(0, "pp", &pp, 1, 4096, "P", "pipeline stages (under mpirun)"),
        BR_O_INT(0, "step-timeout", &step_timeout, 0, 86400, "S",
                 "give up on a rank silent this long; 0: never"),
        BR_O_INT(0, "micro-batches", &micro, 0, 64, "N",
                 "pipeline steps in flight; 0: one per machine"),
        BR_O_CHOICE(0, "head", &head, "q8_0|q6_k", "re-encode the output head at load"),
        BR_CLI_LAYOUT_OPTS(&layout_s, &link_s),
        BR_O_STR(0, "http", &ho.addr, "HOST:PORT",
                 "also the OpenAI-compatible HTTP API (docs/HTTP.md)"),
        BR_O_STR(0, "api-key", &ho.api_key, "KEY", "HTTP: require Authorization: Bearer KEY"),
        BR_O_STR(0, "api-key-file", &key_file, "FILE", "HTTP: the key, from FILE's first line"),
        BR_O_FLAG(0, "auth-probes", &auth_probes, "HTTP: /health and /metrics need the key too"),
        BR_O_SIZE(0, "http-max-body", &hbody, "BYTES", "HTTP: larger request bodies get 413"),
        BR_O_INT(0, "http-max-conns", &hconns, 1, 65536, "N", "HTTP: connections at once"),
        BR_O_INT(0, "http-timeout", &htimeout, 1, 86400, "S",
                 "HTTP: close a connection silent this long"),
        BR_O_INT(0, "http-threads", &hthreads, 1, 64, "N", "HTTP: polling threads"),
        BR_O_STR(0, "model-name", &ho.model_name, "NAME",
                 "HTTP: the model id; none: the file's name"),
        BR_O_CHOICE(0, "log-format", &log_format, "text|json",
                    "the request log: a line per request (to stderr)"),
        BR_O_STR(0, "log-file", &log_file, "FILE", "the request log's file (appended; -: stderr)"),
    };
    const struct br_cmd_spec spec = {
        "serve", NULL,
        "Serves the model over ZeroMQ (proto/PROTOCOL.md) with continuous batching; under\n"
        "mpirun with --tp T --pp P for a cluster (launch/bitrack-launch builds the line).",
        opts, sizeof opts / sizeof *opts};
    int prc = br_opts_parse_none(&spec, argc, argv);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (!model_path) return br_cli_usage_error("serve", "a model is required (-m MODEL.gguf)");
    if (br_cli_layout_link("serve", layout_s, link_s, &layout, &link_gbit, &link_us)) return 2;
    /* at least a few KiB: health, ping and cancel must always fit */
    if (max_bytes < 4096 || max_bytes > ((uint64_t)1 << 30))
        return br_cli_usage_error("serve", "--max-request-bytes: from 4096 to 1G");
    if (head) head_type = br_cli_head_type(head);
    if (ho.api_key && key_file)
        return br_cli_usage_error("serve", "--api-key and --api-key-file: give one of them");
    if ((ho.api_key || key_file || auth_probes) && !ho.addr)
        return br_cli_usage_error("serve",
                                  "--api-key, --api-key-file and --auth-probes need --http");
    if (auth_probes && !ho.api_key && !key_file)
        return br_cli_usage_error("serve", "--auth-probes needs --api-key or --api-key-file");
    if (hbody < 4096 || hbody > ((uint64_t)1 << 30))
        return br_cli_usage_error("serve", "--http-max-body: from 4096 to 1G");
    char key_buf[512];
    if (key_file) {
        FILE *kf = fopen(key_file, "r");
        if (!kf) return br_cli_usage_error("serve", "--api-key-file %s: cannot open it", key_file);
        if (!fgets(key_buf, sizeof key_buf, kf)) key_buf[0] = '\0';
        fclose(kf);
        key_buf[strcspn(key_buf, "\r\n")] = '\0';
        if (!key_buf[0])
            return br_cli_usage_error("serve", "--api-key-file %s: the first line is empty",
                                      key_file);
        ho.api_key = key_buf;
    }
    if (ho.api_key && !ho.api_key[0])
        return br_cli_usage_error("serve", "--api-key: the key is empty");
    ho.auth_all = auth_probes != 0;
    ho.max_body = (size_t)hbody;
    ho.max_conns = (unsigned)hconns;
    ho.timeout_s = (unsigned)htimeout;
    ho.threads = (unsigned)hthreads;
    /* the model id clients name: the file (or shard directory) name without .gguf */
    char mname[256];
    if (!ho.model_name) {
        size_t ml = strlen(model_path);
        while (ml > 1 && model_path[ml - 1] == '/') ml--;
        const char *base = model_path;
        for (size_t i = 0; i < ml; i++)
            if (model_path[i] == '/') base = model_path + i + 1;
        size_t bl = (size_t)(model_path + ml - base);
        if (bl > 5 && !strncmp(base + bl - 5, ".gguf", 5)) bl -= 5;
        snprintf(mname, sizeof mname, "%.*s", (int)bl, base);
        ho.model_name = mname;
    }
    so.listen = listen;
    so.max_queue = (int32_t)max_queue, so.max_per_client = (int32_t)per_client;
    so.client_timeout_s = (int32_t)client_timeout, so.max_tokens_cap = (int32_t)cap;
    so.max_prompt_tokens = (int32_t)max_prompt, so.client_queue = (int32_t)client_queue;
    so.micro_batches = (int32_t)micro;
    so.curve_any_client = any_client;
    so.batch_tokens = (int32_t)batch;
    so.max_request_bytes = (int64_t)max_bytes;
    {
        /* every rank refuses an incomplete Curve set at once, before MPI or the model */
        struct br_err cerr = {{0}};
        if (br_server_curve_check(&so, &cerr)) return br_cli_usage_error("serve", "%s", cerr.msg);
    }

    int exit_code = 1;
    struct br_err err = {{0}};
    struct br_rank *r = NULL;
    /* static: the detached watchdog may outlive this call (it stops reading it first) */
    static struct watchdog_ctx wctx;
    pthread_t wd;
    g_parent = getppid();
    char ranks[32], tpp[32];
    snprintf(ranks, sizeof ranks, "%lld", tp * pp);
    snprintf(tpp, sizeof tpp, "%lldx%lld", tp, pp);
    const char *info[] = {"model_path", model_path, "ranks",         ranks, "layout_tp_x_pp",
                          tpp,          "version",  "bitrack 0.1.0", NULL};
    struct serve_start st = {&so, &ho, info, log_file, log_format, pp, step_timeout, 0, 0, 0};
    /* -m is a model file or a directory written by `bitrack shard` */
    struct br_rank_opts ro = {.model_path = model_path, .argc = &argc, .argv = &argv};
    ro.tp = (int)tp, ro.pp = (int)pp, ro.threads = (int)threads, ro.head_type = head_type;
    ro.n_ctx = (int32_t)ctx, ro.max_batch = (int32_t)batch, ro.n_seq = (int32_t)seqs;
    ro.layout = layout, ro.link_gbit = link_gbit, ro.link_us = link_us;
    ro.describe = true, ro.tok = BR_RANK_TOK_REQUIRED;
    ro.on_comm = serve_start, ro.hook_ctx = &st;
    double t0 = br_now();
    if (br_rank_open(&ro, &r, &err)) {
        fprintf(stderr, "bitrack serve: %s\n", err.msg);
        goto done;
    }
    if (r->rank != 0) {
        /* mpirun forwards SIGINT/SIGTERM to every rank; only rank 0 acts on them, and the
         * others leave when its stop message arrives. A watchdog ends this rank if that
         * message never comes (rank 0 or mpirun died): it is blocked inside MPI. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_term;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        wctx.comm = r->comm;
        if (pthread_create(&wd, NULL, watchdog, &wctx) == 0) pthread_detach(wd);
        if (br_step_follow(r->engine, r->comm, &err)) {
            fprintf(stderr, "bitrack serve: rank %d: %s\n", r->rank, err.msg);
            goto done;
        }
        g_finished = 1;
        exit_code = 0;
        goto done;
    }
    fprintf(stderr,
            "bitrack serve: ready on %s (%s, %lld ranks, %d threads, context %d, %d "
            "sequences, %d step%s in flight, loaded in %.1f s)\n",
            so.listen ? so.listen : "tcp://127.0.0.1:5555", r->model->cfg.arch_name, tp * pp,
            r->threads, r->n_ctx, r->n_seq,
            (int)(so.micro_batches > 0 && so.micro_batches < pp ? so.micro_batches : pp),
            so.micro_batches == 1 || pp == 1 ? "" : "s", br_now() - t0);
    if (r->comm) {
        wctx.comm = r->comm, wctx.srv = st.srv, wctx.stuck_s = so.stuck_s;
        if (pthread_create(&wd, NULL, watchdog, &wctx) == 0) pthread_detach(wd);
    }
    int run_rc = br_server_run(st.srv, r->model, r->cluster, r->tok, &err);
    if (!run_rc) g_finished = 1;
    if (run_rc) {
        fprintf(stderr, "bitrack serve: rank 0: %s; ending the job\n", err.msg);
        goto done;
    }
    fprintf(stderr, "bitrack serve: stopped\n");
    exit_code = 0;
done:
    /* the watchdog reads srv and comm: it stops using them before they go */
    pthread_mutex_lock(&g_watch_mu);
    g_watch_quit = 1;
    pthread_mutex_unlock(&g_watch_mu);
    br_server_destroy(&st.srv);
    br_reqlog_close(&st.reqlog);
    br_metrics_destroy(&st.metrics);
    if (exit_code) br_rank_abort(r, exit_code);
    br_rank_close(&r);
    return exit_code;
}
