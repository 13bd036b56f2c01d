/* SPDX-License-Identifier: MIT */
/* Tests of weft/thread.h: Python's threading.Thread semantics. Threads are
 * sequenced with weft_event and pipes, never with sleeps; where the kernel
 * finishes its work after ours (a detached thread leaving /proc/self/task),
 * a bounded poll with a deadline waits for it. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* ---- small tools ---- */

/* Number of threads of the calling process, as the kernel sees them. */
static int count_tasks(void) {
  DIR *d = opendir("/proc/self/task");
  ck_assert_ptr_nonnull(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* The thread count to come back to. ThreadSanitizer adds a thread of its
 * own at the first pthread_create, so one thread is made and joined first. */
static void *noop(void *arg) { return arg; }

static int baseline_tasks(void) {
  pthread_t pt;
  ck_assert_int_eq(pthread_create(&pt, NULL, noop, NULL), 0);
  ck_assert_int_eq(pthread_join(pt, NULL), 0);
  /* A joined thread may still be listed for a moment: wait (bounded) for
   * two reads in a row to agree. */
  int n = count_tasks(), prev = -1;
  double end = test_now() + 2;
  while (n != prev && test_now() < end) {
    prev = n;
    nap_ms(5);
    n = count_tasks();
  }
  return n;
}

/* A detached thread leaves /proc/self/task a little after it marked itself
 * finished: poll (bounded) until the count is back to want. */
static int wait_tasks(int want, double timeout) {
  double end = test_now() + timeout;
  int n;
  while ((n = count_tasks()) != want && test_now() < end) nap_ms(1);
  return n;
}

static bool handle_in(weft_thread h, const weft_thread *list, int n) {
  for (int i = 0; i < n; i++)
    if (list[i].id == h.id) return true;
  return false;
}

/* Makes thread creation fail with EAGAIN in the calling thread only: clone3
 * fails outright and clone fails when it would make a thread (CLONE_THREAD).
 * A plain fork (clone without CLONE_THREAD) still works. */
static bool block_threads_in_this_thread(void) {
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

/* ---- targets ---- */

static void *work(void *arg) { return arg; }
static void *return_arg(void *arg) { return arg; }

/* Records what the thread sees of itself, then waits for `go`. */
struct probe {
  weft_event started;
  weft_event go;
  weft_thread self;
  weft_thread main_seen;
  unsigned long pself;
  pid_t tid;
  char os_name[32];
  int getname_rc;
  int join_self;
  int close_main;
  void *ret;
};

static void *probe_main(void *arg) {
  struct probe *p = arg;
  p->self = weft_current_thread();
  p->main_seen = weft_main_thread();
  p->pself = (unsigned long)pthread_self();
  p->tid = gettid();
  p->getname_rc = pthread_getname_np(pthread_self(), p->os_name, sizeof p->os_name);
  p->join_self = weft_thread_join(p->self, WEFT_FOREVER, NULL); /* must not hang */
  p->close_main = weft_thread_close(weft_main_thread());
  weft_event_set(&p->started);
  weft_event_wait(&p->go, WEFT_FOREVER);
  return p->ret;
}

static void probe_init(struct probe *p, void *ret) {
  memset(p, 0, sizeof *p);
  weft_event_init(&p->started);
  weft_event_init(&p->go);
  p->ret = ret;
}

/* Waits for an event, then returns arg. */
struct gated {
  weft_event *go;
  void *ret;
  weft_event *ready; /* if set: set once the thread is about to wait */
};

static void *wait_go(void *arg) {
  struct gated *g = arg;
  if (g->ready != NULL) weft_event_set(g->ready);
  weft_event_wait(g->go, WEFT_FOREVER);
  return g->ret;
}

/* Starts a thread that waits for go, and returns once it is about to wait:
 * a fork while it is still starting could copy an allocator lock it holds,
 * and AddressSanitizer's allocator (GCC 12's) is not made safe across
 * fork, so the child's first allocation would wait for good. */
static weft_thread start_parked(struct gated *g, const char *name) {
  weft_event ready = WEFT_EVENT_INIT;
  g->ready = &ready;
  weft_thread t = weft_thread_new(wait_go, .arg = g, .name = name);
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_event_wait(&ready, 10), 0);
  g->ready = NULL;
  return t;
}

/* ---- start, join, result ---- */

START_TEST(start_join_returns_result) {
  struct probe p;
  int value = 7;
  probe_init(&p, &value);
  weft_thread t = weft_thread_new(probe_main, .arg = &p);
  ck_assert_uint_ne(t.id, 0);
  ck_assert(!weft_thread_is_alive(t));
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert(weft_thread_is_alive(t)); /* alive from start on, as in Python */
  ck_assert_int_eq(weft_event_wait(&p.started, 10), 0);
  void *res = &res; /* a sentinel: a failed join must not write it */
  ck_assert_int_eq(weft_thread_join(t, 0, &res), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_thread_join(t, 0.05, &res), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ETIMEDOUT);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "still running"));
  ck_assert_ptr_eq(res, &res);
  ck_assert(weft_thread_is_alive(t));
  weft_event_set(&p.go);
  ck_assert_int_eq(weft_thread_join(t, WEFT_FOREVER, &res), 0);
  ck_assert_ptr_eq(res, &value);
  ck_assert(!weft_thread_is_alive(t));
  /* Joining again, with any timeout, gives the same result. */
  res = NULL;
  ck_assert_int_eq(weft_thread_join(t, 0, &res), 0);
  ck_assert_ptr_eq(res, &value);
  res = NULL;
  ck_assert_int_eq(weft_thread_join(t, 5, &res), 0);
  ck_assert_ptr_eq(res, &value);
  ck_assert_int_eq(weft_thread_join(t, WEFT_FOREVER, NULL), 0);
  ck_assert_int_eq(weft_thread_close(t), 0);
}
END_TEST

START_TEST(result_of_many_threads) {
  enum { N = 16 };
  weft_thread t[N];
  long vals[N];
  for (int i = 0; i < N; i++) {
    vals[i] = i * 11;
    t[i] = weft_thread_new(return_arg, .arg = &vals[i]);
    ck_assert_int_eq(weft_thread_start(t[i]), 0);
  }
  for (int i = N - 1; i >= 0; i--) {
    void *res = NULL;
    ck_assert_int_eq(weft_thread_join(t[i], 10, &res), 0);
    ck_assert_ptr_eq(res, &vals[i]);
    ck_assert_int_eq(weft_thread_close(t[i]), 0);
  }
}
END_TEST

START_TEST(ident_and_native_id) {
  struct probe p;
  probe_init(&p, NULL);
  weft_thread t = weft_thread_new(probe_main, .arg = &p);
  ck_assert_uint_eq(weft_thread_ident(t), 0);
  ck_assert_int_eq(weft_thread_native_id(t), WEFT_ENOTSTARTED);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ENOTSTARTED);
  ck_assert_int_eq(weft_thread_start(t), 0);
  /* Right after start: native_id waits until the thread runs. */
  pid_t native = weft_thread_native_id(t);
  ck_assert_int_gt(native, 0);
  ck_assert_int_ne(native, getpid());
  ck_assert_int_eq(weft_event_wait(&p.started, 10), 0);
  ck_assert_uint_ne(weft_thread_ident(t), 0);
  ck_assert_uint_eq(weft_thread_ident(t), p.pself);
  ck_assert_int_eq(native, p.tid);
  ck_assert_uint_eq(p.self.id, t.id); /* current_thread() inside is the same handle */
  ck_assert_uint_eq(p.main_seen.id, weft_main_thread().id);
  ck_assert_uint_ne(weft_current_thread().id, t.id);
  weft_event_set(&p.go);
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  /* Both stay known after the thread stopped, as in Python. */
  ck_assert_uint_eq(weft_thread_ident(t), p.pself);
  ck_assert_int_eq(weft_thread_native_id(t), p.tid);
  weft_thread_close(t);
}
END_TEST

/* Joiners are weft threads too: each returns its join's code and result. */
struct joiner {
  weft_thread target;
  double timeout;
  int rc;
  void *res;
};

