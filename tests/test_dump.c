/* SPDX-License-Identifier: MIT */
/* Tests of weft/dump.h: the dump of a known program is read line by line
 * (names, tids, counts, call sites), taken from a signal, from a forked
 * child, while a thread is deadlocked with another process, while threads
 * hammer locks, queues and a pool, and by the watchdog, which must fire on
 * a stall and not while waits end. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char text[1 << 18];

/* One dump, read back through a memory file; again while another dump (a
 * signal's) is being written. */
static const char *dump_text(void) {
  int fd, r;
  for (;;) {
    fd = memfd_create("dump", MFD_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    if ((r = weft_dump_fd(fd)) != WEFT_EBUSY) break;
    close(fd);
    nap_ms(1);
  }
  ck_assert_int_eq(r, 0);
  ssize_t n = pread(fd, text, sizeof text - 1, 0);
  close(fd);
  ck_assert_int_gt(n, 0);
  text[n] = '\0';
  return text;
}

/* Dumps until one holds needle count times (the threads reach their waits
 * on their own time), at most timeout seconds. */
static const char *dump_until(const char *needle, int count, double timeout) {
  double end = test_now() + timeout;
  for (;;) {
    dump_text();
    if (count_substr(text, needle) >= count) return text;
    ck_assert_msg(test_now() < end, "no %d x '%s' in the dump:\n%s", count, needle, text);
    nap_ms(5);
  }
}

/* The line of t that starts with prefix (up to its newline), or fails. */
static const char *line_of(const char *t, const char *prefix) {
  static char line[1024];
  const char *p = strstr(t, prefix);
  ck_assert_msg(p != NULL, "no line starting '%s' in:\n%s", prefix, t);
  size_t n = strcspn(p, "\n");
  ck_assert_uint_lt(n, sizeof line);
  memcpy(line, p, n);
  line[n] = '\0';
  return line;
}

static void assert_has(const char *t, const char *want) {
  ck_assert_msg(strstr(t, want) != NULL, "no '%s' in:\n%s", want, t);
}

/* ---- two threads deadlocked ABBA ---- */

static weft_lock lock_a = WEFT_LOCK_INIT_NAMED("A"), lock_b = WEFT_LOCK_INIT_NAMED("B");
static weft_barrier both_hold = WEFT_BARRIER_INIT(2);
static int ab_took, ab_waits, ba_took, ba_waits;

/* Each takes its first lock, then waits (long, but not forever) for the
 * other's; the test breaks the cycle by releasing A itself (any thread may
 * release a Lock), so ba goes on, then ab. */
static void *ab(void *arg) {
  (void)arg;
  int r;
  st(&ab_took, __LINE__), r = weft_lock_acquire(&lock_a, WEFT_FOREVER);
  ck_assert_int_eq(r, 0);
  weft_barrier_wait(&both_hold, 30);
  st(&ab_waits, __LINE__), r = weft_lock_acquire(&lock_b, 60);
  if (r == 0) weft_lock_release(&lock_b);
  weft_lock_release(&lock_a); /* WEFT_EPERM: the test released it already */
  return NULL;
}

static void *ba(void *arg) {
  (void)arg;
  int r;
  st(&ba_took, __LINE__), r = weft_lock_acquire(&lock_b, WEFT_FOREVER);
  ck_assert_int_eq(r, 0);
  weft_barrier_wait(&both_hold, 30);
  st(&ba_waits, __LINE__), r = weft_lock_acquire(&lock_a, 60);
  if (r == 0) weft_lock_release(&lock_a);
  weft_lock_release(&lock_b);
  return NULL;
}

START_TEST(abba_dump_names_threads_locks_sites_and_the_cycle) {
  weft_thread t1 = weft_thread_new(ab, .name = "ab");
  weft_thread t2 = weft_thread_new(ba, .name = "ba", .daemon = true);
  weft_thread_start(t1);
  weft_thread_start(t2);
  const char *t = dump_until("waiting for lock", 2, 30);
  pid_t main_tid = getpid(), tid1 = weft_thread_native_id(t1), tid2 = weft_thread_native_id(t2);
  char want[512];
  snprintf(want, sizeof want, "weft: dump of MainProcess (pid %d): 3 threads\n", (int)getpid());
  ck_assert_msg(strncmp(t, want, strlen(want)) == 0, "header:\n%s", t);
  snprintf(want, sizeof want, "  MainThread (tid %d): running (in no weft wait; kernel state R)\n    holds no lock\n",
           (int)main_tid);
  assert_has(t, want);

  snprintf(want, sizeof want, "  ab (tid %d): waiting for lock \"B\" at %s:%d for ", (int)tid1,
           __FILE__, ld(&ab_waits));
  const char *line = line_of(t, want);
  snprintf(want, sizeof want, "; held by ba (tid %d)", (int)tid2);
  ck_assert_msg(strstr(line, want) != NULL && strlen(strstr(line, want)) == strlen(want), "%s", line);
  snprintf(want, sizeof want, "%s\n    holds \"A\" acquired at %s:%d\n", line, __FILE__, ld(&ab_took));
  assert_has(t, want);

  snprintf(want, sizeof want, "  ba (tid %d), daemon: waiting for lock \"A\" at %s:%d for ",
           (int)tid2, __FILE__, ld(&ba_waits));
  line = line_of(t, want);
  snprintf(want, sizeof want, "; held by ab (tid %d)", (int)tid1);
  ck_assert_msg(strstr(line, want) != NULL, "%s", line);
  snprintf(want, sizeof want, "%s\n    holds \"B\" acquired at %s:%d\n", line, __FILE__, ld(&ba_took));
  assert_has(t, want);

  /* The cycle, once, in the deadlock reports' words, from the lower tid. */
  ck_assert_int_eq(count_substr(t, "  live deadlock: "), 1);
  snprintf(want, sizeof want,
           "  live deadlock: 2 threads wait for each other; the chain of waits:\n"
           "    \"B\" is held by ba (tid %d), which waits for the next\n"
           "    \"A\" is held by ab (tid %d), which waits for the next\n"
           "weft: end of dump\n",
           (int)tid2, (int)tid1);
  assert_has(t, want);
  ck_assert_int_eq(count_substr(t, "children:"), 0);

  ck_assert_int_eq(weft_lock_release(&lock_a), 0); /* breaks the cycle */
  ck_assert_int_eq(weft_thread_join(t1, 30, NULL), 0);
  ck_assert_int_eq(weft_thread_join(t2, 30, NULL), 0);
  t = dump_text();
  ck_assert_int_eq(count_substr(t, "live deadlock"), 0);
  snprintf(want, sizeof want, "): 1 thread\n");
  assert_has(t, want);
}
END_TEST

/* ---- 8 threads contend for one lock the main thread holds ---- */

static weft_lock hot = WEFT_LOCK_INIT_NAMED("hot");
static int hot_wait_line, hot_count;

static void *contender(void *arg) {
  (void)arg;
  int r;
  st(&hot_wait_line, __LINE__), r = weft_lock_acquire(&hot, WEFT_FOREVER);
  ck_assert_int_eq(r, 0);
  inc(&hot_count);
  weft_lock_release(&hot);
  return NULL;
}

START_TEST(dump_while_8_threads_contend_for_one_lock) {
  static const char *names[8] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"};
  int took, r;
  took = __LINE__, r = weft_lock_acquire(&hot, WEFT_FOREVER);
  ck_assert_int_eq(r, 0);
  weft_thread t[8];
  for (int i = 0; i < 8; i++) {
    t[i] = weft_thread_new(contender, .name = names[i]);
    weft_thread_start(t[i]);
  }
  const char *d = dump_until("waiting for lock \"hot\"", 8, 30);
  char want[512];
  snprintf(want, sizeof want, "(pid %d): 9 threads\n", (int)getpid());
  assert_has(d, want);
  snprintf(want, sizeof want, "  MainThread (tid %d): running (in no weft wait; kernel state R)\n"
           "    holds \"hot\" acquired at %s:%d\n", (int)getpid(), __FILE__, took);
  assert_has(d, want);
  snprintf(want, sizeof want, "; held by MainThread (tid %d)\n    holds no lock\n", (int)getpid());
  ck_assert_int_eq(count_substr(d, want), 8);
  for (int i = 0; i < 8; i++) {
    snprintf(want, sizeof want, "  %s (tid %d): waiting for lock \"hot\" at %s:%d for ", names[i],
             (int)weft_thread_native_id(t[i]), __FILE__, ld(&hot_wait_line));
    line_of(d, want);
  }
  ck_assert_int_eq(count_substr(d, "live deadlock"), 0);
  weft_lock_release(&hot);
  for (int i = 0; i < 8; i++) ck_assert_int_eq(weft_thread_join(t[i], 30, NULL), 0);
  ck_assert_int_eq(ld(&hot_count), 8);
}
END_TEST

/* ---- one thread in each kind of wait ---- */

static weft_event ev = WEFT_EVENT_INIT;
static weft_semaphore slots;
static weft_queue *jobs, *full;
static weft_lock cond_lock = WEFT_LOCK_INIT_NAMED("ready_lock");
static weft_cond ready;
static int ready_flag;
static weft_barrier meet = WEFT_BARRIER_INIT(2); static const int barrier_line = __LINE__;
static weft_thread ev_thread;
static weft_process napper;
static weft_future pending;
static int lines[16];

enum { L_EVENT, L_SEM, L_GET, L_PUT, L_COND, L_BARRIER, L_JOIN, L_PJOIN, L_FUTURE };

static void *wait_event(void *arg) {
  (void)arg;
  st(&lines[L_EVENT], __LINE__), weft_event_wait(&ev, 60);
  return NULL;
}
static void *wait_sem(void *arg) {
  (void)arg;
  st(&lines[L_SEM], __LINE__), weft_semaphore_acquire(&slots, 60);
  return NULL;
}
static void *wait_get(void *arg) {
  (void)arg;
  void *item;
  st(&lines[L_GET], __LINE__), weft_queue_get(jobs, &item, 60);
  return NULL;
}
static void *wait_put(void *arg) {
  (void)arg;
  st(&lines[L_PUT], __LINE__), weft_queue_put(full, NULL, 60);
  return NULL;
}
static bool is_ready(void *arg) { (void)arg; return ld(&ready_flag) != 0; }
static void *wait_cond(void *arg) {
  (void)arg;
  weft_cond_acquire(&ready, WEFT_FOREVER);
  st(&lines[L_COND], __LINE__), weft_cond_wait_for(&ready, is_ready, NULL, 60);
  weft_cond_release(&ready);
  return NULL;
}
static void *wait_barrier(void *arg) {
  (void)arg;
  st(&lines[L_BARRIER], __LINE__), weft_barrier_wait(&meet, 60);
  return NULL;
}
static void *wait_join(void *arg) {
  (void)arg;
  st(&lines[L_JOIN], __LINE__), weft_thread_join(ev_thread, 60, NULL);
  return NULL;
}
static int nap_forever(void *arg) {
  (void)arg;
  for (;;) pause();
  return 0;
}
static void *wait_process(void *arg) {
  (void)arg;
  st(&lines[L_PJOIN], __LINE__), weft_process_join(napper, 60);
  return NULL;
}
static int block_on_event(void *arg, void **result) {
  (void)arg;
  *result = NULL;
  return weft_event_wait(&ev, 60);
}
static void *wait_future(void *arg) {
  (void)arg;
  void *r;
  st(&lines[L_FUTURE], __LINE__), weft_future_result(pending, 60, &r);
  return NULL;
}

START_TEST(each_kind_of_wait_is_named_with_its_site) {
  weft_semaphore_init(&slots, 0, .name = "slots");
  jobs = weft_queue_new(.name = "jobs");
  full = weft_queue_new(.maxsize = 1, .name = "full");
  ck_assert_int_eq(weft_queue_put(full, NULL, 0), 0);
  weft_cond_init(&ready, .lock = &cond_lock);
  napper = weft_process_new(nap_forever, .name = "napper", .daemon = true);
  ck_assert_int_eq(weft_process_start(napper), 0);
  weft_pool pool = weft_thread_pool_new(.workers = 1);
  pending = weft_pool_submit(pool, block_on_event, NULL);

  void *(*fns[])(void *) = {wait_event, wait_sem, wait_get, wait_put, wait_cond,
                            wait_barrier, wait_join, wait_process, wait_future};
  const char *names[] = {"ev", "sem", "get", "put", "cond", "bar", "join", "pjoin", "fut"};
  weft_thread t[9];
  for (int i = 0; i < 9; i++) {
    t[i] = weft_thread_new(fns[i], .name = names[i]);
    if (i == 0) ev_thread = t[0];
    ck_assert_int_eq(weft_thread_start(t[i]), 0);
  }
  /* The 9 threads and the pool's worker, all waiting. */
  const char *d = dump_until(": waiting ", 10, 30);
  char want[512];
  const char *site = __FILE__;
  snprintf(want, sizeof want, "  ev (tid %d): waiting on event %p at %s:%d for ",
           (int)weft_thread_native_id(t[0]), (void *)&ev, site, ld(&lines[L_EVENT]));
  line_of(d, want);
  snprintf(want, sizeof want, "  sem (tid %d): waiting on semaphore \"slots\" at %s:%d for ",
           (int)weft_thread_native_id(t[1]), site, ld(&lines[L_SEM]));
  line_of(d, want);
  snprintf(want, sizeof want, "  get (tid %d): waiting to get from queue \"jobs\" at %s:%d for ",
           (int)weft_thread_native_id(t[2]), site, ld(&lines[L_GET]));
  line_of(d, want);
  snprintf(want, sizeof want, "  put (tid %d): waiting to put into queue \"full\" at %s:%d for ",
           (int)weft_thread_native_id(t[3]), site, ld(&lines[L_PUT]));
  line_of(d, want);
  /* A Condition over a Lock is named by its Lock. */
  snprintf(want, sizeof want, "  cond (tid %d): waiting on condition \"ready_lock\" at %s:%d for ",
           (int)weft_thread_native_id(t[4]), site, ld(&lines[L_COND]));
  line_of(d, want);
  snprintf(want, sizeof want,
           "  bar (tid %d): waiting at barrier \"barrier initialised at %s:%d\" at %s:%d for ",
           (int)weft_thread_native_id(t[5]), site, barrier_line, site, ld(&lines[L_BARRIER]));
  line_of(d, want);
  snprintf(want, sizeof want, "  join (tid %d): waiting to join ev at %s:%d for ",
           (int)weft_thread_native_id(t[6]), site, ld(&lines[L_JOIN]));
  line_of(d, want);
  snprintf(want, sizeof want, "  pjoin (tid %d): waiting to join napper (pid %d) at %s:%d for ",
           (int)weft_thread_native_id(t[7]), (int)weft_process_pid(napper), site,
           ld(&lines[L_PJOIN]));
  line_of(d, want);
  snprintf(want, sizeof want, "  fut (tid %d): waiting for the result of a future for ",
           (int)weft_thread_native_id(t[8]));
  line_of(d, want);
  /* The pool's worker, a daemon waiting in the task on the same event. */
  assert_has(d, "ThreadPool-");
  snprintf(want, sizeof want, "  children:\n    napper (pid %d), daemon: running (kernel state ",
           (int)weft_process_pid(napper));
  assert_has(d, want);
  snprintf(want, sizeof want, "(pid %d): 11 threads\n", (int)getpid());
  assert_has(d, want);

  /* Let every one of them go. */
  weft_event_set(&ev);
  weft_semaphore_release(&slots, 1);
  weft_queue_put(jobs, NULL, 1);
  void *item;
  weft_queue_get(full, &item, 1);
  weft_cond_acquire(&ready, WEFT_FOREVER);
  st(&ready_flag, 1);
  weft_cond_notify_all(&ready);
  weft_cond_release(&ready);
  ck_assert_int_ge(weft_barrier_wait(&meet, 30), 0);
  weft_process_kill(napper);
  for (int i = 0; i < 9; i++) ck_assert_int_eq(weft_thread_join(t[i], 30, NULL), 0);
  weft_pool_close(pool);
  ck_assert_int_eq(weft_pool_join(pool, 30), 0);
  weft_pool_free(pool);
  weft_process_close(napper);
  d = dump_text();
  ck_assert_int_eq(count_substr(d, "waiting"), 0);
  ck_assert_int_eq(count_substr(d, "children:"), 0);
}
END_TEST

/* ---- a forked child dumps its own threads only ---- */

static int child_dump(void *arg) {
  int fd = *(int *)arg;
  return weft_dump_fd(fd) == 0 ? 0 : 1;
}

START_TEST(forked_child_dumps_only_its_own_thread) {
  weft_event_init(&ev);
  weft_thread t = weft_thread_new(wait_event, .name = "parents");
  weft_thread_start(t);
  dump_until("parents (tid", 1, 30);
  int fd = memfd_create("child", 0);
  ck_assert_int_ge(fd, 0);
  weft_process p = weft_process_new(child_dump, .arg = &fd, .name = "kid");
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 30), 0);
  ssize_t n = pread(fd, text, sizeof text - 1, 0);
  ck_assert_int_gt(n, 0);
  text[n] = '\0';
  close(fd);
  assert_has(text, "weft: dump of kid (pid ");
  assert_has(text, "): 1 thread\n  MainThread (tid ");
  ck_assert_int_eq(count_substr(text, "parents"), 0);
  weft_event_set(&ev);
  ck_assert_int_eq(weft_thread_join(t, 30, NULL), 0);
}
END_TEST

