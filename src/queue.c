/* SPDX-License-Identifier: MIT */
/* Queue between threads.
 *
 * FIFO queues are a ring with two locks, as in Michael and Scott's two-lock
 * queue: producers serialise on one, consumers on the other, and the two
 * sides meet only through the tail and head indices, each on its own cache
 * line. Each side keeps a copy of the other's index and reads the real one
 * only when the copy says "full" or "empty", so with one producer and one
 * consumer on two cores an item costs a few cache-line transfers and no
 * system call; a mutex+condvar ring moves its single lock's line on every
 * operation and sleeps whenever the consumer catches up.
 *
 * An unbounded FIFO ring grows by doubling; the producer that finds it full
 * takes the consumers' lock too (always in that order) and copies it.
 *
 * LIFO and priority queues take from where they put, so every operation
 * holds both locks; they share the counters (tail = items ever put, head =
 * items ever taken) and the waiting with the FIFO path.
 *
 * Waiting: a thread that finds the queue empty (or full) spins a few
 * microseconds watching the index, then sleeps on a wait channel (chan.h)
 * that the other side signals after moving its index.
 *
 * A put does not wake a sleeping getter while another getter is awake and
 * looking (searching), nor while a wake-up it or another put gave is on
 * its way (waking): with many idle consumers -- a thread pool sized for
 * I/O -- waking one per item would put most of them straight back to
 * sleep, at a system call, a context switch and a membarrier each. So that
 * no item is left behind, whoever stops searching (it found an item, its
 * time ran out, or it goes to sleep) looks once more: a sleeper looks
 * before it sleeps, the others wake a sleeper if items are left and nobody
 * else searches -- a backlog keeps one more getter coming, as Go's
 * scheduler keeps one spinning thread. */
#include <stdlib.h>
#include <string.h>

#include "chan.h"
#include "dump.h"
#include "handle.h"
#include "internal.h"
#include "tsan.h"
#include "weft/queue.h"

#define MIN_CAP 64
/* A bounded FIFO gets its room up front up to this many items, and grows
 * beyond as an unbounded one does. */
#define PREALLOC_MAX 1024

/* Tuning. The rows named are make bench's, on a 2-core VM. */
/* Pause rounds before a side lock's waiter starts yielding: measured on
 * queue_threads, where a side lock is held for a few instructions. */
#define LOCK_SPINS 100
/* The longest gap, in pause rounds, between two looks at the other side's
 * index while a waiter spins (the gap doubles up to it): set on
 * queue_threads. */
#define SPIN_BURST_MAX 64
/* Pauses of a consumer that has caught up with the producer (see
 * catch_up_pause): measured on queue_threads, 2-3x faster at 1P1C. */
#define CATCH_UP_PAUSES 16
/* How often a sleeper looks again when it cannot make the barrier with
 * membarrier(2) and might miss a signal: not measured, a bound on the
 * delay in that rare case. */
#define NO_BARRIER_RECHECK_NS (1000 * 1000)

/* The public weft_queue pointer is a handle (handle.h); the struct behind
 * it is reached through queue_of. */
struct weft_queue {
  _Alignas(64) uint32_t put_lock;
  size_t tail;       /* items ever put; written under put_lock */
  size_t head_seen;  /* the producers' copy of head */
  _Alignas(64) uint32_t get_lock;
  size_t head;       /* items ever taken; written under get_lock */
  size_t tail_seen;  /* the consumers' copy of tail */
  _Alignas(64) size_t done; /* task_done calls */
  size_t inside;             /* threads in a slow path (enter_slow) */
  uint32_t spin_room, spin_item; /* spin budgets of wait_for */
  uint32_t searching; /* counted getters (see weft_queue_get) awake and looking */
  uint32_t waking;    /* 1 while a getter woken by wake_a_getter is on its way */
  weft__chan not_empty, not_full, all_done;
  _Alignas(64) void **items; /* changed under both locks */
  size_t cap;                /* a power of two for FIFO */
  size_t maxsize;            /* 0: unbounded */
  bool closed;
  weft_queue_order order;
  uint32_t fencing; /* enum fencing */
  int (*compare)(const void *, const void *);
  const char *name;
  pid_t pid; /* the process that made it: a forked child has a copy, not the queue */
};

static const char *qname(const weft_queue *q) { return q->name != NULL ? q->name : "queue"; }

