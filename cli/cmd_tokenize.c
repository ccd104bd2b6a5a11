/*
 * `bitrack tokenize (-m MODEL | --server ADDR) [--bos] [--special] [--verbose] (TEXT | -)`:
 * the ids of a text as one JSON array on stdout, with the model's own tokenizer (locally,
 * or the server's `tokenize` request). No BOS unless --bos; --verbose prints [id, "piece"]
 * pairs instead; "-" reads the text from stdin.
 *
 * The output is always valid JSON: a piece is raw bytes (a byte-level token may hold part
 * of a UTF-8 character), so bytes that do not form valid UTF-8 are written as \u00XX of
 * the byte value, and control characters are escaped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "proto/client.h"
#include "coordinator/tokenizer.h"
#include "sharding/gguf.h"

/* Writes the JSON array: ids, or [id, "piece"] pairs. */
static void print_json(const int32_t *ids, size_t n, char **pieces, const size_t *piece_len)
{
    fputc('[', stdout);
    for (size_t i = 0; i < n; i++) {
        if (i) fputs(", ", stdout);
        if (pieces) {
            printf("[%d, ", ids[i]);
            br_cli_json_str(stdout, pieces[i], piece_len[i]);
            fputc(']', stdout);
        } else {
            printf("%d", ids[i]);
        }
    }
    fputs("]\n", stdout);
}

/* Tokenizes through a server: ids, and with verbose each id's piece (detokenize). */
static int tokenize_remote(const char *server, long long connect_ms, const char *text, size_t len,
                           int bos, int verbose, struct br_err *err)
{
    struct br_client *cl = NULL;
    int32_t *ids = NULL;
    uint32_t n = 0;
    char **pieces = NULL;
    size_t *plen = NULL;
    int rc = br_client_connect(server, 30000, &cl, err);
    if (!rc) br_client_set_connect_timeout(cl, (int)connect_ms);
    if (!rc) rc = br_client_tokenize(cl, text, len, bos != 0, &ids, &n, err);
    if (!rc && verbose) {
        pieces = calloc(n ? n : 1, sizeof *pieces);
        plen = calloc(n ? n : 1, sizeof *plen);
        if (!pieces || !plen) rc = br_err_set(err, BR_E_NOMEM, "out of memory");
        for (uint32_t i = 0; !rc && i < n; i++)
            rc = br_client_detokenize(cl, &ids[i], 1, &pieces[i], &plen[i], err);
    }
    if (!rc) print_json(ids, n, verbose ? pieces : NULL, plen);
    for (uint32_t i = 0; pieces && i < n; i++) free(pieces[i]);
    free(pieces), free(plen), free(ids);
    br_client_close(&cl);
    return rc;
}

int br_cmd_tokenize(int argc, char **argv)
{
    const char *path = NULL;
    char server[BR_ADDR_MAX] = "";
    int bos = 0, special = 0, verbose = 0;
    long long connect_ms = BR_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    const struct br_opt opts[] = {
        BR_O_STR('m', "model", &path, "FILE", "tokenize with this model's tokenizer"),
        BR_O_ADDR(0, "server", server, "or ask this server (host:port means tcp://host:port)"),
        BR_O_FLAG(0, "bos", &bos, "start with the model's BOS token"),
        BR_O_FLAG(0, "special", &special, "parse special tokens in the text (local only)"),
        BR_O_FLAG('v', "verbose", &verbose, "print [id, \"piece\"] pairs"),
        BR_O_INT(0, "connect-timeout", &connect_ms, 1, 86400000, "MS",
                 "with --server: fail after MS ms without a connection"),
    };
    const struct br_cmd_spec spec = {
        "tokenize", "(TEXT | -)",
        "Prints the token ids of TEXT (\"-\": standard input) as one JSON array; invalid\n"
        "UTF-8 in a piece is written as \\u00XX of each byte, so the output is always JSON.",
        opts, sizeof opts / sizeof *opts};
    int first, prc = br_opts_parse(&spec, argc, argv, &first);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (!path == !server[0])
        return br_cli_usage_error("tokenize", "give -m MODEL.gguf or --server ADDR");
    if (first >= argc) return br_cli_usage_error("tokenize", "give the text, or - for stdin");
    if (first + 1 < argc)
        return br_cli_usage_error("tokenize", "one text (quote it); unexpected '%s'",
                                  argv[first + 1]);
    if (special && server[0])
        return br_cli_usage_error("tokenize", "--special: the server's tokenize request has no "
                                              "such option");
    const char *arg = argv[first];
    char *text = NULL;
    size_t len = 0;
    if (!strcmp(arg, "-")) {
        text = br_cli_read_file("-", &len);
        if (!text) return br_cli_usage_error("tokenize", "cannot read stdin");
    } else {
        len = strlen(arg);
    }
    struct br_err err = {{0}};
    struct br_gguf *g = NULL;
    struct br_tok *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc;
    if (server[0]) {
        rc = tokenize_remote(server, connect_ms, text ? text : arg, len, bos, verbose, &err);
    } else {
        rc = br_gguf_open(path, &g, &err);
        if (!rc) rc = br_tok_from_gguf(g, &tok, &err);
        if (!rc)
            rc = br_tok_encode(tok, text ? text : arg, len,
                               (bos ? BR_TOK_ADD_BOS : 0) | (special ? BR_TOK_PARSE_SPECIAL : 0),
                               &ids, &n, &err);
        char **pieces = verbose && !rc ? calloc(n ? n : 1, sizeof *pieces) : NULL;
        size_t *plen = verbose && !rc ? calloc(n ? n : 1, sizeof *plen) : NULL;
        if (verbose && !rc && (!pieces || !plen))
            rc = br_err_set(&err, BR_E_NOMEM, "out of memory");
        for (size_t i = 0; !rc && pieces && i < n; i++) {
            const char *p;
            br_tok_piece(tok, ids[i], &p, &plen[i]);
            pieces[i] = (char *)p;
        }
        if (!rc) print_json(ids, n, pieces, plen);
        free(pieces), free(plen);
    }
    if (rc) fprintf(stderr, "bitrack tokenize: %s\n", err.msg);
    free(ids);
    free(text);
    br_tok_destroy(&tok);
    br_gguf_close(&g);
    return rc ? 1 : 0;
}
