/*
 * OpenAI-compatible request parsing and response encoding (see http_api.h).
 *
 * Parsing is two passes over a Jansson tree: the body must be an object; then every known
 * parameter is read with a checker that names it on failure ("temperature: must be a
 * number in [0, 100], got \"hot\""). Ranges are PROTOCOL.md's, so a request means the
 * same thing over HTTP as over ZeroMQ.
 *
 * Memory bound: Jansson allocates through json_set_alloc_funcs, installed once. While a
 * request body is parsed, allocations on that thread are charged to a budget of
 * BUDGET_BASE plus BUDGET_PER_BYTE times the body length (at most BUDGET_MAX); past it,
 * allocation fails and the request is answered 400. A legitimate body costs a few bytes
 * of tree per byte of JSON (the largest token-id prompt, 131072 ids, about 5 MiB); a
 * body of a million one-digit array items costs ~20 bytes per byte, and is refused.
 */
#include "coordinator/http_api.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUDGET_PER_BYTE 8
#define BUDGET_BASE     ((size_t)8 << 20)
#define BUDGET_MAX      ((size_t)64 << 20)

/* ---- Jansson allocation budget -------------------------------------------------------- */

static _Thread_local int budget_on;
static _Thread_local size_t budget_left;
static _Thread_local int budget_hit; /* an allocation was refused */
static pthread_once_t alloc_once = PTHREAD_ONCE_INIT;

static void *budget_malloc(size_t n)
{
    if (budget_on) {
        if (n > budget_left) {
            budget_hit = 1;
            return NULL;
        }
        budget_left -= n;
    }
    return malloc(n);
}

static void install_alloc(void)
{
    json_set_alloc_funcs(budget_malloc, free);
}

/* ---- errors --------------------------------------------------------------------------- */

static const char *type_for(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 429:
        return "rate_limit_error";
    case 500:
    case 503:
        return "server_error";
    default:
        return "invalid_request_error";
    }
}

int br_http_error_set(struct br_http_error *e, int status, const char *param, const char *code,
                      const char *fmt, ...)
{
    e->status = status;
    e->type = type_for(status);
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return status;
}

void br_http_error_from_code(struct br_http_error *e, enum br_proto_code code, const char *msg)
{
    const char *m = msg && *msg ? msg : br_proto_code_name(code);
    switch (code) {
    case BR_PROTO_BAD_REQUEST:
        br_http_error_set(e, 400, NULL, NULL, "%s", m);
        break;
    case BR_PROTO_TOO_LONG:
        br_http_error_set(e, 400, NULL, "context_length_exceeded", "%s", m);
        break;
    case BR_PROTO_BUSY:
        br_http_error_set(e, 429, NULL, "server_busy", "%s", m);
        break;
    case BR_PROTO_UNAVAILABLE:
        br_http_error_set(e, 503, NULL, "unavailable", "%s", m);
        break;
    case BR_PROTO_CANCELLED:
        br_http_error_set(e, 499, NULL, "cancelled", "%s", m);
        break;
    default:
        br_http_error_set(e, 500, NULL, "internal_error", "%s", m);
        break;
    }
}

/* ---- parameter readers ---------------------------------------------------------------- */

/* A short rendering of a value for error messages: `got "hot"`, `got true`, `got 7`. */
static void show(const json_t *v, char *buf, size_t n)
{
    if (json_is_string(v))
        snprintf(buf, n, "\"%.40s%s\"", json_string_value(v),
                 json_string_length(v) > 40 ? "..." : "");
    else if (json_is_integer(v))
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, n, "%g", json_real_value(v));
    else if (json_is_true(v))
        snprintf(buf, n, "true");
    else if (json_is_false(v))
        snprintf(buf, n, "false");
    else if (json_is_null(v))
        snprintf(buf, n, "null");
    else if (json_is_array(v))
        snprintf(buf, n, "an array");
    else
        snprintf(buf, n, "an object");
}

