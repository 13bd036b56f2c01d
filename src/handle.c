/* SPDX-License-Identifier: MIT */
#include "handle.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

static uint32_t slot_of(uint64_t id) { return (uint32_t)id; }

uint64_t weft__handle_add(weft__handle_table *t, void *obj) {
  uint32_t index;
  if (t->free_head != 0) {
    index = t->free_head - 1;
    t->free_head = t->slots[index].next;
  } else {
    if (t->used == t->cap) {
      uint32_t cap = t->cap ? t->cap * 2 : 16;
      weft__handle_slot *slots = realloc(t->slots, cap * sizeof *slots);
      if (slots == NULL) return 0;
      t->slots = slots;
      t->cap = cap;
    }
    index = t->used++;
    t->slots[index].gen = 1;
  }
  t->slots[index].obj = obj;
  t->slots[index].next = 0;
  return ((uint64_t)t->slots[index].gen << 32) | (index + 1);
}

void *weft__handle_get(const weft__handle_table *t, uint64_t id) {
  uint32_t index = slot_of(id);
  if (index == 0 || index > t->used) return NULL;
  const weft__handle_slot *s = &t->slots[index - 1];
  return s->gen == (uint32_t)(id >> 32) ? s->obj : NULL;
}

void weft__handle_remove(weft__handle_table *t, uint64_t id) {
  if (weft__handle_get(t, id) == NULL) return;
  uint32_t index = slot_of(id) - 1;
  weft__handle_slot *s = &t->slots[index];
  s->obj = NULL;
  s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
  s->next = t->free_head;
  t->free_head = index + 1;
}

WEFT__HOT void weft__handle_each(const weft__handle_table *t, void (*fn)(void *obj, void *ctx),
                                 void *ctx) {
  for (uint32_t i = 0; i < t->used; i++)
    if (t->slots[i].obj != NULL) fn(t->slots[i].obj, ctx);
}

/* ---- the object registry ---- */

weft__ref_slot *weft__ref_chunks[WEFT__REF_CHUNKS] WEFT__COLD_BSS;

static pthread_mutex_t ref_mutex = PTHREAD_MUTEX_INITIALIZER;
static uint32_t ref_used;      /* slots ever handed out; under ref_mutex */
static uint32_t ref_free_head; /* first free slot index + 1, 0 if none; under ref_mutex */

static const char *const ref_nouns[WEFT__REF_KINDS] = {
    [WEFT__REF_FREE] = "object",
    [WEFT__REF_QUEUE] = "queue",
    [WEFT__REF_MPQUEUE] = "process queue",
    [WEFT__REF_CONN] = "connection",
    [WEFT__REF_VALUE] = "value",
    [WEFT__REF_SHM] = "segment",
    [WEFT__REF_IMAP] = "imap",
    [WEFT__REF_AS_COMPLETED] = "as_completed iterator",
};

/* How the API ends each kind's life. */
static const char *const ref_ends[WEFT__REF_KINDS] = {
    [WEFT__REF_FREE] = "freed",   [WEFT__REF_QUEUE] = "freed",  [WEFT__REF_MPQUEUE] = "freed",
    [WEFT__REF_CONN] = "closed",  [WEFT__REF_VALUE] = "freed",  [WEFT__REF_SHM] = "closed",
    [WEFT__REF_IMAP] = "freed",   [WEFT__REF_AS_COMPLETED] = "freed",
};

static const char *article(const char *noun) {
  return noun[0] == 'a' || noun[0] == 'i' || noun[0] == 'o' ? "an" : "a";
}

static weft__ref_slot *ref_slot(uint32_t index) {
  weft__ref_slot *chunk =
      __atomic_load_n(&weft__ref_chunks[index >> WEFT__REF_CHUNK_BITS], __ATOMIC_ACQUIRE);
  return chunk == NULL ? NULL : &chunk[index & (WEFT__REF_CHUNK - 1)];
}

/* Makes slot ref_used exist (its chunk allocated when it starts one) and
 * counts it used; false if memory ran out. Generations start at 1
 * (calloc's tag 0 | 1 << 32), so a handed-out pointer is never a small
 * number. */
static bool ref_grow_locked(void) {
  uint32_t index = ref_used;
  if ((index & (WEFT__REF_CHUNK - 1)) == 0) {
    weft__ref_slot *chunk = calloc(WEFT__REF_CHUNK, sizeof *chunk);
    if (chunk == NULL) return false;
    for (uint32_t i = 0; i < WEFT__REF_CHUNK; i++) chunk[i].tag = (uint64_t)1 << 32;
    __atomic_store_n(&weft__ref_chunks[index >> WEFT__REF_CHUNK_BITS], chunk, __ATOMIC_RELEASE);
  }
  ref_used++;
  return true;
}

