/*
 * Tests of sharding/decode.c.
 *
 * Decoding is checked against blocks whose bytes are written here from the format's
 * description (docs/FORMATS.md §2), with expected weights worked out by hand, so an encoder and
 * decoder that agree on a wrong layout cannot pass. Encoder -> decoder round trips then
 * cover every type on random matrices and sub-rectangles, error cases check that a bad
 * tensor is refused with a message naming it, and the bitnet.cpp files (one model
 * quantized three ways) must decode to the same codes and scales.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitrack/fp.h"
#include "bitrack/status.h"
#include "kernels/ternary.h"
#include "sharding/decode.h"
#include "sharding/gguf.h"
#include "sharding/types.h"
#include "test_util.h"

/* A tensor over caller bytes, as the GGUF reader would describe it. */
static struct br_gguf_tensor tensor(const char *name, uint32_t type, uint64_t ne0, uint64_t ne1,
                                    const void *data, uint64_t nbytes)
{
    struct br_gguf_tensor t;
    memset(&t, 0, sizeof t);
    t.name = name;
    t.n_dims = 2;
    t.ne[0] = ne0;
    t.ne[1] = ne1;
    t.ne[2] = t.ne[3] = 1;
    t.type = type;
    t.nbytes = nbytes;
    t.nelem = ne0 * ne1;
    t.data = data;
    return t;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32f(uint8_t *p, float f)
{
    uint32_t u = br_fp32_to_bits(f);
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(u >> (8 * i));
}

/* Every weight of m equals want[r * cols + k] (NULL: all zero) and padding holds code 1. */
static void assert_weights(const struct br_tmat *m, const int8_t *want)
{
    for (int32_t r = 0; r < m->rows; r++) {
        for (int32_t k = 0; k < m->cols; k++) {
            int w = want ? want[(size_t)r * m->cols + k] : 0;
            if (br_tmat_get(m, r, k) != w) {
                fprintf(stderr, "weight (%d, %d): got %d want %d\n", r, k, br_tmat_get(m, r, k), w);
                fail();
            }
        }
        for (int32_t k = m->cols; k < m->blocks * BR_TMAT_BLOCK; k++)
            assert_int_equal(br_tmat_get(m, r, k), 0);
    }
}

/* ---- float rows, hand-built ---- */

static void test_rows_plain_hand(void **state)
{
    (void)state;
    float out[4];
    /* F32: 1.5, -2 / 0.25, 3 (two rows of 2; decode row 1 only). */
    uint8_t f32[16];
    put32f(f32, 1.5f);
    put32f(f32 + 4, -2.0f);
    put32f(f32 + 8, 0.25f);
    put32f(f32 + 12, 3.0f);
    assert_int_equal(br_decode_rows_f32(BR_GGML_F32, f32, 2, 1, 1, out, NULL), BR_OK);
    assert_true(out[0] == 0.25f && out[1] == 3.0f);
    /* F16: 0x3c00 = 1, 0xc000 = -2, 0x3555 ~ 1/3, 0x0001 = 2^-24. */
    uint8_t f16[8];
    put16(f16, 0x3c00);
    put16(f16 + 2, 0xc000);
    put16(f16 + 4, 0x3555);
    put16(f16 + 6, 0x0001);
    assert_int_equal(br_decode_rows_f32(BR_GGML_F16, f16, 4, 0, 1, out, NULL), BR_OK);
    assert_true(out[0] == 1.0f && out[1] == -2.0f);
    assert_true(fabsf(out[2] - 0.33325195f) < 1e-7f);
    assert_true(out[3] == 5.9604644775390625e-8f);
    /* BF16: the high half of an f32. 0x3fc0 = 1.5, 0xc120 = -10. */
    uint8_t bf[4];
    put16(bf, 0x3fc0);
    put16(bf + 2, 0xc120);
    assert_int_equal(br_decode_rows_f32(BR_GGML_BF16, bf, 2, 0, 1, out, NULL), BR_OK);
    assert_true(out[0] == 1.5f && out[1] == -10.0f);
}

static void test_rows_q8_0_hand(void **state)
{
    (void)state;
    /* Two rows of one block each; row 1: d = 0.5 (0x3800), q[j] = j - 16. */
    uint8_t b[2 * 34];
    memset(b, 0, sizeof b);
    put16(b, 0x3c00);
    put16(b + 34, 0x3800);
    for (int j = 0; j < 32; j++) b[34 + 2 + j] = (uint8_t)(int8_t)(j - 16);
    float out[32];
    assert_int_equal(br_decode_rows_f32(BR_GGML_Q8_0, b, 32, 1, 1, out, NULL), BR_OK);
    for (int j = 0; j < 32; j++) assert_true(out[j] == 0.5f * (float)(j - 16));
    /* A row length that is not a multiple of the block is refused. */
    struct br_err e;
    assert_int_equal(br_decode_rows_f32(BR_GGML_Q8_0, b, 33, 0, 1, out, &e), BR_E_INVALID);
    assert_int_equal(br_decode_rows_f32(BR_GGML_Q4_0, b, 32, 0, 1, out, &e), BR_E_UNSUPPORTED);
}

static void test_rows_q6_k_hand(void **state)
{
    (void)state;
    /* One Q6_K block: 128 bytes ql, 64 qh, 16 int8 scales, f16 d. Element y = 128h + 32g + l
     * (half h, group g, l < 32) takes the low nibble (g = 0, 1) or the high nibble (g = 2,
     * 3) of ql[64h + l + 32 * (g & 1)], the 2 bits of qh[32h + l] at 2g as bits 4-5, and
     * scale sc[8h + 2g + l / 16]; value = d * scale * (q - 32). */
    uint8_t b[210];
    memset(b, 0, sizeof b);
    uint8_t *ql = b, *qh = b + 128;
    int8_t *sc = (int8_t *)(b + 192);
    put16(b + 208, 0x3800); /* d = 0.5 */
    for (int i = 0; i < 16; i++) sc[i] = (int8_t)(i + 1);
    sc[5] = -3;
    /* Element 0 (h0 g0 l0): ql[0] low = 5, qh[0] bits 0-1 = 2 -> q = 37, sc[0] = 1:
     *   0.5 * 1 * 5 = 2.5
     * Element 96 + 17 = 113 (h0 g3 l17): ql[49] high = 0xA, qh[17] bits 6-7 = 1 -> q = 26,
     *   sc[6 + 1] = 8: 0.5 * 8 * (26 - 32) = -24
     * Element 128 + 32 + 20 = 180 (h1 g1 l20): ql[64 + 52] low = 0xF, qh[32 + 20] bits 2-3 = 3
     *   -> q = 63, sc[8 + 2 + 1] = 12: 0.5 * 12 * 31 = 186
     * Element 64 + 16 = 80 (h0 g2 l16): ql[16] high = 0, qh[16] bits 4-5 = 0 -> q = 0,
     *   sc[4 + 1] = -3: 0.5 * -3 * -32 = 48 */
    ql[0] = 0x05;
    qh[0] = 0x02;
    ql[49] = 0xA0;
    qh[17] = 0x40;
    ql[116] = 0x0F;
    qh[52] = 0x0C;
    float out[256];
    assert_int_equal(br_decode_rows_f32(BR_GGML_Q6_K, b, 256, 0, 1, out, NULL), BR_OK);
    assert_true(out[0] == 2.5f);
    assert_true(out[113] == -24.0f);
    assert_true(out[180] == 186.0f);
    assert_true(out[80] == 48.0f);
    /* Every other element by the rule stated above. */
    for (int y = 0; y < 256; y++) {
        int h = y / 128, g = (y % 128) / 32, l = y % 32;
        uint8_t lo = ql[64 * h + l + 32 * (g & 1)];
        int q = (g < 2 ? lo & 0xF : lo >> 4) | ((qh[32 * h + l] >> (2 * g)) & 3) << 4;
        float want = 0.5f * (float)sc[8 * h + 2 * g + l / 16] * (float)(q - 32);
        assert_true(out[y] == want);
    }
}

static void test_rows_round_trip(void **state)
{
    (void)state;
    uint64_t rng = 42;
    enum { NE0 = 96, ROWS = 5 };
    float x[NE0 * ROWS], y[NE0 * ROWS];
    for (int i = 0; i < NE0 * ROWS; i++)
        x[i] = (float)((int64_t)(br_test_rand(&rng) % 20001) - 10000) / 997.0f;
    const uint32_t types[] = {BR_GGML_F32, BR_GGML_F16, BR_GGML_BF16, BR_GGML_Q8_0};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        uint32_t type = types[ti];
        uint64_t sz = br_encode_rows_size(type, NE0, ROWS);
        assert_true(sz > 0);
        uint8_t *buf = malloc(sz);
        assert_int_equal(br_encode_rows_f32(type, x, NE0, ROWS, buf, NULL), BR_OK);
        /* rows 2..4 only */
        assert_int_equal(br_decode_rows_f32(type, buf, NE0, 2, 3, y, NULL), BR_OK);
        for (int i = 0; i < 3 * NE0; i++) {
            float v = x[2 * NE0 + i];
            if (type == BR_GGML_F32) assert_true(y[i] == v);
            if (type == BR_GGML_F16) assert_true(y[i] == br_f16_to_f32(br_f32_to_f16(v)));
            if (type == BR_GGML_BF16) assert_true(y[i] == br_bf16_to_f32(br_f32_to_bf16(v)));
            if (type == BR_GGML_Q8_0) {
                /* |error| <= d/2 plus the f16 rounding of d (relative 2^-11 of 127 d) */
                const float *blk = x + (2 * NE0 + i) / 32 * 32;
                float amax = 0;
                for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(blk[j]));
                assert_true(fabsf(y[i] - v) <= amax / 127.0f * 0.5f + amax / 1024.0f);
            }
        }
        free(buf);
    }
    /* Q8_0 bytes as ggml's reference quantizer computes them: d = amax/127 as f16,
     * q = roundf(x * (1/d)) with the unrounded d. Block: 0.5 j - 8 (amax 8). */
    float xb[32];
    for (int j = 0; j < 32; j++) xb[j] = 0.5f * (float)j - 8.0f;
    uint8_t q8[34];
    assert_int_equal(br_encode_rows_f32(BR_GGML_Q8_0, xb, 32, 1, q8, NULL), BR_OK);
    float d = 8.0f / 127.0f, id = 1.0f / d;
    assert_int_equal(q8[0] | q8[1] << 8, br_f32_to_f16(d));
    for (int j = 0; j < 32; j++) assert_int_equal((int8_t)q8[2 + j], (int)roundf(xb[j] * id));
    assert_int_equal((int8_t)q8[2], -127);
    /* All zeros: d = 0, q = 0. */
    memset(xb, 0, sizeof xb);
    assert_int_equal(br_encode_rows_f32(BR_GGML_Q8_0, xb, 32, 1, q8, NULL), BR_OK);
    for (int j = 0; j < 34; j++) assert_int_equal(q8[j], 0);
    assert_int_equal(br_encode_rows_size(BR_GGML_Q4_K, 256, 1), 0);
    assert_int_equal(br_encode_rows_size(BR_GGML_Q6_K, 256, 2), 2 * sizeof(struct br_block_q6_k));
    assert_int_equal(br_encode_rows_size(BR_GGML_Q6_K, 300, 1), 0);
    assert_int_equal(br_encode_rows_size(BR_GGML_Q8_0, 33, 1), 0);
}

