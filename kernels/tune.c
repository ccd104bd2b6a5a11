/*
 * Per-CPU kernel parameters (tune.h): the active set, the calibration, and its cache.
 *
 * Calibration. One buffer of CAL_BYTES (beyond the last-level caches of the CPUs seen so
 * far, allocated and touched once) is viewed in turn as the matrices of each kernel: the
 * ternary GEMV's cycle through the four 2B-4T projection shapes as a layer does, the heads
 * are 2560 columns wide. A candidate's time is the calling thread's CPU time for one pass
 * over the buffer (what dedicated cores would take; another program's turn on the core
 * does not count), the best of CAL_REPS passes taken in alternation with the other
 * candidates of the same knob. Knobs are set one after the other (coordinate descent from
 * the defaults): the ternary GEMV's rows per group and distance (as pairs), then its hint;
 * the F16 head's
 * hint and distance; the Q8_0 head's tiles ahead and hint; the Q6_K head's hint and
 * distance; the GEMM's tokens per tile and row block, on 32 tokens from L2-sized
 * matrices; then, with the caller's pool, the ternary GEMV's row ranges per thread (timed
 * as the busiest thread's CPU time per matrix). A candidate replaces the current value only
 * when it is at least CAL_MARGIN faster, so measurement noise does not move the choice.
 * Each knob tries a subset of its choice set (c_* below); br_tune_set accepts any value of
 * the full sets (k_*), which the tests run through.
 *
 * Cache. `$XDG_CACHE_HOME/bitrack/tune-<hash>.txt` (else ~/.cache/bitrack), hash of the
 * key: the CPU (vendor, brand string, family, model, stepping), the kernel variant,
 * BR_KERNEL_BUILD_ID (a hash of the kernel sources, computed by the build), and whether
 * huge pages are asked for (kernels/bigmem.h; the best prefetch distance depends on the
 * pages). The file holds the key and one `name value` line per parameter; a file whose
 * key differs or whose values fall outside their choice sets is ignored (and rewritten).
 * Written to a temporary name and renamed, so that processes starting together (ranks of
 * one job) never read a partial file.
 */
#include "kernels/tune.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitrack/progress.h"
#include "bitrack/status.h"
#include "kernels/bigmem.h"
#include "kernels/dispatch.h"
#include "kernels/fhead.h"
#include "kernels/kernel_impl.h"
#include "kernels/pool.h"
#include "kernels/q6k.h"
#include "kernels/q8.h"
#include "kernels/ternary.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#ifndef BR_KERNEL_BUILD_ID
#define BR_KERNEL_BUILD_ID "unknown"
#endif

#define CAL_BYTES  (64u << 20) /* the calibration's working set */
#define CAL_REPS   3
#define CAL_MARGIN 0.03 /* a new value must be this much faster */

/* ---- the active parameters ---- */

static const struct br_tune k_defaults = {
    .gemv_rows = 4,
    .gemv_ahead = 3,
    .gemv_hint = BR_PF_T1,
    .fhead_ahead = 16384,
    .fhead_hint = BR_PF_T1,
    .fhead_near = 0,
    .q8_ahead = 1,
    .q8_hint = BR_PF_T1,
    .q8_streams = 1,
    .q6k_ahead = 16384,
    .q6k_hint = BR_PF_T1,
    .gemm_tmax = 12,
    .gemm_rb_kib = 512,
};

struct br_tune br_tune_defaults(void)
{
    return k_defaults;
}

/* The choice sets (also what the tests run through). */
static const int k_rows[] = {1, 2, 4};
static const int k_ahead_groups[] = {1, 2, 3, 4, 6, 8, 12, 16};
static const int k_hints[] = {BR_PF_T0, BR_PF_T1, BR_PF_T2, BR_PF_NTA};
static const int k_tasks[] = {1, 2, 4, 8};
static const int k_head_ahead[] = {4096, 8192, 16384, 32768, 65536};
static const int k_near[] = {0, 256, 512, 1024, 2048, 4096};
static const int k_q8_ahead[] = {1, 2, 3};
static const int k_streams[] = {1, 2, 4};
static const int k_tmax[] = {6, 8, 10, 12};
static const int k_rb_kib[] = {256, 512, 1024};
/* What the calibration tries (subsets of the above: T2 behaved as T1 wherever measured,
 * and fewer candidates keep the calibration short) */
