/*
 * When a generation ends: stop tokens, the length limit, and stop strings over the
 * generated text, which may straddle token boundaries. The sampler (worker/sample.h) picks
 * tokens; this decides, on the coordinator, when to stop and how much text is safe to
 * stream (never text that a stop string may still cut off, never half a character).
 */
#ifndef BITRACK_COORDINATOR_STOP_H
#define BITRACK_COORDINATOR_STOP_H

#include <stddef.h>
#include <stdint.h>

enum br_sample_stop_reason {
    BR_SAMPLE_STOP_NONE = 0,
    BR_SAMPLE_STOP_TOKEN,  /* a stop token (EOS, <|eot_id|>, ...) was sampled */
    BR_SAMPLE_STOP_LENGTH, /* max_tokens reached */
    BR_SAMPLE_STOP_STRING, /* a stop string appeared in the generated text */
};

struct br_sample_stop {
    const int32_t *tokens; /* (n_tokens,) stop token ids, borrowed */
    int32_t n_tokens;
    const char *const *strings; /* (n_strings,) NUL-terminated stop strings, borrowed;
                                   empty strings are ignored */
    int32_t n_strings;
    int32_t max_tokens; /* 0 = no limit */
};

/* After sampling `token`, the n_generated-th generated token (counting it): stop token
 * first, then the length limit. A stop token is not part of the output. */
enum br_sample_stop_reason br_sample_stop_token(const struct br_sample_stop *s, int32_t token,
                                                int32_t n_generated);

/*
 * Stop strings over the generated text so far, text (len,), which a stop string may
 * straddle token boundaries of. Matches are looked for starting at byte `from` or later
 * (pass the previous *emit_len: everything before it was already found free of matches
 * and sent).
 * Returns BR_SAMPLE_STOP_STRING when a stop string occurs: *emit_len is where the earliest
 * one starts; emit up to there and finish. Otherwise BR_SAMPLE_STOP_NONE and *emit_len is
 * how far the text can safely be streamed: it holds back the longest tail that is a proper
 * prefix of a stop string (it may still become one), and an incomplete UTF-8 sequence at
 * the end, so a client never receives text later cut off or half a character.
 */
enum br_sample_stop_reason br_sample_stop_text(const struct br_sample_stop *s, const char *text,
                                               size_t len, size_t from, size_t *emit_len);

#endif
