/* SPDX-License-Identifier: MIT */
/* Tests of weft/pool.h: process pools (multiprocessing.Pool) and the bytes
 * API shared with thread pools -- apply_async, map, imap, imap_unordered,
 * as_completed, callbacks, worker deaths, time limits, scoped pools.
 *
 * Conventions (as in test_pool.c): tasks and callbacks never call
 * ck_assert; they return a code of their own or record what they saw. A
 * process pool's tasks run in forked workers, so everything they record
 * goes to S, a page of weft_shared_alloc memory mapped by the fixture
 * before any pool exists. Tasks that must block wait on an event in S
 * with a timeout, so that a bug cannot hang the suite. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define P(v) ((void *)(intptr_t)(v))
#define V(p) ((intptr_t)(p))
#define GATE_S 20.0 /* a blocked task gives up after this: the test has failed by then */

#define CHECK(cond, ...)                    \
  do {                                      \
    if (!(cond)) ck_abort_msg(__VA_ARGS__); \
  } while (0)

/* A worker that calls exit() runs LeakSanitizer's exit check, which may
 * report the parent's memory the fork copied and change the exit code:
 * the exit task turns it off in its own (copied) process first. */
#if defined(WEFT_SANITIZE_ADDRESS)
int __lsan_is_turned_off(void);
static volatile int lsan_off;
int __lsan_is_turned_off(void) { return lsan_off; }
#define LSAN_OFF() (lsan_off = 1)
#else
#define LSAN_OFF() ((void)0)
#endif

/* ---- memory shared with the workers ---- */

#define MAXP 512
#define NSLOTS 64

struct shm {
  weft_event gate;       /* blocked tasks wait on it */
  weft_event gates[16];  /* as_completed: task i waits on gates[i] */
  int started;           /* blocked tasks that began */
  int flag;
  int bar[NSLOTS];       /* barrier counters */
  int barpids[NSLOTS][8];
  char barnames[NSLOTS][8][WEFT_NAME_MAX + 1];
  int npids;             /* pids recorded by tasks or initializers */
  int pids[MAXP];
  int crash_ready;
  int crash_pid;
  char crash_name[WEFT_NAME_MAX + 1];
  int init_calls;
  int64_t die_at;        /* sq_die_task: the item that kills its worker */
  int64_t sleep_at;      /* sq_sleep_task: the item that sleeps past any limit */
};
static struct shm *S;

static void shm_setup(void) {
  S = shared(sizeof *S);
  S->die_at = -1;
  S->sleep_at = -1;
  /* Crashing workers must not write core files. */
  struct rlimit rl = {0, 0};
  setrlimit(RLIMIT_CORE, &rl);
}

static void record_pid(void) {
  int i = inc(&S->npids) - 1;
  if (i < MAXP) st(&S->pids[i], (int)getpid());
}

static int recorded_pids(void) {
  int n = ld(&S->npids);
  return n < MAXP ? n : MAXP;
}

/* Whether pid has been reaped (not even a zombie is left). */
static bool reaped(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

static bool wait_reaped(pid_t pid, double timeout) {
  double end = test_now() + timeout;
  while (!reaped(pid)) {
    if (test_now() > end) return false;
    nap_ms(2);
  }
  return true;
}

/* Children of every thread of this process (count_children() only sees
 * the calling thread's, and a pool forks from threads of its own). */
static int count_all_children(void) {
  DIR *d = opendir("/proc/self/task");
  if (d == NULL) return -1;
  int count = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    char path[300], buf[4096];
    snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (char *save = NULL, *tok = strtok_r(buf, " \n", &save); tok;
         tok = strtok_r(NULL, " \n", &save))
      count++;
  }
  closedir(d);
  return count;
}

static int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  if (d == NULL) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* Polls until at most n threads are left (a thread of a freed pool may
 * still be on its way out when free returns). */
static bool wait_threads_le(int n, double timeout) {
  double end = test_now() + timeout;
  while (count_threads() > n) {
    if (test_now() > end) return false;
    nap_ms(5);
  }
  return true;
}

static bool wait_no_children(double timeout) {
  double end = test_now() + timeout;
  while (count_all_children() != 0) {
    if (test_now() > end) return false;
    nap_ms(5);
  }
  return true;
}

static void finish_pool(weft_pool pool) {
  ck_assert_int_eq(weft_pool_close(pool), 0);
  int rc = weft_pool_join(pool, 30);
  ck_assert_msg(rc == 0, "join: %s (%s)", weft_err_name(rc), weft_last_error());
  ck_assert_int_eq(weft_pool_free(pool), 0);
}

/* Whether msg names the worker exactly ("ForkPoolWorker-2" but not
 * "ForkPoolWorker-21"). */
static bool names_exactly(const char *msg, const char *name) {
  size_t n = strlen(name);
  for (const char *p = msg; (p = strstr(p, name)) != NULL; p++)
    if (p[n] < '0' || p[n] > '9') return true;
  return false;
}

/* Whether msg holds the number v on its own (not inside another number or
 * a worker's name). */
static bool has_number(const char *msg, long v) {
  char want[32];
  snprintf(want, sizeof want, "%ld", v);
  size_t n = strlen(want);
  for (const char *p = msg; (p = strstr(p, want)) != NULL; p++) {
    bool before = p == msg || ((p[-1] < '0' || p[-1] > '9') && p[-1] != '-');
    bool after = p[n] < '0' || p[n] > '9';
    if (before && after) return true;
  }
  return false;
}

/* ---- tasks ---- */

/* Argument of item i: int64 i, then i % 5 bytes (3i + k). */
static size_t pattern_arg(int64_t i, unsigned char *buf) {
  memcpy(buf, &i, 8);
  for (int k = 0; k < i % 5; k++) buf[8 + k] = (unsigned char)(3 * i + k);
  return 8 + (size_t)(i % 5);
}

/* Checks its argument; gives int64 i*i, then i % 17 bytes (i + k). */
static int pattern_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t i;
  if (len < 8) return 55;
  memcpy(&i, arg, 8);
  if (i < 0 || len != 8 + (size_t)(i % 5)) return 56;
  const unsigned char *a = arg;
  for (int k = 0; k < i % 5; k++)
    if (a[8 + k] != (unsigned char)(3 * i + k)) return 57;
  size_t out = 8 + (size_t)(i % 17);
  if (*result_len < out) return 58;
  int64_t sq = i * i;
  memcpy(result, &sq, 8);
  unsigned char *r = result;
  for (int k = 0; k < i % 17; k++) r[8 + k] = (unsigned char)(i + k);
  *result_len = out;
  return 0;
}

static bool pattern_ok(int64_t i, const void *data, size_t len) {
  if (data == NULL || len != 8 + (size_t)(i % 17)) return false;
  int64_t sq;
  memcpy(&sq, data, 8);
  if (sq != i * i) return false;
  const unsigned char *r = data;
  for (int k = 0; k < i % 17; k++)
    if (r[8 + k] != (unsigned char)(i + k)) return false;
  return true;
}

static weft_future submit_pattern(weft_pool pool, int64_t i) {
  unsigned char buf[16];
  size_t len = pattern_arg(i, buf);
  return weft_pool_apply_async(pool, pattern_task, buf, len);
}

/* Waits for a pattern task's future and checks its bytes; closes it. */
static void expect_pattern(weft_future f, int64_t i) {
  const void *data = NULL;
  size_t len = 0;
  int rc = weft_future_result_bytes(f, 30, &data, &len);
  CHECK(rc == 0, "task %lld: %s (%s)", (long long)i, weft_err_name(rc), weft_last_error());
  CHECK(pattern_ok(i, data, len), "task %lld: wrong result (%zu bytes)", (long long)i, len);
  CHECK(weft_future_close(f) == 0, "close %lld", (long long)i);
}

/* Fails with the int it is given (0: succeeds with no bytes). */
static int fail_task(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)result;
  int code;
  if (len != sizeof code) return 59;
  memcpy(&code, arg, sizeof code);
  if (code == 0) *result_len = 0;
  return code;
}

/* The item square: int64 in, int64 out; checks the room it gets. */
static int sq_task(const void *arg, size_t len, void *result, size_t *result_len) {
  if (len != 8) return 71;
  if (*result_len != 8) return 72;
  int64_t x;
  memcpy(&x, arg, 8);
  x *= x;
  memcpy(result, &x, 8);
  return 0;
}

static bool fails(int64_t x) { return x % 97 == 13; }
static int fail_code(int64_t x) { return 100 + (int)(x % 5); }

static int sq_fail_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != 8) return 71;
  memcpy(&x, arg, 8);
  if (fails(x)) return fail_code(x);
  return sq_task(arg, len, result, result_len);
}

static int sq_die_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != 8) return 71;
  memcpy(&x, arg, 8);
  if (x == S->die_at) _exit(3);
  return sq_task(arg, len, result, result_len);
}

static int sq_sleep_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != 8) return 71;
  memcpy(&x, arg, 8);
  if (x == S->sleep_at) weft_sleep(30);
  return sq_task(arg, len, result, result_len);
}

/* Slower now and then, so that results come back out of order. */
static int sq_jitter_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != 8) return 71;
  memcpy(&x, arg, 8);
  if (x % 50 == 7) nap_ms(3);
  return sq_task(arg, len, result, result_len);
}

/* Item 0 waits for S->gate. */
static int sq_gate0_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != 8) return 71;
  memcpy(&x, arg, 8);
  if (x == 0) {
    inc(&S->started);
    if (weft_event_wait(&S->gate, GATE_S) != 0) return 99;
  }
  if (*result_len < 8) return 72; /* room: 8 in an imap, more in apply_async */
  x *= x;
  memcpy(result, &x, 8);
  *result_len = 8;
  return 0;
}

/* Barrier: arg {slot, n, block}. Records its pid and worker name, waits
 * until n tasks of the slot have started (so n distinct workers run them),
 * then waits for S->gate if block; gives its pid. */
struct bar_arg {
  int slot, n, block;
};

static int barrier_task(const void *arg, size_t len, void *result, size_t *result_len) {
  struct bar_arg a;
  if (len != sizeof a) return 80;
  memcpy(&a, arg, sizeof a);
  int me = inc(&S->bar[a.slot]) - 1;
  if (me < 8) {
    const char *name = weft_process_name(weft_current_process());
    snprintf(S->barnames[a.slot][me], sizeof S->barnames[a.slot][me], "%s", name ? name : "?");
    st(&S->barpids[a.slot][me], (int)getpid());
  }
  if (!wait_ge(&S->bar[a.slot], a.n, 10)) return 81;
  if (a.block && weft_event_wait(&S->gate, GATE_S) != 0) return 82;
  int pid = (int)getpid();
  memcpy(result, &pid, sizeof pid);
  *result_len = sizeof pid;
  return 0;
}

static int next_slot;

/* Proves that the pool has n live workers: n tasks that each wait for all
 * n to start. Their pids go to pids (n distinct). Returns the slot used. */
static int expect_workers(weft_pool pool, int n, pid_t *pids) {
  int slot = next_slot++;
  ck_assert_int_lt(slot, NSLOTS);
  ck_assert_int_le(n, 8);
  struct bar_arg a = {slot, n, 0};
  weft_future fs[8];
  for (int i = 0; i < n; i++) {
    /* Its own time limit: the pool's may be short. */
    fs[i] = weft_pool_apply_async(pool, barrier_task, &a, sizeof a, .timeout = 30);
    CHECK(fs[i].id != 0, "barrier submit: %s", weft_last_error());
  }
  for (int i = 0; i < n; i++) {
    const void *data;
    size_t len;
    int rc = weft_future_result_bytes(fs[i], 30, &data, &len);
    if (rc == WEFT_ETASKFAILED) {
      char seen[256] = "";
      for (int j = 0; j < 8 && j < ld(&S->bar[slot]); j++)
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), " %s(pid %d)",
                 S->barnames[slot][j], ld(&S->barpids[slot][j]));
      ck_abort_msg("barrier task %d failed with %d: %d tasks did not run at once on %d idle "
                   "workers; started:%s",
                   i, weft_future_task_error(fs[i]), n, n, seen);
    }
    CHECK(rc == 0, "barrier task %d: %s (%s)", i, weft_err_name(rc), weft_last_error());
    CHECK(len == sizeof(int), "barrier result of %zu bytes", len);
    int pid;
    memcpy(&pid, data, sizeof pid);
    if (pids != NULL) pids[i] = pid;
    for (int j = 0; j < i && pids != NULL; j++) CHECK(pids[j] != pid, "pid %d twice", pid);
    weft_future_close(fs[i]);
  }
  return slot;
}

