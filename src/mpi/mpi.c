/* SPDX-License-Identifier: MIT */
/* The MPI backend of process pools (weft/mpi.h), a library of its own.
 *
 * Rank 0 runs the program; every other rank runs serve() and nothing else.
 * On rank 0 one engine thread makes every MPI call: it sends the calls
 * that pools queue to ranks with room (a rank holds a few, see depth_of), and
 * receives results, settling their futures. Submitters only queue and wake
 * it. MPI's own waits spin, so the engine and the serving ranks poll with
 * MPI_Improbe and back off to short sleeps when nothing comes, instead of
 * burning a core each while idle.
 *
 * A call names its function as the process pools of spawn and forkserver
 * do (ppool.c): an offset in an object that the pool's table names by path.
 * A rank learns a pool (its initializer, its room for a result) and each
 * object path the first time a call needs them: messages sent before the
 * call, in order, on the same rank pair.
 *
 * Messages: a header, then the rest (an initializer's name, a path, a call
 * and its input, a result's bytes). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "pool_internal.h"
#include "taskname.h"
#include "weft/mpi.h"

/* Calls a rank holds (the one running and those behind it): as many as
 * run in about BATCH_NS by the pool's recent tasks, DEPTH_MIN to
 * DEPTH_MAX, DEPTH_START until a result says. Many short tasks then cost
 * a message each way per batch; long ones stay spread over the ranks. */
#define DEPTH_MIN 2
#define DEPTH_MAX 64
#define DEPTH_START 8
#define BATCH_NS (200 * 1000)
#define MAX_POOLS 1024   /* MPI pools a program makes */
#define OBJECTS_MAX 16   /* objects (program, libraries) a pool's tasks lie in */

/* Tuning, not measured beyond "fast when busy, quiet when idle": rounds
 * of MPI_Improbe before backing off, and the longest sleep between. */
#define SPIN_ROUNDS 2000
#define SLEEP_MAX_NS (1000 * 1000)

/* TAG_CALLS and TAG_RESULTS carry several records, each a header (its
 * seq, and for a result its code, err and length) and its bytes: a rank
 * gets the calls the engine hands it at once in one message, and sends the
 * results it has in one, so a burst of small tasks costs few messages. */
enum tag { TAG_POOL = 1, TAG_OBJECT, TAG_CALLS, TAG_RESULTS, TAG_STOP, TAG_STOPPED };

/* A rank sends what results it has once this long has passed since the
 * first of them, or once they fill OUT_FLUSH bytes: not measured, keeps a
 * long task from holding back results finished before it. */
#define OUT_FLUSH_NS (200 * 1000)
#define OUT_FLUSH ((size_t)256 * 1024)

/* Records are padded to 8 bytes, so that each call and header is aligned. */
#define PADDED(n) (((n) + 7) & ~(size_t)7)

struct hdr {
  uint32_t pool;  /* the pool's number (index in eng.pools) */
  uint32_t index; /* TAG_OBJECT: the object's; TAG_POOL: has an initializer; batches: records */
  uint64_t seq;   /* a record: the task */
  int32_t code;   /* a result: the task's code */
  int32_t err;    /* a result: 0, WEFT_ETASKFAILED, weft's own, WEFT_EBROKEN (initializer) */
  uint64_t len;   /* a record: bytes that follow; TAG_POOL: the room for a result */
};

static struct {
  MPI_Comm comm;
  int rank, size;
  bool active, finalised;
  int init_calls;
  pid_t pid; /* rank 0's process: a forked child of it ends no ranks */
} mpi = {.comm = MPI_COMM_NULL, .size = 1};

/* Sleeps after a round that found nothing: yields first, then naps longer
 * and longer. */
static void back_off(unsigned *idle) {
  if (++*idle < SPIN_ROUNDS) {
    sched_yield();
    return;
  }
  unsigned k = *idle - SPIN_ROUNDS;
  long ns = k < 10 ? 10000L << k : SLEEP_MAX_NS;
  if (ns > SLEEP_MAX_NS) ns = SLEEP_MAX_NS;
  struct timespec ts = {0, ns};
  nanosleep(&ts, NULL);
}

/* Receives a probed message into *buf (grown to fit); its length. */
static size_t take(MPI_Message *msg, MPI_Status *st, unsigned char **buf, size_t *cap) {
  int count = 0;
  MPI_Get_count(st, MPI_BYTE, &count);
  if ((size_t)count > *cap) {
    unsigned char *b = realloc(*buf, (size_t)count);
    if (b == NULL) {
      fprintf(stderr, "weft: rank %d: out of memory for a %d-byte message\n", mpi.rank, count);
      MPI_Abort(mpi.comm, 70);
    }
    *buf = b;
    *cap = (size_t)count;
  }
  MPI_Mrecv(*buf, count, MPI_BYTE, msg, MPI_STATUS_IGNORE);
  return (size_t)count;
}

/* weft finalises MPI, whoever initialised it (weft/mpi.h says so): a
 * serving rank never returns to the program, and rank 0's main has ended. */
static void finalize(void) {
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
}

/* ==== the serving ranks ==== */

