/* SPDX-License-Identifier: MIT */
/* Deadlock detector hooks, called by the lock code (lock.c, condition.c).
 * All of them are cheap no-ops when detection is off; the callers test
 * weft__dd_on first so that the off case costs one load. */
#ifndef WEFT_DEADLOCK_INTERNAL_H
#define WEFT_DEADLOCK_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include "weft/sync.h"

/* Non-zero while detection is on (any mode but off). */
extern int weft__dd_on;

/* Before an acquire of a lock the caller does not already own (an RLock's
 * re-entry is not one). blocking: waits forever. Records the lock order,
 * reports an inversion, and sees a re-acquire of a Lock the caller holds.
 * Returns 0, or WEFT_EDEADLK in error mode for a deadlock that is certain. */
int weft__dd_before_acquire(weft_lock *lock, const char *site, bool blocking);

/* After the lock was acquired: it is now held by the caller. */
void weft__dd_acquired(weft_lock *lock, const char *site, bool blocking);

/* Before the lock is released (by any thread). */
void weft__dd_released(weft_lock *lock);

/* Before a thread sleeps on a lock with no timeout: follows the chain of
 * owners and the locks they wait for. Returns 0, or WEFT_EDEADLK in error
 * mode if the chain comes back to the caller. */
int weft__dd_before_block(weft_lock *lock);

/* Before a thread sleeps on a primitive that another process (other) is to
 * act on: reports once if the primitive lives in memory private to this
 * process, where no other process can reach it. what names it for the
 * report ("Barrier \"b\""), make is the call that would have shared it. */
void weft__dd_private_copy_check(const void *obj, const char *what, const char *make,
                                 pid_t other);

/* After such a sleep ended. */
void weft__dd_after_block(void);

/* The lock's life ended; its order edges go with it. */
void weft__dd_forget(weft_lock *lock);

/* Reads WEFT_DEADLOCK; from the library constructor. */
void weft__dd_init(void);

/* Fork handlers; in the child the parent's lock orders are dropped. */
void weft__dd_before_fork(void);
void weft__dd_after_fork_parent(void);
void weft__dd_after_fork_child(void);

#endif
