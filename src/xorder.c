/* SPDX-License-Identifier: MIT */
/* The order table (xorder.h): the lock orders every process of the tree
 * took between Locks in shared memory, in shared memory of its own.
 *
 * Each process keeps its own lock graph (lockgraph.c); an order new to it
 * between two shared locks is also published here, and searched for a path
 * the other way. An order the process knew already costs nothing more, so
 * the table sees each process's orders once. The shared locks a program
 * uses are few: the table is small and bounded, a search walks all of it.
 *
 * A lock is named by the file behind its memory and its offset there
 * (weft__region_identify), not by its address, which a process started by
 * spawn may map elsewhere and which a child may give to memory of its own.
 * A slot of the table has a generation, odd while a lock lives in it: an
 * order keeps the generations of its two locks and counts only while both
 * are unchanged. A lock destroyed (or initialised again) leaves the table
 * with its orders, so a lock made later in its memory starts afresh; one
 * zeroed and initialised with no destroy is told from a lock other
 * processes use by the time its process first saw it new (lockgraph.h:
 * weft__lg_fresh_at) against the time its slot was made.
 *
 * Orders of processes that are gone stay: they are the program's.
 *
 * The table has a lock of its own, a word holding the pid of the process
 * whose thread is inside (each process lets one thread in at a time: the
 * detector's mutex is held). A process killed inside leaves its pid there;
 * the next one finds it gone and takes over, and writes are ordered so
 * that what it left half done is never followed. Nothing here waits for
 * long: past PATIENCE_NS the order goes unrecorded instead. */
#define _GNU_SOURCE
#include "xorder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"
#include "internal.h"
#include "lock.h"
#include "lockgraph.h"
#include "os/os.h"
#include "region.h"

#define MAGIC 0x77667872u /* "wfxr" */
#define LOCKS WEFT__XO_LOCKS
#define ORDERS WEFT__XO_ORDERS
#define GATES WEFT__LG_MAX_GATES
/* How long a thread waits for the table before it leaves its order out:
 * the table is held for microseconds, unless its holder is stopped. */
#define PATIENCE_NS ((int64_t)1000 * 1000 * 1000)
/* How often a waiter looks whether the holder died. */
#define CHECK_NS ((int64_t)10 * 1000 * 1000)
#define SPINS 64
/* Cycles whose report the table remembers, so that each is reported once
 * in the whole tree; past that, once per process. */
#define REPORTED 256

/* The node word (lockgraph.h: weft__lg_xref): WEFT__XO_PRIVATE for a lock
 * not in shared memory; otherwise generation << 32 | slot + 1, or 0: not
 * looked at. */
#define PRIVATE WEFT__XO_PRIVATE

struct key {
  uint64_t dev, ino, off;
};

struct lock_rec {
  int64_t made_at;    /* monotonic ns */
  uint32_t first_out; /* its first order out, index + 1; 0: none */
  uint32_t next_free; /* while free: the next free slot, index + 1 */
  char label[128], init[128];
};

struct order_rec {
  uint32_t from, to, from_gen, to_gen;
  uint32_t next_out; /* the next order out of `from` (or, free, the next free one), index + 1 */
  uint32_t ngates;
  uint64_t gate[GATES]; /* the other locks held: see gate_id() and gated() */
  int32_t pid, tid;
  char proc[WEFT_NAME_MAX + 1], thread[WEFT_NAME_MAX + 1];
  char from_site[128], to_site[128];
};

struct table {
  uint32_t magic;
  uint32_t word;     /* pid of the process inside, 0: free */
  uint32_t sleepers; /* threads asleep on word */
  uint32_t full_said;
  uint32_t locks_made, lock_free;   /* slots ever used; free list, index + 1 */
  uint32_t orders_made, order_free;
  uint32_t nreported, pad_;
  uint64_t reported[REPORTED]; /* weft__dd_xorder_hash of the cycles reported */
  uint32_t gen[LOCKS];
  struct key keys[LOCKS];
  struct lock_rec locks[LOCKS];
  struct order_rec orders[ORDERS];
};

static struct table *table;

