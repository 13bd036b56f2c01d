/* SPDX-License-Identifier: MIT */
/* Tests of the primitives allocated in shared memory (weft_lock_new and
 * the others, Python's multiprocessing.Lock() ...): each works between a
 * parent and the children it forks afterwards, the frees refuse a second
 * free, bad arguments are refused, and a Lock left in private memory and
 * waited on in a child is reported instead of hanging silently. */
#define _GNU_SOURCE
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Everything a child needs, in one shared block. */
struct env {
  weft_lock *lock;
  weft_rlock *rlock;
  weft_cond *cond;
  weft_semaphore *sem;
  weft_event *event;
  weft_barrier *barrier;
  int step;     /* the child's progress */
  int counter;  /* changed under the lock by both processes */
  int ready;    /* a condition's predicate */
  char report[2048];
  int reports;
  int report_claims; /* who writes report */
};

static struct env *new_env(void) {
  struct env *e = shared(sizeof *e);
  e->lock = weft_lock_new(.name = "shared-lock");
  e->rlock = weft_rlock_new();
  e->cond = weft_cond_new(.lock = e->lock);
  e->sem = weft_semaphore_new(0);
  e->event = weft_event_new();
  e->barrier = weft_barrier_new(2);
  ck_assert(e->lock && e->rlock && e->cond && e->sem && e->event && e->barrier);
  return e;
}

static void free_env(struct env *e) {
  ck_assert_int_eq(weft_barrier_free(e->barrier), 0);
  ck_assert_int_eq(weft_event_free(e->event), 0);
  ck_assert_int_eq(weft_semaphore_free(e->sem), 0);
  ck_assert_int_eq(weft_cond_free(e->cond), 0);
  ck_assert_int_eq(weft_rlock_free(e->rlock), 0);
  ck_assert_int_eq(weft_lock_free(e->lock), 0);
  weft_shared_free(e);
}

#define ROUNDS (20000 / SLOW)

static int child_uses_all(void *arg) {
  struct env *e = arg;
  for (int i = 0; i < ROUNDS; i++) {
    if (weft_lock_acquire(e->lock, 10) != 0) return 1;
    e->counter++;
    weft_lock_release(e->lock);
  }
  if (weft_rlock_acquire(e->rlock, 10) != 0 || weft_rlock_acquire(e->rlock, 0) != 0) return 2;
  weft_rlock_release(e->rlock);
  weft_rlock_release(e->rlock);
  if (weft_event_wait(e->event, 10) != 0) return 3;
  if (weft_semaphore_release(e->sem, 1) != 0) return 4;
  if (weft_cond_acquire(e->cond, 10) != 0) return 5;
  while (!e->ready)
    if (weft_cond_wait(e->cond, 10) != 0) return 6;
  weft_cond_release(e->cond);
  if (weft_barrier_wait(e->barrier, 10) < 0) return 7;
  return 0;
}

START_TEST(new_primitives_work_across_fork) {
  struct env *e = new_env();
  weft_process p = start_process(child_uses_all, e);
  for (int i = 0; i < ROUNDS; i++) {
    ck_assert_int_eq(weft_lock_acquire(e->lock, 10), 0);
    e->counter++;
    ck_assert_int_eq(weft_lock_release(e->lock), 0);
  }
  ck_assert_int_eq(weft_event_set(e->event), 0);
  ck_assert_int_eq(weft_semaphore_acquire(e->sem, 10), 0);
  ck_assert_int_eq(weft_cond_acquire(e->cond, 10), 0);
  e->ready = 1;
  ck_assert_int_eq(weft_cond_notify_all(e->cond), 0);
  ck_assert_int_eq(weft_cond_release(e->cond), 0);
  ck_assert_int_ge(weft_barrier_wait(e->barrier, 10), 0);
  ck_assert_int_eq(finish_process(p, 20), 0);
  ck_assert_int_eq(e->counter, 2 * ROUNDS);
  free_env(e);
}
END_TEST