/* rows per group and distance (groups) together: the distance that suits one group size
 * does not suit another (bytes ahead = groups x rows x row bytes) */
static const int c_rows_ahead[][2] = {{4, 2}, {4, 3}, {4, 4}, {4, 6},  {2, 3},
                                      {2, 6}, {1, 4}, {1, 8}, {1, 12}, {1, 16}};
static const int c_hints[] = {BR_PF_T0, BR_PF_T1, BR_PF_NTA};
static const int c_head_hints[] = {BR_PF_T0, BR_PF_T1};
static const int c_head_ahead[] = {8192, 16384, 32768, 65536};
static const int c_near[] = {0, 512, 1024, 2048};
static const int c_q8_ahead[] = {1, 2};
static const int c_tmax[] = {8, 10, 12};
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int in_set(int v, const int *set, int n)
{
    for (int i = 0; i < n; i++)
        if (set[i] == v) return 1;
    return 0;
}

/* 1 if every value is one of its choices (gemv_tasks: 0 or a choice). */
static int tune_valid(const struct br_tune *t)
{
    for (int i = 0; i <= BR_TUNE_MAX_THREADS; i++)
        if (t->gemv_tasks[i] && !in_set(t->gemv_tasks[i], k_tasks, NELEM(k_tasks))) return 0;
    return in_set(t->gemv_rows, k_rows, NELEM(k_rows)) &&
           in_set(t->gemv_ahead, k_ahead_groups, NELEM(k_ahead_groups)) &&
           in_set(t->gemv_hint, k_hints, NELEM(k_hints)) &&
           in_set(t->fhead_ahead, k_head_ahead, NELEM(k_head_ahead)) &&
           in_set(t->fhead_hint, k_hints, NELEM(k_hints)) &&
           in_set(t->fhead_near, k_near, NELEM(k_near)) &&
           in_set(t->q8_ahead, k_q8_ahead, NELEM(k_q8_ahead)) &&
           in_set(t->q8_hint, k_hints, NELEM(k_hints)) &&
           in_set(t->q8_streams, k_streams, NELEM(k_streams)) &&
           in_set(t->q6k_ahead, k_head_ahead, NELEM(k_head_ahead)) &&
           in_set(t->q6k_hint, k_hints, NELEM(k_hints)) &&
           in_set(t->gemm_tmax, k_tmax, NELEM(k_tmax)) &&
           in_set(t->gemm_rb_kib, k_rb_kib, NELEM(k_rb_kib));
}

static struct br_tune g_tune;
static atomic_int g_tune_set; /* 0: the defaults apply */

const struct br_tune *br_tune_active(void)
{
    if (atomic_load_explicit(&g_tune_set, memory_order_acquire)) return &g_tune;
    return &k_defaults;
}

void br_tune_set(const struct br_tune *t)
{
    struct br_tune d = br_tune_defaults(), v = *t;
    /* out-of-set values fall back to the default of that knob */
    if (!in_set(v.gemv_rows, k_rows, NELEM(k_rows))) v.gemv_rows = d.gemv_rows;
    if (v.gemv_ahead < 1 || v.gemv_ahead > 64) v.gemv_ahead = d.gemv_ahead;
    if (v.fhead_ahead < 64 || v.fhead_ahead > (1 << 20)) v.fhead_ahead = d.fhead_ahead;
    if (v.fhead_near < 0 || v.fhead_near > (1 << 20)) v.fhead_near = d.fhead_near;
    if (v.q6k_ahead < 64 || v.q6k_ahead > (1 << 20)) v.q6k_ahead = d.q6k_ahead;
    if (v.q8_ahead < 1 || v.q8_ahead > 16) v.q8_ahead = d.q8_ahead;
    if (!in_set(v.q8_streams, k_streams, NELEM(k_streams))) v.q8_streams = d.q8_streams;
    if (v.gemm_tmax < 1 || v.gemm_tmax > 12) v.gemm_tmax = d.gemm_tmax;
    if (v.gemm_rb_kib < 16 || v.gemm_rb_kib > 65536) v.gemm_rb_kib = d.gemm_rb_kib;
    v.gemv_hint &= 3, v.fhead_hint &= 3, v.q8_hint &= 3, v.q6k_hint &= 3;
    for (int i = 0; i <= BR_TUNE_MAX_THREADS; i++)
        if (v.gemv_tasks[i] < 0 || v.gemv_tasks[i] > 64) v.gemv_tasks[i] = 0;
    g_tune = v;
    atomic_store_explicit(&g_tune_set, 1, memory_order_release);
}

