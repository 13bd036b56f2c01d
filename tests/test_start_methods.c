/* SPDX-License-Identifier: MIT */
/* Tests of the start methods (fork, spawn and forkserver): what a child
 * sees of its parent, how its arguments travel, that the Process API holds
 * alike (names, parent, exit codes, terminate, join timeouts, daemon
 * children), that a child started by spawn or the forkserver inherits no
 * descriptor and no lock, the forkserver's own life, and the misuse errors.
 * Such a child cannot see the test's memory: it reports through its exit
 * code, each check a code of its own. Loop tests take the method from
 * methods[_i]: from 0 for all three, from 1 for those whose child is not a
 * copy of the parent. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static const char *const methods[] = {"fork", "spawn", "forkserver"};

static int global = 1;

/* Reads field 4 (the parent's pid) of /proc/PID/stat; -1 if gone. */
static pid_t ppid_of(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char *end = strrchr(buf, ')');
  char state;
  int ppid;
  if (end == NULL || sscanf(end + 1, " %c %d", &state, &ppid) != 2) return -1;
  return ppid;
}

/* Reads the pids in each /proc/PID/task/TID/children -- children of any thread
 * of pid, zombies included -- into out (up to max); returns how many. */
static int children_of(pid_t pid, int *out, int max) {
  char dir_path[64];
  snprintf(dir_path, sizeof dir_path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(dir_path);
  if (d == NULL) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    char path[400];
    snprintf(path, sizeof path, "%s/%s/children", dir_path, e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue;
    int c;
    while (fscanf(f, "%d", &c) == 1) {
      if (n < max) out[n] = c;
      n++;
    }
    fclose(f);
  }
  closedir(d);
  return n;
}

static int all_children(void) {
  int pids[1];
  return children_of(getpid(), pids, 0);
}

/* The caller's forkserver: its child named weft-forkserver; -1 if none. */
static pid_t server_pid(void) {
  int pids[64];
  int n = children_of(getpid(), pids, 64);
  for (int i = 0; i < n && i < 64; i++) {
    char comm_path[64], comm[32] = "";
    snprintf(comm_path, sizeof comm_path, "/proc/%d/comm", pids[i]);
    FILE *g = fopen(comm_path, "r");
    if (g == NULL) continue;
    bool found = fgets(comm, sizeof comm, g) != NULL && strncmp(comm, "weft-forkserver", 15) == 0;
    fclose(g);
    if (found) return pids[i];
  }
  return -1;
}

/* The children of the caller that weft started, wherever they were forked:
 * its own, or the forkserver's. */
static int user_children(void) {
  pid_t server = server_pid();
  int pids[1];
  int n = all_children();
  return server < 0 ? n : n - 1 + children_of(server, pids, 0);
}

static int return_global(void *arg) {
  (void)arg;
  return global;
}

START_TEST(fresh_children_see_fresh_globals_fork_child_the_parents) {
  global = 42;
  weft_process f = weft_process_new(return_global, .start_method = "fork");
  weft_process s = weft_process_new(return_global, .start_method = "spawn");
  weft_process v = weft_process_new(return_global, .start_method = "forkserver");
  ck_assert_uint_ne(s.id, 0);
  ck_assert_uint_ne(v.id, 0);
  ck_assert_int_eq(weft_process_start(f), 0);
  ck_assert_int_eq(weft_process_start(s), 0);
  ck_assert_int_eq(weft_process_start(v), 0);
  ck_assert_int_eq(finish_process(f, 20), 42);
  ck_assert_int_eq(finish_process(s, 20), 1);
  ck_assert_int_eq(finish_process(v, 20), 1);
  global = 1;
}
END_TEST

struct who {
  pid_t parent_pid;
  bool by_server; /* the kernel's parent is the forkserver */
  char name[32];
  char parent_name[32];
  int bytes[64];
};

/* Checks in the child what it should know of itself; 0 when all holds. */
static int check_who(void *arg) {
  const struct who *w = arg;
  if ((getppid() == w->parent_pid) == w->by_server) return 10;
  if (strcmp(weft_process_name(weft_current_process()), w->name) != 0) return 11;
  weft_process up = weft_parent_process();
  if (up.id == 0 || strcmp(weft_process_name(up), w->parent_name) != 0) return 12;
  if (weft_process_pid(up) != w->parent_pid) return 13;
  if (!weft_process_is_alive(up)) return 14;
  char repr[WEFT_PROCESS_REPR_MAX], want[128];
  snprintf(want, sizeof want, "<Process name='%s' parent=%d started>", w->name, (int)w->parent_pid);
  if (strcmp(weft_process_repr(weft_current_process(), repr, sizeof repr), want) != 0) return 15;
  for (int i = 0; i < 64; i++)
    if (w->bytes[i] != i * 7) return 16;
  return 0;
}

START_TEST(args_names_and_parent_reach_a_child_by_every_method) {
  for (int m = 0; m < 3; m++) {
    struct who w = {.parent_pid = getpid(), .by_server = m == 2};
    snprintf(w.name, sizeof w.name, "by-%s", methods[m]);
    snprintf(w.parent_name, sizeof w.parent_name, "%s",
             weft_process_name(weft_current_process()));
    for (int i = 0; i < 64; i++) w.bytes[i] = i * 7;
    weft_process p = weft_process_new(check_who, .name = w.name, .args = &w,
                                      .args_size = sizeof w, .start_method = methods[m]);
    memset(&w, 0, sizeof w); /* the bytes were copied at creation */
    ck_assert_int_eq(weft_process_start(p), 0);
    ck_assert_int_eq(finish_process(p, 20), 0);
  }
}
END_TEST

static int exit_with(void *arg) { return *(const int *)arg; }

static int kill_self(void *arg) {
  (void)arg;
  kill(getpid(), SIGKILL);
  return 0;
}

static int sleep_long(void *arg) {
  (void)arg;
  weft_sleep(30);
  return 0;
}

START_TEST(exit_codes_terminate_and_join_timeouts) {
  const char *method = methods[_i];
  int three = 3;
  weft_process p = weft_process_new(exit_with, .args = &three, .args_size = sizeof three,
                                    .start_method = method);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 20), 0);
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 3);
  ck_assert_int_eq(weft_process_close(p), 0);

  p = weft_process_new(kill_self, .start_method = method);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 20), -SIGKILL);

  p = weft_process_new(sleep_long, .start_method = method);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert(weft_process_is_alive(p));
  ck_assert_int_eq(weft_process_join(p, 0.05), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_process_exitcode(p, &code), WEFT_ERUNNING);
  weft_process out[4];
  ck_assert_int_eq(weft_active_children(out, 4), 1);
  ck_assert_int_eq(weft_process_terminate(p), 0);
  ck_assert_int_eq(weft_process_join(p, 20), 0);
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, -SIGTERM);
  ck_assert(!weft_process_is_alive(p));
  ck_assert_int_eq(weft_process_close(p), 0);
  ck_assert_int_eq(user_children(), 0); /* no zombie */

  /* join with no timeout */
  p = weft_process_new(exit_with, .args = &three, .args_size = sizeof three,
                       .start_method = method);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 3);
  ck_assert_int_eq(weft_process_close(p), 0);
  ck_assert_int_eq(user_children(), 0);
}
END_TEST

