/*
 * Pre-tokenizer matchers (see tokenizer_pre.h). Each matcher takes the position of the
 * next unmatched character and returns the end of the match that the model's regex, an
 * alternation tried left to right with greedy quantifiers, would find there. Every
 * regex here has an alternative that matches any single character, so a match always
 * exists and is at least one character long; the split loops therefore make progress.
 *
 * Llama-3:  (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3}
 *           | ' '?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
 * GPT-2:    's|'t|'re|'ve|'m|'ll|'d | ' '?\p{L}+ | ' '?\p{N}+ | ' '?[^\s\p{L}\p{N}]+
 *           | \s+(?!\S) | \s+
 * Falcon:   three splits applied in turn, each keeping matches and the text between them
 *           as separate pieces: [\p{P}$+<=>^~|`]+, then GPT-2's regex, then [0-9]{3}.
 * The Llama-3 contractions fold case as Unicode regex engines do (simple case folding):
 * ASCII letters, and U+017F for s. Checked against Python's `regex` module on random
 * strings of letters, digits, marks, punctuation and every kind of space.
 */
#include "coordinator/tokenizer_pre.h"

#include <assert.h>

#include "coordinator/unicode.h"

static int is_nl(uint32_t cp)
{
    return cp == '\r' || cp == '\n';
}

/* [^\s\p{L}\p{N}]: punctuation and everything of class OTHER (invalid bytes included). */
static int is_rest(uint8_t cls)
{
    return cls == BR_UC_OTHER || cls == BR_UC_PUNCT;
}

static size_t run_of(const struct br_tok_chars *c, size_t i, size_t end, uint8_t cls)
{
    while (i < end && c->cls[i] == cls) i++;
    return i;
}

/* Case folding for the contractions: ASCII, plus U+017F (long s), the one non-ASCII
 * character whose simple case fold is one of the letters involved (s). */
static uint32_t fold_case(uint32_t cp, int fold)
{
    if (!fold) return cp;
    if (cp >= 'A' && cp <= 'Z') return cp + 32;
    return cp == 0x17F ? 's' : cp;
}

/* Length after the apostrophe at i of a contraction ('s 't 're 've 'm 'll 'd), 0 if none. */
static size_t contraction(const struct br_tok_chars *c, size_t i, size_t end, int fold)
{
    if (i + 1 >= end) return 0;
    uint32_t a = fold_case(c->cp[i + 1], fold);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 >= end) return 0;
    uint32_t b = fold_case(c->cp[i + 2], fold);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* The whitespace alternatives shared by both regexes, at a whitespace character i:
 * \s+(?!\S) keeps the last space of a run for the word after it; \s+ takes a lone one. */
static size_t match_space_tail(const struct br_tok_chars *c, size_t i, size_t end)
{
    size_t j = run_of(c, i, end, BR_UC_SPACE);
    if (j == end) return j;
    if (j - i >= 2) return j - 1;
    return i + 1;
}

static size_t match_llama3(const struct br_tok_chars *c, size_t i, size_t end)
{
    const uint32_t *cp = c->cp;
    const uint8_t *cls = c->cls;
    if (cp[i] == '\'') {
        size_t m = contraction(c, i, end, 1);
        if (m) return i + m;
    }
    if (cls[i] == BR_UC_LETTER) return run_of(c, i, end, BR_UC_LETTER);
    /* One character that is neither a newline, letter nor number may lead a letter run. */
    if (!is_nl(cp[i]) && cls[i] != BR_UC_NUMBER && i + 1 < end && cls[i + 1] == BR_UC_LETTER)
        return run_of(c, i + 1, end, BR_UC_LETTER);
    if (cls[i] == BR_UC_NUMBER) {
        size_t j = i;
        while (j < end && j < i + 3 && cls[j] == BR_UC_NUMBER) j++;
        return j;
    }
    size_t s = (cp[i] == ' ' && i + 1 < end && is_rest(cls[i + 1])) ? i + 1 : i;
    if (is_rest(cls[s])) {
        size_t j = s;
        while (j < end && is_rest(cls[j])) j++;
        while (j < end && is_nl(cp[j])) j++;
        return j;
    }
    assert(cls[i] == BR_UC_SPACE);
    /* \s*[\r\n]+ : the whitespace run up to and including its last newline. */
    size_t j = run_of(c, i, end, BR_UC_SPACE);
    for (size_t k = j; k > i; k--)
        if (is_nl(cp[k - 1])) return k;
    return match_space_tail(c, i, end);
}

