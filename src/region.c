/* SPDX-License-Identifier: MIT */
/* Shared memory regions, arenas and what travels to a spawned child
 * (region.h). */
#define _GNU_SOURCE
#include "region.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handle.h"
#include "internal.h"
#include "os/os.h"
#include "xorder.h"
#include "xwait.h"

/* Small blocks come from arenas of this size; a block larger than a
 * quarter of it gets a region of its own. */
#define ARENA_SIZE ((size_t)256 * 1024)
#define BLOCK_ALIGN 64
#define LARGE (ARENA_SIZE / 4)

/* The window regions are placed in: far from the program's image (0x55...
 * with ASLR), its libraries, heap mappings and stack (0x7f...), and from
 * AddressSanitizer's shadow and allocator; under ThreadSanitizer, in its
 * low application range, the only one it lets a fixed mapping use. Where
 * no window is known, or a placement fails, the kernel chooses: a child
 * then maps the region at the same address if that is free. */
#if defined(__x86_64__) && defined(__SANITIZE_THREAD__)
#define WINDOW_LO ((uintptr_t)0x001000000000)
#define WINDOW_HI ((uintptr_t)0x007000000000)
#elif defined(__x86_64__) || defined(__aarch64__)
#define WINDOW_LO ((uintptr_t)0x200000000000)
#define WINDOW_HI ((uintptr_t)0x500000000000)
#else
#define WINDOW_LO ((uintptr_t)0)
#define WINDOW_HI ((uintptr_t)0)
#endif
#define WINDOW_STEP ((uintptr_t)1 << 30)

struct region {
  uintptr_t base;
  size_t size;
  int fd;
  pid_t maker; /* an arena is cut only by the process that made it */
  bool arena;
  bool waits; /* the detector's tables (xwait.h, then xorder.h) */
  uint64_t dev, ino; /* its file, which names it in every process */
  size_t used; /* arena: bytes handed out from its start */
  size_t live; /* arena: blocks this process holds */
};

/* The regions this process maps, sorted by base, and the live blocks (an
 * open-addressing set of addresses: 0 empty, TOMB deleted), so that a
 * second free, or a pointer that never came from here, is refused without
 * reading unmapped memory. All under `mu`, which the fork handlers hold
 * across fork so that the child's copy is whole. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct region *regions;
static size_t nregions, region_cap;
static uintptr_t arena_base; /* the arena being cut, 0: none */
static uintptr_t cursor;     /* the next address to try in the window */
static bool no_window;

#define TOMB ((uintptr_t)1)
static uintptr_t *set;
static size_t set_cap, set_used, set_live; /* set_used counts keys and tombstones */

/* Named segments (weft__region_note_mapping), unsorted: a program maps few. */
struct mapping {
  uintptr_t base;
  size_t size;
  uint64_t dev, ino;
};
static struct mapping *mappings;
static size_t nmappings, mapping_cap;

/* ---- the live-block set ---- */

static size_t home(uintptr_t key, size_t mask) { return (size_t)((key >> 6) * 0x9e3779b97f4a7c15ull) & mask; }

static bool set_has_locked(uintptr_t key) {
  if (set_cap == 0) return false;
  for (size_t i = home(key, set_cap - 1);; i = (i + 1) & (set_cap - 1)) {
    if (set[i] == key) return true;
    if (set[i] == 0) return false;
  }
}

static bool set_grow_locked(void) {
  size_t ncap = set_cap != 0 && set_live * 2 >= set_cap / 2 ? set_cap * 2 : set_cap != 0 ? set_cap : 64;
  uintptr_t *n = calloc(ncap, sizeof *n);
  if (n == NULL) return false;
  for (size_t i = 0; i < set_cap; i++) {
    if (set[i] == 0 || set[i] == TOMB) continue;
    size_t j = home(set[i], ncap - 1);
    while (n[j] != 0) j = (j + 1) & (ncap - 1);
    n[j] = set[i];
  }
  free(set);
  set = n;
  set_cap = ncap;
  set_used = set_live;
  return true;
}

static bool set_add_locked(uintptr_t key) {
  if ((set_used + 1) * 4 >= set_cap * 3 && !set_grow_locked()) return false;
  size_t i = home(key, set_cap - 1);
  while (set[i] != 0 && set[i] != TOMB) i = (i + 1) & (set_cap - 1);
  set_used += set[i] == 0;
  set[i] = key;
  set_live++;
  return true;
}

