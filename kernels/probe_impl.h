/*
 * The read-only streaming probe: how fast one thread can read memory with the widest
 * vector loads of the file that includes this header, several streams in flight.
 *
 * A GEMV reads its matrix once per token and writes almost nothing, so its bound is read
 * bandwidth, not the STREAM triad's mix of two reads and a write (which overstates the
 * limit on CPUs with cheap write-allocate and understates it where writes cost extra).
 * The probe cuts its range into `streams` equal pieces read in lockstep, two vectors of
 * each per step, so that many independent misses are in flight as in a GEMV over several
 * rows; optionally each step also prefetches, into L2, the lines `ahead` bytes further
 * on in every stream (as the GEMV does: on some CPUs the hardware prefetcher alone leaves
 * bandwidth unused). Written once with GCC vector types and included by each ISA file, so it
 * compiles to 512-bit loads in ternary_avx512.c, 256-bit in ternary_avx2.c and 128-bit elsewhere.
 * Returns a value that depends on every byte read, so no load can be dropped.
 */
#ifndef BR_KERNELS_PROBE_IMPL_H
#define BR_KERNELS_PROBE_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef uint64_t br_probe_vec __attribute__((vector_size(64), aligned(64)));

static inline __attribute__((always_inline)) uint64_t
br_probe_streams(const uint8_t *p, size_t piece, int S, size_t ahead)
{
    br_probe_vec acc[8];
    memset(acc, 0, sizeof acc);
    for (size_t i = 0; i + 128 <= piece; i += 128)
        for (int s = 0; s < S; s++) {
            const uint8_t *a = p + (size_t)s * piece + i;
            if (ahead) { /* past the end is harmless: a prefetch never faults */
                __builtin_prefetch(a + ahead, 0, 2);
                __builtin_prefetch(a + ahead + 64, 0, 2);
            }
            const br_probe_vec *v = (const br_probe_vec *)(const void *)a;
            acc[s] += v[0] + v[1];
        }
    uint64_t r = 0;
    for (int s = 0; s < S; s++)
        for (int k = 0; k < 8; k++) r += acc[s][k];
    return r;
}

/* Reads bytes at p (64-byte aligned, a multiple of 128 * streams) as `streams` (1, 2, 4 or
 * 8) pieces in lockstep, prefetching `ahead` bytes ahead into L2 (0: no prefetch); other
 * stream counts read as 4. */
static inline uint64_t br_read_probe_impl(const void *p, size_t bytes, int streams, size_t ahead)
{
    const uint8_t *b = p;
    switch (streams * 2 + (ahead != 0)) {
    case 2:
        return br_probe_streams(b, bytes, 1, 0);
    case 3:
        return br_probe_streams(b, bytes, 1, ahead);
    case 4:
        return br_probe_streams(b, bytes / 2, 2, 0);
    case 5:
        return br_probe_streams(b, bytes / 2, 2, ahead);
    case 16:
        return br_probe_streams(b, bytes / 8, 8, 0);
    case 17:
        return br_probe_streams(b, bytes / 8, 8, ahead);
    default:
        return ahead ? br_probe_streams(b, bytes / 4, 4, ahead)
                     : br_probe_streams(b, bytes / 4, 4, 0);
    }
}

#endif
