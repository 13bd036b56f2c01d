/* SPDX-License-Identifier: MIT */
/* Process pools: multiprocessing.Pool's workers, with faults handled.
 *
 * Each worker has its own inbox (a process queue) that the pool's process
 * fills, at most DEPTH tasks deep, and all workers put their results into
 * one results queue. Because the pool's process decides which worker gets
 * which task, it always knows what a worker had: when one dies, the task
 * its shared slot says it was running fails (the slot is written before
 * the task starts), and the others it held go back to the front of the
 * pending list for the rest. A task taken from the inbox but not yet in
 * the slot never started, so it is handed out again rather than failed.
 *
 * Whether a handed-out task has started is decided by one compare-and-swap
 * on a ticket word in the worker's slot: the pool opens the word when it
 * hands the task out, the worker swaps it to STARTED before running it,
 * and a cancel swaps it to VETOED. Exactly one of them wins, so cancel
 * refuses only a task that really began, as the header promises. A worker
 * holds at most DEPTH tasks, numbered in order, so two words (by the
 * ticket's parity) are enough: a word is reused only after its previous
 * task's result has come back.
 *
 * Two threads serve a pool. The collector takes results (and everything
 * else: deaths, the stop request) from the results queue in order, so a
 * worker's last result is always seen before its death; it settles
 * futures, refills inboxes, kills tasks past their time limit, and starts
 * replacements. The watcher polls the workers' pidfds and turns a death
 * into a message on the same queue. Callbacks run on callback threads fed
 * by a thread queue, so a slow callback never holds up a result.
 *
 * A worker is a daemon weft process: it dies with the pool's process
 * however that ends (weft's exit rules, PR_SET_PDEATHSIG). A forked
 * worker's buffers are allocated by the pool before it forks, so it never
 * needs malloc.
 *
 * Workers started by spawn or the forkserver are fresh images of the
 * program: they get what they need (their queues, the slots, the shared
 * output buffers, which all live in weft's shared memory) as a boot record,
 * and cannot follow a task's function pointer. So a call names its function
 * as an offset in a loaded object, the object by its index in the pool's
 * table of paths, which lives in shared memory and only grows; a worker
 * finds each object's base once and checks each function it is given.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "os/os.h"
#include "pool_internal.h"
#include "region.h"
#include "spawn.h"
#include "taskname.h"

#define DEPTH 2 /* tasks in a worker's hands: the running one and the next */

/* Tuning. */
/* A place left empty because a replacement worker could not start (fork
 * failed) is tried again this often while the others go on: not measured;
 * what makes fork fail (memory, the process limit) lasts seconds. */
#define RETRY_START_NS (1000 * 1000 * 1000)
/* How soon the collector looks again at a task with a time limit that its
 * worker has not begun: not measured; a limit shorter than this may be
 * enforced up to this late. */
#define UNSTARTED_RECHECK_NS (10 * 1000 * 1000)

/* MSG_PART: a piece of a task's output, the rest to follow (the output
 * was larger than the worker's buffer); MSG_RESULT ends it. */
enum { MSG_RESULT = 1, MSG_DEAD, MSG_STOP, MSG_WAKE, MSG_SKIPPED, MSG_PART };

/* A ticket word: the ticket number << 2 | one of these. */
enum { G_OPEN = 1, G_STARTED = 2, G_VETOED = 3 };
#define GATE(ticket, state) (((ticket) << 2) | (state))

/* A message on the results queue; a result's bytes follow. */
struct msg {
  uint32_t type;
  uint32_t worker; /* index of the worker's place */
  uint32_t gen;    /* which worker in that place */
  int32_t code;
  uint64_t seq;
  uint64_t len;
  int32_t err;     /* a failed single task: WEFT_ETASKFAILED or weft's own code */
  uint32_t pad;
};

/* A worker's place in shared memory: what its worker is doing now. */
struct slot {
  uint64_t current; /* seq + 1 of the task running, 0 when none */
  int64_t started;  /* when it started (CLOCK_MONOTONIC ns, the same in every process) */
  uint64_t item;    /* index of the item running */
  weft__done done;  /* how far the chunk running has got */
  uint64_t gate[2]; /* ticket words, by the ticket's parity */
  uint32_t init_failed;
  uint32_t pad;
};


/* Moves all of `from` in front of `to`. */
static void flist_prepend(struct weft__flist *to, struct weft__flist *from) {
  if (from->head == NULL) return;
  from->tail->next = to->head;
  to->head = from->head;
  if (to->tail == NULL) to->tail = from->tail;
  from->head = from->tail = NULL;
}

struct worker {
  weft_process proc; /* id 0: the place is empty */
  weft_mpqueue *inbox;
  int sentinel;      /* a dup of its pidfd; -1 once its death was reported */
  uint32_t gen;
  struct weft__flist held;  /* tasks handed to it, in order */
  int assigned;
  long budget;       /* tasks it may still take (maxtasksperchild), or -1 */
  uint64_t tickets;  /* tickets handed out */
  uint64_t killed;   /* seq + 1 of a task it was killed for running too long */
  char name[WEFT_NAME_MAX + 1];
  /* Read by the worker process after fork: */
  struct ppool *pp;
  uint32_t index;
};

/* The objects (program and libraries) that a fresh-image pool's tasks lie
 * in, by path: entry 0 is the program. In shared memory; appended to
 * under the pool's mu before any call naming the entry is sent. */
#define OBJECTS_MAX 16
struct objtab {
  uint32_t n;
  char path[OBJECTS_MAX][PATH_MAX];
};

struct ppool {
  struct pool *p;
  int n;
  const char *method; /* the workers' start method */
  bool fresh;         /* spawn or forkserver: calls name their function */
  struct objtab *objects;
  struct weft__task_memo named; /* under mu: the last function named */
  double task_timeout;
  size_t cap; /* message buffer size */
  struct slot *slots;
  size_t slots_size;
  struct worker *w;
  weft_mpqueue *results;
  unsigned char *wbuf_in, *wbuf_out; /* the workers' buffers (each has its own copy) */
  /* The workers' output buffers, one per place, in shared memory: the
   * output of a chunk's finished items outlives a worker that dies. */
  unsigned char *wout;
  size_t wout_size;
  unsigned char *rbuf;               /* the collector's */
  pthread_mutex_t mu;
  /* under mu */
  struct weft__flist pending;
  uint64_t next_seq;
  size_t outstanding; /* tasks submitted and not settled */
  int alive;          /* workers whose death the collector has not handled */
  bool closed, broken, terminated, shut;
  weft__deadline retry_at; /* when to try again to fill a place whose replacement failed */
  int missing;              /* atomic: some place is empty (a replacement failed) */
  /* atomics */
  int stopping;       /* the pool is ending: no replacements */
  uint32_t change;    /* futex: bumped when outstanding or alive drop */
  int wake[2];        /* the watcher's wake-up socket pair */
  struct pollfd *wfds; /* the watcher's poll set, and whose fd each is */
  uint32_t *wwho, *wgen;
  weft_thread collector, watcher;
  weft_queue *cbq;
  weft_thread *cbt;
  int ncb;
};

