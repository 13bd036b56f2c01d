/* SPDX-License-Identifier: MIT */
/* Tests of weft/shm.h: shared memory segments (anonymous and named, the
 * ownership of names, fd hygiene) and Value / Array (types, bounds, the
 * lock, across processes, owner death).
 *
 * Child processes never call ck_assert: they report through their exit
 * code, which the test asserts. Every named segment is called
 * "weft-shmtest-<runner pid>-<pid of its creator>-<tag>", so runs of the
 * suite in parallel do not meet, and the last test checks that the run left
 * nothing in /dev/shm. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* ---- helpers ---- */

#define NAME_SIZE 128

/* The runner's pid, set before it forks the tests: what the names of one
 * run of the suite share. */
static int run_id;

/* A name unique to this run and this process; tag tells the test's names
 * apart. */
static void test_name(char *buf, const char *tag) {
  snprintf(buf, NAME_SIZE, "weft-shmtest-%d-%d-%s", run_id, (int)getpid(), tag);
}

/* Whether /dev/shm holds name (with or without its leading '/'). */
static bool shm_exists(const char *name) {
  char path[WEFT_SHM_NAME_MAX + 16];
  snprintf(path, sizeof path, "/dev/shm/%s", name[0] == '/' ? name + 1 : name);
  return access(path, F_OK) == 0;
}

static int run_process(weft_process_target target, void *arg) {
  return finish_process(start_process(target, arg), 30);
}

static weft_shm *must_new(size_t size, const char *name) {
  weft_shm *s = weft_shm_new(size, .name = name);
  ck_assert_msg(s != NULL, "weft_shm_new: %s", weft_last_error());
  return s;
}

static weft_shm *must_attach(const char *name) {
  weft_shm *s = weft_shm_attach(name);
  ck_assert_msg(s != NULL, "weft_shm_attach: %s", weft_last_error());
  return s;
}

/* Attaches to name and unlinks it: a test's clean-up for a name whose
 * creator is gone. */
static void unlink_by_name(const char *name) {
  weft_shm *s = must_attach(name);
  ck_assert_int_eq(weft_shm_unlink(s), 0);
  ck_assert_int_eq(weft_shm_close(s), 0);
  ck_assert(!shm_exists(name));
}

/* ================================================================ segments */

/* What a child is asked to do with a segment, in weft_shared_alloc memory. */
struct job {
  char name[NAME_SIZE];
  unsigned char *buf; /* an inherited mapping */
  size_t size;
  weft_event ready, go;
  int result;
};

static struct job *new_job(const char *name) {
  struct job *j = shared(sizeof *j);
  if (name != NULL) snprintf(j->name, sizeof j->name, "%s", name);
  weft_event_init(&j->ready);
  weft_event_init(&j->go);
  return j;
}

static int write_pattern(void *arg) {
  struct job *j = arg;
  for (size_t i = 0; i < j->size; i++)
    if (j->buf[i] != (unsigned char)(i * 7)) return 1;
  for (size_t i = 0; i < j->size; i++) j->buf[i] = (unsigned char)(i * 13 + 1);
  return 0;
}

START_TEST(shm_anonymous_is_shared_with_a_child) {
  weft_shm *s = weft_shm_new(10000);
  ck_assert_ptr_nonnull(s);
  unsigned char *buf = weft_shm_buf(s);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq((uintptr_t)buf % 64, 0);
  ck_assert_uint_eq(weft_shm_size(s), 10000);
  ck_assert_ptr_null(weft_shm_name(s));
  for (size_t i = 0; i < 10000; i++) ck_assert_uint_eq(buf[i], 0);
  for (size_t i = 0; i < 10000; i++) buf[i] = (unsigned char)(i * 7);
  struct job *j = new_job(NULL);
  j->buf = buf;
  j->size = 10000;
  ck_assert_int_eq(run_process(write_pattern, j), 0);
  for (size_t i = 0; i < 10000; i++) ck_assert_uint_eq(buf[i], (unsigned char)(i * 13 + 1));
  /* An anonymous segment has no name to remove. */
  ck_assert_int_eq(weft_shm_unlink(s), WEFT_EINVAL);
  ck_assert_int_eq(weft_shm_close(s), 0);
  weft_shared_free(j);
}
END_TEST

START_TEST(shm_new_rejects_size_zero_and_huge) {
  ck_assert_ptr_null(weft_shm_new(0));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "weft_shm_new"));
  char name[NAME_SIZE];
  test_name(name, "zero");
  ck_assert_ptr_null(weft_shm_new(0, .name = name));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert(!shm_exists(name));
  ck_assert_ptr_null(weft_shm_new(SIZE_MAX));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  /* A size the file takes but no mapping can: the name made for it is
   * removed again. */
  int fds = count_fds();
  size_t huge = (size_t)1 << 62;
  ck_assert_ptr_null(weft_shm_new(huge));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ENOMEM);
  ck_assert_ptr_null(weft_shm_new(huge, .name = name));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ENOMEM);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), name));
  ck_assert(!shm_exists(name));
  ck_assert_int_eq(count_fds(), fds);
}
END_TEST

START_TEST(shm_named_create_and_attach_in_one_process) {
  char name[NAME_SIZE], slashed[NAME_SIZE + 1];
  test_name(name, "one");
  snprintf(slashed, sizeof slashed, "/%s", name);
  weft_shm *c = must_new(4096, name);
  ck_assert_str_eq(weft_shm_name(c), slashed);
  ck_assert_uint_eq(weft_shm_size(c), 4096);
  ck_assert(shm_exists(name));
  unsigned char *cb = weft_shm_buf(c);
  ck_assert_uint_eq((uintptr_t)cb % 64, 0);
  for (int i = 0; i < 4096; i++) ck_assert_uint_eq(cb[i], 0);

  /* Both forms of the name reach the same segment, mapped elsewhere. */
  weft_shm *a = must_attach(slashed);
  weft_shm *b = must_attach(name);
  ck_assert_str_eq(weft_shm_name(a), slashed);
  ck_assert_str_eq(weft_shm_name(b), slashed);
  ck_assert_uint_eq(weft_shm_size(a), 4096);
  unsigned char *ab = weft_shm_buf(a), *bb = weft_shm_buf(b);
  ck_assert_ptr_ne(ab, cb);
  ck_assert_uint_eq((uintptr_t)ab % 64, 0);
  memcpy(cb, "hello", 6);
  ck_assert_str_eq((char *)ab, "hello");
  memcpy(bb + 100, "back", 5);
  ck_assert_str_eq((char *)cb + 100, "back");

  /* Closing attachers unmaps them only. */
  ck_assert_int_eq(weft_shm_close(a), 0);
  ck_assert_int_eq(weft_shm_close(b), 0);
  ck_assert(shm_exists(name));
  ck_assert_str_eq((char *)cb, "hello");
  ck_assert_int_eq(weft_shm_unlink(c), 0);
  ck_assert(!shm_exists(name));
  ck_assert_int_eq(weft_shm_close(c), 0);
}
END_TEST

