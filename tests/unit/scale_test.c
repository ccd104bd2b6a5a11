/*
 * bench/scale.c: the projection's arithmetic against numbers worked out by hand from the
 * formulas in bench/scale.h, the loopback communicator's data movement and counts, and a
 * measurement of one rank of a small synthetic model whose collectives are known.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench/scale.h"
#include "sharding/plan.h"
#include "worker/model.h"
#include "sharding/synth.h"
#include "test_util.h"

static void assert_close(double got, double want)
{
    if (fabs(got - want) > 1e-9 * fabs(want) + 1e-15) fail_msg("got %.12g, want %.12g", got, want);
}

static const struct br_scale_cost k_cost = {
    .tp = 2,
    .batch = 4,
    .layer_s = 1e-3,
    .embed_s = 1e-4,
    .head_s = 5e-4,
    .ag_n = 6,
    .ag_bytes = 6000,
    .rs_n = 2,
    .rs_bytes = 8000,
    .head_ag_n = 2,
    .head_ag_bytes = 100,
};

/* d 1024, 2 x 2, stages of 3 and 2 layers, a = 10 us, bw = 1e9 B/s. By hand:
 *   desc = 4 (4 + 5*64) = 1296 B
 *   layer collectives = 8 x ceil(log2 2) a + (2-1) 14000 / 2 / bw = 87 us
 *   bcast(desc) = 1 x (a + 1296 / bw) = 11.296 us
 *   head's collectives = 1 x (2 a + 100 / 2 / bw) = 20.05 us
 *   hop = 2 a + (1296 + 4 x 4 x 1024 / 2) / bw = 29.488 us
 *   back = 2 (a + 32 / bw) = 20.064 us
 *   stage 0 = 3.1 ms + 11.296 + 3 x 87 us = 3.372296 ms (+ hop = 3.401784 ms)
 *   stage 1 = 2.5 ms + 11.296 + 2 x 87 + 20.05 us = 2.705346 ms (+ back = 2.72541 ms)
 *   latency = 3.372296 + 2.705346 + 0.029488 + 0.020064 = 6.127194 ms */
static void projection_by_hand(void **state)
{
    (void)state;
    const int32_t layers[2] = {3, 2};
    struct br_scale_env env = {.net = {1e-5, 1e9}, .max_batch = 64, .layout = BR_LAYOUT_SHARDED};
    struct br_scale_proj p;
    br_scale_project_stages(1024, 2, 2, layers, &k_cost, &env, &p);
    assert_close(p.latency_s, 6.127194e-3);
    assert_close(p.compute_s, 5.6e-3);
    assert_close(p.comm_s, 6.127194e-3 - 5.6e-3);
    assert_close(p.stage_max_s, 3.401784e-3);
    assert_close(p.tok_s, 4 / 6.127194e-3);
    assert_close(p.tok_s_pipelined, 4 / 3.401784e-3);

    /* all four ranks on 2 cores, waiting ranks yielding: one stage (2 ranks) computes at
     * a time in latency, k = 2 x 1 / 2 = 1; all four with P steps in flight, k = 2 */
    env.cores = 2;
    env.threads = 1;
    br_scale_project_stages(1024, 2, 2, layers, &k_cost, &env, &p);
    assert_close(p.latency_s, 6.127194e-3);
    assert_close(p.stage_max_s, 2 * 3.1e-3 + 0.272296e-3 + 0.029488e-3);
    env.threads = 2; /* two threads per rank: k = 2 in latency, 4 pipelined */
    br_scale_project_stages(1024, 2, 2, layers, &k_cost, &env, &p);
    assert_close(p.latency_s, 6.127194e-3 + 5.6e-3);
    assert_close(p.stage_max_s, 4 * 3.1e-3 + 0.272296e-3 + 0.029488e-3);
    env.threads = 1;
    env.cores = 8; /* more cores than ranks: k = 1 */
    br_scale_project_stages(1024, 2, 2, layers, &k_cost, &env, &p);
    assert_close(p.latency_s, 6.127194e-3);

    /* one process: no collectives, no hops, nothing sent back */
    struct br_scale_cost one = k_cost;
    one.tp = 1;
    const int32_t all[1] = {5};
    env.cores = 0;
    br_scale_project_stages(1024, 1, 1, all, &one, &env, &p);
    assert_close(p.latency_s, 5e-3 + 1e-4 + 5e-4);
    assert_close(p.comm_s, 0);
    assert_close(p.tok_s_pipelined, p.tok_s);
}

