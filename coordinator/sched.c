/*
 * The continuous-batching scheduler (see sched.h): jobs, admission by KV blocks, prompt
 * chunks, the ring of steps in flight, the sampling-mode decision, and the events of each
 * job. All allocation of a job happens when it is submitted; a step allocates only the
 * events it emits.
 */
#include "coordinator/sched.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/progress.h"
#include "coordinator/stop.h"
#include "coordinator/tokenizer.h"
#include "worker/engine.h"
#include "worker/sample.h"

enum job_state { JOB_WAITING, JOB_PREFILL, JOB_DECODE };

struct job {
    uint64_t ticket;
    struct br_req req;
    int32_t *prompt; /* (n_prompt,) */
    int32_t n_prompt;
    double t_arrival, t_admit, t_first;
    enum job_state state;
    int32_t slot, n_fed, n_gen, max_new, next_token, blocks;
    int inflight;  /* a step that will sample this job's next token is in flight */
    int32_t *hist; /* prompt then generated, (n_prompt + max_new,) */
    int32_t n_hist;
    struct br_sample_params sp;
    struct br_sample_stop stop;
    struct br_detok *dt;
    char *text; /* detokenized output so far */
    size_t text_len, text_cap, emitted;
    int cancelled, ignore_eos, keep;
    uint64_t key; /* the conversation, 0: none */
    struct job *next;
};

/* A step in flight: which job each requested row belongs to, how it comes back, and the
 * executor's state of it (ex.step_bytes, in `steps`). */
struct inflight {
    int32_t n_rows;
    enum br_sched_mode mode;
    void *xs;
    struct job *row_job[BR_SCHED_MAX_BATCH];
};

/* A conversation's sequence kept in a free slot: its key, the tokens in the cache (n,)
 * and the blocks they hold; toks NULL: none. */
struct kept {
    uint64_t key;
    int32_t *toks, n, blocks;
};

struct br_sched {
    struct br_executor ex;
    struct br_sched_sink sink;
    const struct br_tok *tok;
    struct br_sched_stats own_stats, *stats;
    int32_t max_tokens_cap, budget, depth;
    int32_t free_blocks; /* KV blocks not reserved by an admitted job: the one count */
    struct job **slots;  /* (n_seq,) */
    struct kept *kept;   /* (n_seq,) sequences kept in free slots */
    struct job *waiting, *waiting_tail; /* FIFO */
    int32_t *to_free;                   /* slots to release in the next step, (2 n_seq,) */
    int32_t n_to_free;
    struct inflight ring[BR_SCHED_MAX_INFLIGHT]; /* the steps in flight, oldest at head */
    int head, count;
    void *steps;            /* (BR_SCHED_MAX_INFLIGHT, ex.step_bytes rounded up): the ring's xs */
    int broken;             /* the executor failed: nothing more is issued */
    float *logits;          /* (max_batch, vocab) for FULL steps */
    struct br_sample_ws ws; /* sampling's working memory for FULL steps */
    /* per-step scratch */
    int32_t tokens[BR_SCHED_MAX_BATCH], pos[BR_SCHED_MAX_BATCH], seqs[BR_SCHED_MAX_BATCH];
    int32_t rows[BR_SCHED_MAX_BATCH], top1[BR_SCHED_MAX_BATCH];
    int row_rc[BR_SCHED_MAX_BATCH];
    struct br_sample_result sres[BR_SCHED_MAX_BATCH];
};

static int32_t blocks_for(int32_t positions)
{
    return (positions + BR_KV_BLOCK - 1) / BR_KV_BLOCK;
}

static void job_free(struct job *j)
{
    if (!j) return;
    br_req_free(&j->req);
    free(j->prompt);
    free(j->hist);
    free(j->text);
    br_detok_destroy(&j->dt);
    free((void *)j->stop.strings);
    free(j);
}

static struct br_event *ev_new(enum br_event_kind kind, const struct job *j)
{
    struct br_event *e = calloc(1, sizeof *e);
    if (e) e->kind = kind, e->stream = j->req.stream;
    return e;
}

