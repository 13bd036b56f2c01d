/* SPDX-License-Identifier: MIT */
/* Semaphore and BoundedSemaphore over a futex counter.
 *
 * A waiter registers (waiters++) before it re-reads the value, and a
 * releaser adds to the value before it reads waiters; with both sides
 * sequentially consistent one of them always sees the other, so no wake-up
 * is lost and an uncontended release makes no system call. A release wakes
 * every sleeper when they belong to several processes (waiters.h), so a
 * woken sleeper killed before it takes its token strands no other. */
#include <limits.h>

#include "dump.h"
#include "internal.h"
#include "lock.h"
#include "os/os.h"
#include "waiters.h"
#include "weft/sync.h"

/* `bounded` of a destroyed semaphore, whose value is 0: acquire's fast
 * path finds nothing to take, and the slower paths look here. */
#define DESTROYED 0xffffffffu

static const char *sem_label(const weft_semaphore *s) {
  const char *name = weft__layout_text(s->layout, s->name);
  return name != NULL ? name : "semaphore";
}

/* For a NULL or destroyed semaphore: the error, else 0. */
static int bad(const weft_semaphore *s, const char *fn) {
  if (s == NULL) return weft__error(WEFT_EINVAL, "%s: sem is NULL", fn);
  if (__atomic_load_n(&s->bounded, __ATOMIC_RELAXED) == DESTROYED)
    return weft__error(WEFT_ECLOSED, "%s: %s was destroyed", fn, sem_label(s));
  return 0;
}

int weft_semaphore_init_opts(weft_semaphore *s, int value, const weft_semaphore_options *o) {
  static const weft_semaphore_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  if (s == NULL) return weft__error(WEFT_EINVAL, "weft_semaphore_init: sem is NULL");
  if (value < 0)
    return weft__error(WEFT_EINVAL, "weft_semaphore_init: initial value must be >= 0, not %d",
                       value);
  s->value = (uint32_t)value;
  s->waiters = 0;
  s->waiter_procs_ = 0;
  s->bound = (uint32_t)value;
  s->bounded = o->bounded;
  s->name = o->name;
  s->layout = weft__layout;
  return 0;
}

static bool try_take(weft_semaphore *s) {
  uint32_t v = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
  while (v > 0)
    if (__atomic_compare_exchange_n(&s->value, &v, v - 1, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED))
      return true;
  return false;
}

int(weft_semaphore_acquire)(weft_semaphore *s, double timeout) {
  return weft_semaphore_acquire_at(s, timeout, NULL);
}

int weft_semaphore_acquire_at(weft_semaphore *s, double timeout, const char *site) {
  if (s == NULL) return bad(s, "weft_semaphore_acquire");
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return err;
  if (try_take(s)) return 0;
  if ((err = bad(s, "weft_semaphore_acquire")) != 0) return err;
  if (timeout > 0) {
    weft__waiters_enter(WEFT__WAITER_SET_OF(s));
    const char *name = s->layout == 0 || s->layout == weft__layout ? s->name : NULL;
    bool recorded = weft__wait_begin(WEFT__WAIT_SEMAPHORE, s, name, site, 0);
    for (;;) {
      if (try_take(s)) {
        weft__waiters_leave(WEFT__WAITER_SET_OF(s));
        weft__wait_end(recorded);
        return 0;
      }
      if (weft__os_futex_wait(&s->value, 0, deadline) == -ETIMEDOUT) break;
    }
    weft__waiters_leave(WEFT__WAITER_SET_OF(s));
    weft__wait_end(recorded);
    if (try_take(s)) return 0; /* released just as the timeout ran out */
  }
  return weft__error(WEFT_ETIMEDOUT, "%s: not acquired within %g s", sem_label(s), timeout);
}

int weft_semaphore_release(weft_semaphore *s, int n) {
  int err = bad(s, "weft_semaphore_release");
  if (err != 0) return err;
  if (n < 1) return weft__error(WEFT_EINVAL, "weft_semaphore_release: n must be >= 1, not %d", n);
  uint32_t v = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
  uint32_t limit = s->bounded ? s->bound : INT_MAX;
  do {
    if ((uint64_t)v + (uint64_t)n > limit)
      return weft__error(WEFT_EOVERFLOW, "%s: %s", sem_label(s),
                         s->bounded ? "BoundedSemaphore released too many times"
                                       : "value would overflow");
  } while (!__atomic_compare_exchange_n(&s->value, &v, v + (uint32_t)n, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED));
  if (weft__waiters_count(WEFT__WAITER_SET_OF(s)) != 0)
    weft__os_futex_wake(&s->value, weft__waiters_to_wake(WEFT__WAITER_SET_OF(s), n));
  return 0;
}

int weft_semaphore_value(const weft_semaphore *s) {
  int err = bad(s, "weft_semaphore_value");
  if (err != 0) return err;
  return (int)__atomic_load_n(&s->value, __ATOMIC_RELAXED);
}

int weft_semaphore_destroy(weft_semaphore *s) {
  int err = bad(s, "weft_semaphore_destroy");
  if (err == WEFT_ECLOSED)
    return weft__error(err, "weft_semaphore_destroy: %s was already destroyed", sem_label(s));
  if (err != 0) return err;
  if (__atomic_load_n(&s->waiters, __ATOMIC_SEQ_CST) != 0)
    return weft__error(WEFT_EBUSY, "weft_semaphore_destroy: %s has waiters", sem_label(s));
  __atomic_store_n(&s->value, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&s->bounded, DESTROYED, __ATOMIC_RELAXED);
  return 0;
}
