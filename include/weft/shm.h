/* SPDX-License-Identifier: MIT */
/* weft/shm.h — shared memory segments (Python's
 * multiprocessing.shared_memory.SharedMemory) and shared Value and Array
 * (multiprocessing.Value, Array, RawValue, RawArray).
 *
 * A segment is anonymous (a memfd: no name, inherited by the children the
 * creator forks afterwards, gone when the last process unmaps it) or named
 * (a POSIX shared memory object in /dev/shm that unrelated processes can
 * attach to). The process that created a named segment owns it: its name is
 * removed by weft_shm_unlink, and otherwise when that process exits normally
 * (even if it closed its handle), unless the name by then belongs to a newer
 * segment. Attaching never removes a name (Python's resource tracker does,
 * and breaks the creator), nor does the exit of a child the creator forked.
 * A creator killed by a signal cannot clean up; its name stays until someone
 * unlinks it.
 *
 *     weft_shm *seg = weft_shm_new(4096);                   // anonymous
 *     weft_shm *seg = weft_shm_new(4096, .name = "frames");  // named
 *     weft_shm *att = weft_shm_attach("frames");             // elsewhere
 *     memcpy(weft_shm_buf(att), data, n);
 */
#ifndef WEFT_SHM_H
#define WEFT_SHM_H

#include "common.h"
#include "sync.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- segments ---- */

/* A mapped segment, as seen by one process.
 * The pointer is an opaque handle, never an address to read: once closed,
 * every call through it (a close again included) returns WEFT_ECLOSED,
 * and a pointer to another kind of weft object gives WEFT_EINVAL. */
typedef struct weft_shm weft_shm;

/* The longest segment name, without the final NUL (NAME_MAX minus the '/'). */
#define WEFT_SHM_NAME_MAX 254

/* Options of weft_shm_new and weft_shm_attach. */
typedef struct weft_shm_options {
  size_t size_;     /* set by the macro */
  const char *name; /* weft_shm_new: NULL for an anonymous segment; a name
                       with or without its leading '/', no other '/' */
  size_t size;      /* weft_shm_attach: bytes to map, at most the segment's
                       size (0: all of it) */
} weft_shm_options;

/* Creates a zero-filled segment of size bytes and maps it. NULL and
 * weft_last_error() on failure: WEFT_EINVAL (size 0, bad name), WEFT_EEXIST
 * (the name is taken), WEFT_EMFILE, WEFT_ENOMEM. */
#define weft_shm_new(...) WEFT__SHM_NEW(__VA_ARGS__, )
#define WEFT__SHM_NEW(size, ...)                                                          \
  weft_shm_new_opts((size), &(const weft_shm_options){.size_ = sizeof(weft_shm_options),   \
                                                      __VA_ARGS__})
WEFT_API weft_shm *weft_shm_new_opts(size_t size, const weft_shm_options *opts);

/* Maps an existing named segment. NULL and weft_last_error() on failure:
 * WEFT_ENOENT (no such name), WEFT_EINVAL (bad name, .size larger than the
 * segment, or a segment of size 0), WEFT_EPERM, WEFT_EMFILE, WEFT_ENOMEM. */
#define weft_shm_attach(...) WEFT__SHM_ATTACH(__VA_ARGS__, )
#define WEFT__SHM_ATTACH(name, ...)                                                       \
  weft_shm_attach_opts((name), &(const weft_shm_options){.size_ = sizeof(weft_shm_options), \
                                                         __VA_ARGS__})
WEFT_API weft_shm *weft_shm_attach_opts(const char *name, const weft_shm_options *opts);

/* The mapped bytes (64-byte aligned), their count, and the name ("/frames",
 * or NULL for an anonymous segment). NULL / 0, with the last error set, for a
 * NULL or closed segment. */
WEFT_API void *weft_shm_buf(const weft_shm *shm);
WEFT_API size_t weft_shm_size(const weft_shm *shm);
WEFT_API const char *weft_shm_name(const weft_shm *shm);

/* Removes the segment's name so no one else can attach; mappings stay valid.
 * 0, WEFT_ENOENT if the name is already gone (a handle that unlinked once
 * never unlinks again: the name may belong to a newer segment by then),
 * WEFT_EINVAL for an anonymous segment. Any process may call it; only the
 * creator's exit does it for you. */
