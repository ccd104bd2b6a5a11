/*
 * GGUF reader and writer (see gguf.h for the contract).
 *
 * Reader: a bounds-checked cursor walks the header. Before any allocation sized by a
 * count read from the file, the count is checked against the bytes that remain (every
 * key/value record, tensor info and array element takes at least a known number of
 * bytes), so memory stays proportional to the file. Every failure names the field and
 * the byte offset where it was read. Duplicate keys and names are found by sorting, so a
 * hostile file with millions of entries costs n log n, not n^2.
 *
 * Writer: metadata is serialized into a growing buffer as it is set; tensor infos are kept
 * in a list; begin() writes header and padding, then write() streams tensor bytes in
 * declaration order, inserting the alignment padding between tensors itself.
 */
#include "sharding/gguf.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitrack/buf.h"
#include "sharding/types.h"

#define GGUF_MAGIC    "GGUF"
#define MAX_ALIGNMENT (1u << 30)

struct br_gguf {
    const uint8_t *base;
    uint64_t size;
    void *map; /* non-NULL when we own an mmap */
    char *path;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    size_t n_kv, n_tensors;
    struct br_gguf_kv *kvs;
    struct br_gguf_tensor *tensors;
    const struct br_gguf_kv **kv_sorted;         /* sorted by key, for lookups */
    const struct br_gguf_tensor **tensor_sorted; /* sorted by name */
    char *names; /* all keys and names, NUL-terminated, one allocation */
};

/* ---- bounds-checked cursor ---- */

struct cursor {
    const uint8_t *base;
    uint64_t size, pos;
    struct br_err *err;
};

static uint64_t remaining(const struct cursor *c)
{
    return c->size - c->pos;
}

static int need(struct cursor *c, uint64_t n, const char *what)
{
    if (n > remaining(c))
        return br_err_set(c->err, BR_E_FORMAT,
                          "truncated file: %s at byte offset %llu needs %llu bytes, %llu left",
                          what, (unsigned long long)c->pos, (unsigned long long)n,
                          (unsigned long long)remaining(c));
    return BR_OK;
}

static int read_bytes(struct cursor *c, void *out, uint64_t n, const char *what)
{
    int rc = need(c, n, what);
    if (rc) return rc;
    memcpy(out, c->base + c->pos, n);
    c->pos += n;
    return BR_OK;
}

static int read_u32(struct cursor *c, uint32_t *v, const char *what)
{
    uint8_t b[4];
    int rc = read_bytes(c, b, 4, what);
    if (rc) return rc;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return BR_OK;
}

static int read_u64(struct cursor *c, uint64_t *v, const char *what)
{
    uint32_t lo, hi;
    int rc = read_u32(c, &lo, what);
    if (!rc) rc = read_u32(c, &hi, what);
    if (!rc) *v = (uint64_t)hi << 32 | lo;
    return rc;
}

/* A GGUF string: u64 length then bytes; returns a pointer into the file. */
static int read_str(struct cursor *c, const char **ptr, uint64_t *len, const char *what)
{
    uint64_t at = c->pos;
    int rc = read_u64(c, len, what);
    if (rc) return rc;
    if (*len > remaining(c))
        return br_err_set(c->err, BR_E_FORMAT,
                          "%s at byte offset %llu: string length %llu exceeds the %llu bytes "
                          "left in the file (truncated, or a bad length)",
                          what, (unsigned long long)at, (unsigned long long)*len,
                          (unsigned long long)remaining(c));
    *ptr = (const char *)c->base + c->pos;
    c->pos += *len;
    return BR_OK;
}

