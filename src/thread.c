/* SPDX-License-Identifier: MIT */
/* Threads: Python's threading.Thread over detached pthreads.
 *
 * Threads are detached so that one nobody joins costs nothing once it ends,
 * as in Python; join waits on the object's `done` futex instead, which also
 * gives join a timeout. Objects live in a handle table under one mutex
 * (`registry`), held only for short work; the fork handlers take it. A
 * running thread holds a reference on its own object.
 */
#define _GNU_SOURCE
#include "weft/thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"
#include "dump.h"
#include "handle.h"
#include "internal.h"
#include "os/os.h"
#include "runtime.h"

/* Tuning, measured on make bench's thread_start_join row (a 2-core VM, and
 * the same pinned to one CPU); see join_spins. */
/* A join that slept and saw the thread end within this long counts its
 * watch as just short, so the next join watches longer. */
#define JOIN_SHORT_NS (50 * 1000)
/* A watching joiner yields its CPU once every this many rounds, in case the
 * thread it waits for needs that CPU. */
#define JOIN_YIELD_EVERY 64

enum kind { KIND_WEFT, KIND_MAIN, KIND_DUMMY };
enum state { ST_INITIAL, ST_STARTED, ST_STOPPED };

struct thr {
  uint64_t id;
  int refs; /* the table, the running thread, calls in flight */
  enum kind kind;
  enum state state;
  bool daemon;
  bool in_table;
  bool closed;   /* the handle was closed while the thread ran: freed when it ends */
  bool live;     /* on the live list */
  struct thr *live_prev, *live_next;
  weft_thread_target target;
  void *arg;
  void *result;
  pthread_t pthread;
  uint32_t tid;  /* futex: 0 until the thread has run */
  uint32_t done; /* futex: 1 once the target returned */
  char name[WEFT_NAME_MAX + 1];
};

static pthread_mutex_t registry = PTHREAD_MUTEX_INITIALIZER;
static weft__handle_table table;
static struct thr main_thr = {.kind = KIND_MAIN, .state = ST_STARTED, .name = "MainThread"};
static struct thr *main_thread = &main_thr;
static unsigned counter;        /* numbers Thread-N and Dummy-N, as Python's _counter */
/* The threads started and not yet ended, oldest first, so that enumerate,
 * the exit rules and the fork handler walk the threads alive, not every
 * handle ever made. n_active counts those whose handle is not closed:
 * weft_active_count reads it without the registry. */
static struct thr *live_head, *live_tail;
static int n_active;
static bool exit_hook_set;      /* the atexit join is registered at the first start */
static pthread_key_t self_key;  /* its destructor runs when any known thread ends */
static _Thread_local struct thr *self __attribute__((tls_model("initial-exec")));

static void thread_ended(void *obj);
static void live_add_locked(struct thr *t);

void weft__thread_init(void) {
  pthread_key_create(&self_key, thread_ended);
  main_thr.pthread = pthread_self();
  main_thr.tid = (uint32_t)weft__pid;
  main_thr.refs = 1;
  main_thr.in_table = true;
  main_thr.id = weft__handle_add(&table, &main_thr);
  live_add_locked(&main_thr);
  self = &main_thr;
  weft__wait_rec_take(main_thr.name, false);
}

/* ---- references ---- */

static struct thr *get_locked(weft_thread h, const char *fn) {
  struct thr *t = weft__handle_get(&table, h.id);
  if (t == NULL || t->closed) {
    weft__error(WEFT_ECLOSED, "%s: the thread handle is closed or invalid", fn);
    return NULL;
  }
  t->refs++;
  return t;
}

static void put_locked(struct thr *t) {
  if (--t->refs == 0 && t != &main_thr) free(t);
}

/* Takes t out of the table and drops the table's reference; the caller
 * holds another, so t stays valid until the caller's put_locked. */
static void remove_locked(struct thr *t) {
  if (!t->in_table) return;
  weft__handle_remove(&table, t->id);
  t->in_table = false;
  t->refs--;
}

static bool is_done(const struct thr *t) { return __atomic_load_n(&t->done, __ATOMIC_ACQUIRE); }

static bool alive_locked(const struct thr *t) { return t->state == ST_STARTED && !is_done(t); }

/* The live list holds exactly the threads for which alive_locked holds. */
static void live_add_locked(struct thr *t) {
  if (t->live) return;
  t->live = true;
  t->live_next = NULL;
  t->live_prev = live_tail;
  if (live_tail != NULL)
    live_tail->live_next = t;
  else
    live_head = t;
  live_tail = t;
  if (!t->closed) __atomic_store_n(&n_active, n_active + 1, __ATOMIC_RELAXED);
}

