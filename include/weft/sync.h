/* SPDX-License-Identifier: MIT */
/* weft/sync.h — Python's threading synchronisation primitives: Lock, RLock,
 * Condition, Semaphore, BoundedSemaphore, Event and Barrier.
 *
 * Each is a plain struct that the caller owns, with a static initialiser
 * (WEFT_LOCK_INIT, ...) or an init function. They hold no pointer that is
 * valid in one process only, and their futexes are process-shared, so the
 * same object works between threads and, placed in memory from
 * weft_shared_alloc() before fork, between processes.
 *
 * Timeouts follow weft's rule (common.h): seconds as a double, WEFT_FOREVER
 * waits for ever, 0 or less does not wait, NaN is WEFT_EINVAL. An acquire
 * that does not get the object returns WEFT_ETIMEDOUT, whether it was asked
 * not to wait or its timeout ran out.
 *
 * Names are optional and only used in reports. A name is a string literal (or
 * any string that outlives the object and, for objects shared with children,
 * lives in memory they inherit).
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The registered waiters of a primitive that may be shared between
 * processes: how many, and the pid of their process while they all belong
 * to one (bit 31: they belong to several). weft reads and writes the two
 * as one 8-byte-aligned 64-bit word, count in the low half. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define WEFT__WAITER_SET      \
  uint32_t waiter_procs_;     \
  uint32_t waiters
#else
#define WEFT__WAITER_SET      \
  uint32_t waiters;           \
  uint32_t waiter_procs_
#endif

/* ---- shared memory for primitives used between processes ---- */

/* Maps size bytes of zeroed memory shared with every child forked after the
 * call (MAP_SHARED | MAP_ANONYMOUS), aligned to 64 bytes. NULL and
 * weft_last_error() on failure. */
WEFT_API void *weft_shared_alloc(size_t size);

/* Unmaps memory from weft_shared_alloc in the calling process. NULL is
 * ignored; WEFT_ECLOSED for a block already freed or a pointer that did not
 * come from weft_shared_alloc. */
WEFT_API int weft_shared_free(void *ptr);

/* ---- Lock ---- */

/* A Lock: not owned by a thread, so any thread may release it (as in
 * Python). The word holds the pid of the holding process, which lets a
 * waiter notice that a holder process died. */
typedef struct weft_lock {
  uint32_t word;       /* holder pid (0: unlocked) | flags in bits 29-31 */
  uint32_t owner;      /* last acquirer: kernel thread id | its fork count << 22; 0 if unlocked */
  WEFT__WAITER_SET;    /* threads asleep or about to sleep on seq */
  uint32_t seq;        /* futex the waiters sleep on: changed by each wake-up */
  uint32_t last;       /* the last acquirer, as owner, kept after release */
  uint32_t dd_node;    /* deadlock detector's serial for this lock; 0: not seen since init */
  uint32_t layout;     /* the program layout name and site point into; 0: any */
  uint64_t dd_prev;    /* deadlock detector: a lock known to be taken before this one */
  const char *name;    /* optional, for reports */
  const char *site;    /* where it was initialised, for reports */
} weft_lock;

/* Options of weft_lock_init. */
typedef struct weft_lock_options {
  size_t size_;     /* set by the macro */
  const char *name; /* default: the expression given to weft_lock_init */
} weft_lock_options;

/* A statically initialised, unlocked Lock. */
#define WEFT_LOCK_INIT {0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, WEFT__SITE}
/* The same with a name. */
#define WEFT_LOCK_INIT_NAMED(name) {0, 0, 0, 0, 0, 0, 0, 0, 0, (name), WEFT__SITE}

/* Initialises an unlocked Lock, e.g. weft_lock_init(&lock) or
 * weft_lock_init(&l, .name = "accounts"). */
#define weft_lock_init(...) WEFT__LOCK_INIT(__VA_ARGS__, )
#define WEFT__LOCK_INIT(lock, ...)                                                        \
  weft_lock_init_opts((lock), #lock, WEFT__SITE,                                          \
                      &(const weft_lock_options){.size_ = sizeof(weft_lock_options), __VA_ARGS__})
