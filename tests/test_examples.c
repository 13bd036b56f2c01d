/* SPDX-License-Identifier: MIT */
/* Tests of the lesson programs in examples/: each one is run as its own
 * program, with stdout and stderr captured through a pipe, and its output is
 * compared with what the tutorial (§2.1-§2.4, §3.1-§3.6, §4) prints, or for
 * lesson5_ipc (after §4) with what its Python twin would; the §3.7 lessons,
 * where the tutorial's program hangs, with weft's reports and dumps. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define OUT_MAX 65536

/* ---- running a lesson ---- */

struct run {
  pid_t pid;         /* the program's pid */
  int status;        /* its raw wait status */
  double eof_after;  /* seconds from its exit until the pipe reached EOF */
  bool eof;          /* whether the pipe reached EOF at all */
  char out[OUT_MAX]; /* stdout and stderr, interleaved as written */
};

/* Runs WEFT_EXAMPLES/<program> with stdout and stderr on one pipe. Waits (at
 * most 12 s) for it to exit, then reads the pipe until EOF, that is until
 * every writer, the program's children included, has closed it. Fails the
 * test if the program does not exit in time. */
static void run_program(const char *program, struct run *r) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", WEFT_EXAMPLES, program);
  ck_assert_msg(access(path, X_OK) == 0, "%s is not an executable", path);

  int fds[2];
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int in = open("/dev/null", O_RDONLY);
    if (in >= 0) dup2(in, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execl(path, path, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  r->pid = pid;

  /* The lessons print little (far below a pipe's capacity), so they never
   * block on the pipe while the test waits for them to exit. */
  if (!wait_pid_gone(pid, 30.0)) {
    kill(pid, SIGKILL);
    wait_status(pid);
    size_t n = read_now(fds[0], r->out, sizeof r->out);
    (void)n;
    close(fds[0]);
    ck_abort_msg("%s did not exit within 30 s; output so far:\n%s", program, r->out);
  }
  r->status = wait_status(pid);

  double t0 = test_now();
  size_t len = read_all(fds[0], r->out, sizeof r->out, 2.0);
  r->eof_after = test_now() - t0;
  /* read_all stops at EOF, at the deadline, or with a full buffer: tell EOF
   * apart by asking once more without waiting. */
  char extra[16];
  ssize_t more = read(fds[0], extra, sizeof extra);
  r->eof = more == 0 && len + 1 < sizeof r->out;
  close(fds[0]);
}

static void assert_exit_zero(const char *program, const struct run *r) {
  ck_assert_msg(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0,
                "%s: wait status 0x%x, expected exit 0; output:\n%s", program,
                (unsigned)r->status, r->out);
}

/* Splits r->out into lines (in place, into lines[]); returns their number.
 * Fails if the output does not end with a newline. */
static int split_lines(char *text, char **lines, int max, const char *program) {
  size_t len = strlen(text);
  ck_assert_msg(len == 0 || text[len - 1] == '\n', "%s: output does not end with a newline:\n%s",
                program, text);
  int n = 0;
  for (char *p = text; *p != '\0';) {
    char *nl = strchr(p, '\n');
    ck_assert_msg(n < max, "%s: more than %d lines", program, max);
    *nl = '\0';
    lines[n++] = p;
    p = nl + 1;
  }
  return n;
}

/* Whether some line of text starts with prefix. */
static bool has_line_starting(const char *text, const char *prefix) {
  size_t plen = strlen(prefix);
  for (const char *p = text; p != NULL && *p != '\0';) {
    if (strncmp(p, prefix, plen) == 0) return true;
    p = strchr(p, '\n');
    if (p != NULL) p++;
  }
  return false;
}

/* ---- §2.1 two children dance and sing ---- */

START_TEST(lesson2_1_processes) {
  static struct run r;
  run_program("lesson2_1_processes", &r);
  assert_exit_zero("lesson2_1_processes", &r);
  ck_assert_msg(r.eof, "lesson2_1_processes: pipe still open after exit; output:\n%s", r.out);
  ck_assert_msg(count_children() == 0, "lesson2_1_processes left children behind");

  static char copy[OUT_MAX];
  strcpy(copy, r.out);
  char *lines[64];
  int n = split_lines(copy, lines, 64, "lesson2_1_processes");
  int dance = 0, sing = 0;
  for (int i = 0; i < n; i++) {
    if (strcmp(lines[i], "跳舞中...") == 0)
      dance++;
    else if (strcmp(lines[i], "唱歌中...") == 0)
      sing++;
    else
      ck_abort_msg("lesson2_1_processes: unexpected line \"%s\"; output:\n%s", lines[i], r.out);
  }
  ck_assert_msg(dance == 5 && sing == 5,
                "lesson2_1_processes: %d dance and %d sing lines, expected 5 and 5; output:\n%s",
                dance, sing, r.out);
}
END_TEST

/* ---- §2.2 pids, current_process(), a child that kills itself ---- */

START_TEST(lesson2_2_pid) {
  static struct run r;
  run_program("lesson2_2_pid", &r);
  assert_exit_zero("lesson2_2_pid", &r);
  ck_assert_msg(r.eof, "lesson2_2_pid: pipe still open after exit; output:\n%s", r.out);

  static char copy[OUT_MAX];
  strcpy(copy, r.out);
  char *lines[64];
  int n = split_lines(copy, lines, 64, "lesson2_2_pid");
  ck_assert_msg(n == 7, "lesson2_2_pid: %d lines, expected 7; output:\n%s", n, r.out);

  char want[512];
  int pid = (int)r.pid;
  snprintf(want, sizeof want, "main: %d", pid);
  ck_assert_msg(strcmp(lines[0], want) == 0, "lesson2_2_pid: line 1 is \"%s\", expected \"%s\"; output:\n%s",
                lines[0], want, r.out);
  ck_assert_msg(strcmp(lines[1], "main: <_MainProcess name='MainProcess' parent=None started>") == 0,
                "lesson2_2_pid: line 2 is \"%s\"; output:\n%s", lines[1], r.out);

  int child = 0;
  char tail = '\0';
  ck_assert_msg(sscanf(lines[2], "dance: %d%c", &child, &tail) == 1 && child > 0 && child != pid,
                "lesson2_2_pid: line 3 is \"%s\", expected \"dance: <child pid>\"; output:\n%s",
                lines[2], r.out);
  snprintf(want, sizeof want, "dance: <Process name='myprocess1' parent=%d started>", pid);
  ck_assert_msg(strcmp(lines[3], want) == 0, "lesson2_2_pid: line 4 is \"%s\", expected \"%s\"; output:\n%s",
                lines[3], want, r.out);
  ck_assert_msg(strcmp(lines[4], "跳舞中...0") == 0,
                "lesson2_2_pid: line 5 is \"%s\", expected \"跳舞中...0\"; output:\n%s", lines[4], r.out);
  ck_assert_msg(count_substr(r.out, "跳舞中...") == 1,
                "lesson2_2_pid: the child went on dancing after SIGKILL; output:\n%s", r.out);
  ck_assert_msg(strcmp(lines[5], "main: myprocess1 exitcode = -9") == 0,
                "lesson2_2_pid: line 6 is \"%s\"; output:\n%s", lines[5], r.out);
  snprintf(want, sizeof want,
           "main: <Process name='myprocess1' pid=%d parent=%d stopped exitcode=-SIGKILL>", child, pid);
  ck_assert_msg(strcmp(lines[6], want) == 0, "lesson2_2_pid: line 7 is \"%s\", expected \"%s\"; output:\n%s",
                lines[6], want, r.out);
}
END_TEST

/* ---- §2.3 passing arguments ---- */

START_TEST(lesson2_3_args) {
  static struct run r;
  run_program("lesson2_3_args", &r);
  assert_exit_zero("lesson2_3_args", &r);
  ck_assert_msg(r.eof, "lesson2_3_args: pipe still open after exit; output:\n%s", r.out);
  ck_assert_msg(count_children() == 0, "lesson2_3_args left children behind");
  const char *want =
      "任务执行中..\n任务执行中..\n任务执行中..\n任务执行中..\n任务执行中..\n任务执行完成\n";
  ck_assert_msg(strcmp(r.out, want) == 0, "lesson2_3_args: output is\n%s\nexpected\n%s", r.out, want);
}
END_TEST

/* ---- §2.4 a daemon child dies with the main process ---- */

START_TEST(lesson2_4_daemon) {
  static struct run r;
  run_program("lesson2_4_daemon", &r);
  assert_exit_zero("lesson2_4_daemon", &r);
  /* The daemon child holds the pipe too: EOF right after the program's exit
   * means the daemon was gone by then (it would print for 2 s otherwise). */
  ck_assert_msg(r.eof && r.eof_after < 1.5,
                "lesson2_4_daemon: pipe reached EOF %s %.2f s after exit (daemon still alive?); output:\n%s",
                r.eof ? "only" : "not even", r.eof_after, r.out);
  ck_assert_msg(count_children() == 0, "lesson2_4_daemon: the daemon child was left behind");

  static char copy[OUT_MAX];
  strcpy(copy, r.out);
  char *lines[64];
  int n = split_lines(copy, lines, 64, "lesson2_4_daemon");
  ck_assert_msg(n >= 1 && strcmp(lines[n - 1], "over") == 0,
                "lesson2_4_daemon: output does not end with \"over\"; output:\n%s", r.out);
  for (int i = 0; i < n - 1; i++)
    ck_assert_msg(strcmp(lines[i], "任务执行中...") == 0,
                  "lesson2_4_daemon: unexpected line \"%s\" (line %d); output:\n%s", lines[i], i + 1, r.out);
  /* 0.5 s at one line per 0.2 s: 3 lines, give or take scheduling. */
  ck_assert_msg(n - 1 >= 1 && n - 1 <= 4,
                "lesson2_4_daemon: %d task lines before \"over\", expected 1 to 4; output:\n%s", n - 1,
                r.out);
}
END_TEST


/* ---- §3 threads ---- */

/* Whether line is prefix followed by a thread repr "<Thread(NAME, started N)>". */
static bool is_thread_line(const char *line, const char *prefix, const char *type,
                           const char *name) {
  char want[256];
  snprintf(want, sizeof want, "%s<%s(%s, started ", prefix, type, name);
  size_t n = strlen(want);
  if (strncmp(line, want, n) != 0) return false;
  const char *p = line + n;
  if (*p < '1' || *p > '9') return false;
  while (*p >= '0' && *p <= '9') p++;
  return strcmp(p, ")>") == 0;
}

START_TEST(lesson3_1_threads) {
  static struct run r;
  run_program("lesson3_1_threads", &r);
  assert_exit_zero("lesson3_1_threads", &r);
  static char copy[OUT_MAX];
  strcpy(copy, r.out);
  char *lines[32];
  int n = split_lines(copy, lines, 32, "lesson3_1_threads");
  ck_assert_msg(n == 9, "lesson3_1_threads: %d lines, expected 9; output:\n%s", n, r.out);
  ck_assert_msg(is_thread_line(lines[0], "当前执行的线程为： ", "_MainThread", "MainThread"),
                "lesson3_1_threads: first line is \"%s\"", lines[0]);
  int sing = 0, dance = 0, sing_intro = 0, dance_intro = 0;
  for (int i = 1; i < n; i++) {
    char want[64];
    snprintf(want, sizeof want, "正在唱歌...%d", sing);
    if (strcmp(lines[i], want) == 0) {
      ck_assert_msg(sing_intro, "lesson3_1_threads: sing line before its intro:\n%s", r.out);
      sing++;
      continue;
    }
    snprintf(want, sizeof want, "正在跳舞...%d", dance);
    if (strcmp(lines[i], want) == 0) {
      ck_assert_msg(dance_intro, "lesson3_1_threads: dance line before its intro:\n%s", r.out);
      dance++;
      continue;
    }
    if (is_thread_line(lines[i], "sing当前执行的线程为： ", "Thread", "Thread-1 (sing)"))
      sing_intro++;
    else if (is_thread_line(lines[i], "dance当前执行的线程为： ", "Thread", "Thread-2 (dance)"))
      dance_intro++;
    else
      ck_abort_msg("lesson3_1_threads: unexpected line \"%s\"; output:\n%s", lines[i], r.out);
  }
  ck_assert_msg(sing == 3 && dance == 3 && sing_intro == 1 && dance_intro == 1,
                "lesson3_1_threads: output:\n%s", r.out);
}
END_TEST

START_TEST(lesson3_3_daemon_thread) {
  static struct run r;
  run_program("lesson3_3_daemon_thread", &r);
  assert_exit_zero("lesson3_3_daemon_thread", &r);
  ck_assert_msg(strcmp(r.out, "test: 0\ntest: 1\nover\n") == 0,
                "lesson3_3_daemon_thread: output is\n%s", r.out);
}
END_TEST

START_TEST(lesson3_4_shared_globals) {
  static struct run r;
  run_program("lesson3_4_shared_globals", &r);
  assert_exit_zero("lesson3_4_shared_globals", &r);
  static char copy[OUT_MAX];
  strcpy(copy, r.out);
  char *lines[16];
  int n = split_lines(copy, lines, 16, "lesson3_4_shared_globals");
  ck_assert_msg(n == 4, "lesson3_4_shared_globals: output:\n%s", r.out);
  ck_assert(is_thread_line(lines[0], "追加的线程： ", "Thread", "Thread-1 (add_data)"));
  ck_assert_str_eq(lines[1], "追加的线程： [0, 1, 2, 3, 4]");
  ck_assert(is_thread_line(lines[2], "读取的线程： ", "Thread", "Thread-2 (read_data)"));
  ck_assert_str_eq(lines[3], "读取的线程： [0, 1, 2, 3, 4]");
}
END_TEST

START_TEST(lesson3_5_lost_updates) {
  static struct run r;
  run_program("lesson3_5_lost_updates", &r);
  assert_exit_zero("lesson3_5_lost_updates", &r);
  int total = -1, lost = -1;
  ck_assert_msg(sscanf(r.out, "g_num: %d (2000000 expected, %d updates lost)\n", &total, &lost) == 2,
                "lesson3_5_lost_updates: output is\n%s", r.out);
  /* A stale store can undo any number of the other thread's updates, so
   * only the bounds are certain. */
  ck_assert_int_gt(total, 0);
  ck_assert_int_le(total, 2000000);
  ck_assert_int_eq(total + lost, 2000000);
}
END_TEST

START_TEST(lesson3_6_mutex) {
  static struct run r;
  run_program("lesson3_6_mutex", &r);
  assert_exit_zero("lesson3_6_mutex", &r);
  /* The first thread to get the lock prints 1000000, the other 2000000;
   * then the contention table: the one lock, taken once by each thread,
   * waited for by the second at most once. */
  const char *sums1 = "sum1: 1000000\nsum2: 2000000\n", *sums2 = "sum2: 1000000\nsum1: 2000000\n";
  ck_assert_msg(strncmp(r.out, sums1, strlen(sums1)) == 0 ||
                    strncmp(r.out, sums2, strlen(sums2)) == 0,
                "lesson3_6_mutex: output is\n%s", r.out);
  const char *table = r.out + strlen(sums1);
  char head[96];
  snprintf(head, sizeof head, "weft lockstat: 1 lock of process %d, by total wait; ", (int)r.pid);
  ck_assert_msg(strncmp(table, head, strlen(head)) == 0, "lesson3_6_mutex: output is\n%s", r.out);
  const char *row = strstr(table, "\n\"lock\" ");
  long long acquired = -1, contended = -1;
  ck_assert_msg(row != NULL && sscanf(row + 8, "%lld %lld", &acquired, &contended) == 2,
                "lesson3_6_mutex: output is\n%s", r.out);
  ck_assert_int_eq(acquired, 2);
  ck_assert_int_le(contended, 1);
  ck_assert_int_ge(contended, 0);
  /* Nothing else: one header line, the column names, the row, at most one call site. */
  int lines = count_substr(table, "\n");
  ck_assert_msg(lines == 3 || (lines == 4 && contended == 1 &&
                               strstr(table, "    waited at examples/lesson3_6_mutex.c:") != NULL),
                "lesson3_6_mutex: output is\n%s", r.out);
}
END_TEST


START_TEST(lesson3_7_deadlock) {
  static struct run r;
  run_program("lesson3_7_deadlock", &r);
  assert_exit_zero("lesson3_7_deadlock", &r);
  ck_assert_msg(strstr(r.out, "weft: deadlock: ") != NULL, "no live deadlock report:\n%s", r.out);
  ck_assert_msg(strstr(r.out, "the chain of waits") != NULL, "output:\n%s", r.out);
  ck_assert_msg(strstr(r.out, "examples/lesson3_7_deadlock.c:") != NULL, "no source line:\n%s", r.out);
  /* The dump shows both threads waiting, each holding the other's lock,
   * before the bounded wait runs out and the deadlock is broken. */
  const char *dump = strstr(r.out, "weft: dump of MainProcess (pid ");
  ck_assert_msg(dump != NULL && strstr(dump, "): 3 threads\n") != NULL, "no dump:\n%s", r.out);
  ck_assert_msg(count_substr(dump, "): waiting for lock \"锁") == 2 &&
                    strstr(dump, "    holds \"锁A\" acquired at examples/lesson3_7_deadlock.c:") &&
                    strstr(dump, "    holds \"锁B\" acquired at examples/lesson3_7_deadlock.c:") &&
                    strstr(dump, "  live deadlock: 2 threads wait for each other; the chain of waits:\n"),
                "the dump does not show both threads waiting:\n%s", r.out);
  const char *broken = strstr(r.out, "秒内没拿到");
  ck_assert_msg(broken != NULL && strstr(dump, "weft: end of dump\n") != NULL &&
                    strstr(dump, "weft: end of dump\n") < broken,
                "the dump must come before the deadlock is broken:\n%s", r.out);
  ck_assert_msg(strstr(r.out, "线程1 完成") != NULL && strstr(r.out, "线程2 完成") != NULL &&
                    strstr(r.out, "两个线程都完成了，没有卡死") != NULL,
                "both threads must finish; output:\n%s", r.out);
}
END_TEST

/* §3.7 between two processes: exactly one is refused and reports the cycle
 * across both, its watchdog's dump shows the other process's step and the
 * cycle before it backs off, and both finish. Which one waits last is up
 * to the scheduler. */
START_TEST(lesson3_7_deadlock_processes) {
  static struct run r;
  const char *program = "lesson3_7_deadlock_processes";
  run_program(program, &r);
  assert_exit_zero(program, &r);
  ck_assert_msg(r.eof, "%s: pipe still open after exit; output:\n%s", program, r.out);
  ck_assert_msg(count_substr(r.out, "weft: deadlock: ") == 1, "one report:\n%s", r.out);
  /* The two orders, taken in two processes, are an inversion too: reported
   * once, by whichever process took its second order last. */
  ck_assert_msg(count_substr(r.out, "weft: possible deadlock: lock-order inversion between 2 "
                                    "locks, across processes\n") == 1,
                "one inversion report:\n%s", r.out);
  const char *rep = strstr(r.out, "weft: deadlock: MainThread (tid ");
  ck_assert_msg(rep != NULL, "no report:\n%s", r.out);
  const char *of_one = strstr(rep, ") of process \"进程1\" (pid ");
  bool one = of_one != NULL && of_one < strchr(rep, '\n');
  const char *me = one ? "进程1" : "进程2", *other = one ? "进程2" : "进程1";
  const char *want = one ? "锁B" : "锁A", *held = one ? "锁A" : "锁B";
  char line[512];
  snprintf(line, sizeof line, ") of process \"%s\" (pid ", me);
  ck_assert_msg(strstr(rep, line) != NULL && strstr(rep, line) < strchr(rep, '\n'), "%s", r.out);
  snprintf(line, sizeof line, "would wait forever for \"%s\" at examples/%s.c:", want, program);
  ck_assert_msg(strstr(rep, line) != NULL, "no '%s':\n%s", line, r.out);
  ck_assert_msg(strstr(rep, "\n  the chain of waits, across processes:\n    \"") != NULL, "%s", r.out);
  snprintf(line, sizeof line, "\" is held by process \"%s\" (pid ", other);
  ck_assert_msg(strstr(rep, line) != NULL, "no '%s':\n%s", line, r.out);

  /* Each takes its first lock; the refused one twice, and says so once. */
  snprintf(line, sizeof line, "%s 拿到 %s，想要 %s\n", me, held, want);
  ck_assert_msg(count_substr(r.out, line) == 2, "no twice '%s':\n%s", line, r.out);
  snprintf(line, sizeof line, "%s 拿到 %s，想要 %s\n", other, want, held);
  ck_assert_msg(count_substr(r.out, line) == 1, "no '%s':\n%s", line, r.out);
  snprintf(line, sizeof line, "%s: 会死锁 (WEFT_EDEADLK)，最多再等 2 秒\n", me);
  ck_assert_msg(count_substr(r.out, "会死锁") == 1 && strstr(r.out, line) != NULL, "%s", r.out);

  /* The refused process's dump, before it backs off. */
  snprintf(line, sizeof line, "weft: dump of %s (pid ", me);
  const char *dump = strstr(r.out, line);
  ck_assert_msg(dump != NULL && strstr(dump, "): 1 thread (no weft wait ended for ") != NULL,
                "no dump:\n%s", r.out);
  const char *end = strstr(dump, "weft: end of dump\n");
  snprintf(line, sizeof line, "%s: 2 秒内没拿到 %s，先释放 %s 再重试\n", me, want, held);
  const char *backs_off = strstr(r.out, line);
  ck_assert_msg(end != NULL && backs_off != NULL && end < backs_off,
                "the dump must come before the process backs off:\n%s", r.out);
  snprintf(line, sizeof line, "  MainThread (tid %.*s): waiting for lock \"%s\" at examples/%s.c:",
           (int)strcspn(rep + strlen("weft: deadlock: MainThread (tid "), ")"),
           rep + strlen("weft: deadlock: MainThread (tid "), want, program);
  const char *wait = strstr(dump, line);
  ck_assert_msg(wait != NULL && wait < end, "no '%s' in the dump:\n%s", line, r.out);
  snprintf(line, sizeof line, "; held by process \"%s\" (pid ", other);
  const char *by = strstr(wait, line);
  ck_assert_msg(by != NULL && by < strchr(wait, '\n'), "no '%s' in the dump:\n%s", line, r.out);
  snprintf(line, sizeof line, "), thread MainThread (tid ");
  ck_assert_msg(strstr(by, line) != NULL && strstr(by, line) < strchr(by, '\n'), "%s", r.out);
  snprintf(line, sizeof line, "), which waits for \"%s\" at examples/%s.c:", held, program);
  ck_assert_msg(strstr(by, line) != NULL && strstr(by, line) < strchr(by, '\n'), "%s", r.out);
  snprintf(line, sizeof line, "    holds \"%s\" acquired at examples/%s.c:", held, program);
  ck_assert_msg(strstr(dump, line) != NULL && strstr(dump, line) < end, "%s", r.out);
  const char *cycle = strstr(dump, "  live deadlock: 2 threads of 2 processes wait for each other; "
                                   "the chain of waits, across processes:\n");
  ck_assert_msg(cycle != NULL && cycle < end, "no cycle in the dump:\n%s", r.out);

  snprintf(line, sizeof line, "%s 完成\n", other);
  ck_assert_msg(strstr(r.out, line) != NULL, "%s", r.out);
  snprintf(line, sizeof line, "%s 完成\n", me);
  ck_assert_msg(strstr(r.out, line) != NULL, "%s", r.out);
  const char *last = "两个进程都完成了，没有卡死\n";
  ck_assert_msg(strlen(r.out) >= strlen(last) &&
                    strcmp(r.out + strlen(r.out) - strlen(last), last) == 0,
                "%s: the last line must be '%s'; output:\n%s", program, last, r.out);
}
END_TEST

/* ---- §4 processes do not share globals ---- */

START_TEST(lesson4_isolation) {
  static struct run r;
  run_program("lesson4_isolation", &r);
  assert_exit_zero("lesson4_isolation", &r);
  ck_assert_msg(r.eof, "lesson4_isolation: pipe still open after exit; output:\n%s", r.out);
  const char *want = "追加数据的子进程：[0, 1, 2, 3, 4]\n主进程读取的全局变量：[]\n";
  ck_assert_msg(strcmp(r.out, want) == 0, "lesson4_isolation: output is\n%s\nexpected\n%s", r.out, want);
}
END_TEST

START_TEST(lesson4_start_methods) {
  static struct run r;
  run_program("lesson4_start_methods", &r);
  assert_exit_zero("lesson4_start_methods", &r);
  ck_assert_msg(r.eof, "lesson4_start_methods: pipe still open after exit; output:\n%s", r.out);
  const char *want = "主进程：全局变量 = 100，已占用 256 MiB 内存\n"
                     "fork 启动的子进程看到的全局变量：100\n"
                     "spawn 启动的子进程看到的全局变量：0\n"
                     "forkserver 启动的子进程看到的全局变量：0\n";
  ck_assert_msg(strncmp(r.out, want, strlen(want)) == 0,
                "lesson4_start_methods: output is\n%s\nexpected it to start with\n%s", r.out, want);
  const char *methods[] = {"\nfork", "\nspawn", "\nforkserver"};
  for (int i = 0; i < 3; i++) {
    char line[64];
    snprintf(line, sizeof line, "%s：启动并等待子进程结束用时 ", methods[i]);
    const char *at = strstr(r.out, line);
    ck_assert_msg(at != NULL, "no timing line for %s; output:\n%s", methods[i] + 1, r.out);
    double ms = -1;
    ck_assert_int_eq(sscanf(at + strlen(line), "%lf", &ms), 1);
    ck_assert(ms > 0);
  }
}
END_TEST

START_TEST(lesson5_ipc) {
  static struct run r;
  run_program("lesson5_ipc", &r);
  assert_exit_zero("lesson5_ipc", &r);
  ck_assert_msg(r.eof, "lesson5_ipc: pipe still open after exit; output:\n%s", r.out);
  const char *want =
      "消费者进程收到：消息 0\n消费者进程收到：消息 1\n消费者进程收到：消息 2\n"
      "消费者进程收到：消息 3\n消费者进程收到：消息 4\n队列已关闭，消费者进程退出\n"
      "两个进程各加 1000000 次，共享的 Value：2000000\n";
  ck_assert_msg(strcmp(r.out, want) == 0, "lesson5_ipc: output is\n%s\nexpected\n%s", r.out, want);
}
END_TEST

/* ---- §4++ a process pool ---- */

static long long primes_in(long long lo, long long hi) {
  long long count = 0;
  for (long long n = lo < 2 ? 2 : lo; n < hi; n++) {
    bool prime = true;
    for (long long d = 2; d * d <= n && prime; d++) prime = n % d != 0;
    count += prime;
  }
  return count;
}

START_TEST(lesson6_pool) {
  static struct run r;
  run_program("lesson6_pool", &r);
  assert_exit_zero("lesson6_pool", &r);
  ck_assert_msg(r.eof, "lesson6_pool: pipe still open after exit; output:\n%s", r.out);
  char want[256];
  snprintf(want, sizeof want, "进程池：%d 个工作进程，16 个任务，任务 7 故意崩溃\n", weft_cpu_count());
  ck_assert_msg(strncmp(r.out, want, strlen(want)) == 0, "first line; output:\n%s", r.out);
  /* The crash report names the worker, how it died and the task. Under a
   * sanitizer the sanitizer catches SIGSEGV and exits instead. */
  const char *report = strstr(r.out, "失败的任务：weft_pool_map: ForkPoolWorker-");
  ck_assert_msg(report != NULL, "no crash report; output:\n%s", r.out);
#if defined(WEFT_SANITIZE_ADDRESS) || defined(WEFT_SANITIZE_THREAD)
  const char *how = " died with exit code ";
#else
  const char *how = " died with SIGSEGV while running task 7 (item 7)\n";
#endif
  const char *eol = strchr(report, '\n');
  const char *at = strstr(report, how);
  ck_assert_msg(at != NULL && at < eol + 1, "crash report; output:\n%s", r.out);
  long long total = 0;
  for (int i = 0; i < 16; i++) {
    long long lo = i * 60000LL, hi = lo + 60000;
    long long count = primes_in(lo, hi);
    total += count;
    if (i == 7)
      snprintf(want, sizeof want, "\n区间 [%lld, %lld)：WEFT_EWORKERDIED\n", lo, hi);
    else
      snprintf(want, sizeof want, "\n区间 [%lld, %lld)：%lld 个素数\n", lo, hi, count);
    ck_assert_msg(strstr(r.out, want) != NULL, "no line \"%s\"; output:\n%s", want + 1, r.out);
  }
  snprintf(want, sizeof want, "\n960000 以下共 %lld 个素数\n", total);
  ck_assert_msg(strstr(r.out, want) != NULL, "no total line \"%s\"; output:\n%s", want + 1, r.out);
  const char *speed = strstr(r.out, "\n1 个工作进程：");
  double one, all, x;
  int n;
  ck_assert_msg(speed != NULL && sscanf(speed + 1, "1 个工作进程：%lf 秒；%d 个工作进程：%lf 秒；加速 %lf 倍",
                                        &one, &n, &all, &x) == 4 && n == weft_cpu_count(),
                "no speed-up line; output:\n%s", r.out);
}
END_TEST

/* ---- the tour runs every lesson ---- */

START_TEST(tour) {
  static struct run r;
  /* The last lesson runs under mpiexec when weft has MPI: Open MPI's own
   * leaks and locking are not the sanitizers' business (tests/mpi.sh). */
  const char *san = getenv("WEFT_TEST_SANITIZER");
  char opts[1024];
  if (san != NULL && strcmp(san, "address") == 0) {
    snprintf(opts, sizeof opts, "%s:detect_leaks=0", getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "");
    setenv("ASAN_OPTIONS", opts, 1);
  } else if (san != NULL && strcmp(san, "thread") == 0) {
    snprintf(opts, sizeof opts, "%s:suppressions=%s", getenv("TSAN_OPTIONS") ? getenv("TSAN_OPTIONS") : "",
             WEFT_MPI_TSAN_SUPP);
    setenv("TSAN_OPTIONS", opts, 1);
  }
  run_program("tour", &r);
  assert_exit_zero("tour", &r);
  ck_assert_msg(r.eof, "tour: pipe still open after exit; output:\n%s", r.out);
  static const char *const headings[] = {"==== §2.1 ", "==== §2.2 ", "==== §2.3 ", "==== §2.4 ",
                                         "==== §3.1 ", "==== §3.3 ", "==== §3.4 ", "==== §3.5 ",
                                         "==== §3.6 ", "==== §3.7 ", "==== §4 ",   "==== §4+ ",
                                         "==== §4++ ", "==== §4+++ "};
  for (size_t i = 0; i < sizeof headings / sizeof headings[0]; i++)
    ck_assert_msg(has_line_starting(r.out, headings[i]),
                  "tour: no heading line starting with \"%s\"; output:\n%s", headings[i], r.out);
  ck_assert_msg(count_substr(r.out, "\n==== §3.7 ") == 2, "tour: two §3.7 lessons; output:\n%s", r.out);
  ck_assert_msg(has_line_starting(r.out, "==== tour done: 16 lessons, 0 failed\n"),
                "tour: no \"tour done: 16 lessons, 0 failed\" line; output:\n%s", r.out);
  ck_assert_msg(!has_line_starting(r.out, "!!!!"), "tour: a lesson failed; output:\n%s", r.out);
  /* The lessons' own output appears under the headings. */
  ck_assert_msg(strstr(r.out, "\nover\n") != NULL && strstr(r.out, "主进程读取的全局变量：[]\n") != NULL,
                "tour: the lessons' output is missing; output:\n%s", r.out);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("examples");
  TCase *tc;

  tc = weft_tcase("lesson2_1_processes", 20);
  tcase_add_test(tc, lesson2_1_processes);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson2_2_pid", 20);
  tcase_add_test(tc, lesson2_2_pid);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson2_3_args", 20);
  tcase_add_test(tc, lesson2_3_args);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson2_4_daemon", 20);
  tcase_add_test(tc, lesson2_4_daemon);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson3_1_threads", 30);
  tcase_add_test(tc, lesson3_1_threads);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson3_3_daemon_thread", 20);
  tcase_add_test(tc, lesson3_3_daemon_thread);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson3_4_shared_globals", 20);
  tcase_add_test(tc, lesson3_4_shared_globals);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson3_5_lost_updates", 30);
  tcase_add_test(tc, lesson3_5_lost_updates);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson3_6_mutex", 30);
  tcase_add_test(tc, lesson3_6_mutex);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson3_7_deadlock", 30);
  tcase_add_test(tc, lesson3_7_deadlock);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson3_7_deadlock_processes", 30);
  tcase_add_test(tc, lesson3_7_deadlock_processes);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson4_start_methods", 60);
  tcase_add_test(tc, lesson4_start_methods);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson4_isolation", 20);
  tcase_add_test(tc, lesson4_isolation);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson5_ipc", 30);
  tcase_add_test(tc, lesson5_ipc);
  suite_add_tcase(s, tc);

  tc = weft_tcase("lesson6_pool", 60);
  tcase_add_test(tc, lesson6_pool);
  suite_add_tcase(s, tc);

  tc = weft_tcase("tour", 90);
  tcase_add_test(tc, tour);
  suite_add_tcase(s, tc);

  return s;
}
