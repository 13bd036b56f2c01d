/* SPDX-License-Identifier: MIT */
/* Deadlocks between processes sharing Locks in shared memory. Live ones: a
 * wait that closes a cycle through other processes is reported once, naming
 * each process, thread, lock and line; in error mode one process is refused
 * with WEFT_EDEADLK and the others get their locks; consistent orders stay
 * silent; a process killed while waiting leaves nothing that could be
 * reported later; children started by spawn or forkserver take part. The
 * inversions behind them are reported too, apart (e->inversions). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

struct env {
  weft_lock *a, *b, *c;
  int holding[4]; /* each party holds its first lock */
  int going[4];   /* each party is about to wait for its second */
  int refused;    /* WEFT_EDEADLK answers, all processes */
  int got;        /* second locks taken */
  int reports;    /* of live deadlocks */
  int inversions; /* of lock-order inversions */
  char report[4096], inversion[4096]; /* the first of each */
};

static void record(const char *report, void *arg) {
  struct env *e = arg;
  if (strncmp(report, "weft: possible deadlock:", 24) == 0) {
    if (inc(&e->inversions) == 1) snprintf(e->inversion, sizeof e->inversion, "%s", report);
  } else if (inc(&e->reports) == 1) {
    snprintf(e->report, sizeof e->report, "%s", report);
  }
}

static struct env *new_env(void) {
  struct env *e = shared(sizeof *e);
  e->a = weft_lock_new(.name = "lock-A");
  e->b = weft_lock_new(.name = "lock-B");
  e->c = weft_lock_new(.name = "lock-C");
  ck_assert(e->a && e->b && e->c);
  weft_deadlock_set_hook(record, e); /* inherited by the children forked later */
  return e;
}

static void free_env(struct env *e) {
  weft_deadlock_set_hook(NULL, NULL);
  ck_assert_int_eq(weft_lock_free(e->a), 0);
  ck_assert_int_eq(weft_lock_free(e->b), 0);
  ck_assert_int_eq(weft_lock_free(e->c), 0);
  weft_shared_free(e);
}

/* Polls until process pid sleeps (in its acquire, once `going` is set). */
static bool wait_asleep(pid_t pid, double timeout) {
  double end = test_now() + timeout;
  while (test_now() < end) {
    if (process_state(pid) == 'S') return true;
    nap_ms(1);
  }
  return false;
}

static weft_process start_named(weft_process_target target, void *arg, const char *name) {
  weft_process p = weft_process_new(target, .arg = arg, .name = name);
  ck_assert_uint_ne(p.id, 0);
  ck_assert_int_eq(weft_process_start(p), 0);
  return p;
}

/* ---- two processes, warn: reported, then the test breaks the hang ---- */

static int child_b_then_a(void *arg) {
  struct env *e = arg;
  if (weft_lock_acquire(e->b, WEFT_FOREVER) != 0) return 1;
  st(&e->holding[1], 1);
  if (!wait_ge(&e->holding[0], 1, 10)) return 2;
  st(&e->going[1], 1);
  weft_lock_acquire(e->a, WEFT_FOREVER); /* killed here */
  return 3;
}

struct breaker {
  struct env *e;
  weft_process child;
};

static void *break_hang(void *arg) {
  struct breaker *b = arg;
  wait_ge(&b->e->reports, 1, 20); /* with no report the test fails below */
  weft_process_kill(b->child);
  return NULL;
}

