/*
 * Benchmarks callable from the command line (`bitrack bench kernels`).
 */
#ifndef BR_BENCH_BENCH_H
#define BR_BENCH_BENCH_H

/* Kernel benchmark: memory bandwidth, ternary GEMV/GEMM per variant and thread count.
 * Options: -t 1,2  --variants avx2,avx512  --json FILE  --mb N (GEMV working set)
 * --quick  -h. Returns 0 on success, 2 on bad arguments. */
int br_bench_kernels_main(int argc, char **argv);

#endif
