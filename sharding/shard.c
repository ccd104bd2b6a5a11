/*
 * Shard files (see shard.h for the format): cutting a model into per-rank GGUF files, and
 * opening and checking one rank's file.
 *
 * The writer enumerates a rank's tensors once (shard_list) and uses that list both to
 * declare the header and to write the data, so the two cannot disagree. Data comes through
 * struct br_shard_data: from the source file here, generated in sharding/synth.c; every
 * byte of the output is computed by this file from what the callbacks return, which is
 * why `synth --rank` and `shard` produce identical files.
 *
 * Memory: one ternary slice (the largest is a rank's share of one projection), one norm,
 * and a few MB of embedding or head rows at a time. The source stays in its mapping.
 */
#include "sharding/shard.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitrack/fp.h"
#include "sharding/decode.h"
#include "sharding/types.h"

#define KEY_PREFIX "bitrack.shard."

/* The range of size `dim` (enum br_wdim) that part p owns. */
static void part_range(const struct br_model_config *c, const struct br_part *p, enum br_wdim dim,
                       int64_t *lo, int64_t *hi)
{
    int64_t g = c->n_head / c->n_head_kv, qh0 = p->kv0 * g, qh1 = p->kv1 * g;
    int64_t per = 1, a = 0, b = br_config_dim(c, dim);
    switch (dim) {
    case BR_WDIM_ONE:
        break;
    case BR_WDIM_EMBD:
        a = p->d0, b = p->d1;
        break;
    case BR_WDIM_Q:
        per = c->head_dim, a = qh0, b = qh1;
        break;
    case BR_WDIM_K:
        per = c->head_dim, a = p->kv0, b = p->kv1;
        break;
    case BR_WDIM_V:
        per = c->head_dim_v, a = p->kv0, b = p->kv1;
        break;
    case BR_WDIM_O:
        per = c->head_dim_v, a = qh0, b = qh1;
        break;
    case BR_WDIM_FF:
        a = p->ff0, b = p->ff1;
        break;
    }
    *lo = a * per, *hi = b * per;
}

void br_shard_slice(const struct br_model_config *c, const struct br_part *p, enum br_wname w,
                    int64_t *r0, int64_t *r1, int64_t *c0, int64_t *c1)
{
    int64_t cols, rows;
    br_config_wshape(c, w, &cols, &rows);
    *r0 = 0, *r1 = rows, *c0 = 0, *c1 = cols;
    if (br_wtraits[w].split == BR_WSPLIT_ROWS)
        part_range(c, p, br_wtraits[w].rows, r0, r1);
    else
        part_range(c, p, br_wtraits[w].cols, c0, c1);
}

int br_shard_path(char *buf, size_t cap, const char *dir, int32_t rank, struct br_err *err)
{
    int n = snprintf(buf, cap, "%s/rank-%d.gguf", dir, (int)rank);
    if (n < 0 || (size_t)n >= cap)
        return br_err_set(err, BR_E_TOO_LONG, "shard path in '%s' is too long", dir);
    return BR_OK;
}