/* What TAG_POOL carries after its header. */
struct pool_info {
  char name[WEFT_NAME_MAX + 1];
  struct weft__task_name init;
};

struct served_pool {
  bool known, init_done, init_failed, has_init;
  unsigned char *sink; /* where tasks write their results, sink_cap bytes */
  size_t sink_cap;
  char name[WEFT_NAME_MAX + 1];
  struct weft__task_name init;
  size_t room;
  uint32_t nobjects;
  char (*objects)[PATH_MAX];
  struct weft__task_memo resolved;
};

/* What the fatal-signal handler says: prepared before each task. */
static char crash_text[256];
static size_t crash_len;

static const char *signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    default: return "a signal";
  }
}

/* A task crashed this rank: Open MPI ends the job; say first what ran. */
static void on_crash(int sig) {
  if (crash_len > 0) {
    const char *name = signal_name(sig);
    ssize_t r = write(2, crash_text, crash_len);
    r = write(2, name, strlen(name));
    r = write(2, "\n", 1);
    (void)r;
  }
  raise(sig); /* SA_RESETHAND: the default action now */
}

static int grow(weft__sink *s, size_t need) {
  size_t cap = s->cap * 2 > s->used + need ? s->cap * 2 : s->used + need;
  unsigned char *b = realloc(s->buf, cap);
  if (b == NULL) return WEFT_ENOMEM;
  s->buf = b;
  s->cap = cap;
  return 0;
}

static int resolve(struct served_pool *sp, weft__call *c) {
  void *fn = NULL;
  int err = weft__task_lookup(sp->objects, &sp->nobjects, c->fn_object, c->fn_offset,
                              &sp->resolved, &fn);
  if (err == 0) c->fn = (weft_bytes_task)fn;
  return err;
}

/* Records being gathered into one message (calls for a rank, results for
 * rank 0): each its header, its bytes and the padding. */
struct records {
  unsigned char *buf;
  size_t used, cap;
  uint32_t count;
};

/* Adds a record of h->len bytes, copied from bytes or (NULL) written by
 * the caller at the place returned. */
static unsigned char *records_add(struct records *r, const struct hdr *h, const void *bytes) {
  size_t len = (size_t)h->len, need = sizeof *h + PADDED(len);
  if (r->used + need > r->cap) {
    size_t cap = r->cap * 2 > r->used + need ? r->cap * 2 : r->used + need;
    unsigned char *b = realloc(r->buf, cap);
    if (b == NULL) {
      fprintf(stderr, "weft: rank %d: out of memory for an MPI message\n", mpi.rank);
      MPI_Abort(mpi.comm, 70);
    }
    r->buf = b;
    r->cap = cap;
  }
  unsigned char *at = r->buf + r->used + sizeof *h;
  memcpy(r->buf + r->used, h, sizeof *h);
  if (len > 0 && bytes != NULL) memcpy(at, bytes, len);
  memset(at + len, 0, PADDED(len) - len);
  r->used += need;
  r->count++;
  return at;
}

/* The results a rank has not sent yet: a TAG_RESULTS message being built. */
static struct {
  struct records r; /* after room for the message's own header */
  int64_t first; /* when its first result was added */
  int64_t busy;  /* ns its tasks ran: the engine learns how long tasks take */
} out;

static int64_t clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void out_flush(void) {
  if (out.r.count == 0) return;
  struct hdr h = {.index = out.r.count, .seq = (uint64_t)out.busy};
  out.busy = 0;
  memcpy(out.r.buf, &h, sizeof h);
  MPI_Send(out.r.buf, (int)out.r.used, MPI_BYTE, 0, TAG_RESULTS, mpi.comm);
  out.r.used = sizeof h;
  out.r.count = 0;
}

static void out_add(const struct hdr *h, const void *bytes) {
  if (out.r.used == 0) out.r.used = sizeof(struct hdr); /* the message's own header first */
  if (out.r.count == 0) out.first = clock_ns();
  records_add(&out.r, h, bytes);
}

static void result(uint32_t pool, uint64_t seq, int code, int err, const void *bytes, size_t len) {
  struct hdr h = {.pool = pool, .seq = seq, .code = code, .err = err, .len = len};
  out_add(&h, bytes);
}

