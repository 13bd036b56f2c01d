/* SPDX-License-Identifier: MIT */
/* Deadlocks between processes sharing Locks in shared memory. Live ones: a
 * wait that closes a cycle through other processes is reported once, naming
 * each process, thread, lock and line; in error mode one process is refused
 * with WEFT_EDEADLK and the others get their locks; consistent orders stay
 * silent; a process killed while waiting leaves nothing that could be
 * reported later; children started by spawn or forkserver take part; a
 * cycle through a wait within a process is found whichever member waits
 * last. Lock orders: an inversion whose orders come from different
 * processes is reported the first time, with no hang, as within a process. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
  int report_claims, inversion_claims; /* who writes the text below */
  char report[4096], inversion[4096]; /* the first of each */
};

/* The text is written before the count is raised: a test that sees the
 * count may kill the reporting process at once. */
static void record(const char *report, void *arg) {
  struct env *e = arg;
  if (strncmp(report, "weft: possible deadlock:", 24) == 0) {
    if (inc(&e->inversion_claims) == 1) snprintf(e->inversion, sizeof e->inversion, "%s", report);
    inc(&e->inversions);
  } else {
    if (inc(&e->report_claims) == 1) snprintf(e->report, sizeof e->report, "%s", report);
    inc(&e->reports);
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

/* ---- a cycle through a wait within a process ---- */

/* The parent's thread T1 holds the private "lock-P" and waits for A, which
 * the child holds; the child waits for B, which the parent's thread T2
 * holds; T2 waits for lock-P: a step within the parent, for a lock no other
 * process can read. */
static weft_lock lock_p = WEFT_LOCK_INIT_NAMED("lock-P");

enum { T1, T2, CHILD }; /* the members, as indexes in holding and going */

struct member {
  struct env *e;
  int me;
  weft_lock *first, *second;
  int tid, result;
};

static void *member_thread(void *arg) {
  struct member *m = arg;
  struct env *e = m->e;
  st(&m->tid, (int)gettid());
  st(&m->result, -1);
  if (weft_lock_acquire(m->first, WEFT_FOREVER) != 0) return NULL;
  st(&e->holding[m->me], 1);
  if (wait_ge(&e->going[m->me], 1, 20)) {
    st(&e->going[m->me], 2); /* no nap from here to the wait */
    int r = weft_lock_acquire(m->second, WEFT_FOREVER);
    if (r == 0 || r == WEFT_EOWNERDEAD) weft_lock_release(m->second);
    st(&m->result, r);
  }
  weft_lock_release(m->first);
  return NULL;
}

static int child_member(void *arg) {
  struct env *e = arg;
  if (weft_lock_acquire(e->a, WEFT_FOREVER) != 0) return 1;
  st(&e->holding[CHILD], 1);
  if (!wait_ge(&e->going[CHILD], 1, 20)) return 2;
  st(&e->going[CHILD], 2);
  int r = weft_lock_acquire(e->b, WEFT_FOREVER);
  if (r == 0) weft_lock_release(e->b);
  weft_lock_release(e->a);
  return r == 0 ? 0 : r == WEFT_EDEADLK ? 10 : 3;
}

/* Lets a member go to its second lock and, unless it is the last, waits
 * until it sleeps there (seen once: a waiter for a lock held by another
 * process wakes every 50 ms to see that the holder lives). */
static void let_go(struct env *e, int who, const struct member *m, pid_t child, bool last) {
  st(&e->going[who], 1);
  ck_assert(wait_ge(&e->going[who], 2, 10));
  if (last) return;
  double end = test_now() + 10;
  bool asleep;
  while (!(asleep = (who == CHILD ? process_state(child) : thread_state(ld(&m->tid))) == 'S') &&
         test_now() < end)
    nap_ms(1);
  ck_assert_msg(asleep, "member %d never slept", who);
}

/* The cycle, with `last` the member that waits last: in error mode it is
 * refused and the others get their locks; in warn mode all wait, and the
 * test breaks the hang by killing the child. One report either way. */
static void cycle_through_a_wait_within(int last, weft_deadlock_mode mode) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(mode), 0);
  static struct member t1, t2;
  t1 = (struct member){.e = e, .me = T1, .first = &lock_p, .second = e->a};
  t2 = (struct member){.e = e, .me = T2, .first = e->b, .second = &lock_p};
  weft_process child = start_named(child_member, e, "mixed-child");
  pid_t cpid = weft_process_pid(child);
  pthread_t p1 = spawn(member_thread, &t1), p2 = spawn(member_thread, &t2);
  ck_assert(wait_ge(&e->holding[T1], 1, 10) && wait_ge(&e->holding[T2], 1, 10) &&
            wait_ge(&e->holding[CHILD], 1, 10));
  const struct member *ms[3] = {&t1, &t2, NULL};
  for (int who = 0; who < 3; who++)
    if (who != last) let_go(e, who, ms[who], cpid, false);
  let_go(e, last, ms[last], cpid, true);
  ck_assert_msg(wait_ge(&e->reports, 1, 20), "no report");
  if (mode == WEFT_DEADLOCK_WARN) ck_assert_int_eq(weft_process_kill(child), 0);
  join(p1);
  join(p2);
  int code = finish_process(child, 20);
  ck_assert_int_eq(ld(&e->reports), 1);
  const char *rep = e->report;
  ck_assert_msg(strstr(rep, "the chain of waits, across processes:\n") != NULL &&
                    strstr(rep, "\"lock-P\"") != NULL && strstr(rep, "\"mixed-child\"") != NULL,
                "%s", rep);
  char want[96];
  snprintf(want, sizeof want, "(tid %d), which waits for \"lock-P\"", ld(&t2.tid));
  ck_assert_msg(strstr(rep, want) != NULL || last == T2, "no %s in:\n%s", want, rep);
  if (mode == WEFT_DEADLOCK_WARN) {
    ck_assert_int_eq(code, -SIGKILL);
    ck_assert_int_eq(ld(&t1.result), WEFT_EOWNERDEAD); /* A, from the killed child */
    ck_assert_int_eq(ld(&t2.result), 0);
  } else {
    ck_assert_int_eq(code, last == CHILD ? 10 : 0);
    ck_assert_int_eq(ld(&t1.result), last == T1 ? WEFT_EDEADLK : 0);
    ck_assert_int_eq(ld(&t2.result), last == T2 ? WEFT_EDEADLK : 0);
  }
  free_env(e);
}

