/*
 * Tokenizer construction, encoding and decoding (API and behaviour: tokenizer.h).
 *
 * Layout of struct br_tok: token texts live in one arena (text/text_off) and so do their
 * decoded bytes (piece/piece_off); a string -> id hash table serves vocabulary lookups
 * and, for byte-level BPE, a (left id, right id) -> (rank, merged id) table serves merges.
 * Both tables are open-addressed with linear probing, sized to a power of two at least
 * 1.5 times their contents, so a probe ends at an empty slot quickly.
 *
 * Byte-level BPE (merge ranks): a word's bytes start as the ids of their GPT-2 byte
 * characters, then the lowest-ranked adjacent pair is merged (the leftmost on ties) until
 * no pair has a merge. Short words scan an array with cached pair ranks; long words use a
 * linked list and a binary heap of candidate pairs, validated when popped, so a 1 MB word
 * costs O(n log n). With the Llama-3 rules a word found whole in the vocabulary is taken
 * as it is (as tiktoken does).
 *
 * SentencePiece BPE (scores): the text (with ' ' before it and spaces as U+2581) starts as
 * one symbol per character; the adjacent pair whose concatenation is a token with the
 * highest score merges first (the leftmost on ties), via the same heap technique. Symbols
 * left without a token become <0xXX> byte tokens, or the unknown token.
 *
 * Only NORMAL and USER_DEFINED tokens (and type 0, which some writers use for normal) can
 * come out of text; control, byte, unknown and unused tokens are reached only through
 * special-token parsing, byte fallback or the unknown rule.
 */
#include "coordinator/tokenizer.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/tokenizer_internal.h"
#include "coordinator/tokenizer_pre.h"
#include "coordinator/unicode.h"

/* ---- hashing and tables ---- */

static uint64_t hash_bytes(const uint8_t *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0; /* the tail, byte by byte: a variable-length memcpy is a libc call */
    for (size_t i = 0; i < n; i++) v |= (uint64_t)s[i] << (8 * i);
    h = (h ^ v) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
    return h;
}

static uint64_t hash_pair(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    key ^= key >> 31;
    key *= 0xBF58476D1CE4E5B9ull;
    key ^= key >> 29;
    return key;
}

static size_t table_size(size_t n)
{
    size_t cap = 16;
    while (cap < n + n / 2) cap *= 2; /* load at most 2/3: short probes, small tables */
    return cap;
}

static inline uint32_t slot_tag(uint64_t h, size_t len)
{
    return ((uint32_t)(h >> 32) & 0xFFFFFF00u) | (uint32_t)(len < 255 ? len : 255);
}

/* Lookup in a string table (the vocabulary, or the special tokens) with the hash of text
 * already computed. */
static int32_t table_find(const struct br_tok *t, const struct br_tok_slot *tab, size_t mask,
                          const char *text, size_t len, uint64_t h)
{
    uint32_t tag = slot_tag(h, len);
    size_t i = (size_t)h & mask;
    for (;;) {
        const struct br_tok_slot *s = &tab[i];
        if (s->id < 0) return -1;
        if (s->tag == tag && (len < 255 || t->text_off[s->id + 1] - t->text_off[s->id] == len) &&
            memcmp(t->text + t->text_off[s->id], text, len) == 0)
            return s->id;
        i = (i + 1) & mask;
    }
}

int32_t br_tok_lookup(const struct br_tok *t, const char *text, size_t len)
{
    return table_find(t, t->vocab, t->vocab_mask, text, len,
                      hash_bytes((const uint8_t *)text, len));
}

/* Inserts id unless its text is already present (the first id of a duplicate wins). */
static void table_insert(struct br_tok *t, struct br_tok_slot *tab, size_t mask, int32_t id)
{
    const char *s = t->text + t->text_off[id];
    size_t len = t->text_off[id + 1] - t->text_off[id];
    uint64_t h = hash_bytes((const uint8_t *)s, len);
    if (table_find(t, tab, mask, s, len, h) >= 0) return;
    size_t i = (size_t)h & mask;
    while (tab[i].id >= 0) i = (i + 1) & mask;
    tab[i].tag = slot_tag(h, len);
    tab[i].id = id;
}

/* Merge of (l, r): its rank and result in *rank and *id; 0 when the pair has none. */
static inline int merge_find(const struct br_tok *t, int32_t l, int32_t r, int32_t *rank,
                             int32_t *id)
{
    if (l < 0 || r < 0) return 0;
    uint64_t key = ((uint64_t)(l + 1) << 44) | ((uint64_t)r << 24);
    size_t i = (size_t)hash_pair(key) & t->merge_mask;
    for (;;) {
        uint64_t m = t->merge[i];
        if ((m & ~BR_TOK_MERGE_RANK_MASK) == key) {
            *rank = (int32_t)(m & BR_TOK_MERGE_RANK_MASK);
            *id = t->merge_res[*rank];
            return 1;
        }
        if (m == 0) return 0;
        i = (i + 1) & t->merge_mask;
    }
}

static void merge_insert(struct br_tok *t, int32_t l, int32_t r, int32_t rank, int32_t id)
{
    uint64_t key = ((uint64_t)(l + 1) << 44) | ((uint64_t)r << 24);
    size_t i = (size_t)hash_pair(key) & t->merge_mask;
    while (t->merge[i] != 0) {
        if ((t->merge[i] & ~BR_TOK_MERGE_RANK_MASK) == key) return; /* first rank stays */
        i = (i + 1) & t->merge_mask;
    }
    t->merge[i] = key | (uint64_t)rank;
    t->merge_res[rank] = id;
}

/* ---- construction ---- */