/* ---- ternary types, hand-built ---- */

static void test_i2s_hand(void **state)
{
    (void)state;
    /* Two rows of 128: two blocks of 32 bytes, then the tail with the f32 scale 0.25. */
    uint8_t b[64 + 32];
    memset(b, 0x55, 64);
    memset(b + 64, 0, 32);
    put32f(b + 64, 0.25f);
    /* Row 0 byte 0 = 10 00 01 10: col 0 -> +1, col 32 -> -1, col 64 -> 0, col 96 -> +1. */
    b[0] = 0x86;
    /* Row 1 byte 31 = 00 00 10 01: col 31 -> -1, col 63 -> -1, col 95 -> +1, col 127 -> 0 */
    b[32 + 31] = 0x09;
    int8_t want[2 * 128] = {0};
    want[0] = 1;
    want[32] = -1;
    want[96] = 1;
    want[128 + 31] = -1;
    want[128 + 63] = -1;
    want[128 + 95] = 1;
    struct br_gguf_tensor t = tensor("w.i2s", BR_GGML_I2_S, 128, 2, b, sizeof b);
    struct br_tmat m;
    assert_int_equal(br_decode_ternary(&t, 0, 2, 0, 128, &m, NULL), BR_OK);
    assert_weights(&m, want);
    assert_true(m.scale[0] == 0.25f && m.scale[1] == 0.25f);
    br_tmat_free(&m);
    /* Columns [31, 97) of row 1 (the element-wise path). */
    assert_int_equal(br_decode_ternary(&t, 1, 2, 31, 97, &m, NULL), BR_OK);
    assert_int_equal(m.cols, 66);
    assert_int_equal(br_tmat_get(&m, 0, 0), -1);
    assert_int_equal(br_tmat_get(&m, 0, 32), -1);
    assert_int_equal(br_tmat_get(&m, 0, 64), 1);
    assert_int_equal(br_tmat_get(&m, 0, 65), 0);
    for (int k = 66; k < 128; k++) assert_int_equal(br_tmat_get(&m, 0, k), 0);
    br_tmat_free(&m);
    /* Columns [0, 64) of row 0: the copy path with a padded partial block. */
    assert_int_equal(br_decode_ternary(&t, 0, 1, 0, 64, &m, NULL), BR_OK);
    assert_int_equal(br_tmat_get(&m, 0, 0), 1);
    assert_int_equal(br_tmat_get(&m, 0, 32), -1);
    assert_int_equal(br_tmat_get(&m, 0, 96), 0); /* padding, though the file has +1 there */
    assert_int_equal(m.codes[0], 0x85);
    br_tmat_free(&m);
}

