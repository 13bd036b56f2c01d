/* SPDX-License-Identifier: MIT */
/* Pipe: Python's multiprocessing.Pipe over a connected AF_UNIX stream pair.
 *
 * A message goes out as an 8-byte length header (native byte order: both
 * ends run on one machine) followed by its bytes, in one gather write.
 * Nothing is read ahead of the message being received, so the socket stays
 * readable exactly while a message (or end of file) is pending, which is
 * what a caller polling weft_conn_fileno relies on.
 *
 * A recv that gives up part-way (timeout) keeps what it read in the end's
 * struct: the header bytes, and the body in a staging buffer, and the next
 * recv goes on from there. Body bytes are read straight into the caller's
 * buffer and only copied to the staging buffer when the call gives up.
 *
 * Thread cancellation is off inside every call except where the end's state
 * is whole: waiting for the first byte of a send, or for readability while
 * every byte read so far is kept in the struct. glibc before 2.41 may cancel
 * a recv or send that already moved data, so those never run cancellable.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "handle.h"
#include "internal.h"
#include "os/os.h"
#include "region.h"
#include "weft/pipe.h"

#define HEAD sizeof(uint64_t)

/* The public weft_conn pointer is a handle (handle.h) for this struct. */
struct weft_conn {
  int fd;
  bool can_send, can_recv;
  /* The message being received, when a recv returned in the middle of it. */
  unsigned char head[HEAD];
  size_t head_got; /* header bytes read */
  size_t body_got; /* body bytes read; between calls they are in stage */
  char *stage;     /* the body, once a recv gave up after reading some of it */
};

/* ---- creation and closing ---- */

static int socketpair_error(int r) {
  if (r == -EMFILE || r == -ENFILE)
    return weft__error(WEFT_EMFILE, "weft_pipe: too many open files");
  if (r == -ENOMEM || r == -ENOBUFS) return weft__error(WEFT_ENOMEM, "weft_pipe: out of memory");
  return weft__error(r, "weft_pipe: could not make a socket pair: %s", weft_strerror(r));
}

int weft_pipe_opts(weft_conn **a, weft_conn **b, const weft_pipe_options *opts) {
  if (a != NULL) *a = NULL;
  if (b != NULL) *b = NULL;
  if (a == NULL || b == NULL)
    return weft__error(WEFT_EINVAL, "weft_pipe: %s is NULL", a == NULL ? "a" : "b");
  bool one_way = opts != NULL && opts->one_way;
  weft_conn *x = calloc(1, sizeof *x), *y = calloc(1, sizeof *y);
  if (x == NULL || y == NULL) {
    free(x);
    free(y);
    return weft__error(WEFT_ENOMEM, "weft_pipe: out of memory");
  }
  int fds[2];
  int r = weft__os_socketpair(fds);
  if (r < 0) {
    free(x);
    free(y);
    return socketpair_error(r);
  }
  /* Shut down the unused directions so that the kernel, not only weft,
   * refuses them: a send into the receive-only end fails even through
   * the raw fd, and the sender sees no readable data that never comes. */
  if (one_way && ((r = weft__os_shutdown(fds[0], SHUT_WR)) < 0 ||
                  (r = weft__os_shutdown(fds[1], SHUT_RD)) < 0)) {
    weft__os_close(fds[0]);
    weft__os_close(fds[1]);
    free(x);
    free(y);
    return weft__error(r, "weft_pipe: could not make the pipe one-way: %s", weft_strerror(r));
  }
  x->fd = fds[0];
  y->fd = fds[1];
  x->can_recv = y->can_send = true;
  x->can_send = y->can_recv = !one_way;
  weft_conn *hx = weft__ref_add(x, WEFT__REF_CONN, "weft_pipe");
  weft_conn *hy = hx != NULL ? weft__ref_add(y, WEFT__REF_CONN, "weft_pipe") : NULL;
  if (hy == NULL) {
    if (hx != NULL) weft__ref_remove(hx, WEFT__REF_CONN, "weft_pipe");
    weft__os_close(fds[0]);
    weft__os_close(fds[1]);
    free(x);
    free(y);
    return weft_last_error_code();
  }
  *a = hx;
  *b = hy;
  return 0;
}

