/*
 * Driving the ranks of a TP x PP job through forward steps (docs/ARCHITECTURE.md, "Pipeline
 * parallelism"). World rank 0 (stage 0, TP rank 0) decides each step; the step
 * descriptor (which tokens, sequences, positions, which rows need logits) is broadcast
 * to stage 0 and then travels with the residual from stage to stage, so no rank needs any
 * other control channel. The last stage's ranks send rank 0, per requested row, their
 * slice of the logits, or their best logit (greedy), or their sampling candidates.
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

/* Steps in flight (pipeline parallelism): rank 0 may issue up to BR_DIST_MAX_INFLIGHT
 * steps before collecting the oldest one's results, so that every stage has work. Results
 * come back in issue order. Steps in flight must not depend on each other's sampled
 * tokens (a sequence has at most one decode step in flight); prompt chunks of one
 * sequence may follow each other, since every stage applies steps in order. */
#define BR_DIST_MAX_INFLIGHT 16

struct br_dist_pending {
    int32_t n_rows;
    int want_logits;
    int32_t *ext; /* the sampling parameters of a sampled step, else NULL */
    float *mine;  /* this rank's logits slice when it is on the last stage */
};

struct br_dist {
    struct br_dist_pending ring[BR_DIST_MAX_INFLIGHT];
    int head, count;
};

/* Sampling on the last stage (docs/ARCHITECTURE.md, "Pipeline parallelism"): for rows whose
 * sampling needs no history (no repetition, presence or frequency penalty), the sampling
 * parameters travel with the step, each last-stage rank runs br_sample_candidates over its
 * vocabulary slice, and only the candidates and the per-chunk softmax statistics go back
 * to rank 0 (a few KB per row instead of 4 bytes per vocabulary entry), where
 * br_sample_merge picks the token: the same token and logprob as br_sample_full over the
 * full logits (worker/sample.h, "Exactness under splitting"). */
#define BR_DIST_MAX_BIAS 256 /* logit-bias entries per step, all rows together */

struct br_sample_params;
struct br_sample_result;

/* Whether the rows' parameters can be sampled on the last stage: no penalties, at most
 * BR_DIST_MAX_BIAS bias entries in all, at most max_batch rows. */
int br_dist_can_sample(const struct br_engine *e, const struct br_sample_params *const *sp,
                       int32_t n_rows);

/* Rank 0: like br_dist_issue, but the step's rows are sampled on the last stage with
 * sp[i] at (seq[i], pos[i]) of the counter RNG; collect with br_dist_collect_sampled.
 * sp (n_rows,) must pass br_dist_can_sample. */
int br_dist_issue_sampled(struct br_dist *q, struct br_engine *e, struct br_comm *comm,
                          const struct br_batch *b, const int32_t *rows, int32_t n_rows,
                          const struct br_sample_params *const *sp, const uint64_t *seq,
                          const uint64_t *pos, struct br_err *err);

/* Rank 0: the results of the oldest step in flight, which must have been issued with
 * br_dist_issue_sampled: res (n_rows,) and row_rc (n_rows,), BR_OK or the status with
 * which that row's sampling failed (a NaN logit, say). The return value is about the
 * transport: BR_OK, or the error that ends the step. */
int br_dist_collect_sampled(struct br_dist *q, struct br_engine *e, struct br_comm *comm,
                            struct br_sample_result *res, int *row_rc, struct br_err *err);

/* Rank 0: sends a step down the pipeline (and runs this rank's share). With want_logits
 * the collect returns logits, else only the greedy choice. */
int br_dist_issue(struct br_dist *q, struct br_engine *e, struct br_comm *comm,
                  const struct br_batch *b, const int32_t *rows, int32_t n_rows, int want_logits,
                  struct br_err *err);
/* Rank 0: the results of the oldest step in flight: logits (n_rows, vocab) or top1. */
int br_dist_collect(struct br_dist *q, struct br_engine *e, struct br_comm *comm, float *logits,
                    int32_t *top1, struct br_err *err);
/* Forgets the steps in flight (after an error). */
void br_dist_clear(struct br_dist *q);

/* Rank 0: tells every rank to leave br_dist_serve. */
int br_dist_stop(struct br_engine *e, struct br_comm *comm, struct br_err *err);

/* Every rank but 0: follows the steps until rank 0 stops them. */
int br_dist_serve(struct br_engine *e, struct br_comm *comm, struct br_err *err);

#endif