START_TEST(two_processes_warn_report_names_everything) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  ck_assert_int_eq(weft_lock_acquire(e->a, WEFT_FOREVER), 0);
  st(&e->holding[0], 1);
  weft_process child = start_named(child_b_then_a, e, "ab-child");
  pid_t cpid = weft_process_pid(child);
  ck_assert(wait_ge(&e->going[1], 1, 10));
  ck_assert(wait_asleep(cpid, 10));
  struct breaker br = {e, child};
  pthread_t t = spawn(break_hang, &br);
  int r = weft_lock_acquire(e->b, WEFT_FOREVER); /* closes the cycle: reported, then waits */
  join(t);
  ck_assert_msg(r == WEFT_EOWNERDEAD || r == 0, "acquire: %d", r);
  ck_assert_int_eq(ld(&e->reports), 1);
  ck_assert_int_eq(ld(&e->inversions), 1); /* B -> A there, A -> B here: before the wait */
  const char *rep = e->report;
  char want[128];
  ck_assert_ptr_nonnull(strstr(rep, "would wait forever"));
  ck_assert_ptr_nonnull(strstr(rep, "\"lock-A\""));
  ck_assert_ptr_nonnull(strstr(rep, "\"lock-B\""));
  ck_assert_ptr_nonnull(strstr(rep, "\"ab-child\""));
  const char *me = weft_process_name(weft_current_process());
  snprintf(want, sizeof want, "\"%s\" (pid %d)", me, (int)getpid());
  ck_assert_msg(strstr(rep, want) != NULL, "no %s in:\n%s", want, rep);
  snprintf(want, sizeof want, "\"ab-child\" (pid %d)", (int)cpid);
  ck_assert_msg(strstr(rep, want) != NULL, "no %s in:\n%s", want, rep);
  /* The caller's acquire, the child's and where the caller took A. */
  ck_assert_msg(count_substr(rep, "test_deadlock_procs.c:") >= 3, "%s", rep);
  ck_assert_int_eq(weft_lock_release(e->b), 0);
  ck_assert_int_eq(weft_lock_release(e->a), 0);
  ck_assert_int_eq(finish_process(child, 10), -SIGKILL);
  free_env(e);
}
END_TEST

/* ---- two processes, error: one refused, both finish ---- */

struct party {
  struct env *e;
  int me, other;        /* indexes in holding/going */
  weft_lock *first, *second;
  bool wait_first;      /* the other waits before this one */
};

/* Holds first, waits for second; refused: backs off. 0 on success. */
static int run_party(struct party *p) {
  struct env *e = p->e;
  if (weft_lock_acquire(p->first, WEFT_FOREVER) != 0) return 1;
  st(&e->holding[p->me], 1);
  if (!wait_ge(&e->holding[p->other], 1, 10)) return 2;
  if (p->wait_first) {
    if (!wait_ge(&e->going[p->other], 1, 10)) return 3;
    pid_t other = p->me == 0 ? -1 : getppid();
    if (other > 0 && !wait_asleep(other, 10)) return 4;
  }
  st(&e->going[p->me], 1);
  int r = weft_lock_acquire(p->second, WEFT_FOREVER);
  if (r == WEFT_EDEADLK) {
    inc(&e->refused);
  } else if (r == 0) {
    inc(&e->got);
    weft_lock_release(p->second);
  } else {
    return 5;
  }
  weft_lock_release(p->first);
  return 0;
}

static struct party child_party;

static int child_run_party(void *arg) {
  (void)arg;
  return run_party(&child_party);
}

