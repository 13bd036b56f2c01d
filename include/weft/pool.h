/* SPDX-License-Identifier: MIT */
/* weft/pool.h — pools of worker threads or processes, and futures: Python's
 * concurrent.futures (ThreadPoolExecutor, Future, wait, as_completed) and
 * multiprocessing.Pool (apply_async, map, imap, imap_unordered).
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
 * Thread pools pass pointers (weft_pool_submit). Process pools pass bytes:
 * a weft_bytes_task reads its argument and writes its result as bytes, which
 * travel through shared memory (no feeder thread); thread pools run bytes
 * tasks too, so apply_async, map and imap work on both kinds.
 *
 * Thread workers are non-daemon weft threads, as ThreadPoolExecutor's: when
 * the program exits with a pool still open, weft closes it, the queued tasks
 * still run, and the exit rules (see thread.h) wait for the workers. A task
 * that never returns therefore holds up the exit, as in Python.
 *
 * Process workers are daemon weft processes named "ForkPoolWorker-N", as
 * multiprocessing.Pool's, all started by weft_process_pool_new. They die
 * with the pool's process however it ends (exit, crash, SIGKILL): none is
 * ever orphaned. A worker that dies while running a task (a crash, abort,
 * exit, a kill from outside) fails exactly that task with
 * WEFT_EWORKERDIED and a sentence naming it ("ForkPoolWorker-2 died with
 * SIGSEGV while running task 17"); the pool starts a replacement and every
 * other task still runs. In a map or imap the item that was running fails;
 * the items of its chunk before it keep their results, those after it run
 * elsewhere, each alone. No task or item ever runs twice. With a time
 * limit, a task that runs past it has its worker killed and replaced, and
 * fails with WEFT_ETASKTIMEOUT (a chunk: all its items).
 *
 * Callbacks of a process pool run on its callback threads (two unless
 * .callback_threads says otherwise), never on the thread that collects
 * results: a callback that blocks delays no result and no future, only the
 * callbacks behind it once every callback thread is blocked.
 */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#include <limits.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The option macros below give .workers and .chunksize WEFT_DEFAULT (see
 * common.h) when they are left out, so that an explicit 0 can be refused as
 * Python refuses it (Pool(0), ThreadPoolExecutor(0), chunksize=0:
 * ValueError). Callers of the _opts functions set it themselves for the
 * default. */

/* Builds an options literal with the defaults above and the caller's
 * fields, which override them: GCC and Clang warn of an overridden field
 * (-Woverride-init, in -Wextra), so the warning is off for this literal
 * only, which needs a statement expression. */
#define WEFT__WITH_DEFAULTS(result_type, call)                              \
  __extension__({                                                                      \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Woverride-init\"") \
    result_type weft__result_ = call;                                                  \
    _Pragma("GCC diagnostic pop") weft__result_;                                       \
  })

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
  int workers;        /* left out (WEFT_DEFAULT): weft_cpu_count(); 0 or negative: WEFT_EINVAL */
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
  /* Process pools only (WEFT_EINVAL for a thread pool, whose threads cannot
   * be killed): seconds a task may run before its worker is killed; 0 or
   * left out: no limit. */
  double task_timeout;
  /* The largest argument message of a bytes task in bytes (default 4
   * MiB), and the room its result is written into (a larger result goes
   * through weft_task_return; a process pool's worker then sends it in
   * parts of this size). */
  size_t max_message;
  /* Process pools: threads that run callbacks (default 2). */
  int callback_threads;
  /* Process pools: how the workers start, "fork", "spawn" or "forkserver"
   * (NULL: weft_get_start_method()). Under spawn and forkserver a task,
   * and the initializer, must be a function another run of the program
   * can find (see weft_process_new), and initarg NULL or a pointer into
   * weft's shared memory (weft_shared_alloc), which every worker maps at
   * the same address; WEFT_EINVAL otherwise. Workers are then named
   * "SpawnPoolWorker-N" or "ForkServerPoolWorker-N", as Python's. */
  const char *start_method;
} weft_pool_options;