/* ---- apply_async ---- */

START_TEST(apply_async_results_exact) {
  long n = 100000 / SLOW;
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  weft_future *fs = malloc((size_t)n * sizeof *fs);
  ck_assert_ptr_nonnull(fs);
  for (long i = 0; i < n; i++) {
    fs[i] = submit_pattern(pool, i);
    CHECK(fs[i].id != 0, "submit %ld: %s", i, weft_last_error());
  }
  for (long i = 0; i < n; i++) {
    if (i % 1000 == 0) {
      /* weft_future_result gives the same pointer as result_bytes. */
      const void *data = NULL;
      size_t len = 0;
      void *r = NULL;
      CHECK(weft_future_result_bytes(fs[i], 30, &data, &len) == 0, "task %ld", i);
      CHECK(weft_future_result(fs[i], 0, &r) == 0, "task %ld", i);
      CHECK(r == data, "task %ld: result %p, result_bytes %p", i, r, data);
      CHECK(weft_future_done(fs[i]) && !weft_future_running(fs[i]), "task %ld state", i);
      CHECK(weft_future_task_error(fs[i]) == 0, "task %ld", i);
    }
    expect_pattern(fs[i], i);
  }
  free(fs);
  finish_pool(pool);
  ck_assert(wait_no_children(5));
}
END_TEST

/* Large arguments and results travel whole; len 0 with a NULL arg works. */
static int reverse_task(const void *arg, size_t len, void *result, size_t *result_len) {
  if (*result_len < len) return 90;
  const unsigned char *a = arg;
  unsigned char *r = result;
  for (size_t k = 0; k < len; k++) r[k] = a[len - 1 - k];
  *result_len = len;
  return 0;
}

START_TEST(apply_async_large_and_empty) {
  weft_pool pool = weft_process_pool_new(.workers = 2, .max_message = 1 << 20);
  ck_assert_uint_ne(pool.id, 0);
  size_t sizes[] = {0, 1, 63, 64, 4095, 4096, 65537, 512 * 1024};
  size_t nsizes = sizeof sizes / sizeof sizes[0];
  unsigned char *buf = malloc(512 * 1024);
  ck_assert_ptr_nonnull(buf);
  for (size_t k = 0; k < 512 * 1024; k++) buf[k] = (unsigned char)(k * 7 + k / 251);
  for (int round = 0; round < 4; round++) {
    weft_future fs[8];
    for (size_t s = 0; s < nsizes; s++) {
      fs[s] = weft_pool_apply_async(pool, reverse_task, sizes[s] ? buf : NULL, sizes[s]);
      CHECK(fs[s].id != 0, "size %zu: %s", sizes[s], weft_last_error());
    }
    for (size_t s = 0; s < nsizes; s++) {
      const void *data = NULL;
      size_t len = 1;
      int rc = weft_future_result_bytes(fs[s], 30, &data, &len);
      CHECK(rc == 0, "size %zu: %s (%s)", sizes[s], weft_err_name(rc), weft_last_error());
      CHECK(len == sizes[s], "size %zu: got %zu bytes", sizes[s], len);
      const unsigned char *r = data;
      for (size_t k = 0; k < len; k++)
        CHECK(r[k] == buf[len - 1 - k], "size %zu: byte %zu differs", sizes[s], k);
      weft_future_close(fs[s]);
    }
  }
  free(buf);
  finish_pool(pool);
}
END_TEST

START_TEST(apply_async_task_failure_keeps_code) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  for (int round = 0; round < 20; round++) {
    int code = 42 + round;
    weft_future bad = weft_pool_apply_async(pool, fail_task, &code, sizeof code);
    weft_future good = submit_pattern(pool, round);
    ck_assert_uint_ne(bad.id, 0);
    const void *data = (const void *)&code;
    size_t len = 777;
    ck_assert_int_eq(weft_future_result_bytes(bad, 10, &data, &len), WEFT_ETASKFAILED);
    ck_assert_int_eq(weft_last_error_code(), WEFT_ETASKFAILED);
    ck_assert_int_eq(weft_future_task_error(bad), code);
    ck_assert(weft_future_done(bad));
    ck_assert(!weft_future_cancelled(bad));
    ck_assert_int_eq(weft_future_result(bad, 0, NULL), WEFT_ETASKFAILED);
    expect_pattern(good, round);
    weft_future_close(bad);
  }
  /* A task that succeeds with no bytes. */
  int zero = 0;
  weft_future f = weft_pool_apply_async(pool, fail_task, &zero, sizeof zero);
  const void *data;
  size_t len = 99;
  ck_assert_int_eq(weft_future_result_bytes(f, 10, &data, &len), 0);
  ck_assert_uint_eq(len, 0);
  weft_future_close(f);
  finish_pool(pool);
}
END_TEST

/* The bytes API on a thread pool. */
START_TEST(apply_async_on_thread_pool) {
  weft_pool pool = weft_thread_pool_new(.workers = 3);
  ck_assert_uint_ne(pool.id, 0);
  long n = 5000 / SLOW;
  weft_future *fs = malloc((size_t)n * sizeof *fs);
  ck_assert_ptr_nonnull(fs);
  for (long i = 0; i < n; i++) {
    fs[i] = submit_pattern(pool, i);
    CHECK(fs[i].id != 0, "submit %ld: %s", i, weft_last_error());
  }
  for (long i = 0; i < n; i++) expect_pattern(fs[i], i);
  free(fs);
  int code = 7;
  weft_future bad = weft_pool_apply_async(pool, fail_task, &code, sizeof code);
  ck_assert_int_eq(weft_future_result(bad, 10, NULL), WEFT_ETASKFAILED);
  ck_assert_int_eq(weft_future_task_error(bad), 7);
  weft_future_close(bad);
  /* No time limit on a thread pool. */
  weft_future t = weft_pool_apply_async(pool, fail_task, &code, sizeof code, .timeout = 1);
  ck_assert_uint_eq(t.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  finish_pool(pool);
}
END_TEST

/* Workers are processes named ForkPoolWorker-N, N counting every pool's
 * workers from 1 (this test runs in a fresh process). */
START_TEST(workers_are_named_processes) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  pid_t pids[2];
  int slot = expect_workers(pool, 2, pids);
  bool seen1 = false, seen2 = false;
  for (int i = 0; i < 2; i++) {
    ck_assert_int_ne(pids[i], getpid());
    const char *name = S->barnames[slot][i];
    seen1 = seen1 || strcmp(name, "ForkPoolWorker-1") == 0;
    seen2 = seen2 || strcmp(name, "ForkPoolWorker-2") == 0;
  }
  ck_assert_msg(seen1 && seen2, "workers named '%s' and '%s'", S->barnames[slot][0],
                S->barnames[slot][1]);
  finish_pool(pool);
  for (int i = 0; i < 2; i++) ck_assert_msg(reaped(pids[i]), "worker %d not reaped", pids[i]);
  weft_pool second = weft_process_pool_new(.workers = 1);
  ck_assert_uint_ne(second.id, 0);
  slot = expect_workers(second, 1, NULL);
  ck_assert_str_eq(S->barnames[slot][0], "ForkPoolWorker-3");
  finish_pool(second);
}
END_TEST

/* ---- a worker that dies ---- */

enum { CRASH_SEGV, CRASH_SEGV_RAISE, CRASH_ABORT, CRASH_EXIT, CRASH__EXIT, CRASH_WAIT_KILL };

static int crash_task(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)result;
  (void)result_len;
  int kind;
  if (len != sizeof kind) return 60;
  memcpy(&kind, arg, sizeof kind);
  const char *name = weft_process_name(weft_current_process());
  snprintf(S->crash_name, sizeof S->crash_name, "%s", name ? name : "?");
  st(&S->crash_pid, (int)getpid());
  st(&S->crash_ready, 1);
  switch (kind) {
  case CRASH_SEGV: { /* a real fault (not NULL itself, which UBSan would catch first) */
    signal(SIGSEGV, SIG_DFL);
    volatile uintptr_t addr = 16;
    *(volatile int *)addr = 1;
    break;
  }
  case CRASH_SEGV_RAISE:
    signal(SIGSEGV, SIG_DFL); /* the sanitizers' handlers would turn it into an exit */
    raise(SIGSEGV);
    break;
  case CRASH_ABORT:
    signal(SIGABRT, SIG_DFL);
    abort();
  case CRASH_EXIT:
    LSAN_OFF();
    exit(3);
  case CRASH__EXIT:
    _exit(3);
  case CRASH_WAIT_KILL:
    weft_event_wait(&S->gate, GATE_S);
    return 61;
  }
  return 62;
}

#define AROUND 100

static int pause_forever(void *arg) {
  (void)arg;
  for (;;) pause();
  return 0;
}

/* A worker dies; others processes started after the pool's (siblings)
 * leave its workers among the oldest children. */
static void worker_death_among(int kind, const char *sig, int siblings) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  weft_process sib[16];
  ck_assert_int_le(siblings, 16);
  for (int i = 0; i < siblings; i++) {
    sib[i] = weft_process_new(pause_forever);
    ck_assert_int_eq(weft_process_start(sib[i]), 0);
  }
  pid_t dead[3];
  for (int round = 0; round < 3; round++) {
    st(&S->crash_ready, 0);
    st(&S->crash_pid, 0);
    weft_future fs[2 * AROUND];
    int64_t base = round * 1000;
    for (int i = 0; i < AROUND; i++) fs[i] = submit_pattern(pool, base + i);
    int k = kind == CRASH_SEGV && round == 1 ? CRASH_SEGV_RAISE : kind;
    weft_future crash = weft_pool_apply_async(pool, crash_task, &k, sizeof k);
    ck_assert_uint_ne(crash.id, 0);
    for (int i = AROUND; i < 2 * AROUND; i++) fs[i] = submit_pattern(pool, base + i);
    if (kind == CRASH_WAIT_KILL) {
      ck_assert(wait_ge(&S->crash_ready, 1, 15));
      ck_assert_int_eq(kill(ld(&S->crash_pid), SIGKILL), 0);
    }
    const void *data = NULL;
    size_t len = 0;
    double t0 = test_now();
    int rc = weft_future_result_bytes(crash, 20, &data, &len);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", weft_last_error());
    ck_assert_msg(rc == WEFT_EWORKERDIED, "round %d: crashed task gave %s after %.1fs (%s)",
                  round, weft_err_name(rc), test_now() - t0, msg);
    ck_assert_int_eq(weft_last_error_code(), WEFT_EWORKERDIED);
    ck_assert_int_eq(ld(&S->crash_ready), 1);
    ck_assert_msg(strncmp(S->crash_name, "ForkPoolWorker-", 15) == 0, "worker named '%s'",
                  S->crash_name);
    ck_assert_msg(names_exactly(msg, S->crash_name), "message does not name %s: '%s'",
                  S->crash_name, msg);
    ck_assert_msg(strstr(msg, "task") != NULL, "message does not say 'task': '%s'", msg);
    if (sig != NULL) {
      ck_assert_msg(strstr(msg, sig) != NULL, "message does not name %s: '%s'", sig, msg);
    } else {
      ck_assert_msg(strstr(msg, "exit") != NULL && has_number(msg, 3),
                    "message does not give exit code 3: '%s'", msg);
      ck_assert_msg(strstr(msg, "SIG") == NULL, "exit given as a signal: '%s'", msg);
    }
    ck_assert(weft_future_done(crash));
    ck_assert(!weft_future_cancelled(crash));
    ck_assert_int_eq(weft_future_task_error(crash), 0);
    ck_assert_int_eq(weft_future_result(crash, 0, NULL), WEFT_EWORKERDIED);
    ck_assert_int_eq(weft_future_close(crash), 0);
    /* Every task around it ran. */
    for (int i = 0; i < 2 * AROUND; i++) expect_pattern(fs[i], base + i);
    dead[round] = ld(&S->crash_pid);
    ck_assert_msg(wait_reaped(dead[round], 5), "dead worker %d not reaped", (int)dead[round]);
    /* A replacement runs: two live workers, neither the dead one. */
    pid_t live[2];
    expect_workers(pool, 2, live);
    for (int i = 0; i < 2; i++)
      for (int r = 0; r <= round; r++) ck_assert_int_ne(live[i], dead[r]);
  }
  finish_pool(pool);
  for (int i = 0; i < siblings; i++) {
    ck_assert_int_eq(weft_process_kill(sib[i]), 0);
    ck_assert_int_eq(weft_process_join(sib[i], 30), 0);
    ck_assert_int_eq(weft_process_close(sib[i]), 0);
  }
  ck_assert_msg(wait_no_children(5), "%d children left after the pool was freed",
                count_all_children());
}

