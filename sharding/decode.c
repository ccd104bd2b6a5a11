/*
 * Tensor decoding and encoding: GGUF tensor bytes to float rows or to the canonical packed
 * ternary layout of kernels/ternary.h, and back (bit layouts: docs/FORMATS.md §2).
 *
 * Invariants kept here:
 *  - Nothing is read outside a tensor: its byte size (t->nbytes) is checked against what
 *    the shape needs before the first byte is touched.
 *  - A ternary row is validated and its scale derived from the whole row, whatever column
 *    range is asked for, so ranks that decode different column shards of one row agree on
 *    the scale and on whether the tensor is valid at all.
 *  - Output padding columns (past col1 - col0, up to the block end) hold code 1.
 *  - A row whose weights are all zero has no scale of its own: TQ rows then take the first
 *    block's d, float rows take 1, so re-encoding gives back the same bytes where possible.
 *
 * I2_S and TQ2_0 are the formats of real 2B-30B models, so their common case (the column
 * range starts on a 128-column boundary) is a copy or a per-byte bit shuffle; everything
 * else goes through a per-element path that fills one code per byte and packs it.
 */
#include "sharding/decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/fp.h"
#include "sharding/types.h"

/* ---- little-endian loads and stores (the file format is LE whatever the host) ---- */

static uint16_t ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ld64(const uint8_t *p)
{
    return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32;
}

static void st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void st32(uint8_t *p, uint32_t v)
{
    st16(p, (uint16_t)v);
    st16(p + 2, (uint16_t)(v >> 16));
}

/* ---- float rows ---- */