static const char *const vtype_names[BR_GGUF_VTYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *br_gguf_vtype_name(enum br_gguf_vtype t)
{
    return (unsigned)t < BR_GGUF_VTYPE_COUNT ? vtype_names[t] : "unknown";
}

size_t br_gguf_vtype_size(enum br_gguf_vtype t)
{
    switch (t) {
    case BR_GGUF_U8:
    case BR_GGUF_I8:
    case BR_GGUF_BOOL:
        return 1;
    case BR_GGUF_U16:
    case BR_GGUF_I16:
        return 2;
    case BR_GGUF_U32:
    case BR_GGUF_I32:
    case BR_GGUF_F32:
        return 4;
    case BR_GGUF_U64:
    case BR_GGUF_I64:
    case BR_GGUF_F64:
        return 8;
    default:
        return 0;
    }
}

static uint64_t load_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static bool is_signed_type(enum br_gguf_vtype t)
{
    return t == BR_GGUF_I8 || t == BR_GGUF_I16 || t == BR_GGUF_I32 || t == BR_GGUF_I64;
}

static bool is_unsigned_type(enum br_gguf_vtype t)
{
    return t == BR_GGUF_U8 || t == BR_GGUF_U16 || t == BR_GGUF_U32 || t == BR_GGUF_U64 ||
           t == BR_GGUF_BOOL;
}

/* Decodes one fixed-size scalar at p into kv->v. */
static void decode_scalar(enum br_gguf_vtype t, const uint8_t *p, struct br_gguf_kv *kv)
{
    uint64_t raw = load_le(p, br_gguf_vtype_size(t));
    switch (t) {
    case BR_GGUF_U8:
    case BR_GGUF_U16:
    case BR_GGUF_U32:
    case BR_GGUF_U64:
        kv->v.u = raw;
        break;
    case BR_GGUF_I8:
        kv->v.i = (int8_t)raw;
        break;
    case BR_GGUF_I16:
        kv->v.i = (int16_t)raw;
        break;
    case BR_GGUF_I32:
        kv->v.i = (int32_t)raw;
        break;
    case BR_GGUF_I64:
        kv->v.i = (int64_t)raw;
        break;
    case BR_GGUF_BOOL:
        kv->v.b = raw != 0;
        break;
    case BR_GGUF_F32: {
        uint32_t u = (uint32_t)raw;
        float f;
        memcpy(&f, &u, 4);
        kv->v.f = f;
        break;
    }
    case BR_GGUF_F64: {
        double d;
        memcpy(&d, &raw, 8);
        kv->v.f = d;
        break;
    }
    default:
        assert(0);
    }
}

static int parse_value(struct cursor *c, struct br_gguf_kv *kv, uint64_t **offsets_out)
{
    struct br_err *err = c->err;
    uint64_t at = c->pos;
    uint32_t t;
    int rc = read_u32(c, &t, "value type");
    if (rc) return rc;
    if (t >= BR_GGUF_VTYPE_COUNT)
        return br_err_set(err, BR_E_FORMAT, "key '%s': unknown value type %u at byte offset %llu",
                          kv->key, t, (unsigned long long)at);
    kv->type = (enum br_gguf_vtype)t;
    if (t == BR_GGUF_STRING) return read_str(c, &kv->v.str.ptr, &kv->v.str.len, "string value");
    if (t != BR_GGUF_ARRAY) {
        size_t sz = br_gguf_vtype_size(kv->type);
        rc = need(c, sz, "scalar value");
        if (rc) return rc;
        if (t == BR_GGUF_BOOL && c->base[c->pos] > 1)
            return br_err_set(err, BR_E_FORMAT, "key '%s': bool value %u at byte offset %llu",
                              kv->key, c->base[c->pos], (unsigned long long)c->pos);
        decode_scalar(kv->type, c->base + c->pos, kv);
        c->pos += sz;
        return BR_OK;
    }
    uint32_t et;
    uint64_t n, eat = c->pos;
    if ((rc = read_u32(c, &et, "array element type")) || (rc = read_u64(c, &n, "array length")))
        return rc;
    if (et >= BR_GGUF_VTYPE_COUNT)
        return br_err_set(err, BR_E_FORMAT,
                          "key '%s': unknown array element type %u at byte offset %llu", kv->key,
                          et, (unsigned long long)eat);
    if (et == BR_GGUF_ARRAY)
        return br_err_set(err, BR_E_UNSUPPORTED,
                          "key '%s': nested arrays are not supported (byte offset %llu)", kv->key,
                          (unsigned long long)eat);
    kv->v.arr.elem = (enum br_gguf_vtype)et;
    kv->v.arr.n = n;
    kv->v.arr.data = c->base + c->pos;
    kv->v.arr.str_offsets = NULL;
    if (et != BR_GGUF_STRING) {
        size_t sz = br_gguf_vtype_size(kv->v.arr.elem);
        if (n > remaining(c) / sz)
            return br_err_set(err, BR_E_FORMAT,
                              "key '%s': array of %llu %s elements at byte offset %llu exceeds "
                              "the %llu bytes left (truncated, or a bad count)",
                              kv->key, (unsigned long long)n, br_gguf_vtype_name(et),
                              (unsigned long long)eat, (unsigned long long)remaining(c));
        if (et == BR_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (c->base[c->pos + i] > 1)
                    return br_err_set(err, BR_E_FORMAT,
                                      "key '%s': bool element %llu is %u (byte offset %llu)",
                                      kv->key, (unsigned long long)i, c->base[c->pos + i],
                                      (unsigned long long)(c->pos + i));
        c->pos += n * sz;
        return BR_OK;
    }
    /* strings: each at least 8 bytes, so n is bounded by what is left */
    if (n > remaining(c) / 8)
        return br_err_set(err, BR_E_FORMAT,
                          "key '%s': array of %llu strings at byte offset %llu exceeds the %llu "
                          "bytes left (truncated, or a bad count)",
                          kv->key, (unsigned long long)n, (unsigned long long)eat,
                          (unsigned long long)remaining(c));
    uint64_t *offs = malloc((n ? n : 1) * sizeof *offs);
    if (!offs) return br_err_set(err, BR_E_NOMEM, "key '%s': out of memory", kv->key);
    uint64_t start = c->pos;
    for (uint64_t i = 0; i < n; i++) {
        const char *p;
        uint64_t len;
        offs[i] = c->pos - start;
        rc = read_str(c, &p, &len, "array string");
        if (rc) {
            free(offs);
            return br_err_prefix(err, rc, "key '%s' element %llu", kv->key, (unsigned long long)i);
        }
    }
    kv->v.arr.str_offsets = offs;
    *offsets_out = offs;
    return BR_OK;
}

/* Lookups sort pointers rather than indices, so the comparators need no context (qsort has
 * no context argument in C11, and a file-static one would be shared by concurrent opens). */
static int cmp_kv(const void *a, const void *b)
{
    const struct br_gguf_kv *x = *(const struct br_gguf_kv *const *)a;
    const struct br_gguf_kv *y = *(const struct br_gguf_kv *const *)b;
    return strcmp(x->key, y->key);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    const struct br_gguf_tensor *x = *(const struct br_gguf_tensor *const *)a;
    const struct br_gguf_tensor *y = *(const struct br_gguf_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const struct br_gguf_tensor *x = *(const struct br_gguf_tensor *const *)a;
    const struct br_gguf_tensor *y = *(const struct br_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static void free_contents(struct br_gguf *g)
{
    if (g->kvs)
        for (size_t i = 0; i < g->n_kv; i++)
            if (g->kvs[i].type == BR_GGUF_ARRAY) free((void *)g->kvs[i].v.arr.str_offsets);
    free(g->kvs);
    free(g->tensors);
    free(g->kv_sorted);
    free(g->tensor_sorted);
    free(g->names);
}

/* Makes g->names hold at least `need` bytes, moving the first n_kv keys and n_t tensor
 * names already copied there. Doubling keeps the copies linear; `need` never exceeds the
 * file's size + 1 (every name is read from the file), which bounds the buffer as before,
 * but a 25 GB model's few MB of names no longer ask for a 25 GB allocation. */
static int names_reserve(struct br_gguf *g, size_t *cap, size_t need, size_t n_kv, size_t n_t)
{
    if (need <= *cap) return BR_OK;
    size_t nc = *cap ? *cap : 4096;
    while (nc < need) nc *= 2;
    if (nc > g->size + 1 && need <= g->size + 1) nc = (size_t)g->size + 1;
    char *nb = malloc(nc);
    if (!nb) return BR_E_NOMEM;
    if (g->names) {
        memcpy(nb, g->names, *cap);
        for (size_t i = 0; i < n_kv; i++) g->kvs[i].key = nb + (g->kvs[i].key - g->names);
        for (size_t i = 0; i < n_t; i++) g->tensors[i].name = nb + (g->tensors[i].name - g->names);
        free(g->names);
    }
    g->names = nb;
    *cap = nc;
    return BR_OK;
}

/* Two records with one name (qsort is not stable: both offsets are named, in file order). */
static int duplicate(struct br_err *err, const char *what, const char *name, uint64_t a, uint64_t b)
{
    return br_err_set(err, BR_E_FORMAT, "duplicate %s '%s' at byte offsets %llu and %llu", what,
                      name, (unsigned long long)(a < b ? a : b),
                      (unsigned long long)(a < b ? b : a));
}

static int parse(struct br_gguf *g, struct br_err *err)
{
    struct cursor c = {g->base, g->size, 0, err};
    int rc;
    char magic[4];
    if ((rc = read_bytes(&c, magic, 4, "magic"))) return rc;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0)
        return br_err_set(err, BR_E_FORMAT, "not a GGUF file: bad magic at byte offset 0");
    if ((rc = read_u32(&c, &g->version, "version"))) return rc;
    if (g->version == 0x03000000u || g->version == 0x02000000u)
        return br_err_set(err, BR_E_UNSUPPORTED,
                          "big-endian GGUF files are not supported (version field at byte 4)");
    if (g->version != 2 && g->version != 3)
        return br_err_set(err, BR_E_UNSUPPORTED,
                          "unsupported GGUF version %u at byte offset 4 (2 and 3 are read)",
                          g->version);
    uint64_t n_tensors, n_kv;
    if ((rc = read_u64(&c, &n_tensors, "tensor count")) || (rc = read_u64(&c, &n_kv, "kv count")))
        return rc;
    /* A key/value record takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 +
     * 4 + 8: counts beyond what the file can hold are rejected before allocating. */
    if (n_kv > remaining(&c) / 14)
        return br_err_set(err, BR_E_FORMAT,
                          "kv count %llu at byte offset 16 is impossible for a %llu-byte file "
                          "(truncated, or a bad count)",
                          (unsigned long long)n_kv, (unsigned long long)g->size);
    if (n_tensors > remaining(&c) / 33)
        return br_err_set(err, BR_E_FORMAT,
                          "tensor count %llu at byte offset 8 is impossible for a %llu-byte file "
                          "(truncated, or a bad count)",
                          (unsigned long long)n_tensors, (unsigned long long)g->size);
    /* together, too (each product is at most what is left, so the sum cannot wrap) */
    if (n_kv * 14 + n_tensors * 33 > remaining(&c))
        return br_err_set(err, BR_E_FORMAT,
                          "kv count %llu (byte offset 16) and tensor count %llu (byte offset 8) "
                          "are impossible for a %llu-byte file (truncated, or a bad count)",
                          (unsigned long long)n_kv, (unsigned long long)n_tensors,
                          (unsigned long long)g->size);
    g->n_kv = (size_t)n_kv;
    g->n_tensors = (size_t)n_tensors;
    g->kvs = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kvs);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    g->kv_sorted = malloc((g->n_kv ? g->n_kv : 1) * sizeof *g->kv_sorted);
    g->tensor_sorted = malloc((g->n_tensors ? g->n_tensors : 1) * sizeof *g->tensor_sorted);
    /* keys and names are copied NUL-terminated into one buffer, grown as they are read
     * (names_reserve): never larger than the file, and only as large as the header needs */
    if (!g->kvs || !g->tensors || !g->kv_sorted || !g->tensor_sorted)
        return br_err_set(err, BR_E_NOMEM, "out of memory reading the header");
    size_t names_used = 0, names_cap = 0;

    g->alignment = BR_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < g->n_kv; i++) {
        struct br_gguf_kv *kv = &g->kvs[i];
        kv->file_offset = c.pos;
        const char *kp;
        uint64_t klen;
        if ((rc = read_str(&c, &kp, &klen, "key")))
            return br_err_prefix(err, rc, "metadata entry %zu", i);
        if (klen == 0)
            return br_err_set(err, BR_E_FORMAT, "metadata entry %zu at byte offset %llu: empty key",
                              i, (unsigned long long)kv->file_offset);
        if (memchr(kp, '\0', klen))
            return br_err_set(err, BR_E_FORMAT,
                              "metadata entry %zu at byte offset %llu: key contains a NUL byte", i,
                              (unsigned long long)kv->file_offset);
        if (names_reserve(g, &names_cap, names_used + klen + 1, i, 0))
            return br_err_set(err, BR_E_NOMEM, "out of memory reading the header");
        memcpy(g->names + names_used, kp, klen);
        g->names[names_used + klen] = '\0';
        kv->key = g->names + names_used;
        names_used += klen + 1;
        uint64_t *offs = NULL;
        if ((rc = parse_value(&c, kv, &offs))) {
            if (kv->type == BR_GGUF_ARRAY) kv->v.arr.str_offsets = NULL;
            return br_err_prefix(err, rc, "metadata entry %zu", i);
        }
        if (!strcmp(kv->key, "general.alignment")) {
            /* Writers use u32, but like every integer key any integer type is read (the
             * writer below accepts the same set, so its files always read back). */
            uint64_t a = 0;
            if (is_unsigned_type(kv->type) && kv->type != BR_GGUF_BOOL)
                a = kv->v.u;
            else if (is_signed_type(kv->type) && kv->v.i > 0)
                a = (uint64_t)kv->v.i;
            else if (!is_signed_type(kv->type))
                return br_err_set(err, BR_E_FORMAT,
                                  "general.alignment at byte offset %llu must be an integer, "
                                  "found %s",
                                  (unsigned long long)kv->file_offset,
                                  br_gguf_vtype_name(kv->type));
            if (a == 0 || (a & (a - 1)) != 0 || a > MAX_ALIGNMENT) {
                char val[32];
                if (is_signed_type(kv->type))
                    snprintf(val, sizeof val, "%lld", (long long)kv->v.i);
                else
                    snprintf(val, sizeof val, "%llu", (unsigned long long)kv->v.u);
                return br_err_set(err, BR_E_FORMAT,
                                  "general.alignment at byte offset %llu must be a power of two "
                                  "up to 2^30, found %s",
                                  (unsigned long long)kv->file_offset, val);
            }
            g->alignment = a;
        }
    }

    for (size_t i = 0; i < g->n_tensors; i++) {
        struct br_gguf_tensor *t = &g->tensors[i];
        t->info_offset = c.pos;
        const char *np;
        uint64_t nlen;
        if ((rc = read_str(&c, &np, &nlen, "tensor name")))
            return br_err_prefix(err, rc, "tensor info %zu", i);
        if (nlen == 0 || nlen >= BR_GGUF_MAX_NAME || memchr(np, '\0', nlen))
            return br_err_set(err, BR_E_FORMAT,
                              "tensor info %zu at byte offset %llu: name length %llu is not in "
                              "1..%d or contains NUL",
                              i, (unsigned long long)t->info_offset, (unsigned long long)nlen,
                              BR_GGUF_MAX_NAME - 1);
        if (names_reserve(g, &names_cap, names_used + nlen + 1, g->n_kv, i))
            return br_err_set(err, BR_E_NOMEM, "out of memory reading the header");
        memcpy(g->names + names_used, np, nlen);
        g->names[names_used + nlen] = '\0';
        t->name = g->names + names_used;
        names_used += nlen + 1;
        uint64_t dat = c.pos;
        if ((rc = read_u32(&c, &t->n_dims, "tensor n_dims")))
            return br_err_prefix(err, rc, "tensor '%s'", t->name);
        if (t->n_dims < 1 || t->n_dims > BR_GGUF_MAX_DIMS)
            return br_err_set(err, BR_E_FORMAT,
                              "tensor '%s': n_dims %u at byte offset %llu is not in 1..%d", t->name,
                              t->n_dims, (unsigned long long)dat, BR_GGUF_MAX_DIMS);
        uint64_t nelem = 1;
        for (uint32_t d = 0; d < BR_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t nat = c.pos;
            if ((rc = read_u64(&c, &t->ne[d], "tensor dimension")))
                return br_err_prefix(err, rc, "tensor '%s'", t->name);
            /* the element count must fit int64_t, which consumers index with */
            if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX ||
                nelem > (uint64_t)INT64_MAX / t->ne[d])
                return br_err_set(err, BR_E_FORMAT,
                                  "tensor '%s': dimension %u = %llu at byte offset %llu is zero "
                                  "or overflows",
                                  t->name, d, (unsigned long long)t->ne[d],
                                  (unsigned long long)nat);
            nelem *= t->ne[d];
        }
        t->nelem = nelem;
        uint64_t tat = c.pos;
        if ((rc = read_u32(&c, &t->type, "tensor type")) ||
            (rc = read_u64(&c, &t->offset, "tensor offset")))
            return br_err_prefix(err, rc, "tensor '%s'", t->name);
        if (!br_ggml_type_name(t->type))
            return br_err_set(err, BR_E_FORMAT, "tensor '%s': unknown type %u at byte offset %llu",
                              t->name, t->type, (unsigned long long)tat);
        if (!br_ggml_type_nbytes(t->type, t->ne[0], nelem, &t->nbytes))
            return br_err_set(err, BR_E_FORMAT,
                              "tensor '%s': %s needs %s of a multiple of %u elements, it has "
                              "%llu (byte offset %llu)",
                              t->name, br_ggml_type_name(t->type),
                              t->type == BR_GGML_I2_S ? "a size" : "rows",
                              br_ggml_type_block(t->type),
                              (unsigned long long)(t->type == BR_GGML_I2_S ? nelem : t->ne[0]),
                              (unsigned long long)dat);
    }

    /* data section */
    uint64_t hdr_end = c.pos;
    uint64_t data = (hdr_end + g->alignment - 1) / g->alignment * g->alignment;
    if (data < hdr_end) return br_err_set(err, BR_E_FORMAT, "data offset overflows");
    if (g->n_tensors > 0 && data > g->size)
        return br_err_set(err, BR_E_FORMAT,
                          "truncated file: the data section would start at byte %llu, the file "
                          "has %llu bytes",
                          (unsigned long long)data, (unsigned long long)g->size);
    g->data_offset = data;
    uint64_t avail = data <= g->size ? g->size - data : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct br_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0)
            return br_err_set(err, BR_E_FORMAT,
                              "tensor '%s': data offset %llu (info at byte %llu) is not a "
                              "multiple of the alignment %llu",
                              t->name, (unsigned long long)t->offset,
                              (unsigned long long)t->info_offset, (unsigned long long)g->alignment);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return br_err_set(err, BR_E_FORMAT,
                              "tensor '%s' (info at byte offset %llu): %llu bytes at data offset "
                              "%llu run past the end of the %llu-byte file (truncated, or a bad "
                              "offset)",
                              t->name, (unsigned long long)t->info_offset,
                              (unsigned long long)t->nbytes, (unsigned long long)t->offset,
                              (unsigned long long)g->size);
        t->data = g->base + data + t->offset;
    }

    /* unique keys, unique names, no overlapping tensors */
    for (size_t i = 0; i < g->n_kv; i++) g->kv_sorted[i] = &g->kvs[i];
    qsort(g->kv_sorted, g->n_kv, sizeof *g->kv_sorted, cmp_kv);
    for (size_t i = 1; i < g->n_kv; i++)
        if (!strcmp(g->kv_sorted[i - 1]->key, g->kv_sorted[i]->key))
            return duplicate(err, "metadata key", g->kv_sorted[i]->key,
                             g->kv_sorted[i - 1]->file_offset, g->kv_sorted[i]->file_offset);
    for (size_t i = 0; i < g->n_tensors; i++) g->tensor_sorted[i] = &g->tensors[i];
    qsort(g->tensor_sorted, g->n_tensors, sizeof *g->tensor_sorted, cmp_tensor_name);
    for (size_t i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->tensor_sorted[i - 1]->name, g->tensor_sorted[i]->name))
            return duplicate(err, "tensor name", g->tensor_sorted[i]->name,
                             g->tensor_sorted[i - 1]->info_offset,
                             g->tensor_sorted[i]->info_offset);
    if (g->n_tensors > 1) {
        const struct br_gguf_tensor **by_off = malloc(g->n_tensors * sizeof *by_off);
        if (!by_off) return br_err_set(err, BR_E_NOMEM, "out of memory checking tensor overlap");
        for (size_t i = 0; i < g->n_tensors; i++) by_off[i] = &g->tensors[i];
        qsort(by_off, g->n_tensors, sizeof *by_off, cmp_tensor_offset);
        for (size_t i = 1; i < g->n_tensors; i++) {
            const struct br_gguf_tensor *a = by_off[i - 1], *b = by_off[i];
            /* both ends were checked against the file size above, so no overflow */
            if (a->offset + a->nbytes > b->offset) {
                rc = br_err_set(err, BR_E_FORMAT,
                                "tensors '%s' (info at byte offset %llu) and '%s' (info at byte "
                                "offset %llu) overlap: data offsets %llu+%llu and %llu",
                                a->name, (unsigned long long)a->info_offset, b->name,
                                (unsigned long long)b->info_offset, (unsigned long long)a->offset,
                                (unsigned long long)a->nbytes, (unsigned long long)b->offset);
                free(by_off);
                return rc;
            }
        }
        free(by_off);
    }
    return BR_OK;
}

