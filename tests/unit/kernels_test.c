/*
 * Tests of the ternary kernels and the SIMD float dots: every variant this CPU can run
 * must match the scalar reference exactly (integer sums bit for bit, float dots to the
 * last bit). Variants the CPU or build lacks are skipped with the reason printed.
 * Shapes cover columns that are not multiples of 128, the largest FFN width (45568),
 * odd row counts, row sub-ranges, GEMM token counts 1..9 with padded strides, both code
 * unpackings of the AVX-512 GEMM at every tile shape, and both AVX2 GEMM multiply-adds.
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
#include "kernels/dispatch.h"
#include "kernels/kernel_impl.h"
#include "kernels/kset.h"
#include "kernels/ops.h"
#include "kernels/ternary.h"
#include "kernels/tune.h"
#include "test_util.h"

static const struct br_kernel_ops *variant_or_skip(void **state)
{
    const char *name = *state;
    const struct br_kernel_ops *k = br_kernels_find(name);
    if (!k) {
        print_message("[  SKIP  ] variant %s: not compiled in or not supported by this CPU\n",
                      name);
        skip();
    }
    return k;
}

enum fill { FILL_RANDOM, FILL_MINUS, FILL_PLUS, FILL_ZERO_HEAVY };

static void fill_matrix(struct br_tmat *m, enum fill how, uint64_t *rng)
{
    for (int32_t r = 0; r < m->rows; r++)
        for (int32_t k = 0; k < m->cols; k++) {
            int w;
            switch (how) {
            case FILL_MINUS:
                w = -1;
                break;
            case FILL_PLUS:
                w = 1;
                break;
            case FILL_ZERO_HEAVY:
                w = (br_test_rand(rng) % 8 == 0) ? 1 - 2 * (int)(br_test_rand(rng) & 1) : 0;
                break;
            default:
                w = (int)(br_test_rand(rng) % 3) - 1;
                break;
            }
            br_tmat_set(m, r, k, w);
        }
}

enum qfill { Q_RANDOM, Q_MIN, Q_MAX };

/* q: (kpad,), zero past cols as the contract requires. */
static int8_t *make_q(int32_t cols, int32_t kpad, enum qfill how, uint64_t *rng)
{
    int8_t *q = calloc((size_t)kpad, 1);
    assert_non_null(q);
    for (int32_t k = 0; k < cols; k++)
        q[k] = how == Q_MIN ? -128 : how == Q_MAX ? 127 : (int8_t)(br_test_rand(rng) & 0xff);
    return q;
}

static void check_gemv(const struct br_kernel_ops *k, struct br_tmat *m, const int8_t *q,
                       int32_t r0, int32_t r1)
{
    int32_t n = r1 - r0;
    int32_t *want = calloc((size_t)n + 1, sizeof *want), *got = calloc((size_t)n + 1, sizeof *got);
    assert_non_null(want);
    assert_non_null(got);
    got[n] = 0x5a5a5a5a; /* sentinel: nothing past r1 - r0 is written */
    br_tmat_gemv_ref(m, r0, r1, q, want);
    k->gemv(m, r0, r1, q, got);
    for (int32_t i = 0; i < n; i++) {
        if (want[i] != got[i])
            fail_msg("%s gemv %dx%d row %d: want %d got %d", k->name, m->rows, m->cols, r0 + i,
                     want[i], got[i]);
    }
    assert_int_equal(got[n], 0x5a5a5a5a);
    free(want);
    free(got);
}

/* Runs gemv on the canonical layout and, where the variant has one, its packed layout. */
static void check_gemv_layouts(const struct br_kernel_ops *k, struct br_tmat *m, const int8_t *q,
                               int32_t r0, int32_t r1)
{
    check_gemv(k, m, q, r0, r1);
    if (k->prepare) {
        assert_int_equal(k->prepare(m), BR_OK);
        check_gemv(k, m, q, r0, r1);
    }
#if defined(BR_HAVE_AVX512)
    if (k == br_kernels_find("avx512") && br_cpu_has_avx512vbmi()) {
        assert_int_equal(br_tmat_pack_t5_avx512(m), BR_OK);
        assert_int_equal(m->packed_kind, BR_PACK_T5);
        check_gemv(k, m, q, r0, r1);
    }
#endif
    free(m->packed);
    m->packed = NULL;
    m->packed_kind = BR_PACK_NONE;
}

