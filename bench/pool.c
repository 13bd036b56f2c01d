/* SPDX-License-Identifier: MIT */
/* Rows for pools: pool_submit_threads, pool_submit_threads_32w,
 * pool_roundtrip_threads_32w, pool_submit_processes, pool_map_processes,
 * pool_map_bytes, pool_speedup. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <weft.h>

#include "bench.h"

static void die(const char *what) {
  fprintf(stderr, "%s: %s\n", what, weft_last_error());
  exit(1);
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Closes, joins and frees a pool, or dies. */
static void pool_shutdown(weft_pool pool, const char *row) {
  if (weft_pool_close(pool) != 0 || weft_pool_join(pool, WEFT_FOREVER) != 0 ||
      weft_pool_free(pool) != 0)
    die(row);
}

/* ---- pool_submit_threads ---- */

static int identity(void *arg, void **result) {
  *result = arg;
  return 0;
}

/* As the Python peer: one pool per sample (its start is spread over the
 * tasks), every task submitted before any result is asked for. */
static void submit_run(long iters, void *arg) {
  int workers = arg != NULL ? *(const int *)arg : WEFT_DEFAULT;
  weft_future *fs = malloc((size_t)iters * sizeof *fs);
  if (fs == NULL) die("pool_submit_threads");
  weft_pool pool = weft_thread_pool_new(.workers = workers);
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
  pool_shutdown(pool, "pool_submit_threads shutdown");
  free(fs);
}

static double submit_sample(long iters, void *arg) { return bench_time(submit_run, iters, arg); }

static void pool_submit_threads(const bench_config *cfg) {
  if (!bench_wanted(cfg, "pool_submit_threads")) return;
  long iters = cfg->quick ? 5000 : 100000;
  bench_result r[2] = {{.impl = "weft"}, {.impl = "python"}};
  bench_sample samples[1] = {submit_sample};
  bench_measure(cfg, iters, 1, samples, NULL, r);
  bench_python("pool_submit_threads.py", cfg->quick ? 2000 : 100000, cfg->quick ? 1 : cfg->reps,
               &r[1]);
  bench_report("pool_submit_threads", 2, r);
}

/* ---- pool_submit_threads_32w, pool_roundtrip_threads_32w ---- */

#define MANY_WORKERS 32

/* pool_submit_threads with 32 workers: a pool sized for I/O, whose idle
 * workers a submit must not all wake. */
static void pool_submit_threads_32w(const bench_config *cfg) {
  if (!bench_wanted(cfg, "pool_submit_threads_32w")) return;
  long iters = cfg->quick ? 5000 : 100000;
  int workers = MANY_WORKERS;
  bench_result r[2] = {{.impl = "weft"}, {.impl = "python"}};
  bench_sample samples[1] = {submit_sample};
  bench_measure(cfg, iters, 1, samples, &workers, r);
  bench_python_arg("pool_submit_threads.py", "32", cfg->quick ? 2000 : 100000,
                   cfg->quick ? 1 : cfg->reps, &r[1]);
  bench_report("pool_submit_threads_32w", 2, r);
}

/* One task at a time: submit, wait for its result, repeat, on a pool of
 * 32 workers started (all of them, by a first round that holds each
 * busy until all have started) before the clock. Bound by wake-ups. */
struct gate {
  int arrived, target;
};

static int hold_until_all(void *arg, void **result) {
  struct gate *g = arg;
  __atomic_add_fetch(&g->arrived, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&g->arrived, __ATOMIC_SEQ_CST) < g->target) weft_sleep(0.0005);
  *result = NULL;
  return 0;
}

static weft_pool full_pool(int workers, const char *row) {
  weft_pool pool = weft_thread_pool_new(.workers = workers);
  if (pool.id == 0) die(row);
  struct gate g = {0, workers};
  weft_future fs[MANY_WORKERS];
  for (int i = 0; i < workers; i++) fs[i] = weft_pool_submit(pool, hold_until_all, &g);
  for (int i = 0; i < workers; i++) {
    void *r;
    if (fs[i].id == 0 || weft_future_result(fs[i], WEFT_FOREVER, &r) != 0) die(row);
    weft_future_close(fs[i]);
  }
  return pool;
}

static double roundtrip_sample(long iters, void *arg) {
  (void)arg;
  weft_pool pool = full_pool(MANY_WORKERS, "pool_roundtrip_threads_32w");
  double t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    weft_future f = weft_pool_submit(pool, identity, (void *)(i + 1));
    void *r;
    if (f.id == 0 || weft_future_result(f, WEFT_FOREVER, &r) != 0 || r != (void *)(i + 1))
      die("pool_roundtrip_threads_32w");
    weft_future_close(f);
  }
  double ns = (now_ns() - t0) / (double)iters;
  pool_shutdown(pool, "pool_roundtrip_threads_32w shutdown");
  return ns;
}

