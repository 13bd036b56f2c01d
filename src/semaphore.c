/* Semaphore and BoundedSemaphore over a futex counter.
 *
 * A waiter registers (waiters++) before it re-reads the value, and a
 * releaser adds to the value before it reads waiters; with both sides
 * sequentially consistent one of them always sees the other, so no wake-up
 * is lost and an uncontended release makes no system call. */
#include <limits.h>

#include "internal.h"
#include "os/os.h"
#include "weft/sync.h"

int weft_semaphore_init_opts(weft_semaphore *s, int value, const weft_semaphore_options *o) {
  if (s == NULL) return weft__error(WEFT_EINVAL, "weft_semaphore_init: sem is NULL");
  if (value < 0)
    return weft__error(WEFT_EINVAL, "weft_semaphore_init: initial value must be >= 0, not %d",
                       value);
  s->value = (uint32_t)value;
  s->waiters = 0;
  s->bound = (uint32_t)value;
  s->bounded = o->bounded;
  s->name = o->name;
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

int weft_semaphore_acquire(weft_semaphore *s, double timeout) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return err;
  if (try_take(s)) return 0;
  if (timeout > 0) {
    __atomic_add_fetch(&s->waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
      if (try_take(s)) {
        __atomic_sub_fetch(&s->waiters, 1, __ATOMIC_SEQ_CST);
        return 0;
      }
      if (weft__os_futex_wait(&s->value, 0, deadline) == -ETIMEDOUT) break;
    }
    __atomic_sub_fetch(&s->waiters, 1, __ATOMIC_SEQ_CST);
    if (try_take(s)) return 0; /* released just as the timeout ran out */
  }
  return weft__error(WEFT_ETIMEDOUT, "%s: not acquired within %g s",
                     s->name != NULL ? s->name : "semaphore", timeout);
}

int weft_semaphore_release(weft_semaphore *s, int n) {
  if (n < 1) return weft__error(WEFT_EINVAL, "weft_semaphore_release: n must be >= 1, not %d", n);
  uint32_t v = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
  uint32_t limit = s->bounded ? s->bound : INT_MAX;
  do {
    if ((uint64_t)v + (uint64_t)n > limit)
      return weft__error(WEFT_EOVERFLOW, "%s: %s", s->name != NULL ? s->name : "semaphore",
                         s->bounded ? "BoundedSemaphore released too many times"
                                       : "value would overflow");
  } while (!__atomic_compare_exchange_n(&s->value, &v, v + (uint32_t)n, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED));
  if (__atomic_load_n(&s->waiters, __ATOMIC_SEQ_CST) != 0) weft__os_futex_wake(&s->value, n);
  return 0;
}

int weft_semaphore_value(const weft_semaphore *s) {
  return (int)__atomic_load_n(&s->value, __ATOMIC_RELAXED);
}
