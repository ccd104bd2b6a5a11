/*
 * Tests of coordinator/http_api.c (OpenAI request bodies -> struct br_req, and the JSON
 * responses), coordinator/metrics.c (the Prometheus text) and coordinator/reqlog.c (one
 * line per request). Responses are parsed back with Jansson and checked field by field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/http_api.h"
#include "coordinator/metrics.h"
#include "coordinator/reqlog.h"
#include "test_util.h"

static int parse(enum br_http_kind kind, const char *body, struct br_http_req *r,
                 struct br_http_error *e)
{
    struct br_proto_limits lim;
    br_proto_limits_default(&lim);
    lim.vocab_size = 1000;
    return br_http_parse_request(kind, body, strlen(body), &lim, r, e);
}

/* body must be refused with 400, param `param` (or none), message containing `what` */
static void refused(enum br_http_kind kind, const char *body, const char *param, const char *what)
{
    struct br_http_req r;
    struct br_http_error e;
    int rc = parse(kind, body, &r, &e);
    if (rc != BR_E_PROTOCOL) fail_msg("accepted: %s", body);
    assert_int_equal(e.status, 400);
    if (param) assert_string_equal(e.param, param);
    if (!strstr(e.message, what))
        fail_msg("message '%s' lacks '%s' (body %s)", e.message, what, body);
    br_http_req_free(&r);
}

static json_t *load(char *s)
{
    assert_non_null(s);
    json_error_t je;
    json_t *o = json_loads(s, 0, &je);
    if (!o) fail_msg("not JSON: %s (%s)", s, je.text);
    free(s);
    return o;
}

static void test_completion_full(void **state)
{
    (void)state;
    struct br_http_req r;
    struct br_http_error e;
    const char *body =
        "{\"model\":\"m\",\"prompt\":\"Hello\",\"max_tokens\":7,\"temperature\":0.5,"
        "\"top_p\":0.9,\"top_k\":12,\"min_p\":0.1,\"repeat_penalty\":1.1,\"seed\":42,"
        "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"stop\":[\"a\",\"bc\"],"
        "\"logit_bias\":{\"5\":-100,\"7\":2.5},\"logprobs\":0,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"n\":1,\"user\":\"x\",\"unknown\":[1,{}]}";
    assert_int_equal(parse(BR_HTTP_COMPLETIONS, body, &r, &e), BR_OK);
    assert_string_equal(r.model, "m");
    assert_int_equal(r.req.input, BR_INPUT_PROMPT);
    assert_string_equal(r.req.prompt, "Hello");
    assert_int_equal(r.req.max_tokens, 7);
    assert_true(fabsf(r.req.sampling.temperature - 0.5f) < 1e-6f);
    assert_true(fabsf(r.req.sampling.top_p - 0.9f) < 1e-6f);
    assert_int_equal(r.req.sampling.top_k, 12);
    assert_true(fabsf(r.req.sampling.min_p - 0.1f) < 1e-6f);
    assert_true(fabsf(r.req.sampling.repeat_penalty - 1.1f) < 1e-6f);
    assert_true(r.req.sampling.has_seed);
    assert_int_equal(r.req.sampling.seed, 42);
    assert_int_equal(r.req.sampling.n_stop, 2);
    assert_string_equal(r.req.sampling.stop[1], "bc");
    assert_int_equal(r.req.sampling.n_logit_bias, 2);
    assert_true(r.logprobs && r.req.logprobs);
    assert_true(r.stream && r.include_usage);
    br_http_req_free(&r);
    br_http_req_free(&r); /* idempotent */
}

