/* SPDX-License-Identifier: MIT */
/* Bytes tasks of any size: running a call into a sink (a worker thread's
 * growing buffer, or a worker process's message buffer that goes out in
 * parts), weft_task_fail and weft_task_return, reading a chunk's items
 * back (with the reruns of a chunk whose worker died), and map over byte
 * strings.
 *
 * A worker process's output travels through the results queue in parts
 * rather than through a temporary shared memory segment: a part is one
 * more message on a queue the worker already writes to, so nothing is
 * made, named or unlinked per result, a worker that dies mid-result leaves
 * nothing behind, and the cost is the copies a queue message has anyway
 * (into the ring, out of it, then appended to the future's buffer). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "os/os.h"
#include "pool_internal.h"

/* ---- the task context ---- */

enum { MODE_POINTER, MODE_SINGLE, MODE_FIXED, MODE_VAR };

#define MESSAGE_MAX 1024

/* What the task running in this thread told weft through weft_task_fail
 * and weft_task_return. */
struct task_ctx {
  int mode;
  weft__sink *sink;
  size_t entry;            /* MODE_VAR: where the item's entry starts in the sink */
  unsigned char *room;     /* MODE_FIXED: the item's room */
  size_t room_size, given; /* MODE_FIXED: its size, and the length given */
  bool returned;           /* weft_task_return gave the result */
  bool oversize;           /* MODE_FIXED: weft_task_return was given too much */
  bool has_message;
  size_t message_len;
  char message[MESSAGE_MAX];
};

static _Thread_local struct task_ctx *tls_task;

static void ctx_item(struct task_ctx *t) {
  t->returned = false;
  t->oversize = false;
  t->has_message = false;
}

int weft_task_fail(int code, const char *fmt, ...) {
  struct task_ctx *t = tls_task;
  if (t == NULL || code == 0) return code;
  int k = 0;
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    k = vsnprintf(t->message, sizeof t->message, fmt, ap);
    va_end(ap);
  }
  if (k < 0) k = 0;
  if ((size_t)k >= sizeof t->message) k = (int)sizeof t->message - 1;
  t->message[k] = '\0';
  t->message_len = (size_t)k;
  t->has_message = true;
  return code;
}

int weft__sink_put(weft__sink *s, const void *data, size_t len) {
  const unsigned char *d = data;
  while (len > 0) {
    if (s->used == s->cap) {
      int err = s->more(s, len);
      if (err != 0) return err;
    }
    size_t k = s->cap - s->used < len ? s->cap - s->used : len;
    memmove(s->buf + s->used, d, k);
    s->used += k;
    d += k;
    len -= k;
  }
  return 0;
}

int weft_task_return(const void *data, size_t len) {
  struct task_ctx *t = tls_task;
  if (t == NULL || t->mode == MODE_POINTER)
    return weft__error(WEFT_EPERM, "weft_task_return: not called in a running bytes task");
  if (t->returned)
    return weft__error(WEFT_EALREADY, "weft_task_return: the task gave its result already");
  if (data == NULL && len > 0)
    return weft__error(WEFT_EINVAL, "weft_task_return: data is NULL and len is %zu", len);
  if (t->mode == MODE_FIXED) {
    t->given = len;
    if (len > t->room_size) {
      t->oversize = true;
      return weft__error(WEFT_EMSGSIZE,
                         "weft_task_return: %zu bytes do not fit in the result's %zu bytes", len,
                         t->room_size);
    }
    if (len > 0) memmove(t->room, data, len);
    t->returned = true;
    return 0;
  }
  weft__sink *s = t->sink;
  size_t start = t->mode == MODE_VAR ? t->entry : 0;
  s->used = start;
  int err = 0;
  if (t->mode == MODE_VAR) {
    weft__entry e = {.len = len};
    err = weft__sink_put(s, &e, sizeof e);
  }
  if (err == 0) err = weft__sink_put(s, data, len);
  if (err != 0) {
    /* A thread's sink only grows, so start is still where it was; a
     * process's fails only once the pool is gone. */
    s->used = start + (t->mode == MODE_VAR ? sizeof(weft__entry) : 0);
    if (s->used > s->cap) s->used = 0;
    return weft__error(err, "weft_task_return: could not keep a %zu-byte result", len);
  }
  t->returned = true;
  return 0;
}

/* ---- running a call ---- */

static size_t oversize_text(char *buf, size_t size, size_t len, size_t room) {
  int k = snprintf(buf, size, "gave a result of %zu bytes, larger than its room of %zu bytes",
                   len, room);
  return k < 0 ? 0 : (size_t)k < size ? (size_t)k : size - 1;
}

