/* SPDX-License-Identifier: MIT */
/* weft/pipe.h — Python's multiprocessing.Pipe: two connected ends that send
 * and receive whole byte messages, between threads or processes.
 *
 *     weft_conn *parent, *child;
 *     weft_pipe(&parent, &child);            // before starting the child
 *     // child:  weft_conn_close(parent); weft_conn_send(child, "hi", 2);
 *     // parent: weft_conn_close(child);  weft_conn_recv(parent, buf, sizeof buf, &len, 5.0);
 *
 * Each end is a heap object wrapping one socket of a connected AF_UNIX stream
 * pair; messages are framed with their length, so every recv returns exactly
 * one send's bytes. A process inherits both ends at fork and should close the
 * end it does not use: as with any pipe, the reader sees end of file only once
 * every copy of the writing end is closed.
 *
 * Messages may be empty (len 0, buf may then be NULL). A send blocks while the
 * other end's buffer is full (there is no send timeout, as in Python); a recv
 * that times out part-way through a message keeps what it read, and the next
 * recv goes on from there. One thread may send on an end while another
 * receives on it, but two threads must not both send (or both receive).
 */
#ifndef WEFT_PIPE_H
#define WEFT_PIPE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One end of a pipe.
 * The pointer is an opaque handle, never an address to read: once closed,
 * every call through it (a close again included) returns WEFT_ECLOSED,
 * and a pointer to another kind of weft object gives WEFT_EINVAL. */
typedef struct weft_conn weft_conn;

/* Options of weft_pipe. */
typedef struct weft_pipe_options {
  size_t size_;  /* set by the macro */
  bool one_way;  /* Python's Pipe(duplex=False): the first end only receives,
                    the second only sends (default: both ends do both) */
} weft_pipe_options;

/* Creates a connected pair of ends in *a and *b, e.g. weft_pipe(&a, &b) or
 * weft_pipe(&r, &w, .one_way = true). 0, or WEFT_EINVAL (NULL out pointer),
 * WEFT_EMFILE, WEFT_ENOMEM; *a and *b are NULL after a failure. */
#define weft_pipe(...) WEFT__PIPE(__VA_ARGS__, )
#define WEFT__PIPE(a, b, ...)                                                             \
  weft_pipe_opts((a), (b),                                                                \
                 &(const weft_pipe_options){.size_ = sizeof(weft_pipe_options), __VA_ARGS__})
WEFT_API int weft_pipe_opts(weft_conn **a, weft_conn **b, const weft_pipe_options *opts);

/* Sends one message of len bytes. 0, or WEFT_EPIPE if the other end is
 * closed, WEFT_EPERM on the receive-only end of a one-way pipe, WEFT_EINVAL
 * (NULL conn, NULL buf with len > 0, len above WEFT_MSG_MAX). */
WEFT_API int weft_conn_send(weft_conn *conn, const void *buf, size_t len);

/* The largest message a pipe carries, 2 GiB - 1 (Python 3.8 and later take
 * larger ones). */
#define WEFT_MSG_MAX ((size_t)0x7fffffff)

/* Receives one message into buf (cap bytes), waiting at most timeout seconds
 * (WEFT_FOREVER: for ever; 0 or less: only if one is there), and stores its
 * length in *len. 0, or WEFT_ETIMEDOUT, WEFT_EEOF once the other end is
 * closed and every message was read, WEFT_EMSGSIZE if the message is longer
 * than cap (*len says how long; the message stays, so call again with a
 * larger buffer), WEFT_EPERM on the send-only end, WEFT_EINVAL. */
WEFT_API int weft_conn_recv(weft_conn *conn, void *buf, size_t cap, size_t *len, double timeout);

/* Waits at most timeout seconds until there is something to read: returns 1
 * when a message, the start of one, or end of file is there (as in Python, a
 * message still arriving may keep the next recv waiting), 0 on timeout, or a
 * negative code (WEFT_EPERM on the send-only end, WEFT_EINVAL). */
WEFT_API int weft_conn_poll(weft_conn *conn, double timeout);

/* Returns the end's file descriptor, for the caller's own poll/epoll loop
 * (readable: a message or end of file is coming), or WEFT_EINVAL for NULL.
 * weft keeps owning it: do not read, write or close it yourself. */
WEFT_API int weft_conn_fileno(weft_conn *conn);

/* Closes this end in the calling process and frees it (the pointer is
 * invalid afterwards). NULL is ignored. */
WEFT_API int weft_conn_close(weft_conn *conn);

#ifdef __cplusplus
}
#endif

#endif
