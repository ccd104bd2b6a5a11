/*
 * Pre-tokenizers of byte-level BPE (internal to the tokenizer module): they cut text into
 * the words that BPE merges within, following the regular expressions the models were
 * trained with, written out as hand-made matchers over decoded characters.
 *
 * Input is a fragment decoded into parallel arrays (see struct br_tok_chars); output is a
 * call of `word` for each word, in order, with byte offsets into the fragment. The words
 * cover the fragment exactly: no byte is dropped or repeated.
 */
#ifndef BR_COORDINATOR_TOKENIZER_PRE_H
#define BR_COORDINATOR_TOKENIZER_PRE_H

#include <stddef.h>
#include <stdint.h>

enum br_tok_pre {
    BR_TOK_PRE_GPT2 = 0, /* GPT-2's regex (also "default") */
    BR_TOK_PRE_LLAMA3,   /* Llama-3's regex (also Falcon3, Falcon-Edge) */
    BR_TOK_PRE_FALCON,   /* Falcon: punctuation runs, then GPT-2's regex, then digit triples */
};

/* A fragment of n characters: cp[i] code point (or BR_UC_INVALID_BASE + byte), cls[i]
 * its enum br_uc_class, off[i] its byte offset (off[n] = the fragment's byte length). */
struct br_tok_chars {
    size_t n;
    uint32_t *cp;  /* (n,) */
    uint8_t *cls;  /* (n,) */
    uint32_t *off; /* (n + 1,); fragments are shorter than 2^31 bytes */
};

/* Called once per word with its byte range [begin, end); a nonzero return stops the split
 * and is returned by br_tok_pre_split. */
typedef int (*br_tok_word_fn)(void *ctx, size_t begin, size_t end);

int br_tok_pre_split(enum br_tok_pre pre, const struct br_tok_chars *c, br_tok_word_fn word,
                     void *ctx);

#endif
