/* Paged KV-cache bookkeeping (see kvcache.h). Free blocks sit in a min-heap so the lowest
 * free block is always taken first, whatever order frees came in. */
#include "worker/kvcache.h"

#include <stdlib.h>

#include "bitrack/status.h"

struct br_kv_alloc {
    int32_t n_seq, n_ctx, bs, n_blocks, max_blocks;
    int32_t *table; /* (n_seq, max_blocks) block ids, -1 unset */
    int32_t *len;   /* (n_seq,) positions written */
    int32_t *nblk;  /* (n_seq,) blocks held */
    int32_t *heap;  /* free blocks, min-heap */
    int32_t n_free;
};

static void heap_push(struct br_kv_alloc *a, int32_t b)
{
    int32_t i = a->n_free++;
    a->heap[i] = b;
    while (i > 0 && a->heap[(i - 1) / 2] > a->heap[i]) {
        int32_t p = (i - 1) / 2, t = a->heap[p];
        a->heap[p] = a->heap[i], a->heap[i] = t, i = p;
    }
}

static int32_t heap_pop(struct br_kv_alloc *a)
{
    int32_t top = a->heap[0];
    a->heap[0] = a->heap[--a->n_free];
    int32_t i = 0;
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < a->n_free && a->heap[l] < a->heap[m]) m = l;
        if (r < a->n_free && a->heap[r] < a->heap[m]) m = r;
        if (m == i) break;
        int32_t t = a->heap[m];
        a->heap[m] = a->heap[i], a->heap[i] = t, i = m;
    }
    return top;
}

int br_kv_alloc_create(int32_t n_seq, int32_t n_ctx, int32_t block_size, int32_t n_blocks,
                       struct br_kv_alloc **out)
{
    *out = NULL;
    if (n_seq < 1 || n_ctx < 1 || block_size < 1 || n_blocks < 1) return BR_E_INVALID;
    struct br_kv_alloc *a = calloc(1, sizeof *a);
    if (!a) return BR_E_NOMEM;
    a->n_seq = n_seq, a->n_ctx = n_ctx, a->bs = block_size, a->n_blocks = n_blocks;
    a->max_blocks = (n_ctx + block_size - 1) / block_size;
    a->table = malloc((size_t)n_seq * (size_t)a->max_blocks * sizeof *a->table);
    a->len = calloc((size_t)n_seq, sizeof *a->len);
    a->nblk = calloc((size_t)n_seq, sizeof *a->nblk);
    a->heap = malloc((size_t)n_blocks * sizeof *a->heap);
    if (!a->table || !a->len || !a->nblk || !a->heap) {
        br_kv_alloc_destroy(&a);
        return BR_E_NOMEM;
    }
    for (int32_t b = 0; b < n_blocks; b++) a->heap[b] = b; /* sorted: a valid min-heap */
    a->n_free = n_blocks;
    *out = a;
    return BR_OK;
}

void br_kv_alloc_destroy(struct br_kv_alloc **ap)
{
    if (!ap || !*ap) return;
    free((*ap)->table), free((*ap)->len), free((*ap)->nblk), free((*ap)->heap);
    free(*ap);
    *ap = NULL;
}

void br_kv_alloc_release(struct br_kv_alloc *a, int32_t seq)
{
    if (seq < 0 || seq >= a->n_seq) return;
    int32_t *t = a->table + (size_t)seq * (size_t)a->max_blocks;
    for (int32_t i = 0; i < a->nblk[seq]; i++) heap_push(a, t[i]);
    a->nblk[seq] = 0;
    a->len[seq] = 0;
}

int64_t br_kv_alloc_append(struct br_kv_alloc *a, int32_t seq, int32_t pos)
{
    if (seq < 0 || seq >= a->n_seq || pos < 0 || pos >= a->n_ctx || pos > a->len[seq])
        return BR_E_RANGE;
    int32_t blk = pos / a->bs;
    int32_t *t = a->table + (size_t)seq * (size_t)a->max_blocks;
    if (blk >= a->nblk[seq]) {
        if (a->n_free == 0) return BR_E_BUSY;
        t[a->nblk[seq]++] = heap_pop(a);
    }
    a->len[seq] = pos + 1;
    return (int64_t)t[blk] * a->bs + pos % a->bs;
}

int64_t br_kv_alloc_row(const struct br_kv_alloc *a, int32_t seq, int32_t pos)
{
    const int32_t *t = a->table + (size_t)seq * (size_t)a->max_blocks;
    return (int64_t)t[pos / a->bs] * a->bs + pos % a->bs;
}

int32_t br_kv_alloc_length(const struct br_kv_alloc *a, int32_t seq)
{
    return a->len[seq];
}
int32_t br_kv_alloc_free_blocks(const struct br_kv_alloc *a)
{
    return a->n_free;
}
int32_t br_kv_alloc_block_size(const struct br_kv_alloc *a)
{
    return a->bs;
}
int32_t br_kv_alloc_n_blocks(const struct br_kv_alloc *a)
{
    return a->n_blocks;
}
