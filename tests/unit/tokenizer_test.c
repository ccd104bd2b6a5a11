/*
 * Tests of coordinator/tokenizer: both tokenizers built from the real Llama-3 and Llama-2
 * vocabularies in tests/data/tokenizer must reproduce every reference case id for id
 * and decode back to the text; special-token parsing, BOS handling, the streaming
 * detokenizer, the pre-tokenizer rules, hostile input, and loading through a GGUF file.
 *
 * The data files are parsed here with a small JSON string reader, so the tests depend on
 * nothing but the tokenizer and the GGUF writer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/tokenizer.h"
#include "coordinator/tokenizer_pre.h"
#include "coordinator/unicode.h"
#include "sharding/gguf.h"
#include "test_util.h"

/* ---- data files ---- */

static size_t put_utf8(uint32_t cp, char *out)
{
    return br_uc_encode(cp, (uint8_t *)out);
}

static int hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        *v = *v * 16 + (uint32_t)d;
    }
    return 0;
}

/* Reads the JSON string starting at the quote *pp into out (room: as many bytes as the
 * escaped form); returns its length and leaves *pp after the closing quote. */
static size_t json_string(const char **pp, char *out)
{
    const char *p = *pp;
    assert_true(*p == '"');
    p++;
    size_t n = 0;
    while (*p != '"') {
        assert_true(*p != '\0');
        if (*p != '\\') {
            out[n++] = *p++;
            continue;
        }
        p++;
        switch (*p++) {
        case '"':
            out[n++] = '"';
            break;
        case '\\':
            out[n++] = '\\';
            break;
        case '/':
            out[n++] = '/';
            break;
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'u': {
            uint32_t cp, lo;
            assert_int_equal(hex4(p, &cp), 0);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u' && !hex4(p + 2, &lo) &&
                lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            n += put_utf8(cp, out + n);
            break;
        }
        default:
            fail_msg("bad JSON escape");
        }
    }
    *pp = p + 1;
    return n;
}

struct tcase {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n_ids;
};

struct vocab {
    int32_t n;
    char **tok;
    size_t *len;
    float *score;
    int32_t *type;
    size_t n_merges;
    char **merge;
};

struct fixture {
    struct vocab v3, v2;
    struct br_tok *l3, *l2;
    struct tcase *c3, *c2;
    size_t n3, n2;
};

/* Splits a file into NUL-terminated lines in place; returns the count. */
static size_t split_lines(char *buf, size_t len, char ***lines)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += buf[i] == '\n';
    *lines = malloc((n + 1) * sizeof **lines);
    size_t k = 0;
    char *s = buf;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\n') {
            buf[i] = '\0';
            (*lines)[k++] = s;
            s = buf + i + 1;
        }
    }
    if (s < buf + len) (*lines)[k++] = s;
    return k;
}

static char *read_text(const char *rel, size_t *len)
{
    uint8_t *b = br_test_data_read(rel, len);
    if (!b) fail_msg("cannot read test data file %s", rel);
    char *s = realloc(b, *len + 1);
    s[*len] = '\0';
    return s;
}

static size_t load_cases(const char *rel, struct tcase **out)
{
    size_t len;
    char *buf = read_text(rel, &len);
    char **lines;
    size_t n = split_lines(buf, len, &lines);
    struct tcase *c = calloc(n, sizeof *c);
    for (size_t i = 0; i < n; i++) {
        const char *p = strstr(lines[i], "\"text\"");
        assert_non_null(p);
        p = strchr(p + 6, '"');
        c[i].text = malloc(strlen(p) + 1);
        c[i].len = json_string(&p, c[i].text);
        p = strstr(p, "\"ids\"");
        assert_non_null(p);
        p = strchr(p, '[') + 1;
        c[i].ids = malloc(strlen(p) * sizeof *c[i].ids);
        while (*p && *p != ']') {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) {
                p++;
                continue;
            }
            c[i].ids[c[i].n_ids++] = (int32_t)v;
            p = end;
        }
    }
    free(lines);
    free(buf);
    *out = c;
    return n;
}

static void load_llama3(struct vocab *v)
{
    size_t len;
    char *buf = read_text("tokenizer/llama3_vocab.txt", &len);
    char **lines;
    size_t n = split_lines(buf, len, &lines);
    assert_int_equal(n, 128256);
    v->n = (int32_t)n;
    v->tok = malloc(n * sizeof *v->tok);
    v->len = malloc(n * sizeof *v->len);
    v->type = malloc(n * sizeof *v->type);
    for (size_t i = 0; i < n; i++) {
        const char *p = lines[i];
        v->tok[i] = malloc(strlen(p) + 1);
        v->len[i] = json_string(&p, v->tok[i]);
        v->type[i] = i >= 128000 ? BR_TOK_TYPE_CONTROL : BR_TOK_TYPE_NORMAL;
    }
    free(lines);
    free(buf);
    char *mbuf = read_text("tokenizer/llama3_merges.txt", &len);
    v->n_merges = split_lines(mbuf, len, &v->merge);
    assert_int_equal(v->n_merges, 280147);
    /* The merge strings point into mbuf, which stays alive with the first one. */
}

static void load_llama2(struct vocab *v)
{
    size_t len;
    char *buf = read_text("tokenizer/llama2_vocab.tsv", &len);
    char **lines;
    size_t n = split_lines(buf, len, &lines) - 1; /* header */
    assert_int_equal(n, 32000);
    v->n = (int32_t)n;
    v->tok = malloc(n * sizeof *v->tok);
    v->len = malloc(n * sizeof *v->len);
    v->type = malloc(n * sizeof *v->type);
    v->score = malloc(n * sizeof *v->score);
    for (size_t i = 0; i < n; i++) {
        char *p = lines[i + 1];
        assert_int_equal(strtol(p, &p, 10), (long)i);
        const char *q = strchr(p, '"');
        v->tok[i] = malloc(strlen(q) + 1);
        v->len[i] = json_string(&q, v->tok[i]);
        char *e;
        v->score[i] = strtof(q, &e);
        v->type[i] = (int32_t)strtol(e, NULL, 10);
    }
    free(lines);
    free(buf);
}

static void free_vocab(struct vocab *v)
{
    for (int32_t i = 0; i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->len);
    free(v->type);
    free(v->score);
    if (v->merge) free(v->merge[0]);
    free(v->merge);
}

static void params_llama3(const struct vocab *v, struct br_tok_params *p)
{
    br_tok_params_init(p);
    p->model = BR_TOK_MODEL_BPE;
    p->pre = "llama-bpe";
    p->n_tokens = v->n;
    p->tokens = (const char *const *)v->tok;
    p->token_lens = v->len;
    p->token_types = v->type;
    p->n_merges = v->n_merges;
    p->merges = (const char *const *)v->merge;
    p->bos_id = 128000;
    p->eos_id = 128001;
}

static void params_llama2(const struct vocab *v, struct br_tok_params *p)
{
    br_tok_params_init(p);
    p->model = BR_TOK_MODEL_SPM;
    p->n_tokens = v->n;
    p->tokens = (const char *const *)v->tok;
    p->token_lens = v->len;
    p->token_types = v->type;
    p->scores = v->score;
    p->bos_id = 1;
    p->eos_id = 2;
    p->unk_id = 0;
}

