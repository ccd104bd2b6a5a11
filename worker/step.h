/*
 * The step protocol between world rank 0 and the other ranks of a TP x PP job
 * (docs/ARCHITECTURE.md, "Pipeline parallelism"), and what a rank does with a step.
 *
 * World rank 0 (stage 0, TP rank 0) decides each step; its descriptor (which tokens,
 * sequences, positions, which rows need logits) is broadcast to stage 0 and then travels
 * with the residual from stage to stage, so no rank needs any other control channel. The
 * last stage's ranks send rank 0, per requested row, their slice of the logits, or their
 * best logit (greedy), or their sampling candidates. Rank 0's side (issuing steps and
 * merging what comes back) is coordinator/cluster.h; this module holds the wire format
 * both sides share and the loop every other rank runs (br_step_follow).
 *
 * Sampling on the last stage: for rows whose sampling needs no history (no repetition,
 * presence or frequency penalty), the sampling parameters travel with the step, each
 * last-stage rank runs br_sample_candidates over its vocabulary slice, and only the
 * candidates and the per-chunk softmax statistics go back to rank 0 (a few KB per row
 * instead of 4 bytes per vocabulary entry), where br_sample_merge picks the token: the
 * same token and logprob as br_sample_full over the full logits (worker/sample.h,
 * "Exactness under splitting").
 */
#ifndef BR_WORKER_STEP_H
#define BR_WORKER_STEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "worker/comm.h"
#include "worker/engine.h"

struct br_sample_bias;
struct br_sample_params;

/* Descriptor flags. */
enum { BR_STEP_STOP = 1, BR_STEP_TOP1 = 2, BR_STEP_SAMPLE = 4 };

#define BR_STEP_MAX_BIAS 256 /* logit-bias entries per sampled step, all rows together */

/* A greedy step's answer per row: the best logit of a vocabulary slice and its id. */
struct br_step_top1 {
    float value;
    int32_t id;
};

/* Header of one row's candidate record (see step.c). */
struct br_step_rec_head {
    int32_t n; /* candidates, or a negative status */
    int32_t pad;
};

/* int32s of a descriptor, and of a sampled step's parameters, for this engine's batch. */
size_t br_step_desc_ints(const struct br_engine *e);
size_t br_step_ext_ints(const struct br_engine *e);

/* Fills descriptor d (br_step_desc_ints,) for batch b (NULL: an empty one) whose rows
 * (n_rows,) want results; mb is the engine's max batch. */
void br_step_desc_pack(int32_t *d, int32_t mb, const struct br_batch *b, const int32_t *rows,
                       int32_t n_rows, int32_t flags);

/* Whether the rows' parameters can be sampled on the last stage: no penalties, at most
 * BR_STEP_MAX_BIAS bias entries in all, at most max_batch rows. */
bool br_step_can_sample(const struct br_engine *e, const struct br_sample_params *const *sp,
                        int32_t n_rows);

/* Fills x (br_step_ext_ints,) with rows' sampling parameters sp (n_rows,) at (seq, pos)
 * of the counter RNG; sp must pass br_step_can_sample. */
void br_step_ext_pack(int32_t *x, int32_t mb, int32_t n_rows,
                      const struct br_sample_params *const *sp, const uint64_t *seq,
                      const uint64_t *pos);

/* Row r's parameters from x; bias (BR_STEP_MAX_BIAS,) receives its bias entries, which p
 * then borrows. BR_E_PROTOCOL for entries outside the pool. */
int br_step_ext_row(const int32_t *x, int32_t mb, int32_t r, struct br_sample_params *p,
                    struct br_sample_bias *bias, uint64_t *seq, uint64_t *pos);

/* Candidates per record for a slice of width w: the most any of the n_rows rows may
 * produce; and the bytes of one record. */
int32_t br_step_rec_cap(const int32_t *x, int32_t mb, int32_t n_rows, int32_t w);
size_t br_step_rec_bytes(int32_t cap, int32_t v0, int32_t v1);

/* A slice's records for the n_rows rows of logits (n_rows, v1 - v0) into out
 * (n_rows * rec_bytes,). A row whose sampling fails carries the status instead. Rows are
 * independent, so they spread over the engine's pool. */
void br_step_records(struct br_engine *e, const int32_t *x, int32_t mb, int32_t n_rows,
                     const float *logits, int32_t v0, int32_t v1, void *out);

/* The best logit of each row of logits (n_rows, w), whose ids start at v0. */
void br_step_top1(const float *logits, int32_t n_rows, int32_t w, int32_t v0,
                  struct br_step_top1 *out);

/* Runs this rank's share of the step described by d (and x, a sampled step's parameters):
 * embedding on the first stage, its layers, and either the hand-off of d, x and the
 * residual to the next stage or, on the last stage, the head's logits into logits. */
int br_step_run(struct br_engine *e, struct br_comm *c, int32_t *d, int32_t *x, float *logits,
                struct br_err *err);

/* A failed operation's error: what failed, and why as the transport saw it (naming the
 * peer rank and host when it knows them). Returns rc. */
int br_step_fail(struct br_err *err, const struct br_comm *c, int rc, const char *what);

/* Every rank but 0: follows the steps until rank 0 stops them (br_cluster_stop). */
int br_step_follow(struct br_engine *e, struct br_comm *comm, struct br_err *err);

#endif
