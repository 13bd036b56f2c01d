/* SPDX-License-Identifier: MIT */
/* The lock contention profile (weft/lockstat.h).
 *
 * Each thread counts into records of its own, one per lock it took, which
 * only it writes: an acquire adds to its record with plain (relaxed
 * atomic) loads and stores, takes no lock and shares no cache line with
 * another thread, so two threads taking turns on one lock do not also
 * fight over its counters. A printer reads every live thread's records
 * (relaxed atomic loads; the records are appended to chunks that never
 * move) and adds them up with those of threads that ended, which a thread
 * folds into one table as it exits.
 *
 * Processes: the process that turns the profile on maps a table in shared
 * memory that every child forked afterwards inherits. A child adds its
 * figures to it at the end of its exit rules; the first process prints
 * the sum at its own exit, after its exit rules have waited for its
 * children. Shared memory rather than a pipe or a socket: nothing has to
 * read while the children run, a child that exits last needs no reader,
 * and grandchildren add to the same table. A lock in shared memory keeps
 * its address in every forked process, so the rows of the processes add
 * up by address; a lock in private memory is a different lock in each
 * process and keeps a row of its own, named with its pid.
 */
#define _GNU_SOURCE
#include "lockstat.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadlock_report.h"
#include "lock.h"
#include "region.h"
#include "weft/lockstat.h"

/* Records per chunk of a thread's records. */
#define CHUNK 32
/* Call sites a row shows in the table. */
#define TABLE_SITES 3
/* Rows the table shared with children holds; more are counted as dropped. */
#define TREE_ROWS 512
/* The shortest time over which the clock's ticks are measured against
 * CLOCK_MONOTONIC before a print: 1 ms gives the ratio to within 1e-4 here. */
#define CALIBRATE_NS (1000 * 1000)

struct weft__ls_chunk {
  struct weft__ls_chunk *next;
  uint32_t n; /* records published (release store) */
  struct weft__ls_rec rec[CHUNK];
};

_Thread_local struct weft__ls_thread *weft__ls_self __attribute__((tls_model("initial-exec")));

/* ---- rows: the figures of one lock, added up; also the shared table's ---- */

#define SITE_MAX 96
#define NAME_MAX_ 96

struct row_site {
  char site[SITE_MAX]; /* "" : re-acquired after a Condition wait */
  uint64_t n, wait, wait_max;
};

struct row {
  uint64_t lock, key; /* as the records' */
  int32_t pid;        /* 0: in shared memory */
  uint32_t rlock;
  uint32_t procs;     /* processes whose figures are in it */
  uint32_t nsites;
  uint64_t acq, contended, wait, wait_max, hold, hold_max, holds;
  struct row_site sites[WEFT__LS_SITES];
  char name[NAME_MAX_], init[NAME_MAX_];
};

struct rows {
  struct row *v;
  size_t n, cap;
};

/* The table in shared memory that children add to. */
struct tree {
  uint32_t lock;      /* pid of the process adding, 0: free */
  uint32_t procs;     /* children that added their figures */
  uint32_t n, dropped;
  struct row rows[TREE_ROWS];
};

/* ---- state ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* threads, ended, options */
static pthread_key_t thread_key;
static struct weft__ls_thread *threads;
static struct rows ended; /* threads that ended: ticks */
static int sample = WEFT_LOCKSTAT_SAMPLE;
static bool quiet;
static char *json_path;
static pid_t root;        /* the process that turned the profile on; 0: never on */
static struct tree *tree; /* shared with the children forked since */
static uint64_t tick0;    /* the clock's ticks and CLOCK_MONOTONIC when it was turned on */
static int64_t ns0;

/* ---- records ---- */

static size_t slot(const weft_lock *l, uint32_t mask) {
  return (size_t)(((uintptr_t)l >> 4) * 0x9e3779b97f4a7c15ull >> 40) & mask;
}

static void forget_thread(void *p);

static struct weft__ls_thread *me(void) {
  struct weft__ls_thread *t = weft__ls_self;
  if (t != NULL) return t;
  t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  t->rand = (uint64_t)weft__tid() * 0x9e3779b97f4a7c15ull | 1;
  pthread_mutex_lock(&mu);
  t->next = threads;
  __atomic_store_n(&threads, t, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&mu);
  pthread_setspecific(thread_key, t); /* folded into `ended` when the thread ends */
  weft__ls_self = t;
  return t;
}