static int run_single(const weft__call *c, const void *in, weft__sink *out, struct task_ctx *t,
                      int *err) {
  t->mode = MODE_SINGLE;
  t->sink = out;
  ctx_item(t);
  size_t room = out->cap, len = room;
  out->used = 0;
  int code = c->fn(in, (size_t)c->in_len, out->buf, &len);
  if (t->returned) return 0;
  if (code == 0 && len <= room) {
    out->used = len;
    return 0;
  }
  out->used = 0;
  if (code == 0) {
    char text[128];
    size_t k = oversize_text(text, sizeof text, len, room);
    *err = WEFT_EMSGSIZE;
    if (weft__sink_put(out, text, k) != 0) out->used = 0;
    return WEFT_EMSGSIZE;
  }
  *err = WEFT_ETASKFAILED;
  if (t->has_message && weft__sink_put(out, t->message, t->message_len) != 0) out->used = 0;
  return code;
}

/* A note after a fixed chunk's codes, if there is room (a process
 * worker's buffer must not be sent in parts here: the chunk's layout is
 * fixed). Chunks are sized so that a sixteenth of a message is left; past
 * that, messages are cut or dropped, and an oversized result is told by
 * its code (WEFT_EMSGSIZE) alone. */
static void fixed_note(weft__sink *out, uint32_t i, int32_t err, const char *text, size_t len) {
  size_t left = out->cap - out->used;
  if (left < sizeof(weft__note)) return;
  if (len > left - sizeof(weft__note)) len = left - sizeof(weft__note);
  weft__note note = {.index = i, .err = err, .len = (uint32_t)len};
  memcpy(out->buf + out->used, &note, sizeof note);
  memcpy(out->buf + out->used + sizeof note, text, len);
  out->used += sizeof note + len;
}

/* Records that the items before i are finished, and the output's length. */
static void mark_done(weft__done *done, size_t i, const weft__sink *out) {
  if (done == NULL) return;
  __atomic_store_n(&done->bytes, (uint64_t)(out->flushed + out->used), __ATOMIC_RELAXED);
  __atomic_store_n(&done->items, (uint64_t)i, __ATOMIC_RELEASE);
}

static int run_fixed(const weft__call *c, const void *in, weft__sink *out, uint64_t *item,
                     weft__done *done, struct task_ctx *t) {
  /* Results first, so each starts as aligned as result_size allows (a
   * task may store through a long *), then the codes, then the notes. */
  size_t n = c->n, isz = (size_t)c->item_size, rsz = (size_t)c->result_size;
  unsigned char *res = out->buf;
  unsigned char *codes = res + n * rsz;
  const unsigned char *items = in;
  out->used = weft__chunk_out_len(n, rsz);
  t->mode = MODE_FIXED;
  t->room_size = rsz;
  for (size_t i = 0; i < n; i++) {
    mark_done(done, i, out);
    if (item != NULL) __atomic_store_n(item, c->base + i, __ATOMIC_RELAXED);
    size_t len = rsz;
    ctx_item(t);
    t->room = res + i * rsz;
    int32_t code = c->fn(items + i * isz, isz, res + i * rsz, &len);
    if (t->returned) code = 0;
    else if (t->oversize || (code == 0 && len > rsz)) {
      /* Only the length claimed: the sentence is made when it is read. */
      char text[32];
      int k = snprintf(text, sizeof text, "%zu", t->oversize ? t->given : len);
      code = WEFT_EMSGSIZE;
      fixed_note(out, (uint32_t)i, WEFT_EMSGSIZE, text, (size_t)k);
    } else if (code != 0 && t->has_message) {
      fixed_note(out, (uint32_t)i, WEFT_ETASKFAILED, t->message, t->message_len);
    }
    memcpy(codes + i * sizeof code, &code, sizeof code);
  }
  mark_done(done, n, out);
  return 0;
}

static int run_var(const weft__call *c, const void *in, weft__sink *out, uint64_t *item,
                   weft__done *done, struct task_ctx *t) {
  size_t n = c->n;
  const unsigned char *lens = in;
  const unsigned char *data = lens + n * sizeof(uint64_t);
  /* Each item gets at least half the first buffer as room. */
  size_t min_room = out->cap / 2;
  t->mode = MODE_VAR;
  t->sink = out;
  out->used = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t ilen;
    memcpy(&ilen, lens + i * sizeof ilen, sizeof ilen);
    mark_done(done, i, out);
    if (item != NULL) __atomic_store_n(item, c->base + i, __ATOMIC_RELAXED);
    if (out->cap - out->used < sizeof(weft__entry) + min_room) {
      int err = out->more(out, sizeof(weft__entry) + min_room);
      if (err != 0) return err;
    }
    size_t ent = out->used;
    out->used += sizeof(weft__entry);
    size_t room = out->cap - out->used, len = room;
    t->entry = ent;
    ctx_item(t);
    int code = c->fn(data, (size_t)ilen, out->buf + out->used, &len);
    data += ilen;
    if (t->returned) continue;
    weft__entry e = {.code = code};
    if (code == 0 && len <= room) {
      e.len = len;
      memcpy(out->buf + ent, &e, sizeof e);
      out->used += len;
      continue;
    }
    char text[128];
    const char *msg = t->message;
    size_t k = t->has_message ? t->message_len : 0;
    if (code == 0) {
      k = oversize_text(text, sizeof text, len, room);
      msg = text;
      e.err = WEFT_EMSGSIZE;
    } else {
      e.err = WEFT_ETASKFAILED;
    }
    e.len = k;
    memcpy(out->buf + ent, &e, sizeof e);
    int err = weft__sink_put(out, msg, k);
    if (err != 0) return err;
  }
  return 0;
}

