/* SPDX-License-Identifier: MIT */
/* ThreadSanitizer understands weft's primitives: programs that protect
 * shared data correctly with them run clean, and one that protects it with
 * the wrong locks is reported. Only meaningful in the TSan build (make test
 * runs it there); elsewhere the suite has no tests. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#ifdef WEFT_SANITIZE_THREAD
static void run(const char *scenario, char *out, size_t size, int *status) {
  *status = helper_run(scenario, out, size, 60);
}

START_TEST(correct_locking_is_race_free) {
  static char out[65536];
  int status;
  run("race_free_locks", out, sizeof out, &status);
  ck_assert_msg(strstr(out, "ThreadSanitizer") == NULL, "TSan reported:\n%s", out);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x:\n%s", status, out);
  ck_assert_ptr_nonnull(strstr(out, "counter 40002"));
}
END_TEST

START_TEST(wrong_lock_race_is_reported) {
  static char out[65536];
  int status;
  run("race_wrong_lock", out, sizeof out, &status);
  ck_assert_msg(strstr(out, "WARNING: ThreadSanitizer: data race") != NULL,
                "no race reported:\n%s", out);
  ck_assert_msg(strstr(out, "add_under_own_lock") != NULL, "report lacks the racing function:\n%s",
                out);
}
END_TEST
#endif

Suite *weft_test_suite(void) {
  Suite *s = suite_create("tsan");
#ifdef WEFT_SANITIZE_THREAD
  TCase *tc = weft_tcase("tsan", 120);
  tcase_add_test(tc, correct_locking_is_race_free);
  tcase_add_test(tc, wrong_lock_race_is_reported);
  suite_add_tcase(s, tc);
#endif
  return s;
}
