/*
 * Thread pool: n-1 worker threads plus the caller.
 *
 * A run finishes when all of its tasks are done, whether or not every worker took part:
 * on a shared or oversubscribed machine a descheduled worker must not stall the caller
 * (which then runs the tasks itself).
 *
 * That makes late workers the hard case: a worker may wake up long after its run ended,
 * while the caller writes the next job. Every run therefore goes through one 64-bit word
 * `claim` = (generation << 32) | next task:
 *   1. the caller closes the old run by storing an odd generation (no claim can succeed);
 *   2. writes the job (fn, ctx, n) and zeroes the done count;
 *   3. opens the run with the next even generation and next task 0.
 * A worker claims task i only by a compare-and-swap from (gen, i) to (gen, i + 1) with the
 * even generation it read the job under, so a job read during step 2 is never used: the
 * swap fails because the generation moved on. The job fields are sequentially consistent
 * atomics, which is what rules out reading a newer job before a successful swap.
 * (A worker stalled for 2^31 runs between its read and its swap could be fooled; that is
 * not a practical concern.)
 *
 * Idle threads first spin (cheap hand-off for back-to-back runs), then sleep on a
 * condition variable. Lost wake-ups are excluded by a Dekker-style handshake with
 * sequentially consistent atomics: a worker announces itself in `sleepers` before its
 * last look at `claim`, and the caller opens a run before it looks at `sleepers`; at
 * least one of them sees the other. The caller's own wait for the done count uses the
 * same pattern with `caller_sleeping`.
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
    pthread_cond_t wake, done_cv;
    /* the job of the open run (see the header comment) */
    _Atomic(br_pool_fn) fn;
    _Atomic(void *) ctx;
    atomic_int n_tasks;
    atomic_ullong claim; /* (generation << 32) | next task */
    atomic_int done;     /* tasks finished in the open run */
    atomic_int stop;
    atomic_int sleepers; /* workers blocked (or about to block) on `wake` */
    atomic_int caller_sleeping;
};

#define CLAIM_GEN(c)  ((unsigned)((c) >> 32))
#define CLAIM_NEXT(c) ((unsigned)((c)&0xffffffffu))

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Claims and runs tasks of the run opened under generation gen until none is left or
 * the run is closed. fn, ctx and n were read after seeing gen. */
static void run_tasks(struct br_pool *p, unsigned gen, br_pool_fn fn, void *ctx, int n)
{
    unsigned long long c = atomic_load(&p->claim);
    for (;;) {
        if (CLAIM_GEN(c) != gen || CLAIM_NEXT(c) >= (unsigned)n) return;
        if (!atomic_compare_exchange_weak(&p->claim, &c, c + 1)) continue; /* c reloaded */
        int i = (int)CLAIM_NEXT(c);
        fn(ctx, i, n);
        if (atomic_fetch_add(&p->done, 1) + 1 == n && atomic_load(&p->caller_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
        c = atomic_load(&p->claim);
    }
}

/* An open run (even generation) other than the one last seen, or stop. */
static int has_work(struct br_pool *p, unsigned seen)
{
    unsigned g = CLAIM_GEN(atomic_load(&p->claim));
    return (g % 2 == 0 && g != seen) || atomic_load(&p->stop);
}

/* Spins until has_work or the spin budget runs out; returns has_work. */
static int spin_for_work(struct br_pool *p, unsigned seen)
{
    long long deadline = 0;
    for (unsigned i = 0;; i++) {
        if (has_work(p, seen)) return 1;
        cpu_relax();
        if ((i & 63) == 63) {
            long long t = now_ns();
            if (!deadline)
                deadline = t + (long long)p->spin_us * 1000;
            else if (t >= deadline)
                return 0;
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
    unsigned seen = 0; /* generation 0 is the initial, never opened, run */
    for (;;) {
        if (!spin_for_work(p, seen)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (!has_work(p, seen)) pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        unsigned gen = CLAIM_GEN(atomic_load(&p->claim));
        if (gen % 2) continue; /* closed again already: wait for the next opening */
        seen = gen;
        run_tasks(p, gen, atomic_load(&p->fn), atomic_load(&p->ctx), atomic_load(&p->n_tasks));
    }
    return NULL;
}

/* The CPUs the process may use, as they were when the first pinned pool was made: a
 * pinned pool pins its creator, and asking the creator's mask again would then return
 * that one CPU and stack every later pool onto it. */
static cpu_set_t g_allowed;
static int g_allowed_ok;
static pthread_once_t g_allowed_once = PTHREAD_ONCE_INIT;

static void probe_allowed(void)
{
    g_allowed_ok = sched_getaffinity(0, sizeof g_allowed, &g_allowed) == 0;
}

static int allowed_cpus(int *cpus, int n)
{
    pthread_once(&g_allowed_once, probe_allowed);
    if (!g_allowed_ok) return 0;
    int found = 0;
    for (int c = 0; c < CPU_SETSIZE && found < n; c++)
        if (CPU_ISSET(c, &g_allowed)) cpus[found++] = c;
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
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->fn, NULL);
    atomic_init(&p->ctx, NULL);
    atomic_init(&p->n_tasks, 0);
    atomic_init(&p->claim, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->stop, 0);
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
    pthread_cond_destroy(&p->done_cv);
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
    /* close (odd generation), write the job, open (next even generation) */
    unsigned gen = CLAIM_GEN(atomic_load(&p->claim));
    atomic_store(&p->claim, (unsigned long long)(gen + 1) << 32);
    atomic_store(&p->fn, fn);
    atomic_store(&p->ctx, ctx);
    atomic_store(&p->n_tasks, n_tasks);
    atomic_store(&p->done, 0);
    gen += 2;
    atomic_store(&p->claim, (unsigned long long)gen << 32);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, gen, fn, ctx, n_tasks);

    long long deadline = 0;
    for (unsigned i = 0; atomic_load(&p->done) != n_tasks; i++) {
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
        while (atomic_load(&p->done) != n_tasks) pthread_cond_wait(&p->done_cv, &p->mu);
        atomic_store(&p->caller_sleeping, 0);
        pthread_mutex_unlock(&p->mu);
        break;
    }
}
