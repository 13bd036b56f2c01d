/* SPDX-License-Identifier: MIT */
/* Tests of weft/queue.h: thread queues (Python's queue.Queue, LifoQueue,
 * PriorityQueue, with 3.13's shutdown as close) and process queues
 * (multiprocessing.Queue and JoinableQueue).
 *
 * Conventions (as in test_sync.c): threads and child processes never call
 * ck_assert -- Check is not fork-safe and a failing assertion must end the
 * test from its own thread. Threads record what they saw in variables the
 * test asserts on after joining them; children report through their exit
 * code and through memory from weft_shared_alloc mapped before the fork.
 * Every wait has a deadline. Where a test wants another thread or process
 * blocked inside a call before it acts, it waits (with a deadline) until
 * that thread or process has been asleep in the kernel for several polls in
 * a row; where the semantics allow either order that wait is only a best
 * effort, and where they do not (freeing a queue with a blocked getter) it
 * is asserted.
 *
 * Hot loops check with CHECK (ck_abort_msg on failure only): every passing
 * ck_assert_* writes a location record, which would dominate the run time. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* A blocked put or get that is not served within this many seconds lost its
 * wake-up: the contended loops use it as their timeout and count such
 * timeouts, so a lost wake-up is a clear failure instead of a hang. */
#define LOST_WAKEUP_S 5.0
/* A call that must not wait returns within this. */
#define PROMPT_S 0.25
/* A generous upper bound for a call given a 0.05 s timeout. */
#define LATE_S 2.0

#define P(v) ((void *)(intptr_t)(v))
#define V(p) ((intptr_t)(p))

/* An assertion for hot loops: costs nothing unless it fails. */
#define CHECK(cond, ...)                     \
  do {                                       \
    if (!(cond)) ck_abort_msg(__VA_ARGS__);  \
  } while (0)

/* ---- helpers ---- */

/* Polls until *p is 0 or the deadline passes; returns whether it held. */
static bool wait_zero(const int *p, double timeout) {
  double end = test_now() + timeout;
  while (ld(p) != 0) {
    if (test_now() > end) return false;
    nap(0.0005);
  }
  return true;
}

/* Waits until a thread (or process) has been seen asleep ('S') in five
 * polls in a row, a millisecond apart: it is blocked, not on its way. */
static bool wait_asleep(char (*state)(pid_t), pid_t id, double timeout) {
  double end = test_now() + timeout;
  int streak = 0;
  while (streak < 5) {
    if (test_now() > end) return false;
    streak = state(id) == 'S' ? streak + 1 : 0;
    nap(0.001);
  }
  return true;
}

static uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

static uint32_t rng(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* Message contents: a pattern that depends on a seed and on each byte's
 * position, so a message cut short, shifted or spliced from two does not
 * pass. */
static unsigned char pattern_byte(uint32_t seed, size_t i) {
  return (unsigned char)(seed + i * 131u + (i >> 8) * 7u + (i >> 16));
}

static void fill(unsigned char *buf, uint32_t seed, size_t len) {
  for (size_t i = 0; i < len; i++) buf[i] = pattern_byte(seed, i);
}

static bool same(const unsigned char *buf, uint32_t seed, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (buf[i] != pattern_byte(seed, i)) return false;
  return true;
}

/* Tagged messages: a header (magic, producer, sequence number, payload
 * length) and a payload whose pattern depends on producer and sequence. */
#define TAG_MAGIC 0x51554555u
#define TAG_HDR 16
#define STOP_PRODUCER 0xffffu

static uint32_t tag_seed(uint32_t producer, uint32_t seq) {
  return mix32(producer * 0x9e3779b9u ^ (seq << 8) ^ 0xabcdefu);
}

static size_t tag_plen(uint32_t producer, uint32_t seq, size_t maxp) {
  return mix32(producer * 0x85ebca6bu + seq) % (maxp + 1);
}

static size_t tag_make(unsigned char *buf, uint32_t producer, uint32_t seq, size_t plen) {
  uint32_t h[4] = {TAG_MAGIC, producer, seq, (uint32_t)plen};
  memcpy(buf, h, sizeof h);
  fill(buf + TAG_HDR, tag_seed(producer, seq), plen);
  return TAG_HDR + plen;
}

static bool tag_check(const unsigned char *buf, size_t len, uint32_t *producer, uint32_t *seq) {
  if (len < TAG_HDR) return false;
  uint32_t h[4];
  memcpy(h, buf, sizeof h);
  if (h[0] != TAG_MAGIC || h[3] != len - TAG_HDR) return false;
  if (!same(buf + TAG_HDR, tag_seed(h[1], h[2]), len - TAG_HDR)) return false;
  *producer = h[1];
  *seq = h[2];
  return true;
}

/* An error code's name, "0" for success. */
static const char *rc_name(int rc) { return rc == 0 ? "0" : weft_err_name(rc); }

/* What a message takes of a process queue's capacity. */
static size_t slot_of(size_t len) { return ((len + 7) & ~(size_t)7) + 8; }

/* ---- one call in a thread ---- */

struct op {
  weft_queue *q;
  void *item;     /* to put, or what get returned */
  double timeout;
  pid_t tid;
  int started;    /* set just before the call */
  int rc;
  double elapsed;
  int done;       /* set once the call returned */
};

static void *op_get(void *arg) {
  struct op *o = arg;
  o->tid = gettid();
  st(&o->started, 1);
  double t0 = test_now();
  o->rc = weft_queue_get(o->q, &o->item, o->timeout);
  o->elapsed = test_now() - t0;
  st(&o->done, 1);
  return NULL;
}

static void *op_put(void *arg) {
  struct op *o = arg;
  o->tid = gettid();
  st(&o->started, 1);
  double t0 = test_now();
  o->rc = weft_queue_put(o->q, o->item, o->timeout);
  o->elapsed = test_now() - t0;
  st(&o->done, 1);
  return NULL;
}

static void *op_join(void *arg) {
  struct op *o = arg;
  o->tid = gettid();
  st(&o->started, 1);
  double t0 = test_now();
  o->rc = weft_queue_join(o->q, o->timeout);
  o->elapsed = test_now() - t0;
  st(&o->done, 1);
  return NULL;
}

/* Waits until the thread has started its call and, as a best effort, until
 * it sleeps in it; returns whether it was seen asleep. */
static bool op_wait_blocked(struct op *o) {
  ck_assert(wait_ge(&o->started, 1, 10));
  return wait_asleep(thread_state, o->tid, 5);
}

/* ================================================= thread queues: order */

START_TEST(queue_fifo_order) {
  weft_queue *q = weft_queue_new(.order = WEFT_FIFO, .name = "fifo");
  ck_assert_ptr_nonnull(q);
  ck_assert_uint_eq(weft_queue_qsize(q), 0);
  ck_assert(weft_queue_empty(q));
  ck_assert(!weft_queue_full(q));
  for (int i = 1; i <= 100; i++) ck_assert_int_eq(weft_queue_put(q, P(i), 0), 0);
  ck_assert_uint_eq(weft_queue_qsize(q), 100);
  ck_assert(!weft_queue_empty(q));
  ck_assert(!weft_queue_full(q));
  void *it = NULL;
  for (int i = 1; i <= 100; i++) {
    ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
    ck_assert_int_eq(V(it), i);
  }
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
  /* Interleaved, with every kind of timeout on a call that need not wait. */
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, P(2), WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert_int_eq(weft_queue_put(q, P(3), 1.0), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 1.0), 0);
  ck_assert_int_eq(V(it), 2);
  ck_assert_int_eq(weft_queue_get(q, &it, WEFT_FOREVER), 0);
  ck_assert_int_eq(V(it), 3);
  ck_assert(weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_free(q), 0);

  /* FIFO is the default. */
  q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  for (int i = 1; i <= 3; i++) ck_assert_int_eq(weft_queue_put(q, P(i), 0), 0);
  for (int i = 1; i <= 3; i++) {
    ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
    ck_assert_int_eq(V(it), i);
  }
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

START_TEST(queue_lifo_order) {
  weft_queue *q = weft_queue_new(.order = WEFT_LIFO);
  ck_assert_ptr_nonnull(q);
  for (int i = 1; i <= 100; i++) ck_assert_int_eq(weft_queue_put(q, P(i), 0), 0);
  ck_assert_uint_eq(weft_queue_qsize(q), 100);
  void *it = NULL;
  for (int i = 100; i >= 1; i--) {
    ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
    ck_assert_int_eq(V(it), i);
  }
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
  /* Interleaved: put 1 2, get 2, put 3, get 3, get 1. */
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, P(2), 0), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 2);
  ck_assert_int_eq(weft_queue_put(q, P(3), 0), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 3);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert(weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_free(q), 0);

  /* Bounded LIFO. */
  q = weft_queue_new(.order = WEFT_LIFO, .maxsize = 2);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, P(2), 0), 0);
  ck_assert(weft_queue_full(q));
  ck_assert_int_eq(weft_queue_put(q, P(3), 0), WEFT_EFULL);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 2);
  ck_assert_int_eq(weft_queue_put(q, P(3), 0), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 3);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

/* Compares the ints the items point to. */
static int cmp_int_ptr(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* Compares items that are integers cast to pointers. */
static int cmp_intptr(const void *a, const void *b) {
  intptr_t x = V(a), y = V(b);
  return (x > y) - (x < y);
}

START_TEST(queue_priority_order) {
  weft_queue *q = weft_queue_new(.order = WEFT_PRIORITY, .compare = cmp_int_ptr);
  ck_assert_ptr_nonnull(q);
  static int vals[10] = {5, 1, 4, 2, 3, 0, 9, 7, 8, 6};
  for (int i = 0; i < 10; i++) ck_assert_int_eq(weft_queue_put(q, &vals[i], 0), 0);
  ck_assert_uint_eq(weft_queue_qsize(q), 10);
  void *it = NULL;
  for (int want = 0; want < 10; want++) {
    ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
    ck_assert_ptr_nonnull(it);
    ck_assert_int_eq(*(int *)it, want);
    /* The very pointer that was put. */
    ck_assert(it >= (void *)&vals[0] && it <= (void *)&vals[9]);
  }
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
  /* Interleaved: put 5 1, get 1, put 0, get 0, get 5. */
  ck_assert_int_eq(weft_queue_put(q, &vals[0], 0), 0);
  ck_assert_int_eq(weft_queue_put(q, &vals[1], 0), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_ptr_eq(it, &vals[1]);
  ck_assert_int_eq(weft_queue_put(q, &vals[5], 0), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_ptr_eq(it, &vals[5]);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_ptr_eq(it, &vals[0]);
  ck_assert(weft_queue_empty(q));

  /* Many random values (with repeats) come out sorted, each pointer once. */
  enum { N = 20000 };
  int *pool = malloc(N * sizeof *pool);
  char *taken = calloc(N, 1);
  ck_assert(pool != NULL && taken != NULL);
  uint32_t s = 12345;
  for (int i = 0; i < N; i++) {
    pool[i] = (int)(rng(&s) % 1000);
    CHECK(weft_queue_put(q, &pool[i], 0) == 0, "put %d failed", i);
  }
  ck_assert_uint_eq(weft_queue_qsize(q), N);
  int prev = -1;
  for (int i = 0; i < N; i++) {
    CHECK(weft_queue_get(q, &it, 0) == 0, "get %d failed", i);
    ptrdiff_t idx = (int *)it - pool;
    CHECK(idx >= 0 && idx < N && !taken[idx], "get %d: a pointer never put, or twice", i);
    taken[idx] = 1;
    CHECK(*(int *)it >= prev, "get %d: %d after %d", i, *(int *)it, prev);
    prev = *(int *)it;
  }
  ck_assert(weft_queue_empty(q));

  /* Random puts and gets against a model: each get is the current least. */
  memset(taken, 0, N);
  int counts[1000] = {0};
  int live = 0, used = 0;
  while (used < N) {
    if (live == 0 || rng(&s) % 3 != 0) {
      pool[used] = (int)(rng(&s) % 1000);
      CHECK(weft_queue_put(q, &pool[used], 0) == 0, "put failed");
      counts[pool[used]]++;
      live++;
      used++;
    } else {
      CHECK(weft_queue_get(q, &it, 0) == 0, "get failed with %d live", live);
      ptrdiff_t idx = (int *)it - pool;
      CHECK(idx >= 0 && idx < used && !taken[idx], "a pointer never put, or twice");
      taken[idx] = 1;
      int least = 0;
      while (counts[least] == 0) least++;
      CHECK(*(int *)it == least, "got %d, least held is %d", *(int *)it, least);
      counts[least]--;
      live--;
    }
    CHECK(weft_queue_qsize(q) == (size_t)live, "qsize %zu, %d held", weft_queue_qsize(q), live);
  }
  for (int least = 0; live > 0; live--) {
    CHECK(weft_queue_get(q, &it, 0) == 0, "drain failed");
    while (counts[least] == 0) least++;
    CHECK(*(int *)it == least, "drain: got %d, least held is %d", *(int *)it, least);
    counts[least]--;
  }
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
  free(pool);
  free(taken);
  ck_assert_int_eq(weft_queue_free(q), 0);

  /* Bounded, over integer items. */
  q = weft_queue_new(.order = WEFT_PRIORITY, .compare = cmp_intptr, .maxsize = 3);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(30), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, P(10), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, P(20), 0), 0);
  ck_assert(weft_queue_full(q));
  ck_assert_int_eq(weft_queue_put(q, P(5), 0), WEFT_EFULL);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 10);
  ck_assert_int_eq(weft_queue_put(q, P(5), 0), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 5);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 20);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 30);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

START_TEST(queue_null_items_are_valid) {
  void *it = P(99);
  weft_queue *q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, NULL, 0), 0);
  ck_assert_uint_eq(weft_queue_qsize(q), 1);
  ck_assert(!weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, NULL, 0), 0);
  ck_assert_uint_eq(weft_queue_qsize(q), 3);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_ptr_null(it);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  it = P(99);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_ptr_null(it);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
  ck_assert_int_eq(weft_queue_free(q), 0);

  q = weft_queue_new(.order = WEFT_LIFO, .maxsize = 2);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, NULL, 0), 0);
  ck_assert_int_eq(weft_queue_put(q, NULL, 0), 0);
  ck_assert(weft_queue_full(q));
  ck_assert_int_eq(weft_queue_put(q, NULL, 0), WEFT_EFULL);
  it = P(99);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_ptr_null(it);
  it = P(99);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_ptr_null(it);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
  ck_assert_int_eq(weft_queue_free(q), 0);

  /* A blocked getter is handed a NULL item. */
  q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  struct op o = {.q = q, .item = P(99), .timeout = 10, .rc = 1};
  pthread_t t = spawn(op_get, &o);
  op_wait_blocked(&o);
  ck_assert_int_eq(weft_queue_put(q, NULL, 0), 0);
  join(t);
  ck_assert_int_eq(o.rc, 0);
  ck_assert_ptr_null(o.item);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

/* ================================================ thread queues: bounds */

