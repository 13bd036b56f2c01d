/* SPDX-License-Identifier: MIT */
/* Internal helpers shared by every weft source file. Nothing here is API. */
#ifndef WEFT_INTERNAL_H
#define WEFT_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>

#include "weft/common.h"
#include "weft/error.h"

/* Records code and a formatted sentence as the calling thread's last error
 * and returns code, so a failing path reads `return weft__error(...)`. */
/* What the backends built as libraries of their own (weft_mpi) call:
 * exported from libweft, never part of its public API. */
#define WEFT__BACKEND_API __attribute__((visibility("default")))

WEFT__BACKEND_API int weft__error(int code, const char *fmt, ...) WEFT_PRINTF(2, 3);

/* An absolute CLOCK_MONOTONIC time in nanoseconds; WEFT__NEVER for none. */
typedef int64_t weft__deadline;
#define WEFT__NEVER INT64_MAX

/* Converts a timeout in seconds into a deadline by the rule of
 * weft/common.h: WEFT__NEVER for WEFT_FOREVER or above 1e9 s, one that has
 * already passed for 0 or less. Returns WEFT_EINVAL for NaN. */
int weft__deadline_from(double timeout, weft__deadline *out);

/* Whether a timeout waits forever (WEFT_FOREVER, or above 1e9 s: 31 years).
 * Every other timeout <= 0 does not wait at all. */
static inline bool weft__waits_forever(double timeout) { return timeout > 1e9; }

/* The timeout left until a deadline, for a call that takes seconds:
 * WEFT_FOREVER for WEFT__NEVER, 0 once it has passed. */
double weft__timeout_left(weft__deadline deadline);

/* The calling process's pid, kept by the fork handler (getpid() is a
 * system call in current glibc). */
extern pid_t weft__pid;

/* The calling thread's kernel thread id, once asked; 0 before. The fork
 * handler resets the forking thread's copy in the child. */
extern _Thread_local pid_t weft__tls_tid __attribute__((tls_model("initial-exec")));

/* For a thread that forked (and so lives on in the child): the pids and
 * owner tokens (below) it had in its ancestors, newest first, so that locks
 * it took there before the fork are still its own. Empty in every other
 * thread. */
#define WEFT__LINEAGE_MAX 8
struct weft__lineage {
  int n;
  pid_t pid[WEFT__LINEAGE_MAX];
  uint32_t owner[WEFT__LINEAGE_MAX];
};
extern _Thread_local struct weft__lineage weft__tls_lineage
    __attribute__((tls_model("initial-exec")));
/* The lineage of the thread that forked this process, for every thread of
 * it (empty in the first process). */
extern struct weft__lineage weft__proc_lineage;

/* The calling thread's kernel thread id. */
pid_t weft__tid_slow(void);
static inline pid_t weft__tid(void) {
  pid_t tid = weft__tls_tid;
  return tid != 0 ? tid : weft__tid_slow();
}

/* Which thread took a lock, as stored in weft_lock.owner: the kernel thread
 * id (below 2^22, the kernel's PID_MAX_LIMIT) and, above it, how many times
 * the thread has forked. The count tells a lock in shared memory that the
 * parent took *after* forking a child from one taken before: the child
 * continues the forking thread and owns only the latter. The count wraps
 * (mod 1024), so "before" means up to 511 forks before. */
#define WEFT__OWNER_TID_BITS 22
#define WEFT__OWNER_TID(owner) ((pid_t)((owner) & ((1u << WEFT__OWNER_TID_BITS) - 1)))
#define WEFT__OWNER_FORKS_MASK ((1u << (32 - WEFT__OWNER_TID_BITS)) - 1)
extern _Thread_local uint32_t weft__tls_forks __attribute__((tls_model("initial-exec")));

/* What the lock fast paths read of the calling thread, in one block: each
 * thread-local variable of a shared library costs a load of its offset
 * first, and these are read on every acquire. */
struct weft__ls_rec;
struct weft__dd_thread;
struct weft__tls_hot {
  uint32_t owner;                  /* the owner token (below); 0 until the tid is known */
  struct weft__ls_rec *ls_last;    /* lockstat.h: the record used last */
  struct weft__dd_thread *dd_self; /* deadlock.h: the detector's state */
};
extern _Thread_local struct weft__tls_hot weft__hot __attribute__((tls_model("initial-exec")));

