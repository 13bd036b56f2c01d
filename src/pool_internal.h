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
 * argument (in_len bytes). What comes back (its output, see pool_bytes.c):
 * - a single task: its result, or, when it failed, its message;
 * - a chunk of fixed-size items (n of item_size bytes): n results of
 *   result_size bytes, n int32 codes, then a note for each failed item
 *   with a message or a weft code (struct weft__note, then its text);
 * - a chunk of byte strings (VCHUNK; n uint64 lengths, then the items'
 *   bytes): for each item a struct weft__entry, then its result or, if it
 *   failed, its message. */
enum { WEFT__CALL_SINGLE = 1, WEFT__CALL_CHUNK = 2, WEFT__CALL_VCHUNK = 3 };
typedef struct weft__call {
  uint64_t seq;          /* the pool's task number */
  weft_bytes_task fn;    /* valid in a worker: it is a fork of the pool's process */
  uint32_t kind;
  uint32_t n;            /* items of a chunk */
  uint64_t base;         /* index of a chunk's first item */
  uint64_t ticket;       /* process pools: the worker's number for it (see ppool.c) */
  uint64_t item_size, result_size;
  uint64_t in_len;
  /* Process pools whose workers are fresh images (spawn, forkserver): fn
   * as an offset in the object the pool's table names (ppool.c). */
  uint64_t fn_offset;
  uint32_t fn_object;
  uint32_t pad_;
} weft__call;

typedef struct weft__note {
  uint32_t index; /* the item in its chunk */
  int32_t err;    /* WEFT_ETASKFAILED or WEFT_EMSGSIZE */
  uint32_t len;   /* of the text that follows */
} weft__note;

typedef struct weft__entry {
  int32_t code;   /* the task's code: 0 when it succeeded */
  int32_t err;    /* 0, WEFT_ETASKFAILED or WEFT_EMSGSIZE */
  uint64_t len;   /* of the result or message that follows */
} weft__entry;

/* Where a call's output goes: buf holds used of cap bytes; more(s, need)
 * makes room when buf is full -- a worker process sends what it holds as
 * a part of the output and starts over, a worker thread grows buf. */
typedef struct weft__sink {
  unsigned char *buf;
  size_t cap, used;
  size_t flushed; /* bytes sent as parts before buf's: the output is flushed + used long */
  int (*more)(struct weft__sink *s, size_t need);
} weft__sink;

/* How far a chunk has got: before each item runs, the items finished and
 * the output's length then. A worker process keeps it in its shared slot,
 * so that when it dies the pool keeps the results of the items it
 * finished. */
typedef struct weft__done {
  uint64_t items;
  uint64_t bytes;
} weft__done;

/* Appends len bytes to the sink. 0, or what more() failed with. */
int weft__sink_put(weft__sink *s, const void *data, size_t len);

/* Runs a call whose argument is at in, its output going to out (empty).
 * Stores the index of each item of a chunk before running it in *item
 * when item is not NULL (a worker's shared slot, or the future, so the
 * pool can name the item that crashed and count items done). A single
 * task: returns 0, or its failure -- the code it returned, with *err
 * WEFT_ETASKFAILED, or WEFT_EMSGSIZE and *err the same -- its message as
 * its output. A chunk: returns 0 (each item's outcome is in the output)
 * or the sink's failure. */
WEFT__BACKEND_API int weft__call_run(const weft__call *c, const void *in, weft__sink *out, uint64_t *item,
                   weft__done *done, int *err);

/* A chunk of byte strings carries at most this many bytes of items (one
 * larger item goes alone), and a default-sized chunk of map at most this
 * many bytes of items or results: smaller chunks let the workers start
 * sooner, their buffers come from the heap rather than fresh mappings
 * whose pages fault in each time, and the rings they pass through stay
 * warm (pool_map_bytes ran 30-40% faster than with chunks of a whole
 * 4 MiB message; pool_map_processes about 40% faster than with Python's
 * n / (4 * workers) items a chunk). */
#define WEFT__CHUNK_BYTES ((size_t)256 << 10)

/* The room a chunk of n fixed-size items needs for its results. */
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
  int fail_err;      /* FS_FAILED: WEFT_ETASKFAILED, or weft's own (WEFT_EMSGSIZE) */
  uint64_t item_now; /* thread pools: the item of a chunk running (as a slot's item) */
  uint64_t died_item; /* FS_DIED: the item of a chunk that was running */
  uint64_t done_items; /* FS_DIED chunk: its first items, finished; their output is in bytes */
  struct future **reruns; /* FS_DIED chunk: its items after died_item, each run alone */
  size_t *index;     /* a VCHUNK's output: where each item's entry starts */
  pid_t pid;         /* the process that made it: a forked child cannot use it */
  /* A bytes task: its call (header and argument, in one block) and, once
   * it succeeded, its result bytes. */
  weft__call *call;
  /* The call's argument: after its header, or the map caller's items;
   * NULL when a chunk of byte strings is gathered from the map caller's
   * gather[0..n-1] as it is sent (weft__input_fill). */
  const void *in;
  const weft_bytes *gather;
  /* A map's chunk: where its results go. A backend that has the whole
   * output of a chunk whose items all succeeded may copy the results there
   * and set delivered instead of keeping bytes. */
  void *dest;
  bool delivered;
  void *bytes;
  size_t bytes_len, bytes_cap; /* cap: while a process pool's output comes in parts */
  /* Process pools: the queue the task waits in, its time limit, and where
   * callbacks run (NULL: in the thread that finishes the future). */
  struct future *next;
  double timeout;
  weft_queue *cb_queue;
  struct pool *owner;  /* a process pool (holds a reference), or NULL */
  uint64_t *gate;      /* under the pool's lock: its ticket word while a worker holds it */
  char *report;      /* why it failed (its message for FS_FAILED), or NULL */
  pthread_mutex_t cb_lock;
  bool cb_fired;     /* under cb_lock: callbacks added now run at once */
  struct weft__callback *cbs;
  struct weft__watch *watches;
};

