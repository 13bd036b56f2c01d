/* SPDX-License-Identifier: MIT */
/* Time: timeouts in seconds, as Python takes them, turned into monotonic
 * deadlines, and sleeping. */
#include <math.h>

#include "internal.h"
#include "os/os.h"

int weft__deadline_from(double timeout, weft__deadline *out) {
  if (isnan(timeout)) return weft__error(WEFT_EINVAL, "timeout is NaN");
  if (timeout < 0 || timeout > 1e9) { /* 1e9 s is 31 years: treat as forever */
    *out = WEFT__NEVER;
    return 0;
  }
  *out = weft__os_now_ns() + (int64_t)(timeout * 1e9);
  return 0;
}

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
