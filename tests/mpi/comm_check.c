/*
 * The MPI communicator's collectives against a reference computed here (run under mpirun,
 * one TP group of all the ranks; tests/e2e/mpi_comm.sh):
 *  - int32 sum-all-reduce of n values for n = 1, T-1, T, T+1, uneven sizes, the largest
 *    buffer whose blocks fit the direct path and one value more;
 *  - int32 reduce-scatter and all-gather with uneven blocks, some empty;
 *  - float max-all-reduce;
 * each several times in a row (the direct rounds of successive collectives share a tag),
 * with values whose sums wrap around int32. Every rank checks every value it holds.
 *
 *   mpirun -np T mpi_comm_check [--direct all|none]
 * --direct all: every collective that fits the direct path must have taken it
 * (BITRACK_COLL_DIRECT=1); none: none may have (BITRACK_COLL_DIRECT=0). Without it the
 * link model chooses, and only the results are checked. Exit status 0 when every check
 * passed on every rank, 1 otherwise.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/plan.h"
#include "worker/comm_mpi.h"

/* Rank r's value i of round k: spread over all 32 bits, so that sums wrap. */
static uint32_t val(int k, int r, int i)
{
    uint32_t x = (uint32_t)k * 0x9e3779b9u ^ (uint32_t)r * 0x85ebca6bu ^ (uint32_t)i * 0xc2b2ae35u;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    return x;
}

static uint32_t sum_all(int k, int T, int i)
{
    uint32_t s = 0;
    for (int r = 0; r < T; r++) s += val(k, r, i);
    return s;
}

struct check {
    struct br_comm *c;
    int fails, fitting, expect; /* expect: 1 all direct, 0 none, -1 either */
};

static void fail(struct check *ck, const char *what, int n, int i, long long got, long long want)
{
    if (ck->fails++ < 10)
        fprintf(stderr, "rank %d: %s n=%d: value %d is %lld, want %lld\n", ck->c->tp_rank, what, n,
                i, got, want);
}

/* The direct-call counter moved as --direct says for one collective that fits (or not). */
static void path(struct check *ck, const char *what, int n, uint64_t before, int fits)
{
    uint64_t d = br_comm_mpi_direct_calls(ck->c) - before;
    ck->fitting += fits;
    if (ck->expect >= 0 && (int)d != (ck->expect && fits)) {
        if (ck->fails++ < 10)
            fprintf(stderr, "rank %d: %s n=%d went %s (fits the direct path: %d)\n", ck->c->tp_rank,
                    what, n, d ? "direct" : "to MPI", fits);
    }
}

static int allreduce(struct check *ck, int k, int n)
{
    struct br_comm *c = ck->c;
    int T = c->tp;
    int32_t *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof *buf);
    if (!buf) return -1;
    for (int i = 0; i < n; i++) buf[i] = (int32_t)val(k, c->tp_rank, i);
    uint64_t before = br_comm_mpi_direct_calls(c);
    if (c->ops->allreduce_i32(c, buf, n)) {
        free(buf);
        return -1;
    }
    path(ck, "all-reduce i32", n, before, br_coll_direct_fits(BR_COLL_ALLREDUCE_I32, T, 4.0 * n));
    for (int i = 0; i < n; i++) {
        int32_t want = (int32_t)sum_all(k, T, i);
        if (buf[i] != want) fail(ck, "all-reduce i32", n, i, buf[i], want);
    }
    free(buf);
    return 0;
}

/* counts: int32 per rank (sum n) */
static int reduce_scatter(struct check *ck, int k, const int *counts)
{
    struct br_comm *c = ck->c;
    int T = c->tp, n = 0, off = 0;
    for (int r = 0; r < T; r++) {
        if (r < c->tp_rank) off += counts[r];
        n += counts[r];
    }
    int32_t *send = malloc((size_t)(n + 1) * sizeof *send);
    int32_t *recv = malloc((size_t)(counts[c->tp_rank] + 1) * sizeof *recv);
    if (!send || !recv) {
        free(send), free(recv);
        return -1;
    }
    for (int i = 0; i < n; i++) send[i] = (int32_t)val(k, c->tp_rank, i);
    uint64_t before = br_comm_mpi_direct_calls(c);
    int rc = c->ops->reduce_scatter_i32(c, send, recv, counts);
    if (!rc) {
        path(ck, "reduce-scatter i32", n, before,
             br_coll_direct_fits(BR_COLL_REDUCE_SCATTER, T, 4.0 * n));
        for (int i = 0; i < counts[c->tp_rank]; i++) {
            int32_t want = (int32_t)sum_all(k, T, off + i);
            if (recv[i] != want) fail(ck, "reduce-scatter i32", n, i, recv[i], want);
        }
        /* the input stays as it was */
        for (int i = 0; i < n; i++)
            if (send[i] != (int32_t)val(k, c->tp_rank, i))
                fail(ck, "reduce-scatter input", n, i, send[i], (int32_t)val(k, c->tp_rank, i));
    }
    free(send), free(recv);
    return rc ? -1 : 0;
}