void br_tok_params_init(struct br_tok_params *p)
{
    memset(p, 0, sizeof *p);
    p->model = BR_TOK_MODEL_BPE;
    p->bos_id = p->eos_id = p->eot_id = p->unk_id = p->pad_id = -1;
    p->add_bos = p->add_eos = p->add_space_prefix = -1;
}

static int text_producible(int type)
{
    return type == 0 || type == BR_TOK_TYPE_NORMAL || type == BR_TOK_TYPE_USER_DEFINED;
}

/* GPT-2's byte <-> character mapping: printable Latin-1 bytes stand for themselves, the
 * other 68 (controls, space, DEL, NBSP, soft hyphen...) take U+0100 onwards in order. */
static void build_byte_map(struct br_tok *t)
{
    uint32_t next = 256;
    for (int i = 0; i < 512; i++) t->byte_of_cp[i] = -1;
    for (uint32_t b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        uint32_t cp = printable ? b : next++;
        t->byte_cp_len[b] = (uint8_t)br_uc_encode(cp, t->byte_cp[b]);
        t->byte_of_cp[cp] = (int16_t)b;
    }
}

int br_tok_resolve_pre(const char *name, int32_t n_tokens, const char *const *tokens,
                       const size_t *lens, enum br_tok_pre *pre, struct br_err *err)
{
    if (!name) {
        static const char bot[] = "<|begin_of_text|>";
        *pre = BR_TOK_PRE_GPT2;
        if (n_tokens > 128000) {
            size_t len = lens ? lens[128000] : strlen(tokens[128000]);
            if (len == sizeof bot - 1 && memcmp(tokens[128000], bot, len) == 0)
                *pre = BR_TOK_PRE_LLAMA3;
        }
        return BR_OK;
    }
    static const char *const llama3[] = {"llama-bpe", "llama3",   "llama-v3",
                                         "falcon3",   "falcon_e", "falcon-h1"};
    for (size_t i = 0; i < sizeof llama3 / sizeof llama3[0]; i++)
        if (strcmp(name, llama3[i]) == 0) return *pre = BR_TOK_PRE_LLAMA3, BR_OK;
    if (!strcmp(name, "default") || !strcmp(name, "gpt-2") || !strcmp(name, "gpt2"))
        return *pre = BR_TOK_PRE_GPT2, BR_OK;
    if (!strcmp(name, "falcon")) return *pre = BR_TOK_PRE_FALCON, BR_OK;
    return br_err_set(err, BR_E_UNSUPPORTED, "tokenizer: unknown pre-tokenizer \"%s\"", name);
}

static int check_id(int32_t id, int32_t n, const char *what, struct br_err *err)
{
    if (id < -1 || id >= n)
        return br_err_set(err, BR_E_INVALID, "tokenizer: %s id %d outside the vocabulary (%d)",
                          what, (int)id, (int)n);
    return BR_OK;
}

/* Decoded bytes of token id into dst (room: 4x its text); returns the length. */
static size_t decode_text(const struct br_tok *t, int32_t id, uint8_t *dst)
{
    const uint8_t *s = (const uint8_t *)t->text + t->text_off[id];
    size_t n = t->text_off[id + 1] - t->text_off[id];
    int type = t->type[id];
    if (type == BR_TOK_TYPE_CONTROL || type == BR_TOK_TYPE_UNKNOWN) {
        memcpy(dst, s, n);
        return n;
    }
    if (t->model == BR_TOK_MODEL_SPM) {
        static const char hex[] = "0123456789ABCDEF";
        if (type == BR_TOK_TYPE_BYTE && n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' &&
            s[5] == '>' && strchr(hex, s[3]) && strchr(hex, s[4]) && s[3] && s[4]) {
            dst[0] = (uint8_t)(((strchr(hex, s[3]) - hex) << 4) | (strchr(hex, s[4]) - hex));
            return 1;
        }
        size_t m = 0;
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) {
                dst[m++] = ' ';
                i += 3;
            } else {
                dst[m++] = s[i++];
            }
        }
        return m;
    }
    if (type == BR_TOK_TYPE_USER_DEFINED) {
        memcpy(dst, s, n);
        return n;
    }
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = br_uc_decode(s + i, n - i, &cp);
        if (cp < 512 && t->byte_of_cp[cp] >= 0) {
            dst[m++] = (uint8_t)t->byte_of_cp[cp];
        } else { /* not a byte character: keep it as written */
            memcpy(dst + m, s + i, k);
            m += k;
        }
        i += k;
    }
    return m;
}

