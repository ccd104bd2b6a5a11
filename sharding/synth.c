/*
 * `bitrack synth`: synthetic models (see synth.h for the invariants).
 *
 * Randomness: a SplitMix64 stream keyed by hash(seed, tensor name) and the row index, so
 * rows are independent. Weights: each in {-1, 0, +1}, zero with probability 1/3.
 */
#include "sharding/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/fp.h"
#include "bitrack/progress.h"
#include "kernels/ternary.h"
#include "sharding/config.h"
#include "sharding/decode.h"
#include "sharding/gguf.h"
#include "sharding/types.h"

struct preset {
    const char *name, *arch, *model_name;
    int32_t n_embd, n_layer, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
    float rope_base, eps;
    int tied;
};

static const struct preset presets[] = {
    {"tiny", "bitnet-b1.58", "synthetic tiny", 256, 2, 512, 4, 2, 512, 512, 500000.0f, 1e-5f, 1},
    {"2b-4t", "bitnet-b1.58", "synthetic bitnet-b1.58-2B-4T", 2560, 30, 6912, 20, 5, 128256,
     4096, 500000.0f, 1e-5f, 1},
    {"large", "bitnet", "synthetic bitnet_b1_58-large", 1536, 24, 4096, 16, 16, 32002, 2048,
     10000.0f, 1e-5f, 1},
    {"llama3-8b", "llama", "synthetic Llama3-8B-1.58", 4096, 32, 14336, 32, 8, 128256, 8192,
     500000.0f, 1e-5f, 0},
    {"100b", "bitnet", "synthetic bitnet 100B", 8192, 72, 45568, 64, 64, 32002, 2048, 10000.0f,
     1e-5f, 1},
};

const char *const br_synth_presets[] = {"tiny", "2b-4t", "large", "llama3-8b", "100b", NULL};

void br_synth_opts_default(struct br_synth_opts *o)
{
    memset(o, 0, sizeof *o);
    o->preset = "tiny";
    o->weight_type = BR_GGML_I2_S;
    o->seed = 1;
    o->tied = -1;
}

