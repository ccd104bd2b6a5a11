/*
 * Paged KV-cache bookkeeping: fixed-size blocks of positions handed to sequence slots on
 * demand. Every rank runs this allocator on the same step descriptors in the same order
 * (frees first, then each token's append), so block tables agree across ranks without
 * ever being sent. Allocation is deterministic: the lowest-numbered free block first.
 */
#ifndef BR_WORKER_KVCACHE_H
#define BR_WORKER_KVCACHE_H

#include <stdint.h>

struct br_kv_alloc;

/* n_seq slots of at most n_ctx positions each, n_blocks blocks of block_size positions. */
int br_kv_alloc_create(int32_t n_seq, int32_t n_ctx, int32_t block_size, int32_t n_blocks,
                       struct br_kv_alloc **out);
void br_kv_alloc_destroy(struct br_kv_alloc **a);

/* Releases every block of the slot; its length becomes 0. */
void br_kv_alloc_release(struct br_kv_alloc *a, int32_t seq);

/* Makes position pos of slot seq writable and returns its cache row (block * block_size +
 * offset). pos may be at most the slot's length (pos < length truncates the sequence to
 * pos first). Negative status: BR_E_RANGE (bad slot or position), BR_E_BUSY (no free
 * block). */
int64_t br_kv_alloc_append(struct br_kv_alloc *a, int32_t seq, int32_t pos);

/* Cache row of a position already written (pos < length). */
int64_t br_kv_alloc_row(const struct br_kv_alloc *a, int32_t seq, int32_t pos);

int32_t br_kv_alloc_length(const struct br_kv_alloc *a, int32_t seq);
int32_t br_kv_alloc_free_blocks(const struct br_kv_alloc *a);
int32_t br_kv_alloc_block_size(const struct br_kv_alloc *a);
int32_t br_kv_alloc_n_blocks(const struct br_kv_alloc *a);

#endif