int weft__call_run(const weft__call *c, const void *in, weft__sink *out, uint64_t *item,
                   weft__done *done, int *err) {
  struct task_ctx t;
  struct task_ctx *prev = tls_task; /* a task may run a map on a thread pool of its own */
  tls_task = &t;
  *err = 0;
  int r;
  if (c->kind == WEFT__CALL_SINGLE)
    r = run_single(c, in, out, &t, err);
  else if (c->kind == WEFT__CALL_CHUNK)
    r = run_fixed(c, in, out, item, done, &t);
  else
    r = run_var(c, in, out, item, done, &t);
  tls_task = prev;
  return r;
}

/* ---- worker threads ---- */

/* A worker thread's room: every call's output starts there, and moves to
 * a buffer of its own only if it outgrows it. */
static _Thread_local unsigned char *tls_room;
static _Thread_local size_t tls_room_size;
/* Where a worker thread gathers the input of a borrowed chunk. */
static _Thread_local unsigned char *tls_in;
static _Thread_local size_t tls_in_size;

static int thread_more(weft__sink *s, size_t need) {
  size_t cap = s->cap * 2;
  if (cap < s->used + need) cap = s->used + need;
  unsigned char *b;
  if (s->buf == tls_room) {
    b = malloc(cap);
    if (b != NULL) memcpy(b, s->buf, s->used);
  } else {
    b = realloc(s->buf, cap);
  }
  if (b == NULL) return WEFT_ENOMEM;
  s->buf = b;
  s->cap = cap;
  return 0;
}

/* Grows a worker thread's buffer *b to at least size bytes. */
static bool tls_grow(unsigned char **b, size_t *cap, size_t size) {
  if (*cap >= size) return true;
  unsigned char *nb = realloc(*b, size > 0 ? size : 1);
  if (nb == NULL) return false;
  *b = nb;
  *cap = size;
  return true;
}

int weft__thread_run_call(struct future *f, size_t room, int *err) {
  *err = 0;
  if (!tls_grow(&tls_room, &tls_room_size, room)) return WEFT_ENOMEM;
  const void *in = f->in;
  if (f->gather != NULL) {
    if (!tls_grow(&tls_in, &tls_in_size, (size_t)f->call->in_len)) return WEFT_ENOMEM;
    weft__call_input(f, tls_in);
    in = tls_in;
  }
  weft__sink s = {.buf = tls_room, .cap = room, .more = thread_more};
  int code = weft__call_run(f->call, in, &s, &f->item_now, NULL, err);
  unsigned char *bytes = s.buf;
  if (code == 0 && bytes == tls_room && weft__chunk_deliver(f, bytes, s.used)) return 0;
  if (bytes == tls_room) {
    bytes = malloc(s.used > 0 ? s.used : 1);
    if (bytes == NULL) return WEFT_ENOMEM;
    memcpy(bytes, tls_room, s.used);
  }
  if (code != 0) {
    if (f->call->kind == WEFT__CALL_SINGLE && s.used > 0) f->report = strndup((char *)bytes, s.used);
    free(bytes);
    return code;
  }
  f->bytes = bytes;
  f->bytes_len = s.used;
  return 0;
}

void weft__thread_room_free(void) {
  free(tls_room);
  tls_room = NULL;
  tls_room_size = 0;
  free(tls_in);
  tls_in = NULL;
  tls_in_size = 0;
}

int weft__run_pointer_task(struct future *f, void **result) {
  struct task_ctx t = {.mode = MODE_POINTER};
  struct task_ctx *prev = tls_task;
  tls_task = &t;
  int code = f->fn(f->arg, result);
  tls_task = prev;
  if (code != 0 && t.has_message) f->report = strndup(t.message, t.message_len);
  return code;
}

/* ---- reading a chunk's items ---- */

static void copy_message(char *dst, size_t size, const void *src, size_t len) {
  if (dst == NULL || size == 0) return;
  if (len >= size) len = size - 1;
  memcpy(dst, src, len);
  dst[len] = '\0';
}

