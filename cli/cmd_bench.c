/*
 * `bitrack bench`: benchmarks. The first word picks one:
 *   bitrack bench [serve] --server ADDR ...   load-test a running `bitrack serve`
 *                                             (bench/loadgen.h, docs/BENCH.md)
 *   bitrack bench kernels|model ...           built elsewhere (see `subcommands` below)
 *
 * Other benchmarks plug in through the table below: a subcommand whose entry point is
 * declared weak and not linked in answers "not built", so adding cli/cmd_bench_<x>.c that
 * defines br_cmd_bench_<x> is all it takes to enable it. The definition must sit in an
 * object linked into the executable (the cli/ sources are): a weak reference does not pull
 * a member out of a static library, so a definition only in bitrack_core stays unseen.
 *
 * Exit status of the serving benchmark: 0 when every measured request succeeded, 1 when
 * some failed or the run could not happen (reports are still written), 2 for usage errors.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "bench/loadgen.h"
#include "cli/opts.h"
#include "proto/client.h"

/* Entry points of other benchmarks; NULL at run time until a file defines them. */
int br_cmd_bench_kernels(int argc, char **argv);
int br_cmd_bench_model(int argc, char **argv);
int br_cmd_bench_scale(int argc, char **argv);

static int bench_serve(int argc, char **argv);

struct subcommand {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: bitrack bench [serve] --server ADDR [options]\n"
        "       bitrack bench [serve] --openai URL [--api-key K] [--chat] [--model M] [options]\n"
        "       bitrack bench kernels|model|scale [options]\n"
        "serving benchmark options:\n"
        "  --server ADDR          server endpoint (default " BR_CLIENT_DEFAULT_ADDR ")\n"
        "  --concurrency N        closed loop: N requests always in flight (default 1)\n"
        "  --rate R               open loop: Poisson arrivals at R requests/s\n"
        "  --max-concurrency N    open loop: at most N in flight (default min(requests, %d))\n"
        "  --requests N           measured requests (default 100)\n"
        "  --warmup W             requests sent first and not counted (default 0)\n"
        "  --seed S               seed for prompts, arrivals and sampling (default 0)\n"
        "  --dataset FILE.jsonl   prompts: {\"prompt\": \"...\"} or {\"tokens\": [...]},\n"
        "                         optional \"max_tokens\" (default --output-len)\n"
        "  --input-len L          random prompts of L token ids (default 128)\n"
        "  --output-len O         completion tokens asked for (default 64)\n"
        "  --len-spread F         lengths uniform in [L*(1-F), L*(1+F)] (default 0)\n"
        "  --vocab V              vocabulary size for random ids (default: ask the server)\n"
        "  --temp T               sampling temperature (default 0, greedy)\n"
        "  --ban-tokens 2,...     token ids the server must not sample (fixed output length)\n"
        "  --timeout MS           fail a request after MS ms of server silence (default 30000)\n"
        "  --openai URL           an OpenAI-compatible server instead (http://host:port:\n"
        "                         bitrack serve --http, llama-server, vLLM); streams\n"
        "                         /v1/completions (token-id prompts)\n"
        "  --chat                 with --openai: /v1/chat/completions (prompts as text)\n"
        "  --api-key K            with --openai: sent as Authorization: Bearer K\n"
        "  --model M              with --openai: the model name to send\n"
        "  --curve-server-key F   the server's CurveZMQ public key (with --curve-key)\n"
        "  --curve-key F          this client's CurveZMQ secret key (bitrack keygen)\n"
        "  --sweep 1,2,4,8        run at each concurrency; --rate-sweep 1,2.5,5 for rates\n"
        "  --plot FILE.svg        sweep plot: output tokens/s vs latency p50/p90\n"
        "  --plot-y tpot|e2e|ttft latency on the plot's y axis (default tpot)\n"
        "  --json FILE            write config, aggregates and per-request records\n"
        "  --no-progress          no progress line (it is drawn only on a terminal anyway)\n",
        BR_LOADGEN_MAX_SLOTS);
}

static const struct subcommand subcommands[] = {
    {"serve", bench_serve, "load-test a running `bitrack serve`"},
    {"kernels", br_cmd_bench_kernels, "kernel micro-benchmarks"},
    {"model", br_cmd_bench_model, "single-process model throughput"},
    {"scale", br_cmd_bench_scale, "one rank's step and the rack projection"},
};