static void worker_death(int kind, const char *sig) { worker_death_among(kind, sig, 0); }

START_TEST(worker_dies_sigsegv) { worker_death(CRASH_SEGV, "SIGSEGV"); }
END_TEST

START_TEST(worker_dies_abort) { worker_death(CRASH_ABORT, "SIGABRT"); }
END_TEST

START_TEST(worker_dies_exit) { worker_death(CRASH_EXIT, NULL); }
END_TEST

START_TEST(worker_dies__exit) { worker_death(CRASH__EXIT, NULL); }
END_TEST

START_TEST(worker_dies_sigkill_from_outside) { worker_death(CRASH_WAIT_KILL, "SIGKILL"); }
END_TEST

START_TEST(worker_dies_among_many_processes) {
  worker_death_among(CRASH_WAIT_KILL, "SIGKILL", 12);
}
END_TEST

/* ---- time limits ---- */

static int sleep_task(const void *arg, size_t len, void *result, size_t *result_len) {
  double s;
  if (len != sizeof s) return 70;
  memcpy(&s, arg, sizeof s);
  if (s >= 10) st(&S->crash_pid, (int)getpid());
  weft_sleep(s);
  memcpy(result, "ok", 2);
  *result_len = 2;
  return 0;
}

static void expect_timeout(weft_future f, double limit, double t0) {
  int rc = weft_future_result(f, limit + 15, NULL);
  double el = test_now() - t0;
  ck_assert_msg(rc == WEFT_ETASKTIMEOUT, "slow task: %s after %.2fs (%s)", weft_err_name(rc), el,
                weft_last_error());
  ck_assert_msg(el >= limit * 0.9 && el < limit + 5, "timed out after %.2fs for a %.2fs limit", el,
                limit);
  ck_assert_int_eq(weft_future_task_error(f), 0);
  ck_assert(weft_future_done(f));
  weft_future_close(f);
}

START_TEST(task_timeout_of_pool) {
  weft_pool pool = weft_process_pool_new(.workers = 2, .task_timeout = 0.5);
  ck_assert_uint_ne(pool.id, 0);
  double forever = 30, short_s = 0.05;
  for (int round = 0; round < 3; round++) {
    st(&S->crash_pid, 0);
    double t0 = test_now();
    weft_future slow = weft_pool_apply_async(pool, sleep_task, &forever, sizeof forever);
    ck_assert_uint_ne(slow.id, 0);
    weft_future quick[50];
    for (int i = 0; i < 50; i++) quick[i] = submit_pattern(pool, i);
    weft_future fine = weft_pool_apply_async(pool, sleep_task, &short_s, sizeof short_s);
    expect_timeout(slow, 0.5, t0);
    for (int i = 0; i < 50; i++) expect_pattern(quick[i], i);
    ck_assert_int_eq(weft_future_result(fine, 10, NULL), 0);
    weft_future_close(fine);
    /* The sleeper's worker was killed and replaced. */
    pid_t killed = ld(&S->crash_pid);
    ck_assert_int_gt(killed, 0);
    ck_assert_msg(wait_reaped(killed, 5), "timed-out worker %d still there", (int)killed);
    pid_t live[2];
    expect_workers(pool, 2, live);
    ck_assert(live[0] != killed && live[1] != killed);
  }
  finish_pool(pool);
  ck_assert(wait_no_children(5));
}
END_TEST

START_TEST(task_timeout_per_submit) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  double forever = 30, some = 0.8;
  for (int round = 0; round < 3; round++) {
    double t0 = test_now();
    weft_future slow =
        weft_pool_apply_async(pool, sleep_task, &forever, sizeof forever, .timeout = 0.3);
    ck_assert_uint_ne(slow.id, 0);
    /* No limit for the others: this one sleeps past 0.3 s and succeeds. */
    weft_future longer = weft_pool_apply_async(pool, sleep_task, &some, sizeof some);
    weft_future quick[20];
    for (int i = 0; i < 20; i++) quick[i] = submit_pattern(pool, i);
    expect_timeout(slow, 0.3, t0);
    ck_assert_int_eq(weft_future_result(longer, 10, NULL), 0);
    weft_future_close(longer);
    for (int i = 0; i < 20; i++) expect_pattern(quick[i], i);
  }
  expect_workers(pool, 2, NULL);
  finish_pool(pool);

  /* A task's own limit replaces the pool's. */
  pool = weft_process_pool_new(.workers = 2, .task_timeout = 0.3);
  ck_assert_uint_ne(pool.id, 0);
  weft_future allowed = weft_pool_apply_async(pool, sleep_task, &some, sizeof some, .timeout = 5);
  double t0 = test_now();
  weft_future limited = weft_pool_apply_async(pool, sleep_task, &forever, sizeof forever);
  ck_assert_int_eq(weft_future_result(allowed, 10, NULL), 0);
  expect_timeout(limited, 0.3, t0);
  weft_future_close(allowed);
  finish_pool(pool);
}
END_TEST

START_TEST(task_timeout_bad_uses) {
  weft_pool tp = weft_thread_pool_new(.workers = 1, .task_timeout = 1);
  ck_assert_uint_eq(tp.id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_uint_eq(weft_process_pool_new(.workers = 1, .task_timeout = -1).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_uint_eq(weft_process_pool_new(.workers = 1, .task_timeout = NAN).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_eq(count_all_children(), 0);
}
END_TEST

/* ---- a killed parent leaves no worker ---- */

/* What the exit code of a pool-making child below means. */
static const char *child_failure(int status) {
  if (!WIFEXITED(status)) return "it died";
  switch (WEXITSTATUS(status)) {
  case 2: return "weft_process_pool_new failed";
  case 3: return "apply_async failed";
  case 4: return "its workers did not all start a task at once";
  case 5: return "its barrier tasks failed (they did not run at once on the idle workers)";
  default: return "unexpected exit";
  }
}

static void killed_parent_child(int slot, bool busy) {
  weft_pool pool = weft_process_pool_new(.workers = 3);
  if (pool.id == 0) _exit(2);
  struct bar_arg a = {slot, 3, busy};
  weft_future fs[3];
  for (int i = 0; i < 3; i++) {
    fs[i] = weft_pool_apply_async(pool, barrier_task, &a, sizeof a);
    if (fs[i].id == 0) _exit(3);
  }
  if (busy) {
    if (!wait_ge(&S->bar[slot], 3, 15)) _exit(4);
  } else {
    for (int i = 0; i < 3; i++)
      if (weft_future_result(fs[i], 15, NULL) != 0) _exit(5);
  }
  st(&S->flag, 1);
  for (;;) pause();
}

START_TEST(killed_parent_leaves_no_worker) {
  for (int round = 0; round < 4; round++) {
    bool busy = round % 2 == 1; /* the workers are in a task, or idle */
    st(&S->flag, 0);
    fflush(NULL);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) killed_parent_child(round, busy);
    if (!wait_ge(&S->flag, 1, 20)) {
      kill(child, SIGKILL);
      int status = wait_status(child);
      ck_abort_msg("round %d: the pool's process did not get ready (status %#x: %s)", round,
                   status, child_failure(status));
    }
    pid_t workers[3];
    for (int i = 0; i < 3; i++) {
      /* A busy worker counts itself in before it writes its pid. */
      ck_assert_msg(wait_ge(&S->barpids[round][i], 1, 10), "round %d: worker %d gave no pid",
                    round, i);
      workers[i] = ld(&S->barpids[round][i]);
      ck_assert(!pid_gone(workers[i]));
    }
    ck_assert_int_eq(kill(child, SIGKILL), 0);
    int status = wait_status(child);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    for (int i = 0; i < 3; i++)
      ck_assert_msg(wait_pid_gone(workers[i], 5),
                    "round %d (%s): worker %d outlived its killed parent (state %c)", round,
                    busy ? "busy" : "idle", (int)workers[i], process_state(workers[i]));
    /* They came back to this process (a subreaper): reap them. */
    double end = test_now() + 5;
    while (count_all_children() > 0 && test_now() < end) {
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
      nap_ms(5);
    }
    ck_assert_msg(count_all_children() == 0, "round %d: %d processes of the pool left", round,
                  count_all_children());
  }
}
END_TEST

/* A process that exits with its pool open: it exits (weft's exit rules
 * end the daemon workers) and leaves no worker behind. */
static void exiting_child(int slot) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  if (pool.id == 0) _exit(2);
  struct bar_arg a = {slot, 2, 0};
  weft_future fs[2];
  for (int i = 0; i < 2; i++) fs[i] = weft_pool_apply_async(pool, barrier_task, &a, sizeof a);
  for (int i = 0; i < 2; i++)
    if (fs[i].id == 0) _exit(3);
  for (int i = 0; i < 2; i++)
    if (weft_future_result(fs[i], 15, NULL) != 0) _exit(5);
  for (int i = 0; i < 20; i++) submit_pattern(pool, i); /* queued, maybe running */
  exit(0);
}

START_TEST(exit_with_open_pool_leaves_no_worker) {
  for (int round = 0; round < 3; round++) {
    int slot = next_slot++;
    fflush(NULL);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) exiting_child(slot);
    bool gone = wait_pid_gone(child, 20);
    if (!gone) kill(child, SIGKILL);
    int status = wait_status(child);
    ck_assert_msg(gone, "round %d: a process exiting with an open pool did not end", round);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "round %d: status %#x (%s)",
                  round, status, child_failure(status));
    for (int i = 0; i < 2; i++) {
      pid_t w = ld(&S->barpids[slot][i]);
      ck_assert_int_gt(w, 0);
      ck_assert_msg(wait_pid_gone(w, 5), "round %d: worker %d outlived its pool's process", round,
                    (int)w);
    }
    double end = test_now() + 5;
    while (count_all_children() > 0 && test_now() < end) {
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
      nap_ms(5);
    }
    ck_assert_int_eq(count_all_children(), 0);
  }
}
END_TEST

/* ---- maxtasksperchild ---- */

/* int64 i in; int64 i*i and int32 pid out. */
static int pid_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != 8) return 71;
  memcpy(&x, arg, 8);
  x *= x;
  int pid = (int)getpid();
  memcpy(result, &x, 8);
  memcpy((char *)result + 8, &pid, sizeof pid);
  *result_len = 8 + sizeof pid;
  return 0;
}