static unsigned worker_counter; /* "ForkPoolWorker-N" across all pools */

/* The gate of a task whose worker has reported on it (or died running
 * it): never open, so a cancel refuses it while it settles. */
static uint64_t gate_done;

/* Names the threads that serve a pool, so a join from one of them is
 * refused instead of waiting for itself. */
static _Thread_local struct ppool *tls_served;

static void bump(struct ppool *pp) {
  __atomic_add_fetch(&pp->change, 1, __ATOMIC_SEQ_CST);
  weft__os_futex_wake(&pp->change, INT32_MAX);
}

/* ---- the worker process ---- */

/* What a worker works with: from the pool's memory in a forked worker,
 * from its boot record in a fresh one. */
struct wctx {
  uint32_t index, gen;
  size_t cap;
  long maxtasks;
  struct slot *slots;
  unsigned char *wout;
  unsigned char *wbuf_in, *wbuf_out;
  weft_mpqueue *inbox, *results;
  int (*initializer)(void *);
  void *initarg;
  struct objtab *objects; /* NULL: calls hold real function pointers */
  struct weft__task_memo resolved; /* the last function resolved */
};

/* A worker's output: its message buffer, sent as a part when full. */
struct wsink {
  weft__sink s;
  weft_mpqueue *results;
  unsigned char *base; /* the worker's output buffer: message header, then s.buf */
  struct msg m;
};

static int wsink_more(weft__sink *s, size_t need) {
  (void)need;
  struct wsink *ws = (struct wsink *)s;
  struct msg m = ws->m;
  m.type = MSG_PART;
  m.len = s->used;
  memcpy(ws->base, &m, sizeof m);
  if (weft_mpqueue_put(ws->results, ws->base, sizeof m + s->used, WEFT_FOREVER) != 0)
    return WEFT_EPIPE;
  s->flushed += s->used;
  s->used = 0;
  return 0;
}

/* The function a fresh worker's call names, checked to be code here (0),
 * or the error, with its sentence recorded. */
static int resolve_call(struct wctx *x, weft__call *c) {
  void *fn = NULL;
  int err = weft__task_lookup((char (*)[PATH_MAX])x->objects->path, &x->objects->n,
                              c->fn_object, c->fn_offset, &x->resolved, &fn);
  if (err == 0) c->fn = (weft_bytes_task)fn;
  return err;
}

static int worker_loop(struct wctx *x) {
  struct slot *slot = &x->slots[x->index];
  uint32_t index = x->index, gen = x->gen;
  weft_mpqueue *inbox = x->inbox;
  unsigned char *shared_out = x->wout + (size_t)index * x->cap;
  if (x->initializer != NULL && x->initializer(x->initarg) != 0) {
    __atomic_store_n(&slot->init_failed, 1, __ATOMIC_SEQ_CST);
    return 1;
  }
  long ran = 0;
  size_t head = sizeof(struct msg);
  for (;;) {
    /* The call is read where it lies in the inbox, which stays locked
     * while it runs: nobody else takes from a worker's inbox. */
    struct weft__mpview view;
    if (weft__mpqueue_get_view(inbox, x->wbuf_in, x->cap, &view, WEFT_FOREVER) != 0) break;
    weft__call *c = (weft__call *)view.data;
    /* A chunk's output goes where the pool can read it if this worker
     * dies; a single task's has nothing to keep. */
    unsigned char *out = c->kind == WEFT__CALL_SINGLE ? x->wbuf_out : shared_out;
    uint64_t open = GATE(c->ticket, G_OPEN);
    if (!__atomic_compare_exchange_n(&slot->gate[c->ticket & 1], &open,
                                     GATE(c->ticket, G_STARTED), false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST)) {
      /* Cancelled before it began: say so, so the pool drops it in order. */
      struct msg m = {.type = MSG_SKIPPED, .worker = index, .gen = gen, .seq = c->seq};
      weft__mpqueue_view_done(inbox, &view);
      if (weft_mpqueue_put(x->results, &m, sizeof m, WEFT_FOREVER) != 0) break;
      continue;
    }
    __atomic_store_n(&slot->item, c->base, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->done.items, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->done.bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->started, weft__os_now_ns(), __ATOMIC_RELAXED);
    __atomic_store_n(&slot->current, c->seq + 1, __ATOMIC_SEQ_CST);
    struct wsink ws = {.s = {.buf = out + head, .cap = x->cap - head, .more = wsink_more},
                       .results = x->results,
                       .base = out,
                       .m = {.worker = index, .gen = gen, .seq = c->seq}};
    int err = 0;
    if (x->objects != NULL && resolve_call(x, c) != 0) {
      /* The pool checked the function when it was submitted, so only an
       * object that cannot be loaded here gets this far: the worker's
       * death, while the slot names the task, fails the task alone. */
      fprintf(stderr, "weft: %s: %s\n", weft_process_name(weft_current_process()),
              weft_last_error());
      _exit(1);
    }
    int code = weft__call_run(c, c + 1, &ws.s, &slot->item, &slot->done, &err);
    struct msg m = {.type = MSG_RESULT, .worker = index, .gen = gen, .code = code,
                    .seq = c->seq, .len = ws.s.used, .err = err};
    bool single = c->kind == WEFT__CALL_SINGLE;
    weft__mpqueue_view_done(inbox, &view); /* c is gone */
    if (code != 0 && !single) break;       /* the results queue is gone */
    memcpy(out, &m, sizeof m);
    if (weft_mpqueue_put(x->results, out, head + ws.s.used, WEFT_FOREVER) != 0) break;
    __atomic_store_n(&slot->current, 0, __ATOMIC_SEQ_CST);
    if (x->maxtasks > 0 && ++ran >= x->maxtasks) break;
  }
  return 0;
}

static int worker_main(void *arg) {
  struct worker *w = arg;
  struct ppool *pp = w->pp;
  /* Give back the heap memory that is free here: the pool's process keeps
   * writing into its free heap, and every page a worker still shares
   * costs it a copy (and a TLB shootdown) on its first write after the
   * fork (pool_map_bytes on a new pool ran 30-40% faster). */
  malloc_trim(0);
  struct wctx x = {.index = w->index, .gen = w->gen, .cap = pp->cap, .maxtasks = pp->p->maxtasks,
                   .slots = pp->slots, .wout = pp->wout, .wbuf_in = pp->wbuf_in,
                   .wbuf_out = pp->wbuf_out, .inbox = w->inbox, .results = pp->results,
                   .initializer = pp->p->initializer, .initarg = pp->p->initarg};
  return worker_loop(&x);
}