size_t weft__xo_table_size(void) { return (sizeof(struct table) + 4095) & ~(size_t)4095; }

void weft__xo_set_table(void *t) {
  struct table *x = t;
  uint32_t zero = 0;
  __atomic_compare_exchange_n(&x->magic, &zero, MAGIC, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
  __atomic_store_n(&table, x, __ATOMIC_RELEASE);
}

static struct table *get_table(void) { return __atomic_load_n(&table, __ATOMIC_ACQUIRE); }

/* ---- the table's lock ---- */

static bool enter(struct table *t) {
  uint32_t me = (uint32_t)weft__pid;
  int64_t give_up = 0;
  for (int spin = 0;; spin++) {
    uint32_t v = __atomic_load_n(&t->word, __ATOMIC_SEQ_CST);
    /* Our own pid: left by a process that died with it (no thread of this
     * one is inside, as the detector's mutex is held). */
    if (v == 0 || v == me) {
      if (__atomic_compare_exchange_n(&t->word, &v, me, false, __ATOMIC_SEQ_CST,
                                      __ATOMIC_RELAXED))
        return true;
      continue;
    }
    if (spin < SPINS) {
      weft__cpu_relax();
      continue;
    }
    int64_t now = weft__os_now_ns();
    if (give_up == 0) give_up = now + PATIENCE_NS;
    if (now >= give_up) return false;
    if (weft__os_process_gone((pid_t)v)) {
      if (__atomic_compare_exchange_n(&t->word, &v, me, false, __ATOMIC_SEQ_CST,
                                      __ATOMIC_RELAXED))
        return true;
      continue;
    }
    __atomic_add_fetch(&t->sleepers, 1, __ATOMIC_SEQ_CST);
    int64_t until = now + CHECK_NS < give_up ? now + CHECK_NS : give_up;
    weft__os_futex_wait(&t->word, v, until);
    __atomic_sub_fetch(&t->sleepers, 1, __ATOMIC_SEQ_CST);
  }
}

static void leave(struct table *t) {
  __atomic_store_n(&t->word, 0, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&t->sleepers, __ATOMIC_SEQ_CST) != 0) weft__os_futex_wake(&t->word, 1);
}

/* ---- slots and orders (the table entered) ---- */

static uint64_t ref_of(const struct table *t, uint32_t slot) {
  return (uint64_t)t->gen[slot] << 32 | (slot + 1);
}

static bool live(const struct table *t, uint32_t slot) { return t->gen[slot] & 1; }

static bool stale(const struct table *t, const struct order_rec *o) {
  return t->gen[o->from] != o->from_gen || t->gen[o->to] != o->to_gen;
}

static void free_order(struct table *t, uint32_t e) {
  t->orders[e].next_out = t->order_free;
  t->order_free = e + 1;
}

/* Unlinks the stale orders out of slot, freeing them. */
static void prune(struct table *t, uint32_t slot) {
  uint32_t *link = &t->locks[slot].first_out;
  while (*link != 0) {
    uint32_t e = *link - 1;
    if (e >= ORDERS) { /* left half written by a process that died: cut here */
      *link = 0;
      return;
    }
    if (stale(t, &t->orders[e])) {
      *link = t->orders[e].next_out;
      free_order(t, e);
    } else {
      link = &t->orders[e].next_out;
    }
  }
}

/* The lock leaves its slot, with its orders out; those into it are stale
 * from now on and freed when met. */
static void drop(struct table *t, uint32_t slot) {
  t->gen[slot]++; /* even: free */
  uint32_t e = t->locks[slot].first_out;
  t->locks[slot].first_out = 0;
  while (e != 0 && e <= ORDERS) {
    uint32_t next = t->orders[e - 1].next_out;
    free_order(t, e - 1);
    e = next;
  }
  t->locks[slot].next_free = t->lock_free;
  t->lock_free = slot + 1;
}

static int find(const struct table *t, const struct key *k) {
  uint32_t made = t->locks_made < LOCKS ? t->locks_made : LOCKS;
  for (uint32_t s = 0; s < made; s++)
    if (live(t, s) && t->keys[s].off == k->off && t->keys[s].ino == k->ino &&
        t->keys[s].dev == k->dev)
      return (int)s;
  return -1;
}

