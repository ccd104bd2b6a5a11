/*
 * Rank 0 driving the ranks of a TP x PP job through forward steps (the step protocol is
 * worker/step.h; every other rank runs br_step_follow). This is the scheduler's executor
 * (coordinator/sched.h) of every command that generates.
 *
 * Steps in flight (pipeline parallelism): rank 0 may issue up to one step per stage (the
 * executor's depth) before collecting the oldest one's results, so that every stage has
 * work. Results come back in issue order. The steps in flight are the scheduler's ring
 * (sched.h): what the driver keeps of a step until it is collected (a sampled step's
 * parameters) is in that step's entry there. Steps in flight must not depend on each
 * other's sampled tokens (a sequence has at most one decode step in flight); prompt chunks
 * of one sequence may follow each other, since every stage applies steps in order. When
 * rank 0 is the last stage (one stage) a step completes as it is issued, and the depth is
 * one: one step is in flight at a time.
 *
 * Memory: every buffer a step needs is sized for the engine's max_batch rows when the
 * driver is created (the sampling candidates' records grow with the parameters), so
 * decoding allocates nothing.
 * Threads: one thread (the one that owns the engine on rank 0) calls everything here.
 */
#ifndef BR_COORDINATOR_CLUSTER_H
#define BR_COORDINATOR_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "coordinator/sched.h"
#include "worker/comm.h"
#include "worker/engine.h"

struct br_cluster;

/* A driver for engine e (rank 0's) over comm (NULL: one process); both borrowed and must
 * outlive it. */
int br_cluster_create(struct br_engine *e, struct br_comm *comm, struct br_cluster **out,
                      struct br_err *err);
/* NULL-safe; sets *c to NULL. */
void br_cluster_destroy(struct br_cluster **c);

/* Tells every rank to leave br_step_follow. */
int br_cluster_stop(struct br_cluster *c, struct br_err *err);

/* The scheduler's executor over this driver (ctx = c, sizes from the engine): the only
 * way steps are issued and collected. */
void br_cluster_executor(struct br_cluster *c, struct br_executor *ex);

#endif
