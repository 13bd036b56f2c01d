/* SPDX-License-Identifier: MIT */
/* Names for the functions of a program that another run of the same
 * program image can resolve: a spawned child (a fresh exec of the program)
 * and, later, another rank of the same program. A function is named by the
 * loaded object it lies in and its offset there, so any function of the
 * program or of a shared library it loaded can be named, static ones
 * included, without registering it; the address itself means nothing in
 * another image, whose objects load elsewhere. */
#ifndef WEFT_TASKNAME_H
#define WEFT_TASKNAME_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

struct weft__task_name {
  uint64_t offset;         /* from the object's load address */
  char object[PATH_MAX];   /* its path; "" for the main program */
};

/* Names fn. WEFT_EINVAL (recording a sentence that names `call`) if fn does
 * not lie in an executable segment of a loaded object. */
WEFT__BACKEND_API int weft__task_name_of(const void *fn, struct weft__task_name *out, const char *call);

/* Where fn lies: the loaded object's base address and path ("" for the
 * main program). WEFT_EINVAL recorded for `call` as weft__task_name_of. */
WEFT__BACKEND_API int weft__task_locate(const void *fn, uintptr_t *base, char *path, size_t cap, const char *call);

/* ---- a pool's calls, named by a table of objects ----
 * A pool whose workers are other images (spawn, forkserver, MPI ranks)
 * names each call's function as an offset in an object of a table of
 * paths that only grows, entry 0 the program (""); the worker resolves
 * and checks each function it is given. Both sides keep the last one. */
struct weft__task_memo {
  const void *fn;
  uintptr_t base;
  uint32_t object;
  uint64_t offset;
};

/* Finds fn's object in paths[0..*n) (appending it, up to max, with a
 * release store of *n), and stores its index and fn's offset there.
 * WEFT_EINVAL recorded for `call` if fn lies in no object or max is hit.
 * memo starts zeroed. */
WEFT__BACKEND_API int weft__task_index(const void *fn, char (*paths)[PATH_MAX], uint32_t *n,
                                       uint32_t max, struct weft__task_memo *memo,
                                       uint32_t *object, uint64_t *offset, const char *call);

/* The function at offset in paths[object] (of *n) in this image, checked
 * to be code. WEFT_EINVAL / WEFT_ENOENT with a sentence if not. memo
 * starts with fn NULL. */
WEFT__BACKEND_API int weft__task_lookup(char (*paths)[PATH_MAX], const uint32_t *n,
                                        uint32_t object, uint64_t offset,
                                        struct weft__task_memo *memo, void **fn);

/* Finds the function a name stands for in this image, loading its object
 * if it is not loaded yet. WEFT_ENOENT with a sentence if it cannot. */
WEFT__BACKEND_API int weft__task_resolve(const struct weft__task_name *name, void **fn);

#endif
