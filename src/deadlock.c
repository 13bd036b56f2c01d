/* SPDX-License-Identifier: MIT */
/* Deadlock detection: the per-thread held stack, the lock orders it feeds
 * into the graph (lockgraph.c), the wait-for chain followed before a
 * thread blocks, and the modes. Reports are written in deadlock_report.c.
 *
 * Each thread keeps the locks it holds in a small stack. A Python Lock may
 * be released by another thread, so an entry is trusted only while the
 * lock's owner is still this thread; stale entries are dropped when met.
 *
 * A nested acquire first looks each order "held -> new" up in the thread's
 * cache of orders the graph already has, keyed by the two locks' serials
 * (the dd_node field of each lock): the common case -- an order seen
 * before -- takes no global lock and costs the same with 10 locks as with
 * 100,000. Only an order the thread has not used yet takes the mutex --
 * unless it is one a thread that uses many orders logs instead (below).
 *
 * The order log. A thread that has added LOG_AFTER orders under the mutex
 * logs each further new order "the one lock it holds -> the new one" in a
 * ring of its own, without the mutex, when the graph's ranks already put
 * the two locks in that order (weft__lg_ordered) and both are in private
 * memory: such an edge closes no cycle and moves no rank, so the graph may
 * take it in later. The thread takes its ring in itself when it is full,
 * and whenever it holds the mutex. Anything that is about to move a rank or
 * search (an edge against the order) first takes in every thread's ring,
 * having made order_seq odd; a thread that logged while that happened sees
 * order_seq change and adds its order under the mutex instead. The two
 * sides are a Dekker handshake -- the logger writes its tail then reads
 * order_seq, the other writes order_seq then reads the tails -- whose
 * barrier is all on the rare side (membarrier), so that logging costs no
 * fence. A cycle is thus still reported by the acquire that closes it.
 *
 * The global mutex (dd_mutex) guards the graph, the list of threads and the
 * reports given. It is a pthread mutex: detection must not recurse into
 * weft's own locks.
 */
#define _GNU_SOURCE
#include "deadlock.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "deadlock_report.h"
#include "dump.h"
#include "internal.h"
#include "lock.h"
#include "lockgraph.h"
#include "os/os.h"
#include "tsan.h"
#include "weft/deadlock.h"
#include "weft/thread.h"
#include "xorder.h"

#define MAX_HELD WEFT__DD_MAX_HELD
#define CACHE_FIRST 64          /* entries of a thread's order cache at first */
#define CACHE_MAX (1u << 18)    /* at most (2 MiB): then it starts again empty */
#define LOG_SIZE 1024           /* orders a thread's log holds (32 KiB) */
#define LOG_AFTER 64            /* orders a thread adds under the mutex before it logs */

int weft__dd_on;
static int mode = WEFT_DEADLOCK_WARN;
static pthread_mutex_t dd_mutex = PTHREAD_MUTEX_INITIALIZER;

/* Odd while the graph may move ranks or gain an edge outside the order;
 * rises by two each time. Read without the mutex by loggers. */
static uint32_t order_seq;
static bool prepared;  /* order_seq is odd and every ring taken in (mutex held) */
static uint32_t loggers;  /* threads with a log (mutex held) */
/* Loggers fence where membarrier is missing (or under ThreadSanitizer,
 * which does not model it). Set before the first log is made. */
static bool log_fence;

void weft__dd_lock(void) { pthread_mutex_lock(&dd_mutex); }
void weft__dd_unlock(void) { pthread_mutex_unlock(&dd_mutex); }

/* ---- threads ---- */

static struct weft__dd_thread *threads;
static pthread_key_t thread_key;
/* The record lives on the heap (2 KiB would strain the static TLS a
 * dlopen()ed library may use); a pointer to it, in weft__hot, is all that
 * is thread-local. */
#define self_p weft__dd_self

static void drain_locked(struct weft__dd_thread *o, struct weft__dd_report *r);
static void finish_locked(void);

