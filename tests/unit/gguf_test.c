/*
 * Tests of sharding/gguf.c: the writer and reader round-trip every metadata value type and
 * every tensor type with a known size byte-exactly; version 2 headers and the real
 * bitnet.cpp files read; and a corpus of malformed files (every truncation of a valid file,
 * plus one file per broken field) is rejected with the right status and a message naming
 * the field and its byte offset.
 *
 * Every buffer handed to br_gguf_open_memory is an exactly-sized heap copy, so under ASan
 * a read one byte past the end is a test failure, not silent luck.
 *
 * With BR_CORPUS_DIR set the program only writes the malformed corpus there (for
 * tests/e2e/gguf_corpus.sh, which feeds each file to `bitrack info`); with BR_SEED_DIR set
 * it writes small valid files (the fuzzer's seed corpus).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitrack/status.h"
#include "sharding/gguf.h"
#include "sharding/types.h"
#include "test_util.h"

/* ---- helpers ---- */

/* A growing byte buffer for hand-made headers (the writer cannot produce broken files). */
struct rb {
    uint8_t *p;
    size_t len, cap;
};

static void rb_put(struct rb *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        assert_non_null(np);
        b->p = np;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void rb_u8(struct rb *b, uint8_t v)
{
    rb_put(b, &v, 1);
}

static void rb_u32(struct rb *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    rb_put(b, x, 4);
}

static void rb_u64(struct rb *b, uint64_t v)
{
    rb_u32(b, (uint32_t)v);
    rb_u32(b, (uint32_t)(v >> 32));
}

static void rb_strn(struct rb *b, const char *s, size_t n)
{
    rb_u64(b, n);
    rb_put(b, s, n);
}

static void rb_str(struct rb *b, const char *s)
{
    rb_strn(b, s, strlen(s));
}

static void rb_pad(struct rb *b, size_t align)
{
    while (b->len % align) rb_u8(b, 0);
}

/* n bytes of a pattern that differs per seed, so misplaced data is noticed */
static void rb_fill(struct rb *b, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) rb_u8(b, (uint8_t)(seed + i * 7 + (i >> 8)));
}

/* A reader over an exactly-sized heap copy of the bytes; the copy lives as long as it. */
struct opened {
    struct br_gguf *g;
    uint8_t *copy;
    int rc;
    struct br_err err;
};

static void open_exact(struct opened *o, const void *bytes, size_t len)
{
    memset(o, 0, sizeof *o);
    o->copy = malloc(len ? len : 1);
    assert_non_null(o->copy);
    if (len) memcpy(o->copy, bytes, len);
    o->rc = br_gguf_open_memory(o->copy, len, &o->g, &o->err);
    if (o->rc == BR_OK)
        assert_non_null(o->g);
    else
        assert_null(o->g);
}

static void close_exact(struct opened *o)
{
    br_gguf_close(&o->g);
    assert_null(o->g);
    free(o->copy);
    o->copy = NULL;
}

/* True when the decimal number n appears in msg as a whole number. */
static bool has_number(const char *msg, uint64_t n)
{
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)n);
    size_t k = strlen(num);
    for (const char *p = strstr(msg, num); p; p = strstr(p + 1, num)) {
        bool left = p == msg || p[-1] < '0' || p[-1] > '9';
        bool right = p[k] < '0' || p[k] > '9';
        if (left && right) return true;
    }
    return false;
}

static void expect_msg(const char *msg, const char *what)
{
    if (!strstr(msg, what)) fail_msg("message '%s' does not mention '%s'", msg, what);
}

/* Runs the writer to a scratch file and returns the file's bytes (caller frees). Tensor
 * i's data is datas[i]; it is streamed in 7-byte pieces so writes straddle tensors. */
static uint8_t *write_to_memory(struct br_gguf_writer *w, size_t n, const uint8_t *const *datas,
                                const size_t *sizes, size_t *len)
{
    struct br_err err = {{0}};
    char *path = br_test_tmp_path("gguf");
    assert_non_null(path);
    if (br_gguf_writer_begin(w, path, &err)) fail_msg("begin: %s", err.msg);
    for (size_t i = 0; i < n; i++)
        for (size_t off = 0; off < sizes[i]; off += 7) {
            size_t k = sizes[i] - off < 7 ? sizes[i] - off : 7;
            if (br_gguf_writer_write(w, datas[i] + off, k, &err)) fail_msg("write: %s", err.msg);
        }
    if (br_gguf_writer_finish(w, &err)) fail_msg("finish: %s", err.msg);
    uint8_t *bytes = br_test_read_file(path, len);
    assert_non_null(bytes);
    unlink(path);
    free(path);
    return bytes;
}

static uint64_t round_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

/* ---- metadata round trips ---- */

/* 12 bytes: UTF-8 and a control byte, which must come back untouched */
#define ODD_STR "h\xc3\xa9llo wor\001d"

static void test_scalar_values(void **state)
{
    (void)state;
    struct br_gguf_writer *w;
    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    /* extreme values of every fixed-size type, written as raw little-endian bytes */
    uint8_t u8 = 255;
    int8_t i8 = -128;
    uint16_t u16 = 65535;
    int16_t i16 = -32768;
    uint32_t u32 = 0xfffffffeu;
    int32_t i32 = INT32_MIN;
    float f32 = -1.5e-3f;
    uint8_t bt = 1, bf = 0;
    uint64_t u64 = UINT64_MAX;
    int64_t i64 = INT64_MIN;
    double f64 = 3.141592653589793;
    assert_int_equal(br_gguf_writer_set_raw(w, "t.u8", BR_GGUF_U8, &u8), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.i8", BR_GGUF_I8, &i8), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.u16", BR_GGUF_U16, &u16), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.i16", BR_GGUF_I16, &i16), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.u32", BR_GGUF_U32, &u32), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.i32", BR_GGUF_I32, &i32), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.f32", BR_GGUF_F32, &f32), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.true", BR_GGUF_BOOL, &bt), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.false", BR_GGUF_BOOL, &bf), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.u64", BR_GGUF_U64, &u64), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.i64", BR_GGUF_I64, &i64), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.f64", BR_GGUF_F64, &f64), BR_OK);
    /* the convenience setters */
    assert_int_equal(br_gguf_writer_set_u32(w, "c.u32", 4000000000u), BR_OK);
    assert_int_equal(br_gguf_writer_set_i32(w, "c.i32", -7), BR_OK);
    assert_int_equal(br_gguf_writer_set_u64(w, "c.u64", 1ull << 40), BR_OK);
    assert_int_equal(br_gguf_writer_set_f32(w, "c.f32", 1e-5f), BR_OK);
    assert_int_equal(br_gguf_writer_set_bool(w, "c.bool", true), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "c.str", ODD_STR), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "c.empty", ""), BR_OK);
    size_t len;
    uint8_t *bytes = write_to_memory(w, 0, NULL, NULL, &len);
    br_gguf_writer_destroy(&w);
    assert_null(w);

    struct opened o;
    open_exact(&o, bytes, len);
    if (o.rc) fail_msg("%s", o.err.msg);
    const struct br_gguf *g = o.g;
    assert_int_equal(br_gguf_version(g), 3);
    assert_int_equal(br_gguf_n_kv(g), 19);
    assert_int_equal(br_gguf_n_tensors(g), 0);
    assert_int_equal(br_gguf_alignment(g), 32);
    /* keys come back in file order */
    assert_string_equal(br_gguf_kv_at(g, 0)->key, "t.u8");
    assert_string_equal(br_gguf_kv_at(g, 18)->key, "c.empty");
    assert_null(br_gguf_kv_at(g, 19));

    const struct br_gguf_kv *kv;
    assert_non_null(kv = br_gguf_find_kv(g, "t.u8"));
    assert_int_equal(kv->type, BR_GGUF_U8);
    assert_int_equal(kv->v.u, 255);
    assert_non_null(kv = br_gguf_find_kv(g, "t.i8"));
    assert_int_equal(kv->type, BR_GGUF_I8);
    assert_true(kv->v.i == -128);
    assert_non_null(kv = br_gguf_find_kv(g, "t.u16"));
    assert_int_equal(kv->type, BR_GGUF_U16);
    assert_int_equal(kv->v.u, 65535);
    assert_non_null(kv = br_gguf_find_kv(g, "t.i16"));
    assert_int_equal(kv->type, BR_GGUF_I16);
    assert_true(kv->v.i == -32768);
    assert_non_null(kv = br_gguf_find_kv(g, "t.u32"));
    assert_int_equal(kv->type, BR_GGUF_U32);
    assert_true(kv->v.u == 0xfffffffeu);
    assert_non_null(kv = br_gguf_find_kv(g, "t.i32"));
    assert_int_equal(kv->type, BR_GGUF_I32);
    assert_true(kv->v.i == INT32_MIN);
    assert_non_null(kv = br_gguf_find_kv(g, "t.f32"));
    assert_int_equal(kv->type, BR_GGUF_F32);
    assert_true(kv->v.f == (double)-1.5e-3f);
    assert_non_null(kv = br_gguf_find_kv(g, "t.true"));
    assert_int_equal(kv->type, BR_GGUF_BOOL);
    assert_true(kv->v.b);
    assert_non_null(kv = br_gguf_find_kv(g, "t.false"));
    assert_false(kv->v.b);
    assert_non_null(kv = br_gguf_find_kv(g, "t.u64"));
    assert_int_equal(kv->type, BR_GGUF_U64);
    assert_true(kv->v.u == UINT64_MAX);
    assert_non_null(kv = br_gguf_find_kv(g, "t.i64"));
    assert_int_equal(kv->type, BR_GGUF_I64);
    assert_true(kv->v.i == INT64_MIN);
    assert_non_null(kv = br_gguf_find_kv(g, "t.f64"));
    assert_int_equal(kv->type, BR_GGUF_F64);
    assert_true(kv->v.f == 3.141592653589793);
    assert_non_null(kv = br_gguf_find_kv(g, "c.str"));
    assert_int_equal(kv->type, BR_GGUF_STRING);
    assert_int_equal(kv->v.str.len, 12);
    assert_memory_equal(kv->v.str.ptr, ODD_STR, 12);
    assert_null(br_gguf_find_kv(g, "t.u")); /* a prefix is not a match */
    assert_null(br_gguf_find_kv(g, "t.u8x"));

    /* typed getters, each with its exact value */
    struct br_err err = {{0}};
    uint64_t u;
    int64_t i;
    uint32_t v32;
    float f;
    bool b;
    char s[64];
    assert_int_equal(br_gguf_get_u64(g, "t.u64", &u, &err), BR_OK);
    assert_true(u == UINT64_MAX);
    assert_int_equal(br_gguf_get_u64(g, "t.u8", &u, &err), BR_OK);
    assert_int_equal(u, 255);
    assert_int_equal(br_gguf_get_u64(g, "t.true", &u, &err), BR_OK);
    assert_int_equal(u, 1);
    assert_int_equal(br_gguf_get_i64(g, "t.i64", &i, &err), BR_OK);
    assert_true(i == INT64_MIN);
    assert_int_equal(br_gguf_get_i64(g, "t.i8", &i, &err), BR_OK);
    assert_true(i == -128);
    assert_int_equal(br_gguf_get_i64(g, "t.u32", &i, &err), BR_OK);
    assert_true(i == 0xfffffffeu);
    assert_int_equal(br_gguf_get_u32(g, "t.u32", &v32, &err), BR_OK);
    assert_true(v32 == 0xfffffffeu);
    assert_int_equal(br_gguf_get_u32(g, "c.u32", &v32, &err), BR_OK);
    assert_true(v32 == 4000000000u);
    assert_int_equal(br_gguf_get_u32(g, "t.u16", &v32, &err), BR_OK);
    assert_int_equal(v32, 65535);
    assert_int_equal(br_gguf_get_i64(g, "c.i32", &i, &err), BR_OK);
    assert_true(i == -7);
    assert_int_equal(br_gguf_get_u64(g, "c.u64", &u, &err), BR_OK);
    assert_true(u == 1ull << 40);
    assert_int_equal(br_gguf_get_f32(g, "c.f32", &f, &err), BR_OK);
    assert_true(f == 1e-5f);
    assert_int_equal(br_gguf_get_f32(g, "t.f64", &f, &err), BR_OK);
    assert_true(f == (float)3.141592653589793);
    assert_int_equal(br_gguf_get_f32(g, "t.i16", &f, &err), BR_OK);
    assert_true(f == -32768.0f);
    assert_int_equal(br_gguf_get_f32(g, "c.u32", &f, &err), BR_OK);
    assert_true(f == 4000000000.0f);
    assert_int_equal(br_gguf_get_bool(g, "c.bool", &b, &err), BR_OK);
    assert_true(b);
    assert_int_equal(br_gguf_get_bool(g, "t.false", &b, &err), BR_OK);
    assert_false(b);
    assert_int_equal(br_gguf_get_bool(g, "t.u8", &b, &err), BR_OK); /* non-zero integer */
    assert_true(b);
    assert_int_equal(br_gguf_get_str(g, "c.str", s, sizeof s, &err), BR_OK);
    assert_string_equal(s, ODD_STR);
    s[0] = 'x';
    assert_int_equal(br_gguf_get_str(g, "c.empty", s, sizeof s, &err), BR_OK);
    assert_string_equal(s, "");
    /* exactly fitting (12 bytes + NUL) and one short */
    assert_int_equal(br_gguf_get_str(g, "c.str", s, 13, &err), BR_OK);
    assert_int_equal(br_gguf_get_str(g, "c.str", s, 12, &err), BR_E_TOO_LONG);
    expect_msg(err.msg, "c.str");
    close_exact(&o);
    free(bytes);
}