static int setup(void **state)
{
    static const char *const need[] = {"tokenizer/llama3_vocab.txt", "tokenizer/llama3_merges.txt",
                                       "tokenizer/llama3_cases.jsonl", "tokenizer/llama2_vocab.tsv",
                                       "tokenizer/llama2_cases.jsonl"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        if (access(br_test_data(need[i]), R_OK) != 0) {
            fprintf(stderr, "missing test data file %s (tests/data/README.md lists it)\n",
                    br_test_data(need[i]));
            return -1;
        }
    }
    struct fixture *f = calloc(1, sizeof *f);
    struct br_err err = {{0}};
    struct br_tok_params p;
    load_llama3(&f->v3);
    load_llama2(&f->v2);
    params_llama3(&f->v3, &p);
    if (br_tok_create(&p, &f->l3, &err)) fail_msg("llama3: %s", err.msg);
    params_llama2(&f->v2, &p);
    if (br_tok_create(&p, &f->l2, &err)) fail_msg("llama2: %s", err.msg);
    f->n3 = load_cases("tokenizer/llama3_cases.jsonl", &f->c3);
    f->n2 = load_cases("tokenizer/llama2_cases.jsonl", &f->c2);
    *state = f;
    return 0;
}

static void free_cases(struct tcase *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].text);
        free(c[i].ids);
    }
    free(c);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (!f) return 0; /* the setup failed before making one */
    br_tok_destroy(&f->l3);
    br_tok_destroy(&f->l2);
    free_vocab(&f->v3);
    free_vocab(&f->v2);
    free_cases(f->c3, f->n3);
    free_cases(f->c2, f->n2);
    free(f);
    return 0;
}

/* ---- helpers ---- */

static void encode(const struct br_tok *t, const char *s, size_t len, unsigned flags, int32_t **ids,
                   size_t *n)
{
    struct br_err err = {{0}};
    if (br_tok_encode(t, s, len, flags, ids, n, &err)) fail_msg("encode: %s", err.msg);
}

static void assert_round_trip(const struct br_tok *t, const char *s, size_t len, const int32_t *ids,
                              size_t n)
{
    char *out;
    size_t out_len;
    struct br_err err = {{0}};
    if (br_tok_decode(t, ids, n, 0, &out, &out_len, &err)) fail_msg("decode: %s", err.msg);
    assert_int_equal(out_len, len);
    assert_memory_equal(out, s, len);
    free(out);
}

/* Runs every case; returns how many matched (all must). */
static size_t check_cases(const struct br_tok *t, const struct tcase *c, size_t n, unsigned flags,
                          const char *name)
{
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t *ids;
        size_t n_ids;
        encode(t, c[i].text, c[i].len, flags, &ids, &n_ids);
        int same = n_ids == c[i].n_ids && memcmp(ids, c[i].ids, n_ids * sizeof *ids) == 0;
        if (!same) {
            fprintf(stderr, "%s case %zu mismatch: \"%.*s\"\n  got     ", name, i, (int)c[i].len,
                    c[i].text);
            for (size_t k = 0; k < n_ids; k++) fprintf(stderr, " %d", ids[k]);
            fprintf(stderr, "\n  expected");
            for (size_t k = 0; k < c[i].n_ids; k++) fprintf(stderr, " %d", c[i].ids[k]);
            fprintf(stderr, "\n");
        } else {
            ok++;
        }
        assert_round_trip(t, c[i].text, c[i].len, ids, n_ids);
        free(ids);
    }
    return ok;
}

/* ---- tests ---- */

static void test_llama3_cases(void **state)
{
    struct fixture *f = *state;
    size_t ok = check_cases(f->l3, f->c3, f->n3, 0, "llama3");
    printf("llama3: %zu of %zu cases match\n", ok, f->n3);
    assert_int_equal(ok, f->n3);
    assert_string_equal(br_tok_pre_name(f->l3), "llama3");
    /* The heap merge path gives the same answers as the short-word path. */
    assert_int_equal(check_cases(f->l3, f->c3, f->n3, BR_TOK_FORCE_HEAP, "llama3 heap"), f->n3);
}

static void test_llama2_cases(void **state)
{
    struct fixture *f = *state;
    size_t ok = check_cases(f->l2, f->c2, f->n2, 0, "llama2");
    printf("llama2: %zu of %zu cases match\n", ok, f->n2);
    assert_int_equal(ok, f->n2);
    assert_string_equal(br_tok_pre_name(f->l2), "spm");
}

/* Without a pre name, the Llama-3 vocabulary selects the Llama-3 rules by itself. */
static void test_llama3_detected(void **state)
{
    struct fixture *f = *state;
    struct br_tok_params p;
    struct br_tok *t = NULL;
    params_llama3(&f->v3, &p);
    p.pre = NULL;
    assert_int_equal(br_tok_create(&p, &t, NULL), BR_OK);
    assert_string_equal(br_tok_pre_name(t), "llama3");
    assert_int_equal(check_cases(t, f->c3, f->n3, 0, "llama3 detected"), f->n3);
    br_tok_destroy(&t);
    /* The other rule sets over the same vocabulary: any text still comes back whole. */
    const char *others[] = {"gpt-2", "falcon", "default"};
    for (size_t k = 0; k < 3; k++) {
        p.pre = others[k];
        assert_int_equal(br_tok_create(&p, &t, NULL), BR_OK);
        assert_string_equal(br_tok_pre_name(t), k == 1 ? "falcon" : "gpt2");
        for (size_t i = 0; i < f->n3; i++) {
            int32_t *ids;
            size_t n;
            encode(t, f->c3[i].text, f->c3[i].len, 0, &ids, &n);
            assert_round_trip(t, f->c3[i].text, f->c3[i].len, ids, n);
            free(ids);
        }
        br_tok_destroy(&t);
    }
    p.pre = "no-such-rules";
    struct br_err err = {{0}};
    assert_int_equal(br_tok_create(&p, &t, &err), BR_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "no-such-rules"));
    assert_null(t);
    br_tok_destroy(&t); /* NULL-safe */
}

static void test_special_tokens(void **state)
{
    struct fixture *f = *state;
    const char *s = "<|begin_of_text|>Hi<|eot_id|>";
    int32_t *ids;
    size_t n;
    encode(f->l3, s, strlen(s), BR_TOK_PARSE_SPECIAL, &ids, &n);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 128000);
    assert_int_equal(ids[1], 13347); /* "Hi" */
    assert_int_equal(ids[2], 128009);
    free(ids);
    /* Parsing off: the markers are plain text, and no id is a control token. */
    encode(f->l3, s, strlen(s), 0, &ids, &n);
    assert_true(n > 3);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] < 128000);
    assert_round_trip(f->l3, s, strlen(s), ids, n);
    free(ids);
    /* BOS comes only on request, and only where the model wants one. */
    encode(f->l3, "Hi", 2, BR_TOK_ADD_BOS, &ids, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 128000);
    free(ids);
    encode(f->l3, "", 0, BR_TOK_ADD_BOS | BR_TOK_ADD_EOS, &ids, &n);
    assert_int_equal(n, 1); /* add_eos defaults to false */
    free(ids);
    encode(f->l3, "", 0, 0, &ids, &n);
    assert_int_equal(n, 0);
    free(ids);

    /* Decoding control tokens: nothing by default, their text on request. */
    int32_t seq[] = {128000, 13347, 128009};
    char *out;
    size_t len;
    assert_int_equal(br_tok_decode(f->l3, seq, 3, 0, &out, &len, NULL), BR_OK);
    assert_string_equal(out, "Hi");
    free(out);
    assert_int_equal(br_tok_decode(f->l3, seq, 3, BR_TOK_DECODE_SPECIAL, &out, &len, NULL), BR_OK);
    assert_string_equal(out, s);
    free(out);
    int32_t bad = 128256;
    assert_int_equal(br_tok_decode(f->l3, &bad, 1, 0, &out, &len, NULL), BR_E_RANGE);

    assert_true(br_tok_is_eog(f->l3, 128009));
    assert_true(br_tok_is_eog(f->l3, 128001));
    assert_false(br_tok_is_eog(f->l3, 128000));
    assert_false(br_tok_is_eog(f->l3, 13347));
    assert_int_equal(br_tok_eot(f->l3), 128009);
    assert_int_equal(br_tok_bos(f->l3), 128000);
    assert_int_equal(br_tok_eos(f->l3), 128001);
    assert_int_equal(br_tok_n_vocab(f->l3), 128256);
    const char *pc;
    assert_int_equal(br_tok_piece(f->l3, 220, &pc, &len), BR_OK); /* "Ġ" */
    assert_int_equal(len, 1);
    assert_int_equal(pc[0], ' ');
    assert_int_equal(br_tok_piece(f->l3, -1, &pc, &len), BR_E_RANGE);

    /* SentencePiece: <s> parsed, the space prefix applies again after it. */
    encode(f->l2, "<s>Hello", 8, BR_TOK_PARSE_SPECIAL, &ids, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 15043); /* "▁Hello" */
    free(ids);
    encode(f->l2, "<s>Hello", 8, 0, &ids, &n);
    assert_true(n > 2);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] != 1);
    assert_round_trip(f->l2, "<s>Hello", 8, ids, n);
    free(ids);
    encode(f->l2, "Hello", 5, BR_TOK_ADD_BOS, &ids, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 1);
    assert_round_trip(f->l2, "Hello", 5, ids, n); /* BOS renders as nothing */
    free(ids);
    assert_true(br_tok_is_eog(f->l2, 2));
    assert_int_equal(br_tok_eot(f->l2), -1);
    /* The leading space is kept on request. */
    int32_t hello = 15043;
    assert_int_equal(br_tok_decode(f->l2, &hello, 1, BR_TOK_DECODE_KEEP_SPACE, &out, &len, NULL),
                     BR_OK);
    assert_string_equal(out, " Hello");
    free(out);
}

