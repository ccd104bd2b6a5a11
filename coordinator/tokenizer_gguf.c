/*
 * br_tok_from_gguf: a tokenizer from a GGUF file's tokenizer.ggml.* keys (docs/FORMATS.md §5).
 *
 * Token strings are borrowed from the file's mapping for the duration of br_tok_create,
 * which copies them, so the tokenizer does not keep the file alive. Keys with the wrong
 * type or an array whose length differs from the token count are BR_E_FORMAT naming the
 * key; absent optional keys take the model's defaults (see tokenizer.h).
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/tokenizer.h"
#include "coordinator/tokenizer_internal.h"
#include "sharding/gguf.h"

enum elem_kind { ELEM_STRING, ELEM_NUMBER, ELEM_INTEGER };

static int elem_ok(enum br_gguf_vtype t, enum elem_kind want)
{
    if (want == ELEM_STRING) return t == BR_GGUF_STRING;
    if (br_gguf_vtype_size(t) == 0) return 0;
    /* Integers are never read from float elements: a NaN or huge value would not convert. */
    return want == ELEM_NUMBER || (t != BR_GGUF_F32 && t != BR_GGUF_F64);
}

/* An array key of n elements (any count when n is 0) of the wanted kind, or NULL when
 * absent. */
static int find_array(const struct br_gguf *g, const char *key, enum elem_kind want, uint64_t n,
                      const struct br_gguf_kv **out, struct br_err *err)
{
    static const char *const names[] = {"strings", "numbers", "integers"};
    const struct br_gguf_kv *kv = br_gguf_find_kv(g, key);
    *out = NULL;
    if (!kv) return BR_OK;
    if (kv->type != BR_GGUF_ARRAY || !elem_ok(kv->v.arr.elem, want))
        return br_err_set(err, BR_E_FORMAT, "%s: expected an array of %s (byte offset %llu)", key,
                          names[want], (unsigned long long)kv->file_offset);
    if (n && kv->v.arr.n != n)
        return br_err_set(err, BR_E_FORMAT, "%s: %llu elements for %llu tokens", key,
                          (unsigned long long)kv->v.arr.n, (unsigned long long)n);
    *out = kv;
    return BR_OK;
}

/* An optional id: absent keeps *id (the default); present must fit in the vocabulary. */
static int get_id(const struct br_gguf *g, const char *key, int32_t n_tokens, int32_t *id,
                  struct br_err *err)
{
    uint32_t v;
    int rc = br_gguf_get_u32(g, key, &v, err);
    if (rc == BR_E_NOTFOUND) return BR_OK;
    if (rc) return rc;
    if (v >= (uint32_t)n_tokens)
        return br_err_set(err, BR_E_FORMAT, "%s: id %u outside the vocabulary (%d tokens)", key, v,
                          (int)n_tokens);
    *id = (int32_t)v;
    return BR_OK;
}

static int get_flag(const struct br_gguf *g, const char *key, int *flag, struct br_err *err)
{
    bool b;
    int rc = br_gguf_get_bool(g, key, &b, err);
    if (rc == BR_E_NOTFOUND) return BR_OK;
    if (rc) return rc;
    *flag = b;
    return BR_OK;
}

