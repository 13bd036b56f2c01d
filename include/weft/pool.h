/* weft/pool.h — pools of worker threads and futures: Python's
 * concurrent.futures.ThreadPoolExecutor and Future (process pools follow).
 *
 *     static int square(void *arg, void **result) {
 *       *result = (void *)((intptr_t)arg * (intptr_t)arg);
 *       return 0;
 *     }
 *     weft_pool pool = weft_thread_pool_new(.workers = 4);
 *     weft_future f = weft_pool_submit(pool, square, (void *)7);
 *     void *r;
 *     weft_future_result(f, WEFT_FOREVER, &r);      // r == (void *)49
 *     weft_future_close(f);
 *     weft_pool_close(pool);                         // no more submits
 *     weft_pool_join(pool, WEFT_FOREVER);            // every task done
 *     weft_pool_free(pool);
 *
 * Pools and futures are small by-value handles, like processes and
 * threads: a call through a closed one returns WEFT_ECLOSED. A task is a
 * function that returns 0 and stores its result (any pointer), or returns
 * a non-zero code of its own that fails the task: the future then reports
 * WEFT_ETASKFAILED and keeps the code (Python's "the task raised").
 *
 * Workers are non-daemon weft threads, as ThreadPoolExecutor's: when the
 * program exits with a pool still open, weft closes it, the queued tasks
 * still run, and the exit rules (see thread.h) wait for the workers. A task
 * that never returns therefore holds up the exit, as in Python.
 */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#include "common.h"

typedef struct weft_pool {
  uint64_t id;
} weft_pool;

typedef struct weft_future {
  uint64_t id;
} weft_future;

/* A task: returns 0 after storing its result in *result, or a non-zero
 * code of its choosing to fail. */
typedef int (*weft_task)(void *arg, void **result);

/* Called once a future is done (result, failure or cancel), from the thread
 * that finished it: a worker, or the caller of cancel or terminate. */
typedef void (*weft_future_callback)(weft_future future, void *arg);

/* Options of weft_thread_pool_new. */
typedef struct weft_pool_options {
  size_t size_;       /* set by the macro */
  int workers;        /* 0 or left out: weft_cpu_count(); negative: WEFT_EINVAL */
  /* Run once in each worker before its first task; a non-zero return
   * breaks the pool (as Python's BrokenThreadPool): pending and later
   * tasks fail with WEFT_EBROKEN. */
  int (*initializer)(void *arg);
  void *initarg;
  long maxtasksperchild; /* a worker is replaced after this many tasks (0: never) */
  /* Workers are named "<name>_N", N counting from 0 (default name
   * "ThreadPool-K", K counting pools from 0); at most WEFT_NAME_MAX - 11
   * bytes, else WEFT_EINVAL. */
  const char *name;
} weft_pool_options;

/* Creates a pool of threads, started lazily as tasks arrive (as
 * ThreadPoolExecutor). Handle id 0 and weft_last_error() on failure:
 * WEFT_EINVAL (negative workers or maxtasksperchild, name too long),
 * WEFT_ENOMEM. */
#define weft_thread_pool_new(...)                                                         \
  weft_thread_pool_new_opts(&(const weft_pool_options){.size_ = sizeof(weft_pool_options), \
                                                       __VA_ARGS__})
WEFT_API weft_pool weft_thread_pool_new_opts(const weft_pool_options *opts);

/* Queues fn(arg) and returns its future (id 0 on failure: WEFT_EINVAL for a
 * NULL fn, WEFT_ECLOSED after close or terminate, WEFT_EBROKEN, WEFT_ENOMEM,
 * WEFT_EAGAIN if no worker thread could be started). */
WEFT_API weft_future weft_pool_submit(weft_pool pool, weft_task fn, void *arg);

/* Waits at most timeout seconds for the task, then: 0 with its result in
 * *result (result may be NULL), WEFT_ETASKFAILED (the task's own code from
 * weft_future_task_error), WEFT_ECANCELED, WEFT_EBROKEN, or WEFT_ETIMEDOUT
 * while it is not done. */
WEFT_API int weft_future_result(weft_future future, double timeout, void **result);

/* The non-zero code a failed task returned; 0 otherwise. */
WEFT_API int weft_future_task_error(weft_future future);

/* Whether the task finished, failed or was cancelled. */
WEFT_API bool weft_future_done(weft_future future);

/* Whether it is running now. */
WEFT_API bool weft_future_running(weft_future future);

/* Cancels a task that has not started: 0 (or 0 again if already
 * cancelled), WEFT_EBUSY if it is running or done (Python's False). */
WEFT_API int weft_future_cancel(weft_future future);

/* Whether it was cancelled. */
WEFT_API bool weft_future_cancelled(weft_future future);

/* Adds a callback run once the future is done; runs it at once, in the
 * caller, if it already is. WEFT_EINVAL for a NULL callback. */
WEFT_API int weft_future_add_done_callback(weft_future future, weft_future_callback cb,
                                           void *arg);

/* Waits until all (all = true) or at least one of n futures are done, at
 * most timeout seconds: 0, or WEFT_ETIMEDOUT (concurrent.futures.wait's
 * ALL_COMPLETED / FIRST_COMPLETED). WEFT_EINVAL for n == 0 or NULL. */
WEFT_API int weft_futures_wait(const weft_future *futures, size_t n, bool all, double timeout);

/* Releases a future (its result is the caller's). A pending or running
 * task still runs; its outcome is dropped, though its done callbacks still
 * run (calls through the handle they get then return WEFT_ECLOSED). */
WEFT_API int weft_future_close(weft_future future);

/* No more submits (Python's shutdown(wait=False) / Pool.close); tasks
 * already queued still run. Closing twice (or after terminate) is
 * harmless. */
WEFT_API int weft_pool_close(weft_pool pool);

/* Waits until every queued task is done and the workers have exited:
 * 0, WEFT_ETIMEDOUT, WEFT_ERUNNING before close or terminate (Pool.join's
 * "Pool is still running"), WEFT_EDEADLK from one of the pool's own
 * workers. */
WEFT_API int weft_pool_join(weft_pool pool, double timeout);

/* Closes the pool and cancels every task that has not started (Python's
 * shutdown(cancel_futures=True)); running tasks finish (threads cannot be
 * killed safely). WEFT_EALREADY the second time. */
WEFT_API int weft_pool_terminate(weft_pool pool);

/* Releases a joined pool. WEFT_EBUSY until it has been joined. */
WEFT_API int weft_pool_free(weft_pool pool);

#endif