static char *dup_bytes(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        if (n) memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static void emit(struct br_sched *s, const struct job *j, struct br_event *e)
{
    if (e) s->sink.emit(s->sink.ctx, j->ticket, e);
}

static void emit_error(struct br_sched *s, const struct job *j, enum br_proto_code code,
                       const char *msg)
{
    struct br_event *e = ev_new(BR_EVENT_ERROR, j);
    if (!e) return;
    e->code = code;
    e->message = dup_bytes(msg, strlen(msg));
    emit(s, j, e);
}

_Static_assert(BR_SAMPLE_MAX_TOP == BR_REQ_MAX_TOP_LOGPROBS, "one cap on alternatives");

/* What a row's sampling reports about its token: the logprob (when asked) and the top
 * alternatives (when asked: n_top > 0). */
struct token_lp {
    float logprob;
    int32_t n_top;
    struct br_sample_alt top[BR_REQ_MAX_TOP_LOGPROBS];
};

/* A token event; lp NULL when the request did not ask for logprobs. With alternatives, the
 * event's one text allocation holds the piece, then each alternative's bytes and the
 * sampled token's own (transport.h). */
static void emit_token(struct br_sched *s, const struct job *j, uint32_t index, int32_t token,
                       const char *piece, size_t len, const struct token_lp *lp)
{
    struct br_event *e = ev_new(BR_EVENT_TOKEN, j);
    if (!e) return;
    e->index = index;
    e->token = token;
    e->has_logprob = lp != NULL;
    e->logprob = lp ? lp->logprob : 0.0f;
    e->text_len = len;
    if (!lp || lp->n_top == 0 || token < 0) {
        e->text = dup_bytes(piece, len);
        emit(s, j, e);
        return;
    }
    const char *bytes[BR_REQ_MAX_TOP_LOGPROBS + 1];
    size_t blen[BR_REQ_MAX_TOP_LOGPROBS + 1], total = len + 1;
    for (int32_t i = 0; i <= lp->n_top; i++) {
        int32_t id = i < lp->n_top ? lp->top[i].id : token;
        if (br_tok_piece(s->tok, id, &bytes[i], &blen[i]) != BR_OK) bytes[i] = "", blen[i] = 0;
        total += blen[i];
    }
    if (!(e->text = malloc(total))) {
        free(e);
        return;
    }
    if (len) memcpy(e->text, piece, len);
    e->text[len] = '\0';
    uint32_t off = (uint32_t)len + 1;
    for (int32_t i = 0; i <= lp->n_top; i++) {
        if (blen[i]) memcpy(e->text + off, bytes[i], blen[i]);
        if (i < lp->n_top)
            e->top[i] = (struct br_event_alt){lp->top[i].id, (float)lp->top[i].logprob, off,
                                              (uint32_t)blen[i]};
        else
            e->self_off = off, e->self_len = (uint32_t)blen[i];
        off += (uint32_t)blen[i];
    }
    e->n_top = (uint8_t)lp->n_top;
    emit(s, j, e);
}

/* Releases a running job's slot and blocks (the slot is freed in the next step). */
static void release(struct br_sched *s, struct job *j)
{
    if (j->slot < 0) return;
    s->slots[j->slot] = NULL;
    s->to_free[s->n_to_free++] = j->slot;
    s->free_blocks += j->blocks;
    j->slot = -1;
    atomic_fetch_sub(&s->stats->running, 1);
    atomic_store(&s->stats->kv_blocks_used, s->ex.n_blocks - s->free_blocks);
}

/* A conversation's job that ended normally: its slot, cache and blocks stay for the next
 * job of its key. The cache holds the prompt and every generated token but the last. */
static void keep_seq(struct br_sched *s, struct job *j)
{
    struct kept *k = &s->kept[j->slot];
    *k = (struct kept){j->key, j->hist, j->n_prompt + j->n_gen - 1, j->blocks};
    j->hist = NULL;
    s->slots[j->slot] = NULL;
    j->slot = -1;
    atomic_fetch_sub(&s->stats->running, 1);
}

/* The job's last event: done (err_msg NULL) or an error; the job is freed. */
static void finish(struct br_sched *s, struct job *j, enum br_finish reason,
                   enum br_proto_code code, const char *err_msg)
{
    if (err_msg) {
        emit_error(s, j, code, err_msg);
    } else {
        struct br_event *e = ev_new(BR_EVENT_DONE, j);
        if (e) {
            double now = br_now();
            double dec = j->t_first > 0 ? now - j->t_first : 0;
            e->finish = reason;
            e->usage = (struct br_usage){(uint32_t)j->n_prompt, (uint32_t)j->n_gen};
            e->timings = (struct br_timings){
                (j->t_admit > 0 ? j->t_admit : now) * 1e3 - j->t_arrival * 1e3,
                j->t_first > 0 ? (j->t_first - j->t_arrival) * 1e3 : 0,
                (now - j->t_arrival) * 1e3,
                j->n_gen > 1 && dec > 0 ? (j->n_gen - 1) / dec : 0,
            };
            if (!j->req.stream) {
                e->text = dup_bytes(j->text ? j->text : "", j->emitted);
                e->text_len = j->emitted;
            }
            emit(s, j, e);
        }
    }
    if (j->keep && j->key && j->slot >= 0 && !err_msg && reason != BR_FINISH_CANCELLED)
        keep_seq(s, j);
    release(s, j);
    atomic_fetch_add(&s->stats->completed, 1);
    atomic_fetch_add(&s->stats->tokens_out, j->n_gen);
    job_free(j);
}

static int job_setup(struct br_sched *s, struct job *j, struct br_err *err)
{
    const struct br_req_sampling *q = &j->req.sampling;
    br_sample_params_default(&j->sp);
    j->sp.temperature = q->temperature;
    j->sp.top_k = q->top_k;
    j->sp.top_p = q->top_p;
    j->sp.min_p = q->min_p;
    j->sp.repeat_penalty = q->repeat_penalty;
    j->sp.presence_penalty = q->presence_penalty;
    j->sp.frequency_penalty = q->frequency_penalty;
    j->sp.penalty_last_n = q->repeat_last_n;
    j->sp.seed = q->has_seed ? q->seed : (uint64_t)(br_now() * 1e6);
    j->sp.bias = (const struct br_sample_bias *)q->logit_bias;
    j->sp.n_bias = (int32_t)q->n_logit_bias;
    j->sp.no_logprob = !j->req.logprobs;
    _Static_assert(sizeof(struct br_sample_bias) == sizeof(struct br_logit_bias),
                   "bias entries share a layout");
    int rc = br_sample_params_check(&j->sp, s->ex.vocab, err);
    if (rc) return rc;
    if (j->req.top_logprobs < 0 || j->req.top_logprobs > BR_REQ_MAX_TOP_LOGPROBS ||
        (j->req.top_logprobs > 0 && !j->req.logprobs))
        return br_err_set(err, BR_E_INVALID, "top_logprobs %d: must be in [0, %d], with logprobs",
                          j->req.top_logprobs, BR_REQ_MAX_TOP_LOGPROBS);
    /* the context question: max_tokens is lowered to the room after the prompt */
    j->max_new = j->req.max_tokens;
    if (j->max_new > s->max_tokens_cap) j->max_new = s->max_tokens_cap;
    int32_t room = s->ex.n_ctx - j->n_prompt;
    if (room < 1)
        return br_err_set(err, BR_E_TOO_LONG,
                          "the prompt has %d tokens; the context holds %d (prompt and at least "
                          "one generated token)",
                          j->n_prompt, s->ex.n_ctx);
    if (j->max_new > room) j->max_new = room;
    j->stop.tokens = q->stop_tokens;
    j->stop.n_tokens = (int32_t)q->n_stop_tokens;
    j->stop.n_strings = (int32_t)q->n_stop;
    j->stop.max_tokens = j->max_new;
    j->stop.strings = NULL; /* a copy of the array: job_free frees it, not the strings */
    if (q->n_stop) {
        const char **copy = malloc(q->n_stop * sizeof *copy);
        if (!copy) return br_err_set(err, BR_E_NOMEM, "out of memory");
        for (uint32_t i = 0; i < q->n_stop; i++) copy[i] = q->stop[i];
        j->stop.strings = copy;
    }
    j->hist = malloc(((size_t)j->n_prompt + (size_t)j->max_new + 1) * sizeof *j->hist);
    if (!j->hist || (s->tok && br_detok_create(s->tok, 0, &j->dt)))
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    memcpy(j->hist, j->prompt, (size_t)j->n_prompt * sizeof *j->hist);
    j->n_hist = j->n_prompt;
    j->blocks = blocks_for(j->n_prompt + j->max_new);
    if (j->blocks > s->ex.n_blocks)
        return br_err_set(err, BR_E_TOO_LONG,
                          "prompt and max_tokens need more KV cache than the server has");
    return BR_OK;
}

void br_sched_submit(struct br_sched *s, struct br_sched_job_in *in)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        struct job tmp = {.ticket = in->ticket, .req = in->req};
        emit_error(s, &tmp, BR_PROTO_INTERNAL, "out of memory");
        br_req_free(&in->req);
        free(in->prompt);
        memset(in, 0, sizeof *in);
        return;
    }
    j->ticket = in->ticket;
    j->req = in->req;
    j->prompt = in->prompt;
    j->n_prompt = in->n_prompt;
    j->t_arrival = in->t_arrival;
    j->ignore_eos = in->ignore_eos;
    j->key = in->key;
    j->keep = in->keep;
    j->slot = -1;
    memset(in, 0, sizeof *in);
    struct br_err err = {{0}};
    int rc = job_setup(s, j, &err);
    if (rc) {
        emit_error(s, j, br_proto_status_code(rc), err.msg);
        job_free(j);
        return;
    }
    atomic_fetch_add(&s->stats->tokens_in, j->n_prompt);
    if (s->waiting_tail)
        s->waiting_tail->next = j;
    else
        s->waiting = j;
    s->waiting_tail = j;
}