/* A FIFO of futures linked through their `next` (a backend's queues). */
struct weft__flist {
  struct future *head, *tail;
};

static inline void weft__flist_push(struct weft__flist *l, struct future *f) {
  f->next = NULL;
  if (l->tail != NULL)
    l->tail->next = f;
  else
    l->head = f;
  l->tail = f;
}

static inline struct future *weft__flist_pop(struct weft__flist *l) {
  struct future *f = l->head;
  if (f == NULL) return NULL;
  l->head = f->next;
  if (l->head == NULL) l->tail = NULL;
  f->next = NULL;
  return f;
}

/* future.c: what pools do with futures beyond the public calls. */
enum { WEFT__CB_ALWAYS, WEFT__CB_SUCCESS, WEFT__CB_FAILURE };
/* Adds a callback run when f finishes (when: always, or only on success
 * or failure, as apply_async's); WEFT_ENOMEM. */
int weft__future_add_callback(struct future *f, weft_future_callback cb, void *arg, int when);
/* Runs fn(f, arg) inline when f finishes (before callbacks; never
 * blocking); at once if it has. WEFT_ENOMEM. */
int weft__future_watch(struct future *f, void (*fn)(struct future *, void *), void *arg);
/* Runs a thread pool's future in the calling worker (room: its result's). */
void weft__future_run(struct future *f, size_t room);
/* Cancels f if it has not begun (a backend's handed-out task included). */
bool weft__future_cancel(struct future *f);
/* WEFT_EPERM, said for fn, for an object made in process made_in. */
int weft__other_process(pid_t made_in, const char *what, const char *fn);
/* Removes f's handle (a submit that failed). */
void weft__future_forget(struct future *f);
void weft__future_before_fork(void);
void weft__future_after_fork(void);

/* A new pending future with two references: the handle's and the task's. */
WEFT__BACKEND_API struct future *weft__future_new(weft_task fn, void *arg);
WEFT__BACKEND_API void weft__future_put(struct future *f);
struct future *weft__future_get(weft_future h, const char *fn);
/* Moves a pending future to a final state; false if it had left PENDING. */
WEFT__BACKEND_API bool weft__future_settle_pending(struct future *f, uint32_t to);
/* Moves a pending or running future to a final state, once: false if it
 * was final already. */
WEFT__BACKEND_API bool weft__future_settle(struct future *f, uint32_t to);
/* Runs the callbacks of a finished future (a process pool's callback
 * threads call this). */
WEFT__BACKEND_API void weft__future_run_callbacks(struct future *f);

/* Waits until f is in a final state or the deadline passes. */
bool weft__future_wait(struct future *f, weft__deadline deadline);
/* The outcome of a finished future as a code, with its sentence said. */
int weft__future_outcome(struct future *f, const char *fn);

/* The generic pool. A pool of processes -- local ones (ppool.c) or MPI
 * ranks (the weft_mpi library) -- is run by a backend, through `ops`, and
 * keeps the backend's state in `proc`; the generic code (futures, bytes
 * tasks, map and imap chunking, as_completed, progress) names no backend's
 * functions. Thread pools are the generic code's own. */
enum { POOL_THREADS, POOL_PROCESSES };
struct pool;

/* What a backend does for its pools. Futures of its pools have
 * f->owner set; cancel is asked only for a future the backend took
 * (RUNNING), and says 0 if it stopped it before it began. */
struct weft__pool_ops {
  int (*start)(struct pool *p, const weft_pool_options *o);
  int (*submit)(struct pool *p, struct future *f, const char *what);
  int (*close)(struct pool *p);
  int (*cancel)(struct future *f);
  bool (*running)(struct future *f);
  size_t (*progress)(struct future *f); /* items of a running chunk finished */
  bool (*serves_caller)(struct pool *p); /* the caller is one of its threads (a join waits for itself) */
  int (*terminate)(struct pool *p);
  int (*join)(struct pool *p, weft__deadline deadline, double timeout);
  void (*free)(struct pool *p);
  void (*at_exit)(struct pool *p);
  void (*after_fork_child)(struct pool *p);
  /* At the end of the exit rules, after every pool's at_exit: the remote
   * backend ends (NULL: nothing to do). */
  void (*shutdown)(void);
};

