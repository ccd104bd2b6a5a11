/*
 * The forward pass of one rank (or of the whole model in one process): embeddings,
 * layers, head, over a batch of tokens that may belong to different sequences.
 *
 * The same code runs every layout. A rank holds one part of the plan (sharding/plan.h)
 * and talks to the others through struct br_comm (NULL for a single process). Every float
 * reduction follows kernels/ops.h's canonical order, norm statistics are combined in chunk
 * order across ranks, and integer partial sums are reduced exactly, so logits are
 * bit-identical for every TP x PP layout and thread count. The single-process engine is
 * the oracle the distributed runs are compared against.
 *
 * KV cache: f16, paged (worker/kvcache.h): blocks of BR_KV_BLOCK positions handed to
 * sequence slots as they grow; per layer (kv_blocks * BR_KV_BLOCK, local KV heads * hd).
 */
#ifndef BR_WORKER_ENGINE_H
#define BR_WORKER_ENGINE_H

#include <stdint.h>

#include "bitrack/status.h"
#include "kernels/kset.h"
#include "kernels/pool.h"
#include "worker/comm.h"
#include "worker/model.h"

struct br_engine;

#define BR_MAX_HEAD_DIM 512 /* attention keeps a head's vectors on the stack */
#define BR_KV_BLOCK     32  /* positions per KV-cache block */

struct br_engine_opts {
    int32_t n_ctx;        /* KV positions per sequence; 0: the model's context length */
    int32_t max_batch;    /* tokens per forward step; 0: 64 */
    int32_t n_seq;        /* sequence slots; 0: 1 */
    int32_t kv_blocks;    /* KV blocks in all; 0: enough for every slot's full context */
    struct br_pool *pool; /* borrowed; NULL: serial */
    struct br_comm *comm; /* borrowed; NULL: a single process holding the whole model */
    /* The kernel variant every kernel call of the engine goes through (kernels/kset.h),
     * borrowed (the sets are static); NULL: the process's, br_kernel_set_active(). Every
     * set gives the same bits. */
    const struct br_kernel_set *kernels;
};

/* The model (whole or one rank's part) is borrowed and must outlive the engine. */
int br_engine_create(const struct br_model *m, const struct br_engine_opts *o,
                     struct br_engine **out, struct br_err *err);
void br_engine_destroy(struct br_engine **e);

/* A batch: token i is tokens[i] of sequence slot seq[i] at position pos[i]. Positions of
 * one sequence must be consecutive and in order within the batch, and earlier positions
 * of that sequence must already be cached (a position below the cached length truncates
 * the sequence there). Before the tokens, the slots free_seqs[0..n_free) are released. */
struct br_batch {
    int32_t n;
    const int32_t *tokens, *pos, *seq;
    int32_t n_free;
    const int32_t *free_seqs;
};

/* Free KV blocks, and the block size (for admission decisions). */
int32_t br_engine_free_blocks(const struct br_engine *e);

/* Checks a batch against the engine's limits (ids, positions, slots); BR_OK or an error
 * naming the offending entry. */
int br_engine_check(const struct br_engine *e, const struct br_batch *b, struct br_err *err);

/* First stage: residual (n, d1 - d0) from the embedding. */
int br_engine_embed(struct br_engine *e, const struct br_batch *b, struct br_err *err);
/* This part's layers over the residual. */
int br_engine_layers(struct br_engine *e, const struct br_batch *b, struct br_err *err);
/* Last stage: logits of the batch entries rows[0..n_rows) for this part's vocabulary rows
 * [v0, v1): logits (n_rows, v1 - v0). */
int br_engine_head(struct br_engine *e, const struct br_batch *b, const int32_t *rows,
                   int32_t n_rows, float *logits, struct br_err *err);
/* The residual of the last batch, (n, d1 - d0) floats: what a stage sends the next. */
float *br_engine_residual(struct br_engine *e);

int32_t br_engine_n_ctx(const struct br_engine *e);
int32_t br_engine_vocab(const struct br_engine *e);
int32_t br_engine_n_seq(const struct br_engine *e);
/* Width of this rank's residual slice (d1 - d0). */
int32_t br_engine_residual_width(const struct br_engine *e);
/* The thread pool the engine runs on (NULL: serial), for per-row work around a step by the
 * thread that drives the engine. */
struct br_pool *br_engine_pool(const struct br_engine *e);
/* The vocabulary rows [v0, v1) that TP rank `tp_rank` of the last stage holds. */
void br_engine_vocab_slice(const struct br_engine *e, int tp_rank, int32_t *v0, int32_t *v1);
int32_t br_engine_max_batch(const struct br_engine *e);

enum br_logits_mode { BR_LOGITS_NONE = 0, BR_LOGITS_LAST = 1, BR_LOGITS_ALL = 2 };

/* Single process, one sequence (slot 0): evaluates tokens[0..n) at positions pos0.. in
 * batches of max_batch. logits receives (n, vocab) for BR_LOGITS_ALL, (vocab,) for the
 * last token with BR_LOGITS_LAST. */
int br_engine_eval(struct br_engine *e, const int32_t *tokens, int32_t n, int32_t pos0,
                   float *logits, enum br_logits_mode mode, struct br_err *err);

/* RMS of the residual stream after each layer for the last evaluated token (n_layer + 1
 * values: the embedding, then each layer); single process only. */
const float *br_engine_layer_rms(const struct br_engine *e);

#endif
