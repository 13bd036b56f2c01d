/* Internal helpers shared by every weft source file. Nothing here is API. */
#ifndef WEFT_INTERNAL_H
#define WEFT_INTERNAL_H

#include <stdint.h>

#include "weft/common.h"
#include "weft/error.h"

/* Records code and a formatted sentence as the calling thread's last error
 * and returns code, so a failing path reads `return weft__error(...)`. */
int weft__error(int code, const char *fmt, ...) WEFT_PRINTF(2, 3);

/* An absolute CLOCK_MONOTONIC time in nanoseconds; WEFT__NEVER for none. */
typedef int64_t weft__deadline;
#define WEFT__NEVER INT64_MAX

/* Converts a timeout in seconds (negative: forever) into a deadline.
 * Returns WEFT_EINVAL for NaN. */
int weft__deadline_from(double timeout, weft__deadline *out);

/* Marks code a forked child runs before and after its target. The compiler
 * places such functions together (.text.hot), so a child faults in as few
 * code pages as possible: each one costs a start about a microsecond. */
#define WEFT__HOT __attribute__((hot))

#define WEFT__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
