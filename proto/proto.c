/*
 * Protocol v1 codecs: msgpack maps <-> struct br_req / struct br_resp (see proto.h and
 * PROTOCOL.md).
 *
 * Decoding runs in three steps so that no peer can make us allocate or recurse without
 * bound: (1) the message size is checked against the limits; (2) scan() walks the raw bytes
 * once, iteratively, checking that they form exactly one msgpack object, that nesting stays
 * within BR_PROTO_MAX_DEPTH and that every container's declared count fits in the bytes that
 * remain (each element takes at least one byte), so msgpack-c's later allocations are at
 * most proportional to the message size; (3) msgpack-c unpacks it (zero-copy strings into
 * the caller's buffer) and the typed readers below check each known field's type and
 * range, copying what they keep. Every failure names the field.
 *
 * Encoding writes through a msgpack_packer whose sink is a struct br_buf.
 */
#include "proto/proto.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest container nesting a message may use (ours use at most 3). */
#define BR_PROTO_MAX_DEPTH 16

static int buf_write(void *data, const char *p, size_t n)
{
    return br_buf_append(data, p, n) == BR_OK ? 0 : -1;
}

/* ---- limits, defaults, names ----------------------------------------------------------- */

void br_proto_limits_default(struct br_proto_limits *lim)
{
    lim->max_msg_bytes = (size_t)16 << 20;
    lim->max_id_bytes = 128;
    lim->max_prompt_bytes = (size_t)1 << 20;
    lim->max_tokens_in = 131072;
    lim->max_new_tokens = 65536;
    lim->max_stop = 16;
    lim->max_stop_bytes = 256;
    lim->max_stop_tokens = 64;
    lim->max_logit_bias = 1024;
    lim->max_messages = 1024;
    lim->max_template_bytes = (size_t)64 << 10;
    lim->vocab_size = 0;
}

void br_req_sampling_default(struct br_req_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 0.0f; /* greedy: the same defaults as the CLI (PROTOCOL.md) */
    s->top_k = 40;
    s->top_p = 0.95f;
    s->min_p = 0.05f;
    s->repeat_penalty = 1.0f;
    s->repeat_last_n = 64;
}

void br_req_init(struct br_req *r)
{
    memset(r, 0, sizeof *r);
    r->version = BR_PROTO_VERSION;
    r->max_tokens = 256;
    r->add_bos = true;
    br_req_sampling_default(&r->sampling);
}

void br_req_free(struct br_req *r)
{
    if (!r) return;
    free(r->id);
    free(r->prompt);
    free(r->tokens);
    for (uint32_t i = 0; r->messages && i < r->n_messages; i++) free(r->messages[i].content);
    free(r->messages);
    free(r->chat_template);
    for (uint32_t i = 0; r->sampling.stop && i < r->sampling.n_stop; i++) free(r->sampling.stop[i]);
    free(r->sampling.stop);
    free(r->sampling.stop_len);
    free(r->sampling.stop_tokens);
    free(r->sampling.logit_bias);
    br_req_init(r);
}

void br_resp_free(struct br_resp *r)
{
    if (!r) return;
    free(r->id);
    free(r->text);
    free(r->message);
    free(r->tokens);
    for (uint32_t i = 0; r->top && i < r->n_top; i++) free(r->top[i].text);
    free(r->top);
    for (uint32_t i = 0; r->kv && i < r->n_kv; i++) {
        free((char *)r->kv[i].key);
        free((char *)r->kv[i].s);
    }
    free(r->kv);
    memset(r, 0, sizeof *r);
}

#define NAME_ENTRY(name, wire) [name] = wire,
static const char *const req_names[] = {BR_REQ_TYPE_LIST(NAME_ENTRY)};
static const char *const resp_names[] = {BR_RESP_TYPE_LIST(NAME_ENTRY)};
static const char *const finish_names[] = {BR_FINISH_LIST(NAME_ENTRY)};
static const char *const code_names[] = {BR_PROTO_CODE_LIST(NAME_ENTRY)};
static const char *const health_names[] = {BR_HEALTH_LIST(NAME_ENTRY)};
static const char *const role_names[] = {BR_ROLE_LIST(NAME_ENTRY)};
#undef NAME_ENTRY
#define N_NAMES(table) ((int)(sizeof(table) / sizeof(table)[0]))

#define NAME_OF(table, v)                                                                          \
    ((unsigned)(v) < sizeof(table) / sizeof(table[0]) ? table[(unsigned)(v)] : "?")

const char *br_proto_req_type_name(enum br_req_type t)
{
    return NAME_OF(req_names, t);
}
const char *br_proto_resp_type_name(enum br_resp_type t)
{
    return NAME_OF(resp_names, t);
}
const char *br_proto_finish_name(enum br_finish f)
{
    return NAME_OF(finish_names, f);
}
const char *br_proto_code_name(enum br_proto_code c)
{
    return NAME_OF(code_names, c);
}
const char *br_proto_health_name(enum br_health_state s)
{
    return NAME_OF(health_names, s);
}
const char *br_proto_role_name(enum br_chat_role r)
{
    return NAME_OF(role_names, r);
}

int br_proto_code_status(enum br_proto_code c)
{
    switch (c) {
    case BR_PROTO_BAD_REQUEST:
        return BR_E_PROTOCOL;
    case BR_PROTO_TOO_LONG:
        return BR_E_TOO_LONG;
    case BR_PROTO_BUSY:
        return BR_E_BUSY;
    case BR_PROTO_CANCELLED:
        return BR_E_CANCELLED;
    case BR_PROTO_UNAVAILABLE:
        return BR_E_UNAVAILABLE;
    case BR_PROTO_INTERNAL:
        return BR_E_INTERNAL;
    case BR_PROTO_DUPLICATE_ID:
        return BR_E_DUPLICATE;
    }
    return BR_E_INTERNAL;
}

enum br_proto_code br_proto_status_code(int status)
{
    switch (status) {
    case BR_E_PROTOCOL:
    case BR_E_INVALID:
    case BR_E_RANGE:
    case BR_E_FORMAT:
    case BR_E_UNSUPPORTED:
        return BR_PROTO_BAD_REQUEST;
    case BR_E_TOO_LONG:
        return BR_PROTO_TOO_LONG;
    case BR_E_BUSY:
    case BR_E_NOMEM:
        return BR_PROTO_BUSY;
    case BR_E_CANCELLED:
        return BR_PROTO_CANCELLED;
    case BR_E_DUPLICATE:
        return BR_PROTO_DUPLICATE_ID;
    case BR_E_UNAVAILABLE:
    case BR_E_TIMEOUT:
        return BR_PROTO_UNAVAILABLE;
    default:
        return BR_PROTO_INTERNAL;
    }
}

/* Index of s (n bytes) in table, or -1. */
static int lookup(const char *const *table, int count, const char *s, size_t n)
{
    for (int i = 0; i < count; i++)
        if (strlen(table[i]) == n && memcmp(table[i], s, n) == 0) return i;
    return -1;
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

/* The character starting at s[0] (n >= 1 bytes available): its length k > 0 when valid,
 * 0 when s[0] starts no valid character, -1 when the bytes so far are a valid but
 * unfinished prefix. Rejects overlongs, surrogates and code points above U+10FFFF. */
static int utf8_next(const uint8_t *s, size_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;
    int k;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        k = 2;
    else if (c == 0xE0)
        k = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC)
        k = 3;
    else if (c == 0xED)
        k = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF)
        k = 3;
    else if (c == 0xF0)
        k = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        k = 4;
    else if (c == 0xF4)
        k = 4, hi = 0x8F;
    else
        return 0;
    for (int i = 1; i < k; i++) {
        if ((size_t)i >= n) return -1;
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
    }
    return k;
}

size_t br_proto_utf8_complete(const char *s, size_t len)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        int k = utf8_next(u + i, len - i);
        if (k < 0) return i;
        i += k ? (size_t)k : 1;
    }
    return len;
}

bool br_proto_utf8_valid(const char *s, size_t len)
{
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < len;) {
        int k = utf8_next(u + i, len - i);
        if (k <= 0) return false;
        i += (size_t)k;
    }
    return true;
}

/* ---- pre-scan --------------------------------------------------------------------------- */

