/* SPDX-License-Identifier: MIT */
/* weft/queue.h — queues between threads (Python's queue.Queue, LifoQueue,
 * PriorityQueue) and between processes (multiprocessing.Queue and
 * JoinableQueue).
 *
 * Both kinds share one set of rules:
 * - put and get take a timeout like every weft wait (WEFT_FOREVER: for
 *   ever; 0 or less: do not wait); a put that finds no room returns
 *   WEFT_EFULL and a get that finds nothing WEFT_EEMPTY, whether asked not
 *   to wait or its timeout ran out (Python's queue.Full and queue.Empty).
 * - put is synchronous: when it returns 0 the item is in the queue, so
 *   qsize/empty/full seen by the same thread already count it.
 * - close (Python 3.13's shutdown()) ends the queue for everyone: put
 *   returns WEFT_ECLOSED at once; get goes on returning what is left and
 *   then WEFT_ECLOSED; threads blocked in either wake up.
 * - task_done/join count unfinished items as Python's Queue.task_done and
 *   Queue.join do, with a timeout on join.
 *
 * A thread queue carries pointers (threads share memory) and may be
 * unbounded. A process queue carries byte strings copied through memory
 * shared with the children forked after it was made; there is no feeder
 * thread, so a producer can always exit, and a process killed in the middle
 * of a put or get leaves the queue usable by the others with every message
 * whole (see weft_mpqueue_new).
 */
#ifndef WEFT_QUEUE_H
#define WEFT_QUEUE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- between threads ---- */

/* A queue of pointers between the threads of one process.
 * The pointer is an opaque handle, never an address to read: once freed,
 * every call through it (a free again included) returns WEFT_ECLOSED,
 * and a pointer to another kind of weft object gives WEFT_EINVAL. */
typedef struct weft_queue weft_queue;

/* The order in which get returns items. */
typedef enum weft_queue_order {
  WEFT_FIFO = 0,  /* first in, first out (queue.Queue) */
  WEFT_LIFO,      /* last in, first out (queue.LifoQueue) */
  WEFT_PRIORITY,  /* lowest first by .compare (queue.PriorityQueue) */
} weft_queue_order;

/* Options of weft_queue_new. */
typedef struct weft_queue_options {
  size_t size_;      /* set by the macro */
  long maxsize;      /* most items held at once; 0 or negative: unbounded */
  weft_queue_order order;
  /* WEFT_PRIORITY: compares two items as qsort's comparator does (negative:
   * a comes out first); equal items come out in no set order. */
  int (*compare)(const void *a, const void *b);
  const char *name;  /* for messages */
} weft_queue_options;

/* Creates a queue, e.g. weft_queue_new(.maxsize = 100) or
 * weft_queue_new(.order = WEFT_PRIORITY, .compare = by_deadline). NULL and
 * weft_last_error() on failure: WEFT_EINVAL (priority without compare),
 * WEFT_ENOMEM. */
#define weft_queue_new(...)                                                               \
  weft_queue_new_opts(&(const weft_queue_options){.size_ = sizeof(weft_queue_options),     \
                                                  __VA_ARGS__})
WEFT_API weft_queue *weft_queue_new_opts(const weft_queue_options *opts);

/* Puts an item (any pointer, NULL included). 0, WEFT_EFULL, WEFT_ECLOSED,
 * WEFT_ENOMEM (an unbounded queue could not grow), WEFT_EINVAL (NULL queue,
 * NaN timeout). */
WEFT_API int weft_queue_put(weft_queue *q, void *item, double timeout);
/* The same, naming the call site for dumps (weft/dump.h); the macro passes
 * "file.c:line" (call (weft_queue_put)(...) for the function itself).
 * get and join have an _at form and macro alike. */
WEFT_API int weft_queue_put_at(weft_queue *q, void *item, double timeout, const char *site);
#define weft_queue_put(q, item, timeout) weft_queue_put_at((q), (item), (timeout), WEFT__SITE)

/* Takes the next item into *item. 0, WEFT_EEMPTY, WEFT_ECLOSED (closed and
 * drained), WEFT_EINVAL. */
WEFT_API int weft_queue_get(weft_queue *q, void **item, double timeout);
WEFT_API int weft_queue_get_at(weft_queue *q, void **item, double timeout, const char *site);
#define weft_queue_get(q, item, timeout) weft_queue_get_at((q), (item), (timeout), WEFT__SITE)

/* Number of items held, and whether there are none / no room. As in Python
 * these are snapshots: another thread may change them the next moment. 0 /
 * false, with the last error set, for a NULL or freed queue. */