/* Builds a VCHUNK's index of entries; false if its output is malformed
 * (cannot happen) or memory ran out. */
static bool var_index(struct future *f) {
  if (f->index != NULL) return true;
  size_t n = __atomic_load_n(&f->state, __ATOMIC_ACQUIRE) == FS_DIED ? (size_t)f->done_items
                                                                      : f->call->n;
  size_t *ix = malloc((n > 0 ? n : 1) * sizeof *ix);
  if (ix == NULL) return false;
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    weft__entry e;
    if (f->bytes_len - off < sizeof e) {
      free(ix);
      return false;
    }
    memcpy(&e, (unsigned char *)f->bytes + off, sizeof e);
    ix[i] = off;
    off += sizeof e;
    if (e.len > f->bytes_len - off) {
      free(ix);
      return false;
    }
    off += (size_t)e.len;
  }
  f->index = ix;
  return true;
}

/* Runs each item of a chunk whose worker died that had not begun, alone:
 * reruns[i], or NULL where it could not be submitted. The items before the
 * one that was running finished, and their output was kept (done_items);
 * that one fails. No item runs twice. */
static void rerun(struct future *f, const char *what) {
  struct pool *p = f->owner;
  const weft__call *c = f->call;
  size_t n = c->n;
  struct future **rs = calloc(n, sizeof *rs);
  if (p == NULL || rs == NULL) {
    free(rs);
    return;
  }
  size_t dead = (size_t)(f->died_item - c->base);
  const unsigned char *in = f->in; /* NULL for a VCHUNK gathered from its items */
  const unsigned char *data = in != NULL ? in + n * sizeof(uint64_t) : NULL;
  char saved[256];
  snprintf(saved, sizeof saved, "%s", weft_last_error());
  int saved_code = weft_last_error_code();
  for (size_t i = 0; i < n; i++) {
    struct future *g = NULL;
    if (c->kind == WEFT__CALL_CHUNK) {
      if (i > dead) {
        g = weft__call_future(p, c->fn, WEFT__CALL_CHUNK, in + i * c->item_size,
                              (size_t)c->item_size, false, what);
        if (g != NULL) {
          g->call->n = 1;
          g->call->base = c->base + i;
          g->call->item_size = c->item_size;
          g->call->result_size = c->result_size;
          g->timeout = f->timeout;
          if (weft__queue_call(p, g, what) != 0) g = NULL;
        }
      }
    } else {
      weft_bytes item;
      if (f->gather != NULL) {
        item = f->gather[i];
      } else {
        uint64_t len;
        memcpy(&len, in + i * sizeof len, sizeof len);
        item = (weft_bytes){data, (size_t)len};
        data += len;
      }
      if (i > dead)
        g = weft__submit_vchunk(p, c->fn, &item, 1, c->base + i, f->timeout, false, what);
    }
    rs[i] = g;
  }
  weft__error(saved_code, "%s", saved);
  f->reruns = rs;
}

static int item_failure(struct future *f, size_t i, const char *what, int32_t code, int32_t err,
                        const char *text, size_t len, int *task_code, char *message,
                        size_t message_size) {
  unsigned long long seq = (unsigned long long)f->call->seq;
  unsigned long long index = (unsigned long long)(f->call->base + i);
  copy_message(message, message_size, text, len);
  if (err == WEFT_EMSGSIZE)
    return weft__error(WEFT_EMSGSIZE, "%s: task %llu (item %llu) %.*s", what, seq, index,
                       (int)len, text);
  if (task_code != NULL) *task_code = code;
  return weft__error(WEFT_ETASKFAILED, "%s: task %llu (item %llu) failed with code %d%s%.*s",
                     what, seq, index, (int)code, len > 0 ? ": " : "", (int)len, text);
}

int weft__chunk_next(struct future *f, size_t i, size_t *off, const char *what,
                     const void **data, size_t *len, int *task_code, char *message,
                     size_t message_size) {
  weft__entry e;
  if (f->call->kind != WEFT__CALL_VCHUNK ||
      __atomic_load_n(&f->state, __ATOMIC_ACQUIRE) != FS_OK || *off > f->bytes_len ||
      f->bytes_len - *off < sizeof e)
    return weft__chunk_item(f, i, what, data, len, task_code, message, message_size);
  const unsigned char *b = (const unsigned char *)f->bytes + *off;
  memcpy(&e, b, sizeof e);
  if (e.len > f->bytes_len - *off - sizeof e) /* malformed: cannot happen */
    return weft__chunk_item(f, i, what, data, len, task_code, message, message_size);
  *off += sizeof e + (size_t)e.len;
  if (e.err != 0)
    return weft__chunk_item(f, i, what, data, len, task_code, message, message_size);
  if (task_code != NULL) *task_code = 0;
  copy_message(message, message_size, "", 0);
  *data = b + sizeof e;
  *len = (size_t)e.len;
  return 0;
}