START_TEST(two_processes_error_one_refused) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  for (int round = 0; round < 20; round++) {
    int reports = ld(&e->reports);
    memset(e->holding, 0, sizeof e->holding);
    memset(e->going, 0, sizeof e->going);
    st(&e->refused, 0);
    st(&e->got, 0);
    bool parent_first = round % 2 == 0;
    child_party = (struct party){e, 1, 0, e->b, e->a, parent_first};
    weft_process child = start_named(child_run_party, NULL, "party");
    struct party mine = {e, 0, 1, e->a, e->b, !parent_first};
    if (mine.wait_first) {
      ck_assert_int_eq(weft_lock_acquire(e->a, WEFT_FOREVER), 0);
      st(&e->holding[0], 1);
      ck_assert(wait_ge(&e->holding[1], 1, 10));
      ck_assert(wait_ge(&e->going[1], 1, 10));
      ck_assert(wait_asleep(weft_process_pid(child), 10));
      st(&e->going[0], 1);
      int r = weft_lock_acquire(e->b, WEFT_FOREVER);
      ck_assert_msg(r == WEFT_EDEADLK || r == 0, "round %d: %d", round, r);
      if (r == WEFT_EDEADLK)
        inc(&e->refused);
      else {
        inc(&e->got);
        weft_lock_release(e->b);
      }
      weft_lock_release(e->a);
    } else {
      ck_assert_int_eq(run_party(&mine), 0);
    }
    ck_assert_int_eq(finish_process(child, 20), 0);
    ck_assert_msg(ld(&e->refused) == 1 && ld(&e->got) == 1, "round %d: refused %d, got %d", round,
                  ld(&e->refused), ld(&e->got));
    /* One report, by the refused process: a process reports the same chain
     * of locks once (a new child each round, the parent once). */
    ck_assert_int_le(ld(&e->reports) - reports, 1);
    if (round == 0) ck_assert_int_eq(ld(&e->reports), 1);
  }
  ck_assert_int_eq(ld(&e->reports), 11);
  ck_assert_ptr_nonnull(strstr(e->report, "\"party\""));
  ck_assert_int_eq(ld(&e->inversions), 1); /* the orders, once for the whole tree */
  free_env(e);
}
END_TEST

/* ---- three processes ---- */

struct three {
  struct env *e;
  int me;
  weft_lock *first, *second;
};

static struct three three_parties[3];

static int child_three(void *arg) {
  struct three *p = &three_parties[(int)(intptr_t)arg];
  struct env *e = p->e;
  if (weft_lock_acquire(p->first, WEFT_FOREVER) != 0) return 1;
  st(&e->holding[p->me], 1);
  if (!wait_ge(&e->going[p->me], 1, 20)) return 2; /* the parent's go */
  st(&e->going[p->me], 2);                         /* no nap from here to the wait */
  int r = weft_lock_acquire(p->second, WEFT_FOREVER);
  if (r == 0) {
    inc(&e->got);
    weft_lock_release(p->second);
  } else if (r == WEFT_EDEADLK) {
    inc(&e->refused);
  } else {
    return 4;
  }
  weft_lock_release(p->first);
  return 0;
}

START_TEST(three_processes_reported_once) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  /* 0 (the parent) holds A wants B; 1 holds B wants C; 2 holds C wants A. */
  three_parties[1] = (struct three){e, 1, e->b, e->c};
  three_parties[2] = (struct three){e, 2, e->c, e->a};
  ck_assert_int_eq(weft_lock_acquire(e->a, WEFT_FOREVER), 0);
  st(&e->holding[0], 1);
  weft_process c1 = start_named(child_three, (void *)(intptr_t)1, "third-1");
  weft_process c2 = start_named(child_three, (void *)(intptr_t)2, "third-2");
  ck_assert(wait_ge(&e->holding[1], 1, 10) && wait_ge(&e->holding[2], 1, 10));
  st(&e->going[1], 1);
  ck_assert(wait_ge(&e->going[1], 2, 10));
  ck_assert(wait_asleep(weft_process_pid(c1), 10));
  st(&e->going[2], 1);
  ck_assert(wait_ge(&e->going[2], 2, 10));
  ck_assert(wait_asleep(weft_process_pid(c2), 10));
  int r = weft_lock_acquire(e->b, WEFT_FOREVER); /* the last to wait: refused */
  ck_assert_msg(r == WEFT_EDEADLK, "%d, reports %d, refused %d: %s", r, ld(&e->reports),
                ld(&e->refused), e->report);
  ck_assert_int_eq(weft_lock_release(e->a), 0);
  ck_assert_int_eq(finish_process(c2, 20), 0);
  ck_assert_int_eq(finish_process(c1, 20), 0);
  ck_assert_int_eq(ld(&e->got), 2);
  ck_assert_int_eq(ld(&e->refused), 0);
  ck_assert_int_eq(ld(&e->reports), 1);
  ck_assert_int_eq(ld(&e->inversions), 1);
  ck_assert_ptr_nonnull(strstr(e->inversion, "inversion between 3 locks, across processes"));
  ck_assert_ptr_nonnull(strstr(e->report, "\"third-1\""));
  ck_assert_ptr_nonnull(strstr(e->report, "\"third-2\""));
  ck_assert_ptr_nonnull(strstr(e->report, "\"lock-C\""));
  free_env(e);
}
END_TEST

