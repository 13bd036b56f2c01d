/* SPDX-License-Identifier: MIT */
/* ThreadSanitizer annotations for weft's own locks. Outside a TSan build
 * they compile to nothing. The prototypes and flag values are declared here
 * because the newest sanitizer/tsan_interface.h uses enum syntax that is not
 * valid C11 (docs/design.md, Traps). */
#ifndef WEFT_TSAN_H
#define WEFT_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define WEFT__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT__TSAN 1
#endif
#endif

#ifdef WEFT__TSAN
void __tsan_mutex_create(void *addr, unsigned flags);
void __tsan_mutex_destroy(void *addr, unsigned flags);
void __tsan_mutex_pre_lock(void *addr, unsigned flags);
void __tsan_mutex_post_lock(void *addr, unsigned flags, int recursion);
int __tsan_mutex_pre_unlock(void *addr, unsigned flags);
void __tsan_mutex_post_unlock(void *addr, unsigned flags);
#define WEFT__TSAN_WRITE_REENTRANT (1u << 1)
#define WEFT__TSAN_NOT_STATIC (1u << 8)
#define WEFT__TSAN_TRY_LOCK (1u << 4)
#define WEFT__TSAN_TRY_LOCK_FAILED (1u << 5)
#define WEFT__TSAN_RECURSIVE_LOCK (1u << 6)
#define WEFT__TSAN_RECURSIVE_UNLOCK (1u << 7)
/* Set in a child forked from a process with more than one thread. TSan
 * turns itself off there (it enables its ignores, as some of its own
 * mutexes may have been held by other threads at the fork), but the
 * annotations still reach its internals: one that must allocate sync state
 * waits forever on such a mutex. Seen as a process pool worker hanging in
 * its first lock. So weft stops annotating in that child. */
extern _Bool weft__tsan_off;
#define WEFT__TSAN_CALL(call) (__builtin_expect(weft__tsan_off, 0) ? (void)0 : (void)(call))
#define weft__tsan_mutex_create(a, f) WEFT__TSAN_CALL(__tsan_mutex_create((a), (f)))
#define weft__tsan_mutex_destroy(a, f) WEFT__TSAN_CALL(__tsan_mutex_destroy((a), (f)))
#define weft__tsan_pre_lock(a, f) WEFT__TSAN_CALL(__tsan_mutex_pre_lock((a), (f)))
#define weft__tsan_post_lock(a, f, r) WEFT__TSAN_CALL(__tsan_mutex_post_lock((a), (f), (r)))
#define weft__tsan_pre_unlock(a, f) (weft__tsan_off ? 0 : __tsan_mutex_pre_unlock((a), (f)))
#define weft__tsan_post_unlock(a, f) WEFT__TSAN_CALL(__tsan_mutex_post_unlock((a), (f)))
#else
#define WEFT__TSAN_WRITE_REENTRANT 0u
#define WEFT__TSAN_NOT_STATIC 0u
#define WEFT__TSAN_TRY_LOCK 0u
#define WEFT__TSAN_TRY_LOCK_FAILED 0u
#define WEFT__TSAN_RECURSIVE_LOCK 0u
#define WEFT__TSAN_RECURSIVE_UNLOCK 0u
static inline void weft__tsan_mutex_create(void *a, unsigned f) { (void)a, (void)f; }
static inline void weft__tsan_mutex_destroy(void *a, unsigned f) { (void)a, (void)f; }
static inline void weft__tsan_pre_lock(void *a, unsigned f) { (void)a, (void)f; }
static inline void weft__tsan_post_lock(void *a, unsigned f, int r) { (void)a, (void)f, (void)r; }
static inline int weft__tsan_pre_unlock(void *a, unsigned f) { return (void)a, (void)f, 0; }
static inline void weft__tsan_post_unlock(void *a, unsigned f) { (void)a, (void)f; }
#endif

/* A sequentially consistent fence. ThreadSanitizer does not model fences
 * (GCC refuses them there); a sequentially consistent read-modify-write,
 * a full barrier on x86, stands in for it in that build. */
static inline void weft__fence(void) {
#ifdef WEFT__TSAN
  int any = 0;
  __atomic_fetch_or(&any, 0, __ATOMIC_SEQ_CST);
#else
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

#endif
