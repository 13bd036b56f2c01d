/* SPDX-License-Identifier: MIT */
/* Deadlock detection: a lock-order graph checked for cycles when a new
 * order appears, and a wait-for chain followed before a thread blocks.
 *
 * Each lock that detection sees gets a node; weft_lock.pad_ holds its index
 * + 1. A node remembers its lock's address and a generation, so memory that
 * is reused for a new lock (after weft_lock_init or destroy) never inherits
 * the old lock's edges: an edge names its target's generation, and a stale
 * one is skipped and dropped.
 *
 * Each thread keeps the locks it holds in a small thread-local stack. A
 * Python Lock may be released by another thread, so an entry is trusted
 * only while the lock's owner is still this thread; stale entries are
 * dropped when met. A per-thread cache of edges already known lets the
 * common case -- the same nested order again -- skip the global mutex.
 *
 * The global mutex (dd_mutex) guards the graph and the list of threads. It
 * is a pthread mutex: detection must not recurse into weft's own locks.
 */
#define _GNU_SOURCE
#include "deadlock.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "lock.h"
#include "os/os.h"
#include "weft/deadlock.h"
#include "weft/thread.h"

#define PID_MASK 0x3fffffffu
#define MAX_HELD 64
#define CACHE_SIZE 64
#define MAX_VISIT 200000 /* nodes one cycle search may visit */

int weft__dd_on;
static int mode = WEFT_DEADLOCK_WARN;
static weft_deadlock_hook hook;
static void *hook_arg;

/* ---- the graph ---- */

#define MAX_GATES 4

struct edge {
  uint32_t to, to_gen;
  uint32_t gates[MAX_GATES]; /* other locks held when it was seen: a cycle whose edges */
  uint32_t ngates;           /* all share one of them cannot deadlock */
  const char *from_site, *to_site; /* where the held lock and the new one were taken */
  pid_t tid;
  char thread[WEFT_NAME_MAX + 1];
};

struct node {
  weft_lock *lock;
  const char *name, *site; /* copied at creation: reports never read the lock itself, */
                           /* which may be gone (freed without weft_lock_destroy) */
  uint32_t gen;
  bool live;
  uint32_t next_free;
  uint32_t mark, parent; /* cycle search scratch */
  uint32_t parent_edge;
  struct edge *out;
  uint32_t nout, cap;
};

#define CHUNK 4096
#define MAX_CHUNKS 1024
/* Allocated at the first node: an 8 KiB static array would push weft's
 * other globals onto a second page, which every forked child would then
 * have to copy. */
static struct node **chunks;
static uint32_t n_nodes, free_head; /* free_head: index + 1 */
static uint32_t search_mark;
static uint32_t graph_version = 1; /* bumped when a node dies: caches go stale */
static uint64_t *reported;         /* hashes of cycles already reported */
static size_t n_reported, cap_reported;
static pthread_mutex_t dd_mutex = PTHREAD_MUTEX_INITIALIZER;

static struct node *node_at(uint32_t index) { return &chunks[index / CHUNK][index % CHUNK]; }

static const char *label_of(const char *name, const char *site, const void *addr, char *buf,
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
  return label_of(l->name, l->site, l, buf, size);
}

/* ---- lock address -> node ----
 * weft_lock.pad_ is only a hint: a lock in memory shared with other
 * processes has its pad_ overwritten by whichever process used it last. The
 * map finds the node again instead of making (and leaking) a new one.
 * Open addressing with linear probing; TOMB marks a removed key. */
#define TOMB ((weft_lock *)1)
struct slot {
  weft_lock *key;
  uint32_t id;
};
static struct slot *amap;
static size_t acap, aused; /* aused counts keys and tombstones */

static size_t amap_home(const weft_lock *l) {
  return (size_t)(((uintptr_t)l >> 3) * 0x9e3779b97f4a7c15ull) & (acap - 1);
}

static uint32_t amap_find(const weft_lock *l) {
  for (size_t i = acap ? amap_home(l) : 0, k = 0; k < acap; i = (i + 1) & (acap - 1), k++) {
    if (amap[i].key == NULL) return 0;
    if (amap[i].key == l) return amap[i].id;
  }
  return 0;
}

