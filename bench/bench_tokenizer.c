/*
 * Tokenizer throughput: builds the Llama-3 tokenizer from the reference vocabulary in tests/data
 * (data/tokenizer/llama3_vocab.txt and llama3_merges.txt), makes about 1 MB of mixed text
 * by repeating the reference cases (code, prose, numbers, non-Latin scripts, emoji), and
 * encodes it on one thread, reporting MB/s for prompt-sized calls (one per case) and for
 * the whole buffer in one call. Every encoding is decoded and compared, so a fast wrong
 * tokenizer cannot pass.
 *
 * Standalone build (after building build/t):
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -DBR_BENCH_TOKENIZER_STANDALONE -I include -I . \
 *       bench/bench_tokenizer.c build/t/libbitrack_core.a -lm -lpthread -o build/t/bench_tokenizer
 *   build/t/bench_tokenizer tests/data
 * (bench/CMakeLists_tokenizer.cmake has the same as a target.)
 */
#include "bench/bench_tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "coordinator/tokenizer.h"
#include "coordinator/unicode.h"

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "bench_tokenizer: cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* Unescapes the JSON string at *pp (at its quote) in place into out; returns its length,
 * or (size_t)-1 when malformed. */
static size_t json_string(char **pp, char *out)
{
    char *p = *pp;
    if (*p++ != '"') return (size_t)-1;
    size_t n = 0;
    while (*p && *p != '"') {
        if (*p != '\\') {
            out[n++] = *p++;
            continue;
        }
        p++;
        char c = *p++;
        if (c == 'u') {
            unsigned cp = 0, lo = 0;
            if (sscanf(p, "%4x", &cp) != 1) return (size_t)-1;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u' &&
                sscanf(p + 2, "%4x", &lo) == 1) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            n += br_uc_encode(cp, (uint8_t *)out + n);
        } else {
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *k = c ? strchr(from, c) : NULL;
            if (!k) return (size_t)-1;
            out[n++] = to[k - from];
        }
    }
    if (*p != '"') return (size_t)-1;
    *pp = p + 1;
    return n;
}

/* Lines of buf, NUL-terminated in place. */
static size_t lines_of(char *buf, char ***out)
{
    size_t n = 0, k = 0;
    for (char *p = buf; *p; p++) n += *p == '\n';
    char **l = malloc((n + 1) * sizeof *l);
    char *s = buf;
    for (char *p = buf; *p; p++) {
        if (*p == '\n') {
            *p = '\0';
            l[k++] = s;
            s = p + 1;
        }
    }
    if (*s) l[k++] = s;
    *out = l;
    return k;
}

static struct br_tok *load_llama3(const char *dir)
{
    size_t vlen, mlen;
    char *vbuf = slurp(dir, "llama3_vocab.txt", &vlen);
    char *mbuf = slurp(dir, "llama3_merges.txt", &mlen);
    struct br_tok *t = NULL;
    char **vl = NULL, **ml = NULL;
    size_t *lens = NULL;
    int32_t *types = NULL;
    if (!vbuf || !mbuf) goto done;
    size_t n = lines_of(vbuf, &vl), nm = lines_of(mbuf, &ml);
    lens = malloc(n * sizeof *lens);
    types = malloc(n * sizeof *types);
    for (size_t i = 0; i < n; i++) {
        char *p = vl[i];
        lens[i] = json_string(&p, vl[i]); /* unescaped text is never longer: in place */
        if (lens[i] == (size_t)-1) {
            fprintf(stderr, "bench_tokenizer: bad vocabulary line %zu\n", i);
            goto done;
        }
        types[i] = i >= 128000 ? BR_TOK_TYPE_CONTROL : BR_TOK_TYPE_NORMAL;
    }
    struct br_tok_params p;
    br_tok_params_init(&p);
    p.model = BR_TOK_MODEL_BPE;
    p.pre = "llama-bpe";
    p.n_tokens = (int32_t)n;
    p.tokens = (const char *const *)vl;
    p.token_lens = lens;
    p.token_types = types;
    p.n_merges = nm;
    p.merges = (const char *const *)ml;
    p.bos_id = 128000;
    p.eos_id = 128001;
    struct br_err err = {{0}};
    if (br_tok_create(&p, &t, &err)) fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
done:
    free(vl);
    free(ml);
    free(lens);
    free(types);
    free(vbuf);
    free(mbuf);
    return t;
}