int br_tok_from_gguf(const struct br_gguf *g, struct br_tok **out, struct br_err *err)
{
    *out = NULL;
    char model[32], pre[64];
    int rc = br_gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model, err);
    if (rc == BR_E_NOTFOUND)
        return br_err_set(err, BR_E_NOTFOUND, "tokenizer: no tokenizer.ggml.model in the file");
    if (rc) return rc;
    struct br_tok_params p;
    br_tok_params_init(&p);
    if (strcmp(model, "gpt2") == 0)
        p.model = BR_TOK_MODEL_BPE;
    else if (strcmp(model, "llama") == 0)
        p.model = BR_TOK_MODEL_SPM;
    else
        return br_err_set(err, BR_E_UNSUPPORTED, "tokenizer: model \"%s\" is not supported", model);
    rc = br_gguf_get_str(g, "tokenizer.ggml.pre", pre, sizeof pre, err);
    if (rc && rc != BR_E_NOTFOUND) return rc;
    p.pre = rc == BR_E_NOTFOUND ? NULL : pre;

    const struct br_gguf_kv *tok, *scores, *types, *merges;
    if ((rc = find_array(g, "tokenizer.ggml.tokens", ELEM_STRING, 0, &tok, err))) return rc;
    if (!tok || tok->v.arr.n == 0 || tok->v.arr.n > INT32_MAX / 2)
        return br_err_set(err, BR_E_FORMAT, "tokenizer.ggml.tokens: missing or of bad length");
    uint64_t n = tok->v.arr.n;
    if ((rc = find_array(g, "tokenizer.ggml.scores", ELEM_NUMBER, n, &scores, err)) ||
        (rc = find_array(g, "tokenizer.ggml.token_type", ELEM_INTEGER, n, &types, err)) ||
        (rc = find_array(g, "tokenizer.ggml.merges", ELEM_STRING, 0, &merges, err)))
        return rc;
    size_t n_merges = merges ? (size_t)merges->v.arr.n : 0;

    const char **strs = malloc(n * sizeof *strs);
    size_t *lens = malloc(n * sizeof *lens);
    float *sc = scores ? malloc(n * sizeof *sc) : NULL;
    int32_t *ty = types ? malloc(n * sizeof *ty) : NULL;
    const char **mstrs = malloc((n_merges + 1) * sizeof *mstrs);
    size_t *mlens = malloc((n_merges + 1) * sizeof *mlens);
    if (!strs || !lens || (scores && !sc) || (types && !ty) || !mstrs || !mlens) {
        rc = br_err_set(err, BR_E_NOMEM, "tokenizer: out of memory reading %llu tokens",
                        (unsigned long long)n);
        goto done;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        br_gguf_arr_str(tok, i, &strs[i], &len);
        lens[i] = (size_t)len;
        if (sc) { /* clamped: a double beyond float range does not convert */
            double v = br_gguf_arr_f64(scores, i);
            sc[i] = v > FLT_MAX ? FLT_MAX : v < -FLT_MAX ? -FLT_MAX : v == v ? (float)v : 0.0f;
        }
        if (ty) {
            int64_t v = br_gguf_arr_i64(types, i);
            ty[i] = v < 0 || v > 255 ? -1 : (int32_t)v;
        }
    }
    for (size_t i = 0; i < n_merges; i++) {
        uint64_t len;
        br_gguf_arr_str(merges, i, &mstrs[i], &len);
        mlens[i] = (size_t)len;
    }
    p.n_tokens = (int32_t)n;
    p.tokens = strs;
    p.token_lens = lens;
    p.scores = sc;
    p.token_types = ty;
    p.n_merges = n_merges;
    p.merges = mstrs;
    p.merge_lens = mlens;

    /* Defaults before the file's own ids: SentencePiece's fixed layout, or Llama-3's. */
    enum br_tok_pre kind = BR_TOK_PRE_GPT2;
    if (p.model == BR_TOK_MODEL_SPM) {
        if (n > 2) p.unk_id = 0, p.bos_id = 1, p.eos_id = 2;
    } else if (!br_tok_resolve_pre(NULL, p.n_tokens, strs, lens, &kind, NULL) &&
               kind == BR_TOK_PRE_LLAMA3) {
        p.bos_id = 128000;
        p.eos_id = 128001;
    }
    if ((rc = get_id(g, "tokenizer.ggml.bos_token_id", p.n_tokens, &p.bos_id, err)) ||
        (rc = get_id(g, "tokenizer.ggml.eos_token_id", p.n_tokens, &p.eos_id, err)) ||
        (rc = get_id(g, "tokenizer.ggml.eot_token_id", p.n_tokens, &p.eot_id, err)) ||
        (rc = get_id(g, "tokenizer.ggml.unknown_token_id", p.n_tokens, &p.unk_id, err)) ||
        (rc = get_id(g, "tokenizer.ggml.padding_token_id", p.n_tokens, &p.pad_id, err)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_bos_token", &p.add_bos, err)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_eos_token", &p.add_eos, err)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_space_prefix", &p.add_space_prefix, err)))
        goto done;
    rc = br_tok_create(&p, out, err);
    if (rc == BR_E_INVALID) rc = BR_E_FORMAT; /* the parameters came from the file */

done:
    free(strs);
    free(lens);
    free(sc);
    free(ty);
    free(mstrs);
    free(mlens);
    return rc;
}
