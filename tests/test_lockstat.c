/* SPDX-License-Identifier: MIT */
/* Tests of weft/lockstat.h, the lock contention profile: exact counts for
 * a known program, a contention forced with the lock's waiter count (never
 * a sleep), the waiter's call site, the table and the JSON, the
 * environment variable, and the figures of a process tree added up and
 * printed once. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* ---- reading the outputs ---- */

/* The JSON of the figures so far, in a buffer the caller frees. */
static char *json_now(void) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(weft_lockstat_write_json(f), 0);
  ck_assert_int_eq(fclose(f), 0);
  return text;
}

/* The table weft_lockstat_print writes on stderr, caught in a file. */
static void table_now(char *out, size_t size) {
  int fd = memfd_create("table", 0);
  ck_assert_int_ge(fd, 0);
  int saved = dup(2);
  fflush(stderr);
  dup2(fd, 2);
  int rc = weft_lockstat_print();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  ck_assert_int_eq(rc, 0);
  ssize_t n = pread(fd, out, size - 1, 0);
  close(fd);
  ck_assert_int_ge(n, 0);
  out[n] = '\0';
}

/* The object of the lock named `name` (and of process pid, if pid > 0) in
 * the JSON's "locks", copied into obj; false if there is none. */
static bool json_lock(const char *json, const char *name, int pid, char *obj, size_t size) {
  char want[160], want_pid[32];
  snprintf(want, sizeof want, "\"name\": \"%s\",", name);
  snprintf(want_pid, sizeof want_pid, "\"pid\": %d,", pid);
  for (const char *p = strstr(json, "\n  {\"label\""); p != NULL;
       p = strstr(p + 1, "\n  {\"label\"")) {
    const char *end = strstr(p, "]}");
    if (end == NULL) return false;
    size_t n = (size_t)(end - p) + 2;
    if (n >= size) n = size - 1;
    memcpy(obj, p, n);
    obj[n] = '\0';
    if (strstr(obj, want) != NULL && (pid <= 0 || strstr(obj, want_pid) != NULL)) return true;
  }
  return false;
}

/* The number after "field": in obj; fails the test if it is missing. */
static long long json_num(const char *obj, const char *field) {
  char key[64];
  snprintf(key, sizeof key, "\"%s\": ", field);
  const char *p = strstr(obj, key);
  ck_assert_msg(p != NULL, "no %s in %s", field, obj);
  return strtoll(p + strlen(key), NULL, 10);
}

/* The table row of a label (as printed, quotes included): its acquired and
 * contended counts. */
static bool table_row(const char *table, const char *label, long long *acq, long long *cont) {
  for (const char *p = table; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    size_t n = strlen(label);
    if (strncmp(p, label, n) == 0 && p[n] == ' ' && sscanf(p + n, "%lld %lld", acq, cont) == 2)
      return true;
  }
  return false;
}

static void take(weft_lock *l, int n) {
  for (int i = 0; i < n; i++) {
    ck_assert_int_eq(weft_lock_acquire(l, WEFT_FOREVER), 0);
    ck_assert_int_eq(weft_lock_release(l), 0);
  }
}

/* ---- counts ---- */