static void test_i2s_rows_across_blocks(void **state)
{
    (void)state;
    /* ne0 = 192: the flat array of blocks ignores row boundaries. Element (1, 0) is flat
     * index 192 = block 1, position 64: byte 32 + 0, bits 3-2. Element (0, 130) is flat 130
     * = block 1, position 2: byte 32 + 2, bits 7-6. */
    uint8_t b[96 + 32];
    memset(b, 0x55, 96);
    memset(b + 96, 0, 32);
    put32f(b + 96, 1.5f);
    b[32] = 0x59; /* 01 01 10 01: position 64 -> +1 */
    b[34] = 0x15; /* 00 01 01 01: position 2 -> -1 */
    struct br_gguf_tensor t = tensor("w.flat", BR_GGML_I2_S, 192, 2, b, sizeof b);
    struct br_tmat m;
    assert_int_equal(br_decode_ternary(&t, 0, 2, 0, 192, &m, NULL), BR_OK);
    int8_t want[2 * 192] = {0};
    want[192] = 1;
    want[130] = -1;
    assert_weights(&m, want);
    assert_true(m.scale[1] == 1.5f);
    br_tmat_free(&m);
}

static void test_tq2_0_hand(void **state)
{
    (void)state;
    /* One row, one block: qs[64], f16 d = 0.25 (0x3400). Element 128c + 32l + m has code
     * (qs[32c + m] >> 2l) & 3. */
    uint8_t b[66];
    memset(b, 0x55, 64);
    put16(b + 64, 0x3400);
    b[0] = 0x18;      /* 00 01 10 00: e0 -> -1, e32 -> +1, e64 -> 0, e96 -> -1 */
    b[32 + 5] = 0x62; /* 01 10 00 10: e133 -> +1, e165 -> -1, e197 -> +1, e229 -> 0 */
    int8_t want[256] = {0};
    want[0] = -1;
    want[32] = 1;
    want[96] = -1;
    want[133] = 1;
    want[165] = -1;
    want[197] = 1;
    struct br_gguf_tensor t = tensor("w.tq2", BR_GGML_TQ2_0, 256, 1, b, sizeof b);
    struct br_tmat m;
    assert_int_equal(br_decode_ternary(&t, 0, 1, 0, 256, &m, NULL), BR_OK);
    assert_weights(&m, want);
    assert_true(m.scale[0] == 0.25f);
    /* Canonical byte 0 of block 0 holds e0, e32, e64, e96 in bits 7-6 .. 1-0. */
    assert_int_equal(m.codes[0], 0x24);
    br_tmat_free(&m);
    /* Columns [100, 200): element-wise path. */
    assert_int_equal(br_decode_ternary(&t, 0, 1, 100, 200, &m, NULL), BR_OK);
    assert_weights(&m, want + 100);
    br_tmat_free(&m);
    /* Columns [128, 166): aligned path with padding. */
    assert_int_equal(br_decode_ternary(&t, 0, 1, 128, 166, &m, NULL), BR_OK);
    assert_weights(&m, want + 128);
    br_tmat_free(&m);
}