/* Worker threads (tpool.c) and local worker processes (ppool.c). */
extern const struct weft__pool_ops weft__tpool_ops;
extern const struct weft__pool_ops weft__ppool_ops;

/* pool.c: registers the atexit handler that closes thread pools (once). */
void weft__pool_exit_hook(void);

/* Makes ops the backend of process pools created afterwards without a
 * start method; NULL goes back to local processes. */
WEFT__BACKEND_API void weft__pool_set_remote(const struct weft__pool_ops *ops);

/* Creates a process pool run by ops (as weft_process_pool_new_opts). */
WEFT__BACKEND_API weft_pool weft__pool_new_on(const weft_pool_options *o,
                                              const struct weft__pool_ops *ops, const char *fn);

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
  uint64_t next_seq; /* thread pools: numbers bytes tasks (process pools number their own) */
  const struct weft__pool_ops *ops; /* process pools: their backend */
  void *proc;                       /* the backend's state */
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

/* pool.c, for pool_bytes.c */
struct future *weft__call_future(struct pool *p, weft_bytes_task fn, uint32_t kind,
                                 const void *in, size_t in_len, bool borrowed, const char *what);
int weft__queue_call(struct pool *p, struct future *f, const char *what);
struct pool *weft__pool_get(weft_pool h, const char *fn);
double weft__since(int64_t t0);
int weft__check_map(struct pool *p, weft_bytes_task fn, size_t item_size, size_t result_size,
                    const weft_map_options *o, const char *what);

/* pool_bytes.c */
/* Runs a bytes future's call in a worker thread, its output stored in the
 * future. 0 or the task's failure (single tasks), as weft__call_run. */
int weft__thread_run_call(struct future *f, size_t room, int *err);
/* Frees the calling worker thread's room. */
void weft__thread_room_free(void);
/* Runs a pointer task with a task context (weft_task_fail) and keeps its
 * message. */
int weft__run_pointer_task(struct future *f, void **result);
/* Item i of a finished chunk, as weft__chunk_item, for callers that read
 * the items in order: *off starts at 0 and is kept between the calls
 * (a chunk of byte strings is then read without an index). */
int weft__chunk_next(struct future *f, size_t i, size_t *off, const char *what,
                     const void **data, size_t *len, int *task_code, char *message,
                     size_t message_size);
/* A chunk's whole output: its results go to f->dest (delivered) if the
 * chunk has one and every item succeeded. Returns whether they did. */
WEFT__BACKEND_API bool weft__chunk_deliver(struct future *f, const unsigned char *out, size_t len);
/* Item i of a finished chunk future: 0 with its result at *data, *len; or
 * its failure, said as "<what>: task N (item I) ...", with the task's
 * code and message in *task_code and *message (either may be NULL). A
 * chunk whose worker died has its other items run again, each alone. */
int weft__chunk_item(struct future *f, size_t i, const char *what, const void **data,
                     size_t *len, int *task_code, char *message, size_t message_size);
/* Waits for chunk fs[c] of a map, calling its progress hook as items of
 * fs[c..nchunks-1] finish; *reported is the last done it gave, done the
 * items of the chunks before c. */
void weft__map_wait(struct future **fs, size_t c, size_t nchunks, size_t done, size_t n,
                    const weft_map_options *o, int64_t t0, size_t *reported);
/* Items of a chunk done so far (all of a final one). */
size_t weft__chunk_progress(struct future *f);
/* Releases what weft__chunk_item made (reruns, index) with the future. */
void weft__chunk_release(struct future *f);
/* A VCHUNK future of items[0..n-1], index base of the first. Borrowed:
 * the items (array and bytes) outlive the future's task and are gathered
 * only as the call is sent; otherwise they are copied into the call. */
struct future *weft__submit_vchunk(struct pool *p, weft_bytes_task fn, const weft_bytes *items,
                                   size_t n, size_t base, double timeout, bool borrowed,
                                   const char *what);
/* A bytes call's argument as it is written out in pieces, in order, by
 * weft__input_fill (a weft__fill function): from f->in, or gathered from
 * f->gather (the n lengths, then the bytes). Starts as {.f = f}. */
struct weft__input {
  const struct future *f;
  size_t i, off; /* how far it has got */
};
WEFT__BACKEND_API void weft__input_fill(void *arg, unsigned char *dst, size_t n);
/* Writes a bytes call's whole argument (in_len bytes) at dst. */
WEFT__BACKEND_API void weft__call_input(const struct future *f, unsigned char *dst);
/* The most bytes a VCHUNK's input may hold (lengths and items). */
size_t weft__vchunk_room(struct pool *p);
/* How many of items[0..n-1] go in the next VCHUNK (at least 1), at most
 * per; WEFT_EMSGSIZE said (returns 0) for an item too large alone. */
size_t weft__vchunk_items(struct pool *p, const weft_bytes *items, size_t n, size_t per,
                          size_t base, const char *what);

void weft__pool_put(struct pool *p);

#endif