START_TEST(new_takes_options_and_refuses_bad_arguments) {
  weft_lock *l = weft_lock_new(.name = "ledger");
  ck_assert_ptr_nonnull(l);
  ck_assert_str_eq(l->name, "ledger");
  ck_assert(!weft_lock_locked(l));
  ck_assert_int_eq(weft_lock_free(l), 0);

  weft_semaphore *b = weft_semaphore_new(1, .bounded = true);
  ck_assert_ptr_nonnull(b);
  ck_assert_int_eq(weft_semaphore_release(b, 1), WEFT_EOVERFLOW);
  ck_assert_int_eq(weft_semaphore_free(b), 0);

  ck_assert_ptr_null(weft_semaphore_new(-1));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "weft_semaphore_new"));
  ck_assert_ptr_null(weft_barrier_new(0));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "weft_barrier_new"));
  weft_lock *lk = weft_lock_new();
  weft_rlock *rk = weft_rlock_new();
  ck_assert_ptr_null(weft_cond_new(.lock = lk, .rlock = rk));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_barrier_new(2, .timeout = NAN));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_eq(weft_rlock_free(rk), 0);
  ck_assert_int_eq(weft_lock_free(lk), 0);
}
END_TEST

START_TEST(frees_refuse_a_second_free) {
  struct env *e = new_env();
  free_env(e);
  /* Every pointer in e is gone now (e itself too: read them first). */
  struct env *again = new_env();
  struct env copy = *again;
  free_env(again);
  ck_assert_int_eq(weft_lock_free(copy.lock), WEFT_ECLOSED);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "weft_lock_free"));
  ck_assert_int_eq(weft_rlock_free(copy.rlock), WEFT_ECLOSED);
  ck_assert_int_eq(weft_cond_free(copy.cond), WEFT_ECLOSED);
  ck_assert_int_eq(weft_semaphore_free(copy.sem), WEFT_ECLOSED);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "weft_semaphore_free"));
  ck_assert_int_eq(weft_event_free(copy.event), WEFT_ECLOSED);
  ck_assert_int_eq(weft_barrier_free(copy.barrier), WEFT_ECLOSED);
  ck_assert_int_eq(weft_shared_free(again), WEFT_ECLOSED);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "weft_shared_free"));
  /* NULL does nothing, as free(NULL) does; memory that never came from
   * weft is refused without being touched. */
  ck_assert_int_eq(weft_lock_free(NULL), 0);
  ck_assert_int_eq(weft_event_free(NULL), 0);
  weft_lock on_stack = WEFT_LOCK_INIT;
  ck_assert_int_eq(weft_lock_free(&on_stack), WEFT_ECLOSED);
  ck_assert_int_eq(weft_shared_free(&on_stack), WEFT_ECLOSED);
  /* and the allocator still works */
  weft_event *ev = weft_event_new();
  ck_assert_ptr_nonnull(ev);
  ck_assert_int_eq(weft_event_free(ev), 0);
}
END_TEST

/* A child frees its own view; the parent's stays usable. */
static int child_frees(void *arg) {
  struct env *e = arg;
  if (weft_lock_free(e->lock) != 0) return 1;
  if (weft_lock_free(e->lock) != WEFT_ECLOSED) return 2;
  return 0;
}

START_TEST(a_child_frees_only_its_own_view) {
  struct env *e = new_env();
  weft_process p = start_process(child_frees, e);
  ck_assert_int_eq(finish_process(p, 10), 0);
  ck_assert_int_eq(weft_lock_acquire(e->lock, 0), 0);
  ck_assert_int_eq(weft_lock_release(e->lock), 0);
  free_env(e);
}
END_TEST

/* ---- a Lock in private memory waited on in a child ---- */

static weft_lock private_lock = WEFT_LOCK_INIT_NAMED("private-global");

/* The text is written before the count is raised: the test kills the
 * reporting child as soon as it sees the count. */
static void record(const char *report, void *arg) {
  struct env *e = arg;
  if (inc(&e->report_claims) == 1) snprintf(e->report, sizeof e->report, "%s", report);
  inc(&e->reports);
}

static int child_waits_private(void *arg) {
  struct env *e = arg;
  weft_deadlock_set_hook(record, e);
  st(&e->step, 1);
  weft_lock_acquire(&private_lock, WEFT_FOREVER); /* never returns: the parent kills it */
  return 9;
}

struct holder {
  weft_event held, release;
};

