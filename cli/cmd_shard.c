/*
 * `bitrack shard`: cuts a model into one GGUF file per rank of a TP x PP plan
 * (sharding/shard.h), so each rank of `bitrack run -m DIR` maps only its own part.
 *
 *   bitrack shard -m MODEL.gguf --tp T --pp P [--head-type q8_0|q6_k|f16|f32] -o DIR
 *
 * --head-type re-encodes the head rows of the last stage (e.g. an F16 head as Q8_0, which
 * the engine evaluates with the int8 kernels, kernels/q8.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "sharding/shard.h"
#include "sharding/types.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: bitrack shard -m MODEL.gguf --tp T --pp P [--head-type q8_0|q6_k|f16|f32] -o DIR\n"
        "  writes DIR/rank-<R>.gguf for every rank R = pp_rank * T + tp_rank\n");
}

int br_cmd_shard(int argc, char **argv)
{
    enum { O_TP = 256, O_PP, O_HEAD };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"output", required_argument, 0, 'o'},
                                         {"tp", required_argument, 0, O_TP},
                                         {"pp", required_argument, 0, O_PP},
                                         {"head-type", required_argument, 0, O_HEAD},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    uint32_t head_type = 0;
    const char *model = NULL, *dir = NULL;
    long long tp = 1, pp = 1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'o':
            dir = optarg;
            break;
        case O_TP:
            if (br_cli_int(optarg, 1, 4096, &tp)) return br_cli_usage_error("shard", "bad --tp");
            break;
        case O_PP:
            if (br_cli_int(optarg, 1, 4096, &pp)) return br_cli_usage_error("shard", "bad --pp");
            break;
        case O_HEAD: {
            int t = br_ggml_type_from_name(optarg);
            if (t != BR_GGML_Q8_0 && t != BR_GGML_Q6_K && t != BR_GGML_F16 && t != BR_GGML_F32)
                return br_cli_usage_error(
                    "shard", "--head-type takes q8_0, q6_k, f16 or f32 (got '%s')", optarg);
            head_type = (uint32_t)t;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model) return br_cli_usage_error("shard", "a model is required (-m MODEL.gguf)");
    if (!dir) return br_cli_usage_error("shard", "an output directory is required (-o DIR)");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "bitrack shard: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    struct br_err err = {{0}};
    double t0 = br_now();
    if (br_shard_model_head(model, (int32_t)tp, (int32_t)pp, head_type, dir, &err)) {
        fprintf(stderr, "bitrack shard: %s\n", err.msg);
        return 1;
    }
    unsigned long long total = 0;
    for (long long r = 0; r < tp * pp; r++) {
        char path[4096];
        struct stat st;
        if (br_shard_path(path, sizeof path, dir, (int32_t)r, NULL) == BR_OK &&
            stat(path, &st) == 0)
            total += (unsigned long long)st.st_size;
    }
    fprintf(stderr, "bitrack shard: wrote %lld files (%llu bytes in all) to %s in %.2f s\n",
            tp * pp, total, dir, br_now() - t0);
    return 0;
}
