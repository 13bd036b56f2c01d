/* SPDX-License-Identifier: MIT */
/* Tests of weft/process.h: Python's multiprocessing.Process semantics. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <linux/sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* ---- targets ---- */

static int return_arg(void *arg) { return *(int *)arg; }
static int return_zero(void *arg) { (void)arg; return 0; }
static int call_exit(void *arg) { exit(*(int *)arg); }
static int kill_self(void *arg) { (void)arg; kill(getpid(), SIGKILL); return 0; }

/* Blocks until a byte arrives on the pipe whose read end is *arg, then
 * returns that byte as the exit code. */
static int wait_byte(void *arg) {
  unsigned char c = 0;
  if (read(*(int *)arg, &c, 1) != 1) return 100;
  return c;
}

static int pause_forever(void *arg) {
  (void)arg;
  for (;;) pause();
  return 0;
}

/* ---- start, join, exit codes ---- */

START_TEST(exitcode_is_target_return) {
  int value = 7;
  weft_process p = weft_process_new(return_arg, .arg = &value);
  ck_assert_uint_ne(p.id, 0);
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(p, &code), WEFT_ENOTSTARTED);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_gt(weft_process_pid(p), 0);
  ck_assert_int_eq(weft_process_join(p, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 7);
  ck_assert(!weft_process_is_alive(p));
  ck_assert_int_eq(weft_process_close(p), 0);
}
END_TEST

START_TEST(exitcode_of_exit_call) {
  int value = 42;
  weft_process p = weft_process_new(call_exit, .arg = &value);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, WEFT_FOREVER), 0);
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 42);
  weft_process_close(p);
}
END_TEST

START_TEST(exitcode_of_self_kill_is_minus_9) {
  weft_process p = weft_process_new(kill_self, .name = "myprocess1");
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, WEFT_FOREVER), 0);
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, -9);
  char buf[WEFT_PROCESS_REPR_MAX], want[WEFT_PROCESS_REPR_MAX];
  snprintf(want, sizeof want, "<Process name='myprocess1' pid=%d parent=%d stopped exitcode=-SIGKILL>",
           (int)weft_process_pid(p), (int)getpid());
  ck_assert_str_eq(weft_process_repr(p, buf, sizeof buf), want);
  weft_process_close(p);
}
END_TEST

START_TEST(terminate_and_kill) {
  weft_process a = weft_process_new(pause_forever);
  weft_process b = weft_process_new(pause_forever);
  ck_assert_int_eq(weft_process_start(a), 0);
  ck_assert_int_eq(weft_process_start(b), 0);
  ck_assert(weft_process_is_alive(a));
  ck_assert_int_eq(weft_process_terminate(a), 0);
  ck_assert_int_eq(weft_process_kill(b), 0);
  ck_assert_int_eq(weft_process_join(a, 5), 0);
  ck_assert_int_eq(weft_process_join(b, 5), 0);
  int ca = 0, cb = 0;
  weft_process_exitcode(a, &ca);
  weft_process_exitcode(b, &cb);
  ck_assert_int_eq(ca, -SIGTERM);
  ck_assert_int_eq(cb, -SIGKILL);
  /* Terminating a stopped process is not an error (as in Python). */
  ck_assert_int_eq(weft_process_terminate(a), 0);
  ck_assert_int_eq(weft_process_kill(a), 0);
  weft_process_close(a);
  weft_process_close(b);
}
END_TEST

START_TEST(join_timeout_and_running_state) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  weft_process p = weft_process_new(wait_byte, .arg = &fds[0]);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_process_join(p, 0.05), WEFT_ETIMEDOUT);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "still running"));
  ck_assert(weft_process_is_alive(p));
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p, &code), WEFT_ERUNNING);
  ck_assert_int_eq(weft_process_close(p), WEFT_ERUNNING);
  ck_assert_int_eq(write(fds[1], "\x05", 1), 1);
  ck_assert_int_eq(weft_process_join(p, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 5);
  ck_assert_int_eq(weft_process_join(p, 0), 0); /* joining again is fine */
  ck_assert_int_eq(weft_process_join(p, 1.0), 0);
  weft_process_close(p);
  close(fds[0]);
  close(fds[1]);
}
END_TEST

/* The child leaves a grandchild behind that inherited all its fds: a pidfd
 * still sees the child's death (Python's sentinel pipes would not). */
static int fork_grandchild_and_exit(void *arg) {
  int *fds = arg;
  if (fork() == 0) {
    char c;
    while (read(fds[0], &c, 1) < 0) {
    }
    _exit(0);
  }
  return 3;
}

START_TEST(join_not_fooled_by_inherited_fds) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  weft_process p = weft_process_new(fork_grandchild_and_exit, .arg = fds);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 5), 0);
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 3);
  close(fds[1]); /* releases the grandchild (reparented to us, the subreaper) */
  close(fds[0]);
  weft_process_close(p);
}
END_TEST

struct joiner {
  weft_process p;
  int result;
};

static void *join_in_thread(void *arg) {
  struct joiner *j = arg;
  j->result = weft_process_join(j->p, 10);
  return NULL;
}

START_TEST(many_threads_join_one_process) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  weft_process p = weft_process_new(wait_byte, .arg = &fds[0]);
  ck_assert_int_eq(weft_process_start(p), 0);
  struct joiner j[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    j[i] = (struct joiner){p, -1};
    pthread_create(&t[i], NULL, join_in_thread, &j[i]);
  }
  ck_assert_int_eq(write(fds[1], "\x01", 1), 1);
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    ck_assert_int_eq(j[i].result, 0);
  }
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 1);
  ck_assert_int_eq(weft_process_close(p), 0);
  close(fds[0]);
  close(fds[1]);
}
END_TEST

START_TEST(status_reaped_elsewhere) {
  weft_process p = weft_process_new(return_zero);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(waitpid(-1, NULL, 0), weft_process_pid(p)); /* steals the status */
  ck_assert_int_eq(weft_process_join(p, 5), 0);
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p, &code), WEFT_ECHILD);
  ck_assert(!weft_process_is_alive(p));
  ck_assert_int_eq(weft_process_close(p), 0);
}
END_TEST

/* ---- names, repr, identity ---- */

START_TEST(default_names_follow_python) {
  weft_process a = weft_process_new(return_zero);
  weft_process b = weft_process_new(return_zero, .name = "myprocess1");
  weft_process c = weft_process_new(return_zero);
  ck_assert_str_eq(weft_process_name(a), "Process-1");
  ck_assert_str_eq(weft_process_name(b), "myprocess1");
  ck_assert_str_eq(weft_process_name(c), "Process-3");
  ck_assert_str_eq(weft_process_name(weft_current_process()), "MainProcess");
  weft_process_close(a);
  weft_process_close(b);
  weft_process_close(c);
}
END_TEST

/* Run in a child: reports its view through the exit code (0: all good). */
static int check_child_view(void *arg) {
  pid_t parent_pid = *(pid_t *)arg;
  char buf[WEFT_PROCESS_REPR_MAX], want[WEFT_PROCESS_REPR_MAX];
  weft_process me = weft_current_process();
  if (strcmp(weft_process_name(me), "Process-1") != 0) return 1;
  if (weft_process_pid(me) != getpid()) return 2;
  snprintf(want, sizeof want, "<Process name='Process-1' parent=%d started>", (int)parent_pid);
  if (strcmp(weft_process_repr(me, buf, sizeof buf), want) != 0) return 3;
  weft_process parent = weft_parent_process();
  if (parent.id == 0 || strcmp(weft_process_name(parent), "MainProcess") != 0) return 4;
  if (weft_process_pid(parent) != parent_pid || !weft_process_is_alive(parent)) return 5;
  if (weft_process_join(parent, 0) != WEFT_ETIMEDOUT) return 6;
  weft_process g = weft_process_new(return_zero);
  if (strcmp(weft_process_name(g), "Process-1:1") != 0) return 7;
  weft_process g2 = weft_process_new(return_zero);
  if (strcmp(weft_process_name(g2), "Process-1:2") != 0) return 8;
  if (weft_process_start(g2) != 0 || weft_process_join(g2, 5) != 0) return 9;
  if (weft_process_join(me, 0) != WEFT_EDEADLK) return 10;
  if (weft_process_close(me) != WEFT_EPERM || weft_process_close(parent) != WEFT_EPERM) return 11;
  if (weft_process_terminate(parent) != WEFT_EPERM) return 12;
  return 0;
}

