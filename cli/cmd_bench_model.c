/*
 * `bitrack bench model -m MODEL [-t 1,2] [-p 128] [-n 32] [--reps 3] [--json FILE]`:
 * end-to-end prefill (pp) and decode (tg) tokens/s on one process, like llama-bench's
 * tables, with the roofline measured in the same run.
 *
 *  tg: n tokens generated one at a time (each with its logits), from an empty cache, or
 *      with --depth D after D tokens of context (filled once per thread count, untimed).
 *      Memory-bound: bytes_per_token = packed ternary weights + the head as the kernels
 *      read it (every row, for the logits: F16 2 bytes a weight, Q8_0 34 bytes per 32)
 *      + one embedding row + the f16 KV cache that attention reads (every layer's keys
 *      and values of the D + (n + 1) / 2 positions a token sees on average);
 *      roofline = read bandwidth / bytes, the read bandwidth measured by the read-only
 *      streaming probe on the same threads (kernels/probe_impl.h); the fraction of the
 *      triad's roofline follows as a second column.
 *      --head q8_0 quantizes an F16/BF16 head to Q8_0 at load (br_model_quantize_head).
 *  pp: p prompt tokens in batches of 64, logits of the last only. Compute-bound:
 *      roofline = the kernels' peak int8 multiply-add rate / ternary weights per token
 *      (the head, on one token, is left out of the count).
 *  head: the output head alone (br_engine_head) for 1 row, memory bound (GB/s of head
 *      bytes, and the fraction of the triad bandwidth), and for 32 rows, the batched
 *      decode step of 32 streams (GMAC/s, and its time over 32 single-row calls).
 *  tg32 (--tg32 STEPS): 32 sequences decoding in lockstep for STEPS steps, one batch of 32
 *      tokens (one per sequence, each with its logits) per step, as the server's continuous
 *      batching runs them: aggregate tokens/s and its ratio to tg.
 * Times are wall clock, best of --reps runs (a shared machine's noise only adds time).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "bitrack/progress.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "coordinator/rank.h"
#include "kernels/bigmem.h"
#include "kernels/dispatch.h"
#include "kernels/q8.h"
#include "sharding/types.h"

int br_cmd_bench_model(int argc, char **argv);

static uint64_t ternary_weights(const struct br_model *m)
{
    uint64_t n = 0;
    for (int l = m->part.layer0; l < m->part.layer1; l++) {
        const struct br_layer_weights *w = &m->layers[l];
        const struct br_tmat *t[] = {&w->q, &w->k, &w->v, &w->o, &w->gate, &w->up, &w->down};
        for (int i = 0; i < 7; i++) n += (uint64_t)t[i]->rows * (uint64_t)t[i]->cols;
    }
    return n;
}

enum { HEAD_ROWS = 32, HEAD_ROWS_MAX = 32 };

/* The process's memory in transparent huge pages (MiB), -1 where the system does not say. */
static double huge_mib(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f) return -1;
    char line[256];
    double kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %lf kB", &kib) == 1) break;
    fclose(f);
    return kib < 0 ? -1 : kib / 1024.0;
}

