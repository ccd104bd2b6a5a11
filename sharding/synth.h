/*
 * Synthetic models with the exact tensor names, shapes, types and metadata keys of real
 * ones (presets below), random ternary weights, and a byte-level BPE vocabulary that
 * needs no external files.
 *
 * Every value is a pure function of (seed, tensor name, row), so any rank's slice can be
 * regenerated without the rest of the model, and one seed gives the same model whatever
 * the storage type: the per-tensor scale is rounded to f16 so that I2_S, TQ1_0, TQ2_0 and
 * F16 files of one seed decode to identical weights.
 *
 * Scales keep activations in a realistic range: a projection's scale is 1/sqrt(2K/3)
 * (K inputs, two thirds of weights nonzero), so each BitLinear maps a unit-RMS normalized
 * input to a roughly unit-RMS output; embeddings and the head are drawn with standard
 * deviation 3/sqrt(d) so logits have a spread of a few units. The engine's per-layer
 * residual RMS (bitrack run -v) shows the result; a unit test bounds it for every arch.
 */
#ifndef BR_SHARDING_SYNTH_H
#define BR_SHARDING_SYNTH_H

#include <stdint.h>

#include "bitrack/status.h"
#include "sharding/config.h"

struct br_synth_opts {
    const char *preset;   /* tiny, 2b-4t, large, llama3-8b, 100b */
    uint32_t weight_type; /* ggml type of projections: I2_S, TQ2_0, TQ1_0, F16 */
    uint32_t head_type;   /* for untied heads: F16 (default) or Q8_0; 0 = preset's */
    uint64_t seed;
    /* Overrides (0 or NULL: the preset's value). */
    const char *arch;
    int32_t n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
    int tied; /* -1: preset's choice, 0: separate output.weight, 1: tied */
};

/* Fills the defaults: preset "tiny", I2_S, seed 1, no overrides. */
void br_synth_opts_default(struct br_synth_opts *o);

/* Names of the presets, NULL-terminated. */
extern const char *const br_synth_presets[];

/* The shapes (struct br_model_config) the model o describes would have, without writing
 * it: what a plan of it needs. */
int br_synth_shape(const struct br_synth_opts *o, struct br_model_config *out, struct br_err *err);

/* Writes the model to path, with a progress bar on a terminal. */
int br_synth_write(const struct br_synth_opts *o, const char *path, struct br_err *err);

/* Writes only rank `rank`'s shard file, DIR/rank-<rank>.gguf, of the tp x pp sharding of
 * the model o describes (sharding/shard.h), generating just that rank's values: byte for
 * byte what `bitrack shard` cuts from the whole file br_synth_write writes, source checksum
 * and size included. The whole model never exists: its header goes to a temporary sparse
 * file DIR/.rank-<rank>.source.gguf (the header followed by a hole as long as the data,
 * so it takes the header's size on disk), read back like a source and removed. */
int br_synth_write_shard(const struct br_synth_opts *o, int32_t tp, int32_t pp, int32_t rank,
                         const char *dir, struct br_err *err);

#endif