START_TEST(queue_put_on_full_gives_efull) {
  weft_queue *q = weft_queue_new(.maxsize = 3);
  ck_assert_ptr_nonnull(q);
  for (int i = 1; i <= 3; i++) ck_assert_int_eq(weft_queue_put(q, P(i), 0), 0);
  ck_assert(weft_queue_full(q));
  ck_assert_uint_eq(weft_queue_qsize(q), 3);
  double t0 = test_now();
  ck_assert_int_eq(weft_queue_put(q, P(4), 0), WEFT_EFULL);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  t0 = test_now();
  ck_assert_int_eq(weft_queue_put(q, P(4), 0.05), WEFT_EFULL);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.05);
  ck_assert_double_lt(elapsed, LATE_S);
  /* The same from another thread. */
  struct op o = {.q = q, .item = P(5), .timeout = 0.05, .rc = 1};
  join(spawn(op_put, &o));
  ck_assert_int_eq(o.rc, WEFT_EFULL);
  ck_assert_double_ge(o.elapsed, 0.05);
  ck_assert_double_lt(o.elapsed, LATE_S);
  /* Nothing was added, nothing lost. */
  ck_assert_uint_eq(weft_queue_qsize(q), 3);
  ck_assert(weft_queue_full(q));
  void *it;
  for (int i = 1; i <= 3; i++) {
    ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
    ck_assert_int_eq(V(it), i);
  }
  ck_assert(!weft_queue_full(q));
  ck_assert(weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

START_TEST(queue_get_on_empty_gives_eempty) {
  weft_queue *qs[3] = {weft_queue_new(), weft_queue_new(.order = WEFT_LIFO, .maxsize = 4),
                       weft_queue_new(.order = WEFT_PRIORITY, .compare = cmp_intptr)};
  for (int k = 0; k < 3; k++) {
    weft_queue *q = qs[k];
    ck_assert_ptr_nonnull(q);
    void *it = P(77);
    double t0 = test_now();
    ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
    ck_assert_double_lt(test_now() - t0, PROMPT_S);
    t0 = test_now();
    ck_assert_int_eq(weft_queue_get(q, &it, 0.05), WEFT_EEMPTY);
    double elapsed = test_now() - t0;
    ck_assert_double_ge(elapsed, 0.05);
    ck_assert_double_lt(elapsed, LATE_S);
    struct op o = {.q = q, .timeout = 0.05, .rc = 1};
    join(spawn(op_get, &o));
    ck_assert_int_eq(o.rc, WEFT_EEMPTY);
    ck_assert_double_ge(o.elapsed, 0.05);
    ck_assert_double_lt(o.elapsed, LATE_S);
    /* Still usable. */
    ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
    ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
    ck_assert_int_eq(V(it), 1);
    ck_assert_int_eq(weft_queue_free(q), 0);
  }
}
END_TEST

START_TEST(queue_blocked_put_released_by_get) {
  weft_queue *q = weft_queue_new(.maxsize = 1);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  struct op o = {.q = q, .item = P(2), .timeout = 30, .rc = 1};
  pthread_t t = spawn(op_put, &o);
  op_wait_blocked(&o);
  /* The queue is full: the put cannot have finished. */
  ck_assert_int_eq(ld(&o.done), 0);
  ck_assert_uint_eq(weft_queue_qsize(q), 1);
  void *it;
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert(wait_ge(&o.done, 1, 10));
  join(t);
  ck_assert_int_eq(o.rc, 0);
  ck_assert_double_lt(o.elapsed, 10);
  ck_assert_uint_eq(weft_queue_qsize(q), 1);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 2);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

START_TEST(queue_blocked_get_released_by_put) {
  weft_queue *q = weft_queue_new(.maxsize = 1);
  ck_assert_ptr_nonnull(q);
  struct op o = {.q = q, .item = P(0), .timeout = 30, .rc = 1};
  pthread_t t = spawn(op_get, &o);
  op_wait_blocked(&o);
  ck_assert_int_eq(ld(&o.done), 0);
  ck_assert_int_eq(weft_queue_put(q, P(7), 0), 0);
  ck_assert(wait_ge(&o.done, 1, 10));
  join(t);
  ck_assert_int_eq(o.rc, 0);
  ck_assert_int_eq(V(o.item), 7);
  ck_assert_double_lt(o.elapsed, 10);
  ck_assert(weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

/* Several blocked getters each get one item; several blocked putters each
 * put theirs, one at a time as room appears. */
START_TEST(queue_several_blocked_getters_and_putters) {
  weft_queue *q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  struct op g[3];
  pthread_t tg[3];
  for (int i = 0; i < 3; i++) {
    g[i] = (struct op){.q = q, .item = P(0), .timeout = 30, .rc = 1};
    tg[i] = spawn(op_get, &g[i]);
  }
  for (int i = 0; i < 3; i++) op_wait_blocked(&g[i]);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(ld(&g[i].done), 0);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(weft_queue_put(q, P(11 + i), 0), 0);
  int got[3] = {0};
  for (int i = 0; i < 3; i++) {
    join(tg[i]);
    ck_assert_int_eq(g[i].rc, 0);
    ck_assert(V(g[i].item) >= 11 && V(g[i].item) <= 13);
    got[V(g[i].item) - 11]++;
  }
  for (int i = 0; i < 3; i++) ck_assert_int_eq(got[i], 1);
  ck_assert(weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_free(q), 0);

  q = weft_queue_new(.maxsize = 1);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(100), 0), 0);
  struct op p[3];
  pthread_t tp[3];
  for (int i = 0; i < 3; i++) {
    p[i] = (struct op){.q = q, .item = P(101 + i), .timeout = 30, .rc = 1};
    tp[i] = spawn(op_put, &p[i]);
  }
  for (int i = 0; i < 3; i++) op_wait_blocked(&p[i]);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(ld(&p[i].done), 0);
  ck_assert_uint_eq(weft_queue_qsize(q), 1);
  void *it;
  ck_assert_int_eq(weft_queue_get(q, &it, 10), 0);
  ck_assert_int_eq(V(it), 100);
  int put_got[3] = {0};
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(weft_queue_get(q, &it, 10), 0);
    ck_assert(V(it) >= 101 && V(it) <= 103);
    put_got[V(it) - 101]++;
  }
  for (int i = 0; i < 3; i++) {
    join(tp[i]);
    ck_assert_int_eq(p[i].rc, 0);
    ck_assert_int_eq(put_got[i], 1);
  }
  ck_assert(weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

struct pingpong {
  weft_queue *q;
  int n;
  int posted;  /* the last item whose put returned */
  int ack;     /* the last item the test took */
  int errors;
};

static void *pingpong_putter(void *arg) {
  struct pingpong *x = arg;
  for (int i = 1; i <= x->n; i++) {
    if (weft_queue_put(x->q, P(i), LOST_WAKEUP_S) != 0) {
      inc(&x->errors);
      return NULL;
    }
    st(&x->posted, i);
    if (!wait_ge(&x->ack, i, 10)) {
      inc(&x->errors);
      return NULL;
    }
  }
  return NULL;
}

/* put is synchronous: the same thread (and any thread that has seen the put
 * return) already counts the item -- the "empty() lies" trap of
 * multiprocessing.Queue must not exist here. */
START_TEST(queue_sizes_exact_after_put_and_get) {
  const long maxsizes[] = {0, 5, 1};
  for (int k = 0; k < 3; k++) {
    long maxsize = maxsizes[k];
    weft_queue *q = weft_queue_new(.maxsize = maxsize);
    ck_assert_ptr_nonnull(q);
    void *it;
    for (int round = 0; round < 2000; round++) {
      int n = round % 7;
      if (maxsize > 0 && n > maxsize) n = (int)maxsize;
      for (int i = 0; i < n; i++) {
        CHECK(weft_queue_put(q, P(i), 0) == 0, "put failed");
        CHECK(weft_queue_qsize(q) == (size_t)i + 1, "qsize %zu after %d puts",
              weft_queue_qsize(q), i + 1);
        CHECK(!weft_queue_empty(q), "empty right after a put");
        CHECK(weft_queue_full(q) == (maxsize > 0 && i + 1 == maxsize),
              "full() wrong with %d of %ld", i + 1, maxsize);
      }
      for (int i = 0; i < n; i++) {
        CHECK(weft_queue_get(q, &it, 0) == 0, "get failed");
        CHECK(weft_queue_qsize(q) == (size_t)(n - i - 1), "qsize %zu after get",
              weft_queue_qsize(q));
        CHECK(weft_queue_empty(q) == (i == n - 1), "empty() wrong after get");
        CHECK(!weft_queue_full(q), "full right after a get");
      }
    }
    ck_assert_int_eq(weft_queue_free(q), 0);
  }

  /* Another thread's put, once seen to return, is counted. */
  weft_queue *q = weft_queue_new(.maxsize = 1);
  ck_assert_ptr_nonnull(q);
  struct pingpong x = {.q = q, .n = 200};
  pthread_t t = spawn(pingpong_putter, &x);
  int bad = 0;
  for (int i = 1; i <= x.n; i++) {
    if (!wait_ge(&x.posted, i, 10)) {
      bad = -i;
      break;
    }
    void *it;
    if (weft_queue_qsize(q) != 1 || weft_queue_empty(q) || !weft_queue_full(q) ||
        weft_queue_get(q, &it, 0) != 0 || V(it) != i) {
      bad = i;
      break;
    }
    st(&x.ack, i);
  }
  st(&x.ack, x.n); /* release the putter whatever happened */
  join(t);
  ck_assert_msg(bad == 0, "item %d: not counted or not there right after its put", bad);
  ck_assert_int_eq(x.errors, 0);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

START_TEST(queue_unbounded_grows_and_shrinks) {
  const int n = SLOW >= 10 ? 200000 : 1000000;
  weft_queue *q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  for (int round = 0; round < 2; round++) {
    for (int i = 1; i <= n; i++) CHECK(weft_queue_put(q, P(i), 0) == 0, "put %d failed", i);
    ck_assert_uint_eq(weft_queue_qsize(q), (size_t)n);
    ck_assert(!weft_queue_full(q));
    ck_assert(!weft_queue_empty(q));
    void *it;
    for (int i = 1; i <= n; i++) {
      CHECK(weft_queue_get(q, &it, 0) == 0, "get %d failed", i);
      CHECK(V(it) == i, "got %ld, expected %d", (long)V(it), i);
    }
    ck_assert(weft_queue_empty(q));
    ck_assert_uint_eq(weft_queue_qsize(q), 0);
  }
  /* Growing while the contents wrap around: put 3, get 2, over and over. */
  int next_put = 1, next_get = 1;
  void *it;
  for (int r = 0; r < 100000 / SLOW; r++) {
    for (int i = 0; i < 3; i++)
      CHECK(weft_queue_put(q, P(next_put++), 0) == 0, "put failed");
    for (int i = 0; i < 2; i++) {
      CHECK(weft_queue_get(q, &it, 0) == 0, "get failed");
      CHECK(V(it) == next_get, "got %ld, expected %d", (long)V(it), next_get);
      next_get++;
    }
  }
  ck_assert_uint_eq(weft_queue_qsize(q), (size_t)(next_put - next_get));
  while (next_get < next_put) {
    CHECK(weft_queue_get(q, &it, 0) == 0, "drain failed");
    CHECK(V(it) == next_get, "got %ld, expected %d", (long)V(it), next_get);
    next_get++;
  }
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
  ck_assert_int_eq(weft_queue_free(q), 0);

  q = weft_queue_new(.order = WEFT_LIFO);
  ck_assert_ptr_nonnull(q);
  for (int i = 1; i <= n; i++) CHECK(weft_queue_put(q, P(i), 0) == 0, "put %d failed", i);
  ck_assert_uint_eq(weft_queue_qsize(q), (size_t)n);
  for (int i = n; i >= 1; i--) {
    CHECK(weft_queue_get(q, &it, 0) == 0, "get %d failed", i);
    CHECK(V(it) == i, "got %ld, expected %d", (long)V(it), i);
  }
  ck_assert(weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

struct transfer {
  weft_queue *q;
  int n;
  int errors;
};

static void *transfer_putter(void *arg) {
  struct transfer *x = arg;
  for (int i = 1; i <= x->n; i++) {
    int rc;
    while ((rc = weft_queue_put(x->q, P(i), LOST_WAKEUP_S)) == WEFT_EFULL) inc(&x->errors);
    if (rc != 0) {
      inc(&x->errors);
      return NULL;
    }
  }
  return NULL;
}

START_TEST(queue_maxsize_one) {
  weft_queue *q = weft_queue_new(.maxsize = 1);
  ck_assert_ptr_nonnull(q);
  ck_assert(weft_queue_empty(q));
  ck_assert(!weft_queue_full(q));
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert(weft_queue_full(q));
  ck_assert(!weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_put(q, P(2), 0), WEFT_EFULL);
  void *it;
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert(weft_queue_empty(q));
  ck_assert(!weft_queue_full(q));
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
  /* A stream through one slot keeps its order and loses nothing. */
  struct transfer x = {.q = q, .n = 20000 / SLOW};
  pthread_t t = spawn(transfer_putter, &x);
  int bad = 0, timeouts = 0;
  for (int i = 1; i <= x.n && bad == 0; i++) {
    int rc;
    while ((rc = weft_queue_get(q, &it, LOST_WAKEUP_S)) == WEFT_EEMPTY && timeouts < 3) timeouts++;
    if (rc != 0 || V(it) != i) bad = i;
  }
  join(t);
  ck_assert_msg(bad == 0, "item %d missing or out of order", bad);
  ck_assert_int_eq(timeouts, 0);
  ck_assert_int_eq(x.errors, 0);
  ck_assert(weft_queue_empty(q));
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

/* =========================================== thread queues: contention */

struct mpmc {
  weft_queue *q;
  int producers, consumers, per;
  bool fifo;           /* check per-producer order within each consumer */
  int *seen;           /* [1..producers*per], plus the stop item */
  int received;        /* real items taken */
  int next_producer, next_consumer;
  int errors;          /* unexpected return codes */
  int timeouts;        /* EFULL / EEMPTY after LOST_WAKEUP_S: a lost wake-up */
  int bad_items;
  int order_violations;
};

static intptr_t mpmc_stop(const struct mpmc *m) { return (intptr_t)m->producers * m->per + 1; }

static void *mpmc_producer(void *arg) {
  struct mpmc *m = arg;
  int id = inc(&m->next_producer) - 1;
  for (int k = 0; k < m->per; k++) {
    intptr_t v = (intptr_t)id * m->per + k + 1;
    int rc;
    while ((rc = weft_queue_put(m->q, P(v), LOST_WAKEUP_S)) == WEFT_EFULL) inc(&m->timeouts);
    if (rc != 0) {
      inc(&m->errors);
      return NULL;
    }
  }
  return NULL;
}

static void *mpmc_consumer(void *arg) {
  struct mpmc *m = arg;
  int *last = malloc((size_t)m->producers * sizeof *last);
  if (last == NULL) {
    inc(&m->errors);
    return NULL;
  }
  for (int p = 0; p < m->producers; p++) last[p] = -1;
  intptr_t stop = mpmc_stop(m);
  for (;;) {
    void *it;
    int rc = weft_queue_get(m->q, &it, LOST_WAKEUP_S);
    if (rc == WEFT_EEMPTY) {
      inc(&m->timeouts);
      continue;
    }
    if (rc != 0) {
      inc(&m->errors);
      break;
    }
    intptr_t v = V(it);
    if (v < 1 || v > stop) {
      inc(&m->bad_items);
      continue;
    }
    __atomic_add_fetch(&m->seen[v], 1, __ATOMIC_RELAXED);
    if (v == stop) break;
    int p = (int)((v - 1) / m->per), k = (int)((v - 1) % m->per);
    if (m->fifo && k <= last[p]) inc(&m->order_violations);
    last[p] = k;
    inc(&m->received);
  }
  free(last);
  return NULL;
}

/* Runs producers x consumers over q; every item must be taken exactly once. */
static void run_mpmc(weft_queue *q, int producers, int consumers, int total, bool fifo) {
  struct mpmc m = {.q = q, .producers = producers, .consumers = consumers,
                   .per = total / producers, .fifo = fifo};
  int n = m.per * producers;
  m.seen = calloc((size_t)n + 2, sizeof *m.seen);
  ck_assert_ptr_nonnull(m.seen);
  pthread_t tc[16], tp[16];
  ck_assert(producers <= 16 && consumers <= 16);
  for (int i = 0; i < consumers; i++) tc[i] = spawn(mpmc_consumer, &m);
  for (int i = 0; i < producers; i++) tp[i] = spawn(mpmc_producer, &m);
  for (int i = 0; i < producers; i++) join(tp[i]);
  bool all = wait_ge(&m.received, n, 60);
  /* One stop item per consumer, once every real item is taken (whatever
   * the order of the queue, they cannot overtake real items then). */
  int stop_rc = 0;
  for (int i = 0; i < consumers; i++) {
    int rc = weft_queue_put(q, P(mpmc_stop(&m)), 10);
    if (rc != 0) stop_rc = rc;
  }
  for (int i = 0; i < consumers; i++) join(tc[i]);
  ck_assert_msg(all, "only %d of %d items received", ld(&m.received), n);
  ck_assert_int_eq(stop_rc, 0);
  ck_assert_int_eq(m.errors, 0);
  ck_assert_int_eq(m.timeouts, 0);
  ck_assert_int_eq(m.bad_items, 0);
  ck_assert_int_eq(m.order_violations, 0);
  for (int v = 1; v <= n; v++)
    CHECK(m.seen[v] == 1, "item %d received %d times", v, m.seen[v]);
  ck_assert_int_eq(m.seen[n + 1], consumers);
  ck_assert_uint_eq(weft_queue_qsize(q), 0);
  free(m.seen);
}

START_TEST(queue_fifo_producers_consumers_exactly_once) {
  weft_queue *q = weft_queue_new(.maxsize = 64);
  ck_assert_ptr_nonnull(q);
  run_mpmc(q, 4, 4, 200000 / SLOW, true);
  ck_assert_int_eq(weft_queue_free(q), 0);
  q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  run_mpmc(q, 4, 4, 100000 / SLOW, true);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

START_TEST(queue_lifo_producers_consumers_exactly_once) {
  weft_queue *q = weft_queue_new(.order = WEFT_LIFO, .maxsize = 64);
  ck_assert_ptr_nonnull(q);
  run_mpmc(q, 4, 4, 200000 / SLOW, false);
  ck_assert_int_eq(weft_queue_free(q), 0);
  q = weft_queue_new(.order = WEFT_LIFO);
  ck_assert_ptr_nonnull(q);
  run_mpmc(q, 4, 4, 100000 / SLOW, false);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

START_TEST(queue_priority_producers_consumers_exactly_once) {
  weft_queue *q = weft_queue_new(.order = WEFT_PRIORITY, .compare = cmp_intptr, .maxsize = 64);
  ck_assert_ptr_nonnull(q);
  run_mpmc(q, 4, 4, 200000 / SLOW, false);
  ck_assert_int_eq(weft_queue_free(q), 0);
  q = weft_queue_new(.order = WEFT_PRIORITY, .compare = cmp_intptr);
  ck_assert_ptr_nonnull(q);
  run_mpmc(q, 4, 4, 100000 / SLOW, false);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

/* Items put while every awake getter is busy are still taken: a put that
 * finds a getter searching leaves its item to it, and that getter, once it
 * has one, must pass the rest on to a sleeper instead of keeping them for
 * later. Each getter holds the item it took until the whole round is
 * taken, so a round completes only if all CHAIN getters take one each
 * while the others hold theirs -- an item left for a busy getter would
 * strand the round. Rounds alternate between a burst and items put one at
 * a time with the getters going back to sleep between rounds. */
#define CHAIN 8

struct chain {
  weft_queue *q;
  int taken, stranded, errors;
};

static void *chain_getter(void *arg) {
  struct chain *c = arg;
  for (;;) {
    void *it;
    int rc = weft_queue_get(c->q, &it, LOST_WAKEUP_S);
    if (rc == WEFT_ECLOSED) break;
    if (rc != 0) {
      inc(&c->errors);
      break;
    }
    intptr_t round = V(it);
    inc(&c->taken);
    if (!wait_ge(&c->taken, (int)round * CHAIN, LOST_WAKEUP_S)) {
      inc(&c->stranded);
      break;
    }
  }
  return NULL;
}

START_TEST(queue_items_put_while_getters_are_busy_are_taken) {
  struct chain c = {.q = weft_queue_new()};
  ck_assert_ptr_nonnull(c.q);
  pthread_t t[CHAIN];
  for (int i = 0; i < CHAIN; i++) t[i] = spawn(chain_getter, &c);
  uint32_t seed = 12345;
  int rounds = 400 / SLOW;
  for (int r = 1; r <= rounds && ld(&c.stranded) == 0 && ld(&c.errors) == 0; r++) {
    for (int i = 0; i < CHAIN; i++) {
      ck_assert_int_eq(weft_queue_put(c.q, P(r), 0), 0);
      if (r % 2 == 0 && rng(&seed) % 4 == 0) nap(0.0001);
    }
    CHECK(wait_ge(&c.taken, r * CHAIN, 2 * LOST_WAKEUP_S), "round %d: %d of %d items taken", r,
          ld(&c.taken) - (r - 1) * CHAIN, CHAIN);
  }
  ck_assert_int_eq(weft_queue_close(c.q), 0);
  for (int i = 0; i < CHAIN; i++) join(t[i]);
  ck_assert_int_eq(c.stranded, 0);
  ck_assert_int_eq(c.errors, 0);
  ck_assert_int_eq(c.taken, rounds * CHAIN);
  ck_assert_int_eq(weft_queue_free(c.q), 0);
}
END_TEST

/* ============================================ thread queues: task_done */

START_TEST(queue_task_done_and_join_count) {
  weft_queue *q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  /* Nothing put: nothing unfinished. */
  ck_assert_int_eq(weft_queue_join(q, 0), 0);
  ck_assert_int_eq(weft_queue_task_done(q), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_join(q, 0), 0);
  for (int i = 1; i <= 3; i++) ck_assert_int_eq(weft_queue_put(q, P(i), 0), 0);
  double t0 = test_now();
  ck_assert_int_eq(weft_queue_join(q, 0), WEFT_ETIMEDOUT);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  t0 = test_now();
  ck_assert_int_eq(weft_queue_join(q, 0.05), WEFT_ETIMEDOUT);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.05);
  ck_assert_double_lt(elapsed, LATE_S);
  void *it;
  for (int i = 0; i < 3; i++) ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  /* Taken is not done. */
  ck_assert_int_eq(weft_queue_join(q, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_queue_task_done(q), 0);
  ck_assert_int_eq(weft_queue_task_done(q), 0);
  ck_assert_int_eq(weft_queue_join(q, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_queue_task_done(q), 0);
  ck_assert_int_eq(weft_queue_join(q, 0), 0);
  t0 = test_now();
  ck_assert_int_eq(weft_queue_join(q, WEFT_FOREVER), 0);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  /* One more than was put. */
  ck_assert_int_eq(weft_queue_task_done(q), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_join(q, 0), 0);
  /* As in Python, task_done counts against puts: two puts allow two
   * task_done calls even while one item is still in the queue. */
  ck_assert_int_eq(weft_queue_put(q, P(4), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, P(5), 0), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(weft_queue_task_done(q), 0);
  ck_assert_int_eq(weft_queue_join(q, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_queue_task_done(q), 0);
  ck_assert_int_eq(weft_queue_task_done(q), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_join(q, 0), 0);
  ck_assert_uint_eq(weft_queue_qsize(q), 1);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 5);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

struct worker {
  weft_queue *q;
  int n;
  int processed;
  int errors;
  int go;
};

static void *worker_main(void *arg) {
  struct worker *w = arg;
  if (!wait_ge(&w->go, 1, 20)) {
    inc(&w->errors);
    return NULL;
  }
  for (int i = 0; i < w->n; i++) {
    void *it;
    if (weft_queue_get(w->q, &it, LOST_WAKEUP_S) != 0) {
      inc(&w->errors);
      return NULL;
    }
    inc(&w->processed); /* the work, done before task_done */
    if (weft_queue_task_done(w->q) != 0) inc(&w->errors);
  }
  return NULL;
}

START_TEST(queue_join_returns_after_all_task_done) {
  weft_queue *q = weft_queue_new(.maxsize = 0);
  ck_assert_ptr_nonnull(q);
  const int n = 2000;
  for (int i = 0; i < n; i++) ck_assert_int_eq(weft_queue_put(q, P(i), 0), 0);
  /* Two threads join while the items are unfinished. */
  struct op j[2];
  pthread_t tj[2];
  for (int i = 0; i < 2; i++) {
    j[i] = (struct op){.q = q, .timeout = 30, .rc = 1};
    tj[i] = spawn(op_join, &j[i]);
  }
  for (int i = 0; i < 2; i++) op_wait_blocked(&j[i]);
  for (int i = 0; i < 2; i++) ck_assert_int_eq(ld(&j[i].done), 0);
  struct worker w[2] = {{.q = q, .n = n / 2}, {.q = q, .n = n / 2}};
  pthread_t tw[2] = {spawn(worker_main, &w[0]), spawn(worker_main, &w[1])};
  st(&w[0].go, 1);
  st(&w[1].go, 1);
  int rc = weft_queue_join(q, 30);
  /* When join returns, every item's work was done. */
  int processed = ld(&w[0].processed) + ld(&w[1].processed);
  for (int i = 0; i < 2; i++) join(tw[i]);
  for (int i = 0; i < 2; i++) join(tj[i]);
  ck_assert_int_eq(rc, 0);
  ck_assert_int_eq(processed, n);
  ck_assert_int_eq(w[0].errors + w[1].errors, 0);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(j[i].rc, 0);
    ck_assert_double_lt(j[i].elapsed, 30);
  }
  ck_assert_int_eq(weft_queue_task_done(q), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

/* ================================================ thread queues: close */

START_TEST(queue_close_refuses_puts_and_drains) {
  weft_queue *q = weft_queue_new(.maxsize = 5);
  ck_assert_ptr_nonnull(q);
  for (int i = 1; i <= 3; i++) ck_assert_int_eq(weft_queue_put(q, P(i), 0), 0);
  ck_assert_int_eq(weft_queue_close(q), 0);
  ck_assert_int_eq(weft_queue_put(q, P(9), 0), WEFT_ECLOSED);
  double t0 = test_now();
  ck_assert_int_eq(weft_queue_put(q, P(9), WEFT_FOREVER), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_put(q, P(9), 5), WEFT_ECLOSED);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  ck_assert_uint_eq(weft_queue_qsize(q), 3);
  void *it;
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert_int_eq(weft_queue_get(q, &it, WEFT_FOREVER), 0);
  ck_assert_int_eq(V(it), 2);
  ck_assert_int_eq(weft_queue_get(q, &it, 1.0), 0);
  ck_assert_int_eq(V(it), 3);
  t0 = test_now();
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_get(q, &it, WEFT_FOREVER), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_get(q, &it, 5), WEFT_ECLOSED);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  ck_assert(weft_queue_empty(q));
  ck_assert_uint_eq(weft_queue_qsize(q), 0);
  /* Closing twice is harmless. */
  ck_assert_int_eq(weft_queue_close(q), 0);
  ck_assert_int_eq(weft_queue_put(q, P(9), 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_free(q), 0);

  /* A full queue: put does not wait for room that will never matter. */
  q = weft_queue_new(.maxsize = 1);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_close(q), 0);
  t0 = test_now();
  ck_assert_int_eq(weft_queue_put(q, P(2), WEFT_FOREVER), WEFT_ECLOSED);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_free(q), 0);

  /* LIFO and PRIORITY queues drain in their order, then report closed. */
  q = weft_queue_new(.order = WEFT_LIFO);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, P(2), 0), 0);
  ck_assert_int_eq(weft_queue_close(q), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 2);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert_int_eq(weft_queue_get(q, &it, WEFT_FOREVER), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_free(q), 0);
  q = weft_queue_new(.order = WEFT_PRIORITY, .compare = cmp_intptr);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(2), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_close(q), 0);
  ck_assert_int_eq(weft_queue_put(q, P(0), 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 2);
  ck_assert_int_eq(weft_queue_get(q, &it, WEFT_FOREVER), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

START_TEST(queue_close_wakes_blocked_getters_and_putters) {
  weft_queue *q = weft_queue_new(.maxsize = 1);
  ck_assert_ptr_nonnull(q);
  struct op g[3];
  pthread_t tg[3];
  for (int i = 0; i < 3; i++) {
    g[i] = (struct op){.q = q, .item = P(0), .timeout = 30, .rc = 1};
    tg[i] = spawn(op_get, &g[i]);
  }
  for (int i = 0; i < 3; i++) op_wait_blocked(&g[i]);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(ld(&g[i].done), 0);
  ck_assert_int_eq(weft_queue_close(q), 0);
  bool woke = true;
  for (int i = 0; i < 3; i++) woke = wait_ge(&g[i].done, 1, 10) && woke;
  ck_assert_msg(woke, "a getter blocked on an empty queue did not wake on close");
  for (int i = 0; i < 3; i++) {
    join(tg[i]);
    ck_assert_int_eq(g[i].rc, WEFT_ECLOSED);
    ck_assert_double_lt(g[i].elapsed, 10);
  }
  ck_assert_int_eq(weft_queue_free(q), 0);

  q = weft_queue_new(.maxsize = 1);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  struct op p[3];
  pthread_t tp[3];
  for (int i = 0; i < 3; i++) {
    p[i] = (struct op){.q = q, .item = P(2 + i), .timeout = 30, .rc = 1};
    tp[i] = spawn(op_put, &p[i]);
  }
  for (int i = 0; i < 3; i++) op_wait_blocked(&p[i]);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(ld(&p[i].done), 0);
  ck_assert_int_eq(weft_queue_close(q), 0);
  woke = true;
  for (int i = 0; i < 3; i++) woke = wait_ge(&p[i].done, 1, 10) && woke;
  ck_assert_msg(woke, "a putter blocked on a full queue did not wake on close");
  for (int i = 0; i < 3; i++) {
    join(tp[i]);
    ck_assert_int_eq(p[i].rc, WEFT_ECLOSED);
    ck_assert_double_lt(p[i].elapsed, 10);
  }
  /* None of their items got in: the one item, then closed. */
  void *it;
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

struct loop_getter {
  weft_queue *q;
  pid_t tid;
  int started;
  int n;          /* items received */
  intptr_t got[4];
  int last_rc;
  int finished;
};

static void *loop_getter_main(void *arg) {
  struct loop_getter *g = arg;
  g->tid = gettid();
  st(&g->started, 1);
  for (;;) {
    void *it;
    int rc = weft_queue_get(g->q, &it, 30);
    if (rc != 0) {
      g->last_rc = rc;
      break;
    }
    int n = ld(&g->n);
    if (n < 4) g->got[n] = V(it);
    st(&g->n, n + 1);
  }
  st(&g->finished, 1);
  return NULL;
}

START_TEST(queue_free_while_blocked_is_ebusy) {
  ck_assert_int_eq(weft_queue_free(NULL), 0);
  weft_queue *q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  struct loop_getter g = {.q = q};
  pthread_t t = spawn(loop_getter_main, &g);
  ck_assert(wait_ge(&g.started, 1, 10));
  /* Here the order matters: the getter must be inside get. */
  ck_assert_msg(wait_asleep(thread_state, g.tid, 10), "the getter never blocked");
  ck_assert_int_eq(weft_queue_free(q), WEFT_EBUSY);
  /* Nothing was freed: the queue still works, the getter is still in it. */
  ck_assert_int_eq(ld(&g.finished), 0);
  ck_assert_int_eq(weft_queue_put(q, P(7), 0), 0);
  ck_assert(wait_ge(&g.n, 1, 10));
  ck_assert_int_eq(g.got[0], 7);
  ck_assert_msg(wait_asleep(thread_state, g.tid, 10), "the getter never blocked again");
  ck_assert_int_eq(weft_queue_free(q), WEFT_EBUSY);
  ck_assert_int_eq(weft_queue_put(q, P(8), 0), 0);
  ck_assert(wait_ge(&g.n, 2, 10));
  ck_assert_int_eq(g.got[1], 8);
  ck_assert_int_eq(weft_queue_close(q), 0);
  ck_assert(wait_ge(&g.finished, 1, 10));
  join(t);
  ck_assert_int_eq(g.last_rc, WEFT_ECLOSED);
  ck_assert_int_eq(ld(&g.n), 2);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

/* A thread that close woke is still inside get for a moment: free must
 * refuse until it has left, not free the queue under it (ASan would catch
 * the use after free). Freed as soon as free says 0, every round. */
START_TEST(queue_free_refuses_until_woken_threads_left) {
  for (int round = 0; round < 50 / SLOW + 5; round++) {
    weft_queue *q = weft_queue_new();
    ck_assert_ptr_nonnull(q);
    struct loop_getter g = {.q = q};
    pthread_t t = spawn(loop_getter_main, &g);
    ck_assert(wait_ge(&g.started, 1, 10));
    ck_assert_msg(wait_asleep(thread_state, g.tid, 10), "the getter never blocked");
    ck_assert_int_eq(weft_queue_close(q), 0);
    int rc;
    double end = test_now() + 10;
    while ((rc = weft_queue_free(q)) == WEFT_EBUSY && test_now() < end) {
    }
    ck_assert_int_eq(rc, 0);
    ck_assert(wait_ge(&g.finished, 1, 10));
    join(t);
    ck_assert_int_eq(g.last_rc, WEFT_ECLOSED);
  }
}
END_TEST

/* A bounded queue of a huge maxsize costs what it holds, not maxsize. */
START_TEST(queue_huge_maxsize_allocates_lazily) {
  weft_queue *q = weft_queue_new(.maxsize = LONG_MAX);
  ck_assert_msg(q != NULL, "%s", weft_last_error());
  for (intptr_t i = 0; i < 5000; i++) ck_assert_int_eq(weft_queue_put(q, P(i), 0), 0);
  ck_assert(!weft_queue_full(q));
  for (intptr_t i = 0; i < 5000; i++) {
    void *it;
    ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
    ck_assert_int_eq(V(it), i);
  }
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

/* ========================================== thread queues: bad arguments */

START_TEST(queue_bad_arguments) {
  void *it = NULL;
  ck_assert_int_eq(weft_queue_free(NULL), 0);
  ck_assert_int_eq(weft_queue_put(NULL, P(1), 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_get(NULL, &it, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_task_done(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_join(NULL, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_close(NULL), WEFT_EINVAL);

  weft_queue *q = weft_queue_new(.maxsize = 2);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(1), NAN), WEFT_EINVAL);
  ck_assert_uint_eq(weft_queue_qsize(q), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_get(q, &it, NAN), WEFT_EINVAL);
  ck_assert_uint_eq(weft_queue_qsize(q), 1);
  ck_assert_int_eq(weft_queue_join(q, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_queue_put(q, P(2), 0), 0);
  /* NaN on a full queue is still invalid, not "full". */
  ck_assert_int_eq(weft_queue_put(q, P(3), NAN), WEFT_EINVAL);
  ck_assert_uint_eq(weft_queue_qsize(q), 2);
  ck_assert_int_eq(weft_queue_get(q, &it, 0), 0);
  ck_assert_int_eq(V(it), 1);
  ck_assert_int_eq(weft_queue_free(q), 0);

  /* A priority queue needs a compare. */
  q = weft_queue_new(.order = WEFT_PRIORITY);
  ck_assert_ptr_null(q);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  /* An order that does not exist. */
  q = weft_queue_new(.order = (weft_queue_order)3, .compare = cmp_intptr);
  ck_assert_ptr_null(q);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  q = weft_queue_new(.order = (weft_queue_order)-1);
  ck_assert_ptr_null(q);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);

  /* A negative maxsize means unbounded. */
  q = weft_queue_new(.maxsize = -5);
  ck_assert_ptr_nonnull(q);
  for (int i = 0; i < 1000; i++) CHECK(weft_queue_put(q, P(i), 0) == 0, "put %d failed", i);
  ck_assert(!weft_queue_full(q));
  ck_assert_uint_eq(weft_queue_qsize(q), 1000);
  ck_assert_int_eq(weft_queue_free(q), 0);

  /* A NULL place for the item. */
  q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_get(q, NULL, 0), WEFT_EINVAL);
  ck_assert_uint_eq(weft_queue_qsize(q), 1);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

/* A failing call leaves its code and a sentence in weft_last_error. */
START_TEST(queue_failures_set_last_error) {
  weft_queue *q = weft_queue_new(.maxsize = 1, .name = "jobs");
  ck_assert_ptr_nonnull(q);
  void *it;
  ck_assert_int_eq(weft_queue_get(q, &it, 0), WEFT_EEMPTY);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EEMPTY);
  ck_assert_int_gt(strlen(weft_last_error()), 0);
  ck_assert_int_eq(weft_queue_put(q, P(1), 0), 0);
  ck_assert_int_eq(weft_queue_put(q, P(2), 0), WEFT_EFULL);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EFULL);
  ck_assert_int_gt(strlen(weft_last_error()), 0);
  ck_assert_int_eq(weft_queue_join(q, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_queue_put(q, P(2), NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_gt(strlen(weft_last_error()), 0);
  ck_assert_int_eq(weft_queue_close(q), 0);
  ck_assert_int_eq(weft_queue_put(q, P(2), 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  ck_assert_int_gt(strlen(weft_last_error()), 0);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

START_TEST(queue_no_fd_leak) {
  weft_queue *q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_queue_free(q), 0);
  int before = count_fds();
  for (int i = 0; i < 200; i++) {
    q = i % 3 == 2 ? weft_queue_new(.order = WEFT_PRIORITY, .compare = cmp_intptr)
                   : weft_queue_new(.order = (weft_queue_order)(i % 3), .maxsize = i % 5);
    CHECK(q != NULL, "new failed");
    void *it;
    CHECK(weft_queue_put(q, P(i), 0) == 0, "put failed");
    CHECK(weft_queue_get(q, &it, 0) == 0, "get failed");
    CHECK(weft_queue_get(q, &it, 0.001) == WEFT_EEMPTY, "get on empty");
    if (i % 2) CHECK(weft_queue_close(q) == 0, "close failed");
    CHECK(weft_queue_free(q) == 0, "free failed");
  }
  ck_assert_int_eq(count_fds(), before);
}
END_TEST

/* ===================================== process queues: single process */

START_TEST(mpqueue_too_big_message_is_emsgsize) {
  ck_assert_int_eq(weft_mpqueue_free(NULL), 0);
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  unsigned char *buf = malloc(8192), *out = malloc(8192);
  ck_assert(buf != NULL && out != NULL);
  fill(buf, 1, 8192);
  /* Never fits (4089 takes 4096 + 8): refused at once, whatever the timeout. */
  double t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 4089, 0), WEFT_EMSGSIZE);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 4089, 5), WEFT_EMSGSIZE);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 8192, WEFT_FOREVER), WEFT_EMSGSIZE);
  /* The error says what capacity takes the message, and it does. */
  ck_assert_msg(strstr(weft_last_error(), ".capacity = 8200 or more") != NULL, "'%s'",
                weft_last_error());
  weft_mpqueue *big = weft_mpqueue_new(.capacity = 8200);
  ck_assert_ptr_nonnull(big);
  ck_assert_int_eq(weft_mpqueue_put(big, buf, 8192, 0), 0);
  ck_assert_int_eq(weft_mpqueue_free(big), 0);
  /* A length far beyond the buffer: refused without reading it. */
  ck_assert_int_eq(weft_mpqueue_put(q, buf, (size_t)1 << 40, 0), WEFT_EMSGSIZE);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, WEFT_MPQUEUE_CAPACITY_MAX + 1, 0), WEFT_EMSGSIZE);
  ck_assert_msg(strstr(weft_last_error(), "WEFT_MPQUEUE_CAPACITY_MAX") != NULL, "'%s'",
                weft_last_error());
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 0);
  ck_assert(weft_mpqueue_empty(q));
  /* Refused between others, it leaves them alone. */
  for (uint32_t i = 0; i < 3; i++) {
    fill(out, 100 + i, 10);
    ck_assert_int_eq(weft_mpqueue_put(q, out, 10, 0), 0);
  }
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 4089, 0), WEFT_EMSGSIZE);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 3);
  for (uint32_t i = 0; i < 3; i++) {
    size_t len = 0;
    ck_assert_int_eq(weft_mpqueue_get(q, out, 8192, &len, 0), 0);
    ck_assert_uint_eq(len, 10);
    ck_assert(same(out, 100 + i, 10));
  }
  /* The largest message fills the whole capacity. */
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 4088, 0), 0);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 1);
  ck_assert(weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), WEFT_EFULL);
  size_t len = 0;
  ck_assert_int_eq(weft_mpqueue_get(q, out, 8192, &len, 0), 0);
  ck_assert_uint_eq(len, 4088);
  ck_assert(same(out, 1, 4088));
  ck_assert(weft_mpqueue_empty(q));
  ck_assert_int_eq(weft_mpqueue_free(q), 0);

  /* A capacity that is no multiple of 8: 88 takes 96 and fits in 100; 89
   * would take 104. */
  q = weft_mpqueue_new(.capacity = 100);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 89, 0), WEFT_EMSGSIZE);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 88, 0), 0);
  ck_assert_int_eq(weft_mpqueue_get(q, out, 8192, &len, 0), 0);
  ck_assert_uint_eq(len, 88);
  ck_assert(same(out, 1, 88));
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  free(buf);
  free(out);
}
END_TEST

