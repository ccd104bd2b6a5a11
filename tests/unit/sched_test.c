/* The scheduler (coordinator/sched.h) with a fake executor, and the gateway
 * (coordinator/gateway.h) without a transport: every schedule is reproducible, so each
 * test states exactly which steps and events a sequence of arrivals gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "coordinator/gateway.h"
#include "coordinator/sched.h"
#include "coordinator/tokenizer.h"
#include "worker/engine.h"
#include "worker/sample.h"

/* ---- a tiny tokenizer: <s>, </s>, then the letters a..z ---- */

#define VOCAB 28
#define EOS   1

static struct br_tok *tiny_tok(void)
{
    static char text[VOCAB][8];
    const char *tokens[VOCAB];
    int32_t types[VOCAB];
    snprintf(text[0], sizeof text[0], "<s>");
    snprintf(text[1], sizeof text[1], "</s>");
    for (int i = 2; i < VOCAB; i++) snprintf(text[i], sizeof text[i], "%c", 'a' + i - 2);
    for (int i = 0; i < VOCAB; i++) {
        tokens[i] = text[i];
        types[i] = i < 2 ? BR_TOK_TYPE_CONTROL : BR_TOK_TYPE_NORMAL;
    }
    struct br_tok_params p;
    br_tok_params_init(&p);
    p.model = BR_TOK_MODEL_BPE;
    p.pre = "gpt2";
    p.n_tokens = VOCAB;
    p.tokens = tokens;
    p.token_types = types;
    p.bos_id = 0;
    p.eos_id = EOS;
    p.add_bos = 0;
    struct br_tok *t = NULL;
    struct br_err err = {{0}};
    if (br_tok_create(&p, &t, &err)) fail_msg("tokenizer: %s", err.msg);
    return t;
}

/* ---- the fake executor ---- */

/* The "model": the next token after position p of sequence slot s is a letter that
 * depends on both, or EOS where the test asks for it. */
struct fake {
    int32_t depth;
    int32_t eos_at_pos;  /* a row at this position yields EOS; -1: never */
    int fail_at_collect; /* the n-th collect (1-based) fails like a lost rank; 0: never */
    int n_collect, n_issue, n_full;
    int inflight, max_inflight;
    char log[8192]; /* one line per issued step: "n=<tokens> rows=<n_rows> seqs=<distinct>" */
};

static int32_t model_next(const struct fake *f, int32_t seq, int32_t pos)
{
    if (pos == f->eos_at_pos) return EOS;
    return 2 + (pos * 3 + seq) % 26;
}

/* A step in flight, kept in the scheduler's ring: each row's next token. */
struct fake_step {
    int32_t next[BR_SCHED_MAX_BATCH];
};

static int fake_issue(void *ctx, void *step, const struct br_batch *b, const int32_t *rows,
                      int32_t n_rows, enum br_sched_mode mode,
                      const struct br_sample_params *const *sp, const uint64_t *rseq,
                      const uint64_t *rpos, struct br_err *err)
{
    (void)sp, (void)rseq, (void)rpos, (void)err;
    struct fake *f = ctx;
    struct fake_step *p = step;
    f->n_full += mode == BR_SCHED_FULL;
    for (int32_t r = 0; r < n_rows; r++)
        p->next[r] = model_next(f, b->seq[rows[r]], b->pos[rows[r]]);
    f->n_issue++;
    if (++f->inflight > f->max_inflight) f->max_inflight = f->inflight;
    int seen[64] = {0}, distinct = 0;
    for (int32_t i = 0; i < b->n; i++)
        if (!seen[b->seq[i]]++) distinct++;
    size_t len = strlen(f->log);
    snprintf(f->log + len, sizeof f->log - len, "n=%d rows=%d seqs=%d free=%d\n", b->n, n_rows,
             distinct, b->n_free);
    return BR_OK;
}