static size_t match_gpt2(const struct br_tok_chars *c, size_t i, size_t end)
{
    const uint8_t *cls = c->cls;
    if (c->cp[i] == '\'') {
        size_t m = contraction(c, i, end, 0);
        if (m) return i + m;
    }
    size_t s = (c->cp[i] == ' ' && i + 1 < end && cls[i + 1] != BR_UC_SPACE) ? i + 1 : i;
    if (cls[s] == BR_UC_LETTER || cls[s] == BR_UC_NUMBER) return run_of(c, s, end, cls[s]);
    if (is_rest(cls[s])) {
        size_t j = s;
        while (j < end && is_rest(cls[j])) j++;
        return j;
    }
    assert(cls[i] == BR_UC_SPACE);
    return match_space_tail(c, i, end);
}

static int is_falcon_punct(const struct br_tok_chars *c, size_t i)
{
    uint32_t cp = c->cp[i];
    return c->cls[i] == BR_UC_PUNCT || cp == '$' || cp == '+' || cp == '<' || cp == '=' ||
           cp == '>' || cp == '^' || cp == '~' || cp == '|' || cp == '`';
}

static int is_digit(uint32_t cp)
{
    return cp >= '0' && cp <= '9';
}

/* Falcon's last split: every run of three ASCII digits, left to right, is its own piece. */
static int falcon_digits(const struct br_tok_chars *c, size_t i, size_t end, br_tok_word_fn word,
                         void *ctx)
{
    size_t piece = i;
    while (i + 3 <= end) {
        if (is_digit(c->cp[i]) && is_digit(c->cp[i + 1]) && is_digit(c->cp[i + 2])) {
            int rc;
            if (piece < i && (rc = word(ctx, c->off[piece], c->off[i]))) return rc;
            if ((rc = word(ctx, c->off[i], c->off[i + 3]))) return rc;
            i += 3;
            piece = i;
        } else {
            i++;
        }
    }
    return piece < end ? word(ctx, c->off[piece], c->off[end]) : 0;
}

static int split_falcon(const struct br_tok_chars *c, br_tok_word_fn word, void *ctx)
{
    size_t i = 0;
    while (i < c->n) {
        /* A segment is a punctuation run or the text up to the next one; the GPT-2 regex
         * then runs inside each segment as if it were the whole input. */
        int punct = is_falcon_punct(c, i);
        size_t seg_end = i + 1;
        while (seg_end < c->n && is_falcon_punct(c, seg_end) == punct) seg_end++;
        while (i < seg_end) {
            size_t j = match_gpt2(c, i, seg_end);
            int rc = falcon_digits(c, i, j, word, ctx);
            if (rc) return rc;
            i = j;
        }
    }
    return 0;
}

int br_tok_pre_split(enum br_tok_pre pre, const struct br_tok_chars *c, br_tok_word_fn word,
                     void *ctx)
{
    if (pre == BR_TOK_PRE_FALCON) return split_falcon(c, word, ctx);
    size_t i = 0;
    while (i < c->n) {
        size_t j = pre == BR_TOK_PRE_LLAMA3 ? match_llama3(c, i, c->n) : match_gpt2(c, i, c->n);
        assert(j > i && j <= c->n);
        int rc = word(ctx, c->off[i], c->off[j]);
        if (rc) return rc;
        i = j;
    }
    return 0;
}