/* What a worker started by spawn or the forkserver is given: its .args. */
struct boot {
  uint32_t index, gen;
  uint64_t cap;
  int64_t maxtasks;
  struct slot *slots;        /* these four in shared memory, at the same address */
  unsigned char *wout;
  struct objtab *objects;
  void *initarg;
  weft_mpqueue *inbox, *results; /* handles given in .objects */
  uint32_t has_initializer;
  struct weft__task_name initializer;
};

static int fresh_worker_main(void *arg) {
  const struct boot *b = arg;
  struct wctx x = {.index = b->index, .gen = b->gen, .cap = (size_t)b->cap,
                   .maxtasks = (long)b->maxtasks, .slots = b->slots, .wout = b->wout,
                   .inbox = b->inbox, .results = b->results, .initarg = b->initarg,
                   .objects = b->objects};
  if (b->has_initializer) {
    void *fn = NULL;
    if (weft__task_resolve(&b->initializer, &fn) != 0) {
      fprintf(stderr, "weft: pool worker %d: %s\n", (int)getpid(), weft_last_error());
      __atomic_store_n(&x.slots[x.index].init_failed, 1, __ATOMIC_SEQ_CST);
      return 1;
    }
    x.initializer = (int (*)(void *))fn;
  }
  x.wbuf_in = malloc(x.cap);
  x.wbuf_out = malloc(x.cap);
  if (x.wbuf_in == NULL || x.wbuf_out == NULL) return 1; /* its death says the rest */
  return worker_loop(&x);
}

/* ---- workers, seen from the pool ---- */

/* Starts a worker in place i. mu held or the pool not yet shared. */
static int start_worker(struct ppool *pp, uint32_t i) {
  struct worker *w = &pp->w[i];
  w->inbox = weft_mpqueue_new(.capacity = (pp->cap + 16) * DEPTH, .name = "pool worker inbox");
  if (w->inbox == NULL) return weft_last_error_code();
  weft__mpqueue_rewinds(w->inbox);
  memset(&pp->slots[i], 0, sizeof pp->slots[i]);
  w->gen++;
  w->pp = pp;
  w->index = i;
  w->held = (struct weft__flist){0};
  w->assigned = 0;
  w->budget = pp->p->maxtasks > 0 ? pp->p->maxtasks : -1;
  w->tickets = 0;
  w->killed = 0;
  unsigned n = __atomic_add_fetch(&worker_counter, 1, __ATOMIC_RELAXED);
  if (!pp->fresh) {
    snprintf(w->name, sizeof w->name, "ForkPoolWorker-%u", n);
    w->proc = weft_process_new(worker_main, .name = w->name, .arg = w, .daemon = true,
                               .start_method = "fork");
  } else {
    snprintf(w->name, sizeof w->name, "%sPoolWorker-%u",
             strcmp(pp->method, "spawn") == 0 ? "Spawn" : "ForkServer", n);
    struct boot *b = calloc(1, sizeof *b);
    if (b == NULL) {
      w->proc.id = 0;
      weft__error(WEFT_ENOMEM, "%s: out of memory", pp->p->name);
    } else {
      *b = (struct boot){.index = i, .gen = w->gen, .cap = pp->cap, .maxtasks = pp->p->maxtasks,
                         .slots = pp->slots, .wout = pp->wout, .objects = pp->objects,
                         .initarg = pp->p->initarg, .inbox = w->inbox, .results = pp->results};
      if (pp->p->initializer != NULL) {
        b->has_initializer = 1;
        /* Named at creation: it cannot fail now. */
        weft__task_name_of((const void *)pp->p->initializer, &b->initializer, pp->p->name);
      }
      w->proc = weft_process_new(fresh_worker_main, .name = w->name, .args = b,
                                 .args_size = sizeof *b, .daemon = true,
                                 .start_method = pp->method,
                                 .objects = (const void *[]){w->inbox, pp->results, NULL});
      free(b);
    }
  }
  int err = w->proc.id == 0 ? weft_last_error_code() : weft_process_start(w->proc);
  if (err == 0) {
    w->sentinel = weft__process_dup_pidfd(w->proc);
    if (w->sentinel < 0) {
      err = w->sentinel;
      weft_process_kill(w->proc);
      weft_process_join(w->proc, WEFT_FOREVER);
    }
  }
  if (err != 0) {
    if (w->proc.id != 0) weft_process_close(w->proc);
    w->proc.id = 0;
    w->sentinel = -1;
    weft_mpqueue_free(w->inbox);
    w->inbox = NULL;
    return weft__error(err == WEFT_ENOMEM ? WEFT_ENOMEM : WEFT_EAGAIN,
                       "%s: could not start a worker process", pp->p->name);
  }
  pp->alive++;
  return 0;
}

static void wake_watcher(struct ppool *pp) {
  char b = 1;
  weft__os_send(pp->wake[1], &b, 1);
}

/* Hands pending tasks to workers with room: first one to each idle
 * worker, then a second to each busy one, so an idle worker never waits
 * while another holds two. Idle workers still awake (watching their inbox
 * after their last task) come first: with more workers than cores, a task
 * given to one asleep costs a wake-up and a context switch. mu held. */
static void dispatch_locked(struct ppool *pp) {
  for (int pass = 0; pass <= DEPTH; pass++)
  for (int i = 0, level = pass > 0 ? pass - 1 : 0; i < pp->n && pp->pending.head != NULL; i++) {
    struct worker *w = &pp->w[i];
    if (w->proc.id == 0 || w->sentinel < 0) continue;
    if (pass == 0 && (w->assigned != 0 || weft__mpqueue_getter_asleep(w->inbox))) continue;
    while (pp->pending.head != NULL && w->assigned <= level && w->budget != 0) {
      struct future *f = weft__flist_pop(&pp->pending);
      uint32_t s = FS_PENDING;
      /* A task cancelled while pending is already settled: drop it. A
       * task handed back after a death is RUNNING already. */
      if (!__atomic_compare_exchange_n(&f->state, &s, FS_RUNNING, false, __ATOMIC_SEQ_CST,
                                       __ATOMIC_ACQUIRE) &&
          s != FS_RUNNING) {
        pp->outstanding--;
        weft__future_put(f);
        bump(pp);
        continue;
      }
      weft__call *c = f->call;
      c->ticket = w->tickets;
      uint64_t *gate = &pp->slots[i].gate[c->ticket & 1];
      __atomic_store_n(gate, GATE(c->ticket, G_OPEN), __ATOMIC_SEQ_CST);
      struct weft__input in = {.f = f};
      struct weft__fill fill = {weft__input_fill, &in};
      if (weft__mpqueue_put_fill(w->inbox, c, sizeof *c, &fill, (size_t)c->in_len, 0) != 0) {
        /* Cannot happen (the inbox holds DEPTH of the largest message);
         * if it does, the task waits for the next worker. */
        struct weft__flist back = {f, f};
        flist_prepend(&pp->pending, &back);
        break;
      }
      w->tickets++;
      f->gate = gate;
      weft__flist_push(&w->held, f);
      w->assigned++;
      if (w->budget > 0) w->budget--;
      if (f->timeout > 0 && f->timeout <= 1e9) {
        /* The collector may be asleep with no limit to watch: it must
         * start watching this one. If the queue is full it is busy and
         * looks at the limits after each message anyway. */
        struct msg m = {.type = MSG_WAKE};
        weft_mpqueue_put(pp->results, &m, sizeof m, 0);
      }
    }
  }
}

