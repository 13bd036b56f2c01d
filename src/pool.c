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

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handle.h"
#include "internal.h"
#include "runtime.h"
#include "os/os.h"
#include "weft/process.h"
#include "weft/queue.h"
#include "weft/thread.h"

/* ---- futures ---- */

enum {
  FS_PENDING,
  FS_RUNNING,
  FS_OK,        /* finished with a result */
  FS_FAILED,    /* the task returned its own code */
  FS_CANCELLED,
  FS_BROKEN,    /* its pool broke before it ran */
};

struct callback {
  weft_future_callback fn;
  void *arg;
  struct callback *next;
};

struct future {
  uint64_t id;
  int refs;
  uint32_t state;    /* futex */
  uint32_t waiters;  /* threads in result() */
  weft_task fn;
  void *arg;
  void *result;
  int task_err;
  pid_t pid;         /* the process that made it: a forked child cannot use it */
  pthread_mutex_t cb_lock;
  bool cb_fired;     /* under cb_lock: callbacks added now run at once */
  struct callback *cbs;
};

static pthread_mutex_t futures_lock = PTHREAD_MUTEX_INITIALIZER;
static weft__handle_table futures;

/* weft_futures_wait: every completion bumps `gen` while `gen_waiters` > 0. */
static uint32_t gen;
static uint32_t gen_waiters;

static bool final_state(uint32_t s) { return s >= FS_OK; }

static uint32_t state_of(struct future *f) { return __atomic_load_n(&f->state, __ATOMIC_ACQUIRE); }

