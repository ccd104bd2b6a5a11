/* `bitrack info -m MODEL [--tensors] [--json]`: architecture, shapes, tensor types, sizes and
 * memory needed. A shard file (DIR/rank-R.gguf from `bitrack shard`) is described as the model it
 * was cut from plus the rank's part: layout, layers, slices and the source's checksum, with the
 * weights and KV cache that rank holds. A file that is not a valid model prints one line on stderr
 * and exits 1. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "sharding/config.h"
#include "sharding/gguf.h"
#include "sharding/plan.h"
#include "sharding/shard.h"
#include "sharding/types.h"

static double gib(double b)
{
    return b / (1024.0 * 1024.0 * 1024.0);
}

/* The facts of the text output as one JSON object (sizes in bytes). */
static void print_json(const char *path, const struct br_gguf *g, const struct br_model_config *c,
                       const struct br_shard_info *si, uint64_t tern_elems, uint64_t tern_file,
                       uint64_t packed, uint64_t other_file, uint64_t kv_per_1k, int list)
{
    printf("{\"file\": ");
    br_cli_json_str(stdout, path, strlen(path));
    printf(", \"gguf_version\": %u, \"n_tensors\": %zu, \"n_keys\": %zu, \"file_bytes\": %llu, "
           "\"name\": ",
           br_gguf_version(g), br_gguf_n_tensors(g), br_gguf_n_kv(g),
           (unsigned long long)br_gguf_file_size(g));
    br_cli_json_str(stdout, c->name, strlen(c->name));
    printf(", \"architecture\": ");
    br_cli_json_str(stdout, c->arch_name, strlen(c->arch_name));
    printf(
        ", \"ffn\": \"%s\", \"sub_norms\": %s, \"rope\": \"%s\", \"n_embd\": %d, \"n_layer\": %d, "
        "\"n_ff\": %d, \"n_head\": %d, \"n_head_kv\": %d, \"head_dim\": %d, \"n_vocab\": %d, "
        "\"n_ctx\": %d, \"rope_base\": %.9g, \"n_rot\": %d, \"rope_scale\": %.9g, "
        "\"rms_eps\": %.9g, \"weight_type\": \"%s\", \"ternary_weights\": %llu, "
        "\"ternary_file_bytes\": %llu, \"packed_bytes\": %llu, \"embd_type\": \"%s\", "
        "\"head_type\": \"%s\", \"tied_head\": %s, \"other_bytes\": %llu, "
        "\"weights_bytes\": %llu, \"kv_bytes_per_1k\": %llu",
        c->act == BR_ACT_RELU2 ? "relu2" : "silu-gated", c->has_subnorm ? "true" : "false",
        c->rope_neox ? "neox" : "normal", c->n_embd, c->n_layer, c->n_ff, c->n_head, c->n_head_kv,
        c->head_dim, c->n_vocab, c->n_ctx, c->rope_base, c->n_rot, c->rope_scale, c->eps,
        br_ggml_type_name(c->weight_type), (unsigned long long)tern_elems,
        (unsigned long long)tern_file, (unsigned long long)packed, br_ggml_type_name(c->embd_type),
        br_ggml_type_name(c->head_type), c->tied_head ? "true" : "false",
        (unsigned long long)other_file, (unsigned long long)(packed + other_file),
        (unsigned long long)kv_per_1k);
    if (si) {
        const struct br_part *q = &si->part;
        printf(
            ", \"shard\": {\"rank\": %d, \"tp\": %d, \"pp\": %d, \"stage\": %d, \"tp_rank\": %d, "
            "\"version\": %u, \"layers\": [%d, %d], \"hidden\": [%d, %d], \"kv_heads\": [%d, "
            "%d], \"ffn_rows\": [%d, %d], \"vocab\": [%d, %d], \"first_stage\": %s, "
            "\"last_stage\": %s, \"source_checksum\": \"%016llx\", \"source_bytes\": %llu}",
            si->rank, si->tp, si->pp, q->pp_rank, q->tp_rank, si->version, q->layer0, q->layer1,
            q->d0, q->d1, q->kv0, q->kv1, q->ff0, q->ff1, q->last_stage ? q->v0 : 0,
            q->last_stage ? q->v1 : 0, q->first_stage ? "true" : "false",
            q->last_stage ? "true" : "false", (unsigned long long)si->source_checksum,
            (unsigned long long)si->source_size);
    }
    if (list) {
        printf(", \"tensors\": [");
        for (size_t i = 0; i < br_gguf_n_tensors(g); i++) {
            const struct br_gguf_tensor *t = br_gguf_tensor_at(g, i);
            printf("%s\n  {\"name\": ", i ? "," : "");
            br_cli_json_str(stdout, t->name, strlen(t->name));
            printf(", \"type\": \"%s\", \"shape\": [", br_ggml_type_name(t->type));
            for (uint32_t d = 0; d < t->n_dims; d++)
                printf("%s%llu", d ? ", " : "", (unsigned long long)t->ne[d]);
            printf("], \"bytes\": %llu}", (unsigned long long)t->nbytes);
        }
        printf("\n]");
    }
    printf("}\n");
}

