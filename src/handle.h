/* SPDX-License-Identifier: MIT */
/* Handle tables: map small by-value ids to objects, so that a call through a
 * closed handle is detected instead of touching freed memory (as nng does).
 * An id packs a slot index (low 32 bits, 1-based) with the slot's generation
 * (high 32 bits); closing bumps the generation. Id 0 is never used.
 * The table does no locking: its owner serialises access with its own lock. */
#ifndef WEFT_HANDLE_H
#define WEFT_HANDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct weft__handle_slot {
  void *obj;       /* NULL when free */
  uint32_t gen;    /* bumped each time the slot is freed */
  uint32_t next;   /* next free slot index + 1, 0 ends the list */
} weft__handle_slot;

typedef struct weft__handle_table {
  weft__handle_slot *slots;
  uint32_t cap;
  uint32_t used;      /* slots ever handed out (high-water mark) */
  uint32_t free_head; /* first free slot index + 1, 0 if none */
} weft__handle_table;

/* Stores obj and returns its new id, or 0 if memory ran out. */
uint64_t weft__handle_add(weft__handle_table *t, void *obj);

/* Returns the object behind id, or NULL if id is 0, stale or unknown. */
void *weft__handle_get(const weft__handle_table *t, uint64_t id);

/* Frees id's slot; later lookups of id return NULL. */
void weft__handle_remove(weft__handle_table *t, uint64_t id);

/* Calls fn on every live object, in slot order. */
void weft__handle_each(const weft__handle_table *t, void (*fn)(void *obj, void *ctx), void *ctx);

/* ---- the object registry ----
 *
 * The objects weft frees that the API hands out as pointers (queues,
 * connections, values, segments, imaps, ...) are handles in disguise: the
 * pointer value is an id of one process-wide table, with the same packing
 * as above, cast to the public (incomplete) pointer type. The caller never
 * holds an address weft frees, so a stale or doubly freed pointer, or one
 * of another type, is reported instead of touching freed or unmapped memory.
 *
 * The table is an array of fixed-size chunks that never move nor go away,
 * so a lookup takes no lock: two loads and a compare of the slot's tag
 * (generation << 32 | kind) with the id's. Adding and removing take a mutex.
 * fork copies the table, so a child goes on using the parent's pointers. A
 * lookup racing the removal of the same id may return the object being
 * freed: using an object while freeing it is the caller's bug, as with
 * malloc. */
enum weft__ref_kind {
  WEFT__REF_FREE = 0, /* a slot not in use */
  WEFT__REF_QUEUE,
  WEFT__REF_MPQUEUE,
  WEFT__REF_CONN,
  WEFT__REF_VALUE,
  WEFT__REF_SHM,
  WEFT__REF_IMAP,
  WEFT__REF_AS_COMPLETED,
  WEFT__REF_KINDS
};

#define WEFT__REF_CHUNK_BITS 10
#define WEFT__REF_CHUNK (1u << WEFT__REF_CHUNK_BITS)
#define WEFT__REF_CHUNKS 4096u /* at most 4 Mi objects alive at once */

typedef struct weft__ref_slot {
  uint64_t tag;  /* generation << 32 | kind; atomic */
  void *obj;     /* atomic */
  uint32_t next; /* free list: next free slot index + 1, under the mutex */
} weft__ref_slot;

extern weft__ref_slot *weft__ref_chunks[WEFT__REF_CHUNKS];

/* Registers obj and returns the pointer to hand out for it; NULL (and
 * WEFT_ENOMEM recorded for fn) if the table is full or memory ran out. */
void *weft__ref_add(void *obj, enum weft__ref_kind kind, const char *fn);

/* Whether handle names an object that was freed since (its slot has moved
 * on to a later generation). */
bool weft__ref_stale(const void *handle);

/* Registers obj under the given pointer, as another process handed it out
 * (an object that travelled to a spawned child): 0, -EEXIST if that slot
 * is taken, -ENOMEM, -EINVAL for a pointer that is no handle. */
int weft__ref_add_at(const void *handle, void *obj, enum weft__ref_kind kind);

/* The object behind a handed-out pointer of that kind, or NULL. */
static inline void *weft__ref_get(const void *handle, enum weft__ref_kind kind) {
  uint64_t id = (uint64_t)(uintptr_t)handle;
  uint32_t index = (uint32_t)id - 1; /* slot 0 wraps to the largest: out of range */
  if (__builtin_expect(index >= WEFT__REF_CHUNKS * WEFT__REF_CHUNK, 0)) return NULL;
  weft__ref_slot *chunk =
      __atomic_load_n(&weft__ref_chunks[index >> WEFT__REF_CHUNK_BITS], __ATOMIC_ACQUIRE);
  if (__builtin_expect(chunk == NULL, 0)) return NULL;
  weft__ref_slot *s = &chunk[index & (WEFT__REF_CHUNK - 1)];
  uint64_t want = (id & 0xffffffff00000000u) | (uint64_t)kind;
  if (__builtin_expect(__atomic_load_n(&s->tag, __ATOMIC_ACQUIRE) != want, 0)) return NULL;
  return __atomic_load_n(&s->obj, __ATOMIC_RELAXED);
}

/* Records why handle is not a live object of that kind, for the public
 * call fn: WEFT_EINVAL for NULL or an object of another kind, WEFT_ECLOSED
 * for a freed one (or a pointer weft never handed out). Returns the code. */
int weft__ref_error(const void *handle, enum weft__ref_kind kind, const char *fn);

/* weft__ref_get, recording the error (its code in *err) when it fails. */
static inline void *weft__ref_use(const void *handle, enum weft__ref_kind kind, const char *fn,
                                  int *err) {
  void *obj = weft__ref_get(handle, kind);
  if (__builtin_expect(obj == NULL, 0)) *err = weft__ref_error(handle, kind, fn);
  return obj;
}

/* Unregisters handle and returns its object, or NULL (recording the error
 * for fn) if it was not a live object of that kind: the caller then frees
 * nothing. Exactly one of two racing removals gets the object. */
void *weft__ref_remove(const void *handle, enum weft__ref_kind kind, const char *fn);

/* Fork handlers: the mutex is held across fork, so the child's is free. */
void weft__ref_before_fork(void);
void weft__ref_after_fork(void);

#endif
