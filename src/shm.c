/* SPDX-License-Identifier: MIT */
/* Shared memory segments: Python's multiprocessing.shared_memory.
 *
 * Ownership of names. Python's resource tracker unlinks a segment when the
 * first process that registered it -- creator or attacher -- goes away,
 * which removes the name under the creator's feet. Here only the creator
 * registers a name, in a registry private to the process, and its exit
 * rules unlink what is still registered. The registry holds names, not
 * handles: closing a handle leaves the name registered (close never
 * unlinks, as in Python), and an explicit unlink, from any handle of this
 * process, takes it out.
 *
 * A registered name is unlinked at exit only if it still refers to the
 * object this process made (same device and inode): another process may
 * have unlinked it and someone else may have created a new object under the
 * same name, which is not ours to remove.
 *
 * A forked child inherits the registry but not the ownership: each entry
 * remembers the pid of its creator and a child's exit skips its parent's.
 *
 * The registry's lock is a word holding the pid of the process whose thread
 * holds it. The before-fork handler takes it, so the list is whole in the
 * child; the child, which must write as few pages as possible (every page
 * written costs a start a copy), does not release it: a holder pid other
 * than its own can only be such a fork-time hold, and counts as free. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handle.h"
#include "internal.h"
#include "os/os.h"
#include "region.h"
#include "runtime.h"
#include "weft/shm.h"

/* The public weft_shm pointer is a handle (handle.h) for this struct. */
struct weft_shm {
  weft_shm *handle;  /* what the caller holds */
  void *base;
  size_t size;
  uint64_t dev, ino; /* identity of the object, for the registry */
  bool unlinked;     /* by this handle */
  char name[WEFT_SHM_NAME_MAX + 2]; /* "/x"; "" for an anonymous segment */
};

/* A name this process (or, in a forked child, an ancestor) created. */
struct owned_name {
  struct owned_name *next;
  pid_t creator;
  uint64_t dev, ino;
  char name[];
};

static struct owned_name *owned; /* guarded by reg_word */
static uint32_t reg_word;        /* pid of the holding process, 0 when free */
static uint32_t reg_waiters;

/* ---- the registry's lock ---- */

static void reg_lock(void) {
  uint32_t me = (uint32_t)weft__pid;
  bool counted = false;
  for (;;) {
    uint32_t v = __atomic_load_n(&reg_word, __ATOMIC_SEQ_CST);
    if (v != me) {
      if (__atomic_compare_exchange_n(&reg_word, &v, me, false, __ATOMIC_SEQ_CST,
                                      __ATOMIC_RELAXED))
        break;
      continue;
    }
    if (!counted) {
      __atomic_add_fetch(&reg_waiters, 1, __ATOMIC_SEQ_CST);
      counted = true;
      continue; /* look again now that a release will see us */
    }
    weft__os_futex_wait(&reg_word, v, WEFT__NEVER);
  }
  if (counted) __atomic_sub_fetch(&reg_waiters, 1, __ATOMIC_SEQ_CST);
}

static void reg_unlock(void) {
  __atomic_store_n(&reg_word, 0, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&reg_waiters, __ATOMIC_SEQ_CST) != 0) weft__os_futex_wake(&reg_word, 1);
}

void weft__shm_before_fork(void) { reg_lock(); }

void weft__shm_after_fork_parent(void) { reg_unlock(); }

/* ---- the registry ---- */

static int register_name(const char *name, uint64_t dev, uint64_t ino) {
  size_t len = strlen(name);
  struct owned_name *n = malloc(sizeof *n + len + 1);
  if (n == NULL) return WEFT_ENOMEM;
  n->creator = weft__pid;
  n->dev = dev;
  n->ino = ino;
  memcpy(n->name, name, len + 1);
  reg_lock();
  n->next = owned;
  __atomic_store_n(&owned, n, __ATOMIC_RELEASE);
  reg_unlock();
  return 0;
}

static void forget_name(const char *name, uint64_t dev, uint64_t ino) {
  struct owned_name *found = NULL;
  reg_lock();
  for (struct owned_name **p = &owned; *p != NULL; p = &(*p)->next) {
    struct owned_name *n = *p;
    if (n->dev == dev && n->ino == ino && strcmp(n->name, name) == 0) {
      __atomic_store_n(p, n->next, __ATOMIC_RELEASE);
      found = n;
      break;
    }
  }
  reg_unlock();
  free(found);
}

/* Whether name still refers to the object (dev, ino). */
static bool still_ours(const char *name, uint64_t dev, uint64_t ino) {
  int fd = weft__os_shm_open(name, false);
  if (fd == -ENOENT) return false;
  if (fd < 0) return true; /* cannot tell (EMFILE at exit): remove it, as documented */
  uint64_t d, i;
  bool same = weft__os_fd_identity(fd, &d, &i) != 0 || (d == dev && i == ino);
  weft__os_shm_close(fd);
  return same;
}

