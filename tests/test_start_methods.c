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
#include "weft/pool.h"

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

/* weft's own: its parent pidfd, and the memory files of the parent's
 * shared memory, which the child maps and passes on to its own children. */
static bool is_wefts(int fd) {
  char path[64], target[64] = "";
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return is_pidfd(fd) || (readlink(path, target, sizeof target - 1) > 0 &&
                          strncmp(target, "/memfd:weft-", 12) == 0);
}

static int fd_is_closed(void *arg) {
  int fd = *(const int *)arg;
  if (fcntl(fd, F_GETFD) != -1 && !is_wefts(fd)) return 20;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return 21;
  int bad = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    int n = atoi(e->d_name);
    if (e->d_name[0] == '.' || n <= 2 || n == dirfd(d)) continue;
    if (!is_wefts(n)) bad = 22;
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


/* ---- objects a child is given ---- */

#define ROUNDS 200

struct kit {
  weft_lock *lock;
  weft_rlock *rlock;
  weft_semaphore *sem;
  weft_event *event;
  weft_barrier *barrier;
  weft_cond *cond;
  long *counter;          /* a weft_shared_alloc block, guarded by lock */
  int *flag;              /* in the same block: notified under cond */
  weft_value *value;      /* incremented under its own lock */
  weft_value *array;
  weft_mpqueue *queue;
  weft_conn *to_parent;   /* the child's end of a pipe */
  weft_shm *anon, *named;
};

static int add_value(weft_value *v, int by) {
  weft_rlock *l = weft_value_get_lock(v);
  if (l == NULL || weft_rlock_acquire(l, WEFT_FOREVER) != 0) return -1;
  *(int *)weft_value_ptr(v) += by;
  return weft_rlock_release(l);
}

/* Uses every object the parent gave; 0 when all worked, else the step. */
static int use_kit(void *arg) {
  const struct kit *k = arg;
  if (weft_barrier_wait(k->barrier, 20) < 0) return 30;
  for (int i = 0; i < ROUNDS; i++) {
    if (weft_lock_acquire(k->lock, WEFT_FOREVER) != 0) return 31;
    ++*k->counter;
    if (weft_lock_release(k->lock) != 0) return 32;
    if (add_value(k->value, 1) != 0) return 33;
  }
  if (weft_rlock_acquire(k->rlock, 5) != 0 || weft_rlock_acquire(k->rlock, 5) != 0) return 34;
  weft_rlock_release(k->rlock);
  weft_rlock_release(k->rlock);
  int nine = 9;
  if (weft_value_store(k->array, 3, 1, &nine) != 0) return 35;
  if (weft_mpqueue_put(k->queue, "from child", 11, 5) != 0) return 36;
  if (weft_conn_send(k->to_parent, "pipe", 5) != 0) return 37;
  strcpy(weft_shm_buf(k->anon), "anon");
  strcpy(weft_shm_buf(k->named), "named");
  if (weft_semaphore_release(k->sem, 1) != 0) return 38;
  if (weft_event_wait(k->event, 20) != 0) return 39; /* the parent read it all */
  if (weft_cond_acquire(k->cond, 5) != 0) return 40;
  *k->flag = 1;
  weft_cond_notify_all(k->cond);
  weft_cond_release(k->cond);
  return 0;
}

START_TEST(a_child_uses_every_object_its_parent_gives) {
  struct kit k = {0};
  k.lock = weft_lock_new(.name = "kit lock");
  k.rlock = weft_rlock_new();
  k.sem = weft_semaphore_new(0);
  k.event = weft_event_new();
  k.barrier = weft_barrier_new(2);
  k.cond = weft_cond_new();
  k.counter = weft_shared_alloc(2 * sizeof(long));
  k.flag = (int *)(k.counter + 1);
  k.value = weft_value_new("i");
  k.array = weft_array_new("i", 8);
  k.queue = weft_mpqueue_new();
  weft_conn *mine = NULL;
  ck_assert_int_eq(weft_pipe(&mine, &k.to_parent), 0);
  k.anon = weft_shm_new(4096);
  char name[64];
  snprintf(name, sizeof name, "/weft-travel-%d-%d", (int)getpid(), _i);
  k.named = weft_shm_new(4096, .name = name);
  ck_assert_ptr_nonnull(k.named);
  ck_assert_ptr_nonnull(k.queue);
  weft_process p = weft_process_new(
      use_kit, .args = &k, .args_size = sizeof k, .start_method = methods[_i],
      .objects = (const void *[]){k.value, k.array, k.queue, k.to_parent, k.anon, k.named, NULL});
  ck_assert_uint_ne(p.id, 0);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_ge(weft_barrier_wait(k.barrier, 20 * SLOW), 0);
  for (int i = 0; i < ROUNDS; i++) {
    ck_assert_int_eq(weft_lock_acquire(k.lock, WEFT_FOREVER), 0);
    ++*k.counter;
    ck_assert_int_eq(weft_lock_release(k.lock), 0);
    ck_assert_int_eq(add_value(k.value, 1), 0);
  }
  ck_assert_int_eq(weft_semaphore_acquire(k.sem, 20 * SLOW), 0);
  char buf[32];
  size_t len = 0;
  ck_assert_int_eq(weft_mpqueue_get(k.queue, buf, sizeof buf, &len, 5), 0);
  ck_assert_str_eq(buf, "from child");
  ck_assert_int_eq(weft_conn_recv(mine, buf, sizeof buf, &len, 5), 0);
  ck_assert_str_eq(buf, "pipe");
  ck_assert_str_eq(weft_shm_buf(k.anon), "anon");
  ck_assert_str_eq(weft_shm_buf(k.named), "named");
  int got = 0;
  ck_assert_int_eq(weft_value_load(k.array, 3, 1, &got), 0);
  ck_assert_int_eq(got, 9);
  ck_assert_int_eq(weft_cond_acquire(k.cond, 5), 0);
  ck_assert_int_eq(weft_event_set(k.event), 0);
  while (*k.flag == 0) ck_assert_int_eq(weft_cond_wait(k.cond, 20 * SLOW), 0);
  ck_assert_int_eq(weft_cond_release(k.cond), 0);
  ck_assert_int_eq(finish_process(p, 20 * SLOW), 0);
  ck_assert_int_eq(*k.counter, 2 * ROUNDS); /* no increment lost on either side */
  ck_assert_int_eq(*(int *)weft_value_ptr(k.value), 2 * ROUNDS);
  int fds = count_fds();
  weft_lock_free(k.lock);
  weft_rlock_free(k.rlock);
  weft_semaphore_free(k.sem);
  weft_event_free(k.event);
  weft_barrier_free(k.barrier);
  weft_cond_free(k.cond);
  weft_shared_free(k.counter);
  weft_value_free(k.value);
  weft_value_free(k.array);
  weft_mpqueue_free(k.queue);
  weft_conn_close(mine);
  weft_conn_close(k.to_parent);
  weft_shm_close(k.anon);
  weft_shm_unlink(k.named);
  weft_shm_close(k.named);
  /* The memory files went with their last objects: queue, segment, the
   * arena of the small blocks, and the pipe's two ends. */
  ck_assert_int_eq(count_fds(), fds - 5);
}
END_TEST

struct handles {
  weft_value *given, *not_given;
  weft_lock *lock;
};

static int unlisted_is_closed(void *arg) {
  const struct handles *h = arg;
  int x = 0;
  if (weft_value_load(h->given, 0, 1, &x) != 0 || x != 5) return 20;
  if (weft_value_load(h->not_given, 0, 1, &x) != WEFT_ECLOSED) return 21;
  /* A lock the parent freed after the start is still this child's. */
  if (weft_lock_acquire(h->lock, 5) != 0) return 22;
  weft_lock_release(h->lock);
  /* Reports name the lock from the copy that travelled with it. */
  if (weft_lock_release(h->lock) == 0) return 23;
  if (strstr(weft_last_error(), "ledger") == NULL) return 24;
  return 0;
}

START_TEST(only_listed_handles_travel_and_freed_memory_stays_the_childs) {
  struct handles h = {weft_value_new("i"), weft_value_new("i"), weft_lock_new(.name = "ledger")};
  int five = 5;
  weft_value_store(h.given, 0, 1, &five);
  weft_value_store(h.not_given, 0, 1, &five);
  weft_process p = weft_process_new(unlisted_is_closed, .args = &h, .args_size = sizeof h,
                                    .start_method = methods[_i],
                                    .objects = (const void *[]){h.given, NULL});
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_lock_free(h.lock), 0);
  ck_assert_int_eq(finish_process(p, 20 * SLOW), 0);
  weft_value_free(h.given);
  weft_value_free(h.not_given);
}
END_TEST