static void unregister(void *rec) {
  struct weft__dd_thread *t = rec;
  struct weft__dd_report r = {0};
  pthread_mutex_lock(&dd_mutex);
  drain_locked(t, &r); /* its orders outlive it */
  finish_locked();
  if (t->log != NULL) loggers--;
  for (struct weft__dd_thread **p = &threads; *p != NULL; p = &(*p)->next)
    if (*p == t) {
      *p = t->next;
      break;
    }
  weft__lg_actor_put(t->actor);
  pthread_mutex_unlock(&dd_mutex);
  if (self_p == t) {
    self_p = NULL;
    weft__wait_rec_set_dd(NULL);
  }
  weft__dd_deliver(&r);
  free(t->foreign);
  free(t->cache);
  free(t->log);
  free(t);
}

static struct weft__dd_thread *me_slow(void) {
  struct weft__dd_thread *t = calloc(1, sizeof *t);
  if (t == NULL) abort(); /* the detector cannot work without it */
  self_p = t;
  t->tid = weft__tid();
  const char *name = weft_thread_name(weft_current_thread());
  snprintf(t->name, sizeof t->name, "%s", name != NULL ? name : "thread");
  pthread_mutex_lock(&dd_mutex);
  t->next = threads;
  threads = t;
  pthread_mutex_unlock(&dd_mutex);
  pthread_setspecific(thread_key, t); /* unregister when the thread ends */
  weft__wait_rec_set_dd(t); /* for dumps: the locks it holds */
  return t;
}

/* The caller's record, registered (and named) the first time. */
static inline struct weft__dd_thread *me(void) {
  struct weft__dd_thread *t = self_p;
  return __builtin_expect(t != NULL, 1) ? t : me_slow();
}

struct weft__dd_thread *weft__dd_me(void) { return me(); }

static struct weft__dd_thread *thread_of_locked(pid_t tid) {
  for (struct weft__dd_thread *t = threads; t != NULL; t = t->next)
    if (t->tid == tid) return t;
  return NULL;
}

/* Whether the thread t still holds l (another thread may have released it). */
static bool holds(const struct weft__dd_thread *t, const weft_lock *l) {
  return weft__lock_holder_pid(l) == weft__pid &&
         WEFT__OWNER_TID(weft__lock_owner(l)) == t->tid;
}

/* Drops entries of locks this thread no longer holds. dd_mutex held. */
static void prune_locked(struct weft__dd_thread *t) {
  for (int f = 0; f < t->nforeign; f++) /* released elsewhere: drop without reading them */
    for (int i = 0; i < t->depth; i++)
      if (t->held[i].lock == t->foreign[f]) {
        t->held[i--] = t->held[--t->depth];
      }
  t->nforeign = 0;
  __atomic_store_n(&t->has_foreign, 0, __ATOMIC_RELAXED);
  int k = 0;
  for (int i = 0; i < t->depth; i++)
    if (holds(t, t->held[i].lock)) t->held[k++] = t->held[i];
  t->depth = k;
}

/* ---- the thread's cache of known orders ---- */

#define cache_slot weft__dd_cache_slot

/* A zeroed cache of size entries. From 2 MiB on, in huge pages where the
 * system allows it: looked up at random, a cache of 4 KiB pages would miss
 * the TLB on nearly every nested acquire. */
static uint64_t *cache_alloc(uint32_t size) {
  size_t bytes = sizeof(uint64_t) * size, huge = (size_t)2 << 20;
  if (bytes < huge) return calloc(size, sizeof(uint64_t));
  void *p = NULL;
  if (posix_memalign(&p, huge, bytes) != 0) return NULL;
  madvise(p, bytes, MADV_HUGEPAGE);
  memset(p, 0, bytes);
  return p;
}

/* Whether the thread knows the order key is in the graph. A lock whose
 * dd_node is 0 has no node yet. t->cache is NULL only while cache_epoch is
 * 0, which no epoch is. */
