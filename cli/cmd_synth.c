/* `bitrack synth`: writes a synthetic model (sharding/synth.h), or with --rank only one
 * rank's shard file of it (sharding/shard.h), generated without the rest of the model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitrack/progress.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "sharding/shard.h"
#include "sharding/synth.h"
#include "sharding/types.h"

int br_cmd_synth(int argc, char **argv)
{
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    const char *out = NULL, *type = "i2_s", *head = NULL, *preset = o.preset;
    long long tp = 1, pp = 1, rank = -1, seed = (long long)o.seed;
    long long layers = 0, embd = 0, ff = 0, heads = 0, kv = 0, vocab = 0, ctx = 0;
    int tied = 0, untied = 0;
    const struct br_opt opts[] = {
        BR_O_CHOICE(0, "preset", &preset, "tiny|2b-4t|large|3b|llama3-8b|100b", "model layout"),
        BR_O_CHOICE(0, "type", &type, "i2_s|tq2_0|tq1_0|f16", "projection weights' type"),
        BR_O_CHOICE(0, "head-type", &head, "f16|q8_0|q6_k",
                    "an untied head's type (for a tied head, token_embd's); none: the preset's"),
        BR_O_INT('s', "seed", &seed, 0, INT64_MAX, "S", "seed of the random weights"),
        BR_O_STR('o', "output", &out, "FILE", "the model file to write (with --rank: a directory)"),
        BR_O_STR(0, "arch", &o.arch, "A", "architecture name; none: the preset's"),
        BR_O_INT(0, "layers", &layers, 0, 1 << 24, "N", "layers; 0: the preset's"),
        BR_O_INT(0, "embd", &embd, 0, 1 << 24, "N", "hidden size; 0: the preset's"),
        BR_O_INT(0, "ff", &ff, 0, 1 << 24, "N", "FFN size; 0: the preset's"),
        BR_O_INT(0, "heads", &heads, 0, 1 << 24, "N", "attention heads; 0: the preset's"),
        BR_O_INT(0, "kv-heads", &kv, 0, 1 << 24, "N", "KV heads; 0: the preset's"),
        BR_O_INT(0, "vocab", &vocab, 0, 1 << 24, "N", "vocabulary size; 0: the preset's"),
        BR_O_INT(0, "ctx", &ctx, 0, 1 << 24, "N", "context length; 0: the preset's"),
        BR_O_FLAG(0, "tied", &tied, "the head is token_embd (default: the preset's)"),
        BR_O_FLAG(0, "untied", &untied, "a separate output.weight (default: the preset's)"),
        BR_O_INT(0, "tp", &tp, 1, 4096, "T", "with --rank: tensor-parallel ranks"),
        BR_O_INT(0, "pp", &pp, 1, 4096, "P", "with --rank: pipeline stages"),
        BR_O_INT(0, "rank", &rank, -1, 1 << 24, "R",
                 "write only this rank's shard, DIR/rank-R.gguf; -1: the whole model"),
    };
    const struct br_cmd_spec spec = {
        "synth", NULL,
        "Writes a synthetic model with a real model's layout and random ternary weights\n"
        "(the built-in byte-level vocabulary), or with --rank only one rank's shard of it.",
        opts, sizeof opts / sizeof *opts};
    int prc = br_opts_parse_none(&spec, argc, argv);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (tied && untied) return br_cli_usage_error("synth", "--tied or --untied, not both");
    o.preset = preset;
    o.seed = (uint64_t)seed;
    o.weight_type = (uint32_t)br_ggml_type_from_name(type);
    if (head) o.head_type = (uint32_t)br_ggml_type_from_name(head);
    o.n_layer = (int32_t)layers, o.n_embd = (int32_t)embd, o.n_ff = (int32_t)ff;
    o.n_head = (int32_t)heads, o.n_head_kv = (int32_t)kv, o.n_vocab = (int32_t)vocab;
    o.n_ctx = (int32_t)ctx;
    if (tied || untied) o.tied = tied;
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
