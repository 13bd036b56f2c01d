/* SPDX-License-Identifier: MIT */
/* weft_dump: every thread of the process and what it waits for, the locks
 * it holds, the live wait-for cycles, and the children.
 *
 * A dump may be taken at any moment, from a signal handler too, while the
 * threads it describes go on. So the whole path is async-signal-safe and
 * takes no lock any dumped thread could hold:
 *
 * - the thread records (dump.h) are never freed and are walked without a
 *   lock; each is read under its sequence counter, with atomic loads;
 * - everything else -- the locks a thread waits for or holds, their names,
 *   the deadlock detector's held stacks, the process registry's running
 *   list -- may be changed or freed while it is read, so it is copied
 *   through the kernel (weft__os_peek): memory gone reads as an error, and
 *   a copy torn by a concurrent change prints stale text, never crashes;
 * - text is formatted by hand into a fixed buffer and written with write(2)
 *   a line at a time: no stdio, no malloc;
 * - one dump runs at a time (an atomic flag), so the buffers are static;
 * - what a thread of another process waits for comes from the wait table
 *   (xwait.h), read as the deadlock detector reads it: atomic loads, each
 *   slot trusted only while its registration number stays the same.
 *
 * The watchdog that dumps when the program stalls is in dump_watch.c.
 */
#define _GNU_SOURCE
#include "weft/dump.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deadlock.h"
#include "dump.h"
#include "internal.h"
#include "lock.h"
#include "os/os.h"
#include "xwait.h"

/* The most threads and children one dump lists; the rest are counted. */
#define MAX_THREADS 512
#define MAX_CHILDREN 256
/* Reads of a record whose counter keeps moving before it is shown as
 * changing: its writer changes it for a few stores at a time. */
#define READ_TRIES 1000

/* ---- the records ---- */

_Thread_local struct weft__wait_rec *weft__wait_self __attribute__((tls_model("initial-exec")));
static struct weft__wait_rec *records; /* pushed at the head, never unlinked */
/* The first record, the main thread's, is static: a start's writes to it
 * (a join recorded, the child's pid and tid) then fall on weft's page of
 * small variables, which a start writes anyway, not on one more page of
 * the heap to copy. */
static struct weft__wait_rec first_record;
static bool first_taken;

static void store_identity(struct weft__wait_rec *r, const char *name, bool daemon) {
  uint32_t seq = __atomic_load_n(&r->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&r->seq, seq + 1, __ATOMIC_RELAXED);
  __atomic_store_n(&r->tid, weft__tid(), __ATOMIC_RELEASE);
  __atomic_store_n(&r->daemon, (uint32_t)daemon, __ATOMIC_RELEASE);
  __atomic_store_n(&r->kind, (uint32_t)WEFT__WAIT_NONE, __ATOMIC_RELEASE);
  __atomic_store_n(&r->dd, NULL, __ATOMIC_RELEASE);
  size_t i = 0;
  for (; name != NULL && name[i] != '\0' && i < sizeof r->name - 1; i++)
    __atomic_store_n(&r->name[i], name[i], __ATOMIC_RELEASE);
  __atomic_store_n(&r->name[i], '\0', __ATOMIC_RELEASE);
  __atomic_store_n(&r->seq, seq + 2, __ATOMIC_RELEASE);
}