START_TEST(child_sees_itself_and_its_parent) {
  pid_t me = getpid();
  weft_process p = weft_process_new(check_child_view, .arg = &me);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 10), 0);
  int code = -1;
  weft_process_exitcode(p, &code);
  ck_assert_int_eq(code, 0);
  ck_assert_uint_eq(weft_parent_process().id, 0); /* MainProcess has no parent */
  weft_process_close(p);
}
END_TEST

START_TEST(repr_states) {
  char buf[WEFT_PROCESS_REPR_MAX], want[WEFT_PROCESS_REPR_MAX];
  ck_assert_str_eq(weft_process_repr(weft_current_process(), buf, sizeof buf),
                   "<_MainProcess name='MainProcess' parent=None started>");
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  weft_process p = weft_process_new(wait_byte, .arg = &fds[0], .name = "myprocess1", .daemon = true);
  snprintf(want, sizeof want, "<Process name='myprocess1' parent=%d initial daemon>", (int)getpid());
  ck_assert_str_eq(weft_process_repr(p, buf, sizeof buf), want);
  ck_assert_int_eq(weft_process_start(p), 0);
  snprintf(want, sizeof want, "<Process name='myprocess1' pid=%d parent=%d started daemon>",
           (int)weft_process_pid(p), (int)getpid());
  ck_assert_str_eq(weft_process_repr(p, buf, sizeof buf), want);
  ck_assert_int_eq(write(fds[1], "\0", 1), 1);
  ck_assert_int_eq(weft_process_join(p, 5), 0);
  snprintf(want, sizeof want, "<Process name='myprocess1' pid=%d parent=%d stopped exitcode=0 daemon>",
           (int)weft_process_pid(p), (int)getpid());
  ck_assert_str_eq(weft_process_repr(p, buf, sizeof buf), want);
  weft_process_close(p);
  ck_assert_str_eq(weft_process_repr(p, buf, sizeof buf), "<Process closed>");
  ck_assert_str_eq(weft_process_repr((weft_process){0}, buf, sizeof buf), "None");
  /* A short buffer is cut, never overrun. */
  char tiny[8];
  ck_assert_str_eq(weft_process_repr(weft_current_process(), tiny, sizeof tiny), "<_MainP");
  close(fds[0]);
  close(fds[1]);
}
END_TEST

START_TEST(active_children_lists_and_reaps) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  weft_process quick = weft_process_new(return_zero);
  weft_process slow1 = weft_process_new(wait_byte, .arg = &fds[0]);
  weft_process slow2 = weft_process_new(wait_byte, .arg = &fds[0]);
  ck_assert_int_eq(weft_process_start(quick), 0);
  ck_assert_int_eq(weft_process_start(slow1), 0);
  ck_assert_int_eq(weft_process_start(slow2), 0);
  weft_process out[4];
  /* Wait (bounded) for the quick child to exit; active_children reaps it. */
  int n = 3;
  for (int i = 0; i < 5000 && n == 3; i++) {
    n = weft_active_children(out, 4);
    if (n == 3) weft_sleep(0.001);
  }
  ck_assert_int_eq(n, 2);
  ck_assert(out[0].id == slow1.id || out[1].id == slow1.id);
  ck_assert(out[0].id == slow2.id || out[1].id == slow2.id);
  ck_assert_int_eq(count_children(), 2); /* the quick one was reaped: no zombie */
  ck_assert_int_eq(weft_active_children(out, 1), 2); /* count beyond max */
  ck_assert_int_eq(weft_active_children(NULL, 0), 2);
  ck_assert_int_eq(weft_active_children(NULL, 3), WEFT_EINVAL);
  ck_assert_int_eq(write(fds[1], "\0\0", 2), 2);
  ck_assert_int_eq(weft_process_join(slow1, 5), 0);
  ck_assert_int_eq(weft_process_join(slow2, 5), 0);
  ck_assert_int_eq(weft_active_children(out, 4), 0);
  weft_process_close(quick);
  weft_process_close(slow1);
  weft_process_close(slow2);
}
END_TEST

/* The list follows the children running, not the most ever started:
 * after 100 started and joined (half of them closed), 3 still running are
 * listed exactly, and a child killed meanwhile is reaped off it. */
START_TEST(active_children_exact_after_peak) {
  enum { PEAK_CHILDREN = 100 };
  static weft_process done[PEAK_CHILDREN];
  weft_process live[3], out[8];
  for (int i = 0; i < 3; i++) {
    live[i] = weft_process_new(pause_forever);
    ck_assert_int_eq(weft_process_start(live[i]), 0);
  }
  for (int i = 0; i < PEAK_CHILDREN; i++) {
    done[i] = weft_process_new(return_zero);
    ck_assert_int_eq(weft_process_start(done[i]), 0);
  }
  for (int i = 0; i < PEAK_CHILDREN; i++) {
    ck_assert_int_eq(weft_process_join(done[i], 30), 0);
    if (i % 2 == 0) ck_assert_int_eq(weft_process_close(done[i]), 0);
  }
  int n = weft_active_children(out, 8);
  ck_assert_int_eq(n, 3);
  for (int i = 0; i < 3; i++)
    ck_assert(out[0].id == live[i].id || out[1].id == live[i].id || out[2].id == live[i].id);
  ck_assert_int_eq(weft_process_kill(live[1]), 0);
  for (int i = 0; i < 5000 && n == 3; i++) { /* reaped by the call once it has died */
    n = weft_active_children(out, 8);
    if (n == 3) weft_sleep(0.001);
  }
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(count_children(), 2);
  for (int i = 0; i < 3; i++) {
    weft_process_kill(live[i]);
    ck_assert_int_eq(weft_process_join(live[i], 30), 0);
    ck_assert_int_eq(weft_process_close(live[i]), 0);
  }
  ck_assert_int_eq(weft_active_children(NULL, 0), 0);
  for (int i = 1; i < PEAK_CHILDREN; i += 2) ck_assert_int_eq(weft_process_close(done[i]), 0);
}
END_TEST

/* ---- output and atexit in the child (helper programs) ---- */

START_TEST(output_before_start_appears_once_pipe) {
  int fd;
  pid_t pid = helper_spawn("flush_before_start", &fd);
  char out[4096];
  read_all(fd, out, sizeof out, 10);
  ck_assert_int_eq(wait_status(pid), 0);
  ck_assert_int_eq(count_substr(out, "before start"), 1);
  ck_assert_int_eq(count_substr(out, "child line"), 1);
  ck_assert_int_eq(count_substr(out, "after join"), 1);
  close(fd);
}
END_TEST

START_TEST(output_before_start_appears_once_file) {
  char path[] = "/tmp/weft-test-XXXXXX";
  int tmp = mkstemp(path);
  ck_assert_int_ge(tmp, 0);
  int fd;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "flush_before_start");
  pid_t pid = fork();
  if (pid == 0) {
    execl(WEFT_HELPER, WEFT_HELPER, cmd, path, (char *)NULL);
    _exit(127);
  }
  ck_assert_int_eq(wait_status(pid), 0);
  char out[4096];
  fd = tmp;
  size_t n = (size_t)pread(fd, out, sizeof out - 1, 0);
  out[n] = '\0';
  unlink(path);
  close(fd);
  ck_assert_int_eq(count_substr(out, "before start"), 1);
  ck_assert_int_eq(count_substr(out, "child line"), 1);
}
END_TEST

START_TEST(parent_atexit_never_runs_in_child) {
  int fd;
  pid_t pid = helper_spawn("atexit_rules", &fd);
  char out[4096];
  read_all(fd, out, sizeof out, 10);
  ck_assert_int_eq(wait_status(pid), 0);
  ck_assert_int_eq(count_substr(out, "atexit of the parent ran"), 1);
  char want[64];
  snprintf(want, sizeof want, "atexit of the parent ran in %d", (int)pid);
  ck_assert_ptr_nonnull(strstr(out, want));
  ck_assert_int_eq(count_substr(out, "atexit of the child ran"), 1);
  ck_assert_ptr_nonnull(strstr(out, "child exitcode 3"));
  close(fd);
}
END_TEST