static void test_tq1_0_hand(void **state)
{
    (void)state;
    /* One block: qs[48], qh[4], f16 d = 0.5 (0x3800). A byte holding trits t0..t4 (t0 most
     * significant) is ceil(v * 256 / 243) with v their base-3 value; qh bytes hold 4 trits
     * and v is multiplied by 3 first. All trits 1 (weight 0): qs byte 128, qh byte 127. */
    uint8_t b[54];
    memset(b, 128, 48);
    memset(b + 48, 127, 4);
    put16(b + 52, 0x3800);
    /* qs[3] holds elements 3, 35, 67, 99, 131; trits 2 0 1 1 2: v = 176, ceil(176*256/243)
     * = 186. */
    b[3] = 186;
    /* qs[32 + 7] holds 167, 183, 199, 215, 231; trits 0 2 1 1 1: v = 67 -> 71. */
    b[39] = 71;
    /* qh[2] holds 242, 246, 250, 254; trits 2 1 1 0: v = 66 * 3 = 198 -> 209. */
    b[50] = 209;
    int8_t want[256] = {0};
    want[3] = 1;
    want[35] = -1;
    want[131] = 1;
    want[167] = -1;
    want[183] = 1;
    want[242] = 1;
    want[254] = -1;
    struct br_gguf_tensor t = tensor("w.tq1", BR_GGML_TQ1_0, 256, 1, b, sizeof b);
    struct br_tmat m;
    assert_int_equal(br_decode_ternary(&t, 0, 1, 0, 256, &m, NULL), BR_OK);
    assert_weights(&m, want);
    assert_true(m.scale[0] == 0.5f);
    br_tmat_free(&m);
    assert_int_equal(br_decode_ternary(&t, 0, 1, 33, 250, &m, NULL), BR_OK);
    assert_weights(&m, want + 33);
    br_tmat_free(&m);
}

static void test_tq1_0_trit_rule_exhaustive(void **state)
{
    (void)state;
    /* The stated byte encoding and trit extraction are inverses for all 243 5-trit and 81
     * 4-trit values. */
    for (unsigned v = 0; v < 243; v++) {
        unsigned byte = (v * 256 + 242) / 243;
        assert_true(byte < 256);
        unsigned pow3 = 1, got = 0;
        for (int n = 0; n < 5; n++, pow3 *= 3) {
            uint8_t tt = (uint8_t)(byte * pow3);
            got = got * 3 + ((tt * 3u) >> 8);
        }
        assert_int_equal(got, v);
    }
    /* And through the codec: every 5-trit combination at elements 0, 32, .., 128 (qs[0]),
     * 160, 176, .., 224 (qs[32]), every 4-trit one at 240, 244, 248, 252 (qh[0]). */
    struct br_tmat m;
    assert_int_equal(br_tmat_init(&m, 1, 256), BR_OK);
    m.scale[0] = 1.0f;
    uint8_t blk[54];
    for (unsigned v = 0; v < 243; v++) {
        unsigned x = v;
        for (int n = 4; n >= 0; n--, x /= 3) br_tmat_set(&m, 0, 32 * n, (int)(x % 3) - 1);
        x = v % 81;
        for (int n = 3; n >= 0; n--, x /= 3) br_tmat_set(&m, 0, 240 + 4 * n, (int)(x % 3) - 1);
        x = (v * 7 + 3) % 243; /* a different combination in qs[32] */
        for (int n = 4; n >= 0; n--, x /= 3) br_tmat_set(&m, 0, 160 + 16 * n, (int)(x % 3) - 1);
        assert_int_equal(br_encode_ternary(BR_GGML_TQ1_0, &m, 0, 1, blk, NULL), BR_OK);
        assert_int_equal(blk[0], (v * 256 + 242) / 243);
        struct br_gguf_tensor t = tensor("w", BR_GGML_TQ1_0, 256, 1, blk, sizeof blk);
        struct br_tmat d;
        assert_int_equal(br_decode_ternary(&t, 0, 1, 0, 256, &d, NULL), BR_OK);
        assert_memory_equal(d.codes, m.codes, m.row_bytes);
        br_tmat_free(&d);
    }
    br_tmat_free(&m);
}

static void test_float_ternary_hand(void **state)
{
    (void)state;
    /* F16 rows of 4: {1, -1, 0, -0} (scale 1), all zero (scale 1, codes 1),
     * {0, 0.5, 0, -0.5} (scale 0.5). */
    uint16_t h[12] = {0x3c00, 0xbc00, 0, 0x8000, 0, 0, 0, 0, 0, 0x3800, 0, 0xb800};
    uint8_t b[24];
    for (int i = 0; i < 12; i++) put16(b + 2 * i, h[i]);
    struct br_gguf_tensor t = tensor("w.f16", BR_GGML_F16, 4, 3, b, sizeof b);
    struct br_tmat m;
    assert_int_equal(br_decode_ternary(&t, 0, 3, 0, 4, &m, NULL), BR_OK);
    const int8_t want[12] = {1, -1, 0, 0, 0, 0, 0, 0, 0, 1, 0, -1};
    assert_weights(&m, want);
    assert_true(m.scale[0] == 1.0f && m.scale[1] == 1.0f && m.scale[2] == 0.5f);
    br_tmat_free(&m);
    /* BF16 and F32 of the same values. */
    uint8_t bf[8], f[16];
    const float v[4] = {0.75f, 0.0f, -0.75f, 0.75f};
    for (int i = 0; i < 4; i++) {
        put16(bf + 2 * i, br_f32_to_bf16(v[i]));
        put32f(f + 4 * i, v[i]);
    }
    const int8_t want1[4] = {1, 0, -1, 1};
    t = tensor("w.bf16", BR_GGML_BF16, 4, 1, bf, sizeof bf);
    assert_int_equal(br_decode_ternary(&t, 0, 1, 0, 4, &m, NULL), BR_OK);
    assert_weights(&m, want1);
    assert_true(m.scale[0] == 0.75f);
    br_tmat_free(&m);
    t = tensor("w.f32", BR_GGML_F32, 4, 1, f, sizeof f);
    t.n_dims = 1; /* a 1-D tensor is one row */
    assert_int_equal(br_decode_ternary(&t, 0, 1, 1, 4, &m, NULL), BR_OK);
    assert_weights(&m, want1 + 1);
    br_tmat_free(&m);
}