static void pool_roundtrip_threads_32w(const bench_config *cfg) {
  if (!bench_wanted(cfg, "pool_roundtrip_threads_32w")) return;
  long iters = cfg->quick ? 500 : 20000;
  bench_result r[2] = {{.impl = "weft"}, {.impl = "python"}};
  bench_sample samples[1] = {roundtrip_sample};
  bench_measure(cfg, iters, 1, samples, NULL, r);
  bench_python("pool_roundtrip_threads_32w.py", cfg->quick ? 500 : 20000,
               cfg->quick ? 1 : cfg->reps, &r[1]);
  bench_report("pool_roundtrip_threads_32w", 2, r);
}

/* ---- pool_submit_processes ---- */

/* A bytes task that gives its argument back. */
static int copy_task(const void *arg, size_t len, void *result, size_t *result_len) {
  if (len > *result_len) return 1;
  memcpy(result, arg, len);
  *result_len = len;
  return 0;
}

/* Unlike pool_submit_threads, the pool's start (forking its workers) and
 * its close + join are left out of the clock, here and in the Python peer
 * alike: one fresh pool per sample, started before the clock, shut down
 * after it. The figure is the cost of a task: apply_async of an 8-byte
 * integer, every task submitted before any result is asked for, then each
 * result fetched and checked. weft_forkserver: the same pool with workers
 * started by the forkserver, whose tasks are named, not pointed to. */
static double submit_processes_run(long iters, const char *method) {
  weft_future *fs = malloc((size_t)iters * sizeof *fs);
  if (fs == NULL) die("pool_submit_processes");
  weft_pool pool = weft_process_pool_new(.start_method = method);
  if (pool.id == 0) die("pool_submit_processes");
  double t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    int64_t v = i + 1;
    fs[i] = weft_pool_apply_async(pool, copy_task, &v, sizeof v);
    if (fs[i].id == 0) die("pool_submit_processes apply_async");
  }
  for (long i = 0; i < iters; i++) {
    const void *data;
    size_t len;
    int64_t v;
    if (weft_future_result_bytes(fs[i], WEFT_FOREVER, &data, &len) != 0)
      die("pool_submit_processes result");
    if (len != sizeof v) {
      fprintf(stderr, "pool_submit_processes: task %ld gave %zu bytes\n", i, len);
      exit(1);
    }
    memcpy(&v, data, sizeof v);
    if (v != i + 1) {
      fprintf(stderr, "pool_submit_processes: task %ld gave %lld\n", i, (long long)v);
      exit(1);
    }
    weft_future_close(fs[i]);
  }
  double ns = (now_ns() - t0) / (double)iters;
  pool_shutdown(pool, "pool_submit_processes shutdown");
  free(fs);
  return ns;
}

static double submit_processes_fork(long iters, void *arg) {
  (void)arg;
  return submit_processes_run(iters, "fork");
}

static double submit_processes_forkserver(long iters, void *arg) {
  (void)arg;
  return submit_processes_run(iters, "forkserver");
}

static void pool_submit_processes(const bench_config *cfg) {
  if (!bench_wanted(cfg, "pool_submit_processes")) return;
  long iters = cfg->quick ? 2000 : 100000;
  bench_result r[3] = {{.impl = "weft"}, {.impl = "weft_forkserver"}, {.impl = "python"}};
  bench_sample samples[2] = {submit_processes_fork, submit_processes_forkserver};
  bench_measure(cfg, iters, 2, samples, NULL, r);
  /* CPython takes ~40 us a task here: 3 repetitions keep the row short. */
  bench_python("pool_submit_processes.py", iters, cfg->quick ? 1 : 3, &r[2]);
  bench_report("pool_submit_processes", 3, r);
}

/* ---- pool_map_processes ---- */

static int square_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != sizeof x || *result_len < sizeof x) return 1;
  memcpy(&x, arg, sizeof x);
  x *= x;
  memcpy(result, &x, sizeof x);
  *result_len = sizeof x;
  return 0;
}

struct map_data {
  int64_t *items;   /* 0, 1, 2, ... */
  int64_t *results;
};

/* weft_pool_map of x*x over iters int64 items with map's default chunksize
 * (Python's: ceil(n / (4 * workers))), as Pool.map(square, range(n)) in the
 * peer. As pool_submit_processes, one pool per sample, its start and
 * shutdown off the clock in both; the results are checked off it too. */
