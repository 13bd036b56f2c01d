/* SPDX-License-Identifier: MIT */
/* weft/dump.h — a dump of every thread and what it waits for, as Go prints
 * on SIGQUIT and jstack prints for the JVM.
 *
 * For each thread weft knows (those it started, MainThread, Dummy-N): its
 * name, kernel thread id, whether it is a daemon, and its state -- running
 * (in no weft wait), or waiting: for which Lock, RLock, Condition,
 * Semaphore, Event, Barrier, thread queue, join or future, named, with the call
 * site of the wait and how long it has waited, and for a lock its holder;
 * then the locks it holds with the lines that took them (tracked while
 * deadlock detection is on, the default); then the live wait-for cycles
 * (deadlocks happening now), in the words of the deadlock reports; then the
 * process's running children with their pids and states.
 *
 *     weft: dump of MainProcess (pid 4240): 3 threads
 *       MainThread (tid 4240): waiting to join Thread-1 (first_ab) at app.c:60 for 2.001 s
 *         holds no lock
 *       Thread-1 (first_ab) (tid 4241): waiting for lock "B" at app.c:31 for 2.000 s; held by Thread-2 (then_ba) (tid 4242)
 *         holds "A" acquired at app.c:30
 *       ...
 *     weft: end of dump
 *
 * A dump may be taken at any moment, from a signal handler too, while the
 * threads go on: it takes no lock and allocates nothing (docs/dump.md), and
 * changes nothing the program could see. See docs/dump.md for the format.
 *
 * The environment, read at start-up:
 *   WEFT_DUMP_SIGNAL=1     dump to stderr on SIGQUIT (as Go and the JVM do);
 *                          or a signal's name or number: QUIT, SIGUSR1, 12
 *                          (1 means SIGQUIT, not SIGHUP: write HUP)
 *   WEFT_DUMP_AFTER=N      dump to stderr once a thread has waited and no weft
 *                          wait has ended for N seconds (weft_dump_later)
 * A value that cannot be used is named on stderr once and ignored.
 */
#ifndef WEFT_DUMP_H
#define WEFT_DUMP_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes the dump to stderr, as faulthandler.dump_traceback() does for
 * Python stacks. Returns 0, WEFT_EBUSY if another dump is being written at
 * the moment (one at a time; a line on stderr says so), or the error of a
 * write. */
WEFT_API int weft_dump(void);

/* The same to file descriptor fd, which is written with write(2) a line at
 * a time. WEFT_EINVAL for a negative fd; a write that fails (a closed fd,
 * a pipe whose reader left) returns its code, WEFT_EPIPE for instance. */
WEFT_API int weft_dump_fd(int fd);

/* Dumps to stderr, as faulthandler.register(signum) does, whenever the
 * process receives signum; the action it replaces comes back with
 * weft_dump_unregister. The handler takes no lock and allocates nothing,
 * and the calls it interrupts go on (SA_RESTART). WEFT_EINVAL for a signal
 * that cannot carry a dump: SIGKILL, SIGSTOP and the faults (SIGSEGV,
 * SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS). Registering twice is a no-op. */
WEFT_API int weft_dump_register(int signum);

/* Gives signum back the action it had before weft_dump_register; nothing
 * for a signal not registered. WEFT_EINVAL for a number that is no signal. */
WEFT_API int weft_dump_unregister(int signum);

/* Arms the watchdog, as faulthandler.dump_traceback_later(seconds) does,
 * but on a stall instead of a clock: a dump goes to stderr once some thread
 * waits in weft and no weft wait of any thread has ended for `seconds`;
 * then again only after a wait ended and the program stalled anew. Waits
 * count from the moment a thread goes to sleep; a program whose threads all
 * wait for work that does not come (an idle pool) stalls too. A background
 * thread checks a tenth of `seconds` apart (10 ms to 250 ms). Calling it
 * again re-arms it with the new time. WEFT_EINVAL unless 0 < seconds <= 1e9.
 * A forked child, or one the forkserver starts, is not watched unless it arms
 * the watchdog itself. */
WEFT_API int weft_dump_later(double seconds);

/* Disarms the watchdog (faulthandler.cancel_dump_traceback_later). */
WEFT_API int weft_dump_cancel(void);

#ifdef __cplusplus
}
#endif

#endif