static void test_getter_errors(void **state)
{
    (void)state;
    struct br_gguf_writer *w;
    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    uint64_t big = (uint64_t)UINT32_MAX + 1, huge = (uint64_t)INT64_MAX + 1;
    int64_t neg64 = -1;
    int8_t neg8 = -3;
    assert_int_equal(br_gguf_writer_set_u64(w, "k.big", big), BR_OK);
    assert_int_equal(br_gguf_writer_set_u64(w, "k.huge", huge), BR_OK);
    assert_int_equal(br_gguf_writer_set_u32(w, "k.max32", UINT32_MAX), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "k.neg64", BR_GGUF_I64, &neg64), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "k.neg8", BR_GGUF_I8, &neg8), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "k.str", "12"), BR_OK);
    assert_int_equal(br_gguf_writer_set_f32(w, "k.f32", 2.0f), BR_OK);
    assert_int_equal(br_gguf_writer_set_bool(w, "k.bool", true), BR_OK);
    uint32_t arr[2] = {1, 2};
    assert_int_equal(br_gguf_writer_set_arr(w, "k.arr", BR_GGUF_U32, arr, 2), BR_OK);
    size_t len;
    uint8_t *bytes = write_to_memory(w, 0, NULL, NULL, &len);
    br_gguf_writer_destroy(&w);
    struct opened o;
    open_exact(&o, bytes, len);
    assert_int_equal(o.rc, BR_OK);
    const struct br_gguf *g = o.g;

    struct br_err err;
    uint64_t u = 77;
    int64_t i = 77;
    uint32_t v32 = 77;
    float f = 77;
    bool b = false;
    char s[16];
    /* each failing getter leaves its output alone and names the key and byte offset */
#define EXPECT_FAIL(call, status, key, what)                                                       \
    do {                                                                                           \
        memset(&err, 0, sizeof err);                                                               \
        assert_int_equal(call, status);                                                            \
        expect_msg(err.msg, key);                                                                  \
        expect_msg(err.msg, what);                                                                 \
        if (!has_number(err.msg, br_gguf_find_kv(g, key)->file_offset))                            \
            fail_msg("'%s' lacks the byte offset", err.msg);                                       \
    } while (0)
    EXPECT_FAIL(br_gguf_get_u32(g, "k.big", &v32, &err), BR_E_FORMAT, "k.big", "32 bits");
    assert_int_equal(v32, 77);
    assert_int_equal(br_gguf_get_u32(g, "k.max32", &v32, &err), BR_OK);
    assert_true(v32 == UINT32_MAX);
    v32 = 77;
    EXPECT_FAIL(br_gguf_get_i64(g, "k.huge", &i, &err), BR_E_FORMAT, "k.huge", "signed");
    EXPECT_FAIL(br_gguf_get_u64(g, "k.neg64", &u, &err), BR_E_FORMAT, "k.neg64", "negative");
    EXPECT_FAIL(br_gguf_get_u32(g, "k.neg8", &v32, &err), BR_E_FORMAT, "k.neg8", "negative");
    EXPECT_FAIL(br_gguf_get_u64(g, "k.str", &u, &err), BR_E_FORMAT, "k.str", "string");
    EXPECT_FAIL(br_gguf_get_i64(g, "k.f32", &i, &err), BR_E_FORMAT, "k.f32", "f32");
    EXPECT_FAIL(br_gguf_get_u32(g, "k.arr", &v32, &err), BR_E_FORMAT, "k.arr", "array");
    EXPECT_FAIL(br_gguf_get_f32(g, "k.str", &f, &err), BR_E_FORMAT, "k.str", "number");
    EXPECT_FAIL(br_gguf_get_f32(g, "k.bool", &f, &err), BR_E_FORMAT, "k.bool", "bool");
    EXPECT_FAIL(br_gguf_get_bool(g, "k.str", &b, &err), BR_E_FORMAT, "k.str", "string");
    EXPECT_FAIL(br_gguf_get_bool(g, "k.f32", &b, &err), BR_E_FORMAT, "k.f32", "f32");
    EXPECT_FAIL(br_gguf_get_str(g, "k.big", s, sizeof s, &err), BR_E_FORMAT, "k.big", "u64");
#undef EXPECT_FAIL
    assert_true(u == 77 && i == 77 && v32 == 77 && f == 77 && !b);
    /* the signed ones that fit convert */
    assert_int_equal(br_gguf_get_i64(g, "k.neg8", &i, &err), BR_OK);
    assert_true(i == -3);
    assert_int_equal(br_gguf_get_f32(g, "k.neg64", &f, &err), BR_OK);
    assert_true(f == -1.0f);
    assert_int_equal(br_gguf_get_bool(g, "k.neg8", &b, &err), BR_OK);
    assert_true(b);

    /* absent: BR_E_NOTFOUND and the message is left untouched */
    strcpy(err.msg, "untouched");
    assert_int_equal(br_gguf_get_u64(g, "k.none", &u, &err), BR_E_NOTFOUND);
    assert_int_equal(br_gguf_get_i64(g, "k.none", &i, &err), BR_E_NOTFOUND);
    assert_int_equal(br_gguf_get_u32(g, "k.none", &v32, &err), BR_E_NOTFOUND);
    assert_int_equal(br_gguf_get_f32(g, "k.none", &f, &err), BR_E_NOTFOUND);
    assert_int_equal(br_gguf_get_bool(g, "k.none", &b, &err), BR_E_NOTFOUND);
    assert_int_equal(br_gguf_get_str(g, "k.none", s, sizeof s, &err), BR_E_NOTFOUND);
    assert_string_equal(err.msg, "untouched");
    /* NULL err is allowed */
    assert_int_equal(br_gguf_get_u32(g, "k.big", &v32, NULL), BR_E_FORMAT);
    close_exact(&o);
    free(bytes);
}