static int bad(struct br_http_error *e, const char *param, const json_t *v, const char *what)
{
    char got[64];
    show(v, got, sizeof got);
    br_http_error_set(e, 400, param, NULL, "%s: must be %s, got %s", param, what, got);
    return BR_E_PROTOCOL;
}

/* The value of key, or NULL when absent or null (null means "default", as in OpenAI). */
static json_t *opt(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return v && !json_is_null(v) ? v : NULL;
}

/* A field the request must have: NULL, with e a 400 naming it, when it is absent or null. */
static json_t *required(json_t *o, const char *key, struct br_http_error *e)
{
    json_t *v = opt(o, key);
    if (!v) br_http_error_set(e, 400, key, NULL, "%s: missing", key);
    return v;
}

static int read_num(json_t *o, const char *key, double lo, double hi, bool lo_open, float *out,
                    struct br_http_error *e)
{
    json_t *v = opt(o, key);
    if (!v) return BR_OK;
    char what[96];
    snprintf(what, sizeof what, "a number in %s%g, %g]", lo_open ? "(" : "[", lo, hi);
    if (!json_is_number(v)) return bad(e, key, v, what);
    double x = json_number_value(v);
    if (!(x <= hi) || !(lo_open ? x > lo : x >= lo)) return bad(e, key, v, what);
    *out = (float)x;
    return BR_OK;
}

static int read_int(json_t *o, const char *key, long long lo, long long hi, int32_t *out,
                    bool *present, struct br_http_error *e)
{
    json_t *v = opt(o, key);
    if (present) *present = v != NULL;
    if (!v) return BR_OK;
    char what[96];
    snprintf(what, sizeof what, "an integer in [%lld, %lld]", lo, hi);
    if (!json_is_integer(v)) return bad(e, key, v, what);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return bad(e, key, v, what);
    *out = (int32_t)x;
    return BR_OK;
}

static int read_bool(json_t *o, const char *key, bool *out, struct br_http_error *e)
{
    json_t *v = opt(o, key);
    if (!v) return BR_OK;
    if (!json_is_boolean(v)) return bad(e, key, v, "true or false");
    *out = json_is_true(v);
    return BR_OK;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int nomem(struct br_http_error *e)
{
    br_http_error_set(e, 500, NULL, "internal_error", "out of memory");
    return BR_E_NOMEM;
}

/* A token id array: 1..max entries, each in [0, vocab) (or >= 0 when vocab is 0). */
static int read_ids(json_t *a, const char *param, const struct br_proto_limits *lim,
                    struct br_req *r, struct br_http_error *e)
{
    size_t n = json_array_size(a);
    if (n < 1 || n > lim->max_tokens_in) {
        br_http_error_set(e, 400, param, NULL, "%s: must hold 1..%u token ids, got %zu", param,
                          lim->max_tokens_in, n);
        return BR_E_PROTOCOL;
    }
    r->tokens = malloc(n * sizeof *r->tokens);
    if (!r->tokens) return nomem(e);
    long long hi = lim->vocab_size > 0 ? lim->vocab_size - 1 : INT32_MAX;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        long long x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (!json_is_integer(v) || x < 0 || x > hi) {
            char p[48], what[64];
            snprintf(p, sizeof p, "%s[%zu]", param, i);
            snprintf(what, sizeof what, "an integer in [0, %lld]", hi);
            return bad(e, p, v, what);
        }
        r->tokens[i] = (int32_t)x;
    }
    r->n_tokens = (uint32_t)n;
    r->input = BR_INPUT_TOKENS;
    r->add_bos = false;
    return BR_OK;
}