uint64_t br_shard_hash(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* The first byte of the file behind g. The reader maps whole files, so the first tensor's
 * data pointer minus its offsets is the start of the mapping. */
static const uint8_t *file_base(const struct br_gguf *g)
{
    if (br_gguf_n_tensors(g) == 0) return NULL;
    const struct br_gguf_tensor *t = br_gguf_tensor_at(g, 0);
    return (const uint8_t *)t->data - t->offset - br_gguf_data_offset(g);
}

uint64_t br_shard_source_checksum(const struct br_gguf *g)
{
    const uint8_t *base = file_base(g);
    if (!base) return 0;
    return br_shard_hash(BR_SHARD_HASH_INIT, base, (size_t)br_gguf_data_offset(g));
}

uint64_t br_shard_tensor_count(const struct br_model_config *cfg, const struct br_part *p)
{
    uint64_t per_layer = cfg->has_subnorm ? BR_W_COUNT : BR_W_COUNT - 2;
    return (uint64_t)(p->layer1 - p->layer0) * per_layer + (p->first_stage ? 1 : 0) +
           (p->last_stage ? 2 : 0);
}

/* ---- reading the keys ---- */

static int key_u32(const struct br_gguf *g, const char *suffix, int32_t *out, struct br_err *err)
{
    char key[96];
    snprintf(key, sizeof key, KEY_PREFIX "%s", suffix);
    uint32_t v;
    int rc = br_gguf_get_u32(g, key, &v, err);
    if (rc == BR_E_NOTFOUND) return br_err_set(err, BR_E_FORMAT, "missing metadata key %s", key);
    if (rc) return rc;
    if (v > INT32_MAX) return br_err_set(err, BR_E_FORMAT, "%s = %u is out of range", key, v);
    *out = (int32_t)v;
    return BR_OK;
}

static int key_bool(const struct br_gguf *g, const char *suffix, bool *out, struct br_err *err)
{
    char key[96];
    snprintf(key, sizeof key, KEY_PREFIX "%s", suffix);
    int rc = br_gguf_get_bool(g, key, out, err);
    if (rc == BR_E_NOTFOUND) return br_err_set(err, BR_E_FORMAT, "missing metadata key %s", key);
    return rc;
}

static int key_u64(const struct br_gguf *g, const char *suffix, uint64_t *out, struct br_err *err)
{
    char key[96];
    snprintf(key, sizeof key, KEY_PREFIX "%s", suffix);
    int rc = br_gguf_get_u64(g, key, out, err);
    if (rc == BR_E_NOTFOUND) return br_err_set(err, BR_E_FORMAT, "missing metadata key %s", key);
    return rc;
}

int br_shard_read_info(const struct br_gguf *g, struct br_shard_info *o, struct br_err *err)
{
    memset(o, 0, sizeof *o);
    uint32_t version;
    int rc = br_gguf_get_u32(g, KEY_PREFIX "version", &version, err);
    if (rc == BR_E_NOTFOUND)
        return br_err_set(err, BR_E_NOTFOUND, "not a bitrack shard (no " KEY_PREFIX "version)");
    if (rc) return rc;
    if (version != BR_SHARD_VERSION)
        return br_err_set(err, BR_E_UNSUPPORTED, "shard version %u (this build reads %d)", version,
                          BR_SHARD_VERSION);
    o->version = version;
    struct br_part *p = &o->part;
    int32_t ty[3];
    bool first, last;
    if ((rc = key_u32(g, "tp", &o->tp, err)) || (rc = key_u32(g, "pp", &o->pp, err)) ||
        (rc = key_u32(g, "rank", &o->rank, err)) ||
        (rc = key_u32(g, "tp_rank", &p->tp_rank, err)) ||
        (rc = key_u32(g, "pp_rank", &p->pp_rank, err)) ||
        (rc = key_u32(g, "layer0", &p->layer0, err)) ||
        (rc = key_u32(g, "layer1", &p->layer1, err)) || (rc = key_u32(g, "d0", &p->d0, err)) ||
        (rc = key_u32(g, "d1", &p->d1, err)) || (rc = key_u32(g, "kv0", &p->kv0, err)) ||
        (rc = key_u32(g, "kv1", &p->kv1, err)) || (rc = key_u32(g, "ff0", &p->ff0, err)) ||
        (rc = key_u32(g, "ff1", &p->ff1, err)) || (rc = key_u32(g, "v0", &p->v0, err)) ||
        (rc = key_u32(g, "v1", &p->v1, err)) || (rc = key_bool(g, "first_stage", &first, err)) ||
        (rc = key_bool(g, "last_stage", &last, err)) ||
        (rc = key_u32(g, "n_vocab", &o->n_vocab, err)) ||
        (rc = key_u32(g, "embd_type", &ty[0], err)) ||
        (rc = key_u32(g, "head_type", &ty[1], err)) ||
        (rc = key_u32(g, "weight_type", &ty[2], err)) ||
        (rc = key_bool(g, "tied_head", &o->tied_head, err)) ||
        (rc = key_u64(g, "source_size", &o->source_size, err)) ||
        (rc = key_u64(g, "source_checksum", &o->source_checksum, err)))
        return rc;
    p->tp = o->tp, p->pp = o->pp;
    p->first_stage = first, p->last_stage = last;
    o->embd_type = (uint32_t)ty[0], o->head_type = (uint32_t)ty[1],
    o->weight_type = (uint32_t)ty[2];
    return BR_OK;
}

static bool part_equal(const struct br_part *a, const struct br_part *b)
{
    return a->tp == b->tp && a->pp == b->pp && a->tp_rank == b->tp_rank &&
           a->pp_rank == b->pp_rank && a->layer0 == b->layer0 && a->layer1 == b->layer1 &&
           a->d0 == b->d0 && a->d1 == b->d1 && a->kv0 == b->kv0 && a->kv1 == b->kv1 &&
           a->ff0 == b->ff0 && a->ff1 == b->ff1 && a->v0 == b->v0 && a->v1 == b->v1 &&
           !a->first_stage == !b->first_stage && !a->last_stage == !b->last_stage;
}

/* Opens one rank file and reads its keys; messages name the file. */
static int open_rank(const char *path, struct br_gguf **g, struct br_shard_info *info,
                     struct br_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return br_err_set(err, BR_E_NOTFOUND, "%s: missing shard file (%s)", path, strerror(errno));
    int rc = br_gguf_open(path, g, err);
    if (rc) return rc; /* the reader's messages name the file */
    if ((rc = br_shard_read_info(*g, info, err))) {
        br_gguf_close(g);
        return br_err_prefix(err, rc == BR_E_NOTFOUND ? BR_E_MISMATCH : rc, "%s", path);
    }
    return BR_OK;
}

int br_shard_open(const char *dir, int32_t tp, int32_t pp, int32_t rank, struct br_gguf **gp,
                  struct br_model_config *cfg, struct br_shard_info *info, struct br_err *err)
{
    *gp = NULL;
    char path[4096], other[4096];
    int rc;
    if (tp < 1 || pp < 1 || rank < 0 || rank >= tp * pp)
        return br_err_set(err, BR_E_INVALID, "rank %d is not in a %dx%d layout", rank, tp, pp);
    if ((rc = br_shard_path(path, sizeof path, dir, rank, err))) return rc;
    struct br_gguf *g = NULL;
    struct br_plan *plan = NULL;
    if ((rc = open_rank(path, &g, info, err))) return rc;
    if (info->tp != tp || info->pp != pp || info->rank != rank) {
        rc = br_err_set(err, BR_E_MISMATCH,
                        "%s is rank %d of a %dx%d (tp x pp) sharding, expected rank %d of %dx%d",
                        path, info->rank, info->tp, info->pp, rank, tp, pp);
        goto fail;
    }
    if ((rc = br_config_from_meta(g, cfg, err))) {
        br_err_prefix(err, rc, "%s", path);
        goto fail;
    }
    cfg->n_vocab = info->n_vocab;
    cfg->embd_type = info->embd_type;
    cfg->head_type = info->head_type;
    cfg->weight_type = info->weight_type;
    cfg->tied_head = info->tied_head;
    if ((rc = br_plan_create_layout(cfg, tp, pp, br_part_layout(cfg, &info->part), &plan, err))) {
        br_err_prefix(err, BR_E_MISMATCH, "%s", path);
        rc = BR_E_MISMATCH;
        goto fail;
    }
    if (!part_equal(&plan->parts[rank], &info->part)) {
        rc = br_err_set(err, BR_E_MISMATCH,
                        "%s: its part (layers %d..%d, columns %d..%d) is not what this build's "
                        "plan gives rank %d of %dx%d; re-shard the model",
                        path, info->part.layer0, info->part.layer1, info->part.d0, info->part.d1,
                        rank, tp, pp);
        goto fail;
    }
    /* Other ranks' files, where this node has them, must come from the same source. */
    for (int32_t r = 0; r < tp * pp; r++) {
        if (r == rank) continue;
        if ((rc = br_shard_path(other, sizeof other, dir, r, err))) goto fail;
        struct stat st;
        if (stat(other, &st) != 0) continue;
        struct br_gguf *og = NULL;
        struct br_shard_info oi;
        if ((rc = open_rank(other, &og, &oi, err))) goto fail;
        br_gguf_close(&og);
        if (oi.source_checksum != info->source_checksum || oi.source_size != info->source_size) {
            rc = br_err_set(err, BR_E_MISMATCH,
                            "%s and %s were cut from different models (source checksum %016llx, "
                            "%llu bytes vs %016llx, %llu bytes)",
                            path, other, (unsigned long long)info->source_checksum,
                            (unsigned long long)info->source_size,
                            (unsigned long long)oi.source_checksum,
                            (unsigned long long)oi.source_size);
            goto fail;
        }
        if (oi.tp != tp || oi.pp != pp || oi.rank != r) {
            rc = br_err_set(err, BR_E_MISMATCH,
                            "%s is rank %d of a %dx%d sharding, expected rank %d of %dx%d", other,
                            oi.rank, oi.tp, oi.pp, r, tp, pp);
            goto fail;
        }
    }
    br_plan_destroy(&plan);
    *gp = g;
    return BR_OK;
fail:
    br_plan_destroy(&plan);
    br_gguf_close(&g);
    return rc;
}

/* ---- the default data source: the model file ---- */

struct file_src {
    const struct br_gguf *g;
    const struct br_model_config *cfg;
    /* Head rows re-encoded to this type (br_shard_model_head; 0: as in the source), in a
     * buffer of cap rows of n_embd floats (x) and their encoding (enc). */
    uint32_t head_out;
    float *x;
    void *enc;
    int64_t cap;
};

int br_shard_apply_scale_tensor(const struct br_gguf *g, const char *wname, struct br_tmat *m,
                                struct br_err *err)
{
    char sname[80];
    size_t n = strlen(wname);
    if (n < 7 || strcmp(wname + n - 7, ".weight")) return BR_OK;
    snprintf(sname, sizeof sname, "%.*s.scale", (int)(n - 7), wname);
    const struct br_gguf_tensor *t = br_gguf_find_tensor(g, sname);
    if (!t) return BR_OK;
    if (t->nelem != 1)
        return br_err_set(err, BR_E_FORMAT, "tensor %s: expected one element, found %llu", sname,
                          (unsigned long long)t->nelem);
    float s;
    int rc = br_decode_rows_f32(t->type, t->data, 1, 0, 1, &s, err);
    if (rc) return br_err_prefix(err, rc, "tensor %s", sname);
    if (!isfinite(s)) return br_err_set(err, BR_E_FORMAT, "tensor %s is not finite", sname);
    for (int32_t r = 0; r < m->rows; r++) m->scale[r] *= s;
    return BR_OK;
}

static int file_ternary(void *ctx, int layer, enum br_wname w, int32_t r0, int32_t r1, int32_t c0,
                        int32_t c1, struct br_tmat *out, struct br_err *err)
{
    struct file_src *f = ctx;
    char name[64];
    br_layer_tensor_name(name, layer, w);
    const struct br_gguf_tensor *t = br_gguf_find_tensor(f->g, name);
    if (!t) return br_err_set(err, BR_E_FORMAT, "missing tensor %s", name);
    int rc = br_decode_ternary(t, r0, r1, c0, c1, out, err);
    if (!rc && (rc = br_shard_apply_scale_tensor(f->g, name, out, err))) br_tmat_free(out);
    return rc;
}

static int file_uniform(void *ctx, int layer, enum br_wname w, int32_t r0, int32_t r1,
                        bool *uniform, struct br_err *err)
{
    struct file_src *f = ctx;
    char name[64];
    br_layer_tensor_name(name, layer, w);
    const struct br_gguf_tensor *t = br_gguf_find_tensor(f->g, name);
    if (!t) return br_err_set(err, BR_E_FORMAT, "missing tensor %s", name);
    *uniform = true;
    if (t->type == BR_GGML_I2_S) return BR_OK; /* one scale per tensor by construction */
    /* A one-column slice still checks and scales whole rows (decode.h). */
    struct br_tmat m;
    int rc = file_ternary(ctx, layer, w, r0, r1, 0, 1, &m, err);
    if (rc) return rc;
    for (int32_t r = 1; r < m.rows; r++)
        if (memcmp(&m.scale[r], &m.scale[0], sizeof(float))) *uniform = false;
    br_tmat_free(&m);
    return BR_OK;
}

static int file_norm(void *ctx, const char *name, int64_t n, int64_t c0, int64_t c1, float *out,
                     struct br_err *err)
{
    struct file_src *f = ctx;
    return br_decode_norm(br_gguf_find_tensor(f->g, name), name, n, c0, c1, out, err);
}

static int file_dense_rows(void *ctx, int head, int64_t r0, int64_t nrows, const void **rows,
                           struct br_err *err)
{
    struct file_src *f = ctx;
    const char *name = head && !f->cfg->tied_head ? "output.weight" : "token_embd.weight";
    const struct br_gguf_tensor *t = br_gguf_find_tensor(f->g, name);
    uint64_t rb;
    if (!t || !br_ggml_type_nbytes(t->type, t->ne[0], t->ne[0], &rb) || r0 < 0 ||
        (uint64_t)(r0 + nrows) > t->ne[1])
        return br_err_set(err, BR_E_FORMAT, "tensor %s: rows %lld..%lld unavailable", name,
                          (long long)r0, (long long)(r0 + nrows));
    *rows = (const uint8_t *)t->data + (uint64_t)r0 * rb;
    if (!head || !f->head_out || f->head_out == t->type) return BR_OK;
    uint64_t ne0 = t->ne[0];
    if (nrows > f->cap) {
        free(f->x);
        free(f->enc);
        f->x = malloc((size_t)nrows * (size_t)ne0 * sizeof *f->x);
        f->enc = malloc((size_t)br_encode_rows_size(BR_GGML_F32, ne0, (uint64_t)nrows));
        f->cap = f->x && f->enc ? nrows : 0;
        if (!f->cap) return br_err_set(err, BR_E_NOMEM, "out of memory for %s", name);
    }
    int rc = br_decode_rows_f32(t->type, *rows, ne0, 0, (uint64_t)nrows, f->x, err);
    if (!rc) rc = br_encode_rows_f32(f->head_out, f->x, ne0, (uint64_t)nrows, f->enc, err);
    *rows = f->enc;
    return rc;
}

/* ---- writing ---- */

enum item_kind { IT_EMBD, IT_NORM, IT_TERNARY, IT_ROWSCALE, IT_OUT_NORM, IT_HEAD };

/* One tensor of a shard: what it is, where it comes from, how it is stored. */
struct item {
    enum item_kind kind;
    int layer;
    enum br_wname w;
    char name[BR_GGUF_MAX_NAME];
    int64_t r0, r1, c0, c1; /* slice of the source tensor */
    uint32_t n_dims, type;
    uint64_t ne[2];
    bool uniform;
};

static bool embd_block_aligned(const struct br_model_config *c, const struct br_part *p)
{
    uint32_t blk = br_ggml_type_block(c->embd_type);
    return blk && p->d0 % (int32_t)blk == 0 && p->d1 % (int32_t)blk == 0;
}

/* The tensors of rank `rank`'s shard, in file order. *out is malloc'd. */
static int shard_list(const struct br_model_config *c, const struct br_part *p,
                      const struct br_shard_data *data, struct item **out, size_t *n_out,
                      struct br_err *err)
{
    size_t cap = (size_t)br_shard_tensor_count(c, p) + (size_t)(p->layer1 - p->layer0) * 7 + 1;
    struct item *it = calloc(cap, sizeof *it);
    if (!it) return br_err_set(err, BR_E_NOMEM, "out of memory");
    size_t n = 0;
    int rc = BR_OK;
    if (p->first_stage) {
        struct item *e = &it[n++];
        e->kind = IT_EMBD;
        snprintf(e->name, sizeof e->name, "token_embd.weight");
        e->r0 = 0, e->r1 = c->n_vocab, e->c0 = p->d0, e->c1 = p->d1;
        e->type = embd_block_aligned(c, p) ? c->embd_type : BR_GGML_F32;
        e->n_dims = 2, e->ne[0] = (uint64_t)(p->d1 - p->d0), e->ne[1] = (uint64_t)c->n_vocab;
    }
    for (int l = p->layer0; l < p->layer1 && !rc; l++)
        for (int w = 0; w < BR_W_COUNT && !rc; w++) {
            if (br_wname_is_subnorm((enum br_wname)w) && !c->has_subnorm) continue;
            struct item *e = &it[n++];
            e->layer = l, e->w = (enum br_wname)w;
            br_layer_tensor_name(e->name, l, e->w);
            br_shard_slice(c, p, e->w, &e->r0, &e->r1, &e->c0, &e->c1);
            if (!br_wname_is_ternary(e->w)) {
                e->kind = IT_NORM, e->type = BR_GGML_F32, e->n_dims = 1;
                e->ne[0] = (uint64_t)(e->c1 - e->c0), e->ne[1] = 1;
                continue;
            }
            e->kind = IT_TERNARY, e->type = BR_GGML_I2_S, e->n_dims = 2;
            e->ne[0] = (uint64_t)br_tmat_blocks((int32_t)(e->c1 - e->c0)) * BR_TMAT_BLOCK;
            e->ne[1] = (uint64_t)(e->r1 - e->r0);
            rc =
                data->uniform(data->ctx, l, e->w, (int32_t)e->r0, (int32_t)e->r1, &e->uniform, err);
            if (!rc && !e->uniform) {
                struct item *s = &it[n++];
                *s = *e;
                s->kind = IT_ROWSCALE, s->type = BR_GGML_F32, s->n_dims = 1;
                s->ne[0] = e->ne[1], s->ne[1] = 1;
                int k = snprintf(s->name, sizeof s->name, "blk.%d.%.*s.rowscale", l,
                                 (int)(strlen(br_wname_suffix(e->w)) - 7), br_wname_suffix(e->w));
                if (k < 0 || (size_t)k >= sizeof s->name)
                    rc = br_err_set(err, BR_E_TOO_LONG, "tensor name for %s", e->name);
            }
        }
    if (!rc && p->last_stage) {
        struct item *e = &it[n++];
        e->kind = IT_OUT_NORM, e->type = BR_GGML_F32, e->n_dims = 1;
        snprintf(e->name, sizeof e->name, "output_norm.weight");
        e->c0 = p->d0, e->c1 = p->d1, e->ne[0] = (uint64_t)(p->d1 - p->d0), e->ne[1] = 1;
        e = &it[n++];
        e->kind = IT_HEAD, e->type = c->head_type, e->n_dims = 2;
        snprintf(e->name, sizeof e->name, "output.weight");
        e->r0 = p->v0, e->r1 = p->v1, e->c0 = 0, e->c1 = c->n_embd;
        e->ne[0] = (uint64_t)c->n_embd, e->ne[1] = (uint64_t)(p->v1 - p->v0);
    }
    if (rc) {
        free(it);
        return rc;
    }
    *out = it;
    *n_out = n;
    return BR_OK;
}

/* Copies every source metadata record, value for value (scalars byte for byte). */
static int copy_meta(const struct br_gguf *src, struct br_gguf_writer *w, struct br_err *err)
{
    const uint8_t *base = file_base(src);
    for (size_t i = 0; i < br_gguf_n_kv(src); i++) {
        const struct br_gguf_kv *kv = br_gguf_kv_at(src, i);
        int rc = BR_OK;
        if (!strncmp(kv->key, KEY_PREFIX, strlen(KEY_PREFIX)))
            return br_err_set(err, BR_E_INVALID, "the source is itself a shard (key %s)", kv->key);
        if (kv->type == BR_GGUF_STRING) {
            char *s = malloc((size_t)kv->v.str.len + 1);
            if (!s) return br_err_set(err, BR_E_NOMEM, "out of memory");
            memcpy(s, kv->v.str.ptr, (size_t)kv->v.str.len);
            s[kv->v.str.len] = '\0';
            if (strlen(s) != kv->v.str.len)
                rc = br_err_set(err, BR_E_UNSUPPORTED, "key %s: a string with a NUL byte", kv->key);
            else
                rc = br_gguf_writer_set_str(w, kv->key, s);
            free(s);
        } else if (kv->type == BR_GGUF_ARRAY && kv->v.arr.elem == BR_GGUF_STRING) {
            uint64_t n = kv->v.arr.n;
            const char **strs = malloc((size_t)(n ? n : 1) * sizeof *strs);
            size_t *lens = malloc((size_t)(n ? n : 1) * sizeof *lens);
            if (!strs || !lens) rc = BR_E_NOMEM;
            for (uint64_t j = 0; !rc && j < n; j++) {
                uint64_t len;
                br_gguf_arr_str(kv, j, &strs[j], &len);
                lens[j] = (size_t)len;
            }
            if (!rc) rc = br_gguf_writer_set_arr_str(w, kv->key, strs, lens, n);
            free(strs);
            free(lens);
        } else if (kv->type == BR_GGUF_ARRAY) {
            rc = br_gguf_writer_set_arr(w, kv->key, kv->v.arr.elem, kv->v.arr.data, kv->v.arr.n);
        } else {
            /* the value's bytes follow the key (u64 length + bytes) and the u32 type */
            const uint8_t *v = base + kv->file_offset + 8 + strlen(kv->key) + 4;
            rc = br_gguf_writer_set_raw(w, kv->key, kv->type, v);
        }
        if (rc)
            return rc == BR_E_UNSUPPORTED ? rc
                                          : br_err_set(err, rc, "copying metadata key %s", kv->key);
    }
    return BR_OK;
}

static int set_keys(struct br_gguf_writer *w, const struct br_model_config *c,
                    const struct br_plan *plan, int32_t rank, uint64_t checksum, uint64_t size)
{
    const struct br_part *p = &plan->parts[rank];
    int rc = 0;
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "version", BR_SHARD_VERSION);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "tp", (uint32_t)plan->tp);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "pp", (uint32_t)plan->pp);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "rank", (uint32_t)rank);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "tp_rank", (uint32_t)p->tp_rank);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "pp_rank", (uint32_t)p->pp_rank);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "layer0", (uint32_t)p->layer0);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "layer1", (uint32_t)p->layer1);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "d0", (uint32_t)p->d0);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "d1", (uint32_t)p->d1);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "kv0", (uint32_t)p->kv0);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "kv1", (uint32_t)p->kv1);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "ff0", (uint32_t)p->ff0);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "ff1", (uint32_t)p->ff1);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "v0", (uint32_t)p->v0);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "v1", (uint32_t)p->v1);
    rc |= br_gguf_writer_set_bool(w, KEY_PREFIX "first_stage", p->first_stage);
    rc |= br_gguf_writer_set_bool(w, KEY_PREFIX "last_stage", p->last_stage);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "n_vocab", (uint32_t)c->n_vocab);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "embd_type", c->embd_type);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "head_type", c->head_type);
    rc |= br_gguf_writer_set_u32(w, KEY_PREFIX "weight_type", c->weight_type);
    rc |= br_gguf_writer_set_bool(w, KEY_PREFIX "tied_head", c->tied_head);
    rc |= br_gguf_writer_set_u64(w, KEY_PREFIX "source_size", size);
    rc |= br_gguf_writer_set_u64(w, KEY_PREFIX "source_checksum", checksum);
    return rc ? BR_E_NOMEM : BR_OK;
}

