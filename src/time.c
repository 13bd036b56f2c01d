/* SPDX-License-Identifier: MIT */
/* Time: timeouts in seconds, as Python takes them, turned into monotonic
 * deadlines, and sleeping. */
#include <math.h>

#include "internal.h"
#include "os/os.h"

int weft__deadline_from(double timeout, weft__deadline *out) {
  if (isnan(timeout)) return weft__error(WEFT_EINVAL, "timeout is NaN");
  if (weft__waits_forever(timeout)) {
    *out = WEFT__NEVER;
    return 0;
  }
  /* Clamped, not added: now minus a huge negative timeout would be a time
   * before boot, which the kernel's waits refuse. */
  int64_t now = weft__os_now_ns();
  *out = timeout > 0 ? now + (int64_t)(timeout * 1e9) : now;
  return 0;
}

double weft__timeout_left(weft__deadline deadline) {
  if (deadline == WEFT__NEVER) return WEFT_FOREVER;
  int64_t left = deadline - weft__os_now_ns();
  return left > 0 ? (double)left / 1e9 : 0;
}

double weft_monotonic(void) { return (double)weft__os_now_ns() / 1e9; }

bool weft__deadline_passed(weft__deadline deadline) {
  return deadline != WEFT__NEVER && weft__os_now_ns() >= deadline;
}

int weft_sleep(double seconds) {
  weft__deadline deadline = 0;
  int err = weft__deadline_from(seconds, &deadline);
  if (err != 0) return err;
  if (seconds < 0) return weft__error(WEFT_EINVAL, "weft_sleep: seconds is negative");
  return weft__os_sleep_until(deadline);
}
