/*
 * Tests of proto/client.c against a scripted fake server: a thread with a ROUTER socket on
 * an ephemeral 127.0.0.1 port that decodes requests with br_proto_decode_request and
 * answers according to the prompt: "stream" (five tokens then done), "busy" (an error),
 * "silent" (nothing, not even pongs), "late" (done only after the client gave up),
 * "endless" (tokens until cancelled), "garbage" (a reply that is not msgpack).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "proto/client.h"
#include "proto/keyfile.h"
#include "proto/proto.h"

struct fake {
    void *ctx;
    void *sock;
    char endpoint[128];
    pthread_t thread;
    atomic_int stop;
    atomic_int pings;
    atomic_int cancels;
    atomic_int requests;
    /* the one delayed or endless stream in flight (server thread only) */
    bool active, endless, silent;
    uint8_t ident[256];
    size_t ident_len;
    char id[160];
    int64_t due_ms;
    uint32_t index;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void reply(struct fake *f, const uint8_t *ident, size_t ident_len, const struct br_buf *b)
{
    zmq_send(f->sock, ident, ident_len, ZMQ_SNDMORE);
    zmq_send(f->sock, b->data, b->len, 0);
}

static void handle(struct fake *f, const uint8_t *ident, size_t ident_len, const void *msg,
                   size_t len)
{
    struct br_req r;
    struct br_err e = {{0}};
    struct br_buf b = {0};
    atomic_fetch_add(&f->requests, 1);
    int rc = br_proto_decode_request(msg, len, NULL, &r, &e);
    if (rc) {
        br_proto_encode_error(&b, r.id, br_proto_status_code(rc), e.msg);
        reply(f, ident, ident_len, &b);
        goto out;
    }
    if (r.type != BR_REQ_PING && r.type != BR_REQ_CANCEL) f->silent = false;
    switch (r.type) {
    case BR_REQ_PING:
        atomic_fetch_add(&f->pings, 1);
        if (!f->silent) {
            br_proto_encode_pong(&b, r.id);
            reply(f, ident, ident_len, &b);
        }
        break;
    case BR_REQ_CANCEL:
        atomic_fetch_add(&f->cancels, 1);
        if (f->active && f->endless && strcmp(f->id, r.id) == 0) {
            struct br_usage u = {3, f->index};
            f->active = false;
            br_proto_encode_done(&b, r.id, BR_FINISH_CANCELLED, &u, NULL, NULL, 0);
            reply(f, ident, ident_len, &b);
        }
        break;
    case BR_REQ_HEALTH:
        br_proto_encode_health(&b, r.id, BR_HEALTH_READY);
        reply(f, ident, ident_len, &b);
        break;
    case BR_REQ_INFO:
    case BR_REQ_METRICS: {
        struct br_kv kv[] = {{.key = "model", .kind = BR_KV_STR, .s = "fake"},
                             {.key = "n_ctx", .kind = BR_KV_INT, .i = 2048}};
        if (r.type == BR_REQ_INFO)
            br_proto_encode_info(&b, r.id, kv, 2);
        else
            br_proto_encode_metrics(&b, r.id, kv + 1, 1);
        reply(f, ident, ident_len, &b);
        break;
    }
    case BR_REQ_TOKENIZE: {
        int32_t t[64];
        uint32_t n = 0;
        if (r.add_bos) t[n++] = 1;
        for (size_t i = 0; i < r.prompt_len && n < 64; i++) t[n++] = (uint8_t)r.prompt[i];
        br_proto_encode_tokenize(&b, r.id, t, n);
        reply(f, ident, ident_len, &b);
        break;
    }
    case BR_REQ_DETOKENIZE: {
        char s[64];
        uint32_t n = 0;
        for (; n < r.n_tokens && n < 63; n++) s[n] = (char)r.tokens[n];
        br_proto_encode_detokenize(&b, r.id, s, n);
        reply(f, ident, ident_len, &b);
        break;
    }
    case BR_REQ_GENERATE: {
        const char *p = r.prompt ? r.prompt : "";
        if (strcmp(p, "stream") == 0) {
            char full[128] = "";
            for (uint32_t i = 0; i < 5 && i < (uint32_t)r.max_tokens; i++) {
                char piece[16];
                snprintf(piece, sizeof piece, "t%u ", i);
                strcat(full, piece);
                if (r.stream) {
                    float lp = -0.5f * (float)i;
                    br_proto_encode_token(&b, r.id, i, 100 + (int32_t)i, piece, strlen(piece),
                                          r.logprobs ? &lp : NULL);
                    reply(f, ident, ident_len, &b);
                }
            }
            struct br_usage u = {1, 5};
            struct br_timings t = {0.1, 1.0, 2.0, 2500.0};
            br_proto_encode_done(&b, r.id, BR_FINISH_LENGTH, &u, &t, r.stream ? NULL : full,
                                 strlen(full));
            reply(f, ident, ident_len, &b);
        } else if (strcmp(p, "busy") == 0) {
            br_proto_encode_error(&b, r.id, BR_PROTO_BUSY, "queue full");
            reply(f, ident, ident_len, &b);
        } else if (strcmp(p, "silent") == 0) {
            f->silent = true;
        } else if (strcmp(p, "late") == 0 || strcmp(p, "endless") == 0) {
            f->active = true;
            f->endless = p[0] == 'e';
            memcpy(f->ident, ident, ident_len);
            f->ident_len = ident_len;
            snprintf(f->id, sizeof f->id, "%s", r.id);
            f->due_ms = mono_ms() + (f->endless ? 5 : 400);
            f->index = 0;
        } else if (strcmp(p, "noid") == 0) {
            br_proto_encode_error(&b, NULL, BR_PROTO_BAD_REQUEST, "message: too large");
            reply(f, ident, ident_len, &b);
        } else if (strcmp(p, "garbage") == 0) {
            static const uint8_t junk[] = {0xc1, 0x00};
            struct br_buf g = {(uint8_t *)junk, sizeof junk, sizeof junk};
            reply(f, ident, ident_len, &g);
        } else {
            br_proto_encode_error(&b, r.id, BR_PROTO_INTERNAL, "unscripted prompt");
            reply(f, ident, ident_len, &b);
        }
        break;
    }
    default:
        break;
    }
out:
    br_req_free(&r);
    br_buf_free(&b);
}

