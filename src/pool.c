/* SPDX-License-Identifier: MIT */
/* Pools: the generic part of Python's ThreadPoolExecutor and
 * multiprocessing.Pool -- the registry of pools, their life (new, close,
 * terminate, join, free, exit and fork), submits, apply_async, map and
 * imap. Each pool's workers are its backend's (pool_internal.h): threads
 * (tpool.c), local processes (ppool.c) or MPI ranks (the weft_mpi
 * library); futures are future.c's. */
#define _GNU_SOURCE
#include "weft/pool.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "handle.h"
#include "internal.h"
#include "pool_internal.h"
#include "runtime.h"
#include "os/os.h"
#include "weft/process.h"
#include "weft/queue.h"
#include "weft/thread.h"

/* Tuning. */
/* weft_progress_bar redraws at most this often (seconds): a display rate,
 * not measured. */
#define PROGRESS_REDRAW_S 0.1

/* ---- pools ---- */

static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static weft__handle_table pools;
static unsigned pool_counter;
static int exit_hook_set;

void weft__pool_put(struct pool *p) {
  if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  if (p->ops != NULL) p->ops->free(p);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

static struct pool *pool_get(weft_pool h, const char *fn) {
  pthread_mutex_lock(&pools_lock);
  struct pool *p = weft__handle_get(&pools, h.id);
  if (p != NULL && p->pid != weft__pid) {
    pthread_mutex_unlock(&pools_lock);
    weft__error(WEFT_EPERM, "%s: %s was made in process %d; a forked child has none of its workers",
                fn, p->name, (int)p->pid);
    return NULL;
  }
  if (p != NULL) __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&pools_lock);
  if (p == NULL) weft__error(WEFT_ECLOSED, "%s: the pool handle is closed or invalid", fn);
  return p;
}

struct pool *weft__pool_get(weft_pool h, const char *fn) { return pool_get(h, fn); }

static void close_at_exit(void *obj, void *unused) {
  (void)unused;
  struct pool *p = obj;
  if (p->pid != weft__pid) return; /* a forked child's copy: its lock may be held */
  if (p->kind == POOL_PROCESSES) return; /* see weft__pool_exit_rules */
  pthread_mutex_lock(&p->lock);
  p->closed = true;
  pthread_mutex_unlock(&p->lock);
  p->ops->close(p);
}

static void pools_at_exit(void) {
  pthread_mutex_lock(&pools_lock);
  weft__handle_each(&pools, close_at_exit, NULL);
  pthread_mutex_unlock(&pools_lock);
}

void weft__pool_exit_hook(void) {
  if (!__atomic_exchange_n(&exit_hook_set, 1, __ATOMIC_ACQ_REL)) atexit(pools_at_exit);
}

#define DEFAULT_MAX_MESSAGE ((size_t)4 << 20)

/* The backend of process pools that name no start method: MPI ranks once
 * the program asked for them (the weft_mpi library sets it), else local. */
static const struct weft__pool_ops *remote_ops;

void weft__pool_set_remote(const struct weft__pool_ops *ops) {
  __atomic_store_n(&remote_ops, ops, __ATOMIC_RELEASE);
}

static const struct weft__pool_ops *process_backend(const weft_pool_options *o) {
  const struct weft__pool_ops *remote = __atomic_load_n(&remote_ops, __ATOMIC_ACQUIRE);
  return remote != NULL && o->start_method == NULL ? remote : &weft__ppool_ops;
}

static weft_pool pool_new(const weft_pool_options *o, int kind, const struct weft__pool_ops *ops,
                          const char *fn) {
  weft_pool none = {0};
  if (o == NULL || (o->workers < 1 && o->workers != WEFT_DEFAULT)) {
    weft__error(WEFT_EINVAL, "%s: workers must be at least 1 (leave it out for the default)", fn);
    return none;
  }
  if (o->maxtasksperchild < 0) {
    weft__error(WEFT_EINVAL, "%s: negative maxtasksperchild", fn);
    return none;
  }
  /* Room for "_N" with N up to 10 digits in the thread names. */
  if (o->name != NULL && strlen(o->name) > WEFT_NAME_MAX - 11) {
    weft__error(WEFT_EINVAL, "%s: name is longer than %d bytes", fn, WEFT_NAME_MAX - 11);
    return none;
  }
  if (kind == POOL_THREADS && o->task_timeout != 0) {
    weft__error(WEFT_EINVAL, "%s: task_timeout needs a process pool (threads cannot be killed)",
                fn);
    return none;
  }
  if (!(o->task_timeout >= 0)) {
    weft__error(WEFT_EINVAL, "%s: task_timeout is negative or NaN", fn);
    return none;
  }
  if (o->max_message != 0 && (o->max_message < 64 || o->max_message > ((size_t)1 << 30))) {
    weft__error(WEFT_EINVAL, "%s: max_message must be between 64 bytes and 1 GiB", fn);
    return none;
  }
  if (o->callback_threads < 0) {
    weft__error(WEFT_EINVAL, "%s: negative callback_threads", fn);
    return none;
  }
  if (kind == POOL_THREADS && o->start_method != NULL) {
    weft__error(WEFT_EINVAL, "%s: a start method is for process pools (threads are not started "
                             "as processes)", fn);
    return none;
  }
  struct pool *p = calloc(1, sizeof *p);
  if (p == NULL) {
    weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
    return none;
  }
  p->refs = 1;
  p->kind = kind;
  p->pid = weft__pid;
  p->max_workers = o->workers != WEFT_DEFAULT ? o->workers : weft_cpu_count();
  p->maxtasks = o->maxtasksperchild;
  p->initializer = o->initializer;
  p->initarg = o->initarg;
  p->max_message = o->max_message != 0 ? o->max_message : DEFAULT_MAX_MESSAGE;
  p->ops = kind == POOL_THREADS ? &weft__tpool_ops : ops != NULL ? ops : process_backend(o);
  pthread_mutex_init(&p->lock, NULL);
  pthread_mutex_lock(&pools_lock);
  if (o->name != NULL)
    snprintf(p->name, sizeof p->name, "%s", o->name);
  else if (kind == POOL_THREADS)
    snprintf(p->name, sizeof p->name, "ThreadPool-%u", pool_counter++);
  else
    snprintf(p->name, sizeof p->name, "ProcessPool-%u", pool_counter++);
  pthread_mutex_unlock(&pools_lock);
  if (p->ops->start(p, o) != 0) {
    pthread_mutex_destroy(&p->lock); /* the backend cleaned up and said why */
    free(p);
    return none;
  }
  if (kind == POOL_PROCESSES) weft__pool_exit_hook();
  pthread_mutex_lock(&pools_lock);
  p->id = weft__handle_add(&pools, p);
  pthread_mutex_unlock(&pools_lock);
  if (p->id == 0) {
    p->ops->terminate(p);
    p->ops->join(p, WEFT__NEVER, WEFT_FOREVER);
    p->refs = 1;
    weft__pool_put(p);
    weft__error(WEFT_ENOMEM, "%s: out of memory", fn);
    return none;
  }
  return (weft_pool){p->id};
}

