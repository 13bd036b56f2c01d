/* SPDX-License-Identifier: MIT */
/* Lock internals shared by the primitives built on it (RLock, Condition,
 * Barrier). These record no error message. */
#ifndef WEFT_LOCK_INTERNAL_H
#define WEFT_LOCK_INTERNAL_H

#include "internal.h"
#include "weft/sync.h"

/* Acquires a Lock: 0, WEFT_EOWNERDEAD, WEFT_ETIMEDOUT or WEFT_EINVAL. */
int weft__lock_acquire(weft_lock *lock, double timeout);

/* The contended part of an acquire, until the deadline, spinning first;
 * track: tell the deadlock detector before sleeping for good. */
int weft__lock_wait(weft_lock *lock, weft__deadline deadline, int spins, bool track);

/* Acquires without a timeout, spinning before it sleeps: for a thread woken
 * from a wait that must take its lock back. 0 or WEFT_EOWNERDEAD. */
int weft__lock_reacquire(weft_lock *lock);

/* Releases a Lock: 0, or WEFT_EPERM if it was not locked. */
int weft__lock_release(weft_lock *lock);

/* The pid of the process holding the lock, 0 if it is free. */
pid_t weft__lock_holder_pid(const weft_lock *lock);

/* The owner token (weft__owner_token) of the thread that holds the lock,
 * 0 if it is free. */
uint32_t weft__lock_owner(const weft_lock *lock);

/* Whether the calling thread acquired the lock (or, in a child, the thread
 * that forked it did, in the parent). */
bool weft__lock_held_by_caller(const weft_lock *lock);

/* Acquires an RLock adding `levels` levels (a Condition restoring its count
 * passes the saved count, WEFT__TSAN_RECURSIVE_LOCK and spin). */
int weft__rlock_acquire_levels(weft_rlock *rlock, double timeout, uint32_t levels, unsigned flags,
                               bool spin, const char *site);

/* Releases one level, or all of them (returning how many) when all is set.
 * The caller has checked that it owns the lock. */
uint32_t weft__rlock_release_levels(weft_rlock *rlock, bool all);

#endif
