/* bitrack command line: one executable, one subcommand per verb (cli/cmd_*.c). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
};

static const struct command commands[] = {
    {"info", br_cmd_info, "describe a model file: architecture, shapes, types, memory"},
    {"synth", br_cmd_synth,
     "write a synthetic model (presets tiny, 2b-4t, large, llama3-8b, 100b)"},
    {"run", br_cmd_run, "generate (one process, or under mpirun with --tp/--pp)"},
    {"plan", br_cmd_plan, "show how a model splits over --tp x --pp ranks"},
    {"serve", br_cmd_serve, "serve the model over ZeroMQ (under mpirun for a cluster)"},
    {"generate", br_cmd_generate, "send a prompt to a server and stream the answer"},
    {"chat", br_cmd_chat, "interactive chat, local (-m MODEL) or with a server (--server)"},
    {"tokenize", br_cmd_tokenize, "print the token ids of a text as JSON"},
    {"keygen", br_cmd_keygen, "make a CurveZMQ key pair for serve --curve-* and clients"},
    {"shard", br_cmd_shard, "write one shard file per rank of a --tp x --pp plan"},
    {"bench", br_cmd_bench, "benchmarks: load-test a server (--server ADDR), kernels, model"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: bitrack <command> [options]   (bitrack <command> --help for its options)\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "bitrack: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