WEFT_API int weft_shm_unlink(weft_shm *shm);

/* Unmaps the segment in the calling process and frees the handle (invalid
 * afterwards). It does not remove the name: the creator still removes it at
 * exit. NULL is ignored. */
WEFT_API int weft_shm_close(weft_shm *shm);

/* ---- Value and Array ---- */

/* A typed value or array in shared memory, with a lock by default. Create it
 * before starting the processes that use it; the pointer is valid in every
 * child forked afterwards. As weft_shm, the pointer is a handle: freed,
 * every call through it returns WEFT_ECLOSED. */
typedef struct weft_value weft_value;

/* Options of weft_value_new and weft_array_new. */
typedef struct weft_value_options {
  size_t size_;      /* set by the macro */
  bool raw;          /* no lock (Python's RawValue / RawArray, lock=False) */
  weft_rlock *lock;  /* use this lock (in shared memory) instead of a new one */
  const char *name;  /* for reports: the lock's own (unless .lock is given) and
                        errors; copied, at most WEFT_NAME_MAX bytes. Default:
                        "Value(i)", "Array(d, 10)" */
} weft_value_options;

/* Creates a zeroed value of a C scalar type, given by Python's typecode
 * ("i", "d", "q", ...: b B h H i I l L q Q f d c) or by its C name ("int",
 * "double", "int64_t", "uint8_t", "size_t", "bool", "char", ...). NULL and
 * weft_last_error() on failure: WEFT_EINVAL (unknown type, .raw with .lock),
 * WEFT_ENOMEM. */
#define weft_value_new(...) WEFT__VALUE_NEW(__VA_ARGS__, )
#define WEFT__VALUE_NEW(type, ...)                                                        \
  weft_value_new_opts((type), &(const weft_value_options){                                \
                                  .size_ = sizeof(weft_value_options), __VA_ARGS__})
WEFT_API weft_value *weft_value_new_opts(const char *type, const weft_value_options *opts);

/* Creates a zeroed array of length elements (length >= 1), as weft_value_new. */
#define weft_array_new(...) WEFT__ARRAY_NEW(__VA_ARGS__, )
#define WEFT__ARRAY_NEW(type, length, ...)                                                \
  weft_array_new_opts((type), (length), &(const weft_value_options){                      \
                                            .size_ = sizeof(weft_value_options), __VA_ARGS__})
WEFT_API weft_value *weft_array_new_opts(const char *type, size_t length,
                                         const weft_value_options *opts);

/* The element storage (64-byte aligned), for direct use under the lock (or
 * without one for a raw value), e.g. (*(int *)weft_value_ptr(counter))++. */
WEFT_API void *weft_value_ptr(weft_value *value);

/* The lock (Python's get_lock()), or NULL for a raw value. The getters
 * here return NULL / 0, with the last error set, for a NULL or freed value. */
WEFT_API weft_rlock *weft_value_get_lock(weft_value *value);

/* Number of elements (1 for a value) and the size of one element. */
WEFT_API size_t weft_value_length(const weft_value *value);
WEFT_API size_t weft_value_elem_size(const weft_value *value);

/* Copies elements [start, start + count) out to / in from a buffer, holding
 * the lock for the copy (Python's .value, a[i] and slices); the lock is an
 * RLock, so a caller that holds it already may call them. WEFT_EINVAL for a
 * range outside the array or a NULL buffer. WEFT_EOWNERDEAD when the lock
 * was taken from a process that died holding it: the copy was still made,
 * but the elements may be half-updated (later calls return 0 again). Another
 * acquire error (WEFT_EDEADLK in the deadlock detector's error mode) is
 * returned without copying. */
WEFT_API int weft_value_load(weft_value *value, size_t start, size_t count, void *out);
WEFT_API int weft_value_store(weft_value *value, size_t start, size_t count, const void *in);

/* Unmaps the value in the calling process (invalid afterwards); other
 * processes keep theirs. NULL is ignored. */
WEFT_API int weft_value_free(weft_value *value);

#ifdef __cplusplus
}
#endif

#endif