static void amap_del(const weft_lock *l) {
  for (size_t i = acap ? amap_home(l) : 0, k = 0; k < acap; i = (i + 1) & (acap - 1), k++) {
    if (amap[i].key == NULL) return;
    if (amap[i].key == l) {
      amap[i].key = TOMB;
      return;
    }
  }
}

static bool amap_put(weft_lock *l, uint32_t id) {
  if ((aused + 1) * 2 > acap) { /* grow, dropping tombstones */
    size_t cap = acap ? acap * 2 : 256;
    struct slot *old = amap, *fresh = calloc(cap, sizeof *fresh);
    if (fresh == NULL) return false;
    size_t old_cap = acap;
    amap = fresh;
    acap = cap;
    aused = 0;
    for (size_t i = 0; i < old_cap; i++)
      if (old[i].key != NULL && old[i].key != TOMB) amap_put(old[i].key, old[i].id);
    free(old);
  }
  size_t i = amap_home(l);
  while (amap[i].key != NULL && amap[i].key != TOMB && amap[i].key != l) i = (i + 1) & (acap - 1);
  if (amap[i].key == NULL) aused++;
  amap[i] = (struct slot){l, id};
  return true;
}

/* The live node of l, or 0; repairs a pad_ another process overwrote. */
static uint32_t find_node_locked(weft_lock *l) {
  uint32_t id = __atomic_load_n(&l->pad_, __ATOMIC_RELAXED);
  if (id != 0 && id <= n_nodes) {
    struct node *n = node_at(id - 1);
    if (n->live && n->lock == l) return id;
  }
  id = amap_find(l);
  if (id == 0 || !node_at(id - 1)->live || node_at(id - 1)->lock != l) return 0;
  __atomic_store_n(&l->pad_, id, __ATOMIC_RELAXED);
  return id;
}

/* The node of l, made if it has none. dd_mutex held. 0 if out of memory. */
static uint32_t node_of_locked(weft_lock *l) {
  uint32_t id = find_node_locked(l);
  if (id != 0) return id;
  uint32_t index;
  if (free_head != 0) {
    index = free_head - 1;
    free_head = node_at(index)->next_free;
  } else {
    if (chunks == NULL && (chunks = calloc(MAX_CHUNKS, sizeof *chunks)) == NULL) return 0;
    if (n_nodes / CHUNK >= MAX_CHUNKS) return 0;
    if (chunks[n_nodes / CHUNK] == NULL &&
        (chunks[n_nodes / CHUNK] = calloc(CHUNK, sizeof(struct node))) == NULL)
      return 0;
    index = n_nodes++;
  }
  struct node *n = node_at(index);
  n->lock = l;
  n->name = l->name;
  n->site = l->site;
  n->gen++;
  n->live = true;
  n->nout = 0;
  if (!amap_put(l, index + 1)) { /* no memory for the map: give the node back */
    n->live = false;
    n->lock = NULL;
    n->next_free = free_head;
    free_head = index + 1;
    return 0;
  }
  __atomic_store_n(&l->pad_, index + 1, __ATOMIC_RELAXED);
  return index + 1;
}

static void free_node_locked(uint32_t id) {
  struct node *n = node_at(id - 1);
  if (!n->live) return;
  amap_del(n->lock);
  n->live = false;
  n->lock = NULL;
  free(n->out);
  n->out = NULL;
  n->nout = n->cap = 0;
  n->next_free = free_head;
  free_head = id;
  graph_version++;
}

static const char *node_label(uint32_t id, char *buf, size_t size) {
  const struct node *n = node_at(id - 1);
  return label_of(n->name, n->site, n->lock, buf, size);
}

static bool edge_live(const struct edge *e) {
  if (e->to == 0 || e->to > n_nodes) return false;
  const struct node *t = node_at(e->to - 1);
  return t->live && t->gen == e->to_gen;
}

/* ---- threads ---- */

struct held {
  weft_lock *lock;
  const char *site;
  bool blocking; /* taken by a blocking acquire (a trylock's is still a "from") */
};

