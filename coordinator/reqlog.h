/*
 * The request log: one line per finished request, whichever transport carried it.
 *
 *   text: 2026-12-07T14:03:11.123Z id=c1 transport=http client=127.0.0.1 status=200
 *         prompt_tokens=5 output_tokens=16 queue_ms=0.1 ttft_ms=3.2 total_ms=40.1 result=length
 *   json: {"ts": "...", "id": "c1", "transport": "http", "client": "127.0.0.1",
 *          "status": 200, "prompt_tokens": 5, "output_tokens": 16, "queue_ms": 0.1,
 *          "ttft_ms": 3.2, "total_ms": 40.1, "result": "length"}
 *
 * Times unknown for a request (refused before it reached the scheduler) are omitted;
 * `status` only for HTTP. Text values are quoted when they hold a space, '"' or '='.
 *
 * A line is formatted by the calling thread and handed to a writer thread, so a slow
 * disk or a full pipe never stalls the scheduler or a front end: br_reqlog_write only
 * appends to a bounded in-memory queue (lines beyond it are counted and reported as
 * dropped in the next line written).
 */
#ifndef BR_COORDINATOR_REQLOG_H
#define BR_COORDINATOR_REQLOG_H

#include <stdio.h>

#include "bitrack/status.h"
#include "coordinator/metrics.h"

enum br_reqlog_format { BR_REQLOG_TEXT = 0, BR_REQLOG_JSON };

struct br_reqlog;

/* path NULL or "-": stderr. Opens (appends to) the file; BR_E_IO naming it on failure. */
int br_reqlog_open(const char *path, enum br_reqlog_format fmt, struct br_reqlog **out,
                   struct br_err *err);
/* Writes what is queued, stops the writer, closes the file; NULL-safe. */
void br_reqlog_close(struct br_reqlog **l);

/* Queues one line for o. NULL l is a no-op. */
void br_reqlog_write(struct br_reqlog *l, const struct br_outcome *o);

/* Formats o as one line (with '\n') into buf; returns the length (truncated to n-1). */
size_t br_reqlog_format(enum br_reqlog_format fmt, const struct br_outcome *o, double now,
                        char *buf, size_t n);

#endif