weft_pool weft_thread_pool_new_opts(const weft_pool_options *o) {
  return pool_new(o, POOL_THREADS, NULL, "weft_thread_pool_new");
}

weft_pool weft_process_pool_new_opts(const weft_pool_options *o) {
  return pool_new(o, POOL_PROCESSES, NULL, "weft_process_pool_new");
}

weft_pool weft__pool_new_on(const weft_pool_options *o, const struct weft__pool_ops *ops,
                            const char *fn) {
  return pool_new(o, POOL_PROCESSES, ops, fn);
}

static int queue_call(struct pool *p, struct future *f, const char *what);

weft_future weft_pool_submit(weft_pool h, weft_task fn, void *arg) {
  weft_future none = {0};
  if (fn == NULL) {
    weft__error(WEFT_EINVAL, "weft_pool_submit: fn is NULL");
    return none;
  }
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return none;
  weft_future out = none;
  struct future *f;
  if (p->kind == POOL_PROCESSES) {
    weft__error(WEFT_EINVAL,
                "weft_pool_submit: %s is a process pool, which takes bytes: use "
                "weft_pool_apply_async",
                p->name);
  } else if ((f = weft__future_new(fn, arg)) == NULL) {
    weft__error(WEFT_ENOMEM, "weft_pool_submit: out of memory");
  } else if (queue_call(p, f, "weft_pool_submit") == 0) {
    out = (weft_future){f->id};
  }
  weft__pool_put(p);
  return out;
}

int weft_pool_close(weft_pool h) {
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return weft_last_error_code();
  /* The backend refuses submits before a join can see the pool closed. */
  p->ops->close(p);
  pthread_mutex_lock(&p->lock);
  p->closed = true;
  pthread_mutex_unlock(&p->lock);
  weft__pool_put(p);
  return 0;
}

int weft_pool_terminate(weft_pool h) {
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return weft_last_error_code();
  int err = 0;
  if (__atomic_exchange_n(&p->terminated, 1, __ATOMIC_ACQ_REL)) {
    err = weft__error(WEFT_EALREADY, "weft_pool_terminate: %s was already terminated", p->name);
  } else {
    pthread_mutex_lock(&p->lock);
    p->closed = true;
    pthread_mutex_unlock(&p->lock);
    p->ops->terminate(p);
  }
  weft__pool_put(p);
  return err;
}

int weft_pool_join(weft_pool h, double timeout) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return weft__error(err, "weft_pool_join: timeout is NaN");
  struct pool *p = pool_get(h, __func__);
  if (p == NULL) return weft_last_error_code();
  pthread_mutex_lock(&p->lock);
  bool closed = p->closed;
  pthread_mutex_unlock(&p->lock);
  if (p->ops->serves_caller(p))
    err = weft__error(WEFT_EDEADLK, "weft_pool_join: called from a worker of %s", p->name);
  else if (!closed)
    err = weft__error(WEFT_ERUNNING, "weft_pool_join: %s is still running; close it first",
                      p->name);
  else
    err = p->ops->join(p, deadline, timeout);
  if (err == 0) {
    pthread_mutex_lock(&p->lock);
    p->joined = true;
    pthread_mutex_unlock(&p->lock);
  }
  weft__pool_put(p);
  return err;
}

int weft_pool_free(weft_pool h) {
  pthread_mutex_lock(&pools_lock);
  struct pool *p = weft__handle_get(&pools, h.id);
  int err = 0;
  if (p == NULL) {
    err = weft__error(WEFT_ECLOSED, "weft_pool_free: the pool handle is closed or invalid");
  } else if (p->pid != weft__pid) {
    err = weft__error(WEFT_EPERM, "weft_pool_free: %s was made in process %d", p->name,
                      (int)p->pid);
    p = NULL;
  } else {
    pthread_mutex_lock(&p->lock);
    bool joined = p->joined;
    pthread_mutex_unlock(&p->lock);
    if (!joined)
      err = weft__error(WEFT_EBUSY, "weft_pool_free: %s has not been joined", p->name);
    else
      weft__handle_remove(&pools, h.id);
  }
  pthread_mutex_unlock(&pools_lock);
  if (err == 0) weft__pool_put(p);
  return err;
}

