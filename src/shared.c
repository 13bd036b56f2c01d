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
#include "region.h"
#include "runtime.h"
#include "tsan.h"
#include "weft/sync.h"

void weft__shared_before_fork(void) { weft__region_before_fork(); }
void weft__shared_after_fork_parent(void) { weft__region_after_fork(); }
WEFT__HOT void weft__shared_after_fork_child(void) { weft__region_after_fork(); }

static void *shared_alloc(size_t size, const char *call) {
  int err = 0;
  void *block = weft__region_block(size, &err);
  if (block == NULL) {
    if (err == -EINVAL)
      weft__error(WEFT_EINVAL, "%s: size %zu is not valid", call, size);
    else
      weft__error(err == -EMFILE || err == -ENFILE ? WEFT_EMFILE : WEFT_ENOMEM,
                  "%s: cannot map %zu bytes of shared memory: %s", call, size, weft_strerror(err));
  }
  return block;
}

void *weft_shared_alloc(size_t size) { return shared_alloc(size, "weft_shared_alloc"); }

static int shared_free(void *ptr, const char *call) {
  if (ptr == NULL) return 0;
  if (!weft__region_block_free(ptr))
    return weft__error(WEFT_ECLOSED, "%s: %p was already freed (or is not mapped by this process)",
                       call, ptr);
  return 0;
}

int weft_shared_free(void *ptr) { return shared_free(ptr, "weft_shared_free"); }

/* ---- primitives allocated in shared memory: multiprocessing.Lock() ... ---- */

/* Whether ptr is a live block of this process, for the frees below, which
 * must end the object's life before unmapping it. */
static int check_live(const void *ptr, const char *call) {
  if (weft__region_block_live(ptr)) return 0;
  return weft__error(WEFT_ECLOSED, "%s: %p was already freed (or is not mapped by this process)",
                     call, ptr);
}

/* A primitive's block with copies of its name and site after it. A child
 * started by spawn maps the block at the same address but not the
 * parent's string constants, so its reports read the copies. */
struct texts {
  const char *name, *site;
};

static void *alloc_with_texts(size_t size, struct texts *t, const char *call) {
  size_t nlen = t->name != NULL ? strlen(t->name) + 1 : 0;
  size_t slen = t->site != NULL ? strlen(t->site) + 1 : 0;
  char *block = shared_alloc(size + nlen + slen, call);
  if (block == NULL) return NULL;
  char *at = block + size;
  if (t->name != NULL) t->name = memcpy(at, t->name, nlen);
  if (t->site != NULL) t->site = memcpy(at + nlen, t->site, slen);
  return block;
}

static void keep_texts(weft_lock *l, const struct texts *t) {
  l->name = t->name;
  l->site = t->site;
}

weft_lock *weft_lock_new_opts(const char *site, const weft_lock_options *o) {
  struct texts t = {o != NULL ? o->name : NULL, site};
  weft_lock *l = alloc_with_texts(sizeof *l, &t, "weft_lock_new");
  if (l != NULL) {
    weft_lock_init_opts(l, NULL, site, o);
    keep_texts(l, &t);
  }
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
  struct texts t = {o != NULL ? o->name : NULL, site};
  weft_rlock *r = alloc_with_texts(sizeof *r, &t, "weft_rlock_new");
  if (r != NULL) {
    weft_rlock_init_opts(r, NULL, site, o);
    keep_texts(&r->lock, &t);
  }
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
  struct texts t = {o != NULL ? o->name : NULL, site};
  weft_cond *c = alloc_with_texts(sizeof *c, &t, "weft_cond_new");
  if (c != NULL && weft_cond_init_opts(c, NULL, site, o) != 0) return refused(c);
  if (c != NULL) keep_texts(&c->own.lock, &t);
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
  struct texts t = {o != NULL ? o->name : NULL, NULL};
  weft_semaphore *s = alloc_with_texts(sizeof *s, &t, "weft_semaphore_new");
  if (s != NULL) {
    weft_semaphore_init_opts(s, value, o);
    s->name = t.name;
  }
  return s;
}

int weft_semaphore_free(weft_semaphore *s) { return shared_free(s, "weft_semaphore_free"); }

weft_event *weft_event_new(void) {
  weft_event *e = shared_alloc(sizeof *e, "weft_event_new");
  if (e != NULL) weft_event_init(e);
  return e;
}

int weft_event_free(weft_event *e) { return shared_free(e, "weft_event_free"); }

weft_barrier *weft_barrier_new_opts(int parties, const weft_barrier_options *o) {
  if (parties < 1) {
    weft__error(WEFT_EINVAL, "weft_barrier_new: parties must be >= 1, not %d", parties);
    return NULL;
  }
  weft_barrier probe = WEFT_BARRIER_INIT(1);
  struct texts t = {probe.lock.name, probe.lock.site};
  weft_barrier *b = alloc_with_texts(sizeof *b, &t, "weft_barrier_new");
  if (b != NULL && weft_barrier_init_opts(b, parties, o) != 0) return refused(b);
  if (b != NULL) keep_texts(&b->lock, &t);
  return b;
}

int weft_barrier_free(weft_barrier *b) {
  if (b == NULL) return 0;
  int err = check_live(b, "weft_barrier_free");
  if (err != 0) return err;
  if (weft__dd_on) weft__dd_forget(&b->lock);
  return shared_free(b, "weft_barrier_free");
}
