/* SPDX-License-Identifier: MIT */
/* Tests of weft/pool.h's data of any size, on thread and process pools:
 * map and imap over byte strings, results of any length (weft_task_return),
 * weft_task_fail's messages, reruns of a chunk whose worker died, per-item
 * progress, results larger than their room, and the error names.
 *
 * Tasks never call ck_assert: they return codes or results the test
 * checks. Items are small commands ("r..." reverse, "b<N>" an N-byte
 * result, "f<code>:<path>" open a file, "o" overflow the room, ...), so
 * the same task serves every test. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define CHECK(cond, ...)                    \
  do {                                      \
    if (!(cond)) ck_abort_msg(__VA_ARGS__); \
  } while (0)

/* The byte at position i of an N-byte "b<N>" result. */
static unsigned char pattern(size_t i, size_t n) { return (unsigned char)((i * 7 + n) & 0xff); }

static size_t parse_size(const char *p, size_t len) {
  size_t v = 0;
  for (size_t i = 0; i < len && p[i] >= '0' && p[i] <= '9'; i++) v = v * 10 + (size_t)(p[i] - '0');
  return v;
}

/* The command task. */
static int cmd_task(const void *arg, size_t len, void *result, size_t *result_len) {
  const char *a = arg;
  if (len == 0) {
    *result_len = 0;
    return 0;
  }
  switch (a[0]) {
  case 'r': /* the rest, reversed */
    if (len - 1 > *result_len) return weft_task_fail(5, "no room for %zu bytes", len - 1);
    for (size_t i = 1; i < len; i++) ((char *)result)[len - 1 - i] = a[i];
    *result_len = len - 1;
    return 0;
  case 'b': { /* an N-byte result, whatever the room */
    size_t n = parse_size(a + 1, len - 1);
    unsigned char *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) return 12;
    for (size_t i = 0; i < n; i++) buf[i] = pattern(i, n);
    int rc = weft_task_return(buf, n);
    free(buf);
    return rc;
  }
  case 'f': { /* f<code>:<path>: opens the file, failing with code if it cannot */
    char path[256];
    const char *colon = memchr(a, ':', len);
    if (colon == NULL) return 70;
    int code = (int)parse_size(a + 1, (size_t)(colon - a - 1));
    snprintf(path, sizeof path, "%.*s", (int)(len - (size_t)(colon + 1 - a)), colon + 1);
    FILE *f = fopen(path, "r");
    if (f == NULL) return weft_task_fail(code, "cannot open %s: %s", path, strerror(errno));
    fclose(f);
    *result_len = 0;
    return 0;
  }
  case 'o': /* claims one byte more than its room */
    *result_len = *result_len + 1;
    return 0;
  case 'x': /* returns too much through weft_task_return in a fixed-size map */
    return weft_task_return(a, len);
  case 'd': /* dies */
    _exit(3);
  default:
    return 71;
  }
}

static void finish_pool(weft_pool pool) {
  ck_assert_int_eq(weft_pool_close(pool), 0);
  int rc = weft_pool_join(pool, 30);
  ck_assert_msg(rc == 0, "join: %s (%s)", weft_err_name(rc), weft_last_error());
  ck_assert_int_eq(weft_pool_free(pool), 0);
}

static weft_pool make_pool(bool processes, size_t max_message) {
  weft_pool pool = processes ? weft_process_pool_new(.workers = 2, .max_message = max_message)
                             : weft_thread_pool_new(.workers = 2, .max_message = max_message);
  ck_assert_msg(pool.id != 0, "pool: %s", weft_last_error());
  return pool;
}

/* ---- items: "r" + i random-ish letters (0-byte items among them), and
 * now and then a large result ---- */

struct items {
  size_t n;
  char **bufs;
  weft_bytes *items;
};

static struct items make_items(size_t n, size_t big_every, size_t big) {
  struct items it = {n, calloc(n, sizeof(char *)), calloc(n, sizeof(weft_bytes))};
  ck_assert_ptr_nonnull(it.bufs);
  ck_assert_ptr_nonnull(it.items);
  for (size_t i = 0; i < n; i++) {
    char *b = malloc(400);
    ck_assert_ptr_nonnull(b);
    size_t len;
    if (i % 17 == 3) {
      len = 0;
    } else if (big_every != 0 && i % big_every == big_every - 1) {
      len = (size_t)snprintf(b, 400, "b%zu", big + i);
    } else {
      len = 1 + (i * 131) % 300;
      b[0] = 'r';
      for (size_t k = 1; k < len; k++) b[k] = (char)('a' + (i + k) % 26);
    }
    it.bufs[i] = b;
    it.items[i] = (weft_bytes){len > 0 ? b : NULL, len};
  }
  return it;
}