static bool cached(const struct weft__dd_thread *t, uint64_t key) {
  if (t->cache_epoch != __atomic_load_n(&weft__lg_epoch, __ATOMIC_RELAXED) ||
      (uint32_t)key == 0 || key >> 32 == 0)
    return false;
  for (uint32_t i = cache_slot(key, t->cache_mask);; i = (i + 1) & t->cache_mask) {
    if (t->cache[i] == key) return true;
    if (t->cache[i] == 0) return false;
  }
}

static void cache(struct weft__dd_thread *t, uint64_t key) {
  uint32_t epoch = __atomic_load_n(&weft__lg_epoch, __ATOMIC_RELAXED);
  if (t->cache == NULL || t->cache_epoch != epoch ||
      ((t->cache_count + 1) * 2 > t->cache_mask + 1 && t->cache_mask + 1 >= CACHE_MAX)) {
    /* Void, or full at its largest: start again (the orders of dead locks
     * it holds are never looked up again). */
    uint32_t size = t->cache != NULL && t->cache_epoch == epoch ? t->cache_mask + 1 : CACHE_FIRST;
    uint64_t *c = t->cache != NULL && size == t->cache_mask + 1 ? t->cache : NULL;
    if (c != NULL) {
      memset(c, 0, sizeof *c * size);
    } else {
      free(t->cache);
      t->cache = NULL;
      t->cache_epoch = 0;
      if ((c = cache_alloc(size)) == NULL) return;
    }
    t->cache = c;
    t->cache_mask = size - 1;
    t->cache_count = 0;
    t->cache_epoch = epoch;
  } else if ((t->cache_count + 1) * 2 > t->cache_mask + 1) { /* grow */
    uint32_t size = (t->cache_mask + 1) * 2;
    uint64_t *c = cache_alloc(size);
    if (c == NULL) return;
    for (uint32_t i = 0; i <= t->cache_mask; i++)
      if (t->cache[i] != 0) {
        uint32_t j = cache_slot(t->cache[i], size - 1);
        while (c[j] != 0) j = (j + 1) & (size - 1);
        c[j] = t->cache[i];
      }
    free(t->cache);
    t->cache = c;
    t->cache_mask = size - 1;
  }
  uint32_t i = cache_slot(key, t->cache_mask);
  while (t->cache[i] != 0) {
    if (t->cache[i] == key) return;
    i = (i + 1) & t->cache_mask;
  }
  t->cache[i] = key;
  t->cache_count++;
}

static uint64_t order_key(const weft_lock *from, const weft_lock *to) {
  return (uint64_t)__atomic_load_n(&from->dd_node, __ATOMIC_RELAXED) << 32 |
         __atomic_load_n(&to->dd_node, __ATOMIC_RELAXED);
}

/* ---- lock order ---- */

/* The cycle's weft__dd_xorder_hash if every lock of it is in the order
 * table, else 0: a cycle reported across processes is not reported again
 * when this process's own orders close it too. */
static uint64_t table_hash(uint32_t held, const weft__lg_edge *const *path, int n) {
  uint64_t *ids = malloc(sizeof *ids * (size_t)(n + 1)), h = 0;
  if (ids == NULL || (ids[n] = weft__xo_id_locked(held)) == 0) goto out;
  for (int i = 0; i < n; i++)
    if ((ids[i] = weft__xo_id_locked(path[i]->from)) == 0) goto out;
  h = weft__dd_xorder_hash(ids, n + 1);
out:
  free(ids);
  return h;
}

/* ---- the order log ---- */

struct weft__dd_logged {
  weft__lg_pair pair;
  const char *from_site, *to_site;
};

static void prepare_locked(struct weft__dd_report *r);

/* weft__lg_add, having taken in every ring first if the edge may move a
 * rank or need a search. dd_mutex held. */
static int add_edge_locked(uint32_t from, uint32_t to, const weft__lg_edge *e,
                           struct weft__dd_report *r) {
  int added = weft__lg_add_plain(from, to, e, !prepared);
  if (added != 3) return added;
  prepare_locked(r);
  return weft__lg_add(from, to, e);
}