/* ---- exit rules (helper programs) ---- */

START_TEST(main_return_waits_for_nondaemon_child) {
  int fd;
  pid_t pid = helper_spawn("main_returns_waits", &fd);
  ck_assert_int_eq(wait_status(pid), 0);
  char out[4096];
  read_now(fd, out, sizeof out); /* what was written by the time the helper exited */
  char *m = strstr(out, "main returns"), *c = strstr(out, "child done");
  ck_assert_ptr_nonnull(m);
  ck_assert_ptr_nonnull(c);
  ck_assert(m < c);
  close(fd);
}
END_TEST

static pid_t parse_pid(const char *out, const char *key) {
  const char *p = strstr(out, key);
  ck_assert_msg(p != NULL, "no '%s' in output: %s", key, out);
  return (pid_t)atoi(p + strlen(key));
}

START_TEST(daemon_child_gone_after_exit) {
  int fd;
  pid_t pid = helper_spawn("daemon_gone_after_exit", &fd);
  ck_assert_int_eq(wait_status(pid), 0);
  char out[4096];
  read_now(fd, out, sizeof out);
  pid_t d = parse_pid(out, "daemon pid=");
  ck_assert(pid_gone(d)); /* reaped by the helper's exit rules before it exited */
  close(fd);
}
END_TEST

/* Past the few children that keep a pidfd, the exit rules still wait for
 * every non-daemon child and end every daemon. */
START_TEST(exit_rules_reach_many_children) {
  int fd;
  pid_t pid = helper_spawn("many_children_at_exit", &fd);
  ck_assert_int_eq(wait_status(pid), 0);
  char out[8192];
  read_now(fd, out, sizeof out);
  const char *main_returns = strstr(out, "main returns");
  ck_assert_msg(main_returns != NULL, "output: %s", out);
  const char *at = out;
  for (int i = 0; i < 12; i++) {
    char line[32];
    snprintf(line, sizeof line, "child %d done", i);
    const char *c = strstr(out, line);
    ck_assert_msg(c != NULL && c > main_returns, "no '%s' after 'main returns': %s", line, out);
    pid_t d = parse_pid(at, "daemon pid=");
    ck_assert_msg(pid_gone(d), "daemon %d outlived the helper", (int)d);
    at = strstr(at, "daemon pid=") + 1;
  }
  close(fd);
}
END_TEST

START_TEST(daemon_ignoring_sigterm_is_killed_after_grace) {
  int fd;
  pid_t pid = helper_spawn("daemon_ignores_term", &fd);
  ck_assert_int_eq(wait_status(pid), 0);
  char out[4096];
  read_now(fd, out, sizeof out);
  pid_t d = parse_pid(out, "daemon pid=");
  ck_assert(pid_gone(d));
  close(fd);
}
END_TEST

static void check_killed_parent(const char *scenario) {
  int fd;
  pid_t pid = helper_spawn(scenario, &fd);
  char out[4096];
  ck_assert_msg(read_until(fd, out, sizeof out, "daemon pid=", 10), "helper said: %s", out);
  pid_t d = parse_pid(out, "daemon pid=");
  ck_assert(!pid_gone(d));
  kill(pid, SIGKILL);
  wait_status(pid);
  ck_assert_msg(wait_pid_gone(d, 1.0), "daemon %d outlived its killed parent", (int)d);
  close(fd);
}

START_TEST(daemon_dies_when_parent_is_killed) { check_killed_parent("parent_killed"); }
END_TEST

START_TEST(daemon_started_from_thread_survives_thread_dies_with_parent) {
  check_killed_parent("daemon_from_thread");
}
END_TEST

START_TEST(child_waits_for_its_own_children) {
  int fd;
  pid_t pid = helper_spawn("nested_waits", &fd);
  char out[4096];
  read_all(fd, out, sizeof out, 10);
  ck_assert_int_eq(wait_status(pid), 0);
  char *c = strstr(out, "child returns"), *g = strstr(out, "grandchild done"),
       *m = strstr(out, "main joined child");
  ck_assert_msg(c && g && m, "output: %s", out);
  ck_assert(c < g && g < m);
  close(fd);
}
END_TEST

START_TEST(child_exit_terminates_its_daemons) {
  int fd;
  pid_t pid = helper_spawn("child_daemon_dies_with_child", &fd);
  char out[4096];
  ck_assert_msg(read_until(fd, out, sizeof out, "main joined child", 10), "helper said: %s", out);
  pid_t d = parse_pid(out, "daemon pid=");
  ck_assert(pid_gone(d));
  kill(pid, SIGKILL);
  wait_status(pid);
  close(fd);
}
END_TEST

/* ---- misuse ---- */

START_TEST(misuse_null_target_and_long_name) {
  weft_process p = weft_process_new(NULL);
  ck_assert_uint_eq(p.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "target is NULL"));
  char name[WEFT_NAME_MAX + 2];
  memset(name, 'x', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  p = weft_process_new(return_zero, .name = name);
  ck_assert_uint_eq(p.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  name[WEFT_NAME_MAX] = '\0'; /* exactly the maximum is fine */
  p = weft_process_new(return_zero, .name = name);
  ck_assert_uint_ne(p.id, 0);
  ck_assert_str_eq(weft_process_name(p), name);
  weft_process_close(p);
  ck_assert_int_eq(weft_process_start((weft_process){0}), WEFT_ECLOSED);
}
END_TEST

START_TEST(misuse_before_start) {
  weft_process p = weft_process_new(return_zero, .name = "Process-7");
  ck_assert_int_eq(weft_process_join(p, 0), WEFT_ENOTSTARTED);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "Process-7"));
  ck_assert_int_eq(weft_process_terminate(p), WEFT_ENOTSTARTED);
  ck_assert_int_eq(weft_process_kill(p), WEFT_ENOTSTARTED);
  ck_assert_int_eq(weft_process_pid(p), WEFT_ENOTSTARTED);
  ck_assert(!weft_process_is_alive(p));
  ck_assert_int_eq(weft_process_set_daemon(p, true), 0);
  ck_assert(weft_process_daemon(p));
  ck_assert_int_eq(weft_process_join(p, 0.0 / 0.0), WEFT_EINVAL); /* NaN timeout */
  ck_assert_int_eq(weft_process_close(p), 0); /* closing an unstarted process is fine */
}
END_TEST

START_TEST(misuse_start_twice_and_daemon_after_start) {
  weft_process p = weft_process_new(return_zero, .name = "Process-3");
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_start(p), WEFT_EALREADY);
  ck_assert_str_eq(weft_last_error(), "Process-3 was already started");
  ck_assert_int_eq(weft_process_set_daemon(p, true), WEFT_EALREADY);
  ck_assert(!weft_process_daemon(p));
  ck_assert_int_eq(weft_process_join(p, 5), 0);
  ck_assert_int_eq(weft_process_start(p), WEFT_EALREADY);
  ck_assert_int_eq(weft_process_close(p), 0);
  ck_assert_int_eq(weft_process_start(weft_current_process()), WEFT_EALREADY);
}
END_TEST

START_TEST(misuse_join_self) {
  ck_assert_int_eq(weft_process_join(weft_current_process(), 0), WEFT_EDEADLK);
  ck_assert_int_eq(weft_process_join(weft_current_process(), WEFT_FOREVER), WEFT_EDEADLK);
  ck_assert_int_eq(weft_process_close(weft_current_process()), WEFT_EPERM);
  ck_assert_int_eq(weft_process_terminate(weft_current_process()), WEFT_EDEADLK);
  ck_assert(weft_process_is_alive(weft_current_process()));
}
END_TEST

/* In a child: the sibling's handle, copied by fork, is not ours to use. */
static int use_sibling(void *arg) {
  weft_process sibling = *(weft_process *)arg;
  if (weft_process_join(sibling, 0) != WEFT_EPERM) return 1;
  if (strstr(weft_last_error(), "not a child") == NULL) return 2;
  if (weft_process_terminate(sibling) != WEFT_EPERM) return 3;
  if (weft_process_kill(sibling) != WEFT_EPERM) return 4;
  if (weft_process_start(sibling) != WEFT_EALREADY) return 5;
  int code;
  if (weft_process_exitcode(sibling, &code) != WEFT_EPERM) return 6;
  if (weft_process_is_alive(sibling)) return 7;
  return 0;
}