/* Attaches by name (not through an inherited mapping), checks what the
 * parent wrote and answers. */
static int attach_and_answer(void *arg) {
  struct job *j = arg;
  weft_shm *s = weft_shm_attach(j->name);
  if (s == NULL) return 1;
  char *buf = weft_shm_buf(s);
  if (weft_shm_size(s) != 8192 || strcmp(buf, "from parent") != 0) return 2;
  strcpy(buf + 4096, "from child");
  return weft_shm_close(s) == 0 ? 0 : 3;
}

/* Creates a segment, lets the parent attach, and reads its answer. */
static int create_and_wait(void *arg) {
  struct job *j = arg;
  weft_shm *s = weft_shm_new(j->size, .name = j->name);
  if (s == NULL) return 1;
  strcpy(weft_shm_buf(s), "made by child");
  weft_event_set(&j->ready);
  if (weft_event_wait(&j->go, 20) != 0) return 2;
  if (strcmp((char *)weft_shm_buf(s) + 100, "seen") != 0) return 3;
  return weft_shm_close(s) == 0 ? 0 : 4;
}

START_TEST(shm_named_shared_with_another_process_both_ways) {
  char name[NAME_SIZE];
  test_name(name, "parent");
  weft_shm *c = must_new(8192, name);
  strcpy(weft_shm_buf(c), "from parent");
  struct job *j = new_job(name);
  ck_assert_int_eq(run_process(attach_and_answer, j), 0);
  ck_assert_str_eq((char *)weft_shm_buf(c) + 4096, "from child");
  ck_assert(shm_exists(name)); /* the attacher's exit left it */
  ck_assert_int_eq(weft_shm_unlink(c), 0);
  ck_assert_int_eq(weft_shm_close(c), 0);

  /* Now the child creates and the parent attaches. */
  test_name(j->name, "child");
  j->size = 3000;
  weft_process p = start_process(create_and_wait, j);
  ck_assert_int_eq(weft_event_wait(&j->ready, 20), 0);
  weft_shm *a = must_attach(j->name);
  ck_assert_uint_eq(weft_shm_size(a), 3000);
  ck_assert_str_eq((char *)weft_shm_buf(a), "made by child");
  strcpy((char *)weft_shm_buf(a) + 100, "seen");
  weft_event_set(&j->go);
  ck_assert_int_eq(finish_process(p, 30), 0);
  /* The creator exited normally: its name is gone, our mapping stays. */
  ck_assert(!shm_exists(j->name));
  ck_assert_str_eq((char *)weft_shm_buf(a), "made by child");
  ck_assert_int_eq(weft_shm_close(a), 0);
  weft_shared_free(j);
}
END_TEST

START_TEST(shm_bad_names_are_einval) {
  char longest[WEFT_SHM_NAME_MAX + 2], too_long[WEFT_SHM_NAME_MAX + 3];
  /* Unique, and exactly WEFT_SHM_NAME_MAX bytes. */
  test_name(longest, "long");
  size_t used = strlen(longest);
  memset(longest + used, 'x', WEFT_SHM_NAME_MAX - used);
  longest[WEFT_SHM_NAME_MAX] = '\0';
  snprintf(too_long, sizeof too_long, "%sy", longest);
  const char *bad[] = {"", "/", "a/b", "/a/b", "//a", "a/", ".", "..", "/..", too_long};
  int fds = count_fds();
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_msg(weft_shm_new(64, .name = bad[i]) == NULL, "new accepted '%s'", bad[i]);
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
    ck_assert_ptr_nonnull(strstr(weft_last_error(), "weft_shm_new"));
    ck_assert_msg(weft_shm_attach(bad[i]) == NULL, "attach accepted '%s'", bad[i]);
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
    ck_assert_ptr_nonnull(strstr(weft_last_error(), "weft_shm_attach"));
  }
  ck_assert_ptr_null(weft_shm_attach(NULL));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_eq(count_fds(), fds);
  ck_assert(!shm_exists(too_long));

  /* The longest name works, with or without its '/'. */
  weft_shm *s = must_new(64, longest);
  ck_assert_uint_eq(strlen(weft_shm_name(s)), WEFT_SHM_NAME_MAX + 1);
  char slashed[WEFT_SHM_NAME_MAX + 3];
  snprintf(slashed, sizeof slashed, "/%s", longest);
  weft_shm *a = must_attach(slashed);
  ck_assert_int_eq(weft_shm_close(a), 0);
  ck_assert_int_eq(weft_shm_unlink(s), 0);
  ck_assert_int_eq(weft_shm_close(s), 0);
  ck_assert(!shm_exists(longest));
}
END_TEST

START_TEST(shm_existing_name_is_eexist) {
  char name[NAME_SIZE], slashed[NAME_SIZE + 1];
  test_name(name, "dup");
  snprintf(slashed, sizeof slashed, "/%s", name);
  weft_shm *c = must_new(100, name);
  strcpy(weft_shm_buf(c), "first");
  int fds = count_fds();
  ck_assert_ptr_null(weft_shm_new(100, .name = name));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EEXIST);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "already exists"));
  ck_assert_ptr_nonnull(strstr(weft_last_error(), slashed));
  ck_assert_ptr_null(weft_shm_new(200, .name = slashed));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EEXIST);
  ck_assert_int_eq(count_fds(), fds);
  /* The failed creates left the first segment as it was. */
  weft_shm *a = must_attach(name);
  ck_assert_uint_eq(weft_shm_size(a), 100);
  ck_assert_str_eq((char *)weft_shm_buf(a), "first");
  ck_assert_int_eq(weft_shm_close(a), 0);
  ck_assert_int_eq(weft_shm_unlink(c), 0);
  ck_assert_int_eq(weft_shm_close(c), 0);
}
END_TEST

