/*
 * `bitrack run`: generation on one machine, without mpirun.
 *
 *   bitrack run -m MODEL (-p TEXT | --tokens 1,2,3) -n N [--temp T] [--seed S]
 *               [--dump-logits FILE] [-t THREADS] [-v]
 *   mpirun -np T*P bitrack run ... --tp T --pp P [--stats]
 *
 * Under mpirun every rank loads only its part of the plan; rank 0 decides the steps,
 * prints the output and writes the logits. Results are bit-identical to one process.
 *
 * --tokens are used exactly as given (no BOS). The generated text goes to stdout as it is
 * produced; diagnostics go to stderr. --dump-logits writes little-endian f32 logits of
 * every evaluated position: the P prompt tokens, then the n-1 generated tokens fed back,
 * (P + n - 1, vocab).
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "kernels/pool.h"
#include "sharding/plan.h"
#include "worker/comm_mpi.h"
#include "worker/dist.h"
#include "worker/engine.h"
#include "worker/model.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: bitrack run -m MODEL (-p TEXT | --tokens 1,2,3) [-n N] [--temp T] "
               "[--seed S]\n"
               "                  [--dump-logits FILE] [-t THREADS] [-c CTX] [-v]\n"
               "                  [--tp T --pp P under mpirun] [--stats]\n");
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

struct run_args {
    const char *model_path, *prompt, *tokens_arg, *dump;
    long long n_gen, threads, n_ctx, seed, tp, pp;
    double temp;
    int verbose, stats;
};

static int parse(int argc, char **argv, struct run_args *a)
{
    enum { O_TOKENS = 256, O_TEMP, O_DUMP, O_SEED, O_TP, O_PP, O_STATS };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"prompt", required_argument, 0, 'p'},
        {"tokens", required_argument, 0, O_TOKENS}, {"n-predict", required_argument, 0, 'n'},
        {"temp", required_argument, 0, O_TEMP},   {"seed", required_argument, 0, O_SEED},
        {"dump-logits", required_argument, 0, O_DUMP}, {"threads", required_argument, 0, 't'},
        {"ctx", required_argument, 0, 'c'},       {"verbose", no_argument, 0, 'v'},
        {"tp", required_argument, 0, O_TP},       {"pp", required_argument, 0, O_PP},
        {"stats", no_argument, 0, O_STATS},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->n_gen = 16, a->threads = 1, a->tp = 1, a->pp = 1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:n:t:c:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model_path = optarg; break;
        case 'p': a->prompt = optarg; break;
        case O_TOKENS: a->tokens_arg = optarg; break;
        case 'n':
            if (br_cli_int(optarg, 1, 1 << 24, &a->n_gen)) return br_cli_usage_error("run", "bad -n");
            break;
        case 't':
            if (br_cli_int(optarg, 1, 1024, &a->threads)) return br_cli_usage_error("run", "bad -t");
            break;
        case 'c':
            if (br_cli_int(optarg, 1, 1 << 22, &a->n_ctx)) return br_cli_usage_error("run", "bad -c");
            break;
        case O_TP:
            if (br_cli_int(optarg, 1, 4096, &a->tp)) return br_cli_usage_error("run", "bad --tp");
            break;
        case O_PP:
            if (br_cli_int(optarg, 1, 4096, &a->pp)) return br_cli_usage_error("run", "bad --pp");
            break;
        case O_TEMP: {
            char *end;
            a->temp = strtod(optarg, &end);
            if (*end || !(a->temp >= 0.0) || a->temp > 100.0)
                return br_cli_usage_error("run", "bad --temp '%s'", optarg);
            break;
        }
        case O_SEED:
            if (br_cli_int(optarg, 0, INT64_MAX, &a->seed)) return br_cli_usage_error("run", "bad --seed");
            break;
        case O_DUMP: a->dump = optarg; break;
        case O_STATS: a->stats = 1; break;
        case 'v': a->verbose = 1; break;
        case 'h': usage(stdout); return -1;
        default: usage(stderr); return 2;
        }
    }
    if (!a->model_path) return br_cli_usage_error("run", "a model is required (-m MODEL.gguf)");
    if (!!a->prompt == !!a->tokens_arg)
        return br_cli_usage_error("run", "give exactly one of -p TEXT or --tokens 1,2,3");
    return 0;
}

/* Rank 0's generation: prompt in batches, then one token at a time. */
static int generate(const struct run_args *a, const struct br_model *model, struct br_engine *eng,
                    struct br_comm *comm, const int32_t *toks, int32_t n_prompt, FILE *df,
                    struct br_err *err)
{
    int32_t vocab = model->cfg.n_vocab, mb = br_engine_max_batch(eng);
    float *logits = malloc((size_t)mb * (size_t)vocab * sizeof *logits);
    int32_t *pos = malloc((size_t)mb * sizeof *pos), *seq = calloc((size_t)mb, sizeof *seq);
    int32_t *rows = malloc((size_t)mb * sizeof *rows);
    int rc = BR_OK;
    if (!logits || !pos || !seq || !rows) {
        rc = br_err_set(err, BR_E_NOMEM, "out of memory for logits");
        goto done;
    }
    for (int32_t i = 0; i < mb; i++) rows[i] = i;
    double t1 = br_now();
    int32_t next_tok = 0; /* greedy: the highest logit, ties to the lowest id */
    for (int32_t off = 0; off < n_prompt && !rc; off += mb) {
        int32_t T = n_prompt - off < mb ? n_prompt - off : mb;
        for (int32_t t = 0; t < T; t++) pos[t] = off + t;
        struct br_batch b = {T, toks + off, pos, seq};
        int final = off + T == n_prompt;
        int32_t nr = df ? T : final ? 1 : 0;
        rc = br_dist_step(eng, comm, &b, df ? rows : rows + T - 1, nr, df ? logits : NULL,
                          &next_tok, err);
        if (!rc && df && fwrite(logits, sizeof(float), (size_t)T * vocab, df) != (size_t)T * vocab)
            rc = br_err_set(err, BR_E_IO, "write to %s failed", a->dump);
        if (final && df) next_tok = argmax(logits + (size_t)(nr - 1) * vocab, vocab);
    }
    double t_prompt = br_now() - t1, t2 = br_now();
    int32_t p = n_prompt;
    for (long long i = 0; i < a->n_gen && !rc; i++) {
        int32_t next = next_tok;
        printf("%s%d", i ? " " : "", next);
        fflush(stdout);
        if (i + 1 == a->n_gen) break;
        pos[0] = p++;
        struct br_batch b = {1, &next, pos, seq};
        rc = br_dist_step(eng, comm, &b, rows, 1, df ? logits : NULL, &next_tok, err);
        if (!rc && df) next_tok = argmax(logits, vocab);
        if (!rc && df && fwrite(logits, sizeof(float), (size_t)vocab, df) != (size_t)vocab)
            rc = br_err_set(err, BR_E_IO, "write to %s failed", a->dump);
    }
    printf("\n");
    double t_gen = br_now() - t2;
    if (!rc && a->verbose && !comm) {
        const float *rms = br_engine_layer_rms(eng);
        fprintf(stderr, "residual rms by layer:");
        for (int l = 0; l <= model->cfg.n_layer; l++) fprintf(stderr, " %.3g", rms[l]);
        fprintf(stderr, "\n");
    }
    if (!rc)
        fprintf(stderr, "bitrack run: prompt %d tokens in %.3f s (%.1f tok/s); generated %lld tokens "
                        "in %.3f s (%.2f tok/s after the first); %lld threads x %d ranks\n",
                n_prompt, t_prompt, n_prompt / (t_prompt > 0 ? t_prompt : 1e-9), a->n_gen, t_gen,
                a->n_gen > 1 ? (double)(a->n_gen - 1) / (t_gen > 0 ? t_gen : 1e-9) : 0.0,
                a->threads, comm ? comm->world_size : 1);
done:
    free(logits), free(pos), free(seq), free(rows);
    return rc;
}

