/* SPDX-License-Identifier: MIT */
/* Tests of weft/sync.h: Python's threading primitives (Lock, RLock,
 * Condition, Semaphore, BoundedSemaphore, Event, Barrier), between threads
 * and, in weft_shared_alloc memory, between processes; owner death of a
 * process-shared Lock; fork safety.
 *
 * Threads never call ck_assert (a failing assertion must end the test from
 * its own thread): they record what they saw and the test asserts on it
 * after joining them. Child processes report through their exit code.
 * Where a test must know that another thread or process is blocked, it
 * waits with a deadline on something it can observe (a count read under the
 * lock, n_waiting, a waiter count the struct documents), never on a bare
 * sleep. A few tests need a waiter that cannot run for a while, as a busy
 * scheduler may arrange: that waiter is a child process held with SIGSTOP
 * (state T in /proc) and resumed with SIGCONT. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* Critical sections in these tests last microseconds, so an acquire or a
 * wait that is not served within this many seconds lost its wake-up: the
 * contended loops use it as their timeout and count such timeouts, which
 * turns a lost wake-up into a clear failure instead of a hang. */
#define LOST_WAKEUP_S 5.0

/* ---- helpers ---- */

/* Stops a child with SIGSTOP and waits until it is stopped (state T). */
static bool stop_process(pid_t pid, double timeout) {
  if (kill(pid, SIGSTOP) != 0) return false;
  double end = test_now() + timeout;
  while (process_state(pid) != 'T') {
    if (test_now() > end) return false;
    nap(0.001);
  }
  return true;
}

/* ================================================================ Lock */

START_TEST(lock_acquire_release) {
  weft_lock l;
  ck_assert_int_eq(weft_lock_init(&l), 0);
  ck_assert(!weft_lock_locked(&l));
  ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
  ck_assert(weft_lock_locked(&l));
  ck_assert_int_eq(weft_lock_release(&l), 0);
  ck_assert(!weft_lock_locked(&l));
  /* A free lock is taken by a non-blocking and by a timed acquire. */
  ck_assert_int_eq(weft_lock_acquire(&l, 0), 0);
  ck_assert(weft_lock_locked(&l));
  ck_assert_int_eq(weft_lock_release(&l), 0);
  ck_assert_int_eq(weft_lock_acquire(&l, 1.5), 0);
  ck_assert_int_eq(weft_lock_release(&l), 0);
  for (int i = 0; i < 10000; i++) {
    ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
    ck_assert_int_eq(weft_lock_release(&l), 0);
  }
  ck_assert(!weft_lock_locked(&l));
  ck_assert_int_eq(weft_lock_destroy(&l), 0);
}
END_TEST

struct lock_try {
  weft_lock *lock;
  double timeout;
  int rc;
  double elapsed;
  int done;
};

static void *try_acquire(void *arg) {
  struct lock_try *t = arg;
  double t0 = test_now();
  t->rc = weft_lock_acquire(t->lock, t->timeout);
  t->elapsed = test_now() - t0;
  st(&t->done, 1);
  return NULL;
}

START_TEST(lock_nonblocking_on_held_lock_times_out) {
  weft_lock l = WEFT_LOCK_INIT;
  ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
  double t0 = test_now();
  ck_assert_int_eq(weft_lock_acquire(&l, 0), WEFT_ETIMEDOUT);
  ck_assert_double_lt(test_now() - t0, 0.1);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ETIMEDOUT);
  ck_assert(weft_lock_locked(&l));
  /* The same from another thread. */
  struct lock_try t = {.lock = &l, .timeout = 0, .rc = 1};
  join(spawn(try_acquire, &t));
  ck_assert_int_eq(t.rc, WEFT_ETIMEDOUT);
  ck_assert_double_lt(t.elapsed, 0.1);
  ck_assert(weft_lock_locked(&l));
  ck_assert_int_eq(weft_lock_release(&l), 0);
  ck_assert_int_eq(weft_lock_acquire(&l, 0), 0);
  ck_assert_int_eq(weft_lock_release(&l), 0);
}
END_TEST

struct holder {
  weft_lock *lock;
  weft_event held;
  weft_event go;
  int rc;
};

/* Acquires the lock, says so, and releases it once told to. */
static void *hold_until_told(void *arg) {
  struct holder *h = arg;
  h->rc = weft_lock_acquire(h->lock, WEFT_FOREVER);
  weft_event_set(&h->held);
  weft_event_wait(&h->go, 30);
  if (h->rc == 0) h->rc = weft_lock_release(h->lock);
  return NULL;
}

struct lock_rc {
  weft_lock lock;
  int rc;
};

/* Releases after a short nap; the caller's timed acquire succeeds whether
 * it started waiting before or after. */
static void *release_after_nap(void *arg) {
  struct lock_rc *p = arg;
  nap(0.05);
  p->rc = weft_lock_release(&p->lock);
  return NULL;
}

START_TEST(lock_timed_acquire_times_out) {
  const double timeout = 0.3;
  weft_lock l = WEFT_LOCK_INIT;
  /* Held by the caller itself: a Lock is not reentrant, so this waits. */
  ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
  double t0 = test_now();
  ck_assert_int_eq(weft_lock_acquire(&l, timeout), WEFT_ETIMEDOUT);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, timeout * 0.9);
  ck_assert_double_lt(elapsed, timeout + 2);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "not acquired"));
  ck_assert_int_eq(weft_lock_release(&l), 0);

  /* Held by another thread. */
  struct holder h = {.lock = &l};
  pthread_t th = spawn(hold_until_told, &h);
  ck_assert_int_eq(weft_event_wait(&h.held, 10), 0);
  t0 = test_now();
  ck_assert_int_eq(weft_lock_acquire(&l, timeout), WEFT_ETIMEDOUT);
  elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, timeout * 0.9);
  ck_assert_double_lt(elapsed, timeout + 2);
  weft_event_set(&h.go);
  join(th);
  ck_assert_int_eq(h.rc, 0);
  ck_assert(!weft_lock_locked(&l));

  /* A timed acquire that gets the lock when it is released meanwhile. */
  struct lock_rc pair = {WEFT_LOCK_INIT, 1};
  ck_assert_int_eq(weft_lock_acquire(&pair.lock, WEFT_FOREVER), 0);
  th = spawn(release_after_nap, &pair);
  ck_assert_int_eq(weft_lock_acquire(&pair.lock, 10), 0);
  join(th);
  ck_assert_int_eq(pair.rc, 0);
  ck_assert_int_eq(weft_lock_release(&pair.lock), 0);
}
END_TEST

START_TEST(lock_release_unlocked_is_eperm) {
  weft_lock l = WEFT_LOCK_INIT_NAMED("ledger");
  weft_lock before;
  memcpy(&before, &l, sizeof l);
  ck_assert_int_eq(weft_lock_release(&l), WEFT_EPERM);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EPERM);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "ledger"));
  /* Nothing changed: still unlocked and usable. */
  ck_assert(!weft_lock_locked(&l));
  ck_assert_int_eq(memcmp(&l, &before, sizeof l), 0);
  ck_assert_int_eq(weft_lock_acquire(&l, 0), 0);
  ck_assert_int_eq(weft_lock_release(&l), 0);
  ck_assert_int_eq(weft_lock_release(&l), WEFT_EPERM); /* double release */
  ck_assert(!weft_lock_locked(&l));
  ck_assert_int_eq(weft_lock_acquire(&l, 0), 0);
  ck_assert(weft_lock_locked(&l));
  ck_assert_int_eq(weft_lock_release(&l), 0);
}
END_TEST

struct release_ctx {
  weft_lock *lock;
  int rc;
};

static void *release_it(void *arg) {
  struct release_ctx *r = arg;
  r->rc = weft_lock_release(r->lock);
  return NULL;
}

START_TEST(lock_release_from_another_thread) {
  weft_lock l = WEFT_LOCK_INIT;
  for (int i = 0; i < 50; i++) {
    ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
    struct release_ctx r = {&l, 1};
    join(spawn(release_it, &r));
    ck_assert_int_eq(r.rc, 0);
    ck_assert(!weft_lock_locked(&l));
  }
  /* Hand-off: a thread blocks in acquire, the main thread releases. */
  ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
  struct lock_try t = {.lock = &l, .timeout = 10, .rc = 1};
  pthread_t th = spawn(try_acquire, &t);
  ck_assert_int_eq(weft_lock_release(&l), 0);
  join(th);
  ck_assert_int_eq(t.rc, 0);
  ck_assert(weft_lock_locked(&l)); /* the thread ended holding it */
  ck_assert_int_eq(weft_lock_release(&l), 0);
  ck_assert(!weft_lock_locked(&l));
}
END_TEST

START_TEST(lock_nan_timeout_is_einval) {
  weft_lock l = WEFT_LOCK_INIT;
  ck_assert_int_eq(weft_lock_acquire(&l, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert(!weft_lock_locked(&l)); /* not taken */
  ck_assert_int_eq(weft_lock_acquire(&l, 0), 0);
  ck_assert_int_eq(weft_lock_acquire(&l, NAN), WEFT_EINVAL);
  ck_assert(weft_lock_locked(&l));
  ck_assert_int_eq(weft_lock_release(&l), 0);
}
END_TEST

static weft_lock static_lock = WEFT_LOCK_INIT;
static weft_lock static_named = WEFT_LOCK_INIT_NAMED("static-ledger");

START_TEST(lock_init_names_and_static_initialisers) {
  weft_lock a, b;
  ck_assert_int_eq(weft_lock_init(&a, .name = "accounts"), 0);
  ck_assert_str_eq(a.name, "accounts");
  ck_assert_ptr_nonnull(strstr(a.site, "test_sync.c:"));
  ck_assert_int_eq(weft_lock_init(&b), 0);
  ck_assert_str_eq(b.name, "&b"); /* the expression given */
  ck_assert(!weft_lock_locked(&a));
  ck_assert_int_eq(weft_lock_acquire(&a, 0), 0);
  ck_assert_int_eq(weft_lock_acquire(&a, 0), WEFT_ETIMEDOUT);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "accounts"));
  ck_assert_int_eq(weft_lock_destroy(&a), WEFT_EBUSY);
  ck_assert_int_eq(weft_lock_release(&a), 0);
  ck_assert_int_eq(weft_lock_destroy(&a), 0);

  ck_assert_ptr_null(static_lock.name);
  ck_assert_ptr_nonnull(strstr(static_lock.site, "test_sync.c:"));
  ck_assert(!weft_lock_locked(&static_lock));
  ck_assert_int_eq(weft_lock_acquire(&static_lock, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(&static_lock, 0), WEFT_ETIMEDOUT);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "test_sync.c:")); /* no name: the site */
  ck_assert_int_eq(weft_lock_release(&static_lock), 0);

  ck_assert_str_eq(static_named.name, "static-ledger");
  ck_assert_int_eq(weft_lock_acquire(&static_named, 0), 0);
  ck_assert_int_eq(weft_lock_acquire(&static_named, 0), WEFT_ETIMEDOUT);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "static-ledger"));
  ck_assert_int_eq(weft_lock_release(&static_named), 0);
}
END_TEST

struct lock_counter {
  weft_lock lock;
  pthread_barrier_t start;
  long count; /* plain: only the lock protects it (TSan checks that it does) */
  int iters;
  int hold;     /* work done while holding the lock (loop turns, random below) */
  int yields;   /* sched_yield after 1 in `yields` releases; 0: never */
  int errors;   /* failed releases, unexpected codes */
  int lost;     /* acquires that waited LOST_WAKEUP_S */
};

/* Acquires, retrying after a timeout (counted as a lost wake-up). */
static void acquire_counting_lost(weft_lock *l, int *lost, int *errors) {
  for (;;) {
    int rc = weft_lock_acquire(l, LOST_WAKEUP_S);
    if (rc == 0) return;
    if (rc == WEFT_ETIMEDOUT)
      inc(lost);
    else
      inc(errors);
  }
}

static void *lock_worker(void *arg) {
  struct lock_counter *c = arg;
  unsigned seed = (unsigned)(uintptr_t)&seed;
  pthread_barrier_wait(&c->start);
  for (int i = 0; i < c->iters; i++) {
    acquire_counting_lost(&c->lock, &c->lost, &c->errors);
    c->count++;
    if (c->hold > 0)
      for (volatile int k = rand_r(&seed) % c->hold; k > 0; k--) {
      }
    if (weft_lock_release(&c->lock) != 0) inc(&c->errors);
    if (c->yields > 0 && rand_r(&seed) % c->yields == 0) sched_yield();
  }
  return NULL;
}

static void run_lock_counter(struct lock_counter *c, int threads) {
  pthread_barrier_init(&c->start, NULL, (unsigned)threads);
  pthread_t t[16];
  for (int i = 0; i < threads; i++) t[i] = spawn(lock_worker, c);
  for (int i = 0; i < threads; i++) join(t[i]);
  pthread_barrier_destroy(&c->start);
  ck_assert_int_eq(c->errors, 0);
  ck_assert_msg(c->lost == 0,
                "%d acquires waited %g s for a lock held for microseconds: lost wake-ups",
                c->lost, LOST_WAKEUP_S);
  ck_assert_int_eq(c->count, (long)threads * c->iters);
  ck_assert(!weft_lock_locked(&c->lock));
}

START_TEST(lock_contention_exact_total) {
  struct lock_counter c = {.lock = WEFT_LOCK_INIT, .iters = 200000 / SLOW};
  run_lock_counter(&c, 4);
}
END_TEST

/* Few threads, critical sections of random length and yields: the
 * interleavings where a release races with a waiter going to sleep. */
START_TEST(lock_handoff_loses_no_wakeup) {
  for (int threads = 2; threads <= 3; threads++) {
    struct lock_counter c = {.lock = WEFT_LOCK_INIT, .iters = 150000 / SLOW, .hold = 200,
                             .yields = 64};
    run_lock_counter(&c, threads);
  }
}
END_TEST

/* One thread runs a loop around the lock (the tutorial's §3.6 shape) while
 * another blocks on it, round after round: a woken waiter that finds the
 * looping thread holding the lock again naps instead of sleeping, and must
 * still get the lock (by fairness, or at the latest when the loop stops),
 * exclusively, while a third thread's short timed acquires keep giving up
 * beside it (a timed-out waiter hands the wake-up on). */
struct looping {
  weft_lock lock;
  int stop, rounds_done;
  long spins;     /* the looping thread's count, changed only under the lock */
  int errors, timeouts, lost, overlaps;
};

static void *loop_around_lock(void *arg) {
  struct looping *x = arg;
  while (!ld(&x->stop)) {
    if (weft_lock_acquire(&x->lock, LOST_WAKEUP_S) != 0) {
      inc(&x->errors);
      continue;
    }
    /* An atomic store: the main thread watches the count unlocked. */
    __atomic_store_n(&x->spins, x->spins + 1, __ATOMIC_RELAXED);
    if (weft_lock_release(&x->lock) != 0) inc(&x->errors);
  }
  return NULL;
}