WEFT_API int weft_lock_init_opts(weft_lock *lock, const char *expr, const char *site,
                                 const weft_lock_options *opts);

/* Acquires the lock, waiting at most timeout seconds (WEFT_FOREVER: for ever;
 * 0 or less: only if free now). Returns 0 once acquired, WEFT_ETIMEDOUT if not,
 * WEFT_EOWNERDEAD if acquired from a holder process that died (the data it
 * protected may be inconsistent), WEFT_EINVAL for a NaN timeout. */
WEFT_API int weft_lock_acquire(weft_lock *lock, double timeout);
/* The same, naming the call site for deadlock reports; the macro below
 * passes "file.c:line" (call the function as (weft_lock_acquire)(...) to
 * take its address). */
WEFT_API int weft_lock_acquire_at(weft_lock *lock, double timeout, const char *site);
#define weft_lock_acquire(lock, timeout) weft_lock_acquire_at((lock), (timeout), WEFT__SITE)

/* Releases the lock; any thread may. WEFT_EPERM if it is not locked. */
WEFT_API int weft_lock_release(weft_lock *lock);

/* Returns whether the lock is held by anyone. */
WEFT_API bool weft_lock_locked(const weft_lock *lock);

/* Ends the lock's life (before its memory is freed or reused): WEFT_EBUSY
 * while it is locked or waited for. Until weft_lock_init makes it new, any
 * use, and a second destroy, returns WEFT_ECLOSED (false for
 * weft_lock_locked). The same holds for every primitive's destroy below.
 * Every function here returns WEFT_EINVAL for a NULL object (false for the
 * predicates, with weft_last_error() set). */
WEFT_API int weft_lock_destroy(weft_lock *lock);

/* ---- RLock ---- */

/* A reentrant lock: the owning thread may acquire it again; each acquire
 * needs a release, and only the owner may release. */
typedef struct weft_rlock {
  weft_lock lock;
  uint32_t count; /* recursion depth of the owner */
  uint32_t pad_;
} weft_rlock;

#define WEFT_RLOCK_INIT {WEFT_LOCK_INIT, 0, 0}
#define WEFT_RLOCK_INIT_NAMED(name) {WEFT_LOCK_INIT_NAMED(name), 0, 0}

#define weft_rlock_init(...) WEFT__RLOCK_INIT(__VA_ARGS__, )
#define WEFT__RLOCK_INIT(rlock, ...)                                                      \
  weft_rlock_init_opts((rlock), #rlock, WEFT__SITE,                                       \
                       &(const weft_lock_options){.size_ = sizeof(weft_lock_options), __VA_ARGS__})
WEFT_API int weft_rlock_init_opts(weft_rlock *rlock, const char *expr, const char *site,
                                  const weft_lock_options *opts);

/* Acquires the lock, or adds one level if the calling thread owns it.
 * Returns as weft_lock_acquire. */
WEFT_API int weft_rlock_acquire(weft_rlock *rlock, double timeout);
WEFT_API int weft_rlock_acquire_at(weft_rlock *rlock, double timeout, const char *site);
#define weft_rlock_acquire(rlock, timeout) weft_rlock_acquire_at((rlock), (timeout), WEFT__SITE)

/* Removes one level; the lock is free when the count reaches 0. WEFT_EPERM
 * if the calling thread does not own it. */
WEFT_API int weft_rlock_release(weft_rlock *rlock);

/* Returns whether the calling thread owns the lock. */
WEFT_API bool weft_rlock_is_owned(const weft_rlock *rlock);

/* Ends the RLock's life, as weft_lock_destroy. */
WEFT_API int weft_rlock_destroy(weft_rlock *rlock);

/* ---- Condition ---- */

/* A condition variable over a Lock, an RLock, or (by default, as in Python)
 * an RLock of its own. */
