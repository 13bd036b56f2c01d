/* SPDX-License-Identifier: MIT */
/* Helper programs for tests of exit-time rules, dispatched by scenario name
 * (as libuv's test runner does): `weft_helper SCENARIO [ARG]`. Each prints
 * what the test needs to check to stdout, which the test reads from a pipe. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <weft.h>

static int fail(const char *what) {
  printf("helper failure: %s: %s\n", what, weft_last_error());
  fflush(stdout);
  return 99;
}

static int pause_forever(void *arg) {
  (void)arg;
  for (;;) pause();
  return 0;
}

static int print_child(void *arg) {
  printf("%s\n", (const char *)arg);
  return 0;
}

/* Output written before start must appear once, whatever stdout is. */
static int flush_before_start(const char *path) {
  if (path != NULL && freopen(path, "w", stdout) == NULL) return fail("freopen");
  printf("before start\n"); /* stays in the buffer: stdout is a pipe or a file */
  weft_process p = weft_process_new(print_child, .arg = "child line");
  if (weft_process_start(p) != 0) return fail("start");
  weft_process_join(p, WEFT_FOREVER);
  printf("after join\n");
  return 0;
}

static void parent_atexit(void) { printf("atexit of the parent ran in %d\n", (int)getpid()); }
static void child_atexit(void) { printf("atexit of the child ran\n"); }

static int exit_three(void *arg) {
  (void)arg;
  atexit(child_atexit);
  exit(3);
}

static int atexit_rules(void) {
  atexit(parent_atexit);
  printf("parent is %d\n", (int)getpid());
  weft_process p = weft_process_new(exit_three);
  if (weft_process_start(p) != 0) return fail("start");
  weft_process_join(p, WEFT_FOREVER);
  int code = -1;
  weft_process_exitcode(p, &code);
  printf("child exitcode %d\n", code);
  return 0;
}

static int sleep_then_print(void *arg) {
  weft_sleep(0.3);
  printf("%s\n", (const char *)arg);
  return 0;
}

static int main_returns_waits(void) {
  weft_process p = weft_process_new(sleep_then_print, .arg = "child done");
  if (weft_process_start(p) != 0) return fail("start");
  printf("main returns\n");
  fflush(stdout); /* the order of lines in the pipe is the order of events */
  return 0;
}

/* More children than weft keeps pidfds for: main waits for every
 * non-daemon one and ends every daemon, the oldest included. */
#define MANY_AT_EXIT 12

static int many_children_at_exit(void) {
  static char lines[MANY_AT_EXIT][32];
  for (int i = 0; i < MANY_AT_EXIT; i++) {
    weft_process d = weft_process_new(pause_forever, .daemon = true);
    if (weft_process_start(d) != 0) return fail("start daemon");
    printf("daemon pid=%d\n", (int)weft_process_pid(d));
    snprintf(lines[i], sizeof lines[i], "child %d done", i);
    weft_process p = weft_process_new(sleep_then_print, .arg = lines[i]);
    if (weft_process_start(p) != 0) return fail("start");
  }
  printf("main returns\n");
  fflush(stdout);
  return 0;
}

static int start_pausing_daemon(void) {
  weft_process d = weft_process_new(pause_forever, .daemon = true);
  if (weft_process_start(d) != 0) return fail("start");
  printf("daemon pid=%d\n", (int)weft_process_pid(d));
  fflush(stdout);
  return 0;
}

static int daemon_gone_after_exit(void) {
  if (start_pausing_daemon() != 0) return 99;
  exit(0);
}

static int ready_fd[2];

static int ignore_term(void *arg) {
  (void)arg;
  signal(SIGTERM, SIG_IGN);
  if (write(ready_fd[1], "r", 1) != 1) return 1;
  for (;;) pause();
}

static int daemon_ignores_term(void) {
  weft_set_daemon_grace(0.2);
  if (pipe(ready_fd) != 0) return fail("pipe");
  weft_process d = weft_process_new(ignore_term, .daemon = true);
  if (weft_process_start(d) != 0) return fail("start");
  char c;
  if (read(ready_fd[0], &c, 1) != 1) return fail("ready");
  printf("daemon pid=%d\n", (int)weft_process_pid(d));
  return 0;
}

static int parent_killed(void) {
  if (start_pausing_daemon() != 0) return 99;
  for (;;) pause();
}

/* A daemon started from a short-lived thread must not die with the thread:
 * PR_SET_PDEATHSIG is tied to the forking thread. */
static int ping_fd[2], pong_fd[2];

static int echo(void *arg) {
  (void)arg;
  char c;
  while (read(ping_fd[0], &c, 1) == 1)
    if (write(pong_fd[1], &c, 1) != 1) return 1;
  return 0;
}

