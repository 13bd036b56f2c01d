/* SPDX-License-Identifier: MIT */
/* Tests of weft/deadlock.h: lock-order inversions and live deadlocks are
 * reported (each report's text is matched), and the patterns that cannot
 * deadlock are not. Reports are captured through the hook. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static pthread_mutex_t captured_mu = PTHREAD_MUTEX_INITIALIZER;
static char captured[1 << 16];
static int reports;

static void capture(const char *report, void *arg) {
  (void)arg;
  pthread_mutex_lock(&captured_mu);
  reports++;
  size_t len = strlen(captured);
  snprintf(captured + len, sizeof captured - len, "%s", report);
  pthread_mutex_unlock(&captured_mu);
}

static void setup(weft_deadlock_mode mode) {
  captured[0] = '\0';
  reports = 0;
  ck_assert_int_eq(weft_deadlock_set_mode(mode), 0);
  weft_deadlock_set_hook(capture, NULL);
}

static int count_reports(void) {
  pthread_mutex_lock(&captured_mu);
  int n = reports;
  pthread_mutex_unlock(&captured_mu);
  return n;
}

static void lock2(weft_lock *a, weft_lock *b) {
  ck_assert_int_eq(weft_lock_acquire(a, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(b, WEFT_FOREVER), 0);
  weft_lock_release(b);
  weft_lock_release(a);
}

START_TEST(abba_in_one_thread_is_reported) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock a = WEFT_LOCK_INIT_NAMED("A"), b = WEFT_LOCK_INIT_NAMED("B");
  lock2(&a, &b);
  ck_assert_int_eq(count_reports(), 0);
  lock2(&b, &a);
  ck_assert_int_eq(count_reports(), 1);
  ck_assert_ptr_nonnull(strstr(captured, "possible deadlock: lock-order inversion between 2 locks"));
  ck_assert_ptr_nonnull(strstr(captured, "acquires \"A\" at"));
  ck_assert_ptr_nonnull(strstr(captured, "while holding \"B\""));
  ck_assert_ptr_nonnull(strstr(captured, "test_deadlock.c:"));
  ck_assert_ptr_nonnull(strstr(captured, "\"A\" initialised at tests/test_deadlock.c:"));
  ck_assert_ptr_nonnull(strstr(captured, "MainThread"));
  ck_assert_ptr_nonnull(strstr(captured, "thread 1 holds \"B\", wants \"A\""));
  ck_assert_ptr_nonnull(strstr(captured, "thread 2 holds \"A\", wants \"B\""));
  lock2(&b, &a); /* each cycle is reported once */
  lock2(&a, &b);
  ck_assert_int_eq(count_reports(), 1);
}
END_TEST

static weft_lock ta = WEFT_LOCK_INIT_NAMED("A"), tb = WEFT_LOCK_INIT_NAMED("B");
static weft_barrier phase = WEFT_BARRIER_INIT(2);

static void *first_ab(void *arg) {
  (void)arg;
  lock2(&ta, &tb);
  weft_barrier_wait(&phase, 10);
  return NULL;
}

static void *then_ba(void *arg) {
  (void)arg;
  weft_barrier_wait(&phase, 10); /* only after the other thread is done: no hang */
  lock2(&tb, &ta);
  return NULL;
}

START_TEST(abba_across_two_threads_is_reported_without_a_hang) {
  setup(WEFT_DEADLOCK_WARN);
  weft_thread t1 = weft_thread_new(first_ab), t2 = weft_thread_new(then_ba);
  weft_thread_start(t1);
  weft_thread_start(t2);
  ck_assert_int_eq(weft_thread_join(t1, 10, NULL), 0);
  ck_assert_int_eq(weft_thread_join(t2, 10, NULL), 0);
  ck_assert_int_eq(count_reports(), 1);
  ck_assert_ptr_nonnull(strstr(captured, "Thread-1 (first_ab)"));
  ck_assert_ptr_nonnull(strstr(captured, "Thread-2 (then_ba)"));
}
END_TEST

/* A real ABBA hang: each thread holds one lock and wants the other. In
 * error mode the acquire that would close the cycle fails; that thread
 * backs off and both finish. */
static weft_lock la = WEFT_LOCK_INIT_NAMED("left"), lb = WEFT_LOCK_INIT_NAMED("right");
static weft_barrier both_hold = WEFT_BARRIER_INIT(2);
static int backed_off;

static void *grab(weft_lock *first, weft_lock *second) {
  weft_lock_acquire(first, WEFT_FOREVER);
  weft_barrier_wait(&both_hold, 10);
  int r = weft_lock_acquire(second, WEFT_FOREVER);
  if (r == WEFT_EDEADLK) {
    __atomic_add_fetch(&backed_off, 1, __ATOMIC_SEQ_CST);
    weft_lock_release(first); /* back off: let the other one through */
    return NULL;
  }
  weft_lock_release(second);
  weft_lock_release(first);
  return NULL;
}

static void *grab_lr(void *arg) { (void)arg; return grab(&la, &lb); }
static void *grab_rl(void *arg) { (void)arg; return grab(&lb, &la); }

START_TEST(live_abba_in_error_mode_both_threads_survive) {
  setup(WEFT_DEADLOCK_ERROR);
  weft_thread t1 = weft_thread_new(grab_lr), t2 = weft_thread_new(grab_rl);
  weft_thread_start(t1);
  weft_thread_start(t2);
  ck_assert_int_eq(weft_thread_join(t1, 10, NULL), 0);
  ck_assert_int_eq(weft_thread_join(t2, 10, NULL), 0);
  ck_assert_int_eq(backed_off, 1);
  ck_assert_ptr_nonnull(strstr(captured, "deadlock: "));
  ck_assert_ptr_nonnull(strstr(captured, "would wait forever"));
  ck_assert_ptr_nonnull(strstr(captured, "the chain of waits"));
}
END_TEST

/* Rings of 2 and 3 threads, each holding its lock and then wanting the
 * next one's, many rounds: in every round exactly one thread refuses (the
 * others wait for it to back off), whichever of them looked first. */
enum { RING_MAX = 3, RING_ROUNDS = 150 };
static weft_lock ring_lk[RING_MAX];
static weft_barrier ring_hold, ring_done;
static int ring_size, ring_refused[RING_ROUNDS];