/* Creates a pool of threads, started lazily as tasks arrive (as
 * ThreadPoolExecutor). Handle id 0 and weft_last_error() on failure:
 * WEFT_EINVAL (workers 0 or negative, negative maxtasksperchild, name too
 * long), WEFT_ENOMEM. */
#define weft_thread_pool_new(...)                                                         \
  WEFT__WITH_DEFAULTS(weft_pool,                                       \
                      weft_thread_pool_new_opts(&(const weft_pool_options){               \
                          .size_ = sizeof(weft_pool_options), .workers = WEFT_DEFAULT,     \
                          __VA_ARGS__}))
WEFT_API weft_pool weft_thread_pool_new_opts(const weft_pool_options *opts);

/* Creates a pool of worker processes (multiprocessing.Pool), all started
 * now. Names default to "ProcessPool-K"; workers are "ForkPoolWorker-N",
 * N counting every pool's workers from 1. Handle id 0 and weft_last_error()
 * on failure: WEFT_EINVAL (as above, or a negative or NaN task_timeout, a
 * max_message below 64 bytes or above 1 GiB, negative callback_threads),
 * WEFT_ENOMEM, WEFT_EAGAIN (a worker could not be started; none is left). */
#define weft_process_pool_new(...)                                                        \
  WEFT__WITH_DEFAULTS(weft_pool,                                       \
                      weft_process_pool_new_opts(&(const weft_pool_options){              \
                          .size_ = sizeof(weft_pool_options), .workers = WEFT_DEFAULT,     \
                          __VA_ARGS__}))
WEFT_API weft_pool weft_process_pool_new_opts(const weft_pool_options *opts);

/* Queues fn(arg) and returns its future (id 0 on failure: WEFT_EINVAL for a
 * NULL fn, WEFT_ECLOSED after close or terminate, WEFT_EBROKEN, WEFT_ENOMEM,
 * WEFT_EAGAIN if no worker thread could be started). Thread pools only: a
 * process pool takes bytes (WEFT_EINVAL; see weft_pool_apply_async). */
WEFT_API weft_future weft_pool_submit(weft_pool pool, weft_task fn, void *arg);

/* A task that takes and gives bytes, as process pools run (thread pools
 * run them too). It reads len bytes at arg and writes its result at
 * result, where *result_len bytes of room wait; it sets *result_len to the
 * length of its result (the whole room if left as is) and returns 0, or
 * returns a non-zero code of its own to fail the task (with a message:
 * weft_task_fail). A result larger than the room goes through
 * weft_task_return; setting *result_len past the room fails the task (or
 * item) with WEFT_EMSGSIZE. It runs in a worker: in a process pool it sees
 * the pool's process as it was when the worker started, and what it
 * writes elsewhere stays in the worker. */
typedef int (*weft_bytes_task)(const void *arg, size_t len, void *result, size_t *result_len);

/* A byte string: len bytes at data (data may be NULL when len is 0). */
typedef struct weft_bytes {
  const void *data;
  size_t len;
} weft_bytes;

/* Called in a running task (any kind): records code with a message
 * (printf-style, kept up to 1 KiB) for the current task, and returns code,
 * so that `return weft_task_fail(2, "cannot open %s: %s", path,
 * strerror(errno));` fails the task with both. The message reaches
 * weft_future_task_message, weft_imap_task_message, map's item_failed hook
 * and the error sentence ("task 17 (item 3) failed with code 2: cannot
 * open ..."). It is kept only if the task then returns a non-zero code.
 * Outside a task it records nothing; code 0 records nothing. */
WEFT_API int weft_task_fail(int code, const char *fmt, ...) WEFT_PRINTF(2, 3);

