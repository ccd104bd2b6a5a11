/*
 * `bitrack synth`: synthetic models (see synth.h for the invariants).
 *
 * Randomness: a SplitMix64 stream keyed by hash(seed, tensor name) and the row index, so
 * rows are independent. Weights: each in {-1, 0, +1}, zero with probability 1/3.
 */
#include "sharding/synth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitrack/fp.h"
#include "bitrack/progress.h"
#include "kernels/ternary.h"
#include "sharding/config.h"
#include "sharding/decode.h"
#include "sharding/gguf.h"
#include "sharding/plan.h"
#include "sharding/shard.h"
#include "sharding/types.h"

struct preset {
    const char *name, *arch, *model_name;
    int32_t n_embd, n_layer, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
    float rope_base, eps;
    int tied;
};

static const struct preset presets[] = {
    {"tiny", "bitnet-b1.58", "synthetic tiny", 256, 2, 512, 4, 2, 512, 512, 500000.0f, 1e-5f, 1},
    {"2b-4t", "bitnet-b1.58", "synthetic bitnet-b1.58-2B-4T", 2560, 30, 6912, 20, 5, 128256, 4096,
     500000.0f, 1e-5f, 1},
    {"large", "bitnet", "synthetic bitnet_b1_58-large", 1536, 24, 4096, 16, 16, 32002, 2048,
     10000.0f, 1e-5f, 1},
    {"3b", "bitnet", "synthetic bitnet_b1_58-3B", 3200, 26, 8640, 32, 32, 32002, 2048, 10000.0f,
     1e-5f, 1},
    {"llama3-8b", "llama", "synthetic Llama3-8B-1.58", 4096, 32, 14336, 32, 8, 128256, 8192,
     500000.0f, 1e-5f, 0},
    {"100b", "bitnet", "synthetic bitnet 100B", 8192, 72, 45568, 64, 64, 32002, 2048, 10000.0f,
     1e-5f, 1},
};

const char *const br_synth_presets[] = {"tiny", "2b-4t", "large", "3b", "llama3-8b", "100b", NULL};

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

/* SplitMix64 advances its state by a constant per draw, so a stream can start at any
 * draw: this is what lets one rank generate its columns of a row without the others. */
static void splitmix_skip(uint64_t *s, uint64_t draws)
{
    *s += draws * 0x9e3779b97f4a7c15ULL;
}

/* Columns [c0, c1) of a ternary row into row mrow of m (whose columns are c - c0): column
 * k is weight (r % 3) - 1 for the low (k even) or high (k odd) 32 bits of draw k / 2.
 * Codes are packed a whole 128-column block at a time (kernels/ternary.h layout). */
static void ternary_cols(uint64_t tensor_key, int64_t row, int32_t c0, int32_t c1,
                         struct br_tmat *m, int32_t mrow)
{
    uint64_t s = row_state(tensor_key, row);
    splitmix_skip(&s, (uint64_t)(c0 / 2));
    uint8_t *out = m->codes + (size_t)mrow * m->row_bytes;
    uint8_t codes[BR_TMAT_BLOCK];
    uint64_t r = 0;
    int32_t k = c0;
    if (k % 2) r = splitmix(&s); /* an odd start takes the high half of its draw first */
    for (int32_t b = 0; b < m->blocks; b++) {
        int32_t n = c1 - k < BR_TMAT_BLOCK ? c1 - k : BR_TMAT_BLOCK;
        for (int32_t i = 0; i < n; i++, k++) {
            uint32_t half;
            if (k % 2 == 0) {
                r = splitmix(&s);
                half = (uint32_t)r;
            } else {
                half = (uint32_t)(r >> 32);
            }
            codes[i] = (uint8_t)(half % 3u);
        }
        for (int32_t i = n; i < BR_TMAT_BLOCK; i++) codes[i] = 1; /* padding: weight 0 */
        for (int p = 0; p < 32; p++)
            out[b * BR_TMAT_BLOCK_BYTES + p] =
                (uint8_t)(codes[p] << 6 | codes[p + 32] << 4 | codes[p + 64] << 2 | codes[p + 96]);
    }
}

