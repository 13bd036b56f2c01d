/* SPDX-License-Identifier: MIT */
/* Shared anonymous memory for objects used between a process and the
 * children it forks afterwards, and the synchronisation primitives
 * allocated in it (Python's multiprocessing.Lock() and the others). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadlock.h"
#include "internal.h"
#include "os/os.h"
#include "runtime.h"
#include "tsan.h"
#include "weft/sync.h"

/* The mapping's size sits in front of the block, which keeps 64-byte
 * alignment (a cache line) for the caller. */
#define HEADER 64

/* The blocks this process has mapped and not yet freed, so that a second
 * free (or a pointer that never came from here) is refused without reading
 * unmapped memory: an open-addressing set of addresses, 0 empty, TOMB
 * deleted, under `mu`, which the fork handlers hold across fork so the
 * child's copy is whole. */
#define TOMB ((uintptr_t)1)
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t *set;
static size_t cap, used; /* used counts keys and tombstones */

static size_t home(uintptr_t key, size_t mask) { return (size_t)((key >> 6) * 0x9e3779b97f4a7c15ull) & mask; }

static bool set_has_locked(uintptr_t key) {
  if (cap == 0) return false;
  for (size_t i = home(key, cap - 1);; i = (i + 1) & (cap - 1)) {
    if (set[i] == key) return true;
    if (set[i] == 0) return false;
  }
}

static bool set_grow_locked(void) {
  size_t ncap = cap != 0 ? cap * 2 : 64;
  uintptr_t *n = calloc(ncap, sizeof *n);
  if (n == NULL) return false;
  for (size_t i = 0; i < cap; i++) {
    if (set[i] == 0 || set[i] == TOMB) continue;
    size_t j = home(set[i], ncap - 1);
    while (n[j] != 0) j = (j + 1) & (ncap - 1);
    n[j] = set[i];
  }
  size_t live = 0;
  for (size_t i = 0; i < ncap; i++) live += n[i] != 0;
  free(set);
  set = n;
  cap = ncap;
  used = live;
  return true;
}

static bool set_add(uintptr_t key) {
  pthread_mutex_lock(&mu);
  bool ok = (used + 1) * 4 < cap * 3 || set_grow_locked();
  if (ok) {
    size_t i = home(key, cap - 1);
    while (set[i] != 0 && set[i] != TOMB) i = (i + 1) & (cap - 1);
    used += set[i] == 0;
    set[i] = key;
  }
  pthread_mutex_unlock(&mu);
  return ok;
}

static bool set_remove(uintptr_t key) {
  pthread_mutex_lock(&mu);
  bool had = set_has_locked(key);
  if (had) {
    size_t i = home(key, cap - 1);
    while (set[i] != key) i = (i + 1) & (cap - 1);
    set[i] = TOMB;
  }
  pthread_mutex_unlock(&mu);
  return had;
}

void weft__shared_before_fork(void) { pthread_mutex_lock(&mu); }
void weft__shared_after_fork_parent(void) { pthread_mutex_unlock(&mu); }
void weft__shared_after_fork_child(void) { pthread_mutex_unlock(&mu); }

void *weft_shared_alloc(size_t size) {
  if (size == 0 || size > SIZE_MAX - HEADER) {
    weft__error(WEFT_EINVAL, "weft_shared_alloc: size %zu is not valid", size);
    return NULL;
  }
  void *base = weft__os_map_shared(size + HEADER);
  if (base == NULL) {
    weft__error(WEFT_ENOMEM, "weft_shared_alloc: cannot map %zu bytes: %s", size, strerror(errno));
    return NULL;
  }
  *(size_t *)base = size + HEADER;
  void *block = (char *)base + HEADER;
  if (!set_add((uintptr_t)block)) {
    weft__os_unmap(base, size + HEADER);
    weft__error(WEFT_ENOMEM, "weft_shared_alloc: out of memory");
    return NULL;
  }
  return block;
}

static int shared_free(void *ptr, const char *call) {
  if (ptr == NULL) return 0;
  if (!set_remove((uintptr_t)ptr))
    return weft__error(WEFT_ECLOSED, "%s: %p was already freed (or is not mapped by this process)",
                       call, ptr);
  void *base = (char *)ptr - HEADER;
  weft__os_unmap(base, *(size_t *)base);
  return 0;
}