/* Runs one call; its result joins the ones to send. */
static void run_call(struct served_pool *sp, uint32_t pool, uint64_t seq, unsigned char *body,
                     size_t len, const char *host) {
  weft__call *c = (weft__call *)body;
  if (len < sizeof *c || sizeof *c + c->in_len > len) {
    fprintf(stderr, "weft: rank %d: a malformed call\n", mpi.rank);
    MPI_Abort(mpi.comm, 70);
  }
  if (sp->has_init && !sp->init_done) {
    sp->init_done = true;
    void *fn = NULL;
    if (weft__task_resolve(&sp->init, &fn) != 0 || ((int (*)(void *))fn)(NULL) != 0)
      sp->init_failed = true;
  }
  if (sp->init_failed) {
    result(pool, seq, 0, WEFT_EBROKEN, NULL, 0);
    return;
  }
  if (resolve(sp, c) != 0) {
    const char *why = weft_last_error();
    result(pool, seq, WEFT_EINVAL, WEFT_ETASKFAILED, why, strlen(why));
    return;
  }
  int k = snprintf(crash_text, sizeof crash_text,
                   "weft: task %llu of %s crashed rank %d on %s with ",
                   (unsigned long long)seq, sp->name, mpi.rank, host);
  crash_len = k > 0 && (size_t)k < sizeof crash_text ? (size_t)k : 0;
  /* The room a task writes its result into is the pool's (as locally: a
   * larger single result is WEFT_EMSGSIZE); kept from task to task. */
  if (sp->sink == NULL) {
    sp->sink = malloc(sp->room);
    if (sp->sink == NULL) {
      fprintf(stderr, "weft: rank %d: out of memory for a result\n", mpi.rank);
      MPI_Abort(mpi.comm, 70);
    }
    sp->sink_cap = sp->room;
  }
  weft__sink s = {.buf = sp->sink, .cap = sp->sink_cap, .more = grow};
  uint64_t item = 0;
  int err = 0;
  int code = weft__call_run(c, c + 1, &s, &item, NULL, &err);
  crash_len = 0;
  sp->sink = s.buf; /* a chunk's output may have grown it */
  sp->sink_cap = s.cap;
  if (code != 0 && c->kind != WEFT__CALL_SINGLE && err == 0) err = WEFT_ENOMEM;
  result(pool, seq, code, err, s.buf, s.used);
  if (s.cap > sp->room * 4 && s.cap > ((size_t)64 << 20)) { /* give back a huge one */
    free(sp->sink);
    sp->sink = NULL;
  }
}

/* Runs a batch of calls, sending results as they are due. */
static void run_calls(struct served_pool *sp, uint32_t pool, uint32_t n, unsigned char *body,
                      size_t len, const char *host) {
  size_t at = 0;
  for (uint32_t i = 0; i < n; i++) {
    struct hdr rec;
    if (len - at < sizeof rec) break;
    memcpy(&rec, body + at, sizeof rec);
    at += sizeof rec;
    if (PADDED(rec.len) > len - at) break;
    int64_t t0 = clock_ns();
    run_call(sp, pool, rec.seq, body + at, (size_t)rec.len, host);
    out.busy += clock_ns() - t0;
    at += PADDED((size_t)rec.len);
    if (out.r.used >= OUT_FLUSH || clock_ns() - out.first >= OUT_FLUSH_NS) out_flush();
  }
  out_flush();
}

static _Noreturn void serve(void) {
  static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
  struct sigaction sa = {.sa_handler = on_crash, .sa_flags = SA_RESETHAND | SA_NODEFER};
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) sigaction(fatal[i], &sa, NULL);
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  struct served_pool *pools = calloc(MAX_POOLS, sizeof *pools);
  unsigned char *buf = NULL;
  size_t cap = 0;
  unsigned idle = 0;
  if (pools == NULL) MPI_Abort(mpi.comm, 70);
  for (;;) {
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    MPI_Improbe(0, MPI_ANY_TAG, mpi.comm, &flag, &msg, &st);
    if (!flag) {
      back_off(&idle);
      continue;
    }
    idle = 0;
    size_t len = take(&msg, &st, &buf, &cap);
    if (st.MPI_TAG == TAG_STOP) break;
    if (len < sizeof(struct hdr)) continue;
    struct hdr h;
    memcpy(&h, buf, sizeof h);
    if (h.pool >= MAX_POOLS) continue;
    struct served_pool *sp = &pools[h.pool];
    unsigned char *body = buf + sizeof h;
    size_t blen = len - sizeof h;
    if (st.MPI_TAG == TAG_POOL) {
      free(sp->objects);
      free(sp->sink);
      *sp = (struct served_pool){.known = true, .room = (size_t)h.len, .has_init = h.index != 0};
      sp->objects = calloc(OBJECTS_MAX, sizeof *sp->objects);
      if (sp->objects == NULL) MPI_Abort(mpi.comm, 70);
      if (blen >= sizeof(struct pool_info)) {
        const struct pool_info *pi = (const struct pool_info *)body;
        memcpy(sp->name, pi->name, sizeof sp->name);
        sp->name[sizeof sp->name - 1] = '\0';
        memcpy(&sp->init, &pi->init, sizeof sp->init);
      }
    } else if (st.MPI_TAG == TAG_OBJECT) {
      if (h.index < OBJECTS_MAX && sp->objects != NULL) {
        size_t n = blen < PATH_MAX - 1 ? blen : PATH_MAX - 1;
        memcpy(sp->objects[h.index], body, n);
        sp->objects[h.index][n] = '\0';
        if (h.index + 1 > sp->nobjects) sp->nobjects = h.index + 1;
      }
    } else if (st.MPI_TAG == TAG_CALLS && sp->known) {
      run_calls(sp, h.pool, h.index, body, blen, host);
    }
  }
  MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_STOPPED, mpi.comm);
  MPI_Comm_free(&mpi.comm);
  finalize();
  _exit(0); /* the program's main never ran here: nothing of it to clean up */
}

/* ==== rank 0: the engine and the pools ==== */