/* One array per element type, with values that would change if decoded with the wrong
 * width or signedness. */
static void test_arrays(void **state)
{
    (void)state;
    struct br_gguf_writer *w;
    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    const uint8_t a_u8[] = {0, 1, 200, 255};
    const int8_t a_i8[] = {-128, -1, 0, 127};
    const uint16_t a_u16[] = {0, 256, 65535};
    const int16_t a_i16[] = {-32768, -2, 32767};
    const uint32_t a_u32[] = {0, 70000, 0xffffffffu};
    const int32_t a_i32[] = {INT32_MIN, -5, INT32_MAX};
    const float a_f32[] = {-0.5f, 1e30f, 3.25f};
    const uint8_t a_bool[] = {1, 0, 1};
    const uint64_t a_u64[] = {0, 1ull << 50, (uint64_t)INT64_MAX};
    const int64_t a_i64[] = {INT64_MIN, -9, INT64_MAX};
    const double a_f64[] = {-2.5, 1e300, 0.1};
    /* floats that do not fit int64 (NaN, huge) must read as defined values */
    const float a_odd[] = {NAN, 1e30f, -1e30f, -2.75f};
    const char *strs[] = {"alpha", "", "\xe2\x82\xac", "with\0nul"};
    const size_t lens[] = {5, 0, 3, 8};
    assert_int_equal(br_gguf_writer_set_arr(w, "a.u8", BR_GGUF_U8, a_u8, 4), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.i8", BR_GGUF_I8, a_i8, 4), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.u16", BR_GGUF_U16, a_u16, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.i16", BR_GGUF_I16, a_i16, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.u32", BR_GGUF_U32, a_u32, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.i32", BR_GGUF_I32, a_i32, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.f32", BR_GGUF_F32, a_f32, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.bool", BR_GGUF_BOOL, a_bool, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.u64", BR_GGUF_U64, a_u64, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.i64", BR_GGUF_I64, a_i64, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.f64", BR_GGUF_F64, a_f64, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "a.odd", BR_GGUF_F32, a_odd, 4), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr_str(w, "a.str", strs, lens, 4), BR_OK);
    const char *plain[] = {"x", "yz"};
    assert_int_equal(br_gguf_writer_set_arr_str(w, "a.str2", plain, NULL, 2), BR_OK);
    /* empty arrays of every element type, data pointer NULL */
    static const enum br_gguf_vtype fixed[] = {BR_GGUF_U8,  BR_GGUF_I8,  BR_GGUF_U16, BR_GGUF_I16,
                                               BR_GGUF_U32, BR_GGUF_I32, BR_GGUF_F32, BR_GGUF_BOOL,
                                               BR_GGUF_U64, BR_GGUF_I64, BR_GGUF_F64};
    enum { N_FIXED = sizeof fixed / sizeof fixed[0] };
    for (size_t k = 0; k < N_FIXED; k++) {
        char key[32];
        snprintf(key, sizeof key, "e.%s", br_gguf_vtype_name(fixed[k]));
        assert_int_equal(br_gguf_writer_set_arr(w, key, fixed[k], NULL, 0), BR_OK);
    }
    assert_int_equal(br_gguf_writer_set_arr_str(w, "e.string", NULL, NULL, 0), BR_OK);
    size_t len;
    uint8_t *bytes = write_to_memory(w, 0, NULL, NULL, &len);
    br_gguf_writer_destroy(&w);
    struct opened o;
    open_exact(&o, bytes, len);
    if (o.rc) fail_msg("%s", o.err.msg);
    const struct br_gguf *g = o.g;
    assert_int_equal(br_gguf_n_kv(g), 14 + N_FIXED + 1);

    const struct br_gguf_kv *kv;
#define ARR(key, et, count)                                                                        \
    do {                                                                                           \
        assert_non_null(kv = br_gguf_find_kv(g, key));                                             \
        assert_int_equal(kv->type, BR_GGUF_ARRAY);                                                 \
        assert_int_equal(kv->v.arr.elem, et);                                                      \
        assert_int_equal(kv->v.arr.n, count);                                                      \
    } while (0)
    ARR("a.u8", BR_GGUF_U8, 4);
    for (uint64_t k = 0; k < 4; k++) {
        assert_true(br_gguf_arr_i64(kv, k) == a_u8[k]);
        assert_true(br_gguf_arr_f64(kv, k) == a_u8[k]);
    }
    ARR("a.i8", BR_GGUF_I8, 4);
    for (uint64_t k = 0; k < 4; k++) {
        assert_true(br_gguf_arr_i64(kv, k) == a_i8[k]);
        assert_true(br_gguf_arr_f64(kv, k) == a_i8[k]);
    }
    ARR("a.u16", BR_GGUF_U16, 3);
    for (uint64_t k = 0; k < 3; k++) assert_true(br_gguf_arr_i64(kv, k) == a_u16[k]);
    ARR("a.i16", BR_GGUF_I16, 3);
    for (uint64_t k = 0; k < 3; k++) assert_true(br_gguf_arr_i64(kv, k) == a_i16[k]);
    ARR("a.u32", BR_GGUF_U32, 3);
    for (uint64_t k = 0; k < 3; k++) {
        assert_true(br_gguf_arr_i64(kv, k) == a_u32[k]);
        assert_true(br_gguf_arr_f64(kv, k) == a_u32[k]);
    }
    ARR("a.i32", BR_GGUF_I32, 3);
    for (uint64_t k = 0; k < 3; k++) assert_true(br_gguf_arr_i64(kv, k) == a_i32[k]);
    ARR("a.f32", BR_GGUF_F32, 3);
    for (uint64_t k = 0; k < 3; k++) assert_true(br_gguf_arr_f64(kv, k) == (double)a_f32[k]);
    assert_true(br_gguf_arr_i64(kv, 2) == 3); /* truncates toward zero */
    assert_true(br_gguf_arr_i64(kv, 0) == 0);
    ARR("a.bool", BR_GGUF_BOOL, 3);
    for (uint64_t k = 0; k < 3; k++) assert_true(br_gguf_arr_i64(kv, k) == a_bool[k]);
    ARR("a.u64", BR_GGUF_U64, 3);
    for (uint64_t k = 0; k < 3; k++) assert_true(br_gguf_arr_i64(kv, k) == (int64_t)a_u64[k]);
    ARR("a.i64", BR_GGUF_I64, 3);
    for (uint64_t k = 0; k < 3; k++) assert_true(br_gguf_arr_i64(kv, k) == a_i64[k]);
    ARR("a.f64", BR_GGUF_F64, 3);
    for (uint64_t k = 0; k < 3; k++) assert_true(br_gguf_arr_f64(kv, k) == a_f64[k]);
    ARR("a.odd", BR_GGUF_F32, 4);
    assert_true(isnan(br_gguf_arr_f64(kv, 0)));
    assert_true(br_gguf_arr_i64(kv, 0) == 0);
    assert_true(br_gguf_arr_i64(kv, 1) == INT64_MAX);
    assert_true(br_gguf_arr_i64(kv, 2) == INT64_MIN);
    assert_true(br_gguf_arr_i64(kv, 3) == -2);
    ARR("a.str", BR_GGUF_STRING, 4);
    for (uint64_t k = 0; k < 4; k++) {
        const char *p;
        uint64_t n;
        br_gguf_arr_str(kv, k, &p, &n);
        assert_int_equal(n, lens[k]);
        if (n) assert_memory_equal(p, strs[k], n);
    }
    ARR("a.str2", BR_GGUF_STRING, 2);
    {
        const char *p;
        uint64_t n;
        br_gguf_arr_str(kv, 1, &p, &n);
        assert_int_equal(n, 2);
        assert_memory_equal(p, "yz", 2);
    }
    for (size_t k = 0; k < N_FIXED; k++) {
        char key[32];
        snprintf(key, sizeof key, "e.%s", br_gguf_vtype_name(fixed[k]));
        ARR(key, fixed[k], 0);
    }
    ARR("e.string", BR_GGUF_STRING, 0);
#undef ARR
    close_exact(&o);
    free(bytes);
}

