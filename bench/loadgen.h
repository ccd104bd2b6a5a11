/*
 * Load generator for a `bitrack serve` endpoint (`bitrack bench --server`, docs/BENCH.md).
 *
 * A workload is a list of prompts (random token ids, or a JSONL file). A run sends them to
 * the server from S slot threads, one br_client each, in one of two modes:
 *   closed loop  (rate == 0): each slot sends its next request when the previous ended, so
 *                S = concurrency requests are always in flight;
 *   open loop    (rate > 0):  request i is due at the i-th arrival of a Poisson process of
 *                that rate (exponential gaps from a counter-based PRNG keyed by the seed);
 *                S = max_concurrency slots bound the requests in flight, and a request
 *                whose slot is not free yet is sent late (its lateness is recorded).
 * Every request is streamed; the slot stamps each `token` event with a monotonic clock,
 * and the metrics are computed from those stamps alone (not from the server's timings).
 *
 * Invariants:
 *  - Record i is written only by the slot that took request i (an atomic ticket hands out
 *    indices in order), and read only after every slot was joined; the only state shared
 *    while running is a few atomic counters for the progress line.
 *  - Everything random (prompt lengths, token ids, arrival gaps, per-request sampling
 *    seeds) is a pure function of the seed and the request index, so a run is repeatable.
 *  - Percentiles use the nearest-rank method (br_loadgen_percentile).
 */
#ifndef BR_COORDINATOR_LOADGEN_H
#define BR_COORDINATOR_LOADGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bitrack/status.h"
#include "proto/proto.h"

struct br_client_curve;

/* ---- workloads ------------------------------------------------------------------------ */

/* One prompt: either token ids (tokens != NULL) or text (text != NULL). */
struct br_loadgen_prompt {
    int32_t *tokens; /* (n_tokens) owned, or NULL */
    uint32_t n_tokens;
    char *text; /* owned, NUL-terminated UTF-8, or NULL */
    size_t text_len;
    int32_t max_tokens; /* completion tokens asked for, >= 1 */
};

struct br_loadgen_workload {
    struct br_loadgen_prompt *items; /* (n) owned */
    size_t n;
};

/* n prompts of random token ids in [3, vocab): input lengths uniform over the integers in
 * [round(input_len*(1-spread)), round(input_len*(1+spread))] (at least 1), max_tokens
 * likewise around output_len. spread in [0, 1). A pure function of seed. On success *out
 * owns the items (br_loadgen_workload_free). */
int br_loadgen_workload_random(size_t n, int32_t input_len, int32_t output_len, double spread,
                               int32_t vocab, uint64_t seed, struct br_loadgen_workload *out,
                               struct br_err *err);

/* Reads a JSONL file: one object per non-empty line, {"prompt": "..."} or
 * {"tokens": [ids]}, optionally "max_tokens" (default_max_tokens otherwise); other keys
 * are ignored. Errors name the line. On success *out owns the items. */
int br_loadgen_workload_load(const char *path, int32_t default_max_tokens,
                             struct br_loadgen_workload *out, struct br_err *err);

/* Frees the items and zeroes *w; NULL-safe. */
void br_loadgen_workload_free(struct br_loadgen_workload *w);

/* ---- runs ----------------------------------------------------------------------------- */

/* Why a request failed; BR_LOADGEN_OK for a `done` that is not finish_reason error. */
#define BR_LOADGEN_CODE_LIST(X)                                                                    \
    X(BR_LOADGEN_OK, "ok")                                                                         \
    X(BR_LOADGEN_BUSY, "busy")                                                                     \
    X(BR_LOADGEN_TOO_LONG, "too_long")                                                             \
    X(BR_LOADGEN_TIMEOUT, "timeout")                                                               \
    X(BR_LOADGEN_BAD_REQUEST, "bad_request")                                                       \
    X(BR_LOADGEN_CANCELLED, "cancelled")                                                           \
    X(BR_LOADGEN_UNAVAILABLE, "unavailable")                                                       \
    X(BR_LOADGEN_INTERNAL, "internal")                                                             \
    X(BR_LOADGEN_OTHER, "other")

enum br_loadgen_code {
#define BR_LOADGEN_CODE_ENUM(name, text) name,
    BR_LOADGEN_CODE_LIST(BR_LOADGEN_CODE_ENUM)
#undef BR_LOADGEN_CODE_ENUM
        BR_LOADGEN_N_CODES
};

/* Wire-style name of a code ("busy"); never NULL. */
const char *br_loadgen_code_name(enum br_loadgen_code c);
/* The code for a br_client_generate status (BR_E_BUSY -> busy, BR_E_TIMEOUT -> timeout). */
enum br_loadgen_code br_loadgen_code_of_status(int status);