START_TEST(maxtasksperchild_recycles_workers) {
  for (int workers = 1; workers <= 2; workers++) {
    weft_pool pool = weft_process_pool_new(.workers = workers, .maxtasksperchild = 3);
    ck_assert_uint_ne(pool.id, 0);
    enum { N = 60 };
    weft_future fs[N];
    for (int64_t i = 0; i < N; i++) {
      fs[i] = weft_pool_apply_async(pool, pid_task, &i, sizeof i);
      ck_assert_uint_ne(fs[i].id, 0);
    }
    int pids[N], counts[N], npids = 0;
    for (int64_t i = 0; i < N; i++) {
      const void *data;
      size_t len;
      int rc = weft_future_result_bytes(fs[i], 20, &data, &len);
      CHECK(rc == 0, "task %d: %s (%s)", (int)i, weft_err_name(rc), weft_last_error());
      CHECK(len == 12, "task %d: %zu bytes", (int)i, len);
      int64_t sq;
      int pid;
      memcpy(&sq, data, 8);
      memcpy(&pid, (const char *)data + 8, sizeof pid);
      CHECK(sq == i * i, "task %d: %lld", (int)i, (long long)sq);
      CHECK(pid != getpid(), "task ran in the parent");
      int j = 0;
      while (j < npids && pids[j] != pid) j++;
      if (j == npids) {
        pids[npids] = pid;
        counts[npids++] = 0;
      }
      counts[j]++;
      weft_future_close(fs[i]);
    }
    for (int j = 0; j < npids; j++)
      CHECK(counts[j] <= 3, "workers=%d: pid %d ran %d tasks", workers, pids[j], counts[j]);
    CHECK(npids >= N / 3, "workers=%d: only %d distinct workers", workers, npids);
    finish_pool(pool);
    for (int j = 0; j < npids; j++)
      CHECK(reaped(pids[j]), "workers=%d: worker %d not reaped", workers, pids[j]);
    ck_assert(wait_no_children(5));
  }
}
END_TEST

/* ---- initializer ---- */

static int init_value;
static pid_t init_pid;

static int init_ok(void *arg) {
  init_value = 1000 + (int)V(arg);
  init_pid = getpid();
  inc(&S->init_calls);
  record_pid();
  return 0;
}

/* Gives the value the initializer set in this process, and whether the
 * initializer ran in this very process. */
static int init_task(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  (void)len;
  int out[3] = {init_value, init_pid == getpid(), (int)getpid()};
  memcpy(result, out, sizeof out);
  *result_len = sizeof out;
  return 0;
}

static void run_init_tasks(weft_pool pool, int n, int *pids_out) {
  weft_future fs[64];
  ck_assert_int_le(n, 64);
  for (int i = 0; i < n; i++) fs[i] = weft_pool_apply_async(pool, init_task, NULL, 0);
  for (int i = 0; i < n; i++) {
    const void *data;
    size_t len;
    int rc = weft_future_result_bytes(fs[i], 20, &data, &len);
    CHECK(rc == 0, "task %d: %s (%s)", i, weft_err_name(rc), weft_last_error());
    int out[3];
    CHECK(len == sizeof out, "task %d: %zu bytes", i, len);
    memcpy(out, data, sizeof out);
    CHECK(out[0] == 1007, "task %d saw init_value %d", i, out[0]);
    CHECK(out[1] == 1, "task %d: the initializer did not run in its worker", i);
    if (pids_out) pids_out[i] = out[2];
    weft_future_close(fs[i]);
  }
}

START_TEST(initializer_runs_in_each_worker) {
  weft_pool pool = weft_process_pool_new(.workers = 2, .initializer = init_ok, .initarg = P(7));
  ck_assert_uint_ne(pool.id, 0);
  ck_assert_int_eq(init_value, 0); /* not in the parent */
  expect_workers(pool, 2, NULL);
  run_init_tasks(pool, 40, NULL);
  finish_pool(pool);
  ck_assert_int_eq(ld(&S->init_calls), 2);

  /* Replacements run it too. */
  st(&S->init_calls, 0);
  st(&S->npids, 0);
  pool = weft_process_pool_new(.workers = 2, .maxtasksperchild = 2, .initializer = init_ok,
                               .initarg = P(7));
  ck_assert_uint_ne(pool.id, 0);
  int pids[40];
  run_init_tasks(pool, 40, pids);
  finish_pool(pool);
  int inits = ld(&S->init_calls);
  ck_assert_int_ge(inits, 20);
  for (int i = 0; i < 40; i++) {
    bool found = false;
    for (int j = 0; j < recorded_pids(); j++) found = found || S->pids[j] == pids[i];
    ck_assert_msg(found, "task %d ran in %d, where no initializer ran", i, pids[i]);
  }
}
END_TEST

static int init_fails(void *arg) {
  (void)arg;
  inc(&S->init_calls);
  record_pid();
  return -1;
}

START_TEST(failing_initializer_breaks_pool) {
  for (int round = 0; round < 3; round++) {
    st(&S->init_calls, 0);
    st(&S->npids, 0);
    weft_pool pool = weft_process_pool_new(.workers = 2, .initializer = init_fails);
    ck_assert_uint_ne(pool.id, 0);
    weft_future fs[8];
    int accepted = 0;
    for (int i = 0; i < 8; i++) {
      fs[i] = submit_pattern(pool, i);
      if (fs[i].id == 0)
        ck_assert_int_eq(weft_last_error_code(), WEFT_EBROKEN);
      else
        accepted++;
    }
    for (int i = 0; i < 8; i++) {
      if (fs[i].id == 0) continue;
      double t0 = test_now();
      int rc = weft_future_result(fs[i], 15, NULL);
      ck_assert_msg(rc == WEFT_EBROKEN, "task %d: %s after %.1fs (%s)", i, weft_err_name(rc),
                    test_now() - t0, weft_last_error());
      ck_assert(weft_future_done(fs[i]));
      weft_future_close(fs[i]);
    }
    /* Broken by now, if it was not at once. */
    if (accepted > 0) {
      ck_assert_uint_eq(submit_pattern(pool, 1).id, 0);
      ck_assert_int_eq(weft_last_error_code(), WEFT_EBROKEN);
    } else {
      ck_assert_int_ge(ld(&S->init_calls), 1);
    }
    int64_t items[4] = {1, 2, 3, 4}, results[4];
    ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 4, results, 8), WEFT_EBROKEN);
    double t0 = test_now();
    finish_pool(pool);
    ck_assert_msg(test_now() - t0 < 10, "close and join took %.1fs", test_now() - t0);
    int n = recorded_pids();
    ck_assert_msg(n >= 1 && n <= 4, "the initializer ran %d times for 2 workers", n);
    for (int i = 0; i < n; i++) ck_assert(wait_reaped(S->pids[i], 5));
    ck_assert(wait_no_children(5));
  }
}
END_TEST

/* ---- map ---- */

static int64_t *make_items(size_t n) {
  int64_t *items = malloc((n ? n : 1) * sizeof *items);
  ck_assert_ptr_nonnull(items);
  for (size_t i = 0; i < n; i++) items[i] = (int64_t)i;
  return items;
}

static void map_squares(weft_pool pool, size_t n, long chunksize) {
  int64_t *items = make_items(n);
  int64_t *results = malloc(n * sizeof *results);
  ck_assert_ptr_nonnull(results);
  memset(results, 0xff, n * sizeof *results);
  int rc = weft_pool_map(pool, sq_task, items, 8, n, results, 8, .chunksize = chunksize != 0 ? chunksize : WEFT_DEFAULT);
  CHECK(rc == 0, "map of %zu, chunksize %ld: %s (%s)", n, chunksize, weft_err_name(rc),
        weft_last_error());
  for (size_t i = 0; i < n; i++)
    CHECK(results[i] == (int64_t)i * (int64_t)i, "chunksize %ld: item %zu gave %lld", chunksize,
          i, (long long)results[i]);
  free(items);
  free(results);
}

START_TEST(map_squares_exact) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  map_squares(pool, 1000000 / SLOW, 0);
  map_squares(pool, 100000 / SLOW, 7);
  map_squares(pool, 20000 / SLOW, 1);
  map_squares(pool, 100000 / SLOW, 1L << 40);
  map_squares(pool, 1, 0);
  map_squares(pool, 3, 0);
  finish_pool(pool);
}
END_TEST

/* More workers than weft keeps pidfds for. */
START_TEST(map_with_many_workers) {
  weft_pool pool = weft_process_pool_new(.workers = 12);
  ck_assert_uint_ne(pool.id, 0);
  map_squares(pool, 20000 / SLOW, 1);
  finish_pool(pool);
  ck_assert(wait_no_children(5));
}
END_TEST

/* A chunk too big for max_message is split. */
START_TEST(map_splits_chunks_past_max_message) {
  weft_pool pool = weft_process_pool_new(.workers = 2, .max_message = 4096);
  ck_assert_uint_ne(pool.id, 0);
  map_squares(pool, 20000, 20000);
  map_squares(pool, 20000, 0);
  map_squares(pool, 5000, 1000);
  finish_pool(pool);
}
END_TEST

START_TEST(map_bad_arguments_and_empty) {
  weft_pool pool = weft_process_pool_new(.workers = 1);
  ck_assert_uint_ne(pool.id, 0);
  int64_t items[4] = {1, 2, 3, 4}, results[4];
  ck_assert_int_eq(weft_pool_map(pool, sq_task, NULL, 8, 0, NULL, 8), 0);
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 0, results, 8), 0);
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 4, results, 8, .chunksize = -1),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map(pool, NULL, items, 8, 4, results, 8), WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map(pool, sq_task, NULL, 8, 4, results, 8), WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 4, NULL, 8), WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 4, results, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 4, results, 8), 0);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(results[i], items[i] * items[i]);
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 4, results, 8), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_join(pool, 10), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 4, results, 8), WEFT_ECLOSED);
}
END_TEST

static void map_marks_failures(weft_pool pool, size_t n, long chunksize) {
  int64_t *items = make_items(n);
  int64_t *results = malloc(n * sizeof *results);
  int *errors = malloc(n * sizeof *errors);
  ck_assert_ptr_nonnull(results);
  ck_assert_ptr_nonnull(errors);
  for (size_t i = 0; i < n; i++) errors[i] = 12345;
  int rc = weft_pool_map(pool, sq_fail_task, items, 8, n, results, 8, .chunksize = chunksize != 0 ? chunksize : WEFT_DEFAULT,
                         .errors = errors);
  char msg[512];
  snprintf(msg, sizeof msg, "%s", weft_last_error());
  CHECK(rc == WEFT_ETASKFAILED, "chunksize %ld: map gave %s (%s)", chunksize, weft_err_name(rc),
        msg);
  CHECK(has_number(msg, 13), "the message does not name item 13: '%s'", msg);
  for (size_t i = 0; i < n; i++) {
    if (fails((int64_t)i)) {
      CHECK(errors[i] == WEFT_ETASKFAILED, "chunksize %ld: item %zu: error %d", chunksize, i,
            errors[i]);
    } else {
      CHECK(errors[i] == 0, "chunksize %ld: item %zu: error %d", chunksize, i, errors[i]);
      CHECK(results[i] == (int64_t)i * (int64_t)i, "item %zu: %lld", i, (long long)results[i]);
    }
  }
  free(items);
  free(results);
  free(errors);
}

START_TEST(map_errors_mark_failing_items) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  map_marks_failures(pool, 10000 / SLOW, 7);
  map_marks_failures(pool, 10000 / SLOW, 1);
  map_marks_failures(pool, 10000 / SLOW, 0);
  /* Without an errors array: the first failure is returned all the same. */
  int64_t *items = make_items(100), results[100];
  ck_assert_int_eq(weft_pool_map(pool, sq_fail_task, items, 8, 100, results, 8),
                   WEFT_ETASKFAILED);
  for (int i = 0; i < 100; i++)
    if (!fails(i)) ck_assert_int_eq(results[i], (int64_t)i * i);
  free(items);
  finish_pool(pool);
}
END_TEST