/* ---- a spawned child inherits no descriptor ---- */

/* 0 when fd is closed and every fd above 2 is weft's pidfd on the parent
 * (a forkserver child's, as Python's sentinel); the code names what is not. */
static bool is_pidfd(int fd) {
  char path[64], target[64] = "";
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return readlink(path, target, sizeof target - 1) > 0 && strcmp(target, "anon_inode:[pidfd]") == 0;
}

static int fd_is_closed(void *arg) {
  int fd = *(const int *)arg;
  if (fcntl(fd, F_GETFD) != -1 && !is_pidfd(fd)) return 20;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return 21;
  int bad = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    int n = atoi(e->d_name);
    if (e->d_name[0] == '.' || n <= 2 || n == dirfd(d)) continue;
    if (!is_pidfd(n)) bad = 22;
  }
  closedir(d);
  return bad;
}

START_TEST(fresh_child_inherits_no_descriptor) {
  int fd = dup(1); /* not close-on-exec: a fork+exec would pass it on */
  ck_assert_int_ge(fd, 0);
  if (_i == 2) ck_assert_int_eq(weft_forkserver_ensure_running(), 0); /* its socket: counted */
  int before = count_fds();
  weft_process p = weft_process_new(fd_is_closed, .args = &fd, .args_size = sizeof fd,
                                    .start_method = methods[_i]);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 20), 0);
  ck_assert_int_eq(count_fds(), before); /* and the parent leaked none either */
  close(fd);
}
END_TEST

