/* Terminal progress bar (see include/bitrack/progress.h). */
#include "bitrack/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double seconds(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double br_now(void)
{
    return seconds(CLOCK_MONOTONIC);
}

double br_cpu_s(void)
{
    return seconds(CLOCK_PROCESS_CPUTIME_ID);
}

double br_thread_cpu_s(void)
{
    return seconds(CLOCK_THREAD_CPUTIME_ID);
}

static void draw(struct br_progress *p, int final)
{
    double frac = p->total ? (double)p->done / (double)p->total : 1.0;
    if (frac > 1.0) frac = 1.0;
    int width = 30, fill = (int)(frac * width);
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    double el = br_now() - p->start;
    fprintf(stderr, "\r%-10s [%s] %5.1f%%  %.1fs%s", p->label, bar, frac * 100.0, el,
            final ? "\n" : "");
    fflush(stderr);
}

void br_progress_begin(struct br_progress *p, const char *label, uint64_t total)
{
    const char *env = getenv("BITRACK_PROGRESS");
    p->label = label;
    p->total = total;
    p->done = 0;
    p->start = p->last_draw = br_now();
    p->enabled = env ? atoi(env) != 0 : isatty(2);
    if (p->enabled) draw(p, 0);
}

void br_progress_add(struct br_progress *p, uint64_t n)
{
    p->done += n;
    if (!p->enabled) return;
    double t = br_now();
    if (t - p->last_draw >= 0.1) {
        p->last_draw = t;
        draw(p, 0);
    }
}

void br_progress_end(struct br_progress *p)
{
    if (p->enabled) {
        p->done = p->total;
        draw(p, 1);
    }
}