int br_tune_gemv_tasks(int threads)
{
    if (threads <= 1) return 1;
    const struct br_tune *t = br_tune_active();
    int n = threads <= BR_TUNE_MAX_THREADS ? t->gemv_tasks[threads] : 0;
    return n > 0 ? n : 4;
}

static const char *hint_name(int h)
{
    static const char *const names[] = {"t0", "t1", "t2", "nta"};
    return names[h & 3];
}

static int hint_parse(const char *s)
{
    for (int h = 0; h < 4; h++)
        if (strcmp(s, hint_name(h)) == 0) return h;
    return -1;
}

void br_tune_print(const struct br_tune *t, FILE *f)
{
    fprintf(f, "gemv_rows %d\ngemv_ahead %d\ngemv_hint %s\n", t->gemv_rows, t->gemv_ahead,
            hint_name(t->gemv_hint));
    for (int i = 2; i <= BR_TUNE_MAX_THREADS; i++)
        if (t->gemv_tasks[i]) fprintf(f, "gemv_tasks_%d %d\n", i, t->gemv_tasks[i]);
    fprintf(f, "fhead_ahead %d\nfhead_hint %s\nfhead_near %d\n", t->fhead_ahead,
            hint_name(t->fhead_hint), t->fhead_near);
    fprintf(f, "q8_ahead %d\nq8_hint %s\nq8_streams %d\n", t->q8_ahead, hint_name(t->q8_hint),
            t->q8_streams);
    fprintf(f, "q6k_ahead %d\nq6k_hint %s\n", t->q6k_ahead, hint_name(t->q6k_hint));
    fprintf(f, "gemm_tmax %d\ngemm_rb_kib %d\n", t->gemm_tmax, t->gemm_rb_kib);
}

/* ---- key and cache file ---- */

static void cpu_string(char *out, size_t n)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    char vendor[13] = {0}, brand[49] = {0};
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        memcpy(vendor, &b, 4);
        memcpy(vendor + 4, &d, 4);
        memcpy(vendor + 8, &c, 4);
    }
    unsigned fam = 0, model = 0, step = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        fam = (a >> 8) & 0xf, model = (a >> 4) & 0xf, step = a & 0xf;
        if (fam == 0xf) fam += (a >> 20) & 0xff;
        if (fam == 0x6 || fam >= 0xf) model |= ((a >> 16) & 0xf) << 4;
    }
    if (__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u)
        for (unsigned i = 0; i < 3; i++) {
            if (!__get_cpuid(0x80000002u + i, &a, &b, &c, &d)) a = b = c = d = 0;
            memcpy(brand + 16 * i, &a, 4);
            memcpy(brand + 16 * i + 4, &b, 4);
            memcpy(brand + 16 * i + 8, &c, 4);
            memcpy(brand + 16 * i + 12, &d, 4);
        }
    /* the brand string is padded with spaces on some CPUs */
    char *p = brand;
    while (*p == ' ') p++;
    for (size_t k = strlen(p); k > 0 && p[k - 1] == ' '; k--) p[k - 1] = 0;
    snprintf(out, n, "%s %s family %u model %u stepping %u", vendor, p, fam, model, step);
#else
    /* the MIDR names the core on Arm; elsewhere the architecture only */
    char midr[64] = "";
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1", "r");
    if (f) {
        if (!fgets(midr, sizeof midr, f)) midr[0] = 0;
        fclose(f);
        midr[strcspn(midr, "\n")] = 0;
    }
#if defined(__aarch64__)
    snprintf(out, n, "aarch64 midr %s", midr[0] ? midr : "unknown");
#else
    snprintf(out, n, "unknown cpu %s", midr);
#endif
#endif
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static char g_key[256], g_path[1024];
static atomic_int g_paths_ready;

static void make_paths(void)
{
    if (atomic_load_explicit(&g_paths_ready, memory_order_acquire)) return;
    char cpu[160];
    cpu_string(cpu, sizeof cpu);
    snprintf(g_key, sizeof g_key, "%s | kernels %s | build %s%s", cpu, br_kernels_name(),
             BR_KERNEL_BUILD_ID, br_big_huge() ? "" : " | small pages");
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    g_path[0] = 0;
    if (xdg && xdg[0] == '/')
        snprintf(g_path, sizeof g_path, "%s/bitrack/tune-%016llx.txt", xdg,
                 (unsigned long long)fnv1a(g_key));
    else if (home && home[0] == '/')
        snprintf(g_path, sizeof g_path, "%s/.cache/bitrack/tune-%016llx.txt", home,
                 (unsigned long long)fnv1a(g_key));
    atomic_store_explicit(&g_paths_ready, 1, memory_order_release);
}