/* The writer refuses what would make a file its reader rejects. */
static void test_writer_rejects(void **state)
{
    (void)state;
    struct br_gguf_writer *w;
    struct br_err err;
    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    assert_int_equal(br_gguf_writer_set_u32(w, "dup", 1), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "dup", "x"), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_set_u32(w, "", 1), BR_E_INVALID);
    uint8_t u8 = 1;
    assert_int_equal(br_gguf_writer_set_raw(w, "k", BR_GGUF_STRING, &u8), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_set_arr(w, "k", BR_GGUF_ARRAY, &u8, 1), BR_E_INVALID);
    /* general.alignment: only an integer power of two up to 2^30 */
    float fa = 2.0f; /* its bits, 0x40000000, are a power of two: must still be refused */
    int32_t na = -32;
    uint8_t b1 = 1;
    assert_int_equal(br_gguf_writer_set_u32(w, "general.alignment", 0), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_set_u32(w, "general.alignment", 3), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_set_u64(w, "general.alignment", 1ull << 40), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_set_raw(w, "general.alignment", BR_GGUF_F32, &fa),
                     BR_E_INVALID);
    assert_int_equal(br_gguf_writer_set_raw(w, "general.alignment", BR_GGUF_I32, &na),
                     BR_E_INVALID);
    assert_int_equal(br_gguf_writer_set_raw(w, "general.alignment", BR_GGUF_BOOL, &b1),
                     BR_E_INVALID);
    assert_int_equal(br_gguf_writer_set_str(w, "general.alignment", "32"), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_set_arr(w, "general.alignment", BR_GGUF_U32, &na, 1),
                     BR_E_INVALID);
    /* none of the refusals consumed the key */
    assert_int_equal(br_gguf_writer_set_u32(w, "general.alignment", 64), BR_OK);
    assert_int_equal(br_gguf_writer_set_u32(w, "general.alignment", 64), BR_E_INVALID);

    const uint64_t ne[4] = {32, 2, 1, 1};
    const uint64_t bad0[1] = {33};
    const uint64_t zero[2] = {32, 0};
    const uint64_t ovf[2] = {1ull << 32, 1ull << 32};
    char n64[65];
    memset(n64, 'n', 64);
    n64[64] = '\0';
    assert_int_equal(br_gguf_writer_add_tensor(w, n64, 1, ne, BR_GGML_F32, &err), BR_E_INVALID);
    n64[63] = '\0'; /* 63 bytes is the longest allowed */
    assert_int_equal(br_gguf_writer_add_tensor(w, n64, 1, ne, BR_GGML_F32, &err), BR_OK);
    assert_int_equal(br_gguf_writer_add_tensor(w, "", 1, ne, BR_GGML_F32, &err), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_add_tensor(w, "t", 0, ne, BR_GGML_F32, &err), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_add_tensor(w, "t", 5, ne, BR_GGML_F32, &err), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_add_tensor(w, "t", 1, bad0, BR_GGML_Q8_0, &err), BR_E_INVALID);
    expect_msg(err.msg, "'t'");
    assert_int_equal(br_gguf_writer_add_tensor(w, "t", 2, zero, BR_GGML_F32, &err), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_add_tensor(w, "t", 2, ovf, BR_GGML_F32, &err), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_add_tensor(w, "t", 1, ne, 99, &err), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_add_tensor(w, n64, 1, ne, BR_GGML_F32, &err), BR_E_INVALID);
    expect_msg(err.msg, "twice");
    assert_int_equal(br_gguf_writer_add_tensor(w, "t", 1, ne, BR_GGML_F16, &err), BR_OK);
    /* writing before begin, too much data, and finishing short all fail */
    uint8_t data[200] = {0};
    assert_int_equal(br_gguf_writer_write(w, data, 1, &err), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_finish(w, &err), BR_E_INVALID);
    char *path = br_test_tmp_path("gguf-rej");
    assert_int_equal(br_gguf_writer_begin(w, path, &err), BR_OK);
    assert_int_equal(br_gguf_writer_set_u32(w, "late", 1), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_add_tensor(w, "late", 1, ne, BR_GGML_F32, &err), BR_E_INVALID);
    assert_int_equal(br_gguf_writer_write(w, data, 128, &err), BR_OK); /* n64: 32 f32 */
    assert_int_equal(br_gguf_writer_finish(w, &err), BR_E_INVALID);
    expect_msg(err.msg, "'t' is missing 64 bytes");
    assert_int_equal(br_gguf_writer_write(w, data, 65, &err), BR_E_INVALID);
    expect_msg(err.msg, "more tensor data");
    br_gguf_writer_destroy(&w);
    br_gguf_writer_destroy(&w); /* NULL-safe */
    unlink(path);
    free(path);
    br_gguf_writer_destroy(NULL);
}

/* ---- tensors ---- */

struct ttype {
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[4];
    uint64_t nbytes; /* computed by hand from docs/FORMATS.md §2 */
};

/* Every type with a known size, with the byte size worked out independently. */
static const struct ttype ttypes[] = {
    {BR_GGML_F32, 2, {64, 3, 1, 1}, 64 * 3 * 4},
    {BR_GGML_F16, 3, {5, 3, 2, 1}, 5 * 3 * 2 * 2},
    {BR_GGML_BF16, 1, {7, 1, 1, 1}, 14},
    {BR_GGML_Q8_0, 2, {64, 3, 1, 1}, 2 * 3 * 34},
    {BR_GGML_Q6_K, 2, {256, 2, 1, 1}, 2 * 210},
    {BR_GGML_TQ1_0, 4, {512, 1, 2, 1}, 4 * 54},
    {BR_GGML_TQ2_0, 2, {256, 3, 1, 1}, 3 * 66},
    {BR_GGML_I2_S, 2, {128, 3, 1, 1}, 128 * 3 / 4 + 32},
    {BR_GGML_I2_S, 1, {256, 1, 1, 1}, 256 / 4 + 32},
};
enum { N_TTYPES = sizeof ttypes / sizeof ttypes[0] };

/* Writes one tensor of each type (named t0, t1, ...), with general.alignment of type vt
 * when set_align, and checks every offset, size and byte. */
static void roundtrip_tensors(bool set_align, enum br_gguf_vtype vt, uint64_t alignment)
{
    struct br_gguf_writer *w;
    struct br_err err = {{0}};
    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "general.architecture", "bitnet-b1.58"), BR_OK);
    uint64_t align = BR_GGUF_DEFAULT_ALIGNMENT;
    if (set_align) {
        assert_int_equal(br_gguf_writer_set_raw(w, "general.alignment", vt, &alignment), BR_OK);
        align = alignment;
    }
    uint8_t *datas[N_TTYPES];
    size_t sizes[N_TTYPES];
    for (size_t i = 0; i < N_TTYPES; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%zu", i);
        if (br_gguf_writer_add_tensor(w, name, ttypes[i].n_dims, ttypes[i].ne, ttypes[i].type,
                                      &err))
            fail_msg("%s", err.msg);
        sizes[i] = ttypes[i].nbytes;
        datas[i] = malloc(sizes[i]);
        assert_non_null(datas[i]);
        for (size_t k = 0; k < sizes[i]; k++) datas[i][k] = (uint8_t)(k * 31 + i * 101 + 1);
    }
    size_t len;
    uint8_t *bytes = write_to_memory(w, N_TTYPES, (const uint8_t *const *)datas, sizes, &len);
    br_gguf_writer_destroy(&w);

    struct opened o;
    open_exact(&o, bytes, len);
    if (o.rc) fail_msg("alignment %llu: %s", (unsigned long long)align, o.err.msg);
    const struct br_gguf *g = o.g;
    assert_int_equal(br_gguf_alignment(g), align);
    uint64_t data = br_gguf_data_offset(g);
    assert_int_equal(data % align, 0);
    assert_int_equal(br_gguf_file_size(g), len);
    assert_int_equal(len % align, 0); /* the writer pads the end too */
    assert_int_equal(br_gguf_n_tensors(g), N_TTYPES);
    assert_null(br_gguf_tensor_at(g, N_TTYPES));
    uint64_t expect_off = 0;
    for (size_t i = 0; i < N_TTYPES; i++) {
        const struct br_gguf_tensor *t = br_gguf_tensor_at(g, i);
        char name[16];
        snprintf(name, sizeof name, "t%zu", i);
        assert_string_equal(t->name, name);
        assert_ptr_equal(br_gguf_find_tensor(g, name), t);
        assert_int_equal(t->type, ttypes[i].type);
        assert_int_equal(t->n_dims, ttypes[i].n_dims);
        uint64_t nelem = 1;
        for (uint32_t d = 0; d < 4; d++) {
            assert_int_equal(t->ne[d], ttypes[i].ne[d]);
            nelem *= ttypes[i].ne[d];
        }
        assert_int_equal(t->nelem, nelem);
        assert_int_equal(t->nbytes, ttypes[i].nbytes);
        /* tensors are packed in order, each at the next multiple of the alignment */
        assert_int_equal(t->offset, expect_off);
        expect_off = round_up(t->offset + t->nbytes, align);
        assert_ptr_equal(t->data, o.copy + data + t->offset);
        assert_memory_equal(t->data, datas[i], sizes[i]);
        /* the padding after each tensor is zero */
        for (uint64_t k = t->offset + t->nbytes; k < round_up(t->offset + t->nbytes, align); k++)
            assert_int_equal(o.copy[data + k], 0);
        free(datas[i]);
    }
    assert_int_equal(len, data + expect_off);
    assert_null(br_gguf_find_tensor(g, "t"));
    /* the same bytes through a file mapping */
    char *path = br_test_tmp_path("gguf-map");
    assert_int_equal(br_test_write_file(path, bytes, len), 0);
    struct br_gguf *m;
    assert_int_equal(br_gguf_open(path, &m, &err), BR_OK);
    assert_string_equal(br_gguf_path(m), path);
    assert_int_equal(br_gguf_data_offset(m), data);
    const struct br_gguf_tensor *last = br_gguf_tensor_at(m, N_TTYPES - 1);
    assert_memory_equal(last->data, bytes + data + last->offset, last->nbytes);
    br_gguf_close(&m);
    assert_null(m);
    unlink(path);
    free(path);
    close_exact(&o);
    free(bytes);
}

