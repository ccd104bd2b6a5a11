/*
 * libFuzzer harness for the byte-level BPE tokenizer (coordinator/tokenizer.h).
 *
 * One tokenizer is built once, in LLVMFuzzerInitialize, from the real Llama-3 vocabulary
 * (BR_TEST_DATA/tokenizer/llama3_{vocab,merges}.txt, else the repository's tests/data);
 * when those files are missing, from a small synthetic byte-level vocabulary
 * (256 byte tokens, a few merges, one control token). It is immutable, so keeping it for
 * the whole run is the only state besides libFuzzer's.
 *
 * For every input x, with and without BR_TOK_PARSE_SPECIAL (abort on failure):
 *  - encoding succeeds and every id is in range;
 *  - decode(encode(x)) == x byte for byte: byte-level BPE covers every byte string, and
 *    control tokens are rendered as their text (BR_TOK_DECODE_SPECIAL);
 *  - the heap merge path (BR_TOK_FORCE_HEAP) gives the same ids as the default one;
 *  - the streaming detokenizer fed the ids one at a time, then flushed, gives the same
 *    bytes as br_tok_decode.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef BR_FUZZ_REPO_ROOT
#define BR_FUZZ_REPO_ROOT "."
#endif

static struct br_tok *g_tok; /* built once, read-only afterwards */

/* ---- reading the vocabulary files ---- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = (n + 65536 + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, 65536, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static size_t put_utf8(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static bool hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return false;
        *v = *v * 16 + d;
    }
    return true;
}

/* Unescapes the JSON string line s (quotes included) in place; returns its byte length,
 * or -1 when the line is not a JSON string. The decoded form is never longer. */
static long json_unescape(char *s)
{
    const char *p = s;
    char *o = s;
    if (*p++ != '"') return -1;
    while (*p != '"') {
        if (*p == '\0') return -1;
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        p++;
        char c = *p++;
        uint32_t cp, lo;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            *o++ = c;
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u':
            if (!hex4(p, &cp)) return -1;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, &lo) &&
                lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            o += put_utf8(cp, o);
            break;
        default:
            return -1;
        }
    }
    return (long)(o - s);
}

/* Splits buf into lines in place (NUL-terminated); *lines is malloc'd. Returns the count. */
static size_t split_lines(char *buf, size_t len, char ***lines)
{
    size_t n = 1;
    for (size_t i = 0; i < len; i++) n += buf[i] == '\n';
    *lines = malloc(n * sizeof **lines);
    if (!*lines) return 0;
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

static struct br_tok *load_llama3(const char *dir)
{
    char path[4096];
    size_t vlen = 0, mlen = 0;
    struct br_tok *tok = NULL;
    char **vl = NULL, **ml = NULL;
    size_t *lens = NULL;
    int32_t *types = NULL;
    snprintf(path, sizeof path, "%s/tokenizer/llama3_vocab.txt", dir);
    char *vbuf = read_file(path, &vlen);
    snprintf(path, sizeof path, "%s/tokenizer/llama3_merges.txt", dir);
    char *mbuf = read_file(path, &mlen);
    if (!vbuf || !mbuf) goto done;
    size_t nv = split_lines(vbuf, vlen, &vl);
    size_t nm = split_lines(mbuf, mlen, &ml);
    if (nv != 128256 || nm == 0) goto done;
    lens = malloc(nv * sizeof *lens);
    types = malloc(nv * sizeof *types);
    if (!lens || !types) goto done;
    for (size_t i = 0; i < nv; i++) {
        long n = json_unescape(vl[i]);
        if (n < 0) goto done;
        lens[i] = (size_t)n;
        types[i] = i >= 128000 ? BR_TOK_TYPE_CONTROL : BR_TOK_TYPE_NORMAL;
    }
    struct br_tok_params p;
    struct br_err err;
    br_tok_params_init(&p);
    p.model = BR_TOK_MODEL_BPE;
    p.pre = "llama-bpe";
    p.n_tokens = (int32_t)nv;
    p.tokens = (const char *const *)vl;
    p.token_lens = lens;
    p.token_types = types;
    p.n_merges = nm;
    p.merges = (const char *const *)ml;
    p.bos_id = 128000;
    p.eos_id = 128001;
    if (br_tok_create(&p, &tok, &err) != BR_OK) {
        fprintf(stderr, "fuzz_tokenizer: Llama-3 vocabulary refused: %s\n", err.msg);
        tok = NULL;
    }
done:
    free(types);
    free(lens);
    free(vl);
    free(ml);
    free(vbuf);
    free(mbuf);
    return tok;
}

/* GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves, the other
 * 68 bytes take the code points 256, 257, ... in byte order. */
static uint32_t byte_char(unsigned b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    uint32_t k = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) k++;
    return 256 + k;
}

