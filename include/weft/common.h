/* SPDX-License-Identifier: MIT */
/* weft/common.h — conventions shared by every weft header.
 *
 * Errors: a function that can fail returns 0 (or a non-negative value it
 * documents) on success and a negative WEFT_E* code on failure; see error.h.
 * Timeouts: every call that waits takes a double number of seconds, with one
 * rule:
 *   - WEFT_FOREVER (+infinity) waits as long as it takes, as Python's None
 *     does; so does any value above 1e9 s (31 years);
 *   - any other value <= 0, negative ones included (-1, -1e-9, -infinity),
 *     does not wait: the call succeeds if it can at once, else it returns
 *     its "not yet" result (WEFT_ETIMEDOUT, WEFT_EEMPTY, WEFT_EFULL, ...), as
 *     with a timeout that ran out;
 *   - NaN is WEFT_EINVAL.
 * So a deadline works as is: weft_queue_get(q, &x, deadline - weft_monotonic())
 * gives up at once when the deadline has passed. weft_sleep alone refuses a
 * negative value (as time.sleep does), and weft_barrier_wait takes
 * WEFT_DEFAULT for the barrier's own timeout.
 * Predicates (weft_*_is_*) return bool; on an invalid handle they return false
 * and set weft_last_error().
 */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(WEFT_BUILDING) && defined(__GNUC__)
#define WEFT_API __attribute__((visibility("default")))
#else
#define WEFT_API
#endif

#if defined(__GNUC__)
#define WEFT_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define WEFT_PRINTF(fmt, args)
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

/* A timeout that never expires: wait as long as it takes (Python's None). */
#define WEFT_FOREVER ((double)INFINITY)

/* "Left out: take the default", where 0 or a negative value means something
 * else: what the pool option macros give .workers and .chunksize when left
 * out, and the timeout that makes weft_barrier_wait use the barrier's own, as
 * Python's Barrier.wait(None) does. INT_MIN: -2147483648.0 as a timeout. */
#define WEFT_DEFAULT INT_MIN

#define WEFT__SYNC_STR(x) #x
#define WEFT__SYNC_XSTR(x) WEFT__SYNC_STR(x)
/* "file.c:12": where an initialiser or a call was written, for deadlock
 * reports and dumps. */
#define WEFT__SITE __FILE__ ":" WEFT__SYNC_XSTR(__LINE__)

/* The longest name weft keeps for a process or thread, without the final NUL. */
#define WEFT_NAME_MAX 63

/* Sleeps for the given number of seconds, like Python's time.sleep, going on
 * after a signal handler runs: 0 sleeps not at all, WEFT_FOREVER (or above
 * 1e9) for ever. Unlike a timeout, a negative value is WEFT_EINVAL, as
 * time.sleep raises ValueError for it; so is NaN. */
WEFT_API int weft_sleep(double seconds);

/* Seconds on the monotonic clock (CLOCK_MONOTONIC), like Python's
 * time.monotonic(): only differences between two readings mean anything,
 * e.g. a deadline = weft_monotonic() + 5, then a timeout of
 * deadline - weft_monotonic(). */
WEFT_API double weft_monotonic(void);

/* Returns the library version as "MAJOR.MINOR.PATCH". */
WEFT_API const char *weft_version(void);

/* Options read like Python's keyword arguments: weft_process_new(task,
 * .name = "w") is a macro that builds the call's options struct with
 * designated initialisers and passes it to weft_process_new_opts. The macro
 * sets the struct's size_ field to its size, so that a later version with
 * more fields can tell which ones the caller compiled against. Each macro
 * takes all its arguments as one list and appends an empty one, so a call
 * with no options, such as weft_lock_init(&lock), is ISO C11 as it stands. */

#ifdef __cplusplus
}
#endif

#endif
