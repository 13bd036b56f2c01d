/* SPDX-License-Identifier: MIT */
/* Deadlock detector hooks, called by the lock code (lock.c, condition.c).
 * All of them are cheap no-ops when detection is off; the callers test
 * weft__dd_on first so that the off case costs one load. */
#ifndef WEFT_DEADLOCK_INTERNAL_H
#define WEFT_DEADLOCK_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include "internal.h"
#include "lockgraph.h"
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
  const char *waiting_site; /* where it called the acquire, set before waiting_for */
  /* Locks this thread took that other threads released: its entries for
   * them are dropped unread, as the lock may be destroyed and freed by now. */
  weft_lock **foreign;
  int nforeign, capforeign;
  /* New orders of a single held lock that agree with the graph's order,
   * logged without the mutex (deadlock.c): a ring the graph takes them in
   * from, tail written by the thread, head under the mutex. */
  struct weft__dd_logged *log;
  uint32_t log_head, log_tail;
  uint32_t orders_added; /* under the mutex, until the log is made */
};

/* The caller's record, made the first time. */
struct weft__dd_thread *weft__dd_me(void);

/* The detector's mutex, which guards the graph, the thread list and the
 * set of reports already given. */
void weft__dd_lock(void);
void weft__dd_unlock(void);

/* The caller's record, or NULL before its first tracked acquire; kept in
 * the lock fast paths' thread-local block. */
#define weft__dd_self (weft__hot.dd_self)

/* The out-of-line parts of the hooks below. */
void weft__dd_check_order(struct weft__dd_thread *t, weft_lock *lock, const char *site);
void weft__dd_acquired_slow(weft_lock *lock, const char *site, bool blocking);
void weft__dd_released_slow(weft_lock *lock);

/* The hooks every tracked acquire and release runs are inline: with nothing
 * held, or only orders the thread has seen before, detection costs a few
 * loads and stores and no lock. */

/* Before an acquire of a lock the caller does not already own (an RLock's
 * re-entry is not one). blocking: waits forever. Records the lock order,
 * reports an inversion, and sees a re-acquire of a Lock the caller holds.
 * Returns 0 (WEFT_EDEADLK is for the live check, before the sleep). */
/* What a lock's dd_prev holds while "the lock whose serial is from -> it"
 * is an order the graph has, in this process and epoch: a nested acquire
 * of a known order then reads only the two locks' own memory, which costs
 * the same however many locks and orders the program has. */
static inline uint64_t weft__dd_prev(uint32_t from, uint32_t epoch) {
  return (uint64_t)(epoch ^ (uint32_t)weft__pid << 10) << 32 | from;
}

/* Whether the thread holds one lock and "it -> lock" is a known order:
 * no call. */
static inline bool weft__dd_known_single(const struct weft__dd_thread *t, const weft_lock *lock) {
  if (t->depth != 1 || __atomic_load_n(&t->has_foreign, __ATOMIC_RELAXED)) return false;
  uint32_t from = __atomic_load_n(&t->held[0].lock->dd_node, __ATOMIC_RELAXED);
  return from != 0 && __atomic_load_n(&lock->dd_prev, __ATOMIC_RELAXED) ==
                          weft__dd_prev(from, __atomic_load_n(&weft__lg_epoch, __ATOMIC_RELAXED));
}

static inline int weft__dd_before_acquire(weft_lock *lock, const char *site, bool blocking) {
  if (!blocking) return 0;
  struct weft__dd_thread *t = weft__dd_self;
  if (__builtin_expect(t == NULL, 0)) t = weft__dd_me();
  if (t->depth > 0 && !weft__dd_known_single(t, lock)) weft__dd_check_order(t, lock, site);
  /* A re-acquire of a Lock this thread holds is found by the live check
   * that runs before the thread sleeps: the owner chain ends at itself. */
  return 0;
}

/* The slot of an order in a thread's cache (deadlock.c). */
static inline uint32_t weft__dd_cache_slot(uint64_t key, uint32_t mask) {
  return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 40) & mask;
}

/* Before the compare-and-swap of a nested acquire: starts loading the
 * cache slot of the order "last held -> lock", which in a cache too big
 * for the CPU's own (from 32 Ki entries, 256 KiB) is a miss of its own, so
 * that it overlaps the lock's. A smaller one is not worth the ~2 ns. Loads
 * only: a store here would slow the compare-and-swap. */
static inline void weft__dd_prefetch(const weft_lock *lock) {
  const struct weft__dd_thread *t = weft__dd_self;
  if (t == NULL || t->depth == 0 || t->cache_mask < (1u << 15) - 1 || t->cache == NULL ||
      __atomic_load_n(&t->has_foreign, __ATOMIC_RELAXED)) /* an entry may be freed memory */
    return;
  if (weft__dd_known_single(t, lock)) return; /* the cache will not be read */
  uint64_t key = (uint64_t)__atomic_load_n(&t->held[t->depth - 1].lock->dd_node,
                                           __ATOMIC_RELAXED) << 32 |
                 __atomic_load_n(&lock->dd_node, __ATOMIC_RELAXED);
  __builtin_prefetch(&t->cache[weft__dd_cache_slot(key, t->cache_mask)]);
}

/* Before a blocking acquire of a lock found taken: where it was called,
 * for a live report if it must wait. (Not stored on every acquire: a store
 * just before the acquire's compare-and-swap doubled its cost.) */
static inline void weft__dd_pending(const char *site) {
  if (weft__dd_self != NULL) weft__dd_self->pending_site = site;
}

/* After the lock was acquired: it is now held by the caller. */
static inline void weft__dd_acquired(weft_lock *lock, const char *site, bool blocking) {
  struct weft__dd_thread *t = weft__dd_self;
  if (__builtin_expect(t != NULL && t->depth < WEFT__DD_MAX_HELD, 1)) {
    int i = 0;
    while (i < t->depth && t->held[i].lock != lock) i++;
    if (__builtin_expect(i == t->depth, 1)) { /* no stale entry of the same lock */
      t->held[t->depth++] = (struct weft__dd_held){lock, site, blocking};
      return;
    }
  }
  weft__dd_acquired_slow(lock, site, blocking);
}

/* A blocking acquire of a free lock, in the cases that need no call:
 * nothing held, or the known single nested order. Returns false, having
 * done nothing, otherwise. */
static inline bool weft__dd_acquired_known(struct weft__dd_thread *t, weft_lock *lock,
                                           const char *site) {
  if (t->depth == 0 || (weft__dd_known_single(t, lock) && t->held[0].lock != lock)) {
    t->held[t->depth++] = (struct weft__dd_held){lock, site, true};
    return true;
  }
  return false;
}

/* Before the lock is released (by any thread). */
static inline void weft__dd_released(weft_lock *lock) {
  struct weft__dd_thread *t = weft__dd_self;
  if (__builtin_expect(t != NULL && t->depth > 0 && t->held[t->depth - 1].lock == lock, 1)) {
    t->depth--; /* the usual: last in, first out */
    return;
  }
  weft__dd_released_slow(lock);
}

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

/* Whether thread tid of this process sleeps on a lock with no timeout:
 * then the lock, the thread's name and where it called the acquire. For
 * the chains followed across processes (xwait.c). */
bool weft__dd_thread_awaits(pid_t tid, weft_lock **lock, char *name, size_t name_size,
                            char *site, size_t site_size);

/* Whether detection's error mode is on. */
bool weft__dd_error_mode(void);

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