void weft__wait_rec_take(const char *name, bool daemon) {
  struct weft__wait_rec *r = weft__wait_self;
  if (r == NULL) {
    /* A record of a thread that ended, or one a forked child inherited
     * from a thread that does not exist in it. */
    for (struct weft__wait_rec *f = __atomic_load_n(&records, __ATOMIC_ACQUIRE); f != NULL;
         f = f->next) {
      pid_t owner = __atomic_load_n(&f->pid, __ATOMIC_ACQUIRE);
      if (owner != weft__pid &&
          __atomic_compare_exchange_n(&f->pid, &owner, weft__pid, false, __ATOMIC_ACQ_REL,
                                      __ATOMIC_RELAXED)) {
        r = f;
        break;
      }
    }
  }
  if (r == NULL) {
    bool taken = false;
    if (__atomic_compare_exchange_n(&first_taken, &taken, true, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
      r = &first_record;
    else if ((r = calloc(1, sizeof *r)) == NULL)
      return;
    r->pid = weft__pid;
    r->next = __atomic_load_n(&records, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(&records, &r->next, r, false, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED)) {
    }
  }
  store_identity(r, name, daemon);
  weft__wait_self = r;
}

void weft__wait_rec_give_back(void) {
  struct weft__wait_rec *r = weft__wait_self;
  if (r == NULL) return;
  weft__wait_self = NULL;
  __atomic_store_n(&r->pid, 0, __ATOMIC_RELEASE);
}

WEFT__HOT void weft__wait_rec_forked(void) {
  struct weft__wait_rec *r = weft__wait_self;
  if (r == NULL) return;
  /* The other threads' records still name the parent: free here. */
  __atomic_store_n(&r->pid, weft__pid, __ATOMIC_RELAXED);
  __atomic_store_n(&r->tid, weft__pid, __ATOMIC_RELAXED); /* a child's one thread: tid == pid */
}

void weft__wait_rec_set_dd(void *dd) {
  struct weft__wait_rec *r = weft__wait_self;
  if (r == NULL) return;
  uint32_t seq = __atomic_load_n(&r->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&r->seq, seq + 1, __ATOMIC_RELAXED);
  __atomic_store_n(&r->dd, dd, __ATOMIC_RELEASE);
  __atomic_store_n(&r->seq, seq + 2, __ATOMIC_RELEASE);
}

/* Free records count too: their counts never go back. */
uint64_t weft__dump_progress(bool *waiting) {
  uint64_t sum = 0;
  *waiting = false;
  for (const struct weft__wait_rec *r = __atomic_load_n(&records, __ATOMIC_ACQUIRE); r != NULL;
       r = r->next) {
    sum += __atomic_load_n(&r->ends, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&r->pid, __ATOMIC_ACQUIRE) == weft__pid &&
        __atomic_load_n(&r->kind, __ATOMIC_ACQUIRE) != WEFT__WAIT_NONE)
      *waiting = true;
  }
  return sum;
}

/* One record as read at one moment. */
struct snap {
  uint32_t kind;
  const void *obj;
  const char *what, *site;
  int64_t arg, since;
  pid_t tid;
  bool daemon, torn;
  void *dd;
  char name[WEFT_NAME_MAX + 1];
};

static bool read_record(const struct weft__wait_rec *r, struct snap *s) {
  for (int tries = 0; tries < READ_TRIES; tries++) {
    uint32_t seq = __atomic_load_n(&r->seq, __ATOMIC_ACQUIRE);
    if (seq & 1) {
      weft__cpu_relax();
      continue;
    }
    s->kind = __atomic_load_n(&r->kind, __ATOMIC_ACQUIRE);
    s->obj = __atomic_load_n(&r->obj, __ATOMIC_ACQUIRE);
    s->what = __atomic_load_n(&r->what, __ATOMIC_ACQUIRE);
    s->site = __atomic_load_n(&r->site, __ATOMIC_ACQUIRE);
    s->arg = __atomic_load_n(&r->arg, __ATOMIC_ACQUIRE);
    s->since = __atomic_load_n(&r->since, __ATOMIC_ACQUIRE);
    s->tid = __atomic_load_n(&r->tid, __ATOMIC_ACQUIRE);
    s->daemon = __atomic_load_n(&r->daemon, __ATOMIC_ACQUIRE) != 0;
    s->dd = __atomic_load_n(&r->dd, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < sizeof s->name; i++)
      s->name[i] = __atomic_load_n(&r->name[i], __ATOMIC_ACQUIRE);
    s->name[sizeof s->name - 1] = '\0';
    if (__atomic_load_n(&r->seq, __ATOMIC_RELAXED) == seq) {
      s->torn = false;
      return true;
    }
  }
  s->torn = true; /* its writer is the thread this dump interrupted, or far too busy */
  return false;
}

/* ---- output: a line at a time, formatted by hand ---- */

struct out {
  int fd;
  int err; /* the first write error */
  size_t len;
  char buf[1024];
};

static void flush(struct out *o) {
  if (o->len == 0) return;
  int r = weft__os_write_all(o->fd, o->buf, o->len);
  if (r != 0 && o->err == 0) o->err = r;
  o->len = 0;
}

static void put_n(struct out *o, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (o->len == sizeof o->buf) flush(o);
    o->buf[o->len++] = s[i];
    if (s[i] == '\n') flush(o);
  }
}

static void put(struct out *o, const char *s) { put_n(o, s, strlen(s)); }

