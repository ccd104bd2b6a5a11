/*
 * The Q8_0 head kernels alone (kernels/q8.h) on the 2B-4T head shape, 128256 x 2560, one
 * thread: 1 row (GEMV, memory bound: GB/s of head bytes against a plain AVX2 read of the
 * same buffer measured in the same run) and N rows (GEMM: GMAC/s), per kernel variant.
 * Times are the thread's CPU time, best of 5, so other processes' turns on a shared core
 * do not count (memory contention still does). Results are checked against the scalar
 * reference on a slice of rows, so a fast wrong kernel cannot report.
 *
 * Standalone build (after building build/release), x86-64:
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -mavx2 -I include -I . bench/bench_q8.c \
 *       build/release/libbitrack_core.a -lm -lpthread -o build/release/bench_q8
 *   build/release/bench_q8 [ntok ...]        (default: 1 32)
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "kernels/q8.h"
#include "kernels/q8_impl.h"

/* Sum of all bytes, two 32-byte loads per step: the plain read the GEMV is compared with. */
static int64_t read_all(const int8_t *p, size_t n)
{
    __m256i a = _mm256_setzero_si256(), b = a;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        a = _mm256_add_epi8(a, _mm256_load_si256((const __m256i *)(const void *)(p + i)));
        b = _mm256_add_epi8(b, _mm256_load_si256((const __m256i *)(const void *)(p + i + 32)));
    }
    return _mm256_extract_epi64(_mm256_add_epi8(a, b), 0);
}

int main(int argc, char **argv)
{
    const int64_t rows = 128256;
    const int32_t cols = 2560, nb = cols / 32;
    struct br_q8mat m;
    if (br_q8mat_init(&m, rows, cols)) return 1;
    uint64_t s = 1;
    for (size_t i = 0; i < (size_t)rows * m.row_bytes; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        m.qs[i] = (uint8_t)(s >> 56);
    }
    for (int64_t r = 0; r < rows; r++)
        for (int32_t b = 0; b < nb; b++) *br_q8mat_scale(&m, r, b) = 0x2000; /* 2^-7 */
    double head_bytes = (double)rows * nb * BR_Q8_BLOCK_BYTES;
    double best_rd = 1e30;
    volatile int64_t sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = br_thread_cpu_s();
        sink += read_all((const int8_t *)m.qs, (size_t)rows * m.row_bytes);
        double t = br_thread_cpu_s() - t0;
        if (t < best_rd) best_rd = t;
    }
    printf("plain read of the int8 rows: %.2f GB/s\n", (double)rows * cols / best_rd / 1e9);
    int nt_list[16], n_nt = 0;
    for (int i = 1; i < argc && n_nt < 16; i++) nt_list[n_nt++] = atoi(argv[i]);
    if (!n_nt) nt_list[n_nt++] = 1, nt_list[n_nt++] = 32;
    static const char *const variants[] = {"ref", "avx2", "avx512"};
    int rc = 0;
    for (int a = 0; a < n_nt; a++) {
        int ntok = nt_list[a] > 0 ? nt_list[a] : 1;
        int8_t *q = malloc((size_t)ntok * (size_t)cols);
        float *x = malloc((size_t)cols * sizeof *x), *dx = malloc((size_t)ntok * nb * sizeof *dx);
        float *y = malloc((size_t)ntok * (size_t)rows * sizeof *y);
        float *want = malloc((size_t)ntok * 64 * sizeof *want);
        if (!q || !x || !dx || !y || !want) return 1;
        for (int t = 0; t < ntok; t++) {
            for (int k = 0; k < cols; k++) {
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                x[k] = (float)((int64_t)(s >> 40) % 2001 - 1000) / 100.0f;
            }
            br_q8_quantize_act(x, cols, q + (size_t)t * cols, dx + (size_t)t * nb);
        }
        br_q8_gemm_ref(&m, 0, 64, ntok, q, (size_t)cols, dx, (size_t)nb, want, 64);
        for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
            const struct br_q8_ops *k = br_q8_ops_find(variants[v]);
            if (!k || (k == &br_q8_ops_ref && ntok > 1)) continue; /* the reference is slow */
            double best = 1e30;
            for (int r = 0; r < (k == &br_q8_ops_ref ? 1 : 5); r++) {
                double t0 = br_thread_cpu_s();
                k->gemm(&m, 0, rows, ntok, q, (size_t)cols, dx, (size_t)nb, y, (size_t)rows);
                double t = br_thread_cpu_s() - t0;
                if (t < best) best = t;
            }
            for (int t = 0; t < ntok; t++)
                if (memcmp(want + (size_t)t * 64, y + (size_t)t * rows, 64 * sizeof *y)) {
                    printf("%s: results differ from the reference\n", k->name);
                    rc = 1;
                }
            printf("%-6s %2d row%s: %8.2f ms, %6.2f GB/s of head bytes, %6.2f GMAC/s\n", k->name,
                   ntok, ntok == 1 ? " " : "s", best * 1e3, head_bytes / best / 1e9,
                   (double)rows * cols * ntok / best / 1e9);
        }
        free(q), free(x), free(dx), free(y), free(want);
    }
    br_q8mat_free(&m);
    return rc;
}
