/* SPDX-License-Identifier: MIT */
/* The harness: timing, medians, the Python peer, the report, and main. */
#define _GNU_SOURCE
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double bench_time(bench_fn fn, long iters, void *arg) {
  double t0 = now_ns();
  fn(iters, arg);
  return (now_ns() - t0) / (double)iters;
}

double bench_c_peer(const char *row, long iters) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "'%s' %s %ld", WEFT_BENCH_PEER, row, iters);
  FILE *f = popen(cmd, "r");
  if (f == NULL) return -1;
  double ns = -1;
  if (fscanf(f, "%lf", &ns) != 1) ns = -1;
  if (pclose(f) != 0) ns = -1;
  return ns;
}

void bench_measure(const bench_config *cfg, long iters, int n, const bench_sample *samples,
                   void *arg, bench_result *results) {
  double *v = calloc((size_t)(n * cfg->reps), sizeof *v);
  for (int i = 0; i < n; i++) samples[i](iters / 10 + 1, arg); /* warm up */
  for (int r = 0; r < cfg->reps; r++)
    for (int i = 0; i < n; i++) v[i * cfg->reps + r] = samples[i](iters, arg);
  for (int i = 0; i < n; i++) {
    results[i].ns = median(v + i * cfg->reps, cfg->reps);
    if (results[i].ns < 0) snprintf(results[i].note, sizeof results[i].note, "failed to run");
  }
  free(v);
}

void bench_python(const char *script, long iters, int reps, bench_result *r) {
  bench_python_arg(script, "", iters, reps, r);
}

void bench_command(const char *cmd, const char *who, bench_result *r) {
  r->ns = -1;
  FILE *f = popen(cmd, "r");
  char line[256] = "", last[256] = "";
  if (f != NULL) {
    while (fgets(line, sizeof line, f) != NULL) snprintf(last, sizeof last, "%s", line);
    int status = pclose(f);
    char *end;
    double ns = strtod(last, &end);
    if (status == 0 && end != last) {
      r->ns = ns;
      return;
    }
  }
  last[strcspn(last, "\n")] = '\0';
  snprintf(r->note, sizeof r->note, "%s skipped: %.120s", who,
           last[0] ? last : "could not be run");
}

void bench_python_arg(const char *script, const char *arg, long iters, int reps, bench_result *r) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "python3 '%s/%s' %ld %d %s 2>&1", WEFT_BENCH_PY_DIR, script, iters,
           reps, arg);
  bench_command(cmd, "python", r);
}

void bench_report(const char *row, int n, const bench_result *results) {
  for (int i = 0; i < n; i++) {
    const bench_result *r = &results[i];
    if (r->ns < 0) {
      printf("%-24s %-11s %14s   (%s)\n", i == 0 ? row : "", r->impl, "-", r->note);
      continue;
    }
    printf("%-24s %-11s %14.1f ns/op", i == 0 ? row : "", r->impl, r->ns);
    if (i > 0 && results[0].ns > 0)
      printf("   weft is %.2fx its time", results[0].ns / r->ns);
    printf("\n");
  }
  printf("bench %s", row);
  for (int i = 0; i < n; i++)
    if (results[i].ns >= 0) printf(" %s=%.1f", results[i].impl, results[i].ns);
  printf("\n");
  fflush(stdout);
}

bool bench_wanted(const bench_config *cfg, const char *row) {
  if (cfg->only == NULL || cfg->only[0] == NULL) return true;
  for (char **p = cfg->only; *p != NULL; p++)
    if (strcmp(*p, row) == 0) return true;
  return false;
}

int main(int argc, char **argv) {
  bench_config cfg = {.quick = false, .reps = 7, .only = NULL};
  int first_row = 1;
  if (argc > 1 && strcmp(argv[1], "--quick") == 0) {
    cfg.quick = true;
    cfg.reps = 3;
    first_row = 2;
  }
  for (int i = first_row; i < argc; i++) {
    if (argv[i][0] == '-') {
      fprintf(stderr, "usage: %s [--quick] [ROW...]\n", argv[0]);
      return 2;
    }
  }
  cfg.only = argv + first_row;
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("%-24s %-11s %14s\n", "row", "impl", "median");
  bench_process_rows(&cfg);
  bench_thread_rows(&cfg);
  bench_sync_rows(&cfg);
  bench_deadlock_rows(&cfg);
  bench_queue_rows(&cfg);
  bench_shm_rows(&cfg);
  bench_pool_rows(&cfg);
  bench_mpi_rows(&cfg);
  return 0;
}