static void *join_it(void *arg) {
  struct joiner *j = arg;
  j->rc = weft_thread_join(j->target, j->timeout, &j->res);
  return NULL;
}

START_TEST(many_joiners_at_once) {
  enum { ROUNDS = 100, J = 4 };
  for (int round = 0; round < ROUNDS; round++) {
    weft_event go = WEFT_EVENT_INIT;
    struct gated g = {&go, (void *)(intptr_t)(round + 1), NULL};
    weft_thread t = weft_thread_new(wait_go, .arg = &g);
    ck_assert_int_eq(weft_thread_start(t), 0);
    struct joiner j[J];
    weft_thread jt[J];
    for (int i = 0; i < J; i++) {
      j[i] = (struct joiner){t, i == 0 ? 0.0 : WEFT_FOREVER, 1, NULL};
      if (i == 0) { /* a non-blocking join while it surely runs */
        join_it(&j[0]);
        ck_assert_int_eq(j[0].rc, WEFT_ETIMEDOUT);
        j[0].timeout = 30;
      }
      jt[i] = weft_thread_new(join_it, .arg = &j[i]);
      ck_assert_int_eq(weft_thread_start(jt[i]), 0);
    }
    if (round % 2) weft_sleep(0.0005); /* sometimes let the joiners block first */
    weft_event_set(&go);
    for (int i = 0; i < J; i++) {
      ck_assert_int_eq(weft_thread_join(jt[i], 30, NULL), 0);
      ck_assert_int_eq(j[i].rc, 0);
      ck_assert_ptr_eq(j[i].res, (void *)(intptr_t)(round + 1));
      weft_thread_close(jt[i]);
    }
    ck_assert_int_eq(weft_thread_close(t), 0);
  }
}
END_TEST

static void *exit_early(void *arg) { pthread_exit(arg); }

START_TEST(target_calling_pthread_exit_counts_as_finished) {
  int v = 3;
  weft_thread t = weft_thread_new(exit_early, .arg = &v);
  ck_assert_int_eq(weft_thread_start(t), 0);
  void *res = &res;
  ck_assert_int_eq(weft_thread_join(t, 10, &res), 0);
  ck_assert_ptr_null(res); /* the target never returned a value */
  ck_assert(!weft_thread_is_alive(t));
  ck_assert_int_eq(weft_active_count(), 1);
  weft_thread_close(t);
}
END_TEST

START_TEST(join_rejects_nan_timeout) {
  weft_event go = WEFT_EVENT_INIT;
  struct gated g = {&go, NULL, NULL};
  weft_thread t = weft_thread_new(wait_go, .arg = &g);
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_thread_join(t, (double)NAN, NULL), WEFT_EINVAL);
  weft_event_set(&go);
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  weft_thread_close(t);
}
END_TEST

/* ---- names, repr, OS name ---- */

START_TEST(default_names_count_from_one) {
  weft_thread a = weft_thread_new(work);
  weft_thread b = weft_thread_new(return_arg);
  ck_assert_str_eq(weft_thread_name(a), "Thread-1 (work)");
  ck_assert_str_eq(weft_thread_name(b), "Thread-2 (return_arg)");
  weft_thread_options o = {.size_ = sizeof o};
  weft_thread c = weft_thread_new_opts(work, NULL, &o); /* no target spelling */
  ck_assert_str_eq(weft_thread_name(c), "Thread-3");
  ck_assert_str_eq(weft_thread_name(weft_main_thread()), "MainThread");
  ck_assert_str_eq(weft_thread_name(weft_current_thread()), "MainThread");
  ck_assert_int_eq(weft_thread_start(a), 0);
  ck_assert_int_eq(weft_thread_join(a, 10, NULL), 0);
  ck_assert_str_eq(weft_thread_name(a), "Thread-1 (work)"); /* unchanged by running */
  weft_thread_close(a);
  weft_thread_close(b);
  weft_thread_close(c);
}
END_TEST

/* Python 3.10+: `Thread(target=work, name="worker")` takes no number from
 * the counter, so the next default-named thread is still Thread-1. */
START_TEST(explicit_name_wins_and_takes_no_number) {
  weft_thread a = weft_thread_new(work, .name = "worker");
  ck_assert_str_eq(weft_thread_name(a), "worker");
  weft_thread b = weft_thread_new(work);
  ck_assert_str_eq(weft_thread_name(b), "Thread-1 (work)");
  weft_thread_close(a);
  weft_thread_close(b);
}
END_TEST

START_TEST(repr_follows_python) {
  char buf[WEFT_THREAD_REPR_MAX], want[WEFT_THREAD_REPR_MAX];
  snprintf(want, sizeof want, "<_MainThread(MainThread, started %lu)>",
           (unsigned long)pthread_self());
  ck_assert_str_eq(weft_thread_repr(weft_main_thread(), buf, sizeof buf), want);

  struct probe p;
  probe_init(&p, NULL);
  weft_thread t = weft_thread_new(probe_main, .arg = &p);
  ck_assert_str_eq(weft_thread_repr(t, buf, sizeof buf), "<Thread(Thread-1 (probe_main), initial)>");
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_event_wait(&p.started, 10), 0);
  snprintf(want, sizeof want, "<Thread(Thread-1 (probe_main), started %lu)>", p.pself);
  ck_assert_str_eq(weft_thread_repr(t, buf, sizeof buf), want);
  weft_event_set(&p.go);
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  snprintf(want, sizeof want, "<Thread(Thread-1 (probe_main), stopped %lu)>", p.pself);
  ck_assert_str_eq(weft_thread_repr(t, buf, sizeof buf), want);
  weft_thread_close(t);
  ck_assert_str_eq(weft_thread_repr(t, buf, sizeof buf), "<Thread closed>");
  ck_assert_str_eq(weft_thread_repr((weft_thread){0}, buf, sizeof buf), "None");

  struct probe d;
  probe_init(&d, NULL);
  weft_thread dt = weft_thread_new(probe_main, .arg = &d, .name = "sing", .daemon = true);
  ck_assert_str_eq(weft_thread_repr(dt, buf, sizeof buf), "<Thread(sing, initial daemon)>");
  ck_assert_int_eq(weft_thread_start(dt), 0);
  ck_assert_int_eq(weft_event_wait(&d.started, 10), 0);
  snprintf(want, sizeof want, "<Thread(sing, started daemon %lu)>", d.pself);
  ck_assert_str_eq(weft_thread_repr(dt, buf, sizeof buf), want);
  weft_event_set(&d.go);
  ck_assert_int_eq(weft_thread_join(dt, 10, NULL), 0);
  snprintf(want, sizeof want, "<Thread(sing, stopped daemon %lu)>", d.pself);
  ck_assert_str_eq(weft_thread_repr(dt, buf, sizeof buf), want);
  weft_thread_close(dt);

  /* A short buffer is cut, never overrun. */
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  ck_assert_str_eq(weft_thread_repr(weft_main_thread(), tiny, sizeof tiny), "<_MainT");
}
END_TEST

static void check_os_name(const char *name, const char *want) {
  struct probe p;
  probe_init(&p, NULL);
  weft_thread t = name ? weft_thread_new(probe_main, .arg = &p, .name = name)
                       : weft_thread_new(probe_main, .arg = &p);
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_event_wait(&p.started, 10), 0);
  ck_assert_int_eq(p.getname_rc, 0);
  ck_assert_str_eq(p.os_name, want);
  /* What top -H shows: /proc/self/task/TID/comm. */
  char path[64], comm[64] = "";
  snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)p.tid);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  ck_assert_ptr_nonnull(fgets(comm, sizeof comm, f));
  fclose(f);
  comm[strcspn(comm, "\n")] = '\0';
  ck_assert_str_eq(comm, want);
  weft_event_set(&p.go);
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  weft_thread_close(t);
}

START_TEST(os_thread_name_is_first_15_bytes) {
  check_os_name(NULL, "Thread-1 (probe"); /* "Thread-1 (probe_main)" */
  check_os_name("abcdefghijklmnopqrstuvwxyz", "abcdefghijklmno");
  check_os_name("short", "short");
  check_os_name("exactly15bytes!", "exactly15bytes!");
}
END_TEST