int br_bench_tokenizer_main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : getenv("BR_TEST_DATA");
    if (!dir) dir = "tests/data";
    double mb = argc > 2 ? atof(argv[2]) : 1.0;
    if (mb <= 0) mb = 1.0;
    int rc = 1;
    /* thread CPU time: the benchmark is single-threaded, and on a shared machine CPU time
     * is not inflated by time spent descheduled, as wall time would be */
    double t0 = br_thread_cpu_s();
    struct br_tok *t = load_llama3(dir);
    if (!t) return 1;
    double t_load = br_thread_cpu_s() - t0;

    /* Texts: the reference cases, repeated to the requested size. */
    size_t clen;
    char *cbuf = slurp(dir, "llama3_cases.jsonl", &clen);
    char **cl = NULL;
    size_t *starts = NULL, *lens = NULL, n_texts = 0;
    char *text = NULL;
    if (!cbuf) goto done;
    size_t nc = lines_of(cbuf, &cl);
    size_t target = (size_t)(mb * 1024 * 1024);
    text = malloc(target + clen);
    starts = malloc((target + 1) * sizeof *starts);
    lens = malloc((target + 1) * sizeof *lens);
    size_t total = 0;
    for (size_t rep = 0; total < target; rep++) {
        char *p = strstr(cl[rep % nc], "\"text\"");
        if (!p || !(p = strchr(p + 6, '"'))) continue;
        size_t n = json_string(&p, text + total);
        if (n == (size_t)-1 || n == 0) continue;
        starts[n_texts] = total;
        lens[n_texts++] = n;
        total += n;
        if (rep > 10 * target) break; /* no usable case */
    }

    /* Prompt-sized calls, then the whole buffer at once; best of five. */
    double best_calls = 1e30, best_whole = 1e30;
    size_t n_ids_total = 0;
    for (int round = 0; round < 5; round++) {
        double s = br_thread_cpu_s();
        n_ids_total = 0;
        for (size_t i = 0; i < n_texts; i++) {
            int32_t *ids;
            size_t n;
            if (br_tok_encode(t, text + starts[i], lens[i], 0, &ids, &n, NULL)) goto done;
            n_ids_total += n;
            free(ids);
        }
        double e = br_thread_cpu_s() - s;
        if (e < best_calls) best_calls = e;
        s = br_thread_cpu_s();
        int32_t *ids;
        size_t n;
        if (br_tok_encode(t, text, total, 0, &ids, &n, NULL)) goto done;
        e = br_thread_cpu_s() - s;
        if (e < best_whole) best_whole = e;
        char *back;
        size_t back_len;
        if (br_tok_decode(t, ids, n, 0, &back, &back_len, NULL) || back_len != total ||
            memcmp(back, text, total) != 0) {
            fprintf(stderr, "bench_tokenizer: decode(encode(text)) differs from the text\n");
            free(ids);
            free(back);
            goto done;
        }
        free(ids);
        free(back);
    }
    double mbytes = (double)total / (1024.0 * 1024.0);
    printf("tokenizer: Llama-3 vocabulary built in %.2f s\n", t_load);
    printf("tokenizer: %.2f MB of text (%zu pieces, %zu tokens, %.2f bytes/token)\n", mbytes,
           n_texts, n_ids_total, (double)total / (double)n_ids_total);
    printf("tokenizer: %.1f MB/s in %zu calls, %.1f MB/s in one call (one thread, CPU time)\n",
           mbytes / best_calls, n_texts, mbytes / best_whole);
    rc = 0;
done:
    free(cl);
    free(cbuf);
    free(text);
    free(starts);
    free(lens);
    br_tok_destroy(&t);
    return rc;
}

#ifdef BR_BENCH_TOKENIZER_STANDALONE
int main(int argc, char **argv)
{
    return br_bench_tokenizer_main(argc, argv);
}
#endif