/* The record, if the calling thread has one, without making it. */
static struct weft__ls_rec *find_rec(const weft_lock *l) {
  struct weft__ls_thread *t = weft__ls_self;
  if (t == NULL || t->index == NULL) return NULL;
  for (size_t i = slot(l, t->mask);; i = (i + 1) & t->mask) {
    struct weft__ls_rec *r = t->index[i];
    if (r == NULL) return NULL;
    if (r->lock == l) return weft__ls_is(r, l) ? r : NULL;
  }
}

static bool index_put(struct weft__ls_thread *t, struct weft__ls_rec *r) {
  if (t->index == NULL || (t->count + 1) * 2 > t->mask + 1) {
    uint32_t size = t->index == NULL ? 64 : (t->mask + 1) * 2;
    struct weft__ls_rec **v = calloc(size, sizeof *v);
    if (v == NULL) return false;
    for (uint32_t i = 0; t->index != NULL && i <= t->mask; i++) {
      if (t->index[i] == NULL) continue;
      size_t j = slot(t->index[i]->lock, size - 1);
      while (v[j] != NULL) j = (j + 1) & (size - 1);
      v[j] = t->index[i];
    }
    free(t->index);
    t->index = v;
    t->mask = size - 1;
  }
  size_t i = slot(r->lock, t->mask);
  while (t->index[i] != NULL && t->index[i]->lock != r->lock) i = (i + 1) & t->mask;
  if (t->index[i] == NULL) t->count++;
  t->index[i] = r; /* a record of an older lock at the address stays in its chunk */
  return true;
}

struct weft__ls_rec *weft__ls_rec_slow(const weft_lock *l, bool rlock) {
  struct weft__ls_thread *t = me();
  if (t == NULL) return NULL;
  struct weft__ls_rec *r = find_rec(l);
  if (r == NULL) {
    struct weft__ls_chunk *c = t->chunks;
    if (c == NULL || c->n == CHUNK) {
      /* Aligned as the records are, so that a record's hot fields share a
       * cache line. */
      c = aligned_alloc(_Alignof(struct weft__ls_chunk), sizeof *c);
      if (c == NULL) return NULL;
      memset(c, 0, sizeof *c);
      c->next = t->chunks;
      __atomic_store_n(&t->chunks, c, __ATOMIC_RELEASE);
    }
    r = &c->rec[c->n];
    r->lock = l;
    r->key = l->site;
    r->next = 1; /* the first hold is always timed */
    r->rlock = rlock;
    r->pid = weft__region_holds(l) ? 0 : weft__pid;
    const char *name = weft__layout_text(l->layout, l->name);
    const char *site = weft__layout_text(l->layout, l->site);
    if (name != NULL) snprintf(r->name, sizeof r->name, "%s", name);
    if (site != NULL) snprintf(r->init, sizeof r->init, "%s", site);
    if (!index_put(t, r)) return NULL;
    __atomic_store_n(&c->n, c->n + 1, __ATOMIC_RELEASE);
  }
  weft__hot.ls_last = r;
  return r;
}

/* Times the hold of acquisition n, and picks the next one to time: the
 * first `sample` all, so that a lock taken seldom has its holds exact, then
 * 1 in `sample` on average, at random so that no loop's period hides a
 * lock. */
void weft__ls_time(weft_lock *l, struct weft__ls_rec *r, uint64_t n) {
  int s = __atomic_load_n(&sample, __ATOMIC_RELAXED);
  uint64_t gap = 1;
  if (s > 1 && n >= (uint64_t)s) {
    struct weft__ls_thread *t = weft__ls_self;
    uint64_t x = t->rand;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    t->rand = x;
    gap = 1 + x % (uint64_t)(2 * s - 1); /* 1 .. 2s-1 */
  }
  WEFT__LS_SET(r->next, n + gap);
  r->since_acq = n;
  r->since_weight = gap;
  r->since = weft__ls_ticks() | 1; /* never 0 */
  weft__lock_mark_timed(l);
}

