/*
 * Tests of proto/proto.c: every request and response type survives encode -> decode, and
 * malformed requests (bad msgpack, wrong types, out-of-range values, oversized or deeply
 * nested input, random mutations) are refused with BR_E_PROTOCOL and a message naming the
 * field, never a crash. Malformed messages are built with msgpack-c directly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"
#include "test_util.h"

/* ---- building messages by hand ---------------------------------------------------------- */

struct mb {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void mb_init(struct mb *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mb_free(struct mb *m)
{
    msgpack_sbuffer_destroy(&m->sb);
}

static void pstr(struct mb *m, const char *s)
{
    msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}

static void kstr(struct mb *m, const char *k, const char *v)
{
    pstr(m, k);
    pstr(m, v);
}

static void kint(struct mb *m, const char *k, int64_t v)
{
    pstr(m, k);
    msgpack_pack_int64(&m->pk, v);
}

static void kdbl(struct mb *m, const char *k, double v)
{
    pstr(m, k);
    msgpack_pack_double(&m->pk, v);
}

/* Map header for 3 + extra entries, then v=1, type, id="r1". */
static void head(struct mb *m, const char *type, size_t extra)
{
    msgpack_pack_map(&m->pk, 3 + extra);
    kint(m, "v", 1);
    kstr(m, "type", type);
    kstr(m, "id", "r1");
}

/* Decodes m's bytes as a request and checks it is refused, naming `field`. */
static void expect_bad_bytes(const void *p, size_t n, const struct br_proto_limits *lim,
                             const char *field, bool id_known)
{
    struct br_req r;
    struct br_err e = {{0}};
    int rc = br_proto_decode_request(p, n, lim, &r, &e);
    if (rc != BR_E_PROTOCOL || !strstr(e.msg, field))
        print_error("expected a refusal naming '%s', got rc %d: %s\n", field, rc, e.msg);
    assert_int_equal(rc, BR_E_PROTOCOL);
    assert_non_null(strstr(e.msg, field));
    assert_int_equal(br_proto_status_code(rc), BR_PROTO_BAD_REQUEST);
    if (id_known) {
        assert_non_null(r.id);
        assert_string_equal(r.id, "r1");
    }
    /* The server's answer: an error addressed to the id, which a client decodes. */
    struct br_buf b = {0};
    struct br_resp resp;
    assert_int_equal(br_proto_encode_error(&b, r.id, BR_PROTO_BAD_REQUEST, e.msg), BR_OK);
    assert_int_equal(br_proto_decode_response(b.data, b.len, NULL, &resp, NULL), BR_OK);
    assert_int_equal(resp.type, BR_RESP_ERROR);
    assert_int_equal(resp.code, BR_PROTO_BAD_REQUEST);
    assert_string_equal(resp.message, e.msg);
    br_resp_free(&resp);
    br_buf_free(&b);
    br_req_free(&r);
    br_req_free(&r); /* twice is harmless */
}

static void expect_bad(struct mb *m, const struct br_proto_limits *lim, const char *field)
{
    expect_bad_bytes(m->sb.data, m->sb.size, lim, field, true);
    mb_free(m);
}

/* ---- request round trips ---------------------------------------------------------------- */

static void encode_decode_req(const struct br_req *in, struct br_req *out)
{
    struct br_buf b = {0};
    struct br_err e = {{0}};
    assert_int_equal(br_proto_encode_request(in, &b), BR_OK);
    int rc = br_proto_decode_request(b.data, b.len, NULL, out, &e);
    if (rc) print_error("decode: %s\n", e.msg);
    assert_int_equal(rc, BR_OK);
    br_buf_free(&b);
}

static void test_req_generate_prompt(void **state)
{
    (void)state;
    struct br_req in, out;
    char *stop[] = {"\n\n", "User:"};
    size_t stop_len[] = {2, 5};
    int32_t stop_tokens[] = {2, 128001};
    struct br_logit_bias lb[] = {{15, -2.5f}, {99, -INFINITY}};
    br_req_init(&in);
    in.type = BR_REQ_GENERATE;
    in.id = "req-1";
    in.input = BR_INPUT_PROMPT;
    in.prompt = "Once upon a time, ünïcödé 🙂";
    in.prompt_len = strlen(in.prompt);
    in.max_tokens = 77;
    in.stream = true;
    in.logprobs = true;
    in.add_bos = false;
    in.chat_template = "{{x}}";
    in.chat_template_len = 5;
    in.sampling.temperature = 0.25f;
    in.sampling.top_k = 7;
    in.sampling.top_p = 0.5f;
    in.sampling.min_p = 0.1f;
    in.sampling.repeat_penalty = 1.2f;
    in.sampling.repeat_last_n = 32;
    in.sampling.presence_penalty = -0.5f;
    in.sampling.frequency_penalty = 1.5f;
    in.sampling.has_seed = true;
    in.sampling.seed = UINT64_MAX;
    in.sampling.stop = stop;
    in.sampling.stop_len = stop_len;
    in.sampling.n_stop = 2;
    in.sampling.stop_tokens = stop_tokens;
    in.sampling.n_stop_tokens = 2;
    in.sampling.logit_bias = lb;
    in.sampling.n_logit_bias = 2;
    encode_decode_req(&in, &out);
    assert_int_equal(out.type, BR_REQ_GENERATE);
    assert_int_equal(out.version, 1);
    assert_string_equal(out.id, "req-1");
    assert_int_equal(out.id_len, 5);
    assert_int_equal(out.input, BR_INPUT_PROMPT);
    assert_string_equal(out.prompt, in.prompt);
    assert_int_equal(out.prompt_len, in.prompt_len);
    assert_int_equal(out.max_tokens, 77);
    assert_true(out.stream && out.logprobs && !out.add_bos);
    assert_string_equal(out.chat_template, "{{x}}");
    const struct br_req_sampling *s = &out.sampling;
    assert_true(s->temperature == 0.25f && s->top_k == 7 && s->top_p == 0.5f);
    assert_true(s->min_p == 0.1f && s->repeat_penalty == 1.2f && s->repeat_last_n == 32);
    assert_true(s->presence_penalty == -0.5f && s->frequency_penalty == 1.5f);
    assert_true(s->has_seed && s->seed == UINT64_MAX);
    assert_int_equal(s->n_stop, 2);
    assert_string_equal(s->stop[0], "\n\n");
    assert_string_equal(s->stop[1], "User:");
    assert_int_equal(s->stop_len[1], 5);
    assert_int_equal(s->n_stop_tokens, 2);
    assert_int_equal(s->stop_tokens[1], 128001);
    assert_int_equal(s->n_logit_bias, 2);
    assert_int_equal(s->logit_bias[0].token, 15);
    assert_true(s->logit_bias[0].bias == -2.5f);
    assert_true(isinf(s->logit_bias[1].bias) && s->logit_bias[1].bias < 0);
    br_req_free(&out);
    assert_null(out.id);
}

static void test_req_generate_tokens_and_messages(void **state)
{
    (void)state;
    struct br_req in, out;
    int32_t toks[] = {1, 2, 3, 0, 2147483647};
    br_req_init(&in);
    in.type = BR_REQ_GENERATE;
    in.id = "t";
    in.input = BR_INPUT_TOKENS;
    in.tokens = toks;
    in.n_tokens = 5;
    encode_decode_req(&in, &out);
    assert_int_equal(out.input, BR_INPUT_TOKENS);
    assert_int_equal(out.n_tokens, 5);
    assert_memory_equal(out.tokens, toks, sizeof toks);
    assert_int_equal(out.max_tokens, 256);
    assert_false(out.sampling.has_seed);
    br_req_free(&out);

    struct br_chat_msg msgs[] = {{BR_ROLE_SYSTEM, "be brief", 8},
                                 {BR_ROLE_USER, "hi", 2},
                                 {BR_ROLE_ASSISTANT, "", 0},
                                 {BR_ROLE_TOOL, "{}", 2}};
    br_req_init(&in);
    in.type = BR_REQ_GENERATE;
    in.id = "m";
    in.input = BR_INPUT_MESSAGES;
    in.messages = msgs;
    in.n_messages = 4;
    encode_decode_req(&in, &out);
    assert_int_equal(out.input, BR_INPUT_MESSAGES);
    assert_int_equal(out.n_messages, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(out.messages[i].role, msgs[i].role);
        assert_string_equal(out.messages[i].content, msgs[i].content);
    }
    assert_true(out.add_bos);
    br_req_free(&out);
}

static void test_req_other_types(void **state)
{
    (void)state;
    struct br_req in, out;
    enum br_req_type simple[] = {BR_REQ_CANCEL, BR_REQ_HEALTH, BR_REQ_INFO, BR_REQ_METRICS,
                                 BR_REQ_PING};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
        br_req_init(&in);
        in.type = simple[i];
        in.id = "x7";
        encode_decode_req(&in, &out);
        assert_int_equal(out.type, simple[i]);
        assert_string_equal(out.id, "x7");
        br_req_free(&out);
    }
    br_req_init(&in);
    in.type = BR_REQ_TOKENIZE;
    in.id = "tk";
    in.prompt = "hello world";
    in.prompt_len = 11;
    in.add_bos = false;
    encode_decode_req(&in, &out);
    assert_int_equal(out.type, BR_REQ_TOKENIZE);
    assert_string_equal(out.prompt, "hello world");
    assert_false(out.add_bos);
    br_req_free(&out);

    int32_t toks[] = {5, 6};
    br_req_init(&in);
    in.type = BR_REQ_DETOKENIZE;
    in.id = "dt";
    in.tokens = toks;
    in.n_tokens = 2;
    encode_decode_req(&in, &out);
    assert_int_equal(out.type, BR_REQ_DETOKENIZE);
    assert_int_equal(out.n_tokens, 2);
    assert_int_equal(out.tokens[1], 6);
    br_req_free(&out);

    /* Requests the encoder refuses. */
    struct br_buf b = {0};
    br_req_init(&in);
    in.type = BR_REQ_GENERATE;
    assert_int_equal(br_proto_encode_request(&in, &b), BR_E_INVALID); /* no id */
    in.id = "x";
    assert_int_equal(br_proto_encode_request(&in, &b), BR_E_INVALID); /* no input */
    br_buf_free(&b);
}

static void test_unknown_fields_ignored(void **state)
{
    (void)state;
    struct mb m;
    struct br_req r;
    struct br_err e = {{0}};
    mb_init(&m);
    head(&m, "generate", 4);
    kstr(&m, "prompt", "hi");
    pstr(&m, "future_field");
    msgpack_pack_map(&m.pk, 1);
    kint(&m, "deep", 3);
    pstr(&m, "another");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_nil(&m.pk);
    msgpack_pack_true(&m.pk);
    pstr(&m, "seed"); /* nil means "absent" for an optional field */
    msgpack_pack_nil(&m.pk);
    int rc = br_proto_decode_request(m.sb.data, m.sb.size, NULL, &r, &e);
    if (rc) print_error("%s\n", e.msg);
    assert_int_equal(rc, BR_OK);
    assert_string_equal(r.prompt, "hi");
    assert_false(r.sampling.has_seed);
    br_req_free(&r);
    mb_free(&m);

    /* logit_bias as a map with string and integer keys; seed -1 means random. */
    mb_init(&m);
    head(&m, "generate", 3);
    kstr(&m, "prompt", "hi");
    pstr(&m, "logit_bias");
    msgpack_pack_map(&m.pk, 2);
    pstr(&m, "42");
    msgpack_pack_double(&m.pk, 1.5);
    msgpack_pack_int64(&m.pk, 7);
    msgpack_pack_int64(&m.pk, -3);
    kint(&m, "seed", -1);
    assert_int_equal(br_proto_decode_request(m.sb.data, m.sb.size, NULL, &r, &e), BR_OK);
    assert_int_equal(r.sampling.n_logit_bias, 2);
    assert_int_equal(r.sampling.logit_bias[0].token, 42);
    assert_true(r.sampling.logit_bias[1].bias == -3.0f);
    assert_false(r.sampling.has_seed);
    br_req_free(&r);
    mb_free(&m);
}

/* Each key once per map, at every level: {type: ping, type: shutdown} is not a ping. */
static void test_duplicate_keys(void **state)
{
    (void)state;
    struct mb m;
    mb_init(&m);
    head(&m, "ping", 1);
    kstr(&m, "type", "shutdown");
    expect_bad(&m, NULL, "key 'type' appears more than once");

    mb_init(&m);
    head(&m, "generate", 3);
    kstr(&m, "prompt", "hi");
    kint(&m, "max_tokens", 5);
    kint(&m, "max_tokens", 100000000);
    expect_bad(&m, NULL, "key 'max_tokens' appears more than once");

    /* two empty keys (msgpack gives an empty string no pointer) */
    mb_init(&m);
    head(&m, "ping", 2);
    kstr(&m, "", "a");
    kstr(&m, "", "b");
    expect_bad(&m, NULL, "key '' appears more than once");

    /* inside messages[] and inside logit_bias (integer keys) */
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "messages");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 3);
    kstr(&m, "role", "user");
    kstr(&m, "content", "hi");
    kstr(&m, "role", "system");
    expect_bad(&m, NULL, "key 'role' appears more than once");

    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "logit_bias");
    msgpack_pack_map(&m.pk, 2);
    msgpack_pack_int64(&m.pk, 7);
    msgpack_pack_double(&m.pk, 1.0);
    msgpack_pack_int64(&m.pk, 7);
    msgpack_pack_double(&m.pk, -100.0);
    expect_bad(&m, NULL, "key 7 appears more than once");

    /* a duplicated id: the error goes to neither id */
    mb_init(&m);
    head(&m, "ping", 1);
    kstr(&m, "id", "r2");
    struct br_req r;
    struct br_err e = {{0}};
    assert_int_equal(br_proto_decode_request(m.sb.data, m.sb.size, NULL, &r, &e), BR_E_PROTOCOL);
    assert_null(r.id);
    assert_non_null(strstr(e.msg, "key 'id' appears more than once"));
    br_req_free(&r);
    mb_free(&m);
}