/* Timed events: the late reply, and the next token of an endless stream. */
static void tick(struct fake *f)
{
    struct br_buf b = {0};
    if (!f->active || mono_ms() < f->due_ms) return;
    if (f->endless) {
        br_proto_encode_token(&b, f->id, f->index, 7, "x", 1, NULL);
        f->index++;
        f->due_ms = mono_ms() + 5;
        if (f->index > 2000) f->active = false; /* a runaway test must still end */
    } else {
        struct br_usage u = {1, 1};
        br_proto_encode_done(&b, f->id, BR_FINISH_STOP, &u, NULL, NULL, 0);
        f->active = false;
    }
    reply(f, f->ident, f->ident_len, &b);
    br_buf_free(&b);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    zmq_pollitem_t item = {.socket = f->sock, .events = ZMQ_POLLIN};
    while (!atomic_load(&f->stop)) {
        tick(f);
        if (zmq_poll(&item, 1, 2) <= 0) continue;
        zmq_msg_t id, msg;
        zmq_msg_init(&id);
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&id, f->sock, 0) >= 0 && zmq_msg_more(&id) &&
            zmq_msg_recv(&msg, f->sock, 0) >= 0 && zmq_msg_size(&id) <= sizeof f->ident)
            handle(f, zmq_msg_data(&id), zmq_msg_size(&id), zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&id);
        zmq_msg_close(&msg);
    }
    return NULL;
}

static int setup(void **state)
{
    struct fake *f = calloc(1, sizeof *f);
    int zero = 0;
    size_t n;
    if (!f) return -1;
    f->ctx = zmq_ctx_new();
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(f->sock, "tcp://127.0.0.1:*")) return -1;
    n = sizeof f->endpoint;
    zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->endpoint, &n);
    if (pthread_create(&f->thread, NULL, fake_main, f)) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fake *f = *state;
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
    free(f);
    return 0;
}

