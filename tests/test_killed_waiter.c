/* SPDX-License-Identifier: MIT */
/* A woken waiter killed before it runs must strand no other waiter.
 *
 * Each scenario puts two sleepers on a primitive in shared memory: first
 * one in a child process, then a thread of the test's own process. The
 * test's main thread then hands the primitive on (release, notify) and
 * SIGKILLs the child at once. The child runs at SCHED_IDLE on the main
 * thread's CPU, so once woken it cannot run before the kill: the wake-up
 * it was given dies with it, as when a busy machine deschedules a woken
 * process that is then killed. The main thread hands over and kills at
 * SCHED_FIFO where it may, so not even a timer tick lets the child in
 * between. The thread must be served within SERVED_S of the hand-over, in
 * every iteration. Were the child to run anyway and take what was handed
 * on, it records that, and the thread is not owed it that time; at least
 * half the iterations must see the child die without running. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define SERVED_S 0.1
#define ITERATIONS (120 / SLOW)
/* A sleeper that is not served within this bound lost its wake-up. */
#define LOST_S 3.0

struct scene {
  weft_lock lock;
  weft_semaphore sem;
  weft_cond cond;
  int child_took;  /* the child got what was handed on before it died */
  int child_ready; /* the child is about to block */
  int cond_ready;  /* the thread has registered on the condition */
};

struct thread_result {
  struct scene *s;
  int rc;
  double at;    /* when it was served */
  pid_t tid;
};

static int cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return CPU_COUNT(&set);
}

/* Pins the calling thread to the n-th CPU it may run on. */
static void pin(int n) {
  cpu_set_t set, one;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return;
  CPU_ZERO(&one);
  for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE; cpu++) {
    if (!CPU_ISSET(cpu, &set)) continue;
    if (seen++ == n) {
      CPU_SET(cpu, &one);
      sched_setaffinity(0, sizeof one, &one);
      return;
    }
  }
}

static void go_idle_beside_main(void) {
  pin(0);
  struct sched_param p = {0};
  sched_setscheduler(0, SCHED_IDLE, &p);
}

/* Runs hand_over(obj) and SIGKILLs the child right after, at real-time
 * priority when allowed. Returns when the hand-over began. */
static double hand_over_and_kill(int (*hand_over)(void *), void *obj, weft_process child) {
  struct sched_param fifo = {.sched_priority = 1}, other = {0};
  bool rt = sched_setscheduler(0, SCHED_FIFO, &fifo) == 0;
  double at = test_now();
  int rc = hand_over(obj);
  kill(weft_process_pid(child), SIGKILL);
  if (rt) sched_setscheduler(0, SCHED_OTHER, &other);
  ck_assert_int_eq(rc, 0);
  return at;
}

static int release_lock(void *l) { return weft_lock_release(l); }
static int release_sem(void *s) { return weft_semaphore_release(s, 1); }
static int release_cond(void *c) { return weft_cond_release(c); }

/* Checks one iteration: unless the child took what was handed over, the
 * thread was served, in time. Returns whether the iteration counted. */
static bool check_served(int i, const struct scene *s, const struct thread_result *r,
                         double handed) {
  if (ld(&s->child_took)) return false;
  ck_assert_msg(r->rc == 0, "iteration %d: the waiter got %s", i, weft_err_name(r->rc));
  ck_assert_msg(r->at - handed < SERVED_S, "iteration %d: served %.3f s after the hand-over", i,
                r->at - handed);
  return true;
}

static struct scene *new_scene(void) {
  struct scene *s = shared(sizeof *s);
  weft_lock_init(&s->lock);
  weft_semaphore_init(&s->sem, 0);
  weft_cond_init(&s->cond);
  return s;
}

static uint32_t lock_sleepers(weft_lock *l) {
  return __atomic_load_n(&l->waiters, __ATOMIC_SEQ_CST);
}

static uint32_t sem_sleepers(weft_semaphore *s) {
  return __atomic_load_n(&s->waiters, __ATOMIC_SEQ_CST);
}

/* Waits until n sleepers are registered and the thread tid (if any) is
 * asleep; the child's sleeper registered first. */
static bool wait_sleepers(uint32_t (*count)(void *), void *obj, uint32_t n, pid_t tid) {
  double end = test_now() + 10;
  while (count(obj) < n || (tid != 0 && thread_state(tid) != 'S')) {
    if (test_now() > end) return false;
    nap(0.0005);
  }
  return true;
}

static uint32_t count_lock(void *l) { return lock_sleepers(l); }
static uint32_t count_sem(void *s) { return sem_sleepers(s); }
static uint32_t count_cond_lock(void *c) { return lock_sleepers(&((weft_cond *)c)->own.lock); }

static void finish_iteration(weft_process child) {
  kill(weft_process_pid(child), SIGKILL);
  int code = finish_process(child, 10);
  ck_assert(code == -SIGKILL || code == 0);
}

/* ---- Lock ---- */