typedef struct weft_cond {
  weft_rlock own;     /* used when no lock was given */
  void *lock;         /* the weft_lock or weft_rlock given, or NULL */
  uint32_t kind;      /* 0: own RLock, 1: a Lock, 2: an RLock */
  uint32_t seq;       /* futex: bumped by every notify */
  uint64_t wt;        /* waiters << 32 | wake-ups granted by notify, not yet taken */
  WEFT__WAITER_SET;   /* the waiters' processes (wt counts them for notify) */
} weft_cond;

typedef struct weft_cond_options {
  size_t size_;
  weft_lock *lock;   /* use this Lock */
  weft_rlock *rlock; /* or this RLock; neither: an RLock of its own */
  const char *name;
} weft_cond_options;

#define WEFT_COND_INIT {WEFT_RLOCK_INIT, NULL, 0, 0, 0, 0, 0}

/* Initialises a Condition, e.g. weft_cond_init(&c, .lock = &mutex). Giving
 * both .lock and .rlock is WEFT_EINVAL. */
#define weft_cond_init(...) WEFT__COND_INIT(__VA_ARGS__, )
#define WEFT__COND_INIT(cond, ...)                                                        \
  weft_cond_init_opts((cond), #cond, WEFT__SITE,                                          \
                      &(const weft_cond_options){.size_ = sizeof(weft_cond_options), __VA_ARGS__})
WEFT_API int weft_cond_init_opts(weft_cond *cond, const char *expr, const char *site,
                                 const weft_cond_options *opts);

/* Acquires / releases the condition's lock. */
WEFT_API int weft_cond_acquire(weft_cond *cond, double timeout);
WEFT_API int weft_cond_acquire_at(weft_cond *cond, double timeout, const char *site);
#define weft_cond_acquire(cond, timeout) weft_cond_acquire_at((cond), (timeout), WEFT__SITE)
WEFT_API int weft_cond_release(weft_cond *cond);

/* Releases the lock (all levels of an RLock), waits until notified or the
 * timeout passes, and re-acquires the lock (restoring the RLock's count).
 * Returns 0 if notified, WEFT_ETIMEDOUT, WEFT_EPERM if the caller does not
 * hold the lock, WEFT_EOWNERDEAD (notified or not, the lock held again) if
 * a process that held the lock meanwhile died holding it. */
WEFT_API int weft_cond_wait(weft_cond *cond, double timeout);
/* The same, naming the call site for dumps (weft/dump.h); the macro passes
 * "file.c:line" (call (weft_cond_wait)(...) for the function itself). The
 * other waits below have an _at form and macro alike. */
WEFT_API int weft_cond_wait_at(weft_cond *cond, double timeout, const char *site);
#define weft_cond_wait(cond, timeout) weft_cond_wait_at((cond), (timeout), WEFT__SITE)

/* Waits until predicate(arg) is true or the timeout passes, re-checking after
 * each wake-up. Returns the predicate's last value (1 or 0), or WEFT_EPERM. */
WEFT_API int weft_cond_wait_for(weft_cond *cond, bool (*predicate)(void *arg), void *arg,
                                double timeout);
WEFT_API int weft_cond_wait_for_at(weft_cond *cond, bool (*predicate)(void *arg), void *arg,
                                   double timeout, const char *site);
#define weft_cond_wait_for(cond, predicate, arg, timeout) \
  weft_cond_wait_for_at((cond), (predicate), (arg), (timeout), WEFT__SITE)

/* Wakes up to n threads waiting now (n >= 0). WEFT_EPERM if the caller does
 * not hold the lock. */
WEFT_API int weft_cond_notify(weft_cond *cond, int n);

/* Wakes every thread waiting now. */
WEFT_API int weft_cond_notify_all(weft_cond *cond);

/* Ends the condition's life (and its own RLock's), as weft_lock_destroy:
 * WEFT_EBUSY while threads wait on it or its own lock is held. A Lock or
 * RLock given at init is left alone. */