static uint64_t rd_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Layout of the type bytes 0xc0..0xdf: bytes of the big-endian length field after the type
 * byte (-1: a byte msgpack never uses), fixed payload bytes, and what the length field
 * counts (0: payload bytes, 1: array items, 2: map pairs). */
struct scan_type {
    int8_t lenb;
    uint8_t body;
    uint8_t counts;
};

/* clang-format off */
static const struct scan_type scan_types[32] = {
    {0, 0, 0},  {-1, 0, 0}, {0, 0, 0},  {0, 0, 0},  /* nil, (unused), false, true */
    {1, 0, 0},  {2, 0, 0},  {4, 0, 0},              /* bin 8/16/32 */
    {1, 1, 0},  {2, 1, 0},  {4, 1, 0},              /* ext 8/16/32: +1 type byte */
    {0, 4, 0},  {0, 8, 0},                          /* float 32/64 */
    {0, 1, 0},  {0, 2, 0},  {0, 4, 0},  {0, 8, 0},  /* uint 8..64 */
    {0, 1, 0},  {0, 2, 0},  {0, 4, 0},  {0, 8, 0},  /* int 8..64 */
    {0, 2, 0},  {0, 3, 0},  {0, 5, 0},  {0, 9, 0},  {0, 17, 0}, /* fixext 1..16 */
    {1, 0, 0},  {2, 0, 0},  {4, 0, 0},              /* str 8/16/32 */
    {2, 0, 1},  {4, 0, 1},                          /* array 16/32 */
    {2, 0, 2},  {4, 0, 2},                          /* map 16/32 */
};
/* clang-format on */

/* Checks that p[0..len) is exactly one msgpack object within the depth limit and with
 * container counts that fit in the remaining bytes. */
static int scan(const uint8_t *p, size_t len, struct br_err *err)
{
    uint64_t left[BR_PROTO_MAX_DEPTH + 1]; /* items still to read per open container */
    int depth = 0;
    size_t pos = 0;
    left[0] = 1;
    while (depth >= 0) {
        if (left[depth] == 0) {
            depth--;
            continue;
        }
        left[depth]--;
        if (pos >= len)
            return br_err_set(err, BR_E_PROTOCOL,
                              "message: not valid msgpack (truncated at byte %zu)", pos);
        uint8_t c = p[pos];
        size_t head = 1;    /* bytes of the header, type byte included */
        uint64_t body = 0;  /* payload bytes after the header */
        uint64_t items = 0; /* child objects of a container */
        int lenb = 0;       /* bytes of a big-endian length field after the type byte */
        int counts = 0;     /* the length field counts: 0 payload bytes, 1 items, 2 pairs */
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
        } else if (c >= 0x80 && c <= 0x8f) {
            items = 2u * (c & 0x0fu);
        } else if (c >= 0x90 && c <= 0x9f) {
            items = c & 0x0fu;
        } else if (c >= 0xa0 && c <= 0xbf) {
            body = c & 0x1fu;
        } else {
            const struct scan_type *t = &scan_types[c - 0xc0];
            if (t->lenb < 0)
                return br_err_set(err, BR_E_PROTOCOL,
                                  "message: not valid msgpack (byte 0x%02x at offset %zu)", c, pos);
            lenb = t->lenb;
            body = t->body;
            counts = t->counts;
        }
        if (lenb) {
            if (len - pos < 1 + (size_t)lenb)
                return br_err_set(err, BR_E_PROTOCOL,
                                  "message: not valid msgpack (truncated at byte %zu)", pos);
            uint64_t n = rd_be(p + pos + 1, lenb);
            head += (size_t)lenb;
            if (counts == 1)
                items = n;
            else if (counts == 2)
                items = 2 * n;
            else
                body += n;
        }
        if (len - pos < head || body > len - pos - head)
            return br_err_set(err, BR_E_PROTOCOL,
                              "message: not valid msgpack (truncated at byte %zu)", pos);
        pos += head + (size_t)body;
        if (items) {
            if (items > len - pos)
                return br_err_set(err, BR_E_PROTOCOL,
                                  "message: container at byte %zu declares %" PRIu64
                                  " items but only %zu bytes follow",
                                  pos - head, items, len - pos);
            if (depth + 1 > BR_PROTO_MAX_DEPTH)
                return br_err_set(err, BR_E_PROTOCOL, "message: nesting deeper than %d levels",
                                  BR_PROTO_MAX_DEPTH);
            left[++depth] = items;
        }
    }
    if (pos != len)
        return br_err_set(err, BR_E_PROTOCOL, "message: %zu trailing bytes after the map",
                          len - pos);
    return BR_OK;
}

static const char *type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "float";
    case MSGPACK_OBJECT_STR:
        return "string";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_BIN:
        return "binary";
    case MSGPACK_OBJECT_EXT:
        return "ext";
    }
    return "?";
}

/* Size check, scan, unpack; the root must be a map. On success *u holds the objects (to be
 * destroyed by the caller, also on failure). */
static int unpack_map(const void *buf, size_t len, size_t max_bytes, msgpack_unpacked *u,
                      struct br_err *err)
{
    if (!buf || len == 0) return br_err_set(err, BR_E_PROTOCOL, "message: empty");
    if (len > max_bytes)
        return br_err_set(err, BR_E_PROTOCOL, "message: %zu bytes exceeds the limit %zu", len,
                          max_bytes);
    int rc = scan(buf, len, err);
    if (rc) return rc;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(u, buf, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return br_err_set(err, BR_E_NOMEM, "message: out of memory while unpacking");
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len)
        return br_err_set(err, BR_E_PROTOCOL, "message: not valid msgpack");
    if (u->data.type != MSGPACK_OBJECT_MAP)
        return br_err_set(err, BR_E_PROTOCOL, "message: expected a map, got %s",
                          type_name(&u->data));
    return BR_OK;
}

/* ---- typed field readers ----------------------------------------------------------------- */

/* The value of key in map m, or NULL when absent. A nil value counts as absent. */
static const msgpack_object *field(const msgpack_object *m, const char *key)
{
    size_t kn = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kn &&
            memcmp(k->via.str.ptr, key, kn) == 0) {
            const msgpack_object *v = &m->via.map.ptr[i].val;
            return v->type == MSGPACK_OBJECT_NIL ? NULL : v;
        }
    }
    return NULL;
}

/* Copies a string object (already type-checked) into a fresh NUL-terminated buffer. */
static int dup_str(const msgpack_object *o, char **out, size_t *out_len, const char *name,
                   struct br_err *err)
{
    size_t n = o->via.str.size;
    char *s = malloc(n + 1);
    if (!s) return br_err_set(err, BR_E_NOMEM, "%s: out of memory", name);
    if (n) memcpy(s, o->via.str.ptr, n);
    s[n] = '\0';
    *out = s;
    if (out_len) *out_len = n;
    return BR_OK;
}

/* A string object of minlen..maxlen bytes of valid UTF-8, copied into *out. */
static int read_str(const msgpack_object *o, size_t minlen, size_t maxlen, char **out,
                    size_t *out_len, const char *name, struct br_err *err)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return br_err_set(err, BR_E_PROTOCOL, "%s: must be a string, got %s", name, type_name(o));
    size_t n = o->via.str.size;
    if (n > maxlen)
        return br_err_set(err, BR_E_PROTOCOL, "%s: %zu bytes exceeds the limit %zu", name, n,
                          maxlen);
    if (n < minlen) return br_err_set(err, BR_E_PROTOCOL, "%s: must not be empty", name);
    if (!br_proto_utf8_valid(o->via.str.ptr, n))
        return br_err_set(err, BR_E_PROTOCOL, "%s: not valid UTF-8", name);
    return dup_str(o, out, out_len, name, err);
}

/* An integer object in [lo, hi]. Floats are refused, even integral ones. */
static int read_int(const msgpack_object *o, int64_t lo, int64_t hi, int64_t *out, const char *name,
                    struct br_err *err)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 <= (uint64_t)INT64_MAX && (int64_t)o->via.u64 >= lo &&
            (int64_t)o->via.u64 <= hi) {
            *out = (int64_t)o->via.u64;
            return BR_OK;
        }
        return br_err_set(err, BR_E_PROTOCOL,
                          "%s: must be an integer in [%" PRId64 ", %" PRId64 "], got %" PRIu64,
                          name, lo, hi, o->via.u64);
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        if (o->via.i64 >= lo && o->via.i64 <= hi) {
            *out = o->via.i64;
            return BR_OK;
        }
        return br_err_set(err, BR_E_PROTOCOL,
                          "%s: must be an integer in [%" PRId64 ", %" PRId64 "], got %" PRId64,
                          name, lo, hi, o->via.i64);
    }
    return br_err_set(err, BR_E_PROTOCOL,
                      "%s: must be an integer in [%" PRId64 ", %" PRId64 "], got %s", name, lo, hi,
                      type_name(o));
}