const char *br_tune_key(void)
{
    make_paths();
    return g_key;
}

const char *br_tune_cache_path(void)
{
    make_paths();
    return g_path;
}

/* The cache file's parameters, if it exists, carries our key and holds valid values. */
static int cache_load(struct br_tune *out)
{
    const char *path = br_tune_cache_path();
    if (!path[0]) return -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    struct br_tune t;
    memset(&t, 0, sizeof t);
    char line[512];
    int key_ok = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (strncmp(line, "key ", 4) == 0) {
            key_ok = strcmp(line + 4, br_tune_key()) == 0;
            continue;
        }
        if (line[0] == '#' || !line[0]) continue;
        char name[64], val[64];
        if (sscanf(line, "%63s %63s", name, val) != 2) {
            rc = -1;
            break;
        }
        char *end;
        long v = strtol(val, &end, 10);
        int is_num = *end == 0 && end != val;
        int h = hint_parse(val);
        int threads = 0;
        if (strcmp(name, "gemv_rows") == 0 && is_num)
            t.gemv_rows = (int)v;
        else if (strcmp(name, "gemv_ahead") == 0 && is_num)
            t.gemv_ahead = (int)v;
        else if (strcmp(name, "gemv_hint") == 0 && h >= 0)
            t.gemv_hint = h;
        else if (sscanf(name, "gemv_tasks_%d", &threads) == 1 && threads >= 2 &&
                 threads <= BR_TUNE_MAX_THREADS && is_num)
            t.gemv_tasks[threads] = (int)v;
        else if (strcmp(name, "fhead_ahead") == 0 && is_num)
            t.fhead_ahead = (int)v;
        else if (strcmp(name, "fhead_hint") == 0 && h >= 0)
            t.fhead_hint = h;
        else if (strcmp(name, "fhead_near") == 0 && is_num)
            t.fhead_near = (int)v;
        else if (strcmp(name, "q8_ahead") == 0 && is_num)
            t.q8_ahead = (int)v;
        else if (strcmp(name, "q8_hint") == 0 && h >= 0)
            t.q8_hint = h;
        else if (strcmp(name, "q8_streams") == 0 && is_num)
            t.q8_streams = (int)v;
        else if (strcmp(name, "q6k_ahead") == 0 && is_num)
            t.q6k_ahead = (int)v;
        else if (strcmp(name, "q6k_hint") == 0 && h >= 0)
            t.q6k_hint = h;
        else if (strcmp(name, "gemm_tmax") == 0 && is_num)
            t.gemm_tmax = (int)v;
        else if (strcmp(name, "gemm_rb_kib") == 0 && is_num)
            t.gemm_rb_kib = (int)v;
        else {
            rc = -1;
            break;
        }
    }
    fclose(f);
    if (rc || !key_ok || !tune_valid(&t)) return -1;
    *out = t;
    return 0;
}

static int mkdir_p(const char *dir)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static void cache_store(const struct br_tune *t)
{
    const char *path = br_tune_cache_path();
    if (!path[0]) return;
    char dir[1024], tmp[1100];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    *slash = 0;
    if (mkdir_p(dir)) return;
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "# bitrack kernel parameters, chosen by calibration on this CPU; delete the file "
               "(or run with BITRACK_TUNE=force) to calibrate again\n");
    fprintf(f, "key %s\n", br_tune_key());
    br_tune_print(t, f);
    int bad = ferror(f);
    if (fclose(f) || bad || rename(tmp, path)) remove(tmp);
}

/* ---- calibration ---- */

struct cal {
    uint8_t *buf; /* CAL_BYTES */
    int8_t *q;    /* activations: int8 (32, 8192) */
    float *x;     /* float activations (2560,) */
    float *dx;    /* Q8_0 block scales (80,) */
    int32_t *acc; /* (rows) outputs */
    float *y;     /* float outputs */
    uint16_t *d8; /* Q8_0 head scales */
    struct br_tmat mats[64];
    int nmats;
    struct br_tmat gm; /* the GEMM's matrix: a view of the buffer */
    struct br_pool *pool;
    FILE *log;
};

