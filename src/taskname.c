/* SPDX-License-Identifier: MIT */
/* Task names: a function as (loaded object, offset), see taskname.h. */
#define _GNU_SOURCE
#include "taskname.h"

#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct find {
  uintptr_t addr;     /* in: the address looked for (name_of) */
  const char *object; /* in: the object looked for (resolve) */
  bool found;
  uintptr_t base;
  char name[PATH_MAX];
};

/* Whether addr lies in an executable PT_LOAD segment of the object. */
static bool in_code(const struct dl_phdr_info *info, uintptr_t addr) {
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
    if (addr >= lo && addr - lo < ph->p_memsz) return true;
  }
  return false;
}

static int by_address(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  struct find *f = arg;
  if (!in_code(info, f->addr)) return 0;
  f->found = true;
  f->base = info->dlpi_addr;
  snprintf(f->name, sizeof f->name, "%s", info->dlpi_name != NULL ? info->dlpi_name : "");
  return 1;
}

static int by_object(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  struct find *f = arg;
  const char *name = info->dlpi_name != NULL ? info->dlpi_name : "";
  if (strcmp(name, f->object) != 0) return 0;
  f->found = true;
  f->base = info->dlpi_addr;
  return 1;
}

int weft__task_locate(const void *fn, uintptr_t *base, char *path, size_t cap, const char *call) {
  struct find f = {.addr = (uintptr_t)fn};
  dl_iterate_phdr(by_address, &f);
  if (!f.found)
    return weft__error(WEFT_EINVAL,
                       "%s: the function %p lies in no loaded program or library, so another "
                       "run of the program cannot find it",
                       call, fn);
  if (strncmp(f.name, "linux-vdso", 10) == 0 || strncmp(f.name, "linux-gate", 10) == 0)
    return weft__error(WEFT_EINVAL, "%s: the function %p is in the kernel's vDSO", call, fn);
  *base = f.base;
  snprintf(path, cap, "%s", f.name);
  return 0;
}

int weft__task_name_of(const void *fn, struct weft__task_name *out, const char *call) {
  uintptr_t base = 0;
  int err = weft__task_locate(fn, &base, out->object, sizeof out->object, call);
  if (err == 0) out->offset = (uint64_t)((uintptr_t)fn - base);
  return err;
}

int weft__task_index(const void *fn, char (*paths)[PATH_MAX], uint32_t *n, uint32_t max,
                     struct weft__task_memo *memo, uint32_t *object, uint64_t *offset,
                     const char *call) {
  if (fn != memo->fn || fn == NULL) {
    uintptr_t base = 0;
    char path[PATH_MAX];
    int err = weft__task_locate(fn, &base, path, sizeof path, call);
    if (err != 0) return err;
    uint32_t i = 0;
    while (i < *n && strcmp(paths[i], path) != 0) i++;
    if (i == *n) {
      if (i == max)
        return weft__error(WEFT_EINVAL, "%s: the pool's tasks lie in more than %u libraries",
                           call, max);
      memcpy(paths[i], path, sizeof path);
      __atomic_store_n(n, i + 1, __ATOMIC_RELEASE);
    }
    *memo = (struct weft__task_memo){.fn = fn, .base = base, .object = i};
  }
  *object = memo->object;
  *offset = (uint64_t)((uintptr_t)fn - memo->base);
  return 0;
}

int weft__task_lookup(char (*paths)[PATH_MAX], const uint32_t *n, uint32_t object,
                      uint64_t offset, struct weft__task_memo *memo, void **fn) {
  if (memo->fn != NULL && memo->object == object && memo->offset == offset) {
    *fn = (void *)memo->fn;
    return 0;
  }
  if (object >= __atomic_load_n(n, __ATOMIC_ACQUIRE))
    return weft__error(WEFT_EINVAL, "the task names an object its pool never listed");
  struct weft__task_name *name = malloc(sizeof *name);
  if (name == NULL) return weft__error(WEFT_ENOMEM, "out of memory");
  memcpy(name->object, paths[object], sizeof name->object);
  name->offset = offset;
  int err = weft__task_resolve(name, fn);
  free(name);
  if (err == 0) *memo = (struct weft__task_memo){.fn = *fn, .object = object, .offset = offset};
  return err;
}

int weft__task_resolve(const struct weft__task_name *name, void **fn) {
  struct find f = {.object = name->object};
  dl_iterate_phdr(by_object, &f);
  if (!f.found && name->object[0] != '\0' && dlopen(name->object, RTLD_NOW | RTLD_GLOBAL) != NULL)
    dl_iterate_phdr(by_object, &f);
  if (!f.found)
    return weft__error(WEFT_ENOENT, "the target's library %s could not be loaded",
                       name->object[0] != '\0' ? name->object : "(the program)");
  uintptr_t addr = f.base + (uintptr_t)name->offset;
  struct find check = {.addr = addr};
  dl_iterate_phdr(by_address, &check);
  if (!check.found || check.base != f.base)
    return weft__error(WEFT_ENOENT, "the target at offset %#llx of %s is not code in this image",
                       (unsigned long long)name->offset,
                       name->object[0] != '\0' ? name->object : "the program");
  *fn = (void *)addr;
  return 0;
}
