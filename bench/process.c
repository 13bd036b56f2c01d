/* SPDX-License-Identifier: MIT */
/* Rows for processes: process_start_join, process_start_join_500. */
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

static double c_sample_500(long iters, void *arg) {
  (void)arg;
  return bench_c_peer("process_start_join_500", iters);
}

static void process_start_join(const bench_config *cfg) {
  long iters = cfg->quick ? 20 : 1000;
  bench_result r[4] = {{.impl = "weft"}, {.impl = "c"}, {.impl = "c_inproc"}, {.impl = "python"}};
  bench_sample samples[3] = {weft_sample, c_sample, inproc_sample};
  bench_measure(cfg, iters, 3, samples, NULL, r);
  bench_python("process_start_join.py", cfg->quick ? 10 : 300, cfg->quick ? 1 : cfg->reps, &r[3]);
  bench_report("process_start_join", 4, r);
}

/* process_start_join_500: the same with 500 idle children alive, which a
 * start must not pay for. */
#define IDLE_CHILDREN 500

static int idle(void *arg) {
  (void)arg;
  for (;;) pause();
  return 0;
}

static void process_start_join_500(const bench_config *cfg) {
  static weft_process kids[IDLE_CHILDREN];
  for (int i = 0; i < IDLE_CHILDREN; i++) {
    kids[i] = weft_process_new(idle);
    if (weft_process_start(kids[i]) != 0) {
      fprintf(stderr, "process_start_join_500: %s\n", weft_last_error());
      exit(1);
    }
  }
  long iters = cfg->quick ? 20 : 1000;
  bench_result r[4] = {{.impl = "weft"}, {.impl = "c"}, {.impl = "c_inproc"}, {.impl = "python"}};
  bench_sample samples[3] = {weft_sample, c_sample_500, inproc_sample};
  bench_measure(cfg, iters, 3, samples, NULL, r);
  for (int i = 0; i < IDLE_CHILDREN; i++) {
    weft_process_kill(kids[i]);
    weft_process_join(kids[i], WEFT_FOREVER);
    weft_process_close(kids[i]);
  }
  /* Python's own start polls every child it has (multiprocessing's
   * _cleanup), so its loop is kept short. */
  bench_python("process_start_join_500.py", cfg->quick ? 10 : 100, cfg->quick ? 1 : 3, &r[3]);
  bench_report("process_start_join_500", 4, r);
}

void bench_process_rows(const bench_config *cfg) {
  if (bench_wanted(cfg, "process_start_join")) process_start_join(cfg);
  if (bench_wanted(cfg, "process_start_join_500")) process_start_join_500(cfg);
}
