/* SPDX-License-Identifier: MIT */
/* Misuse never crashes: every public call given NULL, an object already
 * freed or destroyed, an object of another kind, or a second free or
 * destroy returns an error code and leaves a sentence naming the call in
 * weft_last_error(); nothing leaks (the suites run under ASan's leak
 * check) and the process goes on working (each test ends by using a new
 * object).
 *
 * The objects weft frees (queues, process queues, pipe ends, segments,
 * values, imaps, as_completed iterators) are checked through one table per
 * kind: each row is a call applied to a handle. The caller-owned primitives
 * (Lock, RLock, Condition, Semaphore, Event, Barrier) get a table of their
 * own, applied to NULL and to a destroyed primitive; processes, threads,
 * pools and futures (handles by value) are checked closed and as id 0. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* An error that names no call under test, raised before each call so that
 * a call that fails without recording its own error is caught. */
static void stale_error(void) { ck_assert_int_eq(weft_sleep(NAN), WEFT_EINVAL); }

/* The predicates and getters give no code: a row wraps them so that they
 * give 1000 when their result was not the neutral one (false, 0, NULL) and
 * the last error's code otherwise. */
#define NEUTRAL(expr) ((expr) ? 1000 : weft_last_error_code())

/* Asserts that the last error names fn and says `word` (NULL: anything). */
static void assert_named(const char *fn, const char *word) {
  const char *msg = weft_last_error();
  size_t n = strlen(fn);
  ck_assert_msg(strncmp(msg, fn, n) == 0 && msg[n] == ':', "'%s' does not name %s", msg, fn);
  if (word != NULL) ck_assert_msg(strstr(msg, word) != NULL, "'%s' does not say '%s'", msg, word);
}

/* One call of the table: applied to a handle (or primitive) h. */
typedef struct row {
  const char *fn;
  int (*call)(void *h);
} row;

/* Runs every row on h and asserts the code and that the message names the
 * call (and says word, if given). */
static void run_rows(const row *rows, size_t n, void *h, int code, const char *word) {
  for (size_t i = 0; i < n; i++) {
    stale_error();
    int r = rows[i].call(h);
    ck_assert_msg(r == code, "%s gave %d (%s), not %d: %s", rows[i].fn, r, weft_err_name(r), code,
                  weft_last_error());
    assert_named(rows[i].fn, word);
  }
}

#define ROWS(a) (a), sizeof(a) / sizeof((a)[0])

/* ---- objects weft frees ---- */

/* A process queue's or value's row buffer. */
static char buf[64];
static size_t len;

static int q_put(void *h) { return weft_queue_put(h, NULL, 0); }
static int q_get(void *h) {
  void *item;
  return weft_queue_get(h, &item, 0);
}
static int q_qsize(void *h) { return NEUTRAL(weft_queue_qsize(h)); }
static int q_empty(void *h) { return NEUTRAL(weft_queue_empty(h)); }
static int q_full(void *h) { return NEUTRAL(weft_queue_full(h)); }
static int q_task_done(void *h) { return weft_queue_task_done(h); }
static int q_join(void *h) { return weft_queue_join(h, 0); }
static int q_close(void *h) { return weft_queue_close(h); }
static int q_free(void *h) { return weft_queue_free(h); }
static const row queue_rows[] = {
    {"weft_queue_put", q_put},     {"weft_queue_get", q_get},
    {"weft_queue_qsize", q_qsize}, {"weft_queue_empty", q_empty},
    {"weft_queue_full", q_full},   {"weft_queue_task_done", q_task_done},
    {"weft_queue_join", q_join},   {"weft_queue_close", q_close},
};

static int mq_put(void *h) { return weft_mpqueue_put(h, "x", 1, 0); }
static int mq_get(void *h) { return weft_mpqueue_get(h, buf, sizeof buf, &len, 0); }
static int mq_qsize(void *h) { return NEUTRAL(weft_mpqueue_qsize(h)); }
static int mq_empty(void *h) { return NEUTRAL(weft_mpqueue_empty(h)); }
static int mq_full(void *h) { return NEUTRAL(weft_mpqueue_full(h)); }
static int mq_task_done(void *h) { return weft_mpqueue_task_done(h); }
static int mq_join(void *h) { return weft_mpqueue_join(h, 0); }
static int mq_close(void *h) { return weft_mpqueue_close(h); }
static int mq_free(void *h) { return weft_mpqueue_free(h); }
static const row mpqueue_rows[] = {
    {"weft_mpqueue_put", mq_put},     {"weft_mpqueue_get", mq_get},
    {"weft_mpqueue_qsize", mq_qsize}, {"weft_mpqueue_empty", mq_empty},
    {"weft_mpqueue_full", mq_full},   {"weft_mpqueue_task_done", mq_task_done},
    {"weft_mpqueue_join", mq_join},   {"weft_mpqueue_close", mq_close},
};

static int c_send(void *h) { return weft_conn_send(h, "x", 1); }
static int c_recv(void *h) { return weft_conn_recv(h, buf, sizeof buf, &len, 0); }
static int c_poll(void *h) { return weft_conn_poll(h, 0); }
static int c_fileno(void *h) { return weft_conn_fileno(h); }
static int c_close(void *h) { return weft_conn_close(h); }
static const row conn_rows[] = {
    {"weft_conn_send", c_send},
    {"weft_conn_recv", c_recv},
    {"weft_conn_poll", c_poll},
    {"weft_conn_fileno", c_fileno},
};