WEFT__HOT void weft__shm_exit_rules(void) {
  if (__atomic_load_n(&owned, __ATOMIC_ACQUIRE) == NULL) return;
  struct owned_name *done = NULL;
  reg_lock();
  for (struct owned_name **p = &owned; *p != NULL;) {
    struct owned_name *n = *p;
    if (n->creator != weft__pid) { /* an ancestor's, inherited by fork */
      p = &n->next;
      continue;
    }
    if (still_ours(n->name, n->dev, n->ino)) weft__os_shm_unlink(n->name);
    __atomic_store_n(p, n->next, __ATOMIC_RELEASE);
    n->next = done;
    done = n;
  }
  reg_unlock();
  while (done != NULL) {
    struct owned_name *next = done->next;
    free(done);
    done = next;
  }
}

/* ---- names and errors ---- */

/* Stores "/name" in out (WEFT_SHM_NAME_MAX + 2 bytes) or records why the
 * name cannot be one. */
static int normalise(const char *fn, const char *name, char *out) {
  if (name == NULL) return weft__error(WEFT_EINVAL, "%s: the name is NULL", fn);
  const char *bare = name[0] == '/' ? name + 1 : name;
  size_t len = strnlen(bare, WEFT_SHM_NAME_MAX + 1);
  if (len == 0)
    return weft__error(WEFT_EINVAL, "%s: the name '%s' is empty", fn, name);
  if (len > WEFT_SHM_NAME_MAX)
    return weft__error(WEFT_EINVAL, "%s: the name is longer than %d bytes", fn,
                       WEFT_SHM_NAME_MAX);
  if (memchr(bare, '/', len) != NULL)
    return weft__error(WEFT_EINVAL,
                       "%s: the name '%.64s' has a '/' other than a leading one", fn, name);
  if (strcmp(bare, ".") == 0 || strcmp(bare, "..") == 0)
    return weft__error(WEFT_EINVAL, "%s: '%s' is not a valid name", fn, name);
  out[0] = '/';
  memcpy(out + 1, bare, len + 1);
  return 0;
}

/* A system error as one of weft's codes. */
static int code_of(int err) {
  switch (err) {
  case -ENFILE:
    return WEFT_EMFILE;
  case -ENOSPC:
  case -EFBIG:
    return WEFT_ENOMEM;
  case -EACCES:
    return WEFT_EPERM;
  default:
    return err;
  }
}

static int fail(int err, const char *fn, const char *what, const char *name) {
  int code = code_of(err);
  if (name != NULL)
    return weft__error(code, "%s: cannot %s '%s': %s", fn, what, name, weft_strerror(err));
  return weft__error(code, "%s: cannot %s: %s", fn, what, weft_strerror(err));
}

/* ---- segments ---- */

/* A segment registered under a new handle from the start, so that no
 * failure past the mapping has to undo it. */
static weft_shm *new_handle(const char *fn) {
  weft_shm *s = calloc(1, sizeof *s);
  if (s == NULL) {
    weft__error(WEFT_ENOMEM, "%s: out of memory for the handle", fn);
    return NULL;
  }
  s->handle = weft__ref_add(s, WEFT__REF_SHM, fn);
  if (s->handle == NULL) {
    free(s);
    return NULL;
  }
  return s;
}

static void free_handle(weft_shm *s) {
  weft__ref_remove(s->handle, WEFT__REF_SHM, "weft_shm");
  free(s);
}

static weft_shm *new_anonymous(size_t size) {
  weft_shm *s = new_handle("weft_shm_new");
  if (s == NULL) return NULL;
  /* A region (region.h): the memory travels to spawned children at the
   * same address, as a forked child's does. */
  int err = 0;
  s->base = weft__region_new(size, &err);
  if (s->base == NULL) {
    weft__error(code_of(err) == WEFT_EINVAL ? WEFT_ENOMEM : code_of(err),
                "weft_shm_new: cannot make a segment of %zu bytes: %s", size,
                weft_strerror(err));
    free_handle(s);
    return NULL;
  }
  s->size = size;
  return s->handle;
}