static void test_defaults_are_native(void **state)
{
    (void)state;
    struct br_http_req r;
    struct br_http_error e;
    struct br_req def;
    br_req_init(&def);
    assert_int_equal(parse(BR_HTTP_COMPLETIONS, "{\"prompt\":[1,2,3]}", &r, &e), BR_OK);
    assert_int_equal(r.req.input, BR_INPUT_TOKENS);
    assert_int_equal(r.req.n_tokens, 3);
    assert_false(r.req.add_bos);
    assert_int_equal(r.req.max_tokens, def.max_tokens);
    assert_true(r.req.sampling.temperature == def.sampling.temperature);
    assert_int_equal(r.req.sampling.top_k, def.sampling.top_k);
    assert_false(r.req.sampling.has_seed);
    assert_false(r.stream);
    br_http_req_free(&r);
    /* null means "default"; a one-element prompt list is the prompt */
    assert_int_equal(parse(BR_HTTP_COMPLETIONS,
                           "{\"prompt\":[\"hi\"],\"temperature\":null,\"max_tokens\":null}", &r,
                           &e),
                     BR_OK);
    assert_string_equal(r.req.prompt, "hi");
    br_http_req_free(&r);
    /* max_completion_tokens is max_tokens too */
    assert_int_equal(parse(BR_HTTP_CHAT,
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                           "\"max_completion_tokens\":9}",
                           &r, &e),
                     BR_OK);
    assert_int_equal(r.req.max_tokens, 9);
    br_http_req_free(&r);
}

