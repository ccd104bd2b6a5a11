/*
 * Token sampling, shaped for a vocabulary split across ranks.
 *
 * The last pipeline stage holds the output head split by vocabulary rows; each of its
 * ranks sees only the logits of its slice [v0, v1). br_sample_candidates() turns a slice
 * into a few candidates plus per-chunk softmax statistics; br_sample_merge() on the
 * coordinator picks the token from all slices' candidates. The token, its logit and its
 * logprob are bit-identical for every way of splitting the vocabulary, including no split
 * (br_sample_full()). Nothing here keeps state: a draw is a function of the parameters,
 * the logits, the history and (seed, seq, pos), through the counter RNG of rng.h.
 *
 * Pipeline, in this order:
 *   1. logit bias      l += sum of the biases given for the token (-inf bans it)
 *   2. penalties       over the last penalty_last_n history tokens, once per distinct
 *                      token seen c times (llama.cpp's definitions):
 *                      repetition: l = l > 0 ? l / r : l * r;
 *                      then l -= c * frequency + (c > 0) * presence
 *   3. greedy          if temperature == 0: argmax, ties to the lowest id; stop here
 *   4. top-k           keep the k best (order: logit descending, then id ascending)
 *   5. top-p           keep the shortest head whose probability reaches top_p; the
 *                      probabilities are softmax(l) over the top-k set when top-k is on,
 *                      else over the whole vocabulary
 *   6. min-p           keep tokens with p >= min_p * p_max
 *   7. temperature     and draw: argmax over the kept set of l / T + Gumbel(seed, seq,
 *                      pos, token id) (br_rng_token_gumbel), which samples softmax(l / T)
 *                      restricted to the set
 * The reported logprob is log softmax(l) at temperature 1 over the whole vocabulary, of
 * the logits after steps 1-2 (the distribution the sampler works from).
 *
 * Exactness under splitting:
 *  - greedy: each slice sends its best token; the best of the bests is the argmax.
 *  - temperature with no truncation (top_k 0, top_p 1, min_p 0): Gumbel-max over the whole
 *    vocabulary; each slice sends its own Gumbel winner, and the winner of winners is the
 *    global one because every token's key depends only on its id.
 *  - with top-k/top-p/min-p: each slice sends its C best tokens by logit, C = top_k when
 *    top-k is on, else cand_cap (default 64). The global C best are among the union, so
 *    every step works on the same set as an unsplit run. top-p and min-p only ever keep a
 *    head of the sorted order, so with top-k on they are exact. With top-k off they are
 *    exact whenever the kept set has at most cand_cap tokens; a nucleus (or min-p set)
 *    larger than cand_cap is truncated to the cand_cap most likely tokens, for every
 *    layout alike.
 *  - logprob and the top-p normaliser need the global softmax sum. Each slice reports,
 *    per fixed 256-token chunk (BR_SAMPLE_CHUNK, aligned to global ids), the chunk's max
 *    and sum of exp(l - max); merge folds the chunks in chunk order (docs/ARCHITECTURE.md
 *    "Exactness" rule 2). Slices must therefore start on a chunk boundary.
 *  - all ranks run the same binary: bit-identity assumes the same libm (exp, log, expf).
 * The logprob carries the rounding of the float chunk sums: accurate to about 1e-7.
 */
#ifndef BITRACK_WORKER_SAMPLE_H
#define BITRACK_WORKER_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"

#define BR_SAMPLE_CHUNK            256 /* softmax statistics granularity, in tokens */
#define BR_SAMPLE_DEFAULT_CAND_CAP 64  /* candidates per slice when top-k is off */

/* One logit bias entry; bias -INFINITY bans the token. Entries for the same id add up. */
struct br_sample_bias {
    int32_t id;
    float bias;
};

struct br_sample_params {
    float temperature;                 /* 0 = greedy; > 0 samples softmax(l / T) */
    int32_t top_k;                     /* 0 = off */
    float top_p;                       /* 1 = off; in [0, 1], 0 keeps the best token */
    float min_p;                       /* 0 = off; in [0, 1] */
    float repeat_penalty;              /* 1 = off; > 0 */
    float presence_penalty;            /* 0 = off */
    float frequency_penalty;           /* 0 = off */
    int32_t penalty_last_n;            /* history window for penalties: -1 = all, 0 = none */
    const struct br_sample_bias *bias; /* (n_bias,), borrowed; may be NULL when n_bias 0 */
    int32_t n_bias;
    int32_t cand_cap; /* candidates per slice when top-k is off and top-p/min-p on */
    uint64_t seed;
    /* 1: nobody reads the result's logprob, so the softmax sums over the vocabulary (an
     * exp per logit) are skipped unless top-p needs them; logprob is then NaN. The token
     * is the same either way. */
    int32_t no_logprob;
};