/* ---- round trips ---- */

/* A random rows x cols ternary matrix with per-row scales k/64 (exact in f16, bf16, f32),
 * or one scale for all rows; row 2 (if any) is all zero. */
static void random_tmat(struct br_tmat *m, int32_t rows, int32_t cols, int one_scale, uint64_t *rng)
{
    assert_int_equal(br_tmat_init(m, rows, cols), BR_OK);
    float s0 = (float)(1 + br_test_rand(rng) % 64) / 64.0f;
    for (int32_t r = 0; r < rows; r++) {
        m->scale[r] = one_scale ? s0 : (float)(1 + br_test_rand(rng) % 64) / 64.0f;
        if (r == 2) continue;
        for (int32_t k = 0; k < cols; k++) br_tmat_set(m, r, k, (int)(br_test_rand(rng) % 3) - 1);
    }
}

/* d holds rows [r0, r1) x cols [c0, c1) of m, and the same scales (zero rows: any scale,
 * except that TQ keeps it). */
static void assert_sub(const struct br_tmat *d, const struct br_tmat *m, int32_t r0, int32_t r1,
                       int32_t c0, int32_t c1, uint32_t type)
{
    assert_int_equal(d->rows, r1 - r0);
    assert_int_equal(d->cols, c1 - c0);
    for (int32_t r = r0; r < r1; r++) {
        int nonzero = 0;
        for (int32_t k = 0; k < m->cols && !nonzero; k++) nonzero = br_tmat_get(m, r, k) != 0;
        for (int32_t k = c0; k < c1; k++)
            if (br_tmat_get(d, r - r0, k - c0) != br_tmat_get(m, r, k)) {
                fprintf(stderr, "%s (%d, %d): got %d want %d\n", br_ggml_type_name(type), r, k,
                        br_tmat_get(d, r - r0, k - c0), br_tmat_get(m, r, k));
                fail();
            }
        for (int32_t k = c1 - c0; k < d->blocks * BR_TMAT_BLOCK; k++)
            assert_int_equal(br_tmat_get(d, r - r0, k), 0);
        if (nonzero || type == BR_GGML_TQ1_0 || type == BR_GGML_TQ2_0 || type == BR_GGML_I2_S)
            assert_true(d->scale[r - r0] == m->scale[r]);
        else
            assert_true(d->scale[r - r0] == 1.0f);
    }
}

static void round_trip(uint32_t type, int32_t rows, int32_t cols, uint64_t *rng)
{
    struct br_tmat m, d;
    random_tmat(&m, rows, cols, type == BR_GGML_I2_S, rng);
    uint64_t sz = br_encode_ternary_size(type, rows, cols);
    assert_true(sz > 0);
    uint8_t *buf = malloc(sz), *pieces = malloc(sz);
    assert_int_equal(br_encode_ternary(type, &m, 0, rows, buf, NULL), BR_OK);
    /* In two pieces: the same bytes. */
    int32_t split = rows / 2;
    uint64_t first = type == BR_GGML_I2_S ? (uint64_t)split * (uint64_t)cols / 4
                                          : br_encode_ternary_size(type, split, cols);
    assert_int_equal(br_encode_ternary(type, &m, 0, split, pieces, NULL), BR_OK);
    assert_int_equal(br_encode_ternary(type, &m, split, rows, pieces + first, NULL), BR_OK);
    assert_memory_equal(buf, pieces, sz);

    struct br_gguf_tensor t = tensor("rt", type, (uint64_t)cols, (uint64_t)rows, buf, sz);
    assert_int_equal(br_decode_ternary(&t, 0, rows, 0, cols, &d, NULL), BR_OK);
    assert_sub(&d, &m, 0, rows, 0, cols, type);
    br_tmat_free(&d);
    /* Sub-rectangles: aligned and not, partial last blocks, single rows and columns. */
    const int32_t rr[][2] = {{0, rows}, {1, rows - 1}, {rows - 1, rows}, {2, 3}};
    const int32_t cc[][2] = {
        {0, cols},           {128 % cols, cols},
        {1, cols - 1},       {cols / 2, cols},
        {cols - 1, cols},    {0, 1},
        {0, (cols + 1) / 2}, {cols / 3, cols / 3 + 130 < cols ? cols / 3 + 130 : cols}};
    for (size_t i = 0; i < sizeof rr / sizeof *rr; i++)
        for (size_t j = 0; j < sizeof cc / sizeof *cc; j++) {
            int32_t r0 = rr[i][0], r1 = rr[i][1], c0 = cc[j][0], c1 = cc[j][1];
            if (r0 >= r1 || c0 >= c1) continue;
            assert_int_equal(br_decode_ternary(&t, r0, r1, c0, c1, &d, NULL), BR_OK);
            assert_sub(&d, &m, r0, r1, c0, c1, type);
            br_tmat_free(&d);
        }
    free(buf);
    free(pieces);
    br_tmat_free(&m);
}