START_TEST(map_chunk_of_dead_or_late_worker_fails) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  enum { N = 200 };
  int64_t *items = make_items(N), results[N];
  int errors[N];
  S->die_at = 35;
  int rc = weft_pool_map(pool, sq_die_task, items, 8, N, results, 8, .chunksize = 10,
                         .errors = errors);
  ck_assert_msg(rc == WEFT_EWORKERDIED, "map gave %s (%s)", weft_err_name(rc), weft_last_error());
  ck_assert_msg(strstr(weft_last_error(), "ForkPoolWorker-") != NULL, "message: '%s'",
                weft_last_error());
  ck_assert_msg(strstr(weft_last_error(), "(item 35)") != NULL, "message: '%s'",
                weft_last_error());
  /* Exactly the item that crashed fails: the others of its chunk ran again. */
  for (int i = 0; i < N; i++) {
    if (i == 35) {
      CHECK(errors[i] == WEFT_EWORKERDIED, "item %d: error %d", i, errors[i]);
    } else {
      CHECK(errors[i] == 0, "item %d: error %d", i, errors[i]);
      CHECK(results[i] == (int64_t)i * i, "item %d", i);
    }
  }
  S->die_at = -1;
  S->sleep_at = 47;
  double t0 = test_now();
  rc = weft_pool_map(pool, sq_sleep_task, items, 8, 80, results, 8, .chunksize = 5,
                     .errors = errors, .timeout = 0.5);
  ck_assert_msg(rc == WEFT_ETASKTIMEOUT, "map gave %s (%s)", weft_err_name(rc), weft_last_error());
  ck_assert_msg(test_now() - t0 < 8, "took %.1fs", test_now() - t0);
  for (int i = 0; i < 80; i++) {
    if (i >= 45 && i < 50) {
      CHECK(errors[i] == WEFT_ETASKTIMEOUT, "item %d: error %d", i, errors[i]);
    } else {
      CHECK(errors[i] == 0, "item %d: error %d", i, errors[i]);
      CHECK(results[i] == (int64_t)i * i, "item %d", i);
    }
  }
  S->sleep_at = -1;
  map_squares(pool, 1000, 0); /* still works */
  free(items);
  finish_pool(pool);
}
END_TEST

struct progress {
  size_t calls, last_done, n;
  int bad_total, decreasing, over, elapsed_bad, wrong_thread;
  double last_elapsed;
  pthread_t caller;
};

static void progress_hook(size_t done, size_t total, double elapsed, void *arg) {
  struct progress *p = arg;
  if (total != p->n) p->bad_total++;
  if (done < p->last_done) p->decreasing++;
  if (done > total) p->over++;
  if (elapsed < p->last_elapsed || elapsed < 0 || !isfinite(elapsed)) p->elapsed_bad++;
  if (!pthread_equal(pthread_self(), p->caller)) p->wrong_thread++;
  p->last_done = done;
  p->last_elapsed = elapsed;
  p->calls++;
}

static void check_progress(weft_pool pool, size_t n, long chunksize) {
  struct progress p = {.n = n, .caller = pthread_self()};
  int64_t *items = make_items(n);
  int64_t *results = malloc(n * sizeof *results);
  ck_assert_ptr_nonnull(results);
  int rc = weft_pool_map(pool, sq_task, items, 8, n, results, 8, .chunksize = chunksize != 0 ? chunksize : WEFT_DEFAULT,
                         .progress = progress_hook, .progress_arg = &p);
  ck_assert_int_eq(rc, 0);
  ck_assert_uint_ge(p.calls, 1);
  ck_assert_uint_le(p.calls, n + 1);
  ck_assert_msg(p.bad_total == 0, "total != n in %d calls", p.bad_total);
  ck_assert_msg(p.decreasing == 0, "done went down %d times", p.decreasing);
  ck_assert_int_eq(p.over, 0);
  ck_assert_int_eq(p.elapsed_bad, 0);
  ck_assert_int_eq(p.wrong_thread, 0);
  ck_assert_uint_eq(p.last_done, n);
  for (size_t i = 0; i < n; i++) CHECK(results[i] == (int64_t)(i * i), "item %zu", i);
  free(items);
  free(results);
}

START_TEST(map_progress_hook) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  check_progress(pool, 20000 / SLOW, 100);
  check_progress(pool, 20000 / SLOW, 0);
  check_progress(pool, 500, 1);
  /* The ready-made bar draws nothing when stderr is not a terminal, and
   * works as a hook. */
  weft_progress_bar(0, 0, 0, NULL);
  weft_progress_bar(5, 10, 0.5, (void *)"label");
  int64_t *items = make_items(1000), results[1000];
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 1000, results, 8,
                                 .progress = weft_progress_bar, .progress_arg = (void *)"squares"),
                   0);
  free(items);
  finish_pool(pool);
  weft_pool tp = weft_thread_pool_new(.workers = 2);
  check_progress(tp, 5000, 10);
  finish_pool(tp);
}
END_TEST

START_TEST(map_on_thread_pool) {
  weft_pool pool = weft_thread_pool_new(.workers = 3);
  ck_assert_uint_ne(pool.id, 0);
  map_squares(pool, 100000 / SLOW, 0);
  map_squares(pool, 10000 / SLOW, 1);
  map_squares(pool, 10000 / SLOW, 7);
  map_squares(pool, 0, 0);
  map_marks_failures(pool, 5000 / SLOW, 7);
  int64_t items[4] = {1, 2, 3, 4}, results[4];
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 4, results, 8, .chunksize = -1),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map(pool, NULL, items, 8, 4, results, 8), WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 4, results, 8, .timeout = 1),
                   WEFT_EINVAL);
  finish_pool(pool);
}
END_TEST

/* ---- imap ---- */

struct src {
  int64_t next, n;
  long calls;
};

static bool counting_source(void *item, void *arg) {
  struct src *s = arg;
  if (s->next >= s->n) return false;
  s->calls++;
  memcpy(item, &s->next, 8);
  s->next++;
  return true;
}

static void imap_ordered(weft_pool pool, int64_t n, long chunksize) {
  struct src s = {0, n, 0};
  weft_imap *it = weft_pool_imap(pool, sq_jitter_task, counting_source, &s, 8, 8,
                                 .chunksize = chunksize != 0 ? chunksize : WEFT_DEFAULT);
  ck_assert_msg(it != NULL, "imap: %s", weft_last_error());
  for (int64_t k = 0; k < n; k++) {
    size_t idx = SIZE_MAX;
    int64_t r = -1;
    int rc = weft_imap_next(it, 20, &idx, &r);
    CHECK(rc == 0, "chunksize %ld: result %lld: %s (%s)", chunksize, (long long)k,
          weft_err_name(rc), weft_last_error());
    CHECK(idx == (size_t)k, "chunksize %ld: result %lld has index %zu", chunksize, (long long)k,
          idx);
    CHECK(r == k * k, "item %lld gave %lld", (long long)k, (long long)r);
  }
  int64_t r;
  ck_assert_int_eq(weft_imap_next(it, 10, NULL, &r), WEFT_EEOF);
  ck_assert_int_eq(weft_imap_next(it, 0, NULL, &r), WEFT_EEOF);
  ck_assert_int_eq(s.calls, n);
  ck_assert_int_eq(weft_imap_free(it), 0);
}

static void imap_unordered(weft_pool pool, int64_t n, long chunksize) {
  struct src s = {0, n, 0};
  weft_imap *it = weft_pool_imap_unordered(pool, sq_jitter_task, counting_source, &s, 8, 8,
                                           .chunksize = chunksize != 0 ? chunksize : WEFT_DEFAULT);
  ck_assert_msg(it != NULL, "imap_unordered: %s", weft_last_error());
  char *seen = calloc((size_t)n, 1);
  ck_assert_ptr_nonnull(seen);
  for (int64_t k = 0; k < n; k++) {
    size_t idx = SIZE_MAX;
    int64_t r = -1;
    int rc = weft_imap_next(it, 20, &idx, &r);
    CHECK(rc == 0, "result %lld: %s (%s)", (long long)k, weft_err_name(rc), weft_last_error());
    CHECK(idx < (size_t)n, "index %zu", idx);
    CHECK(!seen[idx], "index %zu given twice", idx);
    seen[idx] = 1;
    CHECK(r == (int64_t)(idx * idx), "item %zu gave %lld", idx, (long long)r);
  }
  ck_assert_int_eq(weft_imap_next(it, 10, NULL, NULL), WEFT_EEOF);
  ck_assert_int_eq(weft_imap_free(it), 0);
  free(seen);
}

START_TEST(imap_ordered_and_unordered_process) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  imap_ordered(pool, 3000 / SLOW, 0);
  imap_ordered(pool, 3000 / SLOW, 5);
  imap_ordered(pool, 0, 1);
  imap_unordered(pool, 3000 / SLOW, 0);
  imap_unordered(pool, 3000 / SLOW, 4);
  imap_unordered(pool, 0, 1);
  finish_pool(pool);
}
END_TEST

START_TEST(imap_ordered_and_unordered_thread) {
  weft_pool pool = weft_thread_pool_new(.workers = 3);
  ck_assert_uint_ne(pool.id, 0);
  imap_ordered(pool, 3000 / SLOW, 0);
  imap_ordered(pool, 3000 / SLOW, 5);
  imap_unordered(pool, 3000 / SLOW, 0);
  imap_unordered(pool, 3000 / SLOW, 3);
  finish_pool(pool);
}
END_TEST

/* An endless source is pulled only as the window has room. */
static void imap_endless(weft_pool pool, bool unordered, long chunksize, long window, long k) {
  struct src s = {0, INT64_MAX, 0};
  weft_imap *it = weft_pool_imap(pool, sq_jitter_task, counting_source, &s, 8, 8,
                                 .chunksize = chunksize != 0 ? chunksize : WEFT_DEFAULT, .window = window, .unordered = unordered);
  ck_assert_msg(it != NULL, "imap: %s", weft_last_error());
  for (long i = 0; i < k; i++) {
    size_t idx;
    int64_t r;
    int rc = weft_imap_next(it, 20, &idx, &r);
    CHECK(rc == 0, "result %ld: %s (%s)", i, weft_err_name(rc), weft_last_error());
    CHECK(r == (int64_t)(idx * idx), "item %zu gave %lld", idx, (long long)r);
    if (!unordered) CHECK(idx == (size_t)i, "result %ld has index %zu", i, idx);
    CHECK(s.calls <= i + 1 + window * chunksize,
          "%s, chunksize %ld, window %ld: %ld items pulled for %ld results",
          unordered ? "unordered" : "ordered", chunksize, window, s.calls, i + 1);
  }
  ck_assert_int_ge(s.calls, k);
  long pulled = s.calls;
  double t0 = test_now();
  ck_assert_int_eq(weft_imap_free(it), 0);
  ck_assert_msg(test_now() - t0 < 5, "imap_free took %.1fs", test_now() - t0);
  ck_assert_int_eq(s.calls, pulled); /* nothing pulled by free */
}

START_TEST(imap_endless_source_is_bounded_by_window) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  for (int round = 0; round < 3; round++) {
    imap_endless(pool, false, 3, 4, 48);
    imap_endless(pool, false, 1, 2, 50);
    imap_endless(pool, true, 1, 4, 50);
  }
  finish_pool(pool);
  weft_pool tp = weft_thread_pool_new(.workers = 2);
  imap_endless(tp, false, 3, 4, 48);
  imap_endless(tp, true, 1, 3, 50);
  finish_pool(tp);
}
END_TEST

static void imap_failures(weft_pool pool, long chunksize, bool unordered) {
  int64_t n = 300;
  struct src s = {0, n, 0};
  weft_imap *it = weft_pool_imap(pool, sq_fail_task, counting_source, &s, 8, 8,
                                 .chunksize = chunksize != 0 ? chunksize : WEFT_DEFAULT, .unordered = unordered);
  ck_assert_ptr_nonnull(it);
  char *seen = calloc((size_t)n, 1);
  for (int64_t k = 0; k < n; k++) {
    size_t idx = SIZE_MAX;
    int64_t r = -1;
    int rc = weft_imap_next(it, 20, &idx, &r);
    CHECK(idx < (size_t)n && !seen[idx], "result %lld: index %zu", (long long)k, idx);
    seen[idx] = 1;
    if (!unordered) CHECK(idx == (size_t)k, "result %lld has index %zu", (long long)k, idx);
    if (fails((int64_t)idx)) {
      CHECK(rc == WEFT_ETASKFAILED, "item %zu: %s", idx, weft_err_name(rc));
      CHECK(weft_imap_task_error(it) == fail_code((int64_t)idx), "item %zu: task error %d", idx,
            weft_imap_task_error(it));
    } else {
      CHECK(rc == 0, "item %zu: %s (%s)", idx, weft_err_name(rc), weft_last_error());
      CHECK(r == (int64_t)(idx * idx), "item %zu: %lld", idx, (long long)r);
    }
  }
  ck_assert_int_eq(weft_imap_next(it, 10, NULL, NULL), WEFT_EEOF);
  ck_assert_int_eq(weft_imap_free(it), 0);
  free(seen);
}