void br_sched_cancel(struct br_sched *s, uint64_t ticket)
{
    for (int32_t i = 0; i < s->ex.n_seq; i++)
        if (s->slots[i] && s->slots[i]->ticket == ticket) s->slots[i]->cancelled = 1;
    for (struct job *j = s->waiting; j; j = j->next)
        if (j->ticket == ticket) j->cancelled = 1;
}

bool br_sched_busy(const struct br_sched *s)
{
    if (s->waiting || s->count > 0) return true;
    for (int32_t i = 0; i < s->ex.n_seq; i++)
        if (s->slots[i]) return true;
    return false;
}

/* Appends a generated token's text and emits what is safe to stream. Returns non-zero
 * when a stop string ended the sequence. */
static int push_text(struct br_sched *s, struct job *j, int32_t token, const struct token_lp *lp)
{
    const char *piece = NULL;
    size_t len = 0;
    if (j->dt) br_detok_push(j->dt, token, &piece, &len);
    if (j->text_len + len + 1 > j->text_cap) {
        size_t cap = j->text_cap ? j->text_cap * 2 : 256;
        while (cap < j->text_len + len + 1) cap *= 2;
        char *nt = realloc(j->text, cap);
        if (!nt) return 1;
        j->text = nt;
        j->text_cap = cap;
    }
    if (len) memcpy(j->text + j->text_len, piece, len);
    j->text_len += len;
    j->text[j->text_len] = '\0';
    size_t upto = 0;
    enum br_sample_stop_reason r =
        br_sample_stop_text(&j->stop, j->text, j->text_len, j->emitted, &upto);
    if (upto < j->emitted) upto = j->emitted;
    if (j->req.stream)
        emit_token(s, j, (uint32_t)(j->n_gen - 1), token, j->text + j->emitted, upto - j->emitted,
                   lp);
    j->emitted = upto;
    return r == BR_SAMPLE_STOP_STRING;
}