static double map_processes_sample(long iters, void *arg) {
  struct map_data *d = arg;
  size_t n = (size_t)iters;
  memset(d->results, 0xff, n * sizeof *d->results);
  weft_pool pool = weft_process_pool_new();
  if (pool.id == 0) die("pool_map_processes");
  double t0 = now_ns();
  if (weft_pool_map(pool, square_task, d->items, sizeof *d->items, n, d->results,
                    sizeof *d->results) != 0)
    die("pool_map_processes map");
  double ns = (now_ns() - t0) / (double)iters;
  pool_shutdown(pool, "pool_map_processes shutdown");
  for (size_t i = 0; i < n; i++)
    if (d->results[i] != (int64_t)i * (int64_t)i) {
      fprintf(stderr, "pool_map_processes: item %zu gave %lld\n", i, (long long)d->results[i]);
      exit(1);
    }
  return ns;
}

static void pool_map_processes(const bench_config *cfg) {
  if (!bench_wanted(cfg, "pool_map_processes")) return;
  long iters = cfg->quick ? 20000 : 1000000;
  struct map_data d = {malloc((size_t)iters * sizeof(int64_t)),
                       malloc((size_t)iters * sizeof(int64_t))};
  if (d.items == NULL || d.results == NULL) die("pool_map_processes");
  for (long i = 0; i < iters; i++) d.items[i] = i;
  bench_result r[2] = {{.impl = "weft"}, {.impl = "python"}};
  bench_sample samples[1] = {map_processes_sample};
  bench_measure(cfg, iters, 1, samples, &d, r);
  bench_python("pool_map_processes.py", iters, cfg->quick ? 1 : 3, &r[1]);
  bench_report("pool_map_processes", 2, r);
  free(d.items);
  free(d.results);
}

/* ---- pool_map_bytes ---- */

/* The strings of pool_map_bytes and its Python peer: a xorshift64 stream
 * from a fixed seed gives each string a length of 10..200 bytes and a
 * starting letter; the string is the alphabet, repeated, from that letter. */
