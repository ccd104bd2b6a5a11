/*
 * The load generator's client for OpenAI-compatible servers (`bitrack bench --openai URL`,
 * loadgen.h): bitrack's own --http, llama-server, vLLM.
 *
 * Each slot owns one libcurl easy handle (its connection is kept alive between requests).
 * A request is a streaming POST to URL/v1/completions (or /v1/chat/completions with
 * --chat) with stream_options.include_usage; the response's Server-Sent Events are split
 * into lines here and each `data:` payload is parsed with Jansson. Every chunk that
 * carries a choice with text (or a token id) and no finish_reason is one token event to
 * the load generator, stamped on arrival, exactly as a ZeroMQ `token` event is; the usage
 * chunk (or the last chunk) makes the `done`. HTTP errors map to the load generator's
 * codes: 429 busy, 400 bad_request (too_long for context_length_exceeded), 503
 * unavailable, 5xx internal.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bench/loadgen.h"
#include "proto/proto.h"

#define MAX_LINE ((size_t)1 << 20)

struct br_loadgen_openai {
    CURL *curl;
    struct curl_slist *headers;
    char url[1024];
    const struct br_loadgen_config *cfg;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int br_loadgen_openai_open(const struct br_loadgen_config *cfg, struct br_loadgen_openai **out,
                           struct br_err *err)
{
    pthread_once(&curl_once, curl_init_once);
    *out = NULL;
    struct br_loadgen_openai *c = calloc(1, sizeof *c);
    if (!c) return br_err_set(err, BR_E_NOMEM, "out of memory");
    c->cfg = cfg;
    size_t n = strlen(cfg->openai_url);
    while (n && cfg->openai_url[n - 1] == '/') n--;
    /* URL is the server's base (http://host:port or .../v1) */
    int has_v1 = n >= 3 && !strncmp(cfg->openai_url + n - 3, "/v1", 3);
    snprintf(c->url, sizeof c->url, "%.*s%s%s", (int)n, cfg->openai_url, has_v1 ? "" : "/v1",
             cfg->chat ? "/chat/completions" : "/completions");
    c->curl = curl_easy_init();
    c->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (c->headers) c->headers = curl_slist_append(c->headers, "Accept: text/event-stream");
    if (c->headers && cfg->api_key) {
        char auth[600];
        snprintf(auth, sizeof auth, "Authorization: Bearer %.512s", cfg->api_key);
        c->headers = curl_slist_append(c->headers, auth);
    }
    if (!c->curl || !c->headers) {
        br_loadgen_openai_close(&c);
        return br_err_set(err, BR_E_NOMEM, "cannot set up an HTTP client");
    }
    *out = c;
    return BR_OK;
}

void br_loadgen_openai_close(struct br_loadgen_openai **cp)
{
    if (!cp || !*cp) return;
    if ((*cp)->curl) curl_easy_cleanup((*cp)->curl);
    curl_slist_free_all((*cp)->headers);
    free(*cp);
    *cp = NULL;
}

/* What one response's bytes are turned into. */
struct stream {
    int (*on_event)(const struct br_resp *r, void *user);
    void *user;
    struct br_buf line; /* the current line so far */
    struct br_buf body; /* a non-SSE body (an error), at most MAX_LINE */
    bool sse, done, too_long;
    struct br_usage usage;
    int32_t finish;
    char error[256];
};

static void on_data(struct stream *s, const char *p, size_t n)
{
    if (n == 6 && !memcmp(p, "[DONE]", 6)) return;
    json_error_t je;
    json_t *o = json_loadb(p, n, 0, &je);
    if (!o) return;
    json_t *err = json_object_get(o, "error");
    if (err) {
        json_t *m = json_object_get(err, "message");
        snprintf(s->error, sizeof s->error, "%s",
                 json_is_string(m) ? json_string_value(m) : "error event in the stream");
        json_decref(o);
        return;
    }
    json_t *usage = json_object_get(o, "usage");
    if (json_is_object(usage)) {
        s->usage.prompt_tokens =
            (uint32_t)json_integer_value(json_object_get(usage, "prompt_tokens"));
        s->usage.completion_tokens =
            (uint32_t)json_integer_value(json_object_get(usage, "completion_tokens"));
    }
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    if (ch) {
        json_t *fr = json_object_get(ch, "finish_reason");
        json_t *text = json_object_get(ch, "text");
        json_t *delta = json_object_get(ch, "delta");
        if (!text && delta) text = json_object_get(delta, "content");
        if (json_is_string(fr)) {
            s->finish =
                !strcmp(json_string_value(fr), "length") ? BR_FINISH_LENGTH : BR_FINISH_STOP;
        } else if (json_is_string(text)) {
            struct br_resp r;
            memset(&r, 0, sizeof r);
            r.type = BR_RESP_TOKEN;
            r.token = 0;
            r.text = (char *)json_string_value(text);
            r.text_len = json_string_length(text);
            s->on_event(&r, s->user);
        }
    }
    json_decref(o);
}