static int nested_spawn(void *arg) {
  const struct handles *h = arg;
  if (weft_lock_acquire(h->lock, 5) != 0) return 30;
  weft_lock_release(h->lock);
  weft_process p = weft_process_new(unlisted_is_closed, .args = h, .args_size = sizeof *h,
                                    .start_method = "spawn",
                                    .objects = (const void *[]){h->given, NULL});
  if (weft_process_start(p) != 0) return 31;
  if (weft_process_join(p, 20) != 0) return 32;
  int code = -1;
  weft_process_exitcode(p, &code);
  return code == 0 ? 0 : 33;
}

START_TEST(objects_travel_on_to_grandchildren) {
  struct handles h = {weft_value_new("i"), weft_value_new("i"), weft_lock_new(.name = "ledger")};
  int five = 5;
  weft_value_store(h.given, 0, 1, &five);
  weft_value_store(h.not_given, 0, 1, &five);
  weft_process p = weft_process_new(nested_spawn, .args = &h, .args_size = sizeof h,
                                    .start_method = methods[_i],
                                    .objects = (const void *[]){h.given, NULL});
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 40 * SLOW), 0);
  weft_value_free(h.given);
  weft_value_free(h.not_given);
  weft_lock_free(h.lock);
}
END_TEST

START_TEST(objects_that_cannot_travel_are_refused) {
  weft_queue *tq = weft_queue_new();
  void *heap = malloc(64);
  weft_value *v = weft_value_new("i");
  for (int m = 0; m < 3; m++) {
    weft_process p = weft_process_new(exit_with, .args = &(int){0}, .args_size = sizeof(int),
                                      .start_method = methods[m],
                                      .objects = (const void *[]){v, tq, NULL});
    ck_assert_uint_eq(p.id, 0);
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
    ck_assert_ptr_nonnull(strstr(weft_last_error(), "thread queue"));
    p = weft_process_new(exit_with, .args = &(int){0}, .args_size = sizeof(int),
                         .start_method = methods[m], .objects = (const void *[]){heap, NULL});
    ck_assert_uint_eq(p.id, 0);
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  }
  /* Freed between creation and start: the start fails, no child is made,
   * and the object can be started again without it. */
  for (int m = 1; m < 3; m++) {
    weft_value *gone = weft_value_new("i");
    weft_process p = weft_process_new(exit_with, .args = &(int){0}, .args_size = sizeof(int),
                                      .start_method = methods[m],
                                      .objects = (const void *[]){gone, NULL});
    ck_assert_uint_ne(p.id, 0);
    weft_value_free(gone);
    int kids = all_children();
    ck_assert_int_eq(weft_process_start(p), WEFT_ECLOSED);
    ck_assert_int_eq(all_children(), kids);
    ck_assert_int_eq(weft_process_close(p), 0);
  }
  /* A named segment travels by its name: once unlinked it cannot. */
  char name[64];
  snprintf(name, sizeof name, "/weft-unlinked-%d", (int)getpid());
  weft_shm *seg = weft_shm_new(4096, .name = name);
  weft_process p = weft_process_new(exit_with, .args = &(int){0}, .args_size = sizeof(int),
                                    .start_method = "spawn",
                                    .objects = (const void *[]){seg, NULL});
  ck_assert_int_eq(weft_shm_unlink(seg), 0);
  ck_assert_int_eq(weft_process_start(p), WEFT_ENOENT);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "unlinked"));
  weft_process_close(p);
  weft_shm_close(seg);
  weft_value_free(v);
  weft_queue_free(tq);
  free(heap);
}
END_TEST