static int put_null_empty_child(void *arg) {
  weft_mpqueue *q = arg;
  if (weft_mpqueue_put(q, NULL, 0, 10) != 0) return 1;
  if (weft_mpqueue_put(q, "after", 5, 10) != 0) return 2;
  return 0;
}

/* An empty message may be given as NULL (the other tests pass "" so that
 * this rule is checked here alone). */
START_TEST(mpqueue_empty_message_may_be_null) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 64);
  ck_assert_ptr_nonnull(q);
  char out[64];
  size_t len = 99;
  ck_assert_int_eq(weft_mpqueue_put(q, NULL, 0, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, NULL, 0, WEFT_FOREVER), 0);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 2);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 0);
  /* Each takes 8 bytes: 8 of them fill 64. */
  for (int i = 0; i < 8; i++) ck_assert_int_eq(weft_mpqueue_put(q, NULL, 0, 0), 0);
  ck_assert(weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_put(q, NULL, 0, 0), WEFT_EFULL);
  for (int i = 0; i < 8; i++) ck_assert_int_eq(weft_mpqueue_get(q, out, 0, &len, 0), 0);
  ck_assert(weft_mpqueue_empty(q));
  /* From another process. */
  weft_process p = start_process(put_null_empty_child, q);
  len = 99;
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 10), 0);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 10), 0);
  ck_assert_uint_eq(len, 5);
  ck_assert(memcmp(out, "after", 5) == 0);
  ck_assert_int_eq(finish_process(p, 10), 0);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
}
END_TEST