/* ---- malformed requests ------------------------------------------------------------------ */

static void test_bad_framing(void **state)
{
    (void)state;
    struct mb m;
    /* not msgpack at all */
    expect_bad_bytes("\xc1\xc1\xc1", 3, NULL, "message", false);
    expect_bad_bytes("hello", 0, NULL, "message", false);
    expect_bad_bytes("{\"type\": \"generate\"}", 20, NULL, "message", false);
    /* truncated */
    mb_init(&m);
    head(&m, "generate", 1);
    kstr(&m, "prompt", "hello there");
    expect_bad_bytes(m.sb.data, m.sb.size - 3, NULL, "message", false);
    /* trailing bytes after a valid map */
    msgpack_pack_nil(&m.pk);
    expect_bad_bytes(m.sb.data, m.sb.size, NULL, "trailing", false);
    mb_free(&m);
    /* array instead of map */
    mb_init(&m);
    msgpack_pack_array(&m.pk, 2);
    pstr(&m, "generate");
    pstr(&m, "r1");
    expect_bad_bytes(m.sb.data, m.sb.size, NULL, "expected a map", false);
    mb_free(&m);
    /* a 5-byte array declaring 4 billion entries must not allocate them */
    expect_bad_bytes("\xdd\xff\xff\xff\xff", 5, NULL, "message", false);
    expect_bad_bytes("\xdf\x7f\xff\xff\xff\xa1x", 7, NULL, "message", false);
    /* a string declaring more bytes than there are */
    expect_bad_bytes("\x81\xa4type\xdb\x00\x10\x00\x00", 11, NULL, "message", false);
}

