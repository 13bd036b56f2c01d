/* SPDX-License-Identifier: MIT */
/* The deadlock detector's reports (deadlock_report.h), and the check for
 * a primitive waited on in memory private to this process. */
#define _GNU_SOURCE
#include "deadlock_report.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "lock.h"
#include "os/os.h"
#include "weft/deadlock.h"
#include "xorder.h"

static weft_deadlock_hook hook;
static void *hook_arg;
static uint64_t *reported; /* hashes of what was reported already */
static size_t n_reported, cap_reported;

static void put(struct weft__dd_report *r, const char *fmt, ...) WEFT_PRINTF(2, 3);
static void put(struct weft__dd_report *r, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(r->text != NULL ? r->text + r->len : NULL, r->text != NULL ? r->cap - r->len : 0,
                      fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (r->text != NULL && r->len + (size_t)n < r->cap) {
      r->len += (size_t)n;
      return;
    }
    size_t cap = (r->cap + (size_t)n + 1) * 2;
    char *text = realloc(r->text, cap);
    if (text == NULL) return;
    r->text = text;
    r->cap = cap;
  }
}

const char *weft__dd_label_of(const char *name, const char *site, const void *addr, char *buf,
                              size_t size) {
  if (name != NULL)
    snprintf(buf, size, "%s", name);
  else if (site != NULL)
    snprintf(buf, size, "lock initialised at %s", site);
  else
    snprintf(buf, size, "lock %p", addr);
  return buf;
}

/* For locks the caller knows to be alive (held, or being acquired). */
static const char *label(const weft_lock *l, char *buf, size_t size) {
  return weft__dd_label_of(weft__layout_text(l->layout, l->name),
                           weft__layout_text(l->layout, l->site), l, buf, size);
}

const char *weft__dd_lock_label(const weft_lock *l, char *buf, size_t size) {
  return label(l, buf, size);
}

static const char *node_label(uint32_t id, char *buf, size_t size) {
  const char *name, *site;
  const void *addr;
  weft__lg_names(id, &name, &site, &addr);
  return weft__dd_label_of(name, site, addr, buf, size);
}

/* True the first time h is seen. */
static bool first_time_locked(uint64_t h) {
  for (size_t i = 0; i < n_reported; i++)
    if (reported[i] == h) return false;
  if (n_reported == cap_reported) {
    size_t cap = cap_reported ? cap_reported * 2 : 16;
    uint64_t *p = realloc(reported, cap * sizeof *p);
    if (p == NULL) return true;
    reported = p;
    cap_reported = cap;
  }
  reported[n_reported++] = h;
  return true;
}

void weft__dd_reports_reset_locked(void) { n_reported = 0; }

static void put_held(struct weft__dd_report *r, const struct weft__dd_thread *t) {
  char name[128];
  if (t->depth == 0) {
    put(r, "  %s (tid %d) holds no lock\n", t->name, (int)t->tid);
    return;
  }
  put(r, "  %s (tid %d) holds:\n", t->name, (int)t->tid);
  for (int i = 0; i < t->depth; i++)
    put(r, "    \"%s\" acquired at %s\n", label(t->held[i].lock, name, sizeof name),
        t->held[i].site != NULL ? t->held[i].site : "(site unknown)");
}

static bool gated(const weft__lg_edge *closing, const weft__lg_edge *const *path, int n) {
  /* A lock held across every edge of the cycle (a "gate") serialises them:
   * no two threads can be inside the cycle at once. */
  for (uint32_t g = 0; g < closing->ngates; g++) {
    bool common = true;
    for (int i = 0; i < n && common; i++) {
      common = false;
      for (uint32_t k = 0; k < path[i]->ngates; k++)
        if (path[i]->gates[k] == closing->gates[g]) common = true;
    }
    if (common) return true;
  }
  return false;
}

static uint64_t cycle_hash(const weft__lg_edge *const *path, int n) {
  /* Order-free: the same cycle found from any of its locks hashes alike;
   * by serial, so that a cycle of new locks in recycled nodes is new. */
  uint64_t h = 0;
  for (int i = 0; i < n; i++) {
    uint64_t x = ((uint64_t)weft__lg_serial(path[i]->from) << 32 | path[i]->from) *
                 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    h += x * 0xbf58476d1ce4e5b9ull;
  }
  return h ^ (uint64_t)n;
}

uint64_t weft__dd_xorder_hash(const uint64_t *ids, int n) {
  /* Order-free, and seeded apart from the graph's cycles. */
  uint64_t h = 0x0bde2;
  for (int i = 0; i < n; i++) {
    uint64_t x = ids[i] * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    h += x * 0xbf58476d1ce4e5b9ull;
  }
  return h ^ (uint64_t)n;
}

