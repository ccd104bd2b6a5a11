/*
 * Stand-alone exactness check of the kernel variants against the scalar reference, for
 * targets where the cmocka suite cannot run (kernels/test-neon.sh cross-compiles it for
 * aarch64 and runs it under qemu). It covers what tests/unit/kernels_test.c covers:
 * GEMV on ragged and extreme shapes with row sub-ranges, GEMM with 1..9 tokens and
 * padded strides, and the canonical float dots for n = 0..300 and 2560; and the Q8_0 head
 * kernels (kernels/q8.h) as tests/unit/q8_test.c checks them: GEMV and GEMM with 1..9
 * tokens on odd row counts, random and extreme blocks (-128, 127, activations +-127); and
 * the F16/BF16 head kernels (kernels/fhead.h) as tests/unit/fhead_test.c checks them: 1..9
 * tokens, row sub-ranges, widths with and without a tail, values near F16's largest and
 * in its subnormal range; and the Q6_K head kernels (kernels/q6k.h) as
 * tests/unit/q6k_test.c does: 1..9 tokens on several shapes, all-0 and all-1 bits with
 * extreme scales against extreme activations.
 * Usage: kernel_check [variant...]   (default: every variant this CPU runs)
 * Exit status 0 when every compared value is identical, 1 otherwise.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/fp.h"
#include "kernels/dispatch.h"
#include "kernels/fhead.h"
#include "kernels/kernel_impl.h"
#include "kernels/ops.h"
#include "kernels/q8.h"
#include "kernels/q6k.h"
#include "kernels/q8_impl.h"
#include "kernels/ternary.h"

static int g_fail;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static void fill(struct br_tmat *m, int how, uint64_t *s)
{
    for (int32_t r = 0; r < m->rows; r++)
        for (int32_t k = 0; k < m->cols; k++)
            br_tmat_set(m, r, k, how == 1 ? -1 : how == 2 ? 1 : (int)(rnd(s) % 3) - 1);
}

static void check_gemv(const struct br_kernel_ops *k, int32_t rows, int32_t cols, int how, int qhow,
                       uint64_t *s)
{
    struct br_tmat m;
    if (br_tmat_init(&m, rows, cols) != BR_OK) exit(2);
    fill(&m, how, s);
    size_t kpad = (size_t)m.blocks * BR_TMAT_BLOCK;
    int8_t *q = calloc(kpad, 1);
    int32_t *want = calloc((size_t)rows, 4), *got = calloc((size_t)rows, 4);
    if (!q || !want || !got) exit(2);
    for (int32_t c = 0; c < cols; c++)
        q[c] = qhow == 1 ? -128 : qhow == 2 ? 127 : (int8_t)(rnd(s) & 0xff);
    int32_t ranges[3][2] = {
        {0, rows}, {rows > 2 ? 1 : 0, rows > 2 ? rows - 1 : rows}, {rows - 1, rows}};
    for (int i = 0; i < 3; i++) {
        int32_t r0 = ranges[i][0], r1 = ranges[i][1];
        br_tmat_gemv_ref(&m, r0, r1, q, want);
        k->gemv(&m, r0, r1, q, got);
        if (memcmp(want, got, (size_t)(r1 - r0) * 4) != 0) {
            printf("FAIL %s gemv %dx%d fill %d q %d rows %d..%d\n", k->name, rows, cols, how, qhow,
                   r0, r1);
            g_fail = 1;
        }
    }
    free(q);
    free(want);
    free(got);
    br_tmat_free(&m);
}

static void check_gemm(const struct br_kernel_ops *k, int32_t rows, int32_t cols, uint64_t *s)
{
    struct br_tmat m;
    if (br_tmat_init(&m, rows, cols) != BR_OK) exit(2);
    fill(&m, 0, s);
    size_t kpad = (size_t)m.blocks * BR_TMAT_BLOCK;
    for (int32_t ntok = 1; ntok <= 9; ntok++) {
        size_t qs = kpad + (ntok % 2 ? 64 : 0), as = (size_t)rows + (size_t)(ntok % 3);
        int8_t *q = calloc((size_t)ntok * qs, 1);
        int32_t *want = malloc((size_t)ntok * as * 4), *got = malloc((size_t)ntok * as * 4);
        if (!q || !want || !got) exit(2);
        for (int32_t t = 0; t < ntok; t++)
            for (int32_t c = 0; c < cols; c++)
                q[(size_t)t * qs + (size_t)c] = t == 1 ? -128 : (int8_t)(rnd(s) & 0xff);
        for (size_t i = 0; i < (size_t)ntok * as; i++) want[i] = got[i] = -7;
        br_tmat_gemm_ref(&m, 0, rows, ntok, q, qs, want, as);
        k->gemm(&m, 0, rows, ntok, q, qs, got, as);
        if (memcmp(want, got, (size_t)ntok * as * 4) != 0) {
            printf("FAIL %s gemm %dx%d ntok %d\n", k->name, rows, cols, ntok);
            g_fail = 1;
        }
        free(q);
        free(want);
        free(got);
    }
    br_tmat_free(&m);
}

static float rf(uint64_t *s)
{
    uint64_t r = rnd(s);
    return ldexpf((float)(r & 0xffffff) / 16777216.0f - 0.5f, (int)((r >> 24) % 16) - 8);
}

static void check_dots(const struct br_kernel_ops *k, uint64_t *s)
{
    enum { N = 2600 };
    float *a = malloc(N * 4), *b = malloc(N * 4);
    uint16_t *h = malloc(N * 2);
    if (!a || !b || !h) exit(2);
    for (int i = 0; i < N; i++) {
        a[i] = rf(s);
        b[i] = rf(s);
        uint16_t v = (uint16_t)(rnd(s) & 0xffff);
        h[i] = ((v >> 10) & 0x1f) == 0x1f ? (uint16_t)(v & 0xbfff) : v;
    }
    for (size_t n = 0; n <= 2560; n = n < 300 ? n + 1 : 2560) {
        for (size_t off = 0; off < 2; off++) {
            if (br_fp32_to_bits(k->dot_f32(a + off, b + off, n)) !=
                br_fp32_to_bits(br_dot_f32_ref(a + off, b + off, n))) {
                printf("FAIL %s dot_f32 n=%zu\n", k->name, n);
                g_fail = 1;
            }
            if (br_fp32_to_bits(k->dot_f16_f32(h + off, b + off, n)) !=
                br_fp32_to_bits(br_dot_f16_f32_ref(h + off, b + off, n))) {
                printf("FAIL %s dot_f16 n=%zu\n", k->name, n);
                g_fail = 1;
            }
        }
        if (n == 2560) break;
    }
    free(a);
    free(b);
    free(h);
}

/* Q8_0: weights random (how 0), all -128 (1) or all 127 (2); activations from the
 * canonical quantizer of random floats, or all -127 (qhow 1) / +127 (2). */