static void dequant_q6_k_block(const uint8_t *blk, float *y)
{
    const uint8_t *ql = blk;
    const uint8_t *qh = blk + 128;
    const int8_t *sc = (const int8_t *)(blk + 192);
    const float d = br_f16_to_f32(ld16(blk + 208));
    /* Two halves of 128; in each, ql[l] and ql[l+32] give the low nibbles of four groups
     * of 32 and qh[l] their high 2 bits; a scale covers 16 consecutive outputs. */
    for (int n = 0; n < 2; n++) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = (int)((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
            int q2 = (int)((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
            int q3 = (int)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
            int q4 = (int)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
            y[l + 0] = d * sc[is + 0] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

bool br_decode_rows_supported(uint32_t type)
{
    switch (type) {
    case BR_GGML_F32:
    case BR_GGML_F16:
    case BR_GGML_BF16:
    case BR_GGML_Q8_0:
    case BR_GGML_Q6_K:
        return true;
    default:
        return false;
    }
}

int br_decode_rows_f32(uint32_t type, const void *data, uint64_t ne0, uint64_t row0, uint64_t nrows,
                       float *out, struct br_err *err)
{
    if (!br_decode_rows_supported(type)) {
        const char *name = br_ggml_type_name(type);
        return br_err_set(err, BR_E_UNSUPPORTED, "cannot decode type %s (%u) to float rows",
                          name ? name : "?", type);
    }
    uint64_t row_bytes;
    if (!br_ggml_type_nbytes(type, ne0, ne0, &row_bytes))
        return br_err_set(err, BR_E_INVALID, "%s rows of %llu elements: not a multiple of %u",
                          br_ggml_type_name(type), (unsigned long long)ne0,
                          br_ggml_type_block(type));
    if (nrows == 0) return BR_OK;
    if (nrows > UINT64_MAX / row_bytes || row0 > UINT64_MAX / row_bytes - nrows ||
        nrows > SIZE_MAX / ne0)
        return br_err_set(err, BR_E_RANGE, "rows %llu+%llu of %llu bytes overflow",
                          (unsigned long long)row0, (unsigned long long)nrows,
                          (unsigned long long)row_bytes);

    const uint8_t *src = (const uint8_t *)data + row0 * row_bytes;
    const uint64_t n = ne0 * nrows; /* rows are contiguous in both source and output */
    switch (type) {
    case BR_GGML_F32:
        for (uint64_t i = 0; i < n; i++) out[i] = br_fp32_from_bits(ld32(src + 4 * i));
        break;
    case BR_GGML_F16:
        for (uint64_t i = 0; i < n; i++) out[i] = br_f16_to_f32(ld16(src + 2 * i));
        break;
    case BR_GGML_BF16:
        for (uint64_t i = 0; i < n; i++) out[i] = br_bf16_to_f32(ld16(src + 2 * i));
        break;
    case BR_GGML_Q8_0:
        for (uint64_t b = 0; b < n / BR_QK8_0; b++) {
            const uint8_t *blk = src + b * sizeof(struct br_block_q8_0);
            const float d = br_f16_to_f32(ld16(blk));
            const int8_t *q = (const int8_t *)(blk + 2);
            for (int j = 0; j < BR_QK8_0; j++) out[b * BR_QK8_0 + j] = d * q[j];
        }
        break;
    case BR_GGML_Q6_K:
        for (uint64_t b = 0; b < n / BR_QK_K; b++)
            dequant_q6_k_block(src + b * sizeof(struct br_block_q6_k), out + b * BR_QK_K);
        break;
    }
    return BR_OK;
}

int br_decode_norm(const struct br_gguf_tensor *t, const char *name, int64_t n, int64_t e0,
                   int64_t e1, float *out, struct br_err *err)
{
    if (!t) return br_err_set(err, BR_E_FORMAT, "missing tensor %s", name);
    if (t->nelem != (uint64_t)n)
        return br_err_set(err, BR_E_FORMAT, "tensor %s has %llu elements, expected %lld", name,
                          (unsigned long long)t->nelem, (long long)n);
    float *all = malloc((size_t)n * sizeof *all);
    if (!all) return br_err_set(err, BR_E_NOMEM, "out of memory for %s", name);
    int rc = br_decode_rows_f32(t->type, t->data, (uint64_t)n, 0, 1, all, err);
    if (rc) {
        free(all);
        return br_err_prefix(err, rc, "tensor %s", name);
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(all[i])) {
            free(all);
            return br_err_set(err, BR_E_FORMAT, "tensor %s: element %lld is not finite", name,
                              (long long)i);
        }
    memcpy(out, all + e0, (size_t)(e1 - e0) * sizeof *out);
    free(all);
    return BR_OK;
}

/* ---- ternary decoding ---- */

/* The tensor being decoded, with its shape as signed 64-bit integers. */
struct tsrc {
    const struct br_gguf_tensor *t;
    const uint8_t *data;
    int64_t ne0, ne1;
    uint32_t type;
    float i2s_scale;  /* I2_S: the per-tensor scale */
    size_t row_bytes; /* TQ and float types: bytes per row */
    uint8_t *buf;     /* (ne0,) one code per byte: scratch for the per-element paths */
};

/* Trit n (0 = most significant) of a TQ1_0 byte: multiplying by 3^n modulo 256 drops the
 * leading trits of the fixed-point fraction, and * 3 >> 8 reads the next one. */
static inline uint8_t tq1_trit(uint8_t b, unsigned pow3)
{
    uint8_t t = (uint8_t)(b * pow3);
    return (uint8_t)(((unsigned)t * 3) >> 8);
}

static const unsigned tq1_pow3[5] = {1, 3, 9, 27, 81};

/* The 256 codes (0..2) of one TQ1_0 block, element order. */
static void tq1_block_codes(const uint8_t *blk, uint8_t *codes)
{
    const uint8_t *qs = blk, *qh = blk + 48;
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++) codes[m + 32 * n] = tq1_trit(qs[m], tq1_pow3[n]);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++) codes[160 + m + 16 * n] = tq1_trit(qs[32 + m], tq1_pow3[n]);
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++) codes[240 + j + 4 * n] = tq1_trit(qh[j], tq1_pow3[n]);
}

/* Code of element (r, c) of an I2_S tensor: the whole tensor is one flat run of blocks. */
static inline uint8_t i2s_code(const struct tsrc *s, int64_t r, int64_t c)
{
    uint64_t i = (uint64_t)r * (uint64_t)s->ne0 + (uint64_t)c;
    uint64_t e = i % BR_I2S_BLOCK;
    uint8_t byte = s->data[i / BR_I2S_BLOCK * 32 + e % 32];
    return (uint8_t)((byte >> (6 - 2 * (e / 32))) & 3);
}

/* Code of element (r, c) of a TQ2_0 tensor. */
static inline uint8_t tq2_code(const struct tsrc *s, int64_t r, int64_t c)
{
    const uint8_t *qs =
        s->data + (size_t)r * s->row_bytes + (size_t)(c / BR_QK_K) * sizeof(struct br_block_tq2_0);
    int e = (int)(c % BR_QK_K);
    int half = e / 128, l = (e % 128) / 32, m = e % 32;
    return (uint8_t)((qs[32 * half + m] >> (2 * l)) & 3);
}

/* Nonzero iff some 2-bit field (at an even bit position) of w is 3. */
static inline uint64_t has_code3(uint64_t w)
{
    return w & (w >> 1) & 0x5555555555555555ull;
}

/* Index of the first byte in p[0..n) holding a code 3, or n. */
static size_t find_code3(const uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (has_code3(ld64(p + i))) break;
    for (; i < n; i++)
        if (has_code3(p[i])) return i;
    return n;
}

/* Whole-row check of an I2_S row: no code 3 anywhere. */
static int i2s_check_row(const struct tsrc *s, int64_t r, struct br_err *err)
{
    int64_t bad = -1;
    if (s->ne0 % BR_I2S_BLOCK == 0) {
        size_t n = (size_t)s->ne0 / 4;
        const uint8_t *p = s->data + (size_t)r * n;
        if (find_code3(p, n) < n) {
            for (int64_t c = 0; c < s->ne0 && bad < 0; c++)
                if (i2s_code(s, r, c) == 3) bad = c;
        }
    } else {
        for (int64_t c = 0; c < s->ne0 && bad < 0; c++)
            if (i2s_code(s, r, c) == 3) bad = c;
    }
    if (bad >= 0)
        return br_err_set(err, BR_E_FORMAT, "tensor %s row %lld col %lld: invalid I2_S code 3",
                          s->t->name, (long long)r, (long long)bad);
    return BR_OK;
}

/* Accumulates the scale of one TQ row: blocks whose weights are all zero do not constrain
 * it (their d is whatever the quantizer found, often 0); all others must agree bit for
 * bit (after folding -0 into +0). */
struct row_scale {
    int have;
    uint16_t bits;
    uint16_t first_bits; /* block 0's d, used when no block constrains */
};

static int scale_add(const struct tsrc *s, int64_t r, int64_t block, uint16_t d, int nonzero,
                     struct row_scale *acc, struct br_err *err)
{
    if ((d & 0x7fff) == 0) d = 0;
    if ((d & 0x7c00) == 0x7c00)
        return br_err_set(err, BR_E_FORMAT, "tensor %s row %lld: block %lld has a non-finite scale",
                          s->t->name, (long long)r, (long long)block);
    if (block == 0) acc->first_bits = d;
    if (!nonzero) return BR_OK;
    if (d & 0x8000)
        return br_err_set(err, BR_E_FORMAT,
                          "tensor %s row %lld: block %lld has a negative scale %g", s->t->name,
                          (long long)r, (long long)block, (double)br_f16_to_f32(d));
    if (!acc->have) {
        acc->have = 1;
        acc->bits = d;
    } else if (acc->bits != d) {
        return br_err_set(
            err, BR_E_FORMAT, "tensor %s row %lld: blocks carry different scales (%g vs %g)",
            s->t->name, (long long)r, (double)br_f16_to_f32(acc->bits), (double)br_f16_to_f32(d));
    }
    return BR_OK;
}

static float scale_value(const struct row_scale *acc)
{
    uint16_t d = acc->have ? acc->bits : (uint16_t)(acc->first_bits & 0x7fff);
    return br_f16_to_f32(d);
}

/* Whole-row check and scale of a TQ2_0 row. */
static int tq2_scan_row(const struct tsrc *s, int64_t r, float *scale, struct br_err *err)
{
    const uint8_t *row = s->data + (size_t)r * s->row_bytes;
    struct row_scale acc = {0, 0, 0};
    for (int64_t b = 0; b < s->ne0 / BR_QK_K; b++) {
        const uint8_t *blk = row + (size_t)b * sizeof(struct br_block_tq2_0);
        size_t bad = find_code3(blk, 64);
        if (bad < 64) {
            int64_t col = -1;
            for (int64_t c = b * BR_QK_K; c < (b + 1) * BR_QK_K && col < 0; c++)
                if (tq2_code(s, r, c) == 3) col = c;
            return br_err_set(err, BR_E_FORMAT, "tensor %s row %lld col %lld: invalid TQ2_0 code 3",
                              s->t->name, (long long)r, (long long)col);
        }
        int nonzero = 0;
        for (int i = 0; i < 64 && !nonzero; i++) nonzero = blk[i] != 0x55;
        int rc = scale_add(s, r, b, ld16(blk + 64), nonzero, &acc, err);
        if (rc) return rc;
    }
    *scale = scale_value(&acc);
    return BR_OK;
}

/* Whole-row scale of a TQ1_0 row; fills s->buf with the row's codes. */
static int tq1_scan_row(struct tsrc *s, int64_t r, float *scale, struct br_err *err)
{
    const uint8_t *row = s->data + (size_t)r * s->row_bytes;
    struct row_scale acc = {0, 0, 0};
    for (int64_t b = 0; b < s->ne0 / BR_QK_K; b++) {
        const uint8_t *blk = row + (size_t)b * sizeof(struct br_block_tq1_0);
        uint8_t *codes = s->buf + b * BR_QK_K;
        tq1_block_codes(blk, codes);
        int nonzero = 0;
        for (int i = 0; i < BR_QK_K && !nonzero; i++) nonzero = codes[i] != 1;
        int rc = scale_add(s, r, b, ld16(blk + 52), nonzero, &acc, err);
        if (rc) return rc;
    }
    *scale = scale_value(&acc);
    return BR_OK;
}

/* Bits of element c of a float row, widened to 32 bits. */
static inline uint32_t float_bits(const struct tsrc *s, const uint8_t *row, int64_t c)
{
    return s->type == BR_GGML_F32 ? ld32(row + 4 * c) : ld16(row + 2 * c);
}

/* The value of such bits. */
static float float_value(const struct tsrc *s, uint32_t u)
{
    switch (s->type) {
    case BR_GGML_F32:
        return br_fp32_from_bits(u);
    case BR_GGML_F16:
        return br_f16_to_f32((uint16_t)u);
    default:
        return br_bf16_to_f32((uint16_t)u);
    }
}

/* Whole-row check and scale of a float row; fills s->buf with its codes. s is the row's
 * max |value|; every value must be exactly 0, +s or -s. The work is done on bit patterns:
 * with the sign cleared, IEEE bits order like magnitudes, and "exactly +-s" is bit
 * equality, so the loops are plain integer compares (a 2B model stored as F16 has 2.4 G
 * of them). */
static int float_scan_row(struct tsrc *s, int64_t r, float *scale, struct br_err *err)
{
    const uint8_t *row = s->data + (size_t)r * s->row_bytes;
    const int64_t n = s->ne0;
    const int wide = s->type == BR_GGML_F32;
    const uint32_t sign = wide ? 0x80000000u : 0x8000u;
    const uint32_t inf = wide ? 0x7f800000u : s->type == BR_GGML_F16 ? 0x7c00u : 0x7f80u;
    uint32_t mx = 0;
    if (wide) {
        for (int64_t c = 0; c < n; c++) {
            uint32_t a = ld32(row + 4 * c) & 0x7fffffffu;
            mx = a > mx ? a : mx;
        }
    } else {
        for (int64_t c = 0; c < n; c++) {
            uint32_t a = ld16(row + 2 * c) & 0x7fffu;
            mx = a > mx ? a : mx;
        }
    }
    if (mx >= inf) { /* some value is inf or NaN: name the first */
        int64_t c = 0;
        while ((float_bits(s, row, c) & (sign - 1)) < inf) c++;
        return br_err_set(err, BR_E_FORMAT, "tensor %s row %lld col %lld: value %g is not ternary",
                          s->t->name, (long long)r, (long long)c,
                          (double)float_value(s, float_bits(s, row, c)));
    }
    const uint32_t neg = mx | sign;
    unsigned bad = 0;
    uint8_t *codes = s->buf;
    if (wide) {
        for (int64_t c = 0; c < n; c++) {
            uint32_t u = ld32(row + 4 * c);
            uint8_t code = (u & 0x7fffffffu) == 0 ? 1 : u == mx ? 2 : u == neg ? 0 : 3;
            codes[c] = code;
            bad |= code == 3;
        }
    } else {
        for (int64_t c = 0; c < n; c++) {
            uint32_t u = ld16(row + 2 * c);
            uint8_t code = (u & 0x7fffu) == 0 ? 1 : u == mx ? 2 : u == neg ? 0 : 3;
            codes[c] = code;
            bad |= code == 3;
        }
    }
    if (bad) {
        int64_t c = 0;
        while (codes[c] != 3) c++;
        return br_err_set(err, BR_E_FORMAT,
                          "tensor %s row %lld col %lld: value %g is not 0 or +-%g (not ternary)",
                          s->t->name, (long long)r, (long long)c,
                          (double)float_value(s, float_bits(s, row, c)),
                          (double)float_value(s, mx));
    }
    /* An all-zero row has no scale; 1 keeps it harmless. */
    *scale = mx ? float_value(s, mx) : 1.0f;
    return BR_OK;
}

/* Packs n codes (one per byte) into canonical blocks at dst (ceil(n/128) * 32 bytes);
 * columns past n get code 1. */
static void pack_codes(uint8_t *dst, const uint8_t *codes, int64_t n)
{
    int64_t nb = (n + BR_TMAT_BLOCK - 1) / BR_TMAT_BLOCK;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *cb = codes + b * BR_TMAT_BLOCK;
        uint8_t *db = dst + b * BR_TMAT_BLOCK_BYTES;
        if (n - b * BR_TMAT_BLOCK >= BR_TMAT_BLOCK) {
            for (int p = 0; p < 32; p++)
                db[p] = (uint8_t)(cb[p] << 6 | cb[p + 32] << 4 | cb[p + 64] << 2 | cb[p + 96]);
        } else {
            for (int p = 0; p < 32; p++) {
                unsigned byte = 0;
                for (int g = 0; g < 4; g++) {
                    int64_t k = b * BR_TMAT_BLOCK + 32 * g + p;
                    unsigned c = k < n ? codes[k] : 1u;
                    byte |= c << (6 - 2 * g);
                }
                db[p] = (uint8_t)byte;
            }
        }
    }
}

/* Sets the codes of a block's columns at index >= nvalid (within the block) to 1. */
static void pad_block(uint8_t *blk, int nvalid)
{
    for (int p = 0; p < 32; p++)
        for (int g = 0; g < 4; g++) {
            if (32 * g + p < nvalid) continue;
            int shift = 6 - 2 * g;
            blk[p] = (uint8_t)((blk[p] & ~(3u << shift)) | (1u << shift));
        }
}

/* The TQ2_0 bytes keep the first group of 32 in the low bits, the canonical layout in the
 * high bits: converting a byte reverses the order of its four 2-bit fields. */
static inline uint8_t rev2(uint8_t b)
{
    return (uint8_t)((b & 0x03) << 6 | (b & 0x0c) << 2 | (b & 0x30) >> 2 | (b & 0xc0) >> 6);
}

/* Byte size a ternary tensor of this shape needs, 0 if the shape does not fit the type. */
static uint64_t ternary_need(uint32_t type, int64_t ne0, int64_t ne1)
{
    uint64_t n = (uint64_t)ne0 * (uint64_t)ne1;
    switch (type) {
    case BR_GGML_I2_S:
        return n % BR_I2S_BLOCK ? 0 : n / 4 + BR_I2S_TAIL;
    case BR_GGML_TQ2_0:
        return ne0 % BR_QK_K ? 0 : n / BR_QK_K * sizeof(struct br_block_tq2_0);
    case BR_GGML_TQ1_0:
        return ne0 % BR_QK_K ? 0 : n / BR_QK_K * sizeof(struct br_block_tq1_0);
    case BR_GGML_F32:
        return n * 4;
    case BR_GGML_F16:
    case BR_GGML_BF16:
        return n * 2;
    default:
        return 0;
    }
}

static int decode_rows(struct tsrc *s, int32_t row0, int32_t row1, int32_t col0, int32_t col1,
                       struct br_tmat *out, struct br_err *err)
{
    const int64_t ncols = (int64_t)col1 - col0;
    const int aligned = col0 % BR_TMAT_BLOCK == 0;
    const int nb = out->blocks;
    const int last_valid = (int)(ncols - (int64_t)(nb - 1) * BR_TMAT_BLOCK);
    for (int64_t r = row0; r < row1; r++) {
        uint8_t *dst = out->codes + (size_t)(r - row0) * out->row_bytes;
        float scale = 1.0f;
        int rc = BR_OK;
        switch (s->type) {
        case BR_GGML_I2_S:
            rc = i2s_check_row(s, r, err);
            if (rc) return rc;
            scale = s->i2s_scale;
            if (aligned && s->ne0 % BR_I2S_BLOCK == 0) {
                /* Already the canonical layout: copy whole blocks, then pad. Reading the
                 * last block whole stays inside the row since ne0 is a multiple of 128. */
                memcpy(dst, s->data + ((size_t)r * (size_t)s->ne0 + (size_t)col0) / 4,
                       (size_t)nb * BR_TMAT_BLOCK_BYTES);
                if (last_valid < BR_TMAT_BLOCK)
                    pad_block(dst + (size_t)(nb - 1) * BR_TMAT_BLOCK_BYTES, last_valid);
            } else {
                for (int64_t c = col0; c < col1; c++) s->buf[c - col0] = i2s_code(s, r, c);
                pack_codes(dst, s->buf, ncols);
            }
            break;
        case BR_GGML_TQ2_0:
            rc = tq2_scan_row(s, r, &scale, err);
            if (rc) return rc;
            if (aligned) {
                const uint8_t *row = s->data + (size_t)r * s->row_bytes;
                for (int b = 0; b < nb; b++) {
                    int64_t c = col0 + (int64_t)b * BR_TMAT_BLOCK;
                    const uint8_t *qs = row +
                                        (size_t)(c / BR_QK_K) * sizeof(struct br_block_tq2_0) +
                                        (size_t)(c % BR_QK_K / 128) * 32;
                    uint8_t *db = dst + (size_t)b * BR_TMAT_BLOCK_BYTES;
                    for (int m = 0; m < 32; m++) db[m] = rev2(qs[m]);
                }
                if (last_valid < BR_TMAT_BLOCK)
                    pad_block(dst + (size_t)(nb - 1) * BR_TMAT_BLOCK_BYTES, last_valid);
            } else {
                for (int64_t c = col0; c < col1; c++) s->buf[c - col0] = tq2_code(s, r, c);
                pack_codes(dst, s->buf, ncols);
            }
            break;
        case BR_GGML_TQ1_0:
            rc = tq1_scan_row(s, r, &scale, err);
            if (rc) return rc;
            pack_codes(dst, s->buf + col0, ncols);
            break;
        default:
            rc = float_scan_row(s, r, &scale, err);
            if (rc) return rc;
            pack_codes(dst, s->buf + col0, ncols);
            break;
        }
        out->scale[r - row0] = scale;
    }
    return BR_OK;
}

int br_decode_ternary(const struct br_gguf_tensor *t, int32_t row0, int32_t row1, int32_t col0,
                      int32_t col1, struct br_tmat *out, struct br_err *err)
{
    return br_decode_ternary_in(t, row0, row1, col0, col1, NULL, out, err);
}

int br_decode_ternary_in(const struct br_gguf_tensor *t, int32_t row0, int32_t row1, int32_t col0,
                         int32_t col1, uint8_t *codes, struct br_tmat *out, struct br_err *err)
{
    memset(out, 0, sizeof *out);
    const char *name = t->name ? t->name : "?";
    switch (t->type) {
    case BR_GGML_I2_S:
    case BR_GGML_TQ1_0:
    case BR_GGML_TQ2_0:
    case BR_GGML_F32:
    case BR_GGML_F16:
    case BR_GGML_BF16:
        break;
    default: {
        const char *tn = br_ggml_type_name(t->type);
        return br_err_set(err, BR_E_UNSUPPORTED, "tensor %s: type %s (%u) is not a ternary type",
                          name, tn ? tn : "?", t->type);
    }
    }
    if (!(t->n_dims == 2 || (t->n_dims == 1 && t->ne[1] == 1)))
        return br_err_set(err, BR_E_FORMAT, "tensor %s: %u dimensions, a weight matrix has 2", name,
                          t->n_dims);
    if (t->ne[0] == 0 || t->ne[1] == 0 || t->ne[0] > INT32_MAX || t->ne[1] > INT32_MAX)
        return br_err_set(err, BR_E_FORMAT, "tensor %s: shape %llu x %llu unsupported", name,
                          (unsigned long long)t->ne[1], (unsigned long long)t->ne[0]);
    struct tsrc s = {.t = t,
                     .data = t->data,
                     .ne0 = (int64_t)t->ne[0],
                     .ne1 = (int64_t)t->ne[1],
                     .type = t->type};
    if (row0 < 0 || row0 >= row1 || row1 > s.ne1 || col0 < 0 || col0 >= col1 || col1 > s.ne0)
        return br_err_set(err, BR_E_INVALID,
                          "tensor %s: rows [%d, %d) x cols [%d, %d) outside %lld x %lld", name,
                          row0, row1, col0, col1, (long long)s.ne1, (long long)s.ne0);
    uint64_t need = ternary_need(t->type, s.ne0, s.ne1);
    if (need == 0)
        return br_err_set(err, BR_E_FORMAT, "tensor %s: %lld columns do not fit type %s", name,
                          (long long)s.ne0, br_ggml_type_name(t->type));
    if (t->nbytes < need || !t->data)
        return br_err_set(err, BR_E_FORMAT, "tensor %s: %llu bytes, its shape needs %llu", name,
                          (unsigned long long)t->nbytes, (unsigned long long)need);

    switch (t->type) {
    case BR_GGML_I2_S: {
        float sc = br_fp32_from_bits(ld32(s.data + need - BR_I2S_TAIL));
        if (!isfinite(sc) || sc < 0.0f)
            return br_err_set(err, BR_E_FORMAT, "tensor %s: I2_S scale %g is not finite and >= 0",
                              name, (double)sc);
        s.i2s_scale = fabsf(sc); /* folds -0 */
        break;
    }
    case BR_GGML_TQ2_0:
        s.row_bytes = (size_t)s.ne0 / BR_QK_K * sizeof(struct br_block_tq2_0);
        break;
    case BR_GGML_TQ1_0:
        s.row_bytes = (size_t)s.ne0 / BR_QK_K * sizeof(struct br_block_tq1_0);
        break;
    case BR_GGML_F32:
        s.row_bytes = (size_t)s.ne0 * 4;
        break;
    default:
        s.row_bytes = (size_t)s.ne0 * 2;
        break;
    }

    int rc = br_tmat_init_in(out, row1 - row0, col1 - col0, codes);
    if (rc)
        return br_err_set(err, rc, "tensor %s: cannot allocate %d x %d codes", name, row1 - row0,
                          col1 - col0);
    s.buf = malloc((size_t)s.ne0);
    if (!s.buf) {
        rc = br_err_set(err, BR_E_NOMEM, "tensor %s: cannot allocate a row buffer", name);
        goto fail;
    }
    rc = decode_rows(&s, row0, row1, col0, col1, out, err);
    free(s.buf);
    if (rc) goto fail;
    return BR_OK;
fail:
    br_tmat_free(out);
    return rc;
}

/* ---- encoding ---- */

uint64_t br_encode_ternary_size(uint32_t type, int32_t rows, int32_t cols)
{
    if (rows <= 0 || cols <= 0) return 0;
    /* I2_S rows must start on block boundaries so each row is the canonical one. */
    if (type == BR_GGML_I2_S && cols % BR_I2S_BLOCK) return 0;
    return ternary_need(type, cols, rows);
}

/* The codes of row r, one per byte, into codes (cols,); BR_E_INVALID on a code 3. */
static int unpack_row(const struct br_tmat *m, int32_t r, uint8_t *codes, struct br_err *err)
{
    const uint8_t *row = m->codes + (size_t)r * m->row_bytes;
    for (int32_t k = 0; k < m->cols; k++) {
        int b = k / BR_TMAT_BLOCK, e = k % BR_TMAT_BLOCK;
        uint8_t c = (row[b * BR_TMAT_BLOCK_BYTES + e % 32] >> (6 - 2 * (e / 32))) & 3;
        if (c == 3) return br_err_set(err, BR_E_INVALID, "matrix row %d col %d: code 3", r, k);
        codes[k] = c;
    }
    return BR_OK;
}

/* f16 bits of a row scale for a TQ block, or an error if it cannot be stored. */
static int tq_scale_bits(const struct br_tmat *m, int32_t r, uint16_t *out, struct br_err *err)
{
    float s = m->scale[r];
    uint16_t h = br_f32_to_f16(s);
    if (!isfinite(s) || s < 0.0f || (h & 0x7c00) == 0x7c00)
        return br_err_set(err, BR_E_RANGE, "row %d: scale %g cannot be stored as an f16 >= 0", r,
                          (double)s);
    *out = h;
    return BR_OK;
}

static void tq2_encode_row(const uint8_t *codes, int32_t cols, uint16_t d, uint8_t *out)
{
    for (int32_t b = 0; b < cols / BR_QK_K; b++) {
        const uint8_t *c = codes + (size_t)b * BR_QK_K;
        uint8_t *blk = out + (size_t)b * sizeof(struct br_block_tq2_0);
        for (int half = 0; half < 2; half++)
            for (int m = 0; m < 32; m++) {
                const uint8_t *e = c + 128 * half + m;
                blk[32 * half + m] = (uint8_t)(e[0] | e[32] << 2 | e[64] << 4 | e[96] << 6);
            }
        st16(blk + 64, d);
    }
}

/* n trits, most significant first, as the TQ1_0 byte whose decoding returns them: the
 * base-3 value v (scaled to 5 trits) stored as ceil(v * 256 / 243). */
static uint8_t tq1_byte(const uint8_t *e, int stride, int n)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) v = v * 3 + e[i * stride];
    for (int i = n; i < 5; i++) v *= 3;
    return (uint8_t)((v * 256 + 242) / 243);
}

