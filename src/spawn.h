/* SPDX-License-Identifier: MIT */
/* The spawn start method: a child that is a fresh run of the program's own
 * image and runs one target, named across the exec (taskname.h). The
 * process code (process.c) decides what to start; this file starts it and,
 * in the child, reads what to run. */
#ifndef WEFT_SPAWN_H
#define WEFT_SPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "weft/common.h"

/* What a spawned child must know: its target and arguments, and who it is. */
struct weft__spawn_req {
  const void *target;
  const void *args;
  size_t args_size;
  bool daemon;
  const char *name, *identity;
  pid_t parent_pid;
  const char *parent_name, *parent_identity;
  const void *mask; /* the child's signal mask (a sigset_t); NULL: the calling thread's */
  const struct weft__parcel *parcel; /* the shared memory and objects it is given */
};

/* Checks that another run of the program can find target. 0, or
 * WEFT_EINVAL with a sentence naming `call`. */
int weft__spawn_check_target(const void *target, const char *call);

/* Starts the child and hands it the request. Its pid, or a negated errno
 * (nothing is left behind). */
pid_t weft__spawn_start(const struct weft__spawn_req *req);

/* Sends the request -- a fixed header, the argument bytes, the parcel -- on fd,
 * from which a child's weft__spawn_run reads it. 0 or a negative code. */
int weft__spawn_send(int fd, const struct weft__spawn_req *req);

/* In a new child: reads the request from fd, closes it, and runs the
 * target as a weft process; never returns. real_parent is the process
 * whose death kills a daemon child (its parent, or the forkserver);
 * parent_pidfd is -1, or a pidfd on the process that started the child
 * when that is not real_parent. */
_Noreturn void weft__spawn_run(int fd, pid_t real_parent, int parent_pidfd);

/* From the library's start-up: in a spawned child (the environment says
 * so), runs the target and never returns; elsewhere returns at once. */
void weft__spawn_child_main(void);

/* What process.c needs to make the calling process the child described. */
struct weft__spawned {
  int (*target)(void *);
  void *arg;
  bool daemon;
  const char *name, *identity;
  pid_t parent_pid;
  const char *parent_name, *parent_identity;
  pid_t real_parent;
  int parent_pidfd;
};

/* process.c: becomes the child described and runs its target; never
 * returns. */
_Noreturn void weft__process_run_spawned(const struct weft__spawned *s);

#endif
