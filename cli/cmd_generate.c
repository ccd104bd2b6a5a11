/*
 * `bitrack generate --server ADDR [options] "prompt"`: a client of `bitrack serve`,
 * streaming the completion to stdout (proto/client.h). Options mirror `bitrack run`:
 * -n, --temp, --top-k, --top-p, --min-p, --repeat-penalty, --seed, --tokens, --stop,
 * --chat (send the prompt as one user message), --no-stream, --ids; --curve-server-key
 * FILE --curve-key FILE for a server with CurveZMQ (keys from `bitrack keygen`). --retry N
 * repeats a request that failed with `unavailable` or a timeout before printing anything (a
 * server restarting after a lost rank), up to N times, 1 s apart.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "proto/client.h"

struct gen_state {
    int ids;
    long n;
    size_t printed; /* bytes written to stdout */
    int finish;
    struct br_usage usage;
    struct br_timings timings;
};

static int on_event(const struct br_resp *r, void *user)
{
    struct gen_state *g = user;
    if (r->type == BR_RESP_TOKEN) {
        if (g->ids && r->token >= 0)
            g->printed += (size_t)printf("%s%d", g->n++ ? " " : "", r->token);
        else if (!g->ids && r->text)
            g->printed += fwrite(r->text, 1, r->text_len, stdout);
        fflush(stdout);
    } else if (r->type == BR_RESP_DONE) {
        if (r->text && !g->ids) g->printed += fwrite(r->text, 1, r->text_len, stdout);
        g->finish = (int)r->finish_reason;
        g->usage = r->usage;
        g->timings = r->timings;
    }
    return 0;
}

int br_cmd_generate(int argc, char **argv)
{
    const char *server = BR_CLIENT_DEFAULT_ADDR, *tokens = NULL;
    struct br_req req;
    br_req_init(&req);
    req.type = BR_REQ_GENERATE;
    req.stream = true;
    req.max_tokens = 64;
    req.sampling.temperature = 0.0f; /* the same defaults as `bitrack run` */
    req.sampling.top_k = 0;
    req.sampling.top_p = 1.0f;
    req.sampling.min_p = 0.0f;
    req.sampling.has_seed = true;
    req.sampling.seed = 0;
    int chat = 0, ids = 0, verbose = 0;
    long long timeout_ms = 120000, retries = 0, v;
    char *stops[16];
    size_t stop_lens[16];
    uint32_t n_stop = 0;
    enum {
        O_SERVER = 256,
        O_TEMP,
        O_TOPK,
        O_TOPP,
        O_MINP,
        O_REP,
        O_SEED,
        O_TOKENS,
        O_STOP,
        O_CHAT,
        O_NOSTREAM,
        O_IDS,
        O_TIMEOUT,
        O_CSK,
        O_CK,
        O_RETRY
    };
    const char *curve_server_key = NULL, *curve_key = NULL;
    static const struct option opts[] = {{"server", required_argument, 0, O_SERVER},
                                         {"n-predict", required_argument, 0, 'n'},
                                         {"temp", required_argument, 0, O_TEMP},
                                         {"top-k", required_argument, 0, O_TOPK},
                                         {"top-p", required_argument, 0, O_TOPP},
                                         {"min-p", required_argument, 0, O_MINP},
                                         {"repeat-penalty", required_argument, 0, O_REP},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"tokens", required_argument, 0, O_TOKENS},
                                         {"stop", required_argument, 0, O_STOP},
                                         {"chat", no_argument, 0, O_CHAT},
                                         {"no-stream", no_argument, 0, O_NOSTREAM},
                                         {"ids", no_argument, 0, O_IDS},
                                         {"timeout", required_argument, 0, O_TIMEOUT},
                                         {"curve-server-key", required_argument, 0, O_CSK},
                                         {"curve-key", required_argument, 0, O_CK},
                                         {"retry", required_argument, 0, O_RETRY},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:vh", opts, NULL)) != -1) {
        switch (c) {
        case O_SERVER:
            server = optarg;
            break;
        case 'n':
            if (br_cli_int(optarg, 1, 1 << 20, &v)) return br_cli_usage_error("generate", "bad -n");
            req.max_tokens = (int32_t)v;
            break;
        case O_TEMP:
            req.sampling.temperature = strtof(optarg, NULL);
            break;
        case O_TOPK:
            req.sampling.top_k = atoi(optarg);
            break;
        case O_TOPP:
            req.sampling.top_p = strtof(optarg, NULL);
            break;
        case O_MINP:
            req.sampling.min_p = strtof(optarg, NULL);
            break;
        case O_REP:
            req.sampling.repeat_penalty = strtof(optarg, NULL);
            break;
        case O_SEED:
            if (br_cli_int(optarg, 0, INT64_MAX, &v))
                return br_cli_usage_error("generate", "bad --seed");
            req.sampling.seed = (uint64_t)v;
            break;
        case O_TOKENS:
            tokens = optarg;
            break;
        case O_STOP:
            if (n_stop < 16) stops[n_stop] = optarg, stop_lens[n_stop++] = strlen(optarg);
            break;
        case O_CHAT:
            chat = 1;
            break;
        case O_NOSTREAM:
            req.stream = false;
            break;
        case O_IDS:
            ids = 1;
            break;
        case O_TIMEOUT:
            if (br_cli_int(optarg, 1, 86400000, &timeout_ms))
                return br_cli_usage_error("generate", "bad --timeout");
            break;
        case O_CSK:
            curve_server_key = optarg;
            break;
        case O_CK:
            curve_key = optarg;
            break;
        case O_RETRY:
            if (br_cli_int(optarg, 0, 1000000, &retries))
                return br_cli_usage_error("generate", "bad --retry");
            break;
        case 'v':
            verbose = 1;
            break;
        case 'h':
            printf("usage: bitrack generate [--server ADDR] [-n N] [--temp T] [--top-k K] [--top-p "
                   "P]\n"
                   "       [--min-p P] [--repeat-penalty R] [--seed S] [--stop TEXT] [--chat]\n"
                   "       [--no-stream] [--ids] [--timeout MS] [--retry N]\n"
                   "       [--curve-server-key FILE --curve-key FILE] (PROMPT | --tokens 1,2,3)\n");
            return 0;
        default:
            return 2;
        }
    }
    const char *prompt = optind < argc ? argv[optind] : NULL;
    if (!!prompt == !!tokens) return br_cli_usage_error("generate", "give a prompt or --tokens");
    if (!!curve_server_key != !!curve_key)
        return br_cli_usage_error("generate", "--curve-server-key and --curve-key go together");
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
        msg.content_len = strlen(prompt);
        req.input = BR_INPUT_MESSAGES;
        req.messages = &msg;
        req.n_messages = 1;
    } else {
        req.input = BR_INPUT_PROMPT;
        req.prompt = (char *)prompt;
        req.prompt_len = strlen(prompt);
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
    struct gen_state g = {ids, 0, 0, 0, {0, 0}, {0, 0, 0, 0}};
    if (!rc) rc = br_client_generate(cl, &req, on_event, &g, &err);
    /* the socket reconnects by itself: the same client reaches a restarted server */
    for (long long k = 1;
         k <= retries && g.printed == 0 && (rc == BR_E_UNAVAILABLE || rc == BR_E_TIMEOUT); k++) {
        fprintf(stderr, "bitrack generate: %s; retry %lld of %lld in 1 s\n", err.msg, k, retries);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
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
    return rc ? 1 : 0;
}