static void tq1_encode_row(const uint8_t *codes, int32_t cols, uint16_t d, uint8_t *out)
{
    for (int32_t b = 0; b < cols / BR_QK_K; b++) {
        const uint8_t *c = codes + (size_t)b * BR_QK_K;
        uint8_t *blk = out + (size_t)b * sizeof(struct br_block_tq1_0);
        for (int m = 0; m < 32; m++) blk[m] = tq1_byte(c + m, 32, 5);
        for (int m = 0; m < 16; m++) blk[32 + m] = tq1_byte(c + 160 + m, 16, 5);
        for (int j = 0; j < 4; j++) blk[48 + j] = tq1_byte(c + 240 + j, 4, 4);
        st16(blk + 52, d);
    }
}

/* True if row r has a nonzero weight. */
static int row_nonzero(const struct br_tmat *m, int32_t r)
{
    const uint8_t *row = m->codes + (size_t)r * m->row_bytes;
    for (size_t i = 0; i < m->row_bytes; i++)
        if (row[i] != 0x55) return 1;
    return 0;
}

static int encode_i2s(const struct br_tmat *m, int32_t row0, int32_t row1, uint8_t *out,
                      struct br_err *err)
{
    /* One scale for the tensor: rows of zeros may carry any scale. */
    float scale = m->scale[0];
    int have = 0;
    for (int32_t r = 0; r < m->rows; r++) {
        if (!row_nonzero(m, r)) continue;
        if (!have) {
            scale = m->scale[r];
            have = 1;
        } else if (br_fp32_to_bits(m->scale[r]) != br_fp32_to_bits(scale)) {
            return br_err_set(err, BR_E_INVALID,
                              "I2_S holds one scale per tensor; rows carry %g and %g (row %d)",
                              (double)scale, (double)m->scale[r], r);
        }
    }
    if (!isfinite(scale) || scale < 0.0f)
        return br_err_set(err, BR_E_RANGE, "I2_S scale %g is not finite and >= 0", (double)scale);
    size_t nbytes = (size_t)(row1 - row0) * m->row_bytes;
    size_t off = find_code3(m->codes + (size_t)row0 * m->row_bytes, nbytes);
    if (off < nbytes)
        return br_err_set(err, BR_E_INVALID, "matrix row %d: code 3",
                          row0 + (int32_t)(off / m->row_bytes));
    /* cols % 128 == 0, so the canonical rows are the I2_S bytes with no padding. */
    memcpy(out, m->codes + (size_t)row0 * m->row_bytes, nbytes);
    if (row1 == m->rows) {
        memset(out + nbytes, 0, BR_I2S_TAIL);
        st32(out + nbytes, br_fp32_to_bits(scale));
    }
    return BR_OK;
}