static void test_round_trips(void **state)
{
    (void)state;
    uint64_t rng = 7;
    const uint32_t types[] = {BR_GGML_I2_S, BR_GGML_TQ1_0, BR_GGML_TQ2_0,
                              BR_GGML_F16,  BR_GGML_F32,   BR_GGML_BF16};
    const int32_t cols[] = {128, 256, 640, 2560};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (size_t ci = 0; ci < sizeof cols / sizeof *cols; ci++) {
            if (br_encode_ternary_size(types[ti], 5, cols[ci]) == 0) {
                /* TQ needs whole 256-blocks per row */
                assert_true(cols[ci] % 256 != 0);
                continue;
            }
            round_trip(types[ti], 5, cols[ci], &rng);
        }
    round_trip(BR_GGML_F16, 6, 100, &rng);
    round_trip(BR_GGML_BF16, 3, 33, &rng);
    assert_int_equal(br_encode_ternary_size(BR_GGML_I2_S, 2, 100), 0);
    assert_int_equal(br_encode_ternary_size(BR_GGML_TQ2_0, 2, 128), 0);
    assert_int_equal(br_encode_ternary_size(BR_GGML_Q8_0, 2, 256), 0);
    assert_int_equal(br_encode_ternary_size(BR_GGML_I2_S, 3, 256), 3 * 64 + 32);
    assert_int_equal(br_encode_ternary_size(BR_GGML_TQ1_0, 3, 512), 6 * 54);
}

static void test_encode_errors(void **state)
{
    (void)state;
    struct br_tmat m;
    struct br_err e;
    uint8_t buf[4 * 66];
    assert_int_equal(br_tmat_init(&m, 2, 256), BR_OK);
    br_tmat_set(&m, 0, 0, 1);
    br_tmat_set(&m, 1, 0, 1);
    m.scale[1] = 0.5f;
    /* I2_S has one scale per tensor. */
    assert_int_equal(br_encode_ternary(BR_GGML_I2_S, &m, 0, 2, buf, &e), BR_E_INVALID);
    /* A zero row's scale does not matter. */
    br_tmat_set(&m, 1, 0, 0);
    assert_int_equal(br_encode_ternary(BR_GGML_I2_S, &m, 0, 2, buf, NULL), BR_OK);
    m.scale[0] = 1e6f; /* beyond f16 */
    assert_int_equal(br_encode_ternary(BR_GGML_TQ2_0, &m, 0, 2, buf, &e), BR_E_RANGE);
    assert_int_equal(br_encode_ternary(BR_GGML_TQ2_0, &m, 1, 1, buf, &e), BR_E_INVALID);
    assert_int_equal(br_encode_ternary(BR_GGML_Q8_0, &m, 0, 2, buf, &e), BR_E_INVALID);
    br_tmat_free(&m);
}

/* ---- errors ---- */

static void assert_error(const struct br_gguf_tensor *t, int32_t r0, int32_t r1, int32_t c0,
                         int32_t c1, int want, const char *needle)
{
    struct br_tmat m;
    struct br_err e = {{0}};
    int rc = br_decode_ternary(t, r0, r1, c0, c1, &m, &e);
    if (rc != want || !strstr(e.msg, t->name) || (needle && !strstr(e.msg, needle))) {
        fprintf(stderr, "rc %d (want %d): %s\n", rc, want, e.msg);
        fail();
    }
    assert_null(m.codes);
    assert_null(m.scale);
}