/* At the end: whatever was held back (a partial stop-string prefix that never completed,
 * a trailing partial character) is flushed, except text cut by a stop string. */
static void flush_text(struct br_sched *s, struct job *j, int stopped_by_string)
{
    if (stopped_by_string) return;
    const char *piece = NULL;
    size_t len = 0;
    if (j->dt) br_detok_flush(j->dt, &piece, &len);
    if (len) {
        char *nt = realloc(j->text, j->text_len + len + 1);
        if (!nt) return;
        j->text = nt;
        j->text_cap = j->text_len + len + 1;
        memcpy(j->text + j->text_len, piece, len);
        j->text_len += len;
        j->text[j->text_len] = '\0';
    }
    if (j->text_len > j->emitted && j->req.stream)
        emit_token(s, j, (uint32_t)(j->n_gen ? j->n_gen - 1 : 0), -1, j->text + j->emitted,
                   j->text_len - j->emitted, NULL);
    j->emitted = j->text_len;
}

/* Housekeeping before composing: cancelled jobs end (unless a step in flight still
 * carries them), waiting jobs are admitted in order while a slot and their blocks are
 * free. */
static void admit(struct br_sched *s)
{
    for (struct job **pp = &s->waiting; *pp;) {
        struct job *j = *pp;
        if (j->cancelled) {
            *pp = j->next;
            if (s->waiting_tail == j) {
                s->waiting_tail = NULL;
                for (struct job *t = s->waiting; t; t = t->next) s->waiting_tail = t;
            }
            finish(s, j, BR_FINISH_CANCELLED, 0, NULL);
        } else {
            pp = &j->next;
        }
    }
    for (int32_t i = 0; i < s->ex.n_seq; i++)
        if (s->slots[i] && s->slots[i]->cancelled && !s->slots[i]->inflight) {
            flush_text(s, s->slots[i], 0);
            finish(s, s->slots[i], BR_FINISH_CANCELLED, 0, NULL);
        }
    while (s->waiting) {
        struct job *j = s->waiting;
        int32_t slot = -1, reuse = 0;
        for (int32_t i = 0; i < s->ex.n_seq && j->key && slot < 0; i++)
            if (s->kept[i].toks && s->kept[i].key == j->key) slot = i, reuse = s->kept[i].blocks;
        for (int32_t i = 0; i < s->ex.n_seq && slot < 0; i++)
            if (!s->slots[i] && !s->kept[i].toks) slot = i;
        if (slot < 0 || j->blocks > s->free_blocks + reuse) break;
        if (reuse) { /* continues its conversation: what the cache holds is not fed again */
            struct kept *k = &s->kept[slot];
            while (j->n_fed < k->n && j->n_fed < j->n_prompt - 1 &&
                   k->toks[j->n_fed] == j->prompt[j->n_fed])
                j->n_fed++;
            s->free_blocks += k->blocks;
            free(k->toks);
            *k = (struct kept){0};
        }
        s->waiting = j->next;
        if (!s->waiting) s->waiting_tail = NULL;
        j->next = NULL;
        j->slot = slot;
        j->state = JOB_PREFILL;
        j->t_admit = br_now();
        s->slots[slot] = j;
        s->free_blocks -= j->blocks;
        atomic_fetch_add(&s->stats->running, 1);
        atomic_store(&s->stats->kv_blocks_used, s->ex.n_blocks - s->free_blocks);
    }
}

