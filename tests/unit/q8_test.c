/*
 * Tests of the Q8_0 head kernels (kernels/q8.h): every variant this CPU can run returns
 * the scalar reference's bits for GEMV and GEMM over odd row counts, row sub-ranges, token
 * counts 1..9 and 15..40 (whole and partial tiles) with padded strides, and extreme blocks (weights
 * -128 and 127, activations
 * +-127, all-equal values, zero blocks); the reference agrees with an independent double
 * computation; the activation quantizer and the GGUF repacking follow their definitions.
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

#include "bitrack/fp.h"
#include "kernels/q8.h"
#include "kernels/q8_impl.h"
#include "kernels/tune.h"
#include "sharding/decode.h"
#include "sharding/types.h"
#include "test_util.h"

static const struct br_q8_ops *variant_or_skip(void **state)
{
    const char *name = *state;
    const struct br_q8_ops *k = br_q8_ops_find(name);
    if (!k) {
        print_message("[  SKIP  ] variant %s: not compiled in or not supported by this CPU\n",
                      name);
        skip();
    }
    return k;
}

enum wfill { W_RANDOM, W_MIN, W_MAX, W_EQUAL, W_ZERO_SCALE };

/* Random scales are f16 values of magnitude 2^-12 .. 2^3, either sign. */
static uint16_t rand_scale(uint64_t *rng)
{
    float mag = ldexpf(1.0f + (float)(br_test_rand(rng) % 1024) / 1024.0f,
                       (int)(br_test_rand(rng) % 16) - 12);
    return br_f32_to_f16(br_test_rand(rng) & 1 ? -mag : mag);
}

static void fill_q8mat(struct br_q8mat *m, enum wfill how, uint64_t *rng)
{
    for (int64_t r = 0; r < m->rows; r++)
        for (int32_t b = 0; b < m->nb; b++) {
            *br_q8mat_scale(m, r, b) = how == W_ZERO_SCALE && b % 2 ? 0 : rand_scale(rng);
            for (int i = 0; i < BR_Q8_BLOCK; i++) {
                int8_t v;
                switch (how) {
                case W_MIN:
                    v = -128;
                    break;
                case W_MAX:
                    v = 127;
                    break;
                case W_EQUAL:
                    v = (int8_t)(r % 7 - 3);
                    break;
                default:
                    v = (int8_t)(br_test_rand(rng) & 0xff);
                    break;
                }
                br_q8mat_set(m, r, b * BR_Q8_BLOCK + i, v);
            }
        }
}

enum xfill { X_RANDOM, X_MIN, X_MAX, X_ZERO_BLOCKS };

/* Activations (ntok, stride) through the canonical quantizer; dx (ntok, dstride). */
static void make_act(int32_t cols, int32_t ntok, size_t stride, size_t dstride, enum xfill how,
                     uint64_t *rng, int8_t *q, float *dx)
{
    float *x = malloc((size_t)cols * sizeof *x);
    assert_non_null(x);
    for (int32_t t = 0; t < ntok; t++) {
        for (int32_t k = 0; k < cols; k++) {
            float v = (float)((int64_t)(br_test_rand(rng) % 20001) - 10000) / 1000.0f;
            if (how == X_MIN) v = -5.0f;
            if (how == X_MAX) v = 5.0f;
            if (how == X_ZERO_BLOCKS && (k / BR_Q8_BLOCK) % 3 == 1) v = 0.0f;
            x[k] = v;
        }
        br_q8_quantize_act(x, cols, q + (size_t)t * stride, dx + (size_t)t * dstride);
    }
    free(x);
}

static void check_bits(const char *what, const char *name, const float *want, const float *got,
                       size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&want[i], &got[i], sizeof(float)) != 0)
            fail_msg("%s %s: element %zu want %.9g (0x%08x) got %.9g (0x%08x)", name, what, i,
                     (double)want[i], br_fp32_to_bits(want[i]), (double)got[i],
                     br_fp32_to_bits(got[i]));
}