int br_encode_ternary(uint32_t type, const struct br_tmat *m, int32_t row0, int32_t row1, void *out,
                      struct br_err *err)
{
    if (row0 < 0 || row0 >= row1 || row1 > m->rows)
        return br_err_set(err, BR_E_INVALID, "rows [%d, %d) outside a %d-row matrix", row0, row1,
                          m->rows);
    if (br_encode_ternary_size(type, m->rows, m->cols) == 0) {
        const char *tn = br_ggml_type_name(type);
        return br_err_set(err, BR_E_INVALID, "cannot encode a %d x %d ternary matrix as %s",
                          m->rows, m->cols, tn ? tn : "an unknown type");
    }
    uint8_t *o = out;
    if (type == BR_GGML_I2_S) return encode_i2s(m, row0, row1, o, err);

    uint8_t *codes = malloc((size_t)m->cols);
    if (!codes) return br_err_set(err, BR_E_NOMEM, "cannot allocate a row buffer");
    size_t row_out = (size_t)(ternary_need(type, m->cols, 1));
    int rc = BR_OK;
    for (int32_t r = row0; r < row1 && rc == BR_OK; r++) {
        uint8_t *dst = o + (size_t)(r - row0) * row_out;
        rc = unpack_row(m, r, codes, err);
        if (rc) break;
        uint16_t d = 0;
        switch (type) {
        case BR_GGML_TQ2_0:
            rc = tq_scale_bits(m, r, &d, err);
            if (!rc) tq2_encode_row(codes, m->cols, d, dst);
            break;
        case BR_GGML_TQ1_0:
            rc = tq_scale_bits(m, r, &d, err);
            if (!rc) tq1_encode_row(codes, m->cols, d, dst);
            break;
        default: {
            const float s = m->scale[r];
            for (int32_t k = 0; k < m->cols; k++) {
                float v = (float)((int)codes[k] - 1) * s;
                if (codes[k] == 1) v = 0.0f; /* never -0, whatever the scale's sign */
                if (type == BR_GGML_F32)
                    st32(dst + 4 * (size_t)k, br_fp32_to_bits(v));
                else if (type == BR_GGML_F16)
                    st16(dst + 2 * (size_t)k, br_f32_to_f16(v));
                else
                    st16(dst + 2 * (size_t)k, br_f32_to_bf16(v));
            }
            break;
        }
        }
    }
    free(codes);
    return rc;
}