void weft__ls_waited(struct weft__ls_rec *r, uint64_t since, const char *site) {
  uint64_t now = weft__ls_ticks();
  uint64_t w = now > since ? now - since : 0;
  WEFT__LS_ADD(r->contended, 1);
  WEFT__LS_ADD(r->wait, w);
  if (w > WEFT__LS_GET(r->wait_max)) WEFT__LS_SET(r->wait_max, w);
  struct weft__ls_site *s = NULL, *least = NULL;
  for (int i = 0; i < WEFT__LS_SITES; i++) {
    struct weft__ls_site *x = &r->sites[i];
    uint64_t n = WEFT__LS_GET(x->n);
    if (n == 0) {
      if (least == NULL || WEFT__LS_GET(least->n) != 0) least = x;
    } else if (WEFT__LS_GET(x->site) == site) {
      s = x;
      break;
    } else if (least == NULL ||
               (WEFT__LS_GET(least->n) != 0 && WEFT__LS_GET(x->wait) < WEFT__LS_GET(least->wait))) {
      least = x;
    }
  }
  if (s == NULL) { /* a new site: a free entry, or the one that waited least */
    s = least;
    WEFT__LS_SET(s->n, 0);
    WEFT__LS_SET(s->wait, 0);
    WEFT__LS_SET(s->wait_max, 0);
    WEFT__LS_SET(s->site, site);
  }
  WEFT__LS_ADD(s->n, 1);
  WEFT__LS_ADD(s->wait, w);
  if (w > WEFT__LS_GET(s->wait_max)) WEFT__LS_SET(s->wait_max, w);
}

/* Ends the timed hold of r. */
static void held(struct weft__ls_rec *r, const weft_lock *l) {
  uint64_t now = weft__ls_ticks(), since = r->since;
  r->since = 0;
  /* Taken again by this thread, or by another, since the timed acquire (a
   * Lock may be released by any thread): not the hold that was timed. */
  if (r->since_acq != WEFT__LS_GET(r->acq) || weft__lock_owner(l) != weft__owner_token()) return;
  uint64_t h = now > since ? now - since : 0;
  WEFT__LS_ADD(r->holds, 1);
  WEFT__LS_ADD(r->hold, h * r->since_weight);
  if (h > WEFT__LS_GET(r->hold_max)) WEFT__LS_SET(r->hold_max, h);
}

void weft__ls_timed_release(const weft_lock *l) {
  struct weft__ls_rec *r = weft__hot.ls_last;
  if (!weft__ls_is(r, l)) r = find_rec(l);
  if (r != NULL && r->since != 0) held(r, l);
}

/* ---- adding up ---- */

static struct row *row_of(struct rows *rs, uint64_t lock, uint64_t key, int32_t pid) {
  for (size_t i = 0; i < rs->n; i++)
    if (rs->v[i].lock == lock && rs->v[i].key == key && rs->v[i].pid == pid) return &rs->v[i];
  if (rs->n == rs->cap) {
    size_t cap = rs->cap ? rs->cap * 2 : 16;
    struct row *v = realloc(rs->v, cap * sizeof *v);
    if (v == NULL) return NULL;
    rs->v = v;
    rs->cap = cap;
  }
  struct row *w = &rs->v[rs->n++];
  memset(w, 0, sizeof *w);
  w->lock = lock;
  w->key = key;
  w->pid = pid;
  return w;
}

static void add_site(struct row *w, const char *site, uint64_t n, uint64_t wait, uint64_t wait_max) {
  if (n == 0) return;
  struct row_site *s = NULL;
  for (uint32_t i = 0; i < w->nsites && s == NULL; i++)
    if (strcmp(w->sites[i].site, site) == 0) s = &w->sites[i];
  if (s == NULL && w->nsites < WEFT__LS_SITES) {
    s = &w->sites[w->nsites++];
    snprintf(s->site, sizeof s->site, "%s", site);
  }
  if (s == NULL) { /* full: keep the sites that waited most */
    struct row_site *least = &w->sites[0];
    for (uint32_t i = 1; i < w->nsites; i++)
      if (w->sites[i].wait < least->wait) least = &w->sites[i];
    if (least->wait >= wait) return;
    s = least;
    memset(s, 0, sizeof *s);
    snprintf(s->site, sizeof s->site, "%s", site);
  }
  s->n += n;
  s->wait += wait;
  if (wait_max > s->wait_max) s->wait_max = wait_max;
}

static void add_row(struct row *w, const struct row *x) {
  if (w->name[0] == '\0' && w->init[0] == '\0') {
    memcpy(w->name, x->name, sizeof w->name);
    memcpy(w->init, x->init, sizeof w->init);
    w->rlock = x->rlock;
  }
  w->procs = x->procs > w->procs ? x->procs : w->procs;
  w->acq += x->acq;
  w->contended += x->contended;
  w->wait += x->wait;
  w->hold += x->hold;
  w->holds += x->holds;
  if (x->wait_max > w->wait_max) w->wait_max = x->wait_max;
  if (x->hold_max > w->hold_max) w->hold_max = x->hold_max;
  for (uint32_t i = 0; i < x->nsites; i++)
    add_site(w, x->sites[i].site, x->sites[i].n, x->sites[i].wait, x->sites[i].wait_max);
}