static int fake_collect(void *ctx, void *step, int32_t n_rows, enum br_sched_mode mode,
                        float *logits, int32_t *top1, struct br_sample_result *res, int *row_rc,
                        struct br_err *err)
{
    (void)res, (void)row_rc;
    struct fake *f = ctx;
    const struct fake_step *p = step;
    f->n_collect++;
    f->inflight--;
    if (f->fail_at_collect && f->n_collect == f->fail_at_collect)
        return br_err_set(err, BR_E_UNAVAILABLE, "rank 1 (on host h1) has died");
    for (int32_t r = 0; r < n_rows; r++) {
        if (mode == BR_SCHED_FULL) {
            for (int32_t v = 0; v < VOCAB; v++)
                logits[(size_t)r * VOCAB + v] = v == p->next[r] ? 10.0f : 0.0f;
        } else {
            top1[r] = p->next[r];
        }
    }
    return BR_OK;
}

/* ---- a recording sink ---- */

struct rec {
    char log[16384];
    int n_final;
    int n_events;
};

static void rec_emit(void *ctx, uint64_t ticket, struct br_event *e)
{
    struct rec *r = ctx;
    size_t len = strlen(r->log);
    switch (e->kind) {
    case BR_EVENT_TOKEN:
        snprintf(r->log + len, sizeof r->log - len, "%llu tok %u %d '%s'\n",
                 (unsigned long long)ticket, e->index, e->token, e->text ? e->text : "");
        break;
    case BR_EVENT_DONE:
        snprintf(r->log + len, sizeof r->log - len, "%llu done %s %u '%s'\n",
                 (unsigned long long)ticket, br_proto_finish_name(e->finish),
                 e->usage.completion_tokens, e->text ? e->text : "");
        r->n_final++;
        break;
    case BR_EVENT_ERROR:
        snprintf(r->log + len, sizeof r->log - len, "%llu error %s %s\n",
                 (unsigned long long)ticket, br_proto_code_name(e->code), e->message);
        r->n_final++;
        break;
    default:
        break;
    }
    r->n_events++;
    br_event_free_list(e);
}

struct world {
    struct br_tok *tok;
    struct fake fake;
    struct rec rec;
    struct br_executor ex;
    struct br_sched *s;
};

static void world_init(struct world *w, int32_t n_seq, int32_t n_ctx, int32_t n_blocks,
                       int32_t depth, int32_t budget)
{
    memset(w, 0, sizeof *w);
    w->tok = tiny_tok();
    w->fake.eos_at_pos = -1;
    w->fake.depth = depth;
    w->ex = (struct br_executor){.ctx = &w->fake,
                                 .max_batch = 64,
                                 .n_seq = n_seq,
                                 .n_ctx = n_ctx,
                                 .n_blocks = n_blocks,
                                 .vocab = VOCAB,
                                 .depth = depth,
                                 .step_bytes = sizeof(struct fake_step),
                                 .issue = fake_issue,
                                 .collect = fake_collect};
    struct br_sched_opts o = {.batch_tokens = budget};
    struct br_sched_sink sink = {&w->rec, rec_emit};
    struct br_err err = {{0}};
    assert_int_equal(br_sched_create(&o, &w->ex, &sink, w->tok, &w->s, &err), BR_OK);
}

static void world_free(struct world *w)
{
    br_sched_destroy(&w->s);
    br_tok_destroy(&w->tok);
}

/* A greedy request for n_prompt tokens (all 'a') and max_tokens new ones. */
static void submit_in(struct world *w, uint64_t ticket, int32_t n_prompt, int32_t max_tokens,
                      bool stream, bool ignore_eos)
{
    struct br_sched_job_in in = {0};
    in.ticket = ticket;
    in.ignore_eos = ignore_eos;
    br_req_init(&in.req);
    in.req.type = BR_REQ_GENERATE;
    in.req.id = strdup("x");
    in.req.input = BR_INPUT_TOKENS;
    in.req.max_tokens = max_tokens;
    in.req.stream = stream;
    in.req.sampling.temperature = 0;
    in.prompt = malloc((size_t)n_prompt * sizeof *in.prompt);
    for (int32_t i = 0; i < n_prompt; i++) in.prompt[i] = 2;
    in.n_prompt = n_prompt;
    in.t_arrival = br_now();
    br_sched_submit(w->s, &in);
}

