/*
 * libFuzzer harness for the shard loader (sharding/shard.h, br_model_load_shard): the
 * input is written as DIR/rank-0.gguf and loaded as rank 0 of a 1 x 1 sharding, which
 * runs the GGUF reader, br_shard_read_info, the plan check and every tensor slice the
 * loader takes (embedding window, norms, ternary weights, row scales, head). Whatever it
 * accepts is freed; a refusal must come with a message. The seed corpus holds a real
 * shard of a tiny synthetic model, so mutations reach past the header checks.
 *
 * The scratch directory is made once per process (LLVMFuzzerInitialize) and removed at
 * exit; it is the only state besides libFuzzer's.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64];  /* scratch directory */
static char g_path[96]; /* g_dir/rank-0.gguf */

static void remove_dir(void)
{
    unlink(g_path);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(g_dir, sizeof g_dir, "/tmp/br-fuzz-shard.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("fuzz_shard: mkdtemp");
        abort();
    }
    snprintf(g_path, sizeof g_path, "%s/rank-0.gguf", g_dir);
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(g_path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();
    struct br_model *m = NULL;
    struct br_err err;
    err.msg[0] = '\0';
    int rc = br_model_load_shard(g_dir, 1, 1, 0, &m, &err);
    if (rc != 0) {
        if (m != NULL || err.msg[0] == '\0') abort();
        return 0;
    }
    br_model_destroy(&m);
    return 0;
}