void weft__dd_report_inversion_locked(struct weft__dd_report *r, const struct weft__dd_thread *t,
                                      const weft__lg_edge *closing,
                                      const weft__lg_edge *const *path, int n,
                                      uint64_t table_hash) {
  if (gated(closing, path, n)) return;
  /* The whole cycle, closing edge included, for the hash. */
  const weft__lg_edge *all[WEFT_DEADLOCK_REPORT_MAX_CHAIN * 64 + 1];
  memcpy(all, path, sizeof all[0] * (size_t)n);
  all[n] = closing;
  if (!first_time_locked(cycle_hash(all, n + 1))) return;
  /* A cycle of shared locks: once in the whole tree, however found. */
  if (table_hash != 0 &&
      (!first_time_locked(table_hash) || !weft__xo_first_report_locked(table_hash)))
    return;

  uint32_t held_id = closing->from, new_id = closing->to;
  char a[128], b[128];
  const char *at = closing->to_site != NULL ? closing->to_site : "?";
  const char *from_at = closing->from_site != NULL ? closing->from_site : "(site unknown)";
  put(r, "weft: possible deadlock: lock-order inversion between %d locks\n", n + 1);
  /* An order another thread logged names its thread only by the edge. */
  const char *who = t != NULL ? t->name : weft__lg_actor_name(closing->actor);
  int tid = t != NULL ? (int)t->tid : (int)weft__lg_actor_tid(closing->actor);
  put(r, "  %s (tid %d) acquires \"%s\" at %s while holding \"%s\" (acquired at %s)\n", who, tid,
      node_label(new_id, a, sizeof a), at, node_label(held_id, b, sizeof b), from_at);
  put(r, "  the locks:\n");
  /* From the new lock along the path; the held one last. */
  for (int i = 0; i <= n; i++) {
    if (i >= WEFT_DEADLOCK_REPORT_MAX_CHAIN) {
      put(r, "    ... (%d more, truncated)\n", n + 1 - i);
      break;
    }
    uint32_t id = i < n ? path[i]->from : held_id;
    const char *name, *site;
    const void *addr;
    weft__lg_names(id, &name, &site, &addr);
    put(r, "    \"%s\" initialised at %s\n", weft__dd_label_of(name, site, addr, a, sizeof a),
        site != NULL ? site : "(unknown)");
  }
  put(r, "  the cycle:\n");
  /* The new edge first, then the path back round: held -> new -> ... -> held. */
  put(r, "    \"%s\" -> \"%s\": %s (tid %d) took the second at %s while holding the first (taken at %s)\n",
      node_label(held_id, a, sizeof a), node_label(new_id, b, sizeof b), who, tid, at, from_at);
  for (int i = 0; i < n; i++) {
    const weft__lg_edge *e = path[i];
    if (i + 1 >= WEFT_DEADLOCK_REPORT_MAX_CHAIN) {
      put(r, "    ... (%d more, truncated)\n", n - i);
      break;
    }
    put(r, "    \"%s\" -> \"%s\": %s (tid %d) took the second at %s while holding the first (taken at %s)\n",
        node_label(e->from, a, sizeof a), node_label(e->to, b, sizeof b),
        weft__lg_actor_name(e->actor), (int)weft__lg_actor_tid(e->actor),
        e->to_site ? e->to_site : "?", e->from_site ? e->from_site : "(site unknown)");
  }
  if (t != NULL) put_held(r, t);
  put(r, "  possible scenario:\n");
  put(r, "    thread 1 holds \"%s\", wants \"%s\"\n", node_label(held_id, a, sizeof a),
      node_label(new_id, b, sizeof b));
  for (int i = 0; i < n && i < WEFT_DEADLOCK_REPORT_MAX_CHAIN - 1; i++)
    put(r, "    thread %d holds \"%s\", wants \"%s\"\n", i + 2, node_label(path[i]->from, a, sizeof a),
        node_label(path[i]->to, b, sizeof b));
  put(r, "    and each waits for the next: deadlock\n");
}

/* "Thread (tid N) of process "P" (pid M)", for steps across processes. */
static const char *xactor(const struct weft__dd_xorder_step *s, char *buf, size_t size) {
  snprintf(buf, size, "%s (tid %d) of process \"%s\" (pid %d)", s->thread, (int)s->tid, s->proc,
           (int)s->pid);
  return buf;
}

static const char *or_unknown(const char *site, const char *unknown) {
  return site[0] != '\0' ? site : unknown;
}

