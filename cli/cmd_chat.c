/*
 * `bitrack chat`: an interactive chat on the terminal, streaming each reply.
 *
 *   bitrack chat -m MODEL [-t THREADS] [--system TEXT] [--chat-template NAME] [--temp T] ...
 *   bitrack chat --server ADDR [--system TEXT] ...
 *
 * Locally the conversation is rendered with the model's chat template each turn and runs
 * as one job of the scheduler (coordinator/sched.h) that continues the conversation's
 * sequence: only the tokens past the part already in the KV cache are evaluated. With
 * --server the messages go to `bitrack serve`, which renders them.
 *
 * Lines are read with libedit (line editing, history) when stdin is a terminal, plainly
 * otherwise (a pipe), until EOF or /exit. Lines starting with '/' are commands handled
 * here and never sent to the model: /help, /reset (start over), /exit (or /quit). A local
 * chat template is tried on a test conversation before the banner, so that a bad
 * --chat-template fails at once.
 */
#include <editline/readline.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "coordinator/chat.h"
#include "coordinator/rank.h"
#include "coordinator/sched.h"
#include "proto/client.h"

struct convo {
    char **role, **content;
    size_t n, cap;
};

static int convo_add(struct convo *c, const char *role, const char *text, size_t len)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        char **r = realloc(c->role, cap * sizeof *r), **t;
        if (!r) return -1;
        c->role = r;
        if (!(t = realloc(c->content, cap * sizeof *t))) return -1;
        c->content = t;
        c->cap = cap;
    }
    c->role[c->n] = strdup(role);
    c->content[c->n] = malloc(len + 1);
    if (!c->role[c->n] || !c->content[c->n]) return -1;
    memcpy(c->content[c->n], text, len);
    c->content[c->n][len] = '\0';
    c->n++;
    return 0;
}

static void convo_clear(struct convo *c, size_t keep)
{
    while (c->n > keep) {
        c->n--;
        free(c->role[c->n]);
        free(c->content[c->n]);
    }
}

struct chat_opts {
    const char *model, *system, *tmpl;
    char server[BR_ADDR_MAX];
    long long threads, n_max, seed, connect_ms;
    double temp, top_p, min_p;
    long long top_k;
};

/* One line of input without its newline (malloc'd), or NULL at EOF. A terminal gets
 * libedit's line editing and history; a pipe is read plainly, with no prompt. */
static char *read_line(int tty)
{
    if (tty) {
        char *l = readline("> ");
        if (l && *l) add_history(l);
        return l;
    }
    size_t cap = 0;
    char *l = NULL;
    ssize_t n = getline(&l, &cap, stdin);
    if (n < 0) {
        free(l);
        return NULL;
    }
    l[strcspn(l, "\n")] = '\0';
    return l;
}

static const char chat_help[] = "commands: /help this list, /reset start over, /exit (or /quit, "
                                "EOF) leave; other lines starting with / are not sent\n";

struct reply_buf {
    char *text;
    size_t len;
};

/* Prints a piece of the reply as it comes and appends it to the reply. */
static void reply_add(struct reply_buf *rb, const char *p, size_t n)
{
    fwrite(p, 1, n, stdout);
    fflush(stdout);
    char *nt = realloc(rb->text, rb->len + n + 1);
    if (nt) memcpy(nt + rb->len, p, n), rb->len += n, nt[rb->len] = '\0', rb->text = nt;
}

static int on_event(const struct br_resp *r, void *user)
{
    if (r->type == BR_RESP_TOKEN && r->text) reply_add(user, r->text, r->text_len);
    return 0;
}

/* A local reply as the scheduler's events come: its text through the turn's own
 * detokenizer, printed as it grows; a reply ends with its last whole character and
 * without the end-of-generation token. */
struct chat_out {
    const struct br_tok *tok;
    struct br_detok *dt;
    struct reply_buf rb;
    char err[sizeof(struct br_err)]; /* the turn's error, if it failed */
};

