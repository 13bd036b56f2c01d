/* Rows for pools: pool_submit_threads. */
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

#include "bench.h"

static void die(const char *what) {
  fprintf(stderr, "%s: %s\n", what, weft_last_error());
  exit(1);
}

static int identity(void *arg, void **result) {
  *result = arg;
  return 0;
}

/* As the Python peer: one pool per sample (its start is spread over the
 * tasks), every task submitted before any result is asked for. */
static void submit_run(long iters, void *arg) {
  (void)arg;
  weft_future *fs = malloc((size_t)iters * sizeof *fs);
  if (fs == NULL) die("pool_submit_threads");
  weft_pool pool = weft_thread_pool_new();
  if (pool.id == 0) die("pool_submit_threads");
  for (long i = 0; i < iters; i++) {
    fs[i] = weft_pool_submit(pool, identity, (void *)(i + 1));
    if (fs[i].id == 0) die("pool_submit_threads submit");
  }
  for (long i = 0; i < iters; i++) {
    void *r;
    if (weft_future_result(fs[i], WEFT_FOREVER, &r) != 0 || r != (void *)(i + 1))
      die("pool_submit_threads result");
    weft_future_close(fs[i]);
  }
  if (weft_pool_close(pool) != 0 || weft_pool_join(pool, WEFT_FOREVER) != 0 ||
      weft_pool_free(pool) != 0)
    die("pool_submit_threads shutdown");
  free(fs);
}

static double submit_sample(long iters, void *arg) { return bench_time(submit_run, iters, arg); }

void bench_pool_rows(const bench_config *cfg) {
  if (!bench_wanted(cfg, "pool_submit_threads")) return;
  long iters = cfg->quick ? 5000 : 100000;
  bench_result r[2] = {{.impl = "weft"}, {.impl = "python"}};
  bench_sample samples[1] = {submit_sample};
  bench_measure(cfg, iters, 1, samples, NULL, r);
  bench_python("pool_submit_threads.py", cfg->quick ? 2000 : 100000, cfg->quick ? 1 : cfg->reps,
               &r[1]);
  bench_report("pool_submit_threads", 2, r);
}
