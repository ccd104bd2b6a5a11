/*
 * `bitrack run`: generation on one machine, without mpirun.
 *
 *   bitrack run -m MODEL (-p TEXT | -f FILE | --tokens 1,2,3) [-n N] [--temp T] [-s S]
 *               [--dump-logits FILE] [-t THREADS] [-c CTX] [-v]     (bitrack help run)
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "coordinator/rank.h"
#include "worker/comm_mpi.h"
#include "worker/sample.h"
#include "worker/step.h"

struct run_args {
    const char *model_path, *prompt, *prompt_file, *tokens_arg, *dump, *head;
    long long n_gen, threads, n_ctx, seed, tp, pp, top_k;
    double temp, top_p, min_p, repeat_penalty;
    int verbose, stats, print_ids, ignore_eos;
    uint32_t head_type;
    char *file_text; /* -f's contents (owned) */
    const char *layout_s, *link_s;
    int layout; /* enum br_layout, or BR_LAYOUT_AUTO */
    double link_gbit, link_us;
};

/* Reads a whole file (NUL-terminated, malloc'd); NULL with errno on failure. */
static char *read_file(const char *path)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) free(buf);
            buf = nb, cap *= 2;
        }
    }
    if (buf) buf[n] = '\0';
    if (f != stdin) fclose(f);
    return buf;
}

static int parse(int argc, char **argv, struct run_args *a)
{
    memset(a, 0, sizeof *a);
    /* sampling and length defaults are the protocol's (proto/PROTOCOL.md) */
    a->n_gen = BR_CLI_DEFAULT_MAX_TOKENS, a->tp = 1, a->pp = 1, a->seed = -1;
    a->temp = BR_CLI_DEFAULT_TEMP, a->top_k = BR_CLI_DEFAULT_TOP_K;
    a->top_p = BR_CLI_DEFAULT_TOP_P, a->min_p = BR_CLI_DEFAULT_MIN_P, a->repeat_penalty = 1.0;
    const struct br_opt opts[] = {
        BR_O_STR('m', "model", &a->model_path, "FILE", "model file, or a directory from `shard`"),
        BR_O_STR('p', "prompt", &a->prompt, "TEXT", "the prompt"),
        BR_O_STR('f', "file", &a->prompt_file, "FILE", "read the prompt from FILE (- for stdin)"),
        BR_O_STR(0, "tokens", &a->tokens_arg, "IDS", "the prompt as token ids 1,2,3 (no BOS)"),
        BR_O_INT('n', "n-predict", &a->n_gen, -1, 1 << 24, "N",
                 "tokens to generate; -1: until end of text or context"),
        BR_O_INT('t', "threads", &a->threads, 0, 1024, "N",
                 "threads per rank; 0: the available cores, shared by this machine's ranks"),
        {.short_name = 'c',
         .long_name = "ctx-size",
         .alias = "ctx",
         .kind = BR_OPT_INT,
         .dest = &a->n_ctx,
         .min = 0,
         .max = 1 << 22,
         .arg = "N",
         .help = "context length; 0: prompt + N (with -n -1: the model's)"},
        BR_O_FLOAT(0, "temp", &a->temp, 0, 100, "T", "temperature; 0: greedy"),
        BR_O_INT(0, "top-k", &a->top_k, 0, 1 << 20, "K", "keep the K likeliest tokens; 0: off"),
        BR_O_FLOAT(0, "top-p", &a->top_p, 0, 1, "P", "nucleus sampling; 1: off"),
        BR_O_FLOAT(0, "min-p", &a->min_p, 0, 1, "P", "drop tokens below P x the top one's; 0: off"),
        BR_O_FLOAT(0, "repeat-penalty", &a->repeat_penalty, 1e-6, 10, "R",
                   "penalty for the last 64 tokens; 1: off"),
        BR_O_INT('s', "seed", &a->seed, -1, INT64_MAX, "S", "sampling seed; -1: random"),
        BR_O_FLAG(0, "ids", &a->print_ids, "print token ids instead of text"),
        BR_O_FLAG(0, "ignore-eos", &a->ignore_eos, "keep generating after end-of-text"),
        BR_O_STR(0, "dump-logits", &a->dump, "FILE",
                 "write the f32 logits of every evaluated position"),
        BR_O_INT(0, "tp", &a->tp, 1, 4096, "T", "tensor-parallel ranks (under mpirun)"),
        BR_O_INT(0, "pp", &a->pp, 1, 4096, "P", "pipeline stages (under mpirun)"),
        BR_O_FLAG(0, "stats", &a->stats, "print each rank's traffic against the plan's"),
        BR_O_CHOICE(0, "head", &a->head, "q8_0|q6_k", "re-encode the output head at load"),
        BR_O_CHOICE(0, "layout", &a->layout_s, "replicated|sharded|auto",
                    "how a TP group holds the residual (sharding/plan.h); auto (the default): "
                    "the one whose collectives cost less for one token per step over --link; a "
                    "shard directory has its own"),
        BR_O_STR(0, "link", &a->link_s, "GBIT:US",
                 "the link --layout auto assumes: Gbit/s and one-way us (25:25)"),
        BR_O_FLAG('v', "verbose", &a->verbose, "plan, load time and per-layer residual norms"),
    };
    const struct br_cmd_spec spec = {
        "run", NULL,
        "Generates from a prompt on this machine, or under mpirun with --tp T --pp P (the\n"
        "logits are bit-identical for every layout). Give the prompt with -p, -f or --tokens.",
        opts, sizeof opts / sizeof *opts};
    int first, rc = br_opts_parse(&spec, argc, argv, &first);
    if (rc) return rc;
    if (first < argc)
        return br_cli_usage_error("run", "unexpected argument '%s' (the prompt goes after -p)",
                                  argv[first]);
    if (a->n_gen == 0)
        return br_cli_usage_error("run", "-n: 0 tokens; give at least 1, or -1 for until end of "
                                         "text or context");
    if (a->head) a->head_type = br_cli_head_type(a->head);
    a->layout = a->layout_s ? br_layout_parse(a->layout_s) : BR_LAYOUT_AUTO;
    a->link_gbit = 25, a->link_us = 25;
    if (a->link_s) {
        int k = 0;
        if (sscanf(a->link_s, "%lf:%lf%n", &a->link_gbit, &a->link_us, &k) != 2 || a->link_s[k] ||
            !(a->link_gbit > 0 && a->link_gbit < 1e6) || !(a->link_us >= 0 && a->link_us < 1e6))
            return br_cli_usage_error("run", "bad --link '%s' (GBIT:US, e.g. 25:25)", a->link_s);
    }
    if (!a->model_path) return br_cli_usage_error("run", "a model is required (-m MODEL.gguf)");
    if (!!a->prompt + !!a->tokens_arg + !!a->prompt_file != 1)
        return br_cli_usage_error("run", "give exactly one of -p TEXT, -f FILE or --tokens 1,2,3");
    if (a->prompt_file) {
        if (!(a->file_text = read_file(a->prompt_file))) {
            fprintf(stderr, "bitrack run: -f: cannot read %s\n", a->prompt_file);
            return 1;
        }
        a->prompt = a->file_text;
    }
    return 0;
}