static void test_tensor_types_default_alignment(void **state)
{
    (void)state;
    roundtrip_tensors(false, BR_GGUF_U32, 0);
}

static void test_tensor_types_other_alignments(void **state)
{
    (void)state;
    roundtrip_tensors(true, BR_GGUF_U32, 32); /* explicit default */
    roundtrip_tensors(true, BR_GGUF_U32, 64);
    roundtrip_tensors(true, BR_GGUF_U32, 1);
    roundtrip_tensors(true, BR_GGUF_U32, 4096);
    roundtrip_tensors(true, BR_GGUF_U64, 16); /* any integer type is read */
    roundtrip_tensors(true, BR_GGUF_U8, 8);
    roundtrip_tensors(true, BR_GGUF_I64, 128);
}

static void test_type_table(void **state)
{
    (void)state;
    uint64_t n = 0;
    for (size_t i = 0; i < N_TTYPES; i++) {
        uint64_t nelem = ttypes[i].ne[0] * ttypes[i].ne[1] * ttypes[i].ne[2] * ttypes[i].ne[3];
        assert_true(br_ggml_type_nbytes(ttypes[i].type, ttypes[i].ne[0], nelem, &n));
        assert_int_equal(n, ttypes[i].nbytes);
        assert_non_null(br_ggml_type_name(ttypes[i].type));
        assert_int_equal(br_ggml_type_from_name(br_ggml_type_name(ttypes[i].type)),
                         (int)ttypes[i].type);
    }
    assert_int_equal(br_ggml_type_from_name("i2_s"), BR_GGML_I2_S);
    assert_int_equal(br_ggml_type_from_name("Q4_X"), -1);
    assert_null(br_ggml_type_name(4));
    assert_null(br_ggml_type_name(99));
    assert_null(br_ggml_type_name(UINT32_MAX));
    assert_int_equal(br_ggml_type_block(BR_GGML_I2_S), 128);
    assert_int_equal(br_ggml_type_block(99), 0);
    n = 12345;
    assert_false(br_ggml_type_nbytes(BR_GGML_Q8_0, 33, 33, &n));
    /* I2_S packs the tensor flat: its size, not each row, must be whole 128-weight blocks
     * (bitnet_b1_58-3B's ffn_down has rows of 8640) */
    assert_false(br_ggml_type_nbytes(BR_GGML_I2_S, 64, 64, &n));
    assert_false(br_ggml_type_nbytes(BR_GGML_I2_S, 8640, 8640, &n));
    assert_false(br_ggml_type_nbytes(BR_GGML_F32, 0, 0, &n));
    assert_false(br_ggml_type_nbytes(BR_GGML_F32, 1, UINT64_MAX / 2, &n)); /* bytes overflow */
    assert_false(br_ggml_type_nbytes(99, 1, 1, &n));
    assert_int_equal(n, 12345);
    assert_true(br_ggml_type_nbytes(BR_GGML_I2_S, 64, 128, &n) && n == 32 + 32);
    assert_true(br_ggml_type_nbytes(BR_GGML_I2_S, 8640, 8640 * 3200ull, &n) &&
                n == 8640 * 3200ull / 4 + 32);
    assert_true(br_ggml_type_is_ternary(BR_GGML_I2_S));
    assert_true(br_ggml_type_is_ternary(BR_GGML_TQ1_0));
    assert_false(br_ggml_type_is_ternary(BR_GGML_Q8_0));
}

/* A version 2 file (same layout as 3), written by hand. */
static void test_version2(void **state)
{
    (void)state;
    struct rb b = {0};
    rb_put(&b, "GGUF", 4);
    rb_u32(&b, 2);
    rb_u64(&b, 1); /* tensors */
    rb_u64(&b, 2); /* kvs */
    rb_str(&b, "general.architecture");
    rb_u32(&b, BR_GGUF_STRING);
    rb_str(&b, "llama");
    rb_str(&b, "llama.block_count");
    rb_u32(&b, BR_GGUF_U32);
    rb_u32(&b, 26);
    rb_str(&b, "w");
    rb_u32(&b, 1);
    rb_u64(&b, 8);
    rb_u32(&b, BR_GGML_F32);
    rb_u64(&b, 0);
    size_t hdr = b.len;
    rb_pad(&b, 32);
    rb_fill(&b, 32, 9);
    struct opened o;
    open_exact(&o, b.p, b.len);
    if (o.rc) fail_msg("%s", o.err.msg);
    assert_int_equal(br_gguf_version(o.g), 2);
    assert_int_equal(br_gguf_data_offset(o.g), round_up(hdr, 32));
    uint32_t v = 0;
    assert_int_equal(br_gguf_get_u32(o.g, "llama.block_count", &v, NULL), BR_OK);
    assert_int_equal(v, 26);
    char s[16];
    assert_int_equal(br_gguf_get_str(o.g, "general.architecture", s, sizeof s, NULL), BR_OK);
    assert_string_equal(s, "llama");
    const struct br_gguf_tensor *t = br_gguf_find_tensor(o.g, "w");
    assert_non_null(t);
    assert_int_equal(t->nbytes, 32);
    assert_memory_equal(t->data, b.p + round_up(hdr, 32), 32);
    close_exact(&o);
    free(b.p);
}

/* The three small bitnet.cpp-made models in tests/data/bitnet-cpp. */
static void test_real_files(void **state)
{
    (void)state;
    static const char *const files[] = {"bitnet-cpp/gqa-i2_s.gguf", "bitnet-cpp/gqa-tq1_0.gguf",
                                        "bitnet-cpp/gqa-tq2_0.gguf"};
    static const uint32_t ternary[] = {BR_GGML_I2_S, BR_GGML_TQ1_0, BR_GGML_TQ2_0};
    for (size_t f = 0; f < 3; f++) {
        const char *path = br_test_data(files[f]);
        if (access(path, R_OK) != 0) fail_msg("missing test data file %s", path);
        struct br_gguf *g;
        struct br_err err = {{0}};
        if (br_gguf_open(path, &g, &err)) fail_msg("%s", err.msg);
        assert_int_equal(br_gguf_n_tensors(g), 35);
        assert_int_equal(br_gguf_n_kv(g), 24);
        assert_int_equal(br_gguf_data_offset(g), 22528);
        assert_int_equal(br_gguf_version(g), 3);
        size_t n_ternary = 0;
        for (size_t i = 0; i < br_gguf_n_tensors(g); i++) {
            const struct br_gguf_tensor *t = br_gguf_tensor_at(g, i);
            assert_int_equal(t->offset % br_gguf_alignment(g), 0);
            assert_true(22528 + t->offset + t->nbytes <= br_gguf_file_size(g));
            n_ternary += t->type == ternary[f];
        }
        assert_true(n_ternary > 0);
        char arch[64];
        assert_int_equal(br_gguf_get_str(g, "general.architecture", arch, sizeof arch, &err),
                         BR_OK);
        assert_true(strlen(arch) > 0);
        /* and the same bytes from memory */
        size_t len;
        uint8_t *bytes = br_test_read_file(path, &len);
        assert_non_null(bytes);
        struct opened o;
        open_exact(&o, bytes, len);
        assert_int_equal(o.rc, BR_OK);
        assert_int_equal(br_gguf_n_tensors(o.g), 35);
        assert_int_equal(br_gguf_data_offset(o.g), 22528);
        close_exact(&o);
        free(bytes);
        br_gguf_close(&g);
    }
}

static void test_open_errors(void **state)
{
    (void)state;
    struct br_gguf *g = (struct br_gguf *)&g; /* must be reset to NULL */
    struct br_err err = {{0}};
    assert_int_equal(br_gguf_open("/nonexistent/x.gguf", &g, &err), BR_E_IO);
    assert_null(g);
    expect_msg(err.msg, "/nonexistent/x.gguf");
    assert_int_equal(br_gguf_open("/", &g, &err), BR_E_IO);
    char *path = br_test_tmp_path("gguf-short");
    assert_int_equal(br_test_write_file(path, "GGUF\3\0\0\0", 8), 0);
    assert_int_equal(br_gguf_open(path, &g, &err), BR_E_FORMAT);
    expect_msg(err.msg, "truncated");
    assert_null(g);
    unlink(path);
    free(path);
    br_gguf_close(NULL);
    br_gguf_close(&g);
    /* an empty buffer */
    struct opened o;
    open_exact(&o, "", 0);
    assert_int_equal(o.rc, BR_E_FORMAT);
    expect_msg(o.err.msg, "truncated");
    close_exact(&o);
}

/* ---- malformed files ---- */