static struct br_client *connect_fake(struct fake *f, int timeout_ms)
{
    struct br_client *c = NULL;
    struct br_err e = {{0}};
    int rc = br_client_connect(f->endpoint, timeout_ms, &c, &e);
    if (rc) print_error("connect: %s\n", e.msg);
    assert_int_equal(rc, BR_OK);
    return c;
}

struct collected {
    int tokens;
    int finals;
    char text[256];
    uint32_t last_index;
    bool logprobs;
    enum br_resp_type final_type;
    enum br_finish finish;
    int cancel_after; /* ask to cancel after this many tokens; 0 = never */
};

static int collect(const struct br_resp *r, void *user)
{
    struct collected *c = user;
    if (r->type == BR_RESP_TOKEN) {
        assert_int_equal(r->index, (uint32_t)c->tokens);
        c->last_index = r->index;
        c->logprobs |= r->has_logprob;
        c->tokens++;
        if (strlen(c->text) + r->text_len < sizeof c->text) strcat(c->text, r->text);
        return c->cancel_after && c->tokens >= c->cancel_after;
    }
    c->finals++;
    c->final_type = r->type;
    if (r->type == BR_RESP_DONE) {
        c->finish = r->finish_reason;
        if (r->text) snprintf(c->text, sizeof c->text, "%s", r->text);
    }
    return 0;
}

static void gen_req(struct br_req *r, const char *prompt, bool stream)
{
    br_req_init(r);
    r->type = BR_REQ_GENERATE;
    r->input = BR_INPUT_PROMPT;
    r->prompt = (char *)prompt;
    r->prompt_len = strlen(prompt);
    r->stream = stream;
}

static void test_stream(void **state)
{
    struct fake *f = *state;
    struct br_client *c = connect_fake(f, 2000);
    struct br_req r;
    struct collected got = {0};
    struct br_err e = {{0}};
    gen_req(&r, "stream", true);
    r.logprobs = true;
    r.id = "s-1";
    int rc = br_client_generate(c, &r, collect, &got, &e);
    if (rc) print_error("%s\n", e.msg);
    assert_int_equal(rc, BR_OK);
    assert_int_equal(got.tokens, 5);
    assert_true(got.logprobs);
    assert_int_equal(got.finals, 1);
    assert_int_equal(got.final_type, BR_RESP_DONE);
    assert_int_equal(got.finish, BR_FINISH_LENGTH);
    assert_string_equal(got.text, "t0 t1 t2 t3 t4 ");
    /* again on the same client, with a generated id and no callback */
    r.id = NULL;
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_OK);
    br_client_close(&c);
    assert_null(c);
    br_client_close(&c);
    br_client_close(NULL);
}

static void test_non_stream(void **state)
{
    struct fake *f = *state;
    struct br_client *c = connect_fake(f, 2000);
    struct br_req r;
    struct collected got = {0};
    gen_req(&r, "stream", false);
    assert_int_equal(br_client_generate(c, &r, collect, &got, NULL), BR_OK);
    assert_int_equal(got.tokens, 0);
    assert_int_equal(got.finals, 1);
    assert_string_equal(got.text, "t0 t1 t2 t3 t4 ");
    br_client_close(&c);
}

static void test_server_errors(void **state)
{
    struct fake *f = *state;
    struct br_client *c = connect_fake(f, 2000);
    struct br_req r;
    struct collected got = {0};
    struct br_err e = {{0}};
    gen_req(&r, "busy", true);
    assert_int_equal(br_client_generate(c, &r, collect, &got, &e), BR_E_BUSY);
    assert_non_null(strstr(e.msg, "busy"));
    assert_non_null(strstr(e.msg, "queue full"));
    assert_int_equal(got.final_type, BR_RESP_ERROR);
    /* a request the server's decoder refuses comes back as bad_request naming the field */
    gen_req(&r, "stream", true);
    r.sampling.temperature = -1.0f;
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_PROTOCOL);
    assert_non_null(strstr(e.msg, "bad_request"));
    assert_non_null(strstr(e.msg, "temperature"));
    /* an error without an id (the server could not read ours) ends the call at once */
    gen_req(&r, "noid", true);
    int64_t t0 = mono_ms();
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_PROTOCOL);
    assert_true(mono_ms() - t0 < 1000);
    assert_non_null(strstr(e.msg, "too large"));
    /* a reply that is not msgpack */
    gen_req(&r, "garbage", true);
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_PROTOCOL);
    assert_non_null(strstr(e.msg, "bad response"));
    br_client_close(&c);
}

