/*
 * Tests of the Q6_K head kernels (kernels/q6k.h): every variant this CPU can run returns
 * the scalar reference's bits over row counts and sub-ranges, token counts 1..9 with padded
 * strides, and extreme super-blocks (6-bit values 0 and 63, scales -128 and 127,
 * activations +-127); the reference agrees with a double-precision product of the rows the
 * file decoder (sharding/decode.c) reads; and the Q6_K encoder used by `bitrack synth`
 * writes blocks that decoder reads back within half a quantization step.
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
#include "kernels/q6k.h"
#include "kernels/q8.h"
#include "kernels/tune.h"
#include "sharding/decode.h"
#include "sharding/types.h"
#include "test_util.h"

static br_q6k_gemm_fn variant_or_skip(void **state)
{
    const char *name = *state;
    br_q6k_gemm_fn f = br_q6k_find(name);
    if (!f) {
        print_message("[  SKIP  ] variant %s: not compiled in or not supported by this CPU\n",
                      name);
        skip();
    }
    return f;
}

enum wfill { W_RANDOM, W_LOW, W_HIGH };

/* rows x cols of random Q6_K bytes; d of magnitude 2^-14 .. 2^-7, either sign */
static uint8_t *make_rows(int64_t rows, int32_t cols, enum wfill how, uint64_t *rng)
{
    size_t nb = (size_t)rows * (size_t)(cols / BR_Q6K_BLOCK);
    uint8_t *p = malloc(nb * BR_Q6K_BLOCK_BYTES);
    assert_non_null(p);
    for (size_t b = 0; b < nb; b++) {
        uint8_t *blk = p + b * BR_Q6K_BLOCK_BYTES;
        for (int i = 0; i < 192; i++)
            blk[i] = how == W_LOW ? 0 : how == W_HIGH ? 0xff : (uint8_t)br_test_rand(rng);
        for (int j = 0; j < 16; j++)
            blk[192 + j] = how == W_LOW    ? (uint8_t)(int8_t)-128
                           : how == W_HIGH ? 127
                                           : (uint8_t)br_test_rand(rng);
        float mag = ldexpf(1.0f + (float)(br_test_rand(rng) % 1024) / 1024.0f,
                           -7 - (int)(br_test_rand(rng) % 8));
        uint16_t d = br_f32_to_f16(br_test_rand(rng) & 1 ? -mag : mag);
        blk[208] = (uint8_t)d, blk[209] = (uint8_t)(d >> 8);
    }
    return p;
}

enum xfill { X_RANDOM, X_MIN, X_MAX };

static void make_act(int32_t cols, int32_t ntok, size_t stride, size_t dstride, enum xfill how,
                     uint64_t *rng, int8_t *q, float *dx)
{
    float *x = malloc((size_t)cols * sizeof *x);
    assert_non_null(x);
    for (int32_t t = 0; t < ntok; t++) {
        for (int32_t k = 0; k < cols; k++)
            x[k] = how == X_MIN   ? -3.0f
                   : how == X_MAX ? 3.0f
                                  : (float)((int64_t)(br_test_rand(rng) % 20001) - 10000) / 1000.0f;
        br_q8_quantize_act(x, cols, q + (size_t)t * stride, dx + (size_t)t * dstride);
    }
    free(x);
}

static void check_gemm(const char *name, br_q6k_gemm_fn f, const struct br_q6kmat *m, int32_t ntok,
                       enum xfill xf, int64_t r0, int64_t r1, uint64_t *rng)
{
    size_t qs = (size_t)m->cols + 32, ds = (size_t)m->cols / 32 + 3, ys = (size_t)(r1 - r0) + 5;
    int8_t *q = calloc((size_t)ntok * qs, 1);
    float *dx = calloc((size_t)ntok * ds, sizeof *dx);
    float *want = calloc((size_t)ntok * ys, sizeof *want);
    float *got = calloc((size_t)ntok * ys, sizeof *got);
    assert_true(q && dx && want && got);
    make_act(m->cols, ntok, qs, ds, xf, rng, q, dx);
    for (size_t i = 0; i < (size_t)ntok * ys; i++) want[i] = got[i] = 1234.5f; /* sentinels */
    br_q6k_gemm_ref(m, r0, r1, ntok, q, qs, dx, ds, want, ys);
    f(m, r0, r1, ntok, q, qs, dx, ds, got, ys);
    for (size_t i = 0; i < (size_t)ntok * ys; i++)
        if (memcmp(&want[i], &got[i], sizeof(float)) != 0)
            fail_msg("%s: %lld rows x %d cols, %d tokens, rows %lld..%lld: element %zu want %.9g "
                     "got %.9g",
                     name, (long long)m->rows, m->cols, ntok, (long long)r0, (long long)r1, i,
                     (double)want[i], (double)got[i]);
    free(q), free(dx), free(want), free(got);
}

