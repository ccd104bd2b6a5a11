/*
 * In-process transport for struct br_comm (worker/comm.h): the tp x pp ranks of a job are
 * threads of one process, each with its own struct br_comm, and every operation has the
 * semantics comm.h gives it under MPI. Collectives meet at a barrier of the stage's
 * threads; point-to-point messages are copied into a queue per (sender, receiver), so a
 * send never waits for its receiver, as an eager MPI send does not.
 *
 * What it is for: running every layout of the engine in one process (layout exactness
 * tests in seconds, without mpirun), and anything else that drives ranks in a test.
 * Traffic is counted exactly as comm_mpi counts it.
 */
#ifndef BR_WORKER_COMM_LOCAL_H
#define BR_WORKER_COMM_LOCAL_H

#include "bitrack/status.h"
#include "worker/comm.h"

struct br_comm_local;

/* A world of tp x pp ranks (rank r: stage r / tp, TP rank r % tp, as comm_mpi lays them). */
int br_comm_local_create(int tp, int pp, struct br_comm_local **out, struct br_err *err);
/* Rank r's communicator, to be used by one thread at a time; owned by the world. */
struct br_comm *br_comm_local_rank(struct br_comm_local *w, int world_rank);
/* Ends the world's operations: every waiting or later operation of every rank fails with
 * BR_E_UNAVAILABLE, why naming the caller's reason (a lost rank). Any thread may call it. */
void br_comm_local_abort(struct br_comm_local *w, const char *why);
/* Frees the world (NULL-safe); no rank may be inside an operation. */
void br_comm_local_destroy(struct br_comm_local **w);

#endif
