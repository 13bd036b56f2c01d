/* SPDX-License-Identifier: MIT */
#include "handle.h"

#include <stdlib.h>

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

void weft__handle_each(const weft__handle_table *t, void (*fn)(void *obj, void *ctx), void *ctx) {
  for (uint32_t i = 0; i < t->used; i++)
    if (t->slots[i].obj != NULL) fn(t->slots[i].obj, ctx);
}
