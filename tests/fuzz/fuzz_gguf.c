/*
 * libFuzzer harness for the GGUF reader: any byte string goes to br_gguf_open_memory, and
 * whatever it accepts is walked completely (every key through every getter, every array
 * element, every tensor's bytes), so an accepted file whose pointers or counts are wrong
 * shows up as an ASan report rather than staying latent. Built by run-fuzz.sh.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/gguf.h"
#include "sharding/types.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Sums bytes so the reads cannot be optimised away. */
static volatile uint64_t sink;

static void walk_kv(const struct br_gguf *g, const struct br_gguf_kv *kv)
{
    struct br_err err;
    uint64_t u;
    int64_t i;
    uint32_t u32;
    float f;
    bool b;
    char s[32];
    /* every getter on every key: conversions and their errors must all be safe */
    br_gguf_get_u64(g, kv->key, &u, &err);
    br_gguf_get_i64(g, kv->key, &i, &err);
    br_gguf_get_u32(g, kv->key, &u32, &err);
    br_gguf_get_f32(g, kv->key, &f, &err);
    br_gguf_get_bool(g, kv->key, &b, &err);
    br_gguf_get_str(g, kv->key, s, sizeof s, &err);
    /* the reader refuses duplicate keys, so a lookup finds this very record */
    if (br_gguf_find_kv(g, kv->key) != kv) abort();
    if (kv->type == BR_GGUF_STRING) {
        uint64_t acc = 0;
        for (uint64_t k = 0; k < kv->v.str.len; k++) acc += (uint8_t)kv->v.str.ptr[k];
        sink += acc;
    }
    if (kv->type != BR_GGUF_ARRAY) return;
    for (uint64_t k = 0; k < kv->v.arr.n; k++) {
        if (kv->v.arr.elem == BR_GGUF_STRING) {
            const char *p;
            uint64_t len, acc = 0;
            br_gguf_arr_str(kv, k, &p, &len);
            for (uint64_t j = 0; j < len; j++) acc += (uint8_t)p[j];
            sink += acc;
        } else {
            sink += (uint64_t)br_gguf_arr_i64(kv, k);
            double d = br_gguf_arr_f64(kv, k);
            sink += d == d ? 1 : 0;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct br_gguf *g = NULL;
    struct br_err err;
    err.msg[0] = '\0'; /* so the check below sees whether a message was written */
    int rc = br_gguf_open_memory(data, size, &g, &err);
    if (rc != BR_OK) {
        /* a refusal always comes with a message and no reader */
        if (g != NULL || err.msg[0] == '\0') abort();
        return 0;
    }
    for (size_t i = 0; i < br_gguf_n_kv(g); i++) walk_kv(g, br_gguf_kv_at(g, i));
    for (size_t i = 0; i < br_gguf_n_tensors(g); i++) {
        const struct br_gguf_tensor *t = br_gguf_tensor_at(g, i);
        if (br_gguf_find_tensor(g, t->name) != t) abort();
        if (strlen(t->name) == 0 || strlen(t->name) >= BR_GGUF_MAX_NAME) abort();
        if (!br_ggml_type_name(t->type) || t->nbytes == 0) abort();
        const uint8_t *p = t->data;
        /* first and last byte: ASan checks both ends lie inside the input */
        sink += p[0] + p[t->nbytes - 1];
    }
    (void)br_gguf_version(g);
    (void)br_gguf_alignment(g);
    (void)br_gguf_data_offset(g);
    br_gguf_close(&g);
    return 0;
}
