/*
 * Model configuration: reads <arch>.* metadata (docs/FORMATS.md §5), fills defaults the way
 * the reference implementations do (key_length = embedding_length / head_count,
 * rope.dimension_count = key_length, head tied when output.weight is absent), then checks
 * every layer tensor's presence and shape.
 */
#include "sharding/config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sharding/types.h"

const struct br_wtraits br_wtraits[BR_W_COUNT] = {
#define BR_WTRAITS_ROW(NAME, field, suffix_, kind_, cols_, rows_, split_)                          \
    [BR_W_##NAME] = {.suffix = suffix_,                                                            \
                     .kind = BR_WKIND_##kind_,                                                     \
                     .cols = BR_WDIM_##cols_,                                                      \
                     .rows = BR_WDIM_##rows_,                                                      \
                     .split = BR_WSPLIT_##split_},
    BR_WNAMES(BR_WTRAITS_ROW)
#undef BR_WTRAITS_ROW
};

const char *br_wname_suffix(enum br_wname w)
{
    return br_wtraits[w].suffix;
}

void br_layer_tensor_name(char *buf, int layer, enum br_wname w)
{
    snprintf(buf, 64, "blk.%d.%s", layer, br_wtraits[w].suffix);
}

bool br_wname_is_ternary(enum br_wname w)
{
    return br_wtraits[w].kind == BR_WKIND_TERNARY;
}

bool br_wname_is_subnorm(enum br_wname w)
{
    return br_wtraits[w].kind == BR_WKIND_SUBNORM;
}

const char *br_arch_name(enum br_arch a)
{
    switch (a) {
    case BR_ARCH_BITNET_B158:
        return "bitnet-b1.58";
    case BR_ARCH_BITNET:
        return "bitnet";
    case BR_ARCH_LLAMA:
        return "llama";
    }
    return "?";
}

int64_t br_config_dim(const struct br_model_config *c, enum br_wdim dim)
{
    switch (dim) {
    case BR_WDIM_ONE:
        return 1;
    case BR_WDIM_EMBD:
        return c->n_embd;
    case BR_WDIM_Q:
        return (int64_t)c->n_head * c->head_dim;
    case BR_WDIM_K:
        return (int64_t)c->n_head_kv * c->head_dim;
    case BR_WDIM_V:
        return (int64_t)c->n_head_kv * c->head_dim_v;
    case BR_WDIM_O:
        return (int64_t)c->n_head * c->head_dim_v;
    case BR_WDIM_FF:
        return c->n_ff;
    }
    return 0;
}

void br_config_wshape(const struct br_model_config *c, enum br_wname w, int64_t *cols,
                      int64_t *rows)
{
    *cols = br_config_dim(c, br_wtraits[w].cols);
    *rows = br_config_dim(c, br_wtraits[w].rows);
}

/* Reads an integer key "<arch>.<suffix>", in 1..max; a required key must exist, an optional
 * one that is absent leaves *out (its default) as it is. */
static int get_int(const struct br_gguf *g, const char *arch, const char *suffix, bool required,
                   int64_t max, int32_t *out, struct br_err *err)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    int rc = br_gguf_get_i64(g, key, &v, err);
    if (rc == BR_E_NOTFOUND)
        return required ? br_err_set(err, BR_E_FORMAT, "missing metadata key %s", key) : BR_OK;
    if (rc) return rc;
    if (v < 1 || v > max)
        return br_err_set(err, BR_E_FORMAT, "%s = %lld is out of range 1..%lld", key, (long long)v,
                          (long long)max);
    *out = (int32_t)v;
    return BR_OK;
}

/* Reads an optional float key "<arch>.<suffix>", finite; absent, *out keeps its default. */
static int get_float(const struct br_gguf *g, const char *arch, const char *suffix, float *out,
                     struct br_err *err)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = br_gguf_get_f32(g, key, out, err);
    if (rc == BR_OK && !isfinite(*out))
        return br_err_set(err, BR_E_FORMAT, "%s is not finite", key);
    return rc == BR_E_NOTFOUND ? BR_OK : rc;
}

