/*
 * Model loading: validate the configuration against the file, decode every ternary
 * projection into the canonical packed layout (kernels/ternary.h), copy the norms, and
 * point the embedding and head at the mapping. Optional per-tensor scale tensors
 * (`blk.N.attn_q.scale`, older bitnet files) multiply the decoded row scales.
 */
#include "worker/model.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitrack/progress.h"
#include "kernels/bigmem.h"
#include "kernels/ops.h"
#include "sharding/decode.h"
#include "sharding/shard.h"
#include "sharding/types.h"

int br_dense_row(const struct br_dense *d, int64_t r, float *out, struct br_err *err)
{
    if (r < d->row0 || r >= d->row0 + d->rows)
        return br_err_set(err, BR_E_RANGE, "row %lld out of range", (long long)r);
    if (d->col0 == 0 && d->cols == d->full_cols)
        return br_decode_rows_f32(d->type, d->data, (uint64_t)d->cols, (uint64_t)(r - d->row0), 1,
                                  out, err);
    memset(out, 0, (size_t)d->full_cols * sizeof *out);
    return br_decode_rows_f32(d->type, d->data, (uint64_t)d->cols, (uint64_t)(r - d->row0), 1,
                              out + d->col0, err);
}

float br_dense_dot(const struct br_kernel_set *ks, const struct br_dense *d, int64_t r,
                   const float *x, float *scratch)
{
    assert(r >= d->row0 && r < d->row0 + d->rows && d->col0 == 0 && d->cols == d->full_cols);
    const uint8_t *row = d->data + (size_t)(r - d->row0) * d->row_bytes;
    switch (d->type) {
    case BR_GGML_F16:
        return ks->ternary->dot_f16_f32((const uint16_t *)(const void *)row, x, (size_t)d->cols);
    case BR_GGML_F32: {
        memcpy(scratch, row, (size_t)d->cols * sizeof(float)); /* the mapping may be unaligned */
        return ks->ternary->dot_f32(scratch, x, (size_t)d->cols);
    }
    default:
        if (br_decode_rows_f32(d->type, row, (uint64_t)d->cols, 0, 1, scratch, NULL) != BR_OK)
            return NAN;
        return ks->ternary->dot_f32(scratch, x, (size_t)d->cols);
    }
}

static int dense_from(const struct br_gguf_tensor *t, struct br_dense *d, struct br_err *err)
{
    if (!br_decode_rows_supported(t->type))
        return br_err_set(err, BR_E_UNSUPPORTED,
                          "tensor %s: type %s is not supported for embeddings/head (F32, F16, "
                          "BF16, Q8_0, Q6_K)",
                          t->name, br_ggml_type_name(t->type));
    d->type = t->type;
    d->data = t->data;
    d->cols = (int64_t)t->ne[0];
    d->rows = (int64_t)t->ne[1];
    uint64_t rb;
    br_ggml_type_nbytes(t->type, t->ne[0], t->ne[0], &rb);
    d->row_bytes = (size_t)rb;
    d->row0 = d->col0 = 0;
    d->full_cols = d->cols;
    return BR_OK;
}

/* Rows [v0, v1) of the head into m->head_q8: GGUF Q8_0 blocks are copied; other types are
 * decoded to float and quantized as ggml's reference quantizer does. */
