/*
 * `bitrack bench scale`: the scale model of bench/scale.h, from the command line.
 *
 *   bitrack bench scale -m PATH --tp T --pp P --rank R [--shard T:P:R:PATH ...]
 *       [-t 1] [--batch 1,4,16,64] [--reps 5] [--ctx N] [--layouts 8x1,4x2 | --nodes 8,16]
 *       [--net GBIT:US,...] [--cores C] [--json FILE]
 *     measures each given rank's step (one process, loopback collectives), then projects
 *     every layout whose TP width was measured, for every network.
 *
 *   mpirun -np W bitrack bench scale net [--sizes 64,1024,...] [--reps 20] [--json FILE]
 *     times the MPI calls the engine makes (all-gather, int32 reduce-scatter over all W
 *     ranks, one-way point to point between the first and last rank) and fits the
 *     point-to-point time to a + m/bw, the network parameters of the projection.
 */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench/scale.h"
#include "bitrack/progress.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "kernels/dispatch.h"
#include "kernels/pool.h"
#include "sharding/config.h"
#include "sharding/gguf.h"
#include "sharding/plan.h"
#include "sharding/synth.h"
#include "worker/comm_mpi.h"
#include "worker/engine.h"
#include "worker/model.h"

int br_cmd_bench_scale(int argc, char **argv);

#define MAX_SHARDS 16
#define MAX_ITEMS  64

struct shard_arg {
    int tp, pp, rank;
    const char *path;
};

struct net_arg {
    double gbit, alpha_us;
    /* from `bench scale net --json` (--net-measured): the collectives of a layer and of
     * the head, per residual layout, measured at this batch and TP width; 0 otherwise */
    int32_t batch, group;
    double layer_us[2], head_us[2];
};

/* The number after "key": in text (after `after` when given), or -1. */
static double json_num(const char *text, const char *after, const char *key)
{
    const char *p = after ? strstr(text, after) : text;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    p = p ? strstr(p, pat) : NULL;
    return p ? strtod(p + strlen(pat), NULL) : -1;
}

/* Reads a `bench scale net --json` file into a network: the alpha-beta fit for the
 * broadcast and point-to-point terms, the measured collectives for the layers. */
static int read_net_json(const char *path, struct net_arg *n)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    memset(n, 0, sizeof *n);
    n->alpha_us = json_num(text, NULL, "fit_alpha_us");
    n->gbit = json_num(text, NULL, "fit_bw_gbit");
    n->batch = (int32_t)json_num(text, NULL, "batch");
    n->group = (int32_t)json_num(text, NULL, "group");
    n->layer_us[0] = json_num(text, "\"layer_us\"", "replicated");
    n->layer_us[1] = json_num(text, "\"layer_us\"", "sharded");
    n->head_us[0] = json_num(text, "\"head_us\"", "replicated");
    n->head_us[1] = json_num(text, "\"head_us\"", "sharded");
    if (!(n->alpha_us >= 0) || !(n->gbit > 0) || n->batch < 1 || n->group < 2 ||
        n->layer_us[0] < 0 || n->head_us[0] < 0)
        return -1;
    if (n->gbit > 1e5) n->gbit = 1e5;
    return 0;
}

static int parse_shard(const char *s, struct shard_arg *a)
{
    int n = 0;
    if (sscanf(s, "%d:%d:%d:%n", &a->tp, &a->pp, &a->rank, &n) != 3 || n == 0 || !s[n]) return -1;
    if (a->tp < 1 || a->pp < 1 || a->rank < 0 || a->rank >= a->tp * a->pp) return -1;
    a->path = s + n;
    return 0;
}

static int parse_layouts(const char *s, int32_t (*out)[2], int *n)
{
    *n = 0;
    while (*s) {
        int t, p, k = 0;
        if (*n == MAX_ITEMS || sscanf(s, "%dx%d%n", &t, &p, &k) != 2 || t < 1 || p < 1 ||
            t > 4096 || p > 4096)
            return -1;
        out[*n][0] = t;
        out[*n][1] = p;
        (*n)++;
        s += k;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return *n ? 0 : -1;
}

static int parse_nets(const char *s, struct net_arg *out, int *n)
{
    *n = 0;
    while (*s) {
        double g, us;
        int k = 0;
        if (*n == MAX_ITEMS || sscanf(s, "%lf:%lf%n", &g, &us, &k) != 2 || !(g > 0) || !(us >= 0) ||
            g > 1e6 || us > 1e6)
            return -1;
        out[*n] = (struct net_arg){g, us, 0, 0, {0, 0}, {0, 0}};
        (*n)++;
        s += k;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return *n ? 0 : -1;
}

static long long vm_hwm_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atoll(line + 6);
    if (f) fclose(f);
    return kb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- network timing (MPI) ------------------------------------------------------------- */

/* Least squares fit of y = a + b x; a is clamped at 0. */
static void fit_line(const double *x, const double *y, int n, double *a, double *b)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) sx += x[i], sy += y[i], sxx += x[i] * x[i], sxy += x[i] * y[i];
    *b = (n * sxy - sx * sy) / (n * sxx - sx * sx);
    *a = (sy - *b * sx) / n;
    if (*a < 0) *a = 0;
}

/* One timed operation through the communicator: kind (enum br_coll_kind, or -1 for a
 * point-to-point ping-pong between stage 0 and stage 1), bytes (all-gather and
 * reduce-scatter: every rank's blocks together; all-reduce: the buffer; p2p: the message). */