static void test_gemv_shapes(void **state)
{
    const struct br_kernel_ops *k = variant_or_skip(state);
    static const int32_t shapes[][2] = {{1, 100},  {3, 128},   {5, 129},   {7, 256},   {9, 384},
                                        {4, 2560}, {11, 8640}, {6, 6912},  {2, 45568}, {17, 1000},
                                        {33, 640}, {9, 17000}, {8, 16384}, {5, 16640}};
    uint64_t rng = 12345;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        struct br_tmat m;
        assert_int_equal(br_tmat_init(&m, shapes[s][0], shapes[s][1]), BR_OK);
        fill_matrix(&m, FILL_RANDOM, &rng);
        int32_t kpad = m.blocks * BR_TMAT_BLOCK;
        int8_t *q = make_q(m.cols, kpad, Q_RANDOM, &rng);
        check_gemv_layouts(k, &m, q, 0, m.rows);
        if (m.rows > 2) check_gemv_layouts(k, &m, q, 1, m.rows - 1);
        check_gemv_layouts(k, &m, q, m.rows - 1, m.rows);
        check_gemv_layouts(k, &m, q, 0, 0);
        free(q);
        br_tmat_free(&m);
    }
}

static void test_gemv_extremes(void **state)
{
    const struct br_kernel_ops *k = variant_or_skip(state);
    static const int32_t cols_list[] = {100, 2560, 8640, 45568};
    static const enum fill fills[] = {FILL_MINUS, FILL_PLUS, FILL_RANDOM, FILL_ZERO_HEAVY};
    static const enum qfill qfills[] = {Q_MIN, Q_MAX, Q_RANDOM};
    uint64_t rng = 99;
    for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++)
        for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++) {
            struct br_tmat m;
            assert_int_equal(br_tmat_init(&m, 5, cols_list[c]), BR_OK);
            fill_matrix(&m, fills[f], &rng);
            int32_t kpad = m.blocks * BR_TMAT_BLOCK;
            for (size_t g = 0; g < sizeof qfills / sizeof qfills[0]; g++) {
                int8_t *q = make_q(m.cols, kpad, qfills[g], &rng);
                check_gemv_layouts(k, &m, q, 0, m.rows);
                free(q);
            }
            br_tmat_free(&m);
        }
    /* The extreme sums are what the reference says they are: all -1 against all -128. */
    struct br_tmat m;
    assert_int_equal(br_tmat_init(&m, 1, 45568), BR_OK);
    fill_matrix(&m, FILL_MINUS, &rng);
    int8_t *q = make_q(m.cols, m.blocks * BR_TMAT_BLOCK, Q_MIN, &rng);
    int32_t got = 0;
    k->gemv(&m, 0, 1, q, &got);
    assert_int_equal(got, 128 * 45568);
    free(q);
    br_tmat_free(&m);
}

/* GEMM of rows 1..rows-1 (or all when rows <= 2) for ntok tokens with padded strides,
 * computed by `gemm` (called `name` in messages). Activations are random (how ==
 * Q_RANDOM, with token 1 all -128 and token 2 all 127) or all -128 / all 127; the gaps
 * between outputs must stay untouched. */
static void check_gemm_fn(const char *name, br_gemm_fn gemm, struct br_tmat *m, int32_t ntok,
                          enum qfill how, uint64_t *rng)
{
    int32_t kpad = m->blocks * BR_TMAT_BLOCK;
    size_t q_stride = (size_t)kpad + (ntok % 2 ? 64 : 0);
    size_t acc_stride = (size_t)m->rows + (size_t)(ntok % 3);
    int8_t *q = calloc((size_t)ntok * q_stride, 1);
    assert_non_null(q);
    for (int32_t t = 0; t < ntok; t++)
        for (int32_t c = 0; c < m->cols; c++) {
            int8_t v = (int8_t)(br_test_rand(rng) & 0xff);
            if (how == Q_MIN || (how == Q_RANDOM && t == 1)) v = -128;
            if (how == Q_MAX || (how == Q_RANDOM && t == 2)) v = 127;
            q[(size_t)t * q_stride + (size_t)c] = v;
        }
    size_t n = (size_t)ntok * acc_stride;
    int32_t *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    assert_non_null(want);
    assert_non_null(got);
    for (size_t i = 0; i < n; i++) want[i] = got[i] = -7;
    int32_t r0 = m->rows > 2 ? 1 : 0, r1 = m->rows;
    br_tmat_gemm_ref(m, r0, r1, ntok, q, q_stride, want, acc_stride);
    gemm(m, r0, r1, ntok, q, q_stride, got, acc_stride);
    for (size_t i = 0; i < n; i++)
        if (want[i] != got[i])
            fail_msg("%s gemm %dx%d ntok %d index %zu: want %d got %d", name, m->rows, m->cols,
                     ntok, i, want[i], got[i]);
    free(want);
    free(got);
    free(q);
}