/* Rows of the embedding (column slice) or head (row slice), a few MB at a time. */
static int write_dense(struct br_gguf_writer *w, const struct br_model_config *c,
                       const struct br_shard_data *data, const struct item *e, struct br_err *err)
{
    int head = e->kind == IT_HEAD;
    uint32_t st = head ? c->head_type : c->embd_type;
    uint64_t rb;
    if (!br_ggml_type_nbytes(st, (uint64_t)c->n_embd, (uint64_t)c->n_embd, &rb))
        return br_err_set(err, BR_E_FORMAT, "%s: type %u does not fit %d columns", e->name, st,
                          c->n_embd);
    int64_t chunk = (int64_t)((4u << 20) / rb);
    if (chunk < 1) chunk = 1;
    int64_t w0 = e->c1 - e->c0;
    float *f = NULL;
    if (e->type == BR_GGML_F32 && st != BR_GGML_F32) {
        f = malloc((size_t)chunk * (size_t)c->n_embd * sizeof *f);
        if (!f) return br_err_set(err, BR_E_NOMEM, "out of memory for %s", e->name);
    }
    uint32_t blk = br_ggml_type_block(st);
    uint64_t bpb = rb / ((uint64_t)c->n_embd / blk); /* bytes per block */
    int rc = BR_OK;
    for (int64_t r = e->r0; r < e->r1 && !rc; r += chunk) {
        int64_t n = e->r1 - r < chunk ? e->r1 - r : chunk;
        const uint8_t *rows;
        if ((rc = data->dense_rows(data->ctx, head, r, n, (const void **)&rows, err))) break;
        if (e->type == st && e->c0 == 0 && e->c1 == c->n_embd) {
            rc = br_gguf_writer_write(w, rows, (size_t)(rb * (uint64_t)n), err);
        } else if (e->type == st) {
            uint64_t off = (uint64_t)e->c0 / blk * bpb, len = (uint64_t)w0 / blk * bpb;
            for (int64_t i = 0; i < n && !rc; i++)
                rc = br_gguf_writer_write(w, rows + (uint64_t)i * rb + off, (size_t)len, err);
        } else {
            const float *x = (const float *)(const void *)rows;
            if (f) {
                rc = br_decode_rows_f32(st, rows, (uint64_t)c->n_embd, 0, (uint64_t)n, f, err);
                x = f;
            }
            for (int64_t i = 0; i < n && !rc; i++)
                rc = br_gguf_writer_write(w, x + i * c->n_embd + e->c0, (size_t)w0 * 4, err);
        }
    }
    free(f);
    return rc;
}

