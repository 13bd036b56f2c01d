/* SPDX-License-Identifier: MIT */
/* A wait channel: where threads (or processes, when it lives in shared
 * memory) sleep until another one signals a change to some state.
 *
 * One 64-bit word holds a generation (low half, the futex word) and the
 * number of sleepers registered in it (high half). No lock is shared
 * between sleeper and signaller; they meet through sequentially consistent
 * atomics (Dekker's pattern): a sleeper registers and then looks at the
 * state once more; a signaller changes the state and then reads the word.
 * One of them always sees the other.
 *
 * A broadcast that finds sleepers starts a new generation with none and
 * wakes them all, so each sleep costs the signalling side one system call
 * at most: while the woken ones get going, further signals find nobody
 * registered and cost a load. The woken ones look again and the losers
 * register anew. Waking all is what a channel in shared memory needs: a
 * process woken and then killed before it acts would take a single
 * wake-up with it.
 *
 * Threads of one process, where a woken sleeper cannot vanish, may be
 * signalled one at a time instead (weft__chan_signal_one): the signal
 * moves the generation on, takes one sleeper off the count and wakes one.
 * Every sleeper registered before it is then either the one woken, or
 * finds the generation moved when it calls futex_wait and looks again, or
 * stays asleep and counted -- the count never falls below the sleepers, so
 * no wake-up is lost. It may rise above them (a sleeper leaving after a
 * signal it did not take does not count itself off); each such extra is
 * spent by one later signal that wakes nobody. Plain fields, no pointers:
 * it lives in queues' shared state. */
#ifndef WEFT_CHAN_H
#define WEFT_CHAN_H

#include "internal.h"
#include "os/os.h"

typedef struct weft__chan {
  _Alignas(8) uint64_t word; /* sleepers << 32 | generation */
} weft__chan;

#define WEFT__CHAN_SLEEPER ((uint64_t)1 << 32)

/* The futex half of the word: the generation. */
static inline uint32_t *weft__chan_futex(weft__chan *c) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return (uint32_t *)&c->word;
#else
  return (uint32_t *)&c->word + 1;
#endif
}

/* Registers the caller; returns its generation, for sleep and leave. The
 * caller must look at the state again before sleeping. */
static inline uint32_t weft__chan_enter(weft__chan *c) {
  return (uint32_t)__atomic_add_fetch(&c->word, WEFT__CHAN_SLEEPER, __ATOMIC_SEQ_CST);
}

/* Sleeps until signalled or the deadline: -ETIMEDOUT on timeout, anything
 * else means "look again". */
static inline int weft__chan_sleep(weft__chan *c, uint32_t gen, weft__deadline deadline) {
  return weft__os_futex_wait(weft__chan_futex(c), gen, deadline);
}

/* Unregisters, unless a signal already did (it moved the generation on). */
static inline void weft__chan_leave(weft__chan *c, uint32_t gen) {
  uint64_t w = __atomic_load_n(&c->word, __ATOMIC_SEQ_CST);
  while ((uint32_t)w == gen &&
         !__atomic_compare_exchange_n(&c->word, &w, w - WEFT__CHAN_SLEEPER, false,
                                      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
}

/* The sleepers registered (some may be about to leave). */
static inline uint32_t weft__chan_sleepers(weft__chan *c) {
  return (uint32_t)(__atomic_load_n(&c->word, __ATOMIC_SEQ_CST) >> 32);
}

static inline bool weft__chan_has_sleepers(weft__chan *c) { return weft__chan_sleepers(c) != 0; }

/* After a sequentially consistent change of the state: wakes one sleeper
 * if there are any. Threads of one process only (see above). True when
 * the kernel woke one; false may also mean a sleeper that had not reached
 * futex_wait yet will find the generation moved and look again. */
static inline bool weft__chan_signal_one(weft__chan *c) {
  uint64_t w = __atomic_load_n(&c->word, __ATOMIC_SEQ_CST);
  while (w >> 32 != 0) {
    uint64_t next = (w - WEFT__CHAN_SLEEPER) >> 32 << 32 | (uint32_t)((uint32_t)w + 1);
    if (__atomic_compare_exchange_n(&c->word, &w, next, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
      return weft__os_futex_wake(weft__chan_futex(c), 1) > 0;
  }
  return false;
}

/* After a sequentially consistent change of the state: wakes every sleeper
 * if there are any. */
static inline void weft__chan_signal(weft__chan *c) {
  uint64_t w = __atomic_load_n(&c->word, __ATOMIC_SEQ_CST);
  while (w >> 32 != 0) {
    uint64_t next = (uint64_t)(uint32_t)((uint32_t)w + 1); /* no sleepers, next generation */
    if (__atomic_compare_exchange_n(&c->word, &w, next, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST)) {
      weft__os_futex_wake(weft__chan_futex(c), INT32_MAX);
      return;
    }
  }
}

/* Spin budgets: how many rounds a waiter watches the state before it
 * sleeps on a channel. A spin that ended in sleeping anyway halves the
 * next one, a spin that paid off doubles it, so threads (or processes)
 * sharing one CPU soon stop spinning at each other. Set on make bench's
 * queue_threads and thread_start_join rows, on a 2-core VM. */
#define WEFT__SPIN_MAX 1000
#define WEFT__SPIN_MIN 16

static inline void weft__spin_adapt(uint32_t *budget, uint32_t spins, bool paid_off) {
  if (paid_off && spins < WEFT__SPIN_MAX) __atomic_store_n(budget, spins * 2, __ATOMIC_RELAXED);
  if (!paid_off && spins > WEFT__SPIN_MIN) __atomic_store_n(budget, spins / 2, __ATOMIC_RELAXED);
}

#endif
