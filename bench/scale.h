/*
 * The scale model (`bitrack bench scale`, docs/SCALING.md): what one rank's share of a
 * model costs per forward step, measured on this machine, and what a rack of N nodes
 * would then do, projected with an alpha-beta network model.
 *
 * Measurement. One rank's part of a TP x PP plan (a shard written by `bitrack synth
 * --rank` or cut by `bitrack shard`) runs its forward step alone, through a loopback
 * communicator: every collective the engine issues returns at once with data of the right
 * size (the rank's own block repeated), and its kind and size are recorded. So the step
 * costs exactly this rank's compute, and the record says which collectives a real run
 * would have to wait for, with their sizes.
 *
 * Projection (all times per forward step of B tokens, one node per rank):
 *
 *   net(allgather or reduce-scatter of M bytes in all over T ranks)
 *            = ceil(log2 T) a + (T-1) M/(T bw)   (recursive doubling / halving: log2 T
 *                                                 rounds, each rank receiving (T-1)/T of M)
 *   net(all-reduce of an M-byte buffer) = min(ceil(log2 T) (a + M/bw),
 *                                             2 ceil(log2 T) a + 2 (T-1) M/(T bw))
 *            (recursive doubling, or reduce-scatter + all-gather)
 *   or, from T = 3 on where the link makes it faster (br_coll_direct), the direct ones:
 *   a + (T-1) (M/(T bw) + g) for an all-gather or reduce-scatter, a + (T-1) (M/bw + g) for
 *   a max-all-reduce, 2 a + 2 (T-1) (M/(T bw) + g) for an int32 sum-all-reduce (g: a
 *   message's cost to its sender); each per call of the kind's average size (br_coll_time)
 *   net(broadcast of m bytes over T)                                 = ceil(log2 T) (a + m/bw)
 *   hop(B)   = 2 a + (desc + 4 B d_s)/bw         stage to stage: descriptor, then residual
 *                                               (d_s = d replicated, d/T sharded)
 *   back(B)  = R (a + 8 B / bw)                 last stage's TP ranks send top-1 to rank 0
 *                                               (R = T, or T-1 when rank 0 is one of them)
 *   stage_s  = k (L_s layer + [first] embed + [last] head)
 *              + bcast(desc) + L_s (sum over the layer's collectives of net(.))
 *              + [last] (the final norm's all-gathers)
 *   latency(B)   = sum_s stage_s + (P-1) hop + back        one step through every stage
 *   single stream: tokens/s = 1 / latency(1)
 *   aggregate:     tokens/s = B / max_s (stage_s + hop)    P steps in flight (P > 1)
 *                           = B / latency(B)               (P = 1)
 *
 * a is the one-way time of a message (wire latency plus the MPI/TCP software cost), bw the
 * link bandwidth, d the model width, L_s the layers of stage s (from the plan), layer /
 * embed / head the measured compute of a rank of width 1/T, desc the step descriptor
 * (4 + 5 max_batch int32). k is 1 on a rack; when all ranks share C cores of one machine
 * it is max(1, busy ranks x threads / C), where a waiting rank is not busy (Open MPI yields
 * the core in its waits when ranks outnumber cores): T busy ranks in latency (one stage
 * computes at a time), T P in the pipelined aggregate.
 */
#ifndef BR_BENCH_SCALE_H
#define BR_BENCH_SCALE_H

#include <stdint.h>

#include "bitrack/status.h"
#include "kernels/pool.h"
#include "sharding/config.h"
#include "worker/comm.h"
#include "worker/model.h"

/* A single-process communicator for rank (tp_rank, pp_rank) of a tp x pp job: every
 * operation returns at once. All-gather fills each rank's block with this rank's bytes
 * (repeated or cut to the block's size); reduce-scatter returns this rank's block
 * unsummed; receives leave the buffer as it is. Each call is counted (struct
 * br_scale_trace). Destroy with br_scale_loopback_destroy (NULL-safe). */
struct br_scale_trace {
    uint64_t allgather_n, allgather_bytes; /* calls, bytes of all ranks' blocks */
    uint64_t agd_n, agd_bytes; /* those that fit the direct path (br_coll_direct_fits) */
    uint64_t rs_n, rs_bytes;   /* reduce-scatter: calls, bytes of all blocks */
    uint64_t ar_n, ar_bytes;   /* int32 sum all-reduce: calls, bytes of the buffer */
    uint64_t arm_n, arm_bytes; /* float max all-reduce: calls, bytes of the buffer */
    uint64_t other_n;          /* p2p, bcast, root messages */
};
int br_scale_loopback_create(int tp, int tp_rank, int pp, int pp_rank, struct br_comm **out);
void br_scale_loopback_destroy(struct br_comm **c);
/* The counts so far (zeroed with br_scale_loopback_reset). */
const struct br_scale_trace *br_scale_loopback_trace(const struct br_comm *c);
void br_scale_loopback_reset(struct br_comm *c);