static void test_silent_server_times_out(void **state)
{
    struct fake *f = *state;
    struct br_client *c = connect_fake(f, 300);
    struct br_req r;
    struct br_err e = {{0}};
    br_client_set_ping_interval(c, 40);
    int pings0 = atomic_load(&f->pings), cancels0 = atomic_load(&f->cancels);
    gen_req(&r, "silent", true);
    int64_t t0 = mono_ms();
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_TIMEOUT);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 290 && took < 2000);
    assert_non_null(strstr(e.msg, "300 ms"));
    for (int i = 0; i < 100 && atomic_load(&f->cancels) == cancels0; i++) sleep_ms(10);
    assert_true(atomic_load(&f->pings) - pings0 >= 3); /* pinged while waiting */
    assert_true(atomic_load(&f->cancels) > cancels0);  /* and cancelled on giving up */
    /* a ping to a silent server times out too */
    br_client_set_timeout(c, 100);
    gen_req(&r, "silent", true);
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_TIMEOUT);
    assert_int_equal(br_client_ping(c, &e), BR_E_TIMEOUT);
    /* an abandoned request may still run on the server: its id is not sent again */
    gen_req(&r, "silent", true);
    r.id = "mine";
    r.id_len = 4;
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_TIMEOUT);
    /* refused here: sent to this silent server it would time out instead */
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_DUPLICATE);
    assert_non_null(strstr(e.msg, "still in flight"));
    br_client_close(&c);
}

static void test_late_reply_is_dropped(void **state)
{
    struct fake *f = *state;
    struct br_client *c = connect_fake(f, 150);
    struct br_req r;
    struct br_err e = {{0}};
    enum br_health_state hs = BR_HEALTH_LOADING;
    gen_req(&r, "late", true);
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_TIMEOUT);
    sleep_ms(400); /* the late done for the abandoned request is now queued */
    br_client_set_timeout(c, 2000);
    assert_int_equal(br_client_health(c, &hs, &e), BR_OK);
    assert_int_equal(hs, BR_HEALTH_READY);
    br_client_close(&c);
}

static void test_cancel_from_callback(void **state)
{
    struct fake *f = *state;
    struct br_client *c = connect_fake(f, 2000);
    struct br_req r;
    struct collected got = {.cancel_after = 3};
    struct br_err e = {{0}};
    gen_req(&r, "endless", true);
    int rc = br_client_generate(c, &r, collect, &got, &e);
    if (rc) print_error("%s\n", e.msg);
    assert_int_equal(rc, BR_OK);
    assert_int_equal(got.final_type, BR_RESP_DONE);
    assert_int_equal(got.finish, BR_FINISH_CANCELLED);
    assert_true(got.tokens >= 3);
    br_client_close(&c);
}

static void test_simple_calls(void **state)
{
    struct fake *f = *state;
    struct br_client *c = connect_fake(f, 2000);
    struct br_err e = {{0}};
    int32_t *toks = NULL;
    uint32_t n = 0;
    assert_int_equal(br_client_tokenize(c, "abc", 3, true, &toks, &n, &e), BR_OK);
    assert_int_equal(n, 4);
    assert_int_equal(toks[0], 1);
    assert_int_equal(toks[3], 'c');
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(br_client_detokenize(c, toks + 1, n - 1, &text, &len, &e), BR_OK);
    assert_string_equal(text, "abc");
    assert_int_equal(len, 3);
    free(text);
    free(toks);
    enum br_health_state hs = BR_HEALTH_LOADING;
    assert_int_equal(br_client_health(c, &hs, &e), BR_OK);
    assert_int_equal(hs, BR_HEALTH_READY);
    struct br_resp info;
    assert_int_equal(br_client_info(c, &info, &e), BR_OK);
    assert_int_equal(info.type, BR_RESP_INFO);
    assert_int_equal(info.n_kv, 2);
    assert_string_equal(info.kv[0].s, "fake");
    br_resp_free(&info);
    assert_int_equal(br_client_metrics(c, &info, &e), BR_OK);
    assert_int_equal(info.type, BR_RESP_METRICS);
    assert_int_equal(info.kv[0].i, 2048);
    br_resp_free(&info);
    assert_int_equal(br_client_ping(c, &e), BR_OK);
    assert_int_equal(br_client_cancel(c, "nothing-running", &e), BR_OK);
    assert_int_equal(br_client_cancel(c, "", &e), BR_E_INVALID);
    br_client_close(&c);
}

