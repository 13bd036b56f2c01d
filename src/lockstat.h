/* SPDX-License-Identifier: MIT */
/* The lock contention profile's hooks, called by the lock code (lock.c,
 * condition.c) only while it is on: the callers test weft__lock_hooks, one
 * word for the deadlock detector and this, so that with both off an
 * acquire or a release pays one load and no more.
 *
 * Each thread keeps its own record per lock, written by that thread alone
 * (no lock, no atomic read-modify-write on the hot path); the figures are
 * added up when printed (lockstat.c). */
#ifndef WEFT_LOCKSTAT_INTERNAL_H
#define WEFT_LOCKSTAT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"
#include "os/os.h"
#include "weft/sync.h"

/* Times are kept in ticks of the cheapest clock (the TSC on x86-64, read in
 * about 13 ns on the VM the bench runs on, where clock_gettime takes 35)
 * and turned into nanoseconds when printed. */
static inline uint64_t weft__ls_ticks(void) {
#if defined(__x86_64__)
  return __builtin_ia32_rdtsc();
#else
  return (uint64_t)weft__os_now_ns();
#endif
}

/* Call sites kept per record: those a thread waits at most (by total wait)
 * stay when a new one comes and the list is full. */
#define WEFT__LS_SITES 8

struct weft__ls_site {
  const char *site; /* "file.c:line" of the acquire; NULL: re-acquired after a Condition wait */
  uint64_t n, wait, wait_max;
};

/* One thread's figures for one lock. The counters are written by the
 * thread only, read by a printer in another thread: relaxed atomics. */
struct weft__ls_rec {
  const weft_lock *lock; /* key, with `key`: the lock's address ... */
  const char *key;       /* ... and its site pointer, so a new lock at a freed one's address is new */
  /* Timing holds: the acquisition whose hold is timed next (next to acq,
   * so that the hot path reads one cache line of the record), and the one
   * being timed, when it began (since 0: none) and what it counts for.
   * Only one store, the count's, is added to an acquire that is not timed:
   * a store just before the next locked instruction (the release's) makes
   * it slower. */
  uint64_t acq, next;
  /* hold: the total hold, estimated: each timed hold counts for the
   * acquisitions up to the next timed one (1 while every hold is timed). */
  uint64_t contended, wait, wait_max, hold, hold_max, holds;
  uint64_t since_acq, since, since_weight;
  uint32_t rlock; /* 1: an RLock (or a Condition's own) */
  pid_t pid;          /* the process it belongs to; 0: the lock lives in shared memory */
  struct weft__ls_site sites[WEFT__LS_SITES];
  char name[96];      /* as the deadlock reports name it, copied: the lock may be gone when printed */
  char init[96];      /* where it was initialised, "" if unknown */
} __attribute__((aligned(64)));

/* A thread's state, off the hot path. */
struct weft__ls_chunk;
struct weft__ls_thread {
  struct weft__ls_rec **index;   /* open addressing by lock address; the thread's alone */
  uint32_t mask, count;
  struct weft__ls_chunk *chunks; /* the records, newest chunk first, read by printers */
  struct weft__ls_thread *next;
  uint64_t rand;
};

/* The calling thread's state, NULL before its first counted acquire. */
extern _Thread_local struct weft__ls_thread *weft__ls_self
    __attribute__((tls_model("initial-exec")));

/* The hot path reads weft__hot (internal.h): the record used last (a loop
 * around one lock finds it at once). A release reads nothing of the
 * profile: an acquisition whose hold is timed marks the lock's word
 * (weft__lock_mark_timed), which sends its release to the slow path. */

/* The record of a lock for the calling thread, made the first time
 * (NULL if memory ran out). */
struct weft__ls_rec *weft__ls_rec_slow(const weft_lock *l, bool rlock);

static inline bool weft__ls_is(const struct weft__ls_rec *r, const weft_lock *l) {
  return r != NULL && r->lock == l && r->key == __atomic_load_n(&l->site, __ATOMIC_RELAXED);
}

static inline struct weft__ls_rec *weft__ls_rec(const weft_lock *l, bool rlock) {
  struct weft__ls_rec *r = weft__hot.ls_last;
  if (__builtin_expect(weft__ls_is(r, l), 1)) return r;
  return weft__ls_rec_slow(l, rlock);
}

/* The out-of-line parts (lockstat.c): a contended acquisition's wait, and
 * the start of a timed hold (which picks the next to time). */
void weft__ls_waited(struct weft__ls_rec *r, uint64_t waited_since, const char *site);
void weft__ls_time(weft_lock *l, struct weft__ls_rec *r, uint64_t n);

#define WEFT__LS_GET(f) __atomic_load_n(&(f), __ATOMIC_RELAXED)
#define WEFT__LS_SET(f, v) __atomic_store_n(&(f), (v), __ATOMIC_RELAXED)
#define WEFT__LS_ADD(f, v) WEFT__LS_SET(f, WEFT__LS_GET(f) + (v))

/* An acquisition (the caller now holds l). waited_since: the ticks when
 * it found the lock taken and began to wait, 0 if it did not. */
static inline void weft__ls_acquired(weft_lock *l, bool rlock, uint64_t waited_since,
                                     const char *site) {
  struct weft__ls_rec *r = weft__ls_rec(l, rlock);
  if (__builtin_expect(r == NULL, 0)) return;
  uint64_t n = WEFT__LS_GET(r->acq) + 1;
  WEFT__LS_SET(r->acq, n);
  if (__builtin_expect(waited_since != 0, 0)) weft__ls_waited(r, waited_since, site);
  if (__builtin_expect(n == WEFT__LS_GET(r->next), 0)) weft__ls_time(l, r, n);
}

/* Before a release of l whose word says a hold of it is being timed, by
 * the releasing thread (which may not be the one that took it), while l's
 * owner is still set. */
void weft__ls_timed_release(const weft_lock *l);

/* Reads WEFT_LOCKSTAT; from the library constructor. */
void weft__ls_init(void);

/* At the end of the exit rules: a child hands its figures to the process
 * that turned the profile on; that process prints the tree's. */
void weft__ls_exit(void);

/* Fork handlers: the child starts with no figures of its own. */
void weft__ls_before_fork(void);
void weft__ls_after_fork_parent(void);
void weft__ls_after_fork_child(void);

#endif