static uint64_t xorshift(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

struct bytes_data {
  char *text;         /* the alphabet, repeated */
  weft_bytes *items;
};

static int len_task(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  int64_t n = (int64_t)len;
  memcpy(result, &n, sizeof n);
  *result_len = sizeof n;
  return 0;
}

/* weft_pool_map_bytes of len over iters strings with map's default
 * chunksize, each result an int64, as Pool.map(len, strings) in the peer.
 * As pool_map_processes: one pool per sample, its start and shutdown off
 * the clock in both, and the results checked (and freed) off it too. */
static double map_bytes_sample(long iters, void *arg) {
  struct bytes_data *d = arg;
  size_t n = (size_t)iters;
  weft_pool pool = weft_process_pool_new();
  if (pool.id == 0) die("pool_map_bytes");
  weft_bytes *res = NULL;
  double t0 = now_ns();
  if (weft_pool_map_bytes(pool, len_task, d->items, n, &res) != 0) die("pool_map_bytes map");
  double ns = (now_ns() - t0) / (double)iters;
  pool_shutdown(pool, "pool_map_bytes shutdown");
  int64_t check = 0;
  for (size_t i = 0; i < n; i++) {
    int64_t v;
    memcpy(&v, res[i].data, sizeof v);
    check += v == (int64_t)d->items[i].len && res[i].len == sizeof v;
  }
  free(res);
  if (check != (int64_t)n) {
    fprintf(stderr, "pool_map_bytes: %lld of %zu results right\n", (long long)check, n);
    exit(1);
  }
  return ns;
}

static void pool_map_bytes(const bench_config *cfg) {
  if (!bench_wanted(cfg, "pool_map_bytes")) return;
  long iters = cfg->quick ? 20000 : 100000;
  struct bytes_data d = {malloc(26 * 9), malloc((size_t)iters * sizeof(weft_bytes))};
  if (d.text == NULL || d.items == NULL) die("pool_map_bytes");
  for (int i = 0; i < 26 * 9; i++) d.text[i] = (char)('a' + i % 26);
  uint64_t x = 88172645463325252ULL;
  for (long i = 0; i < iters; i++) {
    size_t len = 10 + (size_t)(xorshift(&x) % 191);
    size_t start = (size_t)(xorshift(&x) % 26);
    d.items[i] = (weft_bytes){d.text + start, len};
  }
  bench_result r[2] = {{.impl = "weft"}, {.impl = "python"}};
  bench_sample samples[1] = {map_bytes_sample};
  bench_measure(cfg, iters, 1, samples, &d, r);
  bench_python("pool_map_bytes.py", iters, cfg->quick ? 1 : 3, &r[1]);
  bench_report("pool_map_bytes", 2, r);
  free(d.text);
  free(d.items);
}

/* ---- pool_speedup ---- */

/* The CPU-bound work: primes below a bound counted by trial division, the
 * range cut into SPEEDUP_TASKS blocks (one task each, chunksize 1) so that
 * every worker stays busy to the end. */
#define SPEEDUP_TASKS 64

struct prime_range {
  int64_t lo, hi;
};

static int64_t count_primes(int64_t lo, int64_t hi) {
  int64_t count = 0;
  for (int64_t n = lo < 2 ? 2 : lo; n < hi; n++) {
    if (n % 2 == 0) {
      count += n == 2;
      continue;
    }
    int prime = 1;
    for (int64_t d = 3; d * d <= n; d += 2)
      if (n % d == 0) {
        prime = 0;
        break;
      }
    count += prime;
  }
  return count;
}

static int primes_task(const void *arg, size_t len, void *result, size_t *result_len) {
  struct prime_range r;
  int64_t count;
  if (len != sizeof r || *result_len < sizeof count) return 1;
  memcpy(&r, arg, sizeof r);
  count = count_primes(r.lo, r.hi);
  memcpy(result, &count, sizeof count);
  *result_len = sizeof count;
  return 0;
}

struct speedup {
  struct prime_range ranges[SPEEDUP_TASKS];
  int64_t expected; /* pi(bound) */
};

/* One sample: a pool of the given workers (WEFT_DEFAULT: weft_cpu_count()) started
 * off the clock, then iters runs of the whole task set (one weft_pool_map),
 * each checked; ns per task set. */
static double speedup_run(long iters, struct speedup *s, int workers) {
  weft_pool pool = weft_process_pool_new(.workers = workers);
  if (pool.id == 0) die("pool_speedup");
  int64_t counts[SPEEDUP_TASKS];
  double t0 = now_ns();
  for (long it = 0; it < iters; it++) {
    if (weft_pool_map(pool, primes_task, s->ranges, sizeof s->ranges[0], SPEEDUP_TASKS, counts,
                      sizeof counts[0], .chunksize = 1) != 0)
      die("pool_speedup map");
    int64_t total = 0;
    for (int i = 0; i < SPEEDUP_TASKS; i++) total += counts[i];
    if (total != s->expected) {
      fprintf(stderr, "pool_speedup: counted %lld primes, not %lld\n", (long long)total,
              (long long)s->expected);
      exit(1);
    }
  }
  double ns = (now_ns() - t0) / (double)iters;
  pool_shutdown(pool, "pool_speedup shutdown");
  return ns;
}

static double speedup_all_sample(long iters, void *arg) { return speedup_run(iters, arg, WEFT_DEFAULT); }
static double speedup_one_sample(long iters, void *arg) { return speedup_run(iters, arg, 1); }

/* The same task set on a pool of every core (impl weft) and on a pool of
 * one worker (impl one_worker); the figure is ns per task set. The
 * harness prints time ratios ("weft is 0.50x its time"): the speed-up is
 * one_worker / weft, printed on a line of its own (target: at least 0.9x
 * the number of cores). No Python peer: Python's pool would scale alike,
 * only its trial division is ~50x slower. */
static void pool_speedup(const bench_config *cfg) {
  if (!bench_wanted(cfg, "pool_speedup")) return;
  /* pi(3e6) = 216816 (~0.3 s of one core here); pi(2e5) = 17984. */
  int64_t bound = cfg->quick ? 200000 : 3000000;
  struct speedup s = {.expected = cfg->quick ? 17984 : 216816};
  /* Blocks of equal width cost more as they go up (sqrt n divisions per
   * prime): the dearest are handed out first, so the tail stays short. */
  for (int i = 0; i < SPEEDUP_TASKS; i++) {
    int b = SPEEDUP_TASKS - 1 - i;
    s.ranges[i] = (struct prime_range){bound * b / SPEEDUP_TASKS, bound * (b + 1) / SPEEDUP_TASKS};
  }
  long iters = 1; /* task sets per sample: one is ~0.3 s of a core (full run) */
  bench_result r[2] = {{.impl = "weft"}, {.impl = "one_worker"}};
  bench_sample samples[2] = {speedup_all_sample, speedup_one_sample};
  bench_measure(cfg, iters, 2, samples, &s, r);
  bench_report("pool_speedup", 2, r);
  if (r[0].ns > 0 && r[1].ns > 0) {
    int cores = weft_cpu_count();
    printf("%-24s speed-up %.2fx on %d cores: %.2f of linear (target >= 0.90)\n", "",
           r[1].ns / r[0].ns, cores, r[1].ns / r[0].ns / cores);
  }
}

void bench_pool_rows(const bench_config *cfg) {
  pool_submit_threads(cfg);
  pool_submit_threads_32w(cfg);
  pool_roundtrip_threads_32w(cfg);
  pool_submit_processes(cfg);
  pool_map_processes(cfg);
  pool_map_bytes(cfg);
  pool_speedup(cfg);
}