/* One broken field each; M_NONE is the valid file they all start from. */
enum mut {
    M_NONE,
    M_MAGIC,
    M_VERSION1,
    M_VERSION4,
    M_BIG_ENDIAN,
    M_NT_2_63,
    M_NT_2_40,
    M_NKV_2_63,
    M_NKV_2_40,
    M_COUNTS_SUM,
    M_KEYLEN_2_63,
    M_KEYLEN_MAX,
    M_EMPTY_KEY,
    M_KEY_NUL,
    M_KEY_CTRL,
    M_DUP_KEY,
    M_ALIGN_0,
    M_ALIGN_3,
    M_ALIGN_2_40,
    M_ALIGN_STR,
    M_ALIGN_F32,
    M_ALIGN_NEG,
    M_VTYPE_13,
    M_VTYPE_MAX,
    M_BOOL_2,
    M_BOOL_255,
    M_STRLEN_2_63,
    M_STRLEN_PAST,
    M_ARR_2_62,
    M_ARR_PAST,
    M_ARR_STR_2_61,
    M_ARR_STR_ELEM_2_63,
    M_ARR_NESTED,
    M_ARR_ELEM_13,
    M_ARR_BOOL_2,
    M_DUP_NAME,
    M_NAME_64,
    M_NAME_HUGE,
    M_NAME_EMPTY,
    M_NAME_NUL,
    M_NAME_CTRL,
    M_NDIMS_0,
    M_NDIMS_5,
    M_NE_0,
    M_NE_OVERFLOW,
    M_NE_INT64,
    M_NE_HUGE,
    M_NE_NOT_BLOCK,
    M_TYPE_99,
    M_TYPE_GAP,
    M_TYPE_MAX,
    M_OFF_UNALIGNED,
    M_OFF_OVERLAP,
    M_OFF_SAME,
    M_OFF_OUT,
    M_OFF_WRAP,
    M_DATA_SHORT,
    M_NO_DATA,
    M_COUNT
};

struct mcase {
    const char *name;
    int status;
    const char *field; /* the message must mention this */
};

static const struct mcase mcases[M_COUNT] = {
    [M_NONE] = {"valid", BR_OK, ""},
    [M_MAGIC] = {"bad-magic", BR_E_FORMAT, "magic"},
    [M_VERSION1] = {"version-1", BR_E_UNSUPPORTED, "version 1"},
    [M_VERSION4] = {"version-4", BR_E_UNSUPPORTED, "version 4"},
    [M_BIG_ENDIAN] = {"big-endian", BR_E_UNSUPPORTED, "big-endian"},
    [M_NT_2_63] = {"n-tensors-2e63", BR_E_FORMAT, "tensor count"},
    [M_NT_2_40] = {"n-tensors-2e40", BR_E_FORMAT, "tensor count"},
    [M_NKV_2_63] = {"n-kv-2e63", BR_E_FORMAT, "kv count"},
    [M_NKV_2_40] = {"n-kv-2e40", BR_E_FORMAT, "kv count"},
    [M_COUNTS_SUM] = {"counts-sum", BR_E_FORMAT, "kv count 30"},
    [M_KEYLEN_2_63] = {"key-length-2e63", BR_E_FORMAT, "key"},
    [M_KEYLEN_MAX] = {"key-length-max", BR_E_FORMAT, "key"},
    [M_EMPTY_KEY] = {"key-empty", BR_E_FORMAT, "empty key"},
    [M_KEY_NUL] = {"key-nul", BR_E_FORMAT, "NUL"},
    [M_KEY_CTRL] = {"key-control-chars", BR_E_FORMAT, "unknown value type 13"},
    [M_DUP_KEY] = {"key-duplicate", BR_E_FORMAT, "duplicate metadata key 'general.architecture'"},
    [M_ALIGN_0] = {"alignment-0", BR_E_FORMAT, "general.alignment"},
    [M_ALIGN_3] = {"alignment-3", BR_E_FORMAT, "general.alignment"},
    [M_ALIGN_2_40] = {"alignment-2e40", BR_E_FORMAT, "general.alignment"},
    [M_ALIGN_STR] = {"alignment-string", BR_E_FORMAT, "general.alignment"},
    [M_ALIGN_F32] = {"alignment-f32", BR_E_FORMAT, "general.alignment"},
    [M_ALIGN_NEG] = {"alignment-negative", BR_E_FORMAT, "general.alignment"},
    [M_VTYPE_13] = {"value-type-13", BR_E_FORMAT, "unknown value type 13"},
    [M_VTYPE_MAX] = {"value-type-max", BR_E_FORMAT, "unknown value type 4294967295"},
    [M_BOOL_2] = {"bool-2", BR_E_FORMAT, "bool value 2"},
    [M_BOOL_255] = {"bool-255", BR_E_FORMAT, "bool value 255"},
    [M_STRLEN_2_63] = {"string-length-2e63", BR_E_FORMAT, "string value"},
    [M_STRLEN_PAST] = {"string-length-past-end", BR_E_FORMAT, "string value"},
    [M_ARR_2_62] = {"array-count-2e62", BR_E_FORMAT, "array of"},
    [M_ARR_PAST] = {"array-count-past-end", BR_E_FORMAT, "array of"},
    [M_ARR_STR_2_61] = {"array-strings-2e61", BR_E_FORMAT, "strings"},
    [M_ARR_STR_ELEM_2_63] = {"array-string-length-2e63", BR_E_FORMAT, "element 1"},
    [M_ARR_NESTED] = {"array-nested", BR_E_UNSUPPORTED, "nested"},
    [M_ARR_ELEM_13] = {"array-type-13", BR_E_FORMAT, "element type 13"},
    [M_ARR_BOOL_2] = {"array-bool-2", BR_E_FORMAT, "bool element 2"},
    [M_DUP_NAME] = {"tensor-duplicate", BR_E_FORMAT, "duplicate tensor name 'a'"},
    [M_NAME_64] = {"tensor-name-64", BR_E_FORMAT, "name length 64"},
    [M_NAME_HUGE] = {"tensor-name-2e63", BR_E_FORMAT, "tensor name"},
    [M_NAME_EMPTY] = {"tensor-name-empty", BR_E_FORMAT, "name length 0"},
    [M_NAME_NUL] = {"tensor-name-nul", BR_E_FORMAT, "NUL"},
    [M_NAME_CTRL] = {"tensor-name-control-chars", BR_E_FORMAT, "unknown type 99"},
    [M_NDIMS_0] = {"n-dims-0", BR_E_FORMAT, "n_dims 0"},
    [M_NDIMS_5] = {"n-dims-5", BR_E_FORMAT, "n_dims 5"},
    [M_NE_0] = {"ne-0", BR_E_FORMAT, "dimension 0 = 0"},
    [M_NE_OVERFLOW] = {"ne-product-2e64", BR_E_FORMAT, "dimension 1"},
    [M_NE_INT64] = {"ne-product-2e63", BR_E_FORMAT, "dimension 1"},
    [M_NE_HUGE] = {"ne-2e63", BR_E_FORMAT, "dimension 0"},
    [M_NE_NOT_BLOCK] = {"ne0-not-block-multiple", BR_E_FORMAT, "multiple of 32"},
    [M_TYPE_99] = {"type-99", BR_E_FORMAT, "unknown type 99"},
    [M_TYPE_GAP] = {"type-4", BR_E_FORMAT, "unknown type 4"},
    [M_TYPE_MAX] = {"type-max", BR_E_FORMAT, "unknown type 4294967295"},
    [M_OFF_UNALIGNED] = {"offset-unaligned", BR_E_FORMAT, "alignment"},
    [M_OFF_OVERLAP] = {"tensors-overlap", BR_E_FORMAT, "overlap"},
    [M_OFF_SAME] = {"tensors-same-offset", BR_E_FORMAT, "overlap"},
    [M_OFF_OUT] = {"offset-past-end", BR_E_FORMAT, "past the end"},
    [M_OFF_WRAP] = {"offset-wraps", BR_E_FORMAT, "past the end"},
    [M_DATA_SHORT] = {"data-short", BR_E_FORMAT, "truncated"},
    [M_NO_DATA] = {"no-data-section", BR_E_FORMAT, "truncated"},
};

/*
 * Builds the valid file (3 keys, tensors "a" {32,2} F32 at 0 and "b" {32} Q8_0 at 256)
 * with mutation m applied, and sets *mark to the byte offset the reader should report.
 */
