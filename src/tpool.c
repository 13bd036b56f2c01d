/* SPDX-License-Identifier: MIT */
/* The thread backend of pools: Python's ThreadPoolExecutor. Workers are
 * non-daemon weft threads started lazily as tasks arrive, taking futures
 * from one thread queue. Python joins ThreadPoolExecutor workers at exit:
 * an atexit handler (pool.c), registered after the first worker starts
 * and so run before weft's exit rules join the threads, closes every
 * thread pool, so queued work still runs and the workers then leave. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include "pool_internal.h"
#include "weft/queue.h"
#include "weft/thread.h"

/* The pool whose worker the calling thread is, or NULL. */
static _Thread_local struct pool *tls_pool;

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
        weft__future_run(f, p->max_message);
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
  weft__pool_exit_hook();
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


/* ---- the backend's operations ---- */

static int tpool_start(struct pool *p, const weft_pool_options *o) {
  (void)o;
  p->tasks = weft_queue_new(.name = "pool tasks");
  if (p->tasks == NULL) return weft__error(WEFT_ENOMEM, "weft_thread_pool_new: out of memory");
  return 0;
}

static int tpool_submit(struct pool *p, struct future *f, const char *what) {
  if (f->call != NULL) f->call->seq = __atomic_fetch_add(&p->next_seq, 1, __ATOMIC_RELAXED);
  int err = ensure_worker(p);
  if (err == 0 && weft_queue_put(p->tasks, f, WEFT_FOREVER) != 0)
    err = __atomic_load_n(&p->broken, __ATOMIC_ACQUIRE)
              ? weft__error(WEFT_EBROKEN, "%s: %s is broken", what, p->name)
              : weft__error(WEFT_ECLOSED, "%s: %s is closed", what, p->name);
  return err;
}

static int tpool_close(struct pool *p) {
  weft_queue_close(p->tasks);
  return 0;
}

/* A thread pool's futures have no owner: the generic code cancels them
 * itself while they are pending, and a running one cannot be stopped. */
static int tpool_cancel(struct future *f) {
  (void)f;
  return WEFT_EBUSY;
}

static bool tpool_running(struct future *f) {
  return __atomic_load_n(&f->state, __ATOMIC_ACQUIRE) == FS_RUNNING;
}

static size_t tpool_progress(struct future *f) {
  uint64_t at = __atomic_load_n(&f->item_now, __ATOMIC_RELAXED);
  return at > f->call->base ? (size_t)(at - f->call->base) : 0;
}

static int tpool_terminate(struct pool *p) {
  drain(p, FS_CANCELLED);
  return 0;
}

static bool tpool_serves_caller(struct pool *p) { return tls_pool == p; }

static int tpool_join(struct pool *p, weft__deadline deadline, double timeout) {
  int err = 0;
  pthread_mutex_lock(&p->lock);
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
  pthread_mutex_unlock(&p->lock);
  return err;
}

static void tpool_free(struct pool *p) {
  for (size_t i = 0; i < p->nthreads; i++) weft_thread_close(p->threads[i]);
  free(p->threads);
  p->threads = NULL;
  if (p->tasks != NULL) weft_queue_free(p->tasks);
  p->tasks = NULL;
}

static void tpool_nothing(struct pool *p) { (void)p; }

const struct weft__pool_ops weft__tpool_ops = {
    .start = tpool_start,
    .submit = tpool_submit,
    .close = tpool_close,
    .cancel = tpool_cancel,
    .running = tpool_running,
    .progress = tpool_progress,
    .serves_caller = tpool_serves_caller,
    .terminate = tpool_terminate,
    .join = tpool_join,
    .free = tpool_free,
    .at_exit = tpool_nothing,
    .after_fork_child = tpool_nothing,
};