static int s_buf(void *h) { return NEUTRAL(weft_shm_buf(h)); }
static int s_size(void *h) { return NEUTRAL(weft_shm_size(h)); }
static int s_name(void *h) { return NEUTRAL(weft_shm_name(h)); }
static int s_unlink(void *h) { return weft_shm_unlink(h); }
static int s_close(void *h) { return weft_shm_close(h); }
static const row shm_rows[] = {
    {"weft_shm_buf", s_buf},
    {"weft_shm_size", s_size},
    {"weft_shm_name", s_name},
    {"weft_shm_unlink", s_unlink},
};

static int v_ptr(void *h) { return NEUTRAL(weft_value_ptr(h)); }
static int v_get_lock(void *h) { return NEUTRAL(weft_value_get_lock(h)); }
static int v_length(void *h) { return NEUTRAL(weft_value_length(h)); }
static int v_elem_size(void *h) { return NEUTRAL(weft_value_elem_size(h)); }
static int v_load(void *h) { return weft_value_load(h, 0, 1, buf); }
static int v_store(void *h) { return weft_value_store(h, 0, 1, buf); }
static int v_free(void *h) { return weft_value_free(h); }
static const row value_rows[] = {
    {"weft_value_ptr", v_ptr},       {"weft_value_get_lock", v_get_lock},
    {"weft_value_length", v_length}, {"weft_value_elem_size", v_elem_size},
    {"weft_value_load", v_load},     {"weft_value_store", v_store},
};

static int i_next(void *h) {
  size_t index;
  return weft_imap_next(h, 0, &index, buf);
}
static int i_task_error(void *h) {
  int r = weft_imap_task_error(h);
  return r != 0 ? 1000 : weft_last_error_code();
}
static int i_free(void *h) { return weft_imap_free(h); }
static const row imap_rows[] = {
    {"weft_imap_next", i_next},
    {"weft_imap_task_error", i_task_error},
};

static int a_next(void *h) {
  weft_future f;
  size_t index;
  return weft_as_completed_next(h, 0, &f, &index);
}
static int a_free(void *h) { return weft_as_completed_free(h); }
static const row as_completed_rows[] = {
    {"weft_as_completed_next", a_next},
};

/* A kind of object weft frees: how to make one, its calls, and its free. */
typedef struct kind {
  const char *noun;  /* as the messages name it */
  const char *freed; /* "already freed", or closed */
  void *(*make)(void);
  const row *rows;
  size_t n;
  row free; /* NULL is ignored by it */
} kind;

static void *make_queue(void) { return weft_queue_new(.maxsize = 4); }
static void *make_mpqueue(void) { return weft_mpqueue_new(.capacity = 4096); }
static weft_conn *other_end;
static void *make_conn(void) {
  weft_conn *a;
  ck_assert_int_eq(weft_pipe(&a, &other_end), 0);
  return a;
}
static void *make_shm(void) { return weft_shm_new(4096); }
static void *make_value(void) { return weft_array_new("i", 4); }

static weft_pool pool;
static int echo(const void *arg, size_t n, void *result, size_t *result_len) {
  memcpy(result, arg, n);
  *result_len = n;
  return 0;
}
static bool three_items(void *item, void *arg) {
  int *left = arg;
  if (*left == 0) return false;
  memcpy(item, left, sizeof *left);
  (*left)--;
  return true;
}
static int items_left;
static void *make_imap(void) {
  items_left = 3;
  return weft_pool_imap(pool, echo, three_items, &items_left, sizeof(int), sizeof(int));
}
static int task(void *arg, void **result) {
  *result = arg;
  return 0;
}
static void *make_as_completed(void) {
  weft_future f[2] = {weft_pool_submit(pool, task, NULL), weft_pool_submit(pool, task, NULL)};
  weft_as_completed *ac = weft_as_completed_new(f, 2);
  weft_future_close(f[0]);
  weft_future_close(f[1]);
  return ac;
}

static const kind kinds[] = {
    {"queue", "already freed", make_queue, ROWS(queue_rows), {"weft_queue_free", q_free}},
    {"process queue", "already freed", make_mpqueue, ROWS(mpqueue_rows),
     {"weft_mpqueue_free", mq_free}},
    {"connection", "already closed", make_conn, ROWS(conn_rows), {"weft_conn_close", c_close}},
    {"segment", "already closed", make_shm, ROWS(shm_rows), {"weft_shm_close", s_close}},
    {"value", "already freed", make_value, ROWS(value_rows), {"weft_value_free", v_free}},
    {"imap", "already freed", make_imap, ROWS(imap_rows), {"weft_imap_free", i_free}},
    {"as_completed iterator", "already freed", make_as_completed, ROWS(as_completed_rows),
     {"weft_as_completed_free", a_free}},
};

static void kinds_setup(void) {
  pool = weft_thread_pool_new(.workers = 2);
  ck_assert_uint_ne(pool.id, 0);
}

static void kinds_teardown(void) {
  weft_conn_close(other_end);
  other_end = NULL;
  ck_assert_int_eq(weft_pool_close(pool), 0);
  ck_assert_int_eq(weft_pool_join(pool, 30), 0);
  ck_assert_int_eq(weft_pool_free(pool), 0);
}