static void check_gemm(const struct br_kernel_ops *k, struct br_tmat *m, int32_t ntok,
                       uint64_t *rng)
{
    check_gemm_fn(k->name, k->gemm, m, ntok, Q_RANDOM, rng);
}

static void test_gemm(void **state)
{
    const struct br_kernel_ops *k = variant_or_skip(state);
    static const int32_t shapes[][2] = {{5, 100}, {7, 2560}, {3, 8640}, {2, 45568}, {9, 384}};
    uint64_t rng = 777;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        struct br_tmat m;
        assert_int_equal(br_tmat_init(&m, shapes[s][0], shapes[s][1]), BR_OK);
        fill_matrix(&m, s == 1 ? FILL_ZERO_HEAVY : FILL_RANDOM, &rng);
        for (int32_t ntok = 1; ntok <= 9; ntok++) check_gemm(k, &m, ntok, &rng);
        br_tmat_free(&m);
    }
}

/* Shapes that cross the kernels' blocking: several row blocks (about 256-512 KiB of
 * weights each) ending on an odd row, and token counts past the 64-token super-block. */
static void test_gemm_blocking(void **state)
{
    const struct br_kernel_ops *k = variant_or_skip(state);
    static const struct {
        int32_t rows, cols, ntok;
    } cases[] = {{97, 45568, 9}, {97, 45568, 1}, {263, 8192, 10},
                 {9, 384, 64},   {9, 384, 70},   {5, 8640, 130}};
    uint64_t rng = 4711;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct br_tmat m;
        assert_int_equal(br_tmat_init(&m, cases[i].rows, cases[i].cols), BR_OK);
        fill_matrix(&m, FILL_RANDOM, &rng);
        check_gemm(k, &m, cases[i].ntok, &rng);
        br_tmat_free(&m);
    }
}

#if defined(BR_HAVE_AVX512)
static void gemm_avx512_shift(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                              const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    br_tmat_gemm_avx512_unpack(m, r0, r1, ntok, q, q_stride, acc, acc_stride, 0);
}

static void gemm_avx512_gfni(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                             const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    br_tmat_gemm_avx512_unpack(m, r0, r1, ntok, q, q_stride, acc, acc_stride, 1);
}
#endif

#if defined(BR_HAVE_AVX2)
static void gemm_avx2_madd(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                           const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    br_tmat_gemm_avx2_vnni(m, r0, r1, ntok, q, q_stride, acc, acc_stride, 0);
}

static void gemm_avx2_vnni(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                           const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    br_tmat_gemm_avx2_vnni(m, r0, r1, ntok, q, q_stride, acc, acc_stride, 1);
}
#endif

/* One GEMM code path (a function of the test entry points) and the shapes it is run on. */
struct gemm_form {
    const char *name;
    br_gemm_fn fn;
};
struct gemm_case {
    int32_t rows, cols;
    enum fill how;
    int32_t t_lo, t_hi; /* token counts t_lo..t_hi */
};

/* Each of the nfns forms against the reference on every case and token count; weights of
 * one sign also meet activations all -128 and all 127. */
