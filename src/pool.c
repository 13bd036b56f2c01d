/* SPDX-License-Identifier: MIT */
/* Thread pools and futures: Python's ThreadPoolExecutor and Future.
 *
 * Futures know nothing of the workers that run them, so process pools can
 * reuse them: a future holds its task, a state word and its callbacks, and
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
 * futex bumped by every completion while any such wait is in progress.
 *
 * Workers are non-daemon weft threads (Python joins ThreadPoolExecutor
 * workers at exit): an atexit handler, registered after the first worker
 * starts and so run before weft's exit rules join the threads, closes every
 * pool, so queued work still runs and the workers then leave.
 */
#define _GNU_SOURCE
#include "weft/pool.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "handle.h"
#include "internal.h"
#include "pool_internal.h"
#include "runtime.h"
#include "os/os.h"
#include "weft/process.h"
#include "weft/queue.h"
#include "weft/thread.h"

/* Tuning. */
/* weft_progress_bar redraws at most this often (seconds): a display rate,
 * not measured. */
#define PROGRESS_REDRAW_S 0.1

/* ---- futures ---- */

struct weft__callback {
  weft_future_callback fn;
  void *arg;
  int when; /* CB_ALWAYS, or only on success / failure (apply_async) */
  struct weft__callback *next;
};