/* Settles a future for the pool: its task reference is dropped, joins are
 * told. mu not held (callbacks may run here). */
static void settle(struct ppool *pp, struct future *f, uint32_t to) {
  weft__future_settle(f, to);
  weft__future_put(f);
  pthread_mutex_lock(&pp->mu);
  pp->outstanding--;
  pthread_mutex_unlock(&pp->mu);
  bump(pp);
}

/* Drops the output a task had sent in parts (its worker died). */
static void drop_output(struct future *f) {
  free(f->bytes);
  f->bytes = NULL;
  f->bytes_len = f->bytes_cap = 0;
}

/* Appends a part of a task's output; false if memory ran out (the output
 * is then dropped, and the task fails with WEFT_ENOMEM at its end). */
static bool append_output(struct future *f, const unsigned char *bytes, size_t len) {
  if (f->bytes_cap == SIZE_MAX) return false;
  if (f->bytes_len + len > f->bytes_cap) {
    size_t cap = f->bytes_cap * 2 > f->bytes_len + len ? f->bytes_cap * 2 : f->bytes_len + len;
    void *b = realloc(f->bytes, cap > 0 ? cap : 1);
    if (b == NULL) {
      drop_output(f);
      f->bytes_cap = SIZE_MAX;
      return false;
    }
    f->bytes = b;
    f->bytes_cap = cap;
  }
  memcpy((unsigned char *)f->bytes + f->bytes_len, bytes, len);
  f->bytes_len += len;
  return true;
}

static void on_result(struct ppool *pp, const struct msg *m, const unsigned char *bytes) {
  pthread_mutex_lock(&pp->mu);
  struct worker *w = m->worker < (uint32_t)pp->n ? &pp->w[m->worker] : NULL;
  struct future *f = NULL;
  if (w != NULL && w->gen == m->gen && w->held.head != NULL &&
      w->held.head->call->seq == m->seq) {
    f = w->held.head;
    if (m->type != MSG_PART) {
      weft__flist_pop(&w->held);
      f->gate = &gate_done;
      w->assigned--;
      dispatch_locked(pp);
    }
  }
  pthread_mutex_unlock(&pp->mu);
  if (f == NULL) return; /* cannot happen: a worker reports its tasks in order */
  if (m->type == MSG_PART) {
    /* Only this thread touches the output of a task a worker holds. */
    append_output(f, bytes, m->len);
    return;
  }
  if (m->type == MSG_SKIPPED) {
    settle(pp, f, FS_CANCELLED); /* its cancel settled it already */
    return;
  }
  uint32_t to = FS_OK;
  if (m->code != 0 && f->call->kind == WEFT__CALL_SINGLE) {
    drop_output(f);
    f->task_err = m->code;
    f->fail_err = m->err;
    if (m->len > 0) f->report = strndup((const char *)bytes, m->len);
    to = FS_FAILED;
  } else if (f->bytes == NULL && f->bytes_cap == 0 && weft__chunk_deliver(f, bytes, m->len)) {
    /* its results are in place */
  } else if (f->bytes == NULL && f->bytes_cap == 0) {
    f->bytes = malloc(m->len > 0 ? m->len : 1);
    if (f->bytes == NULL) {
      f->task_err = WEFT_ENOMEM;
      to = FS_FAILED;
    } else {
      memcpy(f->bytes, bytes, m->len);
      f->bytes_len = m->len;
    }
  } else if (!append_output(f, bytes, m->len)) {
    f->bytes_cap = 0;
    f->task_err = WEFT_ENOMEM;
    to = FS_FAILED;
  }
  f->result = f->bytes;
  settle(pp, f, to);
}

/* "SIGSEGV", or "exit code 3". */
static void describe_end(weft_process proc, char *buf, size_t size) {
  int code = 0;
  if (weft_process_exitcode(proc, &code) != 0) {
    snprintf(buf, size, "an unknown status");
  } else if (code < 0) {
    const char *name = sigabbrev_np(-code);
    if (name != NULL)
      snprintf(buf, size, "SIG%s", name);
    else
      snprintf(buf, size, "signal %d", -code);
  } else {
    snprintf(buf, size, "exit code %d", code);
  }
}

/* Takes the whole pending list (linked through next). mu held. */
static struct future *take_pending_locked(struct ppool *pp) {
  struct future *all = pp->pending.head;
  pp->pending = (struct weft__flist){0};
  return all;
}

/* A chunk whose worker died: keeps the output of the items it finished --
 * the parts the collector has, then the rest from the dead worker's
 * buffer, up to the length the worker recorded before the item it died
 * in -- and marks them done, so they are neither lost nor run again. The
 * buffer holds the output from the end of the parts received: a part in
 * flight at the death covers everything finished, so then the parts are
 * cut to that length instead. Anything else drops the output, and those
 * items fail with the chunk. */
static void keep_done(struct ppool *pp, struct future *f, uint32_t place, const weft__done *d) {
  uint64_t items = __atomic_load_n(&d->items, __ATOMIC_ACQUIRE);
  uint64_t need = __atomic_load_n(&d->bytes, __ATOMIC_RELAXED);
  size_t head = sizeof(struct msg), have = f->bytes_len;
  /* Before each item the worker records what is done, then names the
   * item: dying in between, it names the one before, which finished but
   * fails as the one that was running. */
  uint64_t dead = f->died_item - f->call->base;
  bool ok = f->bytes_cap != SIZE_MAX && f->died_item >= f->call->base && dead < f->call->n &&
            items >= dead && items <= f->call->n;
  if (ok && have >= need) {
    f->bytes_len = (size_t)need;
  } else if (ok) {
    ok = need - have <= pp->cap - head &&
         append_output(f, pp->wout + (size_t)place * pp->cap + head, (size_t)(need - have));
  }
  if (ok && dead > 0) {
    f->done_items = dead;
  } else {
    f->done_items = 0;
    drop_output(f);
  }
}