static void test_bad_envelope(void **state)
{
    (void)state;
    struct mb m;
    struct br_proto_limits lim;
    br_proto_limits_default(&lim);
    /* an id with a NUL byte: ids are C strings to the server, so it is refused, and the
     * error goes out without an id */
    mb_init(&m);
    msgpack_pack_map(&m.pk, 3);
    kint(&m, "v", 1);
    kstr(&m, "type", "health");
    pstr(&m, "id");
    msgpack_pack_str(&m.pk, 3);
    msgpack_pack_str_body(&m.pk, "a\0b", 3);
    expect_bad_bytes(m.sb.data, m.sb.size, NULL, "NUL", false);
    {
        struct br_req r;
        assert_int_equal(br_proto_decode_request(m.sb.data, m.sb.size, NULL, &r, NULL),
                         BR_E_PROTOCOL);
        assert_null(r.id);
        br_req_free(&r);
    }
    mb_free(&m);
    /* missing type */
    mb_init(&m);
    msgpack_pack_map(&m.pk, 2);
    kint(&m, "v", 1);
    kstr(&m, "id", "r1");
    expect_bad(&m, NULL, "type");
    /* unknown type */
    mb_init(&m);
    head(&m, "frobnicate", 0);
    expect_bad(&m, NULL, "type");
    /* type not a string */
    mb_init(&m);
    msgpack_pack_map(&m.pk, 3);
    kint(&m, "v", 1);
    kint(&m, "type", 1);
    kstr(&m, "id", "r1");
    expect_bad(&m, NULL, "type");
    /* wrong version */
    mb_init(&m);
    msgpack_pack_map(&m.pk, 3);
    kint(&m, "v", 2);
    kstr(&m, "type", "health");
    kstr(&m, "id", "r1");
    expect_bad(&m, NULL, "v:");
    /* missing version */
    mb_init(&m);
    msgpack_pack_map(&m.pk, 2);
    kstr(&m, "type", "health");
    kstr(&m, "id", "r1");
    expect_bad(&m, NULL, "v:");
    /* id not a string */
    mb_init(&m);
    msgpack_pack_map(&m.pk, 3);
    kint(&m, "v", 1);
    kstr(&m, "type", "health");
    kint(&m, "id", 5);
    expect_bad_bytes(m.sb.data, m.sb.size, NULL, "id", false);
    mb_free(&m);
    /* id missing, empty, too long */
    mb_init(&m);
    msgpack_pack_map(&m.pk, 2);
    kint(&m, "v", 1);
    kstr(&m, "type", "health");
    expect_bad_bytes(m.sb.data, m.sb.size, NULL, "id", false);
    mb_free(&m);
    char longid[200];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    mb_init(&m);
    msgpack_pack_map(&m.pk, 3);
    kint(&m, "v", 1);
    kstr(&m, "type", "health");
    kstr(&m, "id", longid);
    expect_bad_bytes(m.sb.data, m.sb.size, NULL, "id", false);
    mb_free(&m);
    /* whole message over the limit */
    lim.max_msg_bytes = 16;
    mb_init(&m);
    head(&m, "health", 0);
    expect_bad_bytes(m.sb.data, m.sb.size, &lim, "message", false);
    mb_free(&m);
}

