/* Keeps the bitrack_mpi library non-empty before any *_mpi.c source exists. */
typedef int br_empty_mpi_unit_t;