START_TEST(shm_attach_missing_is_enoent) {
  char name[NAME_SIZE], expect[NAME_SIZE + 64];
  test_name(name, "missing");
  int fds = count_fds();
  ck_assert_ptr_null(weft_shm_attach(name));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ENOENT);
  snprintf(expect, sizeof expect, "no shared memory segment named '/%s'", name);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), expect));
  ck_assert_int_eq(count_fds(), fds);
  ck_assert(!shm_exists(name)); /* attach never creates */
}
END_TEST

START_TEST(shm_attach_size_rules) {
  char name[NAME_SIZE];
  test_name(name, "size");
  weft_shm *c = must_new(5000, name);
  memset(weft_shm_buf(c), 'z', 5000);
  int fds = count_fds();
  ck_assert_ptr_null(weft_shm_attach(name, .size = 5001));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "5001"));
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "5000"));
  ck_assert_int_eq(count_fds(), fds);
  weft_shm *small = weft_shm_attach(name, .size = 10);
  ck_assert_ptr_nonnull(small);
  ck_assert_uint_eq(weft_shm_size(small), 10);
  ck_assert_uint_eq(((unsigned char *)weft_shm_buf(small))[9], 'z');
  weft_shm *exact = weft_shm_attach(name, .size = 5000);
  ck_assert_ptr_nonnull(exact);
  ck_assert_uint_eq(weft_shm_size(exact), 5000);
  weft_shm *whole = weft_shm_attach(name, .size = 0);
  ck_assert_ptr_nonnull(whole);
  ck_assert_uint_eq(weft_shm_size(whole), 5000);
  ck_assert_int_eq(weft_shm_close(small), 0);
  ck_assert_int_eq(weft_shm_close(exact), 0);
  ck_assert_int_eq(weft_shm_close(whole), 0);
  ck_assert_int_eq(weft_shm_unlink(c), 0);
  ck_assert_int_eq(weft_shm_close(c), 0);
  ck_assert_int_eq(count_fds(), fds);
}
END_TEST

START_TEST(shm_unlink_removes_the_name_not_the_mappings) {
  char name[NAME_SIZE];
  test_name(name, "unlink");
  weft_shm *c = must_new(256, name);
  weft_shm *a = must_attach(name);
  ck_assert_int_eq(weft_shm_unlink(c), 0);
  ck_assert(!shm_exists(name));
  ck_assert_ptr_null(weft_shm_attach(name));
  ck_assert_int_eq(weft_last_error_code(), WEFT_ENOENT);
  /* Both mappings still work, and still share. */
  strcpy(weft_shm_buf(a), "still here");
  ck_assert_str_eq((char *)weft_shm_buf(c), "still here");
  ck_assert_str_eq(weft_shm_name(c), weft_shm_name(a));
  /* Again, from either handle: the name is gone. */
  ck_assert_int_eq(weft_shm_unlink(c), WEFT_ENOENT);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "already unlinked"));
  ck_assert_int_eq(weft_shm_unlink(a), WEFT_ENOENT);
  ck_assert_int_eq(weft_shm_close(a), 0);
  ck_assert_int_eq(weft_shm_close(c), 0);

  /* An attacher may unlink too. */
  c = must_new(256, name);
  a = must_attach(name);
  ck_assert_int_eq(weft_shm_unlink(a), 0);
  ck_assert(!shm_exists(name));
  ck_assert_int_eq(weft_shm_unlink(c), WEFT_ENOENT);
  ck_assert_int_eq(weft_shm_close(a), 0);
  ck_assert_int_eq(weft_shm_close(c), 0);
}
END_TEST

/* An unlinked handle does not remove a newer segment that took its name. */
START_TEST(shm_unlink_twice_spares_a_new_segment_of_that_name) {
  char name[NAME_SIZE];
  test_name(name, "reuse");
  weft_shm *old = must_new(64, name);
  ck_assert_int_eq(weft_shm_unlink(old), 0);
  weft_shm *new = must_new(64, name);
  ck_assert_int_eq(weft_shm_unlink(old), WEFT_ENOENT);
  ck_assert(shm_exists(name));
  ck_assert_int_eq(weft_shm_close(old), 0);
  ck_assert_int_eq(weft_shm_unlink(new), 0);
  ck_assert_int_eq(weft_shm_close(new), 0);
  ck_assert(!shm_exists(name));
}
END_TEST

START_TEST(shm_close_never_unlinks) {
  char name[NAME_SIZE];
  test_name(name, "close");
  weft_shm *c = must_new(128, name);
  strcpy(weft_shm_buf(c), "kept");
  ck_assert_int_eq(weft_shm_close(c), 0);
  ck_assert(shm_exists(name));
  weft_shm *a = must_attach(name);
  ck_assert_str_eq((char *)weft_shm_buf(a), "kept");
  ck_assert_int_eq(weft_shm_close(a), 0);
  ck_assert(shm_exists(name));
  ck_assert_int_eq(weft_shm_close(NULL), 0);
  unlink_by_name(name);
}
END_TEST

/* Creates two named segments, closes one, and exits normally -- by
 * returning, or through exit() from deep inside the target. */
static int create_and_exit(void *arg) {
  struct job *j = arg;
  char kept[NAME_SIZE + 8];
  snprintf(kept, sizeof kept, "%s-kept", j->name);
  weft_shm *a = weft_shm_new(4096, .name = j->name);
  weft_shm *b = weft_shm_new(4096, .name = kept);
  if (a == NULL || b == NULL) return 1;
  if (weft_shm_close(a) != 0) return 2;
  if (j->result == 1) exit(0);
  return 0;
}

START_TEST(shm_creator_exit_removes_its_names) {
  for (int how = 0; how < 2; how++) {
    char name[NAME_SIZE], kept[NAME_SIZE + 8];
    test_name(name, how ? "exit" : "return");
    snprintf(kept, sizeof kept, "%s-kept", name);
    struct job *j = new_job(name);
    j->result = how;
    ck_assert_int_eq(run_process(create_and_exit, j), 0);
    ck_assert(!shm_exists(name));
    ck_assert(!shm_exists(kept));
    weft_shared_free(j);
  }
}
END_TEST