static void test_bad_prompt(void **state)
{
    (void)state;
    struct mb m;
    struct br_proto_limits lim;
    br_proto_limits_default(&lim);
    /* prompt not a string */
    mb_init(&m);
    head(&m, "generate", 1);
    kint(&m, "prompt", 3);
    expect_bad(&m, NULL, "prompt");
    /* prompt over the limit */
    lim.max_prompt_bytes = 100;
    char big[102];
    memset(big, 'x', 101);
    big[101] = '\0';
    mb_init(&m);
    head(&m, "generate", 1);
    kstr(&m, "prompt", big);
    expect_bad(&m, &lim, "prompt");
    /* invalid UTF-8 */
    mb_init(&m);
    head(&m, "generate", 1);
    kstr(&m, "prompt", "ab\xc3(");
    expect_bad(&m, NULL, "prompt");
    /* both prompt and tokens */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "tokens");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_int(&m.pk, 1);
    expect_bad(&m, NULL, "prompt");
    /* neither */
    mb_init(&m);
    head(&m, "generate", 1);
    kint(&m, "max_tokens", 3);
    expect_bad(&m, NULL, "prompt");
    /* a 10 MB string */
    size_t n = 10u << 20;
    char *huge = malloc(n + 1);
    assert_non_null(huge);
    memset(huge, 'y', n);
    huge[n] = '\0';
    mb_init(&m);
    head(&m, "generate", 1);
    kstr(&m, "prompt", huge);
    expect_bad(&m, NULL, "prompt");
    free(huge);
    /* tokenize without text, text not a string */
    mb_init(&m);
    head(&m, "tokenize", 0);
    expect_bad(&m, NULL, "text");
    mb_init(&m);
    head(&m, "tokenize", 1);
    kdbl(&m, "text", 1.0);
    expect_bad(&m, NULL, "text");
}

static void test_bad_max_tokens(void **state)
{
    (void)state;
    struct mb m;
    int64_t bad_ints[] = {-1, 0, 1000000000, INT64_MIN};
    for (size_t i = 0; i < sizeof bad_ints / sizeof bad_ints[0]; i++) {
        mb_init(&m);
        head(&m, "generate", 2);
        kstr(&m, "prompt", "hi");
        kint(&m, "max_tokens", bad_ints[i]);
        expect_bad(&m, NULL, "max_tokens");
    }
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kdbl(&m, "max_tokens", 5.0);
    expect_bad(&m, NULL, "max_tokens");
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kstr(&m, "max_tokens", "5");
    expect_bad(&m, NULL, "max_tokens");
    /* uint64 beyond int64 */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "max_tokens");
    msgpack_pack_uint64(&m.pk, UINT64_MAX);
    expect_bad(&m, NULL, "max_tokens");
}

static void test_bad_tokens(void **state)
{
    (void)state;
    struct mb m;
    struct br_proto_limits lim;
    br_proto_limits_default(&lim);
    /* a non-integer entry */
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "tokens");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_int(&m.pk, 1);
    pstr(&m, "two");
    expect_bad(&m, NULL, "tokens[1]");
    /* a negative id */
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "tokens");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_int(&m.pk, -4);
    expect_bad(&m, NULL, "tokens[0]");
    /* an id beyond the vocabulary */
    lim.vocab_size = 100;
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "tokens");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_int(&m.pk, 99);
    msgpack_pack_int(&m.pk, 100);
    expect_bad(&m, &lim, "tokens[1]");
    /* too many */
    lim.max_tokens_in = 8;
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "tokens");
    msgpack_pack_array(&m.pk, 9);
    for (int i = 0; i < 9; i++) msgpack_pack_int(&m.pk, i);
    expect_bad(&m, &lim, "tokens");
    /* empty, and not an array */
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "tokens");
    msgpack_pack_array(&m.pk, 0);
    expect_bad(&m, NULL, "tokens");
    mb_init(&m);
    head(&m, "detokenize", 1);
    kstr(&m, "tokens", "1 2 3");
    expect_bad(&m, NULL, "tokens");
    /* stop_tokens not an array */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kint(&m, "stop_tokens", 2);
    expect_bad(&m, NULL, "stop_tokens");
}

static void test_bad_sampling(void **state)
{
    (void)state;
    struct mb m;
    struct {
        const char *key;
        double v;
    } cases[] = {{"temperature", -0.1},     {"temperature", NAN},
                 {"temperature", INFINITY}, {"top_p", 1.5},
                 {"top_p", -0.01},          {"min_p", -1},
                 {"repeat_penalty", 0.0},   {"repeat_penalty", 11},
                 {"presence_penalty", 3},   {"frequency_penalty", -2.5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mb_init(&m);
        head(&m, "generate", 2);
        kstr(&m, "prompt", "hi");
        kdbl(&m, cases[i].key, cases[i].v);
        expect_bad(&m, NULL, cases[i].key);
    }
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kstr(&m, "temperature", "hot");
    expect_bad(&m, NULL, "temperature");
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kdbl(&m, "top_k", 4.5);
    expect_bad(&m, NULL, "top_k");
    /* seed of the wrong type, and negative */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kstr(&m, "seed", "1234");
    expect_bad(&m, NULL, "seed");
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kint(&m, "seed", -7);
    expect_bad(&m, NULL, "seed");
    /* bools of the wrong type */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kint(&m, "stream", 1);
    expect_bad(&m, NULL, "stream");
    mb_init(&m);
    head(&m, "tokenize", 2);
    kstr(&m, "text", "hi");
    kstr(&m, "add_bos", "yes");
    expect_bad(&m, NULL, "add_bos");
}

static void test_bad_stop(void **state)
{
    (void)state;
    struct mb m;
    /* not an array */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kstr(&m, "stop", "\n");
    expect_bad(&m, NULL, "stop");
    /* too many */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "stop");
    msgpack_pack_array(&m.pk, 17);
    for (int i = 0; i < 17; i++) pstr(&m, "x");
    expect_bad(&m, NULL, "stop");
    /* too long */
    char s[300];
    memset(s, 'z', sizeof s - 1);
    s[sizeof s - 1] = '\0';
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "stop");
    msgpack_pack_array(&m.pk, 2);
    pstr(&m, "ok");
    pstr(&m, s);
    expect_bad(&m, NULL, "stop[1]");
    /* empty string, and a non-string entry */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "stop");
    msgpack_pack_array(&m.pk, 1);
    pstr(&m, "");
    expect_bad(&m, NULL, "stop[0]");
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "stop");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_int(&m.pk, 3);
    expect_bad(&m, NULL, "stop[0]");
}