/* Adds an order the thread o logged; reports the cycle it closes if the
 * ranks moved since it was logged. dd_mutex held. */
static void take_locked(struct weft__dd_thread *o, const struct weft__dd_logged *e,
                        struct weft__dd_report *r) {
  uint32_t from = weft__lg_alive(e->pair.from, e->pair.from_lives);
  uint32_t to = weft__lg_alive(e->pair.to, e->pair.to_lives);
  if (from == 0 || to == 0) return; /* a lock of it is gone, and its orders with it */
  weft__lg_edge ed = {.from_site = e->from_site, .to_site = e->to_site, .actor = o->actor};
  if (add_edge_locked(from, to, &ed, r) != 2) return;
  const weft__lg_edge *path[WEFT_DEADLOCK_REPORT_MAX_CHAIN * 64];
  int n = weft__lg_cycle(path, (int)(sizeof path / sizeof path[0]));
  ed.from = from;
  ed.to = to;
  /* Named by the edge's actor. The locks the thread holds now are not
   * listed: they may be other than when it logged, and the thread may be
   * another, or ending, with entries no longer pruned. */
  weft__dd_report_inversion_locked(r, NULL, &ed, path, n, table_hash(from, path, n));
}

/* Takes in the orders o has logged. dd_mutex held. */
static void drain_locked(struct weft__dd_thread *o, struct weft__dd_report *r) {
  if (o->log == NULL) return;
  /* The head moves before each order is added: adding one may take in
   * every ring, this one too and past this tail (prepare_locked). */
  uint32_t head, tail = __atomic_load_n(&o->log_tail, __ATOMIC_ACQUIRE);
  while ((int32_t)(tail - (head = o->log_head)) > 0) {
    /* The nodes and map slots of orders a little ahead: each is a cache
     * miss of its own in a large graph, and these overlap. */
    if (tail - head > 16) {
      const weft__lg_pair *p = &o->log[(head + 16) % LOG_SIZE].pair;
      weft__lg_prefetch(p->from, p->to, false);
    }
    if (tail - head > 8) {
      const weft__lg_pair *p = &o->log[(head + 8) % LOG_SIZE].pair;
      weft__lg_prefetch(p->from, p->to, true);
    }
    struct weft__dd_logged e = o->log[head % LOG_SIZE];
    __atomic_store_n(&o->log_head, head + 1, __ATOMIC_RELEASE);
    take_locked(o, &e, r);
  }
}

/* Before anything that may move a rank or search the graph: no order is
 * logged meanwhile, and every one logged so far is in the graph. Lasts
 * until finish_locked. dd_mutex held. */
static void prepare_locked(struct weft__dd_report *r) {
  if (prepared) return;
  prepared = true;
  __atomic_store_n(&order_seq, order_seq + 1, __ATOMIC_RELAXED);
  /* The barrier is needed only if another thread may be logging: none is
   * while an edge outside the order exists (it was added in an earlier
   * window, and weft__lg_ordered refuses then). */
  bool self_logs = self_p != NULL && self_p->log != NULL;
  if (loggers > (uint32_t)self_logs && !weft__lg_has_back()) {
    if (__atomic_load_n(&log_fence, __ATOMIC_RELAXED)) {
      weft__fence();
    } else if (weft__os_membarrier() != 0) {
      /* Refused now (a seccomp filter, say): loggers fence from now on. */
      __atomic_store_n(&log_fence, true, __ATOMIC_SEQ_CST);
      weft__fence();
    }
  }
  for (struct weft__dd_thread *o = threads; o != NULL; o = o->next) drain_locked(o, r);
}

static void finish_locked(void) {
  if (!prepared) return;
  prepared = false;
  __atomic_store_n(&order_seq, order_seq + 1, __ATOMIC_RELEASE);
}

