/* SPDX-License-Identifier: MIT */
/* Event: a futex word holding the flag (bit 0) and a count of set() calls,
 * so that a waiter present at set() returns even if clear() follows before
 * it runs (as in Python, where such a wait returns True). A waiter count, as
 * in the semaphore, lets set() skip the system call when nobody waits. */
#include "dump.h"
#include "internal.h"
#include "os/os.h"
#include "weft/sync.h"

#define FLAG 1u
#define ONE_SET 2u

/* `waiters` of a destroyed event, whose flag is clear: wait's fast path
 * does not return, and the slower paths look here. */
#define DESTROYED 0xffffffffu

/* For a NULL or destroyed event: the error, else 0. */
static int bad(const weft_event *e, const char *fn) {
  if (e == NULL) return weft__error(WEFT_EINVAL, "%s: event is NULL", fn);
  if (__atomic_load_n(&e->waiters, __ATOMIC_RELAXED) == DESTROYED)
    return weft__error(WEFT_ECLOSED, "%s: the event was destroyed", fn);
  return 0;
}

int weft_event_init(weft_event *e) {
  if (e == NULL) return weft__error(WEFT_EINVAL, "weft_event_init: event is NULL");
  e->word = 0;
  e->waiters = 0;
  return 0;
}

int weft_event_set(weft_event *e) {
  int err = bad(e, "weft_event_set");
  if (err != 0) return err;
  uint32_t w = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
  while (!(w & FLAG) && !__atomic_compare_exchange_n(&e->word, &w, (w + ONE_SET) | FLAG, false,
                                                     __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  if (!(w & FLAG) && __atomic_load_n(&e->waiters, __ATOMIC_SEQ_CST) != 0)
    weft__os_futex_wake(&e->word, INT32_MAX);
  return 0;
}

int weft_event_clear(weft_event *e) {
  int err = bad(e, "weft_event_clear");
  if (err != 0) return err;
  __atomic_fetch_and(&e->word, ~FLAG, __ATOMIC_SEQ_CST);
  return 0;
}

bool weft_event_is_set(const weft_event *e) {
  if (e == NULL) return bad(e, "weft_event_is_set"), false;
  if (__atomic_load_n(&e->word, __ATOMIC_ACQUIRE) & FLAG) return true;
  bad(e, "weft_event_is_set");
  return false;
}

int(weft_event_wait)(weft_event *e, double timeout) { return weft_event_wait_at(e, timeout, NULL); }

int weft_event_wait_at(weft_event *e, double timeout, const char *site) {
  if (e == NULL) return bad(e, "weft_event_wait");
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return err;
  uint32_t w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
  if (w & FLAG) return 0;
  if ((err = bad(e, "weft_event_wait")) != 0) return err;
  if (timeout > 0) {
    __atomic_add_fetch(&e->waiters, 1, __ATOMIC_SEQ_CST);
    uint32_t now = __atomic_load_n(&e->word, __ATOMIC_SEQ_CST);
    bool recorded = weft__wait_begin(WEFT__WAIT_EVENT, e, NULL, site, 0);
    /* Set once since we arrived (even if cleared again) counts as set. */
    while (now == w) {
      if (weft__os_futex_wait(&e->word, w, deadline) == -ETIMEDOUT) {
        now = __atomic_load_n(&e->word, __ATOMIC_SEQ_CST);
        break;
      }
      now = __atomic_load_n(&e->word, __ATOMIC_SEQ_CST);
    }
    __atomic_sub_fetch(&e->waiters, 1, __ATOMIC_SEQ_CST);
    weft__wait_end(recorded);
    if ((now & ~FLAG) != (w & ~FLAG) || (now & FLAG)) return 0;
  }
  return weft__error(WEFT_ETIMEDOUT, "event: not set within %g s", timeout);
}

int weft_event_destroy(weft_event *e) {
  int err = bad(e, "weft_event_destroy");
  if (err == WEFT_ECLOSED)
    return weft__error(err, "weft_event_destroy: the event was already destroyed");
  if (err != 0) return err;
  if (__atomic_load_n(&e->waiters, __ATOMIC_SEQ_CST) != 0)
    return weft__error(WEFT_EBUSY, "weft_event_destroy: the event has waiters");
  __atomic_store_n(&e->word, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&e->waiters, DESTROYED, __ATOMIC_RELAXED);
  return 0;
}