static void on_dead(struct ppool *pp, const struct msg *m) {
  pthread_mutex_lock(&pp->mu);
  struct worker *w = m->worker < (uint32_t)pp->n ? &pp->w[m->worker] : NULL;
  if (w == NULL || w->gen != m->gen || w->proc.id == 0) {
    pthread_mutex_unlock(&pp->mu);
    return;
  }
  weft_process_join(w->proc, WEFT_FOREVER); /* its pidfd said it has ended */
  struct slot *slot = &pp->slots[m->worker];
  uint64_t current = __atomic_load_n(&slot->current, __ATOMIC_SEQ_CST);
  uint64_t item = __atomic_load_n(&slot->item, __ATOMIC_RELAXED);
  struct future *failed = NULL;
  uint32_t to = FS_DIED;
  /* The head began if its ticket says so (it may have died before it
   * wrote `current`). */
  struct future *head = w->held.head;
  bool began = head != NULL &&
               __atomic_load_n(head->gate, __ATOMIC_SEQ_CST) == GATE(head->call->ticket, G_STARTED);
  if (began) current = head->call->seq + 1;
  if (began) {
    failed = weft__flist_pop(&w->held);
    failed->gate = &gate_done;
    failed->died_item = item;
    w->assigned--;
    char how[48];
    describe_end(w->proc, how, sizeof how);
    char what[64];
    if (failed->call->kind != WEFT__CALL_SINGLE)
      snprintf(what, sizeof what, "task %llu (item %llu)", (unsigned long long)failed->call->seq,
               (unsigned long long)item);
    else
      snprintf(what, sizeof what, "task %llu", (unsigned long long)failed->call->seq);
    char report[256];
    if (pp->terminated) {
      to = FS_CANCELLED;
      snprintf(report, sizeof report, "%s was terminated while running %s", pp->p->name, what);
    } else if (w->killed == current) {
      to = FS_TIMEDOUT;
      snprintf(report, sizeof report, "%s was killed: %s ran past its time limit of %g s",
               w->name, what, failed->timeout);
    } else if (w->killed != 0) {
      /* Killed for a task that finished as the signal was on its way: this
       * one had begun, so it fails as any task its worker died running
       * (run again, it would run twice), with a report that says why. */
      snprintf(report, sizeof report,
               "%s was killed for the time limit of task %llu, which ended as %s began", w->name,
               (unsigned long long)(w->killed - 1), what);
    } else {
      snprintf(report, sizeof report, "%s died with %s while running %s", w->name, how, what);
    }
    failed->report = strdup(report); /* NULL: the code's own message will do */
    if (to == FS_DIED && failed->call->kind != WEFT__CALL_SINGLE)
      keep_done(pp, failed, m->worker, &slot->done);
    else
      drop_output(failed);
  }
  if (__atomic_load_n(&slot->init_failed, __ATOMIC_SEQ_CST)) pp->broken = true;
  /* The tasks it held and never started go back first in line. */
  for (struct future *f = w->held.head; f != NULL; f = f->next) {
    f->gate = NULL;
    drop_output(f); /* the one begun as its worker was killed may have sent parts */
  }
  flist_prepend(&pp->pending, &w->held);
  w->assigned = 0;
  weft_process_close(w->proc);
  w->proc.id = 0;
  weft_mpqueue_free(w->inbox);
  w->inbox = NULL;
  pp->alive--;
  uint32_t i = m->worker;
  bool replace = !pp->broken && !pp->terminated &&
                 !__atomic_load_n(&pp->stopping, __ATOMIC_ACQUIRE) &&
                 (!pp->closed || pp->pending.head != NULL);
  struct future *broken = NULL;
  if (replace && start_worker(pp, i) != 0) {
    if (pp->alive == 0)
      pp->broken = true;
    else {
      pp->retry_at = weft__os_now_ns() + RETRY_START_NS; /* the others go on meanwhile */
      __atomic_store_n(&pp->missing, 1, __ATOMIC_RELAXED);
    }
  }
  if (pp->broken) {
    __atomic_store_n(&pp->p->broken, 1, __ATOMIC_SEQ_CST);
    broken = take_pending_locked(pp);
  } else if (pp->terminated) {
    broken = take_pending_locked(pp); /* settled below as cancelled */
  } else {
    dispatch_locked(pp);
  }
  uint32_t rest = pp->terminated ? FS_CANCELLED : FS_BROKEN;
  pthread_mutex_unlock(&pp->mu);
  if (replace) wake_watcher(pp);
  bump(pp);
  if (failed != NULL) settle(pp, failed, to);
  while (broken != NULL) {
    struct future *f = broken;
    broken = f->next;
    f->next = NULL;
    settle(pp, f, rest);
  }
}

/* Kills the workers whose task ran past its limit; returns when to look
 * again (WEFT__NEVER when no task has a limit). */
static weft__deadline check_limits(struct ppool *pp) {
  weft__deadline next = WEFT__NEVER;
  int64_t now = weft__os_now_ns();
  pthread_mutex_lock(&pp->mu);
  for (int i = 0; i < pp->n; i++) {
    struct worker *w = &pp->w[i];
    if (w->proc.id == 0 || w->sentinel < 0) continue;
    for (struct future *f = w->held.head; f != NULL; f = f->next) {
      if (f->timeout <= 0 || f->timeout > 1e9) continue; /* above 30 years: no limit */
      uint64_t current = __atomic_load_n(&pp->slots[i].current, __ATOMIC_SEQ_CST);
      if (f != w->held.head || current != f->call->seq + 1) {
        /* Not started yet: look again soon. */
        if (next > now + UNSTARTED_RECHECK_NS) next = now + UNSTARTED_RECHECK_NS;
        continue;
      }
      int64_t end = __atomic_load_n(&pp->slots[i].started, __ATOMIC_RELAXED) +
                    (int64_t)(f->timeout * 1e9);
      if (now >= end) {
        if (w->killed != current) {
          w->killed = current;
          weft_process_kill(w->proc);
        }
      } else if (end < next) {
        next = end;
      }
    }
  }
  pthread_mutex_unlock(&pp->mu);
  return next;
}

/* Starts workers in places left empty by a replacement that could not
 * start (fork failed: EAGAIN, ENOMEM), at most once a second; returns when
 * to try again, or WEFT__NEVER. */
static weft__deadline refill(struct ppool *pp) {
  pthread_mutex_lock(&pp->mu);
  weft__deadline next = WEFT__NEVER;
  bool started = false;
  bool wanted = !pp->broken && !pp->terminated &&
                !__atomic_load_n(&pp->stopping, __ATOMIC_ACQUIRE) &&
                (!pp->closed || pp->pending.head != NULL);
  if (wanted && pp->alive < pp->n && weft__os_now_ns() < pp->retry_at) {
    next = pp->retry_at;
  } else if (wanted && pp->alive < pp->n) {
    for (int i = 0; i < pp->n; i++) {
      if (pp->w[i].proc.id != 0) continue;
      if (start_worker(pp, (uint32_t)i) != 0) {
        pp->retry_at = weft__os_now_ns() + RETRY_START_NS;
        next = pp->retry_at;
        break;
      }
      started = true;
    }
    if (started) dispatch_locked(pp);
  }
  if (next == WEFT__NEVER) __atomic_store_n(&pp->missing, 0, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&pp->mu);
  if (started) wake_watcher(pp);
  return next;
}