/* The thread has added LOG_AFTER orders: from now on it logs. dd_mutex held. */
static void start_log_locked(struct weft__dd_thread *t) {
  if (loggers == 0) {
#ifdef WEFT__TSAN
    bool fence = true;
#else
    bool fence = weft__os_membarrier() != 0;
#endif
    __atomic_store_n(&log_fence, fence, __ATOMIC_RELAXED);
  }
  if ((t->log = malloc(sizeof *t->log * LOG_SIZE)) != NULL) loggers++;
}

/* Logs "the lock t holds -> l" if the graph's ranks already agree with it;
 * false (having logged nothing, or an order the mutex's side may have
 * missed) otherwise. */
static bool log_order(struct weft__dd_thread *t, weft_lock *l, const char *site) {
  uint32_t seq = __atomic_load_n(&order_seq, __ATOMIC_ACQUIRE), tail = t->log_tail;
  weft__lg_pair p;
  /* The held entry may be stale (released while detection was off): only
   * the mutex's side prunes, so an entry not held now goes there. */
  if ((seq & 1) != 0 || tail - __atomic_load_n(&t->log_head, __ATOMIC_ACQUIRE) == LOG_SIZE ||
      !holds(t, t->held[0].lock) || !weft__lg_ordered(t->held[0].lock, l, WEFT__XO_PRIVATE, &p))
    return false;
  t->log[tail % LOG_SIZE] = (struct weft__dd_logged){p, t->held[0].site, site};
  __atomic_store_n(&t->log_tail, tail + 1, __ATOMIC_RELEASE);
  if (__atomic_load_n(&log_fence, __ATOMIC_RELAXED))
    weft__fence();
  else
    __atomic_signal_fence(__ATOMIC_SEQ_CST); /* prepare_locked's membarrier is the fence */
  return __atomic_load_n(&order_seq, __ATOMIC_ACQUIRE) == seq;
}

/* Records held -> l for every lock the caller holds; reports each cycle
 * this closes. An order between locks in shared memory also goes to the
 * order table, which reports a cycle through other processes' orders.
 * dd_mutex held. */
static void add_orders_locked(struct weft__dd_thread *t, weft_lock *l, const char *site,
                              struct weft__dd_report *r) {
  prune_locked(t);
  uint32_t to = weft__lg_node(l);
  if (to == 0) return;
  if (t->actor == 0) t->actor = weft__lg_actor(t->tid, t->name);
  uint32_t ids[MAX_HELD];
  for (int i = 0; i < t->depth; i++)
    ids[i] = t->held[i].lock == l ? 0 : weft__lg_node(t->held[i].lock);
  for (int i = 0; i < t->depth; i++) {
    if (ids[i] == 0) continue;
    weft__lg_edge e = {.from_site = t->held[i].site, .to_site = site, .actor = t->actor};
    for (int j = 0; j < t->depth && e.ngates < WEFT__LG_MAX_GATES; j++)
      if (j != i && ids[j] != 0) e.gates[e.ngates++] = weft__lg_serial(ids[j]);
    int added = add_edge_locked(ids[i], to, &e, r);
    const weft__lg_edge *path[WEFT_DEADLOCK_REPORT_MAX_CHAIN * 64];
    int n = added == 2 ? weft__lg_cycle(path, (int)(sizeof path / sizeof path[0])) : 0;
    /* The graph reports the cycles of this process's own orders; the table
     * (with the order published) those through other processes' orders. */
    if (added >= 1) weft__xo_add_locked(t, i, ids, l, to, site, added == 2, r);
    if (added == 2) { /* one acquire may close several cycles: each is reported */
      e.from = ids[i];
      e.to = to;
      weft__dd_report_inversion_locked(r, t, &e, path, n, table_hash(ids[i], path, n));
    }
    if (added >= 0) cache(t, order_key(t->held[i].lock, l));
  }
  if (t->log == NULL && t->depth == 1 && ids[0] != 0 && ++t->orders_added == LOG_AFTER)
    start_log_locked(t);
  if (t->depth == 1 && ids[0] != 0) { /* what log_order will ask, once per lock */
    if (weft__lg_xref(ids[0]) == 0) weft__xo_private_locked(t->held[0].lock, ids[0]);
    if (weft__lg_xref(to) == 0) weft__xo_private_locked(l, to);
  }
}