/* ---- a deadlock between two processes ---- */

/* In shared memory: the locks, and each side's progress. */
struct xdead {
  weft_lock *a, *b;
  int t_has_a, t_go, t_line, t_result;
  int c_has_b, c_go, c_line;
  int reports;
};

/* Live deadlocks only: the two processes' orders are an inversion too,
 * reported by whichever took its second order last. */
static void count_report(const char *report, void *arg) {
  if (strncmp(report, "weft: deadlock: ", 16) == 0) inc(&((struct xdead *)arg)->reports);
}

/* This process's thread: holds A, then waits for B, which the child holds. */
static void *hold_a_want_b(void *arg) {
  struct xdead *x = arg;
  if (weft_lock_acquire(x->a, WEFT_FOREVER) != 0) return NULL;
  st(&x->t_has_a, 1);
  if (wait_ge(&x->t_go, 1, 30)) {
    int r;
    st(&x->t_line, __LINE__), r = weft_lock_acquire(x->b, WEFT_FOREVER);
    if (r == 0 || r == WEFT_EOWNERDEAD) weft_lock_release(x->b);
    st(&x->t_result, r);
  }
  weft_lock_release(x->a);
  return NULL;
}

/* The child: holds B, then waits for A (killed there). */
static int hold_b_want_a(void *arg) {
  struct xdead *x = arg;
  if (weft_lock_acquire(x->b, WEFT_FOREVER) != 0) return 1;
  st(&x->c_has_b, 1);
  if (!wait_ge(&x->c_go, 1, 30)) return 2;
  st(&x->c_line, __LINE__), weft_lock_acquire(x->a, WEFT_FOREVER);
  return 3;
}