int br_cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    int list = 0, json = 0;
    const struct br_opt opts[] = {
        BR_O_STR('m', "model", &path, "FILE", "the model file or one shard file"),
        BR_O_FLAG(0, "tensors", &list, "list every tensor: name, type, shape, bytes"),
        BR_O_FLAG(0, "json", &json, "print one JSON object instead of text"),
    };
    const struct br_cmd_spec spec = {
        "info", "[MODEL]",
        "Describes a model: architecture, shapes, tensor types, sizes and memory needed; a\n"
        "shard file also as the rank's part of its layout. Exits 1 on a file that is not one.",
        opts, sizeof opts / sizeof *opts};
    int first, prc = br_opts_parse(&spec, argc, argv, &first);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (!path && first < argc) path = argv[first++];
    if (first < argc) return br_cli_usage_error("info", "unexpected argument '%s'", argv[first]);
    struct br_err err = {{0}};
    struct br_gguf *g = NULL;
    int rc = br_gguf_open(path, &g, &err);
    if (rc) {
        fprintf(stderr, "bitrack info: %s\n", err.msg);
        return 1;
    }
    struct br_model_config cfg;
    struct br_shard_info si;
    rc = br_shard_read_info(g, &si, &err);
    const int shard = rc == BR_OK;
    if (shard) {
        /* a shard lacks the tensors the whole-file reader checks shapes against; its
         * shard keys carry those facts */
        rc = br_config_from_meta(g, &cfg, &err);
        cfg.n_vocab = si.n_vocab;
        cfg.embd_type = si.embd_type;
        cfg.head_type = si.head_type;
        cfg.weight_type = si.weight_type;
        cfg.tied_head = si.tied_head;
    } else if (rc == BR_E_NOTFOUND) {
        rc = br_config_from_gguf(g, &cfg, &err);
    }
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
    if (json && shard)
        kv_per_1k = (uint64_t)(si.part.layer1 - si.part.layer0) *
                    (uint64_t)(si.part.kv1 - si.part.kv0) *
                    (uint64_t)(cfg.head_dim + cfg.head_dim_v) * 2 * 1024;
    if (json) {
        print_json(path, g, &cfg, shard ? &si : NULL, tern_elems, tern_file, packed, other_file,
                   kv_per_1k, list);
        br_gguf_close(&g);
        return 0;
    }
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
    if (shard) {
        const struct br_part *q = &si.part;
        int32_t g_per_kv = cfg.n_head / cfg.n_head_kv;
        kv_per_1k = (uint64_t)(q->layer1 - q->layer0) * (uint64_t)(q->kv1 - q->kv0) *
                    (uint64_t)(cfg.head_dim + cfg.head_dim_v) * 2 * 1024;
        printf("shard:         rank %d of a %dx%d (tp x pp) layout: stage %d, tp rank %d "
               "(format version %u)\n",
               si.rank, si.tp, si.pp, q->pp_rank, q->tp_rank, si.version);
        printf("part:          layers %d-%d, hidden columns %d-%d, kv heads %d-%d (query heads "
               "%d-%d), ffn rows %d-%d\n",
               q->layer0, q->layer1 - 1, q->d0, q->d1 - 1, q->kv0, q->kv1 - 1, q->kv0 * g_per_kv,
               q->kv1 * g_per_kv - 1, q->ff0, q->ff1 - 1);
        printf("ends:          %s; %s\n",
               q->first_stage ? "first stage (token embedding columns)" : "no embedding",
               q->last_stage ? "last stage (final norm, head)" : "no head");
        if (q->last_stage) printf("head rows:     vocabulary %d-%d\n", q->v0, q->v1 - 1);
        printf("source:        checksum %016llx, %llu bytes\n",
               (unsigned long long)si.source_checksum, (unsigned long long)si.source_size);
        struct br_plan *plan = NULL;
        struct br_err perr = {{0}};
        if (br_plan_create(&cfg, si.tp, si.pp, &plan, &perr) != BR_OK) {
            printf("plan:          this build cannot plan the layout: %s\n", perr.msg);
        } else {
            const struct br_part *w = &plan->parts[si.rank];
            int same = w->layer0 == q->layer0 && w->layer1 == q->layer1 && w->d0 == q->d0 &&
                       w->d1 == q->d1 && w->kv0 == q->kv0 && w->kv1 == q->kv1 && w->ff0 == q->ff0 &&
                       w->ff1 == q->ff1 && w->v0 == q->v0 && w->v1 == q->v1;
            printf("plan:          %s\n", same ? "matches this build's plan for the layout"
                                               : "differs from this build's plan for the "
                                                 "layout; re-shard the model");
        }
        br_plan_destroy(&plan);
    }
    printf("memory:        %.3f GiB weights + %.3f GiB KV cache per 1k tokens (f16)%s\n",
           gib((double)(packed + other_file)), gib((double)kv_per_1k), shard ? ", this rank" : "");
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