static __attribute__((unused)) void check_gemm_cases(const struct gemm_form *fns, int nfns,
                                                     const struct gemm_case *cases, size_t n,
                                                     uint64_t seed)
{
    uint64_t rng = seed;
    for (size_t i = 0; i < n; i++) {
        struct br_tmat m;
        assert_int_equal(br_tmat_init(&m, cases[i].rows, cases[i].cols), BR_OK);
        fill_matrix(&m, cases[i].how, &rng);
        for (int f = 0; f < nfns; f++)
            for (int32_t ntok = cases[i].t_lo; ntok <= cases[i].t_hi; ntok++) {
                check_gemm_fn(fns[f].name, fns[f].fn, &m, ntok, Q_RANDOM, &rng);
                if (cases[i].how == FILL_MINUS || cases[i].how == FILL_PLUS) {
                    check_gemm_fn(fns[f].name, fns[f].fn, &m, ntok, Q_MIN, &rng);
                    check_gemm_fn(fns[f].name, fns[f].fn, &m, ntok, Q_MAX, &rng);
                }
            }
        br_tmat_free(&m);
    }
}

/* Both multiply-adds of the AVX2 GEMM (vpmaddubsw, and AVX-VNNI where the CPU has it):
 * token counts 1..17 (tiles of 1..8), columns not a multiple of 128, up to 45568, weights
 * all -1 or all +1 with activations all -128 or all 127 (the int16 budget of vpmaddubsw). */
static void test_gemm_avx2_vnni(void **state)
{
    (void)state;
#if defined(BR_HAVE_AVX2)
    if (!br_kernels_find("avx2")) {
        print_message("[  SKIP  ] avx2 GEMM: this CPU has no AVX2\n");
        skip();
    }
    const struct gemm_form fns[2] = {{"avx2 maddubs", gemm_avx2_madd},
                                     {"avx2 avx-vnni", gemm_avx2_vnni}};
    int nfns = br_cpu_has_avxvnni() ? 2 : 1;
    if (nfns == 1) print_message("[  SKIP  ] avx2 avx-vnni: this CPU has no AVX-VNNI\n");
    static const struct gemm_case cases[] = {
        {6, 100, FILL_RANDOM, 1, 17},     {5, 2560, FILL_RANDOM, 1, 17},
        {3, 8640, FILL_RANDOM, 8, 9},     {2, 45568, FILL_RANDOM, 9, 9},
        {3, 6912, FILL_MINUS, 8, 9},      {3, 6912, FILL_PLUS, 8, 9},
        {9, 1000, FILL_ZERO_HEAVY, 7, 8},
    };
    check_gemm_cases(fns, nfns, cases, sizeof cases / sizeof cases[0], 123);
#else
    print_message("[  SKIP  ] avx2 GEMM: not compiled in\n");
    skip();
#endif
}

/* Both code unpackings of the AVX-512 GEMM (GFNI and shift + mask; the table runs only
 * one of them on a given CPU): every tile size (token counts 1..26 make tiles of 1..12
 * tokens and of both row counts), super-blocks of 64 tokens and their remainders (up to
 * 130), columns that are not a multiple of 64 or 128, several column chunks (sums carried
 * between them) up to 45568 columns, weights all -1 or all +1, activations all -128 or
 * all 127. */
static void test_gemm_avx512_unpack(void **state)
{
    (void)state;
#if defined(BR_HAVE_AVX512)
    if (!br_kernels_find("avx512")) {
        print_message("[  SKIP  ] avx512 GEMM unpacking: this CPU has no AVX-512 VNNI\n");
        skip();
    }
    const struct gemm_form fns[2] = {{"avx512 shift", gemm_avx512_shift},
                                     {"avx512 gfni", gemm_avx512_gfni}};
    int nfns = br_cpu_has_gfni() ? 2 : 1;
    if (nfns == 1) print_message("[  SKIP  ] avx512 gfni: this CPU has no GFNI\n");
    static const struct gemm_case cases[] = {
        {6, 100, FILL_RANDOM, 1, 26},     {5, 200, FILL_RANDOM, 1, 26},
        {4, 2560, FILL_RANDOM, 1, 26},    {7, 3100, FILL_RANDOM, 9, 13},
        {5, 8640, FILL_RANDOM, 11, 12},   {3, 1000, FILL_RANDOM, 60, 70},
        {3, 384, FILL_RANDOM, 126, 130},  {2, 45568, FILL_RANDOM, 12, 13},
        {3, 6912, FILL_MINUS, 12, 13},    {3, 6912, FILL_PLUS, 12, 13},
        {9, 1000, FILL_ZERO_HEAVY, 7, 8},
    };
    check_gemm_cases(fns, nfns, cases, sizeof cases / sizeof cases[0], 99);
#else
    print_message("[  SKIP  ] avx512 GEMM unpacking: not compiled in\n");
    skip();
#endif
}