/* ---- main thread, current thread, Dummy-N ---- */

START_TEST(main_thread_identity) {
  weft_thread m = weft_main_thread();
  ck_assert_uint_ne(m.id, 0);
  ck_assert_uint_eq(weft_current_thread().id, m.id);
  ck_assert(weft_thread_is_alive(m));
  ck_assert(!weft_thread_daemon(m));
  ck_assert_uint_eq(weft_thread_ident(m), (uint64_t)pthread_self());
  ck_assert_int_eq(weft_thread_native_id(m), getpid());
  ck_assert_int_eq(weft_thread_start(m), WEFT_EALREADY);
  ck_assert_int_eq(weft_thread_set_daemon(m, true), WEFT_EALREADY);
  ck_assert(!weft_thread_daemon(m));
  ck_assert_int_eq(weft_thread_join(m, 0.5, NULL), WEFT_EDEADLK); /* itself: no hang */
  ck_assert_int_eq(weft_thread_join(m, WEFT_FOREVER, NULL), WEFT_EDEADLK);
  ck_assert_int_eq(weft_thread_close(m), WEFT_EPERM);
  ck_assert(weft_thread_is_alive(m)); /* close refused: still valid */
  /* The same answers inside another thread. */
  struct probe p;
  probe_init(&p, NULL);
  weft_thread t = weft_thread_new(probe_main, .arg = &p);
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_event_wait(&p.started, 10), 0);
  ck_assert_int_eq(p.join_self, WEFT_EDEADLK);
  ck_assert_int_eq(p.close_main, WEFT_EPERM);
  weft_event_set(&p.go);
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  weft_thread_close(t);
  ck_assert_int_eq(weft_active_count(), 1);
}
END_TEST

/* thread.h: join gives WEFT_EPERM "for a thread weft did not start (the
 * main thread, Dummy-N)". From another thread it must not simply wait. */
static void *join_main(void *arg) {
  (void)arg;
  return (void *)(intptr_t)weft_thread_join(weft_main_thread(), 0.3, NULL);
}

START_TEST(join_main_from_other_thread_is_eperm) {
  weft_thread t = weft_thread_new(join_main);
  ck_assert_int_eq(weft_thread_start(t), 0);
  void *res = NULL;
  ck_assert_int_eq(weft_thread_join(t, 10, &res), 0);
  ck_assert_msg((int)(intptr_t)res == WEFT_EPERM, "join of MainThread from a thread gave %s",
                weft_err_name((int)(intptr_t)res));
  weft_thread_close(t);
}
END_TEST

/* A thread weft did not create, seen through current_thread(). */
struct foreign {
  weft_event ready;
  weft_event go;
  weft_thread self;
  weft_thread again;
  unsigned long pself;
  pid_t tid;
  int join_self;
  int count_inside;
};

static void *foreign_main(void *arg) {
  struct foreign *f = arg;
  f->self = weft_current_thread();
  f->again = weft_current_thread();
  f->pself = (unsigned long)pthread_self();
  f->tid = gettid();
  f->join_self = weft_thread_join(f->self, 0, NULL);
  f->count_inside = weft_active_count();
  weft_event_set(&f->ready);
  weft_event_wait(&f->go, WEFT_FOREVER);
  return NULL;
}

START_TEST(dummy_thread_for_foreign_threads) {
  ck_assert_int_eq(weft_active_count(), 1);
  struct foreign f = {.ready = WEFT_EVENT_INIT, .go = WEFT_EVENT_INIT};
  pthread_t pt;
  ck_assert_int_eq(pthread_create(&pt, NULL, foreign_main, &f), 0);
  ck_assert_int_eq(weft_event_wait(&f.ready, 10), 0);
  weft_thread d = f.self;
  ck_assert_uint_ne(d.id, 0);
  ck_assert_uint_eq(f.again.id, d.id);
  ck_assert_str_eq(weft_thread_name(d), "Dummy-1");
  ck_assert(weft_thread_daemon(d));
  ck_assert(weft_thread_is_alive(d));
  ck_assert_uint_eq(weft_thread_ident(d), f.pself);
  ck_assert_int_eq(weft_thread_native_id(d), f.tid);
  char buf[WEFT_THREAD_REPR_MAX], want[WEFT_THREAD_REPR_MAX];
  snprintf(want, sizeof want, "<_DummyThread(Dummy-1, started daemon %lu)>", f.pself);
  ck_assert_str_eq(weft_thread_repr(d, buf, sizeof buf), want);
  ck_assert_int_eq(f.join_self, WEFT_EDEADLK);
  ck_assert_int_eq(f.count_inside, 2);
  ck_assert_int_eq(weft_thread_join(d, 0.2, NULL), WEFT_EPERM);
  ck_assert_int_eq(weft_thread_join(d, WEFT_FOREVER, NULL), WEFT_EPERM);
  ck_assert_int_eq(weft_thread_start(d), WEFT_EALREADY);
  ck_assert_int_eq(weft_thread_close(d), WEFT_EPERM);
  weft_thread list[8];
  int n = weft_enumerate(list, 8);
  ck_assert_int_eq(n, 2);
  ck_assert(handle_in(d, list, n));
  ck_assert(handle_in(weft_main_thread(), list, n));
  ck_assert_int_eq(weft_active_count(), 2);
  /* Once that pthread has ended, it is gone from the lists. */
  weft_event_set(&f.go);
  ck_assert_int_eq(pthread_join(pt, NULL), 0);
  ck_assert_int_eq(weft_active_count(), 1);
  n = weft_enumerate(list, 8);
  ck_assert_int_eq(n, 1);
  ck_assert_uint_eq(list[0].id, weft_main_thread().id);
  ck_assert(!weft_thread_is_alive(d));
  /* The counter is shared with Thread-N, as Python's _counter. */
  weft_thread t = weft_thread_new(work);
  ck_assert_str_eq(weft_thread_name(t), "Thread-2 (work)");
  weft_thread_close(t);
}
END_TEST

START_TEST(many_foreign_threads_come_and_go) {
  enum { ROUNDS = 50, K = 4 };
  int base_tasks = baseline_tasks();
  for (int round = 0; round < ROUNDS; round++) {
    struct foreign f[K];
    pthread_t pt[K];
    for (int i = 0; i < K; i++) {
      f[i] = (struct foreign){.ready = WEFT_EVENT_INIT, .go = WEFT_EVENT_INIT};
      ck_assert_int_eq(pthread_create(&pt[i], NULL, foreign_main, &f[i]), 0);
    }
    for (int i = 0; i < K; i++) ck_assert_int_eq(weft_event_wait(&f[i].ready, 10), 0);
    ck_assert_int_eq(weft_active_count(), K + 1);
    for (int i = 0; i < K; i++) {
      ck_assert(weft_thread_is_alive(f[i].self));
      weft_event_set(&f[i].go);
    }
    for (int i = 0; i < K; i++) ck_assert_int_eq(pthread_join(pt[i], NULL), 0);
    ck_assert_int_eq(weft_active_count(), 1);
  }
  ck_assert_int_eq(wait_tasks(base_tasks, 5), base_tasks);
}
END_TEST

/* ---- enumerate, active_count ---- */

