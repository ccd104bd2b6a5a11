/*
 * The TP x PP plan: which layers, heads, FFN rows, residual columns and vocabulary rows
 * each rank owns (docs/ARCHITECTURE.md, "Tensor parallelism" and "Pipeline parallelism").
 *
 * Two ways to hold the residual stream inside a TP group (enum br_layout):
 *  - replicated: every rank holds all d columns and computes both residual norms itself;
 *    per layer the group exchanges the two sub-norms' statistics (one max-all-reduce each)
 *    and the O and down partial sums (one int32 sum-all-reduce each): 4 collectives;
 *  - sharded: rank r holds residual columns [d0, d1) in whole 256-element chunks; per layer
 *    the norm statistics and the int8 slices are all-gathered and the partial sums
 *    reduce-scattered: 8 collectives, fewer bytes (int8 where replicated sends int32).
 * Few bytes per token (decode) are latency-bound and favour replicated; many tokens per
 * step on a slow link favour sharded. br_plan_choose_layout compares the two with the
 * alpha-beta costs below; docs/SCALING.md gives the crossover.
 *
 * Rules that keep every layout bit-identical to one process:
 *  - sharded: the residual stream of width d is split in whole 256-element chunks (the
 *    canonical reduction chunk), contiguous and in rank order; the last rank may end
 *    mid-chunk only where d itself does;
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

/* Ranks per TP group at most (the engine keeps per-rank arrays of this size). */
#define BR_PLAN_MAX_TP 64

struct br_part {
    int32_t tp, pp, tp_rank, pp_rank; /* world rank = pp_rank * tp + tp_rank */
    int32_t layer0, layer1;           /* layers [layer0, layer1) */
    int32_t d0, d1;                   /* residual columns */
    int32_t kv0, kv1;                 /* KV heads; query heads kv0*g .. kv1*g */
    int32_t ff0, ff1;                 /* FFN rows */
    int32_t v0, v1;                   /* head rows (vocabulary), last stage only */
    int first_stage, last_stage;
};

enum br_layout { BR_LAYOUT_REPLICATED = 0, BR_LAYOUT_SHARDED = 1 };

/* "replicated" / "sharded" */
const char *br_layout_name(int layout);
/* "replicated", "sharded" or "auto" (BR_LAYOUT_AUTO: br_plan_choose_layout decides); -2
 * for anything else. */
#define BR_LAYOUT_AUTO (-1)
int br_layout_parse(const char *s);
/* The layout a part belongs to: sharded when it holds part of the residual. */
int br_part_layout(const struct br_model_config *c, const struct br_part *p);

struct br_plan {
    struct br_model_config cfg;
    int32_t tp, pp;
    int32_t layout;
    struct br_part *parts; /* (tp * pp,) in world-rank order */
};

/* Builds the plan; BR_E_INVALID with a message when the model cannot be split so (more
 * TP ranks than KV heads, FFN or vocabulary 256-chunks, or, sharded, hidden 256-chunks;
 * more stages than layers). br_plan_create is the replicated layout. */
int br_plan_create_layout(const struct br_model_config *c, int32_t tp, int32_t pp, int layout,
                          struct br_plan **out, struct br_err *err);
int br_plan_create(const struct br_model_config *c, int32_t tp, int32_t pp, struct br_plan **out,
                   struct br_err *err);

/* The collectives of one TP group (worker/engine.c issues exactly these, in this order):
 * per layer for a step of n tokens, or for the head's final norm over n rows. bytes: an
 * all-gather's or reduce-scatter's blocks of every rank together, an all-reduce's buffer. */
enum br_coll_kind {
    BR_COLL_ALLGATHER,
    BR_COLL_REDUCE_SCATTER,
    BR_COLL_ALLREDUCE_I32,
    BR_COLL_ALLREDUCE_MAX,
};
struct br_coll {
    int kind;
    uint64_t bytes;
    const char *what;
};
#define BR_PLAN_MAX_COLLS 8
/* Fills out (BR_PLAN_MAX_COLLS) and returns the count; 0 for TP 1. */
int br_plan_layer_colls(const struct br_plan *p, int64_t n, struct br_coll *out);
int br_plan_head_colls(const struct br_plan *p, int64_t n, struct br_coll *out);
const char *br_coll_kind_name(int kind);