int br_cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && argv[1][0] != '-') {
        for (size_t i = 0; i < sizeof subcommands / sizeof *subcommands; i++) {
            if (strcmp(argv[1], subcommands[i].name)) continue;
            if (!subcommands[i].fn) {
                fprintf(stderr, "bitrack bench %s: not built into this binary\n", argv[1]);
                return 2;
            }
            return subcommands[i].fn(argc - 1, argv + 1);
        }
        return br_cli_usage_error("bench", "unknown benchmark '%s' (serve, kernels, model, scale)",
                                  argv[1]);
    }
    return bench_serve(argc, argv);
}

/* ---- the serving benchmark ------------------------------------------------------------- */

/* Parses "1,2.5,4" into a malloc'd array of positive numbers; returns 0 on success. */
static int parse_double_list(const char *s, double **out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    double *v = malloc(cap * sizeof *v);
    if (!v) return -1;
    size_t k = 0;
    const char *p = s;
    for (;;) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || !(x > 0.0) || (*end && *end != ',')) {
            free(v);
            return -1;
        }
        v[k++] = x;
        if (!*end) break;
        p = end + 1;
    }
    *out = v;
    *n = k;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double x = strtod(s, &end);
    if (end == s || *end || !(x >= lo && x <= hi)) return -1;
    *out = x;
    return 0;
}

/* The vocabulary size for random prompts: the server's `info` when it names one, else
 * the range in the server's answer to an out-of-range token id (PROTOCOL.md documents the
 * message "tokens[0]: must be an integer in [0, N], got ..."). Also reports the context
 * length when info has it (0 otherwise). */
static int ask_vocab(const char *server, int timeout_ms, const struct br_client_curve *curve,
                     int32_t *vocab, int64_t *ctx, struct br_err *err)
{
    struct br_client *cl = NULL;
    struct br_resp info = {0};
    *vocab = 0;
    *ctx = 0;
    int rc = br_client_connect_curve(server, timeout_ms, curve, &cl, err);
    if (rc) return rc;
    rc = br_client_info(cl, &info, err);
    if (rc) {
        br_err_prefix(err, rc, "info request to %s", server ? server : BR_CLIENT_DEFAULT_ADDR);
        goto done;
    }
    for (uint32_t i = 0; i < info.n_kv; i++) {
        const struct br_kv *kv = &info.kv[i];
        if (kv->kind != BR_KV_INT) continue;
        if (!strcmp(kv->key, "vocab_size") || !strcmp(kv->key, "n_vocab")) *vocab = (int32_t)kv->i;
        if (!strcmp(kv->key, "context_length")) *ctx = kv->i;
    }
    if (*vocab > 0) goto done;
    struct br_req req;
    br_req_init(&req);
    req.type = BR_REQ_GENERATE;
    int32_t probe = INT32_MAX;
    req.input = BR_INPUT_TOKENS;
    req.tokens = &probe;
    req.n_tokens = 1;
    req.max_tokens = 1;
    struct br_err perr = {{0}};
    int prc = br_client_generate(cl, &req, NULL, NULL, &perr);
    const char *at = prc == BR_E_PROTOCOL ? strstr(perr.msg, "in [0, ") : NULL;
    long long hi;
    if (at && sscanf(at, "in [0, %lld]", &hi) == 1 && hi >= 3 && hi < INT32_MAX)
        *vocab = (int32_t)(hi + 1);
    else
        rc = br_err_set(err, BR_E_NOTFOUND,
                        "the server did not tell its vocabulary size; pass --vocab");
done:
    br_resp_free(&info);
    br_client_close(&cl);
    return rc;
}

static int write_json_file(const char *path, const struct br_loadgen_result *const *res, size_t n,
                           bool as_array)
{
    FILE *f = fopen(path, "w");
    if (!f) return BR_E_IO;
    int rc = br_loadgen_write_json(f, res, n, as_array, true);
    if (fclose(f)) rc = BR_E_IO;
    return rc;
}