static void *give_up_quickly(void *arg) {
  struct looping *x = arg;
  while (!ld(&x->stop)) {
    int rc = weft_lock_acquire(&x->lock, 0.0002);
    if (rc == WEFT_ETIMEDOUT) {
      inc(&x->timeouts);
    } else if (rc != 0 || weft_lock_release(&x->lock) != 0) {
      inc(&x->errors);
    }
  }
  return NULL;
}

START_TEST(lock_waiter_gets_lock_from_a_looping_holder) {
  struct looping x = {.lock = WEFT_LOCK_INIT};
  pthread_t looper = spawn(loop_around_lock, &x);
  pthread_t quitter = spawn(give_up_quickly, &x);
  int rounds = 400 / SLOW;
  for (int r = 0; r < rounds; r++) {
    long seen = __atomic_load_n(&x.spins, __ATOMIC_RELAXED);
    while (__atomic_load_n(&x.spins, __ATOMIC_RELAXED) < seen + 1000) sched_yield();
    if (weft_lock_acquire(&x.lock, LOST_WAKEUP_S) != 0) {
      inc(&x.lost);
      continue;
    }
    long held = x.spins;
    for (volatile int k = 0; k < 2000; k++) {
    }
    if (x.spins != held) inc(&x.overlaps);
    if (weft_lock_release(&x.lock) != 0) inc(&x.errors);
    st(&x.rounds_done, r + 1);
  }
  st(&x.stop, 1);
  join(looper);
  join(quitter);
  ck_assert_msg(x.lost == 0, "%d of %d acquires waited %g s beside a looping holder", x.lost,
                rounds, LOST_WAKEUP_S);
  ck_assert_int_eq(x.overlaps, 0);
  ck_assert_int_eq(x.errors, 0);
  ck_assert_int_eq(x.rounds_done, rounds);
  ck_assert(!weft_lock_locked(&x.lock));
}
END_TEST

/* The looping thread stops for good while a woken waiter naps: the waiter
 * must notice the free lock by itself, since no release is left to wake it. */
struct loop_then_leave {
  weft_lock lock;
  int waiting, got;
};

static void *wait_for_loop_end(void *arg) {
  struct loop_then_leave *x = arg;
  st(&x->waiting, 1);
  if (weft_lock_acquire(&x->lock, LOST_WAKEUP_S) == 0) {
    st(&x->got, 1);
    weft_lock_release(&x->lock);
  } else {
    st(&x->got, -1);
  }
  return NULL;
}

START_TEST(lock_waiter_gets_lock_when_a_loop_ends) {
  for (int r = 0; r < 60 / SLOW + 2; r++) {
    struct loop_then_leave x = {.lock = WEFT_LOCK_INIT};
    ck_assert_int_eq(weft_lock_acquire(&x.lock, WEFT_FOREVER), 0);
    pthread_t w = spawn(wait_for_loop_end, &x);
    ck_assert(wait_ge(&x.waiting, 1, 10));
    /* Loop around the lock for a varying while (the waiter goes to sleep,
     * is woken, finds the lock taken again and naps), then leave it. */
    long n = 2000L << (r % 8);
    for (long i = 0; i < n && ld(&x.got) == 0; i++) {
      weft_lock_release(&x.lock);
      weft_lock_acquire(&x.lock, WEFT_FOREVER);
    }
    weft_lock_release(&x.lock);
    join(w);
    ck_assert_msg(x.got == 1, "round %d: the waiter did not get a lock left free", r);
  }
}
END_TEST

/* =============================================================== RLock */

static weft_rlock static_rlock = WEFT_RLOCK_INIT;

START_TEST(rlock_counts_recursion) {
  weft_rlock r;
  ck_assert_int_eq(weft_rlock_init(&r, .name = "tree"), 0);
  ck_assert(!weft_rlock_is_owned(&r));
  for (int i = 0; i < 3; i++) ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
  ck_assert(weft_rlock_is_owned(&r));
  ck_assert(weft_lock_locked(&r.lock));
  ck_assert_uint_eq(r.count, 3);
  /* A non-blocking acquire by the owner adds a level. */
  ck_assert_int_eq(weft_rlock_acquire(&r, 0), 0);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert(weft_rlock_is_owned(&r)); /* one level left */
  ck_assert(weft_lock_locked(&r.lock));
  ck_assert_int_eq(weft_rlock_destroy(&r), WEFT_EBUSY);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert(!weft_lock_locked(&r.lock));
  ck_assert(!weft_rlock_is_owned(&r));
  ck_assert_int_eq(weft_rlock_release(&r), WEFT_EPERM);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "tree"));
  ck_assert(!weft_lock_locked(&r.lock));

  /* Deep recursion on a statically initialised RLock. */
  for (int i = 0; i < 1000; i++) ck_assert_int_eq(weft_rlock_acquire(&static_rlock, 1.0), 0);
  for (int i = 0; i < 1000; i++) {
    ck_assert(weft_rlock_is_owned(&static_rlock));
    ck_assert_int_eq(weft_rlock_release(&static_rlock), 0);
  }
  ck_assert(!weft_lock_locked(&static_rlock.lock));
  ck_assert_int_eq(weft_rlock_release(&static_rlock), WEFT_EPERM);
  ck_assert_int_eq(weft_rlock_acquire(&r, NAN), WEFT_EINVAL);
  ck_assert(!weft_lock_locked(&r.lock));
  ck_assert_int_eq(weft_rlock_destroy(&r), 0);
}
END_TEST

struct rlock_other {
  weft_rlock *r;
  int owned, release_rc, try_rc, timed_rc;
  double timed_elapsed;
};

static void *rlock_from_other(void *arg) {
  struct rlock_other *o = arg;
  o->owned = weft_rlock_is_owned(o->r);
  o->release_rc = weft_rlock_release(o->r);
  o->try_rc = weft_rlock_acquire(o->r, 0);
  double t0 = test_now();
  o->timed_rc = weft_rlock_acquire(o->r, 0.2);
  o->timed_elapsed = test_now() - t0;
  return NULL;
}

struct rlock_holder {
  weft_rlock *r;
  weft_event held, go;
  int rc, rel1, rel2;
};

static void *rlock_hold_twice(void *arg) {
  struct rlock_holder *h = arg;
  h->rc = weft_rlock_acquire(h->r, WEFT_FOREVER);
  if (h->rc == 0) h->rc = weft_rlock_acquire(h->r, WEFT_FOREVER);
  weft_event_set(&h->held);
  weft_event_wait(&h->go, 30);
  h->rel1 = weft_rlock_release(h->r);
  h->rel2 = weft_rlock_release(h->r);
  return NULL;
}

START_TEST(rlock_release_by_non_owner_is_eperm) {
  weft_rlock r = WEFT_RLOCK_INIT;
  ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
  struct rlock_other o = {.r = &r, .owned = -1, .release_rc = 1, .try_rc = 1, .timed_rc = 1};
  join(spawn(rlock_from_other, &o));
  ck_assert_int_eq(o.owned, 0);
  ck_assert_int_eq(o.release_rc, WEFT_EPERM);
  ck_assert_int_eq(o.try_rc, WEFT_ETIMEDOUT);
  ck_assert_int_eq(o.timed_rc, WEFT_ETIMEDOUT);
  ck_assert_double_ge(o.timed_elapsed, 0.18);
  /* The owner's count is untouched: exactly two releases free it. */
  ck_assert(weft_rlock_is_owned(&r));
  ck_assert_uint_eq(r.count, 2);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert(weft_lock_locked(&r.lock));
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert(!weft_lock_locked(&r.lock));

  /* The other way round: the main thread is the non-owner. */
  struct rlock_holder h = {.r = &r};
  pthread_t th = spawn(rlock_hold_twice, &h);
  ck_assert_int_eq(weft_event_wait(&h.held, 10), 0);
  ck_assert(!weft_rlock_is_owned(&r));
  ck_assert_int_eq(weft_rlock_release(&r), WEFT_EPERM);
  ck_assert_int_eq(weft_rlock_acquire(&r, 0), WEFT_ETIMEDOUT);
  ck_assert(weft_lock_locked(&r.lock));
  weft_event_set(&h.go);
  join(th);
  ck_assert_int_eq(h.rc, 0);
  ck_assert_int_eq(h.rel1, 0);
  ck_assert_int_eq(h.rel2, 0);
  ck_assert(!weft_lock_locked(&r.lock));
  ck_assert_int_eq(weft_rlock_acquire(&r, 0), 0);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
}
END_TEST

struct rlock_counter {
  weft_rlock r;
  pthread_barrier_t start;
  long count;
  int iters;
  int errors;
  int lost;
};

static void *rlock_worker(void *arg) {
  struct rlock_counter *c = arg;
  pthread_barrier_wait(&c->start);
  for (int i = 0; i < c->iters; i++) {
    int rc;
    while ((rc = weft_rlock_acquire(&c->r, LOST_WAKEUP_S)) == WEFT_ETIMEDOUT) inc(&c->lost);
    if (rc != 0) {
      inc(&c->errors);
      continue;
    }
    c->count++;
    /* Nested levels: a timed and a non-blocking one, both immediate. */
    if (weft_rlock_acquire(&c->r, 30.0) != 0) inc(&c->errors);
    c->count++;
    if (weft_rlock_acquire(&c->r, 0) != 0) inc(&c->errors);
    if (!weft_rlock_is_owned(&c->r)) inc(&c->errors);
    c->count++;
    for (int k = 0; k < 3; k++)
      if (weft_rlock_release(&c->r) != 0) inc(&c->errors);
  }
  return NULL;
}

START_TEST(rlock_contention_exact_total) {
  enum { THREADS = 4 };
  struct rlock_counter c = {.r = WEFT_RLOCK_INIT, .iters = 100000 / SLOW};
  pthread_barrier_init(&c.start, NULL, THREADS);
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) t[i] = spawn(rlock_worker, &c);
  for (int i = 0; i < THREADS; i++) join(t[i]);
  pthread_barrier_destroy(&c.start);
  ck_assert_int_eq(c.errors, 0);
  ck_assert_msg(c.lost == 0, "%d acquires waited %g s: lost wake-ups", c.lost, LOST_WAKEUP_S);
  ck_assert_int_eq(c.count, 3L * THREADS * c.iters);
  ck_assert(!weft_lock_locked(&c.r.lock));
  ck_assert_uint_eq(c.r.count, 0);
}
END_TEST

/* =========================================================== Condition */

/* Takes the condition's lock from another thread (which only succeeds if
 * the waiter released it, all levels), notifies, and releases. */
struct cond_probe {
  weft_cond *c;
  weft_rlock *rlock; /* take this RLock directly instead, if set */
  double timeout;
  int acquire_rc, notify_rc, release_rc;
};

static void *probe_acquire_notify(void *arg) {
  struct cond_probe *p = arg;
  p->acquire_rc = p->rlock != NULL ? weft_rlock_acquire(p->rlock, p->timeout)
                                   : weft_cond_acquire(p->c, p->timeout);
  if (p->acquire_rc != 0) return NULL;
  p->notify_rc = weft_cond_notify(p->c, 1);
  p->release_rc = p->rlock != NULL ? weft_rlock_release(p->rlock) : weft_cond_release(p->c);
  return NULL;
}

/* With the condition's (reentrant) lock held twice by the caller: waits
 * while a probe thread proves the lock free, then checks the count came
 * back as 2. */
static void check_wait_releases_all_levels(weft_cond *c, weft_rlock *direct) {
  struct cond_probe p = {.c = c, .rlock = direct, .timeout = 5, .acquire_rc = 1,
                         .notify_rc = 1, .release_rc = 1};
  pthread_t th = spawn(probe_acquire_notify, &p);
  int rc = weft_cond_wait(c, 10);
  join(th);
  ck_assert_int_eq(p.acquire_rc, 0);
  ck_assert_int_eq(p.notify_rc, 0);
  ck_assert_int_eq(p.release_rc, 0);
  ck_assert_int_eq(rc, 0);
  /* Two levels again: two releases work, the third is refused. */
  ck_assert_int_eq(weft_cond_release(c), 0);
  ck_assert_int_eq(weft_cond_release(c), 0);
  ck_assert_int_eq(weft_cond_release(c), WEFT_EPERM);
}

static weft_cond static_cond = WEFT_COND_INIT;