static void submit(struct world *w, uint64_t ticket, int32_t n_prompt, int32_t max_tokens,
                   bool stream)
{
    submit_in(w, ticket, n_prompt, max_tokens, stream, false);
}

static void run_until_idle(struct world *w, int max_steps)
{
    struct br_err err = {{0}};
    for (int i = 0; i < max_steps && br_sched_busy(w->s); i++)
        assert_int_equal(br_sched_step(w->s, &err), BR_OK);
    assert_false(br_sched_busy(w->s));
}

/* Admission by KV blocks: two requests that each need the whole cache run one after the
 * other; the second's first step comes after the first's done, and its slot is the one
 * the first released. */
static void test_admission_by_blocks(void **state)
{
    (void)state;
    struct world w;
    /* 4 blocks of 32 positions; prompt 40 + 60 new = 100 positions = 4 blocks each */
    world_init(&w, 4, 128, 4, 1, 64);
    submit(&w, 1, 40, 60, false);
    submit(&w, 2, 40, 60, false);
    run_until_idle(&w, 1000);
    assert_int_equal(w.rec.n_final, 2);
    const char *d1 = strstr(w.rec.log, "1 done length 60");
    const char *d2 = strstr(w.rec.log, "2 done length 60");
    assert_non_null(d1);
    assert_non_null(d2);
    assert_true(d1 < d2);
    /* never two sequences in one step: the second waited for the blocks */
    assert_null(strstr(w.fake.log, "seqs=2"));
    /* the second's prefill (40 tokens) comes right after the step that freed slot 0 */
    assert_non_null(strstr(w.fake.log, "n=40 rows=1 seqs=1 free=1"));
    world_free(&w);
}

/* Slots, not blocks: with one slot, a second request waits (it is not refused). */
static void test_busy_waits_for_a_slot(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 1, 128, 64, 1, 64);
    submit(&w, 1, 4, 3, false);
    submit(&w, 2, 4, 3, false);
    submit(&w, 3, 4, 3, false);
    run_until_idle(&w, 100);
    /* one slot: each sequence uses slot 0, positions 3, 4, 5: j, m, p */
    assert_string_equal(w.rec.log, "1 done length 3 'jmp'\n"
                                   "2 done length 3 'jmp'\n"
                                   "3 done length 3 'jmp'\n");
    world_free(&w);
}

/* too_long: a prompt that leaves no room, and one whose worst case exceeds the cache.
 * max_tokens beyond the context's room is lowered, not refused. */
static void test_too_long(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 2, 64, 1, 1, 64); /* one block: 32 positions in all */
    submit(&w, 1, 64, 4, false);     /* no room in the context */
    submit(&w, 2, 20, 30, false);    /* 50 positions: two blocks */
    submit(&w, 3, 20, 1000, false);  /* lowered to the context's 44, then two blocks */
    submit(&w, 4, 20, 12, false);    /* fits: 32 positions */
    run_until_idle(&w, 100);
    assert_non_null(
        strstr(w.rec.log, "1 error too_long the prompt has 64 tokens; the context holds 64"));
    assert_non_null(strstr(w.rec.log, "2 error too_long prompt and max_tokens need more KV cache"));
    assert_non_null(strstr(w.rec.log, "3 error too_long"));
    assert_non_null(strstr(w.rec.log, "4 done length 12"));
    world_free(&w);

    world_init(&w, 2, 64, 64, 1, 64);
    submit(&w, 5, 60, 1000, false); /* room for 4 */
    run_until_idle(&w, 100);
    assert_non_null(strstr(w.rec.log, "5 done length 4"));
    world_free(&w);
}