WEFT_API size_t weft_queue_qsize(const weft_queue *q);
WEFT_API bool weft_queue_empty(const weft_queue *q);
WEFT_API bool weft_queue_full(const weft_queue *q);

/* Marks one item taken by get as processed. WEFT_EINVAL if called more times
 * than items were put (Python's ValueError). */
WEFT_API int weft_queue_task_done(weft_queue *q);

/* Waits until every item put has been marked done: 0 or WEFT_ETIMEDOUT. */
WEFT_API int weft_queue_join(weft_queue *q, double timeout);
WEFT_API int weft_queue_join_at(weft_queue *q, double timeout, const char *site);
#define weft_queue_join(q, timeout) weft_queue_join_at((q), (timeout), WEFT__SITE)

/* Closes the queue (see above); closing twice is harmless. */
WEFT_API int weft_queue_close(weft_queue *q);

/* Frees the queue (not the items it still holds). WEFT_EBUSY, and nothing
 * freed, while threads are blocked in it: close it and let them leave
 * first. NULL is ignored. */
WEFT_API int weft_queue_free(weft_queue *q);

/* ---- between processes ---- */

/* A queue of byte messages in shared memory, as weft_queue a handle: a
 * child forked after its creation uses the same pointer. */
typedef struct weft_mpqueue weft_mpqueue;

/* Options of weft_mpqueue_new. */
typedef struct weft_mpqueue_options {
  size_t size_;     /* set by the macro */
  size_t capacity;  /* bytes of message storage (default 2 MiB; rounded down
                       to a multiple of 8); each message takes its length
                       rounded up to 8, plus 8 */
  long maxsize;     /* most messages held at once; 0 or negative: only the
                       capacity limits */
  const char *name; /* for messages */
} weft_mpqueue_options;

/* The most bytes of message storage a process queue may have. */
#define WEFT_MPQUEUE_CAPACITY_MAX ((size_t)1 << 31)

/* Creates a process queue, e.g. weft_mpqueue_new(.capacity = 1 << 20). Make
 * it before starting the processes that use it: it lives in memory shared
 * with the children forked afterwards, and works for any of them whether or
 * not its creator is still running. NULL and weft_last_error() on failure:
 * WEFT_EINVAL (capacity below 64 or above WEFT_MPQUEUE_CAPACITY_MAX),
 * WEFT_ENOMEM. */
#define weft_mpqueue_new(...)                                                             \
  weft_mpqueue_new_opts(&(const weft_mpqueue_options){.size_ = sizeof(weft_mpqueue_options), \
                                                      __VA_ARGS__})
WEFT_API weft_mpqueue *weft_mpqueue_new_opts(const weft_mpqueue_options *opts);

/* Copies a message of len bytes into the queue (len 0 is a valid, empty
 * message; msg may then be NULL). 0, WEFT_EFULL, WEFT_ECLOSED, WEFT_EMSGSIZE
 * (the message could never fit in this queue's capacity), WEFT_EINVAL (NULL
 * msg with len > 0, a len that is a negative number cast to size_t, NaN). */
WEFT_API int weft_mpqueue_put(weft_mpqueue *q, const void *msg, size_t len, double timeout);

/* Copies the next message into buf (cap bytes) and stores its length in
 * *len. 0, WEFT_EEMPTY, WEFT_ECLOSED (closed and drained), WEFT_EMSGSIZE (the
 * message is longer than cap: *len says how long, and it stays in the queue),
 * WEFT_EINVAL. */
WEFT_API int weft_mpqueue_get(weft_mpqueue *q, void *buf, size_t cap, size_t *len,
                              double timeout);

/* Snapshots, as for thread queues. */
WEFT_API size_t weft_mpqueue_qsize(const weft_mpqueue *q);
WEFT_API bool weft_mpqueue_empty(const weft_mpqueue *q);
WEFT_API bool weft_mpqueue_full(const weft_mpqueue *q);

/* JoinableQueue's task_done and join, counted across all processes. A
 * process that dies between a get and its task_done leaves that message
 * unfinished: join then times out rather than hanging for ever, if given a
 * timeout. */
WEFT_API int weft_mpqueue_task_done(weft_mpqueue *q);
WEFT_API int weft_mpqueue_join(weft_mpqueue *q, double timeout);

/* Closes the queue for every process (see above). */
WEFT_API int weft_mpqueue_close(weft_mpqueue *q);

/* Unmaps the queue in the calling process (the others keep theirs); the
 * pointer is invalid afterwards. NULL is ignored. */
WEFT_API int weft_mpqueue_free(weft_mpqueue *q);

#ifdef __cplusplus
}
#endif

#endif