static float rand_float(uint64_t *rng)
{
    /* mixed magnitudes and signs, so rounding order matters */
    uint64_t r = br_test_rand(rng);
    float mant = (float)(r & 0xffffff) / 16777216.0f - 0.5f;
    int e = (int)((r >> 24) % 16) - 8;
    return ldexpf(mant, e);
}

static void test_dot_f32(void **state)
{
    const struct br_kernel_ops *k = variant_or_skip(state);
    uint64_t rng = 4242;
    float *a = malloc(2600 * sizeof *a), *b = malloc(2600 * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < 2600; i++) {
        a[i] = rand_float(&rng);
        b[i] = rand_float(&rng);
    }
    for (size_t n = 0; n <= 300; n++) {
        /* an odd offset too, so unaligned loads are covered */
        for (size_t off = 0; off < 2; off++) {
            uint32_t want = br_fp32_to_bits(br_dot_f32_ref(a + off, b + off, n));
            uint32_t got = br_fp32_to_bits(k->dot_f32(a + off, b + off, n));
            if (want != got) fail_msg("%s dot_f32 n=%zu: %08x vs %08x", k->name, n, want, got);
        }
    }
    assert_int_equal(br_fp32_to_bits(br_dot_f32_ref(a, b, 2560)),
                     br_fp32_to_bits(k->dot_f32(a, b, 2560)));
    /* Signed zeros: products of -0 keep a lane at -0.0; the tail must not turn it +0. */
    float nz[11], one[11];
    for (int i = 0; i < 11; i++) {
        nz[i] = -0.0f;
        one[i] = 1.0f;
    }
    for (size_t n = 0; n <= 11; n++)
        assert_int_equal(br_fp32_to_bits(br_dot_f32_ref(nz, one, n)),
                         br_fp32_to_bits(k->dot_f32(nz, one, n)));
    free(a);
    free(b);
}

static void test_dot_f16(void **state)
{
    const struct br_kernel_ops *k = variant_or_skip(state);
    uint64_t rng = 31337;
    uint16_t *w = malloc(2600 * sizeof *w);
    float *x = malloc(2600 * sizeof *x);
    assert_non_null(w);
    assert_non_null(x);
    for (int i = 0; i < 2600; i++) {
        uint16_t h = (uint16_t)(br_test_rand(&rng) & 0xffff);
        if (((h >> 10) & 0x1f) == 0x1f) h &= 0xbfff; /* finite halves only, subnormals kept */
        w[i] = h;
        x[i] = rand_float(&rng);
    }
    for (size_t n = 0; n <= 300; n++)
        for (size_t off = 0; off < 2; off++) {
            uint32_t want = br_fp32_to_bits(br_dot_f16_f32_ref(w + off, x + off, n));
            uint32_t got = br_fp32_to_bits(k->dot_f16_f32(w + off, x + off, n));
            if (want != got) fail_msg("%s dot_f16 n=%zu: %08x vs %08x", k->name, n, want, got);
        }
    assert_int_equal(br_fp32_to_bits(br_dot_f16_f32_ref(w, x, 2560)),
                     br_fp32_to_bits(k->dot_f16_f32(w, x, 2560)));
    free(w);
    free(x);
}

/* The public entry points go through the active variant and agree with the reference. */
static void test_dispatch(void **state)
{
    (void)state;
    const char *name = br_kernels_name();
    print_message("active kernels: %s\n", name);
    assert_true(br_kernels_available(name));
    assert_true(br_kernels_available("ref"));
    assert_false(br_kernels_available("no-such-isa"));
    struct br_tmat m;
    uint64_t rng = 5;
    assert_int_equal(br_tmat_init(&m, 37, 2560), BR_OK);
    fill_matrix(&m, FILL_RANDOM, &rng);
    assert_int_equal(br_tmat_prepare(&m), BR_OK);
    int8_t *q = make_q(m.cols, m.blocks * BR_TMAT_BLOCK, Q_RANDOM, &rng);
    int32_t want[37], got[37];
    br_tmat_gemv_ref(&m, 0, 37, q, want);
    br_tmat_gemv(&m, 0, 37, q, got);
    assert_memory_equal(want, got, sizeof want);
    br_tmat_gemm(&m, 0, 37, 1, q, 0, got, 0);
    assert_memory_equal(want, got, sizeof want);
    float a[300], b[300];
    uint16_t h[300];
    for (int i = 0; i < 300; i++) {
        a[i] = rand_float(&rng);
        b[i] = rand_float(&rng);
        h[i] = br_f32_to_f16(a[i]);
    }
    assert_int_equal(br_fp32_to_bits(br_dot_f32(a, b, 299)),
                     br_fp32_to_bits(br_dot_f32_ref(a, b, 299)));
    assert_int_equal(br_fp32_to_bits(br_dot_f16_f32(h, b, 299)),
                     br_fp32_to_bits(br_dot_f16_f32_ref(h, b, 299)));
    free(q);
    br_tmat_free(&m);
}