uint64_t br_encode_rows_size(uint32_t type, uint64_t ne0, uint64_t nrows)
{
    uint64_t n;
    if (type != BR_GGML_F32 && type != BR_GGML_F16 && type != BR_GGML_BF16 &&
        type != BR_GGML_Q8_0 && type != BR_GGML_Q6_K)
        return 0;
    if (nrows == 0 || ne0 > UINT64_MAX / nrows) return 0;
    return br_ggml_type_nbytes(type, ne0, ne0 * nrows, &n) ? n : 0;
}

/* Least-squares scale of 16 values on the levels -32..31: among the scales that map the
 * value of largest magnitude near -32 (19 candidates), the one whose rounding leaves the
 * smallest squared error, refitted to those levels. */
static float q6_k_sub_scale(const float *x)
{
    float m = 0.0f;
    for (int i = 0; i < 16; i++)
        if (fabsf(x[i]) > fabsf(m)) m = x[i];
    if (m == 0.0f || !isfinite(m)) return 0.0f;
    float best = 0.0f, best_fit = -1.0f;
    for (int c = -9; c <= 9; c++) {
        float inv = -(32.0f + 0.1f * (float)c) / m, sxl = 0.0f, sll = 0.0f;
        for (int i = 0; i < 16; i++) {
            float l = fminf(31.0f, fmaxf(-32.0f, roundf(inv * x[i])));
            sxl += x[i] * l, sll += l * l;
        }
        /* error of the refitted scale s = sxl / sll: sum x^2 - sxl^2 / sll */
        if (sll > 0.0f && sxl * sxl / sll > best_fit) best_fit = sxl * sxl / sll, best = sxl / sll;
    }
    return best;
}

