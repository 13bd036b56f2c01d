/* SPDX-License-Identifier: MIT */
/* Rows for processes: process_start_join, process_start_join_500,
 * process_start_join_1g. */
#define _GNU_SOURCE
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <weft.h>

#include "bench.h"

static int return_zero(void *arg) {
  (void)arg;
  return 0;
}

/* arg: the start method's name, or NULL for the default (fork). */
static void weft_start_join(long iters, void *arg) {
  const char *method = arg;
  for (long i = 0; i < iters; i++) {
    weft_process p = weft_process_new(return_zero, .start_method = method);
    if (weft_process_start(p) != 0 || weft_process_join(p, WEFT_FOREVER) != 0) {
      fprintf(stderr, "process_start_join: %s\n", weft_last_error());
      exit(1);
    }
    weft_process_close(p);
  }
}

static double weft_sample(long iters, void *arg) {
  (void)arg;
  return bench_time(weft_start_join, iters, NULL);
}

static double weft_forkserver_sample(long iters, void *arg) {
  (void)arg;
  return bench_time(weft_start_join, iters, "forkserver");
}

static double weft_spawn_sample(long iters, void *arg) {
  (void)arg;
  return bench_time(weft_start_join, iters, "spawn");
}

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

static void start_forkserver(const char *row) {
  if (weft_forkserver_ensure_running() != 0) { /* started before the clock, as Python's is */
    fprintf(stderr, "%s: %s\n", row, weft_last_error());
    exit(1);
  }
}

static void process_start_join(const bench_config *cfg) {
  long iters = cfg->quick ? 20 : 1000;
  start_forkserver("process_start_join");
  bench_result r[6] = {{.impl = "weft"},   {.impl = "c"},
                       {.impl = "c_inproc"}, {.impl = "weft_forkserver"},
                       {.impl = "weft_spawn"}, {.impl = "python"}};
  bench_sample samples[5] = {weft_sample, c_sample, inproc_sample, weft_forkserver_sample,
                             weft_spawn_sample};
  bench_measure(cfg, iters, 5, samples, NULL, r);
  bench_python("process_start_join.py", cfg->quick ? 10 : 300, cfg->quick ? 1 : cfg->reps, &r[5]);
  bench_report("process_start_join", 6, r);
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

/* process_start_join_1g: the same from a parent that has touched 1 GiB of
 * heap and runs 4 idle threads, where a fork copies the page tables of
 * the whole gigabyte. */
#define BIG_MIB 1024
#define QUICK_MIB 64 /* the smoke run only checks that the row runs */
#define BIG_THREADS 4

static void *idle_thread(void *arg) {
  (void)arg;
  for (;;) pause();
  return NULL;
}

/* posix_spawn of a trivial program and waitpid, from this parent. */
static void spawn_true(long iters, void *arg) {
  (void)arg;
  extern char **environ;
  char *argv[] = {"true", NULL};
  for (long i = 0; i < iters; i++) {
    pid_t pid;
    if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0 ||
        waitpid(pid, NULL, 0) != pid) {
      perror("process_start_join_1g: posix_spawn");
      exit(1);
    }
  }
}

static double c_spawn_sample(long iters, void *arg) { return bench_time(spawn_true, iters, arg); }

static void process_start_join_1g(const bench_config *cfg) {
  int mib = cfg->quick ? QUICK_MIB : BIG_MIB;
  size_t bytes = (size_t)mib << 20;
  char *big = malloc(bytes);
  if (big == NULL) {
    fprintf(stderr, "process_start_join_1g: no %d MiB to touch\n", mib);
    return;
  }
  memset(big, 1, bytes);
  __asm__ volatile("" : : "r"(big) : "memory"); /* the compiler may not drop the touch */
  pthread_t threads[BIG_THREADS];
  for (int i = 0; i < BIG_THREADS; i++) pthread_create(&threads[i], NULL, idle_thread, NULL);
  start_forkserver("process_start_join_1g");
  long iters = cfg->quick ? 2 : 20;
  bench_result r[8] = {{.impl = "weft"},        {.impl = "weft_forkserver"},
                       {.impl = "weft_spawn"},  {.impl = "c"},
                       {.impl = "c_spawn"},     {.impl = "python_fork"},
                       {.impl = "python_forkserver"}, {.impl = "python_spawn"}};
  bench_sample samples[5] = {weft_sample, weft_forkserver_sample, weft_spawn_sample, inproc_sample,
                             c_spawn_sample};
  bench_measure(cfg, iters, 5, samples, NULL, r);
  for (int i = 0; i < BIG_THREADS; i++) pthread_cancel(threads[i]);
  for (int i = 0; i < BIG_THREADS; i++) pthread_join(threads[i], NULL);
  free(big);
  const char *methods[3] = {"fork", "forkserver", "spawn"};
  for (int m = 0; m < 3; m++) {
    char arg[32];
    snprintf(arg, sizeof arg, "%s %d", methods[m], mib);
    bench_python_arg("process_start_join.py", arg, cfg->quick ? 2 : 10, cfg->quick ? 1 : 3,
                     &r[5 + m]);
  }
  bench_report("process_start_join_1g", 8, r);
}

void bench_process_rows(const bench_config *cfg) {
  if (bench_wanted(cfg, "process_start_join")) process_start_join(cfg);
  if (bench_wanted(cfg, "process_start_join_500")) process_start_join_500(cfg);
  if (bench_wanted(cfg, "process_start_join_1g")) process_start_join_1g(cfg);
}