int br_tok_create(const struct br_tok_params *p, struct br_tok **out, struct br_err *err)
{
    *out = NULL;
    if (!p || p->n_tokens <= 0 || !p->tokens)
        return br_err_set(err, BR_E_INVALID, "tokenizer: no tokens");
    if (p->model != BR_TOK_MODEL_BPE && p->model != BR_TOK_MODEL_SPM)
        return br_err_set(err, BR_E_INVALID, "tokenizer: unknown model kind %d", (int)p->model);
    int32_t n = p->n_tokens;
    int rc;
    if ((rc = check_id(p->bos_id, n, "BOS", err)) || (rc = check_id(p->eos_id, n, "EOS", err)) ||
        (rc = check_id(p->eot_id, n, "EOT", err)) ||
        (rc = check_id(p->unk_id, n, "unknown", err)) ||
        (rc = check_id(p->pad_id, n, "padding", err)))
        return rc;
    if (p->n_merges && !p->merges)
        return br_err_set(err, BR_E_INVALID, "tokenizer: merges missing");

    enum br_tok_pre pre = BR_TOK_PRE_GPT2;
    if (p->model == BR_TOK_MODEL_BPE &&
        (rc = br_tok_resolve_pre(p->pre, n, p->tokens, p->token_lens, &pre, err)))
        return rc;

    struct br_tok *t = calloc(1, sizeof *t);
    if (!t) return br_err_set(err, BR_E_NOMEM, "tokenizer: out of memory");
    t->model = p->model;
    t->pre = pre;
    t->n_tokens = n;
    t->ignore_merges = p->model == BR_TOK_MODEL_BPE && pre == BR_TOK_PRE_LLAMA3;
    t->bos = p->bos_id;
    t->eos = p->eos_id;
    t->unk = p->unk_id;
    t->pad = p->pad_id;
    t->add_bos = p->add_bos >= 0 ? p->add_bos != 0
                                 : (p->model == BR_TOK_MODEL_SPM || pre == BR_TOK_PRE_LLAMA3);
    t->add_eos = p->add_eos > 0;
    t->add_space_prefix = p->model == BR_TOK_MODEL_SPM && p->add_space_prefix != 0;

    /* Token texts. */
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!p->tokens[i]) {
            rc = br_err_set(err, BR_E_INVALID, "tokenizer: token %d is NULL", (int)i);
            goto fail;
        }
        size_t len = p->token_lens ? p->token_lens[i] : strlen(p->tokens[i]);
        if (len > 4096) { /* empty tokens exist in some files (padding); they never match */
            rc = br_err_set(err, BR_E_INVALID, "tokenizer: token %d has length %zu (max 4096)",
                            (int)i, len);
            goto fail;
        }
        total += len;
    }
    if (total > UINT32_MAX / 4) {
        rc = br_err_set(err, BR_E_INVALID, "tokenizer: token texts too large (%zu bytes)", total);
        goto fail;
    }
    t->text = malloc(total ? total : 1);
    t->text_off = malloc(((size_t)n + 1) * sizeof *t->text_off);
    t->type = malloc((size_t)n);
    t->scores = malloc((size_t)n * sizeof *t->scores);
    if (!t->text || !t->text_off || !t->type || !t->scores) goto nomem;
    size_t pos = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t len = p->token_lens ? p->token_lens[i] : strlen(p->tokens[i]);
        t->text_off[i] = (uint32_t)pos;
        memcpy(t->text + pos, p->tokens[i], len);
        pos += len;
        int32_t type = p->token_types ? p->token_types[i] : BR_TOK_TYPE_NORMAL;
        if (type < 0 || type > BR_TOK_TYPE_BYTE) {
            rc =
                br_err_set(err, BR_E_INVALID, "tokenizer: token %d has type %d", (int)i, (int)type);
            goto fail;
        }
        t->type[i] = (uint8_t)type;
        t->scores[i] = p->scores ? p->scores[i] : 0.0f;
    }
    t->text_off[n] = (uint32_t)pos;

    t->vocab_mask = table_size((size_t)n) - 1;
    t->vocab = malloc((t->vocab_mask + 1) * sizeof *t->vocab);
    if (!t->vocab) goto nomem;
    for (size_t i = 0; i <= t->vocab_mask; i++) t->vocab[i].id = -1;
    for (int32_t i = 0; i < n; i++)
        if (t->text_off[i + 1] > t->text_off[i]) table_insert(t, t->vocab, t->vocab_mask, i);

    /* Byte tokens and merges. */
    build_byte_map(t);
    for (int b = 0; b < 256; b++) {
        t->byte_id[b] = -1;
        if (t->model == BR_TOK_MODEL_BPE) {
            int32_t id = br_tok_lookup(t, (const char *)t->byte_cp[b], t->byte_cp_len[b]);
            if (id >= 0 && text_producible(t->type[id])) t->byte_id[b] = id;
        } else {
            static const char hex[] = "0123456789ABCDEF";
            char s[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
            t->byte_id[b] = br_tok_lookup(t, s, 6);
        }
    }
    if (t->model == BR_TOK_MODEL_BPE) {
        if (p->n_merges > BR_TOK_MERGE_MAX_MERGES || n > BR_TOK_MERGE_MAX_TOKENS) {
            rc = br_err_set(err, BR_E_UNSUPPORTED,
                            "tokenizer: %zu merges over %d tokens (limits: %d, %d)", p->n_merges,
                            (int)n, BR_TOK_MERGE_MAX_MERGES, BR_TOK_MERGE_MAX_TOKENS);
            goto fail;
        }
        t->merge_mask = table_size(p->n_merges) - 1;
        t->merge = calloc(t->merge_mask + 1, sizeof *t->merge);
        t->merge_res = malloc((p->n_merges + 1) * sizeof *t->merge_res);
        if (!t->merge || !t->merge_res) goto nomem;
        char *cat = NULL;
        size_t cat_cap = 0;
        for (size_t i = 0; i < p->n_merges; i++) {
            const char *m = p->merges[i];
            size_t len = m ? (p->merge_lens ? p->merge_lens[i] : strlen(m)) : 0;
            /* Split at the first space after the first byte, so a left part may itself
             * start with a space in vocabularies that keep spaces literally. */
            const char *sp = len > 1 ? memchr(m + 1, ' ', len - 1) : NULL;
            if (!sp || sp + 1 == m + len) {
                free(cat);
                rc = br_err_set(err, BR_E_INVALID, "tokenizer: merge %zu is not \"left right\"", i);
                goto fail;
            }
            size_t ll = (size_t)(sp - m), rl = len - ll - 1;
            if (ll + rl > cat_cap) {
                char *c2 = realloc(cat, ll + rl);
                if (!c2) {
                    free(cat);
                    goto nomem;
                }
                cat = c2;
                cat_cap = ll + rl;
            }
            memcpy(cat, m, ll);
            memcpy(cat + ll, sp + 1, rl);
            int32_t l = br_tok_lookup(t, m, ll), r = br_tok_lookup(t, sp + 1, rl);
            int32_t id = br_tok_lookup(t, cat, ll + rl);
            /* A merge naming tokens the vocabulary lacks can never apply: skip it. */
            if (l >= 0 && r >= 0 && id >= 0 && text_producible(t->type[id]))
                merge_insert(t, l, r, (int32_t)i, id);
        }
        free(cat);
        t->byte_pair = malloc(65536 * 2 * sizeof *t->byte_pair);
        if (!t->byte_pair) goto nomem;
        for (int i = 0; i < 65536; i++) {
            int32_t *bp = t->byte_pair + 2 * i;
            if (!merge_find(t, t->byte_id[i >> 8], t->byte_id[i & 255], &bp[0], &bp[1]))
                bp[0] = INT32_MAX;
        }
    }

    /* Decoded pieces. */
    t->piece = malloc((size_t)total * 4 + 1);
    t->piece_off = malloc(((size_t)n + 1) * sizeof *t->piece_off);
    if (!t->piece || !t->piece_off) goto nomem;
    pos = 0;
    for (int32_t i = 0; i < n; i++) {
        t->piece_off[i] = (uint32_t)pos;
        pos += decode_text(t, i, (uint8_t *)t->piece + pos);
    }
    t->piece_off[n] = (uint32_t)pos;

    /* Special tokens that text can name: their own table, the distinct lengths (longest
     * first) to try at a position, and filters on the first two bytes. */
    size_t n_spec = 0;
    for (int32_t i = 0; i < n; i++) {
        int type = t->type[i];
        n_spec += t->text_off[i + 1] > t->text_off[i] &&
                  (type == BR_TOK_TYPE_CONTROL || type == BR_TOK_TYPE_UNKNOWN ||
                   type == BR_TOK_TYPE_USER_DEFINED);
    }
    t->spec_mask = table_size(n_spec) - 1;
    t->spec = malloc((t->spec_mask + 1) * sizeof *t->spec);
    t->spec_len = malloc((n_spec + 1) * sizeof *t->spec_len);
    if (!t->spec || !t->spec_len) goto nomem;
    for (size_t i = 0; i <= t->spec_mask; i++) t->spec[i].id = -1;
    for (int32_t i = 0; i < n; i++) {
        int type = t->type[i];
        size_t len = t->text_off[i + 1] - t->text_off[i];
        if (len == 0 || (type != BR_TOK_TYPE_CONTROL && type != BR_TOK_TYPE_UNKNOWN &&
                         type != BR_TOK_TYPE_USER_DEFINED))
            continue;
        const uint8_t *s = (const uint8_t *)t->text + t->text_off[i];
        table_insert(t, t->spec, t->spec_mask, i);
        t->first_byte[s[0]] |= (type == BR_TOK_TYPE_USER_DEFINED ? 3 : 1) | (len == 1 ? 4 : 0);
        if (len >= 2) t->spec_pair[((size_t)s[0] << 8 | s[1]) >> 3] |= (uint8_t)(1u << (s[1] & 7));
        if (type == BR_TOK_TYPE_USER_DEFINED) t->has_user_defined = 1;
        size_t k = 0; /* insert len into the descending list of distinct lengths */
        while (k < t->n_spec_len && t->spec_len[k] > len) k++;
        if (k < t->n_spec_len && t->spec_len[k] == len) continue;
        memmove(t->spec_len + k + 1, t->spec_len + k, (t->n_spec_len - k) * sizeof *t->spec_len);
        t->spec_len[k] = (uint32_t)len;
        t->n_spec_len++;
    }

    static const char *const eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                            "<|eom_id|>"};
    static const char *const eog_names[] = {
        "<|eot_id|>",    "<|end_of_text|>", "<|im_end|>",    "<|end|>",
        "<|endoftext|>", "<|eom_id|>",      "<end_of_turn>", "<EOT>"};
    t->eot = p->eot_id;
    for (size_t i = 0; t->eot < 0 && i < sizeof eot_names / sizeof eot_names[0]; i++) {
        int32_t id = br_tok_lookup(t, eot_names[i], strlen(eot_names[i]));
        if (id >= 0 && t->type[id] == BR_TOK_TYPE_CONTROL) t->eot = id;
    }
    if (t->eos >= 0) t->eog[t->n_eog++] = t->eos;
    if (t->eot >= 0) t->eog[t->n_eog++] = t->eot;
    for (size_t i = 0; i < sizeof eog_names / sizeof eog_names[0]; i++) {
        int32_t id = br_tok_lookup(t, eog_names[i], strlen(eog_names[i]));
        if (id >= 0 &&
            (t->type[id] == BR_TOK_TYPE_CONTROL || t->type[id] == BR_TOK_TYPE_USER_DEFINED))
            t->eog[t->n_eog++] = id;
    }
    *out = t;
    return BR_OK;

