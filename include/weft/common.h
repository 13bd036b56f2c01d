/* SPDX-License-Identifier: MIT */
/* weft/common.h — conventions shared by every weft header.
 *
 * Errors: a function that can fail returns 0 (or a non-negative value it
 * documents) on success and a negative WEFT_E* code on failure; see error.h.
 * Timeouts: a double number of seconds, as in Python; a negative value (for
 * example WEFT_FOREVER) waits forever and 0 does not wait at all.
 * Predicates (weft_*_is_*) return bool; on an invalid handle they return false
 * and set weft_last_error().
 */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

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

/* A timeout that never expires: wait as long as it takes. */
#define WEFT_FOREVER (-1.0)

/* The longest name weft keeps for a process or thread, without the final NUL. */
#define WEFT_NAME_MAX 63

/* Sleeps for the given number of seconds, like Python's time.sleep, going on
 * after a signal handler runs. WEFT_EINVAL for a negative or NaN value. */
WEFT_API int weft_sleep(double seconds);

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