static void copy_text(char *dst, size_t size, const char *src) {
  snprintf(dst, size, "%s", src != NULL ? src : "");
}

/* The slot of lock l (graph node id, key k), made if the table has none:
 * -1 if it is full. */
static int slot_of(struct table *t, weft_lock *l, uint32_t id, const struct key *k) {
  uint64_t ref = weft__lg_xref(id);
  uint32_t s = (uint32_t)ref - 1;
  if (ref > PRIVATE && s < LOCKS && t->gen[s] == (uint32_t)(ref >> 32)) return (int)s;
  int found = find(t, k);
  /* Made before this process saw the lock's memory initialised: a lock that
   * was there before, never destroyed. */
  int64_t fresh_at = weft__lg_fresh_at(id);
  if (found >= 0 && fresh_at != 0 && t->locks[found].made_at < fresh_at) {
    drop(t, (uint32_t)found);
    found = -1;
  }
  if (found < 0) {
    if (t->lock_free != 0 && t->lock_free <= LOCKS) {
      found = (int)t->lock_free - 1;
      t->lock_free = t->locks[found].next_free;
    } else if (t->locks_made < LOCKS) {
      found = (int)t->locks_made++;
    } else {
      return -1;
    }
    struct lock_rec *r = &t->locks[found];
    r->made_at = weft__os_now_ns();
    r->first_out = 0;
    weft__dd_lock_label(l, r->label, sizeof r->label);
    copy_text(r->init, sizeof r->init, weft__layout_text(l->layout, l->site));
    t->keys[found] = *k;
    t->gen[found] |= 1; /* last: live from here on */
  }
  weft__lg_set_xref(id, ref_of(t, (uint32_t)found));
  return found;
}

/* A free order, -1 if there is none even after freeing the stale ones. */
static int new_order(struct table *t) {
  for (int pass = 0; pass < 2; pass++) {
    if (t->order_free != 0 && t->order_free <= ORDERS) {
      uint32_t e = t->order_free - 1;
      t->order_free = t->orders[e].next_out;
      return (int)e;
    }
    if (t->orders_made < ORDERS) return (int)t->orders_made++;
    uint32_t made = t->locks_made < LOCKS ? t->locks_made : LOCKS;
    for (uint32_t s = 0; s < made; s++)
      if (live(t, s)) prune(t, s);
  }
  return -1;
}

/* ---- search ---- */

/* Whether a lock held across every order of the cycle (a gate) keeps its
 * orders from running at once, as in the graph's reports. */
static bool gated(const struct table *t, const struct order_rec *closing, const uint32_t *path,
                  int n) {
  for (uint32_t g = 0; g < closing->ngates && g < GATES; g++) {
    bool common = true;
    for (int i = 0; i < n && common; i++) {
      const struct order_rec *o = &t->orders[path[i]];
      common = false;
      for (uint32_t k = 0; k < o->ngates && k < GATES; k++)
        if (o->gate[k] == closing->gate[g]) common = true;
    }
    if (common) return true;
  }
  return false;
}

/* The state a search reached before the order that `via` names. */
static uint32_t before(const struct table *t, uint32_t via) {
  return t->orders[(via >> 1) - 1].from << 1 | (via & 1);
}

/* Depth first from slot `from` for `goal` through the live orders, over
 * states slot << 1 | whether an order of another process was passed; with
 * foreign set only a path through such an order counts. Fills path[] with
 * the orders from `from` to `goal` and returns how many, 0 if there is no
 * path (or no memory for the search). */
