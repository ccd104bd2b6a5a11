/*
 * The option parser of every subcommand (see opts.h): getopt_long underneath, driven by
 * the command's table, so that parsing, range checks, error messages and --help come
 * from one description.
 *
 * Errors name the flag as it was typed: "--temp: 'abc' is not a number". A value glued to
 * a short option is named with the word it came in, because `-ngl 0` (a llama.cpp flag)
 * reads as -n with the value "gl": "-n: 'gl' is not a whole number (in '-ngl')".
 */
#include "cli/opts.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPTS 96

static int fail(const char *cmd, const char *flag, const char *in, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(const char *cmd, const char *flag, const char *in, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bitrack %s: %s: ", cmd, flag);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (in) fprintf(stderr, " (in '%s')", in);
    fputc('\n', stderr);
    return 2;
}

/* Range text: "from 1 to 1024", "at least 0". */
static void range_text(char *buf, size_t n, double min, double max, int whole)
{
    if (whole && max >= 9.2e18)
        snprintf(buf, n, "at least %lld", (long long)min);
    else if (whole)
        snprintf(buf, n, "from %lld to %lld", (long long)min, (long long)max);
    else
        snprintf(buf, n, "from %g to %g", min, max);
}

static int check_int(const char *cmd, const char *flag, const char *in, const char *s,
                     long long min, long long max, long long *out)
{
    char *end, range[96];
    range_text(range, sizeof range, (double)min, (double)max, 1);
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end) return fail(cmd, flag, in, "'%s' is not a whole number (%s)", s, range);
    if (errno || v < min || v > max)
        return fail(cmd, flag, in, "%s is out of range (%s)", s, range);
    *out = v;
    return 0;
}

static int check_float(const char *cmd, const char *flag, const char *in, const char *s, double min,
                       double max, double *out)
{
    char *end, range[96];
    range_text(range, sizeof range, min, max, 0);
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || isnan(v)) return fail(cmd, flag, in, "'%s' is not a number (%s)", s, range);
    if (errno || !(v >= min && v <= max))
        return fail(cmd, flag, in, "%s is out of range (%s)", s, range);
    *out = v;
    return 0;
}

int br_opt_int(const char *cmd, const char *flag, const char *s, long long min, long long max,
               long long *out)
{
    return check_int(cmd, flag, NULL, s ? s : "", min, max, out);
}

int br_opt_float(const char *cmd, const char *flag, const char *s, double min, double max,
                 double *out)
{
    return check_float(cmd, flag, NULL, s ? s : "", min, max, out);
}

/* "16G", "512M", "1.5T", "4096": bytes (binary multiples; an optional "iB"/"B"). */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0)) return -1;
    double mult = 1;
    const char *units = "KMGT";
    const char *u = *end ? strchr(units, *end & ~0x20) : NULL;
    if (u) {
        for (const char *k = units; k <= u; k++) mult *= 1024.0;
        end++;
    }
    if (*end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end || v * mult > 1.8e19) return -1;
    *out = (uint64_t)(v * mult);
    return 0;
}