static void add_rec(struct rows *rs, const struct weft__ls_rec *r) {
  uint64_t acq = WEFT__LS_GET(r->acq);
  if (acq == 0) return;
  struct row *w = row_of(rs, (uint64_t)(uintptr_t)r->lock, (uint64_t)(uintptr_t)r->key, r->pid);
  if (w == NULL) return;
  struct row x = {.rlock = r->rlock, .procs = 1};
  memcpy(x.name, r->name, sizeof x.name);
  memcpy(x.init, r->init, sizeof x.init);
  x.acq = acq;
  x.contended = WEFT__LS_GET(r->contended);
  x.wait = WEFT__LS_GET(r->wait);
  x.wait_max = WEFT__LS_GET(r->wait_max);
  x.hold = WEFT__LS_GET(r->hold);
  x.hold_max = WEFT__LS_GET(r->hold_max);
  x.holds = WEFT__LS_GET(r->holds);
  add_row(w, &x);
  for (int i = 0; i < WEFT__LS_SITES; i++) {
    const char *site = WEFT__LS_GET(r->sites[i].site);
    add_site(w, site != NULL ? site : "", WEFT__LS_GET(r->sites[i].n),
             WEFT__LS_GET(r->sites[i].wait), WEFT__LS_GET(r->sites[i].wait_max));
  }
}

static void add_thread(struct rows *rs, const struct weft__ls_thread *t) {
  for (const struct weft__ls_chunk *c = __atomic_load_n(&t->chunks, __ATOMIC_ACQUIRE); c != NULL;
       c = c->next) {
    uint32_t n = __atomic_load_n(&c->n, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; i++) add_rec(rs, &c->rec[i]);
  }
}

/* This process's figures: its live threads' and its ended threads'. mu held. */
static void gather_locked(struct rows *rs) {
  for (size_t i = 0; i < ended.n; i++) {
    struct row *w = row_of(rs, ended.v[i].lock, ended.v[i].key, ended.v[i].pid);
    if (w != NULL) add_row(w, &ended.v[i]);
  }
  for (const struct weft__ls_thread *t = threads; t != NULL; t = t->next) add_thread(rs, t);
}

static void free_thread(struct weft__ls_thread *t) {
  for (struct weft__ls_chunk *c = t->chunks, *next; c != NULL; c = next) {
    next = c->next;
    free(c);
  }
  free(t->index);
  free(t);
}

static void forget_thread(void *p) {
  struct weft__ls_thread *t = p;
  pthread_mutex_lock(&mu);
  add_thread(&ended, t);
  for (struct weft__ls_thread **q = &threads; *q != NULL; q = &(*q)->next)
    if (*q == t) {
      *q = t->next;
      break;
    }
  pthread_mutex_unlock(&mu);
  if (weft__ls_self == t) {
    weft__ls_self = NULL;
    weft__hot.ls_last = NULL;
  }
  free_thread(t);
}

/* ---- the table shared with children ---- */

static void tree_lock(void) {
  uint32_t me_ = (uint32_t)weft__pid;
  for (unsigned spins = 0;; spins++) {
    uint32_t holder = 0;
    if (__atomic_compare_exchange_n(&tree->lock, &holder, me_, false, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED))
      return;
    /* A child killed while adding would hold it for ever. */
    if (spins % 1024 == 1023 && weft__os_process_gone((pid_t)holder) &&
        __atomic_compare_exchange_n(&tree->lock, &holder, me_, false, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED))
      return;
    sched_yield();
  }
}

static void tree_unlock(void) { __atomic_store_n(&tree->lock, 0, __ATOMIC_RELEASE); }

/* Adds the tree's rows (children that have exited) to rs. */
static uint32_t gather_tree(struct rows *rs, uint32_t *dropped) {
  *dropped = 0;
  if (tree == NULL) return 0;
  tree_lock();
  for (uint32_t i = 0; i < tree->n; i++) {
    const struct row *x = &tree->rows[i];
    struct row *w = row_of(rs, x->lock, x->key, x->pid);
    if (w == NULL) continue;
    uint32_t procs = w->procs;
    add_row(w, x);
    w->procs = procs + x->procs;
  }
  uint32_t procs = tree->procs;
  *dropped = tree->dropped;
  tree_unlock();
  return procs;
}