/* Pushes ids one at a time; every chunk must be whole UTF-8 and the chunks must add up. */
static void stream_check(const struct br_tok *t, const char *s, unsigned enc_flags)
{
    int32_t *ids;
    size_t n;
    encode(t, s, strlen(s), enc_flags, &ids, &n);
    struct br_detok *d;
    assert_int_equal(br_detok_create(t, BR_TOK_DECODE_STRIP_SPACE, &d), BR_OK);
    char acc[1024];
    size_t m = 0;
    int split_seen = 0;
    for (size_t i = 0; i < n; i++) {
        const char *out;
        size_t len;
        assert_int_equal(br_detok_push(d, ids[i], &out, &len), BR_OK);
        const char *piece;
        size_t plen;
        br_tok_piece(t, ids[i], &piece, &plen);
        if (len != plen) split_seen = 1;
        assert_int_equal(br_uc_incomplete_tail((const uint8_t *)out, len), 0);
        for (size_t k = 0; k < len;) { /* whole characters only */
            uint32_t cp;
            k += br_uc_decode((const uint8_t *)out + k, len - k, &cp);
            assert_true(cp < BR_UC_INVALID_BASE);
        }
        memcpy(acc + m, out, len);
        m += len;
    }
    const char *out;
    size_t len;
    br_detok_flush(d, &out, &len);
    assert_int_equal(len, 0);
    assert_int_equal(m, strlen(s));
    assert_memory_equal(acc, s, m);
    assert_true(split_seen);
    br_detok_destroy(&d);
    assert_null(d);
    br_detok_destroy(&d);
    free(ids);
}