static void test_chat_messages(void **state)
{
    (void)state;
    struct br_http_req r;
    struct br_http_error e;
    const char *body = "{\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                       "{\"type\":\"text\",\"text\":\"b\"}]},"
                       "{\"role\":\"assistant\",\"content\":null}],\"logprobs\":true,"
                       "\"top_logprobs\":0}";
    assert_int_equal(parse(BR_HTTP_CHAT, body, &r, &e), BR_OK);
    assert_int_equal(r.req.input, BR_INPUT_MESSAGES);
    assert_int_equal(r.req.n_messages, 3);
    assert_int_equal(r.req.messages[0].role, BR_ROLE_SYSTEM);
    assert_string_equal(r.req.messages[1].content, "ab");
    assert_string_equal(r.req.messages[2].content, "");
    assert_true(r.logprobs);
    assert_int_equal(r.top_logprobs, 0);
    br_http_req_free(&r);
}

/* Alternatives: chat top_logprobs (with logprobs true), completions logprobs N. */
static void test_top_logprobs_parse(void **state)
{
    (void)state;
    struct br_http_req r;
    struct br_http_error e;
    assert_int_equal(parse(BR_HTTP_CHAT,
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                           "\"logprobs\":true,\"top_logprobs\":20}",
                           &r, &e),
                     BR_OK);
    assert_true(r.logprobs && r.req.logprobs);
    assert_int_equal(r.top_logprobs, 20);
    assert_int_equal(r.req.top_logprobs, 20);
    br_http_req_free(&r);
    assert_int_equal(parse(BR_HTTP_COMPLETIONS, "{\"prompt\":\"x\",\"logprobs\":5}", &r, &e),
                     BR_OK);
    assert_true(r.logprobs && r.req.logprobs);
    assert_int_equal(r.req.top_logprobs, 5);
    br_http_req_free(&r);
    assert_int_equal(parse(BR_HTTP_COMPLETIONS, "{\"prompt\":\"x\",\"logprobs\":0}", &r, &e),
                     BR_OK);
    assert_true(r.req.logprobs);
    assert_int_equal(r.req.top_logprobs, 0);
    br_http_req_free(&r);
    /* top_logprobs 0 needs nothing */
    assert_int_equal(parse(BR_HTTP_CHAT,
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                           "\"top_logprobs\":0}",
                           &r, &e),
                     BR_OK);
    assert_false(r.req.logprobs);
    br_http_req_free(&r);
}

/* The alternatives in OpenAI's shapes: chat [{token, logprob, bytes}] with the raw bytes
 * of a token that ends inside a character; completions {text: logprob}, the likelier kept
 * when two tokens read the same; none asked: [] and null. */
static void test_top_logprobs_json(void **state)
{
    (void)state;
    struct br_usage u = {3, 2};
    const char *pieces[] = {"a", "\xe2\x82\xac"};
    float lps[] = {-0.25f, -1.5f};
    struct br_http_top top[2] = {
        {3, {{"a", 1, -0.25f}, {"b", 1, -1.75f}, {"\xe2\x82", 2, -3.0f}}},
        {3, {{"x\xff", 2, -0.5f}, {"x\xfe", 2, -1.0f}, {"\xe2\x82\xac", 3, -1.5f}}},
    };
    struct br_http_logprobs lp = {pieces, lps, 2, top};
    json_t *o = load(
        br_http_completion_json(BR_HTTP_CHAT, "c", 1, "m", "a\xe2\x82\xac", 4, "stop", &u, &lp));
    json_t *content = json_object_get(
        json_object_get(json_array_get(json_object_get(o, "choices"), 0), "logprobs"), "content");
    assert_int_equal(json_array_size(content), 2);
    json_t *t0 = json_object_get(json_array_get(content, 0), "top_logprobs");
    assert_int_equal(json_array_size(t0), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(t0, 0), "token")), "a");
    assert_true(json_real_value(json_object_get(json_array_get(t0, 1), "logprob")) == -1.75);
    json_t *partial = json_array_get(t0, 2);
    assert_string_equal(json_string_value(json_object_get(partial, "token")),
                        "\xef\xbf\xbd\xef\xbf\xbd");
    json_t *b = json_object_get(partial, "bytes");
    assert_int_equal(json_array_size(b), 2);
    assert_int_equal(json_integer_value(json_array_get(b, 0)), 0xe2);
    assert_int_equal(json_integer_value(json_array_get(b, 1)), 0x82);
    json_decref(o);
    /* streaming chunk: one token's alternatives */
    struct br_http_logprobs one = {pieces, lps, 1, top};
    o = load(br_http_chunk_json(BR_HTTP_CHAT, "c", 1, "m", "a", 1, true, NULL, &one, NULL));
    content = json_object_get(
        json_object_get(json_array_get(json_object_get(o, "choices"), 0), "logprobs"), "content");
    assert_int_equal(json_array_size(json_object_get(json_array_get(content, 0), "top_logprobs")),
                     3);
    json_decref(o);
    /* completions */
    o = load(br_http_completion_json(BR_HTTP_COMPLETIONS, "c", 1, "m", "a\xe2\x82\xac", 4, "stop",
                                     &u, &lp));
    json_t *l = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "logprobs");
    json_t *tops = json_object_get(l, "top_logprobs");
    assert_int_equal(json_array_size(tops), 2);
    json_t *d0 = json_array_get(tops, 0), *d1 = json_array_get(tops, 1);
    assert_true(json_is_object(d0));
    assert_int_equal(json_object_size(d0), 3);
    assert_true(json_real_value(json_object_get(d0, "b")) == -1.75);
    /* x\xff and x\xfe both read "x\ufffd": the likelier stays */
    assert_int_equal(json_object_size(d1), 2);
    assert_true(json_real_value(json_object_get(d1, "x\xef\xbf\xbd")) == -0.5);
    assert_true(json_real_value(json_object_get(d1, "\xe2\x82\xac")) == -1.5);
    json_decref(o);
    /* no alternatives asked */
    lp.top = NULL;
    o = load(br_http_completion_json(BR_HTTP_COMPLETIONS, "c", 1, "m", "a", 1, "stop", &u, &lp));
    l = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "logprobs");
    assert_true(json_is_null(json_array_get(json_object_get(l, "top_logprobs"), 0)));
    json_decref(o);
    o = load(br_http_completion_json(BR_HTTP_CHAT, "c", 1, "m", "a", 1, "stop", &u, &lp));
    content = json_object_get(
        json_object_get(json_array_get(json_object_get(o, "choices"), 0), "logprobs"), "content");
    t0 = json_object_get(json_array_get(content, 0), "top_logprobs");
    assert_true(json_is_array(t0) && json_array_size(t0) == 0);
    json_decref(o);
}

