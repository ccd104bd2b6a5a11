/*
 * The TP x PP plan: which layers, heads, FFN rows, residual columns and vocabulary rows
 * each rank owns (docs/ARCHITECTURE.md, "Tensor parallelism" and "Pipeline parallelism").
 *
 * Rules that keep every layout bit-identical to one process:
 *  - the residual stream of width d is split in whole 256-element chunks (the canonical
 *    reduction chunk), contiguous and in rank order; the last rank may end mid-chunk only
 *    where d itself does;
 *  - attention is split by whole KV-head groups (a KV head and the query heads using it);
 *  - FFN rows are split in whole 256-row chunks;
 *  - the head is split by vocabulary rows in whole 256-row chunks;
 *  - stages own contiguous layer ranges, balanced by weight bytes, the first stage also
 *    holding the embedding and the last the output norm and head.
 * Splits may be uneven (5 KV heads over 2 ranks): br_plan_describe reports the imbalance.
 */
#ifndef BR_SHARDING_PLAN_H
#define BR_SHARDING_PLAN_H

#include <stdint.h>
#include <stdio.h>

#include "bitrack/status.h"
#include "sharding/config.h"

struct br_part {
    int32_t tp, pp, tp_rank, pp_rank; /* world rank = pp_rank * tp + tp_rank */
    int32_t layer0, layer1;           /* layers [layer0, layer1) */
    int32_t d0, d1;                   /* residual columns */
    int32_t kv0, kv1;                 /* KV heads; query heads kv0*g .. kv1*g */
    int32_t ff0, ff1;                 /* FFN rows */
    int32_t v0, v1;                   /* head rows (vocabulary), last stage only */
    int first_stage, last_stage;
};

struct br_plan {
    struct br_model_config cfg;
    int32_t tp, pp;
    struct br_part *parts; /* (tp * pp,) in world-rank order */
};

/* Builds the plan; BR_E_INVALID with a message when the model cannot be split so (more
 * TP ranks than KV heads or 256-chunks, more stages than layers). */
int br_plan_create(const struct br_model_config *c, int32_t tp, int32_t pp, struct br_plan **out,
                   struct br_err *err);
void br_plan_destroy(struct br_plan **p);

/* The single-process part: everything. */
void br_part_whole(const struct br_model_config *c, struct br_part *p);

/* Per-rank estimates (bytes). */
struct br_part_cost {
    uint64_t weight_bytes;       /* packed ternary + norms + embedding/head slices */
    uint64_t kv_bytes_per_1k;    /* f16 KV cache per 1000 tokens */
    uint64_t send_bytes_per_tok; /* activations sent per token (collectives and p2p) */
    uint32_t messages_per_tok;   /* collective or p2p operations per token */
};
void br_part_cost(const struct br_model_config *c, const struct br_part *p, int embd_bytes_per_elem,
                  int head_bytes_per_elem, struct br_part_cost *out);

/* Exact traffic this rank sends for a run of `steps` forward steps covering `tokens`
 * tokens, `row_steps` of which return logits for `rows` rows in all, followed by the stop
 * message (top1: only the greedy choice travels back, 8 bytes a row), under the step protocol of
 * worker/step.c (descriptor of 4 + 5 * max_batch int32) and the collectives of worker/engine.c. */
void br_plan_traffic(const struct br_plan *p, int32_t rank, uint64_t tokens, uint64_t steps,
                     uint64_t rows, uint64_t row_steps, int32_t max_batch, int top1,
                     uint64_t *bytes, uint64_t *messages);

/* Prints the per-rank table; mem_limit (bytes, 0 = none) marks ranks that do not fit.
 * Returns the number of ranks over the limit. */
int br_plan_describe(const struct br_plan *p, uint64_t mem_limit, FILE *f);

#endif