struct mrank {
  struct weft__flist held;      /* calls sent, in order */
  int assigned;
  int64_t head_since;    /* when the head of held began (as far as rank 0 can tell) */
  uint64_t lost_seq;     /* seq + 1 of a task failed by its time limit, still running */
  bool announced;        /* the pool was sent */
  uint32_t objects_sent;
};

struct mpool {
  struct pool *p;
  uint32_t id;
  int n;                 /* ranks 1..n */
  struct mrank *r;
  struct weft__flist pending;
  size_t outstanding;    /* submitted, not settled */
  bool closed, terminated, broken, gone;
  bool has_init;
  struct weft__task_name init;
  uint32_t nobjects;
  char (*objects)[PATH_MAX];
  struct weft__task_memo named; /* the last function named */
  uint64_t next_seq;
  int64_t task_ns;       /* how long its tasks run, lately (0: not known yet) */
};

static struct {
  pthread_mutex_t mu;
  pthread_cond_t wake;    /* the engine waits on it when nothing is out */
  pthread_cond_t change;  /* joins wait on it: some pool's outstanding dropped */
  bool woken;             /* under mu: a submit came since the engine looked */
  struct mpool *pools[MAX_POOLS];
  uint32_t npools;
  pthread_t thread;
  bool running, stop;
  weft_queue *cbq;
  weft_thread cbt;
} eng = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The engine's conditions wait on CLOCK_MONOTONIC, as every weft deadline. */
static void init_conds(void) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&eng.wake, &a);
  pthread_cond_init(&eng.change, &a);
  pthread_condattr_destroy(&a);
}