nomem:
    rc = br_err_set(err, BR_E_NOMEM, "tokenizer: out of memory for %d tokens", (int)n);
fail:
    br_tok_destroy(&t);
    return rc;
}

void br_tok_destroy(struct br_tok **tp)
{
    if (!tp || !*tp) return;
    struct br_tok *t = *tp;
    free(t->text);
    free(t->text_off);
    free(t->type);
    free(t->scores);
    free(t->vocab);
    free(t->merge);
    free(t->merge_res);
    free(t->byte_pair);
    free(t->piece);
    free(t->piece_off);
    free(t->spec);
    free(t->spec_len);
    free(t);
    *tp = NULL;
}

/* ---- encoding ---- */

/* Per-call state: the output and scratch sized for the whole input, so no word or
 * fragment needs an allocation of its own. */
struct enc {
    const struct br_tok *t;
    unsigned flags;
    int32_t *ids; /* (cap,) output */
    size_t n, cap;
    const uint8_t *frag;   /* the fragment being pre-tokenized */
    struct br_tok_chars c; /* its characters */
    uint8_t *buf;          /* (3 * len + 3,) mapped word / escaped SPM text */
    int32_t *sym;          /* (len + 1,) symbol ids (BPE) or lengths (SPM) */
    int32_t *aux;          /* (len + 1,) BPE: pair ranks; SPM: symbol starts */
    int32_t *nxt, *prv;    /* (len + 1,) linked list for the heap paths */
    void *heap;            /* (3 * len + 3,) heap entries */
    size_t heap_n;
};

