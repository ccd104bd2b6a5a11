/*
 * Thread pool: n-1 worker threads plus the caller.
 *
 * A run writes the job (fn, ctx, n) into plain fields, resets the claim counter and the
 * count of workers still to check in, then bumps the generation with a release store.
 * Workers that see the new generation (acquire) read the job, claim tasks with an atomic
 * counter alongside the caller, and check in; the run returns when every worker has
 * checked in, so no worker can still be reading the job when the next run rewrites it.
 *
 * Idle threads first spin (cheap wake-up for back-to-back runs), then sleep on a
 * condition variable. Lost wake-ups are excluded by a Dekker-style handshake with
 * sequentially consistent atomics: a worker announces itself in `sleepers` before its
 * last look at the generation, and the caller bumps the generation before it looks at
 * `sleepers`; at least one of them sees the other. The caller's own wait for check-ins
 * uses the same pattern with `caller_sleeping` and `pending`.
 */
#include "kernels/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

#include "bitrack/status.h"

#define DEFAULT_SPIN_US 200

struct br_pool {
    int n_threads;
    int spin_us;
    pthread_t *threads;
    int *cpus; /* (n_threads,) CPU per thread when pinned, else NULL */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    /* the job of the current generation; written only while no worker reads it */
    br_pool_fn fn;
    void *ctx;
    int n_tasks;
    atomic_uint generation;
    atomic_int stop;
    atomic_int next;     /* next task to claim */
    atomic_int pending;  /* workers yet to check in for this generation */
    atomic_int sleepers; /* workers blocked (or about to block) on `wake` */
    atomic_int caller_sleeping;
};

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void run_tasks(struct br_pool *p, br_pool_fn fn, void *ctx, int n)
{
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= n) break;
        fn(ctx, i, n);
    }
}

/* Spins until pred changes or the budget runs out; returns nonzero if it changed. */
static int spin_until_generation(struct br_pool *p, unsigned seen)
{
    long long deadline = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&p->generation, memory_order_acquire) != seen ||
            atomic_load_explicit(&p->stop, memory_order_acquire))
            return 1;
        cpu_relax();
        if ((i & 63) == 63) {
            long long t = now_ns();
            if (!deadline) deadline = t + (long long)p->spin_us * 1000;
            else if (t >= deadline) return 0;
        }
    }
}

struct worker_arg {
    struct br_pool *pool;
    int index;
};

static void pin_self(const struct br_pool *p, int index)
{
    if (!p->cpus) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(p->cpus[index], &set);
    /* Pinning is a performance hint: failure (a restricted container) is not an error. */
    (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *worker(void *arg)
{
    struct worker_arg *wa = arg;
    struct br_pool *p = wa->pool;
    pin_self(p, wa->index);
    free(wa);
    unsigned seen = 0;
    for (;;) {
        if (!spin_until_generation(p, seen)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_tasks(p, p->fn, p->ctx, p->n_tasks);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

static int allowed_cpus(int *cpus, int n)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    int found = 0;
    for (int c = 0; c < CPU_SETSIZE && found < n; c++)
        if (CPU_ISSET(c, &set)) cpus[found++] = c;
    return found;
}

int br_pool_create_opts(const struct br_pool_opts *o, struct br_pool **out)
{
    *out = NULL;
    int n_threads = o->n_threads;
    if (n_threads < 1 || n_threads > 1024) return BR_E_INVALID;
    struct br_pool *p = calloc(1, sizeof *p);
    if (!p) return BR_E_NOMEM;
    p->n_threads = 1; /* threads started so far, plus the caller */
    p->spin_us = o->spin_us < 0 ? DEFAULT_SPIN_US : o->spin_us;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_sleeping, 0);
    int rc = BR_E_NOMEM;
    if (o->pin) {
        p->cpus = malloc((size_t)n_threads * sizeof *p->cpus);
        if (!p->cpus) goto fail;
        int ncpu_list[CPU_SETSIZE];
        int ncpu = allowed_cpus(ncpu_list, CPU_SETSIZE);
        if (ncpu == 0) {
            free(p->cpus);
            p->cpus = NULL; /* cannot see the allowed set: run unpinned */
        } else {
            for (int i = 0; i < n_threads; i++) p->cpus[i] = ncpu_list[i % ncpu];
            pin_self(p, 0);
        }
    }
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) goto fail;
        for (int i = 0; i < n_threads - 1; i++) {
            struct worker_arg *wa = malloc(sizeof *wa);
            if (!wa) goto fail;
            wa->pool = p;
            wa->index = i + 1;
            if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
                free(wa);
                rc = BR_E_INTERNAL;
                goto fail;
            }
            p->n_threads = i + 2;
        }
    }
    *out = p;
    return BR_OK;
fail:
    br_pool_destroy(&p); /* joins the threads started so far */
    return rc;
}

int br_pool_create(int n_threads, struct br_pool **out)
{
    struct br_pool_opts o = {n_threads, 0, -1};
    return br_pool_create_opts(&o, out);
}

int br_pool_create_pinned(int n_threads, struct br_pool **out)
{
    struct br_pool_opts o = {n_threads, 1, -1};
    return br_pool_create_opts(&o, out);
}

void br_pool_destroy(struct br_pool **pp)
{
    if (!pp || !*pp) return;
    struct br_pool *p = *pp;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->cpus);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p);
    *pp = NULL;
}

int br_pool_threads(const struct br_pool *p)
{
    return p ? p->n_threads : 1;
}

void br_pool_run(struct br_pool *p, br_pool_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++) fn(ctx, i, n_tasks);
        return;
    }
    /* Every worker checked in after the previous run, so none reads these now. */
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: publishes the job, pairs with sleepers */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, fn, ctx, n_tasks);

    long long deadline = 0;
    for (unsigned i = 0; atomic_load_explicit(&p->pending, memory_order_acquire) != 0; i++) {
        cpu_relax();
        if ((i & 63) != 63) continue;
        long long t = now_ns();
        if (!deadline) {
            deadline = t + (long long)p->spin_us * 1000;
            continue;
        }
        if (t < deadline) continue;
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->caller_sleeping, 1);
        while (atomic_load(&p->pending) != 0) pthread_cond_wait(&p->done, &p->mu);
        atomic_store(&p->caller_sleeping, 0);
        pthread_mutex_unlock(&p->mu);
        break;
    }
}