static void check_q8(const struct br_q8_ops *k, int32_t rows, int32_t cols, int32_t ntok, int how,
                     int qhow, uint64_t *s)
{
    struct br_q8mat m;
    if (br_q8mat_init(&m, rows, cols)) {
        g_fail = 1;
        return;
    }
    for (int32_t r = 0; r < rows; r++)
        for (int32_t c = 0; c < cols; c++)
            br_q8mat_set(&m, r, c, how == 1 ? -128 : how == 2 ? 127 : (int8_t)(rnd(s) & 0xff));
    for (int32_t r = 0; r < rows; r++)
        for (int32_t b = 0; b < m.nb; b++)
            *br_q8mat_scale(&m, r, b) =
                (uint16_t)((0x1c00 + rnd(s) % 0x2000) | (rnd(s) & 1 ? 0x8000 : 0));
    size_t qs = (size_t)cols + 32, ds = (size_t)m.nb + 1, ys = (size_t)rows + 3;
    int8_t *q = calloc((size_t)ntok * qs, 1);
    float *x = malloc((size_t)cols * sizeof *x), *dx = calloc((size_t)ntok * ds, sizeof *dx);
    float *want = calloc((size_t)ntok * ys, sizeof *want), *got = calloc((size_t)ntok * ys, 4);
    if (!q || !x || !dx || !want || !got) {
        g_fail = 1;
    } else {
        for (int32_t t = 0; t < ntok; t++) {
            for (int32_t c = 0; c < cols; c++)
                x[c] = qhow == 1   ? -1.0f
                       : qhow == 2 ? 1.0f
                                   : (float)((int64_t)(rnd(s) % 2001) - 1000) / 100.0f;
            br_q8_quantize_act(x, cols, q + (size_t)t * qs, dx + (size_t)t * ds);
        }
        br_q8_gemm_ref(&m, 0, rows, ntok, q, qs, dx, ds, want, ys);
        k->gemm(&m, 0, rows, ntok, q, qs, dx, ds, got, ys);
        if (ntok == 1) k->gemv(&m, 0, rows, q, dx, got);
        if (memcmp(want, got, (size_t)ntok * ys * sizeof *got)) {
            printf("FAIL %s q8 %dx%d ntok %d how %d/%d\n", k->name, rows, cols, ntok, how, qhow);
            g_fail = 1;
        }
    }
    free(q), free(x), free(dx), free(want), free(got);
    br_q8mat_free(&m);
}