static int search(struct table *t, uint32_t from, uint32_t goal, bool foreign, uint32_t *path) {
  /* How a state was reached: (order + 1) << 1 | the flag before it. */
  uint32_t *via = calloc(2 * LOCKS, sizeof *via);
  uint32_t *stack = malloc(2 * LOCKS * sizeof *stack);
  int n = 0;
  if (via == NULL || stack == NULL) goto out;
  uint32_t top = 0, end = UINT32_MAX;
  stack[top++] = from << 1;
  via[from << 1] = UINT32_MAX; /* the start: seen */
  while (top > 0 && end == UINT32_MAX) {
    uint32_t st = stack[--top], s = st >> 1, f = st & 1;
    prune(t, s);
    for (uint32_t e = t->locks[s].first_out; e != 0; e = t->orders[e - 1].next_out) {
      const struct order_rec *o = &t->orders[e - 1];
      if (o->to >= LOCKS) continue;
      uint32_t next = o->to << 1 | f | (o->pid != (int32_t)weft__pid);
      if (via[next] != 0) continue;
      via[next] = e << 1 | f;
      if (o->to == goal && (!foreign || (next & 1))) {
        end = next;
        break;
      }
      stack[top++] = next;
    }
  }
  if (end == UINT32_MAX) goto out;
  for (uint32_t st = end; st != from << 1; st = before(t, via[st])) n++;
  int i = n;
  for (uint32_t st = end; st != from << 1; st = before(t, via[st])) path[--i] = (via[st] >> 1) - 1;
out:
  free(via);
  free(stack);
  return n;
}

/* True the first time the tree reports the cycle of this hash. */
static bool first_report(struct table *t, uint64_t hash) {
  uint32_t n = t->nreported < REPORTED ? t->nreported : REPORTED;
  for (uint32_t i = 0; i < n; i++)
    if (t->reported[i] == hash) return false;
  if (n < REPORTED) {
    t->reported[n] = hash;
    t->nreported = n + 1;
  }
  return true;
}

static void step_of(const struct table *t, const struct order_rec *o,
                    struct weft__dd_xorder_step *s) {
  const struct lock_rec *l = &t->locks[o->from];
  copy_text(s->label, sizeof s->label, l->label);
  copy_text(s->init, sizeof s->init, l->init);
  s->pid = o->pid;
  s->tid = o->tid;
  copy_text(s->proc, sizeof s->proc, o->proc);
  copy_text(s->thread, sizeof s->thread, o->thread);
  copy_text(s->from_site, sizeof s->from_site, o->from_site);
  copy_text(s->to_site, sizeof s->to_site, o->to_site);
}

/* ---- from the detector ---- */

/* Whether lock l of graph node id is in shared memory; its key if so. */
static bool shared_key(weft_lock *l, uint32_t id, struct key *k) {
  if (weft__lg_xref(id) == PRIVATE) return false;
  if (weft__region_identify(l, &k->dev, &k->ino, &k->off)) return true;
  weft__lg_set_xref(id, PRIVATE);
  return false;
}

bool weft__xo_private_locked(weft_lock *l, uint32_t id) {
  struct key k;
  return !shared_key(l, id, &k);
}

static void say_full(struct table *t) {
  if (__atomic_exchange_n(&t->full_said, 1, __ATOMIC_RELAXED) != 0) return;
  fprintf(stderr,
          "weft: the table of lock orders across processes is full (%d shared locks, %d "
          "orders): orders new to it are no longer checked across processes\n",
          LOCKS, ORDERS);
  fflush(stderr);
}

/* What names a gate in an order: a shared lock by its place in the table;
 * one in private memory by the process and its serial there, since it
 * guards only that process's orders. 0: none. */
static uint64_t gate_id(struct table *t, weft_lock *l, uint32_t id) {
  struct key k;
  if (!shared_key(l, id, &k))
    return 1ull << 63 | (uint64_t)(uint32_t)weft__pid << 32 | weft__lg_serial(id);
  int g = slot_of(t, l, id, &k);
  return g >= 0 ? ref_of(t, (uint32_t)g) : 0;
}

/* The order's details: who took it, where, and the other locks held. */
static void fill_order(struct table *t, struct order_rec *o, struct weft__dd_thread *th, int i,
                       const uint32_t *ids, const char *site) {
  copy_text(o->proc, sizeof o->proc, weft__process_own_name());
  copy_text(o->thread, sizeof o->thread, th->name);
  o->pid = (int32_t)weft__pid;
  o->tid = (int32_t)th->tid;
  copy_text(o->from_site, sizeof o->from_site, th->held[i].site);
  copy_text(o->to_site, sizeof o->to_site, site);
  o->ngates = 0;
  for (int j = 0; j < th->depth && o->ngates < GATES; j++) {
    uint64_t g = j != i && ids[j] != 0 ? gate_id(t, th->held[j].lock, ids[j]) : 0;
    if (g != 0) o->gate[o->ngates++] = g;
  }
}