/* ---- bytes tasks: apply_async, map, imap ---- */

/* A future for a bytes task: its call header and argument in one block,
 * or, borrowed, the header alone and the argument left where it is (a
 * map's items, which outlive every chunk of it: map waits for them all). */
static struct future *call_future(struct pool *p, weft_bytes_task fn, uint32_t kind,
                                  const void *in, size_t in_len, bool borrowed, const char *what) {
  if (sizeof(weft__call) + in_len > p->max_message || in_len > p->max_message) {
    weft__error(WEFT_EMSGSIZE, "%s: the argument (%zu bytes) is larger than %s's max_message (%zu)",
                what, in_len, p->name, p->max_message - sizeof(weft__call));
    return NULL;
  }
  weft__call *c = malloc(sizeof *c + (in_len > 0 && !borrowed ? in_len : 1));
  if (c == NULL) {
    weft__error(WEFT_ENOMEM, "%s: out of memory", what);
    return NULL;
  }
  memset(c, 0, sizeof *c);
  c->fn = fn;
  c->kind = kind;
  c->in_len = in_len;
  if (in_len > 0 && in != NULL && !borrowed) memcpy(c + 1, in, in_len); /* NULL: the caller fills it */
  struct future *f = weft__future_new(NULL, NULL);
  if (f == NULL) {
    free(c);
    weft__error(WEFT_ENOMEM, "%s: out of memory", what);
    return NULL;
  }
  f->call = c;
  f->in = borrowed ? in : (const void *)(c + 1);
  return f;
}

/* Hands a bytes-task future to its pool (the task's reference goes with
 * it); on failure the future is released and the error said. */
static int queue_call(struct pool *p, struct future *f, const char *what) {
  int err = 0;
  if (__atomic_load_n(&p->broken, __ATOMIC_ACQUIRE))
    err = weft__error(WEFT_EBROKEN, "%s: %s is broken (an initializer failed)", what, p->name);
  else
    err = p->ops->submit(p, f, what);
  if (err != 0) {
    weft__future_put(f); /* the task's reference */
    weft__future_forget(f);
    weft__future_put(f); /* the handle's */
  }
  return err;
}

struct future *weft__call_future(struct pool *p, weft_bytes_task fn, uint32_t kind,
                                 const void *in, size_t in_len, bool borrowed, const char *what) {
  return call_future(p, fn, kind, in, in_len, borrowed, what);
}

int weft__queue_call(struct pool *p, struct future *f, const char *what) {
  return queue_call(p, f, what);
}


weft_future weft_pool_apply_async_opts(weft_pool h, weft_bytes_task fn, const void *arg,
                                       size_t len, const weft_apply_options *o) {
  weft_future none = {0};
  static const weft_apply_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  if (fn == NULL || (arg == NULL && len > 0) || (ssize_t)len < 0) {
    weft__error(WEFT_EINVAL, "weft_pool_apply_async: %s",
                fn == NULL ? "fn is NULL" : "arg is NULL or len is negative");
    return none;
  }
  if (!(o->timeout >= 0)) {
    weft__error(WEFT_EINVAL, "weft_pool_apply_async: timeout is negative or NaN");
    return none;
  }
  struct pool *p = pool_get(h, "weft_pool_apply_async");
  if (p == NULL) return none;
  weft_future out = none;
  if (o->timeout != 0 && p->kind == POOL_THREADS) {
    weft__error(WEFT_EINVAL,
                "weft_pool_apply_async: a time limit needs a process pool (threads cannot be "
                "killed)");
  } else {
    struct future *f = call_future(p, fn, WEFT__CALL_SINGLE, arg, len, false,
                                   "weft_pool_apply_async");
    if (f != NULL) {
      f->timeout = o->timeout;
      /* Added before the task is queued, so they cannot miss its end;
       * the one added last runs first, so the error callback goes first. */
      int err = 0;
      if (o->callback != NULL) err = weft__future_add_callback(f, o->callback, o->callback_arg, WEFT__CB_SUCCESS);
      if (err == 0 && o->error_callback != NULL)
        err = weft__future_add_callback(f, o->error_callback, o->callback_arg, WEFT__CB_FAILURE);
      if (err != 0) {
        weft__error(WEFT_ENOMEM, "weft_pool_apply_async: out of memory");
        weft__future_put(f);
        weft_future_close((weft_future){f->id});
      } else if (queue_call(p, f, "weft_pool_apply_async") == 0) {
        out = (weft_future){f->id};
      }
    }
  }
  weft__pool_put(p);
  return out;
}

/* The bytes one item of a chunk takes in a message: the larger of its
 * argument and its result with the result's code. */
static size_t chunk_bytes_per_item(size_t item_size, size_t result_size) {
  size_t out = sizeof(int32_t) + result_size;
  return item_size > out ? item_size : out;
}

/* Items per chunk: the caller's, or Python's default for map, and never
 * more than fit in a message either way. */