static int child_lock(void *arg) {
  struct scene *s = arg;
  go_idle_beside_main();
  st(&s->child_ready, 1);
  int rc = weft_lock_acquire(&s->lock, WEFT_FOREVER);
  if (rc == 0 || rc == WEFT_EOWNERDEAD) st(&s->child_took, 1);
  pause();
  return 0;
}

static void *thread_lock(void *arg) {
  struct thread_result *r = arg;
  pin(1); /* off the main thread's CPU, where the child waits its turn */
  __atomic_store_n(&r->tid, gettid(), __ATOMIC_RELEASE);
  r->rc = weft_lock_acquire(&r->s->lock, LOST_S);
  r->at = test_now();
  if (r->rc == 0 || r->rc == WEFT_EOWNERDEAD) weft_lock_release(&r->s->lock);
  return NULL;
}

START_TEST(lock_waiter_not_stranded_by_killed_wakee) {
  if (cpu_count() < 2) return; /* the child could not be held off its CPU */
  pin(0);
  int counted = 0;
  for (int i = 0; i < ITERATIONS; i++) {
    struct scene *s = new_scene();
    ck_assert_int_eq(weft_lock_acquire(&s->lock, 0), 0);
    weft_process child = start_process(child_lock, s);
    ck_assert(wait_sleepers(count_lock, &s->lock, 1, 0));
    struct thread_result r = {.s = s};
    pthread_t t = spawn(thread_lock, &r);
    while (__atomic_load_n(&r.tid, __ATOMIC_ACQUIRE) == 0) nap(0.0005);
    ck_assert(wait_sleepers(count_lock, &s->lock, 2, r.tid));

    double handed = hand_over_and_kill(release_lock, &s->lock, child);
    join(t);
    finish_iteration(child);
    counted += check_served(i, s, &r, handed);
    /* The lock works on (from a child that died holding it, as such). */
    int rc = weft_lock_acquire(&s->lock, 1);
    ck_assert(rc == 0 || (rc == WEFT_EOWNERDEAD && ld(&s->child_took)));
    ck_assert_int_eq(weft_lock_release(&s->lock), 0);
    weft_shared_free(s);
  }
  ck_assert_int_ge(counted, ITERATIONS / 2);
}
END_TEST

/* ---- Semaphore ---- */

static int child_sem(void *arg) {
  struct scene *s = arg;
  go_idle_beside_main();
  if (weft_semaphore_acquire(&s->sem, WEFT_FOREVER) == 0) st(&s->child_took, 1);
  pause();
  return 0;
}

static void *thread_sem(void *arg) {
  struct thread_result *r = arg;
  pin(1); /* off the main thread's CPU, where the child waits its turn */
  __atomic_store_n(&r->tid, gettid(), __ATOMIC_RELEASE);
  r->rc = weft_semaphore_acquire(&r->s->sem, LOST_S);
  r->at = test_now();
  return NULL;
}

START_TEST(semaphore_waiter_not_stranded_by_killed_wakee) {
  if (cpu_count() < 2) return;
  pin(0);
  int counted = 0;
  for (int i = 0; i < ITERATIONS; i++) {
    struct scene *s = new_scene();
    weft_process child = start_process(child_sem, s);
    ck_assert(wait_sleepers(count_sem, &s->sem, 1, 0));
    struct thread_result r = {.s = s};
    pthread_t t = spawn(thread_sem, &r);
    while (__atomic_load_n(&r.tid, __ATOMIC_ACQUIRE) == 0) nap(0.0005);
    ck_assert(wait_sleepers(count_sem, &s->sem, 2, r.tid));

    double handed = hand_over_and_kill(release_sem, &s->sem, child);
    join(t);
    finish_iteration(child);
    counted += check_served(i, s, &r, handed);
    /* The semaphore counts on. */
    ck_assert_int_eq(weft_semaphore_release(&s->sem, 1), 0);
    ck_assert_int_eq(weft_semaphore_acquire(&s->sem, 1), 0);
    ck_assert_int_eq(weft_semaphore_value(&s->sem), 0);
    weft_shared_free(s);
  }
  ck_assert_int_ge(counted, ITERATIONS / 2);
}
END_TEST

/* ---- Condition: a notified waiter killed before it re-acquires ---- */

static int child_cond(void *arg) {
  struct scene *s = arg;
  go_idle_beside_main();
  if (weft_cond_acquire(&s->cond, WEFT_FOREVER) != 0) return 1;
  st(&s->child_ready, 1);
  int rc = weft_cond_wait(&s->cond, WEFT_FOREVER);
  if (rc == 0) st(&s->child_took, 1); /* re-acquired */
  pause();
  return 0;
}

static void *thread_cond(void *arg) {
  struct thread_result *r = arg;
  pin(1); /* off the main thread's CPU, where the child waits its turn */
  __atomic_store_n(&r->tid, gettid(), __ATOMIC_RELEASE);
  r->rc = weft_cond_acquire(&r->s->cond, LOST_S);
  if (r->rc != 0) return NULL;
  st(&r->s->cond_ready, 1);
  r->rc = weft_cond_wait(&r->s->cond, LOST_S);
  r->at = test_now();
  weft_cond_release(&r->s->cond);
  return NULL;
}

