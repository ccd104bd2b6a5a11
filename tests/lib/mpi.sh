# Sourced by the tests that start `mpirun` on this machine (after `set -euo pipefail`):
#   br_mpi_init NAME   TMP=${BR_TMP:-/tmp}/NAME.$$ (created, removed at exit); Open MPI
#                      allowed to run as root and to put more ranks than cores on this
#                      machine; its own allocations left out of the leak check; and
#                      MPIRUN=(mpirun --oversubscribe --bind-to none -np), to which the
#                      test adds the rank count and the command.
br_mpi_init() {
    TMP=${BR_TMP:-/tmp}/$1.$$
    mkdir -p "$TMP"
    trap 'rm -rf "$TMP"' EXIT
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_MCA_rmaps_base_oversubscribe=1
    export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
    MPIRUN=(mpirun --oversubscribe --bind-to none -np)
}