static int open_common(struct br_gguf *g, struct br_gguf **out, struct br_err *err)
{
    int rc = parse(g, err);
    if (rc) {
        br_err_prefix(err, rc, "%s", g->path);
        /* Messages quote keys and names from the file, which may hold any byte but NUL; a
         * control character there (a newline, an escape sequence) must not reach a
         * terminal or split the one-line message. */
        if (err)
            for (char *p = err->msg; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
        br_gguf_close(&g);
        return rc;
    }
    *out = g;
    return BR_OK;
}

int br_gguf_open_memory(const void *buf, size_t len, struct br_gguf **out, struct br_err *err)
{
    *out = NULL;
    struct br_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup("<memory>"))) {
        free(g);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    g->base = buf;
    g->size = len;
    return open_common(g, out, err);
}

int br_gguf_open(const char *path, struct br_gguf **out, struct br_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return br_err_set(err, BR_E_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return br_err_set(err, BR_E_IO, "%s: not a regular file", path);
    }
    if (st.st_size < 24) {
        close(fd);
        return br_err_set(err, BR_E_FORMAT,
                          "%s: truncated file: %lld bytes is shorter than a GGUF header", path,
                          (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return br_err_set(err, BR_E_IO, "%s: mmap: %s", path, strerror(errno));
    struct br_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        munmap(map, (size_t)st.st_size);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    g->map = map;
    g->base = map;
    g->size = (uint64_t)st.st_size;
    return open_common(g, out, err);
}

void br_gguf_close(struct br_gguf **gp)
{
    if (!gp || !*gp) return;
    struct br_gguf *g = *gp;
    free_contents(g);
    if (g->map) munmap(g->map, g->size);
    free(g->path);
    free(g);
    *gp = NULL;
}

uint32_t br_gguf_version(const struct br_gguf *g)
{
    return g->version;
}
uint64_t br_gguf_alignment(const struct br_gguf *g)
{
    return g->alignment;
}
uint64_t br_gguf_data_offset(const struct br_gguf *g)
{
    return g->data_offset;
}
uint64_t br_gguf_file_size(const struct br_gguf *g)
{
    return g->size;
}
const char *br_gguf_path(const struct br_gguf *g)
{
    return g->path;
}
size_t br_gguf_n_kv(const struct br_gguf *g)
{
    return g->n_kv;
}
size_t br_gguf_n_tensors(const struct br_gguf *g)
{
    return g->n_tensors;
}

const struct br_gguf_kv *br_gguf_kv_at(const struct br_gguf *g, size_t i)
{
    return i < g->n_kv ? &g->kvs[i] : NULL;
}

const struct br_gguf_tensor *br_gguf_tensor_at(const struct br_gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

/* Both look up the sorted pointers by bsearch, with the comparators that sorted them. */
const struct br_gguf_kv *br_gguf_find_kv(const struct br_gguf *g, const char *key)
{
    const struct br_gguf_kv want = {.key = key}, *w = &want;
    const struct br_gguf_kv *const *hit = bsearch(&w, g->kv_sorted, g->n_kv, sizeof w, cmp_kv);
    return hit ? *hit : NULL;
}

const struct br_gguf_tensor *br_gguf_find_tensor(const struct br_gguf *g, const char *name)
{
    const struct br_gguf_tensor want = {.name = name}, *w = &want;
    const struct br_gguf_tensor *const *hit =
        bsearch(&w, g->tensor_sorted, g->n_tensors, sizeof w, cmp_tensor_name);
    return hit ? *hit : NULL;
}

/* ---- typed getters ---- */

/* The error of a value that is not of the type a getter reads (want: "an integer"). */
static int wrong_type(const struct br_gguf_kv *kv, const char *want, struct br_err *err)
{
    return br_err_set(err, BR_E_FORMAT, "%s: expected %s, found %s (byte offset %llu)", kv->key,
                      want, br_gguf_vtype_name(kv->type), (unsigned long long)kv->file_offset);
}

int br_gguf_get_i64(const struct br_gguf *g, const char *key, int64_t *out, struct br_err *err)
{
    const struct br_gguf_kv *kv = br_gguf_find_kv(g, key);
    if (!kv) return BR_E_NOTFOUND;
    if (is_signed_type(kv->type)) {
        *out = kv->v.i;
        return BR_OK;
    }
    if (is_unsigned_type(kv->type)) {
        uint64_t u = kv->type == BR_GGUF_BOOL ? (uint64_t)kv->v.b : kv->v.u;
        if (u > (uint64_t)INT64_MAX)
            return br_err_set(err, BR_E_FORMAT,
                              "%s: value %llu does not fit a signed 64-bit integer (byte offset "
                              "%llu)",
                              key, (unsigned long long)u, (unsigned long long)kv->file_offset);
        *out = (int64_t)u;
        return BR_OK;
    }
    return wrong_type(kv, "an integer", err);
}

int br_gguf_get_u64(const struct br_gguf *g, const char *key, uint64_t *out, struct br_err *err)
{
    const struct br_gguf_kv *kv = br_gguf_find_kv(g, key);
    if (!kv) return BR_E_NOTFOUND;
    if (is_unsigned_type(kv->type)) {
        *out = kv->type == BR_GGUF_BOOL ? (uint64_t)kv->v.b : kv->v.u;
        return BR_OK;
    }
    if (is_signed_type(kv->type)) {
        if (kv->v.i < 0)
            return br_err_set(err, BR_E_FORMAT, "%s: value %lld is negative (byte offset %llu)",
                              key, (long long)kv->v.i, (unsigned long long)kv->file_offset);
        *out = (uint64_t)kv->v.i;
        return BR_OK;
    }
    return wrong_type(kv, "an integer", err);
}

int br_gguf_get_u32(const struct br_gguf *g, const char *key, uint32_t *out, struct br_err *err)
{
    uint64_t v = 0;
    int rc = br_gguf_get_u64(g, key, &v, err);
    if (rc) return rc;
    if (v > UINT32_MAX)
        return br_err_set(
            err, BR_E_FORMAT, "%s: value %llu does not fit 32 bits (byte offset %llu)", key,
            (unsigned long long)v, (unsigned long long)br_gguf_find_kv(g, key)->file_offset);
    *out = (uint32_t)v;
    return BR_OK;
}

int br_gguf_get_f32(const struct br_gguf *g, const char *key, float *out, struct br_err *err)
{
    const struct br_gguf_kv *kv = br_gguf_find_kv(g, key);
    if (!kv) return BR_E_NOTFOUND;
    if (kv->type == BR_GGUF_F32 || kv->type == BR_GGUF_F64) {
        *out = (float)kv->v.f;
        return BR_OK;
    }
    if (is_signed_type(kv->type)) {
        *out = (float)kv->v.i;
        return BR_OK;
    }
    if (is_unsigned_type(kv->type) && kv->type != BR_GGUF_BOOL) {
        *out = (float)kv->v.u;
        return BR_OK;
    }
    return wrong_type(kv, "a number", err);
}

int br_gguf_get_bool(const struct br_gguf *g, const char *key, bool *out, struct br_err *err)
{
    const struct br_gguf_kv *kv = br_gguf_find_kv(g, key);
    if (!kv) return BR_E_NOTFOUND;
    if (kv->type == BR_GGUF_BOOL) {
        *out = kv->v.b;
        return BR_OK;
    }
    if (is_unsigned_type(kv->type) || is_signed_type(kv->type)) {
        *out = is_signed_type(kv->type) ? kv->v.i != 0 : kv->v.u != 0;
        return BR_OK;
    }
    return wrong_type(kv, "a bool", err);
}

int br_gguf_get_str(const struct br_gguf *g, const char *key, char *buf, size_t cap,
                    struct br_err *err)
{
    const struct br_gguf_kv *kv = br_gguf_find_kv(g, key);
    if (!kv) return BR_E_NOTFOUND;
    if (kv->type != BR_GGUF_STRING) return wrong_type(kv, "a string", err);
    if (kv->v.str.len >= cap)
        return br_err_set(err, BR_E_TOO_LONG,
                          "%s: string of %llu bytes does not fit a %zu-byte buffer", key,
                          (unsigned long long)kv->v.str.len, cap);
    memcpy(buf, kv->v.str.ptr, kv->v.str.len);
    buf[kv->v.str.len] = '\0';
    return BR_OK;
}

/* Element i of a numeric array, decoded into t; false for string elements, which have no
 * numeric value. */
static bool arr_elem(const struct br_gguf_kv *kv, uint64_t i, struct br_gguf_kv *t)
{
    assert(kv->type == BR_GGUF_ARRAY && i < kv->v.arr.n);
    size_t sz = br_gguf_vtype_size(kv->v.arr.elem);
    if (sz == 0) return false;
    decode_scalar(kv->v.arr.elem, kv->v.arr.data + i * sz, t);
    return true;
}

double br_gguf_arr_f64(const struct br_gguf_kv *kv, uint64_t i)
{
    struct br_gguf_kv t;
    enum br_gguf_vtype e = kv->v.arr.elem;
    if (!arr_elem(kv, i, &t)) return 0;
    if (e == BR_GGUF_F32 || e == BR_GGUF_F64) return t.v.f;
    if (e == BR_GGUF_BOOL) return t.v.b;
    return is_signed_type(e) ? (double)t.v.i : (double)t.v.u;
}

int64_t br_gguf_arr_i64(const struct br_gguf_kv *kv, uint64_t i)
{
    struct br_gguf_kv t;
    enum br_gguf_vtype e = kv->v.arr.elem;
    if (!arr_elem(kv, i, &t)) return 0;
    if (e == BR_GGUF_F32 || e == BR_GGUF_F64) {
        /* A float outside int64's range (or NaN) would make the cast undefined; a file can
         * hold any bits, so truncate toward zero and saturate instead. */
        if (t.v.f != t.v.f) return 0;
        if (t.v.f >= 9223372036854775808.0) return INT64_MAX;
        if (t.v.f < -9223372036854775808.0) return INT64_MIN;
        return (int64_t)t.v.f;
    }
    if (e == BR_GGUF_BOOL) return t.v.b;
    return is_signed_type(e) ? t.v.i : (int64_t)t.v.u;
}

void br_gguf_arr_str(const struct br_gguf_kv *kv, uint64_t i, const char **ptr, uint64_t *len)
{
    assert(kv->type == BR_GGUF_ARRAY && kv->v.arr.elem == BR_GGUF_STRING && i < kv->v.arr.n);
    const uint8_t *p = kv->v.arr.data + kv->v.arr.str_offsets[i];
    *len = load_le(p, 8);
    *ptr = (const char *)p + 8;
}

/* ---- writer ---- */

struct wtensor {
    char name[BR_GGUF_MAX_NAME];
    uint32_t n_dims, type;
    uint64_t ne[BR_GGUF_MAX_DIMS];
    uint64_t nbytes, offset;
};

struct br_gguf_writer {
    struct br_buf kv;
    uint64_t n_kv;
    char **keys;
    struct wtensor *tensors;
    size_t n_tensors, cap_tensors;
    uint64_t alignment;
    FILE *f;
    char *path;
    size_t cur;          /* tensor being written */
    uint64_t cur_done;   /* bytes of it written */
    uint64_t data_bytes; /* offset from data start of the write position */
};

static int buf_u32(struct br_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return br_buf_append(b, x, 4);
}

static int buf_u64(struct br_buf *b, uint64_t v)
{
    int rc = buf_u32(b, (uint32_t)v);
    return rc ? rc : buf_u32(b, (uint32_t)(v >> 32));
}

static int buf_str(struct br_buf *b, const char *s, size_t n)
{
    int rc = buf_u64(b, n);
    return rc ? rc : br_buf_append(b, s, n);
}

int br_gguf_writer_create(struct br_gguf_writer **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return BR_E_NOMEM;
    (*out)->alignment = BR_GGUF_DEFAULT_ALIGNMENT;
    return BR_OK;
}

void br_gguf_writer_destroy(struct br_gguf_writer **wp)
{
    if (!wp || !*wp) return;
    struct br_gguf_writer *w = *wp;
    if (w->f) fclose(w->f);
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    br_buf_free(&w->kv);
    free(w->tensors);
    free(w->path);
    free(w);
    *wp = NULL;
}

/* Starts a record: checks the key is new, then writes key and type. */
static int kv_begin(struct br_gguf_writer *w, const char *key, uint32_t type)
{
    if (w->f || !key || !*key) return BR_E_INVALID;
    /* general.alignment changes the layout; only an integer the reader accepts may set it
     * (set_raw checks the value), so the writer cannot produce a file it cannot read. */
    if (!strcmp(key, "general.alignment") &&
        !(is_signed_type(type) || (is_unsigned_type(type) && type != BR_GGUF_BOOL)))
        return BR_E_INVALID;
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return BR_E_INVALID;
    char **nk = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *nk);
    if (!nk) return BR_E_NOMEM;
    w->keys = nk;
    if (!(w->keys[w->n_kv] = strdup(key))) return BR_E_NOMEM;
    w->n_kv++;
    int rc = buf_str(&w->kv, key, strlen(key));
    return rc ? rc : buf_u32(&w->kv, type);
}

static int put_scalar(struct br_buf *b, enum br_gguf_vtype t, const void *v)
{
    return br_buf_append(b, v, br_gguf_vtype_size(t)); /* host is little-endian (checked below) */
}

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF writer assumes little-endian");

int br_gguf_writer_set_raw(struct br_gguf_writer *w, const char *key, enum br_gguf_vtype t,
                           const void *v)
{
    if (!br_gguf_vtype_size(t) || !key) return BR_E_INVALID;
    if (!strcmp(key, "general.alignment")) {
        uint64_t a = load_le(v, br_gguf_vtype_size(t));
        /* a negative signed value reads as a huge unsigned one and fails the range check */
        if (a == 0 || (a & (a - 1)) || a > MAX_ALIGNMENT) return BR_E_INVALID;
    }
    int rc = kv_begin(w, key, t);
    if (rc) return rc;
    if (!strcmp(key, "general.alignment")) w->alignment = load_le(v, br_gguf_vtype_size(t));
    return put_scalar(&w->kv, t, v);
}

int br_gguf_writer_set_u32(struct br_gguf_writer *w, const char *key, uint32_t v)
{
    return br_gguf_writer_set_raw(w, key, BR_GGUF_U32, &v);
}
int br_gguf_writer_set_i32(struct br_gguf_writer *w, const char *key, int32_t v)
{
    return br_gguf_writer_set_raw(w, key, BR_GGUF_I32, &v);
}
int br_gguf_writer_set_u64(struct br_gguf_writer *w, const char *key, uint64_t v)
{
    return br_gguf_writer_set_raw(w, key, BR_GGUF_U64, &v);
}
int br_gguf_writer_set_f32(struct br_gguf_writer *w, const char *key, float v)
{
    return br_gguf_writer_set_raw(w, key, BR_GGUF_F32, &v);
}
int br_gguf_writer_set_bool(struct br_gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return br_gguf_writer_set_raw(w, key, BR_GGUF_BOOL, &b);
}

int br_gguf_writer_set_str(struct br_gguf_writer *w, const char *key, const char *v)
{
    int rc = kv_begin(w, key, BR_GGUF_STRING);
    return rc ? rc : buf_str(&w->kv, v, strlen(v));
}

int br_gguf_writer_set_arr(struct br_gguf_writer *w, const char *key, enum br_gguf_vtype elem,
                           const void *data, uint64_t n)
{
    size_t sz = br_gguf_vtype_size(elem);
    if (!sz || n > SIZE_MAX / sz || (n && !data)) return BR_E_INVALID;
    int rc = kv_begin(w, key, BR_GGUF_ARRAY);
    if (!rc) rc = buf_u32(&w->kv, elem);
    if (!rc) rc = buf_u64(&w->kv, n);
    if (!rc) rc = br_buf_append(&w->kv, data, (size_t)n * sz);
    return rc;
}

int br_gguf_writer_set_arr_str(struct br_gguf_writer *w, const char *key, const char *const *strs,
                               const size_t *lens, uint64_t n)
{
    int rc = kv_begin(w, key, BR_GGUF_ARRAY);
    if (!rc) rc = buf_u32(&w->kv, BR_GGUF_STRING);
    if (!rc) rc = buf_u64(&w->kv, n);
    for (uint64_t i = 0; !rc && i < n; i++)
        rc = buf_str(&w->kv, strs[i], lens ? lens[i] : strlen(strs[i]));
    return rc;
}

int br_gguf_writer_add_tensor(struct br_gguf_writer *w, const char *name, uint32_t n_dims,
                              const uint64_t *ne, uint32_t type, struct br_err *err)
{
    if (w->f) return br_err_set(err, BR_E_INVALID, "tensor '%s' added after begin", name);
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen >= BR_GGUF_MAX_NAME)
        return br_err_set(err, BR_E_INVALID, "tensor name '%s' must have 1..63 bytes", name);
    if (n_dims < 1 || n_dims > BR_GGUF_MAX_DIMS)
        return br_err_set(err, BR_E_INVALID, "tensor '%s': n_dims %u", name, n_dims);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name))
            return br_err_set(err, BR_E_INVALID, "tensor '%s' declared twice", name);
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0 || nelem > UINT64_MAX / ne[d])
            return br_err_set(err, BR_E_INVALID, "tensor '%s': bad dimension %u", name, d);
        nelem *= ne[d];
    }
    uint64_t nbytes;
    if (!br_ggml_type_nbytes(type, ne[0], nelem, &nbytes))
        return br_err_set(err, BR_E_INVALID, "tensor '%s': shape does not fit type %u", name, type);
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        struct wtensor *nt = realloc(w->tensors, cap * sizeof *nt);
        if (!nt) return br_err_set(err, BR_E_NOMEM, "out of memory");
        w->tensors = nt;
        w->cap_tensors = cap;
    }
    struct wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, nlen + 1);
    t->n_dims = n_dims;
    t->type = type;
    for (uint32_t d = 0; d < BR_GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->nbytes = nbytes;
    /* the final offsets are assigned by begin(), once general.alignment is known */
    t->offset = 0;
    w->n_tensors++;
    return BR_OK;
}