static void test_no_server(void **state)
{
    (void)state;
    struct br_client *c = NULL;
    struct br_err e = {{0}};
    struct br_req r;
    /* a port where nothing listens (bound and closed again, so it is free) */
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
    char ep[128];
    size_t n = sizeof ep;
    assert_int_equal(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &n);
    zmq_close(s);
    zmq_ctx_term(ctx);
    assert_int_equal(br_client_connect(ep, 200, &c, &e), BR_OK);
    gen_req(&r, "stream", true);
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_UNAVAILABLE);
    assert_non_null(strstr(e.msg, ep));
    br_client_close(&c);
    assert_int_not_equal(br_client_connect("nonsense://x", 200, &c, &e), BR_OK);
    assert_null(c);
}

/* A call waits for a connection only as long as the connect timeout, however long the
 * call timeout, and says which address it could not reach. */
static void test_connect_timeout(void **state)
{
    (void)state;
    struct br_client *c = NULL;
    struct br_err e = {{0}};
    struct br_req r;
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
    char ep[128];
    size_t n = sizeof ep;
    assert_int_equal(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &n);
    zmq_close(s);
    zmq_ctx_term(ctx);
    /* host:port, without the transport */
    assert_int_equal(br_client_connect(ep + strlen("tcp://"), 60000, &c, &e), BR_OK);
    br_client_set_connect_timeout(c, 300);
    gen_req(&r, "stream", true);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(br_client_generate(c, &r, NULL, NULL, &e), BR_E_UNAVAILABLE);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s_taken = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(s_taken >= 0.25 && s_taken < 3.0);
    assert_non_null(strstr(e.msg, ep));
    br_client_close(&c);
}

/* Endpoints: host:port means tcp://host:port; transports pass through; the rest is
 * refused naming the address. */