static int time_op(struct br_comm *c, int kind, uint64_t bytes, long long reps, double work_us,
                   uint8_t *send, uint8_t *recv, int *counts, int *displs, double *samples)
{
    int T = c->tp, rc = 0;
    int active = kind >= 0 ? c->pp_rank == 0 : c->tp_rank == 0 && c->pp_rank < 2;
    if (kind == BR_COLL_ALLGATHER || kind == BR_COLL_REDUCE_SCATTER) {
        /* uneven blocks as the plan's: the first ranks one unit more */
        uint64_t unit = kind == BR_COLL_ALLGATHER ? 1 : 4, units = bytes / unit;
        int off = 0;
        for (int r = 0; r < T; r++) {
            uint64_t u = units / (uint64_t)T + ((uint64_t)r < units % (uint64_t)T);
            counts[r] = (int)(kind == BR_COLL_ALLGATHER ? u : u);
            displs[r] = off;
            off += (int)(u * unit);
        }
    }
    volatile double sink = 0;
    for (long long k = -10; k < reps && active && !rc; k++) {
        for (double w0 = br_now(); (br_now() - w0) * 1e6 < work_us;)
            for (int z = 0; z < 1000; z++) sink += (double)z * 1e-9;
        double t0 = br_now();
        switch (kind) {
        case BR_COLL_ALLGATHER:
            rc = c->ops->allgather(c, send, recv, counts, displs);
            break;
        case BR_COLL_REDUCE_SCATTER:
            rc = c->ops->reduce_scatter_i32(c, (const int32_t *)send, (int32_t *)recv, counts);
            break;
        case BR_COLL_ALLREDUCE_I32:
            rc = c->ops->allreduce_i32(c, (int32_t *)send, (int)(bytes / 4));
            break;
        case BR_COLL_ALLREDUCE_MAX:
            rc = c->ops->allreduce_max_f32(c, (float *)send, (int)(bytes / 4));
            break;
        default:
            /* ping-pong: stage 0 -> stage 1 (send_next), back to rank 0 (send_root) */
            if (c->pp_rank == 0) {
                rc = c->ops->send_next(c, send, bytes);
                if (!rc) rc = c->ops->recv_from(c, c->tp, recv, bytes);
            } else {
                void *pend = NULL;
                rc = c->ops->recv_prev(c, recv, bytes);
                if (!rc) rc = c->ops->send_root(c, send, bytes, &pend);
                if (!rc) rc = c->ops->wait_root(c, &pend);
            }
            break;
        }
        if (k >= 0) samples[k] = (br_now() - t0) / (kind < 0 ? 2.0 : 1.0);
    }
    (void)sink;
    return rc;
}

static void mean_median(double *v, long long n, double *mean, double *med)
{
    double s = 0;
    for (long long k = 0; k < n; k++) s += v[k];
    *mean = s / (double)n;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *med = v[n / 2];
}

/* `bench scale net`: the collectives the engine issues, through the same communicator
 * (worker/comm_mpi.c), at the sizes the plan gives a model, for each residual layout; or
 * a sweep of sizes fitted to the alpha-beta model. */
