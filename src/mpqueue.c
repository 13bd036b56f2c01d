/* SPDX-License-Identifier: MIT */
/* Queue between processes: a ring of byte messages in shared memory with
 * two process-shared locks, one for the putters and one for the getters, as
 * the FIFO thread queue (queue.c) has; the sides meet only through the
 * tail and head positions.
 *
 * Surviving a process killed anywhere: a side lock notices a dead holder
 * (plock below), so the question is only what state the dead one left.
 * Message bytes are written into free space, or read from used space,
 * before anything that says where the messages are changes; that changes in
 * one step: the side's new position and count go into its journal, the
 * journal is marked valid, then they are copied into place and the mark
 * cleared. The next holder of that side's lock after a death replays a valid
 * journal and otherwise sees the state before the dead one's operation. So
 * every message is in the queue whole or not at all, and exactly once.
 *
 * Each message is an 8-byte record header (its length) and its bytes,
 * padded to 8; records wrap around the end of the ring. In a queue that
 * rewinds (weft's own, for process pools), a put whose tail has gone past
 * REWIND_AT starts again at the ring's start when the message fits before
 * the first one held: it writes a skip header where the tail was and
 * commits the skipped bytes with its message, and the get that meets the
 * skip takes both in one commit too. A queue kept nearly drained so reuses
 * its first pages, warm in cache and faulted in once, instead of streaming
 * through the whole ring (a pool's inbox is sized for two of the largest
 * messages). The skipped bytes count as used until that get, so a user's
 * queue, whose capacity counts its messages' bytes exactly, never rewinds. */
#define _GNU_SOURCE
#include <string.h>

#include "chan.h"
#include "handle.h"
#include "internal.h"
#include "runtime.h"
#include "tsan.h"
#include "os/os.h"
#include "region.h"
#include "weft/queue.h"

#define MAGIC 0x77667471u /* "wftq" */
/* Room for a 1 MiB message and then some: a Python program puts large
 * objects in its queues (queue_processes_sizes: 8 B to 1 MiB messages at
 * most 0.45x a pipe's time with it; with 4 MiB, 4 KiB ones took 0.6x). */
#define DEFAULT_CAPACITY ((size_t)2 << 20)
#define MIN_CAPACITY 64
#define RECORD_HEADER 8
#define SKIP ((uint64_t)1 << 63) /* a record header: the rest of the ring is unused */
#define QNAME_MAX 63

/* Tuning. The rows named are make bench's, on a 2-core VM. */
/* Sleepers look again at least this often, so that a process that died
 * between publishing and waking cannot leave them asleep for good: not
 * measured, a bound on the delay after such a death. */
#define SLEEP_CAP_NS (100 * 1000 * 1000)
/* A side lock's waiter (see plock) pauses LOCK_SPINS rounds, then yields
 * LOCK_YIELDS times, then naps LOCK_NAP_NS at a time: set on
 * queue_processes, where a side lock is held for one message copy. */
#define LOCK_SPINS 100
#define LOCK_YIELDS 1000
#define LOCK_NAP_NS (1000 * 1000)
/* A rewinding queue's ring is rewound once its tail is this far in: the
 * pages before it are reused, and small messages still stream through
 * this much between two rewinds (set on pool_map_bytes; 64 KiB, with
 * 128 KiB chunks, measured the same within noise). */
#define REWIND_AT ((uint64_t)256 << 10)
/* Rounds between two checks that the holder process is alive (a /proc
 * read): not measured, keeps the check a small part of a yielding wait. */
#define LOCK_CHECK_EVERY 64
/* A holder that kept the lock this long is stopped (or very slow): only
 * then does a waiter's deadline count. Not measured: far above a running
 * holder's longest copy and a scheduler time slice. */
#define HOLDER_STUCK_NS (20 * 1000 * 1000)
/* How often a sleeper looks again when it cannot make the barrier with
 * membarrier(2) and might miss a signal: not measured, a bound on the
 * delay in that rare case. */
#define NO_BARRIER_RECHECK_NS (1000 * 1000)

/* One side's position: bytes and messages ever put (or taken). */
struct side {
  uint64_t pos, count;
};