struct br_loadgen_config {
    const char *server;        /* ZeroMQ endpoint (borrowed) */
    int32_t concurrency;       /* closed loop: slots; ignored when rate > 0 */
    double rate;               /* open loop: requests/s; 0 = closed loop */
    int32_t max_concurrency;   /* open loop: slots; 0 = min(requests, BR_LOADGEN_MAX_SLOTS) */
    int32_t requests;          /* measured requests, >= 1 */
    int32_t warmup;            /* requests before the measured ones, not counted */
    uint64_t seed;             /* arrivals and per-request sampling seeds */
    float temperature;         /* sampling temperature (0 = greedy) */
    const int32_t *ban_tokens; /* (n_ban) ids sent as logit_bias -inf (e.g. end of text) */
    uint32_t n_ban;
    int32_t timeout_ms;                  /* the client's per-call silence timeout */
    bool progress;                       /* draw a progress line on stderr */
    const char *label;                   /* progress line prefix; NULL = "bench" */
    const char *workload;                /* what the prompts are, for the reports; NULL = unknown */
    const struct br_client_curve *curve; /* CurveZMQ credentials (borrowed); NULL = none */
    /* An OpenAI-compatible server instead of ZeroMQ (loadgen_openai.c): its base URL
     * (http://host:port), an optional API key and model name, and /v1/chat/completions
     * instead of /v1/completions (token-id prompts are then sent as words, one per id). */
    const char *openai_url;
    const char *api_key;
    const char *model;
    bool chat;
};

#define BR_LOADGEN_MAX_SLOTS 256

/* Sets the defaults: closed loop, concurrency 1, 100 requests, no warmup, seed 0,
 * temperature 0, timeout 30 s, no progress. server stays NULL (the client's default). */
void br_loadgen_config_default(struct br_loadgen_config *c);

/* What one request did, as seen by the client. Times are milliseconds. */
struct br_loadgen_record {
    int32_t index; /* among the measured requests; warmup records are not kept */
    enum br_loadgen_code code;
    int status;      /* br_client_generate's status */
    int32_t finish;  /* enum br_finish of the done, -1 without one */
    double sched_ms; /* when it was due, from the start of the measured phase */
    double start_ms; /* when it was sent, from the same origin (>= sched_ms) */
    double ttft_ms;  /* send -> first token event; -1 without tokens */
    double e2e_ms;   /* send -> done or error */
    double tpot_ms;  /* (e2e - ttft) / (n_out - 1); -1 when n_out < 2 */
    uint32_t n_in;   /* prompt tokens (the server's usage, else the ids sent) */
    uint32_t n_out;  /* token events carrying a token id */
    double *itl_ms;  /* (n_out - 1) owned gaps between consecutive token events */
};

/* Mean and nearest-rank percentiles of a sample; all 0 when n == 0. */
struct br_loadgen_dist {
    size_t n;
    double mean, p50, p90, p99, min, max;
};

struct br_loadgen_result {
    struct br_loadgen_config config; /* copy; pointers borrowed from the caller's config */
    int32_t slots;                   /* slot threads used */
    double duration_s;               /* measured phase: first due time -> last reply */
    int32_t completed;               /* measured requests that ended with an ok done */
    int32_t failed;
    int32_t errors[BR_LOADGEN_N_CODES]; /* failed requests by code ([OK] stays 0) */
    uint64_t in_tokens, out_tokens;     /* over completed requests */
    double req_per_s, in_tok_per_s, out_tok_per_s;
    double mean_lateness_ms; /* open loop: mean of start - sched (slots were all busy) */
    struct br_loadgen_dist ttft, tpot, itl, e2e;
    struct br_loadgen_record *records; /* (n_records) owned, in request order */
    size_t n_records;
    char first_error[256]; /* the first failure's message, for the report */
};

/* Runs warmup requests (items [0, warmup)) and then the measured ones (items
 * [warmup, warmup + requests), wrapping around the workload when it is shorter), and
 * computes the aggregates. Failed requests are counted, not fatal; an error is returned
 * only when the run could not happen (bad config, no memory, no thread, no client). On
 * success *out owns the result (br_loadgen_result_free). */
int br_loadgen_run(const struct br_loadgen_config *cfg, const struct br_loadgen_workload *wl,
                   struct br_loadgen_result **out, struct br_err *err);

/* Frees the result and sets *r to NULL; NULL-safe. */
void br_loadgen_result_free(struct br_loadgen_result **r);

/* Recomputes r's aggregates from r->records and r->duration_s (br_loadgen_run calls it;
 * exposed so tests can check the arithmetic on hand-made records). */
int br_loadgen_aggregate(struct br_loadgen_result *r);