/* Called in a running bytes task: gives the len bytes at data as its
 * result, however large (a process pool's worker sends them in parts
 * through the results queue), instead of writing into its room. Returns
 * 0, so that `return weft_task_return(buf, n);` ends the task; once it
 * returned 0 the result stands, whatever the task returns after it. data
 * must not point into the task's room. WEFT_EPERM outside a bytes task,
 * WEFT_EALREADY the second time in one task (the first result stands),
 * WEFT_ENOMEM, WEFT_EMSGSIZE in a fixed-size map or imap whose result_size
 * is smaller than len (the item fails with it). */
WEFT_API int weft_task_return(const void *data, size_t len);

/* Options of weft_pool_apply_async. */
typedef struct weft_apply_options {
  size_t size_;   /* set by the macro */
  /* Process pools: this task's time limit in seconds (see task_timeout);
   * 0 or left out: the pool's. WEFT_EINVAL on a thread pool. */
  double timeout;
  /* Run once the task succeeded / once it did not (failed, worker died,
   * timed out, cancelled, pool broken) -- Pool.apply_async's callback and
   * error_callback. They get the future, and callback_arg. */
  weft_future_callback callback;
  weft_future_callback error_callback;
  void *callback_arg;
} weft_apply_options;

/* Queues fn on a copy of the len bytes at arg (arg may be NULL when len is
 * 0) and returns its future, whose result is the task's bytes
 * (weft_future_result_bytes). Id 0 on failure: as weft_pool_submit, and
 * WEFT_EMSGSIZE for an argument larger than the pool's max_message. */
#define weft_pool_apply_async(...) WEFT__POOL_APPLY_ASYNC(__VA_ARGS__, )
#define WEFT__POOL_APPLY_ASYNC(pool, fn, arg, len, ...)                             \
  weft_pool_apply_async_opts((pool), (fn), (arg), (len),                            \
                             &(const weft_apply_options){                           \
                                 .size_ = sizeof(weft_apply_options), __VA_ARGS__})
WEFT_API weft_future weft_pool_apply_async_opts(weft_pool pool, weft_bytes_task fn,
                                                const void *arg, size_t len,
                                                const weft_apply_options *opts);

/* A progress hook: done of total items finished, elapsed seconds since the
 * call began (total is 0 while an imap's input has not ended). Runs in the
 * thread that waits for the results: a map calls it as items finish
 * inside running chunks too (it looks every 50 ms), an imap as each result
 * is given. done never goes down. */
typedef void (*weft_progress_fn)(size_t done, size_t total, double elapsed, void *arg);

/* A ready-made progress hook: a one-line bar on stderr, drawn only when
 * stderr is a terminal and at most ten times a second; arg is a label (a
 * const char *) or NULL. */
WEFT_API void weft_progress_bar(size_t done, size_t total, double elapsed, void *arg);

/* A hook map calls, in the caller's thread and in index order before it
 * returns, for each item that failed: err is its weft code
 * (WEFT_ETASKFAILED, WEFT_EWORKERDIED, WEFT_EMSGSIZE, ...), task_code the
 * code the task returned (0 unless WEFT_ETASKFAILED), message the task's
 * message or weft's sentence ("" if none; valid during the call). */
typedef void (*weft_item_failed_fn)(size_t index, int err, int task_code, const char *message,
                                    void *arg);

/* Options of weft_pool_map and the imaps. */
typedef struct weft_map_options {
  size_t size_;   /* set by the macro */
  /* Items per task; left out (WEFT_DEFAULT): map's default is Python's,
   * ceil(n / (4 * workers)), but at most 256 KiB of items (or of results
   * with their codes) a chunk; the imaps' is 1; 0 or negative: WEFT_EINVAL.
   * A process pool splits chunks that would not fit in max_message. */
  long chunksize;
  double timeout;  /* per task (chunk), as weft_apply_options.timeout */
  /* map: if set, n codes, each 0 or the failure of its item. */
  int *errors;
  /* map: called for each failed item (see weft_item_failed_fn). */
  weft_item_failed_fn item_failed;
  void *item_failed_arg;
  /* imaps: the most tasks in flight at once (default 4 per worker), so
   * an endless input never fills memory. */
  long window;
  bool unordered;  /* imaps: results in completion order (imap_unordered) */
  weft_progress_fn progress;
  void *progress_arg;
} weft_map_options;

