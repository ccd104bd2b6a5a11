/*
 * Paged KV cache: the block allocator's rules (lowest free block first, truncation,
 * exhaustion, release), and the engine's promise that a sequence's logits do not depend
 * on what else shares its batches or on which blocks it happens to get.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitrack/status.h"
#include "sharding/synth.h"
#include "test_util.h"
#include "worker/engine.h"
#include "worker/kvcache.h"

static void test_allocator_rules(void **state)
{
    (void)state;
    struct br_kv_alloc *a = NULL;
    assert_int_equal(br_kv_alloc_create(3, 10, 4, 5, &a), BR_OK);
    /* seq 0 positions 0..5 take blocks 0 and 1 */
    for (int p = 0; p < 6; p++) assert_int_equal(br_kv_alloc_append(a, 0, p), (p / 4) * 4 + p % 4);
    assert_int_equal(br_kv_alloc_free_blocks(a), 3);
    /* positions must be contiguous */
    assert_int_equal(br_kv_alloc_append(a, 0, 7), BR_E_RANGE);
    assert_int_equal(br_kv_alloc_append(a, 1, 1), BR_E_RANGE);
    assert_int_equal(br_kv_alloc_append(a, 0, 10), BR_E_RANGE); /* beyond n_ctx */
    /* seq 1 gets block 2, seq 2 gets blocks 3 and 4, then the pool is empty */
    assert_int_equal(br_kv_alloc_append(a, 1, 0), 8);
    for (int p = 0; p < 8; p++) assert_true(br_kv_alloc_append(a, 2, p) >= 12);
    assert_int_equal(br_kv_alloc_free_blocks(a), 0);
    assert_int_equal(br_kv_alloc_append(a, 2, 8), BR_E_BUSY);
    /* truncation keeps the blocks: rewriting position 2 of seq 0 reuses block 0 */
    assert_int_equal(br_kv_alloc_append(a, 0, 2), 2);
    assert_int_equal(br_kv_alloc_length(a, 0), 3);
    assert_int_equal(br_kv_alloc_row(a, 0, 1), 1);
    /* release seq 0 then seq 1: the lowest block (0) comes back first, whatever the order */
    br_kv_alloc_release(a, 1);
    br_kv_alloc_release(a, 0);
    assert_int_equal(br_kv_alloc_free_blocks(a), 3);
    assert_int_equal(br_kv_alloc_append(a, 1, 0), 0);
    assert_int_equal(br_kv_alloc_append(a, 2, 8), 4 * 1 + 0);
    br_kv_alloc_destroy(&a);
    assert_null(a);
    br_kv_alloc_destroy(&a); /* NULL-safe */
}

/* Three sequences evaluated alone vs interleaved in shared batches with frees and
 * slot reuse: identical logits, bit for bit. */
static void test_batch_composition_independent(void **state)
{
    (void)state;
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    o.n_ctx = 128;
    char *path = br_test_tmp_path("kv-model");
    struct br_err err = {{0}};
    assert_int_equal(br_synth_write(&o, path, &err), 0);
    struct br_model *m = NULL;
    assert_int_equal(br_model_load(path, &m, &err), 0);
    const int V = m->cfg.n_vocab;
    enum { NS = 3, LEN = 40 };
    int32_t toks[NS][LEN];
    uint64_t rs = 99;
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < LEN; i++) toks[s][i] = (int32_t)(br_test_rand(&rs) % (uint64_t)V);
    /* alone: one engine per sequence, all positions' logits */
    float *alone = malloc((size_t)NS * LEN * V * sizeof *alone);
    for (int s = 0; s < NS; s++) {
        struct br_engine *e = NULL;
        struct br_engine_opts eo = {.n_ctx = LEN};
        assert_int_equal(br_engine_create(m, &eo, &e, &err), 0);
        assert_int_equal(
            br_engine_eval(e, toks[s], LEN, 0, alone + (size_t)s * LEN * V, BR_LOGITS_ALL, &err),
            0);
        br_engine_destroy(&e);
    }
    /* together: 2 slots only, few blocks; seq 0 and 1 interleaved in uneven chunks,
     * seq 2 reuses slot 0 after seq 0 is freed */
    struct br_engine *e = NULL;
    struct br_engine_opts eo = {.n_ctx = 64, .max_batch = 16, .n_seq = 2, .kv_blocks = 4};
    assert_int_equal(br_engine_create(m, &eo, &e, &err), 0);
    float *lg = malloc((size_t)16 * V * sizeof *lg);
    int done[NS] = {0}, slot_of[NS] = {0, 1, 0};
    int order[][3] = {{0, 1, 7},  {1, 0, 3}, {0, 1, 5},  {1, 0, 16},
                      {0, 1, 13}, {1, 0, 9}, {0, 1, 15}, {1, 0, 12}};
    /* each entry: two sequences and how many tokens of the first; the second gets 16 - n */
    int32_t bt[16], bp[16], bs[16], rows[16], free_list[1];
    for (int step = 0; step < 8 || done[2] < LEN; step++) {
        int n = 0, n_free = 0;
        if (step < 8) {
            int sa = order[step][0], sb = order[step][1], na = order[step][2];
            for (int k = 0; k < 2; k++) {
                int sq = k == 0 ? sa : sb, want = k == 0 ? na : 16 - na;
                for (int i = 0; i < want && done[sq] < LEN; i++, n++) {
                    bt[n] = toks[sq][done[sq]], bp[n] = done[sq], bs[n] = slot_of[sq];
                    rows[n] = sq * 1000 + done[sq]++;
                }
            }
        } else {
            if (done[2] == 0) free_list[n_free++] = 0; /* seq 0 is finished: reuse its slot */
            for (; n < 16 && done[2] < LEN; n++) {
                bt[n] = toks[2][done[2]], bp[n] = done[2], bs[n] = 0;
                rows[n] = 2 * 1000 + done[2]++;
            }
        }
        if (n == 0) continue;
        struct br_batch b = {n, bt, bp, bs, n_free, free_list};
        int32_t idx[16];
        for (int i = 0; i < n; i++) idx[i] = i;
        assert_int_equal(br_engine_embed(e, &b, &err), 0);
        if (br_engine_layers(e, &b, &err)) fail_msg("%s", err.msg);
        assert_int_equal(br_engine_head(e, &b, idx, n, lg, &err), 0);
        for (int i = 0; i < n; i++) {
            int sq = rows[i] / 1000, p = rows[i] % 1000;
            if (memcmp(lg + (size_t)i * V, alone + ((size_t)sq * LEN + p) * V,
                       (size_t)V * sizeof(float)))
                fail_msg("sequence %d position %d differs when batched", sq, p);
        }
    }
    assert_int_equal(done[0], LEN);
    assert_int_equal(done[1], LEN);
    assert_int_equal(done[2], LEN);
    free(lg);
    free(alone);
    br_engine_destroy(&e);
    br_model_destroy(&m);
    remove(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocator_rules),
        cmocka_unit_test(test_batch_composition_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