static int read_prompt(json_t *o, const struct br_proto_limits *lim, struct br_req *r,
                       struct br_http_error *e)
{
    json_t *v = required(o, "prompt", e);
    if (!v) return BR_E_PROTOCOL;
    /* OpenAI also takes a list of prompts (a batch): one is accepted as the prompt */
    if (json_is_array(v) && json_array_size(v) >= 1 &&
        (json_is_string(json_array_get(v, 0)) || json_is_array(json_array_get(v, 0)))) {
        if (json_array_size(v) > 1) {
            br_http_error_set(e, 400, "prompt", NULL,
                              "prompt: a list of %zu prompts is not supported; send one "
                              "request per prompt",
                              json_array_size(v));
            return BR_E_PROTOCOL;
        }
        v = json_array_get(v, 0);
    }
    if (json_is_string(v)) {
        size_t n = json_string_length(v);
        if (n > lim->max_prompt_bytes) {
            br_http_error_set(e, 400, "prompt", NULL,
                              "prompt: %zu bytes, more than the %zu allowed", n,
                              lim->max_prompt_bytes);
            return BR_E_PROTOCOL;
        }
        if (!(r->prompt = dup_n(json_string_value(v), n))) return nomem(e);
        r->prompt_len = n;
        r->input = BR_INPUT_PROMPT;
        return BR_OK;
    }
    if (json_is_array(v)) return read_ids(v, "prompt", lim, r, e);
    return bad(e, "prompt", v, "a string or an array of token ids");
}

static int read_role(json_t *v, const char *param, enum br_chat_role *out, struct br_http_error *e)
{
    static const struct {
        const char *name;
        enum br_chat_role role;
    } roles[] = {{"system", BR_ROLE_SYSTEM},
                 {"developer", BR_ROLE_SYSTEM},
                 {"user", BR_ROLE_USER},
                 {"assistant", BR_ROLE_ASSISTANT},
                 {"tool", BR_ROLE_TOOL}};
    if (json_is_string(v))
        for (size_t i = 0; i < sizeof roles / sizeof *roles; i++)
            if (!strcmp(json_string_value(v), roles[i].name)) {
                *out = roles[i].role;
                return BR_OK;
            }
    return bad(e, param, v, "one of system, developer, user, assistant, tool");
}

/* A message's content: a string, an array of {type: "text", text} parts (joined), or
 * null (an assistant turn that only called tools). */
static int read_content(json_t *v, const char *param, struct br_chat_msg *m,
                        struct br_http_error *e)
{
    if (!v || json_is_null(v)) {
        m->content = dup_n("", 0);
        return m->content ? BR_OK : nomem(e);
    }
    if (json_is_string(v)) {
        m->content_len = json_string_length(v);
        m->content = dup_n(json_string_value(v), m->content_len);
        return m->content ? BR_OK : nomem(e);
    }
    if (!json_is_array(v)) return bad(e, param, v, "a string or an array of text parts");
    size_t total = 0, i;
    json_t *part;
    char p[96];
    json_array_foreach(v, i, part)
    {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        snprintf(p, sizeof p, "%s[%zu]", param, i);
        if (!json_is_object(part)) return bad(e, p, part, "an object {type: \"text\", text}");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text")) {
            snprintf(p, sizeof p, "%s[%zu].type", param, i);
            return bad(e, p, type ? type : json_null(), "\"text\" (the only part type supported)");
        }
        if (!json_is_string(text)) {
            snprintf(p, sizeof p, "%s[%zu].text", param, i);
            return bad(e, p, text ? text : json_null(), "a string");
        }
        total += json_string_length(text);
    }
    if (!(m->content = malloc(total + 1))) return nomem(e);
    size_t at = 0;
    json_array_foreach(v, i, part)
    {
        json_t *text = json_object_get(part, "text");
        memcpy(m->content + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    m->content[at] = '\0';
    m->content_len = at;
    return BR_OK;
}

static int read_messages(json_t *o, const struct br_proto_limits *lim, struct br_req *r,
                         struct br_http_error *e)
{
    json_t *a = required(o, "messages", e);
    if (!a) return BR_E_PROTOCOL;
    if (!json_is_array(a)) return bad(e, "messages", a, "an array of {role, content} objects");
    size_t n = json_array_size(a);
    if (n < 1 || n > lim->max_messages) {
        br_http_error_set(e, 400, "messages", NULL, "messages: must hold 1..%u messages, got %zu",
                          lim->max_messages, n);
        return BR_E_PROTOCOL;
    }
    r->messages = calloc(n, sizeof *r->messages);
    if (!r->messages) return nomem(e);
    r->input = BR_INPUT_MESSAGES;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(a, i);
        char p[64];
        snprintf(p, sizeof p, "messages[%zu]", i);
        if (!json_is_object(m)) return bad(e, p, m, "an object {role, content}");
        r->n_messages = (uint32_t)(i + 1);
        snprintf(p, sizeof p, "messages[%zu].role", i);
        json_t *role = json_object_get(m, "role");
        int rc = read_role(role ? role : json_null(), p, &r->messages[i].role, e);
        if (rc) return rc;
        snprintf(p, sizeof p, "messages[%zu].content", i);
        if ((rc = read_content(json_object_get(m, "content"), p, &r->messages[i], e))) return rc;
        total += r->messages[i].content_len;
    }
    if (total > lim->max_prompt_bytes) {
        br_http_error_set(e, 400, "messages", NULL,
                          "messages: %zu bytes of content, more than the %zu allowed", total,
                          lim->max_prompt_bytes);
        return BR_E_PROTOCOL;
    }
    return BR_OK;
}