static int attach_and_exit(void *arg) {
  struct job *j = arg;
  weft_shm *s = weft_shm_attach(j->name);
  if (s == NULL) return 1;
  ((char *)weft_shm_buf(s))[0] = 'A';
  /* left open on purpose: exit must not unlink either way */
  if (j->result == 1) return weft_shm_close(s) == 0 ? 0 : 2;
  return 0;
}

START_TEST(shm_attacher_exit_keeps_the_name) {
  char name[NAME_SIZE];
  test_name(name, "attacher");
  weft_shm *c = must_new(64, name);
  struct job *j = new_job(name);
  for (int how = 0; how < 2; how++) {
    j->result = how;
    ck_assert_int_eq(run_process(attach_and_exit, j), 0);
    ck_assert(shm_exists(name));
  }
  ck_assert_uint_eq(((char *)weft_shm_buf(c))[0], 'A');
  ck_assert_int_eq(weft_shm_unlink(c), 0);
  ck_assert_int_eq(weft_shm_close(c), 0);
  ck_assert(!shm_exists(name));
  weft_shared_free(j);
}
END_TEST

/* A child that inherits the creator's handle (if still open) and registry. */
static int inherit_and_exit(void *arg) {
  struct job *j = arg;
  if (j->buf != NULL) j->buf[0] = 'C';
  return 0;
}

START_TEST(shm_child_of_the_creator_keeps_the_name) {
  char name[NAME_SIZE];
  test_name(name, "inherit");
  weft_shm *c = must_new(64, name);
  struct job *j = new_job(name);
  j->buf = weft_shm_buf(c);
  ck_assert_int_eq(run_process(inherit_and_exit, j), 0);
  ck_assert(shm_exists(name));
  ck_assert_uint_eq(j->buf[0], 'C');
  /* A raw fork whose child ends with exit() runs the exit rules too. */
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) exit(j->buf[0] == 'C' ? 0 : 1);
  int status = wait_status(pid);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  ck_assert(shm_exists(name));
  /* Even after closing its handle the parent still owns the name. */
  ck_assert_int_eq(weft_shm_close(c), 0);
  j->buf = NULL;
  ck_assert_int_eq(run_process(inherit_and_exit, j), 0);
  ck_assert(shm_exists(name));
  unlink_by_name(name);
  weft_shared_free(j);
}
END_TEST

static int create_and_die(void *arg) {
  struct job *j = arg;
  if (weft_shm_new(64, .name = j->name) == NULL) return 1;
  kill(getpid(), SIGKILL);
  return 2;
}

START_TEST(shm_creator_killed_leaves_the_name) {
  char name[NAME_SIZE];
  test_name(name, "killed");
  struct job *j = new_job(name);
  ck_assert_int_eq(run_process(create_and_die, j), -SIGKILL);
  ck_assert(shm_exists(name)); /* as documented: nobody could clean up */
  unlink_by_name(name);
  weft_shared_free(j);
}
END_TEST

/* The creator's exit removes its own object only: not a newer one that
 * took the name after someone else unlinked the first. */
START_TEST(shm_creator_exit_spares_a_recreated_name) {
  char name[NAME_SIZE];
  test_name(name, "recreated");
  struct job *j = new_job(name);
  j->size = 64;
  weft_process p = start_process(create_and_wait, j);
  ck_assert_int_eq(weft_event_wait(&j->ready, 20), 0);
  weft_shm *a = must_attach(name);
  strcpy((char *)weft_shm_buf(a) + 100, "seen");
  ck_assert_int_eq(weft_shm_unlink(a), 0);
  ck_assert_int_eq(weft_shm_close(a), 0);
  weft_shm *mine = must_new(64, name);
  weft_event_set(&j->go);
  ck_assert_int_eq(finish_process(p, 30), 0);
  ck_assert(shm_exists(name));
  ck_assert_int_eq(weft_shm_unlink(mine), 0);
  ck_assert_int_eq(weft_shm_close(mine), 0);
  weft_shared_free(j);
}
END_TEST