static void live_remove_locked(struct thr *t) {
  if (!t->live) return;
  if (t->live_prev != NULL)
    t->live_prev->live_next = t->live_next;
  else
    live_head = t->live_next;
  if (t->live_next != NULL)
    t->live_next->live_prev = t->live_prev;
  else
    live_tail = t->live_prev;
  t->live_prev = t->live_next = NULL;
  t->live = false;
  if (!t->closed) __atomic_store_n(&n_active, n_active - 1, __ATOMIC_RELAXED);
}

/* ---- creation ---- */

static struct thr *new_locked(void) {
  struct thr *t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  t->refs = 1;
  t->in_table = true;
  t->id = weft__handle_add(&table, t);
  if (t->id == 0) {
    free(t);
    return NULL;
  }
  return t;
}

weft_thread weft_thread_new_opts(weft_thread_target target, const char *target_name,
                                 const weft_thread_options *o) {
  static const weft_thread_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  weft_thread none = {0};
  if (target == NULL) {
    weft__error(WEFT_EINVAL, "weft_thread_new: target is NULL");
    return none;
  }
  if (o->name != NULL && strlen(o->name) > WEFT_NAME_MAX) {
    weft__error(WEFT_EINVAL, "weft_thread_new: name is longer than %d bytes", WEFT_NAME_MAX);
    return none;
  }
  struct thr *creator = self; /* NULL in a thread weft never saw: a Dummy, a daemon */
  pthread_mutex_lock(&registry);
  struct thr *t = new_locked();
  if (t == NULL) {
    pthread_mutex_unlock(&registry);
    weft__error(WEFT_ENOMEM, "weft_thread_new: out of memory");
    return none;
  }
  t->kind = KIND_WEFT;
  t->target = target;
  t->arg = o->arg;
  t->daemon = o->daemon || creator == NULL || creator->daemon;
  if (o->name != NULL)
    snprintf(t->name, sizeof t->name, "%s", o->name);
  else if (target_name != NULL && target_name[0] != '\0')
    snprintf(t->name, sizeof t->name, "Thread-%u (%.40s)", ++counter, target_name);
  else
    snprintf(t->name, sizeof t->name, "Thread-%u", ++counter);
  weft_thread h = {t->id};
  pthread_mutex_unlock(&registry);
  return h;
}

/* ---- the thread's own side ---- */

/* Marks t finished and wakes its joiners. Runs in the thread itself, from
 * its start routine or, if it called pthread_exit, its key destructor. */
static void finish(struct thr *t, void *result) {
  weft__wait_rec_give_back();
  pthread_mutex_lock(&registry);
  t->result = result;
  t->state = ST_STOPPED;
  __atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
  live_remove_locked(t);
  if (t->kind == KIND_DUMMY || t->closed) remove_locked(t); /* nobody can join it */
  /* Woken after the unlock: a joiner watching `done` would otherwise find
   * the registry still held and sleep on it. t may be freed by then; the
   * wake touches only the address, which the kernel tolerates. */
  uint32_t *done = &t->done;
  put_locked(t); /* the running thread's reference */
  pthread_mutex_unlock(&registry);
  weft__os_futex_wake(done, INT32_MAX);
}

static void thread_ended(void *obj) {
  struct thr *t = obj;
  if (!is_done(t)) finish(t, NULL);
}

static void *thread_main(void *obj) {
  struct thr *t = obj;
  self = t;
  pthread_setspecific(self_key, t);
  __atomic_store_n(&t->tid, (uint32_t)weft__tid(), __ATOMIC_RELEASE);
  weft__os_futex_wake(&t->tid, INT32_MAX);
  weft__os_set_thread_name(t->name);
  weft__wait_rec_take(t->name, t->daemon);
  void *result = t->target(t->arg);
  pthread_setspecific(self_key, NULL);
  finish(t, result);
  return NULL;
}

/* ---- start and join ---- */

static void join_all_at_exit(void) { weft__thread_exit_rules(); }

