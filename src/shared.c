/* SPDX-License-Identifier: MIT */
/* Shared anonymous memory for objects used between a process and the
 * children it forks afterwards. */
#include <errno.h>
#include <string.h>

#include "internal.h"
#include "os/os.h"
#include "weft/sync.h"

/* The mapping's size sits in front of the block, which keeps 64-byte
 * alignment (a cache line) for the caller. */
#define HEADER 64

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
  return (char *)base + HEADER;
}

int weft_shared_free(void *ptr) {
  if (ptr == NULL) return 0;
  void *base = (char *)ptr - HEADER;
  if (weft__os_unmap(base, *(size_t *)base) != 0)
    return weft__error(WEFT_EINVAL, "weft_shared_free: %p was not from weft_shared_alloc", ptr);
  return 0;
}