static void test_refusals_name_the_param(void **state)
{
    (void)state;
    const enum br_http_kind C = BR_HTTP_COMPLETIONS, H = BR_HTTP_CHAT;
    refused(C, "{\"prompt\":\"x\"", NULL, "not valid JSON");
    refused(C, "[1,2]", NULL, "must be a JSON object");
    refused(C, "", NULL, "not valid JSON");
    refused(C, "{\"prompt\":\"x\"} trailing", NULL, "not valid JSON");
    refused(C, "{\"prompt\":\"x\",\"prompt\":\"y\"}", NULL, "duplicate");
    refused(C, "{\"prompt\":\"\xc3\x28\"}", NULL, "not valid JSON");
    refused(C, "{\"prompt\":\"a\\u0000b\"}", NULL, "not valid JSON");
    refused(C, "{}", "prompt", "missing");
    refused(C, "{\"prompt\":7}", "prompt", "a string or an array of token ids");
    refused(C, "{\"prompt\":[]}", "prompt", "1..131072 token ids");
    refused(C, "{\"prompt\":[1,\"a\"]}", "prompt[1]", "an integer in [0, 999]");
    refused(C, "{\"prompt\":[1,1000]}", "prompt[1]", "got 1000");
    refused(C, "{\"prompt\":[\"a\",\"b\"]}", "prompt", "list of 2 prompts");
    refused(C, "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens", "[1, 65536], got 0");
    refused(C, "{\"prompt\":\"x\",\"max_tokens\":\"5\"}", "max_tokens", "got \"5\"");
    refused(C, "{\"prompt\":\"x\",\"max_tokens\":2.5}", "max_tokens", "an integer");
    refused(C, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", "temperature", "a number in [0, 100]");
    refused(C, "{\"prompt\":\"x\",\"temperature\":-1}", "temperature", "got -1");
    refused(C, "{\"prompt\":\"x\",\"top_p\":1.5}", "top_p", "[0, 1]");
    refused(C, "{\"prompt\":\"x\",\"top_k\":-1}", "top_k", "an integer");
    refused(C, "{\"prompt\":\"x\",\"min_p\":true}", "min_p", "got true");
    refused(C, "{\"prompt\":\"x\",\"repeat_penalty\":0}", "repeat_penalty", "(0, 10]");
    refused(C, "{\"prompt\":\"x\",\"presence_penalty\":3}", "presence_penalty", "[-2, 2]");
    refused(C, "{\"prompt\":\"x\",\"frequency_penalty\":[]}", "frequency_penalty", "an array");
    refused(C, "{\"prompt\":\"x\",\"seed\":-2}", "seed", "an integer >= 0");
    refused(C, "{\"prompt\":\"x\",\"seed\":1.5}", "seed", "an integer");
    refused(C, "{\"prompt\":\"x\",\"seed\":99999999999999999999999}", NULL, "not valid JSON");
    refused(C, "{\"prompt\":\"x\",\"stop\":5}", "stop", "a string or an array");
    refused(C, "{\"prompt\":\"x\",\"stop\":[\"\"]}", "stop[0]", "1..256 bytes");
    refused(C, "{\"prompt\":\"x\",\"stop\":[\"a\",2]}", "stop[1]", "got 2");
    refused(C, "{\"prompt\":\"x\",\"logit_bias\":[1]}", "logit_bias", "an object");
    refused(C, "{\"prompt\":\"x\",\"logit_bias\":{\"abc\":1}}", "logit_bias", "token id");
    refused(C, "{\"prompt\":\"x\",\"logit_bias\":{\"5000\":1}}", "logit_bias", "[0, 999]");
    refused(C, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":101}}", "logit_bias[\"5\"]", "[-100, 100]");
    refused(C, "{\"prompt\":\"x\",\"logprobs\":6}", "logprobs", "an integer in [0, 5], got 6");
    refused(C, "{\"prompt\":\"x\",\"logprobs\":true}", "logprobs", "an integer in [0, 5]");
    refused(C, "{\"prompt\":\"x\",\"echo\":true}", "echo", "not supported");
    refused(C, "{\"prompt\":\"x\",\"n\":2}", "n", "only 1 choice");
    refused(C, "{\"prompt\":\"x\",\"n\":0}", "n", "an integer in [1,");
    refused(C, "{\"prompt\":\"x\",\"stream\":\"yes\"}", "stream", "true or false");
    refused(C, "{\"prompt\":\"x\",\"stream_options\":1}", "stream_options", "an object");
    refused(C, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":1}}",
            "stream_options.include_usage", "true or false");
    refused(C, "{\"prompt\":\"x\",\"model\":5}", "model", "a string");
    refused(H, "{}", "messages", "missing");
    refused(H, "{\"messages\":{}}", "messages", "an array");
    refused(H, "{\"messages\":[]}", "messages", "1..1024 messages");
    refused(H, "{\"messages\":[1]}", "messages[0]", "an object");
    refused(H, "{\"messages\":[{\"role\":\"king\",\"content\":\"x\"}]}", "messages[0].role",
            "one of system");
    refused(H, "{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role", "got null");
    refused(H, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content",
            "a string or an array");
    refused(H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
            "messages[0].content[0].type", "\"text\"");
    refused(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}",
            "top_logprobs", "without \"logprobs\": true");
    refused(H,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
            "\"top_logprobs\":21}",
            "top_logprobs", "an integer in [0, 20], got 21");
    refused(H,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
            "\"top_logprobs\":-1}",
            "top_logprobs", "got -1");
    refused(H,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
            "\"top_logprobs\":\"3\"}",
            "top_logprobs", "an integer");
    refused(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":1}", "logprobs",
            "true or false");
}