/* The end behind a handle, swapped in for it; the error recorded for NULL,
 * a closed end or another object. */
static int conn_of(weft_conn **conn, const char *fn) {
  int err = 0;
  *conn = weft__ref_use(*conn, WEFT__REF_CONN, fn, &err);
  return err;
}

int weft_conn_close(weft_conn *conn) {
  if (conn == NULL) return 0;
  conn = weft__ref_remove(conn, WEFT__REF_CONN, "weft_conn_close");
  if (conn == NULL) return weft_last_error_code();
  weft__os_close(conn->fd);
  free(conn->stage);
  free(conn);
  return 0;
}

/* ---- travel to a spawned child (region.h) ---- */

#define CAN_SEND 1u
#define CAN_RECV 2u

int weft__conn_export(const void *h, struct weft__object_rec *rec, int *fd, const char *call) {
  weft_conn *c = (weft_conn *)h;
  int err = conn_of(&c, call);
  if (err != 0) return err;
  if (c->head_got != 0 || c->body_got != 0)
    return weft__error(WEFT_EINVAL,
                       "%s: a connection in the middle of receiving a message cannot travel "
                       "(its next bytes are the rest of that message)",
                       call);
  int d = weft__os_dup(c->fd);
  if (d < 0) return weft__error(d, "%s: cannot pass the connection: %s", call, weft_strerror(d));
  rec->flags = (c->can_send ? CAN_SEND : 0) | (c->can_recv ? CAN_RECV : 0);
  *fd = d;
  return 0;
}

int weft__conn_import(const void *h, const struct weft__object_rec *rec, int fd) {
  if (fd < 0) return -EPROTO;
  weft_conn *c = calloc(1, sizeof *c);
  if (c == NULL) return -ENOMEM;
  c->fd = fd;
  c->can_send = (rec->flags & CAN_SEND) != 0;
  c->can_recv = (rec->flags & CAN_RECV) != 0;
  int err = weft__ref_add_at(h, c, WEFT__REF_CONN);
  if (err != 0) free(c);
  return err;
}

int weft_conn_fileno(weft_conn *conn) {
  int cerr = conn_of(&conn, "weft_conn_fileno");
  if (cerr != 0) return cerr;
  return conn->fd;
}

/* ---- sending ---- */

int weft_conn_send(weft_conn *conn, const void *buf, size_t len) {
  int cerr = conn_of(&conn, "weft_conn_send");
  if (cerr != 0) return cerr;
  if (buf == NULL && len > 0)
    return weft__error(WEFT_EINVAL, "weft_conn_send: buf is NULL but len is %zu", len);
  if (len > WEFT_MSG_MAX)
    return weft__error(WEFT_EINVAL, "weft_conn_send: len %zu is above WEFT_MSG_MAX (%zu)", len,
                       WEFT_MSG_MAX);
  if (!conn->can_send)
    return weft__error(WEFT_EPERM, "weft_conn_send: this end of a one-way pipe only receives");
  uint64_t head = len;
  size_t total = HEAD + len, done = 0;
  int err = 0;
  int cancel_state = weft__nocancel_begin();
  while (done < total) {
    const void *first, *second = buf;
    size_t first_len, second_len = len;
    if (done < HEAD) {
      first = (const char *)&head + done;
      first_len = HEAD - done;
    } else {
      first = (const char *)buf + (done - HEAD);
      first_len = total - done;
      second = NULL;
      second_len = 0;
    }
    /* Before the first byte, a full socket means waiting in ppoll, where a
     * cancelled thread leaves nothing behind; after it, the rest goes out in
     * a blocking send, or the peer would read half a message. */
    ssize_t n = weft__os_send2(conn->fd, first, first_len, second, second_len, done == 0);
    if (n >= 0) {
      done += (size_t)n;
    } else if (n == -EAGAIN && done == 0) {
      weft__nocancel_end(cancel_state);
      int r = weft__os_wait_fd(conn->fd, false, true, WEFT__NEVER);
      weft__nocancel_begin();
      if (r < 0) {
        err = r;
        break;
      }
    } else {
      err = (int)n;
      break;
    }
  }
  weft__nocancel_end(cancel_state);
  if (err == 0) return 0;
  /* A peer that closed with data unread makes the kernel report ECONNRESET
   * once before EPIPE: both mean the other end is gone. */
  if (err == -EPIPE || err == -ECONNRESET)
    return weft__error(WEFT_EPIPE, "weft_conn_send: the other end is closed");
  /* What went out cannot be taken back: end the stream so that the peer
   * sees a message cut short rather than reads its rest as a header. */
  if (done > 0) weft__os_shutdown(conn->fd, SHUT_WR);
  return weft__error(err, "weft_conn_send: %s", weft_strerror(err));
}

