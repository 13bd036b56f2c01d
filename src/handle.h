/* SPDX-License-Identifier: MIT */
/* Handle tables: map small by-value ids to objects, so that a call through a
 * closed handle is detected instead of touching freed memory (as nng does).
 * An id packs a slot index (low 32 bits, 1-based) with the slot's generation
 * (high 32 bits); closing bumps the generation. Id 0 is never used.
 * The table does no locking: its owner serialises access with its own lock. */
#ifndef WEFT_HANDLE_H
#define WEFT_HANDLE_H

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

#endif
