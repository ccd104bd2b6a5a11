/*
 * The inside of struct br_tok, shared by the tokenizer's source files only (tokenizer.c
 * builds and uses it, tokenizer_gguf.c fills parameters for it). Not part of the API.
 */
#ifndef BR_COORDINATOR_TOKENIZER_INTERNAL_H
#define BR_COORDINATOR_TOKENIZER_INTERNAL_H

#include <stdint.h>

#include "coordinator/tokenizer.h"
#include "coordinator/tokenizer_pre.h"

/* Merge table slots pack (left + 1) << 44 | right << 24 | rank into 64 bits (0 = empty),
 * half the size of a struct, because BPE speed is bound by cache misses on this table. */
#define BR_TOK_MERGE_MAX_TOKENS ((1 << 20) - 1)
#define BR_TOK_MERGE_MAX_MERGES (1 << 24)
#define BR_TOK_MERGE_RANK_MASK  ((uint64_t)(BR_TOK_MERGE_MAX_MERGES - 1))
#define BR_TOK_MAX_EOG          16

struct br_tok_slot { /* vocabulary hash table entry; id -1 = empty */
    uint32_t tag;    /* 24 hash bits above the length (255 for 255 and longer), so most
                        mismatches are rejected without touching the token text */
    int32_t id;
};

struct br_tok {
    enum br_tok_model model;
    enum br_tok_pre pre;
    int32_t n_tokens;
    int ignore_merges;    /* BPE: a word that is a token is taken whole */
    int add_bos, add_eos; /* what the model asks for; applied on BR_TOK_ADD_BOS/EOS */
    int add_space_prefix; /* SPM only */
    int32_t bos, eos, eot, unk, pad;

    char *text;          /* token texts, concatenated */
    uint32_t *text_off;  /* (n_tokens + 1,) */
    uint8_t *type;       /* (n_tokens,) enum br_tok_type */
    float *scores;       /* (n_tokens,) */
    char *piece;         /* decoded bytes of every token, concatenated */
    uint32_t *piece_off; /* (n_tokens + 1,) */

    struct br_tok_slot *vocab; /* (vocab_mask + 1,) */
    size_t vocab_mask;
    uint64_t *merge; /* (merge_mask + 1,) packed slots, BPE only */
    size_t merge_mask;
    int32_t *merge_res; /* (n_merges,) merged id by rank */
    int32_t *byte_pair; /* (65536, 2) BPE: rank and merged id of the pair of bytes
                           (b0, b1) as first symbols (rank INT32_MAX: none); a dense
                           copy of the hottest lookups, small enough to stay in cache */

    int32_t byte_id[256];    /* BPE: the token of byte b's character; SPM: <0xXX>; -1 */
    uint8_t byte_cp[256][2]; /* BPE: UTF-8 of byte b's character */
    uint8_t byte_cp_len[256];
    int16_t byte_of_cp[512]; /* inverse of the byte map; -1 elsewhere */

    struct br_tok_slot *spec; /* (spec_mask + 1,) control, unknown and user-defined tokens */
    size_t spec_mask;
    uint32_t *spec_len; /* (n_spec_len,) their distinct lengths, longest first */
    size_t n_spec_len;
    uint8_t first_byte[256]; /* bit 0: a special token starts with this byte; bit 1: a
                                user-defined one does; bit 2: a one-byte one is this byte */
    uint8_t spec_pair[8192]; /* bit set of the first two bytes of the longer ones */
    int has_user_defined;

    int32_t eog[BR_TOK_MAX_EOG];
    size_t n_eog;
};

/* Pre-tokenizer from its name (NULL: chosen from the vocabulary; see tokenizer.h). */
int br_tok_resolve_pre(const char *name, int32_t n_tokens, const char *const *tokens,
                       const size_t *lens, enum br_tok_pre *pre, struct br_err *err);

#endif
