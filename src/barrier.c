/* SPDX-License-Identifier: MIT */
/* Barrier: Python's threading.Barrier. An internal Lock guards the counts;
 * threads sleep on `seq`, bumped whenever they should look again.
 *
 * As in CPython, a cycle that has ended (completed, broken or reset) must be
 * drained -- every thread that waited in it has seen how it ended -- before a
 * new cycle may begin. Without that, a waiter slow to wake (descheduled,
 * stopped) could find a later cycle already over and misread its own. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

#include "deadlock.h"
#include "dump.h"
#include "internal.h"
#include "lock.h"
#include "os/os.h"
#include "weft/sync.h"

/* The load address (>> 12) of the object fn lies in, 0 if none: a process
 * started by spawn or the forkserver loads the program elsewhere, and the
 * action's pointer, kept in shared memory, means nothing there. */
static uint32_t image_of(const void *fn) {
  Dl_info info;
  if (dladdr(fn, &info) == 0 || info.dli_fbase == NULL) return 0;
  return (uint32_t)((uintptr_t)info.dli_fbase >> 12);
}

/* Whether the action can be called in this process: it was set here (or in
 * a process of the same layout, a fork), so it is the same function. */
static bool action_callable(const weft_barrier *b) {
  return (pid_t)b->init_pid == weft__pid || b->action_image == 0 ||
         image_of((const void *)b->action) == b->action_image;
}

int weft_barrier_init_opts(weft_barrier *b, int parties, const weft_barrier_options *o) {
  static const weft_barrier_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  if (b == NULL) return weft__error(WEFT_EINVAL, "weft_barrier_init: barrier is NULL");
  if (parties < 1)
    return weft__error(WEFT_EINVAL, "weft_barrier_init: parties must be >= 1, not %d", parties);
  /* A default that never waits would break the barrier at every wait; 0
   * is what a left-out option reads as. */
  if (!(o->timeout >= 0))
    return weft__error(WEFT_EINVAL, "weft_barrier_init: timeout is negative or NaN");
  *b = (weft_barrier)WEFT_BARRIER_INIT((uint32_t)parties);
  b->lock.site = NULL; /* this line, not the caller's: a dump names it by its address */
  b->action = o->action;
  b->action_image = o->action != NULL ? image_of((const void *)o->action) : 0;
  b->arg = o->arg;
  if (o->timeout > 0) b->timeout = o->timeout;
  b->init_pid = (uint32_t)weft__pid;
  return 0;
}

/* weft_barrier_destroy destroys the inner lock, so taking it is where a
 * destroyed barrier shows: WEFT_ECLOSED. */
static int lock_barrier(weft_barrier *b) {
  int r = weft__lock_acquire(&b->lock, WEFT_FOREVER);
  return r == WEFT_EOWNERDEAD ? 0 : r; /* the counts are repaired by reset, as before */
}
static void unlock_barrier(weft_barrier *b) { weft__lock_release(&b->lock); }

static void wake_all_locked(weft_barrier *b) {
  __atomic_add_fetch(&b->seq, 1, __ATOMIC_RELEASE);
  weft__os_futex_wake(&b->seq, INT32_MAX);
}

/* Ends the current cycle; `sleepers` of its waiters are asleep and must
 * still see the outcome. */
static void end_cycle_locked(weft_barrier *b, bool broken, uint32_t sleepers) {
  b->generation++;
  b->ended_broken = broken;
  b->draining = sleepers;
  b->count = 0;
  wake_all_locked(b);
}

/* Sleeps until seq moves or the deadline passes; the lock is dropped while
 * asleep. Returns whether the deadline passed. */
static bool sleep_locked(weft_barrier *b, weft__deadline deadline) {
  uint32_t seq = __atomic_load_n(&b->seq, __ATOMIC_ACQUIRE);
  unlock_barrier(b);
  int r = weft__os_futex_wait(&b->seq, seq, deadline);
  lock_barrier(b);
  return r == -ETIMEDOUT;
}

/* A barrier initialised in another process (an ancestor) and living in
 * private memory has one copy per process, so the parties of other
 * processes never arrive here. One from a static initialiser cannot be
 * told from a barrier the threads of one child use among themselves. */
static void private_copy_check(const weft_barrier *b) {
  pid_t made_in = (pid_t)b->init_pid;
  if (made_in == 0 || made_in == weft__pid) return;
  char what[96];
  snprintf(what, sizeof what, "a Barrier of %u parties made in process %d", b->parties, (int)made_in);
  weft__dd_private_copy_check(b, what, "weft_barrier_new", made_in);
}

/* For a NULL barrier, or r from taking its lock: the error, else 0. */
static int bad(const weft_barrier *b, const char *fn, int r) {
  if (b == NULL) return weft__error(WEFT_EINVAL, "%s: barrier is NULL", fn);
  if (r == WEFT_ECLOSED) return weft__error(r, "%s: the barrier was destroyed", fn);
  return r;
}

static int broken_error(void) {
  return weft__error(WEFT_EBROKEN, "barrier: broken (aborted, reset, timed out or action failed)");
}

/* Before a sleep at the barrier: records the wait once, for dumps. */
static void note_wait(weft_barrier *b, const char *site, bool *recorded) {
  if (!*recorded) *recorded = weft__wait_begin(WEFT__WAIT_BARRIER, &b->lock, NULL, site, 0);
}