void weft__dd_check_order(struct weft__dd_thread *t, weft_lock *l, const char *site) {
  if (!__atomic_load_n(&t->has_foreign, __ATOMIC_RELAXED)) {
    /* Entries may be stale (released by another process, or a lock taken
     * again here), but an order already in the graph adds nothing whoever
     * holds the lock now. */
    bool all_known = true;
    uint64_t key = 0;
    for (int i = 0; i < t->depth && all_known; i++)
      all_known = t->held[i].lock == l || cached(t, key = order_key(t->held[i].lock, l));
    if (!all_known && t->depth == 1 && t->log != NULL && t->held[0].lock != l &&
        log_order(t, l, site)) {
      cache(t, key);
      all_known = t->cache_epoch == __atomic_load_n(&weft__lg_epoch, __ATOMIC_RELAXED);
    }
    if (all_known) {
      if (t->depth == 1 && key != 0) /* cached() saw both serials set, in this epoch */
        __atomic_store_n(&l->dd_prev, weft__dd_prev((uint32_t)(key >> 32), t->cache_epoch),
                         __ATOMIC_RELAXED);
      return;
    }
  }
  struct weft__dd_report r = {0};
  pthread_mutex_lock(&dd_mutex);
  drain_locked(t, &r); /* its orders logged before come first */
  add_orders_locked(t, l, site, &r);
  finish_locked();
  pthread_mutex_unlock(&dd_mutex);
  weft__dd_deliver(&r);
}

/* ---- live deadlocks ---- */

/* Follows owner -> awaited lock -> owner from l; returns the length of the
 * chain if it reaches t, else 0. dd_mutex held. */
static int follow_chain_locked(struct weft__dd_thread *t, weft_lock *l, weft_lock **locks,
                               struct weft__dd_thread **owners, int max) {
  int n = 0;
  while (n < max) {
    if (weft__lock_holder_pid(l) != weft__pid)
      return 0; /* free, or held by another process: not ours to follow */
    struct weft__dd_thread *o = thread_of_locked(WEFT__OWNER_TID(weft__lock_owner(l)));
    if (o == NULL) return 0;
    locks[n] = l;
    owners[n] = o;
    n++;
    if (o == t) return n;
    l = __atomic_load_n(&o->waiting_for, __ATOMIC_ACQUIRE);
    if (l == NULL) return 0;
  }
  return 0;
}

/* Threads of this process that have published a wait (waiting_for). On a
 * line of its own: every wait writes it twice. */
static struct {
  uint32_t n;
} __attribute__((aligned(64))) waiting;

static int live_check(weft_lock *l, const char *site) {
  struct weft__dd_thread *t = me();
  /* The wait is published before the count is raised, and the chain is
   * followed after: of two threads about to close a cycle, the one that
   * raises the count second sees the other's wait. A thread that finds no
   * other waiting, and does not hold l itself, can be in no cycle now --
   * the usual case, which takes no mutex. Threads that do look follow the
   * chain one at a time, under the mutex, and one that refuses its acquire
   * withdraws its wait before letting go of it: so of a cycle's members
   * exactly one refuses. */
  __atomic_store_n(&t->waiting_site, site, __ATOMIC_RELAXED);
  /* Sequentially consistent: the wait table's readers (weft__dd_thread_awaits)
   * pair with it without this mutex. */
  __atomic_store_n(&t->waiting_for, l, __ATOMIC_SEQ_CST);
  /* A thread with entries released elsewhere goes the slow way, which
   * prunes them: a report across processes lists the locks it holds. */
  if (__atomic_fetch_add(&waiting.n, 1, __ATOMIC_SEQ_CST) == 0 &&
      !__atomic_load_n(&t->has_foreign, __ATOMIC_RELAXED) &&
      !holds(t, l))
    return 0;
  weft_lock *locks[256];
  struct weft__dd_thread *owners[256];
  struct weft__dd_report r = {0};
  pthread_mutex_lock(&dd_mutex);
  prune_locked(t);
  int n = follow_chain_locked(t, l, locks, owners, 256);
  bool refuse = n > 0 && __atomic_load_n(&mode, __ATOMIC_RELAXED) == WEFT_DEADLOCK_ERROR;
  if (n > 0) weft__dd_report_live_locked(&r, t, l, site, locks, owners, n);
  if (refuse) weft__dd_after_block();
  pthread_mutex_unlock(&dd_mutex);
  if (n == 0) return 0;
  weft__dd_deliver(&r); /* nothing to deliver if this chain was reported before */
  return refuse ? WEFT_EDEADLK : 0;
}

