/*
 * Huge-page-backed allocations (kernels/bigmem.h): mmap, trim to a 2 MiB boundary,
 * madvise.
 */
#define _DEFAULT_SOURCE
#include "kernels/bigmem.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BIG_ALIGN ((size_t)2 << 20)

int br_big_huge(void)
{
    static _Atomic int huge = -1; /* racing first calls store the same value */
    int h = atomic_load_explicit(&huge, memory_order_relaxed);
    if (h < 0) {
        const char *v = getenv("BITRACK_HUGEPAGES");
        h = !(v && strcmp(v, "0") == 0);
        atomic_store_explicit(&huge, h, memory_order_relaxed);
    }
    return h;
}

#if defined(__SANITIZE_ADDRESS__)
#define BIG_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BIG_MALLOC 1
#endif
#endif

#ifdef BIG_MALLOC
/* Under AddressSanitizer the heap's redzones catch a kernel reading past its matrix, which
 * a page-rounded mapping would hide: take the memory from the heap there. */
void *br_big_alloc(size_t bytes)
{
    size_t n = (bytes ? bytes : 1) + 63;
    void *p = aligned_alloc(64, n / 64 * 64);
    if (p) memset(p, 0, n / 64 * 64);
    return p;
}

void br_big_free(void *p, size_t bytes)
{
    (void)bytes;
    free(p);
}
#else
static size_t page_round(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}

void *br_big_alloc(size_t bytes)
{
    size_t len = page_round(bytes ? bytes : 1);
    if (len > SIZE_MAX - BIG_ALIGN) return NULL;
    size_t span = len + BIG_ALIGN;
    char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)p + BIG_ALIGN - 1) & ~(uintptr_t)(BIG_ALIGN - 1));
    if (a > p) munmap(p, (size_t)(a - p));
    if (p + span > a + len) munmap(a + len, (size_t)(p + span - (a + len)));
#ifdef MADV_HUGEPAGE
    if (br_big_huge()) (void)madvise(a, len, MADV_HUGEPAGE); /* advice: failure is harmless */
#endif
    return a; /* fresh anonymous pages read as zeros */
}

void br_big_free(void *p, size_t bytes)
{
    if (p) munmap(p, page_round(bytes ? bytes : 1));
}
#endif