/* ---- a spawned child starts its own ---- */

static int spawn_grandchild(void *arg) {
  int five = 5;
  weft_process g = weft_process_new(exit_with, .args = &five, .args_size = sizeof five,
                                    .start_method = methods[*(const int *)arg]);
  if (weft_process_start(g) != 0) return 30;
  if (strcmp(weft_process_name(g), "Process-1:1") != 0 &&
      strncmp(weft_process_name(g), "Process-", 8) != 0)
    return 31;
  if (weft_process_join(g, 20) != 0) return 32;
  int code = 0;
  weft_process_exitcode(g, &code);
  return code;
}

START_TEST(fresh_child_starts_children_of_its_own) {
  int m = _i;
  weft_process p = weft_process_new(spawn_grandchild, .args = &m, .args_size = sizeof m,
                                    .start_method = methods[_i]);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 30), 5);
}
END_TEST

/* ---- a daemon spawned child dies with its parent ---- */

struct family {
  int method;
  int daemon_pid;
};

static int daemon_target(void *arg) {
  (void)arg;
  pause();
  return 0;
}

static int start_daemon_then_wait(void *arg) {
  struct family *f = arg;
  weft_process d =
      weft_process_new(daemon_target, .daemon = true, .start_method = methods[f->method]);
  if (weft_process_start(d) != 0) return 1;
  st(&f->daemon_pid, (int)weft_process_pid(d));
  pause();
  return 0;
}

START_TEST(daemon_fresh_child_dies_when_its_parent_is_killed) {
  struct family *f = shared(sizeof *f);
  f->method = _i;
  weft_process mid = start_process(start_daemon_then_wait, f);
  ck_assert(wait_ge(&f->daemon_pid, 1, 20));
  pid_t daemon = (pid_t)ld(&f->daemon_pid);
  ck_assert(!pid_gone(daemon));
  kill(weft_process_pid(mid), SIGKILL);
  ck_assert_int_eq(finish_process(mid, 20), -SIGKILL);
  ck_assert(wait_pid_gone(daemon, 20));
  weft_shared_free(f);
}
END_TEST

/* ---- safety: a lock held by another thread of the parent ---- */

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;

static int take_held_mutex(void *arg) {
  (void)arg;
  if (pthread_mutex_lock(&held) != 0) return 40;
  void *p = malloc(100);
  printf("%s", "");
  free(p);
  pthread_mutex_unlock(&held);
  return 0;
}

struct busy {
  int stop;
};

/* Holds `held` throughout, and keeps malloc's and stdout's locks busy. */
static void *hold_and_churn(void *arg) {
  struct busy *b = arg;
  pthread_mutex_lock(&held);
  while (!ld(&b->stop)) {
    void *p = malloc(64);
    free(p);
    printf("%s", "");
  }
  pthread_mutex_unlock(&held);
  return NULL;
}

/* A child of fork would hang here whenever the fork caught a lock held;
 * docs/python.md says why. */