static void *hold_private_lock(void *arg) {
  struct holder *h = arg;
  weft_lock_acquire(&private_lock, WEFT_FOREVER);
  weft_event_set(&h->held);
  weft_event_wait(&h->release, WEFT_FOREVER);
  weft_lock_release(&private_lock);
  return NULL;
}

/* Another thread of the parent holds the global Lock when the child is
 * forked: the child's copy stays locked by a thread it does not have. */
START_TEST(private_lock_waited_on_in_a_child_is_reported) {
  if (weft_deadlock_get_mode() == WEFT_DEADLOCK_OFF) return;
  struct env *e = shared(sizeof *e);
  struct holder h = {WEFT_EVENT_INIT, WEFT_EVENT_INIT};
  pthread_t t = spawn(hold_private_lock, &h);
  ck_assert_int_eq(weft_event_wait(&h.held, 10), 0);
  weft_process p = start_process(child_waits_private, e);
  ck_assert(wait_ge(&e->reports, 1, 10));
  kill(weft_process_pid(p), SIGKILL);
  ck_assert_int_eq(finish_process(p, 10), -SIGKILL);
  ck_assert_ptr_nonnull(strstr(e->report, "private-global"));
  ck_assert_ptr_nonnull(strstr(e->report, "private"));
  ck_assert_ptr_nonnull(strstr(e->report, "weft_lock_new"));
  weft_event_set(&h.release);
  join(t);
  weft_shared_free(e);
}
END_TEST

static weft_barrier private_barrier;

static int child_waits_private_barrier(void *arg) {
  struct env *e = arg;
  weft_deadlock_set_hook(record, e);
  weft_barrier_wait(&private_barrier, WEFT_FOREVER); /* never returns: the parent kills it */
  return 9;
}

/* A Barrier in an ordinary global: parent and child each wait on their own
 * copy, so neither ever completes it. */
START_TEST(private_barrier_waited_on_in_a_child_is_reported) {
  if (weft_deadlock_get_mode() == WEFT_DEADLOCK_OFF) return;
  struct env *e = shared(sizeof *e);
  ck_assert_int_eq(weft_barrier_init(&private_barrier, 2), 0);
  weft_process p = start_process(child_waits_private_barrier, e);
  ck_assert(wait_ge(&e->reports, 1, 10));
  kill(weft_process_pid(p), SIGKILL);
  ck_assert_int_eq(finish_process(p, 10), -SIGKILL);
  ck_assert_ptr_nonnull(strstr(e->report, "Barrier of 2 parties"));
  ck_assert_ptr_nonnull(strstr(e->report, "weft_barrier_new"));
  weft_shared_free(e);
}
END_TEST

static int child_waits_shared(void *arg) {
  struct env *e = arg;
  weft_deadlock_set_hook(record, e);
  st(&e->step, 1);
  int rc = weft_lock_acquire(e->lock, WEFT_FOREVER);
  if (rc != 0) return 1;
  weft_lock_release(e->lock);
  return e->reports == 0 ? 0 : 2;
}

START_TEST(shared_lock_waited_on_in_a_child_is_not_reported) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_lock_acquire(e->lock, 0), 0);
  weft_process p = start_process(child_waits_shared, e);
  ck_assert(wait_ge(&e->step, 1, 10));
  /* Give the child time to go to sleep on the lock, then let it in. */
  double end = test_now() + 10;
  while (e->lock->waiters == 0 && test_now() < end) nap(0.001);
  ck_assert_uint_eq(e->lock->waiters, 1);
  ck_assert_int_eq(weft_lock_release(e->lock), 0);
  ck_assert_int_eq(finish_process(p, 10), 0);
  ck_assert_int_eq(e->reports, 0);
  free_env(e);
}
END_TEST

/* ---- objects that work inside one process only ---- */