/* A number (integer or float) that is finite and in [lo, hi]. */
static int read_num(const msgpack_object *o, double lo, double hi, double *out, const char *name,
                    struct br_err *err)
{
    double v = 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        v = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        v = (double)o->via.i64;
    else if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        v = o->via.f64;
    else
        return br_err_set(err, BR_E_PROTOCOL, "%s: must be a number, got %s", name, type_name(o));
    if (!(v >= lo && v <= hi)) /* also catches NaN */
        return br_err_set(err, BR_E_PROTOCOL, "%s: must be a number in [%g, %g], got %g", name, lo,
                          hi, v);
    *out = v;
    return BR_OK;
}

static int read_bool(const msgpack_object *o, bool *out, const char *name, struct br_err *err)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return br_err_set(err, BR_E_PROTOCOL, "%s: must be a bool, got %s", name, type_name(o));
    *out = o->via.boolean;
    return BR_OK;
}

/* Optional-field wrappers: absent (or nil) leaves *out untouched. */
static int opt_bool(const msgpack_object *m, const char *key, bool *out, struct br_err *err)
{
    const msgpack_object *o = field(m, key);
    return o ? read_bool(o, out, key, err) : BR_OK;
}

static int opt_float(const msgpack_object *m, const char *key, double lo, double hi, float *out,
                     struct br_err *err)
{
    const msgpack_object *o = field(m, key);
    double v = 0;
    if (!o) return BR_OK;
    int rc = read_num(o, lo, hi, &v, key, err);
    if (rc == BR_OK) *out = (float)v;
    return rc;
}

static int opt_i32(const msgpack_object *m, const char *key, int64_t lo, int64_t hi, int32_t *out,
                   struct br_err *err)
{
    const msgpack_object *o = field(m, key);
    int64_t v = 0;
    if (!o) return BR_OK;
    int rc = read_int(o, lo, hi, &v, key, err);
    if (rc == BR_OK) *out = (int32_t)v;
    return rc;
}

static int64_t token_max(const struct br_proto_limits *lim)
{
    return lim->vocab_size > 0 ? (int64_t)lim->vocab_size - 1 : INT32_MAX;
}

/* An array of token ids of at most max entries, copied into *out (NULL when empty). */
static int read_tokens(const msgpack_object *o, uint32_t minn, uint32_t max, int64_t id_max,
                       int32_t **out, uint32_t *n_out, const char *name, struct br_err *err)
{
    char sub[64];
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return br_err_set(err, BR_E_PROTOCOL, "%s: must be an array of integers, got %s", name,
                          type_name(o));
    uint32_t n = o->via.array.size;
    if (n > max)
        return br_err_set(err, BR_E_PROTOCOL, "%s: %" PRIu32 " entries exceeds the limit %" PRIu32,
                          name, n, max);
    if (n < minn) return br_err_set(err, BR_E_PROTOCOL, "%s: must not be empty", name);
    int32_t *t = NULL;
    if (n) {
        t = malloc((size_t)n * sizeof *t);
        if (!t) return br_err_set(err, BR_E_NOMEM, "%s: out of memory", name);
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t v = 0;
        snprintf(sub, sizeof sub, "%s[%" PRIu32 "]", name, i);
        int rc = read_int(&o->via.array.ptr[i], 0, id_max, &v, sub, err);
        if (rc) {
            free(t);
            return rc;
        }
        t[i] = (int32_t)v;
    }
    *out = t;
    *n_out = n;
    return BR_OK;
}

/* ---- request decoding -------------------------------------------------------------------- */

static int bad(struct br_err *err, const char *fmt, const char *name)
{
    return br_err_set(err, BR_E_PROTOCOL, fmt, name);
}

static int oom(struct br_err *err, const char *name)
{
    return br_err_set(err, BR_E_NOMEM, "%s: out of memory", name);
}

static int read_stop(const msgpack_object *m, const struct br_proto_limits *lim,
                     struct br_req_sampling *s, struct br_err *err)
{
    const msgpack_object *o = field(m, "stop");
    char sub[32];
    if (!o) return BR_OK;
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return br_err_set(err, BR_E_PROTOCOL, "stop: must be an array of strings, got %s",
                          type_name(o));
    uint32_t n = o->via.array.size;
    if (n > lim->max_stop)
        return br_err_set(err, BR_E_PROTOCOL,
                          "stop: %" PRIu32 " strings exceeds the limit %" PRIu32, n, lim->max_stop);
    if (n == 0) return BR_OK;
    s->stop = calloc(n, sizeof *s->stop);
    s->stop_len = calloc(n, sizeof *s->stop_len);
    if (!s->stop || !s->stop_len) return oom(err, "stop");
    for (uint32_t i = 0; i < n; i++) {
        snprintf(sub, sizeof sub, "stop[%" PRIu32 "]", i);
        int rc = read_str(&o->via.array.ptr[i], 1, lim->max_stop_bytes, &s->stop[i],
                          &s->stop_len[i], sub, err);
        if (rc) return rc;
        s->n_stop = i + 1;
    }
    return BR_OK;
}

static int read_bias_value(const msgpack_object *o, float *out, const char *name,
                           struct br_err *err)
{
    if ((o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64) &&
        isinf(o->via.f64) && o->via.f64 < 0) {
        *out = -INFINITY;
        return BR_OK;
    }
    double v = 0;
    int rc = read_num(o, -100.0, 100.0, &v, name, err);
    if (rc == BR_OK) *out = (float)v;
    return rc;
}

/* logit_bias: {id: bias} (id an integer or a decimal string) or [[id, bias], ...]. */
static int read_logit_bias(const msgpack_object *m, const struct br_proto_limits *lim,
                           struct br_req_sampling *s, struct br_err *err)
{
    const msgpack_object *o = field(m, "logit_bias");
    char sub[48];
    if (!o) return BR_OK;
    bool is_map = o->type == MSGPACK_OBJECT_MAP;
    if (!is_map && o->type != MSGPACK_OBJECT_ARRAY)
        return br_err_set(err, BR_E_PROTOCOL,
                          "logit_bias: must be a map or an array of [id, bias], got %s",
                          type_name(o));
    uint32_t n = is_map ? o->via.map.size : o->via.array.size;
    if (n > lim->max_logit_bias)
        return br_err_set(err, BR_E_PROTOCOL,
                          "logit_bias: %" PRIu32 " entries exceeds the limit %" PRIu32, n,
                          lim->max_logit_bias);
    if (n == 0) return BR_OK;
    s->logit_bias = calloc(n, sizeof *s->logit_bias);
    if (!s->logit_bias) return oom(err, "logit_bias");
    int64_t id_max = token_max(lim);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k, *v;
        if (is_map) {
            k = &o->via.map.ptr[i].key;
            v = &o->via.map.ptr[i].val;
        } else {
            const msgpack_object *e = &o->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2)
                return br_err_set(err, BR_E_PROTOCOL,
                                  "logit_bias[%" PRIu32 "]: must be an array [id, bias]", i);
            k = &e->via.array.ptr[0];
            v = &e->via.array.ptr[1];
        }
        int64_t id = 0;
        snprintf(sub, sizeof sub, "logit_bias[%" PRIu32 "].id", i);
        if (k->type == MSGPACK_OBJECT_STR) {
            /* JSON-born clients can only write string keys. */
            char tmp[16];
            size_t kn = k->via.str.size;
            char *end = NULL;
            if (kn == 0 || kn >= sizeof tmp)
                return br_err_set(err, BR_E_PROTOCOL, "%s: not a token id", sub);
            memcpy(tmp, k->via.str.ptr, kn);
            tmp[kn] = '\0';
            errno = 0;
            long long ll = strtoll(tmp, &end, 10);
            if (errno || *end || tmp[0] < '0' || tmp[0] > '9' || ll > id_max)
                return br_err_set(err, BR_E_PROTOCOL, "%s: not a token id in [0, %" PRId64 "]", sub,
                                  id_max);
            id = ll;
        } else {
            int rc = read_int(k, 0, id_max, &id, sub, err);
            if (rc) return rc;
        }
        snprintf(sub, sizeof sub, "logit_bias[%" PRIu32 "].bias", i);
        int rc = read_bias_value(v, &s->logit_bias[i].bias, sub, err);
        if (rc) return rc;
        s->logit_bias[i].token = (int32_t)id;
        s->n_logit_bias = i + 1;
    }
    return BR_OK;
}