/* One Q6_K super-block from 256 floats: a least-squares scale per sub-block of 16, the 16
 * scales stored as int8 multiples of d (the one of largest magnitude as -128), and each
 * value rounded to the nearest of -32..31 under its stored scale. */
static void quant_q6_k_block(const float *x, uint8_t *blk)
{
    float s[16], smax = 0.0f;
    for (int j = 0; j < 16; j++) {
        s[j] = q6_k_sub_scale(x + 16 * j);
        if (fabsf(s[j]) > fabsf(smax)) smax = s[j];
    }
    memset(blk, 0, sizeof(struct br_block_q6_k));
    uint8_t u[256];
    memset(u, 32, sizeof u);
    const float d = smax / -128.0f;
    st16(blk + 208, br_f32_to_f16(d));
    const float dq = br_f16_to_f32(br_f32_to_f16(d)); /* the d a reader sees */
    for (int j = 0; j < 16; j++) {
        float sc = dq != 0.0f ? roundf(s[j] / dq) : 0.0f;
        sc = sc >= -128.0f ? (sc <= 127.0f ? sc : 127.0f) : (sc < -128.0f ? -128.0f : 0.0f);
        blk[192 + j] = (uint8_t)(int8_t)sc;
        float step = dq * sc;
        if (step == 0.0f) continue;
        for (int i = 0; i < 16; i++) {
            float l = roundf(x[16 * j + i] / step);
            l = l >= -32.0f ? (l <= 31.0f ? l : 31.0f) : -32.0f; /* NaN: -32 */
            u[16 * j + i] = (uint8_t)(l + 32.0f);
        }
    }
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *v = u + 128 * h + l;
            blk[64 * h + l] = (uint8_t)((v[0] & 15) | (v[64] & 15) << 4);
            blk[64 * h + 32 + l] = (uint8_t)((v[32] & 15) | (v[96] & 15) << 4);
            blk[128 + 32 * h + l] =
                (uint8_t)(v[0] >> 4 | (v[32] >> 4) << 2 | (v[64] >> 4) << 4 | (v[96] >> 4) << 6);
        }
}