static void *start_from_thread(void *out) {
  weft_process d = weft_process_new(echo, .daemon = true);
  *(weft_process *)out = d;
  if (weft_process_start(d) != 0) fail("start");
  return NULL;
}

static int daemon_from_thread(void) {
  if (pipe(ping_fd) != 0 || pipe(pong_fd) != 0) return fail("pipe");
  weft_process d;
  pthread_t t;
  pthread_create(&t, NULL, start_from_thread, &d);
  pthread_join(t, NULL);
  weft_sleep(0.1); /* the kernel signals a thread's death after join returns */
  char c = 'x';
  if (write(ping_fd[1], &c, 1) != 1 || read(pong_fd[0], &c, 1) != 1) return fail("ping");
  printf("daemon alive after its starting thread exited\n");
  printf("daemon pid=%d\n", (int)weft_process_pid(d));
  fflush(stdout);
  for (;;) pause();
}

static int start_grandchild(void *arg) {
  (void)arg;
  weft_process g = weft_process_new(sleep_then_print, .arg = "grandchild done");
  if (weft_process_start(g) != 0) return fail("start grandchild");
  printf("child returns\n");
  fflush(stdout);
  return 0;
}

static int nested_waits(void) {
  weft_process p = weft_process_new(start_grandchild);
  if (weft_process_start(p) != 0) return fail("start");
  weft_process_join(p, WEFT_FOREVER);
  printf("main joined child\n");
  return 0;
}

static int start_daemon_and_return(void *arg) {
  (void)arg;
  return start_pausing_daemon();
}

static int child_daemon_dies_with_child(void) {
  weft_process p = weft_process_new(start_daemon_and_return);
  if (weft_process_start(p) != 0) return fail("start");
  weft_process_join(p, WEFT_FOREVER);
  printf("main joined child\n");
  fflush(stdout);
  for (;;) pause(); /* the test checks the daemon is gone, then kills us */
}

/* ---- thread exit rules ----
 * A thread that must still be working when exit begins waits for
 * exit_started, set by an atexit handler registered after the first thread
 * start, so it runs before weft's join (atexit handlers run newest first).
 * The thread then works a little before printing: its line appears only if
 * the exit rules wait for it. */
static weft_event exit_started = WEFT_EVENT_INIT;

static void set_exit_started(void) { weft_event_set(&exit_started); }

static void *line_after_exit_began(void *arg) {
  weft_event_wait(&exit_started, WEFT_FOREVER);
  weft_sleep(0.2);
  printf("%s\n", (const char *)arg);
  fflush(stdout);
  return NULL;
}

static int start_late_line(const char *line, weft_thread *out) {
  weft_thread t = weft_thread_new(line_after_exit_began, .arg = (void *)line);
  if (t.id == 0 || weft_thread_start(t) != 0) return fail("thread start");
  if (out != NULL) *out = t;
  atexit(set_exit_started);
  return 0;
}

static int thread_main_returns(void) {
  if (start_late_line("thread done", NULL) != 0) return 99;
  printf("main returns\n");
  fflush(stdout);
  return 0;
}

static int thread_exit_call(void) {
  if (start_late_line("thread done", NULL) != 0) return 99;
  printf("main calls exit\n");
  fflush(stdout);
  exit(7);
}

static weft_event daemon_ready = WEFT_EVENT_INIT;

static void *daemon_ticks(void *arg) {
  (void)arg;
  printf("daemon running\n");
  fflush(stdout);
  weft_event_set(&daemon_ready);
  weft_sleep(3.0);
  printf("daemon late\n");
  fflush(stdout);
  return NULL;
}

static int thread_daemon_abandoned(void) {
  weft_thread d = weft_thread_new(daemon_ticks, .daemon = true);
  if (d.id == 0 || weft_thread_start(d) != 0) return fail("thread start");
  weft_event_wait(&daemon_ready, WEFT_FOREVER);
  printf("main returns\n");
  fflush(stdout);
  return 0;
}

static int thread_closed_waits(void) {
  weft_thread t;
  if (start_late_line("closed thread done", &t) != 0) return 99;
  if (weft_thread_close(t) != 0) return fail("close");
  printf("main returns\n");
  fflush(stdout);
  return 0;
}

/* A non-daemon thread that starts another one while the exit rules run. */
static void *start_second_at_exit(void *arg) {
  (void)arg;
  weft_event_wait(&exit_started, WEFT_FOREVER);
  weft_thread t = weft_thread_new(line_after_exit_began, .arg = "second thread done");
  if (t.id == 0 || weft_thread_start(t) != 0) fail("second start");
  printf("first thread done\n");
  fflush(stdout);
  return NULL;
}

