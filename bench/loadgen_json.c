/*
 * A small JSON reader for the load generator (see loadgen.h): benchmark datasets are JSONL
 * files, and the tests read back the reports we write. Recursive descent over RFC 8259
 * with a depth bound, building an owned tree; numbers are doubles (ids and counts stay
 * exact below 2^53), strings are decoded to UTF-8 including \u surrogate pairs.
 * Invariant: on any error the partial tree is freed and nothing leaks.
 */
#include <stdlib.h>
#include <string.h>

#include "bench/loadgen.h"

#define MAX_DEPTH 64

struct parser {
    const char *s;
    size_t len, pos;
    struct br_err *err;
};

static int fail(struct parser *p, const char *what)
{
    return br_err_set(p->err, BR_E_FORMAT, "JSON: %s at byte %zu", what, p->pos);
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static bool lit(struct parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n)) return false;
    p->pos += n;
    return true;
}

static void free_value(struct br_loadgen_json *v)
{
    free(v->str);
    for (size_t i = 0; i < v->n; i++) {
        if (v->items) free_value(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static int hex4(struct parser *p, unsigned *out)
{
    if (p->len - p->pos < 4) return fail(p, "short \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return fail(p, "bad \\u escape");
    }
    *out = v;
    return BR_OK;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string at p->pos (which holds the opening quote) into a malloc'd buffer. The
 * decoded text is never longer than the source, so one allocation of that size suffices. */
static int parse_string(struct parser *p, char **out, size_t *out_len)
{
    size_t start = ++p->pos, end = start;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len) return fail(p, "unterminated string");
    char *o = malloc(end - start + 1);
    if (!o) return br_err_set(p->err, BR_E_NOMEM, "JSON: out of memory");
    size_t n = 0;
    int rc = BR_OK;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            rc = fail(p, "control character in string");
            break;
        }
        if (c != '\\') {
            o[n++] = (char)c;
            p->pos++;
            continue;
        }
        char e = p->s[p->pos + 1];
        p->pos += 2;
        switch (e) {
        case '"':
            o[n++] = '"';
            break;
        case '\\':
            o[n++] = '\\';
            break;
        case '/':
            o[n++] = '/';
            break;
        case 'b':
            o[n++] = '\b';
            break;
        case 'f':
            o[n++] = '\f';
            break;
        case 'n':
            o[n++] = '\n';
            break;
        case 'r':
            o[n++] = '\r';
            break;
        case 't':
            o[n++] = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if ((rc = hex4(p, &cp))) break;
            if (cp >= 0xD800 && cp < 0xDC00) { /* a high surrogate needs its low half */
                if (!lit(p, "\\u") || (rc = hex4(p, &lo)) || lo < 0xDC00 || lo > 0xDFFF) {
                    rc = rc ? rc : fail(p, "unpaired surrogate");
                    break;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                rc = fail(p, "unpaired surrogate");
                break;
            }
            n += put_utf8(o + n, cp);
            break;
        }
        default:
            rc = fail(p, "bad escape");
            break;
        }
        if (rc) break;
    }
    if (rc) {
        free(o);
        return rc;
    }
    o[n] = '\0';
    p->pos = end + 1;
    *out = o;
    *out_len = n;
    return BR_OK;
}

static int parse_number(struct parser *p, struct br_loadgen_json *v)
{
    size_t start = p->pos;
    bool is_int = true;
    if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
    size_t digits = p->pos;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    if (p->pos == digits) return fail(p, "bad number");
    if (p->s[digits] == '0' && p->pos - digits > 1) return fail(p, "leading zero");
    if (p->pos < p->len && p->s[p->pos] == '.') {
        is_int = false;
        size_t f = ++p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == f) return fail(p, "bad fraction");
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        is_int = false;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        size_t e = p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == e) return fail(p, "bad exponent");
    }
    char buf[64];
    size_t n = p->pos - start;
    if (n >= sizeof buf) return fail(p, "number too long");
    memcpy(buf, p->s + start, n);
    buf[n] = '\0';
    v->type = BR_LOADGEN_JSON_NUMBER;
    v->num = strtod(buf, NULL);
    v->is_int = is_int;
    return BR_OK;
}