/* Python's Pool.map over byte strings of any length: runs fn on each of
 * the n items and stores in *results one block, freed with a single
 * free(*results), that holds n weft_bytes -- the result of item i, its
 * bytes inside the same block -- then the bytes. A task writes into its
 * room (*result_len bytes, at least half the pool's max_message) or gives
 * a result of any size with weft_task_return. A failed item's entry is
 * {NULL, 0} (a 0-byte result has a non-NULL data). Returns as
 * weft_pool_map; *results is set whenever items were submitted, even when
 * one failed or a later submit failed (entries of items not run are
 * {NULL, 0}), and is NULL otherwise. Chunks are cut by items and by bytes
 * (a chunk holds at most 256 KiB of items, or one larger item alone); one
 * item larger than max_message
 * less 64 bytes: WEFT_EMSGSIZE. Also WEFT_EINVAL for NULL results, NULL
 * items with n > 0, or an item with NULL data and len > 0. */
#define weft_pool_map_bytes(pool, fn, items, n, results, ...)                              \
  WEFT__WITH_DEFAULTS(int, weft_pool_map_bytes_opts((pool), (fn), (items), (n), (results), \
                                                    &(const weft_map_options){             \
                                                        .size_ = sizeof(weft_map_options), \
                                                        .chunksize = WEFT_DEFAULT,         \
                                                        __VA_ARGS__}))
WEFT_API int weft_pool_map_bytes_opts(weft_pool pool, weft_bytes_task fn, const weft_bytes *items,
                                      size_t n, weft_bytes **results,
                                      const weft_map_options *opts);

/* Python's Pool.map: runs fn on each of the n items (item_size bytes each,
 * one after the other at items) and writes the result of item i at
 * results + i * result_size (the room each call gets). Waits for all, then
 * returns 0, or the failure of the first item that failed (by index):
 * WEFT_ETASKFAILED ("task 17 (item 3) failed with code 2: <its message>"),
 * WEFT_EWORKERDIED, WEFT_ETASKTIMEOUT, WEFT_EMSGSIZE (a result larger than
 * result_size), ... with a sentence naming it; the other items' results
 * are written all the same.
 * WEFT_EINVAL for a NULL fn, NULL items or results with n > 0, a zero
 * result_size, a chunksize below 1; WEFT_ECLOSED after close. */
#define weft_pool_map(...) WEFT__POOL_MAP(__VA_ARGS__, )
#define WEFT__POOL_MAP(pool, fn, items, item_size, n, results, result_size, ...)          \
  WEFT__WITH_DEFAULTS(int,                                              \
                      weft_pool_map_opts((pool), (fn), (items), (item_size), (n), (results), \
                                         (result_size),                                   \
                                         &(const weft_map_options){                       \
                                             .size_ = sizeof(weft_map_options),            \
                                             .chunksize = WEFT_DEFAULT, __VA_ARGS__}))
WEFT_API int weft_pool_map_opts(weft_pool pool, weft_bytes_task fn, const void *items,
                                size_t item_size, size_t n, void *results, size_t result_size,
                                const weft_map_options *opts);

/* Where an imap takes its items: writes the next one (item_size bytes) at
 * item and returns true, or returns false at the end. Called by
 * weft_imap_next, in the caller's thread, only as the window has room. */
typedef bool (*weft_imap_source)(void *item, void *arg);

/* A running imap. Its pointer is a handle, as a weft_queue's: once freed,
 * every call through it returns WEFT_ECLOSED. */
typedef struct weft_imap weft_imap;