/* -m may name a directory written by `bitrack shard`: each rank then loads only its own
 * file, DIR/rank-<R>.gguf, and the plan comes from the configuration stored there. */
static int is_shard_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int load_shard(const struct run_args *a, int rank, int want_plan, struct br_plan **plan,
                      struct br_model **model, struct br_err *err)
{
    int rc = br_model_load_shard(a->model_path, (int)a->tp, (int)a->pp, rank, model, err);
    if (!rc && want_plan)
        rc = br_plan_create(&(*model)->cfg, (int32_t)a->tp, (int32_t)a->pp, plan, err);
    return rc;
}

int br_cmd_run(int argc, char **argv)
{
    struct run_args a;
    int prc = parse(argc, argv, &a);
    if (prc) return prc < 0 ? 0 : prc;

    int exit_code = 1;
    struct br_err err = {{0}};
    struct br_comm *comm = NULL;
    struct br_plan *plan = NULL;
    struct br_model *model = NULL;
    struct br_pool *pool = NULL;
    struct br_engine *eng = NULL;
    int32_t *toks = NULL, n_prompt = 0;
    FILE *df = NULL;
    int rank = 0;

    if (a.tokens_arg) {
        if (br_cli_int_list(a.tokens_arg, &toks, &n_prompt) || n_prompt == 0) {
            exit_code = br_cli_usage_error("run", "bad --tokens '%s' (comma-separated ids)",
                                           a.tokens_arg);
            goto done;
        }
    } else {
        fprintf(stderr, "bitrack run: -p needs the tokenizer, which this build lacks; use "
                        "--tokens\n");
        goto done;
    }
    if (a.tp * a.pp > 1 || br_comm_mpi_launched()) {
        if (br_comm_mpi_create(&argc, &argv, (int)a.tp, (int)a.pp, &comm, &err)) {
            fprintf(stderr, "bitrack run: %s\n", err.msg);
            goto done;
        }
        rank = comm->world_rank;
    }
    double t0 = br_now();
    if (is_shard_dir(a.model_path)) {
        if (load_shard(&a, rank, comm != NULL, &plan, &model, &err)) {
            fprintf(stderr, "bitrack run: rank %d: %s\n", rank, err.msg);
            goto done;
        }
        if (rank == 0 && a.verbose && plan) br_plan_describe(plan, 0, stderr);
    } else if (comm) {
        /* the plan needs the configuration: read it from the file's header */
        struct br_gguf *g = NULL;
        struct br_model_config cfg;
        if (br_gguf_open(a.model_path, &g, &err) || br_config_from_gguf(g, &cfg, &err) ||
            br_plan_create(&cfg, (int32_t)a.tp, (int32_t)a.pp, &plan, &err)) {
            br_gguf_close(&g);
            fprintf(stderr, "bitrack run: rank %d: %s\n", rank, err.msg);
            goto done;
        }
        br_gguf_close(&g);
        if (rank == 0 && a.verbose) br_plan_describe(plan, 0, stderr);
    }
    if (!model && br_model_load_part(a.model_path, plan ? &plan->parts[rank] : NULL, &model, &err)) {
        fprintf(stderr, "bitrack run: rank %d: %s\n", rank, err.msg);
        goto done;
    }
    double t_load = br_now() - t0;
    if (br_pool_create((int)a.threads, &pool)) {
        fprintf(stderr, "bitrack run: cannot start %lld threads\n", a.threads);
        goto done;
    }
    int32_t need = n_prompt + (int32_t)a.n_gen;
    long long n_ctx = a.n_ctx ? a.n_ctx : need;
    if (need > n_ctx || need > model->cfg.n_ctx) {
        fprintf(stderr, "bitrack run: %d prompt + %lld generated tokens exceed the context of %lld "
                        "(model: %d)\n",
                n_prompt, a.n_gen, n_ctx, model->cfg.n_ctx);
        goto done;
    }
    struct br_engine_opts eo = {.n_ctx = (int32_t)n_ctx, .max_batch = 64, .pool = pool, .comm = comm};
    if (br_engine_create(model, &eo, &eng, &err)) {
        fprintf(stderr, "bitrack run: rank %d: %s\n", rank, err.msg);
        goto done;
    }
    if (rank != 0) {
        if (br_dist_serve(eng, comm, &err)) {
            fprintf(stderr, "bitrack run: rank %d: %s\n", rank, err.msg);
            goto done;
        }
    } else {
        if (a.dump && !(df = fopen(a.dump, "wb"))) {
            fprintf(stderr, "bitrack run: cannot write %s\n", a.dump);
            br_dist_stop(eng, comm, &err);
            goto done;
        }
        if (a.verbose) fprintf(stderr, "bitrack run: loaded in %.2f s\n", t_load);
        int rc = generate(&a, model, eng, comm, toks, n_prompt, df, &err);
        br_dist_stop(eng, comm, NULL);
        if (rc) {
            fprintf(stderr, "bitrack run: %s\n", err.msg);
            goto done;
        }
    }
    if (a.stats && comm) {
        /* what this run evaluated, to compare with the plan's prediction */
        int32_t mb = br_engine_max_batch(eng);
        uint64_t psteps = (uint64_t)((n_prompt + mb - 1) / mb);
        uint64_t steps = psteps + (uint64_t)(a.n_gen - 1);
        uint64_t tokens = (uint64_t)n_prompt + (uint64_t)(a.n_gen - 1);
        uint64_t rows = (a.dump ? (uint64_t)n_prompt : 1) + (uint64_t)(a.n_gen - 1);
        uint64_t row_steps = (a.dump ? psteps : 1) + (uint64_t)(a.n_gen - 1);
        uint64_t pb, pm;
        br_plan_traffic(plan, rank, tokens, steps, rows, row_steps, mb, a.dump == NULL, &pb, &pm);
        fprintf(stderr, "rank %d stats: sent %llu bytes in %llu messages (%.0f bytes/token); plan "
                        "predicts %llu bytes in %llu messages%s\n",
                rank, (unsigned long long)comm->stats.bytes_sent,
                (unsigned long long)comm->stats.messages,
                (double)comm->stats.bytes_sent / (double)tokens, (unsigned long long)pb,
                (unsigned long long)pm,
                pb == comm->stats.bytes_sent && pm == comm->stats.messages ? " (match)" : " (MISMATCH)");
    }
    exit_code = 0;
done:
    if (df && fclose(df) != 0 && exit_code == 0) {
        fprintf(stderr, "bitrack run: closing %s failed\n", a.dump);
        exit_code = 1;
    }
    free(toks);
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