/* T2's wait, within its process, is the last: it follows the chain out
 * through the child and back. */
START_TEST(wait_within_a_process_closes_a_cycle_warn) { cycle_through_a_wait_within(T2, WEFT_DEADLOCK_WARN); }
END_TEST

START_TEST(wait_within_a_process_closes_a_cycle_error) { cycle_through_a_wait_within(T2, WEFT_DEADLOCK_ERROR); }
END_TEST

/* The child waits last: it follows the chain through T2's wait, for a lock
 * it cannot read, by the holder T2 recorded. */
START_TEST(chain_through_a_wait_within_another_process) { cycle_through_a_wait_within(CHILD, WEFT_DEADLOCK_ERROR); }
END_TEST

START_TEST(chain_through_a_wait_within_another_process_warn) { cycle_through_a_wait_within(CHILD, WEFT_DEADLOCK_WARN); }
END_TEST

START_TEST(chain_through_a_wait_within_the_callers_process) { cycle_through_a_wait_within(T1, WEFT_DEADLOCK_ERROR); }
END_TEST

/* A timed wait that closes a cycle within a process that shares memory
 * (both its threads are in the wait table) is no live deadlock: it ends by
 * itself, as within any process. */
struct timed_other {
  int has_y, result;
};

static weft_lock lock_x = WEFT_LOCK_INIT_NAMED("lock-X"), lock_y = WEFT_LOCK_INIT_NAMED("lock-Y");

static void *hold_y_then_x_timed(void *arg) {
  struct timed_other *o = arg;
  if (weft_lock_acquire(&lock_y, WEFT_FOREVER) != 0) return NULL;
  st(&o->has_y, 1);
  if (wait_ge(&o->has_y, 2, 20)) st(&o->result, weft_lock_acquire(&lock_x, 0.3));
  weft_lock_release(&lock_y);
  return NULL;
}