static void wait_until_locked(pthread_cond_t *c, int64_t deadline) {
  if (deadline == WEFT__NEVER) {
    pthread_cond_wait(c, &eng.mu);
    return;
  }
  struct timespec ts = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
  pthread_cond_timedwait(c, &eng.mu, &ts);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The engine's sends are non-blocking: a rank may be sending a large result
 * (rendezvous) while the engine sends it a large call, and only an engine
 * that goes on receiving lets both finish. Each buffer lives until its
 * send completes. */
struct sending {
  MPI_Request req;
  unsigned char *buf;
};
static struct sending *sends;
static size_t nsends, sends_cap;

static void send_to(int rank, int tag, const struct hdr *h, const void *body, size_t len) {
  size_t total = sizeof *h + len;
  unsigned char *m = malloc(total);
  if (m == NULL || (nsends == sends_cap && (sends_cap = sends_cap ? 2 * sends_cap : 64,
                                            sends = realloc(sends, sends_cap * sizeof *sends)) == NULL)) {
    fprintf(stderr, "weft: out of memory for an MPI message\n");
    MPI_Abort(mpi.comm, 70);
  }
  memcpy(m, h, sizeof *h);
  if (len > 0) memcpy(m + sizeof *h, body, len);
  sends[nsends].buf = m;
  MPI_Isend(m, (int)total, MPI_BYTE, rank, tag, mpi.comm, &sends[nsends].req);
  nsends++;
}

/* Frees the buffers of the sends that completed; with wait, waits for all. */
static void reap_sends(bool wait) {
  size_t kept = 0;
  for (size_t i = 0; i < nsends; i++) {
    int done = 0;
    if (wait)
      MPI_Wait(&sends[i].req, MPI_STATUS_IGNORE), done = 1;
    else
      MPI_Test(&sends[i].req, &done, MPI_STATUS_IGNORE);
    if (done)
      free(sends[i].buf);
    else
      sends[kept++] = sends[i];
  }
  nsends = kept;
}

/* Sends what a rank must know before the call: the pool, new objects. */
static void prepare_rank_locked(struct mpool *mp, int i) {
  struct mrank *r = &mp->r[i];
  if (!r->announced) {
    struct hdr h = {.pool = mp->id, .index = mp->has_init, .len = mp->p->max_message};
    struct pool_info *pi = calloc(1, sizeof *pi);
    if (pi == NULL) {
      fprintf(stderr, "weft: out of memory for an MPI message\n");
      MPI_Abort(mpi.comm, 70);
    }
    snprintf(pi->name, sizeof pi->name, "%s", mp->p->name);
    pi->init = mp->init;
    send_to(i + 1, TAG_POOL, &h, pi, sizeof *pi);
    free(pi);
    r->announced = true;
  }
  while (r->objects_sent < mp->nobjects) {
    struct hdr h = {.pool = mp->id, .index = r->objects_sent};
    const char *path = mp->objects[r->objects_sent];
    send_to(i + 1, TAG_OBJECT, &h, path, strlen(path));
    r->objects_sent++;
  }
}

/* The calls being handed to each rank in one dispatch: TAG_CALLS bodies. */
static struct records *batches; /* one per rank, the engine thread's */

/* Hands pending calls to ranks with room, the least loaded first, each
 * rank's in one message. */
static bool dispatch_locked(struct mpool *mp) {
  bool sent = false;
  if (batches == NULL && (batches = calloc((size_t)mpi.size, sizeof *batches)) == NULL) {
    fprintf(stderr, "weft: out of memory for the MPI engine\n");
    MPI_Abort(mpi.comm, 70);
  }
  int depth = mp->task_ns <= 0 ? DEPTH_START
              : mp->task_ns * DEPTH_MIN >= BATCH_NS ? DEPTH_MIN
              : mp->task_ns * DEPTH_MAX <= BATCH_NS ? DEPTH_MAX
                                                    : (int)(BATCH_NS / mp->task_ns);
  for (int level = 0; level < depth && mp->pending.head != NULL; level++)
    for (int i = 0; i < mp->n && mp->pending.head != NULL; i++) {
      struct mrank *r = &mp->r[i];
      if (r->assigned > level || r->lost_seq != 0) continue;
      struct future *f = weft__flist_pop(&mp->pending);
      uint32_t s = FS_PENDING;
      if (!__atomic_compare_exchange_n(&f->state, &s, FS_RUNNING, false, __ATOMIC_SEQ_CST,
                                       __ATOMIC_ACQUIRE)) {
        /* Cancelled while pending: settled already. */
        mp->outstanding--;
        weft__future_put(f);
        pthread_cond_broadcast(&eng.change);
        continue;
      }
      if (batches[i].count == 0) prepare_rank_locked(mp, i);
      weft__call *c = f->call;
      struct hdr h = {.seq = c->seq, .len = sizeof *c + c->in_len};
      unsigned char *at = records_add(&batches[i], &h, NULL);
      memcpy(at, c, sizeof *c);
      weft__call_input(f, at + sizeof *c);
      if (r->held.head == NULL) r->head_since = now_ns();
      weft__flist_push(&r->held, f);
      r->assigned++;
      sent = true;
    }
  for (int i = 0; i < mp->n; i++) {
    struct records *b = &batches[i];
    if (b->count == 0) continue;
    struct hdr h = {.pool = mp->id, .index = b->count};
    send_to(i + 1, TAG_CALLS, &h, b->buf, b->used);
    b->used = 0;
    b->count = 0;
  }
  return sent;
}

static void settle(struct mpool *mp, struct future *f, uint32_t to) {
  weft__future_settle(f, to);
  weft__future_put(f);
  pthread_mutex_lock(&eng.mu);
  mp->outstanding--;
  pthread_cond_broadcast(&eng.change);
  pthread_mutex_unlock(&eng.mu);
}

/* Settles a future from its result record. */
static void finish(struct mpool *mp, struct future *f, const struct hdr *h,
                   const unsigned char *bytes) {
  size_t n = (size_t)h->len;
  uint32_t to = FS_OK;
  if (h->err == WEFT_EBROKEN) {
    to = FS_BROKEN;
  } else if (h->code != 0 && f->call->kind == WEFT__CALL_SINGLE) {
    f->task_err = h->code;
    f->fail_err = h->err;
    if (n > 0) f->report = strndup((const char *)bytes, n);
    to = FS_FAILED;
  } else if (h->code != 0) {
    f->task_err = h->code;
    to = FS_FAILED;
  } else if (!weft__chunk_deliver(f, bytes, n)) {
    f->bytes = malloc(n > 0 ? n : 1);
    if (f->bytes == NULL) {
      f->task_err = WEFT_ENOMEM;
      to = FS_FAILED;
    } else {
      memcpy(f->bytes, bytes, n);
      f->bytes_len = n;
    }
  }
  f->result = f->bytes;
  settle(mp, f, to);
}

/* A TAG_RESULTS message from rank: its records, in the order the rank ran
 * the calls, which is the order it holds them. */
static void on_results(int rank, const unsigned char *buf, size_t len) {
  if (len < sizeof(struct hdr)) return;
  struct hdr outer;
  memcpy(&outer, buf, sizeof outer);
  size_t at = sizeof outer;
  int64_t per_task = outer.index > 0 ? (int64_t)outer.seq / outer.index : 0;
  for (uint32_t k = 0; k < outer.index; k++) {
    struct hdr h;
    if (len - at < sizeof h) return;
    memcpy(&h, buf + at, sizeof h);
    at += sizeof h;
    if (PADDED(h.len) > len - at) return;
    const unsigned char *bytes = buf + at;
    at += PADDED((size_t)h.len);
    pthread_mutex_lock(&eng.mu);
    struct mpool *mp = h.pool < eng.npools ? eng.pools[h.pool] : NULL;
    struct future *f = NULL;
    bool dropped = false;
    if (mp != NULL && rank >= 1 && rank <= mp->n) {
      struct mrank *r = &mp->r[rank - 1];
      if (r->held.head != NULL && r->held.head->call->seq == h.seq) {
        f = weft__flist_pop(&r->held);
        r->assigned--;
        r->head_since = now_ns();
        if (r->lost_seq == h.seq + 1) { /* failed by its time limit already */
          r->lost_seq = 0;
          dropped = true;
        }
      }
      if (h.err == WEFT_EBROKEN) mp->broken = true;
      if (k + 1 == outer.index) { /* the batch is in: learn from it, refill */
        mp->task_ns = mp->task_ns == 0 ? per_task + 1 : (7 * mp->task_ns + per_task) / 8 + 1;
        dispatch_locked(mp);
      }
    }
    pthread_mutex_unlock(&eng.mu);
    if (f == NULL) continue;
    if (dropped)
      weft__future_put(f); /* its time-limit failure settled it and kept the count */
    else
      finish(mp, f, &h, bytes);
  }
}

/* Fails the tasks that ran past their limits; their ranks take nothing
 * more until those return. */
static void check_limits(void) {
  int64_t now = now_ns();
  struct future *late[64];
  struct mpool *owner[64];
  int nlate = 0;
  pthread_mutex_lock(&eng.mu);
  for (uint32_t k = 0; k < eng.npools && nlate < 64; k++) {
    struct mpool *mp = eng.pools[k];
    if (mp == NULL) continue;
    for (int i = 0; i < mp->n && nlate < 64; i++) {
      struct mrank *r = &mp->r[i];
      struct future *f = r->held.head;
      if (f == NULL || r->lost_seq != 0 || f->timeout <= 0) continue;
      if ((double)(now - r->head_since) < f->timeout * 1e9) continue;
      r->lost_seq = f->call->seq + 1;
      __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED); /* the settle's; held keeps its own */
      late[nlate] = f;
      owner[nlate++] = mp;
    }
  }
  pthread_mutex_unlock(&eng.mu);
  for (int i = 0; i < nlate; i++) settle(owner[i], late[i], FS_TIMEDOUT);
}

