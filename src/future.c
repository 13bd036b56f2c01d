/* SPDX-License-Identifier: MIT */
/* Futures: Python's concurrent.futures.Future, wait and as_completed.
 *
 * Futures know nothing of the workers that run them, so every pool backend
 * uses them: a future holds its task, a state word and its callbacks, and
 * is refcounted (the handle holds one reference, the queued task another),
 * so closing the handle of a pending or running future is safe.
 *
 * The state word is both the state and the futex result() sleeps on. Every
 * transition out of PENDING is one compare-and-swap, which settles the race
 * between a worker starting a task and a cancel. Wake-ups are paid only when
 * someone waits: a waiter announces itself in `waiters` before it reads the
 * state, and the finisher reads `waiters` after it stores the state (both
 * sequentially consistent), so one of them always sees the other.
 * weft_futures_wait uses the same scheme with one process-wide generation
 * futex bumped by every completion while any such wait is in progress. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"
#include "handle.h"
#include "internal.h"
#include "os/os.h"
#include "pool_internal.h"
#include "weft/pool.h"

/* ---- futures ---- */

struct weft__callback {
  weft_future_callback fn;
  void *arg;
  int when; /* WEFT__CB_ALWAYS, or only on success / failure (apply_async) */
  struct weft__callback *next;
};

/* Internal watchers (imap, as_completed): run inline when the future
 * finishes, before any callback, and never block. */
struct weft__watch {
  void (*fn)(struct future *f, void *arg);
  void *arg;
  struct weft__watch *next;
};

static pthread_mutex_t futures_lock = PTHREAD_MUTEX_INITIALIZER;
static weft__handle_table futures;

/* weft_futures_wait: every completion bumps `gen` while `gen_waiters` > 0. */
static uint32_t gen;
static uint32_t gen_waiters;

static bool final_state(uint32_t s) { return s >= FS_OK; }

static uint32_t state_of(struct future *f) { return __atomic_load_n(&f->state, __ATOMIC_ACQUIRE); }

void weft__future_put(struct future *f) {
  if (__atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  struct weft__callback *c = f->cbs;
  while (c != NULL) {
    struct weft__callback *next = c->next;
    free(c);
    c = next;
  }
  struct weft__watch *w = f->watches;
  while (w != NULL) {
    struct weft__watch *next = w->next;
    free(w);
    w = next;
  }
  weft__chunk_release(f);
  free(f->call);
  free(f->bytes);
  free(f->report);
  pthread_mutex_destroy(&f->cb_lock);
  struct pool *owner = f->owner;
  free(f);
  if (owner != NULL) weft__pool_put(owner);
}

struct future *weft__future_get(weft_future h, const char *fn) {
  pthread_mutex_lock(&futures_lock);
  struct future *f = weft__handle_get(&futures, h.id);
  if (f != NULL && f->pid != weft__pid) {
    pthread_mutex_unlock(&futures_lock);
    weft__error(WEFT_EPERM, "%s: the future was made in process %d; its worker is not here",
                fn, (int)f->pid);
    return NULL;
  }
  if (f != NULL) __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&futures_lock);
  if (f == NULL) weft__error(WEFT_ECLOSED, "%s: the future handle is closed or invalid", fn);
  return f;
}

struct future *weft__future_new(weft_task fn, void *arg) {
  struct future *f = calloc(1, sizeof *f);
  if (f == NULL) return NULL;
  f->refs = 2;
  f->pid = weft__pid;
  f->fn = fn;
  f->arg = arg;
  pthread_mutex_init(&f->cb_lock, NULL);
  pthread_mutex_lock(&futures_lock);
  f->id = weft__handle_add(&futures, f);
  pthread_mutex_unlock(&futures_lock);
  if (f->id == 0) {
    pthread_mutex_destroy(&f->cb_lock);
    free(f);
    return NULL;
  }
  return f;
}

static bool succeeded(uint32_t s) { return s == FS_OK; }

void weft__future_run_callbacks(struct future *f) {
  pthread_mutex_lock(&f->cb_lock);
  struct weft__callback *c = f->cbs;
  f->cbs = NULL;
  pthread_mutex_unlock(&f->cb_lock);
  weft_future self = {f->id};
  bool ok = succeeded(state_of(f));
  while (c != NULL) {
    struct weft__callback *next = c->next;
    if (c->when == WEFT__CB_ALWAYS || (c->when == WEFT__CB_SUCCESS) == ok) c->fn(self, c->arg);
    free(c);
    c = next;
  }
}