/* A child's exit: adds its figures to the tree's table. */
static void publish(void) {
  struct rows rs = {0};
  pthread_mutex_lock(&mu);
  gather_locked(&rs);
  pthread_mutex_unlock(&mu);
  tree_lock();
  for (size_t i = 0; i < rs.n; i++) {
    struct row *w = NULL;
    for (uint32_t j = 0; j < tree->n && w == NULL; j++)
      if (tree->rows[j].lock == rs.v[i].lock && tree->rows[j].key == rs.v[i].key &&
          tree->rows[j].pid == rs.v[i].pid)
        w = &tree->rows[j];
    if (w == NULL && tree->n < TREE_ROWS) {
      w = &tree->rows[tree->n++];
      memset(w, 0, sizeof *w);
      w->lock = rs.v[i].lock;
      w->key = rs.v[i].key;
      w->pid = rs.v[i].pid;
    }
    if (w == NULL) {
      tree->dropped++;
      continue;
    }
    uint32_t procs = w->procs;
    add_row(w, &rs.v[i]);
    w->procs = procs + 1;
  }
  tree->procs++;
  tree_unlock();
  free(rs.v);
}

/* ---- output ---- */

/* Nanoseconds per tick, measured against CLOCK_MONOTONIC since the profile
 * was turned on. */
static double ns_per_tick(void) {
#if defined(__x86_64__)
  int64_t now = weft__os_now_ns();
  if (now - ns0 < CALIBRATE_NS) weft__os_sleep_until(ns0 + CALIBRATE_NS);
  now = weft__os_now_ns();
  uint64_t ticks = weft__ls_ticks();
  return ticks > tick0 ? (double)(now - ns0) / (double)(ticks - tick0) : 1.0;
#else
  return 1.0;
#endif
}

struct report {
  struct rows rows;
  uint32_t children, dropped;
  double scale; /* ns per tick */
};

static int by_wait(const void *a, const void *b) {
  const struct row *x = a, *y = b;
  if (x->wait != y->wait) return x->wait < y->wait ? 1 : -1;
  if (x->acq != y->acq) return x->acq < y->acq ? 1 : -1;
  return strcmp(x->name, y->name);
}

static int site_by_wait(const void *a, const void *b) {
  const struct row_site *x = a, *y = b;
  if (x->wait != y->wait) return x->wait < y->wait ? 1 : -1;
  return x->n < y->n ? 1 : x->n > y->n ? -1 : 0;
}

static void collect(struct report *r) {
  memset(r, 0, sizeof *r);
  pthread_mutex_lock(&mu);
  gather_locked(&r->rows);
  pthread_mutex_unlock(&mu);
  for (size_t i = 0; i < r->rows.n; i++) r->rows.v[i].procs = 1;
  r->children = gather_tree(&r->rows, &r->dropped);
  r->scale = ns_per_tick();
  qsort(r->rows.v, r->rows.n, sizeof *r->rows.v, by_wait);
  for (size_t i = 0; i < r->rows.n; i++)
    qsort(r->rows.v[i].sites, r->rows.v[i].nsites, sizeof r->rows.v[i].sites[0], site_by_wait);
}

static uint64_t ns(const struct report *r, uint64_t ticks) {
  return (uint64_t)((double)ticks * r->scale + 0.5);
}

/* The total hold, estimated from the holds timed. */
static uint64_t hold_total(const struct report *r, const struct row *w) {
  return ns(r, w->hold);
}

static const char *duration(uint64_t t, char *buf, size_t size) {
  if (t < 1000)
    snprintf(buf, size, "%" PRIu64 " ns", t);
  else if (t < 1000000)
    snprintf(buf, size, "%.3g us", (double)t / 1e3);
  else if (t < 1000000000)
    snprintf(buf, size, "%.3g ms", (double)t / 1e6);
  else
    snprintf(buf, size, "%.3g s", (double)t / 1e9);
  return buf;
}

static const char *row_label(const struct row *w, char *buf, size_t size) {
  char base[NAME_MAX_ + 32];
  weft__dd_label_of(w->name[0] ? w->name : NULL, w->init[0] ? w->init : NULL,
                    (const void *)(uintptr_t)w->lock, base, sizeof base);
  if (w->pid != 0 && w->pid != weft__pid)
    snprintf(buf, size, "\"%s\" (pid %d)", base, (int)w->pid);
  else
    snprintf(buf, size, "\"%s\"", base);
  return buf;
}