int weft_thread_start(weft_thread h) {
  pthread_mutex_lock(&registry);
  struct thr *t = get_locked(h, __func__);
  if (t == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  int err = 0;
  if (t->kind != KIND_WEFT || t->state != ST_INITIAL) {
    err = weft__error(WEFT_EALREADY, "%s was already started", t->name);
  } else {
    if (!exit_hook_set) {
      exit_hook_set = true;
      atexit(join_all_at_exit);
    }
    t->state = ST_STARTED;
    t->refs++; /* the running thread's */
    live_add_locked(t); /* before it runs: it may end before pthread_create returns */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t->pthread, &attr, thread_main, t);
    pthread_attr_destroy(&attr);
    if (r != 0) {
      live_remove_locked(t);
      t->state = ST_INITIAL;
      t->refs--;
      err = weft__error(-r, "could not start %s: %s", t->name, strerror(r));
    }
  }
  put_locked(t);
  pthread_mutex_unlock(&registry);
  return err;
}

/* How many rounds a join watches for the thread's end before it sleeps.
 * A joiner that sleeps at once lets its CPU go idle, and waking it costs
 * about as much again as a short thread's whole start (measured here:
 * start + join 24 us sleeping at once, 14 us watching). The budget doubles
 * when the watch paid off, or fell just short (the end came within
 * JOIN_SHORT_NS of sleeping), and halves otherwise, so joins of threads
 * that run on for long soon watch only a few rounds. */
static uint32_t join_spins = WEFT__SPIN_MAX;

static bool watch_for_end(const struct thr *t, uint32_t spins) {
  for (uint32_t i = 1; i <= spins; i++) {
    if (is_done(t)) return true;
    /* The thread may be waiting for this very CPU (one CPU, or the others
     * busy): let it run now and then. */
    if (i % JOIN_YIELD_EVERY == 0)
      weft__os_yield();
    else
      weft__cpu_relax();
  }
  return is_done(t);
}

int(weft_thread_join)(weft_thread h, double timeout, void **result) {
  return weft_thread_join_at(h, timeout, result, NULL);
}

int weft_thread_join_at(weft_thread h, double timeout, void **result, const char *site) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return err;
  pthread_mutex_lock(&registry);
  struct thr *t = get_locked(h, "weft_thread_join");
  if (t == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  if (t == self)
    err = weft__error(WEFT_EDEADLK, "weft_thread_join: %s cannot join itself", t->name);
  else if (t->kind != KIND_WEFT)
    err = weft__error(WEFT_EPERM, "weft_thread_join: %s was not started by weft", t->name);
  else if (t->state == ST_INITIAL)
    err = weft__error(WEFT_ENOTSTARTED, "weft_thread_join: %s has not been started", t->name);
  pthread_mutex_unlock(&registry);
  uint32_t spins = 0;
  int64_t slept_from = 0;
  if (err == 0 && timeout > 0 && !is_done(t)) {
    spins = __atomic_load_n(&join_spins, __ATOMIC_RELAXED);
    if (watch_for_end(t, spins))
      weft__spin_adapt(&join_spins, spins, true);
    else
      slept_from = weft__os_now_ns();
  }
  /* t->name lives as long as the reference this call holds. */
  bool waiting = err == 0 && !is_done(t) &&
                 weft__wait_begin(WEFT__WAIT_THREAD_JOIN, t, t->name, site, 0);
  while (err == 0 && !is_done(t)) {
    if (weft__os_futex_wait(&t->done, 0, deadline) == -ETIMEDOUT && !is_done(t))
      err = weft__error(WEFT_ETIMEDOUT, "weft_thread_join: %s still running after %g s", t->name,
                        timeout);
  }
  weft__wait_end(waiting);
  if (slept_from != 0)
    weft__spin_adapt(&join_spins, spins, err == 0 && weft__os_now_ns() - slept_from < JOIN_SHORT_NS);
  pthread_mutex_lock(&registry);
  if (err == 0 && result != NULL) *result = t->result;
  put_locked(t);
  pthread_mutex_unlock(&registry);
  return err;
}

/* ---- attributes ---- */

bool weft_thread_is_alive(weft_thread h) {
  pthread_mutex_lock(&registry);
  struct thr *t = get_locked(h, __func__);
  bool alive = false;
  if (t != NULL) {
    alive = alive_locked(t);
    put_locked(t);
  }
  pthread_mutex_unlock(&registry);
  return alive;
}

uint64_t weft_thread_ident(weft_thread h) {
  pthread_mutex_lock(&registry);
  struct thr *t = get_locked(h, __func__);
  uint64_t ident = 0;
  if (t != NULL) {
    if (t->state != ST_INITIAL) ident = (uint64_t)t->pthread;
    put_locked(t);
  }
  pthread_mutex_unlock(&registry);
  return ident;
}

