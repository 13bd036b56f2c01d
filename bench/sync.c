/* SPDX-License-Identifier: MIT */
/* Rows for the synchronisation primitives: lock_uncontended, lock_nested_2,
 * lock_nested_2_100k, lock_contended_2t, cond_pingpong, sem_pingpong,
 * event_pingpong and lock_pingpong_processes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

#include "bench.h"

static void check(int err, const char *what) {
  if (err != 0 && err != WEFT_EOWNERDEAD) {
    fprintf(stderr, "%s: %s\n", what, weft_last_error());
    exit(1);
  }
}

/* ---- lock_uncontended: measured while a second thread is alive ---- */

static weft_lock lock = WEFT_LOCK_INIT;

static void lock_pairs(long iters, void *arg) {
  (void)arg;
  for (long i = 0; i < iters; i++) {
    weft_lock_acquire(&lock, WEFT_FOREVER);
    weft_lock_release(&lock);
  }
}

/* "weft" is measured with deadlock detection off, "weft_detect" with it on
 * (warn, the default). */
static double with_mode(weft_deadlock_mode mode, bench_fn fn, long iters, void *arg) {
  weft_deadlock_mode old = weft_deadlock_get_mode();
  weft_deadlock_set_mode(mode);
  double ns = bench_time(fn, iters, arg);
  weft_deadlock_set_mode(old);
  return ns;
}

/* "weft_lockstat" with the lock contention profile on (its default: holds
 * timed 1 in WEFT_LOCKSTAT_SAMPLE = 100), "weft_lockstat_every" timing every
 * hold, "weft_lockstat_sampled" 1 in LOCKSTAT_SPARSE; deadlock detection
 * off, as in "weft". */
#define LOCKSTAT_SPARSE 1000

static double with_lockstat(int sample, bench_fn fn, long iters, void *arg) {
  weft_deadlock_mode old = weft_deadlock_get_mode();
  weft_deadlock_set_mode(WEFT_DEADLOCK_OFF);
  check(weft_lockstat_enable(.sample = sample, .quiet = true), "weft_lockstat_enable");
  double ns = bench_time(fn, iters, arg);
  weft_lockstat_disable();
  weft_lockstat_reset();
  weft_deadlock_set_mode(old);
  return ns;
}

static double lock_sample(long iters, void *arg) {
  return with_mode(WEFT_DEADLOCK_OFF, lock_pairs, iters, arg);
}

static double lock_detect_sample(long iters, void *arg) {
  return with_mode(WEFT_DEADLOCK_WARN, lock_pairs, iters, arg);
}
static double lock_lockstat_sample(long iters, void *arg) {
  return with_lockstat(0, lock_pairs, iters, arg);
}
static double lock_lockstat_every_sample(long iters, void *arg) {
  return with_lockstat(1, lock_pairs, iters, arg);
}
static double lock_lockstat_sparse_sample(long iters, void *arg) {
  return with_lockstat(LOCKSTAT_SPARSE, lock_pairs, iters, arg);
}
static double lock_c_sample(long iters, void *arg) {
  (void)arg;
  return bench_c_peer("lock_uncontended", iters);
}

static weft_event idle_stop = WEFT_EVENT_INIT;
static void *idle(void *arg) {
  (void)arg;
  weft_event_wait(&idle_stop, WEFT_FOREVER);
  return NULL;
}

static void lock_uncontended(const bench_config *cfg) {
  if (!bench_wanted(cfg, "lock_uncontended")) return;
  weft_event_clear(&idle_stop);
  weft_thread second = weft_thread_new(idle);
  check(weft_thread_start(second), "lock_uncontended");
  long iters = cfg->quick ? 100000 : 5000000;
  bench_result r[7] = {{.impl = "weft"},
                       {.impl = "c"},
                       {.impl = "weft_detect"},
                       {.impl = "weft_lockstat"},
                       {.impl = "weft_lockstat_every"},
                       {.impl = "weft_lockstat_sampled"},
                       {.impl = "python"}};
  bench_sample samples[6] = {lock_sample,          lock_c_sample,
                             lock_detect_sample,   lock_lockstat_sample,
                             lock_lockstat_every_sample, lock_lockstat_sparse_sample};
  bench_measure(cfg, iters, 6, samples, NULL, r);
  bench_python("lock_uncontended.py", cfg->quick ? 100000 : 2000000, cfg->quick ? 1 : cfg->reps,
               &r[6]);
  bench_report("lock_uncontended", 7, r);
  weft_event_set(&idle_stop);
  weft_thread_join(second, WEFT_FOREVER, NULL);
  weft_thread_close(second);
}

/* ---- lock_nested_2: acquire A, acquire B, release both ---- */

static weft_lock nest_a = WEFT_LOCK_INIT, nest_b = WEFT_LOCK_INIT;