static void test_errors(void **state)
{
    (void)state;
    /* I2_S: a code 3 at row 1 col 40 (block 1 byte 8, bits 5-4), found even when only
     * columns [0, 8) are asked for, since checks cover the whole row. */
    uint8_t i2[64 + 32];
    memset(i2, 0x55, 64);
    memset(i2 + 64, 0, 32);
    put32f(i2 + 64, 1.0f);
    i2[32 + 8] = 0x75;
    struct br_gguf_tensor t = tensor("blk.3.ffn_up.weight", BR_GGML_I2_S, 128, 2, i2, sizeof i2);
    assert_error(&t, 0, 2, 0, 128, BR_E_FORMAT, "row 1 col 40");
    assert_error(&t, 1, 2, 0, 8, BR_E_FORMAT, "row 1 col 40");
    assert_error(&t, 1, 2, 3, 8, BR_E_FORMAT, "row 1 col 40");
    i2[32 + 8] = 0x55;
    /* NaN, infinite and negative scales. */
    put32f(i2 + 64, NAN);
    assert_error(&t, 0, 2, 0, 128, BR_E_FORMAT, "scale");
    put32f(i2 + 64, INFINITY);
    assert_error(&t, 0, 2, 0, 128, BR_E_FORMAT, "scale");
    put32f(i2 + 64, -0.5f);
    assert_error(&t, 0, 2, 0, 128, BR_E_FORMAT, "scale");
    put32f(i2 + 64, 0.0f); /* zero is allowed: every weight is then 0 */
    struct br_tmat m;
    assert_int_equal(br_decode_ternary(&t, 0, 2, 0, 128, &m, NULL), BR_OK);
    assert_true(m.scale[0] == 0.0f);
    br_tmat_free(&m);
    /* Too few bytes, bad shapes and ranges. */
    t.nbytes = 64 + 3;
    assert_error(&t, 0, 2, 0, 128, BR_E_FORMAT, "bytes");
    t.nbytes = sizeof i2;
    assert_error(&t, 0, 3, 0, 128, BR_E_INVALID, NULL);
    assert_error(&t, 0, 2, 0, 129, BR_E_INVALID, NULL);
    assert_error(&t, 1, 1, 0, 128, BR_E_INVALID, NULL);
    assert_error(&t, -1, 1, 0, 128, BR_E_INVALID, NULL);
    t.n_dims = 3;
    assert_error(&t, 0, 1, 0, 128, BR_E_FORMAT, "dimensions");
    t.n_dims = 1;
    assert_error(&t, 0, 1, 0, 128, BR_E_FORMAT, "dimensions"); /* 1-D with 2 rows */
    t = tensor("t.q8", BR_GGML_Q8_0, 32, 1, i2, sizeof i2);
    assert_error(&t, 0, 1, 0, 32, BR_E_UNSUPPORTED, NULL);

    /* I2_S rows that do not start on block boundaries (ne0 = 192): a code 3 at flat index
     * 130 (block 1, byte 2, bits 7-6) is row 0 col 130; row 1 alone is still fine. */
    uint8_t fl[96 + 32];
    memset(fl, 0x55, 96);
    memset(fl + 96, 0, 32);
    put32f(fl + 96, 1.0f);
    fl[34] = 0xd5;
    t = tensor("blk.4.attn_output.weight", BR_GGML_I2_S, 192, 2, fl, sizeof fl);
    assert_error(&t, 0, 1, 0, 192, BR_E_FORMAT, "row 0 col 130");
    assert_int_equal(br_decode_ternary(&t, 1, 2, 0, 192, &m, NULL), BR_OK);
    br_tmat_free(&m);

    /* TQ2_0: a code 3 at col 256 + 128 + 32 + 4 = 420 (block 1, qs[32 + 4], bits 3-2). */
    uint8_t tq[2 * 66];
    memset(tq, 0x55, sizeof tq);
    put16(tq + 64, 0x3c00);
    put16(tq + 66 + 64, 0x3c00);
    tq[66 + 36] = 0x5d;
    t = tensor("blk.0.attn_q.weight", BR_GGML_TQ2_0, 512, 1, tq, sizeof tq);
    assert_error(&t, 0, 1, 0, 512, BR_E_FORMAT, "row 0 col 420");
    tq[66 + 36] = 0x59; /* weight +1 in block 1 */
    /* Mixed scales in the row; block 0 is all zero, so it does not count ... */
    put16(tq + 64, 0x3800);
    assert_int_equal(br_decode_ternary(&t, 0, 1, 0, 512, &m, NULL), BR_OK);
    assert_true(m.scale[0] == 1.0f);
    br_tmat_free(&m);
    /* ... until it has a nonzero weight. */
    tq[0] = 0x56;
    assert_error(&t, 0, 1, 0, 256, BR_E_FORMAT, "different scales (0.5 vs 1)");
    put16(tq + 64, 0x7e00); /* NaN d */
    assert_error(&t, 0, 1, 0, 512, BR_E_FORMAT, "scale");

    /* An all-zero TQ2_0 row keeps its first block's d (re-encoding gives the same bytes). */
    memset(tq, 0x55, sizeof tq);
    put16(tq + 64, 0x3800);
    put16(tq + 66 + 64, 0x0000);
    assert_int_equal(br_decode_ternary(&t, 0, 1, 0, 512, &m, NULL), BR_OK);
    assert_true(m.scale[0] == 0.5f);
    assert_weights(&m, NULL);
    br_tmat_free(&m);

    /* TQ1_0 with mixed scales: block 0 weight -1 at element 0 (qs[0] trit 0 = 0: v = 40,
     * ceil(40*256/243) = 43), block 1 all zero but for element 1 (qs[1] = 43). */
    uint8_t t1[2 * 54];
    for (int bk = 0; bk < 2; bk++) {
        memset(t1 + 54 * bk, 128, 48);
        memset(t1 + 54 * bk + 48, 127, 4);
    }
    t1[0] = 43;
    t1[54 + 1] = 43;
    put16(t1 + 52, 0x3c00);
    put16(t1 + 54 + 52, 0x4000);
    t = tensor("blk.1.ffn_down.weight", BR_GGML_TQ1_0, 512, 1, t1, sizeof t1);
    assert_error(&t, 0, 1, 300, 400, BR_E_FORMAT, "different scales (1 vs 2)");
    put16(t1 + 54 + 52, 0x3c00);
    assert_int_equal(br_decode_ternary(&t, 0, 1, 0, 512, &m, NULL), BR_OK);
    assert_int_equal(br_tmat_get(&m, 0, 0), -1);
    assert_int_equal(br_tmat_get(&m, 0, 257), -1);
    br_tmat_free(&m);

    /* Non-ternary floats: 0.5 in a row whose max is 1; NaN. */
    float fv[6] = {1.0f, 0.0f, -1.0f, 0.5f, 0.0f, 0.0f};
    uint8_t fb[24];
    for (int i = 0; i < 6; i++) put32f(fb + 4 * i, fv[i]);
    t = tensor("blk.2.attn_v.weight", BR_GGML_F32, 6, 1, fb, sizeof fb);
    assert_error(&t, 0, 1, 0, 2, BR_E_FORMAT, "col 3: value 0.5");
    put32f(fb + 12, NAN);
    assert_error(&t, 0, 1, 0, 6, BR_E_FORMAT, "col 3");
    uint8_t bb[4];
    put16(bb, 0x3f80);     /* bf16 1 */
    put16(bb + 2, 0x3f00); /* bf16 0.5 */
    t = tensor("blk.2.ffn_gate.weight", BR_GGML_BF16, 2, 1, bb, sizeof bb);
    assert_error(&t, 0, 1, 0, 1, BR_E_FORMAT, "col 1: value 0.5 is not 0 or +-1");
    uint8_t hb[4];
    put16(hb, 0x3c00);
    put16(hb + 2, 0x3c01);
    t = tensor("blk.2.attn_k.weight", BR_GGML_F16, 2, 1, hb, sizeof hb);
    assert_error(&t, 0, 1, 0, 2, BR_E_FORMAT, "not ternary");
}

/* ---- the bitnet.cpp files: one model quantized to I2_S, TQ2_0 and TQ1_0 ---- */

