/* `bitrack synth`: writes a synthetic model (sharding/synth.h), or with --rank only one
 * rank's shard file of it (sharding/shard.h), generated without the rest of the model. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "sharding/shard.h"
#include "sharding/synth.h"
#include "sharding/types.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bitrack synth [--preset tiny|2b-4t|large|llama3-8b|100b] [--type "
            "i2_s|tq2_0|tq1_0|f16]\n"
            "                     [--layers N] [--seed S] [--head-type f16|q8_0|q6_k] -o FILE\n"
            "  shape overrides: --arch A --embd N --ff N --heads N --kv-heads N --vocab N --ctx N\n"
            "                   --tied | --untied\n"
            "  one rank's shard only: --tp T --pp P --rank R -o DIR (writes DIR/rank-R.gguf)\n");
}

int br_cmd_synth(int argc, char **argv)
{
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    const char *out = NULL;
    enum {
        O_TYPE = 256,
        O_HEAD,
        O_ARCH,
        O_EMBD,
        O_FF,
        O_HEADS,
        O_KV,
        O_VOCAB,
        O_CTX,
        O_TIED,
        O_UNTIED,
        O_TP,
        O_PP,
        O_RANK
    };
    long long tp = 1, pp = 1, rank = -1;
    static const struct option opts[] = {
        {"preset", required_argument, 0, 'P'},    {"type", required_argument, 0, O_TYPE},
        {"layers", required_argument, 0, 'L'},    {"seed", required_argument, 0, 's'},
        {"output", required_argument, 0, 'o'},    {"head-type", required_argument, 0, O_HEAD},
        {"arch", required_argument, 0, O_ARCH},   {"embd", required_argument, 0, O_EMBD},
        {"ff", required_argument, 0, O_FF},       {"heads", required_argument, 0, O_HEADS},
        {"kv-heads", required_argument, 0, O_KV}, {"vocab", required_argument, 0, O_VOCAB},
        {"ctx", required_argument, 0, O_CTX},     {"tied", no_argument, 0, O_TIED},
        {"untied", no_argument, 0, O_UNTIED},     {"help", no_argument, 0, 'h'},
        {"tp", required_argument, 0, O_TP},       {"pp", required_argument, 0, O_PP},
        {"rank", required_argument, 0, O_RANK},   {0, 0, 0, 0}};
    int c;
    long long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:s:h", opts, NULL)) != -1) {
        int32_t *slot = NULL;
        switch (c) {
        case 'P':
            o.preset = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 's':
            if (br_cli_int(optarg, 0, INT64_MAX, &v))
                return br_cli_usage_error("synth", "bad --seed");
            o.seed = (uint64_t)v;
            break;
        case O_TYPE:
        case O_HEAD: {
            int t = br_ggml_type_from_name(optarg);
            if (t < 0) return br_cli_usage_error("synth", "unknown type '%s'", optarg);
            if (c == O_TYPE)
                o.weight_type = (uint32_t)t;
            else
                o.head_type = (uint32_t)t;
            break;
        }
        case O_ARCH:
            o.arch = optarg;
            break;
        case 'L':
            slot = &o.n_layer;
            break;
        case O_EMBD:
            slot = &o.n_embd;
            break;
        case O_FF:
            slot = &o.n_ff;
            break;
        case O_HEADS:
            slot = &o.n_head;
            break;
        case O_KV:
            slot = &o.n_head_kv;
            break;
        case O_VOCAB:
            slot = &o.n_vocab;
            break;
        case O_CTX:
            slot = &o.n_ctx;
            break;
        case O_TIED:
            o.tied = 1;
            break;
        case O_UNTIED:
            o.tied = 0;
            break;
        case O_TP:
            if (br_cli_int(optarg, 1, 4096, &tp)) return br_cli_usage_error("synth", "bad --tp");
            break;
        case O_PP:
            if (br_cli_int(optarg, 1, 4096, &pp)) return br_cli_usage_error("synth", "bad --pp");
            break;
        case O_RANK:
            if (br_cli_int(optarg, 0, 1 << 24, &rank))
                return br_cli_usage_error("synth", "bad --rank");
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (slot) {
            if (br_cli_int(optarg, 1, 1 << 24, &v))
                return br_cli_usage_error("synth", "bad shape value '%s'", optarg);
            *slot = (int32_t)v;
        }
    }
    if (!out) return br_cli_usage_error("synth", "an output file is required (-o FILE)");
    struct br_err err = {{0}};
    if (rank >= 0) {
        if (rank >= tp * pp)
            return br_cli_usage_error("synth", "--rank %lld is not in a %lldx%lld layout", rank, tp,
                                      pp);
        if (mkdir(out, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "bitrack synth: cannot create %s: %s\n", out, strerror(errno));
            return 1;
        }
        double t0 = br_now();
        if (br_synth_write_shard(&o, (int32_t)tp, (int32_t)pp, (int32_t)rank, out, &err)) {
            fprintf(stderr, "bitrack synth: %s\n", err.msg);
            return 1;
        }
        char path[4096];
        struct stat st;
        if (br_shard_path(path, sizeof path, out, (int32_t)rank, NULL) || stat(path, &st) != 0)
            st.st_size = 0;
        fprintf(stderr,
                "bitrack synth: wrote %s (%lld bytes; rank %lld of %lldx%lld, preset %s, %s) in "
                "%.2f s\n",
                path, (long long)st.st_size, rank, tp, pp, o.preset,
                br_ggml_type_name(o.weight_type), br_now() - t0);
        return 0;
    }
    if (tp * pp > 1) return br_cli_usage_error("synth", "--tp/--pp need --rank");
    int rc = br_synth_write(&o, out, &err);
    if (rc) {
        fprintf(stderr, "bitrack synth: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "bitrack synth: wrote %s (preset %s, %s)\n", out, o.preset,
            br_ggml_type_name(o.weight_type));
    return 0;
}
