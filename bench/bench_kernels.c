/*
 * Kernel benchmark: how close the ternary kernels come to the machine's limits.
 *
 * Decode is bound by memory bandwidth, so GEMV is reported as weight bytes per second
 * and as a fraction of bandwidth measured in the same run: a read-only streaming probe
 * (kernels/probe_impl.h: the variant's vector loads, 1 to 8 streams in flight per thread,
 * with and without an L2 prefetch; the best form), which is what a GEMV does, and a STREAM-like
 * triad over about 1 GB as a second reference. The GEMV working set is many copies of the matrix
 * (about 1 GB in all, far beyond the last-level cache), visited in turn with one fork/join per
 * matrix, as a forward pass would. Prefill and batched decode are bound by int8 multiply-add
 * throughput, so GEMM is reported as GOPS (2 ops per multiply-add of a weight and an activation)
 * and as a fraction of the peak MAC rate of the variant's own multiply-add instruction, measured by
 * a tight loop on the same threads. Every figure is the best of several repetitions.
 *
 * The F16 output head of 2B-4T (128256 x 2560) is measured like a GEMV, one token. With
 * --l2, every GEMV is also run from two copies of its first rows that stay in L2: what the
 * kernel's instructions allow when memory plays no part, to compare with the read probe
 * (a kernel that cannot beat the probe from L2 cannot reach it from memory).
 *
 * Shapes: BitNet-b1.58-2B-4T (d 2560, ffn 6912: 2560x2560, 640x2560, 6912x2560,
 * 2560x6912) and the 100B benchmark shape (d 8192, ffn 45568). Rows are split over the
 * pool's threads in multiples of 4 (GEMV: the calibrated ranges per thread, as the engine
 * splits a decode projection; GEMM: TASKS_PER_THREAD), as the engine
 * splits projections.
 */
#include "bench/bench.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "kernels/bigmem.h"
#include "kernels/dispatch.h"
#include "kernels/fhead.h"
#include "kernels/kernel_impl.h"
#include "kernels/pool.h"
#include "kernels/ternary.h"
#include "kernels/tune.h"

#define MAX_LIST 8
/* Row ranges per thread in a run. One each measured best: every range re-derives the
 * activation layout and sum, and short ranges cut the GEMV's prefetch streams short. */
#ifndef TASKS_PER_THREAD
#define TASKS_PER_THREAD 1
#endif

struct opts {
    int threads[MAX_LIST];
    int n_threads;
    const char *variants[MAX_LIST];
    int n_variants;
    const char *json;
    size_t ws_mb;
    int quick;
    int gemv_only;
    int tune;
    int l2; /* also each GEMV from matrices that stay in L2 */
};

struct shape {
    const char *model;
    const char *name; /* which projection */
    int32_t rows, cols;
};

static const struct shape g_shapes[] = {
    {"2B-4T", "attn_qo", 2560, 2560},  {"2B-4T", "attn_kv", 640, 2560},
    {"2B-4T", "ffn_up", 6912, 2560},   {"2B-4T", "ffn_down", 2560, 6912},
    {"100B", "attn", 8192, 8192},      {"100B", "ffn_up", 45568, 8192},
    {"100B", "ffn_down", 8192, 45568},
};
#define N_SHAPES (sizeof g_shapes / sizeof g_shapes[0])

/* Interval timing, three clocks (--clock):
 *  thread (default): per run, the CPU time of the busiest thread (struct task_clock);
 *    on a machine shared with other programs this is what dedicated cores would take.
 *  wall: elapsed time; every figure is the best of several repetitions.
 *  cpu: process CPU time / threads; a diagnostic only: it over-reports short threaded
 *    runs (a running thread's CPU time is brought up to date only at ticks and switches). */
enum { CLOCK_THREAD, CLOCK_WALL, CLOCK_CPU };
static int g_clock = CLOCK_THREAD; /* set once from the options */

struct stopwatch {
    double wall, cpu;
};

static struct stopwatch sw_start(void)
{
    struct stopwatch s = {br_now(), br_cpu_s()};
    return s;
}

static double sw_elapsed(struct stopwatch s, int threads)
{
    double wall = br_now() - s.wall, cpu = (br_cpu_s() - s.cpu) / threads;
    if (g_clock == CLOCK_CPU) return cpu < wall ? cpu : wall;
    return wall;
}

/* Which thread ran each task of a run and for how much of its own CPU time. A thread
 * reading its own CPU clock gets an exact value, so the busiest thread's total is the
 * time the run would take on dedicated cores, unaffected by other programs taking our
 * CPUs (a thread that ran several tasks is charged for all of them). */
struct task_clock {
    pthread_t who[64];
    double cpu[64];
};

static void tc_record(struct task_clock *tc, int task, double t0)
{
    tc->who[task & 63] = pthread_self();
    tc->cpu[task & 63] = br_thread_cpu_s() - t0;
}

static double tc_elapsed(const struct task_clock *tc, int n_tasks)
{
    int n = n_tasks < 64 ? n_tasks : 64;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double sum = 0;
        for (int j = 0; j < n; j++)
            if (pthread_equal(tc->who[i], tc->who[j])) sum += tc->cpu[j];
        if (sum > worst) worst = sum;
    }
    return worst;
}

/* One timed pool run under the chosen clock. */
static double timed_run(struct br_pool *pool, br_pool_fn fn, void *ctx, int n_tasks,
                        const struct task_clock *tc)
{
    struct stopwatch sw = sw_start();
    br_pool_run(pool, fn, ctx, n_tasks);
    if (g_clock == CLOCK_THREAD) return tc_elapsed(tc, n_tasks);
    return sw_elapsed(sw, br_pool_threads(pool));
}