/* 4 x 1, one layer, sharded, a = 10 us, bw = 1e9 B/s: (T-1) g = 3 us < (2-1) a, so the
 * all-gathers and the reduce-scatters go in one direct round each:
 *   2 all-gathers of 1000 B: 2 x (a + 3 (250 / bw + g)) = 27.5 us
 *   2 reduce-scatters of 4000 B: 2 x (a + 3 (1000 / bw + g)) = 32 us (MPI: 2 x 46 us)
 *   bcast(desc) = 2 (a + 1296 / bw) = 22.592 us; back = 3 (a + 8 / bw) = 30.024 us
 *   latency = 1 ms + 27.5 + 32 + 22.592 + 30.024 us = 1.112116 ms */
static void projection_direct_by_hand(void **state)
{
    (void)state;
    const int32_t one[1] = {1};
    const struct br_scale_cost k = {.tp = 4,
                                    .batch = 1,
                                    .layer_s = 1e-3,
                                    .ag_n = 2,
                                    .ag_bytes = 2000,
                                    .agd_n = 2,
                                    .agd_bytes = 2000,
                                    .rs_n = 2,
                                    .rs_bytes = 8000};
    struct br_scale_env env = {.net = {1e-5, 1e9}, .max_batch = 64, .layout = BR_LAYOUT_SHARDED};
    struct br_scale_proj p;
    br_scale_project_stages(1024, 4, 1, one, &k, &env, &p);
    assert_close(p.latency_s, 1.112116e-3);
}