/* The override picks the named variant where it can run and falls back to the best one
 * otherwise; the automatic choice prefers the widest vectors the CPU supports. */
static void test_select(void **state)
{
    (void)state;
    const struct br_kernel_ops *best = br_kernels_select(NULL);
    assert_ptr_equal(br_kernels_select(""), best);
    assert_ptr_equal(br_kernels_select("ref"), &br_kernels_ref);
    assert_ptr_equal(br_kernels_select("no-such-isa"), best);
    static const char *const names[] = {"avx2", "avx512", "neon"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const struct br_kernel_ops *k = br_kernels_find(names[i]);
        assert_ptr_equal(br_kernels_select(names[i]), k ? k : best);
    }
    if (br_kernels_find("avx512"))
        assert_string_equal(best->name, "avx512");
    else if (br_kernels_find("avx2"))
        assert_string_equal(best->name, "avx2");
}

/* A failed check leaves the test early: the next tests get the defaults back. */
static int tune_restore(void **state)
{
    (void)state;
    br_tune_reset();
    return 0;
}

/* Every choice of the calibrated parameters (kernels/tune.h) gives the reference's bits:
 * the GEMV under each rows-per-group x prefetch distance x hint, the GEMM under each
 * tokens-per-tile x row block, on shapes with tails of rows and odd blocks. */
static void test_tune_choices(void **state)
{
    const struct br_kernel_ops *k = variant_or_skip(state);
    static const int32_t shapes[][2] = {{13, 2560}, {7, 384}, {11, 8640}, {7, 16700}};
    static const int rows[] = {1, 2, 4}, ahead[] = {1, 2, 3, 4, 6, 8, 12, 16};
    static const int tmax[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, rb[] = {256, 512, 1024};
    const struct br_tune saved = *br_tune_active();
    uint64_t rng = 31337;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        struct br_tmat m;
        assert_int_equal(br_tmat_init(&m, shapes[s][0], shapes[s][1]), BR_OK);
        fill_matrix(&m, FILL_RANDOM, &rng);
        int8_t *q = make_q(m.cols, m.blocks * BR_TMAT_BLOCK, Q_RANDOM, &rng);
        struct br_tune t = br_tune_defaults();
        for (int r = 0; r < 3; r++)
            for (int a = 0; a < 8; a++)
                for (int h = 0; h < 4; h++) {
                    t.gemv_rows = rows[r], t.gemv_ahead = ahead[a], t.gemv_hint = h;
                    br_tune_set(&t);
                    assert_int_equal(br_tune_active()->gemv_rows, rows[r]);
                    check_gemv(k, &m, q, 0, m.rows);
                    check_gemv(k, &m, q, 1, m.rows - 2);
                }
        t = br_tune_defaults();
        for (int i = 0; i < 12; i++)
            for (int b = 0; b < 3; b++) {
                t.gemm_tmax = tmax[i], t.gemm_rb_kib = rb[b];
                br_tune_set(&t);
                check_gemm(k, &m, 13, &rng);
                if (b == 0) check_gemm(k, &m, 32, &rng);
            }
        free(q);
        br_tmat_free(&m);
    }
    br_tune_set(&saved);
}

/* The read probe reads every byte: it returns the sum of all 64-bit words of its range
 * (mod 2^64), for every stream count and prefetch distance. */