static void *make(const kind *k) {
  void *h = k->make();
  ck_assert_msg(h != NULL, "making a %s: %s", k->noun, weft_last_error());
  return h;
}

static void free_ok(const kind *k, void *h) {
  int r = k->free.call(h);
  ck_assert_msg(r == 0, "%s: %s", k->free.fn, weft_last_error());
  weft_conn_close(other_end);
  other_end = NULL;
}

START_TEST(null_handles) {
  const kind *k = &kinds[_i];
  kinds_setup();
  run_rows(k->rows, k->n, NULL, WEFT_EINVAL, "is NULL");
  stale_error();
  ck_assert_int_eq(k->free.call(NULL), 0); /* NULL is ignored, as free(NULL) */
  free_ok(k, make(k));
  kinds_teardown();
}
END_TEST

START_TEST(freed_handles) {
  const kind *k = &kinds[_i];
  kinds_setup();
  void *h = make(k);
  free_ok(k, h);
  run_rows(k->rows, k->n, h, WEFT_ECLOSED, k->freed);
  /* A second free, and a third. */
  for (int i = 0; i < 2; i++) {
    stale_error();
    ck_assert_int_eq(k->free.call(h), WEFT_ECLOSED);
    assert_named(k->free.fn, k->freed);
    ck_assert_ptr_nonnull(strstr(weft_last_error(), k->noun));
  }
  /* The freed slot is reused by the next object; the stale pointer still
   * fails and the new object works. */
  void *fresh = make(k);
  run_rows(k->rows, k->n, h, WEFT_ECLOSED, k->freed);
  stale_error();
  ck_assert_int_eq(k->free.call(h), WEFT_ECLOSED);
  free_ok(k, fresh);
  kinds_teardown();
}
END_TEST

/* Each kind's calls given every other kind's live object. */
START_TEST(wrong_kind_handles) {
  const kind *k = &kinds[_i];
  kinds_setup();
  for (size_t j = 0; j < sizeof kinds / sizeof kinds[0]; j++) {
    if (j == (size_t)_i) continue;
    void *other = make(&kinds[j]);
    weft_conn *other_ends = other_end;
    other_end = NULL;
    run_rows(k->rows, k->n, other, WEFT_EINVAL, "not a");
    stale_error();
    ck_assert_int_eq(k->free.call(other), WEFT_EINVAL);
    assert_named(k->free.fn, kinds[j].noun);
    other_end = other_ends;
    free_ok(&kinds[j], other); /* untouched by the refused calls */
  }
  /* Pointers weft never handed out: a stack address, small numbers. */
  int local;
  void *bogus[] = {&local, (void *)(uintptr_t)1, (void *)(uintptr_t)0x7fffffff00000001u,
                   (void *)buf};
  for (size_t j = 0; j < sizeof bogus / sizeof bogus[0]; j++)
    run_rows(k->rows, k->n, bogus[j], WEFT_ECLOSED, NULL);
  free_ok(k, make(k));
  kinds_teardown();
}
END_TEST

/* Many objects at once span several chunks of the table. */
START_TEST(many_handles) {
  enum { N = 5000 };
  weft_queue **qs = malloc(N * sizeof *qs);
  ck_assert_ptr_nonnull(qs);
  for (int i = 0; i < N; i++) {
    qs[i] = weft_queue_new();
    ck_assert_ptr_nonnull(qs[i]);
    ck_assert_int_eq(weft_queue_put(qs[i], (void *)(intptr_t)i, 0), 0);
  }
  for (int i = 0; i < N; i += 2) ck_assert_int_eq(weft_queue_free(qs[i]), 0);
  for (int i = 0; i < N; i++) {
    void *item = NULL;
    int r = weft_queue_get(qs[i], &item, 0);
    if (i % 2 == 0) {
      ck_assert_int_eq(r, WEFT_ECLOSED);
    } else {
      ck_assert_int_eq(r, 0);
      ck_assert_int_eq((intptr_t)item, i);
      ck_assert_int_eq(weft_queue_free(qs[i]), 0);
    }
  }
  free(qs);
}
END_TEST

/* Threads making, using and freeing objects at once while others look up
 * stale pointers: the table's lock-free lookups under ThreadSanitizer. */
enum { CHURN_THREADS = 4 };
static weft_queue *stale_queue;
static int churn_failures;

static void *churn(void *arg) {
  (void)arg;
  for (int i = 0; i < 20000 / SLOW; i++) {
    weft_queue *q = weft_queue_new();
    void *item;
    if (q == NULL || weft_queue_put(q, q, 0) != 0 || weft_queue_get(q, &item, 0) != 0 ||
        item != q || weft_queue_free(q) != 0 || weft_queue_free(q) != WEFT_ECLOSED ||
        weft_queue_put(stale_queue, NULL, 0) != WEFT_ECLOSED)
      inc(&churn_failures);
  }
  return NULL;
}

START_TEST(concurrent_handles) {
  stale_queue = weft_queue_new();
  ck_assert_ptr_nonnull(stale_queue);
  ck_assert_int_eq(weft_queue_free(stale_queue), 0);
  pthread_t t[CHURN_THREADS];
  for (int i = 0; i < CHURN_THREADS; i++) t[i] = spawn(churn, NULL);
  for (int i = 0; i < CHURN_THREADS; i++) join(t[i]);
  ck_assert_int_eq(ld(&churn_failures), 0);
}
END_TEST