/* A small body of very many values is refused by the allocation budget, not parsed. */
static void test_budget(void **state)
{
    (void)state;
    size_t n = 2 << 20;
    char *body = malloc(n + 32);
    assert_non_null(body);
    size_t at = (size_t)sprintf(body, "{\"prompt\":[");
    while (at < n) {
        body[at++] = '1';
        body[at++] = ',';
    }
    strcpy(body + at, "1]}");
    struct br_http_req r;
    struct br_http_error e;
    assert_int_equal(br_http_parse_request(BR_HTTP_COMPLETIONS, body, strlen(body), NULL, &r, &e),
                     BR_E_PROTOCOL);
    assert_int_equal(e.status, 400);
    assert_non_null(strstr(e.message, "more values than this server parses"));
    br_http_req_free(&r);
    /* the largest legitimate token-id prompt, densely written, is within the budget */
    at = (size_t)sprintf(body, "{\"prompt\":[");
    for (int i = 0; i < 131072; i++) at += (size_t)sprintf(body + at, "%s%d", i ? "," : "", i % 10);
    strcpy(body + at, "]}");
    assert_int_equal(br_http_parse_request(BR_HTTP_COMPLETIONS, body, strlen(body), NULL, &r, &e),
                     BR_OK);
    assert_int_equal(r.req.n_tokens, 131072);
    br_http_req_free(&r);
    free(body);
    /* deep nesting is refused, not a stack overflow */
    char deep[40010];
    memset(deep, '[', 40000);
    deep[40000] = '\0';
    assert_int_equal(parse(BR_HTTP_COMPLETIONS, deep, &r, &e), BR_E_PROTOCOL);
    br_http_req_free(&r);
}

