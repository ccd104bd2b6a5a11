/*
 * Kernel parameters chosen per CPU: prefetch distance and hint, row-group and tile shape,
 * and the thread split of the memory-bound kernels, picked by a short calibration.
 *
 * Why: the best prefetch distance and hint depend on the CPU's caches, miss buffers and
 * hardware prefetchers (into L1 nearly doubled a GEMV on one CPU and halved it on the
 * next), so constants tuned on one machine lose a third of the speed on another. The
 * parameters move memory traffic only: prefetches, how many rows share one pass over the
 * activations, how tokens are tiled, how rows are split into tasks. No choice changes an
 * operation's arithmetic or its order, so results are bit for bit the same under every
 * choice (the kernel tests run every one against the scalar reference).
 *
 * br_tune_init runs at the first model load (br_engine_create): like FFTW's wisdom, the
 * chosen parameters are kept in $XDG_CACHE_HOME/bitrack (else ~/.cache/bitrack), one file
 * per CPU model and kernel build, and calibrated (well under a second) only when that file
 * is missing or unreadable. BITRACK_TUNE=off keeps the built-in defaults (touching no
 * file), BITRACK_TUNE=force calibrates again and rewrites the file. `bitrack bench kernels
 * --tune` shows the choice and every candidate's measurement.
 *
 * Until br_tune_init (or br_tune_set) runs, kernels use the defaults. br_tune_set and
 * br_tune_init must not run while kernels run in other threads (they are called between
 * calls, at load, or by tests); the pool's fork/join orders them before the next call.
 */
#ifndef BR_KERNELS_TUNE_H
#define BR_KERNELS_TUNE_H

#include <stdio.h>

/* Prefetch hints, in the order of __builtin_prefetch's locality 3..0. */
enum br_pf_hint { BR_PF_T0 = 0, BR_PF_T1 = 1, BR_PF_T2 = 2, BR_PF_NTA = 3 };

#define BR_TUNE_MAX_THREADS 16 /* thread counts with a calibrated split: 2 .. this */

struct br_tune {
    /* ternary GEMV (decode): rows that share each pass over the activations (1, 2 or 4),
     * the prefetch distance in row groups (1..16) and its hint */
    int gemv_rows, gemv_ahead, gemv_hint;
    /* row ranges per thread of a decode projection (1, 2, 4, 8), by pool thread count;
     * 0 where not calibrated (the default, 4, applies) */
    int gemv_tasks[BR_TUNE_MAX_THREADS + 1];
    /* F16/BF16 head GEMV: bytes ahead of the values in use, hint; and a second prefetch
     * fhead_near bytes ahead into L1 (T0), 0 for none */
    int fhead_ahead, fhead_hint, fhead_near;
    /* Q8_0 head: row tiles ahead (1..3), hint; and the one-token GEMV's streams (1, 2 or
     * 4 runs of rows read in lockstep; with more than one, no software prefetch) */
    int q8_ahead, q8_hint, q8_streams;
    /* Q6_K head GEMV: bytes ahead, hint */
    int q6k_ahead, q6k_hint;
    /* small-batch ternary GEMM: tokens per tile (4..12), weight bytes of a row block kept
     * in L2 (KiB) */
    int gemm_tmax, gemm_rb_kib;
};

/* The built-in defaults (what the kernels used before calibration existed). */
struct br_tune br_tune_defaults(void);
/* The parameters the kernels use now. Never NULL. */
const struct br_tune *br_tune_active(void);
/* Makes *t the active parameters (values outside their choice sets are clamped into it). */
void br_tune_set(const struct br_tune *t);
/* Row ranges per thread for a decode projection on a pool of `threads`. */
int br_tune_gemv_tasks(int threads);

/* Where the parameters came from. */
enum br_tune_source { BR_TUNE_DEFAULT, BR_TUNE_LOADED, BR_TUNE_CALIBRATED };

struct br_pool;
/* Per BITRACK_TUNE (unset or "on": load or calibrate; "off"; "force"), once per process,
 * plus the thread split for this pool's thread count when it has none yet. Never fails:
 * a cache that cannot be read or written only costs a calibration. Returns the source of
 * the active parameters. */
enum br_tune_source br_tune_init(struct br_pool *pool);

/* Forgets what br_tune_init did in this process (the defaults apply again), so that tests
 * can run it under several settings. */
void br_tune_reset(void);

/* Calibrates from the defaults with the active kernel variant; the split for the pool's
 * thread count when it has more than one. Writes every candidate's time to `log` if
 * non-NULL. Does not change the active parameters. BR_OK or BR_E_NOMEM. */
int br_tune_calibrate(struct br_pool *pool, struct br_tune *out, FILE *log);

/* The cache file for this CPU model and kernel build (static text, "" if no directory is
 * known), and the key written into it. */
const char *br_tune_cache_path(void);
const char *br_tune_key(void);
/* Writes the parameters as `name value` lines. */
void br_tune_print(const struct br_tune *t, FILE *f);

/* A prefetch with a run-time hint (constant-folded where the hint is a constant). */
static inline __attribute__((always_inline)) void br_prefetch(const void *p, int hint)
{
    switch (hint) {
    case BR_PF_T0:
        __builtin_prefetch(p, 0, 3);
        break;
    case BR_PF_T2:
        __builtin_prefetch(p, 0, 1);
        break;
    case BR_PF_NTA:
        __builtin_prefetch(p, 0, 0);
        break;
    default:
        __builtin_prefetch(p, 0, 2);
        break;
    }
}

#endif