/* ---- a consistent order stays silent ---- */

#define PAIRS (100000 / SLOW)

static int child_in_order(void *arg) {
  struct env *e = arg;
  for (int i = 0; i < PAIRS / 4; i++) {
    if (weft_lock_acquire(e->a, WEFT_FOREVER) != 0) return 1;
    if (weft_lock_acquire(e->b, WEFT_FOREVER) != 0) return 2;
    weft_lock_release(e->b);
    weft_lock_release(e->a);
  }
  return 0;
}

START_TEST(consistent_order_across_four_processes_is_silent) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  weft_process p[4];
  for (int i = 0; i < 4; i++) p[i] = start_process(child_in_order, e);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(finish_process(p[i], 100), 0);
  ck_assert_int_eq(ld(&e->reports), 0);
  free_env(e);
}
END_TEST

/* ---- a process killed while waiting leaves no stale wait ---- */

START_TEST(killed_waiter_leaves_no_stale_wait) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  ck_assert_int_eq(weft_lock_acquire(e->a, WEFT_FOREVER), 0);
  st(&e->holding[0], 1);
  weft_process child = start_named(child_b_then_a, e, "killed");
  pid_t cpid = weft_process_pid(child);
  ck_assert(wait_ge(&e->going[1], 1, 10));
  ck_assert(wait_asleep(cpid, 10)); /* registered: holds B, waits for A */
  ck_assert_int_eq(weft_process_kill(child), 0);
  ck_assert_int_eq(finish_process(child, 10), -SIGKILL);
  /* Its slot says "waits for A", A is ours: with that stale wait, this
   * acquire would close a cycle. */
  int r = weft_lock_acquire(e->b, WEFT_FOREVER);
  ck_assert_int_eq(r, WEFT_EOWNERDEAD);
  ck_assert_int_eq(ld(&e->reports), 0);
  /* Its order B -> A outlives it: the program took both orders. */
  ck_assert_int_eq(ld(&e->inversions), 1);
  ck_assert_int_eq(weft_lock_release(e->b), 0);
  ck_assert_int_eq(weft_lock_release(e->a), 0);
  free_env(e);
}
END_TEST

/* ---- spawn and forkserver children use their parent's table ---- */

static int child_b_then_a_backs_off(void *arg) {
  struct env *e = *(struct env **)arg; /* the child's copy of the pointer */
  if (weft_lock_acquire(e->b, WEFT_FOREVER) != 0) return 1;
  st(&e->holding[1], 1);
  if (!wait_ge(&e->holding[0], 1, 10)) return 2;
  st(&e->going[1], 1);
  if (weft_lock_acquire(e->a, WEFT_FOREVER) != 0) return 3; /* the parent is refused */
  weft_lock_release(e->a);
  weft_lock_release(e->b);
  return 0;
}

