/*
 * Memory for the large arrays decode streams through on every token: the ternary weights,
 * the head's rows, the KV cache. Each allocation is its own anonymous mapping starting on
 * a 2 MiB boundary, and the kernel is asked (madvise MADV_HUGEPAGE) to back it with
 * transparent huge pages.
 *
 * Why: with 4 KiB pages 2B-4T's 1.18 GB of weights cross ~290,000 pages a token, and the
 * page walks of the TLB misses sit on the path of every hardware prefetch stream; with
 * 2 MiB pages there are ~560. On the project's Zen 4 machine the ternary GEMVs stream
 * 1.45-1.9x faster and decode runs 1.07-1.37x faster (docs/PERFORMANCE.md, "huge pages"). Systems
 * whose transparent huge pages are set to `never` simply get 4 KiB pages; the contents never depend
 * on it.
 *
 * BITRACK_HUGEPAGES=0 in the environment leaves the advice out (read once), to compare.
 * A mapping's tail past its last whole 2 MiB stays in small pages, so no allocation
 * holds more memory than it asked for, rounded to a 4 KiB page.
 */
#ifndef BR_KERNELS_BIGMEM_H
#define BR_KERNELS_BIGMEM_H

#include <stddef.h>

/* `bytes` (at least 1) of zeroed memory, 2 MiB aligned; NULL when out of memory. */
void *br_big_alloc(size_t bytes);
/* Frees what br_big_alloc(bytes) returned, with the same `bytes`; NULL-safe. */
void br_big_free(void *p, size_t bytes);
/* Whether allocations ask for huge pages (BITRACK_HUGEPAGES unset or not "0"). */
int br_big_huge(void);

#endif
