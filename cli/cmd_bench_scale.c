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
#include "sharding/plan.h"
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
};

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
        out[*n] = (struct net_arg){g, us};
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

static int scale_net(int argc, char **argv)
{
    const char *json = NULL, *slist = "64,1024,4096,65536,262144";
    long long reps = 20, group = 0;
    double work_us = 0;
    const struct br_opt opts[] = {
        BR_O_STR(0, "sizes", &slist, "LIST", "message sizes in bytes, multiples of 4 (2 to 16)"),
        BR_O_INT(0, "reps", &reps, 1, 100000, "N", "repetitions per size"),
        BR_O_INT(0, "group", &group, 0, 4096, "N",
                 "collectives among the first N ranks (a TP group); 0: all"),
        BR_O_STR(0, "json", &json, "FILE", "also write the results as JSON"),
        BR_O_FLOAT(0, "work", &work_us, 0, 1e6, "US", "compute between messages, microseconds"),
    };
    const struct br_cmd_spec spec = {
        "bench scale net", NULL,
        "Times the collectives and point-to-point messages between the ranks of an MPI job\n"
        "(mpirun -np W bitrack bench scale net) and fits latency + size / bandwidth.",
        opts, sizeof opts / sizeof *opts};
    int operand, prc = br_opts_parse(&spec, argc, argv, &operand);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (operand < argc)
        return br_cli_usage_error("bench scale net", "unexpected argument '%s'", argv[operand]);
    if (group == 1) return br_cli_usage_error("bench scale net", "--group: at least 2 (or 0)");
    int32_t *sizes = NULL, n_sizes = 0;
    if (br_cli_int_list(slist, &sizes, &n_sizes) || n_sizes < 2 || n_sizes > MAX_ITEMS) {
        free(sizes);
        return br_cli_usage_error("bench scale net", "bad --sizes '%s' (2 to %d)", slist,
                                  MAX_ITEMS);
    }
    for (int32_t i = 0; i < n_sizes; i++)
        if (sizes[i] < 4 || sizes[i] > (1 << 26) || sizes[i] % 4) {
            int bad = sizes[i];
            free(sizes);
            return br_cli_usage_error("bench scale net", "size %d: a multiple of 4 in [4, 64 MiB]",
                                      bad);
        }
    int up = 0, rank = 0, world = 1;
    MPI_Initialized(&up);
    if (!up && MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "bitrack bench scale net: MPI_Init failed\n");
        free(sizes);
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int g = group ? (int)group : world;
    if (world < 2 || world % g) {
        if (rank == 0)
            fprintf(stderr, "bitrack bench scale net: run under mpirun with 2+ ranks, a multiple "
                            "of --group\n");
        MPI_Finalize();
        free(sizes);
        return 2;
    }
    /* collectives in the group of the first g ranks (a TP group); the other ranks wait, as
     * the other stages of a pipeline do; point to point from rank 0 to rank g (the next
     * stage), or to the last rank when there is one group */
    MPI_Comm grp;
    MPI_Comm_split(MPI_COMM_WORLD, rank / g, rank, &grp);
    int peer = world > g ? g : world - 1;
    int32_t max = 0;
    for (int32_t i = 0; i < n_sizes; i++) max = sizes[i] > max ? sizes[i] : max;
    uint8_t *send = calloc((size_t)max * (size_t)g, 1);
    uint8_t *recv = calloc((size_t)max * (size_t)g, 1);
    int *counts = calloc((size_t)g, sizeof *counts), *displs = calloc((size_t)g, sizeof *displs);
    double(*t)[3] = calloc((size_t)n_sizes, sizeof *t);
    double(*tmed)[3] = calloc((size_t)n_sizes, sizeof *tmed);
    double *samples = calloc((size_t)reps, sizeof *samples);
    volatile double sink = 0;
    int rc = 0;
    if (!send || !recv || !counts || !displs || !t || !tmed || !samples) {
        fprintf(stderr, "bitrack bench scale net: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int32_t i = 0; i < n_sizes; i++) {
        int m = sizes[i];
        /* each operation timed alone; mean and median kept: on a shared machine some calls
         * wait for a descheduled rank, which the mean counts and the median does not */
        for (int op = 0; op < 3; op++) {
            int active = op < 2 ? rank < g : rank == 0 || rank == peer;
            for (int r = 0; r < g; r++) counts[r] = op == 0 ? m : m / 4, displs[r] = r * m;
            MPI_Barrier(MPI_COMM_WORLD);
            for (long long k = -20; k < reps && active; k++) {
                /* --work: compute between operations, as the engine does between its
                 * collectives (and no barrier: the operations are the only sync points);
                 * on a shared machine a peer may then be descheduled */
                if (op < 2 && work_us <= 0) MPI_Barrier(grp);
                for (double w0 = MPI_Wtime(); (MPI_Wtime() - w0) * 1e6 < work_us;)
                    for (int z = 0; z < 1000; z++) sink += (double)z * 1e-9;
                double t0 = MPI_Wtime();
                if (op == 0) {
                    /* all-gather of m bytes from every rank (the engine's MPI_Allgatherv) */
                    MPI_Allgatherv(send, m, MPI_BYTE, recv, counts, displs, MPI_BYTE, grp);
                } else if (op == 1) {
                    /* int32 reduce-scatter, m bytes per rank's block */
                    MPI_Reduce_scatter(send, recv, counts, MPI_INT32_T, MPI_SUM, grp);
                } else if (rank == 0) {
                    /* one way: half a ping-pong */
                    MPI_Send(send, m, MPI_BYTE, peer, 7, MPI_COMM_WORLD);
                    MPI_Recv(recv, m, MPI_BYTE, peer, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                } else {
                    MPI_Recv(recv, m, MPI_BYTE, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                    MPI_Send(send, m, MPI_BYTE, 0, 7, MPI_COMM_WORLD);
                }
                if (k >= 0) samples[k] = (MPI_Wtime() - t0) / (op == 2 ? 2.0 : 1.0);
            }
            if (!active || (op == 2 && rank != 0)) continue;
            double sum = 0;
            for (long long k = 0; k < reps; k++) sum += samples[k];
            t[i][op] = sum / (double)reps;
            qsort(samples, (size_t)reps, sizeof *samples, cmp_double);
            tmed[i][op] = samples[reps / 2];
        }
    }
    /* the slowest rank's */
    MPI_Allreduce(MPI_IN_PLACE, t, 3 * n_sizes, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, tmed, 3 * n_sizes, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0) {
        double x[MAX_ITEMS], y[MAX_ITEMS], pa, pb, ca, cb;
        for (int32_t i = 0; i < n_sizes; i++) x[i] = sizes[i], y[i] = t[i][2];
        fit_line(x, y, n_sizes, &pa, &pb);
        /* collectives: t = ceil(log2 g) a + (g-1) m/bw, both kinds together */
        double steps = ceil(log2((double)g));
        for (int32_t i = 0; i < n_sizes; i++) {
            x[i] = sizes[i];
            y[i] = 0.5 * (t[i][0] + t[i][1]);
        }
        fit_line(x, y, n_sizes, &ca, &cb);
        ca /= steps;
        cb /= g - 1;
        struct br_scale_net pn = {pa, pb > 0 ? 1.0 / pb : 1e30};
        struct br_scale_net cn = {ca, cb > 0 ? 1.0 / cb : 1e30};
        printf("MPI, %d ranks, collectives in a group of %d, point to point rank 0 -> %d "
               "(mean of %lld; medians in brackets), %.0f us of work before each\n",
               world, g, peer, reps, work_us);
        printf("fit of point to point: a = %.1f us, bw = %.2f Gbit/s\n", pa * 1e6,
               pn.bw_bytes_s * 8 / 1e9);
        printf("fit of collectives as ceil(log2 %d) a + (%d-1) m/bw: a = %.1f us, bw = %.2f "
               "Gbit/s\n",
               g, g, ca * 1e6, cn.bw_bytes_s * 8 / 1e9);
        printf("| bytes/rank | allgather us | reduce-scatter us | model us | p2p us | model us "
               "|\n|---|---|---|---|---|---|\n");
        FILE *jf = json ? fopen(json, "w") : NULL;
        if (json && !jf) {
            fprintf(stderr, "bitrack bench scale net: cannot write %s\n", json);
            rc = 1;
        }
        if (jf)
            fprintf(jf,
                    "{\"ranks\": %d, \"group\": %d, \"reps\": %lld, \"p2p_alpha_us\": %.3f, "
                    "\"p2p_bw_gbit\": %.4f, \"coll_alpha_us\": %.3f, \"coll_bw_gbit\": %.4f, "
                    "\"sizes\": [\n",
                    world, g, reps, pa * 1e6, pn.bw_bytes_s * 8 / 1e9, ca * 1e6,
                    cn.bw_bytes_s * 8 / 1e9);
        for (int32_t i = 0; i < n_sizes; i++) {
            double mc = br_scale_allgather_s(&cn, g, (double)sizes[i] * g);
            double mp = pa + sizes[i] / pn.bw_bytes_s;
            printf("| %d | %.1f (%.1f) | %.1f (%.1f) | %.1f | %.1f (%.1f) | %.1f |\n", sizes[i],
                   t[i][0] * 1e6, tmed[i][0] * 1e6, t[i][1] * 1e6, tmed[i][1] * 1e6, mc * 1e6,
                   t[i][2] * 1e6, tmed[i][2] * 1e6, mp * 1e6);
            if (jf)
                fprintf(jf,
                        "  {\"bytes_per_rank\": %d, \"allgather_us\": %.3f, \"reduce_scatter_us\": "
                        "%.3f, \"p2p_us\": %.3f, \"allgather_median_us\": %.3f, "
                        "\"reduce_scatter_median_us\": %.3f, \"p2p_median_us\": %.3f, "
                        "\"model_collective_us\": %.3f, \"model_p2p_us\": %.3f}%s\n",
                        sizes[i], t[i][0] * 1e6, t[i][1] * 1e6, t[i][2] * 1e6, tmed[i][0] * 1e6,
                        tmed[i][1] * 1e6, tmed[i][2] * 1e6, mc * 1e6, mp * 1e6,
                        i + 1 < n_sizes ? "," : "");
        }
        printf("model: collective over T ranks of m bytes each = ceil(log2 T) a + (T-1) m/bw; "
               "p2p = a + m/bw\n");
        if (jf) {
            fprintf(jf, "]}\n");
            fclose(jf);
        }
    }
done:
    MPI_Comm_free(&grp);
    free(send), free(recv), free(counts), free(displs), free(t), free(tmed), free(sizes);
    free(samples);
    MPI_Finalize();
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

int br_cmd_bench_scale(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "net")) return scale_net(argc - 1, argv + 1);
    struct shard_arg shards[MAX_SHARDS];
    int n_shards = 0;
    struct shard_arg first = {1, 1, 0, NULL};
    const char *json = NULL, *blist = "1,4,16,64", *llist = NULL, *nlist = NULL;
    const char *netlist = "10:25,25:25,100:25";
    long long threads = 1, reps = 5, ctx = 0, cores = 0;
    double describe_gib = -1;
    enum br_scale_clock clock = BR_SCALE_WALL;
    long long tp = 1, pp = 1, rank = 0;
    const char *clock_s = "wall", *describe = NULL;
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
        BR_O_INT(0, "reps", &reps, 1, 1000, "N", "repetitions; the best counts"),
        BR_O_INT(0, "ctx", &ctx, 0, 1 << 20, "N",
                 "KV positions per sequence; 0: just the steps taken"),
        BR_O_STR(0, "layouts", &llist, "TxP,...", "layouts to project; none: the measured ones"),
        BR_O_STR(0, "nodes", &nlist, "N,...", "project every T x P = N whose T was measured"),
        BR_O_STR(0, "net", &netlist, "GBIT:US,...",
                 "networks: link Gbit/s and one-way message time in us"),
        BR_O_INT(0, "cores", &cores, 0, 4096, "C",
                 "all ranks share C cores of one machine (validation runs); 0: off"),
        BR_O_STR(0, "json", &json, "FILE", "also write the results as JSON"),
        BR_O_STR(0, "describe", &describe, "GIB",
                 "also describe the plan with this much memory per rank (16G)"),
        BR_O_CHOICE(0, "clock", &clock_s, "wall|cpu", "how step time is measured"),
    };
    const struct br_cmd_spec spec = {
        "bench scale", NULL,
        "Measures one rank's step time (and more ranks with --shard) and projects the time\n"
        "per token for a rack of N nodes over the networks given (docs/SCALING.md). The\n"
        "collectives' own cost: mpirun -np W bitrack bench scale net (bitrack help bench scale\n"
        "net).",
        opts, sizeof opts / sizeof *opts};
    int operand, prc = br_opts_parse(&spec, argc, argv, &operand);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (operand < argc)
        return br_cli_usage_error("bench scale", "unexpected argument '%s'", argv[operand]);
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
        if (br_model_load_rank(shards[i].path, shards[i].tp, shards[i].pp, shards[i].rank, &plan,
                               &m, &err)) {
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
                fprintf(jf,
                        "  {\"tp\": %d, \"pp\": %d, \"rank\": %d, \"layers\": %d, \"batch\": %d, "
                        "\"layer_s\": %.9f, \"embed_s\": %.9f, \"head_s\": %.9f, "
                        "\"allgathers_per_layer\": %.3f, \"allgather_bytes_per_layer\": %.1f, "
                        "\"reduce_scatters_per_layer\": %.3f, \"reduce_scatter_bytes_per_layer\": "
                        "%.1f, \"head_allgathers\": %.1f, \"head_allgather_bytes\": %.1f, "
                        "\"file_bytes\": %llu, \"kv_bytes\": %llu, \"peak_rss_kb\": %lld}%s\n",
                        ms[i].s.tp, ms[i].s.pp, ms[i].s.rank, ms[i].layers, k->batch, k->layer_s,
                        k->embed_s, k->head_s, k->ag_n, k->ag_bytes, k->rs_n, k->rs_bytes,
                        k->head_ag_n, k->head_ag_bytes, (unsigned long long)ms[i].file_bytes,
                        (unsigned long long)ms[i].kv_bytes, ms[i].hwm_kb,
                        i + 1 == n_shards && b + 1 == n_batches ? "" : ",");
            }
        fprintf(jf, " ],\n \"projection\": [\n");
    }
    printf("\nprojection (bench/scale.h): latency(B) = sum_s [k (L_s layer + embed + head) + "
           "bcast + L_s sum_i (ceil(log2 T) a + (T-1) M_i/(T bw))]\n"
           "  + (P-1) (2a + (desc + 4 B d/T)/bw) + R (a + 8B/bw); one stream: 1/latency(1); "
           "aggregate: B / slowest stage (P steps in flight)\n");
    if (cores > 0)
        printf("all ranks share %lld cores: k = max(1, busy ranks x %lld threads / %lld); busy: "
               "the T ranks of one stage one step at a time, all T P pipelined (a waiting rank "
               "yields)\n",
               cores, threads, cores);
    printf("| nodes | T x P | network | batch | step latency ms | compute ms | comm ms | "
           "tokens/s (one step at a time) | tokens/s (pipelined) |\n"
           "|---|---|---|---|---|---|---|---|---|\n");
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
                merged[b].ag_n = k->ag_n, merged[b].ag_bytes = k->ag_bytes;
                merged[b].rs_n = k->rs_n, merged[b].rs_bytes = k->rs_bytes;
                if (k->embed_s > merged[b].embed_s) merged[b].embed_s = k->embed_s;
                if (k->head_s >= 0 && k->head_s >= merged[b].head_s) {
                    merged[b].head_s = k->head_s;
                    merged[b].head_ag_n = k->head_ag_n, merged[b].head_ag_bytes = k->head_ag_bytes;
                    head_known = 1;
                }
            }
            merged[b].layer_s = lcount > 0 ? lsum / lcount : 0;
        }
        if (!found) {
            printf("| %d | %dx%d | - | - | no rank of width 1/%d measured |\n", t * p, t, p, t);
            continue;
        }
        for (int nn = 0; nn < n_nets; nn++) {
            struct br_scale_env env = {.net = {nets[nn].alpha_us * 1e-6, nets[nn].gbit * 1e9 / 8},
                                       .max_batch = 64,
                                       .cores = (int32_t)cores,
                                       .threads = (int32_t)threads};
            for (int32_t b = 0; b < n_batches; b++) {
                struct br_scale_cost k = merged[b];
                struct br_scale_proj pr;
                struct br_err err = {{0}};
                if (br_scale_project(&cfg, t, p, &k, &env, &pr, &err)) {
                    printf("| %d | %dx%d | - | - | %s |\n", t * p, t, p, err.msg);
                    break;
                }
                printf(
                    "| %d | %dx%d | %g Gbit/s, %g us | %d | %.2f | %.2f | %.2f | %.2f | %.2f |%s\n",
                    t * p, t, p, nets[nn].gbit, nets[nn].alpha_us, k.batch, pr.latency_s * 1e3,
                    pr.compute_s * 1e3, pr.comm_s * 1e3, pr.tok_s, pr.tok_s_pipelined,
                    head_known ? "" : " (head not measured)");
                if (jf)
                    fprintf(
                        jf,
                        "%s  {\"tp\": %d, \"pp\": %d, \"gbit\": %g, \"alpha_us\": %g, \"batch\": "
                        "%d, \"latency_s\": %.9f, \"compute_s\": %.9f, \"comm_s\": %.9f, "
                        "\"stage_max_s\": %.9f, \"tokens_per_s\": %.4f, "
                        "\"tokens_per_s_pipelined\": %.4f, \"head_measured\": %s}",
                        first_row ? "" : ",\n", t, p, nets[nn].gbit, nets[nn].alpha_us, k.batch,
                        pr.latency_s, pr.compute_s, pr.comm_s, pr.stage_max_s, pr.tok_s,
                        pr.tok_s_pipelined, head_known ? "true" : "false");
                first_row = 0;
            }
        }
    }
    if (jf) fprintf(jf, "\n ]}\n");
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