static int push_id(struct enc *e, int32_t id)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 64;
        int32_t *p = realloc(e->ids, cap * sizeof *p);
        if (!p) return BR_E_NOMEM;
        e->ids = p;
        e->cap = cap;
    }
    e->ids[e->n++] = id;
    return BR_OK;
}

/* A symbol with no token (a byte the vocabulary lacks): the unknown token, or nothing. */
static int push_or_unk(struct enc *e, int32_t id)
{
    if (id >= 0) return push_id(e, id);
    return e->t->unk >= 0 ? push_id(e, e->t->unk) : BR_OK;
}

/* BPE heap entry: the pair (l, r) starting at symbol pos merges into id at rank. */
struct bpe_cand {
    int32_t rank;
    uint32_t pos;
    int32_t l, r, id;
};

static int bpe_less(const struct bpe_cand *a, const struct bpe_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

/* The candidates' binary heaps: PUSH and POP over the e->heap_n entries of type T at
 * e->heap, the least by LESS on top. One definition serves BPE's and SPM's candidates. */
#define ENC_HEAP(T, LESS, PUSH, POP)                                                               \
    static void PUSH(struct enc *e, T c)                                                           \
    {                                                                                              \
        T *h = e->heap;                                                                            \
        size_t i = e->heap_n++;                                                                    \
        while (i > 0 && LESS(&c, &h[(i - 1) / 2])) {                                               \
            h[i] = h[(i - 1) / 2];                                                                 \
            i = (i - 1) / 2;                                                                       \
        }                                                                                          \
        h[i] = c;                                                                                  \
    }                                                                                              \
    static T POP(struct enc *e)                                                                    \
    {                                                                                              \
        T *h = e->heap;                                                                            \
        T top = h[0], last = h[--e->heap_n];                                                       \
        size_t i = 0, n = e->heap_n;                                                               \
        for (;;) {                                                                                 \
            size_t c = 2 * i + 1;                                                                  \
            if (c >= n) break;                                                                     \
            if (c + 1 < n && LESS(&h[c + 1], &h[c])) c++;                                          \
            if (!LESS(&h[c], &last)) break;                                                        \
            h[i] = h[c];                                                                           \
            i = c;                                                                                 \
        }                                                                                          \
        if (n) h[i] = last;                                                                        \
        return top;                                                                                \
    }

ENC_HEAP(struct bpe_cand, bpe_less, bpe_heap_push, bpe_heap_pop)

static void bpe_cand_at(struct enc *e, int32_t pos)
{
    int32_t q = e->nxt[pos];
    struct bpe_cand c;
    if (q < 0 || !merge_find(e->t, e->sym[pos], e->sym[q], &c.rank, &c.id)) return;
    c.pos = (uint32_t)pos;
    c.l = e->sym[pos];
    c.r = e->sym[q];
    bpe_heap_push(e, c);
}

/* Merges the symbols sym[0..n) of a long word (bytes w); the survivors are then listed
 * in order. The first candidates come from the byte-pair table. */
static int bpe_merge_heap(struct enc *e, const uint8_t *w, size_t n)
{
    int32_t *sym = e->sym, *nxt = e->nxt, *prv = e->prv;
    for (size_t i = 0; i < n; i++) {
        nxt[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        prv[i] = (int32_t)i - 1;
    }
    e->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const int32_t *bp = e->t->byte_pair + 2 * (((size_t)w[i] << 8) | w[i + 1]);
        if (bp[0] == INT32_MAX) continue;
        struct bpe_cand c = {bp[0], (uint32_t)i, sym[i], sym[i + 1], bp[1]};
        bpe_heap_push(e, c);
    }
    while (e->heap_n) {
        struct bpe_cand c = bpe_heap_pop(e);
        int32_t q = nxt[c.pos];
        /* Stale when either side has merged since: the ids no longer match. */
        if (sym[c.pos] != c.l || q < 0 || sym[q] != c.r) continue;
        sym[c.pos] = c.id;
        nxt[c.pos] = nxt[q];
        if (nxt[q] >= 0) prv[nxt[q]] = (int32_t)c.pos;
        sym[q] = INT32_MIN; /* dead */
        if (prv[c.pos] >= 0) bpe_cand_at(e, prv[c.pos]);
        bpe_cand_at(e, (int32_t)c.pos);
    }
    int rc = BR_OK;
    for (int32_t i = 0; i >= 0 && rc == BR_OK; i = nxt[i]) rc = push_or_unk(e, sym[i]);
    return rc;
}

/* Short words: an array with each adjacent pair's rank cached, rescanned per merge. The
 * first ranks come from the byte-pair table (w: the word's bytes). */
static int bpe_merge_small(struct enc *e, const uint8_t *w, size_t n)
{
    int32_t *sym = e->sym, *rank = e->aux, *res = e->nxt;
    for (size_t i = 0; i + 1 < n; i++) {
        const int32_t *bp = e->t->byte_pair + 2 * (((size_t)w[i] << 8) | w[i + 1]);
        rank[i] = bp[0];
        res[i] = bp[1];
    }
    while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == INT32_MAX) break;
        sym[best] = res[best];
        for (size_t i = best + 1; i + 1 < n; i++) {
            sym[i] = sym[i + 1];
            rank[i] = rank[i + 1];
            res[i] = res[i + 1];
        }
        n--;
        if (best + 1 < n && !merge_find(e->t, sym[best], sym[best + 1], &rank[best], &res[best]))
            rank[best] = INT32_MAX;
        if (best + 1 >= n) rank[best] = INT32_MAX;
        if (best > 0 &&
            !merge_find(e->t, sym[best - 1], sym[best], &rank[best - 1], &res[best - 1]))
            rank[best - 1] = INT32_MAX;
    }
    int rc = BR_OK;
    for (size_t i = 0; i < n && rc == BR_OK; i++) rc = push_or_unk(e, sym[i]);
    return rc;
}