START_TEST(uncontended_counts_are_exact) {
  ck_assert(!weft_lockstat_enabled());
  ck_assert_int_eq(weft_lockstat_enable(.quiet = true), 0);
  ck_assert(weft_lockstat_enabled());
  weft_lock counted, untouched;
  weft_lock_init(&counted, .name = "counted");
  weft_lock_init(&untouched, .name = "untouched");
  take(&counted, 1000);
  /* A try and a timed acquire of a free lock are acquisitions too; a try
   * that fails is not. */
  ck_assert_int_eq(weft_lock_acquire(&counted, 0), 0);
  ck_assert_int_eq(weft_lock_acquire(&counted, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_lock_release(&counted), 0);
  ck_assert_int_eq(weft_lock_acquire(&counted, 1.0), 0);
  ck_assert_int_eq(weft_lock_release(&counted), 0);

  char *json = json_now(), obj[4096];
  ck_assert_msg(json_lock(json, "counted", 0, obj, sizeof obj), "no \"counted\" in\n%s", json);
  ck_assert_int_eq(json_num(obj, "acquisitions"), 1002);
  ck_assert_int_eq(json_num(obj, "contended"), 0);
  ck_assert_int_eq(json_num(obj, "wait_total_ns"), 0);
  ck_assert_int_eq(json_num(obj, "pid"), getpid());
  ck_assert(strstr(obj, "\"kind\": \"Lock\"") != NULL);
  ck_assert(strstr(obj, "\"shared\": false") != NULL);
  ck_assert(strstr(obj, "\"sites\": []") != NULL);
  /* The first WEFT_LOCKSTAT_SAMPLE holds are all timed, then fewer. */
  long long timed = json_num(obj, "holds_timed");
  ck_assert_int_ge(timed, WEFT_LOCKSTAT_SAMPLE);
  ck_assert_int_lt(timed, 1002);
  ck_assert_int_ge(json_num(obj, "hold_total_ns"), json_num(obj, "hold_max_ns"));
  ck_assert_msg(!json_lock(json, "untouched", 0, obj, sizeof obj), "a lock never taken is listed");
  free(json);

  char table[8192];
  table_now(table, sizeof table);
  long long acq = -1, cont = -1;
  ck_assert_msg(table_row(table, "\"counted\"", &acq, &cont), "no row in\n%s", table);
  ck_assert_int_eq(acq, 1002);
  ck_assert_int_eq(cont, 0);
  ck_assert(strstr(table, "weft lockstat: 1 lock of process") == table);

  /* reset forgets; disable stops counting. */
  ck_assert_int_eq(weft_lockstat_reset(), 0);
  take(&counted, 5);
  json = json_now();
  ck_assert(json_lock(json, "counted", 0, obj, sizeof obj));
  ck_assert_int_eq(json_num(obj, "acquisitions"), 5);
  free(json);
  ck_assert_int_eq(weft_lockstat_disable(), 0);
  take(&counted, 5);
  json = json_now();
  ck_assert(json_lock(json, "counted", 0, obj, sizeof obj));
  ck_assert_int_eq(json_num(obj, "acquisitions"), 5);
  free(json);
}
END_TEST

START_TEST(every_hold_timed_with_sample_1) {
  ck_assert_int_eq(weft_lockstat_enable(.quiet = true, .sample = 1), 0);
  weft_lock l = WEFT_LOCK_INIT_NAMED("every");
  take(&l, 3 * WEFT_LOCKSTAT_SAMPLE);
  char *json = json_now(), obj[4096];
  ck_assert(json_lock(json, "every", 0, obj, sizeof obj));
  ck_assert_int_eq(json_num(obj, "acquisitions"), 3 * WEFT_LOCKSTAT_SAMPLE);
  ck_assert_int_eq(json_num(obj, "holds_timed"), 3 * WEFT_LOCKSTAT_SAMPLE);
  ck_assert(strstr(json, "\"sample\": 1,") != NULL);
  free(json);
}
END_TEST

static void *release_it(void *arg) {
  return (void *)(intptr_t)weft_lock_release(arg);
}

static long long holds_timed(const char *json, const char *name) {
  char obj[4096];
  ck_assert_msg(json_lock(json, name, 0, obj, sizeof obj), "no \"%s\" in\n%s", name, json);
  return json_num(obj, "holds_timed");
}

/* Holds timed at once (nested), and one that another thread ended (a Lock
 * may be released by any thread): every hold the taker ends itself is
 * still timed. */
START_TEST(nested_holds_and_a_hold_ended_elsewhere_are_timed) {
  ck_assert_int_eq(weft_lockstat_enable(.quiet = true, .sample = 1), 0);
  weft_lock outer = WEFT_LOCK_INIT_NAMED("outer"), inner = WEFT_LOCK_INIT_NAMED("inner");
  weft_lock handed = WEFT_LOCK_INIT_NAMED("handed");
  for (int i = 0; i < 50; i++) {
    ck_assert_int_eq(weft_lock_acquire(&outer, WEFT_FOREVER), 0);
    ck_assert_int_eq(weft_lock_acquire(&inner, WEFT_FOREVER), 0);
    ck_assert_int_eq(weft_lock_release(&inner), 0);
    ck_assert_int_eq(weft_lock_release(&outer), 0);
  }
  ck_assert_int_eq(weft_lock_acquire(&handed, WEFT_FOREVER), 0);
  weft_thread t = weft_thread_new(release_it, .arg = &handed);
  ck_assert_int_eq(weft_thread_start(t), 0);
  void *r = (void *)1;
  ck_assert_int_eq(weft_thread_join(t, 10, &r), 0);
  ck_assert_ptr_eq(r, NULL);
  weft_thread_close(t);
  take(&outer, 10);
  take(&handed, 1);
  take(&outer, 5);
  char *json = json_now();
  ck_assert_int_eq(holds_timed(json, "outer"), 65);
  ck_assert_int_eq(holds_timed(json, "inner"), 50);
  ck_assert_int_eq(holds_timed(json, "handed"), 1); /* the hold ended elsewhere is not */
  free(json);
}
END_TEST

/* A timed hold marks the lock's word until its release, which clears the
 * mark with the pid whoever releases it: a release by another thread, with
 * the profile turned off meanwhile, around a Condition's wait, and by the
 * process that takes over from a holder that died. */
static int hold_and_die(void *arg) {
  weft_lock_acquire(arg, WEFT_FOREVER);
  _exit(0);
}

START_TEST(a_timed_hold_leaves_no_mark_on_the_word) {
  ck_assert_int_eq(weft_lockstat_enable(.quiet = true, .sample = 1), 0);
  weft_lock l = WEFT_LOCK_INIT_NAMED("marked");
  for (int i = 0; i < 100; i++) {
    ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
    ck_assert_uint_ne(l.word, (uint32_t)getpid()); /* marked */
    if (i % 2 == 0) {
      ck_assert_int_eq(weft_lock_release(&l), 0);
    } else {
      weft_thread t = weft_thread_new(release_it, .arg = &l);
      ck_assert_int_eq(weft_thread_start(t), 0);
      void *r = (void *)1;
      ck_assert_int_eq(weft_thread_join(t, 10, &r), 0);
      ck_assert_ptr_eq(r, NULL);
      weft_thread_close(t);
    }
    ck_assert_uint_eq(l.word, 0);
    ck_assert_int_eq(weft_lock_release(&l), WEFT_EPERM);
  }
  ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lockstat_disable(), 0);
  ck_assert_int_eq(weft_lock_release(&l), 0);
  ck_assert_uint_eq(l.word, 0);
  ck_assert_int_eq(weft_lockstat_enable(.quiet = true, .sample = 1), 0);

  weft_cond c;
  ck_assert_int_eq(weft_cond_init(&c, .lock = &l), 0);
  ck_assert_int_eq(weft_lock_acquire(&l, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_cond_wait(&c, 0.001), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_lock_release(&l), 0);
  ck_assert_uint_eq(l.word, 0);
  ck_assert_int_eq(weft_cond_destroy(&c), 0);

  weft_lock *shared = weft_lock_new(.name = "orphaned");
  ck_assert_ptr_nonnull(shared);
  weft_process p = weft_process_new(hold_and_die, .arg = shared);
  ck_assert_int_eq(weft_process_start(p), 0);
  ck_assert_int_eq(weft_process_join(p, 10), 0);
  weft_process_close(p);
  ck_assert_uint_ne(shared->word & 0x3fffff, 0); /* still the dead child's */
  ck_assert_int_eq(weft_lockstat_disable(), 0); /* so that this hold is not timed */
  ck_assert_int_eq(weft_lock_acquire(shared, 10), WEFT_EOWNERDEAD);
  ck_assert_uint_eq(shared->word, (uint32_t)getpid());
  ck_assert_int_eq(weft_lock_release(shared), 0);
  ck_assert_uint_eq(shared->word, 0);
  weft_lock_free(shared);
}
END_TEST

START_TEST(rlock_reentry_is_one_acquisition) {
  ck_assert_int_eq(weft_lockstat_enable(.quiet = true), 0);
  weft_rlock r;
  weft_rlock_init(&r, .name = "reentrant");
  for (int i = 0; i < 10; i++) {
    ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
    ck_assert_int_eq(weft_rlock_acquire(&r, WEFT_FOREVER), 0);
    ck_assert_int_eq(weft_rlock_release(&r), 0);
    ck_assert_int_eq(weft_rlock_release(&r), 0);
  }
  char *json = json_now(), obj[4096];
  ck_assert(json_lock(json, "reentrant", 0, obj, sizeof obj));
  ck_assert_int_eq(json_num(obj, "acquisitions"), 10);
  ck_assert_int_eq(json_num(obj, "holds_timed"), 10);
  ck_assert(strstr(obj, "\"kind\": \"RLock\"") != NULL);
  free(json);
}
END_TEST

/* ---- contention ---- */

static weft_lock contended_lock = WEFT_LOCK_INIT_NAMED("contended");
static int waiter_line, waiter_rc = -1;

static void *waiter(void *arg) {
  (void)arg;
  waiter_line = __LINE__; waiter_rc = weft_lock_acquire(&contended_lock, WEFT_FOREVER);
  weft_lock_release(&contended_lock);
  return NULL;
}

START_TEST(a_waiter_is_counted_with_its_call_site) {
  ck_assert_int_eq(weft_lockstat_enable(.quiet = true), 0);
  ck_assert_int_eq(weft_lock_acquire(&contended_lock, WEFT_FOREVER), 0);
  pthread_t t = spawn(waiter, NULL);
  /* The waiter has found the lock taken once it counts itself a waiter. */
  double end = test_now() + 10;
  while (__atomic_load_n(&contended_lock.waiters, __ATOMIC_ACQUIRE) == 0) {
    ck_assert_msg(test_now() < end, "the waiter never waited");
    nap_ms(1);
  }
  nap_ms(2); /* a wait long enough to be told from noise */
  ck_assert_int_eq(weft_lock_release(&contended_lock), 0);
  join(t);
  ck_assert_int_eq(waiter_rc, 0);

  char site[256];
  snprintf(site, sizeof site, "%s:%d", __FILE__, waiter_line);
  char *json = json_now(), obj[4096];
  ck_assert(json_lock(json, "contended", 0, obj, sizeof obj));
  ck_assert_int_eq(json_num(obj, "acquisitions"), 2);
  ck_assert_int_eq(json_num(obj, "contended"), 1);
  ck_assert_int_ge(json_num(obj, "wait_total_ns"), 1000000);
  ck_assert_int_eq(json_num(obj, "wait_max_ns"), json_num(obj, "wait_total_ns"));
  /* The main thread's hold (its first, so timed) spans its 2 ms nap. The
   * wait may outlast it by any wake-up delay, so it bounds nothing. */
  ck_assert_int_ge(json_num(obj, "hold_max_ns"), 2000000);
  char want[320];
  snprintf(want, sizeof want, "\"sites\": [{\"site\": \"%s\", \"contended\": 1, ", site);
  ck_assert_msg(strstr(obj, want) != NULL, "no %s in %s", want, obj);
  free(json);

  char table[8192];
  table_now(table, sizeof table);
  long long acq = -1, cont = -1;
  ck_assert_msg(table_row(table, "\"contended\"", &acq, &cont), "no row in\n%s", table);
  ck_assert_int_eq(acq, 2);
  ck_assert_int_eq(cont, 1);
  snprintf(want, sizeof want, "    waited at %s: 1 time, ", site);
  ck_assert_msg(strstr(table, want) != NULL, "no \"%s\" in\n%s", want, table);
}
END_TEST

/* A lock that waited is listed before one that did not. */
START_TEST(rows_are_sorted_by_total_wait) {
  ck_assert_int_eq(weft_lockstat_enable(.quiet = true), 0);
  weft_lock busy = WEFT_LOCK_INIT_NAMED("busy_but_free");
  take(&busy, 100);
  ck_assert_int_eq(weft_lock_acquire(&contended_lock, WEFT_FOREVER), 0);
  pthread_t t = spawn(waiter, NULL);
  double end = test_now() + 10;
  while (__atomic_load_n(&contended_lock.waiters, __ATOMIC_ACQUIRE) == 0) {
    ck_assert_msg(test_now() < end, "the waiter never waited");
    nap_ms(1);
  }
  ck_assert_int_eq(weft_lock_release(&contended_lock), 0);
  join(t);
  char table[8192];
  table_now(table, sizeof table);
  const char *a = strstr(table, "\n\"contended\""), *b = strstr(table, "\n\"busy_but_free\"");
  ck_assert_msg(a != NULL && b != NULL && a < b, "not sorted by wait:\n%s", table);
}
END_TEST

/* ---- a process tree ---- */

static int child_takes(void *arg) {
  for (int i = 0; i < 30; i++) {
    if (weft_lock_acquire(arg, WEFT_FOREVER) != 0) return 1;
    weft_lock_release(arg);
  }
  return 0;
}

START_TEST(a_childs_figures_are_added_at_its_exit) {
  ck_assert_int_eq(weft_lockstat_enable(.quiet = true), 0);
  weft_lock *l = weft_lock_new(.name = "between");
  ck_assert_ptr_nonnull(l);
  take(l, 20);
  weft_process p = start_process(child_takes, l);
  ck_assert_int_eq(finish_process(p, 20), 0);
  char *json = json_now(), obj[4096];
  ck_assert(json_lock(json, "between", 0, obj, sizeof obj));
  ck_assert_int_eq(json_num(obj, "acquisitions"), 50);
  ck_assert_int_eq(json_num(obj, "processes"), 2);
  ck_assert_int_eq(json_num(obj, "pid"), 0);
  ck_assert(strstr(obj, "\"shared\": true") != NULL);
  ck_assert(strstr(json, "\"children\": 1,") != NULL);
  free(json);
  ck_assert_int_eq(weft_lock_free(l), 0);
}
END_TEST

/* ---- the environment variable, in a program of its own ---- */

static int run_helper_with(const char *env, char *out, size_t size) {
  if (env != NULL)
    setenv("WEFT_LOCKSTAT", env, 1);
  else
    unsetenv("WEFT_LOCKSTAT");
  int status = helper_run("lockstat_tree", out, size, 20);
  unsetenv("WEFT_LOCKSTAT");
  return status;
}

START_TEST(env_table_of_the_tree_printed_once) {
  static char out[16384];
  int status = run_helper_with("1", out, sizeof out);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x:\n%s", status, out);
  int parent = 0, child = 0;
  const char *ids = strstr(out, "parent pid=");
  ck_assert_msg(ids != NULL && sscanf(ids, "parent pid=%d child pid=%d", &parent, &child) == 2,
                "%s", out);
  ck_assert_int_eq(count_substr(out, "weft lockstat:"), 1);
  char head[128];
  snprintf(head, sizeof head, "weft lockstat: 3 locks of process %d and 1 child process,",
           parent);
  ck_assert_msg(strstr(out, head) != NULL, "no \"%s\" in\n%s", head, out);
  long long acq = -1, cont = -1;
  ck_assert_msg(table_row(out, "\"shared\"", &acq, &cont), "%s", out);
  ck_assert_int_eq(acq, 150);
  ck_assert_int_eq(cont, 0);
  ck_assert(table_row(out, "\"private\"", &acq, &cont));
  ck_assert_int_eq(acq, 3);
  char label[64];
  snprintf(label, sizeof label, "\"private\" (pid %d)", child);
  ck_assert_msg(table_row(out, label, &acq, &cont), "no %s in\n%s", label, out);
  ck_assert_int_eq(acq, 7);
}
END_TEST

START_TEST(env_json_to_a_file) {
  char path[] = "/tmp/weft-lockstat-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  char env[128];
  snprintf(env, sizeof env, "json:%s", path);
  static char out[16384];
  int status = run_helper_with(env, out, sizeof out);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x:\n%s", status, out);
  ck_assert_msg(strstr(out, "weft lockstat:") == NULL, "json: alone printed a table:\n%s", out);
  static char json[16384];
  ssize_t n = pread(fd, json, sizeof json - 1, 0);
  close(fd);
  unlink(path);
  ck_assert_int_gt(n, 0);
  json[n] = '\0';
  char obj[4096];
  ck_assert_msg(json_lock(json, "shared", 0, obj, sizeof obj), "%s", json);
  ck_assert_int_eq(json_num(obj, "acquisitions"), 150);
  ck_assert_int_eq(json_num(obj, "processes"), 2);
  ck_assert(strstr(json, "\"children\": 1,") != NULL);
  int child = 0;
  const char *ids = strstr(out, "child pid=");
  ck_assert(ids != NULL && sscanf(ids, "child pid=%d", &child) == 1);
  ck_assert(json_lock(json, "private", child, obj, sizeof obj));
  ck_assert_int_eq(json_num(obj, "acquisitions"), 7);
}
END_TEST

START_TEST(env_bad_value_is_reported_and_ignored) {
  static char out[16384];
  int status = run_helper_with("2", out, sizeof out);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ck_assert_int_eq(count_substr(out, "weft: WEFT_LOCKSTAT=2 is not 1 or json:FILE"), 1);
  ck_assert_msg(strstr(out, "weft lockstat:") == NULL, "%s", out);
  status = run_helper_with("1,sample=0", out, sizeof out);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ck_assert_int_eq(count_substr(out, "weft: WEFT_LOCKSTAT=1,sample=0 is not"), 1);
  ck_assert(strstr(out, "weft lockstat:") == NULL);
}
END_TEST

START_TEST(env_unwritable_json_says_so_at_exit) {
  static char out[16384];
  int status = run_helper_with("json:/nonexistent-dir/x.json", out, sizeof out);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ck_assert_msg(count_substr(out, "weft: WEFT_LOCKSTAT: cannot write /nonexistent-dir/x.json: ") == 1,
                "%s", out);
}
END_TEST

/* ---- errors ---- */

START_TEST(bad_arguments) {
  ck_assert_int_eq(weft_lockstat_enable(.sample = -1), WEFT_EINVAL);
  ck_assert_str_eq(weft_last_error(), "weft_lockstat_enable: sample must be >= 0, not -1");
  ck_assert(!weft_lockstat_enabled());
  ck_assert_int_eq(weft_lockstat_write_json(NULL), WEFT_EINVAL);
  ck_assert_str_eq(weft_last_error(), "weft_lockstat_write_json: out is NULL");
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("test_lockstat");
  TCase *tc = weft_tcase("counts", 20);
  tcase_add_test(tc, uncontended_counts_are_exact);
  tcase_add_test(tc, every_hold_timed_with_sample_1);
  tcase_add_test(tc, nested_holds_and_a_hold_ended_elsewhere_are_timed);
  tcase_add_test(tc, rlock_reentry_is_one_acquisition);
  tcase_add_test(tc, a_timed_hold_leaves_no_mark_on_the_word);
  tcase_add_test(tc, bad_arguments);
  suite_add_tcase(s, tc);

  tc = weft_tcase("contention", 20);
  tcase_add_test(tc, a_waiter_is_counted_with_its_call_site);
  tcase_add_test(tc, rows_are_sorted_by_total_wait);
  suite_add_tcase(s, tc);

  tc = weft_tcase("processes", 30);
  tcase_add_test(tc, a_childs_figures_are_added_at_its_exit);
  tcase_add_test(tc, env_table_of_the_tree_printed_once);
  tcase_add_test(tc, env_json_to_a_file);
  tcase_add_test(tc, env_bad_value_is_reported_and_ignored);
  tcase_add_test(tc, env_unwritable_json_says_so_at_exit);
  suite_add_tcase(s, tc);
  return s;
}