/* Wakes whoever waits for f (now in a final state), runs its watchers, then
 * its callbacks: in the calling thread, outside every lock, or on its
 * pool's callback threads. */
static void future_finished(struct future *f) {
  if (__atomic_load_n(&f->waiters, __ATOMIC_SEQ_CST) != 0)
    weft__os_futex_wake(&f->state, INT32_MAX);
  if (__atomic_load_n(&gen_waiters, __ATOMIC_SEQ_CST) != 0) {
    __atomic_add_fetch(&gen, 1, __ATOMIC_SEQ_CST);
    weft__os_futex_wake(&gen, INT32_MAX);
  }
  pthread_mutex_lock(&f->cb_lock);
  f->cb_fired = true;
  struct weft__watch *w = f->watches;
  f->watches = NULL;
  bool any = f->cbs != NULL;
  pthread_mutex_unlock(&f->cb_lock);
  while (w != NULL) {
    struct weft__watch *next = w->next;
    w->fn(f, w->arg);
    free(w);
    w = next;
  }
  if (!any) return;
  if (f->cb_queue != NULL) {
    __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
    if (weft_queue_put(f->cb_queue, f, WEFT_FOREVER) == 0) return;
    weft__future_put(f); /* the queue closed (the pool is ending): run them here */
  }
  weft__future_run_callbacks(f);
}

bool weft__future_settle_pending(struct future *f, uint32_t to) {
  uint32_t expect = FS_PENDING;
  if (!__atomic_compare_exchange_n(&f->state, &expect, to, false, __ATOMIC_SEQ_CST,
                                   __ATOMIC_ACQUIRE))
    return false;
  future_finished(f);
  return true;
}

bool weft__future_settle(struct future *f, uint32_t to) {
  uint32_t s = state_of(f);
  while (!final_state(s))
    if (__atomic_compare_exchange_n(&f->state, &s, to, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_ACQUIRE)) {
      future_finished(f);
      return true;
    }
  return false;
}

/* Adds an internal watcher; runs it now if f is done. */
int weft__future_watch(struct future *f, void (*fn)(struct future *, void *), void *arg) {
  struct weft__watch *w = malloc(sizeof *w);
  if (w == NULL) return WEFT_ENOMEM;
  w->fn = fn;
  w->arg = arg;
  pthread_mutex_lock(&f->cb_lock);
  bool now = f->cb_fired;
  if (!now) {
    w->next = f->watches;
    f->watches = w;
  }
  pthread_mutex_unlock(&f->cb_lock);
  if (now) {
    fn(f, arg);
    free(w);
  }
  return 0;
}

/* Runs a pending future's task in the calling thread, unless it was
 * cancelled first. */
void weft__future_run(struct future *f, size_t room) {
  uint32_t expect = FS_PENDING;
  if (!__atomic_compare_exchange_n(&f->state, &expect, FS_RUNNING, false, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE))
    return;
  void *result = NULL;
  int code;
  if (f->call != NULL) {
    code = weft__thread_run_call(f, room, &f->fail_err);
    result = f->bytes;
  } else {
    code = weft__run_pointer_task(f, &result);
  }
  f->result = result;
  f->task_err = code;
  __atomic_store_n(&f->state, code == 0 ? FS_OK : FS_FAILED, __ATOMIC_SEQ_CST);
  future_finished(f);
}

/* Waits until f is in a final state or the deadline passes. */
static bool future_wait(struct future *f, weft__deadline deadline) {
  uint32_t s = state_of(f);
  if (final_state(s)) return true;
  if (deadline != WEFT__NEVER && deadline <= weft__os_now_ns()) return false;
  __atomic_add_fetch(&f->waiters, 1, __ATOMIC_SEQ_CST);
  bool recorded = weft__wait_begin(WEFT__WAIT_FUTURE, f, NULL, NULL, 0);
  for (;;) {
    s = __atomic_load_n(&f->state, __ATOMIC_SEQ_CST);
    if (final_state(s)) break;
    if (weft__os_futex_wait(&f->state, s, deadline) == -ETIMEDOUT) {
      s = state_of(f);
      break;
    }
  }
  __atomic_sub_fetch(&f->waiters, 1, __ATOMIC_RELAXED);
  weft__wait_end(recorded);
  return final_state(s);
}