static int scale_net(int argc, char **argv)
{
    const char *json = NULL, *slist = NULL, *preset = NULL, *mpath = NULL;
    long long reps = 20, group = 0, batch = 1;
    double work_us = 0, layer_work_us = -1;
    const struct br_opt opts[] = {
        BR_O_STR(0, "preset", &preset, "NAME", "the collectives of this synth preset's shapes"),
        BR_O_STR('m', "model", &mpath, "FILE", "the collectives of this model's shapes"),
        BR_O_INT(0, "batch", &batch, 1, 4096, "B", "tokens per step for the model's collectives"),
        BR_O_STR(0, "sizes", &slist, "LIST",
                 "a sweep of message sizes in bytes, multiples of 4 (2 to 64), fitted to a + M/bw"),
        BR_O_INT(0, "reps", &reps, 1, 100000, "N", "repetitions per operation"),
        BR_O_INT(0, "group", &group, 0, 4096, "N",
                 "TP groups of N ranks (collectives), W/N stages (point to point); 0: all"),
        BR_O_STR(0, "json", &json, "FILE", "also write the results as JSON"),
        BR_O_FLOAT(0, "work", &work_us, 0, 1e6, "US", "compute before every operation, us"),
        BR_O_FLOAT(0, "layer-work", &layer_work_us, 0, 1e6, "US",
                   "a layer's compute, spread over each layout's collectives, us"),
    };
    const struct br_cmd_spec spec = {
        "bench scale net", NULL,
        "Times every collective the engine issues for a model (--preset or -m; both residual\n"
        "layouts, at the plan's sizes) through the engine's communicator, in TP groups of an\n"
        "MPI job (mpirun -np W bitrack bench scale net); --sizes adds a sweep fitted to\n"
        "latency + size / bandwidth.",
        opts, sizeof opts / sizeof *opts};
    int prc = br_opts_parse_none(&spec, argc, argv);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (group == 1) return br_cli_usage_error("bench scale net", "--group: at least 2 (or 0)");
    struct br_err err = {{0}};
    struct br_model_config cfg;
    int have_model = 0;
    if (preset || mpath) {
        if (mpath) {
            struct br_gguf *g = NULL;
            int bad = br_gguf_open(mpath, &g, &err) || br_config_from_gguf(g, &cfg, &err);
            br_gguf_close(&g);
            if (bad) return br_cli_usage_error("bench scale net", "%s", err.msg);
        } else {
            struct br_synth_opts o;
            br_synth_opts_default(&o);
            o.preset = preset;
            if (br_synth_shape(&o, &cfg, &err))
                return br_cli_usage_error("bench scale net", "%s", err.msg);
        }
        have_model = 1;
    }
    int32_t *sizes = NULL, n_sizes = 0;
    if (!have_model && !slist) slist = "64,1024,4096,65536,262144";
    if (slist) {
        if (br_cli_int_list(slist, &sizes, &n_sizes) || n_sizes < 2 || n_sizes > MAX_ITEMS) {
            free(sizes);
            return br_cli_usage_error("bench scale net", "bad --sizes '%s' (2 to %d)", slist,
                                      MAX_ITEMS);
        }
        for (int32_t i = 0; i < n_sizes; i++)
            if (sizes[i] < 4 || sizes[i] > (1 << 26) || sizes[i] % 4) {
                int bad = sizes[i];
                free(sizes);
                return br_cli_usage_error("bench scale net",
                                          "size %d: a multiple of 4 in [4, 64 MiB]", bad);
            }
    }
    int world = 1;
    int up = 0;
    MPI_Initialized(&up);
    if (!up && MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "bitrack bench scale net: MPI_Init failed\n");
        free(sizes);
        return 1;
    }
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int g = group ? (int)group : world;
    if (world < 2 || world % g) {
        int rank = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        if (rank == 0)
            fprintf(stderr, "bitrack bench scale net: run under mpirun with 2+ ranks, a multiple "
                            "of --group\n");
        MPI_Finalize();
        free(sizes);
        return 2;
    }
    /* the engine's communicator: TP groups of g ranks, world / g stages */
    struct br_comm *comm = NULL;
    if (br_comm_mpi_create(&argc, &argv, g, world / g, &comm, &err)) {
        fprintf(stderr, "bitrack bench scale net: %s\n", err.msg);
        free(sizes);
        return 1;
    }
    /* the operations to time: the plan's, or the sweep */
    struct item {
        int kind, layout, head;
        uint64_t bytes;
        const char *what;
        double mean, med, work_us;
    } items[4 * MAX_ITEMS + 32];
    int n_items = 0;
    if (have_model && g > 1) {
        for (int l = 0; l < 2; l++) {
            struct br_plan *plan = NULL;
            if (br_plan_create_layout(&cfg, g, 1, l, &plan, &err)) continue;
            struct br_coll k[BR_PLAN_MAX_COLLS];
            int n = br_plan_layer_colls(plan, batch, k);
            /* --layer-work: a layer's compute spread over this layout's collectives */
            double w = layer_work_us >= 0 && n ? layer_work_us / n : work_us;
            for (int i = 0; i < n; i++)
                items[n_items++] = (struct item){k[i].kind, l, 0, k[i].bytes, k[i].what, 0, 0, w};
            n = br_plan_head_colls(plan, batch, k);
            for (int i = 0; i < n; i++)
                items[n_items++] = (struct item){k[i].kind, l, 1, k[i].bytes, k[i].what, 0, 0, w};
            br_plan_destroy(&plan);
        }
    }
    for (int32_t i = 0; i < n_sizes; i++) {
        static const int kinds[4] = {BR_COLL_ALLGATHER, BR_COLL_REDUCE_SCATTER,
                                     BR_COLL_ALLREDUCE_I32, BR_COLL_ALLREDUCE_MAX};
        for (int k = 0; k < 4; k++)
            items[n_items++] = (struct item){kinds[k], -1, 0, (uint64_t)sizes[i] * (uint64_t)g,
                                             "sweep",  0,  0, work_us};
        if (world / g >= 2)
            items[n_items++] = (struct item){-1, -1, 0, (uint64_t)sizes[i], "sweep", 0, 0, work_us};
    }
    uint64_t max = 16;
    for (int i = 0; i < n_items; i++) max = items[i].bytes > max ? items[i].bytes : max;
    uint8_t *send = calloc(max, 1), *recv = calloc(max, 1);
    int *counts = calloc((size_t)g, sizeof *counts), *displs = calloc((size_t)g, sizeof *displs);
    double *samples = calloc((size_t)reps, sizeof *samples);
    double *tm = calloc((size_t)n_items * 2, sizeof *tm);
    int rc = 0;
    if (!send || !recv || !counts || !displs || !samples || !tm) {
        fprintf(stderr, "bitrack bench scale net: out of memory\n");
        rc = 1;
        goto done;
    }
    /* a warm-up pass: the first operations of a job set up connections */
    for (int i = 0; i < n_items && !rc; i++)
        rc =
            time_op(comm, items[i].kind, items[i].bytes, 3, 0, send, recv, counts, displs, samples);
    for (int i = 0; i < n_items && !rc; i++) {
        MPI_Barrier(MPI_COMM_WORLD);
        memset(samples, 0, (size_t)reps * sizeof *samples);
        if ((rc = time_op(comm, items[i].kind, items[i].bytes, reps, items[i].work_us, send, recv,
                          counts, displs, samples))) {
            fprintf(stderr, "bitrack bench scale net: %s failed: %s\n",
                    items[i].kind < 0 ? "point to point" : br_coll_kind_name(items[i].kind),
                    br_strerror(rc));
            rc = 1;
            break;
        }
        mean_median(samples, reps, &tm[2 * i], &tm[2 * i + 1]);
    }
    /* the slowest rank's */
    MPI_Allreduce(MPI_IN_PLACE, tm, 2 * n_items, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (comm->world_rank == 0 && !rc) {
        for (int i = 0; i < n_items; i++) items[i].mean = tm[2 * i], items[i].med = tm[2 * i + 1];
        FILE *jf = json ? fopen(json, "w") : NULL;
        if (json && !jf) {
            fprintf(stderr, "bitrack bench scale net: cannot write %s\n", json);
            rc = 1;
        }
        printf("%d ranks, TP groups of %d, through the engine's communicator (MPI); mean of "
               "%lld (median in brackets) of the slowest rank, %.0f us of work before each\n",
               world, g, reps, work_us);
        /* fit of the sweep's collectives: t = ceil(log2 g) a + (g-1)/g M / bw */
        double a = 0, bw = 0;
        if (n_sizes >= 2) {
            double x[MAX_ITEMS], y[MAX_ITEMS], fa, fb;
            int n = 0;
            for (int i = 0; i < n_items && n < MAX_ITEMS; i++)
                if (items[i].layout == -1 && items[i].kind == BR_COLL_ALLGATHER) {
                    x[n] = (double)items[i].bytes * (g - 1) / g;
                    y[n++] = items[i].mean;
                }
            fit_line(x, y, n, &fa, &fb);
            a = fa / ceil(log2((double)g));
            bw = fb > 0 ? 1.0 / fb : 1e30;
            printf("fit of the all-gathers as ceil(log2 %d) a + (%d-1)/%d M/bw: a = %.1f us, "
                   "bw = %.2f Gbit/s\n",
                   g, g, g, a * 1e6, bw * 8 / 1e9);
        }
        if (jf)
            fprintf(jf,
                    "{\"ranks\": %d, \"group\": %d, \"reps\": %lld, \"batch\": %lld, "
                    "\"fit_alpha_us\": %.3f, \"fit_bw_gbit\": %.4f, \"ops\": [\n",
                    world, g, reps, batch, a * 1e6, bw * 8 / 1e9);
        printf("| residual | collective | kind | bytes | us mean (median) | model us |\n"
               "|---|---|---|---|---|---|\n");
        double sum[2] = {0, 0}, hsum[2] = {0, 0};
        for (int i = 0; i < n_items; i++) {
            const struct item *it = &items[i];
            double model = it->kind >= 0 && a > 0
                               ? br_coll_time(it->kind, g, (double)it->bytes, a, bw) * 1e6
                               : -1;
            /* medians: a real run's steps are many, an outlier of the timing loop is not
             * what its collectives cost */
            if (it->layout >= 0) (it->head ? hsum : sum)[it->layout] += it->med;
            printf("| %s | %s%s | %s | %llu | %.1f (%.1f) |",
                   it->layout < 0 ? "-" : br_layout_name(it->layout), it->what,
                   it->head ? " (head)" : "",
                   it->kind < 0 ? "point to point" : br_coll_kind_name(it->kind),
                   (unsigned long long)it->bytes, it->mean * 1e6, it->med * 1e6);
            if (model >= 0)
                printf(" %.1f |\n", model);
            else
                printf(" - |\n");
            if (jf)
                fprintf(
                    jf,
                    "  {\"residual\": \"%s\", \"what\": \"%s\", \"head\": %s, \"kind\": \"%s\", "
                    "\"bytes\": %llu, \"mean_us\": %.3f, \"median_us\": %.3f}%s\n",
                    it->layout < 0 ? "-" : br_layout_name(it->layout), it->what,
                    it->head ? "true" : "false",
                    it->kind < 0 ? "point to point" : br_coll_kind_name(it->kind),
                    (unsigned long long)it->bytes, it->mean * 1e6, it->med * 1e6,
                    i + 1 < n_items ? "," : "");
        }
        if (have_model && g > 1)
            printf("per layer at batch %lld, T = %d (sum of medians): replicated %.1f us, sharded "
                   "%.1f us\n",
                   batch, g, sum[0] * 1e6, sum[1] * 1e6);
        if (jf) {
            fprintf(jf,
                    "],\n \"layer_us\": {\"replicated\": %.3f, \"sharded\": %.3f},\n "
                    "\"head_us\": {\"replicated\": %.3f, \"sharded\": %.3f}}\n",
                    sum[0] * 1e6, sum[1] * 1e6, hsum[0] * 1e6, hsum[1] * 1e6);
            fclose(jf);
        }
    }
done:
    free(send), free(recv), free(counts), free(displs), free(samples), free(tm), free(sizes);
    br_comm_mpi_destroy(&comm);
    return rc;
}