/* Cancel during the prompt: the prompt is fed in chunks of the budget; a cancel after
 * two chunks ends the job with done/cancelled and no tokens, and frees its slot. */
static void test_cancel_mid_prefill(void **state)
{
    (void)state;
    struct world w;
    struct br_err err = {{0}};
    world_init(&w, 2, 256, 64, 1, 16);
    submit(&w, 1, 100, 5, true);
    assert_int_equal(br_sched_step(w.s, &err), BR_OK);
    assert_int_equal(br_sched_step(w.s, &err), BR_OK);
    br_sched_cancel(w.s, 1);
    submit(&w, 2, 4, 2, false);
    run_until_idle(&w, 100);
    assert_string_equal(w.fake.log, "n=16 rows=0 seqs=1 free=0\n"
                                    "n=16 rows=0 seqs=1 free=0\n"
                                    "n=4 rows=1 seqs=1 free=1\n"
                                    "n=1 rows=1 seqs=1 free=0\n");
    assert_string_equal(w.rec.log, "1 done cancelled 0 ''\n"
                                   "2 done length 2 'jm'\n");
    world_free(&w);
}

/* Cancel while decoding: the tokens so far were streamed, then done/cancelled. */
static void test_cancel_mid_decode(void **state)
{
    (void)state;
    struct world w;
    struct br_err err = {{0}};
    world_init(&w, 2, 256, 64, 1, 64);
    submit(&w, 7, 4, 50, true);
    for (int i = 0; i < 3; i++) assert_int_equal(br_sched_step(w.s, &err), BR_OK);
    br_sched_cancel(w.s, 7);
    run_until_idle(&w, 100);
    assert_string_equal(w.rec.log, "7 tok 0 11 'j'\n"
                                   "7 tok 1 14 'm'\n"
                                   "7 tok 2 17 'p'\n"
                                   "7 done cancelled 3 ''\n");
    world_free(&w);
}

/* Micro-batches: depth 2 keeps two steps in flight and deals the decoding sequences
 * over them (4 sequences: 2 rows a step). */
static void test_micro_batches(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 4, 256, 64, 2, 64);
    for (uint64_t t = 1; t <= 4; t++) submit(&w, t, 3, 6, false);
    run_until_idle(&w, 200);
    assert_int_equal(w.rec.n_final, 4);
    assert_int_equal(w.fake.max_inflight, 2);
    assert_non_null(strstr(w.fake.log, "n=2 rows=2 seqs=2"));
    assert_null(strstr(w.fake.log, "n=4 rows=4"));
    for (uint64_t t = 1; t <= 4; t++) {
        char want[64];
        snprintf(want, sizeof want, "%llu done length 6", (unsigned long long)t);
        assert_non_null(strstr(w.rec.log, want));
    }
    world_free(&w);
}

/* A lost rank: the executor fails; the step reports it, nothing more is issued, and
 * every job (running and waiting) gets one error `unavailable` naming it. */
static void test_lost_rank(void **state)
{
    (void)state;
    struct world w;
    struct br_err err = {{0}};
    world_init(&w, 1, 256, 64, 1, 64);
    w.fake.fail_at_collect = 3;
    submit(&w, 1, 4, 50, true);
    submit(&w, 2, 4, 50, true);
    assert_int_equal(br_sched_step(w.s, &err), BR_OK);
    assert_int_equal(br_sched_step(w.s, &err), BR_OK);
    assert_int_equal(br_sched_step(w.s, &err), BR_E_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "rank 1 (on host h1)"));
    char why[600];
    snprintf(why, sizeof why, "a rank was lost (%s)", err.msg);
    int issued = w.fake.n_issue;
    struct br_err err2 = {{0}};
    assert_int_not_equal(br_sched_step(w.s, &err2), BR_OK);
    assert_int_equal(w.fake.n_issue, issued);
    br_sched_finish_all(w.s, 0, BR_PROTO_UNAVAILABLE, why);
    assert_int_equal(w.rec.n_final, 2);
    assert_string_equal(w.rec.log,
                        "1 tok 0 11 'j'\n"
                        "1 tok 1 14 'm'\n"
                        "1 error unavailable a rank was lost (rank 1 (on host h1) has died)\n"
                        "2 error unavailable a rank was lost (rank 1 (on host h1) has died)\n");
    assert_false(br_sched_busy(w.s));
    world_free(&w);
}