pid_t weft_thread_native_id(weft_thread h) {
  pthread_mutex_lock(&registry);
  struct thr *t = get_locked(h, __func__);
  if (t == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  bool started = t->state != ST_INITIAL;
  pthread_mutex_unlock(&registry);
  pid_t tid = WEFT_ENOTSTARTED;
  if (started) {
    /* A thread just started may not have run yet; one the fork handler
     * marked done (it never ran in this child) never will. */
    while (__atomic_load_n(&t->tid, __ATOMIC_ACQUIRE) == 0 && !is_done(t))
      weft__os_futex_wait(&t->tid, 0, WEFT__NEVER);
    tid = t == &main_thr && main_thread == &main_thr
              ? weft__pid
              : (pid_t)__atomic_load_n(&t->tid, __ATOMIC_ACQUIRE);
    if (tid == 0)
      tid = weft__error(WEFT_ESRCH, "weft_thread_native_id: %s never ran in this process",
                        t->name);
  } else {
    weft__error(tid, "weft_thread_native_id: %s has not been started", t->name);
  }
  pthread_mutex_lock(&registry);
  put_locked(t);
  pthread_mutex_unlock(&registry);
  return tid;
}

const char *weft_thread_name(weft_thread h) {
  pthread_mutex_lock(&registry);
  struct thr *t = get_locked(h, __func__);
  const char *name = NULL;
  if (t != NULL) {
    name = t->name;
    put_locked(t);
  }
  pthread_mutex_unlock(&registry);
  return name;
}

bool weft_thread_daemon(weft_thread h) {
  pthread_mutex_lock(&registry);
  struct thr *t = get_locked(h, __func__);
  bool daemon = false;
  if (t != NULL) {
    daemon = t->daemon;
    put_locked(t);
  }
  pthread_mutex_unlock(&registry);
  return daemon;
}

int weft_thread_set_daemon(weft_thread h, bool daemon) {
  pthread_mutex_lock(&registry);
  struct thr *t = get_locked(h, __func__);
  if (t == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  int err = 0;
  if (t->state != ST_INITIAL)
    err = weft__error(WEFT_EALREADY,
                      "weft_thread_set_daemon: %s was already started; set daemon before start",
                      t->name);
  else
    t->daemon = daemon;
  put_locked(t);
  pthread_mutex_unlock(&registry);
  return err;
}

char *weft_thread_repr(weft_thread h, char *buf, size_t size) {
  if (buf == NULL || size == 0) {
    weft__error(WEFT_EINVAL, "weft_thread_repr: %s", buf == NULL ? "buf is NULL" : "size is 0");
    return NULL;
  }
  if (h.id == 0) {
    snprintf(buf, size, "None");
    return buf;
  }
  pthread_mutex_lock(&registry);
  struct thr *t = weft__handle_get(&table, h.id);
  if (t == NULL || t->closed) {
    pthread_mutex_unlock(&registry);
    snprintf(buf, size, "<Thread closed>");
    return buf;
  }
  const char *type = t->kind == KIND_MAIN    ? "_MainThread"
                     : t->kind == KIND_DUMMY ? "_DummyThread"
                                             : "Thread";
  const char *status = t->state == ST_INITIAL ? "initial" : is_done(t) ? "stopped" : "started";
  char ident[32] = "";
  if (t->state != ST_INITIAL) snprintf(ident, sizeof ident, " %lu", (unsigned long)t->pthread);
  snprintf(buf, size, "<%s(%s, %s%s%s)>", type, t->name, status, t->daemon ? " daemon" : "",
           ident);
  pthread_mutex_unlock(&registry);
  return buf;
}

int weft_thread_close(weft_thread h) {
  pthread_mutex_lock(&registry);
  struct thr *t = get_locked(h, __func__);
  if (t == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  int err = 0;
  if (t->kind != KIND_WEFT)
    err = weft__error(WEFT_EPERM, "weft_thread_close: %s was not started by weft", t->name);
  else if (alive_locked(t)) {
    /* Stays in the table and on the live list for the exit rules until it
     * ends; no longer counted nor listed. */
    if (t->live && !t->closed) __atomic_store_n(&n_active, n_active - 1, __ATOMIC_RELAXED);
    t->closed = true;
  }
  else
    remove_locked(t);
  put_locked(t);
  pthread_mutex_unlock(&registry);
  return err;
}

/* ---- the calling thread and the others ---- */

weft_thread weft_current_thread(void) {
  struct thr *t = self;
  if (t != NULL) return (weft_thread){t->id};
  pthread_mutex_lock(&registry);
  t = new_locked();
  if (t == NULL) {
    pthread_mutex_unlock(&registry);
    weft__error(WEFT_ENOMEM, "weft_current_thread: out of memory");
    return (weft_thread){0};
  }
  t->kind = KIND_DUMMY;
  t->state = ST_STARTED;
  live_add_locked(t);
  t->daemon = true;
  t->pthread = pthread_self();
  t->tid = (uint32_t)weft__tid();
  t->refs++; /* the running thread's, dropped by thread_ended */
  snprintf(t->name, sizeof t->name, "Dummy-%u", ++counter);
  weft_thread h = {t->id};
  pthread_mutex_unlock(&registry);
  self = t;
  pthread_setspecific(self_key, t);
  weft__wait_rec_take(t->name, true);
  return h;
}

weft_thread weft_main_thread(void) {
  pthread_mutex_lock(&registry);
  weft_thread h = {main_thread->id};
  pthread_mutex_unlock(&registry);
  return h;
}

int weft_enumerate(weft_thread *out, size_t max) {
  if (out == NULL && max > 0)
    return weft__error(WEFT_EINVAL, "weft_enumerate: out is NULL but max is %zu", max);
  weft_current_thread(); /* the caller counts, as in Python, even if weft did not start it */
  int count = 0;
  pthread_mutex_lock(&registry);
  for (struct thr *t = live_head; t != NULL; t = t->live_next) {
    if (t->closed) continue;
    if ((size_t)count < max) out[count] = (weft_thread){t->id};
    count++;
  }
  pthread_mutex_unlock(&registry);
  return count;
}

int weft_active_count(void) {
  weft_current_thread(); /* as weft_enumerate */
  return __atomic_load_n(&n_active, __ATOMIC_RELAXED);
}

/* ---- exit rules ---- */

static struct thr *find_nondaemon_locked(void) {
  for (struct thr *t = live_head; t != NULL; t = t->live_next)
    if (t->kind == KIND_WEFT && !t->daemon && t != self && alive_locked(t)) return t;
  return NULL;
}

/* Joins every live non-daemon thread but the caller, one at a time; threads
 * they start meanwhile are found by the next search. */
WEFT__HOT void weft__thread_exit_rules(void) {
  pthread_mutex_lock(&registry);
  for (;;) {
    struct thr *t = find_nondaemon_locked();
    if (t == NULL) break;
    t->refs++;
    pthread_mutex_unlock(&registry);
    while (!is_done(t)) weft__os_futex_wait(&t->done, 0, WEFT__NEVER);
    pthread_mutex_lock(&registry);
    put_locked(t);
  }
  pthread_mutex_unlock(&registry);
}

/* ---- fork ---- */

void weft__thread_before_fork(void) { pthread_mutex_lock(&registry); }

void weft__thread_after_fork_parent(void) { pthread_mutex_unlock(&registry); }

WEFT__HOT void weft__thread_after_fork_child(void) {
  /* Only the forking thread exists in the child: the others are over. The
   * walk covers the live threads only; with none but the forking one it
   * writes nothing, which keeps the pages a plain start touches few. */
  for (struct thr *t = live_head, *next; t != NULL; t = next) {
    next = t->live_next;
    if (t == self) continue;
    t->state = ST_STOPPED;
    t->done = 1;
    live_remove_locked(t);
    if (t == &main_thr) continue;
    if (t->kind == KIND_DUMMY || t->closed) remove_locked(t); /* nobody can join it */
    put_locked(t); /* the running thread's reference */
  }
  if (self == NULL) {
    /* Forked from a thread weft never saw: it is the child's main thread. */
    self = &main_thr;
    main_thr.pthread = pthread_self();
    main_thr.state = ST_STARTED;
    main_thr.done = 0;
    live_add_locked(&main_thr);
    weft__wait_rec_take(main_thr.name, false);
  } else {
    weft__wait_rec_forked();
  }
  if (main_thread != self) main_thread = self; /* as Python's _after_fork */
  /* The original main thread's id is the pid, read as such (native_id):
   * writing it here would copy one more page in every child. */
  if (self != &main_thr && self->tid != (uint32_t)weft__pid) self->tid = (uint32_t)weft__pid;
  pthread_mutex_unlock(&registry);
}
