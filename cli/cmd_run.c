/*
 * `bitrack run`: generation on one machine, without mpirun.
 *
 *   bitrack run -m MODEL (-p TEXT | --tokens 1,2,3) -n N [--temp T] [--seed S]
 *               [--dump-logits FILE] [-t THREADS] [-v]
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

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "kernels/pool.h"
#include "worker/engine.h"
#include "worker/model.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: bitrack run -m MODEL (-p TEXT | --tokens 1,2,3) [-n N] [--temp T] "
               "[--seed S]\n"
               "                  [--dump-logits FILE] [-t THREADS] [-c CTX] [-v]\n");
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int br_cmd_run(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL, *tokens_arg = NULL, *dump = NULL;
    long long n_gen = 16, threads = 1, n_ctx = 0, seed = 0;
    double temp = 0.0;
    int verbose = 0;
    enum { O_TOKENS = 256, O_TEMP, O_DUMP, O_SEED };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"prompt", required_argument, 0, 'p'},
        {"tokens", required_argument, 0, O_TOKENS}, {"n-predict", required_argument, 0, 'n'},
        {"temp", required_argument, 0, O_TEMP},   {"seed", required_argument, 0, O_SEED},
        {"dump-logits", required_argument, 0, O_DUMP}, {"threads", required_argument, 0, 't'},
        {"ctx", required_argument, 0, 'c'},       {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:n:t:c:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'p': prompt = optarg; break;
        case O_TOKENS: tokens_arg = optarg; break;
        case 'n':
            if (br_cli_int(optarg, 1, 1 << 24, &n_gen)) return br_cli_usage_error("run", "bad -n");
            break;
        case 't':
            if (br_cli_int(optarg, 1, 1024, &threads)) return br_cli_usage_error("run", "bad -t");
            break;
        case 'c':
            if (br_cli_int(optarg, 1, 1 << 22, &n_ctx)) return br_cli_usage_error("run", "bad -c");
            break;
        case O_TEMP: {
            char *end;
            temp = strtod(optarg, &end);
            if (*end || !(temp >= 0.0) || temp > 100.0)
                return br_cli_usage_error("run", "bad --temp '%s'", optarg);
            break;
        }
        case O_SEED:
            if (br_cli_int(optarg, 0, INT64_MAX, &seed)) return br_cli_usage_error("run", "bad --seed");
            break;
        case O_DUMP: dump = optarg; break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!model_path) return br_cli_usage_error("run", "a model is required (-m MODEL.gguf)");
    if (!!prompt == !!tokens_arg)
        return br_cli_usage_error("run", "give exactly one of -p TEXT or --tokens 1,2,3");

    int exit_code = 1;
    struct br_err err = {{0}};
    struct br_model *model = NULL;
    struct br_pool *pool = NULL;
    struct br_engine *eng = NULL;
    int32_t *toks = NULL, n_prompt = 0;
    float *logits = NULL;
    FILE *df = NULL;

    if (tokens_arg) {
        if (br_cli_int_list(tokens_arg, &toks, &n_prompt) || n_prompt == 0) {
            exit_code = br_cli_usage_error("run", "bad --tokens '%s' (comma-separated ids)",
                                           tokens_arg);
            goto done;
        }
    } else {
        fprintf(stderr, "bitrack run: -p needs the tokenizer, which this build lacks; use "
                        "--tokens\n");
        goto done;
    }
    double t0 = br_now();
    if (br_model_load(model_path, &model, &err)) {
        fprintf(stderr, "bitrack run: %s\n", err.msg);
        goto done;
    }
    double t_load = br_now() - t0;
    if (br_pool_create((int)threads, &pool)) {
        fprintf(stderr, "bitrack run: cannot start %lld threads\n", threads);
        goto done;
    }
    int32_t need = n_prompt + (int32_t)n_gen;
    if (n_ctx == 0) n_ctx = need;
    if (need > n_ctx || need > model->cfg.n_ctx) {
        fprintf(stderr, "bitrack run: %d prompt + %lld generated tokens exceed the context of %lld "
                        "(model: %d)\n",
                n_prompt, n_gen, n_ctx, model->cfg.n_ctx);
        goto done;
    }
    struct br_engine_opts eo = {.n_ctx = (int32_t)n_ctx, .max_batch = 64, .pool = pool};
    if (br_engine_create(model, &eo, &eng, &err)) {
        fprintf(stderr, "bitrack run: %s\n", err.msg);
        goto done;
    }
    int32_t vocab = model->cfg.n_vocab;
    size_t rows = dump ? (size_t)n_prompt : 1;
    logits = malloc(rows * (size_t)vocab * sizeof *logits);
    if (!logits) {
        fprintf(stderr, "bitrack run: out of memory for logits\n");
        goto done;
    }
    if (dump && !(df = fopen(dump, "wb"))) {
        fprintf(stderr, "bitrack run: cannot write %s\n", dump);
        goto done;
    }
    (void)seed;
    (void)temp;
    double t1 = br_now();
    if (br_engine_eval(eng, toks, n_prompt, 0, logits, dump ? BR_LOGITS_ALL : BR_LOGITS_LAST,
                       &err)) {
        fprintf(stderr, "bitrack run: %s\n", err.msg);
        goto done;
    }
    double t_prompt = br_now() - t1;
    const float *last = logits + (rows - 1) * (size_t)vocab;
    if (df && fwrite(logits, sizeof(float), rows * (size_t)vocab, df) != rows * (size_t)vocab) {
        fprintf(stderr, "bitrack run: write to %s failed\n", dump);
        goto done;
    }
    double t2 = br_now();
    int32_t pos = n_prompt;
    for (long long i = 0; i < n_gen; i++) {
        int32_t next = argmax(last, vocab);
        printf("%s%d", i ? " " : "", next);
        fflush(stdout);
        if (i + 1 == n_gen) break;
        if (br_engine_eval(eng, &next, 1, pos++, logits, BR_LOGITS_LAST, &err)) {
            fprintf(stderr, "\nbitrack run: %s\n", err.msg);
            goto done;
        }
        last = logits;
        if (df && fwrite(logits, sizeof(float), (size_t)vocab, df) != (size_t)vocab) {
            fprintf(stderr, "bitrack run: write to %s failed\n", dump);
            goto done;
        }
    }
    printf("\n");
    double t_gen = br_now() - t2;
    if (verbose) {
        const float *rms = br_engine_layer_rms(eng);
        fprintf(stderr, "residual rms by layer:");
        for (int l = 0; l <= model->cfg.n_layer; l++) fprintf(stderr, " %.3g", rms[l]);
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "bitrack run: load %.2f s; prompt %d tokens in %.3f s (%.1f tok/s); "
                    "generated %lld tokens in %.3f s (%.1f tok/s); %lld threads\n",
            t_load, n_prompt, t_prompt, n_prompt / (t_prompt > 0 ? t_prompt : 1e-9), n_gen,
            t_gen, n_gen > 1 ? (double)(n_gen - 1) / (t_gen > 0 ? t_gen : 1e-9) : 0.0, threads);
    exit_code = 0;
done:
    if (df && fclose(df) != 0 && exit_code == 0) {
        fprintf(stderr, "bitrack run: closing %s failed\n", dump);
        exit_code = 1;
    }
    free(logits);
    free(toks);
    br_engine_destroy(&eng);
    br_pool_destroy(&pool);
    br_model_destroy(&model);
    return exit_code;
}
