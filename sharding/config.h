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

/* The layer tensors and everything the code decides per tensor, one row each (the one
 * place to change when a tensor is added):
 *   NAME   enum br_wname value BR_W_<NAME>
 *   field  its short name: worker/model.h's struct br_layer_weights member holding it
 *   suffix its GGUF name is "blk.<layer>.<suffix>"
 *   kind   a norm vector (float), a sub-norm (a norm present only in models with
 *          sub-norms) or a ternary BitLinear projection
 *   cols, rows  its shape ne = {cols, rows} as model sizes (enum br_wdim)
 *   split  the axis tensor parallelism cuts: a rank keeps the range of that axis its part
 *          owns (br_shard_slice), the other axis whole.
 * Every tensor of a layer lives on the pipeline stage that holds the layer. */
/* clang-format off */
#define BR_WNAMES(X)                                                                      \
  /*  NAME           field          suffix                  kind     cols  rows  split */ \
    X(ATTN_NORM,     attn_norm,     "attn_norm.weight",     NORM,    EMBD, ONE,  COLS)    \
    X(Q,             q,             "attn_q.weight",        TERNARY, EMBD, Q,    ROWS)    \
    X(K,             k,             "attn_k.weight",        TERNARY, EMBD, K,    ROWS)    \
    X(V,             v,             "attn_v.weight",        TERNARY, EMBD, V,    ROWS)    \
    X(ATTN_SUB_NORM, attn_sub_norm, "attn_sub_norm.weight", SUBNORM, O,    ONE,  COLS)    \
    X(O,             o,             "attn_output.weight",   TERNARY, O,    EMBD, COLS)    \
    X(FFN_NORM,      ffn_norm,      "ffn_norm.weight",      NORM,    EMBD, ONE,  COLS)    \
    X(GATE,          gate,          "ffn_gate.weight",      TERNARY, EMBD, FF,   ROWS)    \
    X(UP,            up,            "ffn_up.weight",        TERNARY, EMBD, FF,   ROWS)    \
    X(FFN_SUB_NORM,  ffn_sub_norm,  "ffn_sub_norm.weight",  SUBNORM, FF,   ONE,  COLS)    \
    X(DOWN,          down,          "ffn_down.weight",      TERNARY, FF,   EMBD, COLS)
/* clang-format on */

enum br_wname {
#define BR_WNAME_ENUM(NAME, field, suffix, kind, cols, rows, split) BR_W_##NAME,
    BR_WNAMES(BR_WNAME_ENUM)
#undef BR_WNAME_ENUM
        BR_W_COUNT
};

enum br_wkind { BR_WKIND_NORM, BR_WKIND_SUBNORM, BR_WKIND_TERNARY };

/* The model sizes a layer tensor's axes are made of (br_config_dim), and what a TP part
 * owns of each (sharding/shard.c). */
enum br_wdim {
    BR_WDIM_ONE,  /* 1: the rows of a norm; never split */
    BR_WDIM_EMBD, /* n_embd; a part owns residual columns [d0, d1) */
    BR_WDIM_Q,    /* n_head * head_dim; its query heads' */
    BR_WDIM_K,    /* n_head_kv * head_dim; its KV heads' */
    BR_WDIM_V,    /* n_head_kv * head_dim_v; its KV heads' */
    BR_WDIM_O,    /* n_head * head_dim_v (attention output); its query heads' */
    BR_WDIM_FF,   /* n_ff; FFN rows [ff0, ff1) */
};

enum br_wsplit { BR_WSPLIT_ROWS, BR_WSPLIT_COLS };

struct br_wtraits {
    const char *suffix; /* e.g. "attn_q.weight" */
    enum br_wkind kind;
    enum br_wdim cols, rows;
    enum br_wsplit split;
};
extern const struct br_wtraits br_wtraits[BR_W_COUNT];

const char *br_wname_suffix(enum br_wname w); /* e.g. "attn_q.weight" */
/* Writes "blk.<layer>.<suffix>" into buf (64 bytes). */
void br_layer_tensor_name(char *buf, int layer, enum br_wname w);
bool br_wname_is_ternary(enum br_wname w);
bool br_wname_is_subnorm(enum br_wname w);

/* The size `dim` stands for in this model. */
int64_t br_config_dim(const struct br_model_config *c, enum br_wdim dim);
/* Expected ne = {cols, rows} (rows = 1 for norms) of a layer tensor. */
void br_config_wshape(const struct br_model_config *c, enum br_wname w, int64_t *cols,
                      int64_t *rows);

int br_config_from_gguf(const struct br_gguf *g, struct br_model_config *c, struct br_err *err);

/* The metadata part of br_config_from_gguf alone: n_vocab, the tensor types and tied_head
 * stay zero, for files whose tensors are not the model's (shard files, sharding/shard.h). */
int br_config_from_meta(const struct br_gguf *g, struct br_model_config *c, struct br_err *err);

const char *br_arch_name(enum br_arch a);

#endif
