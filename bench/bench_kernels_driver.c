/* Stand-alone driver for the kernel benchmark (the CLI wires the same function). */
#include "bench/bench.h"

int main(int argc, char **argv)
{
    return br_bench_kernels_main(argc, argv);
}
