/*
 * Opening one rank of a job (rank.h): a step that fails unwinds the ones before it in
 * reverse order, leaving only the communicator the caller needs to end the job.
 */
#include "coordinator/rank.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitrack/progress.h"
#include "sharding/config.h"
#include "sharding/gguf.h"
#include "worker/comm_mpi.h"

/* The cores this process may use, shared by this machine's ranks (as llama.cpp does). */
static int threads_default(const struct br_comm *comm)
{
    cpu_set_t set;
    long cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                             : sysconf(_SC_NPROCESSORS_ONLN);
    long t = cores / (comm ? br_comm_mpi_ranks_here(comm) : 1);
    return t < 1 ? 1 : t > 1024 ? 1024 : (int)t;
}

/* The layout to load with (rank.h, br_rank_opts.layout). */
static int choose_layout(const struct br_rank_opts *o, int *layout, struct br_err *err)
{
    *layout = o->layout;
    struct stat st;
    if (o->layout != BR_LAYOUT_AUTO || o->link_gbit <= 0 || o->tp <= 1 ||
        (stat(o->model_path, &st) == 0 && S_ISDIR(st.st_mode)))
        return BR_OK;
    struct br_gguf *g = NULL;
    struct br_model_config cfg;
    int rc = br_gguf_open(o->model_path, &g, err);
    if (!rc) rc = br_config_from_gguf(g, &cfg, err);
    br_gguf_close(&g);
    if (!rc) *layout = br_plan_choose_layout(&cfg, o->tp, 1, o->link_gbit, o->link_us);
    return rc;
}

/* Prefixes err's message with this rank's number; returns rc. */
static int rank_err(const struct br_rank *r, int rc, struct br_err *err)
{
    struct br_err e = *err;
    return br_err_set(err, rc, "rank %d: %s", r->rank, e.msg);
}

int br_rank_open(const struct br_rank_opts *o, struct br_rank **out, struct br_err *err)
{
    *out = NULL;
    struct br_rank *r = calloc(1, sizeof *r);
    if (!r) return br_err_set(err, BR_E_NOMEM, "out of memory");
    r->n_ctx = o->n_ctx, r->max_batch = o->max_batch, r->n_seq = o->n_seq;
    int rc = BR_OK;
    if (!o->no_mpi && (o->tp * o->pp > 1 || br_comm_mpi_launched())) {
        if ((rc = br_comm_mpi_create(o->argc, o->argv, o->tp, o->pp, &r->comm, err))) goto fail;
        r->rank = r->comm->world_rank;
        if (o->link_gbit > 0)
            br_comm_mpi_set_link(r->comm, o->link_us * 1e-6, o->link_gbit * 1e9 / 8);
    }
    r->threads = o->threads > 0 ? o->threads : threads_default(r->comm);
    if (o->on_comm && (rc = o->on_comm(o->hook_ctx, r, err))) goto fail_comm;
    /* where this machine's ranks and their threads outnumber its cores, a waiting rank
     * naps instead of polling, so that the ranks with work get the cores */
    if (r->comm && br_comm_mpi_oversubscribed(r->comm, r->threads)) {
        if (!o->on_comm) br_comm_mpi_watch(r->comm, 0, NULL, NULL);
        br_comm_mpi_set_spin(r->comm, BR_COMM_MPI_NAP_SPIN_S);
    }
    double t0 = br_now();
    int layout;
    if ((rc = choose_layout(o, &layout, err))) goto fail_comm;
    if ((rc = br_model_load_rank(o->model_path, o->tp, o->pp, r->rank, layout, &r->plan, &r->model,
                                 err)) ||
        (o->head_type && (rc = br_model_quantize_head_as(r->model, o->head_type, err)))) {
        rank_err(r, rc, err);
        goto fail_model;
    }
    r->t_load = br_now() - t0;
    if (r->rank == 0 && o->describe && r->plan) br_plan_describe(r->plan, 0, stderr);
    if (o->tok != BR_RANK_TOK_NONE && (rc = br_tok_from_gguf(r->model->gguf, &r->tok, err))) {
        if (o->tok == BR_RANK_TOK_REQUIRED) goto fail_model;
        rc = BR_OK;
    }
    if (o->on_model && (rc = o->on_model(o->hook_ctx, r, err))) goto fail_tok;
    if (br_pool_create(r->threads, &r->pool)) {
        rc = br_err_set(err, BR_E_NOMEM, "cannot start %d threads", r->threads);
        goto fail_tok;
    }
    if (r->n_ctx <= 0 || r->n_ctx > r->model->cfg.n_ctx) r->n_ctx = r->model->cfg.n_ctx;
    struct br_engine_opts eo = {.n_ctx = r->n_ctx, .max_batch = r->max_batch, .n_seq = r->n_seq};
    eo.pool = r->pool, eo.comm = r->comm;
    if ((rc = br_engine_create(r->model, &eo, &r->engine, err))) {
        rank_err(r, rc, err);
        goto fail_pool;
    }
    r->max_batch = br_engine_max_batch(r->engine);
    if (r->rank == 0 && (rc = br_cluster_create(r->engine, r->comm, &r->cluster, err)))
        goto fail_engine;
    *out = r;
    return BR_OK;

fail_engine:
    br_engine_destroy(&r->engine);
fail_pool:
    br_pool_destroy(&r->pool);
fail_tok:
    br_tok_destroy(&r->tok);
fail_model:
    br_model_destroy(&r->model);
    br_plan_destroy(&r->plan);
fail_comm:
    if (r->comm) { /* kept for the caller to end the job with */
        *out = r;
        return rc;
    }
fail:
    free(r);
    return rc;
}

void br_rank_abort(struct br_rank *r, int code)
{
    if (r && r->comm) br_comm_mpi_abort(r->comm, code);
}

void br_rank_close(struct br_rank **rp)
{
    struct br_rank *r = rp ? *rp : NULL;
    if (!r) return;
    br_cluster_destroy(&r->cluster);
    br_engine_destroy(&r->engine);
    br_pool_destroy(&r->pool);
    br_tok_destroy(&r->tok);
    br_model_destroy(&r->model);
    br_plan_destroy(&r->plan);
    br_comm_mpi_destroy(&r->comm);
    free(r);
    *rp = NULL;
}