static int write_zeros(FILE *f, uint64_t n)
{
    static const uint8_t zeros[4096];
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (fwrite(zeros, 1, k, f) != k) return BR_E_IO;
        n -= k;
    }
    return BR_OK;
}

int br_gguf_writer_begin(struct br_gguf_writer *w, const char *path, struct br_err *err)
{
    if (w->f) return br_err_set(err, BR_E_INVALID, "writer already begun");
    /* Tensor offsets were computed with the alignment known at add time; recompute in case
     * general.alignment was set after some tensors were added. */
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        w->tensors[i].offset = off;
        /* the reader bounds every tensor by the file size; refuse sums that would wrap */
        if (w->tensors[i].nbytes > (uint64_t)INT64_MAX - off)
            return br_err_set(err, BR_E_INVALID, "tensor '%s': the data section overflows",
                              w->tensors[i].name);
        off = (off + w->tensors[i].nbytes + w->alignment - 1) / w->alignment * w->alignment;
    }
    struct br_buf h = {0};
    int rc = br_buf_append(&h, GGUF_MAGIC, 4);
    if (!rc) rc = buf_u32(&h, 3);
    if (!rc) rc = buf_u64(&h, w->n_tensors);
    if (!rc) rc = buf_u64(&h, w->n_kv);
    if (!rc) rc = br_buf_append(&h, w->kv.data, w->kv.len);
    for (size_t i = 0; !rc && i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        rc = buf_str(&h, t->name, strlen(t->name));
        if (!rc) rc = buf_u32(&h, t->n_dims);
        for (uint32_t d = 0; !rc && d < t->n_dims; d++) rc = buf_u64(&h, t->ne[d]);
        if (!rc) rc = buf_u32(&h, t->type);
        if (!rc) rc = buf_u64(&h, t->offset);
    }
    if (rc) {
        br_buf_free(&h);
        return br_err_set(err, rc, "out of memory building the header");
    }
    w->f = fopen(path, "wb");
    if (!w->f) {
        br_buf_free(&h);
        return br_err_set(err, BR_E_IO, "%s: %s", path, strerror(errno));
    }
    free(w->path);
    if (!(w->path = strdup(path))) {
        br_buf_free(&h);
        fclose(w->f);
        w->f = NULL;
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    uint64_t pad = (w->alignment - h.len % w->alignment) % w->alignment;
    if (fwrite(h.data, 1, h.len, w->f) != h.len || write_zeros(w->f, pad)) rc = BR_E_IO;
    br_buf_free(&h);
    if (rc) return br_err_set(err, rc, "%s: write failed: %s", path, strerror(errno));
    w->cur = 0;
    w->cur_done = 0;
    w->data_bytes = 0;
    return BR_OK;
}