/* Python's Pool.imap / imap_unordered: a lazy map over the items source
 * gives; results come from weft_imap_next. NULL and weft_last_error() on
 * failure (as weft_pool_map; WEFT_EINVAL also for a NULL source or a
 * negative window). */
#define weft_pool_imap(...) WEFT__POOL_IMAP(__VA_ARGS__, )
#define WEFT__POOL_IMAP(pool, fn, source, source_arg, item_size, result_size, ...)        \
  WEFT__WITH_DEFAULTS(weft_imap *,                                      \
                      weft_pool_imap_opts((pool), (fn), (source), (source_arg), (item_size), \
                                          (result_size),                                  \
                                          &(const weft_map_options){                      \
                                              .size_ = sizeof(weft_map_options),           \
                                              .chunksize = WEFT_DEFAULT, __VA_ARGS__}))
#define weft_pool_imap_unordered(...) WEFT__POOL_IMAP_UNORDERED(__VA_ARGS__, )
#define WEFT__POOL_IMAP_UNORDERED(pool, fn, source, source_arg, item_size, result_size, ...) \
  WEFT__POOL_IMAP(pool, fn, source, source_arg, item_size, result_size, .unordered = true,  \
                  __VA_ARGS__)
WEFT_API weft_imap *weft_pool_imap_opts(weft_pool pool, weft_bytes_task fn,
                                        weft_imap_source source, void *source_arg,
                                        size_t item_size, size_t result_size,
                                        const weft_map_options *opts);

/* Where an imap over byte strings takes its items: sets *item to the next
 * one (its bytes need stay valid only until the next call) and returns
 * true, or returns false at the end. */
typedef bool (*weft_imap_bytes_source)(weft_bytes *item, void *arg);

/* Python's Pool.imap over byte strings of any length: as weft_pool_imap,
 * with results from weft_imap_next_bytes (tasks as in
 * weft_pool_map_bytes). NULL and weft_last_error() on failure. */
#define weft_pool_imap_bytes(pool, fn, source, source_arg, ...)                           \
  WEFT__WITH_DEFAULTS(weft_imap *,                                                        \
                      weft_pool_imap_bytes_opts((pool), (fn), (source), (source_arg),    \
                                                &(const weft_map_options){               \
                                                    .size_ = sizeof(weft_map_options),   \
                                                    .chunksize = WEFT_DEFAULT,           \
                                                    __VA_ARGS__}))
WEFT_API weft_imap *weft_pool_imap_bytes_opts(weft_pool pool, weft_bytes_task fn,
                                              weft_imap_bytes_source source, void *source_arg,
                                              const weft_map_options *opts);

/* The next result of an imap over byte strings: as weft_imap_next, with
 * the result in *result (may be NULL), valid until the next call on it or
 * weft_imap_free. WEFT_EINVAL on an imap of fixed-size items, and
 * weft_imap_next on an imap of byte strings. */
WEFT_API int weft_imap_next_bytes(weft_imap *it, double timeout, size_t *index,
                                  weft_bytes *result);

/* The next result: 0 with the item's index in *index (may be NULL) and its
 * result_size bytes at result; the item's failure (WEFT_ETASKFAILED, whose
 * own code weft_imap_task_error gives and message weft_imap_task_message,
 * WEFT_EWORKERDIED, WEFT_EMSGSIZE, ...) with *index
 * set -- the next call goes on with the following item; WEFT_EEOF after
 * the last; WEFT_ETIMEDOUT. */
WEFT_API int weft_imap_next(weft_imap *it, double timeout, size_t *index, void *result);

/* The task's own code for the item weft_imap_next last failed with
 * WEFT_ETASKFAILED; 0 otherwise. */
WEFT_API int weft_imap_task_error(const weft_imap *it);

/* The message of the item weft_imap_next last failed with (the task's
 * weft_task_fail message, or weft's sentence for a death, a time limit,
 * an oversized result); "" otherwise. Valid until the next call on it. */
WEFT_API const char *weft_imap_task_message(const weft_imap *it);

