/* SPDX-License-Identifier: MIT */
/* Tests of weft/pool.h: thread pools and futures (Python's
 * ThreadPoolExecutor and Future).
 *
 * Conventions (as in test_sync.c): tasks and callbacks never call
 * ck_assert; they record what they saw in variables the test thread
 * asserts on. Where a test needs workers busy, its tasks wait on an event
 * the test sets (with a timeout, so a bug cannot hang the suite). */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define P(v) ((void *)(intptr_t)(v))
#define V(p) ((intptr_t)(p))
#define GATE_S 20.0 /* a gated task gives up after this: the test has failed by then */

#define CHECK(cond, ...)                    \
  do {                                      \
    if (!(cond)) ck_abort_msg(__VA_ARGS__); \
  } while (0)

/* ---- tasks ---- */

static int square(void *arg, void **result) {
  *result = P(V(arg) * V(arg));
  return 0;
}

static int fail_with(void *arg, void **result) {
  (void)result;
  return (int)V(arg);
}

static weft_event gate = WEFT_EVENT_INIT;
static int started; /* gated tasks that began */

/* Counts itself as started, then waits for the gate; returns its arg. */
static int gated(void *arg, void **result) {
  inc(&started);
  if (weft_event_wait(&gate, GATE_S) != 0) return 99;
  *result = arg;
  return 0;
}

#define MAX_SEEN 256
static char seen_names[MAX_SEEN][WEFT_NAME_MAX + 1];
static int nseen;

/* Records the name of the worker running it, then waits for the gate if
 * arg is non-zero. */
static int record_name(void *arg, void **result) {
  (void)result;
  int i = inc(&nseen) - 1;
  if (i < MAX_SEEN) {
    const char *name = weft_thread_name(weft_current_thread());
    snprintf(seen_names[i], sizeof seen_names[i], "%s", name ? name : "?");
  }
  if (arg != NULL) {
    inc(&started);
    if (weft_event_wait(&gate, GATE_S) != 0) return 99;
  }
  return 0;
}

static int distinct_names(int n) {
  int distinct = 0;
  for (int i = 0; i < n; i++) {
    bool dup = false;
    for (int j = 0; j < i; j++) dup = dup || strcmp(seen_names[i], seen_names[j]) == 0;
    distinct += !dup;
  }
  return distinct;
}

static void finish_pool(weft_pool pool) {
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_join(pool, 30), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
}

/* ---- results ---- */

START_TEST(results_exact_for_many_tasks) {
  long n = 100000 / SLOW;
  weft_pool pool = weft_thread_pool_new(.workers = 4);
  ck_assert_uint_ne(pool.id, 0);
  weft_future *fs = malloc((size_t)n * sizeof *fs);
  ck_assert_ptr_nonnull(fs);
  for (long i = 0; i < n; i++) {
    fs[i] = weft_pool_submit(pool, square, P(i));
    CHECK(fs[i].id != 0, "submit %ld failed: %s", i, weft_last_error());
  }
  for (long i = 0; i < n; i++) {
    void *r = NULL;
    int err = weft_future_result(fs[i], 30, &r);
    CHECK(err == 0 && V(r) == i * i, "task %ld: err %d result %ld", i, err, (long)V(r));
    CHECK(weft_future_close(fs[i]) == 0, "close %ld", i);
  }
  free(fs);
  finish_pool(pool);
}
END_TEST

START_TEST(task_failure_keeps_its_code) {
  weft_pool pool = weft_thread_pool_new(.workers = 2);
  weft_future bad = weft_pool_submit(pool, fail_with, P(42));
  weft_future good = weft_pool_submit(pool, square, P(3));
  void *r = P(1234);
  ck_assert_int_eq(weft_future_result(bad, 10, &r), WEFT_ETASKFAILED);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ETASKFAILED);
  ck_assert_ptr_eq(r, P(1234)); /* untouched on failure */
  ck_assert_int_eq(weft_future_task_error(bad), 42);
  ck_assert(weft_future_done(bad));
  ck_assert(!weft_future_cancelled(bad));
  ck_assert_int_eq(weft_future_result(good, 10, NULL), 0); /* result may be NULL */
  ck_assert_int_eq(weft_future_task_error(good), 0);
  weft_future_close(bad);
  weft_future_close(good);
  finish_pool(pool);
}
END_TEST

