/* SPDX-License-Identifier: MIT */
/* Row deadlock_abba_detect: the tutorial's two-lock program (two threads take
 * two locks in opposite order, one after the other), timed as a whole
 * program under each detector: weft's (weft_detect), ThreadSanitizer's on
 * pthread mutexes (tsan) and valgrind's helgrind. Each impl's note says
 * whether it reported the inversion.
 *
 * Row deadlock_many_locks: 4 threads each take 100,000 random pairs of
 * 16,384 locks, nested, always in ascending order (so nearly every pair is
 * an order the detector has not seen), with detection off (weft) and on
 * (weft_detect); ns per nested pair, wall time over all threads. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <weft.h>

#include "bench.h"

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Runs cmd once; returns its wall time in ns (< 0 if it failed) and
 * whether its output contained needle. */
static double run_once(const char *cmd, const char *needle, bool *found) {
  double t0 = now_ns();
  FILE *f = popen(cmd, "r");
  if (f == NULL) return -1;
  char line[512];
  *found = false;
  while (fgets(line, sizeof line, f) != NULL)
    if (strstr(line, needle) != NULL) *found = true;
  int status = pclose(f);
  return status == 0 ? now_ns() - t0 : -1;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void measure(const char *cmd, const char *needle, int reps, bench_result *r) {
  double v[16];
  bool found = false;
  int n = 0;
  for (int i = 0; i < reps && i < 16; i++) {
    double t = run_once(cmd, needle, &found);
    if (t < 0) {
      r->ns = -1;
      snprintf(r->note, sizeof r->note, "%s skipped: could not run", r->impl);
      return;
    }
    v[n++] = t;
  }
  qsort(v, (size_t)n, sizeof v[0], cmp);
  r->ns = v[n / 2];
  snprintf(r->note, sizeof r->note, "%s %s the inversion", r->impl,
           found ? "reported" : "did not report");
}

#define MANY_LOCKS 16384
#define MANY_THREADS 4

struct many_run {
  weft_lock *locks;
  long pairs; /* per thread */
  uint64_t seed;
};

static void *many_pairs(void *arg) {
  struct many_run *run = arg;
  uint64_t x = run->seed;
  for (long i = 0; i < run->pairs; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    unsigned a = (unsigned)(x % MANY_LOCKS), b = (unsigned)((x >> 32) % (MANY_LOCKS - 1));
    if (b >= a) b++; /* two different locks */
    weft_lock *lo = &run->locks[a < b ? a : b], *hi = &run->locks[a < b ? b : a];
    weft_lock_acquire(lo, WEFT_FOREVER);
    weft_lock_acquire(hi, WEFT_FOREVER);
    weft_lock_release(hi);
    weft_lock_release(lo);
  }
  return NULL;
}

/* One sample: fresh locks (so the detector starts with no orders), the
 * threads' run timed alone. */
static double many_sample_in(weft_deadlock_mode mode, long iters) {
  weft_lock *locks = calloc(MANY_LOCKS, sizeof *locks);
  if (locks == NULL) return -1;
  for (int i = 0; i < MANY_LOCKS; i++) weft_lock_init(&locks[i]);
  weft_deadlock_mode old = weft_deadlock_get_mode();
  weft_deadlock_set_mode(mode);
  struct many_run run[MANY_THREADS];
  weft_thread t[MANY_THREADS];
  double t0 = now_ns();
  for (int i = 0; i < MANY_THREADS; i++) {
    run[i] = (struct many_run){locks, iters / MANY_THREADS, 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)};
    t[i] = weft_thread_new(many_pairs, .arg = &run[i]);
    weft_thread_start(t[i]);
  }
  for (int i = 0; i < MANY_THREADS; i++) weft_thread_join(t[i], WEFT_FOREVER, NULL);
  double ns = (now_ns() - t0) / (double)(iters / MANY_THREADS * MANY_THREADS);
  for (int i = 0; i < MANY_THREADS; i++) weft_thread_close(t[i]);
  weft_deadlock_set_mode(old);
  for (int i = 0; i < MANY_LOCKS; i++) weft_lock_destroy(&locks[i]);
  free(locks);
  return ns;
}

static double many_sample(long iters, void *arg) {
  (void)arg;
  return many_sample_in(WEFT_DEADLOCK_OFF, iters);
}

static double many_detect_sample(long iters, void *arg) {
  (void)arg;
  return many_sample_in(WEFT_DEADLOCK_WARN, iters);
}

static void many_locks_row(const bench_config *cfg) {
  if (!bench_wanted(cfg, "deadlock_many_locks")) return;
  long iters = MANY_THREADS * (cfg->quick ? 10000 : 100000);
  bench_result r[2] = {{.impl = "weft"}, {.impl = "weft_detect"}};
  bench_sample samples[2] = {many_sample, many_detect_sample};
  bench_measure(cfg, iters, 2, samples, NULL, r);
  bench_report("deadlock_many_locks", 2, r);
}

void bench_deadlock_rows(const bench_config *cfg) {
  many_locks_row(cfg);
  if (!bench_wanted(cfg, "deadlock_abba_detect")) return;
  long iters = cfg->quick ? 2000 : 20000;
  int reps = cfg->quick ? 1 : cfg->reps;
  char cmd[1024];
  bench_result r[3] = {{.impl = "weft_detect"}, {.impl = "tsan"}, {.impl = "helgrind"}};
  snprintf(cmd, sizeof cmd, "WEFT_DEADLOCK=warn '%s/abba_weft' %ld 2>&1", WEFT_BENCH_DIR, iters);
  measure(cmd, "weft: possible deadlock", reps, &r[0]);
  snprintf(cmd, sizeof cmd, "TSAN_OPTIONS=exitcode=0 '%s/abba_tsan' %ld 2>&1", WEFT_BENCH_DIR,
           iters);
  measure(cmd, "lock-order-inversion", reps, &r[1]);
  if (system("command -v valgrind > /dev/null 2>&1") == 0) {
    snprintf(cmd, sizeof cmd, "valgrind --tool=helgrind '%s/abba_pthread' %ld 2>&1",
             WEFT_BENCH_DIR, iters);
    measure(cmd, "lock order", cfg->quick ? 1 : 3, &r[2]);
  } else {
    r[2].ns = -1;
    snprintf(r[2].note, sizeof r[2].note, "helgrind skipped: valgrind is not installed");
  }
  bench_report("deadlock_abba_detect", 3, r);
  for (int i = 0; i < 3; i++)
    if (r[i].ns >= 0) printf("  # %s\n", r[i].note);
}