START_TEST(timed_cycle_within_a_sharing_process_is_not_reported) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  ck_assert_int_eq(weft_lock_acquire(e->c, WEFT_FOREVER), 0); /* shared: this wait joins the table */
  ck_assert_int_eq(weft_lock_acquire(&lock_x, WEFT_FOREVER), 0);
  struct timed_other o = {0, 0};
  pthread_t t = spawn(hold_y_then_x_timed, &o);
  ck_assert(wait_ge(&o.has_y, 1, 10));
  st(&o.has_y, 2);
  ck_assert_int_eq(weft_lock_acquire(&lock_y, WEFT_FOREVER), 0); /* once the other times out */
  join(t);
  ck_assert_int_eq(o.result, WEFT_ETIMEDOUT);
  ck_assert_int_eq(ld(&e->reports), 0);
  weft_lock_release(&lock_y);
  weft_lock_release(&lock_x);
  weft_lock_release(e->c);
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

/* ---- lock orders across processes: inversions found before any hang ---- */

/* stderr caught in a memory file, as the reports on it are read. */
struct caught {
  int fd, saved;
};

static void catch_stderr(struct caught *c) {
  c->fd = memfd_create("stderr", 0);
  ck_assert_int_ge(c->fd, 0);
  fflush(stderr);
  c->saved = dup(2);
  ck_assert_int_ge(c->saved, 0);
  dup2(c->fd, 2);
}

static void release_stderr(struct caught *c, char *out, size_t size) {
  fflush(stderr);
  dup2(c->saved, 2);
  close(c->saved);
  ssize_t n = pread(c->fd, out, size - 1, 0);
  close(c->fd);
  out[n > 0 ? n : 0] = '\0';
}

/* Takes first, then second, and lets both go: an order, no hang. */
static int take_in_order(weft_lock *first, weft_lock *second) {
  if (weft_lock_acquire(first, WEFT_FOREVER) != 0) return 1;
  int r = weft_lock_acquire(second, WEFT_FOREVER);
  if (r == 0) weft_lock_release(second);
  weft_lock_release(first);
  return r == 0 ? 0 : 2;
}

static int child_a_then_b(void *arg) {
  struct env *e = arg;
  return take_in_order(e->a, e->b);
}

/* Runs target(arg) in a child named name to its end: its exit code. */
static int run_child(weft_process_target target, void *arg, const char *name, pid_t *pid) {
  weft_process p = start_named(target, arg, name);
  if (pid != NULL) *pid = weft_process_pid(p);
  return finish_process(p, 30);
}

START_TEST(inversion_across_processes_is_reported_on_stderr) {
  struct env *e = new_env();
  weft_deadlock_set_hook(NULL, NULL); /* to stderr, as a program sees it */
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  pid_t cpid = 0;
  ck_assert_int_eq(run_child(child_a_then_b, e, "ab-first", &cpid), 0); /* gone now */
  static char out[16384];
  struct caught c;
  catch_stderr(&c);
  int r = take_in_order(e->b, e->a); /* closes the cycle: reported, no hang */
  int again = take_in_order(e->b, e->a);
  int child_again = run_child(child_a_then_b, e, "ab-again", NULL);
  release_stderr(&c, out, sizeof out);
  ck_assert_int_eq(r, 0);
  ck_assert_int_eq(again, 0);
  ck_assert_int_eq(child_again, 0);
  ck_assert_msg(count_substr(out, "weft: possible deadlock") == 1, "%s", out);
  ck_assert_ptr_nonnull(strstr(out, "lock-order inversion between 2 locks, across processes"));
  const char *me = weft_process_name(weft_current_process());
  char want[256];
  snprintf(want, sizeof want,
           "MainThread (tid %d) of process \"%s\" (pid %d) acquires \"lock-A\" at "
           "tests/test_deadlock_procs.c:",
           (int)gettid(), me, (int)getpid());
  ck_assert_msg(strstr(out, want) != NULL, "no %s in:\n%s", want, out);
  ck_assert_ptr_nonnull(
      strstr(out, "while holding \"lock-B\" (acquired at tests/test_deadlock_procs.c:"));
  ck_assert_ptr_nonnull(strstr(out, "\"lock-A\" initialised at tests/test_deadlock_procs.c:"));
  snprintf(want, sizeof want,
           "\"lock-A\" -> \"lock-B\": MainThread (tid %d) of process \"ab-first\" (pid %d) "
           "took the second at tests/test_deadlock_procs.c:",
           (int)cpid, (int)cpid);
  ck_assert_msg(strstr(out, want) != NULL, "no %s in:\n%s", want, out);
  ck_assert_ptr_nonnull(strstr(out, "thread 1 holds \"lock-B\", wants \"lock-A\""));
  ck_assert_ptr_nonnull(strstr(out, "thread 2 holds \"lock-A\", wants \"lock-B\""));
  free_env(e);
}
END_TEST

