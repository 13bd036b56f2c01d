/* SPDX-License-Identifier: MIT */
/* Value and Array: Python's multiprocessing.Value, Array, RawValue and
 * RawArray.
 *
 * One shared anonymous mapping holds a header and, from the next 64-byte
 * boundary, the elements. The header carries the value's own RLock (an
 * RLock as in Python, so that load and store work inside a `with
 * get_lock()` block) and its name, which the lock points at: the mapping
 * sits at the same address in every child forked afterwards, so the pointer
 * stays valid there. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "deadlock.h"
#include "handle.h"
#include "internal.h"
#include "os/os.h"
#include "region.h"
#include "tsan.h"
#include "weft/shm.h"

#define MAGIC 0x7765667476616cu /* "weftval" */
#define DATA_ALIGN 64

/* The public weft_value pointer is a handle (handle.h) for this struct:
 * a freed value is unmapped, and a stale pointer must not reach it. */
struct weft_value {
  uint64_t magic;
  size_t map_size;
  size_t length;
  size_t elem_size;
  char typecode;      /* Python's struct code of the type */
  weft_rlock *lock;   /* &own_lock, the lock given, or NULL for a raw value */
  weft_rlock own_lock;
  char name[WEFT_NAME_MAX + 1]; /* "Value(i)", "Array(d, 10)" or opts->name */
};

#define DATA_OFFSET ((sizeof(struct weft_value) + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN)

struct type_info {
  const char *name;
  char code;
  unsigned char size;
};

#define T(name, code, type) {name, code, sizeof(type)}
static const struct type_info types[] = {
    T("b", 'b', signed char),
    T("B", 'B', unsigned char),
    T("h", 'h', short),
    T("H", 'H', unsigned short),
    T("i", 'i', int),
    T("I", 'I', unsigned int),
    T("l", 'l', long),
    T("L", 'L', unsigned long),
    T("q", 'q', long long),
    T("Q", 'Q', unsigned long long),
    T("f", 'f', float),
    T("d", 'd', double),
    T("c", 'c', char),
    T("char", 'c', char),
    T("signed char", 'b', signed char),
    T("unsigned char", 'B', unsigned char),
    T("short", 'h', short),
    T("unsigned short", 'H', unsigned short),
    T("int", 'i', int),
    T("unsigned int", 'I', unsigned int),
    T("unsigned", 'I', unsigned int),
    T("long", 'l', long),
    T("unsigned long", 'L', unsigned long),
    T("long long", 'q', long long),
    T("unsigned long long", 'Q', unsigned long long),
    T("float", 'f', float),
    T("double", 'd', double),
    T("bool", '?', _Bool),
    T("_Bool", '?', _Bool),
    T("size_t", 'N', size_t),
    T("ssize_t", 'n', ssize_t),
    T("int8_t", 'b', int8_t),
    T("uint8_t", 'B', uint8_t),
    T("int16_t", 'h', int16_t),
    T("uint16_t", 'H', uint16_t),
    T("int32_t", 'i', int32_t),
    T("uint32_t", 'I', uint32_t),
    T("int64_t", 'q', int64_t),
    T("uint64_t", 'Q', uint64_t),
    T("intptr_t", 'l', intptr_t),
    T("uintptr_t", 'L', uintptr_t),
};
#undef T

static const struct type_info *find_type(const char *name) {
  for (size_t i = 0; i < WEFT__ARRAY_SIZE(types); i++)
    if (strcmp(types[i].name, name) == 0) return &types[i];
  return NULL;
}

static weft_value *create(const char *fn, const char *type, size_t length, bool array,
                          const weft_value_options *o) {
  static const weft_value_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  const struct type_info *t = type != NULL ? find_type(type) : NULL;
  if (t == NULL) {
    weft__error(WEFT_EINVAL,
                "%s: unknown type %s%.32s%s: use a typecode (b B h H i I l L q Q f d c) or a C "
                "name (int, unsigned, long long, double, bool, size_t, int64_t, uint8_t, ...)",
                fn, type != NULL ? "'" : "", type != NULL ? type : "NULL", type != NULL ? "'" : "");
    return NULL;
  }
  if (o->raw && o->lock != NULL) {
    weft__error(WEFT_EINVAL, "%s: .raw and .lock together: a raw value has no lock", fn);
    return NULL;
  }
  if (length == 0) {
    weft__error(WEFT_EINVAL, "%s: the length must be at least 1", fn);
    return NULL;
  }
  if (length > (SIZE_MAX - DATA_OFFSET) / t->size) {
    weft__error(WEFT_EINVAL, "%s: %zu elements of %s do not fit in memory", fn, length, type);
    return NULL;
  }
  size_t map_size = DATA_OFFSET + length * t->size;
  int err = 0;
  struct weft_value *v = weft__region_block(map_size, &err);
  if (v == NULL) {
    weft__error(err == -EMFILE || err == -ENFILE ? WEFT_EMFILE : WEFT_ENOMEM,
                "%s: cannot map %zu bytes: %s", fn, map_size, weft_strerror(err));
    return NULL;
  }
  v->magic = MAGIC;
  v->map_size = map_size;
  v->length = length;
  v->elem_size = t->size;
  v->typecode = t->code;
  if (o->name != NULL) {
    snprintf(v->name, sizeof v->name, "%s", o->name);
  } else if (array) {
    snprintf(v->name, sizeof v->name, "Array(%s, %zu)", type, length);
  } else {
    snprintf(v->name, sizeof v->name, "Value(%s)", type);
  }
  if (o->lock != NULL) {
    v->lock = o->lock;
  } else if (!o->raw) {
    weft_rlock_init_opts(&v->own_lock, v->name, NULL,
                         &(const weft_lock_options){.size_ = sizeof(weft_lock_options),
                                                   .name = v->name});
    v->lock = &v->own_lock;
  }
  weft_value *h = weft__ref_add(v, WEFT__REF_VALUE, fn);
  if (h == NULL) {
    if (v->lock == &v->own_lock) weft__tsan_mutex_destroy(&v->own_lock, 0);
    weft__region_block_free(v);
  }
  return h;
}

