/* Event: a futex word holding the flag (bit 0) and a count of set() calls,
 * so that a waiter present at set() returns even if clear() follows before
 * it runs (as in Python, where such a wait returns True). A waiter count, as
 * in the semaphore, lets set() skip the system call when nobody waits. */
#include "internal.h"
#include "os/os.h"
#include "weft/sync.h"

#define FLAG 1u
#define ONE_SET 2u

int weft_event_init(weft_event *e) {
  if (e == NULL) return weft__error(WEFT_EINVAL, "weft_event_init: event is NULL");
  e->word = 0;
  e->waiters = 0;
  return 0;
}

int weft_event_set(weft_event *e) {
  uint32_t w = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
  while (!(w & FLAG) && !__atomic_compare_exchange_n(&e->word, &w, (w + ONE_SET) | FLAG, false,
                                                     __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  if (!(w & FLAG) && __atomic_load_n(&e->waiters, __ATOMIC_SEQ_CST) != 0)
    weft__os_futex_wake(&e->word, INT32_MAX);
  return 0;
}

int weft_event_clear(weft_event *e) {
  __atomic_fetch_and(&e->word, ~FLAG, __ATOMIC_SEQ_CST);
  return 0;
}

bool weft_event_is_set(const weft_event *e) {
  return __atomic_load_n(&e->word, __ATOMIC_ACQUIRE) & FLAG;
}

int weft_event_wait(weft_event *e, double timeout) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return err;
  uint32_t w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
  if (w & FLAG) return 0;
  if (timeout > 0) {
    __atomic_add_fetch(&e->waiters, 1, __ATOMIC_SEQ_CST);
    uint32_t now = __atomic_load_n(&e->word, __ATOMIC_SEQ_CST);
    /* Set once since we arrived (even if cleared again) counts as set. */
    while (now == w) {
      if (weft__os_futex_wait(&e->word, w, deadline) == -ETIMEDOUT) {
        now = __atomic_load_n(&e->word, __ATOMIC_SEQ_CST);
        break;
      }
      now = __atomic_load_n(&e->word, __ATOMIC_SEQ_CST);
    }
    __atomic_sub_fetch(&e->waiters, 1, __ATOMIC_SEQ_CST);
    if ((now & ~FLAG) != (w & ~FLAG) || (now & FLAG)) return 0;
  }
  return weft__error(WEFT_ETIMEDOUT, "event: not set within %g s", timeout);
}