START_TEST(mpqueue_small_buffer_keeps_message) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_put(q, "hello, world", 12, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "second", 6, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), 0);
  char buf[64];
  size_t len = 0;
  memset(buf, '#', sizeof buf);
  ck_assert_int_eq(weft_mpqueue_get(q, buf, 5, &len, 0), WEFT_EMSGSIZE);
  ck_assert_uint_eq(len, 12);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 3);
  len = 0;
  ck_assert_int_eq(weft_mpqueue_get(q, buf, 0, &len, 0), WEFT_EMSGSIZE);
  ck_assert_uint_eq(len, 12);
  len = 0;
  ck_assert_int_eq(weft_mpqueue_get(q, buf, 11, &len, 5), WEFT_EMSGSIZE);
  ck_assert_uint_eq(len, 12);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 3);
  /* Exactly big enough. */
  ck_assert_int_eq(weft_mpqueue_get(q, buf, 12, &len, 0), 0);
  ck_assert_uint_eq(len, 12);
  ck_assert(memcmp(buf, "hello, world", 12) == 0);
  ck_assert_int_eq(weft_mpqueue_get(q, buf, sizeof buf, &len, 0), 0);
  ck_assert_uint_eq(len, 6);
  ck_assert(memcmp(buf, "second", 6) == 0);
  /* An empty message fits in no room at all. */
  len = 99;
  ck_assert_int_eq(weft_mpqueue_get(q, buf, 0, &len, 0), 0);
  ck_assert_uint_eq(len, 0);
  ck_assert(weft_mpqueue_empty(q));
  ck_assert_int_eq(weft_mpqueue_get(q, buf, sizeof buf, &len, 0), WEFT_EEMPTY);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
}
END_TEST

START_TEST(mpqueue_bounded_by_bytes) {
  /* 256 bytes: a 24-byte message takes 32, so exactly 8 fit. */
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 256);
  ck_assert_ptr_nonnull(q);
  ck_assert(!weft_mpqueue_full(q));
  unsigned char msg[256], out[256];
  size_t len;
  for (uint32_t i = 0; i < 8; i++) {
    fill(msg, i, 24);
    ck_assert_int_eq(weft_mpqueue_put(q, msg, 24, 0), 0);
    ck_assert_uint_eq(weft_mpqueue_qsize(q), i + 1);
    if (i < 7) ck_assert(!weft_mpqueue_full(q));
  }
  ck_assert(weft_mpqueue_full(q));
  double t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), WEFT_EFULL);
  ck_assert_int_eq(weft_mpqueue_put(q, msg, 24, 0), WEFT_EFULL);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_put(q, msg, 24, 0.05), WEFT_EFULL);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.05);
  ck_assert_double_lt(elapsed, LATE_S);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 8);
  /* One taken frees exactly one slot. */
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 24);
  ck_assert(same(out, 0, 24));
  ck_assert(!weft_mpqueue_full(q));
  fill(msg, 8, 24);
  ck_assert_int_eq(weft_mpqueue_put(q, msg, 24, 0), 0);
  ck_assert(weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), WEFT_EFULL);
  for (uint32_t i = 1; i <= 8; i++) {
    ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
    ck_assert_uint_eq(len, 24);
    ck_assert(same(out, i, 24));
  }
  ck_assert(weft_mpqueue_empty(q));

  /* Mixed sizes: 200 takes 208, 40 takes 48: 256 in all. */
  fill(msg, 20, 200);
  ck_assert_int_eq(weft_mpqueue_put(q, msg, 200, 0), 0);
  fill(msg, 21, 40);
  ck_assert_int_eq(weft_mpqueue_put(q, msg, 41, 0), WEFT_EFULL); /* 41 takes 56 */
  ck_assert_int_eq(weft_mpqueue_put(q, msg, 40, 0), 0);
  ck_assert(weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), WEFT_EFULL);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 200);
  ck_assert(same(out, 20, 200));
  /* 208 free: 192 (200) and an empty message (8). */
  fill(msg, 22, 192);
  ck_assert_int_eq(weft_mpqueue_put(q, msg, 192, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), 0);
  ck_assert(weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), WEFT_EFULL);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 3);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 40);
  ck_assert(same(out, 21, 40));
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 192);
  ck_assert(same(out, 22, 192));
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 0);
  ck_assert(weft_mpqueue_empty(q));
  t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), WEFT_EEMPTY);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0.05), WEFT_EEMPTY);
  elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.05);
  ck_assert_double_lt(elapsed, LATE_S);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
}
END_TEST

START_TEST(mpqueue_bounded_by_count) {
  weft_mpqueue *q = weft_mpqueue_new(.maxsize = 3);
  ck_assert_ptr_nonnull(q);
  char out[16];
  size_t len;
  for (int i = 0; i < 3; i++) {
    ck_assert(!weft_mpqueue_full(q));
    ck_assert_int_eq(weft_mpqueue_put(q, "abcdefghij", 10, 0), 0);
    ck_assert_uint_eq(weft_mpqueue_qsize(q), (size_t)i + 1);
  }
  ck_assert(weft_mpqueue_full(q));
  double t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), WEFT_EFULL);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_put(q, "x", 1, 0.05), WEFT_EFULL);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.05);
  ck_assert_double_lt(elapsed, LATE_S);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 3);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert(!weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_put(q, "x", 1, 0), 0);
  ck_assert(weft_mpqueue_full(q));
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
    ck_assert_uint_eq(len, 10);
    ck_assert(memcmp(out, "abcdefghij", 10) == 0);
  }
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 1);
  ck_assert_int_eq(out[0], 'x');
  ck_assert(weft_mpqueue_empty(q));
  ck_assert_int_eq(weft_mpqueue_free(q), 0);

  q = weft_mpqueue_new(.maxsize = 1, .capacity = 1024);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), 0);
  ck_assert(weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), WEFT_EFULL);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 0);
  ck_assert(!weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
}
END_TEST

/* The capacity rule holds whatever the history: a put succeeds exactly when
 * the messages held plus the new one, each its length rounded up to 8 plus
 * 8, fit in the capacity -- also when the storage has wrapped around. */
