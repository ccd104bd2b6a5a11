/*
 * Tests of the thread pool: every task runs exactly once for many task and thread
 * counts, runs follow each other back to back (spinning workers) and after idle gaps
 * (sleeping workers), pinned pools work, and a NULL pool runs serially.
 * Built with -DBR_TSAN=ON this also checks the pool's synchronisation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sched.h>

#include "bitrack/status.h"
#include "kernels/pool.h"

struct count_ctx {
    atomic_int *hits; /* (n,) */
    int n;
    atomic_int bad_n;
};

static void count_task(void *vctx, int task, int n_tasks)
{
    struct count_ctx *c = vctx;
    if (n_tasks != c->n || task < 0 || task >= n_tasks) {
        atomic_fetch_add(&c->bad_n, 1);
        return;
    }
    atomic_fetch_add(&c->hits[task], 1);
}

static void check_runs(struct br_pool *p, int rounds, int sleep_between_us)
{
    static const int ns[] = {1, 2, 3, 7, 64, 1000};
    for (int round = 0; round < rounds; round++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            int n = ns[k];
            struct count_ctx c;
            c.hits = calloc((size_t)n, sizeof *c.hits);
            assert_non_null(c.hits);
            c.n = n;
            atomic_init(&c.bad_n, 0);
            br_pool_run(p, count_task, &c, n);
            assert_int_equal(atomic_load(&c.bad_n), 0);
            for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&c.hits[i]), 1);
            free(c.hits);
            if (sleep_between_us) {
                struct timespec ts = {0, (long)sleep_between_us * 1000};
                nanosleep(&ts, NULL);
            }
        }
}

static void test_every_task_once(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 5; threads++) {
        struct br_pool *p = NULL;
        assert_int_equal(br_pool_create(threads, &p), BR_OK);
        assert_int_equal(br_pool_threads(p), threads);
        check_runs(p, 50, 0);
        br_pool_destroy(&p);
        assert_null(p);
    }
}

static void test_after_sleep(void **state)
{
    (void)state;
    /* Gaps longer than the spin budget make the workers sleep between runs. */
    struct br_pool_opts o = {3, 0, 10};
    struct br_pool *p = NULL;
    assert_int_equal(br_pool_create_opts(&o, &p), BR_OK);
    check_runs(p, 5, 2000);
    br_pool_destroy(&p);
    /* No spinning at all: every hand-off goes through the condition variables. */
    struct br_pool_opts o0 = {2, 0, 0};
    assert_int_equal(br_pool_create_opts(&o0, &p), BR_OK);
    check_runs(p, 30, 0);
    br_pool_destroy(&p);
}

/* Many tiny runs back to back with more threads than cores: workers are often
 * descheduled and wake up after their run has ended, while the next job is being
 * written. Each run has its own context on the stack, so a late worker that ran a stale
 * job (or the right job twice) would show up as a count other than 1. */
static void test_back_to_back_oversubscribed(void **state)
{
    (void)state;
    struct br_pool *p = NULL;
    assert_int_equal(br_pool_create(4, &p), BR_OK);
    for (int run = 0; run < 20000; run++) {
        atomic_int hits[6];
        for (int i = 0; i < 6; i++) atomic_init(&hits[i], 0);
        struct count_ctx c;
        c.hits = hits;
        c.n = 2 + run % 5;
        atomic_init(&c.bad_n, 0);
        br_pool_run(p, count_task, &c, c.n);
        assert_int_equal(atomic_load(&c.bad_n), 0);
        for (int i = 0; i < 6; i++) assert_int_equal(atomic_load(&hits[i]), i < c.n ? 1 : 0);
    }
    br_pool_destroy(&p);
}

struct cpu_ctx {
    int cpu[2];
    atomic_int started;
};

static void record_cpu(void *vctx, int task, int n_tasks)
{
    (void)n_tasks;
    struct cpu_ctx *c = vctx;
    /* Each task waits (up to 10 s) for the other to start, so both threads take one even
     * when a loaded machine wakes the worker late (a fixed sleep raced with that). */
    atomic_fetch_add(&c->started, 1);
    struct timespec ts = {0, 1000 * 1000};
    for (int i = 0; i < 10000 && atomic_load(&c->started) < 2; i++) nanosleep(&ts, NULL);
    c->cpu[task] = sched_getcpu();
}

static void test_pinned(void **state)
{
    (void)state;
    cpu_set_t before;
    CPU_ZERO(&before);
    assert_int_equal(sched_getaffinity(0, sizeof before, &before), 0);
    struct br_pool *p = NULL;
    assert_int_equal(br_pool_create_pinned(2, &p), BR_OK);
    check_runs(p, 10, 0);
    /* A second pinned pool made by the (now pinned) caller still spreads its threads over
     * the process's CPUs instead of stacking them on the caller's one. */
    struct br_pool *p2 = NULL;
    assert_int_equal(br_pool_create_pinned(2, &p2), BR_OK);
    struct cpu_ctx c = {{-1, -1}, 0};
    br_pool_run(p2, record_cpu, &c, 2);
    if (CPU_COUNT(&before) > 1) assert_int_not_equal(c.cpu[0], c.cpu[1]);
    br_pool_destroy(&p2);
    br_pool_destroy(&p);
}

static void test_null_and_invalid(void **state)
{
    (void)state;
    assert_int_equal(br_pool_threads(NULL), 1);
    check_runs(NULL, 1, 0);
    struct br_pool *p = (struct br_pool *)&p;
    assert_int_equal(br_pool_create(0, &p), BR_E_INVALID);
    assert_null(p);
    br_pool_destroy(NULL);
    br_pool_destroy(&p); /* NULL pool pointer: no-op */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_task_once),
        cmocka_unit_test(test_after_sleep),
        cmocka_unit_test(test_back_to_back_oversubscribed),
        cmocka_unit_test(test_pinned),
        cmocka_unit_test(test_null_and_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
