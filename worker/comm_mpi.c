/*
 * struct br_comm over MPI (see comm_mpi.h). Collectives run on a per-stage communicator;
 * pipeline and coordinator messages on the world communicator with their own tags, so a
 * result for rank 0 can never be taken for a pipeline message.
 */
#include "worker/comm_mpi.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

enum { TAG_PIPE = 101, TAG_ROOT = 102 };

struct mpi_impl {
    MPI_Comm stage;
    int *bytes_counts, *bytes_displs; /* (tp,) scratch */
};

static struct mpi_impl *impl(struct br_comm *c)
{
    return c->impl;
}

static int mpi_status(int rc)
{
    return rc == MPI_SUCCESS ? BR_OK : BR_E_UNAVAILABLE;
}

static int op_allgather(struct br_comm *c, const void *send, void *recv, const int *counts,
                        const int *displs)
{
    c->stats.bytes_sent += (uint64_t)counts[c->tp_rank] * (uint64_t)(c->tp - 1);
    c->stats.messages++;
    return mpi_status(MPI_Allgatherv(send, counts[c->tp_rank], MPI_BYTE, recv, counts, displs,
                                     MPI_BYTE, impl(c)->stage));
}

static int op_reduce_scatter_i32(struct br_comm *c, const int32_t *send, int32_t *recv,
                                 const int *counts)
{
    uint64_t total = 0;
    for (int r = 0; r < c->tp; r++) total += (uint64_t)counts[r];
    c->stats.bytes_sent += 4 * (total - (uint64_t)counts[c->tp_rank]);
    c->stats.messages++;
    return mpi_status(MPI_Reduce_scatter(send, recv, counts, MPI_INT32_T, MPI_SUM, impl(c)->stage));
}

static int op_send_next(struct br_comm *c, const void *buf, size_t bytes)
{
    c->stats.bytes_sent += bytes;
    c->stats.messages++;
    int dest = c->world_rank + c->tp;
    return mpi_status(MPI_Send(buf, (int)bytes, MPI_BYTE, dest, TAG_PIPE, MPI_COMM_WORLD));
}

static int op_recv_prev(struct br_comm *c, void *buf, size_t bytes)
{
    int src = c->world_rank - c->tp;
    return mpi_status(
        MPI_Recv(buf, (int)bytes, MPI_BYTE, src, TAG_PIPE, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
}

static int op_send_root(struct br_comm *c, const void *buf, size_t bytes, void **pending)
{
    c->stats.bytes_sent += bytes;
    c->stats.messages++;
    MPI_Request *req = malloc(sizeof *req);
    if (!req) return BR_E_NOMEM;
    int rc = MPI_Isend(buf, (int)bytes, MPI_BYTE, 0, TAG_ROOT, MPI_COMM_WORLD, req);
    if (rc != MPI_SUCCESS) {
        free(req);
        return BR_E_UNAVAILABLE;
    }
    *pending = req;
    return BR_OK;
}

static int op_wait_root(struct br_comm *c, void **pending)
{
    (void)c;
    if (!*pending) return BR_OK;
    MPI_Request *req = *pending;
    int rc = MPI_Wait(req, MPI_STATUS_IGNORE);
    free(req);
    *pending = NULL;
    return mpi_status(rc);
}

static int op_recv_from(struct br_comm *c, int world_rank, void *buf, size_t bytes)
{
    (void)c;
    return mpi_status(MPI_Recv(buf, (int)bytes, MPI_BYTE, world_rank, TAG_ROOT, MPI_COMM_WORLD,
                               MPI_STATUS_IGNORE));
}

static int op_bcast(struct br_comm *c, void *buf, size_t bytes)
{
    if (c->tp_rank == 0) {
        c->stats.bytes_sent += bytes * (uint64_t)(c->tp - 1);
        c->stats.messages++;
    }
    return mpi_status(MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, impl(c)->stage));
}

static const struct br_comm_ops mpi_ops = {
    op_allgather, op_reduce_scatter_i32, op_send_next, op_recv_prev,
    op_send_root, op_wait_root,          op_recv_from, op_bcast,
};

int br_comm_mpi_launched(void)
{
    int up = 0;
    MPI_Initialized(&up);
    return up || getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

int br_comm_mpi_world_size(void)
{
    int up = 0, n = 1;
    MPI_Initialized(&up);
    if (up) MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

int br_comm_mpi_create(int *argc, char ***argv, int tp, int pp, struct br_comm **out,
                       struct br_err *err)
{
    *out = NULL;
    int up = 0, provided = 0;
    MPI_Initialized(&up);
    if (!up && MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return br_err_set(err, BR_E_UNAVAILABLE, "MPI_Init failed");
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (tp < 1 || pp < 1 || tp * pp != size) {
        MPI_Finalize();
        return br_err_set(err, BR_E_INVALID, "--tp %d x --pp %d = %d ranks, but mpirun started %d",
                          tp, pp, tp * pp, size);
    }
    struct br_comm *c = calloc(1, sizeof *c);
    struct mpi_impl *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c), free(m);
        MPI_Finalize();
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    c->ops = &mpi_ops;
    c->impl = m;
    c->tp = tp, c->pp = pp;
    c->world_rank = rank, c->world_size = size;
    c->tp_rank = rank % tp, c->pp_rank = rank / tp;
    MPI_Comm_split(MPI_COMM_WORLD, c->pp_rank, c->tp_rank, &m->stage);
    /* errors come back as codes, so a lost peer is reported, not an instant abort */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(m->stage, MPI_ERRORS_RETURN);
    *out = c;
    return BR_OK;
}

void br_comm_mpi_destroy(struct br_comm **cp)
{
    if (!cp || !*cp) return;
    struct br_comm *c = *cp;
    struct mpi_impl *m = impl(c);
    MPI_Comm_free(&m->stage);
    free(m);
    free(c);
    *cp = NULL;
    MPI_Finalize();
}

void br_comm_mpi_abort(struct br_comm *c, int code)
{
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
}