static bool any_held(void) {
  for (uint32_t k = 0; k < eng.npools; k++) {
    struct mpool *mp = eng.pools[k];
    if (mp == NULL) continue;
    for (int i = 0; i < mp->n; i++)
      if (mp->r[i].held.head != NULL) return true;
  }
  return false;
}

static void *engine_main(void *arg) {
  (void)arg;
  unsigned char *buf = NULL;
  size_t cap = 0;
  unsigned idle = 0;
  int64_t next_limits = 0;
  for (;;) {
    bool work = false;
    pthread_mutex_lock(&eng.mu);
    eng.woken = false;
    for (uint32_t k = 0; k < eng.npools; k++)
      if (eng.pools[k] != NULL && eng.pools[k]->pending.head != NULL)
        work |= dispatch_locked(eng.pools[k]);
    bool held = any_held();
    bool stop = eng.stop;
    pthread_mutex_unlock(&eng.mu);
    for (;;) {
      int flag = 0;
      MPI_Message msg;
      MPI_Status st;
      MPI_Improbe(MPI_ANY_SOURCE, TAG_RESULTS, mpi.comm, &flag, &msg, &st);
      if (!flag) break;
      size_t len = take(&msg, &st, &buf, &cap);
      on_results(st.MPI_SOURCE, buf, len);
      work = true;
    }
    if (nsends > 0) reap_sends(false);
    int64_t now = now_ns();
    if (now >= next_limits) {
      check_limits();
      next_limits = now + 5 * 1000 * 1000;
    }
    if (stop && !held) break;
    if (nsends > 0) held = true; /* keep polling until they complete */
    if (work) {
      idle = 0;
    } else if (held) {
      back_off(&idle);
    } else {
      /* Nothing out: sleep until a submit (or the stop) wakes us. */
      idle = 0;
      pthread_mutex_lock(&eng.mu);
      if (!eng.woken && !eng.stop) wait_until_locked(&eng.wake, now + 100 * 1000 * 1000);
      pthread_mutex_unlock(&eng.mu);
    }
  }
  reap_sends(true);
  free(sends);
  free(buf);
  return NULL;
}

static void *callbacks_main(void *arg) {
  (void)arg;
  void *item;
  while (weft_queue_get(eng.cbq, &item, WEFT_FOREVER) == 0) {
    struct future *f = item;
    weft__future_run_callbacks(f);
    weft__future_put(f);
  }
  return NULL;
}

/* ---- the backend's operations ---- */

static int mpool_start(struct pool *p, const weft_pool_options *o) {
  const char *fn = "weft_process_pool_new";
  if (!mpi.active || mpi.rank != 0)
    return weft__error(WEFT_EINVAL,
                       "%s: the program is not running on MPI ranks (start it with mpiexec -n N, "
                       "N > 1, and call weft_mpi_init at the top of main)",
                       fn);
  if (p->initarg != NULL)
    return weft__error(WEFT_EINVAL,
                       "%s: an MPI rank cannot follow initarg %p: give NULL (ranks may be other "
                       "machines)",
                       fn, p->initarg);
  struct mpool *mp = calloc(1, sizeof *mp);
  if (mp == NULL) return weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
  mp->p = p;
  /* Left out: every rank but 0, not this machine's cores. */
  mp->n = o->workers == WEFT_DEFAULT || o->workers > mpi.size - 1 ? mpi.size - 1 : o->workers;
  p->max_workers = mp->n;
  mp->r = calloc((size_t)mp->n, sizeof *mp->r);
  mp->objects = calloc(OBJECTS_MAX, sizeof *mp->objects);
  if (mp->r == NULL || mp->objects == NULL) {
    free(mp->r);
    free(mp->objects);
    free(mp);
    return weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
  }
  mp->nobjects = 1; /* the program: "" */
  if (p->initializer != NULL) {
    if (weft__task_name_of((const void *)p->initializer, &mp->init, fn) != 0) {
      free(mp->r);
      free(mp->objects);
      free(mp);
      return weft_last_error_code();
    }
    mp->has_init = true;
  }
  pthread_mutex_lock(&eng.mu);
  int err = 0;
  if (eng.npools == MAX_POOLS) {
    err = weft__error(WEFT_ENOMEM, "%s: more than %d MPI pools in one program", fn, MAX_POOLS);
  } else if (!eng.running) {
    eng.cbq = weft_queue_new(.name = "MPI pool callbacks");
    if (eng.cbq != NULL)
      eng.cbt = weft_thread_new(callbacks_main, .name = "mpi-callbacks", .daemon = true);
    if (eng.cbq == NULL || eng.cbt.id == 0 || weft_thread_start(eng.cbt) != 0 ||
        pthread_create(&eng.thread, NULL, engine_main, NULL) != 0)
      err = weft__error(WEFT_EAGAIN, "%s: could not start the MPI engine's threads", fn);
    else
      eng.running = true;
  }
  if (err == 0) {
    mp->id = eng.npools;
    eng.pools[eng.npools++] = mp;
    p->proc = mp;
  }
  pthread_mutex_unlock(&eng.mu);
  if (err != 0) {
    free(mp->r);
    free(mp->objects);
    free(mp);
  }
  return err;
}