static void *ring_member(void *arg) {
  int me = (int)(intptr_t)arg;
  for (int round = 0; round < RING_ROUNDS; round++) {
    weft_lock *mine = &ring_lk[me], *next = &ring_lk[(me + 1) % ring_size];
    if (weft_lock_acquire(mine, 10) != 0) return NULL;
    if (weft_barrier_wait(&ring_hold, 10) < 0) return NULL;
    int r = weft_lock_acquire(next, WEFT_FOREVER);
    if (r == WEFT_EDEADLK)
      __atomic_add_fetch(&ring_refused[round], 1, __ATOMIC_SEQ_CST);
    else if (r == 0)
      weft_lock_release(next);
    weft_lock_release(mine);
    if (weft_barrier_wait(&ring_done, 10) < 0) return NULL;
  }
  return NULL;
}

static void ring_rounds(int size) {
  setup(WEFT_DEADLOCK_ERROR);
  ring_size = size;
  memset(ring_refused, 0, sizeof ring_refused);
  weft_barrier_init(&ring_hold, size);
  weft_barrier_init(&ring_done, size);
  weft_thread t[RING_MAX];
  for (int i = 0; i < size; i++) {
    weft_lock_init(&ring_lk[i]);
    t[i] = weft_thread_new(ring_member, .arg = (void *)(intptr_t)i);
    ck_assert_int_eq(weft_thread_start(t[i]), 0);
  }
  for (int i = 0; i < size; i++) {
    ck_assert_int_eq(weft_thread_join(t[i], 60, NULL), 0);
    weft_thread_close(t[i]);
  }
  for (int round = 0; round < RING_ROUNDS; round++)
    ck_assert_msg(ring_refused[round] == 1, "round %d: %d refused", round, ring_refused[round]);
  for (int i = 0; i < size; i++) weft_lock_destroy(&ring_lk[i]);
}

START_TEST(live_rings_each_round_exactly_one_refuses) {
  ring_rounds(2);
  ring_rounds(3);
}
END_TEST

START_TEST(aa_on_a_lock_is_a_deadlock) {
  setup(WEFT_DEADLOCK_ERROR);
  static weft_lock a = WEFT_LOCK_INIT_NAMED("solo");
  ck_assert_int_eq(weft_lock_acquire(&a, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(&a, WEFT_FOREVER), WEFT_EDEADLK);
  ck_assert_ptr_nonnull(strstr(captured, "already holds \"solo\" itself"));
  ck_assert_int_eq(weft_lock_acquire(&a, 0), WEFT_ETIMEDOUT); /* a try is no deadlock */
  ck_assert_int_eq(count_reports(), 1);
  weft_lock_release(&a);
}
END_TEST

START_TEST(rlock_reentry_is_not_reported) {
  setup(WEFT_DEADLOCK_ERROR);
  static weft_rlock r = WEFT_RLOCK_INIT_NAMED("r");
  static weft_lock other = WEFT_LOCK_INIT_NAMED("other");
  for (int i = 0; i < 3; i++) ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(&other, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0); /* re-entry under other: no edge */
  weft_rlock_release(&r);
  weft_lock_release(&other);
  for (int i = 0; i < 3; i++) weft_rlock_release(&r);
  ck_assert_int_eq(count_reports(), 0);
}
END_TEST

START_TEST(inversion_through_an_rlock_taken_twice) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_rlock r = WEFT_RLOCK_INIT_NAMED("R");
  static weft_lock l = WEFT_LOCK_INIT_NAMED("L");
  weft_rlock_acquire(&r, WEFT_FOREVER);
  weft_rlock_acquire(&r, WEFT_FOREVER);
  weft_lock_acquire(&l, WEFT_FOREVER);
  weft_lock_release(&l);
  weft_rlock_release(&r);
  weft_rlock_release(&r);
  weft_lock_acquire(&l, WEFT_FOREVER);
  weft_rlock_acquire(&r, WEFT_FOREVER);
  weft_rlock_release(&r);
  weft_lock_release(&l);
  ck_assert_int_eq(count_reports(), 1);
  ck_assert_ptr_nonnull(strstr(captured, "\"R\""));
}
END_TEST

START_TEST(trylock_orders) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock l[6];
  for (int i = 0; i < 6; i++) weft_lock_init(&l[i]);
  /* L0 T1 then T1 L0: the trylock added no edge, so no cycle. */
  weft_lock_acquire(&l[0], WEFT_FOREVER);
  ck_assert_int_eq(weft_lock_acquire(&l[1], 0), 0);
  weft_lock_release(&l[1]);
  weft_lock_release(&l[0]);
  ck_assert_int_eq(weft_lock_acquire(&l[1], 0), 0);
  weft_lock_acquire(&l[0], WEFT_FOREVER);
  weft_lock_release(&l[0]);
  weft_lock_release(&l[1]);
  ck_assert_int_eq(count_reports(), 0);
  /* A timed acquire adds no edge either. */
  weft_lock_acquire(&l[2], WEFT_FOREVER);
  ck_assert_int_eq(weft_lock_acquire(&l[3], 1.0), 0);
  weft_lock_release(&l[3]);
  weft_lock_release(&l[2]);
  lock2(&l[3], &l[2]);
  ck_assert_int_eq(count_reports(), 0);
  /* T4 L5 then L5 L4: a blocking acquire under a trylocked lock counts. */
  ck_assert_int_eq(weft_lock_acquire(&l[4], 0), 0);
  weft_lock_acquire(&l[5], WEFT_FOREVER);
  weft_lock_release(&l[5]);
  weft_lock_release(&l[4]);
  lock2(&l[5], &l[4]);
  ck_assert_int_eq(count_reports(), 1);
}
END_TEST

START_TEST(gate_lock_makes_inversion_safe) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock g = WEFT_LOCK_INIT_NAMED("gate"), a = WEFT_LOCK_INIT_NAMED("A"),
                   b = WEFT_LOCK_INIT_NAMED("B");
  weft_lock_acquire(&g, WEFT_FOREVER);
  lock2(&a, &b);
  weft_lock_release(&g);
  weft_lock_acquire(&g, WEFT_FOREVER);
  lock2(&b, &a);
  weft_lock_release(&g);
  ck_assert_int_eq(count_reports(), 0);
}
END_TEST

START_TEST(destroyed_lock_memory_reused_has_no_old_edges) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock a = WEFT_LOCK_INIT_NAMED("A");
  weft_lock *b = malloc(sizeof *b);
  weft_lock_init(b, .name = "B");
  lock2(&a, b);
  weft_lock_destroy(b);
  weft_lock_init(b, .name = "new B"); /* the same memory, a new lock */
  lock2(b, &a);
  ck_assert_int_eq(count_reports(), 0);
  /* Re-initialising without destroy forgets the old lock too: "new B" was
   * taken before A; the lock made in its memory next is taken after A. */
  weft_lock_init(b, .name = "newer B");
  lock2(&a, b);
  ck_assert_int_eq(count_reports(), 0);
  weft_lock_destroy(b);
  free(b);
}
END_TEST

