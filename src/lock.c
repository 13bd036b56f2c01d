/* SPDX-License-Identifier: MIT */
/* Lock and RLock over a futex.
 *
 * The Lock's word holds the pid of the holding process (0 when free) and
 * three flags (WOKEN and STARVING below, TIMED for the contention
 * profile); a separate counter says how many threads are registered to
 * sleep on it. The pid costs nothing on the fast path and lets a waiter see
 * that a holder *process* died: the kernel's robust-futex list would do
 * that, but glibc owns it (docs/design.md, Traps), and it works per thread
 * while a Python Lock may be released by any thread.
 *
 * WOKEN (as in Go's sync.Mutex) means "a sleeper was woken and has not run
 * yet": while it is set a release makes no system call. Without it, two
 * threads taking turns would pay a futex_wake on nearly every release; with
 * it the running thread keeps the lock for long runs while the other wakes,
 * as the tutorial's §3.6 loop wants. Unregistered threads (the fast path and the
 * spinners) leave WOKEN alone; every registered waiter clears it whenever it
 * acts -- takes the lock, goes back to sleep or naps (below) -- so a WOKEN
 * whose wake-up reached nobody asleep cannot outlive the waiters that could
 * act on it.
 *
 * STARVING: a registered waiter that has waited over STARVE_NS sets it, and
 * then only registered waiters may take the lock; spinners and the fast path
 * queue up instead of barging in. The first waiter that gets the lock after
 * a short wait, or as the last one, switches back.
 *
 * Sleepers sleep on `seq`, which only a wake-up changes, not on the word,
 * which a thread running a loop around the lock changes every few
 * nanoseconds: a futex_wait on the word failed at once nearly every time,
 * and the waiter, awake, kept taking the lock from the running thread
 * (300,000 hand-overs in the tutorial's §3.6 loop on a VM whose cores are far
 * apart, 95 ns per step where glibc took 25).
 *
 * A woken waiter that finds the lock taken again by the thread that held
 * it when it went to sleep naps instead of sleeping: for 50 us, doubling,
 * until it finds the lock free, or STARVE_NS has passed and it asks for
 * the lock as above. While it naps it is not counted in `waiters` and
 * clears WOKEN (handing the wake-up on, as a timed-out waiter does), so the
 * running thread's acquires and releases take their fast paths and make no
 * system call. Sleeping at once would have it woken by the very next
 * release, before it even reached the kernel, again and again; keeping
 * WOKEN set instead sent every acquire and release of the running thread
 * down its slow path (21 ns per step of the tutorial's §3.6 loop, 17.5 ns with
 * the nap).
 *
 * Releasing reads `waiters` after clearing the pid and a sleeper reads
 * `seq` and the word after counting itself, all sequentially consistent,
 * so either the sleeper sees the lock free or the release's wake-up
 * changes `seq` after the sleeper read it, and no wake-up is lost.
 *
 * Nor is one lost to a sleeper killed between its wake-up and its next
 * step: while the sleepers belong to several processes a release wakes
 * them all (waiters.h), so one of each surviving process acts -- takes
 * the lock, or clears WOKEN and sleeps again so the next release wakes.
 *
 * ThreadSanitizer: a Lock is a binary semaphore (any thread may release it),
 * which TSan's mutex annotations cannot express -- they report a release by
 * another thread as misuse. Its acquire/release atomics already give TSan
 * the happens-before edges, so it is left unannotated. An RLock has a true
 * owner and is annotated with the __tsan_mutex_* interface.
 */
#define _GNU_SOURCE
#include <errno.h>

#include "deadlock.h"
#include "dump.h"
#include "internal.h"
#include "lock.h"
#include "lockstat.h"
#include "os/os.h"
#include "region.h"
#include "tsan.h"
#include "waiters.h"
#include "xwait.h"
#include "weft/sync.h"

#define STARVING 0x80000000u
#define WOKEN 0x40000000u
/* The lock contention profile is timing this hold: its release takes the
 * slow path, which tells the profile, so that every other release reads
 * nothing but the word. Set only while the lock is held, cleared by the
 * release with the pid. */
#define TIMED 0x20000000u
#define PID_MASK 0x1fffffffu /* pids stay below 2^22 (PID_MAX_LIMIT) */
/* How long a waiter waits before it stops others from barging in. */
#define STARVE_NS (1000 * 1000)
/* How often a waiter checks that a holder in another process is alive. */
#define OWNER_CHECK_NS (50 * 1000 * 1000)
/* Spins before sleeping, for a thread that was just woken from a condition
 * and re-takes its lock: the notifier usually releases it within a few
 * hundred nanoseconds. A plain acquire does not spin: measured on the tutorial's
 * §3.6 loop, spinning makes two threads trade the lock on every iteration
 * (a cache-line transfer each, ~50 ns), while sleeping lets one run on. */
#define REACQUIRE_SPINS 100
/* A woken waiter's first nap; shorter would be rounded up by the kernel's
 * default timer slack anyway. Each nap doubles, until STARVE_NS. */