static void chat_emit(void *ctx, uint64_t ticket, struct br_event *e)
{
    struct chat_out *o = ctx;
    const char *piece;
    size_t pl;
    (void)ticket;
    if (e->kind == BR_EVENT_TOKEN && e->token >= 0 && !br_tok_is_eog(o->tok, e->token) &&
        br_detok_push(o->dt, e->token, &piece, &pl) == BR_OK && pl) {
        reply_add(&o->rb, piece, pl);
    } else if (e->kind == BR_EVENT_ERROR) {
        snprintf(o->err, sizeof o->err, "%s", e->message ? e->message : "out of memory");
    }
    br_event_free_list(e);
}

/* A streamed reply's request with the options' sampling; a local chat always has a seed
 * (-1 is the largest). */
static void chat_req(const struct chat_opts *o, bool local, struct br_req *req)
{
    br_req_init(req);
    req->type = BR_REQ_GENERATE, req->stream = true, req->max_tokens = (int32_t)o->n_max;
    struct br_req_sampling *q = &req->sampling;
    q->temperature = (float)o->temp, q->top_k = (int32_t)o->top_k, q->top_p = (float)o->top_p;
    q->min_p = (float)o->min_p, q->has_seed = local || o->seed >= 0;
    q->seed = q->has_seed ? (uint64_t)o->seed : 0;
}

/* One reply from the server; appends it to the conversation. */
static int server_turn(struct br_client *cl, const struct chat_opts *o, struct convo *c,
                       struct reply_buf *rb, struct br_err *err)
{
    struct br_req req;
    chat_req(o, false, &req);
    struct br_chat_msg *msgs = calloc(c->n, sizeof *msgs);
    if (!msgs) return BR_E_NOMEM;
    for (size_t i = 0; i < c->n; i++) {
        msgs[i].role = !strcmp(c->role[i], "system")      ? BR_ROLE_SYSTEM
                       : !strcmp(c->role[i], "assistant") ? BR_ROLE_ASSISTANT
                                                          : BR_ROLE_USER;
        msgs[i].content = c->content[i];
        msgs[i].content_len = strlen(c->content[i]);
    }
    req.input = BR_INPUT_MESSAGES;
    req.messages = msgs;
    req.n_messages = (uint32_t)c->n;
    req.chat_template = (char *)o->tmpl;
    req.chat_template_len = o->tmpl ? strlen(o->tmpl) : 0;
    int rc = br_client_generate(cl, &req, on_event, rb, err);
    free(msgs);
    return rc;
}