/* The defaults: greedy, no truncation, penalties off with a 64-token window, no bias,
 * cand_cap 64, seed 0. */
void br_sample_params_default(struct br_sample_params *p);

/* Checks ranges (and that bias ids fall in [0, n_vocab)); BR_E_INVALID with the field
 * named. The other functions assume checked parameters. */
int br_sample_params_check(const struct br_sample_params *p, int32_t n_vocab, struct br_err *err);

/* A candidate sent by a slice: token id, its logit after bias and penalties, and its
 * Gumbel-perturbed key l / T + Gumbel(seed, seq, pos, id) (-inf when greedy). */
struct br_cand {
    int32_t id;
    float logit;
    double key;
};

/* Softmax statistics of one 256-token chunk: max logit and sum of exp(logit - max),
 * accumulated in double and rounded once (sum 0 and max -inf when every token of the
 * chunk is banned). 8 bytes per 256 tokens: 4 KB per sampled token for a 128K vocabulary,
 * against 1 KB of candidates per slice and 512 KB of full logits. */
struct br_sample_chunk_stat {
    float max;
    float sum;
};

/* How many candidates one slice may produce for these parameters (size of `out`). */
int32_t br_sample_max_candidates(const struct br_sample_params *p);

/* How many chunk statistics a slice [v0, v1) produces (size of `stats`). */
int32_t br_sample_n_chunks(int32_t v0, int32_t v1);

/*
 * Candidates of one vocabulary slice.
 *   logits  (v1 - v0,) raw logits of tokens v0 .. v1-1; not modified
 *   history (n_history,) token ids generated or prompted so far (for penalties); may be
 *           NULL when n_history is 0
 *   out     (max_out,) receives the candidates, sorted by logit descending then id
 *   stats   (br_sample_n_chunks(v0, v1),) receives the chunk statistics
 * v0 must be a multiple of BR_SAMPLE_CHUNK; max_out >= min(br_sample_max_candidates(p),
 * v1 - v0). Returns the number of candidates (>= 1), or a negative status: BR_E_INVALID
 * for bad arguments, BR_E_RANGE for a NaN or +inf logit, BR_E_NOMEM.
 */
int br_sample_candidates(const struct br_sample_params *p, const float *logits, int32_t v0,
                         int32_t v1, const int32_t *history, size_t n_history, uint64_t seq,
                         uint64_t pos, struct br_cand *out, int32_t max_out,
                         struct br_sample_chunk_stat *stats, struct br_err *err);

/* What one slice produced, as the coordinator received it (all borrowed). */
struct br_sample_slice {
    int32_t v0, v1;
    const struct br_cand *cands; /* (n_cands,) */
    int32_t n_cands;
    const struct br_sample_chunk_stat *stats; /* (br_sample_n_chunks(v0, v1),) */
};

struct br_sample_result {
    int32_t token;
    int32_t n_kept; /* size of the set drawn from (vocabulary size when untruncated) */
    float logit;    /* the token's logit after bias and penalties */
    double logprob; /* log softmax at temperature 1 over the whole vocabulary */
};

/* Working memory of br_sample_merge and br_sample_full, kept by a caller that samples
 * row after row so that sampling allocates nothing once the buffers have grown to the
 * largest row: zero-initialise, pass to every call, free with br_sample_ws_free. */
struct br_sample_ws {
    struct br_cand *all; /* (all_cap,) merge: every slice's candidates */
    size_t all_cap;
    struct br_cand *cands; /* (cands_cap,) full: the one slice's candidates */
    size_t cands_cap;
    struct br_sample_chunk_stat *stats; /* (stats_cap,) full: its chunk statistics */
    size_t stats_cap;
};
/* NULL-safe; leaves ws zeroed. */
void br_sample_ws_free(struct br_sample_ws *ws);

/*
 * Picks the token from the slices' candidates. slices (n_slices,) must be in vocabulary
 * order and cover [0, n_vocab) contiguously. ws: working memory (NULL: allocated and
 * freed in the call). Returns BR_OK, BR_E_INVALID (malformed slices, or every token
 * banned), BR_E_NOMEM.
 */
int br_sample_merge(const struct br_sample_params *p, const struct br_sample_slice *slices,
                    int32_t n_slices, struct br_sample_ws *ws, struct br_sample_result *res,
                    struct br_err *err);

/* The unsplit case: candidates over [0, n_vocab) and merge. logits (n_vocab,); ws as for
 * br_sample_merge. */
int br_sample_full(const struct br_sample_params *p, const float *logits, int32_t n_vocab,
                   const int32_t *history, size_t n_history, uint64_t seq, uint64_t pos,
                   struct br_sample_ws *ws, struct br_sample_result *res, struct br_err *err);

#endif
