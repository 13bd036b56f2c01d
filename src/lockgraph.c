/* SPDX-License-Identifier: MIT */
/* The lock-order graph (lockgraph.h).
 *
 * Nodes and edges live in chunks that never move, so an edge found by a
 * search stays put while a report is written. Each node keeps two small
 * hash maps, neighbour id -> edge id, of its out- and in-edges: a known
 * order is found in constant time however many orders the lock has, and a
 * node that dies takes its edges with it at once (the maps say where they
 * are), so no search ever meets an edge to a lock that is gone.
 *
 * The order: every node has a rank, and each edge of the order goes from a
 * lower rank to a higher one. A new node is ranked by its lock's address,
 * so a program that takes locks in their order in an array (the classic
 * cure for inversions: the lower account's lock first) agrees with it from
 * the start. An edge x -> y against the order costs nothing either when y
 * has no edge out (y moves after everything) or x none in (x moves before
 * everything): so does the usual first order "held -> a lock never seen".
 * Any other x -> y against the order searches forward from y among the
 * ranks up to x's: reaching x is a cycle; otherwise the nodes found, and
 * those that reach x backward among the ranks above y's, swap ranks so
 * that the latter come first (Pearce-Kelly). Searches touch only that
 * window, not everything reachable.
 *
 * An edge that closes a cycle (reported or gated) cannot join the order.
 * It is kept as a "back" edge, outside it; while any exists, a new edge is
 * also searched through every edge, back ones included (bounded), as a
 * cycle may now run through one. A program with no inversion never pays
 * that. */
#define _GNU_SOURCE
#include "lockgraph.h"

#include "lock.h"
#include "os/os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft/common.h"

#define MAX_VISIT 200000 /* nodes a search through back edges may visit */

/* ---- small maps: neighbour id -> edge id ----
 * Open addressing, linear probing; key 0 is empty, TOMB a removed key. A
 * back edge's value carries BACK, so that searches of the order skip it
 * without reading the edge. */
#define TOMB UINT32_MAX
#define BACK 0x80000000u
struct slot {
  uint32_t key, val;
};
struct idmap {
  struct slot *s;
  uint32_t cap, count, used; /* used: keys and tombstones */
};

static uint32_t idmap_home(uint32_t key, uint32_t cap) {
  return (key * 0x9e3779b1u) >> 7 & (cap - 1);
}