static int write_item(struct br_gguf_writer *w, const struct br_model_config *c,
                      const struct br_shard_data *data, const struct item *e, struct br_err *err)
{
    int rc;
    switch (e->kind) {
    case IT_EMBD:
    case IT_HEAD:
        return write_dense(w, c, data, e, err);
    case IT_NORM:
    case IT_OUT_NORM: {
        int64_t cols, rows;
        if (e->kind == IT_NORM)
            br_config_wshape(c, e->w, &cols, &rows);
        else
            cols = c->n_embd;
        float *x = malloc((size_t)(e->c1 - e->c0) * sizeof *x);
        if (!x) return br_err_set(err, BR_E_NOMEM, "out of memory");
        rc = data->norm(data->ctx, e->name, cols, e->c0, e->c1, x, err);
        if (!rc) rc = br_gguf_writer_write(w, x, (size_t)(e->c1 - e->c0) * sizeof *x, err);
        free(x);
        return rc;
    }
    case IT_TERNARY: {
        struct br_tmat m;
        rc = data->ternary(data->ctx, e->layer, e->w, (int32_t)e->r0, (int32_t)e->r1,
                           (int32_t)e->c0, (int32_t)e->c1, &m, err);
        if (rc) return rc;
        assert(m.row_bytes * 4 == e->ne[0]);
        bool same = true;
        for (int32_t r = 1; r < m.rows; r++)
            if (memcmp(&m.scale[r], &m.scale[0], sizeof(float))) same = false;
        uint8_t tail[BR_I2S_TAIL] = {0};
        memcpy(tail, &m.scale[0], 4);
        if (same != e->uniform)
            rc = br_err_set(err, BR_E_INTERNAL, "%s: row scales changed between passes", e->name);
        if (!rc) rc = br_gguf_writer_write(w, m.codes, m.row_bytes * (size_t)m.rows, err);
        if (!rc) rc = br_gguf_writer_write(w, tail, sizeof tail, err);
        if (!rc && !e->uniform)
            rc = br_gguf_writer_write(w, m.scale, (size_t)m.rows * sizeof *m.scale, err);
        br_tmat_free(&m);
        return rc;
    }
    case IT_ROWSCALE:
        return BR_OK; /* written with its weight, which precedes it */
    }
    return BR_E_INTERNAL;
}

