/*
 * Per-token operations against values computed by hand: RMSNorm, RoPE (NEOX and normal),
 * BitLinear quantization and the exact integer product, and the canonical dot order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/ternary.h"

static void test_rmsnorm_hand(void **state)
{
    (void)state;
    /* x = (3, 4): mean square 12.5; 1/sqrt(12.5 + 0.5) = 1/sqrt(13) */
    const float x[2] = {3.0f, 4.0f}, w[2] = {1.0f, 2.0f};
    float y[2];
    br_rmsnorm(x, w, 2, 0.5f, y);
    assert_float_equal(y[0], 3.0f / sqrtf(13.0f), 1e-6);
    assert_float_equal(y[1], 8.0f / sqrtf(13.0f), 1e-6);
    /* in place, over more than one 256-chunk */
    float big[600], ones[600];
    for (int i = 0; i < 600; i++) big[i] = (i % 2) ? 2.0f : -2.0f, ones[i] = 1.0f;
    br_rmsnorm(big, ones, 600, 0.0f, big);
    for (int i = 0; i < 600; i++) assert_float_equal(big[i], (i % 2) ? 1.0f : -1.0f, 1e-6);
}

static void test_rope_hand(void **state)
{
    (void)state;
    /* head_dim 4, all dims rotated, base 10000: theta_0 = pos, theta_1 = pos / 100 */
    float v[4] = {1, 2, 3, 4};
    br_rope(v, 4, 4, 1, 10000.0f, 1); /* NEOX pairs (0,2) and (1,3) */
    double c0 = cos(1.0), s0 = sin(1.0), c1 = cos(0.01), s1 = sin(0.01);
    assert_float_equal(v[0], 1 * c0 - 3 * s0, 1e-6);
    assert_float_equal(v[2], 1 * s0 + 3 * c0, 1e-6);
    assert_float_equal(v[1], 2 * c1 - 4 * s1, 1e-6);
    assert_float_equal(v[3], 2 * s1 + 4 * c1, 1e-6);
    float u[4] = {1, 2, 3, 4};
    br_rope(u, 4, 4, 1, 10000.0f, 0); /* normal: pairs (0,1) and (2,3) */
    assert_float_equal(u[0], 1 * c0 - 2 * s0, 1e-6);
    assert_float_equal(u[1], 1 * s0 + 2 * c0, 1e-6);
    assert_float_equal(u[2], 3 * c1 - 4 * s1, 1e-6);
    assert_float_equal(u[3], 3 * s1 + 4 * c1, 1e-6);
    /* position 0 is the identity; partial rotation leaves the tail alone */
    float w[6] = {1, 2, 3, 4, 5, 6};
    br_rope(w, 6, 4, 0, 10000.0f, 1);
    for (int i = 0; i < 6; i++) assert_float_equal(w[i], i + 1, 0);
    br_rope(w, 6, 4, 3, 10000.0f, 0);
    assert_float_equal(w[4], 5, 0);
    assert_float_equal(w[5], 6, 0);
}

static void test_quantize_hand(void **state)
{
    (void)state;
    /* absmax 2: s = 63.5; 1 * 63.5 = 63.5 -> 64 (half to even), 0.5 * 63.5 = 31.75 -> 32,
     * -2 -> -127, 0.00787 * 63.5 = 0.4997 -> 0 */
    const float x[4] = {1.0f, 0.5f, -2.0f, 0.00787f};
    int8_t q[8];
    memset(q, 99, sizeof q);
    float s = br_quantize_absmax(x, 4, 8, q);
    assert_float_equal(s, 63.5f, 0);
    assert_int_equal(q[0], 64);
    assert_int_equal(q[1], 32);
    assert_int_equal(q[2], -127);
    assert_int_equal(q[3], 0);
    for (int i = 4; i < 8; i++) assert_int_equal(q[i], 0); /* padding zeroed */
    /* 2.5 and 3.5 at s = 1 round to even: 2 and 4 */
    const float h[2] = {2.5f, 3.5f};
    br_quantize_with_max(h, 2, 2, 127.0f, q);
    assert_int_equal(q[0], 2);
    assert_int_equal(q[1], 4);
    /* all zeros: s = 127 / 1e-5, every q 0 */
    const float z[3] = {0, 0, 0};
    s = br_quantize_absmax(z, 3, 3, q);
    assert_float_equal(s, 127.0f / 1e-5f, 1);
    for (int i = 0; i < 3; i++) assert_int_equal(q[i], 0);
}

static void test_bitlinear_hand(void **state)
{
    (void)state;
    /* W (2 x 3) = [[1, 0, -1], [-1, -1, 1]], q = (10, -20, 30):
     * row 0: 10 - 30 = -20; row 1: -10 + 20 + 30 = 40 */
    struct br_tmat m;
    assert_int_equal(br_tmat_init(&m, 2, 3), 0);
    const int w[2][3] = {{1, 0, -1}, {-1, -1, 1}};
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 3; k++) br_tmat_set(&m, r, k, w[r][k]);
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 3; k++) assert_int_equal(br_tmat_get(&m, r, k), w[r][k]);
    int8_t q[128] = {10, -20, 30};
    int32_t acc[2];
    br_tmat_gemv_ref(&m, 0, 2, q, acc);
    assert_int_equal(acc[0], -20);
    assert_int_equal(acc[1], 40);
    br_tmat_gemv(&m, 1, 2, q, acc);
    assert_int_equal(acc[0], 40);
    /* codes sit where docs/FORMATS.md §2 says: column 32 is bits 5-4 of byte 0 */
    br_tmat_set(&m, 0, 32, 1);
    assert_int_equal((m.codes[0] >> 4) & 3, 2);
    assert_int_equal((m.codes[0] >> 6) & 3, 2); /* column 0 is +1 */
    br_tmat_free(&m);
}