static void test_bad_logit_bias(void **state)
{
    (void)state;
    struct mb m;
    /* not a map or array */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kint(&m, "logit_bias", 1);
    expect_bad(&m, NULL, "logit_bias");
    /* array entry with one element */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "logit_bias");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_int(&m.pk, 3);
    expect_bad(&m, NULL, "logit_bias[0]");
    /* bias not a number, NaN, too big */
    const char *why[] = {"str", "nan", "big", "key", "neg"};
    for (int i = 0; i < 5; i++) {
        mb_init(&m);
        head(&m, "generate", 2);
        kstr(&m, "prompt", "hi");
        pstr(&m, "logit_bias");
        msgpack_pack_map(&m.pk, 1);
        if (i == 3)
            pstr(&m, "abc");
        else if (i == 4)
            msgpack_pack_int(&m.pk, -1);
        else
            pstr(&m, "5");
        if (i == 0)
            pstr(&m, "x");
        else if (i == 1)
            msgpack_pack_double(&m.pk, NAN);
        else if (i == 2)
            msgpack_pack_double(&m.pk, 1e9);
        else
            msgpack_pack_double(&m.pk, 1.0);
        (void)why;
        expect_bad(&m, NULL, "logit_bias[0]");
    }
    /* too many entries */
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "logit_bias");
    msgpack_pack_array(&m.pk, 1025);
    for (int i = 0; i < 1025; i++) {
        msgpack_pack_array(&m.pk, 2);
        msgpack_pack_int(&m.pk, i);
        msgpack_pack_double(&m.pk, 0.5);
    }
    expect_bad(&m, NULL, "logit_bias");
}

static void test_bad_messages(void **state)
{
    (void)state;
    struct mb m;
    /* not an array */
    mb_init(&m);
    head(&m, "generate", 1);
    kstr(&m, "messages", "hi");
    expect_bad(&m, NULL, "messages");
    /* entry not a map */
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "messages");
    msgpack_pack_array(&m.pk, 1);
    pstr(&m, "hi");
    expect_bad(&m, NULL, "messages[0]");
    /* role missing */
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "messages");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 1);
    kstr(&m, "content", "hi");
    expect_bad(&m, NULL, "messages[0].role");
    /* unknown role */
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "messages");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_map(&m.pk, 2);
    kstr(&m, "role", "user");
    kstr(&m, "content", "hi");
    msgpack_pack_map(&m.pk, 2);
    kstr(&m, "role", "wizard");
    kstr(&m, "content", "hi");
    expect_bad(&m, NULL, "messages[1].role");
    /* content missing / not a string */
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "messages");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 2);
    kstr(&m, "role", "user");
    kint(&m, "content", 4);
    expect_bad(&m, NULL, "messages[0].content");
    /* empty */
    mb_init(&m);
    head(&m, "generate", 1);
    pstr(&m, "messages");
    msgpack_pack_array(&m.pk, 0);
    expect_bad(&m, NULL, "messages");
}

static void test_bad_nesting(void **state)
{
    (void)state;
    struct mb m;
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    pstr(&m, "junk");
    for (int i = 0; i < 1000; i++) msgpack_pack_array(&m.pk, 1);
    msgpack_pack_nil(&m.pk);
    expect_bad_bytes(m.sb.data, m.sb.size, NULL, "nesting", false);
    mb_free(&m);
    /* the same with maps, and just deep enough to be refused */
    mb_init(&m);
    for (int i = 0; i < 17; i++) {
        msgpack_pack_map(&m.pk, 1);
        pstr(&m, "k");
    }
    msgpack_pack_nil(&m.pk);
    expect_bad_bytes(m.sb.data, m.sb.size, NULL, "nesting", false);
    mb_free(&m);
}

/* Mutates seed (flips 1..4 bytes, sometimes truncates) many times and decodes each result as
 * a request and as a response: anything may be refused, nothing may crash or leak, and a
 * refusal always says why. Returns how many mutants decoded as a request. */
static int mutate(const struct br_buf *seed, uint64_t rs, int rounds)
{
    uint8_t *copy = malloc(seed->len);
    int ok = 0;
    assert_non_null(copy);
    for (int it = 0; it < rounds; it++) {
        memcpy(copy, seed->data, seed->len);
        int nflip = 1 + (int)(br_test_rand(&rs) % 4);
        for (int k = 0; k < nflip; k++)
            copy[br_test_rand(&rs) % seed->len] = (uint8_t)br_test_rand(&rs);
        size_t n = seed->len - (br_test_rand(&rs) % 8 == 0 ? br_test_rand(&rs) % seed->len : 0);
        struct br_req r;
        struct br_resp resp;
        struct br_err e = {{0}};
        int rc = br_proto_decode_request(copy, n, NULL, &r, &e);
        assert_true(rc == BR_OK || rc == BR_E_PROTOCOL);
        if (rc) assert_true(e.msg[0] != '\0');
        ok += rc == BR_OK;
        br_req_free(&r);
        e.msg[0] = '\0';
        rc = br_proto_decode_response(copy, n, NULL, &resp, &e);
        assert_true(rc == BR_OK || rc == BR_E_PROTOCOL);
        if (rc) assert_true(e.msg[0] != '\0');
        br_resp_free(&resp);
    }
    free(copy);
    return ok;
}

static void test_mutations(void **state)
{
    (void)state;
    struct br_req in;
    struct br_buf b = {0};
    char *stop[] = {"a", "bc"};
    int32_t toks[] = {1, 300, 70000};
    struct br_logit_bias lb[] = {{1, 1.0f}};
    struct br_chat_msg msgs[] = {{BR_ROLE_USER, "hello", 5}};
    br_req_init(&in);
    in.type = BR_REQ_GENERATE;
    in.id = "mut";
    in.input = BR_INPUT_MESSAGES;
    in.messages = msgs;
    in.n_messages = 1;
    in.sampling.stop = stop;
    in.sampling.n_stop = 2;
    in.sampling.logit_bias = lb;
    in.sampling.n_logit_bias = 1;
    in.sampling.has_seed = true;
    assert_int_equal(br_proto_encode_request(&in, &b), BR_OK);
    assert_true(mutate(&b, 0x1234567, 20000) > 0);
    in.input = BR_INPUT_TOKENS;
    in.tokens = toks;
    in.n_tokens = 3;
    in.sampling.stop_tokens = toks;
    in.sampling.n_stop_tokens = 3;
    assert_int_equal(br_proto_encode_request(&in, &b), BR_OK);
    assert_true(mutate(&b, 0x89abcdef, 20000) > 0);

    /* responses as seeds */
    struct br_usage u = {1, 2};
    struct br_timings t = {1, 2, 3, 4};
    struct br_kv kv[] = {{.key = "a", .kind = BR_KV_STR, .s = "b"},
                         {.key = "n", .kind = BR_KV_DOUBLE, .d = 2.5}};
    float lp = -1.0f;
    assert_int_equal(br_proto_encode_done(&b, "d", BR_FINISH_STOP, &u, &t, "text", 4), BR_OK);
    mutate(&b, 11, 10000);
    assert_int_equal(br_proto_encode_token(&b, "t", 1, 2, "piece", 5, &lp), BR_OK);
    mutate(&b, 12, 10000);
    assert_int_equal(br_proto_encode_info(&b, "i", kv, 2), BR_OK);
    mutate(&b, 13, 10000);
    assert_int_equal(br_proto_encode_tokenize(&b, "k", toks, 3), BR_OK);
    mutate(&b, 14, 10000);
    br_buf_free(&b);
}