/* ---- randomness ---- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t hash_name(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    uint64_t s = h;
    return splitmix(&s);
}

static uint64_t row_state(uint64_t tensor_key, int64_t row)
{
    uint64_t s = tensor_key ^ ((uint64_t)row * 0xd1b54a32d192ed03ULL);
    splitmix(&s);
    return s;
}

/* Uniform in [-1, 1). */
static float uniform_pm1(uint64_t *s)
{
    return (float)((double)(splitmix(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

/* Ternary row: weight = (r % 3) - 1 for a 32-bit piece r of the stream. */
static void ternary_row(uint64_t tensor_key, int64_t row, struct br_tmat *m, int32_t mrow)
{
    uint64_t s = row_state(tensor_key, row);
    for (int32_t k = 0; k < m->cols; k += 2) {
        uint64_t r = splitmix(&s);
        br_tmat_set(m, mrow, k, (int)((uint32_t)r % 3u) - 1);
        if (k + 1 < m->cols) br_tmat_set(m, mrow, k + 1, (int)((uint32_t)(r >> 32) % 3u) - 1);
    }
}

/* ---- vocabulary: GPT-2 byte-level tokens, generated merges, special tokens ---- */

/* The byte -> code point map of byte-level BPE vocabularies. */
static uint32_t byte_to_cp(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
        return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256u + (uint32_t)n;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2; /* byte-level code points are below 0x800 */
}

struct vocab {
    char **tokens;
    int32_t *types;
    char **merges;
    int32_t n_tokens, n_merges;
    int32_t bos, eos, eot;
};

static void vocab_free(struct vocab *v)
{
    if (v->tokens)
        for (int32_t i = 0; i < v->n_tokens; i++) free(v->tokens[i]);
    if (v->merges)
        for (int32_t i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->types);
    free(v->merges);
    memset(v, 0, sizeof *v);
}

static char *dup_cat(const char *a, const char *sep, const char *b)
{
    size_t la = strlen(a), ls = strlen(sep), lb = strlen(b);
    char *s = malloc(la + ls + lb + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, sep, ls);
    memcpy(s + la + ls, b, lb + 1);
    return s;
}

static const char *const llama3_specials[] = {
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
};

static int vocab_build(int32_t n_vocab, struct vocab *v, struct br_err *err)
{
    memset(v, 0, sizeof *v);
    int llama3 = n_vocab >= 128256;
    int32_t n_special = llama3 ? 256 : 3;
    int32_t n_normal = n_vocab - n_special;
    if (n_normal < 256)
        return br_err_set(err, BR_E_INVALID, "vocabulary of %d is too small (at least %d)",
                          n_vocab, 256 + n_special);
    v->n_tokens = n_vocab;
    v->tokens = calloc((size_t)n_vocab, sizeof *v->tokens);
    v->types = calloc((size_t)n_vocab, sizeof *v->types);
    v->merges = calloc((size_t)(n_normal - 256 + 1), sizeof *v->merges);
    if (!v->tokens || !v->types || !v->merges) goto nomem;
    for (int b = 0; b < 256; b++) {
        char buf[4];
        size_t n = put_utf8(buf, byte_to_cp(b));
        buf[n] = '\0';
        if (!(v->tokens[b] = strdup(buf))) goto nomem;
        v->types[b] = 1;
    }
    /* Merges, in rank order: (space|letter) + letter, then those + letter, ... Every new
     * token is the concatenation of an earlier token and a single-letter token. */
    const char *letters = "etaoinshrdlucmfwypvbgkjqxz";
    int32_t id = 256, level_start = 256, level_end;
    /* level 1: first symbol is a space (as byte-level text shows it) or a letter */
    char firsts[28][4];
    int nf = 0;
    size_t sl = put_utf8(firsts[nf], byte_to_cp(' '));
    firsts[nf++][sl] = '\0';
    for (const char *p = letters; *p; p++) firsts[nf][0] = *p, firsts[nf++][1] = '\0';
    for (int a = 0; a < nf && id < n_normal; a++)
        for (const char *p = letters; *p && id < n_normal; p++) {
            char b[2] = {*p, 0};
            if (!(v->tokens[id] = dup_cat(firsts[a], "", b))) goto nomem;
            if (!(v->merges[v->n_merges++] = dup_cat(firsts[a], " ", b))) goto nomem;
            v->types[id++] = 1;
        }
    level_end = id;
    while (id < n_normal && level_end > level_start) {
        int32_t next_start = id;
        for (int32_t t = level_start; t < level_end && id < n_normal; t++)
            for (const char *p = letters; *p && id < n_normal; p++) {
                char b[2] = {*p, 0};
                if (!(v->tokens[id] = dup_cat(v->tokens[t], "", b))) goto nomem;
                if (!(v->merges[v->n_merges++] = dup_cat(v->tokens[t], " ", b))) goto nomem;
                v->types[id++] = 1;
            }
        level_start = next_start;
        level_end = id;
    }
    for (int32_t i = 0; i < n_special; i++) {
        char buf[64];
        const char *name;
        if (llama3 && i < (int32_t)(sizeof llama3_specials / sizeof *llama3_specials))
            name = llama3_specials[i];
        else if (llama3)
            snprintf(buf, sizeof buf, "<|reserved_special_token_%d|>", i - 8), name = buf;
        else
            name = i == 0 ? "<|begin_of_text|>" : i == 1 ? "<|end_of_text|>" : "<|eot_id|>";
        if (!(v->tokens[n_normal + i] = strdup(name))) goto nomem;
        v->types[n_normal + i] = 3;
    }
    v->bos = n_normal;
    v->eos = n_normal + 1;
    v->eot = llama3 ? n_normal + 9 : n_normal + 2;
    return BR_OK;
nomem:
    vocab_free(v);
    return br_err_set(err, BR_E_NOMEM, "out of memory building the vocabulary");
}

/* ---- the writer ---- */

struct shape {
    const char *arch;
    enum br_arch arch_id;
    struct br_model_config c;
    int tied;
};

static int resolve(const struct br_synth_opts *o, struct shape *s, const struct preset **pp,
                   struct br_err *err)
{
    const struct preset *p = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
        if (!strcmp(presets[i].name, o->preset)) p = &presets[i];
    if (!p)
        return br_err_set(err, BR_E_INVALID,
                          "unknown preset '%s' (tiny, 2b-4t, large, llama3-8b, 100b)", o->preset);
    *pp = p;
    memset(s, 0, sizeof *s);
    s->arch = o->arch ? o->arch : p->arch;
    if (!strcmp(s->arch, "bitnet-b1.58") || !strcmp(s->arch, "bitnet-25"))
        s->arch_id = BR_ARCH_BITNET_B158;
    else if (!strcmp(s->arch, "bitnet"))
        s->arch_id = BR_ARCH_BITNET;
    else if (!strcmp(s->arch, "llama"))
        s->arch_id = BR_ARCH_LLAMA;
    else
        return br_err_set(err, BR_E_INVALID, "unknown architecture '%s' (bitnet-b1.58, bitnet, "
                          "llama)", s->arch);
    struct br_model_config *c = &s->c;
    c->arch = s->arch_id;
    c->n_embd = o->n_embd ? o->n_embd : p->n_embd;
    c->n_layer = o->n_layer ? o->n_layer : p->n_layer;
    c->n_ff = o->n_ff ? o->n_ff : p->n_ff;
    c->n_head = o->n_head ? o->n_head : p->n_head;
    c->n_head_kv = o->n_head_kv ? o->n_head_kv : (o->n_head ? o->n_head : p->n_head_kv);
    c->n_vocab = o->n_vocab ? o->n_vocab : p->n_vocab;
    c->n_ctx = o->n_ctx ? o->n_ctx : p->n_ctx;
    c->rope_base = p->rope_base;
    c->eps = p->eps;
    c->has_subnorm = s->arch_id != BR_ARCH_LLAMA;
    s->tied = o->tied >= 0 ? o->tied : p->tied;
    if (c->n_embd <= 0 || c->n_layer <= 0 || c->n_ff <= 0 || c->n_head <= 0 ||
        c->n_head_kv <= 0 || c->n_ctx <= 0 || c->n_embd % c->n_head || c->n_head % c->n_head_kv)
        return br_err_set(err, BR_E_INVALID, "inconsistent shape: embd %d, heads %d/%d, ff %d, "
                          "layers %d", c->n_embd, c->n_head, c->n_head_kv, c->n_ff, c->n_layer);
    c->head_dim = c->head_dim_v = c->n_embd / c->n_head;
    if (c->head_dim % 2) return br_err_set(err, BR_E_INVALID, "head dimension must be even");
    return BR_OK;
}

/* File type codes as the converters write them. */
static uint32_t file_type_of(uint32_t wt)
{
    switch (wt) {
    case BR_GGML_I2_S: return 40;
    case BR_GGML_TQ1_0: return 36;
    case BR_GGML_TQ2_0: return 37;
    case BR_GGML_F16: return 1;
    case BR_GGML_BF16: return 32;
    default: return 0;
    }
}

static float f16_round(float x)
{
    return br_f16_to_f32(br_f32_to_f16(x));
}

/* Writes one ternary projection, rows in chunks. */
static int write_ternary(struct br_gguf_writer *w, uint64_t key, uint32_t type, int32_t rows,
                         int32_t cols, float scale, struct br_progress *prog, struct br_err *err)
{
    int32_t chunk = (int32_t)((16u << 20) / ((size_t)br_tmat_blocks(cols) * 32));
    if (chunk < 1) chunk = 1;
    if (chunk > rows) chunk = rows;
    struct br_tmat m;
    int rc = br_tmat_init(&m, chunk, cols);
    if (rc) return br_err_set(err, rc, "out of memory");
    uint64_t cap = type == BR_GGML_I2_S ? m.row_bytes * (uint64_t)chunk
                                        : br_encode_ternary_size(type, chunk, cols);
    void *buf = type == BR_GGML_I2_S ? NULL : malloc(cap ? cap : 1);
    if (type != BR_GGML_I2_S && (!buf || !cap)) {
        br_tmat_free(&m);
        free(buf);
        return br_err_set(err, cap ? BR_E_NOMEM : BR_E_INVALID,
                          "cannot encode %d x %d weights as %s", rows, cols,
                          br_ggml_type_name(type));
    }
    for (int32_t r = 0; r < rows && !rc; r += chunk) {
        int32_t n = rows - r < chunk ? rows - r : chunk;
        m.rows = n;
        for (int32_t i = 0; i < n; i++) {
            ternary_row(key, r + i, &m, i);
            m.scale[i] = scale;
        }
        if (type == BR_GGML_I2_S) {
            rc = br_gguf_writer_write(w, m.codes, m.row_bytes * (size_t)n, err);
        } else {
            rc = br_encode_ternary(type, &m, 0, n, buf, err);
            if (!rc)
                rc = br_gguf_writer_write(w, buf, br_encode_ternary_size(type, n, cols), err);
        }
        br_progress_add(prog, (uint64_t)n * (uint64_t)cols);
    }
    if (!rc && type == BR_GGML_I2_S) {
        uint8_t tail[BR_I2S_TAIL] = {0};
        memcpy(tail, &scale, 4);
        rc = br_gguf_writer_write(w, tail, sizeof tail, err);
    }
    m.rows = chunk;
    br_tmat_free(&m);
    free(buf);
    return rc;
}

/* Writes a float tensor (rows, cols) of values from gen in `type`, in row chunks. */
static int write_dense(struct br_gguf_writer *w, uint64_t key, uint32_t type, int64_t rows,
                       int64_t cols, float base, float spread, struct br_progress *prog,
                       struct br_err *err)
{
    int64_t chunk = (int64_t)((4u << 20) / (size_t)cols);
    if (chunk < 1) chunk = 1;
    if (chunk > rows) chunk = rows;
    float *x = malloc((size_t)(chunk * cols) * sizeof *x);
    uint64_t cap = br_encode_rows_size(type, (uint64_t)cols, (uint64_t)chunk);
    void *buf = malloc(cap ? cap : 1);
    int rc = BR_OK;
    if (!x || !buf || !cap) rc = br_err_set(err, BR_E_NOMEM, "out of memory or bad type");
    for (int64_t r = 0; r < rows && !rc; r += chunk) {
        int64_t n = rows - r < chunk ? rows - r : chunk;
        for (int64_t i = 0; i < n; i++) {
            uint64_t s = row_state(key, r + i);
            for (int64_t k = 0; k < cols; k++) x[i * cols + k] = base + spread * uniform_pm1(&s);
        }
        rc = br_encode_rows_f32(type, x, (uint64_t)cols, (uint64_t)n, buf, err);
        if (!rc)
            rc = br_gguf_writer_write(w, buf, br_encode_rows_size(type, (uint64_t)cols, (uint64_t)n),
                                      err);
        br_progress_add(prog, (uint64_t)(n * cols));
    }
    free(x);
    free(buf);
    return rc;
}

static int set_meta(struct br_gguf_writer *w, const struct shape *s, const struct preset *p,
                    const struct br_synth_opts *o, const struct vocab *v)
{
    const struct br_model_config *c = &s->c;
    char key[128];
    int rc = 0;
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", s->arch, suffix), key)
    rc |= br_gguf_writer_set_str(w, "general.architecture", s->arch);
    rc |= br_gguf_writer_set_str(w, "general.name", p->model_name);
    rc |= br_gguf_writer_set_u32(w, "general.file_type", file_type_of(o->weight_type));
    rc |= br_gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)c->n_vocab);
    rc |= br_gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)c->n_ctx);
    rc |= br_gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)c->n_embd);
    rc |= br_gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)c->n_layer);
    rc |= br_gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)c->n_ff);
    rc |= br_gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim);
    rc |= br_gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)c->n_head);
    rc |= br_gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_head_kv);
    rc |= br_gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->eps);
    rc |= br_gguf_writer_set_f32(w, KEY("rope.freq_base"), c->rope_base);
    rc |= br_gguf_writer_set_u32(w, "general.quantization_version", 2);
    rc |= br_gguf_writer_set_u64(w, "general.seed", o->seed);
    rc |= br_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    /* The official 2B-4T file has no tokenizer.ggml.pre; keep that for its preset. */
    if (strcmp(p->name, "2b-4t")) rc |= br_gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    rc |= br_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens,
                                     NULL, (uint64_t)v->n_tokens);
    rc |= br_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", BR_GGUF_I32, v->types,
                                 (uint64_t)v->n_tokens);
    rc |= br_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                                     NULL, (uint64_t)v->n_merges);
    rc |= br_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    rc |= br_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
    rc |= br_gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)v->eot);
    rc |= br_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