START_TEST(shm_null_handle) {
  ck_assert_ptr_null(weft_shm_buf(NULL));
  ck_assert_uint_eq(weft_shm_size(NULL), 0);
  ck_assert_ptr_null(weft_shm_name(NULL));
  ck_assert_int_eq(weft_shm_unlink(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_shm_close(NULL), 0);
}
END_TEST

START_TEST(shm_no_fd_leaks) {
  char name[NAME_SIZE];
  test_name(name, "fds");
  /* Warm up whatever opens a descriptor once (the deadlock detector, the
   * sanitizers). */
  weft_shm_close(must_new(64, NULL));
  int fds = count_fds();
  for (int i = 0; i < 300; i++) {
    weft_shm *anon = must_new(4096, NULL);
    weft_shm *c = must_new(4096, name);
    weft_shm *a = must_attach(name);
    ck_assert_ptr_null(weft_shm_new(64, .name = name));            /* EEXIST */
    ck_assert_ptr_null(weft_shm_attach(name, .size = 8192));       /* EINVAL */
    ck_assert_ptr_null(weft_shm_new(64, .name = "a/b"));           /* EINVAL */
    ck_assert_int_eq(weft_shm_unlink(a), 0);
    ck_assert_ptr_null(weft_shm_attach(name));                     /* ENOENT */
    ck_assert_int_eq(weft_shm_unlink(c), WEFT_ENOENT);
    ck_assert_int_eq(weft_shm_close(a), 0);
    ck_assert_int_eq(weft_shm_close(c), 0);
    ck_assert_int_eq(weft_shm_close(anon), 0);
  }
  ck_assert_int_eq(count_fds(), fds);
  ck_assert(!shm_exists(name));
}
END_TEST

/* ---- the registry under threads and forks ---- */

#define CHURNERS 3
/* Each churning thread leaves half its names to the exit rules: a bound
 * keeps /dev/shm small even if a child hangs. */
#define CHURN_MAX 4000

/* GCC 12's AddressSanitizer does not lock its allocator around fork: a
 * child forked while another thread is inside malloc may hang in its own
 * first malloc. Under it the churning threads pause around each fork, and
 * only the plain and TSan builds fork while they run. */
#if defined(WEFT_SANITIZE_ADDRESS)
#define QUIESCE_FORKS 1
#else
#define QUIESCE_FORKS 0
#endif

struct churn {
  int stop;
  int pause;
  int paused;   /* churners waiting at their pause point */
  int finished; /* churners that reached CHURN_MAX */
  int failures;
  int rounds;
  int index;
};

static void churn_pause_point(struct churn *c) {
  if (!__atomic_load_n(&c->pause, __ATOMIC_ACQUIRE)) return;
  __atomic_add_fetch(&c->paused, 1, __ATOMIC_ACQ_REL);
  while (__atomic_load_n(&c->pause, __ATOMIC_ACQUIRE)) nap_ms(1);
  __atomic_sub_fetch(&c->paused, 1, __ATOMIC_ACQ_REL);
}

/* Under QUIESCE_FORKS: waits until every running churner is paused. */
static void churn_hold(struct churn *c, int running) {
  __atomic_store_n(&c->pause, 1, __ATOMIC_RELEASE);
  while (__atomic_load_n(&c->paused, __ATOMIC_ACQUIRE) +
             __atomic_load_n(&c->finished, __ATOMIC_ACQUIRE) <
         running)
    nap_ms(1);
}

static void churn_resume(struct churn *c) {
  __atomic_store_n(&c->pause, 0, __ATOMIC_RELEASE);
  while (__atomic_load_n(&c->paused, __ATOMIC_ACQUIRE) != 0) nap_ms(1);
}

static void *churn_names(void *arg) {
  struct churn *c = arg;
  int me = __atomic_fetch_add(&c->index, 1, __ATOMIC_RELAXED);
  char name[NAME_SIZE], tag[32];
  for (int i = 0; i < CHURN_MAX && !__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE); i++) {
    churn_pause_point(c);
    snprintf(tag, sizeof tag, "churn%d-%d", me, i);
    test_name(name, tag);
    weft_shm *s = weft_shm_new(4096, .name = name);
    if (s == NULL) {
      fprintf(stderr, "churn_names: %s\n", weft_last_error());
      __atomic_add_fetch(&c->failures, 1, __ATOMIC_RELAXED);
      continue;
    }
    /* every other one is left to the exit rules */
    if (i % 2 == 0 && weft_shm_unlink(s) != 0) __atomic_add_fetch(&c->failures, 1, __ATOMIC_RELAXED);
    if (weft_shm_close(s) != 0) __atomic_add_fetch(&c->failures, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->rounds, 1, __ATOMIC_RELAXED);
  }
  __atomic_add_fetch(&c->finished, 1, __ATOMIC_ACQ_REL);
  return NULL;
}

/* Uses the registry inherited from a parent whose threads kept changing it. */
static int child_uses_registry(void *arg) {
  struct job *j = arg;
  char name[NAME_SIZE + 16];
  snprintf(name, sizeof name, "%s-%d", j->name, (int)getpid());
  weft_shm *s = weft_shm_new(64, .name = name);
  if (s == NULL) {
    fprintf(stderr, "child_uses_registry: %s\n", weft_last_error());
    return 1;
  }
  if (weft_shm_close(s) != 0) return 2;
  return 0; /* the exit rules remove the name, and only it */
}

static int count_names(const char *prefix) {
  DIR *d = opendir("/dev/shm");
  if (d == NULL) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
  closedir(d);
  return n;
}

/* Runs in a child of the test, so that its exit rules can be checked. */
static int registry_under_threads_and_forks(void *arg) {
  (void)arg;
  struct churn c = {0};
  pthread_t t[CHURNERS];
  for (int i = 0; i < CHURNERS; i++)
    if (pthread_create(&t[i], NULL, churn_names, &c) != 0) return 1;
  struct job *j = new_job(NULL);
  test_name(j->name, "forked");
  int bad = 0;
  for (int i = 0; i < 40 / (SLOW > 2 ? 4 : 1); i++) {
    if (QUIESCE_FORKS) churn_hold(&c, CHURNERS);
    weft_process p = weft_process_new(child_uses_registry, .arg = j);
    int started = p.id != 0 ? weft_process_start(p) : -1;
    if (QUIESCE_FORKS) churn_resume(&c);
    if (started != 0) {
      bad = 2;
      break;
    }
    int code = finish_process(p, 20);
    if (code != 0) {
      fprintf(stderr, "registry: child %d of the churning process ended with %d\n", i, code);
      bad = 3;
    }
  }
  __atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < CHURNERS; i++) pthread_join(t[i], NULL);
  if (bad != 0) return bad;
  if (c.failures != 0 || c.rounds == 0) return 4;
  char prefix[NAME_SIZE];
  test_name(prefix, "forked");
  if (count_names(prefix) != 0) return 5; /* each child removed its own */
  test_name(prefix, "churn");
  if (count_names(prefix) == 0 && c.rounds > 1) return 6; /* left to exit */
  weft_shared_free(j);
  return 0;
}

START_TEST(shm_registry_survives_threads_and_forks) {
  weft_process p = start_process(registry_under_threads_and_forks, NULL);
  char prefix[NAME_SIZE];
  snprintf(prefix, sizeof prefix, "weft-shmtest-%d-%d-", run_id, (int)weft_process_pid(p));
  ck_assert_int_eq(finish_process(p, 60), 0);
  /* What its threads left to the exit rules is gone too. */
  ck_assert_int_eq(count_names(prefix), 0);
}
END_TEST

/* ================================================================ Value and Array */

