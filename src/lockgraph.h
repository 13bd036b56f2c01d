/* SPDX-License-Identifier: MIT */
/* The lock-order graph of the deadlock detector: a node per lock it has
 * seen, an edge "held -> taken" per order seen, and an incremental
 * topological order of the nodes (Pearce and Kelly, "A dynamic topological
 * sort algorithm for directed acyclic graphs", 2006), so that an order that
 * agrees with it is added in constant time and only one against it is
 * searched, within the nodes between its two ends.
 *
 * Every function here except weft__lg_ordered and weft__lg_epoch's read is
 * called with the detector's mutex held (deadlock.c); the graph has no
 * lock of its own. */
#ifndef WEFT_LOCKGRAPH_H
#define WEFT_LOCKGRAPH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "weft/sync.h"

#define WEFT__LG_MAX_GATES 4

/* What an edge remembers of the acquire that made it, for reports. */
typedef struct weft__lg_edge {
  uint32_t from, to;                     /* node ids */
  uint32_t gates[WEFT__LG_MAX_GATES];    /* other locks held when it was seen: a cycle whose */
  uint32_t ngates;                       /* edges all share one of them cannot deadlock */
  const char *from_site, *to_site;       /* where the held lock and the new one were taken */
  uint32_t actor;                        /* the thread that took them (weft__lg_actor) */
  bool back;                             /* it closed a cycle: kept outside the order */
} weft__lg_edge;

/* Changes whenever a lock's serial (the value its dd_node field holds) may
 * come back for another lock: thread caches keyed by serials are then void.
 * Read without the mutex. */
extern uint32_t weft__lg_epoch;

/* The node of the lock if the graph has one for it, else 0; repairs the
 * lock's dd_node if another process overwrote it. */
uint32_t weft__lg_find(weft_lock *lock);

/* The node of the lock, made if it has none (the lock's dd_node is set to
 * its serial). A lock whose dd_node is 0 was initialised since it was last
 * seen: a node left at its address is dropped first. 0 if out of memory. */
uint32_t weft__lg_node(weft_lock *lock);

/* An order named by its nodes and their lives (weft__lg_alive), which a
 * thread can log without the mutex and the graph take in later. */
typedef struct weft__lg_pair {
  uint32_t from, to, from_lives, to_lives;
} weft__lg_pair;

/* Without the mutex: whether both locks have nodes whose xref word is
 * xref, the graph has no edge outside the order, and from ranks before to
 * -- so that the edge from -> to, added to the graph as it is, would
 * close no cycle and move no rank. *p names the order if so. The caller
 * must learn of any rank moved meanwhile (deadlock.c: the order log). */
bool weft__lg_ordered(const weft_lock *from, const weft_lock *to, uint64_t xref,
                      weft__lg_pair *p);

/* Whether the graph has an edge outside the order (then weft__lg_ordered
 * refuses every order). */
bool weft__lg_has_back(void);

/* id if the node still has the life `lives`, else 0 (its lock is gone). */
uint32_t weft__lg_alive(uint32_t id, uint32_t lives);

/* Drops the lock's node and every edge to or from it. */
void weft__lg_forget(weft_lock *lock);

/* Adds the edge from -> to with the given details (from, to and back are
 * filled in). Returns 0 if it was known already, 1 if it was added, 2 if
 * it closed a cycle: the edge is then kept outside the order and
 * weft__lg_cycle() lists the path to -> ... -> from. Negative if out of
 * memory. */
int weft__lg_add(uint32_t from, uint32_t to, const weft__lg_edge *details);

/* The same, but if plain and the edge is new and would move a rank or need
 * a search (it goes against the order, or an edge outside the order
 * exists), returns 3 having done nothing. */
int weft__lg_add_plain(uint32_t from, uint32_t to, const weft__lg_edge *details, bool plain);

/* Starts loading what adding from -> to will read: the two nodes, or
 * (maps, once the nodes are in) the slots of their maps. For a batch of
 * adds, issued a few adds ahead. */
void weft__lg_prefetch(uint32_t from, uint32_t to, bool maps);

/* After weft__lg_add returned 2: fills edges[] with the path from `to` back
 * to `from` in order and returns its length (at most max). */
int weft__lg_cycle(const weft__lg_edge **edges, int max);

/* What a node recorded of its lock when it was made (reports never read
 * the lock itself, which may be gone), and its serial, which tells the
 * lives of locks sharing a node id apart. */
void weft__lg_names(uint32_t id, const char **name, const char **site, const void **addr);
uint32_t weft__lg_serial(uint32_t id);

/* When the node was made for a lock no process had seen since it was
 * initialised (its dd_node was 0), on the monotonic clock; 0 if it was
 * not. The order table (xorder.c) tells by it a lock new in old memory
 * from one that other processes are using. */
int64_t weft__lg_fresh_at(uint32_t id);

/* A word the order table keeps per node (what the lock is in the table),
 * 0 when the node is made. */
uint64_t weft__lg_xref(uint32_t id);
void weft__lg_set_xref(uint32_t id, uint64_t xref);

/* Interned thread identities for the edges: one reference per edge and one
 * for the thread itself, dropped with weft__lg_actor_put. 0 if out of
 * memory (the edge then names no thread). */
uint32_t weft__lg_actor(pid_t tid, const char *name);
void weft__lg_actor_put(uint32_t actor);
pid_t weft__lg_actor_tid(uint32_t actor);
const char *weft__lg_actor_name(uint32_t actor);

/* In a forked child: an empty graph (the parent's orders are not the
 * child's) and no actors; serials start afresh from a point of the
 * child's own. */
void weft__lg_reset(void);

#endif