int br_cmd_chat(int argc, char **argv)
{
    struct chat_opts o = {0};
    o.n_max = BR_CLI_DEFAULT_MAX_TOKENS, o.seed = -1, o.temp = BR_CLI_DEFAULT_TEMP;
    o.top_k = BR_CLI_DEFAULT_TOP_K, o.top_p = BR_CLI_DEFAULT_TOP_P, o.min_p = BR_CLI_DEFAULT_MIN_P;
    o.connect_ms = BR_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    const char *curve_server_key = NULL, *curve_key = NULL;
    const struct br_opt opts[] = {
        BR_O_STR('m', "model", &o.model, "FILE", "chat with this model locally"),
        BR_O_ADDR(0, "server", o.server, "or with this server (host:port means tcp://host:port)"),
        BR_O_STR(0, "system", &o.system, "TEXT", "a system message first"),
        BR_O_STR(0, "chat-template", &o.tmpl, "NAME", "template; none: the model's own"),
        BR_O_INT('t', "threads", &o.threads, 0, 1024, "N", "local threads; 0: the available cores"),
        BR_O_INT('n', "n-predict", &o.n_max, 1, 65536, "N", "longest reply in tokens"),
        BR_O_FLOAT(0, "temp", &o.temp, 0, 100, "T", "temperature; 0: greedy"),
        BR_O_INT(0, "top-k", &o.top_k, 0, 1 << 20, "K", "keep the K likeliest tokens; 0: off"),
        BR_O_FLOAT(0, "top-p", &o.top_p, 0, 1, "P", "nucleus sampling; 1: off"),
        BR_O_FLOAT(0, "min-p", &o.min_p, 0, 1, "P", "drop tokens below P x the top one's; 0: off"),
        BR_O_INT('s', "seed", &o.seed, -1, INT64_MAX, "S", "sampling seed; -1: random"),
        BR_O_INT(0, "connect-timeout", &o.connect_ms, 1, 86400000, "MS",
                 "with --server: fail after MS ms without a connection"),
        BR_O_STR(0, "curve-server-key", &curve_server_key, "FILE",
                 "the server's CurveZMQ public key (with --curve-key)"),
        BR_O_STR(0, "curve-key", &curve_key, "FILE", "this client's CurveZMQ secret key"),
    };
    const struct br_cmd_spec spec = {
        "chat", NULL,
        "An interactive chat, local (-m MODEL) or with a server (--server ADDR), streaming\n"
        "each reply. Lines starting with / are commands (/help, /reset, /exit), not messages.",
        opts, sizeof opts / sizeof *opts};
    int prc = br_opts_parse_none(&spec, argc, argv);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (!!o.model == !!o.server[0])
        return br_cli_usage_error("chat", "give -m MODEL or --server ADDR");
    if (!!curve_server_key != !!curve_key || (curve_key && !o.server[0]))
        return br_cli_usage_error("chat", "--curve-server-key and --curve-key go together, "
                                          "with --server");
    struct br_err err = {{0}};
    struct convo cv = {0};
    struct br_rank *r = NULL;
    struct br_sched *sc = NULL;
    struct chat_out co = {0};
    struct br_tok *tok = NULL;
    struct br_client *cl = NULL;
    char tmpl[32] = "bitnet", *line = NULL;
    int rc = 0, exit_code = 1, failed = 0;
    if (o.system && convo_add(&cv, "system", o.system, strlen(o.system))) goto done;
    size_t keep = cv.n;
    if (o.server[0]) {
        struct br_client_curve curve;
        if ((curve_key && (rc = br_client_curve_load(curve_server_key, curve_key, &curve, &err))) ||
            (rc =
                 br_client_connect_curve(o.server, 300000, curve_key ? &curve : NULL, &cl, &err))) {
            fprintf(stderr, "bitrack chat: %s\n", err.msg);
            goto done;
        }
        br_client_set_connect_timeout(cl, (int)o.connect_ms);
    } else {
        struct br_rank_opts ro = {.model_path = o.model, .tp = 1, .pp = 1, .no_mpi = true};
        ro.threads = (int)o.threads, ro.tok = BR_RANK_TOK_REQUIRED;
        if (br_rank_open(&ro, &r, &err)) {
            fprintf(stderr, "bitrack chat: %s\n", err.msg);
            goto done;
        }
        co.tok = tok = r->tok;
        const char *t = o.tmpl ? o.tmpl : br_chat_template_detect(NULL, r->model->cfg.arch_name);
        snprintf(tmpl, sizeof tmpl, "%s", t ? t : "chatml");
        struct br_executor ex;
        br_cluster_executor(r->cluster, &ex);
        struct br_sched_opts so = {.max_tokens_cap = (int32_t)o.n_max};
        struct br_sched_sink sink = {&co, chat_emit};
        if (br_sched_create(&so, &ex, &sink, tok, &sc, &err)) {
            fprintf(stderr, "bitrack chat: %s\n", err.msg);
            goto done;
        }
    }
    /* a template that cannot render (locally; or one the server would refuse, as it
     * renders with the same module) fails now, before the banner */
    if (!o.server[0] || o.tmpl) {
        struct br_chat_turn probe = {"user", "hi"};
        char *text = NULL;
        const char *name = o.server[0] ? o.tmpl : tmpl;
        if (br_chat_render(name, &probe, 1, 1, &text, NULL, &err)) {
            fprintf(stderr, "bitrack chat: --chat-template %s: %s\n", name, err.msg);
            goto done;
        }
        free(text);
    }
    int tty = isatty(0);
    fprintf(stderr, "bitrack chat: type a message (/help for commands, /exit or EOF to leave)\n");
    for (;; free(line), line = NULL) {
        if (!(line = read_line(tty))) break;
        size_t len = strlen(line);
        if (line[0] == '/') { /* commands never reach the model */
            char *cmd = line + 1;
            cmd[strcspn(cmd, " \t")] = '\0';
            if (!strcmp(cmd, "exit") || !strcmp(cmd, "quit")) break;
            if (!strcmp(cmd, "reset")) {
                convo_clear(&cv, keep);
                fprintf(stderr, "bitrack chat: the conversation starts over\n");
            } else if (!strcmp(cmd, "help")) {
                fputs(chat_help, stderr);
            } else {
                fprintf(stderr, "bitrack chat: unknown command /%s; %s", cmd, chat_help);
            }
            continue;
        }
        if (len == 0) continue;
        if (convo_add(&cv, "user", line, len)) goto done;
        if (cl) {
            struct reply_buf rb = {NULL, 0};
            rc = server_turn(cl, &o, &cv, &rb, &err);
            fputc('\n', stdout);
            if (rc) {
                /* the turn is dropped: the next one must not carry an unanswered message;
                 * a server that is gone (or refused the key) ends the chat */
                fprintf(stderr, "bitrack chat: %s\n", err.msg);
                failed = 1;
                free(rb.text);
                cv.n--;
                free(cv.role[cv.n]), free(cv.content[cv.n]);
                if (rc == BR_E_UNAVAILABLE || rc == BR_E_TIMEOUT) goto done;
                continue;
            }
            convo_add(&cv, "assistant", rb.text ? rb.text : "",
                      rb.len); /* the server keeps no state */
            free(rb.text);
            continue;
        }
        /* local: render, tokenize, then one job of the conversation for the scheduler,
         * which evaluates only what its cache does not hold */
        struct br_chat_turn *turns = calloc(cv.n, sizeof *turns);
        char *prompt = NULL;
        size_t plen = 0, n = 0;
        struct br_sched_job_in in = {.ticket = 1, .key = 1, .keep = true, .t_arrival = br_now()};
        for (size_t i = 0; turns && i < cv.n; i++)
            turns[i].role = cv.role[i], turns[i].content = cv.content[i];
        rc = !turns ? BR_E_NOMEM : br_chat_render(tmpl, turns, cv.n, 1, &prompt, &plen, &err);
        free(turns);
        if (!rc)
            rc = br_tok_encode(tok, prompt, plen, BR_TOK_ADD_BOS | BR_TOK_PARSE_SPECIAL, &in.prompt,
                               &n, &err);
        free(prompt);
        if (!rc && (int64_t)n + 1 >= r->n_ctx)
            rc = br_err_set(&err, BR_E_TOO_LONG,
                            "the conversation no longer fits the context (%d tokens); /reset",
                            r->n_ctx);
        if (!rc && !(rc = br_detok_create(tok, 0, &co.dt))) {
            chat_req(&o, true, &in.req);
            in.n_prompt = (int32_t)n;
            br_sched_submit(sc, &in);
            while (!rc && br_sched_busy(sc)) rc = br_sched_step(sc, &err);
            if (!rc && co.err[0]) rc = br_err_set(&err, BR_E_INVALID, "%s", co.err);
        }
        br_detok_destroy(&co.dt);
        free(in.prompt);
        if (!rc) {
            fputc('\n', stdout);
            convo_add(&cv, "assistant", co.rb.text ? co.rb.text : "", co.rb.len);
        } else {
            fprintf(stderr, "bitrack chat: %s\n", err.msg);
            failed = 1;
            convo_clear(&cv, cv.n - 1);
        }
        free(co.rb.text);
        co = (struct chat_out){.tok = tok};
    }
    exit_code = failed; /* 1 when a turn failed */
done:
    free(line);
    convo_clear(&cv, 0);
    free(cv.role), free(cv.content);
    br_client_close(&cl);
    br_sched_destroy(&sc);
    br_rank_close(&r);
    return exit_code;
}
