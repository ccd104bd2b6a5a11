/*
 * bitrack status codes and error messages.
 *
 * Every fallible function returns an enum br_status (BR_OK = 0, errors negative). Bad input
 * (a file, a request, a peer) is a returned error, and a struct br_err, where the caller
 * passes one, receives a one-line message naming what was wrong and where (field, byte
 * offset). `assert` is only for our own invariants.
 */
#ifndef BITRACK_STATUS_H
#define BITRACK_STATUS_H

#include <stddef.h>

#define BR_STATUS_LIST(X)                                                                          \
    X(BR_OK, 0, "success")                                                                         \
    X(BR_E_NOMEM, -1, "out of memory")                                                             \
    X(BR_E_IO, -2, "input/output error")                                                           \
    X(BR_E_FORMAT, -3, "malformed file")                                                           \
    X(BR_E_UNSUPPORTED, -4, "unsupported")                                                         \
    X(BR_E_INVALID, -5, "invalid argument")                                                        \
    X(BR_E_NOTFOUND, -6, "not found")                                                              \
    X(BR_E_RANGE, -7, "value out of range")                                                        \
    X(BR_E_MISMATCH, -8, "mismatch")                                                               \
    X(BR_E_TOO_LONG, -9, "too long")                                                               \
    X(BR_E_BUSY, -10, "busy")                                                                      \
    X(BR_E_CANCELLED, -11, "cancelled")                                                            \
    X(BR_E_UNAVAILABLE, -12, "unavailable")                                                        \
    X(BR_E_TIMEOUT, -13, "timed out")                                                              \
    X(BR_E_PROTOCOL, -14, "protocol error")                                                        \
    X(BR_E_INTERNAL, -15, "internal error")                                                        \
    X(BR_E_DUPLICATE, -16, "duplicate")

enum br_status {
#define BR_STATUS_ENUM(name, code, text) name = code,
    BR_STATUS_LIST(BR_STATUS_ENUM)
#undef BR_STATUS_ENUM
};

/* Static text for a status code; never NULL. */
const char *br_strerror(int status);

/* A one-line error message filled by the function that failed. May be passed as NULL. */
struct br_err {
    char msg[512];
};

/* Sets err->msg (printf-style) when err is not NULL, and returns status so callers can
 * write `return br_err_set(err, BR_E_FORMAT, "...")`. */
int br_err_set(struct br_err *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes err->msg with more context ("loading x.gguf: ..."); returns status. */
int br_err_prefix(struct br_err *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