bool weft__chunk_deliver(struct future *f, const unsigned char *out, size_t len) {
  const weft__call *c = f->call;
  if (f->dest == NULL || c->kind != WEFT__CALL_CHUNK) return false;
  size_t n = c->n, rsz = (size_t)c->result_size;
  if (len < weft__chunk_out_len(n, rsz)) return false;
  int32_t any = 0;
  const unsigned char *codes = out + n * rsz;
  for (size_t i = 0; i < n; i++) {
    int32_t code;
    memcpy(&code, codes + i * sizeof code, sizeof code);
    any |= code;
  }
  if (any != 0) return false;
  memcpy(f->dest, out, n * rsz);
  f->delivered = true;
  return true;
}

int weft__chunk_item(struct future *f, size_t i, const char *what, const void **data,
                     size_t *len, int *task_code, char *message, size_t message_size) {
  if (task_code != NULL) *task_code = 0;
  copy_message(message, message_size, "", 0);
  uint32_t s = __atomic_load_n(&f->state, __ATOMIC_ACQUIRE);
  if (s == FS_DIED && i < f->done_items) s = FS_OK; /* finished before the crash: kept */
  if (s == FS_DIED && f->call->n > 1) {
    if (f->reruns == NULL) rerun(f, what);
    if (f->reruns != NULL && f->reruns[i] != NULL) {
      weft__future_wait(f->reruns[i], WEFT__NEVER);
      return weft__chunk_item(f->reruns[i], 0, what, data, len, task_code, message,
                              message_size);
    }
  }
  if (s != FS_OK) {
    int err = weft__future_outcome(f, what);
    if (s == FS_FAILED && task_code != NULL && f->fail_err != WEFT_EMSGSIZE)
      *task_code = f->task_err;
    const char *r = f->report != NULL ? f->report : weft_last_error();
    copy_message(message, message_size, r, strlen(r));
    return err;
  }
  const unsigned char *b = f->bytes;
  if (f->call->kind == WEFT__CALL_CHUNK) {
    size_t n = f->call->n, rsz = (size_t)f->call->result_size;
    int32_t code;
    memcpy(&code, b + n * rsz + i * sizeof code, sizeof code);
    if (code == 0) {
      *data = b + i * rsz;
      *len = rsz;
      return 0;
    }
    /* Its note, if it has one. */
    size_t off = weft__chunk_out_len(n, rsz);
    while (f->bytes_len - off >= sizeof(weft__note)) {
      weft__note note;
      memcpy(&note, b + off, sizeof note);
      off += sizeof note;
      size_t k = note.len <= f->bytes_len - off ? note.len : f->bytes_len - off;
      if (note.index == i && note.err == WEFT_EMSGSIZE) {
        char text[128];
        size_t claimed = 0;
        for (size_t d = 0; d < k && b[off + d] >= '0' && b[off + d] <= '9'; d++)
          claimed = claimed * 10 + (size_t)(b[off + d] - '0');
        size_t tk = oversize_text(text, sizeof text, claimed, rsz);
        return item_failure(f, i, what, code, note.err, text, tk, task_code, message,
                            message_size);
      }
      if (note.index == i)
        return item_failure(f, i, what, code, note.err, (const char *)b + off, k, task_code,
                            message, message_size);
      off += k;
    }
    /* No note (the notes filled their room): the code still tells an
     * oversized result. */
    if (code == WEFT_EMSGSIZE) {
      char text[128];
      int tk = snprintf(text, sizeof text, "gave a result larger than its room of %zu bytes", rsz);
      return item_failure(f, i, what, code, WEFT_EMSGSIZE, text, (size_t)tk, task_code, message,
                          message_size);
    }
    return item_failure(f, i, what, code, WEFT_ETASKFAILED, "", 0, task_code, message,
                        message_size);
  }
  if (!var_index(f))
    return weft__error(WEFT_ENOMEM, "%s: out of memory reading task %llu", what,
                       (unsigned long long)f->call->seq);
  weft__entry e;
  memcpy(&e, b + f->index[i], sizeof e);
  const unsigned char *body = b + f->index[i] + sizeof e;
  if (e.err == 0) {
    *data = body;
    *len = (size_t)e.len;
    return 0;
  }
  return item_failure(f, i, what, e.code, e.err, (const char *)body, (size_t)e.len, task_code,
                      message, message_size);
}