#define BPE_SMALL_WORD 16

static int bpe_word(void *ctx, size_t begin, size_t end)
{
    struct enc *e = ctx;
    const struct br_tok *t = e->t;
    const uint8_t *w = e->frag + begin;
    size_t n = end - begin;
    /* One and two bytes need no search: the byte's token, or the pair's merge. */
    if (n == 1) return push_or_unk(e, t->byte_id[w[0]]);
    if (n == 2) {
        const int32_t *bp = t->byte_pair + 2 * (((size_t)w[0] << 8) | w[1]);
        if (bp[0] != INT32_MAX) return push_id(e, bp[1]);
    }
    if (t->ignore_merges) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            const uint8_t *bc = t->byte_cp[w[i]];
            e->buf[m] = bc[0];
            e->buf[m + 1] = bc[1];
            m += t->byte_cp_len[w[i]];
        }
        int32_t id = br_tok_lookup(t, (const char *)e->buf, m);
        if (id >= 0 && text_producible(t->type[id])) return push_id(e, id);
    }
    for (size_t i = 0; i < n; i++) e->sym[i] = t->byte_id[w[i]];
    if (n <= BPE_SMALL_WORD && !(e->flags & BR_TOK_FORCE_HEAP)) return bpe_merge_small(e, w, n);
    return bpe_merge_heap(e, w, n);
}

/* Decodes frag[0..len) into e->c. */
static void decode_chars(struct enc *e, const uint8_t *frag, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = frag[i] < 0x80 ? (cp = frag[i], 1) : br_uc_decode(frag + i, len - i, &cp);
        e->c.cp[n] = cp;
        e->c.cls[n] = (uint8_t)br_uc_class_of(cp);
        e->c.off[n] = (uint32_t)i;
        n++;
        i += k;
    }
    e->c.off[n] = (uint32_t)len;
    e->c.n = n;
}

static int bpe_fragment(struct enc *e, const uint8_t *frag, size_t len)
{
    e->frag = frag;
    decode_chars(e, frag, len);
    return br_tok_pre_split(e->t->pre, &e->c, bpe_word, e);
}

/* SPM heap entry: symbols left and right (adjacent, size bytes together) form token id. */
struct spm_cand {
    float score;
    uint32_t left, right, size;
    int32_t id;
};

static int spm_less(const struct spm_cand *a, const struct spm_cand *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

ENC_HEAP(struct spm_cand, spm_less, spm_heap_push, spm_heap_pop)

/* Symbol i: bytes buf[start[i] .. start[i] + len[i]); len 0 = merged away. */
static void spm_cand_at(struct enc *e, int32_t l)
{
    if (l < 0) return;
    int32_t r = e->nxt[l];
    if (r < 0) return;
    const int32_t *start = e->aux, *len = e->sym;
    uint32_t size = (uint32_t)(len[l] + len[r]);
    int32_t id = br_tok_lookup(e->t, (const char *)e->buf + start[l], size);
    if (id < 0 || !text_producible(e->t->type[id])) return;
    struct spm_cand c = {e->t->scores[id], (uint32_t)l, (uint32_t)r, size, id};
    spm_heap_push(e, c);
}

static int spm_fragment(struct enc *e, const uint8_t *frag, size_t len, int prefix)
{
    const struct br_tok *t = e->t;
    uint8_t *s = e->buf;
    size_t m = 0;
    if (prefix) s[m++] = ' ';
    memcpy(s + m, frag, len);
    m += len;
    /* Spaces become U+2581, escaped in place from the back so nothing is overwritten. */
    size_t spaces = 0;
    for (size_t i = 0; i < m; i++) spaces += s[i] == ' ';
    size_t w = m + 2 * spaces;
    for (size_t i = m; i-- > 0;) {
        if (s[i] == ' ') {
            s[--w] = 0x81;
            s[--w] = 0x96;
            s[--w] = 0xE2;
        } else {
            s[--w] = s[i];
        }
    }
    m += 2 * spaces;

    int32_t *start = e->aux, *slen = e->sym, *nxt = e->nxt, *prv = e->prv;
    size_t n = 0;
    for (size_t i = 0; i < m;) {
        uint32_t cp;
        size_t k = br_uc_decode(s + i, m - i, &cp);
        start[n] = (int32_t)i;
        slen[n] = (int32_t)k;
        nxt[n] = (int32_t)n + 1;
        prv[n] = (int32_t)n - 1;
        n++;
        i += k;
    }
    if (n == 0) return BR_OK;
    nxt[n - 1] = -1;
    e->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) spm_cand_at(e, (int32_t)i);
    while (e->heap_n) {
        struct spm_cand c = spm_heap_pop(e);
        if (slen[c.left] == 0 || slen[c.right] == 0 || nxt[c.left] != (int32_t)c.right ||
            (uint32_t)(slen[c.left] + slen[c.right]) != c.size)
            continue;
        slen[c.left] += slen[c.right];
        slen[c.right] = 0;
        nxt[c.left] = nxt[c.right];
        if (nxt[c.right] >= 0) prv[nxt[c.right]] = (int32_t)c.left;
        spm_cand_at(e, prv[c.left]);
        spm_cand_at(e, (int32_t)c.left);
    }
    int rc = BR_OK;
    for (int32_t i = 0; i >= 0 && rc == BR_OK; i = nxt[i]) {
        int32_t id = br_tok_lookup(t, (const char *)s + start[i], (size_t)slen[i]);
        if (id >= 0 && text_producible(t->type[id])) {
            rc = push_id(e, id);
            continue;
        }
        for (int32_t k = 0; k < slen[i] && rc == BR_OK; k++)
            rc = push_or_unk(e, t->byte_id[s[start[i] + k]]);
    }
    return rc;
}