static size_t chunk_items(struct pool *p, long chunksize, size_t n, size_t item_size,
                          size_t result_size) {
  size_t c = (size_t)chunksize;
  if (chunksize == WEFT_DEFAULT) {
    size_t parts = (size_t)p->max_workers * 4;
    c = n / parts + (n % parts != 0);
    if (c == 0) c = 1;
  }
  size_t room = p->max_message - sizeof(weft__call);
  size_t per = chunk_bytes_per_item(item_size, result_size);
  if (chunksize == WEFT_DEFAULT && c * per > WEFT__CHUNK_BYTES)
    c = WEFT__CHUNK_BYTES / per > 0 ? WEFT__CHUNK_BYTES / per : 1;
  /* A sixteenth of a message is left for the notes of failed items. */
  if (room >= p->max_message / 16 + per) room -= p->max_message / 16;
  size_t fit = room / per;
  if (fit == 0) fit = 1;
  return c < fit ? c : fit;
}

static int check_map(struct pool *p, weft_bytes_task fn, size_t item_size, size_t result_size,
                     const weft_map_options *o, const char *what) {
  if (fn == NULL) return weft__error(WEFT_EINVAL, "%s: fn is NULL", what);
  if (result_size == 0) return weft__error(WEFT_EINVAL, "%s: result_size is 0", what);
  if (o->chunksize < 1 && o->chunksize != WEFT_DEFAULT)
    return weft__error(WEFT_EINVAL, "%s: chunksize %ld is below 1", what, o->chunksize);
  if (o->window < 0) return weft__error(WEFT_EINVAL, "%s: window %ld is below 1", what, o->window);
  if (!(o->timeout >= 0))
    return weft__error(WEFT_EINVAL, "%s: timeout is negative or NaN", what);
  if (o->timeout != 0 && p->kind == POOL_THREADS)
    return weft__error(WEFT_EINVAL, "%s: a time limit needs a process pool", what);
  if (item_size > p->max_message || result_size > p->max_message)
    return weft__error(WEFT_EMSGSIZE, "%s: one item or result does not fit in max_message (%zu)",
                       what, p->max_message);
  size_t per = chunk_bytes_per_item(item_size, result_size);
  if (sizeof(weft__call) + per > p->max_message)
    return weft__error(WEFT_EMSGSIZE, "%s: one item or result does not fit in max_message (%zu)",
                       what, p->max_message);
  return 0;
}

/* Submits a chunk of n items starting at index base. With dest (map),
 * the items are borrowed and the results may be delivered there. */
static struct future *submit_chunk(struct pool *p, weft_bytes_task fn, const void *items,
                                   size_t item_size, size_t n, size_t base, size_t result_size,
                                   double timeout, void *dest, const char *what) {
  struct future *f =
      call_future(p, fn, WEFT__CALL_CHUNK, items, n * item_size, dest != NULL, what);
  if (f == NULL) return NULL;
  f->dest = dest;
  f->call->n = (uint32_t)n;
  f->call->base = base;
  f->call->item_size = item_size;
  f->call->result_size = result_size;
  f->timeout = timeout;
  if (queue_call(p, f, what) != 0) return NULL;
  return f;
}

static double since(int64_t t0) { return (double)(weft__os_now_ns() - t0) / 1e9; }

double weft__since(int64_t t0) { return since(t0); }

int weft__check_map(struct pool *p, weft_bytes_task fn, size_t item_size, size_t result_size,
                    const weft_map_options *o, const char *what) {
  return check_map(p, fn, item_size, result_size, o, what);
}

int weft_pool_map_opts(weft_pool h, weft_bytes_task fn, const void *items, size_t item_size,
                       size_t n, void *results, size_t result_size, const weft_map_options *o) {
  static const weft_map_options defaults = {.size_ = sizeof defaults, .chunksize = WEFT_DEFAULT};
  if (o == NULL) o = &defaults;
  if (n > 0 && (items == NULL || results == NULL))
    return weft__error(WEFT_EINVAL, "weft_pool_map: items or results is NULL");
  struct pool *p = pool_get(h, "weft_pool_map");
  if (p == NULL) return weft_last_error_code();
  int err = check_map(p, fn, item_size, result_size, o, "weft_pool_map");
  if (err == 0 && n == 0) {
    pthread_mutex_lock(&p->lock);
    if (p->closed) err = weft__error(WEFT_ECLOSED, "weft_pool_map: %s is closed", p->name);
    pthread_mutex_unlock(&p->lock);
  }
  if (err != 0 || n == 0) {
    weft__pool_put(p);
    return err;
  }
  int64_t t0 = weft__os_now_ns();
  size_t per = chunk_items(p, o->chunksize, n, item_size, result_size);
  size_t nchunks = n / per + (n % per != 0);
  struct future **fs = calloc(nchunks, sizeof *fs);
  if (fs == NULL) {
    weft__pool_put(p);
    return weft__error(WEFT_ENOMEM, "weft_pool_map: out of memory");
  }
  size_t submitted = 0;
  for (; submitted < nchunks; submitted++) {
    size_t base = submitted * per, k = n - base < per ? n - base : per;
    fs[submitted] = submit_chunk(p, fn, (const unsigned char *)items + base * item_size,
                                 item_size, k, base, result_size, o->timeout,
                                 (unsigned char *)results + base * result_size, "weft_pool_map");
    if (fs[submitted] == NULL) {
      err = weft_last_error_code();
      break;
    }
  }
  /* Every submitted chunk is waited for, even after a failure: the caller's
   * arrays must not be written once map has returned. */
  int first = 0;
  char first_msg[512];
  char message[1024];
  size_t done = 0, reported = 0;
  for (size_t c = 0; c < submitted; c++) {
    struct future *f = fs[c];
    weft__map_wait(fs, c, submitted, done, n, o, t0, &reported);
    size_t base = c * per, k = f->call->n;
    if (__atomic_load_n(&f->state, __ATOMIC_ACQUIRE) == FS_OK &&
        (f->delivered || weft__chunk_deliver(f, f->bytes, f->bytes_len))) {
      if (o->errors != NULL) memset(o->errors + base, 0, k * sizeof *o->errors);
      k = 0; /* its results are in place */
    }
    for (size_t i = 0; i < k; i++) {
      const void *data;
      size_t len;
      int task_code;
      int code = weft__chunk_item(f, i, "weft_pool_map", &data, &len, &task_code,
                                  o->item_failed != NULL ? message : NULL, sizeof message);
      if (o->errors != NULL) o->errors[base + i] = code;
      if (code == 0) {
        memcpy((unsigned char *)results + (base + i) * result_size, data, result_size);
        continue;
      }
      if (first == 0) {
        first = code;
        snprintf(first_msg, sizeof first_msg, "%s", weft_last_error());
      }
      if (o->item_failed != NULL) o->item_failed(base + i, code, task_code, message, o->item_failed_arg);
    }
    done += f->call->n;
    if (o->progress != NULL && done > reported) {
      reported = done;
      o->progress(done, n, since(t0), o->progress_arg);
    }
    weft__chunk_release(f);
    weft_future_close((weft_future){f->id}); /* the last reference: the pool dropped its own */
  }
  free(fs);
  weft__pool_put(p);
  if (err != 0) return err; /* a submit failed: its own message stands */
  if (first != 0) return weft__error(first, "%s", first_msg);
  return 0;
}