/* ---- hooks ---- */

void weft__dd_acquired_slow(weft_lock *l, const char *site, bool blocking) {
  struct weft__dd_thread *t = me();
  for (int i = 0; i < t->depth; i++)
    if (t->held[i].lock == l) { /* a stale entry of the same lock */
      t->held[i] = t->held[--t->depth];
      break;
    }
  if (t->depth == MAX_HELD) {
    pthread_mutex_lock(&dd_mutex);
    prune_locked(t);
    pthread_mutex_unlock(&dd_mutex);
  }
  if (t->depth == MAX_HELD) { /* still full: forget the oldest, as the docs say */
    memmove(&t->held[0], &t->held[1], sizeof t->held[0] * (MAX_HELD - 1));
    t->depth--;
  }
  t->held[t->depth++] = (struct weft__dd_held){l, site, blocking};
}

void weft__dd_released_slow(weft_lock *l) {
  struct weft__dd_thread *t = self_p;
  for (int i = t != NULL ? t->depth - 1 : -1; i >= 0; i--)
    if (t->held[i].lock == l) {
      memmove(&t->held[i], &t->held[i + 1], sizeof t->held[0] * (size_t)(t->depth - 1 - i));
      t->depth--;
      return;
    }
  /* Released by a thread that did not take it: tell the taker, which drops
   * its entry the next time it looks (prune), without reading the lock. */
  if (weft__lock_holder_pid(l) != weft__pid) return;
  pthread_mutex_lock(&dd_mutex);
  struct weft__dd_thread *o = thread_of_locked(WEFT__OWNER_TID(weft__lock_owner(l)));
  if (o != NULL && o != t) {
    if (o->nforeign == o->capforeign) {
      int cap = o->capforeign ? o->capforeign * 2 : 8;
      weft_lock **f = realloc(o->foreign, sizeof *f * (size_t)cap);
      if (f != NULL) {
        o->foreign = f;
        o->capforeign = cap;
      }
    }
    if (o->nforeign < o->capforeign) {
      o->foreign[o->nforeign++] = l;
      __atomic_store_n(&o->has_foreign, 1, __ATOMIC_RELAXED);
    }
  }
  pthread_mutex_unlock(&dd_mutex);
}

int weft__dd_before_block(weft_lock *l) {
  weft__dd_private_lock_check(l);
  return live_check(l, me()->pending_site);
}

void weft__dd_after_block(void) {
  if (self_p == NULL || __atomic_load_n(&self_p->waiting_for, __ATOMIC_RELAXED) == NULL) return;
  __atomic_store_n(&self_p->waiting_for, NULL, __ATOMIC_RELAXED);
  __atomic_fetch_sub(&waiting.n, 1, __ATOMIC_SEQ_CST);
}

bool weft__dd_thread_awaits(pid_t tid, weft_lock **l, char *name, size_t name_size,
                            char *site, size_t site_size) {
  pthread_mutex_lock(&dd_mutex);
  struct weft__dd_thread *o = thread_of_locked(tid);
  weft_lock *w = o != NULL ? __atomic_load_n(&o->waiting_for, __ATOMIC_SEQ_CST) : NULL;
  if (w != NULL) {
    *l = w;
    snprintf(name, name_size, "%s", o->name);
    const char *at = __atomic_load_n(&o->waiting_site, __ATOMIC_RELAXED);
    snprintf(site, site_size, "%s", at != NULL ? at : "");
  }
  pthread_mutex_unlock(&dd_mutex);
  return w != NULL;
}

