/*
 * Thread pool: n-1 worker threads plus the caller. A run publishes (fn, ctx, n) under a
 * mutex, bumps a generation counter and wakes the workers; tasks are claimed with an
 * atomic counter, so the caller works too, and the run returns when every task is done.
 */
#include "kernels/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "bitrack/status.h"

struct br_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    unsigned long generation;
    int stop;
    br_pool_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next;
    int finished_workers;
};

static void run_tasks(struct br_pool *p, br_pool_fn fn, void *ctx, int n)
{
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= n) break;
        fn(ctx, i, n);
    }
}

static void *worker(void *arg)
{
    struct br_pool *p = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        br_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        int n = p->n_tasks;
        pthread_mutex_unlock(&p->mu);
        run_tasks(p, fn, ctx, n);
        pthread_mutex_lock(&p->mu);
        if (++p->finished_workers == p->n_threads - 1) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int br_pool_create(int n_threads, struct br_pool **out)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024) return BR_E_INVALID;
    struct br_pool *p = calloc(1, sizeof *p);
    if (!p) return BR_E_NOMEM;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) goto fail;
        for (int i = 0; i < n_threads - 1; i++) {
            if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
                p->n_threads = i + 1; /* destroy joins only the ones started */
                br_pool_destroy(&p);
                return BR_E_INTERNAL;
            }
        }
    }
    *out = p;
    return BR_OK;
fail:
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return BR_E_NOMEM;
}

void br_pool_destroy(struct br_pool **pp)
{
    if (!pp || !*pp) return;
    struct br_pool *p = *pp;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    p->finished_workers = 0;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, fn, ctx, n_tasks);
    pthread_mutex_lock(&p->mu);
    while (p->finished_workers < p->n_threads - 1) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