START_TEST(cond_default_uses_own_rlock) {
  weft_cond c;
  ck_assert_int_eq(weft_cond_init(&c), 0);
  /* Reentrant, as Python's default RLock. */
  ck_assert_int_eq(weft_cond_acquire(&c, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_cond_acquire(&c, 0), 0);
  /* A wait that times out also restores both levels. */
  ck_assert_int_eq(weft_cond_wait(&c, 0.05), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_cond_notify(&c, 1), 0); /* still held */
  check_wait_releases_all_levels(&c, NULL);

  ck_assert_int_eq(weft_cond_acquire(&static_cond, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_cond_acquire(&static_cond, WEFT_FOREVER), 0);
  check_wait_releases_all_levels(&static_cond, NULL);
}
END_TEST

START_TEST(cond_over_lock) {
  weft_lock l = WEFT_LOCK_INIT;
  weft_cond c;
  ck_assert_int_eq(weft_cond_init(&c, .lock = &l), 0);
  ck_assert_int_eq(weft_cond_acquire(&c, WEFT_FOREVER), 0);
  ck_assert(weft_lock_locked(&l)); /* the condition's lock is l */
  ck_assert_int_eq(weft_cond_acquire(&c, 0), WEFT_ETIMEDOUT); /* a Lock: not reentrant */
  ck_assert_int_eq(weft_cond_wait(&c, 0.05), WEFT_ETIMEDOUT);
  ck_assert(weft_lock_locked(&l));
  /* While the main thread waits, another thread can take l. */
  struct cond_probe p = {.c = &c, .timeout = 5, .acquire_rc = 1, .notify_rc = 1, .release_rc = 1};
  pthread_t th = spawn(probe_acquire_notify, &p);
  int rc = weft_cond_wait(&c, 10);
  ck_assert(weft_lock_locked(&l)); /* re-acquired */
  join(th);
  ck_assert_int_eq(p.acquire_rc, 0);
  ck_assert_int_eq(p.notify_rc, 0);
  ck_assert_int_eq(rc, 0);
  ck_assert_int_eq(weft_cond_release(&c), 0);
  ck_assert(!weft_lock_locked(&l));
  ck_assert_int_eq(weft_cond_release(&c), WEFT_EPERM);
  /* The lock itself works as the condition's lock. */
  ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_cond_notify_all(&c), 0);
  ck_assert_int_eq(weft_lock_release(&l), 0);
}
END_TEST

START_TEST(cond_over_rlock_held_twice) {
  weft_rlock r = WEFT_RLOCK_INIT;
  weft_cond c;
  ck_assert_int_eq(weft_cond_init(&c, .rlock = &r), 0);
  ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
  /* The probe takes r itself: possible only if wait released both levels. */
  struct cond_probe p = {.c = &c, .rlock = &r, .timeout = 5, .acquire_rc = 1, .notify_rc = 1,
                         .release_rc = 1};
  pthread_t th = spawn(probe_acquire_notify, &p);
  int rc = weft_cond_wait(&c, 10);
  ck_assert(weft_rlock_is_owned(&r));
  ck_assert_uint_eq(r.count, 2);
  join(th);
  ck_assert_int_eq(p.acquire_rc, 0);
  ck_assert_int_eq(p.notify_rc, 0);
  ck_assert_int_eq(p.release_rc, 0);
  ck_assert_int_eq(rc, 0);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert(weft_rlock_is_owned(&r));
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert(!weft_lock_locked(&r.lock));
  ck_assert_int_eq(weft_rlock_release(&r), WEFT_EPERM);

  /* A timed-out wait restores the count as well (three levels here). */
  for (int i = 0; i < 3; i++) ck_assert_int_eq(weft_cond_acquire(&c, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_cond_wait(&c, 0.05), WEFT_ETIMEDOUT);
  ck_assert_uint_eq(r.count, 3);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(weft_cond_release(&c), 0);
  ck_assert_int_eq(weft_cond_release(&c), WEFT_EPERM);
  ck_assert(!weft_lock_locked(&r.lock));
}
END_TEST

static bool pred_false(void *arg) {
  (void)arg;
  return false;
}

struct lock_hold_ctx {
  weft_cond *c;
  weft_event held, go;
  int rc;
};

static void *hold_cond_lock(void *arg) {
  struct lock_hold_ctx *h = arg;
  h->rc = weft_cond_acquire(h->c, WEFT_FOREVER);
  weft_event_set(&h->held);
  weft_event_wait(&h->go, 30);
  if (h->rc == 0) h->rc = weft_cond_release(h->c);
  return NULL;
}

static void check_not_held_is_eperm(weft_cond *c) {
  ck_assert_int_eq(weft_cond_wait(c, 0), WEFT_EPERM);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EPERM);
  double t0 = test_now();
  ck_assert_int_eq(weft_cond_wait(c, 5), WEFT_EPERM);
  ck_assert_int_eq(weft_cond_wait(c, WEFT_FOREVER), WEFT_EPERM);
  ck_assert_int_eq(weft_cond_wait_for(c, pred_false, NULL, 5), WEFT_EPERM);
  ck_assert_double_lt(test_now() - t0, 1.0); /* refused at once, not after waiting */
  ck_assert_int_eq(weft_cond_notify(c, 1), WEFT_EPERM);
  ck_assert_int_eq(weft_cond_notify_all(c), WEFT_EPERM);
}

START_TEST(cond_without_lock_is_eperm) {
  weft_lock l = WEFT_LOCK_INIT;
  weft_rlock r = WEFT_RLOCK_INIT;
  weft_cond own, over_lock, over_rlock;
  ck_assert_int_eq(weft_cond_init(&own), 0);
  ck_assert_int_eq(weft_cond_init(&over_lock, .lock = &l), 0);
  ck_assert_int_eq(weft_cond_init(&over_rlock, .rlock = &r), 0);
  weft_cond *all[] = {&own, &over_lock, &over_rlock};
  for (int i = 0; i < 3; i++) {
    /* Not held by anyone. */
    check_not_held_is_eperm(all[i]);
    /* Held by another thread. */
    struct lock_hold_ctx h = {.c = all[i], .rc = 1};
    pthread_t th = spawn(hold_cond_lock, &h);
    ck_assert_int_eq(weft_event_wait(&h.held, 10), 0);
    check_not_held_is_eperm(all[i]);
    weft_event_set(&h.go);
    join(th);
    ck_assert_int_eq(h.rc, 0);
    /* The refusals left the condition usable. */
    ck_assert_int_eq(weft_cond_acquire(all[i], WEFT_FOREVER), 0);
    ck_assert_int_eq(weft_cond_notify(all[i], -1), WEFT_EINVAL);
    ck_assert_int_eq(weft_cond_wait(all[i], NAN), WEFT_EINVAL);
    ck_assert_int_eq(weft_cond_wait_for(all[i], NULL, NULL, 1), WEFT_EINVAL);
    ck_assert_int_eq(weft_cond_notify(all[i], 0), 0);
    ck_assert_int_eq(weft_cond_wait(all[i], 0.01), WEFT_ETIMEDOUT);
    ck_assert_int_eq(weft_cond_release(all[i]), 0);
  }
  /* A released Lock was acquired through the condition; EPERM after. */
  ck_assert_int_eq(weft_lock_acquire(&l, 0), 0);
  ck_assert_int_eq(weft_lock_release(&l), 0);
  weft_cond bad;
  ck_assert_int_eq(weft_cond_init(&bad, .lock = &l, .rlock = &r), WEFT_EINVAL);
}
END_TEST

START_TEST(cond_wait_times_out) {
  const double timeout = 0.3;
  weft_lock l = WEFT_LOCK_INIT;
  weft_cond c;
  ck_assert_int_eq(weft_cond_init(&c, .lock = &l), 0);
  ck_assert_int_eq(weft_cond_acquire(&c, WEFT_FOREVER), 0);
  double t0 = test_now();
  ck_assert_int_eq(weft_cond_wait(&c, timeout), WEFT_ETIMEDOUT);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, timeout * 0.9);
  ck_assert_double_lt(elapsed, timeout + 2);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ETIMEDOUT);
  ck_assert(weft_lock_locked(&l));
  ck_assert_int_eq(weft_cond_notify(&c, 1), 0); /* we hold it again */
  t0 = test_now();
  ck_assert_int_eq(weft_cond_wait(&c, 0), WEFT_ETIMEDOUT);
  ck_assert_double_lt(test_now() - t0, 0.1);
  ck_assert(weft_lock_locked(&l));
  ck_assert_int_eq(weft_cond_release(&c), 0);
}
END_TEST

struct notify_ctx {
  weft_lock lock;
  weft_cond cond;
  int ready; /* waiters that reached wait (under lock) */
  int woke;  /* waiters whose wait returned (under lock) */
  int bad;   /* waits that returned anything but 0 */
};

static void *notified_waiter(void *arg) {
  struct notify_ctx *x = arg;
  weft_lock_acquire(&x->lock, WEFT_FOREVER);
  x->ready++;
  if (weft_cond_wait(&x->cond, 30) != 0) x->bad++;
  x->woke++;
  weft_lock_release(&x->lock);
  return NULL;
}

static int read_locked(weft_lock *l, const int *p) {
  weft_lock_acquire(l, WEFT_FOREVER);
  int v = *p;
  weft_lock_release(l);
  return v;
}

static bool wait_locked_ge(weft_lock *l, const int *p, int v, double timeout) {
  double end = test_now() + timeout;
  while (read_locked(l, p) < v) {
    if (test_now() > end) return false;
    nap(0.001);
  }
  return true;
}

START_TEST(cond_notify_n_wakes_exactly_n) {
  enum { WAITERS = 5 };
  static const int ns[] = {2, 1, 4, 0, 7};
  struct notify_ctx x = {.lock = WEFT_LOCK_INIT};
  ck_assert_int_eq(weft_cond_init(&x.cond, .lock = &x.lock), 0);
  /* Waits that timed out must not count as waiters for later notifies. */
  ck_assert_int_eq(weft_lock_acquire(&x.lock, WEFT_FOREVER), 0);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(weft_cond_wait(&x.cond, 0.01), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_lock_release(&x.lock), 0);

  for (size_t round = 0; round < sizeof ns / sizeof ns[0]; round++) {
    int n = ns[round], expect = n < WAITERS ? n : WAITERS;
    x.ready = x.woke = 0;
    pthread_t t[WAITERS];
    for (int i = 0; i < WAITERS; i++) t[i] = spawn(notified_waiter, &x);
    /* ready is counted under the lock just before wait, which registers
     * before it releases the lock: seeing 5 here means all 5 wait. */
    ck_assert(wait_locked_ge(&x.lock, &x.ready, WAITERS, 10));
    ck_assert_int_eq(weft_lock_acquire(&x.lock, WEFT_FOREVER), 0);
    ck_assert_int_eq(weft_cond_notify(&x.cond, n), 0);
    ck_assert_int_eq(weft_lock_release(&x.lock), 0);
    ck_assert_msg(wait_locked_ge(&x.lock, &x.woke, expect, 10), "round %zu: %d of %d woke",
                  round, read_locked(&x.lock, &x.woke), expect);
    nap(0.1); /* bounded check that no extra waiter wakes */
    ck_assert_msg(read_locked(&x.lock, &x.woke) == expect, "notify(%d) woke %d", n,
                  read_locked(&x.lock, &x.woke));
    ck_assert_int_eq(weft_lock_acquire(&x.lock, WEFT_FOREVER), 0);
    ck_assert_int_eq(weft_cond_notify_all(&x.cond), 0);
    ck_assert_int_eq(weft_lock_release(&x.lock), 0);
    for (int i = 0; i < WAITERS; i++) join(t[i]);
    ck_assert_int_eq(x.woke, WAITERS);
    ck_assert_int_eq(x.bad, 0);
  }
}
END_TEST

struct flag_ctx {
  weft_cond cond;
  int flag;
  int calls;
  int notify_rc;
};

static bool flag_is_set(void *arg) {
  struct flag_ctx *f = arg;
  f->calls++;
  return f->flag != 0;
}

/* Notifies once with the predicate still false, then sets it. */
static void *set_flag_later(void *arg) {
  struct flag_ctx *f = arg;
  weft_cond_acquire(&f->cond, WEFT_FOREVER);
  int rc = weft_cond_notify_all(&f->cond);
  weft_cond_release(&f->cond);
  weft_cond_acquire(&f->cond, WEFT_FOREVER);
  f->flag = 1;
  if (rc == 0) rc = weft_cond_notify_all(&f->cond);
  f->notify_rc = rc;
  weft_cond_release(&f->cond);
  return NULL;
}

START_TEST(cond_wait_for_returns_predicate_value) {
  struct flag_ctx f = {.flag = 1, .notify_rc = 1};
  ck_assert_int_eq(weft_cond_init(&f.cond), 0);
  ck_assert_int_eq(weft_cond_acquire(&f.cond, WEFT_FOREVER), 0);
  /* Already true: 1 at once. */
  double t0 = test_now();
  ck_assert_int_eq(weft_cond_wait_for(&f.cond, flag_is_set, &f, 5), 1);
  ck_assert_double_lt(test_now() - t0, 0.5);
  ck_assert_int_eq(f.calls, 1);
  /* Never true: 0 once the timeout ran out. */
  f.flag = 0;
  t0 = test_now();
  ck_assert_int_eq(weft_cond_wait_for(&f.cond, flag_is_set, &f, 0.2), 0);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.18);
  ck_assert_double_lt(elapsed, 2.2);
  ck_assert_int_eq(weft_cond_wait_for(&f.cond, flag_is_set, &f, 0), 0);
  /* Becomes true in another thread, after one notify where it was not. */
  f.calls = 0;
  pthread_t th = spawn(set_flag_later, &f);
  ck_assert_int_eq(weft_cond_wait_for(&f.cond, flag_is_set, &f, 10), 1);
  ck_assert_int_ge(f.calls, 2);
  ck_assert_int_eq(weft_cond_release(&f.cond), 0);
  join(th);
  ck_assert_int_eq(f.notify_rc, 0);
}
END_TEST

enum { PC_CAP = 8 };

struct pc {
  weft_lock lock;
  weft_cond not_empty, not_full;
  int buf[PC_CAP];
  int head, n;
  int items_per_producer;
  int total;   /* items to consume */
  int taken;   /* items consumed so far */
  long sum;
  int errors;
  int lost;    /* lock acquires or waits not served within LOST_WAKEUP_S */
};

/* A wait that times out here lost its notification; the loop re-checks
 * its predicate, so the test goes on and reports it. */
static void pc_wait(struct pc *q, weft_cond *c) {
  int rc = weft_cond_wait(c, LOST_WAKEUP_S);
  if (rc == WEFT_ETIMEDOUT)
    q->lost++;
  else if (rc != 0)
    q->errors++;
}

static void *producer(void *arg) {
  struct pc *q = arg;
  int lost = 0, errors = 0;
  for (int i = 1; i <= q->items_per_producer; i++) {
    acquire_counting_lost(&q->lock, &lost, &errors);
    while (q->n == PC_CAP) pc_wait(q, &q->not_full);
    q->buf[(q->head + q->n) % PC_CAP] = i;
    q->n++;
    if (weft_cond_notify(&q->not_empty, 1) != 0) q->errors++;
    weft_lock_release(&q->lock);
  }
  acquire_counting_lost(&q->lock, &lost, &errors);
  q->lost += lost;
  q->errors += errors;
  weft_lock_release(&q->lock);
  return NULL;
}

static void *consumer(void *arg) {
  struct pc *q = arg;
  int lost = 0, errors = 0;
  acquire_counting_lost(&q->lock, &lost, &errors);
  for (;;) {
    while (q->n == 0 && q->taken < q->total) pc_wait(q, &q->not_empty);
    if (q->taken == q->total) break;
    q->sum += q->buf[q->head];
    q->head = (q->head + 1) % PC_CAP;
    q->n--;
    if (++q->taken == q->total) weft_cond_notify_all(&q->not_empty); /* let the others end */
    if (weft_cond_notify(&q->not_full, 1) != 0) q->errors++;
  }
  q->lost += lost;
  q->errors += errors;
  weft_lock_release(&q->lock);
  return NULL;
}

START_TEST(cond_producer_consumer) {
  enum { PRODUCERS = 2, CONSUMERS = 3 };
  struct pc q = {.lock = WEFT_LOCK_INIT, .items_per_producer = 50000 / SLOW};
  q.total = PRODUCERS * q.items_per_producer;
  ck_assert_int_eq(weft_cond_init(&q.not_empty, .lock = &q.lock), 0);
  ck_assert_int_eq(weft_cond_init(&q.not_full, .lock = &q.lock), 0);
  pthread_t t[PRODUCERS + CONSUMERS];
  for (int i = 0; i < CONSUMERS; i++) t[i] = spawn(consumer, &q);
  for (int i = 0; i < PRODUCERS; i++) t[CONSUMERS + i] = spawn(producer, &q);
  for (int i = 0; i < PRODUCERS + CONSUMERS; i++) join(t[i]);
  long per = (long)q.items_per_producer;
  ck_assert_int_eq(q.errors, 0);
  ck_assert_msg(q.lost == 0, "%d lock acquires or waits not served within %g s: lost wake-ups",
                q.lost, LOST_WAKEUP_S);
  ck_assert_int_eq(q.taken, q.total);
  ck_assert_int_eq(q.n, 0);
  ck_assert_int_eq(q.sum, PRODUCERS * per * (per + 1) / 2);
}
END_TEST