static void build_case(enum mut m, struct rb *b, uint64_t *mark)
{
    *mark = 0;
#define MARK() (*mark = b->len)
    rb_put(b, m == M_MAGIC ? "GGUX" : "GGUF", 4);
    if (m == M_VERSION1 || m == M_VERSION4 || m == M_BIG_ENDIAN) MARK();
    rb_u32(b, m == M_VERSION1 ? 1 : m == M_VERSION4 ? 4 : m == M_BIG_ENDIAN ? 0x03000000u : 3);
    if (m == M_NT_2_63 || m == M_NT_2_40) MARK();
    /* counts-sum: 30 keys or 10 tensors would each fit the file's 520 bytes, not both */
    rb_u64(b, m == M_NT_2_63      ? 1ull << 63
              : m == M_NT_2_40    ? 1ull << 40
              : m == M_COUNTS_SUM ? 10
                                  : 2);
    if (m == M_NKV_2_63 || m == M_NKV_2_40 || m == M_COUNTS_SUM) MARK();
    rb_u64(b, m == M_NKV_2_63     ? 1ull << 63
              : m == M_NKV_2_40   ? 1ull << 40
              : m == M_COUNTS_SUM ? 30
                                  : 3);

    /* kv 0 */
    if (m == M_KEYLEN_2_63 || m == M_KEYLEN_MAX) {
        MARK();
        rb_u64(b, m == M_KEYLEN_MAX ? UINT64_MAX : 1ull << 63);
        rb_put(b, "general.architecture", 20);
    } else {
        rb_str(b, "general.architecture");
    }
    rb_u32(b, BR_GGUF_STRING);
    rb_str(b, "bitnet");

    /* kv 1: the alignment */
    if (m >= M_ALIGN_0 && m <= M_ALIGN_NEG) MARK();
    rb_str(b, "general.alignment");
    switch (m) {
    case M_ALIGN_0:
        rb_u32(b, BR_GGUF_U32);
        rb_u32(b, 0);
        break;
    case M_ALIGN_3:
        rb_u32(b, BR_GGUF_U32);
        rb_u32(b, 3);
        break;
    case M_ALIGN_2_40:
        rb_u32(b, BR_GGUF_U64);
        rb_u64(b, 1ull << 40);
        break;
    case M_ALIGN_STR:
        rb_u32(b, BR_GGUF_STRING);
        rb_str(b, "32");
        break;
    case M_ALIGN_F32:
        rb_u32(b, BR_GGUF_F32);
        rb_u32(b, 0x42000000u); /* 32.0f */
        break;
    case M_ALIGN_NEG:
        rb_u32(b, BR_GGUF_I32);
        rb_u32(b, (uint32_t)-32);
        break;
    default:
        rb_u32(b, BR_GGUF_U32);
        rb_u32(b, 32);
        break;
    }

    /* kv 2: an ordinary value, or a broken one */
    if (m == M_EMPTY_KEY || m == M_KEY_NUL || m == M_DUP_KEY) MARK();
    if (m == M_EMPTY_KEY)
        rb_str(b, "");
    else if (m == M_KEY_NUL)
        rb_strn(b, "test\0value", 10);
    else if (m == M_DUP_KEY)
        rb_str(b, "general.architecture");
    else if (m == M_KEY_CTRL)
        rb_str(b, "test\n\x1b[31mvalue\r");
    else
        rb_str(b, "test.value");
    switch (m) {
    case M_VTYPE_13:
    case M_KEY_CTRL:
        MARK();
        rb_u32(b, 13);
        rb_u32(b, 0);
        break;
    case M_VTYPE_MAX:
        MARK();
        rb_u32(b, UINT32_MAX);
        rb_u32(b, 0);
        break;
    case M_BOOL_2:
    case M_BOOL_255:
        rb_u32(b, BR_GGUF_BOOL), MARK();
        rb_u8(b, m == M_BOOL_2 ? 2 : 255);
        break;
    case M_STRLEN_2_63:
    case M_STRLEN_PAST:
        rb_u32(b, BR_GGUF_STRING), MARK();
        /* past the end: longer than the whole rest of the file (about 700 bytes) */
        rb_u64(b, m == M_STRLEN_2_63 ? 1ull << 63 : 4096);
        rb_put(b, "abc", 3);
        break;
    case M_ARR_2_62:
    case M_ARR_PAST:
        rb_u32(b, BR_GGUF_ARRAY), MARK();
        rb_u32(b, BR_GGUF_U32);
        rb_u64(b, m == M_ARR_2_62 ? 1ull << 62 : 1024);
        rb_u32(b, 1);
        break;
    case M_ARR_STR_2_61:
        rb_u32(b, BR_GGUF_ARRAY), MARK();
        rb_u32(b, BR_GGUF_STRING);
        rb_u64(b, 1ull << 61);
        rb_str(b, "x");
        break;
    case M_ARR_STR_ELEM_2_63:
        rb_u32(b, BR_GGUF_ARRAY);
        rb_u32(b, BR_GGUF_STRING);
        rb_u64(b, 3);
        rb_str(b, "ok");
        MARK();
        rb_u64(b, 1ull << 63);
        rb_str(b, "z");
        break;
    case M_ARR_NESTED:
        rb_u32(b, BR_GGUF_ARRAY), MARK();
        rb_u32(b, BR_GGUF_ARRAY);
        rb_u64(b, 1);
        rb_u32(b, BR_GGUF_U8);
        rb_u64(b, 1);
        rb_u8(b, 5);
        break;
    case M_ARR_ELEM_13:
        rb_u32(b, BR_GGUF_ARRAY), MARK();
        rb_u32(b, 13);
        rb_u64(b, 1);
        rb_u32(b, 0);
        break;
    case M_ARR_BOOL_2:
        rb_u32(b, BR_GGUF_ARRAY);
        rb_u32(b, BR_GGUF_BOOL);
        rb_u64(b, 3);
        rb_u8(b, 1);
        rb_u8(b, 0);
        MARK();
        rb_u8(b, 2);
        break;
    default:
        rb_u32(b, BR_GGUF_U32);
        rb_u32(b, 7);
        break;
    }

    /* tensor a: {32, 2} F32 at 0 (256 bytes) */
    rb_str(b, "a");
    rb_u32(b, 2);
    rb_u64(b, 32);
    rb_u64(b, 2);
    rb_u32(b, BR_GGML_F32);
    rb_u64(b, 0);

    /* tensor b: {32} Q8_0 at 256 (34 bytes) */
    uint64_t info_b = b->len;
    switch (m) {
    case M_DUP_NAME:
        rb_str(b, "a");
        break;
    case M_NAME_64:
        rb_str(b, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        break;
    case M_NAME_HUGE:
        rb_u64(b, 1ull << 63);
        rb_put(b, "b", 1);
        break;
    case M_NAME_EMPTY:
        rb_str(b, "");
        break;
    case M_NAME_NUL:
        rb_strn(b, "b\0", 2);
        break;
    case M_NAME_CTRL:
        rb_str(b, "b\nnext line\t");
        break;
    default:
        rb_str(b, "b");
        break;
    }
    if (m == M_DUP_NAME || m == M_NAME_64 || m == M_NAME_HUGE || m == M_NAME_EMPTY ||
        m == M_NAME_NUL || m == M_OFF_UNALIGNED || m == M_OFF_OVERLAP || m == M_OFF_SAME ||
        m == M_OFF_OUT || m == M_OFF_WRAP || m == M_DATA_SHORT)
        *mark = info_b;
    if (m == M_NDIMS_0 || m == M_NDIMS_5 || m == M_NE_NOT_BLOCK) MARK();
    switch (m) {
    case M_NDIMS_0:
        rb_u32(b, 0);
        break;
    case M_NDIMS_5:
        rb_u32(b, 5);
        for (int d = 0; d < 5; d++) rb_u64(b, d ? 1 : 32);
        break;
    case M_NE_0:
        rb_u32(b, 1), MARK();
        rb_u64(b, 0);
        break;
    case M_NE_HUGE:
        rb_u32(b, 1), MARK();
        rb_u64(b, 1ull << 63);
        break;
    case M_NE_OVERFLOW:
    case M_NE_INT64:
        rb_u32(b, 2);
        rb_u64(b, 1ull << 32), MARK();
        rb_u64(b, m == M_NE_OVERFLOW ? 1ull << 32 : 1ull << 31);
        break;
    case M_NE_NOT_BLOCK:
        rb_u32(b, 1);
        rb_u64(b, 33);
        break;
    default:
        rb_u32(b, 1);
        rb_u64(b, 32);
        break;
    }
    if (m == M_TYPE_99 || m == M_TYPE_GAP || m == M_TYPE_MAX || m == M_NAME_CTRL) MARK();
    rb_u32(b, m == M_TYPE_99 || m == M_NAME_CTRL ? 99
              : m == M_TYPE_GAP                  ? 4
              : m == M_TYPE_MAX                  ? UINT32_MAX
                                                 : BR_GGML_Q8_0);
    rb_u64(b, m == M_OFF_UNALIGNED ? 272
              : m == M_OFF_OVERLAP ? 224
              : m == M_OFF_SAME    ? 0
              : m == M_OFF_OUT     ? 1ull << 20
              : m == M_OFF_WRAP    ? UINT64_MAX - 31
                                   : 256);
    if (m == M_NO_DATA) {
        *mark = round_up(b->len, 32); /* where the data section would start */
        return;
    }
    rb_pad(b, 32);
    rb_fill(b, 256, 1);
    rb_fill(b, m == M_DATA_SHORT ? 33 : 34, 2);
    if (m != M_DATA_SHORT) rb_pad(b, 32);
#undef MARK
}

static void check_case(enum mut m)
{
    struct rb b = {0};
    uint64_t mark;
    build_case(m, &b, &mark);
    struct opened o;
    open_exact(&o, b.p, b.len);
    const struct mcase *c = &mcases[m];
    if (o.rc != c->status)
        fail_msg("case %s: status %d (%s), expected %d", c->name, o.rc, o.err.msg, c->status);
    if (m != M_NONE) {
        expect_msg(o.err.msg, c->field);
        expect_msg(o.err.msg, "<memory>: ");
        expect_msg(o.err.msg, "byte");
        /* one line, whatever bytes the file's keys and names hold */
        for (const char *p = o.err.msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                fail_msg("case %s: control character in '%s'", c->name, o.err.msg);
        if (!has_number(o.err.msg, mark))
            fail_msg("case %s: '%s' does not name byte offset %llu", c->name, o.err.msg,
                     (unsigned long long)mark);
    }
    close_exact(&o);
    free(b.p);
}

static void test_malformed_valid_base(void **state)
{
    (void)state;
    /* the unmutated file reads, so each case below fails for its own mutation only */
    struct rb b = {0};
    uint64_t mark;
    build_case(M_NONE, &b, &mark);
    struct opened o;
    open_exact(&o, b.p, b.len);
    if (o.rc) fail_msg("%s", o.err.msg);
    assert_int_equal(br_gguf_n_kv(o.g), 3);
    assert_int_equal(br_gguf_n_tensors(o.g), 2);
    assert_int_equal(br_gguf_find_tensor(o.g, "b")->offset, 256);
    assert_int_equal(br_gguf_find_tensor(o.g, "b")->nbytes, 34);
    close_exact(&o);
    free(b.p);
}

static void test_malformed_cases(void **state)
{
    (void)state;
    for (int m = 1; m < M_COUNT; m++) check_case((enum mut)m);
}

/* A valid file from the writer with every kind of record, for the truncation sweep. */
static uint8_t *make_base(size_t *len, uint64_t *data_end)
{
    struct br_gguf_writer *w;
    struct br_err err = {{0}};
    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    const char *toks[] = {"<s>", "</s>", "hello"};
    const int16_t i16[] = {-1, 2, 3};
    const uint8_t bools[] = {1, 0};
    int8_t i8 = -4;
    double f64 = 0.25;
    assert_int_equal(br_gguf_writer_set_str(w, "general.architecture", "bitnet"), BR_OK);
    assert_int_equal(br_gguf_writer_set_u32(w, "bitnet.block_count", 2), BR_OK);
    assert_int_equal(br_gguf_writer_set_i32(w, "t.i32", -9), BR_OK);
    assert_int_equal(br_gguf_writer_set_f32(w, "t.f32", 1e-5f), BR_OK);
    assert_int_equal(br_gguf_writer_set_bool(w, "t.bool", true), BR_OK);
    assert_int_equal(br_gguf_writer_set_u64(w, "t.u64", 5), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.i8", BR_GGUF_I8, &i8), BR_OK);
    assert_int_equal(br_gguf_writer_set_raw(w, "t.f64", BR_GGUF_F64, &f64), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "t.i16s", BR_GGUF_I16, i16, 3), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "t.bools", BR_GGUF_BOOL, bools, 2), BR_OK);
    const uint64_t ne_a[2] = {32, 2}, ne_b[1] = {32}, ne_c[2] = {128, 2};
    assert_int_equal(br_gguf_writer_add_tensor(w, "a", 2, ne_a, BR_GGML_F32, &err), BR_OK);
    assert_int_equal(br_gguf_writer_add_tensor(w, "b", 1, ne_b, BR_GGML_Q8_0, &err), BR_OK);
    assert_int_equal(br_gguf_writer_add_tensor(w, "c", 2, ne_c, BR_GGML_I2_S, &err), BR_OK);
    uint8_t da[256], db[34], dc[96];
    memset(da, 1, sizeof da);
    memset(db, 2, sizeof db);
    memset(dc, 3, sizeof dc);
    const uint8_t *datas[3] = {da, db, dc};
    const size_t sizes[3] = {sizeof da, sizeof db, sizeof dc};
    uint8_t *bytes = write_to_memory(w, 3, datas, sizes, len);
    br_gguf_writer_destroy(&w);
    struct opened o;
    open_exact(&o, bytes, *len);
    if (o.rc) fail_msg("%s", o.err.msg);
    const struct br_gguf_tensor *c = br_gguf_find_tensor(o.g, "c");
    *data_end = br_gguf_data_offset(o.g) + c->offset + c->nbytes;
    assert_int_equal(c->nbytes, 96);
    close_exact(&o);
    return bytes;
}

/* Every prefix of a valid file shorter than its last tensor's end fails cleanly. */
static void test_truncated_everywhere(void **state)
{
    (void)state;
    size_t len;
    uint64_t data_end;
    uint8_t *bytes = make_base(&len, &data_end);
    assert_true(data_end <= len);
    for (size_t cut = 0; cut < data_end; cut++) {
        struct opened o;
        open_exact(&o, bytes, cut);
        if (o.rc != BR_E_FORMAT) fail_msg("cut at %zu: status %d (%s)", cut, o.rc, o.err.msg);
        expect_msg(o.err.msg, "truncated");
        expect_msg(o.err.msg, "byte");
        close_exact(&o);
    }
    /* the trailing padding after the last tensor is optional */
    for (size_t cut = data_end; cut <= len; cut++) {
        struct opened o;
        open_exact(&o, bytes, cut);
        assert_int_equal(o.rc, BR_OK);
        close_exact(&o);
    }
    free(bytes);
}

/* Single-byte corruptions of every header byte: anything may be reported, but nothing
 * may crash or read outside the buffer (ASan checks), and failures carry a message. */
static void test_corrupted_bytes(void **state)
{
    (void)state;
    size_t len;
    uint64_t data_end;
    uint8_t *bytes = make_base(&len, &data_end);
    struct opened o;
    open_exact(&o, bytes, len);
    assert_int_equal(o.rc, BR_OK);
    size_t hdr = (size_t)br_gguf_data_offset(o.g);
    close_exact(&o);
    static const uint8_t vals[] = {0x00, 0x01, 0x02, 0x0d, 0x7f, 0x80, 0xff};
    for (size_t at = 0; at < hdr; at++)
        for (size_t v = 0; v < sizeof vals; v++) {
            uint8_t keep = bytes[at];
            bytes[at] = vals[v];
            open_exact(&o, bytes, len);
            if (o.rc != BR_OK) {
                assert_true(o.rc == BR_E_FORMAT || o.rc == BR_E_UNSUPPORTED);
                assert_true(strlen(o.err.msg) > 12);
            } else {
                /* walking what was accepted must stay inside the buffer */
                for (size_t i = 0; i < br_gguf_n_tensors(o.g); i++) {
                    const struct br_gguf_tensor *t = br_gguf_tensor_at(o.g, i);
                    assert_true((const uint8_t *)t->data >= o.copy);
                    assert_true((const uint8_t *)t->data + t->nbytes <= o.copy + len);
                }
            }
            close_exact(&o);
            bytes[at] = keep;
        }
    free(bytes);
}

/* ---- corpus files for the CLI check and the fuzzer ---- */

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "gguf_test: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    return 0;
}

