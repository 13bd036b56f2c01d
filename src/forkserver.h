/* SPDX-License-Identifier: MIT */
/* The forkserver start method: children forked from a small server process
 * that is a fresh run of the program's image, not from the caller. */
#ifndef WEFT_FORKSERVER_H
#define WEFT_FORKSERVER_H

#include <sys/types.h>

#include "spawn.h"

/* Starts a child through the server (started first if need be) and hands
 * it the request. Stores its pid, a pidfd on it and the status fd that
 * weft__forkserver_reap reads. 0, or a negative code with a sentence
 * (nothing is left behind). */
int weft__forkserver_start(const struct weft__spawn_req *req, pid_t *pid, int *pidfd,
                           int *status_fd);

/* Reads, without blocking, the exit code the server reported on a child's
 * status fd: 1 with *exitcode, 0 if none yet, WEFT_ECHILD if the server
 * ended without reporting it. The fd turns readable when there is news. */
int weft__forkserver_reap(int status_fd, int *exitcode);

/* From the library's start-up: in the server (the environment says so),
 * serves and never returns; elsewhere returns at once. */
void weft__forkserver_main(void);

#endif