static weft_lock tx = WEFT_LOCK_INIT_NAMED("thread-X"), ty = WEFT_LOCK_INIT_NAMED("thread-Y");

static void *x_then_y(void *arg) {
  (void)arg;
  take_in_order(&tx, &ty);
  return NULL;
}

/* Error mode refuses an acquire that would close a live cycle; an
 * inversion is reported and the acquire goes on, within a process as
 * across processes. */
START_TEST(inversion_across_processes_in_error_mode_answers_as_within_a_process) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  pthread_t t = spawn(x_then_y, NULL);
  join(t);
  ck_assert_int_eq(weft_lock_acquire(&ty, WEFT_FOREVER), 0);
  int within = weft_lock_acquire(&tx, WEFT_FOREVER);
  if (within == 0) weft_lock_release(&tx);
  weft_lock_release(&ty);
  ck_assert_int_eq(ld(&e->inversions), 1);

  ck_assert_int_eq(run_child(child_a_then_b, e, "ab-first", NULL), 0);
  ck_assert_int_eq(weft_lock_acquire(e->b, WEFT_FOREVER), 0);
  int across = weft_lock_acquire(e->a, WEFT_FOREVER);
  ck_assert_int_eq(across, within);
  ck_assert_int_eq(weft_lock_locked(e->a), across == 0);
  if (across == 0) weft_lock_release(e->a);
  weft_lock_release(e->b);
  ck_assert_int_eq(ld(&e->inversions), 2);
  ck_assert_int_eq(ld(&e->reports), 0);
  ck_assert_ptr_nonnull(strstr(e->inversion, "\"thread-X\""));
  free_env(e);
}
END_TEST

/* The child's copy of the pointers: a spawned child has its own image. */
static int spawned_a_then_b(void *arg) {
  weft_lock *const *pair = arg;
  return take_in_order(pair[0], pair[1]);
}

START_TEST(inversion_with_spawn_and_forkserver_children) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  const char *methods[] = {"spawn", "forkserver"};
  for (int m = 0; m < 2; m++) {
    weft_lock *pair[2] = {weft_lock_new(.name = m == 0 ? "spawn-A" : "server-A"),
                          weft_lock_new(.name = m == 0 ? "spawn-B" : "server-B")};
    ck_assert(pair[0] && pair[1]);
    weft_process p = weft_process_new(spawned_a_then_b, .args = pair, .args_size = sizeof pair,
                                      .name = "xo-spawned", .start_method = methods[m]);
    ck_assert_msg(weft_process_start(p) == 0, "%s: %s", methods[m], weft_last_error());
    pid_t cpid = weft_process_pid(p);
    ck_assert_int_eq(finish_process(p, 30), 0);
    ck_assert_int_eq(take_in_order(pair[1], pair[0]), 0);
    ck_assert_int_eq(ld(&e->inversions), m + 1);
    if (m == 0) {
      char want[64];
      snprintf(want, sizeof want, "of process \"xo-spawned\" (pid %d)", (int)cpid);
      ck_assert_msg(strstr(e->inversion, want) != NULL, "no %s in:\n%s", want, e->inversion);
      ck_assert_ptr_nonnull(strstr(e->inversion, "\"spawn-A\" -> \"spawn-B\""));
    }
    ck_assert_int_eq(weft_lock_free(pair[0]), 0);
    ck_assert_int_eq(weft_lock_free(pair[1]), 0);
  }
  free_env(e);
}
END_TEST

