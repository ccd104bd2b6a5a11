/* `bitrack bench kernels`: the kernel micro-benchmarks of bench/bench_kernels.c. */
#include "bench/bench.h"
#include "cli/cli.h"

int br_cmd_bench_kernels(int argc, char **argv);

int br_cmd_bench_kernels(int argc, char **argv)
{
    return br_bench_kernels_main(argc, argv);
}