/* ---- process pools on every start method ---- */

struct pool_shared {
  int inits;      /* initializer runs */
  int init_pids[64];
};

static int count_init(void *arg) {
  struct pool_shared *ps = arg;
  int i = __atomic_fetch_add(&ps->inits, 1, __ATOMIC_ACQ_REL);
  if (i < 64) ps->init_pids[i] = (int)getpid();
  return 0;
}

static int square(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)len;
  long x;
  memcpy(&x, arg, sizeof x);
  x *= x;
  memcpy(result, &x, sizeof x);
  *result_len = sizeof x;
  return 0;
}

static int crash_on_three(const void *arg, size_t len, void *result, size_t *result_len) {
  long x;
  memcpy(&x, arg, sizeof x);
  if (x == 3) abort();
  return square(arg, len, result, result_len);
}

static int my_worker_name(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  (void)len;
  const char *name = weft_process_name(weft_current_process());
  size_t n = strlen(name) + 1;
  memcpy(result, name, n);
  *result_len = n;
  return 0;
}

static int run_long(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  (void)len;
  (void)result;
  (void)result_len;
  nap(30);
  return 0;
}

START_TEST(process_pools_run_on_every_start_method) {
  struct pool_shared *ps = weft_shared_alloc(sizeof *ps);
  weft_pool pool = weft_process_pool_new(.workers = 2, .start_method = methods[_i],
                                         .initializer = count_init, .initarg = ps);
  ck_assert_uint_ne(pool.id, 0);
  long in[40], out[40];
  for (int i = 0; i < 40; i++) in[i] = i;
  ck_assert_int_eq(weft_pool_map(pool, square, in, sizeof(long), 40, out, sizeof(long)), 0);
  for (int i = 0; i < 40; i++) ck_assert_int_eq(out[i], (long)i * i);
  /* Worker names follow Python's per method. */
  static const char *const prefix[] = {"ForkPoolWorker-", "SpawnPoolWorker-",
                                       "ForkServerPoolWorker-"};
  weft_future f = weft_pool_apply_async(pool, my_worker_name, NULL, 0);
  const void *data;
  size_t len;
  ck_assert_int_eq(weft_future_result_bytes(f, 20 * SLOW, &data, &len), 0);
  ck_assert_ptr_nonnull(strstr(data, prefix[_i]));
  weft_future_close(f);
  /* A crash fails only its own task; the worker is replaced and runs the
   * initializer too. */
  long three = 3, four = 4, r = 0;
  weft_future bad = weft_pool_apply_async(pool, crash_on_three, &three, sizeof three);
  weft_future good = weft_pool_apply_async(pool, crash_on_three, &four, sizeof four);
  ck_assert_int_eq(weft_future_result_bytes(bad, 20 * SLOW, &data, &len), WEFT_EWORKERDIED);
  ck_assert_int_eq(weft_future_result_bytes(good, 20 * SLOW, &data, &len), 0);
  memcpy(&r, data, sizeof r);
  ck_assert_int_eq(r, 16);
  weft_future_close(bad);
  weft_future_close(good);
  /* A time limit kills its worker and fails its task. */
  weft_future slow = weft_pool_apply_async(pool, run_long, NULL, 0, .timeout = 0.3);
  ck_assert_int_eq(weft_future_result_bytes(slow, 20 * SLOW, &data, &len), WEFT_ETASKTIMEOUT);
  weft_future_close(slow);
  ck_assert_int_eq(weft_pool_map(pool, square, in, sizeof(long), 40, out, sizeof(long)), 0);
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_join(pool, 20 * SLOW), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
  /* Two first workers, one for the crash, one for the time limit. */
  ck_assert_int_eq(__atomic_load_n(&ps->inits, __ATOMIC_ACQUIRE), 4);
  for (int i = 0; i < 4; i++) ck_assert_int_ne(ps->init_pids[i], (int)getpid());
  weft_shared_free(ps);
}
END_TEST

