/* SPDX-License-Identifier: MIT */
/* Waiter sets of the primitives that may be shared between processes.
 *
 * A futex wake-up reaches some sleeper the kernel picks. If that sleeper's
 * process is killed before it runs, the wake-up dies with it, and a sleeper
 * of another process, which the waker meant to serve just as well, sleeps on
 * while the lock is free or the semaphore holds a token. The kernel mends
 * this for robust pthread mutexes (a dying thread's pending robust-list entry
 * wakes the next waiter), but that list belongs to glibc, and it only works
 * for a futex word whose low 30 bits are 0 or the dying thread's id, which a
 * sequence counter is not.
 *
 * So each such primitive keeps one 64-bit word: the number of registered
 * waiters, the pid of their process while they all belong to one, and a
 * MIXED bit once waiters of two processes are registered together. A waker
 * wakes one sleeper while they are all in one process (whose death would take
 * every sleeper with it, so no wake-up can be stranded) and every sleeper
 * when they are not, so the death of any one process leaves a woken sleeper
 * in each of the others. Count, pid and bit change together in one
 * compare-and-swap, so MIXED is set whenever the set spans processes.
 *
 * A process killed while registered leaves its waiters counted. When no
 * other process's waiters are registered, the next registrant from another
 * process sees the recorded process gone and starts the set again; after a
 * MIXED set it cannot tell which counts are dead, and the set stays MIXED
 * (wakers wake every sleeper: slower, never stranded) until it empties. */
#ifndef WEFT_WAITERS_H
#define WEFT_WAITERS_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"
#include "os/os.h"

/* The 64-bit view of a WEFT__WAITER_SET (sync.h), from its `waiters`. */
typedef uint64_t weft__waiter_set __attribute__((may_alias, aligned(8)));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define WEFT__WAITER_SET_OF(obj) ((weft__waiter_set *)&(obj)->waiter_procs_)
#else
#define WEFT__WAITER_SET_OF(obj) ((weft__waiter_set *)&(obj)->waiters)
#endif

#define WEFT__WAITERS_COUNT 0xffffffffull
#define WEFT__WAITERS_PID_SHIFT 32
#define WEFT__WAITERS_PID_MASK 0x3fffffffull
#define WEFT__WAITERS_MIXED (1ull << 63)

static inline uint32_t weft__waiters_count(const weft__waiter_set *set) {
  return (uint32_t)(__atomic_load_n(set, __ATOMIC_SEQ_CST) & WEFT__WAITERS_COUNT);
}

/* How many sleepers a wake-up meant for n of them must reach. */
static inline int weft__waiters_to_wake(const weft__waiter_set *set, int n) {
  return (__atomic_load_n(set, __ATOMIC_SEQ_CST) & WEFT__WAITERS_MIXED) ? INT32_MAX : n;
}

/* Registers the calling thread (sequentially consistent, like the counter
 * it replaces). */
static inline void weft__waiters_enter(weft__waiter_set *set) {
  uint64_t me = (uint64_t)(uint32_t)weft__pid << WEFT__WAITERS_PID_SHIFT;
  uint64_t w = __atomic_load_n(set, __ATOMIC_SEQ_CST);
  uint64_t checked = 0; /* the other process found alive, checked once */
  for (;;) {
    uint64_t pid = w & (WEFT__WAITERS_PID_MASK << WEFT__WAITERS_PID_SHIFT);
    uint64_t next;
    if ((w & WEFT__WAITERS_COUNT) == 0) {
      next = me | 1;
    } else if (pid == me || (w & WEFT__WAITERS_MIXED)) {
      next = w + 1;
    } else if (pid != checked &&
               weft__os_process_gone((pid_t)(pid >> WEFT__WAITERS_PID_SHIFT))) {
      next = me | 1; /* every registered waiter died with its process */
    } else {
      checked = pid;
      next = (w + 1) | WEFT__WAITERS_MIXED;
    }
    if (__atomic_compare_exchange_n(set, &w, next, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return;
  }
}

/* Unregisters the calling thread; returns whether it was the last. */
static inline bool weft__waiters_leave(weft__waiter_set *set) {
  uint64_t w = __atomic_load_n(set, __ATOMIC_SEQ_CST);
  for (;;) {
    bool last = (w & WEFT__WAITERS_COUNT) <= 1;
    uint64_t next = last ? 0 : w - 1;
    if (__atomic_compare_exchange_n(set, &w, next, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return last;
  }
}

#endif