/* What one rank of width 1/tp costs for a step of `batch` decode tokens. */
struct br_scale_cost {
    int32_t tp, batch;
    double layer_s; /* compute of one layer (median step / layers held) */
    double embed_s; /* first stage: the embedding; 0 when the rank is not first */
    double head_s;  /* last stage: final norm + head for `batch` rows; -1 when not measured */
    double ag_n, ag_bytes, rs_n, rs_bytes; /* collectives of one layer (struct br_scale_trace) */
    double agd_n, agd_bytes; /* those that fit the direct path (br_coll_direct_fits) */
    double ar_n, ar_bytes, arm_n, arm_bytes; /* all-reduces of one layer: int32 sum, f32 max */
    double head_ag_n, head_ag_bytes;         /* last stage: the final norm's all-gathers */
};

/* Measures rank m->part's step for each batch size (decode: batch sequences, one token
 * each), median of `reps` timed steps after one warm-up, on `clock`. The engine holds n_ctx KV
 * positions per sequence (0: just the steps taken). out has n_batches entries. */
/* Which clock br_scale_measure reads: wall time, or this process's CPU time divided by the
 * pool's threads. On a machine shared with other jobs the CPU time is what the step would
 * take with the cores to itself (with one thread it has no idle spinning in it; with more,
 * the pool's spin-waits are counted). */
enum br_scale_clock { BR_SCALE_WALL = 0, BR_SCALE_CPU = 1 };

/* Read bandwidth (GB/s) of the pool's threads streaming 512 MiB of memory, best of 3, on
 * the clock the compute is measured on. */
double br_scale_stream_gbs(struct br_pool *pool, enum br_scale_clock clock);

int br_scale_measure(const struct br_model *m, struct br_pool *pool, const int32_t *batches,
                     int n_batches, int reps, int32_t n_ctx, enum br_scale_clock clock,
                     struct br_scale_cost *out, struct br_err *err);

/* Replaces cost's collectives (per layer and the head's) by those plan p's layout issues
 * for cost->batch tokens (sharding/plan.h): the other residual layout projected from the
 * compute of one measurement (both layouts do the same matrix work). */
void br_scale_cost_from_plan(struct br_scale_cost *k, const struct br_plan *p);

/* A node of the rack: cores and memory bandwidth. The compute measured here is scaled by
 * the resource that improves least: decode reads every weight once per step (time = bytes
 * / bandwidth), prefill is compute-bound (time ~ 1 / cores), so
 *   t_node = t_here x max(here_gbs / node_gbs, here_threads / node_cores).
 * here_gbs is the bandwidth this machine's threads reach (br_scale_stream_gbs). */
struct br_scale_node {
    int32_t cores;
    double gbs;
};
double br_scale_node_factor(const struct br_scale_node *node, double here_gbs, int here_threads);

struct br_scale_net {
    double alpha_s;    /* one-way time of a message */
    double bw_bytes_s; /* link bandwidth */
};

struct br_scale_env {
    struct br_scale_net net;
    int32_t max_batch;     /* engine's tokens per step (descriptor size), 64 by default */
    int32_t cores;         /* 0: one node per rank; C: all ranks share C cores */
    int32_t threads;       /* threads per rank (for the sharing factor) */
    double compute_factor; /* measured compute x this on the projected node (0: 1) */
    int32_t layout;        /* residual (enum br_layout): what a stage hands the next, d or d/T */
    /* > 0: a layer's and the head's collectives measured (`bench scale net -m`), used
     * instead of their alpha-beta times; 0 or less: the formulas */
    double layer_net_s, head_net_s;
};

/* Time of one collective (formulas above). */
double br_scale_allgather_s(const struct br_scale_net *n, int32_t ranks, double total_bytes);
double br_scale_bcast_s(const struct br_scale_net *n, int32_t ranks, double bytes);

struct br_scale_proj {
    double latency_s;       /* one step of B tokens through every stage */
    double stage_max_s;     /* slowest stage incl. its hop, pipeline full */
    double compute_s;       /* sum over stages of compute (single pass, with k) */
    double comm_s;          /* sum over stages of collectives + hops + back */
    double tok_s;           /* B / latency (one step at a time) */
    double tok_s_pipelined; /* B / stage_max for P > 1, else tok_s */
};

/* Projects a tp x pp layout of model c from the cost of a rank of width 1/tp at batch B
 * (cost->tp must equal tp). Layer counts per stage come from the plan. */
int br_scale_project(const struct br_model_config *c, int32_t tp, int32_t pp,
                     const struct br_scale_cost *cost, const struct br_scale_env *env,
                     struct br_scale_proj *out, struct br_err *err);

/* The same from explicit stage layer counts (layers[0..pp)): the arithmetic alone. */
void br_scale_project_stages(int32_t d, int32_t tp, int32_t pp, const int32_t *layers,
                             const struct br_scale_cost *cost, const struct br_scale_env *env,
                             struct br_scale_proj *out);

#endif
