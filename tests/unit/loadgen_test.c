/*
 * Tests of bench/loadgen*.c: the metric arithmetic on hand-made data (percentiles,
 * aggregates), the Poisson arrival generator, random and JSONL workloads, the JSON reader
 * and writer, and whole runs against a scripted fake server: a ROUTER thread on an
 * ephemeral 127.0.0.1 port that answers each generate with its first token after FIRST_MS,
 * then one token every GAP_MS until max_tokens, then done, and answers `busy` at once to
 * prompts whose first id is BUSY_ID, and never answers those whose first id is SILENT_ID
 * (pongs aside, which do not count as an answer). Timing tolerances are wide (the machine may have
 * two loaded cores); counts are exact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bitrack/progress.h"
#include "bench/loadgen.h"
#include "proto/proto.h"
#include "test_util.h"

#define FIRST_MS    100.0
#define GAP_MS      20.0
#define BUSY_ID     999
#define SILENT_ID   998
#define MAX_STREAMS 32

/* ---- the fake server ------------------------------------------------------------------ */

struct stream {
    uint8_t ident[256];
    size_t ident_len;
    char id[160];
    double t0;  /* arrival, br_now() seconds */
    uint32_t n; /* tokens to send */
    uint32_t k; /* tokens sent */
    uint32_t n_in;
};

struct fake {
    void *ctx, *sock;
    char endpoint[128];
    pthread_t thread;
    atomic_int stop;
    struct stream s[MAX_STREAMS]; /* server thread only */
    int n_streams;
};

static void reply(struct fake *f, const uint8_t *ident, size_t ident_len, const struct br_buf *b)
{
    zmq_send(f->sock, ident, ident_len, ZMQ_SNDMORE);
    zmq_send(f->sock, b->data, b->len, 0);
}

static double due(const struct stream *s)
{
    return s->t0 + (FIRST_MS + GAP_MS * s->k) * 1e-3;
}

static void handle(struct fake *f, const uint8_t *ident, size_t ident_len, const void *msg,
                   size_t len)
{
    struct br_req req;
    struct br_err err = {{0}};
    struct br_buf b = {0};
    if (br_proto_decode_request(msg, len, NULL, &req, &err)) {
        br_proto_encode_error(&b, req.id, BR_PROTO_BAD_REQUEST, err.msg);
        reply(f, ident, ident_len, &b);
    } else if (req.type == BR_REQ_PING) {
        br_proto_encode_pong(&b, req.id);
        reply(f, ident, ident_len, &b);
    } else if (req.type == BR_REQ_INFO) {
        struct br_kv kv[] = {{"vocab_size", BR_KV_INT, 1030, 0, NULL},
                             {"context_length", BR_KV_INT, 256, 0, NULL}};
        br_proto_encode_info(&b, req.id, kv, 2);
        reply(f, ident, ident_len, &b);
    } else if (req.type == BR_REQ_GENERATE) {
        if (req.n_tokens && req.tokens[0] == BUSY_ID) {
            br_proto_encode_error(&b, req.id, BR_PROTO_BUSY, "queue full");
            reply(f, ident, ident_len, &b);
        } else if (req.n_tokens && req.tokens[0] == SILENT_ID) {
            /* dropped: the client must time out */
        } else if (f->n_streams < MAX_STREAMS && ident_len <= 256 && req.id_len < 160) {
            struct stream *s = &f->s[f->n_streams++];
            memcpy(s->ident, ident, ident_len);
            s->ident_len = ident_len;
            snprintf(s->id, sizeof s->id, "%s", req.id);
            s->t0 = br_now();
            s->n = (uint32_t)req.max_tokens;
            s->k = 0;
            s->n_in = req.n_tokens;
        } else {
            br_proto_encode_error(&b, req.id, BR_PROTO_INTERNAL, "fake server full");
            reply(f, ident, ident_len, &b);
        }
    }
    br_req_free(&req);
    br_buf_free(&b);
}

