/* Status codes, their text, and the error-message helpers of include/bitrack/status.h. */
#include "bitrack/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *br_strerror(int status)
{
    switch (status) {
#define BR_STATUS_CASE(name, code, text)                                                           \
    case code:                                                                                     \
        return text;
        BR_STATUS_LIST(BR_STATUS_CASE)
#undef BR_STATUS_CASE
    }
    return "unknown error";
}

int br_err_set(struct br_err *err, int status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

int br_err_prefix(struct br_err *err, int status, const char *fmt, ...)
{
    if (err) {
        char head[256], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(head, sizeof head, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        old[sizeof old - 1] = '\0';
        const char *tail = old[0] ? old : br_strerror(status);
        size_t hn = strlen(head);
        /* head, ": ", then as much of the old message as fits. */
        memcpy(err->msg, head, hn);
        memcpy(err->msg + hn, ": ", 2);
        size_t room = sizeof err->msg - hn - 3, tn = strlen(tail);
        if (tn > room) tn = room;
        memcpy(err->msg + hn + 2, tail, tn);
        err->msg[hn + 2 + tn] = '\0';
    }
    return status;
}
