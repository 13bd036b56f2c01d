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

/* Finds the function a name stands for in this image, loading its object
 * if it is not loaded yet. WEFT_ENOENT with a sentence if it cannot. */
WEFT__BACKEND_API int weft__task_resolve(const struct weft__task_name *name, void **fn);

#endif