static size_t load(const size_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

/* Whether sleepers make the other side's barrier with membarrier(2). Then
 * a put or get publishes its index with a plain release store and needs no
 * fence before looking for sleepers: a fence (or the locked instruction of
 * a sequentially consistent store) stalls until the index's cache line
 * comes back from the other core, on every item. Without membarrier both
 * are sequentially consistent. */
static bool asymmetric;

static void publish(size_t *p, size_t v) {
  if (__atomic_load_n(&asymmetric, __ATOMIC_RELAXED)) __atomic_store_n(p, v, __ATOMIC_RELEASE);
  else __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* A queue whose waiters sleep often -- several at once, as a pool's idle
 * workers do -- turns the barrier round: its puts and gets fence before
 * they look for sleepers (a put that finds one fences anyway, see
 * wake_a_getter), and its sleepers no longer pay a membarrier each, an
 * interrupt to every CPU running the program. The switch is one way and
 * made by a sleeper: FENCE_SWITCHING, one membarrier -- after it every
 * put or get that read FENCE_NONE has its index visible -- then
 * FENCE_ALL, from which sleepers skip theirs. */
enum fencing { FENCE_NONE, FENCE_SWITCHING, FENCE_ALL };

/* Between publishing an index and looking for sleepers: the other side's
 * barrier is membarrier's, this fence or seq_cst's. The index is
 * published before the mode is read (see enum fencing). */
static void before_signal(const weft_queue *q) {
  if (__atomic_load_n(&q->fencing, __ATOMIC_RELAXED) != FENCE_NONE)
    weft__fence();
  else
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* Whether a sleeper, registered on c, may skip its membarrier: the queue
 * fences, or this sleeper, one of several, has just switched it. */
static bool others_fence(weft_queue *q, weft__chan *c) {
  uint32_t mode = __atomic_load_n(&q->fencing, __ATOMIC_SEQ_CST);
  if (mode == FENCE_ALL) return true;
  if (mode != FENCE_NONE || weft__chan_sleepers(c) < 2) return false;
  if (!__atomic_compare_exchange_n(&q->fencing, &mode, FENCE_SWITCHING, false, __ATOMIC_SEQ_CST,
                                   __ATOMIC_SEQ_CST) ||
      weft__os_membarrier() != 0)
    return false;
  __atomic_store_n(&q->fencing, FENCE_ALL, __ATOMIC_SEQ_CST);
  return true;
}

static bool is_closed(const weft_queue *q) { return __atomic_load_n(&q->closed, __ATOMIC_SEQ_CST); }

weft_queue *weft_queue_new_opts(const weft_queue_options *o) {
  static const weft_queue_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  if (o->order != WEFT_FIFO && o->order != WEFT_LIFO && o->order != WEFT_PRIORITY) {
    weft__error(WEFT_EINVAL, "weft_queue_new: order %d is not WEFT_FIFO, WEFT_LIFO or WEFT_PRIORITY",
                (int)o->order);
    return NULL;
  }
  if (o->order == WEFT_PRIORITY && o->compare == NULL) {
    weft__error(WEFT_EINVAL, "weft_queue_new: a WEFT_PRIORITY queue needs .compare");
    return NULL;
  }
  size_t maxsize = o->maxsize > 0 ? (size_t)o->maxsize : 0;
  size_t cap = MIN_CAP;
  /* A bounded FIFO ring gets all its room at once (rounded up to a power
   * of two); the others start small and grow. */
  if (o->order == WEFT_FIFO && maxsize != 0)
    while (cap < maxsize && cap < PREALLOC_MAX) cap *= 2;
  if (o->order != WEFT_FIFO && maxsize != 0 && maxsize < cap) cap = maxsize;
  weft_queue *q = aligned_alloc(64, sizeof *q);
  if (q != NULL) memset(q, 0, sizeof *q);
  if (q == NULL || cap * sizeof(void *) / sizeof(void *) != cap ||
      (q->items = malloc(cap * sizeof *q->items)) == NULL) {
    free(q);
    weft__error(WEFT_ENOMEM, "weft_queue_new: out of memory");
    return NULL;
  }
  weft__tsan_mutex_create(&q->put_lock, WEFT__TSAN_NOT_STATIC);
  weft__tsan_mutex_create(&q->get_lock, WEFT__TSAN_NOT_STATIC);
  if (!__atomic_load_n(&asymmetric, __ATOMIC_RELAXED) && weft__os_membarrier() == 0)
    __atomic_store_n(&asymmetric, true, __ATOMIC_RELAXED);
  q->cap = cap;
  q->maxsize = maxsize;
  q->spin_room = q->spin_item = WEFT__SPIN_MAX;
  q->order = o->order;
  q->compare = o->compare;
  q->name = o->name;
  q->pid = weft__pid;
  weft_queue *h = weft__ref_add(q, WEFT__REF_QUEUE, "weft_queue_new");
  if (h == NULL) {
    free(q->items);
    free(q);
  }
  return h;
}

/* The side locks are held for a few instructions and never across a wait,
 * so a spin lock that yields the CPU after a while does; its release is a
 * plain store, not a read-modify-write that would wait for the item's
 * cache line as a fence does. */
static void lock(uint32_t *l) {
  weft__tsan_pre_lock(l, 0);
  for (unsigned i = 0;; i < LOCK_SPINS ? i++ : i) {
    if (__atomic_load_n(l, __ATOMIC_RELAXED) == 0 && __atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE) == 0)
      break;
    if (i < LOCK_SPINS) weft__cpu_relax();
    else weft__os_yield();
  }
  weft__tsan_post_lock(l, 0, 0);
}

static void unlock(uint32_t *l) {
  weft__tsan_pre_unlock(l, 0);
  __atomic_store_n(l, 0, __ATOMIC_RELEASE);
  weft__tsan_post_unlock(l, 0);
}

/* ---- FIFO ---- */

/* Doubles the ring, keeping items at the same positions modulo the new
 * size. put_lock held; takes get_lock. */
static bool grow(weft_queue *q) {
  if (q->cap > SIZE_MAX / 2 / sizeof(void *)) return false;
  size_t cap = q->cap * 2;
  void **items = malloc(cap * sizeof *items);
  if (items == NULL) return false;
  lock(&q->get_lock);
  for (size_t i = q->head; i != q->tail; i++) items[i & (cap - 1)] = q->items[i & (q->cap - 1)];
  free(q->items);
  q->items = items;
  q->cap = cap;
  unlock(&q->get_lock);
  return true;
}

/* Items held, by the producers' copy of head, refreshed when it says full
 * (by maxsize or by the ring's size). put_lock held. */
static size_t fifo_used(weft_queue *q) {
  size_t used = q->tail - q->head_seen;
  if (used == q->cap || (q->maxsize != 0 && used >= q->maxsize)) {
    q->head_seen = load(&q->head);
    used = q->tail - q->head_seen;
  }
  return used;
}

static bool fifo_has_item(weft_queue *q) {
  if (q->head != __atomic_load_n(&q->tail_seen, __ATOMIC_RELAXED)) return true;
  __atomic_store_n(&q->tail_seen, load(&q->tail), __ATOMIC_RELAXED);
  return q->head != __atomic_load_n(&q->tail_seen, __ATOMIC_RELAXED);
}

/* A consumer that has taken everything it knew of waits a moment before it
 * looks at tail again: the producer then fills a few slots with the tail's
 * cache line its own, instead of the two cores trading that line (and each
 * slot's) for every item. Measured on the queue_threads row: 2-3x faster
 * at 1P1C. It costs a blocking get under a microsecond, and no lock is held
 * meanwhile. */
static void catch_up_pause(const weft_queue *q) {
  if (q->order != WEFT_FIFO) return;
  if (__atomic_load_n(&q->head, __ATOMIC_RELAXED) != __atomic_load_n(&q->tail_seen, __ATOMIC_RELAXED))
    return;
  for (int i = 0; i < CATCH_UP_PAUSES; i++) weft__cpu_relax();
}

/* ---- LIFO and priority (both locks held) ---- */

static void heap_push(weft_queue *q, size_t n, void *item) {
  size_t i = n;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (q->compare(q->items[parent], item) <= 0) break;
    q->items[i] = q->items[parent];
    i = parent;
  }
  q->items[i] = item;
}

static void *heap_pop(weft_queue *q, size_t n) {
  void *top = q->items[0], *last = q->items[n - 1];
  size_t i = 0;
  n--;
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && q->compare(q->items[child + 1], q->items[child]) < 0) child++;
    if (q->compare(last, q->items[child]) <= 0) break;
    q->items[i] = q->items[child];
    i = child;
  }
  if (n > 0) q->items[i] = last;
  return top;
}