static void free_items(struct items *it) {
  for (size_t i = 0; i < it->n; i++) free(it->bufs[i]);
  free(it->bufs);
  free(it->items);
}

/* Whether r is the right result of item i. */
static bool result_ok(const struct items *it, size_t i, weft_bytes r, char *why, size_t size) {
  weft_bytes item = it->items[i];
  if (r.data == NULL) {
    snprintf(why, size, "no data");
    return false;
  }
  if (item.len == 0) {
    snprintf(why, size, "len %zu, not 0", r.len);
    return r.len == 0;
  }
  const char *a = item.data;
  const unsigned char *d = r.data;
  if (a[0] == 'b') {
    size_t n = parse_size(a + 1, item.len - 1);
    if (r.len != n) {
      snprintf(why, size, "len %zu, not %zu", r.len, n);
      return false;
    }
    for (size_t k = 0; k < n; k++)
      if (d[k] != pattern(k, n)) {
        snprintf(why, size, "byte %zu of %zu", k, n);
        return false;
      }
    return true;
  }
  if (r.len != item.len - 1) {
    snprintf(why, size, "len %zu, not %zu", r.len, item.len - 1);
    return false;
  }
  for (size_t k = 1; k < item.len; k++)
    if (d[item.len - 1 - k] != (unsigned char)a[k]) {
      snprintf(why, size, "byte %zu", k);
      return false;
    }
  return true;
}

static void map_bytes_check(weft_pool pool, size_t n, long chunksize, size_t big_every,
                            size_t big) {
  struct items it = make_items(n, big_every, big);
  weft_bytes *res = NULL;
  int *errors = calloc(n > 0 ? n : 1, sizeof *errors);
  int rc = weft_pool_map_bytes(pool, cmd_task, it.items, n, &res,
                               .chunksize = chunksize != 0 ? chunksize : WEFT_DEFAULT,
                               .errors = errors);
  ck_assert_msg(rc == 0, "map_bytes of %zu, chunksize %ld: %s (%s)", n, chunksize,
                weft_err_name(rc), weft_last_error());
  ck_assert_ptr_nonnull(res);
  char why[64];
  for (size_t i = 0; i < n; i++) {
    CHECK(errors[i] == 0, "item %zu: %s", i, weft_err_name(errors[i]));
    CHECK(result_ok(&it, i, res[i], why, sizeof why), "item %zu (%zu bytes): %s", i,
          it.items[i].len, why);
    CHECK(((uintptr_t)res[i].data & 7) == 0, "item %zu: result not 8-byte aligned", i);
  }
  free(res); /* one call frees every result */
  free(errors);
  free_items(&it);
}

START_TEST(map_bytes_variable_lengths) {
  for (int kind = 0; kind < 2; kind++) {
    weft_pool pool = make_pool(kind == 1, 0);
    map_bytes_check(pool, 5000 / SLOW, 0, 0, 0);
    map_bytes_check(pool, 2000 / SLOW, 1, 0, 0);
    map_bytes_check(pool, 3000 / SLOW, 37, 0, 0);
    map_bytes_check(pool, 0, 0, 0, 0);
    map_bytes_check(pool, 1, 0, 0, 0);
    /* Multi-MiB results, larger than the default 4 MiB max_message. */
    map_bytes_check(pool, 20, 4, 7, 6u << 20);
    finish_pool(pool);
    /* A small max_message: chunks are cut by bytes, results go in parts. */
    pool = make_pool(kind == 1, 1024);
    map_bytes_check(pool, 2000 / SLOW, 100, 0, 0);
    map_bytes_check(pool, 200 / SLOW, 0, 5, 100000);
    finish_pool(pool);
  }
}
END_TEST

/* Many MiB through a process pool's queues, map after map: the queues
 * start again at their ring's start whenever they are drained, and every
 * byte must still come out whole and in order. */
START_TEST(map_bytes_many_mib_through_the_queues) {
  weft_pool pool = make_pool(true, 0);
  for (int round = 0; round < 4; round++) map_bytes_check(pool, 20000 / SLOW, 0, 0, 0);
  map_bytes_check(pool, 4000 / SLOW, 0, 97, 300000); /* results of 300 KiB now and then */
  finish_pool(pool);
  pool = make_pool(true, 64 << 10);
  for (int round = 0; round < 2; round++) map_bytes_check(pool, 20000 / SLOW, 0, 0, 0);
  finish_pool(pool);
}
END_TEST