/* Composes and issues one step; *issued 0 when there is nothing to do. */
static int issue(struct br_sched *s, int *issued, struct br_err *err)
{
    *issued = 0;
    int32_t budget = s->budget;
    struct inflight *st = &s->ring[(s->head + s->count) % BR_SCHED_MAX_INFLIGHT];
    int32_t n = 0, n_rows = 0;
    /* Micro-batches: with depth d steps in flight (one per pipeline stage), the decoding
     * sequences are dealt into d groups of at most ceil(n_decode / d), so that d steps
     * alternate through the stages instead of one step carrying every sequence while
     * the other stages wait for its tokens. */
    int32_t n_decode = 0;
    for (int32_t i = 0; i < s->ex.n_seq; i++) {
        const struct job *j = s->slots[i];
        n_decode += j && j->state == JOB_DECODE && !j->cancelled;
    }
    int32_t decode_cap = (n_decode + s->depth - 1) / s->depth;
    if (decode_cap > budget) decode_cap = budget;
    for (int32_t i = 0; i < s->ex.n_seq && n < decode_cap; i++) {
        struct job *j = s->slots[i];
        if (!j || j->state != JOB_DECODE || j->inflight || j->cancelled) continue;
        s->tokens[n] = j->next_token, s->pos[n] = j->n_prompt + j->n_gen - 1, s->seqs[n] = j->slot;
        st->row_job[n_rows] = j;
        s->rows[n_rows++] = n++;
        j->inflight = 1;
    }
    while (n < budget) {
        struct job *best = NULL;
        for (int32_t k = 0; k < s->ex.n_seq; k++) {
            struct job *j = s->slots[k];
            if (j && j->state == JOB_PREFILL && !j->cancelled && j->n_fed < j->n_prompt &&
                (!best || j->t_admit < best->t_admit))
                best = j;
        }
        if (!best) break;
        int32_t take = best->n_prompt - best->n_fed;
        if (take > budget - n) take = budget - n;
        for (int32_t t = 0; t < take; t++, n++)
            s->tokens[n] = best->prompt[best->n_fed + t], s->pos[n] = best->n_fed + t,
            s->seqs[n] = best->slot;
        best->n_fed += take;
        if (best->n_fed == best->n_prompt) {
            st->row_job[n_rows] = best;
            s->rows[n_rows++] = n - 1;
            best->state = JOB_DECODE; /* its first token comes from this step */
            best->inflight = 1;
        }
    }
    if (n == 0) return BR_OK;
    /* the sampling-mode decision, for the whole step */
    int plain = 1, full = 0;
    const struct br_sample_params *sp[BR_SCHED_MAX_BATCH];
    uint64_t rseq[BR_SCHED_MAX_BATCH], rpos[BR_SCHED_MAX_BATCH];
    for (int32_t r = 0; r < n_rows; r++) {
        const struct job *j = st->row_job[r];
        plain &= j->sp.temperature == 0 && !j->req.logprobs && j->sp.repeat_penalty == 1.0f &&
                 j->sp.presence_penalty == 0 && j->sp.frequency_penalty == 0 && j->sp.n_bias == 0;
        full |= j->req.top_logprobs > 0; /* alternatives are ranked over the whole row */
        sp[r] = &j->sp;
        rseq[r] = 0; /* the RNG is keyed by (seed, position), as in bitrack run */
        rpos[r] = (uint64_t)(j->n_prompt + j->n_gen);
    }
    enum br_sched_mode mode = plain ? BR_SCHED_TOP1
                              : !full && s->ex.can_sample && s->ex.can_sample(s->ex.ctx, sp, n_rows)
                                  ? BR_SCHED_SAMPLED
                                  : BR_SCHED_FULL;
    struct br_batch b = {n, s->tokens, s->pos, s->seqs, s->n_to_free, s->to_free};
    int sampled = mode == BR_SCHED_SAMPLED;
    int rc = s->ex.issue(s->ex.ctx, st->xs, &b, s->rows, n_rows, mode, sampled ? sp : NULL,
                         sampled ? rseq : NULL, sampled ? rpos : NULL, err);
    if (rc) {
        /* the rows stay marked in flight: nothing is issued after an executor error */
        s->broken = 1;
        return rc;
    }
    s->n_to_free = 0;
    st->n_rows = n_rows;
    st->mode = mode;
    s->count++;
    atomic_fetch_add(&s->stats->steps, 1);
    *issued = 1;
    return BR_OK;
}