static int head_to_q8(struct br_model *m, struct br_err *err)
{
    const struct br_dense *h = &m->head;
    int64_t v0 = m->part.v0, v1 = m->part.v1;
    if (v1 <= v0 || m->head_q8.rows) return BR_OK;
    if (h->cols % BR_Q8_BLOCK || h->cols != h->full_cols || v0 < h->row0 || v1 > h->row0 + h->rows)
        return br_err_set(err, BR_E_UNSUPPORTED,
                          "the head (%lld columns) cannot be held as Q8_0: the width must be a "
                          "multiple of %d",
                          (long long)h->full_cols, BR_Q8_BLOCK);
    int rc = br_q8mat_init(&m->head_q8, v1 - v0, (int32_t)h->cols);
    if (rc) return br_err_set(err, rc, "out of memory for the Q8_0 head");
    m->head_q8_row0 = v0;
    const uint8_t *src = h->data + (size_t)(v0 - h->row0) * h->row_bytes;
    if (h->type == BR_GGML_Q8_0) {
        br_q8mat_set_rows_ggml(&m->head_q8, 0, v1 - v0, src);
        return BR_OK;
    }
    enum { CHUNK = 64 }; /* rows decoded and quantized at a time */
    float *x = malloc((size_t)CHUNK * (size_t)h->cols * sizeof *x);
    uint8_t *blk = malloc((size_t)br_encode_rows_size(BR_GGML_Q8_0, (uint64_t)h->cols, CHUNK));
    if (!x || !blk) rc = br_err_set(err, BR_E_NOMEM, "out of memory quantizing the head");
    for (int64_t r = 0; r < v1 - v0 && !rc; r += CHUNK) {
        int64_t n = v1 - v0 - r < CHUNK ? v1 - v0 - r : CHUNK;
        rc = br_decode_rows_f32(h->type, src, (uint64_t)h->cols, (uint64_t)r, (uint64_t)n, x, err);
        if (!rc) rc = br_encode_rows_f32(BR_GGML_Q8_0, x, (uint64_t)h->cols, (uint64_t)n, blk, err);
        if (!rc) br_q8mat_set_rows_ggml(&m->head_q8, r, n, blk);
    }
    free(x);
    free(blk);
    if (rc) {
        br_q8mat_free(&m->head_q8);
        return rc;
    }
    if (m->head_own) { /* the Q8_0 rows replace the copy: back to the file's view */
        br_big_free(m->head_own, m->head_own_bytes);
        m->head_own = NULL;
        m->head = m->head_file;
    }
    return BR_OK;
}

int br_model_quantize_head(struct br_model *m, struct br_err *err)
{
    if (!m->part.last_stage) return BR_OK;
    return head_to_q8(m, err);
}

/* Rows [v0, v1) of the head re-encoded as Q6_K into memory of the model's own; m->head then
 * describes them (the embedding, tied or not, keeps its own view of the file). */
static int head_to_q6k(struct br_model *m, struct br_err *err)
{
    struct br_dense *h = &m->head;
    int64_t v0 = m->part.v0, v1 = m->part.v1;
    if (v1 <= v0 || h->type == BR_GGML_Q6_K) return BR_OK;
    if (m->head_q8.rows) return br_err_set(err, BR_E_INVALID, "the head is already held as Q8_0");
    if (h->cols % BR_QK_K || h->cols != h->full_cols || v0 < h->row0 || v1 > h->row0 + h->rows)
        return br_err_set(err, BR_E_UNSUPPORTED,
                          "the head (%lld columns) cannot be held as Q6_K: the width must be a "
                          "multiple of %d",
                          (long long)h->full_cols, BR_QK_K);
    uint64_t rb = br_encode_rows_size(BR_GGML_Q6_K, (uint64_t)h->cols, 1);
    size_t own_bytes = (size_t)rb * (size_t)(v1 - v0);
    uint8_t *own = br_big_alloc(own_bytes);
    enum { CHUNK = 64 }; /* rows decoded and encoded at a time */
    float *x = malloc((size_t)CHUNK * (size_t)h->cols * sizeof *x);
    int rc = own && x ? BR_OK : br_err_set(err, BR_E_NOMEM, "out of memory for the Q6_K head");
    const uint8_t *src = h->data + (size_t)(v0 - h->row0) * h->row_bytes;
    for (int64_t r = 0; r < v1 - v0 && !rc; r += CHUNK) {
        int64_t n = v1 - v0 - r < CHUNK ? v1 - v0 - r : CHUNK;
        rc = br_decode_rows_f32(h->type, src, (uint64_t)h->cols, (uint64_t)r, (uint64_t)n, x, err);
        if (!rc)
            rc = br_encode_rows_f32(BR_GGML_Q6_K, x, (uint64_t)h->cols, (uint64_t)n,
                                    own + (size_t)r * rb, err);
    }
    free(x);
    if (rc) {
        br_big_free(own, own_bytes);
        return rc;
    }
    if (!m->head_own) m->head_file = *h;
    br_big_free(m->head_own, m->head_own_bytes);
    m->head_own = own;
    m->head_own_bytes = own_bytes;
    h->type = BR_GGML_Q6_K;
    h->data = own;
    h->rows = v1 - v0;
    h->row0 = v0;
    h->row_bytes = (size_t)rb;
    return BR_OK;
}