/* An end-of-generation token ends a sequence with finish `stop`: it counts as a completion
 * token but is not in the text. */
static void test_eos(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 2, 256, 64, 1, 64);
    w.fake.eos_at_pos = 5;
    submit(&w, 1, 4, 50, false);
    run_until_idle(&w, 100);
    assert_string_equal(w.rec.log, "1 done stop 3 'jm'\n");
    world_free(&w);
}

/* With ignore_eos an end-of-generation token is output like any other (as `run
 * --ignore-eos` wants) and the job goes on to max_tokens. */
static void test_ignore_eos(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 2, 256, 64, 1, 64);
    w.fake.eos_at_pos = 5;
    submit_in(&w, 1, 4, 5, true, true);
    run_until_idle(&w, 100);
    assert_string_equal(w.rec.log, "1 tok 0 11 'j'\n1 tok 1 14 'm'\n1 tok 2 1 ''\n"
                                   "1 tok 3 20 's'\n1 tok 4 23 'v'\n1 done length 5 ''\n");
    world_free(&w);
}

/* Without a tokenizer, events carry ids and no text; only max_tokens ends a job. */
static void test_no_tokenizer(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 2, 256, 64, 1, 64);
    br_sched_destroy(&w.s);
    struct br_sched_opts o = {0};
    struct br_sched_sink sink = {&w.rec, rec_emit};
    struct br_err err = {{0}};
    assert_int_equal(br_sched_create(&o, &w.ex, &sink, NULL, &w.s, &err), BR_OK);
    w.fake.eos_at_pos = 5;
    submit(&w, 1, 4, 4, true);
    run_until_idle(&w, 100);
    assert_string_equal(w.rec.log, "1 tok 0 11 ''\n1 tok 1 14 ''\n1 tok 2 1 ''\n"
                                   "1 tok 3 20 ''\n1 done length 4 ''\n");
    world_free(&w);
}

/* A greedy request for the given prompt, of conversation key (0: none), kept or not. */
static void submit_conv(struct world *w, uint64_t ticket, const int32_t *prompt, int32_t n,
                        int32_t max_tokens, uint64_t key, bool keep)
{
    struct br_sched_job_in in = {.ticket = ticket, .n_prompt = n, .key = key, .keep = keep};
    br_req_init(&in.req);
    in.req.type = BR_REQ_GENERATE;
    in.req.max_tokens = max_tokens;
    in.prompt = malloc((size_t)n * sizeof *in.prompt);
    memcpy(in.prompt, prompt, (size_t)n * sizeof *prompt);
    in.t_arrival = br_now();
    br_sched_submit(w->s, &in);
}

/* A conversation keeps its sequence between jobs: the next job of its key evaluates only
 * what the cache does not hold (at least its last token), in the same slot (the fake
 * model's tokens depend on the slot), and a job of no conversation takes another slot. */