size_t weft__chunk_progress(struct future *f) {
  uint32_t s = __atomic_load_n(&f->state, __ATOMIC_ACQUIRE);
  if (s >= FS_OK) return f->call->n;
  if (s != FS_RUNNING) return 0;
  if (f->owner != NULL) return f->owner->ops->progress(f);
  uint64_t at = __atomic_load_n(&f->item_now, __ATOMIC_RELAXED);
  return at > f->call->base ? (size_t)(at - f->call->base) : 0;
}

void weft__chunk_release(struct future *f) {
  if (f->reruns != NULL) {
    for (size_t i = 0; i < f->call->n; i++)
      if (f->reruns[i] != NULL) weft_future_close((weft_future){f->reruns[i]->id});
    free(f->reruns);
    f->reruns = NULL;
  }
  free(f->index);
  f->index = NULL;
}

/* How often a map with a progress hook looks at its running chunks. */
#define PROGRESS_NS 50000000

void weft__map_wait(struct future **fs, size_t c, size_t nchunks, size_t done, size_t n,
                    const weft_map_options *o, int64_t t0, size_t *reported) {
  if (o->progress == NULL) {
    weft__future_wait(fs[c], WEFT__NEVER);
    return;
  }
  while (!weft__future_wait(fs[c], weft__os_now_ns() + PROGRESS_NS)) {
    /* Chunks start in order: the first pending one ends the running ones. */
    size_t now = done;
    for (size_t j = c; j < nchunks; j++) {
      uint32_t s = __atomic_load_n(&fs[j]->state, __ATOMIC_ACQUIRE);
      if (s == FS_PENDING) break;
      now += weft__chunk_progress(fs[j]);
    }
    if (now > *reported && now < n) {
      *reported = now;
      o->progress(now, n, weft__since(t0), o->progress_arg);
    }
  }
}

/* ---- chunks of byte strings ---- */

size_t weft__vchunk_room(struct pool *p) {
  return p->max_message - sizeof(weft__call);
}

size_t weft__vchunk_items(struct pool *p, const weft_bytes *items, size_t n, size_t per,
                          size_t base, const char *what) {
  size_t room = weft__vchunk_room(p), used = 0, k = 0;
  if (per > UINT32_MAX) per = UINT32_MAX;
  while (k < n && k < per) {
    size_t need = sizeof(uint64_t);
    if (items[k].len > room - used - need || used + need > room) break;
    if (k > 0 && used + need + items[k].len > WEFT__CHUNK_BYTES) break;
    used += need + items[k].len;
    k++;
  }
  if (k == 0 && n > 0)
    weft__error(WEFT_EMSGSIZE, "%s: item %zu (%zu bytes) is larger than %s's max_message (%zu) less %zu bytes",
                what, base, items[0].len, p->name, p->max_message,
                sizeof(weft__call) + sizeof(uint64_t));
  return k;
}

/* Writes the next `want` bytes of items[0..n-1] as a VCHUNK's input (the
 * n lengths, then the bytes) at dst; *i and *off say how far it has got. */
static void gather(const weft_bytes *items, size_t n, size_t *i, size_t *off,
                   unsigned char *dst, size_t want) {
  /* Whole segments at a time, then the piece of one that is cut. */
  if (*off == 0) {
    for (; *i < n && want >= sizeof(uint64_t); (*i)++) {
      uint64_t len = items[*i].len;
      memcpy(dst, &len, sizeof len);
      dst += sizeof len;
      want -= sizeof len;
    }
    for (; *i >= n && *i < 2 * n && want >= items[*i - n].len; (*i)++) {
      size_t len = items[*i - n].len;
      if (len > 0) memcpy(dst, items[*i - n].data, len);
      dst += len;
      want -= len;
    }
  }
  while (want > 0 && *i < 2 * n) {
    uint64_t len;
    const unsigned char *src;
    size_t seg;
    if (*i < n) {
      len = items[*i].len;
      src = (const unsigned char *)&len;
      seg = sizeof len;
    } else {
      src = items[*i - n].data;
      seg = items[*i - n].len;
    }
    size_t k = seg - *off < want ? seg - *off : want;
    if (k > 0) memcpy(dst, src + *off, k);
    dst += k;
    want -= k;
    *off += k;
    if (*off == seg) {
      (*i)++;
      *off = 0;
    }
  }
}

void weft__input_fill(void *arg, unsigned char *dst, size_t n) {
  struct weft__input *in = arg;
  const struct future *f = in->f;
  if (f->gather != NULL) {
    gather(f->gather, f->call->n, &in->i, &in->off, dst, n);
  } else if (n > 0) {
    memcpy(dst, (const unsigned char *)f->in + in->off, n);
    in->off += n;
  }
}

void weft__call_input(const struct future *f, unsigned char *dst) {
  struct weft__input in = {.f = f};
  weft__input_fill(&in, dst, (size_t)f->call->in_len);
}

