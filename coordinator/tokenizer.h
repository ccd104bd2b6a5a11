/*
 * Tokenizers for the models bitrack runs: byte-level BPE (GGUF `tokenizer.ggml.model` =
 * "gpt2": Llama-3, Falcon, GPT-2 style vocabularies) and SentencePiece-style BPE ("llama":
 * Llama-1/2 and the 32002-token BitNet models). Format facts: docs/FORMATS.md §5.
 *
 * A struct br_tok is immutable after creation, so one object may be shared by any number
 * of threads. It copies everything it needs from the parameters; memory use is bounded
 * by the vocabulary and merge list (no caches that grow with use). Every call allocates
 * its own scratch, proportional to the input it is given.
 *
 * Any byte string can be encoded: byte-level BPE covers all 256 bytes, and SentencePiece
 * falls back to <0xXX> byte tokens (or the unknown token) for characters and invalid
 * bytes it has no piece for.
 */
#ifndef BR_COORDINATOR_TOKENIZER_H
#define BR_COORDINATOR_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"

struct br_gguf;

enum br_tok_model {
    BR_TOK_MODEL_BPE = 1, /* byte-level BPE, GGUF "gpt2" */
    BR_TOK_MODEL_SPM = 2, /* SentencePiece BPE with scores, GGUF "llama" */
};

/* GGUF tokenizer.ggml.token_type values. */
enum br_tok_type {
    BR_TOK_TYPE_NORMAL = 1,
    BR_TOK_TYPE_UNKNOWN = 2,
    BR_TOK_TYPE_CONTROL = 3,
    BR_TOK_TYPE_USER_DEFINED = 4,
    BR_TOK_TYPE_UNUSED = 5,
    BR_TOK_TYPE_BYTE = 6,
};

/* Everything a tokenizer is built from, as plain arrays (borrowed: br_tok_create copies
 * what it keeps). Call br_tok_params_init first: it sets the ids to -1 and the tri-state
 * flags to -1 ("model default"). */
struct br_tok_params {
    enum br_tok_model model;
    /* Pre-tokenizer (BPE only): "llama-bpe" (aliases llama3, llama-v3, falcon3, falcon_e,
     * falcon-h1), "default"/"gpt-2"/"gpt2", "falcon". NULL: the Llama-3 rules when the
     * vocabulary is the Llama-3 one (<|begin_of_text|> at id 128000), else GPT-2's. An
     * unknown name is BR_E_UNSUPPORTED. */
    const char *pre;
    int32_t n_tokens;
    const char *const *tokens;  /* (n_tokens,) token text as stored in the file */
    const size_t *token_lens;   /* (n_tokens,) byte lengths, or NULL for strlen */
    const float *scores;        /* (n_tokens,) SPM merge scores, or NULL (all 0) */
    const int32_t *token_types; /* (n_tokens,) enum br_tok_type, or NULL (all normal) */
    size_t n_merges;
    const char *const *merges; /* (n_merges,) "left right", highest priority first (BPE) */
    const size_t *merge_lens;  /* (n_merges,) or NULL for strlen */
    int32_t bos_id, eos_id, eot_id, unk_id, pad_id; /* -1: none (eot -1: looked up by
                                                       name, e.g. <|eot_id|>) */
    int add_bos;          /* -1: true for SPM and Llama-3 rules, false otherwise */
    int add_eos;          /* -1: false */
    int add_space_prefix; /* SPM: -1: true (a space is put before the text) */
};

void br_tok_params_init(struct br_tok_params *p);

struct br_tok;

/* Builds a tokenizer; on success *out owns it (free with br_tok_destroy). Bad parameters
 * (ids out of range, a token over 4096 bytes, a malformed merge) are BR_E_INVALID with a
 * message. */
int br_tok_create(const struct br_tok_params *p, struct br_tok **out, struct br_err *err);

/* Builds a tokenizer from a GGUF file's tokenizer.ggml.* keys. Missing special ids take
 * the model's defaults (SPM: bos 1, eos 2, unk 0; the Llama-3 vocabulary: bos 128000,
 * eos 128001). BR_E_NOTFOUND if the file has no tokenizer, BR_E_FORMAT for bad keys. */
int br_tok_from_gguf(const struct br_gguf *g, struct br_tok **out, struct br_err *err);

/* NULL-safe; NULLs the caller's pointer. */
void br_tok_destroy(struct br_tok **t);

