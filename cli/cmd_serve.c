/*
 * `bitrack serve`: the model behind a ZeroMQ endpoint (coordinator/server.h).
 *
 *   bitrack serve -m MODEL [--listen tcp://127.0.0.1:5555] [-t THREADS] [--ctx N]
 *                 [--max-seqs N] [--batch-tokens N] [--max-queue N] [--client-timeout S]
 *                 [--curve-secret FILE --curve-clients DIR]
 *   mpirun -np T*P bitrack serve -m MODEL|SHARD_DIR --tp T --pp P ...
 *
 * Rank 0 answers health requests (state `loading`) while the model loads, prints the
 * plan, load progress and "ready", and serves until SIGINT/SIGTERM. The other ranks
 * follow rank 0's steps.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "coordinator/server.h"
#include "coordinator/tokenizer.h"
#include "kernels/pool.h"
#include "sharding/plan.h"
#include "worker/comm_mpi.h"
#include "worker/dist.h"
#include "worker/engine.h"
#include "worker/model.h"

static volatile sig_atomic_t g_term; /* a signal arrived (ranks other than 0) */
static pid_t g_parent;

static void on_term(int sig)
{
    (void)sig;
    g_term = 1;
}

/* Ranks other than 0: leave when orphaned (the launcher died) or 5 s after a signal
 * without rank 0's stop message, since a rank blocked in MPI cannot notice by itself. */
static void *watchdog(void *arg)
{
    (void)arg;
    double since = 0;
    for (;;) {
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        if (getppid() != g_parent) {
            fprintf(stderr, "bitrack serve: the launcher is gone; leaving\n");
            _exit(3);
        }
        if (g_term && since == 0) since = br_now();
        if (since > 0 && br_now() - since > 5.0) {
            fprintf(stderr, "bitrack serve: no stop from rank 0 within 5 s of a signal; leaving\n");
            _exit(3);
        }
    }
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bitrack serve -m MODEL [--listen ADDR] [-t THREADS] [--ctx N] [--max-seqs N]\n"
            "                     [--batch-tokens N] [--max-queue N] [--max-per-client N]\n"
            "                     [--client-timeout S] [--max-tokens-cap N]\n"
            "                     [--curve-secret FILE --curve-clients DIR] [--tp T --pp P]\n"
            "                     [--head q8_0]  (quantize the output head to Q8_0 at load)\n");
}

