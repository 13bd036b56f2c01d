/* SPDX-License-Identifier: MIT */
/* The wait table (xwait.h): waits for locks held by other processes, in
 * shared memory every process of the tree maps at the same address.
 *
 * A lock in shared memory already names its holder (pid in the word,
 * thread in `owner`); what another process cannot see is what that holder
 * itself waits for. So a thread about to sleep on a lock held by another
 * process writes "pid, tid waits for lock X" into a slot of the table, then
 * follows the chain from X. The table is made with the first region a
 * process makes, before anything it could share exists, so every child
 * started afterwards has it: a forked one inherits the mapping, a spawned
 * one is sent it with the other regions.
 *
 * Exactly one member of a cycle acts on it. Each member registers (with a
 * number from a shared counter, sequentially consistent) before it reads
 * the others' slots, so the member that registered last sees every other
 * registration, and so the whole cycle; one that registered earlier may
 * see it too, but then it sees a later number in it and leaves the cycle
 * to that member. The one with the largest number reports and, in error
 * mode, refuses its acquire; the others keep waiting and get their locks
 * once it backs off.
 *
 * A slot is trusted only while it is its writer's: its number is read
 * before and after the rest, and a number of 0 (written or cleared) or a
 * changed key ends the chain. A process killed while waiting leaves its
 * slot behind, so a slot also records when its process started: a pid that
 * is gone (or a zombie), or reused by a process started at another time,
 * ends the chain there. Such slots are taken over when the table is full.
 *
 * A wait for a lock held by another thread of the waiter's own process is
 * registered too when it can be a step of such a chain: when the waiter
 * holds a lock in shared memory (another process can wait for it), or the
 * lock's holder is registered itself (the chain leaves the process through
 * it). Otherwise it costs nothing here -- a program that shares nothing has
 * no table -- and the detector within the process covers it. If that lock
 * is private to the process, no other process can read its holder, so the
 * slot records it, and the waiter updates it each time it sleeps again.
 */
#define _GNU_SOURCE
#include "xwait.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadlock.h"
#include "deadlock_report.h"
#include "internal.h"
#include "lock.h"
#include "os/os.h"
#include "region.h"
#include "weft/process.h"

#define MAGIC 0x77667877u /* "wfxw" */
/* The longest chain followed: a longer one is cut (and not reported). */
#define MAX_STEPS 64

struct slot {
  uint64_t seq;   /* the registration's number; 0 while written or cleared */
  uint64_t lock;  /* the lock waited for: at the same address in every process, unless private */
  uint64_t start; /* when the waiting process started (weft__os_process_start_time) */
  uint64_t holder; /* a private lock's holder, as struct weft__xw_wait says; 0: shared */
  char proc[WEFT_NAME_MAX + 1], thread[WEFT_NAME_MAX + 1];
  char label[128], site[128];
};

struct table {
  uint32_t magic, nslots;
  uint64_t counter __attribute__((aligned(64))); /* the last registration's number */
  /* pid << 32 | tid of the waiting thread, 0: free. Apart from the slots,
   * so that a search reads 8 KiB, not every slot's page. */
  uint64_t keys[WEFT__XW_SLOTS] __attribute__((aligned(64)));
  struct slot slots[WEFT__XW_SLOTS];
};

static struct table *table;
/* The slot of the caller's registered wait, -1: none. */
static _Thread_local int my_slot __attribute__((tls_model("initial-exec"))) = -1;

size_t weft__xw_table_size(void) { return (sizeof(struct table) + 4095) & ~(size_t)4095; }