#define NORDERED 6

struct ordered {
  weft_lock *l[NORDERED];
  int rounds;
};

/* Nested pairs and triples of the locks, always lower index first. */
static int child_nested_in_order(void *arg) {
  struct ordered *o = arg;
  unsigned seed = (unsigned)getpid();
  for (int r = 0; r < o->rounds; r++) {
    int i = rand_r(&seed) % (NORDERED - 1);
    int j = i + 1 + rand_r(&seed) % (NORDERED - 1 - i);
    int k = j + 1 < NORDERED && rand_r(&seed) % 2 ? j + 1 + rand_r(&seed) % (NORDERED - 1 - j) : -1;
    if (weft_lock_acquire(o->l[i], WEFT_FOREVER) != 0) return 1;
    if (weft_lock_acquire(o->l[j], WEFT_FOREVER) != 0) return 2;
    if (k >= 0 && weft_lock_acquire(o->l[k], WEFT_FOREVER) != 0) return 3;
    if (k >= 0) weft_lock_release(o->l[k]);
    weft_lock_release(o->l[j]);
    weft_lock_release(o->l[i]);
  }
  return 0;
}

static int child_last_then_first(void *arg) {
  struct ordered *o = arg;
  return take_in_order(o->l[NORDERED - 1], o->l[0]);
}

START_TEST(consistent_orders_across_four_processes_stay_silent) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  struct ordered *o = shared(sizeof *o);
  static const char *names[NORDERED] = {"L0", "L1", "L2", "L3", "L4", "L5"};
  for (int i = 0; i < NORDERED; i++)
    ck_assert_ptr_nonnull(o->l[i] = weft_lock_new(.name = names[i]));
  o->rounds = 4000 / SLOW;
  weft_process p[4];
  for (int i = 0; i < 4; i++) p[i] = start_process(child_nested_in_order, o);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(finish_process(p[i], 100), 0);
  ck_assert_int_eq(ld(&e->inversions) + ld(&e->reports), 0);
  /* Every order the others could take is in the table: the one against
   * them is reported at once. */
  ck_assert_int_eq(run_child(child_last_then_first, o, "against", NULL), 0);
  ck_assert_int_eq(ld(&e->inversions), 1);
  ck_assert_ptr_nonnull(strstr(e->inversion, "\"against\""));
  for (int i = 0; i < NORDERED; i++) ck_assert_int_eq(weft_lock_free(o->l[i]), 0);
  weft_shared_free(o);
  free_env(e);
}
END_TEST

static int child_take_pair(void *arg) {
  weft_lock **pair = arg;
  return take_in_order(pair[0], pair[1]);
}

START_TEST(three_process_order_cycle_is_reported_once) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  weft_lock **pairs = shared(6 * sizeof *pairs);
  weft_lock *cycle[4] = {e->a, e->b, e->c, e->a};
  static const char *names[3] = {"order-1", "order-2", "order-3"};
  for (int i = 0; i < 3; i++) {
    pairs[2 * i] = cycle[i];
    pairs[2 * i + 1] = cycle[i + 1];
    ck_assert_int_eq(run_child(child_take_pair, &pairs[2 * i], names[i], NULL), 0);
    ck_assert_int_eq(ld(&e->inversions), i == 2);
  }
  ck_assert_ptr_nonnull(
      strstr(e->inversion, "lock-order inversion between 3 locks, across processes"));
  for (int i = 0; i < 3; i++) ck_assert_ptr_nonnull(strstr(e->inversion, names[i]));
  /* The same cycle taken again, by new processes or all by this one. */
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(run_child(child_take_pair, &pairs[2 * i], "again", NULL), 0);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(take_in_order(cycle[i], cycle[i + 1]), 0);
  ck_assert_int_eq(ld(&e->inversions), 1);
  weft_shared_free(pairs);
  free_env(e);
}
END_TEST