static void test_encoders(void **state)
{
    (void)state;
    struct br_usage u = {3, 4};
    const char *pieces[] = {"h\xc3\xa9", "llo"};
    float lps[] = {-0.5f, -1.5f};
    struct br_http_logprobs lp = {pieces, lps, 2, NULL};
    json_t *o = load(br_http_completion_json(BR_HTTP_COMPLETIONS, "cmpl-1", 123, "m",
                                             "h\xc3\xa9llo", 6, "length", &u, &lp));
    assert_string_equal(json_string_value(json_object_get(o, "object")), "text_completion");
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(ch, "text")), "h\xc3\xa9llo");
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "length");
    json_t *toff = json_object_get(json_object_get(ch, "logprobs"), "text_offset");
    assert_int_equal(json_integer_value(json_array_get(toff, 1)), 3);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(o, "usage"), "total_tokens")), 7);
    json_decref(o);
    o = load(
        br_http_completion_json(BR_HTTP_CHAT, "chatcmpl-1", 123, "m", "hi", 2, "stop", &u, &lp));
    ch = json_array_get(json_object_get(o, "choices"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ch, "message"), "content")), "hi");
    json_t *c1 = json_array_get(json_object_get(json_object_get(ch, "logprobs"), "content"), 0);
    assert_int_equal(json_array_size(json_object_get(c1, "bytes")), 3);
    json_decref(o);
    /* generated bytes that form no UTF-8 character become U+FFFD, one per byte */
    o = load(br_http_chunk_json(BR_HTTP_COMPLETIONS, "c", 1, "m",
                                "a\xff\xc3"
                                "b",
                                4, false, NULL, NULL, NULL));
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(o, "choices"), 0), "text")),
                        "a\xef\xbf\xbd\xef\xbf\xbd"
                        "b");
    json_decref(o);
    /* chunks: the first chat chunk names the role; the usage chunk has no choices */
    o = load(br_http_chunk_json(BR_HTTP_CHAT, "c", 1, "m", "x", 1, true, NULL, NULL, NULL));
    json_t *delta = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "delta");
    assert_string_equal(json_string_value(json_object_get(delta, "role")), "assistant");
    assert_true(json_is_null(
        json_object_get(json_array_get(json_object_get(o, "choices"), 0), "finish_reason")));
    json_decref(o);
    o = load(br_http_chunk_json(BR_HTTP_COMPLETIONS, "c", 1, "m", NULL, 0, false, NULL, NULL, &u));
    assert_int_equal(json_array_size(json_object_get(o, "choices")), 0);
    json_decref(o);
    struct br_http_error e;
    br_http_error_from_code(&e, BR_PROTO_BUSY, "queue full");
    assert_int_equal(e.status, 429);
    o = load(br_http_error_json(&e));
    json_t *err = json_object_get(o, "error");
    assert_string_equal(json_string_value(json_object_get(err, "message")), "queue full");
    assert_true(json_is_null(json_object_get(err, "param")));
    json_decref(o);
    br_http_error_from_code(&e, BR_PROTO_TOO_LONG, "too long");
    assert_int_equal(e.status, 400);
    assert_string_equal(e.code, "context_length_exceeded");
    br_http_error_from_code(&e, BR_PROTO_UNAVAILABLE, "x");
    assert_int_equal(e.status, 503);
    o = load(br_http_models_json("m", 5, 1000, 256));
    assert_int_equal(
        json_integer_value(json_object_get(
            json_object_get(json_array_get(json_object_get(o, "data"), 0), "meta"), "n_vocab")),
        1000);
    json_decref(o);
}