/* The dump of one process names the other process's thread that holds the
 * lock its thread waits for: by the child's name while that thread runs,
 * then with what it waits for, and the cycle across both processes. */
START_TEST(dump_shows_a_wait_for_another_process_and_the_cycle) {
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  struct xdead *x = shared(sizeof *x);
  x->a = weft_lock_new(.name = "xA");
  x->b = weft_lock_new(.name = "xB");
  ck_assert(x->a != NULL && x->b != NULL);
  weft_deadlock_set_hook(count_report, x);
  weft_thread t = weft_thread_new(hold_a_want_b, .arg = x, .name = "holder");
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert(wait_ge(&x->t_has_a, 1, 10));
  weft_process child = weft_process_new(hold_b_want_a, .arg = x, .name = "dump-child");
  ck_assert_int_eq(weft_process_start(child), 0);
  pid_t cpid = weft_process_pid(child), tid = weft_thread_native_id(t);
  ck_assert(wait_ge(&x->c_has_b, 1, 10));
  st(&x->t_go, 1);

  /* The child holds B and waits for nothing: named from the children. */
  char want[512];
  snprintf(want, sizeof want, "  holder (tid %d): waiting for lock \"xB\" at ", (int)tid);
  const char *line = line_of(dump_until(want, 1, 30), want);
  snprintf(want, sizeof want, "; held by process \"dump-child\" (pid %d)", (int)cpid);
  ck_assert_msg(strstr(line, want) != NULL && strlen(strstr(line, want)) == strlen(want), "%s",
                line);
  ck_assert_int_eq(count_substr(text, "live deadlock"), 0);

  /* The child waits for A: from the wait table, its wait and the cycle. */
  st(&x->c_go, 1);
  const char *d = dump_until("live deadlock", 1, 30);
  snprintf(want, sizeof want, "  holder (tid %d): waiting for lock \"xB\" at %s:%d for ", (int)tid,
           __FILE__, ld(&x->t_line));
  line = line_of(d, want);
  snprintf(want, sizeof want,
           "; held by process \"dump-child\" (pid %d), thread MainThread (tid %d), which waits "
           "for \"xA\" at %s:%d",
           (int)cpid, (int)cpid, __FILE__, ld(&x->c_line));
  ck_assert_msg(strstr(line, want) != NULL && strlen(strstr(line, want)) == strlen(want), "%s",
                line);
  ck_assert_int_eq(count_substr(d, "  live deadlock: "), 1);
  snprintf(want, sizeof want,
           "  live deadlock: 2 threads of 2 processes wait for each other; the chain of waits, "
           "across processes:\n"
           "    \"xB\" is held by process \"dump-child\" (pid %d), thread MainThread (tid %d), "
           "which waits for \"xA\" at %s:%d\n"
           "    \"xA\" is held by process \"%s\" (pid %d), thread holder (tid %d), which waits for "
           "\"xB\" at %s:%d\n",
           (int)cpid, (int)cpid, __FILE__, ld(&x->c_line),
           weft_process_name(weft_current_process()), (int)getpid(), (int)tid, __FILE__,
           ld(&x->t_line));
  assert_has(d, want);

  /* Break the hang as a person would: end the child. */
  ck_assert_int_ge(ld(&x->reports), 1);
  ck_assert_int_eq(weft_process_kill(child), 0);
  ck_assert_int_eq(weft_thread_join(t, 30, NULL), 0);
  ck_assert_int_eq(ld(&x->t_result), WEFT_EOWNERDEAD);
  ck_assert_int_eq(finish_process(child, 30), -SIGKILL);
  weft_deadlock_set_hook(NULL, NULL);
  ck_assert_int_eq(weft_lock_free(x->a), 0);
  ck_assert_int_eq(weft_lock_free(x->b), 0);
  weft_shared_free(x);
}
END_TEST