static void check_gemm(const struct br_q8_ops *k, const struct br_q8mat *m, int32_t ntok,
                       enum xfill xf, int64_t r0, int64_t r1, uint64_t *rng)
{
    size_t qs = (size_t)m->cols + 32, ds = (size_t)m->nb + 3, ys = (size_t)(r1 - r0) + 5;
    int8_t *q = calloc((size_t)ntok * qs, 1);
    float *dx = calloc((size_t)ntok * ds, sizeof *dx);
    float *want = calloc((size_t)ntok * ys, sizeof *want);
    float *got = calloc((size_t)ntok * ys, sizeof *got);
    assert_true(q && dx && want && got);
    make_act(m->cols, ntok, qs, ds, xf, rng, q, dx);
    for (size_t i = 0; i < (size_t)ntok * ys; i++) want[i] = got[i] = 1234.5f; /* sentinels */
    br_q8_gemm_ref(m, r0, r1, ntok, q, qs, dx, ds, want, ys);
    k->gemm(m, r0, r1, ntok, q, qs, dx, ds, got, ys);
    check_bits("gemm", k->name, want, got, (size_t)ntok * ys);
    if (ntok == 1) {
        for (size_t i = 0; i < ys; i++) got[i] = 1234.5f;
        k->gemv(m, r0, r1, q, dx, got);
        check_bits("gemv", k->name, want, got, ys);
    }
    free(q), free(dx), free(want), free(got);
}

static void test_shapes(void **state)
{
    const struct br_q8_ops *k = variant_or_skip(state);
    static const int32_t shapes[][2] = {{1, 32},  {3, 64},   {5, 96},    {7, 256}, {2, 288},
                                        {9, 800}, {4, 2560}, {33, 1536}, {1, 8192}};
    uint64_t rng = 777;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        struct br_q8mat m;
        assert_int_equal(br_q8mat_init(&m, shapes[s][0], shapes[s][1]), BR_OK);
        fill_q8mat(&m, W_RANDOM, &rng);
        for (int32_t ntok = 1; ntok <= 9; ntok++) {
            check_gemm(k, &m, ntok, X_RANDOM, 0, m.rows, &rng);
            if (m.rows > 2) check_gemm(k, &m, ntok, X_RANDOM, 1, m.rows - 1, &rng);
        }
        /* the serving batch sizes: whole and partial groups of 16 tokens */
        static const int32_t many[] = {15, 16, 17, 31, 32, 33, 40};
        for (size_t i = 0; i < sizeof many / sizeof *many; i++) {
            check_gemm(k, &m, many[i], X_RANDOM, 0, m.rows, &rng);
            if (m.rows > 2) check_gemm(k, &m, many[i], X_RANDOM, 1, m.rows, &rng);
        }
        check_gemm(k, &m, 1, X_RANDOM, m.rows - 1, m.rows, &rng);
        check_gemm(k, &m, 3, X_RANDOM, 0, 0, &rng);
        br_q8mat_free(&m);
    }
}

/* A failed check leaves the test early: the next tests get the defaults back. */
static int tune_restore(void **state)
{
    (void)state;
    br_tune_reset();
    return 0;
}

/* Every prefetch distance, hint and stream count of the calibration (kernels/tune.h) gives
 * the same bits, for one token and for the serving batch sizes; row ranges that the
 * streams cut evenly, with rows left over, and with fewer rows than streams. */
static void test_tune_choices(void **state)
{
    const struct br_q8_ops *k = variant_or_skip(state);
    const struct br_tune saved = *br_tune_active();
    uint64_t rng = 4242;
    struct br_q8mat m;
    assert_int_equal(br_q8mat_init(&m, 23, 2560), BR_OK);
    fill_q8mat(&m, W_RANDOM, &rng);
    struct br_tune t = br_tune_defaults();
    static const int streams[] = {1, 2, 4};
    for (int a = 1; a <= 3; a++)
        for (int h = 0; h < 4; h++)
            for (int s = 0; s < 3; s++) {
                t.q8_ahead = a, t.q8_hint = h, t.q8_streams = streams[s];
                br_tune_set(&t);
                assert_int_equal(br_tune_active()->q8_streams, streams[s]);
                check_gemm(k, &m, 1, X_RANDOM, 0, m.rows, &rng);
                check_gemm(k, &m, 1, X_RANDOM, 1, m.rows - 1, &rng);
                check_gemm(k, &m, 1, X_RANDOM, 3, 20, &rng);
                check_gemm(k, &m, 1, X_RANDOM, 5, 7, &rng);
                check_gemm(k, &m, 7, X_RANDOM, 0, m.rows, &rng);
            }
    br_q8mat_free(&m);
    br_tune_set(&saved);
}