START_TEST(mpqueue_capacity_accounting_exact_after_wraparound) {
  enum { CAP = 1024, RING = 256 };
  weft_mpqueue *q = weft_mpqueue_new(.capacity = CAP);
  ck_assert_ptr_nonnull(q);
  uint32_t ids[RING];
  size_t lens[RING];
  int head = 0, count = 0;
  size_t used = 0;
  uint32_t s = 777, next_id = 1;
  unsigned char msg[256], out[256];
  int puts_ok = 0, puts_full = 0;
  for (int op = 0; op < 30000 / SLOW; op++) {
    if (rng(&s) % 5 < 3) {
      size_t len = rng(&s) % 4 == 0 ? rng(&s) % 9 : rng(&s) % 201;
      uint32_t id = next_id++;
      fill(msg, id, len);
      int rc = weft_mpqueue_put(q, msg, len, 0);
      int want = used + slot_of(len) <= CAP ? 0 : WEFT_EFULL;
      CHECK(rc == want, "op %d: put of %zu with %zu of %d used: %d, expected %d", op, len, used,
            CAP, rc, want);
      if (rc == 0) {
        ids[(head + count) % RING] = id;
        lens[(head + count) % RING] = len;
        count++;
        used += slot_of(len);
        puts_ok++;
      } else {
        puts_full++;
      }
    } else {
      size_t len = 12345;
      int rc = weft_mpqueue_get(q, out, sizeof out, &len, 0);
      if (count == 0) {
        CHECK(rc == WEFT_EEMPTY, "op %d: get on empty: %d", op, rc);
      } else {
        CHECK(rc == 0, "op %d: get: %d", op, rc);
        CHECK(len == lens[head], "op %d: length %zu, expected %zu", op, len, lens[head]);
        CHECK(same(out, ids[head], len), "op %d: message %u damaged", op, ids[head]);
        used -= slot_of(lens[head]);
        head = (head + 1) % RING;
        count--;
      }
    }
    CHECK(weft_mpqueue_qsize(q) == (size_t)count, "op %d: qsize %zu, %d held", op,
          weft_mpqueue_qsize(q), count);
    CHECK(weft_mpqueue_empty(q) == (count == 0), "op %d: empty() wrong", op);
    if (used == CAP) CHECK(weft_mpqueue_full(q), "op %d: full() false with no room", op);
  }
  /* Both outcomes were exercised. */
  ck_assert_int_gt(puts_ok, 100);
  ck_assert_int_gt(puts_full, 10);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
}
END_TEST

struct sync_put {
  weft_mpqueue *q;
  int n;
  int posted;
  int ack;
};

static int sync_put_child(void *arg) {
  struct sync_put *x = arg;
  for (int i = 1; i <= x->n; i++) {
    if (weft_mpqueue_put(x->q, &i, sizeof i, 10) != 0) return 1;
    st(&x->posted, i);
    if (!wait_ge(&x->ack, i, 10)) return 2;
  }
  return 0;
}

START_TEST(mpqueue_sizes_exact_after_put_and_get) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096, .maxsize = 4);
  ck_assert_ptr_nonnull(q);
  char out[64];
  size_t len;
  for (int round = 0; round < 2000; round++) {
    int n = round % 5;
    for (int i = 0; i < n; i++) {
      CHECK(weft_mpqueue_put(q, "msg", 3, 0) == 0, "put failed");
      CHECK(weft_mpqueue_qsize(q) == (size_t)i + 1, "qsize %zu after %d puts",
            weft_mpqueue_qsize(q), i + 1);
      CHECK(!weft_mpqueue_empty(q), "empty right after a put");
      CHECK(weft_mpqueue_full(q) == (i + 1 == 4), "full() wrong with %d of 4", i + 1);
    }
    for (int i = 0; i < n; i++) {
      CHECK(weft_mpqueue_get(q, out, sizeof out, &len, 0) == 0, "get failed");
      CHECK(weft_mpqueue_qsize(q) == (size_t)(n - i - 1), "qsize %zu after get",
            weft_mpqueue_qsize(q));
      CHECK(weft_mpqueue_empty(q) == (i == n - 1), "empty() wrong after get");
      CHECK(!weft_mpqueue_full(q), "full right after a get");
    }
  }
  ck_assert_int_eq(weft_mpqueue_free(q), 0);

  /* A put in another process, once seen to return, is counted here: the
   * "empty() lies" trap of multiprocessing.Queue's feeder thread. */
  q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  struct sync_put *x = shared(sizeof *x);
  x->q = q;
  x->n = 200;
  weft_process p = start_process(sync_put_child, x);
  int bad = 0;
  for (int i = 1; i <= x->n; i++) {
    if (!wait_ge(&x->posted, i, 10)) {
      bad = -i;
      break;
    }
    int v = 0;
    if (weft_mpqueue_qsize(q) != 1 || weft_mpqueue_empty(q) ||
        weft_mpqueue_get(q, &v, sizeof v, &len, 0) != 0 || len != sizeof v || v != i) {
      bad = i;
      break;
    }
    st(&x->ack, i);
  }
  st(&x->ack, x->n);
  int code = finish_process(p, 10);
  ck_assert_msg(bad == 0, "message %d: not counted or not there right after its put", bad);
  ck_assert_int_eq(code, 0);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  weft_shared_free(x);
}
END_TEST

START_TEST(mpqueue_bad_arguments) {
  ck_assert_int_eq(weft_mpqueue_free(NULL), 0);
  /* Capacities. */
  ck_assert_ptr_null(weft_mpqueue_new(.capacity = 10));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_mpqueue_new(.capacity = 63));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_mpqueue_new(.capacity = WEFT_MPQUEUE_CAPACITY_MAX + 1));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  unsigned char *buf = malloc(2 << 20), *out = malloc(2 << 20);
  ck_assert(buf != NULL && out != NULL);
  fill(buf, 5, 2 << 20);
  size_t len;
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 64);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 57, 0), WEFT_EMSGSIZE);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 56, 0), 0);
  ck_assert(weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_get(q, out, 64, &len, 0), 0);
  ck_assert_uint_eq(len, 56);
  ck_assert(same(out, 5, 56));
  ck_assert_int_eq(weft_mpqueue_free(q), 0);

  /* Capacity 0: the default, 2 MiB. */
  q = weft_mpqueue_new(.capacity = 0);
  ck_assert_ptr_nonnull(q);
  const size_t dflt = 2 << 20;
  ck_assert_int_eq(weft_mpqueue_put(q, buf, dflt - 7, 0), WEFT_EMSGSIZE);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, dflt - 8, 0), 0);
  ck_assert(weft_mpqueue_full(q));
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), WEFT_EFULL);
  ck_assert_int_eq(weft_mpqueue_get(q, out, dflt, &len, 0), 0);
  ck_assert_uint_eq(len, dflt - 8);
  ck_assert(same(out, 5, dflt - 8));
  ck_assert_int_eq(weft_mpqueue_put(q, buf, dflt / 2 - 8, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, dflt / 2 - 8, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), WEFT_EFULL);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  q = weft_mpqueue_new();
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, dflt - 7, 0), WEFT_EMSGSIZE);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, dflt - 8, 0), 0);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);

  /* Arguments of put and get. */
  q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_put(q, NULL, 5, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, (size_t)-1, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, (size_t)-4096, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 8, NAN), WEFT_EINVAL);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 0);
  ck_assert_int_eq(weft_mpqueue_get(q, out, 64, &len, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_join(q, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_put(q, "", 0, 0), 0);
  ck_assert_int_eq(weft_mpqueue_get(q, out, 64, &len, NAN), WEFT_EINVAL);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 1);
  ck_assert_int_eq(weft_mpqueue_put(NULL, buf, 8, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_get(NULL, out, 64, &len, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_task_done(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_join(NULL, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_close(NULL), WEFT_EINVAL);
  len = 99;
  ck_assert_int_eq(weft_mpqueue_get(q, out, 64, &len, 0), 0);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(weft_mpqueue_put(q, buf, 8, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_gt(strlen(weft_last_error()), 0);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  free(buf);
  free(out);
}
END_TEST

START_TEST(mpqueue_task_done_and_join_in_one_process) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_join(q, 0), 0);
  ck_assert_int_eq(weft_mpqueue_task_done(q), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_put(q, "a", 1, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "b", 1, 0), 0);
  ck_assert_int_eq(weft_mpqueue_join(q, 0), WEFT_ETIMEDOUT);
  double t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_join(q, 0.05), WEFT_ETIMEDOUT);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.05);
  ck_assert_double_lt(elapsed, LATE_S);
  char out[8];
  size_t len;
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_int_eq(weft_mpqueue_task_done(q), 0);
  ck_assert_int_eq(weft_mpqueue_join(q, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_int_eq(weft_mpqueue_task_done(q), 0);
  ck_assert_int_eq(weft_mpqueue_join(q, 0), 0);
  ck_assert_int_eq(weft_mpqueue_join(q, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_mpqueue_task_done(q), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_close(q), 0);
  ck_assert_int_eq(weft_mpqueue_close(q), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "c", 1, 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
}
END_TEST

/* =================================== process queues: between processes */

static const size_t edge_lens[] = {0,   1,   2,   7,    8,    9,    15,   16,  17, 63,
                                   64,  65,  255, 256,  257,  1000, 4095, 4096, 4097};
#define N_EDGE ((int)(sizeof edge_lens / sizeof edge_lens[0]))
#define XFER_N 600

/* Message i of a known stream over a queue of capacity cap: the edge
 * lengths, the two largest that fit, an empty one, then random lengths. */
static size_t xfer_len(int i, size_t cap) {
  if (i < N_EDGE) return edge_lens[i];
  if (i == N_EDGE) return cap - 9;
  if (i == N_EDGE + 1) return cap - 8;
  if (i == N_EDGE + 2) return 0;
  return mix32((uint32_t)i) % 5000;
}

static uint32_t xfer_seed(int i) { return mix32((uint32_t)i * 7u + 1u); }

struct xfer {
  weft_mpqueue *q;
  size_t cap;
  int n;
  int fail_at;
  int fail_rc;
  size_t fail_len;
};

static int xfer_put_child(void *arg) {
  struct xfer *x = arg;
  unsigned char *buf = malloc(x->cap);
  if (buf == NULL) return 90;
  for (int i = 0; i < x->n; i++) {
    size_t len = xfer_len(i, x->cap);
    fill(buf, xfer_seed(i), len);
    int rc = weft_mpqueue_put(x->q, buf, len, 10);
    if (rc != 0) {
      x->fail_at = i;
      x->fail_rc = rc;
      free(buf);
      return 1;
    }
  }
  free(buf);
  return 0;
}

static int xfer_get_child(void *arg) {
  struct xfer *x = arg;
  unsigned char *buf = malloc(x->cap);
  if (buf == NULL) return 90;
  int code = 0;
  for (int i = 0; i < x->n && code == 0; i++) {
    size_t len = 12345;
    int rc = weft_mpqueue_get(x->q, buf, x->cap, &len, 10);
    if (rc != 0) code = 1;
    else if (len != xfer_len(i, x->cap)) code = 2;
    else if (!same(buf, xfer_seed(i), len)) code = 3;
    if (code != 0) {
      x->fail_at = i;
      x->fail_rc = rc;
      x->fail_len = len;
    }
  }
  size_t len;
  if (code == 0 && weft_mpqueue_get(x->q, buf, x->cap, &len, 0) != WEFT_EEMPTY) code = 4;
  free(buf);
  return code;
}

START_TEST(mpqueue_messages_cross_processes_intact_in_order) {
  const size_t cap = 1 << 16;
  struct xfer *x = shared(sizeof *x);
  weft_mpqueue *q = weft_mpqueue_new(.capacity = cap);
  ck_assert_ptr_nonnull(q);
  *x = (struct xfer){.q = q, .cap = cap, .n = XFER_N, .fail_at = -1};
  /* Child to parent. */
  weft_process p = start_process(xfer_put_child, x);
  unsigned char *buf = malloc(cap);
  ck_assert_ptr_nonnull(buf);
  int bad = -1, rc = 0;
  size_t len = 0;
  for (int i = 0; i < XFER_N && bad < 0; i++) {
    len = 12345;
    rc = weft_mpqueue_get(q, buf, cap, &len, 10);
    if (rc != 0 || len != xfer_len(i, cap) || !same(buf, xfer_seed(i), len)) bad = i;
  }
  int code = finish_process(p, 10);
  ck_assert_msg(bad < 0, "message %d: rc %d, length %zu (expected %zu), child failed at %d (%d)",
                bad, rc, len, bad >= 0 ? xfer_len(bad, cap) : 0, x->fail_at, x->fail_rc);
  ck_assert_int_eq(code, 0);
  ck_assert_int_eq(weft_mpqueue_get(q, buf, cap, &len, 0), WEFT_EEMPTY);

  /* Parent to child. */
  x->fail_at = -1;
  p = start_process(xfer_get_child, x);
  int put_bad = -1;
  for (int i = 0; i < XFER_N && put_bad < 0; i++) {
    size_t n = xfer_len(i, cap);
    fill(buf, xfer_seed(i), n);
    rc = weft_mpqueue_put(q, buf, n, 10);
    if (rc != 0) put_bad = i;
  }
  code = finish_process(p, 20);
  ck_assert_msg(put_bad < 0, "put %d failed: %d", put_bad, rc);
  ck_assert_msg(code == 0, "child: code %d at message %d (rc %d, length %zu)", code, x->fail_at,
                x->fail_rc, x->fail_len);
  free(buf);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  weft_shared_free(x);
}
END_TEST

struct wake {
  weft_mpqueue *q;
  int started;
  int rc;
  size_t len;
  char got[64];
  const char *msg;
  size_t msg_len;
};

static int wake_get_child(void *arg) {
  struct wake *w = arg;
  st(&w->started, 1);
  size_t len = 0;
  int rc = weft_mpqueue_get(w->q, w->got, sizeof w->got, &len, 30);
  w->len = len;
  st(&w->rc, rc);
  return rc == 0 ? 0 : 1;
}

static int wake_put_child(void *arg) {
  struct wake *w = arg;
  st(&w->started, 1);
  int rc = weft_mpqueue_put(w->q, w->msg, w->msg_len, 30);
  st(&w->rc, rc);
  return rc == 0 ? 0 : 1;
}

static void wait_child_blocked(struct wake *w, weft_process p) {
  ck_assert(wait_ge(&w->started, 1, 10));
  wait_asleep(process_state, weft_process_pid(p), 5); /* best effort */
}

START_TEST(mpqueue_blocked_calls_wake_across_processes) {
  struct wake *w = shared(sizeof *w);
  char out[64];
  size_t len;
  /* A get blocked on an empty queue takes a message put by the parent. */
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  *w = (struct wake){.q = q, .rc = 1};
  weft_process p = start_process(wake_get_child, w);
  wait_child_blocked(w, p);
  ck_assert_int_eq(weft_mpqueue_put(q, "wake up", 7, 0), 0);
  ck_assert_int_eq(finish_process(p, 10), 0);
  ck_assert_int_eq(w->rc, 0);
  ck_assert_uint_eq(w->len, 7);
  ck_assert(memcmp(w->got, "wake up", 7) == 0);
  ck_assert(weft_mpqueue_empty(q));
  ck_assert_int_eq(weft_mpqueue_free(q), 0);

  /* A put blocked on a full (by count) queue goes in when the parent gets. */
  q = weft_mpqueue_new(.maxsize = 1, .capacity = 4096);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_put(q, "first", 5, 0), 0);
  *w = (struct wake){.q = q, .rc = 1, .msg = "second", .msg_len = 6};
  p = start_process(wake_put_child, w);
  wait_child_blocked(w, p);
  ck_assert_int_eq(ld(&w->rc), 1);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 1);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 5);
  ck_assert(memcmp(out, "first", 5) == 0);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 10), 0);
  ck_assert_uint_eq(len, 6);
  ck_assert(memcmp(out, "second", 6) == 0);
  ck_assert_int_eq(finish_process(p, 10), 0);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);

  /* The same when the bytes are what is full. */
  q = weft_mpqueue_new(.capacity = 64);
  ck_assert_ptr_nonnull(q);
  unsigned char big[56];
  fill(big, 3, sizeof big);
  ck_assert_int_eq(weft_mpqueue_put(q, big, sizeof big, 0), 0);
  *w = (struct wake){.q = q, .rc = 1, .msg = "8 bytes!", .msg_len = 8};
  p = start_process(wake_put_child, w);
  wait_child_blocked(w, p);
  ck_assert_int_eq(ld(&w->rc), 1);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 1);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 56);
  ck_assert(same((unsigned char *)out, 3, 56));
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 10), 0);
  ck_assert_uint_eq(len, 8);
  ck_assert(memcmp(out, "8 bytes!", 8) == 0);
  ck_assert_int_eq(finish_process(p, 10), 0);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  weft_shared_free(w);
}
END_TEST

struct closex {
  weft_mpqueue *q;
  int started;
  int step;   /* where the child failed */
  int rc;
};

