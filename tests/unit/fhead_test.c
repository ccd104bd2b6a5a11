/*
 * Tests of the F16/BF16 head kernels (kernels/fhead.h): the reference returns exactly what
 * the model's per-row dot product returns (br_dot_f16_f32_ref for F16; the row decoded and
 * br_dot_f32_ref for BF16), and every variant this CPU can run returns the reference's
 * bits for GEMV and GEMM over row counts and sub-ranges, token counts 1..9, widths with
 * and without a tail (cols % 8), and values near F16's largest and in its subnormal range.
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
#include "kernels/fhead.h"
#include "kernels/ops.h"
#include "kernels/tune.h"
#include "test_util.h"

static br_fhead_gemm_fn variant_or_skip(void **state)
{
    const char *name = *state;
    br_fhead_gemm_fn f = br_fhead_find(name);
    if (!f) {
        print_message("[  SKIP  ] variant %s: not compiled in or not supported by this CPU\n",
                      name);
        skip();
    }
    return f;
}

static float rand_float(uint64_t *rng, float scale)
{
    return scale * (float)((int64_t)(br_test_rand(rng) % 20001) - 10000) / 10000.0f;
}

/* rows x cols of 16-bit floats with `pad` spare bytes per row, and the values as floats */
static uint8_t *make_rows(int64_t rows, int32_t cols, size_t row_bytes, int bf16, uint64_t *rng,
                          float *wf)
{
    uint8_t *p = calloc((size_t)rows, row_bytes);
    assert_non_null(p);
    for (int64_t r = 0; r < rows; r++)
        for (int32_t k = 0; k < cols; k++) {
            float v = rand_float(rng, 4.0f);
            if (k % 97 == 5) v = 60000.0f; /* near F16's largest */
            if (k % 89 == 7) v = 3e-7f;    /* F16 subnormal */
            uint16_t h = bf16 ? br_f32_to_bf16(v) : br_f32_to_f16(v);
            p[(size_t)r * row_bytes + 2 * (size_t)k] = (uint8_t)h;
            p[(size_t)r * row_bytes + 2 * (size_t)k + 1] = (uint8_t)(h >> 8);
            if (wf)
                wf[(size_t)r * (size_t)cols + (size_t)k] =
                    bf16 ? br_bf16_to_f32(h) : br_f16_to_f32(h);
        }
    return p;
}

static void test_ref_is_the_model_dot(void **state)
{
    (void)state;
    uint64_t rng = 11;
    static const int32_t widths[] = {1, 7, 8, 9, 64, 203, 2560};
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (size_t w = 0; w < sizeof widths / sizeof *widths; w++) {
            int32_t cols = widths[w];
            size_t rb = 2 * (size_t)cols + 6;
            float *wf = malloc(3 * (size_t)cols * sizeof *wf),
                  *x = malloc((size_t)cols * sizeof *x);
            assert_true(wf && x);
            uint8_t *rows = make_rows(3, cols, rb, bf16, &rng, wf);
            for (int32_t k = 0; k < cols; k++) x[k] = rand_float(&rng, 2.0f);
            struct br_fhead m = {rows, rb, 3, cols, bf16};
            float y[3];
            br_fhead_gemm_ref(&m, 0, 3, 1, x, 0, y, 3);
            for (int r = 0; r < 3; r++) {
                float want;
                if (bf16) {
                    want = br_dot_f32_ref(wf + (size_t)r * (size_t)cols, x, (size_t)cols);
                } else {
                    uint16_t *h = malloc((size_t)cols * sizeof *h);
                    assert_non_null(h);
                    memcpy(h, rows + (size_t)r * rb, 2 * (size_t)cols);
                    want = br_dot_f16_f32_ref(h, x, (size_t)cols);
                    free(h);
                }
                if (memcmp(&want, &y[r], sizeof want))
                    fail_msg("%s, %d columns, row %d: %.9g vs the model's dot %.9g",
                             bf16 ? "BF16" : "F16", cols, r, (double)y[r], (double)want);
            }
            free(rows), free(wf), free(x);
        }
}

