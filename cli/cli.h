/* Shared pieces of the command-line front end: subcommand entry points and small parsers. */
#ifndef BR_CLI_H
#define BR_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int br_cmd_info(int argc, char **argv);
int br_cmd_synth(int argc, char **argv);
int br_cmd_run(int argc, char **argv);
int br_cmd_plan(int argc, char **argv);
int br_cmd_serve(int argc, char **argv);
int br_cmd_generate(int argc, char **argv);
int br_cmd_tokenize(int argc, char **argv);
int br_cmd_chat(int argc, char **argv);
int br_cmd_shard(int argc, char **argv);
int br_cmd_bench(int argc, char **argv);
int br_cmd_keygen(int argc, char **argv);

/* The defaults every client command shares with the protocol (proto/PROTOCOL.md): greedy
 * decoding, llama.cpp's filters for when a temperature is given, and the protocol's
 * max_tokens. */
#define BR_CLI_DEFAULT_TEMP       0.0
#define BR_CLI_DEFAULT_TOP_K      40
#define BR_CLI_DEFAULT_TOP_P      0.95
#define BR_CLI_DEFAULT_MIN_P      0.05
#define BR_CLI_DEFAULT_MAX_TOKENS 256

/* A seed for "-1: random" (from the OS's random source, else the clock). */
uint64_t br_cli_random_seed(void);

/* Parses a whole decimal integer in [min, max]; returns 0 on success. */
int br_cli_int(const char *s, long long min, long long max, long long *out);
/* Parses "1,2,3" into a malloc'd array; returns 0 on success. */
int br_cli_int_list(const char *s, int32_t **out, int32_t *n);
/* The type named by `--head q8_0|q6_k` (0: not one of them). */
uint32_t br_cli_head_type(const char *s);
/* Writes n bytes as a JSON string: always valid JSON, since bytes that are not valid UTF-8
 * are written as \u00XX of the byte value and control characters are escaped. */
void br_cli_json_str(FILE *f, const char *s, size_t n);
/* A whole file (- for stdin), NUL-terminated and malloc'd, its length in *len (may be
 * NULL); NULL when it cannot be read. */
char *br_cli_read_file(const char *path, size_t *len);
/* --layout and --link, as run and serve take them (option rows BR_CLI_LAYOUT_OPTS): the
 * residual layout (BR_LAYOUT_AUTO when not given) and the link in Gbit/s and one-way us
 * (25:25 when not given). Returns 0, or 2 after printing a usage error. */
int br_cli_layout_link(const char *cmd, const char *layout_s, const char *link_s, int *layout,
                       double *gbit, double *us);
#define BR_CLI_LAYOUT_OPTS(layout_s, link_s)                                                       \
    BR_O_CHOICE(0, "layout", layout_s, "replicated|sharded|auto",                                  \
                "how a TP group holds the residual (sharding/plan.h); auto (the default): the "    \
                "one whose collectives cost less for one token per step over --link; a shard "     \
                "directory has its own"),                                                          \
        BR_O_STR(0, "link", link_s, "GBIT:US",                                                     \
                 "the link between the ranks, Gbit/s and one-way us (25:25): --layout auto "       \
                 "and the choice of collective algorithms assume it")
/* Prints "bitrack <cmd>: message" on stderr and returns exit code 2 (usage errors). */
int br_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