void *weft__ref_add(void *obj, enum weft__ref_kind kind, const char *fn) {
  pthread_mutex_lock(&ref_mutex);
  uint32_t index;
  weft__ref_slot *s;
  if (ref_free_head != 0) {
    index = ref_free_head - 1;
    s = ref_slot(index);
    ref_free_head = s->next;
  } else {
    if (ref_used == WEFT__REF_CHUNKS * WEFT__REF_CHUNK) {
      pthread_mutex_unlock(&ref_mutex);
      weft__error(WEFT_ENOMEM, "%s: too many objects alive at once (%u)", fn, ref_used);
      return NULL;
    }
    index = ref_used;
    if (!ref_grow_locked()) {
      pthread_mutex_unlock(&ref_mutex);
      weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
      return NULL;
    }
    s = ref_slot(index);
  }
  uint64_t gen = __atomic_load_n(&s->tag, __ATOMIC_RELAXED) & 0xffffffff00000000u;
  s->next = 0;
  __atomic_store_n(&s->obj, obj, __ATOMIC_RELAXED);
  __atomic_store_n(&s->tag, gen | (uint64_t)kind, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&ref_mutex);
  return (void *)(uintptr_t)(gen | (index + 1));
}

/* Makes slot index exist (and every slot below it), the new ones free. */
static int ref_reach_locked(uint32_t index) {
  while (ref_used <= index) {
    uint32_t i = ref_used;
    if (!ref_grow_locked()) return -ENOMEM;
    if (i < index) { /* free for later adds */
      weft__ref_slot *s = ref_slot(i);
      s->next = ref_free_head;
      ref_free_head = i + 1;
    }
  }
  return 0;
}

bool weft__ref_stale(const void *handle) {
  uint64_t id = (uint64_t)(uintptr_t)handle;
  uint32_t index = (uint32_t)id - 1;
  if (index >= WEFT__REF_CHUNKS * WEFT__REF_CHUNK || (id >> 32) == 0) return false;
  weft__ref_slot *s = ref_slot(index);
  if (s == NULL) return false;
  uint32_t gen = (uint32_t)(__atomic_load_n(&s->tag, __ATOMIC_ACQUIRE) >> 32);
  return gen > (uint32_t)(id >> 32);
}

int weft__ref_add_at(const void *handle, void *obj, enum weft__ref_kind kind) {
  uint64_t id = (uint64_t)(uintptr_t)handle;
  uint32_t index = (uint32_t)id - 1;
  if (index >= WEFT__REF_CHUNKS * WEFT__REF_CHUNK || (id >> 32) == 0) return -EINVAL;
  pthread_mutex_lock(&ref_mutex);
  int err = 0;
  if (index >= ref_used) {
    err = ref_reach_locked(index);
  } else {
    /* Only a free slot can take it: unlink it from the free list. */
    uint32_t *link = &ref_free_head;
    while (*link != 0 && *link != index + 1) link = &ref_slot(*link - 1)->next;
    if (*link == 0)
      err = -EEXIST;
    else
      *link = ref_slot(index)->next;
  }
  if (err == 0) {
    weft__ref_slot *s = ref_slot(index);
    s->next = 0;
    __atomic_store_n(&s->obj, obj, __ATOMIC_RELAXED);
    __atomic_store_n(&s->tag, (id & 0xffffffff00000000u) | (uint64_t)kind, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&ref_mutex);
  return err;
}

int weft__ref_error(const void *handle, enum weft__ref_kind kind, const char *fn) {
  const char *noun = ref_nouns[kind];
  if (handle == NULL) return weft__error(WEFT_EINVAL, "%s: %s is NULL", fn, noun);
  /* An object of another kind is a live slot with the same generation. */
  uint64_t id = (uint64_t)(uintptr_t)handle;
  uint32_t index = (uint32_t)id - 1;
  if (index < WEFT__REF_CHUNKS * WEFT__REF_CHUNK) {
    weft__ref_slot *s = ref_slot(index);
    uint64_t tag = s == NULL ? 0 : __atomic_load_n(&s->tag, __ATOMIC_ACQUIRE);
    uint32_t other = (uint32_t)tag;
    if (s != NULL && (tag >> 32) == (id >> 32) && other != WEFT__REF_FREE &&
        other < WEFT__REF_KINDS)
      return weft__error(WEFT_EINVAL, "%s: the pointer is %s %s, not %s %s", fn,
                         article(ref_nouns[other]), ref_nouns[other], article(noun), noun);
  }
  return weft__error(WEFT_ECLOSED, "%s: the %s was already %s (or is not %s %s)", fn, noun,
                     ref_ends[kind], article(noun), noun);
}

void *weft__ref_remove(const void *handle, enum weft__ref_kind kind, const char *fn) {
  pthread_mutex_lock(&ref_mutex);
  void *obj = weft__ref_get(handle, kind);
  if (obj != NULL) {
    uint64_t id = (uint64_t)(uintptr_t)handle;
    uint32_t index = (uint32_t)id - 1;
    weft__ref_slot *s = ref_slot(index);
    uint32_t gen = (uint32_t)(id >> 32);
    gen = gen == UINT32_MAX ? 1 : gen + 1;
    __atomic_store_n(&s->tag, (uint64_t)gen << 32 | WEFT__REF_FREE, __ATOMIC_RELEASE);
    __atomic_store_n(&s->obj, NULL, __ATOMIC_RELAXED);
    s->next = ref_free_head;
    ref_free_head = index + 1;
  }
  pthread_mutex_unlock(&ref_mutex);
  if (obj == NULL) weft__ref_error(handle, kind, fn);
  return obj;
}

void weft__ref_before_fork(void) { pthread_mutex_lock(&ref_mutex); }
WEFT__HOT void weft__ref_after_fork(void) { pthread_mutex_unlock(&ref_mutex); }
