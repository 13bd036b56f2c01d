/* SPDX-License-Identifier: MIT */
/* The wait table: what the threads of a process tree wait for across
 * processes, so that the deadlock detector can follow a chain of waits
 * through locks held by other processes (xwait.c, docs/deadlock.md). */
#ifndef WEFT_XWAIT_H
#define WEFT_XWAIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "weft/sync.h"

/* Slots of the table: waits beyond this many at once are not registered,
 * and detection across processes is skipped for them. */
#define WEFT__XW_SLOTS 1024

/* The bytes of shared memory the table needs (region.c makes it). */
size_t weft__xw_table_size(void);

/* The table this process uses: region.c sets it when it makes the table
 * with the process's first region, or maps its parent's in a spawned
 * child; a forked child inherits it. NULL: none yet. */
void weft__xw_set_table(void *table);
void *weft__xw_get_table(void);

/* Before the calling thread sleeps on l, held by another process -- or by
 * another thread of its own process, if that wait can be a step of a chain
 * across processes (xwait.c says when) -- registers the wait and follows
 * lock -> holder -> the lock it waits for ... through the table. If the
 * chain comes back to the caller through another process and the caller's
 * wait is the last of the cycle's to start, reports it once; returns
 * WEFT_EDEADLK if may_refuse (a blocking acquire, which may fail) and the
 * mode is error; else 1 if it registered the wait now (time has passed:
 * the caller looks at the lock again), 0 if not. forever: the wait has no
 * timeout. The wait stays
 * registered until weft__xw_after. site: the acquire's. */
int weft__xw_before_sleep(weft_lock *l, bool forever, bool may_refuse, const char *site);

/* Before a registered waiter sleeps again on l: the holder it recorded for
 * others, if l is private to its process, follows l's holder now. */
void weft__xw_resleep(const weft_lock *l);

/* The wait registered by weft__xw_before_sleep ended. */
void weft__xw_after(void);

/* A registered wait as another thread reads it. */
struct weft__xw_wait {
  uint64_t seq;    /* its registration's number */
  uint64_t lock;   /* the lock awaited, an address in the waiter's process */
  uint64_t holder; /* pid << 32 | tid of the lock's holder when the lock is
                    * private to the waiter's process; 0: read it from the lock */
  char proc[WEFT_NAME_MAX + 1], thread[WEFT_NAME_MAX + 1];
  char label[128], site[128]; /* site: "" if unknown */
};

/* What thread tid of process pid waits for, if its wait is registered and
 * its process alive. Async-signal-safe (weft_dump reads it): atomic loads
 * of the table, and system calls to see that the process is alive. */
bool weft__xw_peek(pid_t pid, pid_t tid, struct weft__xw_wait *w);

#endif