static weft_lock handed = WEFT_LOCK_INIT_NAMED("handed");

static void *release_handed(void *arg) {
  (void)arg;
  weft_lock_release(&handed); /* released by a thread that did not take it */
  return NULL;
}

START_TEST(lock_released_by_another_thread_leaves_no_stale_entry) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock c = WEFT_LOCK_INIT_NAMED("C");
  weft_lock_acquire(&handed, WEFT_FOREVER);
  weft_thread t = weft_thread_new(release_handed);
  weft_thread_start(t);
  weft_thread_join(t, 10, NULL);
  weft_lock_acquire(&c, WEFT_FOREVER); /* must not record handed -> C */
  weft_lock_release(&c);
  lock2(&c, &handed);
  ck_assert_int_eq(count_reports(), 0);
}
END_TEST

START_TEST(three_and_four_lock_cycles) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock l[8];
  static const char *names[] = {"A", "B", "C", "D", "E", "F", "G", "H"};
  for (int i = 0; i < 8; i++) weft_lock_init(&l[i], .name = names[i]);
  lock2(&l[0], &l[1]);
  lock2(&l[1], &l[2]);
  ck_assert_int_eq(count_reports(), 0);
  lock2(&l[2], &l[0]); /* ABBCCA */
  ck_assert_int_eq(count_reports(), 1);
  ck_assert_ptr_nonnull(strstr(captured, "inversion between 3 locks"));
  /* ABBCCDDA on fresh locks E F G H */
  lock2(&l[4], &l[5]);
  lock2(&l[5], &l[6]);
  lock2(&l[6], &l[7]);
  lock2(&l[7], &l[4]);
  ck_assert_int_eq(count_reports(), 2);
  ck_assert_ptr_nonnull(strstr(captured, "inversion between 4 locks"));
}
END_TEST

static void ring(int n, const char *expect) {
  setup(WEFT_DEADLOCK_WARN);
  weft_lock *l = calloc((size_t)n, sizeof *l);
  for (int i = 0; i < n; i++) weft_lock_init(&l[i]);
  for (int i = 0; i + 1 < n; i++) lock2(&l[i], &l[i + 1]);
  ck_assert_int_eq(count_reports(), 0);
  lock2(&l[n - 1], &l[0]);
  ck_assert_int_eq(count_reports(), 1);
  char want[64];
  snprintf(want, sizeof want, "inversion between %d locks", n);
  ck_assert_ptr_nonnull(strstr(captured, want));
  if (expect != NULL)
    ck_assert_ptr_nonnull(strstr(captured, expect));
  else
    ck_assert_ptr_null(strstr(captured, "truncated"));
  for (int i = 0; i < n; i++) weft_lock_destroy(&l[i]);
  free(l);
}

START_TEST(rings_of_5_20_100_locks) {
  ring(5, NULL);
  ring(20, "more, truncated");
  ring(100, "more, truncated");
}
END_TEST

START_TEST(two_unrelated_inversions_give_two_reports) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock a = WEFT_LOCK_INIT_NAMED("A"), b = WEFT_LOCK_INIT_NAMED("B"),
                   c = WEFT_LOCK_INIT_NAMED("C"), d = WEFT_LOCK_INIT_NAMED("D");
  lock2(&a, &b);
  lock2(&c, &d);
  lock2(&b, &a);
  lock2(&d, &c);
  ck_assert_int_eq(count_reports(), 2);
}
END_TEST

static weft_cond cond = WEFT_COND_INIT;
static weft_lock outer = WEFT_LOCK_INIT_NAMED("outer");
static int ready;

static void *notifier(void *arg) {
  (void)arg;
  weft_cond_acquire(&cond, WEFT_FOREVER);
  ready = 1;
  weft_cond_notify_all(&cond);
  weft_cond_release(&cond);
  return NULL;
}

static bool is_ready(void *arg) {
  (void)arg;
  return ready != 0;
}

START_TEST(condition_wait_is_not_reported) {
  setup(WEFT_DEADLOCK_ERROR);
  weft_lock_acquire(&outer, WEFT_FOREVER);
  weft_cond_acquire(&cond, WEFT_FOREVER);
  weft_thread t = weft_thread_new(notifier);
  weft_thread_start(t);
  ck_assert_int_eq(weft_cond_wait_for(&cond, is_ready, NULL, 10), 1);
  weft_cond_release(&cond);
  weft_lock_release(&outer);
  weft_thread_join(t, 10, NULL);
  ck_assert_int_eq(count_reports(), 0);
}
END_TEST

enum { ORDERED_LOCKS = 16384 };
static weft_lock *ordered;

static void *take_in_order(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  for (int round = 0; round < 2000; round++) {
    int i = (int)(rand_r(&seed) % (ORDERED_LOCKS - 8));
    int j = i + 1 + (int)(rand_r(&seed) % 7);
    weft_lock_acquire(&ordered[i], WEFT_FOREVER);
    weft_lock_acquire(&ordered[j], WEFT_FOREVER);
    weft_lock_release(&ordered[j]);
    weft_lock_release(&ordered[i]);
  }
  return NULL;
}

START_TEST(global_order_across_threads_is_not_reported) {
  setup(WEFT_DEADLOCK_WARN);
  ordered = calloc(ORDERED_LOCKS, sizeof *ordered);
  for (int i = 0; i < ORDERED_LOCKS; i++) weft_lock_init(&ordered[i]);
  weft_thread t[4];
  for (int i = 0; i < 4; i++) {
    t[i] = weft_thread_new(take_in_order, .arg = (void *)(uintptr_t)(i + 1));
    weft_thread_start(t[i]);
  }
  for (int i = 0; i < 4; i++) ck_assert_int_eq(weft_thread_join(t[i], 60, NULL), 0);
  ck_assert_int_eq(count_reports(), 0);
  for (int i = 0; i < ORDERED_LOCKS; i++) weft_lock_destroy(&ordered[i]);
  free(ordered);
}
END_TEST