/* 64-byte aligned memory; C11 wants the size to be a multiple of the alignment. */
static void *alloc64(size_t n)
{
    return aligned_alloc(64, (n + 63) / 64 * 64);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* ---- JSON output: records written as they are measured ---- */

struct json_out {
    FILE *f;
    int n;
};

static void json_record(struct json_out *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void json_record(struct json_out *j, const char *fmt, ...)
{
    if (!j->f) return;
    fputs(j->n++ ? ",\n  " : "\n  ", j->f);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(j->f, fmt, ap);
    va_end(ap);
}

/* ---- memory bandwidth ---- */

struct bw_ctx {
    double *a, *b, *c; /* (n,) each */
    size_t n;
    size_t seg_off, seg_n; /* the part a run covers */
    struct task_clock tc;
    uint64_t sink[64];
    uint64_t (*probe)(const void *p, size_t bytes, int streams, size_t ahead);
    int streams;
    size_t ahead;
    size_t read_bytes[64]; /* what each task of the last read run covered */
    double form_gbs[8];    /* the read probe's GB/s per form */
};

/* Where measure_bandwidth lists each probe form's figure (NULL: nowhere). */
static FILE *g_probe_log;

/* Task `task` of n_tasks's share [*lo, *hi) of the n elements from off. */
static void range_of(size_t off, size_t n, int task, int n_tasks, size_t *lo, size_t *hi)
{
    *lo = off + n * (size_t)task / (size_t)n_tasks;
    *hi = off + n * (size_t)(task + 1) / (size_t)n_tasks;
}

/* Makes piece g of n_segs of the arrays the part the next run covers. */
static void bw_segment(struct bw_ctx *c, int g, int n_segs)
{
    size_t lo, hi;
    range_of(0, c->n, g, n_segs, &lo, &hi);
    c->seg_off = lo;
    c->seg_n = hi - lo;
}

static void bw_init_task(void *v, int task, int n_tasks)
{
    struct bw_ctx *c = v;
    size_t lo, hi;
    range_of(0, c->n, task, n_tasks, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        c->a[i] = 0.0;
        c->b[i] = 1.0;
        c->c[i] = 2.0;
    }
}

static void bw_triad_task(void *v, int task, int n_tasks)
{
    struct bw_ctx *c = v;
    double t0 = br_thread_cpu_s();
    size_t lo, hi;
    range_of(c->seg_off, c->seg_n, task, n_tasks, &lo, &hi);
    double *restrict a = c->a;
    const double *restrict b = c->b, *restrict cc = c->c;
    for (size_t i = lo; i < hi; i++) a[i] = b[i] + 3.0 * cc[i];
    tc_record(&c->tc, task, t0);
}

/* The read-only probe (kernels/probe_impl.h) with the active variant's vector loads,
 * c->streams pieces in flight per thread; each thread's range is cut to whole steps. */
static void bw_read_task(void *v, int task, int n_tasks)
{
    struct bw_ctx *c = v;
    double t0 = br_thread_cpu_s();
    size_t lo, hi;
    range_of(c->seg_off, c->seg_n, task, n_tasks, &lo, &hi);
    size_t step = 128 * (size_t)c->streams / sizeof(double); /* doubles per probe step */
    lo = (lo + step - 1) / step * step;
    hi = hi / step * step;
    c->sink[task & 63] =
        hi > lo ? c->probe(c->b + lo, (hi - lo) * sizeof(double), c->streams, c->ahead) : 0;
    c->read_bytes[task & 63] = hi > lo ? (hi - lo) * sizeof(double) : 0;
    tc_record(&c->tc, task, t0);
}

/* The read probe's forms (streams in flight per thread, L2 prefetch distance); the best of
 * them is the read bandwidth. */
static const struct {
    int streams;
    size_t ahead;
} g_probe_forms[] = {{2, 0}, {4, 0}, {8, 0}, {1, 1024}, {2, 1024}, {4, 2048}};
#define N_PROBE_STREAMS ((int)(sizeof g_probe_forms / sizeof g_probe_forms[0]))

static void measure_bandwidth(struct br_pool *pool, size_t total_mb, double *triad_gbs,
                              double *read_gbs)
{
    struct bw_ctx c;
    memset(&c, 0, sizeof c);
    c.n = total_mb * 1024 * 1024 / 3 / sizeof(double);
    /* The arrays streamed from memory (these, the GEMVs' working sets) are held as a model's
     * weights are, in huge pages where the system gives them (kernels/bigmem.h): a kernel
     * and the probe it is measured against read the same kind of memory. */
    c.a = br_big_alloc(c.n * sizeof(double));
    c.b = br_big_alloc(c.n * sizeof(double));
    c.c = br_big_alloc(c.n * sizeof(double));
    const struct br_kernel_ops *k = br_kernels_active();
    c.probe = k->read_probe ? k->read_probe : br_kernels_ref.read_probe;
    *triad_gbs = *read_gbs = 0;
    if (!c.a || !c.b || !c.c) goto out;
    int nt = br_pool_threads(pool);
    br_pool_run(pool, bw_init_task, &c, nt);
    /* The arrays are swept in BW_SEGS pieces, each its own timed run; the best time of
     * every piece over the repetitions adds up to one clean sweep of the whole arrays.
     * Short pieces are far more likely than a whole sweep to run undisturbed on a shared
     * machine. The read probe runs with each stream count in turn; its figure is the best
     * count's (bytes per second, piece by piece). */
    enum { BW_SEGS = 16 };
    double best_triad[BW_SEGS], best_read[N_PROBE_STREAMS][BW_SEGS];
    size_t read_bytes[N_PROBE_STREAMS][BW_SEGS];
    for (int g = 0; g < BW_SEGS; g++) {
        best_triad[g] = 1e30;
        for (int s = 0; s < N_PROBE_STREAMS; s++) best_read[s][g] = 1e30, read_bytes[s][g] = 0;
    }
    /* Every sweep goes through all the pieces in turn, so a piece was evicted from the
     * caches (by the arrays' other pieces) before it is read again. */
    for (int rep = 0; rep < 8; rep++) {
        for (int g = 0; g < BW_SEGS; g++) {
            bw_segment(&c, g, BW_SEGS);
            double t = timed_run(pool, bw_triad_task, &c, nt, &c.tc);
            if (t < best_triad[g]) best_triad[g] = t;
        }
        for (int s = 0; s < N_PROBE_STREAMS; s++)
            for (int g = 0; g < BW_SEGS; g++) {
                bw_segment(&c, g, BW_SEGS);
                c.streams = g_probe_forms[s].streams;
                c.ahead = g_probe_forms[s].ahead;
                double t = timed_run(pool, bw_read_task, &c, nt, &c.tc);
                if (t < best_read[s][g]) best_read[s][g] = t;
                size_t nb = 0;
                for (int i = 0; i < nt && i < 64; i++) nb += c.read_bytes[i];
                read_bytes[s][g] = nb;
            }
    }
    double tt = 0;
    for (int g = 0; g < BW_SEGS; g++) tt += best_triad[g];
    /* STREAM's count for the triad: two arrays read, one written */
    *triad_gbs = 3.0 * (double)c.n * sizeof(double) / tt / 1e9;
    for (int s = 0; s < N_PROBE_STREAMS; s++) {
        double tr = 0, nb = 0;
        for (int g = 0; g < BW_SEGS; g++) tr += best_read[s][g], nb += (double)read_bytes[s][g];
        c.form_gbs[s] = nb / tr / 1e9;
        if (nb / tr / 1e9 > *read_gbs) *read_gbs = nb / tr / 1e9;
    }
    if (g_probe_log) {
        fprintf(g_probe_log, "read probe forms, %d thread%s (streams x prefetch bytes ahead):", nt,
                nt == 1 ? "" : "s");
        for (int s = 0; s < N_PROBE_STREAMS; s++)
            fprintf(g_probe_log, " %dx%zu %.1f%s", g_probe_forms[s].streams, g_probe_forms[s].ahead,
                    c.form_gbs[s], s + 1 < N_PROBE_STREAMS ? "," : "\n");
    }
out:
    br_big_free(c.a, c.n * sizeof(double));
    br_big_free(c.b, c.n * sizeof(double));
    br_big_free(c.c, c.n * sizeof(double));
}

/* ---- peak multiply-add rate ---- */

struct peak_ctx {
    const struct br_kernel_ops *k;
    int64_t iters;
    int64_t macs[64];
    struct task_clock tc;
};

static void peak_task(void *v, int task, int n_tasks)
{
    (void)n_tasks;
    struct peak_ctx *c = v;
    double t0 = br_thread_cpu_s();
    c->macs[task & 63] = c->k->peak_macs(c->iters);
    tc_record(&c->tc, task, t0);
}

static double measure_peak(struct br_pool *pool, const struct br_kernel_ops *k)
{
    struct peak_ctx c;
    memset(&c, 0, sizeof c);
    c.k = k;
    c.iters = 2000000;
    int nt = br_pool_threads(pool);
    double best = 0;
    /* many short repetitions: on a shared machine the best one is the undisturbed one */
    for (int rep = 0; rep < 25; rep++) {
        double t = timed_run(pool, peak_task, &c, nt, &c.tc);
        int64_t macs = 0;
        for (int i = 0; i < nt; i++) macs += c.macs[i];
        if ((double)macs / t > best) best = (double)macs / t;
    }
    return best; /* MAC/s over all threads */
}

/* ---- GEMV / GEMM ---- */

#if defined(BR_HAVE_AVX2)
/* The AVX2 GEMM with vpmaddubsw, to compare with AVX-VNNI. */
static void gemm_avx2_madd(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                           const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    br_tmat_gemm_avx2_vnni(m, r0, r1, ntok, q, q_stride, acc, acc_stride, 0);
}
#endif
#if defined(BR_HAVE_AVX512)
/* The AVX-512 GEMM with the shift + mask code unpacking, to compare with GFNI. */
static void gemm_avx512_shift(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                              const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride)
{
    br_tmat_gemm_avx512_unpack(m, r0, r1, ntok, q, q_stride, acc, acc_stride, 0);
}
#endif

#if defined(BR_HAVE_AVX2) || defined(BR_HAVE_AVX512)
/* A GEMM's forms to measure: the table's (forms[0]), which unpacks with `fast` where the
 * CPU has it (has) and else with `other`; with has, also forms[1] with other_gemm, which
 * always unpacks with `other`. Returns how many forms there are. */
static int gemm_forms(struct br_kernel_ops forms[2], const char *unpack[2], bool has,
                      const char *fast, const char *other, br_gemm_fn other_gemm)
{
    unpack[0] = has ? fast : other;
    if (!has) return 1;
    forms[1].gemm = other_gemm;
    unpack[1] = other;
    return 2;
}
#endif

struct mm_ctx {
    const struct br_kernel_ops *k;
    const struct br_tmat *m;
    const int8_t *q; /* (ntok, kpad) */
    int32_t *acc;    /* (ntok, rows) */
    int32_t ntok;
    struct task_clock tc;
};

static void rows_of(int32_t rows, int task, int n_tasks, int32_t *r0, int32_t *r1)
{
    int32_t per = (rows + n_tasks - 1) / n_tasks;
    per = (per + 3) / 4 * 4;
    *r0 = per * task < rows ? per * task : rows;
    *r1 = per * (task + 1) < rows ? per * (task + 1) : rows;
}

static void mm_task(void *v, int task, int n_tasks)
{
    struct mm_ctx *c = v;
    double t0 = br_thread_cpu_s();
    int32_t r0, r1;
    rows_of(c->m->rows, task, n_tasks, &r0, &r1);
    size_t kpad = (size_t)c->m->blocks * BR_TMAT_BLOCK;
    if (r0 < r1 && c->ntok == 1)
        c->k->gemv(c->m, r0, r1, c->q, c->acc + r0);
    else if (r0 < r1)
        c->k->gemm(c->m, r0, r1, c->ntok, c->q, kpad, c->acc + r0, (size_t)c->m->rows);
    tc_record(&c->tc, task, t0);
}

/* Random ternary codes, padding columns left as the weight 0. */
static void fill_random(struct br_tmat *m, uint64_t *rng)
{
    uint8_t lut[81];
    for (int v = 0; v < 81; v++)
        lut[v] = (uint8_t)(((v % 3) << 6) | (((v / 3) % 3) << 4) | (((v / 9) % 3) << 2) | (v / 27));
    size_t n = (size_t)m->rows * m->row_bytes;
    for (size_t i = 0; i < n; i++) m->codes[i] = lut[rng_next(rng) % 81];
}

struct copies {
    struct br_tmat *mats; /* (n,) views into one buffer; only `codes`/`packed` differ */
    uint8_t *codes, *packed;
    size_t codes_bytes, packed_bytes;
    int n;
};

static int make_copies(const struct br_tmat *proto, size_t ws_bytes, struct copies *cp)
{
    size_t one = (size_t)proto->rows * proto->row_bytes;
    memset(cp, 0, sizeof *cp);
    cp->n = (int)((ws_bytes + one - 1) / one);
    if (cp->n < 2) cp->n = 2;
    cp->codes_bytes = one * (size_t)cp->n;
    cp->codes = br_big_alloc(cp->codes_bytes);
    cp->mats = calloc((size_t)cp->n, sizeof *cp->mats);
    if (!cp->codes || !cp->mats) return -1;
    for (int i = 0; i < cp->n; i++) {
        memcpy(cp->codes + one * (size_t)i, proto->codes, one);
        cp->mats[i] = *proto;
        cp->mats[i].codes = cp->codes + one * (size_t)i;
        cp->mats[i].packed = NULL;
        cp->mats[i].packed_kind = BR_PACK_NONE;
    }
    return 0;
}

#if defined(BR_HAVE_AVX512)
/* Gives every copy the 1.6-bit layout of proto (already packed). */
static int add_t5(const struct br_tmat *proto, struct copies *cp, size_t *bytes_per_copy)
{
    size_t kpad = (size_t)proto->blocks * BR_TMAT_BLOCK;
    size_t rb = (kpad + 319) / 320 * 64, one = rb * (size_t)proto->rows;
    cp->packed_bytes = one * (size_t)cp->n;
    cp->packed = br_big_alloc(cp->packed_bytes);
    if (!cp->packed) return -1;
    for (int i = 0; i < cp->n; i++) {
        memcpy(cp->packed + one * (size_t)i, proto->packed, one);
        cp->mats[i].packed = cp->packed + one * (size_t)i;
        cp->mats[i].packed_kind = BR_PACK_T5;
    }
    *bytes_per_copy = one;
    return 0;
}
#endif

static void free_copies(struct copies *cp)
{
    br_big_free(cp->codes, cp->codes_bytes);
    br_big_free(cp->packed, cp->packed_bytes);
    free(cp->mats);
    memset(cp, 0, sizeof *cp);
}

/* Best seconds for one pass over all copies (one fork/join per matrix). */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct gemv_time {
    double pass;     /* best seconds for one pass over all copies (the chosen clock) */
    double call_p10; /* seconds of one call: 10th percentile, median */
    double call_med;
};

/* r with its per-call percentiles from calls (n of them, freed here). */
static struct gemv_time call_stats(struct gemv_time r, double *calls, size_t n)
{
    if (calls && n) {
        qsort(calls, n, sizeof *calls, cmp_double);
        r.call_p10 = calls[n / 10];
        r.call_med = calls[n / 2];
    }
    free(calls);
    return r;
}

/* One fork/join per matrix, as a forward pass would. Besides whole passes, every call is
 * kept: the fast end and the middle of their distribution show how steady the rate is. */
static struct gemv_time time_gemv_pass(struct br_pool *pool, const struct br_kernel_ops *k,
                                       const struct copies *cp, const int8_t *q, int32_t *acc)
{
    int nt = br_pool_threads(pool);
    struct gemv_time r = {1e30, 0, 0};
    double spent = 0;
    size_t max_calls = (size_t)cp->n * 20, n_calls = 0;
    double *calls = malloc(max_calls * sizeof *calls);
    for (int rep = 0; rep < 20 && (rep < 3 || spent < 0.5); rep++) {
        double t = 0;
        for (int i = 0; i < cp->n; i++) {
            struct mm_ctx c;
            memset(&c, 0, sizeof c);
            c.k = k;
            c.m = &cp->mats[i];
            c.q = q;
            c.acc = acc;
            c.ntok = 1;
            /* the engine's split of a decode projection (kernels/tune.h) */
            double tc = timed_run(pool, mm_task, &c, nt * br_tune_gemv_tasks(nt), &c.tc);
            if (calls && n_calls < max_calls) calls[n_calls++] = tc;
            t += tc;
        }
        spent += t;
        if (t < r.pass) r.pass = t;
    }
    return call_stats(r, calls, n_calls);
}

static double time_gemm(struct br_pool *pool, const struct br_kernel_ops *k,
                        const struct br_tmat *m, const int8_t *q, int32_t *acc, int32_t ntok)
{
    int nt = br_pool_threads(pool);
    double best = 1e30, spent = 0;
    for (int rep = 0; rep < 20 && (rep < 2 || spent < 0.3); rep++) {
        struct mm_ctx c;
        memset(&c, 0, sizeof c);
        c.k = k;
        c.m = m;
        c.q = q;
        c.acc = acc;
        c.ntok = ntok;
        double t = timed_run(pool, mm_task, &c, nt == 1 ? 1 : TASKS_PER_THREAD * nt, &c.tc);
        spent += t;
        if (t < best) best = t;
    }
    return best;
}

/* One GEMV line of the table and its JSON record: `bytes` of weights per call, `n` calls
 * per pass. */
static void report_gemv(struct json_out *js, const char *model, const char *proj, int64_t rows,
                        int32_t cols, const char *variant, const char *layout, int threads,
                        size_t bytes, int n, struct gemv_time gt, double readbw, double triad)
{
    char shape_s[32];
    snprintf(shape_s, sizeof shape_s, "%lldx%d", (long long)rows, cols);
    double t = gt.pass;
    double gbs = (double)bytes * n / t / 1e9;
    double us = t / n * 1e6;
    double wps = (double)rows * cols * n / t; /* weights per second */
    double gbs_p10 = (double)bytes / gt.call_p10 / 1e9;
    double gbs_med = (double)bytes / gt.call_med / 1e9;
    printf("%-6s %-9s %-12s %-7s %-7s %3d %9.1f %8.2f %5.0f%% %6.0f%% | %8.2f %5.0f%% %8.2f\n",
           model, proj, shape_s, variant, layout, threads, us, gbs, 100 * gbs / readbw,
           100 * gbs / triad, gbs_p10, 100 * gbs_p10 / readbw, gbs_med);
    json_record(js,
                "{\"kind\": \"gemv\", \"model\": \"%s\", \"proj\": \"%s\", "
                "\"rows\": %lld, \"cols\": %d, \"variant\": \"%s\", \"layout\": "
                "\"%s\", \"threads\": %d, \"us_per_call\": %.3f, \"gbs\": %.3f, "
                "\"gweights_per_s\": %.3f, \"frac_triad\": %.4f, \"frac_read\": %.4f, "
                "\"call_p10_us\": %.3f, \"call_median_us\": %.3f, \"gbs_call_p10\": %.3f, "
                "\"gbs_call_median\": %.3f, \"frac_triad_call_p10\": %.4f, "
                "\"frac_read_call_p10\": %.4f, \"read_gbs\": %.3f, \"triad_gbs\": %.3f}",
                model, proj, (long long)rows, cols, variant, layout, threads, us, gbs, wps / 1e9,
                gbs / triad, gbs / readbw, gt.call_p10 * 1e6, gt.call_med * 1e6, gbs_p10, gbs_med,
                gbs_p10 / triad, gbs_p10 / readbw, readbw, triad);
}

/* Bytes of weights that a GEMV row of --l2 keeps per copy: two copies, visited in turn,
 * stay well inside a 1 MiB L2 with the activations and the code. */
#define L2_COPY_BYTES (384 * 1024)

/* The first rows of proto that fit in L2_COPY_BYTES (a multiple of 8, at least 8). */
static struct br_tmat l2_view(const struct br_tmat *proto)
{
    struct br_tmat v = *proto;
    int32_t rows = (int32_t)(L2_COPY_BYTES / proto->row_bytes) & ~7;
    if (rows < 8) rows = 8;
    if (rows < v.rows) v.rows = rows;
    return v;
}

struct head_ctx {
    br_fhead_gemm_fn f;
    struct br_fhead m;
    const float *x;
    float *y;
    struct task_clock tc;
};

static void head_task(void *v, int task, int n_tasks)
{
    struct head_ctx *c = v;
    double t0 = br_thread_cpu_s();
    int64_t r0 = c->m.rows * task / n_tasks, r1 = c->m.rows * (task + 1) / n_tasks;
    if (r0 < r1) c->f(&c->m, r0, r1, 1, c->x, (size_t)c->m.cols, c->y + r0, (size_t)c->m.rows);
    tc_record(&c->tc, task, t0);
}

/* The F16 head GEMV (one token, rows split evenly over the threads as the engine splits
 * the head) over `n` copies of an (rows, cols) matrix in turn: best pass, and single calls'
 * 10th percentile and median, as time_gemv_pass. */
static struct gemv_time time_head_pass(struct br_pool *pool, br_fhead_gemm_fn f,
                                       const uint8_t *data, int n, int64_t rows, int32_t cols,
                                       const float *x, float *y)
{
    int nt = br_pool_threads(pool);
    struct gemv_time r = {1e30, 0, 0};
    double spent = 0;
    size_t max_calls = (size_t)n * 20, n_calls = 0;
    double *calls = malloc(max_calls * sizeof *calls);
    size_t one = (size_t)rows * (size_t)cols * 2;
    for (int rep = 0; rep < 20 && (rep < 3 || spent < 0.5); rep++) {
        double t = 0;
        for (int i = 0; i < n; i++) {
            struct head_ctx c;
            memset(&c, 0, sizeof c);
            c.f = f;
            c.m = (struct br_fhead){data + one * (size_t)i, (size_t)cols * 2, rows, cols, 0};
            c.x = x;
            c.y = y;
            double tc = timed_run(pool, head_task, &c, nt, &c.tc);
            if (calls && n_calls < max_calls) calls[n_calls++] = tc;
            t += tc;
        }
        spent += t;
        if (t < r.pass) r.pass = t;
    }
    return call_stats(r, calls, n_calls);
}

static int parse_list(const char *s, const char **items, int max, char *buf, size_t buflen)
{
    if (strlen(s) + 1 > buflen) return -1;
    strcpy(buf, s);
    int n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max) return -1;
        items[n++] = tok;
    }
    return n;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bitrack bench kernels [options]\n"
               "\nKernel micro-benchmarks: memory bandwidth, int8 peak, and every GEMV/GEMM shape\n"
               "of the supported models per kernel variant, against the read probe and the triad\n"
               "bandwidth.\n"
               "\noptions:\n"
               "  -t LIST          thread counts to measure, 1 to 256 each (default: 1,2)\n"
               "  --variants LIST  kernel variants (default: every one this CPU runs, except ref)\n"
               "  --json FILE      also write the results as JSON (default: none)\n"
               "  --mb N           GEMV working set and triad size in MiB, 16 to 65536\n"
               "                   (default: 1024; 256 with --quick)\n"
               "  --clock C        thread: CPU time of the busiest thread, what dedicated cores\n"
               "                   take; wall; or cpu: process CPU / threads, a diagnostic\n"
               "                   (default: thread)\n"
               "  --gemv-only      skip the GEMM measurements (default: off)\n"
               "  --l2             also run each GEMV from two copies of its first rows\n"
               "                   that stay in L2 (384 KiB each): the kernel's instruction\n"
               "                   rate without memory (default: off)\n"
               "  --tune           show the kernel parameters chosen for this CPU\n"
               "                   (kernels/tune.h), where they come from, and a fresh\n"
               "                   calibration with every candidate's figure (the cache is\n"
               "                   left as it is) (default: off)\n"
               "  --quick          2B-4T shapes only, smaller working set, for smoke tests\n"
               "                   (default: off)\n"
               "  -h, --help       this help\n");
}