struct future *weft__submit_vchunk(struct pool *p, weft_bytes_task fn, const weft_bytes *items,
                                   size_t n, size_t base, double timeout, bool borrowed,
                                   const char *what) {
  size_t in_len = n * sizeof(uint64_t);
  for (size_t i = 0; i < n; i++) in_len += items[i].len;
  struct future *f = weft__call_future(p, fn, WEFT__CALL_VCHUNK, NULL, in_len, borrowed, what);
  if (f == NULL) return NULL;
  f->call->n = (uint32_t)n;
  if (borrowed) {
    f->gather = items;
    f->in = NULL;
  } else {
    size_t i = 0, off = 0;
    gather(items, n, &i, &off, (unsigned char *)(f->call + 1), in_len);
  }
  f->call->base = base;
  f->timeout = timeout;
  if (weft__queue_call(p, f, what) != 0) return NULL;
  return f;
}

/* ---- map over byte strings ---- */

struct vmap_chunk {
  struct future *f;
  size_t base;
};

/* A map over byte strings: its chunks are submitted as earlier ones are
 * taken, at most `window` ahead, so that the output buffers of taken
 * chunks are reused by the next ones rather than fresh memory faulted in
 * for each chunk. A chunk's items are gathered straight from the caller's
 * into the message that carries them. */
struct vmap {
  struct pool *p;
  weft_bytes_task fn;
  const weft_bytes *items;
  size_t n, per, window;
  double timeout;
  const char *what;
  size_t next;            /* the first item not submitted */
  size_t nchunks, cap;    /* chunks submitted, room in cs and fs */
  struct vmap_chunk *cs;
  struct future **fs;     /* the same futures, for weft__map_wait */
};

/* Points entries [0, n) of a results block that moved from was to blk
 * at their bytes in blk (a failed item's stays {NULL, 0}). */
static void rebase(weft_bytes *r, size_t n, uintptr_t was, unsigned char *blk) {
  if (was == (uintptr_t)blk) return;
  for (size_t i = 0; i < n; i++)
    if (r[i].data != NULL) r[i].data = blk + ((uintptr_t)r[i].data - was);
}

/* Submits chunks while fewer than window are ahead of chunk taken. 0 or
 * the failure, said. */
static int vmap_submit(struct vmap *m, size_t taken) {
  while (m->next < m->n && m->nchunks < taken + m->window) {
    size_t k = weft__vchunk_items(m->p, m->items + m->next, m->n - m->next, m->per, m->next,
                                  m->what);
    if (k == 0) return weft_last_error_code();
    if (m->nchunks == m->cap) {
      size_t nc = m->cap ? m->cap * 2 : 16;
      struct vmap_chunk *cs = realloc(m->cs, nc * sizeof *cs);
      if (cs != NULL) m->cs = cs;
      struct future **fs = cs != NULL ? realloc(m->fs, nc * sizeof *fs) : NULL;
      if (fs != NULL) m->fs = fs;
      if (cs == NULL || fs == NULL) return weft__error(WEFT_ENOMEM, "%s: out of memory", m->what);
      m->cap = nc;
    }
    struct future *f = weft__submit_vchunk(m->p, m->fn, m->items + m->next, k, m->next,
                                           m->timeout, true, m->what);
    if (f == NULL) return weft_last_error_code();
    m->cs[m->nchunks] = (struct vmap_chunk){f, m->next};
    m->fs[m->nchunks++] = f;
    m->next += k;
  }
  return 0;
}