WEFT_API int weft_cond_destroy(weft_cond *cond);

/* ---- Semaphore and BoundedSemaphore ---- */

typedef struct weft_semaphore {
  uint32_t value;   /* futex */
  uint32_t bound;   /* BoundedSemaphore: the largest value */
  WEFT__WAITER_SET; /* threads blocked in acquire */
  uint32_t bounded; /* 1 for a BoundedSemaphore */
  uint32_t layout;  /* the program layout name points into; 0: any */
  const char *name;
} weft_semaphore;

typedef struct weft_semaphore_options {
  size_t size_;
  bool bounded;  /* a BoundedSemaphore: release above the initial value fails */
  const char *name;
} weft_semaphore_options;

#define WEFT_SEMAPHORE_INIT(value) {(uint32_t)(value), 0, 0, 0, 0, 0, NULL}
#define WEFT_BOUNDED_SEMAPHORE_INIT(value) {(uint32_t)(value), (uint32_t)(value), 0, 0, 1, 0, NULL}

/* Initialises a semaphore with an initial value (Python's default is 1),
 * e.g. weft_semaphore_init(&s, 3) or weft_semaphore_init(&s, 3, .bounded =
 * true). A negative value is WEFT_EINVAL. */
#define weft_semaphore_init(...) WEFT__SEMAPHORE_INIT(__VA_ARGS__, )
#define WEFT__SEMAPHORE_INIT(sem, value, ...)                                             \
  weft_semaphore_init_opts((sem), (value),                                                \
                           &(const weft_semaphore_options){                                \
                               .size_ = sizeof(weft_semaphore_options), __VA_ARGS__})
WEFT_API int weft_semaphore_init_opts(weft_semaphore *sem, int value,
                                      const weft_semaphore_options *opts);

/* Takes one unit, waiting at most timeout seconds. 0 or WEFT_ETIMEDOUT. */
WEFT_API int weft_semaphore_acquire(weft_semaphore *sem, double timeout);
WEFT_API int weft_semaphore_acquire_at(weft_semaphore *sem, double timeout, const char *site);
#define weft_semaphore_acquire(sem, timeout) weft_semaphore_acquire_at((sem), (timeout), WEFT__SITE)

/* Adds n units (n >= 1) and wakes up to n waiters. A BoundedSemaphore that
 * would go above its initial value fails with WEFT_EOVERFLOW and releases
 * nothing. */
WEFT_API int weft_semaphore_release(weft_semaphore *sem, int n);

/* The current value, or a negative code (WEFT_EINVAL, WEFT_ECLOSED). */
WEFT_API int weft_semaphore_value(const weft_semaphore *sem);

/* Ends the semaphore's life, as weft_lock_destroy: WEFT_EBUSY while
 * threads wait in acquire. */
WEFT_API int weft_semaphore_destroy(weft_semaphore *sem);

/* ---- Event ---- */

typedef struct weft_event {
  uint32_t word;    /* futex: bit 0 the flag, the rest counts set() calls */
  uint32_t waiters;
} weft_event;

#define WEFT_EVENT_INIT {0, 0}

WEFT_API int weft_event_init(weft_event *event);
/* Sets the flag and wakes every waiter. */
WEFT_API int weft_event_set(weft_event *event);
/* Clears the flag. */
WEFT_API int weft_event_clear(weft_event *event);
WEFT_API bool weft_event_is_set(const weft_event *event);
/* Waits until the flag is set: 0, or WEFT_ETIMEDOUT. */
WEFT_API int weft_event_wait(weft_event *event, double timeout);
WEFT_API int weft_event_wait_at(weft_event *event, double timeout, const char *site);
#define weft_event_wait(event, timeout) weft_event_wait_at((event), (timeout), WEFT__SITE)
/* Ends the event's life, as weft_lock_destroy: WEFT_EBUSY while threads
 * wait. */
WEFT_API int weft_event_destroy(weft_event *event);