/* Appends one zeroed slot to a container; returns it or NULL. */
static struct br_loadgen_json *grow(struct br_loadgen_json *v, size_t *cap, bool keys)
{
    if (v->n == *cap) {
        size_t c = *cap ? *cap * 2 : 4;
        struct br_loadgen_json *it = realloc(v->items, c * sizeof *it);
        if (!it) return NULL;
        v->items = it;
        if (keys) {
            char **k = realloc(v->keys, c * sizeof *k);
            if (!k) return NULL;
            v->keys = k;
        }
        *cap = c;
    }
    memset(&v->items[v->n], 0, sizeof v->items[v->n]);
    if (keys) v->keys[v->n] = NULL;
    return &v->items[v->n++];
}

static int parse_value(struct parser *p, struct br_loadgen_json *v, int depth)
{
    skip_ws(p);
    if (p->pos >= p->len) return fail(p, "unexpected end");
    char c = p->s[p->pos];
    if (c == '{' || c == '[') {
        bool obj = c == '{';
        if (depth >= MAX_DEPTH) return fail(p, "nesting too deep");
        v->type = obj ? BR_LOADGEN_JSON_OBJECT : BR_LOADGEN_JSON_ARRAY;
        p->pos++;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
            p->pos++;
            return BR_OK;
        }
        size_t cap = 0;
        for (;;) {
            struct br_loadgen_json *item = grow(v, &cap, obj);
            if (!item) return br_err_set(p->err, BR_E_NOMEM, "JSON: out of memory");
            int rc;
            if (obj) {
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != '"') return fail(p, "expected a key");
                size_t kl;
                if ((rc = parse_string(p, &v->keys[v->n - 1], &kl))) return rc;
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':') return fail(p, "expected ':'");
                p->pos++;
            }
            if ((rc = parse_value(p, item, depth + 1))) return rc;
            skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
                p->pos++;
                return BR_OK;
            }
            return fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (c == '"') {
        v->type = BR_LOADGEN_JSON_STRING;
        return parse_string(p, &v->str, &v->str_len);
    }
    if (lit(p, "true")) return v->type = BR_LOADGEN_JSON_BOOL, v->b = true, BR_OK;
    if (lit(p, "false")) return v->type = BR_LOADGEN_JSON_BOOL, v->b = false, BR_OK;
    if (lit(p, "null")) return v->type = BR_LOADGEN_JSON_NULL, BR_OK;
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    return fail(p, "unexpected character");
}

int br_loadgen_json_parse(const char *s, size_t len, struct br_loadgen_json **out,
                          struct br_err *err)
{
    *out = NULL;
    struct br_loadgen_json *v = calloc(1, sizeof *v);
    if (!v) return br_err_set(err, BR_E_NOMEM, "JSON: out of memory");
    struct parser p = {s, len, 0, err};
    int rc = parse_value(&p, v, 0);
    if (!rc) {
        skip_ws(&p);
        if (p.pos != p.len) rc = fail(&p, "trailing characters");
    }
    if (rc) {
        free_value(v);
        free(v);
        return rc;
    }
    *out = v;
    return BR_OK;
}