static size_t on_bytes(char *ptr, size_t size, size_t nmemb, void *user)
{
    struct stream *s = user;
    size_t n = size * nmemb;
    if (!s->sse) {
        if (s->body.len + n <= MAX_LINE) br_buf_append(&s->body, ptr, n);
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        if (ptr[i] != '\n') {
            if (s->line.len < MAX_LINE) br_buf_append(&s->line, ptr + i, 1);
            continue;
        }
        const char *l = (const char *)s->line.data;
        size_t ll = s->line.len;
        if (ll && l[ll - 1] == '\r') ll--;
        if (ll >= 5 && !memcmp(l, "data:", 5)) {
            size_t k = 5;
            while (k < ll && l[k] == ' ') k++;
            on_data(s, l + k, ll - k);
        }
        br_buf_reset(&s->line);
    }
    return n;
}

static size_t on_header(char *buf, size_t size, size_t n, void *user)
{
    struct stream *s = user;
    size_t len = size * n;
    if (len > 13 && !strncasecmp(buf, "content-type:", 13)) {
        const char *v = buf + 13;
        while (*v == ' ') v++;
        s->sse = !strncasecmp(v, "text/event-stream", 17);
    }
    return len;
}

int br_loadgen_openai_generate(struct br_loadgen_openai *c, const struct br_req *req,
                               int (*on_event)(const struct br_resp *r, void *user), void *user,
                               struct br_err *err)
{
    const struct br_loadgen_config *cfg = c->cfg;
    json_t *o = json_object();
    if (!o) return br_err_set(err, BR_E_NOMEM, "out of memory");
    if (cfg->model) json_object_set_new(o, "model", json_string(cfg->model));
    if (cfg->chat) {
        json_t *msgs = json_pack("[{s:s,s:s%}]", "role", "user", "content",
                                 req->prompt ? req->prompt : "", req->prompt_len);
        json_object_set_new(o, "messages", msgs ? msgs : json_array());
    } else if (req->input == BR_INPUT_TOKENS) {
        json_t *ids = json_array();
        for (uint32_t i = 0; ids && i < req->n_tokens; i++)
            json_array_append_new(ids, json_integer(req->tokens[i]));
        json_object_set_new(o, "prompt", ids ? ids : json_array());
    } else {
        json_object_set_new(
            o, "prompt",
            json_stringn(req->prompt ? req->prompt : "", req->prompt ? req->prompt_len : 0));
    }
    json_object_set_new(o, "max_tokens", json_integer(req->max_tokens));
    json_object_set_new(o, "temperature", json_real(req->sampling.temperature));
    json_object_set_new(o, "top_p", json_real(req->sampling.top_p));
    /* llama.cpp-style extensions (bitrack, llama-server and vLLM take them) */
    json_object_set_new(o, "top_k", json_integer(req->sampling.top_k));
    json_object_set_new(o, "min_p", json_real(req->sampling.min_p));
    if (req->sampling.has_seed)
        json_object_set_new(o, "seed", json_integer((json_int_t)req->sampling.seed));
    if (req->sampling.n_logit_bias) {
        json_t *lb = json_object();
        for (uint32_t i = 0; lb && i < req->sampling.n_logit_bias; i++) {
            char k[16];
            snprintf(k, sizeof k, "%d", req->sampling.logit_bias[i].token);
            json_object_set_new(lb, k, json_real(-100.0));
        }
        json_object_set_new(o, "logit_bias", lb ? lb : json_object());
    }
    json_object_set_new(o, "stream", json_true());
    json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1));
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!body) return br_err_set(err, BR_E_NOMEM, "out of memory");

    struct stream s = {.on_event = on_event, .user = user, .finish = -1};
    CURL *h = c->curl;
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_bytes);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    /* the silence timeout: fail when fewer than 1 byte/s arrived for that long */
    long secs = cfg->timeout_ms > 0 ? (cfg->timeout_ms + 999) / 1000 : 30;
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, secs);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, secs);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    free(body);
    int rc = BR_OK;
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        rc = br_err_set(err, BR_E_TIMEOUT, "%s: no data for %ld s", c->url, secs);
    } else if (cc != CURLE_OK) {
        rc = br_err_set(err, BR_E_UNAVAILABLE, "%s: %s", c->url, curl_easy_strerror(cc));
    } else if (status != 200) {
        char msg[300] = "";
        json_error_t je;
        json_t *eo = s.body.len ? json_loadb((const char *)s.body.data, s.body.len, 0, &je) : NULL;
        json_t *em = json_object_get(json_object_get(eo, "error"), "message");
        json_t *ecode = json_object_get(json_object_get(eo, "error"), "code");
        snprintf(msg, sizeof msg, "%s", json_is_string(em) ? json_string_value(em) : "");
        int too_long =
            json_is_string(ecode) && !strcmp(json_string_value(ecode), "context_length_exceeded");
        json_decref(eo);
        rc = status == 429               ? BR_E_BUSY
             : status == 400 && too_long ? BR_E_TOO_LONG
             : status == 400             ? BR_E_PROTOCOL
             : status == 503             ? BR_E_UNAVAILABLE
             : status >= 500             ? BR_E_INTERNAL
                                         : BR_E_INVALID;
        br_err_set(err, rc, "HTTP %ld: %s", status, msg[0] ? msg : "(no error message)");
    } else if (s.error[0]) {
        rc = br_err_set(err, BR_E_INTERNAL, "error in the stream: %s", s.error);
    } else {
        struct br_resp r;
        memset(&r, 0, sizeof r);
        r.type = BR_RESP_DONE;
        r.finish_reason = s.finish >= 0 ? (enum br_finish)s.finish : BR_FINISH_STOP;
        r.usage = s.usage;
        on_event(&r, user);
    }
    br_buf_free(&s.line);
    br_buf_free(&s.body);
    return rc;
}