static uint32_t idmap_get(const struct idmap *m, uint32_t key) {
  if (m->cap == 0) return 0;
  for (uint32_t i = idmap_home(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
    if (m->s[i].key == key) return m->s[i].val;
    if (m->s[i].key == 0) return 0;
  }
}

static bool idmap_put(struct idmap *m, uint32_t key, uint32_t val) {
  if ((m->used + 1) * 4 > m->cap * 3) {
    uint32_t cap = 4;
    while (cap * 3 < (m->count + 1) * 4 * 2) cap *= 2; /* room to grow into */
    struct slot *s = calloc(cap, sizeof *s);
    if (s == NULL) return false;
    for (uint32_t i = 0; i < m->cap; i++)
      if (m->s[i].key != 0 && m->s[i].key != TOMB) {
        uint32_t j = idmap_home(m->s[i].key, cap);
        while (s[j].key != 0) j = (j + 1) & (cap - 1);
        s[j] = m->s[i];
      }
    free(m->s);
    m->s = s;
    m->cap = cap;
    m->used = m->count;
  }
  uint32_t i = idmap_home(key, m->cap);
  while (m->s[i].key != 0) i = (i + 1) & (m->cap - 1);
  m->s[i] = (struct slot){key, val};
  m->count++;
  m->used++;
  return true;
}

static void idmap_mark_back(struct idmap *m, uint32_t key) {
  for (uint32_t i = idmap_home(key, m->cap);; i = (i + 1) & (m->cap - 1))
    if (m->s[i].key == key) {
      m->s[i].val |= BACK;
      return;
    }
}

static void idmap_del(struct idmap *m, uint32_t key) {
  if (m->cap == 0) return;
  for (uint32_t i = idmap_home(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
    if (m->s[i].key == 0) return;
    if (m->s[i].key == key) {
      m->s[i].key = TOMB;
      m->count--;
      return;
    }
  }
}

static void idmap_free(struct idmap *m) {
  free(m->s);
  *m = (struct idmap){0};
}

#define EACH(m, i) \
  for (uint32_t i = 0; i < (m)->cap; i++) \
    if ((m)->s[i].key != 0 && (m)->s[i].key != TOMB)

/* ---- nodes and edges ---- */

/* A rank: the lock's address (0 for "before everything", all ones for
 * "after everything"), then a count of ranks given, so that no two ranks are
 * ever equal -- a tie would let an edge of a cycle pass for one of the
 * order. */
typedef unsigned __int128 rank_t;

struct node {
  /* Read without the mutex by weft__lg_ordered, so written with atomics. */
  uint32_t serial;          /* 0 while the node is free */
  uint32_t lives;           /* lives of locks this node has had */
  weft_lock *lock;
  uint64_t rank_hi, rank_lo; /* its rank_t; changed only while no order is being logged */
  uint64_t xref;             /* weft__lg_xref */
  /* The rest only under the mutex. */
  const char *name, *site; /* copied at creation: reports never read the lock itself */
  uint32_t next_free;
  uint32_t mark, parent, parent_edge; /* search scratch */
  struct idmap out, in;
  int64_t fresh_at; /* weft__lg_fresh_at */
};

static rank_t rank_of(const struct node *n) {
  return (rank_t)__atomic_load_n(&n->rank_hi, __ATOMIC_RELAXED) << 64 |
         __atomic_load_n(&n->rank_lo, __ATOMIC_RELAXED);
}

static void set_rank(struct node *n, rank_t r) {
  __atomic_store_n(&n->rank_hi, (uint64_t)(r >> 64), __ATOMIC_RELAXED);
  __atomic_store_n(&n->rank_lo, (uint64_t)r, __ATOMIC_RELAXED);
}

#define CHUNK 4096
#define MAX_CHUNKS 4095 /* node ids fit in ID_BITS */
#define ID_BITS 24
/* Chunk tables are allocated at the first use: static ones would push
 * weft's other globals onto pages every forked child then copies. */
static struct node **nchunks;
static weft__lg_edge **echunks;
static uint32_t n_nodes, node_free, n_edges; /* node_free: a list through next_free, 0 ends */
/* Free edge ids, a stack: a list linked through the edges themselves
 * would read a scattered edge at every add. */
static uint32_t *edge_free, n_edge_free, cap_edge_free;
static uint32_t n_back;    /* back edges in the graph; read without the mutex */
static uint64_t nodes_made;
static uint32_t salt; /* this process's serials: 0 until the first */
static uint32_t search_mark;
uint32_t weft__lg_epoch = 1;

static struct node *node_at(uint32_t id) { return &nchunks[(id - 1) / CHUNK][(id - 1) % CHUNK]; }
static weft__lg_edge *edge_at(uint32_t id) { return &echunks[(id - 1) / CHUNK][(id - 1) % CHUNK]; }

/* Grows a chunked array by one element; 0 if out of memory. */
static uint32_t grow(void ***chunks, uint32_t *n, size_t size) {
  /* Published with atomics: weft__lg_ordered reads the nodes without the mutex. */
  void **table = *chunks;
  if (table == NULL) {
    if ((table = calloc(MAX_CHUNKS, sizeof(void *))) == NULL) return 0;
    __atomic_store_n(chunks, table, __ATOMIC_RELEASE);
  }
  uint32_t c = *n / CHUNK;
  if (c >= MAX_CHUNKS) return 0;
  if (table[c] == NULL) {
    void *chunk = calloc(CHUNK, size);
    if (chunk == NULL) return 0;
    __atomic_store_n(&table[c], chunk, __ATOMIC_RELEASE);
  }
  __atomic_store_n(n, *n + 1, __ATOMIC_RELEASE);
  return *n;
}

/* ---- actors: interned thread identities ---- */

struct actor {
  pid_t tid;
  uint32_t refs; /* 0: free, next_free links it */
  uint32_t next_free;
  char name[WEFT_NAME_MAX + 1];
};
static struct actor *actors;
static uint32_t n_actors, cap_actors, actor_free;

uint32_t weft__lg_actor(pid_t tid, const char *name) {
  uint32_t id = actor_free;
  if (id != 0) {
    actor_free = actors[id - 1].next_free;
  } else {
    if (n_actors == cap_actors) {
      uint32_t cap = cap_actors ? cap_actors * 2 : 16;
      struct actor *a = realloc(actors, cap * sizeof *a);
      if (a == NULL) return 0;
      actors = a;
      cap_actors = cap;
    }
    id = ++n_actors;
  }
  struct actor *a = &actors[id - 1];
  a->tid = tid;
  a->refs = 1;
  snprintf(a->name, sizeof a->name, "%s", name);
  return id;
}

static void actor_get(uint32_t id) {
  if (id != 0) actors[id - 1].refs++;
}

void weft__lg_actor_put(uint32_t id) {
  if (id == 0 || --actors[id - 1].refs != 0) return;
  actors[id - 1].next_free = actor_free;
  actor_free = id;
}

pid_t weft__lg_actor_tid(uint32_t id) { return id != 0 ? actors[id - 1].tid : 0; }
const char *weft__lg_actor_name(uint32_t id) { return id != 0 ? actors[id - 1].name : "a thread"; }

/* ---- lock address -> node ----
 * The lock's dd_node holds its node's serial, a hint only: a lock in
 * memory shared between processes has it overwritten by whichever process
 * used it last. This map finds the node again instead of making a new one. */
#define ATOMB ((weft_lock *)1)
struct aslot {
  weft_lock *key;
  uint32_t id;
};
static struct aslot *amap;
static size_t acap, aused; /* aused counts keys and tombstones */

static size_t amap_home(const weft_lock *l) {
  return (size_t)(((uintptr_t)l >> 3) * 0x9e3779b97f4a7c15ull >> 17) & (acap - 1);
}

static uint32_t amap_find(const weft_lock *l) {
  if (acap == 0) return 0;
  for (size_t i = amap_home(l);; i = (i + 1) & (acap - 1)) {
    if (amap[i].key == NULL) return 0;
    if (amap[i].key == l) return amap[i].id;
  }
}

static void amap_del(const weft_lock *l) {
  if (acap == 0) return;
  for (size_t i = amap_home(l);; i = (i + 1) & (acap - 1)) {
    if (amap[i].key == NULL) return;
    if (amap[i].key == l) {
      amap[i].key = ATOMB;
      return;
    }
  }
}

static size_t alive; /* keys in the map */

static bool amap_put(weft_lock *l, uint32_t id) {
  if ((aused + 1) * 2 > acap) { /* rebuild, dropping tombstones */
    size_t cap = 256;
    while (cap < (alive + 1) * 4) cap *= 2;
    struct aslot *old = amap, *fresh = calloc(cap, sizeof *fresh);
    if (fresh == NULL) return false;
    size_t old_cap = acap;
    amap = fresh;
    acap = cap;
    aused = 0;
    for (size_t i = 0; i < old_cap; i++)
      if (old[i].key != NULL && old[i].key != ATOMB) {
        size_t j = amap_home(old[i].key);
        while (amap[j].key != NULL) j = (j + 1) & (acap - 1);
        amap[j] = old[i];
        aused++;
      }
    free(old);
  }
  size_t i = amap_home(l);
  while (amap[i].key != NULL) i = (i + 1) & (acap - 1);
  amap[i] = (struct aslot){l, id};
  aused++;
  alive++;
  return true;
}

/* ---- nodes ---- */

static void push_free_edge(uint32_t e) {
  edge_at(e)->from = edge_at(e)->to = 0;
  if (n_edge_free == cap_edge_free) {
    uint32_t cap = cap_edge_free ? cap_edge_free * 2 : 1024;
    uint32_t *f = realloc(edge_free, cap * sizeof *f);
    if (f == NULL) return; /* the edge is lost to reuse, not to correctness */
    edge_free = f;
    cap_edge_free = cap;
  }
  edge_free[n_edge_free++] = e;
}

static void free_edge(uint32_t e) {
  weft__lg_edge *ed = edge_at(e);
  if (ed->back) __atomic_store_n(&n_back, n_back - 1, __ATOMIC_RELAXED);
  weft__lg_actor_put(ed->actor);
  push_free_edge(e);
}

static void free_node(uint32_t id) {
  struct node *n = node_at(id);
  EACH(&n->out, i) {
    idmap_del(&node_at(n->out.s[i].key)->in, id);
    free_edge(n->out.s[i].val & ~BACK);
  }
  EACH(&n->in, i) {
    idmap_del(&node_at(n->in.s[i].key)->out, id);
    free_edge(n->in.s[i].val & ~BACK);
  }
  idmap_free(&n->out);
  idmap_free(&n->in);
  amap_del(n->lock);
  alive--;
  __atomic_store_n(&n->serial, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&n->lock, NULL, __ATOMIC_RELAXED);
  n->next_free = node_free;
  node_free = id;
}

/* A serial is the node id and the node's generation, mixed with a salt of
 * the process's own so that processes sharing a lock seldom give two locks
 * one serial: the node is found from the lock's dd_node with no map, and
 * a lock whose node is recycled gets a serial its thread caches have not
 * seen -- until the generation wraps, which starts a new epoch. */
static uint32_t new_serial(struct node *n, uint32_t id) {
  if (salt == 0) {
    __atomic_store_n(&salt, (uint32_t)getpid() * 0x9e3779b1u | 1, __ATOMIC_RELAXED);
    __atomic_store_n(&weft__lg_epoch, weft__lg_epoch + 1, __ATOMIC_RELAXED);
  }
  uint32_t serial;
  do {
    uint32_t lives = n->lives + 1;
    __atomic_store_n(&n->lives, lives, __ATOMIC_RELAXED);
    if ((uint8_t)lives == 0) __atomic_store_n(&weft__lg_epoch, weft__lg_epoch + 1, __ATOMIC_RELAXED);
    serial = ((uint32_t)(uint8_t)lives << ID_BITS | id) ^ salt;
  } while (serial == 0);
  return serial;
}

/* The node the lock's dd_node names, if it is this lock's. */
/* The node id a serial names under salt s, if it could name one now; else 0. */
static uint32_t serial_id(uint32_t serial, uint32_t s) {
  uint32_t id = (serial ^ s) & ((1u << ID_BITS) - 1);
  return serial == 0 || s == 0 || id > __atomic_load_n(&n_nodes, __ATOMIC_ACQUIRE) ? 0 : id;
}

static uint32_t hinted(const weft_lock *l) {
  uint32_t hint = __atomic_load_n(&l->dd_node, __ATOMIC_RELAXED);
  uint32_t id = serial_id(hint, salt);
  if (id == 0) return 0;
  const struct node *n = node_at(id);
  return n->serial == hint && n->lock == l ? id : 0;
}

uint32_t weft__lg_find(weft_lock *l) {
  uint32_t id = hinted(l);
  if (id != 0) return id;
  if ((id = amap_find(l)) == 0) return 0;
  /* Another process overwrote dd_node: put this process's serial back. */
  __atomic_store_n(&l->dd_node, node_at(id)->serial, __ATOMIC_RELAXED);
  return id;
}

uint32_t weft__lg_node(weft_lock *l) {
  uint32_t id = hinted(l);
  if (id != 0) return id;
  bool fresh = __atomic_load_n(&l->dd_node, __ATOMIC_RELAXED) == 0;
  /* For the order table (weft__lg_fresh_at): a slot made there before this
   * moment belongs to a lock that was in this memory before. Read after
   * dd_node, so that a process preempted in between errs towards dropping
   * another process's first orders of the new lock, never towards keeping
   * the old lock's. */
  int64_t looked = fresh ? weft__os_now_ns() : 0;
  if ((id = amap_find(l)) != 0) {
    if (!fresh) return weft__lg_find(l);
    free_node(id); /* initialised again since: a new lock in the old one's memory */
  }
  if (node_free != 0) {
    id = node_free;
    node_free = node_at(id)->next_free;
  } else if ((id = grow((void ***)&nchunks, &n_nodes, sizeof(struct node))) == 0) {
    return 0;
  }
  if (!amap_put(l, id)) {
    node_at(id)->next_free = node_free;
    node_free = id;
    return 0;
  }
  struct node *n = node_at(id);
  /* Release: a reader that sees the new lock here also sees the serial
   * the node's last life ended with (peek reads it again). */
  __atomic_store_n(&n->lock, l, __ATOMIC_RELEASE);
  n->name = weft__layout_text(l->layout, l->name);
  n->site = weft__layout_text(l->layout, l->site);
  uint32_t serial = new_serial(n, id);
  set_rank(n, (rank_t)(uintptr_t)l << 64 | ++nodes_made);
  n->fresh_at = looked;
  __atomic_store_n(&n->xref, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&n->serial, serial, __ATOMIC_RELEASE); /* last: the node is whole */
  __atomic_store_n(&l->dd_node, serial, __ATOMIC_RELAXED);
  return id;
}

/* A node's fields as the lock's dd_node names them, read without the
 * mutex: the serial is read before and after the rest, so a node freed and
 * made again for another lock in between is not taken for this one. */
static bool peek(const weft_lock *l, uint32_t *id_out, uint32_t *lives, rank_t *rank,
                 uint64_t *xref) {
  uint32_t hint = __atomic_load_n(&l->dd_node, __ATOMIC_RELAXED);
  uint32_t id = serial_id(hint, __atomic_load_n(&salt, __ATOMIC_RELAXED));
  if (id == 0) return false;
  struct node **table = __atomic_load_n(&nchunks, __ATOMIC_ACQUIRE);
  struct node *chunk = table != NULL ? __atomic_load_n(&table[(id - 1) / CHUNK], __ATOMIC_ACQUIRE)
                                     : NULL;
  if (chunk == NULL) return false;
  struct node *n = &chunk[(id - 1) % CHUNK];
  if (__atomic_load_n(&n->serial, __ATOMIC_ACQUIRE) != hint) return false;
  /* Acquire loads: none of them may be read after the serial's second look. */
  const weft_lock *lock = __atomic_load_n(&n->lock, __ATOMIC_ACQUIRE);
  *lives = __atomic_load_n(&n->lives, __ATOMIC_ACQUIRE);
  *rank = (rank_t)__atomic_load_n(&n->rank_hi, __ATOMIC_ACQUIRE) << 64 |
          __atomic_load_n(&n->rank_lo, __ATOMIC_ACQUIRE);
  *xref = __atomic_load_n(&n->xref, __ATOMIC_ACQUIRE);
  *id_out = id;
  return lock == l && __atomic_load_n(&n->serial, __ATOMIC_RELAXED) == hint;
}

bool weft__lg_ordered(const weft_lock *from, const weft_lock *to, uint64_t xref,
                      weft__lg_pair *p) {
  rank_t rf, rt;
  uint64_t xf, xt;
  return __atomic_load_n(&n_back, __ATOMIC_RELAXED) == 0 &&
         peek(from, &p->from, &p->from_lives, &rf, &xf) &&
         peek(to, &p->to, &p->to_lives, &rt, &xt) && xf == xref && xt == xref && rf < rt;
}

bool weft__lg_has_back(void) { return n_back != 0; }

uint32_t weft__lg_alive(uint32_t id, uint32_t lives) {
  const struct node *n = node_at(id);
  return n->serial != 0 && n->lives == lives ? id : 0;
}

void weft__lg_forget(weft_lock *l) {
  uint32_t id = hinted(l);
  if (id == 0) id = amap_find(l);
  if (id != 0) free_node(id);
}

void weft__lg_names(uint32_t id, const char **name, const char **site, const void **addr) {
  const struct node *n = node_at(id);
  *name = n->name;
  *site = n->site;
  *addr = n->lock;
}

uint32_t weft__lg_serial(uint32_t id) { return node_at(id)->serial; }

int64_t weft__lg_fresh_at(uint32_t id) { return node_at(id)->fresh_at; }
uint64_t weft__lg_xref(uint32_t id) { return node_at(id)->xref; }
void weft__lg_set_xref(uint32_t id, uint64_t xref) {
  __atomic_store_n(&node_at(id)->xref, xref, __ATOMIC_RELAXED);
}

/* ---- searches ---- */

/* Scratch kept between calls (all under the detector's mutex). */
static uint32_t *stack, *delta_f, *delta_b;
static rank_t *ranks;
static uint32_t cap_stack, cap_f, cap_b, cap_ranks;
static uint32_t found_from, found_to; /* the last cycle: its path is in parent links */

static uint32_t new_mark(void) {
  if (++search_mark == 0) { /* wrapped: old marks could pass for new ones */
    for (uint32_t id = 1; id <= n_nodes; id++) node_at(id)->mark = 0;
    search_mark = 1;
  }
  return search_mark;
}

static bool push(uint32_t **v, uint32_t *cap, uint32_t n, uint32_t x) {
  if (n == *cap) {
    uint32_t c = *cap ? *cap * 2 : 1024;
    uint32_t *p = realloc(*v, c * sizeof *p);
    if (p == NULL) return false;
    *v = p;
    *cap = c;
  }
  (*v)[n] = x;
  return true;
}

/* Depth first from `from` through every edge (back ones too) for `goal`,
 * visiting at most MAX_VISIT nodes. The path is left in parent links. */
static bool search_all(uint32_t from, uint32_t goal) {
  uint32_t mark = new_mark(), top = 0, visited = 0;
  node_at(from)->mark = mark;
  if (!push(&stack, &cap_stack, top++, from)) return false;
  while (top > 0 && visited++ < MAX_VISIT) {
    uint32_t id = stack[--top];
    struct node *n = node_at(id);
    EACH(&n->out, i) {
      uint32_t to = n->out.s[i].key;
      struct node *t = node_at(to);
      if (t->mark == mark) continue;
      t->mark = mark;
      t->parent = id;
      t->parent_edge = n->out.s[i].val & ~BACK;
      if (to == goal) return true;
      if (!push(&stack, &cap_stack, top++, to)) return false;
    }
  }
  return false;
}

/* Forward from y through the order's edges, among ranks up to x's: true
 * if it reaches x (a cycle; the path is in parent links). The nodes met
 * are left in delta_f. */
static bool forward(uint32_t y, uint32_t x, uint32_t *nf) {
  rank_t ub = rank_of(node_at(x));
  uint32_t mark = new_mark(), top = 0, n = 0;
  node_at(y)->mark = mark;
  if (!push(&stack, &cap_stack, top++, y)) return false;
  while (top > 0) {
    uint32_t id = stack[--top];
    if (!push(&delta_f, &cap_f, n++, id)) return false;
    struct node *nd = node_at(id);
    EACH(&nd->out, i) {
      uint32_t e = nd->out.s[i].val;
      if (e & BACK) continue;
      uint32_t to = nd->out.s[i].key;
      struct node *t = node_at(to);
      if (t->mark == mark || rank_of(t) > ub) continue;
      t->mark = mark;
      t->parent = id;
      t->parent_edge = e;
      if (to == x) return true;
      if (!push(&stack, &cap_stack, top++, to)) return false;
    }
  }
  *nf = n;
  return false;
}

/* Backward from x through the order's edges, among ranks above lb; the
 * nodes met are left in delta_b. Marks with the forward search's mark. */
static bool backward(uint32_t x, rank_t lb, uint32_t *nb) {
  uint32_t mark = new_mark(), top = 0, n = 0;
  node_at(x)->mark = mark;
  if (!push(&stack, &cap_stack, top++, x)) return false;
  while (top > 0) {
    uint32_t id = stack[--top];
    if (!push(&delta_b, &cap_b, n++, id)) return false;
    struct node *nd = node_at(id);
    EACH(&nd->in, i) {
      if (nd->in.s[i].val & BACK) continue;
      struct node *f = node_at(nd->in.s[i].key);
      if (f->mark == mark || rank_of(f) < lb) continue;
      f->mark = mark;
      if (!push(&stack, &cap_stack, top++, nd->in.s[i].key)) return false;
    }
  }
  *nb = n;
  return true;
}

static int by_rank(const void *a, const void *b) {
  rank_t x = rank_of(node_at(*(const uint32_t *)a)), y = rank_of(node_at(*(const uint32_t *)b));
  return (x > y) - (x < y);
}

static int cmp_rank(const void *a, const void *b) {
  rank_t x = *(const rank_t *)a, y = *(const rank_t *)b;
  return (x > y) - (x < y);
}

/* The edge x -> y goes against the order: 1 if the order was mended, 0 if
 * the edge closes a cycle, -1 if out of memory (the order is unchanged:
 * the edge is then treated as a back edge). */
static int reorder(uint32_t x, uint32_t y) {
  uint32_t nf = 0, nb = 0;
  if (forward(y, x, &nf)) {
    found_from = x;
    found_to = y;
    return 0;
  }
  if (nf == 0 || !backward(x, rank_of(node_at(y)), &nb)) return -1;
  uint32_t total = nf + nb;
  if (total > cap_ranks) {
    rank_t *r = realloc(ranks, total * sizeof *r);
    if (r == NULL) return -1;
    ranks = r;
    cap_ranks = total;
  }
  qsort(delta_b, nb, sizeof *delta_b, by_rank);
  qsort(delta_f, nf, sizeof *delta_f, by_rank);
  for (uint32_t i = 0; i < nb; i++) ranks[i] = rank_of(node_at(delta_b[i]));
  for (uint32_t i = 0; i < nf; i++) ranks[nb + i] = rank_of(node_at(delta_f[i]));
  qsort(ranks, total, sizeof *ranks, cmp_rank);
  /* Those that reach x take the lowest ranks, those y reaches the rest. */
  for (uint32_t i = 0; i < nb; i++) set_rank(node_at(delta_b[i]), ranks[i]);
  for (uint32_t i = 0; i < nf; i++) set_rank(node_at(delta_f[i]), ranks[nb + i]);
  return 1;
}

void weft__lg_prefetch(uint32_t from, uint32_t to, bool maps) {
  if (from == 0 || to == 0 || from > n_nodes || to > n_nodes) return;
  const struct node *f = node_at(from), *t = node_at(to);
  if (!maps) {
    __builtin_prefetch(f);
    __builtin_prefetch(t);
  } else {
    if (f->out.cap != 0) __builtin_prefetch(&f->out.s[idmap_home(to, f->out.cap)]);
    if (t->in.cap != 0) __builtin_prefetch(&t->in.s[idmap_home(from, t->in.cap)]);
  }
}

int weft__lg_add(uint32_t from, uint32_t to, const weft__lg_edge *details) {
  return weft__lg_add_plain(from, to, details, false);
}

int weft__lg_add_plain(uint32_t from, uint32_t to, const weft__lg_edge *details, bool plain) {
  struct node *f = node_at(from), *t = node_at(to);
  if (idmap_get(&f->out, to) != 0) return 0;
  if (plain && (n_back != 0 || rank_of(f) > rank_of(t))) return 3;
  uint32_t e = 0;
  if (n_edge_free > 0)
    e = edge_free[--n_edge_free];
  else if ((e = grow((void ***)&echunks, &n_edges, sizeof(weft__lg_edge))) == 0)
    return -1;
  weft__lg_edge *ed = edge_at(e);
  *ed = *details;
  ed->from = from;
  ed->to = to;
  ed->back = false;
  if (!idmap_put(&f->out, to, e)) goto oom;
  if (!idmap_put(&t->in, from, e)) {
    idmap_del(&f->out, to);
    goto oom;
  }
  actor_get(ed->actor);
  bool cycle = false, back = false;
  if (n_back > 0 && search_all(to, from)) { /* a cycle through a back edge? */
    found_from = from;
    found_to = to;
    cycle = true;
  } else if (rank_of(f) > rank_of(t) && t->out.count == 0) {
    set_rank(t, (rank_t)UINT64_MAX << 64 | ++nodes_made); /* nothing after it: move it last */
  } else if (rank_of(f) > rank_of(t) && f->in.count == 0) {
    set_rank(f, ++nodes_made); /* nothing before it: move it first */
  } else if (rank_of(f) > rank_of(t)) {
    int r = reorder(from, to);
    cycle = r == 0;
    back = r < 0; /* out of memory: unordered, but still searched */
  }
  if (cycle || back) {
    ed->back = true;
    __atomic_store_n(&n_back, n_back + 1, __ATOMIC_RELAXED);
    idmap_mark_back(&f->out, to);
    idmap_mark_back(&t->in, from);
  }
  return cycle ? 2 : 1;
oom:
  push_free_edge(e);
  return -1;
}

int weft__lg_cycle(const weft__lg_edge **edges, int max) {
  /* Parent links lead from found_from back to found_to. */
  int n = 0;
  for (uint32_t id = found_from; id != found_to && n < max; id = node_at(id)->parent)
    edges[n++] = edge_at(node_at(id)->parent_edge);
  for (int i = 0, j = n - 1; i < j; i++, j--) {
    const weft__lg_edge *e = edges[i];
    edges[i] = edges[j];
    edges[j] = e;
  }
  return n;
}

void weft__lg_reset(void) {
  for (uint32_t id = 1; id <= n_nodes; id++) {
    struct node *n = node_at(id);
    idmap_free(&n->out);
    idmap_free(&n->in);
    memset(n, 0, sizeof *n); /* locks keep a stale dd_node: no node will match them */
  }
  n_nodes = node_free = n_edges = n_edge_free = n_back = 0;
  if (amap != NULL) memset(amap, 0, acap * sizeof *amap);
  aused = alive = 0;
  n_actors = actor_free = 0;
  nodes_made = 0;
  salt = 0; /* the child's own, and a new epoch */
  __atomic_store_n(&weft__lg_epoch, weft__lg_epoch + 1, __ATOMIC_RELAXED);
}
