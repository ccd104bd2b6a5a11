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
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "worker/sample.h"
#include "coordinator/tokenizer.h"
#include "kernels/pool.h"
#include "sharding/config.h"
#include "sharding/gguf.h"
#include "sharding/plan.h"
#include "worker/comm_mpi.h"
#include "worker/dist.h"
#include "worker/engine.h"
#include "worker/model.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bitrack run -m MODEL (-p TEXT | --tokens 1,2,3) [-n N] [--temp T] "
            "[--seed S]\n"
            "                  [--dump-logits FILE] [-t THREADS] [-c CTX] [-v]\n"
            "                  [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
            "                  [--ids] [--ignore-eos] [--tp T --pp P under mpirun] [--stats]\n"
            "                  [--head q8_0|q6_k]  (re-encode the output head at load)\n"
            "                  [--layout replicated|sharded|auto] [--link GBIT:US]\n"
            "  --layout  how a TP group holds the residual (sharding/plan.h); auto picks the\n"
            "            one whose collectives cost less for one token per step over --link\n"
            "            (default 25:25, Gbit/s and one-way us); a shard directory has its own\n");
}

struct run_args {
    const char *model_path, *prompt, *tokens_arg, *dump;
    long long n_gen, threads, n_ctx, seed, tp, pp, top_k;
    double temp, top_p, min_p, repeat_penalty;
    int verbose, stats, print_ids, ignore_eos;
    uint32_t head_type;
    int layout;
    double link_gbit, link_us;
};

static int parse(int argc, char **argv, struct run_args *a)
{
    enum {
        O_TOKENS = 256,
        O_TEMP,
        O_DUMP,
        O_SEED,
        O_TP,
        O_PP,
        O_STATS,
        O_TOPK,
        O_TOPP,
        O_MINP,
        O_REP,
        O_IDS,
        O_IGN,
        O_HEAD,
        O_LAYOUT,
        O_LINK
    };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"prompt", required_argument, 0, 'p'},
                                         {"tokens", required_argument, 0, O_TOKENS},
                                         {"n-predict", required_argument, 0, 'n'},
                                         {"temp", required_argument, 0, O_TEMP},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"dump-logits", required_argument, 0, O_DUMP},
                                         {"threads", required_argument, 0, 't'},
                                         {"ctx", required_argument, 0, 'c'},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"tp", required_argument, 0, O_TP},
                                         {"pp", required_argument, 0, O_PP},
                                         {"stats", no_argument, 0, O_STATS},
                                         {"help", no_argument, 0, 'h'},
                                         {"top-k", required_argument, 0, O_TOPK},
                                         {"top-p", required_argument, 0, O_TOPP},
                                         {"min-p", required_argument, 0, O_MINP},
                                         {"repeat-penalty", required_argument, 0, O_REP},
                                         {"ids", no_argument, 0, O_IDS},
                                         {"ignore-eos", no_argument, 0, O_IGN},
                                         {"head", required_argument, 0, O_HEAD},
                                         {"layout", required_argument, 0, O_LAYOUT},
                                         {"link", required_argument, 0, O_LINK},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->n_gen = 16, a->threads = 1, a->tp = 1, a->pp = 1;
    a->layout = BR_LAYOUT_AUTO, a->link_gbit = 25, a->link_us = 25;
    a->top_p = 1.0, a->repeat_penalty = 1.0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:n:t:c:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model_path = optarg;
            break;
        case 'p':
            a->prompt = optarg;
            break;
        case O_TOKENS:
            a->tokens_arg = optarg;
            break;
        case 'n':
            if (br_cli_int(optarg, 1, 1 << 24, &a->n_gen))
                return br_cli_usage_error("run", "bad -n");
            break;
        case 't':
            if (br_cli_int(optarg, 1, 1024, &a->threads))
                return br_cli_usage_error("run", "bad -t");
            break;
        case 'c':
            if (br_cli_int(optarg, 1, 1 << 22, &a->n_ctx))
                return br_cli_usage_error("run", "bad -c");
            break;
        case O_TP:
            if (br_cli_int(optarg, 1, 4096, &a->tp)) return br_cli_usage_error("run", "bad --tp");
            break;
        case O_PP:
            if (br_cli_int(optarg, 1, 4096, &a->pp)) return br_cli_usage_error("run", "bad --pp");
            break;
        case O_TEMP:
        case O_TOPP:
        case O_MINP:
        case O_REP: {
            char *end;
            double v = strtod(optarg, &end);
            if (*end || !(v >= 0.0) || v > 100.0)
                return br_cli_usage_error("run", "bad value '%s'", optarg);
            *(c == O_TEMP   ? &a->temp
              : c == O_TOPP ? &a->top_p
              : c == O_MINP ? &a->min_p
                            : &a->repeat_penalty) = v;
            break;
        }
        case O_TOPK:
            if (br_cli_int(optarg, 0, 1 << 20, &a->top_k))
                return br_cli_usage_error("run", "bad --top-k");
            break;
        case O_IDS:
            a->print_ids = 1;
            break;
        case O_IGN:
            a->ignore_eos = 1;
            break;
        case O_SEED:
            if (br_cli_int(optarg, 0, INT64_MAX, &a->seed))
                return br_cli_usage_error("run", "bad --seed");
            break;
        case O_DUMP:
            a->dump = optarg;
            break;
        case O_STATS:
            a->stats = 1;
            break;
        case 'v':
            a->verbose = 1;
            break;
        case O_LAYOUT:
            if ((a->layout = br_layout_parse(optarg)) < -1)
                return br_cli_usage_error("run", "--layout takes replicated, sharded or auto");
            break;
        case O_LINK: {
            int k = 0;
            if (sscanf(optarg, "%lf:%lf%n", &a->link_gbit, &a->link_us, &k) != 2 || optarg[k] ||
                !(a->link_gbit > 0 && a->link_gbit < 1e6) || !(a->link_us >= 0 && a->link_us < 1e6))
                return br_cli_usage_error("run", "bad --link '%s' (GBIT:US, e.g. 25:25)", optarg);
            break;
        }
        case O_HEAD:
            if (!(a->head_type = br_cli_head_type(optarg)))
                return br_cli_usage_error("run", "--head takes q8_0 or q6_k (got '%s')", optarg);
            break;
        case 'h':
            usage(stdout);
            return -1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!a->model_path) return br_cli_usage_error("run", "a model is required (-m MODEL.gguf)");
    if (!!a->prompt == !!a->tokens_arg)
        return br_cli_usage_error("run", "give exactly one of -p TEXT or --tokens 1,2,3");
    return 0;
}