static double u_pass_gemv(struct cal *c)
{
    double t0 = br_thread_cpu_s();
    for (int i = 0; i < c->nmats; i++) br_tmat_gemv(&c->mats[i], 0, c->mats[i].rows, c->q, c->acc);
    return br_thread_cpu_s() - t0;
}

static double u_pass_fhead(struct cal *c)
{
    double t0 = br_thread_cpu_s();
    struct br_fhead fh = {c->buf, 2 * 2560, (int64_t)(CAL_BYTES / (2 * 2560)), 2560, 0};
    br_fhead_gemm(&fh, 0, fh.rows, 1, c->x, 2560, c->y, 0);
    return br_thread_cpu_s() - t0;
}

static double u_pass_q8(struct cal *c)
{
    double t0 = br_thread_cpu_s();
    struct br_q8mat m;
    m.cols = 2560, m.nb = 80, m.ng = 5, m.row_bytes = 5 * 512;
    m.rows = (int64_t)(CAL_BYTES / m.row_bytes);
    m.qs = c->buf, m.d = c->d8;
    br_q8_gemv(&m, 0, m.rows, c->q, c->dx, c->y);
    return br_thread_cpu_s() - t0;
}

static double u_pass_q6k(struct cal *c)
{
    double t0 = br_thread_cpu_s();
    struct br_q6kmat m;
    int64_t rows = (int64_t)(CAL_BYTES / ((2560 / 256) * BR_Q6K_BLOCK_BYTES));
    if (br_q6kmat_view(&m, c->buf, rows, 2560)) return 0;
    br_q6k_gemm(&m, 0, m.rows, 1, c->q, 2560, c->dx, 80, c->y, 0);
    return br_thread_cpu_s() - t0;
}

static double u_pass_gemm(struct cal *c)
{
    double t0 = br_thread_cpu_s();
    /* 32 tokens through the GEMM matrix (compute bound, about 2 ms) */
    for (int k = 0; k < 1; k++)
        br_tmat_gemm(&c->gm, 0, c->gm.rows, 32, c->q, (size_t)c->gm.blocks * BR_TMAT_BLOCK, c->acc,
                     (size_t)c->gm.rows);
    return br_thread_cpu_s() - t0;
}

struct split_job {
    struct cal *c;
    int mat;
    pthread_t who[64];
    double cpu[64];
};

static void split_task(void *ctx, int task, int n_tasks)
{
    struct split_job *j = ctx;
    double t0 = br_thread_cpu_s();
    const struct br_tmat *m = &j->c->mats[j->mat];
    int32_t r0 = (int32_t)((int64_t)m->rows * task / n_tasks);
    int32_t r1 = (int32_t)((int64_t)m->rows * (task + 1) / n_tasks);
    if (r0 < r1) br_tmat_gemv(m, r0, r1, j->c->q, j->c->acc + r0);
    j->who[task & 63] = pthread_self();
    j->cpu[task & 63] = br_thread_cpu_s() - t0;
}

/* One pass of the split, timed as the busiest thread's CPU time per matrix (what
 * dedicated cores would take: another program's turn on a core does not count). */
static double u_pass_split(struct cal *c)
{
    int t = br_pool_threads(c->pool);
    int n = t * br_tune_gemv_tasks(t);
    double total = 0;
    for (int i = 0; i < c->nmats; i++) {
        struct split_job j;
        memset(&j, 0, sizeof j);
        j.c = c, j.mat = i;
        int nt = n < c->mats[i].rows ? n : c->mats[i].rows;
        if (nt > 64) nt = 64;
        br_pool_run(c->pool, split_task, &j, nt);
        double worst = 0;
        for (int a = 0; a < nt; a++) {
            double sum = 0;
            for (int b = 0; b < nt; b++)
                if (pthread_equal(j.who[a], j.who[b])) sum += j.cpu[b];
            if (sum > worst) worst = sum;
        }
        total += worst;
    }
    return total;
}

/* Sets *knob to each of vals in turn (CAL_REPS rounds), keeps the fastest if it beats the
 * current value by CAL_MARGIN; the parameters are active while measured. */