static void test_conversation(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 2, 256, 64, 1, 64);
    const int32_t p1[4] = {2, 2, 2, 2}, p2[8] = {2, 2, 2, 2, 11, 14, 17, 2};
    const int32_t p4[9] = {2, 2, 2, 2, 11, 14, 17, 2, 23};
    submit_conv(&w, 1, p1, 4, 3, 7, true);
    run_until_idle(&w, 100);
    submit_conv(&w, 3, p1, 4, 1, 0, false);
    run_until_idle(&w, 100);
    submit_conv(&w, 2, p2, 8, 2, 7, true); /* 6 tokens cached: 2 fed */
    run_until_idle(&w, 100);
    submit_conv(&w, 4, p4, 9, 1, 7, false); /* all 9 cached: the last fed again */
    run_until_idle(&w, 100);
    assert_string_equal(w.rec.log, "1 done length 3 'jmp'\n3 done length 1 'k'\n"
                                   "2 done length 2 'vy'\n4 done length 1 'y'\n");
    assert_string_equal(w.fake.log, "n=4 rows=1 seqs=1 free=0\nn=1 rows=1 seqs=1 free=0\n"
                                    "n=1 rows=1 seqs=1 free=0\nn=4 rows=1 seqs=1 free=0\n"
                                    "n=2 rows=1 seqs=1 free=1\nn=1 rows=1 seqs=1 free=0\n"
                                    "n=1 rows=1 seqs=1 free=0\n");
    /* without keep the slot is released: a job of the same key starts over */
    submit_conv(&w, 5, p1, 4, 1, 7, false);
    run_until_idle(&w, 100);
    assert_non_null(strstr(w.fake.log, "n=1 rows=1 seqs=1 free=0\nn=4 rows=1 seqs=1 free=1\n"));
    world_free(&w);
}

/* The same arrivals give the same events, in the same order, byte for byte. */
static void schedule(struct world *w)
{
    struct br_err err = {{0}};
    world_init(w, 3, 128, 10, 2, 8);
    for (int round = 0; round < 40; round++) {
        if (round % 3 == 0)
            submit(w, (uint64_t)round + 1, 5 + round % 11, 4 + round % 7, round % 2);
        if (round == 10) br_sched_cancel(w->s, 4);
        if (br_sched_busy(w->s)) assert_int_equal(br_sched_step(w->s, &err), BR_OK);
    }
    run_until_idle(w, 1000);
}

static void test_deterministic(void **state)
{
    (void)state;
    struct world *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    schedule(a);
    schedule(b);
    assert_int_equal(a->rec.n_final, 14);
    assert_true(a->rec.n_events > 30);
    assert_string_equal(a->rec.log, b->rec.log);
    assert_string_equal(a->fake.log, b->fake.log);
    world_free(a);
    world_free(b);
    free(a);
    free(b);
}

/* top_logprobs: the step is FULL even where the executor could sample (it would not
 * rank alternatives), each token event lists the alternatives with their bytes, the
 * sampled token's logprob equals its entry's, and bad settings are refused. */
static bool fake_can_sample(void *ctx, const struct br_sample_params *const *sp, int32_t n)
{
    (void)ctx, (void)sp, (void)n;
    return true;
}

static void top_emit(void *ctx, uint64_t ticket, struct br_event *e)
{
    struct rec *r = ctx;
    size_t len = strlen(r->log);
    if (e->kind == BR_EVENT_TOKEN) {
        len += (size_t)snprintf(r->log + len, sizeof r->log - len, "%llu tok %d self '%.*s' |",
                                (unsigned long long)ticket, e->token, (int)e->self_len,
                                e->text + e->self_off);
        for (int i = 0; i < e->n_top; i++)
            len += (size_t)snprintf(
                r->log + len, sizeof r->log - len, " %d '%.*s'%s%s", e->top[i].token,
                (int)e->top[i].len, e->text + e->top[i].off,
                i > 0 && e->top[i].logprob > e->top[i - 1].logprob ? " UNSORTED" : "",
                e->top[i].token == e->token && memcmp(&e->top[i].logprob, &e->logprob, 4)
                    ? " DIFFERENT"
                    : "");
        snprintf(r->log + len, sizeof r->log - len, "\n");
    } else {
        snprintf(r->log + len, sizeof r->log - len, "%llu %s %s\n", (unsigned long long)ticket,
                 e->kind == BR_EVENT_DONE ? "done" : br_proto_code_name(e->code),
                 e->kind == BR_EVENT_DONE ? "" : e->message);
        r->n_final++;
    }
    br_event_free_list(e);
}