static bool stack_grow(weft_queue *q) {
  size_t cap = q->cap * 2;
  if (q->maxsize != 0 && cap > q->maxsize) cap = q->maxsize;
  if (cap <= q->cap || cap > SIZE_MAX / sizeof(void *)) return false;
  void **items = realloc(q->items, cap * sizeof *items);
  if (items == NULL) return false;
  q->items = items;
  q->cap = cap;
  return true;
}

/* ---- put / get ---- */

/* The queue behind a handle; NULL, with the error recorded, for NULL, a
 * freed queue or another object. */
static weft_queue *queue_of(const weft_queue *h, const char *fn, int *err) {
  weft_queue *q = weft__ref_use(h, WEFT__REF_QUEUE, fn, err);
  if (__builtin_expect(q != NULL && q->pid != weft__pid, 0)) {
    *err = weft__error(WEFT_EPERM,
                       "%s: %s was made in process %d and lives in its memory; this process (%d) "
                       "has only a copy that no other process sees: use a weft_mpqueue between "
                       "processes", fn, qname(q), (int)q->pid, (int)weft__pid);
    return NULL;
  }
  return q;
}

/* Swaps the handle *q for its queue. */
__attribute__((always_inline)) static inline int check(weft_queue **q, const char *fn,
                                                      double timeout) {
  int err = 0;
  if ((*q = queue_of(*q, fn, &err)) == NULL) return err;
  if (timeout != timeout) return weft__error(WEFT_EINVAL, "%s: timeout is NaN", fn);
  return 0;
}