static int read_sampling(const msgpack_object *m, const struct br_proto_limits *lim,
                         struct br_req_sampling *s, struct br_err *err)
{
    int rc;
    if ((rc = opt_float(m, "temperature", 0.0, 100.0, &s->temperature, err)) ||
        (rc = opt_i32(m, "top_k", 0, 1 << 20, &s->top_k, err)) ||
        (rc = opt_float(m, "top_p", 0.0, 1.0, &s->top_p, err)) ||
        (rc = opt_float(m, "min_p", 0.0, 1.0, &s->min_p, err)) ||
        (rc = opt_float(m, "repeat_penalty", 0.0, 10.0, &s->repeat_penalty, err)) ||
        (rc = opt_i32(m, "repeat_last_n", 0, 1 << 20, &s->repeat_last_n, err)) ||
        (rc = opt_float(m, "presence_penalty", -2.0, 2.0, &s->presence_penalty, err)) ||
        (rc = opt_float(m, "frequency_penalty", -2.0, 2.0, &s->frequency_penalty, err)))
        return rc;
    if (s->repeat_penalty <= 0.0f)
        return bad(err, "%s: must be a number in (0, 10]", "repeat_penalty");
    const msgpack_object *o = field(m, "seed");
    if (o) {
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            s->has_seed = true;
            s->seed = o->via.u64;
        } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 == -1) {
            s->has_seed = false;
        } else {
            return br_err_set(
                err, BR_E_PROTOCOL, "seed: must be an integer in [0, 2^64-1] or -1, got %s",
                o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? "a negative integer" : type_name(o));
        }
    }
    if ((rc = read_stop(m, lim, s, err))) return rc;
    o = field(m, "stop_tokens");
    if (o && (rc = read_tokens(o, 0, lim->max_stop_tokens, token_max(lim), &s->stop_tokens,
                               &s->n_stop_tokens, "stop_tokens", err)))
        return rc;
    return read_logit_bias(m, lim, s, err);
}

static int read_messages(const msgpack_object *o, const struct br_proto_limits *lim,
                         struct br_req *r, struct br_err *err)
{
    char sub[48];
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return br_err_set(err, BR_E_PROTOCOL,
                          "messages: must be an array of {role, content} maps, got %s",
                          type_name(o));
    uint32_t n = o->via.array.size;
    if (n > lim->max_messages)
        return br_err_set(err, BR_E_PROTOCOL,
                          "messages: %" PRIu32 " entries exceeds the limit %" PRIu32, n,
                          lim->max_messages);
    if (n == 0) return bad(err, "%s: must not be empty", "messages");
    r->messages = calloc(n, sizeof *r->messages);
    if (!r->messages) return oom(err, "messages");
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_MAP)
            return br_err_set(err, BR_E_PROTOCOL, "messages[%" PRIu32 "]: must be a map, got %s", i,
                              type_name(e));
        const msgpack_object *role = field(e, "role"), *content = field(e, "content");
        if (!role) return br_err_set(err, BR_E_PROTOCOL, "messages[%" PRIu32 "].role: missing", i);
        if (role->type != MSGPACK_OBJECT_STR)
            return br_err_set(err, BR_E_PROTOCOL,
                              "messages[%" PRIu32 "].role: must be a string, got %s", i,
                              type_name(role));
        int ri = lookup(role_names, N_NAMES(role_names), role->via.str.ptr, role->via.str.size);
        if (ri < 0)
            return br_err_set(
                err, BR_E_PROTOCOL,
                "messages[%" PRIu32 "].role: must be one of system, user, assistant, tool", i);
        if (!content)
            return br_err_set(err, BR_E_PROTOCOL, "messages[%" PRIu32 "].content: missing", i);
        snprintf(sub, sizeof sub, "messages[%" PRIu32 "].content", i);
        size_t room = lim->max_prompt_bytes - total;
        int rc = read_str(content, 0, room, &r->messages[i].content, &r->messages[i].content_len,
                          sub, err);
        if (rc) {
            if (content->type == MSGPACK_OBJECT_STR && content->via.str.size > room)
                br_err_set(err, BR_E_PROTOCOL,
                           "messages: total content exceeds the limit %zu bytes",
                           lim->max_prompt_bytes);
            return rc;
        }
        r->messages[i].role = (enum br_chat_role)ri;
        total += r->messages[i].content_len;
        r->n_messages = i + 1;
    }
    return BR_OK;
}

static int read_generate(const msgpack_object *m, const struct br_proto_limits *lim,
                         struct br_req *r, struct br_err *err)
{
    const msgpack_object *prompt = field(m, "prompt"), *tokens = field(m, "tokens"),
                         *messages = field(m, "messages"), *o;
    int given = (prompt != NULL) + (tokens != NULL) + (messages != NULL), rc;
    if (given == 0) return bad(err, "%s: one of prompt, tokens, messages is required", "prompt");
    if (given > 1)
        return bad(err, "%s: only one of prompt, tokens, messages may be given", "prompt");
    if (prompt) {
        r->input = BR_INPUT_PROMPT;
        rc = read_str(prompt, 0, lim->max_prompt_bytes, &r->prompt, &r->prompt_len, "prompt", err);
    } else if (tokens) {
        r->input = BR_INPUT_TOKENS;
        r->add_bos = false;
        rc = read_tokens(tokens, 1, lim->max_tokens_in, token_max(lim), &r->tokens, &r->n_tokens,
                         "tokens", err);
    } else {
        r->input = BR_INPUT_MESSAGES;
        rc = read_messages(messages, lim, r, err);
    }
    if (rc) return rc;
    if ((rc = opt_i32(m, "max_tokens", 1, lim->max_new_tokens, &r->max_tokens, err)) ||
        (rc = opt_bool(m, "stream", &r->stream, err)) ||
        (rc = opt_bool(m, "logprobs", &r->logprobs, err)) ||
        (rc = opt_i32(m, "top_logprobs", 0, BR_REQ_MAX_TOP_LOGPROBS, &r->top_logprobs, err)) ||
        (rc = opt_bool(m, "add_bos", &r->add_bos, err)))
        return rc;
    if (r->top_logprobs > 0 && !r->logprobs)
        return bad(err, "%s: alternatives need logprobs true", "top_logprobs");
    if ((o = field(m, "chat_template")) &&
        (rc = read_str(o, 0, lim->max_template_bytes, &r->chat_template, &r->chat_template_len,
                       "chat_template", err)))
        return rc;
    return read_sampling(m, lim, &r->sampling, err);
}

/* ---- duplicate keys ------------------------------------------------------------------------ */

/* Orders map keys for the duplicate check: by type, then strings by length and bytes,
 * integers by value; other key types compare equal only to themselves (never flagged). */
static int key_cmp(const void *a, const void *b)
{
    const msgpack_object *x = *(const msgpack_object *const *)a;
    const msgpack_object *y = *(const msgpack_object *const *)b;
    if (x->type != y->type) return x->type < y->type ? -1 : 1;
    switch (x->type) {
    case MSGPACK_OBJECT_STR:
        if (x->via.str.size != y->via.str.size) return x->via.str.size < y->via.str.size ? -1 : 1;
        /* an empty string's pointer may be NULL, which memcmp must not get */
        return x->via.str.size ? memcmp(x->via.str.ptr, y->via.str.ptr, x->via.str.size) : 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return x->via.u64 < y->via.u64 ? -1 : x->via.u64 > y->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return x->via.i64 < y->via.i64 ? -1 : x->via.i64 > y->via.i64;
    default:
        return x < y ? -1 : x > y; /* by address: distinct */
    }
}