int weft_shared_free(void *ptr) { return shared_free(ptr, "weft_shared_free"); }

/* ---- primitives allocated in shared memory: multiprocessing.Lock() ... ---- */

/* Whether ptr is a live block of this process, for the frees below, which
 * must end the object's life before unmapping it. */
static int check_live(const void *ptr, const char *call) {
  pthread_mutex_lock(&mu);
  bool live = set_has_locked((uintptr_t)ptr);
  pthread_mutex_unlock(&mu);
  if (live) return 0;
  return weft__error(WEFT_ECLOSED, "%s: %p was already freed (or is not mapped by this process)",
                     call, ptr);
}

weft_lock *weft_lock_new_opts(const char *site, const weft_lock_options *o) {
  weft_lock *l = weft_shared_alloc(sizeof *l);
  if (l != NULL) weft_lock_init_opts(l, NULL, site, o);
  return l;
}

int weft_lock_free(weft_lock *l) {
  if (l == NULL) return 0;
  int err = check_live(l, "weft_lock_free");
  if (err != 0) return err;
  if (weft__dd_on) weft__dd_forget(l);
  return shared_free(l, "weft_lock_free");
}

weft_rlock *weft_rlock_new_opts(const char *site, const weft_lock_options *o) {
  weft_rlock *r = weft_shared_alloc(sizeof *r);
  if (r != NULL) weft_rlock_init_opts(r, NULL, site, o);
  return r;
}

int weft_rlock_free(weft_rlock *r) {
  if (r == NULL) return 0;
  int err = check_live(r, "weft_rlock_free");
  if (err != 0) return err;
  if (weft__dd_on) weft__dd_forget(&r->lock);
  weft__tsan_mutex_destroy(r, 0);
  return shared_free(r, "weft_rlock_free");
}

/* A constructor whose init refused: unmaps the block, keeping the init's
 * error for the caller. */
static void *refused(void *block) {
  int code = weft_last_error_code();
  char why[256];
  snprintf(why, sizeof why, "%s", weft_last_error());
  shared_free(block, "weft_shared_free");
  weft__error(code, "%s", why);
  return NULL;
}

weft_cond *weft_cond_new_opts(const char *site, const weft_cond_options *o) {
  weft_cond *c = weft_shared_alloc(sizeof *c);
  if (c != NULL && weft_cond_init_opts(c, NULL, site, o) != 0) return refused(c);
  return c;
}

int weft_cond_free(weft_cond *c) {
  if (c == NULL) return 0;
  int err = check_live(c, "weft_cond_free");
  if (err != 0) return err;
  if (weft__dd_on) weft__dd_forget(&c->own.lock);
  weft__tsan_mutex_destroy(&c->own, 0);
  return shared_free(c, "weft_cond_free");
}

weft_semaphore *weft_semaphore_new_opts(int value, const weft_semaphore_options *o) {
  if (value < 0) {
    weft__error(WEFT_EINVAL, "weft_semaphore_new: initial value must be >= 0, not %d", value);
    return NULL;
  }
  weft_semaphore *s = weft_shared_alloc(sizeof *s);
  if (s != NULL) weft_semaphore_init_opts(s, value, o);
  return s;
}

int weft_semaphore_free(weft_semaphore *s) { return shared_free(s, "weft_semaphore_free"); }

weft_event *weft_event_new(void) {
  weft_event *e = weft_shared_alloc(sizeof *e);
  if (e != NULL) weft_event_init(e);
  return e;
}

int weft_event_free(weft_event *e) { return shared_free(e, "weft_event_free"); }

weft_barrier *weft_barrier_new_opts(int parties, const weft_barrier_options *o) {
  if (parties < 1) {
    weft__error(WEFT_EINVAL, "weft_barrier_new: parties must be >= 1, not %d", parties);
    return NULL;
  }
  weft_barrier *b = weft_shared_alloc(sizeof *b);
  if (b != NULL && weft_barrier_init_opts(b, parties, o) != 0) return refused(b);
  return b;
}

int weft_barrier_free(weft_barrier *b) {
  if (b == NULL) return 0;
  int err = check_live(b, "weft_barrier_free");
  if (err != 0) return err;
  if (weft__dd_on) weft__dd_forget(&b->lock);
  return shared_free(b, "weft_barrier_free");
}