/* ---- measurement and projection ------------------------------------------------------- */

struct measured {
    struct shard_arg s;
    int32_t layers;                /* layers the rank holds */
    uint64_t file_bytes, kv_bytes; /* the rank's file; KV cache of the largest batch */
    double load_s;
    long long hwm_kb;
    struct br_scale_cost cost[MAX_ITEMS];
};

/* --terms T: where one stream's network time goes on a T x 1 layout (batch 1, no
 * pipeline): each collective of a layer and of the head (sharding/plan.h) with the way
 * br_coll_direct takes on the link and its time (br_coll_time), per token over all layers. */
static void print_terms(const struct br_model_config *cfg, int32_t t, const int *residuals,
                        int n_res, const struct net_arg *nets, int n_nets)
{
    printf("\nwhere one stream's network time goes: %dx1, batch 1, per token over %d layers "
           "(the head's once; bcast and back as in the projection)\n"
           "| residual | network | collective | kind | bytes | way | us each | ms per token |\n"
           "|---|---|---|---|---|---|---|---|\n",
           t, cfg->n_layer);
    for (int ri = 0; ri < n_res; ri++) {
        struct br_plan *plan = NULL;
        struct br_err err = {{0}};
        if (br_plan_create_layout(cfg, t, 1, residuals[ri], &plan, &err)) {
            printf("| %s | - | %s |\n", br_layout_name(residuals[ri]), err.msg);
            continue;
        }
        for (int nn = 0; nn < n_nets; nn++) {
            if (nets[nn].group) continue; /* measured, not modelled */
            double a = nets[nn].alpha_us * 1e-6, bw = nets[nn].gbit * 1e9 / 8, sum = 0;
            struct br_coll k[BR_PLAN_MAX_COLLS];
            for (int head = 0; head < 2; head++) {
                int n = head ? br_plan_head_colls(plan, 1, k) : br_plan_layer_colls(plan, 1, k);
                double times = head ? 1 : cfg->n_layer;
                for (int i = 0; i < n; i++) {
                    double us = br_coll_time(k[i].kind, t, (double)k[i].bytes, a, bw) * 1e6;
                    int direct = br_coll_direct(k[i].kind, t, (double)k[i].bytes, a, bw);
                    sum += us * times;
                    printf("| %s | %g Gbit/s, %g us | %s%s | %s | %llu | %s | %.1f | %.2f |\n",
                           br_layout_name(residuals[ri]), nets[nn].gbit, nets[nn].alpha_us,
                           k[i].what, head ? " (head)" : "", br_coll_kind_name(k[i].kind),
                           (unsigned long long)k[i].bytes,
                           !direct                              ? "MPI"
                           : k[i].kind == BR_COLL_ALLREDUCE_I32 ? "direct, 2 rounds"
                                                                : "direct, 1 round",
                           us, us * times * 1e-3);
                }
            }
            struct br_scale_net net = {a, bw};
            double other = br_scale_bcast_s(&net, t, 4.0 * (4 + 5 * 64)) + (t - 1) * (a + 8 / bw);
            printf("| %s | %g Gbit/s, %g us | all collectives | | | | | %.2f (+ %.2f step "
                   "broadcast and top-1 back) |\n",
                   br_layout_name(residuals[ri]), nets[nn].gbit, nets[nn].alpha_us, sum * 1e-3,
                   other * 1e3);
        }
        br_plan_destroy(&plan);
    }
}

