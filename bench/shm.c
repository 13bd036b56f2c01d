/* SPDX-License-Identifier: MIT */
/* Rows of the shm concept: value_increment_2p. */
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

#include "bench.h"

/* ---- value_increment_2p: the tutorial's §3.6 across processes, on a Value ---- */

struct increments {
  weft_value *value;
  long iters;
};

static void fail(const char *what) {
  fprintf(stderr, "value_increment_2p: %s: %s\n", what, weft_last_error());
  exit(1);
}

/* Python's `with v.get_lock(): v.value += 1`. A holder that died would give
 * WEFT_EOWNERDEAD, which still means acquired; nothing dies here. */
static int add_locked(void *arg) {
  struct increments *s = arg;
  weft_rlock *lock = weft_value_get_lock(s->value);
  int *n = weft_value_ptr(s->value);
  for (long i = 0; i < s->iters; i++) {
    if (weft_rlock_acquire(lock, WEFT_FOREVER) != 0) return 1;
    (*n)++;
    weft_rlock_release(lock);
  }
  return 0;
}

/* iters increments in each of two processes, from the first start to the
 * second join; the counter must come out exact. */
static void two_processes(long iters, void *arg) {
  (void)arg;
  struct increments *s = weft_shared_alloc(sizeof *s);
  if (s == NULL) fail("weft_shared_alloc");
  s->value = weft_value_new("i");
  if (s->value == NULL) fail("weft_value_new");
  s->iters = iters;
  weft_process p[2];
  for (int i = 0; i < 2; i++) {
    p[i] = weft_process_new(add_locked, .arg = s);
    if (weft_process_start(p[i]) != 0) fail("weft_process_start");
  }
  for (int i = 0; i < 2; i++) {
    int code = -1;
    if (weft_process_join(p[i], WEFT_FOREVER) != 0) fail("weft_process_join");
    weft_process_exitcode(p[i], &code);
    weft_process_close(p[i]);
    if (code != 0) {
      fprintf(stderr, "value_increment_2p: a child ended with %d\n", code);
      exit(1);
    }
  }
  int total = 0;
  weft_value_load(s->value, 0, 1, &total);
  if (total != 2 * iters) {
    fprintf(stderr, "value_increment_2p: lost updates (%d of %ld)\n", total, 2 * iters);
    exit(1);
  }
  weft_value_free(s->value);
  weft_shared_free(s);
}

/* ns per increment: the harness divides by iters, and there are 2 * iters. */
static double value_sample(long iters, void *arg) { return bench_time(two_processes, iters, arg) / 2; }

static void value_increment_2p(const bench_config *cfg) {
  if (!bench_wanted(cfg, "value_increment_2p")) return;
  long iters = cfg->quick ? 20000 : 1000000; /* per process */
  bench_result r[2] = {{.impl = "weft"}, {.impl = "python"}};
  bench_sample samples[1] = {value_sample};
  bench_measure(cfg, iters, 1, samples, NULL, r);
  bench_python("value_increment_2p.py", iters, cfg->quick ? 1 : 3, &r[1]);
  bench_report("value_increment_2p", 2, r);
}

void bench_shm_rows(const bench_config *cfg) { value_increment_2p(cfg); }