static void nested_pairs(long iters, void *arg) {
  (void)arg;
  for (long i = 0; i < iters; i++) {
    weft_lock_acquire(&nest_a, WEFT_FOREVER);
    weft_lock_acquire(&nest_b, WEFT_FOREVER);
    weft_lock_release(&nest_b);
    weft_lock_release(&nest_a);
  }
}

static double nested_sample(long iters, void *arg) {
  return with_mode(WEFT_DEADLOCK_OFF, nested_pairs, iters, arg);
}

static double nested_detect_sample(long iters, void *arg) {
  return with_mode(WEFT_DEADLOCK_WARN, nested_pairs, iters, arg);
}

static void lock_nested(const bench_config *cfg) {
  if (!bench_wanted(cfg, "lock_nested_2")) return;
  weft_event_clear(&idle_stop);
  weft_thread second = weft_thread_new(idle);
  check(weft_thread_start(second), "lock_nested_2");
  long iters = cfg->quick ? 100000 : 3000000;
  bench_result r[2] = {{.impl = "weft"}, {.impl = "weft_detect"}};
  bench_sample samples[2] = {nested_sample, nested_detect_sample};
  bench_measure(cfg, iters, 2, samples, NULL, r);
  bench_report("lock_nested_2", 2, r);
  weft_event_set(&idle_stop);
  weft_thread_join(second, WEFT_FOREVER, NULL);
  weft_thread_close(second);
}

/* ---- lock_nested_2_100k: the same over pairs of 100,000 locks ----
 * Every pair (k, k+1) was taken once before, so the detector knows all
 * 99,999 orders (in one global order); the loop visits the pairs in a fixed
 * random order, so that neither impl is helped by the prefetcher. */

#define MANY_LOCKS 100000

struct many {
  weft_lock *locks;
  unsigned *walk; /* a permutation of 0 .. MANY_LOCKS - 2 */
};

static void nested_many_pairs(long iters, void *arg) {
  struct many *m = arg;
  unsigned w = 0;
  for (long i = 0; i < iters; i++) {
    weft_lock *a = &m->locks[m->walk[w]];
    if (++w == MANY_LOCKS - 1) w = 0;
    weft_lock_acquire(a, WEFT_FOREVER);
    weft_lock_acquire(a + 1, WEFT_FOREVER);
    weft_lock_release(a + 1);
    weft_lock_release(a);
  }
}

static double nested_many_sample(long iters, void *arg) {
  return with_mode(WEFT_DEADLOCK_OFF, nested_many_pairs, iters, arg);
}

static double nested_many_detect_sample(long iters, void *arg) {
  return with_mode(WEFT_DEADLOCK_WARN, nested_many_pairs, iters, arg);
}

static void lock_nested_many(const bench_config *cfg) {
  if (!bench_wanted(cfg, "lock_nested_2_100k")) return;
  struct many m = {calloc(MANY_LOCKS, sizeof *m.locks), calloc(MANY_LOCKS, sizeof *m.walk)};
  if (m.locks == NULL || m.walk == NULL) exit(1);
  for (unsigned i = 0; i < MANY_LOCKS; i++) weft_lock_init(&m.locks[i]);
  for (unsigned i = 0; i < MANY_LOCKS - 1; i++) m.walk[i] = i;
  uint64_t x = 88172645463325252ull; /* xorshift: the same walk every run */
  for (unsigned i = MANY_LOCKS - 2; i > 0; i--) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    unsigned j = (unsigned)(x % (i + 1)), tmp = m.walk[i];
    m.walk[i] = m.walk[j];
    m.walk[j] = tmp;
  }
  weft_event_clear(&idle_stop);
  weft_thread second = weft_thread_new(idle);
  check(weft_thread_start(second), "lock_nested_2_100k");
  with_mode(WEFT_DEADLOCK_WARN, nested_many_pairs, MANY_LOCKS - 1, &m); /* every order, once */
  long iters = cfg->quick ? 100000 : 3000000;
  bench_result r[2] = {{.impl = "weft"}, {.impl = "weft_detect"}};
  bench_sample samples[2] = {nested_many_sample, nested_many_detect_sample};
  bench_measure(cfg, iters, 2, samples, &m, r);
  bench_report("lock_nested_2_100k", 2, r);
  weft_event_set(&idle_stop);
  weft_thread_join(second, WEFT_FOREVER, NULL);
  weft_thread_close(second);
  for (unsigned i = 0; i < MANY_LOCKS; i++) weft_lock_destroy(&m.locks[i]);
  free(m.locks);
  free(m.walk);
}

/* ---- lock_contended_2t: the tutorial's §3.6, lock/increment/unlock per step ---- */

struct counted {
  long iters;
  long value;
};

