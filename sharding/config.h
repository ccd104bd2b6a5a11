/*
 * Model configuration from GGUF metadata (docs/FORMATS.md §4-5) for the architectures
 * `bitnet-b1.58` (also `bitnet-25`), `bitnet` and `llama` (ternary variants).
 *
 * br_config_from_gguf reads every hyper-parameter and checks it against the tensor
 * shapes, so that later code can index tensors without re-checking: a missing tensor, an
 * unknown architecture or an inconsistent shape is an error naming it.
 */
#ifndef BR_SHARDING_CONFIG_H
#define BR_SHARDING_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "sharding/gguf.h"

enum br_arch { BR_ARCH_BITNET_B158 = 0, BR_ARCH_BITNET = 1, BR_ARCH_LLAMA = 2 };
enum br_act { BR_ACT_RELU2 = 0, BR_ACT_SILU = 1 };

struct br_model_config {
    enum br_arch arch;
    char arch_name[32]; /* as in the file (metadata keys use it as prefix) */
    char name[128];     /* general.name, or "" */
    uint32_t file_type;
    int32_t n_vocab, n_ctx, n_embd, n_layer, n_ff;
    int32_t n_head, n_head_kv, head_dim, head_dim_v, n_rot;
    float rope_base, rope_scale; /* positions are divided by rope_scale (linear) */
    float eps;
    bool rope_neox;
    enum br_act act;
    bool has_subnorm;
    bool tied_head;                /* no output.weight: the head is token_embd */
    uint32_t embd_type, head_type; /* ggml types of token_embd and the head */
    uint32_t weight_type;          /* ggml type of blk.0.attn_q.weight */
};

/* Tensor names: "blk.%d.<suffix>" for layer tensors. */
enum br_wname {
    BR_W_ATTN_NORM,
    BR_W_Q,
    BR_W_K,
    BR_W_V,
    BR_W_ATTN_SUB_NORM,
    BR_W_O,
    BR_W_FFN_NORM,
    BR_W_GATE,
    BR_W_UP,
    BR_W_FFN_SUB_NORM,
    BR_W_DOWN,
    BR_W_COUNT
};
const char *br_wname_suffix(enum br_wname w); /* e.g. "attn_q.weight" */
/* Writes "blk.<layer>.<suffix>" into buf (64 bytes). */
void br_layer_tensor_name(char *buf, int layer, enum br_wname w);
bool br_wname_is_ternary(enum br_wname w);
bool br_wname_is_subnorm(enum br_wname w);

/* Expected ne = {cols, rows} (rows = 1 for norms) of a layer tensor. */
void br_config_wshape(const struct br_model_config *c, enum br_wname w, int64_t *cols,
                      int64_t *rows);

int br_config_from_gguf(const struct br_gguf *g, struct br_model_config *c, struct br_err *err);

/* The metadata part of br_config_from_gguf alone: n_vocab, the tensor types and tied_head
 * stay zero, for files whose tensors are not the model's (shard files, sharding/shard.h). */
int br_config_from_meta(const struct br_gguf *g, struct br_model_config *c, struct br_err *err);

const char *br_arch_name(enum br_arch a);

#endif