static void test_addr_normalize(void **state)
{
    (void)state;
    static const char *const in_out[][2] = {
        {"127.0.0.1:5555", "tcp://127.0.0.1:5555"},
        {"localhost:1", "tcp://localhost:1"},
        {"[::1]:5555", "tcp://[::1]:5555"},
        {"*:5555", "tcp://*:5555"},
        {"tcp://10.0.0.2:65535", "tcp://10.0.0.2:65535"},
        {"ipc:///tmp/x.sock", "ipc:///tmp/x.sock"},
        {"inproc://a", "inproc://a"},
    };
    static const char *const bad[] = {
        "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",     "127.0.0.1:65536",
        "h:12x",     "::1:5555",   "tcp://127.0.0.1", "udp://h:1",
        "",          ":5555"};
    char out[BR_CLIENT_ADDR_MAX];
    struct br_err e = {{0}};
    for (size_t i = 0; i < sizeof in_out / sizeof *in_out; i++) {
        assert_int_equal(br_client_addr_normalize(in_out[i][0], out, sizeof out, &e), BR_OK);
        assert_string_equal(out, in_out[i][1]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(br_client_addr_normalize(bad[i], out, sizeof out, &e), BR_E_INVALID);
        if (bad[i][0]) assert_non_null(strstr(e.msg, bad[i]));
    }
}

/* Writes text to a fresh temporary file; returns its path (static buffer per slot). */
static const char *key_file(int slot, const char *text)
{
    static char paths[4][64];
    snprintf(paths[slot], sizeof paths[slot], "/tmp/br_client_test_key.%d.%d", (int)getpid(), slot);
    FILE *f = fopen(paths[slot], "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return paths[slot];
}

/* Key files as `bitrack keygen` writes them; a CurveZMQ pair from libzmq checks that the
 * public key is derived from the secret one. Each file's kind is read from its content:
 * a key of the wrong kind, or a file stating none, is refused whatever its name. */
static void test_curve_keys(void **state)
{
    (void)state;
    if (!zmq_has("curve")) skip();
    char pub[41], sec[41], key[41], text[160];
    struct br_err e = {{0}};
    enum br_key_kind kind;
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    snprintf(text, sizeof text, "# bitrack CurveZMQ secret key; keep it private\n\n%s\n", sec);
    const char *secf = key_file(0, text);
    snprintf(text, sizeof text, "  # bitrack CurveZMQ public key\r\n%s\r\n", pub);
    const char *pubf = key_file(1, text);
    assert_int_equal(br_key_file_read(pubf, BR_KEY_PUBLIC, key, &kind, &e), BR_OK);
    assert_string_equal(key, pub);
    assert_int_equal(kind, BR_KEY_PUBLIC);
    assert_int_equal(br_key_file_read(secf, BR_KEY_UNKNOWN, key, &kind, &e), BR_OK);
    assert_int_equal(kind, BR_KEY_SECRET);
    struct br_client_curve c;
    assert_int_equal(br_client_curve_load(pubf, secf, &c, &e), BR_OK);
    assert_string_equal(c.server_key, pub);
    assert_string_equal(c.secret_key, sec);
    assert_string_equal(c.public_key, pub); /* derived from the secret key */
    /* the kinds swapped: each file named in the error */
    assert_int_equal(br_client_curve_load(secf, secf, &c, &e), BR_E_MISMATCH);
    assert_non_null(strstr(e.msg, secf));
    assert_non_null(strstr(e.msg, "holds a secret key, but a public key is needed"));
    assert_int_equal(br_client_curve_load(pubf, pubf, &c, &e), BR_E_MISMATCH);
    assert_non_null(strstr(e.msg, "holds a public key, but a secret key is needed"));
    /* no stated kind: readable, but refused wherever a kind is needed */
    snprintf(text, sizeof text, "# a comment\n%s\n", sec);
    const char *nokind = key_file(3, text);
    assert_int_equal(br_key_file_read(nokind, BR_KEY_UNKNOWN, key, &kind, &e), BR_OK);
    assert_int_equal(kind, BR_KEY_UNKNOWN);
    assert_int_equal(br_key_file_read(nokind, BR_KEY_SECRET, key, NULL, &e), BR_E_MISMATCH);
    assert_non_null(strstr(e.msg, "does not say whether"));
    assert_int_equal(br_client_curve_load(pubf, nokind, &c, &e), BR_E_MISMATCH);
    /* refused: too short, not z85, no key at all, two keys, both kinds stated */
    char two[160], both[160];
    snprintf(two, sizeof two, "# bitrack CurveZMQ public key\n%s\n%s\n", pub, pub);
    snprintf(both, sizeof both,
             "# bitrack CurveZMQ public key\n# bitrack CurveZMQ secret key\n%s\n", pub);
    const char *bad[] = {"abc\n",
                         "012345678901234567890123456789012345678~\n",
                         "0123456789 0123456789012345678901234567890\n",
                         "# only a comment\n",
                         two,
                         both};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *f = key_file(2, bad[i]);
        assert_int_equal(br_key_file_read(f, BR_KEY_UNKNOWN, key, NULL, &e), BR_E_FORMAT);
        assert_non_null(strstr(e.msg, f));
        assert_int_equal(br_client_curve_load(pubf, f, &c, &e), BR_E_FORMAT);
    }
    assert_int_equal(br_key_file_read("/nonexistent/key", BR_KEY_PUBLIC, key, NULL, &e), BR_E_IO);
    assert_non_null(strstr(e.msg, "/nonexistent/key"));
    unlink(secf);
    unlink(pubf);
    unlink(nokind);
    unlink(key_file(2, ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_non_stream),
        cmocka_unit_test(test_server_errors),
        cmocka_unit_test(test_silent_server_times_out),
        cmocka_unit_test(test_late_reply_is_dropped),
        cmocka_unit_test(test_cancel_from_callback),
        cmocka_unit_test(test_simple_calls),
        cmocka_unit_test(test_no_server),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_addr_normalize),
        cmocka_unit_test(test_curve_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