static void ternary_row(uint64_t tensor_key, int64_t row, struct br_tmat *m, int32_t mrow)
{
    ternary_cols(tensor_key, row, 0, m->cols, m, mrow);
}

/* One value of a dense tensor (embeddings, head, norms). */
static float dense_value(float base, float spread, uint64_t *s)
{
    return base + spread * uniform_pm1(s);
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
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
};

static int vocab_build(int32_t n_vocab, struct vocab *v, struct br_err *err)
{
    memset(v, 0, sizeof *v);
    int llama3 = n_vocab >= 128256;
    int32_t n_special = llama3 ? 256 : 3;
    int32_t n_normal = n_vocab - n_special;
    if (n_normal < 256)
        return br_err_set(err, BR_E_INVALID, "vocabulary of %d is too small (at least %d)", n_vocab,
                          256 + n_special);
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
                          "unknown preset '%s' (tiny, 2b-4t, large, 3b, llama3-8b, 100b)",
                          o->preset);
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
        return br_err_set(err, BR_E_INVALID,
                          "unknown architecture '%s' (bitnet-b1.58, bitnet, "
                          "llama)",
                          s->arch);
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
    if (c->n_embd <= 0 || c->n_layer <= 0 || c->n_ff <= 0 || c->n_head <= 0 || c->n_head_kv <= 0 ||
        c->n_ctx <= 0 || c->n_embd % c->n_head || c->n_head % c->n_head_kv)
        return br_err_set(err, BR_E_INVALID,
                          "inconsistent shape: embd %d, heads %d/%d, ff %d, "
                          "layers %d",
                          c->n_embd, c->n_head, c->n_head_kv, c->n_ff, c->n_layer);
    c->head_dim = c->head_dim_v = c->n_embd / c->n_head;
    if (c->head_dim % 2) return br_err_set(err, BR_E_INVALID, "head dimension must be even");
    return BR_OK;
}

int br_synth_shape(const struct br_synth_opts *o, struct br_model_config *out, struct br_err *err)
{
    struct shape s;
    const struct preset *p;
    int rc = resolve(o, &s, &p, err);
    if (rc) return rc;
    *out = s.c;
    out->tied_head = s.tied;
    return BR_OK;
}

/* File type codes as the converters write them. */
static uint32_t file_type_of(uint32_t wt)
{
    switch (wt) {
    case BR_GGML_I2_S:
        return 40;
    case BR_GGML_TQ1_0:
        return 36;
    case BR_GGML_TQ2_0:
        return 37;
    case BR_GGML_F16:
        return 1;
    case BR_GGML_BF16:
        return 32;
    default:
        return 0;
    }
}

static float f16_round(float x)
{
    return br_f16_to_f32(br_f32_to_f16(x));
}

/* I2_S packs a tensor's weights as one flat run of 128-weight blocks (docs/FORMATS.md §2):
 * rows of a multiple of 128 weights are the canonical rows as they are; other rows (the
 * 3B shape's ffn_down) are packed here across row ends. pend holds the *npend codes of the
 * block being filled; returns the bytes of whole blocks written to out. */