/* The outcome of a finished future as a code, with its message. */
static int outcome(struct future *f, const char *fn) {
  switch (state_of(f)) {
  case FS_OK:
    return 0;
  case FS_FAILED: {
    const char *msg = f->report != NULL ? f->report : "";
    if (f->call == NULL)
      return weft__error(WEFT_ETASKFAILED, "%s: the task failed with code %d%s%s", fn,
                         f->task_err, *msg ? ": " : "", msg);
    if (f->fail_err == WEFT_EMSGSIZE)
      return weft__error(WEFT_EMSGSIZE, "%s: task %llu %s", fn,
                         (unsigned long long)f->call->seq, msg);
    return weft__error(WEFT_ETASKFAILED, "%s: task %llu failed with code %d%s%s", fn,
                       (unsigned long long)f->call->seq, f->task_err, *msg ? ": " : "", msg);
  }
  case FS_CANCELLED:
    return weft__error(WEFT_ECANCELED, "%s: %s", fn,
                       f->report != NULL ? f->report : "the task was cancelled");
  case FS_DIED:
    return weft__error(WEFT_EWORKERDIED, "%s: %s", fn,
                       f->report != NULL ? f->report : weft_strerror(WEFT_EWORKERDIED));
  case FS_TIMEDOUT:
    return weft__error(WEFT_ETASKTIMEOUT, "%s: %s", fn,
                       f->report != NULL ? f->report : weft_strerror(WEFT_ETASKTIMEOUT));
  default:
    return weft__error(WEFT_EBROKEN, "%s: the pool broke before the task ran", fn);
  }
}

bool weft__future_wait(struct future *f, weft__deadline deadline) {
  return future_wait(f, deadline);
}

int weft__future_outcome(struct future *f, const char *fn) { return outcome(f, fn); }

static int future_result(weft_future h, double timeout, const char *fn, void **result,
                         const void **data, size_t *len) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return weft__error(err, "%s: timeout is NaN", fn);
  struct future *f = weft__future_get(h, fn);
  if (f == NULL) return weft_last_error_code();
  if (!future_wait(f, deadline)) {
    err = weft__error(WEFT_ETIMEDOUT, "%s: the task is not done after %g s", fn, timeout);
  } else {
    err = outcome(f, fn);
    if (err == 0) {
      if (result != NULL) *result = f->result;
      if (data != NULL) *data = f->bytes;
      if (len != NULL) *len = f->bytes_len;
    }
  }
  weft__future_put(f);
  return err;
}

int weft_future_result(weft_future h, double timeout, void **result) {
  return future_result(h, timeout, __func__, result, NULL, NULL);
}

int weft_future_result_bytes(weft_future h, double timeout, const void **data, size_t *len) {
  return future_result(h, timeout, __func__, NULL, data, len);
}

int weft_future_task_error(weft_future h) {
  struct future *f = weft__future_get(h, __func__);
  if (f == NULL) return weft_last_error_code();
  int code = state_of(f) == FS_FAILED && f->fail_err != WEFT_EMSGSIZE ? f->task_err : 0;
  weft__future_put(f);
  return code;
}

const char *weft_future_task_message(weft_future h) {
  struct future *f = weft__future_get(h, __func__);
  if (f == NULL) return "";
  uint32_t s = state_of(f);
  /* The handle's reference keeps the report until the future is closed. */
  const char *msg = final_state(s) && s != FS_OK && f->report != NULL ? f->report : "";
  weft__future_put(f);
  return msg;
}

static bool future_test(weft_future h, const char *fn, bool (*pred)(uint32_t)) {
  struct future *f = weft__future_get(h, fn);
  if (f == NULL) return false;
  bool r = pred(state_of(f));
  weft__future_put(f);
  return r;
}

static bool is_running(uint32_t s) { return s == FS_RUNNING; }
static bool is_cancelled(uint32_t s) { return s == FS_CANCELLED; }

bool weft_future_done(weft_future h) { return future_test(h, __func__, final_state); }

bool weft_future_running(weft_future h) {
  struct future *f = weft__future_get(h, __func__);
  if (f == NULL) return false;
  bool r = is_running(state_of(f)) && (f->owner == NULL || f->owner->ops->running(f));
  weft__future_put(f);
  return r;
}
bool weft_future_cancelled(weft_future h) { return future_test(h, __func__, is_cancelled); }

/* Cancels f unless it began: true if it is cancelled (now or before). */
int weft__other_process(pid_t made_in, const char *what, const char *fn) {
  return weft__error(WEFT_EPERM,
                     "%s: the %s was made in process %d, where its results arrive; this process "
                     "(%d) has only a copy", fn, what, (int)made_in, (int)weft__pid);
}