START_TEST(enumerate_and_active_count) {
  weft_thread list[16];
  ck_assert_int_eq(weft_active_count(), 1);
  ck_assert_int_eq(weft_enumerate(list, 16), 1);
  ck_assert_uint_eq(list[0].id, weft_main_thread().id);
  enum { N = 5 };
  weft_event go = WEFT_EVENT_INIT;
  struct gated g = {&go, NULL, NULL};
  weft_thread t[N];
  for (int i = 0; i < N; i++) t[i] = weft_thread_new(wait_go, .arg = &g);
  weft_thread idle = weft_thread_new(wait_go, .arg = &g); /* never started: not counted */
  ck_assert_int_eq(weft_active_count(), 1);
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(weft_thread_start(t[i]), 0);
    ck_assert_int_eq(weft_active_count(), i + 2); /* counted from start on */
  }
  int n = weft_enumerate(list, 16);
  ck_assert_int_eq(n, N + 1);
  ck_assert(handle_in(weft_main_thread(), list, n));
  for (int i = 0; i < N; i++) ck_assert(handle_in(t[i], list, n));
  ck_assert(!handle_in(idle, list, n));
  /* A short array: the count goes on, the array is not overrun. */
  weft_thread few[3] = {{0}, {0}, {99}};
  ck_assert_int_eq(weft_enumerate(few, 2), N + 1);
  ck_assert_uint_ne(few[0].id, 0);
  ck_assert_uint_ne(few[1].id, 0);
  ck_assert_uint_eq(few[2].id, 99);
  ck_assert_int_eq(weft_enumerate(NULL, 0), N + 1);
  ck_assert_int_eq(weft_enumerate(NULL, 3), WEFT_EINVAL);
  weft_event_set(&go);
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(weft_thread_join(t[i], 10, NULL), 0);
    weft_thread_close(t[i]);
  }
  ck_assert_int_eq(weft_active_count(), 1);
  weft_thread_close(idle);
}
END_TEST

/* The counts follow the threads alive, not the most ever held: after a
 * peak of PEAK threads, with 2 left running (and one of those closed),
 * the count and the list are exact, here and in a forked child. */
#define PEAK 1000

static int child_counts(void *arg) {
  (void)arg;
  weft_thread list[4];
  int n = weft_enumerate(list, 4);
  bool ok = weft_active_count() == 1 && n == 1 && list[0].id == weft_current_thread().id;
  return ok ? 0 : 1;
}

START_TEST(counts_exact_after_peak) {
  static weft_thread t[PEAK];
  static weft_thread list[PEAK + 8];
  /* Static: t[1], closed while it runs, is never joined and may still be
   * leaving weft_event_wait when this function returns. */
  static weft_event go = WEFT_EVENT_INIT, stay = WEFT_EVENT_INIT;
  static struct gated g_go = {&go, NULL, NULL}, g_stay = {&stay, NULL, NULL};
  for (int i = 0; i < PEAK; i++) {
    t[i] = weft_thread_new(wait_go, .arg = i < 2 ? &g_stay : &g_go);
    ck_assert_int_eq(weft_thread_start(t[i]), 0);
  }
  ck_assert_int_eq(weft_active_count(), PEAK + 1);
  ck_assert_int_eq(weft_enumerate(list, PEAK + 8), PEAK + 1);
  weft_event_set(&go);
  for (int i = 2; i < PEAK; i++) {
    ck_assert_int_eq(weft_thread_join(t[i], 30, NULL), 0);
    if (i % 2 == 0) weft_thread_close(t[i]); /* ended threads, closed or not, never count */
  }
  ck_assert_int_eq(weft_active_count(), 3);
  int n = weft_enumerate(list, PEAK + 8);
  ck_assert_int_eq(n, 3);
  ck_assert(handle_in(weft_main_thread(), list, n));
  ck_assert(handle_in(t[0], list, n));
  ck_assert(handle_in(t[1], list, n));

  /* A forked child has one thread: itself. */
  weft_process p = weft_process_new(child_counts);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 30), 0);
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 0);
  weft_process_close(p);

  /* A handle closed while its thread runs: no longer listed nor counted. */
  ck_assert_int_eq(weft_thread_close(t[1]), 0);
  ck_assert_int_eq(weft_active_count(), 2);
  n = weft_enumerate(list, PEAK + 8);
  ck_assert_int_eq(n, 2);
  ck_assert(handle_in(weft_main_thread(), list, n));
  ck_assert(handle_in(t[0], list, n));

  weft_event_set(&stay);
  ck_assert_int_eq(weft_thread_join(t[0], 30, NULL), 0);
  ck_assert_int_eq(weft_active_count(), 1);
  ck_assert_int_eq(weft_enumerate(list, PEAK + 8), 1);
  for (int i = 0; i < PEAK; i++)
    if (i != 1 && i % 2 != 0) weft_thread_close(t[i]);
  weft_thread_close(t[0]);
}
END_TEST

/* ---- daemon flag ---- */

struct spawn_inside {
  bool set_false;  /* call set_daemon(false) on the inner thread before start */
  bool inner_daemon;
  int rc;
};

static void *spawn_inner(void *arg) {
  struct spawn_inside *s = arg;
  weft_thread inner = weft_thread_new(work);
  if (s->set_false) weft_thread_set_daemon(inner, false);
  s->inner_daemon = weft_thread_daemon(inner);
  s->rc = weft_thread_start(inner);
  if (s->rc == 0) s->rc = weft_thread_join(inner, 10, NULL);
  weft_thread_close(inner);
  return NULL;
}

START_TEST(daemon_flag_rules) {
  weft_thread t = weft_thread_new(work);
  ck_assert(!weft_thread_daemon(t)); /* main is not a daemon */
  ck_assert_int_eq(weft_thread_set_daemon(t, true), 0);
  ck_assert(weft_thread_daemon(t));
  ck_assert_int_eq(weft_thread_set_daemon(t, false), 0);
  ck_assert(!weft_thread_daemon(t));
  ck_assert_int_eq(weft_thread_set_daemon(t, true), 0);
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_thread_set_daemon(t, false), WEFT_EALREADY);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "already started"));
  ck_assert(weft_thread_daemon(t));
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  ck_assert_int_eq(weft_thread_set_daemon(t, false), WEFT_EALREADY);
  ck_assert(weft_thread_daemon(t));
  weft_thread_close(t);
  weft_thread o = weft_thread_new(work, .daemon = true);
  ck_assert(weft_thread_daemon(o));
  weft_thread_close(o);
}
END_TEST

START_TEST(thread_made_by_daemon_is_daemon) {
  struct spawn_inside s = {false, false, 1};
  weft_thread d = weft_thread_new(spawn_inner, .arg = &s, .daemon = true);
  ck_assert_int_eq(weft_thread_start(d), 0);
  ck_assert_int_eq(weft_thread_join(d, 10, NULL), 0);
  ck_assert_int_eq(s.rc, 0);
  ck_assert(s.inner_daemon);
  weft_thread_close(d);
  /* ... unless it is set otherwise before start (Python's daemon=False). */
  s = (struct spawn_inside){true, true, 1};
  d = weft_thread_new(spawn_inner, .arg = &s, .daemon = true);
  ck_assert_int_eq(weft_thread_start(d), 0);
  ck_assert_int_eq(weft_thread_join(d, 10, NULL), 0);
  ck_assert_int_eq(s.rc, 0);
  ck_assert(!s.inner_daemon);
  weft_thread_close(d);
  /* A non-daemon thread makes non-daemon threads. */
  s = (struct spawn_inside){false, true, 1};
  d = weft_thread_new(spawn_inner, .arg = &s);
  ck_assert_int_eq(weft_thread_start(d), 0);
  ck_assert_int_eq(weft_thread_join(d, 10, NULL), 0);
  ck_assert(!s.inner_daemon);
  weft_thread_close(d);
}
END_TEST

/* A foreign thread is a daemon Dummy-N to weft; a thread it creates must
 * be a daemon (Python: daemon defaults to current_thread().daemon), whether
 * or not it asked for current_thread() first. */
struct foreign_spawn {
  bool ask_first;
  bool inner_daemon;
};

static void *foreign_spawn_main(void *arg) {
  struct foreign_spawn *f = arg;
  if (f->ask_first) weft_current_thread();
  weft_thread inner = weft_thread_new(work);
  f->inner_daemon = weft_thread_daemon(inner);
  weft_thread_close(inner);
  return NULL;
}

START_TEST(thread_made_by_foreign_thread_is_daemon) {
  struct foreign_spawn asked = {true, false}, not_asked = {false, false};
  pthread_t pt;
  ck_assert_int_eq(pthread_create(&pt, NULL, foreign_spawn_main, &asked), 0);
  pthread_join(pt, NULL);
  ck_assert_int_eq(pthread_create(&pt, NULL, foreign_spawn_main, &not_asked), 0);
  pthread_join(pt, NULL);
  ck_assert(asked.inner_daemon);
  ck_assert_msg(not_asked.inner_daemon == asked.inner_daemon,
                "daemon flag of a thread made by a foreign thread depends on whether that thread "
                "called weft_current_thread() first");
}
END_TEST