static void test_bitlinear_extremes(void **state)
{
    (void)state;
    /* all +1 against all -128 over 45568 columns: -128 * 45568 = -5832704, no overflow */
    int32_t K = 45568;
    struct br_tmat m;
    assert_int_equal(br_tmat_init(&m, 2, K), 0);
    for (int32_t k = 0; k < K; k++) br_tmat_set(&m, 0, k, 1), br_tmat_set(&m, 1, k, -1);
    static int8_t q[45568];
    memset(q, 0x80, sizeof q);
    int32_t acc[2];
    br_tmat_gemv(&m, 0, 2, q, acc);
    assert_int_equal(acc[0], -128 * K);
    assert_int_equal(acc[1], 128 * K);
    br_tmat_free(&m);
}

static void test_dot_canonical_order(void **state)
{
    (void)state;
    /* The order is part of the contract: lanes k % 8, combined ((0+4)+(2+6))+((1+5)+(3+7)).
     * 1e8 in lane 0 and -1e8 in lane 4 cancel first, so the small terms survive. */
    float a[9] = {1e8f, 1, 1, 1, -1e8f, 1, 1, 1, 1}, b[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    /* lane 0: 1e8 + 1 (k = 8) rounds to 1e8; lane 4: -1e8 */
    assert_float_equal(br_dot_f32(a, b, 9), 6.0f, 0);
    float x[3] = {1, 2, 3};
    assert_float_equal(br_dot_f32(x, x, 3), 14.0f, 0);
}

/* Quantization rounds half to even and clamps, exactly like nearbyintf then clamp: on
 * ties (k + 0.5), values next to ties, the clamp bounds and far outside them. */
static int8_t want_q(float v)
{
    v = nearbyintf(v);
    if (v > 127.0f) v = 127.0f;
    if (v < -128.0f) v = -128.0f;
    return (int8_t)v;
}

static void test_quantize_rounding(void **state)
{
    (void)state;
    enum { N = 4000 };
    static float x[N];
    static int8_t q[N + 5];
    for (int i = 0; i < N; i++) {
        float base = (float)(i % 600 - 300) * 0.5f; /* -150 .. 149.5, ties included */
        int which = i / 600;
        x[i] = which == 1   ? nextafterf(base, INFINITY)
               : which == 2 ? nextafterf(base, -INFINITY)
               : which == 3 ? base * 1e6f
               : which == 4 ? base * 1e-3f
                            : base;
    }
    x[0] = -0.0f, x[1] = 3e38f, x[2] = -3e38f, x[3] = 0.49999997f, x[4] = -0.5f;
    /* absmax 127 makes the scale exactly 1 */
    float s = br_quantize_with_max(x, N, N + 5, 127.0f, q);
    assert_true(s == 1.0f);
    for (int i = 0; i < N; i++)
        if (q[i] != want_q(x[i])) fail_msg("x=%a: %d vs %d", (double)x[i], q[i], want_q(x[i]));
    for (int i = N; i < N + 5; i++) assert_int_equal(q[i], 0);
    /* normq with r = 1 and the same absmax: qm = 1, so the same codes, also with a gain */
    static float ones[N];
    for (int i = 0; i < N; i++) ones[i] = 1.0f;
    static int8_t q2[N];
    br_normq_quantize(x, NULL, N, N, 127.0f, 1.0f, q2);
    assert_memory_equal(q, q2, N);
    br_normq_quantize(x, ones, N, N, 127.0f, 1.0f, q2);
    assert_memory_equal(q, q2, N);
}

/* The two-step RoPE (and br_rope) rotate exactly as the formula of ops.h, transcribed
 * here: theta in double, cos and sin rounded to float, products rounded one by one. */
static void test_rope_table(void **state)
{
    (void)state;
    float a[128], b[128], want[128], cs[128];
    for (int pos = 0; pos < 3000; pos += 37)
        for (int neox = 0; neox < 2; neox++) {
            for (int i = 0; i < 128; i++) a[i] = b[i] = want[i] = sinf((float)(i * 7 + pos));
            for (int i = 0; i < 48; i++) {
                double theta = (double)pos * pow(500000.0, -2.0 * i / 96.0);
                float c = (float)cos(theta), sn = (float)sin(theta);
                int u = neox ? i : 2 * i, v = neox ? i + 48 : 2 * i + 1;
                float x0 = want[u], x1 = want[v];
                float p0 = x0 * c, p1 = x1 * sn, p2 = x0 * sn, p3 = x1 * c;
                want[u] = p0 - p1;
                want[v] = p2 + p3;
            }
            br_rope(a, 128, 96, pos, 500000.0f, neox);
            br_rope_table(96, pos, 500000.0f, cs);
            br_rope_apply(b, 96, neox, cs);
            assert_memory_equal(a, want, sizeof a);
            assert_memory_equal(b, want, sizeof b);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_hand),       cmocka_unit_test(test_rope_hand),
        cmocka_unit_test(test_quantize_hand),      cmocka_unit_test(test_bitlinear_hand),
        cmocka_unit_test(test_bitlinear_extremes), cmocka_unit_test(test_dot_canonical_order),
        cmocka_unit_test(test_quantize_rounding),  cmocka_unit_test(test_rope_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