static void submit_top(struct world *w, uint64_t ticket, bool logprobs, int32_t top)
{
    struct br_sched_job_in in = {0};
    in.ticket = ticket;
    br_req_init(&in.req);
    in.req.type = BR_REQ_GENERATE;
    in.req.id = strdup("x");
    in.req.input = BR_INPUT_TOKENS;
    in.req.max_tokens = 2;
    in.req.stream = true;
    in.req.logprobs = logprobs;
    in.req.top_logprobs = top;
    in.req.sampling.temperature = 0;
    in.prompt = malloc(3 * sizeof *in.prompt);
    for (int32_t i = 0; i < 3; i++) in.prompt[i] = 2;
    in.n_prompt = 3;
    in.t_arrival = br_now();
    br_sched_submit(w->s, &in);
}

static void test_top_logprobs(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 2, 128, 64, 1, 64);
    br_sched_destroy(&w.s);
    w.ex.can_sample = fake_can_sample;
    struct br_sched_opts o = {.batch_tokens = 64};
    struct br_sched_sink sink = {&w.rec, top_emit};
    struct br_err err = {{0}};
    assert_int_equal(br_sched_create(&o, &w.ex, &sink, w.tok, &w.s, &err), BR_OK);
    submit_top(&w, 1, true, 3);
    submit_top(&w, 2, true, BR_REQ_MAX_TOP_LOGPROBS + 1);
    submit_top(&w, 3, false, 2);
    run_until_idle(&w, 100);
    /* the fake model puts 10 on the next letter, 0 elsewhere: then ids 0, 1 ... by id */
    assert_string_equal(w.rec.log,
                        "2 bad_request top_logprobs 21: must be in [0, 20], with logprobs\n"
                        "3 bad_request top_logprobs 2: must be in [0, 20], with logprobs\n"
                        "1 tok 8 self 'g' | 8 'g' 0 '<s>' 1 '</s>'\n"
                        "1 tok 11 self 'j' | 11 'j' 0 '<s>' 1 '</s>'\n"
                        "1 done \n");
    assert_int_equal(w.fake.n_full, w.fake.n_issue);
    world_free(&w);
}

/* ---- the gateway, without a transport ---- */

static struct br_event *wait_events(struct br_outbox *box, int n_final)
{
    struct br_event *all = NULL, **tail = &all;
    int finals = 0;
    for (int i = 0; i < 200 && finals < n_final; i++) {
        struct pollfd p = {br_outbox_fd(box), POLLIN, 0};
        poll(&p, 1, 20);
        for (struct br_event *e = br_outbox_take(box); e;) {
            struct br_event *next = e->next;
            e->next = NULL;
            finals += e->kind != BR_EVENT_TOKEN;
            *tail = e;
            tail = &e->next;
            e = next;
        }
    }
    return all;
}

static void gen_req(struct br_req *r, const char *id, uint32_t n_tokens)
{
    br_req_init(r);
    r->type = BR_REQ_GENERATE;
    r->id = strdup(id);
    r->id_len = strlen(id);
    r->input = BR_INPUT_TOKENS;
    r->tokens = malloc(n_tokens * sizeof *r->tokens);
    for (uint32_t i = 0; i < n_tokens; i++) r->tokens[i] = 2;
    r->n_tokens = n_tokens;
    r->max_tokens = 4;
    r->stream = true;
}