START_TEST(misuse_join_from_non_parent) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  weft_process sibling = weft_process_new(wait_byte, .arg = &fds[0]);
  ck_assert_int_eq(weft_process_start(sibling), 0);
  weft_process p = weft_process_new(use_sibling, .arg = &sibling);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 10), 0);
  int code = -1;
  weft_process_exitcode(p, &code);
  ck_assert_int_eq(code, 0);
  ck_assert(weft_process_is_alive(sibling)); /* the child's attempts left it alone */
  ck_assert_int_eq(write(fds[1], "\0", 1), 1);
  ck_assert_int_eq(weft_process_join(sibling, 5), 0);
  weft_process_close(p);
  weft_process_close(sibling);
}
END_TEST

START_TEST(misuse_calls_after_close) {
  weft_process p = weft_process_new(return_zero);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 5), 0);
  ck_assert_int_eq(weft_process_close(p), 0);
  ck_assert_int_eq(weft_process_close(p), WEFT_ECLOSED);
  ck_assert_int_eq(weft_process_start(p), WEFT_ECLOSED);
  ck_assert_int_eq(weft_process_join(p, 0), WEFT_ECLOSED);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "closed"));
  ck_assert_int_eq(weft_process_terminate(p), WEFT_ECLOSED);
  ck_assert_int_eq(weft_process_kill(p), WEFT_ECLOSED);
  ck_assert_int_eq(weft_process_pid(p), WEFT_ECLOSED);
  int code;
  ck_assert_int_eq(weft_process_exitcode(p, &code), WEFT_ECLOSED);
  ck_assert_int_eq(weft_process_set_daemon(p, true), WEFT_ECLOSED);
  ck_assert(!weft_process_is_alive(p));
  ck_assert_ptr_null(weft_process_name(p));
  /* A new process reusing the slot does not answer to the old handle. */
  weft_process q = weft_process_new(return_zero);
  ck_assert_uint_ne(q.id, p.id);
  ck_assert_int_eq(weft_process_pid(p), WEFT_ECLOSED);
  weft_process_close(q);
}
END_TEST

static int start_nondaemon(void *arg) {
  (void)arg;
  weft_process p = weft_process_new(return_zero);
  if (!weft_process_daemon(p)) return 4; /* inherited, as Python copies the creator's config */
  weft_process_set_daemon(p, false);
  if (weft_process_start(p) != WEFT_EPERM) return 1;
  if (strstr(weft_last_error(), "daemon") == NULL) return 2;
  weft_process d = weft_process_new(return_zero);
  if (weft_process_start(d) != 0 || weft_process_join(d, 5) != 0) return 3;
  return 0;
}

START_TEST(daemon_may_start_only_daemons) {
  weft_process p = weft_process_new(start_nondaemon, .daemon = true);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 10), 0);
  int code = -1;
  weft_process_exitcode(p, &code);
  ck_assert_int_eq(code, 0);
  weft_process_close(p);
}
END_TEST

struct blocked_start {
  weft_process p;
  int result;
  int code;
  bool filtered;
};

static void *start_without_fork(void *arg) {
  struct blocked_start *b = arg;
  b->filtered = block_fork_in_this_thread();
  b->result = weft_process_start(b->p);
  b->code = weft_last_error_code();
  return NULL;
}

START_TEST(fork_failure_leaves_nothing_behind) {
  weft_process p = weft_process_new(return_zero);
  int fds_before = count_fds();
  struct blocked_start b = {p, 0, 0, false};
  pthread_t t;
  pthread_create(&t, NULL, start_without_fork, &b);
  pthread_join(t, NULL);
  ck_assert_msg(b.filtered, "seccomp filter refused");
  ck_assert_int_eq(b.result, WEFT_EAGAIN);
  ck_assert_int_eq(b.code, WEFT_EAGAIN);
  ck_assert_int_eq(count_fds(), fds_before);
  ck_assert_int_eq(count_children(), 0);
  ck_assert_int_eq(weft_process_pid(p), WEFT_ENOTSTARTED);
  ck_assert(!weft_process_is_alive(p));
  /* The failed start left the object as new: it can start now. */
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 5), 0);
  ck_assert_int_eq(weft_process_close(p), 0);
}
END_TEST

START_TEST(daemon_grace_rejects_nan) {
  ck_assert_int_eq(weft_set_daemon_grace(0.0 / 0.0), WEFT_EINVAL);
  ck_assert_int_eq(weft_set_daemon_grace(0.5), 0);
}
END_TEST

/* ---- stress and fork safety ---- */

START_TEST(start_join_cycles_leave_no_zombie_or_fd) {
  int fds_before = count_fds();
  int cycles = 2000;
  for (int i = 0; i < cycles; i++) {
    int value = i & 0x7f;
    weft_process p = weft_process_new(return_arg, .arg = &value);
    ck_assert_int_eq(weft_process_start(p), 0);
    ck_assert_int_eq(weft_process_join(p, WEFT_FOREVER), 0);
    int code = -1;
    ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
    ck_assert_int_eq(code, value);
    ck_assert_int_eq(weft_process_close(p), 0);
  }
  ck_assert_int_eq(count_fds(), fds_before);
  ck_assert_int_eq(count_children(), 0);
}
END_TEST

static volatile int stop_churn;

static void *churn(void *arg) {
  (void)arg;
  weft_process out[8];
  char buf[WEFT_PROCESS_REPR_MAX];
  while (!__atomic_load_n(&stop_churn, __ATOMIC_RELAXED)) {
    weft_active_children(out, 8);
    weft_process_repr(weft_current_process(), buf, sizeof buf);
    weft_process q = weft_process_new(return_zero);
    weft_process_close(q);
  }
  return NULL;
}

/* Uses weft inside the child while the parent's other threads were busy in
 * weft at the moment of fork: the child must not hang on weft's state. */
static int use_weft_in_child(void *arg) {
  (void)arg;
  weft_process g = weft_process_new(return_zero);
  if (weft_process_start(g) != 0 || weft_process_join(g, 5) != 0) return 1;
  weft_process out[8];
  return weft_active_children(out, 8) == 0 ? 0 : 2;
}

START_TEST(fork_while_other_threads_use_weft) {
  pthread_t t[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, churn, NULL);
  int rounds = 300;
  for (int i = 0; i < rounds; i++) {
    weft_process p = weft_process_new(use_weft_in_child);
    ck_assert_int_eq(weft_process_start(p), 0);
    ck_assert_int_eq(weft_process_join(p, 10), 0);
    int code = -1;
    weft_process_exitcode(p, &code);
    ck_assert_int_eq(code, 0);
    weft_process_close(p);
  }
  __atomic_store_n(&stop_churn, 1, __ATOMIC_RELAXED);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
}
END_TEST

/* ---- weft_cpu_count ---- */

static int affinity_count(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
}

/* In a child restricted to one CPU: 1, whatever the machine has. */
static int one_cpu_child(void *arg) {
  (void)arg;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 10;
  int first = -1;
  for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
    if (CPU_ISSET(i, &set)) first = i;
  CPU_ZERO(&set);
  CPU_SET(first, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) return 11;
  return weft_cpu_count();
}

START_TEST(cpu_count_follows_affinity) {
  int n = weft_cpu_count(), affinity = affinity_count();
  ck_assert_int_ge(n, 1);
  ck_assert_int_ge(affinity, 1);
  /* The cgroup quota may lower it, never raise it. */
  ck_assert_int_le(n, affinity);
  weft_process p = weft_process_new(one_cpu_child);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 10), 0);
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  weft_process_close(p);
  ck_assert_int_eq(code, 1);
}
END_TEST

/* Where the machine lets the test (root, cgroup v1's cpu controller or
 * v2 with cpu enabled), a child in a new cgroup with a quota of half a CPU
 * counts 1. Elsewhere it says it was skipped. */
static char cgroup_dir[128];

static int child_in_cgroup(void *arg) {
  (void)arg;
  char path[192], pid[32];
  snprintf(path, sizeof path, "%s/cgroup.procs", cgroup_dir);
  int fd = open(path, O_WRONLY);
  if (fd < 0) return 100;
  int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
  bool moved = write(fd, pid, (size_t)len) == len;
  close(fd);
  return moved ? weft_cpu_count() : 101;
}