START_TEST(cond_waiter_not_stranded_by_killed_notified_waiter) {
  if (cpu_count() < 2) return;
  pin(0);
  int counted = 0;
  for (int i = 0; i < ITERATIONS; i++) {
    struct scene *s = new_scene();
    weft_process child = start_process(child_cond, s);
    ck_assert(wait_ge(&s->child_ready, 1, 10));
    struct thread_result r = {.s = s};
    pthread_t t = spawn(thread_cond, &r);
    ck_assert(wait_ge(&s->cond_ready, 1, 10));
    /* Taking the lock means both have released it into their waits. */
    ck_assert_int_eq(weft_cond_acquire(&s->cond, LOST_S), 0);
    ck_assert_int_eq(weft_cond_notify_all(&s->cond), 0);
    /* Both now queue for the lock the main thread holds, the child first
     * (it was the first to wait, so the first to be woken). */
    ck_assert(wait_sleepers(count_cond_lock, &s->cond, 2, r.tid));

    double handed = hand_over_and_kill(release_cond, &s->cond, child);
    join(t);
    finish_iteration(child);
    counted += check_served(i, s, &r, handed);
    weft_shared_free(s);
  }
  ck_assert_int_ge(counted, ITERATIONS / 2);
}
END_TEST

/* A waiter of another process killed while registered leaves the set
 * mixed; the next registrant from a third party process starts it again
 * once it finds that process gone, so a lone process's waiters are woken
 * one at a time again. */
START_TEST(lock_forgets_the_waiters_of_a_dead_process) {
  struct scene *s = new_scene();
  ck_assert_int_eq(weft_lock_acquire(&s->lock, 0), 0);
  weft_process child = start_process(child_lock, s);
  ck_assert(wait_sleepers(count_lock, &s->lock, 1, 0));
  kill(weft_process_pid(child), SIGKILL);
  ck_assert_int_eq(finish_process(child, 10), -SIGKILL);
  ck_assert_uint_eq(lock_sleepers(&s->lock), 1); /* the dead one's count */
  struct thread_result r = {.s = s};
  pthread_t t = spawn(thread_lock, &r);
  while (__atomic_load_n(&r.tid, __ATOMIC_ACQUIRE) == 0) nap(0.0005);
  ck_assert(wait_sleepers(count_lock, &s->lock, 1, r.tid));
  ck_assert_uint_eq(lock_sleepers(&s->lock), 1); /* started again: only the thread */
  ck_assert_int_eq(weft_lock_release(&s->lock), 0);
  join(t);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_uint_eq(lock_sleepers(&s->lock), 0);
  weft_shared_free(s);
}
END_TEST

/* ---- Barrier: a party killed between the end of a cycle and leaving it ---- */

static int child_barrier(void *arg) {
  weft_barrier *b = arg;
  weft_barrier_wait(b, WEFT_FOREVER);
  pause();
  return 0;
}

START_TEST(barrier_wait_bounded_after_a_party_died_draining) {
  weft_barrier *b = shared(sizeof *b);
  ck_assert_int_eq(weft_barrier_init(b, 2), 0);
  weft_process child = start_process(child_barrier, b);
  double end = test_now() + 10;
  while (weft_barrier_n_waiting(b) != 1) {
    ck_assert(test_now() < end);
    nap(0.001);
  }
  /* Held stopped, it cannot leave the cycle the main thread completes. */
  pid_t pid = weft_process_pid(child);
  ck_assert_int_eq(kill(pid, SIGSTOP), 0);
  while (process_state(pid) != 'T') {
    ck_assert(test_now() < end);
    nap(0.001);
  }
  ck_assert_int_ge(weft_barrier_wait(b, 5), 0);
  kill(pid, SIGKILL);
  ck_assert_int_eq(finish_process(child, 10), -SIGKILL);
  /* The next cycle cannot begin; a wait says so within its timeout. */
  double t0 = test_now();
  ck_assert_int_eq(weft_barrier_wait(b, 0.2), WEFT_EBROKEN);
  ck_assert_double_lt(test_now() - t0, 2.0);
  ck_assert(weft_barrier_broken(b));
  weft_shared_free(b);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("test_killed_waiter");
  TCase *tc = weft_tcase("killed_wakee", 120);
  tcase_add_test(tc, lock_waiter_not_stranded_by_killed_wakee);
  tcase_add_test(tc, semaphore_waiter_not_stranded_by_killed_wakee);
  tcase_add_test(tc, cond_waiter_not_stranded_by_killed_notified_waiter);
  tcase_add_test(tc, lock_forgets_the_waiters_of_a_dead_process);
  tcase_add_test(tc, barrier_wait_bounded_after_a_party_died_draining);
  suite_add_tcase(s, tc);
  return s;
}