START_TEST(map_bytes_bad_arguments) {
  weft_pool pool = make_pool(true, 1024);
  weft_bytes items[2] = {{"r1", 2}, {NULL, 5}};
  weft_bytes *res = (weft_bytes *)1;
  ck_assert_int_eq(weft_pool_map_bytes(pool, cmd_task, items, 2, &res), WEFT_EINVAL);
  ck_assert_ptr_null(res);
  ck_assert_int_eq(weft_pool_map_bytes(pool, cmd_task, items, 1, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map_bytes(pool, NULL, items, 1, &res), WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map_bytes(pool, cmd_task, NULL, 1, &res), WEFT_EINVAL);
  ck_assert_int_eq(weft_pool_map_bytes(pool, cmd_task, items, 1, &res, .chunksize = 0),
                   WEFT_EINVAL);
  /* An item larger than max_message. */
  static char big[2000];
  big[0] = 'r';
  weft_bytes huge[3] = {{"r1", 2}, {big, sizeof big}, {"r2", 2}};
  int rc = weft_pool_map_bytes(pool, cmd_task, huge, 3, &res);
  ck_assert_msg(rc == WEFT_EMSGSIZE, "%s (%s)", weft_err_name(rc), weft_last_error());
  ck_assert_msg(strstr(weft_last_error(), "item 1") != NULL, "%s", weft_last_error());
  free(res);
  ck_assert_int_eq(weft_pool_map_bytes(pool, cmd_task, NULL, 0, &res), 0);
  ck_assert_ptr_nonnull(res);
  free(res);
  weft_pool_close(pool);
  ck_assert_int_eq(weft_pool_map_bytes(pool, cmd_task, items, 1, &res), WEFT_ECLOSED);
  ck_assert_int_eq(weft_pool_join(pool, 30), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
}
END_TEST

/* ---- apply_async: results of any size, messages ---- */

START_TEST(apply_async_large_results_and_messages) {
  for (int kind = 0; kind < 2; kind++) {
    weft_pool pool = make_pool(kind == 1, 0);
    const size_t sizes[] = {0, 1, 4096, (size_t)5 << 20, (size_t)9 << 20 | 3};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
      char cmd[32];
      int k = snprintf(cmd, sizeof cmd, "b%zu", sizes[s]);
      weft_future f = weft_pool_apply_async(pool, cmd_task, cmd, (size_t)k);
      ck_assert_uint_ne(f.id, 0);
      const void *data;
      size_t len;
      int rc = weft_future_result_bytes(f, 30, &data, &len);
      ck_assert_msg(rc == 0, "%zu bytes: %s (%s)", sizes[s], weft_err_name(rc),
                    weft_last_error());
      ck_assert_uint_eq(len, sizes[s]);
      for (size_t i = 0; i < len; i++)
        CHECK(((const unsigned char *)data)[i] == pattern(i, len), "byte %zu of %zu", i, len);
      ck_assert_str_eq(weft_future_task_message(f), "");
      weft_future_close(f);
    }
    /* A task's message reaches the future and the error sentence. */
    const char *cmd = "f2:words/003.txt";
    weft_future f = weft_pool_apply_async(pool, cmd_task, cmd, strlen(cmd));
    int rc = weft_future_result(f, 30, NULL);
    ck_assert_int_eq(rc, WEFT_ETASKFAILED);
    ck_assert_msg(strstr(weft_last_error(),
                         "failed with code 2: cannot open words/003.txt: No such file or "
                         "directory") != NULL,
                  "sentence: '%s'", weft_last_error());
    ck_assert_int_eq(weft_future_task_error(f), 2);
    ck_assert_str_eq(weft_future_task_message(f),
                     "cannot open words/003.txt: No such file or directory");
    weft_future_close(f);
    /* Without a message: the code alone. */
    f = weft_pool_apply_async(pool, cmd_task, "?", 1);
    ck_assert_int_eq(weft_future_result(f, 30, NULL), WEFT_ETASKFAILED);
    ck_assert_int_eq(weft_future_task_error(f), 71);
    ck_assert_str_eq(weft_future_task_message(f), "");
    weft_future_close(f);
    /* A result larger than its room. */
    f = weft_pool_apply_async(pool, cmd_task, "o", 1);
    rc = weft_future_result(f, 30, NULL);
    ck_assert_msg(rc == WEFT_EMSGSIZE, "%s (%s)", weft_err_name(rc), weft_last_error());
    ck_assert_msg(strstr(weft_last_error(), "larger than its room") != NULL, "'%s'",
                  weft_last_error());
    ck_assert_int_eq(weft_future_task_error(f), 0);
    weft_future_close(f);
    finish_pool(pool);
  }
}
END_TEST

static int pointer_fail(void *arg, void **result) {
  (void)result;
  return weft_task_fail((int)(intptr_t)arg, "pointer task %d gave up", (int)(intptr_t)arg);
}

static int pointer_return(void *arg, void **result) {
  (void)arg;
  *result = (void *)(intptr_t)weft_task_return("x", 1);
  return 0;
}

START_TEST(task_fail_on_pointer_tasks_and_outside) {
  weft_pool pool = make_pool(false, 0);
  weft_future f = weft_pool_submit(pool, pointer_fail, (void *)9);
  ck_assert_int_eq(weft_future_result(f, 30, NULL), WEFT_ETASKFAILED);
  ck_assert_int_eq(weft_future_task_error(f), 9);
  ck_assert_str_eq(weft_future_task_message(f), "pointer task 9 gave up");
  ck_assert_msg(strstr(weft_last_error(), "failed with code 9: pointer task 9 gave up") != NULL,
                "'%s'", weft_last_error());
  weft_future_close(f);
  /* weft_task_return belongs to bytes tasks. */
  f = weft_pool_submit(pool, pointer_return, NULL);
  void *r;
  ck_assert_int_eq(weft_future_result(f, 30, &r), 0);
  ck_assert_int_eq((int)(intptr_t)r, WEFT_EPERM);
  weft_future_close(f);
  finish_pool(pool);
  /* Outside a task: nothing recorded, the code given back. */
  ck_assert_int_eq(weft_task_fail(4, "nobody %s", "listens"), 4);
  ck_assert_int_eq(weft_task_return("x", 1), WEFT_EPERM);
}
END_TEST

/* ---- map and imap errors ---- */

struct failures {
  size_t count;
  size_t index[8];
  int err[8], code[8];
  char message[8][128];
};

static void record_failure(size_t index, int err, int code, const char *message, void *arg) {
  struct failures *fl = arg;
  if (fl->count < 8) {
    fl->index[fl->count] = index;
    fl->err[fl->count] = err;
    fl->code[fl->count] = code;
    snprintf(fl->message[fl->count], sizeof fl->message[0], "%s", message);
  }
  fl->count++;
}

/* Items: "r<i>" but item 3 opens a missing file and item 6 overflows. */
static void failing_items(weft_bytes *items, char bufs[][24], size_t n) {
  for (size_t i = 0; i < n; i++) {
    int k = snprintf(bufs[i], 24, "r%zu", i);
    if (i == 3) k = snprintf(bufs[i], 24, "f2:words/003.txt");
    if (i == 6) k = snprintf(bufs[i], 24, "o");
    items[i] = (weft_bytes){bufs[i], (size_t)k};
  }
}

START_TEST(map_and_imap_errors_carry_messages) {
  enum { N = 12 };
  for (int kind = 0; kind < 2; kind++) {
    weft_pool pool = make_pool(kind == 1, 0);
    char bufs[N][24];
    weft_bytes items[N];
    failing_items(items, bufs, N);
    for (long chunksize = 1; chunksize <= 5; chunksize += 4) {
      struct failures fl = {0};
      int errors[N];
      weft_bytes *res = NULL;
      int rc = weft_pool_map_bytes(pool, cmd_task, items, N, &res, .chunksize = chunksize,
                                   .errors = errors, .item_failed = record_failure,
                                   .item_failed_arg = &fl);
      ck_assert_int_eq(rc, WEFT_ETASKFAILED);
      ck_assert_msg(strstr(weft_last_error(), "(item 3) failed with code 2: cannot open "
                                              "words/003.txt: No such file or directory") != NULL,
                    "'%s'", weft_last_error());
      ck_assert_uint_eq(fl.count, 2);
      ck_assert_uint_eq(fl.index[0], 3);
      ck_assert_int_eq(fl.err[0], WEFT_ETASKFAILED);
      ck_assert_int_eq(fl.code[0], 2);
      ck_assert_str_eq(fl.message[0], "cannot open words/003.txt: No such file or directory");
      ck_assert_uint_eq(fl.index[1], 6);
      ck_assert_int_eq(fl.err[1], WEFT_EMSGSIZE);
      ck_assert_int_eq(fl.code[1], 0);
      ck_assert_ptr_nonnull(strstr(fl.message[1], "larger than its room"));
      for (size_t i = 0; i < N; i++) {
        if (i == 3 || i == 6) {
          CHECK(res[i].data == NULL && res[i].len == 0, "item %zu has a result", i);
          CHECK(errors[i] == (i == 3 ? WEFT_ETASKFAILED : WEFT_EMSGSIZE), "item %zu: %s", i,
                weft_err_name(errors[i]));
          continue;
        }
        char want[16];
        int k = snprintf(want, sizeof want, "%zu", i);
        for (int a = 0, b = k - 1; a < b; a++, b--) {
          char t = want[a];
          want[a] = want[b];
          want[b] = t;
        }
        CHECK(errors[i] == 0 && res[i].len == (size_t)k && memcmp(res[i].data, want, (size_t)k) == 0,
              "item %zu: %s, %zu bytes", i, weft_err_name(errors[i]), res[i].len);
      }
      free(res);
    }
    finish_pool(pool);
  }
}
END_TEST

/* ---- imap over byte strings ---- */

struct bsrc {
  const struct items *it;
  size_t next;
};

static bool bytes_source(weft_bytes *item, void *arg) {
  struct bsrc *s = arg;
  if (s->next == s->it->n) return false;
  *item = s->it->items[s->next++];
  return true;
}

static void imap_bytes_check(weft_pool pool, size_t n, long chunksize, bool unordered,
                             size_t big_every) {
  struct items it = make_items(n, big_every, 3u << 20);
  struct bsrc s = {&it, 0};
  weft_imap *im = weft_pool_imap_bytes(pool, cmd_task, bytes_source, &s,
                                       .chunksize = chunksize != 0 ? chunksize : WEFT_DEFAULT,
                                       .unordered = unordered);
  ck_assert_msg(im != NULL, "imap_bytes: %s", weft_last_error());
  char *seen = calloc(n + 1, 1);
  char why[64];
  for (size_t k = 0; k < n; k++) {
    size_t idx = SIZE_MAX;
    weft_bytes r = {NULL, 0};
    int rc = weft_imap_next_bytes(im, 30, &idx, &r);
    CHECK(rc == 0, "result %zu: %s (%s)", k, weft_err_name(rc), weft_last_error());
    CHECK(idx < n && !seen[idx], "result %zu: index %zu", k, idx);
    seen[idx] = 1;
    if (!unordered) CHECK(idx == k, "result %zu has index %zu", k, idx);
    CHECK(result_ok(&it, idx, r, why, sizeof why), "item %zu: %s", idx, why);
  }
  ck_assert_int_eq(weft_imap_next_bytes(im, 10, NULL, NULL), WEFT_EEOF);
  ck_assert_int_eq(weft_imap_next(im, 10, NULL, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_imap_free(im), 0);
  free(seen);
  free_items(&it);
}

START_TEST(imap_bytes_ordered_and_unordered) {
  for (int kind = 0; kind < 2; kind++) {
    weft_pool pool = make_pool(kind == 1, 0);
    imap_bytes_check(pool, 2000 / SLOW, 0, false, 0);
    imap_bytes_check(pool, 2000 / SLOW, 13, true, 0);
    imap_bytes_check(pool, 30, 4, false, 9);
    imap_bytes_check(pool, 0, 0, false, 0);
    finish_pool(pool);
    /* Items carried over to the next chunk when a chunk's bytes are full. */
    pool = make_pool(kind == 1, 1024);
    imap_bytes_check(pool, 1000 / SLOW, 50, false, 0);
    imap_bytes_check(pool, 1000 / SLOW, 50, true, 0);
    finish_pool(pool);
  }
}
END_TEST

static bool failing_source(weft_bytes *item, void *arg) {
  struct {
    weft_bytes *items;
    size_t next, n;
  } *s = arg;
  if (s->next == s->n) return false;
  *item = s->items[s->next++];
  return true;
}

START_TEST(imap_errors_carry_messages) {
  enum { N = 12 };
  for (int kind = 0; kind < 2; kind++) {
    weft_pool pool = make_pool(kind == 1, 0);
    char bufs[N][24];
    weft_bytes items[N];
    failing_items(items, bufs, N);
    struct {
      weft_bytes *items;
      size_t next, n;
    } s = {items, 0, N};
    weft_imap *im = weft_pool_imap_bytes(pool, cmd_task, failing_source, &s, .chunksize = 4);
    ck_assert_ptr_nonnull(im);
    for (size_t k = 0; k < N; k++) {
      size_t idx;
      weft_bytes r;
      int rc = weft_imap_next_bytes(im, 30, &idx, &r);
      ck_assert_uint_eq(idx, k);
      if (k == 3) {
        ck_assert_int_eq(rc, WEFT_ETASKFAILED);
        ck_assert_int_eq(weft_imap_task_error(im), 2);
        ck_assert_str_eq(weft_imap_task_message(im),
                         "cannot open words/003.txt: No such file or directory");
        ck_assert_ptr_null(r.data);
      } else if (k == 6) {
        ck_assert_int_eq(rc, WEFT_EMSGSIZE);
        ck_assert_int_eq(weft_imap_task_error(im), 0);
        ck_assert_ptr_nonnull(strstr(weft_imap_task_message(im), "larger than its room"));
      } else {
        ck_assert_msg(rc == 0, "item %zu: %s (%s)", k, weft_err_name(rc), weft_last_error());
        ck_assert_str_eq(weft_imap_task_message(im), "");
      }
    }
    ck_assert_int_eq(weft_imap_next_bytes(im, 10, NULL, NULL), WEFT_EEOF);
    weft_imap_free(im);
    finish_pool(pool);
    /* An item larger than max_message stops the input: the items before
     * it still give their results, then the imap says why. */
    pool = make_pool(kind == 1, 1024);
    static char big[2000];
    big[0] = 'r';
    items[5] = (weft_bytes){big, sizeof big};
    s = (__typeof__(s)){items, 0, N};
    im = weft_pool_imap_bytes(pool, cmd_task, failing_source, &s, .chunksize = 2);
    ck_assert_ptr_nonnull(im);
    for (size_t k = 0; k < 5; k++) {
      size_t idx;
      weft_bytes r;
      int rc = weft_imap_next_bytes(im, 30, &idx, &r);
      ck_assert_uint_eq(idx, k);
      ck_assert_int_eq(rc, k == 3 ? WEFT_ETASKFAILED : 0);
    }
    int rc = weft_imap_next_bytes(im, 30, NULL, NULL);
    ck_assert_msg(rc == WEFT_EMSGSIZE && strstr(weft_last_error(), "item 5") != NULL, "%s (%s)",
                  weft_err_name(rc), weft_last_error());
    weft_imap_free(im);
    finish_pool(pool);
  }
}
END_TEST

/* ---- fixed-size map: messages and oversized results ---- */

/* Item x (an int64): fails with a message when x % 10 == 3, overflows
 * its room when x % 10 == 6, gives too much through weft_task_return when
 * x % 10 == 8, else x * 2. */
static int fixed_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != 8) return 71;
  memcpy(&x, arg, 8);
  if (x % 10 == 3) return weft_task_fail(7, "item %lld refused", (long long)x);
  if (x % 10 == 6) {
    *result_len = 9;
    return 0;
  }
  if (x % 10 == 8) {
    char buf[16] = {0};
    int rc = weft_task_return(buf, sizeof buf);
    return rc == WEFT_EMSGSIZE ? 0 : 72; /* the item fails with EMSGSIZE all the same */
  }
  x *= 2;
  memcpy(result, &x, 8);
  return 0;
}