/* ---- OpenAI-compatible servers (loadgen_openai.c) ------------------------------------ */

struct br_loadgen_openai;

/* One HTTP client for cfg->openai_url (borrowed, with cfg). */
int br_loadgen_openai_open(const struct br_loadgen_config *cfg, struct br_loadgen_openai **out,
                           struct br_err *err);
void br_loadgen_openai_close(struct br_loadgen_openai **c);
/* Sends req (its prompt or tokens, max_tokens and sampling) as a streaming request; calls
 * on_event with a `token` per streamed chunk and a `done` (usage, finish) at the end.
 * Returns the status br_client_generate would (BR_E_BUSY for 429, ...). */
int br_loadgen_openai_generate(struct br_loadgen_openai *c, const struct br_req *req,
                               int (*on_event)(const struct br_resp *r, void *user), void *user,
                               struct br_err *err);
/* Vocabulary size and context from GET URL/v1/models ("meta", as bitrack and llama-server
 * report them); BR_E_NOTFOUND when the server does not say. */
int br_loadgen_openai_vocab(const char *url, const char *api_key, int32_t *vocab, int64_t *ctx,
                            struct br_err *err);

/* ---- arithmetic ----------------------------------------------------------------------- */

/* Nearest-rank percentile of sorted[0..n): the value at 1-based rank ceil(p/100 * n),
 * clamped to [1, n]; p in [0, 100]. 0 when n == 0. */
double br_loadgen_percentile(const double *sorted, size_t n, double p);

/* Fills *d from v[0..n) (v is sorted in place). */
void br_loadgen_dist_compute(double *v, size_t n, struct br_loadgen_dist *d);

/* The gap before arrival i of a Poisson process of the given rate (per second): an
 * exponential variate with mean 1/rate seconds, a pure function of (seed, i). */
double br_loadgen_interarrival(uint64_t seed, uint64_t i, double rate);

/* ---- reports -------------------------------------------------------------------------- */

/* Writes results[0..n) as JSON: one object (n == 1 and !as_array) or an array of objects,
 * each with "config", the aggregates, "errors" by code, and per-request "requests" when
 * per_request. BR_E_IO when writing failed. */
int br_loadgen_write_json(FILE *f, const struct br_loadgen_result *const *results, size_t n,
                          bool as_array, bool per_request);

/* A human table of one result. */
void br_loadgen_print_table(FILE *f, const struct br_loadgen_result *r);
/* One line per result of a sweep: the swept value, throughput and latency percentiles. */
void br_loadgen_print_sweep(FILE *f, const struct br_loadgen_result *const *results, size_t n);

/* Which latency a sweep plot puts on its y axis (p50 and p90 series). */
enum br_loadgen_plot_y {
    BR_LOADGEN_PLOT_TPOT = 0,
    BR_LOADGEN_PLOT_E2E,
    BR_LOADGEN_PLOT_TTFT,
};

/* Writes an SVG plot: x = output tokens/s, y = the p50 and p90 of the chosen latency, one
 * point per result labelled with its concurrency or rate. BR_E_IO when writing failed. */
int br_loadgen_plot_svg(FILE *f, const struct br_loadgen_result *const *results, size_t n,
                        enum br_loadgen_plot_y y);

/* ---- a small JSON reader (datasets, and checking what we wrote) ----------------------- */

enum br_loadgen_json_type {
    BR_LOADGEN_JSON_NULL = 0,
    BR_LOADGEN_JSON_BOOL,
    BR_LOADGEN_JSON_NUMBER,
    BR_LOADGEN_JSON_STRING,
    BR_LOADGEN_JSON_ARRAY,
    BR_LOADGEN_JSON_OBJECT,
};

struct br_loadgen_json {
    enum br_loadgen_json_type type;
    bool b;
    double num;
    bool is_int; /* the number had no fraction or exponent */
    char *str;   /* STRING: owned, NUL-terminated (may contain NULs: str_len) */
    size_t str_len;
    struct br_loadgen_json *items; /* ARRAY, OBJECT: (n) owned values */
    char **keys;                   /* OBJECT: (n) owned keys */
    size_t n;
};

/* Parses one JSON document s[0..len) (RFC 8259; nesting <= 64). On success *out owns the
 * tree (br_loadgen_json_free). Errors name the byte offset. */
int br_loadgen_json_parse(const char *s, size_t len, struct br_loadgen_json **out,
                          struct br_err *err);
/* The value of key in an object, or NULL (also when obj is not an object). */
const struct br_loadgen_json *br_loadgen_json_get(const struct br_loadgen_json *obj,
                                                  const char *key);
/* Frees the tree and sets *j to NULL; NULL-safe. */
void br_loadgen_json_free(struct br_loadgen_json **j);

#endif