static bool write_file(const char *dir, const char *name, const char *text) {
  char path[192];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_WRONLY);
  if (fd < 0) return false;
  bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
  close(fd);
  return ok;
}

START_TEST(cpu_count_respects_cgroup_quota) {
  char controllers[256] = "";
  int fd = open("/sys/fs/cgroup/cgroup.subtree_control", O_RDONLY);
  if (fd >= 0) {
    ssize_t n = read(fd, controllers, sizeof controllers - 1);
    controllers[n > 0 ? n : 0] = '\0';
    close(fd);
  }
  bool v1 = access("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", W_OK) == 0;
  bool v2 = !v1 && strstr(controllers, "cpu") != NULL && access("/sys/fs/cgroup", W_OK) == 0;
  if (geteuid() != 0 || (!v1 && !v2)) {
    fprintf(stderr, "cpu_count_respects_cgroup_quota: skipped (needs root and a cpu cgroup)\n");
    return;
  }
  snprintf(cgroup_dir, sizeof cgroup_dir, "/sys/fs/cgroup%s/weft-test-%d", v1 ? "/cpu" : "",
           (int)getpid());
  ck_assert_int_eq(mkdir(cgroup_dir, 0755), 0);
  bool set = v1 ? write_file(cgroup_dir, "cpu.cfs_period_us", "100000") &&
                      write_file(cgroup_dir, "cpu.cfs_quota_us", "50000")
                : write_file(cgroup_dir, "cpu.max", "50000 100000");
  int code = -1;
  if (set) {
    weft_process p = weft_process_new(child_in_cgroup);
    if (weft_process_start(p) == 0 && weft_process_join(p, 10) == 0)
      weft_process_exitcode(p, &code);
    weft_process_close(p);
  }
  int removed = rmdir(cgroup_dir);
  ck_assert_msg(set, "could not set a quota in %s", cgroup_dir);
  ck_assert_int_eq(code, 1);
  ck_assert_int_eq(removed, 0);
}
END_TEST

/* ---- what a start costs with many children alive ---- */

/* What a probe child saw of itself, sent to the parent through a pipe. */
struct probe_report {
  long faults;       /* minor page faults so far: each is a page copied or mapped */
  int fds;           /* entries of /proc/self/fd, the directory's own fd excluded */
  int active;        /* weft_active_children() */
  bool pipes_open;   /* the parent's pipes made between the siblings' starts */
  bool file_kept;    /* an fd opened here survived weft_process_close(sibling) */
};

struct probe_arg {
  int report_fd;     /* write end of the report pipe */
  int between_fd;    /* write end of a pipe made between the siblings' starts */
  weft_process sibling;
};

static int probe(void *arg_) {
  struct probe_arg *arg = arg_;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru); /* first: what the fork handlers and the start cost */
  struct probe_report r = {.faults = ru.ru_minflt};
  r.fds = count_fds();
  r.active = weft_active_children(NULL, 0);
  r.pipes_open = fcntl(arg->report_fd, F_GETFD) >= 0 &&
                 (arg->between_fd < 0 || write(arg->between_fd, "x", 1) == 1);
  if (arg->sibling.id != 0) {
    /* The lowest free fd: one of the siblings' pidfds until the fork
     * handler closed them. The sibling's object must not close it. */
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    bool alive = weft_process_is_alive(arg->sibling); /* not ours: false */
    int closed = weft_process_close(arg->sibling);
    r.file_kept = fd >= 0 && !alive && closed == 0 && fcntl(fd, F_GETFD) >= 0;
  }
  return write(arg->report_fd, &r, sizeof r) == (ssize_t)sizeof r ? 0 : 1;
}

static struct probe_report run_probe(struct probe_arg *arg) {
  int rep[2];
  ck_assert_int_eq(pipe2(rep, O_CLOEXEC), 0);
  arg->report_fd = rep[1];
  weft_process p = weft_process_new(probe, .arg = arg);
  ck_assert_int_eq(weft_process_start(p), 0);
  close(rep[1]);
  struct probe_report r;
  memset(&r, 0, sizeof r);
  ck_assert_int_eq(read(rep[0], &r, sizeof r), (ssize_t)sizeof r);
  close(rep[0]);
  int code = -1;
  ck_assert_int_eq(weft_process_join(p, 30), 0);
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 0);
  weft_process_close(p);
  return r;
}

#define SIBLINGS 300

/* How many pidfds the calling process holds. */
static int count_pidfds(void) {
  DIR *d = opendir("/proc/self/fdinfo");
  ck_assert_ptr_nonnull(d);
  int n = 0;
  char path[300], line[128];
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%s", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue; /* the directory's own fd, or one closed meanwhile */
    while (fgets(line, sizeof line, f) != NULL)
      if (strncmp(line, "Pid:", 4) == 0) n++;
    fclose(f);
  }
  closedir(d);
  return n;
}

/* Whether pidfds carry a number of their own (pidfs, 64-bit), which lets
 * weft give up the pidfds of the children it was not asked about lately. */
static bool pidfds_numbered(void) {
  int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
  ck_assert_int_ge(fd, 0);
  struct statfs fs;
  bool yes = sizeof(void *) >= 8 && fstatfs(fd, &fs) == 0 && fs.f_type == 0x50494446;
  close(fd);
  return yes;
}

/* At most this many children keep an idle pidfd where pidfds are
 * numbered: process.c's MAX_IDLE_PIDFDS, with room to grow. */
#define FEW_PIDFDS 16

/* The pidfds held for n children started and left alone. */
static void expect_pidfds_held(int held, int n) {
  if (pidfds_numbered())
    ck_assert_msg(held >= 1 && held <= FEW_PIDFDS, "%d pidfds held for %d children", held, n);
  else
    ck_assert_int_eq(held, n);
}

/* A start's child must not do work in proportion to its siblings: it
 * closes the parent's pidfds in runs, leaves alone the fds made between
 * them, and writes none of the siblings' objects (each object written is
 * memory copied: page faults the child counts). */
START_TEST(start_cost_does_not_grow_with_siblings) {
  struct probe_arg arg = {.between_fd = -1};
  (void)run_probe(&arg); /* the first child loads what a child needs */
  struct probe_report base = run_probe(&arg);
  ck_assert_int_eq(base.active, 0);
  int fds_before = count_fds();

  static weft_process sib[SIBLINGS];
  int between[2] = {-1, -1};
  for (int i = 0; i < SIBLINGS; i++) {
    if (i == SIBLINGS / 2) ck_assert_int_eq(pipe2(between, O_CLOEXEC), 0);
    sib[i] = weft_process_new(pause_forever);
    ck_assert_int_eq(weft_process_start(sib[i]), 0);
  }
  /* The pipe, and the siblings' pidfds. */
  ck_assert_int_eq(count_fds(), fds_before + count_pidfds() + 2);
  expect_pidfds_held(count_pidfds(), SIBLINGS);
  ck_assert_int_eq(weft_active_children(NULL, 0), SIBLINGS);
  arg.between_fd = between[1];
  arg.sibling = sib[SIBLINGS / 3];
  struct probe_report r = run_probe(&arg);
  char c = 0;
  ck_assert_int_eq(read(between[0], &c, 1), 1); /* the probe wrote it */

  for (int i = 0; i < SIBLINGS; i++) {
    ck_assert_int_eq(weft_process_kill(sib[i]), 0);
    ck_assert_int_eq(weft_process_join(sib[i], 30), 0);
    ck_assert_int_eq(weft_process_close(sib[i]), 0);
  }
  close(between[0]);
  close(between[1]);

  ck_assert_msg(r.pipes_open, "the child lost fds that are not pidfds");
  ck_assert_msg(r.file_kept, "a sibling's object closed an fd the child opened");
  ck_assert_int_eq(r.active, 0);
  /* The parent's fds before the siblings, the report pipe and the pipe
   * made between the siblings' starts. */
  ck_assert_msg(r.fds == fds_before + 4, "the child has %d fds open, %d without siblings", r.fds,
                base.fds);
  /* Writing the siblings' objects would copy about one page per 16. */
  ck_assert_msg(r.faults - base.faults < SIBLINGS / 40,
                "the child took %ld page faults with %d siblings alive, %ld without", r.faults,
                SIBLINGS, base.faults);
}
END_TEST