static bool has_room(const weft_queue *q) {
  return q->maxsize == 0 || load(&q->tail) - load(&q->head) < q->maxsize;
}

static bool has_item(const weft_queue *q) { return load(&q->tail) != load(&q->head); }

/* A producer that found a bounded FIFO full spins until a cache line's
 * worth of slots is free, not one: refilling the slot the consumer just
 * emptied would write the very line it is reading, and the two cores
 * would trade that line for every item. If the consumer stops short of a
 * line, the spin ends and the put takes the room there is. */
#define LINE_SLOTS (64 / sizeof(void *))

static bool has_room_for_a_line(const weft_queue *q) {
  if (q->order != WEFT_FIFO || q->maxsize <= LINE_SLOTS) return has_room(q);
  return load(&q->tail) - load(&q->head) <= q->maxsize - LINE_SLOTS;
}

/* Waits (lock-free) until ready(q) or the queue closes, the deadline passes
 * or a signal on c comes: spins first if not spun yet, for ready_well(q),
 * a better moment than just ready(q).
 *
 * How long to spin adapts per queue and side (*budget, weft__spin_adapt):
 * when producer and consumer share one CPU, spinning only keeps the other
 * from running. */
static void wait_for(weft_queue *q, weft__chan *c, bool (*ready)(const weft_queue *),
                     bool (*ready_well)(const weft_queue *), uint32_t *budget, bool *spun,
                     bool *counted, weft__deadline deadline) {
  if (!*spun) {
    *spun = true;
    uint32_t spins = __atomic_load_n(budget, __ATOMIC_RELAXED);
    /* Looking less often as the wait goes on lets the other side fill (or
     * empty) a few slots between looks, instead of pulling the index's
     * cache line away after every item. */
    for (uint32_t i = 0, burst = 1; i < spins; i += burst) {
      if (ready_well(q) || is_closed(q)) {
        weft__spin_adapt(budget, spins, true);
        return;
      }
      for (uint32_t k = 0; k < burst; k++) weft__cpu_relax();
      if (burst < SPIN_BURST_MAX) burst *= 2;
    }
    weft__spin_adapt(budget, spins, false);
  }
  if (ready(q)) return; /* only the better moment did not come */
  uint32_t gen = weft__chan_enter(c);
  /* Registered first, so a put that finds no getter searching finds this
   * one asleep. */
  if (counted != NULL && *counted) __atomic_sub_fetch(&q->searching, 1, __ATOMIC_SEQ_CST);
  /* The other side's barrier (see before_signal); without it, look again
   * every millisecond rather than miss a signal. */
  if (__atomic_load_n(&asymmetric, __ATOMIC_RELAXED) && !others_fence(q, c) &&
      weft__os_membarrier() != 0) {
    weft__deadline soon = weft__os_now_ns() + NO_BARRIER_RECHECK_NS;
    if (soon < deadline) deadline = soon;
  }
  if (!ready(q) && !is_closed(q)) weft__chan_sleep(c, gen, deadline);
  weft__chan_leave(c, gen);
  /* Searching again, counted from now on whether it was before or not,
   * before the next wake-up may be given: a put that found the token taken
   * counts on the getter woken to take its item or pass it on. */
  if (counted != NULL) {
    __atomic_add_fetch(&q->searching, 1, __ATOMIC_SEQ_CST);
    *counted = true;
    __atomic_store_n(&q->waking, 0, __ATOMIC_SEQ_CST);
  }
}