static void test_extremes(void **state)
{
    const struct br_q8_ops *k = variant_or_skip(state);
    static const enum wfill wf[] = {W_MIN, W_MAX, W_EQUAL, W_ZERO_SCALE, W_RANDOM};
    static const enum xfill xf[] = {X_MIN, X_MAX, X_ZERO_BLOCKS, X_RANDOM};
    uint64_t rng = 4242;
    for (size_t a = 0; a < sizeof wf / sizeof *wf; a++) {
        struct br_q8mat m;
        assert_int_equal(br_q8mat_init(&m, 5, 2560), BR_OK);
        fill_q8mat(&m, wf[a], &rng);
        for (size_t b = 0; b < sizeof xf / sizeof *xf; b++) {
            check_gemm(k, &m, 1, xf[b], 0, m.rows, &rng);
            check_gemm(k, &m, 6, xf[b], 0, m.rows, &rng);
            check_gemm(k, &m, 33, xf[b], 0, m.rows, &rng);
        }
        br_q8mat_free(&m);
    }
}

/* The extreme block sum is exact: -128 * -127 * 32 (every pair 2 * 16256 = 32512, the
 * largest a maddubs pair can hold) through every variant. */
static void test_extreme_value(void **state)
{
    const struct br_q8_ops *k = variant_or_skip(state);
    struct br_q8mat m;
    assert_int_equal(br_q8mat_init(&m, 3, 64), BR_OK);
    for (int64_t r = 0; r < 3; r++)
        for (int i = 0; i < 64; i++) br_q8mat_set(&m, r, i, r == 1 ? 127 : -128);
    for (int64_t r = 0; r < 3; r++)
        for (int b = 0; b < 2; b++) *br_q8mat_scale(&m, r, b) = br_f32_to_f16(1.0f);
    int8_t q[64];
    float dx[2] = {1.0f, 1.0f}, y[3];
    for (int i = 0; i < 64; i++) q[i] = -127;
    k->gemv(&m, 0, 3, q, dx, y);
    assert_true(y[0] == 64.0f * 128.0f * 127.0f);
    assert_true(y[1] == -64.0f * 127.0f * 127.0f);
    br_q8mat_free(&m);
}

/* The reference against a plain double sum of dequantized products. */
static void test_ref_vs_double(void **state)
{
    (void)state;
    uint64_t rng = 99;
    struct br_q8mat m;
    assert_int_equal(br_q8mat_init(&m, 17, 2560), BR_OK);
    fill_q8mat(&m, W_RANDOM, &rng);
    int8_t *q = malloc(2560);
    float dx[80], y[17];
    assert_non_null(q);
    make_act(2560, 1, 2560, 80, X_RANDOM, &rng, q, dx);
    br_q8_gemv_ref(&m, 0, 17, q, dx, y);
    for (int r = 0; r < 17; r++) {
        double s = 0, mag = 0;
        for (int k = 0; k < 2560; k++) {
            double t = (double)br_f16_to_f32(*br_q8mat_scale(&m, r, k / 32)) *
                       br_q8mat_get(&m, r, k) * ((double)dx[k / 32] * q[k]);
            s += t;
            mag += fabs(t);
        }
        /* float accumulation of 2560 terms: error far below 1e-5 of the magnitude */
        if (fabs(y[r] - s) > 1e-5 * mag) fail_msg("row %d: %.9g vs %.9g", r, (double)y[r], s);
    }
    free(q);
    br_q8mat_free(&m);
}

/* The reference follows the documented order (q8.h) to the bit, computed here from plain
 * row-major weights: 16 float lanes, block b in lane b % 16, then the 16-lane combine.
 * Also checks that br_q8mat_set/get and the grouped storage keep every weight. */
static void test_ref_order(void **state)
{
    (void)state;
    uint64_t rng = 31337;
    static const int32_t cols_list[] = {32, 544, 2560, 3200};
    for (size_t c = 0; c < sizeof cols_list / sizeof *cols_list; c++) {
        const int32_t rows = 3, cols = cols_list[c], nb = cols / 32;
        int8_t *w = malloc((size_t)rows * (size_t)cols), *q = malloc((size_t)cols);
        uint16_t *d = malloc((size_t)rows * (size_t)nb * sizeof *d);
        float *dx = malloc((size_t)nb * sizeof *dx), y[3];
        assert_true(w && q && d && dx);
        struct br_q8mat m;
        assert_int_equal(br_q8mat_init(&m, rows, cols), BR_OK);
        for (int32_t r = 0; r < rows; r++)
            for (int32_t k = 0; k < cols; k++) {
                w[r * cols + k] = (int8_t)(br_test_rand(&rng) & 0xff);
                br_q8mat_set(&m, r, k, w[r * cols + k]);
                if (k % 32 == 0) {
                    d[r * nb + k / 32] = rand_scale(&rng);
                    *br_q8mat_scale(&m, r, k / 32) = d[r * nb + k / 32];
                }
            }
        make_act(cols, 1, (size_t)cols, (size_t)nb, X_RANDOM, &rng, q, dx);
        br_q8_gemv_ref(&m, 0, rows, q, dx, y);
        for (int32_t r = 0; r < rows; r++) {
            for (int32_t k = 0; k < cols; k++)
                assert_int_equal(br_q8mat_get(&m, r, k), w[r * cols + k]);
            float acc[16] = {0}, h[8];
            for (int32_t b = 0; b < nb; b++) {
                int32_t p = 0;
                for (int i = 0; i < 32; i++) p += w[r * cols + 32 * b + i] * q[32 * b + i];
                acc[b % 16] = fmaf((float)p, br_f16_to_f32(d[r * nb + b]) * dx[b], acc[b % 16]);
            }
            for (int j = 0; j < 8; j++) h[j] = acc[j] + acc[j + 8];
            float want = ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
            assert_memory_equal(&want, &y[r], sizeof want);
        }
        br_q8mat_free(&m);
        free(w), free(q), free(d), free(dx);
    }
}

