/* SPDX-License-Identifier: MIT */
/* weft/process.h — processes with the semantics of Python's
 * multiprocessing.Process, started by fork (the default), spawn or
 * forkserver.
 *
 *     int dance(void *arg) { ...; return 0; }
 *     weft_process p = weft_process_new(dance, .name = "myprocess1");
 *     weft_process_start(p);
 *     weft_process_join(p, WEFT_FOREVER);
 *     weft_process_close(p);
 *
 * A weft_process is a small value naming a process object; copying it is
 * cheap and a call through a handle that was closed returns WEFT_ECLOSED
 * instead of touching freed memory. A handle whose id is 0 is "none".
 *
 * Exit rules (as Python's, plus a grace period): when a process that started
 * children returns from main or calls exit(), weft sends SIGTERM to its live
 * daemon children, waits up to the daemon grace period, sends SIGKILL to any
 * still alive, reaps them, and then joins every non-daemon child. A daemon
 * child also dies (SIGKILL) as soon as its parent process dies for any reason.
 * A daemon process may start daemon children only: a non-daemon grandchild
 * would be orphaned when its daemon parent is terminated.
 */
#ifndef WEFT_PROCESS_H
#define WEFT_PROCESS_H

#include <sys/types.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A handle to a process object. */
typedef struct weft_process {
  uint64_t id;
} weft_process;

/* The function a child process runs. Its return value is the child's exit code
 * (like exit(), only the low 8 bits reach the parent). */
typedef int (*weft_process_target)(void *arg);

/* Options of weft_process_new, given as designated initialisers. */
typedef struct weft_process_options {
  size_t size_;     /* set by the weft_process_new macro; do not set it */
  const char *name; /* NULL: "Process-N" (or "Process-1:N" in Process-1) */
  void *arg;        /* passed to the target (fork only): the child sees the parent's memory */
  bool daemon;      /* terminated when the parent exits or dies */
  const void *args; /* args_size bytes copied at creation; the target gets the child's copy */
  size_t args_size;
  const char *start_method; /* "fork", "spawn", "forkserver"; NULL: weft_get_start_method() */
  /* NULL-terminated list of the weft objects the child uses by handle:
   * process queues, Values/Arrays, pipe connections, shared memory
   * segments (see "Objects a child is given" below). */
  const void *const *objects;
} weft_process_options;

/* The largest string weft_process_repr writes, with its final NUL. */
#define WEFT_PROCESS_REPR_MAX (WEFT_NAME_MAX + 96)

/* Creates a process object that will run target(arg) when started, e.g.
 * weft_process_new(task, .arg = &count, .daemon = true), or with bytes
 * that travel to the child whatever the start method,
 * weft_process_new(task, .args = &count, .args_size = sizeof count) -- the
 * target then gets a pointer to the child's copy. Returns a handle with id
 * 0 on failure: WEFT_EINVAL for a NULL target, a name longer than
 * WEFT_NAME_MAX bytes, both .arg and .args, an unknown start method, .arg
 * or a target that another run of the program cannot find under spawn or
 * forkserver, an object in .objects that cannot travel; WEFT_ENOMEM. */
#define weft_process_new(...) WEFT__PROCESS_NEW(__VA_ARGS__, )
#define WEFT__PROCESS_NEW(target, ...)                                              \
  weft_process_new_opts((target), &(const weft_process_options){                    \
                                      .size_ = sizeof(weft_process_options), __VA_ARGS__})
WEFT_API weft_process weft_process_new_opts(weft_process_target target,
                                            const weft_process_options *opts);

/* Flushes every stdio stream and starts the child by its start method; the
 * child runs the target. Fails with WEFT_EALREADY if started before,
 * WEFT_EPERM in a daemon process asked to start a non-daemon child,
 * WEFT_EAGAIN or WEFT_ENOMEM if fork fails, or the error that kept the
 * forkserver from starting (nothing is left behind; the process may be
 * started again). */
WEFT_API int weft_process_start(weft_process p);

/* Waits until the process has stopped, at most timeout seconds (WEFT_FOREVER:
 * for ever; 0 or less: not at all), and reaps it. Returns 0 once it has
 * stopped, WEFT_ETIMEDOUT if it is still running, WEFT_ENOTSTARTED,
 * WEFT_EDEADLK for the calling process's own handle, WEFT_EPERM if the caller
 * is not the process's parent. Several threads may join one process at once. */
WEFT_API int weft_process_join(weft_process p, double timeout);
/* The same, naming the call site for dumps (weft/dump.h); the macro passes
 * "file.c:line" (call (weft_process_join)(...) for the function itself). */
WEFT_API int weft_process_join_at(weft_process p, double timeout, const char *site);
#define weft_process_join(p, timeout) weft_process_join_at((p), (timeout), WEFT__SITE)

/* Returns whether the process is running: true for the calling process
 * itself, false before start and once it stopped (reaping it). */
WEFT_API bool weft_process_is_alive(weft_process p);

/* Returns the process id, or WEFT_ENOTSTARTED before start. */
WEFT_API pid_t weft_process_pid(weft_process p);

/* Stores the exit code in *exitcode and returns 0 once the process stopped:
 * the target's return value, n for exit(n), -signum if a signal killed it.
 * Returns WEFT_ERUNNING while it runs, WEFT_ENOTSTARTED before start, and
 * WEFT_ECHILD if its status was reaped by someone else (waitpid(-1, ...)). */
WEFT_API int weft_process_exitcode(weft_process p, int *exitcode);