/* Sends every event that is due; the last token is followed by done at once. */
static void emit_due(struct fake *f)
{
    struct br_buf b = {0};
    double now = br_now();
    for (int i = 0; i < f->n_streams;) {
        struct stream *s = &f->s[i];
        if (due(s) > now) {
            i++;
            continue;
        }
        br_proto_encode_token(&b, s->id, s->k, 100 + (int32_t)s->k, "x", 1, NULL);
        reply(f, s->ident, s->ident_len, &b);
        if (++s->k == s->n) {
            struct br_usage u = {s->n_in, s->n};
            struct br_timings t = {0, FIRST_MS, FIRST_MS + GAP_MS * (s->n - 1), 0};
            br_proto_encode_done(&b, s->id, BR_FINISH_LENGTH, &u, &t, NULL, 0);
            reply(f, s->ident, s->ident_len, &b);
            f->s[i] = f->s[--f->n_streams];
        }
    }
    br_buf_free(&b);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    while (!atomic_load(&f->stop)) {
        double next = br_now() + 0.05;
        for (int i = 0; i < f->n_streams; i++)
            if (due(&f->s[i]) < next) next = due(&f->s[i]);
        long wait = (long)ceil((next - br_now()) * 1e3);
        zmq_pollitem_t it = {f->sock, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, wait < 0 ? 0 : wait);
        while (it.revents & ZMQ_POLLIN) {
            uint8_t ident[256];
            int il = zmq_recv(f->sock, ident, sizeof ident, ZMQ_DONTWAIT);
            if (il < 0) break;
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, f->sock, 0) >= 0)
                handle(f, ident, (size_t)il, zmq_msg_data(&m), zmq_msg_size(&m));
            zmq_msg_close(&m);
        }
        emit_due(f);
    }
    return NULL;
}

static struct fake *fake_start(void)
{
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->ctx = zmq_ctx_new();
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(f->sock, "tcp://127.0.0.1:*"), 0);
    size_t n = sizeof f->endpoint;
    zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->endpoint, &n);
    atomic_init(&f->stop, 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
    return f;
}

static void fake_stop(struct fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
    free(f);
}

/* n prompts of 4 ids each (the first `marker` for the items in marked[]), max_tokens out. */
static void make_workload_marked(struct br_loadgen_workload *wl, size_t n, int32_t out,
                                 const bool *marked, int32_t marker)
{
    wl->items = calloc(n, sizeof *wl->items);
    assert_non_null(wl->items);
    wl->n = n;
    for (size_t i = 0; i < n; i++) {
        wl->items[i].tokens = malloc(4 * sizeof(int32_t));
        assert_non_null(wl->items[i].tokens);
        for (int k = 0; k < 4; k++) wl->items[i].tokens[k] = 10 + k;
        if (marked && marked[i]) wl->items[i].tokens[0] = marker;
        wl->items[i].n_tokens = 4;
        wl->items[i].max_tokens = out;
    }
}

static void make_workload(struct br_loadgen_workload *wl, size_t n, int32_t out, const bool *busy)
{
    make_workload_marked(wl, n, out, busy, BUSY_ID);
}

static void assert_near(double got, double want, double rel)
{
    if (fabs(got - want) > rel * want)
        fail_msg("got %.3f, want %.3f +- %.0f%%", got, want, rel * 100);
}

/* ---- arithmetic ----------------------------------------------------------------------- */

