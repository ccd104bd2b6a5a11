/* `bitrack info -m MODEL`: architecture, shapes, tensor types, sizes and memory needed.
 * A file that is not a valid model prints one line on stderr and exits 1. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "sharding/config.h"
#include "sharding/gguf.h"
#include "sharding/types.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: bitrack info -m MODEL.gguf [--tensors]\n");
}

static double gib(double b)
{
    return b / (1024.0 * 1024.0 * 1024.0);
}

int br_cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    int list = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"tensors", no_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            path = optarg;
            break;
        case 'T':
            list = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!path && optind < argc) path = argv[optind];
    if (!path) return br_cli_usage_error("info", "a model is required (-m MODEL.gguf)");
    struct br_err err = {{0}};
    struct br_gguf *g = NULL;
    int rc = br_gguf_open(path, &g, &err);
    if (rc) {
        fprintf(stderr, "bitrack info: %s\n", err.msg);
        return 1;
    }
    struct br_model_config cfg;
    rc = br_config_from_gguf(g, &cfg, &err);
    if (rc) {
        fprintf(stderr, "bitrack info: %s: %s\n", path, err.msg);
        br_gguf_close(&g);
        return 1;
    }
    uint64_t tern_elems = 0, tern_file = 0, other_file = 0, packed = 0;
    for (size_t i = 0; i < br_gguf_n_tensors(g); i++) {
        const struct br_gguf_tensor *t = br_gguf_tensor_at(g, i);
        int is_proj = t->n_dims == 2 && strncmp(t->name, "blk.", 4) == 0;
        if (is_proj) {
            tern_elems += t->nelem;
            tern_file += t->nbytes;
            packed += (uint64_t)((t->ne[0] + 127) / 128) * 32 * t->ne[1];
        } else {
            other_file += t->nbytes;
        }
    }
    uint64_t kv_per_1k = (uint64_t)cfg.n_layer * (uint64_t)cfg.n_head_kv *
                         (uint64_t)(cfg.head_dim + cfg.head_dim_v) * 2 * 1024;
    printf("file:          %s (GGUF v%u, %zu tensors, %zu keys, %.3f GiB)\n", path,
           br_gguf_version(g), br_gguf_n_tensors(g), br_gguf_n_kv(g),
           gib((double)br_gguf_file_size(g)));
    printf("name:          %s\n", cfg.name[0] ? cfg.name : "(none)");
    printf("architecture:  %s (%s FFN, %s, RoPE %s)\n", cfg.arch_name,
           cfg.act == BR_ACT_RELU2 ? "relu^2" : "SiLU-gated",
           cfg.has_subnorm ? "sub-norms" : "no sub-norms", cfg.rope_neox ? "NEOX" : "normal");
    printf("shape:         d %d, layers %d, ffn %d, heads %d / %d kv, head dim %d, vocab %d, "
           "context %d\n",
           cfg.n_embd, cfg.n_layer, cfg.n_ff, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_vocab,
           cfg.n_ctx);
    printf("rope:          base %g, %d dims%s; rms eps %g\n", cfg.rope_base, cfg.n_rot,
           cfg.rope_scale != 1.0f ? " (linear scaling)" : "", cfg.eps);
    printf("weights:       %s, %.1f M ternary weights, %.3f GiB in file, %.3f GiB packed\n",
           br_ggml_type_name(cfg.weight_type), (double)tern_elems / 1e6, gib((double)tern_file),
           gib((double)packed));
    printf("embeddings:    %s%s; head %s\n", br_ggml_type_name(cfg.embd_type),
           cfg.tied_head ? " (head tied)" : "", br_ggml_type_name(cfg.head_type));
    printf("other tensors: %.3f GiB (embeddings, head, norms; read in place)\n",
           gib((double)other_file));
    printf("memory:        %.3f GiB weights + %.3f GiB KV cache per 1k tokens (f16)\n",
           gib((double)(packed + other_file)), gib((double)kv_per_1k));
    if (list)
        for (size_t i = 0; i < br_gguf_n_tensors(g); i++) {
            const struct br_gguf_tensor *t = br_gguf_tensor_at(g, i);
            printf("  %-28s %-6s {", t->name, br_ggml_type_name(t->type));
            for (uint32_t d = 0; d < t->n_dims; d++)
                printf("%s%llu", d ? ", " : "", (unsigned long long)t->ne[d]);
            printf("} %llu bytes\n", (unsigned long long)t->nbytes);
        }
    br_gguf_close(&g);
    return 0;
}
