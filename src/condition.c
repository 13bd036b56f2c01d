/* SPDX-License-Identifier: MIT */
/* Condition: Python's threading.Condition over a futex sequence counter.
 *
 * notify(n) must wake at most n of the threads waiting *now*, never one that
 * starts waiting later, and a timed-out waiter must not swallow a wake-up
 * meant for another. So besides the futex word (seq, bumped by each notify),
 * one 64-bit word counts the registered waiters and the wake-ups granted but
 * not yet taken; both change together in one compare-and-swap. A waiter
 * registers while it still holds the lock, so a notifier, which must hold it
 * too, always counts it; and it may take a wake-up only once seq has moved
 * past the value it registered at, so a wait that begins after a notify
 * cannot take that notify's wake-up.
 *
 * A notify wakes every sleeper when they belong to several processes
 * (waiters.h, tracked in `waiters`): a sleeper granted a wake-up and killed
 * before taking it leaves the wake-up to be taken by a sleeper of another
 * process instead of sleeping with it.
 */
#include "deadlock.h"
#include "dump.h"
#include "internal.h"
#include "lock.h"
#include "os/os.h"
#include "tsan.h"
#include "waiters.h"
#include "weft/sync.h"

/* KIND_DESTROYED: after weft_cond_destroy, until init. */
enum { KIND_OWN, KIND_LOCK, KIND_RLOCK, KIND_DESTROYED };

#define WAITER (1ull << 32)

int weft_cond_init_opts(weft_cond *c, const char *expr, const char *site,
                        const weft_cond_options *o) {
  static const weft_cond_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  if (c == NULL) return weft__error(WEFT_EINVAL, "weft_cond_init: cond is NULL");
  if (o->lock != NULL && o->rlock != NULL)
    return weft__error(WEFT_EINVAL, "weft_cond_init: give .lock or .rlock, not both");
  weft_lock_options lo = {.size_ = sizeof lo, .name = o->name};
  weft_rlock_init_opts(&c->own, expr, site, &lo);
  c->lock = o->lock != NULL ? (void *)o->lock : (void *)o->rlock;
  c->kind = o->lock != NULL ? KIND_LOCK : o->rlock != NULL ? KIND_RLOCK : KIND_OWN;
  c->seq = 0;
  c->wt = 0;
  c->waiters = 0;
  c->waiter_procs_ = 0;
  return 0;
}

static weft_rlock *rlock_of(weft_cond *c) {
  return c->kind == KIND_RLOCK ? (weft_rlock *)c->lock : &c->own;
}

static const char *cond_label(weft_cond *c) {
  const weft_lock *l = c->kind == KIND_LOCK ? (weft_lock *)c->lock : &rlock_of(c)->lock;
  const char *name = weft__layout_text(l->layout, l->name);
  const char *site = weft__layout_text(l->layout, l->site);
  return name != NULL ? name : site != NULL ? site : "condition";
}

/* For a NULL or destroyed condition: the error, else 0. */
static int bad(weft_cond *c, const char *fn) {
  if (c == NULL) return weft__error(WEFT_EINVAL, "%s: cond is NULL", fn);
  if (c->kind == KIND_DESTROYED)
    return weft__error(WEFT_ECLOSED, "%s: %s was destroyed", fn, cond_label(c));
  return 0;
}

int weft_cond_acquire_at(weft_cond *c, double timeout, const char *site) {
  if (c == NULL) return bad(c, "weft_cond_acquire");
  if (c->kind == KIND_LOCK) return weft_lock_acquire_at(c->lock, timeout, site);
  if (c->kind == KIND_DESTROYED) return bad(c, "weft_cond_acquire");
  return weft_rlock_acquire_at(rlock_of(c), timeout, site);
}

int(weft_cond_acquire)(weft_cond *c, double timeout) { return weft_cond_acquire_at(c, timeout, NULL); }