/* ---- many children: pidfds given up and opened again ---- */

#define MANY 24

/* Starts n children that each wait for a byte on a pipe of their own. */
static void start_waiting(weft_process *p, int (*pipes)[2], int n) {
  for (int i = 0; i < n; i++) {
    ck_assert_int_eq(pipe2(pipes[i], O_CLOEXEC), 0);
    p[i] = weft_process_new(wait_byte, .arg = &pipes[i][0]);
    ck_assert_int_eq(weft_process_start(p[i]), 0);
  }
}

static void release(int (*pipes)[2], int i, unsigned char code) {
  ck_assert_int_eq(write(pipes[i][1], &code, 1), 1);
}

static void finish_waiting(weft_process *p, int (*pipes)[2], int n) {
  for (int i = 0; i < n; i++) {
    ck_assert_int_eq(weft_process_close(p[i]), 0);
    close(pipes[i][0]);
    close(pipes[i][1]);
  }
}

static void start_pausing(weft_process *p, int n) {
  for (int i = 0; i < n; i++) {
    p[i] = weft_process_new(pause_forever);
    ck_assert_int_eq(weft_process_start(p[i]), 0);
  }
}

static void kill_pausing(weft_process *p, int n) {
  for (int i = 0; i < n; i++) {
    ck_assert_int_eq(weft_process_kill(p[i]), 0);
    ck_assert_int_eq(weft_process_join(p[i], 30), 0);
    ck_assert_int_eq(weft_process_close(p[i]), 0);
  }
}

/* Children started long ago, whose pidfds were given up, answer every
 * call as the ones started last do. */
START_TEST(old_children_answer_every_call) {
  int base = count_pidfds();
  static weft_process p[MANY];
  static int pipes[MANY][2];
  start_waiting(p, pipes, MANY);
  expect_pidfds_held(count_pidfds() - base, MANY);
  for (int i = 0; i < MANY; i++) { /* the oldest first */
    ck_assert(weft_process_is_alive(p[i]));
    int code = -1;
    ck_assert_int_eq(weft_process_exitcode(p[i], &code), WEFT_ERUNNING);
    char buf[WEFT_PROCESS_REPR_MAX];
    ck_assert_ptr_nonnull(strstr(weft_process_repr(p[i], buf, sizeof buf), " started"));
    ck_assert_int_eq(weft_process_join(p[i], 0.01), WEFT_ETIMEDOUT);
  }
  ck_assert_int_eq(weft_active_children(NULL, 0), MANY);
  expect_pidfds_held(count_pidfds() - base, MANY);
  ck_assert_int_eq(weft_process_terminate(p[0]), 0);
  ck_assert_int_eq(weft_process_kill(p[1]), 0);
  for (int i = 2; i < MANY; i++) release(pipes, i, (unsigned char)i);
  for (int i = 0; i < MANY; i++) {
    ck_assert_int_eq(weft_process_join(p[i], i % 2 ? WEFT_FOREVER : 30), 0);
    int code = 0;
    ck_assert_int_eq(weft_process_exitcode(p[i], &code), 0);
    ck_assert_int_eq(code, i == 0 ? -SIGTERM : i == 1 ? -SIGKILL : i);
    ck_assert(!weft_process_is_alive(p[i]));
  }
  ck_assert_int_eq(weft_active_children(NULL, 0), 0);
  ck_assert_int_eq(count_pidfds(), base);
  finish_waiting(p, pipes, MANY);
}
END_TEST

struct timed_join {
  weft_process p;
  double timeout;
  int rc;
};

static void *timed_join_thread(void *arg) {
  struct timed_join *j = arg;
  j->rc = weft_process_join(j->p, j->timeout);
  return NULL;
}

/* Whether the calling process holds a pidfd on pid. */
static bool holds_pidfd_on(pid_t pid) {
  DIR *d = opendir("/proc/self/fdinfo");
  ck_assert_ptr_nonnull(d);
  bool found = false;
  char path[300], line[128];
  for (struct dirent *e; !found && (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%s", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue;
    while (fgets(line, sizeof line, f) != NULL)
      if (strncmp(line, "Pid:", 4) == 0 && atoi(line + 4) == (int)pid) found = true;
    fclose(f);
  }
  closedir(d);
  return found;
}

/* A child asked about keeps its pidfd over children started before the
 * question, however long ago it was started itself. */
START_TEST(child_asked_about_keeps_its_pidfd) {
  static weft_process first[1], more[MANY];
  start_pausing(first, 1);
  pid_t pid = weft_process_pid(first[0]);
  start_pausing(more, 7); /* with first: as many as keep an idle pidfd */
  ck_assert(holds_pidfd_on(pid));
  ck_assert(weft_process_is_alive(first[0]));
  start_pausing(more + 7, 1);
  if (pidfds_numbered()) {
    ck_assert(holds_pidfd_on(pid));
    ck_assert(!holds_pidfd_on(weft_process_pid(more[0]))); /* the least recent now */
  }
  kill_pausing(first, 1);
  kill_pausing(more, 8);
  ck_assert_int_eq(count_pidfds(), 0);
}
END_TEST

/* Threads waiting for old children keep their pidfds while new starts
 * make others give theirs up. */
START_TEST(waits_on_old_children_outlast_new_starts) {
  static weft_process p[MANY], more[MANY];
  static int pipes[MANY][2];
  start_waiting(p, pipes, MANY);
  struct timed_join j[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    j[i] = (struct timed_join){.p = p[i], .timeout = i % 2 ? WEFT_FOREVER : 30, .rc = -1};
    ck_assert_int_eq(pthread_create(&t[i], NULL, timed_join_thread, &j[i]), 0);
  }
  nap_ms(50); /* most likely all waiting by now; the test holds either way */
  start_pausing(more, MANY);
  for (int i = 0; i < MANY; i++) release(pipes, i, (unsigned char)(10 + i));
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    ck_assert_int_eq(j[i].rc, 0);
  }
  for (int i = 0; i < MANY; i++) {
    ck_assert_int_eq(weft_process_join(p[i], 30), 0);
    int code = 0;
    ck_assert_int_eq(weft_process_exitcode(p[i], &code), 0);
    ck_assert_int_eq(code, 10 + i);
  }
  kill_pausing(more, MANY);
  finish_waiting(p, pipes, MANY);
}
END_TEST

/* A child of the test with the given pid, where the kernel lets the test
 * choose it (clone3's set_tid needs CAP_SYS_ADMIN or
 * CAP_CHECKPOINT_RESTORE), or -1. It waits to be killed, in raw system
 * calls: nothing of the C library or the sanitizers runs in it. */
static pid_t clone_with_pid(pid_t pid) {
  struct clone_args ca;
  memset(&ca, 0, sizeof ca);
  ca.exit_signal = SIGCHLD;
  ca.set_tid = (uint64_t)(uintptr_t)&pid;
  ca.set_tid_size = 1;
  long r = syscall(SYS_clone3, &ca, sizeof ca);
  if (r == 0)
    for (;;) syscall(SYS_pause);
  return r > 0 ? (pid_t)r : -1;
}

/* A child someone else reaped, whose pidfd weft had given up: its pid may
 * name another process by now, which weft must neither signal nor take for
 * the child. The first child is asked whether it lives, the second joined
 * first. */
START_TEST(old_child_reaped_elsewhere_whose_pid_was_reused) {
  static weft_process p[2], more[MANY];
  static int pipes[2][2];
  start_waiting(p, pipes, 2);
  start_pausing(more, MANY);
  pid_t impostor[2];
  for (int i = 0; i < 2; i++) {
    pid_t pid = weft_process_pid(p[i]);
    release(pipes, i, 5);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid); /* steals the status */
    impostor[i] = clone_with_pid(pid);
  }
  ck_assert(!weft_process_is_alive(p[0]));
  ck_assert_int_eq(weft_process_kill(p[0]), 0);
  ck_assert_int_eq(weft_process_join(p[1], WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_process_terminate(p[1]), 0);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(weft_process_join(p[i], 5), 0);
    int code = 0;
    ck_assert_int_eq(weft_process_exitcode(p[i], &code), WEFT_ECHILD);
    if (impostor[i] > 0) {
      ck_assert_int_eq(waitpid(impostor[i], NULL, WNOHANG), 0); /* alive, unsignalled */
      ck_assert_int_eq(kill(impostor[i], SIGKILL), 0);
      ck_assert_int_eq(waitpid(impostor[i], NULL, 0), impostor[i]);
    }
  }
  ck_assert_int_eq(weft_active_children(NULL, 0), MANY);
  finish_waiting(p, pipes, 2);
  kill_pausing(more, MANY);
}
END_TEST

