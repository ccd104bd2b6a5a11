/* Per-thread kernel scratch (scratch.h): one pthread key, created once, whose destructor
 * frees a thread's buffers when it ends.
 *
 * Which thread of a pool runs which task varies from step to step, so a thread could meet
 * the largest size of a slot only after many steps and allocate then. A high-water mark
 * per slot, shared by all threads, avoids that: a thread growing a buffer grows it to the
 * largest size any thread has asked for, so once the sizes of a step have been seen
 * (the first step), every thread reaches them at its next growth and stops growing. */
#include "kernels/scratch.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct scratch {
    void *p[BR_SCRATCH_SLOTS];
    size_t cap[BR_SCRATCH_SLOTS]; /* bytes */
};

static _Atomic size_t high_water[BR_SCRATCH_SLOTS]; /* bytes, the largest asked of a slot */
static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static int key_ok;

static void scratch_free(void *arg)
{
    struct scratch *s = arg;
    for (int i = 0; i < BR_SCRATCH_SLOTS; i++) free(s->p[i]);
    free(s);
}

static void make_key(void)
{
    key_ok = pthread_key_create(&key, scratch_free) == 0;
}

void *br_kernel_scratch(int slot, size_t bytes)
{
    assert(slot >= 0 && slot < BR_SCRATCH_SLOTS);
    pthread_once(&key_once, make_key);
    if (!key_ok) return NULL;
    struct scratch *s = pthread_getspecific(key);
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) return NULL;
        if (pthread_setspecific(key, s)) {
            free(s);
            return NULL;
        }
    }
    size_t n = (bytes + 63) & ~(size_t)63; /* aligned_alloc wants a multiple of 64 */
    size_t hw = atomic_load_explicit(&high_water[slot], memory_order_relaxed);
    while (n > hw && !atomic_compare_exchange_weak(&high_water[slot], &hw, n)) {
    }
    if (n > s->cap[slot] || hw > s->cap[slot]) {
        if (hw > n) n = hw;
        void *p = aligned_alloc(64, n);
        if (!p) return NULL;
        free(s->p[slot]);
        s->p[slot] = p;
        s->cap[slot] = n;
    }
    return s->p[slot];
}