static weft_shm *new_named(size_t size, const char *given) {
  weft_shm *s = new_handle("weft_shm_new");
  if (s == NULL) return NULL;
  if (normalise("weft_shm_new", given, s->name) != 0) {
    free_handle(s);
    return NULL;
  }
  int fd = weft__os_shm_open(s->name, true);
  if (fd < 0) {
    if (fd == -EEXIST)
      weft__error(WEFT_EEXIST, "weft_shm_new: a shared memory segment named '%s' already exists",
                  s->name);
    else
      fail(fd, "weft_shm_new", "create", s->name);
    free_handle(s);
    return NULL;
  }
  /* From here on the name is ours: any failure removes it again. */
  int err = weft__os_ftruncate(fd, size);
  const char *what = "set the size of";
  if (err == 0) {
    err = weft__os_fd_identity(fd, &s->dev, &s->ino);
    what = "inspect";
  }
  if (err == 0) {
    s->base = weft__os_map_fd(fd, size);
    if (s->base == NULL) err = -errno;
    what = "map";
  }
  weft__os_shm_close(fd);
  if (err == 0) {
    err = register_name(s->name, s->dev, s->ino);
    what = "register";
  }
  if (err != 0) {
    if (s->base != NULL) weft__os_unmap(s->base, size);
    weft__os_shm_unlink(s->name);
    int code = code_of(err) == WEFT_EINVAL ? WEFT_ENOMEM : code_of(err);
    weft__error(code, "weft_shm_new: cannot %s '%s' (%zu bytes): %s", what, s->name, size,
                weft_strerror(err));
    free_handle(s);
    return NULL;
  }
  s->size = size;
  weft__region_note_mapping(s->base, s->size, s->dev, s->ino);
  return s->handle;
}

weft_shm *weft_shm_new_opts(size_t size, const weft_shm_options *opts) {
  if (size == 0) {
    weft__error(WEFT_EINVAL, "weft_shm_new: size 0 is not valid");
    return NULL;
  }
  if (size > (size_t)INT64_MAX) {
    weft__error(WEFT_EINVAL, "weft_shm_new: size %zu is too large", size);
    return NULL;
  }
  const char *name = opts != NULL ? opts->name : NULL;
  return name == NULL ? new_anonymous(size) : new_named(size, name);
}

weft_shm *weft_shm_attach_opts(const char *name, const weft_shm_options *opts) {
  weft_shm *s = new_handle("weft_shm_attach");
  if (s == NULL) return NULL;
  if (normalise("weft_shm_attach", name, s->name) != 0) {
    free_handle(s);
    return NULL;
  }
  int fd = weft__os_shm_open(s->name, false);
  if (fd < 0) {
    if (fd == -ENOENT)
      weft__error(WEFT_ENOENT, "weft_shm_attach: no shared memory segment named '%s'", s->name);
    else
      fail(fd, "weft_shm_attach", "open", s->name);
    free_handle(s);
    return NULL;
  }
  size_t actual = 0, want = opts != NULL ? opts->size : 0;
  int err = weft__os_fd_size(fd, &actual);
  if (err == 0) err = weft__os_fd_identity(fd, &s->dev, &s->ino);
  if (err != 0) {
    fail(err, "weft_shm_attach", "inspect", s->name);
  } else if (actual == 0) {
    /* Between the creator's shm_open and its ftruncate, or made elsewhere. */
    err = weft__error(WEFT_EINVAL, "weft_shm_attach: '%s' is empty (size 0)", s->name);
  } else if (want > actual) {
    err = weft__error(WEFT_EINVAL, "weft_shm_attach: .size %zu is larger than '%s' (%zu bytes)",
                      want, s->name, actual);
  } else {
    s->size = want != 0 ? want : actual;
    s->base = weft__os_map_fd(fd, s->size);
    if (s->base == NULL) {
      err = -errno;
      weft__error(code_of(err) == WEFT_EINVAL ? WEFT_ENOMEM : code_of(err),
                  "weft_shm_attach: cannot map '%s' (%zu bytes): %s", s->name, s->size,
                  weft_strerror(err));
    }
  }
  weft__os_shm_close(fd);
  if (err != 0) {
    free_handle(s);
    return NULL;
  }
  weft__region_note_mapping(s->base, s->size, s->dev, s->ino);
  return s->handle;
}

static weft_shm *shm_of(const weft_shm *h, const char *fn, int *err) {
  return weft__ref_use(h, WEFT__REF_SHM, fn, err);
}

/* ---- travel to a spawned child (region.h) ----
 * An anonymous segment is a region, which travels with every start; a
 * named one travels by its name, as Python's does, so it must still be
 * the object this handle mapped. */