#if defined(__x86_64__)
/* In a process forked for it: a thread whose tid is pid, made by clone3
 * and pausing in raw system calls (signals blocked, so none runs on it). */
static long clone_thread_pausing(struct clone_args *ca) {
  long r;
  __asm__ volatile("syscall\n\t"
                   "test %%rax, %%rax\n\t"
                   "jnz 1f\n\t"
                   "2: mov %[pause], %%eax\n\t"
                   "syscall\n\t"
                   "jmp 2b\n\t"
                   "1:"
                   : "=a"(r)
                   : "a"((long)SYS_clone3), "D"(ca), "S"(sizeof *ca), [pause] "i"(SYS_pause)
                   : "rcx", "r11", "memory");
  return r;
}

/* A process of the test's (not a weft child) with a thread whose tid is
 * pid, where the kernel lets the test choose it; its pid, or -1. */
static pid_t thread_with_tid(pid_t pid) {
  int fds[2];
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  pid_t helper = fork();
  ck_assert_int_ge(helper, 0);
  if (helper == 0) {
    static char stack[16384] __attribute__((aligned(16)));
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;
    ca.stack = (uint64_t)(uintptr_t)stack;
    ca.stack_size = sizeof stack;
    ca.set_tid = (uint64_t)(uintptr_t)&pid;
    ca.set_tid_size = 1;
    char ok = clone_thread_pausing(&ca) == pid;
    if (write(fds[1], &ok, 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(fds[1]);
  char ok = 0;
  ck_assert_int_eq(read(fds[0], &ok, 1), 1);
  close(fds[0]);
  if (ok) return helper;
  kill(helper, SIGKILL);
  waitpid(helper, NULL, 0);
  return -1;
}
#else
static pid_t thread_with_tid(pid_t pid) {
  (void)pid;
  return -1;
}
#endif

/* As above, with the pid now a thread's: no process has it, and the child
 * counts as reaped by someone else. */
START_TEST(old_child_whose_pid_is_now_a_thread) {
  static weft_process p[1], more[MANY];
  static int pipes[1][2];
  start_waiting(p, pipes, 1);
  start_pausing(more, MANY);
  pid_t pid = weft_process_pid(p[0]);
  release(pipes, 0, 5);
  ck_assert_int_eq(waitpid(pid, NULL, 0), pid); /* steals the status */
  pid_t helper = thread_with_tid(pid);
  ck_assert(!weft_process_is_alive(p[0]));
  ck_assert_int_eq(weft_process_kill(p[0]), 0);
  ck_assert_int_eq(weft_process_join(p[0], 5), 0);
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p[0], &code), WEFT_ECHILD);
  if (helper > 0) {
    ck_assert_int_eq(waitpid(helper, NULL, WNOHANG), 0); /* alive, unsignalled */
    ck_assert_int_eq(kill(helper, SIGKILL), 0);
    ck_assert_int_eq(waitpid(helper, NULL, 0), helper);
  }
  ck_assert_int_eq(weft_active_children(NULL, 0), MANY);
  finish_waiting(p, pipes, 1);
  kill_pausing(more, MANY);
}
END_TEST

/* With SIGCHLD ignored the kernel reaps every child at once: an old child
 * that ended is gone without a trace, and its status lost. */
START_TEST(old_child_reaped_by_the_kernel) {
  static weft_process p[1], more[MANY];
  static int pipes[1][2];
  signal(SIGCHLD, SIG_IGN);
  start_waiting(p, pipes, 1);
  start_pausing(more, MANY);
  release(pipes, 0, 5);
  ck_assert_int_eq(weft_process_join(p[0], WEFT_FOREVER), 0);
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p[0], &code), WEFT_ECHILD);
  signal(SIGCHLD, SIG_DFL);
  finish_waiting(p, pipes, 1);
  kill_pausing(more, MANY);
}
END_TEST

/* At the descriptor limit, children whose pidfds were given up are still
 * reached: a pidfd is opened for one in the room an idle one makes, as the
 * children started last hold theirs. */
START_TEST(old_children_reached_at_the_descriptor_limit) {
  static weft_process p[MANY];
  static int pipes[MANY][2];
  start_waiting(p, pipes, MANY);
  int base = count_fds();
  struct rlimit old, low;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  /* Every fd below a limit a little above those open taken by dups. */
  low = old;
  low.rlim_cur = (rlim_t)base + 64;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  int filler[128], nfill = 0;
  for (int fd; nfill < 128 && (fd = dup(pipes[0][1])) >= 0;) filler[nfill++] = fd;
  ck_assert_int_lt(nfill, 128);
  ck_assert_int_eq(dup(pipes[0][1]), -1); /* no fd left */
  ck_assert(weft_process_is_alive(p[0]));
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(p[1], &code), WEFT_ERUNNING);
  ck_assert_int_eq(weft_process_kill(p[2]), 0);
  ck_assert_int_eq(weft_process_join(p[2], 30), 0);
  ck_assert_int_eq(weft_process_exitcode(p[2], &code), 0);
  ck_assert_int_eq(code, -SIGKILL);
  for (int i = 3; i < MANY; i++) release(pipes, i, (unsigned char)i);
  release(pipes, 0, 0);
  release(pipes, 1, 1);
  for (int i = 0; i < MANY; i++) {
    ck_assert_int_eq(weft_process_join(p[i], i % 2 ? WEFT_FOREVER : 30), 0);
    ck_assert_int_eq(weft_process_exitcode(p[i], &code), 0);
    ck_assert_int_eq(code, i == 2 ? -SIGKILL : i);
  }
  ck_assert_int_eq(weft_active_children(NULL, 0), 0);
  for (int i = 0; i < nfill; i++) close(filler[i]);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  finish_waiting(p, pipes, MANY);
  ck_assert_int_eq(count_pidfds(), 0);
}
END_TEST

/* The fd of a pidfd given up is free for the program: a child started
 * afterwards keeps a pipe opened in its place, and holds no pidfd. */
static int check_fd_and_pidfds(void *arg) {
  int fd = *(int *)arg;
  if (fcntl(fd, F_GETFD) < 0) return 1;
  unsigned char c = 0;
  if (read(fd, &c, 1) != 1 || c != 42) return 2;
  return count_pidfds() == 0 ? 0 : 3;
}

START_TEST(fd_of_a_given_up_pidfd_survives_a_start) {
  static weft_process more[MANY];
  start_pausing(more, MANY);
  int fds[2];
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0); /* the lowest fds: likely old pidfds' */
  ck_assert_int_eq(write(fds[1], "*", 1), 1);
  weft_process c = weft_process_new(check_fd_and_pidfds, .arg = &fds[0]);
  ck_assert_int_eq(weft_process_start(c), 0);
  ck_assert_int_eq(weft_process_join(c, 30), 0);
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(c, &code), 0);
  ck_assert_int_eq(code, 0);
  ck_assert_int_eq(weft_process_close(c), 0);
  ck_assert_int_ne(fcntl(fds[0], F_GETFD), -1);
  close(fds[0]);
  close(fds[1]);
  kill_pausing(more, MANY);
  ck_assert_int_eq(count_pidfds(), 0);
}
END_TEST

/* A child with many children of its own, while its parent has many: the
 * grandchildren answer every call, and the child ends holding no pidfd. */
