/* SPDX-License-Identifier: MIT */
/* The spawn start method (spawn.h).
 *
 * The parent starts /proc/self/exe with posix_spawn, which does not copy
 * the parent's page tables (clone with CLONE_VM | CLONE_VFORK), so a start
 * costs the same from a parent of any size, and no lock another thread of
 * the parent holds can be inherited. The child's descriptor 3 is one end
 * of a socket pair, named by WEFT_SPAWN_FD; the parent sends one message
 * there: a fixed header, then the argument bytes. The child's copy of
 * weft reads it in the library's constructor, so the target runs after
 * weft's own start-up and before the program's constructors and main. */
#define _GNU_SOURCE
#include "spawn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "os/os.h"
#include "region.h"
#include "taskname.h"

#define ENV_NAME "WEFT_SPAWN_FD"
#define MAGIC 0x77656674u /* "weft" */

struct message {
  uint32_t magic;
  uint32_t size;            /* of this header: both sides are the same image */
  int32_t parent_pid;
  uint8_t daemon;
  uint64_t args_size;
  struct weft__task_name target;
  char name[WEFT_NAME_MAX + 1];
  char identity[48];
  char parent_name[WEFT_NAME_MAX + 1];
  char parent_identity[48];
};

int weft__spawn_check_target(const void *target, const char *call) {
  struct weft__task_name *n = malloc(sizeof *n);
  if (n == NULL) return weft__error(WEFT_ENOMEM, "%s: out of memory", call);
  int err = weft__task_name_of(target, n, call);
  free(n);
  return err;
}

int weft__spawn_send(int fd, const struct weft__spawn_req *req) {
  struct message *m = calloc(1, sizeof *m);
  if (m == NULL) return WEFT_ENOMEM;
  int err = weft__task_name_of(req->target, &m->target, "weft_process_start");
  if (err == 0) {
    m->magic = MAGIC;
    m->size = sizeof *m;
    m->parent_pid = req->parent_pid;
    m->daemon = req->daemon;
    m->args_size = req->args_size;
    snprintf(m->name, sizeof m->name, "%s", req->name);
    snprintf(m->identity, sizeof m->identity, "%s", req->identity);
    snprintf(m->parent_name, sizeof m->parent_name, "%s", req->parent_name);
    snprintf(m->parent_identity, sizeof m->parent_identity, "%s", req->parent_identity);
    /* A child that dies before reading all of it makes the send fail
     * (EPIPE, no signal); its exit code says the rest. */
    err = weft__os_send_all(fd, m, sizeof *m);
    if (err == 0 && req->args_size > 0) err = weft__os_send_all(fd, req->args, req->args_size);
    if (err == 0) err = weft__parcel_send(fd, req->parcel);
  }
  free(m);
  return err;
}

pid_t weft__spawn_start(const struct weft__spawn_req *req) {
  int fds[2];
  pid_t pid = weft__os_socketpair(fds);
  if (pid == 0) {
    pid = weft__os_spawn_self(fds[1], ENV_NAME "=3", req->mask);
    weft__os_close(fds[1]);
    /* The target was named at creation; a send that fails otherwise than
     * on a child that died (out of memory) leaves nothing behind. */
    int err = pid > 0 ? weft__spawn_send(fds[0], req) : 0;
    if (err != 0 && err != WEFT_EPIPE) {
      weft__os_kill_and_reap(pid);
      pid = err;
    }
    weft__os_close(fds[0]);
  }
  return pid;
}

static _Noreturn void fail(const char *what) {
  fprintf(stderr, "weft: spawned child %d: %s\n", (int)getpid(), what);
  _exit(255);
}

_Noreturn void weft__spawn_run(int fd, pid_t real_parent, int parent_pidfd) {
  struct message *m = malloc(sizeof *m);
  if (m == NULL) fail("out of memory");
  if (weft__os_read_all(fd, m, sizeof *m) != 0 || m->magic != MAGIC || m->size != sizeof *m)
    fail("the parent's start message did not arrive whole");
  void *args = NULL;
  if (m->args_size > 0) {
    args = malloc(m->args_size);
    if (args == NULL) fail("out of memory for the arguments");
    if (weft__os_read_all(fd, args, m->args_size) != 0) fail("the arguments did not arrive whole");
  }
  char why[256];
  if (weft__parcel_receive(fd, why, sizeof why) != 0) fail(why);
  weft__os_close(fd);
  void *target = NULL;
  if (weft__task_resolve(&m->target, &target) != 0) fail(weft_last_error());
  struct weft__spawned s = {.target = (int (*)(void *))target,
                            .arg = args,
                            .daemon = m->daemon,
                            .name = m->name,
                            .identity = m->identity,
                            .parent_pid = m->parent_pid,
                            .parent_name = m->parent_name,
                            .parent_identity = m->parent_identity,
                            .real_parent = real_parent < 0 ? m->parent_pid : real_parent,
                            .parent_pidfd = parent_pidfd};
  weft__process_run_spawned(&s);
}

void weft__spawn_child_main(void) {
  const char *fd_text = getenv(ENV_NAME);
  if (fd_text == NULL) return;
  int fd = atoi(fd_text);
  unsetenv(ENV_NAME); /* not for this child's own children */
  weft__spawn_run(fd, -1, -1);
}