/* Three threads of two processes: t1 (here) holds the private "xP" and
 * waits for xA, held by the child; t2 (here) holds xB and waits for xP, a
 * wait within this process; the child's main thread waits for xB. A thread
 * of the child dumps: the chain goes through xP, which the child cannot
 * read, by the holder t2 recorded in the wait table. */
static weft_lock lock_xp = WEFT_LOCK_INIT_NAMED("xP");

struct xdead3 {
  weft_lock *a, *b;
  int t1_has, t1_go, t1_line, t1_tid, t2_has, t2_go, t2_line, t2_tid;
  int c_has, c_go, c_line, reports, dumped;
  int fd;
};

/* Live deadlocks only: the two processes' orders are an inversion too,
 * reported by whichever took its second order last. */
static void count_report3(const char *report, void *arg) {
  if (strncmp(report, "weft: deadlock: ", 16) == 0) inc(&((struct xdead3 *)arg)->reports);
}

static void *t1_p_then_a(void *arg) {
  struct xdead3 *x = arg;
  st(&x->t1_tid, (int)gettid());
  if (weft_lock_acquire(&lock_xp, WEFT_FOREVER) != 0) return NULL;
  st(&x->t1_has, 1);
  if (wait_ge(&x->t1_go, 1, 30)) {
    int r;
    st(&x->t1_line, __LINE__), r = weft_lock_acquire(x->a, WEFT_FOREVER);
    if (r == 0 || r == WEFT_EOWNERDEAD) weft_lock_release(x->a);
  }
  weft_lock_release(&lock_xp);
  return NULL;
}