static void print_table(FILE *out, const struct report *r) {
  int s = __atomic_load_n(&sample, __ATOMIC_RELAXED);
  size_t shown = 0;
  for (size_t i = 0; i < r->rows.n; i++) shown += r->rows.v[i].acq != 0;
  fprintf(out, "weft lockstat: %zu lock%s of process %d", shown, shown == 1 ? "" : "s",
          (int)weft__pid);
  if (r->children != 0)
    fprintf(out, " and %u child process%s", r->children, r->children == 1 ? "" : "es");
  fprintf(out, ", by total wait; ");
  if (s <= 1)
    fprintf(out, "every hold timed\n");
  else
    fprintf(out, "holds timed 1 in %d, total estimated\n", s);
  int width = 4;
  char label[NAME_MAX_ + 64];
  for (size_t i = 0; i < r->rows.n; i++) {
    int n = (int)strlen(row_label(&r->rows.v[i], label, sizeof label));
    if (n > width) width = n;
  }
  if (width > 48) width = 48;
  fprintf(out, "%-*s %10s %10s %11s %11s %11s %11s\n", width, "lock", "acquired", "contended",
          "wait total", "wait max", "hold total", "hold max");
  char a[32], b[32], c[32], d[32];
  for (size_t i = 0; i < r->rows.n; i++) {
    const struct row *w = &r->rows.v[i];
    if (w->acq == 0) continue;
    fprintf(out, "%-*s %10" PRIu64 " %10" PRIu64 " %11s %11s %11s %11s\n", width,
            row_label(w, label, sizeof label), w->acq, w->contended,
            duration(ns(r, w->wait), a, sizeof a), duration(ns(r, w->wait_max), b, sizeof b),
            w->holds ? duration(hold_total(r, w), c, sizeof c) : "-",
            w->holds ? duration(ns(r, w->hold_max), d, sizeof d) : "-");
    for (uint32_t k = 0; k < w->nsites && k < TABLE_SITES; k++) {
      const struct row_site *st = &w->sites[k];
      fprintf(out, "    waited at %s: %" PRIu64 " time%s, %s in all, %s at most\n",
              st->site[0] ? st->site : "(re-acquired after a Condition wait)", st->n,
              st->n == 1 ? "" : "s", duration(ns(r, st->wait), a, sizeof a),
              duration(ns(r, st->wait_max), b, sizeof b));
    }
  }
  if (r->dropped != 0)
    fprintf(out, "(%u rows of child processes left out: the shared table was full)\n", r->dropped);
  fflush(out);
}

static void json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      fprintf(out, "\\%c", ch);
    else if (ch < 0x20)
      fprintf(out, "\\u%04x", ch);
    else
      fputc(ch, out);
  }
  fputc('"', out);
}

static void print_json(FILE *out, const struct report *r) {
  fprintf(out, "{\"pid\": %d, \"children\": %u, \"sample\": %d, \"dropped\": %u, \"locks\": [",
          (int)weft__pid, r->children, __atomic_load_n(&sample, __ATOMIC_RELAXED), r->dropped);
  bool first = true;
  for (size_t i = 0; i < r->rows.n; i++) {
    const struct row *w = &r->rows.v[i];
    if (w->acq == 0) continue;
    char label[NAME_MAX_ + 64];
    fprintf(out, "%s\n  {\"label\": ", first ? "" : ",");
    first = false;
    json_string(out, row_label(w, label, sizeof label));
    fprintf(out, ", \"name\": ");
    if (w->name[0])
      json_string(out, w->name);
    else
      fputs("null", out);
    fprintf(out, ", \"initialised_at\": ");
    if (w->init[0])
      json_string(out, w->init);
    else
      fputs("null", out);
    fprintf(out,
            ", \"kind\": \"%s\", \"shared\": %s, \"pid\": %d, \"processes\": %u,\n"
            "   \"acquisitions\": %" PRIu64 ", \"contended\": %" PRIu64
            ", \"wait_total_ns\": %" PRIu64 ", \"wait_max_ns\": %" PRIu64
            ", \"hold_total_ns\": %" PRIu64 ", \"hold_max_ns\": %" PRIu64
            ", \"holds_timed\": %" PRIu64 ",\n   \"sites\": [",
            w->rlock ? "RLock" : "Lock", w->pid == 0 ? "true" : "false", (int)w->pid, w->procs,
            w->acq, w->contended, ns(r, w->wait), ns(r, w->wait_max), hold_total(r, w),
            ns(r, w->hold_max), w->holds);
    for (uint32_t k = 0; k < w->nsites; k++) {
      const struct row_site *st = &w->sites[k];
      fprintf(out, "%s{\"site\": ", k ? ", " : "");
      if (st->site[0])
        json_string(out, st->site);
      else
        fputs("null", out);
      fprintf(out,
              ", \"contended\": %" PRIu64 ", \"wait_total_ns\": %" PRIu64
              ", \"wait_max_ns\": %" PRIu64 "}",
              st->n, ns(r, st->wait), ns(r, st->wait_max));
    }
    fprintf(out, "]}");
  }
  fprintf(out, "\n]}\n");
}