/* HEAD_ROWS sequences decoding together for n steps: aggregate tokens/s (0 on error). */
static double bench_lockstep(const struct br_model *m, struct br_pool *pool, int32_t n, int reps,
                             double *per_cpu_s, struct br_err *err)
{
    struct br_engine *e = NULL;
    struct br_engine_opts eo = {
        .n_ctx = n + 1, .max_batch = HEAD_ROWS_MAX, .n_seq = HEAD_ROWS_MAX, .pool = pool};
    if (br_engine_create(m, &eo, &e, err)) return 0;
    int32_t tok[HEAD_ROWS_MAX], pos[HEAD_ROWS_MAX], seq[HEAD_ROWS_MAX], rows[HEAD_ROWS_MAX];
    float *lg = malloc((size_t)HEAD_ROWS_MAX * (size_t)m->cfg.n_vocab * sizeof *lg);
    double best = 1e30, best_cpu = 1e30;
    uint64_t s = 777;
    for (int r = 0; r < reps && lg; r++) {
        double t0 = br_now(), c0 = br_cpu_s();
        for (int32_t i = 0; i < n; i++) {
            for (int k = 0; k < HEAD_ROWS_MAX; k++) {
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                tok[k] = (int32_t)((s >> 33) % (uint64_t)m->cfg.n_vocab);
                pos[k] = i, seq[k] = k, rows[k] = k;
            }
            struct br_batch b = {HEAD_ROWS_MAX, tok, pos, seq, 0, NULL};
            if (br_engine_embed(e, &b, err) || br_engine_layers(e, &b, err) ||
                br_engine_head(e, &b, rows, HEAD_ROWS_MAX, lg, err)) {
                free(lg);
                br_engine_destroy(&e);
                return 0;
            }
        }
        double t = br_now() - t0, c = br_cpu_s() - c0;
        if (t < best) best = t;
        if (c < best_cpu) best_cpu = c;
    }
    int ok = lg != NULL;
    *per_cpu_s = ok ? (double)HEAD_ROWS_MAX * n / best_cpu : 0;
    free(lg);
    br_engine_destroy(&e);
    return ok ? (double)HEAD_ROWS_MAX * n / best : 0;
}

/* The head alone, 1 and HEAD_ROWS rows of the engine's current residual. */
static int bench_head(struct br_engine *e, const struct br_model *m, int threads, int reps,
                      double rbw, double bw, uint64_t head_bytes, FILE *jf, struct br_err *err)
{
    int32_t idx[HEAD_ROWS], zero[HEAD_ROWS] = {0};
    for (int i = 0; i < HEAD_ROWS; i++) idx[i] = i;
    if (br_engine_max_batch(e) < HEAD_ROWS) return 0;
    struct br_batch b = {HEAD_ROWS, zero, zero, zero, 0, NULL};
    float *lg = malloc((size_t)HEAD_ROWS * (size_t)m->cfg.n_vocab * sizeof *lg);
    if (!lg) return 1;
    double best[2] = {1e30, 1e30};
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < (k == 0 ? 3 * reps : reps); r++) {
            double t0 = br_now();
            if (br_engine_head(e, &b, idx, k == 0 ? 1 : HEAD_ROWS, lg, err)) {
                fprintf(stderr, "bitrack bench model: %s\n", err->msg);
                free(lg);
                return 1;
            }
            double t = br_now() - t0;
            if (t < best[k]) best[k] = t;
        }
    free(lg);
    double gbs = (double)head_bytes / best[0] / 1e9;
    double macs = (double)HEAD_ROWS * (double)m->cfg.n_vocab * (double)m->cfg.n_embd;
    printf("head, %d thread%s: 1 row %.2f ms (%.1f GB/s, %.0f%% of read, %.0f%% of triad); %d rows "
           "%.1f ms (%.1f GMAC/s; %.1fx the time of 1 row)\n",
           threads, threads == 1 ? "" : "s", best[0] * 1e3, gbs, 100.0 * gbs / rbw,
           100.0 * gbs / bw, HEAD_ROWS, best[1] * 1e3, macs / best[1] / 1e9, best[1] / best[0]);
    if (jf)
        fprintf(jf,
                ",\n  {\"test\": \"head\", \"threads\": %d, \"head_1row_ms\": %.4f, "
                "\"head_1row_gbs\": %.3f, \"head_%drows_ms\": %.4f, \"head_%drows_gmacs\": "
                "%.3f, \"bandwidth_gbs\": %.3f, \"read_gbs\": %.3f}",
                threads, best[0] * 1e3, gbs, HEAD_ROWS, best[1] * 1e3, HEAD_ROWS,
                macs / best[1] / 1e9, bw, rbw);
    return 0;
}