static void collective_formulas(void **state)
{
    (void)state;
    struct br_scale_net n = {2e-5, 1e9};
    assert_close(br_scale_allgather_s(&n, 1, 1e6), 0);
    /* blocks up to BR_COLL_DIRECT_BLOCK_MAX in one round from 3 ranks on where
     * (T-1) g < (ceil(log2 T) - 1) a, others doubling */
    assert_close(br_scale_allgather_s(&n, 2, 4000), 2e-5 + 2000 / 1e9);
    assert_close(br_scale_allgather_s(&n, 4, 4000), 2e-5 + 3 * (1000 / 1e9 + BR_COLL_MSG_S));
    assert_close(br_scale_allgather_s(&n, 5, 5e5), 2e-5 + 4 * (1e5 / 1e9 + BR_COLL_MSG_S));
    assert_close(br_scale_allgather_s(&n, 5, 5e6), 3 * 2e-5 + 4 * 1e6 / 1e9);
    assert_false(br_coll_direct_fits(BR_COLL_ALLGATHER, 4, 4.0 * (BR_COLL_DIRECT_BLOCK_MAX + 1)));
    assert_true(br_coll_direct_fits(BR_COLL_ALLGATHER, 4, 4.0 * BR_COLL_DIRECT_BLOCK_MAX));
    assert_false(br_coll_direct_fits(BR_COLL_ALLGATHER, 2, 4));
    assert_false(br_coll_direct_fits(BR_COLL_ALLREDUCE_MAX, 4, BR_COLL_DIRECT_MAX + 4));
    assert_true(br_coll_direct_fits(BR_COLL_ALLREDUCE_MAX, 4, BR_COLL_DIRECT_MAX));
    assert_false(br_coll_direct_fits(BR_COLL_ALLREDUCE_MAX, 2, 4));
    /* int32 blocks: the largest holds ceil(n / T) values */
    assert_true(br_coll_direct_fits(BR_COLL_ALLREDUCE_I32, 3, 3.0 * BR_COLL_DIRECT_BLOCK_MAX));
    assert_false(br_coll_direct_fits(BR_COLL_ALLREDUCE_I32, 3, 3.0 * BR_COLL_DIRECT_BLOCK_MAX + 4));
    assert_true(br_coll_direct_fits(BR_COLL_REDUCE_SCATTER, 8, 4));
    assert_false(br_coll_direct_fits(BR_COLL_REDUCE_SCATTER, 2, 4000));
    /* one round where it saves time: over 25 us links, not over 3 us ones at 16 ranks */
    assert_true(br_coll_direct(BR_COLL_ALLREDUCE_MAX, 16, 400, 25e-6, 1e9));
    assert_false(br_coll_direct(BR_COLL_ALLREDUCE_MAX, 16, 400, 3e-6, 1e9));
    assert_true(br_coll_direct(BR_COLL_ALLREDUCE_MAX, 3, 400, 3e-6, 1e9));
    /* the max-all-reduce sends its whole buffer to each: slow links keep doubling */
    assert_false(br_coll_direct(BR_COLL_ALLREDUCE_MAX, 64, 4096, 25e-6, 1.25e9));
    /* the int32 all-reduce in two direct rounds: 2 (a + (T-1) (M/(T bw) + g)) */
    assert_true(br_coll_direct(BR_COLL_ALLREDUCE_I32, 16, 32768, 25e-6, 25e9 / 8));
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_I32, 16, 32768, 25e-6, 25e9 / 8),
                 2 * (25e-6 + 15 * (2048 / (25e9 / 8) + BR_COLL_MSG_S)));
    /* ... not at 16 ranks over 3 us (Rabenseifner: 8 a + 2 (15/16) M/bw is less) */
    assert_false(br_coll_direct(BR_COLL_ALLREDUCE_I32, 16, 32768, 3e-6, 25e9 / 8));
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_I32, 16, 32768, 3e-6, 25e9 / 8),
                 8 * 3e-6 + 2 * 15 * 2048 / (25e9 / 8));
    /* ... never at 2 ranks (doubling is one round) */
    assert_false(br_coll_direct(BR_COLL_ALLREDUCE_I32, 2, 32768, 25e-6, 25e9 / 8));
    /* ... at 4 ranks only where the bytes outweigh 2 (T-1) - 2 more messages: doubling
     * 2 (a + M/bw), direct 2 a + 6 g + 1.5 M/bw */
    assert_false(br_coll_direct(BR_COLL_ALLREDUCE_I32, 4, 4000, 2e-5, 1e9));
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_I32, 4, 4000, 2e-5, 1e9), 2 * (2e-5 + 4000 / 1e9));
    assert_true(br_coll_direct(BR_COLL_ALLREDUCE_I32, 4, 2e5, 2e-5, 1e9));
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_I32, 4, 2e5, 2e-5, 1e9),
                 2 * (2e-5 + 3 * (5e4 / 1e9 + BR_COLL_MSG_S)));
    /* the sharded layout's reduce-scatter goes direct on the same condition as all-gathers */
    assert_true(br_coll_direct(BR_COLL_REDUCE_SCATTER, 16, 32768, 25e-6, 25e9 / 8));
    assert_false(br_coll_direct(BR_COLL_REDUCE_SCATTER, 16, 32768, 3e-6, 25e9 / 8));
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_MAX, 16, 400, 3e-6, 1e9), 4 * (3e-6 + 400 / 1e9));
    assert_close(br_scale_bcast_s(&n, 1, 100), 0);
    assert_close(br_scale_bcast_s(&n, 5, 100), 3 * (2e-5 + 100 / 1e9));
    assert_close(br_scale_bcast_s(&n, 8, 100), 3 * (2e-5 + 100 / 1e9));
    /* all-reduce: recursive doubling for few bytes, Rabenseifner for many */
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_I32, 2, 4000, 2e-5, 1e9), 2e-5 + 4000 / 1e9);
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_MAX, 2, 800, 2e-5, 1e9), 2e-5 + 800 / 1e9);
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_MAX, 8, 800, 2e-5, 1e9),
                 2e-5 + 7 * (800 / 1e9 + BR_COLL_MSG_S));
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_MAX, 8, 8000, 2e-5, 1e9), 3 * (2e-5 + 8000 / 1e9));
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_I32, 8, 8e6, 2e-5, 1e9),
                 6 * 2e-5 + 2 * 7 * 1e6 / 1e9);
    assert_close(br_coll_time(BR_COLL_REDUCE_SCATTER, 4, 4000, 2e-5, 1e9),
                 2e-5 + 3 * (1000 / 1e9 + BR_COLL_MSG_S));
    assert_close(br_coll_time(BR_COLL_REDUCE_SCATTER, 4, 4e6, 2e-5, 1e9), 2 * 2e-5 + 3 * 1e6 / 1e9);
    assert_close(br_coll_time(BR_COLL_ALLREDUCE_I32, 1, 4000, 2e-5, 1e9), 0);
}