/* ---- imap ---- */

struct weft_imap;

struct ichunk {
  struct future *f;
  struct weft_imap *it;
  size_t base, n, pos; /* items base..base+n-1; pos: the next to give */
  struct ichunk *next;
};

struct weft_imap {
  pid_t pid; /* the process that made it: its futures and pool live there */
  struct pool *p;
  weft_bytes_task fn;
  weft_imap_source source;
  void *source_arg;
  size_t item_size, result_size, per, window;
  bool unordered, source_done;
  double timeout;
  weft_progress_fn progress;
  void *progress_arg;
  int64_t t0;
  size_t read, given;
  size_t held;                /* items in buf read from the source, not yet submitted */
  unsigned char *buf;         /* items of the chunk being read */
  struct ichunk *head, *tail; /* ordered: in submission order */
  size_t inflight;            /* chunks submitted and not yet fully given */
  size_t submitted;
  uint32_t fired;             /* futex: chunk watchers that ran (unordered) */
  weft_queue *done;           /* unordered: chunks as they finish */
  struct ichunk *cur;         /* unordered: the chunk being given */
  struct ichunk *last;        /* fully given: freed by the next call (its bytes were given) */
  int task_err;
  char message[1024];         /* of the item the last call failed with */
  /* Byte strings: items read and not yet submitted, their bytes in vdata
   * (data holds an offset until submitted); vitems[held] may be one read
   * that did not fit the chunk (carry). An input that cannot go on
   * (an item too large) stops it with `stuck`. */
  bool var, carry;
  weft_imap_bytes_source vsource;
  weft_bytes *vitems;
  unsigned char *vdata;
  size_t vdata_len, vdata_cap;
  int stuck;
  char stuck_msg[256];
};

/* Unordered: a finished chunk joins the queue of finished ones. It must
 * not touch the chunk after the put (the reader may free it at once). */
static void imap_chunk_done(struct future *f, void *arg) {
  (void)f;
  struct ichunk *c = arg;
  struct weft_imap *it = c->it;
  weft_queue_put(it->done, c, WEFT_FOREVER);
  __atomic_add_fetch(&it->fired, 1, __ATOMIC_SEQ_CST);
  weft__os_futex_wake(&it->fired, INT32_MAX);
}

/* Reads and submits chunks while the window has room. */
/* Reads byte strings into vitems while they fit one chunk; returns how
 * many the chunk has. */
static size_t imap_read_var(struct weft_imap *it) {
  size_t room = weft__vchunk_room(it->p);
  size_t k = it->held;
  size_t used = k * sizeof(uint64_t) + it->vdata_len;
  while (!it->carry && k < it->per && !it->source_done && it->stuck == 0) {
    weft_bytes b = {NULL, 0};
    if (!it->vsource(&b, it->source_arg)) {
      it->source_done = true;
      break;
    }
    size_t need = sizeof(uint64_t) + b.len;
    if ((b.data == NULL && b.len > 0) || b.len > room - sizeof(uint64_t)) {
      it->stuck = b.len > 0 && b.data == NULL ? WEFT_EINVAL : WEFT_EMSGSIZE;
      snprintf(it->stuck_msg, sizeof it->stuck_msg,
               b.data == NULL ? "weft_imap_next: item %zu has NULL data and %zu bytes"
                              : "weft_imap_next: item %zu (%zu bytes) is larger than the pool's "
                                "max_message less 64 bytes",
               it->read + k, b.len);
      break;
    }
    if (it->vdata_len + b.len > it->vdata_cap) {
      size_t cap = it->vdata_cap * 2 > it->vdata_len + b.len ? it->vdata_cap * 2
                                                             : it->vdata_len + b.len;
      unsigned char *d = realloc(it->vdata, cap);
      if (d == NULL) {
        it->stuck = WEFT_ENOMEM;
        snprintf(it->stuck_msg, sizeof it->stuck_msg, "weft_imap_next: out of memory");
        break;
      }
      it->vdata = d;
      it->vdata_cap = cap;
    }
    if (b.len > 0) memcpy(it->vdata + it->vdata_len, b.data, b.len);
    it->vitems[k] = (weft_bytes){(const void *)(uintptr_t)it->vdata_len, b.len};
    it->vdata_len += b.len;
    if (k > 0 && used + need > room) {
      it->carry = true; /* it goes first in the next chunk */
      break;
    }
    used += need;
    k++;
  }
  return k;
}

