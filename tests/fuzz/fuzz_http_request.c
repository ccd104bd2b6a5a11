/*
 * libFuzzer harness for the HTTP API's request bodies (coordinator/http_api.h): the first
 * byte picks the endpoint (completions or chat), the rest is the body given to
 * br_http_parse_request with the default limits and a vocabulary of 1000.
 *
 * Whatever the parser returns, every field of the request is read (so ASan sees a short or
 * dangling array) and freed twice (the second free must be harmless). A refusal must be a
 * 400 (or a 500 for memory) with a message. An accepted request must keep the documented
 * ranges (PROTOCOL.md), and its strings are then fed to every response encoder, whose
 * output must parse back as JSON.
 */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/http_api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) sink += b[i];
}

static void check_str(const char *s, size_t len)
{
    if (!s) {
        if (len) abort();
        return;
    }
    touch(s, len + 1);
    if (s[len] != '\0' || !br_proto_utf8_valid(s, len)) abort();
}

static void check_json(char *s)
{
    if (!s) return; /* out of memory is allowed */
    json_error_t je;
    json_t *o = json_loads(s, 0, &je);
    if (!o) abort();
    json_decref(o);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    enum br_http_kind kind = data[0] & 1 ? BR_HTTP_CHAT : BR_HTTP_COMPLETIONS;
    struct br_proto_limits lim;
    br_proto_limits_default(&lim);
    lim.vocab_size = 1000;
    struct br_http_req r;
    struct br_http_error e;
    int rc = br_http_parse_request(kind, (const char *)data + 1, size - 1, &lim, &r, &e);
    const struct br_req *q = &r.req;
    check_str(q->prompt, q->prompt_len);
    touch(q->tokens, (size_t)q->n_tokens * sizeof *q->tokens);
    for (uint32_t i = 0; q->messages && i < q->n_messages; i++)
        check_str(q->messages[i].content, q->messages[i].content_len);
    for (uint32_t i = 0; q->sampling.stop && i < q->sampling.n_stop; i++)
        check_str(q->sampling.stop[i], q->sampling.stop_len[i]);
    touch(q->sampling.logit_bias,
          (size_t)q->sampling.n_logit_bias * sizeof *q->sampling.logit_bias);
    if (r.model) touch(r.model, strlen(r.model) + 1);
    if (rc) {
        if (!(e.status == 400 || e.status == 500) || !e.message[0]) abort();
        check_json(br_http_error_json(&e));
    } else {
        const struct br_req_sampling *s = &q->sampling;
        if (q->type != BR_REQ_GENERATE) abort();
        if (q->max_tokens < 1 || q->max_tokens > lim.max_new_tokens) abort();
        if (!(s->temperature >= 0 && s->temperature <= 100)) abort();
        if (!(s->top_p >= 0 && s->top_p <= 1) || !(s->min_p >= 0 && s->min_p <= 1)) abort();
        if (!(s->repeat_penalty > 0 && s->repeat_penalty <= 10)) abort();
        if (fabsf(s->presence_penalty) > 2 || fabsf(s->frequency_penalty) > 2) abort();
        if (s->n_stop > lim.max_stop || s->n_logit_bias > lim.max_logit_bias) abort();
        for (uint32_t i = 0; i < q->n_tokens; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= lim.vocab_size) abort();
        for (uint32_t i = 0; i < s->n_logit_bias; i++)
            if (s->logit_bias[i].token < 0 || s->logit_bias[i].token >= lim.vocab_size ||
                fabsf(s->logit_bias[i].bias) > 100)
                abort();
        if (kind == BR_HTTP_CHAT ? q->input != BR_INPUT_MESSAGES
                                 : q->input != BR_INPUT_PROMPT && q->input != BR_INPUT_TOKENS)
            abort();
        if (q->input == BR_INPUT_MESSAGES &&
            (q->n_messages < 1 || q->n_messages > lim.max_messages))
            abort();
        if (q->prompt_len > lim.max_prompt_bytes) abort();
        if (q->top_logprobs < 0 || q->top_logprobs > (kind == BR_HTTP_CHAT ? 20 : 5) ||
            q->top_logprobs != r.top_logprobs || (q->top_logprobs > 0 && !q->logprobs))
            abort();
        /* the request's own text through every encoder */
        const char *text = q->prompt ? q->prompt : q->n_messages ? q->messages[0].content : "";
        size_t len = strlen(text);
        const char *model = r.model ? r.model : "m";
        struct br_usage u = {q->n_tokens, (uint32_t)q->max_tokens};
        float lp = -1.0f;
        /* alternatives: as many as asked, cut from the text at every byte (so partial
         * characters and tokens that read the same) */
        struct br_http_top top = {0};
        for (int32_t i = 0; i < q->top_logprobs; i++)
            top.alt[top.n++] = (struct br_http_alt){text + (size_t)i % (len + 1),
                                                    len - (size_t)i % (len + 1), -(float)i};
        struct br_http_logprobs one = {&text, &lp, 1, q->top_logprobs > 0 ? &top : NULL};
        check_json(br_http_completion_json(kind, "id", 1, model, text, len, "stop", &u, &one));
        check_json(br_http_chunk_json(kind, "id", 1, model, text, len, true, NULL, &one, NULL));
        check_json(br_http_chunk_json(kind, "id", 1, model, "", 0, false, "length", NULL, NULL));
        check_json(br_http_chunk_json(kind, "id", 1, model, NULL, 0, false, NULL, NULL, &u));
        check_json(br_http_models_json(model, 1, 1000, 256));
    }
    br_http_req_free(&r);
    br_http_req_free(&r);
    return 0;
}