START_TEST(fixed_map_messages_and_emsgsize) {
  enum { N = 40 };
  for (int kind = 0; kind < 2; kind++) {
    weft_pool pool = make_pool(kind == 1, 0);
    int64_t items[N], results[N];
    int errors[N];
    for (int i = 0; i < N; i++) items[i] = i;
    struct failures fl = {0};
    int rc = weft_pool_map(pool, fixed_task, items, 8, N, results, 8, .chunksize = 7,
                           .errors = errors, .item_failed = record_failure,
                           .item_failed_arg = &fl);
    ck_assert_int_eq(rc, WEFT_ETASKFAILED);
    ck_assert_msg(strstr(weft_last_error(), "(item 3) failed with code 7: item 3 refused") != NULL,
                  "'%s'", weft_last_error());
    ck_assert_uint_eq(fl.count, 12);
    ck_assert_uint_eq(fl.index[0], 3);
    ck_assert_str_eq(fl.message[0], "item 3 refused");
    ck_assert_int_eq(fl.code[0], 7);
    ck_assert_uint_eq(fl.index[1], 6);
    ck_assert_int_eq(fl.err[1], WEFT_EMSGSIZE);
    ck_assert_uint_eq(fl.index[2], 8);
    ck_assert_int_eq(fl.err[2], WEFT_EMSGSIZE);
    for (int i = 0; i < N; i++) {
      int want = i % 10 == 3 ? WEFT_ETASKFAILED : i % 10 == 6 || i % 10 == 8 ? WEFT_EMSGSIZE : 0;
      CHECK(errors[i] == want, "item %d: %s", i, weft_err_name(errors[i]));
      if (want == 0) CHECK(results[i] == 2 * i, "item %d: %lld", i, (long long)results[i]);
    }
    finish_pool(pool);
    /* Chunks that fill a whole message still say why an item failed. */
    pool = make_pool(kind == 1, 4096);
    fl = (struct failures){0};
    rc = weft_pool_map(pool, fixed_task, items, 8, N, results, 8, .chunksize = 1000,
                       .errors = errors, .item_failed = record_failure, .item_failed_arg = &fl);
    ck_assert_int_eq(rc, WEFT_ETASKFAILED);
    ck_assert_uint_eq(fl.count, 12);
    ck_assert_str_eq(fl.message[1], "gave a result of 9 bytes, larger than its room of 8 bytes");
    ck_assert_str_eq(fl.message[2], "gave a result of 16 bytes, larger than its room of 8 bytes");
    ck_assert_str_eq(fl.message[3], "item 13 refused");
    finish_pool(pool);
  }
}
END_TEST