/* A forked child uses the parent's pointers (a thread queue refuses it:
 * the child has only a copy); freeing its copy leaves the parent's alone. */
START_TEST(handles_across_fork) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  weft_queue *tq = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  ck_assert_ptr_nonnull(tq);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int code = 0;
    if (weft_mpqueue_put(q, "child", 5, 5) != 0) code = 1;
    else if (weft_queue_put(tq, NULL, 0) != WEFT_EPERM) code = 2; /* a thread queue is not shared */
    else if (weft_mpqueue_free(q) != 0 || weft_mpqueue_free(q) != WEFT_ECLOSED) code = 3;
    else if (weft_queue_free(tq) != 0 || weft_queue_free(tq) != WEFT_ECLOSED) code = 4;
    _exit(code);
  }
  int status = wait_status(pid);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  ck_assert_int_eq(weft_mpqueue_get(q, buf, sizeof buf, &len, 5), 0);
  ck_assert(len == 5 && memcmp(buf, "child", 5) == 0);
  ck_assert_uint_eq(weft_queue_qsize(tq), 0); /* the child's put was refused */
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  ck_assert_int_eq(weft_queue_free(tq), 0);
}
END_TEST

/* ---- caller-owned primitives ---- */

static int l_acquire(void *h) { return weft_lock_acquire(h, WEFT_FOREVER); }
static int l_try(void *h) { return weft_lock_acquire(h, 0); }
static int l_release(void *h) { return weft_lock_release(h); }
static int l_locked(void *h) { return NEUTRAL(weft_lock_locked(h)); }
static int l_destroy(void *h) { return weft_lock_destroy(h); }
static const row lock_rows[] = {
    {"weft_lock_acquire", l_acquire},
    {"weft_lock_acquire", l_try},
    {"weft_lock_release", l_release},
    {"weft_lock_locked", l_locked},
};

static int r_acquire(void *h) { return weft_rlock_acquire(h, WEFT_FOREVER); }
static int r_try(void *h) { return weft_rlock_acquire(h, 0); }
static int r_release(void *h) { return weft_rlock_release(h); }
static int r_is_owned(void *h) { return NEUTRAL(weft_rlock_is_owned(h)); }
static int r_destroy(void *h) { return weft_rlock_destroy(h); }
static const row rlock_rows[] = {
    {"weft_rlock_acquire", r_acquire},
    {"weft_rlock_acquire", r_try},
    {"weft_rlock_release", r_release},
    {"weft_rlock_is_owned", r_is_owned},
};

static bool never(void *arg) {
  (void)arg;
  return false;
}
static int cd_acquire(void *h) { return weft_cond_acquire(h, WEFT_FOREVER); }
static int cd_release(void *h) { return weft_cond_release(h); }
static int cd_wait(void *h) { return weft_cond_wait(h, 0); }
static int cd_wait_for(void *h) { return weft_cond_wait_for(h, never, NULL, 0); }
static int cd_notify(void *h) { return weft_cond_notify(h, 1); }
static int cd_notify_all(void *h) { return weft_cond_notify_all(h); }
static int cd_destroy(void *h) { return weft_cond_destroy(h); }
static const row cond_rows[] = {
    {"weft_cond_acquire", cd_acquire},   {"weft_cond_release", cd_release},
    {"weft_cond_wait", cd_wait},         {"weft_cond_wait_for", cd_wait_for},
    {"weft_cond_notify", cd_notify},     {"weft_cond_notify_all", cd_notify_all},
};

static int sm_acquire(void *h) { return weft_semaphore_acquire(h, WEFT_FOREVER); }
static int sm_try(void *h) { return weft_semaphore_acquire(h, 0); }
static int sm_release(void *h) { return weft_semaphore_release(h, 1); }
static int sm_value(void *h) { return weft_semaphore_value(h); }
static int sm_destroy(void *h) { return weft_semaphore_destroy(h); }
static const row semaphore_rows[] = {
    {"weft_semaphore_acquire", sm_acquire},
    {"weft_semaphore_acquire", sm_try},
    {"weft_semaphore_release", sm_release},
    {"weft_semaphore_value", sm_value},
};

static int e_set(void *h) { return weft_event_set(h); }
static int e_clear(void *h) { return weft_event_clear(h); }
static int e_is_set(void *h) { return NEUTRAL(weft_event_is_set(h)); }
static int e_wait(void *h) { return weft_event_wait(h, WEFT_FOREVER); }
static int e_destroy(void *h) { return weft_event_destroy(h); }
static const row event_rows[] = {
    {"weft_event_set", e_set},
    {"weft_event_clear", e_clear},
    {"weft_event_is_set", e_is_set},
    {"weft_event_wait", e_wait},
};

static int b_wait(void *h) { return weft_barrier_wait(h, WEFT_FOREVER); }
static int b_reset(void *h) { return weft_barrier_reset(h); }
static int b_abort(void *h) { return weft_barrier_abort(h); }
static int b_parties(void *h) { return weft_barrier_parties(h); }
static int b_n_waiting(void *h) { return weft_barrier_n_waiting(h); }
static int b_broken(void *h) { return NEUTRAL(weft_barrier_broken(h)); }
static int b_destroy(void *h) { return weft_barrier_destroy(h); }
static const row barrier_rows[] = {
    {"weft_barrier_wait", b_wait},           {"weft_barrier_reset", b_reset},
    {"weft_barrier_abort", b_abort},         {"weft_barrier_parties", b_parties},
    {"weft_barrier_n_waiting", b_n_waiting}, {"weft_barrier_broken", b_broken},
};