/* ---- Barrier ---- */

/* The action the last thread to arrive runs before the others are released;
 * a non-zero return breaks the barrier for everyone. */
typedef int (*weft_barrier_action)(void *arg);

typedef struct weft_barrier {
  weft_lock lock;      /* guards the fields below */
  uint32_t seq;        /* futex: bumped whenever waiters should look again */
  uint32_t parties;
  uint32_t count;      /* threads waiting in the current cycle */
  uint32_t generation; /* cycles ended, completed or broken */
  uint32_t draining;   /* waiters of the last ended cycle yet to leave */
  uint32_t ended_broken; /* how the last cycle ended */
  uint32_t broken;     /* broken until reset */
  uint32_t init_pid;   /* the process that initialised it; 0: a static initialiser */
  uint32_t action_image; /* where the action's object loaded (address >> 12) when it was set */
  weft_barrier_action action;
  void *arg;
  double timeout;      /* the timeout of a wait given WEFT_DEFAULT */
} weft_barrier;

typedef struct weft_barrier_options {
  size_t size_;
  weft_barrier_action action;
  void *arg;
  /* The timeout of a wait given WEFT_DEFAULT, > 0; 0 (left out) or
   * WEFT_FOREVER: none. Negative or NaN: WEFT_EINVAL. */
  double timeout;
} weft_barrier_options;

#define WEFT_BARRIER_INIT(parties) \
  {WEFT_LOCK_INIT, 0, (parties), 0, 0, 0, 0, 0, 0, 0, NULL, NULL, WEFT_FOREVER}

/* Initialises a barrier for parties threads (parties >= 1, else WEFT_EINVAL),
 * e.g. weft_barrier_init(&b, 3, .action = report, .timeout = 5). */
#define weft_barrier_init(...) WEFT__BARRIER_INIT(__VA_ARGS__, )
#define WEFT__BARRIER_INIT(barrier, parties, ...)                                         \
  weft_barrier_init_opts((barrier), (parties), &(const weft_barrier_options){             \
                                                   .size_ = sizeof(weft_barrier_options),  \
                                                   __VA_ARGS__})
WEFT_API int weft_barrier_init_opts(weft_barrier *barrier, int parties,
                                    const weft_barrier_options *opts);

/* Waits until parties threads have called wait. Returns a distinct index in
 * 0..parties-1 (the last to arrive gets parties-1 and runs the action).
 * WEFT_EBROKEN if the barrier is or becomes broken (abort, reset while
 * waiting, a failed action, or a timeout -- which also breaks it for all).
 * timeout: as every timeout (common.h), so one <= 0 breaks the barrier unless
 * the caller is the last to arrive; WEFT_DEFAULT uses the barrier's default
 * (Python's wait(None)). */
WEFT_API int weft_barrier_wait(weft_barrier *barrier, double timeout);
WEFT_API int weft_barrier_wait_at(weft_barrier *barrier, double timeout, const char *site);
#define weft_barrier_wait(barrier, timeout) weft_barrier_wait_at((barrier), (timeout), WEFT__SITE)

/* Returns the barrier to its empty state; threads waiting get WEFT_EBROKEN. */
WEFT_API int weft_barrier_reset(weft_barrier *barrier);

/* Breaks the barrier: current and future waits get WEFT_EBROKEN until reset. */
WEFT_API int weft_barrier_abort(weft_barrier *barrier);

/* The number of parties, or a negative code (WEFT_EINVAL, WEFT_ECLOSED). */
WEFT_API int weft_barrier_parties(const weft_barrier *barrier);
/* The number of threads waiting in the current cycle, or a negative code. */
WEFT_API int weft_barrier_n_waiting(weft_barrier *barrier);
/* Whether the barrier is broken. */
WEFT_API bool weft_barrier_broken(weft_barrier *barrier);

/* Ends the barrier's life, as weft_lock_destroy: WEFT_EBUSY while threads
 * wait at it. */