/* ---- receiving ---- */

static void reset_message(weft_conn *c) {
  free(c->stage);
  c->stage = NULL;
  c->head_got = 0;
  c->body_got = 0;
}

static uint64_t message_size(const weft_conn *c) {
  uint64_t size;
  memcpy(&size, c->head, HEAD);
  return size;
}

static int at_eof(weft_conn *c) {
  if (c->head_got == 0)
    return weft__error(WEFT_EEOF, "weft_conn_recv: the other end is closed and every message "
                                  "was read");
  size_t head_got = c->head_got, body_got = c->body_got;
  uint64_t size = head_got == HEAD ? message_size(c) : 0;
  reset_message(c);
  if (head_got < HEAD)
    return weft__error(WEFT_EEOF, "weft_conn_recv: the other end closed in the middle of a "
                                  "message header; the last message was cut short");
  return weft__error(WEFT_EEOF,
                     "weft_conn_recv: the other end closed after %zu of %llu bytes of a "
                     "message; the last message was cut short",
                     body_got, (unsigned long long)size);
}

/* Moves the body bytes read so far out of the caller's buffer into the
 * struct, so that the call may return. Returns false without memory. */
static bool stage_body(weft_conn *c, const void *buf, size_t size) {
  if (c->stage != NULL || c->body_got == 0) return true;
  c->stage = malloc(size);
  if (c->stage == NULL) return false;
  memcpy(c->stage, buf, c->body_got);
  return true;
}

/* Waits until the socket is readable or the deadline passes: 1, 0 or -errno.
 * The caller's cancellation state applies while cancellable. */
static int wait_readable(const weft_conn *c, weft__deadline deadline, int cancel_state,
                         bool cancellable) {
  if (weft__deadline_passed(deadline)) return 0;
  if (cancellable) weft__nocancel_end(cancel_state);
  int r = weft__os_wait_fd(c->fd, true, false, deadline);
  if (cancellable) weft__nocancel_begin();
  return r;
}

static int recv_error(weft_conn *c, int err, const void *buf, size_t size) {
  if (!stage_body(c, buf, size)) {
    /* The bytes read cannot be kept, so the rest of this message would be
     * read as a header: stop reading for good instead (recv gives EEOF). */
    reset_message(c);
    weft__os_shutdown(c->fd, SHUT_RD);
    return weft__error(err, "weft_conn_recv: %s; a message was lost and the end stops reading",
                       weft_strerror(err));
  }
  return weft__error(err, "weft_conn_recv: %s", weft_strerror(err));
}

