/* Shared pieces of the command-line front end: subcommand entry points and small parsers. */
#ifndef BR_CLI_H
#define BR_CLI_H

#include <stdint.h>

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

/* Parses a whole decimal integer in [min, max]; returns 0 on success. */
int br_cli_int(const char *s, long long min, long long max, long long *out);
/* Parses "1,2,3" into a malloc'd array; returns 0 on success. */
int br_cli_int_list(const char *s, int32_t **out, int32_t *n);
/* The type named by `--head q8_0|q6_k` (0: not one of them). */
uint32_t br_cli_head_type(const char *s);
/* Prints "bitrack <cmd>: message" on stderr and returns exit code 2 (usage errors). */
int br_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