/* Collects the oldest step in flight: samples each row and emits the events. */
static int collect(struct br_sched *s, struct br_err *err)
{
    struct inflight *st = &s->ring[s->head];
    int rc = s->ex.collect(s->ex.ctx, st->xs, st->n_rows, st->mode,
                           st->mode == BR_SCHED_FULL ? s->logits : NULL, s->top1, s->sres,
                           s->row_rc, err);
    s->head = (s->head + 1) % BR_SCHED_MAX_INFLIGHT;
    s->count--;
    if (rc) {
        s->broken = 1;
        return rc;
    }
    double now = br_now();
    for (int32_t r = 0; r < st->n_rows; r++) {
        struct job *j = st->row_job[r];
        j->inflight = 0;
        if (j->cancelled) {
            flush_text(s, j, 0);
            finish(s, j, BR_FINISH_CANCELLED, 0, NULL);
            continue;
        }
        int32_t tok = s->top1[r];
        struct token_lp lp;
        lp.logprob = 0.0f;
        lp.n_top = 0;
        if (st->mode == BR_SCHED_SAMPLED) {
            if (s->row_rc[r]) {
                finish(s, j, BR_FINISH_ERROR, BR_PROTO_INTERNAL,
                       "sampling failed on the last pipeline stage");
                continue;
            }
            tok = s->sres[r].token;
            lp.logprob = (float)s->sres[r].logprob;
        } else if (st->mode == BR_SCHED_FULL) {
            struct br_sample_result res;
            struct br_err serr = {{0}};
            const float *row = s->logits + (size_t)r * (size_t)s->ex.vocab;
            int src = br_sample_full(&j->sp, row, s->ex.vocab, j->hist, (size_t)j->n_hist, 0,
                                     (uint64_t)(j->n_prompt + j->n_gen), &s->ws, &res, &serr);
            if (!src && j->req.top_logprobs > 0) {
                /* the same logits, history and normaliser as the draw (sample.h) */
                src = br_sample_top(&j->sp, row, s->ex.vocab, j->hist, (size_t)j->n_hist,
                                    j->req.top_logprobs, &s->ws, lp.top, &serr);
                if (src >= 0) lp.n_top = src, src = BR_OK;
            }
            if (src) {
                finish(s, j, BR_FINISH_ERROR, BR_PROTO_INTERNAL, serr.msg);
                continue;
            }
            tok = res.token;
            lp.logprob = (float)res.logprob;
        }
        j->n_gen++;
        if (j->t_first == 0) j->t_first = now;
        j->hist[j->n_hist++] = tok;
        const struct token_lp *lpp = j->req.logprobs ? &lp : NULL;
        enum br_sample_stop_reason why = br_sample_stop_token(&j->stop, tok, j->n_gen);
        if (why == BR_SAMPLE_STOP_TOKEN ||
            (!j->ignore_eos && s->tok && br_tok_is_eog(s->tok, tok))) {
            /* a stop token is not part of the output */
            if (j->req.stream) emit_token(s, j, (uint32_t)(j->n_gen - 1), tok, "", 0, lpp);
            flush_text(s, j, 0);
            finish(s, j, BR_FINISH_STOP, 0, NULL);
            continue;
        }
        if (push_text(s, j, tok, lpp)) {
            flush_text(s, j, 1);
            finish(s, j, BR_FINISH_STOP, 0, NULL);
        } else if (why == BR_SAMPLE_STOP_LENGTH || j->n_gen >= j->max_new) {
            flush_text(s, j, 0);
            finish(s, j, BR_FINISH_LENGTH, 0, NULL);
        } else {
            j->next_token = tok;
        }
    }
    return BR_OK;
}