START_TEST(sliding_windows_over_many_locks_stay_bounded) {
  setup(WEFT_DEADLOCK_WARN);
  enum { N = 1 << 17, W = 5 };
  weft_lock *l = calloc(N, sizeof *l);
  for (int i = 0; i < N; i++) weft_lock_init(&l[i]);
  double t0 = test_now();
  for (int i = 0; i + W <= N; i++) {
    for (int k = 0; k < W; k++) weft_lock_acquire(&l[i + k], WEFT_FOREVER);
    for (int k = W - 1; k >= 0; k--) weft_lock_release(&l[i + k]);
    if (i >= W) weft_lock_destroy(&l[i - W]); /* the window moves on: old locks end */
  }
  double elapsed = test_now() - t0;
  ck_assert_int_eq(count_reports(), 0);
  ck_assert_msg(elapsed < 30, "took %.1f s", elapsed);
  free(l);
}
END_TEST

/* 4 threads, 16,384 locks, random pairs always taken in ascending order:
 * nearly every pair is an order never seen, and none closes a cycle. A
 * search from each new order through all that its lock reaches would take
 * minutes here; the graph's incremental order keeps it to seconds. */
enum { MANY_LOCKS = 16384, MANY_THREADS = 4, MANY_PAIRS = 100000 / SLOW };
static weft_lock *many;

static void *random_ascending_pairs(void *arg) {
  uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(uintptr_t)arg;
  for (int i = 0; i < MANY_PAIRS; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    unsigned a = (unsigned)(x % MANY_LOCKS), b = (unsigned)((x >> 32) % (MANY_LOCKS - 1));
    if (b >= a) b++;
    weft_lock *lo = &many[a < b ? a : b], *hi = &many[a < b ? b : a];
    weft_lock_acquire(lo, WEFT_FOREVER);
    weft_lock_acquire(hi, WEFT_FOREVER);
    weft_lock_release(hi);
    weft_lock_release(lo);
  }
  return NULL;
}

START_TEST(many_locks_in_one_order_stay_fast) {
  setup(WEFT_DEADLOCK_WARN);
  many = calloc(MANY_LOCKS, sizeof *many);
  for (int i = 0; i < MANY_LOCKS; i++) weft_lock_init(&many[i]);
  lock2(&many[0], &many[MANY_LOCKS - 1]); /* ascending too */
  double t0 = test_now();
  weft_thread t[MANY_THREADS];
  for (int i = 0; i < MANY_THREADS; i++) {
    t[i] = weft_thread_new(random_ascending_pairs, .arg = (void *)(uintptr_t)(i + 1));
    weft_thread_start(t[i]);
  }
  for (int i = 0; i < MANY_THREADS; i++) ck_assert_int_eq(weft_thread_join(t[i], 60, NULL), 0);
  double elapsed = test_now() - t0;
  ck_assert_int_eq(count_reports(), 0);
  ck_assert_msg(elapsed < 20, "took %.1f s", elapsed);
  /* Against the order, through all the reordering: a cycle. */
  lock2(&many[MANY_LOCKS - 1], &many[0]);
  ck_assert_int_eq(count_reports(), 1);
  for (int i = 0; i < MANY_THREADS; i++) weft_thread_close(t[i]);
  for (int i = 0; i < MANY_LOCKS; i++) weft_lock_destroy(&many[i]);
  free(many);
}
END_TEST

/* A chain built from its far end, so that each new order goes against
 * the order the graph had so far and moves locks in it; closing the chain
 * is still a cycle through all of them. */
START_TEST(chain_built_backwards_then_closed_is_reported) {
  setup(WEFT_DEADLOCK_WARN);
  enum { N = 12 };
  static weft_lock l[N];
  for (int i = 0; i < N; i++) weft_lock_init(&l[i]);
  for (int i = N - 2; i >= 0; i--) lock2(&l[i], &l[i + 1]);
  lock2(&l[N / 2], &l[N - 1]); /* a shortcut, in the order */
  ck_assert_int_eq(count_reports(), 0);
  lock2(&l[N - 1], &l[3]);
  ck_assert_int_eq(count_reports(), 1);
  /* 11 -> 3 -> 4 -> 5 -> 6 -> 11, or the long way round 3 -> 4 ... -> 11 */
  ck_assert_msg(strstr(captured, "inversion between 5 locks") != NULL ||
                    strstr(captured, "inversion between 9 locks") != NULL,
                "%s", captured);
  lock2(&l[2], &l[0]);
  ck_assert_int_eq(count_reports(), 2);
  ck_assert_ptr_nonnull(strstr(captured, "inversion between 3 locks"));
}
END_TEST

/* Random nested pairs over an array of locks, mostly in one order (either
 * the array's or a shuffled one) with some taken the other way round: after
 * each new order a -> b, a report must come exactly when b already reached
 * a through the orders seen so far (those reported included), as a plain
 * reachability search over a matrix says. */
#define RAND_LOCKS 48

static bool reaches(bool (*edge)[RAND_LOCKS], int from, int to) {
  bool seen[RAND_LOCKS] = {false};
  int stack[RAND_LOCKS], top = 0;
  stack[top++] = from;
  seen[from] = true;
  while (top > 0) {
    int v = stack[--top];
    if (v == to) return true;
    for (int w = 0; w < RAND_LOCKS; w++)
      if (edge[v][w] && !seen[w]) {
        seen[w] = true;
        stack[top++] = w;
      }
  }
  return false;
}

static void random_orders(uint64_t seed, bool shuffled) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock l[RAND_LOCKS];
  static bool edge[RAND_LOCKS][RAND_LOCKS];
  int place[RAND_LOCKS];
  memset(edge, 0, sizeof edge);
  for (int i = 0; i < RAND_LOCKS; i++) {
    weft_lock_init(&l[i]);
    place[i] = i;
  }
  uint64_t x = seed;
#define NEXT() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
  if (shuffled)
    for (int i = RAND_LOCKS - 1; i > 0; i--) {
      int j = (int)(NEXT() % (uint64_t)(i + 1)), t = place[i];
      place[i] = place[j];
      place[j] = t;
    }
  int expected = 0;
  for (int step = 0; step < 400; step++) {
    int a = (int)(NEXT() % RAND_LOCKS), b = (int)(NEXT() % (RAND_LOCKS - 1));
    if (b >= a) b++;
    if ((a < b) != (NEXT() % 8 != 0)) { /* one in eight against the order */
      int t = a;
      a = b;
      b = t;
    }
    int pa = place[a], pb = place[b];
    if (!edge[pa][pb]) {
      if (reaches(edge, pb, pa)) expected++;
      edge[pa][pb] = true;
    }
    lock2(&l[pa], &l[pb]);
    ck_assert_msg(count_reports() == expected, "seed %llu%s, step %d (%d -> %d): %d reports, %d expected",
          (unsigned long long)seed, shuffled ? " shuffled" : "", step, pa, pb, count_reports(),
          expected);
  }