static int read_stop(json_t *o, const struct br_proto_limits *lim, struct br_req_sampling *s,
                     struct br_http_error *e)
{
    json_t *v = opt(o, "stop");
    if (!v) return BR_OK;
    size_t n = json_is_string(v) ? 1 : json_is_array(v) ? json_array_size(v) : 0;
    if (!json_is_string(v) && !json_is_array(v))
        return bad(e, "stop", v, "a string or an array of strings");
    if (n > lim->max_stop) {
        br_http_error_set(e, 400, "stop", NULL, "stop: at most %u strings, got %zu", lim->max_stop,
                          n);
        return BR_E_PROTOCOL;
    }
    if (n == 0) return BR_OK;
    s->stop = calloc(n, sizeof *s->stop);
    s->stop_len = calloc(n, sizeof *s->stop_len);
    if (!s->stop || !s->stop_len) return nomem(e);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_is_string(v) ? v : json_array_get(v, i);
        char p[32], what[64];
        snprintf(p, sizeof p, json_is_string(v) ? "stop" : "stop[%zu]", i);
        snprintf(what, sizeof what, "a string of 1..%zu bytes", lim->max_stop_bytes);
        if (!json_is_string(x) || json_string_length(x) < 1 ||
            json_string_length(x) > lim->max_stop_bytes)
            return bad(e, p, x, what);
        if (!(s->stop[i] = dup_n(json_string_value(x), json_string_length(x)))) return nomem(e);
        s->stop_len[i] = json_string_length(x);
        s->n_stop = (uint32_t)(i + 1);
    }
    return BR_OK;
}