int br_model_quantize_head_as(struct br_model *m, uint32_t type, struct br_err *err)
{
    if (!m->part.last_stage) return BR_OK;
    if (type == BR_GGML_Q8_0) return head_to_q8(m, err);
    if (type == BR_GGML_Q6_K) return head_to_q6k(m, err);
    return br_err_set(err, BR_E_INVALID, "a head can be quantized at load to q8_0 or q6_k");
}

/* Loads elements [e0, e1) of a 1-D (or 1 x n) float tensor of n elements. */
static int load_norm(const struct br_gguf *g, const char *name, int64_t n, int64_t e0, int64_t e1,
                     float **out, struct br_err *err)
{
    *out = malloc((size_t)(e1 - e0 > 0 ? e1 - e0 : 1) * sizeof **out);
    if (!*out) return br_err_set(err, BR_E_NOMEM, "out of memory for %s", name);
    return br_decode_norm(br_gguf_find_tensor(g, name), name, n, e0, e1, *out, err);
}

/* Where each layer tensor lives in struct br_layer_weights (sharding/config.h's table
 * names the member). */
static const size_t layer_field[BR_W_COUNT] = {
#define BR_LAYER_FIELD(NAME, field, suffix, kind, cols, rows, split)                               \
    [BR_W_##NAME] = offsetof(struct br_layer_weights, field),
    BR_WNAMES(BR_LAYER_FIELD)
#undef BR_LAYER_FIELD
};
/* ... and that member has the type the table's kind says. */
#define BR_LAYER_FIELD_TYPE(NAME, field, suffix, kind, cols, rows, split)                          \
    _Static_assert(_Generic(((struct br_layer_weights *)0)->field,                        \
                       struct br_tmat: BR_WKIND_##kind == BR_WKIND_TERNARY,               \
                       float *: BR_WKIND_##kind != BR_WKIND_TERNARY),                     \
                   "struct br_layer_weights." #field " does not hold a " #kind " tensor");
BR_WNAMES(BR_LAYER_FIELD_TYPE)
#undef BR_LAYER_FIELD_TYPE

/* The matrix of ternary tensor w, NULL for a norm. */
static struct br_tmat *layer_tmat(struct br_layer_weights *lw, enum br_wname w)
{
    if (!br_wname_is_ternary(w)) return NULL;
    return (struct br_tmat *)((char *)lw + layer_field[w]);
}

/* The vector of norm w, NULL for a ternary tensor. */
static float **layer_norm(struct br_layer_weights *lw, enum br_wname w)
{
    if (br_wname_is_ternary(w)) return NULL;
    return (float **)((char *)lw + layer_field[w]);
}

/* Allocates the layer table (n_layer entries, only the part's filled), sizes the region of
 * the part's layer matrices (struct br_model's wmem) from the slices the loaders decode,
 * and maps it. */
static int weights_region(struct br_model *m, struct br_err *err)
{
    const struct br_model_config *c = &m->cfg;
    const struct br_part *p = &m->part;
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return br_err_set(err, BR_E_NOMEM, "out of memory");
    size_t total = 0;
    for (int l = p->layer0; l < p->layer1; l++)
        for (int w = 0; w < BR_W_COUNT; w++) {
            int64_t r0, r1, c0, c1;
            if (!br_wname_is_ternary((enum br_wname)w)) continue;
            br_shard_slice(c, p, (enum br_wname)w, &r0, &r1, &c0, &c1);
            total += br_tmat_bytes((int32_t)(r1 - r0), (int32_t)(c1 - c0));
        }
    if (!total) return BR_OK;
    if (!(m->wmem = br_big_alloc(total)))
        return br_err_set(err, BR_E_NOMEM, "out of memory for %zu bytes of weights", total);
    m->wmem_bytes = total;
    return BR_OK;
}

/* The region's next rows x cols codes. */
static uint8_t *weights_next(struct br_model *m, int64_t rows, int64_t cols)
{
    size_t n = br_tmat_bytes((int32_t)rows, (int32_t)cols);
    if (n > m->wmem_bytes - m->wmem_used) return NULL; /* not sized for it: allocate */
    uint8_t *codes = m->wmem + m->wmem_used;
    m->wmem_used += n;
    return codes;
}

/* Hands back the pages wholly inside [p, p + n) of the mapping (see release_pages). */
static void release_range(const void *p, size_t n)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1);
    uintptr_t b = ((uintptr_t)p + (uintptr_t)n) & ~(pg - 1);
    if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Copies the head rows this part evaluates, [v0, v1), out of the mapping into huge-page
 * memory (kernels/bigmem.h): after the layers, the head is the largest matrix a token
 * streams (a third of 2B-4T's bytes), and a file mapping is held in 4 KiB pages. The
 * file's pages are handed back as the copy goes, so it costs no memory. Heads re-encoded later
 * (head_to_q8, head_to_q6k) replace it. */
static int head_to_own(struct br_model *m, struct br_err *err)
{
    struct br_dense *h = &m->head;
    int64_t v0 = m->part.v0, v1 = m->part.v1;
    if (!m->part.last_stage || v1 <= v0 || m->head_q8.rows || m->head_own) return BR_OK;
    if (h->cols != h->full_cols || v0 < h->row0 || v1 > h->row0 + h->rows) return BR_OK;
    size_t n = (size_t)(v1 - v0) * h->row_bytes;
    uint8_t *own = br_big_alloc(n);
    if (!own) return br_err_set(err, BR_E_NOMEM, "out of memory for %zu bytes of the head", n);
    const uint8_t *src = h->data + (size_t)(v0 - h->row0) * h->row_bytes;
    enum { CHUNK = 32 << 20 }; /* handed back as it goes: the peak stays one chunk above */
    for (size_t at = 0; at < n; at += CHUNK) {
        size_t len = n - at < CHUNK ? n - at : CHUNK;
        memcpy(own + at, src + at, len);
        release_range(src + at, len);
    }
    m->head_file = *h;
    m->head_own = own;
    m->head_own_bytes = n;
    h->data = own;
    h->rows = v1 - v0;
    h->row0 = v0;
    return BR_OK;
}

/* The file's copy of a ternary tensor is not read again once decoded: hand its pages back
 * (only pages wholly inside the tensor), so that a rank's peak memory is its decoded
 * weights plus the tensor in hand, not the decoded weights plus the whole mapped file. */
static void release_pages(const struct br_gguf_tensor *t)
{
    release_range(t->data, (size_t)t->nbytes);
}

int br_model_load_part(const char *path, const struct br_part *part, struct br_model **out,
                       struct br_err *err)
{
    *out = NULL;
    struct br_model *m = calloc(1, sizeof *m);
    if (!m) return br_err_set(err, BR_E_NOMEM, "out of memory");
    int rc = br_gguf_open(path, &m->gguf, err);
    if (rc) goto fail;
    if ((rc = br_config_from_gguf(m->gguf, &m->cfg, err))) {
        br_err_prefix(err, rc, "%s", path);
        goto fail;
    }
    const struct br_model_config *c = &m->cfg;
    const struct br_gguf *g = m->gguf;
    if (part) {
        m->part = *part;
        if (part->layer1 > c->n_layer || part->d1 > c->n_embd || part->kv1 > c->n_head_kv ||
            part->ff1 > c->n_ff || part->v1 > c->n_vocab) {
            rc = br_err_set(err, BR_E_MISMATCH, "%s: the plan does not fit this model", path);
            goto fail;
        }
    } else {
        br_part_whole(c, &m->part);
    }
    const struct br_part *p = &m->part;
    if ((rc = dense_from(br_gguf_find_tensor(g, "token_embd.weight"), &m->embd, err))) goto fail;
    if ((rc = dense_from(
             br_gguf_find_tensor(g, c->tied_head ? "token_embd.weight" : "output.weight"), &m->head,
             err)))
        goto fail;
    if (p->last_stage &&
        (rc = load_norm(g, "output_norm.weight", c->n_embd, p->d0, p->d1, &m->output_norm, err)))
        goto fail;
    if (p->last_stage && m->head.type == BR_GGML_Q8_0 && (rc = head_to_q8(m, err))) goto fail;
    if ((rc = weights_region(m, err))) goto fail;
    struct br_progress prog;
    br_progress_begin(&prog, "loading", (uint64_t)(p->layer1 - p->layer0));
    for (int l = p->layer0; l < p->layer1; l++) {
        struct br_layer_weights *lw = &m->layers[l];
        for (int w = 0; w < BR_W_COUNT; w++) {
            char name[64];
            int64_t cols, rows, r0, r1, c0, c1;
            if (br_wname_is_subnorm((enum br_wname)w) && !c->has_subnorm) continue;
            br_layer_tensor_name(name, l, (enum br_wname)w);
            br_config_wshape(c, (enum br_wname)w, &cols, &rows);
            br_shard_slice(c, p, (enum br_wname)w, &r0, &r1, &c0, &c1);
            const struct br_gguf_tensor *t = br_gguf_find_tensor(g, name);
            if (br_wname_is_ternary((enum br_wname)w)) {
                struct br_tmat *tm = layer_tmat(lw, (enum br_wname)w);
                rc = br_decode_ternary_in(t, (int32_t)r0, (int32_t)r1, (int32_t)c0, (int32_t)c1,
                                          weights_next(m, r1 - r0, c1 - c0), tm, err);
                if (!rc) release_pages(t);
                if (!rc) rc = br_shard_apply_scale_tensor(g, name, tm, err);
                if (!rc) rc = br_tmat_prepare(tm);
                if (rc) goto fail_prog;
                m->ternary_bytes += tm->row_bytes * (size_t)tm->rows;
            } else {
                rc = load_norm(g, name, cols, c0, c1, layer_norm(lw, (enum br_wname)w), err);
                if (rc) goto fail_prog;
            }
        }
        br_progress_add(&prog, 1);
    }
    br_progress_end(&prog);
    if ((rc = head_to_own(m, err))) goto fail;
    *out = m;
    return BR_OK;
fail_prog:
    br_progress_end(&prog);
    br_err_prefix(err, rc, "%s", path);
fail:
    br_model_destroy(&m);
    return rc;
}

int br_model_load(const char *path, struct br_model **out, struct br_err *err)
{
    return br_model_load_part(path, NULL, out, err);
}

/* A shard's window of the embedding or the head (sharding/shard.h): tensor `name`, rows x
 * cols in `type` (or F32, the fallback for block types cut off their block boundaries),
 * placed at (row0, col0) of a matrix full_cols wide. */
static int dense_window(const struct br_gguf *g, const char *name, uint32_t type, int64_t rows,
                        int64_t cols, int64_t row0, int64_t col0, int64_t full_cols,
                        struct br_dense *d, struct br_err *err)
{
    const struct br_gguf_tensor *t = br_gguf_find_tensor(g, name);
    if (!t) return br_err_set(err, BR_E_FORMAT, "missing tensor %s", name);
    if ((t->type != type && t->type != BR_GGML_F32) || t->n_dims != 2 ||
        t->ne[0] != (uint64_t)cols || t->ne[1] != (uint64_t)rows)
        return br_err_set(err, BR_E_FORMAT,
                          "tensor %s is %s {%llu, %llu}, expected %s {%lld, %lld}", name,
                          br_ggml_type_name(t->type) ? br_ggml_type_name(t->type) : "?",
                          (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                          br_ggml_type_name(type) ? br_ggml_type_name(type) : "?", (long long)cols,
                          (long long)rows);
    int rc = dense_from(t, d, err);
    if (rc) return rc;
    d->row0 = row0, d->col0 = col0, d->full_cols = full_cols;
    return BR_OK;
}

/* A shard's ternary slice: I2_S, rows x round_up(cols, 128), canonical already; an optional
 * F32 "<blk.N.x>.rowscale" replaces the tail scale row by row. */
static int load_shard_ternary(const struct br_gguf *g, const char *name, int64_t rows, int64_t cols,
                              uint8_t *codes, struct br_tmat *tm, struct br_err *err)
{
    const struct br_gguf_tensor *t = br_gguf_find_tensor(g, name);
    if (!t) return br_err_set(err, BR_E_FORMAT, "missing tensor %s", name);
    uint64_t padded = (uint64_t)br_tmat_blocks((int32_t)cols) * BR_TMAT_BLOCK;
    if (t->type != BR_GGML_I2_S || t->n_dims != 2 || t->ne[0] != padded ||
        t->ne[1] != (uint64_t)rows)
        return br_err_set(err, BR_E_FORMAT,
                          "tensor %s is %s {%llu, %llu}, expected I2_S {%llu, %lld}", name,
                          br_ggml_type_name(t->type) ? br_ggml_type_name(t->type) : "?",
                          (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                          (unsigned long long)padded, (long long)rows);
    int rc = br_decode_ternary_in(t, 0, (int32_t)rows, 0, (int32_t)cols, codes, tm, err);
    if (rc) return rc;
    release_pages(t);
    char sname[80];
    size_t n = strlen(name);
    snprintf(sname, sizeof sname, "%.*s.rowscale", (int)(n - 7), name); /* drop ".weight" */
    const struct br_gguf_tensor *s = br_gguf_find_tensor(g, sname);
    if (!s) return BR_OK;
    if (s->type != BR_GGML_F32 || s->nelem != (uint64_t)rows)
        return br_err_set(err, BR_E_FORMAT, "tensor %s: expected %lld F32 values", sname,
                          (long long)rows);
    memcpy(tm->scale, s->data, (size_t)rows * sizeof *tm->scale);
    for (int64_t r = 0; r < rows; r++)
        if (!isfinite(tm->scale[r]) || tm->scale[r] < 0.0f)
            return br_err_set(err, BR_E_FORMAT, "tensor %s: row %lld scale is not finite and >= 0",
                              sname, (long long)r);
    return BR_OK;
}

int br_model_load_shard(const char *dir, int tp, int pp, int rank, struct br_model **out,
                        struct br_err *err)
{
    *out = NULL;
    struct br_model *m = calloc(1, sizeof *m);
    if (!m) return br_err_set(err, BR_E_NOMEM, "out of memory");
    struct br_shard_info info;
    int rc = br_shard_open(dir, tp, pp, rank, &m->gguf, &m->cfg, &info, err);
    if (rc) goto fail;
    const char *path = br_gguf_path(m->gguf);
    const struct br_model_config *c = &m->cfg;
    const struct br_gguf *g = m->gguf;
    m->part = info.part;
    const struct br_part *p = &m->part;
    if (p->first_stage && (rc = dense_window(g, "token_embd.weight", c->embd_type, c->n_vocab,
                                             p->d1 - p->d0, 0, p->d0, c->n_embd, &m->embd, err)))
        goto fail_path;
    if (p->last_stage && ((rc = dense_window(g, "output.weight", c->head_type, p->v1 - p->v0,
                                             c->n_embd, p->v0, 0, c->n_embd, &m->head, err)) ||
                          (rc = load_norm(g, "output_norm.weight", p->d1 - p->d0, 0, p->d1 - p->d0,
                                          &m->output_norm, err)) ||
                          (m->head.type == BR_GGML_Q8_0 && (rc = head_to_q8(m, err)))))
        goto fail_path;
    if ((rc = weights_region(m, err))) goto fail;
    struct br_progress prog;
    br_progress_begin(&prog, "loading", (uint64_t)(p->layer1 - p->layer0));
    for (int l = p->layer0; l < p->layer1 && !rc; l++) {
        struct br_layer_weights *lw = &m->layers[l];
        for (int w = 0; w < BR_W_COUNT && !rc; w++) {
            char name[64];
            int64_t r0, r1, c0, c1;
            if (br_wname_is_subnorm((enum br_wname)w) && !c->has_subnorm) continue;
            br_layer_tensor_name(name, l, (enum br_wname)w);
            br_shard_slice(c, p, (enum br_wname)w, &r0, &r1, &c0, &c1);
            if (br_wname_is_ternary((enum br_wname)w)) {
                struct br_tmat *tm = layer_tmat(lw, (enum br_wname)w);
                rc = load_shard_ternary(g, name, r1 - r0, c1 - c0,
                                        weights_next(m, r1 - r0, c1 - c0), tm, err);
                if (!rc) rc = br_tmat_prepare(tm);
                if (!rc) m->ternary_bytes += tm->row_bytes * (size_t)tm->rows;
            } else {
                rc = load_norm(g, name, c1 - c0, 0, c1 - c0, layer_norm(lw, (enum br_wname)w), err);
            }
        }
        br_progress_add(&prog, 1);
    }
    br_progress_end(&prog);
    if (!rc) rc = head_to_own(m, err);
    if (rc) goto fail_path;
    *out = m;
    return BR_OK;
fail_path:
    br_err_prefix(err, rc, "%s", path);
fail:
    br_model_destroy(&m);
    return rc;
}

void br_model_destroy(struct br_model **mp)
{
    if (!mp || !*mp) return;
    struct br_model *m = *mp;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layer; l++) {
            struct br_layer_weights *lw = &m->layers[l];
            free(lw->attn_norm);
            free(lw->attn_sub_norm);
            free(lw->ffn_norm);
            free(lw->ffn_sub_norm);
            for (int w = 0; w < BR_W_COUNT; w++) br_tmat_free(layer_tmat(lw, (enum br_wname)w));
        }
        free(m->layers);
    }
    free(m->output_norm);
    br_q8mat_free(&m->head_q8);
    br_big_free(m->head_own, m->head_own_bytes);
    br_big_free(m->wmem, m->wmem_bytes);
    br_gguf_close(&m->gguf);
    free(m);
    *mp = NULL;
}

int br_model_load_rank(const char *path, int tp, int pp, int rank, int layout,
                       struct br_plan **plan, struct br_model **out, struct br_err *err)
{
    *plan = NULL;
    *out = NULL;
    struct stat st;
    int rc;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        rc = br_model_load_shard(path, tp, pp, rank, out, err);
        int own = rc ? 0 : br_part_layout(&(*out)->cfg, &(*out)->part);
        if (!rc && tp > 1 && layout >= 0 && own != layout)
            rc = br_err_set(err, BR_E_MISMATCH,
                            "%s holds shards of the %s layout, not %s (re-shard the model)", path,
                            br_layout_name(own), br_layout_name(layout));
        if (!rc && tp * pp > 1) rc = br_plan_create_layout(&(*out)->cfg, tp, pp, own, plan, err);
    } else {
        if (tp * pp > 1) {
            /* the plan needs the configuration: read it from the file's header */
            struct br_gguf *g = NULL;
            struct br_model_config cfg;
            rc = br_gguf_open(path, &g, err);
            if (!rc) rc = br_config_from_gguf(g, &cfg, err);
            if (!rc)
                rc = br_plan_create_layout(&cfg, tp, pp, layout < 0 ? BR_LAYOUT_REPLICATED : layout,
                                           plan, err);
            br_gguf_close(&g);
            if (rc) return rc;
        }
        rc = br_model_load_part(path, *plan ? &(*plan)->parts[rank] : NULL, out, err);
    }
    if (rc) {
        br_model_destroy(out);
        br_plan_destroy(plan);
    }
    return rc;
}