#undef NEXT
  ck_assert_int_gt(expected, 0);
  for (int i = 0; i < RAND_LOCKS; i++) weft_lock_destroy(&l[i]);
}

START_TEST(random_orders_match_a_reference_graph) {
  for (uint64_t seed = 1; seed <= 20; seed++) {
    random_orders(seed * 0x9e3779b97f4a7c15ull, false);
    random_orders(seed * 0x9e3779b97f4a7c15ull, true);
  }
}
END_TEST

/* B -> A closed A -> B and was reported; a later cycle that runs through
 * B -> A is found too. */
START_TEST(cycle_through_a_reported_inversion_is_reported) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock a = WEFT_LOCK_INIT_NAMED("A"), b = WEFT_LOCK_INIT_NAMED("B"),
                   c = WEFT_LOCK_INIT_NAMED("C");
  lock2(&a, &b);
  lock2(&b, &a);
  ck_assert_int_eq(count_reports(), 1);
  lock2(&a, &c);
  ck_assert_int_eq(count_reports(), 1);
  captured[0] = '\0';
  lock2(&c, &b); /* C -> B -> A -> C */
  ck_assert_int_eq(count_reports(), 2);
  ck_assert_ptr_nonnull(strstr(captured, "inversion between 3 locks"));
  ck_assert_ptr_nonnull(strstr(captured, "\"B\" -> \"A\""));
}
END_TEST

/* Memory of a lock the detector saw, zeroed and initialised again without
 * weft_lock_destroy (as calloc might hand it back): a new lock, without
 * the old one's orders. */
START_TEST(zeroed_and_initialised_lock_memory_has_no_old_edges) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock a = WEFT_LOCK_INIT_NAMED("A");
  weft_lock *b = malloc(sizeof *b);
  weft_lock_init(b, .name = "B");
  lock2(&a, b);
  memset(b, 0, sizeof *b);
  weft_lock_init(b, .name = "new B");
  lock2(b, &a);
  ck_assert_int_eq(count_reports(), 0);
  lock2(&a, b);
  ck_assert_int_eq(count_reports(), 1); /* but its own orders count */
  weft_lock_destroy(b);
  free(b);
}
END_TEST

static int child_inversions(void *arg) {
  weft_lock *l = arg;
  /* The parent took 0 then 1; the child was not there: no inherited edge. */
  lock2(&l[1], &l[0]);
  if (count_reports() != 0) return 1;
  lock2(&l[2], &l[3]);
  lock2(&l[3], &l[2]);
  if (count_reports() != 1) return 2;
  return strstr(captured, "inversion between 2 locks") != NULL ? 0 : 3;
}

/* Runs fn(arg) in a child process; returns its exit code. */
static int child_exitcode(int (*fn)(void *), void *arg) {
  weft_process p = weft_process_new(fn, .arg = arg);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 20), 0);
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  weft_process_close(p);
  return code;
}

static int child_relearns(void *arg) {
  weft_lock *l = arg;
  lock2(&l[0], &l[1]); /* found known in the parent, new here */
  lock2(&l[1], &l[0]);
  return count_reports() == 1 ? 0 : 1;
}

/* The parent's nested order, taken often enough to be found known by the
 * detector's fastest check, is not the child's: the child records it
 * anew and reports its own inversion of it. */
START_TEST(order_known_before_a_fork_is_new_in_the_child) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock l[2];
  for (int i = 0; i < 2; i++) weft_lock_init(&l[i]);
  for (int i = 0; i < 3; i++) lock2(&l[0], &l[1]);
  ck_assert_int_eq(child_exitcode(child_relearns, l), 0);
  ck_assert_int_eq(count_reports(), 0);
}
END_TEST

START_TEST(forked_child_detects_its_own_inversions_only) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock l[4];
  for (int i = 0; i < 4; i++) weft_lock_init(&l[i]);
  lock2(&l[0], &l[1]);
  ck_assert_int_eq(child_exitcode(child_inversions, l), 0);
}
END_TEST


START_TEST(abcd_bcda_is_reported) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock l[4];
  static const char *names[] = {"A", "B", "C", "D"};
  for (int i = 0; i < 4; i++) weft_lock_init(&l[i], .name = names[i]);
  static const int orders[2][4] = {{0, 1, 2, 3}, {1, 2, 3, 0}};
  for (int o = 0; o < 2; o++) {
    for (int k = 0; k < 4; k++) ck_assert_int_eq(weft_lock_acquire(&l[orders[o][k]], WEFT_FOREVER), 0);
    for (int k = 3; k >= 0; k--) weft_lock_release(&l[orders[o][k]]);
    if (o == 0) ck_assert_int_eq(count_reports(), 0);
  }
  ck_assert_int_ge(count_reports(), 1);
  ck_assert_ptr_nonnull(strstr(captured, "acquires \"A\""));
}
END_TEST

static weft_lock forks[5];

static void *philosopher(void *arg) {
  int i = (int)(intptr_t)arg;
  weft_lock_acquire(&forks[i], WEFT_FOREVER);           /* left */
  weft_lock_acquire(&forks[(i + 1) % 5], WEFT_FOREVER); /* right */
  weft_lock_release(&forks[(i + 1) % 5]);
  weft_lock_release(&forks[i]);
  return NULL;
}

START_TEST(dining_philosophers_are_reported) {
  setup(WEFT_DEADLOCK_WARN);
  static const char *names[] = {"fork 0", "fork 1", "fork 2", "fork 3", "fork 4"};
  for (int i = 0; i < 5; i++) weft_lock_init(&forks[i], .name = names[i]);
  /* They eat one after the other, so the run cannot hang; the order is the
   * classic deadlock all the same. */
  for (int i = 0; i < 5; i++) {
    weft_thread t = weft_thread_new(philosopher, .arg = (void *)(intptr_t)i);
    weft_thread_start(t);
    ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
    weft_thread_close(t);
  }
  ck_assert_int_eq(count_reports(), 1);
  ck_assert_ptr_nonnull(strstr(captured, "inversion between 5 locks"));
  ck_assert_ptr_nonnull(strstr(captured, "thread 5 holds"));
}
END_TEST