/* Takes the two messages there, then blocks in get until the queue closes. */
static int drain_then_wait_close_child(void *arg) {
  struct closex *x = arg;
  char out[16];
  size_t len;
  for (int i = 0; i < 2; i++) {
    int rc = weft_mpqueue_get(x->q, out, sizeof out, &len, 10);
    if (rc != 0 || len != 2 || out[0] != 'm' || out[1] != '1' + i) {
      x->step = 1 + i;
      x->rc = rc;
      return 1;
    }
  }
  st(&x->started, 1);
  int rc = weft_mpqueue_get(x->q, out, sizeof out, &len, 30);
  if (rc != WEFT_ECLOSED) {
    x->step = 3;
    x->rc = rc;
    return 1;
  }
  rc = weft_mpqueue_put(x->q, "late", 4, 5);
  if (rc != WEFT_ECLOSED) {
    x->step = 4;
    x->rc = rc;
    return 1;
  }
  return 0;
}

static int closer_child(void *arg) {
  struct closex *x = arg;
  if (weft_mpqueue_close(x->q) != 0) return 1;
  if (weft_mpqueue_close(x->q) != 0) return 2;
  return 0;
}

/* Takes exactly three messages, then must see the queue closed. */
static int drain_three_child(void *arg) {
  struct closex *x = arg;
  char out[16];
  size_t len;
  for (int i = 0; i < 3; i++) {
    int rc = weft_mpqueue_get(x->q, out, sizeof out, &len, 10);
    if (rc != 0 || len != 1 || out[0] != 'a' + i) {
      x->step = 1 + i;
      x->rc = rc;
      return 1;
    }
  }
  double t0 = test_now();
  int rc = weft_mpqueue_get(x->q, out, sizeof out, &len, 30);
  if (rc != WEFT_ECLOSED || test_now() - t0 > 5) {
    x->step = 4;
    x->rc = rc;
    return 1;
  }
  return 0;
}

static int blocked_put_until_close_child(void *arg) {
  struct closex *x = arg;
  st(&x->started, 1);
  int rc = weft_mpqueue_put(x->q, "blocked", 7, 30);
  x->rc = rc;
  return rc == WEFT_ECLOSED ? 0 : 1;
}

START_TEST(mpqueue_close_across_processes) {
  struct closex *x = shared(sizeof *x);
  char out[16];
  size_t len;
  /* A child drains, blocks in get; another child closes: it wakes. */
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  x->q = q;
  ck_assert_int_eq(weft_mpqueue_put(q, "m1", 2, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "m2", 2, 0), 0);
  weft_process a = start_process(drain_then_wait_close_child, x);
  ck_assert(wait_ge(&x->started, 1, 10));
  wait_asleep(process_state, weft_process_pid(a), 5); /* best effort */
  weft_process b = start_process(closer_child, x);
  ck_assert_int_eq(finish_process(b, 10), 0);
  int code = finish_process(a, 10);
  ck_assert_msg(code == 0, "child: code %d, step %d, rc %d", code, x->step, x->rc);
  double t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_put(q, "x", 1, WEFT_FOREVER), WEFT_ECLOSED);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, WEFT_FOREVER), WEFT_ECLOSED);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 0);
  ck_assert(weft_mpqueue_empty(q));
  ck_assert_int_eq(weft_mpqueue_free(q), 0);

  /* Closed by the parent with messages left: the child gets them, then
   * closed. */
  q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  *x = (struct closex){.q = q};
  weft_process c = start_process(drain_three_child, x);
  ck_assert_int_eq(weft_mpqueue_put(q, "a", 1, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "b", 1, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "c", 1, 0), 0);
  ck_assert_int_eq(weft_mpqueue_close(q), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "d", 1, 0), WEFT_ECLOSED);
  code = finish_process(c, 10);
  ck_assert_msg(code == 0, "child: code %d, step %d, rc %d", code, x->step, x->rc);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);

  /* A put blocked on a full queue in a child wakes on close; its message
   * never got in. */
  q = weft_mpqueue_new(.capacity = 4096, .maxsize = 1);
  ck_assert_ptr_nonnull(q);
  *x = (struct closex){.q = q, .rc = 1};
  ck_assert_int_eq(weft_mpqueue_put(q, "kept", 4, 0), 0);
  weft_process d = start_process(blocked_put_until_close_child, x);
  ck_assert(wait_ge(&x->started, 1, 10));
  wait_asleep(process_state, weft_process_pid(d), 5); /* best effort */
  ck_assert_int_eq(weft_mpqueue_close(q), 0);
  code = finish_process(d, 10);
  ck_assert_msg(code == 0, "blocked put returned %d", x->rc);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 4);
  ck_assert(memcmp(out, "kept", 4) == 0);
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  weft_shared_free(x);
}
END_TEST

struct tasks {
  weft_mpqueue *q;
  weft_event go;
  int taken;
  int n_each;
  int joined;     /* set when the joining child's join returned */
  int join_rc;
};

static int task_worker_child(void *arg) {
  struct tasks *x = arg;
  char out[16];
  size_t len;
  for (int i = 0; i < x->n_each; i++) {
    if (weft_mpqueue_get(x->q, out, sizeof out, &len, 10) != 0) return 1;
    inc(&x->taken);
  }
  if (weft_event_wait(&x->go, 30) != 0) return 2;
  for (int i = 0; i < x->n_each; i++)
    if (weft_mpqueue_task_done(x->q) != 0) return 3;
  return 0;
}

static int task_joiner_child(void *arg) {
  struct tasks *x = arg;
  int rc = weft_mpqueue_join(x->q, 30);
  x->join_rc = rc;
  st(&x->joined, 1);
  return rc == 0 ? 0 : 1;
}

START_TEST(mpqueue_task_done_and_join_across_processes) {
  struct tasks *x = shared(sizeof *x);
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  x->q = q;
  x->n_each = 10;
  ck_assert_int_eq(weft_event_init(&x->go), 0);
  for (int i = 0; i < 20; i++) ck_assert_int_eq(weft_mpqueue_put(q, &i, sizeof i, 0), 0);
  ck_assert_int_eq(weft_mpqueue_join(q, 0), WEFT_ETIMEDOUT);
  weft_process j = start_process(task_joiner_child, x);
  weft_process w1 = start_process(task_worker_child, x);
  weft_process w2 = start_process(task_worker_child, x);
  ck_assert(wait_ge(&x->taken, 20, 20));
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 0);
  /* Everything taken, nothing done. */
  double t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_join(q, 0), WEFT_ETIMEDOUT);
  ck_assert_double_lt(test_now() - t0, PROMPT_S);
  t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_join(q, 0.05), WEFT_ETIMEDOUT);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.05);
  ck_assert_double_lt(elapsed, LATE_S);
  ck_assert_int_eq(ld(&x->joined), 0);
  ck_assert_int_eq(weft_event_set(&x->go), 0);
  ck_assert_int_eq(weft_mpqueue_join(q, 10), 0);
  ck_assert_int_eq(finish_process(w1, 10), 0);
  ck_assert_int_eq(finish_process(w2, 10), 0);
  int code = finish_process(j, 10);
  ck_assert_msg(code == 0, "the joining child got %d", x->join_rc);
  ck_assert_int_eq(weft_mpqueue_task_done(q), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_join(q, 0), 0);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  weft_shared_free(x);
}
END_TEST

static int take_one_child(void *arg) {
  weft_mpqueue *q = arg;
  char out[16];
  size_t len;
  return weft_mpqueue_get(q, out, sizeof out, &len, 10) == 0 ? 0 : 1;
}

/* A process that dies between get and task_done: join times out. */
START_TEST(mpqueue_dead_consumer_leaves_join_timing_out) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_put(q, "one", 3, 0), 0);
  ck_assert_int_eq(weft_mpqueue_put(q, "two", 3, 0), 0);
  weft_process p = start_process(take_one_child, q);
  ck_assert_int_eq(finish_process(p, 10), 0);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 1);
  double t0 = test_now();
  ck_assert_int_eq(weft_mpqueue_join(q, 0.1), WEFT_ETIMEDOUT);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.1);
  ck_assert_double_lt(elapsed, LATE_S);
  char out[16];
  size_t len;
  ck_assert_int_eq(weft_mpqueue_get(q, out, sizeof out, &len, 0), 0);
  ck_assert_uint_eq(len, 3);
  ck_assert(memcmp(out, "two", 3) == 0);
  ck_assert_int_eq(weft_mpqueue_task_done(q), 0);
  ck_assert_int_eq(weft_mpqueue_join(q, 0), WEFT_ETIMEDOUT);
  /* Anyone may finish the dead one's message. */
  ck_assert_int_eq(weft_mpqueue_task_done(q), 0);
  ck_assert_int_eq(weft_mpqueue_join(q, 0), 0);
  ck_assert_int_eq(weft_mpqueue_task_done(q), WEFT_EINVAL);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
}
END_TEST

#define MP_PRODUCERS 3
#define MP_CONSUMERS 2
#define MP_MAXP 600

struct mpx {
  weft_mpqueue *q;
  int per;
  int count[MP_CONSUMERS];
  int bad[MP_CONSUMERS];
  int rc[MP_PRODUCERS + MP_CONSUMERS];
  uint32_t *rec; /* MP_CONSUMERS rows of per * MP_PRODUCERS: producer << 24 | seq */
};

struct role {
  struct mpx *x;
  int id;
};

static int mp_producer(void *arg) {
  const struct role *r = arg;
  struct mpx *x = r->x;
  unsigned char buf[TAG_HDR + MP_MAXP];
  for (int seq = 0; seq < x->per; seq++) {
    size_t n = tag_make(buf, (uint32_t)r->id, (uint32_t)seq,
                        tag_plen((uint32_t)r->id, (uint32_t)seq, MP_MAXP));
    int rc = weft_mpqueue_put(x->q, buf, n, 10);
    if (rc != 0) {
      x->rc[r->id] = rc;
      return 1;
    }
  }
  return 0;
}

static int mp_consumer(void *arg) {
  const struct role *r = arg;
  struct mpx *x = r->x;
  int total = x->per * MP_PRODUCERS;
  uint32_t *rec = x->rec + (size_t)r->id * (size_t)total;
  unsigned char buf[TAG_HDR + MP_MAXP + 64];
  for (;;) {
    size_t len;
    int rc = weft_mpqueue_get(x->q, buf, sizeof buf, &len, 20);
    if (rc != 0) {
      x->rc[MP_PRODUCERS + r->id] = rc;
      return 1;
    }
    uint32_t producer, seq;
    if (!tag_check(buf, len, &producer, &seq)) {
      inc(&x->bad[r->id]);
      continue;
    }
    if (producer == STOP_PRODUCER) return 0;
    int cnt = ld(&x->count[r->id]);
    if (cnt >= total) {
      inc(&x->bad[r->id]);
      continue;
    }
    rec[cnt] = producer << 24 | seq;
    st(&x->count[r->id], cnt + 1);
  }
}

START_TEST(mpqueue_producers_consumers_exactly_once_in_order) {
  struct mpx *x = shared(sizeof *x);
  x->per = 20000 / SLOW;
  int total = x->per * MP_PRODUCERS;
  x->rec = shared((size_t)MP_CONSUMERS * (size_t)total * sizeof *x->rec);
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 1 << 16);
  ck_assert_ptr_nonnull(q);
  x->q = q;
  struct role roles[MP_PRODUCERS + MP_CONSUMERS];
  weft_process ps[MP_PRODUCERS + MP_CONSUMERS];
  for (int i = 0; i < MP_CONSUMERS; i++) {
    roles[MP_PRODUCERS + i] = (struct role){x, i};
    ps[MP_PRODUCERS + i] = start_process(mp_consumer, &roles[MP_PRODUCERS + i]);
  }
  for (int i = 0; i < MP_PRODUCERS; i++) {
    roles[i] = (struct role){x, i};
    ps[i] = start_process(mp_producer, &roles[i]);
  }
  int codes[MP_PRODUCERS + MP_CONSUMERS];
  for (int i = 0; i < MP_PRODUCERS; i++) codes[i] = finish_process(ps[i], 60);
  /* Stop messages come after every real one (FIFO). */
  unsigned char stop[TAG_HDR];
  int stop_rc = 0;
  for (int i = 0; i < MP_CONSUMERS; i++) {
    int rc = weft_mpqueue_put(q, stop, tag_make(stop, STOP_PRODUCER, (uint32_t)i, 0), 10);
    if (rc != 0) stop_rc = rc;
  }
  for (int i = 0; i < MP_CONSUMERS; i++)
    codes[MP_PRODUCERS + i] = finish_process(ps[MP_PRODUCERS + i], 30);
  for (int i = 0; i < MP_PRODUCERS + MP_CONSUMERS; i++)
    ck_assert_msg(codes[i] == 0, "process %d: exit code %d, rc %d", i, codes[i], x->rc[i]);
  ck_assert_int_eq(stop_rc, 0);
  int *seen = calloc((size_t)total, sizeof *seen);
  ck_assert_ptr_nonnull(seen);
  int received = 0;
  for (int c = 0; c < MP_CONSUMERS; c++) {
    ck_assert_int_eq(x->bad[c], 0);
    int last[MP_PRODUCERS] = {-1, -1, -1};
    const uint32_t *rec = x->rec + (size_t)c * (size_t)total;
    for (int i = 0; i < x->count[c]; i++) {
      int p = (int)(rec[i] >> 24), seq = (int)(rec[i] & 0xffffff);
      CHECK(p < MP_PRODUCERS && seq < x->per, "consumer %d: bad record %x", c, rec[i]);
      CHECK(seq > last[p], "consumer %d: producer %d's %d after %d", c, p, seq, last[p]);
      last[p] = seq;
      seen[p * x->per + seq]++;
    }
    received += x->count[c];
  }
  for (int i = 0; i < total; i++)
    CHECK(seen[i] == 1, "producer %d's message %d received %d times", i / x->per, i % x->per,
          seen[i]);
  ck_assert_int_eq(received, total);
  size_t len;
  unsigned char buf[64];
  ck_assert_int_eq(weft_mpqueue_get(q, buf, sizeof buf, &len, 0), WEFT_EEMPTY);
  free(seen);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  weft_shared_free(x->rec);
  weft_shared_free(x);
}
END_TEST

/* ---- deaths ---- */

#define PK_MAXP 2000

struct pk {
  weft_mpqueue *q;
  uint32_t producer;
  int last_done;   /* the last seq whose put returned 0 */
  int put_rc;
};

/* Puts numbered messages as fast as it can until killed. */
static int pk_producer(void *arg) {
  struct pk *x = arg;
  unsigned char *buf = malloc(TAG_HDR + PK_MAXP);
  if (buf == NULL) return 90;
  for (uint32_t seq = 0;; seq++) {
    size_t n = tag_make(buf, x->producer, seq, tag_plen(x->producer, seq, PK_MAXP));
    int rc = weft_mpqueue_put(x->q, buf, n, 30);
    if (rc != 0) {
      st(&x->put_rc, rc);
      return 1;
    }
    st(&x->last_done, (int)seq);
  }
}

/* Takes up to max messages (get with the timeout, stopping at EEMPTY) that
 * must all be whole, from producer, numbered *next, *next + 1, ... Returns
 * NULL, or what was wrong. */
static const char *take_stream(weft_mpqueue *q, unsigned char *buf, size_t cap, uint32_t producer,
                               int *next, double timeout, int max) {
  static char why[160];
  for (int i = 0; i < max; i++) {
    size_t len = 0;
    int rc = weft_mpqueue_get(q, buf, cap, &len, timeout);
    if (rc == WEFT_EEMPTY) return timeout > 0 ? "a get timed out" : NULL;
    if (rc != 0) {
      snprintf(why, sizeof why, "get returned %s after %d messages", rc_name(rc), *next);
      return why;
    }
    uint32_t p, seq;
    if (!tag_check(buf, len, &p, &seq)) {
      snprintf(why, sizeof why, "message after %d is damaged (length %zu)", *next, len);
      return why;
    }
    if (p != producer || seq != (uint32_t)*next) {
      snprintf(why, sizeof why, "got producer %u's %u, expected producer %u's %d", p, seq,
               producer, *next);
      return why;
    }
    (*next)++;
  }
  return NULL;
}

enum { PK_NOT_FULL, PK_FULL, PK_CONSUMING };
/* Kills per mode: the window for a kill that hurts may be narrow. */
#define PK_ROUNDS (SLOW > 2 ? 4 : 10)