static bool set_remove_locked(uintptr_t key) {
  if (!set_has_locked(key)) return false;
  size_t i = home(key, set_cap - 1);
  while (set[i] != key) i = (i + 1) & (set_cap - 1);
  set[i] = TOMB;
  set_live--;
  return true;
}

/* ---- regions ---- */

/* The index of the region holding addr, or nregions. */
static size_t find_locked(uintptr_t addr) {
  size_t lo = 0, hi = nregions;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (regions[mid].base + regions[mid].size <= addr)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < nregions && regions[lo].base <= addr ? lo : nregions;
}

static int insert_locked(const struct region *r) {
  if (nregions == region_cap) {
    size_t ncap = region_cap != 0 ? region_cap * 2 : 16;
    struct region *n = realloc(regions, ncap * sizeof *n);
    if (n == NULL) return -ENOMEM;
    regions = n;
    region_cap = ncap;
  }
  size_t i = nregions;
  while (i > 0 && regions[i - 1].base > r->base) i--;
  memmove(&regions[i + 1], &regions[i], (nregions - i) * sizeof *regions);
  regions[i] = *r;
  nregions++;
  return 0;
}

static void remove_at_locked(size_t i) {
  memmove(&regions[i], &regions[i + 1], (nregions - i - 1) * sizeof *regions);
  nregions--;
}

/* Maps fd in the window (or where the kernel chooses). NULL, errno set. */
static void *place_locked(int fd, size_t size) {
  if (WINDOW_HI != 0 && !no_window) {
    if (cursor == 0) {
      uint64_t r = (uint64_t)weft__os_now_ns() * 0x9e3779b97f4a7c15ull ^ (uint64_t)weft__pid;
      cursor = WINDOW_LO + (uintptr_t)(r % ((WINDOW_HI - WINDOW_LO) / WINDOW_STEP / 2)) * WINDOW_STEP;
    }
    for (int tries = 0; tries < 64 && cursor + size < WINDOW_HI; tries++) {
      void *want = (void *)cursor;
      void *p = weft__os_map_fd_at(fd, size, want);
      if (p == want) {
        cursor += (size + 0xffff) & ~(uintptr_t)0xffff;
        return p;
      }
      if (p != NULL) { /* a sanitizer moved it: take what it gave, and stop asking */
        no_window = true;
        return p;
      }
      if (errno != EEXIST) break;
      cursor += WINDOW_STEP;
    }
    no_window = true;
  }
  return weft__os_map_fd(fd, size);
}

static void *new_region_locked(size_t size, bool arena, int *err);

/* The detector's tables -- the wait table, then the order table, in one
 * region -- are made with the first region, before the caller can share
 * anything in it, so that every child started afterwards -- forked or sent
 * the regions -- uses the same tables. After that region, so that a failed
 * first allocation leaves no descriptor behind. Without them (out of
 * memory), waits and lock orders across processes are just not followed. */
static bool making_table;

static void set_tables(void *base, size_t size) {
  size_t waits = weft__xw_table_size();
  if (size < waits + weft__xo_table_size()) return; /* not this build's tables */
  weft__xw_set_table(base);
  weft__xo_set_table((char *)base + waits);
}

static void make_wait_table_locked(void) {
  if (making_table || weft__xw_get_table() != NULL) return;
  int err = 0;
  making_table = true;
  size_t size = weft__xw_table_size() + weft__xo_table_size();
  void *t = new_region_locked(size, false, &err);
  making_table = false;
  if (t == NULL) return;
  regions[find_locked((uintptr_t)t)].waits = true;
  set_tables(t, size);
}

static void *new_region_locked(size_t size, bool arena, int *err) {
  int fd = weft__os_memfd(arena ? "weft-shared" : "weft-region");
  if (fd < 0) {
    *err = fd;
    return NULL;
  }
  int r = weft__os_ftruncate(fd, size);
  void *base = r == 0 ? place_locked(fd, size) : NULL;
  if (r == 0 && base == NULL) r = -errno;
  struct region reg = {.base = (uintptr_t)base, .size = size, .fd = fd, .maker = weft__pid,
                       .arena = arena};
  if (r == 0 && weft__os_fd_identity(fd, &reg.dev, &reg.ino) != 0) reg.dev = reg.ino = 0;
  if (r == 0) r = insert_locked(&reg);
  if (r != 0) {
    if (base != NULL) weft__os_unmap(base, size);
    weft__os_shm_close(fd);
    *err = r;
    return NULL;
  }
  make_wait_table_locked();
  return base;
}