/* ---- what adds no order across processes ---- */

struct quiet {
  weft_rlock *r;
  weft_cond *k;
  weft_lock *a, *b, *c, *d, *f, *y, *z;
};

/* Re-enters R under A, waits on K holding Z, tries B and times C under A,
 * and takes F blocking under D taken by a try (that order counts). */
static int child_quiet(void *arg) {
  struct quiet *q = arg;
  if (weft_rlock_acquire(q->r, WEFT_FOREVER) != 0 || weft_lock_acquire(q->a, WEFT_FOREVER) != 0)
    return 1;
  if (weft_rlock_acquire(q->r, WEFT_FOREVER) != 0) return 2; /* no A -> R */
  weft_rlock_release(q->r);
  weft_lock_release(q->a);
  weft_rlock_release(q->r);
  if (weft_cond_acquire(q->k, WEFT_FOREVER) != 0 || weft_lock_acquire(q->z, WEFT_FOREVER) != 0)
    return 3;
  if (weft_cond_wait(q->k, 0.01) != WEFT_ETIMEDOUT) return 4; /* back under Z: no Z -> K */
  weft_lock_release(q->z);
  weft_cond_release(q->k);
  if (weft_lock_acquire(q->a, WEFT_FOREVER) != 0) return 5;
  if (weft_lock_acquire(q->b, 0) != 0) return 6; /* no A -> B */
  weft_lock_release(q->b);
  if (weft_lock_acquire(q->c, 1.0) != 0) return 7; /* no A -> C */
  weft_lock_release(q->c);
  weft_lock_release(q->a);
  if (weft_lock_acquire(q->d, 0) != 0) return 8;
  if (weft_lock_acquire(q->f, WEFT_FOREVER) != 0) return 9; /* D -> F */
  weft_lock_release(q->f);
  weft_lock_release(q->d);
  return 0;
}

