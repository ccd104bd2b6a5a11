/*
 * A progress bar on stderr for long work (loading, synthesis, sharding). It draws only
 * when stderr is a terminal (or BITRACK_PROGRESS=1), at most ~10 times a second, and
 * prints nothing otherwise, so logs and tests stay clean.
 */
#ifndef BITRACK_PROGRESS_H
#define BITRACK_PROGRESS_H

#include <stdint.h>

struct br_progress {
    const char *label;
    uint64_t total, done;
    double start, last_draw;
    int enabled;
};

void br_progress_begin(struct br_progress *p, const char *label, uint64_t total);
void br_progress_add(struct br_progress *p, uint64_t n);
void br_progress_end(struct br_progress *p);

/* Seconds: monotonic (wall time), this process's CPU time, this thread's CPU time. */
double br_now(void);
double br_cpu_s(void);
double br_thread_cpu_s(void);

#endif
