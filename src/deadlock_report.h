/* SPDX-License-Identifier: MIT */
/* The deadlock detector's reports: their text, the set of those already
 * given, and their delivery. Functions named _locked run with the
 * detector's mutex held; deliver runs without it. */
#ifndef WEFT_DEADLOCK_REPORT_H
#define WEFT_DEADLOCK_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "deadlock.h"
#include "lockgraph.h"
#include "weft/deadlock.h"

struct weft__dd_report {
  char *text; /* NULL: nothing to report */
  size_t len, cap;
};

/* The cycle that the new edge closing (held -> new, made by thread t, or
 * by the thread its actor names if t is NULL: the locks that thread holds
 * are then not listed) closes, with the path new -> ... -> held: written
 * unless a gate lock guards every edge of it or it was reported before. table_hash: the
 * cycle's weft__dd_xorder_hash if all its locks are in the order table
 * (else 0), so that one reported across processes is not reported again. */
void weft__dd_report_inversion_locked(struct weft__dd_report *r, const struct weft__dd_thread *t,
                                      const weft__lg_edge *closing,
                                      const weft__lg_edge *const *path, int n,
                                      uint64_t table_hash);

/* What tells a cycle of locks of the order table (ids: their places in it,
 * any order) in the set of reports given. */
uint64_t weft__dd_xorder_hash(const uint64_t *ids, int n);

/* A live deadlock: t would wait forever for l, taken at site; the chain
 * of n locks and their owners leads back to t. Written once per chain. */
void weft__dd_report_live_locked(struct weft__dd_report *r, const struct weft__dd_thread *t,
                                 weft_lock *l, const char *site, weft_lock *const *locks,
                                 struct weft__dd_thread *const *owners, int n);

/* One step of a chain of waits across processes: the lock, the thread
 * (of any process of the tree) that holds it, and where that thread waits
 * for the next lock of the chain. Copied as text: the names live in the
 * holder's process. */
struct weft__dd_xstep {
  const void *lock;
  char label[128];
  pid_t pid, tid;
  char proc[WEFT_NAME_MAX + 1], thread[WEFT_NAME_MAX + 1];
  char site[128]; /* "" if unknown */
  uint64_t seq;   /* its registration in the wait table, 0: not registered */
};

/* A live deadlock through other processes: t (of process proc) waits for
 * l, taken at site, forever if blocking; the n steps lead back to t, the
 * last one being t itself. Written once per chain of locks. */
void weft__dd_report_xlive_locked(struct weft__dd_report *r, const struct weft__dd_thread *t,
                                  const char *proc, weft_lock *l, const char *site,
                                  bool blocking, const struct weft__dd_xstep *steps, int n);

/* One order of a cycle of lock orders across processes: the thread (of any
 * process of the tree) that took the next step's lock while holding this
 * step's. Copied as text from the order table (xorder.c): the names live
 * in processes that may be gone. */
struct weft__dd_xorder_step {
  char label[128], init[128];    /* how reports name it; where it was initialised, "" unknown */
  pid_t pid, tid;
  char proc[WEFT_NAME_MAX + 1], thread[WEFT_NAME_MAX + 1];
  char from_site[128], to_site[128]; /* where it and the next were taken, "" unknown */
};

/* A lock-order inversion across processes: the n steps run round the cycle,
 * the first being t's new order "held -> the lock it acquires". Written
 * once per cycle (hash: weft__dd_xorder_hash of its locks), in the words
 * of weft__dd_report_inversion_locked, each thread named with its process. */
void weft__dd_report_xorder_locked(struct weft__dd_report *r, const struct weft__dd_thread *t,
                                   const struct weft__dd_xorder_step *steps, int n,
                                   uint64_t hash);

/* How reports name a live lock (weft__dd_label_of of its name and site). */
const char *weft__dd_lock_label(const weft_lock *l, char *buf, size_t size);

/* Prints the report or hands it to the hook, and frees it; aborts in abort
 * mode. */
void weft__dd_deliver(struct weft__dd_report *r);

/* Receives reports instead of stderr (the public setter stores it here). */
void weft__dd_set_hook(weft_deadlock_hook hook, void *arg);

/* A Lock held by another process that the caller is about to wait for
 * forever: reported once if the copy it waits on is private to this
 * process. */
void weft__dd_private_lock_check(weft_lock *l);

/* How reports name a lock: its name, else "lock initialised at site", else
 * "lock <addr>" (the lock contention profile names locks the same way). */
const char *weft__dd_label_of(const char *name, const char *site, const void *addr, char *buf,
                              size_t size);

/* In a forked child: nothing reported yet. */
void weft__dd_reports_reset_locked(void);

#endif