static int read_logit_bias(json_t *o, const struct br_proto_limits *lim, struct br_req_sampling *s,
                           struct br_http_error *e)
{
    json_t *v = opt(o, "logit_bias");
    if (!v) return BR_OK;
    if (!json_is_object(v)) return bad(e, "logit_bias", v, "an object {\"token id\": bias}");
    size_t n = json_object_size(v);
    if (n > lim->max_logit_bias) {
        br_http_error_set(e, 400, "logit_bias", NULL, "logit_bias: at most %u entries, got %zu",
                          lim->max_logit_bias, n);
        return BR_E_PROTOCOL;
    }
    if (n == 0) return BR_OK;
    s->logit_bias = calloc(n, sizeof *s->logit_bias);
    if (!s->logit_bias) return nomem(e);
    const char *key;
    json_t *b;
    long long hi = lim->vocab_size > 0 ? lim->vocab_size - 1 : INT32_MAX;
    json_object_foreach(v, key, b)
    {
        char p[96];
        snprintf(p, sizeof p, "logit_bias[\"%.40s\"]", key);
        char *end = NULL;
        long long id = strtoll(key, &end, 10);
        if (!*key || *end || id < 0 || id > hi) {
            br_http_error_set(e, 400, "logit_bias", NULL,
                              "logit_bias: key \"%.40s\" must be a token id in [0, %lld]", key, hi);
            return BR_E_PROTOCOL;
        }
        if (!json_is_number(b) || !(json_number_value(b) >= -100 && json_number_value(b) <= 100))
            return bad(e, p, b, "a number in [-100, 100]");
        s->logit_bias[s->n_logit_bias++] =
            (struct br_logit_bias){(int32_t)id, (float)json_number_value(b)};
    }
    return BR_OK;
}

static int read_seed(json_t *o, struct br_req_sampling *s, struct br_http_error *e)
{
    json_t *v = opt(o, "seed");
    if (!v) return BR_OK;
    if (!json_is_integer(v) || json_integer_value(v) < -1)
        return bad(e, "seed", v, "an integer >= 0 (or -1: the server's choice)");
    long long x = json_integer_value(v);
    s->has_seed = x >= 0;
    s->seed = x >= 0 ? (uint64_t)x : 0;
    return BR_OK;
}

/* Everything both endpoints share. */
static int read_common(json_t *o, enum br_http_kind kind, const struct br_proto_limits *lim,
                       struct br_http_req *out, struct br_http_error *e)
{
    struct br_req *r = &out->req;
    struct br_req_sampling *s = &r->sampling;
    int rc;
    json_t *model = opt(o, "model");
    if (model) {
        if (!json_is_string(model)) return bad(e, "model", model, "a string");
        if (!(out->model = dup_n(json_string_value(model), json_string_length(model))))
            return nomem(e);
    }
    int32_t n = 1;
    if ((rc = read_int(o, "n", 1, INT32_MAX, &n, NULL, e))) return rc;
    if (n != 1) {
        br_http_error_set(e, 400, "n", NULL,
                          "n: only 1 choice per request is supported, got %d; send %d requests", n,
                          n);
        return BR_E_PROTOCOL;
    }
    bool present = false;
    int32_t mt = r->max_tokens;
    if ((rc = read_int(o, "max_tokens", 1, lim->max_new_tokens, &mt, NULL, e))) return rc;
    if ((rc = read_int(o, "max_completion_tokens", 1, lim->max_new_tokens, &mt, &present, e)))
        return rc;
    r->max_tokens = mt;
    if ((rc = read_num(o, "temperature", 0, 100, false, &s->temperature, e)) ||
        (rc = read_num(o, "top_p", 0, 1, false, &s->top_p, e)) ||
        (rc = read_num(o, "min_p", 0, 1, false, &s->min_p, e)) ||
        (rc = read_num(o, "repeat_penalty", 0, 10, true, &s->repeat_penalty, e)) ||
        (rc = read_num(o, "presence_penalty", -2, 2, false, &s->presence_penalty, e)) ||
        (rc = read_num(o, "frequency_penalty", -2, 2, false, &s->frequency_penalty, e)) ||
        (rc = read_int(o, "top_k", 0, 1 << 20, &s->top_k, NULL, e)) ||
        (rc = read_int(o, "repeat_last_n", 0, 1 << 20, &s->repeat_last_n, NULL, e)) ||
        (rc = read_seed(o, s, e)) || (rc = read_stop(o, lim, s, e)) ||
        (rc = read_logit_bias(o, lim, s, e)))
        return rc;
    if ((rc = read_bool(o, "stream", &out->stream, e))) return rc;
    json_t *so = opt(o, "stream_options");
    if (so) {
        if (!json_is_object(so)) return bad(e, "stream_options", so, "an object");
        json_t *iu = opt(so, "include_usage");
        if (iu && !json_is_boolean(iu))
            return bad(e, "stream_options.include_usage", iu, "true or false");
        out->include_usage = iu && json_is_true(iu);
    }
    if (kind == BR_HTTP_COMPLETIONS) {
        /* completions: logprobs is the number of alternatives per token (the sampled
         * token's logprob always comes too) */
        json_t *lp = opt(o, "logprobs");
        if (lp) {
            if (!json_is_integer(lp) || json_integer_value(lp) < 0 || json_integer_value(lp) > 5)
                return bad(e, "logprobs", lp, "an integer in [0, 5]");
            out->logprobs = true;
            out->top_logprobs = (int32_t)json_integer_value(lp);
        }
        bool echo = false;
        if ((rc = read_bool(o, "echo", &echo, e))) return rc;
        if (echo) {
            br_http_error_set(e, 400, "echo", NULL, "echo: true is not supported");
            return BR_E_PROTOCOL;
        }
    } else {
        if ((rc = read_bool(o, "logprobs", &out->logprobs, e))) return rc;
        if ((rc = read_int(o, "top_logprobs", 0, BR_REQ_MAX_TOP_LOGPROBS, &out->top_logprobs, NULL,
                           e)))
            return rc;
        if (out->top_logprobs > 0 && !out->logprobs) {
            br_http_error_set(e, 400, "top_logprobs", NULL,
                              "top_logprobs: %d alternatives asked without \"logprobs\": true",
                              out->top_logprobs);
            return BR_E_PROTOCOL;
        }
    }
    r->logprobs = out->logprobs;
    r->top_logprobs = out->top_logprobs;
    return BR_OK;
}