/* Submits the first k byte strings read; the carried one moves to the
 * front. */
static struct future *imap_submit_var(struct weft_imap *it, size_t k) {
  weft_bytes *items = malloc(k * sizeof *items);
  if (items == NULL) {
    weft__error(WEFT_ENOMEM, "weft_imap_next: out of memory");
    return NULL;
  }
  for (size_t i = 0; i < k; i++)
    items[i] = (weft_bytes){it->vdata + (uintptr_t)it->vitems[i].data, it->vitems[i].len};
  struct future *f = weft__submit_vchunk(it->p, it->fn, items, k, it->read, it->timeout, false,
                                         "weft_imap_next");
  free(items);
  if (f == NULL) return NULL;
  it->held = 0;
  it->vdata_len = 0;
  if (it->carry) {
    weft_bytes c = it->vitems[k];
    memmove(it->vdata, it->vdata + (uintptr_t)c.data, c.len);
    it->vitems[0] = (weft_bytes){(const void *)0, c.len};
    it->vdata_len = c.len;
    it->held = 1;
    it->carry = false;
  }
  return f;
}

static int imap_fill(struct weft_imap *it) {
  /* Items read before an input that stopped it still go. */
  while ((it->held > 0 || it->carry || (!it->source_done && it->stuck == 0)) &&
         it->inflight < it->window) {
    /* Items read but not yet submitted (a submit failed) go first. */
    size_t k = it->held;
    if (it->var) {
      k = imap_read_var(it);
      if (k == 0) break;
    } else if (k == 0) {
      while (k < it->per && it->source(it->buf + k * it->item_size, it->source_arg)) k++;
      if (k < it->per) it->source_done = true;
      if (k == 0) break;
    }
    it->held = k;
    struct ichunk *c = calloc(1, sizeof *c);
    if (c == NULL) return weft__error(WEFT_ENOMEM, "weft_imap_next: out of memory");
    c->it = it;
    c->base = it->read;
    c->n = k;
    c->f = it->var ? imap_submit_var(it, k)
                   : submit_chunk(it->p, it->fn, it->buf, it->item_size, k, it->read,
                                  it->result_size, it->timeout, NULL, "weft_imap_next");
    if (c->f == NULL) {
      free(c);
      return weft_last_error_code();
    }
    if (!it->var) it->held = 0; /* imap_submit_var set it */
    it->read += k;
    it->inflight++;
    it->submitted++;
    if (it->tail != NULL)
      it->tail->next = c;
    else
      it->head = c;
    it->tail = c;
    if (it->unordered && weft__future_watch(c->f, imap_chunk_done, c) != 0) {
      /* Without its watcher the chunk would never be given: wait here. */
      weft__future_wait(c->f, WEFT__NEVER);
      imap_chunk_done(c->f, c);
    }
  }
  if (it->stuck != 0 && it->held == 0 && !it->carry)
    return weft__error(it->stuck, "%s", it->stuck_msg);
  return 0;
}

static void ichunk_free(struct ichunk *c) {
  weft__chunk_release(c->f);
  weft_future_close((weft_future){c->f->id});
  free(c);
}

static weft_imap *imap_new(weft_pool h, weft_bytes_task fn, weft_imap_source source,
                           weft_imap_bytes_source vsource, void *source_arg, size_t item_size,
                           size_t result_size, const weft_map_options *o, const char *what) {
  static const weft_map_options defaults = {.size_ = sizeof defaults, .chunksize = WEFT_DEFAULT};
  if (o == NULL) o = &defaults;
  bool var = vsource != NULL;
  if (source == NULL && vsource == NULL) {
    weft__error(WEFT_EINVAL, "%s: source is NULL", what);
    return NULL;
  }
  struct pool *p = pool_get(h, what);
  if (p == NULL) return NULL;
  if (check_map(p, fn, item_size, result_size, o, what) != 0) {
    weft__pool_put(p);
    return NULL;
  }
  struct weft_imap *it = calloc(1, sizeof *it);
  long chunksize = o->chunksize == WEFT_DEFAULT ? 1 : o->chunksize;
  size_t per;
  if (var) {
    /* At most as many lengths as fit in a message. */
    size_t fit = (p->max_message - sizeof(weft__call)) / sizeof(uint64_t);
    per = (size_t)chunksize < fit ? (size_t)chunksize : fit;
    if (per > UINT32_MAX) per = UINT32_MAX;
  } else {
    per = chunk_items(p, chunksize, 1, item_size, result_size);
  }
  unsigned char *buf = var ? NULL : malloc(per * item_size > 0 ? per * item_size : 1);
  weft_bytes *vitems = var ? malloc((per + 1) * sizeof *vitems) : NULL;
  weft_queue *done = o->unordered ? weft_queue_new(.name = "imap results") : NULL;
  if (it == NULL || (!var && buf == NULL) || (var && vitems == NULL) ||
      (o->unordered && done == NULL)) {
    free(it);
    free(buf);
    free(vitems);
    if (done != NULL) weft_queue_free(done);
    weft__pool_put(p);
    weft__error(WEFT_ENOMEM, "%s: out of memory", what);
    return NULL;
  }
  it->pid = weft__pid;
  it->p = p; /* keeps the call's reference until weft_imap_free */
  it->fn = fn;
  it->source = source;
  it->vsource = vsource;
  it->var = var;
  it->vitems = vitems;
  it->source_arg = source_arg;
  it->item_size = item_size;
  it->result_size = result_size;
  it->per = per;
  it->window = o->window > 0 ? (size_t)o->window : (size_t)p->max_workers * 4;
  it->unordered = o->unordered;
  it->timeout = o->timeout;
  it->progress = o->progress;
  it->progress_arg = o->progress_arg;
  it->t0 = weft__os_now_ns();
  it->buf = buf;
  it->done = done;
  /* The caller holds a handle (handle.h), not it. */
  weft_imap *handle = weft__ref_add(it, WEFT__REF_IMAP, what);
  if (handle == NULL) {
    weft__pool_put(p);
    if (done != NULL) weft_queue_free(done);
    free(buf);
    free(vitems);
    free(it);
  }
  return handle;
}

