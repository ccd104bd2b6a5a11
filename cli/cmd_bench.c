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
    const char *ban_s = NULL, *ploty_s = "tpot";
    long long conc = 0, maxc = 0, requests = cfg.requests, warmup = cfg.warmup, seed = 0;
    long long input_len = 128, output_len = 64, vocab = 0, timeout_ms = cfg.timeout_ms;
    double spread = 0.0, temp = cfg.temperature;
    int no_progress = 0, chat = 0;
    const char *curve_server_key = NULL, *curve_key = NULL;
    static char server[BR_ADDR_MAX]; /* outlives this call's result: cfg keeps a pointer */
    struct br_client_curve curve;
    int32_t *ban = NULL, n_ban = 0;
    const struct br_opt opts[] = {
        BR_O_ADDR(0, "server", server, "the server's endpoint; none: " BR_CLIENT_DEFAULT_ADDR),
        BR_O_INT(0, "concurrency", &conc, 1, BR_LOADGEN_MAX_SLOTS, "N",
                 "closed loop: N requests always in flight; 0: 1"),
        BR_O_FLOAT(0, "rate", &cfg.rate, 1e-6, 1e6, "R",
                   "open loop: Poisson arrivals at R requests/s"),
        BR_O_INT(0, "max-concurrency", &maxc, 1, BR_LOADGEN_MAX_SLOTS, "N",
                 "open loop: at most N in flight; 0: min(requests, the client's slots)"),
        BR_O_INT(0, "requests", &requests, 1, 10000000, "N", "measured requests"),
        BR_O_INT(0, "warmup", &warmup, 0, 10000000, "W", "requests sent first and not counted"),
        BR_O_INT(0, "seed", &seed, 0, INT64_MAX, "S", "seed for prompts, arrivals and sampling"),
        BR_O_STR(0, "dataset", &dataset, "FILE.jsonl",
                 "prompts, one JSON object a line: {\"prompt\": ...} or {\"tokens\": [...]}, "
                 "optional \"max_tokens\" (else --output-len)"),
        BR_O_INT(0, "input-len", &input_len, 1, 131072, "L", "random prompts of L token ids"),
        BR_O_INT(0, "output-len", &output_len, 1, 65536, "O", "completion tokens asked for"),
        BR_O_FLOAT(0, "len-spread", &spread, 0.0, 0.999, "F",
                   "lengths uniform in [L*(1-F), L*(1+F)]"),
        BR_O_INT(0, "vocab", &vocab, 4, INT32_MAX, "V",
                 "vocabulary size for random ids; 0: ask the server"),
        BR_O_FLOAT(0, "temp", &temp, 0.0, 100.0, "T", "sampling temperature (0: greedy)"),
        BR_O_STR(0, "ban-tokens", &ban_s, "2,...",
                 "token ids the server must not sample (a fixed output length; at most 64)"),
        BR_O_INT(0, "timeout", &timeout_ms, 1, 86400000, "MS",
                 "fail a request after MS ms of server silence"),
        BR_O_STR(0, "openai", &cfg.openai_url, "URL",
                 "an OpenAI-compatible server instead (bitrack serve --http, llama-server, "
                 "vLLM): streams /v1/completions with token-id prompts"),
        BR_O_FLAG(0, "chat", &chat, "with --openai: /v1/chat/completions (prompts as text)"),
        BR_O_STR(0, "api-key", &cfg.api_key, "K", "with --openai: sent as Authorization: Bearer K"),
        BR_O_STR(0, "model", &cfg.model, "M", "with --openai: the model name to send"),
        BR_O_STR(0, "curve-server-key", &curve_server_key, "FILE",
                 "the server's CurveZMQ public key (with --curve-key)"),
        BR_O_STR(0, "curve-key", &curve_key, "FILE",
                 "this client's CurveZMQ secret key (bitrack keygen)"),
        BR_O_STR(0, "sweep", &sweep, "1,2,4,8", "run at each concurrency"),
        BR_O_STR(0, "rate-sweep", &rate_sweep, "1,2.5,5", "run at each rate"),
        BR_O_STR(0, "plot", &plot, "FILE.svg", "sweep plot: output tokens/s against latency"),
        BR_O_CHOICE(0, "plot-y", &ploty_s, "tpot|e2e|ttft", "latency on the plot's y axis"),
        BR_O_STR(0, "json", &json, "FILE", "write config, aggregates and per-request records"),
        BR_O_FLAG(0, "no-progress", &no_progress,
                  "no progress line (it is drawn only on a terminal anyway)"),
    };
    const struct br_cmd_spec spec = {
        "bench", "[serve]",
        "Load-tests a running `bitrack serve` (or, with --openai, any OpenAI-compatible\n"
        "server) and reports throughput and latency (docs/BENCH.md). The other benchmarks:\n"
        "bitrack bench kernels|model|scale --help.",
        opts, sizeof opts / sizeof *opts};
    int prc = br_opts_parse_none(&spec, argc, argv);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (ban_s && (br_cli_int_list(ban_s, &ban, &n_ban) || n_ban > 64)) {
        free(ban);
        return br_cli_usage_error("bench", "--ban-tokens: '%s' is not a list of at most 64 ids",
                                  ban_s);
    }
    bool conc_set = conc > 0;
    if (server[0]) cfg.server = server;
    if (conc_set) cfg.concurrency = (int32_t)conc;
    cfg.max_concurrency = (int32_t)maxc;
    cfg.requests = (int32_t)requests, cfg.warmup = (int32_t)warmup, cfg.seed = (uint64_t)seed;
    cfg.temperature = (float)temp;
    cfg.timeout_ms = (int32_t)timeout_ms;
    cfg.chat = chat;
    enum br_loadgen_plot_y ploty = !strcmp(ploty_s, "e2e")    ? BR_LOADGEN_PLOT_E2E
                                   : !strcmp(ploty_s, "ttft") ? BR_LOADGEN_PLOT_TTFT
                                                              : BR_LOADGEN_PLOT_TPOT;
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
        int wrc = f ? br_loadgen_plot_svg(f, cres, n_done, ploty) : BR_E_IO;
        if (f && fclose(f)) wrc = BR_E_IO;
        if (wrc) {
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