int br_http_parse_request(enum br_http_kind kind, const char *body, size_t len,
                          const struct br_proto_limits *lim, struct br_http_req *out,
                          struct br_http_error *e)
{
    struct br_proto_limits dl;
    if (!lim) {
        br_proto_limits_default(&dl);
        lim = &dl;
    }
    memset(out, 0, sizeof *out);
    br_req_init(&out->req);
    out->kind = kind;
    out->req.type = BR_REQ_GENERATE;
    memset(e, 0, sizeof *e);
    pthread_once(&alloc_once, install_alloc);
    json_error_t je;
    size_t budget = BUDGET_BASE + len * BUDGET_PER_BYTE;
    if (budget > BUDGET_MAX) budget = BUDGET_MAX;
    budget_left = budget;
    budget_hit = 0;
    budget_on = 1;
    json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
    budget_on = 0;
    if (!root) {
        if (budget_hit || json_error_code(&je) == json_error_out_of_memory)
            br_http_error_set(e, 400, NULL, NULL,
                              "the JSON body holds more values than this server parses for its "
                              "size (%zu bytes)",
                              len);
        else
            br_http_error_set(e, 400, NULL, NULL,
                              "the body is not valid JSON: %s (line %d, column %d)", je.text,
                              je.line, je.column);
        return BR_E_PROTOCOL;
    }
    int rc = BR_OK;
    if (!json_is_object(root)) {
        br_http_error_set(e, 400, NULL, NULL, "the body must be a JSON object");
        rc = BR_E_PROTOCOL;
        goto done;
    }
    rc = read_common(root, kind, lim, out, e);
    if (!rc)
        rc = kind == BR_HTTP_CHAT ? read_messages(root, lim, &out->req, e)
                                  : read_prompt(root, lim, &out->req, e);
    out->req.stream = true; /* the front end always takes token events (see frontend_http.c) */
done:
    json_decref(root);
    if (rc && !e->status) nomem(e);
    return rc;
}