int weft_lockstat_print(void) {
  struct report r;
  collect(&r);
  print_table(stderr, &r);
  free(r.rows.v);
  return 0;
}

int weft_lockstat_write_json(FILE *out) {
  if (out == NULL) return weft__error(WEFT_EINVAL, "weft_lockstat_write_json: out is NULL");
  struct report r;
  collect(&r);
  errno = 0;
  print_json(out, &r);
  free(r.rows.v);
  if (fflush(out) != 0 || ferror(out)) {
    int e = errno != 0 ? errno : EIO;
    return weft__error(-e, "weft_lockstat_write_json: cannot write: %s", strerror(e));
  }
  return 0;
}

/* ---- switching ---- */

static int turn_on(int rate, bool no_table, const char *json, const char *call) {
  char *path = NULL;
  if (json != NULL && (path = strdup(json)) == NULL)
    return weft__error(WEFT_ENOMEM, "%s: out of memory", call);
  pthread_mutex_lock(&mu);
  if (root == 0) {
    int err = 0;
    tree = weft__region_new(sizeof *tree, &err);
    if (tree == NULL) {
      pthread_mutex_unlock(&mu);
      free(path);
      return weft__error(WEFT_ENOMEM, "%s: cannot map the table shared with children: %s", call,
                         weft_strerror(err));
    }
    ns0 = weft__os_now_ns();
    tick0 = weft__ls_ticks();
    __atomic_store_n(&root, weft__pid, __ATOMIC_RELAXED);
  }
  __atomic_store_n(&sample, rate, __ATOMIC_RELAXED);
  quiet = no_table;
  free(json_path);
  json_path = path;
  pthread_mutex_unlock(&mu);
  weft__lock_hooks_set(WEFT__HOOK_LS, true);
  return 0;
}

int weft_lockstat_enable_opts(const weft_lockstat_options *o) {
  static const weft_lockstat_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  if (o->sample < 0)
    return weft__error(WEFT_EINVAL, "weft_lockstat_enable: sample must be >= 0, not %d",
                       o->sample);
  return turn_on(o->sample == 0 ? WEFT_LOCKSTAT_SAMPLE : o->sample, o->quiet, o->json,
                 "weft_lockstat_enable");
}

int weft_lockstat_disable(void) {
  weft__lock_hooks_set(WEFT__HOOK_LS, false);
  return 0;
}

bool weft_lockstat_enabled(void) {
  return (__atomic_load_n(&weft__lock_hooks, __ATOMIC_RELAXED) & WEFT__HOOK_LS) != 0;
}

static void zero_rec(struct weft__ls_rec *r) {
  WEFT__LS_SET(r->acq, 0);
  WEFT__LS_SET(r->contended, 0);
  WEFT__LS_SET(r->wait, 0);
  WEFT__LS_SET(r->wait_max, 0);
  WEFT__LS_SET(r->hold, 0);
  WEFT__LS_SET(r->hold_max, 0);
  WEFT__LS_SET(r->holds, 0);
  for (int i = 0; i < WEFT__LS_SITES; i++) WEFT__LS_SET(r->sites[i].n, 0);
  WEFT__LS_SET(r->next, 1); /* the next acquisition is timed */
}

int weft_lockstat_reset(void) {
  pthread_mutex_lock(&mu);
  ended.n = 0;
  /* Other threads' records are theirs to write: they are zeroed with the
   * same relaxed stores, so an acquire under way may still land in them. */
  for (struct weft__ls_thread *t = threads; t != NULL; t = t->next)
    for (struct weft__ls_chunk *c = __atomic_load_n(&t->chunks, __ATOMIC_ACQUIRE); c != NULL;
         c = c->next)
      for (uint32_t i = 0; i < __atomic_load_n(&c->n, __ATOMIC_ACQUIRE); i++)
        zero_rec(&c->rec[i]);
  pthread_mutex_unlock(&mu);
  if (tree != NULL && root == weft__pid) {
    tree_lock();
    tree->n = tree->procs = tree->dropped = 0;
    tree_unlock();
  }
  return 0;
}

