/* Tokenizer throughput benchmark (bench_tokenizer.c). */
#ifndef BR_BENCH_TOKENIZER_H
#define BR_BENCH_TOKENIZER_H

/* argv[1]: the data folder holding tokenizer/ (default $BR_TEST_DATA, then tests/data);
 * argv[2]: megabytes of text (default 1). Prints MB/s; returns 0 on success. */
int br_bench_tokenizer_main(int argc, char **argv);

#endif