const struct br_loadgen_json *br_loadgen_json_get(const struct br_loadgen_json *obj,
                                                  const char *key)
{
    if (!obj || obj->type != BR_LOADGEN_JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (obj->keys[i] && !strcmp(obj->keys[i], key)) return &obj->items[i];
    return NULL;
}

void br_loadgen_json_free(struct br_loadgen_json **j)
{
    if (!j || !*j) return;
    free_value(*j);
    free(*j);
    *j = NULL;
}

/* ---- JSONL datasets ------------------------------------------------------------------- */

static int prompt_from_line(const struct br_loadgen_json *o, int32_t default_max,
                            struct br_loadgen_prompt *p, size_t line, struct br_err *err)
{
    const struct br_loadgen_json *pr = br_loadgen_json_get(o, "prompt");
    const struct br_loadgen_json *tk = br_loadgen_json_get(o, "tokens");
    const struct br_loadgen_json *mt = br_loadgen_json_get(o, "max_tokens");
    if (o->type != BR_LOADGEN_JSON_OBJECT)
        return br_err_set(err, BR_E_FORMAT, "line %zu: not a JSON object", line);
    if (!!pr == !!tk)
        return br_err_set(err, BR_E_FORMAT,
                          "line %zu: need exactly one of \"prompt\" and \"tokens\"", line);
    p->max_tokens = default_max;
    if (mt) {
        if (mt->type != BR_LOADGEN_JSON_NUMBER || !mt->is_int || mt->num < 1 || mt->num > 65536)
            return br_err_set(err, BR_E_FORMAT,
                              "line %zu: max_tokens must be an integer in [1, 65536]", line);
        p->max_tokens = (int32_t)mt->num;
    }
    if (pr) {
        if (pr->type != BR_LOADGEN_JSON_STRING)
            return br_err_set(err, BR_E_FORMAT, "line %zu: \"prompt\" must be a string", line);
        p->text = malloc(pr->str_len + 1);
        if (!p->text) return br_err_set(err, BR_E_NOMEM, "line %zu: out of memory", line);
        memcpy(p->text, pr->str, pr->str_len + 1);
        p->text_len = pr->str_len;
        return BR_OK;
    }
    if (tk->type != BR_LOADGEN_JSON_ARRAY || tk->n == 0 || tk->n > 131072)
        return br_err_set(err, BR_E_FORMAT,
                          "line %zu: \"tokens\" must be an array of 1..131072 ids", line);
    p->tokens = malloc(tk->n * sizeof *p->tokens);
    if (!p->tokens) return br_err_set(err, BR_E_NOMEM, "line %zu: out of memory", line);
    p->n_tokens = (uint32_t)tk->n;
    for (size_t i = 0; i < tk->n; i++) {
        const struct br_loadgen_json *t = &tk->items[i];
        if (t->type != BR_LOADGEN_JSON_NUMBER || !t->is_int || t->num < 0 || t->num > 2147483647.0)
            return br_err_set(err, BR_E_FORMAT,
                              "line %zu: tokens[%zu] must be a non-negative integer", line, i);
        p->tokens[i] = (int32_t)t->num;
    }
    return BR_OK;
}

int br_loadgen_workload_load(const char *path, int32_t default_max_tokens,
                             struct br_loadgen_workload *out, struct br_err *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return br_err_set(err, BR_E_IO, "cannot open dataset %s", path);
    char *line = NULL;
    size_t line_cap = 0, cap = 0, lineno = 0;
    ssize_t got;
    int rc = BR_OK;
    while ((got = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) n--;
        if (n == 0) continue;
        struct br_loadgen_json *o = NULL;
        if ((rc = br_loadgen_json_parse(line, n, &o, err))) {
            br_err_prefix(err, rc, "%s: line %zu", path, lineno);
            break;
        }
        if (out->n == cap) {
            size_t c = cap ? cap * 2 : 64;
            struct br_loadgen_prompt *it = realloc(out->items, c * sizeof *it);
            if (!it) {
                br_loadgen_json_free(&o);
                rc = br_err_set(err, BR_E_NOMEM, "%s: out of memory", path);
                break;
            }
            out->items = it;
            cap = c;
        }
        struct br_loadgen_prompt *p = &out->items[out->n++];
        memset(p, 0, sizeof *p);
        rc = prompt_from_line(o, default_max_tokens, p, lineno, err);
        br_loadgen_json_free(&o);
        if (rc) {
            br_err_prefix(err, rc, "%s", path);
            break;
        }
    }
    free(line);
    if (!rc && ferror(f)) rc = br_err_set(err, BR_E_IO, "reading %s failed", path);
    fclose(f);
    if (!rc && out->n == 0) rc = br_err_set(err, BR_E_FORMAT, "%s: no prompts", path);
    if (rc) br_loadgen_workload_free(out);
    return rc;
}