int br_sched_step(struct br_sched *s, struct br_err *err)
{
    if (s->broken) return br_err_set(err, BR_E_UNAVAILABLE, "the executor failed earlier");
    admit(s);
    while (s->count < s->depth) {
        int issued = 0;
        int rc = issue(s, &issued, err);
        if (rc) return rc;
        if (!issued) break;
    }
    return s->count > 0 ? collect(s, err) : BR_OK;
}

void br_sched_finish_all(struct br_sched *s, int executor_ok, enum br_proto_code code,
                         const char *why)
{
    struct br_err err = {{0}};
    while (executor_ok && !s->broken && s->count > 0)
        if (collect(s, &err)) break;
    s->count = 0;
    s->head = 0;
    for (int32_t i = 0; i < s->ex.n_seq; i++)
        if (s->slots[i]) {
            s->slots[i]->inflight = 0;
            finish(s, s->slots[i], BR_FINISH_ERROR, code, why);
        }
    while (s->waiting) {
        struct job *j = s->waiting;
        s->waiting = j->next;
        finish(s, j, BR_FINISH_ERROR, code, why);
    }
    s->waiting_tail = NULL;
}

int br_sched_create(const struct br_sched_opts *o, const struct br_executor *ex,
                    const struct br_sched_sink *sink, const struct br_tok *tok,
                    struct br_sched **out, struct br_err *err)
{
    *out = NULL;
    if (ex->max_batch < 1 || ex->n_seq < 1 || ex->n_ctx < 2 || ex->vocab < 1 || !ex->issue ||
        !ex->collect || !sink->emit)
        return br_err_set(err, BR_E_INVALID, "scheduler: an incomplete executor or sink");
    struct br_sched *s = calloc(1, sizeof *s);
    if (!s) return br_err_set(err, BR_E_NOMEM, "out of memory");
    s->ex = *ex;
    s->sink = *sink;
    s->tok = tok;
    s->stats = o->stats ? o->stats : &s->own_stats;
    s->max_tokens_cap = o->max_tokens_cap > 0 ? o->max_tokens_cap : 4096;
    s->budget =
        o->batch_tokens > 0 && o->batch_tokens < ex->max_batch ? o->batch_tokens : ex->max_batch;
    if (s->budget > BR_SCHED_MAX_BATCH) s->budget = BR_SCHED_MAX_BATCH;
    s->depth = ex->depth > 0 ? ex->depth : 1;
    if (o->micro_batches > 0 && o->micro_batches < s->depth) s->depth = o->micro_batches;
    if (s->depth > BR_SCHED_MAX_INFLIGHT) s->depth = BR_SCHED_MAX_INFLIGHT;
    s->free_blocks = ex->n_blocks;
    atomic_store(&s->stats->kv_blocks_total, ex->n_blocks);
    s->slots = calloc((size_t)ex->n_seq, sizeof *s->slots);
    s->to_free = calloc(2 * (size_t)ex->n_seq, sizeof *s->to_free);
    s->kept = calloc((size_t)ex->n_seq, sizeof *s->kept);
    s->logits = malloc((size_t)s->budget * (size_t)ex->vocab * sizeof *s->logits);
    size_t align = _Alignof(max_align_t), stride = (ex->step_bytes + align - 1) / align * align;
    if (stride) s->steps = calloc(BR_SCHED_MAX_INFLIGHT, stride);
    if (!s->slots || !s->to_free || !s->kept || !s->logits || (stride && !s->steps)) {
        br_sched_destroy(&s);
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    for (int i = 0; stride && i < BR_SCHED_MAX_INFLIGHT; i++)
        s->ring[i].xs = (char *)s->steps + (size_t)i * stride;
    *out = s;
    return BR_OK;
}

void br_sched_destroy(struct br_sched **sp)
{
    if (!sp || !*sp) return;
    struct br_sched *s = *sp;
    for (int32_t i = 0; s->slots && i < s->ex.n_seq; i++) job_free(s->slots[i]);
    for (int32_t i = 0; s->kept && i < s->ex.n_seq; i++) free(s->kept[i].toks);
    free(s->kept);
    while (s->waiting) {
        struct job *j = s->waiting;
        s->waiting = j->next;
        job_free(j);
    }
    free(s->slots);
    free(s->to_free);
    free(s->logits);
    free(s->steps);
    br_sample_ws_free(&s->ws);
    free(s);
    *sp = NULL;
}