static void test_percentile_nearest_rank(void **state)
{
    (void)state;
    double ten[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    assert_true(br_loadgen_percentile(ten, 10, 50) == 5);
    assert_true(br_loadgen_percentile(ten, 10, 90) == 9);
    assert_true(br_loadgen_percentile(ten, 10, 99) == 10);
    assert_true(br_loadgen_percentile(ten, 10, 100) == 10);
    assert_true(br_loadgen_percentile(ten, 10, 0) == 1);
    assert_true(br_loadgen_percentile(ten, 10, 10) == 1);
    assert_true(br_loadgen_percentile(ten, 10, 11) == 2);
    double four[4] = {10, 20, 30, 40};
    assert_true(br_loadgen_percentile(four, 4, 50) == 20);
    assert_true(br_loadgen_percentile(four, 4, 51) == 30);
    assert_true(br_loadgen_percentile(four, 4, 90) == 40);
    double three[3] = {1, 2, 3};
    assert_true(br_loadgen_percentile(three, 3, 50) == 2);
    assert_true(br_loadgen_percentile(three, 3, 33) == 1);
    assert_true(br_loadgen_percentile(three, 3, 34) == 2);
    double one[1] = {7};
    assert_true(br_loadgen_percentile(one, 1, 50) == 7 && br_loadgen_percentile(one, 1, 99) == 7);
    assert_true(br_loadgen_percentile(NULL, 0, 50) == 0);
    /* 100 values: p99 is the 99th, not the 100th */
    double h[100];
    for (int i = 0; i < 100; i++) h[i] = i + 1;
    assert_true(br_loadgen_percentile(h, 100, 99) == 99);
    assert_true(br_loadgen_percentile(h, 100, 90) == 90);
    assert_true(br_loadgen_percentile(h, 100, 29) == 29);
}

static void test_dist_compute(void **state)
{
    (void)state;
    double v[5] = {5, 1, 4, 2, 3};
    struct br_loadgen_dist d;
    br_loadgen_dist_compute(v, 5, &d);
    assert_int_equal(d.n, 5);
    assert_true(d.mean == 3 && d.p50 == 3 && d.p90 == 5 && d.p99 == 5 && d.min == 1 && d.max == 5);
    br_loadgen_dist_compute(v, 0, &d);
    assert_true(d.n == 0 && d.mean == 0 && d.p50 == 0);
}

/* Aggregates of hand-made records: TPOT, ITL pooling, throughput, errors by code. */
static void test_aggregate_records(void **state)
{
    (void)state;
    struct br_loadgen_result *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->records = calloc(3, sizeof *r->records);
    r->n_records = 3;
    double itl0[3] = {10, 20, 30};
    r->records[0] =
        (struct br_loadgen_record){0, BR_LOADGEN_OK, 0, 1, 0, 0, 40, 100, 20, 7, 4, NULL};
    r->records[0].itl_ms = malloc(sizeof itl0);
    memcpy(r->records[0].itl_ms, itl0, sizeof itl0);
    r->records[1] =
        (struct br_loadgen_record){1, BR_LOADGEN_OK, 0, 1, 0, 0, 60, 60, -1, 5, 1, NULL};
    r->records[2] =
        (struct br_loadgen_record){2, BR_LOADGEN_BUSY, BR_E_BUSY, -1, 0, 0, -1, 3, -1, 9, 0, NULL};
    r->duration_s = 2.0;
    assert_int_equal(br_loadgen_aggregate(r), BR_OK);
    assert_int_equal(r->completed, 2);
    assert_int_equal(r->failed, 1);
    assert_int_equal(r->errors[BR_LOADGEN_BUSY], 1);
    assert_int_equal(r->in_tokens, 12);
    assert_int_equal(r->out_tokens, 5);
    assert_true(r->req_per_s == 1.0 && r->out_tok_per_s == 2.5 && r->in_tok_per_s == 6.0);
    assert_true(r->ttft.n == 2 && r->ttft.mean == 50 && r->ttft.p50 == 40 && r->ttft.p90 == 60);
    assert_true(r->tpot.n == 1 && r->tpot.mean == 20);
    assert_true(r->itl.n == 3 && r->itl.mean == 20 && r->itl.p50 == 20 && r->itl.p99 == 30);
    assert_true(r->e2e.n == 2 && r->e2e.mean == 80);
    br_loadgen_result_free(&r);
    assert_null(r);
}

static void test_poisson_interarrival(void **state)
{
    (void)state;
    const double rate = 8.0;
    double sum = 0.0, sum2 = 0.0;
    for (uint64_t i = 0; i < 20000; i++) {
        double g = br_loadgen_interarrival(42, i, rate);
        assert_true(g > 0.0 && isfinite(g));
        assert_true(g == br_loadgen_interarrival(42, i, rate)); /* a pure function */
        sum += g;
        sum2 += g * g;
    }
    double mean = sum / 20000, var = sum2 / 20000 - mean * mean;
    assert_near(mean, 1.0 / rate, 0.05);
    /* exponential: the standard deviation equals the mean */
    assert_near(sqrt(var), 1.0 / rate, 0.10);
    assert_true(br_loadgen_interarrival(42, 0, rate) != br_loadgen_interarrival(43, 0, rate));
}

static void test_random_workload(void **state)
{
    (void)state;
    struct br_loadgen_workload a = {0}, b = {0};
    struct br_err err = {{0}};
    assert_int_equal(br_loadgen_workload_random(200, 20, 10, 0.5, 50, 7, &a, &err), BR_OK);
    assert_int_equal(br_loadgen_workload_random(200, 20, 10, 0.5, 50, 7, &b, &err), BR_OK);
    uint32_t lo = 1000, hi = 0;
    for (size_t i = 0; i < a.n; i++) {
        assert_true(a.items[i].n_tokens >= 10 && a.items[i].n_tokens <= 30);
        assert_true(a.items[i].max_tokens >= 5 && a.items[i].max_tokens <= 15);
        lo = a.items[i].n_tokens < lo ? a.items[i].n_tokens : lo;
        hi = a.items[i].n_tokens > hi ? a.items[i].n_tokens : hi;
        assert_int_equal(a.items[i].n_tokens, b.items[i].n_tokens);
        for (uint32_t t = 0; t < a.items[i].n_tokens; t++) {
            assert_true(a.items[i].tokens[t] >= 3 && a.items[i].tokens[t] < 50);
            assert_int_equal(a.items[i].tokens[t], b.items[i].tokens[t]);
        }
    }
    assert_int_equal(lo, 10); /* 200 draws reach both ends of [10, 30] */
    assert_int_equal(hi, 30);
    br_loadgen_workload_free(&a);
    br_loadgen_workload_free(&b);
    assert_int_equal(br_loadgen_workload_random(4, 20, 10, 1.5, 50, 7, &a, &err), BR_E_INVALID);
    assert_int_equal(br_loadgen_workload_random(4, 20, 10, 0.0, 3, 7, &a, &err), BR_E_INVALID);
    /* no spread: exact lengths */
    assert_int_equal(br_loadgen_workload_random(4, 16, 8, 0.0, 1030, 1, &a, &err), BR_OK);
    for (size_t i = 0; i < a.n; i++)
        assert_true(a.items[i].n_tokens == 16 && a.items[i].max_tokens == 8);
    br_loadgen_workload_free(&a);
}

/* ---- JSON ----------------------------------------------------------------------------- */

static void test_json_reader(void **state)
{
    (void)state;
    struct br_loadgen_json *j = NULL;
    struct br_err err = {{0}};
    const char *doc =
        " {\"a\": [1, -2.5e1, true, null], \"s\": \"x\\u00e9\\ud83d\\ude00\\n\", \"o\": {}} ";
    assert_int_equal(br_loadgen_json_parse(doc, strlen(doc), &j, &err), BR_OK);
    const struct br_loadgen_json *a = br_loadgen_json_get(j, "a");
    assert_non_null(a);
    assert_int_equal(a->n, 4);
    assert_true(a->items[0].num == 1 && a->items[0].is_int);
    assert_true(a->items[1].num == -25 && !a->items[1].is_int);
    assert_true(a->items[2].type == BR_LOADGEN_JSON_BOOL && a->items[2].b);
    assert_true(a->items[3].type == BR_LOADGEN_JSON_NULL);
    const struct br_loadgen_json *s = br_loadgen_json_get(j, "s");
    assert_string_equal(s->str, "x\xc3\xa9\xf0\x9f\x98\x80\n");
    assert_null(br_loadgen_json_get(j, "missing"));
    br_loadgen_json_free(&j);
    assert_null(j);
    const char *bad[] = {"",      "{",        "[1,]", "{\"a\" 1}", "01", "\"\\ud800\"",
                         "[1] x", "\"a\nb\"", "tru",  "{1: 2}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(br_loadgen_json_parse(bad[i], strlen(bad[i]), &j, &err), BR_E_FORMAT);
        assert_null(j);
    }
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_int_equal(br_loadgen_json_parse(deep, 200, &j, &err), BR_E_FORMAT);
}

static void test_dataset_load(void **state)
{
    (void)state;
    char *path = br_test_tmp_path("loadgen_ds");
    const char *good =
        "{\"prompt\": \"Hello\", \"max_tokens\": 5}\n\n{\"tokens\": [3, 4, 5], \"x\": 1}\r\n";
    assert_int_equal(br_test_write_file(path, good, strlen(good)), 0);
    struct br_loadgen_workload wl = {0};
    struct br_err err = {{0}};
    assert_int_equal(br_loadgen_workload_load(path, 9, &wl, &err), BR_OK);
    assert_int_equal(wl.n, 2);
    assert_string_equal(wl.items[0].text, "Hello");
    assert_int_equal(wl.items[0].max_tokens, 5);
    assert_null(wl.items[0].tokens);
    assert_int_equal(wl.items[1].n_tokens, 3);
    assert_int_equal(wl.items[1].tokens[2], 5);
    assert_int_equal(wl.items[1].max_tokens, 9);
    br_loadgen_workload_free(&wl);
    const char *bad = "{\"prompt\": \"a\"}\n{\"prompt\": \"a\", \"tokens\": [1]}\n";
    assert_int_equal(br_test_write_file(path, bad, strlen(bad)), 0);
    assert_int_equal(br_loadgen_workload_load(path, 9, &wl, &err), BR_E_FORMAT);
    assert_non_null(strstr(err.msg, "line 2"));
    assert_int_equal(wl.n, 0);
    remove(path);
    free(path);
}

/* ---- runs against the fake server ---------------------------------------------------- */

static void check_json(const struct br_loadgen_result *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    const struct br_loadgen_result *const one[1] = {r};
    assert_int_equal(br_loadgen_write_json(f, one, 1, false, true), BR_OK);
    fclose(f);
    struct br_loadgen_json *j = NULL;
    struct br_err err = {{0}};
    if (br_loadgen_json_parse(buf, len, &j, &err)) fail_msg("%s\n%s", err.msg, buf);
    const char *keys[] = {"config",           "duration_s",
                          "completed",        "failed",
                          "errors",           "input_tokens",
                          "output_tokens",    "request_throughput",
                          "input_throughput", "output_throughput",
                          "ttft_ms",          "tpot_ms",
                          "itl_ms",           "e2e_ms",
                          "requests"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (!br_loadgen_json_get(j, keys[i])) fail_msg("JSON lacks %s", keys[i]);
    assert_true(br_loadgen_json_get(j, "completed")->num == r->completed);
    assert_true(br_loadgen_json_get(br_loadgen_json_get(j, "errors"), "busy")->num ==
                r->errors[BR_LOADGEN_BUSY]);
    assert_true(br_loadgen_json_get(br_loadgen_json_get(j, "tpot_ms"), "p90")->num > 0);
    assert_int_equal(br_loadgen_json_get(j, "requests")->n, r->n_records);
    br_loadgen_json_free(&j);
    free(buf);

    /* as an array (sweeps), and the SVG plot has its parts */
    f = open_memstream(&buf, &len);
    const struct br_loadgen_result *const two[2] = {r, r};
    assert_int_equal(br_loadgen_write_json(f, two, 2, true, false), BR_OK);
    fclose(f);
    assert_int_equal(br_loadgen_json_parse(buf, len, &j, &err), BR_OK);
    assert_int_equal(j->type, BR_LOADGEN_JSON_ARRAY);
    assert_int_equal(j->n, 2);
    assert_null(br_loadgen_json_get(&j->items[0], "requests"));
    br_loadgen_json_free(&j);
    free(buf);
    f = open_memstream(&buf, &len);
    assert_int_equal(br_loadgen_plot_svg(f, two, 2, BR_LOADGEN_PLOT_TPOT), BR_OK);
    fclose(f);
    assert_non_null(strstr(buf, "<svg"));
    assert_non_null(strstr(buf, "<polyline"));
    assert_non_null(strstr(buf, "</svg>\n"));
    free(buf);
}

static void test_closed_loop_fake_server(void **state)
{
    (void)state;
    struct fake *f = fake_start();
    bool busy[14] = {false};
    busy[2] = busy[5] = busy[11] = true; /* items 0, 1 warm up; 2..13 are records 0..11 */
    struct br_loadgen_workload wl = {0};
    make_workload(&wl, 14, 6, busy);
    struct br_loadgen_config cfg;
    br_loadgen_config_default(&cfg);
    cfg.server = f->endpoint;
    cfg.concurrency = 4;
    cfg.requests = 12;
    cfg.warmup = 2;
    cfg.timeout_ms = 10000;
    struct br_loadgen_result *r = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_loadgen_run(&cfg, &wl, &r, &err), BR_OK);
    assert_int_equal(r->n_records, 12);
    assert_int_equal(r->completed, 9);
    assert_int_equal(r->failed, 3);
    assert_int_equal(r->errors[BR_LOADGEN_BUSY], 3);
    assert_int_equal(r->in_tokens, 9 * 4);
    assert_int_equal(r->out_tokens, 9 * 6);
    assert_int_equal(r->ttft.n, 9);
    assert_int_equal(r->tpot.n, 9);
    assert_int_equal(r->itl.n, 9 * 5);
    assert_non_null(strstr(r->first_error, "busy"));
    for (size_t i = 0; i < r->n_records; i++) {
        const struct br_loadgen_record *q = &r->records[i];
        assert_int_equal(q->index, (int32_t)i);
        bool b = busy[i + 2];
        assert_int_equal(q->code, b ? BR_LOADGEN_BUSY : BR_LOADGEN_OK);
        assert_int_equal(q->n_out, b ? 0 : 6);
        if (!b) assert_int_equal(q->finish, 1 /* length */);
    }
    assert_near(r->ttft.mean, FIRST_MS, 0.4);
    assert_near(r->ttft.p50, FIRST_MS, 0.4);
    assert_near(r->tpot.mean, GAP_MS, 0.4);
    assert_near(r->tpot.p50, GAP_MS, 0.4);
    assert_near(r->itl.p50, GAP_MS, 0.4);
    assert_near(r->itl.mean, GAP_MS, 0.4);
    assert_near(r->e2e.p50, FIRST_MS + 5 * GAP_MS, 0.4);
    /* 12 requests on 4 slots, ~200 ms each: three rounds */
    assert_true(r->duration_s > 0.5 && r->duration_s < 3.0);
    assert_near(r->out_tok_per_s, (double)r->out_tokens / r->duration_s, 1e-9);
    check_json(r);
    br_loadgen_result_free(&r);
    br_loadgen_workload_free(&wl);
    fake_stop(f);
}

static void test_open_loop_fake_server(void **state)
{
    (void)state;
    struct fake *f = fake_start();
    struct br_loadgen_workload wl = {0};
    make_workload(&wl, 10, 3, NULL);
    struct br_loadgen_config cfg;
    br_loadgen_config_default(&cfg);
    cfg.server = f->endpoint;
    cfg.rate = 25.0;
    cfg.max_concurrency = 8;
    cfg.requests = 10;
    cfg.seed = 5;
    cfg.timeout_ms = 10000;
    struct br_loadgen_result *r = NULL;
    struct br_err err = {{0}};
    assert_int_equal(br_loadgen_run(&cfg, &wl, &r, &err), BR_OK);
    assert_int_equal(r->completed, 10);
    assert_int_equal(r->slots, 8);
    assert_int_equal(r->out_tokens, 30);
    double t = 0.0;
    for (int i = 0; i < 10; i++) {
        t += br_loadgen_interarrival(5, (uint64_t)i, 25.0);
        assert_true(fabs(r->records[i].sched_ms - t * 1e3) < 1e-6);
        assert_true(r->records[i].start_ms >= r->records[i].sched_ms - 1e-6);
    }
    assert_near(r->ttft.p50, FIRST_MS, 0.4);
    assert_near(r->tpot.p50, GAP_MS, 0.4);
    br_loadgen_result_free(&r);
    /* a server that is not there: every request fails (the client cannot send within its
     * timeout: unavailable), counted, not fatal */
    cfg.server = "tcp://127.0.0.1:1";
    cfg.rate = 0;
    cfg.concurrency = 2;
    cfg.requests = 2;
    cfg.timeout_ms = 300;
    assert_int_equal(br_loadgen_run(&cfg, &wl, &r, &err), BR_OK);
    assert_int_equal(r->failed, 2);
    assert_int_equal(r->errors[BR_LOADGEN_UNAVAILABLE], 2);
    assert_non_null(strstr(r->first_error, "unavailable"));
    assert_int_equal(r->ttft.n, 0);
    br_loadgen_result_free(&r);
    br_loadgen_workload_free(&wl);
    fake_stop(f);
}

/* A request the server never answers fails with timeout after the client's timeout; the
 * others on the same run are unaffected. */
static void test_timeout_counted(void **state)
{
    (void)state;
    struct fake *f = fake_start();
    bool silent[3] = {false, true, false};
    struct br_loadgen_workload wl = {0};
    make_workload_marked(&wl, 3, 2, silent, SILENT_ID);
    struct br_loadgen_config cfg;
    br_loadgen_config_default(&cfg);
    cfg.server = f->endpoint;
    cfg.concurrency = 3;
    cfg.requests = 3;
    cfg.timeout_ms = 1000; /* long enough for the answered ones on a loaded machine */
    struct br_loadgen_result *r = NULL;
    struct br_err err = {{0}};
    double t0 = br_now();
    assert_int_equal(br_loadgen_run(&cfg, &wl, &r, &err), BR_OK);
    assert_true(br_now() - t0 < 8.0);
    assert_int_equal(r->completed, 2);
    assert_int_equal(r->errors[BR_LOADGEN_TIMEOUT], 1);
    assert_int_equal(r->records[1].code, BR_LOADGEN_TIMEOUT);
    assert_true(r->records[1].e2e_ms >= 900.0);
    assert_int_equal(r->out_tokens, 4);
    br_loadgen_result_free(&r);
    br_loadgen_workload_free(&wl);
    fake_stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentile_nearest_rank),
        cmocka_unit_test(test_dist_compute),
        cmocka_unit_test(test_aggregate_records),
        cmocka_unit_test(test_poisson_interarrival),
        cmocka_unit_test(test_random_workload),
        cmocka_unit_test(test_json_reader),
        cmocka_unit_test(test_dataset_load),
        cmocka_unit_test(test_closed_loop_fake_server),
        cmocka_unit_test(test_open_loop_fake_server),
        cmocka_unit_test(test_timeout_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
