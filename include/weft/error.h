/* SPDX-License-Identifier: MIT */
/* weft/error.h — error codes, their names and messages.
 *
 * Every code is negative. Where an errno value fits, the code is that value
 * negated (WEFT_EINVAL == -EINVAL), as in libuv; weft's own codes live below
 * -4000 so they never collide with errno. One table (WEFT_ERRNO_MAP) gives
 * each code its name and message, so the three never drift apart.
 */
#ifndef WEFT_ERROR_H
#define WEFT_ERROR_H

#include <errno.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* XX(name, value, message) for every error code weft returns. */
#define WEFT_ERRNO_MAP(XX)                                                         \
  XX(EINVAL, -EINVAL, "invalid argument")                                          \
  XX(ENOMEM, -ENOMEM, "not enough memory")                                         \
  XX(EAGAIN, -EAGAIN, "resource temporarily unavailable")                          \
  XX(EPERM, -EPERM, "operation not permitted")                                     \
  XX(EBUSY, -EBUSY, "resource busy")                                               \
  XX(ETIMEDOUT, -ETIMEDOUT, "timed out")                                           \
  XX(EDEADLK, -EDEADLK, "the call would deadlock")                                 \
  XX(ESRCH, -ESRCH, "no such process")                                             \
  XX(ECHILD, -ECHILD, "the exit status of the child was lost")                     \
  XX(EMFILE, -EMFILE, "too many open files")                                       \
  XX(ENOSYS, -ENOSYS, "not supported by this kernel")                              \
  XX(EALREADY, -EALREADY, "already started")                                       \
  XX(EOWNERDEAD, -EOWNERDEAD, "acquired, but the previous owner died holding it")   \
  XX(EOVERFLOW, -EOVERFLOW, "value too large")                                      \
  XX(EEXIST, -EEXIST, "already exists")                                            \
  XX(ENOENT, -ENOENT, "no such name")                                              \
  XX(EMSGSIZE, -EMSGSIZE, "message too long")                                      \
  XX(EPIPE, -EPIPE, "the other end is closed")                                     \
  XX(ECANCELED, -ECANCELED, "cancelled")                                           \
  XX(ENOTSTARTED, -4001, "not started")                                            \
  XX(ERUNNING, -4002, "still running")                                             \
  XX(ECLOSED, -4003, "closed (or an invalid handle)")                               \
  XX(EBROKEN, -4004, "broken (a barrier, or a pool whose initializer failed)")                                       \
  XX(EFULL, -4005, "the queue is full")                                            \
  XX(EEMPTY, -4006, "the queue is empty")                                          \
  XX(EEOF, -4007, "end of file: the other end was closed")                         \
  XX(ETASKFAILED, -4008, "the task failed")                                       \
  XX(EWORKERDIED, -4009, "the worker process died while running the task")         \
  XX(ETASKTIMEOUT, -4010, "the task ran past its time limit and its worker was killed")

/* The error codes, e.g. WEFT_EINVAL. */
typedef enum weft_errno {
#define WEFT__ERR_ENUM(name, value, msg) WEFT_##name = (value),
  WEFT_ERRNO_MAP(WEFT__ERR_ENUM)
#undef WEFT__ERR_ENUM
} weft_errno;

/* Returns the message of an error code ("timed out"; "success" for 0); never
 * NULL. An unknown negative code is described through strerror(-code). */
WEFT_API const char *weft_strerror(int code);

/* Returns the name of an error code ("WEFT_ETIMEDOUT"); never NULL. Another
 * errno value negated is named after its errno name ("WEFT_EIO"), any other
 * code by its number ("code 0", "code 7"), in a per-thread buffer valid until
 * the thread's next such call. */
WEFT_API const char *weft_err_name(int code);

/* Returns the full sentence describing the last error raised in the calling
 * thread ("Process-3 was already started"), or "" if none has been. Like errno
 * it is only meaningful right after a call has failed; it stays valid until
 * the thread's next failing weft call. */
WEFT_API const char *weft_last_error(void);

/* Returns the code of the last error raised in the calling thread, 0 if none.
 * Constructors that return a handle with id 0 on failure say why here. */
WEFT_API int weft_last_error_code(void);

#ifdef __cplusplus
}
#endif

#endif