struct dd_thread {
  struct dd_thread *next;
  bool registered;
  pid_t tid;
  char name[WEFT_NAME_MAX + 1];
  weft_lock *waiting_for; /* a lock it sleeps on with no timeout */
  const char *pending_site; /* where the acquire now under way was called */
  int depth;
  struct held held[MAX_HELD];
  /* Locks this thread took that other threads released: its entries for
   * them are dropped unread, as the lock may be destroyed and freed by now. */
  weft_lock **foreign;
  int nforeign, capforeign;
  int has_foreign; /* read without dd_mutex: a cheap test before taking it */
  uint64_t cache[CACHE_SIZE]; /* known edges: (from << 32 | to), valid for cache_version */
  uint32_t cache_version;
};

static struct dd_thread *threads;
static pthread_key_t thread_key;
/* The record lives on the heap (2 KiB would strain the static TLS a
 * dlopen()ed library may use); a pointer to it is all that is thread-local. */
static _Thread_local struct dd_thread *self_p __attribute__((tls_model("initial-exec")));
#define self (*self_p)

static void unregister(void *rec) {
  struct dd_thread *t = rec;
  pthread_mutex_lock(&dd_mutex);
  for (struct dd_thread **p = &threads; *p != NULL; p = &(*p)->next)
    if (*p == t) {
      *p = t->next;
      break;
    }
  pthread_mutex_unlock(&dd_mutex);
  if (self_p == t) self_p = NULL;
  free(t->foreign);
  free(t);
}

static struct dd_thread *me_slow(void);

/* The caller's record, registered (and named) the first time. */
static inline struct dd_thread *me(void) {
  struct dd_thread *t = self_p;
  return __builtin_expect(t != NULL, 1) ? t : me_slow();
}

static struct dd_thread *me_slow(void) {
  struct dd_thread *t = calloc(1, sizeof *t);
  if (t == NULL) abort(); /* the detector cannot work without it */
  self_p = t;
  self.tid = weft__tid();
  const char *name = weft_thread_name(weft_current_thread());
  snprintf(self.name, sizeof self.name, "%s", name != NULL ? name : "thread");
  pthread_mutex_lock(&dd_mutex);
  self.next = threads;
  threads = &self;
  self.registered = true;
  pthread_mutex_unlock(&dd_mutex);
  pthread_setspecific(thread_key, t); /* unregister when the thread ends */
  return t;
}

static struct dd_thread *thread_of_locked(pid_t tid) {
  for (struct dd_thread *t = threads; t != NULL; t = t->next)
    if (t->tid == tid) return t;
  return NULL;
}

/* Whether the thread t still holds l (another thread may have released it). */
static bool holds(const struct dd_thread *t, const weft_lock *l) {
  uint32_t word = __atomic_load_n(&l->word, __ATOMIC_RELAXED) & PID_MASK;
  return word == (uint32_t)weft__pid &&
         WEFT__OWNER_TID(__atomic_load_n(&l->owner, __ATOMIC_RELAXED)) == t->tid;
}