static void drop_locked(size_t i) {
  struct region r = regions[i];
  remove_at_locked(i);
  if (arena_base == r.base) arena_base = 0;
  weft__os_unmap((void *)r.base, r.size);
  weft__os_shm_close(r.fd);
}

void *weft__region_new(size_t size, int *err) {
  pthread_mutex_lock(&mu);
  void *p = new_region_locked(size, false, err);
  pthread_mutex_unlock(&mu);
  return p;
}

void weft__region_free(void *base) {
  pthread_mutex_lock(&mu);
  size_t i = find_locked((uintptr_t)base);
  if (i < nregions && regions[i].base == (uintptr_t)base && !regions[i].arena) drop_locked(i);
  pthread_mutex_unlock(&mu);
}

/* ---- blocks ---- */

void *weft__region_block(size_t size, int *err) {
  if (size == 0 || size > SIZE_MAX / 2) {
    *err = -EINVAL;
    return NULL;
  }
  size_t need = (size + BLOCK_ALIGN - 1) & ~(size_t)(BLOCK_ALIGN - 1);
  pthread_mutex_lock(&mu);
  void *block = NULL;
  if (need > LARGE) {
    block = new_region_locked((need + 4095) & ~(size_t)4095, false, err);
  } else {
    size_t i = arena_base != 0 ? find_locked(arena_base) : nregions;
    if (i == nregions || regions[i].maker != weft__pid || regions[i].used + need > regions[i].size) {
      void *base = new_region_locked(ARENA_SIZE, true, err);
      arena_base = (uintptr_t)base;
      i = base != NULL ? find_locked(arena_base) : nregions;
    }
    if (i < nregions) {
      struct region *r = &regions[i];
      block = (void *)(r->base + r->used);
      r->used += need;
      r->live++;
    }
  }
  if (block != NULL && !set_add_locked((uintptr_t)block)) {
    *err = -ENOMEM;
    size_t i = find_locked((uintptr_t)block);
    /* An arena's cut bytes stay cut: a block is never handed out twice. */
    if (!regions[i].arena || --regions[i].live == 0) drop_locked(i);
    block = NULL;
  }
  pthread_mutex_unlock(&mu);
  return block;
}

bool weft__region_block_live(const void *block) {
  pthread_mutex_lock(&mu);
  bool live = set_has_locked((uintptr_t)block);
  pthread_mutex_unlock(&mu);
  return live;
}

bool weft__region_block_free(void *block) {
  pthread_mutex_lock(&mu);
  bool had = set_remove_locked((uintptr_t)block);
  if (had) {
    size_t i = find_locked((uintptr_t)block);
    if (i < nregions) {
      struct region *r = &regions[i];
      /* An arena goes with its last block, so that a program that freed
       * everything it made holds no descriptor or mapping for it. */
      if (!r->arena || (r->live > 0 && --r->live == 0)) drop_locked(i);
    }
  }
  pthread_mutex_unlock(&mu);
  return had;
}

void weft__region_before_fork(void) { pthread_mutex_lock(&mu); }
WEFT__HOT void weft__region_after_fork(void) { pthread_mutex_unlock(&mu); }

/* ---- travel ---- */

#define PARCEL_MAGIC 0x77667470u /* "wftp" */

struct parcel_head {
  uint32_t magic;
  uint32_t nregions;
  uint64_t nblocks;
  uint32_t nobjects;
  uint32_t nfds;
};

struct region_rec {
  uint64_t base, size;
  uint32_t arena;
  uint32_t waits; /* the wait table, which the child takes for its own */
};

struct weft__parcel {
  struct parcel_head head;
  struct region_rec *regions;
  uint64_t *blocks;
  struct weft__object_rec *objects;
  int *fds; /* the regions' (duplicates), then the objects' */
};

/* What an object of a kind needs to travel; NULL: it cannot. */
static const char *why_not(enum weft__ref_kind kind) {
  switch (kind) {
    case WEFT__REF_QUEUE:
      return "a thread queue (weft_queue) lives in one process: give the child a process queue "
             "(weft_mpqueue)";
    case WEFT__REF_IMAP:
      return "an imap iterator belongs to the pool of its process";
    case WEFT__REF_AS_COMPLETED:
      return "an as_completed iterator belongs to the futures of its process";
    default:
      return NULL;
  }
}

