/*
 * `bitrack generate --server ADDR [options] ("prompt" | -)`: a client of `bitrack serve`,
 * streaming the completion to stdout (proto/client.h); "-" reads the prompt from stdin.
 * No server within --connect-timeout (default 5 s) is an error naming the address.
 * Options and their defaults are `bitrack run`'s (the protocol's):
 * -n, --temp, --top-k, --top-p, --min-p, --repeat-penalty, --seed, --tokens, --stop,
 * --chat (send the prompt as one user message), --no-stream, --ids; --curve-server-key
 * FILE --curve-key FILE for a server with CurveZMQ (keys from `bitrack keygen`). --retry N
 * repeats a request that failed with `unavailable` or a timeout before printing anything (a
 * server restarting after a lost rank), up to N times, 1 s apart.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "proto/client.h"

struct gen_state {
    int ids, buffer; /* buffer: print the ids only at the end (--no-stream --ids) */
    long n;
    size_t printed; /* bytes written to stdout */
    int finish;
    struct br_usage usage;
    struct br_timings timings;
    int32_t *got; /* (n_got) ids kept for --no-stream --ids */
    size_t n_got, cap;
};

static int on_event(const struct br_resp *r, void *user)
{
    struct gen_state *g = user;
    if (r->type == BR_RESP_TOKEN) {
        if (g->ids && g->buffer && r->token >= 0) {
            if (g->n_got == g->cap) {
                size_t cap = g->cap ? 2 * g->cap : 64;
                int32_t *ng = realloc(g->got, cap * sizeof *ng);
                if (!ng) return 1; /* cancels: the ids would be incomplete */
                g->got = ng, g->cap = cap;
            }
            g->got[g->n_got++] = r->token;
        } else if (g->ids && r->token >= 0) {
            g->printed += (size_t)printf("%s%d", g->n++ ? " " : "", r->token);
        } else if (!g->ids && r->text) {
            g->printed += fwrite(r->text, 1, r->text_len, stdout);
        }
        fflush(stdout);
    } else if (r->type == BR_RESP_DONE) {
        if (r->text && !g->ids) g->printed += fwrite(r->text, 1, r->text_len, stdout);
        for (size_t i = 0; i < g->n_got; i++)
            g->printed += (size_t)printf("%s%d", g->n++ ? " " : "", g->got[i]);
        g->finish = (int)r->finish_reason;
        g->usage = r->usage;
        g->timings = r->timings;
    }
    return 0;
}

/* Standard input, whole (NUL-terminated, malloc'd); NULL on failure. */
static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) break;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) free(buf);
            buf = nb, cap *= 2;
        }
    }
    if (buf) buf[n] = '\0';
    *len = n;
    return ferror(stdin) ? (free(buf), NULL) : buf;
}