#define FIRST_NAP_NS (50 * 1000)

int weft_lock_init_opts(weft_lock *l, const char *expr, const char *site,
                        const weft_lock_options *o) {
  static const weft_lock_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  if (l == NULL) return weft__error(WEFT_EINVAL, "weft_lock_init: lock is NULL");
  /* Memory reused for a new lock: no old orders. A lock the detector never
   * saw (dd_node 0) has none to drop. */
  if (weft__dd_on && __atomic_load_n(&l->dd_node, __ATOMIC_RELAXED) != 0) weft__dd_forget(l);
  *l = (weft_lock)WEFT_LOCK_INIT;
  l->name = o->name != NULL ? o->name : expr;
  l->site = site;
  l->layout = weft__layout;
  return 0;
}

static bool cas(uint32_t *word, uint32_t expected, uint32_t value) {
  return __atomic_compare_exchange_n(word, &expected, value, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_RELAXED);
}

static inline void set_owner_to(weft_lock *l, uint32_t t) {
  __atomic_store_n(&l->owner, t, __ATOMIC_RELAXED);
  __atomic_store_n(&l->last, t, __ATOMIC_RELAXED);
}

static void set_owner(weft_lock *l) { set_owner_to(l, weft__owner_token()); }

static uint32_t waiters(weft_lock *l) { return weft__waiters_count(WEFT__WAITER_SET_OF(l)); }

/* Wakes one sleeper if some are registered, the lock is free and no
 * wake-up is already on its way. A holder that took the lock meanwhile
 * wakes one when it releases. */
static void wake_one(weft_lock *l) {
  uint32_t v = __atomic_load_n(&l->word, __ATOMIC_SEQ_CST);
  while ((v & (PID_MASK | WOKEN)) == 0 && waiters(l) != 0) {
    if (__atomic_compare_exchange_n(&l->word, &v, v | WOKEN, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED)) {
      __atomic_add_fetch(&l->seq, 1, __ATOMIC_SEQ_CST);
      weft__os_futex_wake(&l->seq, weft__waiters_to_wake(WEFT__WAITER_SET_OF(l), 1));
      return;
    }
  }
}

/* A registered waiter leaving on timeout may have been the woken one, or the
 * last one of a starving lock: it hands the wake-up on and lets newcomers
 * in again, or the other sleepers could wait for a wake that never comes. */