int br_shard_write_rank(const struct br_gguf *src, const struct br_model_config *cfg,
                        const struct br_shard_data *data, const struct br_plan *plan, int32_t rank,
                        const char *path, struct br_progress *prog, struct br_err *err)
{
    struct file_src fs = {src, cfg, 0, NULL, NULL, 0};
    const struct br_shard_data file_data = {&fs, file_ternary, file_uniform, file_norm,
                                            file_dense_rows};
    if (!data) data = &file_data;
    const struct br_part *p = &plan->parts[rank];
    struct item *items = NULL;
    size_t n_items = 0;
    struct br_gguf_writer *w = NULL;
    char tmp[4200];
    int rc;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return br_err_set(err, BR_E_TOO_LONG, "path %s is too long", path);
    if ((rc = br_gguf_writer_create(&w))) return br_err_set(err, rc, "out of memory");
    if ((rc =
             set_keys(w, cfg, plan, rank, br_shard_source_checksum(src), br_gguf_file_size(src)))) {
        br_err_set(err, rc, "out of memory");
        goto done;
    }
    if ((rc = copy_meta(src, w, err))) goto done;
    if ((rc = shard_list(cfg, p, data, &items, &n_items, err))) goto done;
    for (size_t i = 0; i < n_items; i++)
        if ((rc = br_gguf_writer_add_tensor(w, items[i].name, items[i].n_dims, items[i].ne,
                                            items[i].type, err)))
            goto done;
    if ((rc = br_gguf_writer_begin(w, tmp, err))) goto done;
    for (size_t i = 0; i < n_items && !rc; i++) {
        rc = write_item(w, cfg, data, &items[i], err);
        if (rc) br_err_prefix(err, rc, "%s", items[i].name);
        if (prog && items[i].kind != IT_ROWSCALE) br_progress_add(prog, 1);
    }
    if (!rc) rc = br_gguf_writer_finish(w, err);
    if (!rc && rename(tmp, path) != 0)
        rc = br_err_set(err, BR_E_IO, "renaming %s to %s: %s", tmp, path, strerror(errno));
done:
    br_gguf_writer_destroy(&w);
    free(items);
    if (rc) remove(tmp);
    return rc;
}