START_TEST(imap_failing_items_go_on) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  imap_failures(pool, 1, false);
  imap_failures(pool, 7, false);
  imap_failures(pool, 1, true);
  /* A worker dying fails the item it was running; the other items of its
   * chunk run again and give their results. */
  S->die_at = 21;
  struct src s = {0, 40, 0};
  weft_imap *it = weft_pool_imap(pool, sq_die_task, counting_source, &s, 8, 8, .chunksize = 4);
  ck_assert_ptr_nonnull(it);
  for (int64_t k = 0; k < 40; k++) {
    size_t idx = SIZE_MAX;
    int64_t r = -1;
    int rc = weft_imap_next(it, 20, &idx, &r);
    CHECK(idx == (size_t)k, "result %lld has index %zu", (long long)k, idx);
    if (k == 21)
      CHECK(rc == WEFT_EWORKERDIED && strstr(weft_imap_task_message(it), "(item 21)") != NULL,
            "item %lld: %s, '%s'", (long long)k, weft_err_name(rc), weft_imap_task_message(it));
    else
      CHECK(rc == 0 && r == k * k, "item %lld: %s, %lld", (long long)k, weft_err_name(rc),
            (long long)r);
  }
  ck_assert_int_eq(weft_imap_next(it, 10, NULL, NULL), WEFT_EEOF);
  ck_assert_int_eq(weft_imap_free(it), 0);
  S->die_at = -1;
  finish_pool(pool);

  weft_pool tp = weft_thread_pool_new(.workers = 2);
  imap_failures(tp, 1, false);
  imap_failures(tp, 5, true);
  finish_pool(tp);
}
END_TEST

START_TEST(imap_next_times_out_then_goes_on) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  struct src s = {0, 10, 0};
  weft_imap *it = weft_pool_imap(pool, sq_gate0_task, counting_source, &s, 8, 8);
  ck_assert_ptr_nonnull(it);
  /* The source is pulled by next: item 0 starts, and blocks. */
  double t0 = test_now();
  int64_t r;
  ck_assert_int_eq(weft_imap_next(it, 0.1, NULL, &r), WEFT_ETIMEDOUT);
  ck_assert(test_now() - t0 >= 0.09);
  ck_assert(wait_ge(&S->started, 1, 10));
  ck_assert_int_eq(weft_imap_next(it, 0, NULL, &r), WEFT_ETIMEDOUT);
  weft_event_set(&S->gate);
  for (int64_t k = 0; k < 10; k++) {
    size_t idx;
    ck_assert_int_eq(weft_imap_next(it, 10, &idx, &r), 0);
    ck_assert_uint_eq(idx, (size_t)k);
    ck_assert_int_eq(r, k * k);
  }
  ck_assert_int_eq(weft_imap_next(it, 1, NULL, &r), WEFT_EEOF);
  ck_assert_int_eq(weft_imap_free(it), 0);

  /* Freed early, with a task blocked: free waits for it, drops the rest. */
  weft_event_clear(&S->gate);
  st(&S->started, 0);
  struct src s2 = {0, 1000, 0};
  it = weft_pool_imap(pool, sq_gate0_task, counting_source, &s2, 8, 8, .window = 4);
  ck_assert_ptr_nonnull(it);
  ck_assert_int_eq(weft_imap_next(it, 0.05, NULL, &r), WEFT_ETIMEDOUT);
  ck_assert(wait_ge(&S->started, 1, 10));
  weft_event_set(&S->gate);
  t0 = test_now();
  ck_assert_int_eq(weft_imap_free(it), 0);
  ck_assert(test_now() - t0 < 5);
  ck_assert_int_le(s2.calls, 4 + 1);
  weft_imap_free(NULL);

  /* Bad arguments. */
  ck_assert_ptr_null(weft_pool_imap(pool, sq_task, NULL, &s, 8, 8));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_pool_imap(pool, NULL, counting_source, &s, 8, 8));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_pool_imap(pool, sq_task, counting_source, &s, 8, 8, .window = -1));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_pool_imap(pool, sq_task, counting_source, &s, 8, 8, .chunksize = -1));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_pool_imap(pool, sq_task, counting_source, &s, 8, 0));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  finish_pool(pool);
  ck_assert_ptr_null(weft_pool_imap(pool, sq_task, counting_source, &s, 8, 8));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
}
END_TEST

/* ---- as_completed ---- */

/* Task i waits for gates[i]; gives i. */
static int gated_idx_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int i;
  if (len != sizeof i) return 50;
  memcpy(&i, arg, sizeof i);
  inc(&S->started);
  if (weft_event_wait(&S->gates[i], GATE_S) != 0) return 99;
  memcpy(result, &i, sizeof i);
  *result_len = sizeof i;
  return 0;
}

START_TEST(as_completed_in_completion_order) {
  enum { N = 6 };
  weft_pool pool = weft_process_pool_new(.workers = N);
  ck_assert_uint_ne(pool.id, 0);
  for (int round = 0; round < 5; round++) {
    st(&S->started, 0);
    for (int i = 0; i < N; i++) weft_event_clear(&S->gates[i]);
    weft_future fs[N];
    for (int i = 0; i < N; i++) {
      fs[i] = weft_pool_apply_async(pool, gated_idx_task, &i, sizeof i);
      ck_assert_uint_ne(fs[i].id, 0);
    }
    ck_assert_msg(wait_ge(&S->started, N, 15),
                  "%d gated tasks did not start at once on %d idle workers (%d did)", N, N,
                  ld(&S->started));
    weft_as_completed *ac = weft_as_completed_new(fs, N);
    ck_assert_ptr_nonnull(ac);
    double t0 = test_now();
    weft_future f = {0};
    size_t idx = 99;
    ck_assert_int_eq(weft_as_completed_next(ac, 0.1, &f, &idx), WEFT_ETIMEDOUT);
    ck_assert(test_now() - t0 >= 0.09);
    ck_assert_int_eq(weft_as_completed_next(ac, 0, &f, &idx), WEFT_ETIMEDOUT);
    /* Finish them in an order of the round's choosing. */
    for (int k = 0; k < N; k++) {
      int want = round % 2 == 0 ? N - 1 - k : (k * 5 + round) % N;
      weft_event_set(&S->gates[want]);
      int rc = weft_as_completed_next(ac, 10, &f, &idx);
      ck_assert_msg(rc == 0, "round %d: %s", round, weft_err_name(rc));
      ck_assert_uint_eq(idx, (size_t)want);
      ck_assert_uint_eq(f.id, fs[want].id);
      ck_assert(weft_future_done(f));
      const void *data;
      size_t len;
      ck_assert_int_eq(weft_future_result_bytes(f, 0, &data, &len), 0);
      int got;
      ck_assert_uint_eq(len, sizeof got);
      memcpy(&got, data, sizeof got);
      ck_assert_int_eq(got, want);
      if (k < N - 1) ck_assert_int_eq(weft_as_completed_next(ac, 0.02, NULL, NULL), WEFT_ETIMEDOUT);
    }
    ck_assert_int_eq(weft_as_completed_next(ac, 1, &f, &idx), WEFT_EEOF);
    ck_assert_int_eq(weft_as_completed_next(ac, 0, NULL, NULL), WEFT_EEOF);
    ck_assert_int_eq(weft_as_completed_free(ac), 0);
    for (int i = 0; i < N; i++) weft_future_close(fs[i]);
  }
  finish_pool(pool);
}
END_TEST

static void as_completed_many(weft_pool pool, int n) {
  weft_future *fs = malloc((size_t)n * sizeof *fs);
  char *seen = calloc((size_t)n, 1);
  ck_assert(fs && seen);
  for (int i = 0; i < n / 2; i++) fs[i] = submit_pattern(pool, i);
  /* Some already done before watching. */
  ck_assert_int_eq(weft_futures_wait(fs, 1, true, 10), 0);
  weft_as_completed *ac = NULL;
  for (int i = n / 2; i < n; i++) fs[i] = submit_pattern(pool, i);
  ac = weft_as_completed_new(fs, (size_t)n);
  ck_assert_ptr_nonnull(ac);
  for (int k = 0; k < n; k++) {
    weft_future f;
    size_t idx = SIZE_MAX;
    int rc = weft_as_completed_next(ac, 20, &f, &idx);
    CHECK(rc == 0, "next %d: %s", k, weft_err_name(rc));
    CHECK(idx < (size_t)n && !seen[idx], "index %zu", idx);
    seen[idx] = 1;
    CHECK(f.id == fs[idx].id, "future of index %zu", idx);
    CHECK(weft_future_done(f), "index %zu not done", idx);
  }
  ck_assert_int_eq(weft_as_completed_next(ac, 0.5, NULL, NULL), WEFT_EEOF);
  ck_assert_int_eq(weft_as_completed_free(ac), 0);
  for (int i = 0; i < n; i++) expect_pattern(fs[i], i);
  free(fs);
  free(seen);
}

START_TEST(as_completed_each_future_once) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  for (int round = 0; round < 5; round++) as_completed_many(pool, 400 / SLOW);
  finish_pool(pool);
  weft_pool tp = weft_thread_pool_new(.workers = 3);
  for (int round = 0; round < 5; round++) as_completed_many(tp, 400 / SLOW);
  finish_pool(tp);

  weft_future none[1] = {{0}};
  ck_assert_ptr_null(weft_as_completed_new(NULL, 1));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_as_completed_new(none, 0));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_as_completed_new(none, 1));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  ck_assert_int_eq(weft_as_completed_free(NULL), 0);

  /* A future listed more than once is given once, at its first position,
   * as Python's as_completed (it makes a set); free before the end and
   * while some still run gives back the rest at once. */
  weft_pool dp = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(dp.id, 0);
  for (int round = 0; round < 20; round++) {
    weft_future f[3];
    for (int i = 0; i < 3; i++) {
      int64_t v = i;
      f[i] = weft_pool_apply_async(dp, sq_task, &v, sizeof v);
      ck_assert_uint_ne(f[i].id, 0);
    }
    weft_future list[7] = {f[0], f[1], f[0], f[2], f[1], f[2], f[0]};
    weft_as_completed *ac = weft_as_completed_new(list, 7);
    ck_assert_ptr_nonnull(ac);
    bool seen[7] = {false};
    int got = 0;
    weft_future out;
    size_t index;
    while (weft_as_completed_next(ac, 10, &out, &index) == 0) {
      ck_assert_msg(index == 0 || index == 1 || index == 3, "round %d: position %zu given", round,
                    index);
      ck_assert(!seen[index]);
      seen[index] = true;
      ck_assert_uint_eq(out.id, list[index].id);
      got++;
    }
    ck_assert_int_eq(weft_last_error_code(), WEFT_EEOF);
    ck_assert_int_eq(got, 3);
    ck_assert_int_eq(weft_as_completed_free(ac), 0);
    for (int i = 0; i < 3; i++) weft_future_close(f[i]);
  }
  finish_pool(dp);
}
END_TEST

/* ---- callbacks ---- */

struct cb_slot {
  int ok, err, not_done;
  pthread_t thread;
};

static void on_ok(weft_future f, void *arg) {
  struct cb_slot *s = arg;
  if (!weft_future_done(f)) inc(&s->not_done);
  s->thread = pthread_self();
  inc(&s->ok);
}

static void on_err(weft_future f, void *arg) {
  struct cb_slot *s = arg;
  if (!weft_future_done(f)) inc(&s->not_done);
  s->thread = pthread_self();
  inc(&s->err);
}

static int all_calls(struct cb_slot *slots, int n) {
  int c = 0;
  for (int i = 0; i < n; i++) c += ld(&slots[i].ok) + ld(&slots[i].err);
  return c;
}

static bool wait_calls(struct cb_slot *slots, int n, int want, double timeout) {
  double end = test_now() + timeout;
  while (all_calls(slots, n) < want) {
    if (test_now() > end) return false;
    nap_ms(1);
  }
  return true;
}