bool weft__future_cancel(struct future *f) {
  /* A process pool's task handed to a worker that has not begun it. */
  if (f->owner != NULL && state_of(f) == FS_RUNNING && f->owner->ops->cancel(f) == 0) return true;
  return weft__future_settle_pending(f, FS_CANCELLED) || state_of(f) == FS_CANCELLED;
}

int weft_future_cancel(weft_future h) {
  struct future *f = weft__future_get(h, __func__);
  if (f == NULL) return weft_last_error_code();
  int err = 0;
  if (!weft__future_cancel(f))
    err = weft__error(WEFT_EBUSY, "weft_future_cancel: the task is %s",
                      state_of(f) == FS_RUNNING ? "running" : "done");
  weft__future_put(f);
  return err;
}

int weft_future_add_done_callback(weft_future h, weft_future_callback cb, void *arg) {
  if (cb == NULL) return weft__error(WEFT_EINVAL, "weft_future_add_done_callback: cb is NULL");
  struct future *f = weft__future_get(h, __func__);
  if (f == NULL) return weft_last_error_code();
  struct weft__callback *c = malloc(sizeof *c);
  if (c == NULL) {
    weft__future_put(f);
    return weft__error(WEFT_ENOMEM, "weft_future_add_done_callback: out of memory");
  }
  c->fn = cb;
  c->arg = arg;
  c->when = WEFT__CB_ALWAYS;
  pthread_mutex_lock(&f->cb_lock);
  bool now = f->cb_fired;
  if (!now) {
    /* Appended, so callbacks run in the order they were added. */
    struct weft__callback **p = &f->cbs;
    while (*p != NULL) p = &(*p)->next;
    c->next = NULL;
    *p = c;
  }
  pthread_mutex_unlock(&f->cb_lock);
  if (now) {
    cb(h, arg);
    free(c);
  }
  weft__future_put(f);
  return 0;
}

int weft_futures_wait(const weft_future *hs, size_t n, bool all, double timeout) {
  if (hs == NULL || n == 0)
    return weft__error(WEFT_EINVAL, "weft_futures_wait: no futures given");
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return weft__error(err, "weft_futures_wait: timeout is NaN");
  struct future **fs = calloc(n, sizeof *fs);
  if (fs == NULL) return weft__error(WEFT_ENOMEM, "weft_futures_wait: out of memory");
  size_t got = 0;
  for (; got < n; got++) {
    fs[got] = weft__future_get(hs[got], __func__);
    if (fs[got] == NULL) {
      err = weft_last_error_code();
      break;
    }
  }
  if (err == 0) {
    __atomic_add_fetch(&gen_waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
      uint32_t seen = __atomic_load_n(&gen, __ATOMIC_SEQ_CST);
      size_t done = 0;
      for (size_t i = 0; i < n; i++)
        if (final_state(__atomic_load_n(&fs[i]->state, __ATOMIC_SEQ_CST))) done++;
      if (all ? done == n : done > 0) break;
      if ((deadline != WEFT__NEVER && deadline <= weft__os_now_ns()) ||
          weft__os_futex_wait(&gen, seen, deadline) == -ETIMEDOUT) {
        /* One last look: a completion may have come with the deadline. */
        done = 0;
        for (size_t i = 0; i < n; i++)
          if (final_state(state_of(fs[i]))) done++;
        if (!(all ? done == n : done > 0))
          err = weft__error(WEFT_ETIMEDOUT, "weft_futures_wait: %zu of %zu done after %g s",
                            done, n, timeout);
        break;
      }
    }
    __atomic_sub_fetch(&gen_waiters, 1, __ATOMIC_SEQ_CST);
  }
  for (size_t i = 0; i < got; i++) weft__future_put(fs[i]);
  free(fs);
  return err;
}

int weft_future_close(weft_future h) {
  pthread_mutex_lock(&futures_lock);
  struct future *f = weft__handle_get(&futures, h.id);
  if (f != NULL) weft__handle_remove(&futures, h.id);
  pthread_mutex_unlock(&futures_lock);
  if (f == NULL)
    return weft__error(WEFT_ECLOSED, "weft_future_close: the future handle is closed or invalid");
  weft__future_put(f);
  return 0;
}