static void put_int(struct out *o, long long v) {
  char digits[24];
  int n = 0;
  unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
  do digits[n++] = (char)('0' + u % 10);
  while ((u /= 10) > 0);
  if (v < 0) put_n(o, "-", 1);
  while (n > 0) put_n(o, &digits[--n], 1);
}

static void put_hex(struct out *o, uintptr_t v) {
  char digits[2 + 2 * sizeof v];
  int n = 0;
  do digits[n++] = "0123456789abcdef"[v & 15];
  while ((v >>= 4) > 0);
  put(o, "0x");
  while (n > 0) put_n(o, &digits[--n], 1);
}

/* "1.250 s" */
static void put_seconds(struct out *o, int64_t ns) {
  if (ns < 0) ns = 0;
  int64_t ms = ns / 1000000;
  put_int(o, ms / 1000);
  char frac[5] = {'.', (char)('0' + ms / 100 % 10), (char)('0' + ms / 10 % 10),
                  (char)('0' + ms % 10), '\0'};
  put(o, frac);
  put(o, " s");
}

/* Copies the string at p (any pointer: it may be gone) into buf; control
 * characters become '?'. Returns whether anything could be read. */
static bool peek_text(const char *p, char *buf, size_t size) {
  buf[0] = '\0';
  if (p == NULL) return false;
  ssize_t n = weft__os_peek(weft__pid, buf, p, size - 1);
  if (n <= 0) return false;
  buf[n] = '\0';
  for (ssize_t i = 0; i < n && buf[i] != '\0'; i++)
    if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f) buf[i] = '?';
  return buf[0] != '\0';
}

static bool peek_lock(const void *addr, weft_lock *copy) {
  return addr != NULL &&
         weft__os_peek(weft__pid, copy, addr, sizeof *copy) == (ssize_t)sizeof *copy;
}

/* Whether a lock's name and site point into this program image. */
static bool lock_texts_here(const weft_lock *l) {
  return l->layout == 0 || l->layout == weft__layout;
}

/* A lock as the deadlock reports name it: "name", else "lock initialised
 * at file:line", else "lock 0x...". */
static void put_lock_label(struct out *o, const weft_lock *copy, const void *addr) {
  char text[WEFT_NAME_MAX + 1];
  put(o, "\"");
  if (copy != NULL && lock_texts_here(copy) && peek_text(copy->name, text, sizeof text)) {
    put(o, text);
  } else if (copy != NULL && lock_texts_here(copy) && peek_text(copy->site, text, sizeof text)) {
    put(o, "lock initialised at ");
    put(o, text);
  } else {
    put(o, "lock ");
    put_hex(o, (uintptr_t)addr);
  }
  put(o, "\"");
}

/* A site recorded with a wait or a held lock (a string literal normally). */
static void put_site(struct out *o, const char *site) {
  char text[256];
  if (peek_text(site, text, sizeof text)) {
    put(o, " at ");
    put(o, text);
  }
}

static void put_thread(struct out *o, const struct snap *s) {
  put(o, s->name);
  put(o, " (tid ");
  put_int(o, s->tid);
  put(o, ")");
}

/* ---- the dump ---- */

static struct snap snaps[MAX_THREADS] WEFT__COLD_BSS;
static int nsnaps, nrecords;
static int dumping; /* one dump at a time: the buffers above are shared */

static const struct snap *snap_of(pid_t tid) {
  for (int i = 0; i < nsnaps; i++)
    if (snaps[i].tid == tid && !snaps[i].torn) return &snaps[i];
  return NULL;
}

static void collect(void) {
  nsnaps = nrecords = 0;
  for (const struct weft__wait_rec *r = __atomic_load_n(&records, __ATOMIC_ACQUIRE); r != NULL;
       r = r->next) {
    if (__atomic_load_n(&r->pid, __ATOMIC_ACQUIRE) != weft__pid) continue;
    nrecords++;
    if (nsnaps == MAX_THREADS) continue;
    struct snap *s = &snaps[nsnaps];
    read_record(r, s);
    /* Taken since pid was read by a thread not yet done writing itself. */
    if (__atomic_load_n(&r->pid, __ATOMIC_ACQUIRE) != weft__pid) {
      nrecords--;
      continue;
    }
    /* In tid order: the main thread first, then by age, mostly. */
    int i = nsnaps++;
    struct snap tmp = *s;
    while (i > 0 && snaps[i - 1].tid > tmp.tid) {
      snaps[i] = snaps[i - 1];
      i--;
    }
    snaps[i] = tmp;
  }
}