/* Ends an imap: tasks not started are cancelled, running ones are waited
 * for. NULL is ignored. */
WEFT_API int weft_imap_free(weft_imap *it);

/* Waits at most timeout seconds for the task, then: 0 with its result in
 * *result (result may be NULL), WEFT_ETASKFAILED (the task's own code from
 * weft_future_task_error), WEFT_ECANCELED, WEFT_EBROKEN, or WEFT_ETIMEDOUT
 * while it is not done. */
WEFT_API int weft_future_result(weft_future future, double timeout, void **result);

/* The result of a bytes task (weft_pool_apply_async): waits as
 * weft_future_result, then *data points at the bytes (owned by the future:
 * valid until it is closed) and *len says how many. weft_future_result
 * gives the same pointer. */
WEFT_API int weft_future_result_bytes(weft_future future, double timeout, const void **data,
                                      size_t *len);

/* The non-zero code a failed task returned; 0 otherwise. */
WEFT_API int weft_future_task_error(weft_future future);

/* Why a done task failed: the message it gave weft_task_fail, or weft's
 * sentence for a death, a time limit, a cancel or a result larger than its
 * room; "" if it succeeded, is not done or failed without a message. Owned
 * by the future: valid until it is closed. */
WEFT_API const char *weft_future_task_message(weft_future future);

/* Whether the task finished, failed or was cancelled. */
WEFT_API bool weft_future_done(weft_future future);

/* Whether it is running now (in a process pool: its worker has begun it). */
WEFT_API bool weft_future_running(weft_future future);

/* Cancels a task that has not started -- in a process pool also one a
 * worker holds but has not begun: 0 (or 0 again if already cancelled),
 * WEFT_EBUSY if it is running or done (Python's False). */
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

/* Futures in the order they finish (concurrent.futures.as_completed). A
 * handle, as weft_imap. */
typedef struct weft_as_completed weft_as_completed;

/* Watches n futures (the caller keeps their handles open meanwhile); one
 * listed twice is given once, at its first position, as in Python. NULL
 * and weft_last_error() on failure: WEFT_EINVAL (NULL or n == 0),
 * WEFT_ECLOSED (a closed handle), WEFT_ENOMEM. */
WEFT_API weft_as_completed *weft_as_completed_new(const weft_future *futures, size_t n);

/* The next future to finish, at most timeout seconds away: 0 with it in
 * *future and its position in *index (either may be NULL), WEFT_EEOF once
 * all have been given, WEFT_ETIMEDOUT. */
WEFT_API int weft_as_completed_next(weft_as_completed *ac, double timeout, weft_future *future,
                                    size_t *index);

/* Stops watching. NULL is ignored. */
WEFT_API int weft_as_completed_free(weft_as_completed *ac);

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
 * shutdown(cancel_futures=True)). In a thread pool running tasks finish
 * (threads cannot be killed safely); a process pool kills its workers at
 * once (Pool.terminate) and their running tasks fail with
 * WEFT_ECANCELED. WEFT_EALREADY the second time. */
WEFT_API int weft_pool_terminate(weft_pool pool);

/* Releases a joined pool. WEFT_EBUSY until it has been joined. */
WEFT_API int weft_pool_free(weft_pool pool);

/* The scoped form, Python's `with Pool() as pool:` with one difference:
 * it waits. At the end of the block
 *
 *     { weft_pool_scoped pool = weft_process_pool_new(.workers = 4); ... }
 *
 * the pool is closed, joined -- every queued task runs to completion --
 * and freed (Python's `with Pool` terminates, dropping queued work; call
 * weft_pool_terminate in the block for that). Needs GCC or Clang's cleanup
 * attribute. */
#define weft_pool_scoped __attribute__((cleanup(weft_pool_scope_end))) weft_pool
WEFT_API void weft_pool_scope_end(weft_pool *pool);

#ifdef __cplusplus
}
#endif

#endif