static void test_stream(void **state)
{
    struct fixture *f = *state;
    /* Emoji and rare CJK are spelled with byte tokens that end inside a character. */
    stream_check(f->l3, "ok 🦙🧪 漢字鬱 ∮ done", 0);
    stream_check(f->l2, "ok 🦙🧪 鬱 done", 0);

    /* An unfinished character waits; flush hands it out. */
    struct br_detok *d;
    assert_int_equal(br_detok_create(f->l2, BR_TOK_DECODE_STRIP_SPACE, &d), BR_OK);
    int32_t f0 = br_tok_lookup(f->l2, "<0xF0>", 6), b9f = br_tok_lookup(f->l2, "<0x9F>", 6);
    assert_true(f0 >= 0 && b9f >= 0);
    const char *out;
    size_t len;
    assert_int_equal(br_detok_push(d, f0, &out, &len), BR_OK);
    assert_int_equal(len, 0);
    assert_int_equal(br_detok_push(d, b9f, &out, &len), BR_OK);
    assert_int_equal(len, 0);
    br_detok_flush(d, &out, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(out, "\xF0\x9F", 2);
    /* After a flush the object starts over. */
    assert_int_equal(br_detok_push(d, 15043, &out, &len), BR_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(out, "Hello", 5);
    assert_int_equal(br_detok_push(d, 99999, &out, &len), BR_E_RANGE);
    br_detok_destroy(&d);

    /* By default a stream continues a prompt and keeps the space of its first piece. */
    assert_int_equal(br_detok_create(f->l2, 0, &d), BR_OK);
    assert_int_equal(br_detok_push(d, 15043, &out, &len), BR_OK);
    assert_int_equal(len, 6);
    assert_memory_equal(out, " Hello", 6);
    br_detok_destroy(&d);
}

/* Pre-tokenizer words as strings joined by a separator (ctx: output cursor, text, output
 * start, separator). */
static int collect(void *ctx, size_t begin, size_t end)
{
    char **pp = ctx;
    char *p = pp[0];
    const char *text = pp[1];
    if (p != pp[2]) *p++ = *pp[3];
    memcpy(p, text + begin, end - begin);
    pp[0] = p + (end - begin);
    return 0;
}

static void check_split_sep(enum br_tok_pre pre, const char *text, const char *want, char sep)
{
    size_t len = strlen(text);
    struct br_tok_chars c = {0};
    c.cp = malloc((len + 1) * sizeof *c.cp);
    c.cls = malloc(len + 1);
    c.off = malloc((len + 1) * sizeof *c.off);
    for (size_t i = 0; i < len;) {
        c.off[c.n] = (uint32_t)i;
        i += br_uc_decode((const uint8_t *)text + i, len - i, &c.cp[c.n]);
        c.cls[c.n] = (uint8_t)br_uc_class_of(c.cp[c.n]);
        c.n++;
    }
    c.off[c.n] = (uint32_t)len;
    char buf[512];
    char *ctx[4] = {buf, (char *)text, buf, &sep};
    assert_int_equal(br_tok_pre_split(pre, &c, collect, ctx), 0);
    *ctx[0] = '\0';
    if (strcmp(buf, want) != 0)
        fail_msg("split of \"%s\": got \"%s\", want \"%s\"", text, buf, want);
    free(c.cp);
    free(c.cls);
    free(c.off);
}

static void check_split(enum br_tok_pre pre, const char *text, const char *want)
{
    check_split_sep(pre, text, want, '|');
}

/* Random strings over letters, digits, marks, punctuation, symbols and every kind of space,
 * split by Python's `regex` module with each model's pattern (Falcon: its three splits in
 * turn); words are separated by \001. */
static const struct {
    enum br_tok_pre pre;
    const char *text, *want;
} regex_cases[] = {
    {BR_TOK_PRE_LLAMA3, "\342\205\240\302\240;\034\342\200\224\015\015\034\342\200\250\357\274\221",
     "\342\205\240\001\302\240\001;"
     "\034\342\200\224\015\015\001\034\001\342\200\250\001\357\274\221"},
    {BR_TOK_PRE_LLAMA3, "\015m;>'V\344\270\255\302\262T\342\200\234@;",
     "\015\001m\001;>'\001V\344\270\255\001\302\262\001T\001\342\200\234@;"},
    {BR_TOK_PRE_LLAMA3, "\340\244\225\342\200\213 \340\244\277Z\303\211eRt\015!\342\200\234S",
     "\340\244\225\001\342\200\213\001 \340\244\277\001Z\303\211eRt\001\015\001!\342\200\234\001S"},
    {BR_TOK_PRE_LLAMA3, "|\134\342\200\224\012\303\251,\302\262=\013a",
     "|\134\342\200\224\012\001\303\251\001,\001\302\262\001=\001\013a"},
    {BR_TOK_PRE_LLAMA3, "v:\342\200\213+%\302\275v-~,\034<S",
     "v\001:\342\200\213+%\001\302\275\001v\001-~,\034<\001S"},
    {BR_TOK_PRE_LLAMA3, "\314\201M#M", "\314\201M\001#M"},
    {BR_TOK_PRE_LLAMA3, "}es\342\204\252a90", "}es\342\204\252a\00190"},
    {BR_TOK_PRE_LLAMA3, "\342\200\250{@", "\342\200\250\001{@"},
    {BR_TOK_PRE_LLAMA3, "E\314\201\357\274\221\012\305\277$\042V^",
     "E\001\314\201\001\357\274\221\001\012\001\305\277\001$\042\001V\001^"},
    {BR_TOK_PRE_LLAMA3, "Z%LD?mZR", "Z\001%LD\001?mZR"},
    {BR_TOK_PRE_LLAMA3, "\302\205\012\342\204\252\342\205\240\015;\034\015d&",
     "\302\205\012\001\342\204\252\001\342\205\240\001\015\001;\034\015\001d\001&"},
    {BR_TOK_PRE_LLAMA3, "}l@&9a$\342\200\224>s0\015@",
     "}l\001@&\0019\001a\001$\342\200\224>\001s\0010\001\015\001@"},
    {BR_TOK_PRE_LLAMA3, "\342\200\203\360\237\246\231mT'9\134_Z\340\244\225`=",
     "\342\200\203\001\360\237\246\231mT\001'\0019\001\134_\001Z\340\244\225\001`="},
    {BR_TOK_PRE_LLAMA3, "EEV0\302\277\302\262?Z\342\200\234",
     "EEV\0010\001\302\277\001\302\262\001?Z\001\342\200\234"},
    {BR_TOK_PRE_LLAMA3, "]\340\244\277:d\342\200\224\343\200\200\360\237\246\231D",
     "]\340\244\277:\001d\001\342\200\224\001\343\200\200\001\360\237\246\231D"},
    {BR_TOK_PRE_LLAMA3, "\015\357\274\221 ^,\340\244\225?\015 ",
     "\015\001\357\274\221\001 ^,\001\340\244\225\001?\015\001 "},
    {BR_TOK_PRE_LLAMA3, "\357\274\221\302\275\012\342\204\252}\343\200\200\327\220v&rMMt\034",
     "\357\274\221\302\275\001\012\001\342\204\252\001}\001\343\200\200\327\220v\001&rMMt\001\034"},
    {BR_TOK_PRE_LLAMA3, "!@-&\342\200\234\302\205=", "!@-&\342\200\234\001\302\205\001="},
    {BR_TOK_PRE_LLAMA3, "\012ed,\343\200\200\342\205\240\342\200\213\340\244\225\340\244\225E+",
     "\012\001ed\001,"
     "\001\343\200\200\001\342\205\240\001\342\200\213\340\244\225\340\244\225E\001+"},
    {BR_TOK_PRE_LLAMA3, "0se$%;", "0\001se\001$%;"},
    {BR_TOK_PRE_LLAMA3, "RT\012<]\303\211", "RT\001\012\001<]\001\303\211"},
    {BR_TOK_PRE_LLAMA3, "dV[D;`\357\273\277\303\251\302\277D\342\200\224t",
     "dV\001[D\001;`\357\273\277\001\303\251\001\302\277D\001\342\200\224t"},
    {BR_TOK_PRE_LLAMA3, "\342\200\250)^", "\342\200\250\001)^"},
    {BR_TOK_PRE_LLAMA3, "s\342\200\234\302\262", "s\001\342\200\234\001\302\262"},
    {BR_TOK_PRE_LLAMA3, "\343\200\200e^~", "\343\200\200e\001^~"},
    {BR_TOK_PRE_LLAMA3, "EE;\331\241]", "EE\001;\001\331\241\001]"},
    {BR_TOK_PRE_LLAMA3, "Td\042)v\342\204\252\342\200\250E&S\013\360\237\246\231Z\340\244\277",
     "Td\001\042)\001v\342\204\252\001\342\200\250E\001&"
     "S\001\013\001\360\237\246\231Z\001\340\244\277"},
    {BR_TOK_PRE_LLAMA3, "{{\302\277Z\327\220EvV\302\262l-&`",
     "{{\302\277\001Z\327\220EvV\001\302\262\001l\001-&`"},
    {BR_TOK_PRE_LLAMA3, "\302\277:\134\302\240\331\241v\303\251\034S",
     "\302\277:\134\001\302\240\001\331\241\001v\303\251\001\034S"},
    {BR_TOK_PRE_LLAMA3, "\342\200\234V\343\200\200s,l\013",
     "\342\200\234V\001\343\200\200s\001,l\001\013"},
    {BR_TOK_PRE_LLAMA3, "\357\273\277\302\205-Z]>'\305\277\340\244\225\012\303\251\011",
     "\357\273\277\001\302\205\001-Z\001]>'\001\305\277\340\244\225\001\012\001\303\251\001\011"},
    {BR_TOK_PRE_LLAMA3, "\357\273\277\134\013!|#\312\260-",
     "\357\273\277\134\001\013\001!|#\001\312\260\001-"},
    {BR_TOK_PRE_LLAMA3, "\302\262/\0129}.", "\302\262\001/\012\0019\001}."},
    {BR_TOK_PRE_LLAMA3, "~0DD\013(Te+\011l;", "~\0010\001DD\001\013\001(Te\001+\001\011l\001;"},
    {BR_TOK_PRE_LLAMA3, "+9%{\357\274\221\303\251\013\305\277~\340\244\277",
     "+\0019\001%{\001\357\274\221\001\303\251\001\013\305\277\001~\340\244\277"},
    {BR_TOK_PRE_LLAMA3, "|Et+\327\220T\305\277+\360\237\246\231)",
     "|Et\001+\327\220T\305\277\001+\360\237\246\231)"},
    {BR_TOK_PRE_LLAMA3,
     "\342\200\213\314\201s\342\200\203D#:", "\342\200\213\314\201\001s\001\342\200\203D\001#:"},
    {BR_TOK_PRE_LLAMA3, "S$!'r\357\274\221", "S\001$!'\001r\001\357\274\221"},
    {BR_TOK_PRE_LLAMA3, ";M\357\274\221\344\270\255", ";M\001\357\274\221\001\344\270\255"},
    {BR_TOK_PRE_LLAMA3, "\302\262]E\342\204\252\012\012\342\200\250-\012Z\342\200\250\344\270\255t",
     "\302\262\001]E\342\204\252\001\012\012\001\342\200\250\001-"
     "\012\001Z\001\342\200\250\344\270\255t"},
    {BR_TOK_PRE_GPT2, ".$(\331\241\303\251", ".$(\001\331\241\001\303\251"},
    {BR_TOK_PRE_GPT2, "\340\244\225 @.V%}d;:\012",
     "\340\244\225\001 @.\001V\001%}\001d\001;:\001\012"},
    {BR_TOK_PRE_GPT2, "a{\302\275\314\201\342\200\213\014\042\302\240|\342\200\2130m\342\200\203",
     "a\001{\001\302\275\001\314\201\342\200\213\001\014\001\042\001\302\240\001|"
     "\342\200\213\0010\001m\001\342\200\203"},
    {BR_TOK_PRE_GPT2, "L9?}V^\344\270\255|_s(\014vt",
     "L\0019\001?}\001V\001^\001\344\270\255\001|_\001s\001(\001\014\001vt"},
    {BR_TOK_PRE_GPT2, "\042\302\275&+\302\205S9e*t",
     "\042\001\302\275\001&+\001\302\205\001S\0019\001e\001*\001t"},
    {BR_TOK_PRE_GPT2, "\344\270\255`\342\204\252D\342\200\250",
     "\344\270\255\001`\001\342\204\252D\001\342\200\250"},
    {BR_TOK_PRE_GPT2, "\303\251\303\251\305\277\134\013",
     "\303\251\303\251\305\277\001\134\001\013"},
    {BR_TOK_PRE_GPT2, "V.\134\303\211\342\205\240=\342\205\240\302\262\011\303\251\034\342\205\240",
     "V\001.\134\001\303\211\001\342\205\240\001="
     "\001\342\205\240\302\262\001\011\001\303\251\001\034\001\342\205\240"},
    {BR_TOK_PRE_GPT2, "^\312\260{\340\244\2250>'", "^\001\312\260\001{\001\340\244\225\0010\001>'"},
    {BR_TOK_PRE_GPT2, "\303\211$\360\237\246\231\013\012%\344\270\255l\014a\327\220",
     "\303\211\001$\360\237\246\231\001\013\001\012\001%\001\344\270\255l\001\014\001a\327\220"},
    {BR_TOK_PRE_GPT2, "S\344\270\255T\303\251#\331\241\314\201L\302\205",
     "S\344\270\255T\303\251\001#\001\331\241\001\314\201\001L\001\302\205"},
    {BR_TOK_PRE_GPT2, "\011e\344\270\255:", "\011\001e\344\270\255\001:"},
    {BR_TOK_PRE_GPT2, "#$?\342\200\250\013d\042/\342\200\250",
     "#$?\001\342\200\250\001\013\001d\001\042/\001\342\200\250"},
    {BR_TOK_PRE_GPT2, "~M\015&\340\244\277S_dst\015",
     "~\001M\001\015\001&\340\244\277\001S\001_\001dst\001\015"},
    {BR_TOK_PRE_GPT2, ",Z\342\204\252<|", ",\001Z\342\204\252\001<|"},
    {BR_TOK_PRE_GPT2, ")?\340\244\277\013M\013\302\277L\034\340\244\277-\012\303\211/",
     ")?\340\244\277\001\013\001M\001\013\001\302\277\001L\001\034\340\244\277-"
     "\001\012\001\303\211\001/"},
    {BR_TOK_PRE_GPT2, "{\302\262%", "{\001\302\262\001%"},
    {BR_TOK_PRE_GPT2,
     "\340\244\225 \344\270\2550\357\274\221\344\270\255\302\2629\303\2119\331\241",
     "\340\244\225\001 "
     "\344\270\255\0010\357\274\221\001\344\270\255\001\302\2629\001\303\211\0019\331\241"},
    {BR_TOK_PRE_GPT2, "\342\200\224D,\357\274\221(\015~\327\220~\0159\015",
     "\342\200\224\001D\001,\001\357\274\221\001(\001\015\001~\001\327\220\001~"
     "\001\015\0019\001\015"},
    {BR_TOK_PRE_GPT2, "D!dV", "D\001!\001dV"},
    {BR_TOK_PRE_GPT2, "}m/&\331\241d\012", "}\001m\001/&\001\331\241\001d\001\012"},
    {BR_TOK_PRE_GPT2, "\357\274\221\342\204\252sm\012\314\201\342\204\252)[",
     "\357\274\221\001\342\204\252sm\001\012\001\314\201\001\342\204\252\001)["},
    {BR_TOK_PRE_GPT2, "\014\302\262\042\014", "\014\001\302\262\001\042\001\014"},
    {BR_TOK_PRE_GPT2, "\015E\343\200\200MSt\302\275\340\244\225\034\314\201\343\200\200'\015",
     "\015\001E\001\343\200\200\001MSt\001\302\275\001\340\244\225\001\034\314\201\001\343\200\200"
     "\001'\001\015"},
    {BR_TOK_PRE_GPT2, "l0\012 <", "l\0010\001\012\001 <"},
    {BR_TOK_PRE_GPT2, "m\302\277RD\342\204\252\302\240Em|@\302\240*\034",
     "m\001\302\277\001RD\342\204\252\001\302\240\001Em\001|@\001\302\240\001*\034"},
    {BR_TOK_PRE_GPT2, "/0\342\200\234]Z\302\262T\012",
     "/\0010\001\342\200\234]\001Z\001\302\262\001T\001\012"},
    {BR_TOK_PRE_GPT2, "%:[]#", "%:[]#"},
    {BR_TOK_PRE_GPT2, "\327\220\011m\034Z|", "\327\220\001\011\001m\001\034\001Z\001|"},
    {BR_TOK_PRE_GPT2, "\357\274\221#\314\201\342\200\234", "\357\274\221\001#\314\201\342\200\234"},
    {BR_TOK_PRE_GPT2, "\014\302\277\042_+l", "\014\001\302\277\042_+\001l"},
    {BR_TOK_PRE_GPT2, " #D`\344\270\255]/\015#0\015E\042>",
     " #\001D\001`\001\344\270\255\001]/\001\015\001#\0010\001\015\001E\001\042>"},
    {BR_TOK_PRE_GPT2, "mZ)\302\262\340\244\277r,$\312\260>",
     "mZ\001)\001\302\262\001\340\244\277\001r\001,$\001\312\260\001>"},
    {BR_TOK_PRE_GPT2, "9\357\273\277#\314\201\015\344\270\255E}",
     "9\001\357\273\277#\314\201\001\015\001\344\270\255E\001}"},
    {BR_TOK_PRE_GPT2, "\013\342\200\2039L@\360\237\246\231sl\340\244\225M!",
     "\013\001\342\200\203\0019\001L\001@\360\237\246\231\001sl\340\244\225M\001!"},
    {BR_TOK_PRE_GPT2, "\134#\014r\012\342\200\203{",
     "\134#\001\014\001r\001\012\001\342\200\203\001{"},
    {BR_TOK_PRE_GPT2, "m_-", "m\001_-"},
    {BR_TOK_PRE_GPT2, "\042\302\275\331\241\034&\303\251\314\201",
     "\042\001\302\275\331\241\001\034&\001\303\251\001\314\201"},
    {BR_TOK_PRE_GPT2, "\302\262\134\342\200\203E", "\302\262\001\134\001\342\200\203\001E"},
    {BR_TOK_PRE_GPT2, "\342\200\234\312\260T} }\342\200\250\011\013\331\241\340\244\225",
     "\342\200\234\001\312\260T\001}\001 "
     "}\001\342\200\250\011\001\013\001\331\241\001\340\244\225"},
    {BR_TOK_PRE_FALCON, "R*\013&<\303\211#\342\200\234^[\303\211<",
     "R\001*\001\013\001&<\001\303\211\001#\342\200\234^[\001\303\211\001<"},
    {BR_TOK_PRE_FALCON, "\342\200\213$\342\205\240<\357\273\277=SZ?\302\277",
     "\342\200\213\001$\001\342\205\240\001<\001\357\273\277\001=\001SZ\001?\302\277"},
    {BR_TOK_PRE_FALCON, "\302\262 %", "\302\262\001 \001%"},
    {BR_TOK_PRE_FALCON, "}r~@r\302\277~E.*\343\200\200-?",
     "}\001r\001~@\001r\001\302\277~\001E\001.*\001\343\200\200\001-?"},
    {BR_TOK_PRE_FALCON, "\303\251m\302\240", "\303\251m\001\302\240"},
    {BR_TOK_PRE_FALCON, "?\327\220lr\340\244\277", "?\001\327\220lr\001\340\244\277"},
    {BR_TOK_PRE_FALCON, ":L0r)\303\211 L[", ":\001L\0010\001r\001)\001\303\211\001 L\001["},
    {BR_TOK_PRE_FALCON, "D\312\260&:\342\200\234_\302\262\302\277\342\204\252&",
     "D\312\260\001&:\342\200\234_\001\302\262\001\302\277\001\342\204\252\001&"},
    {BR_TOK_PRE_FALCON, "\303\211D=d!\343\200\200l\014",
     "\303\211D\001=\001d\001!\001\343\200\200\001l\001\014"},
    {BR_TOK_PRE_FALCON, "\014\340\244\277)+$\340\244\225\342\204\252",
     "\014\001\340\244\277\001)+$\001\340\244\225\342\204\252"},
    {BR_TOK_PRE_FALCON,
     "\314\201\342\200\224\015\302\262+!\015?\014\342\200\213\012\342\204\252T\357\274\221",
     "\314\201\001\342\200\224\001\015\001\302\262\001+!\001\015\001?"
     "\001\014\001\342\200\213\001\012\001\342\204\252T\001\357\274\221"},
    {BR_TOK_PRE_FALCON, "Z$_", "Z\001$_"},
    {BR_TOK_PRE_FALCON, "S\340\244\277tM.\331\241+EV",
     "S\001\340\244\277\001tM\001.\001\331\241\001+\001EV"},
    {BR_TOK_PRE_FALCON, " \302\275!\357\274\221]\343\200\200\343\200\200)0\042\042\013D",
     " \302\275\001!\001\357\274\221\001]\001\343\200\200\343\200\200\001)"
     "\0010\001\042\042\001\013\001D"},
    {BR_TOK_PRE_FALCON, "L;\340\244\2779", "L\001;\001\340\244\277\0019"},
    {BR_TOK_PRE_FALCON,
     "*_} ] \342\200\213\342\200\234|=", "*_}\001 \001]\001 \342\200\213\001\342\200\234|="},
    {BR_TOK_PRE_FALCON, "\015*\342\200\213]\302\277m\302\240|v\331\241v",
     "\015\001*\001\342\200\213\001]\302\277\001m\001\302\240\001|\001v\001\331\241\001v"},
    {BR_TOK_PRE_FALCON, "\314\201\314\201\302\205\342\204\252\302\240>ZE^",
     "\314\201\314\201\001\302\205\001\342\204\252\001\302\240\001>\001ZE\001^"},
    {BR_TOK_PRE_FALCON, "\357\273\277\327\220v>\013|",
     "\357\273\277\001\327\220v\001>\001\013\001|"},
    {BR_TOK_PRE_FALCON, "'.)\357\273\277|[L", "'.)\001\357\273\277\001|[\001L"},
    {BR_TOK_PRE_FALCON, "\134\314\201\342\200\234\342\204\252+\134\303\211^",
     "\134\001\314\201\001\342\200\234\001\342\204\252\001+\134\001\303\211\001^"},
    {BR_TOK_PRE_FALCON, "~.#\303\251?v[[S[", "~.#\001\303\251\001?\001v\001[[\001S\001["},
    {BR_TOK_PRE_FALCON, "@\302\277}\015\314\201]}\331\241 \342\200\224\314\201\012\012",
     "@\302\277}\001\015\001\314\201\001]}\001\331\241\001 "
     "\001\342\200\224\001\314\201\001\012\012"},
    {BR_TOK_PRE_FALCON, ":<s.", ":<\001s\001."},
    {BR_TOK_PRE_FALCON, "R\331\241 \314\201=s\342\200\213*e\302\277\331\241",
     "R\001\331\241\001 \314\201\001=\001s\001\342\200\213\001*\001e\001\302\277\001\331\241"},
    {BR_TOK_PRE_FALCON, "\331\241v`v+M~", "\331\241\001v\001`\001v\001+\001M\001~"},
    {BR_TOK_PRE_FALCON, "S\302\262\342\200\213'", "S\001\302\262\001\342\200\213\001'"},
    {BR_TOK_PRE_FALCON, "\342\200\213*?.", "\342\200\213\001*?."},
    {BR_TOK_PRE_FALCON, "\303\251\042:@(\042`\305\277D\013",
     "\303\251\001\042:@(\042`\001\305\277D\001\013"},
    {BR_TOK_PRE_FALCON, "\344\270\255E\340\244\277T%\312\260(a{V",
     "\344\270\255E\001\340\244\277\001T\001%\001\312\260\001(\001a\001{\001V"},
    {BR_TOK_PRE_FALCON, "\331\241\302\262S\303\211[Zl&&'",
     "\331\241\302\262\001S\303\211\001[\001Zl\001&&'"},
    {BR_TOK_PRE_FALCON, " \302\262{\342\204\252\011|",
     " \302\262\001{\001\342\204\252\001\011\001|"},
    {BR_TOK_PRE_FALCON, "}*\303\211=+R", "}*\001\303\211\001=+\001R"},
    {BR_TOK_PRE_FALCON, "^l>\342\200\203 \012R:s\302\277",
     "^\001l\001>\001\342\200\203 \001\012\001R\001:\001s\001\302\277"},
    {BR_TOK_PRE_FALCON, "t~M\012\015)9\342\200\224!\342\200\234",
     "t\001~\001M\001\012\015\001)\0019\001\342\200\224!\342\200\234"},
    {BR_TOK_PRE_FALCON,
     "\342\200\250\342\200\234\034.\134\015+#\012^\357\274\221\302\275\302\275\343\200\200",
     "\342\200\250\001\342\200\234\001\034\001.\134\001\015\001+#\001\012\001^"
     "\001\357\274\221\302\275\302\275\001\343\200\200"},
    {BR_TOK_PRE_FALCON, "\302\205#\042\357\273\277\302\275V\343\200\200",
     "\302\205\001#\042\001\357\273\277\001\302\275\001V\001\343\200\200"},
    {BR_TOK_PRE_FALCON, "#r9D}\303\211", "#\001r\0019\001D\001}\001\303\211"},
    {BR_TOK_PRE_FALCON, "+R\357\273\277!Z\342\200\250];?&\327\220",
     "+\001R\001\357\273\277\001!\001Z\001\342\200\250\001];?&\001\327\220"},
    {BR_TOK_PRE_FALCON, "& |'_", "&\001 \001|'_"},

};

static void test_pre_tokenizers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof regex_cases / sizeof regex_cases[0]; i++)
        check_split_sep(regex_cases[i].pre, regex_cases[i].text, regex_cases[i].want, '\001');
    check_split(BR_TOK_PRE_LLAMA3,
                "'\xc5\xbf"
                "a 'S x'LL",
                "'\xc5\xbf|a| '|S| x|'LL"); /* long s: s */
    check_split(BR_TOK_PRE_LLAMA3, "I'M here's 12345 x", "I|'M| here|'s| |123|45| x");
    check_split(BR_TOK_PRE_LLAMA3, "a  \n\n b\t", "a|  \n\n| b|\t");
    check_split(BR_TOK_PRE_LLAMA3, "x...\n\ny", "x|...\n\n|y");
    check_split(BR_TOK_PRE_LLAMA3, "\u00e9t\u00e9 \u0661\u0662\u0663\u0664 \u4e2d\u6587",
                "\u00e9t\u00e9| |\u0661\u0662\u0663|\u0664| \u4e2d\u6587");
    check_split(BR_TOK_PRE_LLAMA3, "\u00a0word\u3000x", "\u00a0word|\u3000x");
    check_split(BR_TOK_PRE_GPT2, "I'M here's 12345  x!!", "I|'|M| here|'s| 12345| | x|!!");
    check_split(BR_TOK_PRE_GPT2, "a \n\n b", "a| \n\n| b");
    check_split(BR_TOK_PRE_FALCON, "Hi, there!! 1234567 $5+5",
                "Hi|,| there|!!| |123|456|7| |$|5|+|5");
    check_split(BR_TOK_PRE_FALCON, "don't", "don|'|t");
}