/* The thread holding the lock, if it is one of this process's. */
static const struct snap *holder_of(const weft_lock *copy) {
  if (copy->word == WEFT__LOCK_DESTROYED || weft__lock_holder_pid(copy) != weft__pid) return NULL;
  return snap_of(WEFT__OWNER_TID(weft__lock_owner(copy)));
}

/* Text another process wrote: control characters become '?'. */
static void put_foreign(struct out *o, const char *text) {
  for (size_t i = 0; text[i] != '\0'; i++) {
    char c = (unsigned char)text[i] < 0x20 || text[i] == 0x7f ? '?' : text[i];
    put_n(o, &c, 1);
  }
}

/* "process "name" (pid N), thread T (tid N)", as the reports name a thread
 * of another process. */
static void put_xthread(struct out *o, const char *proc, pid_t pid, const char *thread, pid_t tid) {
  put(o, "process \"");
  put_foreign(o, proc);
  put(o, "\" (pid ");
  put_int(o, pid);
  put(o, "), thread ");
  put_foreign(o, thread);
  put(o, " (tid ");
  put_int(o, tid);
  put(o, ")");
}

/* ", which waits for "label" at site" */
static void put_waits_for(struct out *o, const char *label, const char *site) {
  put(o, ", which waits for \"");
  put_foreign(o, label);
  put(o, "\"");
  if (site[0] != '\0') {
    put(o, " at ");
    put_foreign(o, site);
  }
}

struct child_name {
  pid_t pid;
  char name[WEFT_NAME_MAX + 1];
};

static void match_child(void *arg, const char *name, pid_t pid, bool daemon) {
  (void)daemon;
  struct child_name *c = arg;
  if (pid != c->pid || c->name[0] != '\0') return;
  size_t i = 0;
  for (; name[i] != '\0' && i < sizeof c->name - 1; i++) c->name[i] = name[i];
  c->name[i] = '\0';
}

/* A holder in another process: with what it waits for, if its wait is in
 * the wait table; else by its name if it is a child of this process. */
static void put_other_holder(struct out *o, pid_t pid, pid_t tid) {
  static struct weft__xw_wait w WEFT__COLD_BSS;
  put(o, "; held by ");
  if (tid != 0 && weft__xw_peek(pid, tid, &w)) {
    put_xthread(o, w.proc, pid, w.thread, tid);
    put_waits_for(o, w.label, w.site);
    return;
  }
  static struct child_name c WEFT__COLD_BSS;
  c.pid = pid;
  c.name[0] = '\0';
  weft__process_each_child(match_child, &c, MAX_CHILDREN);
  put(o, "process ");
  if (c.name[0] != '\0') {
    put(o, "\"");
    put_foreign(o, c.name);
    put(o, "\" (pid ");
    put_int(o, pid);
    put(o, ")");
  } else {
    put_int(o, pid);
  }
}

static void put_holder(struct out *o, const weft_lock *copy) {
  pid_t pid = weft__lock_holder_pid(copy);
  if (copy->word == WEFT__LOCK_DESTROYED) {
    put(o, "; destroyed");
  } else if (pid == 0) {
    put(o, "; free now");
  } else if (pid != weft__pid) {
    put_other_holder(o, pid, WEFT__OWNER_TID(weft__lock_owner(copy)));
  } else {
    const struct snap *h = holder_of(copy);
    put(o, "; held by ");
    if (h != NULL) {
      put_thread(o, h);
    } else {
      put(o, "tid ");
      put_int(o, WEFT__OWNER_TID(weft__lock_owner(copy)));
    }
  }
}

