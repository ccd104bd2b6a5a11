/*
 * The single-process forward pass (the reference engine): one sequence, a KV cache of
 * f16 values, tokens evaluated in batches (prefill) or one at a time (decode) with the
 * same numbers either way. Every float reduction follows kernels/ops.h's canonical order
 * and every projection is an exact integer product, so this engine is the oracle the
 * distributed and optimized paths are compared against bit for bit.
 */
#ifndef BR_WORKER_ENGINE_H
#define BR_WORKER_ENGINE_H

#include <stdint.h>

#include "bitrack/status.h"
#include "kernels/pool.h"
#include "worker/model.h"

struct br_engine;

#define BR_MAX_HEAD_DIM 512 /* attention keeps a head's vectors on the stack */

struct br_engine_opts {
    int32_t n_ctx;      /* KV positions to allocate; 0: the model's context length */
    int32_t max_batch;  /* tokens per forward step; 0: 64 */
    struct br_pool *pool; /* borrowed; NULL: serial */
};

/* The model is borrowed and must outlive the engine. */
int br_engine_create(const struct br_model *m, const struct br_engine_opts *o,
                     struct br_engine **out, struct br_err *err);
void br_engine_destroy(struct br_engine **e);

enum br_logits_mode { BR_LOGITS_NONE = 0, BR_LOGITS_LAST = 1, BR_LOGITS_ALL = 2 };

/* Evaluates tokens[0..n) at positions pos0..pos0+n-1 (positions before pos0 must already
 * be in the cache; later ones are overwritten). logits receives (n, vocab) floats for
 * BR_LOGITS_ALL, (vocab,) for the last token with BR_LOGITS_LAST. */
int br_engine_eval(struct br_engine *e, const int32_t *tokens, int32_t n, int32_t pos0,
                   float *logits, enum br_logits_mode mode, struct br_err *err);

int32_t br_engine_n_ctx(const struct br_engine *e);

/* RMS of the residual stream after each layer for the last evaluated token (n_layer + 1
 * values: the embedding, then each layer), to check activations stay in range. */
const float *br_engine_layer_rms(const struct br_engine *e);

#endif