int br_cmd_bench_scale(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "net")) return scale_net(argc - 1, argv + 1);
    struct shard_arg shards[MAX_SHARDS];
    int n_shards = 0;
    struct shard_arg first = {1, 1, 0, NULL};
    const char *json = NULL, *blist = "1,4,16,64", *llist = NULL, *nlist = NULL;
    const char *netlist = "10:25,25:25,100:25";
    long long threads = 1, reps = 5, ctx = 0, cores = 0;
    double describe_gib = -1, here_gbs = 0;
    const char *reslist = "replicated,sharded", *netmeasured = NULL;
    struct br_scale_node node = {0, 0};
    enum br_scale_clock clock = BR_SCALE_WALL;
    long long tp = 1, pp = 1, rank = 0, terms = 0;
    const char *clock_s = "wall", *describe = NULL, *node_s = NULL;
    struct br_opt_list shard_list = {{0}, 0};
    const struct br_opt opts[] = {
        BR_O_STR('m', "model", &first.path, "PATH",
                 "a model file or a shard directory (bitrack synth --rank / shard)"),
        BR_O_INT(0, "tp", &tp, 1, 4096, "T", "the measured rank's layout: tensor-parallel width"),
        BR_O_INT(0, "pp", &pp, 1, 4096, "P", "the measured rank's layout: pipeline stages"),
        BR_O_INT(0, "rank", &rank, 0, 4095, "R", "the rank to measure"),
        BR_O_LIST(0, "shard", &shard_list, "T:P:R:PATH",
                  "one more rank to measure (another TP width)"),
        BR_O_INT('t', "threads", &threads, 1, 256, "N", "threads of the measured rank"),
        BR_O_STR(0, "batch", &blist, "LIST", "batch sizes (tokens per step) to measure"),
        BR_O_INT(0, "reps", &reps, 1, 1000, "N", "repetitions; the median counts"),
        BR_O_INT(0, "ctx", &ctx, 0, 1 << 20, "N",
                 "KV positions per sequence; 0: just the steps taken"),
        BR_O_STR(0, "layouts", &llist, "TxP,...", "layouts to project; none: the measured ones"),
        BR_O_STR(0, "nodes", &nlist, "N,...", "project every T x P = N whose T was measured"),
        BR_O_STR(0, "net", &netlist, "GBIT:US,...",
                 "networks: link Gbit/s and one-way message time in us"),
        BR_O_STR(0, "net-measured", &netmeasured, "FILE",
                 "the network instead: each layer's collectives as timed in this JSON file of "
                 "bench scale net"),
        BR_O_STR(0, "residual", &reslist, "LIST",
                 "residual layouts to project: replicated,sharded (sharding/plan.h)"),
        BR_O_STR(0, "node", &node_s, "CORES:GBS",
                 "project onto nodes of this many cores and GB/s (compute scaled, bench/scale.h)"),
        BR_O_FLOAT(0, "here-gbs", &here_gbs, 0, 1e5, "GBS",
                   "this machine's bandwidth for --node; 0: measured"),
        BR_O_INT(0, "cores", &cores, 0, 4096, "C",
                 "all ranks share C cores of one machine (validation runs); 0: off"),
        BR_O_STR(0, "json", &json, "FILE", "also write the results as JSON"),
        BR_O_STR(0, "describe", &describe, "GIB",
                 "also describe the plan with this much memory per rank (16G)"),
        BR_O_CHOICE(0, "clock", &clock_s, "wall|cpu", "how step time is measured"),
        BR_O_INT(0, "terms", &terms, 0, 4096, "T",
                 "also print each collective's time per token for one stream on T x 1"),
    };
    const struct br_cmd_spec spec = {
        "bench scale", NULL,
        "Measures one rank's step time (and more ranks with --shard) and projects the time\n"
        "per token for a rack of N nodes over the networks given, for each residual layout\n"
        "(docs/SCALING.md). The collectives' own cost: mpirun -np W bitrack bench scale net\n"
        "(bitrack help bench scale net).",
        opts, sizeof opts / sizeof *opts};
    int prc = br_opts_parse_none(&spec, argc, argv);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    first.tp = (int)tp, first.pp = (int)pp, first.rank = (int)rank;
    for (uint32_t k = 0; k < shard_list.n; k++) {
        if (n_shards == MAX_SHARDS - 1 || parse_shard(shard_list.v[k], &shards[n_shards]))
            return br_cli_usage_error("bench scale", "--shard: '%s' is not T:P:R:PATH",
                                      shard_list.v[k]);
        n_shards++;
    }
    clock = strcmp(clock_s, "cpu") ? BR_SCALE_WALL : BR_SCALE_CPU;
    if (describe) {
        char *end;
        describe_gib = strtod(describe, &end);
        if (end == describe || !(describe_gib >= 0) || (*end && strcmp(end, "G")))
            return br_cli_usage_error("bench scale", "--describe: '%s' is not GiB (e.g. 16G)",
                                      describe);
    }
    if (node_s) {
        int k = 0;
        if (sscanf(node_s, "%d:%lf%n", &node.cores, &node.gbs, &k) != 2 || node_s[k] ||
            node.cores < 1 || node.cores > 4096 || !(node.gbs > 0 && node.gbs < 1e5))
            return br_cli_usage_error("bench scale", "--node: '%s' is not CORES:GB/s", node_s);
    }
    if (first.path) {
        if (first.rank >= first.tp * first.pp)
            return br_cli_usage_error("bench scale", "--rank %d is not in a %dx%d layout",
                                      first.rank, first.tp, first.pp);
        memmove(shards + 1, shards, (size_t)n_shards * sizeof *shards);
        shards[0] = first;
        n_shards++;
    }
    if (n_shards == 0)
        return br_cli_usage_error("bench scale", "a rank to measure is required (-m PATH)");
    int32_t *batches = NULL, n_batches = 0;
    int bad_batch =
        br_cli_int_list(blist, &batches, &n_batches) || n_batches < 1 || n_batches > MAX_ITEMS;
    for (int32_t b = 0; b < n_batches && !bad_batch; b++)
        bad_batch = batches[b] < 1 || batches[b] > 4096;
    if (bad_batch) {
        free(batches);
        return br_cli_usage_error("bench scale", "bad --batch list '%s'", blist);
    }
    int32_t layouts[MAX_ITEMS][2];
    int n_layouts = 0;
    struct net_arg nets[MAX_ITEMS];
    int n_nets = 0;
    int32_t *nodes = NULL, n_nodes = 0;
    if ((llist && parse_layouts(llist, layouts, &n_layouts)) ||
        (nlist && (br_cli_int_list(nlist, &nodes, &n_nodes) || n_nodes < 1)) ||
        parse_nets(netlist, nets, &n_nets)) {
        free(batches), free(nodes);
        return br_cli_usage_error("bench scale", "bad --layouts, --nodes or --net");
    }
    if (netmeasured) {
        struct net_arg mn;
        if (read_net_json(netmeasured, &mn)) {
            free(batches), free(nodes);
            return br_cli_usage_error("bench scale",
                                      "--net-measured %s: not a `bench scale net -m/--preset "
                                      "--json` file",
                                      netmeasured);
        }
        nets[0] = mn; /* instead of the --net list */
        n_nets = 1;
    }

    int residuals[2], n_res = 0;
    {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", reslist);
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
            int l = br_layout_parse(tok);
            if (l < 0 || n_res == 2) {
                free(batches), free(nodes);
                return br_cli_usage_error("bench scale", "bad --residual '%s' (replicated,sharded)",
                                          reslist);
            }
            residuals[n_res++] = l;
        }
        if (!n_res) {
            free(batches), free(nodes);
            return br_cli_usage_error("bench scale", "bad --residual '%s'", reslist);
        }
    }
    struct measured *ms = calloc((size_t)n_shards, sizeof *ms);
    struct br_pool *pool = NULL;
    struct br_model_config cfg = {0};
    FILE *jf = NULL;
    int rc = 1;
    if (!ms || br_pool_create((int)threads, &pool)) {
        fprintf(stderr, "bitrack bench scale: out of memory\n");
        goto done;
    }
    printf("kernels %s, %lld thread(s) per rank; compute per decode step, median of %lld, %s\n",
           br_kernels_name(), threads, reps,
           clock == BR_SCALE_CPU ? "CPU time / threads" : "wall time");
    printf("| T | P | rank | layers | batch | layer ms | embed ms | head ms | step ms | "
           "allgathers/layer | bytes | reduce-scatters/layer | bytes |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_shards; i++) {
        struct br_err err = {{0}};
        struct br_model *m = NULL;
        struct br_plan *plan = NULL;
        struct measured *me = &ms[i];
        me->s = shards[i];
        double t0 = br_now();
        if (br_model_load_rank(shards[i].path, shards[i].tp, shards[i].pp, shards[i].rank, -1,
                               &plan, &m, &err)) {
            fprintf(stderr, "bitrack bench scale: %s: %s\n", shards[i].path, err.msg);
            br_plan_destroy(&plan);
            goto done;
        }
        me->load_s = br_now() - t0;
        struct stat st;
        char fpath[4096];
        snprintf(fpath, sizeof fpath, "%s/rank-%d.gguf", shards[i].path, shards[i].rank);
        if (stat(shards[i].path, &st) == 0 && S_ISDIR(st.st_mode) && stat(fpath, &st) != 0)
            st.st_size = 0;
        me->file_bytes = (uint64_t)st.st_size;
        {
            int32_t bmax = 1, steps = (int32_t)reps + 1;
            for (int32_t b = 0; b < n_batches; b++) bmax = batches[b] > bmax ? batches[b] : bmax;
            int64_t pos = ctx > steps ? ctx : steps + 1;
            pos = (pos + BR_KV_BLOCK - 1) / BR_KV_BLOCK * BR_KV_BLOCK;
            me->kv_bytes = (uint64_t)(m->part.layer1 - m->part.layer0) * (uint64_t)pos *
                           (uint64_t)bmax * (uint64_t)(m->part.kv1 - m->part.kv0) *
                           (uint64_t)(m->cfg.head_dim + m->cfg.head_dim_v) * 2;
        }
        br_plan_destroy(&plan);
        if (i == 0) cfg = m->cfg;
        if (m->cfg.n_embd != cfg.n_embd || m->cfg.n_layer != cfg.n_layer ||
            m->cfg.n_ff != cfg.n_ff || m->cfg.n_vocab != cfg.n_vocab) {
            fprintf(stderr, "bitrack bench scale: %s is a different model than %s\n",
                    shards[i].path, shards[0].path);
            br_model_destroy(&m);
            goto done;
        }
        me->layers = m->part.layer1 - m->part.layer0;
        for (int32_t b = 0; b < n_batches; b++) {
            int32_t one = batches[b];
            if (br_scale_measure(m, pool, &one, 1, (int)reps, (int32_t)ctx, clock, &me->cost[b],
                                 &err)) {
                fprintf(stderr, "bitrack bench scale: %s: %s\n", shards[i].path, err.msg);
                br_model_destroy(&m);
                goto done;
            }
            const struct br_scale_cost *k = &me->cost[b];
            char hbuf[32] = "-";
            if (k->head_s >= 0) snprintf(hbuf, sizeof hbuf, "%.3f", k->head_s * 1e3);
            printf("| %d | %d | %d | %d | %d | %.3f | %.3f | %s | %.2f | %.0f | %.0f | %.0f | "
                   "%.0f |\n",
                   me->s.tp, me->s.pp, me->s.rank, me->layers, k->batch, k->layer_s * 1e3,
                   k->embed_s * 1e3, hbuf,
                   (k->layer_s * me->layers + k->embed_s + (k->head_s > 0 ? k->head_s : 0)) * 1e3,
                   k->ag_n, k->ag_bytes, k->rs_n, k->rs_bytes);
        }
        br_model_destroy(&m);
        me->hwm_kb = vm_hwm_kb();
    }
    for (int i = 0; i < n_shards; i++)
        printf("rank %d of %dx%d: file %.3f GiB, KV cache %.3f GiB, loaded in %.1f s; peak RSS "
               "so far %.3f GiB (file + KV + 1 GiB = %.3f GiB)\n",
               ms[i].s.rank, ms[i].s.tp, ms[i].s.pp, (double)ms[i].file_bytes / (1 << 30),
               (double)ms[i].kv_bytes / (1 << 30), ms[i].load_s, (double)ms[i].hwm_kb / (1 << 20),
               (double)(ms[i].file_bytes + ms[i].kv_bytes) / (1 << 30) + 1.0);

    /* layouts: given, from --nodes, or the measured ones */
    if (!llist) {
        if (nodes) {
            for (int32_t k = 0; k < n_nodes; k++)
                for (int i = 0; i < n_shards; i++) {
                    int t = ms[i].s.tp, dup = 0;
                    for (int j = 0; j < i; j++) dup |= ms[j].s.tp == t;
                    if (dup || nodes[k] % t || n_layouts == MAX_ITEMS) continue;
                    layouts[n_layouts][0] = t;
                    layouts[n_layouts][1] = nodes[k] / t;
                    n_layouts++;
                }
        } else {
            for (int i = 0; i < n_shards && n_layouts < MAX_ITEMS; i++) {
                int dup = 0;
                for (int j = 0; j < n_layouts; j++)
                    dup |= layouts[j][0] == ms[i].s.tp && layouts[j][1] == ms[i].s.pp;
                if (dup) continue;
                layouts[n_layouts][0] = ms[i].s.tp;
                layouts[n_layouts][1] = ms[i].s.pp;
                n_layouts++;
            }
        }
    }
    /* --describe: the plan of each layout (as `bitrack plan` prints it) */
    for (int l = 0; l < n_layouts && describe_gib >= 0; l++) {
        struct br_plan *plan = NULL;
        struct br_err err = {{0}};
        if (br_plan_create(&cfg, layouts[l][0], layouts[l][1], &plan, &err)) {
            printf("plan %dx%d: %s\n", layouts[l][0], layouts[l][1], err.msg);
            continue;
        }
        printf("\n");
        int over = br_plan_describe(plan, (uint64_t)(describe_gib * (1 << 30)), stdout);
        if (over)
            printf("%d ranks do not fit %.0f GiB (weights + KV for 4k tokens)\n", over,
                   describe_gib);
        br_plan_destroy(&plan);
    }
    if (json && !(jf = fopen(json, "w"))) {
        fprintf(stderr, "bitrack bench scale: cannot write %s\n", json);
        goto done;
    }
    if (jf) {
        fprintf(jf,
                "{\"model\": {\"n_embd\": %d, \"n_layer\": %d, \"n_ff\": %d, \"n_vocab\": %d},\n"
                " \"threads\": %lld, \"cores\": %lld, \"kernels\": \"%s\", \"clock\": \"%s\",\n "
                "\"measured\": [\n",
                cfg.n_embd, cfg.n_layer, cfg.n_ff, cfg.n_vocab, threads, cores, br_kernels_name(),
                clock == BR_SCALE_CPU ? "cpu" : "wall");
        for (int i = 0; i < n_shards; i++)
            for (int32_t b = 0; b < n_batches; b++) {
                const struct br_scale_cost *k = &ms[i].cost[b];
                fprintf(
                    jf,
                    "  {\"tp\": %d, \"pp\": %d, \"rank\": %d, \"layers\": %d, \"batch\": %d, "
                    "\"layer_s\": %.9f, \"embed_s\": %.9f, \"head_s\": %.9f, "
                    "\"allgathers_per_layer\": %.3f, \"allgather_bytes_per_layer\": %.1f, "
                    "\"reduce_scatters_per_layer\": %.3f, \"reduce_scatter_bytes_per_layer\": "
                    "%.1f, \"allreduces_per_layer\": %.3f, \"allreduce_bytes_per_layer\": %.1f, "
                    "\"max_allreduces_per_layer\": %.3f, \"max_allreduce_bytes_per_layer\": "
                    "%.1f, \"head_allgathers\": %.1f, \"head_allgather_bytes\": %.1f, "
                    "\"file_bytes\": %llu, \"kv_bytes\": %llu, \"peak_rss_kb\": %lld}%s\n",
                    ms[i].s.tp, ms[i].s.pp, ms[i].s.rank, ms[i].layers, k->batch, k->layer_s,
                    k->embed_s, k->head_s, k->ag_n, k->ag_bytes, k->rs_n, k->rs_bytes, k->ar_n,
                    k->ar_bytes, k->arm_n, k->arm_bytes, k->head_ag_n, k->head_ag_bytes,
                    (unsigned long long)ms[i].file_bytes, (unsigned long long)ms[i].kv_bytes,
                    ms[i].hwm_kb, i + 1 == n_shards && b + 1 == n_batches ? "" : ",");
            }
        fprintf(jf, " ],\n");
    }
    double factor = 1.0;
    if (node.cores > 0) {
        if (here_gbs <= 0) here_gbs = br_scale_stream_gbs(pool, clock);
        factor = br_scale_node_factor(&node, here_gbs, (int)threads);
        double per_thread = here_gbs / (double)threads;
        int want = per_thread > 0 ? (int)ceil(node.gbs / per_thread) : node.cores;
        if (want > node.cores) want = node.cores;
        if (want < 1) want = 1;
        printf("\nnode: %d cores, %.0f GB/s; here %lld thread(s) read %.1f GB/s. Model: decode "
               "reads every weight once per step (time = bytes / bandwidth), prefill is "
               "compute-bound (time ~ 1 / cores), so compute here x max(%.1f / %.0f, %lld / %d) "
               "= x %.4f on the node\n",
               node.cores, node.gbs, threads, here_gbs, here_gbs, node.gbs, threads, node.cores,
               factor);
        printf("recommendation: 1 rank per node (another rank per node widens TP and adds "
               "collectives, not bandwidth), %d threads per rank (%.1f GB/s per thread here: "
               "%d reach the node's %.0f GB/s; the rest of the %d cores serve prefill)\n",
               node.cores, per_thread, want, node.gbs, node.cores);
    }
    if (jf)
        fprintf(jf,
                " \"node_cores\": %d, \"node_gbs\": %.3f, \"here_gbs\": %.3f, "
                "\"compute_factor\": %.6f,\n \"projection\": [\n",
                node.cores, node.gbs, here_gbs, factor);
    printf("\nprojection (bench/scale.h): latency(B) = sum_s [k (L_s layer + embed + head) + "
           "bcast + L_s sum_i net(collective i)]\n"
           "  + (P-1) (2a + (desc + 4 B d_s)/bw) + R (a + 8B/bw); one stream: 1/latency(1); "
           "aggregate: B / slowest stage (P steps in flight); collectives of each residual "
           "layout from the plan (sharding/plan.h), compute measured\n");
    if (cores > 0)
        printf("all ranks share %lld cores: k = max(1, busy ranks x %lld threads / %lld); busy: "
               "the T ranks of one stage one step at a time, all T P pipelined (a waiting rank "
               "yields)\n",
               cores, threads, cores);
    printf("| nodes | T x P | residual | network | batch | step latency ms | compute ms | comm "
           "ms | tokens/s (one step at a time) | tokens/s (pipelined) |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n");
    int first_row = 1;
    for (int l = 0; l < n_layouts; l++) {
        int32_t t = layouts[l][0], p = layouts[l][1];
        /* the ranks of this TP width measured: layers from all (weighted by layers held),
         * the embedding from a first-stage rank, the head from a last-stage rank */
        struct br_scale_cost merged[MAX_ITEMS];
        int found = 0, head_known = 0;
        for (int32_t b = 0; b < n_batches; b++) {
            double lsum = 0, lcount = 0;
            merged[b] = (struct br_scale_cost){.tp = t, .batch = batches[b]};
            for (int i = 0; i < n_shards; i++) {
                const struct br_scale_cost *k = &ms[i].cost[b];
                if (ms[i].s.tp != t) continue;
                found = 1;
                lsum += k->layer_s * ms[i].layers, lcount += ms[i].layers;
                if (k->embed_s > merged[b].embed_s) merged[b].embed_s = k->embed_s;
                if (k->head_s >= 0 && k->head_s >= merged[b].head_s) {
                    merged[b].head_s = k->head_s;
                    head_known = 1;
                }
            }
            merged[b].layer_s = lcount > 0 ? lsum / lcount : 0;
        }
        if (!found) {
            printf("| %d | %dx%d | - | - | - | no rank of width 1/%d measured |\n", t * p, t, p, t);
            continue;
        }
        for (int ri = 0; ri < n_res; ri++) {
            struct br_plan *plan = NULL;
            struct br_err err = {{0}};
            if (br_plan_create_layout(&cfg, t, p, residuals[ri], &plan, &err)) {
                printf("| %d | %dx%d | %s | - | - | %s |\n", t * p, t, p,
                       br_layout_name(residuals[ri]), err.msg);
                continue;
            }
            for (int nn = 0; nn < n_nets; nn++) {
                struct br_scale_env env = {
                    .net = {nets[nn].alpha_us * 1e-6, nets[nn].gbit * 1e9 / 8},
                    .max_batch = 64,
                    .cores = (int32_t)cores,
                    .threads = (int32_t)threads,
                    .compute_factor = factor,
                    .layout = residuals[ri]};
                const struct net_arg *na = &nets[nn];
                if (na->group && (na->group != t || na->layer_us[residuals[ri]] <= 0)) {
                    printf("| %d | %dx%d | %s | measured | - | the collectives were measured "
                           "for T = %d |\n",
                           t * p, t, p, br_layout_name(residuals[ri]), na->group);
                    continue;
                }
                for (int32_t b = 0; b < n_batches; b++) {
                    struct br_scale_cost k = merged[b];
                    br_scale_cost_from_plan(&k, plan);
                    env.layer_net_s = env.head_net_s = -1;
                    if (na->group && k.batch == na->batch) {
                        env.layer_net_s = na->layer_us[residuals[ri]] * 1e-6;
                        env.head_net_s = na->head_us[residuals[ri]] * 1e-6;
                    } else if (na->group) {
                        continue; /* measured at another batch */
                    }
                    struct br_scale_proj pr;
                    if (br_scale_project(&cfg, t, p, &k, &env, &pr, &err)) {
                        printf("| %d | %dx%d | - | - | %s |\n", t * p, t, p, err.msg);
                        break;
                    }
                    printf("| %d | %dx%d | %s | %g Gbit/s, %g us | %d | %.2f | %.2f | %.2f | %.2f "
                           "| %.2f |%s\n",
                           t * p, t, p, br_layout_name(residuals[ri]), nets[nn].gbit,
                           nets[nn].alpha_us, k.batch, pr.latency_s * 1e3, pr.compute_s * 1e3,
                           pr.comm_s * 1e3, pr.tok_s, pr.tok_s_pipelined,
                           head_known ? "" : " (head not measured)");
                    if (jf)
                        fprintf(jf,
                                "%s  {\"tp\": %d, \"pp\": %d, \"residual\": \"%s\", \"gbit\": "
                                "%g, \"alpha_us\": %g, \"batch\": %d, \"latency_s\": %.9f, "
                                "\"compute_s\": %.9f, \"comm_s\": %.9f, \"stage_max_s\": %.9f, "
                                "\"tokens_per_s\": %.4f, \"tokens_per_s_pipelined\": %.4f, "
                                "\"head_measured\": %s, \"ag_n\": %g, \"ag_bytes\": %g, "
                                "\"agd_n\": %g, \"agd_bytes\": %g, "
                                "\"rs_n\": %g, \"rs_bytes\": %g, \"ar_n\": %g, \"ar_bytes\": "
                                "%g, \"arm_n\": %g, \"arm_bytes\": %g, \"head_ag_n\": %g, "
                                "\"head_ag_bytes\": %g}",
                                first_row ? "" : ",\n", t, p, br_layout_name(residuals[ri]),
                                nets[nn].gbit, nets[nn].alpha_us, k.batch, pr.latency_s,
                                pr.compute_s, pr.comm_s, pr.stage_max_s, pr.tok_s,
                                pr.tok_s_pipelined, head_known ? "true" : "false", k.ag_n,
                                k.ag_bytes, k.agd_n, k.agd_bytes, k.rs_n, k.rs_bytes, k.ar_n,
                                k.ar_bytes, k.arm_n, k.arm_bytes, k.head_ag_n, k.head_ag_bytes);
                    first_row = 0;
                }
            }
            br_plan_destroy(&plan);
        }
    }
    if (jf) fprintf(jf, "\n ]}\n");
    if (terms > 1) print_terms(&cfg, (int32_t)terms, residuals, n_res, nets, n_nets);
    rc = 0;
done:
    if (jf && fclose(jf) != 0 && rc == 0) {
        fprintf(stderr, "bitrack bench scale: writing %s failed\n", json);
        rc = 1;
    }
    br_pool_destroy(&pool);
    free(ms);
    free(batches);
    free(nodes);
    return rc;
}