void weft__dd_report_xorder_locked(struct weft__dd_report *r, const struct weft__dd_thread *t,
                                   const struct weft__dd_xorder_step *steps, int n,
                                   uint64_t hash) {
  /* The same locks found through the table, or in the graph (its reports'
   * table_hash), are one report. */
  if (!first_time_locked(hash)) return;

  const struct weft__dd_xorder_step *c = &steps[0]; /* held -> new, by t */
  const char *held = c->label, *new_lock = steps[1 % n].label;
  char who[256];
  put(r, "weft: possible deadlock: lock-order inversion between %d locks, across processes\n", n);
  put(r, "  %s acquires \"%s\" at %s while holding \"%s\" (acquired at %s)\n",
      xactor(c, who, sizeof who), new_lock, or_unknown(c->to_site, "?"), held,
      or_unknown(c->from_site, "(site unknown)"));
  put(r, "  the locks:\n");
  /* From the new lock round the cycle; the held one last. */
  for (int i = 1; i <= n; i++) {
    if (i > WEFT_DEADLOCK_REPORT_MAX_CHAIN) {
      put(r, "    ... (%d more, truncated)\n", n + 1 - i);
      break;
    }
    const struct weft__dd_xorder_step *s = &steps[i % n];
    put(r, "    \"%s\" initialised at %s\n", s->label, or_unknown(s->init, "(unknown)"));
  }
  put(r, "  the cycle:\n");
  for (int i = 0; i < n; i++) {
    if (i >= WEFT_DEADLOCK_REPORT_MAX_CHAIN) {
      put(r, "    ... (%d more, truncated)\n", n - i);
      break;
    }
    const struct weft__dd_xorder_step *s = &steps[i];
    put(r, "    \"%s\" -> \"%s\": %s took the second at %s while holding the first (taken at %s)\n",
        s->label, steps[(i + 1) % n].label, xactor(s, who, sizeof who),
        or_unknown(s->to_site, "?"), or_unknown(s->from_site, "(site unknown)"));
  }
  put_held(r, t);
  put(r, "  possible scenario:\n");
  for (int i = 0; i < n && i < WEFT_DEADLOCK_REPORT_MAX_CHAIN; i++)
    put(r, "    thread %d holds \"%s\", wants \"%s\"\n", i + 1, steps[i].label,
        steps[(i + 1) % n].label);
  put(r, "    and each waits for the next: deadlock\n");
}

void weft__dd_report_live_locked(struct weft__dd_report *r, const struct weft__dd_thread *t,
                                 weft_lock *l, const char *site, weft_lock *const *locks,
                                 struct weft__dd_thread *const *owners, int n) {
  /* The same chain of locks is reported once: a program that backs off
   * and retries (error mode), or hands a Lock to another thread or process
   * on purpose, must not flood stderr. */
  uint64_t h = 0x5eed;
  for (int i = 0; i < n; i++) h = (h ^ (uint64_t)(uintptr_t)locks[i]) * 0x100000001b3ull;
  if (!first_time_locked(h)) return;
  char a[128];
  put(r, "weft: deadlock: %s (tid %d) would wait forever for \"%s\"%s%s\n", t->name, (int)t->tid,
      label(l, a, sizeof a), site != NULL ? " at " : "", site != NULL ? site : "");
  if (n == 1) {
    put(r, "  it already holds \"%s\" itself, and a Lock is not reentrant (use an RLock);\n"
           "  only a release by another thread or process could end this wait\n", a);
  } else {
    put(r, "  the chain of waits:\n");
    for (int i = 0; i < n && i < WEFT_DEADLOCK_REPORT_MAX_CHAIN; i++)
      put(r, "    \"%s\" is held by %s (tid %d)%s\n", label(locks[i], a, sizeof a), owners[i]->name,
          (int)owners[i]->tid, owners[i] == t ? ", the caller" : ", which waits for the next");
    if (n > WEFT_DEADLOCK_REPORT_MAX_CHAIN)
      put(r, "    ... (%d more, truncated)\n", n - WEFT_DEADLOCK_REPORT_MAX_CHAIN);
  }
  put_held(r, t);
}