/* A usage error naming the flag; returns -1 for parse_args. */
static int bad(const char *flag, const char *val, const char *what)
{
    fprintf(stderr, "bitrack bench kernels: %s: %s%s%s%s\n", flag, val ? "'" : "", val ? val : "",
            val ? "' " : "", what);
    return -1;
}

/* A whole number in [lo, hi]. */
static int whole(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Returns 0, 1 after printing the help, or -1 after naming a bad option. */
static int parse_args(int argc, char **argv, struct opts *o, char *tbuf, char *vbuf)
{
    memset(o, 0, sizeof *o);
    g_clock = CLOCK_THREAD;
    o->threads[0] = 1;
    o->threads[1] = 2;
    o->n_threads = 2;
    o->ws_mb = 1024;
    int mb_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = !strcmp(a, "-t") || !strcmp(a, "--variants") || !strcmp(a, "--json") ||
                    !strcmp(a, "--mb") || !strcmp(a, "--clock");
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (takes && !val) return bad(a, NULL, "needs a value");
        if (strcmp(a, "-t") == 0) {
            const char *items[MAX_LIST];
            int n = parse_list(val, items, MAX_LIST, tbuf, 256);
            if (n <= 0) return bad(a, val, "is not a list of thread counts (1,2,4)");
            for (int k = 0; k < n; k++) {
                long t;
                if (whole(items[k], 1, 256, &t))
                    return bad(a, items[k], "is not a thread count from 1 to 256");
                o->threads[k] = (int)t;
            }
            o->n_threads = n;
            i++;
        } else if (strcmp(a, "--variants") == 0) {
            o->n_variants = parse_list(val, o->variants, MAX_LIST, vbuf, 256);
            if (o->n_variants <= 0) return bad(a, val, "is not a list of variants");
            i++;
        } else if (strcmp(a, "--json") == 0) {
            o->json = val;
            i++;
        } else if (strcmp(a, "--mb") == 0) {
            long mb;
            if (whole(val, 16, 65536, &mb))
                return bad(a, val, "is not a whole number from 16 to 65536");
            o->ws_mb = (size_t)mb;
            mb_given = 1;
            i++;
        } else if (strcmp(a, "--clock") == 0) {
            if (strcmp(val, "thread") == 0)
                g_clock = CLOCK_THREAD;
            else if (strcmp(val, "wall") == 0)
                g_clock = CLOCK_WALL;
            else if (strcmp(val, "cpu") == 0)
                g_clock = CLOCK_CPU;
            else
                return bad(a, val, "is not one of thread|wall|cpu");
            i++;
        } else if (strcmp(a, "--tune") == 0) {
            o->tune = 1;
        } else if (strcmp(a, "--gemv-only") == 0) {
            o->gemv_only = 1;
        } else if (strcmp(a, "--l2") == 0) {
            o->l2 = 1;
        } else if (strcmp(a, "--quick") == 0) {
            o->quick = 1;
            if (!mb_given) o->ws_mb = 256;
        } else {
            fprintf(stderr, "bitrack bench kernels: unknown option '%s' (--help lists them)\n", a);
            return -1;
        }
    }
    if (o->n_variants == 0) {
        static const char *const all[] = {"avx512", "avx2", "neon"};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
            if (br_kernels_available(all[k])) o->variants[o->n_variants++] = all[k];
        if (o->n_variants == 0) o->variants[o->n_variants++] = "ref";
    }
    return 0;
}

