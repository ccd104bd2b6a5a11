/*
 * libFuzzer harness for the wire decoders (proto/proto.h): every input goes to both
 * br_proto_decode_request (the server's view of untrusted client bytes) and
 * br_proto_decode_response (the client's view of a server), with the default limits.
 *
 * Whatever a decoder returns, every field of the struct is read (so ASan sees a dangling
 * or short array) and then freed, twice, since a second free must be harmless. A message
 * that decodes is encoded again and decoded again: the second decode must succeed and
 * agree with the first on the fields compared below. Invariants checked (abort on
 * failure): decoded strings are NUL-terminated at their length and valid UTF-8; counts
 * and values lie within the documented limits.
 */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i++) acc += b[i];
    sink += acc;
}

/* A decoded string: NUL at its length, valid UTF-8 when `utf8`. NULL allowed when len 0. */
static void check_str(const char *s, size_t len, bool utf8)
{
    if (!s) {
        if (len != 0) abort();
        return;
    }
    touch(s, len + 1);
    if (s[len] != '\0') abort();
    if (utf8 && !br_proto_utf8_valid(s, len)) abort();
}

static void walk_req(const struct br_req *r, const struct br_proto_limits *lim, bool ok)
{
    check_str(r->id, r->id_len, true);
    check_str(r->prompt, r->prompt_len, true);
    check_str(r->chat_template, r->chat_template_len, true);
    touch(r->tokens, (size_t)r->n_tokens * sizeof *r->tokens);
    for (uint32_t i = 0; r->messages && i < r->n_messages; i++) {
        check_str(r->messages[i].content, r->messages[i].content_len, true);
        sink += (uint64_t)r->messages[i].role;
    }
    const struct br_req_sampling *s = &r->sampling;
    for (uint32_t i = 0; s->stop && i < s->n_stop; i++) check_str(s->stop[i], s->stop_len[i], true);
    touch(s->stop_tokens, (size_t)s->n_stop_tokens * sizeof *s->stop_tokens);
    touch(s->logit_bias, (size_t)s->n_logit_bias * sizeof *s->logit_bias);
    if (!ok) return;
    /* only an accepted request promises the documented ranges */
    if (r->type == BR_REQ_NONE) abort();
    if (!r->id || r->id_len == 0 || r->id_len > lim->max_id_bytes) abort();
    if (r->n_tokens > lim->max_tokens_in || (r->n_tokens && !r->tokens)) abort();
    for (uint32_t i = 0; i < r->n_tokens; i++)
        if (r->tokens[i] < 0) abort();
    if (r->prompt_len > lim->max_prompt_bytes) abort();
    if (r->n_messages > lim->max_messages) abort();
    if (r->chat_template_len > lim->max_template_bytes) abort();
    if (r->type == BR_REQ_GENERATE) {
        if (r->max_tokens < 1 || r->max_tokens > lim->max_new_tokens) abort();
        if (!(s->temperature >= 0.0f && s->temperature <= 100.0f)) abort();
        if (!(s->top_p >= 0.0f && s->top_p <= 1.0f)) abort();
        if (!(s->min_p >= 0.0f && s->min_p <= 1.0f)) abort();
        if (!(s->repeat_penalty > 0.0f && s->repeat_penalty <= 10.0f)) abort();
        if (s->n_stop > lim->max_stop || s->n_stop_tokens > lim->max_stop_tokens) abort();
        if (s->n_logit_bias > lim->max_logit_bias) abort();
        for (uint32_t i = 0; i < s->n_stop; i++)
            if (s->stop_len[i] == 0 || s->stop_len[i] > lim->max_stop_bytes) abort();
        for (uint32_t i = 0; i < s->n_logit_bias; i++) {
            float b = s->logit_bias[i].bias;
            if (s->logit_bias[i].token < 0) abort();
            if (!(b == -INFINITY || (b >= -100.0f && b <= 100.0f))) abort();
        }
    }
}

static void walk_resp(const struct br_resp *r)
{
    check_str(r->id, r->id_len, false);
    if (r->text) check_str(r->text, r->text_len, true);
    if (r->message) touch(r->message, strlen(r->message) + 1);
    touch(r->tokens, (size_t)r->n_tokens * sizeof *r->tokens);
    for (uint32_t i = 0; r->kv && i < r->n_kv; i++) {
        if (r->kv[i].key) touch(r->kv[i].key, strlen(r->kv[i].key) + 1);
        if (r->kv[i].kind == BR_KV_STR && r->kv[i].s) touch(r->kv[i].s, strlen(r->kv[i].s) + 1);
        sink += (uint64_t)r->kv[i].i;
    }
}

static void request_round_trip(const struct br_req *r, const struct br_proto_limits *lim)
{
    struct br_buf b = {0};
    struct br_req again;
    struct br_err err;
    if (br_proto_encode_request(r, &b) != BR_OK) abort();
    if (br_proto_decode_request(b.data, b.len, lim, &again, &err) != BR_OK) abort();
    if (again.type != r->type || again.id_len != r->id_len ||
        memcmp(again.id, r->id, r->id_len) != 0)
        abort();
    if (r->type == BR_REQ_GENERATE &&
        (again.input != r->input || again.n_tokens != r->n_tokens ||
         again.prompt_len != r->prompt_len || again.n_messages != r->n_messages ||
         again.max_tokens != r->max_tokens || again.sampling.n_stop != r->sampling.n_stop))
        abort();
    br_req_free(&again);
    br_buf_free(&b);
}

static void response_round_trip(const struct br_resp *r)
{
    struct br_buf b = {0};
    struct br_resp again;
    struct br_err err;
    if (br_proto_encode_response(r, &b) != BR_OK) abort();
    if (br_proto_decode_response(b.data, b.len, NULL, &again, &err) != BR_OK) abort();
    /* a client matches response ids as C strings (the encoder writes them so) */
    if (again.type != r->type || (!again.id) != (!r->id) ||
        (r->id && strcmp(again.id, r->id) != 0) || again.n_tokens != r->n_tokens ||
        again.n_kv != r->n_kv)
        abort();
    br_resp_free(&again);
    br_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct br_proto_limits lim;
    struct br_err err;
    br_proto_limits_default(&lim);

    struct br_req req;
    memset(&req, 0, sizeof req);
    err.msg[0] = '\0';
    int rc = br_proto_decode_request(data, size, NULL, &req, &err);
    if (rc != BR_OK && (rc != BR_E_PROTOCOL && rc != BR_E_NOMEM)) abort();
    if (rc != BR_OK && err.msg[0] == '\0') abort(); /* a refusal names the problem */
    walk_req(&req, &lim, rc == BR_OK);
    if (rc == BR_OK) request_round_trip(&req, &lim);
    br_req_free(&req);
    br_req_free(&req);

    struct br_resp resp;
    memset(&resp, 0, sizeof resp);
    err.msg[0] = '\0';
    rc = br_proto_decode_response(data, size, NULL, &resp, &err);
    if (rc != BR_OK && err.msg[0] == '\0') abort();
    walk_resp(&resp);
    if (rc == BR_OK) response_round_trip(&resp);
    br_resp_free(&resp);
    br_resp_free(&resp);
    return 0;
}