static void test_unicode(void **state)
{
    (void)state;
    assert_int_equal(br_uc_class_of('a'), BR_UC_LETTER);
    assert_int_equal(br_uc_class_of(0x4E2D), BR_UC_LETTER); /* 中 */
    assert_int_equal(br_uc_class_of(0x0661), BR_UC_NUMBER); /* Arabic-Indic 1 */
    assert_int_equal(br_uc_class_of(0x00BD), BR_UC_NUMBER); /* ½ */
    assert_int_equal(br_uc_class_of(0x2028), BR_UC_SPACE);
    assert_int_equal(br_uc_class_of(0x0085), BR_UC_SPACE);
    assert_int_equal(br_uc_class_of(0x001C), BR_UC_OTHER);   /* not White_Space */
    assert_int_equal(br_uc_class_of(0x00BF), BR_UC_PUNCT);   /* ¿ */
    assert_int_equal(br_uc_class_of(0x1F600), BR_UC_OTHER);  /* emoji: a symbol */
    assert_int_equal(br_uc_class_of(0x20000), BR_UC_LETTER); /* CJK extension B */
    assert_int_equal(br_uc_class_of(0x0301), BR_UC_OTHER);   /* combining mark */
    uint32_t cp;
    assert_int_equal(br_uc_decode((const uint8_t *)"\xC0\xAF", 2, &cp), 1); /* overlong */
    assert_int_equal(cp, BR_UC_INVALID_BASE + 0xC0);
    assert_int_equal(br_uc_decode((const uint8_t *)"\xED\xA0\x80", 3, &cp), 1); /* surrogate */
    assert_int_equal(br_uc_decode((const uint8_t *)"\xF4\x90\x80\x80", 4, &cp), 1);
    assert_int_equal(br_uc_decode((const uint8_t *)"\xF0\x9F\xA6\x99", 4, &cp), 4);
    assert_int_equal(cp, 0x1F999);
    assert_int_equal(br_uc_decode((const uint8_t *)"\xE4\xB8", 2, &cp), 1); /* truncated */
    assert_int_equal(br_uc_incomplete_tail((const uint8_t *)"a\xF0\x9F\xA6", 4), 3);
    assert_int_equal(br_uc_incomplete_tail((const uint8_t *)"a\xF0\x9F", 3), 2);
    assert_int_equal(br_uc_incomplete_tail((const uint8_t *)"a\xE4", 2), 1);
    assert_int_equal(br_uc_incomplete_tail((const uint8_t *)"a\xE4\xB8\xAD", 4), 0);
    assert_int_equal(br_uc_incomplete_tail((const uint8_t *)"a\x80", 2), 0);
    assert_int_equal(br_uc_incomplete_tail((const uint8_t *)"\xED\xA0", 2), 0);
    /* Every code point round-trips through the encoder and decoder. */
    for (uint32_t c = 0; c <= 0x10FFFF; c += (c < 0x30000 ? 1 : 97)) {
        if (c >= 0xD800 && c < 0xE000) continue;
        uint8_t b[4];
        size_t n = br_uc_encode(c, b);
        assert_int_equal(br_uc_decode(b, n, &cp), n);
        assert_int_equal(cp, c);
    }
}