int br_gguf_writer_write(struct br_gguf_writer *w, const void *data, size_t n, struct br_err *err)
{
    const uint8_t *p = data;
    if (!w->f) return br_err_set(err, BR_E_INVALID, "write before begin");
    while (n > 0) {
        if (w->cur >= w->n_tensors)
            return br_err_set(err, BR_E_INVALID, "more tensor data written than declared");
        struct wtensor *t = &w->tensors[w->cur];
        if (w->cur_done == 0 && w->data_bytes < t->offset) {
            if (write_zeros(w->f, t->offset - w->data_bytes))
                return br_err_set(err, BR_E_IO, "%s: write failed", w->path);
            w->data_bytes = t->offset;
        }
        uint64_t left = t->nbytes - w->cur_done;
        size_t k = n < left ? n : (size_t)left;
        if (fwrite(p, 1, k, w->f) != k)
            return br_err_set(err, BR_E_IO, "%s: write failed: %s", w->path, strerror(errno));
        p += k;
        n -= k;
        w->cur_done += k;
        w->data_bytes += k;
        if (w->cur_done == t->nbytes) {
            w->cur++;
            w->cur_done = 0;
        }
    }
    return BR_OK;
}

int br_gguf_writer_finish(struct br_gguf_writer *w, struct br_err *err)
{
    if (!w->f) return br_err_set(err, BR_E_INVALID, "finish before begin");
    if (w->cur != w->n_tensors) {
        int rc = br_err_set(err, BR_E_INVALID, "tensor '%s' is missing %llu bytes",
                            w->tensors[w->cur].name,
                            (unsigned long long)(w->tensors[w->cur].nbytes - w->cur_done));
        return rc;
    }
    /* Pad the file to the alignment so concatenated readers see whole blocks. */
    uint64_t pad = (w->alignment - w->data_bytes % w->alignment) % w->alignment;
    int rc = write_zeros(w->f, pad);
    if (fclose(w->f) != 0) rc = BR_E_IO;
    w->f = NULL;
    if (rc) return br_err_set(err, BR_E_IO, "%s: write failed", w->path);
    return BR_OK;
}