struct weft_mpqueue {
  uint32_t magic;
  uint32_t closed;
  uint64_t capacity, maxsize; /* maxsize 0: none */
  uint32_t rewinds;           /* set before the queue is shared */
  uint32_t pad_;
  char name[QNAME_MAX + 1];
  _Alignas(64) uint64_t put_lock; /* the holder's owner_token(), 0: free */
  struct side tail;    /* written under put_lock */
  struct side journal_put;
  uint32_t journal_put_valid;
  uint64_t head_seen;  /* the putters' copy of head.pos */
  _Alignas(64) uint64_t get_lock;
  struct side head;    /* written under get_lock */
  struct side journal_get;
  uint32_t journal_get_valid;
  uint64_t tail_seen;  /* the getters' copy of tail.pos */
  _Alignas(64) uint64_t done; /* task_done calls */
  uint32_t spin_room, spin_item; /* spin budgets (weft__spin_adapt) */
  weft__chan not_empty, not_full, all_done;
  /* the ring follows, 64-byte aligned */
};

#define RING_OFFSET ((sizeof(struct weft_mpqueue) + 63) & ~(size_t)63)

static unsigned char *ring(weft_mpqueue *q) { return (unsigned char *)q + RING_OFFSET; }

static uint64_t record_size(size_t len) { return RECORD_HEADER + ((len + 7) & ~(uint64_t)7); }

static const char *qname(const weft_mpqueue *q) { return q->name[0] ? q->name : "process queue"; }

static uint64_t load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

weft_mpqueue *weft_mpqueue_new_opts(const weft_mpqueue_options *o) {
  static const weft_mpqueue_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  size_t capacity = o->capacity != 0 ? o->capacity : DEFAULT_CAPACITY;
  if (capacity < MIN_CAPACITY || capacity > WEFT_MPQUEUE_CAPACITY_MAX) {
    weft__error(WEFT_EINVAL, "weft_mpqueue_new: capacity %zu is outside %d..%zu bytes", capacity,
                MIN_CAPACITY, WEFT_MPQUEUE_CAPACITY_MAX);
    return NULL;
  }
  capacity &= ~(size_t)7; /* records are 8-aligned: a tail of 1-7 bytes could hold none */
  int err = 0;
  weft_mpqueue *q = weft__region_new(RING_OFFSET + capacity, &err);
  if (q == NULL) {
    weft__error(WEFT_ENOMEM, "weft_mpqueue_new: cannot map %zu bytes", RING_OFFSET + capacity);
    return NULL;
  }
  q->capacity = capacity;
  q->spin_room = q->spin_item = WEFT__SPIN_MAX;
  q->maxsize = o->maxsize > 0 ? (uint64_t)o->maxsize : 0;
  if (o->name != NULL) strncpy(q->name, o->name, QNAME_MAX);
  q->magic = MAGIC;
  weft_mpqueue *h = weft__ref_add(q, WEFT__REF_MPQUEUE, "weft_mpqueue_new");
  if (h == NULL) weft__region_free(q);
  return h;
}

/* ---- the side locks ---- */

/* Each side's lock is held for one message copy and never across a wait.
 * It is a spin lock released by a plain store (a read-modify-write there
 * would wait for the message's cache lines to reach the other core, on
 * every message). Its word names the holder process for good: pid in the
 * low half, the low 32 bits of the process's start time in the high half,
 * so a pid reused by a new process is not taken for the dead holder (nor
 * can the new one's lock word be mistaken for the old one's).
 *
 * A waiter spins, then yields, then naps a millisecond at a time (a holder
 * that is stopped, or preempted for long). Once it yields it checks every
 * so often whether the holder died, and takes the lock over if so. The
 * caller's deadline only counts once one holder kept the lock for
 * HOLDER_STUCK_NS: a put that must not wait still waits for a running
 * putter's copy, as Python's put_nowait waits for the queue's mutex. The
 * constants are at the top of the file. */

static uint64_t token_cache;
static pid_t token_pid;