START_TEST(callback_and_error_callback) {
  weft_pool pool = weft_process_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
  enum { N = 200 };
  static struct cb_slot slots[N + 1];
  weft_future fs[N + 1];
  for (int i = 0; i < N; i++) {
    int code = i % 5 == 3 ? 10 + i : 0;
    fs[i] = weft_pool_apply_async(pool, fail_task, &code, sizeof code, .callback = on_ok,
                                  .error_callback = on_err, .callback_arg = &slots[i]);
    ck_assert_uint_ne(fs[i].id, 0);
  }
  int die = CRASH__EXIT;
  fs[N] = weft_pool_apply_async(pool, crash_task, &die, sizeof die, .callback = on_ok,
                                .error_callback = on_err, .callback_arg = &slots[N]);
  for (int i = 0; i <= N; i++) weft_future_result(fs[i], 20, NULL);
  ck_assert(wait_calls(slots, N + 1, N + 1, 10));
  ck_assert_int_eq(weft_future_result(fs[N], 0, NULL), WEFT_EWORKERDIED);
  for (int i = 0; i <= N; i++) {
    bool failed = i == N || i % 5 == 3;
    CHECK(ld(&slots[i].ok) == !failed && ld(&slots[i].err) == failed,
          "future %d: callback %d times, error_callback %d times", i, ld(&slots[i].ok),
          ld(&slots[i].err));
    CHECK(ld(&slots[i].not_done) == 0, "future %d: not done in its callback", i);
    CHECK(!pthread_equal(slots[i].thread, pthread_self()), "callback ran in the test thread");
  }
  finish_pool(pool);
  ck_assert_int_eq(all_calls(slots, N + 1), N + 1); /* none ran twice */
  for (int i = 0; i <= N; i++) weft_future_close(fs[i]);

  /* On a thread pool too. */
  weft_pool tp = weft_thread_pool_new(.workers = 2);
  memset(slots, 0, sizeof slots);
  for (int i = 0; i < 50; i++) {
    int code = i % 2 ? 5 : 0;
    fs[i] = weft_pool_apply_async(tp, fail_task, &code, sizeof code, .callback = on_ok,
                                  .error_callback = on_err, .callback_arg = &slots[i]);
  }
  ck_assert(wait_calls(slots, 50, 50, 10));
  for (int i = 0; i < 50; i++) {
    ck_assert_int_eq(ld(&slots[i].ok), i % 2 == 0);
    ck_assert_int_eq(ld(&slots[i].err), i % 2 == 1);
    weft_future_close(fs[i]);
  }
  finish_pool(tp);
}
END_TEST

static weft_event release_cb = WEFT_EVENT_INIT;
static int blocker_in, blocker_out;

static void blocking_cb(weft_future f, void *arg) {
  (void)f;
  (void)arg;
  inc(&blocker_in);
  weft_event_wait(&release_cb, GATE_S);
  inc(&blocker_out);
}

static void blocked_callback_delays_nothing(int callback_threads) {
  weft_event_clear(&release_cb);
  st(&blocker_in, 0);
  st(&blocker_out, 0);
  weft_pool pool =
      weft_process_pool_new(.workers = 2, .callback_threads = callback_threads);
  ck_assert_uint_ne(pool.id, 0);
  int zero = 0;
  weft_future a = weft_pool_apply_async(pool, fail_task, &zero, sizeof zero,
                                        .callback = blocking_cb, .error_callback = blocking_cb);
  ck_assert(wait_ge(&blocker_in, 1, 10));
  enum { N = 200 };
  static struct cb_slot slots[N];
  memset(slots, 0, sizeof slots);
  weft_future fs[N];
  for (int i = 0; i < N; i++) {
    unsigned char buf[16];
    size_t len = pattern_arg(i, buf);
    fs[i] = weft_pool_apply_async(pool, pattern_task, buf, len, .callback = on_ok,
                                  .error_callback = on_err, .callback_arg = &slots[i]);
  }
  /* Every result comes while the callback blocks. */
  for (int i = 0; i < N; i++) {
    const void *data;
    size_t len;
    int rc = weft_future_result_bytes(fs[i], 10, &data, &len);
    CHECK(rc == 0, "callback_threads=%d: task %d: %s while a callback blocks", callback_threads, i,
          weft_err_name(rc));
    CHECK(pattern_ok(i, data, len), "task %d", i);
  }
  ck_assert_int_eq(weft_future_result(a, 0, NULL), 0);
  if (callback_threads == 1) {
    /* The only callback thread is blocked: the others wait. */
    ck_assert_int_eq(all_calls(slots, N), 0);
  } else {
    /* Another callback thread runs them meanwhile. */
    ck_assert_msg(wait_calls(slots, N, N, 10), "%d of %d callbacks ran", all_calls(slots, N), N);
  }
  ck_assert_int_eq(ld(&blocker_out), 0);
  weft_event_set(&release_cb);
  ck_assert(wait_ge(&blocker_out, 1, 10));
  ck_assert(wait_calls(slots, N, N, 10));
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(ld(&slots[i].ok), 1);
    weft_future_close(fs[i]);
  }
  weft_future_close(a);
  finish_pool(pool);
}