int br_loadgen_openai_vocab(const char *url, const char *api_key, int32_t *vocab, int64_t *ctx,
                            struct br_err *err)
{
    pthread_once(&curl_once, curl_init_once);
    *vocab = 0;
    *ctx = 0;
    size_t n = strlen(url);
    while (n && url[n - 1] == '/') n--;
    int has_v1 = n >= 3 && !strncmp(url + n - 3, "/v1", 3);
    char full[1100];
    snprintf(full, sizeof full, "%.*s%s/models", (int)n, url, has_v1 ? "" : "/v1");
    CURL *h = curl_easy_init();
    struct curl_slist *hd = NULL;
    if (api_key) {
        char auth[600];
        snprintf(auth, sizeof auth, "Authorization: Bearer %.512s", api_key);
        hd = curl_slist_append(NULL, auth);
    }
    struct stream s = {0};
    if (!h) return br_err_set(err, BR_E_NOMEM, "cannot set up an HTTP client");
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_bytes);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hd);
    int rc = BR_OK;
    if (cc != CURLE_OK || status != 200) {
        rc = br_err_set(err, BR_E_UNAVAILABLE, "%s: %s", full,
                        cc != CURLE_OK ? curl_easy_strerror(cc) : "not HTTP 200");
    } else {
        json_error_t je;
        json_t *o = json_loadb((const char *)s.body.data, s.body.len, 0, &je);
        json_t *meta = json_object_get(json_array_get(json_object_get(o, "data"), 0), "meta");
        json_t *v = json_object_get(meta, "n_vocab");
        if (json_is_integer(v)) *vocab = (int32_t)json_integer_value(v);
        json_t *cx = json_object_get(meta, "n_ctx");
        if (json_is_integer(cx)) *ctx = json_integer_value(cx);
        json_decref(o);
        if (*vocab <= 3)
            rc = br_err_set(err, BR_E_NOTFOUND,
                            "%s does not tell the vocabulary size; pass --vocab", full);
    }
    br_buf_free(&s.body);
    return rc;
}
