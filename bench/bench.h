/*
 * Benchmarks callable from the command line (`bitrack bench kernels`).
 */
#ifndef BR_BENCH_BENCH_H
#define BR_BENCH_BENCH_H

/* Kernel benchmark: memory bandwidth, ternary GEMV/GEMM per variant and thread count.
 * Options: -t 1,2  --variants avx2,avx512  --json FILE  --mb N (GEMV working set)
 * --quick  -h. Returns 0 on success, 2 on bad arguments. */
int br_bench_kernels_main(int argc, char **argv);

struct br_pool;
#include <stddef.h>
/* STREAM-like triad bandwidth (GB/s) over total_mb MiB with the pool's threads. */
double br_bench_bandwidth_gbs(struct br_pool *pool, size_t total_mb);
/* Both: the triad and the read-only streaming probe (kernels/probe_impl.h), GB/s. */
void br_bench_bandwidth(struct br_pool *pool, size_t total_mb, double *triad_gbs, double *read_gbs);
/* The active kernel variant's peak int8 multiply-add rate (MAC/s) with the pool's threads. */
double br_bench_peak_macs(struct br_pool *pool);

#endif