/* One value into its destination; flag/in name it in errors. */
static int store(const char *cmd, const struct br_opt *o, const char *flag, const char *in,
                 const char *arg)
{
    switch (o->kind) {
    case BR_OPT_FLAG:
        *(int *)o->dest = 1;
        return 0;
    case BR_OPT_STR:
        *(const char **)o->dest = arg;
        return 0;
    case BR_OPT_INT: /* INT64_MAX does not survive the trip through a double */
        return check_int(cmd, flag, in, arg, o->min <= -9.2e18 ? INT64_MIN : (long long)o->min,
                         o->max >= 9.2e18 ? INT64_MAX : (long long)o->max, o->dest);
    case BR_OPT_FLOAT:
        return check_float(cmd, flag, in, arg, o->min, o->max, o->dest);
    case BR_OPT_SIZE:
        if (parse_size(arg, o->dest))
            return fail(cmd, flag, in, "'%s' is not a size (e.g. 4096, 512M, 16G)", arg);
        return 0;
    case BR_OPT_ADDR: {
        struct br_err err = {{0}};
        if (br_client_addr_normalize(arg, o->dest, BR_ADDR_MAX, &err))
            return fail(cmd, flag, in, "%s", err.msg);
        return 0;
    }
    case BR_OPT_CHOICE: {
        size_t n = strlen(arg);
        for (const char *c = o->choices; *c;) {
            size_t k = strcspn(c, "|");
            if (k == n && !strncmp(c, arg, n)) {
                *(const char **)o->dest = arg;
                return 0;
            }
            c += k + (c[k] == '|');
        }
        return fail(cmd, flag, in, "'%s' is not one of %s", arg, o->choices);
    }
    case BR_OPT_LIST: {
        struct br_opt_list *l = o->dest;
        if (l->n == BR_OPT_LIST_MAX)
            return fail(cmd, flag, in, "at most %d times", BR_OPT_LIST_MAX);
        l->v[l->n++] = arg;
        return 0;
    }
    }
    return 2;
}

int br_opts_parse(const struct br_cmd_spec *spec, int argc, char **argv, int *first_operand)
{
    const char *cmd = spec->name;
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            br_opts_help(spec, stdout);
            return BR_OPTS_HELP;
        }
    /* getopt_long's tables: long options carry 256 + the row; short ones are looked up */
    struct option lo[2 * MAX_OPTS + 1];
    char shorts[3 * MAX_OPTS + 2] = ":";
    size_t nl = 0, ns = 1;
    if (spec->n_opts > MAX_OPTS) return fail(cmd, "options", NULL, "too many for the parser");
    for (size_t i = 0; i < spec->n_opts; i++) {
        const struct br_opt *o = &spec->opts[i];
        int has = o->kind == BR_OPT_FLAG ? no_argument : required_argument;
        lo[nl++] = (struct option){o->long_name, has, NULL, 256 + (int)i};
        if (o->alias) lo[nl++] = (struct option){o->alias, has, NULL, 256 + (int)i};
        if (o->short_name) {
            shorts[ns++] = o->short_name;
            if (has == required_argument) shorts[ns++] = ':';
        }
    }
    lo[nl] = (struct option){NULL, 0, NULL, 0};
    shorts[ns] = '\0';
    optind = 1;
    opterr = 0;
    int c, li;
    while (li = -1, (c = getopt_long(argc, argv, shorts, lo, &li)) != -1) {
        const char *word = argv[optind - 1]; /* the word just read (its value for "-x V") */
        if (c == '?' || c == ':') {
            char name[80];
            if (optopt >= 256)
                snprintf(name, sizeof name, "--%s", spec->opts[optopt - 256].long_name);
            else if (optopt)
                snprintf(name, sizeof name, "-%c", (char)optopt);
            else
                snprintf(name, sizeof name, "%s", word);
            if (c == ':') return fail(cmd, name, NULL, "needs a value (bitrack %s --help)", cmd);
            int glued = optopt && optopt < 256 && strlen(word) > 2 && word[0] == '-';
            fprintf(stderr,
                    "bitrack %s: unknown option '%s'%s%s%s (bitrack %s --help lists them)\n", cmd,
                    name, glued ? " in '" : "", glued ? word : "", glued ? "'" : "", cmd);
            return 2;
        }
        const struct br_opt *o = NULL;
        if (c >= 256) {
            o = &spec->opts[c - 256];
        } else {
            for (size_t i = 0; i < spec->n_opts && !o; i++)
                if (spec->opts[i].short_name == c) o = &spec->opts[i];
        }
        if (!o) return fail(cmd, word, NULL, "not understood");
        char flag[80];
        const char *in = NULL;
        if (li >= 0) {
            snprintf(flag, sizeof flag, "--%s", lo[li].name);
        } else {
            snprintf(flag, sizeof flag, "-%c", (char)c);
            /* "-n5" is fine; "-ngl" is worth naming as typed when its value is bad */
            if (optarg && optarg != word) in = word;
        }
        int rc = store(cmd, o, flag, in, optarg);
        if (rc) return rc;
    }
    *first_operand = optind;
    return 0;
}