/* Encodes with the given flags; without special parsing the bytes must come back. */
static void hostile_one(const struct br_tok *t, const char *s, size_t len, unsigned flags)
{
    int32_t *ids;
    size_t n;
    encode(t, s, len, flags, &ids, &n);
    assert_true(n > 0 || len == 0);
    if (!(flags & BR_TOK_PARSE_SPECIAL)) assert_round_trip(t, s, len, ids, n);
    free(ids);
}

static void test_hostile(void **state)
{
    struct fixture *f = *state;
    static const char bad[] =
        "a\xff\xfe b\xc3 \xe4\xb8 \xed\xa0\x80\xf4\x90\x80\x80 x\x80y \0z\0\0 "
        "\xf0\x9f\xa6 end\xc0";
    const struct br_tok *toks[2] = {f->l3, f->l2};
    for (int k = 0; k < 2; k++) {
        for (unsigned flags = 0; flags <= BR_TOK_PARSE_SPECIAL; flags += BR_TOK_PARSE_SPECIAL) {
            hostile_one(toks[k], bad, sizeof bad - 1, flags);
            hostile_one(toks[k], "", 0, flags);
            hostile_one(toks[k], "\0", 1, flags);
        }
    }
    /* Random bytes: byte-level BPE and byte fallback both give the bytes back. */
    uint64_t seed = 42;
    char rnd[4096];
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (char)(br_test_rand(&seed) & 0xFF);
    for (int k = 0; k < 2; k++) hostile_one(toks[k], rnd, sizeof rnd, 0);

    /* 1 MB of one character: a single enormous word (BPE) or symbol run (SPM). */
    size_t mb = 1 << 20;
    char *big = malloc(mb);
    const char *fills[] = {"a", " ", "\xc3\xa9", "<"};
    for (size_t fi = 0; fi < sizeof fills / sizeof fills[0]; fi++) {
        size_t fl = strlen(fills[fi]);
        size_t len = mb / fl * fl;
        for (size_t i = 0; i < len; i += fl) memcpy(big + i, fills[fi], fl);
        unsigned flags = fills[fi][0] == '<' ? BR_TOK_PARSE_SPECIAL : 0;
        for (int k = 0; k < 2; k++) hostile_one(toks[k], big, len, flags);
    }
    /* Text made of the first bytes of special tokens, parsed: bounded work per byte. */
    for (size_t i = 0; i < mb / 4; i++) big[i] = "<|"[i & 1];
    hostile_one(f->l3, big, mb / 4, BR_TOK_PARSE_SPECIAL);
    free(big);
}

