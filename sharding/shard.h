/*
 * Shard files: one GGUF v3 file per rank (DIR/rank-<R>.gguf, world rank R = pp_rank * tp +
 * tp_rank) holding only what that rank of a TP x PP plan (sharding/plan.h) loads, so no
 * rank ever maps the whole model.
 *
 * Contents of a shard, in this order:
 *  - metadata: the bitrack.shard.* keys below, then every key of the source in its order
 *    (model, tokenizer.*, general.*), copied value for value;
 *  - token_embd.weight, first stage only: columns [d0, d1) of every vocabulary row, ne =
 *    {d1 - d0, n_vocab}, in the source's type; when that type is block-quantized (Q8_0,
 *    Q6_K) and d0 or d1 is not on a block boundary, as F32 instead (exact: the decoded
 *    values). Under the current plan the boundaries are 256-aligned, so this is rare;
 *  - per layer of the part, per tensor (attn_norm, q, k, v, attn_sub_norm, o, ffn_norm,
 *    gate, up, ffn_sub_norm, down): the sub-rectangle br_shard_slice() names. Norms as F32.
 *    Ternary weights as I2_S, i.e. already in the kernels' canonical layout
 *    (kernels/ternary.h); a slice whose width is not a multiple of 128 (O columns of
 *    100-wide heads, the last rank's down columns of an 8640-wide FFN) is stored with
 *    ne0 rounded up to 128: the extra columns hold code 1 (weight 0), exactly the
 *    canonical row padding, and the loader takes the logical width from the plan. The
 *    I2_S tail holds the slice's scale; when its rows' scales differ (per-row sources
 *    such as TQ2_0 or float files) an F32 `<name>.rowscale` tensor (rows,) follows and
 *    is authoritative. Scales are final: a source's separate `<name>.scale` tensor is
 *    already multiplied in (the same float product the whole-file loader computes);
 *  - output_norm.weight columns [d0, d1) (F32) and output.weight rows [v0, v1) with every
 *    column (the head's type; for a tied head, token_embd's rows), last stage only.
 *
 * bitrack.shard.* keys (u32 unless noted): version (1), tp, pp, rank, tp_rank, pp_rank,
 * layer0, layer1, d0, d1, kv0, kv1, ff0, ff1, v0, v1, first_stage (bool), last_stage
 * (bool), n_vocab, embd_type, head_type, weight_type, tied_head (bool) — the source facts
 * that the model configuration takes from tensors —, source_size (u64: the source file's
 * size in bytes) and source_checksum (u64).
 *
 * source_checksum is 64-bit FNV-1a over the source's header bytes [0, data_offset):
 * magic, version, counts, every metadata record and every tensor info (names, shapes,
 * types, offsets), and the padding. It identifies the source's header, not its data: two
 * files differing only in weight bytes get the same checksum. That is what makes it
 * computable without the data (bitrack synth --rank writes one rank's shard byte-identical
 * to `bitrack shard` of the whole synthetic file) and what keeps it fast (milliseconds,
 * whatever the model size). Synthetic models differ in general.seed, so their headers do.
 */
#ifndef BR_SHARDING_SHARD_H
#define BR_SHARDING_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/progress.h"
#include "bitrack/status.h"
#include "kernels/ternary.h"
#include "sharding/config.h"
#include "sharding/gguf.h"
#include "sharding/plan.h"

#define BR_SHARD_VERSION 1

/* What a shard's bitrack.shard.* keys say. */
struct br_shard_info {
    uint32_t version;
    int32_t tp, pp, rank;
    struct br_part part;
    int32_t n_vocab;
    uint32_t embd_type, head_type, weight_type;
    bool tied_head;
    uint64_t source_size, source_checksum;
};

/* The sub-rectangle (rows [r0, r1), columns [c0, c1)) of layer tensor w that `p` holds:
 * Q/K/V rows of its heads, O columns of its heads, gate/up rows and down columns
 * [ff0, ff1), norms the matching slice (norms have one row). */
void br_shard_slice(const struct br_model_config *c, const struct br_part *p, enum br_wname w,
                    int64_t *r0, int64_t *r1, int64_t *c0, int64_t *c1);

/* Multiplies a weight's optional separate scale tensor ("blk.N.attn_q.scale" for
 * "blk.N.attn_q.weight", older bitnet files) into m's row scales. */
int br_shard_apply_scale_tensor(const struct br_gguf *g, const char *wname, struct br_tmat *m,
                                struct br_err *err);