static void check(const char *name, br_fhead_gemm_fn f, const struct br_fhead *m, int32_t ntok,
                  int64_t r0, int64_t r1, uint64_t *rng)
{
    size_t xs = (size_t)m->cols + 5, ys = (size_t)(r1 - r0) + 3;
    float *x = malloc((size_t)ntok * xs * sizeof *x);
    float *want = malloc((size_t)ntok * ys * sizeof *want),
          *got = malloc((size_t)ntok * ys * sizeof *got);
    assert_true(x && want && got);
    for (size_t i = 0; i < (size_t)ntok * xs; i++) x[i] = rand_float(rng, 3.0f);
    for (size_t i = 0; i < (size_t)ntok * ys; i++) want[i] = got[i] = 1234.5f;
    br_fhead_gemm_ref(m, r0, r1, ntok, x, xs, want, ys);
    f(m, r0, r1, ntok, x, xs, got, ys);
    for (size_t i = 0; i < (size_t)ntok * ys; i++)
        if (memcmp(&want[i], &got[i], sizeof(float)))
            fail_msg("%s %s: %lld rows x %d cols, %d tokens, rows %lld..%lld: element %zu want "
                     "%.9g got %.9g",
                     name, m->bf16 ? "BF16" : "F16", (long long)m->rows, m->cols, ntok,
                     (long long)r0, (long long)r1, i, (double)want[i], (double)got[i]);
    free(x), free(want), free(got);
}

static void test_shapes(void **state)
{
    br_fhead_gemm_fn f = variant_or_skip(state);
    static const int32_t shapes[][2] = {{1, 8}, {3, 13},  {5, 64},   {6, 203}, {9, 2560},
                                        {4, 7}, {16, 40}, {21, 100}, {8, 35}};
    uint64_t rng = 31;
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t rows = shapes[s][0];
            int32_t cols = shapes[s][1];
            size_t rb = 2 * (size_t)cols + 10;
            uint8_t *data = make_rows(rows, cols, rb, bf16, &rng, NULL);
            struct br_fhead m = {data, rb, rows, cols, bf16};
            for (int32_t ntok = 1; ntok <= 9; ntok++) {
                check(*state, f, &m, ntok, 0, rows, &rng);
                if (rows > 2) check(*state, f, &m, ntok, 1, rows - 1, &rng);
            }
            free(data);
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
    br_fhead_gemm_fn f = variant_or_skip(state);
    static const int ahead[] = {4096, 8192, 16384, 32768, 65536};
    static const int near[] = {0, 256, 4096};
    const struct br_tune saved = *br_tune_active();
    uint64_t rng = 77;
    for (int bf16 = 0; bf16 < 2; bf16++) {
        int64_t rows = 11;
        int32_t cols = 2563;
        size_t rb = 2 * (size_t)cols + 10;
        uint8_t *data = make_rows(rows, cols, rb, bf16, &rng, NULL);
        struct br_fhead m = {data, rb, rows, cols, bf16};
        struct br_tune t = br_tune_defaults();
        for (int a = 0; a < 5; a++)
            for (int h = 0; h < 4; h++)
                for (int n = 0; n < 3; n++) {
                    t.fhead_ahead = ahead[a], t.fhead_hint = h, t.fhead_near = near[n];
                    br_tune_set(&t);
                    check(*state, f, &m, 1, 0, rows, &rng);
                    check(*state, f, &m, 1, 1, rows - 1, &rng);
                }
        free(data);
    }
    br_tune_set(&saved);
}

#define VARIANT_TESTS(v)                                                                           \
    cmocka_unit_test_prestate(test_shapes, (void *)v),                                             \
        cmocka_unit_test_prestate_setup_teardown(test_tune_choices, NULL, tune_restore, (void *)v)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_is_the_model_dot),
        VARIANT_TESTS("ref"),
        VARIANT_TESTS("avx2"),
        VARIANT_TESTS("avx512"),
        VARIANT_TESTS("neon"),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