START_TEST(spawned_children_share_the_wait_table) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  const char *methods[] = {"spawn", "forkserver"};
  for (int m = 0; m < 2; m++) {
    memset(e->holding, 0, sizeof e->holding);
    memset(e->going, 0, sizeof e->going);
    ck_assert_int_eq(weft_lock_acquire(e->a, WEFT_FOREVER), 0);
    st(&e->holding[0], 1);
    weft_process child = weft_process_new(child_b_then_a_backs_off, .args = &e, .args_size = sizeof e,
                                          .name = "spawned-child", .start_method = methods[m]);
    int started = weft_process_start(child);
    ck_assert_msg(started == 0, "%s: %s", methods[m], weft_last_error());
    ck_assert(wait_ge(&e->going[1], 1, 20));
    ck_assert(wait_asleep(weft_process_pid(child), 10));
    int r = weft_lock_acquire(e->b, WEFT_FOREVER);
    ck_assert_msg(r == WEFT_EDEADLK, "%s: %d", methods[m], r);
    ck_assert_int_eq(weft_lock_release(e->a), 0);
    ck_assert_int_eq(finish_process(child, 20), 0);
  }
  ck_assert_int_eq(ld(&e->reports), 1); /* the parent's, once for the same locks */
  ck_assert_ptr_nonnull(strstr(e->report, "\"spawned-child\""));
  ck_assert_int_eq(ld(&e->inversions), 1);
  ck_assert_ptr_nonnull(strstr(e->inversion, "\"spawned-child\""));
  free_env(e);
}
END_TEST

/* ---- a step through another thread of the caller's own process ---- */

struct second_thread {
  struct env *e;
  int has_c, go, tid, result;
};

/* Holds C, then waits (within its process) for A, which the main thread holds. */
static void *hold_c_want_a(void *arg) {
  struct second_thread *s = arg;
  st(&s->tid, (int)gettid());
  if (weft_lock_acquire(s->e->c, WEFT_FOREVER) != 0) return NULL;
  st(&s->has_c, 1);
  if (!wait_ge(&s->go, 1, 20)) return NULL;
  st(&s->go, 2); /* no nap from here to the wait */
  s->result = weft_lock_acquire(s->e->a, WEFT_FOREVER);
  if (s->result == 0) weft_lock_release(s->e->a);
  weft_lock_release(s->e->c);
  return NULL;
}

/* Holds B, then waits for C, which the parent's second thread holds. */
static int child_b_then_c(void *arg) {
  struct env *e = arg;
  if (weft_lock_acquire(e->b, WEFT_FOREVER) != 0) return 1;
  st(&e->holding[1], 1);
  if (!wait_ge(&e->going[1], 1, 20)) return 2;
  st(&e->going[1], 2);
  if (weft_lock_acquire(e->c, WEFT_FOREVER) != 0) return 3;
  weft_lock_release(e->c);
  weft_lock_release(e->b);
  return 0;
}

START_TEST(chain_through_a_thread_of_the_callers_process) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  ck_assert_int_eq(weft_lock_acquire(e->a, WEFT_FOREVER), 0);
  struct second_thread s = {.e = e};
  pthread_t t = spawn(hold_c_want_a, &s);
  ck_assert(wait_ge(&s.has_c, 1, 10));
  weft_process child = start_named(child_b_then_c, e, "bc-child");
  ck_assert(wait_ge(&e->holding[1], 1, 10));
  st(&s.go, 1);
  ck_assert(wait_ge(&s.go, 2, 10));
  double end = test_now() + 10;
  while (thread_state(ld(&s.tid)) != 'S' && test_now() < end) nap_ms(1);
  ck_assert_int_eq(thread_state(ld(&s.tid)), 'S');
  st(&e->going[1], 1);
  ck_assert(wait_ge(&e->going[1], 2, 10));
  ck_assert(wait_asleep(weft_process_pid(child), 10));
  /* B (the child's) -> C (our second thread's, it waits for A) -> A (ours). */
  int r = weft_lock_acquire(e->b, WEFT_FOREVER);
  ck_assert_msg(r == WEFT_EDEADLK, "%d", r);
  ck_assert_int_eq(weft_lock_release(e->a), 0);
  join(t);
  ck_assert_int_eq(s.result, 0);
  ck_assert_int_eq(finish_process(child, 20), 0);
  ck_assert_int_eq(ld(&e->reports), 1);
  ck_assert_int_eq(ld(&e->inversions), 1);
  char want[64];
  snprintf(want, sizeof want, "(tid %d), which waits for \"lock-A\"", ld(&s.tid));
  ck_assert_msg(strstr(e->report, want) != NULL, "no %s in:\n%s", want, e->report);
  ck_assert_ptr_nonnull(strstr(e->report, "\"bc-child\""));
  free_env(e);
}
END_TEST