START_TEST(fresh_children_never_inherit_a_held_lock) {
  struct busy b = {0};
  pthread_t t = spawn(hold_and_churn, &b);
  for (int i = 0; i < 1000 / SLOW; i++) {
    weft_process p = weft_process_new(take_held_mutex, .start_method = methods[_i]);
    ck_assert_int_eq(weft_process_start(p), 0);
    ck_assert_int_eq(finish_process(p, 20), 0);
  }
  st(&b.stop, 1);
  join(t);
}
END_TEST

/* ---- the forkserver's own life ---- */

static int print_child(void *arg) {
  (void)arg;
  printf("child\n");
  return 0;
}

/* Output buffered before start appears once, and the child writes where
 * the caller's stdout goes at start, though the server began elsewhere. */
START_TEST(output_appears_once_where_the_callers_goes) {
  ck_assert_int_eq(weft_forkserver_ensure_running(), 0); /* its stdout is the test's */
  char path[] = "/tmp/weft-stdio-XXXXXX";
  int file = mkstemp(path);
  ck_assert_int_ge(file, 0);
  unlink(path);
  fflush(stdout);
  int saved = dup(1);
  dup2(file, 1);
  printf("before\n"); /* buffered: a file is fully buffered */
  weft_process p = weft_process_new(print_child, .start_method = methods[_i]);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 20), 0);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  char buf[64] = "";
  ck_assert_int_eq(pread(file, buf, sizeof buf - 1, 0), 13);
  ck_assert_str_eq(buf, "before\nchild\n");
  close(file);
}
END_TEST

static void *start_many(void *arg) {
  int *failures = arg;
  for (int i = 0; i < 40 / SLOW + 5; i++) {
    int code = i % 200;
    weft_process p = weft_process_new(exit_with, .args = &code, .args_size = sizeof code,
                                      .start_method = "forkserver");
    if (weft_process_start(p) != 0 || finish_process(p, 20) != code) inc(failures);
  }
  return NULL;
}

/* Threads share one server; the first starts it, the others wait for it. */
START_TEST(threads_share_one_forkserver) {
  int failures = 0;
  pthread_t t[4];
  for (int i = 0; i < 4; i++) t[i] = spawn(start_many, &failures);
  for (int i = 0; i < 4; i++) join(t[i]);
  ck_assert_int_eq(ld(&failures), 0);
  ck_assert_int_eq(all_children(), 1); /* the server, and only one */
  ck_assert_int_gt(server_pid(), 0);
}
END_TEST

struct watch {
  int server;
  int child;
};

static int start_then_wait(void *arg) {
  struct watch *w = arg;
  weft_process c = weft_process_new(sleep_long, .start_method = "forkserver");
  if (weft_process_start(c) != 0) return 1;
  st(&w->child, (int)weft_process_pid(c));
  st(&w->server, (int)server_pid());
  pause();
  return 0;
}

/* Killed by SIGKILL, the program takes its server with it; a non-daemon
 * child lives on, as under fork. */
START_TEST(forkserver_ends_with_its_program_even_killed) {
  struct watch *w = shared(sizeof *w);
  weft_process mid = start_process(start_then_wait, w);
  ck_assert(wait_ge(&w->server, 1, 20));
  pid_t server = (pid_t)ld(&w->server), child = (pid_t)ld(&w->child);
  ck_assert_int_eq(ppid_of(child), server);
  kill(weft_process_pid(mid), SIGKILL);
  ck_assert_int_eq(finish_process(mid, 20), -SIGKILL);
  ck_assert(wait_pid_gone(server, 20));
  ck_assert(!pid_gone(child));
  kill(child, SIGKILL);
  ck_assert(wait_pid_gone(child, 20));
  waitpid(child, NULL, 0); /* an orphan comes back to the test process, a subreaper */
  weft_shared_free(w);
}
END_TEST

/* A server killed from outside is replaced at the next start; its running
 * children can still be signalled and joined, their status lost. */