/* The kind of handle h names, WEFT__REF_FREE if none. */
static enum weft__ref_kind kind_of(const void *h) {
  for (int k = WEFT__REF_FREE + 1; k < WEFT__REF_KINDS; k++)
    if (weft__ref_get(h, (enum weft__ref_kind)k) != NULL) return (enum weft__ref_kind)k;
  return WEFT__REF_FREE;
}

bool weft__region_holds(const void *p) {
  pthread_mutex_lock(&mu);
  bool in = find_locked((uintptr_t)p) < nregions;
  pthread_mutex_unlock(&mu);
  return in;
}

bool weft__region_identify(const void *p, uint64_t *dev, uint64_t *ino, uint64_t *off) {
  uintptr_t a = (uintptr_t)p;
  bool found = false;
  pthread_mutex_lock(&mu);
  size_t i = find_locked(a);
  if (i < nregions && regions[i].ino != 0) {
    *dev = regions[i].dev;
    *ino = regions[i].ino;
    *off = a - regions[i].base;
    found = true;
  }
  for (size_t m = 0; !found && m < nmappings; m++)
    if (a - mappings[m].base < mappings[m].size) {
      *dev = mappings[m].dev;
      *ino = mappings[m].ino;
      *off = a - mappings[m].base;
      found = true;
    }
  pthread_mutex_unlock(&mu);
  return found;
}

void weft__region_note_mapping(void *base, size_t size, uint64_t dev, uint64_t ino) {
  pthread_mutex_lock(&mu);
  if (nmappings == mapping_cap) {
    size_t cap = mapping_cap != 0 ? mapping_cap * 2 : 8;
    struct mapping *m = realloc(mappings, cap * sizeof *m);
    if (m != NULL) {
      mappings = m;
      mapping_cap = cap;
    }
  }
  /* Without memory it stays unknown: its locks are then seen as private. */
  if (nmappings < mapping_cap)
    mappings[nmappings++] = (struct mapping){(uintptr_t)base, size, dev, ino};
  pthread_mutex_unlock(&mu);
}

void weft__region_forget_mapping(void *base) {
  pthread_mutex_lock(&mu);
  for (size_t m = 0; m < nmappings; m++)
    if (mappings[m].base == (uintptr_t)base) {
      mappings[m] = mappings[--nmappings];
      break;
    }
  pthread_mutex_unlock(&mu);
}

int weft__parcel_check(const void *const *objects, const char *call) {
  if (objects == NULL) return 0;
  for (size_t i = 0; objects[i] != NULL; i++) {
    const void *o = objects[i];
    enum weft__ref_kind k = kind_of(o);
    if (k != WEFT__REF_FREE) {
      const char *why = why_not(k);
      if (why != NULL)
        return weft__error(WEFT_EINVAL, "%s: .objects[%zu] cannot travel to another process: %s",
                           call, i, why);
      continue;
    }
    if (weft__region_holds(o)) continue; /* a primitive or a weft_shared_alloc block */
    if (weft__ref_stale(o))
      return weft__error(WEFT_ECLOSED,
                         "%s: .objects[%zu] is not a live weft object (freed or closed?)", call, i);
    return weft__error(WEFT_EINVAL,
                       "%s: .objects[%zu] (%p) is neither a weft object nor weft shared memory: "
                       "only those can be shared with another process",
                       call, i, o);
  }
  return 0;
}

/* Closes the descriptors a parcel still holds and frees its arrays. */
static void parcel_release(struct weft__parcel *p) {
  for (uint32_t i = 0; p->fds != NULL && i < p->head.nfds; i++)
    if (p->fds[i] >= 0) weft__os_shm_close(p->fds[i]);
  free(p->regions);
  free(p->blocks);
  free(p->objects);
  free(p->fds);
}

void weft__parcel_free(struct weft__parcel *p) {
  if (p == NULL) return;
  parcel_release(p);
  free(p);
}

struct weft__parcel *weft__parcel_pack(const void *const *objects, const char *call) {
  if (weft__parcel_check(objects, call) != 0) return NULL;
  size_t nobj = 0;
  while (objects != NULL && objects[nobj] != NULL) nobj++;
  struct weft__parcel *p = calloc(1, sizeof *p);
  if (p == NULL) goto nomem;
  p->head.magic = PARCEL_MAGIC;
  p->objects = calloc(nobj + 1, sizeof *p->objects);
  if (p->objects == NULL) goto nomem;

