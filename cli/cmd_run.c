/*
 * `bitrack run`: generation on one machine, without mpirun.
 *
 *   bitrack run -m MODEL (-p TEXT | -f FILE | --tokens 1,2,3) [-n N] [--temp T] [-s S]
 *               [--dump-logits FILE] [-t THREADS] [-c CTX] [-v]     (bitrack help run)
 *   mpirun -np T*P bitrack run ... --tp T --pp P [--stats]
 *
 * Under mpirun every rank loads only its part of the plan; rank 0 runs the prompt as one
 * job of the scheduler (coordinator/sched.h), as the server runs a request, prints the
 * output and writes the logits. Results are bit-identical to one process.
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
#include "coordinator/sched.h"
#include "worker/comm_mpi.h"
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
        BR_CLI_LAYOUT_OPTS(&a->layout_s, &a->link_s),
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
    if (br_cli_layout_link("run", a->layout_s, a->link_s, &a->layout, &a->link_gbit, &a->link_us))
        return 2;
    if (!a->model_path) return br_cli_usage_error("run", "a model is required (-m MODEL.gguf)");
    if (!!a->prompt + !!a->tokens_arg + !!a->prompt_file != 1)
        return br_cli_usage_error("run", "give exactly one of -p TEXT, -f FILE or --tokens 1,2,3");
    if (a->prompt_file) {
        if (!(a->file_text = br_cli_read_file(a->prompt_file, NULL))) {
            fprintf(stderr, "bitrack run: -f: cannot read %s\n", a->prompt_file);
            return 1;
        }
        a->prompt = a->file_text;
    }
    return 0;
}

/* What rank 0 prints as the scheduler's events come: the text (or the ids) as it streams,
 * a newline at the end, and what the summary needs. */
struct run_out {
    bool ids;                        /* print token ids (--ids, or no tokenizer) */
    long long produced;              /* tokens generated */
    double t_first;                  /* br_now() at the first token */
    char err[sizeof(struct br_err)]; /* the job's error, if it failed */
};

static void run_emit(void *ctx, uint64_t ticket, struct br_event *e)
{
    struct run_out *o = ctx;
    (void)ticket;
    if (e->kind == BR_EVENT_TOKEN) {
        if (o->t_first == 0) o->t_first = br_now();
        if (!o->ids) fwrite(e->text, 1, e->text_len, stdout);
        if (o->ids && e->token >= 0) printf("%s%d", o->produced++ ? " " : "", e->token);
        fflush(stdout);
    } else if (e->kind == BR_EVENT_DONE) {
        printf("\n");
        o->produced = e->usage.completion_tokens;
    } else if (e->kind == BR_EVENT_ERROR) {
        snprintf(o->err, sizeof o->err, "%s", e->message ? e->message : "out of memory");
    }
    br_event_free_list(e);
}

/* --dump-logits: the cluster's executor asked for the logits of every token of each step
 * (one in flight), which are written in order; the scheduler gets the rows it asked for,
 * a TOP1 step's as the highest logit (ties to the lowest id, as the ranks choose). */
struct dump_exec {
    struct br_executor in;
    FILE *f;
    const char *path;
    float *all;   /* (max_batch, vocab) */
    int32_t *idx; /* (2, max_batch): 0, 1, 2...; the rows the scheduler asked for */
    int32_t n;    /* the step in flight's tokens */
};

static int dump_issue(void *ctx, void *step, const struct br_batch *b, const int32_t *rows,
                      int32_t n_rows, enum br_sched_mode mode,
                      const struct br_sample_params *const *sp, const uint64_t *rseq,
                      const uint64_t *rpos, struct br_err *err)
{
    struct dump_exec *d = ctx;
    (void)mode, (void)sp, (void)rseq, (void)rpos;
    d->n = b->n;
    memcpy(d->idx + d->in.max_batch, rows, (size_t)n_rows * sizeof *rows);
    return d->in.issue(d->in.ctx, step, b, d->idx, b->n, BR_SCHED_FULL, NULL, NULL, NULL, err);
}