/* ---- responses --------------------------------------------------------------------------- */

static void decode_resp(const struct br_buf *b, struct br_resp *r)
{
    struct br_err e = {{0}};
    int rc = br_proto_decode_response(b->data, b->len, NULL, r, &e);
    if (rc) print_error("decode: %s\n", e.msg);
    assert_int_equal(rc, BR_OK);
}

static void test_resp_round_trips(void **state)
{
    (void)state;
    struct br_buf b = {0}, b2 = {0};
    struct br_resp r;
    float lp = -0.75f;

    assert_int_equal(br_proto_encode_token(&b, "g1", 3, 1234, "wor", 3, &lp), BR_OK);
    decode_resp(&b, &r);
    assert_int_equal(r.type, BR_RESP_TOKEN);
    assert_string_equal(r.id, "g1");
    assert_int_equal(r.index, 3);
    assert_int_equal(r.token, 1234);
    assert_string_equal(r.text, "wor");
    assert_true(r.has_logprob && r.logprob == -0.75f);
    /* the generic encoder reproduces the same bytes */
    assert_int_equal(br_proto_encode_response(&r, &b2), BR_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    br_resp_free(&r);

    assert_int_equal(br_proto_encode_token(&b, "g1", 0, 7, "", 0, NULL), BR_OK);
    decode_resp(&b, &r);
    assert_false(r.has_logprob);
    assert_string_equal(r.text, "");
    br_resp_free(&r);

    /* a text-only event (held-back bytes flushed at the end) has token -1 */
    assert_int_equal(br_proto_encode_token(&b, "g1", 4, -1, "\xc3\xa9", 2, NULL), BR_OK);
    decode_resp(&b, &r);
    assert_int_equal(r.token, -1);
    assert_string_equal(r.text, "\xc3\xa9");
    br_resp_free(&r);

    /* invalid UTF-8 in a piece becomes U+FFFD */
    assert_int_equal(br_proto_encode_token(&b, "g1", 1, 7,
                                           "a\xff"
                                           "b",
                                           3, NULL),
                     BR_OK);
    decode_resp(&b, &r);
    assert_string_equal(r.text, "a\xEF\xBF\xBD"
                                "b");
    br_resp_free(&r);

    struct br_usage u = {12, 34};
    struct br_timings t = {1.5, 20.25, 300.0, 42.5};
    assert_int_equal(br_proto_encode_done(&b, "g1", BR_FINISH_LENGTH, &u, &t, "full text", 9),
                     BR_OK);
    decode_resp(&b, &r);
    assert_int_equal(r.type, BR_RESP_DONE);
    assert_int_equal(r.finish_reason, BR_FINISH_LENGTH);
    assert_int_equal(r.usage.prompt_tokens, 12);
    assert_int_equal(r.usage.completion_tokens, 34);
    assert_true(r.timings.queue_ms == 1.5 && r.timings.ttft_ms == 20.25);
    assert_true(r.timings.total_ms == 300.0 && r.timings.tokens_per_s == 42.5);
    assert_string_equal(r.text, "full text");
    br_resp_free(&r);
    for (int f = BR_FINISH_STOP; f <= BR_FINISH_ERROR; f++) {
        assert_int_equal(br_proto_encode_done(&b, "g2", (enum br_finish)f, &u, NULL, NULL, 0),
                         BR_OK);
        decode_resp(&b, &r);
        assert_int_equal(r.finish_reason, f);
        assert_null(r.text);
        br_resp_free(&r);
    }

    for (int c = BR_PROTO_BAD_REQUEST; c <= BR_PROTO_DUPLICATE_ID; c++) {
        assert_int_equal(
            br_proto_encode_error(&b, c == 0 ? NULL : "e", (enum br_proto_code)c, "went wrong"),
            BR_OK);
        decode_resp(&b, &r);
        assert_int_equal(r.type, BR_RESP_ERROR);
        assert_int_equal(r.code, c);
        if (c == 0)
            assert_null(r.id);
        else
            assert_string_equal(r.id, "e");
        assert_string_equal(r.message, "went wrong");
        assert_int_equal(br_proto_status_code(br_proto_code_status(r.code)), c);
        br_resp_free(&r);
    }

    int32_t toks[] = {1, 15043, 3186};
    assert_int_equal(br_proto_encode_tokenize(&b, "k", toks, 3), BR_OK);
    decode_resp(&b, &r);
    assert_int_equal(r.type, BR_RESP_TOKENIZE);
    assert_int_equal(r.n_tokens, 3);
    assert_memory_equal(r.tokens, toks, sizeof toks);
    br_resp_free(&r);
    assert_int_equal(br_proto_encode_tokenize(&b, "k", NULL, 0), BR_OK);
    decode_resp(&b, &r);
    assert_int_equal(r.n_tokens, 0);
    br_resp_free(&r);

    assert_int_equal(br_proto_encode_detokenize(&b, "d", "Hello world", 11), BR_OK);
    decode_resp(&b, &r);
    assert_int_equal(r.type, BR_RESP_DETOKENIZE);
    assert_string_equal(r.text, "Hello world");
    br_resp_free(&r);

    for (int s = BR_HEALTH_LOADING; s <= BR_HEALTH_DRAINING; s++) {
        assert_int_equal(br_proto_encode_health(&b, "h", (enum br_health_state)s), BR_OK);
        decode_resp(&b, &r);
        assert_int_equal(r.type, BR_RESP_HEALTH);
        assert_int_equal(r.state, s);
        br_resp_free(&r);
    }

    struct br_kv kv[] = {{.key = "model", .kind = BR_KV_STR, .s = "bitnet-2b"},
                         {.key = "n_ctx", .kind = BR_KV_INT, .i = 4096},
                         {.key = "load", .kind = BR_KV_DOUBLE, .d = 0.5},
                         {.key = "draining", .kind = BR_KV_BOOL, .i = 1}};
    for (int which = 0; which < 2; which++) {
        int rc =
            which ? br_proto_encode_metrics(&b, "i", kv, 4) : br_proto_encode_info(&b, "i", kv, 4);
        assert_int_equal(rc, BR_OK);
        decode_resp(&b, &r);
        assert_int_equal(r.type, which ? BR_RESP_METRICS : BR_RESP_INFO);
        assert_int_equal(r.n_kv, 4);
        for (int i = 0; i < 4; i++) {
            assert_string_equal(r.kv[i].key, kv[i].key);
            assert_int_equal(r.kv[i].kind, kv[i].kind);
        }
        assert_string_equal(r.kv[0].s, "bitnet-2b");
        assert_int_equal(r.kv[1].i, 4096);
        assert_true(r.kv[2].d == 0.5);
        assert_int_equal(r.kv[3].i, 1);
        br_resp_free(&r);
    }

    assert_int_equal(br_proto_encode_pong(&b, "p"), BR_OK);
    decode_resp(&b, &r);
    assert_int_equal(r.type, BR_RESP_PONG);
    assert_string_equal(r.id, "p");
    br_resp_free(&r);
    br_resp_free(&r);
    br_resp_free(NULL);

    assert_int_equal(br_proto_encode_pong(&b, NULL), BR_E_INVALID);
    br_buf_free(&b);
    br_buf_free(&b2);
}

/* top_logprobs: a request's count (needs logprobs, at most 20) and a token message's
 * alternatives, round trip and refusals. */
static void test_top_logprobs(void **state)
{
    (void)state;
    struct br_req in, out;
    br_req_init(&in);
    in.type = BR_REQ_GENERATE;
    in.id = "t";
    in.input = BR_INPUT_PROMPT;
    in.prompt = "hi";
    in.prompt_len = 2;
    in.logprobs = true;
    in.top_logprobs = 20;
    encode_decode_req(&in, &out);
    assert_int_equal(out.top_logprobs, 20);
    br_req_free(&out);
    in.top_logprobs = 0;
    encode_decode_req(&in, &out);
    assert_int_equal(out.top_logprobs, 0);
    br_req_free(&out);
    struct mb m;
    mb_init(&m);
    head(&m, "generate", 3);
    kstr(&m, "prompt", "hi");
    pstr(&m, "logprobs");
    msgpack_pack_true(&m.pk);
    kint(&m, "top_logprobs", 21);
    expect_bad(&m, NULL, "top_logprobs");
    mb_init(&m);
    head(&m, "generate", 2);
    kstr(&m, "prompt", "hi");
    kint(&m, "top_logprobs", 2);
    expect_bad(&m, NULL, "top_logprobs");

    /* the token message: alternatives with their text (invalid UTF-8 becomes U+FFFD) */
    struct br_buf b = {0}, b2 = {0};
    struct br_resp r;
    float lp = -0.5f;
    const struct br_resp_alt top[2] = {{9, -0.5f, "ab", 2}, {4, -1.25f, "\xe2\x82", 2}};
    assert_int_equal(br_proto_encode_token_top(&b, "g", 2, 9, "ab", 2, &lp, top, 2), BR_OK);
    decode_resp(&b, &r);
    assert_int_equal(r.n_top, 2);
    assert_int_equal(r.top[0].token, 9);
    assert_true(r.top[0].logprob == -0.5f && r.top[1].logprob == -1.25f);
    assert_string_equal(r.top[0].text, "ab");
    assert_string_equal(r.top[1].text, "\xef\xbf\xbd\xef\xbf\xbd");
    assert_int_equal(br_proto_encode_response(&r, &b2), BR_OK);
    br_resp_free(&r);
    decode_resp(&b2, &r);
    assert_int_equal(r.n_top, 2);
    assert_int_equal(r.top[1].token, 4);
    br_resp_free(&r);
    /* no logprob, no alternatives on the wire */
    assert_int_equal(br_proto_encode_token_top(&b, "g", 2, 9, "ab", 2, NULL, top, 2), BR_OK);
    decode_resp(&b, &r);
    assert_int_equal(r.n_top, 0);
    assert_null(r.top);
    br_resp_free(&r);
    br_buf_free(&b);
    br_buf_free(&b2);
    /* malformed alternatives are refused, naming them */
    struct br_err e = {{0}};
    for (int k = 0; k < 3; k++) {
        mb_init(&m);
        head(&m, "token", 4);
        kint(&m, "index", 0);
        kint(&m, "token", 1);
        kstr(&m, "text", "x");
        pstr(&m, "top_logprobs");
        if (k == 0) {
            msgpack_pack_array(&m.pk, 21);
            for (int i = 0; i < 21; i++) msgpack_pack_map(&m.pk, 0);
        } else {
            msgpack_pack_array(&m.pk, 1);
            msgpack_pack_map(&m.pk, 3);
            kint(&m, "token", k == 1 ? -3 : 3);
            kdbl(&m, "logprob", -1.0);
            if (k == 2)
                kint(&m, "text", 5);
            else
                kstr(&m, "text", "y");
        }
        assert_int_equal(br_proto_decode_response(m.sb.data, m.sb.size, NULL, &r, &e),
                         BR_E_PROTOCOL);
        assert_non_null(strstr(e.msg, "top_logprobs"));
        br_resp_free(&r);
        mb_free(&m);
    }
}

static void test_bad_responses(void **state)
{
    (void)state;
    struct mb m;
    struct br_resp r;
    struct br_err e = {{0}};
    /* a token without its index */
    mb_init(&m);
    head(&m, "token", 2);
    kint(&m, "token", 5);
    kstr(&m, "text", "x");
    assert_int_equal(br_proto_decode_response(m.sb.data, m.sb.size, NULL, &r, &e), BR_E_PROTOCOL);
    assert_non_null(strstr(e.msg, "index"));
    br_resp_free(&r);
    mb_free(&m);
    /* an unknown finish reason */
    mb_init(&m);
    head(&m, "done", 2);
    kstr(&m, "finish_reason", "bored");
    pstr(&m, "usage");
    msgpack_pack_map(&m.pk, 0);
    assert_int_equal(br_proto_decode_response(m.sb.data, m.sb.size, NULL, &r, &e), BR_E_PROTOCOL);
    assert_non_null(strstr(e.msg, "finish_reason"));
    br_resp_free(&r);
    mb_free(&m);
    /* an info key with a NUL byte (keys are C strings once decoded) */
    mb_init(&m);
    head(&m, "info", 1);
    pstr(&m, "info");
    msgpack_pack_map(&m.pk, 1);
    msgpack_pack_str(&m.pk, 3);
    msgpack_pack_str_body(&m.pk, "k\0x", 3);
    msgpack_pack_int(&m.pk, 1);
    assert_int_equal(br_proto_decode_response(m.sb.data, m.sb.size, NULL, &r, &e), BR_E_PROTOCOL);
    assert_non_null(strstr(e.msg, "NUL"));
    br_resp_free(&r);
    mb_free(&m);
    /* an unknown response type */
    mb_init(&m);
    head(&m, "surprise", 0);
    assert_int_equal(br_proto_decode_response(m.sb.data, m.sb.size, NULL, &r, &e), BR_E_PROTOCOL);
    assert_non_null(strstr(e.msg, "type"));
    br_resp_free(&r);
    mb_free(&m);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(br_proto_utf8_valid("", 0));
    assert_true(br_proto_utf8_valid("h\xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82", 10));
    assert_false(br_proto_utf8_valid("\xc0\x80", 2));         /* overlong */
    assert_false(br_proto_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(br_proto_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(br_proto_utf8_valid("\xe2\x82", 2));         /* truncated */
    /* a piece ending inside a character holds the partial bytes back */
    assert_int_equal(br_proto_utf8_complete("ab\xe2\x82", 4), 2);
    assert_int_equal(br_proto_utf8_complete("ab\xf0\x9f\x99", 5), 2);
    assert_int_equal(br_proto_utf8_complete("ab\xe2\x82\xac", 5), 5);
    assert_int_equal(br_proto_utf8_complete("\xff", 1), 1); /* invalid counts as complete */
    assert_int_equal(br_proto_utf8_complete("a\xc3", 2), 1);
    assert_string_equal(br_proto_code_name(BR_PROTO_TOO_LONG), "too_long");
    assert_string_equal(br_proto_req_type_name(BR_REQ_DETOKENIZE), "detokenize");
    assert_string_equal(br_proto_health_name(BR_HEALTH_DRAINING), "draining");
    assert_string_equal(br_proto_finish_name((enum br_finish)99), "?");
}

/* A request as the Python client writes it (msgpack.packb of a dict, use_bin_type=True):
 * Python sends floats as float64, string logit_bias keys, and -inf to ban a token. */
static void test_python_encoded_request(void **state)
{
    (void)state;
    static const uint8_t py[] = {
        0xde, 0x00, 0x10, 0xa1, 0x76, 0x01, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa8, 0x67, 0x65, 0x6e,
        0x65, 0x72, 0x61, 0x74, 0x65, 0xa2, 0x69, 0x64, 0xa4, 0x70, 0x79, 0x2d, 0x31, 0xa6, 0x70,
        0x72, 0x6f, 0x6d, 0x70, 0x74, 0xa5, 0x48, 0x69, 0x20, 0xc3, 0xbc, 0xaa, 0x6d, 0x61, 0x78,
        0x5f, 0x74, 0x6f, 0x6b, 0x65, 0x6e, 0x73, 0x10, 0xa6, 0x73, 0x74, 0x72, 0x65, 0x61, 0x6d,
        0xc3, 0xab, 0x74, 0x65, 0x6d, 0x70, 0x65, 0x72, 0x61, 0x74, 0x75, 0x72, 0x65, 0xcb, 0x3f,
        0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa5, 0x74, 0x6f, 0x70, 0x5f, 0x6b, 0x14, 0xa5,
        0x74, 0x6f, 0x70, 0x5f, 0x70, 0xcb, 0x3f, 0xec, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcd, 0xa4,
        0x73, 0x65, 0x65, 0x64, 0x07, 0xa4, 0x73, 0x74, 0x6f, 0x70, 0x91, 0xa1, 0x0a, 0xab, 0x73,
        0x74, 0x6f, 0x70, 0x5f, 0x74, 0x6f, 0x6b, 0x65, 0x6e, 0x73, 0x91, 0x02, 0xaa, 0x6c, 0x6f,
        0x67, 0x69, 0x74, 0x5f, 0x62, 0x69, 0x61, 0x73, 0x82, 0xa1, 0x35, 0xcb, 0xbf, 0xf0, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0xa1, 0x39, 0xcb, 0xff, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xa8, 0x6c, 0x6f, 0x67, 0x70, 0x72, 0x6f, 0x62, 0x73, 0xc3, 0xa7, 0x61, 0x64, 0x64,
        0x5f, 0x62, 0x6f, 0x73, 0xc2, 0xae, 0x6d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x73, 0x5f,
        0x65, 0x78, 0x74, 0x72, 0x61, 0xc0};
    struct br_req r;
    struct br_err e = {{0}};
    int rc = br_proto_decode_request(py, sizeof py, NULL, &r, &e);
    if (rc) print_error("%s\n", e.msg);
    assert_int_equal(rc, BR_OK);
    assert_string_equal(r.id, "py-1");
    assert_string_equal(r.prompt, "Hi \xc3\xbc");
    assert_int_equal(r.max_tokens, 16);
    assert_true(r.stream && r.logprobs && !r.add_bos);
    assert_true(r.sampling.temperature == 0.5f && r.sampling.top_k == 20);
    assert_true(r.sampling.top_p == 0.9f);
    assert_true(r.sampling.has_seed && r.sampling.seed == 7);
    assert_int_equal(r.sampling.n_stop, 1);
    assert_string_equal(r.sampling.stop[0], "\n");
    assert_int_equal(r.sampling.stop_tokens[0], 2);
    assert_int_equal(r.sampling.n_logit_bias, 2);
    assert_int_equal(r.sampling.logit_bias[0].token, 5);
    assert_true(r.sampling.logit_bias[0].bias == -1.0f);
    assert_true(isinf(r.sampling.logit_bias[1].bias));
    br_req_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_req_generate_prompt),
        cmocka_unit_test(test_req_generate_tokens_and_messages),
        cmocka_unit_test(test_req_other_types),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_python_encoded_request),
        cmocka_unit_test(test_bad_framing),
        cmocka_unit_test(test_bad_envelope),
        cmocka_unit_test(test_bad_prompt),
        cmocka_unit_test(test_bad_max_tokens),
        cmocka_unit_test(test_bad_tokens),
        cmocka_unit_test(test_bad_sampling),
        cmocka_unit_test(test_bad_stop),
        cmocka_unit_test(test_bad_logit_bias),
        cmocka_unit_test(test_bad_messages),
        cmocka_unit_test(test_bad_nesting),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_resp_round_trips),
        cmocka_unit_test(test_top_logprobs),
        cmocka_unit_test(test_bad_responses),
        cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