static void test_shapes(void **state)
{
    br_q6k_gemm_fn f = variant_or_skip(state);
    static const int32_t shapes[][2] = {{1, 256}, {3, 512}, {5, 768}, {2, 2560}, {7, 1024}};
    uint64_t rng = 4242;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        struct br_q6kmat m;
        uint8_t *rows = make_rows(shapes[s][0], shapes[s][1], W_RANDOM, &rng);
        assert_int_equal(br_q6kmat_view(&m, rows, shapes[s][0], shapes[s][1]), BR_OK);
        for (int32_t ntok = 1; ntok <= 9; ntok++) {
            check_gemm(*state, f, &m, ntok, X_RANDOM, 0, m.rows, &rng);
            if (m.rows > 2) check_gemm(*state, f, &m, ntok, X_RANDOM, 1, m.rows - 1, &rng);
        }
        check_gemm(*state, f, &m, 1, X_RANDOM, m.rows - 1, m.rows, &rng);
        free(rows);
    }
}

/* A failed check leaves the test early: the next tests get the defaults back. */
static int tune_restore(void **state)
{
    (void)state;
    br_tune_reset();
    return 0;
}

/* Every prefetch distance and hint of the calibration (kernels/tune.h) gives the same bits. */
static void test_tune_choices(void **state)
{
    br_q6k_gemm_fn f = variant_or_skip(state);
    static const int ahead[] = {4096, 8192, 16384, 32768, 65536};
    const struct br_tune saved = *br_tune_active();
    uint64_t rng = 99;
    struct br_q6kmat m;
    uint8_t *rows = make_rows(9, 2560, W_RANDOM, &rng);
    assert_int_equal(br_q6kmat_view(&m, rows, 9, 2560), BR_OK);
    struct br_tune t = br_tune_defaults();
    for (int a = 0; a < 5; a++)
        for (int h = 0; h < 4; h++) {
            t.q6k_ahead = ahead[a], t.q6k_hint = h;
            br_tune_set(&t);
            check_gemm(*state, f, &m, 1, X_RANDOM, 0, m.rows, &rng);
            check_gemm(*state, f, &m, 1, X_RANDOM, 1, m.rows - 1, &rng);
        }
    free(rows);
    br_tune_set(&saved);
}

static void test_extremes(void **state)
{
    br_q6k_gemm_fn f = variant_or_skip(state);
    uint64_t rng = 99;
    const enum wfill wf[] = {W_LOW, W_HIGH};
    const enum xfill xf[] = {X_MIN, X_MAX, X_RANDOM};
    for (size_t a = 0; a < 2; a++)
        for (size_t b = 0; b < 3; b++) {
            struct br_q6kmat m;
            uint8_t *rows = make_rows(3, 1024, wf[a], &rng);
            assert_int_equal(br_q6kmat_view(&m, rows, 3, 1024), BR_OK);
            for (int32_t ntok = 1; ntok <= 5; ntok += 4)
                check_gemm(*state, f, &m, ntok, xf[b], 0, 3, &rng);
            free(rows);
        }
}