static void put_wait(struct out *o, const struct snap *s, int64_t now) {
  char text[WEFT_NAME_MAX + 1];
  weft_lock copy;
  bool named = peek_text(s->what, text, sizeof text);
  switch ((enum weft__wait_kind)s->kind) {
    case WEFT__WAIT_NONE: return;
    case WEFT__WAIT_LOCK:
      put(o, "waiting for lock ");
      put_lock_label(o, peek_lock(s->obj, &copy) ? &copy : NULL, s->obj);
      break;
    case WEFT__WAIT_COND:
      put(o, "waiting on condition ");
      put_lock_label(o, peek_lock(s->obj, &copy) ? &copy : NULL, s->obj);
      break;
    case WEFT__WAIT_SEMAPHORE:
      put(o, "waiting on semaphore ");
      if (named) {
        put(o, "\"");
        put(o, text);
        put(o, "\"");
      } else {
        put_hex(o, (uintptr_t)s->obj);
      }
      break;
    case WEFT__WAIT_EVENT:
      put(o, "waiting on event ");
      put_hex(o, (uintptr_t)s->obj);
      break;
    case WEFT__WAIT_BARRIER:
      put(o, "waiting at barrier ");
      if (peek_lock(s->obj, &copy) && lock_texts_here(&copy) &&
          peek_text(copy.site, text, sizeof text)) {
        put(o, "\"barrier initialised at ");
        put(o, text);
        put(o, "\"");
      } else {
        put_hex(o, (uintptr_t)s->obj);
      }
      break;
    case WEFT__WAIT_QUEUE_GET: put(o, "waiting to get from "); break;
    case WEFT__WAIT_QUEUE_PUT: put(o, "waiting to put into "); break;
    case WEFT__WAIT_QUEUE_JOIN: put(o, "waiting to join "); break;
    case WEFT__WAIT_THREAD_JOIN:
      put(o, "waiting to join ");
      put(o, named ? text : "a thread");
      break;
    case WEFT__WAIT_PROCESS_JOIN:
      put(o, "waiting to join ");
      put(o, named ? text : "a process");
      put(o, " (pid ");
      put_int(o, s->arg);
      put(o, ")");
      break;
    case WEFT__WAIT_FUTURE: put(o, "waiting for the result of a future"); break;
    default: put(o, "waiting"); break;
  }
  if (s->kind >= WEFT__WAIT_QUEUE_GET && s->kind <= WEFT__WAIT_QUEUE_JOIN) {
    put(o, "queue \"");
    put(o, named ? text : "queue");
    put(o, "\"");
  }
  put_site(o, s->site);
  put(o, " for ");
  put_seconds(o, now - s->since);
  if (s->kind == WEFT__WAIT_LOCK && peek_lock(s->obj, &copy)) put_holder(o, &copy);
}

/* The locks the thread holds, from the deadlock detector's held stack. An
 * entry is shown only while the lock's owner is still this thread: another
 * thread may have released it (and freed it) since. */
static void put_held(struct out *o, const struct snap *s) {
  if (!__atomic_load_n(&weft__dd_on, __ATOMIC_RELAXED)) {
    put(o, "    held locks not tracked (deadlock detection is off)\n");
    return;
  }
  const struct weft__dd_thread *t = s->dd;
  int depth = 0;
  static struct weft__dd_held held[WEFT__DD_MAX_HELD] WEFT__COLD_BSS;
  ssize_t got = t != NULL ? weft__os_peek(weft__pid, &depth, &t->depth, sizeof depth) : 0;
  if (got == -EPERM || got == -ENOSYS) {
    /* A sandbox (seccomp) that refuses process_vm_readv: say so rather
     * than "holds no lock". */
    put(o, "    held locks not readable here (process_vm_readv is refused)\n");
    return;
  }
  if (got != (ssize_t)sizeof depth || depth <= 0 || depth > WEFT__DD_MAX_HELD ||
      weft__os_peek(weft__pid, held, t->held, sizeof held[0] * (size_t)depth) !=
          (ssize_t)(sizeof held[0] * (size_t)depth))
    depth = 0;
  int shown = 0;
  for (int i = 0; i < depth; i++) {
    weft_lock copy;
    if (!peek_lock(held[i].lock, &copy) || copy.word == WEFT__LOCK_DESTROYED ||
        weft__lock_holder_pid(&copy) != weft__pid ||
        WEFT__OWNER_TID(weft__lock_owner(&copy)) != s->tid)
      continue;
    put(o, "    holds ");
    put_lock_label(o, &copy, held[i].lock);
    put(o, " acquired");
    if (held[i].site != NULL)
      put_site(o, held[i].site);
    else
      put(o, " at (site unknown)");
    put(o, "\n");
    shown++;
  }
  if (shown == 0) put(o, "    holds no lock\n");
}

/* ---- live deadlocks ---- */

/* The longest chain through other processes followed (as the detector's). */
#define MAX_XSTEPS 64

/* One step of a chain of waits: a lock and the thread holding it, of this
 * process (snap) or of another (xw, its wait as the wait table holds it;
 * its label is that of the lock of the next step). */