static void *add_locked(void *arg) {
  struct counted *c = arg;
  for (long i = 0; i < c->iters; i++) {
    weft_lock_acquire(&lock, WEFT_FOREVER);
    c->value++;
    weft_lock_release(&lock);
  }
  return NULL;
}

static void contended(long iters, void *arg) {
  (void)arg;
  struct counted c = {iters / 2, 0};
  weft_thread a = weft_thread_new(add_locked, .arg = &c);
  weft_thread b = weft_thread_new(add_locked, .arg = &c);
  weft_thread_start(a);
  weft_thread_start(b);
  weft_thread_join(a, WEFT_FOREVER, NULL);
  weft_thread_join(b, WEFT_FOREVER, NULL);
  weft_thread_close(a);
  weft_thread_close(b);
  if (c.value != 2 * (iters / 2)) {
    fprintf(stderr, "lock_contended_2t: lost updates (%ld)\n", c.value);
    exit(1);
  }
}

/* As lock_uncontended: "weft" with deadlock detection off, "weft_detect"
 * with it on (warn, the default). */
static double contended_sample(long iters, void *arg) {
  return with_mode(WEFT_DEADLOCK_OFF, contended, iters, arg);
}
static double contended_detect_sample(long iters, void *arg) {
  return with_mode(WEFT_DEADLOCK_WARN, contended, iters, arg);
}
static double contended_lockstat_sample(long iters, void *arg) {
  return with_lockstat(0, contended, iters, arg);
}
static double contended_lockstat_every_sample(long iters, void *arg) {
  return with_lockstat(1, contended, iters, arg);
}
static double contended_lockstat_sparse_sample(long iters, void *arg) {
  return with_lockstat(LOCKSTAT_SPARSE, contended, iters, arg);
}
static double contended_c_sample(long iters, void *arg) {
  (void)arg;
  return bench_c_peer("lock_contended_2t", iters);
}

static void lock_contended(const bench_config *cfg) {
  if (!bench_wanted(cfg, "lock_contended_2t")) return;
  long iters = cfg->quick ? 100000 : 2000000; /* lock operations in all: 2 x 1,000,000 */
  bench_result r[7] = {{.impl = "weft"},
                       {.impl = "c"},
                       {.impl = "weft_detect"},
                       {.impl = "weft_lockstat"},
                       {.impl = "weft_lockstat_every"},
                       {.impl = "weft_lockstat_sampled"},
                       {.impl = "python"}};
  bench_sample samples[6] = {contended_sample,
                             contended_c_sample,
                             contended_detect_sample,
                             contended_lockstat_sample,
                             contended_lockstat_every_sample,
                             contended_lockstat_sparse_sample};
  bench_measure(cfg, iters, 6, samples, NULL, r);
  bench_python("lock_contended_2t.py", iters, cfg->quick ? 1 : 3, &r[6]);
  bench_report("lock_contended_2t", 7, r);
}

/* ---- ping-pongs between two threads: ns per round trip ---- */

struct pingpong {
  long iters;
  weft_cond cond;
  int turn;
  weft_semaphore ping, pong;
  weft_event e_ping, e_pong;
};

static void *cond_partner(void *arg) {
  struct pingpong *p = arg;
  weft_cond_acquire(&p->cond, WEFT_FOREVER);
  for (long i = 0; i < p->iters; i++) {
    while (p->turn != 1) weft_cond_wait(&p->cond, WEFT_FOREVER);
    p->turn = 0;
    weft_cond_notify(&p->cond, 1);
  }
  weft_cond_release(&p->cond);
  return NULL;
}

static void cond_rounds(long iters, void *arg) {
  (void)arg;
  static weft_lock cond_lock = WEFT_LOCK_INIT;
  struct pingpong p = {.iters = iters};
  weft_cond_init(&p.cond, .lock = &cond_lock); /* as pthread_cond over a plain mutex */
  weft_thread t = weft_thread_new(cond_partner, .arg = &p);
  weft_thread_start(t);
  weft_cond_acquire(&p.cond, WEFT_FOREVER);
  for (long i = 0; i < iters; i++) {
    p.turn = 1;
    weft_cond_notify(&p.cond, 1);
    while (p.turn != 0) weft_cond_wait(&p.cond, WEFT_FOREVER);
  }
  weft_cond_release(&p.cond);
  weft_thread_join(t, WEFT_FOREVER, NULL);
  weft_thread_close(t);
}

static void *sem_partner(void *arg) {
  struct pingpong *p = arg;
  for (long i = 0; i < p->iters; i++) {
    weft_semaphore_acquire(&p->ping, WEFT_FOREVER);
    weft_semaphore_release(&p->pong, 1);
  }
  return NULL;
}