void weft__xw_set_table(void *t) {
  struct table *x = t;
  /* A fresh table is zeroed: the first to see it stamps it. */
  uint32_t zero = 0;
  __atomic_compare_exchange_n(&x->magic, &zero, MAGIC, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
  __atomic_store_n(&x->nslots, WEFT__XW_SLOTS, __ATOMIC_RELAXED);
  __atomic_store_n(&table, x, __ATOMIC_RELEASE);
}

void *weft__xw_get_table(void) { return __atomic_load_n(&table, __ATOMIC_ACQUIRE); }

/* Text other processes read while it may be rewritten: byte by byte, as
 * atomics, and trusted only if the slot's number did not change. Release
 * stores and acquire loads, as in a seqlock: a reader that sees a byte of
 * a new registration also sees the number cleared before it. */
static void put_text(char *dst, size_t size, const char *src) {
  size_t i = 0;
  for (; src != NULL && src[i] != '\0' && i < size - 1; i++)
    __atomic_store_n(&dst[i], src[i], __ATOMIC_RELEASE);
  __atomic_store_n(&dst[i], '\0', __ATOMIC_RELEASE);
}

static void get_text(char *dst, size_t size, const char *src) {
  size_t i = 0;
  for (; i < size - 1; i++)
    if ((dst[i] = __atomic_load_n(&src[i], __ATOMIC_ACQUIRE)) == '\0') return;
  dst[i] = '\0';
}

static uint64_t key_of(pid_t pid, pid_t tid) { return (uint64_t)(uint32_t)pid << 32 | (uint32_t)tid; }

/* When this process started, read once per process (a fork gets its own). */
static uint64_t my_start(void) {
  static pid_t for_pid;
  static uint64_t ticks;
  if (__atomic_load_n(&for_pid, __ATOMIC_ACQUIRE) != weft__pid) {
    uint64_t t = 0;
    weft__os_process_start_time(weft__pid, &t);
    __atomic_store_n(&ticks, t, __ATOMIC_RELAXED);
    __atomic_store_n(&for_pid, weft__pid, __ATOMIC_RELEASE);
  }
  return __atomic_load_n(&ticks, __ATOMIC_RELAXED);
}

/* Whether process pid is the one that started at `start`: alive, not a
 * zombie, and not a newer process that was given a dead one's pid. */
static bool same_process_alive(pid_t pid, uint64_t start) {
  if (pid == weft__pid) return start == my_start();
  uint64_t now = 0;
  return !weft__os_process_gone(pid) && weft__os_process_start_time(pid, &now) == 0 && now == start;
}

/* How many threads of this process have a slot now, as pid << 32 | count
 * (a forked child, whose pid differs, starts from none). Raised before the
 * claim and lowered after the release, sequentially consistent, so that a
 * thread that reads 0 here would not have seen a slot of this process in
 * the table either: may_join then scans none. */
static uint64_t own_slots;

static void own_slots_add(int d) {
  uint64_t v = __atomic_load_n(&own_slots, __ATOMIC_RELAXED), n;
  do {
    uint32_t c = (pid_t)(v >> 32) == weft__pid ? (uint32_t)v : 0;
    n = (uint64_t)(uint32_t)weft__pid << 32 | (uint32_t)((int)c + d);
  } while (!__atomic_compare_exchange_n(&own_slots, &v, n, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED));
}

static bool own_slots_any(void) {
  uint64_t v = __atomic_load_n(&own_slots, __ATOMIC_SEQ_CST);
  return (pid_t)(v >> 32) == weft__pid && (uint32_t)v != 0;
}

static int claim(struct table *t, uint64_t key) {
  uint32_t home = (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 40) & (WEFT__XW_SLOTS - 1);
  for (uint32_t i = 0; i < WEFT__XW_SLOTS; i++) {
    uint32_t at = (home + i) & (WEFT__XW_SLOTS - 1);
    uint64_t free_key = 0;
    if (__atomic_load_n(&t->keys[at], __ATOMIC_RELAXED) == 0 &&
        __atomic_compare_exchange_n(&t->keys[at], &free_key, key, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED))
      return (int)at;
  }
  /* Full: take over a slot its process left behind when it died. */
  for (uint32_t at = 0; at < WEFT__XW_SLOTS; at++) {
    uint64_t k = __atomic_load_n(&t->keys[at], __ATOMIC_SEQ_CST);
    pid_t pid = (pid_t)(k >> 32);
    if (k == 0 || pid == weft__pid) continue;
    uint64_t start = __atomic_load_n(&t->slots[at].start, __ATOMIC_RELAXED);
    if (!same_process_alive(pid, start) &&
        __atomic_compare_exchange_n(&t->keys[at], &k, key, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED)) {
      __atomic_store_n(&t->slots[at].seq, 0, __ATOMIC_SEQ_CST);
      return (int)at;
    }
  }
  return -1;
}

/* Reads the registered wait of thread tid of process pid into w: false if
 * it has none, or its slot changed while read, or its process is gone. */
static bool read_wait(struct table *t, pid_t pid, pid_t tid, struct weft__xw_wait *w) {
  uint64_t key = key_of(pid, tid);
  for (uint32_t at = 0; at < WEFT__XW_SLOTS; at++) {
    if (__atomic_load_n(&t->keys[at], __ATOMIC_SEQ_CST) != key) continue;
    struct slot *sl = &t->slots[at];
    uint64_t seq = __atomic_load_n(&sl->seq, __ATOMIC_SEQ_CST);
    if (seq == 0) return false; /* being written: its writer looks after us */
    /* Acquire loads: none may move after the second read of the number. */
    w->lock = __atomic_load_n(&sl->lock, __ATOMIC_ACQUIRE);
    w->holder = __atomic_load_n(&sl->holder, __ATOMIC_ACQUIRE);
    uint64_t start = __atomic_load_n(&sl->start, __ATOMIC_ACQUIRE);
    get_text(w->proc, sizeof w->proc, sl->proc);
    get_text(w->thread, sizeof w->thread, sl->thread);
    get_text(w->site, sizeof w->site, sl->site);
    get_text(w->label, sizeof w->label, sl->label);
    if (__atomic_load_n(&sl->seq, __ATOMIC_SEQ_CST) != seq ||
        __atomic_load_n(&t->keys[at], __ATOMIC_SEQ_CST) != key)
      return false;
    if (!same_process_alive(pid, start)) return false;
    w->seq = seq;
    return true;
  }
  return false;
}

bool weft__xw_peek(pid_t pid, pid_t tid, struct weft__xw_wait *w) {
  struct table *t = weft__xw_get_table();
  return t != NULL && read_wait(t, pid, tid, w);
}

/* A lock's holder as a key; 0 while it has none, or its new holder has not
 * written its thread yet. */
static uint64_t holder_key(const weft_lock *l) {
  pid_t pid = weft__lock_holder_pid(l), tid = WEFT__OWNER_TID(weft__lock_owner(l));
  return pid != 0 && tid != 0 ? key_of(pid, tid) : 0;
}

/* Whether the caller's wait for l, held within its process, can be a step
 * of a chain across processes (see the top of the file). */
static bool may_join(struct table *t, const weft_lock *l) {
  const struct weft__dd_thread *me = weft__dd_self;
  for (int i = 0; me != NULL && i < me->depth; i++)
    if (weft__region_holds(me->held[i].lock)) return true;
  uint64_t key = holder_key(l);
  if (key == 0 || !own_slots_any()) return false; /* the usual: no scan */
  for (uint32_t at = 0; at < WEFT__XW_SLOTS; at++)
    if (__atomic_load_n(&t->keys[at], __ATOMIC_SEQ_CST) == key) return true;
  return false;
}

static const char *process_name(void) {
  const char *name = weft_process_name(weft_current_process());
  return name != NULL ? name : "process";
}

int weft__xw_before_sleep(weft_lock *l, bool forever, bool may_refuse, const char *site) {
  struct table *t = weft__xw_get_table();
  if (t == NULL || my_slot >= 0) return 0;
  /* Only a lock in shared memory has the same address in another process,
   * and only such addresses are read below when another process wrote
   * them: any other could be unmapped here, or be something else. */
  bool other = weft__lock_holder_pid(l) != weft__pid;
  /* may_join first: a wait within the process by a thread holding no lock
   * then looks up no region (a global mutex the waiters would contend for). */
  if (other ? !weft__region_holds(l) : !may_join(t, l)) return 0;
  bool shared = other || weft__region_holds(l);
  struct weft__dd_thread *me = weft__dd_me();
  pid_t tid = weft__tid();
  own_slots_add(1);
  int at = claim(t, key_of(weft__pid, tid));
  if (at < 0) { /* full: this wait goes unseen by the others */
    own_slots_add(-1);
    return 0;
  }
  my_slot = at;
  struct slot *sl = &t->slots[at];
  const char *proc = process_name();
  char label[128];
  weft__dd_lock_label(l, label, sizeof label);
  __atomic_store_n(&sl->lock, (uint64_t)(uintptr_t)l, __ATOMIC_RELEASE);
  __atomic_store_n(&sl->start, my_start(), __ATOMIC_RELEASE);
  /* A private lock's holder not known yet (tid 0) ends a chain there until
   * the waiter sleeps again. */
  uint64_t holder = shared ? 0 : holder_key(l);
  if (!shared && holder == 0) holder = key_of(weft__pid, 0);
  __atomic_store_n(&sl->holder, holder, __ATOMIC_RELEASE);
  put_text(sl->proc, sizeof sl->proc, proc);
  put_text(sl->thread, sizeof sl->thread, me->name);
  put_text(sl->label, sizeof sl->label, label);
  put_text(sl->site, sizeof sl->site, site != NULL ? site : "");
  uint64_t my_seq = __atomic_add_fetch(&t->counter, 1, __ATOMIC_SEQ_CST);
  __atomic_store_n(&sl->seq, my_seq, __ATOMIC_SEQ_CST);

  /* Follow lock -> holder -> the lock it waits for, until the chain comes
   * back here, ends, or loops without us. */
  /* On the heap: 32 KiB would strain a small thread stack, and this path
   * is about to sleep anyway. Without memory the wait goes unchecked. */
  struct weft__dd_xstep *steps = malloc(sizeof *steps * MAX_STEPS);
  if (steps == NULL) return 1;
  int n = 0;
  /* The lock at hand and its holder: read from the lock where this process
   * can read it, else as that lock's waiter recorded it. */
  const void *cur = l;
  pid_t hp = weft__lock_holder_pid(l), ht = WEFT__OWNER_TID(weft__lock_owner(l));
  char cur_label[128];
  snprintf(cur_label, sizeof cur_label, "%s", label);
  bool cycle = false, left = false; /* left: a step is in another process */
  while (n < MAX_STEPS && hp != 0 && ht != 0) {
    struct weft__dd_xstep *s = &steps[n];
    memset(s, 0, sizeof *s);
    s->lock = cur;
    s->pid = hp;
    s->tid = ht;
    snprintf(s->label, sizeof s->label, "%s", cur_label);
    if (hp == weft__pid && ht == tid) {
      snprintf(s->proc, sizeof s->proc, "%s", proc);
      snprintf(s->thread, sizeof s->thread, "%s", me->name);
      s->seq = my_seq;
      n++;
      cycle = true;
      break;
    }
    bool looped = false;
    for (int i = 0; i < n && !looped; i++) looped = steps[i].pid == hp && steps[i].tid == ht;
    if (looped) break; /* a cycle we only wait on: its members see it */
    struct weft__xw_wait w;
    weft_lock *next_lock = NULL;
    if (read_wait(t, hp, ht, &w)) {
      snprintf(s->proc, sizeof s->proc, "%s", w.proc);
      snprintf(s->thread, sizeof s->thread, "%s", w.thread);
      snprintf(s->site, sizeof s->site, "%s", w.site);
      snprintf(cur_label, sizeof cur_label, "%s", w.label);
      s->seq = w.seq;
      cur = (const void *)(uintptr_t)w.lock;
      if (w.holder != 0) {
        hp = (pid_t)(w.holder >> 32);
        ht = (pid_t)(uint32_t)w.holder;
      } else {
        next_lock = (weft_lock *)(uintptr_t)w.lock;
        if (!weft__region_holds(next_lock)) break;
      }
    } else if (hp == weft__pid &&
               weft__dd_thread_awaits(ht, &next_lock, s->thread, sizeof s->thread, s->site,
                                      sizeof s->site)) {
      snprintf(s->proc, sizeof s->proc, "%s", proc);
      weft__dd_lock_label(next_lock, cur_label, sizeof cur_label);
      cur = next_lock;
    } else {
      break;
    }
    if (next_lock != NULL) {
      hp = weft__lock_holder_pid(next_lock);
      ht = WEFT__OWNER_TID(weft__lock_owner(next_lock));
    }
    left |= s->pid != weft__pid;
    n++;
  }
  /* A cycle within the process is the detector's own (deadlock.c). */
  bool act = cycle && left;
  for (int i = 0; i < n && act; i++)
    if (steps[i].seq > my_seq) act = false; /* a later member acts */
  if (!act) {
    free(steps);
    return 1;
  }
  struct weft__dd_report r = {0};
  weft__dd_lock();
  weft__dd_report_xlive_locked(&r, me, proc, l, site, forever, steps, n);
  weft__dd_unlock();
  free(steps);
  weft__dd_deliver(&r);
  return may_refuse && weft__dd_error_mode() ? WEFT_EDEADLK : 1;
}

void weft__xw_resleep(const weft_lock *l) {
  struct table *t = weft__xw_get_table();
  int at = my_slot;
  if (t == NULL || at < 0) return;
  uint64_t *recorded = &t->slots[at].holder;
  if (__atomic_load_n(recorded, __ATOMIC_RELAXED) == 0) return; /* others read the lock */
  uint64_t now = holder_key(l);
  if (now != 0) __atomic_store_n(recorded, now, __ATOMIC_RELEASE);
}

void weft__xw_after(void) {
  struct table *t = weft__xw_get_table();
  int at = my_slot;
  if (t == NULL || at < 0) return;
  my_slot = -1;
  __atomic_store_n(&t->slots[at].seq, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&t->keys[at], 0, __ATOMIC_RELEASE);
  own_slots_add(-1);
}