static uint64_t owner_token(void) {
  pid_t me = weft__pid;
  if (__atomic_load_n(&token_pid, __ATOMIC_ACQUIRE) == me)
    return __atomic_load_n(&token_cache, __ATOMIC_RELAXED);
  uint64_t start = 0; /* without /proc: the pid alone */
  weft__os_process_start_time(me, &start);
  uint64_t token = (uint32_t)me | (uint64_t)(uint32_t)start << 32;
  __atomic_store_n(&token_cache, token, __ATOMIC_RELAXED);
  __atomic_store_n(&token_pid, me, __ATOMIC_RELEASE);
  return token;
}

static bool holder_gone(uint64_t holder) {
  pid_t pid = (pid_t)(uint32_t)holder;
  if (weft__os_process_gone(pid)) return true;
  uint64_t start;
  if (holder >> 32 == 0 || weft__os_process_start_time(pid, &start) != 0) return false;
  return (uint32_t)start != (uint32_t)(holder >> 32); /* the pid was reused */
}

static int plock(uint64_t *l, weft__deadline deadline) {
  uint64_t me = owner_token(), seen = 0;
  int64_t seen_since = 0;
  weft__tsan_pre_lock(l, 0);
  for (unsigned i = 0;; i < UINT32_MAX ? i++ : i) {
    uint64_t v = __atomic_load_n(l, __ATOMIC_RELAXED);
    if (v == 0 && __atomic_compare_exchange_n(l, &v, me, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
      break;
    if (i < LOCK_SPINS) {
      weft__cpu_relax();
      continue;
    }
    if (v != 0 && v != me && i % LOCK_CHECK_EVERY == 0 && holder_gone(v) &&
        __atomic_compare_exchange_n(l, &v, me, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
      weft__tsan_post_lock(l, 0, 0);
      return WEFT_EOWNERDEAD;
    }
    if (i < LOCK_SPINS + LOCK_YIELDS) {
      weft__os_yield();
      continue;
    }
    int64_t now = weft__os_now_ns();
    if (v != seen) { /* another holder: it may be quick */
      seen = v;
      seen_since = now;
    }
    if (deadline != WEFT__NEVER && now >= deadline && now - seen_since >= HOLDER_STUCK_NS) {
      weft__tsan_post_lock(l, WEFT__TSAN_TRY_LOCK | WEFT__TSAN_TRY_LOCK_FAILED, 0);
      return WEFT_ETIMEDOUT;
    }
    weft__os_sleep_until(weft__os_now_ns() + LOCK_NAP_NS);
  }
  weft__tsan_post_lock(l, 0, 0);
  return 0;
}

static void punlock(uint64_t *l) {
  weft__tsan_pre_unlock(l, 0);
  __atomic_store_n(l, 0, __ATOMIC_RELEASE);
  weft__tsan_post_unlock(l, 0);
}

/* Publishing a position: as in the thread queue, sleepers make the
 * barrier the publisher skips (membarrier(2), here across processes),
 * which works for processes that registered for it; one that could not
 * publishes with a sequentially consistent store instead. */
static pid_t registered_pid, tried_pid;

static bool registered(void) {
  pid_t me = weft__pid;
  if (__atomic_load_n(&registered_pid, __ATOMIC_RELAXED) == me) return true;
  if (__atomic_exchange_n(&tried_pid, me, __ATOMIC_RELAXED) == me) return false;
  if (weft__os_membarrier_global_register() != 0) return false;
  __atomic_store_n(&registered_pid, me, __ATOMIC_RELAXED);
  return true;
}

static void publish(uint64_t *p, uint64_t v) {
  if (registered()) __atomic_store_n(p, v, __ATOMIC_RELEASE);
  else __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* A sleeper's half of the handshake, after registering on the channel;
 * when the barrier cannot be made, the sleeper looks again every ms. */
static weft__deadline barrier_or_nap(weft__deadline deadline) {
  if (weft__os_membarrier_global() == 0) return deadline;
  weft__deadline soon = weft__os_now_ns() + NO_BARRIER_RECHECK_NS;
  return soon < deadline ? soon : deadline;
}

/* ---- one step commits, and their replay after a death ---- */

static void replay(struct side *s, struct side *journal, uint32_t *valid) {
  if (!__atomic_load_n(valid, __ATOMIC_ACQUIRE)) return;
  publish(&s->count, journal->count);
  publish(&s->pos, journal->pos);
  __atomic_store_n(valid, 0, __ATOMIC_RELEASE);
}

static void commit(struct side *s, struct side *journal, uint32_t *valid, uint64_t bytes) {
  journal->pos = s->pos + bytes;
  journal->count = s->count + 1;
  __atomic_store_n(valid, 1, __ATOMIC_RELEASE);
  replay(s, journal, valid);
}

/* After a death the other side may be asleep waiting for what the dead
 * one committed: wake it. */
static int lock_put(weft_mpqueue *q, weft__deadline deadline) {
  int r = plock(&q->put_lock, deadline);
  if (r != WEFT_EOWNERDEAD) return r;
  replay(&q->tail, &q->journal_put, &q->journal_put_valid);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  weft__chan_signal(&q->not_empty);
  return 0;
}

static int lock_get(weft_mpqueue *q, weft__deadline deadline) {
  int r = plock(&q->get_lock, deadline);
  if (r != WEFT_EOWNERDEAD) return r;
  replay(&q->head, &q->journal_get, &q->journal_get_valid);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  weft__chan_signal(&q->not_full);
  return 0;
}

/* A putter that died after its commit point (journal marked valid) has put
 * its message, but only the next putter would replay the journal; a getter
 * that finds nothing else does it instead, taking the putters' lock for a
 * moment (plock notices the death). A live putter in its commit only makes
 * the getter wait a few instructions. Never called with get_lock held.
 * The same for the other side. Returns whether it replayed. */
static bool repair_put_side(weft_mpqueue *q, weft__deadline deadline) {
  if (!__atomic_load_n(&q->journal_put_valid, __ATOMIC_ACQUIRE)) return false;
  if (lock_put(q, deadline) != 0) return false;
  punlock(&q->put_lock);
  return true;
}

static bool repair_get_side(weft_mpqueue *q, weft__deadline deadline) {
  if (!__atomic_load_n(&q->journal_get_valid, __ATOMIC_ACQUIRE)) return false;
  if (lock_get(q, deadline) != 0) return false;
  punlock(&q->get_lock);
  return true;
}

/* How long a sleep may last: a process that dies between changing the
 * queue and waking the sleepers leaves nobody to wake them, so every
 * sleeper looks again (and repairs) at least this often. */
static weft__deadline capped(weft__deadline deadline) {
  weft__deadline check = weft__os_now_ns() + SLEEP_CAP_NS;
  return check < deadline ? check : deadline;
}

static void copy_in(weft_mpqueue *q, uint64_t pos, const void *src, size_t n) {
  if (n == 0) return; /* src may be NULL then */
  size_t at = (size_t)(pos % q->capacity), first = q->capacity - at < n ? q->capacity - at : n;
  memcpy(ring(q) + at, src, first);
  memcpy(ring(q), (const unsigned char *)src + first, n - first);
}

static void copy_out(weft_mpqueue *q, uint64_t pos, void *dst, size_t n) {
  if (n == 0) return; /* dst may be NULL then */
  size_t at = (size_t)(pos % q->capacity), first = q->capacity - at < n ? q->capacity - at : n;
  memcpy(dst, ring(q) + at, first);
  memcpy((unsigned char *)dst + first, ring(q), n - first);
}

/* ---- put / get ---- */

/* The queue behind a handle (handle.h); NULL, with the error recorded,
 * for NULL, a freed queue or another object. */
static weft_mpqueue *queue_of(const weft_mpqueue *h, const char *fn, int *err) {
  return weft__ref_use(h, WEFT__REF_MPQUEUE, fn, err);
}

/* Swaps the handle *q for its queue. */
__attribute__((always_inline)) static inline int check(weft_mpqueue **q, const char *fn,
                                                      double timeout) {
  int err = 0;
  if ((*q = queue_of(*q, fn, &err)) == NULL) return err;
  if (timeout != timeout) return weft__error(WEFT_EINVAL, "%s: timeout is NaN", fn);
  return 0;
}

static bool is_closed(const weft_mpqueue *q) { return __atomic_load_n(&q->closed, __ATOMIC_SEQ_CST); }

/* The side's copy of the other side's position may have been read by
 * another process: ThreadSanitizer, which sees only this process, would
 * then find no order between this process's getter reading a record and
 * its putter writing over it (or the reverse). Loading the position itself
 * shows it the order; without ThreadSanitizer the copy saves the load. */
#if defined(__SANITIZE_THREAD__)
#define SEEN_BY_TSAN(pos) ((void)load(pos))
#else
#define SEEN_BY_TSAN(pos) ((void)0)
#endif

/* Room for rec more bytes, by the putters' copy of head (refreshed when it
 * says no). put_lock held. */
static bool room_for(weft_mpqueue *q, uint64_t rec) {
  if (q->maxsize != 0 && q->tail.count - load(&q->head.count) >= q->maxsize) return false;
  SEEN_BY_TSAN(&q->head.pos);
  if (q->tail.pos - q->head_seen + rec <= q->capacity) return true;
  q->head_seen = load(&q->head.pos);
  return q->tail.pos - q->head_seen + rec <= q->capacity;
}

/* Whether a message is there, by the getters' copy of tail. get_lock held. */
static bool message_there(weft_mpqueue *q) {
  SEEN_BY_TSAN(&q->tail.pos);
  if (q->head.pos != q->tail_seen) return true;
  q->tail_seen = load(&q->tail.pos);
  return q->head.pos != q->tail_seen;
}

/* The bytes a put of rec bytes skips to start at the ring's start: only
 * when the tail is past REWIND_AT and the messages held (none, or those a
 * getter is still reading where they lie) sit between the ring's start and
 * the tail, with room for this one before the first of them. */
static uint64_t rewind_skip(weft_mpqueue *q, uint64_t rec) {
  uint64_t at = q->tail.pos % q->capacity;
  if (!q->rewinds || at < REWIND_AT || rec > at) return 0;
  /* A getter only moves head towards tail, so what it frees meanwhile
   * only adds room. */
  q->head_seen = load(&q->head.pos);
  uint64_t used = q->tail.pos - q->head_seen, from = q->head_seen % q->capacity;
  if (used > at || from != at - used || rec > from) return 0;
  return q->capacity - at;
}

/* Lock-free looks for the waits. */
static bool looks_roomy(const weft_mpqueue *q, uint64_t rec) {
  if (q->maxsize != 0 && load(&q->tail.count) - load(&q->head.count) >= q->maxsize) return false;
  return load(&q->tail.pos) - load(&q->head.pos) + rec <= q->capacity;
}

static bool looks_nonempty(const weft_mpqueue *q) { return load(&q->tail.pos) != load(&q->head.pos); }

static int wait_room(weft_mpqueue *q, uint64_t rec, bool *spun, weft__deadline deadline) {
  if (!*spun) {
    *spun = true;
    /* Spin for a cache line more than the message needs: writing the
     * line the getter is reading would make the two cores trade it for
     * every message (see the thread queue's has_room_for_a_line). */
    uint64_t well = rec + 64 <= q->capacity ? rec + 64 : rec;
    uint32_t spins = __atomic_load_n(&q->spin_room, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < spins; i++) {
      if (looks_roomy(q, well) || is_closed(q)) return weft__spin_adapt(&q->spin_room, spins, true), 0;
      weft__cpu_relax();
    }
    weft__spin_adapt(&q->spin_room, spins, false);
    if (looks_roomy(q, rec)) return 0;
  }
  uint32_t gen = weft__chan_enter(&q->not_full);
  weft__deadline until = barrier_or_nap(capped(deadline));
  if (!looks_roomy(q, rec) && !is_closed(q) && !repair_get_side(q, deadline))
    weft__chan_sleep(&q->not_full, gen, until);
  weft__chan_leave(&q->not_full, gen);
  return 0;
}

static void wait_message(weft_mpqueue *q, bool *spun, weft__deadline deadline) {
  if (!*spun) {
    *spun = true;
    uint32_t spins = __atomic_load_n(&q->spin_item, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < spins; i++) {
      if (looks_nonempty(q) || is_closed(q)) return weft__spin_adapt(&q->spin_item, spins, true);
      weft__cpu_relax();
    }
    weft__spin_adapt(&q->spin_item, spins, false);
  }
  uint32_t gen = weft__chan_enter(&q->not_empty);
  weft__deadline until = barrier_or_nap(capped(deadline));
  if (!looks_nonempty(q) && !is_closed(q) && !repair_put_side(q, deadline))
    weft__chan_sleep(&q->not_empty, gen, until);
  weft__chan_leave(&q->not_empty, gen);
}

/* Writes n bytes of a message from fill at pos, around the ring's end. */
static void fill_in(weft_mpqueue *q, uint64_t pos, const struct weft__fill *fill, size_t n) {
  size_t at = (size_t)(pos % q->capacity), first = q->capacity - at < n ? q->capacity - at : n;
  if (first > 0) fill->fn(fill->arg, ring(q) + at, first);
  if (n > first) fill->fn(fill->arg, ring(q), n - first);
}

/* A put of one message made of two parts: head, then msg or, when fill is
 * given, len bytes that fill writes in place. */
static int put_parts(weft_mpqueue *q, const void *head, size_t head_len, const void *msg,
                     const struct weft__fill *fill, size_t len, double timeout) {
  int err = check(&q, "weft_mpqueue_put", timeout);
  if (err != 0) return err;
  if (len > SIZE_MAX / 2 - head_len)
    return weft__error(WEFT_EINVAL, "weft_mpqueue_put: length %zu is not valid (a negative number?)",
                       len);
  if (msg == NULL && fill == NULL && len > 0)
    return weft__error(WEFT_EINVAL, "weft_mpqueue_put: msg is NULL but len is %zu", len);
  size_t total = head_len + len;
  if (total > WEFT_MPQUEUE_CAPACITY_MAX - RECORD_HEADER - 7)
    return weft__error(WEFT_EMSGSIZE,
                       "%s: a %zu-byte message can never fit (no queue's capacity is above "
                       "WEFT_MPQUEUE_CAPACITY_MAX, %zu bytes)",
                       qname(q), total, (size_t)WEFT_MPQUEUE_CAPACITY_MAX);
  uint64_t rec = record_size(total);
  if (rec > q->capacity)
    return weft__error(WEFT_EMSGSIZE,
                       "%s: a %zu-byte message can never fit (capacity %llu bytes; a queue made "
                       "with .capacity = %llu or more takes it)",
                       qname(q), total, (unsigned long long)q->capacity,
                       (unsigned long long)rec);
  weft__deadline deadline;
  weft__deadline_from(timeout, &deadline);
  bool spun = false;
  for (;;) {
    if (lock_put(q, deadline) != 0) break; /* timed out behind a stopped putter */
    if (is_closed(q)) {
      punlock(&q->put_lock);
      return weft__error(WEFT_ECLOSED, "%s: put on a closed queue", qname(q));
    }
    if (room_for(q, rec)) {
      uint64_t skip = rewind_skip(q, rec), header = SKIP;
      if (skip != 0) copy_in(q, q->tail.pos, &header, sizeof header);
      header = total;
      copy_in(q, q->tail.pos + skip, &header, sizeof header);
      copy_in(q, q->tail.pos + skip + RECORD_HEADER, head, head_len);
      if (fill != NULL)
        fill_in(q, q->tail.pos + skip + RECORD_HEADER + head_len, fill, len);
      else
        copy_in(q, q->tail.pos + skip + RECORD_HEADER + head_len, msg, len);
      commit(&q->tail, &q->journal_put, &q->journal_put_valid, skip + rec);
      punlock(&q->put_lock);
      __atomic_signal_fence(__ATOMIC_SEQ_CST); /* the rest is the sleeper's barrier */
      weft__chan_signal(&q->not_empty);
      return 0;
    }
    punlock(&q->put_lock);
    if (repair_get_side(q, deadline)) continue;
    if (weft__deadline_passed(deadline)) break;
    wait_room(q, rec, &spun, deadline);
  }
  if (timeout <= 0) return weft__error(WEFT_EFULL, "%s: full", qname(q));
  return weft__error(WEFT_EFULL, "%s: still full after %g s", qname(q), timeout);
}

int weft_mpqueue_put(weft_mpqueue *q, const void *msg, size_t len, double timeout) {
  return put_parts(q, NULL, 0, msg, NULL, len, timeout);
}

void weft__mpqueue_rewinds(weft_mpqueue *h) {
  int err = 0;
  weft_mpqueue *q = queue_of(h, "weft__mpqueue_rewinds", &err);
  if (q != NULL) q->rewinds = 1;
}

bool weft__mpqueue_getter_asleep(weft_mpqueue *h) {
  int err = 0;
  weft_mpqueue *q = queue_of(h, "weft__mpqueue_getter_asleep", &err);
  return q != NULL && weft__chan_has_sleepers(&q->not_empty);
}

int weft__mpqueue_put_fill(weft_mpqueue *q, const void *head, size_t head_len,
                           const struct weft__fill *fill, size_t len, double timeout) {
  return put_parts(q, head, head_len, NULL, fill, len, timeout);
}

/* Takes the bytes of the message read (and a skip before it) off the ring,
 * lets go of the getters' side, and wakes a waiting putter. */
static void take(weft_mpqueue *q, uint64_t bytes) {
  commit(&q->head, &q->journal_get, &q->journal_get_valid, bytes);
  punlock(&q->get_lock);
  __atomic_signal_fence(__ATOMIC_SEQ_CST); /* the rest is the sleeper's barrier */
  weft__chan_signal(&q->not_full);
}

/* weft_mpqueue_get, or with view set, weft__mpqueue_get_view. */
static int get_message(weft_mpqueue *q, void *buf, size_t cap, size_t *len, double timeout,
                       struct weft__mpview *view) {
  int err = check(&q, "weft_mpqueue_get", timeout);
  if (err != 0) return err;
  if (len == NULL) return weft__error(WEFT_EINVAL, "weft_mpqueue_get: len is NULL");
  if (buf == NULL && cap > 0)
    return weft__error(WEFT_EINVAL, "weft_mpqueue_get: buf is NULL but cap is %zu", cap);
  weft__deadline deadline;
  weft__deadline_from(timeout, &deadline);
  bool spun = false;
  for (;;) {
    if (lock_get(q, deadline) != 0) break;
    /* Closed is read before the last look at tail: a message put before
     * close is always seen. */
    bool closed = is_closed(q);
    if (message_there(q)) {
      uint64_t header, skip = 0;
      copy_out(q, q->head.pos, &header, sizeof header);
      if (header == SKIP) {
        skip = q->capacity - q->head.pos % q->capacity;
        copy_out(q, q->head.pos + skip, &header, sizeof header);
      }
      if (header > cap) {
        punlock(&q->get_lock);
        *len = (size_t)header;
        return weft__error(WEFT_EMSGSIZE, "%s: the next message is %zu bytes, the buffer %zu",
                           qname(q), (size_t)header, cap);
      }
      uint64_t at = (q->head.pos + skip + RECORD_HEADER) % q->capacity;
      if (view != NULL && at + header <= q->capacity) {
        /* Whole in the ring: read there, taken by weft__mpqueue_view_done. */
        view->data = ring(q) + at;
        view->len = *len = (size_t)header;
        view->held = skip + record_size((size_t)header);
        return 0;
      }
      copy_out(q, q->head.pos + skip + RECORD_HEADER, buf, (size_t)header);
      if (view != NULL) *view = (struct weft__mpview){.data = buf, .len = (size_t)header};
      *len = (size_t)header;
      take(q, skip + record_size((size_t)header));
      return 0;
    }
    punlock(&q->get_lock);
    if (repair_put_side(q, deadline)) continue;
    if (closed) return weft__error(WEFT_ECLOSED, "%s: closed and empty", qname(q));
    if (weft__deadline_passed(deadline)) break;
    wait_message(q, &spun, deadline);
  }
  if (timeout <= 0) return weft__error(WEFT_EEMPTY, "%s: empty", qname(q));
  return weft__error(WEFT_EEMPTY, "%s: still empty after %g s", qname(q), timeout);
}

int weft_mpqueue_get(weft_mpqueue *q, void *buf, size_t cap, size_t *len, double timeout) {
  return get_message(q, buf, cap, len, timeout, NULL);
}

int weft__mpqueue_get_view(weft_mpqueue *q, void *buf, size_t cap, struct weft__mpview *view,
                           double timeout) {
  size_t len;
  return get_message(q, buf, cap, &len, timeout, view);
}

void weft__mpqueue_view_done(weft_mpqueue *h, struct weft__mpview *view) {
  if (view->held == 0) return;
  int err = 0;
  weft_mpqueue *q = queue_of(h, "weft__mpqueue_view_done", &err);
  if (q == NULL) return;
  take(q, view->held);
  view->held = 0;
}

static size_t qsize(const weft_mpqueue *q) {
  uint64_t head = load(&q->head.count); /* head first: never negative */
  return (size_t)(load(&q->tail.count) - head);
}

size_t weft_mpqueue_qsize(const weft_mpqueue *h) {
  int err;
  const weft_mpqueue *q = queue_of(h, "weft_mpqueue_qsize", &err);
  return q != NULL ? qsize(q) : 0;
}

bool weft_mpqueue_empty(const weft_mpqueue *h) {
  int err;
  const weft_mpqueue *q = queue_of(h, "weft_mpqueue_empty", &err);
  return q != NULL && qsize(q) == 0;
}

bool weft_mpqueue_full(const weft_mpqueue *h) {
  int err;
  const weft_mpqueue *q = queue_of(h, "weft_mpqueue_full", &err);
  return q != NULL && !looks_roomy(q, record_size(0));
}

int weft_mpqueue_task_done(weft_mpqueue *q) {
  int err = check(&q, "weft_mpqueue_task_done", 0);
  if (err != 0) return err;
  uint64_t done = load(&q->done);
  do {
    if (done >= load(&q->tail.count))
      return weft__error(WEFT_EINVAL, "%s: task_done called more times than messages were put",
                         qname(q));
  } while (!__atomic_compare_exchange_n(&q->done, &done, done + 1, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST));
  if (done + 1 == load(&q->tail.count)) weft__chan_signal(&q->all_done);
  return 0;
}

static bool all_done(const weft_mpqueue *q) { return load(&q->done) == load(&q->tail.count); }

int weft_mpqueue_join(weft_mpqueue *q, double timeout) {
  int err = check(&q, "weft_mpqueue_join", timeout);
  if (err != 0) return err;
  weft__deadline deadline;
  weft__deadline_from(timeout, &deadline);
  while (!all_done(q)) {
    if (weft__deadline_passed(deadline))
      return weft__error(WEFT_ETIMEDOUT, "%s: %llu messages not done within %g s", qname(q),
                         (unsigned long long)(load(&q->tail.count) - load(&q->done)), timeout);
    uint32_t gen = weft__chan_enter(&q->all_done);
    if (!all_done(q)) weft__chan_sleep(&q->all_done, gen, capped(deadline));
    weft__chan_leave(&q->all_done, gen);
  }
  return 0;
}

int weft_mpqueue_close(weft_mpqueue *q) {
  int err = check(&q, "weft_mpqueue_close", 0);
  if (err != 0) return err;
  /* Under put_lock, so no put is half done when close returns. */
  lock_put(q, WEFT__NEVER);
  __atomic_store_n(&q->closed, 1, __ATOMIC_SEQ_CST);
  punlock(&q->put_lock);
  weft__chan_signal(&q->not_empty);
  weft__chan_signal(&q->not_full);
  return 0;
}

int weft_mpqueue_free(weft_mpqueue *h) {
  if (h == NULL) return 0;
  weft_mpqueue *q = weft__ref_remove(h, WEFT__REF_MPQUEUE, "weft_mpqueue_free");
  if (q == NULL) return weft_last_error_code();
  weft__region_free(q);
  return 0;
}