/* A stretch of text between special tokens. Each one starts the text or follows a special
 * token, so SentencePiece puts its space before every one (as llama.cpp does). */
static int encode_fragment(struct enc *e, const uint8_t *frag, size_t len)
{
    if (len == 0) return BR_OK;
    if (e->t->model == BR_TOK_MODEL_SPM) return spm_fragment(e, frag, len, e->t->add_space_prefix);
    return bpe_fragment(e, frag, len);
}

/* The special token starting at text[p], longest first; -1 if none. Each distinct length
 * costs one hash lookup, so the work per position is bounded whatever the vocabulary. */
static int32_t special_at(const struct br_tok *t, const uint8_t *text, size_t len, size_t p,
                          int parse_special)
{
    uint8_t mask = t->first_byte[text[p]];
    if (!mask || (!parse_special && !(mask & 2))) return -1;
    if (!(mask & 4)) { /* no one-byte special starts here: the first two bytes must match */
        if (p + 1 >= len) return -1;
        size_t pair = (size_t)text[p] << 8 | text[p + 1];
        if (!(t->spec_pair[pair >> 3] & (1u << (pair & 7)))) return -1;
    }
    for (size_t k = 0; k < t->n_spec_len; k++) {
        size_t n = t->spec_len[k];
        if (n > len - p) continue;
        const char *s = (const char *)text + p;
        int32_t id = table_find(t, t->spec, t->spec_mask, s, n, hash_bytes(text + p, n));
        if (id >= 0 && (parse_special || t->type[id] == BR_TOK_TYPE_USER_DEFINED)) return id;
    }
    return -1;
}

int br_tok_encode(const struct br_tok *t, const char *text, size_t len, unsigned flags,
                  int32_t **ids, size_t *n_ids, struct br_err *err)
{
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return br_err_set(err, BR_E_INVALID, "tokenizer: NULL text");
    if (len > (size_t)INT32_MAX / 4)
        return br_err_set(err, BR_E_TOO_LONG, "tokenizer: text of %zu bytes is too long", len);
    struct enc e = {.t = t, .flags = flags};
    int rc = BR_OK;
    uint8_t *block = NULL;
    /* All scratch in one block (one malloc per call matters for short prompts), widest
     * alignment first. The heap part is mostly untouched, so it costs address space only. */
    size_t slots = len + 2;
    size_t cand = sizeof(struct bpe_cand) > sizeof(struct spm_cand) ? sizeof(struct bpe_cand)
                                                                    : sizeof(struct spm_cand);
    size_t per_slot = sizeof *e.c.off + 3 * cand + sizeof *e.c.cp + 4 * sizeof(int32_t) + 1 + 3;
    block = slots <= SIZE_MAX / per_slot ? malloc(slots * per_slot) : NULL;
    if (!block) {
        rc = BR_E_NOMEM;
        goto done;
    }
    uint8_t *q = block;
    e.c.off = (uint32_t *)(void *)q;
    q += slots * sizeof *e.c.off;
    e.heap = q;
    q += 3 * slots * cand;
    e.c.cp = (uint32_t *)(void *)q;
    q += slots * sizeof *e.c.cp;
    e.sym = (int32_t *)(void *)q;
    e.aux = e.sym + slots;
    e.nxt = e.aux + slots;
    e.prv = e.nxt + slots;
    q += 4 * slots * sizeof(int32_t);
    e.c.cls = q;
    e.buf = q + slots;
    if ((flags & BR_TOK_ADD_BOS) && t->add_bos && t->bos >= 0 && (rc = push_id(&e, t->bos)))
        goto done;

    const uint8_t *s = (const uint8_t *)text;
    int parse = (flags & BR_TOK_PARSE_SPECIAL) != 0;
    size_t frag = 0;
    if (parse || t->has_user_defined) {
        for (size_t p = 0; p < len;) {
            int32_t id = special_at(t, s, len, p, parse);
            if (id < 0) {
                p++;
                continue;
            }
            if ((rc = encode_fragment(&e, s + frag, p - frag)) || (rc = push_id(&e, id))) goto done;
            p += t->text_off[id + 1] - t->text_off[id];
            frag = p;
        }
    }
    if ((rc = encode_fragment(&e, s + frag, len - frag))) goto done;
    if ((flags & BR_TOK_ADD_EOS) && t->add_eos && t->eos >= 0 && (rc = push_id(&e, t->eos)))
        goto done;

done:
    free(block);
    if (rc) {
        free(e.ids);
        return br_err_set(err, rc, "tokenizer: out of memory encoding %zu bytes", len);
    }
    *ids = e.ids;
    *n_ids = e.n;
    return BR_OK;
}

/* ---- decoding ---- */

/* The bytes one id contributes, given the decode flags and whether the SPM leading space
 * is still to be removed (*strip, cleared by the first token that yields text). */
static void token_bytes(const struct br_tok *t, int32_t id, unsigned flags, int *strip,
                        const char **p, size_t *n)
{
    int type = t->type[id];
    *p = t->piece + t->piece_off[id];
    *n = t->piece_off[id + 1] - t->piece_off[id];
    if (type == BR_TOK_TYPE_CONTROL) {
        if (!(flags & BR_TOK_DECODE_SPECIAL)) *n = 0;
        return; /* control tokens neither take nor end the space removal */
    }
    if (type == BR_TOK_TYPE_UNKNOWN && !(flags & BR_TOK_DECODE_SPECIAL)) {
        *p = "\xEF\xBF\xBD";
        *n = 3;
    }
    if (*strip) {
        *strip = 0;
        if (*n && **p == ' ') {
            (*p)++;
            (*n)--;
        }
    }
}

