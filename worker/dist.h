/*
 * Driving the ranks of a TP x PP job through forward steps (ARCHITECTURE.md, "Pipeline
 * parallelism"). World rank 0 (stage 0, TP rank 0) decides each step; the step
 * descriptor (which tokens, sequences, positions, which rows need logits) is broadcast
 * to stage 0 and then travels with the residual from stage to stage, so no rank needs any
 * other control channel. The last stage's ranks send their slice of the logits of the
 * requested rows to rank 0.
 */
#ifndef BR_WORKER_DIST_H
#define BR_WORKER_DIST_H

#include "bitrack/status.h"
#include "worker/comm.h"
#include "worker/engine.h"

/* Rank 0: runs one step on every rank. For rows[0..n_rows) it returns either the full
 * logits (logits, (n_rows, vocab)) or, with logits NULL, only the greedy choice
 * (top1, (n_rows,): the highest logit, ties to the lowest id), for which each last-stage
 * rank sends 8 bytes per row instead of its whole vocabulary slice. With comm NULL (one
 * process) it is embed + layers + head. */
int br_dist_step(struct br_engine *e, struct br_comm *comm, const struct br_batch *b,
                 const int32_t *rows, int32_t n_rows, float *logits, int32_t *top1,
                 struct br_err *err);

/* Rank 0: tells every rank to leave br_dist_serve. */
int br_dist_stop(struct br_engine *e, struct br_comm *comm, struct br_err *err);

/* Every rank but 0: follows the steps until rank 0 stops them. */
int br_dist_serve(struct br_engine *e, struct br_comm *comm, struct br_err *err);

#endif