static int check_tensor(const struct br_gguf *g, const char *name, int64_t cols, int64_t rows,
                        struct br_err *err)
{
    const struct br_gguf_tensor *t = br_gguf_find_tensor(g, name);
    if (!t) return br_err_set(err, BR_E_FORMAT, "missing tensor %s", name);
    bool ok =
        t->ne[0] == (uint64_t)cols && t->ne[1] == (uint64_t)rows && t->ne[2] == 1 && t->ne[3] == 1;
    if (!ok)
        return br_err_set(err, BR_E_FORMAT,
                          "tensor %s has shape {%llu, %llu, %llu, %llu}, expected {%lld, %lld}",
                          name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                          (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                          (long long)cols, (long long)rows);
    return BR_OK;
}

int br_config_from_meta(const struct br_gguf *g, struct br_model_config *c, struct br_err *err)
{
    memset(c, 0, sizeof *c);
    int rc = br_gguf_get_str(g, "general.architecture", c->arch_name, sizeof c->arch_name, err);
    if (rc == BR_E_NOTFOUND)
        return br_err_set(err, BR_E_FORMAT, "missing metadata key general.architecture");
    if (rc) return rc;
    const char *a = c->arch_name;
    if (!strcmp(a, "bitnet-b1.58") || !strcmp(a, "bitnet-25")) {
        c->arch = BR_ARCH_BITNET_B158;
        c->act = BR_ACT_RELU2;
        c->has_subnorm = true;
        c->rope_neox = true;
    } else if (!strcmp(a, "bitnet")) {
        c->arch = BR_ARCH_BITNET;
        c->act = BR_ACT_SILU;
        c->has_subnorm = true;
        c->rope_neox = true;
    } else if (!strcmp(a, "llama")) {
        c->arch = BR_ARCH_LLAMA;
        c->act = BR_ACT_SILU;
        c->has_subnorm = false;
        c->rope_neox = false;
    } else {
        return br_err_set(err, BR_E_UNSUPPORTED,
                          "unknown architecture '%s' (supported: bitnet-b1.58, bitnet-25, "
                          "bitnet, llama)",
                          a);
    }
    if (br_gguf_get_str(g, "general.name", c->name, sizeof c->name, NULL) != BR_OK)
        c->name[0] = '\0';
    uint32_t ft = 0;
    if (br_gguf_get_u32(g, "general.file_type", &ft, NULL) == BR_OK) c->file_type = ft;

    const int64_t big = (int64_t)1 << 24;
    if ((rc = get_int(g, a, "embedding_length", true, big, &c->n_embd, err)) ||
        (rc = get_int(g, a, "block_count", true, 4096, &c->n_layer, err)) ||
        (rc = get_int(g, a, "feed_forward_length", true, big, &c->n_ff, err)) ||
        (rc = get_int(g, a, "attention.head_count", true, 65536, &c->n_head, err)))
        return rc;
    c->n_ctx = 4096;
    if ((rc = get_int(g, a, "context_length", false, (int64_t)1 << 22, &c->n_ctx, err))) return rc;
    c->n_head_kv = c->n_head;
    if ((rc = get_int(g, a, "attention.head_count_kv", false, 65536, &c->n_head_kv, err)))
        return rc;
    if (c->n_embd % c->n_head != 0)
        return br_err_set(err, BR_E_FORMAT,
                          "%s.embedding_length %d is not a multiple of "
                          "head_count %d",
                          a, c->n_embd, c->n_head);
    c->head_dim = c->n_embd / c->n_head;
    if ((rc = get_int(g, a, "attention.key_length", false, 65536, &c->head_dim, err))) return rc;
    c->head_dim_v = c->head_dim;
    if ((rc = get_int(g, a, "attention.value_length", false, 65536, &c->head_dim_v, err)))
        return rc;
    if (c->head_dim > 512 || c->head_dim_v > 512)
        return br_err_set(err, BR_E_UNSUPPORTED, "head dimension %d/%d is above the supported 512",
                          c->head_dim, c->head_dim_v);
    if (c->n_head % c->n_head_kv != 0)
        return br_err_set(err, BR_E_FORMAT, "head_count %d is not a multiple of head_count_kv %d",
                          c->n_head, c->n_head_kv);
    c->n_rot = c->head_dim;
    if ((rc = get_int(g, a, "rope.dimension_count", false, 65536, &c->n_rot, err))) return rc;
    if (c->n_rot > c->head_dim || c->n_rot % 2)
        return br_err_set(err, BR_E_FORMAT,
                          "rope.dimension_count %d must be even and at most "
                          "the head dimension %d",
                          c->n_rot, c->head_dim);
    c->rope_base = 10000.0f;
    if ((rc = get_float(g, a, "rope.freq_base", &c->rope_base, err))) return rc;
    c->rope_scale = 1.0f;
    char key[160], stype[32];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (br_gguf_get_str(g, key, stype, sizeof stype, NULL) == BR_OK && strcmp(stype, "none")) {
        if (strcmp(stype, "linear"))
            return br_err_set(err, BR_E_UNSUPPORTED, "%s '%s' is not supported (linear, none)", key,
                              stype);
        float f = 1.0f;
        if ((rc = get_float(g, a, "rope.scaling.factor", &f, err))) return rc;
        if (f <= 0.0f) return br_err_set(err, BR_E_FORMAT, "rope.scaling.factor must be > 0");
        /* refused rather than ignored: positions would be wrong, silently */
        if (f != 1.0f)
            return br_err_set(err, BR_E_UNSUPPORTED,
                              "linear RoPE scaling (factor %g) is not supported yet", f);
        c->rope_scale = f;
    }
    c->eps = 1e-5f;
    if ((rc = get_float(g, a, "attention.layer_norm_rms_epsilon", &c->eps, err))) return rc;
    if (!(c->eps > 0.0f)) return br_err_set(err, BR_E_FORMAT, "rms epsilon must be > 0");
    snprintf(key, sizeof key, "%s.hidden_activation", a);
    char act[32];
    if (br_gguf_get_str(g, key, act, sizeof act, NULL) == BR_OK) {
        if (!strcmp(act, "relu2") || !strcmp(act, "relu_sqr") || !strcmp(act, "relu_squared"))
            c->act = BR_ACT_RELU2;
        else if (!strcmp(act, "silu") || !strcmp(act, "swish"))
            c->act = BR_ACT_SILU;
        else
            return br_err_set(err, BR_E_UNSUPPORTED, "%s '%s' is not supported (relu2, silu)", key,
                              act);
    }
    return BR_OK;
}

int br_config_from_gguf(const struct br_gguf *g, struct br_model_config *c, struct br_err *err)
{
    int rc = br_config_from_meta(g, c, err);
    if (rc) return rc;
    const char *a = c->arch_name;
    const int64_t big = (int64_t)1 << 24;

    /* Tensors: embedding, then every layer, then output norm and head. */
    const struct br_gguf_tensor *emb = br_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return br_err_set(err, BR_E_FORMAT, "missing tensor token_embd.weight");
    if (emb->n_dims != 2 || emb->ne[0] != (uint64_t)c->n_embd || emb->ne[1] > (uint64_t)big * 4)
        return br_err_set(
            err, BR_E_FORMAT, "tensor token_embd.weight has ne {%llu, %llu}, expected {%d, vocab}",
            (unsigned long long)emb->ne[0], (unsigned long long)emb->ne[1], c->n_embd);
    c->n_vocab = (int32_t)emb->ne[1];
    c->embd_type = emb->type;
    int32_t vocab_kv = 0;
    if ((rc = get_int(g, a, "vocab_size", false, (int64_t)1 << 26, &vocab_kv, err))) return rc;
    if (vocab_kv && vocab_kv != c->n_vocab) /* 0: the key is absent (get_int takes 1 up) */
        return br_err_set(err, BR_E_FORMAT, "%s.vocab_size %d disagrees with token_embd's %d rows",
                          a, vocab_kv, c->n_vocab);
    for (int l = 0; l < c->n_layer; l++) {
        for (int w = 0; w < BR_W_COUNT; w++) {
            if (br_wname_is_subnorm((enum br_wname)w) && !c->has_subnorm) continue;
            char name[64];
            int64_t cols, rows;
            br_layer_tensor_name(name, l, (enum br_wname)w);
            br_config_wshape(c, (enum br_wname)w, &cols, &rows);
            if ((rc = check_tensor(g, name, cols, rows, err))) return rc;
            if (l == 0 && w == BR_W_Q) c->weight_type = br_gguf_find_tensor(g, name)->type;
        }
    }
    if ((rc = check_tensor(g, "output_norm.weight", c->n_embd, 1, err))) return rc;
    const struct br_gguf_tensor *out = br_gguf_find_tensor(g, "output.weight");
    c->tied_head = out == NULL;
    if (out) {
        if ((rc = check_tensor(g, "output.weight", c->n_embd, c->n_vocab, err))) return rc;
        c->head_type = out->type;
    } else {
        c->head_type = emb->type;
    }
    return BR_OK;
}
