/*
 * A fixed pool of worker threads, created once per process.
 *
 * br_pool_run(pool, fn, ctx, n) calls fn(ctx, i, n) for i in 0..n-1, spread over the
 * pool's threads and the caller, and returns when all are done. Tasks must split work by
 * output rows, so results never depend on the thread count. A NULL pool runs serially.
 *
 * Fork/join is cheap when runs follow each other closely (one per layer projection):
 * idle workers spin for a short while (spin_us, default 200 microseconds) before they
 * sleep on a condition variable, so an idle pool costs no CPU. One pool must be driven by
 * one thread at a time.
 */
#ifndef BR_KERNELS_POOL_H
#define BR_KERNELS_POOL_H

struct br_pool;

typedef void (*br_pool_fn)(void *ctx, int task, int n_tasks);

struct br_pool_opts {
    int n_threads; /* counts the caller: 1 means no extra threads */
    int pin;       /* nonzero: pin thread i (caller = 0) to the i-th CPU the process may use */
    int spin_us;   /* how long idle threads spin before sleeping; < 0: the default */
};

/* n_threads counts the caller: 1 means no extra threads. */
int br_pool_create(int n_threads, struct br_pool **out);
/* Same, with every thread (the calling one included) pinned to its own CPU: thread i to
 * the i-th CPU the process was allowed when the first pinned pool was created. */
int br_pool_create_pinned(int n_threads, struct br_pool **out);
int br_pool_create_opts(const struct br_pool_opts *opts, struct br_pool **out);
void br_pool_destroy(struct br_pool **pool);
int br_pool_threads(const struct br_pool *pool); /* 1 for NULL */
void br_pool_run(struct br_pool *pool, br_pool_fn fn, void *ctx, int n_tasks);

#endif