static void check_q8_variant(const char *name, uint64_t *s)
{
    const struct br_q8_ops *k = br_q8_ops_find(name);
    if (!k) return;
    static const int32_t shapes[][2] = {{1, 32}, {3, 96}, {7, 2560}, {2, 8192}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int32_t ntok = 1; ntok <= 9; ntok += 4)
            check_q8(k, shapes[i][0], shapes[i][1], ntok, 0, 0, s);
    for (int how = 1; how <= 2; how++)
        for (int qhow = 1; qhow <= 2; qhow++) check_q8(k, 3, 2560, 2, how, qhow, s);
}

static float rnd_float(uint64_t *s, float scale)
{
    return scale * (float)((int64_t)(rnd(s) % 20001) - 10000) / 10000.0f;
}

static void check_fhead(const char *name, br_fhead_gemm_fn f, const struct br_fhead *m,
                        int32_t ntok, int64_t r0, int64_t r1, uint64_t *s)
{
    size_t xs = (size_t)m->cols + 5, ys = (size_t)(r1 - r0) + 3;
    float *x = malloc((size_t)ntok * xs * sizeof *x);
    float *want = malloc((size_t)ntok * ys * sizeof *want),
          *got = malloc((size_t)ntok * ys * sizeof *got);
    if (!x || !want || !got) {
        printf("FAIL out of memory\n");
        g_fail = 1;
    } else {
        for (size_t i = 0; i < (size_t)ntok * xs; i++) x[i] = rnd_float(s, 3.0f);
        for (size_t i = 0; i < (size_t)ntok * ys; i++) want[i] = got[i] = 1234.5f;
        br_fhead_gemm_ref(m, r0, r1, ntok, x, xs, want, ys);
        f(m, r0, r1, ntok, x, xs, got, ys);
        if (memcmp(want, got, (size_t)ntok * ys * sizeof *want)) {
            printf("FAIL %s fhead %s %lldx%d ntok %d rows %lld..%lld\n", name,
                   m->bf16 ? "BF16" : "F16", (long long)m->rows, m->cols, ntok, (long long)r0,
                   (long long)r1);
            g_fail = 1;
        }
    }
    free(x), free(want), free(got);
}

static void check_fhead_variant(const char *name, uint64_t *s)
{
    br_fhead_gemm_fn f = br_fhead_find(name);
    if (!f) return;
    static const int32_t shapes[][2] = {{1, 8}, {3, 13}, {5, 64}, {6, 203}, {9, 2560}, {4, 7}};
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            int64_t rows = shapes[i][0];
            int32_t cols = shapes[i][1];
            size_t rb = 2 * (size_t)cols + 10;
            uint8_t *data = calloc((size_t)rows, rb);
            if (!data) {
                printf("FAIL out of memory\n");
                g_fail = 1;
                return;
            }
            for (int64_t r = 0; r < rows; r++)
                for (int32_t k = 0; k < cols; k++) {
                    float v = rnd_float(s, 4.0f);
                    if (k % 97 == 5) v = 60000.0f; /* near F16's largest */
                    if (k % 89 == 7) v = 3e-7f;    /* F16 subnormal */
                    uint16_t h = bf16 ? br_f32_to_bf16(v) : br_f32_to_f16(v);
                    data[(size_t)r * rb + 2 * (size_t)k] = (uint8_t)h;
                    data[(size_t)r * rb + 2 * (size_t)k + 1] = (uint8_t)(h >> 8);
                }
            struct br_fhead m = {data, rb, rows, cols, bf16};
            for (int32_t ntok = 1; ntok <= 9; ntok++) {
                check_fhead(name, f, &m, ntok, 0, rows, s);
                if (rows > 2) check_fhead(name, f, &m, ntok, 1, rows - 1, s);
            }
            free(data);
        }
}

/* rows x cols of Q6_K bytes: how 0 random, 1 all bits 0 with scales -128, 2 all bits 1
 * with scales 127; d of magnitude 2^-14 .. 2^-7, either sign */
static uint8_t *q6k_rows(int64_t rows, int32_t cols, int how, uint64_t *s)
{
    size_t nb = (size_t)rows * (size_t)(cols / BR_Q6K_BLOCK);
    uint8_t *p = malloc(nb * BR_Q6K_BLOCK_BYTES);
    if (!p) return NULL;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *blk = p + b * BR_Q6K_BLOCK_BYTES;
        for (int i = 0; i < 192; i++) blk[i] = how == 1 ? 0 : how == 2 ? 0xff : (uint8_t)rnd(s);
        for (int j = 0; j < 16; j++)
            blk[192 + j] = how == 1 ? (uint8_t)(int8_t)-128 : how == 2 ? 127 : (uint8_t)rnd(s);
        float mag = ldexpf(1.0f + (float)(rnd(s) % 1024) / 1024.0f, -7 - (int)(rnd(s) % 8));
        uint16_t d = br_f32_to_f16(rnd(s) & 1 ? -mag : mag);
        blk[208] = (uint8_t)d, blk[209] = (uint8_t)(d >> 8);
    }
    return p;
}