/* ---- exit rules (helper programs) ---- */

/* Runs a helper to its end; returns its output and wait status. */
static int run_helper(const char *scenario, char *out, size_t size, double *elapsed) {
  /* ThreadSanitizer sleeps 1 s at exit by default, long enough for a thread
   * the exit rules wrongly abandon to finish anyway: turn that off. */
  const char *old = getenv("TSAN_OPTIONS");
  char opts[512];
  snprintf(opts, sizeof opts, "%s%satexit_sleep_ms=0", old ? old : "", old && *old ? ":" : "");
  setenv("TSAN_OPTIONS", opts, 1);
  int fd;
  double t0 = test_now();
  pid_t pid = helper_spawn(scenario, &fd);
  read_all(fd, out, size, 20); /* until EOF: the helper (and every thread) is gone */
  int status = wait_status(pid);
  if (elapsed) *elapsed = test_now() - t0;
  close(fd);
  return status;
}

static void assert_before(const char *out, const char *first, const char *second) {
  const char *a = strstr(out, first), *b = strstr(out, second);
  ck_assert_msg(a != NULL, "no '%s' in output: %s", first, out);
  ck_assert_msg(b != NULL, "no '%s' in output: %s", second, out);
  ck_assert_msg(a < b, "'%s' came after '%s': %s", first, second, out);
}

START_TEST(main_return_waits_for_nondaemon_thread) {
  char out[4096];
  int status = run_helper("thread_main_returns", out, sizeof out, NULL);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d: %s", status, out);
  assert_before(out, "main returns", "thread done");
  ck_assert_int_eq(count_substr(out, "thread done"), 1);
}
END_TEST

START_TEST(exit_call_waits_for_nondaemon_thread) {
  char out[4096];
  int status = run_helper("thread_exit_call", out, sizeof out, NULL);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 7, "status %d: %s", status, out);
  assert_before(out, "main calls exit", "thread done");
}
END_TEST

START_TEST(exit_from_a_thread_waits_for_the_others) {
  char out[4096];
  int status = run_helper("thread_exit_from_thread", out, sizeof out, NULL);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 5, "status %d: %s", status, out);
  assert_before(out, "thread calls exit", "other thread done");
  ck_assert_ptr_null(strstr(out, "main joined"));
}
END_TEST

START_TEST(daemon_thread_is_abandoned) {
  char out[4096];
  double elapsed = 0;
  int status = run_helper("thread_daemon_abandoned", out, sizeof out, &elapsed);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d: %s", status, out);
  assert_before(out, "daemon running", "main returns");
  ck_assert_msg(strstr(out, "daemon late") == NULL, "daemon was waited for: %s", out);
  ck_assert_msg(elapsed < 2.5, "exit took %.2f s: the daemon (3 s) was waited for", elapsed);
}
END_TEST

START_TEST(threads_started_during_exit_are_joined) {
  char out[4096];
  int status = run_helper("thread_started_at_exit", out, sizeof out, NULL);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d: %s", status, out);
  assert_before(out, "main returns", "first thread done");
  assert_before(out, "main returns", "second thread done");
}
END_TEST

/* thread.h: "the exit rules still wait for it if it is not a daemon". */
START_TEST(closed_running_thread_is_still_joined_at_exit) {
  char out[4096];
  int status = run_helper("thread_closed_waits", out, sizeof out, NULL);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d: %s", status, out);
  assert_before(out, "main returns", "closed thread done");
}
END_TEST

/* A child process waits for its own non-daemon threads before it exits. */
struct child_io {
  int go_r;  /* the thread reads one byte before it finishes */
  int out_w; /* lines for the parent */
  bool daemon;
};

static void put_line(int fd, const char *line) {
  ssize_t n = write(fd, line, strlen(line));
  (void)n;
}

static void *child_thread_work(void *arg) {
  struct child_io *io = arg;
  char c;
  put_line(io->out_w, "thread waiting\n");
  if (read(io->go_r, &c, 1) == 1) put_line(io->out_w, "thread done\n");
  return NULL;
}

static int child_starts_thread(void *arg) {
  struct child_io *io = arg;
  weft_thread t = weft_thread_new(child_thread_work, .arg = io, .daemon = io->daemon);
  if (t.id == 0 || weft_thread_start(t) != 0) return 90;
  put_line(io->out_w, "target returns\n");
  return 3;
}

START_TEST(child_process_waits_for_its_threads) {
  for (int round = 0; round < 5; round++) {
    int go[2], out[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(out), 0);
    struct child_io io = {go[0], out[1], false};
    weft_process p = weft_process_new(child_starts_thread, .arg = &io);
    ck_assert_int_eq(weft_process_start(p), 0);
    close(out[1]);
    char buf[512];
    ck_assert_msg(read_until(out[0], buf, sizeof buf, "target returns", 10), "got: %s", buf);
    /* The target returned, but the child waits for its thread. */
    ck_assert_int_eq(weft_process_join(p, 0.2), WEFT_ETIMEDOUT);
    ck_assert(weft_process_is_alive(p));
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    ck_assert_int_eq(weft_process_join(p, 10), 0);
    char rest[512];
    read_all(out[0], rest, sizeof rest, 5); /* EOF: the child is gone */
    ck_assert_msg(strstr(rest, "thread done") != NULL || strstr(buf, "thread done") != NULL,
                  "the child's thread never finished: %s%s", buf, rest);
    int code = -1;
    ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
    ck_assert_int_eq(code, 3);
    weft_process_close(p);
    close(go[0]);
    close(go[1]);
    close(out[0]);
  }
}
END_TEST

START_TEST(child_process_abandons_its_daemon_threads) {
  int go[2], out[2];
  ck_assert_int_eq(pipe(go), 0);
  ck_assert_int_eq(pipe(out), 0);
  struct child_io io = {go[0], out[1], true};
  weft_process p = weft_process_new(child_starts_thread, .arg = &io);
  ck_assert_int_eq(weft_process_start(p), 0);
  close(out[1]);
  int rc = weft_process_join(p, 10); /* the daemon thread waits forever for a byte */
  if (rc != 0) weft_process_kill(p), weft_process_join(p, 5);
  ck_assert_int_eq(rc, 0);
  int code = -1;
  weft_process_exitcode(p, &code);
  ck_assert_int_eq(code, 3);
  char buf[512];
  read_all(out[0], buf, sizeof buf, 5);
  ck_assert_ptr_nonnull(strstr(buf, "target returns"));
  ck_assert_ptr_null(strstr(buf, "thread done"));
  weft_process_close(p);
  close(go[0]);
  close(go[1]);
  close(out[0]);
}
END_TEST

/* ---- misuse ---- */

START_TEST(misuse_null_target_and_long_name) {
  weft_thread t = weft_thread_new((weft_thread_target)NULL);
  ck_assert_uint_eq(t.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "NULL"));
  char name[WEFT_NAME_MAX + 2];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0'; /* WEFT_NAME_MAX + 1 bytes */
  t = weft_thread_new(work, .name = name);
  ck_assert_uint_eq(t.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "longer"));
  name[WEFT_NAME_MAX] = '\0'; /* exactly WEFT_NAME_MAX bytes: fine */
  t = weft_thread_new(work, .name = name);
  ck_assert_uint_ne(t.id, 0);
  ck_assert_str_eq(weft_thread_name(t), name);
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  weft_thread_close(t);
  /* The id-0 handle is "none" everywhere. */
  weft_thread none = {0};
  ck_assert_int_eq(weft_thread_start(none), WEFT_ECLOSED);
  ck_assert_int_eq(weft_thread_join(none, 0, NULL), WEFT_ECLOSED);
  ck_assert_int_eq(weft_thread_close(none), WEFT_ECLOSED);
  ck_assert(!weft_thread_is_alive(none));
  ck_assert_int_eq(weft_active_count(), 1);
}
END_TEST