/* "<dir>/rank-<rank>.gguf" into buf; BR_E_TOO_LONG when it does not fit. */
int br_shard_path(char *buf, size_t cap, const char *dir, int32_t rank, struct br_err *err);

/* 64-bit FNV-1a of n bytes, continuing from h (start with BR_SHARD_HASH_INIT). */
#define BR_SHARD_HASH_INIT 0xcbf29ce484222325ULL
uint64_t br_shard_hash(uint64_t h, const void *p, size_t n);

/* The source checksum of an open GGUF file: br_shard_hash over [0, data_offset). */
uint64_t br_shard_source_checksum(const struct br_gguf *g);

/* Reads the bitrack.shard.* keys. BR_E_NOTFOUND (with a message) when g is not a shard,
 * BR_E_FORMAT when a key is malformed. */
int br_shard_read_info(const struct br_gguf *g, struct br_shard_info *out, struct br_err *err);

/* Opens DIR/rank-<rank>.gguf of a tp x pp sharding and checks it: present, a shard, made
 * for this tp, pp and rank, its part the one br_plan_create gives for the configuration
 * (so the layout rules agree), and every other rank file present in DIR from the same
 * source (checksum and size) and layout; files absent from DIR are not required (nodes
 * may hold only their own). On success *g owns the file, *cfg is the full model's
 * configuration (as br_config_from_gguf reads it from the source) and *info the keys.
 * Every refusal is BR_E_MISMATCH (or the reader's error) with a message naming the file. */
int br_shard_open(const char *dir, int32_t tp, int32_t pp, int32_t rank, struct br_gguf **g,
                  struct br_model_config *cfg, struct br_shard_info *info, struct br_err *err);

/* Where a shard's data comes from. The default (a NULL br_shard_data) reads the source
 * GGUF file; `bitrack synth --rank` generates the same values instead. */
struct br_shard_data {
    void *ctx;
    /* Rows [r0, r1) x columns [c0, c1) of ternary layer tensor w, final scales; *out is
     * initialized by the callee (br_tmat_init) and freed by the caller. */
    int (*ternary)(void *ctx, int layer, enum br_wname w, int32_t r0, int32_t r1, int32_t c0,
                   int32_t c1, struct br_tmat *out, struct br_err *err);
    /* Whether rows [r0, r1) of that tensor share one final scale (decides .rowscale). */
    int (*uniform)(void *ctx, int layer, enum br_wname w, int32_t r0, int32_t r1, bool *uniform,
                   struct br_err *err);
    /* Elements [c0, c1) of a norm tensor (by name) of n elements into out (c1 - c0,). */
    int (*norm)(void *ctx, const char *name, int64_t n, int64_t c0, int64_t c1, float *out,
                struct br_err *err);
    /* Rows [r0, r0 + nrows) of the embedding (head = 0) or the head (head = 1), whole rows
     * encoded as in the source (cfg->embd_type / head_type); *rows stays valid until the
     * next call. */
    int (*dense_rows)(void *ctx, int head, int64_t r0, int64_t nrows, const void **rows,
                      struct br_err *err);
};

/* Writes rank `rank`'s shard of `plan` to path. src is the source's header (metadata and
 * tensor infos; with data == NULL also its data), cfg its configuration (br_config_from_gguf).
 * prog may be NULL; it advances by one per tensor written. */
int br_shard_write_rank(const struct br_gguf *src, const struct br_model_config *cfg,
                        const struct br_shard_data *data, const struct br_plan *plan, int32_t rank,
                        const char *path, struct br_progress *prog, struct br_err *err);

/* Tensors a rank's shard holds (for progress totals). */
uint64_t br_shard_tensor_count(const struct br_model_config *cfg, const struct br_part *p);

/* `bitrack shard`: writes DIR/rank-<R>.gguf for every rank of the tp x pp plan of the
 * model file, streaming tensor by tensor. DIR must exist. */
int br_shard_model(const char *model_path, int32_t tp, int32_t pp, const char *dir,
                   struct br_err *err);
/* The same with the head's rows re-encoded as head_type (F32, F16 or Q8_0; 0 or the source's
 * type: unchanged), e.g. `bitrack shard --head-type q8_0` of an F16-head file: the shards'
 * output.weight and bitrack.shard.head_type then say Q8_0. For a tied head only the head
 * rows change; token_embd keeps the source's type. */
int br_shard_model_head(const char *model_path, int32_t tp, int32_t pp, uint32_t head_type,
                        const char *dir, struct br_err *err);

#endif
