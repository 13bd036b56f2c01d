/* SPDX-License-Identifier: MIT */
/* Rows for the MPI backend: pool_submit_mpi and pool_map_mpi. They run
 * bench/mpi/bench_mpi.c and the mpi4py peer under mpiexec (1 master + 2
 * worker ranks, oversubscribed on this machine's cores), and say why not
 * when weft was built without MPI or a peer cannot run. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/* Every rank on this machine; as root Open MPI must be told it may run. */
static const char *mpiexec_args(void) {
  return geteuid() == 0 ? "--allow-run-as-root --oversubscribe --mca plm_rsh_agent false"
                        : "--oversubscribe --mca plm_rsh_agent false";
}

static void weft_mpi(const char *mode, int ranks, long iters, int reps, bench_result *r) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "mpiexec %s -n %d '%s' %s %ld %d 2>&1", mpiexec_args(), ranks,
           WEFT_BENCH_MPI, mode, iters, reps);
  bench_command(cmd, mode, r);
}

static void mpi4py(long iters, int reps, const char *extra, bench_result *r) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "mpiexec %s -n 3 /usr/bin/python3 -m mpi4py.futures '%s/pool_submit_mpi.py' %ld %d %s "
           "2>&1",
           mpiexec_args(), WEFT_BENCH_PY_DIR, iters, reps, extra);
  bench_command(cmd, "mpi4py", r);
}

static bool no_mpi(const char *row, int n, bench_result *r) {
  if (WEFT_BENCH_MPI[0] != '\0' && access(WEFT_BENCH_MPI, X_OK) == 0) return false;
  for (int i = 0; i < n; i++)
    snprintf(r[i].note, sizeof r[i].note,
             "weft was built without MPI (install libopenmpi-dev and openmpi-bin)");
  bench_report(row, n, r);
  return true;
}

void bench_mpi_rows(const bench_config *cfg) {
  if (bench_wanted(cfg, "pool_submit_mpi")) {
    long iters = cfg->quick ? 2000 : 100000;
    bench_result r[3] = {{.impl = "weft", .ns = -1}, {.impl = "mpi4py", .ns = -1},
                         {.impl = "c", .ns = -1}};
    if (!no_mpi("pool_submit_mpi", 3, r)) {
      weft_mpi("submit", 3, iters, cfg->reps, &r[0]);
      /* mpi4py takes ~170 us a task here: a tenth of the tasks, 3 samples. */
      mpi4py(iters / 10, cfg->quick ? 1 : 3, "", &r[1]);
      weft_mpi("c", 2, iters, cfg->reps, &r[2]);
      bench_report("pool_submit_mpi", 3, r);
    }
  }
  if (bench_wanted(cfg, "pool_map_mpi")) {
    long iters = cfg->quick ? 20000 : 1000000;
    bench_result r[2] = {{.impl = "weft", .ns = -1}, {.impl = "mpi4py", .ns = -1}};
    if (!no_mpi("pool_map_mpi", 2, r)) {
      weft_mpi("map", 3, iters, cfg->reps, &r[0]);
      mpi4py(iters, cfg->quick ? 1 : 3, "map", &r[1]);
      bench_report("pool_map_mpi", 2, r);
    }
  }
}