START_TEST(misuse_start_twice) {
  weft_event go = WEFT_EVENT_INIT;
  struct gated g = {&go, NULL, NULL};
  weft_thread t = weft_thread_new(wait_go, .arg = &g, .name = "twice");
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_thread_start(t), WEFT_EALREADY); /* running */
  ck_assert_int_eq(weft_last_error_code(), WEFT_EALREADY);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "twice was already started"));
  ck_assert_int_eq(weft_active_count(), 2); /* no second thread appeared */
  weft_event_set(&go);
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  ck_assert_int_eq(weft_thread_start(t), WEFT_EALREADY); /* stopped */
  ck_assert(!weft_thread_is_alive(t));
  weft_thread_close(t);
}
END_TEST

START_TEST(misuse_join_before_start) {
  weft_thread t = weft_thread_new(work, .name = "early");
  void *res = &res;
  ck_assert_int_eq(weft_thread_join(t, 0, &res), WEFT_ENOTSTARTED);
  ck_assert_int_eq(weft_thread_join(t, WEFT_FOREVER, &res), WEFT_ENOTSTARTED); /* no hang */
  ck_assert_int_eq(weft_last_error_code(), WEFT_ENOTSTARTED);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "early"));
  ck_assert_ptr_eq(res, &res);
  ck_assert(!weft_thread_is_alive(t));
  ck_assert_int_eq(weft_thread_native_id(t), WEFT_ENOTSTARTED);
  ck_assert_uint_eq(weft_thread_ident(t), 0);
  /* Still startable afterwards. */
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
  weft_thread_close(t);
}
END_TEST

static void *join_self_main(void *arg) {
  (void)arg;
  weft_thread me = weft_current_thread();
  int a = weft_thread_join(me, WEFT_FOREVER, NULL);
  int b = weft_thread_join(me, 1, NULL);
  return (void *)(intptr_t)(a == WEFT_EDEADLK && b == WEFT_EDEADLK &&
                            weft_last_error_code() == WEFT_EDEADLK);
}

START_TEST(misuse_join_current_thread) {
  for (int i = 0; i < 20; i++) {
    weft_thread t = weft_thread_new(join_self_main);
    ck_assert_int_eq(weft_thread_start(t), 0);
    void *ok = NULL;
    ck_assert_int_eq(weft_thread_join(t, 10, &ok), 0);
    ck_assert_ptr_eq(ok, (void *)1);
    weft_thread_close(t);
  }
  ck_assert_int_eq(weft_thread_join(weft_current_thread(), WEFT_FOREVER, NULL), WEFT_EDEADLK);
}
END_TEST

static void check_closed(weft_thread t) {
  char buf[WEFT_THREAD_REPR_MAX];
  ck_assert_int_eq(weft_thread_start(t), WEFT_ECLOSED);
  ck_assert_int_eq(weft_thread_join(t, 0, NULL), WEFT_ECLOSED);
  ck_assert_int_eq(weft_thread_join(t, WEFT_FOREVER, NULL), WEFT_ECLOSED);
  ck_assert_int_eq(weft_thread_set_daemon(t, true), WEFT_ECLOSED);
  ck_assert_int_eq(weft_thread_native_id(t), WEFT_ECLOSED);
  ck_assert_int_eq(weft_thread_close(t), WEFT_ECLOSED);
  ck_assert(!weft_thread_is_alive(t));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  ck_assert(!weft_thread_daemon(t));
  ck_assert_uint_eq(weft_thread_ident(t), 0);
  ck_assert_ptr_null(weft_thread_name(t));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  ck_assert_str_eq(weft_thread_repr(t, buf, sizeof buf), "<Thread closed>");
}

START_TEST(misuse_calls_after_close) {
  weft_thread a = weft_thread_new(work, .daemon = true); /* never started */
  ck_assert_int_eq(weft_thread_close(a), 0);
  check_closed(a);
  weft_thread b = weft_thread_new(work); /* stopped */
  ck_assert_int_eq(weft_thread_start(b), 0);
  ck_assert_int_eq(weft_thread_join(b, 10, NULL), 0);
  ck_assert_int_eq(weft_thread_close(b), 0);
  check_closed(b);
  /* A new object reusing the slot does not answer for the old handle. */
  weft_thread c = weft_thread_new(work);
  ck_assert_uint_ne(c.id, a.id);
  ck_assert_uint_ne(c.id, b.id);
  check_closed(a);
  check_closed(b);
  ck_assert_str_eq(weft_thread_name(c), "Thread-3 (work)");
  weft_thread_close(c);
}
END_TEST

/* Closing a running thread's handle detaches it: the handle is invalid at
 * once, the thread runs on and finishes. */
struct detached {
  weft_event go;
  int *finished; /* incremented (atomically) as the target's last act */
};