START_TEST(fresh_pools_refuse_what_a_worker_cannot_follow) {
  int on_heap = 0;
  for (int m = 1; m < 3; m++) {
    weft_pool pool = weft_process_pool_new(.workers = 1, .start_method = methods[m],
                                           .initializer = count_init, .initarg = &on_heap);
    ck_assert_uint_eq(pool.id, 0);
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
    ck_assert_ptr_nonnull(strstr(weft_last_error(), "initarg"));
    pool = weft_process_pool_new(.workers = 1, .start_method = methods[m]);
    void *heap = malloc(64);
    weft_future f = weft_pool_apply_async(pool, (weft_bytes_task)heap, NULL, 0);
    ck_assert_uint_eq(f.id, 0);
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
    free(heap);
    ck_assert_int_eq(weft_pool_close(pool), 0);
    ck_assert_int_eq(weft_pool_join(pool, 20 * SLOW), 0);
    weft_pool_free(pool);
  }
  weft_pool pool = weft_process_pool_new(.workers = 1, .start_method = "vfork");
  ck_assert_uint_eq(pool.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  pool = weft_thread_pool_new(.workers = 1, .start_method = "spawn");
  ck_assert_uint_eq(pool.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
}
END_TEST

/* ---- a Barrier's action in a fresh child ---- */

static int action_runs(void *arg) {
  ++*(int *)arg;
  return 0;
}

/* Arrives last, once the parent waits: runs the action if it can. */
static int arrive_last(void *arg) {
  weft_barrier *b = *(weft_barrier **)arg;
  double end = test_now() + 20;
  while (__atomic_load_n(&b->count, __ATOMIC_ACQUIRE) != 1)
    if (test_now() > end) return 40;
    else nap_ms(1);
  int r = weft_barrier_wait(b, 20);
  if (r >= 0) return 0;
  return r == WEFT_EBROKEN && strstr(weft_last_error(), "cannot be called here") != NULL ? 41 : 42;
}

START_TEST(a_barrier_action_is_called_only_where_it_means_the_same) {
  int *ran = weft_shared_alloc(sizeof *ran);
  weft_barrier *b = weft_barrier_new(2, .action = action_runs, .arg = ran);
  weft_process p = weft_process_new(arrive_last, .args = &b, .args_size = sizeof b,
                                    .start_method = methods[_i]);
  ck_assert_int_eq(weft_process_start(p), 0);
  int r = weft_barrier_wait(b, 20 * SLOW);
  int code = finish_process(p, 20 * SLOW);
  if (_i == 0) { /* a fork child shares the program's layout: the action runs there */
    ck_assert_int_eq(code, 0);
    ck_assert_int_ge(r, 0);
    ck_assert_int_eq(*ran, 1);
  } else { /* a fresh image: broken, with the reason, and nothing called */
    ck_assert_int_eq(code, 41);
    ck_assert_int_eq(r, WEFT_EBROKEN);
    ck_assert_int_eq(*ran, 0);
  }
  weft_barrier_free(b);
  weft_shared_free(ran);
}
END_TEST

/* ---- names a fresh child cannot read ---- */

struct named_locks {
  weft_lock *mine;      /* weft_lock_init'ed in shared memory, named from the heap */
  weft_semaphore *sem;  /* the same for a semaphore */
};

static int misuse_foreign_names(void *arg) {
  const struct named_locks *n = arg;
  /* Errors and the deadlock detector read the lock's name: in a fresh image
   * the parent's heap pointer is not followed. */
  if (weft_lock_acquire(n->mine, 5) != 0) return 50;
  if (weft_lock_release(n->mine) != 0) return 51;
  if (weft_lock_release(n->mine) == 0) return 52;
  if (strstr(weft_last_error(), "heap-name") != NULL) return 53;
  if (weft_semaphore_acquire(n->sem, 0) != WEFT_ETIMEDOUT) return 54;
  if (strstr(weft_last_error(), "heap-sem") != NULL) return 55;
  return 0;
}

START_TEST(a_fresh_child_never_follows_its_parents_name_pointers) {
  struct named_locks n;
  n.mine = weft_shared_alloc(sizeof *n.mine);
  n.sem = weft_shared_alloc(sizeof *n.sem);
  char *lock_name = strdup("heap-name");
  char *sem_name = strdup("heap-sem");
  ck_assert_int_eq(weft_lock_init(n.mine, .name = lock_name), 0);
  ck_assert_int_eq(weft_semaphore_init(n.sem, 0, .name = sem_name), 0);
  weft_process p = weft_process_new(misuse_foreign_names, .args = &n, .args_size = sizeof n,
                                    .start_method = methods[_i]);
  ck_assert_int_eq(weft_process_start(p), 0);
  int code = finish_process(p, 20 * SLOW);
  /* Under fork the child shares the layout: it reads the names (and so
   * stops at 53); a fresh child reports without them. */
  ck_assert_int_eq(code, _i == 0 ? 53 : 0);
  weft_shared_free(n.mine);
  weft_shared_free(n.sem);
  free(lock_name);
  free(sem_name);
}
END_TEST

/* A stopped server answers nobody: a start says so instead of waiting for
 * ever, and once the server is continued, starts work again. */
START_TEST(a_stopped_forkserver_fails_a_start_instead_of_hanging) {
  int seven = 7;
  /* A first start: the server has answered (and named itself) by its end. */
  weft_process first = weft_process_new(exit_with, .args = &seven, .args_size = sizeof seven,
                                        .start_method = "forkserver");
  ck_assert_int_eq(weft_process_start(first), 0);
  ck_assert_int_eq(finish_process(first, 20 * SLOW), 7);
  pid_t server = server_pid();
  ck_assert_int_gt(server, 0);
  ck_assert_int_eq(kill(server, SIGSTOP), 0);
  weft_process p = weft_process_new(exit_with, .args = &seven, .args_size = sizeof seven,
                                    .start_method = "forkserver");
  double t0 = test_now();
  ck_assert_int_eq(weft_process_start(p), WEFT_EAGAIN);
  ck_assert_double_lt(test_now() - t0, 10 * SLOW);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "stopped"));
  ck_assert_int_eq(kill(server, SIGCONT), 0);
  ck_assert_int_eq(weft_process_start(p), 0); /* the same object, started again */
  ck_assert_int_eq(finish_process(p, 20 * SLOW), 7);
  ck_assert_int_eq(server_pid(), server);
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
  tcase_add_test(tc, a_stopped_forkserver_fails_a_start_instead_of_hanging);
  tcase_add_loop_test(tc, child_keeps_the_starters_mask_and_cancellation, 0, 3);
  tcase_add_test(tc, forkserver_exit_codes_with_sigchld_ignored);
  tcase_add_test(tc, default_start_method_and_environment);
  tcase_add_test(tc, misuse_of_start_methods);
  tcase_add_loop_test(tc, a_child_uses_every_object_its_parent_gives, 0, 3);
  tcase_add_loop_test(tc, only_listed_handles_travel_and_freed_memory_stays_the_childs, 1, 3);
  tcase_add_loop_test(tc, objects_travel_on_to_grandchildren, 0, 3);
  tcase_add_test(tc, objects_that_cannot_travel_are_refused);
  tcase_add_loop_test(tc, process_pools_run_on_every_start_method, 0, 3);
  tcase_add_test(tc, fresh_pools_refuse_what_a_worker_cannot_follow);
  tcase_add_loop_test(tc, a_barrier_action_is_called_only_where_it_means_the_same, 0, 3);
  tcase_add_loop_test(tc, a_fresh_child_never_follows_its_parents_name_pointers, 0, 3);
  suite_add_tcase(s, tc);
  return s;
}