#undef KEY
    return rc ? BR_E_NOMEM : BR_OK;
}

int br_synth_write(const struct br_synth_opts *o, const char *path, struct br_err *err)
{
    struct shape s;
    const struct preset *p = NULL;
    int rc = resolve(o, &s, &p, err);
    if (rc) return rc;
    const struct br_model_config *c = &s.c;
    uint32_t wt = o->weight_type;
    if (wt != BR_GGML_I2_S && wt != BR_GGML_TQ1_0 && wt != BR_GGML_TQ2_0 && wt != BR_GGML_F16)
        return br_err_set(err, BR_E_INVALID, "weight type %s is not one of i2_s, tq2_0, tq1_0, f16",
                          br_ggml_type_name(wt) ? br_ggml_type_name(wt) : "?");
    uint32_t head_type = o->head_type ? o->head_type : BR_GGML_F16;
    struct vocab v;
    if ((rc = vocab_build(c->n_vocab, &v, err))) return rc;
    struct br_gguf_writer *w = NULL;
    if ((rc = br_gguf_writer_create(&w))) {
        vocab_free(&v);
        return br_err_set(err, rc, "out of memory");
    }
    if ((rc = set_meta(w, &s, p, o, &v))) {
        br_err_set(err, rc, "building metadata");
        goto done;
    }
    /* declare tensors in the order of the official files */
    uint64_t ne[2];
    uint64_t total = 0;
    ne[0] = (uint64_t)c->n_embd, ne[1] = (uint64_t)c->n_vocab;
    if ((rc = br_gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, BR_GGML_F16, err))) goto done;
    total += ne[0] * ne[1];
    for (int l = 0; l < c->n_layer; l++)
        for (int wi = 0; wi < BR_W_COUNT; wi++) {
            if (br_wname_is_subnorm((enum br_wname)wi) && !c->has_subnorm) continue;
            char name[64];
            int64_t cols, rows;
            br_layer_tensor_name(name, l, (enum br_wname)wi);
            br_config_wshape(c, (enum br_wname)wi, &cols, &rows);
            ne[0] = (uint64_t)cols, ne[1] = (uint64_t)rows;
            bool tern = br_wname_is_ternary((enum br_wname)wi);
            if ((rc = br_gguf_writer_add_tensor(w, name, tern ? 2 : 1, ne,
                                                tern ? wt : BR_GGML_F32, err)))
                goto done;
            total += (uint64_t)(cols * rows);
        }
    ne[0] = (uint64_t)c->n_embd;
    if ((rc = br_gguf_writer_add_tensor(w, "output_norm.weight", 1, ne, BR_GGML_F32, err))) goto done;
    if (!s.tied) {
        ne[1] = (uint64_t)c->n_vocab;
        if ((rc = br_gguf_writer_add_tensor(w, "output.weight", 2, ne, head_type, err))) goto done;
        total += ne[0] * ne[1];
    }
    if ((rc = br_gguf_writer_begin(w, path, err))) goto done;

    struct br_progress prog;
    br_progress_begin(&prog, "synth", total);
    float emb_spread = 3.0f / sqrtf((float)c->n_embd) * sqrtf(3.0f); /* uniform: std = a/sqrt3 */
    rc = write_dense(w, hash_name(o->seed, "token_embd.weight"), BR_GGML_F16, c->n_vocab,
                     c->n_embd, 0.0f, emb_spread, &prog, err);
    for (int l = 0; l < c->n_layer && !rc; l++)
        for (int wi = 0; wi < BR_W_COUNT && !rc; wi++) {
            if (br_wname_is_subnorm((enum br_wname)wi) && !c->has_subnorm) continue;
            char name[64];
            int64_t cols, rows;
            br_layer_tensor_name(name, l, (enum br_wname)wi);
            br_config_wshape(c, (enum br_wname)wi, &cols, &rows);
            uint64_t key = hash_name(o->seed, name);
            if (br_wname_is_ternary((enum br_wname)wi)) {
                uint64_t ks = key ^ 0x5ca1e;
                float jitter = 1.0f + 0.1f * uniform_pm1(&ks);
                float scale = f16_round(jitter / sqrtf(2.0f * (float)cols / 3.0f));
                rc = write_ternary(w, key, wt, (int32_t)rows, (int32_t)cols, scale, &prog, err);
            } else {
                rc = write_dense(w, key, BR_GGML_F32, 1, cols, 1.0f, 0.1f, &prog, err);
            }
        }
    if (!rc)
        rc = write_dense(w, hash_name(o->seed, "output_norm.weight"), BR_GGML_F32, 1, c->n_embd,
                         1.0f, 0.1f, &prog, err);
    if (!rc && !s.tied)
        rc = write_dense(w, hash_name(o->seed, "output.weight"), head_type, c->n_vocab, c->n_embd,
                         0.0f, emb_spread, &prog, err);
    br_progress_end(&prog);
    if (!rc) rc = br_gguf_writer_finish(w, err);
done:
    br_gguf_writer_destroy(&w);
    vocab_free(&v);
    if (rc) remove(path);
    return rc;
}