START_TEST(value_types_and_sizes) {
  static const struct {
    const char *type;
    size_t size;
  } cases[] = {
      {"b", sizeof(signed char)}, {"B", sizeof(unsigned char)}, {"h", sizeof(short)},
      {"H", sizeof(unsigned short)}, {"i", sizeof(int)}, {"I", sizeof(unsigned)},
      {"l", sizeof(long)}, {"L", sizeof(unsigned long)}, {"q", sizeof(long long)},
      {"Q", sizeof(unsigned long long)}, {"f", sizeof(float)}, {"d", sizeof(double)},
      {"c", sizeof(char)}, {"char", 1}, {"signed char", 1}, {"unsigned char", 1},
      {"short", sizeof(short)}, {"unsigned short", sizeof(short)}, {"int", sizeof(int)},
      {"unsigned int", sizeof(unsigned)}, {"unsigned", sizeof(unsigned)},
      {"long", sizeof(long)}, {"unsigned long", sizeof(long)},
      {"long long", sizeof(long long)}, {"unsigned long long", sizeof(long long)},
      {"float", sizeof(float)}, {"double", sizeof(double)}, {"bool", sizeof(bool)},
      {"_Bool", sizeof(_Bool)}, {"size_t", sizeof(size_t)}, {"ssize_t", sizeof(ssize_t)},
      {"int8_t", 1}, {"uint8_t", 1}, {"int16_t", 2}, {"uint16_t", 2}, {"int32_t", 4},
      {"uint32_t", 4}, {"int64_t", 8}, {"uint64_t", 8}, {"intptr_t", sizeof(intptr_t)},
      {"uintptr_t", sizeof(uintptr_t)},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    weft_value *v = weft_value_new(cases[i].type);
    ck_assert_msg(v != NULL, "%s: %s", cases[i].type, weft_last_error());
    ck_assert_uint_eq(weft_value_elem_size(v), cases[i].size);
    ck_assert_uint_eq(weft_value_length(v), 1);
    unsigned char *p = weft_value_ptr(v);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    for (size_t k = 0; k < cases[i].size; k++) ck_assert_uint_eq(p[k], 0);
    ck_assert_int_eq(weft_value_free(v), 0);
    weft_value *a = weft_array_new(cases[i].type, 7);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(weft_value_elem_size(a), cases[i].size);
    ck_assert_uint_eq(weft_value_length(a), 7);
    ck_assert_int_eq(weft_value_free(a), 0);
  }
  const char *unknown[] = {"x", "", "int32", "Int", "unsigned  int", "dd", "u", "void"};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    ck_assert_ptr_null(weft_value_new(unknown[i]));
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
    ck_assert_ptr_nonnull(strstr(weft_last_error(), "weft_value_new"));
    ck_assert_ptr_nonnull(strstr(weft_last_error(), "b B h H i I l L q Q f d c"));
    ck_assert_ptr_null(weft_array_new(unknown[i], 3));
    ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  }
  ck_assert_ptr_null(weft_value_new(NULL));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
}
END_TEST

START_TEST(value_option_rules) {
  weft_rlock *lock = shared(sizeof *lock);
  weft_rlock_init(lock);
  ck_assert_ptr_null(weft_value_new("i", .raw = true, .lock = lock));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_array_new("i", 0));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_array_new("d", SIZE_MAX));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_array_new("q", SIZE_MAX / 8 + 1));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);

  /* Default: a lock of its own, named after the value. */
  weft_value *v = weft_value_new("i");
  weft_value *a = weft_array_new("d", 10);
  weft_rlock *vl = weft_value_get_lock(v), *al = weft_value_get_lock(a);
  ck_assert_ptr_nonnull(vl);
  ck_assert_ptr_nonnull(al);
  ck_assert_ptr_ne(vl, al);
  ck_assert_str_eq(vl->lock.name, "Value(i)");
  ck_assert_str_eq(al->lock.name, "Array(d, 10)");

  /* A name is copied into the shared header. */
  char name[32];
  strcpy(name, "counter");
  weft_value *named = weft_value_new("int64_t", .name = name);
  strcpy(name, "overwritten");
  ck_assert_str_eq(weft_value_get_lock(named)->lock.name, "counter");

  /* Raw: no lock. Given: that lock. */
  weft_value *raw = weft_array_new("uint8_t", 3, .raw = true);
  ck_assert_ptr_nonnull(raw);
  ck_assert_ptr_null(weft_value_get_lock(raw));
  weft_value *given = weft_value_new("double", .lock = lock);
  ck_assert_ptr_eq(weft_value_get_lock(given), lock);

  ck_assert_int_eq(weft_value_free(v), 0);
  ck_assert_int_eq(weft_value_free(a), 0);
  ck_assert_int_eq(weft_value_free(named), 0);
  ck_assert_int_eq(weft_value_free(raw), 0);
  ck_assert_int_eq(weft_value_free(given), 0);
  ck_assert_int_eq(weft_value_free(NULL), 0);
  ck_assert(!weft_lock_locked(&lock->lock));
  weft_shared_free(lock);
}
END_TEST