void weft__dd_report_xlive_locked(struct weft__dd_report *r, const struct weft__dd_thread *t,
                                  const char *proc, weft_lock *l, const char *site,
                                  bool blocking, const struct weft__dd_xstep *steps, int n) {
  /* Seeded apart from the chains within a process: the same locks waited
   * for by threads of one process are another report. */
  uint64_t h = 0x9ce55;
  for (int i = 0; i < n; i++) h = (h ^ (uint64_t)(uintptr_t)steps[i].lock) * 0x100000001b3ull;
  if (!first_time_locked(h)) return;
  char a[128];
  put(r, "weft: deadlock: %s (tid %d) of process \"%s\" (pid %d) would wait %sfor \"%s\"%s%s\n",
      t->name, (int)t->tid, proc, (int)weft__pid, blocking ? "forever " : "until its timeout ",
      label(l, a, sizeof a), site != NULL ? " at " : "", site != NULL ? site : "");
  put(r, "  the chain of waits, across processes:\n");
  for (int i = 0; i < n && i < WEFT_DEADLOCK_REPORT_MAX_CHAIN; i++) {
    const struct weft__dd_xstep *s = &steps[i];
    if (i == n - 1) {
      put(r, "    \"%s\" is held by process \"%s\" (pid %d), thread %s (tid %d), the caller\n",
          s->label, s->proc, (int)s->pid, s->thread, (int)s->tid);
      break;
    }
    put(r, "    \"%s\" is held by process \"%s\" (pid %d), thread %s (tid %d), which waits for \"%s\"%s%s\n",
        s->label, s->proc, (int)s->pid, s->thread, (int)s->tid, steps[i + 1].label,
        s->site[0] != '\0' ? " at " : "", s->site);
  }
  if (n > WEFT_DEADLOCK_REPORT_MAX_CHAIN)
    put(r, "    ... (%d more, truncated)\n", n - WEFT_DEADLOCK_REPORT_MAX_CHAIN);
  put_held(r, t);
}

void weft__dd_set_hook(weft_deadlock_hook h, void *arg) {
  weft__dd_lock();
  hook = h;
  hook_arg = arg;
  weft__dd_unlock();
}

void weft__dd_deliver(struct weft__dd_report *r) {
  if (r->text == NULL) return;
  weft__dd_lock();
  weft_deadlock_hook h = hook;
  void *h_arg = hook_arg;
  weft__dd_unlock();
  if (h != NULL)
    h(r->text, h_arg);
  else {
    fputs(r->text, stderr);
    fflush(stderr);
  }
  free(r->text);
  r->text = NULL;
  if (weft_deadlock_get_mode() == WEFT_DEADLOCK_ABORT) abort();
}

/* Reports once per object that a waiter sleeps on a primitive in memory
 * private to this process -- an ordinary global, the stack or malloc, which
 * fork copies -- when `other` is the process it waits on. Checked before
 * sleeping only; the page last found shared is remembered per thread. */
void weft__dd_private_copy_check(const void *obj, const char *what, const char *make, pid_t other) {
  static _Thread_local uintptr_t shared_page;
  uintptr_t page = (uintptr_t)obj & ~(uintptr_t)4095;
  if (page == shared_page) return;
  if (weft__os_mapping_shared(obj) != 0) {
    shared_page = page;
    return;
  }
  struct weft__dd_thread *t = weft__dd_me();
  struct weft__dd_report r = {0};
  weft__dd_lock();
  if (first_time_locked(((uint64_t)(uintptr_t)obj ^ 0x9e3779b97f4a7c15ull) * 0x100000001b3ull)) {
    put(&r,
        "weft: deadlock: %s (tid %d) waits on %s, which lives in memory private to this\n"
        "  process (pid %d): an ordinary global, the stack or malloc, which fork copies. Each\n"
        "  process has its own copy, so nothing process %d does to it can reach this one.\n"
        "  Create it with %s() (or in weft_shared_alloc() memory) before forking.\n",
        t->name, (int)t->tid, what, (int)weft__pid, (int)other, make);
  }
  weft__dd_unlock();
  weft__dd_deliver(&r);
}

/* Whether the lock's holder is the thread that forked this process (or its
 * ancestor), which lives on here and may release this copy. */
static bool held_by_forking_thread(const weft_lock *l, pid_t holder) {
  uint32_t owner = weft__lock_owner(l);
  const struct weft__lineage *lin = &weft__proc_lineage;
  for (int i = 0; i < lin->n; i++)
    if (lin->pid[i] == holder && WEFT__OWNER_TID(lin->owner[i]) == WEFT__OWNER_TID(owner))
      return true;
  return false;
}

/* A Lock held by another process that a thread of this one waits for: in
 * private memory the holder took it in its own copy before this process
 * was forked (by a thread that does not live on here), the classic mistake
 * of a Lock in an ordinary global used between processes. The wait goes
 * on: a thread of this process could still release it. */
void weft__dd_private_lock_check(weft_lock *l) {
  pid_t holder = weft__lock_holder_pid(l);
  if (holder == 0 || holder == weft__pid || held_by_forking_thread(l, holder)) return;
  char a[128], what[160];
  snprintf(what, sizeof what, "Lock \"%s\", held by process %d", label(l, a, sizeof a), (int)holder);
  weft__dd_private_copy_check(l, what, "weft_lock_new", holder);
}