int br_encode_rows_f32(uint32_t type, const float *x, uint64_t ne0, uint64_t nrows, void *out,
                       struct br_err *err)
{
    if (br_encode_rows_size(type, ne0, nrows) == 0) {
        const char *tn = br_ggml_type_name(type);
        return br_err_set(err, BR_E_INVALID, "cannot encode %llu x %llu floats as %s",
                          (unsigned long long)nrows, (unsigned long long)ne0,
                          tn ? tn : "an unknown type");
    }
    uint8_t *o = out;
    const uint64_t n = ne0 * nrows;
    switch (type) {
    case BR_GGML_F32:
        for (uint64_t i = 0; i < n; i++) st32(o + 4 * i, br_fp32_to_bits(x[i]));
        break;
    case BR_GGML_F16:
        for (uint64_t i = 0; i < n; i++) st16(o + 2 * i, br_f32_to_f16(x[i]));
        break;
    case BR_GGML_BF16:
        for (uint64_t i = 0; i < n; i++) st16(o + 2 * i, br_f32_to_bf16(x[i]));
        break;
    case BR_GGML_Q6_K:
        for (uint64_t b = 0; b < n / BR_QK_K; b++)
            quant_q6_k_block(x + b * BR_QK_K, o + b * sizeof(struct br_block_q6_k));
        break;
    default: /* Q8_0, rounded as ggml's reference quantizer does */
        for (uint64_t b = 0; b < n / BR_QK8_0; b++) {
            const float *xb = x + b * BR_QK8_0;
            uint8_t *blk = o + b * sizeof(struct br_block_q8_0);
            float amax = 0.0f;
            for (int j = 0; j < BR_QK8_0; j++) {
                float a = fabsf(xb[j]);
                if (a > amax) amax = a;
            }
            const float d = amax / 127.0f;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            st16(blk, br_f32_to_f16(d));
            for (int j = 0; j < BR_QK8_0; j++) {
                /* Finite inputs give |q| <= 127; the clamp only keeps NaN/inf defined. */
                float q = roundf(xb[j] * id);
                q = q >= -128.0f && q <= 127.0f ? q : 0.0f;
                blk[2 + j] = (uint8_t)(int8_t)q;
            }
        }
        break;
    }
    return BR_OK;
}