/* Sends SIGTERM to the process; a process that already stopped is left
 * alone. WEFT_ENOTSTARTED before start, WEFT_EPERM if not the parent. */
WEFT_API int weft_process_terminate(weft_process p);

/* Sends SIGKILL, with the same rules as weft_process_terminate. */
WEFT_API int weft_process_kill(weft_process p);

/* Releases the process object and its resources; the handle becomes invalid.
 * WEFT_ERUNNING if the process is still running (join it first), WEFT_EPERM
 * for the calling process's own handle or its parent's. */
WEFT_API int weft_process_close(weft_process p);

/* Returns the process's name, valid until the handle is closed; NULL for an
 * invalid handle. */
WEFT_API const char *weft_process_name(weft_process p);

/* Returns whether the process is a daemon. */
WEFT_API bool weft_process_daemon(weft_process p);

/* Sets the daemon flag; WEFT_EALREADY once the process has been started. */
WEFT_API int weft_process_set_daemon(weft_process p, bool daemon);

/* Writes Python's repr of the process into buf and returns buf, e.g.
 * "<Process name='myprocess1' pid=15900 parent=16040 started daemon>" or
 * "<Process name='Process-2' pid=15901 parent=16040 stopped exitcode=-SIGKILL>".
 * The state is initial, started, stopped, or unknown when the caller is not
 * the parent. NULL and WEFT_EINVAL for a NULL buf or a size of 0. */
WEFT_API char *weft_process_repr(weft_process p, char *buf, size_t size);

/* ---- start methods (Python's set_start_method) ----
 *   "fork"   the child is a copy of the parent (the default): it sees the
 *            parent's memory, and .arg pointers work
 *   "spawn"  the child is a fresh run of the program's own image that runs
 *            only the target, after weft's start-up and before the
 *            program's own constructors and main; it sees none of the
 *            parent's memory, gets .args as a copy, and is started without
 *            copying the parent's address space (fast from a large parent,
 *            and safe from a parent whose other threads hold locks)
 *   "forkserver" as spawn for the child, which is forked from a server
 *            process: a fresh run of the program's image started once,
 *            the first time it is needed (or by weft_forkserver_ensure_running),
 *            which never runs main. A start costs a fork of that small
 *            process. The child's standard input, output and error are
 *            the caller's at start; its environment is the server's (the
 *            program's when the server started). The server ends with the
 *            program, even one killed by SIGKILL, and daemon children with it.
 * The environment variable WEFT_START_METHOD sets the program's default at
 * start-up; a process's .start_method overrides it.
 *
 * Objects a child is given. Under fork the child inherits everything. Under
 * spawn and forkserver:
 *   - all of the parent's shared memory is mapped in the child at the same
 *     addresses: weft_shared_alloc blocks and the primitives made by
 *     weft_lock_new, weft_rlock_new, weft_cond_new, weft_semaphore_new,
 *     weft_event_new and weft_barrier_new, so pointers to them (in .args
 *     or in shared memory) work unchanged;
 *   - objects used through handles -- weft_mpqueue, weft_value, weft_conn,
 *     weft_shm -- are listed in .objects, as Python passes them as
 *     arguments, e.g. .objects = (const void *[]){q, counter, NULL}; the
 *     child uses the same pointers (in .args) with the same calls. One not
 *     listed is a closed handle there (WEFT_ECLOSED). A named segment
 *     travels by its name, so it must not have been unlinked.
 *   - a thread queue, an imap or as_completed iterator, or memory that is
 *     not weft's shared memory, cannot travel: weft_process_new refuses it
 *     (WEFT_EINVAL), and so does weft_process_start if an object was freed
 *     since (WEFT_ECLOSED). */

/* Sets the default start method for processes created afterwards.
 * WEFT_EINVAL for NULL or an unknown name. */
WEFT_API int weft_set_start_method(const char *method);

/* Returns the default start method's name ("fork" unless set). */
WEFT_API const char *weft_get_start_method(void);

/* Starts the forkserver now if it is not running (Python's
 * multiprocessing.forkserver.ensure_running): call it early in main so that
 * the first forkserver start does not pay for it. 0, or the error that kept
 * the server from starting. */
WEFT_API int weft_forkserver_ensure_running(void);

/* Returns the handle of the calling process: "MainProcess" in the program's
 * first process, the child's own object in a process weft started. */
WEFT_API weft_process weft_current_process(void);

/* Returns the handle of the process that started the caller, or a handle with
 * id 0 in the main process. Its name, pid, is_alive and join work. */
WEFT_API weft_process weft_parent_process(void);

/* Reaps the caller's children that stopped, stores up to max handles of those
 * still running in out, and returns how many are running (may exceed max). */
WEFT_API int weft_active_children(weft_process *out, size_t max);

/* Sets how long the exit rules wait for daemon children after SIGTERM before
 * sending SIGKILL: a timeout (default 1.0 s; WEFT_FOREVER: never escalate, as
 * Python does not; 0 or less: SIGKILL at once). WEFT_EINVAL for NaN. */
WEFT_API int weft_set_daemon_grace(double seconds);

/* Returns how many CPUs the calling process may use: those in its affinity
 * mask (Python's os.process_cpu_count()), capped by its cgroup's CPU quota
 * rounded up (which Python ignores, so its pools oversubscribe containers);
 * at least 1. */
WEFT_API int weft_cpu_count(void);

#ifdef __cplusplus
}
#endif

#endif