WEFT_API int weft_barrier_destroy(weft_barrier *barrier);

/* ---- shared between processes: multiprocessing.Lock(), RLock(), ... ----
 *
 * Each of these allocates the primitive in memory shared with every child
 * forked after the call (as weft_shared_alloc does) and initialises it as
 * its init function would, so it works across fork as Python's
 * multiprocessing primitives do. They return NULL and set weft_last_error()
 * on failure (WEFT_EINVAL, WEFT_ENOMEM). The matching free unmaps the
 * object in the calling process only (each process that has it may free its
 * own view; the memory goes with the last); freeing NULL does nothing, and
 * a second free is WEFT_ECLOSED. A primitive initialised in private memory
 * (an ordinary global, the stack, malloc) is copied by fork instead: each
 * process then has its own, and a waiter in one is never woken by another. */

/* A Lock (multiprocessing.Lock()), e.g. weft_lock_new(.name = "accounts"). */
#define weft_lock_new(...)                                                                \
  weft_lock_new_opts(WEFT__SITE, &(const weft_lock_options){.size_ = sizeof(weft_lock_options), \
                                                            __VA_ARGS__})
WEFT_API weft_lock *weft_lock_new_opts(const char *site, const weft_lock_options *opts);
WEFT_API int weft_lock_free(weft_lock *lock);

/* An RLock (multiprocessing.RLock()). */
#define weft_rlock_new(...)                                                               \
  weft_rlock_new_opts(WEFT__SITE, &(const weft_lock_options){                             \
                                      .size_ = sizeof(weft_lock_options), __VA_ARGS__})
WEFT_API weft_rlock *weft_rlock_new_opts(const char *site, const weft_lock_options *opts);
WEFT_API int weft_rlock_free(weft_rlock *rlock);

/* A Condition (multiprocessing.Condition()); a .lock or .rlock given must be
 * shared too (from weft_lock_new / weft_rlock_new). */
#define weft_cond_new(...)                                                                \
  weft_cond_new_opts(WEFT__SITE, &(const weft_cond_options){                              \
                                     .size_ = sizeof(weft_cond_options), __VA_ARGS__})
WEFT_API weft_cond *weft_cond_new_opts(const char *site, const weft_cond_options *opts);
WEFT_API int weft_cond_free(weft_cond *cond);

/* A Semaphore (multiprocessing.Semaphore(value)), or with .bounded = true a
 * BoundedSemaphore; a negative value is WEFT_EINVAL. */
#define weft_semaphore_new(...) WEFT__SEMAPHORE_NEW(__VA_ARGS__, )
#define WEFT__SEMAPHORE_NEW(value, ...)                                                   \
  weft_semaphore_new_opts((value), &(const weft_semaphore_options){                       \
                                       .size_ = sizeof(weft_semaphore_options), __VA_ARGS__})
WEFT_API weft_semaphore *weft_semaphore_new_opts(int value, const weft_semaphore_options *opts);
WEFT_API int weft_semaphore_free(weft_semaphore *sem);

/* An Event (multiprocessing.Event()). */
WEFT_API weft_event *weft_event_new(void);
WEFT_API int weft_event_free(weft_event *event);

/* A Barrier (multiprocessing.Barrier(parties)); parties < 1 is WEFT_EINVAL.
 * Its .action runs in whichever process arrives last, and its .arg must
 * point into shared memory to mean the same data in every process. */
#define weft_barrier_new(...) WEFT__BARRIER_NEW(__VA_ARGS__, )
#define WEFT__BARRIER_NEW(parties, ...)                                                   \
  weft_barrier_new_opts((parties), &(const weft_barrier_options){                         \
                                       .size_ = sizeof(weft_barrier_options), __VA_ARGS__})
WEFT_API weft_barrier *weft_barrier_new_opts(int parties, const weft_barrier_options *opts);
WEFT_API int weft_barrier_free(weft_barrier *barrier);

#ifdef __cplusplus
}
#endif

#endif