/* Writes the tokenizer metadata to a GGUF file the way converters do and loads it back. */
static void test_gguf(void **state)
{
    struct fixture *f = *state;
    char *path3 = br_test_tmp_path("tok3.gguf"), *path2 = br_test_tmp_path("tok2.gguf");
    struct br_err err = {{0}};
    struct br_gguf_writer *w;

    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "general.architecture", "bitnet-b1.58"), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens",
                                                (const char *const *)f->v3.tok, f->v3.len,
                                                (uint64_t)f->v3.n),
                     BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", BR_GGUF_I32, f->v3.type,
                                            (uint64_t)f->v3.n),
                     BR_OK);
    assert_int_equal(br_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges",
                                                (const char *const *)f->v3.merge, NULL,
                                                f->v3.n_merges),
                     BR_OK);
    /* No tokenizer.ggml.pre, as in the official 2B-4T file; EOS given as <|eot_id|>. */
    assert_int_equal(br_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 128009), BR_OK);
    if (br_gguf_writer_begin(w, path3, &err) || br_gguf_writer_finish(w, &err))
        fail_msg("write: %s", err.msg);
    br_gguf_writer_destroy(&w);

    struct br_gguf *g;
    struct br_tok *t;
    if (br_gguf_open(path3, &g, &err)) fail_msg("open: %s", err.msg);
    if (br_tok_from_gguf(g, &t, &err)) fail_msg("from_gguf: %s", err.msg);
    br_gguf_close(&g); /* the tokenizer keeps its own copies */
    assert_string_equal(br_tok_pre_name(t), "llama3");
    assert_int_equal(br_tok_bos(t), 128000);
    assert_int_equal(br_tok_eos(t), 128009);
    assert_true(br_tok_is_eog(t, 128001));
    assert_int_equal(check_cases(t, f->c3, f->n3, 0, "llama3 gguf"), f->n3);
    int32_t *ids;
    size_t n;
    encode(t, "Hi", 2, BR_TOK_ADD_BOS, &ids, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 128000);
    free(ids);
    br_tok_destroy(&t);

    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens",
                                                (const char *const *)f->v2.tok, f->v2.len,
                                                (uint64_t)f->v2.n),
                     BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "tokenizer.ggml.scores", BR_GGUF_F32, f->v2.score,
                                            (uint64_t)f->v2.n),
                     BR_OK);
    assert_int_equal(br_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", BR_GGUF_I32, f->v2.type,
                                            (uint64_t)f->v2.n),
                     BR_OK);
    assert_int_equal(br_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false), BR_OK);
    if (br_gguf_writer_begin(w, path2, &err) || br_gguf_writer_finish(w, &err))
        fail_msg("write: %s", err.msg);
    br_gguf_writer_destroy(&w);
    if (br_gguf_open(path2, &g, &err)) fail_msg("open: %s", err.msg);
    if (br_tok_from_gguf(g, &t, &err)) fail_msg("from_gguf: %s", err.msg);
    br_gguf_close(&g);
    assert_int_equal(br_tok_model(t), BR_TOK_MODEL_SPM);
    assert_int_equal(br_tok_bos(t), 1);
    assert_int_equal(check_cases(t, f->c2, f->n2, 0, "llama2 gguf"), f->n2);
    encode(t, "Hi", 2, BR_TOK_ADD_BOS, &ids, &n); /* the file said no BOS */
    assert_true(n > 0 && ids[0] != 1);
    free(ids);
    br_tok_destroy(&t);

    /* A file without a tokenizer, and one with a bad token_type length. */
    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "general.architecture", "llama"), BR_OK);
    if (br_gguf_writer_begin(w, path2, &err) || br_gguf_writer_finish(w, &err))
        fail_msg("write: %s", err.msg);
    br_gguf_writer_destroy(&w);
    if (br_gguf_open(path2, &g, &err)) fail_msg("open: %s", err.msg);
    assert_int_equal(br_tok_from_gguf(g, &t, &err), BR_E_NOTFOUND);
    br_gguf_close(&g);

    assert_int_equal(br_gguf_writer_create(&w), BR_OK);
    assert_int_equal(br_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), BR_OK);
    assert_int_equal(br_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens",
                                                (const char *const *)f->v2.tok, f->v2.len, 10),
                     BR_OK);
    assert_int_equal(
        br_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", BR_GGUF_I32, f->v2.type, 9), BR_OK);
    if (br_gguf_writer_begin(w, path2, &err) || br_gguf_writer_finish(w, &err))
        fail_msg("write: %s", err.msg);
    br_gguf_writer_destroy(&w);
    if (br_gguf_open(path2, &g, &err)) fail_msg("open: %s", err.msg);
    assert_int_equal(br_tok_from_gguf(g, &t, &err), BR_E_FORMAT);
    assert_non_null(strstr(err.msg, "token_type"));
    br_gguf_close(&g);

    remove(path3);
    remove(path2);
    free(path3);
    free(path2);
}