int weft_pool_map_bytes_opts(weft_pool h, weft_bytes_task fn, const weft_bytes *items, size_t n,
                             weft_bytes **results, const weft_map_options *o) {
  static const weft_map_options defaults = {.size_ = sizeof defaults, .chunksize = WEFT_DEFAULT};
  const char *what = "weft_pool_map_bytes";
  if (o == NULL) o = &defaults;
  if (results == NULL) return weft__error(WEFT_EINVAL, "%s: results is NULL", what);
  *results = NULL;
  if (n > 0 && items == NULL) return weft__error(WEFT_EINVAL, "%s: items is NULL", what);
  for (size_t i = 0; i < n; i++)
    if (items[i].data == NULL && items[i].len > 0)
      return weft__error(WEFT_EINVAL, "%s: item %zu has NULL data and %zu bytes", what, i,
                         items[i].len);
  struct pool *p = weft__pool_get(h, what);
  if (p == NULL) return weft_last_error_code();
  int err = weft__check_map(p, fn, 0, 1, o, what);
  if (err == 0 && n == 0) {
    pthread_mutex_lock(&p->lock);
    if (p->closed) err = weft__error(WEFT_ECLOSED, "%s: %s is closed", what, p->name);
    pthread_mutex_unlock(&p->lock);
    if (err == 0 && (*results = malloc(1)) == NULL)
      err = weft__error(WEFT_ENOMEM, "%s: out of memory", what);
  }
  if (err != 0 || n == 0) {
    weft__pool_put(p);
    return err;
  }
  int64_t t0 = weft__os_now_ns();
  size_t per = (size_t)o->chunksize;
  if (o->chunksize == WEFT_DEFAULT) {
    size_t parts = (size_t)p->max_workers * 4;
    per = n / parts + (n % parts != 0);
  }
  /* The results' block: n entries, then their bytes, each at a multiple
   * of 8; entries are moved with the block when it grows. */
  size_t head = n * sizeof(weft_bytes);
  /* Room for small results (16 bytes an item) from the start; the room
   * left over is given back at the end. */
  size_t cap = n <= (SIZE_MAX - 4096) / 40 ? head + n * 16 + 4096 : head, used = head;
  unsigned char *blk = malloc(cap);
  struct vmap m = {.p = p, .fn = fn, .items = items, .n = n, .per = per,
                   .window = (size_t)p->max_workers * 4, .timeout = o->timeout, .what = what};
  if (blk == NULL) err = weft__error(WEFT_ENOMEM, "%s: out of memory", what);
  if (err == 0) err = vmap_submit(&m, 0);
  /* Every submitted chunk is waited for, even after a failure. */
  int first = 0;
  char first_msg[512];
  char message[MESSAGE_MAX];
  size_t done = 0, reported = 0;
  weft_bytes *r = (weft_bytes *)blk;
  for (size_t c = 0; c < m.nchunks; c++) {
    struct future *f = m.cs[c].f;
    weft__map_wait(m.fs, c, m.nchunks, done, n, o, t0, &reported);
    size_t k = f->call->n, walked = 0;
    for (size_t i = 0; i < k; i++) {
      size_t at = m.cs[c].base + i;
      const void *data = NULL;
      size_t len = 0;
      int task_code = 0;
      int code = weft__chunk_next(f, i, &walked, what, &data, &len, &task_code,
                                  o->item_failed != NULL ? message : NULL, sizeof message);
      if (o->errors != NULL) o->errors[at] = code;
      if (code == 0 && blk != NULL) {
        size_t off = (used + 7) & ~(size_t)7;
        if (off + len > cap) {
          /* Room for the rest at the rate so far, so that results of
           * similar sizes need one move. */
          size_t nc = cap * 2 > off + len ? cap * 2 : off + len;
          size_t left = n - at, rate = (used - head) / (at > 0 ? at : 1) + 8;
          if (left <= (SIZE_MAX - off - len) / rate / 2 && off + len + left * rate * 9 / 8 > nc)
            nc = off + len + left * rate * 9 / 8;
          uintptr_t was = (uintptr_t)blk;
          unsigned char *b = realloc(blk, nc);
          if (b == NULL) {
            code = weft__error(WEFT_ENOMEM, "%s: out of memory for the result of item %zu",
                               what, at);
            if (o->errors != NULL) o->errors[at] = code;
          } else {
            blk = b;
            cap = nc;
            r = (weft_bytes *)blk;
            rebase(r, at, was, blk);
          }
        }
        if (code == 0) {
          if (len > 0) memcpy(blk + off, data, len);
          r[at] = (weft_bytes){blk + off, len};
          used = off + len;
        }
      }
      if (code != 0) {
        if (blk != NULL) r[at] = (weft_bytes){NULL, 0};
        if (first == 0) {
          first = code;
          snprintf(first_msg, sizeof first_msg, "%s", weft_last_error());
        }
        if (o->item_failed != NULL)
          o->item_failed(at, code, task_code, message, o->item_failed_arg);
      }
    }
    done += k;
    if (o->progress != NULL && done > reported) {
      reported = done;
      o->progress(done, n, weft__since(t0), o->progress_arg);
    }
    weft__chunk_release(f);
    weft_future_close((weft_future){f->id});
    m.fs[c] = NULL;
    if (err == 0) err = vmap_submit(&m, c + 1);
  }
  free(m.cs);
  free(m.fs);
  weft__pool_put(p);
  if (blk != NULL && m.nchunks > 0) {
    for (size_t i = m.next; i < n; i++) r[i] = (weft_bytes){NULL, 0}; /* never submitted */
    uintptr_t was = (uintptr_t)blk;
    unsigned char *b = realloc(blk, used > 0 ? used : 1);
    if (b != NULL) blk = b;
    r = (weft_bytes *)blk;
    rebase(r, n, was, blk);
    *results = (weft_bytes *)blk;
  } else {
    free(blk);
  }
  if (err != 0) return err;
  if (first != 0) return weft__error(first, "%s", first_msg);
  return 0;
}
