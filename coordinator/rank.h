/*
 * One rank of a job, opened once by every command that runs a model (`run`, `serve`,
 * `chat`, `bench model`): the communicator (MPI when the job has several ranks or mpirun
 * started it), the plan, this rank's part of the model (its head re-encoded if asked), the
 * thread pool, the tokenizer, the engine and, on world rank 0, the cluster driver (the
 * scheduler's executor), whose per-step buffers are sized from the engine's max_batch.
 * Rank 0 then drives the steps through r->cluster; every other rank runs br_step_follow.
 * The implementation, rank_mpi.c, is linked only into programs that use MPI.
 */
#ifndef BR_COORDINATOR_RANK_H
#define BR_COORDINATOR_RANK_H

#include <stdbool.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "coordinator/cluster.h"
#include "coordinator/tokenizer.h"
#include "kernels/pool.h"
#include "sharding/plan.h"
#include "worker/comm.h"
#include "worker/engine.h"
#include "worker/model.h"

/* No tokenizer; the model's if it has one (r->tok may be NULL); the model's, or failure */
enum br_rank_tok { BR_RANK_TOK_NONE = 0, BR_RANK_TOK_OPTIONAL, BR_RANK_TOK_REQUIRED };

struct br_rank;
/* A phase of the opening (ctx: the opts' hook_ctx); non-zero (err set) fails it. */
typedef int (*br_rank_hook)(void *ctx, struct br_rank *r, struct br_err *err);

struct br_rank_opts {
    const char *model_path; /* a GGUF file, or a directory from `bitrack shard` */
    int tp, pp;             /* 1 x 1: one process, unless started by mpirun */
    bool no_mpi;            /* one process even under mpirun */
    int *argc;              /* for MPI_Init; may be NULL */
    char ***argv;
    /* br_model_load_rank's layout. link_gbit > 0 gives the link: the communicator's
     * collectives are chosen for its one-way time, and a file's BR_LAYOUT_AUTO under TP is
     * the layout cheaper for one token per step over it (br_plan_choose_layout) */
    int layout;
    double link_gbit, link_us;
    uint32_t head_type; /* re-encode the head as this type (br_model_quantize_head_as); 0: no */
    bool describe;      /* rank 0 prints the plan to stderr */
    int threads;        /* per rank; 0: the cores, shared by this machine's ranks */
    int32_t n_ctx, max_batch, n_seq; /* the engine's; 0 (n_ctx: or above the model's): default */
    enum br_rank_tok tok;
    /* on_comm: the communicator is up, nothing loaded (a server starts its front end and
     * watches the ranks); on_model: the model and tokenizer are loaded, not the engine
     * (r->n_ctx, max_batch, n_seq may change). Either may be NULL. */
    br_rank_hook on_comm, on_model;
    void *hook_ctx;
};

struct br_rank {
    struct br_comm *comm; /* NULL: one process */
    int rank, threads;    /* world rank (0 alone); the pool's threads */
    struct br_plan *plan; /* NULL for one rank */
    struct br_model *model;
    struct br_pool *pool;
    struct br_tok *tok; /* NULL without a tokenizer */
    struct br_engine *engine;
    struct br_cluster *cluster; /* world rank 0 only */
    int32_t n_ctx, max_batch, n_seq;
    double t_load; /* seconds the model took to load */
};

/* Opens this rank; *out owns everything. On failure err says why and every step is undone
 * but the communicator: *out holds only it (NULL for one process), for the caller to
 * report the error, end the job with br_rank_abort, then br_rank_close. */
int br_rank_open(const struct br_rank_opts *o, struct br_rank **out, struct br_err *err);
/* Ends the whole job with exit code `code` (MPI); nothing for one process or NULL. */
void br_rank_abort(struct br_rank *r, int code);
/* Closes everything in reverse order and finalizes MPI; NULL-safe, NULLs *r. */
void br_rank_close(struct br_rank **r);

#endif