static int thread_started_at_exit(void) {
  weft_thread t = weft_thread_new(start_second_at_exit);
  if (t.id == 0 || weft_thread_start(t) != 0) return fail("thread start");
  atexit(set_exit_started);
  printf("main returns\n");
  fflush(stdout);
  return 0;
}

static void *call_exit_five(void *arg) {
  (void)arg;
  printf("thread calls exit\n");
  fflush(stdout);
  exit(5);
}

/* exit() called by one thread joins the other non-daemon threads. */
static int thread_exit_from_thread(void) {
  if (start_late_line("other thread done", NULL) != 0) return 99;
  weft_thread a = weft_thread_new(call_exit_five);
  if (a.id == 0 || weft_thread_start(a) != 0) return fail("thread start");
  weft_thread_join(a, WEFT_FOREVER, NULL); /* never returns: a ends the process */
  printf("main joined the exiting thread\n");
  return 0;
}


/* ---- ThreadSanitizer: weft's primitives are understood, real races seen ---- */

enum { RACE_ITERS = 20000 };
static long shared_counter;
static weft_lock lock_a = WEFT_LOCK_INIT, lock_b = WEFT_LOCK_INIT;
static weft_rlock rlock = WEFT_RLOCK_INIT;
static weft_semaphore sem = WEFT_SEMAPHORE_INIT(1);
static weft_cond cond = WEFT_COND_INIT;

/* Each thread protects the counter with a lock of its own: a real race. */
static void *add_under_own_lock(void *arg) {
  weft_lock *mine = arg;
  for (int i = 0; i < RACE_ITERS; i++) {
    weft_lock_acquire(mine, WEFT_FOREVER);
    shared_counter++;
    weft_lock_release(mine);
  }
  return NULL;
}

static int race_wrong_lock(void) {
  weft_thread a = weft_thread_new(add_under_own_lock, .arg = &lock_a);
  weft_thread b = weft_thread_new(add_under_own_lock, .arg = &lock_b);
  weft_thread_start(a);
  weft_thread_start(b);
  weft_thread_join(a, WEFT_FOREVER, NULL);
  weft_thread_join(b, WEFT_FOREVER, NULL);
  printf("counter %ld\n", shared_counter);
  return 0;
}

/* The same counter, under one shared primitive per phase (Lock, RLock taken
 * twice, Semaphore, Condition): no race. */
static void *add_correctly(void *arg) {
  int kind = *(const int *)arg;
  for (int i = 0; i < RACE_ITERS / 4; i++) {
    switch (kind) {
    case 0:
      weft_lock_acquire(&lock_a, WEFT_FOREVER);
      shared_counter++;
      weft_lock_release(&lock_a);
      break;
    case 1:
      weft_rlock_acquire(&rlock, WEFT_FOREVER);
      weft_rlock_acquire(&rlock, WEFT_FOREVER);
      shared_counter++;
      weft_rlock_release(&rlock);
      weft_rlock_release(&rlock);
      break;
    case 2:
      weft_semaphore_acquire(&sem, WEFT_FOREVER);
      shared_counter++;
      weft_semaphore_release(&sem, 1);
      break;
    default:
      weft_cond_acquire(&cond, WEFT_FOREVER);
      shared_counter++;
      weft_cond_notify_all(&cond);
      weft_cond_release(&cond);
      break;
    }
  }
  return NULL;
}

static void *release_for_main(void *arg) {
  (void)arg;
  shared_counter++;                /* under lock_b, taken by main */
  weft_lock_release(&lock_b);      /* released by another thread, as Python allows */
  return NULL;
}

static int race_free_locks(void) {
  for (int kind = 0; kind < 4; kind++) {
    weft_thread a = weft_thread_new(add_correctly, .arg = &kind);
    weft_thread b = weft_thread_new(add_correctly, .arg = &kind);
    weft_thread_start(a);
    weft_thread_start(b);
    weft_thread_join(a, WEFT_FOREVER, NULL);
    weft_thread_join(b, WEFT_FOREVER, NULL);
  }
  weft_lock_acquire(&lock_b, WEFT_FOREVER);
  weft_thread c = weft_thread_new(release_for_main);
  weft_thread_start(c);
  weft_lock_acquire(&lock_b, WEFT_FOREVER); /* waits for c's release */
  shared_counter++;
  weft_lock_release(&lock_b);
  weft_thread_join(c, WEFT_FOREVER, NULL);
  printf("counter %ld\n", shared_counter);
  return shared_counter == 2L * RACE_ITERS + 2 ? 0 : 1; /* 4 phases x 2 x ITERS/4, + 2 */
}


/* Re-acquires a Lock it holds: a certain deadlock. WEFT_DEADLOCK decides
 * what happens (set by the test): error returns WEFT_EDEADLK, abort aborts. */
