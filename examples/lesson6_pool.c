/* SPDX-License-Identifier: MIT */
/* 进程池 (the process pool), after §2 and §4: what most users of Python's
 * processes end up writing, a process pool. It maps a CPU-bound function (counting primes) over sixteen
 * ranges, one per task, while one task crashes on purpose. Python's Pool
 * would hang for ever on that crash; here exactly that task fails, with a
 * report naming the worker and the signal, a new worker takes its place,
 * and every other range is counted. Then the same work runs on one worker
 * and on all of them, and the speed-up is printed.
 *
 * Python's twin, without the crash:
 *     with multiprocessing.Pool() as pool:
 *         counts = pool.map(count_primes, ranges, chunksize=1)
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <weft.h>

#define TASKS 16
#define SPAN 60000

struct range {
  int64_t lo, hi;
  int32_t crash; /* non-zero: this task dies with SIGSEGV */
};

static int64_t count_primes(int64_t lo, int64_t hi) {
  int64_t count = 0;
  for (int64_t n = lo < 2 ? 2 : lo; n < hi; n++) {
    int prime = 1;
    for (int64_t d = 2; d * d <= n; d++)
      if (n % d == 0) {
        prime = 0;
        break;
      }
    count += prime;
  }
  return count;
}

/* The task: a range in, its count of primes out (bytes both ways). */
static int count_task(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)len;
  struct range r;
  memcpy(&r, arg, sizeof r);
  if (r.crash) raise(SIGSEGV); /* on purpose */
  int64_t count = count_primes(r.lo, r.hi);
  memcpy(result, &count, sizeof count);
  *result_len = sizeof count;
  return 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Maps the ranges on a pool of `workers` processes; returns the seconds. */
static double timed_map(int workers, struct range *ranges, int64_t *counts) {
  weft_pool pool = weft_process_pool_new(.workers = workers);
  double t0 = now();
  weft_pool_map(pool, count_task, ranges, sizeof ranges[0], TASKS, counts, sizeof counts[0],
                .chunksize = 1);
  double t = now() - t0;
  weft_pool_close(pool);
  weft_pool_join(pool, WEFT_FOREVER);
  weft_pool_free(pool);
  return t;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct range ranges[TASKS];
  for (int i = 0; i < TASKS; i++)
    ranges[i] = (struct range){.lo = (int64_t)i * SPAN, .hi = (int64_t)(i + 1) * SPAN,
                               .crash = i == 7};
  int64_t counts[TASKS];
  int errors[TASKS];
  int cores = weft_cpu_count();

  {
    /* Scoped: at the end of the block the pool is closed, joined and freed. */
    weft_pool_scoped pool = weft_process_pool_new();
    printf("进程池：%d 个工作进程，%d 个任务，任务 7 故意崩溃\n", cores, TASKS);
    int err = weft_pool_map(pool, count_task, ranges, sizeof ranges[0], TASKS, counts,
                            sizeof counts[0], .chunksize = 1, .errors = errors);
    if (err != 0) printf("失败的任务：%s\n", weft_last_error());
    for (int i = 0; i < TASKS; i++) {
      if (errors[i] == 0)
        printf("区间 [%lld, %lld)：%lld 个素数\n", (long long)ranges[i].lo,
               (long long)ranges[i].hi, (long long)counts[i]);
      else
        printf("区间 [%lld, %lld)：%s\n", (long long)ranges[i].lo, (long long)ranges[i].hi,
               weft_err_name(errors[i]));
    }
  }

  ranges[7].crash = 0;
  double one = timed_map(1, ranges, counts);
  double all = timed_map(cores, ranges, counts);
  int64_t total = 0;
  for (int i = 0; i < TASKS; i++) total += counts[i];
  printf("%d 以下共 %lld 个素数\n", TASKS * SPAN, (long long)total);
  printf("1 个工作进程：%.2f 秒；%d 个工作进程：%.2f 秒；加速 %.1f 倍\n", one, cores, all,
         one / all);
  return 0;
}