static void test_quantize_act(void **state)
{
    (void)state;
    float x[96];
    int8_t q[96];
    float dx[3];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16) * 0.25f; /* amax 4 */
    for (int i = 32; i < 64; i++) x[i] = 0.0f;
    for (int i = 64; i < 96; i++) x[i] = -1e-30f * (float)(i - 63);
    br_q8_quantize_act(x, 96, q, dx);
    assert_true(dx[0] == 4.0f / 127.0f);
    assert_int_equal(q[0], -127); /* -4 */
    assert_int_equal(q[16], 0);
    assert_int_equal(q[31], (int)nearbyintf(3.75f * (127.0f / 4.0f)));
    assert_true(dx[1] == 0.0f);
    for (int i = 32; i < 64; i++) assert_int_equal(q[i], 0);
    assert_int_equal(q[95], -127);
    for (int i = 0; i < 96; i++) assert_true(q[i] >= -127 && q[i] <= 127);
}

/* Repacked rows decode to what the GGUF decoder gives for the same blocks. */
static void test_repack(void **state)
{
    (void)state;
    uint64_t rng = 5;
    const int rows = 3, cols = 96;
    float *x = malloc(sizeof(float) * rows * cols), *dec = malloc(sizeof(float) * rows * cols);
    size_t nbytes = br_encode_rows_size(BR_GGML_Q8_0, cols, rows);
    uint8_t *blocks = malloc(nbytes);
    assert_true(x && dec && blocks);
    for (int i = 0; i < rows * cols; i++)
        x[i] = (float)((int64_t)(br_test_rand(&rng) % 2001) - 1000) / 100.0f;
    assert_int_equal(br_encode_rows_f32(BR_GGML_Q8_0, x, cols, rows, blocks, NULL), BR_OK);
    assert_int_equal(br_decode_rows_f32(BR_GGML_Q8_0, blocks, cols, 0, rows, dec, NULL), BR_OK);
    struct br_q8mat m;
    assert_int_equal(br_q8mat_init(&m, rows + 1, cols), BR_OK);
    br_q8mat_set_rows_ggml(&m, 1, rows, blocks);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++)
            assert_true(br_f16_to_f32(*br_q8mat_scale(&m, r + 1, k / 32)) *
                            br_q8mat_get(&m, r + 1, k) ==
                        dec[r * cols + k]);
    for (int k = 0; k < cols; k++)
        assert_int_equal(br_q8mat_get(&m, 0, k), 0); /* row 0 untouched */
    struct br_q8mat bad;
    assert_int_equal(br_q8mat_init(&bad, 2, 33), BR_E_INVALID);
    assert_null(bad.qs);
    br_q8mat_free(&bad);
    br_q8mat_free(&m);
    br_q8mat_free(NULL);
    free(x), free(dec), free(blocks);
}

#define VARIANT_TESTS(v)                                                                           \
    cmocka_unit_test_prestate(test_shapes, (void *)v),                                             \
        cmocka_unit_test_prestate_setup_teardown(test_tune_choices, NULL, tune_restore,            \
                                                 (void *)v),                                       \
        cmocka_unit_test_prestate(test_extremes, (void *)v),                                       \
        cmocka_unit_test_prestate(test_extreme_value, (void *)v)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_vs_double),
        cmocka_unit_test(test_ref_order),
        cmocka_unit_test(test_quantize_act),
        cmocka_unit_test(test_repack),
        VARIANT_TESTS("ref"),
        VARIANT_TESTS("avx2"),
        VARIANT_TESTS("avx512"),
        VARIANT_TESTS("neon"),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
