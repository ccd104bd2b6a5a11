/* bitrack command line: one executable, one subcommand per verb. */
#include <stdio.h>
#include <string.h>

#include "bitrack/status.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: bitrack <command> [options]\n"
               "commands:\n"
               "  info      describe a model file\n"
               "  synth     write a synthetic model\n"
               "  run       generate text on one machine\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "bitrack: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