/* ---- start-up, fork, exit ---- */

void weft__ls_init(void) {
  pthread_key_create(&thread_key, forget_thread);
  const char *env = getenv("WEFT_LOCKSTAT");
  /* The forkserver is not a process of the program's tree. */
  if (env == NULL || env[0] == '\0' || strcmp(env, "0") == 0 || getenv("WEFT_FORKSERVER") != NULL)
    return;
  bool table = false;
  const char *json = NULL;
  long rate = WEFT_LOCKSTAT_SAMPLE;
  char json_buf[4096];
  for (const char *p = env; *p != '\0';) {
    size_t len = strcspn(p, ",");
    if (strncmp(p, "json:", 5) == 0) { /* the rest of the value, commas included */
      snprintf(json_buf, sizeof json_buf, "%s", p + 5);
      json = json_buf;
      if (json[0] == '\0') goto bad;
      break;
    }
    if (len == 1 && p[0] == '1') {
      table = true;
    } else if (len > 7 && strncmp(p, "sample=", 7) == 0) {
      char *end;
      errno = 0;
      rate = strtol(p + 7, &end, 10);
      if (end != p + len || errno != 0 || rate < 1 || rate > 1000000000) goto bad;
    } else {
      goto bad;
    }
    p += len;
    if (*p == ',') p++;
  }
  if (!table && json == NULL) goto bad;
  if (turn_on((int)rate, !table, json, "WEFT_LOCKSTAT") != 0)
    fprintf(stderr, "weft: WEFT_LOCKSTAT: %s\n", weft_last_error());
  return;
bad:
  fprintf(stderr,
          "weft: WEFT_LOCKSTAT=%s is not 1 or json:FILE (with ,sample=N); the lock profile "
          "stays off\n",
          env);
}

/* Whether the fork handlers hold mu: only once the profile was on, so that
 * a program that never turns it on copies no page for it in a child. */
static bool held_for_fork;

void weft__ls_before_fork(void) {
  if (__atomic_load_n(&root, __ATOMIC_RELAXED) == 0) return;
  pthread_mutex_lock(&mu);
  held_for_fork = true;
}

void weft__ls_after_fork_parent(void) {
  if (!held_for_fork) return;
  held_for_fork = false;
  pthread_mutex_unlock(&mu);
}

/* The child's figures start at zero; its parent's threads do not exist
 * here, and their records, copied, are freed. */
WEFT__HOT void weft__ls_after_fork_child(void) {
  if (!held_for_fork) return;
  held_for_fork = false;
  pthread_mutex_unlock(&mu);
  struct weft__ls_thread *self = weft__ls_self;
  for (struct weft__ls_thread *t = threads, *next; t != NULL; t = next) {
    next = t->next;
    if (t != self) free_thread(t);
  }
  threads = self;
  if (self != NULL) {
    self->next = NULL;
    for (struct weft__ls_chunk *c = self->chunks; c != NULL; c = c->next)
      for (uint32_t i = 0; i < c->n; i++) {
        zero_rec(&c->rec[i]);
        c->rec[i].since = 0;
        if (c->rec[i].pid != 0) c->rec[i].pid = weft__pid; /* its private locks are its own */
      }
  }
  free(ended.v);
  ended = (struct rows){0};
}

WEFT__HOT void weft__ls_exit(void) {
  if (root == 0) return;
  if (root != weft__pid) {
    if (tree != NULL) publish();
    return;
  }
  pthread_mutex_lock(&mu);
  bool table = !quiet;
  char *path = json_path;
  json_path = NULL;
  pthread_mutex_unlock(&mu);
  if (table) weft_lockstat_print();
  if (path != NULL) {
    FILE *f = fopen(path, "we");
    if (f == NULL) {
      fprintf(stderr, "weft: WEFT_LOCKSTAT: cannot write %s: %s\n", path, strerror(errno));
    } else {
      int err = weft_lockstat_write_json(f);
      if (fclose(f) != 0 && err == 0) err = -errno;
      if (err != 0)
        fprintf(stderr, "weft: WEFT_LOCKSTAT: cannot write %s: %s\n", path, weft_strerror(err));
    }
    free(path);
  }
}