static struct br_tok *synthetic(void)
{
    /* 256 byte tokens, merged tokens, one control token */
    static const char *const merged[] = {"Ġt", "he", "Ġthe", "in", "Ġa", "er", "ĠĠ"};
    static const char *const merges[] = {"Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ Ġ"};
    enum { N_MERGED = sizeof merged / sizeof merged[0] };
    char bytes[256][5];
    const char *toks[256 + N_MERGED + 1];
    int32_t types[256 + N_MERGED + 1];
    for (unsigned b = 0; b < 256; b++) {
        size_t n = put_utf8(byte_char(b), bytes[b]);
        bytes[b][n] = '\0';
        toks[b] = bytes[b];
        types[b] = BR_TOK_TYPE_NORMAL;
    }
    for (int i = 0; i < N_MERGED; i++) {
        toks[256 + i] = merged[i];
        types[256 + i] = BR_TOK_TYPE_NORMAL;
    }
    toks[256 + N_MERGED] = "<|end|>";
    types[256 + N_MERGED] = BR_TOK_TYPE_CONTROL;
    struct br_tok_params p;
    struct br_err err;
    struct br_tok *tok = NULL;
    br_tok_params_init(&p);
    p.model = BR_TOK_MODEL_BPE;
    p.pre = "gpt2";
    p.n_tokens = 256 + N_MERGED + 1;
    p.tokens = toks;
    p.token_types = types;
    p.n_merges = N_MERGED;
    p.merges = merges;
    p.eos_id = 256 + N_MERGED;
    if (br_tok_create(&p, &tok, &err) != BR_OK) {
        fprintf(stderr, "fuzz_tokenizer: synthetic vocabulary refused: %s\n", err.msg);
        abort();
    }
    return tok;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("BR_TEST_DATA");
    if (dir && *dir) g_tok = load_llama3(dir);
    if (!g_tok) g_tok = load_llama3(BR_FUZZ_REPO_ROOT "/tests/data");
    if (!g_tok) {
        fprintf(stderr, "fuzz_tokenizer: no Llama-3 vocabulary found, using a synthetic one\n");
        g_tok = synthetic();
    } else {
        fprintf(stderr, "fuzz_tokenizer: Llama-3 vocabulary, %d tokens\n", br_tok_n_vocab(g_tok));
    }
    return 0;
}

/* ---- the checks ---- */

static void round_trip(const uint8_t *data, size_t size, unsigned flags)
{
    struct br_err err;
    int32_t *ids = NULL, *heap_ids = NULL;
    size_t n_ids = 0, n_heap = 0;
    const char *text = (const char *)data;
    if (br_tok_encode(g_tok, text, size, flags, &ids, &n_ids, &err) != BR_OK) {
        fprintf(stderr, "encode failed: %s\n", err.msg);
        abort();
    }
    const int32_t n_vocab = br_tok_n_vocab(g_tok);
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= n_vocab) abort();

    if (br_tok_encode(g_tok, text, size, flags | BR_TOK_FORCE_HEAP, &heap_ids, &n_heap, &err) !=
        BR_OK)
        abort();
    if (n_heap != n_ids || (n_ids && memcmp(heap_ids, ids, n_ids * sizeof *ids) != 0)) {
        fprintf(stderr, "heap merge path disagrees (%zu vs %zu ids)\n", n_heap, n_ids);
        abort();
    }
    free(heap_ids);

    char *out = NULL;
    size_t out_len = 0;
    if (br_tok_decode(g_tok, ids, n_ids, BR_TOK_DECODE_SPECIAL, &out, &out_len, &err) != BR_OK)
        abort();
    if (out_len != size || (size && memcmp(out, data, size) != 0)) {
        fprintf(stderr, "decode(encode(x)) != x: %zu bytes in, %zu out (flags %u)\n", size, out_len,
                flags);
        abort();
    }

    struct br_detok *d = NULL;
    if (br_detok_create(g_tok, BR_TOK_DECODE_SPECIAL, &d) != BR_OK) abort();
    size_t acc_len = 0; /* bytes of out the stream has reproduced so far */
    for (size_t i = 0; i < n_ids; i++) {
        const char *p;
        size_t n;
        if (br_detok_push(d, ids[i], &p, &n) != BR_OK) abort();
        if (acc_len + n > out_len || (n && memcmp(out + acc_len, p, n) != 0)) {
            fprintf(stderr, "streaming detokenizer diverges at id %zu\n", i);
            abort();
        }
        acc_len += n;
    }
    const char *p;
    size_t n;
    br_detok_flush(d, &p, &n);
    if (acc_len + n != out_len || (n && memcmp(out + acc_len, p, n) != 0)) {
        fprintf(stderr, "streaming detokenizer: %zu bytes, decode: %zu\n", acc_len + n, out_len);
        abort();
    }
    br_detok_destroy(&d);
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    round_trip(data, size, 0);
    round_trip(data, size, BR_TOK_PARSE_SPECIAL);
    return 0;
}