/* Alpha-beta time of one collective over T ranks (a: one-way time of a message, bw:
 * bytes/s, g = BR_COLL_MSG_S: the sender's cost of one more message on the wire, about
 * 1 us over kernel TCP; L = ceil(log2 T)). MPI's algorithms:
 *   all-gather, reduce-scatter (recursive doubling / halving): L a + (T-1)/T M/bw;
 *   all-reduce: the cheaper of recursive doubling, L (a + M/bw), and reduce-scatter +
 *   all-gather (Rabenseifner), 2 L a + 2 (T-1)/T M/bw.
 * The direct ones (worker/comm_mpi.c), each round every rank posting its T-1 messages at
 * once (they leave one after the other, g apart, and arrive together a later):
 *   all-gather, reduce-scatter: one round of T-1 blocks of M/T:  a + (T-1) (M/(T bw) + g);
 *   max-all-reduce: one round, the whole buffer to each:        a + (T-1) (M/bw + g);
 *   int32 sum all-reduce: a direct reduce-scatter (rank r gets every rank's part of block
 *     r, M/T bytes, and sums them in rank order) and a direct all-gather of the sums:
 *                                              2 a + 2 (T-1) (M/(T bw) + g).
 * The direct all-gather and reduce-scatter beat MPI's where (T-1) g < (L-1) a, whatever
 * M; the all-reduce beats Rabenseifner on the same condition, and recursive doubling
 * where 2 a + 2 (T-1) g + 2 (T-1)/T M/bw < L (a + M/bw): on 25 us links from T = 5 on
 * at every size, at T = 3 and 4 only once M/bw outweighs the extra messages (M above 6 and
 * 12 us of the link), never at T = 2 (one round of doubling). br_coll_time gives the
 * direct time where br_coll_direct takes it, else MPI's. */
double br_coll_time(int kind, int32_t T, double bytes, double a, double bw);

/* Whether a collective of `bytes` (as struct br_coll counts them) over T ranks goes the
 * direct way on a link of one-way time a and bw bytes/s: T >= 3, it fits the direct
 * path's buffers (br_coll_direct_fits) and the model above says it is faster than MPI's
 * algorithm. The communicator and the time model use this one rule, so a projection
 * times what a run does. BITRACK_COLL_DIRECT (read once) overrides it in both:
 * 0 never (MPI's algorithms, to compare), 1 wherever it fits (to test the direct paths
 * at any size and T >= 3). BR_COLL_ALPHA_S and BR_COLL_BW are the link both assume when
 * not told (run --link). Fits: a max-all-reduce's buffer at most BR_COLL_DIRECT_MAX
 * bytes (each rank holds the T-1 others'); an all-gather's block (bytes / T) or an int32
 * reduce-scatter's or all-reduce's (ceil(n / T) values) at most BR_COLL_DIRECT_BLOCK_MAX
 * bytes (each rank holds T-1 blocks to sum; the communicator's room also takes the
 * larger blocks of a split in whole 256-element chunks). */
#define BR_COLL_DIRECT_MAX       4096
#define BR_COLL_DIRECT_BLOCK_MAX (256 * 1024)
#define BR_COLL_MSG_S            1e-6
#define BR_COLL_ALPHA_S          25e-6
#define BR_COLL_BW               (25e9 / 8)
int br_coll_direct_fits(int kind, int32_t T, double bytes);
int br_coll_direct(int kind, int32_t T, double bytes, double a, double bw);
/* The BITRACK_COLL_DIRECT setting: 0 off, 1 forced, -1 (unset or anything else) by the
 * model. */
int br_coll_direct_mode(void);

/* The layout whose collectives cost less per layer for steps of `batch` tokens over a
 * link of gbit Gbit/s and alpha_us one-way; replicated where sharded cannot split. */
int br_plan_choose_layout(const struct br_model_config *c, int32_t tp, int32_t batch, double gbit,
                          double alpha_us);
void br_plan_destroy(struct br_plan **p);

/* The single-process part: everything. */
void br_part_whole(const struct br_model_config *c, struct br_part *p);

/* Per-rank estimates (bytes). */
struct br_part_cost {
    uint64_t weight_bytes;    /* packed ternary + norms + embedding/head slices */
    uint64_t kv_bytes_per_1k; /* f16 KV cache per 1000 tokens */
};
void br_part_cost(const struct br_model_config *c, const struct br_part *p, int embd_bytes_per_elem,
                  int head_bytes_per_elem, struct br_part_cost *out);

/* Exact traffic this rank sends for a run of `steps` forward steps covering `tokens`
 * tokens, `row_steps` of which return logits for `rows` rows in all, followed by the stop
 * message (top1: only the greedy choice travels back, 8 bytes a row), under the step protocol of
 * worker/step.c (descriptor of 4 + 5 * max_batch int32) and the collectives of worker/engine.c
 * (br_plan_layer_colls; bytes counted as worker/comm.h counts them). */
void br_plan_traffic(const struct br_plan *p, int32_t rank, uint64_t tokens, uint64_t steps,
                     uint64_t rows, uint64_t row_steps, int32_t max_batch, int top1,
                     uint64_t *bytes, uint64_t *messages);

/* What br_plan_describe shows of rank r: its cost (br_part_cost with the model's embedding
 * and head element sizes), its decode traffic per token (one token a step, one logits row,
 * a 64-token batch's descriptors: br_plan_traffic) and whether its weights plus KV for 4k
 * tokens exceed mem_limit (bytes, 0 = none). */
struct br_rank_figures {
    struct br_part_cost cost;
    uint64_t decode_bytes, decode_messages; /* per token */
    int over;
};
void br_plan_rank_figures(const struct br_plan *p, int32_t r, uint64_t mem_limit,
                          struct br_rank_figures *out);

/* Prints the per-rank table; mem_limit (bytes, 0 = none) marks ranks that do not fit.
 * Returns the number of ranks over the limit. */
int br_plan_describe(const struct br_plan *p, uint64_t mem_limit, FILE *f);

#endif