/* ---- cancel and states ---- */

START_TEST(cancel_pending_but_not_running_or_done) {
  weft_pool pool = weft_thread_pool_new(.workers = 1);
  weft_future running = weft_pool_submit(pool, gated, P(7));
  ck_assert(wait_ge(&started, 1, 10));
  weft_future pending = weft_pool_submit(pool, square, P(2));
  ck_assert(weft_future_running(running));
  ck_assert(!weft_future_done(running));
  ck_assert(!weft_future_running(pending));
  ck_assert(!weft_future_done(pending));
  ck_assert(!weft_future_cancelled(pending));
  ck_assert_int_eq(weft_future_result(pending, 0.05, NULL), WEFT_ETIMEDOUT);

  ck_assert_int_eq(weft_future_cancel(pending), 0);
  ck_assert_int_eq(weft_future_cancel(pending), 0); /* again: still 0 */
  ck_assert(weft_future_cancelled(pending));
  ck_assert(weft_future_done(pending));
  ck_assert_int_eq(weft_future_result(pending, 0, NULL), WEFT_ECANCELED);
  ck_assert_int_eq(weft_future_cancel(running), WEFT_EBUSY);

  weft_event_set(&gate);
  void *r = NULL;
  ck_assert_int_eq(weft_future_result(running, 10, &r), 0);
  ck_assert_ptr_eq(r, P(7));
  ck_assert(weft_future_done(running));
  ck_assert(!weft_future_running(running));
  ck_assert_int_eq(weft_future_cancel(running), WEFT_EBUSY);
  ck_assert(!weft_future_cancelled(running));
  weft_future_close(running);
  weft_future_close(pending);
  finish_pool(pool);
}
END_TEST

/* Closing the handle of a pending or running future drops its outcome;
 * the task still runs and nothing leaks (ASan checks the latter). */
START_TEST(close_future_while_pending_or_running) {
  weft_pool pool = weft_thread_pool_new(.workers = 1);
  weft_future running = weft_pool_submit(pool, gated, P(1));
  ck_assert(wait_ge(&started, 1, 10));
  weft_future pending = weft_pool_submit(pool, gated, P(2));
  ck_assert_int_eq(weft_future_close(running), 0);
  ck_assert_int_eq(weft_future_close(pending), 0);
  weft_event_set(&gate);
  finish_pool(pool);
  ck_assert_int_eq(ld(&started), 2);
}
END_TEST

/* ---- callbacks ---- */

static int cb_calls, cb_saw_done;
static pthread_t cb_thread;
static uint64_t cb_future;

static void on_done(weft_future f, void *arg) {
  (void)arg;
  if (weft_future_done(f)) inc(&cb_saw_done);
  cb_thread = pthread_self();
  __atomic_store_n(&cb_future, f.id, __ATOMIC_RELEASE);
  inc(&cb_calls);
}

START_TEST(callbacks_run_once_after_done) {
  weft_pool pool = weft_thread_pool_new(.workers = 1);
  weft_future f = weft_pool_submit(pool, gated, P(5));
  ck_assert_int_eq(weft_future_add_done_callback(f, on_done, NULL), 0);
  ck_assert_int_eq(weft_future_add_done_callback(f, NULL, NULL), WEFT_EINVAL);
  ck_assert(wait_ge(&started, 1, 10));
  ck_assert_int_eq(ld(&cb_calls), 0);
  weft_event_set(&gate);
  ck_assert_int_eq(weft_future_result(f, 10, NULL), 0);
  ck_assert(wait_ge(&cb_calls, 1, 10));
  ck_assert_int_eq(ld(&cb_saw_done), 1);
  ck_assert_uint_eq(__atomic_load_n(&cb_future, __ATOMIC_ACQUIRE), f.id);
  ck_assert(!pthread_equal(cb_thread, pthread_self())); /* ran in the worker */
  finish_pool(pool); /* the worker is gone: the count is final */
  ck_assert_int_eq(ld(&cb_calls), 1);

  /* Added late: runs at once, in the caller. */
  ck_assert_int_eq(weft_future_add_done_callback(f, on_done, NULL), 0);
  ck_assert_int_eq(ld(&cb_calls), 2);
  ck_assert_int_eq(ld(&cb_saw_done), 2);
  ck_assert(pthread_equal(cb_thread, pthread_self()));
  weft_future_close(f);
}
END_TEST