/* After an item was put, or a getter stopped searching with items left:
 * wakes a sleeping getter unless one searches or is on its way. */
static void wake_a_getter(weft_queue *q) {
  while (weft__chan_has_sleepers(&q->not_empty)) {
    /* Pairs with a searcher's decrement and look: either it sees the
     * item, or this sees it gone. */
    weft__fence();
    if (__atomic_load_n(&q->searching, __ATOMIC_SEQ_CST) != 0) return;
    uint32_t none = 0;
    /* Taken: the woken getter searches before it gives the token back, and
     * a waker that woke nobody looks again after giving it back. */
    if (!__atomic_compare_exchange_n(&q->waking, &none, 1, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST))
      return;
    if (weft__chan_signal_one(&q->not_empty)) return;
    __atomic_store_n(&q->waking, 0, __ATOMIC_SEQ_CST);
    if (!has_item(q)) return;
  }
}

/* Tries once: 0, WEFT_EFULL (no room), WEFT_ECLOSED or WEFT_ENOMEM. */
static int try_put(weft_queue *q, void *item) {
  int r = 0;
  if (q->order == WEFT_FIFO) {
    lock(&q->put_lock);
    size_t used = fifo_used(q);
    if (is_closed(q)) {
      r = WEFT_ECLOSED;
    } else if (q->maxsize != 0 && used >= q->maxsize) {
      r = WEFT_EFULL;
    } else if (used == q->cap && !grow(q)) {
      r = WEFT_ENOMEM;
    } else {
      q->items[q->tail & (q->cap - 1)] = item;
      publish(&q->tail, q->tail + 1);
    }
    unlock(&q->put_lock);
    return r;
  }
  lock(&q->put_lock);
  lock(&q->get_lock);
  size_t n = q->tail - q->head;
  if (is_closed(q)) {
    r = WEFT_ECLOSED;
  } else if (q->maxsize != 0 && n >= q->maxsize) {
    r = WEFT_EFULL;
  } else if (n == q->cap && !stack_grow(q)) {
    r = WEFT_ENOMEM;
  } else {
    if (q->order == WEFT_LIFO) q->items[n] = item;
    else heap_push(q, n, item);
    publish(&q->tail, q->tail + 1);
  }
  unlock(&q->get_lock);
  unlock(&q->put_lock);
  return r;
}

/* Tries once: 0, WEFT_EEMPTY, or WEFT_ECLOSED (closed and drained). */
static int try_get(weft_queue *q, void **item) {
  int r = 0;
  if (q->order == WEFT_FIFO) {
    lock(&q->get_lock);
    /* Closed is read before the last look at tail, so an item put before
     * close is always seen. */
    bool closed = is_closed(q);
    if (fifo_has_item(q)) {
      *item = q->items[q->head & (q->cap - 1)];
      publish(&q->head, q->head + 1);
    } else {
      r = closed ? WEFT_ECLOSED : WEFT_EEMPTY;
    }
    unlock(&q->get_lock);
    return r;
  }
  lock(&q->put_lock);
  lock(&q->get_lock);
  size_t n = q->tail - q->head;
  if (n == 0) {
    r = is_closed(q) ? WEFT_ECLOSED : WEFT_EEMPTY;
  } else {
    *item = q->order == WEFT_LIFO ? q->items[n - 1] : heap_pop(q, n);
    publish(&q->head, q->head + 1);
  }
  unlock(&q->get_lock);
  unlock(&q->put_lock);
  return r;
}