/* Whether the SPM leading space is to be removed: decode strips unless told to keep it,
 * a stream only when told to strip (detok != 0). */
static int initial_strip(const struct br_tok *t, unsigned flags, int detok)
{
    if (detok && !(flags & BR_TOK_DECODE_STRIP_SPACE)) return 0;
    return t->model == BR_TOK_MODEL_SPM && t->add_space_prefix &&
           !(flags & BR_TOK_DECODE_KEEP_SPACE);
}

int br_tok_decode(const struct br_tok *t, const int32_t *ids, size_t n_ids, unsigned flags,
                  char **text, size_t *len, struct br_err *err)
{
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_tokens)
            return br_err_set(err, BR_E_RANGE,
                              "tokenizer: id %d at %zu outside the vocabulary (%d)", (int)ids[i], i,
                              (int)t->n_tokens);
        total += t->piece_off[ids[i] + 1] - t->piece_off[ids[i]] + 3;
    }
    char *out = malloc(total + 1);
    if (!out) return br_err_set(err, BR_E_NOMEM, "tokenizer: out of memory decoding");
    size_t m = 0;
    int strip = initial_strip(t, flags, 0);
    for (size_t i = 0; i < n_ids; i++) {
        const char *p;
        size_t n;
        token_bytes(t, ids[i], flags, &strip, &p, &n);
        memcpy(out + m, p, n);
        m += n;
    }
    out[m] = '\0';
    *text = out;
    *len = m;
    return BR_OK;
}

int br_tok_piece(const struct br_tok *t, int32_t id, const char **ptr, size_t *len)
{
    if (id < 0 || id >= t->n_tokens) {
        *ptr = NULL;
        *len = 0;
        return BR_E_RANGE;
    }
    *ptr = t->piece + t->piece_off[id];
    *len = t->piece_off[id + 1] - t->piece_off[id];
    return BR_OK;
}

const char *br_tok_text(const struct br_tok *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_tokens) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->text_off[id + 1] - t->text_off[id];
    return t->text + t->text_off[id];
}

int32_t br_tok_n_vocab(const struct br_tok *t)
{
    return t->n_tokens;
}

int32_t br_tok_bos(const struct br_tok *t)
{
    return t->bos;
}

int32_t br_tok_eos(const struct br_tok *t)
{
    return t->eos;
}

int32_t br_tok_eot(const struct br_tok *t)
{
    return t->eot;
}

enum br_tok_model br_tok_model(const struct br_tok *t)
{
    return t->model;
}

const char *br_tok_pre_name(const struct br_tok *t)
{
    if (t->model == BR_TOK_MODEL_SPM) return "spm";
    switch (t->pre) {
    case BR_TOK_PRE_LLAMA3:
        return "llama3";
    case BR_TOK_PRE_FALCON:
        return "falcon";
    default:
        return "gpt2";
    }
}

int br_tok_type(const struct br_tok *t, int32_t id)
{
    return id >= 0 && id < t->n_tokens ? t->type[id] : 0;
}

bool br_tok_is_eog(const struct br_tok *t, int32_t id)
{
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

/* ---- streaming ---- */

struct br_detok {
    const struct br_tok *t;
    unsigned flags;
    int strip;
    char *buf; /* (cap,) bytes handed out last, then the held-back tail */
    size_t cap;
    uint8_t held[4]; /* an unfinished character's first bytes (at most 3) */
    size_t n_held;
};

int br_detok_create(const struct br_tok *t, unsigned flags, struct br_detok **out)
{
    *out = NULL;
    struct br_detok *d = calloc(1, sizeof *d);
    if (!d) return BR_E_NOMEM;
    d->t = t;
    d->flags = flags;
    d->strip = initial_strip(t, flags, 1);
    *out = d;
    return BR_OK;
}

int br_detok_push(struct br_detok *d, int32_t id, const char **out, size_t *len)
{
    *out = "";
    *len = 0;
    if (id < 0 || id >= d->t->n_tokens) return BR_E_RANGE;
    const char *p;
    size_t n;
    token_bytes(d->t, id, d->flags, &d->strip, &p, &n);
    size_t need = d->n_held + n;
    if (need > d->cap) {
        size_t cap = need < 64 ? 64 : need * 2;
        char *b = realloc(d->buf, cap);
        if (!b) return BR_E_NOMEM;
        d->buf = b;
        d->cap = cap;
    }
    if (need == 0) return BR_OK;
    memcpy(d->buf, d->held, d->n_held);
    memcpy(d->buf + d->n_held, p, n);
    size_t tail = br_uc_incomplete_tail((const uint8_t *)d->buf, need);
    memcpy(d->held, d->buf + need - tail, tail);
    d->n_held = tail;
    *out = d->buf;
    *len = need - tail;
    return BR_OK;
}

void br_detok_flush(struct br_detok *d, const char **out, size_t *len)
{
    /* held lives apart from buf, so the bytes stay valid after the reset below. */
    if (d->n_held && d->cap >= d->n_held) {
        memcpy(d->buf, d->held, d->n_held);
        *out = d->buf;
    } else {
        *out = "";
    }
    *len = d->n_held;
    d->n_held = 0;
    d->strip = initial_strip(d->t, d->flags, 1);
}

void br_detok_destroy(struct br_detok **d)
{
    if (!d || !*d) return;
    free((*d)->buf);
    free(*d);
    *d = NULL;
}