static size_t i2s_pack_flat(const struct br_tmat *m, int32_t n, uint8_t *pend, int *npend,
                            uint8_t *out)
{
    size_t w = 0;
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *row = m->codes + (size_t)i * m->row_bytes;
        for (int32_t c = 0; c < m->cols; c++) {
            pend[(*npend)++] =
                (uint8_t)(row[c / 128 * 32 + c % 32] >> (6 - 2 * (c % 128 / 32)) & 3);
            if (*npend < BR_I2S_BLOCK) continue;
            for (int p = 0; p < 32; p++)
                out[w + (size_t)p] =
                    (uint8_t)(pend[p] << 6 | pend[p + 32] << 4 | pend[p + 64] << 2 | pend[p + 96]);
            w += 32;
            *npend = 0;
        }
    }
    return w;
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
    int flat = type == BR_GGML_I2_S && cols % BR_I2S_BLOCK != 0, npend = 0;
    uint8_t pend[BR_I2S_BLOCK];
    uint64_t cap = type == BR_GGML_I2_S ? m.row_bytes * (uint64_t)chunk + (flat ? 32 : 0)
                                        : br_encode_ternary_size(type, chunk, cols);
    void *buf = type == BR_GGML_I2_S && !flat ? NULL : malloc(cap ? cap : 1);
    if ((type != BR_GGML_I2_S || flat) && (!buf || !cap)) {
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
        if (flat) {
            rc = br_gguf_writer_write(w, buf, i2s_pack_flat(&m, n, pend, &npend, buf), err);
        } else if (type == BR_GGML_I2_S) {
            rc = br_gguf_writer_write(w, m.codes, m.row_bytes * (size_t)n, err);
        } else {
            rc = br_encode_ternary(type, &m, 0, n, buf, err);
            if (!rc) rc = br_gguf_writer_write(w, buf, br_encode_ternary_size(type, n, cols), err);
        }
        br_progress_add(prog, (uint64_t)n * (uint64_t)cols);
    }
    if (!rc && npend) /* add_tensor checked that the tensor is whole blocks */
        rc = br_err_set(err, BR_E_INVALID, "%d x %d weights are not whole I2_S blocks", rows, cols);
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
            for (int64_t k = 0; k < cols; k++) x[i * cols + k] = dense_value(base, spread, &s);
        }
        rc = br_encode_rows_f32(type, x, (uint64_t)cols, (uint64_t)n, buf, err);
        if (!rc)
            rc = br_gguf_writer_write(w, buf,
                                      br_encode_rows_size(type, (uint64_t)cols, (uint64_t)n), err);
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

/* Scale of a ternary projection: f16-rounded so that every storage type holds it exactly. */
static float ternary_scale(uint64_t key, int64_t cols)
{
    uint64_t ks = key ^ 0x5ca1e;
    float jitter = 1.0f + 0.1f * uniform_pm1(&ks);
    return f16_round(jitter / sqrtf(2.0f * (float)cols / 3.0f));
}

/* Standard deviation 3/sqrt(d) for a uniform draw: std = a / sqrt(3). */
static float embd_spread(const struct br_model_config *c)
{
    return 3.0f / sqrtf((float)c->n_embd) * sqrtf(3.0f);
}

/* A model being synthesized: its shape, vocabulary, and a writer holding its metadata and
 * tensor declarations (the header), shared by the whole-file and the per-rank paths so
 * both describe one source. */
struct synth_model {
    struct shape s;
    const struct preset *p;
    uint32_t wt, head_type, embd_type; /* a tied head is token_embd: it takes head_type */
    struct vocab v;
    struct br_gguf_writer *w;
    uint64_t total;      /* weights, for progress */
    uint64_t data_bytes; /* the data section's size, alignment padding included */
};

static void model_free(struct synth_model *sm)
{
    br_gguf_writer_destroy(&sm->w);
    vocab_free(&sm->v);
}

static int add_tensor(struct synth_model *sm, const char *name, uint32_t n_dims, const uint64_t *ne,
                      uint32_t type, struct br_err *err)
{
    int rc = br_gguf_writer_add_tensor(sm->w, name, n_dims, ne, type, err);
    uint64_t nb = 0;
    if (!rc && !br_ggml_type_nbytes(type, ne[0], ne[0] * (n_dims > 1 ? ne[1] : 1), &nb))
        rc = br_err_set(err, BR_E_INVALID, "tensor %s does not fit its type", name);
    sm->data_bytes += (nb + BR_GGUF_DEFAULT_ALIGNMENT - 1) / BR_GGUF_DEFAULT_ALIGNMENT *
                      BR_GGUF_DEFAULT_ALIGNMENT;
    return rc;
}

