/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
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

double test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Several tests start threads in a child forked from a process with
 * threads, which ThreadSanitizer refuses by default; weft promises that it
 * works, so let it go on (TSAN_OPTIONS given by the caller still apply). */
#if defined(__SANITIZE_THREAD__)
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "die_after_fork=0"; }
#endif

/* Each test runs in its own process; making it a subreaper means orphaned
 * grandchildren come back to it instead of to PID 1, which may never reap. */
static void per_test_setup(void) {
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  /* Check's runner handles SIGTERM/SIGINT by killing the test's process
   * group; a test's children would inherit that handler, so that a child
   * terminated on purpose would kill the test too. The runner keeps its own
   * handler and still enforces the timeout. */
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
}

TCase *weft_tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);
  tcase_set_timeout(tc, timeout);
  tcase_add_checked_fixture(tc, per_test_setup, NULL);
  return tc;
}

pid_t helper_spawn(const char *scenario, int *out_fd) {
  int fds[2];
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execl(WEFT_HELPER, WEFT_HELPER, scenario, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  *out_fd = fds[0];
  return pid;
}

int helper_run(const char *scenario, char *out, size_t size, double timeout) {
  int fd;
  pid_t pid = helper_spawn(scenario, &fd);
  read_all(fd, out, size, timeout);
  int status = wait_status(pid);
  close(fd);
  return status;
}

size_t read_all(int fd, char *buf, size_t size, double timeout) {
  size_t len = 0;
  double end = test_now() + timeout;
  while (len + 1 < size) {
    double left = end - test_now();
    if (left <= 0) break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(left * 1000) + 1) <= 0) continue;
    ssize_t n = read(fd, buf + len, size - 1 - len);
    if (n <= 0) break;
    len += (size_t)n;
  }
  buf[len] = '\0';
  return len;
}

bool read_until(int fd, char *buf, size_t size, const char *needle, double timeout) {
  size_t len = 0;
  double end = test_now() + timeout;
  buf[0] = '\0';
  for (;;) {
    const char *hit = strstr(buf, needle);
    if (hit != NULL && strchr(hit, '\n') != NULL) return true;
    double left = end - test_now();
    if (left <= 0 || len + 1 >= size) return false;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(left * 1000) + 1) <= 0) continue;
    ssize_t n = read(fd, buf + len, size - 1 - len);
    if (n <= 0) return false;
    len += (size_t)n;
    buf[len] = '\0';
  }
}

size_t read_now(int fd, char *buf, size_t size) {
  size_t len = 0;
  while (len + 1 < size) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0) break;
    ssize_t n = read(fd, buf + len, size - 1 - len);
    if (n <= 0) break;
    len += (size_t)n;
  }
  buf[len] = '\0';
  return len;
}

int wait_status(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

bool pid_gone(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return true;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *paren = strrchr(buf, ')'); /* the name may hold spaces */
  return paren == NULL || paren[1] == '\0' || paren[2] == 'Z' || paren[2] == 'X';
}

bool wait_pid_gone(pid_t pid, double timeout) {
  double end = test_now() + timeout;
  while (!pid_gone(pid)) {
    if (test_now() > end) return false;
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return true;
}

int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory's own fd */
}

int count_children(void) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)gettid());
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  int count = 0;
  for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) count++;
  return count;
}

bool block_fork_in_this_thread(void) {
  /* clone3 answers ENOSYS so glibc falls back to clone, whose flags can be
   * read: a clone without CLONE_VM is a fork and fails with EAGAIN, while
   * threads (and the sanitizers' CLONE_VM helpers) still work. */
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
#ifdef __NR_fork
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fork, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
#endif
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_VM, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
  };
  struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

int count_substr(const char *haystack, const char *needle) {
  int n = 0;
  for (const char *p = haystack; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

void nap(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

void nap_ms(int ms) {
  struct timespec ts = {0, (long)ms * 1000 * 1000};
  nanosleep(&ts, NULL);
}

bool wait_ge(const int *p, int v, double timeout) {
  double end = test_now() + timeout;
  while (ld(p) < v) {
    if (test_now() > end) return false;
    nap(0.001);
  }
  return true;
}

pthread_t spawn(void *(*fn)(void *), void *arg) {
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, fn, arg), 0);
  return t;
}

void join(pthread_t t) { ck_assert_int_eq(pthread_join(t, NULL), 0); }

char stat_state(const char *path) {
  char buf[512];
  FILE *f = fopen(path, "r");
  if (f == NULL) return '?';
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *paren = strrchr(buf, ')');
  return paren != NULL && paren[1] != '\0' && paren[2] != '\0' ? paren[2] : '?';
}

char thread_state(pid_t tid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
  return stat_state(path);
}

char process_state(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  return stat_state(path);
}

weft_process start_process(weft_process_target target, void *arg) {
  weft_process p = weft_process_new(target, .arg = arg);
  ck_assert_uint_ne(p.id, 0);
  ck_assert_int_eq(weft_process_start(p), 0);
  return p;
}

int finish_process(weft_process p, double timeout) {
  int code = -1000;
  if (weft_process_join(p, timeout) != 0) {
    weft_process_kill(p);
    kill(weft_process_pid(p), SIGCONT);
    weft_process_join(p, WEFT_FOREVER);
    weft_process_close(p);
    return 1000;
  }
  weft_process_exitcode(p, &code);
  weft_process_close(p);
  return code;
}

void *shared(size_t size) {
  void *p = weft_shared_alloc(size);
  ck_assert_ptr_nonnull(p);
  return p;
}

int main(void) {
  Suite *s = weft_test_suite();
  const char *name = program_invocation_short_name;
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  int run = srunner_ntests_run(sr);
  srunner_free(sr);
  printf("%s: %d passed, %d failed\n", name, run - failed, failed);
  return failed == 0 ? 0 : 1;
}