int br_cmd_bench_model(int argc, char **argv)
{
    const char *path = NULL, *json = NULL, *tlist = "1,2", *head = NULL;
    long long p = 128, n = 32, reps = 3, tg32 = 0, depth = 0;
    const struct br_opt opts[] = {
        BR_O_STR('m', "model", &path, "FILE", "the model"),
        BR_O_STR('t', "threads", &tlist, "LIST", "thread counts to measure (1,2,4)"),
        BR_O_INT('p', "prompt", &p, 1, 4096, "N", "prompt tokens (prefill test)"),
        BR_O_INT('n', "gen", &n, 1, 4096, "N", "generated tokens (decode test)"),
        BR_O_INT('d', "depth", &depth, 0, 65536, "N",
                 "decode after N tokens of context (the KV cache it reads counts as bytes)"),
        BR_O_INT('r', "reps", &reps, 1, 100, "N", "repetitions; the best counts"),
        BR_O_STR(0, "json", &json, "FILE", "also write the results as JSON"),
        BR_O_CHOICE(0, "head", &head, "q8_0|q6_k", "re-encode the output head at load"),
        BR_O_INT(0, "tg32", &tg32, 0, 4096, "STEPS",
                 "also decode 32 sequences together for STEPS steps; 0: off"),
    };
    const struct br_cmd_spec spec = {
        "bench model", NULL,
        "Single-process model throughput: prefill and decode tokens/s per thread count, and\n"
        "the head's time, against the memory bandwidth.",
        opts, sizeof opts / sizeof *opts};
    int prc = br_opts_parse_none(&spec, argc, argv);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (!path) return br_cli_usage_error("bench model", "a model is required (-m MODEL.gguf)");
    int32_t *threads = NULL, n_threads = 0;
    if (br_cli_int_list(tlist, &threads, &n_threads) || n_threads == 0)
        return br_cli_usage_error("bench model", "bad -t list '%s'", tlist);
    struct br_err err = {{0}};
    struct br_rank *rk = NULL;
    struct br_rank_opts ro = {.model_path = path, .tp = 1, .pp = 1, .no_mpi = true};
    long long ntok = p > n + depth ? p : n + depth; /* positions used, and tokens drawn */
    ro.threads = threads[0], ro.n_ctx = (int32_t)ntok + 1;
    ro.head_type = head ? br_cli_head_type(head) : 0;
    if (br_rank_open(&ro, &rk, &err)) {
        fprintf(stderr, "bitrack bench model: %s\n", err.msg);
        free(threads);
        return 1;
    }
    if (rk->n_ctx < ntok) {
        fprintf(stderr,
                "bitrack bench model: %lld positions (prompt %lld, or depth %lld + %lld "
                "generated) exceed the model's context of %d\n",
                ntok, p, depth, n, rk->n_ctx);
        br_rank_close(&rk);
        free(threads);
        return 1;
    }
    const struct br_model *m = rk->model;
    const struct br_model_config *cfg = &m->cfg;
    uint64_t nw = ternary_weights(m);
    uint64_t head_bytes = (uint64_t)m->head.row_bytes * (uint64_t)m->head.rows;
    if (m->head_q8.rows) /* what the Q8_0 kernels read: int8 values and f16 scales */
        head_bytes = (uint64_t)m->head_q8.rows * (uint64_t)m->head_q8.nb * BR_Q8_BLOCK_BYTES;
    /* f16 keys and values of every layer, per position of context */
    uint64_t kv_pos = (uint64_t)cfg->n_layer * (uint64_t)cfg->n_head_kv *
                      (uint64_t)(cfg->head_dim + cfg->head_dim_v) * 2u;
    uint64_t kv_bytes = (uint64_t)((double)kv_pos * ((double)depth + (double)(n + 1) / 2.0));
    uint64_t tg_bytes = m->ternary_bytes + head_bytes + m->embd.row_bytes + kv_bytes;
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (json && !jf) {
        fprintf(stderr, "bitrack bench model: cannot write %s\n", json);
        br_rank_close(&rk);
        free(threads);
        return 1;
    }
    if (jf) fprintf(jf, "[\n");
    printf("model %s: %s, %.1f M ternary weights (%.0f MiB packed), head %s%s %.0f MiB; kernels "
           "%s\n",
           path, cfg->arch_name, (double)nw / 1e6, (double)m->ternary_bytes / 1048576.0,
           m->head_q8.rows ? "Q8_0" : br_ggml_type_name(m->head.type),
           cfg->tied_head ? " (tied)" : "", (double)head_bytes / 1048576.0, br_kernels_name());
    double huge = huge_mib();
    if (huge >= 0)
        printf("weights, head and KV cache in huge pages: %.0f MiB (BITRACK_HUGEPAGES=0 leaves "
               "them in 4 KiB pages%s)\n",
               huge, br_big_huge() ? "" : ", as now");
    if (depth > 0)
        printf("decode at depth %lld: the KV cache adds %.0f MiB to a token's bytes\n", depth,
               (double)kv_bytes / 1048576.0);
    printf("| test  | threads | tokens/s | bytes/token | read GB/s | roofline tok/s | fraction | "
           "triad GB/s | of triad roofline |\n");
    printf("|-------|---------|----------|-------------|-----------|----------------|----------|"
           "------------|-------------------|\n");
    int32_t *toks = malloc((size_t)ntok * sizeof *toks);
    float *logits = malloc((size_t)cfg->n_vocab * sizeof *logits);
    int first = 1, rc = 0;
    for (int32_t ti = 0; ti < n_threads && toks && logits; ti++) {
        if (ti > 0) { /* a rank per thread count */
            br_rank_close(&rk);
            ro.threads = threads[ti];
            if (br_rank_open(&ro, &rk, &err)) {
                fprintf(stderr, "bitrack bench model: %s\n", err.msg);
                rc = 1;
                break;
            }
            m = rk->model, cfg = &m->cfg;
        }
        struct br_pool *pool = rk->pool;
        struct br_engine *e = rk->engine;
        double bw = 0, rbw = 0; /* triad, read probe */
        br_bench_bandwidth(pool, 768, &bw, &rbw);
        double peak = br_bench_peak_macs(pool);
        uint64_t s = 12345;
        for (long long i = 0; i < ntok; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            toks[i] = (int32_t)((s >> 33) % (uint64_t)cfg->n_vocab);
        }
        double best_pp = 1e30, best_tg = 1e30, best_tg_cpu = 1e30, best_pp_cpu = 1e30;
        for (long long r = 0; r < reps && !rc; r++) {
            double t0 = br_now(), c0 = br_cpu_s();
            if (br_engine_eval(e, toks, (int32_t)p, 0, logits, BR_LOGITS_LAST, &err)) rc = 1;
            double t1 = br_now(), c1 = br_cpu_s();
            if (t1 - t0 < best_pp) best_pp = t1 - t0;
            if (c1 - c0 < best_pp_cpu) best_pp_cpu = c1 - c0;
        }
        /* the context: written once, from position 0 (which drops the prompt's), untimed;
         * each decode pass then starts again at position `depth` */
        if (depth > 0 && !rc) {
            fprintf(stderr, "bench model: filling %lld positions of context (%d thread%s)\n", depth,
                    threads[ti], threads[ti] == 1 ? "" : "s");
            if (br_engine_eval(e, toks, (int32_t)depth, 0, logits, BR_LOGITS_LAST, &err)) rc = 1;
        }
        for (long long r = 0; r < reps && !rc; r++) {
            double t1 = br_now(), c1 = br_cpu_s();
            for (long long i = 0; i < n && !rc; i++)
                if (br_engine_eval(e, toks + depth + i, 1, (int32_t)(depth + i), logits,
                                   BR_LOGITS_LAST, &err))
                    rc = 1;
            double t2 = br_now(), c2 = br_cpu_s();
            if (t2 - t1 < best_tg) best_tg = t2 - t1;
            if (c2 - c1 < best_tg_cpu) best_tg_cpu = c2 - c1;
        }
        if (threads[ti] == 1 && !rc) {
            /* on a shared machine the wall clock counts other processes' turns on the core;
             * the process's CPU time does not (memory contention still counts) */
            printf("tg, 1 thread, per CPU-second: %.2f tokens/s (%.1f%% of the read roofline)\n",
                   (double)n / best_tg_cpu,
                   100.0 * ((double)n / best_tg_cpu) / (rbw * 1e9 / (double)tg_bytes));
            printf("pp, 1 thread, per CPU-second: %.2f tokens/s (%.1f%% of the int8 peak)\n",
                   (double)p / best_pp_cpu,
                   100.0 * ((double)p / best_pp_cpu) / (peak / (double)nw));
        }
        if (rc) fprintf(stderr, "bitrack bench model: %s\n", err.msg);
        double tg = (double)n / best_tg, pp = (double)p / best_pp;
        double tg_roof = rbw * 1e9 / (double)tg_bytes, tg_troof = bw * 1e9 / (double)tg_bytes;
        double pp_roof = peak / (double)nw;
        struct {
            const char *name;
            double tps, bytes, roof, frac;
        } rows[2] = {{"tg", tg, (double)tg_bytes, tg_roof, tg / tg_roof},
                     {"pp", pp, (double)m->ternary_bytes, pp_roof, pp / pp_roof}};
        for (int k = 0; k < 2 && !rc; k++) {
            if (k == 0)
                printf(
                    "| %-5s | %7d | %8.2f | %11.0f | %9.1f | %14.2f | %7.1f%% | %10.1f | %16.1f%% "
                    "|\n",
                    "tg", threads[ti], tg, rows[k].bytes, rbw, tg_roof, 100.0 * tg / tg_roof, bw,
                    100.0 * tg / tg_troof);
            else /* compute bound: the roofline is the int8 peak's */
                printf("| %-5s | %7d | %8.2f | %11.0f | %9s | %14.2f | %7.1f%% | %10s | %17s |\n",
                       "pp", threads[ti], pp, rows[k].bytes, "-", pp_roof, 100.0 * rows[k].frac,
                       "-", "-");
            /* tg: roofline_* against the read probe; the triad's as triad_* (and
             * bandwidth_gbs, the triad, as before) */
            if (jf)
                fprintf(
                    jf,
                    "%s  {\"test\": \"%s\", \"threads\": %d, \"n_tokens\": %lld, \"depth\": %lld, "
                    "\"tokens_per_s\": "
                    "%.4f, \"bytes_per_token\": %.0f, \"bandwidth_gbs\": %.3f, \"read_gbs\": %.3f, "
                    "\"triad_gbs\": %.3f, \"peak_int8_gmacs\": %.2f, \"roofline_tokens_per_s\": "
                    "%.4f, "
                    "\"roofline_fraction\": %.4f, \"triad_roofline_tokens_per_s\": %.4f, "
                    "\"triad_roofline_fraction\": %.4f, \"kernels\": \"%s\", \"model\": \"%s\"}",
                    first ? "" : ",\n", rows[k].name, threads[ti], k == 0 ? n : p,
                    k == 0 ? depth : 0, rows[k].tps, rows[k].bytes, bw, rbw, bw, peak / 1e9,
                    rows[k].roof, rows[k].frac, k == 0 ? tg_troof : 0.0,
                    k == 0 ? tg / tg_troof : 0.0, br_kernels_name(), path);
            first = 0;
        }
        if (!rc) rc = bench_head(e, m, threads[ti], (int)reps, rbw, bw, head_bytes, jf, &err);
        if (!rc && tg32 > 0) {
            double agg_cpu = 0;
            double agg = bench_lockstep(m, pool, (int32_t)tg32, (int)reps, &agg_cpu, &err);
            if (agg <= 0) {
                fprintf(stderr, "bitrack bench model: %s\n", err.msg);
                rc = 1;
            } else {
                printf("tg32, %d thread%s: %d sequences in lockstep %.2f tokens/s in all (%.2fx "
                       "tg)\n",
                       threads[ti], threads[ti] == 1 ? "" : "s", HEAD_ROWS_MAX, agg, agg / tg);
                if (threads[ti] == 1)
                    printf("tg32, 1 thread, per CPU-second: %.2f tokens/s in all (%.2fx tg per "
                           "CPU-second)\n",
                           agg_cpu, agg_cpu / ((double)n / best_tg_cpu));
                if (jf)
                    fprintf(jf,
                            ",\n  {\"test\": \"tg32\", \"threads\": %d, \"tokens_per_s\": %.4f, "
                            "\"ratio_to_tg\": %.4f}",
                            threads[ti], agg, agg / tg);
            }
        }
    }
    if (jf) {
        fprintf(jf, "\n]\n");
        fclose(jf);
    }
    free(toks);
    free(logits);
    free(threads);
    br_rank_close(&rk);
    return rc;
}