static void *t2_b_then_p(void *arg) {
  struct xdead3 *x = arg;
  st(&x->t2_tid, (int)gettid());
  if (weft_lock_acquire(x->b, WEFT_FOREVER) != 0) return NULL;
  st(&x->t2_has, 1);
  if (wait_ge(&x->t2_go, 1, 30)) {
    int r;
    st(&x->t2_line, __LINE__), r = weft_lock_acquire(&lock_xp, WEFT_FOREVER);
    if (r == 0) weft_lock_release(&lock_xp);
  }
  weft_lock_release(x->b);
  return NULL;
}

/* In the child: dumps into the memory file until the dump shows the cycle. */
static void *dump_until_cycle(void *arg) {
  struct xdead3 *x = arg;
  static char buf[1 << 16];
  wait_ge(&x->reports, 1, 20); /* without a report, dump all the same: the test shows it */
  double end = test_now() + 10;
  while (test_now() < end) {
    if (ftruncate(x->fd, 0) != 0 || lseek(x->fd, 0, SEEK_SET) != 0) break;
    if (weft_dump_fd(x->fd) == 0) {
      ssize_t n = pread(x->fd, buf, sizeof buf - 1, 0);
      buf[n > 0 ? n : 0] = '\0';
      if (strstr(buf, "live deadlock") != NULL) break;
    }
    nap_ms(5);
  }
  st(&x->dumped, 1);
  return NULL;
}

static int child_a_then_b_and_dump(void *arg) {
  struct xdead3 *x = arg;
  if (weft_lock_acquire(x->a, WEFT_FOREVER) != 0) return 1;
  st(&x->c_has, 1);
  weft_thread d = weft_thread_new(dump_until_cycle, .arg = x, .name = "dumper", .daemon = true);
  weft_thread_start(d);
  if (!wait_ge(&x->c_go, 1, 30)) return 2;
  st(&x->c_line, __LINE__), weft_lock_acquire(x->b, WEFT_FOREVER); /* killed here */
  return 3;
}

/* Once seen asleep is enough: a waiter for a lock held by another process
 * wakes every 50 ms to see that the holder lives. */
static void wait_thread_asleep(const int *tid) {
  double end = test_now() + 10;
  bool asleep;
  while (!(asleep = thread_state(ld(tid)) == 'S') && test_now() < end) nap_ms(1);
  ck_assert_msg(asleep, "thread %d never slept", ld(tid));
}

