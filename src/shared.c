/* Shared anonymous memory for objects used between a process and the
 * children it forks afterwards. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "os/os.h"
#include "runtime.h"
#include "weft/sync.h"

/* The mapping's size sits in front of the block, which keeps 64-byte
 * alignment (a cache line) for the caller. */
#define HEADER 64

/* The blocks this process has mapped, so that a second free, or a pointer
 * from elsewhere, is reported instead of reading a header that is no longer
 * mapped (or unmapping what now lives at that address). fork copies it, as
 * it copies the mappings. */
struct block {
  struct block *next;
  void *ptr;
};
static struct block *blocks;
static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;

void weft__shared_before_fork(void) { pthread_mutex_lock(&blocks_lock); }
void weft__shared_after_fork(void) { pthread_mutex_unlock(&blocks_lock); }

void *weft_shared_alloc(size_t size) {
  if (size == 0 || size > SIZE_MAX - HEADER) {
    weft__error(WEFT_EINVAL, "weft_shared_alloc: size %zu is not valid", size);
    return NULL;
  }
  struct block *b = malloc(sizeof *b);
  void *base = b != NULL ? weft__os_map_shared(size + HEADER) : NULL;
  if (base == NULL) {
    free(b);
    weft__error(WEFT_ENOMEM, "weft_shared_alloc: cannot map %zu bytes: %s", size, strerror(errno));
    return NULL;
  }
  *(size_t *)base = size + HEADER;
  b->ptr = (char *)base + HEADER;
  pthread_mutex_lock(&blocks_lock);
  b->next = blocks;
  blocks = b;
  pthread_mutex_unlock(&blocks_lock);
  return b->ptr;
}

int weft_shared_free(void *ptr) {
  if (ptr == NULL) return 0;
  struct block *found = NULL;
  pthread_mutex_lock(&blocks_lock);
  for (struct block **p = &blocks; *p != NULL; p = &(*p)->next)
    if ((*p)->ptr == ptr) {
      found = *p;
      *p = found->next;
      break;
    }
  pthread_mutex_unlock(&blocks_lock);
  if (found == NULL)
    return weft__error(WEFT_ECLOSED,
                       "weft_shared_free: %p was already freed (or is not from weft_shared_alloc)",
                       ptr);
  free(found);
  void *base = (char *)ptr - HEADER;
  if (weft__os_unmap(base, *(size_t *)base) != 0)
    return weft__error(WEFT_EINVAL, "weft_shared_free: %p was not from weft_shared_alloc", ptr);
  return 0;
}