START_TEST(forkserver_killed_is_replaced) {
  weft_process a = weft_process_new(sleep_long, .start_method = "forkserver");
  ck_assert_int_eq(weft_process_start(a), 0);
  pid_t server = server_pid();
  ck_assert_int_gt(server, 0);
  ck_assert_int_eq(ppid_of(weft_process_pid(a)), server);
  kill(server, SIGKILL);
  int seven = 7;
  weft_process b = weft_process_new(exit_with, .args = &seven, .args_size = sizeof seven,
                                    .start_method = "forkserver");
  ck_assert_int_eq(weft_process_start(b), 0);
  ck_assert_int_eq(finish_process(b, 20), 7);
  ck_assert_int_ne(server_pid(), server);
  ck_assert(weft_process_is_alive(a));
  ck_assert_int_eq(weft_process_join(a, 0.05), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_process_kill(a), 0);
  ck_assert_int_eq(weft_process_join(a, 20), 0);
  int code;
  ck_assert_int_eq(weft_process_exitcode(a, &code), WEFT_ECHILD);
  /* The orphan came back to the test process, a subreaper (harness.c). */
  ck_assert_int_eq(waitpid(weft_process_pid(a), NULL, 0), weft_process_pid(a));
  ck_assert_int_eq(weft_process_close(a), 0);
  ck_assert_int_eq(all_children(), 1); /* the new server; the old one was reaped */
}
END_TEST

/* ---- what a child keeps of its caller: signal mask, cancellation ---- */

/* 0 when SIGUSR1 is blocked and SIGTERM is not, as in the caller. */
static int check_mask(void *arg) {
  (void)arg;
  sigset_t now;
  pthread_sigmask(SIG_SETMASK, NULL, &now);
  if (!sigismember(&now, SIGUSR1)) return 60;
  if (sigismember(&now, SIGTERM)) return 61;
  return 0;
}

struct from_thread {
  int method;
  int mask_code, cancel_ok, started;
  weft_process sleeper;
};

/* Starts children from a thread that is not the main one, where weft
 * starts daemons and the forkserver on its own long-lived thread. */
static void *start_from_thread(void *arg) {
  struct from_thread *ft = arg;
  const char *method = methods[ft->method];
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, NULL);
  weft_process p = weft_process_new(check_mask, .daemon = true, .start_method = method);
  if (weft_process_start(p) == 0) ft->mask_code = finish_process(p, 20);
  int old = -1;
  pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
  ft->cancel_ok = old == PTHREAD_CANCEL_ENABLE; /* weft_process_start left it as it was */
  ft->sleeper = weft_process_new(sleep_long, .daemon = true, .start_method = method);
  st(&ft->started, weft_process_start(ft->sleeper) == 0 ? 1 : -1);
  return NULL;
}

/* The child's signal mask is its starter's, whoever forked or spawned it;
 * a terminate reaches it. */
START_TEST(child_keeps_the_starters_mask_and_cancellation) {
  struct from_thread ft = {.method = _i, .mask_code = -1};
  pthread_t t = spawn(start_from_thread, &ft);
  join(t);
  ck_assert_int_eq(ft.mask_code, 0);
  ck_assert(ft.cancel_ok);
  ck_assert_int_eq(ld(&ft.started), 1);
  ck_assert_int_eq(weft_process_terminate(ft.sleeper), 0);
  ck_assert_int_eq(finish_process(ft.sleeper, 20), -SIGTERM);
}
END_TEST

/* A program that ignores SIGCHLD: a forked child is reaped by the kernel
 * (its status lost, WEFT_ECHILD); the forkserver's children are not. */
START_TEST(forkserver_exit_codes_with_sigchld_ignored) {
  signal(SIGCHLD, SIG_IGN);
  for (int i = 0; i < 5; i++) {
    int code = 7 + i;
    weft_process p = weft_process_new(exit_with, .args = &code, .args_size = sizeof code,
                                      .start_method = "forkserver");
    ck_assert_int_eq(weft_process_start(p), 0);
    ck_assert_int_eq(finish_process(p, 20), code);
  }
  signal(SIGCHLD, SIG_DFL);
}
END_TEST

/* ---- the default, and misuse ---- */

static int report_method(void *arg) {
  (void)arg;
  return strcmp(weft_get_start_method(), "spawn") == 0 ? 0 : 50;
}