int weft__future_add_callback(struct future *f, weft_future_callback cb, void *arg, int when) {
  struct weft__callback *c = malloc(sizeof *c);
  if (c == NULL) return WEFT_ENOMEM;
  c->fn = cb;
  c->arg = arg;
  c->when = when;
  c->next = f->cbs;
  f->cbs = c;
  return 0;
}

/* ---- as_completed ---- */

struct weft_as_completed {
  pid_t pid; /* the process that made it: its futures live there */
  size_t n, given;
  size_t unique;    /* futures to give: a future listed twice is given once */
  weft_queue *done; /* positions + 1, as they finish */
  struct future **fs;
  struct ac_watch **ws; /* each future's watcher arg */
  uint32_t fired;   /* futex: watchers that ran (or were taken back) */
};

struct ac_watch {
  struct weft_as_completed *ac;
  size_t index;
};

struct ac_sort {
  struct future *f;
  size_t i;
};

static int ac_cmp(const void *a, const void *b) {
  const struct ac_sort *x = a, *y = b;
  if (x->f != y->f) return (uintptr_t)x->f < (uintptr_t)y->f ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

/* Marks in dup each position whose future came earlier in the list (as
 * Python's as_completed, which makes a set of them); returns how many are
 * left. */
static size_t ac_mark_duplicates(struct future **fs, size_t n, bool *dup) {
  struct ac_sort *s = malloc(n * sizeof *s);
  if (s == NULL) return n; /* then duplicates are given twice: better than failing */
  for (size_t i = 0; i < n; i++) s[i] = (struct ac_sort){fs[i], i};
  qsort(s, n, sizeof *s, ac_cmp);
  size_t unique = n;
  for (size_t k = 1; k < n; k++)
    if (s[k].f == s[k - 1].f) {
      dup[s[k].i] = true;
      unique--;
    }
  free(s);
  return unique;
}

static void as_completed_free(struct weft_as_completed *ac);

static void ac_done(struct future *f, void *arg) {
  (void)f;
  struct ac_watch *w = arg;
  struct weft_as_completed *ac = w->ac;
  weft_queue_put(ac->done, (void *)(uintptr_t)(w->index + 1), WEFT_FOREVER);
  /* w stays until weft_as_completed_free: its address names this watcher. */
  __atomic_add_fetch(&ac->fired, 1, __ATOMIC_SEQ_CST);
  weft__os_futex_wake(&ac->fired, INT32_MAX);
}

weft_as_completed *weft_as_completed_new(const weft_future *hs, size_t n) {
  if (hs == NULL || n == 0) {
    weft__error(WEFT_EINVAL, "weft_as_completed_new: no futures given");
    return NULL;
  }
  struct weft_as_completed *ac = calloc(1, sizeof *ac);
  struct future **fs = calloc(n, sizeof *fs);
  struct ac_watch **ws = calloc(n, sizeof *ws);
  weft_queue *done = weft_queue_new(.name = "as_completed");
  if (ac == NULL || fs == NULL || ws == NULL || done == NULL) {
    free(ac);
    free(fs);
    free(ws);
    if (done != NULL) weft_queue_free(done);
    weft__error(WEFT_ENOMEM, "weft_as_completed_new: out of memory");
    return NULL;
  }
  ac->pid = weft__pid;
  ac->n = n;
  ac->fs = fs;
  ac->ws = ws;
  ac->done = done;
  size_t got = 0;
  for (; got < n; got++)
    if ((fs[got] = weft__future_get(hs[got], "weft_as_completed_new")) == NULL) break;
  if (got < n) {
    int err = weft_last_error_code();
    char msg[512];
    snprintf(msg, sizeof msg, "%s", weft_last_error());
    for (size_t i = 0; i < got; i++) weft__future_put(fs[i]);
    free(fs);
    free(ws);
    weft_queue_free(done);
    free(ac);
    weft__error(err, "%s", msg);
    return NULL;
  }
  bool *dup = calloc(n, sizeof *dup);
  ac->unique = dup != NULL ? ac_mark_duplicates(fs, n, dup) : n;
  for (size_t i = 0; i < n; i++) {
    if (dup != NULL && dup[i]) {
      __atomic_add_fetch(&ac->fired, 1, __ATOMIC_SEQ_CST); /* nothing to wait for */
      continue;
    }
    struct ac_watch *w = malloc(sizeof *w);
    if (w != NULL) {
      w->ac = ac;
      w->index = i;
    }
    ws[i] = w;
    if (w == NULL || weft__future_watch(fs[i], ac_done, w) != 0) {
      /* No watcher: wait for this one now rather than lose it. */
      free(w);
      ws[i] = NULL;
      weft__future_wait(fs[i], WEFT__NEVER);
      weft_queue_put(done, (void *)(uintptr_t)(i + 1), WEFT_FOREVER);
      __atomic_add_fetch(&ac->fired, 1, __ATOMIC_SEQ_CST);
    }
  }
  free(dup);
  /* The caller holds a handle (handle.h), not ac. */
  weft_as_completed *handle = weft__ref_add(ac, WEFT__REF_AS_COMPLETED, "weft_as_completed_new");
  if (handle == NULL) {
    int err = weft_last_error_code();
    char msg[256];
    snprintf(msg, sizeof msg, "%s", weft_last_error());
    as_completed_free(ac);
    weft__error(err, "%s", msg);
  }
  return handle;
}

int weft_as_completed_next(weft_as_completed *h, double timeout, weft_future *future,
                           size_t *index) {
  int herr = 0;
  struct weft_as_completed *ac =
      weft__ref_use(h, WEFT__REF_AS_COMPLETED, "weft_as_completed_next", &herr);
  if (ac == NULL) return herr;
  if (ac->pid != weft__pid)
    return weft__other_process(ac->pid, "as_completed iterator", "weft_as_completed_next");
  if (isnan(timeout)) return weft__error(WEFT_EINVAL, "weft_as_completed_next: timeout is NaN");
  if (ac->given == ac->unique)
    return weft__error(WEFT_EEOF, "weft_as_completed_next: all %zu futures were given",
                       ac->unique);
  void *item;
  if (weft_queue_get(ac->done, &item, timeout) != 0)
    return weft__error(WEFT_ETIMEDOUT, "weft_as_completed_next: %zu of %zu still running after %g s",
                       ac->unique - ac->given, ac->unique, timeout);
  size_t i = (size_t)(uintptr_t)item - 1;
  ac->given++;
  if (future != NULL) *future = (weft_future){ac->fs[i]->id};
  if (index != NULL) *index = i;
  return 0;
}

static void as_completed_free(struct weft_as_completed *ac) {
  /* Take back the watchers of futures still running; one that is being
   * run now is waited for (it is about to count itself). */
  for (size_t i = 0; i < ac->n; i++) {
    struct future *f = ac->fs[i];
    if (ac->ws[i] == NULL) continue;
    pthread_mutex_lock(&f->cb_lock);
    bool taken = false;
    for (struct weft__watch **pw = &f->watches; *pw != NULL; pw = &(*pw)->next)
      if ((*pw)->arg == ac->ws[i]) {
        struct weft__watch *w = *pw;
        *pw = w->next;
        free(w);
        taken = true;
        break;
      }
    pthread_mutex_unlock(&f->cb_lock);
    if (taken) __atomic_add_fetch(&ac->fired, 1, __ATOMIC_SEQ_CST);
  }
  uint32_t fired;
  while ((fired = __atomic_load_n(&ac->fired, __ATOMIC_SEQ_CST)) != (uint32_t)ac->n)
    weft__os_futex_wait(&ac->fired, fired, WEFT__NEVER);
  for (size_t i = 0; i < ac->n; i++) {
    weft__future_put(ac->fs[i]);
    free(ac->ws[i]);
  }
  free(ac->ws);
  free(ac->fs);
  weft_queue_free(ac->done);
  free(ac);
}

int weft_as_completed_free(weft_as_completed *h) {
  if (h == NULL) return 0;
  int herr = 0;
  struct weft_as_completed *in =
      weft__ref_use(h, WEFT__REF_AS_COMPLETED, "weft_as_completed_free", &herr);
  if (in == NULL) return herr;
  if (in->pid != weft__pid)
    return weft__other_process(in->pid, "as_completed iterator", "weft_as_completed_free");
  struct weft_as_completed *ac =
      weft__ref_remove(h, WEFT__REF_AS_COMPLETED, "weft_as_completed_free");
  if (ac == NULL) return weft_last_error_code();
  as_completed_free(ac);
  return 0;
}


void weft__future_forget(struct future *f) {
  pthread_mutex_lock(&futures_lock);
  weft__handle_remove(&futures, f->id);
  pthread_mutex_unlock(&futures_lock);
}

/* The registry's lock is held across fork (see pool.c's fork hooks). */
void weft__future_before_fork(void) { pthread_mutex_lock(&futures_lock); }
WEFT__HOT void weft__future_after_fork(void) { pthread_mutex_unlock(&futures_lock); }