struct step {
  const void *lock;
  pid_t pid, tid;
  const struct snap *snap;
  const struct weft__xw_wait *xw;
};

static struct step chain[MAX_THREADS + MAX_XSTEPS] WEFT__COLD_BSS;
static struct weft__xw_wait xws[MAX_XSTEPS] WEFT__COLD_BSS;

/* Follows the chain from start, a thread of this process waiting for a
 * lock: holder -> the lock it waits for -> its holder ..., through other
 * processes by the wait table. Returns its length if it comes back to
 * start, else 0. *lowest: start has the lowest tid of this process's
 * threads in it. */
static int follow(const struct snap *start, bool *lowest) {
  int n = 0, nx = 0;
  const void *lock = start->obj;
  weft_lock copy;
  if (!peek_lock(lock, &copy) || copy.word == WEFT__LOCK_DESTROYED) return 0;
  pid_t hp = weft__lock_holder_pid(&copy), ht = WEFT__OWNER_TID(weft__lock_owner(&copy));
  *lowest = true;
  while (n < (int)(sizeof chain / sizeof chain[0]) && hp != 0 && ht != 0) {
    for (int k = 0; k < n; k++)
      if (chain[k].pid == hp && chain[k].tid == ht) return 0; /* a cycle without start */
    struct step *s = &chain[n];
    *s = (struct step){lock, hp, ht, NULL, NULL};
    if (hp == weft__pid) {
      if ((s->snap = snap_of(ht)) == NULL) return 0;
      if (ht < start->tid) *lowest = false;
      n++;
      if (s->snap == start) return n;
      if (s->snap->kind != WEFT__WAIT_LOCK) return 0;
      lock = s->snap->obj;
    } else {
      if (nx == MAX_XSTEPS || !weft__xw_peek(hp, ht, &xws[nx])) return 0;
      s->xw = &xws[nx++];
      n++;
      lock = (const void *)(uintptr_t)s->xw->lock;
      if (s->xw->holder != 0) { /* private to that process: as its waiter saw it */
        hp = (pid_t)(s->xw->holder >> 32);
        ht = (pid_t)(uint32_t)s->xw->holder;
        continue;
      }
    }
    /* A shared lock has the same address here; one this process does not
     * map reads as an error. */
    if (!peek_lock(lock, &copy) || copy.word == WEFT__LOCK_DESTROYED) return 0;
    hp = weft__lock_holder_pid(&copy);
    ht = WEFT__OWNER_TID(weft__lock_owner(&copy));
  }
  return 0;
}

/* The label of the lock of step k of the chain: from the wait table if a
 * thread of another process waits for it. */
static void put_step_lock(struct out *o, int k) {
  if (k > 0 && chain[k - 1].xw != NULL) {
    put(o, "\"");
    put_foreign(o, chain[k - 1].xw->label);
    put(o, "\"");
    return;
  }
  weft_lock copy;
  put_lock_label(o, peek_lock(chain[k].lock, &copy) ? &copy : NULL, chain[k].lock);
}

/* A cycle through other processes, in the words of the detector's report. */
static void put_xcycle(struct out *o, int n) {
  int procs = 0;
  for (int k = 0; k < n; k++) {
    bool seen = false;
    for (int m = 0; m < k && !seen; m++) seen = chain[m].pid == chain[k].pid;
    procs += !seen;
  }
  char own[WEFT_NAME_MAX + 1];
  if (!peek_text(weft__process_own_name(), own, sizeof own)) memcpy(own, "process", 8);
  put(o, "  live deadlock: ");
  put_int(o, n);
  put(o, " threads of ");
  put_int(o, procs);
  put(o, " processes wait for each other; the chain of waits, across processes:\n");
  for (int k = 0; k < n; k++) {
    const struct step *s = &chain[k];
    put(o, "    ");
    put_step_lock(o, k);
    put(o, " is held by ");
    if (s->xw != NULL) {
      put_xthread(o, s->xw->proc, s->pid, s->xw->thread, s->tid);
      put_waits_for(o, s->xw->label, s->xw->site);
    } else {
      put_xthread(o, own, s->pid, s->snap->name, s->tid);
      put(o, ", which waits for ");
      put_step_lock(o, (k + 1) % n);
      put_site(o, s->snap->site);
    }
    put(o, "\n");
  }
}