int br_shard_model(const char *model_path, int32_t tp, int32_t pp, const char *dir,
                   struct br_err *err)
{
    return br_shard_model_head(model_path, tp, pp, 0, dir, err);
}

int br_shard_model_head(const char *model_path, int32_t tp, int32_t pp, uint32_t head_type,
                        const char *dir, struct br_err *err)
{
    struct br_gguf *g = NULL;
    struct br_plan *plan = NULL;
    struct br_model_config cfg;
    int rc = br_gguf_open(model_path, &g, err);
    if (rc) return rc;
    if ((rc = br_config_from_gguf(g, &cfg, err))) {
        br_err_prefix(err, rc, "%s", model_path);
        goto done;
    }
    if ((rc = br_plan_create(&cfg, tp, pp, &plan, err))) goto done;
    /* a re-encoded head: the shards say so in head_type, and their rows come converted */
    struct br_model_config out_cfg = cfg;
    struct file_src fs = {g, &cfg, 0, NULL, NULL, 0};
    if (head_type && head_type != cfg.head_type) {
        uint64_t rb;
        if (head_type != BR_GGML_Q8_0 && head_type != BR_GGML_Q6_K && head_type != BR_GGML_F16 &&
            head_type != BR_GGML_F32) {
            rc = br_err_set(err, BR_E_INVALID, "head type %s: not one of f32, f16, q8_0, q6_k",
                            br_ggml_type_name(head_type) ? br_ggml_type_name(head_type) : "?");
            goto done;
        }
        if (!br_ggml_type_nbytes(head_type, (uint64_t)cfg.n_embd, (uint64_t)cfg.n_embd, &rb)) {
            rc = br_err_set(err, BR_E_INVALID, "a head %d wide cannot be stored as %s", cfg.n_embd,
                            br_ggml_type_name(head_type));
            goto done;
        }
        out_cfg.head_type = head_type;
        fs.head_out = head_type;
    }
    const struct br_shard_data data = {&fs, file_ternary, file_uniform, file_norm, file_dense_rows};
    uint64_t total = 0;
    for (int32_t r = 0; r < tp * pp; r++) total += br_shard_tensor_count(&cfg, &plan->parts[r]);
    struct br_progress prog;
    br_progress_begin(&prog, "shard", total);
    for (int32_t r = 0; r < tp * pp && !rc; r++) {
        char path[4096];
        if ((rc = br_shard_path(path, sizeof path, dir, r, err))) break;
        rc = br_shard_write_rank(g, &out_cfg, &data, plan, r, path, &prog, err);
        if (rc) br_err_prefix(err, rc, "writing %s", path);
    }
    br_progress_end(&prog);
    free(fs.x);
    free(fs.enc);
done:
    br_plan_destroy(&plan);
    br_gguf_close(&g);
    return rc;
}
