/* Helpers shared by the unit tests: locating test data, temporary files, whole-file reads. */
#ifndef BR_TEST_UTIL_H
#define BR_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Path of a file under the repository's tests/data (BR_TEST_DATA overrides), in a static
 * buffer that the next call overwrites. */
const char *br_test_data(const char *rel);
/* Reads tests/data/REL whole (caller frees); NULL, after a message naming the path on
 * stderr, when it is missing or unreadable. */
uint8_t *br_test_data_read(const char *rel, size_t *len);
/* A fresh path in the build's scratch folder (BR_TMP or /tmp); caller frees. */
char *br_test_tmp_path(const char *stem);
/* Reads a whole file; returns a malloc'd buffer (caller frees) or NULL. */
uint8_t *br_test_read_file(const char *path, size_t *len);
/* Writes len bytes; returns 0 on success. */
int br_test_write_file(const char *path, const void *data, size_t len);
/* Deterministic xorshift64* stream for tests. */
uint64_t br_test_rand(uint64_t *state);

#endif