static void *collector_main(void *arg) {
  struct ppool *pp = arg;
  tls_served = pp;
  weft__deadline next = WEFT__NEVER;
  for (;;) {
    size_t len;
    int r = weft_mpqueue_get(pp->results, pp->rbuf, pp->cap, &len, weft__timeout_left(next));
    if (r == 0) {
      struct msg m;
      memcpy(&m, pp->rbuf, sizeof m);
      if (m.type == MSG_STOP) break;
      if (m.type == MSG_RESULT || m.type == MSG_SKIPPED || m.type == MSG_PART)
        on_result(pp, &m, pp->rbuf + sizeof m);
      if (m.type == MSG_DEAD) on_dead(pp, &m);
      if (m.type == MSG_WAKE) {
        pthread_mutex_lock(&pp->mu);
        dispatch_locked(pp);
        pthread_mutex_unlock(&pp->mu);
      }
    } else if (r != WEFT_ETIMEDOUT && r != WEFT_EEMPTY) {
      break;
    }
    next = check_limits(pp);
    if (__atomic_load_n(&pp->missing, __ATOMIC_RELAXED)) {
      weft__deadline again = refill(pp);
      if (again < next) next = again;
    }
  }
  tls_served = NULL;
  return NULL;
}

static void *watcher_main(void *arg) {
  struct ppool *pp = arg;
  tls_served = pp;
  struct pollfd *fds = pp->wfds;
  uint32_t *who = pp->wwho, *gens = pp->wgen;
  for (;;) {
    size_t n = 0;
    fds[n++].fd = pp->wake[0];
    pthread_mutex_lock(&pp->mu);
    for (int i = 0; i < pp->n; i++)
      if (pp->w[i].proc.id != 0 && pp->w[i].sentinel >= 0) {
        who[n] = (uint32_t)i;
        gens[n] = pp->w[i].gen;
        fds[n++].fd = pp->w[i].sentinel;
      }
    pthread_mutex_unlock(&pp->mu);
    if (__atomic_load_n(&pp->stopping, __ATOMIC_ACQUIRE) == 2) break;
    if (weft__os_poll_readable(fds, n, WEFT__NEVER) < 0) continue;
    if (fds[0].revents != 0) {
      char b[64];
      while (weft__os_recv(pp->wake[0], b, sizeof b, false, true) > 0) {
      }
    }
    for (size_t k = 1; k < n; k++) {
      if (fds[k].revents == 0) continue;
      pthread_mutex_lock(&pp->mu);
      struct worker *w = &pp->w[who[k]];
      bool same = w->gen == gens[k] && w->sentinel >= 0;
      if (same) {
        weft__os_close(w->sentinel);
        w->sentinel = -1; /* no more tasks for it, and no second report */
      }
      pthread_mutex_unlock(&pp->mu);
      if (!same) continue;
      struct msg m = {.type = MSG_DEAD, .worker = who[k], .gen = gens[k]};
      weft_mpqueue_put(pp->results, &m, sizeof m, WEFT_FOREVER);
    }
  }
  tls_served = NULL;
  return NULL;
}

static void *callbacks_main(void *arg) {
  struct ppool *pp = arg;
  tls_served = pp;
  void *item;
  while (weft_queue_get(pp->cbq, &item, WEFT_FOREVER) == 0) {
    struct future *f = item;
    weft__future_run_callbacks(f);
    weft__future_put(f);
  }
  tls_served = NULL;
  return NULL;
}

/* ---- the pool ---- */

static void ppool_release(struct ppool *pp) {
  for (int i = 0; i < pp->ncb; i++) weft_thread_close(pp->cbt[i]);
  free(pp->cbt);
  if (pp->collector.id != 0) weft_thread_close(pp->collector);
  if (pp->watcher.id != 0) weft_thread_close(pp->watcher);
  if (pp->cbq != NULL) weft_queue_free(pp->cbq);
  if (pp->wake[0] >= 0) weft__os_close(pp->wake[0]);
  if (pp->wake[1] >= 0) weft__os_close(pp->wake[1]);
  if (pp->results != NULL) weft_mpqueue_free(pp->results);
  if (pp->slots != NULL) weft__region_free(pp->slots);
  free(pp->wbuf_in);
  free(pp->wbuf_out);
  if (pp->wout != NULL) weft__region_free(pp->wout);
  if (pp->objects != NULL) weft__region_free(pp->objects);
  free(pp->rbuf);
  free(pp->wfds);
  free(pp->wwho);
  free(pp->wgen);
  free(pp->w);
  pthread_mutex_destroy(&pp->mu);
  free(pp);
}

/* Kills and reaps every worker started so far (a failed start). */
static void kill_all(struct ppool *pp) {
  for (int i = 0; i < pp->n; i++) {
    struct worker *w = &pp->w[i];
    if (w->proc.id == 0) continue;
    weft_process_kill(w->proc);
    weft_process_join(w->proc, WEFT_FOREVER);
    weft_process_close(w->proc);
    w->proc.id = 0;
    if (w->sentinel >= 0) weft__os_close(w->sentinel);
    weft_mpqueue_free(w->inbox);
  }
}