/* A file written by bitnet.cpp's converter (a 1024-piece SentencePiece vocabulary). */
static void test_bitnet_cpp_file(void **state)
{
    (void)state;
    struct br_err err = {{0}};
    struct br_gguf *g;
    struct br_tok *t;
    if (br_gguf_open(br_test_data("bitnet-cpp/gqa-i2_s.gguf"), &g, &err))
        fail_msg("open: %s", err.msg);
    if (br_tok_from_gguf(g, &t, &err)) fail_msg("from_gguf: %s", err.msg);
    br_gguf_close(&g);
    assert_int_equal(br_tok_n_vocab(t), 1024);
    assert_int_equal(br_tok_model(t), BR_TOK_MODEL_SPM);
    assert_int_equal(br_tok_bos(t), 1);
    assert_int_equal(br_tok_eos(t), 2);
    assert_true(br_tok_is_eog(t, 2));
    /* "Hello world, 123 ünïcödé 🦙!", spelled in bytes: rare characters become byte tokens.
     */
    const char *s = "Hello world, 123 \xc3\xbcn\xc3\xaf"
                    "c\xc3\xb6"
                    "d\xc3\xa9 \xf0\x9f\xa6\x99!";
    int32_t *ids;
    size_t n;
    encode(t, s, strlen(s), BR_TOK_ADD_BOS, &ids, &n);
    assert_int_equal(ids[0], 1);
    assert_round_trip(t, s, strlen(s), ids, n);
    free(ids);
    br_tok_destroy(&t);
}

/* Bad parameters are errors with messages, never crashes. */
static void test_bad_params(void **state)
{
    (void)state;
    const char *toks[] = {"a", "b", "ab", ""};
    const char *merges[] = {"a b", "ab"};
    struct br_tok_params p;
    struct br_tok *t = NULL;
    struct br_err err = {{0}};
    br_tok_params_init(&p);
    assert_int_equal(br_tok_create(&p, &t, &err), BR_E_INVALID);
    p.n_tokens = 3;
    p.tokens = toks;
    p.bos_id = 3;
    assert_int_equal(br_tok_create(&p, &t, &err), BR_E_INVALID);
    assert_non_null(strstr(err.msg, "BOS"));
    p.bos_id = -1;
    p.n_tokens = 4;
    assert_int_equal(br_tok_create(&p, &t, &err), BR_OK); /* an empty token is allowed */
    br_tok_destroy(&t);
    p.n_tokens = 3;
    p.n_merges = 2;
    p.merges = merges;
    assert_int_equal(br_tok_create(&p, &t, &err), BR_E_INVALID);
    assert_non_null(strstr(err.msg, "merge 1"));
    /* A tiny vocabulary without byte tokens still encodes anything (missing bytes drop). */
    p.n_merges = 1;
    assert_int_equal(br_tok_create(&p, &t, &err), BR_OK);
    int32_t *ids;
    size_t n;
    encode(t, "abba\xff", 5, 0, &ids, &n);
    assert_int_equal(n, 3); /* ab, b, a */
    assert_int_equal(ids[0], 2);
    free(ids);
    br_tok_destroy(&t);
}

/* User-defined tokens match with or without special parsing; control tokens only with it;
 * the longest special wins; a one-byte special token works too. */
static void test_special_kinds(void **state)
{
    (void)state;
    const char *toks[] = {"a", "b", "ab", "<x>", "<ctl>", "|", "<x>y"};
    int32_t types[] = {1,
                       1,
                       1,
                       BR_TOK_TYPE_USER_DEFINED,
                       BR_TOK_TYPE_CONTROL,
                       BR_TOK_TYPE_CONTROL,
                       BR_TOK_TYPE_USER_DEFINED};
    const char *merges[] = {"a b"};
    struct br_tok_params p;
    struct br_tok *t = NULL;
    br_tok_params_init(&p);
    p.n_tokens = 7;
    p.tokens = toks;
    p.token_types = types;
    p.n_merges = 1;
    p.merges = merges;
    assert_int_equal(br_tok_create(&p, &t, NULL), BR_OK);
    const char *s = "a<x>b<ctl>|<x>yab";
    int32_t *ids;
    size_t n;
    encode(t, s, strlen(s), 0, &ids, &n); /* the control text's letters are not tokens */
    int32_t want0[] = {0, 3, 1, 6, 2};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want0, sizeof want0);
    free(ids);
    encode(t, s, strlen(s), BR_TOK_PARSE_SPECIAL, &ids, &n);
    int32_t want1[] = {0, 3, 1, 4, 5, 6, 2};
    assert_int_equal(n, 7);
    assert_memory_equal(ids, want1, sizeof want1);
    free(ids);
    br_tok_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unicode),
        cmocka_unit_test(test_pre_tokenizers),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_special_kinds),
        cmocka_unit_test(test_llama3_cases),
        cmocka_unit_test(test_llama2_cases),
        cmocka_unit_test(test_llama3_detected),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_gguf),
        cmocka_unit_test(test_bitnet_cpp_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
