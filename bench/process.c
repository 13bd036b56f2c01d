/* Rows for processes: process_start_join. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
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

static double c_sample(long iters, void *arg) {
  (void)arg;
  return bench_c_peer("process_start_join", iters);
}

void bench_process_rows(const bench_config *cfg) {
  if (!bench_wanted(cfg, "process_start_join")) return;
  long iters = cfg->quick ? 20 : 1000;
  bench_result r[3] = {{.impl = "weft"}, {.impl = "c"}, {.impl = "python"}};
  bench_sample samples[2] = {weft_sample, c_sample};
  bench_measure(cfg, iters, 2, samples, NULL, r);
  bench_python("process_start_join.py", cfg->quick ? 10 : 300, cfg->quick ? 1 : cfg->reps, &r[2]);
  bench_report("process_start_join", 3, r);
}
