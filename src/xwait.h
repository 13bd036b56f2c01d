/* SPDX-License-Identifier: MIT */
/* The wait table: what the threads of a process tree wait for across
 * processes, so that the deadlock detector can follow a chain of waits
 * through locks held by other processes (xwait.c, docs/deadlock.md). */
#ifndef WEFT_XWAIT_H
#define WEFT_XWAIT_H

#include <stdbool.h>
#include <stddef.h>

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

/* Before the calling thread sleeps on l, held by another process: registers
 * the wait and follows lock -> holder -> the lock it waits for ... through
 * the table. If the chain comes back to the caller and the caller's wait is
 * the last of the cycle's to start, reports it once; returns WEFT_EDEADLK if
 * may_refuse (a blocking acquire, which may fail) and the mode is error,
 * else 0. forever: the wait has no timeout. The wait stays registered until
 * weft__xw_after. site: the acquire's. */
int weft__xw_before_sleep(weft_lock *l, bool forever, bool may_refuse, const char *site);

/* The wait registered by weft__xw_before_sleep ended. */
void weft__xw_after(void);

#endif