int weft__shm_export(const void *h, struct weft__object_rec *rec, int *fd, const char *call) {
  int err = 0;
  weft_shm *s = shm_of(h, call, &err);
  if (s == NULL) return err;
  rec->ptr = (uint64_t)(uintptr_t)s->base;
  rec->size = s->size;
  snprintf(rec->name, sizeof rec->name, "%s", s->name);
  if (s->name[0] == '\0') return 0;
  uint64_t dev = 0, ino = 0;
  int d = weft__os_shm_open(s->name, false);
  if (d >= 0 && (err = weft__os_fd_identity(d, &dev, &ino)) == 0 && (dev != s->dev || ino != s->ino))
    err = -ENOENT;
  if (d < 0 || err != 0) {
    if (d >= 0) weft__os_shm_close(d);
    if (d == -ENOENT || err == -ENOENT)
      return weft__error(WEFT_ENOENT,
                         "%s: segment '%s' was unlinked: a named segment travels by its name", call,
                         s->name);
    return fail(d < 0 ? d : err, call, "pass", s->name);
  }
  rec->dev = dev;
  rec->ino = ino;
  *fd = d;
  return 0;
}

int weft__shm_import(const void *h, const struct weft__object_rec *rec, int fd) {
  weft_shm *s = calloc(1, sizeof *s);
  if (s == NULL) return -ENOMEM;
  s->handle = (weft_shm *)h;
  s->size = (size_t)rec->size;
  snprintf(s->name, sizeof s->name, "%s", rec->name);
  s->dev = rec->dev;
  s->ino = rec->ino;
  if (s->name[0] == '\0') {
    s->base = (void *)(uintptr_t)rec->ptr; /* mapped with the regions */
  } else {
    if (fd < 0) {
      free(s);
      return -EPROTO;
    }
    /* At the parent's address if it is free here, so that pointers into it
     * stored in shared memory mean the same; anywhere else otherwise. */
    s->base = weft__os_map_fd_at(fd, s->size, (void *)(uintptr_t)rec->ptr);
    if (s->base != NULL && s->base != (void *)(uintptr_t)rec->ptr) {
      weft__os_unmap(s->base, s->size);
      s->base = NULL;
    }
    if (s->base == NULL) s->base = weft__os_map_fd(fd, s->size);
    if (s->base == NULL) {
      int err = -errno;
      free(s);
      return err;
    }
  }
  int err = weft__ref_add_at(h, s, WEFT__REF_SHM);
  if (err != 0) {
    if (s->name[0] != '\0') weft__os_unmap(s->base, s->size);
    free(s);
    return err;
  }
  if (fd >= 0) weft__os_shm_close(fd); /* the mapping keeps the object */
  if (s->name[0] != '\0') weft__region_note_mapping(s->base, s->size, s->dev, s->ino);
  return 0;
}

void *weft_shm_buf(const weft_shm *h) {
  int err;
  const weft_shm *shm = shm_of(h, "weft_shm_buf", &err);
  return shm != NULL ? shm->base : NULL;
}

size_t weft_shm_size(const weft_shm *h) {
  int err;
  const weft_shm *shm = shm_of(h, "weft_shm_size", &err);
  return shm != NULL ? shm->size : 0;
}

const char *weft_shm_name(const weft_shm *h) {
  int err;
  const weft_shm *shm = shm_of(h, "weft_shm_name", &err);
  return shm != NULL && shm->name[0] != '\0' ? shm->name : NULL;
}

int weft_shm_unlink(weft_shm *h) {
  int cerr = 0;
  weft_shm *shm = shm_of(h, "weft_shm_unlink", &cerr);
  if (shm == NULL) return cerr;
  if (shm->name[0] == '\0')
    return weft__error(WEFT_EINVAL, "weft_shm_unlink: an anonymous segment has no name");
  /* Unlinking the name again could remove a newer segment that took it. */
  if (shm->unlinked)
    return weft__error(WEFT_ENOENT, "weft_shm_unlink: '%s' was already unlinked", shm->name);
  int err = weft__os_shm_unlink(shm->name);
  /* Gone either way: the exit rules must not look for it any more. */
  if (err == 0 || err == -ENOENT) forget_name(shm->name, shm->dev, shm->ino);
  if (err == -ENOENT)
    return weft__error(WEFT_ENOENT, "weft_shm_unlink: '%s' was already unlinked", shm->name);
  if (err != 0) return fail(err, "weft_shm_unlink", "unlink", shm->name);
  shm->unlinked = true;
  return 0;
}

int weft_shm_close(weft_shm *h) {
  if (h == NULL) return 0;
  weft_shm *shm = weft__ref_remove(h, WEFT__REF_SHM, "weft_shm_close");
  if (shm == NULL) return weft_last_error_code();
  int err = 0;
  if (shm->name[0] == '\0') {
    weft__region_free(shm->base);
  } else {
    weft__region_forget_mapping(shm->base);
    err = weft__os_unmap(shm->base, shm->size);
  }
  free(shm);
  if (err != 0) return fail(err, "weft_shm_close", "unmap the segment", NULL);
  return 0;
}