static void test_metrics_text(void **state)
{
    (void)state;
    struct br_metrics *m = NULL;
    assert_int_equal(br_metrics_create(&m), BR_OK);
    struct br_outcome o;
    br_outcome_init(&o, "http", "127.0.0.1", "a", "length");
    o.http_status = 200;
    o.prompt_tokens = 5;
    o.completion_tokens = 7;
    o.ttft_ms = 30;
    o.total_ms = 100;
    o.tpot_ms = 10;
    br_metrics_observe(m, &o);
    br_outcome_init(&o, "zmq", "", "b", "busy");
    br_metrics_observe(m, &o);
    br_metrics_observe_step(m, 0.002);
    struct br_metrics_gauges g = {1, 2, 3, 4, 100, 9};
    struct br_buf b = {0};
    assert_int_equal(br_metrics_render(m, &g, &b), BR_OK);
    assert_int_equal(br_buf_append(&b, "", 1), BR_OK);
    const char *t = (const char *)b.data;
    assert_non_null(strstr(t, "bitrack_requests_total{transport=\"http\",result=\"length\"} 1\n"));
    assert_non_null(strstr(t, "bitrack_http_responses_total{code=\"200\"} 1\n"));
    assert_non_null(strstr(t, "bitrack_generation_tokens_total{transport=\"http\"} 7\n"));
    assert_non_null(strstr(t, "bitrack_busy_rejections_total 1\n"));
    assert_non_null(strstr(t, "bitrack_kv_blocks_total 100\n"));
    assert_non_null(strstr(t, "bitrack_time_to_first_token_seconds_bucket{le=\"0.05\"} 1\n"));
    assert_non_null(strstr(t, "bitrack_time_to_first_token_seconds_bucket{le=\"0.025\"} 0\n"));
    assert_non_null(strstr(t, "bitrack_step_duration_seconds_count 1\n"));
    br_buf_free(&b);
    br_metrics_destroy(&m);
    assert_null(m);
}

static void test_reqlog_lines(void **state)
{
    (void)state;
    struct br_outcome o;
    br_outcome_init(&o, "zmq", "10.0.0.1", "id with \"quotes\"\nand a newline", "stop");
    o.prompt_tokens = 2;
    o.total_ms = 12.25;
    char line[1024];
    size_t n = br_reqlog_format(BR_REQLOG_TEXT, &o, 0, line, sizeof line);
    assert_int_equal(strlen(line), n);
    assert_int_equal(strchr(line, '\n') - line, (long)n - 1); /* one line */
    assert_non_null(strstr(line, "id=\"id with \\\"quotes\\\"\\nand a newline\""));
    assert_non_null(strstr(line, " total_ms=12.2"));
    assert_null(strstr(line, "ttft_ms")); /* unknown times are left out */
    assert_null(strstr(line, "status="));
    n = br_reqlog_format(BR_REQLOG_JSON, &o, 0, line, sizeof line);
    json_error_t je;
    json_t *j = json_loadb(line, n, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")),
                        "id with \"quotes\"\nand a newline");
    assert_string_equal(json_string_value(json_object_get(j, "result")), "stop");
    assert_int_equal(json_integer_value(json_object_get(j, "prompt_tokens")), 2);
    json_decref(j);
    /* through the writer thread into a file */
    char *path = br_test_tmp_path("reqlog");
    struct br_reqlog *l = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_reqlog_open(path, BR_REQLOG_TEXT, &l, &err), BR_OK);
    for (int i = 0; i < 100; i++) br_reqlog_write(l, &o);
    br_reqlog_close(&l);
    size_t len = 0;
    uint8_t *data = br_test_read_file(path, &len);
    assert_non_null(data);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += data[i] == '\n';
    assert_int_equal(lines, 100);
    free(data);
    remove(path);
    free(path);
    assert_int_equal(br_reqlog_open("/nonexistent/dir/x.log", BR_REQLOG_TEXT, &l, &err), BR_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/x.log"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_completion_full),
        cmocka_unit_test(test_defaults_are_native),
        cmocka_unit_test(test_chat_messages),
        cmocka_unit_test(test_top_logprobs_parse),
        cmocka_unit_test(test_top_logprobs_json),
        cmocka_unit_test(test_refusals_name_the_param),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_encoders),
        cmocka_unit_test(test_metrics_text),
        cmocka_unit_test(test_reqlog_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