START_TEST(reentry_condition_waits_and_tries_add_no_orders_across_processes) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  struct quiet *q = shared(sizeof *q);
  q->r = weft_rlock_new(.name = "R");
  q->k = weft_cond_new(.name = "K");
  q->a = weft_lock_new(.name = "A");
  q->b = weft_lock_new(.name = "B");
  q->c = weft_lock_new(.name = "C");
  q->d = weft_lock_new(.name = "D");
  q->f = weft_lock_new(.name = "F");
  q->y = weft_lock_new(.name = "Y");
  q->z = weft_lock_new(.name = "Z");
  ck_assert(q->r && q->k && q->a && q->b && q->c && q->d && q->f && q->y && q->z);
  ck_assert_int_eq(run_child(child_quiet, q, "quiet", NULL), 0);
  ck_assert_int_eq(ld(&e->inversions), 0);
  /* Each would close a cycle through an order the child must not have
   * given: A -> R (R -> Y -> A), Z -> K (K -> Y -> Z), A -> B, A -> C. */
  ck_assert_int_eq(weft_rlock_acquire(q->r, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(q->y, WEFT_FOREVER), 0);
  weft_lock_release(q->y);
  weft_rlock_release(q->r);
  ck_assert_int_eq(take_in_order(q->y, q->a), 0);
  ck_assert_int_eq(weft_cond_acquire(q->k, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(q->y, WEFT_FOREVER), 0);
  weft_lock_release(q->y);
  weft_cond_release(q->k);
  ck_assert_int_eq(take_in_order(q->y, q->z), 0);
  ck_assert_int_eq(take_in_order(q->b, q->a), 0);
  ck_assert_int_eq(take_in_order(q->c, q->a), 0);
  ck_assert_msg(ld(&e->inversions) == 0, "%s", e->inversion);
  /* A blocking acquire under a lock taken by a try does count. */
  ck_assert_int_eq(take_in_order(q->f, q->d), 0);
  ck_assert_int_eq(ld(&e->inversions), 1);
  ck_assert_ptr_nonnull(strstr(e->inversion, "\"D\" -> \"F\""));
  weft_rlock_free(q->r);
  weft_cond_free(q->k);
  weft_lock *locks[] = {q->a, q->b, q->c, q->d, q->f, q->y, q->z};
  for (size_t i = 0; i < sizeof locks / sizeof locks[0]; i++)
    ck_assert_int_eq(weft_lock_free(locks[i]), 0);
  weft_shared_free(q);
  free_env(e);
}
END_TEST

/* Takes A then B, then ends B's life and makes a new lock in its memory:
 * by weft_lock_destroy and weft_lock_init, or (zeroing) by weft_lock_init
 * alone. */
static int child_then_new_b(void *arg) {
  struct env *e = arg;
  int r = take_in_order(e->a, e->b);
  if (r != 0) return r;
  if (ld(&e->going[0]) == 0) {
    if (weft_lock_destroy(e->b) != 0) return 3;
  } else {
    memset(e->b, 0, sizeof *e->b);
  }
  return weft_lock_init(e->b, .name = "new-B") == 0 ? 0 : 4;
}

static int child_a_then_b_and_c(void *arg) {
  struct env *e = arg;
  int r = take_in_order(e->a, e->b);
  return r != 0 ? r : take_in_order(e->a, e->c);
}

START_TEST(a_shared_lock_made_again_in_old_memory_has_no_old_orders) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  for (int how = 0; how < 2; how++) { /* destroyed, then zeroed */
    st(&e->going[0], how);
    ck_assert_int_eq(run_child(child_then_new_b, e, "renewer", NULL), 0);
    ck_assert_int_eq(take_in_order(e->b, e->a), 0); /* the new B: no A -> B yet */
    ck_assert_msg(ld(&e->inversions) == 0, "%s", e->inversion);
    if (how == 0) {
      weft_lock *c = e->c; /* the new B's place, for the zeroed round */
      e->c = e->b;
      e->b = c;
    }
  }
  /* Their own orders count: A -> each new B, after B -> A here. */
  ck_assert_int_eq(run_child(child_a_then_b_and_c, e, "late", NULL), 0);
  ck_assert_int_eq(ld(&e->inversions), 2);
  ck_assert_ptr_nonnull(strstr(e->inversion, "\"new-B\""));
  free_env(e);
}
END_TEST

/* ---- a lock is its memory, wherever a process maps it ---- */

struct named {
  char name[64];
  void *child_base;
};

static int child_attach_a_then_b(void *arg) {
  struct named *n = arg;
  weft_shm *s = weft_shm_attach(n->name); /* a second mapping, elsewhere */
  if (s == NULL) return 1;
  weft_lock *l = weft_shm_buf(s);
  n->child_base = l;
  int r = take_in_order(&l[0], &l[1]);
  weft_shm_close(s);
  return r == 0 ? 0 : 2;
}

START_TEST(locks_in_a_segment_mapped_elsewhere_keep_their_orders) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  struct named *n = shared(sizeof *n);
  snprintf(n->name, sizeof n->name, "/weft-test-xorder-%d", (int)getpid());
  weft_shm *s = weft_shm_new(2 * sizeof(weft_lock), .name = n->name);
  ck_assert_ptr_nonnull(s);
  weft_lock *l = weft_shm_buf(s);
  ck_assert_int_eq(weft_lock_init(&l[0], .name = "seg-A"), 0);
  ck_assert_int_eq(weft_lock_init(&l[1], .name = "seg-B"), 0);
  ck_assert_int_eq(run_child(child_attach_a_then_b, n, "attacher", NULL), 0);
  ck_assert_ptr_nonnull(n->child_base);
  ck_assert_ptr_ne(n->child_base, l);
  ck_assert_int_eq(take_in_order(&l[1], &l[0]), 0);
  ck_assert_int_eq(ld(&e->inversions), 1);
  ck_assert_ptr_nonnull(strstr(e->inversion, "\"seg-A\" -> \"seg-B\": MainThread"));
  ck_assert_int_eq(weft_lock_destroy(&l[0]), 0);
  ck_assert_int_eq(weft_lock_destroy(&l[1]), 0);
  ck_assert_int_eq(weft_shm_unlink(s), 0);
  ck_assert_int_eq(weft_shm_close(s), 0);
  weft_shared_free(n);
  free_env(e);
}
END_TEST

