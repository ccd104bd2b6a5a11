/*
 * Tests of the kernel parameters' calibration and cache (kernels/tune.h), in a temporary
 * cache directory: BITRACK_TUNE=off keeps the defaults and writes nothing; the first
 * initialization calibrates (in well under the time a model load takes) and writes a file
 * that the next one loads with the same values; a file with another key, a value outside
 * its choice set or garbage is recalibrated and rewritten; force calibrates even over a
 * valid file; a pool of two threads gets a row split. On CPUs whose kernels read no
 * parameters (no AVX2), initialization keeps the defaults and writes nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/dispatch.h"
#include "kernels/pool.h"
#include "kernels/tune.h"
#include "test_util.h"

static char g_dir[256];

static int tunable(void)
{
    return strcmp(br_kernels_name(), "avx512") == 0 || strcmp(br_kernels_name(), "avx2") == 0;
}

static int file_exists(const char *p)
{
    return access(p, F_OK) == 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int setup(void **state)
{
    (void)state;
    const char *base = getenv("BR_TMP");
    snprintf(g_dir, sizeof g_dir, "%s/tune-test-XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(g_dir)) return -1;
    setenv("XDG_CACHE_HOME", g_dir, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_cache_cycle(void **state)
{
    (void)state;
    const char *path = br_tune_cache_path();
    assert_true(strncmp(path, g_dir, strlen(g_dir)) == 0);
    struct br_tune def = br_tune_defaults();

    setenv("BITRACK_TUNE", "off", 1);
    br_tune_reset();
    assert_int_equal(br_tune_init(NULL), BR_TUNE_DEFAULT);
    assert_memory_equal(br_tune_active(), &def, sizeof def);
    assert_false(file_exists(path));

    unsetenv("BITRACK_TUNE");
    br_tune_reset();
    double t0 = now_s();
    enum br_tune_source src = br_tune_init(NULL);
    double took = now_s() - t0;
    if (!tunable()) {
        assert_int_equal(src, BR_TUNE_DEFAULT);
        assert_false(file_exists(path));
        return;
    }
    print_message("calibration: %.0f ms\n", took * 1e3);
    assert_int_equal(src, BR_TUNE_CALIBRATED);
    assert_true(took < 10.0); /* about 0.5 s on an idle machine; generous for a shared one */
    assert_true(file_exists(path));
    struct br_tune cal = *br_tune_active();

    br_tune_reset();
    assert_int_equal(br_tune_init(NULL), BR_TUNE_LOADED);
    assert_memory_equal(br_tune_active(), &cal, sizeof cal);

    /* a value outside its choice set, another key, garbage: calibrated again */
    static const char *const bad[] = {"gemv_rows 3\n", "key another cpu\n", "\x01\x02 x\n"};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(path, "a");
        assert_non_null(f);
        fputs(bad[i], f);
        fclose(f);
        br_tune_reset();
        assert_int_equal(br_tune_init(NULL), BR_TUNE_CALIBRATED);
        br_tune_reset();
        assert_int_equal(br_tune_init(NULL), BR_TUNE_LOADED); /* rewritten, valid */
    }

    setenv("BITRACK_TUNE", "force", 1);
    br_tune_reset();
    assert_int_equal(br_tune_init(NULL), BR_TUNE_CALIBRATED);
    unsetenv("BITRACK_TUNE");

    /* a pool of 2: its split is calibrated, stored and loaded */
    struct br_pool *pool = NULL;
    assert_int_equal(br_pool_create(2, &pool), 0);
    br_tune_reset();
    br_tune_init(pool);
    int tasks = br_tune_active()->gemv_tasks[2];
    assert_true(tasks == 1 || tasks == 2 || tasks == 4 || tasks == 8);
    assert_int_equal(br_tune_gemv_tasks(2), tasks);
    br_tune_reset();
    assert_int_equal(br_tune_init(pool), BR_TUNE_LOADED);
    assert_int_equal(br_tune_active()->gemv_tasks[2], tasks);
    br_pool_destroy(&pool);
    br_tune_reset();
}

/* br_tune_set keeps values of the full choice sets and clamps the rest to the defaults. */
static void test_set(void **state)
{
    (void)state;
    struct br_tune def = br_tune_defaults(), t = def;
    t.gemv_rows = 2, t.gemv_ahead = 8, t.gemv_hint = BR_PF_NTA, t.gemm_tmax = 6;
    br_tune_set(&t);
    assert_memory_equal(br_tune_active(), &t, sizeof t);
    t.gemv_rows = 5, t.gemv_ahead = 0, t.gemm_tmax = 13, t.gemv_tasks[2] = -1;
    br_tune_set(&t);
    assert_int_equal(br_tune_active()->gemv_rows, def.gemv_rows);
    assert_int_equal(br_tune_active()->gemv_ahead, def.gemv_ahead);
    assert_int_equal(br_tune_active()->gemm_tmax, def.gemm_tmax);
    assert_int_equal(br_tune_gemv_tasks(2), 4);
    assert_int_equal(br_tune_gemv_tasks(1), 1);
    br_tune_reset();
    assert_memory_equal(br_tune_active(), &def, sizeof def);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_cache_cycle),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