/* A primitive: its storage, init, a use that must work, and destroy. */
static union {
  weft_lock lock;
  weft_rlock rlock;
  weft_cond cond;
  weft_semaphore sem;
  weft_event event;
  weft_barrier barrier;
} prim;

static void init_lock(void) { ck_assert_int_eq(weft_lock_init(&prim.lock), 0); }
static void use_lock(void) {
  ck_assert_int_eq(weft_lock_acquire(&prim.lock, 0), 0);
  ck_assert(weft_lock_locked(&prim.lock));
  ck_assert_int_eq(weft_lock_release(&prim.lock), 0);
}
static void init_rlock(void) { ck_assert_int_eq(weft_rlock_init(&prim.rlock), 0); }
static void use_rlock(void) {
  ck_assert_int_eq(weft_rlock_acquire(&prim.rlock, 0), 0);
  ck_assert_int_eq(weft_rlock_acquire(&prim.rlock, 0), 0);
  ck_assert(weft_rlock_is_owned(&prim.rlock));
  ck_assert_int_eq(weft_rlock_release(&prim.rlock), 0);
  ck_assert_int_eq(weft_rlock_release(&prim.rlock), 0);
}
static void init_cond(void) { ck_assert_int_eq(weft_cond_init(&prim.cond), 0); }
static void use_cond(void) {
  ck_assert_int_eq(weft_cond_acquire(&prim.cond, 0), 0);
  ck_assert_int_eq(weft_cond_wait(&prim.cond, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_cond_notify_all(&prim.cond), 0);
  ck_assert_int_eq(weft_cond_release(&prim.cond), 0);
}
static void init_sem(void) { ck_assert_int_eq(weft_semaphore_init(&prim.sem, 1), 0); }
static void use_sem(void) {
  ck_assert_int_eq(weft_semaphore_acquire(&prim.sem, 0), 0);
  ck_assert_int_eq(weft_semaphore_value(&prim.sem), 0);
  ck_assert_int_eq(weft_semaphore_release(&prim.sem, 1), 0);
}
static void init_event(void) { ck_assert_int_eq(weft_event_init(&prim.event), 0); }
static void use_event(void) {
  ck_assert_int_eq(weft_event_set(&prim.event), 0);
  ck_assert_int_eq(weft_event_wait(&prim.event, 0), 0);
  ck_assert_int_eq(weft_event_clear(&prim.event), 0);
  ck_assert(!weft_event_is_set(&prim.event));
}
static void init_barrier(void) { ck_assert_int_eq(weft_barrier_init(&prim.barrier, 1), 0); }
static void use_barrier(void) {
  ck_assert_int_eq(weft_barrier_wait(&prim.barrier, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_barrier_parties(&prim.barrier), 1);
  ck_assert_int_eq(weft_barrier_n_waiting(&prim.barrier), 0);
  ck_assert(!weft_barrier_broken(&prim.barrier));
}

typedef struct primitive {
  const char *name;
  void (*init)(void);
  void (*use)(void);
  const row *rows;
  size_t n;
  row destroy;
} primitive;

static const primitive primitives[] = {
    {"lock", init_lock, use_lock, ROWS(lock_rows), {"weft_lock_destroy", l_destroy}},
    {"rlock", init_rlock, use_rlock, ROWS(rlock_rows), {"weft_rlock_destroy", r_destroy}},
    {"cond", init_cond, use_cond, ROWS(cond_rows), {"weft_cond_destroy", cd_destroy}},
    {"semaphore", init_sem, use_sem, ROWS(semaphore_rows),
     {"weft_semaphore_destroy", sm_destroy}},
    {"event", init_event, use_event, ROWS(event_rows), {"weft_event_destroy", e_destroy}},
    {"barrier", init_barrier, use_barrier, ROWS(barrier_rows),
     {"weft_barrier_destroy", b_destroy}},
};

/* The primitives are checked with deadlock detection in its default mode
 * and off: the detector has its own acquire path. */
static void primitive_setup(int loop) {
  ck_assert_int_eq(weft_deadlock_set_mode(loop % 2 ? WEFT_DEADLOCK_OFF : WEFT_DEADLOCK_WARN), 0);
}

START_TEST(null_primitives) {
  const primitive *p = &primitives[_i / 2];
  primitive_setup(_i);
  run_rows(p->rows, p->n, NULL, WEFT_EINVAL, "is NULL");
  stale_error();
  ck_assert_int_eq(p->destroy.call(NULL), WEFT_EINVAL);
  assert_named(p->destroy.fn, "is NULL");
}
END_TEST

START_TEST(destroyed_primitives) {
  const primitive *p = &primitives[_i / 2];
  primitive_setup(_i);
  p->init();
  p->use();
  stale_error();
  ck_assert_msg(p->destroy.call(&prim) == 0, "%s: %s", p->destroy.fn, weft_last_error());
  run_rows(p->rows, p->n, &prim, WEFT_ECLOSED, "destroyed");
  for (int i = 0; i < 2; i++) {
    stale_error();
    ck_assert_int_eq(p->destroy.call(&prim), WEFT_ECLOSED);
    assert_named(p->destroy.fn, "already destroyed");
  }
  /* Init makes it new. */
  p->init();
  p->use();
  p->use();
  ck_assert_int_eq(p->destroy.call(&prim), 0);
}
END_TEST

/* Destroy refuses a primitive in use, which stays usable. */
START_TEST(destroy_in_use_is_busy) {
  ck_assert_int_eq(weft_lock_init(&prim.lock), 0);
  ck_assert_int_eq(weft_lock_acquire(&prim.lock, 0), 0);
  ck_assert_int_eq(weft_lock_destroy(&prim.lock), WEFT_EBUSY);
  assert_named("weft_lock_destroy", NULL);
  ck_assert_int_eq(weft_lock_release(&prim.lock), 0);
  ck_assert_int_eq(weft_lock_destroy(&prim.lock), 0);

  ck_assert_int_eq(weft_rlock_init(&prim.rlock), 0);
  ck_assert_int_eq(weft_rlock_acquire(&prim.rlock, 0), 0);
  ck_assert_int_eq(weft_rlock_destroy(&prim.rlock), WEFT_EBUSY);
  ck_assert_int_eq(weft_rlock_release(&prim.rlock), 0);
  ck_assert_int_eq(weft_rlock_destroy(&prim.rlock), 0);

  ck_assert_int_eq(weft_cond_init(&prim.cond), 0);
  ck_assert_int_eq(weft_cond_acquire(&prim.cond, 0), 0);
  ck_assert_int_eq(weft_cond_destroy(&prim.cond), WEFT_EBUSY);
  assert_named("weft_cond_destroy", NULL);
  ck_assert_int_eq(weft_cond_release(&prim.cond), 0);
  ck_assert_int_eq(weft_cond_destroy(&prim.cond), 0);

  /* A condition over a caller's Lock leaves that Lock alone. */
  weft_lock mine = WEFT_LOCK_INIT;
  ck_assert_int_eq(weft_cond_init(&prim.cond, .lock = &mine), 0);
  ck_assert_int_eq(weft_cond_destroy(&prim.cond), 0);
  ck_assert_int_eq(weft_cond_acquire(&prim.cond, 0), WEFT_ECLOSED);
  ck_assert_int_eq(weft_lock_acquire(&mine, 0), 0);
  ck_assert_int_eq(weft_lock_release(&mine), 0);
  ck_assert_int_eq(weft_lock_destroy(&mine), 0);
}
END_TEST

/* A destroyed Lock given to a condition, RLock-level use after destroy
 * through the Condition, and a static initialiser's lock. */
START_TEST(destroyed_static_lock) {
  static weft_lock s = WEFT_LOCK_INIT_NAMED("accounts");
  ck_assert_int_eq(weft_lock_destroy(&s), 0);
  stale_error();
  ck_assert_int_eq(weft_lock_acquire(&s, 1.0), WEFT_ECLOSED);
  ck_assert_str_eq(weft_last_error(), "weft_lock_acquire: accounts was destroyed");
  ck_assert_int_eq(weft_lock_init(&s), 0);
  ck_assert_int_eq(weft_lock_acquire(&s, 1.0), 0);
  ck_assert_int_eq(weft_lock_release(&s), 0);
}
END_TEST

/* ---- by-value handles ---- */

static void *thread_target(void *arg) { return arg; }
static int process_target(void *arg) {
  (void)arg;
  return 0;
}

/* Processes, threads, pools and futures are handles by value: the rows
 * take the id in a pointer's place. */
#define ID(h) ((uint64_t)(uintptr_t)(h))
#define PROC(h) ((weft_process){ID(h)})
#define THR(h) ((weft_thread){ID(h)})
#define POOL(h) ((weft_pool){ID(h)})
#define FUT(h) ((weft_future){ID(h)})

static int pr_start(void *h) { return weft_process_start(PROC(h)); }
static int pr_join(void *h) { return weft_process_join(PROC(h), 0); }
static int pr_is_alive(void *h) { return NEUTRAL(weft_process_is_alive(PROC(h))); }
static int pr_pid(void *h) { return weft_process_pid(PROC(h)); }
static int pr_exitcode(void *h) {
  int code;
  return weft_process_exitcode(PROC(h), &code);
}
static int pr_terminate(void *h) { return weft_process_terminate(PROC(h)); }
static int pr_kill(void *h) { return weft_process_kill(PROC(h)); }
static int pr_name(void *h) { return NEUTRAL(weft_process_name(PROC(h))); }
static int pr_daemon(void *h) { return NEUTRAL(weft_process_daemon(PROC(h))); }
static int pr_set_daemon(void *h) { return weft_process_set_daemon(PROC(h), true); }
static int pr_close(void *h) { return weft_process_close(PROC(h)); }
static const row process_rows[] = {
    {"weft_process_start", pr_start},         {"weft_process_join", pr_join},
    {"weft_process_is_alive", pr_is_alive},   {"weft_process_pid", pr_pid},
    {"weft_process_exitcode", pr_exitcode},   {"weft_process_terminate", pr_terminate},
    {"weft_process_kill", pr_kill},           {"weft_process_name", pr_name},
    {"weft_process_daemon", pr_daemon},       {"weft_process_set_daemon", pr_set_daemon},
};

static int th_start(void *h) { return weft_thread_start(THR(h)); }
static int th_join(void *h) { return weft_thread_join(THR(h), 0, NULL); }
static int th_is_alive(void *h) { return NEUTRAL(weft_thread_is_alive(THR(h))); }
static int th_ident(void *h) { return NEUTRAL(weft_thread_ident(THR(h))); }
static int th_native_id(void *h) { return weft_thread_native_id(THR(h)); }
static int th_name(void *h) { return NEUTRAL(weft_thread_name(THR(h))); }
static int th_daemon(void *h) { return NEUTRAL(weft_thread_daemon(THR(h))); }
static int th_set_daemon(void *h) { return weft_thread_set_daemon(THR(h), true); }
static int th_close(void *h) { return weft_thread_close(THR(h)); }
static const row thread_rows[] = {
    {"weft_thread_start", th_start},         {"weft_thread_join", th_join},
    {"weft_thread_is_alive", th_is_alive},   {"weft_thread_ident", th_ident},
    {"weft_thread_native_id", th_native_id}, {"weft_thread_name", th_name},
    {"weft_thread_daemon", th_daemon},       {"weft_thread_set_daemon", th_set_daemon},
};

static int po_submit(void *h) { return NEUTRAL(weft_pool_submit(POOL(h), task, NULL).id); }
static int po_apply_async(void *h) {
  return NEUTRAL(weft_pool_apply_async(POOL(h), echo, "x", 1).id);
}
static int po_map(void *h) {
  int in = 1, out;
  return weft_pool_map(POOL(h), echo, &in, sizeof in, 1, &out, sizeof out);
}
static int po_imap(void *h) {
  items_left = 1;
  return NEUTRAL(weft_pool_imap(POOL(h), echo, three_items, &items_left, sizeof(int),
                                sizeof(int)));
}
static int po_close(void *h) { return weft_pool_close(POOL(h)); }
static int po_join(void *h) { return weft_pool_join(POOL(h), 0); }
static int po_terminate(void *h) { return weft_pool_terminate(POOL(h)); }
/* A pool must be closed and joined before weft_pool_free frees it. */
static int po_free(void *h) {
  weft_pool_close(POOL(h));
  weft_pool_join(POOL(h), 30);
  return weft_pool_free(POOL(h));
}
static const row pool_rows[] = {
    {"weft_pool_submit", po_submit}, {"weft_pool_apply_async", po_apply_async},
    {"weft_pool_map", po_map},       {"weft_pool_imap", po_imap},
    {"weft_pool_close", po_close},   {"weft_pool_join", po_join},
    {"weft_pool_terminate", po_terminate},
};

static void callback(weft_future f, void *arg) {
  (void)f;
  (void)arg;
}
static int fu_result(void *h) { return weft_future_result(FUT(h), 0, NULL); }
static int fu_result_bytes(void *h) {
  const void *data;
  size_t n;
  return weft_future_result_bytes(FUT(h), 0, &data, &n);
}
static int fu_task_error(void *h) { return weft_future_task_error(FUT(h)); }
static int fu_done(void *h) { return NEUTRAL(weft_future_done(FUT(h))); }
static int fu_running(void *h) { return NEUTRAL(weft_future_running(FUT(h))); }
static int fu_cancel(void *h) { return weft_future_cancel(FUT(h)); }
static int fu_cancelled(void *h) { return NEUTRAL(weft_future_cancelled(FUT(h))); }
static int fu_add_done_callback(void *h) {
  return weft_future_add_done_callback(FUT(h), callback, NULL);
}
static int fu_close(void *h) { return weft_future_close(FUT(h)); }
static const row future_rows[] = {
    {"weft_future_result", fu_result},
    {"weft_future_result_bytes", fu_result_bytes},
    {"weft_future_task_error", fu_task_error},
    {"weft_future_done", fu_done},
    {"weft_future_running", fu_running},
    {"weft_future_cancel", fu_cancel},
    {"weft_future_cancelled", fu_cancelled},
    {"weft_future_add_done_callback", fu_add_done_callback},
};

static void *make_process(void) {
  return (void *)(uintptr_t)weft_process_new(process_target).id;
}
static void *make_thread(void) { return (void *)(uintptr_t)weft_thread_new(thread_target).id; }
static void *make_pool(void) {
  return (void *)(uintptr_t)weft_thread_pool_new(.workers = 1).id;
}
static void *make_future(void) {
  weft_future f = weft_pool_submit(pool, task, NULL);
  ck_assert_int_eq(weft_future_result(f, 30, NULL), 0);
  return (void *)(uintptr_t)f.id;
}

static const kind value_kinds[] = {
    {"process", "closed or invalid", make_process, ROWS(process_rows),
     {"weft_process_close", pr_close}},
    {"thread", "closed or invalid", make_thread, ROWS(thread_rows),
     {"weft_thread_close", th_close}},
    {"pool", "closed or invalid", make_pool, ROWS(pool_rows), {"weft_pool_free", po_free}},
    {"future", "closed or invalid", make_future, ROWS(future_rows),
     {"weft_future_close", fu_close}},
};

/* Id 0 (none), a closed handle, and a second close. */
START_TEST(closed_value_handles) {
  const kind *k = &value_kinds[_i];
  kinds_setup();
  run_rows(k->rows, k->n, NULL, WEFT_ECLOSED, k->freed);
  void *h = make(k);
  free_ok(k, h);
  run_rows(k->rows, k->n, h, WEFT_ECLOSED, k->freed);
  for (int i = 0; i < 2; i++) {
    stale_error();
    ck_assert_int_eq(k->free.call(h), WEFT_ECLOSED);
    assert_named(k->free.fn, k->freed);
  }
  free_ok(k, make(k));
  kinds_teardown();
}
END_TEST

/* ---- other pointer arguments ---- */

START_TEST(pointer_arguments) {
  char text[8];
  stale_error();
  ck_assert_ptr_null(weft_process_repr(weft_current_process(), NULL, 16));
  assert_named("weft_process_repr", "NULL");
  stale_error();
  ck_assert_ptr_null(weft_thread_repr(weft_current_thread(), text, 0));
  assert_named("weft_thread_repr", NULL);
  ck_assert_int_eq(weft_active_children(NULL, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_enumerate(NULL, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_futures_wait(NULL, 1, true, 0), WEFT_EINVAL);
  ck_assert_ptr_null(weft_as_completed_new(NULL, 1));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_uint_eq(weft_process_new(NULL).id, 0);
  ck_assert_uint_eq(weft_thread_new(NULL).id, 0);
  ck_assert_int_eq(weft_pipe(NULL, NULL), WEFT_EINVAL);
  ck_assert_ptr_null(weft_shm_attach(NULL));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_ptr_null(weft_value_new(NULL));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EINVAL);
  ck_assert_int_eq(weft_lock_init_opts(NULL, "l", NULL, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_event_init(NULL), WEFT_EINVAL);

  /* NULL options are the defaults. */
  weft_queue *q = weft_queue_new_opts(NULL);
  weft_mpqueue *mq = weft_mpqueue_new_opts(NULL);
  ck_assert_ptr_nonnull(q);
  ck_assert_ptr_nonnull(mq);
  ck_assert_int_eq(weft_queue_free(q), 0);
  ck_assert_int_eq(weft_mpqueue_free(mq), 0);
  ck_assert_int_eq(weft_lock_init_opts(&prim.lock, "l", NULL, NULL), 0);
  ck_assert_int_eq(weft_rlock_init_opts(&prim.rlock, "r", NULL, NULL), 0);
  ck_assert_int_eq(weft_rlock_destroy(&prim.rlock), 0);
  ck_assert_int_eq(weft_cond_init_opts(&prim.cond, "c", NULL, NULL), 0);
  ck_assert_int_eq(weft_cond_destroy(&prim.cond), 0);
  ck_assert_int_eq(weft_semaphore_init_opts(&prim.sem, 2, NULL), 0);
  ck_assert_int_eq(weft_barrier_init_opts(&prim.barrier, 2, NULL), 0);
  weft_thread t = weft_thread_new_opts(thread_target, NULL, NULL);
  ck_assert_uint_ne(t.id, 0);
  ck_assert_int_eq(weft_thread_close(t), 0);
  weft_process p = weft_process_new_opts(process_target, NULL);
  ck_assert_uint_ne(p.id, 0);
  ck_assert_int_eq(weft_process_close(p), 0);

  /* weft_shared_free twice, and a pointer it never gave. */
  void *block = weft_shared_alloc(100);
  ck_assert_ptr_nonnull(block);
  ck_assert_int_eq(weft_shared_free(block), 0);
  stale_error();
  ck_assert_int_eq(weft_shared_free(block), WEFT_ECLOSED);
  assert_named("weft_shared_free", "already freed");
  ck_assert_int_eq(weft_shared_free(text), WEFT_ECLOSED);
  ck_assert_int_eq(weft_shared_free(NULL), 0);
  block = weft_shared_alloc(100);
  ck_assert_ptr_nonnull(block);
  memset(block, 1, 100);
  ck_assert_int_eq(weft_shared_free(block), 0);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("misuse");
  int nkinds = (int)(sizeof kinds / sizeof kinds[0]);
  int nprims = (int)(sizeof primitives / sizeof primitives[0]);

  TCase *tc = weft_tcase("handles", 60);
  tcase_add_loop_test(tc, null_handles, 0, nkinds);
  tcase_add_loop_test(tc, freed_handles, 0, nkinds);
  tcase_add_loop_test(tc, wrong_kind_handles, 0, nkinds);
  tcase_add_test(tc, many_handles);
  tcase_add_test(tc, concurrent_handles);
  tcase_add_test(tc, handles_across_fork);
  suite_add_tcase(s, tc);

  tc = weft_tcase("primitives", 30);
  tcase_add_loop_test(tc, null_primitives, 0, 2 * nprims);
  tcase_add_loop_test(tc, destroyed_primitives, 0, 2 * nprims);
  tcase_add_test(tc, destroy_in_use_is_busy);
  tcase_add_test(tc, destroyed_static_lock);
  suite_add_tcase(s, tc);

  tc = weft_tcase("value_handles", 60);
  tcase_add_loop_test(tc, closed_value_handles, 0,
                      (int)(sizeof value_kinds / sizeof value_kinds[0]));
  suite_add_tcase(s, tc);

    tc = weft_tcase("arguments", 30);
  tcase_add_test(tc, pointer_arguments);
  suite_add_tcase(s, tc);
  return s;
}