/* ---- a chunk whose worker dies ---- */

static int *runs; /* shared with the workers: how often each item ran */

static int counted_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != 8) return 71;
  memcpy(&x, arg, 8);
  inc(&runs[x]);
  if (x == 13) _exit(3);
  x = -x;
  memcpy(result, &x, 8);
  *result_len = 8;
  return 0;
}

/* Items 0..n-1, as int64 and as byte strings of them. */
static void number_items(int64_t *items, weft_bytes *bitems, int n) {
  for (int i = 0; i < n; i++) {
    items[i] = i;
    bitems[i] = (weft_bytes){&items[i], 8};
  }
}

static int counted_bytes_task(const void *arg, size_t len, void *result, size_t *result_len) {
  return counted_task(arg, len, result, result_len);
}

/* Results of 1,500 bytes each, from a pool whose messages hold 4 KiB: the
 * worker sends its output in parts, one before each item. */
#define BIG_RESULT 1500

static int counted_big_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != 8 || *result_len < BIG_RESULT) return 72;
  memcpy(&x, arg, 8);
  inc(&runs[x]);
  if (x == 13) _exit(3);
  memset(result, (int)('a' + x % 26), BIG_RESULT);
  *result_len = BIG_RESULT;
  return 0;
}

START_TEST(crash_in_chunk_keeps_results_sent_in_parts) {
  enum { N = 40, CHUNK = 10 };
  runs = shared(N * sizeof *runs);
  weft_pool pool = make_pool(true, 4096);
  int64_t items[N];
  weft_bytes bitems[N];
  int errors[N];
  number_items(items, bitems, N);
  weft_bytes *res = NULL;
  int rc = weft_pool_map_bytes(pool, counted_big_task, bitems, N, &res, .chunksize = CHUNK,
                               .errors = errors);
  ck_assert_msg(rc == WEFT_EWORKERDIED, "%s (%s)", weft_err_name(rc), weft_last_error());
  for (int i = 0; i < N; i++) {
    CHECK(ld(&runs[i]) == 1, "item %d ran %d times", i, ld(&runs[i]));
    if (i == 13) {
      CHECK(errors[i] == WEFT_EWORKERDIED, "item 13: %s", weft_err_name(errors[i]));
      continue;
    }
    CHECK(errors[i] == 0 && res[i].len == BIG_RESULT, "item %d: %s, %zu bytes", i,
          weft_err_name(errors[i]), res[i].len);
    for (size_t k = 0; k < BIG_RESULT; k++)
      CHECK(((const char *)res[i].data)[k] == (char)('a' + i % 26), "item %d byte %zu", i, k);
  }
  free(res);
  finish_pool(pool);
}
END_TEST

