/* SPDX-License-Identifier: MIT */
/* Lock internals shared by the primitives built on it (RLock, Condition,
 * Barrier). These record no error message. */
#ifndef WEFT_LOCK_INTERNAL_H
#define WEFT_LOCK_INTERNAL_H

#include "internal.h"
#include "weft/sync.h"

/* The word of a destroyed Lock: both flags and a pid above any the kernel
 * gives (PID_MAX_LIMIT is 2^22), so every fast path's compare-and-swap
 * fails on it and only the slow paths need to recognise it. Init clears it. */
#define WEFT__LOCK_DESTROYED 0xffffffffu

static inline bool weft__lock_destroyed(const weft_lock *lock) {
  return __atomic_load_n(&lock->word, __ATOMIC_RELAXED) == WEFT__LOCK_DESTROYED;
}

/* Ends a Lock's life: 0, WEFT_EBUSY if it is locked or has waiters,
 * WEFT_ECLOSED if it was already destroyed. Records no message. */
int weft__lock_destroy(weft_lock *lock);

/* This process's program layout: a number drawn at start-up by every fresh
 * image of the program (and kept by a fork, which shares the layout). A
 * lock or semaphore records it with the name and site it is given, whose
 * pointers mean something only in processes of that layout. */
extern uint32_t weft__layout;

/* text (a name or site of an object that recorded `layout`) if it can be
 * read in this process, else NULL: set in another program image (a parent
 * of a spawned child) and not in shared memory. */
const char *weft__layout_text(uint32_t layout, const char *text);

/* The tools that watch every acquire and release: the deadlock detector
 * and the lock contention profile. The lock code tests this one word, so
 * that with both off an acquire or a release pays one load. */
#define WEFT__HOOK_DD 1
#define WEFT__HOOK_LS 2
extern int weft__lock_hooks;
void weft__lock_hooks_set(int hook, bool on);

/* Before a Lock taken by weft__lock_reacquire or an RLock's last level is
 * released: tells the tools that are on. */
void weft__lock_release_hooks(weft_lock *lock);

/* The contention profile times the hold of the lock, which the caller
 * holds: its release is to tell the profile (weft__ls_timed_release). */
void weft__lock_mark_timed(weft_lock *lock);

/* Acquires a Lock: 0, WEFT_EOWNERDEAD, WEFT_ETIMEDOUT, WEFT_EINVAL, or
 * WEFT_ECLOSED for a destroyed one. */
int weft__lock_acquire(weft_lock *lock, double timeout);

/* The contended part of an acquire, until the deadline, spinning first;
 * track: tell the deadlock detector before sleeping for good; site: the
 * call's, for dumps (or NULL). */
int weft__lock_wait(weft_lock *lock, weft__deadline deadline, int spins, bool track,
                    const char *site);

/* Acquires without a timeout, spinning before it sleeps: for a thread woken
 * from a wait that must take its lock back (an RLock's, with rlock set).
 * 0 or WEFT_EOWNERDEAD. */
int weft__lock_reacquire(weft_lock *lock, bool rlock);

/* Releases a Lock: 0, WEFT_EPERM if it was not locked, WEFT_ECLOSED if
 * it was destroyed. */
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