/* Writes the cycle closing order e (its path back in path[0..n)) into r. */
static void report(struct table *t, struct weft__dd_thread *th, uint32_t e, const uint32_t *path,
                   int n, struct weft__dd_report *r) {
  struct weft__dd_xorder_step *steps = malloc(sizeof *steps * (size_t)(n + 1));
  uint64_t *ids = malloc(sizeof *ids * (size_t)(n + 1));
  if (steps != NULL && ids != NULL) {
    step_of(t, &t->orders[e], &steps[0]);
    ids[0] = ref_of(t, t->orders[e].from);
    for (int i = 0; i < n; i++) {
      step_of(t, &t->orders[path[i]], &steps[i + 1]);
      ids[i + 1] = ref_of(t, t->orders[path[i]].from);
    }
    uint64_t hash = weft__dd_xorder_hash(ids, n + 1);
    if (first_report(t, hash)) weft__dd_report_xorder_locked(r, th, steps, n + 1, hash);
  }
  free(steps);
  free(ids);
}

void weft__xo_add_locked(struct weft__dd_thread *th, int i, const uint32_t *ids, weft_lock *l,
                         uint32_t to, const char *site, bool own_cycle,
                         struct weft__dd_report *r) {
  struct table *t = get_table();
  struct key kf, kt;
  weft_lock *held = th->held[i].lock;
  if (t == NULL || !shared_key(held, ids[i], &kf) || !shared_key(l, to, &kt) || !enter(t)) return;
  bool full = false;
  int f = slot_of(t, held, ids[i], &kf), g = f >= 0 ? slot_of(t, l, to, &kt) : -1;
  int e = -1;
  if (f < 0 || g < 0) {
    full = true;
    goto out;
  }
  prune(t, (uint32_t)f);
  for (uint32_t k = t->locks[f].first_out; k != 0; k = t->orders[k - 1].next_out)
    if (t->orders[k - 1].to == (uint32_t)g) goto out; /* known: searched when it came */
  if ((e = new_order(t)) < 0) {
    full = true;
    goto out;
  }
  struct order_rec *o = &t->orders[e];
  fill_order(t, o, th, i, ids, site);
  o->from = (uint32_t)f;
  o->to = (uint32_t)g;
  o->from_gen = t->gen[f];
  o->to_gen = t->gen[g];
  o->next_out = t->locks[f].first_out;
  t->locks[f].first_out = (uint32_t)e + 1; /* last: a whole order joins the list */
  uint32_t *path = malloc(2 * LOCKS * sizeof *path); /* a slot may be passed in both states */
  int n = path != NULL ? search(t, (uint32_t)g, (uint32_t)f, own_cycle, path) : 0;
  if (n > 0 && !gated(t, o, path, n)) report(t, th, (uint32_t)e, path, n, r);
  free(path);
out:
  leave(t);
  if (full) say_full(t);
}

bool weft__xo_first_report_locked(uint64_t hash) {
  struct table *t = get_table();
  if (t == NULL || !enter(t)) return true;
  bool first = first_report(t, hash);
  leave(t);
  return first;
}

uint64_t weft__xo_id_locked(uint32_t id) {
  uint64_t x = weft__lg_xref(id);
  return x > PRIVATE ? x : 0;
}

void weft__xo_forget_locked(weft_lock *l) {
  struct table *t = get_table();
  if (t == NULL) return;
  uint32_t id = weft__lg_find(l);
  struct key k;
  if (id != 0 ? !shared_key(l, id, &k) : !weft__region_identify(l, &k.dev, &k.ino, &k.off))
    return;
  if (!enter(t)) return;
  int s = find(t, &k);
  if (s >= 0) drop(t, (uint32_t)s);
  leave(t);
}