static void tune_knob(struct cal *c, struct br_tune *t, int *knob, const int *vals, int n,
                      const char *name, double (*pass)(struct cal *), double bytes)
{
    double best[16];
    for (int i = 0; i < n; i++) best[i] = 1e30;
    int cur = *knob;
    for (int rep = 0; rep < CAL_REPS; rep++)
        for (int i = 0; i < n; i++) {
            *knob = vals[i];
            br_tune_set(t);
            double dt = pass(c);
            if (dt < best[i]) best[i] = dt;
        }
    double cur_t = 1e30;
    for (int i = 0; i < n; i++)
        if (vals[i] == cur) cur_t = best[i];
    int choice = cur;
    double choice_t = cur_t;
    for (int i = 0; i < n; i++)
        if (best[i] < choice_t * (1.0 - CAL_MARGIN) || (cur_t >= 1e30 && best[i] < choice_t))
            choice = vals[i], choice_t = best[i];
    *knob = choice;
    br_tune_set(t);
    if (c->log) {
        fprintf(c->log, "  %-14s", name);
        for (int i = 0; i < n; i++) {
            int hint = strstr(name, "hint") != NULL;
            if (hint)
                fprintf(c->log, " %s", hint_name(vals[i]));
            else
                fprintf(c->log, " %d", vals[i]);
            if (bytes > 0)
                fprintf(c->log, ": %.1f GB/s%s", bytes / best[i] / 1e9,
                        vals[i] == choice ? "*" : "");
            else
                fprintf(c->log, ": %.2f ms%s", best[i] * 1e3, vals[i] == choice ? "*" : "");
            fputc(i + 1 < n ? ',' : '\n', c->log);
        }
    }
}

/* The ternary GEMV's rows per group and distance, as pairs (c_rows_ahead). */
static void tune_rows_ahead(struct cal *c, struct br_tune *t, double bytes)
{
    enum { N = NELEM(c_rows_ahead) };
    double best[N];
    for (int i = 0; i < N; i++) best[i] = 1e30;
    for (int rep = 0; rep < CAL_REPS; rep++)
        for (int i = 0; i < N; i++) {
            t->gemv_rows = c_rows_ahead[i][0], t->gemv_ahead = c_rows_ahead[i][1];
            br_tune_set(t);
            double dt = u_pass_gemv(c);
            if (dt < best[i]) best[i] = dt;
        }
    int choice = -1;
    for (int i = 0; i < N; i++) /* the default pair is the one to beat */
        if (c_rows_ahead[i][0] == k_defaults.gemv_rows &&
            c_rows_ahead[i][1] == k_defaults.gemv_ahead)
            choice = i;
    for (int i = 0; i < N; i++)
        if (choice < 0 || best[i] < best[choice] * (1.0 - CAL_MARGIN)) choice = i;
    t->gemv_rows = c_rows_ahead[choice][0], t->gemv_ahead = c_rows_ahead[choice][1];
    br_tune_set(t);
    if (c->log) {
        fprintf(c->log, "  %-14s", "gemv_rows x ahead");
        for (int i = 0; i < N; i++)
            fprintf(c->log, " %dx%d: %.1f GB/s%s%s", c_rows_ahead[i][0], c_rows_ahead[i][1],
                    bytes / best[i] / 1e9, i == choice ? "*" : "", i + 1 < N ? "," : "\n");
    }
}

