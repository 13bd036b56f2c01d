/* SPDX-License-Identifier: MIT */
/* Rows: queue_threads, queue_processes, queue_processes_64k,
 * queue_processes_sizes. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

#include "bench.h"

#define RING_ITEMS 1024 /* the bounded size of weft's queue and the C ring alike */

static void die(const char *what) {
  fprintf(stderr, "%s: %s\n", what, weft_last_error());
  exit(1);
}

/* ---- queue_threads: one producer thread, one consumer, pointer items ---- */

static void *producer(void *arg) {
  weft_queue *q = ((void **)arg)[0];
  long n = *(long *)((void **)arg)[1];
  for (long i = 1; i <= n; i++)
    if (weft_queue_put(q, (void *)i, WEFT_FOREVER) != 0) die("queue_threads put");
  return NULL;
}

static void threads_run(long iters, void *arg) {
  (void)arg;
  weft_queue *q = weft_queue_new(.maxsize = RING_ITEMS);
  if (q == NULL) die("queue_threads");
  void *args[2] = {q, &iters};
  weft_thread t = weft_thread_new(producer, .arg = args);
  if (weft_thread_start(t) != 0) die("queue_threads start");
  long sum = 0;
  for (long i = 0; i < iters; i++) {
    void *item;
    if (weft_queue_get(q, &item, WEFT_FOREVER) != 0) die("queue_threads get");
    sum += (long)item;
  }
  weft_thread_join(t, WEFT_FOREVER, NULL);
  weft_thread_close(t);
  weft_queue_free(q);
  if (sum != iters * (iters + 1) / 2) {
    fprintf(stderr, "queue_threads: lost items\n");
    exit(1);
  }
}

static double threads_sample(long iters, void *arg) { return bench_time(threads_run, iters, arg); }
static double threads_c_sample(long iters, void *arg) {
  (void)arg;
  return bench_c_peer("queue_threads", iters);
}

static void queue_threads(const bench_config *cfg) {
  if (!bench_wanted(cfg, "queue_threads")) return;
  long iters = cfg->quick ? 20000 : 1000000;
  bench_result r[3] = {{.impl = "weft"}, {.impl = "c"}, {.impl = "python"}};
  bench_sample samples[2] = {threads_sample, threads_c_sample};
  bench_measure(cfg, iters, 2, samples, NULL, r);
  bench_python("queue_threads.py", cfg->quick ? 20000 : 300000, cfg->quick ? 1 : 3, &r[2]);
  bench_report("queue_threads", 3, r);
}

/* ---- queue_processes(_64k): a producer process, the parent consumes ---- */

struct mp_args {
  weft_mpqueue *q;
  long n;
  size_t size;
};

/* The producer closes the queue when a put fails, so the consumer stops
 * instead of waiting for good. */
static int mp_producer(void *arg) {
  struct mp_args *a = arg;
  char *msg = calloc(1, a->size);
  if (msg == NULL) return 1;
  for (long i = 0; i < a->n; i++) {
    memcpy(msg, &i, sizeof i);
    if (weft_mpqueue_put(a->q, msg, a->size, WEFT_FOREVER) != 0) {
      weft_mpqueue_close(a->q);
      free(msg);
      return 2;
    }
  }
  free(msg);
  return 0;
}

/* A producer process puts iters messages of size bytes into q and this
 * process takes them, checking their order; then q is freed. False if a
 * put or a get failed. */
static bool mp_transfer(weft_mpqueue *q, long iters, size_t size, const char *row) {
  char *buf = malloc(size);
  if (q == NULL || buf == NULL) die(row);
  struct mp_args a = {q, iters, size};
  weft_process p = weft_process_new(mp_producer, .arg = &a);
  if (weft_process_start(p) != 0) die(row);
  bool ok = true;
  for (long i = 0; i < iters && ok; i++) {
    size_t len;
    long v;
    ok = weft_mpqueue_get(q, buf, size, &len, WEFT_FOREVER) == 0;
    if (!ok) break;
    memcpy(&v, buf, sizeof v);
    if (len != size || v != i) {
      fprintf(stderr, "%s: message %ld out of order\n", row, i);
      exit(1);
    }
  }
  int code = -1;
  weft_process_join(p, WEFT_FOREVER);
  weft_process_exitcode(p, &code);
  weft_process_close(p);
  weft_mpqueue_free(q);
  free(buf);
  return ok && code == 0;
}

static void mp_run(long iters, size_t size) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = size > 4096 ? 16 * size : 1 << 16);
  if (!mp_transfer(q, iters, size, "queue_processes")) {
    fprintf(stderr, "queue_processes: a put or a get failed\n");
    exit(1);
  }
}

static void small_run(long iters, void *arg) {
  (void)arg;
  mp_run(iters, 8);
}

static void big_run(long iters, void *arg) {
  (void)arg;
  mp_run(iters, 64 * 1024);
}

