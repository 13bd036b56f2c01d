/* SPDX-License-Identifier: MIT */
/* What each thread is waiting for, recorded for weft_dump (dump.c).
 *
 * Every thread the thread registry knows (weft's threads, MainThread,
 * Dummy-N) has a record: its identity, and the wait it is in, if any. Only
 * the thread itself writes its record, with plain stores made atomic
 * (relaxed and release, which cost nothing more than plain ones on x86)
 * under a sequence counter, so a dump read from any thread -- or from a
 * signal handler interrupting the writer -- sees either one whole state or
 * a counter that moved and says so. A wait is recorded only on the slow
 * path, when the thread is about to sleep: the uncontended fast paths do
 * not change.
 *
 * Records are never freed: a thread that ends gives its record back and a
 * later thread takes it again, so the list (pushed at its head, never cut)
 * can be walked from a signal handler without a lock, and a record read
 * while its thread ends shows stale data, never freed memory.
 */
#ifndef WEFT_DUMP_INTERNAL_H
#define WEFT_DUMP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"
#include "os/os.h"
#include "weft/common.h"

enum weft__wait_kind {
  WEFT__WAIT_NONE,
  WEFT__WAIT_LOCK,          /* obj: the weft_lock */
  WEFT__WAIT_COND,          /* obj: the condition's weft_lock, what: its label */
  WEFT__WAIT_SEMAPHORE,     /* what: its name or NULL */
  WEFT__WAIT_EVENT,
  WEFT__WAIT_BARRIER,       /* obj: the barrier's weft_lock (named by its initialiser) */
  WEFT__WAIT_QUEUE_GET,     /* what: the queue's name */
  WEFT__WAIT_QUEUE_PUT,
  WEFT__WAIT_QUEUE_JOIN,
  WEFT__WAIT_THREAD_JOIN,   /* what: the thread's name */
  WEFT__WAIT_PROCESS_JOIN,  /* what: the process's name, arg: its pid */
  WEFT__WAIT_FUTURE,        /* obj: the future's handle id */
};

struct weft__wait_rec {
  /* Written by the thread itself; odd while it changes. */
  uint32_t seq;
  uint32_t kind;     /* enum weft__wait_kind */
  const void *obj;   /* only for dumps to name and follow, read through weft__os_peek */
  const char *what;  /* a string that outlives the wait (a name or label) */
  const char *site;  /* the call's file:line, or NULL */
  int64_t arg;
  int64_t since;     /* when the wait began (monotonic ns) */
  uint64_t ends;     /* waits ended, ever: never reset, so the watchdog's sum only grows */
  /* The identity, written when the record is taken. */
  pid_t pid;         /* the process of the thread holding it; 0 or another pid: free */
  pid_t tid;
  uint32_t daemon;
  char name[WEFT_NAME_MAX + 1];
  void *dd;          /* the thread's deadlock detector record (struct weft__dd_thread), or NULL */
  struct weft__wait_rec *next; /* set once, before the record is published */
};

/* The calling thread's record, or NULL (a thread weft does not know). */
extern _Thread_local struct weft__wait_rec *weft__wait_self
    __attribute__((tls_model("initial-exec")));

/* Records that the calling thread is about to wait; returns whether it did
 * (not when the thread has no record, or is already inside a wait that
 * this one is part of, such as a Barrier re-taking its lock). */
static inline bool weft__wait_begin(enum weft__wait_kind kind, const void *obj, const char *what,
                                    const char *site, int64_t arg) {
  struct weft__wait_rec *r = weft__wait_self;
  if (r == NULL || __atomic_load_n(&r->kind, __ATOMIC_RELAXED) != WEFT__WAIT_NONE) return false;
  uint32_t seq = __atomic_load_n(&r->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&r->seq, seq + 1, __ATOMIC_RELAXED);
  /* Release: a reader that sees any of these sees the odd counter too. */
  __atomic_store_n(&r->obj, obj, __ATOMIC_RELEASE);
  __atomic_store_n(&r->what, what, __ATOMIC_RELEASE);
  __atomic_store_n(&r->site, site, __ATOMIC_RELEASE);
  __atomic_store_n(&r->arg, arg, __ATOMIC_RELEASE);
  __atomic_store_n(&r->since, weft__os_now_ns(), __ATOMIC_RELEASE);
  __atomic_store_n(&r->kind, (uint32_t)kind, __ATOMIC_RELEASE);
  __atomic_store_n(&r->seq, seq + 2, __ATOMIC_RELEASE);
  return true;
}

/* Ends a wait weft__wait_begin recorded (begun: what it returned). */
static inline void weft__wait_end(bool begun) {
  if (!begun) return;
  struct weft__wait_rec *r = weft__wait_self;
  if (r == NULL) return;
  uint32_t seq = __atomic_load_n(&r->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&r->seq, seq + 1, __ATOMIC_RELAXED);
  __atomic_store_n(&r->kind, (uint32_t)WEFT__WAIT_NONE, __ATOMIC_RELEASE);
  __atomic_store_n(&r->ends, __atomic_load_n(&r->ends, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
  __atomic_store_n(&r->seq, seq + 2, __ATOMIC_RELEASE);
}

/* Gives the calling thread a record with this identity (thread.c, when a
 * thread starts or becomes known). Allocates only when no record is free;
 * out of memory, the thread goes unrecorded. */
void weft__wait_rec_take(const char *name, bool daemon);

/* The calling thread ends: its record is free again. */
void weft__wait_rec_give_back(void);

/* In a forked child: the forking thread's record now describes it there. */
void weft__wait_rec_forked(void);

/* The deadlock detector made (or dropped, NULL) the calling thread's record. */
void weft__wait_rec_set_dd(void *dd);

/* Writes a dump to fd; reason says what asked for it (may be empty).
 * Async-signal-safe. 0, WEFT_EBUSY while another dump is being written, or
 * the first write's error. */
int weft__dump_to(int fd, const char *reason);

/* The waits ended by every thread, ever, summed: a program that makes
 * progress moves it. *waiting: whether a thread of this process waits now.
 * For the watchdog (dump_watch.c). */
uint64_t weft__dump_progress(bool *waiting);

/* From the library constructor: reads WEFT_DUMP_SIGNAL (before the
 * forkserver starts, whose children inherit the handler), and
 * WEFT_DUMP_AFTER (after: the server itself runs no watchdog thread). */
void weft__dump_init(void);
void weft__dump_watch_init(void);

/* In a forked child: the watchdog thread stayed in the parent. */
void weft__dump_after_fork_child(void);

/* process.c: calls fn for each child on the running list, read without the
 * registry's mutex through weft__os_peek (async-signal-safe: a child that
 * changes meanwhile may be shown stale or missed, never read from freed
 * memory). Stops after max children and returns how many it saw. */
int weft__process_each_child(void (*fn)(void *ctx, const char *name, pid_t pid, bool daemon),
                             void *ctx, int max);

/* process.c: this process's own name; a string that lives as long as it. */
const char *weft__process_own_name(void);

#endif