/* counts: bytes per rank */
static int allgather(struct check *ck, int k, const int *counts)
{
    struct br_comm *c = ck->c;
    int T = c->tp, n = 0, displs[BR_PLAN_MAX_TP];
    for (int r = 0; r < T; r++) displs[r] = n, n += counts[r];
    uint8_t *send = malloc((size_t)counts[c->tp_rank] + 1), *recv = malloc((size_t)n + 1);
    if (!send || !recv) {
        free(send), free(recv);
        return -1;
    }
    for (int i = 0; i < counts[c->tp_rank]; i++) send[i] = (uint8_t)val(k, c->tp_rank, i);
    memset(recv, 0xee, (size_t)n);
    uint64_t before = br_comm_mpi_direct_calls(c);
    int rc = c->ops->allgather(c, send, recv, counts, displs);
    if (!rc) {
        path(ck, "all-gather", n, before, br_coll_direct_fits(BR_COLL_ALLGATHER, T, (double)n));
        for (int r = 0; r < T; r++)
            for (int i = 0; i < counts[r]; i++)
                if (recv[displs[r] + i] != (uint8_t)val(k, r, i))
                    fail(ck, "all-gather", n, displs[r] + i, recv[displs[r] + i],
                         (uint8_t)val(k, r, i));
    }
    free(send), free(recv);
    return rc ? -1 : 0;
}

/* Each slot's maximum belongs to one rank (as the engine's statistics do), the others
 * hold 0 or less. */
static int allreduce_max(struct check *ck, int k, int n)
{
    struct br_comm *c = ck->c;
    int T = c->tp;
    float *buf = malloc((size_t)n * sizeof *buf);
    if (!buf) return -1;
    for (int i = 0; i < n; i++)
        buf[i] = i % T == c->tp_rank ? (float)(val(k, c->tp_rank, i) >> 8) : -(float)c->tp_rank;
    uint64_t before = br_comm_mpi_direct_calls(c);
    if (c->ops->allreduce_max_f32(c, buf, n)) {
        free(buf);
        return -1;
    }
    path(ck, "all-reduce max", n, before, br_coll_direct_fits(BR_COLL_ALLREDUCE_MAX, T, 4.0 * n));
    for (int i = 0; i < n; i++) {
        float want = (float)(val(k, i % T, i) >> 8);
        if (buf[i] != want) fail(ck, "all-reduce max", n, i, (long long)buf[i], (long long)want);
    }
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int expect = -1;
    if (argc == 3 && !strcmp(argv[1], "--direct") && !strcmp(argv[2], "all"))
        expect = 1;
    else if (argc == 3 && !strcmp(argv[1], "--direct") && !strcmp(argv[2], "none"))
        expect = 0;
    else if (argc != 1) {
        fprintf(stderr, "usage: mpirun -np T mpi_comm_check [--direct all|none]\n");
        return 2;
    }
    int world = 1, provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    struct br_comm *c = NULL;
    struct br_err err = {{0}};
    if (world > BR_PLAN_MAX_TP) {
        fprintf(stderr, "mpi_comm_check: at most %d ranks\n", BR_PLAN_MAX_TP);
        MPI_Finalize();
        return 1;
    }
    if (br_comm_mpi_create(&argc, &argv, world, 1, &c, &err)) { /* MPI is finalized */
        fprintf(stderr, "mpi_comm_check: %s\n", err.msg);
        return 1;
    }
    struct check ck = {c, 0, 0, expect};
    int T = c->tp, bad = 0;
    /* the largest all-reduce whose blocks fit the direct path, and one value more */
    int big = BR_COLL_DIRECT_BLOCK_MAX / 4 * T;
    int sizes[] = {1, T - 1, T, T + 1, 2 * T - 1, 7, 1000, 4099, 65537, big, big + 1};
    for (int k = 0; k < 3 && !bad; k++) {
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes && !bad; s++)
            if (sizes[s] > 0) bad = allreduce(&ck, k, sizes[s] + (k == 2 && sizes[s] < big));
        /* blocks of 256-element chunks, the last rank's short; a rank with nothing; one
         * block over the direct path's size */
        int rs[3][BR_PLAN_MAX_TP], ag[3][BR_PLAN_MAX_TP];
        for (int r = 0; r < T; r++) {
            rs[0][r] = r == T - 1 ? 256 * (k + 1) - 3 : 256 * (k + 2);
            rs[1][r] = r == 1 ? 0 : 5 + r + k;
            rs[2][r] = r == 0 ? BR_COLL_DIRECT_BLOCK_MAX / 4 * T + 1 : 3;
            ag[0][r] = 17 + 3 * r + k;
            ag[1][r] = r == T - 1 ? 0 : 1000 * (r + 1);
            ag[2][r] = r == 0 ? BR_COLL_DIRECT_BLOCK_MAX * T + 1 : 1;
        }
        for (int v = 0; v < 3 && !bad; v++)
            bad = reduce_scatter(&ck, k, rs[v]) || allgather(&ck, k, ag[v]);
        int msz[] = {1, T + 2, 179, BR_COLL_DIRECT_MAX / 4, BR_COLL_DIRECT_MAX / 4 + 1};
        for (size_t s = 0; s < sizeof msz / sizeof *msz && !bad; s++)
            bad = allreduce_max(&ck, k, msz[s]);
    }
    if (bad) fprintf(stderr, "rank %d: a collective failed: %s\n", c->tp_rank, c->why);
    int mine = ck.fails || bad, any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (c->tp_rank == 0)
        printf("%d ranks: %s; %llu collectives direct on rank 0, %d of them fit the direct "
               "path\n",
               T, any ? "FAILED" : "every value checked",
               (unsigned long long)br_comm_mpi_direct_calls(c), ck.fitting);
    br_comm_mpi_destroy(&c);
    return any ? 1 : 0;
}