  pthread_mutex_lock(&mu);
  p->regions = calloc(nregions + 1, sizeof *p->regions);
  p->blocks = calloc(set_live + 1, sizeof *p->blocks);
  p->fds = malloc((nregions + nobj + 1) * sizeof *p->fds);
  bool ok = p->regions != NULL && p->blocks != NULL && p->fds != NULL;
  for (size_t i = 0; ok && i < nregions; i++) {
    int fd = weft__os_dup(regions[i].fd);
    if (fd < 0) {
      ok = false;
      break;
    }
    p->fds[p->head.nfds++] = fd;
    p->regions[i] = (struct region_rec){.base = regions[i].base, .size = regions[i].size,
                                        .arena = regions[i].arena,
                                        .waits = regions[i].waits};
    p->head.nregions++;
  }
  for (size_t i = 0; ok && i < set_cap; i++)
    if (set[i] != 0 && set[i] != TOMB) p->blocks[p->head.nblocks++] = set[i];
  pthread_mutex_unlock(&mu);
  if (!ok) goto nomem;

  for (size_t i = 0; i < nobj; i++) {
    enum weft__ref_kind k = kind_of(objects[i]);
    if (k == WEFT__REF_FREE) continue; /* shared memory: it travels with the regions */
    struct weft__object_rec *r = &p->objects[p->head.nobjects];
    r->handle = (uint64_t)(uintptr_t)objects[i];
    r->kind = (uint32_t)k;
    r->fd = -1;
    int fd = -1;
    int err = 0;
    if (k == WEFT__REF_CONN)
      err = weft__conn_export(objects[i], r, &fd, call);
    else if (k == WEFT__REF_SHM)
      err = weft__shm_export(objects[i], r, &fd, call);
    else
      r->ptr = (uint64_t)(uintptr_t)weft__ref_get(objects[i], k);
    if (err != 0) {
      weft__parcel_free(p);
      return NULL;
    }
    if (fd >= 0) {
      r->fd = (int32_t)p->head.nfds;
      p->fds[p->head.nfds++] = fd;
    }
    p->head.nobjects++;
  }
  return p;
nomem:
  weft__parcel_free(p);
  weft__error(WEFT_ENOMEM, "%s: out of memory (or descriptors) for what the child is given", call);
  return NULL;
}

int weft__parcel_send(int fd, const struct weft__parcel *p) {
  static const struct weft__parcel empty = {.head = {.magic = PARCEL_MAGIC}};
  if (p == NULL) p = &empty;
  int err = weft__os_send_all(fd, &p->head, sizeof p->head);
  if (err == 0) err = weft__os_send_all(fd, p->regions, p->head.nregions * sizeof *p->regions);
  if (err == 0) err = weft__os_send_all(fd, p->blocks, p->head.nblocks * sizeof *p->blocks);
  if (err == 0) err = weft__os_send_all(fd, p->objects, p->head.nobjects * sizeof *p->objects);
  for (uint32_t i = 0; err == 0 && i < p->head.nfds; i += WEFT__OS_MAX_FDS) {
    uint32_t n = p->head.nfds - i < WEFT__OS_MAX_FDS ? p->head.nfds - i : WEFT__OS_MAX_FDS;
    err = weft__os_send_fds(fd, &n, sizeof n, p->fds + i, n);
  }
  return err;
}

/* Reads one batch of descriptors: its 4-byte count, with the fds. */
static int recv_batch(int fd, int *fds, uint32_t want) {
  uint32_t n = 0;
  size_t got = 0, have = 0;
  while (got < sizeof n) {
    size_t k = 0;
    ssize_t r = weft__os_recv_fds(fd, (char *)&n + got, sizeof n - got, fds + have,
                                  want - have, &k, false);
    if (r <= 0) return r < 0 ? (int)r : -EPIPE;
    got += (size_t)r;
    have += k;
  }
  return n == want && have == want ? 0 : -EPROTO;
}

