/*
 * Rank 0 driving the ranks of a TP x PP job through forward steps (the step protocol is
 * worker/step.h; every other rank runs br_step_follow). This is the scheduler's executor
 * (coordinator/sched.h) of every command that generates.
 *
 * Steps in flight (pipeline parallelism): rank 0 may issue up to BR_CLUSTER_MAX_INFLIGHT
 * steps before collecting the oldest one's results, so that every stage has work. Results
 * come back in issue order. Steps in flight must not depend on each other's sampled
 * tokens (a sequence has at most one decode step in flight); prompt chunks of one
 * sequence may follow each other, since every stage applies steps in order. When rank 0
 * is the last stage (one stage) a step completes as it is issued, and one is in flight at
 * a time.
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

#define BR_CLUSTER_MAX_INFLIGHT 16

struct br_cluster;
struct br_sample_params;
struct br_sample_result;

/* A driver for engine e (rank 0's) over comm (NULL: one process); both borrowed and must
 * outlive it. */
int br_cluster_create(struct br_engine *e, struct br_comm *comm, struct br_cluster **out,
                      struct br_err *err);
/* NULL-safe; forgets the steps in flight and sets *c to NULL. */
void br_cluster_destroy(struct br_cluster **c);

/* Whether the rows' parameters can be sampled on the last stage (br_step_can_sample). */
bool br_cluster_can_sample(const struct br_cluster *c, const struct br_sample_params *const *sp,
                           int32_t n_rows);

/* Sends a step down the pipeline (and runs this rank's share). With want_logits the
 * collect returns logits, else only the greedy choice. */
int br_cluster_issue(struct br_cluster *c, const struct br_batch *b, const int32_t *rows,
                     int32_t n_rows, bool want_logits, struct br_err *err);
/* Like br_cluster_issue, but the step's rows are sampled on the last stage with sp[i] at
 * (seq[i], pos[i]) of the counter RNG; collect with br_cluster_collect_sampled. sp
 * (n_rows,) must pass br_cluster_can_sample. */
int br_cluster_issue_sampled(struct br_cluster *c, const struct br_batch *b, const int32_t *rows,
                             int32_t n_rows, const struct br_sample_params *const *sp,
                             const uint64_t *seq, const uint64_t *pos, struct br_err *err);
/* The results of the oldest step in flight: logits (n_rows, vocab), or with logits NULL
 * the greedy choice top1 (n_rows,): the highest logit, ties to the lowest id. */
int br_cluster_collect(struct br_cluster *c, float *logits, int32_t *top1, struct br_err *err);
/* The results of the oldest step in flight, which must have been issued sampled: res
 * (n_rows,) and row_rc (n_rows,), BR_OK or the status with which that row's sampling
 * failed (a NaN logit, say). The return value is about the transport: BR_OK, or the error
 * that ends the step. */
int br_cluster_collect_sampled(struct br_cluster *c, struct br_sample_result *res, int *row_rc,
                               struct br_err *err);
/* Forgets the steps in flight (after an error). */
void br_cluster_clear(struct br_cluster *c);

/* Tells every rank to leave br_step_follow. */
int br_cluster_stop(struct br_cluster *c, struct br_err *err);

/* The scheduler's executor over this driver (ctx = c, sizes from the engine). */
void br_cluster_executor(struct br_cluster *c, struct br_executor *ex);

#endif