/* A map key that appears twice anywhere in o (maps inside arrays and maps included) is a
 * bad request naming the key: a reader that took the first value would let the second
 * pass unchecked. Sorting keeps it O(n log n) for the largest map the limits admit. *dup_id:
 * the duplicate is the root's `id`. */
static int check_dup_keys(const msgpack_object *o, int depth, bool *dup_id, struct br_err *err)
{
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            int rc = check_dup_keys(&o->via.array.ptr[i], depth + 1, dup_id, err);
            if (rc) return rc;
        }
        return BR_OK;
    }
    if (o->type != MSGPACK_OBJECT_MAP) return BR_OK;
    uint32_t n = o->via.map.size;
    if (n >= 2) {
        const msgpack_object **keys = malloc(n * sizeof *keys);
        if (!keys) return br_err_set(err, BR_E_NOMEM, "message: out of memory");
        for (uint32_t i = 0; i < n; i++) keys[i] = &o->via.map.ptr[i].key;
        qsort(keys, n, sizeof *keys, key_cmp);
        const msgpack_object *dup = NULL;
        for (uint32_t i = 1; i < n && !dup; i++)
            if ((keys[i]->type == MSGPACK_OBJECT_STR ||
                 keys[i]->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                 keys[i]->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) &&
                key_cmp(&keys[i - 1], &keys[i]) == 0)
                dup = keys[i];
        free(keys);
        if (dup && dup->type == MSGPACK_OBJECT_STR) {
            *dup_id |= depth == 0 && dup->via.str.size == 2 && !memcmp(dup->via.str.ptr, "id", 2);
            return br_err_set(err, BR_E_PROTOCOL,
                              "message: key '%.*s' appears more than once in a map; each key "
                              "must appear once",
                              (int)(dup->via.str.size < 64 ? dup->via.str.size : 64),
                              dup->via.str.ptr);
        }
        if (dup)
            return br_err_set(err, BR_E_PROTOCOL,
                              "message: key %lld appears more than once in a map; each key must "
                              "appear once",
                              dup->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                                  ? (long long)dup->via.u64
                                  : (long long)dup->via.i64);
    }
    for (uint32_t i = 0; i < n; i++) {
        int rc = check_dup_keys(&o->via.map.ptr[i].val, depth + 1, dup_id, err);
        if (rc) return rc;
    }
    return BR_OK;
}

int br_proto_decode_request(const void *buf, size_t len, const struct br_proto_limits *lim,
                            struct br_req *out, struct br_err *err)
{
    struct br_proto_limits dl;
    msgpack_unpacked u;
    const msgpack_object *o;
    int64_t v = 0;
    if (!lim) {
        br_proto_limits_default(&dl);
        lim = &dl;
    }
    br_req_init(out);
    out->version = 0;
    msgpack_unpacked_init(&u);
    int rc = unpack_map(buf, len, lim->max_msg_bytes, &u, err);
    if (rc) goto done;
    const msgpack_object *m = &u.data;

    /* id first, so that every later error can be addressed to the request. */
    if (!(o = field(m, "id"))) {
        rc = bad(err, "%s: missing", "id");
        goto done;
    }
    if ((rc = read_str(o, 1, lim->max_id_bytes, &out->id, &out->id_len, "id", err))) goto done;
    /* ids are matched and echoed as C strings, so an embedded NUL would answer the request
     * under a shorter id and make "a\0x" and "a\0y" the same request */
    if (memchr(out->id, '\0', out->id_len)) {
        free(out->id);
        out->id = NULL;
        out->id_len = 0;
        rc = bad(err, "%s: must not contain a NUL byte", "id");
        goto done;
    }
    {
        bool dup_id = false;
        if ((rc = check_dup_keys(m, 0, &dup_id, err))) {
            if (dup_id) { /* which of the two ids would the answer go to? neither */
                free(out->id);
                out->id = NULL;
                out->id_len = 0;
            }
            goto done;
        }
    }

    if (!(o = field(m, "type"))) {
        rc = bad(err, "%s: missing", "type");
        goto done;
    }
    if (o->type != MSGPACK_OBJECT_STR) {
        rc = br_err_set(err, BR_E_PROTOCOL, "type: must be a string, got %s", type_name(o));
        goto done;
    }
    int t = lookup(req_names + 1, N_NAMES(req_names) - 1, o->via.str.ptr, o->via.str.size);
    if (t < 0) {
        int n = o->via.str.size > 32 ? 32 : (int)o->via.str.size;
        bool printable = br_proto_utf8_valid(o->via.str.ptr, (size_t)n);
        rc = br_err_set(err, BR_E_PROTOCOL, "type: unknown request type \"%.*s\"",
                        printable ? n : 0, o->via.str.ptr);
        goto done;
    }
    if (!(o = field(m, "v"))) {
        rc = bad(err, "%s: missing (protocol version)", "v");
        goto done;
    }
    if ((rc = read_int(o, 0, INT32_MAX, &v, "v", err))) goto done;
    if (v != BR_PROTO_VERSION) {
        rc = br_err_set(err, BR_E_PROTOCOL,
                        "v: unsupported protocol version %" PRId64 " (this server speaks %d)", v,
                        BR_PROTO_VERSION);
        goto done;
    }
    out->version = (int32_t)v;
    out->type = (enum br_req_type)(t + 1);