static int cal_setup(struct cal *c)
{
    c->buf = br_big_alloc(CAL_BYTES); /* the memory weights are held in */
    c->q = aligned_alloc(64, 32 * 8192);
    c->x = aligned_alloc(64, 2560 * sizeof(float));
    c->dx = aligned_alloc(64, 32 * 80 * sizeof(float));
    c->acc = aligned_alloc(64, 32u * 8192 * sizeof(int32_t));
    c->y = aligned_alloc(64, CAL_BYTES / 1024 * sizeof(float)); /* a float per head row */
    size_t q8_rows = CAL_BYTES / (5 * 512);
    c->d8 = aligned_alloc(64, (q8_rows * 80 * sizeof(uint16_t) + 63) / 64 * 64);
    if (!c->buf || !c->q || !c->x || !c->dx || !c->acc || !c->y || !c->d8) return BR_E_NOMEM;
    /* bytes whose F16 values are small and normal, Q6_K scales and codes anything */
    uint64_t s = 0x243f6a8885a308d3ULL;
    uint64_t *w = (uint64_t *)(void *)c->buf;
    for (size_t i = 0; i < CAL_BYTES / 8; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        w[i] = (s & 0x3fff3fff3fff3fffULL) | 0x2000200020002000ULL;
    }
    for (size_t i = 0; i < 32 * 8192; i++) c->q[i] = (int8_t)(i * 37 + 11);
    for (int i = 0; i < 2560; i++) c->x[i] = 0.001f * (float)(i % 17) - 0.008f;
    for (int i = 0; i < 32 * 80; i++) c->dx[i] = 0.01f;
    for (size_t i = 0; i < q8_rows * 80; i++) c->d8[i] = 0x2000; /* f16 2^-7 */
    /* the ternary views: a layer's shapes in turn over the whole buffer */
    static const int32_t shapes[4][2] = {{2560, 2560}, {640, 2560}, {6912, 2560}, {2560, 6912}};
    size_t off = 0;
    for (c->nmats = 0; c->nmats < 64; c->nmats++) {
        const int32_t *sh = shapes[c->nmats % 4];
        struct br_tmat *m = &c->mats[c->nmats];
        memset(m, 0, sizeof *m);
        m->rows = sh[0], m->cols = sh[1], m->blocks = br_tmat_blocks(sh[1]);
        m->row_bytes = (size_t)m->blocks * BR_TMAT_BLOCK_BYTES;
        if (off + (size_t)m->rows * m->row_bytes > CAL_BYTES) break;
        m->codes = c->buf + off;
        off += (size_t)m->rows * m->row_bytes;
    }
    /* the GEMM's: 2560 x 2560 (1.6 MB, L2/L3-resident like a row block's) */
    memset(&c->gm, 0, sizeof c->gm);
    c->gm.rows = 2560, c->gm.cols = 2560, c->gm.blocks = 20, c->gm.row_bytes = 640;
    c->gm.codes = c->buf;
    return BR_OK;
}

static void cal_free(struct cal *c)
{
    br_big_free(c->buf, CAL_BYTES);
    free(c->q);
    free(c->x);
    free(c->dx);
    free(c->acc);
    free(c->y);
    free(c->d8);
}

/* The split for the pool's thread count. */
static void tune_split(struct cal *c, struct br_tune *t)
{
    int nt = br_pool_threads(c->pool);
    if (nt < 2 || nt > BR_TUNE_MAX_THREADS) return;
    if (!t->gemv_tasks[nt]) t->gemv_tasks[nt] = 4;
    char name[32];
    snprintf(name, sizeof name, "gemv_tasks_%d", nt);
    size_t ternary = 0;
    for (int i = 0; i < c->nmats; i++) ternary += (size_t)c->mats[i].rows * c->mats[i].row_bytes;
    tune_knob(c, t, &t->gemv_tasks[nt], k_tasks, NELEM(k_tasks), name, u_pass_split,
              (double)ternary);
}

int br_tune_calibrate(struct br_pool *pool, struct br_tune *out, FILE *log)
{
    struct cal c;
    memset(&c, 0, sizeof c);
    c.pool = pool;
    c.log = log;
    const struct br_tune saved = *br_tune_active();
    int was_set = atomic_load_explicit(&g_tune_set, memory_order_acquire);
    int rc = cal_setup(&c);
    if (rc) {
        cal_free(&c);
        return rc;
    }
    double t0 = br_now(), c0 = br_thread_cpu_s();
    struct br_tune t = br_tune_defaults();
    size_t ternary = 0;
    for (int i = 0; i < c.nmats; i++) ternary += (size_t)c.mats[i].rows * c.mats[i].row_bytes;
    double full = (double)CAL_BYTES;
    if (log)
        fprintf(log, "calibration (%s kernels, one thread unless named):\n", br_kernels_name());
    u_pass_gemv(&c); /* warm-up: page mapping, frequency */
    tune_rows_ahead(&c, &t, (double)ternary);
    tune_knob(&c, &t, &t.gemv_hint, c_hints, NELEM(c_hints), "gemv_hint", u_pass_gemv,
              (double)ternary);
    tune_knob(&c, &t, &t.fhead_hint, c_head_hints, NELEM(c_head_hints), "fhead_hint", u_pass_fhead,
              full);
    tune_knob(&c, &t, &t.fhead_ahead, c_head_ahead, NELEM(c_head_ahead), "fhead_ahead",
              u_pass_fhead, full);
    tune_knob(&c, &t, &t.fhead_near, c_near, NELEM(c_near), "fhead_near", u_pass_fhead, full);
    tune_knob(&c, &t, &t.q8_ahead, c_q8_ahead, NELEM(c_q8_ahead), "q8_ahead", u_pass_q8, full);
    tune_knob(&c, &t, &t.q8_hint, c_head_hints, NELEM(c_head_hints), "q8_hint", u_pass_q8, full);
    tune_knob(&c, &t, &t.q8_streams, k_streams, NELEM(k_streams), "q8_streams", u_pass_q8, full);
    tune_knob(&c, &t, &t.q6k_hint, c_head_hints, NELEM(c_head_hints), "q6k_hint", u_pass_q6k, full);
    tune_knob(&c, &t, &t.q6k_ahead, c_head_ahead, NELEM(c_head_ahead), "q6k_ahead", u_pass_q6k,
              full);
    tune_knob(&c, &t, &t.gemm_tmax, c_tmax, NELEM(c_tmax), "gemm_tmax", u_pass_gemm, 0);
    tune_knob(&c, &t, &t.gemm_rb_kib, k_rb_kib, NELEM(k_rb_kib), "gemm_rb_kib", u_pass_gemm, 0);
    if (pool && br_pool_threads(pool) > 1) {
        /* keep the splits the active set already has for other thread counts */
        memcpy(t.gemv_tasks, saved.gemv_tasks, sizeof t.gemv_tasks);
        tune_split(&c, &t);
    }
    if (log)
        fprintf(log, "calibration took %.0f ms (%.0f ms of the calling thread's CPU time)\n",
                (br_now() - t0) * 1e3, (br_thread_cpu_s() - c0) * 1e3);
    cal_free(&c);
    if (was_set)
        br_tune_set(&saved);
    else
        atomic_store_explicit(&g_tune_set, 0, memory_order_release);
    *out = t;
    return BR_OK;
}