/* Rank 0's generation: prompt in batches, then one token at a time. Greedy steps bring
 * back only each vocabulary slice's best token; sampling brings back the logits and draws
 * with the counter RNG keyed by (seed, 0, position), as the server does. */
static int generate(const struct run_args *a, const struct br_model *model, struct br_engine *eng,
                    struct br_comm *comm, const struct br_tok *tok, const int32_t *toks,
                    int32_t n_prompt, FILE *df, struct br_err *err)
{
    int32_t vocab = model->cfg.n_vocab, mb = br_engine_max_batch(eng);
    struct br_sample_params sp;
    br_sample_params_default(&sp);
    sp.temperature = (float)a->temp;
    sp.top_k = (int32_t)a->top_k;
    sp.top_p = (float)a->top_p;
    sp.min_p = (float)a->min_p;
    sp.repeat_penalty = (float)a->repeat_penalty;
    sp.seed = (uint64_t)a->seed;
    int rc = br_sample_params_check(&sp, vocab, err);
    if (rc) return rc;
    int greedy = sp.temperature == 0.0f && sp.repeat_penalty == 1.0f;
    int need_logits = df || !greedy;
    float *logits = malloc((size_t)mb * (size_t)vocab * sizeof *logits);
    int32_t *pos = malloc((size_t)mb * sizeof *pos), *seq = calloc((size_t)mb, sizeof *seq);
    int32_t *rows = malloc((size_t)mb * sizeof *rows);
    int32_t *hist = malloc(((size_t)n_prompt + (size_t)a->n_gen) * sizeof *hist);
    struct br_detok *dt = NULL;
    if (!logits || !pos || !seq || !rows || !hist || (tok && br_detok_create(tok, 0, &dt))) {
        rc = br_err_set(err, BR_E_NOMEM, "out of memory for logits");
        goto done;
    }
    memcpy(hist, toks, (size_t)n_prompt * sizeof *hist);
    int32_t n_hist = n_prompt;
    for (int32_t i = 0; i < mb; i++) rows[i] = i;
    double t1 = br_now();
    int32_t next_tok = 0;
    const float *last = NULL;
    for (int32_t off = 0; off < n_prompt && !rc; off += mb) {
        int32_t T = n_prompt - off < mb ? n_prompt - off : mb;
        for (int32_t t = 0; t < T; t++) pos[t] = off + t;
        struct br_batch b = {T, toks + off, pos, seq, 0, NULL};
        int final = off + T == n_prompt;
        int32_t nr = df ? T : final ? 1 : 0;
        rc = br_dist_step(eng, comm, &b, df ? rows : rows + T - 1, nr, need_logits ? logits : NULL,
                          &next_tok, err);
        if (!rc && df && fwrite(logits, sizeof(float), (size_t)T * vocab, df) != (size_t)T * vocab)
            rc = br_err_set(err, BR_E_IO, "write to %s failed", a->dump);
        if (final && need_logits) last = logits + (size_t)(nr - 1) * vocab;
    }
    double t_prompt = br_now() - t1, t2 = br_now();
    int32_t p = n_prompt;
    long long produced = 0;
    for (long long i = 0; i < a->n_gen && !rc; i++) {
        int32_t next = next_tok;
        if (need_logits) {
            struct br_sample_result res;
            if ((rc = br_sample_full(&sp, last, vocab, hist, (size_t)n_hist, 0, (uint64_t)p, &res,
                                     err)))
                break;
            next = res.token;
        }
        hist[n_hist++] = next;
        produced++;
        if (a->print_ids || !tok) {
            printf("%s%d", i ? " " : "", next);
        } else {
            const char *piece;
            size_t len;
            if (br_detok_push(dt, next, &piece, &len) == BR_OK) fwrite(piece, 1, len, stdout);
        }
        fflush(stdout);
        if (!a->ignore_eos && tok && br_tok_is_eog(tok, next)) break;
        if (i + 1 == a->n_gen) break;
        pos[0] = p++;
        struct br_batch b = {1, &next, pos, seq, 0, NULL};
        rc = br_dist_step(eng, comm, &b, rows, 1, need_logits ? logits : NULL, &next_tok, err);
        last = logits;
        if (!rc && df && fwrite(logits, sizeof(float), (size_t)vocab, df) != (size_t)vocab)
            rc = br_err_set(err, BR_E_IO, "write to %s failed", a->dump);
    }
    if (dt && !a->print_ids) {
        const char *piece;
        size_t len;
        br_detok_flush(dt, &piece, &len);
        fwrite(piece, 1, len, stdout);
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
        fprintf(stderr,
                "bitrack run: prompt %d tokens in %.3f s (%.1f tok/s); generated %lld tokens "
                "in %.3f s (%.2f tok/s after the first); %lld threads x %d ranks\n",
                n_prompt, t_prompt, n_prompt / (t_prompt > 0 ? t_prompt : 1e-9), produced, t_gen,
                produced > 1 ? (double)(produced - 1) / (t_gen > 0 ? t_gen : 1e-9) : 0.0,
                a->threads, comm ? comm->world_size : 1);
done:
    br_detok_destroy(&dt);
    free(logits), free(pos), free(seq), free(rows), free(hist);
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
    struct br_tok *tok = NULL;
    int rank = 0;

    if (a.tokens_arg && (br_cli_int_list(a.tokens_arg, &toks, &n_prompt) || n_prompt == 0)) {
        exit_code =
            br_cli_usage_error("run", "bad --tokens '%s' (comma-separated ids)", a.tokens_arg);
        goto done;
    }
    if (a.tp * a.pp > 1 || br_comm_mpi_launched()) {
        if (br_comm_mpi_create(&argc, &argv, (int)a.tp, (int)a.pp, &comm, &err)) {
            fprintf(stderr, "bitrack run: %s\n", err.msg);
            goto done;
        }
        rank = comm->world_rank;
        /* where this machine's ranks and their threads outnumber its cores, a waiting rank
         * naps instead of polling, so that the ranks with work get the cores */
        if (br_comm_mpi_oversubscribed(comm, (int)a.threads)) {
            br_comm_mpi_watch(comm, 0, NULL, NULL);
            br_comm_mpi_set_spin(comm, BR_COMM_MPI_NAP_SPIN_S);
        }
    }
    double t0 = br_now();
    /* -m is a model file or a directory written by `bitrack shard` (its own layout) */
    struct stat mst;
    int is_dir = stat(a.model_path, &mst) == 0 && S_ISDIR(mst.st_mode);
    int layout = a.layout;
    if (layout == BR_LAYOUT_AUTO && !is_dir && a.tp > 1) {
        struct br_gguf *g = NULL;
        struct br_model_config cfg;
        if (br_gguf_open(a.model_path, &g, &err) || br_config_from_gguf(g, &cfg, &err)) {
            fprintf(stderr, "bitrack run: %s\n", err.msg);
            br_gguf_close(&g);
            goto done;
        }
        br_gguf_close(&g);
        layout = br_plan_choose_layout(&cfg, (int32_t)a.tp, 1, a.link_gbit, a.link_us);
    }
    if (is_dir && a.layout == BR_LAYOUT_AUTO) layout = -1;
    if (br_model_load_rank(a.model_path, (int)a.tp, (int)a.pp, rank, layout, &plan, &model, &err)) {
        fprintf(stderr, "bitrack run: rank %d: %s\n", rank, err.msg);
        goto done;
    }
    if (a.head_type && br_model_quantize_head_as(model, a.head_type, &err)) {
        fprintf(stderr, "bitrack run: rank %d: %s\n", rank, err.msg);
        goto done;
    }
    if (rank == 0 && a.verbose && plan) br_plan_describe(plan, 0, stderr);
    double t_load = br_now() - t0;
    if (br_pool_create((int)a.threads, &pool)) {
        fprintf(stderr, "bitrack run: cannot start %lld threads\n", a.threads);
        goto done;
    }
    if (a.prompt || rank == 0) { /* rank 0 also needs it to stop at end-of-generation tokens */
        /* the model's own tokenizer: for -p, and to print text */
        int trc = br_tok_from_gguf(model->gguf, &tok, &err);
        if (trc && a.prompt) {
            fprintf(stderr, "bitrack run: %s\n", err.msg);
            goto done;
        }
    }
    if (a.prompt) { /* every rank has the same arguments: all tokenize */
        size_t n = 0;
        if (br_tok_encode(tok, a.prompt, strlen(a.prompt), BR_TOK_ADD_BOS, &toks, &n, &err)) {
            fprintf(stderr, "bitrack run: %s\n", err.msg);
            goto done;
        }
        n_prompt = (int32_t)n;
        if (n_prompt == 0) {
            fprintf(stderr, "bitrack run: the prompt has no tokens\n");
            goto done;
        }
    }
    int32_t need = n_prompt + (int32_t)a.n_gen;
    long long n_ctx = a.n_ctx ? a.n_ctx : need;
    if (need > n_ctx || need > model->cfg.n_ctx) {
        fprintf(stderr,
                "bitrack run: %d prompt + %lld generated tokens exceed the context of %lld "
                "(model: %d)\n",
                n_prompt, a.n_gen, n_ctx, model->cfg.n_ctx);
        goto done;
    }
    struct br_engine_opts eo = {
        .n_ctx = (int32_t)n_ctx, .max_batch = 64, .pool = pool, .comm = comm};
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
        int rc = generate(&a, model, eng, comm, tok, toks, n_prompt, df, &err);
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
        fprintf(stderr,
                "rank %d stats: sent %llu bytes in %llu messages (%.0f bytes/token); plan "
                "predicts %llu bytes in %llu messages%s\n",
                rank, (unsigned long long)comm->stats.bytes_sent,
                (unsigned long long)comm->stats.messages,
                (double)comm->stats.bytes_sent / (double)tokens, (unsigned long long)pb,
                (unsigned long long)pm,
                pb == comm->stats.bytes_sent && pm == comm->stats.messages ? " (match)"
                                                                           : " (MISMATCH)");
        /* decode (one token per step) as the plan sees it */
        uint64_t db, dm, db2, dm2;
        br_plan_traffic(plan, rank, 1, 1, 1, 1, mb, 1, &db, &dm);
        br_plan_traffic(plan, rank, 2, 2, 2, 2, mb, 1, &db2, &dm2);
        struct br_coll k[BR_PLAN_MAX_COLLS];
        fprintf(stderr,
                "rank %d stats: %s residual, %d collectives per layer; per decoded token %llu "
                "bytes in %llu messages; emulated link delay %g us\n",
                rank, br_layout_name(plan->layout), br_plan_layer_colls(plan, 1, k),
                (unsigned long long)(db2 - db), (unsigned long long)(dm2 - dm),
                br_comm_mpi_link_delay_us(comm));
    }
    exit_code = 0;
done:
    if (df && fclose(df) != 0 && exit_code == 0) {
        fprintf(stderr, "bitrack run: closing %s failed\n", a.dump);
        exit_code = 1;
    }
    free(toks);
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