int weft_cond_release(weft_cond *c) {
  if (c == NULL) return bad(c, "weft_cond_release");
  if (c->kind == KIND_LOCK) return weft_lock_release(c->lock);
  if (c->kind == KIND_DESTROYED) return bad(c, "weft_cond_release");
  return weft_rlock_release(rlock_of(c));
}

int weft_cond_destroy(weft_cond *c) {
  int err = bad(c, "weft_cond_destroy");
  if (err != 0) {
    if (err == WEFT_ECLOSED)
      weft__error(err, "weft_cond_destroy: %s was already destroyed", cond_label(c));
    return err;
  }
  if ((__atomic_load_n(&c->wt, __ATOMIC_ACQUIRE) >> 32) != 0)
    return weft__error(WEFT_EBUSY, "weft_cond_destroy: %s has waiters", cond_label(c));
  if (c->kind == KIND_OWN && (err = weft__lock_destroy(&c->own.lock)) != 0)
    return weft__error(err, "weft_cond_destroy: %s is locked", cond_label(c));
  if (c->kind == KIND_OWN) weft__tsan_mutex_destroy(&c->own, 0);
  c->kind = KIND_DESTROYED;
  return 0;
}

/* Python checks a plain Lock by "is it locked"; weft asks whether the
 * calling thread is the one that acquired it, which also catches a
 * condition used under a lock held by another thread. */
static bool owned(weft_cond *c) {
  if (c->kind != KIND_LOCK) return weft__lock_held_by_caller(&rlock_of(c)->lock);
  return weft__lock_held_by_caller(c->lock);
}

/* Takes a granted wake-up if there is one for a waiter that registered at
 * `epoch` (unregistering it). */