int weft__parcel_receive(int fd, char *buf, size_t size) {
  struct weft__parcel p = {0};
  int err = weft__os_read_all(fd, &p.head, sizeof p.head);
  if (err != 0 || p.head.magic != PARCEL_MAGIC) {
    snprintf(buf, size, "the parent's shared objects did not arrive whole");
    return err != 0 ? err : -EPROTO;
  }
  p.regions = calloc(p.head.nregions + 1, sizeof *p.regions);
  p.blocks = calloc(p.head.nblocks + 1, sizeof *p.blocks);
  p.objects = calloc(p.head.nobjects + 1, sizeof *p.objects);
  p.fds = malloc((p.head.nfds + 1) * sizeof *p.fds);
  if (p.regions == NULL || p.blocks == NULL || p.objects == NULL || p.fds == NULL) {
    snprintf(buf, size, "out of memory for the parent's shared objects");
    err = -ENOMEM;
    goto out;
  }
  for (uint32_t i = 0; i < p.head.nfds; i++) p.fds[i] = -1;
  err = weft__os_read_all(fd, p.regions, p.head.nregions * sizeof *p.regions);
  if (err == 0) err = weft__os_read_all(fd, p.blocks, p.head.nblocks * sizeof *p.blocks);
  if (err == 0) err = weft__os_read_all(fd, p.objects, p.head.nobjects * sizeof *p.objects);
  for (uint32_t i = 0; err == 0 && i < p.head.nfds; i += WEFT__OS_MAX_FDS) {
    uint32_t n = p.head.nfds - i < WEFT__OS_MAX_FDS ? p.head.nfds - i : WEFT__OS_MAX_FDS;
    err = recv_batch(fd, p.fds + i, n);
  }
  if (err != 0) {
    snprintf(buf, size, "the parent's shared objects did not arrive whole: %s",
             weft_strerror(err));
    goto out;
  }

  pthread_mutex_lock(&mu);
  for (uint32_t i = 0; err == 0 && i < p.head.nregions; i++) {
    struct region_rec *r = &p.regions[i];
    void *want = (void *)(uintptr_t)r->base;
    void *got = weft__os_map_fd_at(p.fds[i], r->size, want);
    if (got != want) {
      err = got != NULL ? -EEXIST : -errno;
      if (got != NULL) weft__os_unmap(got, r->size);
      snprintf(buf, size,
               "the parent's shared memory at %p (%zu bytes) cannot be mapped at the same "
               "address here: %s",
               want, (size_t)r->size, weft_strerror(err));
      break;
    }
    struct region reg = {.base = r->base, .size = r->size, .fd = p.fds[i], .maker = 0,
                         .arena = r->arena != 0, .waits = r->waits != 0, .used = r->size};
    if (weft__os_fd_identity(reg.fd, &reg.dev, &reg.ino) != 0) reg.dev = reg.ino = 0;
    if (reg.waits) set_tables(want, (size_t)r->size);
    err = insert_locked(&reg);
    if (err != 0) {
      weft__os_unmap(want, r->size);
      snprintf(buf, size, "out of memory for the parent's shared memory");
      break;
    }
    p.fds[i] = -1; /* the region's now */
  }
  for (uint64_t i = 0; err == 0 && i < p.head.nblocks; i++) {
    size_t at = find_locked((uintptr_t)p.blocks[i]);
    if (at == nregions) continue;
    if (!set_add_locked((uintptr_t)p.blocks[i])) {
      err = -ENOMEM;
      snprintf(buf, size, "out of memory for the parent's shared memory");
      break;
    }
    if (regions[at].arena) regions[at].live++;
  }
  pthread_mutex_unlock(&mu);

  for (uint32_t i = 0; err == 0 && i < p.head.nobjects; i++) {
    struct weft__object_rec *r = &p.objects[i];
    int ofd = r->fd >= 0 && (uint32_t)r->fd < p.head.nfds ? p.fds[r->fd] : -1;
    const void *h = (const void *)(uintptr_t)r->handle;
    if (r->kind == WEFT__REF_CONN)
      err = weft__conn_import(h, r, ofd);
    else if (r->kind == WEFT__REF_SHM)
      err = weft__shm_import(h, r, ofd);
    else if (r->kind == WEFT__REF_VALUE || r->kind == WEFT__REF_MPQUEUE)
      err = weft__ref_add_at(h, (void *)(uintptr_t)r->ptr, (enum weft__ref_kind)r->kind);
    else
      err = -EPROTO;
    if (err == 0 && ofd >= 0) p.fds[r->fd] = -1; /* the object's now */
    if (err != 0)
      snprintf(buf, size, "could not take over the parent's object %u: %s", i,
               weft_strerror(err));
  }
out:
  parcel_release(&p);
  return err;
}