/* The reference against sum_k w_k dx_b q_k in double, w_k as the file decoder reads it. */
static void test_ref_vs_double(void **state)
{
    (void)state;
    uint64_t rng = 5;
    const int32_t rows = 6, cols = 2560;
    uint8_t *data = make_rows(rows, cols, W_RANDOM, &rng);
    struct br_q6kmat m;
    assert_int_equal(br_q6kmat_view(&m, data, rows, cols), BR_OK);
    int8_t q[2560];
    float dx[80], y[6], w[2560];
    make_act(cols, 1, cols, 80, X_RANDOM, &rng, q, dx);
    br_q6k_gemm_ref(&m, 0, rows, 1, q, cols, dx, 80, y, rows);
    for (int32_t r = 0; r < rows; r++) {
        assert_int_equal(br_decode_rows_f32(BR_GGML_Q6_K, data, cols, (uint64_t)r, 1, w, NULL), 0);
        double want = 0, mag = 0;
        for (int32_t k = 0; k < cols; k++) {
            double t = (double)w[k] * (double)dx[k / 32] * (double)q[k];
            want += t, mag += fabs(t);
        }
        if (fabs((double)y[r] - want) > 1e-5 * mag + 1e-30)
            fail_msg("row %d: kernel %.9g, double %.9g (magnitude %.3g)", r, (double)y[r], want,
                     mag);
    }
    free(data);
}

/* Encode -> decode: every value within half its sub-block's step (plus the clamp at +31). */
static void test_encode(void **state)
{
    (void)state;
    uint64_t rng = 17;
    const int32_t cols = 512;
    float x[512], back[512];
    uint8_t blk[2 * BR_Q6K_BLOCK_BYTES];
    for (int round = 0; round < 50; round++) {
        float scale = ldexpf(1.0f, (int)(br_test_rand(&rng) % 20) - 10);
        for (int32_t k = 0; k < cols; k++)
            x[k] = scale * (float)((int64_t)(br_test_rand(&rng) % 20001) - 10000) / 10000.0f;
        if (round == 1) memset(x, 0, sizeof x);
        if (round == 2)
            for (int32_t k = 0; k < cols; k++) x[k] = k % 16 == 3 ? -scale : 0.5f * scale;
        assert_int_equal(br_encode_rows_size(BR_GGML_Q6_K, cols, 1), sizeof blk);
        assert_int_equal(br_encode_rows_f32(BR_GGML_Q6_K, x, cols, 1, blk, NULL), 0);
        assert_int_equal(br_decode_rows_f32(BR_GGML_Q6_K, blk, cols, 0, 1, back, NULL), 0);
        for (int32_t j = 0; j < cols / 16; j++) {
            const uint8_t *b = blk + (size_t)(j / 16) * BR_Q6K_BLOCK_BYTES;
            float step =
                br_f16_to_f32((uint16_t)(b[208] | b[209] << 8)) * (float)(int8_t)b[192 + j % 16];
            float amax = 0;
            for (int i = 0; i < 16; i++) amax = fmaxf(amax, fabsf(x[16 * j + i]));
            /* the step follows the sub-block's largest magnitude (int8 scales: a few % off) */
            if (amax > 0 && fabsf(fabsf(step) * 32.0f - amax) > 0.1f * amax)
                fail_msg("round %d sub-block %d: step %.9g for a largest magnitude %.9g", round, j,
                         (double)step, (double)amax);
            /* each value is the nearest of the 64 levels: within half a step, or clamped */
            for (int i = 0; i < 16; i++) {
                float v = x[16 * j + i], lo = -32.0f * step, hi = 31.0f * step;
                if (lo > hi) {
                    float t = lo;
                    lo = hi;
                    hi = t;
                }
                float clamped = fminf(hi, fmaxf(lo, v));
                float err = fabsf(back[16 * j + i] - v);
                if (err > fabsf(v - clamped) + 0.5f * fabsf(step) * 1.0001f + 1e-30f)
                    fail_msg("round %d value %d: %.9g decoded as %.9g (step %.9g)", round,
                             16 * j + i, (double)v, (double)back[16 * j + i], (double)step);
            }
        }
    }
}

#define VARIANT_TESTS(v)                                                                           \
    cmocka_unit_test_prestate(test_shapes, (void *)v),                                             \
        cmocka_unit_test_prestate_setup_teardown(test_tune_choices, NULL, tune_restore,            \
                                                 (void *)v),                                       \
        cmocka_unit_test_prestate(test_extremes, (void *)v)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_vs_double),
        cmocka_unit_test(test_encode),
        VARIANT_TESTS("ref"),
        VARIANT_TESTS("avx2"),
        VARIANT_TESTS("avx512"),
        VARIANT_TESTS("neon"),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
