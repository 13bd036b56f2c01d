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

static void c_fork_waitpid(long iters, void *arg) {
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

void bench_process_rows(const bench_config *cfg) {
  long iters = cfg->quick ? 20 : 1000;
  bench_result r[3] = {{.impl = "weft"}, {.impl = "c"}, {.impl = "python"}};
  bench_fn fns[2] = {weft_start_join, c_fork_waitpid};
  bench_measure(cfg, iters, 2, fns, NULL, r);
  bench_python("process_start_join.py", cfg->quick ? 10 : 300, cfg->quick ? 1 : cfg->reps, &r[2]);
  bench_report("process_start_join", 3, r);
}