bool weft__dd_error_mode(void) {
  return __atomic_load_n(&mode, __ATOMIC_RELAXED) == WEFT_DEADLOCK_ERROR;
}

void weft__dd_forget(weft_lock *l) {
  /* Not seen since it was initialised: nothing to drop, and no mutex. */
  if (__atomic_load_n(&l->dd_node, __ATOMIC_RELAXED) == 0) return;
  pthread_mutex_lock(&dd_mutex);
  weft__xo_forget_locked(l); /* first: it reads the lock's node */
  weft__lg_forget(l);
  __atomic_store_n(&l->dd_node, 0, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&dd_mutex);
}

/* ---- modes ---- */

int weft_deadlock_set_mode(weft_deadlock_mode m) {
  if ((int)m < WEFT_DEADLOCK_OFF || m > WEFT_DEADLOCK_ERROR)
    return weft__error(WEFT_EINVAL, "weft_deadlock_set_mode: unknown mode %d", (int)m);
  __atomic_store_n(&mode, (int)m, __ATOMIC_RELAXED);
  __atomic_store_n(&weft__dd_on, m != WEFT_DEADLOCK_OFF, __ATOMIC_RELAXED);
  weft__lock_hooks_set(WEFT__HOOK_DD, m != WEFT_DEADLOCK_OFF);
  return 0;
}

weft_deadlock_mode weft_deadlock_get_mode(void) {
  return (weft_deadlock_mode)__atomic_load_n(&mode, __ATOMIC_RELAXED);
}

int weft_deadlock_set_hook(weft_deadlock_hook h, void *arg) {
  weft__dd_set_hook(h, arg);
  return 0;
}

void weft__dd_init(void) {
  pthread_key_create(&thread_key, unregister);
  const char *env = getenv("WEFT_DEADLOCK");
  weft_deadlock_mode m = WEFT_DEADLOCK_WARN;
  if (env != NULL) {
    if (!strcmp(env, "off") || !strcmp(env, "0"))
      m = WEFT_DEADLOCK_OFF;
    else if (!strcmp(env, "abort"))
      m = WEFT_DEADLOCK_ABORT;
    else if (!strcmp(env, "error"))
      m = WEFT_DEADLOCK_ERROR;
    else if (strcmp(env, "warn") != 0)
      fprintf(stderr, "weft: WEFT_DEADLOCK=%s is not off, warn, abort or error; using warn\n", env);
  }
  weft_deadlock_set_mode(m);
}

/* The fork handlers hold dd_mutex across fork (it shares its page with
 * the registries, so this copies no extra page), and the child gets the
 * graph whole, never half-updated by a thread that does not exist there. */
void weft__dd_before_fork(void) { pthread_mutex_lock(&dd_mutex); }

void weft__dd_after_fork_parent(void) { pthread_mutex_unlock(&dd_mutex); }

WEFT__HOT void weft__dd_after_fork_child(void) {
  pthread_mutex_unlock(&dd_mutex);
  /* Only the forking thread exists; the parent's orders are not the
   * child's (its other threads' held locks made some of them). */
  if (threads == NULL) return;
  weft__lg_reset();
  weft__dd_reports_reset_locked();
  threads = self_p;
  waiting.n = 0; /* the other threads, waiting or not, are not the child's */
  if (self_p != NULL) {
    self_p->next = NULL;
    self_p->tid = weft__tid();
    self_p->waiting_for = NULL;
    self_p->actor = 0;
    /* Its log held orders of the parent's graph, and named its actor
     * there: it starts again as a thread that has added no order. */
    free(self_p->log);
    self_p->log = NULL;
    self_p->log_head = self_p->log_tail = 0;
    self_p->orders_added = 0;
  }
  loggers = 0;
}
