/* `bitrack plan -m MODEL --tp T --pp P [--layout replicated|sharded] [--mem-per-rank 16G]
 * [--json]`: the per-rank table of the TP x PP plan (sharding/plan.h) and, for TP > 1, the
 * collectives of a layer; exits 1 when a rank does not fit the memory given. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "sharding/config.h"
#include "sharding/gguf.h"
#include "sharding/plan.h"

/* The plan as one JSON object: the layout, the model's shape, and per rank its part and
 * the same estimates as the table (br_plan_describe). */
static int print_json(const struct br_plan *p, uint64_t mem)
{
    const struct br_model_config *c = &p->cfg;
    int over = 0;
    printf("{\"tp\": %d, \"pp\": %d, \"ranks\": %d, \"residual\": \"%s\", \"arch\": \"%s\", "
           "\"n_embd\": %d, "
           "\"n_layer\": %d, \"n_head\": %d, \"n_head_kv\": %d, \"n_ff\": %d, \"n_vocab\": %d, "
           "\"mem_per_rank\": %llu, \"parts\": [",
           p->tp, p->pp, p->tp * p->pp, br_layout_name(p->layout), c->arch_name, c->n_embd,
           c->n_layer, c->n_head, c->n_head_kv, c->n_ff, c->n_vocab, (unsigned long long)mem);
    for (int32_t r = 0; r < p->tp * p->pp; r++) {
        const struct br_part *q = &p->parts[r];
        struct br_rank_figures e;
        br_plan_rank_figures(p, r, mem, &e);
        over += e.over;
        printf("%s\n  {\"rank\": %d, \"tp_rank\": %d, \"stage\": %d, \"layers\": [%d, %d], "
               "\"kv_heads\": [%d, %d], \"ffn_rows\": [%d, %d], \"hidden\": [%d, %d], "
               "\"vocab\": [%d, %d], \"weight_bytes\": %llu, \"kv_bytes_per_1k\": %llu, "
               "\"decode_bytes_per_token\": %llu, \"messages_per_token\": %llu, \"fits\": %s}",
               r ? "," : "", r, q->tp_rank, q->pp_rank, q->layer0, q->layer1, q->kv0, q->kv1,
               q->ff0, q->ff1, q->d0, q->d1, q->last_stage ? q->v0 : 0, q->last_stage ? q->v1 : 0,
               (unsigned long long)e.cost.weight_bytes, (unsigned long long)e.cost.kv_bytes_per_1k,
               (unsigned long long)e.decode_bytes, (unsigned long long)e.decode_messages,
               e.over ? "false" : "true");
    }
    printf("\n]}\n");
    return over;
}

int br_cmd_plan(int argc, char **argv)
{
    const char *path = NULL;
    long long tp = 1, pp = 1;
    uint64_t mem = 0;
    int json = 0;
    const char *layout_s = "replicated";
    const struct br_opt opts[] = {
        BR_O_STR('m', "model", &path, "FILE", "the model"),
        BR_O_INT(0, "tp", &tp, 1, 4096, "T", "tensor-parallel ranks"),
        BR_O_INT(0, "pp", &pp, 1, 4096, "P", "pipeline stages"),
        BR_O_SIZE(0, "mem-per-rank", &mem, "SIZE",
                  "flag ranks whose weights + KV for 4k tokens exceed SIZE (16G)"),
        BR_O_FLAG(0, "json", &json, "print the plan as JSON (ranges are [first, end))"),
        BR_O_CHOICE(0, "layout", &layout_s, "replicated|sharded",
                    "how a TP group holds the residual (sharding/plan.h)"),
    };
    const struct br_cmd_spec spec = {
        "plan", NULL,
        "Shows how a model splits over --tp x --pp ranks: per rank its layers, heads, FFN\n"
        "rows, bytes and traffic. Exits 1 when a rank does not fit --mem-per-rank.",
        opts, sizeof opts / sizeof *opts};
    int first, prc = br_opts_parse(&spec, argc, argv, &first);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (!path && first < argc) path = argv[first++];
    if (first < argc) return br_cli_usage_error("plan", "unexpected argument '%s'", argv[first]);
    int layout = br_layout_parse(layout_s);
    if (!path) return br_cli_usage_error("plan", "a model is required (-m MODEL.gguf)");
    struct br_err err = {{0}};
    struct br_gguf *g = NULL;
    struct br_model_config cfg;
    struct br_plan *plan = NULL;
    if (br_gguf_open(path, &g, &err) || br_config_from_gguf(g, &cfg, &err) ||
        br_plan_create_layout(&cfg, (int32_t)tp, (int32_t)pp, layout, &plan, &err)) {
        fprintf(stderr, "bitrack plan: %s\n", err.msg);
        br_gguf_close(&g);
        return 1;
    }
    br_gguf_close(&g);
    int over = json ? print_json(plan, mem) : br_plan_describe(plan, mem, stdout);
    struct br_coll k[BR_PLAN_MAX_COLLS];
    int n = json ? 0 : br_plan_layer_colls(plan, 1, k);
    if (n) printf("collectives per layer and token (%s residual):\n", br_layout_name(layout));
    for (int i = 0; i < n; i++)
        printf("  %-26s %-20s %llu bytes\n", k[i].what, br_coll_kind_name(k[i].kind),
               (unsigned long long)k[i].bytes);
    n = json ? 0 : br_plan_head_colls(plan, 1, k);
    for (int i = 0; i < n; i++)
        printf("  %-26s %-20s %llu bytes (head, per row)\n", k[i].what,
               br_coll_kind_name(k[i].kind), (unsigned long long)k[i].bytes);
    int rc = 0;
    if (over) {
        fprintf(stderr,
                "bitrack plan: %d of %lld ranks do not fit %.1f GiB (weights + KV for 4k "
                "tokens)\n",
                over, tp * pp, (double)mem / (1024.0 * 1024 * 1024));
        rc = 1;
    }
    br_plan_destroy(&plan);
    return rc;
}