static int bench_serve(int argc, char **argv)
{
    struct br_loadgen_config cfg;
    br_loadgen_config_default(&cfg);
    const char *dataset = NULL, *json = NULL, *plot = NULL, *sweep = NULL, *rate_sweep = NULL;
    long long v, input_len = 128, output_len = 64, vocab = 0;
    double spread = 0.0, d;
    bool no_progress = false, conc_set = false;
    const char *curve_server_key = NULL, *curve_key = NULL;
    struct br_client_curve curve;
    int32_t *ban = NULL, n_ban = 0;
    enum br_loadgen_plot_y ploty = BR_LOADGEN_PLOT_TPOT;
    enum {
        O_SERVER = 256,
        O_CONC,
        O_RATE,
        O_MAXC,
        O_REQ,
        O_WARM,
        O_SEED,
        O_DATA,
        O_IN,
        O_OUT,
        O_SPREAD,
        O_VOCAB,
        O_TEMP,
        O_BAN,
        O_TIMEOUT,
        O_SWEEP,
        O_RSWEEP,
        O_PLOT,
        O_PLOTY,
        O_JSON,
        O_NOPROG,
        O_CSK,
        O_CK,
        O_OPENAI,
        O_CHAT,
        O_APIKEY,
        O_MODEL
    };
    static const struct option opts[] = {{"server", required_argument, 0, O_SERVER},
                                         {"concurrency", required_argument, 0, O_CONC},
                                         {"rate", required_argument, 0, O_RATE},
                                         {"max-concurrency", required_argument, 0, O_MAXC},
                                         {"requests", required_argument, 0, O_REQ},
                                         {"warmup", required_argument, 0, O_WARM},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"dataset", required_argument, 0, O_DATA},
                                         {"input-len", required_argument, 0, O_IN},
                                         {"output-len", required_argument, 0, O_OUT},
                                         {"len-spread", required_argument, 0, O_SPREAD},
                                         {"vocab", required_argument, 0, O_VOCAB},
                                         {"temp", required_argument, 0, O_TEMP},
                                         {"ban-tokens", required_argument, 0, O_BAN},
                                         {"timeout", required_argument, 0, O_TIMEOUT},
                                         {"sweep", required_argument, 0, O_SWEEP},
                                         {"rate-sweep", required_argument, 0, O_RSWEEP},
                                         {"plot", required_argument, 0, O_PLOT},
                                         {"plot-y", required_argument, 0, O_PLOTY},
                                         {"json", required_argument, 0, O_JSON},
                                         {"no-progress", no_argument, 0, O_NOPROG},
                                         {"curve-server-key", required_argument, 0, O_CSK},
                                         {"curve-key", required_argument, 0, O_CK},
                                         {"openai", required_argument, 0, O_OPENAI},
                                         {"chat", no_argument, 0, O_CHAT},
                                         {"api-key", required_argument, 0, O_APIKEY},
                                         {"model", required_argument, 0, O_MODEL},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    static char server_buf[BR_CLIENT_ADDR_MAX]; /* outlives the loop: cfg keeps a pointer */
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_SERVER: {
            struct br_err aerr = {{0}};
            if (br_client_addr_normalize(optarg, server_buf, sizeof server_buf, &aerr))
                return br_cli_usage_error("bench", "--server: %s", aerr.msg);
            cfg.server = server_buf;
            break;
        }
        case O_CONC:
            if (br_opt_int("bench", "--concurrency", optarg, 1, BR_LOADGEN_MAX_SLOTS, &v)) return 2;
            cfg.concurrency = (int32_t)v;
            conc_set = true;
            break;
        case O_RATE:
            if (br_opt_float("bench", "--rate", optarg, 1e-6, 1e6, &cfg.rate)) return 2;
            break;
        case O_MAXC:
            if (br_opt_int("bench", "--max-concurrency", optarg, 1, BR_LOADGEN_MAX_SLOTS, &v))
                return 2;
            cfg.max_concurrency = (int32_t)v;
            break;
        case O_REQ:
            if (br_opt_int("bench", "--requests", optarg, 1, 10000000, &v)) return 2;
            cfg.requests = (int32_t)v;
            break;
        case O_WARM:
            if (br_opt_int("bench", "--warmup", optarg, 0, 10000000, &v)) return 2;
            cfg.warmup = (int32_t)v;
            break;
        case O_SEED:
            if (br_opt_int("bench", "--seed", optarg, 0, INT64_MAX, &v)) return 2;
            cfg.seed = (uint64_t)v;
            break;
        case O_DATA:
            dataset = optarg;
            break;
        case O_IN:
            if (br_opt_int("bench", "--input-len", optarg, 1, 131072, &input_len)) return 2;
            break;
        case O_OUT:
            if (br_opt_int("bench", "--output-len", optarg, 1, 65536, &output_len)) return 2;
            break;
        case O_SPREAD:
            if (parse_double(optarg, 0.0, 0.999, &spread))
                return br_cli_usage_error("bench", "bad --len-spread (want [0, 1))");
            break;
        case O_VOCAB:
            if (br_opt_int("bench", "--vocab", optarg, 4, INT32_MAX, &vocab)) return 2;
            break;
        case O_TEMP:
            if (br_opt_float("bench", "--temp", optarg, 0.0, 100.0, &d)) return 2;
            cfg.temperature = (float)d;
            break;
        case O_BAN:
            free(ban);
            ban = NULL;
            if (br_cli_int_list(optarg, &ban, &n_ban) || n_ban > 64) {
                free(ban);
                return br_cli_usage_error("bench", "bad --ban-tokens (at most 64 ids)");
            }
            break;
        case O_TIMEOUT:
            if (br_opt_int("bench", "--timeout", optarg, 1, 86400000, &v)) return 2;
            cfg.timeout_ms = (int32_t)v;
            break;
        case O_SWEEP:
            sweep = optarg;
            break;
        case O_RSWEEP:
            rate_sweep = optarg;
            break;
        case O_PLOT:
            plot = optarg;
            break;
        case O_PLOTY:
            if (!strcmp(optarg, "tpot"))
                ploty = BR_LOADGEN_PLOT_TPOT;
            else if (!strcmp(optarg, "e2e"))
                ploty = BR_LOADGEN_PLOT_E2E;
            else if (!strcmp(optarg, "ttft"))
                ploty = BR_LOADGEN_PLOT_TTFT;
            else
                return br_cli_usage_error("bench", "bad --plot-y (tpot, e2e or ttft)");
            break;
        case O_JSON:
            json = optarg;
            break;
        case O_NOPROG:
            no_progress = true;
            break;
        case O_CSK:
            curve_server_key = optarg;
            break;
        case O_CK:
            curve_key = optarg;
            break;
        case O_OPENAI:
            cfg.openai_url = optarg;
            break;
        case O_CHAT:
            cfg.chat = true;
            break;
        case O_APIKEY:
            cfg.api_key = optarg;
            break;
        case O_MODEL:
            cfg.model = optarg;
            break;
        case 'h':
            usage(stdout);
            free(ban);
            return 0;
        default:
            free(ban);
            return 2;
        }
    }
    if (optind < argc) {
        free(ban);
        return br_cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    }
    bool open_loop = cfg.rate > 0 || rate_sweep;
    const char *conflict =
        open_loop && conc_set               ? "--concurrency is for the closed loop; "
                                              "bound the open loop with --max-concurrency"
        : sweep && cfg.rate > 0             ? "--sweep is a closed-loop sweep; use --rate-sweep"
        : !open_loop && cfg.max_concurrency ? "--max-concurrency needs --rate or --rate-sweep"
                                            : NULL;
    if (conflict) {
        free(ban);
        return br_cli_usage_error("bench", "%s", conflict);
    }
    if (sweep && rate_sweep) {
        free(ban);
        return br_cli_usage_error("bench", "give --sweep or --rate-sweep, not both");
    }
    if (plot && !sweep && !rate_sweep) {
        free(ban);
        return br_cli_usage_error("bench", "--plot needs --sweep or --rate-sweep");
    }
    cfg.ban_tokens = ban;
    cfg.n_ban = (uint32_t)n_ban;
    cfg.progress = !no_progress && isatty(2);

    /* the points to run: one, or one per swept value */
    double *points = NULL;
    size_t n_points = 1;
    if (sweep || rate_sweep) {
        if (parse_double_list(sweep ? sweep : rate_sweep, &points, &n_points)) {
            free(ban);
            return br_cli_usage_error("bench", "bad %s list", sweep ? "--sweep" : "--rate-sweep");
        }
        for (size_t i = 0; sweep && i < n_points; i++)
            if (points[i] > BR_LOADGEN_MAX_SLOTS || points[i] != (double)(int32_t)points[i]) {
                free(points);
                free(ban);
                return br_cli_usage_error("bench", "--sweep takes concurrencies in [1, %d]",
                                          BR_LOADGEN_MAX_SLOTS);
            }
    }

    if (!cfg.openai_url && (cfg.chat || cfg.api_key || cfg.model)) {
        free(points);
        free(ban);
        return br_cli_usage_error("bench", "--chat, --api-key and --model need --openai URL");
    }
    if (cfg.openai_url && (cfg.server || curve_key || curve_server_key)) {
        free(points);
        free(ban);
        return br_cli_usage_error("bench", "--openai replaces --server and the CurveZMQ keys");
    }
    if (!!curve_server_key != !!curve_key) {
        free(points);
        free(ban);
        return br_cli_usage_error("bench", "--curve-server-key and --curve-key go together");
    }
    int rc = 0;
    struct br_err err = {{0}};
    struct br_loadgen_workload wl = {0};
    struct br_loadgen_result **res = calloc(n_points, sizeof *res);
    char desc[512];
    size_t n_done = 0;
    if (!res) {
        fprintf(stderr, "bitrack bench: out of memory\n");
        rc = 1;
        goto done;
    }
    size_t n_items = (size_t)cfg.requests + (size_t)cfg.warmup;
    if (curve_key) {
        if (br_client_curve_load(curve_server_key, curve_key, &curve, &err)) goto fail;
        cfg.curve = &curve;
    }
    if (dataset) {
        if (br_loadgen_workload_load(dataset, (int32_t)output_len, &wl, &err)) goto fail;
        snprintf(desc, sizeof desc, "dataset %s (%zu prompts)", dataset, wl.n);
    } else {
        int32_t vs = (int32_t)vocab;
        int64_t ctx = 0;
        if (!vs &&
            (cfg.openai_url ? br_loadgen_openai_vocab(cfg.openai_url, cfg.api_key, &vs, &ctx, &err)
                            : ask_vocab(cfg.server, cfg.timeout_ms, cfg.curve, &vs, &ctx, &err)))
            goto fail;
        if (ctx > 0 &&
            llround((double)input_len * (1 + spread)) + llround((double)output_len * (1 + spread)) >
                ctx)
            fprintf(stderr,
                    "bitrack bench: warning: prompts up to %lld + %lld tokens may exceed the "
                    "server's context of %lld (too_long errors)\n",
                    (long long)llround((double)input_len * (1 + spread)),
                    (long long)llround((double)output_len * (1 + spread)), (long long)ctx);
        if (br_loadgen_workload_random(n_items, (int32_t)input_len, (int32_t)output_len, spread, vs,
                                       cfg.seed, &wl, &err))
            goto fail;
        snprintf(desc, sizeof desc,
                 "random token ids in [3, %d): input %lld, output %lld, spread %g", vs, input_len,
                 output_len, spread);
    }
    cfg.workload = desc;

    for (; n_done < n_points; n_done++) {
        struct br_loadgen_config pc = cfg;
        char label[64];
        if (sweep) {
            pc.concurrency = (int32_t)points[n_done];
            pc.rate = 0.0;
            snprintf(label, sizeof label, "bench c=%d", pc.concurrency);
        } else if (rate_sweep) {
            pc.rate = points[n_done];
            snprintf(label, sizeof label, "bench rate=%g", pc.rate);
        } else {
            snprintf(label, sizeof label, "bench");
        }
        pc.label = label;
        if (br_loadgen_run(&pc, &wl, &res[n_done], &err)) goto fail;
        res[n_done]->config.label = NULL; /* label lives on this stack frame */
        br_loadgen_print_table(stdout, res[n_done]);
        if (res[n_done]->failed) rc = 1;
    }
    const struct br_loadgen_result *const *cres = (const struct br_loadgen_result *const *)res;
    if (n_points > 1 || sweep || rate_sweep) br_loadgen_print_sweep(stdout, cres, n_done);
    if (json && write_json_file(json, cres, n_done, sweep || rate_sweep)) {
        fprintf(stderr, "bitrack bench: cannot write %s\n", json);
        rc = 1;
    }
    if (plot) {
        FILE *f = fopen(plot, "w");
        int prc = f ? br_loadgen_plot_svg(f, cres, n_done, ploty) : BR_E_IO;
        if (f && fclose(f)) prc = BR_E_IO;
        if (prc) {
            fprintf(stderr, "bitrack bench: cannot write %s\n", plot);
            rc = 1;
        }
    }
    goto done;
fail:
    fprintf(stderr, "bitrack bench: %s\n", err.msg[0] ? err.msg : "failed");
    rc = 1;
done:
    for (size_t i = 0; res && i < n_points; i++) br_loadgen_result_free(&res[i]);
    free(res);
    br_loadgen_workload_free(&wl);
    free(points);
    free(ban);
    return rc;
}