/* xhow 0 random activations, 1 all -3, 2 all 3 (quantized to -127 / 127) */
static void check_q6k(const char *name, br_q6k_gemm_fn f, const struct br_q6kmat *m, int32_t ntok,
                      int xhow, int64_t r0, int64_t r1, uint64_t *s)
{
    size_t qs = (size_t)m->cols + 32, ds = (size_t)m->cols / 32 + 3, ys = (size_t)(r1 - r0) + 5;
    int8_t *q = calloc((size_t)ntok * qs, 1);
    float *dx = calloc((size_t)ntok * ds, sizeof *dx), *x = malloc((size_t)m->cols * sizeof *x);
    float *want = calloc((size_t)ntok * ys, sizeof *want);
    float *got = calloc((size_t)ntok * ys, sizeof *got);
    if (!q || !dx || !x || !want || !got) {
        printf("FAIL out of memory\n");
        g_fail = 1;
    } else {
        for (int32_t t = 0; t < ntok; t++) {
            for (int32_t k = 0; k < m->cols; k++)
                x[k] = xhow == 1 ? -3.0f : xhow == 2 ? 3.0f : rnd_float(s, 10.0f);
            br_q8_quantize_act(x, m->cols, q + (size_t)t * qs, dx + (size_t)t * ds);
        }
        for (size_t i = 0; i < (size_t)ntok * ys; i++) want[i] = got[i] = 1234.5f;
        br_q6k_gemm_ref(m, r0, r1, ntok, q, qs, dx, ds, want, ys);
        f(m, r0, r1, ntok, q, qs, dx, ds, got, ys);
        if (memcmp(want, got, (size_t)ntok * ys * sizeof *want)) {
            printf("FAIL %s q6k %lldx%d ntok %d x %d rows %lld..%lld\n", name, (long long)m->rows,
                   m->cols, ntok, xhow, (long long)r0, (long long)r1);
            g_fail = 1;
        }
    }
    free(q), free(dx), free(x), free(want), free(got);
}

static void check_q6k_variant(const char *name, uint64_t *s)
{
    br_q6k_gemm_fn f = br_q6k_find(name);
    if (!f) return;
    static const int32_t shapes[][2] = {{1, 256}, {3, 512}, {5, 768}, {2, 2560}, {7, 1024}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0] + 2; i++) {
        int how = i < 5 ? 0 : (int)i - 4;
        int64_t rows = how ? 3 : shapes[i][0];
        int32_t cols = how ? 1024 : shapes[i][1];
        uint8_t *data = q6k_rows(rows, cols, how, s);
        struct br_q6kmat m;
        if (!data || br_q6kmat_view(&m, data, rows, cols)) {
            printf("FAIL q6k setup\n");
            g_fail = 1;
            free(data);
            return;
        }
        for (int32_t ntok = 1; ntok <= 9; ntok++)
            for (int xhow = 0; xhow <= (how ? 2 : 0); xhow++) {
                check_q6k(name, f, &m, ntok, xhow, 0, rows, s);
                if (rows > 2) check_q6k(name, f, &m, ntok, xhow, 1, rows - 1, s);
            }
        free(data);
    }
}

static void check_variant(const char *name)
{
    const struct br_kernel_ops *k = br_kernels_find(name);
    if (!k) {
        printf("skip %s: not compiled in or not supported by this CPU\n", name);
        return;
    }
    uint64_t s = 42;
    static const int32_t shapes[][2] = {{1, 100},   {3, 128},   {5, 129},  {7, 2560},
                                        {11, 8640}, {2, 45568}, {17, 1000}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_gemv(k, shapes[i][0], shapes[i][1], 0, 0, &s);
    for (int how = 1; how <= 2; how++)
        for (int qhow = 1; qhow <= 2; qhow++) check_gemv(k, 3, 45568, how, qhow, &s);
    check_gemm(k, 5, 100, &s);
    check_gemm(k, 7, 2560, &s);
    check_gemm(k, 3, 8640, &s);
    check_dots(k, &s);
    check_q8_variant(name, &s);
    check_fhead_variant(name, &s);
    check_q6k_variant(name, &s);
    printf("%s %s\n", g_fail ? "checked (with failures)" : "ok", name);
}

int main(int argc, char **argv)
{
    printf("active kernels: %s\n", br_kernels_name());
    if (argc > 1) {
        for (int i = 1; i < argc; i++) check_variant(argv[i]);
    } else {
        static const char *const all[] = {"avx2", "avx512", "neon", "neon-nodot"};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) check_variant(all[i]);
    }
    printf(g_fail ? "FAILED\n" : "PASSED\n");
    return g_fail;
}