int br_opts_parse_none(const struct br_cmd_spec *spec, int argc, char **argv)
{
    int first, rc = br_opts_parse(spec, argc, argv, &first);
    if (rc || first == argc) return rc;
    fprintf(stderr, "bitrack %s: unexpected argument '%s'\n", spec->name, argv[first]);
    return 2;
}

/* The default as text, read from the destination. */
static void default_text(const struct br_opt *o, char *buf, size_t n)
{
    switch (o->kind) {
    case BR_OPT_FLAG:
        snprintf(buf, n, "%s", *(const int *)o->dest ? "on" : "off");
        return;
    case BR_OPT_STR:
    case BR_OPT_CHOICE: {
        const char *s = *(const char *const *)o->dest;
        snprintf(buf, n, "%s", s ? s : "none");
        return;
    }
    case BR_OPT_INT:
        snprintf(buf, n, "%lld", *(const long long *)o->dest);
        return;
    case BR_OPT_FLOAT:
        snprintf(buf, n, "%g", *(const double *)o->dest);
        return;
    case BR_OPT_SIZE: {
        uint64_t v = *(const uint64_t *)o->dest;
        const char *u = "";
        for (const char *k = "KMGT"; v && v % 1024 == 0 && *k; k++) {
            v /= 1024;
            u = k;
            if (v % 1024) break;
        }
        if (*u)
            snprintf(buf, n, "%llu%c", (unsigned long long)v, *u);
        else if (v)
            snprintf(buf, n, "%llu", (unsigned long long)v);
        else
            snprintf(buf, n, "none");
        return;
    }
    case BR_OPT_ADDR:
        snprintf(buf, n, "%s", *(const char *)o->dest ? (const char *)o->dest : "none");
        return;
    case BR_OPT_LIST:
        snprintf(buf, n, "%s", ((const struct br_opt_list *)o->dest)->n ? "given" : "none");
        return;
    }
}

/* Prints text from column `indent`, breaking lines at spaces before column `width`. */
static void wrap(FILE *f, const char *text, int indent, int width)
{
    int col = indent;
    const char *p = text;
    while (*p) {
        size_t w = strcspn(p, " ");
        if (col > indent && col + 1 + (int)w > width) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, w, f);
        col += (int)w;
        p += w;
        while (*p == ' ') p++;
    }
    fputc('\n', f);
}

void br_opts_help(const struct br_cmd_spec *spec, FILE *f)
{
    fprintf(f, "usage: bitrack %s [options]%s%s\n", spec->name, spec->operands ? " " : "",
            spec->operands ? spec->operands : "");
    if (spec->about) fprintf(f, "\n%s\n", spec->about);
    fprintf(f, "\noptions:\n");
    for (size_t i = 0; i < spec->n_opts; i++) {
        const struct br_opt *o = &spec->opts[i];
        char left[96], def[BR_ADDR_MAX + 8];
        int k =
            snprintf(left, sizeof left, "  %s%c%s--%s", o->short_name ? "-" : "    ",
                     o->short_name ? o->short_name : ' ', o->short_name ? ", " : "", o->long_name);
        if (!o->short_name) k = snprintf(left, sizeof left, "      --%s", o->long_name);
        if (o->arg && o->kind != BR_OPT_FLAG && k > 0 && (size_t)k < sizeof left)
            snprintf(left + k, sizeof left - (size_t)k, " %s", o->arg);
        default_text(o, def, sizeof def);
        char text[512];
        snprintf(text, sizeof text, "%s (default: %s)%s%s", o->help, def,
                 o->alias ? "; also --" : "", o->alias ? o->alias : "");
        if (strlen(left) > 29)
            fprintf(f, "%s\n%31s", left, "");
        else
            fprintf(f, "%-31s", left);
        wrap(f, text, 31, 100);
    }
    fprintf(f, "  -h, --help                   this help\n");
}
