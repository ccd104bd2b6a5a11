/* Helpers shared by the unit tests (see test_util.h). */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

#ifndef BR_TEST_DATA_DIR
#define BR_TEST_DATA_DIR "tests/data"
#endif

const char *br_test_data(const char *rel)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", env_or("BR_TEST_DATA", BR_TEST_DATA_DIR), rel);
    return buf;
}

uint8_t *br_test_data_read(const char *rel, size_t *len)
{
    const char *path = br_test_data(rel);
    uint8_t *b = br_test_read_file(path, len);
    if (!b)
        fprintf(stderr,
                "test data file %s cannot be read: the repository's tests/data/ must be "
                "complete (tests/data/README.md lists every file)\n",
                path);
    return b;
}

/* Every path handed out, so that the files a failed check left behind (cmocka leaves the
 * test before its cleanup) are removed when the test program exits. */
#define TMP_MAX_PATHS 256
static char *g_tmp_paths[TMP_MAX_PATHS];
static int g_tmp_count;
static pid_t g_tmp_owner;

static void remove_tmp_paths(void)
{
    if (getpid() != g_tmp_owner) return; /* a forked child's exit leaves them alone */
    for (int i = 0; i < g_tmp_count; i++) {
        struct stat st;
        if (lstat(g_tmp_paths[i], &st) == 0 && S_ISREG(st.st_mode)) unlink(g_tmp_paths[i]);
        free(g_tmp_paths[i]);
    }
    g_tmp_count = 0;
}

char *br_test_tmp_path(const char *stem)
{
    static unsigned counter;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s-%ld-%u", env_or("BR_TMP", "/tmp"), stem, (long)getpid(),
             counter++);
    if (g_tmp_count == 0 && g_tmp_owner == 0) {
        g_tmp_owner = getpid();
        atexit(remove_tmp_paths);
    }
    if (g_tmp_count < TMP_MAX_PATHS && getpid() == g_tmp_owner) {
        char *copy = strdup(buf);
        if (copy) g_tmp_paths[g_tmp_count++] = copy;
    }
    return strdup(buf);
}

uint8_t *br_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf && len) *len = (size_t)n;
    return buf;
}

int br_test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

uint64_t br_test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
