/* SPDX-License-Identifier: MIT */
/* Tests of the start methods (fork and spawn): what a child sees of its
 * parent, how its arguments travel, that the Process API holds alike
 * (names, parent, exit codes, terminate, join timeouts, daemon children),
 * that a spawned child inherits no descriptor and no lock, and the misuse
 * errors. A spawned child cannot see the test's memory: it reports through
 * its exit code, each check a code of its own. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static int global = 1;

static int return_global(void *arg) {
  (void)arg;
  return global;
}

START_TEST(spawn_child_sees_fresh_globals_fork_child_the_parents) {
  global = 42;
  weft_process f = weft_process_new(return_global, .start_method = "fork");
  weft_process s = weft_process_new(return_global, .start_method = "spawn");
  ck_assert_uint_ne(s.id, 0);
  ck_assert_int_eq(weft_process_start(f), 0);
  ck_assert_int_eq(weft_process_start(s), 0);
  ck_assert_int_eq(finish_process(f, 20), 42);
  ck_assert_int_eq(finish_process(s, 20), 1);
  global = 1;
}
END_TEST

struct who {
  pid_t parent_pid;
  char name[32];
  char parent_name[32];
  int bytes[64];
};

/* Checks in the child what it should know of itself; 0 when all holds. */
static int check_who(void *arg) {
  const struct who *w = arg;
  if (getppid() != w->parent_pid) return 10;
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

START_TEST(args_names_and_parent_reach_a_child_by_either_method) {
  const char *methods[] = {"fork", "spawn"};
  for (int m = 0; m < 2; m++) {
    struct who w = {.parent_pid = getpid()};
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

START_TEST(exit_codes_terminate_and_join_timeouts_under_spawn) {
  int three = 3;
  weft_process p = weft_process_new(exit_with, .args = &three, .args_size = sizeof three,
                                    .start_method = "spawn");
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 20), 0);
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 3);
  ck_assert_int_eq(weft_process_close(p), 0);

  p = weft_process_new(kill_self, .start_method = "spawn");
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 20), -SIGKILL);

  p = weft_process_new(sleep_long, .start_method = "spawn");
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
  ck_assert_int_eq(count_children(), 0); /* no zombie */
}
END_TEST

/* ---- a spawned child inherits no descriptor ---- */

static int fd_is_closed(void *arg) {
  int fd = *(const int *)arg;
  return fcntl(fd, F_GETFD) == -1 ? 0 : 20;
}

START_TEST(spawned_child_inherits_no_descriptor) {
  int fd = dup(1); /* not close-on-exec: a fork+exec would pass it on */
  ck_assert_int_ge(fd, 0);
  int before = count_fds();
  weft_process p = weft_process_new(fd_is_closed, .args = &fd, .args_size = sizeof fd,
                                    .start_method = "spawn");
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 20), 0);
  ck_assert_int_eq(count_fds(), before); /* and the parent leaked none either */
  close(fd);
}
END_TEST

/* ---- a spawned child starts its own ---- */

static int spawn_grandchild(void *arg) {
  (void)arg;
  int five = 5;
  weft_process g = weft_process_new(exit_with, .args = &five, .args_size = sizeof five,
                                    .start_method = "spawn");
  if (weft_process_start(g) != 0) return 30;
  if (strcmp(weft_process_name(g), "Process-1:1") != 0 &&
      strncmp(weft_process_name(g), "Process-", 8) != 0)
    return 31;
  if (weft_process_join(g, 20) != 0) return 32;
  int code = 0;
  weft_process_exitcode(g, &code);
  return code;
}

START_TEST(spawned_child_starts_children_of_its_own) {
  weft_process p = weft_process_new(spawn_grandchild, .start_method = "spawn");
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(finish_process(p, 30), 5);
}
END_TEST

/* ---- a daemon spawned child dies with its parent ---- */

struct family {
  int daemon_pid;
};

static int daemon_target(void *arg) {
  (void)arg;
  pause();
  return 0;
}

static int start_daemon_then_wait(void *arg) {
  struct family *f = arg;
  weft_process d = weft_process_new(daemon_target, .daemon = true, .start_method = "spawn");
  if (weft_process_start(d) != 0) return 1;
  st(&f->daemon_pid, (int)weft_process_pid(d));
  pause();
  return 0;
}

START_TEST(daemon_spawned_child_dies_when_its_parent_is_killed) {
  struct family *f = shared(sizeof *f);
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

static void *hold_and_churn(void *arg) {
  struct busy *b = arg;
  pthread_mutex_lock(&held);
  while (!ld(&b->stop)) {
    void *p = malloc(64);
    free(p);
  }
  pthread_mutex_unlock(&held);
  return NULL;
}

START_TEST(spawned_children_never_inherit_a_held_lock) {
  struct busy b = {0};
  pthread_t t = spawn(hold_and_churn, &b);
  for (int i = 0; i < 100 / SLOW; i++) {
    weft_process p = weft_process_new(take_held_mutex, .start_method = "spawn");
    ck_assert_int_eq(weft_process_start(p), 0);
    ck_assert_int_eq(finish_process(p, 20), 0);
  }
  st(&b.stop, 1);
  join(t);
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
  ck_assert_int_eq(weft_set_start_method("forkserver"), WEFT_ENOSYS);
  ck_assert_str_eq(weft_get_start_method(), "fork");

  weft_process p = weft_process_new(return_global, .start_method = "thread");
  ck_assert_uint_eq(p.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  int x = 1;
  p = weft_process_new(exit_with, .arg = &x, .start_method = "spawn");
  ck_assert_uint_eq(p.id, 0);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), ".args"));
  p = weft_process_new(exit_with, .arg = &x, .args = &x, .args_size = sizeof x);
  ck_assert_uint_eq(p.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  p = weft_process_new(exit_with, .args_size = 4);
  ck_assert_uint_eq(p.id, 0);
  /* A target that lies in no loaded object cannot be named for a fresh
   * image: refused in the parent, no child made. */
  void *heap = malloc(64);
  p = weft_process_new((weft_process_target)heap, .start_method = "spawn");
  ck_assert_uint_eq(p.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "no loaded program or library"));
  free(heap);
  ck_assert_int_eq(count_children(), 0);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("test_start_methods");
  TCase *tc = weft_tcase("start_methods", 60);
  tcase_add_test(tc, spawn_child_sees_fresh_globals_fork_child_the_parents);
  tcase_add_test(tc, args_names_and_parent_reach_a_child_by_either_method);
  tcase_add_test(tc, exit_codes_terminate_and_join_timeouts_under_spawn);
  tcase_add_test(tc, spawned_child_inherits_no_descriptor);
  tcase_add_test(tc, spawned_child_starts_children_of_its_own);
  tcase_add_test(tc, daemon_spawned_child_dies_when_its_parent_is_killed);
  tcase_add_test(tc, spawned_children_never_inherit_a_held_lock);
  tcase_add_test(tc, default_start_method_and_environment);
  tcase_add_test(tc, misuse_of_start_methods);
  suite_add_tcase(s, tc);
  return s;
}