static int many_grandchildren(void *arg) {
  (void)arg;
  weft_process g[MANY];
  int pipes[MANY][2];
  if (count_pidfds() != 0) return 1;
  for (int i = 0; i < MANY; i++) {
    if (pipe2(pipes[i], O_CLOEXEC) != 0) return 2;
    g[i] = weft_process_new(wait_byte, .arg = &pipes[i][0]);
    if (weft_process_start(g[i]) != 0) return 3;
  }
  for (int i = 0; i < MANY; i++)
    if (!weft_process_is_alive(g[i])) return 4;
  if (weft_process_kill(g[0]) != 0) return 5;
  for (int i = 1; i < MANY; i++)
    if (write(pipes[i][1], &(unsigned char){(unsigned char)i}, 1) != 1) return 6;
  for (int i = 0; i < MANY; i++) {
    int code = -1;
    if (weft_process_join(g[i], 30) != 0 || weft_process_exitcode(g[i], &code) != 0) return 7;
    if (code != (i == 0 ? -SIGKILL : i)) return 8;
    if (weft_process_close(g[i]) != 0) return 9;
    close(pipes[i][0]);
    close(pipes[i][1]);
  }
  return count_pidfds() == 0 ? 0 : 10;
}

START_TEST(grandchildren_past_the_pidfds_kept) {
  static weft_process more[MANY];
  start_pausing(more, MANY);
  weft_process c = weft_process_new(many_grandchildren);
  ck_assert_int_eq(weft_process_start(c), 0);
  ck_assert_int_eq(weft_process_join(c, 60), 0);
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(c, &code), 0);
  ck_assert_int_eq(code, 0);
  ck_assert_int_eq(weft_process_close(c), 0);
  kill_pausing(more, MANY);
  ck_assert_int_eq(count_pidfds(), 0);
}
END_TEST

/* Threads start, poll, signal and join children at once, each call making
 * others' children give up or open pidfds: every child is reached, and no
 * descriptor is left. */
#define CHURN_THREADS 4
#define CHURN_EACH 8

struct churn {
  int index;
  int failed; /* 0, or the step that went wrong */
};

static void *churn_thread(void *arg) {
  struct churn *c = arg;
  weft_process p[CHURN_EACH];
  int pipes[CHURN_EACH][2];
  for (int round = 0; round < 3 && c->failed == 0; round++) {
    for (int i = 0; i < CHURN_EACH; i++) {
      if (pipe2(pipes[i], O_CLOEXEC) != 0) { c->failed = 1; return NULL; }
      p[i] = weft_process_new(wait_byte, .arg = &pipes[i][0]);
      if (weft_process_start(p[i]) != 0) { c->failed = 2; return NULL; }
    }
    for (int i = 0; i < CHURN_EACH; i++) {
      int code;
      if (!weft_process_is_alive(p[i])) c->failed = 3;
      if (weft_process_exitcode(p[i], &code) != WEFT_ERUNNING) c->failed = 4;
      if (weft_process_join(p[i], 0.001) != WEFT_ETIMEDOUT) c->failed = 5;
    }
    for (int i = 0; i < CHURN_EACH; i++) {
      if (i % 3 == 0) {
        if (weft_process_kill(p[i]) != 0) c->failed = 6;
      } else if (write(pipes[i][1], &(unsigned char){(unsigned char)(c->index * 10 + i)}, 1) != 1) {
        c->failed = 7;
      }
    }
    for (int i = 0; i < CHURN_EACH; i++) {
      int code = -1;
      if (weft_process_join(p[i], i % 2 ? WEFT_FOREVER : 30) != 0) c->failed = 8;
      if (weft_process_exitcode(p[i], &code) != 0) c->failed = 9;
      if (code != (i % 3 == 0 ? -SIGKILL : c->index * 10 + i)) c->failed = 10;
      if (weft_process_close(p[i]) != 0) c->failed = 11;
      close(pipes[i][0]);
      close(pipes[i][1]);
    }
  }
  return NULL;
}

START_TEST(threads_churn_many_children) {
  static weft_process more[MANY];
  int base = count_fds();
  start_pausing(more, MANY);
  pthread_t t[CHURN_THREADS];
  struct churn c[CHURN_THREADS];
  for (int i = 0; i < CHURN_THREADS; i++) {
    c[i] = (struct churn){.index = i + 1};
    ck_assert_int_eq(pthread_create(&t[i], NULL, churn_thread, &c[i]), 0);
  }
  for (int i = 0; i < MANY; i++) ck_assert(weft_process_is_alive(more[i]));
  for (int i = 0; i < CHURN_THREADS; i++) {
    pthread_join(t[i], NULL);
    ck_assert_msg(c[i].failed == 0, "thread %d failed at step %d", i, c[i].failed);
  }
  kill_pausing(more, MANY);
  ck_assert_int_eq(count_pidfds(), 0);
  ck_assert_int_eq(count_fds(), base);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("process");
  TCase *tc = weft_tcase("lifecycle", 20);
  tcase_add_test(tc, cpu_count_follows_affinity);
  tcase_add_test(tc, cpu_count_respects_cgroup_quota);
  tcase_add_test(tc, exitcode_is_target_return);
  tcase_add_test(tc, exitcode_of_exit_call);
  tcase_add_test(tc, exitcode_of_self_kill_is_minus_9);
  tcase_add_test(tc, terminate_and_kill);
  tcase_add_test(tc, join_timeout_and_running_state);
  tcase_add_test(tc, join_not_fooled_by_inherited_fds);
  tcase_add_test(tc, many_threads_join_one_process);
  tcase_add_test(tc, status_reaped_elsewhere);
  suite_add_tcase(s, tc);

  tc = weft_tcase("identity", 20);
  tcase_add_test(tc, default_names_follow_python);
  tcase_add_test(tc, child_sees_itself_and_its_parent);
  tcase_add_test(tc, repr_states);
  tcase_add_test(tc, active_children_lists_and_reaps);
  tcase_add_test(tc, active_children_exact_after_peak);
  suite_add_tcase(s, tc);

  tc = weft_tcase("exit_rules", 20);
  tcase_add_test(tc, output_before_start_appears_once_pipe);
  tcase_add_test(tc, output_before_start_appears_once_file);
  tcase_add_test(tc, parent_atexit_never_runs_in_child);
  tcase_add_test(tc, main_return_waits_for_nondaemon_child);
  tcase_add_test(tc, daemon_child_gone_after_exit);
  tcase_add_test(tc, exit_rules_reach_many_children);
  tcase_add_test(tc, daemon_ignoring_sigterm_is_killed_after_grace);
  tcase_add_test(tc, daemon_dies_when_parent_is_killed);
  tcase_add_test(tc, daemon_started_from_thread_survives_thread_dies_with_parent);
  tcase_add_test(tc, child_waits_for_its_own_children);
  tcase_add_test(tc, child_exit_terminates_its_daemons);
  suite_add_tcase(s, tc);

  tc = weft_tcase("misuse", 20);
  tcase_add_test(tc, misuse_null_target_and_long_name);
  tcase_add_test(tc, misuse_before_start);
  tcase_add_test(tc, misuse_start_twice_and_daemon_after_start);
  tcase_add_test(tc, misuse_join_self);
  tcase_add_test(tc, misuse_join_from_non_parent);
  tcase_add_test(tc, misuse_calls_after_close);
  tcase_add_test(tc, daemon_may_start_only_daemons);
  tcase_add_test(tc, fork_failure_leaves_nothing_behind);
  tcase_add_test(tc, daemon_grace_rejects_nan);
  suite_add_tcase(s, tc);

  tc = weft_tcase("sibling_costs", 120);
  tcase_add_test(tc, start_cost_does_not_grow_with_siblings);
  suite_add_tcase(s, tc);

  tc = weft_tcase("many_children", 60);
  tcase_add_test(tc, old_children_answer_every_call);
  tcase_add_test(tc, child_asked_about_keeps_its_pidfd);
  tcase_add_test(tc, waits_on_old_children_outlast_new_starts);
  tcase_add_test(tc, old_child_reaped_elsewhere_whose_pid_was_reused);
  tcase_add_test(tc, old_child_reaped_by_the_kernel);
  tcase_add_test(tc, old_child_whose_pid_is_now_a_thread);
  tcase_add_test(tc, old_children_reached_at_the_descriptor_limit);
  tcase_add_test(tc, fd_of_a_given_up_pidfd_survives_a_start);
  tcase_add_test(tc, grandchildren_past_the_pidfds_kept);
  tcase_add_test(tc, threads_churn_many_children);
  suite_add_tcase(s, tc);

  tc = weft_tcase("stress", 120);
  tcase_add_test(tc, start_join_cycles_leave_no_zombie_or_fd);
  tcase_add_test(tc, fork_while_other_threads_use_weft);
  suite_add_tcase(s, tc);
  return s;
}