enum { CB_ALWAYS, CB_SUCCESS, CB_FAILURE };

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
    if (c->when == CB_ALWAYS || (c->when == CB_SUCCESS) == ok) c->fn(self, c->arg);
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
static int future_watch(struct future *f, void (*fn)(struct future *, void *), void *arg) {
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
static void future_run(struct future *f, size_t room) {
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
  for (;;) {
    s = __atomic_load_n(&f->state, __ATOMIC_SEQ_CST);
    if (final_state(s)) break;
    if (weft__os_futex_wait(&f->state, s, deadline) == -ETIMEDOUT) {
      s = state_of(f);
      break;
    }
  }
  __atomic_sub_fetch(&f->waiters, 1, __ATOMIC_RELAXED);
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
static bool future_cancel(struct future *f) {
  /* A process pool's task handed to a worker that has not begun it. */
  if (f->owner != NULL && state_of(f) == FS_RUNNING && f->owner->ops->cancel(f) == 0) return true;
  return weft__future_settle_pending(f, FS_CANCELLED) || state_of(f) == FS_CANCELLED;
}

int weft_future_cancel(weft_future h) {
  struct future *f = weft__future_get(h, __func__);
  if (f == NULL) return weft_last_error_code();
  int err = 0;
  if (!future_cancel(f))
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
  c->when = CB_ALWAYS;
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

/* ---- pools ---- */

static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static weft__handle_table pools;
static unsigned pool_counter;
static int exit_hook_set;
static _Thread_local struct pool *tls_pool;

void weft__pool_put(struct pool *p) {
  if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  for (size_t i = 0; i < p->nthreads; i++) weft_thread_close(p->threads[i]);
  free(p->threads);
  if (p->tasks != NULL) weft_queue_free(p->tasks);
  if (p->proc != NULL) p->ops->free(p);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

static struct pool *pool_get(weft_pool h, const char *fn) {
  pthread_mutex_lock(&pools_lock);
  struct pool *p = weft__handle_get(&pools, h.id);
  if (p != NULL && p->pid != weft__pid) {
    pthread_mutex_unlock(&pools_lock);
    weft__error(WEFT_EPERM, "%s: %s was made in process %d; a forked child has none of its workers",
                fn, p->name, (int)p->pid);
    return NULL;
  }
  if (p != NULL) __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&pools_lock);
  if (p == NULL) weft__error(WEFT_ECLOSED, "%s: the pool handle is closed or invalid", fn);
  return p;
}

struct pool *weft__pool_get(weft_pool h, const char *fn) { return pool_get(h, fn); }

static void close_at_exit(void *obj, void *unused) {
  (void)unused;
  struct pool *p = obj;
  if (p->pid != weft__pid) return; /* a forked child's copy: its lock may be held */
  if (p->kind == POOL_PROCESSES) return; /* see weft__pool_exit_rules */
  pthread_mutex_lock(&p->lock);
  p->closed = true;
  pthread_mutex_unlock(&p->lock);
  weft_queue_close(p->tasks);
}

static void pools_at_exit(void) {
  pthread_mutex_lock(&pools_lock);
  weft__handle_each(&pools, close_at_exit, NULL);
  pthread_mutex_unlock(&pools_lock);
}

static void ensure_exit_hook(void) {
  if (!__atomic_exchange_n(&exit_hook_set, 1, __ATOMIC_ACQ_REL)) atexit(pools_at_exit);
}

#define DEFAULT_MAX_MESSAGE ((size_t)4 << 20)

/* The backend of process pools that name no start method: MPI ranks once
 * the program asked for them (the weft_mpi library sets it), else local. */
static const struct weft__pool_ops *remote_ops;

void weft__pool_set_remote(const struct weft__pool_ops *ops) {
  __atomic_store_n(&remote_ops, ops, __ATOMIC_RELEASE);
}

static const struct weft__pool_ops *process_backend(const weft_pool_options *o) {
  const struct weft__pool_ops *remote = __atomic_load_n(&remote_ops, __ATOMIC_ACQUIRE);
  return remote != NULL && o->start_method == NULL ? remote : &weft__ppool_ops;
}

static weft_pool pool_new(const weft_pool_options *o, int kind, const struct weft__pool_ops *ops,
                          const char *fn) {
  weft_pool none = {0};
  if (o == NULL || (o->workers < 1 && o->workers != WEFT_DEFAULT)) {
    weft__error(WEFT_EINVAL, "%s: workers must be at least 1 (leave it out for the default)", fn);
    return none;
  }
  if (o->maxtasksperchild < 0) {
    weft__error(WEFT_EINVAL, "%s: negative maxtasksperchild", fn);
    return none;
  }
  /* Room for "_N" with N up to 10 digits in the thread names. */
  if (o->name != NULL && strlen(o->name) > WEFT_NAME_MAX - 11) {
    weft__error(WEFT_EINVAL, "%s: name is longer than %d bytes", fn, WEFT_NAME_MAX - 11);
    return none;
  }
  if (kind == POOL_THREADS && o->task_timeout != 0) {
    weft__error(WEFT_EINVAL, "%s: task_timeout needs a process pool (threads cannot be killed)",
                fn);
    return none;
  }
  if (!(o->task_timeout >= 0)) {
    weft__error(WEFT_EINVAL, "%s: task_timeout is negative or NaN", fn);
    return none;
  }
  if (o->max_message != 0 && (o->max_message < 64 || o->max_message > ((size_t)1 << 30))) {
    weft__error(WEFT_EINVAL, "%s: max_message must be between 64 bytes and 1 GiB", fn);
    return none;
  }
  if (o->callback_threads < 0) {
    weft__error(WEFT_EINVAL, "%s: negative callback_threads", fn);
    return none;
  }
  if (kind == POOL_THREADS && o->start_method != NULL) {
    weft__error(WEFT_EINVAL, "%s: a start method is for process pools (threads are not started "
                             "as processes)", fn);
    return none;
  }
  struct pool *p = calloc(1, sizeof *p);
  if (p == NULL) {
    weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
    return none;
  }
  p->refs = 1;
  p->kind = kind;
  p->pid = weft__pid;
  p->max_workers = o->workers != WEFT_DEFAULT ? o->workers : weft_cpu_count();
  p->maxtasks = o->maxtasksperchild;
  p->initializer = o->initializer;
  p->initarg = o->initarg;
  p->max_message = o->max_message != 0 ? o->max_message : DEFAULT_MAX_MESSAGE;
  if (kind == POOL_PROCESSES) p->ops = ops != NULL ? ops : process_backend(o);
  pthread_mutex_init(&p->lock, NULL);
  if (kind == POOL_THREADS) {
    p->tasks = weft_queue_new(.name = "pool tasks");
    if (p->tasks == NULL) {
      pthread_mutex_destroy(&p->lock);
      free(p);
      weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
      return none;
    }
  }
  pthread_mutex_lock(&pools_lock);
  if (o->name != NULL)
    snprintf(p->name, sizeof p->name, "%s", o->name);
  else if (kind == POOL_THREADS)
    snprintf(p->name, sizeof p->name, "ThreadPool-%u", pool_counter++);
  else
    snprintf(p->name, sizeof p->name, "ProcessPool-%u", pool_counter++);
  pthread_mutex_unlock(&pools_lock);
  if (kind == POOL_PROCESSES && p->ops->start(p, o) != 0) {
    pthread_mutex_destroy(&p->lock); /* the backend cleaned up and said why */
    free(p);
    return none;
  }
  if (kind == POOL_PROCESSES) ensure_exit_hook();
  pthread_mutex_lock(&pools_lock);
  p->id = weft__handle_add(&pools, p);
  pthread_mutex_unlock(&pools_lock);
  if (p->id == 0) {
    if (kind == POOL_PROCESSES) {
      p->ops->terminate(p);
      p->ops->join(p, WEFT__NEVER, WEFT_FOREVER);
    }
    p->refs = 1;
    weft__pool_put(p);
    weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
    return none;
  }
  return (weft_pool){p->id};
}

weft_pool weft_thread_pool_new_opts(const weft_pool_options *o) {
  return pool_new(o, POOL_THREADS, NULL, "weft_thread_pool_new");
}

weft_pool weft_process_pool_new_opts(const weft_pool_options *o) {
  return pool_new(o, POOL_PROCESSES, NULL, "weft_process_pool_new");
}

weft_pool weft__pool_new_on(const weft_pool_options *o, const struct weft__pool_ops *ops,
                            const char *fn) {
  return pool_new(o, POOL_PROCESSES, ops, fn);
}

/* Closes the queue and settles every task still in it as `to` (cancelled
 * or broken); workers that take the rest do the same. */
static void drain(struct pool *p, uint32_t to) {
  weft_queue_close(p->tasks);
  void *item;
  while (weft_queue_get(p->tasks, &item, 0) == 0) {
    struct future *f = item;
    weft__future_settle_pending(f, to);
    weft__future_put(f);
  }
}

static int start_worker_locked(struct pool *p);

static void *worker_main(void *arg) {
  struct pool *p = arg;
  tls_pool = p;
  bool replace = false;
  if (p->initializer != NULL && p->initializer(p->initarg) != 0) {
    __atomic_store_n(&p->broken, 1, __ATOMIC_SEQ_CST);
    drain(p, FS_BROKEN);
  } else {
    long ran = 0;
    void *item;
    while (weft_queue_get(p->tasks, &item, WEFT_FOREVER) == 0) {
      struct future *f = item;
      if (__atomic_load_n(&p->broken, __ATOMIC_ACQUIRE))
        weft__future_settle_pending(f, FS_BROKEN);
      else if (__atomic_load_n(&p->terminated, __ATOMIC_ACQUIRE))
        weft__future_settle_pending(f, FS_CANCELLED);
      else
        future_run(f, p->max_message);
      weft__future_put(f);
      __atomic_add_fetch(&p->idle, 1, __ATOMIC_RELEASE);
      if (p->maxtasks > 0 && ++ran >= p->maxtasks) {
        replace = true;
        break;
      }
    }
  }
  pthread_mutex_lock(&p->lock);
  bool broken = __atomic_load_n(&p->broken, __ATOMIC_ACQUIRE);
  /* The replacement is appended before this worker leaves, so a join that
   * waits for this worker also finds its replacement. */
  bool replaced = replace && !broken && start_worker_locked(p) == 0;
  p->live--;
  /* A replacement that could not start may leave queued tasks with nobody
   * to run them: the pool is broken rather than silently stuck. */
  bool stranded = replace && !replaced && !broken && p->live == 0;
  pthread_mutex_unlock(&p->lock);
  if (stranded) {
    __atomic_store_n(&p->broken, 1, __ATOMIC_SEQ_CST);
    drain(p, FS_BROKEN);
  }
  weft__thread_room_free();
  tls_pool = NULL;
  return NULL;
}

/* Forgets workers that have ended (replaced after maxtasksperchild), so a
 * long-lived pool keeps only the live ones. Not while a join walks the
 * list, which relies on the order. p->lock held. */
static void forget_ended_locked(struct pool *p) {
  if (p->joining != 0) return;
  size_t kept = 0;
  for (size_t i = 0; i < p->nthreads; i++) {
    weft_thread t = p->threads[i];
    if (!weft_thread_is_alive(t) && weft_thread_join(t, 0, NULL) == 0) weft_thread_close(t);
    else p->threads[kept++] = t;
  }
  p->nthreads = kept;
}

static int start_worker_locked(struct pool *p) {
  if (p->nthreads == p->cap) forget_ended_locked(p);
  if (p->nthreads == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 8;
    weft_thread *t = realloc(p->threads, cap * sizeof *t);
    if (t == NULL) return weft__error(WEFT_ENOMEM, "%s: out of memory", p->name);
    p->threads = t;
    p->cap = cap;
  }
  char name[WEFT_NAME_MAX + 16];
  snprintf(name, sizeof name, "%.*s_%u", WEFT_NAME_MAX - 11, p->name, p->started);
  weft_thread t = weft_thread_new(worker_main, .name = name, .arg = p);
  if (t.id == 0) return weft_last_error_code();
  int err = weft_thread_start(t);
  if (err != 0) {
    weft_thread_close(t);
    return weft__error(WEFT_EAGAIN, "%s: could not start a worker thread", p->name);
  }
  p->started++;
  p->live++;
  p->threads[p->nthreads++] = t;
  ensure_exit_hook();
  return 0;
}

/* Takes an idle worker if there is one, else starts one if the pool may
 * grow (as ThreadPoolExecutor._adjust_thread_count). */
static int ensure_worker(struct pool *p) {
  int idle = __atomic_load_n(&p->idle, __ATOMIC_RELAXED);
  while (idle > 0)
    if (__atomic_compare_exchange_n(&p->idle, &idle, idle - 1, true, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED))
      return 0;
  int err = 0;
  pthread_mutex_lock(&p->lock);
  if (p->closed)
    err = weft__error(WEFT_ECLOSED, "weft_pool_submit: %s is closed", p->name);
  else if (p->live < p->max_workers) {
    err = start_worker_locked(p);
    if (err != 0 && p->live > 0) err = 0; /* the others will get to it */
  }
  pthread_mutex_unlock(&p->lock);
  return err;
}

static int queue_call(struct pool *p, struct future *f, const char *what);

weft_future weft_pool_submit(weft_pool h, weft_task fn, void *arg) {
  weft_future none = {0};
  if (fn == NULL) {
    weft__error(WEFT_EINVAL, "weft_pool_submit: fn is NULL");
    return none;
  }
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return none;
  weft_future out = none;
  struct future *f;
  if (p->kind == POOL_PROCESSES) {
    weft__error(WEFT_EINVAL,
                "weft_pool_submit: %s is a process pool, which takes bytes: use "
                "weft_pool_apply_async",
                p->name);
  } else if ((f = weft__future_new(fn, arg)) == NULL) {
    weft__error(WEFT_ENOMEM, "weft_pool_submit: out of memory");
  } else if (queue_call(p, f, "weft_pool_submit") == 0) {
    out = (weft_future){f->id};
  }
  weft__pool_put(p);
  return out;
}

int weft_pool_close(weft_pool h) {
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return weft_last_error_code();
  /* The process pool refuses submits before a join can see it closed. */
  if (p->kind == POOL_PROCESSES) p->ops->close(p);
  pthread_mutex_lock(&p->lock);
  p->closed = true;
  pthread_mutex_unlock(&p->lock);
  if (p->kind == POOL_THREADS) weft_queue_close(p->tasks);
  weft__pool_put(p);
  return 0;
}

int weft_pool_terminate(weft_pool h) {
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return weft_last_error_code();
  int err = 0;
  if (__atomic_exchange_n(&p->terminated, 1, __ATOMIC_ACQ_REL)) {
    err = weft__error(WEFT_EALREADY, "weft_pool_terminate: %s was already terminated", p->name);
  } else {
    if (p->kind == POOL_PROCESSES) p->ops->terminate(p);
    pthread_mutex_lock(&p->lock);
    p->closed = true;
    pthread_mutex_unlock(&p->lock);
    if (p->kind == POOL_THREADS) drain(p, FS_CANCELLED);
  }
  weft__pool_put(p);
  return err;
}

int weft_pool_join(weft_pool h, double timeout) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return weft__error(err, "weft_pool_join: timeout is NaN");
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return weft_last_error_code();
  if (p->kind == POOL_PROCESSES) {
    pthread_mutex_lock(&p->lock);
    bool closed = p->closed;
    pthread_mutex_unlock(&p->lock);
    err = closed ? p->ops->join(p, deadline, timeout)
                 : weft__error(WEFT_ERUNNING,
                               "weft_pool_join: %s is still running; close it first", p->name);
    if (err == 0) {
      pthread_mutex_lock(&p->lock);
      p->joined = true;
      pthread_mutex_unlock(&p->lock);
    }
    weft__pool_put(p);
    return err;
  }
  pthread_mutex_lock(&p->lock);
  if (tls_pool == p)
    err = weft__error(WEFT_EDEADLK, "weft_pool_join: called from a worker of %s", p->name);
  else if (!p->closed)
    err = weft__error(WEFT_ERUNNING, "weft_pool_join: %s is still running; close it first",
                      p->name);
  /* Workers are only appended, and a replacement before its predecessor
   * leaves, so joining in order sees every one. */
  p->joining++;
  for (size_t i = 0; err == 0 && i < p->nthreads; i++) {
    weft_thread t = p->threads[i];
    pthread_mutex_unlock(&p->lock);
    int r = weft_thread_join(t, weft__timeout_left(deadline), NULL);
    if (r == WEFT_ETIMEDOUT)
      err = weft__error(WEFT_ETIMEDOUT, "weft_pool_join: %s still busy after %g s", p->name,
                        timeout);
    pthread_mutex_lock(&p->lock);
  }
  p->joining--;
  if (err == 0) p->joined = true;
  pthread_mutex_unlock(&p->lock);
  weft__pool_put(p);
  return err;
}

int weft_pool_free(weft_pool h) {
  pthread_mutex_lock(&pools_lock);
  struct pool *p = weft__handle_get(&pools, h.id);
  int err = 0;
  if (p == NULL) {
    err = weft__error(WEFT_ECLOSED, "weft_pool_free: the pool handle is closed or invalid");
  } else if (p->pid != weft__pid) {
    err = weft__error(WEFT_EPERM, "weft_pool_free: %s was made in process %d", p->name,
                      (int)p->pid);
    p = NULL;
  } else {
    pthread_mutex_lock(&p->lock);
    bool joined = p->joined;
    pthread_mutex_unlock(&p->lock);
    if (!joined)
      err = weft__error(WEFT_EBUSY, "weft_pool_free: %s has not been joined", p->name);
    else
      weft__handle_remove(&pools, h.id);
  }
  pthread_mutex_unlock(&pools_lock);
  if (err == 0) weft__pool_put(p);
  return err;
}

/* ---- bytes tasks: apply_async, map, imap ---- */

/* A future for a bytes task: its call header and argument in one block. */
static struct future *call_future(struct pool *p, weft_bytes_task fn, uint32_t kind,
                                  const void *in, size_t in_len, const char *what) {
  if (sizeof(weft__call) + in_len > p->max_message || in_len > p->max_message) {
    weft__error(WEFT_EMSGSIZE, "%s: the argument (%zu bytes) is larger than %s's max_message (%zu)",
                what, in_len, p->name, p->max_message - sizeof(weft__call));
    return NULL;
  }
  weft__call *c = malloc(sizeof *c + (in_len > 0 ? in_len : 1));
  if (c == NULL) {
    weft__error(WEFT_ENOMEM, "%s: out of memory", what);
    return NULL;
  }
  memset(c, 0, sizeof *c);
  c->fn = fn;
  c->kind = kind;
  c->in_len = in_len;
  if (in_len > 0 && in != NULL) memcpy(c + 1, in, in_len); /* NULL: the caller fills it */
  struct future *f = weft__future_new(NULL, NULL);
  if (f == NULL) {
    free(c);
    weft__error(WEFT_ENOMEM, "%s: out of memory", what);
    return NULL;
  }
  f->call = c;
  return f;
}

/* Hands a bytes-task future to its pool (the task's reference goes with
 * it); on failure the future is released and the error said. */
static int queue_call(struct pool *p, struct future *f, const char *what) {
  int err = 0;
  if (f->call != NULL && p->kind == POOL_THREADS)
    f->call->seq = __atomic_fetch_add(&p->next_seq, 1, __ATOMIC_RELAXED);
  if (__atomic_load_n(&p->broken, __ATOMIC_ACQUIRE)) {
    err = weft__error(WEFT_EBROKEN, "%s: %s is broken (an initializer failed)", what, p->name);
  } else if (p->kind == POOL_PROCESSES) {
    err = p->ops->submit(p, f, what);
  } else if ((err = ensure_worker(p)) == 0 && weft_queue_put(p->tasks, f, WEFT_FOREVER) != 0) {
    err = __atomic_load_n(&p->broken, __ATOMIC_ACQUIRE)
              ? weft__error(WEFT_EBROKEN, "%s: %s is broken", what, p->name)
              : weft__error(WEFT_ECLOSED, "%s: %s is closed", what, p->name);
  }
  if (err != 0) {
    weft__future_put(f); /* the task's reference */
    pthread_mutex_lock(&futures_lock);
    weft__handle_remove(&futures, f->id);
    pthread_mutex_unlock(&futures_lock);
    weft__future_put(f); /* the handle's */
  }
  return err;
}

struct future *weft__call_future(struct pool *p, weft_bytes_task fn, uint32_t kind,
                                 const void *in, size_t in_len, const char *what) {
  return call_future(p, fn, kind, in, in_len, what);
}

int weft__queue_call(struct pool *p, struct future *f, const char *what) {
  return queue_call(p, f, what);
}

static int add_callback(struct future *f, weft_future_callback cb, void *arg, int when) {
  struct weft__callback *c = malloc(sizeof *c);
  if (c == NULL) return WEFT_ENOMEM;
  c->fn = cb;
  c->arg = arg;
  c->when = when;
  c->next = f->cbs;
  f->cbs = c;
  return 0;
}

weft_future weft_pool_apply_async_opts(weft_pool h, weft_bytes_task fn, const void *arg,
                                       size_t len, const weft_apply_options *o) {
  weft_future none = {0};
  static const weft_apply_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  if (fn == NULL || (arg == NULL && len > 0) || (ssize_t)len < 0) {
    weft__error(WEFT_EINVAL, "weft_pool_apply_async: %s",
                fn == NULL ? "fn is NULL" : "arg is NULL or len is negative");
    return none;
  }
  if (!(o->timeout >= 0)) {
    weft__error(WEFT_EINVAL, "weft_pool_apply_async: timeout is negative or NaN");
    return none;
  }
  struct pool *p = pool_get(h, "weft_pool_apply_async");
  if (p == NULL) return none;
  weft_future out = none;
  if (o->timeout != 0 && p->kind == POOL_THREADS) {
    weft__error(WEFT_EINVAL,
                "weft_pool_apply_async: a time limit needs a process pool (threads cannot be "
                "killed)");
  } else {
    struct future *f = call_future(p, fn, WEFT__CALL_SINGLE, arg, len, "weft_pool_apply_async");
    if (f != NULL) {
      f->timeout = o->timeout;
      /* Added before the task is queued, so they cannot miss its end;
       * the one added last runs first, so the error callback goes first. */
      int err = 0;
      if (o->callback != NULL) err = add_callback(f, o->callback, o->callback_arg, CB_SUCCESS);
      if (err == 0 && o->error_callback != NULL)
        err = add_callback(f, o->error_callback, o->callback_arg, CB_FAILURE);
      if (err != 0) {
        weft__error(WEFT_ENOMEM, "weft_pool_apply_async: out of memory");
        weft__future_put(f);
        weft_future_close((weft_future){f->id});
      } else if (queue_call(p, f, "weft_pool_apply_async") == 0) {
        out = (weft_future){f->id};
      }
    }
  }
  weft__pool_put(p);
  return out;
}

/* The bytes one item of a chunk takes in a message: the larger of its
 * argument and its result with the result's code. */
static size_t chunk_bytes_per_item(size_t item_size, size_t result_size) {
  size_t out = sizeof(int32_t) + result_size;
  return item_size > out ? item_size : out;
}

/* Items per chunk: the caller's, or Python's default for map, and never
 * more than fit in a message either way. */
static size_t chunk_items(struct pool *p, long chunksize, size_t n, size_t item_size,
                          size_t result_size) {
  size_t c = (size_t)chunksize;
  if (chunksize == WEFT_DEFAULT) {
    size_t parts = (size_t)p->max_workers * 4;
    c = n / parts + (n % parts != 0);
    if (c == 0) c = 1;
  }
  size_t room = p->max_message - sizeof(weft__call);
  size_t per = chunk_bytes_per_item(item_size, result_size);
  /* A sixteenth of a message is left for the notes of failed items. */
  if (room >= p->max_message / 16 + per) room -= p->max_message / 16;
  size_t fit = room / per;
  if (fit == 0) fit = 1;
  return c < fit ? c : fit;
}

static int check_map(struct pool *p, weft_bytes_task fn, size_t item_size, size_t result_size,
                     const weft_map_options *o, const char *what) {
  if (fn == NULL) return weft__error(WEFT_EINVAL, "%s: fn is NULL", what);
  if (result_size == 0) return weft__error(WEFT_EINVAL, "%s: result_size is 0", what);
  if (o->chunksize < 1 && o->chunksize != WEFT_DEFAULT)
    return weft__error(WEFT_EINVAL, "%s: chunksize %ld is below 1", what, o->chunksize);
  if (o->window < 0) return weft__error(WEFT_EINVAL, "%s: window %ld is below 1", what, o->window);
  if (!(o->timeout >= 0))
    return weft__error(WEFT_EINVAL, "%s: timeout is negative or NaN", what);
  if (o->timeout != 0 && p->kind == POOL_THREADS)
    return weft__error(WEFT_EINVAL, "%s: a time limit needs a process pool", what);
  if (item_size > p->max_message || result_size > p->max_message)
    return weft__error(WEFT_EMSGSIZE, "%s: one item or result does not fit in max_message (%zu)",
                       what, p->max_message);
  size_t per = chunk_bytes_per_item(item_size, result_size);
  if (sizeof(weft__call) + per > p->max_message)
    return weft__error(WEFT_EMSGSIZE, "%s: one item or result does not fit in max_message (%zu)",
                       what, p->max_message);
  return 0;
}

/* Submits a chunk of n items starting at index base. */
static struct future *submit_chunk(struct pool *p, weft_bytes_task fn, const void *items,
                                   size_t item_size, size_t n, size_t base, size_t result_size,
                                   double timeout, const char *what) {
  struct future *f = call_future(p, fn, WEFT__CALL_CHUNK, items, n * item_size, what);
  if (f == NULL) return NULL;
  f->call->n = (uint32_t)n;
  f->call->base = base;
  f->call->item_size = item_size;
  f->call->result_size = result_size;
  f->timeout = timeout;
  if (queue_call(p, f, what) != 0) return NULL;
  return f;
}

static double since(int64_t t0) { return (double)(weft__os_now_ns() - t0) / 1e9; }

double weft__since(int64_t t0) { return since(t0); }

int weft__check_map(struct pool *p, weft_bytes_task fn, size_t item_size, size_t result_size,
                    const weft_map_options *o, const char *what) {
  return check_map(p, fn, item_size, result_size, o, what);
}

int weft_pool_map_opts(weft_pool h, weft_bytes_task fn, const void *items, size_t item_size,
                       size_t n, void *results, size_t result_size, const weft_map_options *o) {
  static const weft_map_options defaults = {.size_ = sizeof defaults, .chunksize = WEFT_DEFAULT};
  if (o == NULL) o = &defaults;
  if (n > 0 && (items == NULL || results == NULL))
    return weft__error(WEFT_EINVAL, "weft_pool_map: items or results is NULL");
  struct pool *p = pool_get(h, "weft_pool_map");
  if (p == NULL) return weft_last_error_code();
  int err = check_map(p, fn, item_size, result_size, o, "weft_pool_map");
  if (err == 0 && n == 0) {
    pthread_mutex_lock(&p->lock);
    if (p->closed) err = weft__error(WEFT_ECLOSED, "weft_pool_map: %s is closed", p->name);
    pthread_mutex_unlock(&p->lock);
  }
  if (err != 0 || n == 0) {
    weft__pool_put(p);
    return err;
  }
  int64_t t0 = weft__os_now_ns();
  size_t per = chunk_items(p, o->chunksize, n, item_size, result_size);
  size_t nchunks = n / per + (n % per != 0);
  struct future **fs = calloc(nchunks, sizeof *fs);
  if (fs == NULL) {
    weft__pool_put(p);
    return weft__error(WEFT_ENOMEM, "weft_pool_map: out of memory");
  }
  size_t submitted = 0;
  for (; submitted < nchunks; submitted++) {
    size_t base = submitted * per, k = n - base < per ? n - base : per;
    fs[submitted] = submit_chunk(p, fn, (const unsigned char *)items + base * item_size,
                                 item_size, k, base, result_size, o->timeout, "weft_pool_map");
    if (fs[submitted] == NULL) {
      err = weft_last_error_code();
      break;
    }
  }
  /* Every submitted chunk is waited for, even after a failure: the caller's
   * arrays must not be written once map has returned. */
  int first = 0;
  char first_msg[512];
  char message[1024];
  size_t done = 0, reported = 0;
  for (size_t c = 0; c < submitted; c++) {
    struct future *f = fs[c];
    weft__map_wait(fs, c, submitted, done, n, o, t0, &reported);
    size_t base = c * per, k = f->call->n;
    for (size_t i = 0; i < k; i++) {
      const void *data;
      size_t len;
      int task_code;
      int code = weft__chunk_item(f, i, "weft_pool_map", &data, &len, &task_code,
                                  o->item_failed != NULL ? message : NULL, sizeof message);
      if (o->errors != NULL) o->errors[base + i] = code;
      if (code == 0) {
        memcpy((unsigned char *)results + (base + i) * result_size, data, result_size);
        continue;
      }
      if (first == 0) {
        first = code;
        snprintf(first_msg, sizeof first_msg, "%s", weft_last_error());
      }
      if (o->item_failed != NULL) o->item_failed(base + i, code, task_code, message, o->item_failed_arg);
    }
    done += k;
    if (o->progress != NULL && done > reported) {
      reported = done;
      o->progress(done, n, since(t0), o->progress_arg);
    }
    weft__chunk_release(f);
    weft_future_close((weft_future){f->id}); /* the last reference: the pool dropped its own */
  }
  free(fs);
  weft__pool_put(p);
  if (err != 0) return err; /* a submit failed: its own message stands */
  if (first != 0) return weft__error(first, "%s", first_msg);
  return 0;
}

/* ---- imap ---- */

struct weft_imap;

struct ichunk {
  struct future *f;
  struct weft_imap *it;
  size_t base, n, pos; /* items base..base+n-1; pos: the next to give */
  struct ichunk *next;
};

struct weft_imap {
  pid_t pid; /* the process that made it: its futures and pool live there */
  struct pool *p;
  weft_bytes_task fn;
  weft_imap_source source;
  void *source_arg;
  size_t item_size, result_size, per, window;
  bool unordered, source_done;
  double timeout;
  weft_progress_fn progress;
  void *progress_arg;
  int64_t t0;
  size_t read, given;
  size_t held;                /* items in buf read from the source, not yet submitted */
  unsigned char *buf;         /* items of the chunk being read */
  struct ichunk *head, *tail; /* ordered: in submission order */
  size_t inflight;            /* chunks submitted and not yet fully given */
  size_t submitted;
  uint32_t fired;             /* futex: chunk watchers that ran (unordered) */
  weft_queue *done;           /* unordered: chunks as they finish */
  struct ichunk *cur;         /* unordered: the chunk being given */
  struct ichunk *last;        /* fully given: freed by the next call (its bytes were given) */
  int task_err;
  char message[1024];         /* of the item the last call failed with */
  /* Byte strings: items read and not yet submitted, their bytes in vdata
   * (data holds an offset until submitted); vitems[held] may be one read
   * that did not fit the chunk (carry). An input that cannot go on
   * (an item too large) stops it with `stuck`. */
  bool var, carry;
  weft_imap_bytes_source vsource;
  weft_bytes *vitems;
  unsigned char *vdata;
  size_t vdata_len, vdata_cap;
  int stuck;
  char stuck_msg[256];
};

/* Unordered: a finished chunk joins the queue of finished ones. It must
 * not touch the chunk after the put (the reader may free it at once). */
static void imap_chunk_done(struct future *f, void *arg) {
  (void)f;
  struct ichunk *c = arg;
  struct weft_imap *it = c->it;
  weft_queue_put(it->done, c, WEFT_FOREVER);
  __atomic_add_fetch(&it->fired, 1, __ATOMIC_SEQ_CST);
  weft__os_futex_wake(&it->fired, INT32_MAX);
}

/* Reads and submits chunks while the window has room. */
/* Reads byte strings into vitems while they fit one chunk; returns how
 * many the chunk has. */
static size_t imap_read_var(struct weft_imap *it) {
  size_t room = weft__vchunk_room(it->p);
  size_t k = it->held;
  size_t used = k * sizeof(uint64_t) + it->vdata_len;
  while (!it->carry && k < it->per && !it->source_done && it->stuck == 0) {
    weft_bytes b = {NULL, 0};
    if (!it->vsource(&b, it->source_arg)) {
      it->source_done = true;
      break;
    }
    size_t need = sizeof(uint64_t) + b.len;
    if ((b.data == NULL && b.len > 0) || b.len > room - sizeof(uint64_t)) {
      it->stuck = b.len > 0 && b.data == NULL ? WEFT_EINVAL : WEFT_EMSGSIZE;
      snprintf(it->stuck_msg, sizeof it->stuck_msg,
               b.data == NULL ? "weft_imap_next: item %zu has NULL data and %zu bytes"
                              : "weft_imap_next: item %zu (%zu bytes) is larger than the pool's "
                                "max_message less 64 bytes",
               it->read + k, b.len);
      break;
    }
    if (it->vdata_len + b.len > it->vdata_cap) {
      size_t cap = it->vdata_cap * 2 > it->vdata_len + b.len ? it->vdata_cap * 2
                                                             : it->vdata_len + b.len;
      unsigned char *d = realloc(it->vdata, cap);
      if (d == NULL) {
        it->stuck = WEFT_ENOMEM;
        snprintf(it->stuck_msg, sizeof it->stuck_msg, "weft_imap_next: out of memory");
        break;
      }
      it->vdata = d;
      it->vdata_cap = cap;
    }
    if (b.len > 0) memcpy(it->vdata + it->vdata_len, b.data, b.len);
    it->vitems[k] = (weft_bytes){(const void *)(uintptr_t)it->vdata_len, b.len};
    it->vdata_len += b.len;
    if (k > 0 && used + need > room) {
      it->carry = true; /* it goes first in the next chunk */
      break;
    }
    used += need;
    k++;
  }
  return k;
}

/* Submits the first k byte strings read; the carried one moves to the
 * front. */
static struct future *imap_submit_var(struct weft_imap *it, size_t k) {
  weft_bytes *items = malloc(k * sizeof *items);
  if (items == NULL) {
    weft__error(WEFT_ENOMEM, "weft_imap_next: out of memory");
    return NULL;
  }
  for (size_t i = 0; i < k; i++)
    items[i] = (weft_bytes){it->vdata + (uintptr_t)it->vitems[i].data, it->vitems[i].len};
  struct future *f = weft__submit_vchunk(it->p, it->fn, items, k, it->read, it->timeout,
                                         "weft_imap_next");
  free(items);
  if (f == NULL) return NULL;
  it->held = 0;
  it->vdata_len = 0;
  if (it->carry) {
    weft_bytes c = it->vitems[k];
    memmove(it->vdata, it->vdata + (uintptr_t)c.data, c.len);
    it->vitems[0] = (weft_bytes){(const void *)0, c.len};
    it->vdata_len = c.len;
    it->held = 1;
    it->carry = false;
  }
  return f;
}

static int imap_fill(struct weft_imap *it) {
  /* Items read before an input that stopped it still go. */
  while ((it->held > 0 || it->carry || (!it->source_done && it->stuck == 0)) &&
         it->inflight < it->window) {
    /* Items read but not yet submitted (a submit failed) go first. */
    size_t k = it->held;
    if (it->var) {
      k = imap_read_var(it);
      if (k == 0) break;
    } else if (k == 0) {
      while (k < it->per && it->source(it->buf + k * it->item_size, it->source_arg)) k++;
      if (k < it->per) it->source_done = true;
      if (k == 0) break;
    }
    it->held = k;
    struct ichunk *c = calloc(1, sizeof *c);
    if (c == NULL) return weft__error(WEFT_ENOMEM, "weft_imap_next: out of memory");
    c->it = it;
    c->base = it->read;
    c->n = k;
    c->f = it->var ? imap_submit_var(it, k)
                   : submit_chunk(it->p, it->fn, it->buf, it->item_size, k, it->read,
                                  it->result_size, it->timeout, "weft_imap_next");
    if (c->f == NULL) {
      free(c);
      return weft_last_error_code();
    }
    if (!it->var) it->held = 0; /* imap_submit_var set it */
    it->read += k;
    it->inflight++;
    it->submitted++;
    if (it->tail != NULL)
      it->tail->next = c;
    else
      it->head = c;
    it->tail = c;
    if (it->unordered && future_watch(c->f, imap_chunk_done, c) != 0) {
      /* Without its watcher the chunk would never be given: wait here. */
      future_wait(c->f, WEFT__NEVER);
      imap_chunk_done(c->f, c);
    }
  }
  if (it->stuck != 0 && it->held == 0 && !it->carry)
    return weft__error(it->stuck, "%s", it->stuck_msg);
  return 0;
}

static void ichunk_free(struct ichunk *c) {
  weft__chunk_release(c->f);
  weft_future_close((weft_future){c->f->id});
  free(c);
}

static weft_imap *imap_new(weft_pool h, weft_bytes_task fn, weft_imap_source source,
                           weft_imap_bytes_source vsource, void *source_arg, size_t item_size,
                           size_t result_size, const weft_map_options *o, const char *what) {
  static const weft_map_options defaults = {.size_ = sizeof defaults, .chunksize = WEFT_DEFAULT};
  if (o == NULL) o = &defaults;
  bool var = vsource != NULL;
  if (source == NULL && vsource == NULL) {
    weft__error(WEFT_EINVAL, "%s: source is NULL", what);
    return NULL;
  }
  struct pool *p = pool_get(h, what);
  if (p == NULL) return NULL;
  if (check_map(p, fn, item_size, result_size, o, what) != 0) {
    weft__pool_put(p);
    return NULL;
  }
  struct weft_imap *it = calloc(1, sizeof *it);
  long chunksize = o->chunksize == WEFT_DEFAULT ? 1 : o->chunksize;
  size_t per;
  if (var) {
    /* At most as many lengths as fit in a message. */
    size_t fit = (p->max_message - sizeof(weft__call)) / sizeof(uint64_t);
    per = (size_t)chunksize < fit ? (size_t)chunksize : fit;
    if (per > UINT32_MAX) per = UINT32_MAX;
  } else {
    per = chunk_items(p, chunksize, 1, item_size, result_size);
  }
  unsigned char *buf = var ? NULL : malloc(per * item_size > 0 ? per * item_size : 1);
  weft_bytes *vitems = var ? malloc((per + 1) * sizeof *vitems) : NULL;
  weft_queue *done = o->unordered ? weft_queue_new(.name = "imap results") : NULL;
  if (it == NULL || (!var && buf == NULL) || (var && vitems == NULL) ||
      (o->unordered && done == NULL)) {
    free(it);
    free(buf);
    free(vitems);
    if (done != NULL) weft_queue_free(done);
    weft__pool_put(p);
    weft__error(WEFT_ENOMEM, "%s: out of memory", what);
    return NULL;
  }
  it->pid = weft__pid;
  it->p = p; /* keeps the call's reference until weft_imap_free */
  it->fn = fn;
  it->source = source;
  it->vsource = vsource;
  it->var = var;
  it->vitems = vitems;
  it->source_arg = source_arg;
  it->item_size = item_size;
  it->result_size = result_size;
  it->per = per;
  it->window = o->window > 0 ? (size_t)o->window : (size_t)p->max_workers * 4;
  it->unordered = o->unordered;
  it->timeout = o->timeout;
  it->progress = o->progress;
  it->progress_arg = o->progress_arg;
  it->t0 = weft__os_now_ns();
  it->buf = buf;
  it->done = done;
  /* The caller holds a handle (handle.h), not it. */
  weft_imap *handle = weft__ref_add(it, WEFT__REF_IMAP, what);
  if (handle == NULL) {
    weft__pool_put(p);
    if (done != NULL) weft_queue_free(done);
    free(buf);
    free(vitems);
    free(it);
  }
  return handle;
}

weft_imap *weft_pool_imap_opts(weft_pool h, weft_bytes_task fn, weft_imap_source source,
                               void *source_arg, size_t item_size, size_t result_size,
                               const weft_map_options *o) {
  return imap_new(h, fn, source, NULL, source_arg, item_size, result_size, o, "weft_pool_imap");
}

weft_imap *weft_pool_imap_bytes_opts(weft_pool h, weft_bytes_task fn,
                                     weft_imap_bytes_source source, void *source_arg,
                                     const weft_map_options *o) {
  if (source == NULL) {
    weft__error(WEFT_EINVAL, "weft_pool_imap_bytes: source is NULL");
    return NULL;
  }
  return imap_new(h, fn, NULL, source, source_arg, 0, 1, o, "weft_pool_imap_bytes");
}

static int imap_next(struct weft_imap *it, double timeout, size_t *index, void *result,
                     weft_bytes *bytes, const char *what) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return weft__error(err, "%s: timeout is NaN", what);
  it->task_err = 0;
  it->message[0] = '\0';
  if (it->last != NULL) {
    ichunk_free(it->last);
    it->last = NULL;
  }
  /* A fill that fails (the pool was closed or broke before the input
   * ended) is said once the results already in flight have been given. */
  int fill_err = imap_fill(it);
  if (fill_err != 0 && it->inflight == 0) return fill_err;
  struct ichunk *c;
  if (!it->unordered) {
    c = it->head;
    if (c == NULL) return weft__error(WEFT_EEOF, "%s: no more results", what);
    if (!future_wait(c->f, deadline))
      return weft__error(WEFT_ETIMEDOUT, "%s: no result after %g s", what, timeout);
  } else {
    c = it->cur;
    if (c == NULL) {
      if (it->inflight == 0) return weft__error(WEFT_EEOF, "%s: no more results", what);
      void *item;
      if (weft_queue_get(it->done, &item, weft__timeout_left(deadline)) != 0)
        return weft__error(WEFT_ETIMEDOUT, "%s: no result after %g s", what, timeout);
      c = it->cur = item;
    }
  }
  size_t i = c->pos++;
  if (index != NULL) *index = c->base + i;
  const void *data = NULL;
  size_t len = 0;
  int task_code = 0;
  err = weft__chunk_item(c->f, i, what, &data, &len, &task_code, it->message,
                         sizeof it->message);
  if (err == 0 && result != NULL) memcpy(result, data, it->result_size);
  if (bytes != NULL) *bytes = err == 0 ? (weft_bytes){data, len} : (weft_bytes){NULL, 0};
  it->task_err = task_code;
  it->given++;
  if (c->pos == c->n) {
    struct ichunk **pp = &it->head, *prev = NULL;
    while (*pp != c) {
      prev = *pp;
      pp = &(*pp)->next;
    }
    *pp = c->next;
    if (it->tail == c) it->tail = prev;
    if (it->unordered) it->cur = NULL;
    it->inflight--;
    it->last = c; /* its bytes were just given: freed by the next call */
  }
  if (it->progress != NULL)
    it->progress(it->given, it->source_done ? it->read : 0, since(it->t0), it->progress_arg);
  if (err != 0) return err;
  /* Keep the workers busy while the caller works on this result. */
  int ferr = imap_fill(it);
  (void)ferr; /* said again by the next call */
  return 0;
}

/* An object of one process used in another (a forked child's copy): its
 * futures' results go to the process that made it. */
static int other_process(pid_t made_in, const char *what, const char *fn) {
  return weft__error(WEFT_EPERM,
                     "%s: the %s was made in process %d, where its results arrive; this process "
                     "(%d) has only a copy", fn, what, (int)made_in, (int)weft__pid);
}

int weft_imap_next(weft_imap *h, double timeout, size_t *index, void *result) {
  int herr = 0;
  struct weft_imap *it = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_next", &herr);
  if (it == NULL) return herr;
  if (it->pid != weft__pid) return other_process(it->pid, "imap", "weft_imap_next");
  if (it->var)
    return weft__error(WEFT_EINVAL,
                       "weft_imap_next: the imap is over byte strings: use weft_imap_next_bytes");
  return imap_next(it, timeout, index, result, NULL, "weft_imap_next");
}

int weft_imap_next_bytes(weft_imap *h, double timeout, size_t *index, weft_bytes *result) {
  int herr = 0;
  struct weft_imap *it = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_next_bytes", &herr);
  if (it == NULL) return herr;
  if (it->pid != weft__pid) return other_process(it->pid, "imap", "weft_imap_next_bytes");
  if (!it->var)
    return weft__error(WEFT_EINVAL,
                       "weft_imap_next_bytes: the imap is over fixed-size items: use "
                       "weft_imap_next");
  return imap_next(it, timeout, index, NULL, result, "weft_imap_next_bytes");
}

int weft_imap_task_error(const weft_imap *h) {
  int herr;
  const struct weft_imap *it = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_task_error", &herr);
  return it == NULL ? 0 : it->task_err;
}

const char *weft_imap_task_message(const weft_imap *h) {
  int herr;
  const struct weft_imap *it = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_task_message", &herr);
  return it == NULL ? "" : it->message;
}

int weft_imap_free(weft_imap *h) {
  if (h == NULL) return 0;
  int herr = 0;
  struct weft_imap *in = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_free", &herr);
  if (in == NULL) return herr;
  /* Freeing waits for its tasks, which finish in the process that made it. */
  if (in->pid != weft__pid) return other_process(in->pid, "imap", "weft_imap_free");
  struct weft_imap *it = weft__ref_remove(h, WEFT__REF_IMAP, "weft_imap_free");
  if (it == NULL) return weft_last_error_code();
  if (it->last != NULL) ichunk_free(it->last);
  /* Cancel what has not started, wait for the rest. */
  for (struct ichunk *c = it->head; c != NULL; c = c->next) future_cancel(c->f);
  if (it->unordered) {
    /* Watchers still to run touch it: wait until all have. */
    uint32_t fired;
    while ((fired = __atomic_load_n(&it->fired, __ATOMIC_SEQ_CST)) != (uint32_t)it->submitted)
      weft__os_futex_wait(&it->fired, fired, WEFT__NEVER);
  }
  while (it->head != NULL) {
    struct ichunk *c = it->head;
    it->head = c->next;
    future_wait(c->f, WEFT__NEVER);
    ichunk_free(c);
  }
  weft__pool_put(it->p);
  if (it->done != NULL) weft_queue_free(it->done);
  free(it->buf);
  free(it->vitems);
  free(it->vdata);
  free(it);
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
    if (w == NULL || future_watch(fs[i], ac_done, w) != 0) {
      /* No watcher: wait for this one now rather than lose it. */
      free(w);
      ws[i] = NULL;
      future_wait(fs[i], WEFT__NEVER);
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
    return other_process(ac->pid, "as_completed iterator", "weft_as_completed_next");
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
    return other_process(in->pid, "as_completed iterator", "weft_as_completed_free");
  struct weft_as_completed *ac =
      weft__ref_remove(h, WEFT__REF_AS_COMPLETED, "weft_as_completed_free");
  if (ac == NULL) return weft_last_error_code();
  as_completed_free(ac);
  return 0;
}

/* ---- progress, scope ---- */

void weft_progress_bar(size_t done, size_t total, double elapsed, void *arg) {
  static _Thread_local double last = -1;
  if (!isatty(STDERR_FILENO)) return;
  bool end = total != 0 && done >= total;
  if (!end && last >= 0 && elapsed - last < PROGRESS_REDRAW_S && elapsed >= last) return;
  last = end ? -1 : elapsed;
  const char *label = arg != NULL ? arg : "";
  char bar[31];
  if (total != 0) {
    size_t fill = done * 30 / total;
    for (size_t i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r%s%s[%s] %zu/%zu %5.1f%% %.1fs", label, *label ? " " : "", bar, done,
            total, 100.0 * (double)done / (double)total, elapsed);
  } else {
    fprintf(stderr, "\r%s%s%zu done %.1fs", label, *label ? " " : "", done, elapsed);
  }
  if (end) fputc('\n', stderr);
  fflush(stderr);
}

void weft_pool_scope_end(weft_pool *pool) {
  if (pool == NULL || pool->id == 0) return;
  weft_pool_close(*pool);
  if (weft_pool_join(*pool, WEFT_FOREVER) == 0) weft_pool_free(*pool);
  pool->id = 0;
}

/* ---- exit ---- */

static void stop_at_exit(void *obj, void *unused) {
  (void)unused;
  struct pool *p = obj;
  if (p->pid == weft__pid && p->kind == POOL_PROCESSES) p->ops->at_exit(p);
}

/* Run by the exit rules once the non-daemon threads have been joined (they
 * may still use a pool, as in Python, whose pools end after them) and
 * before the daemon children, the workers among them, are terminated: from
 * here on a worker that ends is not replaced. */
void weft__pool_exit_rules(void) {
  pthread_mutex_lock(&pools_lock);
  weft__handle_each(&pools, stop_at_exit, NULL);
  pthread_mutex_unlock(&pools_lock);
  const struct weft__pool_ops *remote = __atomic_load_n(&remote_ops, __ATOMIC_ACQUIRE);
  if (remote != NULL && remote->shutdown != NULL) remote->shutdown();
}

/* ---- fork ---- */

/* The registries' locks are held across fork, so a child never inherits
 * one held by a thread it does not have; both sides then release them. Its
 * copies of pools and futures refuse every call (they carry the parent's
 * pid): their workers stayed in the parent. */
void weft__pool_before_fork(void) {
  pthread_mutex_lock(&pools_lock);
  pthread_mutex_lock(&futures_lock);
}

void weft__pool_after_fork_parent(void) {
  pthread_mutex_unlock(&futures_lock);
  pthread_mutex_unlock(&pools_lock);
}

static void pool_fork_child(void *obj, void *unused) {
  (void)unused;
  struct pool *p = obj;
  if (p->kind == POOL_PROCESSES && p->proc != NULL) p->ops->after_fork_child(p);
}

void weft__pool_after_fork_child(void) {
  weft__handle_each(&pools, pool_fork_child, NULL);
  pthread_mutex_unlock(&futures_lock); /* the forking thread took them: it is the child's */
  pthread_mutex_unlock(&pools_lock);
}