/* One condition (the default, an RLock of its own) for both directions,
 * so every change is announced with notify_all. */
struct pc1 {
  weft_cond cond;
  int value, have;
  int rounds;
  long sum;
  int errors;
};

static void *pc1_producer(void *arg) {
  struct pc1 *q = arg;
  for (int i = 1; i <= q->rounds; i++) {
    weft_cond_acquire(&q->cond, WEFT_FOREVER);
    while (q->have)
      if (weft_cond_wait(&q->cond, 20) != 0) q->errors++;
    q->value = i;
    q->have = 1;
    weft_cond_notify_all(&q->cond);
    weft_cond_release(&q->cond);
  }
  return NULL;
}

static void *pc1_consumer(void *arg) {
  struct pc1 *q = arg;
  for (int i = 1; i <= q->rounds; i++) {
    weft_cond_acquire(&q->cond, WEFT_FOREVER);
    while (!q->have)
      if (weft_cond_wait(&q->cond, 20) != 0) q->errors++;
    if (q->value != i) q->errors++;
    q->sum += q->value;
    q->have = 0;
    weft_cond_notify_all(&q->cond);
    weft_cond_release(&q->cond);
  }
  return NULL;
}

START_TEST(cond_ping_pong_one_condition) {
  struct pc1 q = {.cond = WEFT_COND_INIT, .rounds = 20000 / SLOW};
  pthread_t a = spawn(pc1_consumer, &q), b = spawn(pc1_producer, &q);
  join(a);
  join(b);
  ck_assert_int_eq(q.errors, 0);
  ck_assert_int_eq(q.sum, (long)q.rounds * (q.rounds + 1) / 2);
}
END_TEST

/* notify(1) is for a thread waiting *now*. Here the one waiter is a child
 * process, stopped with SIGSTOP just before the notify so that it cannot
 * pick its wake-up up yet; the notifier then waits with timeout 0 itself.
 * In Python that wait is not notified (it was not waiting at notify time),
 * and the child must still wake once it runs again. */
struct steal {
  weft_lock lock;
  weft_cond cond;
  int ready;
};

static int steal_child(void *arg) {
  struct steal *s = arg;
  if (weft_lock_acquire(&s->lock, 10) != 0) return 10;
  s->ready = 1;
  int rc = weft_cond_wait(&s->cond, 20);
  weft_lock_release(&s->lock);
  return rc == 0 ? 0 : 11;
}

START_TEST(cond_notify_is_not_taken_by_a_later_waiter) {
  struct steal *s = shared(sizeof *s);
  weft_lock_init(&s->lock);
  ck_assert_int_eq(weft_cond_init(&s->cond, .lock = &s->lock), 0);
  weft_process p = start_process(steal_child, s);
  pid_t pid = weft_process_pid(p);
  /* Once the parent holds the lock with ready set, the child is waiting. */
  double end = test_now() + 10;
  for (;;) {
    ck_assert_int_eq(weft_lock_acquire(&s->lock, 10), 0);
    if (s->ready) break;
    weft_lock_release(&s->lock);
    ck_assert(test_now() < end);
    nap(0.001);
  }
  bool stopped = stop_process(pid, 5);
  int notify_rc = weft_cond_notify(&s->cond, 1);
  int wait_rc = weft_cond_wait(&s->cond, 0); /* started after the notify */
  weft_lock_release(&s->lock);
  kill(pid, SIGCONT);
  int code = finish_process(p, 5);
  weft_shared_free(s);
  ck_assert(stopped);
  ck_assert_int_eq(notify_rc, 0);
  ck_assert_msg(wait_rc == WEFT_ETIMEDOUT,
                "a wait begun after notify(1) returned %d (took the waiter's wake-up)", wait_rc);
  ck_assert_msg(code == 0, "the notified waiter did not wake (exit code %d; 1000: hung, killed)",
                code);
}
END_TEST

/* =========================================================== Semaphore */

START_TEST(semaphore_init_and_value) {
  weft_semaphore s;
  ck_assert_int_eq(weft_semaphore_init(&s, -1), WEFT_EINVAL);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_eq(weft_semaphore_init(&s, 1), 0);
  ck_assert_int_eq(weft_semaphore_value(&s), 1);
  ck_assert_int_eq(weft_semaphore_init(&s, 0), 0);
  ck_assert_int_eq(weft_semaphore_value(&s), 0);
  ck_assert_int_eq(weft_semaphore_init(&s, 3, .name = "slots"), 0);
  ck_assert_int_eq(weft_semaphore_value(&s), 3);
  weft_semaphore st0 = WEFT_SEMAPHORE_INIT(2);
  ck_assert_int_eq(weft_semaphore_value(&st0), 2);
  ck_assert_int_eq(weft_semaphore_release(&st0, 5), 0); /* unbounded */
  ck_assert_int_eq(weft_semaphore_value(&st0), 7);
}
END_TEST