static bool take_wakeup(weft_cond *c, uint32_t epoch) {
  if (__atomic_load_n(&c->seq, __ATOMIC_ACQUIRE) == epoch) return false;
  uint64_t wt = __atomic_load_n(&c->wt, __ATOMIC_ACQUIRE);
  while ((uint32_t)wt != 0)
    if (__atomic_compare_exchange_n(&c->wt, &wt, wt - WAITER - 1, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
      return true;
  return false;
}

/* On timeout: take a wake-up granted meanwhile (then the wait counts as
 * notified), or unregister. Returns whether notified. */
static bool give_up(weft_cond *c, uint32_t epoch) {
  bool eligible = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE) != epoch;
  uint64_t wt = __atomic_load_n(&c->wt, __ATOMIC_ACQUIRE);
  for (;;) {
    bool take = eligible && (uint32_t)wt != 0;
    uint64_t next = take ? wt - WAITER - 1 : wt - WAITER;
    if (__atomic_compare_exchange_n(&c->wt, &wt, next, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      return take;
  }
}

int(weft_cond_wait)(weft_cond *c, double timeout) { return weft_cond_wait_at(c, timeout, NULL); }

int weft_cond_wait_at(weft_cond *c, double timeout, const char *site) {
  int bad_err = bad(c, "weft_cond_wait");
  if (bad_err != 0) return bad_err;
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return err;
  if (!owned(c))
    return weft__error(WEFT_EPERM, "%s: wait on a condition whose lock the caller does not hold",
                       cond_label(c));
  uint32_t epoch = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE), seq = epoch;
  __atomic_add_fetch(&c->wt, WAITER, __ATOMIC_ACQ_REL);
  weft__waiters_enter(WEFT__WAITER_SET_OF(c));
  uint32_t levels = 0;
  if (c->kind == KIND_LOCK) {
    weft__lock_release_hooks(c->lock);
    weft__lock_release(c->lock);
  } else {
    levels = weft__rlock_release_levels(rlock_of(c), true);
  }

  const weft_lock *lock = c->kind == KIND_LOCK ? (weft_lock *)c->lock : &rlock_of(c)->lock;
  bool recorded = timeout > 0 && weft__wait_begin(WEFT__WAIT_COND, lock, NULL, site, 0);
  bool notified = false;
  for (;;) {
    int r = timeout <= 0 ? -ETIMEDOUT : weft__os_futex_wait(&c->seq, seq, deadline);
    if (take_wakeup(c, epoch)) {
      notified = true;
      break;
    }
    if (r == -ETIMEDOUT || weft__deadline_passed(deadline)) {
      notified = give_up(c, epoch);
      break;
    }
    seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
  }
  weft__waiters_leave(WEFT__WAITER_SET_OF(c));
  weft__wait_end(recorded);

  /* Re-acquire as Python does: without a timeout, whatever the wait's. */
  int got;
  if (c->kind == KIND_LOCK) {
    got = weft__lock_reacquire(c->lock, false);
    if (weft__dd_on) weft__dd_acquired(c->lock, "(re-acquired after a Condition wait)", true);
  } else {
    got = weft__rlock_acquire_levels(rlock_of(c), WEFT_FOREVER, levels, WEFT__TSAN_RECURSIVE_LOCK,
                                     true, "(re-acquired after a Condition wait)");
  }
  /* The data the lock guards may be half changed: that outweighs whether
   * the wait was notified. */
  if (got == WEFT_EOWNERDEAD)
    return weft__error(WEFT_EOWNERDEAD,
                       "%s: lock re-acquired after the wait, but the process that held it died",
                       cond_label(c));
  if (notified) return 0;
  return weft__error(WEFT_ETIMEDOUT, "%s: not notified within %g s", cond_label(c), timeout);
}

int(weft_cond_wait_for)(weft_cond *c, bool (*predicate)(void *), void *arg, double timeout) {
  return weft_cond_wait_for_at(c, predicate, arg, timeout, NULL);
}

int weft_cond_wait_for_at(weft_cond *c, bool (*predicate)(void *), void *arg, double timeout,
                          const char *site) {
  int bad_err = bad(c, "weft_cond_wait_for");
  if (bad_err != 0) return bad_err;
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return err;
  if (predicate == NULL) return weft__error(WEFT_EINVAL, "weft_cond_wait_for: predicate is NULL");
  if (!owned(c))
    return weft__error(WEFT_EPERM, "%s: wait on a condition whose lock the caller does not hold",
                       cond_label(c));
  bool result = predicate(arg);
  while (!result) {
    double left = weft__timeout_left(deadline);
    if (left <= 0) break;
    weft_cond_wait_at(c, left, site);
    result = predicate(arg);
  }
  return result;
}

int weft_cond_notify(weft_cond *c, int n) {
  int bad_err = bad(c, "weft_cond_notify");
  if (bad_err != 0) return bad_err;
  if (n < 0) return weft__error(WEFT_EINVAL, "weft_cond_notify: n is negative (%d)", n);
  if (!owned(c))
    return weft__error(WEFT_EPERM, "%s: notify on a condition whose lock the caller does not hold",
                       cond_label(c));
  uint64_t wt = __atomic_load_n(&c->wt, __ATOMIC_ACQUIRE);
  uint32_t granted;
  for (;;) {
    uint32_t waiters = (uint32_t)(wt >> 32), tokens = (uint32_t)wt;
    uint32_t idle = waiters - tokens; /* registered and not yet granted one */
    granted = (uint32_t)n < idle ? (uint32_t)n : idle;
    if (granted == 0) return 0;
    if (__atomic_compare_exchange_n(&c->wt, &wt, wt + granted, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
      break;
  }
  __atomic_add_fetch(&c->seq, 1, __ATOMIC_RELEASE);
  weft__os_futex_wake(&c->seq, weft__waiters_to_wake(WEFT__WAITER_SET_OF(c), (int)granted));
  return 0;
}

int weft_cond_notify_all(weft_cond *c) {
  int bad_err = bad(c, "weft_cond_notify_all");
  if (bad_err != 0) return bad_err;
  return weft_cond_notify(c, INT32_MAX);
}