weft_imap *weft_pool_imap_opts(weft_pool h, weft_bytes_task fn, weft_imap_source source,
                               void *source_arg, size_t item_size, size_t result_size,
                               const weft_map_options *o) {
  return imap_new(h, fn, source, NULL, source_arg, item_size, result_size, o, "weft_pool_imap");
}

weft_imap *weft_pool_imap_bytes_opts(weft_pool h, weft_bytes_task fn,
                                     weft_imap_bytes_source source, void *source_arg,
                                     const weft_map_options *o) {
  if (source == NULL) {
    weft__error(WEFT_EINVAL, "weft_pool_imap_bytes: source is NULL");
    return NULL;
  }
  return imap_new(h, fn, NULL, source, source_arg, 0, 1, o, "weft_pool_imap_bytes");
}

static int imap_next(struct weft_imap *it, double timeout, size_t *index, void *result,
                     weft_bytes *bytes, const char *what) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return weft__error(err, "%s: timeout is NaN", what);
  it->task_err = 0;
  it->message[0] = '\0';
  if (it->last != NULL) {
    ichunk_free(it->last);
    it->last = NULL;
  }
  /* A fill that fails (the pool was closed or broke before the input
   * ended) is said once the results already in flight have been given. */
  int fill_err = imap_fill(it);
  if (fill_err != 0 && it->inflight == 0) return fill_err;
  struct ichunk *c;
  if (!it->unordered) {
    c = it->head;
    if (c == NULL) return weft__error(WEFT_EEOF, "%s: no more results", what);
    if (!weft__future_wait(c->f, deadline))
      return weft__error(WEFT_ETIMEDOUT, "%s: no result after %g s", what, timeout);
  } else {
    c = it->cur;
    if (c == NULL) {
      if (it->inflight == 0) return weft__error(WEFT_EEOF, "%s: no more results", what);
      void *item;
      if (weft_queue_get(it->done, &item, weft__timeout_left(deadline)) != 0)
        return weft__error(WEFT_ETIMEDOUT, "%s: no result after %g s", what, timeout);
      c = it->cur = item;
    }
  }
  size_t i = c->pos++;
  if (index != NULL) *index = c->base + i;
  const void *data = NULL;
  size_t len = 0;
  int task_code = 0;
  err = weft__chunk_item(c->f, i, what, &data, &len, &task_code, it->message,
                         sizeof it->message);
  if (err == 0 && result != NULL) memcpy(result, data, it->result_size);
  if (bytes != NULL) *bytes = err == 0 ? (weft_bytes){data, len} : (weft_bytes){NULL, 0};
  it->task_err = task_code;
  it->given++;
  if (c->pos == c->n) {
    struct ichunk **pp = &it->head, *prev = NULL;
    while (*pp != c) {
      prev = *pp;
      pp = &(*pp)->next;
    }
    *pp = c->next;
    if (it->tail == c) it->tail = prev;
    if (it->unordered) it->cur = NULL;
    it->inflight--;
    it->last = c; /* its bytes were just given: freed by the next call */
  }
  if (it->progress != NULL)
    it->progress(it->given, it->source_done ? it->read : 0, since(it->t0), it->progress_arg);
  if (err != 0) return err;
  /* Keep the workers busy while the caller works on this result. */
  int ferr = imap_fill(it);
  (void)ferr; /* said again by the next call */
  return 0;
}

/* An object of one process used in another (a forked child's copy): its
 * futures' results go to the process that made it. */

int weft_imap_next(weft_imap *h, double timeout, size_t *index, void *result) {
  int herr = 0;
  struct weft_imap *it = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_next", &herr);
  if (it == NULL) return herr;
  if (it->pid != weft__pid) return weft__other_process(it->pid, "imap", "weft_imap_next");
  if (it->var)
    return weft__error(WEFT_EINVAL,
                       "weft_imap_next: the imap is over byte strings: use weft_imap_next_bytes");
  return imap_next(it, timeout, index, result, NULL, "weft_imap_next");
}

