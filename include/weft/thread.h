/* SPDX-License-Identifier: MIT */
/* weft/thread.h — threads with the semantics of Python's threading.Thread.
 *
 *     void *sing(void *arg) { ...; return NULL; }
 *     weft_thread t = weft_thread_new(sing);        // named "Thread-1 (sing)"
 *     weft_thread_start(t);
 *     weft_thread_join(t, WEFT_FOREVER, NULL);
 *     weft_thread_close(t);
 *
 * Handles are small values, as for processes: a call through a closed
 * handle returns WEFT_ECLOSED.
 *
 * Exit rules (as Python's): when main returns or any thread calls exit(),
 * weft first joins every non-daemon thread it started; daemon threads are
 * abandoned and end with the process. A process started by weft does the
 * same for its own threads before it exits. weft joins them in an atexit
 * handler registered when the first thread starts, so atexit handlers
 * registered before that run after the joins (Python joins before every
 * atexit handler).
 *
 * Closing the handle of a running thread detaches it: the thread runs on,
 * the handle is invalid at once, its record is freed when the thread ends,
 * and the exit rules still wait for it if it is not a daemon.
 */
#ifndef WEFT_THREAD_H
#define WEFT_THREAD_H

#include <sys/types.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A handle to a thread object. */
typedef struct weft_thread {
  uint64_t id;
} weft_thread;

/* The function a thread runs; its return value is what join hands back. */
typedef void *(*weft_thread_target)(void *arg);

/* Options of weft_thread_new, given as designated initialisers. */
typedef struct weft_thread_options {
  size_t size_;     /* set by the weft_thread_new macro; do not set it */
  const char *name; /* NULL: "Thread-N (target)", as Python 3.10+ */
  void *arg;        /* passed to the target */
  bool daemon;      /* abandoned at exit instead of joined; a thread created
                       by a daemon thread is a daemon too, as in Python */
} weft_thread_options;

/* The largest string weft_thread_repr writes, with its final NUL. */
#define WEFT_THREAD_REPR_MAX (WEFT_NAME_MAX + 64)

/* Creates a thread object that will run target(arg), e.g.
 * weft_thread_new(worker, .arg = &job, .daemon = true). The default name
 * uses the target's spelling in the call. Returns a handle with id 0 on
 * failure: WEFT_EINVAL (NULL target, name too long), WEFT_ENOMEM. */
#define weft_thread_new(...) WEFT__THREAD_NEW(__VA_ARGS__, )
#define WEFT__THREAD_NEW(target, ...)                                                    \
  weft_thread_new_opts((target), #target,                                                \
                       &(const weft_thread_options){.size_ = sizeof(weft_thread_options), \
                                                    __VA_ARGS__})
WEFT_API weft_thread weft_thread_new_opts(weft_thread_target target, const char *target_name,
                                          const weft_thread_options *opts);

/* Starts the thread. WEFT_EALREADY if started before, WEFT_EAGAIN if the
 * system cannot create a thread now (the object may be started again). */
WEFT_API int weft_thread_start(weft_thread t);

/* Waits until the thread has finished, at most timeout seconds, and stores
 * the target's return value in *result if result is not NULL. Returns 0,
 * WEFT_ETIMEDOUT, WEFT_ENOTSTARTED, WEFT_EDEADLK for the calling thread,
 * WEFT_EPERM for a thread weft did not start (the main thread, Dummy-N).
 * Any number of threads may join one thread, any number of times. */
WEFT_API int weft_thread_join(weft_thread t, double timeout, void **result);
/* The same, naming the call site for dumps (weft/dump.h); the macro passes
 * "file.c:line" (call (weft_thread_join)(...) for the function itself). */
WEFT_API int weft_thread_join_at(weft_thread t, double timeout, void **result, const char *site);
#define weft_thread_join(t, timeout, result) \
  weft_thread_join_at((t), (timeout), (result), WEFT__SITE)

/* Returns whether the thread has started and not yet finished. */
WEFT_API bool weft_thread_is_alive(weft_thread t);

/* Returns the thread's pthread_t as a number (Python's ident), 0 before
 * start or for an invalid handle. */
WEFT_API uint64_t weft_thread_ident(weft_thread t);

/* Returns the kernel thread id (Python's native_id, shown by top -H), or
 * WEFT_ENOTSTARTED. Right after start it waits until the thread runs. */
WEFT_API pid_t weft_thread_native_id(weft_thread t);

/* Returns the thread's name, valid until the handle is closed; NULL for an
 * invalid handle. Its first 15 bytes also name the OS thread. */
WEFT_API const char *weft_thread_name(weft_thread t);

/* Returns whether the thread is a daemon. */
WEFT_API bool weft_thread_daemon(weft_thread t);

/* Sets the daemon flag; WEFT_EALREADY once started. */
WEFT_API int weft_thread_set_daemon(weft_thread t, bool daemon);

/* Writes Python's repr into buf and returns buf, e.g.
 * "<Thread(Thread-1 (sing), started 140213)>",
 * "<_MainThread(MainThread, started 140210)>", "<Thread(worker, initial)>".
 * NULL and WEFT_EINVAL for a NULL buf or a size of 0. */
WEFT_API char *weft_thread_repr(weft_thread t, char *buf, size_t size);

/* Releases the handle; a running thread is detached (see above). WEFT_EPERM
 * for the main thread and Dummy-N threads, which weft does not own. */
WEFT_API int weft_thread_close(weft_thread t);

/* Returns the calling thread's handle; a thread weft did not start gets a
 * "Dummy-N" daemon object the first time, freed when that thread ends. */
WEFT_API weft_thread weft_current_thread(void);

/* Returns the main thread's handle (in a child process, the thread that
 * forked it). */
WEFT_API weft_thread weft_main_thread(void);

/* Stores up to max handles of the live threads in out and returns how many
 * are alive (may exceed max), main and Dummy-N threads included. */
WEFT_API int weft_enumerate(weft_thread *out, size_t max);

/* Returns the number of live threads, as Python's active_count(). */
WEFT_API int weft_active_count(void);

#ifdef __cplusplus
}
#endif

#endif
