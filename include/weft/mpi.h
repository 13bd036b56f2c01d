/* SPDX-License-Identifier: MIT */
/* weft/mpi.h — process pools whose workers are MPI ranks, on one machine or
 * many (Python's mpi4py.futures). A separate library: link with weft_mpi
 * (pkg-config weft-mpi, or CMake's weft::weft_mpi).
 *
 *     int main(int argc, char **argv) {
 *       weft_mpi_init(&argc, &argv);   // the one line
 *       weft_pool pool = weft_process_pool_new();
 *       ...                            // the same calls as a local pool
 *     }
 *
 * Run as usual (`./prog`), the program uses local process pools. Run under
 * `mpiexec -n N ./prog`, rank 0 runs main while ranks 1..N-1 serve its
 * process pools until main ends: every process pool created without a
 * start method then runs its tasks on those ranks (SPMD mode, as
 * `mpiexec -n N python -m mpi4py.futures prog.py`).
 *
 * Tasks and the initializer are named by the object they lie in and their
 * offset there (see weft_process_new), so every rank must run the same
 * program. An MPI pool runs bytes tasks as local process pools do:
 * apply_async, map, imap, futures, callbacks, as_completed, the progress
 * hook, close/join/terminate; a task's failure code and message, and its
 * time limit, reach its future. Differences from a local pool:
 *   - a rank runs one task at a time; start one rank per core;
 *   - a task that crashes its rank ends the whole job at once: the rank
 *     prints which task of which pool it ran, on which rank and host, and
 *     mpiexec exits non-zero (Open MPI does not let a job lose a rank);
 *   - a task past its time limit fails with WEFT_ETASKTIMEOUT, but its rank
 *     cannot be killed: it takes no other task until that one returns;
 *   - initarg must be NULL (a pointer means nothing on another machine);
 *     maxtasksperchild has no effect (ranks are not replaced);
 *   - a cancel stops only a task not yet sent to a rank.
 * weft uses its own duplicate of MPI_COMM_WORLD, so a program may use MPI
 * itself: initialise it with MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...)
 * before weft_mpi_init (which then does not initialise it again), and
 * finalise nothing: weft finalises MPI when main ends. */
#ifndef WEFT_MPI_H
#define WEFT_MPI_H

#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sets the program up for MPI when it was started by mpiexec with more than
 * one rank: on rank 0 returns 0 and makes MPI ranks the backend of process
 * pools; on every other rank serves rank 0's pools and never returns (the
 * rank exits when rank 0's main ends). Started otherwise (no mpiexec, or a
 * single rank), changes nothing and returns 0: pools stay local. Errors:
 * WEFT_EINVAL if MPI was initialised by the program without
 * MPI_THREAD_MULTIPLE, or cannot give it; WEFT_EALREADY the second time. */
WEFT_API int weft_mpi_init(int *argc, char ***argv);

/* Whether process pools run on MPI ranks (weft_mpi_init found mpiexec and
 * more than one rank). */
WEFT_API bool weft_mpi_active(void);

/* This process's rank and the number of ranks (0 and 1 when not active). */
WEFT_API int weft_mpi_rank(void);
WEFT_API int weft_mpi_size(void);

/* Creates a process pool on MPI ranks whatever the default, e.g.
 * weft_mpi_pool_new(.workers = 8): .workers ranks (left out: every rank
 * but 0; more than there are: all of them). WEFT_EINVAL, with a sentence,
 * when the program is not running on MPI ranks. Options as
 * weft_process_pool_new. */
#define weft_mpi_pool_new(...)                                                          \
  WEFT__WITH_DEFAULTS(weft_pool,                                                         \
                      weft_mpi_pool_new_opts(&(const weft_pool_options){                 \
                          .size_ = sizeof(weft_pool_options), .workers = WEFT_DEFAULT,   \
                          __VA_ARGS__}))
WEFT_API weft_pool weft_mpi_pool_new_opts(const weft_pool_options *opts);

#ifdef __cplusplus
}
#endif

#endif
