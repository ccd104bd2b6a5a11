/* `bitrack plan -m MODEL --tp T --pp P [--layout replicated|sharded] [--mem-per-rank 16G]`:
 * the per-rank table of the TP x PP plan (sharding/plan.h) and, for TP > 1, the
 * collectives of a layer; exits 1 when a rank does not fit the memory given. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "sharding/config.h"
#include "sharding/gguf.h"
#include "sharding/plan.h"

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0) return -1;
    double mult = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mult = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1024.0 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'i' || *end == 'B' || *end == 'b') end++;
    if (*end == 'B') end++;
    if (*end) return -1;
    *out = (uint64_t)(v * mult);
    return 0;
}

int br_cmd_plan(int argc, char **argv)
{
    const char *path = NULL;
    long long tp = 1, pp = 1;
    uint64_t mem = 0;
    int layout = BR_LAYOUT_REPLICATED;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"tp", required_argument, 0, 'T'},
                                         {"pp", required_argument, 0, 'P'},
                                         {"mem-per-rank", required_argument, 0, 'M'},
                                         {"layout", required_argument, 0, 'L'},
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
            if (br_cli_int(optarg, 1, 4096, &tp)) return br_cli_usage_error("plan", "bad --tp");
            break;
        case 'P':
            if (br_cli_int(optarg, 1, 4096, &pp)) return br_cli_usage_error("plan", "bad --pp");
            break;
        case 'M':
            if (parse_size(optarg, &mem))
                return br_cli_usage_error("plan", "bad --mem-per-rank '%s' (e.g. 16G)", optarg);
            break;
        case 'L':
            if ((layout = br_layout_parse(optarg)) < 0)
                return br_cli_usage_error("plan", "--layout takes replicated or sharded");
            break;
        case 'h':
            printf("usage: bitrack plan -m MODEL --tp T --pp P [--layout replicated|sharded] "
                   "[--mem-per-rank 16G]\n");
            return 0;
        default:
            return 2;
        }
    }
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
    int over = br_plan_describe(plan, mem, stdout);
    struct br_coll k[BR_PLAN_MAX_COLLS];
    int n = br_plan_layer_colls(plan, 1, k);
    if (n) printf("collectives per layer and token (%s residual):\n", br_layout_name(layout));
    for (int i = 0; i < n; i++)
        printf("  %-26s %-20s %llu bytes\n", k[i].what, br_coll_kind_name(k[i].kind),
               (unsigned long long)k[i].bytes);
    n = br_plan_head_colls(plan, 1, k);
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