static int ppool_start(struct pool *p, const weft_pool_options *o) {
  const char *fn = "weft_process_pool_new";
  struct ppool *pp = calloc(1, sizeof *pp);
  if (pp == NULL) return weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
  pp->p = p;
  pp->n = p->max_workers;
  pp->method = weft__start_method_name(o->start_method, fn);
  if (pp->method == NULL) {
    free(pp);
    return weft_last_error_code();
  }
  pp->fresh = strcmp(pp->method, "fork") != 0;
  if (pp->fresh) {
    /* What a fresh image cannot follow is refused now, not in a worker. */
    int err = 0;
    if (p->initializer != NULL) err = weft__spawn_check_target((const void *)p->initializer, fn);
    if (err == 0 && p->initarg != NULL && !weft__region_holds(p->initarg))
      err = weft__error(WEFT_EINVAL,
                        "%s: a worker started by %s cannot follow initarg %p: give NULL or a "
                        "pointer into weft_shared_alloc memory",
                        fn, pp->method, p->initarg);
    if (err != 0) {
      free(pp);
      return err;
    }
  }
  pp->task_timeout = o->task_timeout;
  pp->cap = p->max_message + sizeof(struct msg);
  pp->wake[0] = pp->wake[1] = -1;
  pthread_mutex_init(&pp->mu, NULL);
  pp->ncb = o->callback_threads > 0 ? o->callback_threads : 2;
  pp->slots_size = sizeof(struct slot) * (size_t)pp->n;
  pp->w = calloc((size_t)pp->n, sizeof *pp->w);
  pp->cbt = calloc((size_t)pp->ncb, sizeof *pp->cbt);
  pp->wbuf_in = malloc(pp->cap);
  pp->wbuf_out = malloc(pp->cap);
  pp->wout_size = pp->cap * (size_t)pp->n;
  int rerr = 0;
  pp->wout = weft__region_new(pp->wout_size, &rerr);
  pp->rbuf = malloc(pp->cap);
  pp->wfds = calloc((size_t)pp->n + 1, sizeof *pp->wfds);
  pp->wwho = calloc((size_t)pp->n + 1, sizeof *pp->wwho);
  pp->wgen = calloc((size_t)pp->n + 1, sizeof *pp->wgen);
  pp->slots = weft__region_new(pp->slots_size, &rerr);
  if (pp->slots == NULL) pp->slots_size = 0;
  if (pp->fresh) {
    pp->objects = weft__region_new(sizeof *pp->objects, &rerr);
    if (pp->objects != NULL) pp->objects->n = 1; /* the program: its path is "" */
  }
  pp->cbq = weft_queue_new(.name = "pool callbacks");
  pp->results = weft_mpqueue_new(.capacity = 2 * (pp->cap + 16) + 4096, .name = "pool results");
  if (pp->results != NULL) weft__mpqueue_rewinds(pp->results);
  int err = 0;
  if (pp->w == NULL || pp->cbt == NULL || pp->wbuf_in == NULL || pp->wbuf_out == NULL ||
      pp->wout == NULL ||
      pp->rbuf == NULL || pp->wfds == NULL || pp->wwho == NULL || pp->wgen == NULL ||
      pp->slots == NULL || pp->cbq == NULL || pp->results == NULL ||
      (pp->fresh && pp->objects == NULL))
    err = weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
  else if (weft__os_socketpair(pp->wake) != 0)
    err = weft__error(WEFT_EMFILE, "%s: no file descriptors left", fn);
  p->proc = pp;
  for (int i = 0; i < pp->n; i++) pp->w[i].sentinel = -1;
  /* The workers first, while this thread is the pool's only one. */
  for (int i = 0; err == 0 && i < pp->n; i++) err = start_worker(pp, (uint32_t)i);
  char name[WEFT_NAME_MAX + 16];
  if (err == 0) {
    snprintf(name, sizeof name, "%.*s-results", WEFT_NAME_MAX - 11, p->name);
    pp->collector = weft_thread_new(collector_main, .name = name, .arg = pp, .daemon = true);
    snprintf(name, sizeof name, "%.*s-watch", WEFT_NAME_MAX - 11, p->name);
    pp->watcher = weft_thread_new(watcher_main, .name = name, .arg = pp, .daemon = true);
    if (pp->collector.id == 0 || pp->watcher.id == 0 || weft_thread_start(pp->collector) != 0 ||
        weft_thread_start(pp->watcher) != 0)
      err = weft__error(WEFT_EAGAIN, "%s: could not start the pool's threads", fn);
  }
  int started_cb = 0;
  for (; err == 0 && started_cb < pp->ncb; started_cb++) {
    snprintf(name, sizeof name, "%.*s-cb_%d", WEFT_NAME_MAX - 11, p->name, started_cb);
    pp->cbt[started_cb] = weft_thread_new(callbacks_main, .name = name, .arg = pp, .daemon = true);
    if (pp->cbt[started_cb].id == 0 || weft_thread_start(pp->cbt[started_cb]) != 0)
      err = weft__error(WEFT_EAGAIN, "%s: could not start the pool's callback threads", fn);
  }
  if (err != 0) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", weft_last_error());
    /* Stop whatever started, in reverse. */
    __atomic_store_n(&pp->stopping, 2, __ATOMIC_SEQ_CST);
    if (pp->cbq != NULL) weft_queue_close(pp->cbq);
    for (int i = 0; i < started_cb; i++)
      if (pp->cbt[i].id != 0) weft_thread_join(pp->cbt[i], WEFT_FOREVER, NULL);
    if (pp->watcher.id != 0 && weft_thread_is_alive(pp->watcher)) {
      wake_watcher(pp);
      weft_thread_join(pp->watcher, WEFT_FOREVER, NULL);
    }
    if (pp->collector.id != 0 && weft_thread_is_alive(pp->collector)) {
      struct msg m = {.type = MSG_STOP};
      weft_mpqueue_put(pp->results, &m, sizeof m, WEFT_FOREVER);
      weft_thread_join(pp->collector, WEFT_FOREVER, NULL);
    }
    if (pp->w != NULL) kill_all(pp);
    p->proc = NULL;
    ppool_release(pp);
    return weft__error(err, "%s", msg);
  }
  return 0;
}

/* Names a fresh-image pool's call by object and offset (see the top). */
static int name_call_locked(struct ppool *pp, weft__call *c, const char *call) {
  return weft__task_index((const void *)c->fn, pp->objects->path, &pp->objects->n, OBJECTS_MAX,
                          &pp->named, &c->fn_object, &c->fn_offset, call);
}

static int ppool_submit(struct pool *p, struct future *f, const char *fn) {
  struct ppool *pp = p->proc;
  if (f->timeout == 0) f->timeout = pp->task_timeout;
  f->cb_queue = pp->cbq;
  f->owner = p; /* keeps the pool's memory while the future lives: cancel and running use it */
  __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
  pthread_mutex_lock(&pp->mu);
  int err = 0;
  if (pp->closed || pp->terminated)
    err = weft__error(WEFT_ECLOSED, "%s: %s is closed", fn, p->name);
  else if (pp->broken)
    err = weft__error(WEFT_EBROKEN, "%s: %s is broken (an initializer failed)", fn, p->name);
  if (err == 0 && pp->fresh) err = name_call_locked(pp, f->call, fn);
  if (err == 0) {
    f->call->seq = pp->next_seq++;
    weft__flist_push(&pp->pending, f);
    pp->outstanding++;
    if (f->gather == NULL) dispatch_locked(pp);
  }
  pthread_mutex_unlock(&pp->mu);
  if (err == 0 && f->gather != NULL) {
    /* A chunk whose items are gathered as it is sent is sent by the
     * collector: the caller of map then reads the results of earlier
     * chunks meanwhile (pool_map_bytes ran 15-25% faster). If the queue
     * is full the collector is busy, and it dispatches after each result. */
    struct msg m = {.type = MSG_WAKE};
    weft_mpqueue_put(pp->results, &m, sizeof m, 0);
  }
  return err;
}

/* Cancels a task a worker holds but has not begun (0), or says it began
 * (WEFT_EBUSY). A task back in the pending list (its worker died) has no
 * ticket and is cancelled as any pending one. */