static void test_bitnet_cpp_files(void **state)
{
    (void)state;
    static const char *const files[3] = {"bitnet-cpp/gqa-i2_s.gguf", "bitnet-cpp/gqa-tq2_0.gguf",
                                         "bitnet-cpp/gqa-tq1_0.gguf"};
    struct br_gguf *g[3] = {NULL, NULL, NULL};
    struct br_err e;
    for (int f = 0; f < 3; f++) {
        int rc = br_gguf_open(br_test_data(files[f]), &g[f], &e);
        if (rc) {
            fprintf(stderr, "%s: %s\n", br_test_data(files[f]), e.msg);
            fail();
        }
    }
    size_t n_ternary = 0, max_diff_ulps = 0;
    double max_rel = 0;
    for (size_t i = 0; i < br_gguf_n_tensors(g[0]); i++) {
        const struct br_gguf_tensor *t0 = br_gguf_tensor_at(g[0], i);
        if (!br_ggml_type_is_ternary(t0->type)) continue;
        struct br_tmat m[3];
        for (int f = 0; f < 3; f++) {
            const struct br_gguf_tensor *t = br_gguf_find_tensor(g[f], t0->name);
            assert_non_null(t);
            assert_true(br_ggml_type_is_ternary(t->type));
            assert_int_equal(t->ne[0], t0->ne[0]);
            assert_int_equal(t->ne[1], t0->ne[1]);
            int rc = br_decode_ternary(t, 0, (int32_t)t->ne[1], 0, (int32_t)t->ne[0], &m[f], &e);
            if (rc) {
                fprintf(stderr, "%s: %s\n", br_test_data(files[f]), e.msg);
                fail();
            }
        }
        /* Identical codes; scales equal within f16 rounding of the I2_S f32 scale. */
        for (int f = 1; f < 3; f++) {
            assert_int_equal(m[f].rows, m[0].rows);
            if (memcmp(m[f].codes, m[0].codes, m[0].row_bytes * (size_t)m[0].rows) != 0) {
                fprintf(stderr, "%s: codes differ between %s and %s\n", t0->name, files[0],
                        files[f]);
                fail();
            }
            for (int32_t r = 0; r < m[0].rows; r++) {
                float a = m[0].scale[r], b = m[f].scale[r];
                assert_true(b == br_f16_to_f32(br_f32_to_f16(a)));
                double rel = fabs((double)a - b) / a;
                if (rel > max_rel) max_rel = rel;
                size_t ulps = (size_t)abs((int)br_f32_to_f16(a) - (int)br_f32_to_f16(b));
                if (ulps > max_diff_ulps) max_diff_ulps = ulps;
            }
        }
        /* A shard decodes to the matching part of the whole. */
        struct br_gguf_tensor const *t2 = br_gguf_find_tensor(g[1], t0->name);
        int32_t r1 = m[0].rows, c1 = m[0].cols;
        struct br_tmat s;
        assert_int_equal(br_decode_ternary(t2, r1 / 3, r1 / 2, c1 / 4 + 3, c1 - 5, &s, NULL),
                         BR_OK);
        assert_sub(&s, &m[0], r1 / 3, r1 / 2, c1 / 4 + 3, c1 - 5, BR_GGML_TQ2_0);
        br_tmat_free(&s);
        for (int f = 0; f < 3; f++) br_tmat_free(&m[f]);
        n_ternary++;
    }
    printf("bitnet.cpp files: %zu ternary tensors agree in codes; scales max rel diff %.3g\n",
           n_ternary, max_rel);
    assert_true(n_ternary > 0);
    for (int f = 0; f < 3; f++) br_gguf_close(&g[f]);
}

/* ---- speed of the fast paths, printed (a 2B model must load in seconds) ---- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void test_decode_speed(void **state)
{
    (void)state;
    /* ffn_gate of BitNet-b1.58-2B-4T: ne = {2560, 6912}. */
    const int32_t rows = 6912, cols = 2560;
    uint64_t rng = 99;
    struct br_tmat m;
    random_tmat(&m, rows, cols, 1, &rng);
    const uint32_t types[] = {BR_GGML_I2_S, BR_GGML_TQ2_0, BR_GGML_TQ1_0, BR_GGML_F16};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        uint64_t sz = br_encode_ternary_size(types[ti], rows, cols);
        uint8_t *buf = malloc(sz);
        assert_int_equal(br_encode_ternary(types[ti], &m, 0, rows, buf, NULL), BR_OK);
        struct br_gguf_tensor t =
            tensor("speed", types[ti], (uint64_t)cols, (uint64_t)rows, buf, sz);
        struct br_tmat d;
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now_ms();
            assert_int_equal(br_decode_ternary(&t, 0, rows, 0, cols, &d, NULL), BR_OK);
            double dt = now_ms() - t0;
            if (dt < best) best = dt;
            if (rep == 0) assert_memory_equal(d.codes, m.codes, m.row_bytes * (size_t)rows);
            br_tmat_free(&d);
        }
        printf("decode %s %dx%d: %.1f ms\n", br_ggml_type_name(types[ti]), cols, rows, best);
        free(buf);
    }
    br_tmat_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_plain_hand),
        cmocka_unit_test(test_rows_q8_0_hand),
        cmocka_unit_test(test_rows_q6_k_hand),
        cmocka_unit_test(test_rows_round_trip),
        cmocka_unit_test(test_i2s_hand),
        cmocka_unit_test(test_i2s_rows_across_blocks),
        cmocka_unit_test(test_tq2_0_hand),
        cmocka_unit_test(test_tq1_0_hand),
        cmocka_unit_test(test_tq1_0_trit_rule_exhaustive),
        cmocka_unit_test(test_float_ternary_hand),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bitnet_cpp_files),
        cmocka_unit_test(test_decode_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