/* loading, duplicate ids, busy: each refused with its own code; one final event each. */
static void test_gateway_refusals(void **state)
{
    (void)state;
    atomic_int stop = BR_STOP_NONE;
    struct br_gateway_opts o = {.max_queue = 3, .max_per_client = 2, .stop = &stop};
    struct br_gateway *gw = NULL;
    struct br_outbox *box = NULL;
    struct br_err err = {{0}};
    struct br_tok *tok = tiny_tok();
    assert_int_equal(br_gateway_create(&o, &gw, &err), BR_OK);
    assert_int_equal(br_outbox_create(gw, &box, &err), BR_OK);
    struct br_client_key a = {1, {'a'}}, b = {1, {'b'}};
    struct br_req r;
    gen_req(&r, "r0", 3);
    br_gateway_submit(gw, box, &a, &r);
    struct br_event *e = wait_events(box, 1);
    assert_non_null(e);
    assert_int_equal(e->kind, BR_EVENT_ERROR);
    assert_int_equal(e->code, BR_PROTO_UNAVAILABLE);
    assert_non_null(strstr(e->message, "loading"));
    br_event_free_list(e);

    br_gateway_set_ready(gw, tok, VOCAB, 128, "chatml");
    gen_req(&r, "r1", 3);
    br_gateway_submit(gw, box, &a, &r);
    gen_req(&r, "r1", 3); /* the same id again, same client: refused, r1 goes on */
    br_gateway_submit(gw, box, &a, &r);
    gen_req(&r, "r1", 3); /* the same id from another client is another request */
    br_gateway_submit(gw, box, &b, &r);
    gen_req(&r, "r2", 3);
    br_gateway_submit(gw, box, &a, &r);
    gen_req(&r, "r3", 3); /* client a has 2 in flight: busy */
    br_gateway_submit(gw, box, &a, &r);
    gen_req(&r, "r4", 3); /* 3 in flight in all: busy */
    br_gateway_submit(gw, box, &b, &r);
    e = wait_events(box, 3);
    int n = 0;
    for (struct br_event *x = e; x; x = x->next, n++) assert_int_equal(x->kind, BR_EVENT_ERROR);
    assert_int_equal(n, 3);
    assert_int_equal(e->code, BR_PROTO_DUPLICATE_ID);
    assert_string_equal(e->id, "r1");
    assert_int_equal(e->next->code, BR_PROTO_BUSY);
    assert_string_equal(e->next->id, "r3");
    assert_int_equal(e->next->next->code, BR_PROTO_BUSY);
    assert_non_null(strstr(e->next->next->message, "queue is full"));
    br_event_free_list(e);

    /* the three accepted requests reach a scheduler; a stop answers them once each */
    struct world w;
    world_init(&w, 4, 128, 64, 1, 64);
    struct br_sched_sink sink = br_gateway_sink(gw);
    struct br_sched_opts so = {0};
    struct br_sched *s = NULL;
    assert_int_equal(br_sched_create(&so, &w.ex, &sink, tok, &s, &err), BR_OK);
    for (int i = 0; i < 100 && !br_sched_busy(s); i++) {
        struct pollfd p = {br_gateway_fd(gw), POLLIN, 0};
        poll(&p, 1, 20);
        br_gateway_feed(gw, s);
    }
    assert_true(br_sched_busy(s));
    assert_int_equal(br_sched_step(s, &err), BR_OK);
    br_gateway_answer_all(gw, "stopping");
    br_sched_finish_all(s, 1, BR_PROTO_UNAVAILABLE, "late");
    e = wait_events(box, 3);
    int finals = 0;
    for (struct br_event *x = e; x; x = x->next) {
        if (x->kind == BR_EVENT_TOKEN) continue;
        finals++;
        assert_int_equal(x->kind, BR_EVENT_ERROR);
        assert_string_equal(x->message, "stopping");
    }
    assert_int_equal(finals, 3);
    br_event_free_list(e);
    br_sched_destroy(&s);
    world_free(&w);
    br_outbox_destroy(&box);
    br_gateway_destroy(&gw);
    br_tok_destroy(&tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admission_by_blocks),
        cmocka_unit_test(test_busy_waits_for_a_slot),
        cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_cancel_mid_prefill),
        cmocka_unit_test(test_cancel_mid_decode),
        cmocka_unit_test(test_micro_batches),
        cmocka_unit_test(test_lost_rank),
        cmocka_unit_test(test_eos),
        cmocka_unit_test(test_ignore_eos),
        cmocka_unit_test(test_no_tokenizer),
        cmocka_unit_test(test_conversation),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_top_logprobs),
        cmocka_unit_test(test_gateway_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