static int name_call_locked(struct mpool *mp, weft__call *c, const char *call) {
  return weft__task_index((const void *)c->fn, mp->objects, &mp->nobjects, OBJECTS_MAX, &mp->named,
                          &c->fn_object, &c->fn_offset, call);
}

static int mpool_submit(struct pool *p, struct future *f, const char *what) {
  struct mpool *mp = p->proc;
  f->cb_queue = eng.cbq;
  f->owner = p;
  __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
  pthread_mutex_lock(&eng.mu);
  int err = 0;
  if (mp->closed || mp->terminated)
    err = weft__error(WEFT_ECLOSED, "%s: %s is closed", what, p->name);
  else if (mp->broken)
    err = weft__error(WEFT_EBROKEN, "%s: %s is broken (an initializer failed)", what, p->name);
  else
    err = name_call_locked(mp, f->call, what);
  if (err == 0) {
    f->call->seq = mp->next_seq++;
    weft__flist_push(&mp->pending, f);
    mp->outstanding++;
    eng.woken = true;
    pthread_cond_signal(&eng.wake);
  }
  pthread_mutex_unlock(&eng.mu);
  return err;
}

static int mpool_cancel(struct future *f) {
  (void)f;
  return WEFT_EBUSY; /* sent to a rank: it runs */
}

static bool mpool_running(struct future *f) {
  return __atomic_load_n(&f->state, __ATOMIC_ACQUIRE) == FS_RUNNING;
}

static size_t mpool_progress(struct future *f) {
  (void)f;
  return 0;
}

static int mpool_close(struct pool *p) {
  struct mpool *mp = p->proc;
  pthread_mutex_lock(&eng.mu);
  mp->closed = true;
  pthread_mutex_unlock(&eng.mu);
  return 0;
}

static int mpool_terminate(struct pool *p) {
  struct mpool *mp = p->proc;
  pthread_mutex_lock(&eng.mu);
  mp->terminated = mp->closed = true;
  struct weft__flist cancelled = mp->pending;
  mp->pending = (struct weft__flist){0};
  pthread_mutex_unlock(&eng.mu);
  for (struct future *f; (f = weft__flist_pop(&cancelled)) != NULL;) settle(mp, f, FS_CANCELLED);
  return 0;
}

static int mpool_join(struct pool *p, weft__deadline deadline, double timeout) {
  struct mpool *mp = p->proc;
  pthread_mutex_lock(&eng.mu);
  while (mp->outstanding > 0 && (deadline == WEFT__NEVER || now_ns() < deadline))
    wait_until_locked(&eng.change, deadline);
  size_t left = mp->outstanding;
  pthread_mutex_unlock(&eng.mu);
  if (left == 0) return 0;
  return weft__error(WEFT_ETIMEDOUT, "weft_pool_join: %s still has %zu tasks after %g s",
                     p->name, left, timeout);
}

/* No thread of the engine's runs the program's code but the callback
 * thread, and a callback's own future is settled already: a join from it
 * waits for the others only. */
static bool mpool_serves_caller(struct pool *p) {
  (void)p;
  return false;
}

static void mpool_free(struct pool *p) {
  struct mpool *mp = p->proc;
  if (mp == NULL) return;
  pthread_mutex_lock(&eng.mu);
  /* Tasks still held by a rank (past their limits) come back to nobody. */
  mp->gone = true;
  eng.pools[mp->id] = NULL;
  pthread_mutex_unlock(&eng.mu);
  p->proc = NULL;
  for (int i = 0; i < mp->n; i++)
    for (struct future *f; (f = weft__flist_pop(&mp->r[i].held)) != NULL;) weft__future_put(f);
  free(mp->r);
  free(mp->objects);
  free(mp);
}

static void mpool_at_exit(struct pool *p) { (void)p; }
static void mpool_after_fork_child(struct pool *p) { (void)p; }