static void future_put(struct future *f) {
  if (__atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  struct callback *c = f->cbs;
  while (c != NULL) {
    struct callback *next = c->next;
    free(c);
    c = next;
  }
  pthread_mutex_destroy(&f->cb_lock);
  free(f);
}

static struct future *future_get(weft_future h, const char *fn) {
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

/* A new pending future with two references: the handle's and the task's. */
static struct future *future_new(weft_task fn, void *arg) {
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

/* Wakes whoever waits for f (now in a final state), then runs its
 * callbacks in the calling thread, outside every lock. */
static void future_finished(struct future *f) {
  if (__atomic_load_n(&f->waiters, __ATOMIC_SEQ_CST) != 0)
    weft__os_futex_wake(&f->state, INT32_MAX);
  if (__atomic_load_n(&gen_waiters, __ATOMIC_SEQ_CST) != 0) {
    __atomic_add_fetch(&gen, 1, __ATOMIC_SEQ_CST);
    weft__os_futex_wake(&gen, INT32_MAX);
  }
  pthread_mutex_lock(&f->cb_lock);
  f->cb_fired = true;
  struct callback *c = f->cbs;
  f->cbs = NULL;
  pthread_mutex_unlock(&f->cb_lock);
  weft_future self = {f->id};
  while (c != NULL) {
    struct callback *next = c->next;
    c->fn(self, c->arg);
    free(c);
    c = next;
  }
}

/* Moves a pending future to a final state; false if it had left PENDING. */
static bool future_settle_pending(struct future *f, uint32_t to) {
  uint32_t expect = FS_PENDING;
  if (!__atomic_compare_exchange_n(&f->state, &expect, to, false, __ATOMIC_SEQ_CST,
                                   __ATOMIC_ACQUIRE))
    return false;
  future_finished(f);
  return true;
}

/* Runs a pending future's task in the calling thread, unless it was
 * cancelled first. */
static void future_run(struct future *f) {
  uint32_t expect = FS_PENDING;
  if (!__atomic_compare_exchange_n(&f->state, &expect, FS_RUNNING, false, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE))
    return;
  void *result = NULL;
  int code = f->fn(f->arg, &result);
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

int weft_future_result(weft_future h, double timeout, void **result) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return weft__error(err, "weft_future_result: timeout is NaN");
  struct future *f = future_get(h, __func__);
  if (f == NULL) return weft_last_error_code();
  if (!future_wait(f, deadline)) {
    err = weft__error(WEFT_ETIMEDOUT, "weft_future_result: the task is not done after %g s",
                      timeout);
  } else {
    switch (state_of(f)) {
    case FS_OK:
      if (result != NULL) *result = f->result;
      break;
    case FS_FAILED:
      err = weft__error(WEFT_ETASKFAILED, "weft_future_result: the task failed with code %d",
                        f->task_err);
      break;
    case FS_CANCELLED:
      err = weft__error(WEFT_ECANCELED, "weft_future_result: the task was cancelled");
      break;
    default:
      err = weft__error(WEFT_EBROKEN, "weft_future_result: the pool broke before the task ran");
      break;
    }
  }
  future_put(f);
  return err;
}

int weft_future_task_error(weft_future h) {
  struct future *f = future_get(h, __func__);
  if (f == NULL) return weft_last_error_code();
  int code = state_of(f) == FS_FAILED ? f->task_err : 0;
  future_put(f);
  return code;
}

static bool future_test(weft_future h, const char *fn, bool (*pred)(uint32_t)) {
  struct future *f = future_get(h, fn);
  if (f == NULL) return false;
  bool r = pred(state_of(f));
  future_put(f);
  return r;
}

static bool is_running(uint32_t s) { return s == FS_RUNNING; }
static bool is_cancelled(uint32_t s) { return s == FS_CANCELLED; }

bool weft_future_done(weft_future h) { return future_test(h, __func__, final_state); }
bool weft_future_running(weft_future h) { return future_test(h, __func__, is_running); }
bool weft_future_cancelled(weft_future h) { return future_test(h, __func__, is_cancelled); }

int weft_future_cancel(weft_future h) {
  struct future *f = future_get(h, __func__);
  if (f == NULL) return weft_last_error_code();
  int err = 0;
  if (!future_settle_pending(f, FS_CANCELLED) && state_of(f) != FS_CANCELLED)
    err = weft__error(WEFT_EBUSY, "weft_future_cancel: the task is %s",
                      state_of(f) == FS_RUNNING ? "running" : "done");
  future_put(f);
  return err;
}

int weft_future_add_done_callback(weft_future h, weft_future_callback cb, void *arg) {
  if (cb == NULL) return weft__error(WEFT_EINVAL, "weft_future_add_done_callback: cb is NULL");
  struct future *f = future_get(h, __func__);
  if (f == NULL) return weft_last_error_code();
  struct callback *c = malloc(sizeof *c);
  if (c == NULL) {
    future_put(f);
    return weft__error(WEFT_ENOMEM, "weft_future_add_done_callback: out of memory");
  }
  c->fn = cb;
  c->arg = arg;
  pthread_mutex_lock(&f->cb_lock);
  bool now = f->cb_fired;
  if (!now) {
    /* Appended, so callbacks run in the order they were added. */
    struct callback **p = &f->cbs;
    while (*p != NULL) p = &(*p)->next;
    c->next = NULL;
    *p = c;
  }
  pthread_mutex_unlock(&f->cb_lock);
  if (now) {
    cb(h, arg);
    free(c);
  }
  future_put(f);
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
    fs[got] = future_get(hs[got], __func__);
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
  for (size_t i = 0; i < got; i++) future_put(fs[i]);
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
  future_put(f);
  return 0;
}

/* ---- pools ---- */

struct pool {
  uint64_t id;
  int refs; /* the handle, calls in flight */
  pid_t pid; /* the process that made it: a forked child has none of its workers */
  char name[WEFT_NAME_MAX + 1];
  int max_workers;
  long maxtasks;
  int (*initializer)(void *);
  void *initarg;
  weft_queue *tasks; /* of struct future * */
  int idle;          /* as Python's _idle_semaphore: workers that finished a task */
  int broken;        /* atomic */
  int terminated;    /* atomic: queued tasks are cancelled, not run */
  pthread_mutex_t lock;
  /* under lock */
  bool closed;
  bool joined;
  int live;      /* workers started and not yet leaving */
  unsigned started; /* numbers the workers' names (wraps) */
  int joining;       /* joins in progress: no compaction meanwhile */
  weft_thread *threads;
  size_t nthreads, cap;
};

static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static weft__handle_table pools;
static unsigned pool_counter;
static int exit_hook_set;
static _Thread_local struct pool *tls_pool;

static void pool_put(struct pool *p) {
  if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  for (size_t i = 0; i < p->nthreads; i++) weft_thread_close(p->threads[i]);
  free(p->threads);
  weft_queue_free(p->tasks);
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

static void close_at_exit(void *obj, void *unused) {
  (void)unused;
  struct pool *p = obj;
  if (p->pid != weft__pid) return; /* a forked child's copy: its lock may be held */
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

weft_pool weft_thread_pool_new_opts(const weft_pool_options *o) {
  weft_pool none = {0};
  if (o == NULL || o->workers < 0 || o->maxtasksperchild < 0) {
    weft__error(WEFT_EINVAL, "weft_thread_pool_new: negative workers or maxtasksperchild");
    return none;
  }
  /* Room for "_N" with N up to 10 digits in the thread names. */
  if (o->name != NULL && strlen(o->name) > WEFT_NAME_MAX - 11) {
    weft__error(WEFT_EINVAL, "weft_thread_pool_new: name is longer than %d bytes",
                WEFT_NAME_MAX - 11);
    return none;
  }
  struct pool *p = calloc(1, sizeof *p);
  if (p == NULL) {
    weft__error(WEFT_ENOMEM, "weft_thread_pool_new: out of memory");
    return none;
  }
  p->refs = 1;
  p->pid = weft__pid;
  p->max_workers = o->workers > 0 ? o->workers : weft_cpu_count();
  p->maxtasks = o->maxtasksperchild;
  p->initializer = o->initializer;
  p->initarg = o->initarg;
  pthread_mutex_init(&p->lock, NULL);
  p->tasks = weft_queue_new(.name = "pool tasks");
  if (p->tasks == NULL) {
    pthread_mutex_destroy(&p->lock);
    free(p);
    weft__error(WEFT_ENOMEM, "weft_thread_pool_new: out of memory");
    return none;
  }
  pthread_mutex_lock(&pools_lock);
  if (o->name != NULL)
    snprintf(p->name, sizeof p->name, "%s", o->name);
  else
    snprintf(p->name, sizeof p->name, "ThreadPool-%u", pool_counter++);
  p->id = weft__handle_add(&pools, p);
  pthread_mutex_unlock(&pools_lock);
  if (p->id == 0) {
    p->refs = 1;
    pool_put(p);
    weft__error(WEFT_ENOMEM, "weft_thread_pool_new: out of memory");
    return none;
  }
  return (weft_pool){p->id};
}

/* Closes the queue and settles every task still in it as `to` (cancelled
 * or broken); workers that take the rest do the same. */
static void drain(struct pool *p, uint32_t to) {
  weft_queue_close(p->tasks);
  void *item;
  while (weft_queue_get(p->tasks, &item, 0) == 0) {
    struct future *f = item;
    future_settle_pending(f, to);
    future_put(f);
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
        future_settle_pending(f, FS_BROKEN);
      else if (__atomic_load_n(&p->terminated, __ATOMIC_ACQUIRE))
        future_settle_pending(f, FS_CANCELLED);
      else
        future_run(f);
      future_put(f);
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
  if (!__atomic_exchange_n(&exit_hook_set, 1, __ATOMIC_ACQ_REL)) atexit(pools_at_exit);
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

weft_future weft_pool_submit(weft_pool h, weft_task fn, void *arg) {
  weft_future none = {0};
  if (fn == NULL) {
    weft__error(WEFT_EINVAL, "weft_pool_submit: fn is NULL");
    return none;
  }
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return none;
  int err = 0;
  struct future *f = NULL;
  if (__atomic_load_n(&p->broken, __ATOMIC_ACQUIRE)) {
    err = weft__error(WEFT_EBROKEN, "weft_pool_submit: %s is broken (an initializer failed)",
                      p->name);
  } else if ((err = ensure_worker(p)) == 0) {
    f = future_new(fn, arg);
    if (f == NULL) {
      err = weft__error(WEFT_ENOMEM, "weft_pool_submit: out of memory");
    } else if (weft_queue_put(p->tasks, f, WEFT_FOREVER) != 0) {
      err = __atomic_load_n(&p->broken, __ATOMIC_ACQUIRE)
                ? weft__error(WEFT_EBROKEN, "weft_pool_submit: %s is broken", p->name)
                : weft__error(WEFT_ECLOSED, "weft_pool_submit: %s is closed", p->name);
      future_put(f); /* the task's reference */
      weft_future_close((weft_future){f->id});
      f = NULL;
    }
  }
  pool_put(p);
  return f != NULL ? (weft_future){f->id} : none;
}

int weft_pool_close(weft_pool h) {
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return weft_last_error_code();
  pthread_mutex_lock(&p->lock);
  p->closed = true;
  pthread_mutex_unlock(&p->lock);
  weft_queue_close(p->tasks);
  pool_put(p);
  return 0;
}

int weft_pool_terminate(weft_pool h) {
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return weft_last_error_code();
  int err = 0;
  if (__atomic_exchange_n(&p->terminated, 1, __ATOMIC_ACQ_REL)) {
    err = weft__error(WEFT_EALREADY, "weft_pool_terminate: %s was already terminated", p->name);
  } else {
    pthread_mutex_lock(&p->lock);
    p->closed = true;
    pthread_mutex_unlock(&p->lock);
    drain(p, FS_CANCELLED);
  }
  pool_put(p);
  return err;
}

int weft_pool_join(weft_pool h, double timeout) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return weft__error(err, "weft_pool_join: timeout is NaN");
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return weft_last_error_code();
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
    double left = -1;
    if (deadline != WEFT__NEVER) {
      left = (double)(deadline - weft__os_now_ns()) / 1e9;
      if (left < 0) left = 0;
    }
    int r = weft_thread_join(t, left, NULL);
    if (r == WEFT_ETIMEDOUT)
      err = weft__error(WEFT_ETIMEDOUT, "weft_pool_join: %s still busy after %g s", p->name,
                        timeout);
    pthread_mutex_lock(&p->lock);
  }
  p->joining--;
  if (err == 0) p->joined = true;
  pthread_mutex_unlock(&p->lock);
  pool_put(p);
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
  if (err == 0) pool_put(p);
  return err;
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

void weft__pool_after_fork_child(void) {
  pthread_mutex_unlock(&futures_lock); /* the forking thread took them: it is the child's */
  pthread_mutex_unlock(&pools_lock);
}
