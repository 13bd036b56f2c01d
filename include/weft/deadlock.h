/* SPDX-License-Identifier: MIT */
/* weft/deadlock.h — deadlock detection for Lock and RLock (and so for the
 * lock of a Condition).
 *
 * weft records the order in which locks are taken while others are held.
 * The first time a blocking acquire would close a cycle in that order (A
 * taken while holding B, after B was taken while holding A -- in any thread,
 * at any time) it reports a possible deadlock, before blocking. And before a
 * thread blocks for good on a lock, weft follows owner -> the lock that owner
 * waits for -> its owner ...; if the chain comes back to the caller, the
 * deadlock is real and happening now (this includes re-acquiring a Lock the
 * caller already holds). Acquires with a timeout or without waiting add no
 * order and take no part in a live cycle within a process: they end by
 * themselves. Orders between Locks in shared memory count across the
 * processes of the tree, and chains through such Locks held by other
 * processes are followed too (docs/deadlock.md): the report names each
 * process, and of a live cycle one process is refused.
 *
 * Modes, set here or by the environment variable WEFT_DEADLOCK at start-up:
 *   off    no detection, no cost
 *   warn   print the report to stderr (or give it to the hook) and go on
 *   abort  print the report and abort() (a core for the debugger)
 *   error  as warn, and a blocking acquire that would close a live cycle
 *          returns WEFT_EDEADLK instead of blocking, so the program can back
 *          off
 * The default is warn: see docs/deadlock.md for its cost.
 */
#ifndef WEFT_DEADLOCK_H
#define WEFT_DEADLOCK_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum weft_deadlock_mode {
  WEFT_DEADLOCK_OFF,
  WEFT_DEADLOCK_WARN,
  WEFT_DEADLOCK_ABORT,
  WEFT_DEADLOCK_ERROR,
} weft_deadlock_mode;

/* Sets the detection mode for the whole process. WEFT_EINVAL for an unknown
 * mode. Turning detection on does not see locks already held. */
WEFT_API int weft_deadlock_set_mode(weft_deadlock_mode mode);

/* Returns the current mode. */
WEFT_API weft_deadlock_mode weft_deadlock_get_mode(void);

/* Receives each report instead of stderr; NULL restores stderr. The report
 * is valid during the call only. The hook runs in the thread that found the
 * deadlock, which may hold locks: it must not take weft locks. */
typedef void (*weft_deadlock_hook)(const char *report, void *arg);
WEFT_API int weft_deadlock_set_hook(weft_deadlock_hook hook, void *arg);

/* The longest cycle a report lists in full; longer ones end with a
 * "... (N more, truncated)" line. */
#define WEFT_DEADLOCK_REPORT_MAX_CHAIN 16

#ifdef __cplusplus
}
#endif

#endif