    switch (out->type) {
    case BR_REQ_GENERATE:
        rc = read_generate(m, lim, out, err);
        break;
    case BR_REQ_TOKENIZE:
        if (!(o = field(m, "text"))) {
            rc = bad(err, "%s: missing", "text");
            break;
        }
        if ((rc = read_str(o, 0, lim->max_prompt_bytes, &out->prompt, &out->prompt_len, "text",
                           err)))
            break;
        rc = opt_bool(m, "add_bos", &out->add_bos, err);
        break;
    case BR_REQ_DETOKENIZE:
        if (!(o = field(m, "tokens"))) {
            rc = bad(err, "%s: missing", "tokens");
            break;
        }
        rc = read_tokens(o, 0, lim->max_tokens_in, token_max(lim), &out->tokens, &out->n_tokens,
                         "tokens", err);
        break;
    default:
        break; /* cancel, health, info, metrics, ping: id only */
    }
done:
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* ---- encoding helpers --------------------------------------------------------------------- */

struct enc {
    msgpack_packer pk;
    int fail; /* sticky: non-zero once any write failed */
};

static void enc_start(struct enc *e, struct br_buf *out)
{
    br_buf_reset(out);
    msgpack_packer_init(&e->pk, out, buf_write);
    e->fail = 0;
}

static void put_key(struct enc *e, const char *k)
{
    size_t n = strlen(k);
    e->fail |= msgpack_pack_str(&e->pk, n);
    e->fail |= msgpack_pack_str_body(&e->pk, k, n);
}

int br_proto_utf8_append(struct br_buf *out, const char *s, size_t len)
{
    const uint8_t *u = (const uint8_t *)s;
    int rc = BR_OK;
    for (size_t i = 0; i < len && !rc;) {
        int k = utf8_next(u + i, len - i);
        if (k > 0) {
            rc = br_buf_append(out, u + i, (size_t)k);
            i += (size_t)k;
        } else {
            rc = br_buf_append(out, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    return rc;
}

/* Writes s[0..n) as a msgpack string, replacing invalid UTF-8 with U+FFFD. */
static void put_text(struct enc *e, const char *s, size_t n)
{
    if (!s) n = 0;
    if (n == 0 || br_proto_utf8_valid(s, n)) {
        e->fail |= msgpack_pack_str(&e->pk, n);
        if (n) e->fail |= msgpack_pack_str_body(&e->pk, s, n);
        return;
    }
    const uint8_t *u = (const uint8_t *)s;
    size_t outn = 0;
    for (size_t i = 0; i < n;) {
        int k = utf8_next(u + i, n - i);
        if (k > 0)
            outn += (size_t)k, i += (size_t)k;
        else
            outn += 3, i++;
    }
    e->fail |= msgpack_pack_str(&e->pk, outn);
    for (size_t i = 0; i < n;) {
        int k = utf8_next(u + i, n - i);
        if (k > 0) {
            e->fail |= msgpack_pack_str_body(&e->pk, u + i, (size_t)k);
            i += (size_t)k;
        } else {
            e->fail |= msgpack_pack_str_body(&e->pk, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
}

static void put_cstr(struct enc *e, const char *s)
{
    put_text(e, s, s ? strlen(s) : 0);
}

static void put_kstr(struct enc *e, const char *k, const char *s)
{
    put_key(e, k);
    put_cstr(e, s);
}

static void put_kint(struct enc *e, const char *k, int64_t v)
{
    put_key(e, k);
    e->fail |= msgpack_pack_int64(&e->pk, v);
}

static void put_kdbl(struct enc *e, const char *k, double v)
{
    put_key(e, k);
    e->fail |= msgpack_pack_double(&e->pk, v);
}

static void put_kbool(struct enc *e, const char *k, bool v)
{
    put_key(e, k);
    e->fail |= v ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk);
}

static void put_tokens(struct enc *e, const char *k, const int32_t *t, uint32_t n)
{
    put_key(e, k);
    e->fail |= msgpack_pack_array(&e->pk, n);
    for (uint32_t i = 0; i < n; i++) e->fail |= msgpack_pack_int64(&e->pk, t[i]);
}

/* The common head of every message: map header (n entries in all), v, type, id. */
static void put_head(struct enc *e, size_t n, const char *type, const char *id)
{
    e->fail |= msgpack_pack_map(&e->pk, n);
    put_kint(e, "v", BR_PROTO_VERSION);
    put_kstr(e, "type", type);
    put_key(e, "id");
    if (id)
        put_cstr(e, id);
    else
        e->fail |= msgpack_pack_nil(&e->pk);
}

static int enc_end(struct enc *e)
{
    return e->fail ? BR_E_NOMEM : BR_OK;
}

/* ---- request encoding -------------------------------------------------------------------- */

int br_proto_encode_request(const struct br_req *r, struct br_buf *out)
{
    struct enc e;
    if (!r || !r->id || !r->id[0] || r->type <= BR_REQ_NONE || r->type > BR_REQ_PING)
        return BR_E_INVALID;
    enc_start(&e, out);
    const struct br_req_sampling *s = &r->sampling;
    size_t n = 3;
    switch (r->type) {
    case BR_REQ_GENERATE:
        if (r->input == BR_INPUT_NONE) return BR_E_INVALID;
        n += 1 + 4 + 8 + (r->chat_template != NULL) + (s->has_seed != 0) + (s->n_stop > 0) +
             (s->n_stop_tokens > 0) + (s->n_logit_bias > 0) + (r->top_logprobs > 0);
        put_head(&e, n, "generate", r->id);
        if (r->input == BR_INPUT_PROMPT) {
            put_key(&e, "prompt");
            put_text(&e, r->prompt, r->prompt_len);
        } else if (r->input == BR_INPUT_TOKENS) {
            put_tokens(&e, "tokens", r->tokens, r->n_tokens);
        } else {
            put_key(&e, "messages");
            e.fail |= msgpack_pack_array(&e.pk, r->n_messages);
            for (uint32_t i = 0; i < r->n_messages; i++) {
                e.fail |= msgpack_pack_map(&e.pk, 2);
                put_kstr(&e, "role", br_proto_role_name(r->messages[i].role));
                put_key(&e, "content");
                put_text(&e, r->messages[i].content, r->messages[i].content_len);
            }
        }
        put_kint(&e, "max_tokens", r->max_tokens);
        put_kbool(&e, "stream", r->stream);
        put_kbool(&e, "logprobs", r->logprobs);
        if (r->top_logprobs > 0) put_kint(&e, "top_logprobs", r->top_logprobs);
        put_kbool(&e, "add_bos", r->add_bos);
        put_kdbl(&e, "temperature", s->temperature);
        put_kint(&e, "top_k", s->top_k);
        put_kdbl(&e, "top_p", s->top_p);
        put_kdbl(&e, "min_p", s->min_p);
        put_kdbl(&e, "repeat_penalty", s->repeat_penalty);
        put_kint(&e, "repeat_last_n", s->repeat_last_n);
        put_kdbl(&e, "presence_penalty", s->presence_penalty);
        put_kdbl(&e, "frequency_penalty", s->frequency_penalty);
        if (r->chat_template) {
            put_key(&e, "chat_template");
            put_text(&e, r->chat_template, r->chat_template_len);
        }
        if (s->has_seed) {
            put_key(&e, "seed");
            e.fail |= msgpack_pack_uint64(&e.pk, s->seed);
        }
        if (s->n_stop) {
            put_key(&e, "stop");
            e.fail |= msgpack_pack_array(&e.pk, s->n_stop);
            for (uint32_t i = 0; i < s->n_stop; i++)
                put_text(&e, s->stop[i], s->stop_len ? s->stop_len[i] : strlen(s->stop[i]));
        }
        if (s->n_stop_tokens) put_tokens(&e, "stop_tokens", s->stop_tokens, s->n_stop_tokens);
        if (s->n_logit_bias) {
            put_key(&e, "logit_bias");
            e.fail |= msgpack_pack_array(&e.pk, s->n_logit_bias);
            for (uint32_t i = 0; i < s->n_logit_bias; i++) {
                e.fail |= msgpack_pack_array(&e.pk, 2);
                e.fail |= msgpack_pack_int64(&e.pk, s->logit_bias[i].token);
                e.fail |= msgpack_pack_double(&e.pk, s->logit_bias[i].bias);
            }
        }
        break;
    case BR_REQ_TOKENIZE:
        put_head(&e, n + 2, "tokenize", r->id);
        put_key(&e, "text");
        put_text(&e, r->prompt, r->prompt_len);
        put_kbool(&e, "add_bos", r->add_bos);
        break;
    case BR_REQ_DETOKENIZE:
        put_head(&e, n + 1, "detokenize", r->id);
        put_tokens(&e, "tokens", r->tokens, r->n_tokens);
        break;
    default:
        put_head(&e, n, br_proto_req_type_name(r->type), r->id);
        break;
    }
    return enc_end(&e);
}

/* ---- response encoding -------------------------------------------------------------------- */

static void put_kv_map(struct enc *e, const char *k, const struct br_kv *kv, size_t n)
{
    put_key(e, k);
    e->fail |= msgpack_pack_map(&e->pk, n);
    for (size_t i = 0; i < n; i++) {
        put_cstr(e, kv[i].key);
        switch (kv[i].kind) {
        case BR_KV_INT:
            e->fail |= msgpack_pack_int64(&e->pk, kv[i].i);
            break;
        case BR_KV_DOUBLE:
            e->fail |= msgpack_pack_double(&e->pk, kv[i].d);
            break;
        case BR_KV_BOOL:
            e->fail |= kv[i].i ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk);
            break;
        case BR_KV_STR:
            put_cstr(e, kv[i].s);
            break;
        }
    }
}

int br_proto_encode_response(const struct br_resp *r, struct br_buf *out)
{
    struct enc e;
    if (!r || r->type <= BR_RESP_NONE || r->type > BR_RESP_PONG) return BR_E_INVALID;
    if (!r->id && r->type != BR_RESP_ERROR) return BR_E_INVALID;
    enc_start(&e, out);
    const char *name = br_proto_resp_type_name(r->type);
    switch (r->type) {
    case BR_RESP_TOKEN: {
        uint32_t n_top = r->has_logprob && r->top ? r->n_top : 0;
        if (n_top > BR_REQ_MAX_TOP_LOGPROBS) return BR_E_INVALID;
        put_head(&e, 6 + (r->has_logprob ? 1 : 0) + (n_top > 0), name, r->id);
        put_kint(&e, "index", r->index);
        put_kint(&e, "token", r->token);
        put_key(&e, "text");
        put_text(&e, r->text, r->text_len);
        if (r->has_logprob) put_kdbl(&e, "logprob", r->logprob);
        if (n_top > 0) {
            put_key(&e, "top_logprobs");
            e.fail |= msgpack_pack_array(&e.pk, n_top);
            for (uint32_t i = 0; i < n_top; i++) {
                e.fail |= msgpack_pack_map(&e.pk, 3);
                put_kint(&e, "token", r->top[i].token);
                put_kdbl(&e, "logprob", r->top[i].logprob);
                put_key(&e, "text");
                put_text(&e, r->top[i].text, r->top[i].text_len);
            }
        }
        break;
    }
    case BR_RESP_DONE:
        put_head(&e, 6 + (r->text ? 1 : 0), name, r->id);
        put_kstr(&e, "finish_reason", br_proto_finish_name(r->finish_reason));
        put_key(&e, "usage");
        e.fail |= msgpack_pack_map(&e.pk, 2);
        put_kint(&e, "prompt_tokens", r->usage.prompt_tokens);
        put_kint(&e, "completion_tokens", r->usage.completion_tokens);
        put_key(&e, "timings");
        e.fail |= msgpack_pack_map(&e.pk, 4);
        put_kdbl(&e, "queue_ms", r->timings.queue_ms);
        put_kdbl(&e, "ttft_ms", r->timings.ttft_ms);
        put_kdbl(&e, "total_ms", r->timings.total_ms);
        put_kdbl(&e, "tokens_per_s", r->timings.tokens_per_s);
        if (r->text) {
            put_key(&e, "text");
            put_text(&e, r->text, r->text_len);
        }
        break;
    case BR_RESP_ERROR:
        put_head(&e, 5, name, r->id);
        put_kstr(&e, "code", br_proto_code_name(r->code));
        put_kstr(&e, "message", r->message ? r->message : "");
        break;
    case BR_RESP_TOKENIZE:
        put_head(&e, 4, name, r->id);
        put_tokens(&e, "tokens", r->tokens, r->n_tokens);
        break;
    case BR_RESP_DETOKENIZE:
        put_head(&e, 4, name, r->id);
        put_key(&e, "text");
        put_text(&e, r->text, r->text_len);
        break;
    case BR_RESP_HEALTH:
        put_head(&e, 4, name, r->id);
        put_kstr(&e, "state", br_proto_health_name(r->state));
        break;
    case BR_RESP_INFO:
    case BR_RESP_METRICS:
        put_head(&e, 4, name, r->id);
        put_kv_map(&e, name, r->kv, r->n_kv);
        break;
    default:
        put_head(&e, 3, name, r->id);
        break;
    }
    return enc_end(&e);
}

int br_proto_encode_token(struct br_buf *out, const char *id, uint32_t index, int32_t token,
                          const char *piece, size_t piece_len, const float *logprob)
{
    struct br_resp r = {.type = BR_RESP_TOKEN,
                        .id = (char *)id,
                        .index = index,
                        .token = token,
                        .text = (char *)piece,
                        .text_len = piece_len};
    if (logprob) r.has_logprob = true, r.logprob = *logprob;
    return br_proto_encode_response(&r, out);
}

int br_proto_encode_token_top(struct br_buf *out, const char *id, uint32_t index, int32_t token,
                              const char *piece, size_t piece_len, const float *logprob,
                              const struct br_resp_alt *top, uint32_t n_top)
{
    struct br_resp r = {.type = BR_RESP_TOKEN,
                        .id = (char *)id,
                        .index = index,
                        .token = token,
                        .text = (char *)piece,
                        .text_len = piece_len,
                        .top = (struct br_resp_alt *)top,
                        .n_top = n_top};
    if (logprob) r.has_logprob = true, r.logprob = *logprob;
    return br_proto_encode_response(&r, out);
}

int br_proto_encode_done(struct br_buf *out, const char *id, enum br_finish reason,
                         const struct br_usage *usage, const struct br_timings *timings,
                         const char *text, size_t text_len)
{
    struct br_resp r = {.type = BR_RESP_DONE,
                        .id = (char *)id,
                        .finish_reason = reason,
                        .text = (char *)text,
                        .text_len = text_len};
    if (usage) r.usage = *usage;
    if (timings) r.timings = *timings;
    return br_proto_encode_response(&r, out);
}

int br_proto_encode_error(struct br_buf *out, const char *id, enum br_proto_code code,
                          const char *message)
{
    struct br_resp r = {
        .type = BR_RESP_ERROR, .id = (char *)id, .code = code, .message = (char *)message};
    return br_proto_encode_response(&r, out);
}

int br_proto_encode_tokenize(struct br_buf *out, const char *id, const int32_t *tokens,
                             uint32_t n_tokens)
{
    struct br_resp r = {.type = BR_RESP_TOKENIZE,
                        .id = (char *)id,
                        .tokens = (int32_t *)tokens,
                        .n_tokens = n_tokens};
    return br_proto_encode_response(&r, out);
}

int br_proto_encode_detokenize(struct br_buf *out, const char *id, const char *text,
                               size_t text_len)
{
    struct br_resp r = {
        .type = BR_RESP_DETOKENIZE, .id = (char *)id, .text = (char *)text, .text_len = text_len};
    return br_proto_encode_response(&r, out);
}

int br_proto_encode_health(struct br_buf *out, const char *id, enum br_health_state state)
{
    struct br_resp r = {.type = BR_RESP_HEALTH, .id = (char *)id, .state = state};
    return br_proto_encode_response(&r, out);
}

int br_proto_encode_info(struct br_buf *out, const char *id, const struct br_kv *kv, size_t n)
{
    if (n > UINT32_MAX) return BR_E_INVALID;
    struct br_resp r = {
        .type = BR_RESP_INFO, .id = (char *)id, .kv = (struct br_kv *)kv, .n_kv = (uint32_t)n};
    return br_proto_encode_response(&r, out);
}

int br_proto_encode_metrics(struct br_buf *out, const char *id, const struct br_kv *kv, size_t n)
{
    if (n > UINT32_MAX) return BR_E_INVALID;
    struct br_resp r = {
        .type = BR_RESP_METRICS, .id = (char *)id, .kv = (struct br_kv *)kv, .n_kv = (uint32_t)n};
    return br_proto_encode_response(&r, out);
}

int br_proto_encode_pong(struct br_buf *out, const char *id)
{
    struct br_resp r = {.type = BR_RESP_PONG, .id = (char *)id};
    return br_proto_encode_response(&r, out);
}

/* ---- response decoding -------------------------------------------------------------------- */

static int req_field(const msgpack_object *m, const char *key, const msgpack_object **o,
                     struct br_err *err)
{
    *o = field(m, key);
    return *o ? BR_OK : bad(err, "%s: missing", key);
}

static int read_enum(const msgpack_object *m, const char *key, const char *const *table, int count,
                     int *out, struct br_err *err)
{
    const msgpack_object *o;
    int rc = req_field(m, key, &o, err);
    if (rc) return rc;
    if (o->type != MSGPACK_OBJECT_STR)
        return br_err_set(err, BR_E_PROTOCOL, "%s: must be a string, got %s", key, type_name(o));
    int i = lookup(table, count, o->via.str.ptr, o->via.str.size);
    if (i < 0) return bad(err, "%s: unknown value", key);
    *out = i;
    return BR_OK;
}

static int read_kdbl(const msgpack_object *m, const char *key, double *out, struct br_err *err)
{
    const msgpack_object *o;
    int rc = req_field(m, key, &o, err);
    return rc ? rc : read_num(o, -1e300, 1e300, out, key, err);
}

static int read_ku32(const msgpack_object *m, const char *key, uint32_t *out, struct br_err *err)
{
    const msgpack_object *o;
    int64_t v = 0;
    int rc = req_field(m, key, &o, err);
    if (!rc) rc = read_int(o, 0, UINT32_MAX, &v, key, err);
    if (!rc) *out = (uint32_t)v;
    return rc;
}

static int read_kv_map(const msgpack_object *m, const char *key, size_t maxlen, struct br_resp *r,
                       struct br_err *err)
{
    const msgpack_object *o;
    int rc = req_field(m, key, &o, err);
    if (rc) return rc;
    if (o->type != MSGPACK_OBJECT_MAP)
        return br_err_set(err, BR_E_PROTOCOL, "%s: must be a map, got %s", key, type_name(o));
    uint32_t n = o->via.map.size;
    if (n == 0) return BR_OK;
    r->kv = calloc(n, sizeof *r->kv);
    if (!r->kv) return oom(err, key);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        struct br_kv *kv = &r->kv[i];
        char *ks = NULL, *vs = NULL;
        rc = read_str(k, 1, 1024, &ks, NULL, key, err);
        if (rc) return rc;
        kv->key = ks;
        r->n_kv = i + 1;
        /* keys are C strings in struct br_kv: a NUL would cut them short */
        if (memchr(k->via.str.ptr, '\0', k->via.str.size))
            return br_err_set(err, BR_E_PROTOCOL, "%s: a key contains a NUL byte", key);
        switch (v->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            if (v->via.u64 > (uint64_t)INT64_MAX)
                return br_err_set(err, BR_E_PROTOCOL, "%s.%s: integer too large", key, ks);
            kv->kind = BR_KV_INT, kv->i = (int64_t)v->via.u64;
            break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            kv->kind = BR_KV_INT, kv->i = v->via.i64;
            break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            kv->kind = BR_KV_DOUBLE, kv->d = v->via.f64;
            break;
        case MSGPACK_OBJECT_BOOLEAN:
            kv->kind = BR_KV_BOOL, kv->i = v->via.boolean;
            break;
        case MSGPACK_OBJECT_STR:
            rc = read_str(v, 0, maxlen, &vs, NULL, key, err);
            if (rc) return rc;
            kv->kind = BR_KV_STR, kv->s = vs;
            break;
        default:
            return br_err_set(err, BR_E_PROTOCOL, "%s.%s: must be a number, bool or string, got %s",
                              key, ks, type_name(v));
        }
    }
    return BR_OK;
}

/* A log-probability: a number <= 0 (-inf is legitimate), never NaN. */
static int read_logprob(const msgpack_object *o, const char *name, float *out, struct br_err *err)
{
    double d = 0;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64) {
        d = o->via.f64;
        if (isnan(d)) return bad(err, "%s: NaN", name);
    } else {
        int rc = read_num(o, -1e300, 0.0, &d, name, err);
        if (rc) return rc;
    }
    *out = (float)d;
    return BR_OK;
}

/* A token message's top_logprobs: [{token, logprob, text}], at most
 * BR_REQ_MAX_TOP_LOGPROBS. */
static int read_alts(const msgpack_object *o, const struct br_proto_limits *lim,
                     struct br_resp *out, struct br_err *err)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > BR_REQ_MAX_TOP_LOGPROBS)
        return bad(err, "%s: must be an array of at most 20 alternatives", "top_logprobs");
    uint32_t n = o->via.array.size;
    if (n == 0) return BR_OK;
    if (!(out->top = calloc(n, sizeof *out->top)))
        return br_err_set(err, BR_E_NOMEM, "top_logprobs: %u alternatives", n);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *a = &o->via.array.ptr[i], *x;
        struct br_resp_alt *t = &out->top[i];
        int64_t v = 0;
        int rc;
        out->n_top = i + 1;
        if (a->type != MSGPACK_OBJECT_MAP)
            return bad(err, "%s: each alternative must be a map {token, logprob, text}",
                       "top_logprobs");
        if ((rc = req_field(a, "token", &x, err)) ||
            (rc = read_int(x, 0, INT32_MAX, &v, "top_logprobs.token", err)) ||
            (rc = req_field(a, "logprob", &x, err)) ||
            (rc = read_logprob(x, "top_logprobs.logprob", &t->logprob, err)) ||
            (rc = req_field(a, "text", &x, err)) ||
            (rc = read_str(x, 0, lim->max_msg_bytes, &t->text, &t->text_len, "top_logprobs.text",
                           err)))
            return rc;
        t->token = (int32_t)v;
    }
    return BR_OK;
}