int br_cmd_generate(int argc, char **argv)
{
    char server[BR_ADDR_MAX] = BR_CLIENT_DEFAULT_ADDR;
    const char *tokens = NULL, *curve_server_key = NULL, *curve_key = NULL;
    struct br_req req;
    br_req_init(&req);
    req.type = BR_REQ_GENERATE;
    int chat = 0, ids = 0, verbose = 0, no_stream = 0;
    long long timeout_ms = 120000, connect_ms = BR_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS, retries = 0;
    /* the defaults are the protocol's own (br_req_init), the same as `bitrack run` */
    long long n_max = BR_CLI_DEFAULT_MAX_TOKENS, top_k = BR_CLI_DEFAULT_TOP_K, seed = -1;
    double temp = BR_CLI_DEFAULT_TEMP, top_p = BR_CLI_DEFAULT_TOP_P, min_p = BR_CLI_DEFAULT_MIN_P;
    double rep = 1.0;
    struct br_opt_list stop = {{0}, 0};
    const struct br_opt opts[] = {
        BR_O_ADDR(0, "server", server, "the server (host:port means tcp://host:port)"),
        BR_O_INT('n', "n-predict", &n_max, 1, 65536, "N", "tokens to generate"),
        BR_O_FLOAT(0, "temp", &temp, 0, 100, "T", "temperature; 0: greedy"),
        BR_O_INT(0, "top-k", &top_k, 0, 1 << 20, "K", "keep the K likeliest tokens; 0: off"),
        BR_O_FLOAT(0, "top-p", &top_p, 0, 1, "P", "nucleus sampling; 1: off"),
        BR_O_FLOAT(0, "min-p", &min_p, 0, 1, "P", "drop tokens below P x the top one's; 0: off"),
        BR_O_FLOAT(0, "repeat-penalty", &rep, 1e-6, 10, "R",
                   "penalty for the last 64 tokens; 1: off"),
        BR_O_INT('s', "seed", &seed, -1, INT64_MAX, "S", "sampling seed; -1: the server's choice"),
        BR_O_STR(0, "tokens", &tokens, "IDS", "send token ids 1,2,3 instead of a prompt"),
        BR_O_LIST(0, "stop", &stop, "TEXT", "stop before TEXT (up to 16 times)"),
        BR_O_FLAG(0, "chat", &chat, "send the prompt as one user message (chat template)"),
        BR_O_FLAG(0, "no-stream", &no_stream, "print the completion once, at the end"),
        BR_O_FLAG(0, "ids", &ids, "print token ids instead of text"),
        BR_O_INT(0, "timeout", &timeout_ms, 1, 86400000, "MS",
                 "fail after MS ms without news of the request"),
        BR_O_INT(0, "connect-timeout", &connect_ms, 1, 86400000, "MS",
                 "fail after MS ms without a connection to the server"),
        BR_O_INT(0, "retry", &retries, 0, 1000000, "N",
                 "retry a request that failed with unavailable or a timeout, 1 s apart"),
        BR_O_STR(0, "curve-server-key", &curve_server_key, "FILE",
                 "the server's CurveZMQ public key (with --curve-key)"),
        BR_O_STR(0, "curve-key", &curve_key, "FILE", "this client's CurveZMQ secret key"),
        BR_O_FLAG('v', "verbose", &verbose, "finish reason, token counts and timings on stderr"),
    };
    const struct br_cmd_spec spec = {
        "generate", "(PROMPT | - | --tokens IDS)",
        "Sends a prompt to `bitrack serve` and streams the completion to stdout. \"-\" reads\n"
        "the prompt from standard input. Sampling defaults are the protocol's (greedy).",
        opts, sizeof opts / sizeof *opts};
    int first, prc = br_opts_parse(&spec, argc, argv, &first);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    const char *prompt = first < argc ? argv[first] : NULL;
    if (first + 1 < argc)
        return br_cli_usage_error("generate", "one prompt (quote it); unexpected '%s'",
                                  argv[first + 1]);
    if (!!prompt == !!tokens) return br_cli_usage_error("generate", "give a prompt or --tokens");
    if (!!curve_server_key != !!curve_key)
        return br_cli_usage_error("generate", "--curve-server-key and --curve-key go together");
    req.max_tokens = (int32_t)n_max;
    req.sampling.temperature = (float)temp;
    req.sampling.top_k = (int32_t)top_k;
    req.sampling.top_p = (float)top_p;
    req.sampling.min_p = (float)min_p;
    req.sampling.repeat_penalty = (float)rep;
    req.sampling.has_seed = seed >= 0;
    req.sampling.seed = seed >= 0 ? (uint64_t)seed : 0;
    /* --ids needs the token events: without streaming only the text comes back */
    req.stream = !no_stream || ids;
    char *stops[BR_OPT_LIST_MAX], *input = NULL;
    size_t stop_lens[BR_OPT_LIST_MAX], input_len = 0;
    uint32_t n_stop = stop.n;
    for (uint32_t k = 0; k < n_stop; k++)
        stops[k] = (char *)stop.v[k], stop_lens[k] = strlen(stop.v[k]);
    if (prompt && !strcmp(prompt, "-")) {
        if (!(input = read_stdin(&input_len))) {
            fprintf(stderr, "bitrack generate: cannot read the prompt from standard input\n");
            return 1;
        }
        prompt = input;
    } else if (prompt) {
        input_len = strlen(prompt);
    }
    struct br_chat_msg msg;
    int32_t *ids_in = NULL, n_in = 0;
    if (tokens) {
        if (br_cli_int_list(tokens, &ids_in, &n_in))
            return br_cli_usage_error("generate", "bad --tokens");
        req.input = BR_INPUT_TOKENS;
        req.tokens = ids_in;
        req.n_tokens = (uint32_t)n_in;
        req.add_bos = false;
    } else if (chat) {
        msg.role = BR_ROLE_USER;
        msg.content = (char *)prompt;
        msg.content_len = input_len;
        req.input = BR_INPUT_MESSAGES;
        req.messages = &msg;
        req.n_messages = 1;
    } else {
        req.input = BR_INPUT_PROMPT;
        req.prompt = (char *)prompt;
        req.prompt_len = input_len;
    }
    req.sampling.stop = stops;
    req.sampling.stop_len = stop_lens;
    req.sampling.n_stop = n_stop;
    struct br_err err = {{0}};
    struct br_client *cl = NULL;
    struct br_client_curve curve;
    int rc = curve_key ? br_client_curve_load(curve_server_key, curve_key, &curve, &err) : BR_OK;
    if (!rc)
        rc = br_client_connect_curve(server, (int)timeout_ms, curve_key ? &curve : NULL, &cl, &err);
    if (!rc) br_client_set_connect_timeout(cl, (int)connect_ms);
    struct gen_state g = {ids, no_stream, 0, 0, 0, {0, 0}, {0, 0, 0, 0}, NULL, 0, 0};
    if (!rc) rc = br_client_generate(cl, &req, on_event, &g, &err);
    /* the socket reconnects by itself: the same client reaches a restarted server */
    for (long long k = 1;
         k <= retries && g.printed == 0 && (rc == BR_E_UNAVAILABLE || rc == BR_E_TIMEOUT); k++) {
        fprintf(stderr, "bitrack generate: %s; retry %lld of %lld in 1 s\n", err.msg, k, retries);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
        g.n_got = 0;
        rc = br_client_generate(cl, &req, on_event, &g, &err);
    }
    printf("\n");
    if (rc)
        fprintf(stderr, "bitrack generate: %s\n", err.msg[0] ? err.msg : br_strerror(rc));
    else if (verbose)
        fprintf(stderr,
                "bitrack generate: %s; %u prompt + %u generated tokens; queue %.1f ms, first "
                "token %.1f ms, total %.1f ms, %.1f tokens/s\n",
                g.finish == 0   ? "stop"
                : g.finish == 1 ? "length"
                : g.finish == 2 ? "cancelled"
                                : "error",
                g.usage.prompt_tokens, g.usage.completion_tokens, g.timings.queue_ms,
                g.timings.ttft_ms, g.timings.total_ms, g.timings.tokens_per_s);
    br_client_close(&cl);
    free(ids_in);
    free(input);
    free(g.got);
    return rc ? 1 : 0;
}