/* The live deadlocks: from each thread waiting for a lock, owner -> the
 * lock it waits for -> its owner ..., as the detector's live check does,
 * through other processes as the wait table shows them; a chain back to
 * the start is a cycle, shown once (from its lowest tid in this process). */
static void put_cycles(struct out *o) {
  for (int i = 0; i < nsnaps; i++) {
    const struct snap *start = &snaps[i];
    if (start->torn || start->kind != WEFT__WAIT_LOCK) continue;
    bool lowest;
    int n = follow(start, &lowest);
    if (n == 0 || !lowest) continue;
    bool across = false;
    for (int k = 0; k < n; k++) across |= chain[k].xw != NULL;
    if (across) {
      put_xcycle(o, n);
      continue;
    }
    put(o, "  live deadlock: ");
    put_int(o, n);
    put(o, n == 1 ? " thread waits for a lock it holds itself; the chain of waits:\n"
                  : " threads wait for each other; the chain of waits:\n");
    for (int k = 0; k < n; k++) {
      put(o, "    ");
      put_step_lock(o, k);
      put(o, " is held by ");
      put_thread(o, chain[k].snap);
      put(o, ", which waits for the next\n");
    }
  }
}

struct children_ctx {
  struct out *o;
  int n;
};

static void put_child(void *arg, const char *name, pid_t pid, bool daemon) {
  struct children_ctx *c = arg;
  struct out *o = c->o;
  if (c->n++ == 0) put(o, "  children:\n");
  put(o, "    ");
  put(o, name);
  put(o, " (pid ");
  put_int(o, pid);
  put(o, daemon ? "), daemon: " : "): ");
  char state = weft__os_task_state(pid, 0);
  if (state == 'Z' || state == '?')
    put(o, "ended, not joined yet\n");
  else {
    put(o, state == 'T' || state == 't' ? "stopped" : "running");
    put(o, " (kernel state ");
    put_n(o, &state, 1);
    put(o, ")\n");
  }
}

/* The dump itself; reason says what asked for it (may be empty). */
int weft__dump_to(int fd, const char *reason) {
  static struct out o WEFT__COLD_BSS;
  int busy = 0;
  if (!__atomic_compare_exchange_n(&dumping, &busy, 1, false, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED)) {
    /* Not o: the dump under way owns it. */
    static const char msg[] = "weft: a dump is already being written; this one is skipped\n";
    weft__os_write_all(fd, msg, sizeof msg - 1);
    return WEFT_EBUSY;
  }
  o.fd = fd;
  o.err = 0;
  o.len = 0;
  int64_t now = weft__os_now_ns();
  collect();
  char text[WEFT_NAME_MAX + 1];
  put(&o, "weft: dump of ");
  put(&o, peek_text(weft__process_own_name(), text, sizeof text) ? text : "this process");
  put(&o, " (pid ");
  put_int(&o, weft__pid);
  put(&o, "): ");
  put_int(&o, nrecords);
  put(&o, nrecords == 1 ? " thread" : " threads");
  put(&o, reason);
  put(&o, "\n");
  for (int i = 0; i < nsnaps; i++) {
    const struct snap *s = &snaps[i];
    put(&o, "  ");
    if (s->torn) {
      put(&o, "a thread whose record was changing as it was read\n");
      continue;
    }
    put_thread(&o, s);
    put(&o, s->daemon ? ", daemon: " : ": ");
    if (s->kind != WEFT__WAIT_NONE) {
      put_wait(&o, s, now);
    } else {
      char state = weft__os_task_state(weft__pid, s->tid);
      put(&o, "running (in no weft wait; kernel state ");
      put_n(&o, &state, 1);
      put(&o, ")");
    }
    put(&o, "\n");
    put_held(&o, s);
  }
  if (nrecords > nsnaps) {
    put(&o, "  ... (");
    put_int(&o, nrecords - nsnaps);
    put(&o, " more, not shown)\n");
  }
  put_cycles(&o);
  struct children_ctx c = {&o, 0};
  int shown = weft__process_each_child(put_child, &c, MAX_CHILDREN);
  if (shown == MAX_CHILDREN) put(&o, "    ... (more children not shown)\n");
  put(&o, "weft: end of dump\n");
  flush(&o);
  int err = o.err;
  __atomic_store_n(&dumping, 0, __ATOMIC_RELEASE);
  return err;
}

int weft_dump(void) { return weft_dump_fd(2); }