static int ppool_cancel(struct future *f) {
  struct ppool *pp = f->owner->proc;
  pthread_mutex_lock(&pp->mu);
  int err = WEFT_EBUSY;
  if (f->gate == NULL) {
    err = 0;
  } else {
    uint64_t open = GATE(f->call->ticket, G_OPEN);
    if (__atomic_compare_exchange_n(f->gate, &open, GATE(f->call->ticket, G_VETOED), false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      err = 0;
  }
  pthread_mutex_unlock(&pp->mu);
  /* The worker skips it (or it is dropped from the pending list); its
   * entry is released there. */
  if (err == 0 && !weft__future_settle(f, FS_CANCELLED)) err = WEFT_EBUSY;
  return err;
}

static size_t ppool_progress(struct future *f) {
  struct ppool *pp = f->owner->proc;
  size_t done = 0;
  pthread_mutex_lock(&pp->mu);
  for (int i = 0; i < pp->n; i++) {
    if (pp->w[i].held.head != f) continue;
    struct slot *slot = &pp->slots[i];
    if (__atomic_load_n(&slot->current, __ATOMIC_SEQ_CST) == f->call->seq + 1) {
      uint64_t at = __atomic_load_n(&slot->item, __ATOMIC_RELAXED);
      if (at > f->call->base) done = (size_t)(at - f->call->base);
    }
    break;
  }
  pthread_mutex_unlock(&pp->mu);
  return done;
}

static bool ppool_running(struct future *f) {
  struct ppool *pp = f->owner->proc;
  pthread_mutex_lock(&pp->mu);
  bool r = f->gate != NULL &&
           __atomic_load_n(f->gate, __ATOMIC_SEQ_CST) == GATE(f->call->ticket, G_STARTED);
  pthread_mutex_unlock(&pp->mu);
  return r;
}

static int ppool_close(struct pool *p) {
  struct ppool *pp = p->proc;
  /* From now on a worker that ends with nothing pending is not replaced. */
  pthread_mutex_lock(&pp->mu);
  pp->closed = true;
  pthread_mutex_unlock(&pp->mu);
  return 0;
}

static int ppool_terminate(struct pool *p) {
  struct ppool *pp = p->proc;
  struct future *cancelled = NULL;
  pthread_mutex_lock(&pp->mu);
  pp->terminated = true;
  pp->closed = true;
  cancelled = take_pending_locked(pp);
  for (int i = 0; i < pp->n; i++)
    if (pp->w[i].proc.id != 0) weft_process_kill(pp->w[i].proc);
  pthread_mutex_unlock(&pp->mu);
  while (cancelled != NULL) {
    struct future *f = cancelled;
    cancelled = f->next;
    f->next = NULL;
    settle(pp, f, FS_CANCELLED);
  }
  return 0;
}

/* Waits until the tasks not yet settled (workers = false) or the workers
 * not yet ended (true) number 0: 0, or how many are left at the deadline. */
static size_t wait_none_left(struct ppool *pp, bool workers, weft__deadline deadline) {
  for (;;) {
    uint32_t seen = __atomic_load_n(&pp->change, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&pp->mu);
    size_t left = workers ? (size_t)pp->alive : pp->outstanding;
    pthread_mutex_unlock(&pp->mu);
    if (left == 0 || weft__os_futex_wait(&pp->change, seen, deadline) == -ETIMEDOUT)
      return left;
  }
}

static int ppool_join(struct pool *p, weft__deadline deadline, double timeout) {
  struct ppool *pp = p->proc;
  /* Every task settles first... */
  size_t left = wait_none_left(pp, false, deadline);
  if (left != 0)
    return weft__error(WEFT_ETIMEDOUT, "weft_pool_join: %s still has %zu tasks after %g s",
                       p->name, left, timeout);
  /* ...then the workers leave: their inboxes close, and the collector
   * handles each end as a death it does not replace. The pool was closed
   * before the join began, so nothing can be submitted meanwhile. */
  pthread_mutex_lock(&pp->mu);
  if (!pp->shut) {
    pp->shut = true;
    __atomic_store_n(&pp->stopping, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < pp->n; i++)
      if (pp->w[i].inbox != NULL) weft_mpqueue_close(pp->w[i].inbox);
  }
  pthread_mutex_unlock(&pp->mu);
  left = wait_none_left(pp, true, deadline);
  if (left != 0)
    return weft__error(WEFT_ETIMEDOUT, "weft_pool_join: %zu workers of %s still running after %g s",
                       left, p->name, timeout);
  /* Then the pool's own threads. Joining twice finds them ended. */
  if (__atomic_exchange_n(&pp->stopping, 2, __ATOMIC_SEQ_CST) != 2) {
    struct msg m = {.type = MSG_STOP};
    weft_mpqueue_put(pp->results, &m, sizeof m, WEFT_FOREVER);
    wake_watcher(pp);
    weft_queue_close(pp->cbq);
  }
  weft_thread_join(pp->collector, WEFT_FOREVER, NULL);
  weft_thread_join(pp->watcher, WEFT_FOREVER, NULL);
  for (int i = 0; i < pp->ncb; i++) weft_thread_join(pp->cbt[i], WEFT_FOREVER, NULL);
  return 0;
}

static bool ppool_serves_caller(struct pool *p) { return p->proc != NULL && tls_served == p->proc; }

static void ppool_free(struct pool *p) {
  struct ppool *pp = p->proc;
  if (pp == NULL) return;
  p->proc = NULL;
  ppool_release(pp);
}

/* A forked child (a worker, or any other child) keeps none of the fds a
 * pool's process uses to watch its workers. Raw closes, no locks: the
 * thread that forked is the child's only one. */
WEFT__HOT static void ppool_after_fork_child(struct pool *p) {
  struct ppool *pp = p->proc;
  if (pp == NULL) return;
  for (int k = 0; k < 2; k++)
    if (pp->wake[k] >= 0) {
      weft__os_close(pp->wake[k]);
      pp->wake[k] = -1;
    }
  for (int i = 0; i < pp->n; i++)
    if (pp->w[i].sentinel >= 0) {
      weft__os_close(pp->w[i].sentinel);
      pp->w[i].sentinel = -1;
    }
}

/* At exit the daemon workers are about to be terminated by weft's exit
 * rules: the collector must not replace them as they go. */
static void ppool_at_exit(struct pool *p) {
  struct ppool *pp = p->proc;
  if (pp == NULL) return;
  int expect = 0;
  __atomic_compare_exchange_n(&pp->stopping, &expect, 1, false, __ATOMIC_SEQ_CST,
                              __ATOMIC_RELAXED);
}

const struct weft__pool_ops weft__ppool_ops = {
    .start = ppool_start,
    .submit = ppool_submit,
    .close = ppool_close,
    .cancel = ppool_cancel,
    .running = ppool_running,
    .progress = ppool_progress,
    .serves_caller = ppool_serves_caller,
    .terminate = ppool_terminate,
    .join = ppool_join,
    .free = ppool_free,
    .at_exit = ppool_at_exit,
    .after_fork_child = ppool_after_fork_child,
};
