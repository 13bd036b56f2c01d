/* SPDX-License-Identifier: MIT */
/* weft/lockstat.h — the lock contention profile: for every Lock and RLock
 * (and so every Condition's lock), by name, how often it was taken, how
 * often a thread had to wait for it, how long the waits and the holds
 * lasted, and the acquire call sites (file:line) that waited most.
 *
 * Off by default. Turned on by the environment variable WEFT_LOCKSTAT, read
 * at start-up, or by weft_lockstat_enable():
 *   WEFT_LOCKSTAT=1              the table on stderr at exit
 *   WEFT_LOCKSTAT=json:FILE      JSON to FILE at exit (FILE is the rest of the value)
 *   WEFT_LOCKSTAT=1,sample=N     time the holds of 1 acquisition in N (see below)
 * Items are separated by commas and may be combined ("1,sample=1,json:f").
 * A value it does not understand is reported once on stderr and ignored.
 *
 * Counts (acquisitions, contended acquisitions) and waits are exact. A
 * wait is counted for an acquire that found the lock taken and waited for
 * it; its time runs from then until the lock was taken. A hold runs from
 * acquire to release; timing one costs two clock reads, more than the
 * acquire and release themselves. So each thread times the first
 * `sample` holds of each lock (WEFT_LOCKSTAT_SAMPLE by default), then 1 in
 * `sample` at random, and the total hold is estimated from the holds timed:
 * exact for a lock taken fewer times, within a few per cent for a busy one.
 * sample = 1 times every hold.
 *
 * Figures of processes forked after the profile was turned on are added to
 * their parent's when they exit, and the process that turned it on prints
 * the whole tree's table once, at its exit. A lock in shared memory
 * (weft_lock_new, weft_shared_alloc) is one row for the tree; a lock in
 * memory private to a child is a row of that child's, named with its pid.
 */
#ifndef WEFT_LOCKSTAT_H
#define WEFT_LOCKSTAT_H

#include <stdio.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The default sampling rate of hold times: 1 in 100 after the first 100. */
#define WEFT_LOCKSTAT_SAMPLE 100

/* Options of weft_lockstat_enable. */
typedef struct weft_lockstat_options {
  size_t size_;     /* set by the macro */
  int sample;       /* time 1 hold in sample (>= 1); 0: WEFT_LOCKSTAT_SAMPLE */
  bool quiet;       /* no table on stderr at exit (weft_lockstat_print still prints) */
  const char *json; /* also write the JSON to this file at exit; NULL: none */
} weft_lockstat_options;

/* Turns the profile on from now, e.g. weft_lockstat_enable() or
 * weft_lockstat_enable(.sample = 1, .json = "locks.json"). Calling it again
 * changes the options and keeps the figures. WEFT_EINVAL for a sample below
 * 0; WEFT_ENOMEM if the memory shared with children cannot be mapped. */
#define weft_lockstat_enable(...)                                                         \
  weft_lockstat_enable_opts(&(const weft_lockstat_options){                               \
      .size_ = sizeof(weft_lockstat_options), __VA_ARGS__})
WEFT_API int weft_lockstat_enable_opts(const weft_lockstat_options *opts);

/* Stops counting; the figures so far stay, for weft_lockstat_print. */
WEFT_API int weft_lockstat_disable(void);

/* Whether the profile is on. */
WEFT_API bool weft_lockstat_enabled(void);

/* Prints the table now, on stderr: every lock with at least one
 * acquisition, by total wait (then by acquisitions), with this process's
 * figures and those of the children that have exited. */
WEFT_API int weft_lockstat_print(void);

/* Writes the same figures as JSON to out. WEFT_EINVAL for NULL, the
 * stream's errno (WEFT_EIO, ...) if writing fails. */
WEFT_API int weft_lockstat_write_json(FILE *out);

/* Forgets every figure so far, this process's and its children's. */
WEFT_API int weft_lockstat_reset(void);

#ifdef __cplusplus
}
#endif

#endif
