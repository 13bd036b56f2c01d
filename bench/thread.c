/* SPDX-License-Identifier: MIT */
/* Rows for threads: thread_start_join. */
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

#include "bench.h"

static void *return_null(void *arg) { return arg; }

static void weft_start_join(long iters, void *arg) {
  (void)arg;
  for (long i = 0; i < iters; i++) {
    weft_thread t = weft_thread_new(return_null);
    if (weft_thread_start(t) != 0 || weft_thread_join(t, WEFT_FOREVER, NULL) != 0) {
      fprintf(stderr, "thread_start_join: %s\n", weft_last_error());
      exit(1);
    }
    weft_thread_close(t);
  }
}

static double weft_sample(long iters, void *arg) { return bench_time(weft_start_join, iters, arg); }

static double c_sample(long iters, void *arg) {
  (void)arg;
  return bench_c_peer("thread_start_join", iters);
}

void bench_thread_rows(const bench_config *cfg) {
  if (!bench_wanted(cfg, "thread_start_join")) return;
  long iters = cfg->quick ? 200 : 20000;
  bench_result r[3] = {{.impl = "weft"}, {.impl = "c"}, {.impl = "python"}};
  bench_sample samples[2] = {weft_sample, c_sample};
  bench_measure(cfg, iters, 2, samples, NULL, r);
  bench_python("thread_start_join.py", cfg->quick ? 100 : 5000, cfg->quick ? 1 : cfg->reps, &r[2]);
  bench_report("thread_start_join", 3, r);
}