/* Threads past the first try of a put or get, and in join, are counted,
 * so that free can refuse while any is still inside (woken by close or
 * not); the fast path does without, a free racing it is the caller's bug. */
static void enter_slow(weft_queue *q) { __atomic_add_fetch(&q->inside, 1, __ATOMIC_SEQ_CST); }
static void leave_slow(weft_queue *q) { __atomic_sub_fetch(&q->inside, 1, __ATOMIC_SEQ_CST); }

static int put_error(weft_queue *q, int r, double timeout) {
  if (r == WEFT_ECLOSED) return weft__error(r, "%s: put on a closed queue", qname(q));
  if (r == WEFT_ENOMEM) return weft__error(r, "%s: out of memory to grow", qname(q));
  if (timeout <= 0) return weft__error(WEFT_EFULL, "%s: full (%zu items)", qname(q), q->maxsize);
  return weft__error(WEFT_EFULL, "%s: still full after %g s", qname(q), timeout);
}

/* After a first try that found no room (or nothing), put and get wait
 * and try again until done or the deadline, counted in inside until their
 * last access to q. */
int(weft_queue_put)(weft_queue *q, void *item, double timeout) {
  return weft_queue_put_at(q, item, timeout, NULL);
}

int weft_queue_put_at(weft_queue *q, void *item, double timeout, const char *site) {
  int err = check(&q, "weft_queue_put", timeout);
  if (err != 0) return err;
  int r = try_put(q, item);
  bool slow = r == WEFT_EFULL && timeout > 0;
  if (slow) {
    weft__deadline deadline;
    weft__deadline_from(timeout, &deadline);
    bool spun = false;
    enter_slow(q);
    bool recorded = weft__wait_begin(WEFT__WAIT_QUEUE_PUT, q, qname(q), site, 0);
    while (r == WEFT_EFULL && !weft__deadline_passed(deadline)) {
      wait_for(q, &q->not_full, has_room, has_room_for_a_line, &q->spin_room, &spun, NULL,
               deadline);
      r = try_put(q, item);
    }
    weft__wait_end(recorded);
  }
  if (r != 0) {
    r = put_error(q, r, timeout);
  } else {
    before_signal(q);
    wake_a_getter(q);
  }
  if (slow) leave_slow(q);
  return r;
}

static int get_error(weft_queue *q, int r, double timeout) {
  if (r == WEFT_ECLOSED) return weft__error(r, "%s: closed and empty", qname(q));
  if (timeout <= 0) return weft__error(WEFT_EEMPTY, "%s: empty", qname(q));
  return weft__error(WEFT_EEMPTY, "%s: still empty after %g s", qname(q), timeout);
}

int(weft_queue_get)(weft_queue *q, void **item, double timeout) {
  return weft_queue_get_at(q, item, timeout, NULL);
}

int weft_queue_get_at(weft_queue *q, void **item, double timeout, const char *site) {
  int err = check(&q, "weft_queue_get", timeout);
  if (err != 0) return err;
  if (item == NULL) return weft__error(WEFT_EINVAL, "weft_queue_get: item is NULL");
  if (timeout > 0) catch_up_pause(q);
  int r = try_get(q, item);
  bool slow = r == WEFT_EEMPTY && timeout > 0;
  if (slow) {
    weft__deadline deadline;
    weft__deadline_from(timeout, &deadline);
    bool spun = false;
    enter_slow(q);
    /* Only where other getters sleep does a put have sleepers to spare a
     * wake-up: a lone consumer keeps the counter's cache line out of its
     * slow path until it has slept. Uncounted, a getter is never one a put
     * counts on. */
    bool counted = weft__chan_has_sleepers(&q->not_empty);
    if (counted) __atomic_add_fetch(&q->searching, 1, __ATOMIC_SEQ_CST);
    bool recorded = weft__wait_begin(WEFT__WAIT_QUEUE_GET, q, qname(q), site, 0);
    while (r == WEFT_EEMPTY && !weft__deadline_passed(deadline)) {
      wait_for(q, &q->not_empty, has_item, has_item, &q->spin_item, &spun, &counted, deadline);
      r = try_get(q, item);
    }
    weft__wait_end(recorded);
    if (counted) {
      __atomic_sub_fetch(&q->searching, 1, __ATOMIC_SEQ_CST);
      /* A put may have counted on this getter to take its item. */
      if (has_item(q)) wake_a_getter(q);
    }
  }
  if (r != 0) {
    r = get_error(q, r, timeout);
  } else {
    before_signal(q);
    weft__chan_signal_one(&q->not_full);
  }
  if (slow) leave_slow(q);
  return r;
}