static int deadlock_aa(void) {
  static weft_lock solo = WEFT_LOCK_INIT_NAMED("solo");
  weft_lock_acquire(&solo, WEFT_FOREVER);
  int r = weft_lock_acquire(&solo, WEFT_FOREVER);
  printf("second acquire returned %s\n", weft_err_name(r));
  return 0;
}

/* The lock contention profile of a process tree (run with WEFT_LOCKSTAT
 * set): the parent takes "shared" (in shared memory) 100 times and
 * "private" 3 times; its child takes "shared" 50 times and its own copy of
 * "private" 7 times. The tree's table is printed once, by the parent. */
static weft_lock private_lock = WEFT_LOCK_INIT_NAMED("private");

static void take(weft_lock *l, int n) {
  for (int i = 0; i < n; i++) {
    weft_lock_acquire(l, WEFT_FOREVER);
    weft_lock_release(l);
  }
}

static int lockstat_child(void *arg) {
  take(arg, 50);
  take(&private_lock, 7);
  return 0;
}

static int lockstat_tree(void) {
  weft_lock *shared_lock = weft_lock_new(.name = "shared");
  if (shared_lock == NULL) return fail("weft_lock_new");
  weft_process p = weft_process_new(lockstat_child, .arg = shared_lock);
  if (weft_process_start(p) != 0) return fail("start");
  /* One after the other, so that no acquisition waits: the counts are exact. */
  if (weft_process_join(p, WEFT_FOREVER) != 0) return fail("join");
  take(shared_lock, 100);
  take(&private_lock, 3);
  printf("parent pid=%d child pid=%d\n", (int)getpid(), (int)weft_process_pid(p));
  fflush(stdout);
  return 0;
}

/* For the dump tests: a thread waits on an event, main waits for it, and
 * the process pauses until the test sends the dump's signal and reads the
 * dump from its stderr (or, with the signal unset, sees it die of it). */
static weft_event dump_never = WEFT_EVENT_INIT;
static int dump_waiter_line;

static void *dump_waiter(void *arg) {
  (void)arg;
  __atomic_store_n(&dump_waiter_line, __LINE__ + 1, __ATOMIC_RELEASE); /* the wait's line */
  weft_event_wait(&dump_never, 60);
  return NULL;
}

static int dump_signal(void) {
  weft_thread t = weft_thread_new(dump_waiter, .name = "sleeper", .daemon = true);
  if (weft_thread_start(t) != 0) return fail("start");
  while (__atomic_load_n(&dump_waiter_line, __ATOMIC_ACQUIRE) == 0) weft_sleep(0.001);
  printf("ready %d\n", __atomic_load_n(&dump_waiter_line, __ATOMIC_ACQUIRE));
  fflush(stdout);
  weft_thread_join(t, 60, NULL);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOFBF, 0); /* fully buffered, as a pipe makes it */
  const char *s = argc > 1 ? argv[1] : "";
  const char *arg = argc > 2 ? argv[2] : NULL;
  if (!strcmp(s, "flush_before_start")) return flush_before_start(arg);
  if (!strcmp(s, "lockstat_tree")) return lockstat_tree();
  if (!strcmp(s, "atexit_rules")) return atexit_rules();
  if (!strcmp(s, "main_returns_waits")) return main_returns_waits();
  if (!strcmp(s, "daemon_gone_after_exit")) return daemon_gone_after_exit();
  if (!strcmp(s, "many_children_at_exit")) return many_children_at_exit();
  if (!strcmp(s, "daemon_ignores_term")) return daemon_ignores_term();
  if (!strcmp(s, "parent_killed")) return parent_killed();
  if (!strcmp(s, "daemon_from_thread")) return daemon_from_thread();
  if (!strcmp(s, "nested_waits")) return nested_waits();
  if (!strcmp(s, "child_daemon_dies_with_child")) return child_daemon_dies_with_child();
  if (!strcmp(s, "thread_main_returns")) return thread_main_returns();
  if (!strcmp(s, "thread_exit_call")) return thread_exit_call();
  if (!strcmp(s, "thread_daemon_abandoned")) return thread_daemon_abandoned();
  if (!strcmp(s, "thread_closed_waits")) return thread_closed_waits();
  if (!strcmp(s, "thread_started_at_exit")) return thread_started_at_exit();
  if (!strcmp(s, "thread_exit_from_thread")) return thread_exit_from_thread();
  if (!strcmp(s, "race_wrong_lock")) return race_wrong_lock();
  if (!strcmp(s, "deadlock_aa")) return deadlock_aa();
  if (!strcmp(s, "race_free_locks")) return race_free_locks();
  if (!strcmp(s, "dump_signal")) return dump_signal();
  fprintf(stderr, "weft_helper: unknown scenario '%s'\n", s);
  return 2;
}