weft_value *weft_value_new_opts(const char *type, const weft_value_options *opts) {
  return create("weft_value_new", type, 1, false, opts);
}

weft_value *weft_array_new_opts(const char *type, size_t length, const weft_value_options *opts) {
  return create("weft_array_new", type, length, true, opts);
}

/* The value behind a handle; NULL, with the error recorded, for NULL, a
 * freed value or another object. */
static weft_value *value_of(const weft_value *h, const char *fn, int *err) {
  return weft__ref_use(h, WEFT__REF_VALUE, fn, err);
}

void *weft_value_ptr(weft_value *h) {
  int err;
  weft_value *v = value_of(h, "weft_value_ptr", &err);
  return v != NULL ? (char *)v + DATA_OFFSET : NULL;
}

/* NULL for a raw value too (without recording an error). */
weft_rlock *weft_value_get_lock(weft_value *h) {
  int err;
  weft_value *v = value_of(h, "weft_value_get_lock", &err);
  return v != NULL ? v->lock : NULL;
}

size_t weft_value_length(const weft_value *h) {
  int err;
  const weft_value *v = value_of(h, "weft_value_length", &err);
  return v != NULL ? v->length : 0;
}

size_t weft_value_elem_size(const weft_value *h) {
  int err;
  const weft_value *v = value_of(h, "weft_value_elem_size", &err);
  return v != NULL ? v->elem_size : 0;
}

/* Swaps the handle *v for its value and checks the range. */
static int check_range(const char *fn, weft_value **vp, size_t start, size_t count,
                       const void *buf) {
  int err = 0;
  const weft_value *v = *vp = value_of(*vp, fn, &err);
  if (v == NULL) return err;
  if (buf == NULL) return weft__error(WEFT_EINVAL, "%s: %s: the buffer is NULL", fn, v->name);
  if (start > v->length || count > v->length - start) {
    if (start + count < start) /* wrapped around */
      return weft__error(WEFT_EINVAL, "%s: %s: %zu elements from %zu are outside [0, %zu)", fn,
                         v->name, count, start, v->length);
    return weft__error(WEFT_EINVAL, "%s: %s: elements [%zu, %zu) are outside [0, %zu)", fn,
                       v->name, start, start + count, v->length);
  }
  return 0;
}

/* Copies under the lock. A lock taken from a holder that died still gives
 * the copy, and the caller WEFT_EOWNERDEAD (its last error already says so):
 * the elements may be half-written. */
static int copy_locked(weft_value *v, void *dst, const void *src, size_t bytes) {
  if (v->lock == NULL) {
    memcpy(dst, src, bytes);
    return 0;
  }
  int err = weft_rlock_acquire(v->lock, WEFT_FOREVER);
  if (err != 0 && err != WEFT_EOWNERDEAD) return err;
  memcpy(dst, src, bytes);
  weft_rlock_release(v->lock);
  return err;
}

int weft_value_load(weft_value *v, size_t start, size_t count, void *out) {
  int err = check_range("weft_value_load", &v, start, count, out);
  if (err != 0) return err;
  const char *data = (const char *)v + DATA_OFFSET;
  return copy_locked(v, out, data + start * v->elem_size, count * v->elem_size);
}

int weft_value_store(weft_value *v, size_t start, size_t count, const void *in) {
  int err = check_range("weft_value_store", &v, start, count, in);
  if (err != 0) return err;
  char *data = (char *)v + DATA_OFFSET;
  return copy_locked(v, data + start * v->elem_size, in, count * v->elem_size);
}

int weft_value_free(weft_value *h) {
  if (h == NULL) return 0;
  weft_value *v = weft__ref_remove(h, WEFT__REF_VALUE, "weft_value_free");
  if (v == NULL) return weft_last_error_code();
  if (v->lock == &v->own_lock) {
    /* Only this process's view of the lock ends: others may hold it. */
    if (weft__dd_on) weft__dd_forget(&v->own_lock.lock);
    weft__tsan_mutex_destroy(&v->own_lock, 0);
  }
  weft__region_block_free(v);
  return 0;
}
