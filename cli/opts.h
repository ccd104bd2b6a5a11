/*
 * The command line's one option parser: every subcommand describes its options in a table
 * of struct br_opt, and br_opts_parse reads argv against it.
 *
 * Why one table: the same entry parses the value, checks its range, names the flag in the
 * error ("bitrack run: --temp: 'abc' is not a number"), and prints the --help line with
 * the default, which is read from the destination before parsing (so the help cannot
 * disagree with what the command does). Values a table cannot express (lists, pairs of
 * options that go together) are checked by the command after parsing, with
 * br_cli_usage_error naming the flag.
 *
 * Kinds and their destinations:
 *   FLAG    int (set to 1)            STR     const char * (NULL: not given)
 *   INT     long long in [min, max]   FLOAT   double in [min, max], finite
 *   SIZE    uint64_t bytes, "16G", "512M", "4096"
 *   ADDR    char[BR_ADDR_MAX]: a ZeroMQ endpoint; "host:port" means tcp://host:port
 *           (br_client_addr_normalize)
 *   CHOICE  const char *, one of `choices` ("q8_0|q6_k")
 *   LIST    struct br_opt_list: every use appends (up to BR_OPT_LIST_MAX)
 */
#ifndef BR_CLI_OPTS_H
#define BR_CLI_OPTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/client.h"

enum br_opt_kind {
    BR_OPT_FLAG,
    BR_OPT_STR,
    BR_OPT_INT,
    BR_OPT_FLOAT,
    BR_OPT_SIZE,
    BR_OPT_ADDR,
    BR_OPT_CHOICE,
    BR_OPT_LIST,
};

#define BR_OPT_LIST_MAX 16
#define BR_ADDR_MAX     BR_CLIENT_ADDR_MAX

struct br_opt_list {
    const char *v[BR_OPT_LIST_MAX];
    uint32_t n;
};

struct br_opt {
    char short_name;       /* 0: long name only */
    const char *long_name; /* without the dashes */
    enum br_opt_kind kind;
    void *dest;
    double min, max;     /* INT, FLOAT: inclusive range */
    const char *arg;     /* the value's name in the help ("N", "FILE") */
    const char *help;    /* one line; the default is appended */
    const char *choices; /* CHOICE: "a|b|c" */
    const char *alias;   /* another long name that means the same ("ctx" for "ctx-size") */
};

/* Table rows. */
#define BR_O_FLAG(s, l, d, h)                                                                      \
    {                                                                                              \
        .short_name = s, .long_name = l, .kind = BR_OPT_FLAG, .dest = d, .help = h                 \
    }
#define BR_O_STR(s, l, d, a, h)                                                                    \
    {                                                                                              \
        .short_name = s, .long_name = l, .kind = BR_OPT_STR, .dest = d, .arg = a, .help = h        \
    }
#define BR_O_INT(s, l, d, lo, hi, a, h)                                                            \
    {                                                                                              \
        .short_name = s, .long_name = l, .kind = BR_OPT_INT, .dest = d, .min = lo, .max = hi,      \
        .arg = a, .help = h                                                                        \
    }
#define BR_O_FLOAT(s, l, d, lo, hi, a, h)                                                          \
    {                                                                                              \
        .short_name = s, .long_name = l, .kind = BR_OPT_FLOAT, .dest = d, .min = lo, .max = hi,    \
        .arg = a, .help = h                                                                        \
    }
#define BR_O_SIZE(s, l, d, a, h)                                                                   \
    {                                                                                              \
        .short_name = s, .long_name = l, .kind = BR_OPT_SIZE, .dest = d, .arg = a, .help = h       \
    }
#define BR_O_ADDR(s, l, d, h)                                                                      \
    {                                                                                              \
        .short_name = s, .long_name = l, .kind = BR_OPT_ADDR, .dest = d, .arg = "ADDR", .help = h  \
    }
#define BR_O_CHOICE(s, l, d, c, h)                                                                 \
    {                                                                                              \
        .short_name = s, .long_name = l, .kind = BR_OPT_CHOICE, .dest = d, .arg = c, .help = h,    \
        .choices = c                                                                               \
    }
#define BR_O_LIST(s, l, d, a, h)                                                                   \
    {                                                                                              \
        .short_name = s, .long_name = l, .kind = BR_OPT_LIST, .dest = d, .arg = a, .help = h       \
    }

/* A subcommand: its name as typed after `bitrack` ("bench model"), the operands after the
 * options ("(PROMPT | -)"), one paragraph about it, and its options. */
struct br_cmd_spec {
    const char *name;
    const char *operands;
    const char *about;
    const struct br_opt *opts;
    size_t n_opts;
};

#define BR_OPTS_HELP (-1) /* br_opts_parse printed the help: exit 0 */

/* Parses argv[1..argc) (argv[0] is the subcommand's name) against spec. Options may come
 * in any order and between operands; "--" ends them. On success returns 0 and sets
 * *first_operand to the index of the first operand (argv is permuted so that operands
 * come last). With -h or --help anywhere before "--" it prints the help on stdout and
 * returns BR_OPTS_HELP. On bad input it prints one line on stderr naming the flag and
 * returns 2 (the usage-error exit status). */
int br_opts_parse(const struct br_cmd_spec *spec, int argc, char **argv, int *first_operand);

/* br_opts_parse for a command that takes no operand: a word left after the options is a
 * usage error ("unexpected argument"). Returns 0, BR_OPTS_HELP or 2 as br_opts_parse. */
int br_opts_parse_none(const struct br_cmd_spec *spec, int argc, char **argv);

/* Prints the help of spec: usage line, about, and every option with its default. */
void br_opts_help(const struct br_cmd_spec *spec, FILE *f);

/* Value checks shared with the commands that still read their options by hand; each
 * returns 0, or prints "bitrack CMD: FLAG: ..." on stderr and returns 2. */
int br_opt_int(const char *cmd, const char *flag, const char *s, long long min, long long max,
               long long *out);
int br_opt_float(const char *cmd, const char *flag, const char *s, double min, double max,
                 double *out);

#endif
