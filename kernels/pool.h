/*
 * A fixed pool of worker threads, created once per process.
 *
 * br_pool_run(pool, fn, ctx, n) calls fn(ctx, i, n) for i in 0..n-1, spread over the
 * pool's threads and the caller, and returns when all are done. Tasks must split work by
 * output rows, so results never depend on the thread count. A NULL pool runs serially.
 */
#ifndef BR_KERNELS_POOL_H
#define BR_KERNELS_POOL_H

struct br_pool;

typedef void (*br_pool_fn)(void *ctx, int task, int n_tasks);

/* n_threads counts the caller: 1 means no extra threads. */
int br_pool_create(int n_threads, struct br_pool **out);
void br_pool_destroy(struct br_pool **pool);
int br_pool_threads(const struct br_pool *pool); /* 1 for NULL */
void br_pool_run(struct br_pool *pool, br_pool_fn fn, void *ctx, int n_tasks);

#endif