static inline uint32_t weft__owner_token(void) {
  uint32_t t = weft__hot.owner;
  if (__builtin_expect(t == 0, 0)) {
    weft__tid_slow();
    t = weft__hot.owner;
  }
  return t;
}

/* Turn thread cancellation off around calls that block in cancellation
 * points (waitid, ppoll, pthread_cond_wait, write) while weft's state is
 * half-changed: cancelled there, a thread would leave it broken for good. */
int weft__nocancel_begin(void);
void weft__nocancel_end(int old_state);

/* A pause in a spin-wait loop: lets the sibling hardware thread run and
 * saves power. */
static inline void weft__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Whether a deadline from weft__deadline_from has passed (never for
 * WEFT__NEVER; at once for a timeout of 0 or less). */
bool weft__deadline_passed(weft__deadline deadline);

/* Marks code a forked child runs before and after its target. Such
 * functions are placed together (.text.hot.weft, which the linker puts with
 * .text.hot), so a child faults in as few code pages as possible: each one
 * costs a start microseconds. The section is named, or a function that ends
 * in _exit would be placed with the cold code. */
#define WEFT__HOT __attribute__((hot, section(".text.hot.weft")))

/* Marks a large static array that a start never writes (the dump's
 * buffers, the actions of replaced signal handlers, the object registry's
 * table of chunks, of which lookups read the first few). x86-64's linker
 * scripts place .lbss after .bss, so the small variables a start writes --
 * the locks the fork handlers hold, the registries' heads and counts --
 * stay together in a page or two instead of being spread between such
 * arrays: a fork leaves every page shared, and each one written afterwards
 * is copied, in the parent and in the child. Not under AddressSanitizer,
 * which leaves variables in sections of their own unguarded. */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define WEFT__COLD_BSS __attribute__((section(".lbss.weft")))
#else
#define WEFT__COLD_BSS
#endif

#define WEFT__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* process.c: a dup of a started child's pidfd (for process pools, which
 * poll many at once), or a negative code. */
struct weft_process;
int weft__process_dup_pidfd(struct weft_process h);

struct weft_mpqueue;
/* mpqueue.c: the next message of a queue, as weft_mpqueue_get, but read where it lies
 * in the ring when it lies there whole: data points there and the getters'
 * side stays locked (held > 0) until weft__mpqueue_view_done takes the
 * message. Otherwise it is copied into buf (held 0). For a queue with one
 * getter that may die holding it (a pool worker's inbox, thrown away with
 * its worker). */
struct weft__mpview {
  const void *data;
  size_t len;
  uint64_t held;
};
int weft__mpqueue_get_view(struct weft_mpqueue *q, void *buf, size_t cap,
                           struct weft__mpview *view, double timeout);
void weft__mpqueue_view_done(struct weft_mpqueue *q, struct weft__mpview *view);
/* mpqueue.c: lets a new queue rewind, before it is shared. */
void weft__mpqueue_rewinds(struct weft_mpqueue *q);
/* mpqueue.c: whether a getter sleeps on q, waiting for a message. */
bool weft__mpqueue_getter_asleep(struct weft_mpqueue *q);
/* Bytes written into place in pieces, in order: fn(arg, dst, n) writes the
 * next n of them at dst. */
struct weft__fill {
  void (*fn)(void *arg, unsigned char *dst, size_t n);
  void *arg;
};
/* mpqueue.c: weft_mpqueue_put of one message made of head_len bytes at
 * head followed by len bytes written by fill. */
int weft__mpqueue_put_fill(struct weft_mpqueue *q, const void *head, size_t head_len,
                           const struct weft__fill *fill, size_t len, double timeout);

/* The start method's canonical name ("fork", "spawn", "forkserver") for
 * method, or the default's for NULL; NULL (WEFT_EINVAL recorded for call)
 * for an unknown name. */
const char *weft__start_method_name(const char *method, const char *call);

/* process.c: runs fn(arg) on a thread that lives as long as the process
 * (the calling thread if it is the main thread, else weft's forker
 * thread) and returns its result: a child made there is not killed by
 * PR_SET_PDEATHSIG when the thread that asked for it exits. */
pid_t weft__process_long_lived(pid_t (*fn)(void *), void *arg);

#endif