static int dump_collect(void *ctx, void *step, int32_t n_rows, enum br_sched_mode mode,
                        float *logits, int32_t *top1, struct br_sample_result *res, int *row_rc,
                        struct br_err *err)
{
    struct dump_exec *d = ctx;
    size_t v = (size_t)d->in.vocab;
    int rc = d->in.collect(d->in.ctx, step, d->n, BR_SCHED_FULL, d->all, NULL, res, row_rc, err);
    if (!rc && fwrite(d->all, sizeof(float), (size_t)d->n * v, d->f) != (size_t)d->n * v)
        rc = br_err_set(err, BR_E_IO, "write to %s failed", d->path);
    for (int32_t r = 0, best = 0; r < n_rows && !rc; r++, best = 0) {
        const float *x = d->all + (size_t)d->idx[d->in.max_batch + r] * v;
        if (mode == BR_SCHED_FULL) memcpy(logits + (size_t)r * v, x, v * sizeof *x);
        for (size_t t = 1; mode == BR_SCHED_TOP1 && t < v; t++)
            best = x[t] > x[best] ? (int32_t)t : best;
        if (mode == BR_SCHED_TOP1) top1[r] = best;
    }
    return rc;
}

/* Rank 0's generation: one job for the scheduler (coordinator/sched.h), as the server
 * runs a request: the prompt in chunks of the batch, then one token per step. Greedy
 * steps bring back only each vocabulary slice's best token; sampling draws with the
 * counter RNG keyed by (seed, 0, position), on the last stage where it can. */
static int generate(const struct run_args *a, const struct br_rank *r, int32_t **toks,
                    int32_t n_prompt, FILE *df, struct br_err *err)
{
    struct run_out out = {.ids = a->print_ids || !r->tok};
    struct br_sched_sink sink = {&out, run_emit};
    struct br_sched_opts so = {.max_tokens_cap = (int32_t)a->n_gen, .micro_batches = df ? 1 : 0};
    struct dump_exec d = {.f = df, .path = a->dump};
    struct br_executor ex;
    br_cluster_executor(r->cluster, &ex);
    struct br_sched *s = NULL;
    struct br_sched_job_in in = {.ticket = 1, .n_prompt = n_prompt, .ignore_eos = a->ignore_eos};
    int rc = BR_OK;
    if (df) { /* every row comes back whole: nothing is sampled on the last stage */
        size_t mb = (size_t)ex.max_batch;
        d.in = ex, d.all = malloc(mb * (size_t)ex.vocab * sizeof *d.all);
        d.idx = malloc(2 * mb * sizeof *d.idx);
        for (int32_t i = 0; d.idx && i < ex.max_batch; i++) d.idx[i] = i;
        ex.ctx = &d, ex.can_sample = NULL, ex.issue = dump_issue, ex.collect = dump_collect;
        if (!d.all || !d.idx) rc = br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    if (!rc) rc = br_sched_create(&so, &ex, &sink, r->tok, &s, err);
    double t0 = br_now();
    if (!rc) {
        in.prompt = *toks, *toks = NULL; /* moves to the job */
        br_req_init(&in.req);
        in.req.type = BR_REQ_GENERATE, in.req.stream = true, in.req.max_tokens = (int32_t)a->n_gen;
        struct br_req_sampling *q = &in.req.sampling;
        q->temperature = (float)a->temp, q->top_k = (int32_t)a->top_k, q->top_p = (float)a->top_p;
        q->min_p = (float)a->min_p, q->repeat_penalty = (float)a->repeat_penalty;
        q->has_seed = true, q->seed = (uint64_t)a->seed;
        in.t_arrival = t0;
        br_sched_submit(s, &in);
    }
    while (!rc && br_sched_busy(s)) rc = br_sched_step(s, err);
    if (s) br_sched_finish_all(s, !rc, BR_PROTO_UNAVAILABLE, err->msg);
    if (!rc && out.err[0]) rc = br_err_set(err, BR_E_INVALID, "%s", out.err);
    double t1 = out.t_first > 0 ? out.t_first : br_now(), t_prompt = t1 - t0, t_gen = br_now() - t1;
    if (!rc && a->verbose && !r->comm) {
        const float *rms = br_engine_layer_rms(r->engine);
        fprintf(stderr, "residual rms by layer:");
        for (int l = 0; l <= r->model->cfg.n_layer; l++) fprintf(stderr, " %.3g", rms[l]);
        fprintf(stderr, "\n");
    }
    if (!rc)
        fprintf(stderr,
                "bitrack run: prompt %d tokens in %.3f s (%.1f tok/s); generated %lld tokens "
                "in %.3f s (%.2f tok/s after the first); %lld threads x %d ranks\n",
                n_prompt, t_prompt, n_prompt / (t_prompt > 0 ? t_prompt : 1e-9), out.produced,
                t_gen,
                out.produced > 1 ? (double)(out.produced - 1) / (t_gen > 0 ? t_gen : 1e-9) : 0.0,
                a->threads, r->comm ? r->comm->world_size : 1);
    br_sched_destroy(&s);
    free(d.all), free(d.idx);
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
        int rc = generate(&a, r, &rp.toks, rp.n_prompt, df, &err);
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