static void sem_rounds(long iters, void *arg) {
  (void)arg;
  struct pingpong p = {.iters = iters};
  weft_semaphore_init(&p.ping, 0);
  weft_semaphore_init(&p.pong, 0);
  weft_thread t = weft_thread_new(sem_partner, .arg = &p);
  weft_thread_start(t);
  for (long i = 0; i < iters; i++) {
    weft_semaphore_release(&p.ping, 1);
    weft_semaphore_acquire(&p.pong, WEFT_FOREVER);
  }
  weft_thread_join(t, WEFT_FOREVER, NULL);
  weft_thread_close(t);
}

static void *event_partner(void *arg) {
  struct pingpong *p = arg;
  for (long i = 0; i < p->iters; i++) {
    weft_event_wait(&p->e_ping, WEFT_FOREVER);
    weft_event_clear(&p->e_ping);
    weft_event_set(&p->e_pong);
  }
  return NULL;
}

static void event_rounds(long iters, void *arg) {
  (void)arg;
  struct pingpong p = {.iters = iters};
  weft_event_init(&p.e_ping);
  weft_event_init(&p.e_pong);
  weft_thread t = weft_thread_new(event_partner, .arg = &p);
  weft_thread_start(t);
  for (long i = 0; i < iters; i++) {
    weft_event_set(&p.e_ping);
    weft_event_wait(&p.e_pong, WEFT_FOREVER);
    weft_event_clear(&p.e_pong);
  }
  weft_thread_join(t, WEFT_FOREVER, NULL);
  weft_thread_close(t);
}

/* ---- lock_pingpong_processes: two Locks handed back and forth ---- */

struct shared_locks {
  weft_lock ping, pong;
  long iters;
};

static int lock_partner(void *arg) {
  struct shared_locks *s = arg;
  for (long i = 0; i < s->iters; i++) {
    check(weft_lock_acquire(&s->ping, WEFT_FOREVER), "lock_pingpong_processes");
    check(weft_lock_release(&s->pong), "lock_pingpong_processes");
  }
  return 0;
}

/* Both locks start held by the parent; each round the parent releases ping
 * and takes pong, which the child releases after taking ping: a Lock may be
 * released by anyone, as in Python. */
static void lock_process_rounds(long iters, void *arg) {
  (void)arg;
  struct shared_locks *s = weft_shared_alloc(sizeof *s);
  weft_lock_init(&s->ping);
  weft_lock_init(&s->pong);
  s->iters = iters;
  weft_lock_acquire(&s->ping, WEFT_FOREVER);
  weft_lock_acquire(&s->pong, WEFT_FOREVER);
  weft_process p = weft_process_new(lock_partner, .arg = s);
  check(weft_process_start(p), "lock_pingpong_processes");
  for (long i = 0; i < iters; i++) {
    weft_lock_release(&s->ping);
    weft_lock_acquire(&s->pong, WEFT_FOREVER);
  }
  weft_process_join(p, WEFT_FOREVER);
  weft_process_close(p);
  weft_shared_free(s);
}

#define SAMPLES(fn, row)                                                             \
  static double fn##_sample(long iters, void *arg) { return bench_time(fn, iters, arg); } \
  static double fn##_c_sample(long iters, void *arg) {                               \
    (void)arg;                                                                       \
    return bench_c_peer(row, iters);                                                 \
  }
SAMPLES(cond_rounds, "cond_pingpong")
SAMPLES(sem_rounds, "sem_pingpong")
SAMPLES(event_rounds, "event_pingpong")
SAMPLES(lock_process_rounds, "lock_pingpong_processes")

/* The ping-pongs measure the primitives themselves ("weft", detection off,
 * as in lock_uncontended): handing a held Lock to another process on purpose
 * is also what a deadlock looks like to the detector, which would report it. */
static void pingpong_row(const bench_config *cfg, const char *row, bench_sample weft,
                         bench_sample c) {
  if (!bench_wanted(cfg, row)) return;
  long iters = cfg->quick ? 2000 : 20000;
  bench_result r[2] = {{.impl = "weft"}, {.impl = "c"}};
  bench_sample samples[2] = {weft, c};
  weft_deadlock_mode old = weft_deadlock_get_mode();
  weft_deadlock_set_mode(WEFT_DEADLOCK_OFF);
  bench_measure(cfg, iters, 2, samples, NULL, r);
  weft_deadlock_set_mode(old);
  bench_report(row, 2, r);
}

void bench_sync_rows(const bench_config *cfg) {
  lock_uncontended(cfg);
  lock_nested(cfg);
  lock_nested_many(cfg);
  lock_contended(cfg);
  pingpong_row(cfg, "cond_pingpong", cond_rounds_sample, cond_rounds_c_sample);
  pingpong_row(cfg, "sem_pingpong", sem_rounds_sample, sem_rounds_c_sample);
  pingpong_row(cfg, "event_pingpong", event_rounds_sample, event_rounds_c_sample);
  pingpong_row(cfg, "lock_pingpong_processes", lock_process_rounds_sample,
               lock_process_rounds_c_sample);
}