void br_http_req_free(struct br_http_req *r)
{
    if (!r) return;
    br_req_free(&r->req);
    free(r->model);
    memset(r, 0, sizeof *r);
}

/* ---- encoders ------------------------------------------------------------------------- */

/* json_dumps of o (stolen), or NULL */
static char *dump(json_t *o)
{
    pthread_once(&alloc_once, install_alloc);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* A string value. Generated text is bytes: those that form no valid UTF-8 become U+FFFD,
 * as in the ZeroMQ protocol's encoders (proto.h), so both transports send the same text. */
static json_t *str_n(const char *s, size_t n)
{
    if (!s) return json_string("");
    if (br_proto_utf8_valid(s, n)) return json_stringn(s, n);
    struct br_buf b = {0};
    json_t *v = br_proto_utf8_append(&b, s, n) == BR_OK
                    ? json_stringn(b.data ? (const char *)b.data : "", b.len)
                    : NULL;
    br_buf_free(&b);
    return v ? v : json_string("");
}

static json_t *opt_str(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

char *br_http_error_json(const struct br_http_error *e)
{
    pthread_once(&alloc_once, install_alloc);
    return dump(json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message",
                          str_n(e->message, strlen(e->message)), "type",
                          e->type ? e->type : "invalid_request_error", "param", opt_str(e->param),
                          "code", opt_str(e->code)));
}

static json_t *usage_json(const struct br_usage *u)
{
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                     "completion_tokens", (json_int_t)u->completion_tokens, "total_tokens",
                     (json_int_t)u->prompt_tokens + (json_int_t)u->completion_tokens);
}

static json_t *num_or_null(float x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

/* [b0, b1, ...]: the bytes as integers */
static json_t *bytes_json(const char *p, size_t n)
{
    json_t *bytes = json_array();
    for (size_t k = 0; bytes && k < n; k++)
        json_array_append_new(bytes, json_integer((unsigned char)p[k]));
    return bytes ? bytes : json_null();
}

/* chat: [{token, logprob, bytes}], most likely first */
static json_t *chat_top_json(const struct br_http_top *t)
{
    json_t *a = json_array();
    for (uint32_t i = 0; a && t && i < t->n; i++) {
        const struct br_http_alt *x = &t->alt[i];
        json_array_append_new(a, json_pack("{s:o,s:o,s:o}", "token", str_n(x->bytes, x->len),
                                           "logprob", num_or_null(x->logprob), "bytes",
                                           bytes_json(x->bytes, x->len)));
    }
    return a ? a : json_array();
}

/* completions: {token text: logprob}; two tokens that read the same keep the likelier */
static json_t *completions_top_json(const struct br_http_top *t)
{
    json_t *o = json_object();
    for (uint32_t i = 0; o && i < t->n; i++) {
        json_t *key = str_n(t->alt[i].bytes, t->alt[i].len);
        const char *k = key ? json_string_value(key) : NULL;
        size_t klen = key ? json_string_length(key) : 0;
        if (k && !json_object_getn(o, k, klen))
            json_object_setn_new(o, k, klen, num_or_null(t->alt[i].logprob));
        json_decref(key);
    }
    return o ? o : json_null();
}

/* completions: {tokens, token_logprobs, top_logprobs, text_offset};
 * chat: {content: [{token, logprob, bytes, top_logprobs}]} */
static json_t *logprobs_json(enum br_http_kind kind, const struct br_http_logprobs *lp,
                             size_t text_offset)
{
    if (!lp) return json_null();
    if (kind == BR_HTTP_CHAT) {
        json_t *content = json_array();
        for (size_t i = 0; content && i < lp->n; i++) {
            const char *p = lp->pieces[i];
            json_array_append_new(
                content, json_pack("{s:o,s:o,s:o,s:o}", "token", str_n(p, strlen(p)), "logprob",
                                   num_or_null(lp->logprobs[i]), "bytes", bytes_json(p, strlen(p)),
                                   "top_logprobs", chat_top_json(lp->top ? &lp->top[i] : NULL)));
        }
        return json_pack("{s:o}", "content", content ? content : json_array());
    }
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (size_t i = 0; i < lp->n; i++) {
        json_array_append_new(toks, str_n(lp->pieces[i], strlen(lp->pieces[i])));
        json_array_append_new(lps, num_or_null(lp->logprobs[i]));
        json_array_append_new(tops, lp->top ? completions_top_json(&lp->top[i]) : json_null());
        json_array_append_new(offs, json_integer((json_int_t)text_offset));
        text_offset += strlen(lp->pieces[i]);
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs",
                     tops, "text_offset", offs);
}

char *br_http_completion_json(enum br_http_kind kind, const char *id, int64_t created,
                              const char *model, const char *text, size_t text_len,
                              const char *finish, const struct br_usage *usage,
                              const struct br_http_logprobs *lp)
{
    pthread_once(&alloc_once, install_alloc);
    json_t *choice =
        kind == BR_HTTP_CHAT
            ? json_pack("{s:i,s:{s:s,s:o},s:o,s:s}", "index", 0, "message", "role", "assistant",
                        "content", str_n(text, text_len), "logprobs", logprobs_json(kind, lp, 0),
                        "finish_reason", finish)
            : json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "text", str_n(text, text_len), "logprobs",
                        logprobs_json(kind, lp, 0), "finish_reason", finish);
    return dump(json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o,s:s}", "id", id, "object",
                          kind == BR_HTTP_CHAT ? "chat.completion" : "text_completion", "created",
                          (json_int_t)created, "model", model, "choices", choice, "usage",
                          usage_json(usage), "system_fingerprint", "bitrack"));
}