int weft_dump_fd(int fd) {
  if (fd < 0) return weft__error(WEFT_EINVAL, "weft_dump_fd: fd %d is negative", fd);
  int r = weft__dump_to(fd, "");
  if (r == WEFT_EBUSY)
    return weft__error(r, "weft_dump_fd: another dump is being written (one at a time)");
  if (r == -EBADF)
    return weft__error(WEFT_EINVAL, "weft_dump_fd: fd %d is not open for writing", fd);
  if (r != 0)
    return weft__error(r, "weft_dump_fd: writing to fd %d failed: %s", fd, weft_strerror(r));
  return 0;
}

/* ---- on a signal ---- */

static uint64_t registered; /* bit n: the dump's handler is on signal n */

static void on_signal(int sig) {
  int saved = weft__os_errno_get();
  char reason[48] = " (on signal ";
  size_t n = strlen(reason);
  const char *abbrev = sigabbrev_np(sig);
  if (abbrev != NULL && n + 4 + strlen(abbrev) + 2 < sizeof reason) {
    memcpy(reason + n, "SIG", 3);
    n += 3;
    memcpy(reason + n, abbrev, strlen(abbrev));
    n += strlen(abbrev);
  }
  reason[n++] = ')';
  reason[n] = '\0';
  weft__dump_to(2, reason);
  weft__os_errno_set(saved);
}

/* Signals a dump must not take: they cannot be caught, or come from a
 * fault that returning from the handler would only repeat. */
static bool refused(int sig) {
  return sig == SIGKILL || sig == SIGSTOP || sig == SIGSEGV || sig == SIGBUS || sig == SIGILL ||
         sig == SIGFPE || sig == SIGTRAP || sig == SIGSYS;
}

int weft_dump_register(int signum) {
  if (signum <= 0 || signum >= 64 || signum >= NSIG || refused(signum))
    return weft__error(WEFT_EINVAL,
                       "weft_dump_register: signal %d cannot carry a dump (a catchable signal "
                       "that is not a fault, such as SIGQUIT or SIGUSR1)", signum);
  if (__atomic_load_n(&registered, __ATOMIC_RELAXED) >> signum & 1) return 0;
  int r = weft__os_signal_handle(signum, on_signal);
  if (r != 0) return weft__error(r, "weft_dump_register: sigaction(%d) failed", signum);
  __atomic_fetch_or(&registered, 1ull << signum, __ATOMIC_RELAXED);
  return 0;
}

int weft_dump_unregister(int signum) {
  if (signum <= 0 || signum >= 64 || signum >= NSIG)
    return weft__error(WEFT_EINVAL, "weft_dump_unregister: %d is not a signal number", signum);
  if (!(__atomic_load_n(&registered, __ATOMIC_RELAXED) >> signum & 1)) return 0;
  int r = weft__os_signal_restore(signum);
  if (r != 0) return weft__error(r, "weft_dump_unregister: sigaction(%d) failed", signum);
  __atomic_fetch_and(&registered, ~(1ull << signum), __ATOMIC_RELAXED);
  return 0;
}

/* "1": SIGQUIT; else a name with or without SIG (any case) or a number
 * other than 1. 0 for none ("0" or ""), -1 for a bad value. */
static int parse_signal(const char *v) {
  if (v[0] == '\0' || strcmp(v, "0") == 0) return 0;
  if (strcmp(v, "1") == 0) return SIGQUIT;
  char *end;
  long n = strtol(v, &end, 10);
  if (end != v && *end == '\0')
    return n > 1 && n < 64 && n < NSIG && !refused((int)n) ? (int)n : -1;
  const char *name = strncasecmp(v, "SIG", 3) == 0 ? v + 3 : v;
  for (int sig = 1; sig < 64 && sig < NSIG; sig++) {
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev != NULL && strcasecmp(abbrev, name) == 0) return refused(sig) ? -1 : sig;
  }
  return -1;
}

void weft__dump_init(void) {
  const char *sig = getenv("WEFT_DUMP_SIGNAL");
  if (sig != NULL) {
    int n = parse_signal(sig);
    if (n < 0 || (n > 0 && weft_dump_register(n) != 0))
      fprintf(stderr,
              "weft: WEFT_DUMP_SIGNAL=%s is not 1 (SIGQUIT), 0 or a signal name or number that "
              "can carry a dump (QUIT, USR1, 12); no dump on a signal\n", sig);
  }
}