/* ---- the table's bounds ---- */

/* More shared locks than the table holds, made and freed one pair at a
 * time: each leaves with its orders, so the table never fills. */
START_TEST(freed_shared_locks_leave_the_order_table) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  static char out[4096];
  struct caught c;
  catch_stderr(&c);
  for (int i = 0; i < 1500; i++) {
    weft_lock *x = weft_lock_new(.name = "x"), *y = weft_lock_new(.name = "y");
    ck_assert(x && y);
    ck_assert_int_eq(take_in_order(x, y), 0);
    ck_assert_int_eq(weft_lock_free(x), 0);
    ck_assert_int_eq(weft_lock_free(y), 0);
  }
  ck_assert_int_eq(run_child(child_a_then_b, e, "ab-first", NULL), 0);
  ck_assert_int_eq(take_in_order(e->b, e->a), 0);
  release_stderr(&c, out, sizeof out);
  ck_assert_msg(strstr(out, "is full") == NULL, "%s", out);
  ck_assert_int_eq(ld(&e->inversions), 1);
  free_env(e);
}
END_TEST

struct many {
  weft_lock *l;
};

static int child_second_then_first(void *arg) {
  struct many *m = arg;
  return take_in_order(&m->l[1], &m->l[0]);
}

/* Past its bound the table says so once and records no more; what it
 * holds still counts. */
START_TEST(a_full_order_table_says_so_once) {
  struct env *e = new_env();
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  enum { N = 1100 };
  struct many *m = shared(sizeof *m);
  m->l = shared(N * sizeof *m->l);
  for (int i = 0; i < N; i++) ck_assert_int_eq(weft_lock_init(&m->l[i]), 0);
  static char out[4096];
  struct caught c;
  catch_stderr(&c);
  for (int i = 1; i < N; i++) ck_assert_int_eq(take_in_order(&m->l[0], &m->l[i]), 0);
  ck_assert_int_eq(run_child(child_second_then_first, m, "late", NULL), 0);
  release_stderr(&c, out, sizeof out);
  ck_assert_msg(count_substr(out, "weft: the table of lock orders across processes is full") == 1,
                "%s", out);
  ck_assert_int_eq(ld(&e->inversions), 1);
  ck_assert_ptr_nonnull(strstr(e->inversion, "\"late\""));
  weft_shared_free(m->l);
  weft_shared_free(m);
  free_env(e);
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
  tcase_add_test(tc, wait_within_a_process_closes_a_cycle_warn);
  tcase_add_test(tc, wait_within_a_process_closes_a_cycle_error);
  tcase_add_test(tc, chain_through_a_wait_within_another_process);
  tcase_add_test(tc, chain_through_a_wait_within_another_process_warn);
  tcase_add_test(tc, chain_through_a_wait_within_the_callers_process);
  tcase_add_test(tc, timed_cycle_within_a_sharing_process_is_not_reported);
  suite_add_tcase(s, tc);
  tc = weft_tcase("orders", 60);
  tcase_add_test(tc, inversion_across_processes_is_reported_on_stderr);
  tcase_add_test(tc, inversion_across_processes_in_error_mode_answers_as_within_a_process);
  tcase_add_test(tc, inversion_with_spawn_and_forkserver_children);
  tcase_add_test(tc, consistent_orders_across_four_processes_stay_silent);
  tcase_add_test(tc, three_process_order_cycle_is_reported_once);
  tcase_add_test(tc, reentry_condition_waits_and_tries_add_no_orders_across_processes);
  tcase_add_test(tc, a_shared_lock_made_again_in_old_memory_has_no_old_orders);
  tcase_add_test(tc, locks_in_a_segment_mapped_elsewhere_keep_their_orders);
  tcase_add_test(tc, freed_shared_locks_leave_the_order_table);
  tcase_add_test(tc, a_full_order_table_says_so_once);
  suite_add_tcase(s, tc);
  return s;
}