/* ---- RLocks ---- */

struct rlocks {
  weft_rlock *a, *b;
};

static int child_rlock_b_then_a(void *arg) {
  struct env *e = arg;
  struct rlocks *rl = (struct rlocks *)(e + 1);
  if (weft_rlock_acquire(rl->b, WEFT_FOREVER) != 0) return 1;
  if (weft_rlock_acquire(rl->b, WEFT_FOREVER) != 0) return 1; /* re-entered: still one holder */
  st(&e->holding[1], 1);
  if (!wait_ge(&e->holding[0], 1, 10)) return 2;
  st(&e->going[1], 1);
  if (weft_rlock_acquire(rl->a, WEFT_FOREVER) != 0) return 3; /* the parent is refused */
  weft_rlock_release(rl->a);
  weft_rlock_release(rl->b);
  weft_rlock_release(rl->b);
  return 0;
}

START_TEST(rlocks_between_processes) {
  struct env *e = shared(sizeof *e + sizeof(struct rlocks));
  struct rlocks *rl = (struct rlocks *)(e + 1);
  rl->a = weft_rlock_new(.name = "rlock-A");
  rl->b = weft_rlock_new(.name = "rlock-B");
  ck_assert(rl->a && rl->b);
  weft_deadlock_set_hook(record, e);
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  /* Taken after the fork: a forked child counts an RLock its forking thread
   * held then as its own. */
  weft_process child = start_named(child_rlock_b_then_a, e, "rlock-child");
  ck_assert(wait_ge(&e->holding[1], 1, 10));
  ck_assert_int_eq(weft_rlock_acquire(rl->a, WEFT_FOREVER), 0);
  st(&e->holding[0], 1);
  ck_assert(wait_ge(&e->going[1], 1, 10));
  ck_assert(wait_asleep(weft_process_pid(child), 10));
  ck_assert_int_eq(weft_rlock_acquire(rl->b, WEFT_FOREVER), WEFT_EDEADLK);
  ck_assert_int_eq(weft_rlock_release(rl->a), 0);
  ck_assert_int_eq(finish_process(child, 20), 0);
  ck_assert_int_eq(ld(&e->reports), 1);
  ck_assert_int_eq(ld(&e->inversions), 1);
  ck_assert_ptr_nonnull(strstr(e->report, "\"rlock-B\""));
  ck_assert_ptr_nonnull(strstr(e->report, "\"rlock-child\""));
  weft_deadlock_set_hook(NULL, NULL);
  ck_assert_int_eq(weft_rlock_free(rl->a), 0);
  ck_assert_int_eq(weft_rlock_free(rl->b), 0);
  weft_shared_free(e);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("test_deadlock_procs");
  TCase *tc = weft_tcase("deadlock_procs", 60);
  tcase_add_test(tc, two_processes_warn_report_names_everything);
  tcase_add_test(tc, two_processes_error_one_refused);
  tcase_add_test(tc, three_processes_reported_once);
  tcase_add_test(tc, consistent_order_across_four_processes_is_silent);
  tcase_add_test(tc, killed_waiter_leaves_no_stale_wait);
  tcase_add_test(tc, spawned_children_share_the_wait_table);
  tcase_add_test(tc, chain_through_a_thread_of_the_callers_process);
  tcase_add_test(tc, rlocks_between_processes);
  suite_add_tcase(s, tc);
  return s;
}
