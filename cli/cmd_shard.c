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
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "sharding/shard.h"
#include "sharding/types.h"

int br_cmd_shard(int argc, char **argv)
{
    const char *model = NULL, *dir = NULL, *head = NULL;
    long long tp = 1, pp = 1;
    uint32_t head_type = 0;
    const struct br_opt opts[] = {
        BR_O_STR('m', "model", &model, "FILE", "the model to cut"),
        BR_O_STR('o', "output", &dir, "DIR", "where to write rank-R.gguf"),
        BR_O_INT(0, "tp", &tp, 1, 4096, "T", "tensor-parallel ranks"),
        BR_O_INT(0, "pp", &pp, 1, 4096, "P", "pipeline stages"),
        BR_O_CHOICE(0, "head-type", &head, "q8_0|q6_k|f16|f32",
                    "re-encode the head rows; none: as in the model"),
    };
    const struct br_cmd_spec spec = {
        "shard", NULL,
        "Writes DIR/rank-R.gguf for every rank R = pp_rank * T + tp_rank of a --tp x --pp\n"
        "plan; `run` and `serve -m DIR` load them.",
        opts, sizeof opts / sizeof *opts};
    int prc = br_opts_parse_none(&spec, argc, argv);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (head) head_type = (uint32_t)br_ggml_type_from_name(head);
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