int br_cmd_serve(int argc, char **argv)
{
    const char *model_path = NULL;
    struct br_server_opts so = {0};
    long long threads = 1, tp = 1, pp = 1, ctx = 0, seqs = 16, batch = 64, v;
    so.client_timeout_s = 30;
    enum {
        O_LISTEN = 256,
        O_CTX,
        O_SEQS,
        O_BATCH,
        O_QUEUE,
        O_PERC,
        O_TIMEOUT,
        O_CAP,
        O_CS,
        O_CC,
        O_TP,
        O_PP,
        O_HEAD
    };
    int head_q8 = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"listen", required_argument, 0, O_LISTEN},
                                         {"threads", required_argument, 0, 't'},
                                         {"ctx", required_argument, 0, O_CTX},
                                         {"max-seqs", required_argument, 0, O_SEQS},
                                         {"batch-tokens", required_argument, 0, O_BATCH},
                                         {"max-queue", required_argument, 0, O_QUEUE},
                                         {"max-per-client", required_argument, 0, O_PERC},
                                         {"client-timeout", required_argument, 0, O_TIMEOUT},
                                         {"max-tokens-cap", required_argument, 0, O_CAP},
                                         {"curve-secret", required_argument, 0, O_CS},
                                         {"curve-clients", required_argument, 0, O_CC},
                                         {"tp", required_argument, 0, O_TP},
                                         {"pp", required_argument, 0, O_PP},
                                         {"head", required_argument, 0, O_HEAD},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:t:h", opts, NULL)) != -1) {
        long long *slot = NULL, lo = 1, hi = 1 << 20;
        int32_t *islot = NULL;
        switch (c) {
        case 'm':
            model_path = optarg;
            break;
        case O_LISTEN:
            so.listen = optarg;
            break;
        case O_CS:
            so.curve_secret = optarg;
            break;
        case O_CC:
            so.curve_clients = optarg;
            break;
        case 't':
            slot = &threads, hi = 1024;
            break;
        case O_TP:
            slot = &tp, hi = 4096;
            break;
        case O_PP:
            slot = &pp, hi = 4096;
            break;
        case O_CTX:
            slot = &ctx, hi = 1 << 22;
            break;
        case O_SEQS:
            slot = &seqs, hi = 4096;
            break;
        case O_BATCH:
            slot = &batch, hi = 1024;
            break;
        case O_QUEUE:
            islot = &so.max_queue;
            break;
        case O_PERC:
            islot = &so.max_per_client;
            break;
        case O_TIMEOUT:
            islot = &so.client_timeout_s, lo = 0;
            break;
        case O_CAP:
            islot = &so.max_tokens_cap;
            break;
        case O_HEAD:
            if (strcmp(optarg, "q8_0") != 0)
                return br_cli_usage_error("serve", "--head takes q8_0 (got '%s')", optarg);
            head_q8 = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (slot || islot) {
            if (br_cli_int(optarg, lo, hi, &v))
                return br_cli_usage_error("serve", "bad value '%s' for --%s", optarg,
                                          opts[optind > 0 ? 0 : 0].name);
            if (slot)
                *slot = v;
            else
                *islot = (int32_t)v;
        }
    }
    if (!model_path) return br_cli_usage_error("serve", "a model is required (-m MODEL.gguf)");
    so.batch_tokens = (int32_t)batch;

    int exit_code = 1, rank = 0;
    struct br_err err = {{0}};
    struct br_comm *comm = NULL;
    struct br_plan *plan = NULL;
    struct br_model *model = NULL;
    struct br_pool *pool = NULL;
    struct br_engine *eng = NULL;
    struct br_tok *tok = NULL;
    struct br_server *srv = NULL;
    g_parent = getppid();
    if (tp * pp > 1 || br_comm_mpi_launched()) {
        if (br_comm_mpi_create(&argc, &argv, (int)tp, (int)pp, &comm, &err)) {
            fprintf(stderr, "bitrack serve: %s\n", err.msg);
            return 1;
        }
        rank = comm->world_rank;
    }
    char ranks[32], tpp[32];
    snprintf(ranks, sizeof ranks, "%lld", tp * pp);
    snprintf(tpp, sizeof tpp, "%lldx%lld", tp, pp);
    const char *info[] = {"model_path", model_path, "ranks",         ranks, "layout_tp_x_pp",
                          tpp,          "version",  "bitrack 0.1.0", NULL};
    if (rank == 0) {
        if (br_server_start(&so, info, &srv, &err)) {
            fprintf(stderr, "bitrack serve: %s\n", err.msg);
            goto done;
        }
        br_server_install_signals(srv);
        fprintf(stderr, "bitrack serve: listening on %s (loading)\n",
                so.listen ? so.listen : "tcp://127.0.0.1:5555");
    }
    double t0 = br_now();
    /* -m is a model file or a directory written by `bitrack shard` */
    if (br_model_load_rank(model_path, (int)tp, (int)pp, rank, &plan, &model, &err)) {
        fprintf(stderr, "bitrack serve: rank %d: %s\n", rank, err.msg);
        goto done;
    }
    if (head_q8 && br_model_quantize_head(model, &err)) {
        fprintf(stderr, "bitrack serve: rank %d: %s\n", rank, err.msg);
        goto done;
    }
    if (rank == 0 && plan) br_plan_describe(plan, 0, stderr);
    if (br_pool_create((int)threads, &pool)) {
        fprintf(stderr, "bitrack serve: cannot start %lld threads\n", threads);
        goto done;
    }
    if (ctx == 0 || ctx > model->cfg.n_ctx) ctx = model->cfg.n_ctx;
    struct br_engine_opts eo = {.n_ctx = (int32_t)ctx,
                                .max_batch = (int32_t)batch,
                                .n_seq = (int32_t)seqs,
                                .pool = pool,
                                .comm = comm};
    if (br_engine_create(model, &eo, &eng, &err)) {
        fprintf(stderr, "bitrack serve: rank %d: %s\n", rank, err.msg);
        goto done;
    }
    if (rank != 0) {
        /* mpirun forwards SIGINT/SIGTERM to every rank; only rank 0 acts on them, and the
         * others leave when its stop message arrives. A watchdog ends this rank if that
         * message never comes (rank 0 or mpirun died): it is blocked inside MPI. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_term;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        pthread_t wd;
        if (pthread_create(&wd, NULL, watchdog, NULL) == 0) pthread_detach(wd);
        if (br_dist_serve(eng, comm, &err)) {
            fprintf(stderr, "bitrack serve: rank %d: %s\n", rank, err.msg);
            goto done;
        }
        exit_code = 0;
        goto done;
    }
    if (br_tok_from_gguf(model->gguf, &tok, &err)) {
        fprintf(stderr, "bitrack serve: %s\n", err.msg);
        br_dist_stop(eng, comm, NULL);
        goto done;
    }
    fprintf(stderr,
            "bitrack serve: ready on %s (%s, %lld ranks, %lld threads, context %lld, %lld "
            "sequences, loaded in %.1f s)\n",
            so.listen ? so.listen : "tcp://127.0.0.1:5555", model->cfg.arch_name, tp * pp, threads,
            ctx, seqs, br_now() - t0);
    if (br_server_run(srv, model, eng, comm, tok, &err)) {
        fprintf(stderr, "bitrack serve: %s\n", err.msg);
        goto done;
    }
    fprintf(stderr, "bitrack serve: stopped\n");
    exit_code = 0;
done:
    br_server_destroy(&srv);
    br_tok_destroy(&tok);
    br_engine_destroy(&eng);
    br_pool_destroy(&pool);
    br_model_destroy(&model);
    br_plan_destroy(&plan);
    if (comm) {
        if (exit_code != 0) br_comm_mpi_abort(comm, exit_code);
        br_comm_mpi_destroy(&comm);
    }
    return exit_code;
}