static int model_declare(const struct br_synth_opts *o, struct synth_model *sm, struct br_err *err)
{
    memset(sm, 0, sizeof *sm);
    int rc = resolve(o, &sm->s, &sm->p, err);
    if (rc) return rc;
    const struct br_model_config *c = &sm->s.c;
    sm->wt = o->weight_type;
    if (sm->wt != BR_GGML_I2_S && sm->wt != BR_GGML_TQ1_0 && sm->wt != BR_GGML_TQ2_0 &&
        sm->wt != BR_GGML_F16)
        return br_err_set(err, BR_E_INVALID, "weight type %s is not one of i2_s, tq2_0, tq1_0, f16",
                          br_ggml_type_name(sm->wt) ? br_ggml_type_name(sm->wt) : "?");
    sm->head_type = o->head_type ? o->head_type : BR_GGML_F16;
    if (sm->head_type != BR_GGML_F16 && sm->head_type != BR_GGML_BF16 &&
        sm->head_type != BR_GGML_Q8_0 && sm->head_type != BR_GGML_Q6_K)
        return br_err_set(err, BR_E_INVALID, "head type %s is not one of f16, bf16, q8_0, q6_k",
                          br_ggml_type_name(sm->head_type) ? br_ggml_type_name(sm->head_type)
                                                           : "?");
    if (sm->head_type == BR_GGML_Q6_K && c->n_embd % 256)
        return br_err_set(err, BR_E_INVALID,
                          "a q6_k head needs a width that is a multiple of 256 (%d)",
                          (int)c->n_embd);
    sm->embd_type = sm->s.tied ? sm->head_type : BR_GGML_F16;
    if ((rc = vocab_build(c->n_vocab, &sm->v, err))) return rc;
    if ((rc = br_gguf_writer_create(&sm->w))) {
        model_free(sm);
        return br_err_set(err, rc, "out of memory");
    }
    if ((rc = set_meta(sm->w, &sm->s, sm->p, o, &sm->v))) {
        br_err_set(err, rc, "building metadata");
        goto fail;
    }
    /* declare tensors in the order of the official files */
    uint64_t ne[2];
    ne[0] = (uint64_t)c->n_embd, ne[1] = (uint64_t)c->n_vocab;
    if ((rc = add_tensor(sm, "token_embd.weight", 2, ne, sm->embd_type, err))) goto fail;
    sm->total += ne[0] * ne[1];
    for (int l = 0; l < c->n_layer; l++)
        for (int wi = 0; wi < BR_W_COUNT; wi++) {
            if (br_wname_is_subnorm((enum br_wname)wi) && !c->has_subnorm) continue;
            char name[64];
            int64_t cols, rows;
            br_layer_tensor_name(name, l, (enum br_wname)wi);
            br_config_wshape(c, (enum br_wname)wi, &cols, &rows);
            ne[0] = (uint64_t)cols, ne[1] = (uint64_t)rows;
            bool tern = br_wname_is_ternary((enum br_wname)wi);
            if ((rc = add_tensor(sm, name, tern ? 2 : 1, ne, tern ? sm->wt : BR_GGML_F32, err)))
                goto fail;
            sm->total += (uint64_t)(cols * rows);
        }
    ne[0] = (uint64_t)c->n_embd;
    if ((rc = add_tensor(sm, "output_norm.weight", 1, ne, BR_GGML_F32, err))) goto fail;
    if (!sm->s.tied) {
        ne[1] = (uint64_t)c->n_vocab;
        if ((rc = add_tensor(sm, "output.weight", 2, ne, sm->head_type, err))) goto fail;
        sm->total += ne[0] * ne[1];
    }
    return BR_OK;
fail:
    model_free(sm);
    return rc;
}