START_TEST(semaphore_event_barrier_waits_are_not_reported) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock a = WEFT_LOCK_INIT_NAMED("A"), b = WEFT_LOCK_INIT_NAMED("B");
  static weft_semaphore sem = WEFT_SEMAPHORE_INIT(1);
  static weft_event ev = WEFT_EVENT_INIT;
  static weft_barrier bar = WEFT_BARRIER_INIT(1);
  weft_lock_acquire(&a, WEFT_FOREVER);
  ck_assert_int_eq(weft_semaphore_acquire(&sem, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_event_wait(&ev, 0.01), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_barrier_wait(&bar, WEFT_FOREVER), 0);
  weft_semaphore_release(&sem, 1);
  weft_lock_release(&a);
  weft_lock_acquire(&b, WEFT_FOREVER);
  ck_assert_int_eq(weft_semaphore_acquire(&sem, WEFT_FOREVER), 0);
  weft_event_set(&ev);
  ck_assert_int_eq(weft_event_wait(&ev, WEFT_FOREVER), 0);
  weft_semaphore_release(&sem, 1);
  weft_lock_release(&b);
  ck_assert_int_eq(count_reports(), 0);
}
END_TEST


static void run_aa(const char *mode, char *out, size_t size, int *status) {
  setenv("WEFT_DEADLOCK", mode, 1);
  *status = helper_run("deadlock_aa", out, size, 20);
  unsetenv("WEFT_DEADLOCK");
}

START_TEST(environment_error_mode_returns_edeadlk) {
  static char out[8192];
  int status;
  run_aa("error", out, sizeof out, &status);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x:\n%s", status, out);
  ck_assert_ptr_nonnull(strstr(out, "weft: deadlock: MainThread"));
  ck_assert_ptr_nonnull(strstr(out, "second acquire returned WEFT_EDEADLK"));
}
END_TEST

START_TEST(environment_abort_mode_aborts_after_the_report) {
  static char out[8192];
  int status;
  run_aa("abort", out, sizeof out, &status);
  ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status 0x%x:\n%s", status, out);
  ck_assert_ptr_nonnull(strstr(out, "already holds \"solo\" itself"));
  ck_assert_ptr_null(strstr(out, "second acquire returned"));
}
END_TEST


START_TEST(recycled_lock_ids_still_report_new_inversions) {
  setup(WEFT_DEADLOCK_WARN);
  weft_lock *l = calloc(4, sizeof *l);
  weft_lock_init(&l[0], .name = "accounts");
  weft_lock_init(&l[1], .name = "ledger");
  lock2(&l[0], &l[1]);
  lock2(&l[1], &l[0]);
  ck_assert_int_eq(count_reports(), 1);
  weft_lock_destroy(&l[0]);
  weft_lock_destroy(&l[1]);
  weft_lock_init(&l[2], .name = "cache"); /* reuses the freed nodes */
  weft_lock_init(&l[3], .name = "index");
  lock2(&l[2], &l[3]);
  lock2(&l[3], &l[2]);
  ck_assert_int_eq(count_reports(), 2);
  ck_assert_ptr_nonnull(strstr(captured, "\"cache\""));
  free(l);
}
END_TEST


/* Runs in a child: no ck_assert here (it would report from the child). */
static int try2(weft_lock *x, weft_lock *y) {
  int r = weft_lock_acquire(x, WEFT_FOREVER);
  if (r != 0) return 10 - r;
  r = weft_lock_acquire(y, WEFT_FOREVER);
  if (r != 0) return 100 - r;
  weft_lock_release(y);
  weft_lock_release(x);
  return 0;
}

static volatile int churning = 1;
static int churn_errors;

/* Check's own assertions are not fork-safe (a thread inside one holds
 * Check's mutex at fork), so this thread and the children use try2. */
static void *churn_locks(void *arg) {
  (void)arg;
  weft_lock l[4];
  while (__atomic_load_n(&churning, __ATOMIC_RELAXED)) {
    for (int i = 0; i < 4; i++) weft_lock_init(&l[i]);
    if (try2(&l[0], &l[1]) != 0 || try2(&l[2], &l[3]) != 0) churn_errors++;
    for (int i = 0; i < 4; i++) weft_lock_destroy(&l[i]);
  }
  return NULL;
}

static int use_detector_in_child(void *arg) {
  (void)arg;
  weft_lock a, b;
  weft_lock_init(&a);
  weft_lock_init(&b);
  int r = try2(&a, &b);
  if (r == 0) r = try2(&b, &a);
  if (r != 0) return r;
  return count_reports() == 1 ? 0 : 1;
}

START_TEST(fork_while_another_thread_uses_the_detector) {
  setup(WEFT_DEADLOCK_WARN);
  weft_thread t = weft_thread_new(churn_locks);
  weft_thread_start(t);
  for (int i = 0; i < 100; i++) {
    captured[0] = '\0';
    reports = 0;
    weft_process p = weft_process_new(use_detector_in_child);
    ck_assert_int_eq(weft_process_start(p), 0);
    ck_assert_msg(weft_process_join(p, 10) == 0, "child %d hung", i);
    int code = -1;
    weft_process_exitcode(p, &code);
    ck_assert_msg(code == 0, "child %d exit code %d", i, code);
    weft_process_close(p);
  }
  __atomic_store_n(&churning, 0, __ATOMIC_RELAXED);
  weft_thread_join(t, 10, NULL);
  ck_assert_int_eq(churn_errors, 0);
}
END_TEST


static weft_lock *heap_handed;

static void *release_and_free(void *arg) {
  (void)arg;
  weft_lock_release(heap_handed); /* not the taker: allowed, as in Python */
  weft_lock_destroy(heap_handed);
  free(heap_handed);
  return NULL;
}

/* The taker's entry for a lock another thread released, destroyed and freed
 * must be dropped without being read (ASan would see a use after free). */
