/* SPDX-License-Identifier: MIT */
/* What pool.c (futures, thread pools, map, imap, as_completed) and ppool.c
 * (process pools) share. */
#ifndef WEFT_POOL_INTERNAL_H
#define WEFT_POOL_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "internal.h"
#include "weft/pool.h"
#include "weft/process.h"
#include "weft/queue.h"
#include "weft/thread.h"

/* Future states; every state from FS_OK on is final. */
enum {
  FS_PENDING,
  FS_RUNNING,   /* taken by a worker (in a process pool: handed to one) */
  FS_OK,        /* finished with a result */
  FS_FAILED,    /* the task returned its own code */
  FS_CANCELLED,
  FS_BROKEN,    /* its pool broke before it ran */
  FS_DIED,      /* its worker process died while running it */
  FS_TIMEDOUT,  /* it ran past its limit and its worker was killed */
};

/* A bytes task as it travels to a worker process: this header, then the
 * argument (in_len bytes). A chunk of a map carries n items of item_size
 * bytes and gets back n int32 codes followed by n results of result_size
 * bytes; a single task's result is whatever it writes. */
enum { WEFT__CALL_SINGLE = 1, WEFT__CALL_CHUNK = 2 };
typedef struct weft__call {
  uint64_t seq;          /* the pool's task number */
  weft_bytes_task fn;    /* valid in a worker: it is a fork of the pool's process */
  uint32_t kind;
  uint32_t n;            /* items of a chunk */
  uint64_t base;         /* index of a chunk's first item */
  uint64_t ticket;       /* process pools: the worker's number for it (see ppool.c) */
  uint64_t item_size, result_size;
  uint64_t in_len;
} weft__call;

/* Runs a call whose argument is at in, writing its result at out (room
 * bytes) and its length in *out_len. Stores the index of each item of a
 * chunk before running it in *item when item is not NULL (a worker's
 * shared slot, which holds a single task's base already, so the pool can
 * name the item that crashed). */
int weft__call_run(const weft__call *c, const void *in, void *out, size_t room, size_t *out_len,
                   uint64_t *item);

/* The room a chunk of n items needs for its results. */
static inline size_t weft__chunk_out_len(size_t n, size_t result_size) {
  return n * (sizeof(int32_t) + result_size);
}

struct weft__watch;
struct weft__callback;

struct future {
  uint64_t id;
  int refs;
  uint32_t state;    /* futex */
  uint32_t waiters;  /* threads in result() */
  weft_task fn;      /* a pointer task, or NULL */
  void *arg;
  void *result;
  int task_err;
  pid_t pid;         /* the process that made it: a forked child cannot use it */
  /* A bytes task: its call (header and argument, in one block) and, once
   * it succeeded, its result bytes. */
  weft__call *call;
  void *bytes;
  size_t bytes_len;
  /* Process pools: the queue the task waits in, its time limit, and where
   * callbacks run (NULL: in the thread that finishes the future). */
  struct future *next;
  double timeout;
  weft_queue *cb_queue;
  struct pool *owner;  /* a process pool (holds a reference), or NULL */
  uint64_t *gate;      /* under the pool's lock: its ticket word while a worker holds it */
  char *report;      /* why it failed (FS_DIED, FS_TIMEDOUT, FS_CANCELLED), or NULL */
  pthread_mutex_t cb_lock;
  bool cb_fired;     /* under cb_lock: callbacks added now run at once */
  struct weft__callback *cbs;
  struct weft__watch *watches;
};

/* A new pending future with two references: the handle's and the task's. */
struct future *weft__future_new(weft_task fn, void *arg);
void weft__future_put(struct future *f);
struct future *weft__future_get(weft_future h, const char *fn);
/* Moves a pending future to a final state; false if it had left PENDING. */
bool weft__future_settle_pending(struct future *f, uint32_t to);
/* Moves a pending or running future to a final state, once: false if it
 * was final already. */
bool weft__future_settle(struct future *f, uint32_t to);
/* Runs the callbacks of a finished future (a process pool's callback
 * threads call this). */
void weft__future_run_callbacks(struct future *f);

/* The generic pool. A process pool keeps its own state in `proc`. */
enum { POOL_THREADS, POOL_PROCESSES };
struct ppool;

struct pool {
  uint64_t id;
  int refs; /* the handle, calls in flight */
  int kind;
  pid_t pid; /* the process that made it: a forked child has none of its workers */
  char name[WEFT_NAME_MAX + 1];
  int max_workers;
  long maxtasks;
  int (*initializer)(void *);
  void *initarg;
  size_t max_message;
  struct ppool *proc;
  weft_queue *tasks; /* thread pools: of struct future * */
  int idle;          /* as Python's _idle_semaphore: workers that finished a task */
  int broken;        /* atomic */
  int terminated;    /* atomic: queued tasks are cancelled, not run */
  pthread_mutex_t lock;
  /* under lock */
  bool closed;
  bool joined;
  int live;      /* workers started and not yet leaving */
  unsigned started; /* numbers the workers' names (wraps) */
  int joining;       /* joins in progress: no compaction meanwhile */
  weft_thread *threads;
  size_t nthreads, cap;
};

/* ppool.c: the process pool behind a generic pool. */
int weft__ppool_start(struct pool *p, const weft_pool_options *o);
int weft__ppool_submit(struct pool *p, struct future *f, const char *what);
int weft__ppool_close(struct pool *p);
int weft__ppool_cancel(struct future *f);
bool weft__ppool_running(struct future *f);
void weft__pool_put(struct pool *p);
int weft__ppool_terminate(struct pool *p);
int weft__ppool_join(struct pool *p, weft__deadline deadline, double timeout);
void weft__ppool_free(struct pool *p);
void weft__ppool_at_exit(struct pool *p);
void weft__ppool_after_fork_child(struct pool *p);

#endif