START_TEST(dump_follows_a_wait_within_another_process) {
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_WARN), 0);
  struct xdead3 *x = shared(sizeof *x);
  x->a = weft_lock_new(.name = "xA");
  x->b = weft_lock_new(.name = "xB");
  x->fd = memfd_create("child-dump", 0);
  ck_assert(x->a != NULL && x->b != NULL && x->fd >= 0);
  weft_deadlock_set_hook(count_report3, x);
  weft_process child = weft_process_new(child_a_then_b_and_dump, .arg = x, .name = "dump-child2");
  ck_assert_int_eq(weft_process_start(child), 0);
  pid_t cpid = weft_process_pid(child);
  weft_thread t1 = weft_thread_new(t1_p_then_a, .arg = x, .name = "t1");
  weft_thread t2 = weft_thread_new(t2_b_then_p, .arg = x, .name = "t2");
  weft_thread_start(t1);
  weft_thread_start(t2);
  ck_assert(wait_ge(&x->t1_has, 1, 10) && wait_ge(&x->t2_has, 1, 10) && wait_ge(&x->c_has, 1, 10));
  st(&x->t1_go, 1);
  wait_thread_asleep(&x->t1_tid);
  st(&x->t2_go, 1);
  wait_thread_asleep(&x->t2_tid);
  st(&x->c_go, 1); /* the child waits last: it reports, and its thread dumps */
  ck_assert(wait_ge(&x->dumped, 1, 40));
  ssize_t n = pread(x->fd, text, sizeof text - 1, 0);
  ck_assert_int_gt(n, 0);
  text[n] = '\0';
  char want[1024];
  snprintf(want, sizeof want,
           "  live deadlock: 3 threads of 2 processes wait for each other; the chain of waits, "
           "across processes:\n"
           "    \"xB\" is held by process \"%s\" (pid %d), thread t2 (tid %d), which waits for "
           "\"xP\" at %s:%d\n"
           "    \"xP\" is held by process \"%s\" (pid %d), thread t1 (tid %d), which waits for "
           "\"xA\" at %s:%d\n"
           "    \"xA\" is held by process \"dump-child2\" (pid %d), thread MainThread (tid %d), "
           "which waits for \"xB\" at %s:%d\n",
           weft_process_name(weft_current_process()), (int)getpid(), ld(&x->t2_tid), __FILE__,
           ld(&x->t2_line), weft_process_name(weft_current_process()), (int)getpid(),
           ld(&x->t1_tid), __FILE__, ld(&x->t1_line), (int)cpid, (int)cpid, __FILE__,
           ld(&x->c_line));
  assert_has(text, want);
  ck_assert_int_eq(ld(&x->reports), 1);
  ck_assert_int_eq(weft_process_kill(child), 0);
  ck_assert_int_eq(weft_thread_join(t1, 30, NULL), 0);
  ck_assert_int_eq(weft_thread_join(t2, 30, NULL), 0);
  ck_assert_int_eq(finish_process(child, 30), -SIGKILL);
  weft_deadlock_set_hook(NULL, NULL);
  close(x->fd);
  ck_assert_int_eq(weft_lock_free(x->a), 0);
  ck_assert_int_eq(weft_lock_free(x->b), 0);
  weft_shared_free(x);
}
END_TEST

/* ---- the signal path, in a fresh program ---- */

/* Sends sig to the helper until its stderr holds a whole dump that shows
 * both its threads waiting (they may not be there yet at the first). A
 * signal that brought no whole dump within 2 s is sent again: under
 * ThreadSanitizer a signal that lands on a thread inside a raw system
 * call can stay queued by the sanitizer until that call returns. */
static void read_signal_dump(pid_t pid, int fd, int sig, char *buf, size_t size) {
  double end = test_now() + 30;
  size_t len = 0;
  buf[0] = '\0';
  while (test_now() < end) {
    kill(pid, sig);
    char *at = buf + len;
    bool whole = read_until(fd, at, size - len, "weft: end of dump", 2);
    if (whole && strstr(at, "waiting on event") != NULL && strstr(at, "waiting to join") != NULL)
      return;
    len += strlen(at);
    ck_assert_uint_lt(len + 4096, size);
    if (whole) nap_ms(10);
  }
  ck_abort_msg("no whole dump with the sleeper waiting within 30 s of signal %d:\n%s", sig, buf);
}

static void signal_dump(const char *value, int sig, const char *signame) {
  setenv("WEFT_DUMP_SIGNAL", value, 1);
  int fd;
  pid_t pid = helper_spawn("dump_signal", &fd);
  static char buf[1 << 16];
  ck_assert(read_until(fd, buf, sizeof buf, "ready", 30));
  int line = 0;
  ck_assert_int_eq(sscanf(strstr(buf, "ready"), "ready %d", &line), 1);
  read_signal_dump(pid, fd, sig, buf, sizeof buf);
  char want[256];
  snprintf(want, sizeof want, "weft: dump of MainProcess (pid %d): 2 threads (on signal %s)\n",
           (int)pid, signame);
  assert_has(buf, want);
  snprintf(want, sizeof want, "  MainThread (tid %d): waiting to join sleeper at tests/helpers/helper.c:",
           (int)pid);
  assert_has(buf, want);
  snprintf(want, sizeof want, "), daemon: waiting on event ");
  assert_has(buf, want);
  snprintf(want, sizeof want, " at tests/helpers/helper.c:%d for ", line);
  assert_has(buf, want);
  kill(pid, SIGKILL);
  wait_status(pid);
  close(fd);
}

START_TEST(signal_from_the_environment_dumps_to_stderr) {
  signal_dump("1", SIGQUIT, "SIGQUIT");
  signal_dump("usr1", SIGUSR1, "SIGUSR1");
  signal_dump("SIGUSR2", SIGUSR2, "SIGUSR2");
}
END_TEST

START_TEST(bad_environment_values_are_named_once_and_ignored) {
  setenv("WEFT_DUMP_SIGNAL", "SIGNOPE", 1);
  setenv("WEFT_DUMP_AFTER", "soon", 1);
  int fd;
  pid_t pid = helper_spawn("dump_signal", &fd);
  static char buf[1 << 14];
  ck_assert(read_until(fd, buf, sizeof buf, "ready", 30));
  ck_assert_int_eq(count_substr(buf, "weft: WEFT_DUMP_SIGNAL=SIGNOPE is not 1 (SIGQUIT), 0 or a signal"), 1);
  ck_assert_int_eq(count_substr(buf, "weft: WEFT_DUMP_AFTER=soon is not a number of seconds above 0; no watchdog\n"), 1);
  /* Ignored: SIGQUIT keeps its default action, and kills. */
  kill(pid, SIGQUIT);
  int status = wait_status(pid);
  ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGQUIT);
  close(fd);
  setenv("WEFT_DUMP_SIGNAL", "9", 1); /* SIGKILL cannot carry a dump */
  unsetenv("WEFT_DUMP_AFTER");
  pid = helper_spawn("dump_signal", &fd);
  ck_assert(read_until(fd, buf, sizeof buf, "ready", 30));
  ck_assert_int_eq(count_substr(buf, "WEFT_DUMP_SIGNAL=9 is not"), 1);
  kill(pid, SIGKILL);
  wait_status(pid);
  close(fd);
}
END_TEST

