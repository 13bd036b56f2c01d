/* SPDX-License-Identifier: MIT */
/* Rows for processes: process_start_join. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <weft.h>

#include "bench.h"

static int return_zero(void *arg) {
  (void)arg;
  return 0;
}

static void weft_start_join(long iters, void *arg) {
  (void)arg;
  for (long i = 0; i < iters; i++) {
    weft_process p = weft_process_new(return_zero);
    if (weft_process_start(p) != 0 || weft_process_join(p, WEFT_FOREVER) != 0) {
      fprintf(stderr, "process_start_join: %s\n", weft_last_error());
      exit(1);
    }
    weft_process_close(p);
  }
}

static double weft_sample(long iters, void *arg) { return bench_time(weft_start_join, iters, arg); }

/* The C peer's loop run here, for information: fork's own cost grows with
 * the address space it copies, and this one is weft_bench's (weft's fork
 * handlers run too), where the `c` peer forks a small program that never
 * loads weft. The row's figure stays weft against `c`. */
static void fork_waitpid_here(long iters, void *arg) {
  (void)arg;
  for (long i = 0; i < iters; i++) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid < 0 || waitpid(pid, NULL, 0) != pid) {
      perror("process_start_join: fork");
      exit(1);
    }
  }
}

static double inproc_sample(long iters, void *arg) {
  return bench_time(fork_waitpid_here, iters, arg);
}

static double c_sample(long iters, void *arg) {
  (void)arg;
  return bench_c_peer("process_start_join", iters);
}

void bench_process_rows(const bench_config *cfg) {
  if (!bench_wanted(cfg, "process_start_join")) return;
  long iters = cfg->quick ? 20 : 1000;
  bench_result r[4] = {{.impl = "weft"}, {.impl = "c"}, {.impl = "c_inproc"}, {.impl = "python"}};
  bench_sample samples[3] = {weft_sample, c_sample, inproc_sample};
  bench_measure(cfg, iters, 3, samples, NULL, r);
  bench_python("process_start_join.py", cfg->quick ? 10 : 300, cfg->quick ? 1 : cfg->reps, &r[3]);
  bench_report("process_start_join", 4, r);
}