static void loopback_moves_and_counts(void **state)
{
    (void)state;
    struct br_comm *c = NULL;
    assert_int_equal(br_scale_loopback_create(3, 3, 1, 0, &c), BR_E_INVALID);
    assert_null(c);
    assert_int_equal(br_scale_loopback_create(3, 1, 2, 1, &c), BR_OK);
    assert_int_equal(c->world_rank, 4);
    const uint8_t mine[2] = {1, 2};
    uint8_t got[12];
    memset(got, 0xee, sizeof got);
    const int counts[3] = {4, 2, 6}, displs[3] = {0, 4, 6};
    assert_int_equal(c->ops->allgather(c, mine, got, counts, displs), BR_OK);
    const uint8_t want[12] = {1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2};
    assert_memory_equal(got, want, 12);
    const int32_t send[4] = {10, 20, 21, 30};
    int32_t recv[2] = {0, 0};
    const int rc_counts[3] = {1, 2, 1};
    assert_int_equal(c->ops->reduce_scatter_i32(c, send, recv, rc_counts), BR_OK);
    assert_int_equal(recv[0], 20);
    assert_int_equal(recv[1], 21);
    const struct br_scale_trace *t = br_scale_loopback_trace(c);
    assert_int_equal(t->allgather_n, 1);
    assert_int_equal(t->allgather_bytes, 12);
    assert_int_equal(t->rs_n, 1);
    assert_int_equal(t->rs_bytes, 16);
    /* bytes this rank would send: 2 x 2 for the all-gather, 4 x (4 - 2) for the RS */
    assert_int_equal(c->stats.bytes_sent, 4 + 8);
    br_scale_loopback_reset(c);
    assert_int_equal(br_scale_loopback_trace(c)->rs_n, 0);
    br_scale_loopback_destroy(&c);
    assert_null(c);
    br_scale_loopback_destroy(&c);
}