char *br_http_chunk_json(enum br_http_kind kind, const char *id, int64_t created, const char *model,
                         const char *piece, size_t piece_len, bool role_first, const char *finish,
                         const struct br_http_logprobs *lp, const struct br_usage *usage)
{
    pthread_once(&alloc_once, install_alloc);
    const char *object = kind == BR_HTTP_CHAT ? "chat.completion.chunk" : "text_completion";
    if (usage)
        return dump(json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", id, "object", object, "created",
                              (json_int_t)created, "model", model, "choices", "usage",
                              usage_json(usage)));
    json_t *choice;
    if (kind == BR_HTTP_CHAT) {
        json_t *delta = json_object();
        if (delta && role_first) json_object_set_new(delta, "role", json_string("assistant"));
        if (delta && (!finish || piece_len))
            json_object_set_new(delta, "content", str_n(piece, piece_len));
        choice =
            json_pack("{s:i,s:o,s:o,s:o}", "index", 0, "delta", delta ? delta : json_object(),
                      "logprobs", logprobs_json(kind, lp, 0), "finish_reason", opt_str(finish));
    } else {
        choice =
            json_pack("{s:i,s:o,s:o,s:o}", "index", 0, "text", str_n(piece, piece_len), "logprobs",
                      logprobs_json(kind, lp, 0), "finish_reason", opt_str(finish));
    }
    return dump(json_pack("{s:s,s:s,s:I,s:s,s:[o],s:s}", "id", id, "object", object, "created",
                          (json_int_t)created, "model", model, "choices", choice,
                          "system_fingerprint", "bitrack"));
}

char *br_http_models_json(const char *model, int64_t created, int32_t n_vocab, int32_t n_ctx)
{
    pthread_once(&alloc_once, install_alloc);
    return dump(json_pack("{s:s,s:[{s:s,s:s,s:I,s:s,s:{s:i,s:i}}]}", "object", "list", "data", "id",
                          model, "object", "model", "created", (json_int_t)created, "owned_by",
                          "bitrack", "meta", "n_vocab", n_vocab, "n_ctx", n_ctx));
}