START_TEST(callback_of_cancel_runs_in_canceller) {
  weft_pool pool = weft_thread_pool_new(.workers = 1);
  weft_future running = weft_pool_submit(pool, gated, P(1));
  ck_assert(wait_ge(&started, 1, 10));
  weft_future pending = weft_pool_submit(pool, square, P(1));
  ck_assert_int_eq(weft_future_add_done_callback(pending, on_done, NULL), 0);
  ck_assert_int_eq(weft_future_cancel(pending), 0);
  ck_assert_int_eq(ld(&cb_calls), 1);
  ck_assert_int_eq(ld(&cb_saw_done), 1);
  ck_assert(pthread_equal(cb_thread, pthread_self()));
  weft_event_set(&gate);
  finish_pool(pool);
  ck_assert_int_eq(ld(&cb_calls), 1); /* the worker did not run it again */
  weft_future_close(running);
  weft_future_close(pending);
}
END_TEST

/* ---- weft_futures_wait ---- */

static weft_event gates[2] = {WEFT_EVENT_INIT, WEFT_EVENT_INIT};

static int gated_on(void *arg, void **result) {
  (void)result;
  inc(&started);
  return weft_event_wait(&gates[V(arg)], GATE_S) == 0 ? 0 : 99;
}

START_TEST(futures_wait_all_and_first) {
  weft_pool pool = weft_thread_pool_new(.workers = 2);
  weft_future fs[2] = {weft_pool_submit(pool, gated_on, P(0)),
                       weft_pool_submit(pool, gated_on, P(1))};
  double t0 = test_now();
  ck_assert_int_eq(weft_futures_wait(fs, 2, true, 0.05), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_futures_wait(fs, 2, false, 0.05), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_futures_wait(fs, 2, false, 0), WEFT_ETIMEDOUT);
  ck_assert(test_now() - t0 >= 0.09);
  weft_event_set(&gates[1]);
  ck_assert_int_eq(weft_futures_wait(fs, 2, false, 10), 0);
  ck_assert(weft_future_done(fs[1]));
  ck_assert_int_eq(weft_futures_wait(fs, 2, true, 0.05), WEFT_ETIMEDOUT);
  weft_event_set(&gates[0]);
  ck_assert_int_eq(weft_futures_wait(fs, 2, true, 10), 0);
  ck_assert(weft_future_done(fs[0]));
  ck_assert_int_eq(weft_futures_wait(fs, 2, true, 0), 0);
  ck_assert_int_eq(weft_futures_wait(fs, 0, true, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_futures_wait(NULL, 2, true, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_futures_wait(fs, 2, true, NAN), WEFT_EINVAL);
  weft_future_close(fs[0]);
  ck_assert_int_eq(weft_futures_wait(fs, 2, false, 1), WEFT_ECLOSED);
  weft_future_close(fs[1]);
  finish_pool(pool);
}
END_TEST

/* A waiter blocked in weft_futures_wait forever is woken by a completion
 * in another thread. */
static weft_future blocked_fs[1];
static int blocked_rc = 1, blocked_back;

static void *wait_forever(void *arg) {
  (void)arg;
  st(&blocked_rc, weft_futures_wait(blocked_fs, 1, true, WEFT_FOREVER));
  st(&blocked_back, 1);
  return NULL;
}

START_TEST(futures_wait_forever_wakes) {
  weft_pool pool = weft_thread_pool_new(.workers = 1);
  blocked_fs[0] = weft_pool_submit(pool, gated, P(1));
  pthread_t t = spawn(wait_forever, NULL);
  ck_assert(wait_ge(&started, 1, 10));
  weft_event_set(&gate);
  ck_assert(wait_ge(&blocked_back, 1, 10));
  join(t);
  ck_assert_int_eq(ld(&blocked_rc), 0);
  weft_future_close(blocked_fs[0]);
  finish_pool(pool);
}
END_TEST

/* ---- pool life cycle ---- */

START_TEST(close_join_and_closed_handles) {
  weft_pool pool = weft_thread_pool_new();
  weft_future f = weft_pool_submit(pool, square, P(4));
  ck_assert_int_eq(weft_pool_join(pool, 1), WEFT_ERUNNING);
  ck_assert_int_eq(weft_pool_free(pool), WEFT_EBUSY);
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_close(pool), 0); /* twice: harmless */
  weft_future g = weft_pool_submit(pool, square, P(5));
  ck_assert_uint_eq(g.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_free(pool), WEFT_EBUSY); /* closed, not joined */
  ck_assert_int_eq(weft_pool_join(pool, 10), 0);
  ck_assert_int_eq(weft_pool_join(pool, 10), 0);
  void *r = NULL;
  ck_assert_int_eq(weft_future_result(f, 0, &r), 0); /* queued work ran */
  ck_assert_ptr_eq(r, P(16));
  ck_assert_int_eq(weft_pool_free(pool), 0);

  ck_assert_int_eq(weft_pool_free(pool), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_close(pool), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_join(pool, 1), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_terminate(pool), WEFT_ECLOSED);
  ck_assert_uint_eq(weft_pool_submit(pool, square, NULL).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);

  ck_assert_int_eq(weft_future_close(f), 0);
  ck_assert_int_eq(weft_future_close(f), WEFT_ECLOSED);
  ck_assert_int_eq(weft_future_result(f, 1, NULL), WEFT_ECLOSED);
  ck_assert_int_eq(weft_future_cancel(f), WEFT_ECLOSED);
  ck_assert_int_eq(weft_future_task_error(f), WEFT_ECLOSED);
  ck_assert_int_eq(weft_future_add_done_callback(f, on_done, NULL), WEFT_ECLOSED);
  ck_assert(!weft_future_done(f));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  ck_assert(!weft_future_running(f));
  ck_assert(!weft_future_cancelled(f));
  weft_future zero = {0};
  ck_assert_int_eq(weft_future_result(zero, 0, NULL), WEFT_ECLOSED);
}
END_TEST

START_TEST(terminate_cancels_pending) {
  weft_pool pool = weft_thread_pool_new(.workers = 1);
  weft_future running = weft_pool_submit(pool, gated, P(1));
  ck_assert(wait_ge(&started, 1, 10));
  weft_future pending[5];
  for (int i = 0; i < 5; i++) pending[i] = weft_pool_submit(pool, square, P(i));
  ck_assert_int_eq(weft_future_add_done_callback(pending[0], on_done, NULL), 0);
  ck_assert_int_eq(weft_pool_terminate(pool), 0);
  ck_assert_int_eq(weft_pool_terminate(pool), WEFT_EALREADY);
  ck_assert_int_eq(weft_pool_close(pool), 0); /* after terminate: harmless */
  ck_assert_uint_eq(weft_pool_submit(pool, square, NULL).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  for (int i = 0; i < 5; i++) {
    ck_assert(weft_future_cancelled(pending[i]));
    ck_assert_int_eq(weft_future_result(pending[i], 0, NULL), WEFT_ECANCELED);
  }
  ck_assert_int_eq(ld(&cb_calls), 1);
  ck_assert(weft_future_running(running)); /* running tasks finish */
  ck_assert_int_eq(weft_pool_join(pool, 0.05), WEFT_ETIMEDOUT);
  weft_event_set(&gate);
  ck_assert_int_eq(weft_pool_join(pool, 10), 0);
  void *r = NULL;
  ck_assert_int_eq(weft_future_result(running, 0, &r), 0);
  ck_assert_ptr_eq(r, P(1));
  ck_assert_int_eq(weft_pool_free(pool), 0);
  weft_future_close(running);
  for (int i = 0; i < 5; i++) weft_future_close(pending[i]);
}
END_TEST

static weft_pool self_pool;
static int self_join_rc = 1;

static int join_self(void *arg, void **result) {
  (void)arg;
  (void)result;
  weft_pool_close(self_pool);
  st(&self_join_rc, weft_pool_join(self_pool, 1));
  return 0;
}

START_TEST(join_from_worker_deadlocks) {
  self_pool = weft_thread_pool_new(.workers = 2);
  weft_future f = weft_pool_submit(self_pool, join_self, NULL);
  ck_assert_int_eq(weft_future_result(f, 10, NULL), 0);
  ck_assert_int_eq(ld(&self_join_rc), WEFT_EDEADLK);
  ck_assert_int_eq(weft_pool_join(self_pool, 10), 0);
  ck_assert_int_eq(weft_pool_free(self_pool), 0);
  weft_future_close(f);
}
END_TEST

START_TEST(bad_arguments) {
  weft_pool bad = weft_thread_pool_new(.workers = -1);
  ck_assert_uint_eq(bad.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  bad = weft_thread_pool_new(.workers = 0); /* Python's ValueError for max_workers=0 */
  ck_assert_uint_eq(bad.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  bad = weft_thread_pool_new(.maxtasksperchild = -1);
  ck_assert_uint_eq(bad.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  char longname[WEFT_NAME_MAX + 8];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  ck_assert_uint_eq(weft_thread_pool_new(.name = longname).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);

  weft_pool pool = weft_thread_pool_new(.workers = 1);
  ck_assert_uint_eq(weft_pool_submit(pool, NULL, NULL).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  weft_future f = weft_pool_submit(pool, square, P(2));
  ck_assert_int_eq(weft_future_result(f, NAN, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_future_result(f, 10, NULL), 0);
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_join(pool, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_join(pool, 10), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
  weft_future_close(f);
}
END_TEST

/* ---- workers ---- */

START_TEST(default_workers_is_cpu_count) {
  int n = weft_cpu_count();
  ck_assert_int_ge(n, 1);
  if (n > MAX_SEEN - 1) n = MAX_SEEN - 1;
  weft_pool pool = weft_thread_pool_new(.name = "crew");
  ck_assert_int_eq(weft_active_count(), 1); /* lazy: nothing started yet */
  weft_future fs[MAX_SEEN];
  for (int i = 0; i < n; i++) fs[i] = weft_pool_submit(pool, record_name, P(1));
  ck_assert(wait_ge(&started, n, 20));
  ck_assert_int_eq(weft_active_count(), 1 + n);
  ck_assert_int_eq(distinct_names(n), n);
  /* One more task waits for a worker instead of starting a thread. */
  fs[n] = weft_pool_submit(pool, record_name, NULL);
  ck_assert_int_eq(weft_active_count(), 1 + n);
  ck_assert(!weft_future_running(fs[n]));
  for (int i = 0; i < n; i++) {
    char want[32];
    snprintf(want, sizeof want, "crew_%d", i);
    bool found = false;
    for (int j = 0; j < n; j++) found = found || strcmp(seen_names[j], want) == 0;
    ck_assert_msg(found, "no worker named %s", want);
  }
  weft_event_set(&gate);
  for (int i = 0; i <= n; i++) {
    ck_assert_int_eq(weft_future_result(fs[i], 10, NULL), 0);
    weft_future_close(fs[i]);
  }
  finish_pool(pool);
  ck_assert_int_eq(weft_active_count(), 1);
}
END_TEST

START_TEST(lazy_start_and_default_names) {
  weft_pool idle = weft_thread_pool_new(.workers = 4);
  weft_pool used = weft_thread_pool_new(.workers = 4);
  ck_assert_int_eq(weft_active_count(), 1);
  weft_future f = weft_pool_submit(used, record_name, NULL);
  ck_assert_int_eq(weft_future_result(f, 10, NULL), 0);
  ck_assert_int_eq(weft_active_count(), 2); /* one task, one worker */
  ck_assert_int_eq(ld(&nseen), 1);
  /* Pools are numbered as they are made: the second is ThreadPool-<K+1>. */
  unsigned k;
  ck_assert_int_eq(sscanf(seen_names[0], "ThreadPool-%u_0", &k), 1);
  char want[32];
  snprintf(want, sizeof want, "ThreadPool-%u_0", k);
  ck_assert_str_eq(seen_names[0], want);
  ck_assert_uint_ge(k, 1);
  weft_future_close(f);
  finish_pool(idle);
  finish_pool(used);
  ck_assert_int_eq(weft_active_count(), 1);
}
END_TEST

START_TEST(maxtasksperchild_replaces_workers) {
  weft_pool pool = weft_thread_pool_new(.workers = 1, .maxtasksperchild = 2, .name = "short");
  weft_future fs[10];
  for (int i = 0; i < 10; i++) fs[i] = weft_pool_submit(pool, record_name, NULL);
  for (int i = 0; i < 10; i++) {
    ck_assert_int_eq(weft_future_result(fs[i], 10, NULL), 0);
    weft_future_close(fs[i]);
  }
  finish_pool(pool);
  ck_assert_int_eq(ld(&nseen), 10);
  ck_assert_int_eq(distinct_names(10), 5);
  for (int i = 0; i < 10; i++) {
    char want[32];
    snprintf(want, sizeof want, "short_%d", i / 2);
    ck_assert_str_eq(seen_names[i], want);
  }
  ck_assert_int_eq(weft_active_count(), 1);
}
END_TEST

static int init_calls;

/* Fails (arg < 0) only once the gate opens, so that every submit made
 * before lands in the queue rather than meeting a broken pool. */
static int init_fails(void *arg) {
  inc(&init_calls);
  if (V(arg) < 0 && weft_event_wait(&gate, GATE_S) != 0) return -2;
  return (int)V(arg);
}

START_TEST(failing_initializer_breaks_pool) {
  weft_pool pool = weft_thread_pool_new(.workers = 1, .initializer = init_fails, .initarg = P(-1));
  weft_future fs[4];
  for (int i = 0; i < 4; i++) {
    fs[i] = weft_pool_submit(pool, square, P(i));
    ck_assert_uint_ne(fs[i].id, 0);
  }
  ck_assert(wait_ge(&init_calls, 1, 10));
  weft_event_set(&gate);
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(weft_future_result(fs[i], 10, NULL), WEFT_EBROKEN);
    ck_assert(weft_future_done(fs[i]));
    weft_future_close(fs[i]);
  }
  ck_assert_uint_eq(weft_pool_submit(pool, square, NULL).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EBROKEN);
  ck_assert_int_eq(ld(&init_calls), 1);
  finish_pool(pool);
}
END_TEST

START_TEST(initializer_runs_once_per_worker) {
  weft_pool pool = weft_thread_pool_new(.workers = 2, .initializer = init_fails, .initarg = P(0));
  weft_future fs[2];
  for (int i = 0; i < 2; i++) fs[i] = weft_pool_submit(pool, gated, P(i));
  ck_assert(wait_ge(&started, 2, 10));
  weft_event_set(&gate);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(weft_future_result(fs[i], 10, NULL), 0);
    weft_future_close(fs[i]);
  }
  finish_pool(pool);
  ck_assert_int_eq(ld(&init_calls), 2);
}
END_TEST

START_TEST(no_fd_or_thread_leak) {
  int fds = count_fds();
  for (int round = 0; round < 3; round++) {
    weft_pool pool = weft_thread_pool_new(.workers = 3, .maxtasksperchild = 5);
    weft_future fs[50];
    for (int i = 0; i < 50; i++) fs[i] = weft_pool_submit(pool, square, P(i));
    for (int i = 0; i < 50; i++) {
      ck_assert_int_eq(weft_future_result(fs[i], 10, NULL), 0);
      weft_future_close(fs[i]);
    }
    finish_pool(pool);
    ck_assert_int_eq(weft_active_count(), 1);
  }
  ck_assert_int_eq(count_fds(), fds);
}
END_TEST

/* A process that exits without closing its pool still runs the queued
 * tasks: the workers are non-daemon and joined at exit. */
static int set_flag(void *arg, void **result) {
  (void)result;
  weft_sleep(0.05);
  __atomic_store_n((int *)arg, 1, __ATOMIC_RELEASE);
  return 0;
}

START_TEST(exit_waits_for_queued_work) {
  int *flag = mmap(NULL, sizeof *flag, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(flag, MAP_FAILED);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    weft_pool pool = weft_thread_pool_new(.workers = 1);
    weft_pool_submit(pool, set_flag, flag);
    weft_pool_submit(pool, set_flag, flag);
    exit(0);
  }
  ck_assert(wait_pid_gone(pid, 20));
  int status = wait_status(pid);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ck_assert_int_eq(ld(flag), 1);
  munmap(flag, sizeof *flag);
}
END_TEST

/* A forked child has none of the parent's workers: its copies of the
 * parent's pool and futures refuse every call instead of accepting tasks
 * that never run (or waiting for ever), even while a parent thread is
 * busy in the pool at the fork. */
struct forked_use {
  weft_pool pool;
  weft_future done_future;
};

static int use_parents_pool(void *arg) {
  struct forked_use *u = arg;
  weft_future f = weft_pool_submit(u->pool, square, (void *)3);
  if (f.id != 0 || weft_last_error_code() != WEFT_EPERM) return 1;
  void *r;
  if (weft_future_result(u->done_future, 1, &r) != WEFT_EPERM) return 2;
  if (weft_pool_close(u->pool) != WEFT_EPERM) return 3;
  /* The child's own pool works. */
  weft_pool mine = weft_thread_pool_new(.workers = 1);
  weft_future g = weft_pool_submit(mine, square, (void *)5);
  if (weft_future_result(g, 10, &r) != 0 || (intptr_t)r != 25) return 4;
  weft_future_close(g);
  weft_pool_close(mine);
  if (weft_pool_join(mine, 10) != 0 || weft_pool_free(mine) != 0) return 5;
  return 0;
}

START_TEST(forked_child_cannot_use_the_parents_pool) {
  struct forked_use u = {.pool = weft_thread_pool_new(.workers = 2)};
  ck_assert_uint_ne(u.pool.id, 0);
  /* Both workers running before any fork: a thread being created holds
   * allocator locks (ASan's are not fork-safe), and this test is about the
   * pool's locks, not the allocator's. */
  weft_event_clear(&gate);
  st(&started, 0);
  weft_future warm[2] = {weft_pool_submit(u.pool, gated, (void *)1),
                         weft_pool_submit(u.pool, gated, (void *)1)};
  ck_assert(wait_ge(&started, 2, 10));
  weft_event_set(&gate);
  void *r;
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(weft_future_result(warm[i], 10, &r), 0);
    weft_future_close(warm[i]);
  }
  u.done_future = weft_pool_submit(u.pool, square, (void *)2);
  ck_assert_int_eq(weft_future_result(u.done_future, 10, &r), 0);
  for (int round = 0; round < 20 / SLOW + 2; round++) {
    /* Keep the pool busy from another thread while forking. */
    weft_future busy[16];
    for (int i = 0; i < 16; i++) busy[i] = weft_pool_submit(u.pool, square, (void *)(intptr_t)i);
    weft_process p = weft_process_new(use_parents_pool, .arg = &u);
    ck_assert_int_eq(weft_process_start(p), 0);
    ck_assert_int_eq(finish_process(p, 20), 0);
    for (int i = 0; i < 16; i++) {
      ck_assert_int_eq(weft_future_result(busy[i], 10, &r), 0);
      ck_assert_int_eq((intptr_t)r, i * i);
      weft_future_close(busy[i]);
    }
  }
  weft_future_close(u.done_future);
  ck_assert_int_eq(weft_pool_close(u.pool), 0);
  ck_assert_int_eq(weft_pool_join(u.pool, 10), 0);
  ck_assert_int_eq(weft_pool_free(u.pool), 0);
}
END_TEST

/* ---- a submit wakes one idle worker, not all of them ---- */

#define MANY 32

struct crowd {
  int arrived;
  pid_t tids[MANY];
};

static int arrive_and_hold(void *arg, void **result) {
  struct crowd *c = arg;
  int i = inc(&c->arrived) - 1;
  if (i < MANY) c->tids[i] = gettid();
  wait_ge(&c->arrived, MANY, GATE_S); /* every worker busy at once: all started */
  *result = NULL;
  return 0;
}

static int all_at_once(void *arg, void **result) {
  struct crowd *c = arg;
  inc(&c->arrived);
  *result = NULL;
  return wait_ge(&c->arrived, MANY, GATE_S) ? 0 : 1;
}

static long voluntary_switches(pid_t tid) {
  char path[64], line[128];
  snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  long n = -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1) break;
  fclose(f);
  return n;
}

/* Waits until every worker sleeps; returns their voluntary context
 * switches, added up: one more for each time one of them went to sleep. */
static long settled_switches(const struct crowd *c) {
  double until = test_now() + GATE_S;
  for (int i = 0; i < MANY; i++)
    while (thread_state(c->tids[i]) != 'S') {
      CHECK(test_now() < until, "worker %d never went back to sleep", (int)c->tids[i]);
      nap_ms(1);
    }
  long sum = 0;
  for (int i = 0; i < MANY; i++) sum += voluntary_switches(c->tids[i]);
  return sum;
}

/* Counts wake-ups, not time: with 32 idle workers, each one-task round
 * must put about one of them to sleep again (the one that ran it), where
 * waking them all would put 32 back to sleep. */
START_TEST(a_submit_wakes_one_idle_worker) {
  weft_pool pool = weft_thread_pool_new(.workers = MANY);
  static struct crowd c;
  memset(&c, 0, sizeof c);
  weft_future fs[MANY];
  for (int i = 0; i < MANY; i++) fs[i] = weft_pool_submit(pool, arrive_and_hold, &c);
  for (int i = 0; i < MANY; i++) {
    ck_assert_int_eq(weft_future_result(fs[i], GATE_S, NULL), 0);
    weft_future_close(fs[i]);
  }
  ck_assert_int_eq(ld(&c.arrived), MANY);
  const int rounds = 20;
  long woken = 0;
  for (int r = 0; r < rounds; r++) {
    long before = settled_switches(&c);
    weft_future f = weft_pool_submit(pool, square, P(r + 1));
    void *out = NULL;
    ck_assert_int_eq(weft_future_result(f, GATE_S, &out), 0);
    ck_assert_ptr_eq(out, P((r + 1) * (r + 1)));
    weft_future_close(f);
    woken += settled_switches(&c) - before;
  }
  ck_assert_msg(woken <= 3 * rounds, "%ld workers went back to sleep in %d one-task rounds",
                woken, rounds);
  /* Woken one at a time, they still all run at once when the tasks block:
   * each one below waits for every other to have started. */
  settled_switches(&c);
  st(&c.arrived, 0);
  for (int i = 0; i < MANY; i++) fs[i] = weft_pool_submit(pool, all_at_once, &c);
  for (int i = 0; i < MANY; i++) {
    ck_assert_int_eq(weft_future_result(fs[i], 2 * GATE_S, NULL), 0);
    weft_future_close(fs[i]);
  }
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_join(pool, GATE_S), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("pool");
  TCase *tc = weft_tcase("futures", 60);
  tcase_add_test(tc, results_exact_for_many_tasks);
  tcase_add_test(tc, task_failure_keeps_its_code);
  tcase_add_test(tc, cancel_pending_but_not_running_or_done);
  tcase_add_test(tc, close_future_while_pending_or_running);
  tcase_add_test(tc, callbacks_run_once_after_done);
  tcase_add_test(tc, callback_of_cancel_runs_in_canceller);
  tcase_add_test(tc, futures_wait_all_and_first);
  tcase_add_test(tc, futures_wait_forever_wakes);
  suite_add_tcase(s, tc);

  tc = weft_tcase("pools", 60);
  tcase_add_test(tc, close_join_and_closed_handles);
  tcase_add_test(tc, terminate_cancels_pending);
  tcase_add_test(tc, join_from_worker_deadlocks);
  tcase_add_test(tc, bad_arguments);
  tcase_add_test(tc, default_workers_is_cpu_count);
  tcase_add_test(tc, lazy_start_and_default_names);
  tcase_add_test(tc, maxtasksperchild_replaces_workers);
  tcase_add_test(tc, failing_initializer_breaks_pool);
  tcase_add_test(tc, initializer_runs_once_per_worker);
  tcase_add_test(tc, no_fd_or_thread_leak);
  tcase_add_test(tc, forked_child_cannot_use_the_parents_pool);
  tcase_add_test(tc, exit_waits_for_queued_work);
  tcase_add_test(tc, a_submit_wakes_one_idle_worker);
  suite_add_tcase(s, tc);
  return s;
}
