/*
 * The continuous-batching scheduler (docs/ARCHITECTURE.md, "Coordinator and serving").
 *
 * It owns the jobs (requests being generated), admits them by KV blocks, cuts prompts
 * into chunks, keeps the steps in flight in one ring, decides per step how each row is
 * sampled, and counts KV blocks in one place. It runs a step through an executor (issue
 * a step, collect the oldest one) and reports what happens as events (coordinator/
 * transport.h) to a sink. In production the executor is the cluster driver
 * (coordinator/cluster.h) and the sink is the serving gateway; a test gives a fake executor and a
 * recording sink, and every schedule is then reproducible: for a given sequence of
 * submit, cancel and step calls the events come in the same order with the same content.
 *
 * Per step:
 *   1. cancelled jobs end (unless a step in flight still carries them: they end when it
 *      returns); waiting jobs are admitted in FIFO order while a sequence slot is free and
 *      their worst-case KV blocks (prompt + max_tokens) fit the unreserved pool;
 *   2. every running sequence with a token to feed contributes that token (decode), dealt
 *      over `depth` micro-batches so that the steps in flight alternate through stages;
 *   3. the rest of the token budget goes to prompt chunks of admitted sequences, oldest
 *      first; a chunk that completes its prompt asks for the row's next token;
 *   4. slots of finished sequences are released in the next step's descriptor.
 * Reserving blocks at admission means a running sequence never runs out of cache, so no
 * preemption is needed; the price is that a long max_tokens holds blocks it may not use.
 *
 * Sampling modes per step: greedy rows without logprobs, penalties or bias need only each
 * vocabulary slice's best (TOP1); rows whose sampling needs no history are sampled where
 * the logits are (SAMPLED, when the executor can); otherwise the full logits come back and
 * are sampled here (FULL). A row that asks for top alternatives (top_logprobs) makes its
 * step FULL: they are ranked here over the whole row, from the logits, history and
 * normaliser the draw used (br_sample_top). A sequence's output depends only on its own request
 * (the counter RNG is keyed by (seed, position)), never on what shares its batches.
 *
 * Context: a request's max_tokens is lowered to the room the context leaves after its
 * prompt (and to the server's cap); a prompt that leaves no room at all, or whose worst
 * case needs more KV blocks than the whole cache, is answered too_long.
 *
 * Steps in flight: they live in one ring, the scheduler's. Each entry holds what the
 * scheduler needs of a step (which job each row belongs to, how the rows come back) and
 * the executor's own state of that step, step_bytes of it (the cluster's: the parameters
 * a sampled step was issued with), allocated with the scheduler for BR_SCHED_MAX_INFLIGHT
 * steps. The scheduler owns that memory and hands an entry's state to issue, which fills
 * it, and to collect, which reads it; an executor keeps no ring of its own, so the steps
 * in flight cannot disagree, nothing is allocated per step, and after an executor error
 * forgetting them is the scheduler's alone.
 *
 * Threads: one thread (the one that owns the executor) calls every function here.
 */
#ifndef BR_COORDINATOR_SCHED_H
#define BR_COORDINATOR_SCHED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "coordinator/transport.h"
#include "proto/proto.h"

struct br_batch;
struct br_sample_params;
struct br_sample_result;
struct br_tok;

#define BR_SCHED_MAX_BATCH    1024 /* rows and tokens of one step */
#define BR_SCHED_MAX_INFLIGHT 16   /* steps in flight */

/* How a step's rows come back (see the header comment). */
enum br_sched_mode { BR_SCHED_TOP1 = 0, BR_SCHED_SAMPLED, BR_SCHED_FULL };

/* What runs the steps. Sizes are fixed for the executor's life. Steps are collected in
 * the order they were issued, never more than depth of them in flight. */