static double small_sample(long iters, void *arg) { return bench_time(small_run, iters, arg); }
static double small_c_sample(long iters, void *arg) {
  (void)arg;
  return bench_c_peer("queue_processes", iters);
}

static void queue_processes(const bench_config *cfg) {
  if (!bench_wanted(cfg, "queue_processes")) return;
  long iters = cfg->quick ? 20000 : 1000000;
  bench_result r[3] = {{.impl = "weft"}, {.impl = "c"}, {.impl = "python"}};
  bench_sample samples[2] = {small_sample, small_c_sample};
  bench_measure(cfg, iters, 2, samples, NULL, r);
  bench_python("queue_processes.py", cfg->quick ? 5000 : 100000, cfg->quick ? 1 : 3, &r[2]);
  bench_report("queue_processes", 3, r);
}

/* One memcpy of a 64 KiB message between two buffers, as the reference. */
static void memcpy_run(long iters, void *arg) {
  (void)arg;
  size_t size = 64 * 1024;
  char *a = calloc(1, size), *b = calloc(1, size);
  if (a == NULL || b == NULL) exit(1);
  for (long i = 0; i < iters; i++) {
    a[i % size] = (char)i;
    memcpy(b, a, size);
    __asm__ volatile("" : : "r"(b) : "memory");
  }
  free(a);
  free(b);
}

static double big_sample(long iters, void *arg) { return bench_time(big_run, iters, arg); }
static double memcpy_sample(long iters, void *arg) { return bench_time(memcpy_run, iters, arg); }

static void queue_processes_64k(const bench_config *cfg) {
  if (!bench_wanted(cfg, "queue_processes_64k")) return;
  long iters = cfg->quick ? 2000 : 50000;
  bench_result r[2] = {{.impl = "weft"}, {.impl = "memcpy"}};
  bench_sample samples[2] = {big_sample, memcpy_sample};
  bench_measure(cfg, iters, 2, samples, NULL, r);
  bench_report("queue_processes_64k", 2, r);
  if (r[0].ns > 0 && r[1].ns > 0)
    printf("%-24s weft %.2f GB/s, memcpy %.2f GB/s: %.2fx memcpy\n", "", 65536 / r[0].ns,
           65536 / r[1].ns, r[1].ns / r[0].ns);
}

/* ---- queue_processes_sizes: messages of 8 B to 1 MiB through a queue of
 * the default capacity, against a pipe (write and read loops) ---- */

static const size_t sizes[] = {8, 512, 4096, 65536, 1048576};

struct sized {
  size_t size;
  bool failed;
};

static void sized_run(long iters, void *arg) {
  struct sized *z = arg;
  if (!mp_transfer(weft_mpqueue_new(), iters, z->size, "queue_processes_sizes")) z->failed = true;
}

static double sized_sample(long iters, void *arg) {
  struct sized *z = arg;
  double ns = bench_time(sized_run, iters, arg);
  return z->failed ? -1 : ns;
}

static void queue_processes_sizes(const bench_config *cfg) {
  if (!bench_wanted(cfg, "queue_processes_sizes")) return;
  enum { N = sizeof sizes / sizeof sizes[0] };
  static char names[2 * N][32];
  bench_result r[2 * N];
  for (size_t k = 0; k < N; k++) {
    size_t size = sizes[k];
    /* About 64 MiB through the queue, at least 2,000 messages. */
    long iters = (long)((size_t)64 << 20) / (long)size;
    if (iters < 2000) iters = 2000;
    if (iters > 1000000) iters = 1000000;
    if (cfg->quick) iters = iters / 20 + 1;
    snprintf(names[2 * k], sizeof names[0], "weft_%zu", size);
    snprintf(names[2 * k + 1], sizeof names[0], "pipe_%zu", size);
    r[2 * k] = (bench_result){.impl = names[2 * k]};
    r[2 * k + 1] = (bench_result){.impl = names[2 * k + 1]};
    bench_sample samples[1] = {sized_sample};
    struct sized z = {size, false};
    bench_measure(cfg, iters, 1, samples, &z, &r[2 * k]);
    if (z.failed) {
      r[2 * k].ns = -1;
      snprintf(r[2 * k].note, sizeof r[2 * k].note, "a default queue refused the message");
    }
    r[2 * k + 1].ns = bench_c_peer(names[2 * k + 1], iters);
  }
  bench_report("queue_processes_sizes", 2 * N, r);
  for (size_t k = 0; k < N; k++)
    if (r[2 * k].ns > 0 && r[2 * k + 1].ns > 0)
      printf("%-24s %zu B: weft is %.2fx a pipe's time\n", "", sizes[k],
             r[2 * k].ns / r[2 * k + 1].ns);
}

void bench_queue_rows(const bench_config *cfg) {
  queue_threads(cfg);
  queue_processes(cfg);
  queue_processes_64k(cfg);
  queue_processes_sizes(cfg);
}