static void *detached_main(void *arg) {
  struct detached *d = arg;
  weft_event_wait(&d->go, WEFT_FOREVER);
  __atomic_add_fetch(d->finished, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

START_TEST(close_of_running_thread_detaches_it) {
  int base_tasks = baseline_tasks();
  int finished = 0;
  struct detached d = {WEFT_EVENT_INIT, &finished};
  weft_thread t = weft_thread_new(detached_main, .arg = &d);
  ck_assert_int_eq(weft_thread_start(t), 0);
  ck_assert_int_eq(weft_thread_close(t), 0);
  check_closed(t);
  ck_assert_int_eq(count_tasks(), base_tasks + 1); /* it runs on */
  weft_event_set(&d.go);
  double end = test_now() + 10;
  while (__atomic_load_n(&finished, __ATOMIC_SEQ_CST) == 0 && test_now() < end) nap_ms(1);
  ck_assert_int_eq(__atomic_load_n(&finished, __ATOMIC_SEQ_CST), 1);
  ck_assert_int_eq(wait_tasks(base_tasks, 5), base_tasks);
}
END_TEST

/* The close races with the thread's own end: sometimes before, sometimes
 * after. Under ASan a freed-too-early record shows up here. */
static void *finish_now(void *arg) {
  __atomic_add_fetch((int *)arg, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

START_TEST(close_racing_the_thread_end) {
  enum { N = 500 };
  int base_tasks = baseline_tasks();
  int finished = 0;
  for (int i = 0; i < N; i++) {
    weft_thread t = weft_thread_new(finish_now, .arg = &finished);
    ck_assert_int_eq(weft_thread_start(t), 0);
    if (i % 3 == 1) sched_yield();
    ck_assert_int_eq(weft_thread_close(t), 0);
    ck_assert(!weft_thread_is_alive(t));
  }
  double end = test_now() + 20;
  while (__atomic_load_n(&finished, __ATOMIC_SEQ_CST) < N && test_now() < end) nap_ms(1);
  ck_assert_int_eq(__atomic_load_n(&finished, __ATOMIC_SEQ_CST), N);
  ck_assert_int_eq(wait_tasks(base_tasks, 10), base_tasks);
  ck_assert_int_eq(weft_active_count(), 1);
}
END_TEST

/* Thread creation fails (EAGAIN) in one thread only. */
struct blocked_start {
  weft_thread t;
  bool filtered;
  int rc[3];
  int code;
  char msg[256];
};

static void *start_while_blocked(void *arg) {
  struct blocked_start *b = arg;
  b->filtered = block_threads_in_this_thread();
  if (!b->filtered) return NULL;
  for (int i = 0; i < 3; i++) b->rc[i] = weft_thread_start(b->t);
  b->code = weft_last_error_code();
  snprintf(b->msg, sizeof b->msg, "%s", weft_last_error());
  return NULL;
}

START_TEST(creation_failure_is_eagain_and_leaves_it_startable) {
  int base_tasks = baseline_tasks();
  int base_fds = count_fds();
  for (int round = 0; round < 20; round++) {
    int value = round;
    struct blocked_start b = {.t = weft_thread_new(return_arg, .arg = &value, .name = "blocked")};
    ck_assert_uint_ne(b.t.id, 0);
    pthread_t pt;
    ck_assert_int_eq(pthread_create(&pt, NULL, start_while_blocked, &b), 0);
    ck_assert_int_eq(pthread_join(pt, NULL), 0);
    ck_assert_msg(b.filtered, "the kernel refused the seccomp filter");
    for (int i = 0; i < 3; i++) ck_assert_int_eq(b.rc[i], WEFT_EAGAIN);
    ck_assert_int_eq(b.code, WEFT_EAGAIN);
    ck_assert_msg(strstr(b.msg, "could not start blocked") != NULL, "message: %s", b.msg);
    /* Nothing half-started is left. */
    ck_assert(!weft_thread_is_alive(b.t));
    ck_assert_uint_eq(weft_thread_ident(b.t), 0);
    ck_assert_int_eq(weft_thread_native_id(b.t), WEFT_ENOTSTARTED);
    ck_assert_int_eq(weft_thread_join(b.t, 0, NULL), WEFT_ENOTSTARTED);
    char buf[WEFT_THREAD_REPR_MAX];
    ck_assert_str_eq(weft_thread_repr(b.t, buf, sizeof buf), "<Thread(blocked, initial)>");
    ck_assert_int_eq(weft_active_count(), 1);
    /* Started from an unfiltered thread it runs as usual. */
    ck_assert_int_eq(weft_thread_start(b.t), 0);
    void *res = NULL;
    ck_assert_int_eq(weft_thread_join(b.t, 10, &res), 0);
    ck_assert_ptr_eq(res, &value);
    ck_assert_int_eq(weft_thread_close(b.t), 0);
  }
  ck_assert_int_eq(wait_tasks(base_tasks, 5), base_tasks);
  ck_assert_int_eq(count_fds(), base_fds);
}
END_TEST

/* ---- fork ---- */

/* What a child started from a non-main thread checks; it reports "ok" or
 * the first failed check on a pipe. */
struct fork_view {
  weft_thread parent_main;
  weft_thread other;   /* a thread of the parent, blocked there */
  weft_thread starter; /* the thread that starts the child */
  bool daemon_child;
  int out_w;
};

static int report(int fd, const char *what) {
  char line[160];
  snprintf(line, sizeof line, "%s\n", what);
  put_line(fd, line);
  return what[0] == 'o' && what[1] == 'k' ? 0 : 1;
}

static int check_fork_view(void *arg) {
  struct fork_view *v = arg;
  int fd = v->out_w;
  weft_thread cur = weft_current_thread();
  weft_thread m = weft_main_thread();
  if (cur.id == 0 || cur.id != m.id) return report(fd, "fail: main_thread != current_thread");
  if (!weft_thread_is_alive(cur)) return report(fd, "fail: current thread not alive");
  if (!v->daemon_child && cur.id != v->starter.id)
    return report(fd, "fail: current thread is not the thread that forked");
  if (weft_thread_native_id(cur) != getpid()) return report(fd, "fail: native_id != getpid()");
  if (weft_thread_ident(cur) != (uint64_t)pthread_self()) return report(fd, "fail: ident");
  weft_thread others[3] = {v->parent_main, v->other, v->starter};
  for (int i = 0; i < 3; i++)
    if (others[i].id != cur.id && weft_thread_is_alive(others[i]))
      return report(fd, "fail: a thread of the parent is alive in the child");
  if (weft_thread_join(v->other, 1.0, NULL) != 0)
    return report(fd, "fail: join of a parent's thread did not return at once");
  if (weft_thread_join(cur, 0, NULL) != WEFT_EDEADLK) return report(fd, "fail: join self");
  weft_thread list[8];
  if (weft_enumerate(list, 8) != 1 || list[0].id != cur.id)
    return report(fd, "fail: enumerate in the child");
  int v42 = 42;
  weft_thread t = weft_thread_new(return_arg, .arg = &v42);
  void *res = NULL;
  if (t.id == 0 || weft_thread_start(t) != 0 || weft_thread_join(t, 10, &res) != 0 || res != &v42)
    return report(fd, "fail: start/join in the child");
  if (weft_active_count() != 1) return report(fd, "fail: active_count in the child");
  weft_thread_close(t);
  return report(fd, "ok");
}

static void *start_child_from_thread(void *arg) {
  struct fork_view *v = arg;
  weft_process p = weft_process_new(check_fork_view, .arg = v, .daemon = v->daemon_child);
  if (weft_process_start(p) != 0) return (void *)(intptr_t)-1000;
  if (weft_process_join(p, 20) != 0) {
    weft_process_kill(p);
    weft_process_join(p, 5);
    return (void *)(intptr_t)-1001;
  }
  int code = -1;
  weft_process_exitcode(p, &code);
  weft_process_close(p);
  return (void *)(intptr_t)code;
}

static void fork_from_thread(bool daemon_child) {
  int out[2];
  ck_assert_int_eq(pipe(out), 0);
  weft_event go = WEFT_EVENT_INIT;
  struct gated g = {&go, NULL, NULL};
  weft_thread other = start_parked(&g, "other");
  struct fork_view v = {weft_main_thread(), other, {0}, daemon_child, out[1]};
  weft_thread starter = weft_thread_new(start_child_from_thread, .arg = &v, .name = "starter");
  v.starter = starter;
  ck_assert_int_eq(weft_thread_start(starter), 0);
  void *res = NULL;
  ck_assert_int_eq(weft_thread_join(starter, 30, &res), 0);
  close(out[1]);
  char buf[512];
  read_all(out[0], buf, sizeof buf, 5);
  ck_assert_str_eq(buf, "ok\n");
  ck_assert_int_eq((int)(intptr_t)res, 0);
  /* Nothing changed for the parent's own threads. */
  ck_assert(weft_thread_is_alive(other));
  ck_assert_uint_eq(weft_main_thread().id, weft_current_thread().id);
  weft_event_set(&go);
  ck_assert_int_eq(weft_thread_join(other, 10, NULL), 0);
  weft_thread_close(other);
  weft_thread_close(starter);
  close(out[0]);
}

START_TEST(child_started_from_thread_sees_it_as_main) { fork_from_thread(false); }
END_TEST

START_TEST(daemon_child_started_from_thread_sees_one_main) { fork_from_thread(true); }
END_TEST

/* A raw fork() from a thread weft never saw: the child's only thread is
 * its MainThread, and weft works there. */
struct raw_fork {
  weft_thread other;
  pid_t pid;
};

static int raw_child_checks(weft_thread other) {
  weft_thread cur = weft_current_thread();
  if (cur.id != weft_main_thread().id) return 10;
  const char *name = weft_thread_name(cur);
  if (name == NULL || strcmp(name, "MainThread") != 0) return 11;
  if (weft_thread_native_id(cur) != getpid()) return 12;
  if (weft_thread_ident(cur) != (uint64_t)pthread_self()) return 13;
  if (weft_thread_is_alive(other)) return 14;
  if (weft_active_count() != 1) return 15;
  weft_thread t = weft_thread_new(work, .arg = &cur);
  void *res = NULL;
  if (weft_thread_start(t) != 0 || weft_thread_join(t, 10, &res) != 0 || res != &cur) return 16;
  return 0;
}

static void *raw_fork_main(void *arg) {
  struct raw_fork *r = arg;
  fflush(NULL);
  r->pid = fork();
  if (r->pid == 0) _exit(raw_child_checks(r->other));
  return NULL;
}

START_TEST(raw_fork_from_foreign_thread) {
  weft_event go = WEFT_EVENT_INIT;
  struct gated g = {&go, NULL, NULL};
  weft_thread other = start_parked(&g, NULL);
  struct raw_fork r = {other, -1};
  pthread_t pt;
  ck_assert_int_eq(pthread_create(&pt, NULL, raw_fork_main, &r), 0);
  pthread_join(pt, NULL);
  ck_assert_int_gt(r.pid, 0);
  int status = wait_status(r.pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
  weft_event_set(&go);
  ck_assert_int_eq(weft_thread_join(other, 10, NULL), 0);
  weft_thread_close(other);
}
END_TEST

/* A fork right after start may catch the new thread before it ran: in the
 * child that thread never will, and native_id must not wait for it. */
START_TEST(native_id_in_child_of_thread_that_never_ran) {
  int hung = 0, i;
  for (i = 0; i < 200; i++) {
    weft_thread t = weft_thread_new(work);
    ck_assert_int_eq(weft_thread_start(t), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      signal(SIGALRM, SIG_DFL); /* Check's own handler would kill the whole test */
      alarm(2);
      pid_t n = weft_thread_native_id(t);
      (void)n;
      bool alive = weft_thread_is_alive(t);
      int j = weft_thread_join(t, 1.0, NULL);
      _exit(alive ? 3 : j == 0 ? 0 : 4);
    }
    int status = wait_status(pid);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) hung++;
    else ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    ck_assert_int_eq(weft_thread_join(t, 10, NULL), 0);
    weft_thread_close(t);
    if (hung) break;
  }
  ck_assert_msg(hung == 0,
                "weft_thread_native_id hung in a child forked right after start (round %d)", i);
}
END_TEST

/* ---- stress ---- */

START_TEST(start_join_close_cycles_leave_nothing) {
  enum { N = 2000 };
  int base_tasks = baseline_tasks();
  int base_fds = count_fds();
  weft_thread first = {0};
  for (int i = 0; i < N; i++) {
    weft_thread t = weft_thread_new(return_arg, .arg = (void *)(intptr_t)(i + 1));
    ck_assert_uint_ne(t.id, 0);
    if (i == 0) first = t;
    ck_assert_int_eq(weft_thread_start(t), 0);
    void *res = NULL;
    ck_assert_int_eq(weft_thread_join(t, 10, &res), 0);
    ck_assert_ptr_eq(res, (void *)(intptr_t)(i + 1));
    ck_assert_int_eq(weft_thread_close(t), 0);
  }
  ck_assert_int_eq(weft_thread_join(first, 0, NULL), WEFT_ECLOSED);
  ck_assert_int_eq(weft_active_count(), 1);
  ck_assert_int_eq(wait_tasks(base_tasks, 10), base_tasks);
  ck_assert_int_eq(count_fds(), base_fds);
  /* Numbers went on counting. */
  weft_thread t = weft_thread_new(work);
  char want[64];
  snprintf(want, sizeof want, "Thread-%d (work)", N + 1);
  ck_assert_str_eq(weft_thread_name(t), want);
  weft_thread_close(t);
}
END_TEST

/* Several threads start, join and close threads at once while another
 * reads the lists and reprs. */
struct churn {
  int rounds;
  int errors;
};

static void *churn_main(void *arg) {
  struct churn *c = arg;
  for (int i = 0; i < c->rounds; i++) {
    weft_thread t = weft_thread_new(return_arg, .arg = c);
    void *res = NULL;
    if (weft_thread_start(t) != 0) c->errors++;
    if (i % 2 == 0 && weft_thread_join(t, 10, &res) == 0 && res != c) c->errors++;
    if (weft_thread_close(t) != 0) c->errors++; /* odd rounds: closes it running */
  }
  return NULL;
}

static void *observe_main(void *arg) {
  weft_event *stop = arg;
  char buf[WEFT_THREAD_REPR_MAX];
  weft_thread list[64];
  long seen = 0;
  while (!weft_event_is_set(stop)) {
    int n = weft_enumerate(list, 64);
    for (int i = 0; i < n && i < 64; i++) {
      weft_thread_repr(list[i], buf, sizeof buf);
      weft_thread_is_alive(list[i]);
      weft_thread_name(list[i]);
      seen++;
    }
  }
  return (void *)(intptr_t)seen;
}

START_TEST(concurrent_churn) {
  enum { C = 4 };
  int base_tasks = baseline_tasks();
  struct churn c[C];
  weft_thread ct[C];
  weft_event stop = WEFT_EVENT_INIT;
  weft_thread obs = weft_thread_new(observe_main, .arg = &stop);
  ck_assert_int_eq(weft_thread_start(obs), 0);
  for (int i = 0; i < C; i++) {
    c[i] = (struct churn){250, 0};
    ct[i] = weft_thread_new(churn_main, .arg = &c[i]);
    ck_assert_int_eq(weft_thread_start(ct[i]), 0);
  }
  for (int i = 0; i < C; i++) {
    ck_assert_int_eq(weft_thread_join(ct[i], 60, NULL), 0);
    ck_assert_int_eq(c[i].errors, 0);
    weft_thread_close(ct[i]);
  }
  weft_event_set(&stop);
  ck_assert_int_eq(weft_thread_join(obs, 10, NULL), 0);
  weft_thread_close(obs);
  ck_assert_int_eq(wait_tasks(base_tasks, 10), base_tasks);
  double end = test_now() + 10;
  while (weft_active_count() != 1 && test_now() < end) nap_ms(1);
  ck_assert_int_eq(weft_active_count(), 1);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("thread");
  TCase *tc = weft_tcase("lifecycle", 20);
  tcase_add_test(tc, start_join_returns_result);
  tcase_add_test(tc, result_of_many_threads);
  tcase_add_test(tc, ident_and_native_id);
  tcase_add_test(tc, many_joiners_at_once);
  tcase_add_test(tc, target_calling_pthread_exit_counts_as_finished);
  tcase_add_test(tc, join_rejects_nan_timeout);
  suite_add_tcase(s, tc);

  tc = weft_tcase("identity", 20);
  tcase_add_test(tc, default_names_count_from_one);
  tcase_add_test(tc, explicit_name_wins_and_takes_no_number);
  tcase_add_test(tc, repr_follows_python);
  tcase_add_test(tc, os_thread_name_is_first_15_bytes);
  tcase_add_test(tc, main_thread_identity);
  tcase_add_test(tc, join_main_from_other_thread_is_eperm);
  tcase_add_test(tc, dummy_thread_for_foreign_threads);
  tcase_add_test(tc, many_foreign_threads_come_and_go);
  tcase_add_test(tc, enumerate_and_active_count);
  tcase_add_test(tc, counts_exact_after_peak);
  tcase_add_test(tc, daemon_flag_rules);
  tcase_add_test(tc, thread_made_by_daemon_is_daemon);
  tcase_add_test(tc, thread_made_by_foreign_thread_is_daemon);
  suite_add_tcase(s, tc);

  tc = weft_tcase("exit_rules", 30);
  tcase_add_test(tc, main_return_waits_for_nondaemon_thread);
  tcase_add_test(tc, exit_call_waits_for_nondaemon_thread);
  tcase_add_test(tc, exit_from_a_thread_waits_for_the_others);
  tcase_add_test(tc, daemon_thread_is_abandoned);
  tcase_add_test(tc, threads_started_during_exit_are_joined);
  tcase_add_test(tc, closed_running_thread_is_still_joined_at_exit);
  tcase_add_test(tc, child_process_waits_for_its_threads);
  tcase_add_test(tc, child_process_abandons_its_daemon_threads);
  suite_add_tcase(s, tc);

  tc = weft_tcase("misuse", 30);
  tcase_add_test(tc, misuse_null_target_and_long_name);
  tcase_add_test(tc, misuse_start_twice);
  tcase_add_test(tc, misuse_join_before_start);
  tcase_add_test(tc, misuse_join_current_thread);
  tcase_add_test(tc, misuse_calls_after_close);
  tcase_add_test(tc, close_of_running_thread_detaches_it);
  tcase_add_test(tc, close_racing_the_thread_end);
  tcase_add_test(tc, creation_failure_is_eagain_and_leaves_it_startable);
  suite_add_tcase(s, tc);

  tc = weft_tcase("fork", 40);
  tcase_add_test(tc, child_started_from_thread_sees_it_as_main);
  tcase_add_test(tc, daemon_child_started_from_thread_sees_one_main);
  tcase_add_test(tc, raw_fork_from_foreign_thread);
  tcase_add_test(tc, native_id_in_child_of_thread_that_never_ran);
  suite_add_tcase(s, tc);

  tc = weft_tcase("stress", 120);
  tcase_add_test(tc, start_join_close_cycles_leave_nothing);
  tcase_add_test(tc, concurrent_churn);
  suite_add_tcase(s, tc);
  return s;
}