/* A producer SIGKILLed mid-stream (running freely, blocked in put on a full
 * queue, or while the parent consumes): the messages that survive are
 * whole, in order, without gaps or duplicates, and include every put that
 * returned. Once the producer is reaped and the queue drained to EEMPTY,
 * the queue is empty (qsize 0) and stays so -- nothing of the dead
 * producer's turns up later, ahead of new messages -- and works on. */
START_TEST(mpqueue_producer_killed_mid_stream) {
  struct pk *x = shared(sizeof *x);
  const size_t cap = TAG_HDR + PK_MAXP + 64;
  unsigned char *buf = malloc(cap);
  ck_assert_ptr_nonnull(buf);
  const int seen_before_kill = 1000 / (SLOW > 2 ? 4 : 1);
  for (int mode = PK_NOT_FULL; mode <= PK_CONSUMING; mode++) {
    weft_mpqueue *q = weft_mpqueue_new(.capacity = mode == PK_NOT_FULL ? 8 << 20 : 64 << 10);
    ck_assert_ptr_nonnull(q);
    x->q = q;
    for (int round = 0; round < PK_ROUNDS; round++) {
      x->producer = (uint32_t)(mode * 100 + round + 1);
      st(&x->last_done, -1);
      st(&x->put_rc, 0);
      weft_process p = start_process(pk_producer, x);
      pid_t pid = weft_process_pid(p);
      int next = 0;
      const char *why = NULL;
      bool reached = true;
      if (mode == PK_NOT_FULL) {
        /* Kill once the queue has seen enough, with the producer running. */
        double end = test_now() + 20;
        while (weft_mpqueue_qsize(q) < (size_t)seen_before_kill && test_now() < end) {
        }
        reached = weft_mpqueue_qsize(q) >= (size_t)seen_before_kill;
      } else if (mode == PK_FULL) {
        /* Kill while it is blocked in put on the full queue: once it has
         * put something, it only sleeps in put. */
        double end = test_now() + 20;
        while (weft_mpqueue_qsize(q) == 0 && test_now() < end) nap(0.001);
        reached = weft_mpqueue_qsize(q) > 0 && wait_asleep(process_state, pid, 20);
      } else {
        /* Kill while the parent takes its messages. */
        why = take_stream(q, buf, cap, x->producer, &next, 10, seen_before_kill + 37 * round);
      }
      weft_process_kill(p);
      int code = finish_process(p, 10);
      ck_assert_msg(reached, "mode %d round %d: the producer never got there", mode, round);
      ck_assert_msg(why == NULL, "mode %d round %d, while running: %s", mode, round, why);
      ck_assert_msg(code == -SIGKILL, "mode %d round %d: exit code %d, put returned %d", mode,
                    round, code, ld(&x->put_rc));
      why = take_stream(q, buf, cap, x->producer, &next, 0, 1 << 30);
      ck_assert_msg(why == NULL, "mode %d round %d, after the kill: %s", mode, round, why);
      int last = ld(&x->last_done);
      ck_assert_msg(next >= last + 1 && next <= last + 2,
                    "mode %d round %d: %d messages survived, the last put that returned was %d",
                    mode, round, next, last);
      if (mode != PK_FULL) ck_assert_int_ge(next, seen_before_kill);
      size_t left = weft_mpqueue_qsize(q);
      if (left != 0 || !weft_mpqueue_empty(q)) {
        /* Drained to EEMPTY, yet counted: does a waiting get find it? */
        size_t len = 0;
        bool was_empty = weft_mpqueue_empty(q);
        int rc = weft_mpqueue_get(q, buf, cap, &len, 1.0);
        uint32_t pr = 0, seq = 0;
        bool whole = rc == 0 && tag_check(buf, len, &pr, &seq);
        size_t left2 = weft_mpqueue_qsize(q);
        /* And does a new message get through? */
        size_t n = tag_make(buf, 999, 0, 10);
        int put_rc = weft_mpqueue_put(q, buf, n, 1.0);
        size_t len2 = 0;
        int rc2 = weft_mpqueue_get(q, buf, cap, &len2, 2.0);
        uint32_t pr2 = 0, seq2 = 0;
        bool whole2 = rc2 == 0 && tag_check(buf, len2, &pr2, &seq2);
        ck_abort_msg("mode %d round %d: drained %d messages (last put returned: %d) to EEMPTY, "
                     "but qsize is %zu and empty() %d; get(1 s) then returned %s (length %zu, "
                     "whole %d, producer %u seq %u), qsize now %zu; then a new put returned %s "
                     "and get(2 s) %s (whole %d, producer %u seq %u), qsize now %zu",
                     mode, round, next, last, left, was_empty, rc_name(rc), len, whole, pr,
                     seq, left2, rc_name(put_rc), rc_name(rc2), whole2, pr2, seq2,
                     weft_mpqueue_qsize(q));
      }
      /* The queue works on; nothing of the dead producer's shows up later. */
      int drained = next;
      for (uint32_t i = 0; i < 3; i++) {
        size_t n = tag_make(buf, 999, i, 100 * i);
        ck_assert_int_eq(weft_mpqueue_put(q, buf, n, 5), 0);
      }
      next = 0;
      why = take_stream(q, buf, cap, 999, &next, 5, 3);
      ck_assert_msg(why == NULL,
                    "mode %d round %d, after the queue was drained to EEMPTY with qsize 0 (%d "
                    "messages, last put that returned %d) and 3 new puts: %s",
                    mode, round, drained, last, why);
      ck_assert_int_eq(next, 3);
    }
    ck_assert_int_eq(weft_mpqueue_free(q), 0);
  }
  free(buf);
  weft_shared_free(x);
}
END_TEST

#define CK_SLOTS 5   /* slot 0: the survivor; 1..4: killed in turn */
#define CK_MAX 200000
#define CK_MAXP 300

struct ck {
  weft_mpqueue *q;
  int stop;               /* tells the producer to finish */
  int n_put;              /* how many it put */
  int prod_rc;
  int count[CK_SLOTS];
  int bad[CK_SLOTS];
  int rc[CK_SLOTS];
  int hold[CK_SLOTS];     /* asks a consumer to stay out of the queue */
  int held[CK_SLOTS];     /* it does */
  uint32_t *rec;          /* CK_SLOTS rows of CK_MAX sequence numbers */
};

struct ck_role {
  struct ck *x;
  int slot;
};

static int ck_producer(void *arg) {
  struct ck *x = arg;
  unsigned char buf[TAG_HDR + CK_MAXP];
  uint32_t seq = 0;
  for (; seq < CK_MAX && !ld(&x->stop); seq++) {
    size_t n = tag_make(buf, 1, seq, tag_plen(1, seq, CK_MAXP));
    int rc = weft_mpqueue_put(x->q, buf, n, 10);
    if (rc != 0) {
      x->prod_rc = rc;
      st(&x->n_put, (int)seq);
      return 1;
    }
  }
  st(&x->n_put, (int)seq);
  return 0;
}

static int ck_consumer(void *arg) {
  const struct ck_role *r = arg;
  struct ck *x = r->x;
  uint32_t *rec = x->rec + (size_t)r->slot * CK_MAX;
  unsigned char buf[TAG_HDR + CK_MAXP + 64];
  for (;;) {
    if (ld(&x->hold[r->slot])) {
      st(&x->held[r->slot], 1);
      if (!wait_zero(&x->hold[r->slot], 30)) return 2;
      st(&x->held[r->slot], 0);
    }
    size_t len;
    int rc = weft_mpqueue_get(x->q, buf, sizeof buf, &len, 20);
    if (rc != 0) {
      x->rc[r->slot] = rc;
      return 1;
    }
    uint32_t producer, seq;
    if (!tag_check(buf, len, &producer, &seq)) {
      inc(&x->bad[r->slot]);
      continue;
    }
    if (producer == STOP_PRODUCER) return 0;
    int cnt = ld(&x->count[r->slot]);
    if (producer != 1 || cnt >= CK_MAX) {
      inc(&x->bad[r->slot]);
      continue;
    }
    rec[cnt] = seq;
    st(&x->count[r->slot], cnt + 1);
  }
}

/* Consumers SIGKILLed mid-stream, one after another: nothing duplicated, at
 * most the one message each was taking lost, the survivor goes on. A queue
 * need not be fair, so the survivor steps aside while each victim gets
 * going; odd victims are killed while they consume alone, even ones while
 * the survivor competes again. */
START_TEST(mpqueue_consumer_killed_mid_stream) {
  struct ck *x = shared(sizeof *x);
  x->rec = shared((size_t)CK_SLOTS * CK_MAX * sizeof *x->rec);
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 32 << 10);
  ck_assert_ptr_nonnull(q);
  x->q = q;
  const int kill_after = 1000 / (SLOW > 2 ? 4 : 1);
  struct ck_role roles[CK_SLOTS];
  for (int i = 0; i < CK_SLOTS; i++) roles[i] = (struct ck_role){x, i};
  weft_process prod = start_process(ck_producer, x);
  weft_process survivor = start_process(ck_consumer, &roles[0]);
  for (int v = 1; v < CK_SLOTS; v++) {
    st(&x->hold[0], 1);
    bool stepped_aside = wait_ge(&x->held[0], 1, 20);
    weft_process victim = start_process(ck_consumer, &roles[v]);
    int survivor_before = ld(&x->count[0]);
    bool reached = wait_ge(&x->count[v], kill_after, 20);
    bool competed = true;
    if (v % 2 == 0) {
      st(&x->hold[0], 0);
      competed = wait_ge(&x->count[0], survivor_before + 50, 20);
    }
    /* What everyone was doing, should the victim not have got there. */
    char vstate = process_state(weft_process_pid(victim));
    char sstate = process_state(weft_process_pid(survivor));
    char pstate = process_state(weft_process_pid(prod));
    size_t qsize = weft_mpqueue_qsize(q);
    int survivor_took = ld(&x->count[0]) - survivor_before;
    weft_process_kill(victim);
    int code = finish_process(victim, 10);
    st(&x->hold[0], 0);
    ck_assert_msg(stepped_aside, "the survivor did not step aside (count %d, code %d)",
                  ld(&x->count[0]), x->rc[0]);
    ck_assert_msg(competed, "the survivor did not resume while victim %d ran", v);
    ck_assert_msg(reached,
                  "victim %d took only %d messages (meanwhile the survivor took %d); states: "
                  "victim %c, survivor %c, producer %c; qsize %zu",
                  v, ld(&x->count[v]), survivor_took, vstate, sstate, pstate, qsize);
    ck_assert_msg(code == -SIGKILL, "victim %d: exit code %d, rc %d", v, code, x->rc[v]);
  }
  /* The survivor goes on after the last kill. */
  int after = ld(&x->count[0]);
  bool going = wait_ge(&x->count[0], after + 100, 20);
  st(&x->stop, 1);
  int pcode = finish_process(prod, 20);
  unsigned char stop[TAG_HDR];
  int stop_rc = weft_mpqueue_put(q, stop, tag_make(stop, STOP_PRODUCER, 0, 0), 10);
  int scode = finish_process(survivor, 30);
  ck_assert_msg(going, "the survivor stopped at %d", ld(&x->count[0]));
  ck_assert_msg(pcode == 0, "producer: code %d, rc %d", pcode, x->prod_rc);
  ck_assert_int_eq(stop_rc, 0);
  ck_assert_msg(scode == 0, "survivor: code %d, rc %d", scode, x->rc[0]);
  int n = x->n_put;
  ck_assert_int_gt(n, 0);
  char *seen = calloc((size_t)n, 1);
  ck_assert_ptr_nonnull(seen);
  int distinct = 0;
  for (int s = 0; s < CK_SLOTS; s++) {
    ck_assert_int_eq(x->bad[s], 0);
    const uint32_t *rec = x->rec + (size_t)s * CK_MAX;
    int prev = -1;
    for (int i = 0; i < x->count[s]; i++) {
      int seq = (int)rec[i];
      CHECK(seq < n, "slot %d: message %d, only %d put", s, seq, n);
      CHECK(seq > prev, "slot %d: message %d after %d", s, seq, prev);
      CHECK(!seen[seq], "message %d taken twice", seq);
      seen[seq] = 1;
      prev = seq;
      distinct++;
    }
  }
  ck_assert_msg(n - distinct <= CK_SLOTS - 1, "%d messages lost to %d kills", n - distinct,
                CK_SLOTS - 1);
  size_t len;
  unsigned char buf[64];
  ck_assert_int_eq(weft_mpqueue_get(q, buf, sizeof buf, &len, 0), WEFT_EEMPTY);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 0);
  free(seen);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  weft_shared_free(x->rec);
  weft_shared_free(x);
}
END_TEST

struct outlive {
  weft_mpqueue *q;
  weft_event a_done;
  int n;
  int fail_at;
};

static int outlive_producer(void *arg) {
  struct outlive *x = arg;
  unsigned char buf[TAG_HDR + 500];
  for (int i = 0; i < x->n; i++) {
    size_t len = tag_make(buf, 7, (uint32_t)i, tag_plen(7, (uint32_t)i, 500));
    if (weft_mpqueue_put(x->q, buf, len, 10) != 0) return 1;
  }
  /* Its own mapping goes; the others keep theirs. */
  if (weft_mpqueue_free(x->q) != 0) return 2;
  return 0;
}

static int outlive_consumer(void *arg) {
  struct outlive *x = arg;
  if (weft_event_wait(&x->a_done, 30) != 0) return 1;
  unsigned char buf[TAG_HDR + 600];
  for (int i = 0; i < x->n; i++) {
    size_t len;
    uint32_t p, seq;
    if (weft_mpqueue_get(x->q, buf, sizeof buf, &len, 10) != 0 || !tag_check(buf, len, &p, &seq) ||
        p != 7 || seq != (uint32_t)i) {
      x->fail_at = i;
      return 2;
    }
  }
  size_t len;
  if (weft_mpqueue_get(x->q, buf, sizeof buf, &len, 0) != WEFT_EEMPTY) return 3;
  return 0;
}

/* A producer that exited (and unmapped the queue) leaves its messages to a
 * consumer started before it exited. */
START_TEST(mpqueue_outlives_a_producer_that_exited) {
  struct outlive *x = shared(sizeof *x);
  weft_mpqueue *q = weft_mpqueue_new();
  ck_assert_ptr_nonnull(q);
  x->q = q;
  x->n = 500;
  x->fail_at = -1;
  ck_assert_int_eq(weft_event_init(&x->a_done), 0);
  weft_process b = start_process(outlive_consumer, x);
  weft_process a = start_process(outlive_producer, x);
  ck_assert_int_eq(finish_process(a, 10), 0);
  ck_assert_int_eq(weft_event_set(&x->a_done), 0);
  int code = finish_process(b, 20);
  ck_assert_msg(code == 0, "consumer: code %d at message %d", code, x->fail_at);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  weft_shared_free(x);
}
END_TEST

struct orphan {
  int ready[2];
  int pid[2];
  int go;
  int done[2];
  int code[2];
  int creator;   /* 100 once the creator started both */
};

struct orphan_arg {
  struct orphan *x;
  weft_mpqueue *q;
  int n;
};

static int orphan_finish(struct orphan *x, int i, int code) {
  x->code[i] = code;
  st(&x->done[i], 1);
  return code;
}

static int orphan_producer(void *arg) {
  const struct orphan_arg *a = arg;
  struct orphan *x = a->x;
  st(&x->pid[0], getpid());
  st(&x->ready[0], 1);
  if (!wait_ge(&x->go, 1, 30)) return orphan_finish(x, 0, 1);
  unsigned char buf[TAG_HDR + 300];
  for (int i = 0; i < a->n; i++) {
    size_t len = tag_make(buf, 3, (uint32_t)i, tag_plen(3, (uint32_t)i, 300));
    if (weft_mpqueue_put(a->q, buf, len, 10) != 0) return orphan_finish(x, 0, 2);
  }
  return orphan_finish(x, 0, 0);
}

static int orphan_consumer(void *arg) {
  const struct orphan_arg *a = arg;
  struct orphan *x = a->x;
  st(&x->pid[1], getpid());
  st(&x->ready[1], 1);
  unsigned char buf[TAG_HDR + 400];
  for (int i = 0; i < a->n; i++) {
    size_t len;
    uint32_t p, seq;
    int rc = weft_mpqueue_get(a->q, buf, sizeof buf, &len, 30);
    if (rc != 0) return orphan_finish(x, 1, 3);
    if (!tag_check(buf, len, &p, &seq) || p != 3 || seq != (uint32_t)i)
      return orphan_finish(x, 1, 4);
  }
  size_t len;
  if (weft_mpqueue_get(a->q, buf, sizeof buf, &len, 0) != WEFT_EEMPTY)
    return orphan_finish(x, 1, 5);
  return orphan_finish(x, 1, 0);
}