/* --tune: the parameters in use for each thread count and where they came from, then a
 * fresh calibration that shows every candidate. */
static int tune_main(const struct opts *o)
{
    static const char *const src[] = {"built-in defaults", "loaded from the cache",
                                      "calibrated now and cached"};
    const char *mode = getenv("BITRACK_TUNE");
    printf("kernels %s; BITRACK_TUNE=%s\nkey: %s\ncache: %s\n", br_kernels_name(),
           mode ? mode : "(unset)", br_tune_key(),
           br_tune_cache_path()[0] ? br_tune_cache_path() : "(no cache directory)");
    for (int ti = 0; ti < o->n_threads; ti++) {
        struct br_pool *pool = NULL;
        if (br_pool_create_pinned(o->threads[ti], &pool) != BR_OK) {
            fprintf(stderr, "bench: cannot create a pool of %d threads\n", o->threads[ti]);
            return 1;
        }
        enum br_tune_source s = br_tune_init(pool);
        printf("\nin use with %d thread%s (%s):\n", o->threads[ti], o->threads[ti] == 1 ? "" : "s",
               src[s]);
        br_tune_print(br_tune_active(), stdout);
        printf("gemv row ranges per thread here: %d\n", br_tune_gemv_tasks(o->threads[ti]));
        struct br_tune fresh;
        printf("\n");
        if (br_tune_calibrate(pool, &fresh, stdout) != BR_OK) {
            fprintf(stderr, "bench: no memory for the calibration\n");
            br_pool_destroy(&pool);
            return 1;
        }
        printf("a fresh calibration would choose:\n");
        br_tune_print(&fresh, stdout);
        br_pool_destroy(&pool);
    }
    return 0;
}