static int write_one(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    if (br_test_write_file(path, p, n) != 0) {
        fprintf(stderr, "gguf_test: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* The malformed corpus: one file per case, and truncations of the writer-made file at every
 * header offset and a few data offsets. */
static int write_corpus(const char *dir)
{
    int bad = 0;
    if (make_dir(dir)) return 1;
    for (int m = 1; m < M_COUNT; m++) {
        struct rb b = {0};
        uint64_t mark;
        build_case((enum mut)m, &b, &mark);
        bad |= write_one(dir, mcases[m].name, b.p, b.len);
        free(b.p);
    }
    size_t len;
    uint64_t data_end;
    uint8_t *bytes = make_base(&len, &data_end);
    struct br_gguf *g;
    if (br_gguf_open_memory(bytes, len, &g, NULL) != BR_OK) return 1;
    uint64_t hdr = br_gguf_data_offset(g);
    br_gguf_close(&g);
    for (uint64_t cut = 0; cut < data_end; cut++) {
        /* every header byte; inside the data, every 37th */
        if (cut > hdr && (cut - hdr) % 37 != 0 && cut != data_end - 1) continue;
        char name[64];
        snprintf(name, sizeof name, "truncated-%04llu", (unsigned long long)cut);
        bad |= write_one(dir, name, bytes, (size_t)cut);
    }
    free(bytes);
    return bad;
}

/* Small valid files: the seeds the fuzzer mutates. */
static int write_seeds(const char *dir)
{
    int bad = 0;
    if (make_dir(dir)) return 1;
    struct rb b = {0};
    uint64_t mark;
    build_case(M_NONE, &b, &mark);
    bad |= write_one(dir, "seed-small", b.p, b.len);
    free(b.p);
    size_t len;
    uint64_t data_end;
    uint8_t *bytes = make_base(&len, &data_end);
    bad |= write_one(dir, "seed-kinds", bytes, len);
    free(bytes);
    /* a v2 header with an empty string array and no tensors */
    struct rb v = {0};
    rb_put(&v, "GGUF", 4);
    rb_u32(&v, 2);
    rb_u64(&v, 0);
    rb_u64(&v, 2);
    rb_str(&v, "tokenizer.ggml.merges");
    rb_u32(&v, BR_GGUF_ARRAY);
    rb_u32(&v, BR_GGUF_STRING);
    rb_u64(&v, 0);
    rb_str(&v, "general.alignment");
    rb_u32(&v, BR_GGUF_U64);
    rb_u64(&v, 64);
    bad |= write_one(dir, "seed-v2", v.p, v.len);
    free(v.p);
    return bad;
}

int main(void)
{
    const char *corpus = getenv("BR_CORPUS_DIR");
    const char *seeds = getenv("BR_SEED_DIR");
    if ((corpus && *corpus) || (seeds && *seeds)) {
        int bad = 0;
        if (corpus && *corpus) bad |= write_corpus(corpus);
        if (seeds && *seeds) bad |= write_seeds(seeds);
        return bad;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalar_values),
        cmocka_unit_test(test_getter_errors),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_tensor_types_default_alignment),
        cmocka_unit_test(test_tensor_types_other_alignments),
        cmocka_unit_test(test_version2),
        cmocka_unit_test(test_real_files),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_malformed_valid_base),
        cmocka_unit_test(test_malformed_cases),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_corrupted_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