START_TEST(lock_released_destroyed_and_freed_elsewhere_is_not_read) {
  setup(WEFT_DEADLOCK_WARN);
  static weft_lock held_first = WEFT_LOCK_INIT_NAMED("outer"), next = WEFT_LOCK_INIT_NAMED("next");
  heap_handed = malloc(sizeof *heap_handed);
  weft_lock_init(heap_handed, .name = "heap");
  ck_assert_int_eq(weft_lock_acquire(&held_first, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(heap_handed, WEFT_FOREVER), 0);
  weft_thread t = weft_thread_new(release_and_free);
  weft_thread_start(t);
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  void *reuse = malloc(sizeof(weft_lock)); /* likely the same memory, now garbage */
  memset(reuse, 0xa5, sizeof(weft_lock));
  ck_assert_int_eq(weft_lock_acquire(&next, WEFT_FOREVER), 0); /* prunes the held stack */
  weft_lock_release(&next);
  weft_lock_release(&held_first);
  free(reuse);
  ck_assert_int_eq(count_reports(), 0);
}
END_TEST


static int take_shared(void *arg) {
  weft_lock *l = arg;
  weft_lock local[3]; /* so that the child's node ids for S and X differ from the parent's */
  for (int i = 0; i < 3; i++) weft_lock_init(&local[i]);
  if (try2(&local[0], &local[1]) != 0 || try2(&local[1], &local[2]) != 0) return 2;
  return try2(&l[0], &l[1]) == 0 ? 0 : 1; /* its node ids overwrite pad_ */
}

/* A lock in shared memory, used by children in between, keeps its lock
 * orders in the parent. */
START_TEST(shared_lock_keeps_its_orders_across_processes) {
  setup(WEFT_DEADLOCK_WARN);
  weft_lock *l = weft_shared_alloc(2 * sizeof *l);
  weft_lock_init(&l[0], .name = "S");
  weft_lock_init(&l[1], .name = "X");
  lock2(&l[0], &l[1]);
  for (int i = 0; i < 3; i++) {
    weft_process p = weft_process_new(take_shared, .arg = l);
    ck_assert_int_eq(weft_process_start(p), 0);
    ck_assert_int_eq(weft_process_join(p, 10), 0);
    int code = -1;
    weft_process_exitcode(p, &code);
    ck_assert_int_eq(code, 0);
    weft_process_close(p);
  }
  lock2(&l[1], &l[0]);
  ck_assert_int_eq(count_reports(), 1);
  weft_shared_free(l);
}
END_TEST

START_TEST(mode_api_and_bad_mode) {
  ck_assert_int_eq(weft_deadlock_set_mode((weft_deadlock_mode)42), WEFT_EINVAL);
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_OFF), 0);
  ck_assert_int_eq(weft_deadlock_get_mode(), WEFT_DEADLOCK_OFF);
  setup(WEFT_DEADLOCK_OFF);
  static weft_lock a = WEFT_LOCK_INIT, b = WEFT_LOCK_INIT;
  lock2(&a, &b);
  lock2(&b, &a);
  ck_assert_int_eq(count_reports(), 0); /* off sees nothing */
}
END_TEST

/* ---- orders a thread logs without the detector's mutex ----
 * A thread that has used many orders logs a new one that agrees with the
 * graph's order instead of adding it at once; these make such a thread
 * (hub -> each lock: more orders than it adds before logging, and every
 * lock gets its node) and check that what it logs counts at once. */

enum { LOG_LOCKS = 601 }; /* the hub, then pairs of neighbours */
static weft_lock *log_lk;
static weft_event logged, may_exit;

static void log_locks_new(void) {
  log_lk = calloc(LOG_LOCKS, sizeof *log_lk);
  ck_assert_ptr_nonnull(log_lk);
  for (int i = 0; i < LOG_LOCKS; i++) weft_lock_init(&log_lk[i]); /* ascending addresses */
  weft_event_init(&logged);
  weft_event_init(&may_exit);
}

static void log_locks_free(void) {
  for (int i = 0; i < LOG_LOCKS; i++) weft_lock_destroy(&log_lk[i]);
  free(log_lk);
}

static void warm_up(void) {
  for (int i = 1; i < LOG_LOCKS; i++) lock2(&log_lk[0], &log_lk[i]);
}

/* Warms up, takes 5 -> 7 (logged), then stays alive until told. */
static void *logger(void *arg) {
  bool stay = arg != NULL;
  warm_up();
  lock2(&log_lk[5], &log_lk[7]);
  weft_event_set(&logged);
  if (stay) weft_event_wait(&may_exit, 30);
  return NULL;
}

static void logged_order_then_inversion(bool logger_stays) {
  setup(WEFT_DEADLOCK_WARN);
  log_locks_new();
  weft_thread t = weft_thread_new(logger, .arg = logger_stays ? &logged : NULL);
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_event_wait(&logged, 30), 0);
  if (!logger_stays) ck_assert_int_eq(weft_thread_join(t, 30, NULL), 0);
  ck_assert_int_eq(count_reports(), 0);
  lock2(&log_lk[7], &log_lk[5]);
  ck_assert_int_eq(count_reports(), 1); /* by this acquire, not later */
  ck_assert_ptr_nonnull(strstr(captured, "lock-order inversion between 2 locks"));
  ck_assert_ptr_nonnull(strstr(captured, "(logger) (tid"));
  ck_assert_ptr_nonnull(strstr(captured, "MainThread"));
  weft_event_set(&may_exit);
  if (logger_stays) ck_assert_int_eq(weft_thread_join(t, 30, NULL), 0);
  weft_thread_close(t);
  lock2(&log_lk[7], &log_lk[5]);
  ck_assert_int_eq(count_reports(), 1);
  log_locks_free();
}

START_TEST(an_order_another_thread_logged_counts_at_once) { logged_order_then_inversion(true); }
END_TEST

START_TEST(orders_a_thread_logged_outlive_it) { logged_order_then_inversion(false); }
END_TEST

/* Locks freed without weft_lock_destroy while their order sits in a log:
 * taking the log in reads nothing of them (ASan would see it), and locks
 * made later in the same memory start with no orders. */
static weft_lock *heap_pair;

static void *logger_of_freed(void *arg) {
  (void)arg;
  warm_up();
  for (int round = 0; round < 50; round++) {
    heap_pair = malloc(2 * sizeof *heap_pair);
    weft_lock_init(&heap_pair[0]);
    weft_lock_init(&heap_pair[1]);
    lock2(&log_lk[0], &heap_pair[0]); /* nodes for both */
    lock2(&log_lk[0], &heap_pair[1]);
    lock2(&heap_pair[0], &heap_pair[1]); /* logged */
    free(heap_pair);                     /* never destroyed */
  }
  return NULL;
}

START_TEST(a_logged_order_of_freed_locks_is_never_read) {
  setup(WEFT_DEADLOCK_WARN);
  log_locks_new();
  weft_thread t = weft_thread_new(logger_of_freed);
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_thread_join(t, 30, NULL), 0); /* its log is taken in as it ends */
  weft_thread_close(t);
  for (int round = 0; round < 50; round++) {
    weft_lock *p = malloc(2 * sizeof *p); /* likely the same memory */
    weft_lock_init(&p[0]);
    weft_lock_init(&p[1]);
    lock2(&p[1], &p[0]);
    weft_lock_destroy(&p[0]);
    weft_lock_destroy(&p[1]);
    free(p);
  }
  ck_assert_int_eq(count_reports(), 0);
  log_locks_free();
}
END_TEST