static void test_read_probe(void **state)
{
    const struct br_kernel_ops *k = variant_or_skip(state);
    assert_non_null(k->read_probe);
    enum { BYTES = 8 * 128 * 24 };
    uint64_t *buf = aligned_alloc(64, BYTES);
    assert_non_null(buf);
    uint64_t rng = 99, want = 0;
    for (size_t i = 0; i < BYTES / 8; i++) want += buf[i] = br_test_rand(&rng);
    static const int streams[] = {1, 2, 4, 8};
    static const size_t ahead[] = {0, 64, 1024, 4096};
    for (int s = 0; s < 4; s++)
        for (int a = 0; a < 4; a++) {
            uint64_t got = k->read_probe(buf, BYTES, streams[s], ahead[a]);
            if (got != want)
                fail_msg("%s read probe, %d streams, %zu ahead: %llu, want %llu", k->name,
                         streams[s], ahead[a], (unsigned long long)got, (unsigned long long)want);
        }
    free(buf);
}

/* Every variant this CPU runs has a whole kernel set (each family present, the ternary
 * table the variant's own, its dot giving the reference's norm statistics), one this CPU
 * cannot run has none, and the process's set is the active variant's. */
static void test_kernel_sets(void **state)
{
    (void)state;
    static const char *const names[] = {"ref", "avx2", "avx512", "neon", "neon-nodot"};
    int n_found = 0;
    enum { N = 3 * BR_CHUNK + 77 }; /* a partial last chunk */
    float x[N], g[N], want[4], got[4];
    for (int i = 0; i < N; i++) x[i] = sinf(0.37f * (float)i) * 3.0f, g[i] = 0.5f + 0.001f * i;
    float want_max = br_normq_stats(br_dot_f32_ref, x, g, N, BR_CHUNK, want);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct br_kernel_set ks;
        int rc = br_kernel_set_find(names[i], &ks);
        const struct br_kernel_ops *k = br_kernels_find(names[i]);
        if (!k) {
            assert_int_equal(rc, BR_E_NOTFOUND);
            continue;
        }
        assert_int_equal(rc, BR_OK);
        assert_ptr_equal(ks.ternary, k);
        assert_string_equal(ks.name, k->name);
        assert_non_null(ks.q8);
        assert_non_null(ks.q6k);
        assert_non_null(ks.fhead);
        assert_non_null(ks.attn);
        float got_max = br_normq_stats(ks.ternary->dot_f32, x, g, N, BR_CHUNK, got);
        assert_int_equal(br_fp32_to_bits(got_max), br_fp32_to_bits(want_max));
        assert_memory_equal(got, want, sizeof got);
        br_sumsq_chunks(ks.ternary->dot_f32, x, N, got);
        assert_memory_equal(got, want, sizeof got);
        n_found++;
    }
    assert_true(n_found >= 1); /* the reference at least */
    struct br_kernel_set none;
    assert_int_equal(br_kernel_set_find("sse9", &none), BR_E_NOTFOUND);
    const struct br_kernel_set *a = br_kernel_set_active();
    assert_ptr_equal(a->ternary, br_kernels_active());
    assert_ptr_equal(a, br_kernel_set_active()); /* chosen once */
}

#define VARIANT_TESTS(v)                                                                           \
    cmocka_unit_test_prestate(test_read_probe, (void *)v),                                         \
        cmocka_unit_test_prestate_setup_teardown(test_tune_choices, NULL, tune_restore,            \
                                                 (void *)v),                                       \
        cmocka_unit_test_prestate(test_gemv_shapes, (void *)v),                                    \
        cmocka_unit_test_prestate(test_gemv_extremes, (void *)v),                                  \
        cmocka_unit_test_prestate(test_gemm, (void *)v),                                           \
        cmocka_unit_test_prestate(test_gemm_blocking, (void *)v),                                  \
        cmocka_unit_test_prestate(test_dot_f32, (void *)v),                                        \
        cmocka_unit_test_prestate(test_dot_f16, (void *)v)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_kernel_sets),
        cmocka_unit_test(test_gemm_avx512_unpack),
        cmocka_unit_test(test_gemm_avx2_vnni),
        VARIANT_TESTS("ref"),
        VARIANT_TESTS("avx2"),
        VARIANT_TESTS("avx512"),
        VARIANT_TESTS("neon"),
        VARIANT_TESTS("neon-nodot"),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