START_TEST(semaphore_acquire_release_counts) {
  weft_semaphore s;
  ck_assert_int_eq(weft_semaphore_init(&s, 3, .name = "slots"), 0);
  for (int i = 3; i > 0; i--) {
    ck_assert_int_eq(weft_semaphore_acquire(&s, 0), 0);
    ck_assert_int_eq(weft_semaphore_value(&s), i - 1);
  }
  ck_assert_int_eq(weft_semaphore_acquire(&s, 0), WEFT_ETIMEDOUT);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "slots"));
  ck_assert_int_eq(weft_semaphore_value(&s), 0);
  double t0 = test_now();
  ck_assert_int_eq(weft_semaphore_acquire(&s, 0.2), WEFT_ETIMEDOUT);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.18);
  ck_assert_double_lt(elapsed, 2.2);
  ck_assert_int_eq(weft_semaphore_value(&s), 0);
  ck_assert_int_eq(weft_semaphore_acquire(&s, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_semaphore_release(&s, 1), 0);
  ck_assert_int_eq(weft_semaphore_value(&s), 1);
  ck_assert_int_eq(weft_semaphore_release(&s, 5), 0);
  ck_assert_int_eq(weft_semaphore_value(&s), 6);
  ck_assert_int_eq(weft_semaphore_release(&s, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_semaphore_release(&s, -2), WEFT_EINVAL);
  ck_assert_int_eq(weft_semaphore_value(&s), 6);
  for (int i = 0; i < 6; i++) ck_assert_int_eq(weft_semaphore_acquire(&s, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_semaphore_acquire(&s, 0), WEFT_ETIMEDOUT);
}
END_TEST

struct sem_waiters {
  weft_semaphore s;
  int got, bad;
};

static void *sem_waiter(void *arg) {
  struct sem_waiters *w = arg;
  if (weft_semaphore_acquire(&w->s, 20) == 0)
    inc(&w->got);
  else
    inc(&w->bad);
  return NULL;
}

struct sem_release_later {
  weft_semaphore *s;
  int rc;
};

static void *sem_release_after_nap(void *arg) {
  struct sem_release_later *r = arg;
  nap(0.05);
  r->rc = weft_semaphore_release(r->s, 1);
  return NULL;
}

START_TEST(semaphore_release_n_wakes_n) {
  enum { WAITERS = 5 };
  struct sem_waiters w = {.s = WEFT_SEMAPHORE_INIT(0)};
  pthread_t t[WAITERS];
  for (int i = 0; i < WAITERS; i++) t[i] = spawn(sem_waiter, &w);
  /* The struct counts threads blocked in acquire. */
  double end = test_now() + 10;
  while (__atomic_load_n(&w.s.waiters, __ATOMIC_ACQUIRE) != WAITERS) {
    ck_assert(test_now() < end);
    nap(0.001);
  }
  ck_assert_int_eq(weft_semaphore_release(&w.s, 2), 0);
  ck_assert(wait_ge(&w.got, 2, 10));
  nap(0.1);
  ck_assert_int_eq(ld(&w.got), 2);
  ck_assert_int_eq(weft_semaphore_value(&w.s), 0);
  ck_assert_int_eq(weft_semaphore_release(&w.s, 3), 0);
  for (int i = 0; i < WAITERS; i++) join(t[i]);
  ck_assert_int_eq(w.got, WAITERS);
  ck_assert_int_eq(w.bad, 0);
  ck_assert_int_eq(weft_semaphore_value(&w.s), 0);

  /* A timed acquire succeeds when a unit arrives before its timeout. */
  struct sem_release_later r = {&w.s, 1};
  pthread_t th = spawn(sem_release_after_nap, &r);
  ck_assert_int_eq(weft_semaphore_acquire(&w.s, 10), 0);
  join(th);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_int_eq(weft_semaphore_value(&w.s), 0);
}
END_TEST

struct sem_counter {
  weft_semaphore s;
  pthread_barrier_t start;
  long count;
  int inside, max_inside;
  int iters;
  int errors;
};

static void *sem_worker(void *arg) {
  struct sem_counter *c = arg;
  pthread_barrier_wait(&c->start);
  for (int i = 0; i < c->iters; i++) {
    if (weft_semaphore_acquire(&c->s, (i & 1) ? WEFT_FOREVER : 30) != 0) {
      inc(&c->errors);
      continue;
    }
    int now = inc(&c->inside);
    int max = ld(&c->max_inside);
    while (now > max && !__atomic_compare_exchange_n(&c->max_inside, &max, now, false,
                                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
    if (weft_semaphore_value(&c->s) < 0) inc(&c->errors);
    __atomic_add_fetch(&c->count, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&c->inside, 1, __ATOMIC_ACQ_REL);
    if (weft_semaphore_release(&c->s, 1) != 0) inc(&c->errors);
  }
  return NULL;
}

/* As a mutex (value 1) the protected count is plain and must be exact. */
struct sem_mutex {
  weft_semaphore s;
  pthread_barrier_t start;
  long count;
  int iters, errors;
};

static void *sem_mutex_worker(void *arg) {
  struct sem_mutex *c = arg;
  pthread_barrier_wait(&c->start);
  for (int i = 0; i < c->iters; i++) {
    if (weft_semaphore_acquire(&c->s, WEFT_FOREVER) != 0) {
      inc(&c->errors);
      continue;
    }
    c->count++;
    weft_semaphore_release(&c->s, 1);
  }
  return NULL;
}

START_TEST(semaphore_contention) {
  enum { THREADS = 6, LIMIT = 3 };
  struct sem_counter c = {.s = WEFT_SEMAPHORE_INIT(LIMIT), .iters = 30000 / SLOW};
  pthread_barrier_init(&c.start, NULL, THREADS);
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) t[i] = spawn(sem_worker, &c);
  for (int i = 0; i < THREADS; i++) join(t[i]);
  pthread_barrier_destroy(&c.start);
  ck_assert_int_eq(c.errors, 0);
  ck_assert_int_eq(c.count, (long)THREADS * c.iters);
  ck_assert_int_le(c.max_inside, LIMIT);
  ck_assert_int_ge(c.max_inside, 1);
  ck_assert_int_eq(weft_semaphore_value(&c.s), LIMIT);

  struct sem_mutex m = {.s = WEFT_SEMAPHORE_INIT(1), .iters = 100000 / SLOW};
  pthread_barrier_init(&m.start, NULL, 4);
  for (int i = 0; i < 4; i++) t[i] = spawn(sem_mutex_worker, &m);
  for (int i = 0; i < 4; i++) join(t[i]);
  pthread_barrier_destroy(&m.start);
  ck_assert_int_eq(m.errors, 0);
  ck_assert_int_eq(m.count, 4L * m.iters);
  ck_assert_int_eq(weft_semaphore_value(&m.s), 1);
}
END_TEST

START_TEST(bounded_semaphore_refuses_over_release) {
  weft_semaphore b;
  ck_assert_int_eq(weft_semaphore_init(&b, 2, .bounded = true, .name = "pool"), 0);
  ck_assert_int_eq(weft_semaphore_release(&b, 1), WEFT_EOVERFLOW);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EOVERFLOW);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "pool"));
  ck_assert_int_eq(weft_semaphore_value(&b), 2);
  ck_assert_int_eq(weft_semaphore_acquire(&b, 0), 0);
  ck_assert_int_eq(weft_semaphore_value(&b), 1);
  /* release(2) would reach 3: nothing is released, not even one unit. */
  ck_assert_int_eq(weft_semaphore_release(&b, 2), WEFT_EOVERFLOW);
  ck_assert_int_eq(weft_semaphore_value(&b), 1);
  ck_assert_int_eq(weft_semaphore_release(&b, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_semaphore_release(&b, -1), WEFT_EINVAL);
  ck_assert_int_eq(weft_semaphore_value(&b), 1);
  ck_assert_int_eq(weft_semaphore_release(&b, 1), 0);
  ck_assert_int_eq(weft_semaphore_value(&b), 2);
  ck_assert_int_eq(weft_semaphore_acquire(&b, 0), 0);
  ck_assert_int_eq(weft_semaphore_acquire(&b, 0), 0);
  ck_assert_int_eq(weft_semaphore_acquire(&b, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_semaphore_release(&b, 2), 0);
  ck_assert_int_eq(weft_semaphore_value(&b), 2);
  ck_assert_int_eq(weft_semaphore_release(&b, 3), WEFT_EOVERFLOW);
  ck_assert_int_eq(weft_semaphore_value(&b), 2);

  weft_semaphore sb = WEFT_BOUNDED_SEMAPHORE_INIT(3);
  ck_assert_int_eq(weft_semaphore_release(&sb, 1), WEFT_EOVERFLOW);
  ck_assert_int_eq(weft_semaphore_acquire(&sb, 0), 0);
  ck_assert_int_eq(weft_semaphore_release(&sb, 2), WEFT_EOVERFLOW);
  ck_assert_int_eq(weft_semaphore_value(&sb), 2);
  ck_assert_int_eq(weft_semaphore_release(&sb, 1), 0);
  ck_assert_int_eq(weft_semaphore_value(&sb), 3);
}
END_TEST

/* Python: BoundedSemaphore(0).release() raises ValueError. */
START_TEST(bounded_semaphore_of_zero_refuses_release) {
  weft_semaphore b;
  ck_assert_int_eq(weft_semaphore_init(&b, 0, .bounded = true), 0);
  ck_assert_int_eq(weft_semaphore_acquire(&b, 0), WEFT_ETIMEDOUT);
  int rc = weft_semaphore_release(&b, 1);
  ck_assert_msg(rc == WEFT_EOVERFLOW, "BoundedSemaphore(0).release(1) returned %d, value now %d",
                rc, weft_semaphore_value(&b));
  ck_assert_int_eq(weft_semaphore_value(&b), 0);
  weft_semaphore sb = WEFT_BOUNDED_SEMAPHORE_INIT(0);
  ck_assert_int_eq(weft_semaphore_release(&sb, 1), WEFT_EOVERFLOW);
  ck_assert_int_eq(weft_semaphore_value(&sb), 0);
}
END_TEST

/* =============================================================== Event */

static weft_event static_event = WEFT_EVENT_INIT;

START_TEST(event_set_clear_wait) {
  weft_event e;
  ck_assert_int_eq(weft_event_init(&e), 0);
  ck_assert(!weft_event_is_set(&e));
  ck_assert_int_eq(weft_event_wait(&e, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ETIMEDOUT);
  double t0 = test_now();
  ck_assert_int_eq(weft_event_wait(&e, 0.2), WEFT_ETIMEDOUT);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.18);
  ck_assert_double_lt(elapsed, 2.2);
  ck_assert_int_eq(weft_event_wait(&e, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_event_set(&e), 0);
  ck_assert(weft_event_is_set(&e));
  ck_assert_int_eq(weft_event_wait(&e, 0), 0);
  ck_assert_int_eq(weft_event_wait(&e, 1), 0);
  ck_assert_int_eq(weft_event_wait(&e, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_event_set(&e), 0); /* setting twice is fine */
  ck_assert(weft_event_is_set(&e));
  ck_assert_int_eq(weft_event_clear(&e), 0);
  ck_assert(!weft_event_is_set(&e));
  ck_assert_int_eq(weft_event_wait(&e, 0.01), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_event_clear(&e), 0);
  ck_assert(!weft_event_is_set(&e));

  ck_assert(!weft_event_is_set(&static_event));
  ck_assert_int_eq(weft_event_wait(&static_event, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_event_set(&static_event), 0);
  ck_assert_int_eq(weft_event_wait(&static_event, 0), 0);
}
END_TEST

struct event_waiters {
  weft_event e;
  int ok, bad;
};

static void *event_waiter(void *arg) {
  struct event_waiters *w = arg;
  if (weft_event_wait(&w->e, 10) == 0)
    inc(&w->ok);
  else
    inc(&w->bad);
  return NULL;
}

START_TEST(event_set_releases_all_waiters) {
  enum { WAITERS = 8, ROUNDS = 40 };
  for (int round = 0; round < ROUNDS; round++) {
    struct event_waiters w = {.e = WEFT_EVENT_INIT};
    pthread_t t[WAITERS];
    for (int i = 0; i < WAITERS; i++) t[i] = spawn(event_waiter, &w);
    if (round % 4 == 0) nap(0.002); /* sometimes most of them are asleep by now */
    ck_assert_int_eq(weft_event_set(&w.e), 0);
    for (int i = 0; i < WAITERS; i++) join(t[i]);
    ck_assert_int_eq(w.ok, WAITERS);
    ck_assert_int_eq(w.bad, 0);
    ck_assert(weft_event_is_set(&w.e));
  }
}
END_TEST

/* Python: wait() returns True if the flag was set "after the wait starts",
 * even if it was cleared again before the waiter ran. The waiter is a child
 * process kept stopped across set(); clear(), as a busy scheduler might
 * keep a woken thread off the CPU. */
static int event_pulse_child(void *arg) {
  weft_event *e = arg;
  int rc = weft_event_wait(e, 3);
  return rc == 0 ? 0 : rc == WEFT_ETIMEDOUT ? 1 : 2;
}

START_TEST(event_set_then_clear_still_wakes_current_waiter) {
  weft_event *e = shared(sizeof *e);
  weft_event_init(e);
  weft_process p = start_process(event_pulse_child, e);
  pid_t pid = weft_process_pid(p);
  /* The struct counts waiters: once it shows one, the child is in wait. */
  double end = test_now() + 10;
  while (__atomic_load_n(&e->waiters, __ATOMIC_ACQUIRE) != 1 && test_now() < end) nap(0.001);
  bool waiting = __atomic_load_n(&e->waiters, __ATOMIC_ACQUIRE) == 1;
  bool stopped = stop_process(pid, 5);
  int set_rc = weft_event_set(e);
  int clear_rc = weft_event_clear(e);
  kill(pid, SIGCONT);
  int code = finish_process(p, 10);
  weft_shared_free(e);
  ck_assert(waiting);
  ck_assert(stopped);
  ck_assert_int_eq(set_rc, 0);
  ck_assert_int_eq(clear_rc, 0);
  ck_assert_msg(code == 0, "a waiter present at set(); clear() %s (exit code %d)",
                code == 1 ? "timed out" : "failed", code);
}
END_TEST

/* ============================================================= Barrier */

static int barrier_init_timeout(weft_barrier *b, int parties, double timeout) {
  return weft_barrier_init(b, parties, .timeout = timeout);
}

START_TEST(barrier_rejects_bad_parties) {
  weft_barrier b;
  ck_assert_int_eq(weft_barrier_init(&b, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_eq(weft_barrier_init(&b, -1), WEFT_EINVAL);
  ck_assert_int_eq(weft_barrier_init(&b, -100), WEFT_EINVAL);
  ck_assert_int_eq(barrier_init_timeout(&b, 2, NAN), WEFT_EINVAL);
  /* A default that never waits would break every wait given WEFT_DEFAULT. */
  ck_assert_int_eq(barrier_init_timeout(&b, 2, -1), WEFT_EINVAL);
  ck_assert_int_eq(barrier_init_timeout(&b, 2, -INFINITY), WEFT_EINVAL);
  ck_assert_int_eq(weft_barrier_init(&b, 3), 0);
  ck_assert_int_eq(weft_barrier_parties(&b), 3);
  ck_assert_int_eq(weft_barrier_n_waiting(&b), 0);
  ck_assert(!weft_barrier_broken(&b));
  ck_assert_int_eq(weft_barrier_wait(&b, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_barrier_n_waiting(&b), 0);
  /* One party: every wait passes at once with index 0. */
  ck_assert_int_eq(weft_barrier_init(&b, 1), 0);
  for (int i = 0; i < 10; i++) ck_assert_int_eq(weft_barrier_wait(&b, 1), 0);
  weft_barrier st4 = WEFT_BARRIER_INIT(4);
  ck_assert_int_eq(weft_barrier_parties(&st4), 4);
  ck_assert(!weft_barrier_broken(&st4));
}
END_TEST

enum { BAR_PARTIES = 4, BAR_CYCLES = 2000 };

struct bar_cycles {
  weft_barrier b;
  int cycles;
  int seen[BAR_CYCLES][BAR_PARTIES];
  int action_tid[BAR_CYCLES];
  int action_runs;
  int errors;
};

static int record_action(void *arg) {
  struct bar_cycles *x = arg;
  int k = ld(&x->action_runs);
  if (k < BAR_CYCLES) st(&x->action_tid[k], (int)gettid());
  st(&x->action_runs, k + 1);
  return 0;
}

static void *bar_cycler(void *arg) {
  struct bar_cycles *x = arg;
  int me = (int)gettid();
  for (int c = 0; c < x->cycles; c++) {
    /* This cycle's action cannot run before this thread arrives. */
    if (ld(&x->action_runs) != c) inc(&x->errors);
    int idx = weft_barrier_wait(&x->b, WEFT_FOREVER);
    if (idx < 0 || idx >= BAR_PARTIES) {
      inc(&x->errors);
      continue;
    }
    inc(&x->seen[c][idx]);
    /* It ran exactly once, before anyone was released... */
    if (ld(&x->action_runs) != c + 1) inc(&x->errors);
    /* ...in the last thread to arrive, which got index parties-1. */
    if (idx == BAR_PARTIES - 1 && ld(&x->action_tid[c]) != me) inc(&x->errors);
  }
  return NULL;
}

START_TEST(barrier_indexes_and_action_each_cycle) {
  struct bar_cycles *x = calloc(1, sizeof *x);
  ck_assert_ptr_nonnull(x);
  x->cycles = BAR_CYCLES / SLOW;
  ck_assert_int_eq(weft_barrier_init(&x->b, BAR_PARTIES, .action = record_action, .arg = x), 0);
  pthread_t t[BAR_PARTIES];
  for (int i = 0; i < BAR_PARTIES; i++) t[i] = spawn(bar_cycler, x);
  for (int i = 0; i < BAR_PARTIES; i++) join(t[i]);
  ck_assert_int_eq(x->errors, 0);
  ck_assert_int_eq(x->action_runs, x->cycles);
  for (int c = 0; c < x->cycles; c++)
    for (int i = 0; i < BAR_PARTIES; i++)
      ck_assert_msg(x->seen[c][i] == 1, "cycle %d: index %d returned %d times", c, i,
                    x->seen[c][i]);
  ck_assert_int_eq(weft_barrier_n_waiting(&x->b), 0);
  ck_assert(!weft_barrier_broken(&x->b));
  free(x);
}
END_TEST

struct bar_wait {
  weft_barrier *b;
  double timeout;
  int rc;
  double elapsed;
  int done;
};

static void *bar_wait_thread(void *arg) {
  struct bar_wait *w = arg;
  double t0 = test_now();
  w->rc = weft_barrier_wait(w->b, w->timeout);
  w->elapsed = test_now() - t0;
  st(&w->done, 1);
  return NULL;
}

static void spawn_waiters(weft_barrier *b, int n, double timeout, struct bar_wait *w,
                          pthread_t *t) {
  for (int i = 0; i < n; i++) {
    w[i] = (struct bar_wait){.b = b, .timeout = timeout, .rc = 1000};
    t[i] = spawn(bar_wait_thread, &w[i]);
  }
}

static void join_waiters(int n, pthread_t *t) {
  for (int i = 0; i < n; i++) join(t[i]);
}

/* The waits returned each index 0..n-1 exactly once. */
static void check_indexes(const struct bar_wait *w, int n) {
  int seen[16] = {0};
  for (int i = 0; i < n; i++) {
    ck_assert_msg(w[i].rc >= 0 && w[i].rc < n, "wait returned %d", w[i].rc);
    seen[w[i].rc]++;
  }
  for (int i = 0; i < n; i++) ck_assert_int_eq(seen[i], 1);
}

static void run_full_cycle(weft_barrier *b, int n) {
  struct bar_wait w[16];
  pthread_t t[16];
  spawn_waiters(b, n, 10, w, t);
  join_waiters(n, t);
  check_indexes(w, n);
}

static bool wait_n_waiting(weft_barrier *b, int n, double timeout) {
  double end = test_now() + timeout;
  while (weft_barrier_n_waiting(b) != n) {
    if (test_now() > end) return false;
    nap(0.001);
  }
  return true;
}

struct fail_ctx {
  int fail;
  int calls;
};

static int maybe_fail(void *arg) {
  struct fail_ctx *f = arg;
  inc(&f->calls);
  return ld(&f->fail) ? -1 : 0;
}

START_TEST(barrier_failing_action_breaks_it) {
  struct fail_ctx f = {1, 0};
  weft_barrier b;
  ck_assert_int_eq(weft_barrier_init(&b, 3, .action = maybe_fail, .arg = &f), 0);
  struct bar_wait w[3];
  pthread_t t[3];
  spawn_waiters(&b, 3, 10, w, t);
  join_waiters(3, t);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(w[i].rc, WEFT_EBROKEN);
  ck_assert_int_eq(f.calls, 1);
  ck_assert(weft_barrier_broken(&b));
  ck_assert_int_eq(weft_barrier_n_waiting(&b), 0);
  /* Broken until reset: a new wait fails at once. */
  double t0 = test_now();
  ck_assert_int_eq(weft_barrier_wait(&b, 5), WEFT_EBROKEN);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EBROKEN);
  ck_assert_double_lt(test_now() - t0, 1.0);
  ck_assert_int_eq(f.calls, 1);
  ck_assert_int_eq(weft_barrier_reset(&b), 0);
  ck_assert(!weft_barrier_broken(&b));
  st(&f.fail, 0);
  run_full_cycle(&b, 3);
  ck_assert_int_eq(f.calls, 2);
  ck_assert(!weft_barrier_broken(&b));
}
END_TEST

START_TEST(barrier_timeout_breaks_it_for_everyone) {
  const double timeout = 0.3;
  weft_barrier b;
  ck_assert_int_eq(weft_barrier_init(&b, 3), 0);
  struct bar_wait w[3];
  pthread_t t[3];
  spawn_waiters(&b, 2, timeout, w, t);
  join_waiters(2, t);
  double longest = 0;
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(w[i].rc, WEFT_EBROKEN);
    ck_assert_double_lt(w[i].elapsed, timeout + 2);
    if (w[i].elapsed > longest) longest = w[i].elapsed;
  }
  ck_assert_double_ge(longest, timeout * 0.9);
  ck_assert(weft_barrier_broken(&b));
  ck_assert_int_eq(weft_barrier_n_waiting(&b), 0);
  double t0 = test_now();
  ck_assert_int_eq(weft_barrier_wait(&b, WEFT_FOREVER), WEFT_EBROKEN); /* a late arrival */
  ck_assert_double_lt(test_now() - t0, 1.0);
  ck_assert_int_eq(weft_barrier_reset(&b), 0);
  ck_assert(!weft_barrier_broken(&b));
  run_full_cycle(&b, 3);

  /* The default timeout given at init applies to wait(WEFT_DEFAULT). */
  weft_barrier d;
  ck_assert_int_eq(barrier_init_timeout(&d, 2, 0.2), 0);
  t0 = test_now();
  ck_assert_int_eq(weft_barrier_wait(&d, WEFT_DEFAULT), WEFT_EBROKEN);
  double elapsed = test_now() - t0;
  ck_assert_double_ge(elapsed, 0.18);
  ck_assert_double_lt(elapsed, 2.2);
  ck_assert(weft_barrier_broken(&d));
}
END_TEST

START_TEST(barrier_abort_breaks_waiters) {
  weft_barrier b;
  ck_assert_int_eq(weft_barrier_init(&b, 3), 0);
  struct bar_wait w[3];
  pthread_t t[3];
  spawn_waiters(&b, 2, 10, w, t);
  ck_assert(wait_n_waiting(&b, 2, 10));
  ck_assert_int_eq(weft_barrier_abort(&b), 0);
  join_waiters(2, t);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(w[i].rc, WEFT_EBROKEN);
    ck_assert_double_lt(w[i].elapsed, 5);
  }
  ck_assert(weft_barrier_broken(&b));
  ck_assert_int_eq(weft_barrier_n_waiting(&b), 0);
  ck_assert_int_eq(weft_barrier_wait(&b, 1), WEFT_EBROKEN);
  ck_assert_int_eq(weft_barrier_reset(&b), 0);
  ck_assert(!weft_barrier_broken(&b));
  run_full_cycle(&b, 3);
  /* Aborted with nobody waiting: the next wait fails. */
  ck_assert_int_eq(weft_barrier_abort(&b), 0);
  ck_assert_int_eq(weft_barrier_wait(&b, 1), WEFT_EBROKEN);
  ck_assert(weft_barrier_broken(&b));
  ck_assert_int_eq(weft_barrier_reset(&b), 0);
  run_full_cycle(&b, 3);
}
END_TEST

START_TEST(barrier_reset_releases_waiters_and_reuses) {
  weft_barrier b;
  ck_assert_int_eq(weft_barrier_init(&b, 3), 0);
  ck_assert_int_eq(weft_barrier_reset(&b), 0); /* nobody waiting: no effect */
  ck_assert(!weft_barrier_broken(&b));
  for (int round = 0; round < 5; round++) {
    struct bar_wait w[3];
    pthread_t t[3];
    spawn_waiters(&b, 2, 10, w, t);
    ck_assert(wait_n_waiting(&b, 2, 10));
    ck_assert_int_eq(weft_barrier_reset(&b), 0);
    join_waiters(2, t);
    for (int i = 0; i < 2; i++) {
      ck_assert_int_eq(w[i].rc, WEFT_EBROKEN);
      ck_assert_double_lt(w[i].elapsed, 5);
    }
    ck_assert(!weft_barrier_broken(&b)); /* reset leaves it usable */
    ck_assert_int_eq(weft_barrier_n_waiting(&b), 0);
    run_full_cycle(&b, 3);
  }
}
END_TEST

START_TEST(barrier_n_waiting_and_parties) {
  weft_barrier b;
  ck_assert_int_eq(weft_barrier_init(&b, 3), 0);
  ck_assert_int_eq(weft_barrier_parties(&b), 3);
  ck_assert_int_eq(weft_barrier_n_waiting(&b), 0);
  struct bar_wait w[2];
  pthread_t t[2];
  spawn_waiters(&b, 1, 10, &w[0], &t[0]);
  ck_assert(wait_n_waiting(&b, 1, 10));
  spawn_waiters(&b, 1, 10, &w[1], &t[1]);
  ck_assert(wait_n_waiting(&b, 2, 10));
  ck_assert_int_eq(weft_barrier_parties(&b), 3);
  /* The last to arrive gets parties-1; the others their arrival order. */
  ck_assert_int_eq(weft_barrier_wait(&b, 10), 2);
  join_waiters(2, t);
  ck_assert_int_eq(w[0].rc, 0);
  ck_assert_int_eq(w[1].rc, 1);
  ck_assert_int_eq(weft_barrier_n_waiting(&b), 0);
  ck_assert(!weft_barrier_broken(&b));
}
END_TEST

/* A thread waiting when reset() is called gets BrokenBarrierError in
 * Python, however late it runs again. The waiter is a child process kept
 * stopped while two threads use the reset barrier. */
static int barrier_wait_child(void *arg) {
  int rc = weft_barrier_wait(arg, 20);
  return rc == WEFT_EBROKEN ? 0 : rc >= 0 ? 20 + rc : 50;
}

START_TEST(barrier_reset_breaks_a_stopped_waiter) {
  weft_barrier *b = shared(sizeof *b);
  ck_assert_int_eq(weft_barrier_init(b, 2), 0);
  weft_process p = start_process(barrier_wait_child, b);
  pid_t pid = weft_process_pid(p);
  ck_assert(wait_n_waiting(b, 1, 10));
  bool stopped = stop_process(pid, 5);
  int reset_rc = weft_barrier_reset(b);
  struct bar_wait w[2];
  pthread_t t[2];
  spawn_waiters(b, 2, 10, w, t);
  /* Give the new cycle a chance to complete while the child is stopped (a
   * Python-like barrier may also hold it until the child has left). */
  double end = test_now() + 0.5;
  while ((ld(&w[0].done) == 0 || ld(&w[1].done) == 0) && test_now() < end) nap(0.002);
  kill(pid, SIGCONT);
  int code = finish_process(p, 10);
  join_waiters(2, t);
  weft_shared_free(b);
  ck_assert(stopped);
  ck_assert_int_eq(reset_rc, 0);
  check_indexes(w, 2);
  ck_assert_msg(code == 0,
                "the waiter present at reset() returned %s (exit code %d) instead of WEFT_EBROKEN",
                code >= 20 && code < 50 ? "an index as if its cycle had completed" : "otherwise",
                code);
}
END_TEST

/* ========================================== between processes (shared) */

struct proc_counter {
  weft_lock lock;
  weft_barrier start;
  long counter;
  int iters;
};

static int count_in_child(void *arg) {
  struct proc_counter *x = arg;
  if (weft_barrier_wait(&x->start, 20) < 0) return 2;
  for (int i = 0; i < x->iters; i++) {
    if (weft_lock_acquire(&x->lock, WEFT_FOREVER) != 0) return 1;
    x->counter++;
    if (weft_lock_release(&x->lock) != 0) return 3;
  }
  return 0;
}

START_TEST(process_lock_exact_total) {
  struct proc_counter *x = shared(sizeof *x);
  ck_assert_int_eq(weft_lock_init(&x->lock, .name = "counter"), 0);
  ck_assert_int_eq(weft_barrier_init(&x->start, 2), 0);
  x->iters = 100000 / SLOW;
  weft_process a = start_process(count_in_child, x);
  weft_process b = start_process(count_in_child, x);
  ck_assert_int_eq(finish_process(a, 40), 0);
  ck_assert_int_eq(finish_process(b, 40), 0);
  ck_assert_int_eq(x->counter, 2L * x->iters);
  ck_assert(!weft_lock_locked(&x->lock));
  ck_assert_int_eq(weft_shared_free(x), 0);
}
END_TEST

struct proc_sem {
  weft_semaphore ping, pong, bulk, bounded;
  int rounds;
};

static int sem_in_child(void *arg) {
  struct proc_sem *x = arg;
  for (int i = 0; i < x->rounds; i++) {
    if (weft_semaphore_acquire(&x->ping, 10) != 0) return 1;
    if (weft_semaphore_release(&x->pong, 1) != 0) return 2;
  }
  for (int i = 0; i < 5; i++)
    if (weft_semaphore_acquire(&x->bulk, 10) != 0) return 3;
  if (weft_semaphore_release(&x->bounded, 1) != WEFT_EOVERFLOW) return 4;
  if (weft_semaphore_acquire(&x->bounded, 0) != 0) return 5;
  return 0;
}

START_TEST(process_semaphore) {
  struct proc_sem *x = shared(sizeof *x);
  ck_assert_int_eq(weft_semaphore_init(&x->ping, 0), 0);
  ck_assert_int_eq(weft_semaphore_init(&x->pong, 0), 0);
  ck_assert_int_eq(weft_semaphore_init(&x->bulk, 0), 0);
  ck_assert_int_eq(weft_semaphore_init(&x->bounded, 1, .bounded = true), 0);
  x->rounds = 2000 / SLOW;
  weft_process p = start_process(sem_in_child, x);
  for (int i = 0; i < x->rounds; i++) {
    ck_assert_int_eq(weft_semaphore_release(&x->ping, 1), 0);
    ck_assert_int_eq(weft_semaphore_acquire(&x->pong, 10), 0);
  }
  ck_assert_int_eq(weft_semaphore_release(&x->bulk, 5), 0); /* one release(5) wakes it 5 times */
  ck_assert_int_eq(finish_process(p, 20), 0);
  ck_assert_int_eq(weft_semaphore_value(&x->ping), 0);
  ck_assert_int_eq(weft_semaphore_value(&x->pong), 0);
  ck_assert_int_eq(weft_semaphore_value(&x->bulk), 0);
  ck_assert_int_eq(weft_semaphore_value(&x->bounded), 0); /* the child's acquire shows here */
  ck_assert_int_eq(weft_semaphore_release(&x->bounded, 1), 0);
  ck_assert_int_eq(weft_semaphore_release(&x->bounded, 1), WEFT_EOVERFLOW);
  weft_shared_free(x);
}
END_TEST

struct proc_event {
  weft_event go, never;
  weft_semaphore done;
};

static int event_in_child(void *arg) {
  struct proc_event *x = arg;
  if (weft_event_wait(&x->go, 10) != 0) return 1;
  if (weft_event_wait(&x->never, 0.05) != WEFT_ETIMEDOUT) return 2;
  if (!weft_event_is_set(&x->go)) return 3;
  weft_semaphore_release(&x->done, 1);
  return 0;
}

START_TEST(process_event) {
  enum { CHILDREN = 3 };
  struct proc_event *x = shared(sizeof *x);
  weft_event_init(&x->go);
  weft_event_init(&x->never);
  ck_assert_int_eq(weft_semaphore_init(&x->done, 0), 0);
  weft_process p[CHILDREN];
  for (int i = 0; i < CHILDREN; i++) p[i] = start_process(event_in_child, x);
  /* All three block in wait (the struct counts them), then one set. */
  double end = test_now() + 10;
  while (__atomic_load_n(&x->go.waiters, __ATOMIC_ACQUIRE) != CHILDREN) {
    ck_assert(test_now() < end);
    nap(0.001);
  }
  ck_assert_int_eq(weft_event_set(&x->go), 0);
  for (int i = 0; i < CHILDREN; i++) ck_assert_int_eq(weft_semaphore_acquire(&x->done, 10), 0);
  for (int i = 0; i < CHILDREN; i++) ck_assert_int_eq(finish_process(p[i], 10), 0);
  ck_assert(!weft_event_is_set(&x->never));
  weft_shared_free(x);
}
END_TEST

struct proc_cond {
  weft_lock lock;
  weft_cond cond;
  int turn;
  int rounds;
};

static bool childs_turn(void *arg) { return ((struct proc_cond *)arg)->turn == 1; }
static bool parents_turn(void *arg) { return ((struct proc_cond *)arg)->turn == 0; }

static int cond_in_child(void *arg) {
  struct proc_cond *x = arg;
  if (weft_cond_notify(&x->cond, 1) != WEFT_EPERM) return 3; /* not held yet */
  if (weft_lock_acquire(&x->lock, 10) != 0) return 4;
  int code = 0;
  for (int i = 0; i < x->rounds && code == 0; i++) {
    if (weft_cond_wait_for(&x->cond, childs_turn, x, 10) != 1) code = 1;
    x->turn = 0;
    if (weft_cond_notify(&x->cond, 1) != 0) code = 2;
  }
  weft_lock_release(&x->lock);
  return code;
}

START_TEST(process_condition_over_lock) {
  struct proc_cond *x = shared(sizeof *x);
  ck_assert_int_eq(weft_lock_init(&x->lock), 0);
  ck_assert_int_eq(weft_cond_init(&x->cond, .lock = &x->lock), 0);
  x->rounds = 2000 / SLOW;
  x->turn = 0;
  weft_process p = start_process(cond_in_child, x);
  ck_assert_int_eq(weft_lock_acquire(&x->lock, 10), 0);
  int bad = 0;
  /* Stop at the first failure: a child that gave up leaves every later
   * wait to run into its timeout. */
  for (int i = 0; i < x->rounds && bad == 0; i++) {
    if (weft_cond_wait_for(&x->cond, parents_turn, x, 10) != 1) bad++;
    x->turn = 1;
    if (weft_cond_notify(&x->cond, 1) != 0) bad++;
  }
  if (bad == 0 && weft_cond_wait_for(&x->cond, parents_turn, x, 10) != 1) bad++;
  ck_assert_int_eq(weft_lock_release(&x->lock), 0);
  ck_assert_int_eq(finish_process(p, 20), 0);
  ck_assert_int_eq(bad, 0);
  ck_assert_int_eq(x->turn, 0);
  weft_shared_free(x);
}
END_TEST

enum { PB_PROCS = 3, PB_CYCLES = 300 };

struct proc_bar {
  weft_barrier b;
  int cycles;
  int seen[PB_CYCLES][PB_PROCS];
  int action_pid[PB_CYCLES];
  int action_runs;
};

static int proc_bar_action(void *arg) {
  struct proc_bar *x = arg;
  int k = ld(&x->action_runs);
  if (k < PB_CYCLES) st(&x->action_pid[k], (int)getpid());
  st(&x->action_runs, k + 1);
  return 0;
}

static int barrier_in_child(void *arg) {
  struct proc_bar *x = arg;
  for (int c = 0; c < x->cycles; c++) {
    if (ld(&x->action_runs) != c) return 1;
    int idx = weft_barrier_wait(&x->b, 20);
    if (idx < 0 || idx >= PB_PROCS) return 2;
    inc(&x->seen[c][idx]);
    if (ld(&x->action_runs) != c + 1) return 3;
    if (idx == PB_PROCS - 1 && ld(&x->action_pid[c]) != (int)getpid()) return 4;
  }
  return 0;
}

START_TEST(process_barrier) {
  struct proc_bar *x = shared(sizeof *x);
  x->cycles = PB_CYCLES / SLOW;
  ck_assert_int_eq(weft_barrier_init(&x->b, PB_PROCS, .action = proc_bar_action, .arg = x), 0);
  weft_process p[PB_PROCS];
  for (int i = 0; i < PB_PROCS; i++) p[i] = start_process(barrier_in_child, x);
  for (int i = 0; i < PB_PROCS; i++) ck_assert_int_eq(finish_process(p[i], 30), 0);
  ck_assert_int_eq(x->action_runs, x->cycles);
  for (int c = 0; c < x->cycles; c++)
    for (int i = 0; i < PB_PROCS; i++) ck_assert_int_eq(x->seen[c][i], 1);
  ck_assert(!weft_barrier_broken(&x->b));
  weft_shared_free(x);
}
END_TEST

/* A free Lock is taken by a non-blocking acquire, as Python's
 * acquire(blocking=False) takes an unlocked lock ("0: only if free now").
 * The only other party is a waiter that has waited long enough to ask for
 * fairness and then cannot run: a child process that is stopped (phase 1)
 * or was killed while waiting (phase 2). locked() is false and a blocking
 * acquire would not wait, so acquire(0) must not fail either. */
struct starve {
  weft_lock lock;
  int waiting;
};

static int wait_for_lock_child(void *arg) {
  struct starve *s = arg;
  st(&s->waiting, 1);
  if (weft_lock_acquire(&s->lock, 20) != 0) return 1;
  weft_lock_release(&s->lock);
  return 0;
}

/* Holds the lock while a child queues up on it for a while. */
static weft_process queue_a_waiter(struct starve *s) {
  st(&s->waiting, 0);
  ck_assert_int_eq(weft_lock_acquire(&s->lock, WEFT_FOREVER), 0);
  weft_process p = start_process(wait_for_lock_child, s);
  ck_assert(wait_ge(&s->waiting, 1, 10));
  nap(0.2); /* long enough to count as a starving waiter; no outcome depends on it */
  return p;
}

START_TEST(lock_free_is_taken_by_nonblocking_acquire) {
  struct starve *s = shared(sizeof *s);
  ck_assert_int_eq(weft_lock_init(&s->lock), 0);

  /* Phase 1: the waiter is stopped when the lock is released. */
  weft_process p = queue_a_waiter(s);
  pid_t pid = weft_process_pid(p);
  bool stopped = stop_process(pid, 5);
  int release_rc = weft_lock_release(&s->lock);
  bool locked = weft_lock_locked(&s->lock);
  int try_rc = weft_lock_acquire(&s->lock, 0);
  double t0 = test_now();
  int timed_rc = try_rc == 0 ? 0 : weft_lock_acquire(&s->lock, 5);
  double timed_elapsed = test_now() - t0;
  if (try_rc == 0 || timed_rc == 0) weft_lock_release(&s->lock);
  kill(pid, SIGCONT);
  int code = finish_process(p, 10);

  /* Phase 2: the waiter was killed while it waited. */
  p = queue_a_waiter(s);
  weft_process_kill(p);
  int code2 = finish_process(p, 10);
  int release2_rc = weft_lock_release(&s->lock);
  bool locked2 = weft_lock_locked(&s->lock);
  int tries_failed = 0;
  for (int i = 0; i < 100; i++) {
    if (weft_lock_acquire(&s->lock, 0) != 0) {
      tries_failed++;
      continue;
    }
    weft_lock_release(&s->lock);
  }
  weft_shared_free(s);

  ck_assert(stopped);
  ck_assert_int_eq(release_rc, 0);
  ck_assert(!locked);
  ck_assert_int_eq(code, 0);
  ck_assert_int_eq(code2, -SIGKILL);
  ck_assert_int_eq(release2_rc, 0);
  ck_assert(!locked2);
  ck_assert_msg(try_rc == 0 && tries_failed == 0,
                "acquire(0) of a free lock: with a stopped waiter returned %d (a blocking acquire "
                "then took %.3f s, rc %d); after a waiter died %d of 100 tries failed",
                try_rc, timed_elapsed, timed_rc, tries_failed);
}
END_TEST

/* ========================================================= owner death */

struct dead {
  weft_lock a, b;
  weft_rlock r;
  weft_event held, die;
};

static struct dead *new_dead(void) {
  struct dead *d = shared(sizeof *d);
  weft_lock_init(&d->a, .name = "a");
  weft_lock_init(&d->b, .name = "b");
  weft_rlock_init(&d->r);
  weft_event_init(&d->held);
  weft_event_init(&d->die);
  return d;
}

static int die_holding_sigkill(void *arg) {
  struct dead *d = arg;
  if (weft_lock_acquire(&d->a, 10) != 0 || weft_lock_acquire(&d->b, 10) != 0) return 1;
  if (weft_rlock_acquire(&d->r, 10) != 0 || weft_rlock_acquire(&d->r, 10) != 0) return 2;
  weft_event_set(&d->held);
  kill(getpid(), SIGKILL);
  return 3;
}

START_TEST(owner_death_by_sigkill_gives_eownerdead) {
  struct dead *d = new_dead();
  weft_process p = start_process(die_holding_sigkill, d);
  ck_assert_int_eq(weft_event_wait(&d->held, 10), 0);
  /* The holder is dead (or dying) and not reaped yet. */
  double t0 = test_now();
  int rc = weft_lock_acquire(&d->a, WEFT_FOREVER);
  double elapsed = test_now() - t0;
  ck_assert_int_eq(rc, WEFT_EOWNERDEAD);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EOWNERDEAD);
  ck_assert_double_lt(elapsed, 2.0);
  ck_assert(weft_lock_locked(&d->a)); /* and we hold it now */
  ck_assert_int_eq(weft_lock_acquire(&d->a, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_lock_release(&d->a), 0);
  ck_assert(!weft_lock_locked(&d->a));
  ck_assert_int_eq(weft_lock_acquire(&d->a, 0), 0);
  ck_assert_int_eq(weft_lock_release(&d->a), 0);
  ck_assert_int_eq(weft_lock_acquire(&d->a, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_release(&d->a), 0);

  /* An RLock: the new owner has one level, whatever the dead one had. */
  t0 = test_now();
  ck_assert_int_eq(weft_rlock_acquire(&d->r, 5), WEFT_EOWNERDEAD);
  ck_assert_double_lt(test_now() - t0, 2.0);
  ck_assert(weft_rlock_is_owned(&d->r));
  ck_assert_int_eq(weft_rlock_release(&d->r), 0);
  ck_assert(!weft_lock_locked(&d->r.lock));
  ck_assert_int_eq(weft_rlock_release(&d->r), WEFT_EPERM);
  ck_assert_int_eq(weft_rlock_acquire(&d->r, 0), 0);
  ck_assert_int_eq(weft_rlock_release(&d->r), 0);

  /* Once reaped the pid is gone altogether: still detected. */
  ck_assert_int_eq(finish_process(p, 10), -SIGKILL);
  t0 = test_now();
  ck_assert_int_eq(weft_lock_acquire(&d->b, 5), WEFT_EOWNERDEAD);
  ck_assert_double_lt(test_now() - t0, 2.0);
  ck_assert_int_eq(weft_lock_release(&d->b), 0);
  ck_assert_int_eq(weft_lock_acquire(&d->b, 0), 0);
  ck_assert_int_eq(weft_lock_release(&d->b), 0);
  weft_shared_free(d);
}
END_TEST

static int die_holding_exit(void *arg) {
  struct dead *d = arg;
  if (weft_lock_acquire(&d->a, 10) != 0) return 1;
  weft_event_set(&d->held);
  if (weft_event_wait(&d->die, 20) != 0) return 2;
  _exit(7);
}

START_TEST(owner_death_by_exit_wakes_blocked_waiters) {
  struct dead *d = new_dead();
  weft_process p = start_process(die_holding_exit, d);
  ck_assert_int_eq(weft_event_wait(&d->held, 10), 0);
  /* Two threads block on the lock while its holder is alive. */
  struct lock_try t[2] = {{.lock = &d->a, .timeout = WEFT_FOREVER, .rc = 1},
                          {.lock = &d->a, .timeout = WEFT_FOREVER, .rc = 1}};
  pthread_t th[2] = {spawn(try_acquire, &t[0]), spawn(try_acquire, &t[1])};
  ck_assert_int_eq(weft_lock_acquire(&d->a, 0.1), WEFT_ETIMEDOUT); /* holder alive: wait */
  ck_assert_int_eq(weft_event_set(&d->die), 0);
  double t0 = test_now();
  double end = t0 + 10;
  while (ld(&t[0].done) + ld(&t[1].done) == 0 && test_now() < end) nap(0.001);
  double elapsed = test_now() - t0;
  int first = ld(&t[0].done) ? 0 : 1, second = 1 - first;
  ck_assert_int_eq(ld(&t[first].done), 1);
  ck_assert_double_lt(elapsed, 2.0);
  ck_assert_int_eq(t[first].rc, WEFT_EOWNERDEAD);
  /* The other waiter waits for the new holder, which ended holding it;
   * any thread may release a Lock. */
  nap(0.05);
  ck_assert_int_eq(ld(&t[second].done), 0);
  ck_assert(weft_lock_locked(&d->a));
  ck_assert_int_eq(weft_lock_release(&d->a), 0);
  join(th[0]);
  join(th[1]);
  ck_assert_int_eq(t[second].rc, 0);
  ck_assert_int_eq(weft_lock_release(&d->a), 0);
  ck_assert_int_eq(weft_lock_acquire(&d->a, 0), 0);
  ck_assert_int_eq(weft_lock_release(&d->a), 0);
  ck_assert_int_eq(finish_process(p, 10), 7);
  weft_shared_free(d);
}
END_TEST

/* A Condition's wait gives the lock back on return; a child that took it
 * in the meantime, notified and died holding it makes that re-acquire the
 * one that finds the owner dead, and the wait says so. The child is forked
 * before the lock is taken: a child forked while its parent's thread holds
 * an RLock holds it too, as in Python. */
struct dead_cond {
  weft_lock lock;
  weft_cond on_lock, on_rlock; /* the second over its own RLock */
  weft_event go;
  int which; /* 0: on_lock, 1: on_rlock */
};

static int notify_and_die_holding(void *arg) {
  struct dead_cond *d = arg;
  weft_cond *c = d->which == 0 ? &d->on_lock : &d->on_rlock;
  if (weft_event_wait(&d->go, 10) != 0) return 1;
  if (weft_cond_acquire(c, 10) != 0) return 2; /* once the parent waits */
  if (weft_cond_notify(c, 1) != 0) return 3;
  kill(getpid(), SIGKILL);
  return 4;
}

START_TEST(cond_wait_reacquiring_from_a_dead_owner_gives_eownerdead) {
  struct dead_cond *d = shared(sizeof *d);
  weft_lock_init(&d->lock, .name = "guard");
  weft_cond_init(&d->on_lock, .lock = &d->lock);
  weft_cond_init(&d->on_rlock);
  for (int which = 0; which < 2; which++) {
    d->which = which;
    weft_event_init(&d->go);
    weft_cond *c = which == 0 ? &d->on_lock : &d->on_rlock;
    weft_process p = start_process(notify_and_die_holding, d);
    ck_assert_int_eq(weft_cond_acquire(c, 10), 0);
    ck_assert_int_eq(weft_event_set(&d->go), 0);
    double t0 = test_now();
    int rc = weft_cond_wait(c, 10);
    char why[256];
    snprintf(why, sizeof why, "%s", weft_last_error());
    if (rc != WEFT_EOWNERDEAD) {
      int code = finish_process(p, 10);
      ck_abort_msg("condition %d: wait gave %d: %s (the child ended with %d)", which, rc, why,
                   code);
    }
    ck_assert_double_lt(test_now() - t0, 5.0);
    ck_assert_ptr_nonnull(strstr(why, "died"));
    /* Held again, once: released once, it is free. */
    ck_assert_int_eq(weft_cond_release(c), 0);
    ck_assert_int_eq(weft_cond_acquire(c, 0), 0);
    ck_assert_int_eq(weft_cond_release(c), 0);
    ck_assert_int_eq(finish_process(p, 10), -SIGKILL);
  }
  weft_shared_free(d);
}
END_TEST

/* ========================================================= fork safety */

static void *child_thread_work(void *arg) {
  int *value = arg;
  weft_lock l;
  weft_lock_init(&l);
  if (weft_lock_acquire(&l, 5) == 0) {
    __atomic_add_fetch(value, 1, __ATOMIC_ACQ_REL);
    weft_lock_release(&l);
  }
  return arg;
}

/* A child that uses weft but not the lock a parent thread holds. */
static int use_weft_after_fork(void *arg) {
  (void)arg;
  weft_process me = weft_current_process();
  if (me.id == 0 || weft_process_name(me) == NULL) return 10;
  char buf[WEFT_PROCESS_REPR_MAX];
  if (weft_process_repr(me, buf, sizeof buf) == NULL) return 11;
  weft_lock l;
  weft_lock_init(&l);
  if (weft_lock_acquire(&l, 5) != 0) return 12;
  if (weft_lock_acquire(&l, 0) != WEFT_ETIMEDOUT) return 13;
  if (weft_lock_release(&l) != 0) return 14;
  weft_rlock r;
  weft_rlock_init(&r);
  if (weft_rlock_acquire(&r, 5) != 0 || weft_rlock_acquire(&r, 5) != 0) return 15;
  if (weft_rlock_release(&r) != 0 || weft_rlock_release(&r) != 0) return 16;
  int value = 0;
  for (int i = 0; i < 3; i++) {
    weft_thread t = weft_thread_new(child_thread_work, .arg = &value);
    if (t.id == 0) return 17;
    if (weft_thread_start(t) != 0) return 18;
    void *res = NULL;
    if (weft_thread_join(t, 10, &res) != 0) return 19;
    if (res != &value) return 20;
    weft_thread_close(t);
  }
  if (__atomic_load_n(&value, __ATOMIC_ACQUIRE) != 3) return 21;
  weft_event e;
  weft_event_init(&e);
  weft_event_set(&e);
  if (weft_event_wait(&e, 1) != 0) return 22;
  if (weft_thread_name(weft_current_thread()) == NULL) return 23;
  return 0;
}

static void *start_process_from_thread(void *arg) {
  int *code = arg;
  weft_process p = weft_process_new(use_weft_after_fork);
  if (p.id == 0 || weft_process_start(p) != 0) {
    *code = -2000;
    return NULL;
  }
  *code = finish_process(p, 15);
  return NULL;
}

START_TEST(fork_while_a_thread_holds_a_lock) {
  weft_lock l = WEFT_LOCK_INIT;
  struct holder h = {.lock = &l};
  weft_thread ht = weft_thread_new(hold_until_told, .arg = &h);
  ck_assert_uint_ne(ht.id, 0);
  ck_assert_int_eq(weft_thread_start(ht), 0);
  ck_assert_int_eq(weft_event_wait(&h.held, 10), 0);
  ck_assert(weft_lock_locked(&l));
  /* Forked by the main thread... */
  weft_process p = start_process(use_weft_after_fork, NULL);
  int code_main = finish_process(p, 15);
  /* ...and by another thread (weft's forker thread does it then). */
  int code_thread = -1;
  join(spawn(start_process_from_thread, &code_thread));
  weft_event_set(&h.go);
  ck_assert_int_eq(weft_thread_join(ht, 10, NULL), 0);
  weft_thread_close(ht);
  ck_assert_msg(code_main == 0, "child forked by main: exit code %d (1000: hung)", code_main);
  ck_assert_msg(code_thread == 0, "child forked from a thread: exit code %d (1000: hung)",
                code_thread);
  ck_assert_int_eq(h.rc, 0);
  ck_assert(!weft_lock_locked(&l));
}
END_TEST

struct churn {
  int stop;
  weft_lock lock;
  weft_rlock r;
  weft_cond cond;
  weft_semaphore sem;
  long n;
};

#ifndef WEFT_SANITIZE_ADDRESS
static void *noop_thread(void *arg) { return arg; }
#endif

/* Keeps weft's locks, conditions and thread machinery busy. */
static void *churn_weft(void *arg) {
  struct churn *c = arg;
  while (!ld(&c->stop)) {
    weft_lock_acquire(&c->lock, WEFT_FOREVER);
    c->n++;
    weft_lock_release(&c->lock);
    weft_rlock_acquire(&c->r, WEFT_FOREVER);
    weft_rlock_acquire(&c->r, WEFT_FOREVER);
    weft_rlock_release(&c->r);
    weft_rlock_release(&c->r);
    weft_cond_acquire(&c->cond, WEFT_FOREVER);
    weft_cond_notify_all(&c->cond);
    weft_cond_wait(&c->cond, 0.0005);
    weft_cond_release(&c->cond);
    weft_semaphore_acquire(&c->sem, WEFT_FOREVER);
    weft_semaphore_release(&c->sem, 1);
#ifndef WEFT_SANITIZE_ADDRESS
    /* Not under ASan: its allocator does not guard its own locks across
     * fork, so a child forked while this thread is in malloc can hang in
     * ASan itself (seen: a child's thread blocked in ASan's allocator). */
    weft_thread t = weft_thread_new(noop_thread);
    if (t.id != 0) {
      if (weft_thread_start(t) == 0) weft_thread_join(t, 10, NULL);
      weft_thread_close(t);
    }
#endif
  }
  return NULL;
}

static long read_counter(struct churn *c) {
  weft_lock_acquire(&c->lock, WEFT_FOREVER);
  long n = c->n;
  weft_lock_release(&c->lock);
  return n;
}

START_TEST(fork_while_threads_use_weft_sync) {
  enum { CHURNERS = 2 };
  const int children = 20 / (SLOW > 2 ? 4 : 1);
  struct churn c = {.lock = WEFT_LOCK_INIT, .r = WEFT_RLOCK_INIT, .cond = WEFT_COND_INIT,
                    .sem = WEFT_SEMAPHORE_INIT(1)};
  pthread_t t[CHURNERS];
  for (int i = 0; i < CHURNERS; i++) t[i] = spawn(churn_weft, &c);
  /* Forks start once both churners are past their first rounds (which,
   * under ASan, also keeps their one-time allocations away from a fork). */
  double end = test_now() + 10;
  while (read_counter(&c) < 200 && test_now() < end) nap(0.001);
  int failures = 0, last_bad = 0;
  for (int i = 0; i < children; i++) {
    weft_process p = start_process(use_weft_after_fork, NULL);
    int code = finish_process(p, 10);
    if (code != 0) {
      failures++;
      last_bad = code;
    }
  }
  st(&c.stop, 1);
  for (int i = 0; i < CHURNERS; i++) join(t[i]);
  ck_assert_msg(failures == 0, "%d of %d children failed (last exit code %d; 1000: hung)",
                failures, children, last_bad);
  ck_assert_int_gt(c.n, 0);
}
END_TEST

/* A Lock held when the process forks is held in the child too (Python
 * copies it); any thread of the child may release it. */
static int inherited_lock_child(void *arg) {
  weft_lock *l = arg;
  if (!weft_lock_locked(l)) return 1;
  if (weft_lock_acquire(l, 0) != WEFT_ETIMEDOUT) return 2;
  if (weft_lock_release(l) != 0) return 3;
  if (weft_lock_acquire(l, 1) != 0) return 4;
  if (weft_lock_release(l) != 0) return 5;
  return 0;
}

START_TEST(lock_held_at_fork_is_held_in_child) {
  weft_lock l = WEFT_LOCK_INIT;
  ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
  weft_process p = start_process(inherited_lock_child, &l);
  ck_assert_int_eq(finish_process(p, 10), 0);
  ck_assert(weft_lock_locked(&l)); /* the parent's copy is untouched */
  ck_assert_int_eq(weft_lock_release(&l), 0);
}
END_TEST

/* Python: an RLock owned by the thread that forks is owned, with its
 * count, by the child's (only) thread -- the same thread, with the same
 * ident -- so the child can release it and take it again. The same holds in
 * a grandchild forked by that thread in turn. */
static int inherited_rlock_checks(weft_rlock *r) {
  if (!weft_rlock_is_owned(r)) return 1;
  if (weft_rlock_release(r) != 0) return 2;
  if (weft_rlock_release(r) != 0) return 3;
  if (weft_lock_locked(&r->lock)) return 4;
  if (weft_rlock_acquire(r, 1) != 0) return 5;
  if (weft_rlock_release(r) != 0) return 6;
  return 0;
}

static int inherited_rlock_grandchild(void *arg) { return inherited_rlock_checks(arg); }

static int inherited_rlock_child(void *arg) {
  weft_rlock *r = arg;
  if (!weft_rlock_is_owned(r)) return 1;
  weft_process g = weft_process_new(inherited_rlock_grandchild, .arg = r);
  if (g.id == 0 || weft_process_start(g) != 0) return 30;
  int gcode = finish_process(g, 10);
  if (gcode != 0) return 10 + (gcode >= 0 && gcode <= 6 ? gcode : 9);
  return inherited_rlock_checks(r);
}

/* A lock in shared memory that the parent's forking thread takes *after*
 * the fork is the parent's, not the child's (the child continues that
 * thread only up to the fork). Before the fix the child's main thread took
 * such an RLock "recursively" while the parent held it. */
struct after_fork_locks {
  weft_lock lock;
  weft_rlock rlock;
  weft_cond cond;
  weft_event parent_holds, child_done;
};

static int locks_taken_after_fork_child(void *arg) {
  struct after_fork_locks *x = arg;
  if (weft_event_wait(&x->parent_holds, 10) != 0) return 1;
  int code = 0;
  if (weft_rlock_is_owned(&x->rlock)) code = 2;
  else if (weft_rlock_acquire(&x->rlock, 0) != WEFT_ETIMEDOUT) code = 3;
  else if (weft_rlock_release(&x->rlock) != WEFT_EPERM) code = 4;
  else if (weft_cond_notify(&x->cond, 1) != WEFT_EPERM) code = 5;
  else if (weft_lock_acquire(&x->lock, 0) != WEFT_ETIMEDOUT) code = 6;
  weft_event_set(&x->child_done);
  return code;
}

START_TEST(shared_locks_taken_after_fork_are_not_the_childs) {
  for (int round = 0; round < 20 / SLOW + 1; round++) {
    struct after_fork_locks *x = shared(sizeof *x);
    ck_assert_int_eq(weft_lock_init(&x->lock), 0);
    ck_assert_int_eq(weft_rlock_init(&x->rlock), 0);
    ck_assert_int_eq(weft_cond_init(&x->cond, .lock = &x->lock), 0);
    ck_assert_int_eq(weft_event_init(&x->parent_holds), 0);
    ck_assert_int_eq(weft_event_init(&x->child_done), 0);
    weft_process p = start_process(locks_taken_after_fork_child, x);
    ck_assert_int_eq(weft_rlock_acquire(&x->rlock, 10), 0);
    ck_assert_int_eq(weft_lock_acquire(&x->lock, 10), 0);
    weft_event_set(&x->parent_holds);
    int done = weft_event_wait(&x->child_done, 10);
    /* Still the parent's, whatever the child tried. */
    ck_assert(weft_rlock_is_owned(&x->rlock));
    ck_assert_int_eq(weft_rlock_release(&x->rlock), 0);
    ck_assert_int_eq(weft_lock_release(&x->lock), 0);
    ck_assert_int_eq(done, 0);
    ck_assert_int_eq(finish_process(p, 10), 0);
    weft_shared_free(x);
  }
}
END_TEST

static int exit_zero_child(void *arg) {
  (void)arg;
  return 0;
}

/* The parent keeps owning, after forking, an RLock it took before. */
START_TEST(rlock_taken_before_fork_stays_the_parents) {
  weft_rlock r;
  ck_assert_int_eq(weft_rlock_init(&r), 0);
  ck_assert_int_eq(weft_rlock_acquire(&r, 10), 0);
  weft_process p = start_process(exit_zero_child, NULL);
  ck_assert(weft_rlock_is_owned(&r));
  ck_assert_int_eq(weft_rlock_acquire(&r, 0), 0);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert(!weft_rlock_is_owned(&r));
  ck_assert_int_eq(finish_process(p, 10), 0);
}
END_TEST

START_TEST(rlock_owned_by_forking_thread_is_owned_in_child) {
  weft_rlock r = WEFT_RLOCK_INIT;
  ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
  weft_process p = start_process(inherited_rlock_child, &r);
  int code = finish_process(p, 20);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert_int_eq(weft_rlock_release(&r), 0);
  ck_assert_msg(code == 0,
                "exit code %d: 1-6 failed step in the child (1: not owned, 2-3: release "
                "refused), 11-16 the same step in the grandchild, 1000: hung",
                code);
}
END_TEST

/* ======================================================= shared memory */

static int write_shared(void *arg) {
  int *p = arg;
  p[0] = 42;
  p[1023] = 7;
  return 0;
}

START_TEST(shared_alloc_rules) {
  ck_assert_ptr_null(weft_shared_alloc(0));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_eq(weft_shared_free(NULL), 0);
  ck_assert_ptr_null(weft_shared_alloc(SIZE_MAX));
  ck_assert(weft_last_error_code() == WEFT_EINVAL || weft_last_error_code() == WEFT_ENOMEM);
  static const size_t sizes[] = {1, 63, 64, 65, 4096, 100000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    unsigned char *m = weft_shared_alloc(sizes[i]);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq((uintptr_t)m % 64, 0);
    for (size_t k = 0; k < sizes[i]; k++) ck_assert_uint_eq(m[k], 0);
    memset(m, 0xab, sizes[i]);
    ck_assert_int_eq(weft_shared_free(m), 0);
  }
  /* A child's writes are seen by the parent. */
  int *p = weft_shared_alloc(1024 * sizeof(int));
  ck_assert_ptr_nonnull(p);
  weft_process c = start_process(write_shared, p);
  ck_assert_int_eq(finish_process(c, 10), 0);
  ck_assert_int_eq(p[0], 42);
  ck_assert_int_eq(p[1023], 7);
  ck_assert_int_eq(weft_shared_free(p), 0);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("sync");

  TCase *tc = weft_tcase("lock", 30);
  tcase_add_test(tc, lock_acquire_release);
  tcase_add_test(tc, lock_nonblocking_on_held_lock_times_out);
  tcase_add_test(tc, lock_timed_acquire_times_out);
  tcase_add_test(tc, lock_release_unlocked_is_eperm);
  tcase_add_test(tc, lock_release_from_another_thread);
  tcase_add_test(tc, lock_nan_timeout_is_einval);
  tcase_add_test(tc, lock_init_names_and_static_initialisers);
  tcase_add_test(tc, lock_contention_exact_total);
  tcase_add_test(tc, lock_handoff_loses_no_wakeup);
  tcase_add_test(tc, lock_waiter_gets_lock_from_a_looping_holder);
  tcase_add_test(tc, lock_waiter_gets_lock_when_a_loop_ends);
  tcase_add_test(tc, lock_free_is_taken_by_nonblocking_acquire);
  suite_add_tcase(s, tc);

  tc = weft_tcase("rlock", 30);
  tcase_add_test(tc, rlock_counts_recursion);
  tcase_add_test(tc, rlock_release_by_non_owner_is_eperm);
  tcase_add_test(tc, rlock_contention_exact_total);
  suite_add_tcase(s, tc);

  tc = weft_tcase("condition", 30);
  tcase_add_test(tc, cond_default_uses_own_rlock);
  tcase_add_test(tc, cond_over_lock);
  tcase_add_test(tc, cond_over_rlock_held_twice);
  tcase_add_test(tc, cond_without_lock_is_eperm);
  tcase_add_test(tc, cond_wait_times_out);
  tcase_add_test(tc, cond_notify_n_wakes_exactly_n);
  tcase_add_test(tc, cond_wait_for_returns_predicate_value);
  tcase_add_test(tc, cond_producer_consumer);
  tcase_add_test(tc, cond_ping_pong_one_condition);
  tcase_add_test(tc, cond_notify_is_not_taken_by_a_later_waiter);
  suite_add_tcase(s, tc);

  tc = weft_tcase("semaphore", 30);
  tcase_add_test(tc, semaphore_init_and_value);
  tcase_add_test(tc, semaphore_acquire_release_counts);
  tcase_add_test(tc, semaphore_release_n_wakes_n);
  tcase_add_test(tc, semaphore_contention);
  tcase_add_test(tc, bounded_semaphore_refuses_over_release);
  tcase_add_test(tc, bounded_semaphore_of_zero_refuses_release);
  suite_add_tcase(s, tc);

  tc = weft_tcase("event", 30);
  tcase_add_test(tc, event_set_clear_wait);
  tcase_add_test(tc, event_set_releases_all_waiters);
  tcase_add_test(tc, event_set_then_clear_still_wakes_current_waiter);
  suite_add_tcase(s, tc);

  tc = weft_tcase("barrier", 30);
  tcase_add_test(tc, barrier_rejects_bad_parties);
  tcase_add_test(tc, barrier_indexes_and_action_each_cycle);
  tcase_add_test(tc, barrier_failing_action_breaks_it);
  tcase_add_test(tc, barrier_timeout_breaks_it_for_everyone);
  tcase_add_test(tc, barrier_abort_breaks_waiters);
  tcase_add_test(tc, barrier_reset_releases_waiters_and_reuses);
  tcase_add_test(tc, barrier_n_waiting_and_parties);
  tcase_add_test(tc, barrier_reset_breaks_a_stopped_waiter);
  suite_add_tcase(s, tc);

  tc = weft_tcase("processes", 60);
  tcase_add_test(tc, process_lock_exact_total);
  tcase_add_test(tc, process_semaphore);
  tcase_add_test(tc, process_event);
  tcase_add_test(tc, process_condition_over_lock);
  tcase_add_test(tc, process_barrier);
  suite_add_tcase(s, tc);

  tc = weft_tcase("owner_death", 20);
  tcase_add_test(tc, owner_death_by_sigkill_gives_eownerdead);
  tcase_add_test(tc, owner_death_by_exit_wakes_blocked_waiters);
  tcase_add_test(tc, cond_wait_reacquiring_from_a_dead_owner_gives_eownerdead);
  suite_add_tcase(s, tc);

  tc = weft_tcase("fork_safety", 60);
  tcase_add_test(tc, fork_while_a_thread_holds_a_lock);
  tcase_add_test(tc, fork_while_threads_use_weft_sync);
  tcase_add_test(tc, lock_held_at_fork_is_held_in_child);
  tcase_add_test(tc, rlock_owned_by_forking_thread_is_owned_in_child);
  tcase_add_test(tc, shared_locks_taken_after_fork_are_not_the_childs);
  tcase_add_test(tc, rlock_taken_before_fork_stays_the_parents);
  suite_add_tcase(s, tc);

  tc = weft_tcase("shared", 20);
  tcase_add_test(tc, shared_alloc_rules);
  suite_add_tcase(s, tc);
  return s;
}