/* Rank 0's generation: prompt in batches, then one token at a time. Greedy steps bring
 * back only each vocabulary slice's best token; sampling brings back the logits and draws
 * with the counter RNG keyed by (seed, 0, position), as the server does. */
static int generate(const struct run_args *a, const struct br_rank *r, const int32_t *toks,
                    int32_t n_prompt, FILE *df, struct br_err *err)
{
    const struct br_model *model = r->model;
    const struct br_comm *comm = r->comm;
    const struct br_tok *tok = r->tok;
    struct br_cluster *cl = r->cluster;
    int32_t vocab = model->cfg.n_vocab, mb = r->max_batch;
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
        rc = br_cluster_step(cl, &b, df ? rows : rows + T - 1, nr, need_logits ? logits : NULL,
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
        rc = br_cluster_step(cl, &b, rows, 1, need_logits ? logits : NULL, &next_tok, err);
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
        const float *rms = br_engine_layer_rms(r->engine);
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

/* Rank opening, after the model and the tokenizer: the prompt's tokens (every rank has the
 * same arguments: all tokenize), how many to generate, and the context they need. */
struct run_plan {
    struct run_args *a;
    int32_t *toks, n_prompt; /* (n_prompt,) owned */
};

static int run_size(void *ctx, struct br_rank *r, struct br_err *err)
{
    struct run_plan *p = ctx;
    struct run_args *a = p->a;
    int32_t model_ctx = r->model->cfg.n_ctx;
    if (a->prompt) {
        size_t n = 0;
        int rc =
            br_tok_encode(r->tok, a->prompt, strlen(a->prompt), BR_TOK_ADD_BOS, &p->toks, &n, err);
        if (rc) return rc;
        if ((p->n_prompt = (int32_t)n) == 0)
            return br_err_set(err, BR_E_INVALID, "the prompt has no tokens");
    }
    if (a->n_gen < 0) { /* until end of text or the context is full */
        long long ctx_n = a->n_ctx && a->n_ctx < model_ctx ? a->n_ctx : model_ctx;
        if ((a->n_gen = ctx_n - p->n_prompt) < 1)
            return br_err_set(err, BR_E_TOO_LONG, "the prompt's %d tokens fill the context of %lld",
                              p->n_prompt, ctx_n);
    }
    int32_t need = p->n_prompt + (int32_t)a->n_gen;
    long long n_ctx = a->n_ctx ? a->n_ctx : need;
    if (need > n_ctx || need > model_ctx)
        return br_err_set(
            err, BR_E_TOO_LONG,
            "%d prompt + %lld generated tokens exceed the context of %lld (model: %d)", p->n_prompt,
            a->n_gen, n_ctx, model_ctx);
    r->n_ctx = (int32_t)n_ctx;
    return BR_OK;
}

int br_cmd_run(int argc, char **argv)
{
    struct run_args a;
    int prc = parse(argc, argv, &a);
    if (prc) {
        free(a.file_text);
        return prc == BR_OPTS_HELP ? 0 : prc;
    }

    int exit_code = 1;
    struct br_err err = {{0}};
    struct br_rank *r = NULL;
    struct run_plan rp = {&a, NULL, 0};
    FILE *df = NULL;

    if (a.tokens_arg &&
        (br_cli_int_list(a.tokens_arg, &rp.toks, &rp.n_prompt) || rp.n_prompt == 0)) {
        exit_code =
            br_cli_usage_error("run", "bad --tokens '%s' (comma-separated ids)", a.tokens_arg);
        goto done;
    }
    /* -m is a model file or a directory written by `bitrack shard` (its own layout); the
     * tokenizer is for -p, to print text and to stop at end-of-generation tokens */
    struct br_rank_opts ro = {.model_path = a.model_path, .argc = &argc, .argv = &argv};
    ro.tp = (int)a.tp, ro.pp = (int)a.pp, ro.threads = (int)a.threads, ro.max_batch = 64;
    ro.layout = a.layout, ro.link_gbit = a.link_gbit, ro.link_us = a.link_us;
    ro.head_type = a.head_type, ro.describe = a.verbose, ro.on_model = run_size, ro.hook_ctx = &rp;
    ro.tok = a.prompt ? BR_RANK_TOK_REQUIRED : BR_RANK_TOK_OPTIONAL;
    if (br_rank_open(&ro, &r, &err)) {
        fprintf(stderr, "bitrack run: %s\n", err.msg);
        goto done;
    }
    a.threads = r->threads;
    if (a.seed < 0) a.seed = (long long)br_cli_random_seed();
    if (r->rank != 0) {
        if (br_step_follow(r->engine, r->comm, &err)) {
            fprintf(stderr, "bitrack run: rank %d: %s\n", r->rank, err.msg);
            goto done;
        }
    } else {
        if (a.dump && !(df = fopen(a.dump, "wb"))) {
            fprintf(stderr, "bitrack run: cannot write %s\n", a.dump);
            br_cluster_stop(r->cluster, &err);
            goto done;
        }
        if (a.verbose) fprintf(stderr, "bitrack run: loaded in %.2f s\n", r->t_load);
        int rc = generate(&a, r, rp.toks, rp.n_prompt, df, &err);
        br_cluster_stop(r->cluster, NULL);
        if (rc) {
            fprintf(stderr, "bitrack run: %s\n", err.msg);
            goto done;
        }
    }
    if (a.stats && r->comm) {
        /* what this run evaluated, to compare with the plan's prediction */
        int32_t mb = r->max_batch;
        uint64_t psteps = (uint64_t)((rp.n_prompt + mb - 1) / mb);
        uint64_t steps = psteps + (uint64_t)(a.n_gen - 1);
        uint64_t tokens = (uint64_t)rp.n_prompt + (uint64_t)(a.n_gen - 1);
        uint64_t rows = (a.dump ? (uint64_t)rp.n_prompt : 1) + (uint64_t)(a.n_gen - 1);
        uint64_t row_steps = (a.dump ? psteps : 1) + (uint64_t)(a.n_gen - 1);
        uint64_t pb, pm;
        br_plan_traffic(r->plan, r->rank, tokens, steps, rows, row_steps, mb, a.dump == NULL, &pb,
                        &pm);
        fprintf(stderr,
                "rank %d stats: sent %llu bytes in %llu messages (%.0f bytes/token); plan "
                "predicts %llu bytes in %llu messages%s\n",
                r->rank, (unsigned long long)r->comm->stats.bytes_sent,
                (unsigned long long)r->comm->stats.messages,
                (double)r->comm->stats.bytes_sent / (double)tokens, (unsigned long long)pb,
                (unsigned long long)pm,
                pb == r->comm->stats.bytes_sent && pm == r->comm->stats.messages ? " (match)"
                                                                                 : " (MISMATCH)");
        /* decode (one token per step) as the plan sees it */
        uint64_t db, dm, db2, dm2;
        br_plan_traffic(r->plan, r->rank, 1, 1, 1, 1, mb, 1, &db, &dm);
        br_plan_traffic(r->plan, r->rank, 2, 2, 2, 2, mb, 1, &db2, &dm2);
        struct br_coll k[BR_PLAN_MAX_COLLS];
        fprintf(stderr,
                "rank %d stats: %s residual, %d collectives per layer; per decoded token %llu "
                "bytes in %llu messages; emulated link delay %g us\n",
                r->rank, br_layout_name(r->plan->layout), br_plan_layer_colls(r->plan, 1, k),
                (unsigned long long)(db2 - db), (unsigned long long)(dm2 - dm),
                br_comm_mpi_link_delay_us(r->comm));
    }
    exit_code = 0;
done:
    if (df && fclose(df) != 0 && exit_code == 0) {
        fprintf(stderr, "bitrack run: closing %s failed\n", a.dump);
        exit_code = 1;
    }
    free(rp.toks);
    free(a.file_text);
    if (exit_code) br_rank_abort(r, exit_code);
    br_rank_close(&r);
    return exit_code;
}
