/* Small parsers shared by the subcommands. */
#include <errno.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "sharding/plan.h"
#include "sharding/types.h"

uint32_t br_cli_head_type(const char *s)
{
    if (s && strcmp(s, "q8_0") == 0) return BR_GGML_Q8_0;
    if (s && strcmp(s, "q6_k") == 0) return BR_GGML_Q6_K;
    return 0;
}

int br_cli_layout_link(const char *cmd, const char *layout_s, const char *link_s, int *layout,
                       double *gbit, double *us)
{
    *layout = layout_s ? br_layout_parse(layout_s) : BR_LAYOUT_AUTO;
    *gbit = 25, *us = 25;
    int k = 0;
    if (link_s && (sscanf(link_s, "%lf:%lf%n", gbit, us, &k) != 2 || link_s[k] ||
                   !(*gbit > 0 && *gbit < 1e6) || !(*us >= 0 && *us < 1e6)))
        return br_cli_usage_error(cmd, "bad --link '%s' (GBIT:US, e.g. 25:25)", link_s);
    return 0;
}

int br_cli_int(const char *s, long long min, long long max, long long *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

int br_cli_int_list(const char *s, int32_t **out, int32_t *n)
{
    *out = NULL;
    *n = 0;
    if (!s || !*s) return -1;
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return -1;
    const char *p = s;
    int32_t k = 0;
    for (;;) {
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (errno || end == p || x < INT32_MIN || x > INT32_MAX || (*end && *end != ',')) {
            free(v);
            return -1;
        }
        v[k++] = (int32_t)x;
        if (!*end) break;
        p = end + 1;
    }
    *out = v;
    *n = k;
    return 0;
}

int br_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bitrack %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

uint64_t br_cli_random_seed(void)
{
    uint64_t s;
    if (getrandom(&s, sizeof s, 0) == (ssize_t)sizeof s) return s >> 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid()) >> 1;
}

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 when it is not one (overlong
 * forms, surrogates and code points above U+10FFFF are not valid). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len = c < 0x80             ? 1
                 : (c & 0xe0) == 0xc0 ? 2
                 : (c & 0xf0) == 0xe0 ? 3
                 : (c & 0xf8) == 0xf0 ? 4
                                      : 0;
    if (len == 0 || len > n) return 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* A JSON string of n bytes. */
void br_cli_json_str(FILE *f, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        size_t len = utf8_len(u + i, n - i);
        if (len == 0)
            fprintf(f, "\\u%04x", c); /* not UTF-8: the byte's value */
        else if (c == '"' || c == '\\')
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
            fwrite(u + i, 1, len, f);
        i += len ? len : 1;
    }
    fputc('"', f);
}

char *br_cli_read_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0, r;
    char *buf = malloc(cap + 1);
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0)
        if ((n += r) == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) free(buf);
            buf = nb, cap *= 2;
        }
    if (buf) buf[n] = '\0';
    if (len) *len = n;
    if (f != stdin) fclose(f);
    return buf;
}
