/* bitrack command line: one executable, one subcommand per verb (cli/cmd_*.c).
 * `bitrack help CMD` is `bitrack CMD --help`; `bitrack --version` says what was built
 * (version, git revision, compiler) and which kernels this CPU gets. */
#include <stdio.h>
#include <string.h>

#include "br_version.h"
#include "cli/cli.h"
#include "kernels/dispatch.h"

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
    fprintf(f, "usage: bitrack <command> [options]   (bitrack help <command> for its options)\n"
               "       bitrack --version\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
}

static void version(void)
{
    printf("bitrack %s (git %s)\n", BR_VERSION, BR_GIT_REVISION);
#if defined(__clang__)
    printf("compiler: clang %s\n", __clang_version__);
#elif defined(__GNUC__)
    printf("compiler: gcc %d.%d.%d\n", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#else
    printf("compiler: unknown\n");
#endif
    /* what dispatch picks here, and every variant built in with whether this CPU runs it */
    printf("kernels: %s (this CPU;", br_kernels_name());
    static const char *const variants[] = {"ref", "avx2", "avx512", "neon", "neon-nodot"};
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++)
        if (br_kernels_available(variants[i])) printf(" %s", variants[i]);
    printf(" available; BITRACK_KERNELS picks one)\n");
}

static const struct command *find(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(name, commands[i].name)) return &commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        version();
        return 0;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        (!strcmp(argv[1], "help") && argc == 2)) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "help")) {
        /* help CMD [SUB...] == CMD [SUB...] --help */
        const struct command *c = find(argv[2]);
        if (!c) {
            fprintf(stderr, "bitrack help: unknown command '%s'\n", argv[2]);
            usage(stderr);
            return 2;
        }
        char *hargv[8];
        int n = 0;
        for (int i = 2; i < argc && n < 6; i++) hargv[n++] = argv[i];
        hargv[n++] = "--help";
        hargv[n] = NULL;
        return c->fn(n, hargv);
    }
    const struct command *c = find(argv[1]);
    if (c) return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "bitrack: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