static struct weft__pool_ops mpool_ops = {
    .start = mpool_start,
    .submit = mpool_submit,
    .close = mpool_close,
    .cancel = mpool_cancel,
    .running = mpool_running,
    .progress = mpool_progress,
    .serves_caller = mpool_serves_caller,
    .terminate = mpool_terminate,
    .join = mpool_join,
    .free = mpool_free,
    .at_exit = mpool_at_exit,
    .after_fork_child = mpool_after_fork_child,
    .shutdown = NULL, /* set below: it is defined after the table */
};

/* ---- start and end ---- */

/* Rank 0's end, at the end of weft's exit rules (the program's threads
 * were joined, so nothing submits any more): pending tasks are cancelled,
 * those on ranks finish, and the ranks stop. A rank still running a task
 * after the grace period (one past its time limit) would hold up
 * MPI_Finalize: the job is ended instead. */
static void shutdown_ranks(void) {
  if (!mpi.active || mpi.finalised || getpid() != mpi.pid) return;
  mpi.finalised = true;
  pthread_mutex_lock(&eng.mu);
  bool running = eng.running;
  eng.stop = true;
  for (uint32_t k = 0; k < eng.npools; k++) {
    struct mpool *mp = eng.pools[k];
    if (mp == NULL) continue;
    for (struct future *f; (f = weft__flist_pop(&mp->pending)) != NULL;) {
      weft__future_settle(f, FS_CANCELLED);
      weft__future_put(f);
      mp->outstanding--;
    }
  }
  pthread_cond_signal(&eng.wake);
  pthread_mutex_unlock(&eng.mu);
  int64_t end = now_ns() + 2000LL * 1000 * 1000;
  if (running) {
    /* The engine ends once nothing is held; tasks in flight finish. */
    while (now_ns() < end) {
      pthread_mutex_lock(&eng.mu);
      bool held = any_held();
      pthread_mutex_unlock(&eng.mu);
      if (!held) break;
      struct timespec ts = {0, 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&eng.mu);
    bool held = any_held();
    pthread_mutex_unlock(&eng.mu);
    if (held) {
      fprintf(stderr, "weft: main ended while MPI ranks still ran tasks; ending the job\n");
      MPI_Abort(mpi.comm, 1);
    }
    pthread_join(eng.thread, NULL);
  }
  for (int r = 1; r < mpi.size; r++) MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, mpi.comm);
  for (int got = 1; got < mpi.size;) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, TAG_STOPPED, mpi.comm, &flag, &st);
    if (flag) {
      MPI_Recv(NULL, 0, MPI_BYTE, st.MPI_SOURCE, TAG_STOPPED, mpi.comm, MPI_STATUS_IGNORE);
      got++;
      continue;
    }
    if (now_ns() > end + 2000LL * 1000 * 1000) {
      fprintf(stderr, "weft: MPI ranks did not stop at the end of main; ending the job\n");
      MPI_Abort(mpi.comm, 1);
    }
    struct timespec ts = {0, 100 * 1000};
    nanosleep(&ts, NULL);
  }
  MPI_Comm_free(&mpi.comm);
  finalize();
}

/* Whether mpiexec (Open MPI's, or a PMI-based launcher) started us. */
static bool under_mpiexec(void) {
  return getenv("OMPI_COMM_WORLD_SIZE") != NULL || getenv("PMIX_RANK") != NULL ||
         getenv("PMI_RANK") != NULL;
}

int weft_mpi_init(int *argc, char ***argv) {
  if (mpi.init_calls++ > 0)
    return weft__error(WEFT_EALREADY, "weft_mpi_init: called before");
  if (!under_mpiexec()) return 0;
  int initialised = 0, provided = 0;
  MPI_Initialized(&initialised);
  if (initialised) {
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_MULTIPLE)
      return weft__error(WEFT_EINVAL,
                         "weft_mpi_init: MPI was initialised without MPI_THREAD_MULTIPLE: use "
                         "MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided)");
  } else {
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
      return weft__error(WEFT_EINVAL, "weft_mpi_init: MPI_Init_thread failed");
    if (provided < MPI_THREAD_MULTIPLE) {
      MPI_Finalize();
      return weft__error(WEFT_EINVAL,
                         "weft_mpi_init: this MPI cannot give MPI_THREAD_MULTIPLE (it gave %d)",
                         provided);
    }
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &mpi.comm);
  MPI_Comm_rank(mpi.comm, &mpi.rank);
  MPI_Comm_size(mpi.comm, &mpi.size);
  if (mpi.size < 2) {
    /* Nothing to serve: local pools, and MPI ends with the program. */
    MPI_Comm_free(&mpi.comm);
    atexit(finalize);
    mpi.size = 1;
    return 0;
  }
  mpi.active = true;
  if (mpi.rank != 0) serve();
  mpi.pid = getpid();
  init_conds();
  mpool_ops.shutdown = shutdown_ranks;
  weft__pool_set_remote(&mpool_ops);
  return 0;
}

bool weft_mpi_active(void) { return mpi.active; }
int weft_mpi_rank(void) { return mpi.active ? mpi.rank : 0; }
int weft_mpi_size(void) { return mpi.active ? mpi.size : 1; }

weft_pool weft_mpi_pool_new_opts(const weft_pool_options *o) {
  return weft__pool_new_on(o, &mpool_ops, "weft_mpi_pool_new");
}
