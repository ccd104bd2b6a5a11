/*
 * MPI transport for struct br_comm (worker/comm.h). Rank r of the world is stage
 * r / tp, TP rank r % tp, so a TP group is contiguous in rank order (mpirun places
 * consecutive ranks together). The calling thread must be the only one using MPI.
 *
 * BITRACK_EMULATED_DELAY_US=N (set by launch/netns-cluster where the kernel has no netem)
 * emulates N us of one-way link delay: every receive, and every one of a collective's
 * ceil(log2 tp) message rounds, completes N us later (polling the clock, yielding).
 *
 * From 3 TP ranks on, collectives go the direct way where the time model says that is
 * faster on the link (sharding/plan.h, br_coll_direct; br_comm_mpi_set_link): all-gathers,
 * reduce-scatters and small max-all-reduces in one round, each rank sending to the others
 * at once, int32 sum-all-reduces in two (a direct reduce-scatter, each rank summing its
 * block in rank order, then a direct all-gather of the sums). BITRACK_COLL_DIRECT=0
 * leaves every collective to MPI (to compare the two), =1 takes the direct way wherever
 * its buffers allow (to test it).
 */
#ifndef BR_WORKER_COMM_MPI_H
#define BR_WORKER_COMM_MPI_H

#include "bitrack/status.h"
#include "worker/comm.h"

/* True when this process was started by mpirun/mpiexec (or a world is already up). */
int br_comm_mpi_launched(void);

/* Initializes MPI (thread level FUNNELED) and the group layout; the world size must be
 * tp * pp. On failure *out is NULL, err says why, and MPI is finalized. */
int br_comm_mpi_create(int *argc, char ***argv, int tp, int pp, struct br_comm **out,
                       struct br_err *err);
/* Frees the communicator and finalizes MPI; NULL-safe. */
void br_comm_mpi_destroy(struct br_comm **c);
/* Ends the whole job with an error code (a rank that cannot continue). Rank 0 first tells
 * every other rank why (c->why), so that those still reachable leave with that message. */
void br_comm_mpi_abort(struct br_comm *c, int code);

/* Losing a rank. By default every operation blocks until it completes, as MPI does. Once
 * watched, operations wait by polling and fail with BR_E_UNAVAILABLE, c->why naming the
 * peer rank and its host, when
 *  - timeout_s > 0 and one operation has waited that long (rank 0's step deadline: a
 *    peer that vanished over TCP may never produce an error);
 *  - a rank on this machine has died (looked for every 0.1 s of waiting, and at once when
 *    interrupted(arg) says a signal arrived: mpirun answers a dead rank with SIGTERM);
 *  - (ranks other than 0) rank 0 reported a lost rank through br_comm_mpi_abort;
 *  - MPI reports an error.
 * interrupted may be NULL; it is called from the MPI thread and must be cheap. */
void br_comm_mpi_watch(struct br_comm *c, double timeout_s, int (*interrupted)(void *), void *arg);

/* The link the choice of collective algorithms assumes (sharding/plan.h, br_coll_direct):
 * one-way message time (seconds) and bandwidth (bytes/s); BR_COLL_ALPHA_S and BR_COLL_BW
 * until set, a negative alpha_s or a bw <= 0 leaves that one as it is. Every rank must be
 * given the same values. */
void br_comm_mpi_set_link(struct br_comm *c, double alpha_s, double bw);

/* How many collectives this rank has taken the direct way (each counted once). */
uint64_t br_comm_mpi_direct_calls(const struct br_comm *c);

/* How long a watched wait polls before it sleeps between polls (below the default, naps
 * of 1/20 of the time waited so far, 20 us to 1 ms; 100 us at or above it). Polling
 * answers fastest; where ranks and their threads outnumber the cores, a polling rank
 * takes a core from one that has work. */
#define BR_COMM_MPI_SPIN_S 0.02
void br_comm_mpi_set_spin(struct br_comm *c, double spin_s);

/* An idle rank sleeps (collective: every rank calls it, after br_comm_mpi_watch). Each
 * rank but 0 listens on a UDP port; rank 0 sends each a datagram when a step starts after
 * a pause of 2 ms or more. A watched wait marked idle (c->idle: waiting for the next step)
 * that has lasted BR_COMM_MPI_IDLE_S sleeps in poll() on that port, for at most 0.1 s at
 * a time (its checks run in between), instead of polling MPI: an idle server costs
 * almost no CPU, and the datagram wakes it as the step starts (a lost datagram costs at
 * most 0.1 s). The stage's step broadcasts become non-blocking on every rank, so that an
 * idle TP peer waits in the same way. */
#define BR_COMM_MPI_IDLE_S 0.05
int br_comm_mpi_doorbell(struct br_comm *c);

/* The ranks on this machine (same boot and pid namespace as this one), this one included. */
int br_comm_mpi_ranks_here(const struct br_comm *c);

/* Whether this machine's ranks, each with `threads` threads, outnumber its online cores.
 * Then a rank that polls while it waits takes a core from one that computes, and callers
 * make watched waits nap after BR_COMM_MPI_NAP_SPIN_S of polling (br_comm_mpi_set_spin). */
#define BR_COMM_MPI_NAP_SPIN_S 50e-6
int br_comm_mpi_oversubscribed(const struct br_comm *c, int threads);

/* The machines the job runs on (ranks with the same boot and pid namespace share one;
 * a rank whose namespace is unknown counts as a machine of its own). */
int br_comm_mpi_machines(const struct br_comm *c);

/* A rank on this machine whose process has died, or -1; why (n bytes) names it. Touches no
 * MPI state, so any thread may call it (a watchdog, while the MPI thread is stuck). */
int br_comm_mpi_dead_rank(const struct br_comm *c, char *why, size_t n);

/* Names (into out, n bytes) the other ranks of this rank's TP group, those a blocked
 * collective waits on: "rank 1 (pid 42 on node2 [10.0.0.2])". Any thread may call it. */
void br_comm_mpi_name_group(const struct br_comm *c, char *out, size_t n);

/* The emulated one-way link delay in us (BITRACK_EMULATED_DELAY_US), 0 when none. */
double br_comm_mpi_link_delay_us(const struct br_comm *c);

/* World size of an initialized MPI (1 when not launched by mpirun). */
int br_comm_mpi_world_size(void);

#endif