/* Creates the queue, starts a producer and a consumer (non-daemon), and
 * waits to be killed. */
static int orphan_creator(void *arg) {
  struct orphan *x = arg;
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  if (q == NULL) return 1;
  struct orphan_arg a = {x, q, 2000 / SLOW};
  weft_process g1 = weft_process_new(orphan_producer, .arg = &a);
  weft_process g2 = weft_process_new(orphan_consumer, .arg = &a);
  if (g1.id == 0 || g2.id == 0) return 2;
  if (weft_process_start(g2) != 0 || weft_process_start(g1) != 0) return 3;
  st(&x->creator, 100);
  for (;;) pause();
}

/* Reaps pid (our child, the subreaper's, once its parent died) within
 * timeout. Returns its wait status; -2 if it is gone but was not ours to
 * reap (its result is then only in shared memory); -1 if it was still
 * running, in which case it is killed. */
static int reap_within(pid_t pid, double timeout) {
  double end = test_now() + timeout;
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && pid_gone(pid)) return -2;
    if (test_now() > end) break;
    nap(0.002);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, WNOHANG);
  return -1;
}

/* The process that created the queue is SIGKILLed; its children go on using
 * it (the producer only starts after the death). */
START_TEST(mpqueue_outlives_its_killed_creator) {
  struct orphan *x = shared(sizeof *x);
  weft_process c = start_process(orphan_creator, x);
  bool ready = wait_ge(&x->creator, 100, 20) && wait_ge(&x->ready[0], 1, 20) &&
               wait_ge(&x->ready[1], 1, 20);
  if (!ready) {
    int code = finish_process(c, 0);
    ck_abort_msg("the creator did not start its children (exit code %d)", code);
  }
  pid_t g[2] = {ld(&x->pid[0]), ld(&x->pid[1])};
  wait_asleep(process_state, g[1], 5); /* best effort: the consumer waits in get */
  weft_process_kill(c);
  ck_assert_int_eq(finish_process(c, 10), -SIGKILL);
  bool alive = !pid_gone(g[0]) && !pid_gone(g[1]);
  st(&x->go, 1);
  bool done = wait_ge(&x->done[0], 1, 30) && wait_ge(&x->done[1], 1, 30);
  int s0 = reap_within(g[0], 10), s1 = reap_within(g[1], 10);
  ck_assert_msg(alive, "a non-daemon child died with its parent");
  ck_assert_msg(done, "producer done %d, consumer done %d", ld(&x->done[0]), ld(&x->done[1]));
  ck_assert_msg(x->code[0] == 0, "producer failed at step %d", x->code[0]);
  ck_assert_msg(x->code[1] == 0, "consumer failed at step %d", x->code[1]);
  ck_assert(s0 == -2 || (s0 >= 0 && WIFEXITED(s0) && WEXITSTATUS(s0) == 0));
  ck_assert(s1 == -2 || (s1 >= 0 && WIFEXITED(s1) && WEXITSTATUS(s1) == 0));
  weft_shared_free(x);
}
END_TEST

static int put_many_and_exit(void *arg) {
  weft_mpqueue *q = arg;
  unsigned char buf[TAG_HDR + 500];
  for (int i = 0; i < 1000; i++) {
    size_t len = tag_make(buf, 5, (uint32_t)i, 484);
    if (weft_mpqueue_put(q, buf, len, 10) != 0) return 1;
  }
  return 0;
}

/* Joining a producer whose messages nobody read yet does not deadlock (no
 * feeder thread to flush). */
START_TEST(mpqueue_join_producer_with_unread_messages) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 1 << 20);
  ck_assert_ptr_nonnull(q);
  weft_process p = start_process(put_many_and_exit, q);
  double t0 = test_now();
  int rc = weft_process_join(p, 10);
  double elapsed = test_now() - t0;
  int code = finish_process(p, 10);
  ck_assert_int_eq(rc, 0);
  ck_assert_double_lt(elapsed, 5);
  ck_assert_int_eq(code, 0);
  ck_assert_uint_eq(weft_mpqueue_qsize(q), 1000);
  unsigned char buf[TAG_HDR + 600];
  int next = 0;
  const char *why = take_stream(q, buf, sizeof buf, 5, &next, 0, 2000);
  ck_assert_msg(why == NULL, "%s", why);
  ck_assert_int_eq(next, 1000);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
}
END_TEST

static int put_one_child(void *arg) {
  return weft_mpqueue_put(arg, "child", 5, 10) == 0 ? 0 : 1;
}

START_TEST(mpqueue_no_fd_leak) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  int before = count_fds();
  char out[16];
  size_t len;
  for (int i = 0; i < 60; i++) {
    q = weft_mpqueue_new(.capacity = 4096 + (size_t)i * 64, .maxsize = i % 3);
    CHECK(q != NULL, "new failed");
    CHECK(weft_mpqueue_put(q, "x", 1, 0) == 0, "put failed");
    CHECK(weft_mpqueue_get(q, out, sizeof out, &len, 0) == 0, "get failed");
    if (i % 10 == 0) {
      weft_process p = start_process(put_one_child, q);
      CHECK(finish_process(p, 10) == 0, "child failed");
      CHECK(weft_mpqueue_get(q, out, sizeof out, &len, 5) == 0 && len == 5, "get failed");
    }
    if (i % 2) CHECK(weft_mpqueue_close(q) == 0, "close failed");
    CHECK(weft_mpqueue_free(q) == 0, "free failed");
  }
  ck_assert_int_eq(count_fds(), before);
  ck_assert_int_eq(weft_mpqueue_free(NULL), 0);
}
END_TEST

/* ================================ process queues: deaths at exact points
 *
 * weft makes its futex and membarrier calls through syscall(3); this
 * program's own syscall() comes first in symbol lookup, so a child can
 * arm it to stop or kill itself at one exact call: the wake-up after a
 * commit, or the first membarrier registration, which a process makes
 * inside its first commit (journal marked valid, nothing applied yet). */
enum { FAULT_NONE, FAULT_KILL_AT_WAKE, FAULT_KILL_AT_REGISTER, FAULT_STOP_AT_REGISTER };
static volatile sig_atomic_t fault;

long syscall(long no, ...) {
  va_list ap;
  va_start(ap, no);
  long a[6];
  for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
  va_end(ap);
  static long (*real_syscall)(long, ...);
  long (*real)(long, ...) = __atomic_load_n(&real_syscall, __ATOMIC_ACQUIRE);
  if (real == NULL) {
    real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    __atomic_store_n(&real_syscall, real, __ATOMIC_RELEASE);
  }
  if (fault == FAULT_KILL_AT_WAKE && no == SYS_futex && (a[1] & FUTEX_CMD_MASK) == FUTEX_WAKE)
    raise(SIGKILL);
  if (no == SYS_membarrier && a[0] == MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) {
    if (fault == FAULT_KILL_AT_REGISTER) raise(SIGKILL);
    if (fault == FAULT_STOP_AT_REGISTER) raise(SIGSTOP);
  }
  return real(no, a[0], a[1], a[2], a[3], a[4], a[5]);
}

struct injected {
  weft_mpqueue *q;
  int go;      /* the parent says: put now */
  int mode;
};

static int faulty_putter(void *arg) {
  struct injected *x = arg;
  if (!wait_ge(&x->go, 1, 10)) return 1;
  fault = x->mode;
  weft_mpqueue_put(x->q, "hello", 5, 10);
  return 0; /* not reached in the kill modes */
}

struct sleeping_getter {
  weft_mpqueue *q;
  pid_t tid;
  int started, done, rc;
  size_t len;
  char buf[16];
};

static void *sleeping_getter_main(void *arg) {
  struct sleeping_getter *g = arg;
  g->tid = gettid();
  st(&g->started, 1);
  g->rc = weft_mpqueue_get(g->q, g->buf, sizeof g->buf, &g->len, 30);
  st(&g->done, 1);
  return NULL;
}

/* A putter killed after its message is in, before it wakes the getter
 * asleep in get: the getter still gets the message, within a second (it
 * looks again every 100 ms), not at its 30 s timeout. And one killed
 * inside its commit: the message is in (the journal was marked valid),
 * and the next get finds it. */
START_TEST(mpqueue_putter_killed_between_commit_and_wake_up) {
  for (int mode = FAULT_KILL_AT_WAKE; mode <= FAULT_KILL_AT_REGISTER; mode++) {
    struct injected *x = shared(sizeof *x);
    x->q = weft_mpqueue_new(.capacity = 4096);
    x->mode = mode;
    struct sleeping_getter g = {.q = x->q};
    pthread_t t = spawn(sleeping_getter_main, &g);
    ck_assert(wait_ge(&g.started, 1, 10));
    weft_process p = start_process(faulty_putter, x);
    ck_assert_msg(wait_asleep(thread_state, g.tid, 10), "the getter never blocked");
    double t0 = test_now();
    st(&x->go, 1);
    bool got = wait_ge(&g.done, 1, 5);
    double took = test_now() - t0;
    int code = -1;
    weft_process_join(p, 10);
    weft_process_exitcode(p, &code);
    weft_process_close(p);
    if (!got) weft_mpqueue_close(x->q); /* let the thread go */
    join(t);
    ck_assert_int_eq(code, -SIGKILL);
    ck_assert_msg(got, "mode %d: the sleeping getter was not woken", mode);
    ck_assert_int_eq(g.rc, 0);
    ck_assert_uint_eq(g.len, 5);
    ck_assert(memcmp(g.buf, "hello", 5) == 0);
    ck_assert_msg(took < 3, "mode %d: the getter took %.2f s", mode, took);
    /* The queue goes on working. */
    ck_assert_int_eq(weft_mpqueue_put(x->q, "again", 5, 1), 0);
    char buf[16];
    size_t len;
    ck_assert_int_eq(weft_mpqueue_get(x->q, buf, sizeof buf, &len, 1), 0);
    ck_assert(len == 5 && memcmp(buf, "again", 5) == 0);
    ck_assert(weft_mpqueue_empty(x->q));
    weft_mpqueue_free(x->q);
    weft_shared_free(x);
  }
}
END_TEST

/* A putter stopped inside its commit holds the putters' side: a get that
 * must not wait still returns at once (WEFT_EEMPTY), and once the putter
 * continues its message arrives. */
START_TEST(mpqueue_get_nowait_with_a_putter_stopped_in_commit) {
  struct injected *x = shared(sizeof *x);
  x->q = weft_mpqueue_new(.capacity = 4096);
  x->mode = FAULT_STOP_AT_REGISTER;
  weft_process p = start_process(faulty_putter, x);
  st(&x->go, 1);
  double end = test_now() + 10;
  while (process_state(weft_process_pid(p)) != 'T' && test_now() < end) nap(0.001);
  ck_assert_int_eq(process_state(weft_process_pid(p)), 'T');
  char buf[16];
  size_t len;
  double t0 = test_now();
  int rc = weft_mpqueue_get(x->q, buf, sizeof buf, &len, 0);
  double took = test_now() - t0;
  kill(weft_process_pid(p), SIGCONT);
  ck_assert_int_eq(rc, WEFT_EEMPTY);
  ck_assert_msg(took < 0.5, "get(timeout=0) took %.2f s", took);
  ck_assert_int_eq(weft_mpqueue_get(x->q, buf, sizeof buf, &len, 10), 0);
  ck_assert(len == 5 && memcmp(buf, "hello", 5) == 0);
  ck_assert_int_eq(finish_process(p, 10), 0);
  weft_mpqueue_free(x->q);
  weft_shared_free(x);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("queue");

  TCase *tc = weft_tcase("queue_order", 30);
  tcase_add_test(tc, queue_fifo_order);
  tcase_add_test(tc, queue_lifo_order);
  tcase_add_test(tc, queue_priority_order);
  tcase_add_test(tc, queue_null_items_are_valid);
  suite_add_tcase(s, tc);

  tc = weft_tcase("queue_bounds", 30);
  tcase_add_test(tc, queue_put_on_full_gives_efull);
  tcase_add_test(tc, queue_get_on_empty_gives_eempty);
  tcase_add_test(tc, queue_blocked_put_released_by_get);
  tcase_add_test(tc, queue_blocked_get_released_by_put);
  tcase_add_test(tc, queue_several_blocked_getters_and_putters);
  tcase_add_test(tc, queue_sizes_exact_after_put_and_get);
  tcase_add_test(tc, queue_unbounded_grows_and_shrinks);
  tcase_add_test(tc, queue_maxsize_one);
  suite_add_tcase(s, tc);

  tc = weft_tcase("queue_contention", 60);
  tcase_add_test(tc, queue_fifo_producers_consumers_exactly_once);
  tcase_add_test(tc, queue_items_put_while_getters_are_busy_are_taken);
  tcase_add_test(tc, queue_lifo_producers_consumers_exactly_once);
  tcase_add_test(tc, queue_priority_producers_consumers_exactly_once);
  suite_add_tcase(s, tc);

  tc = weft_tcase("queue_tasks", 30);
  tcase_add_test(tc, queue_task_done_and_join_count);
  tcase_add_test(tc, queue_join_returns_after_all_task_done);
  suite_add_tcase(s, tc);

  tc = weft_tcase("queue_close", 30);
  tcase_add_test(tc, queue_close_refuses_puts_and_drains);
  tcase_add_test(tc, queue_close_wakes_blocked_getters_and_putters);
  tcase_add_test(tc, queue_free_while_blocked_is_ebusy);
  tcase_add_test(tc, queue_free_refuses_until_woken_threads_left);
  tcase_add_test(tc, queue_huge_maxsize_allocates_lazily);
  suite_add_tcase(s, tc);

  tc = weft_tcase("queue_args", 30);
  tcase_add_test(tc, queue_bad_arguments);
  tcase_add_test(tc, queue_failures_set_last_error);
  tcase_add_test(tc, queue_no_fd_leak);
  suite_add_tcase(s, tc);

  tc = weft_tcase("mpqueue_local", 30);
  tcase_add_test(tc, mpqueue_too_big_message_is_emsgsize);
  tcase_add_test(tc, mpqueue_empty_message_may_be_null);
  tcase_add_test(tc, mpqueue_small_buffer_keeps_message);
  tcase_add_test(tc, mpqueue_bounded_by_bytes);
  tcase_add_test(tc, mpqueue_bounded_by_count);
  tcase_add_test(tc, mpqueue_capacity_accounting_exact_after_wraparound);
  tcase_add_test(tc, mpqueue_sizes_exact_after_put_and_get);
  tcase_add_test(tc, mpqueue_bad_arguments);
  tcase_add_test(tc, mpqueue_task_done_and_join_in_one_process);
  suite_add_tcase(s, tc);

  tc = weft_tcase("mpqueue_processes", 60);
  tcase_add_test(tc, mpqueue_messages_cross_processes_intact_in_order);
  tcase_add_test(tc, mpqueue_blocked_calls_wake_across_processes);
  tcase_add_test(tc, mpqueue_close_across_processes);
  tcase_add_test(tc, mpqueue_task_done_and_join_across_processes);
  tcase_add_test(tc, mpqueue_dead_consumer_leaves_join_timing_out);
  tcase_add_test(tc, mpqueue_producers_consumers_exactly_once_in_order);
  tcase_add_test(tc, mpqueue_join_producer_with_unread_messages);
  tcase_add_test(tc, mpqueue_no_fd_leak);
  suite_add_tcase(s, tc);

  tc = weft_tcase("mpqueue_deaths", 60);
  tcase_add_test(tc, mpqueue_producer_killed_mid_stream);
  tcase_add_test(tc, mpqueue_consumer_killed_mid_stream);
  tcase_add_test(tc, mpqueue_outlives_a_producer_that_exited);
  tcase_add_test(tc, mpqueue_outlives_its_killed_creator);
  tcase_add_test(tc, mpqueue_putter_killed_between_commit_and_wake_up);
  tcase_add_test(tc, mpqueue_get_nowait_with_a_putter_stopped_in_commit);
  suite_add_tcase(s, tc);
  return s;
}