/* Two threads take each pair in opposite orders at the same moment, one
 * logging its order and the other searching: whichever closes the cycle
 * reports it before its acquire returns. Error mode breaks the live hangs. */
enum { RACE_PAIRS = (LOG_LOCKS - 1) / 2 };
static weft_barrier race_start = WEFT_BARRIER_INIT(2), race_end = WEFT_BARRIER_INIT(2);
static int inversions, missed;

static void count_inversions(const char *report, void *arg) {
  (void)arg;
  if (strstr(report, "lock-order inversion") != NULL)
    __atomic_add_fetch(&inversions, 1, __ATOMIC_SEQ_CST);
}

static void race_pair(weft_lock *first, weft_lock *second) {
  ck_assert_int_eq(weft_lock_acquire(first, WEFT_FOREVER), 0);
  int r = weft_lock_acquire(second, WEFT_FOREVER);
  ck_assert(r == 0 || r == WEFT_EDEADLK);
  if (r == 0) weft_lock_release(second);
  weft_lock_release(first);
}

static void *racer(void *arg) {
  bool forward = arg != NULL;
  if (forward) warm_up();
  for (int i = 0; i < RACE_PAIRS; i++) {
    weft_lock *a = &log_lk[1 + 2 * i], *b = &log_lk[2 + 2 * i];
    if (weft_barrier_wait(&race_start, 30) < 0) return NULL;
    if (forward)
      race_pair(a, b);
    else
      race_pair(b, a);
    if (weft_barrier_wait(&race_end, 30) < 0) return NULL;
    if (!forward) continue;
    /* Both acquires have returned: the cycle must be reported by now. */
    if (__atomic_load_n(&inversions, __ATOMIC_SEQ_CST) != i + 1)
      __atomic_add_fetch(&missed, 1, __ATOMIC_SEQ_CST);
    /* The pair's end takes its cycle's edge out of the graph, so that the
     * next pair's order is logged again (none is while a cycle's edge is
     * in the graph). */
    weft_lock_destroy(a);
    weft_lock_destroy(b);
    weft_lock_init(a);
    weft_lock_init(b);
  }
  return NULL;
}

START_TEST(logging_and_searching_at_once_miss_no_cycle) {
  setup(WEFT_DEADLOCK_ERROR);
  weft_deadlock_set_hook(count_inversions, NULL);
  inversions = missed = 0;
  log_locks_new();
  weft_thread t1 = weft_thread_new(racer, .arg = &inversions), t2 = weft_thread_new(racer);
  ck_assert_int_eq(weft_thread_start(t1), 0);
  ck_assert_int_eq(weft_thread_start(t2), 0);
  ck_assert_int_eq(weft_thread_join(t1, 60, NULL), 0);
  ck_assert_int_eq(weft_thread_join(t2, 60, NULL), 0);
  weft_thread_close(t1);
  weft_thread_close(t2);
  ck_assert_int_eq(__atomic_load_n(&missed, __ATOMIC_SEQ_CST), 0);
  ck_assert_int_eq(__atomic_load_n(&inversions, __ATOMIC_SEQ_CST), RACE_PAIRS);
  log_locks_free();
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("deadlock");
  TCase *tc = weft_tcase("inversions", 60);
  tcase_add_test(tc, abba_in_one_thread_is_reported);
  tcase_add_test(tc, abba_across_two_threads_is_reported_without_a_hang);
  tcase_add_test(tc, inversion_through_an_rlock_taken_twice);
  tcase_add_test(tc, three_and_four_lock_cycles);
  tcase_add_test(tc, rings_of_5_20_100_locks);
  tcase_add_test(tc, two_unrelated_inversions_give_two_reports);
  tcase_add_test(tc, forked_child_detects_its_own_inversions_only);
  tcase_add_test(tc, order_known_before_a_fork_is_new_in_the_child);
  tcase_add_test(tc, abcd_bcda_is_reported);
  tcase_add_test(tc, dining_philosophers_are_reported);
  tcase_add_test(tc, recycled_lock_ids_still_report_new_inversions);
  tcase_add_test(tc, shared_lock_keeps_its_orders_across_processes);
  tcase_add_test(tc, fork_while_another_thread_uses_the_detector);
  tcase_add_test(tc, chain_built_backwards_then_closed_is_reported);
  tcase_add_test(tc, random_orders_match_a_reference_graph);
  tcase_add_test(tc, cycle_through_a_reported_inversion_is_reported);
  suite_add_tcase(s, tc);
  tc = weft_tcase("live", 60);
  tcase_add_test(tc, live_abba_in_error_mode_both_threads_survive);
  tcase_add_test(tc, aa_on_a_lock_is_a_deadlock);
  tcase_add_test(tc, live_rings_each_round_exactly_one_refuses);
  tcase_add_test(tc, environment_error_mode_returns_edeadlk);
  tcase_add_test(tc, environment_abort_mode_aborts_after_the_report);
  suite_add_tcase(s, tc);
  tc = weft_tcase("no_false_positives", 120);
  tcase_add_test(tc, rlock_reentry_is_not_reported);
  tcase_add_test(tc, trylock_orders);
  tcase_add_test(tc, gate_lock_makes_inversion_safe);
  tcase_add_test(tc, destroyed_lock_memory_reused_has_no_old_edges);
  tcase_add_test(tc, lock_released_by_another_thread_leaves_no_stale_entry);
  tcase_add_test(tc, lock_released_destroyed_and_freed_elsewhere_is_not_read);
  tcase_add_test(tc, condition_wait_is_not_reported);
  tcase_add_test(tc, global_order_across_threads_is_not_reported);
  tcase_add_test(tc, sliding_windows_over_many_locks_stay_bounded);
  tcase_add_test(tc, semaphore_event_barrier_waits_are_not_reported);
  tcase_add_test(tc, mode_api_and_bad_mode);
  tcase_add_test(tc, zeroed_and_initialised_lock_memory_has_no_old_edges);
  suite_add_tcase(s, tc);
  tc = weft_tcase("order_log", 120);
  tcase_add_test(tc, an_order_another_thread_logged_counts_at_once);
  tcase_add_test(tc, orders_a_thread_logged_outlive_it);
  tcase_add_test(tc, a_logged_order_of_freed_locks_is_never_read);
  tcase_add_test(tc, logging_and_searching_at_once_miss_no_cycle);
  suite_add_tcase(s, tc);
  tc = weft_tcase("scale", 120);
  tcase_add_test(tc, many_locks_in_one_order_stay_fast);
  suite_add_tcase(s, tc);
  return s;
}