/* ---- the API's errors ---- */

static int own_handler_ran;
static void own_handler(int sig) { (void)sig; own_handler_ran++; }

START_TEST(api_errors_and_unregister_restores_the_action) {
  ck_assert_int_eq(weft_dump_fd(-1), WEFT_EINVAL);
  assert_has(weft_last_error(), "weft_dump_fd: fd -1 is negative");
  int fd = memfd_create("x", 0);
  close(fd);
  ck_assert_int_eq(weft_dump_fd(fd), WEFT_EINVAL);
  assert_has(weft_last_error(), "is not open for writing");
  int pipes[2];
  ck_assert_int_eq(pipe(pipes), 0);
  close(pipes[0]);
  signal(SIGPIPE, SIG_IGN);
  ck_assert_int_eq(weft_dump_fd(pipes[1]), WEFT_EPIPE);
  close(pipes[1]);
  ck_assert_int_eq(weft_dump_register(SIGKILL), WEFT_EINVAL);
  ck_assert_int_eq(weft_dump_register(SIGSEGV), WEFT_EINVAL);
  ck_assert_int_eq(weft_dump_register(0), WEFT_EINVAL);
  ck_assert_int_eq(weft_dump_unregister(-3), WEFT_EINVAL);
  ck_assert_int_eq(weft_dump_later(0), WEFT_EINVAL);
  ck_assert_int_eq(weft_dump_later(-1), WEFT_EINVAL);
  ck_assert_int_eq(weft_dump_later(NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_dump_later(WEFT_FOREVER), WEFT_EINVAL);
  ck_assert_int_eq(weft_dump_cancel(), 0);
  ck_assert_int_eq(weft_dump_unregister(SIGUSR2), 0); /* not registered: nothing */

  signal(SIGUSR2, own_handler);
  ck_assert_int_eq(weft_dump_register(SIGUSR2), 0);
  ck_assert_int_eq(weft_dump_register(SIGUSR2), 0);
  int null = open("/dev/null", O_WRONLY);
  int saved = dup(2);
  dup2(null, 2);
  raise(SIGUSR2); /* the dump, to /dev/null */
  dup2(saved, 2);
  ck_assert_int_eq(own_handler_ran, 0);
  ck_assert_int_eq(weft_dump_unregister(SIGUSR2), 0);
  raise(SIGUSR2);
  ck_assert_int_eq(own_handler_ran, 1);
  close(null);
  close(saved);
}
END_TEST

/* ---- dumps while threads hammer locks, queues and a pool ---- */

static int stop;
static weft_lock h1 = WEFT_LOCK_INIT_NAMED("h1"), h2 = WEFT_LOCK_INIT_NAMED("h2");
static weft_rlock hr = WEFT_RLOCK_INIT_NAMED("hr");
static weft_queue *hq;
static weft_pool hpool;
static weft_semaphore hsem;
static long counter;

static int square(void *arg, void **result) {
  *result = (void *)((uintptr_t)arg * (uintptr_t)arg);
  return 0;
}

static void *hammer(void *arg) {
  uintptr_t me = (uintptr_t)arg;
  for (unsigned i = 0; !ld(&stop); i++) {
    weft_lock_acquire(&h1, WEFT_FOREVER);
    weft_lock_acquire(&h2, WEFT_FOREVER);
    counter++;
    weft_lock_release(&h2);
    weft_lock_release(&h1);
    weft_rlock_acquire(&hr, 1);
    weft_rlock_acquire(&hr, 1);
    weft_rlock_release(&hr);
    weft_rlock_release(&hr);
    void *item;
    if (me % 2 == 0)
      weft_queue_put(hq, (void *)me, 1);
    else
      weft_queue_get(hq, &item, 0.01);
    if (weft_semaphore_acquire(&hsem, 0.01) == 0) weft_semaphore_release(&hsem, 1);
    if (i % 16 == 0) {
      weft_future f = weft_pool_submit(hpool, square, (void *)(uintptr_t)i);
      void *r;
      weft_future_result(f, 30, &r);
    }
  }
  return NULL;
}

static void *signaller(void *arg) {
  (void)arg;
  while (!ld(&stop)) {
    kill(getpid(), SIGUSR1);
    nap_ms(1);
  }
  return NULL;
}

START_TEST(dumps_while_threads_hammer_do_not_hang_or_crash) {
  hq = weft_queue_new(.maxsize = 64, .name = "hq");
  hpool = weft_thread_pool_new(.workers = 2);
  weft_semaphore_init(&hsem, 2, .name = "hsem");
  int null = open("/dev/null", O_WRONLY);
  ck_assert_int_ge(null, 0);
  dup2(null, 2); /* the signal's dumps */
  ck_assert_int_eq(weft_dump_register(SIGUSR1), 0);
  weft_thread t[8];
  for (int i = 0; i < 8; i++) {
    t[i] = weft_thread_new(hammer, .arg = (void *)(uintptr_t)i);
    weft_thread_start(t[i]);
  }
  pthread_t sig = spawn(signaller, NULL);
  /* At least 400 / SLOW dumps and a second of them, at most 20,000. */
  int dumps = 400 / SLOW, whole = 0;
  double start = test_now();
  for (int i = 0; (i < dumps || test_now() < start + 1) && i < 20000; i++) {
    int r = i % 2 == 0 ? weft_dump_fd(null) : (dump_text(), 0);
    ck_assert(r == 0 || r == WEFT_EBUSY);
    if (i % 2 == 1 && strstr(text, "weft: end of dump\n") != NULL) whole++;
  }
  st(&stop, 1);
  join(sig);
  for (int i = 0; i < 8; i++) ck_assert_int_eq(weft_thread_join(t[i], 60, NULL), 0);
  ck_assert_int_gt(whole, 0);
  ck_assert_int_gt(counter, 0);
  ck_assert_int_eq(weft_dump_unregister(SIGUSR1), 0);
  weft_pool_close(hpool);
  weft_pool_join(hpool, 30);
  weft_pool_free(hpool);
  close(null);
}
END_TEST

/* ---- the watchdog ---- */

static weft_event stuck_ev = WEFT_EVENT_INIT;
static weft_semaphore ping, pong;
static int pingpong_stop;

static void *stuck(void *arg) {
  (void)arg;
  weft_event_wait(&stuck_ev, 120);
  return NULL;
}

/* Each round trip ends a wait on each side: progress. The nap makes the
 * other side sleep, so that each wait is one the records see. */
static void *pinger(void *arg) {
  (void)arg;
  while (!ld(&pingpong_stop)) {
    weft_semaphore_release(&ping, 1);
    weft_semaphore_acquire(&pong, 5);
    nap_ms(5);
  }
  weft_semaphore_release(&ping, 1);
  return NULL;
}

static void *ponger(void *arg) {
  (void)arg;
  while (weft_semaphore_acquire(&ping, 5) == 0 && !ld(&pingpong_stop)) {
    nap_ms(5);
    weft_semaphore_release(&pong, 1);
  }
  return NULL;
}

START_TEST(watchdog_fires_once_on_a_stall_and_not_while_waits_end) {
  int fds[2];
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  int saved = dup(2);
  dup2(fds[1], 2);
  weft_semaphore_init(&ping, 0);
  weft_semaphore_init(&pong, 0);
  /* A thread that runs nowhere for this long ends no wait: longer under
   * the sanitizers, whose runs scale the tests' timeouts. */
  const char *env = getenv("CK_TIMEOUT_MULTIPLIER");
  const double scale = env != NULL ? atof(env) : 1;
  const double after = 0.5 * (scale >= 1 ? scale : 1);
  ck_assert_int_eq(weft_dump_later(after), 0);
  weft_thread s = weft_thread_new(stuck, .name = "stuck");
  weft_thread_start(s);
  weft_thread a = weft_thread_new(pinger, .name = "pinger");
  weft_thread b = weft_thread_new(ponger, .name = "ponger");
  weft_thread_start(a);
  weft_thread_start(b);
  /* Progress for 5 times the watchdog's time: no dump. */
  static char buf[1 << 16];
  double until = test_now() + 5 * after;
  while (test_now() < until) {
    nap_ms(50);
    read_now(fds[0], buf, sizeof buf);
    ck_assert_msg(strstr(buf, "weft: dump") == NULL, "dumped while waits ended:\n%s", buf);
  }
  st(&pingpong_stop, 1);
  ck_assert_int_eq(weft_thread_join(a, 30, NULL), 0);
  ck_assert_int_eq(weft_thread_join(b, 30, NULL), 0);
  double stalled = test_now();
  /* Now only "stuck" waits, and no wait ends: one dump. */
  ck_assert_msg(read_until(fds[0], buf, sizeof buf, "weft: end of dump", 30), "%s", buf);
  ck_assert_double_ge(test_now() - stalled, after * 0.9);
  assert_has(buf, "(no weft wait ended for ");
  assert_has(buf, "  stuck (tid ");
  assert_has(buf, "): waiting on event ");
  nap(4 * after);
  size_t len = strlen(buf);
  read_now(fds[0], buf + len, sizeof buf - len);
  ck_assert_int_eq(count_substr(buf, "weft: dump of"), 1);
  ck_assert_int_eq(weft_dump_cancel(), 0);
  weft_event_set(&stuck_ev);
  ck_assert_int_eq(weft_thread_join(s, 30, NULL), 0);
  dup2(saved, 2);
  close(saved);
  close(fds[0]);
  close(fds[1]);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("dump");
  TCase *tc = weft_tcase("read", 60);
  tcase_add_test(tc, abba_dump_names_threads_locks_sites_and_the_cycle);
  tcase_add_test(tc, dump_while_8_threads_contend_for_one_lock);
  tcase_add_test(tc, each_kind_of_wait_is_named_with_its_site);
  tcase_add_test(tc, forked_child_dumps_only_its_own_thread);
  tcase_add_test(tc, dump_shows_a_wait_for_another_process_and_the_cycle);
  tcase_add_test(tc, dump_follows_a_wait_within_another_process);
  tcase_add_test(tc, api_errors_and_unregister_restores_the_action);
  suite_add_tcase(s, tc);
  tc = weft_tcase("signal", 90);
  tcase_add_test(tc, signal_from_the_environment_dumps_to_stderr);
  tcase_add_test(tc, bad_environment_values_are_named_once_and_ignored);
  suite_add_tcase(s, tc);
  tc = weft_tcase("load", 120);
  tcase_add_test(tc, dumps_while_threads_hammer_do_not_hang_or_crash);
  suite_add_tcase(s, tc);
  tc = weft_tcase("watchdog", 60);
  tcase_add_test(tc, watchdog_fires_once_on_a_stall_and_not_while_waits_end);
  suite_add_tcase(s, tc);
  return s;
}