START_TEST(crash_in_chunk_fails_only_its_item) {
  enum { N = 40, CHUNK = 10 };
  runs = shared(N * sizeof *runs);
  weft_pool pool = make_pool(true, 0);
  for (int form = 0; form < 2; form++) {
    memset(runs, 0, N * sizeof *runs);
    int64_t items[N], results[N];
    weft_bytes bitems[N];
    int errors[N];
    number_items(items, bitems, N);
    weft_bytes *res = NULL;
    int rc = form == 0 ? weft_pool_map(pool, counted_task, items, 8, N, results, 8,
                                       .chunksize = CHUNK, .errors = errors)
                       : weft_pool_map_bytes(pool, counted_bytes_task, bitems, N, &res,
                                             .chunksize = CHUNK, .errors = errors);
    ck_assert_msg(rc == WEFT_EWORKERDIED, "%s (%s)", weft_err_name(rc), weft_last_error());
    ck_assert_msg(strstr(weft_last_error(), "(item 13)") != NULL, "'%s'", weft_last_error());
    for (int i = 0; i < N; i++) {
      int64_t got = 0;
      if (form == 0) got = results[i];
      else if (res[i].data != NULL) memcpy(&got, res[i].data, 8);
      if (i == 13) {
        CHECK(errors[i] == WEFT_EWORKERDIED, "item 13: %s", weft_err_name(errors[i]));
      } else {
        CHECK(errors[i] == 0 && got == -i, "item %d: %s, %lld", i, weft_err_name(errors[i]),
              (long long)got);
      }
      /* Exactly what the docs promise: every item ran once; those of the
       * crashed chunk before the crash kept their results. */
      CHECK(ld(&runs[i]) == 1, "item %d ran %d times", i, ld(&runs[i]));
    }
    free(res);
  }
  finish_pool(pool);
}
END_TEST