/* Drops entries of locks this thread no longer holds. dd_mutex held. */
static void prune_locked(struct dd_thread *t) {
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

static void prune(struct dd_thread *t) {
  if (__atomic_load_n(&t->has_foreign, __ATOMIC_RELAXED)) {
    pthread_mutex_lock(&dd_mutex);
    prune_locked(t);
    pthread_mutex_unlock(&dd_mutex);
    return;
  }
  int k = 0;
  for (int i = 0; i < t->depth; i++)
    if (holds(t, t->held[i].lock)) t->held[k++] = t->held[i];
  t->depth = k;
}

/* ---- reports ---- */

struct report {
  char *text;
  size_t len, cap;
};

static void put(struct report *r, const char *fmt, ...) WEFT_PRINTF(2, 3);
static void put(struct report *r, const char *fmt, ...) {
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

static void put_held(struct report *r, const struct dd_thread *t) {
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

/* Prints or hands over the report; aborts in abort mode. Called without
 * dd_mutex held. */
static void deliver(struct report *r) {
  if (r->text == NULL) return;
  pthread_mutex_lock(&dd_mutex);
  weft_deadlock_hook h = hook;
  void *h_arg = hook_arg;
  pthread_mutex_unlock(&dd_mutex);
  if (h != NULL)
    h(r->text, h_arg);
  else {
    fputs(r->text, stderr);
    fflush(stderr);
  }
  free(r->text);
  r->text = NULL;
  if (__atomic_load_n(&mode, __ATOMIC_RELAXED) == WEFT_DEADLOCK_ABORT) abort();
}

/* ---- lock order ---- */

static uint64_t cycle_hash(const uint32_t *ids, int n) {
  /* Order-free: the same cycle found from any of its locks hashes alike. */
  uint64_t h = 0;
  for (int i = 0; i < n; i++) {
    /* With the generation: ids are recycled, cycles of new locks are new. */
    uint64_t x = ((uint64_t)node_at(ids[i] - 1)->gen << 32 | ids[i]) * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    h += x * 0xbf58476d1ce4e5b9ull;
  }
  return h ^ (uint64_t)n;
}

static bool already_reported(uint64_t h) {
  for (size_t i = 0; i < n_reported; i++)
    if (reported[i] == h) return true;
  if (n_reported == cap_reported) {
    size_t cap = cap_reported ? cap_reported * 2 : 16;
    uint64_t *p = realloc(reported, cap * sizeof *p);
    if (p == NULL) return false;
    reported = p;
    cap_reported = cap;
  }
  reported[n_reported++] = h;
  return false;
}

/* Searches a path from node `from` to node `goal` (depth first, bounded).
 * On success the path is in the nodes' parent links, from goal back. */
static bool find_path_locked(uint32_t from, uint32_t goal) {
  uint32_t mark = ++search_mark;
  uint32_t *stack = malloc(sizeof(uint32_t) * 1024), cap = 1024, top = 0, visited = 0;
  if (stack == NULL) return false;
  stack[top++] = from;
  node_at(from - 1)->mark = mark;
  node_at(from - 1)->parent = 0;
  bool found = false;
  while (top > 0 && !found && visited++ < MAX_VISIT) {
    uint32_t id = stack[--top];
    struct node *n = node_at(id - 1);
    for (uint32_t i = 0; i < n->nout; i++) {
      struct edge *e = &n->out[i];
      if (!edge_live(e)) {
        n->out[i--] = n->out[--n->nout]; /* drop an edge to a lock that is gone */
        continue;
      }
      struct node *t = node_at(e->to - 1);
      if (t->mark == mark) continue;
      t->mark = mark;
      t->parent = id;
      t->parent_edge = i;
      if (e->to == goal) {
        found = true;
        break;
      }
      if (top == cap) {
        uint32_t *s = realloc(stack, sizeof(uint32_t) * cap * 2);
        if (s == NULL) break;
        stack = s;
        cap *= 2;
      }
      stack[top++] = e->to;
    }
  }
  free(stack);
  return found;
}

static struct edge *add_edge_locked(uint32_t from, uint32_t to, const struct held *h,
                                    const char *site, const struct dd_thread *t,
                                    const uint32_t *gates, uint32_t ngates) {
  struct node *n = node_at(from - 1);
  uint32_t to_gen = node_at(to - 1)->gen;
  for (uint32_t i = 0; i < n->nout; i++) {
    if (!edge_live(&n->out[i])) { /* to a lock that is gone: drop it while passing */
      n->out[i--] = n->out[--n->nout];
      continue;
    }
    if (n->out[i].to == to && n->out[i].to_gen == to_gen) return NULL; /* known */
  }
  if (n->nout == n->cap) {
    uint32_t cap = n->cap ? n->cap * 2 : 4;
    struct edge *out = realloc(n->out, cap * sizeof *out);
    if (out == NULL) return NULL;
    n->out = out;
    n->cap = cap;
  }
  struct edge *e = &n->out[n->nout++];
  *e = (struct edge){.to = to, .to_gen = to_gen, .from_site = h->site, .to_site = site,
                     .tid = t->tid, .ngates = ngates};
  memcpy(e->gates, gates, sizeof(uint32_t) * ngates);
  snprintf(e->thread, sizeof e->thread, "%s", t->name);
  return e;
}

/* Reports the cycle closed by the new edge held -> new: the path found
 * from new back to held, then the new edge. dd_mutex held. */
static void report_inversion_locked(struct report *r, uint32_t held_id, uint32_t new_id,
                                    const struct edge *closing, struct dd_thread *t) {
  /* Collect the path new -> ... -> held (walking parent links from held). */
  uint32_t ids[WEFT_DEADLOCK_REPORT_MAX_CHAIN * 64];
  const struct edge *edges[WEFT_DEADLOCK_REPORT_MAX_CHAIN * 64];
  int n = 0;
  for (uint32_t id = held_id; id != new_id && n < (int)(sizeof ids / sizeof ids[0]) - 1;) {
    struct node *nd = node_at(id - 1);
    struct node *p = node_at(nd->parent - 1);
    edges[n] = &p->out[nd->parent_edge];
    ids[n++] = id;
    id = nd->parent;
  }
  ids[n] = new_id;
  /* Path edges are collected backwards; put them in order new -> held. */
  for (int i = 0, j = n - 1; i < j; i++, j--) {
    const struct edge *e = edges[i];
    edges[i] = edges[j];
    edges[j] = e;
  }
  /* A lock held across every edge of the cycle (a "gate") serialises them:
   * no two threads can be inside the cycle at once. */
  for (uint32_t g = 0; g < closing->ngates; g++) {
    bool common = true;
    for (int i = 0; i < n && common; i++) {
      common = false;
      for (uint32_t k = 0; k < edges[i]->ngates; k++)
        if (edges[i]->gates[k] == closing->gates[g]) common = true;
    }
    if (common) return;
  }
  uint32_t all[WEFT_DEADLOCK_REPORT_MAX_CHAIN * 64 + 1];
  memcpy(all, ids, sizeof(uint32_t) * (size_t)(n + 1));
  if (already_reported(cycle_hash(all, n + 1))) return;

  char a[128], b[128];
  int locks = n + 1;
  put(r, "weft: possible deadlock: lock-order inversion between %d locks\n", locks);
  put(r, "  %s (tid %d) acquires \"%s\" at %s while holding \"%s\" (acquired at %s)\n", t->name,
      (int)t->tid, node_label(new_id, a, sizeof a),
      closing->to_site != NULL ? closing->to_site : "?", node_label(held_id, b, sizeof b),
      closing->from_site != NULL ? closing->from_site : "(site unknown)");
  put(r, "  the locks:\n");
  for (int i = n; i >= 0; i--) {
    const struct node *nd = node_at(ids[i] - 1);
    if (i < n - WEFT_DEADLOCK_REPORT_MAX_CHAIN + 1) {
      put(r, "    ... (%d more, truncated)\n", i + 1);
      break;
    }
    put(r, "    \"%s\" initialised at %s\n", node_label(ids[i], a, sizeof a),
        nd->site != NULL ? nd->site : "(unknown)");
  }
  put(r, "  the cycle:\n");
  /* The new edge first, then the path back round: held -> new -> ... -> held. */
  put(r, "    \"%s\" -> \"%s\": %s (tid %d) took the second at %s while holding the first (taken at %s)\n",
      node_label(held_id, a, sizeof a), node_label(new_id, b, sizeof b),
      t->name, (int)t->tid, closing->to_site ? closing->to_site : "?",
      closing->from_site ? closing->from_site : "(site unknown)");
  int shown = 1;
  uint32_t from = new_id;
  for (int i = 0; i < n; i++) {
    const struct edge *e = edges[i];
    if (shown >= WEFT_DEADLOCK_REPORT_MAX_CHAIN) {
      put(r, "    ... (%d more, truncated)\n", n - i);
      break;
    }
    put(r, "    \"%s\" -> \"%s\": %s (tid %d) took the second at %s while holding the first (taken at %s)\n",
        node_label(from, a, sizeof a), node_label(e->to, b, sizeof b),
        e->thread, (int)e->tid, e->to_site ? e->to_site : "?",
        e->from_site ? e->from_site : "(site unknown)");
    from = e->to;
    shown++;
  }
  put_held(r, t);
  put(r, "  possible scenario:\n");
  put(r, "    thread 1 holds \"%s\", wants \"%s\"\n", node_label(held_id, a, sizeof a),
      node_label(new_id, b, sizeof b));
  from = new_id;
  for (int i = 0; i < n && i < WEFT_DEADLOCK_REPORT_MAX_CHAIN - 1; i++) {
    put(r, "    thread %d holds \"%s\", wants \"%s\"\n", i + 2, node_label(from, a, sizeof a),
        node_label(edges[i]->to, b, sizeof b));
    from = edges[i]->to;
  }
  put(r, "    and each waits for the next: deadlock\n");
}

static bool cached(struct dd_thread *t, uint32_t from, uint32_t to) {
  uint64_t key = (uint64_t)from << 32 | to;
  if (t->cache_version != __atomic_load_n(&graph_version, __ATOMIC_RELAXED)) return false;
  return t->cache[(from * 31u + to) % CACHE_SIZE] == key;
}

static void cache(struct dd_thread *t, uint32_t from, uint32_t to) {
  uint32_t version = __atomic_load_n(&graph_version, __ATOMIC_RELAXED);
  if (t->cache_version != version) {
    memset(t->cache, 0, sizeof t->cache);
    t->cache_version = version;
  }
  t->cache[(from * 31u + to) % CACHE_SIZE] = (uint64_t)from << 32 | to;
}

/* Records held -> l for every lock the caller holds; reports a new cycle. */
static void check_order(struct dd_thread *t, weft_lock *l, const char *site) {
  uint32_t to = __atomic_load_n(&l->pad_, __ATOMIC_RELAXED);
  bool all_known = to != 0;
  for (int i = 0; i < t->depth && all_known; i++)
    all_known = cached(t, __atomic_load_n(&t->held[i].lock->pad_, __ATOMIC_RELAXED), to);
  if (all_known) return;

  struct report r = {0};
  pthread_mutex_lock(&dd_mutex);
  to = node_of_locked(l);
  for (int i = 0; to != 0 && i < t->depth; i++) {
    if (t->held[i].lock == l) continue;
    uint32_t from = node_of_locked(t->held[i].lock);
    if (from == 0) continue;
    uint32_t gates[MAX_GATES], ngates = 0;
    for (int j = 0; j < t->depth && ngates < MAX_GATES; j++)
      if (j != i && t->held[j].lock != l) gates[ngates++] = node_of_locked(t->held[j].lock);
    struct edge *e = add_edge_locked(from, to, &t->held[i], site, t, gates, ngates);
    if (e != NULL) { /* every new edge is searched: one acquire may close several cycles */
      struct edge closing = *e; /* the search may move edges around */
      if (find_path_locked(to, from)) report_inversion_locked(&r, from, to, &closing, t);
    }
    cache(t, from, to);
  }
  pthread_mutex_unlock(&dd_mutex);
  deliver(&r);
}

/* ---- live deadlocks ---- */

/* Follows owner -> awaited lock -> owner from l; true if it reaches t.
 * dd_mutex held. Fills the chain for the report. */
static int follow_chain_locked(struct dd_thread *t, weft_lock *l, weft_lock **locks,
                               struct dd_thread **owners, int max) {
  int n = 0;
  while (n < max) {
    if ((__atomic_load_n(&l->word, __ATOMIC_RELAXED) & PID_MASK) != (uint32_t)weft__pid)
      return 0; /* free, or held by another process: not ours to follow */
    struct dd_thread *o = thread_of_locked(WEFT__OWNER_TID(__atomic_load_n(&l->owner, __ATOMIC_RELAXED)));
    if (o == NULL) return 0;
    locks[n] = l;
    owners[n] = o;
    n++;
    if (o == t) return n;
    l = __atomic_load_n(&o->waiting_for, __ATOMIC_RELAXED);
    if (l == NULL) return 0;
  }
  return 0;
}

static int live_check(weft_lock *l, const char *site) {
  struct dd_thread *t = me();
  weft_lock *locks[256];
  struct dd_thread *owners[256];
  struct report r = {0};
  pthread_mutex_lock(&dd_mutex);
  prune_locked(t);
  int n = follow_chain_locked(t, l, locks, owners, 256);
  /* The same chain of locks is reported once: a program that backs off
   * and retries (error mode), or hands a Lock to another thread or process
   * on purpose, must not flood stderr. */
  uint64_t h = 0x5eed;
  for (int i = 0; i < n; i++) h = (h ^ (uint64_t)(uintptr_t)locks[i]) * 0x100000001b3ull;
  if (n > 0 && !already_reported(h)) {
    char a[128];
    put(&r, "weft: deadlock: %s (tid %d) would wait forever for \"%s\"%s%s\n", t->name, (int)t->tid,
        label(l, a, sizeof a), site != NULL ? " at " : "", site != NULL ? site : "");
    if (n == 1) {
      put(&r, "  it already holds \"%s\" itself, and a Lock is not reentrant (use an RLock);\n"
              "  only a release by another thread or process could end this wait\n", a);
    } else {
      put(&r, "  the chain of waits:\n");
      for (int i = 0; i < n && i < WEFT_DEADLOCK_REPORT_MAX_CHAIN; i++)
        put(&r, "    \"%s\" is held by %s (tid %d)%s\n", label(locks[i], a, sizeof a), owners[i]->name,
            (int)owners[i]->tid,
            owners[i] == t ? ", the caller" : ", which waits for the next");
      if (n > WEFT_DEADLOCK_REPORT_MAX_CHAIN)
        put(&r, "    ... (%d more, truncated)\n", n - WEFT_DEADLOCK_REPORT_MAX_CHAIN);
    }
    put_held(&r, t);
  } else {
    __atomic_store_n(&t->waiting_for, l, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock(&dd_mutex);
  if (n == 0) return 0;
  deliver(&r); /* nothing to deliver if this chain was reported before */
  return __atomic_load_n(&mode, __ATOMIC_RELAXED) == WEFT_DEADLOCK_ERROR ? WEFT_EDEADLK : 0;
}

/* ---- hooks ---- */

int weft__dd_before_acquire(weft_lock *l, const char *site, bool blocking) {
  if (!blocking) return 0;
  struct dd_thread *t = me();
  t->pending_site = site; /* for a live report, if this acquire must wait */
  if (t->depth > 0) {
    prune(t);
    if (t->depth > 0) check_order(t, l, site);
  }
  /* A re-acquire of a Lock this thread holds is found by the live check
   * that runs before the thread sleeps: the owner chain ends at itself. */
  return 0;
}

void weft__dd_acquired(weft_lock *l, const char *site, bool blocking) {
  struct dd_thread *t = me();
  for (int i = 0; i < t->depth; i++)
    if (t->held[i].lock == l) { /* a stale entry of the same lock */
      t->held[i] = t->held[--t->depth];
      break;
    }
  if (t->depth == MAX_HELD) prune(t);
  if (t->depth == MAX_HELD) { /* still full: forget the oldest, as the docs say */
    memmove(&t->held[0], &t->held[1], sizeof t->held[0] * (MAX_HELD - 1));
    t->depth--;
  }
  t->held[t->depth++] = (struct held){l, site, blocking};
}

void weft__dd_released(weft_lock *l) {
  struct dd_thread *t = self_p;
  for (int i = t != NULL ? t->depth - 1 : -1; i >= 0; i--)
    if (t->held[i].lock == l) {
      memmove(&t->held[i], &t->held[i + 1], sizeof t->held[0] * (size_t)(t->depth - 1 - i));
      t->depth--;
      return;
    }
  /* Released by a thread that did not take it: tell the taker, which drops
   * its entry the next time it looks (prune), without reading the lock. */
  if ((__atomic_load_n(&l->word, __ATOMIC_RELAXED) & PID_MASK) != (uint32_t)weft__pid) return;
  pthread_mutex_lock(&dd_mutex);
  struct dd_thread *o = thread_of_locked(WEFT__OWNER_TID(__atomic_load_n(&l->owner, __ATOMIC_RELAXED)));
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
  struct dd_thread *t = me();
  struct report r = {0};
  pthread_mutex_lock(&dd_mutex);
  if (!already_reported(((uint64_t)(uintptr_t)obj ^ 0x9e3779b97f4a7c15ull) * 0x100000001b3ull)) {
    put(&r,
        "weft: deadlock: %s (tid %d) waits on %s, which lives in memory private to this\n"
        "  process (pid %d): an ordinary global, the stack or malloc, which fork copies. Each\n"
        "  process has its own copy, so nothing process %d does to it can reach this one.\n"
        "  Create it with %s() (or in weft_shared_alloc() memory) before forking.\n",
        t->name, (int)t->tid, what, (int)weft__pid, (int)other, make);
  }
  pthread_mutex_unlock(&dd_mutex);
  deliver(&r);
}

/* Whether the lock's holder is the thread that forked this process (or its
 * ancestor), which lives on here and may release this copy. */
static bool held_by_forking_thread(const weft_lock *l, pid_t holder) {
  uint32_t owner = __atomic_load_n(&l->owner, __ATOMIC_RELAXED);
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
static void private_lock_check(weft_lock *l) {
  pid_t holder = weft__lock_holder_pid(l);
  if (holder == 0 || holder == weft__pid || held_by_forking_thread(l, holder)) return;
  char a[128], what[160];
  snprintf(what, sizeof what, "Lock \"%s\", held by process %d", label(l, a, sizeof a), (int)holder);
  weft__dd_private_copy_check(l, what, "weft_lock_new", holder);
}

int weft__dd_before_block(weft_lock *l) {
  private_lock_check(l);
  return live_check(l, me()->pending_site);
}

void weft__dd_after_block(void) {
  if (self_p == NULL) return;
  __atomic_store_n(&self.waiting_for, NULL, __ATOMIC_RELAXED);
}

void weft__dd_forget(weft_lock *l) {
  pthread_mutex_lock(&dd_mutex);
  uint32_t id = find_node_locked(l);
  if (id != 0) free_node_locked(id);
  __atomic_store_n(&l->pad_, 0, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&dd_mutex);
}

/* ---- modes ---- */

int weft_deadlock_set_mode(weft_deadlock_mode m) {
  if ((int)m < WEFT_DEADLOCK_OFF || m > WEFT_DEADLOCK_ERROR)
    return weft__error(WEFT_EINVAL, "weft_deadlock_set_mode: unknown mode %d", (int)m);
  __atomic_store_n(&mode, (int)m, __ATOMIC_RELAXED);
  __atomic_store_n(&weft__dd_on, m != WEFT_DEADLOCK_OFF, __ATOMIC_RELAXED);
  return 0;
}

weft_deadlock_mode weft_deadlock_get_mode(void) {
  return (weft_deadlock_mode)__atomic_load_n(&mode, __ATOMIC_RELAXED);
}

int weft_deadlock_set_hook(weft_deadlock_hook h, void *arg) {
  pthread_mutex_lock(&dd_mutex);
  hook = h;
  hook_arg = arg;
  pthread_mutex_unlock(&dd_mutex);
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

void weft__dd_after_fork_child(void) {
  pthread_mutex_unlock(&dd_mutex);
  /* Only the forking thread exists; the parent's orders are not the
   * child's (its other threads' held locks made some of them). */
  if (n_nodes == 0 && threads == NULL) return;
  for (uint32_t i = 0; i < n_nodes; i++) {
    struct node *n = node_at(i);
    free(n->out); /* locks keep a stale pad_: no node will match them */
    memset(n, 0, sizeof *n);
  }
  n_nodes = 0;
  free_head = 0;
  if (amap != NULL) memset(amap, 0, acap * sizeof *amap);
  aused = 0;
  graph_version++;
  n_reported = 0;
  threads = self_p;
  if (self_p != NULL) {
    self.next = NULL;
    self.tid = weft__tid();
    self.waiting_for = NULL;
  }
}