START_TEST(value_load_store_bounds_and_null) {
  weft_value *a = weft_array_new("int", 10);
  int in[10], out[10];
  for (int i = 0; i < 10; i++) in[i] = i * i - 5;
  ck_assert_int_eq(weft_value_store(a, 0, 10, in), 0);
  memset(out, 0, sizeof out);
  ck_assert_int_eq(weft_value_load(a, 0, 10, out), 0);
  ck_assert_mem_eq(in, out, sizeof in);
  ck_assert_mem_eq(weft_value_ptr(a), in, sizeof in);
  /* A slice, and the empty slice at the end. */
  int two[2] = {100, 200};
  ck_assert_int_eq(weft_value_store(a, 8, 2, two), 0);
  ck_assert_int_eq(weft_value_load(a, 7, 3, out), 0);
  ck_assert_int_eq(out[0], in[7]);
  ck_assert_int_eq(out[1], 100);
  ck_assert_int_eq(out[2], 200);
  ck_assert_int_eq(weft_value_load(a, 10, 0, out), 0);

  struct {
    size_t start, count;
  } bad[] = {{0, 11}, {9, 2}, {10, 1}, {11, 0}, {SIZE_MAX, 2}, {1, SIZE_MAX}, {SIZE_MAX, SIZE_MAX}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_int_eq(weft_value_load(a, bad[i].start, bad[i].count, out), WEFT_EINVAL);
    ck_assert_ptr_nonnull(strstr(weft_last_error(), "Array(int, 10)"));
    ck_assert_int_eq(weft_value_store(a, bad[i].start, bad[i].count, in), WEFT_EINVAL);
  }
  ck_assert_int_eq(weft_value_load(a, 0, 1, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_value_store(a, 0, 1, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_value_load(NULL, 0, 1, out), WEFT_EINVAL);
  ck_assert_int_eq(weft_value_store(NULL, 0, 1, in), WEFT_EINVAL);
  ck_assert_ptr_null(weft_value_ptr(NULL));
  ck_assert_ptr_null(weft_value_get_lock(NULL));
  ck_assert_uint_eq(weft_value_length(NULL), 0);
  ck_assert_uint_eq(weft_value_elem_size(NULL), 0);
  /* Nothing changed by the failed stores, and the lock is free. */
  ck_assert_int_eq(weft_value_load(a, 0, 7, out), 0);
  ck_assert_mem_eq(in, out, 7 * sizeof(int));
  ck_assert(!weft_lock_locked(&weft_value_get_lock(a)->lock));
  ck_assert_int_eq(weft_value_free(a), 0);

  /* A raw value works the same, without a lock. */
  weft_value *r = weft_value_new("d", .raw = true);
  double d = 2.5, e = 0;
  ck_assert_int_eq(weft_value_store(r, 0, 1, &d), 0);
  ck_assert_int_eq(weft_value_load(r, 0, 1, &e), 0);
  ck_assert(e == 2.5);
  ck_assert_int_eq(weft_value_load(r, 1, 1, &e), WEFT_EINVAL);
  ck_assert_int_eq(weft_value_free(r), 0);
}
END_TEST

/* The tutorial's section 3.6 lesson, across processes. */
struct counting {
  weft_value *v;
  long iters;
};

static int add_locked(void *arg) {
  struct counting *c = arg;
  weft_rlock *lock = weft_value_get_lock(c->v);
  int *n = weft_value_ptr(c->v);
  for (long i = 0; i < c->iters; i++) {
    if (weft_rlock_acquire(lock, 10) != 0) return 1;
    (*n)++;
    if (weft_rlock_release(lock) != 0) return 2;
  }
  return 0;
}

/* The same through load and store inside the lock (an RLock, so they may
 * take it again), as Python's `with v.get_lock(): v.value += 1`. */
static int add_by_load_store(void *arg) {
  struct counting *c = arg;
  weft_rlock *lock = weft_value_get_lock(c->v);
  for (long i = 0; i < c->iters; i++) {
    int n;
    if (weft_rlock_acquire(lock, 10) != 0) return 1;
    if (weft_value_load(c->v, 0, 1, &n) != 0) return 2;
    n++;
    if (weft_value_store(c->v, 0, 1, &n) != 0) return 3;
    if (weft_rlock_release(lock) != 0) return 4;
  }
  return 0;
}

START_TEST(value_locked_increments_in_two_processes_are_exact) {
  struct counting *c = shared(sizeof *c);
  c->v = weft_value_new("i");
  ck_assert_ptr_nonnull(c->v);
  c->iters = 100000 / SLOW;
  weft_process p1 = start_process(add_locked, c);
  weft_process p2 = start_process(add_locked, c);
  ck_assert_int_eq(finish_process(p1, 60), 0);
  ck_assert_int_eq(finish_process(p2, 60), 0);
  int n = -1;
  ck_assert_int_eq(weft_value_load(c->v, 0, 1, &n), 0);
  ck_assert_int_eq(n, 2 * c->iters);

  c->iters = 20000 / SLOW;
  n = 0;
  ck_assert_int_eq(weft_value_store(c->v, 0, 1, &n), 0);
  p1 = start_process(add_by_load_store, c);
  p2 = start_process(add_by_load_store, c);
  ck_assert_int_eq(finish_process(p1, 60), 0);
  ck_assert_int_eq(finish_process(p2, 60), 0);
  ck_assert_int_eq(weft_value_load(c->v, 0, 1, &n), 0);
  ck_assert_int_eq(n, 2 * c->iters);
  ck_assert_int_eq(weft_value_free(c->v), 0);
  weft_shared_free(c);
}
END_TEST

struct two_values {
  weft_rlock lock;
  weft_value *a, *b;
  weft_event held, done;
};

/* While the parent holds a's lock, b's (the same) cannot be taken. */
static int try_other_value(void *arg) {
  struct two_values *t = arg;
  if (weft_value_get_lock(t->b) != &t->lock) return 1;
  if (weft_event_wait(&t->held, 20) != 0) return 2;
  if (weft_rlock_acquire(weft_value_get_lock(t->b), 0) != WEFT_ETIMEDOUT) return 3;
  weft_event_set(&t->done);
  /* Blocks until the parent lets go, then goes through. */
  long x = 42;
  if (weft_value_store(t->b, 0, 1, &x) != 0) return 4;
  return 0;
}

START_TEST(value_shares_a_given_lock) {
  struct two_values *t = shared(sizeof *t);
  weft_rlock_init(&t->lock, .name = "both");
  weft_event_init(&t->held);
  weft_event_init(&t->done);
  t->a = weft_value_new("i", .lock = &t->lock);
  t->b = weft_value_new("l", .lock = &t->lock);
  ck_assert_ptr_eq(weft_value_get_lock(t->a), weft_value_get_lock(t->b));
  weft_process p = start_process(try_other_value, t);
  ck_assert_int_eq(weft_rlock_acquire(weft_value_get_lock(t->a), 5), 0);
  weft_event_set(&t->held);
  ck_assert_int_eq(weft_event_wait(&t->done, 20), 0);
  ck_assert_int_eq(*(long *)weft_value_ptr(t->b), 0);
  ck_assert_int_eq(weft_rlock_release(&t->lock), 0);
  ck_assert_int_eq(finish_process(p, 30), 0);
  ck_assert_int_eq(*(long *)weft_value_ptr(t->b), 42);
  ck_assert_int_eq(weft_value_free(t->a), 0);
  ck_assert_int_eq(weft_value_free(t->b), 0);
  weft_shared_free(t);
}
END_TEST

struct arrays {
  weft_value *d, *q, *raw;
};

#define ALEN 1000

static int square_slice(void *arg) {
  struct arrays *a = arg;
  double in[ALEN];
  if (weft_value_load(a->d, 0, ALEN, in) != 0) return 1;
  for (int i = 0; i < ALEN; i++)
    if (in[i] != i * 0.5) return 2;
  double sq[100];
  for (int i = 0; i < 100; i++) sq[i] = in[450 + i] * in[450 + i];
  if (weft_value_store(a->d, 450, 100, sq) != 0) return 3;
  int64_t big[2] = {INT64_MIN, INT64_MAX};
  if (weft_value_store(a->q, 1, 2, big) != 0) return 4;
  unsigned char bytes[3] = {1, 2, 3};
  if (weft_value_store(a->raw, 0, 3, bytes) != 0) return 5;
  return 0;
}

START_TEST(array_round_trip_across_processes) {
  struct arrays *a = shared(sizeof *a);
  a->d = weft_array_new("d", ALEN);
  a->q = weft_array_new("int64_t", 4);
  a->raw = weft_array_new("B", 3, .raw = true);
  ck_assert(a->d != NULL && a->q != NULL && a->raw != NULL);
  double v[ALEN];
  for (int i = 0; i < ALEN; i++) v[i] = i * 0.5;
  ck_assert_int_eq(weft_value_store(a->d, 0, ALEN, v), 0);
  ck_assert_int_eq(run_process(square_slice, a), 0);
  double out[ALEN];
  ck_assert_int_eq(weft_value_load(a->d, 0, ALEN, out), 0);
  for (int i = 0; i < ALEN; i++) {
    double want = i >= 450 && i < 550 ? v[i] * v[i] : v[i];
    ck_assert(out[i] == want);
  }
  int64_t q[4];
  ck_assert_int_eq(weft_value_load(a->q, 0, 4, q), 0);
  ck_assert(q[0] == 0 && q[1] == INT64_MIN && q[2] == INT64_MAX && q[3] == 0);
  unsigned char b[3];
  ck_assert_int_eq(weft_value_load(a->raw, 0, 3, b), 0);
  ck_assert(b[0] == 1 && b[1] == 2 && b[2] == 3);
  ck_assert_int_eq(weft_value_free(a->d), 0);
  ck_assert_int_eq(weft_value_free(a->q), 0);
  ck_assert_int_eq(weft_value_free(a->raw), 0);
  weft_shared_free(a);
}
END_TEST

struct dying {
  weft_value *v;
  weft_event held;
};

static int die_holding_value_lock(void *arg) {
  struct dying *d = arg;
  if (weft_rlock_acquire(weft_value_get_lock(d->v), 10) != 0) return 1;
  ((int *)weft_value_ptr(d->v))[0] = 7; /* half way through an update */
  weft_event_set(&d->held);
  kill(getpid(), SIGKILL);
  return 2;
}

START_TEST(value_owner_death_gives_eownerdead_after_the_copy) {
  struct dying *d = shared(sizeof *d);
  weft_event_init(&d->held);
  for (int op = 0; op < 2; op++) {
    d->v = weft_array_new("i", 2);
    ck_assert_ptr_nonnull(d->v);
    weft_process p = start_process(die_holding_value_lock, d);
    ck_assert_int_eq(weft_event_wait(&d->held, 20), 0);
    double t0 = test_now();
    int got[2] = {-1, -1}, put[2] = {5, 6};
    if (op == 0) {
      ck_assert_int_eq(weft_value_load(d->v, 0, 2, got), WEFT_EOWNERDEAD);
      ck_assert(got[0] == 7 && got[1] == 0); /* the data as the dead holder left it */
    } else {
      ck_assert_int_eq(weft_value_store(d->v, 0, 2, put), WEFT_EOWNERDEAD);
    }
    ck_assert_double_lt(test_now() - t0, 5.0);
    ck_assert_int_eq(weft_last_error_code(), WEFT_EOWNERDEAD);
    ck_assert_ptr_nonnull(strstr(weft_last_error(), "Array(i, 2)"));
    /* The lock was released after the copy and works as before. */
    ck_assert(!weft_lock_locked(&weft_value_get_lock(d->v)->lock));
    ck_assert_int_eq(weft_value_load(d->v, 0, 2, got), 0);
    if (op == 1) ck_assert(got[0] == 5 && got[1] == 6);
    ck_assert_int_eq(finish_process(p, 20), -SIGKILL);
    ck_assert_int_eq(weft_value_free(d->v), 0);
    weft_event_clear(&d->held);
  }
  weft_shared_free(d);
}
END_TEST

/* ================================================================ the end */

START_TEST(shm_suite_left_nothing_in_dev_shm) {
  char prefix[64];
  snprintf(prefix, sizeof prefix, "weft-shmtest-%d-", run_id);
  ck_assert_int_eq(count_names(prefix), 0);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("shm");
  run_id = (int)getpid();

  TCase *tc = weft_tcase("segments", 30);
  tcase_add_test(tc, shm_anonymous_is_shared_with_a_child);
  tcase_add_test(tc, shm_new_rejects_size_zero_and_huge);
  tcase_add_test(tc, shm_named_create_and_attach_in_one_process);
  tcase_add_test(tc, shm_named_shared_with_another_process_both_ways);
  tcase_add_test(tc, shm_bad_names_are_einval);
  tcase_add_test(tc, shm_existing_name_is_eexist);
  tcase_add_test(tc, shm_attach_missing_is_enoent);
  tcase_add_test(tc, shm_attach_size_rules);
  tcase_add_test(tc, shm_unlink_removes_the_name_not_the_mappings);
  tcase_add_test(tc, shm_unlink_twice_spares_a_new_segment_of_that_name);
  tcase_add_test(tc, shm_close_never_unlinks);
  tcase_add_test(tc, shm_null_handle);
  tcase_add_test(tc, shm_no_fd_leaks);
  suite_add_tcase(s, tc);

  tc = weft_tcase("ownership", 30);
  tcase_add_test(tc, shm_creator_exit_removes_its_names);
  tcase_add_test(tc, shm_attacher_exit_keeps_the_name);
  tcase_add_test(tc, shm_child_of_the_creator_keeps_the_name);
  tcase_add_test(tc, shm_creator_killed_leaves_the_name);
  tcase_add_test(tc, shm_creator_exit_spares_a_recreated_name);
  suite_add_tcase(s, tc);

  tc = weft_tcase("registry", 90);
  tcase_add_test(tc, shm_registry_survives_threads_and_forks);
  suite_add_tcase(s, tc);

  tc = weft_tcase("value", 90);
  tcase_add_test(tc, value_types_and_sizes);
  tcase_add_test(tc, value_option_rules);
  tcase_add_test(tc, value_load_store_bounds_and_null);
  tcase_add_test(tc, value_locked_increments_in_two_processes_are_exact);
  tcase_add_test(tc, value_shares_a_given_lock);
  tcase_add_test(tc, array_round_trip_across_processes);
  tcase_add_test(tc, value_owner_death_gives_eownerdead_after_the_copy);
  suite_add_tcase(s, tc);

  tc = weft_tcase("cleanup", 10);
  tcase_add_test(tc, shm_suite_left_nothing_in_dev_shm);
  suite_add_tcase(s, tc);
  return s;
}