/* ---- once per process ---- */

static enum br_tune_source g_source = BR_TUNE_DEFAULT;
static atomic_flag busy = ATOMIC_FLAG_INIT;
static int done;

void br_tune_reset(void)
{
    while (atomic_flag_test_and_set_explicit(&busy, memory_order_acquire)) {
    }
    done = 0;
    g_source = BR_TUNE_DEFAULT;
    atomic_store_explicit(&g_tune_set, 0, memory_order_release);
    atomic_flag_clear_explicit(&busy, memory_order_release);
}

enum br_tune_source br_tune_init(struct br_pool *pool)
{
    /* one caller at a time (model loads are not concurrent in practice; this keeps two
     * engines created together from calibrating twice) */
    while (atomic_flag_test_and_set_explicit(&busy, memory_order_acquire)) {
    }
    const char *mode = getenv("BITRACK_TUNE");
    int off = mode && strcmp(mode, "off") == 0, force = mode && strcmp(mode, "force") == 0;
    if (mode && !off && !force && strcmp(mode, "on") != 0 && !done)
        fprintf(stderr, "bitrack: BITRACK_TUNE=%s is not off, on or force; using on\n", mode);
    if (off) {
        atomic_flag_clear_explicit(&busy, memory_order_release);
        return BR_TUNE_DEFAULT;
    }
    int nt = br_pool_threads(pool);
    /* only the x86 SIMD kernels read the parameters; elsewhere there is nothing to tune */
    const char *variant = br_kernels_name();
    if (strcmp(variant, "avx512") != 0 && strcmp(variant, "avx2") != 0) {
        atomic_flag_clear_explicit(&busy, memory_order_release);
        return BR_TUNE_DEFAULT;
    }
    if (!done) {
        struct br_tune t;
        if (!force && cache_load(&t) == 0) {
            br_tune_set(&t);
            g_source = BR_TUNE_LOADED;
        } else if (br_tune_calibrate(pool, &t, NULL) == BR_OK) {
            br_tune_set(&t);
            cache_store(&t);
            g_source = BR_TUNE_CALIBRATED;
        }
        done = 1;
    }
    if (g_source != BR_TUNE_DEFAULT && nt > 1 && nt <= BR_TUNE_MAX_THREADS &&
        !br_tune_active()->gemv_tasks[nt]) {
        /* a new thread count: its split only */
        struct cal c;
        memset(&c, 0, sizeof c);
        c.pool = pool;
        struct br_tune t = *br_tune_active();
        if (cal_setup(&c) == BR_OK) {
            tune_split(&c, &t);
            br_tune_set(&t);
            cache_store(&t);
        }
        cal_free(&c);
    }
    enum br_tune_source src = g_source;
    atomic_flag_clear_explicit(&busy, memory_order_release);
    return src;
}
