/* SPDX-License-Identifier: MIT */
/* Deadlock detector hooks, called by the lock code (lock.c, condition.c).
 * All of them are cheap no-ops when detection is off; the callers test
 * weft__dd_on first so that the off case costs one load. */
#ifndef WEFT_DEADLOCK_INTERNAL_H
#define WEFT_DEADLOCK_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include "weft/common.h"
#include "weft/sync.h"

/* Non-zero while detection is on (any mode but off). */
extern int weft__dd_on;

/* ---- the per-thread record (deadlock.c), which the reports read ---- */

#define WEFT__DD_MAX_HELD 64

struct weft__dd_held {
  weft_lock *lock;
  const char *site;
  bool blocking; /* taken by a blocking acquire (a trylock's is still a "from") */
};

struct weft__dd_thread {
  int depth;
  int has_foreign; /* read without the mutex: a cheap test before taking it */
  const char *pending_site; /* where the acquire now under way was called */
  /* Orders this thread knows the graph has, as (serial of held << 32 |
   * serial of taken), valid for cache_epoch: an open-addressing set that
   * grows with the orders the thread uses, up to a bound. */
  uint64_t *cache;
  uint32_t cache_mask, cache_count, cache_epoch;
  struct weft__dd_held held[WEFT__DD_MAX_HELD];
  struct weft__dd_thread *next;
  pid_t tid;
  uint32_t actor; /* its identity in the graph's edges, made at its first order */
  char name[WEFT_NAME_MAX + 1];
  weft_lock *waiting_for; /* a lock it sleeps on with no timeout */
  /* Locks this thread took that other threads released: its entries for
   * them are dropped unread, as the lock may be destroyed and freed by now. */
  weft_lock **foreign;
  int nforeign, capforeign;
};

/* The caller's record, made the first time. */
struct weft__dd_thread *weft__dd_me(void);

/* The detector's mutex, which guards the graph, the thread list and the
 * set of reports already given. */
void weft__dd_lock(void);
void weft__dd_unlock(void);

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
 * report ("Barrier \"b\""), make is the call that would have shared it.
 * (deadlock_report.c) */
void weft__dd_private_copy_check(const void *obj, const char *what, const char *make,
                                 pid_t other);

/* After such a sleep ended. */
void weft__dd_after_block(void);

/* The lock's life ended; its order edges go with it. Callers may skip it
 * for a lock whose dd_node is 0, which the detector has not seen since it
 * was initialised. */
void weft__dd_forget(weft_lock *lock);

/* Reads WEFT_DEADLOCK; from the library constructor. */
void weft__dd_init(void);

/* Fork handlers; in the child the parent's lock orders are dropped. */
void weft__dd_before_fork(void);
void weft__dd_after_fork_parent(void);
void weft__dd_after_fork_child(void);

#endif