START_TEST(blocking_callback_delays_no_result) {
  blocked_callback_delays_nothing(0); /* the default: two threads */
  blocked_callback_delays_nothing(2);
  blocked_callback_delays_nothing(1);
  ck_assert_uint_eq(weft_process_pool_new(.workers = 1, .callback_threads = -1).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
}
END_TEST

/* ---- misuse ---- */

static int ptr_task(void *arg, void **result) {
  *result = arg;
  return 0;
}

START_TEST(misuse_is_refused) {
  ck_assert_uint_eq(weft_process_pool_new(.workers = -1).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  /* An explicit 0 is refused, as Python's Pool(0); left out is the default. */
  ck_assert_uint_eq(weft_process_pool_new(.workers = 0).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  {
    weft_pool dflt = weft_process_pool_new(.maxtasksperchild = 0);
    ck_assert_uint_ne(dflt.id, 0);
    int64_t items[3] = {1, 2, 3}, out[3];
    ck_assert_int_eq(weft_pool_map(dflt, sq_task, items, 8, 3, out, 8, .chunksize = 0),
                     WEFT_EINVAL);
    struct src none = {.n = 0};
    ck_assert_ptr_null(weft_pool_imap(dflt, sq_task, counting_source, &none, 8, 8, .chunksize = 0));
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
    ck_assert_int_eq(weft_pool_map(dflt, sq_task, items, 8, 3, out, 8), 0);
    ck_assert(out[2] == 9);
    finish_pool(dflt);
  }
  ck_assert_uint_eq(weft_process_pool_new(.maxtasksperchild = -1).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_uint_eq(weft_process_pool_new(.workers = 1, .max_message = 63).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_uint_eq(weft_process_pool_new(.workers = 1, .max_message = (1UL << 30) + 1).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  char longname[WEFT_NAME_MAX + 8];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  ck_assert_uint_eq(weft_process_pool_new(.workers = 1, .name = longname).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_eq(count_all_children(), 0); /* no worker left by a refused pool */

  weft_pool pool = weft_process_pool_new(.workers = 1, .max_message = 1024);
  ck_assert_uint_ne(pool.id, 0);
  ck_assert_uint_eq(weft_pool_submit(pool, ptr_task, NULL).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_uint_eq(weft_pool_apply_async(pool, NULL, "x", 1).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_uint_eq(weft_pool_apply_async(pool, reverse_task, NULL, 5).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  static char big[2048];
  ck_assert_uint_eq(weft_pool_apply_async(pool, reverse_task, big, 1025).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EMSGSIZE);
  ck_assert_uint_eq(weft_pool_apply_async(pool, reverse_task, big, sizeof big).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_EMSGSIZE);
  weft_future ok = weft_pool_apply_async(pool, reverse_task, big, 256);
  ck_assert_uint_ne(ok.id, 0);
  ck_assert_int_eq(weft_future_result(ok, 10, NULL), 0);
  weft_future_close(ok);

  ck_assert_int_eq(weft_pool_join(pool, 1), WEFT_ERUNNING);
  ck_assert_int_eq(weft_pool_free(pool), WEFT_EBUSY);
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_uint_eq(submit_pattern(pool, 1).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_free(pool), WEFT_EBUSY);
  ck_assert_int_eq(weft_pool_join(pool, 10), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);

  /* Calls after free. */
  ck_assert_uint_eq(submit_pattern(pool, 1).id, 0);
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_close(pool), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_join(pool, 1), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_terminate(pool), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_free(pool), WEFT_ECLOSED);
  int64_t items[2] = {1, 2}, results[2];
  ck_assert_int_eq(weft_pool_map(pool, sq_task, items, 8, 2, results, 8), WEFT_ECLOSED);
  struct src s = {0, 5, 0};
  ck_assert_ptr_null(weft_pool_imap(pool, sq_task, counting_source, &s, 8, 8));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
  weft_future zero = {0};
  const void *data;
  size_t len;
  ck_assert_int_eq(weft_future_result_bytes(zero, 0, &data, &len), WEFT_ECLOSED);

  /* Terminate twice. */
  pool = weft_process_pool_new(.workers = 1);
  ck_assert_int_eq(weft_pool_terminate(pool), 0);
  ck_assert_int_eq(weft_pool_terminate(pool), WEFT_EALREADY);
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_join(pool, 10), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
  ck_assert(wait_no_children(5));
}
END_TEST

/* ---- terminate ---- */

START_TEST(terminate_kills_workers_and_cancels) {
  for (int round = 0; round < 4; round++) {
    weft_event_clear(&S->gate);
    int slot = next_slot++;
    weft_pool pool = weft_process_pool_new(.workers = 2);
    ck_assert_uint_ne(pool.id, 0);
    static struct cb_slot slots[12];
    memset(slots, 0, sizeof slots);
    struct bar_arg a = {slot, 2, 1};
    weft_future fs[12];
    for (int i = 0; i < 2; i++)
      fs[i] = weft_pool_apply_async(pool, barrier_task, &a, sizeof a, .callback = on_ok,
                                    .error_callback = on_err, .callback_arg = &slots[i]);
    ck_assert_msg(wait_ge(&S->bar[slot], 2, 8),
                  "2 blocking tasks did not start at once on 2 idle workers");
    for (int i = 2; i < 12; i++) {
      unsigned char buf[16];
      size_t len = pattern_arg(i, buf);
      fs[i] = weft_pool_apply_async(pool, pattern_task, buf, len, .callback = on_ok,
                                    .error_callback = on_err, .callback_arg = &slots[i]);
    }
    double end = test_now() + 5;
    while (!(weft_future_running(fs[0]) && weft_future_running(fs[1])) && test_now() < end)
      nap_ms(1);
    ck_assert_msg(weft_future_running(fs[0]) && weft_future_running(fs[1]),
                  "tasks running in workers are not running()");
    ck_assert(!weft_future_running(fs[2]) && !weft_future_done(fs[2]));
    /* running() turns true when a worker takes the task, a moment before
     * the task records its pid. */
    end = test_now() + 5;
    while ((ld(&S->barpids[slot][0]) == 0 || ld(&S->barpids[slot][1]) == 0) && test_now() < end)
      nap_ms(1);
    pid_t workers[2] = {ld(&S->barpids[slot][0]), ld(&S->barpids[slot][1])};
    ck_assert(workers[0] != 0 && workers[1] != 0);
    double t0 = test_now();
    ck_assert_int_eq(weft_pool_terminate(pool), 0);
    ck_assert_msg(test_now() - t0 < 3, "terminate took %.1fs", test_now() - t0);
    ck_assert_int_eq(weft_pool_terminate(pool), WEFT_EALREADY);
    ck_assert_uint_eq(submit_pattern(pool, 1).id, 0);
    ck_assert_int_eq(weft_last_error_code(), WEFT_ECLOSED);
    for (int i = 0; i < 12; i++) {
      int rc = weft_future_result(fs[i], 5, NULL);
      CHECK(rc == WEFT_ECANCELED, "round %d: future %d: %s", round, i, weft_err_name(rc));
      CHECK(weft_future_done(fs[i]), "future %d not done", i);
      if (i >= 2) CHECK(weft_future_cancelled(fs[i]), "pending future %d not cancelled", i);
    }
    t0 = test_now();
    int rc = weft_pool_join(pool, 10);
    ck_assert_msg(rc == 0, "join: %s", weft_err_name(rc));
    ck_assert_msg(test_now() - t0 < 3, "join after terminate took %.1fs", test_now() - t0);
    /* Killed now (their tasks would wait GATE_S), and reaped: no zombie. */
    for (int i = 0; i < 2; i++)
      ck_assert_msg(reaped(workers[i]), "worker %d: state %c", (int)workers[i],
                    process_state(workers[i]));
    ck_assert_int_eq(count_all_children(), 0);
    ck_assert(wait_calls(slots, 12, 12, 10));
    for (int i = 0; i < 12; i++) {
      ck_assert_int_eq(ld(&slots[i].err), 1);
      ck_assert_int_eq(ld(&slots[i].ok), 0);
    }
    ck_assert_int_eq(weft_pool_free(pool), 0);
    for (int i = 0; i < 12; i++) weft_future_close(fs[i]);
  }
}
END_TEST

/* Records that it ran. */
static int note_task(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  (void)len;
  (void)result;
  record_pid();
  *result_len = 0;
  return 0;
}

/* A task that has not started can be cancelled, and then never runs;
 * running() is true only for the task a worker runs now. */
START_TEST(cancel_pending_task_of_process_pool) {
  weft_pool pool = weft_process_pool_new(.workers = 1);
  ck_assert_uint_ne(pool.id, 0);
  for (int round = 0; round < 3; round++) {
    weft_event_clear(&S->gate);
    st(&S->started, 0);
    st(&S->npids, 0);
    int64_t zero = 0;
    weft_future running = weft_pool_apply_async(pool, sq_gate0_task, &zero, sizeof zero);
    ck_assert(wait_ge(&S->started, 1, 10));
    double end = test_now() + 5;
    while (!weft_future_running(running) && test_now() < end) nap_ms(1);
    ck_assert(weft_future_running(running));
    weft_future pending[4];
    for (int i = 0; i < 4; i++) {
      pending[i] = weft_pool_apply_async(pool, note_task, NULL, 0);
      ck_assert_uint_ne(pending[i].id, 0);
    }
    nap(0.05); /* time enough to hand them to the busy worker, if it would */
    for (int i = 0; i < 4; i++) {
      ck_assert_msg(!weft_future_running(pending[i]),
                    "round %d: task %d waiting behind a running one says it is running", round, i);
      ck_assert(!weft_future_done(pending[i]));
      ck_assert(!weft_future_cancelled(pending[i]));
      ck_assert_int_eq(weft_future_result(pending[i], 0.02, NULL), WEFT_ETIMEDOUT);
      int rc = weft_future_cancel(pending[i]);
      ck_assert_msg(rc == 0, "round %d: cancel of pending task %d: %s", round, i,
                    weft_err_name(rc));
      ck_assert_int_eq(weft_future_cancel(pending[i]), 0);
      ck_assert(weft_future_cancelled(pending[i]));
      ck_assert(weft_future_done(pending[i]));
      ck_assert_int_eq(weft_future_result(pending[i], 0, NULL), WEFT_ECANCELED);
    }
    ck_assert_int_eq(weft_future_cancel(running), WEFT_EBUSY);
    weft_event_set(&S->gate);
    int64_t r = -1;
    const void *data;
    size_t len;
    ck_assert_int_eq(weft_future_result_bytes(running, 10, &data, &len), 0);
    ck_assert_uint_eq(len, 8);
    memcpy(&r, data, 8);
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(weft_future_cancel(running), WEFT_EBUSY);
    ck_assert(!weft_future_cancelled(running));
    /* The pool goes on; the cancelled tasks never ran. */
    weft_future after = weft_pool_apply_async(pool, note_task, NULL, 0);
    ck_assert_int_eq(weft_future_result(after, 10, NULL), 0);
    ck_assert_int_eq(ld(&S->npids), 1);
    weft_future_close(after);
    weft_future_close(running);
    for (int i = 0; i < 4; i++) weft_future_close(pending[i]);
  }
  /* Futures closed while pending or running: the tasks still run, their
   * outcomes are dropped (ASan: nothing leaks). */
  weft_event_clear(&S->gate);
  st(&S->started, 0);
  st(&S->npids, 0);
  int64_t zero = 0;
  weft_future blocked = weft_pool_apply_async(pool, sq_gate0_task, &zero, sizeof zero);
  ck_assert(wait_ge(&S->started, 1, 10));
  ck_assert_int_eq(weft_future_close(blocked), 0);
  for (int i = 0; i < 5; i++) {
    weft_future f = weft_pool_apply_async(pool, note_task, NULL, 0);
    ck_assert_uint_ne(f.id, 0);
    ck_assert_int_eq(weft_future_close(f), 0);
  }
  weft_event_set(&S->gate);
  finish_pool(pool);
  ck_assert_int_eq(ld(&S->npids), 5);
}
END_TEST

/* ---- scoped ---- */

static int sleepy_pattern_task(const void *arg, size_t len, void *result, size_t *result_len) {
  nap_ms(5);
  return pattern_task(arg, len, result, result_len);
}

START_TEST(scoped_pool_waits_for_queued_tasks) {
  enum { N = 60 };
  weft_future fs[N];
  for (int round = 0; round < 3; round++) {
    {
      weft_pool_scoped pool = weft_process_pool_new(.workers = 2);
      ck_assert_uint_ne(pool.id, 0);
      for (int i = 0; i < N; i++) {
        unsigned char buf[16];
        size_t len = pattern_arg(i, buf);
        fs[i] = weft_pool_apply_async(pool, sleepy_pattern_task, buf, len);
        ck_assert_uint_ne(fs[i].id, 0);
      }
    }
    ck_assert_int_eq(count_all_children(), 0);
    for (int i = 0; i < N; i++) {
      CHECK(weft_future_done(fs[i]), "round %d: task %d not done after the block", round, i);
      const void *data;
      size_t len;
      CHECK(weft_future_result_bytes(fs[i], 0, &data, &len) == 0, "task %d", i);
      CHECK(pattern_ok(i, data, len), "task %d", i);
      weft_future_close(fs[i]);
    }
  }
  {
    weft_pool_scoped tp = weft_thread_pool_new(.workers = 2);
    for (int i = 0; i < N; i++) {
      unsigned char buf[16];
      size_t len = pattern_arg(i, buf);
      fs[i] = weft_pool_apply_async(tp, sleepy_pattern_task, buf, len);
    }
  }
  for (int i = 0; i < N; i++) {
    CHECK(weft_future_done(fs[i]), "thread pool: task %d not done after the block", i);
    weft_future_close(fs[i]);
  }
  weft_pool none = {0};
  weft_pool_scope_end(&none); /* a failed pool: ignored */
}
END_TEST

/* ---- leaks ---- */

static void busy_round(void) {
  weft_pool pool = weft_process_pool_new(.workers = 2, .maxtasksperchild = 5);
  ck_assert_uint_ne(pool.id, 0);
  weft_future fs[50];
  for (int i = 0; i < 50; i++) fs[i] = submit_pattern(pool, i);
  int die = CRASH__EXIT;
  weft_future crash = weft_pool_apply_async(pool, crash_task, &die, sizeof die);
  for (int i = 0; i < 50; i++) expect_pattern(fs[i], i);
  ck_assert_int_eq(weft_future_result(crash, 20, NULL), WEFT_EWORKERDIED);
  weft_future_close(crash);
  map_squares(pool, 1000, 0);
  imap_ordered(pool, 100, 3);
  finish_pool(pool);
}

START_TEST(no_fd_thread_or_child_leak) {
  int fds = count_fds();
  busy_round();
  ck_assert_int_eq(count_fds(), fds);
  /* weft may keep a helper thread of its own from the first pool on. */
  nap(0.2);
  int threads = count_threads();
  for (int round = 0; round < 3; round++) {
    busy_round();
    ck_assert_int_eq(count_fds(), fds);
    ck_assert(wait_no_children(5));
    ck_assert_msg(wait_threads_le(threads, 3), "round %d: %d threads, %d before", round,
                  count_threads(), threads);
  }
  /* And after terminate. */
  weft_pool pool = weft_process_pool_new(.workers = 3);
  expect_workers(pool, 3, NULL);
  ck_assert_int_eq(weft_pool_terminate(pool), 0);
  ck_assert_int_eq(weft_pool_join(pool, 10), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
  ck_assert_int_eq(count_fds(), fds);
  ck_assert_int_eq(count_all_children(), 0);
  ck_assert_msg(wait_threads_le(threads, 3), "%d threads, %d before", count_threads(), threads);
}
END_TEST

static TCase *ppool_tcase(const char *name, double timeout) {
  TCase *tc = weft_tcase(name, timeout);
  tcase_add_checked_fixture(tc, shm_setup, NULL);
  return tc;
}

Suite *weft_test_suite(void) {
  Suite *s = suite_create("ppool");
  TCase *tc = ppool_tcase("apply_async", 60);
  tcase_add_test(tc, apply_async_results_exact);
  tcase_add_test(tc, apply_async_large_and_empty);
  tcase_add_test(tc, apply_async_task_failure_keeps_code);
  tcase_add_test(tc, apply_async_on_thread_pool);
  tcase_add_test(tc, workers_are_named_processes);
  suite_add_tcase(s, tc);

  tc = ppool_tcase("worker_death", 60);
  tcase_add_test(tc, worker_dies_sigsegv);
  tcase_add_test(tc, worker_dies_abort);
  tcase_add_test(tc, worker_dies_exit);
  tcase_add_test(tc, worker_dies__exit);
  tcase_add_test(tc, worker_dies_sigkill_from_outside);
  tcase_add_test(tc, worker_dies_among_many_processes);
  tcase_add_test(tc, killed_parent_leaves_no_worker);
  tcase_add_test(tc, exit_with_open_pool_leaves_no_worker);
  suite_add_tcase(s, tc);

  tc = ppool_tcase("timeouts", 60);
  tcase_add_test(tc, task_timeout_of_pool);
  tcase_add_test(tc, task_timeout_per_submit);
  tcase_add_test(tc, task_timeout_bad_uses);
  suite_add_tcase(s, tc);

  tc = ppool_tcase("workers", 60);
  tcase_add_test(tc, maxtasksperchild_recycles_workers);
  tcase_add_test(tc, initializer_runs_in_each_worker);
  tcase_add_test(tc, failing_initializer_breaks_pool);
  suite_add_tcase(s, tc);

  tc = ppool_tcase("map", 60);
  tcase_add_test(tc, map_squares_exact);
  tcase_add_test(tc, map_with_many_workers);
  tcase_add_test(tc, map_splits_chunks_past_max_message);
  tcase_add_test(tc, map_bad_arguments_and_empty);
  tcase_add_test(tc, map_errors_mark_failing_items);
  tcase_add_test(tc, map_chunk_of_dead_or_late_worker_fails);
  tcase_add_test(tc, map_progress_hook);
  tcase_add_test(tc, map_on_thread_pool);
  suite_add_tcase(s, tc);

  tc = ppool_tcase("imap", 60);
  tcase_add_test(tc, imap_ordered_and_unordered_process);
  tcase_add_test(tc, imap_ordered_and_unordered_thread);
  tcase_add_test(tc, imap_endless_source_is_bounded_by_window);
  tcase_add_test(tc, imap_failing_items_go_on);
  tcase_add_test(tc, imap_next_times_out_then_goes_on);
  suite_add_tcase(s, tc);

  tc = ppool_tcase("futures", 60);
  tcase_add_test(tc, as_completed_in_completion_order);
  tcase_add_test(tc, as_completed_each_future_once);
  tcase_add_test(tc, callback_and_error_callback);
  tcase_add_test(tc, blocking_callback_delays_no_result);
  suite_add_tcase(s, tc);

  tc = ppool_tcase("lifecycle", 60);
  tcase_add_test(tc, misuse_is_refused);
  tcase_add_test(tc, terminate_kills_workers_and_cancels);
  tcase_add_test(tc, cancel_pending_task_of_process_pool);
  tcase_add_test(tc, scoped_pool_waits_for_queued_tasks);
  tcase_add_test(tc, no_fd_thread_or_child_leak);
  suite_add_tcase(s, tc);
  return s;
}
