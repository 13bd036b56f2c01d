/* SPDX-License-Identifier: MIT */
/* The order table: lock orders between Locks in shared memory, as every
 * process of the tree took them, so that an inversion whose two orders
 * come from different processes is reported the first time, as one within
 * a process is (xorder.c, docs/deadlock.md). */
#ifndef WEFT_XORDER_H
#define WEFT_XORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deadlock.h"
#include "deadlock_report.h"

/* Shared locks the table knows at once, and orders between them: an order
 * met when either is full is not recorded (a notice says so once). */
#define WEFT__XO_LOCKS 1024
#define WEFT__XO_ORDERS 4096

/* The bytes of shared memory the table needs (region.c makes it beside the
 * wait table). */
size_t weft__xo_table_size(void);

/* The table this process uses, as for the wait table (xwait.h). */
void weft__xo_set_table(void *table);

/* Called with the detector's mutex held, for the order held -> l that the
 * lock graph has just taken as new: t->held[i] is the held lock, ids[] the
 * graph's nodes of t's held locks (0: none), to the node of l. If both
 * locks live in shared memory, the order is published to the table and the
 * table is searched for a path the other way; a cycle found is written
 * into r as a possible deadlock across processes. own_cycle: the graph
 * found a cycle through this order, which it reports itself, so only a
 * cycle through an order of another process counts here. */
void weft__xo_add_locked(struct weft__dd_thread *t, int i, const uint32_t *ids, weft_lock *l,
                         uint32_t to, const char *site, bool own_cycle,
                         struct weft__dd_report *r);

/* The graph's xref word (weft__lg_xref) of a lock in private memory: its
 * orders never reach the table. */
#define WEFT__XO_PRIVATE 1u

/* Whether lock l of graph node id lives in private memory (looked up once
 * per node, then remembered in its xref word). Mutex held. */
bool weft__xo_private_locked(weft_lock *l, uint32_t id);

/* What names the lock of graph node id in the table (for the set of
 * reports: weft__dd_xorder_hash), 0 if it is not there. Mutex held. */
uint64_t weft__xo_id_locked(uint32_t id);

/* True the first time a process of the tree reports the cycle whose
 * weft__dd_xorder_hash is hash (or if the table cannot tell). Mutex held. */
bool weft__xo_first_report_locked(uint64_t hash);

/* The lock's life ended (destroyed, or initialised again): its orders
 * leave the table, so that a lock made later in the same memory starts
 * with none. Mutex held. */
void weft__xo_forget_locked(weft_lock *l);

#endif
