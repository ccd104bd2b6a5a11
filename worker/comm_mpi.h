/*
 * MPI transport for struct br_comm (worker/comm.h). Rank r of the world is stage
 * r / tp, TP rank r % tp, so a TP group is contiguous in rank order (mpirun places
 * consecutive ranks together). The calling thread must be the only one using MPI.
 */
#ifndef BR_WORKER_COMM_MPI_H
#define BR_WORKER_COMM_MPI_H

#include "bitrack/status.h"
#include "worker/comm.h"

/* True when this process was started by mpirun/mpiexec (or a world is already up). */
int br_comm_mpi_launched(void);

/* Initializes MPI (thread level FUNNELED) and the group layout; the world size must be
 * tp * pp. On failure *out is NULL, err says why, and MPI is finalized. */
int br_comm_mpi_create(int *argc, char ***argv, int tp, int pp, struct br_comm **out,
                       struct br_err *err);
/* Frees the communicator and finalizes MPI; NULL-safe. */
void br_comm_mpi_destroy(struct br_comm **c);
/* Ends the whole job with an error code (a rank that cannot continue). */
void br_comm_mpi_abort(struct br_comm *c, int code);
/* World size of an initialized MPI (1 when not launched by mpirun). */
int br_comm_mpi_world_size(void);

#endif