int br_proto_decode_response(const void *buf, size_t len, const struct br_proto_limits *lim,
                             struct br_resp *out, struct br_err *err)
{
    struct br_proto_limits dl;
    msgpack_unpacked u;
    const msgpack_object *o, *sub;
    int64_t v = 0;
    int e = 0;
    if (!lim) {
        br_proto_limits_default(&dl);
        lim = &dl;
    }
    memset(out, 0, sizeof *out);
    msgpack_unpacked_init(&u);
    int rc = unpack_map(buf, len, lim->max_msg_bytes, &u, err);
    if (rc) goto done;
    const msgpack_object *m = &u.data;
    if ((rc = req_field(m, "v", &o, err)) || (rc = read_int(o, 0, INT32_MAX, &v, "v", err)))
        goto done;
    if (v != BR_PROTO_VERSION) {
        rc = br_err_set(err, BR_E_PROTOCOL, "v: unsupported protocol version %" PRId64, v);
        goto done;
    }
    if ((rc = read_enum(m, "type", resp_names + 1, N_NAMES(resp_names) - 1, &e, err))) goto done;
    out->type = (enum br_resp_type)(e + 1);
    if ((o = field(m, "id"))) {
        if ((rc = read_str(o, 0, lim->max_id_bytes, &out->id, &out->id_len, "id", err))) goto done;
    } else if (out->type != BR_RESP_ERROR) {
        rc = bad(err, "%s: missing", "id");
        goto done;
    }
    switch (out->type) {
    case BR_RESP_TOKEN:
        if ((rc = read_ku32(m, "index", &out->index, err))) break;
        if ((rc = req_field(m, "token", &o, err)) ||
            (rc = read_int(o, -1, INT32_MAX, &v, "token", err)))
            break;
        out->token = (int32_t)v;
        if ((rc = req_field(m, "text", &o, err)) ||
            (rc = read_str(o, 0, lim->max_msg_bytes, &out->text, &out->text_len, "text", err)))
            break;
        if ((o = field(m, "logprob"))) {
            if ((rc = read_logprob(o, "logprob", &out->logprob, err))) break;
            out->has_logprob = true;
        }
        if ((o = field(m, "top_logprobs"))) rc = read_alts(o, lim, out, err);
        break;
    case BR_RESP_DONE:
        if ((rc = read_enum(m, "finish_reason", finish_names, N_NAMES(finish_names), &e, err)))
            break;
        out->finish_reason = (enum br_finish)e;
        if ((rc = req_field(m, "usage", &sub, err))) break;
        if (sub->type != MSGPACK_OBJECT_MAP) {
            rc = bad(err, "%s: must be a map", "usage");
            break;
        }
        if ((rc = read_ku32(sub, "prompt_tokens", &out->usage.prompt_tokens, err)) ||
            (rc = read_ku32(sub, "completion_tokens", &out->usage.completion_tokens, err)))
            break;
        if ((sub = field(m, "timings"))) {
            if (sub->type != MSGPACK_OBJECT_MAP) {
                rc = bad(err, "%s: must be a map", "timings");
                break;
            }
            if ((rc = read_kdbl(sub, "queue_ms", &out->timings.queue_ms, err)) ||
                (rc = read_kdbl(sub, "ttft_ms", &out->timings.ttft_ms, err)) ||
                (rc = read_kdbl(sub, "total_ms", &out->timings.total_ms, err)) ||
                (rc = read_kdbl(sub, "tokens_per_s", &out->timings.tokens_per_s, err)))
                break;
        }
        if ((o = field(m, "text")))
            rc = read_str(o, 0, lim->max_msg_bytes, &out->text, &out->text_len, "text", err);
        break;
    case BR_RESP_ERROR:
        if ((rc = read_enum(m, "code", code_names, N_NAMES(code_names), &e, err))) break;
        out->code = (enum br_proto_code)e;
        if ((o = field(m, "message")))
            rc = read_str(o, 0, 65536, &out->message, NULL, "message", err);
        else if (!(out->message = calloc(1, 1)))
            rc = oom(err, "message");
        break;
    case BR_RESP_TOKENIZE:
        if ((rc = req_field(m, "tokens", &o, err))) break;
        rc = read_tokens(o, 0, UINT32_MAX, INT32_MAX, &out->tokens, &out->n_tokens, "tokens", err);
        break;
    case BR_RESP_DETOKENIZE:
        if ((rc = req_field(m, "text", &o, err))) break;
        rc = read_str(o, 0, lim->max_msg_bytes, &out->text, &out->text_len, "text", err);
        break;
    case BR_RESP_HEALTH:
        if ((rc = read_enum(m, "state", health_names, N_NAMES(health_names), &e, err))) break;
        out->state = (enum br_health_state)e;
        break;
    case BR_RESP_INFO:
    case BR_RESP_METRICS:
        rc = read_kv_map(m, br_proto_resp_type_name(out->type), lim->max_msg_bytes, out, err);
        break;
    default:
        break;
    }
done:
    msgpack_unpacked_destroy(&u);
    return rc;
}