static int child_uses_thread_queue(void *arg) {
  weft_queue *q = arg;
  char want[64];
  snprintf(want, sizeof want, "this process (%d)", (int)getpid());
  if (weft_queue_put(q, NULL, 1) != WEFT_EPERM) return 1;
  if (strstr(weft_last_error(), "weft_queue_put") == NULL) return 2;
  if (strstr(weft_last_error(), want) == NULL) return 3;
  if (strstr(weft_last_error(), "weft_mpqueue") == NULL) return 4;
  void *item;
  if (weft_queue_get(q, &item, 0) != WEFT_EPERM) return 5;
  if (weft_queue_qsize(q) != 0 || weft_last_error_code() != WEFT_EPERM) return 6;
  if (weft_queue_free(q) != 0) return 7; /* its own copy, as any memory */
  return 0;
}

START_TEST(thread_queue_used_in_a_child_is_eperm) {
  weft_queue *q = weft_queue_new(.name = "jobs");
  ck_assert_int_eq(weft_queue_put(q, q, 0), 0);
  weft_process p = start_process(child_uses_thread_queue, q);
  ck_assert_int_eq(finish_process(p, 10), 0);
  void *item = NULL;
  ck_assert_int_eq(weft_queue_get(q, &item, 0), 0); /* the parent's queue is intact */
  ck_assert_ptr_eq(item, q);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

static int square(const void *arg, size_t len, void *result, size_t *result_len) {
  int v;
  if (len != sizeof v) return 1;
  memcpy(&v, arg, sizeof v);
  v *= v;
  memcpy(result, &v, sizeof v);
  *result_len = sizeof v;
  return 0;
}

static bool three_items(void *item, void *arg) {
  int *next = arg;
  if (*next >= 3) return false;
  memcpy(item, next, sizeof *next);
  (*next)++;
  return true;
}

struct iters {
  weft_imap *it;
  weft_as_completed *ac;
};

static int child_uses_iterators(void *arg) {
  struct iters *x = arg;
  int r;
  size_t index;
  weft_future f;
  if (weft_imap_next(x->it, 1, &index, &r) != WEFT_EPERM) return 1;
  if (strstr(weft_last_error(), "weft_imap_next") == NULL) return 2;
  if (weft_as_completed_next(x->ac, 1, &f, &index) != WEFT_EPERM) return 3;
  if (weft_imap_free(x->it) != WEFT_EPERM) return 4;
  if (weft_as_completed_free(x->ac) != WEFT_EPERM) return 5;
  return 0;
}

START_TEST(iterators_used_in_a_child_are_eperm) {
  weft_pool pool = weft_thread_pool_new(.workers = 2);
  int next = 0, two = 2;
  struct iters x;
  x.it = weft_pool_imap(pool, square, three_items, &next, sizeof(int), sizeof(int));
  weft_future fs[1] = {weft_pool_apply_async(pool, square, &two, sizeof two)};
  x.ac = weft_as_completed_new(fs, 1);
  ck_assert(x.it != NULL && x.ac != NULL);
  weft_process p = start_process(child_uses_iterators, &x);
  ck_assert_int_eq(finish_process(p, 10), 0);
  /* The parent's iterators are whole. */
  int r, sum = 0;
  size_t index;
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(weft_imap_next(x.it, 10, &index, &r), 0);
    sum += r;
  }
  ck_assert_int_eq(sum, 0 + 1 + 4);
  weft_future f;
  ck_assert_int_eq(weft_as_completed_next(x.ac, 10, &f, &index), 0);
  ck_assert_int_eq(weft_imap_free(x.it), 0);
  ck_assert_int_eq(weft_as_completed_free(x.ac), 0);
  weft_future_close(fs[0]);
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_join(pool, 10), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("test_shared_sync");
  TCase *tc = weft_tcase("shared_sync", 60);
  tcase_add_test(tc, new_primitives_work_across_fork);
  tcase_add_test(tc, new_takes_options_and_refuses_bad_arguments);
  tcase_add_test(tc, frees_refuse_a_second_free);
  tcase_add_test(tc, a_child_frees_only_its_own_view);
  tcase_add_test(tc, private_lock_waited_on_in_a_child_is_reported);
  tcase_add_test(tc, private_barrier_waited_on_in_a_child_is_reported);
  tcase_add_test(tc, shared_lock_waited_on_in_a_child_is_not_reported);
  tcase_add_test(tc, thread_queue_used_in_a_child_is_eperm);
  tcase_add_test(tc, iterators_used_in_a_child_are_eperm);
  suite_add_tcase(s, tc);
  return s;
}