static void measure_a_rank(void **state)
{
    (void)state;
    struct br_synth_opts o;
    br_synth_opts_default(&o);
    o.n_embd = 512;
    o.n_ff = 512;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_layer = 4;
    o.n_vocab = 300;
    char *path = br_test_tmp_path("scale-model");
    struct br_err err = {{0}};
    if (br_synth_write(&o, path, &err)) fail_msg("synth: %s", err.msg);
    struct br_pool *pool = NULL;
    assert_int_equal(br_pool_create(1, &pool), 0);
    for (int rank = 0; rank < 4; rank++) {
        struct br_model *m = NULL;
        struct br_plan *plan = NULL;
        if (br_model_load_rank(path, 2, 2, rank, -1, &plan, &m, &err)) fail_msg("%s", err.msg);
        const int32_t batches[2] = {1, 3};
        struct br_scale_cost cost[2];
        assert_int_equal(br_scale_measure(m, pool, batches, 2, 2, 0,
                                          rank % 2 ? BR_SCALE_CPU : BR_SCALE_WALL, cost, &err),
                         BR_OK);
        for (int b = 0; b < 2; b++) {
            double B = batches[b];
            assert_int_equal(cost[b].tp, 2);
            assert_int_equal(cost[b].batch, batches[b]);
            assert_true(cost[b].layer_s > 0);
            /* per layer (replicated residual): the two sub-norms' packed statistics, max
             * (absmax + 4 head sums; absmax + 2 FFN chunk sums per token); the O and down
             * partial sums, int32, the whole width per token; no collective in the head */
            assert_true(cost[b].ag_n == 0 && cost[b].rs_n == 0);
            assert_true(cost[b].arm_n == 2);
            assert_true(cost[b].arm_bytes == B * 4 * (1 + 4) + B * 4 * (1 + 2));
            assert_true(cost[b].ar_n == 2);
            assert_true(cost[b].ar_bytes == 2 * 4 * B * 512);
            assert_true((cost[b].embed_s > 0) == (rank < 2));
            assert_true((cost[b].head_s >= 0) == (rank >= 2));
            assert_true(cost[b].head_ag_n == 0);
            /* the plan's list is what the engine issued */
            struct br_scale_cost k = cost[b];
            br_scale_cost_from_plan(&k, plan);
            assert_true(k.arm_n == cost[b].arm_n && k.arm_bytes == cost[b].arm_bytes);
            assert_true(k.ar_n == cost[b].ar_n && k.ar_bytes == cost[b].ar_bytes);
        }
        br_model_destroy(&m);
        br_plan_destroy(&plan);
    }
    const int32_t bad = 0;
    struct br_scale_cost c0;
    struct br_model *m = NULL;
    assert_int_equal(br_model_load(path, &m, &err), 0);
    assert_int_equal(br_scale_measure(m, pool, &bad, 1, 1, 0, BR_SCALE_WALL, &c0, &err),
                     BR_E_INVALID);
    assert_int_equal(br_scale_measure(m, pool, &bad, 1, 0, 0, BR_SCALE_WALL, &c0, &err),
                     BR_E_INVALID);
    br_model_destroy(&m);
    /* the sharded layout: the engine issues exactly the plan's 8 collectives per layer and
     * the head's 2 */
    for (int rank = 0; rank < 4; rank++) {
        struct br_plan *plan = NULL;
        if (br_model_load_rank(path, 2, 2, rank, BR_LAYOUT_SHARDED, &plan, &m, &err))
            fail_msg("%s", err.msg);
        const int32_t batch = 3;
        struct br_scale_cost got;
        assert_int_equal(br_scale_measure(m, pool, &batch, 1, 1, 0, BR_SCALE_WALL, &got, &err),
                         BR_OK);
        struct br_scale_cost want = got;
        br_scale_cost_from_plan(&want, plan);
        assert_true(got.ag_n == 6 && got.rs_n == 2 && got.ar_n == 0 && got.arm_n == 0);
        assert_true(want.ag_n == got.ag_n && want.ag_bytes == got.ag_bytes);
        assert_true(want.rs_n == got.rs_n && want.rs_bytes == got.rs_bytes);
        if (rank >= 2)
            assert_true(want.head_ag_n == got.head_ag_n && want.head_ag_bytes == got.head_ag_bytes);
        br_model_destroy(&m);
        br_plan_destroy(&plan);
    }
    br_pool_destroy(&pool);
    remove(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(projection_by_hand),  cmocka_unit_test(projection_direct_by_hand),
        cmocka_unit_test(collective_formulas), cmocka_unit_test(loopback_moves_and_counts),
        cmocka_unit_test(measure_a_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
