/* SPDX-License-Identifier: MIT */
/* Row deadlock_abba_detect: the tutorial's two-lock program (two threads take
 * two locks in opposite order, one after the other), timed as a whole
 * program under each detector: weft's (weft_detect), ThreadSanitizer's on
 * pthread mutexes (tsan) and valgrind's helgrind. Each impl's note says
 * whether it reported the inversion. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

void bench_deadlock_rows(const bench_config *cfg) {
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
