/*
 * `bitrack tokenize -m MODEL [--bos] [--special] [--verbose] (TEXT | -)`: the ids of a
 * text as one JSON array on stdout, with the model's own tokenizer. No BOS unless --bos;
 * --verbose prints [id, "piece"] pairs instead; "-" reads the text from stdin.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "coordinator/tokenizer.h"
#include "sharding/gguf.h"

/* JSON string body for bytes (invalid UTF-8 is escaped byte by byte as \u00XX of the
 * byte value, so the output stays valid JSON). */
static void json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb, cap *= 2;
        }
    }
    *len = n;
    return buf;
}

int br_cmd_tokenize(int argc, char **argv)
{
    const char *path = NULL;
    int bos = 0, special = 0, verbose = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"bos", no_argument, 0, 'b'},
        {"special", no_argument, 0, 's'},     {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            path = optarg;
            break;
        case 'b':
            bos = 1;
            break;
        case 's':
            special = 1;
            break;
        case 'v':
            verbose = 1;
            break;
        case 'h':
            printf("usage: bitrack tokenize -m MODEL [--bos] [--special] [--verbose] (TEXT | -)\n");
            return 0;
        default:
            return 2;
        }
    }
    if (!path) return br_cli_usage_error("tokenize", "a model is required (-m MODEL.gguf)");
    if (optind >= argc) return br_cli_usage_error("tokenize", "give the text, or - for stdin");
    const char *arg = argv[optind];
    char *text = NULL;
    size_t len = 0;
    if (!strcmp(arg, "-")) {
        text = read_all(stdin, &len);
        if (!text) return br_cli_usage_error("tokenize", "cannot read stdin");
    } else {
        len = strlen(arg);
    }
    struct br_err err = {{0}};
    struct br_gguf *g = NULL;
    struct br_tok *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = br_gguf_open(path, &g, &err);
    if (!rc) rc = br_tok_from_gguf(g, &tok, &err);
    if (!rc)
        rc = br_tok_encode(tok, text ? text : arg, len,
                           (bos ? BR_TOK_ADD_BOS : 0) | (special ? BR_TOK_PARSE_SPECIAL : 0), &ids,
                           &n, &err);
    if (rc) {
        fprintf(stderr, "bitrack tokenize: %s\n", err.msg);
    } else {
        fputc('[', stdout);
        for (size_t i = 0; i < n; i++) {
            if (i) fputs(", ", stdout);
            if (verbose) {
                const char *p;
                size_t pl;
                br_tok_piece(tok, ids[i], &p, &pl);
                printf("[%d, ", ids[i]);
                json_str(stdout, p, pl);
                fputc(']', stdout);
            } else {
                printf("%d", ids[i]);
            }
        }
        fputs("]\n", stdout);
    }
    free(ids);
    free(text);
    br_tok_destroy(&tok);
    br_gguf_close(&g);
    return rc ? 1 : 0;
}