int br_synth_write(const struct br_synth_opts *o, const char *path, struct br_err *err)
{
    struct synth_model sm;
    int rc = model_declare(o, &sm, err);
    if (rc) return rc;
    const struct br_model_config *c = &sm.s.c;
    struct br_gguf_writer *w = sm.w;
    uint32_t wt = sm.wt;
    if ((rc = br_gguf_writer_begin(w, path, err))) goto done;

    struct br_progress prog;
    br_progress_begin(&prog, "synth", sm.total);
    float emb_spread = embd_spread(c);
    rc = write_dense(w, hash_name(o->seed, "token_embd.weight"), sm.embd_type, c->n_vocab,
                     c->n_embd, 0.0f, emb_spread, &prog, err);
    for (int l = 0; l < c->n_layer && !rc; l++)
        for (int wi = 0; wi < BR_W_COUNT && !rc; wi++) {
            if (br_wname_is_subnorm((enum br_wname)wi) && !c->has_subnorm) continue;
            char name[64];
            int64_t cols, rows;
            br_layer_tensor_name(name, l, (enum br_wname)wi);
            br_config_wshape(c, (enum br_wname)wi, &cols, &rows);
            uint64_t key = hash_name(o->seed, name);
            if (br_wname_is_ternary((enum br_wname)wi))
                rc = write_ternary(w, key, wt, (int32_t)rows, (int32_t)cols,
                                   ternary_scale(key, cols), &prog, err);
            else
                rc = write_dense(w, key, BR_GGML_F32, 1, cols, 1.0f, 0.1f, &prog, err);
        }
    if (!rc)
        rc = write_dense(w, hash_name(o->seed, "output_norm.weight"), BR_GGML_F32, 1, c->n_embd,
                         1.0f, 0.1f, &prog, err);
    if (!rc && !sm.s.tied)
        rc = write_dense(w, hash_name(o->seed, "output.weight"), sm.head_type, c->n_vocab,
                         c->n_embd, 0.0f, emb_spread, &prog, err);
    br_progress_end(&prog);
    if (!rc) rc = br_gguf_writer_finish(w, err);
done:
    model_free(&sm);
    if (rc) remove(path);
    return rc;
}

/* ---- one rank's shard, generated directly ---- */

struct rank_src {
    const struct br_synth_opts *o;
    const struct br_model_config *c; /* the source's, as read back from its header */
    int tied;
    uint32_t head_type, embd_type;
    float *x;    /* (rows, n_embd) scratch for dense rows */
    void *enc;   /* the same rows encoded */
    int64_t cap; /* rows both hold */
};

static int rank_ternary(void *ctx, int layer, enum br_wname w, int32_t r0, int32_t r1, int32_t c0,
                        int32_t c1, struct br_tmat *out, struct br_err *err)
{
    struct rank_src *rs = ctx;
    char name[64];
    int64_t cols, rows;
    br_layer_tensor_name(name, layer, w);
    br_config_wshape(rs->c, w, &cols, &rows);
    uint64_t key = hash_name(rs->o->seed, name);
    float scale = ternary_scale(key, cols);
    int rc = br_tmat_init(out, r1 - r0, c1 - c0);
    if (rc) return br_err_set(err, rc, "%s: cannot allocate %d x %d codes", name, r1 - r0, c1 - c0);
    for (int32_t r = r0; r < r1; r++) {
        ternary_cols(key, r, c0, c1, out, r - r0);
        out->scale[r - r0] = scale;
    }
    return BR_OK;
}

static int rank_uniform(void *ctx, int layer, enum br_wname w, int32_t r0, int32_t r1,
                        bool *uniform, struct br_err *err)
{
    (void)ctx, (void)layer, (void)w, (void)r0, (void)r1, (void)err;
    *uniform = true; /* one scale per tensor, whatever the storage type */
    return BR_OK;
}

static int rank_norm(void *ctx, const char *name, int64_t n, int64_t c0, int64_t c1, float *out,
                     struct br_err *err)
{
    struct rank_src *rs = ctx;
    (void)n, (void)err;
    uint64_t s = row_state(hash_name(rs->o->seed, name), 0);
    splitmix_skip(&s, (uint64_t)c0); /* one draw per element */
    for (int64_t i = 0; i < c1 - c0; i++) out[i] = dense_value(1.0f, 0.1f, &s);
    return BR_OK;
}