static int recv_message(weft_conn *c, void *buf, size_t cap, size_t *len, double timeout,
                        weft__deadline deadline, int cancel_state) {
  while (c->head_got < HEAD) {
    ssize_t n = weft__os_recv(c->fd, c->head + c->head_got, HEAD - c->head_got, false, true);
    if (n > 0) {
      c->head_got += (size_t)n;
      continue;
    }
    /* ECONNRESET: the peer closed with data of ours unread; it is said once,
     * and only after every message already here was read. */
    if (n == 0 || n == -ECONNRESET) return at_eof(c);
    if (n != -EAGAIN) return recv_error(c, (int)n, buf, 0);
    int r = wait_readable(c, deadline, cancel_state, true);
    if (r < 0) return recv_error(c, r, buf, 0);
    if (r == 0) {
      if (c->head_got == 0)
        return weft__error(WEFT_ETIMEDOUT, "weft_conn_recv: no message within %g s", timeout);
      return weft__error(WEFT_ETIMEDOUT, "weft_conn_recv: a message is still arriving after %g s",
                         timeout);
    }
  }
  uint64_t size = message_size(c);
  if (size > WEFT_MSG_MAX) /* only if someone wrote to the fd directly */
    return weft__error(WEFT_EINVAL, "weft_conn_recv: corrupt stream (a header says %llu bytes)",
                       (unsigned long long)size);
  if (size > cap) {
    *len = (size_t)size;
    return weft__error(WEFT_EMSGSIZE, "weft_conn_recv: the message is %llu bytes, the buffer %zu",
                       (unsigned long long)size, cap);
  }
  while (c->body_got < size) {
    char *dst = c->stage != NULL ? c->stage : buf;
    ssize_t n = weft__os_recv(c->fd, dst + c->body_got, size - c->body_got, false, true);
    if (n > 0) {
      c->body_got += (size_t)n;
      continue;
    }
    if (n == 0 || n == -ECONNRESET) return at_eof(c);
    if (n != -EAGAIN) return recv_error(c, (int)n, buf, size);
    /* Bytes that are only in the caller's buffer would be lost to a
     * cancellation: wait cancellably only when there are none. */
    int r = wait_readable(c, deadline, cancel_state, c->stage != NULL || c->body_got == 0);
    if (r < 0) return recv_error(c, r, buf, size);
    if (r == 0) {
      if (!stage_body(c, buf, size)) {
        /* Without memory to keep the part read, finishing the message late
         * beats returning with it lost. */
        deadline = WEFT__NEVER;
        continue;
      }
      return weft__error(WEFT_ETIMEDOUT,
                         "weft_conn_recv: a message is still arriving (%zu of %llu bytes after "
                         "%g s)",
                         c->body_got, (unsigned long long)size, timeout);
    }
  }
  if (c->stage != NULL) memcpy(buf, c->stage, size);
  reset_message(c);
  *len = (size_t)size;
  return 0;
}

int weft_conn_recv(weft_conn *conn, void *buf, size_t cap, size_t *len, double timeout) {
  int cerr = conn_of(&conn, "weft_conn_recv");
  if (cerr != 0) return cerr;
  if (len == NULL) return weft__error(WEFT_EINVAL, "weft_conn_recv: len is NULL");
  *len = 0;
  if (buf == NULL && cap > 0)
    return weft__error(WEFT_EINVAL, "weft_conn_recv: buf is NULL but cap is %zu", cap);
  weft__deadline deadline;
  if (weft__deadline_from(timeout, &deadline) != 0)
    return weft__error(WEFT_EINVAL, "weft_conn_recv: timeout is NaN");
  if (!conn->can_recv)
    return weft__error(WEFT_EPERM, "weft_conn_recv: this end of a one-way pipe only sends");
  int cancel_state = weft__nocancel_begin();
  int err = recv_message(conn, buf, cap, len, timeout, deadline, cancel_state);
  weft__nocancel_end(cancel_state);
  return err;
}

int weft_conn_poll(weft_conn *conn, double timeout) {
  int cerr = conn_of(&conn, "weft_conn_poll");
  if (cerr != 0) return cerr;
  weft__deadline deadline;
  if (weft__deadline_from(timeout, &deadline) != 0)
    return weft__error(WEFT_EINVAL, "weft_conn_poll: timeout is NaN");
  if (!conn->can_recv)
    return weft__error(WEFT_EPERM, "weft_conn_poll: this end of a one-way pipe only sends");
  /* Changes nothing, so it may be cancelled anywhere. */
  int r = weft__os_wait_fd(conn->fd, true, false, deadline);
  if (r < 0) return weft__error(r, "weft_conn_poll: %s", weft_strerror(r));
  return r;
}