/* Encode flags.
 * BR_TOK_ADD_BOS: prepend BOS if the model asks for it (add_bos); pass it for the start of
 *   a prompt, not for text that continues a sequence.
 * BR_TOK_ADD_EOS: append EOS if the model asks for it (add_eos).
 * BR_TOK_PARSE_SPECIAL: control tokens (<|eot_id|>, <s>) and the unknown token written in
 *   the text become their ids; without it they are ordinary text. User-defined tokens
 *   (type 4) are always matched, as their vocabularies intend.
 * BR_TOK_FORCE_HEAP: for tests, always use the heap merge path of byte-level BPE. */
#define BR_TOK_ADD_BOS       1u
#define BR_TOK_ADD_EOS       2u
#define BR_TOK_PARSE_SPECIAL 4u
#define BR_TOK_FORCE_HEAP    256u

/* Tokenizes text[0..len) (any bytes). On success *ids is a malloc'd array of *n_ids ids
 * that the caller frees (it may be NULL when *n_ids is 0). */
int br_tok_encode(const struct br_tok *t, const char *text, size_t len, unsigned flags,
                  int32_t **ids, size_t *n_ids, struct br_err *err);

/* Decode flags.
 * BR_TOK_DECODE_SPECIAL: render control and unknown tokens as their text (else control
 *   tokens produce nothing and the unknown token U+FFFD).
 * BR_TOK_DECODE_KEEP_SPACE: br_tok_decode, SPM: keep the space the encoder put before
 *   the text (by default it is removed from the first piece, so decode(encode(s)) == s).
 * BR_TOK_DECODE_STRIP_SPACE: br_detok, SPM: remove that space from the first piece (by
 *   default a stream is taken to continue a prompt, so its first space is real text). */
#define BR_TOK_DECODE_SPECIAL     1u
#define BR_TOK_DECODE_KEEP_SPACE  2u
#define BR_TOK_DECODE_STRIP_SPACE 4u

/* ids -> bytes. *text is malloc'd, NUL-terminated (the bytes may contain NULs: use *len);
 * the caller frees it. An id out of range is BR_E_RANGE. */
int br_tok_decode(const struct br_tok *t, const int32_t *ids, size_t n_ids, unsigned flags,
                  char **text, size_t *len, struct br_err *err);

/* The bytes token id stands for (Ġ and ▁ already turned into spaces, <0x0A> into a
 * newline; control tokens give their text). Points into t; BR_E_RANGE for a bad id. */
int br_tok_piece(const struct br_tok *t, int32_t id, const char **ptr, size_t *len);

/* The token's text as stored in the vocabulary (NULL/0 for a bad id). */
const char *br_tok_text(const struct br_tok *t, int32_t id, size_t *len);

int32_t br_tok_n_vocab(const struct br_tok *t);
int32_t br_tok_bos(const struct br_tok *t); /* -1 when none */
int32_t br_tok_eos(const struct br_tok *t);
int32_t br_tok_eot(const struct br_tok *t);
enum br_tok_model br_tok_model(const struct br_tok *t);
/* Name of the pre-tokenizer in use ("llama3", "gpt2", "falcon"; "spm" for SentencePiece). */
const char *br_tok_pre_name(const struct br_tok *t);
/* Token type (enum br_tok_type); 0 for a bad id. */
int br_tok_type(const struct br_tok *t, int32_t id);
/* Token id of an exact vocabulary string, or -1. */
int32_t br_tok_lookup(const struct br_tok *t, const char *text, size_t len);

/* End of generation: EOS, EOT and control tokens such as <|eot_id|>, <|end_of_text|>,
 * <|im_end|>, <|endoftext|>, <|eom_id|>, <end_of_turn>. */
bool br_tok_is_eog(const struct br_tok *t, int32_t id);

/* Streaming detokenizer: turns generated ids into text as they arrive, emitting only
 * whole UTF-8 characters (a token that ends inside a character emits the part before it;
 * the rest waits for the next token). Bytes that can never form a valid character are
 * passed through as they are. It borrows t, which must outlive it. */
struct br_detok;

/* flags: BR_TOK_DECODE_SPECIAL, BR_TOK_DECODE_STRIP_SPACE (for a stream that starts a
 * text rather than continuing a prompt; the removal applies to the first piece after
 * creation or a flush). */
int br_detok_create(const struct br_tok *t, unsigned flags, struct br_detok **out);
/* Adds one id; *out and *len receive the bytes now complete (valid until the next call on d;
 * *len may be 0). BR_E_RANGE for a bad id. */
int br_detok_push(struct br_detok *d, int32_t id, const char **out, size_t *len);
/* Emits whatever is held back (an unfinished character's bytes) and resets d for reuse. */
void br_detok_flush(struct br_detok *d, const char **out, size_t *len);
void br_detok_destroy(struct br_detok **d);

#endif