/* ---- progress per item ---- */

struct progress {
  size_t calls, last, n, off_chunk;
  int decreasing;
  long chunk;
};

static void progress_hook(size_t done, size_t total, double elapsed, void *arg) {
  (void)elapsed;
  struct progress *p = arg;
  if (done < p->last || total != p->n) p->decreasing++;
  if (done % (size_t)p->chunk != 0 && done != total) p->off_chunk++;
  p->last = done;
  p->calls++;
}

static int slow_task(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  (void)len;
  nap_ms(15);
  memset(result, 0, 8);
  *result_len = 8;
  return 0;
}

START_TEST(progress_advances_per_item) {
  enum { N = 40, CHUNK = 20 };
  for (int kind = 0; kind < 2; kind++) {
    weft_pool pool = make_pool(kind == 1, 0);
    int64_t items[N] = {0}, results[N];
    struct progress p = {.n = N, .chunk = CHUNK};
    ck_assert_int_eq(weft_pool_map(pool, slow_task, items, 8, N, results, 8, .chunksize = CHUNK,
                                   .progress = progress_hook, .progress_arg = &p),
                     0);
    ck_assert_int_eq(p.decreasing, 0);
    ck_assert_uint_eq(p.last, N);
    /* Two chunks of 300 ms each, looked at every 50 ms: counts inside a
     * chunk were reported. */
    ck_assert_msg(p.off_chunk > 0, "only whole chunks reported (%zu calls)", p.calls);
    weft_bytes bitems[N];
    for (int i = 0; i < N; i++) bitems[i] = (weft_bytes){&items[i], 8};
    weft_bytes *res;
    p = (struct progress){.n = N, .chunk = CHUNK};
    ck_assert_int_eq(weft_pool_map_bytes(pool, slow_task, bitems, N, &res, .chunksize = CHUNK,
                                         .progress = progress_hook, .progress_arg = &p),
                     0);
    free(res);
    ck_assert_int_eq(p.decreasing, 0);
    ck_assert_uint_eq(p.last, N);
    ck_assert_msg(p.off_chunk > 0, "only whole chunks reported (%zu calls)", p.calls);
    finish_pool(pool);
  }
}
END_TEST