int weft_imap_next_bytes(weft_imap *h, double timeout, size_t *index, weft_bytes *result) {
  int herr = 0;
  struct weft_imap *it = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_next_bytes", &herr);
  if (it == NULL) return herr;
  if (it->pid != weft__pid) return weft__other_process(it->pid, "imap", "weft_imap_next_bytes");
  if (!it->var)
    return weft__error(WEFT_EINVAL,
                       "weft_imap_next_bytes: the imap is over fixed-size items: use "
                       "weft_imap_next");
  return imap_next(it, timeout, index, NULL, result, "weft_imap_next_bytes");
}

int weft_imap_task_error(const weft_imap *h) {
  int herr;
  const struct weft_imap *it = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_task_error", &herr);
  return it == NULL ? 0 : it->task_err;
}

const char *weft_imap_task_message(const weft_imap *h) {
  int herr;
  const struct weft_imap *it = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_task_message", &herr);
  return it == NULL ? "" : it->message;
}

int weft_imap_free(weft_imap *h) {
  if (h == NULL) return 0;
  int herr = 0;
  struct weft_imap *in = weft__ref_use(h, WEFT__REF_IMAP, "weft_imap_free", &herr);
  if (in == NULL) return herr;
  /* Freeing waits for its tasks, which finish in the process that made it. */
  if (in->pid != weft__pid) return weft__other_process(in->pid, "imap", "weft_imap_free");
  struct weft_imap *it = weft__ref_remove(h, WEFT__REF_IMAP, "weft_imap_free");
  if (it == NULL) return weft_last_error_code();
  if (it->last != NULL) ichunk_free(it->last);
  /* Cancel what has not started, wait for the rest. */
  for (struct ichunk *c = it->head; c != NULL; c = c->next) weft__future_cancel(c->f);
  if (it->unordered) {
    /* Watchers still to run touch it: wait until all have. */
    uint32_t fired;
    while ((fired = __atomic_load_n(&it->fired, __ATOMIC_SEQ_CST)) != (uint32_t)it->submitted)
      weft__os_futex_wait(&it->fired, fired, WEFT__NEVER);
  }
  while (it->head != NULL) {
    struct ichunk *c = it->head;
    it->head = c->next;
    weft__future_wait(c->f, WEFT__NEVER);
    ichunk_free(c);
  }
  weft__pool_put(it->p);
  if (it->done != NULL) weft_queue_free(it->done);
  free(it->buf);
  free(it->vitems);
  free(it->vdata);
  free(it);
  return 0;
}

/* ---- progress, scope ---- */

void weft_progress_bar(size_t done, size_t total, double elapsed, void *arg) {
  static _Thread_local double last = -1;
  if (!isatty(STDERR_FILENO)) return;
  bool end = total != 0 && done >= total;
  if (!end && last >= 0 && elapsed - last < PROGRESS_REDRAW_S && elapsed >= last) return;
  last = end ? -1 : elapsed;
  const char *label = arg != NULL ? arg : "";
  char bar[31];
  if (total != 0) {
    size_t fill = done * 30 / total;
    for (size_t i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r%s%s[%s] %zu/%zu %5.1f%% %.1fs", label, *label ? " " : "", bar, done,
            total, 100.0 * (double)done / (double)total, elapsed);
  } else {
    fprintf(stderr, "\r%s%s%zu done %.1fs", label, *label ? " " : "", done, elapsed);
  }
  if (end) fputc('\n', stderr);
  fflush(stderr);
}

void weft_pool_scope_end(weft_pool *pool) {
  if (pool == NULL || pool->id == 0) return;
  weft_pool_close(*pool);
  if (weft_pool_join(*pool, WEFT_FOREVER) == 0) weft_pool_free(*pool);
  pool->id = 0;
}

/* ---- exit ---- */

static void stop_at_exit(void *obj, void *unused) {
  (void)unused;
  struct pool *p = obj;
  if (p->pid == weft__pid) p->ops->at_exit(p);
}

/* Run by the exit rules once the non-daemon threads have been joined (they
 * may still use a pool, as in Python, whose pools end after them) and
 * before the daemon children, the workers among them, are terminated: from
 * here on a worker that ends is not replaced. */
WEFT__HOT void weft__pool_exit_rules(void) {
  pthread_mutex_lock(&pools_lock);
  weft__handle_each(&pools, stop_at_exit, NULL);
  pthread_mutex_unlock(&pools_lock);
  const struct weft__pool_ops *remote = __atomic_load_n(&remote_ops, __ATOMIC_ACQUIRE);
  if (remote != NULL && remote->shutdown != NULL) remote->shutdown();
}

/* ---- fork ---- */

/* The registries' locks are held across fork, so a child never inherits
 * one held by a thread it does not have; both sides then release them. Its
 * copies of pools and futures refuse every call (they carry the parent's
 * pid): their workers stayed in the parent. */
void weft__pool_before_fork(void) {
  pthread_mutex_lock(&pools_lock);
  weft__future_before_fork();
}

void weft__pool_after_fork_parent(void) {
  weft__future_after_fork();
  pthread_mutex_unlock(&pools_lock);
}

WEFT__HOT static void pool_fork_child(void *obj, void *unused) {
  (void)unused;
  struct pool *p = obj;
  p->ops->after_fork_child(p);
}

WEFT__HOT void weft__pool_after_fork_child(void) {
  weft__handle_each(&pools, pool_fork_child, NULL);
  weft__future_after_fork(); /* the forking thread took it: it is the child's */
  pthread_mutex_unlock(&pools_lock);
}