static int barrier_wait(weft_barrier *b, double timeout, const char *site, bool *recorded) {
  if (b == NULL) return bad(b, "weft_barrier_wait", 0);
  if (timeout != timeout) return weft__error(WEFT_EINVAL, "weft_barrier_wait: timeout is NaN");
  if (timeout == WEFT_DEFAULT) timeout = b->timeout;
  weft__deadline deadline;
  weft__deadline_from(timeout, &deadline);

  int err = lock_barrier(b);
  if (err != 0) return bad(b, "weft_barrier_wait", err);
  /* A party of the last cycle that was killed before it left never drains:
   * waiting for it is bounded by this wait's timeout like any other. */
  while (b->draining > 0 && !b->broken) {
    note_wait(b, site, recorded);
    if (sleep_locked(b, deadline) && b->draining > 0 && !b->broken) {
      b->broken = 1;
      wake_all_locked(b);
      unlock_barrier(b);
      return weft__error(WEFT_EBROKEN,
                         "barrier: the last cycle's parties did not all leave within %g s; "
                         "the barrier is broken", timeout);
    }
  }
  if (b->broken) {
    unlock_barrier(b);
    return broken_error();
  }
  uint32_t index = b->count++;
  if (b->count == b->parties) {
    /* The last to arrive runs the action before anyone is released. */
    bool foreign = b->action != NULL && !action_callable(b);
    bool failed = foreign || (b->action != NULL && b->action(b->arg) != 0);
    if (failed) b->broken = 1;
    end_cycle_locked(b, failed, b->parties - 1);
    unlock_barrier(b);
    if (foreign)
      return weft__error(WEFT_EBROKEN,
                         "barrier: its action was set in process %u, whose program image this "
                         "process (started by spawn or the forkserver) does not share, so it "
                         "cannot be called here; the barrier is broken",
                         b->init_pid);
    return failed ? broken_error() : (int)index;
  }
  uint32_t generation = b->generation;
  if (weft__dd_on) private_copy_check(b);
  while (b->generation == generation) {
    note_wait(b, site, recorded);
    if (sleep_locked(b, deadline) && b->generation == generation) {
      /* As in Python, a timeout breaks the barrier for every party. */
      b->broken = 1;
      end_cycle_locked(b, true, b->count - 1);
      unlock_barrier(b);
      return weft__error(WEFT_EBROKEN, "barrier: timed out after %g s; the barrier is broken",
                         timeout);
    }
  }
  bool broken = b->ended_broken;
  if (--b->draining == 0) wake_all_locked(b); /* arrivals for the next cycle may go on */
  unlock_barrier(b);
  return broken ? broken_error() : (int)index;
}

int weft_barrier_wait_at(weft_barrier *b, double timeout, const char *site) {
  bool recorded = false;
  int r = barrier_wait(b, timeout, site, &recorded);
  weft__wait_end(recorded);
  return r;
}

int(weft_barrier_wait)(weft_barrier *b, double timeout) {
  return weft_barrier_wait_at(b, timeout, NULL);
}

int weft_barrier_reset(weft_barrier *b) {
  int err = b == NULL ? WEFT_EINVAL : lock_barrier(b);
  if (err != 0) return bad(b, "weft_barrier_reset", err);
  if (b->count > 0) end_cycle_locked(b, true, b->count); /* the waiters get WEFT_EBROKEN */
  b->broken = 0;
  unlock_barrier(b);
  return 0;
}

int weft_barrier_abort(weft_barrier *b) {
  int err = b == NULL ? WEFT_EINVAL : lock_barrier(b);
  if (err != 0) return bad(b, "weft_barrier_abort", err);
  b->broken = 1;
  if (b->count > 0) end_cycle_locked(b, true, b->count);
  unlock_barrier(b);
  return 0;
}

int weft_barrier_parties(const weft_barrier *b) {
  if (b == NULL) return bad(b, "weft_barrier_parties", 0);
  if (weft__lock_destroyed(&b->lock)) return bad(b, "weft_barrier_parties", WEFT_ECLOSED);
  return (int)b->parties;
}

/* The counts change under the barrier's lock; reading them under it too
 * keeps ThreadSanitizer's view exact. */
int weft_barrier_n_waiting(weft_barrier *b) {
  int err = b == NULL ? WEFT_EINVAL : lock_barrier(b);
  if (err != 0) return bad(b, "weft_barrier_n_waiting", err);
  int n = (int)b->count;
  unlock_barrier(b);
  return n;
}

bool weft_barrier_broken(weft_barrier *b) {
  int err = b == NULL ? WEFT_EINVAL : lock_barrier(b);
  if (err != 0) return bad(b, "weft_barrier_broken", err), false;
  bool broken = b->broken != 0;
  unlock_barrier(b);
  return broken;
}

int weft_barrier_destroy(weft_barrier *b) {
  int err = b == NULL ? WEFT_EINVAL : lock_barrier(b);
  if (err == WEFT_ECLOSED)
    return weft__error(err, "weft_barrier_destroy: the barrier was already destroyed");
  if (err != 0) return bad(b, "weft_barrier_destroy", err);
  bool busy = b->count > 0 || b->draining > 0;
  unlock_barrier(b);
  if (busy || (err = weft__lock_destroy(&b->lock)) != 0)
    return weft__error(WEFT_EBUSY, "weft_barrier_destroy: threads are waiting at the barrier");
  return 0;
}