static int rank_dense_rows(void *ctx, int head, int64_t r0, int64_t nrows, const void **rows,
                           struct br_err *err)
{
    struct rank_src *rs = ctx;
    const struct br_model_config *c = rs->c;
    int own_head = head && !rs->tied;
    uint32_t type = own_head ? rs->head_type : rs->embd_type;
    if (nrows > rs->cap) {
        free(rs->x);
        free(rs->enc);
        rs->x = malloc((size_t)nrows * (size_t)c->n_embd * sizeof *rs->x);
        rs->enc =
            malloc((size_t)br_encode_rows_size(BR_GGML_F32, (uint64_t)c->n_embd, (uint64_t)nrows));
        rs->cap = rs->x && rs->enc ? nrows : 0;
        if (!rs->cap)
            return br_err_set(err, BR_E_NOMEM, "out of memory for %lld rows", (long long)nrows);
    }
    uint64_t key = hash_name(rs->o->seed, own_head ? "output.weight" : "token_embd.weight");
    float spread = embd_spread(c);
    for (int64_t i = 0; i < nrows; i++) {
        uint64_t s = row_state(key, r0 + i);
        for (int64_t k = 0; k < c->n_embd; k++)
            rs->x[i * c->n_embd + k] = dense_value(0.0f, spread, &s);
    }
    int rc = br_encode_rows_f32(type, rs->x, (uint64_t)c->n_embd, (uint64_t)nrows, rs->enc, err);
    *rows = rs->enc;
    return rc;
}

int br_synth_write_shard(const struct br_synth_opts *o, int32_t tp, int32_t pp, int32_t rank,
                         const char *dir, struct br_err *err)
{
    struct synth_model sm;
    int rc = model_declare(o, &sm, err);
    if (rc) return rc;
    char skel[4096], path[4096];
    struct br_gguf *g = NULL;
    struct br_plan *plan = NULL;
    struct br_model_config cfg;
    struct rank_src rs = {
        .o = o, .c = &cfg, .tied = sm.s.tied, .head_type = sm.head_type, .embd_type = sm.embd_type};
    int have_skel = 0;
    if ((rc = br_shard_path(path, sizeof path, dir, rank, err))) goto done;
    if (snprintf(skel, sizeof skel, "%s/.rank-%d.source.gguf", dir, (int)rank) >=
        (int)sizeof skel) {
        rc = br_err_set(err, BR_E_TOO_LONG, "directory name %s is too long", dir);
        goto done;
    }
    /* The source's header, exactly as br_synth_write would write it, followed by a hole as
     * long as its data: a sparse file the GGUF reader accepts, from which the source's
     * configuration, metadata, checksum and size are read as `bitrack shard` reads them. */
    if ((rc = br_gguf_writer_begin(sm.w, skel, err))) goto done;
    have_skel = 1;
    br_gguf_writer_destroy(&sm.w); /* closes the file: the header is complete */
    struct stat st;
    if (stat(skel, &st) != 0 || truncate(skel, st.st_size + (off_t)sm.data_bytes) != 0) {
        rc = br_err_set(err, BR_E_IO, "%s: %s", skel, strerror(errno));
        goto done;
    }
    if ((rc = br_gguf_open(skel, &g, err))) goto done;
    if ((rc = br_config_from_gguf(g, &cfg, err))) goto done;
    if ((rc = br_plan_create(&cfg, tp, pp, &plan, err))) goto done;
    if (rank < 0 || rank >= tp * pp) {
        rc = br_err_set(err, BR_E_INVALID, "rank %d is not in a %dx%d layout", rank, tp, pp);
        goto done;
    }
    const struct br_shard_data data = {&rs, rank_ternary, rank_uniform, rank_norm, rank_dense_rows};
    struct br_progress prog;
    br_progress_begin(&prog, "synth", br_shard_tensor_count(&cfg, &plan->parts[rank]));
    rc = br_shard_write_rank(g, &cfg, &data, plan, rank, path, &prog, err);
    br_progress_end(&prog);
done:
    br_plan_destroy(&plan);
    br_gguf_close(&g);
    if (have_skel) remove(skel);
    free(rs.x);
    free(rs.enc);
    model_free(&sm);
    return rc;
}