struct br_executor {
    void *ctx;
    int32_t max_batch; /* tokens per step */
    int32_t n_seq;     /* sequence slots */
    int32_t n_ctx;     /* positions per sequence */
    int32_t n_blocks;  /* KV blocks of the whole cache (BR_KV_BLOCK positions each) */
    int32_t vocab;
    int32_t depth;     /* steps in flight that keep every stage busy (1: one at a time) */
    size_t step_bytes; /* the executor's state of one step in flight (see the header) */
    /* whether these rows can be sampled where the logits are (BR_SCHED_SAMPLED) */
    bool (*can_sample)(void *ctx, const struct br_sample_params *const *sp, int32_t n_rows);
    /* Starts a step: b's tokens; rows[0..n_rows) are the rows whose next token is wanted,
     * in mode; for SAMPLED, sp/rseq/rpos give each row's sampling (else NULL). step
     * (step_bytes, the scheduler's) is this step's state until it is collected. */
    int (*issue)(void *ctx, void *step, const struct br_batch *b, const int32_t *rows,
                 int32_t n_rows, enum br_sched_mode mode, const struct br_sample_params *const *sp,
                 const uint64_t *rseq, const uint64_t *rpos, struct br_err *err);
    /* Finishes the oldest step, issued with step, n_rows and mode: TOP1 fills top1
     * (n_rows,); FULL fills logits (n_rows, vocab); SAMPLED fills res and row_rc
     * (n_rows,). An error ends the step and the executor (a lost rank): the scheduler
     * issues nothing more and forgets the steps in flight. */
    int (*collect)(void *ctx, void *step, int32_t n_rows, enum br_sched_mode mode, float *logits,
                   int32_t *top1, struct br_sample_result *res, int *row_rc, struct br_err *err);
};

/* Where events go. emit takes ownership of ev (kind, index, token, text, finish, usage,
 * timings, code, message filled; id and client are the sink's, by ticket). A DONE or
 * ERROR event is the job's last. */
struct br_sched_sink {
    void *ctx;
    void (*emit)(void *ctx, uint64_t ticket, struct br_event *ev);
};

/* Counters others may read at any time (metrics). */
struct br_sched_stats {
    atomic_long completed, tokens_out, tokens_in, steps;
    atomic_int running;
    atomic_long kv_blocks_used, kv_blocks_total; /* reserved by admitted jobs; the pool */
};

struct br_sched_opts {
    int32_t batch_tokens;         /* token budget per step; <= 0: the executor's max_batch */
    int32_t micro_batches;        /* steps in flight; <= 0 or above the executor's depth: depth */
    int32_t max_tokens_cap;       /* upper bound of a request's max_tokens; <= 0: 4096 */
    struct br_sched_stats *stats; /* may be NULL */
};

/* A request ready to run, its memory moved in by br_sched_submit. */
struct br_sched_job_in {
    uint64_t ticket;   /* the caller's handle, echoed to the sink */
    struct br_req req; /* type generate */
    int32_t *prompt;   /* (n_prompt,) malloc'd token ids, each < the vocabulary */
    int32_t n_prompt;  /* >= 1 */
    double t_arrival;  /* br_now() when the request arrived */
    bool ignore_eos;   /* end-of-generation tokens are output like any other */
    /* A conversation: with keep, a job that ends by a stop or its length keeps its slot,
     * its KV cache and its blocks for key (non-zero); the next job with that key continues
     * the sequence: its prompt is the whole sequence again, and only what differs from
     * the cached tokens (at least the last token) is evaluated. A kept sequence holds its
     * slot until a job continues it or the scheduler is destroyed. */
    uint64_t key;
    bool keep;
};

struct br_sched;

/* tok: detokenizes outputs and knows end-of-generation tokens (borrowed); NULL: events
 * carry token ids without text, and only max_tokens and stop tokens end a job. */
int br_sched_create(const struct br_sched_opts *o, const struct br_executor *ex,
                    const struct br_sched_sink *sink, const struct br_tok *tok,
                    struct br_sched **out, struct br_err *err);
void br_sched_destroy(struct br_sched **s);

/* Queues a job (its memory moves in; *in is zeroed). A request the scheduler cannot run
 * (bad sampling parameters: bad_request; too long for the cache: too_long) gets its
 * final error event at once. */
void br_sched_submit(struct br_sched *s, struct br_sched_job_in *in);

/* Cancels the job with this ticket (its final event is done with finish reason
 * `cancelled`, at the next step or when its step in flight returns); unknown: ignored. */
void br_sched_cancel(struct br_sched *s, uint64_t ticket);

/* True while any job waits, runs or a step is in flight. */
bool br_sched_busy(const struct br_sched *s);

/* One round: admit, issue steps up to the depth, collect the oldest. An executor error
 * is returned (err names it); the scheduler then issues nothing more. */
int br_sched_step(struct br_sched *s, struct br_err *err);

/* Collects what is in flight (a normal stop) and ends every job with an error event of
 * code (`unavailable`) and message why. After an executor error nothing is collected. */
void br_sched_finish_all(struct br_sched *s, int executor_ok, enum br_proto_code code,
                         const char *why);

#endif