static size_t qsize(const weft_queue *q) {
  size_t head = load(&q->head); /* head first: the count is never negative */
  return load(&q->tail) - head;
}

size_t weft_queue_qsize(const weft_queue *h) {
  int err;
  const weft_queue *q = queue_of(h, "weft_queue_qsize", &err);
  return q != NULL ? qsize(q) : 0;
}

bool weft_queue_empty(const weft_queue *h) {
  int err;
  const weft_queue *q = queue_of(h, "weft_queue_empty", &err);
  return q != NULL && qsize(q) == 0;
}

bool weft_queue_full(const weft_queue *h) {
  int err;
  const weft_queue *q = queue_of(h, "weft_queue_full", &err);
  return q != NULL && q->maxsize != 0 && qsize(q) >= q->maxsize;
}

int weft_queue_task_done(weft_queue *q) {
  int err = check(&q, "weft_queue_task_done", 0);
  if (err != 0) return err;
  size_t done = load(&q->done);
  do {
    if (done >= load(&q->tail))
      return weft__error(WEFT_EINVAL, "%s: task_done called more times than items were put",
                         qname(q));
  } while (!__atomic_compare_exchange_n(&q->done, &done, done + 1, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST));
  if (done + 1 == load(&q->tail)) weft__chan_signal(&q->all_done);
  return 0;
}

static bool all_done(const weft_queue *q) { return load(&q->done) == load(&q->tail); }

int(weft_queue_join)(weft_queue *q, double timeout) {
  return weft_queue_join_at(q, timeout, NULL);
}

int weft_queue_join_at(weft_queue *q, double timeout, const char *site) {
  int err = check(&q, "weft_queue_join", timeout);
  if (err != 0) return err;
  weft__deadline deadline;
  weft__deadline_from(timeout, &deadline);
  bool spun = true; /* joins are long waits: no spinning */
  enter_slow(q);
  bool recorded = !all_done(q) && timeout > 0 &&
                  weft__wait_begin(WEFT__WAIT_QUEUE_JOIN, q, qname(q), site, 0);
  while (!all_done(q) && !weft__deadline_passed(deadline))
    wait_for(q, &q->all_done, all_done, all_done, &q->spin_room, &spun, NULL, deadline);
  weft__wait_end(recorded);
  int r = 0;
  if (!all_done(q))
    r = weft__error(WEFT_ETIMEDOUT, "%s: %zu items not done within %g s", qname(q),
                    load(&q->tail) - load(&q->done), timeout);
  leave_slow(q);
  return r;
}

int weft_queue_close(weft_queue *q) {
  int err = check(&q, "weft_queue_close", 0);
  if (err != 0) return err;
  /* Under put_lock, so no put is half done when close returns. */
  lock(&q->put_lock);
  __atomic_store_n(&q->closed, true, __ATOMIC_SEQ_CST);
  unlock(&q->put_lock);
  weft__chan_signal(&q->not_empty);
  weft__chan_signal(&q->not_full);
  return 0;
}

int weft_queue_free(weft_queue *h) {
  if (h == NULL) return 0;
  int err = 0;
  /* A forked child may free its copy, as it may free any of its memory. */
  weft_queue *q = weft__ref_use(h, WEFT__REF_QUEUE, "weft_queue_free", &err);
  if (q == NULL) return err;
  if (__atomic_load_n(&q->inside, __ATOMIC_SEQ_CST) != 0)
    return weft__error(WEFT_EBUSY, "%s: threads are blocked in it (close it first)", qname(q));
  if (weft__ref_remove(h, WEFT__REF_QUEUE, "weft_queue_free") == NULL)
    return weft_last_error_code(); /* freed meanwhile by another thread */
  weft__tsan_mutex_destroy(&q->put_lock, 0);
  weft__tsan_mutex_destroy(&q->get_lock, 0);
  free(q->items);
  free(q);
  return 0;
}