int br_bench_kernels_main(int argc, char **argv)
{
    struct opts o;
    char tbuf[256], vbuf[256];
    int prc = parse_args(argc, argv, &o, tbuf, vbuf);
    if (prc) return prc > 0 ? 0 : 2;
    if (o.tune) return tune_main(&o);
    struct json_out js = {NULL, 0};
    if (o.json) {
        js.f = fopen(o.json, "w");
        if (!js.f) {
            fprintf(stderr, "bench: cannot write %s\n", o.json);
            return 1;
        }
        fprintf(js.f, "{\"active\": \"%s\", \"clock\": \"%s\", \"records\": [", br_kernels_name(),
                g_clock == CLOCK_THREAD ? "thread"
                : g_clock == CLOCK_WALL ? "wall"
                                        : "cpu");
    }
    size_t n_shapes = o.quick ? 4 : N_SHAPES;
    size_t ws = o.ws_mb * 1024 * 1024;
    printf("kernels: active %s; GEMV working set %zu MiB; clock %s\n", br_kernels_name(), o.ws_mb,
           g_clock == CLOCK_THREAD ? "busiest thread's CPU time"
           : g_clock == CLOCK_WALL ? "wall"
                                   : "process CPU / threads");

    double triad[MAX_LIST], readbw[MAX_LIST];
    struct br_pool *pools[MAX_LIST] = {NULL};
    for (int ti = 0; ti < o.n_threads; ti++) {
        if (br_pool_create_pinned(o.threads[ti], &pools[ti]) != BR_OK) {
            fprintf(stderr, "bench: cannot create a pool of %d threads\n", o.threads[ti]);
            return 1;
        }
        br_tune_init(pools[ti]); /* the kernels run with this CPU's parameters */
        g_probe_log = stdout;
        measure_bandwidth(pools[ti], o.ws_mb, &triad[ti], &readbw[ti]);
        printf("bandwidth  threads %d: read probe %.1f GB/s, triad %.1f GB/s\n", o.threads[ti],
               readbw[ti], triad[ti]);
        json_record(&js,
                    "{\"kind\": \"bandwidth\", \"threads\": %d, \"triad_gbs\": %.3f, "
                    "\"read_gbs\": %.3f}",
                    o.threads[ti], triad[ti], readbw[ti]);
    }

    double peak[MAX_LIST][MAX_LIST];
    for (int vi = 0; vi < o.n_variants; vi++) {
        const struct br_kernel_ops *k = br_kernels_find(o.variants[vi]);
        if (!k) {
            printf("variant %s: not available on this build or CPU, skipped\n", o.variants[vi]);
            continue;
        }
        for (int ti = 0; ti < o.n_threads; ti++) {
            peak[vi][ti] = measure_peak(pools[ti], k);
            printf("peak       %-7s threads %d: %.1f GMAC/s int8\n", k->name, o.threads[ti],
                   peak[vi][ti] / 1e9);
            json_record(&js,
                        "{\"kind\": \"peak\", \"variant\": \"%s\", \"threads\": %d, "
                        "\"gmacs\": %.3f}",
                        k->name, o.threads[ti], peak[vi][ti] / 1e9);
        }
    }

    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    printf("\nGEMV: whole passes over the working set (chosen clock) | single calls: fastest "
           "10%% and median\n");
    printf("%-6s %-9s %-12s %-7s %-7s %3s %9s %8s %6s %7s | %8s %6s %8s\n", "model", "proj",
           "shape", "variant", "layout", "thr", "us/call", "GB/s", "/read", "/triad", "p10 GB/s",
           "/read", "med GB/s");
    for (size_t s = 0; s < n_shapes; s++) {
        const struct shape *sh = &g_shapes[s];
        struct br_tmat proto;
        if (br_tmat_init(&proto, sh->rows, sh->cols) != BR_OK) return 1;
        fill_random(&proto, &rng);
        size_t kpad = (size_t)proto.blocks * BR_TMAT_BLOCK;
        int8_t *q = alloc64(kpad * 128);
        int32_t *acc = alloc64((size_t)sh->rows * 128 * sizeof *acc);
        if (!q || !acc) return 1;
        for (size_t i = 0; i < kpad * 128; i++) q[i] = (int8_t)(rng_next(&rng) & 0xff);
        struct copies cp;
        if (make_copies(&proto, ws, &cp) != 0) return 1;
        size_t bytes2 = (size_t)proto.rows * proto.row_bytes;
        int have_t5 = 0;
        size_t bytes5 = 0;
#if defined(BR_HAVE_AVX512)
        if (br_cpu_has_avx512vbmi() && br_tmat_pack_t5_avx512(&proto) == BR_OK &&
            add_t5(&proto, &cp, &bytes5) == 0)
            have_t5 = 1;
#endif
        char shape_s[32];
        snprintf(shape_s, sizeof shape_s, "%dx%d", sh->rows, sh->cols);
        for (int vi = 0; vi < o.n_variants; vi++) {
            const struct br_kernel_ops *k = br_kernels_find(o.variants[vi]);
            if (!k) continue;
            int layouts = (have_t5 && strcmp(k->name, "avx512") == 0) ? 2 : 1;
            for (int lay = 0; lay < layouts; lay++) {
                for (int i = 0; i < cp.n; i++)
                    cp.mats[i].packed_kind = lay ? BR_PACK_T5 : BR_PACK_NONE;
                size_t bytes = lay ? bytes5 : bytes2;
                const char *lname = lay ? "1.6bit" : "2bit";
                for (int ti = 0; ti < o.n_threads; ti++) {
                    struct gemv_time gt = time_gemv_pass(pools[ti], k, &cp, q, acc);
                    report_gemv(&js, sh->model, sh->name, sh->rows, sh->cols, k->name, lname,
                                o.threads[ti], bytes, cp.n, gt, readbw[ti], triad[ti]);
                    if (o.l2 && !lay) {
                        struct br_tmat v = l2_view(&proto);
                        struct copies c2;
                        if (make_copies(&v, 0, &c2) != 0) return 1;
                        gt = time_gemv_pass(pools[ti], k, &c2, q, acc);
                        report_gemv(&js, sh->model, sh->name, v.rows, v.cols, k->name, "2bit-L2",
                                    o.threads[ti], (size_t)v.rows * v.row_bytes, c2.n, gt,
                                    readbw[ti], triad[ti]);
                        free_copies(&c2);
                    }
                }
            }
            for (int i = 0; i < cp.n; i++) cp.mats[i].packed_kind = BR_PACK_NONE;
        }
        free_copies(&cp);
        /* GEMM: one matrix, compute bound. The AVX-512 GEMM is measured with each code
         * unpacking this CPU runs (GFNI where present, shift + mask always), the AVX2 one
         * with each multiply-add (AVX-VNNI where present, vpmaddubsw always); all against
         * the variant's own peak loop. */
        static const int32_t ntoks[] = {8, 32, 128};
        for (int vi = 0; vi < o.n_variants && !o.gemv_only; vi++) {
            const struct br_kernel_ops *k = br_kernels_find(o.variants[vi]);
            if (!k) continue;
            struct br_kernel_ops forms[2] = {*k, *k};
            const char *unpack[2] = {"-", "-"};
            int nforms = 1;
#if defined(BR_HAVE_AVX2)
            if (k == br_kernels_find("avx2"))
                nforms =
                    gemm_forms(forms, unpack, br_cpu_has_avxvnni(), "vnni", "madd", gemm_avx2_madd);
#endif
#if defined(BR_HAVE_AVX512)
            if (k == br_kernels_find("avx512"))
                nforms = gemm_forms(forms, unpack, br_cpu_has_gfni(), "gfni", "shift",
                                    gemm_avx512_shift);
#endif
            for (int f = 0; f < nforms; f++)
                for (size_t n = 0; n < sizeof ntoks / sizeof ntoks[0]; n++)
                    for (int ti = 0; ti < o.n_threads; ti++) {
                        double t = time_gemm(pools[ti], &forms[f], &proto, q, acc, ntoks[n]);
                        double macs = (double)sh->rows * sh->cols * ntoks[n];
                        double frac = macs / t / peak[vi][ti];
                        printf("%-6s %-9s %-12s %-7s gemm %-5s ntok %3d thr %d: %9.1f us  %7.1f "
                               "GOPS  %5.1f%% of peak int8\n",
                               sh->model, sh->name, shape_s, k->name, unpack[f], ntoks[n],
                               o.threads[ti], t * 1e6, 2 * macs / t / 1e9, 100 * frac);
                        json_record(&js,
                                    "{\"kind\": \"gemm\", \"model\": \"%s\", \"proj\": \"%s\", "
                                    "\"rows\": %d, \"cols\": %d, \"variant\": \"%s\", "
                                    "\"unpack\": \"%s\", \"ntok\": %d, \"threads\": %d, "
                                    "\"us_per_call\": %.3f, \"gops\": %.3f, \"frac_peak\": %.4f}",
                                    sh->model, sh->name, sh->rows, sh->cols, k->name, unpack[f],
                                    ntoks[n], o.threads[ti], t * 1e6, 2 * macs / t / 1e9, frac);
                    }
        }
        free(q);
        free(acc);
        br_tmat_free(&proto);
    }
    /* The F16 output head of 2B-4T (128256 x 2560, 657 MB) for one token, as decode runs
     * it: as many of its rows as the working set holds, and with --l2 two copies of its
     * first rows that stay in L2. */
    {
        const int32_t cols = 2560;
        int64_t rows = 128256;
        if ((size_t)rows * cols * 2 > ws) rows = (int64_t)(ws / ((size_t)cols * 2)) & ~7;
        int64_t rows_l2 = (int64_t)(L2_COPY_BYTES / ((size_t)cols * 2)) & ~7;
        size_t n16 = (size_t)rows * cols;
        if (o.l2 && n16 < 2 * (size_t)rows_l2 * cols) n16 = 2 * (size_t)rows_l2 * cols;
        uint16_t *h = br_big_alloc(n16 * 2);
        float *x = alloc64((size_t)cols * sizeof *x), *y = alloc64((size_t)rows * sizeof *y);
        if (!h || !x || !y) return 1;
        for (size_t i = 0; i < n16; i++) /* finite halves of magnitude 2^-3 .. 2^-1 */
            h[i] = (uint16_t)(0x3000 + (rng_next(&rng) & 0xfff)) | (uint16_t)((i & 1) << 15);
        for (int32_t i = 0; i < cols; i++) x[i] = (float)(int)(rng_next(&rng) % 2001) / 1000 - 1;
        for (int vi = 0; vi < o.n_variants; vi++) {
            br_fhead_gemm_fn f = br_fhead_find(o.variants[vi]);
            if (!f) continue;
            for (int ti = 0; ti < o.n_threads; ti++) {
                struct gemv_time gt =
                    time_head_pass(pools[ti], f, (const uint8_t *)h, 1, rows, cols, x, y);
                report_gemv(&js, "2B-4T", "head", rows, cols, o.variants[vi], "f16", o.threads[ti],
                            (size_t)rows * cols * 2, 1, gt, readbw[ti], triad[ti]);
                if (!o.l2) continue;
                gt = time_head_pass(pools[ti], f, (const uint8_t *)h, 2, rows_l2, cols, x, y);
                report_gemv(&js, "2B-4T", "head", rows_l2, cols, o.variants[vi], "f16-L2",
                            o.threads[ti], (size_t)rows_l2 * cols * 2, 2, gt, readbw[ti],
                            triad[ti]);
            }
        }
        br_big_free(h, n16 * 2);
        free(x);
        free(y);
    }
    for (int ti = 0; ti < o.n_threads; ti++) br_pool_destroy(&pools[ti]);
    if (js.f) {
        fputs("\n]}\n", js.f);
        fclose(js.f);
        printf("\nwrote %s\n", o.json);
    }
    return 0;
}

/* ---- for other benchmarks (bench model) ---- */

double br_bench_bandwidth_gbs(struct br_pool *pool, size_t total_mb)
{
    double triad, rd;
    measure_bandwidth(pool, total_mb, &triad, &rd);
    return triad;
}

void br_bench_bandwidth(struct br_pool *pool, size_t total_mb, double *triad_gbs, double *read_gbs)
{
    measure_bandwidth(pool, total_mb, triad_gbs, read_gbs);
}

double br_bench_peak_macs(struct br_pool *pool)
{
    return measure_peak(pool, br_kernels_active());
}
