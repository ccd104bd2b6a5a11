/*
 * The collectives a rank's forward pass needs, behind one small interface so the engine
 * is testable without MPI and the transport can change (worker/comm_mpi.c is the MPI one).
 *
 * TP group: the ranks of one pipeline stage, in tp_rank order. Pipeline: the same tp_rank
 * in the previous and next stage. Every operation counts the bytes and messages this rank
 * sends (struct br_comm_stats), so measured traffic can be checked against the plan: one
 * message per operation (per call on the sending side for point to point, on the root for
 * a broadcast), and as bytes what this rank's data costs its peers: its block times the
 * other ranks for an all-gather or broadcast, the other ranks' blocks for a
 * reduce-scatter, the buffer once for an all-reduce (what each rank puts on the wire with
 * two ranks; a bandwidth-optimal all-reduce sends 2 (T-1)/T of it).
 */
#ifndef BR_WORKER_COMM_H
#define BR_WORKER_COMM_H

#include <stddef.h>
#include <stdint.h>

struct br_comm_stats {
    uint64_t bytes_sent, messages;
};

struct br_comm;

struct br_comm_ops {
    /* All-gather within the TP group: rank i contributes counts[i] bytes (its own buffer
     * `send` holds counts[tp_rank]); recv gets every rank's bytes at displs[i]. */
    int (*allgather)(struct br_comm *c, const void *send, void *recv, const int *counts,
                     const int *displs);
    /* Sum-reduce-scatter of int32 within the TP group: send holds sum(counts) values,
     * rank i's block first at the offset of the preceding counts; recv gets counts[tp_rank]
     * summed values. Exact (integers). */
    int (*reduce_scatter_i32)(struct br_comm *c, const int32_t *send, int32_t *recv,
                              const int *counts);
    /* Sum-all-reduce of n int32 values within the TP group, in place. Exact (integers). */
    int (*allreduce_i32)(struct br_comm *c, int32_t *buf, int n);
    /* Max-all-reduce of n floats within the TP group, in place. Exact in any order: the
     * engine packs non-negative statistics so that each slot is written by one rank and
     * is 0 on the others, so the maximum is that rank's value, bit for bit. */
    int (*allreduce_max_f32)(struct br_comm *c, float *buf, int n);
    /* Point to point along the pipeline (same tp_rank): to the next stage / from the
     * previous stage. */
    int (*send_next)(struct br_comm *c, const void *buf, size_t bytes);
    int (*recv_prev)(struct br_comm *c, void *buf, size_t bytes);
    /* To / from world rank 0 (the coordinator). send_root returns once the buffer may be
     * reused but does not wait for rank 0 to take the message: *pending is set, and
     * wait_root must be called on it before the buffer is written again. This keeps the
     * last stage from blocking on rank 0 while rank 0 sends it the next step (with steps
     * in flight, both would wait for each other). */
    int (*send_root)(struct br_comm *c, const void *buf, size_t bytes, void **pending);
    int (*wait_root)(struct br_comm *c, void **pending);
    int (*recv_from)(struct br_comm *c, int world_rank, void *buf, size_t bytes);
    /* Broadcast within the TP group from tp_rank 0. */
    int (*bcast)(struct br_comm *c, void *buf, size_t bytes);
};

/* The ops table of a transport whose operations are its static functions op_<member>
 * (comm_local.c, comm_mpi.c). One list for both: a member added above is in both tables,
 * and a transport without its op_<member> does not compile (rather than holding NULL). */
#define BR_COMM_OPS_OF_OP_FUNCTIONS                                                                \
    {                                                                                              \
        .allgather = op_allgather, .reduce_scatter_i32 = op_reduce_scatter_i32,                    \
        .allreduce_i32 = op_allreduce_i32, .allreduce_max_f32 = op_allreduce_max_f32,              \
        .send_next = op_send_next, .recv_prev = op_recv_prev, .send_root = op_send_root,           \
        .wait_root = op_wait_root, .recv_from = op_recv_from, .bcast = op_bcast                    \
    }

struct br_comm {
    const struct br_comm_ops *ops;
    void *impl;
    int tp, tp_rank, pp, pp_rank, world_rank, world_size;
    struct br_comm_stats stats;
    /* Set by the caller while it waits for the next step (between steps, possibly for
     * long): a transport may then sleep instead of polling (comm_mpi.h, doorbell). */
    int idle;
    /* Why the last failed operation failed, naming the peer rank and its host when the
     * transport knows them ("" when it does not); set by the transport. */
    char why[256];
};

/* Traffic accounting as the header comment states it, one per kind of operation, for
 * every transport to call so that their counts (and `--stats`) agree. */
static inline void br_comm_count(struct br_comm *c, uint64_t bytes)
{
    c->stats.bytes_sent += bytes;
    c->stats.messages++;
}
/* All-gather: this rank's block, counts[tp_rank] bytes, to each other rank. */
static inline void br_comm_count_allgather(struct br_comm *c, const int *counts)
{
    br_comm_count(c, (uint64_t)counts[c->tp_rank] * (uint64_t)(c->tp - 1));
}
/* Int32 reduce-scatter: the other ranks' blocks of counts (int32s). */
static inline void br_comm_count_reduce_scatter(struct br_comm *c, const int *counts)
{
    uint64_t total = 0;
    for (int r = 0; r < c->tp; r++) total += (uint64_t)counts[r];
    br_comm_count(c, 4 * (total - (uint64_t)counts[c->tp_rank]));
}
/* All-reduce of n 4-byte values: the buffer once. */
static inline void br_comm_count_allreduce(struct br_comm *c, int n)
{
    br_comm_count(c, 4 * (uint64_t)n);
}
/* Broadcast: counted on the root only, its buffer to each other rank. */
static inline void br_comm_count_bcast(struct br_comm *c, size_t bytes)
{
    if (c->tp_rank == 0) br_comm_count(c, (uint64_t)bytes * (uint64_t)(c->tp - 1));
}

#endif