START_TEST(default_start_method_and_environment) {
  ck_assert_str_eq(weft_get_start_method(), "fork");
  ck_assert_int_eq(weft_set_start_method("spawn"), 0);
  ck_assert_str_eq(weft_get_start_method(), "spawn");
  global = 9;
  weft_process p = weft_process_new(return_global);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 20), 1); /* spawned: its own global */
  ck_assert_int_eq(weft_set_start_method("forkserver"), 0);
  ck_assert_str_eq(weft_get_start_method(), "forkserver");
  p = weft_process_new(return_global);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 20), 1);
  ck_assert_int_eq(weft_set_start_method("fork"), 0);
  global = 1;
  /* WEFT_START_METHOD sets the default of a program at start-up: the
   * spawned child is such a program. */
  setenv("WEFT_START_METHOD", "spawn", 1);
  p = weft_process_new(report_method, .start_method = "spawn");
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 20), 0);
  unsetenv("WEFT_START_METHOD");
}
END_TEST

START_TEST(misuse_of_start_methods) {
  ck_assert_int_eq(weft_set_start_method("vfork"), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "vfork"));
  ck_assert_int_eq(weft_set_start_method(NULL), WEFT_EINVAL);
  ck_assert_str_eq(weft_get_start_method(), "fork");

  weft_process p = weft_process_new(return_global, .start_method = "thread");
  ck_assert_uint_eq(p.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  int x = 1;
  p = weft_process_new(exit_with, .arg = &x, .start_method = "spawn");
  ck_assert_uint_eq(p.id, 0);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), ".args"));
  p = weft_process_new(exit_with, .arg = &x, .start_method = "forkserver");
  ck_assert_uint_eq(p.id, 0);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "forkserver"));
  p = weft_process_new(exit_with, .arg = &x, .args = &x, .args_size = sizeof x);
  ck_assert_uint_eq(p.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  p = weft_process_new(exit_with, .args_size = 4);
  ck_assert_uint_eq(p.id, 0);
  /* A target that lies in no loaded object cannot be named for a fresh
   * image: refused in the parent, no child made. */
  void *heap = malloc(64);
  for (int m = 1; m < 3; m++) {
    p = weft_process_new((weft_process_target)heap, .start_method = methods[m]);
    ck_assert_uint_eq(p.id, 0);
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
    ck_assert_ptr_nonnull(strstr(weft_last_error(), "no loaded program or library"));
  }
  free(heap);
  ck_assert_int_eq(count_children(), 0); /* and no forkserver was started for them */
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("test_start_methods");
  TCase *tc = weft_tcase("start_methods", 60);
  tcase_add_test(tc, fresh_children_see_fresh_globals_fork_child_the_parents);
  tcase_add_test(tc, args_names_and_parent_reach_a_child_by_every_method);
  tcase_add_loop_test(tc, exit_codes_terminate_and_join_timeouts, 0, 3);
  tcase_add_loop_test(tc, fresh_child_inherits_no_descriptor, 1, 3);
  tcase_add_loop_test(tc, fresh_child_starts_children_of_its_own, 0, 3);
  tcase_add_loop_test(tc, daemon_fresh_child_dies_when_its_parent_is_killed, 0, 3);
  tcase_add_loop_test(tc, fresh_children_never_inherit_a_held_lock, 1, 3);
  tcase_add_loop_test(tc, output_appears_once_where_the_callers_goes, 1, 3);
  tcase_add_test(tc, threads_share_one_forkserver);
  tcase_add_test(tc, forkserver_ends_with_its_program_even_killed);
  tcase_add_test(tc, forkserver_killed_is_replaced);
  tcase_add_loop_test(tc, child_keeps_the_starters_mask_and_cancellation, 0, 3);
  tcase_add_test(tc, forkserver_exit_codes_with_sigchld_ignored);
  tcase_add_test(tc, default_start_method_and_environment);
  tcase_add_test(tc, misuse_of_start_methods);
  suite_add_tcase(s, tc);
  return s;
}
