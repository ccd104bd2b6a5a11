/*
 * A loaded model: configuration, ternary projections in the kernels' layout (all in one
 * huge-page region), norms as float arrays, the non-ternary embedding referenced in place
 * in the file mapping (a token reads one row of it), and the head rows this part evaluates
 * copied out of the mapping into huge pages (a token streams all of them).
 *
 * A model can be loaded whole or as one rank's part (a layer range, and a row or column
 * slice of every projection): the slice rules live in struct br_model_part so that the
 * single-process path and the cluster share one loader.
 */
#ifndef BR_WORKER_MODEL_H
#define BR_WORKER_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "kernels/kset.h"
#include "kernels/q8.h"
#include "kernels/ternary.h"
#include "sharding/config.h"
#include "sharding/gguf.h"
#include "sharding/plan.h"

/* A non-ternary matrix read in place: rows of `cols` values of ggml `type`. It may be a
 * window of a larger matrix (a shard file holds only a rank's embedding columns or head
 * rows): it then holds rows [row0, row0 + rows) and columns [col0, col0 + cols) of a
 * matrix full_cols wide, and callers keep using the whole matrix's indices. */
struct br_dense {
    uint32_t type;
    const uint8_t *data; /* inside the mapping */
    int64_t rows, cols;
    size_t row_bytes;
    int64_t row0, col0, full_cols; /* the window's place; 0, 0, cols for a whole matrix */
};

/* Decodes global row r of d into out (full_cols floats); columns outside the window are
 * 0. BR_E_RANGE for a row outside the window. */
int br_dense_row(const struct br_dense *d, int64_t r, float *out, struct br_err *err);

/* dot(row r, x) for a window holding whole rows (cols == full_cols), in the canonical
 * order of kernels/ops.h with the dot products of kernel set ks: F16 and F32 rows are read
 * in place (SIMD), other types are decoded into scratch (cols floats) first. Same bits
 * either way. r must be in the window (checked by assert). */
float br_dense_dot(const struct br_kernel_set *ks, const struct br_dense *d, int64_t r,
                   const float *x, float *scratch);

struct br_layer_weights {
    float *attn_norm, *attn_sub_norm, *ffn_norm, *ffn_sub_norm; /* NULL when absent */
    struct br_tmat q, k, v, o, gate, up, down;
};

struct br_model {
    struct br_model_config cfg;
    struct br_part part;  /* what this process holds (everything when loaded whole) */
    struct br_gguf *gguf; /* owned; keeps the mapping alive */
    struct br_dense embd, head;
    /* The head rows this part evaluates, [v0, v1), repacked as Q8_0 (kernels/q8.h) when
     * the head is stored as Q8_0 or was quantized at load (br_model_quantize_head); rows
     * == 0 otherwise, and the head is read from `head`. Row i is global row
     * head_q8_row0 + i. */
    struct br_q8mat head_q8;
    int64_t head_q8_row0;
    /* The head's rows [v0, v1) in huge-page memory of the model's own (kernels/bigmem.h),
     * copied out of the mapping at load or re-encoded (Q6_K); head then describes them and
     * head_file the file's view. NULL when the head is read in place or held as Q8_0. */
    uint8_t *head_own;
    size_t head_own_bytes;
    struct br_dense head_file;
    float *output_norm;              /* (d1 - d0,) last stage only */
    struct br_layer_weights *layers; /* (n_layer,), only [layer0, layer1) loaded */
    uint64_t ternary_bytes;          /* packed weight bytes held */
    /* Every layer matrix's codes, back to back in one huge-page region (kernels/bigmem.h):
     * one mapping, so that matrices under 2 MiB (a sharded projection) are on huge pages
     * too. The matrices borrow it; wmem_used of wmem_bytes are handed out. */
    uint8_t *wmem;
    size_t wmem_bytes, wmem_used;
};

/* Loads the whole model from a GGUF file. On failure *out is NULL and err says why. */
int br_model_load(const char *path, struct br_model **out, struct br_err *err);

/* Loads one rank's part (sharding/plan.h): only its layers and its slices are decoded.
 * Layer tensors are sliced as: Q/K/V rows of its query/KV heads, O columns of its heads,
 * gate/up rows [ff0, ff1), down columns [ff0, ff1); norms to the matching slices; the
 * embedding (first stage) stays in the mapping, the head rows [v0, v1) (last stage) are
 * copied out of it (head_own). */
int br_model_load_part(const char *path, const struct br_part *part, struct br_model **out,
                       struct br_err *err);
/* Loads rank `rank`'s shard file DIR/rank-<rank>.gguf of a tp x pp sharding (bitrack shard,
 * sharding/shard.h). The result is the model br_model_load_part(source, &plan->parts[rank])
 * gives: the same cfg (the full model's shapes), part, codes, scales and norms; embd (first
 * stage) and head (last stage) are windows answering br_dense_row at the same global
 * indices for the rows and columns the part reads. Refuses, naming the file, a missing
 * file, a file cut for another tp/pp/rank, rank files of different sources, and any
 * malformed file (the GGUF reader's errors). */
int br_model_load_shard(const char *dir, int tp, int pp, int rank, struct br_model **out,
                        struct br_err *err);

/* Quantizes the head rows of the last stage to Q8_0 at load (`--head q8_0`), as ggml's
 * reference quantizer does (d = max|x| / 127 rounded to f16, q = round(x / d)); the
 * logits then come from the Q8_0 kernels. A head already in Q8_0 is left as it is. No-op
 * on other stages. BR_E_UNSUPPORTED when the width is not a multiple of 32. */
int br_model_quantize_head(struct br_model *m, struct br_err *err);
/* The same for `--head TYPE`: BR_GGML_Q8_0 as above, or BR_GGML_Q6_K: the head rows of the
 * last stage re-encoded as Q6_K (sharding/decode.c's encoder) into memory the model owns,
 * read by the Q6_K kernels (kernels/q6k.h); a head already in Q6_K is left as it is.
 * BR_E_UNSUPPORTED when the width is not a multiple of 256. */
int br_model_quantize_head_as(struct br_model *m, uint32_t type, struct br_err *err);

/* NULL-safe; NULLs the caller's pointer. */
void br_model_destroy(struct br_model **m);

/* What a rank of a tp x pp job loads from `path`: a GGUF file (the plan is built from its
 * header, then only this rank's part is decoded) or a directory written by `bitrack shard`
 * (only DIR/rank-<R>.gguf is read). layout: the plan's (enum br_layout), or -1 for the
 * shard's own (a file: replicated); a shard cut for another layout is refused. *plan is set
 * when tp * pp > 1 (else NULL); the caller frees both. */
int br_model_load_rank(const char *path, int tp, int pp, int rank, int layout,
                       struct br_plan **plan, struct br_model **out, struct br_err *err);

#endif