/* ---- error names ---- */

START_TEST(error_names_and_success) {
  ck_assert_str_eq(weft_strerror(0), "success");
  ck_assert_str_eq(weft_err_name(WEFT_EMSGSIZE), "WEFT_EMSGSIZE");
  ck_assert_str_eq(weft_err_name(-EIO), "WEFT_EIO");
  ck_assert_str_eq(weft_err_name(0), "code 0");
  ck_assert_str_eq(weft_err_name(7), "code 7");
  ck_assert_str_eq(weft_err_name(-4999), "code -4999");
  for (int c = -4100; c < 10; c++)
    CHECK(strstr(weft_err_name(c), "UNKNOWN") == NULL, "code %d is %s", c, weft_err_name(c));
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("pool_bytes");
  TCase *tc = weft_tcase("bytes", 120);
  tcase_add_test(tc, map_bytes_variable_lengths);
  tcase_add_test(tc, map_bytes_many_mib_through_the_queues);
  tcase_add_test(tc, map_bytes_bad_arguments);
  tcase_add_test(tc, apply_async_large_results_and_messages);
  tcase_add_test(tc, task_fail_on_pointer_tasks_and_outside);
  tcase_add_test(tc, imap_bytes_ordered_and_unordered);
  suite_add_tcase(s, tc);
  tc = weft_tcase("errors", 60);
  tcase_add_test(tc, map_and_imap_errors_carry_messages);
  tcase_add_test(tc, imap_errors_carry_messages);
  tcase_add_test(tc, fixed_map_messages_and_emsgsize);
  tcase_add_test(tc, crash_in_chunk_fails_only_its_item);
  tcase_add_test(tc, crash_in_chunk_keeps_results_sent_in_parts);
  tcase_add_test(tc, progress_advances_per_item);
  tcase_add_test(tc, error_names_and_success);
  suite_add_tcase(s, tc);
  return s;
}