static void leave(weft_lock *l) {
  bool last = weft__waiters_leave(WEFT__WAITER_SET_OF(l));
  uint32_t v = __atomic_load_n(&l->word, __ATOMIC_SEQ_CST);
  uint32_t clear = WOKEN | (last ? STARVING : 0);
  while ((v & clear) && !__atomic_compare_exchange_n(&l->word, &v, v & ~clear, false,
                                                     __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  wake_one(l);
}

/* The word a waiter takes the lock with (next: the lock's word with the
 * waiter as holder): the starving flag goes with the wait of the waiter
 * that takes it, unless others still wait and it was not starving itself. */
static uint32_t taken_word(weft_lock *l, uint32_t next, bool starving) {
  if ((next & STARVING) && (!starving || waiters(l) == 1)) next &= ~STARVING;
  return next;
}

/* The contended path. Returns 0, WEFT_EOWNERDEAD, WEFT_ETIMEDOUT or (with
 * track, in the detector's error mode) WEFT_EDEADLK; records no error
 * message (callers word it for their own type). *checked tells whether the
 * deadlock detector was told that this thread waits, *recorded whether the
 * dump's record was (only once it is about to sleep or nap), *xchecked
 * whether the wait table was asked (it may hold the wait until
 * weft__xw_after). */
static int wait_loop(weft_lock *l, weft__deadline deadline, int spins, bool track,
                     const char *site, bool *checked, bool *recorded, bool *xchecked) {
  uint32_t me = (uint32_t)weft__pid;
  for (int i = 0; i < spins; i++) {
    uint32_t v = __atomic_load_n(&l->word, __ATOMIC_RELAXED);
    if (v & STARVING) break;
    if ((v & PID_MASK) == 0 && cas(&l->word, v, v | me)) return 0;
    weft__cpu_relax();
  }
  weft__waiters_enter(WEFT__WAITER_SET_OF(l));
  int64_t since = weft__os_now_ns();
  bool woke = false;
  /* Whether the wait table was asked about this wait, for a holder in
   * another process and for one in this process: the holder may change. */
  bool asked_other = false, asked_within = false;
  uint32_t slept_on = 0; /* `last` when this thread went to sleep */
  int64_t nap = FIRST_NAP_NS;
  for (;;) {
    uint32_t seq = __atomic_load_n(&l->seq, __ATOMIC_SEQ_CST);
    uint32_t v = __atomic_load_n(&l->word, __ATOMIC_SEQ_CST);
    int64_t now = weft__os_now_ns();
    bool starving = now - since >= STARVE_NS;
    /* Woken, yet the thread that held the lock then has taken it again:
     * it is running a loop around the lock. Nap rather than sleep until
     * its next release, which would come within nanoseconds and wake this
     * thread again; uncounted meanwhile, so its releases wake no one. */
    if (woke && (v & PID_MASK) != 0 && !(v & STARVING) && !starving &&
        __atomic_load_n(&l->last, __ATOMIC_RELAXED) == slept_on) {
      leave(l);
      weft__deadline until = now + nap, starve_at = since + STARVE_NS;
      if (until > starve_at) until = starve_at;
      if (until > deadline) until = deadline;
      if (!*recorded) *recorded = weft__wait_begin(WEFT__WAIT_LOCK, l, NULL, site, 0);
      weft__os_sleep_until(until);
      /* Uncounted and with no wake-up to hand on: nothing to undo. */
      if (weft__deadline_passed(deadline)) return WEFT_ETIMEDOUT;
      weft__waiters_enter(WEFT__WAITER_SET_OF(l));
      nap *= 2;
      continue;
    }
    if ((v & PID_MASK) == 0) {
      if (cas(&l->word, v, taken_word(l, (v & ~WOKEN) | me, starving))) {
        weft__waiters_leave(WEFT__WAITER_SET_OF(l));
        return 0;
      }
      continue;
    }
    uint32_t next = v & ~WOKEN;
    if (starving) next |= STARVING;
    if (next != v) {
      if (!cas(&l->word, v, next)) continue;
      v = next;
    }
    pid_t holder = (pid_t)(v & PID_MASK);
    weft__deadline wake_by = deadline;
    if (holder != weft__pid) {
      weft__deadline check = weft__os_now_ns() + OWNER_CHECK_NS;
      if (check < wake_by) wake_by = check;
    }
    /* About to wait for good: ask the detector whether this wait can end. */
    if (track && !*checked && deadline == WEFT__NEVER && weft__dd_on) {
      *checked = true;
      if (weft__dd_before_block(l) == WEFT_EDEADLK) {
        leave(l);
        return WEFT_EDEADLK;
      }
      continue; /* the owner may have let go meanwhile */
    }
    /* Held by another process: register the wait where the other
     * processes see it, and follow the chain through them. Timed waits
     * take part (the cycle is real while they last); only a blocking
     * acquire may be refused, as within a process. A wait within a process
     * that shares memory (it has a wait table) may be a step of such a
     * chain too: xwait.c decides. A process that shares nothing has no
     * table and pays one load here. */
    bool other = holder != weft__pid;
    if (weft__dd_on && !asked_other &&
        (other || (!asked_within && weft__xw_get_table() != NULL))) {
      asked_other |= other;
      asked_within |= !other;
      *xchecked = true;
      int x = weft__xw_before_sleep(l, deadline == WEFT__NEVER, track && deadline == WEFT__NEVER,
                                    site);
      if (x == WEFT_EDEADLK) {
        leave(l);
        return WEFT_EDEADLK;
      }
      if (x > 0) continue; /* the holder may have let go meanwhile */
    }
    slept_on = __atomic_load_n(&l->last, __ATOMIC_RELAXED);
    if (*xchecked) weft__xw_resleep(l);
    if (!*recorded) *recorded = weft__wait_begin(WEFT__WAIT_LOCK, l, NULL, site, 0);
    if (weft__os_futex_wait(&l->seq, seq, wake_by) != -ETIMEDOUT) {
      woke = true;
      continue;
    }
    if (holder != weft__pid && weft__os_process_gone(holder)) {
      if (cas(&l->word, v, taken_word(l, (v & ~(PID_MASK | WOKEN | TIMED)) | me, starving))) {
        weft__waiters_leave(WEFT__WAITER_SET_OF(l));
        return WEFT_EOWNERDEAD;
      }
      continue;
    }
    if (weft__deadline_passed(deadline)) {
      leave(l);
      return WEFT_ETIMEDOUT;
    }
  }
}

int weft__lock_wait(weft_lock *l, weft__deadline deadline, int spins, bool track,
                    const char *site) {
  bool checked = false, recorded = false, xchecked = false;
  int r = wait_loop(l, deadline, spins, track, site, &checked, &recorded, &xchecked);
  if (checked) weft__dd_after_block();
  if (xchecked) weft__xw_after();
  weft__wait_end(recorded);
  return r;
}

uint32_t weft__layout;

int weft__lock_hooks;

void weft__lock_hooks_set(int hook, bool on) {
  if (on)
    __atomic_or_fetch(&weft__lock_hooks, hook, __ATOMIC_RELAXED);
  else
    __atomic_and_fetch(&weft__lock_hooks, ~hook, __ATOMIC_RELAXED);
}

static inline int hooks(void) { return __atomic_load_n(&weft__lock_hooks, __ATOMIC_RELAXED); }

const char *weft__layout_text(uint32_t layout, const char *text) {
  if (text == NULL || layout == 0 || layout == weft__layout || weft__region_holds(text))
    return text;
  return NULL;
}

static const char *lock_label(const weft_lock *l) {
  const char *name = weft__layout_text(l->layout, l->name);
  const char *site = weft__layout_text(l->layout, l->site);
  return name != NULL ? name : site != NULL ? site : "lock";
}

/* Everything but an uncontended acquire: NaN, try, timed and blocking. */
__attribute__((noinline)) static int acquire_slow(weft_lock *l, double timeout, bool track,
                                                   const char *site) {
  if (timeout != timeout) return WEFT_EINVAL;
  uint32_t v = __atomic_load_n(&l->word, __ATOMIC_RELAXED);
  if (v == WEFT__LOCK_DESTROYED) return WEFT_ECLOSED;
  int r;
  /* A free lock is taken without waiting, as Python's acquire(False) takes
   * it; only a blocking acquire queues behind a starving waiter. */
  uint32_t busy = timeout <= 0 ? PID_MASK : PID_MASK | STARVING;
  if ((v & busy) == 0 && cas(&l->word, v, v | (uint32_t)weft__pid)) {
    r = 0;
  } else if (timeout <= 0) {
    r = WEFT_ETIMEDOUT;
  } else {
    weft__deadline deadline;
    weft__deadline_from(timeout, &deadline);
    r = weft__lock_wait(l, deadline, 0, track, site);
  }
  if (r == 0 || r == WEFT_EOWNERDEAD) set_owner(l);
  return r;
}

/* The uncontended acquire: one compare-and-swap of a wholly free word. */
static inline bool take_free(weft_lock *l) { return cas(&l->word, 0, (uint32_t)weft__pid); }

/* Whether a lock is held: its first compare-and-swap also fails on a free
 * lock whose word carries a flag (WOKEN, STARVING), which is no contention. */
static bool held(const weft_lock *l) {
  return (__atomic_load_n(&l->word, __ATOMIC_RELAXED) & PID_MASK) != 0;
}

int weft__lock_reacquire(weft_lock *l, bool rlock) {
  int r = 0;
  bool ls = hooks() & WEFT__HOOK_LS;
  uint64_t since = 0;
  /* No detector check: it cannot refuse here, as the wait's caller must get
   * its lock back (Python's wait never fails to re-acquire either). */
  if (!take_free(l)) {
    if (ls && held(l)) since = weft__ls_ticks();
    r = weft__lock_wait(l, WEFT__NEVER, REACQUIRE_SPINS, false,
                        "(re-acquired after a Condition wait)");
  }
  set_owner(l);
  if (ls) weft__ls_acquired(l, rlock, since, NULL);
  return r;
}

/* The uncontended acquire is one compare-and-swap, inlined into each entry
 * point; everything else is out of line. */
static inline int acquire(weft_lock *l, double timeout, const char *site) {
  if (__builtin_expect(timeout == timeout && take_free(l), 1)) {
    set_owner(l);
    return 0;
  }
  return acquire_slow(l, timeout, false, site);
}

/* An acquire the deadlock detector sees: its orders are recorded (and an
 * inversion reported) before it could wait, the held stack after. A free
 * lock is taken first: nothing else may come between the call and its
 * compare-and-swap, which costs twice as much behind a store. Only while
 * detection is on. */
__attribute__((noinline)) static int acquire_tracked(weft_lock *l, double timeout,
                                                     const char *site) {
  if (timeout != timeout) return WEFT_EINVAL;
  if (weft__lock_destroyed(l)) return WEFT_ECLOSED; /* before it enters the detector's graph */
  bool blocking = weft__waits_forever(timeout);
  int r = 0;
  if (take_free(l)) {
    set_owner(l);
    weft__dd_before_acquire(l, site, blocking);
  } else {
    r = weft__dd_before_acquire(l, site, blocking);
    if (r != 0) return r;
    weft__dd_pending(site);
    r = acquire_slow(l, timeout, true, site);
  }
  if (r == 0 || r == WEFT_EOWNERDEAD) weft__dd_acquired(l, site, blocking);
  return r;
}

/* An acquire the lock contention profile counts (and the detector sees,
 * when it is on too), past its first compare-and-swap: a lock found taken
 * is timed from then until it is taken; a try or a NaN timeout does not
 * wait, so it is not timed. */
__attribute__((noinline)) static int acquire_counted_slow(weft_lock *l, double timeout,
                                                          const char *site, bool rlock) {
  uint64_t since = timeout > 0 && held(l) ? weft__ls_ticks() : 0;
  int r = weft__dd_on ? acquire_tracked(l, timeout, site) : acquire_slow(l, timeout, false, site);
  if (r == 0 || r == WEFT_EOWNERDEAD) weft__ls_acquired(l, rlock, since, site);
  return r;
}

__attribute__((noinline)) static void counted_dd(weft_lock *l, double timeout, const char *site) {
  bool blocking = weft__waits_forever(timeout);
  weft__dd_before_acquire(l, site, blocking);
  weft__dd_acquired(l, site, blocking);
}

/* A free lock taken: what the tools that are on record. The detector's
 * part is out of line, so that nothing is saved on the stack before the
 * compare-and-swap when it is off. */
static inline void counted(weft_lock *l, double timeout, const char *site, bool rlock) {
  if (weft__dd_on) counted_dd(l, timeout, site);
  weft__ls_acquired(l, rlock, 0, site);
}

static int acquire_counted(weft_lock *l, double timeout, const char *site, bool rlock) {
  if (__builtin_expect(timeout == timeout && take_free(l), 1)) {
    set_owner(l);
    counted(l, timeout, site, rlock);
    return 0;
  }
  return acquire_counted_slow(l, timeout, site, rlock);
}

__attribute__((noinline)) static int release_slow(weft_lock *l) {
  if (weft__lock_destroyed(l)) return WEFT_ECLOSED;
  /* Told while the owner is still set: the profile checks that the hold
   * it timed is the one ending. */
  if (__atomic_load_n(&l->word, __ATOMIC_RELAXED) & TIMED) weft__ls_timed_release(l);
  __atomic_store_n(&l->owner, 0, __ATOMIC_RELAXED);
  uint32_t old = __atomic_fetch_and(&l->word, ~(PID_MASK | TIMED), __ATOMIC_SEQ_CST);
  if ((old & PID_MASK) == 0) return WEFT_EPERM;
  if (!(old & WOKEN) && waiters(l) != 0) wake_one(l);
  return 0;
}

/* From the moment the pid is cleared the lock may be freed by its next
 * owner; a wake-up touches only the address, which the kernel tolerates
 * (Drepper, "Futexes Are Tricky"). */
static inline int release(weft_lock *l) {
  uint32_t v = __atomic_load_n(&l->word, __ATOMIC_RELAXED);
  if (__builtin_expect(v != 0 && (v & ~PID_MASK) == 0, 1) &&
      (__atomic_store_n(&l->owner, 0, __ATOMIC_RELAXED), cas(&l->word, v, 0))) {
    if (__builtin_expect(waiters(l) == 0, 1)) return 0;
    wake_one(l);
    return 0;
  }
  return release_slow(l);
}

int weft__lock_acquire(weft_lock *l, double timeout) { return acquire(l, timeout, NULL); }

int weft__lock_release(weft_lock *l) { return release(l); }

__attribute__((noinline)) static int acquire_error(weft_lock *l, int r, double timeout) {
  if (l == NULL) return weft__error(WEFT_EINVAL, "weft_lock_acquire: lock is NULL");
  if (r == WEFT_EINVAL) return weft__error(r, "weft_lock_acquire: timeout is NaN");
  if (r == WEFT_ECLOSED)
    return weft__error(r, "weft_lock_acquire: %s was destroyed", lock_label(l));
  if (r == WEFT_EOWNERDEAD)
    return weft__error(r, "%s: acquired, but the process that held it died", lock_label(l));
  if (r == WEFT_EDEADLK)
    return weft__error(r, "%s: not acquired: waiting would deadlock (see the report)",
                       lock_label(l));
  return weft__error(r, "%s: not acquired within %g s", lock_label(l), timeout);
}

/* What follows a blocking acquire's compare-and-swap of a free lock with
 * detection on. Returns 0. */
/* The detector's part of it, after set_owner. */
__attribute__((noinline)) static int tracked_free_rest(weft_lock *l, const char *site) {
  weft__dd_before_acquire(l, site, true);
  weft__dd_acquired(l, site, true);
  return 0;
}

__attribute__((noinline)) static int tracked_free_slow(weft_lock *l, const char *site) {
  set_owner(l);
  return tracked_free_rest(l, site);
}

/* Its usual cases make no call, so that no register is saved on the stack
 * before the release's compare-and-swap. */
__attribute__((noinline)) static int tracked_free(weft_lock *l, const char *site) {
  struct weft__dd_thread *t = weft__hot.dd_self;
  uint32_t owner = weft__hot.owner;
  if (__builtin_expect(t == NULL || owner == 0, 0)) return tracked_free_slow(l, site);
  set_owner_to(l, owner);
  if (__builtin_expect(weft__dd_acquired_known(t, l, site), 1)) return 0;
  return tracked_free_rest(l, site);
}

__attribute__((noinline)) static int tracked_other(weft_lock *l, double timeout,
                                                   const char *site) {
  int r = acquire_tracked(l, timeout, site);
  return __builtin_expect(r == 0, 1) ? 0 : acquire_error(l, r, timeout);
}

/* weft_lock_acquire_at with detection on, reached by a tail call: a
 * blocking acquire of a free lock does its compare-and-swap first, with no
 * store before it (a spill or a call's return address just before it cost
 * more than all the detector's work after it), and the rest in tail calls,
 * so that no register is saved on the stack before it either. */
__attribute__((noinline)) static int acquire_tracked_at(weft_lock *l, double timeout,
                                                        const char *site) {
  weft__dd_prefetch(l);
  if (__builtin_expect(weft__waits_forever(timeout) && take_free(l), 1))
    return tracked_free(l, site);
  return tracked_other(l, timeout, site);
}

/* What follows an uncontended acquire's compare-and-swap while the lock
 * contention profile is on. Returns 0. */
__attribute__((noinline)) static int counted_free_slow(weft_lock *l, double timeout,
                                                       const char *site) {
  set_owner(l);
  counted(l, timeout, site, false);
  return 0;
}

__attribute__((noinline)) static int counted_time(weft_lock *l, struct weft__ls_rec *r,
                                                  uint64_t n) {
  weft__ls_time(l, r, n);
  return 0;
}

/* The usual case, a thread taking the lock it took last, with no call
 * that would make it save registers on the stack: those stores would slow
 * the release's compare-and-swap that follows. */
static inline int counted_free(weft_lock *l, double timeout, const char *site) {
  struct weft__ls_rec *r = weft__hot.ls_last;
  uint32_t owner = weft__hot.owner;
  if (__builtin_expect(owner == 0 || !weft__ls_is(r, l), 0)) return counted_free_slow(l, timeout, site);
  set_owner_to(l, owner);
  uint64_t n = WEFT__LS_GET(r->acq) + 1;
  WEFT__LS_SET(r->acq, n);
  if (__builtin_expect(n == WEFT__LS_GET(r->next), 0)) return counted_time(l, r, n);
  return 0;
}

__attribute__((noinline)) static int counted_taken(weft_lock *l, double timeout,
                                                   const char *site) {
  int r = acquire_counted_slow(l, timeout, site, false);
  return __builtin_expect(r == 0, 1) ? 0 : acquire_error(l, r, timeout);
}

/* weft_lock_acquire_at with the lock contention profile alone on, reached
 * by a tail call: the compare-and-swap comes first, and everything else in
 * tail calls after it, so that nothing is saved on the stack before it
 * (see acquire_tracked_at). */
__attribute__((noinline)) static int acquire_counted_at(weft_lock *l, double timeout,
                                                        const char *site) {
  if (__builtin_expect(timeout == timeout && take_free(l), 1)) return counted_free(l, timeout, site);
  return counted_taken(l, timeout, site);
}

/* The same with the detector on too. */
__attribute__((noinline)) static int acquire_both_at(weft_lock *l, double timeout,
                                                     const char *site) {
  if (__builtin_expect(timeout == timeout && take_free(l), 1))
    return counted_free_slow(l, timeout, site);
  return counted_taken(l, timeout, site);
}

/* The rest of weft_lock_acquire_at with every tool off, out of line so
 * that its usual case saves nothing on the stack before the
 * compare-and-swap: a free lock taken by a thread whose id is not known
 * yet, and everything past a failed compare-and-swap. */
__attribute__((noinline)) static int owner_slow(weft_lock *l) {
  set_owner(l);
  return 0;
}

__attribute__((noinline)) static int acquire_other(weft_lock *l, double timeout,
                                                   const char *site) {
  int r = acquire_slow(l, timeout, false, site);
  return __builtin_expect(r == 0, 1) ? 0 : acquire_error(l, r, timeout);
}

int weft_lock_acquire_at(weft_lock *l, double timeout, const char *site) {
  /* A destroyed lock costs nothing here: its word fails the fast path's
   * compare-and-swap. NULL would be dereferenced, so it is one predicted
   * branch. */
  if (__builtin_expect(l == NULL, 0)) return acquire_error(l, WEFT_EINVAL, timeout);
  int h = hooks();
  if (__builtin_expect(h != 0, 0))
    return h == WEFT__HOOK_DD   ? acquire_tracked_at(l, timeout, site)
           : h == WEFT__HOOK_LS ? acquire_counted_at(l, timeout, site)
                                : acquire_both_at(l, timeout, site);
  if (__builtin_expect(timeout == timeout && take_free(l), 1)) {
    uint32_t owner = weft__hot.owner;
    if (__builtin_expect(owner == 0, 0)) return owner_slow(l);
    set_owner_to(l, owner);
    return 0;
  }
  return acquire_other(l, timeout, site);
}

int(weft_lock_acquire)(weft_lock *l, double timeout) { return weft_lock_acquire_at(l, timeout, NULL); }

__attribute__((noinline)) static int release_error(weft_lock *l, int r) {
  if (l == NULL) return weft__error(WEFT_EINVAL, "weft_lock_release: lock is NULL");
  if (r == WEFT_ECLOSED)
    return weft__error(r, "weft_lock_release: %s was destroyed", lock_label(l));
  return weft__error(WEFT_EPERM, "%s: release of an unlocked Lock", lock_label(l));
}

/* What the detector sees of a release, before it. The contention profile
 * needs nothing here: a hold it times has TIMED set, which sends the
 * release itself to the slow path that tells it. */
static inline __attribute__((always_inline)) void release_hooks(weft_lock *l) {
  if (__builtin_expect(hooks() & WEFT__HOOK_DD, 0) && !weft__lock_destroyed(l))
    weft__dd_released(l);
}

void weft__lock_release_hooks(weft_lock *l) { release_hooks(l); }

int weft_lock_release(weft_lock *l) {
  if (__builtin_expect(l == NULL, 0)) return release_error(l, WEFT_EINVAL);
  release_hooks(l); /* inline: a call before the compare-and-swap would slow it */
  int r = release(l);
  if (__builtin_expect(r == 0, 1)) return 0;
  return release_error(l, r);
}

bool weft_lock_locked(const weft_lock *l) {
  if (l == NULL) return weft__error(WEFT_EINVAL, "weft_lock_locked: lock is NULL"), false;
  uint32_t v = __atomic_load_n(&l->word, __ATOMIC_RELAXED);
  if (v == WEFT__LOCK_DESTROYED)
    return weft__error(WEFT_ECLOSED, "weft_lock_locked: %s was destroyed", lock_label(l)), false;
  return (v & PID_MASK) != 0;
}

int weft__lock_destroy(weft_lock *l) {
  uint32_t v = __atomic_load_n(&l->word, __ATOMIC_SEQ_CST);
  if (v == WEFT__LOCK_DESTROYED) return WEFT_ECLOSED;
  if ((v & PID_MASK) != 0 || waiters(l) != 0 || !cas(&l->word, v, WEFT__LOCK_DESTROYED))
    return WEFT_EBUSY;
  if (weft__dd_on) weft__dd_forget(l);
  return 0;
}

static int destroy_error(const char *fn, weft_lock *l, int r) {
  if (r == WEFT_ECLOSED) return weft__error(r, "%s: %s was already destroyed", fn, lock_label(l));
  return weft__error(r, "%s: %s destroyed while locked or waited for", fn, lock_label(l));
}

int weft_lock_destroy(weft_lock *l) {
  if (l == NULL) return weft__error(WEFT_EINVAL, "weft_lock_destroy: lock is NULL");
  int r = weft__lock_destroy(l);
  return r == 0 ? 0 : destroy_error("weft_lock_destroy", l, r);
}

/* ---- RLock ---- */

#define RLOCK_TSAN_FLAGS WEFT__TSAN_WRITE_REENTRANT

int weft_rlock_init_opts(weft_rlock *r, const char *expr, const char *site,
                         const weft_lock_options *o) {
  if (r == NULL) return weft__error(WEFT_EINVAL, "weft_rlock_init: rlock is NULL");
  weft_lock_init_opts(&r->lock, expr, site, o);
  r->count = 0;
  weft__tsan_mutex_create(r, RLOCK_TSAN_FLAGS | WEFT__TSAN_NOT_STATIC);
  return 0;
}

void weft__lock_mark_timed(weft_lock *l) {
  uint32_t v = __atomic_load_n(&l->word, __ATOMIC_RELAXED);
  /* Only on a held word: a release by another thread in between leaves it
   * free, and a free word must not carry the flag. */
  while ((v & PID_MASK) != 0 && v != WEFT__LOCK_DESTROYED && !(v & TIMED) &&
         !__atomic_compare_exchange_n(&l->word, &v, v | TIMED, false, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
}

pid_t weft__lock_holder_pid(const weft_lock *l) {
  return (pid_t)(__atomic_load_n(&l->word, __ATOMIC_RELAXED) & PID_MASK);
}

uint32_t weft__lock_owner(const weft_lock *l) { return __atomic_load_n(&l->owner, __ATOMIC_RELAXED); }

bool weft__lock_held_by_caller(const weft_lock *l) {
  uint32_t holder = __atomic_load_n(&l->word, __ATOMIC_RELAXED) & PID_MASK;
  uint32_t owner = __atomic_load_n(&l->owner, __ATOMIC_RELAXED);
  if (holder == (uint32_t)weft__pid) return WEFT__OWNER_TID(owner) == weft__tid();
  /* Taken in an ancestor by the thread that then forked, of which the
   * caller is the continuation (Python's RLock agrees: same ident) -- but
   * only if taken before that fork: a lock in shared memory that the
   * ancestor took afterwards is the ancestor's (the fork counts tell). */
  const struct weft__lineage *lin = &weft__tls_lineage;
  for (int i = 0; i < lin->n; i++) {
    if (holder != (uint32_t)lin->pid[i] || WEFT__OWNER_TID(owner) != WEFT__OWNER_TID(lin->owner[i]))
      continue;
    uint32_t forks_since = (lin->owner[i] >> WEFT__OWNER_TID_BITS) - (owner >> WEFT__OWNER_TID_BITS);
    return (forks_since & WEFT__OWNER_FORKS_MASK) <= WEFT__OWNER_FORKS_MASK / 2;
  }
  return false;
}

bool weft_rlock_is_owned(const weft_rlock *r) {
  if (r == NULL) return weft__error(WEFT_EINVAL, "weft_rlock_is_owned: rlock is NULL"), false;
  if (weft__lock_held_by_caller(&r->lock)) return true;
  if (weft__lock_destroyed(&r->lock))
    weft__error(WEFT_ECLOSED, "weft_rlock_is_owned: %s was destroyed", lock_label(&r->lock));
  return false;
}

int weft__rlock_acquire_levels(weft_rlock *r, double timeout, uint32_t levels, unsigned flags,
                               bool spin, const char *site) {
  if (timeout != timeout) return WEFT_EINVAL;
  /* TSan treats an acquire that may give up as a try-lock. */
  unsigned try = weft__waits_forever(timeout) ? 0 : WEFT__TSAN_TRY_LOCK;
  weft__tsan_pre_lock(r, RLOCK_TSAN_FLAGS | try);
  if (weft__lock_held_by_caller(&r->lock)) {
    r->count += levels;
    weft__tsan_post_lock(r, RLOCK_TSAN_FLAGS | try | flags, (int)levels);
    return 0;
  }
  int err;
  if (spin) {
    err = weft__lock_reacquire(&r->lock, true);
    if (weft__dd_on) weft__dd_acquired(&r->lock, site, true);
  } else if (hooks() & WEFT__HOOK_LS) {
    err = acquire_counted(&r->lock, timeout, site, true);
  } else if (weft__dd_on) {
    err = acquire_tracked(&r->lock, timeout, site);
  } else {
    err = acquire(&r->lock, timeout, site);
  }
  if (err == 0 || err == WEFT_EOWNERDEAD) {
    r->count = levels;
    weft__tsan_post_lock(r, RLOCK_TSAN_FLAGS | try | flags, (int)levels);
  } else {
    weft__tsan_post_lock(r, RLOCK_TSAN_FLAGS | WEFT__TSAN_TRY_LOCK | WEFT__TSAN_TRY_LOCK_FAILED,
                         0);
  }
  return err;
}

int(weft_rlock_acquire)(weft_rlock *r, double timeout) { return weft_rlock_acquire_at(r, timeout, NULL); }

int weft_rlock_acquire_at(weft_rlock *r, double timeout, const char *site) {
  if (__builtin_expect(r == NULL, 0))
    return weft__error(WEFT_EINVAL, "weft_rlock_acquire: rlock is NULL");
  int err = weft__rlock_acquire_levels(r, timeout, 1, 0, false, site);
  if (__builtin_expect(err == 0, 1)) return 0;
  if (err == WEFT_EINVAL) return weft__error(err, "weft_rlock_acquire: timeout is NaN");
  if (err == WEFT_ECLOSED)
    return weft__error(err, "weft_rlock_acquire: %s was destroyed", lock_label(&r->lock));
  if (err == WEFT_EOWNERDEAD)
    return weft__error(err, "%s: acquired, but the process that held it died",
                       lock_label(&r->lock));
  if (err == WEFT_EDEADLK)
    return weft__error(err, "%s: not acquired: waiting would deadlock (see the report)",
                       lock_label(&r->lock));
  return weft__error(err, "%s: not acquired within %g s", lock_label(&r->lock), timeout);
}

uint32_t weft__rlock_release_levels(weft_rlock *r, bool all) {
  uint32_t levels = all ? r->count : 1;
  weft__tsan_pre_unlock(r, all ? WEFT__TSAN_RECURSIVE_UNLOCK : 0);
  r->count -= levels;
  if (r->count == 0) {
    weft__lock_release_hooks(&r->lock);
    weft__lock_release(&r->lock);
  }
  weft__tsan_post_unlock(r, all ? WEFT__TSAN_RECURSIVE_UNLOCK : 0);
  return levels;
}

int weft_rlock_release(weft_rlock *r) {
  if (r == NULL) return weft__error(WEFT_EINVAL, "weft_rlock_release: rlock is NULL");
  if (!weft__lock_held_by_caller(&r->lock)) {
    if (weft__lock_destroyed(&r->lock))
      return weft__error(WEFT_ECLOSED, "weft_rlock_release: %s was destroyed",
                         lock_label(&r->lock));
    return weft__error(WEFT_EPERM, "%s: cannot release an RLock the calling thread does not own",
                       lock_label(&r->lock));
  }
  weft__rlock_release_levels(r, false);
  return 0;
}

int weft_rlock_destroy(weft_rlock *r) {
  if (r == NULL) return weft__error(WEFT_EINVAL, "weft_rlock_destroy: rlock is NULL");
  int err = weft__lock_destroy(&r->lock);
  if (err != 0) return destroy_error("weft_rlock_destroy", &r->lock, err);
  weft__tsan_mutex_destroy(r, 0);
  return 0;
}
