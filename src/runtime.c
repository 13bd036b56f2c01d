/* SPDX-License-Identifier: MIT */
/* Library start-up: registers the fork handlers that keep weft's internal
 * state consistent in a child, and the exit hook that applies Python's exit
 * rules when main returns or exit() is called. */
#include "runtime.h"

#include "deadlock.h"
#include "dump.h"
#include "handle.h"

#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "os/os.h"
#include "forkserver.h"
#include "lock.h"
#include "lockstat.h"
#include "spawn.h"
#include "tsan.h"

pid_t weft__pid;
_Thread_local pid_t weft__tls_tid __attribute__((tls_model("initial-exec")));
_Thread_local struct weft__lineage weft__tls_lineage __attribute__((tls_model("initial-exec")));
struct weft__lineage weft__proc_lineage;
_Thread_local uint32_t weft__tls_forks __attribute__((tls_model("initial-exec")));
_Thread_local struct weft__tls_hot weft__hot __attribute__((tls_model("initial-exec")));

WEFT__HOT static void set_owner_token(void) {
  weft__hot.owner = weft__tls_tid == 0 ? 0
                                       : (uint32_t)weft__tls_tid | weft__tls_forks << WEFT__OWNER_TID_BITS;
}

#ifdef WEFT__TSAN
_Bool weft__tsan_off;
static int threads_at_fork; /* counted by the forking process for its child */
static void tsan_before_fork(void) { threads_at_fork = weft__os_thread_count(); }
WEFT__HOT static void tsan_after_fork_child(void) {
  if (threads_at_fork != 1) weft__tsan_off = 1;
}
#else
static void tsan_before_fork(void) {}
static void tsan_after_fork_child(void) {}
#endif

pid_t weft__tid_slow(void) {
  weft__tls_tid = weft__os_gettid();
  set_owner_token();
  return weft__tls_tid;
}

int weft__nocancel_begin(void) {
  int old = PTHREAD_CANCEL_ENABLE;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
  return old;
}

void weft__nocancel_end(int old_state) { pthread_setcancelstate(old_state, NULL); }

/* Runs in the child after every fork (weft's or the program's own), in the
 * thread that forked -- now the child's only thread. */
WEFT__HOT static void after_fork_child(void) {
  struct weft__lineage *l = &weft__tls_lineage;
  int keep = l->n < WEFT__LINEAGE_MAX ? l->n : WEFT__LINEAGE_MAX - 1;
  for (int i = keep; i > 0; i--) {
    l->pid[i] = l->pid[i - 1];
    l->owner[i] = l->owner[i - 1];
  }
  l->pid[0] = weft__pid;
  l->owner[0] = weft__owner_token(); /* tid cached by before_fork */
  l->n = keep + 1;
  weft__proc_lineage = *l;
  tsan_after_fork_child();
  weft__ref_after_fork();
  weft__pid = getpid();
  weft__tls_tid = 0;
  weft__tls_forks = 0;
  set_owner_token();
  weft__process_after_fork_child();
  weft__thread_after_fork_child();
  weft__dd_after_fork_child();
  weft__ls_after_fork_child();
  weft__dump_after_fork_child();
  weft__pool_after_fork_child();
  weft__shared_after_fork_child();
  weft__forkserver_after_fork_child();
}

/* Python's order: join the non-daemon threads, then end the children; then
 * remove the shared memory names this process created, once no child of
 * its own can still want to attach to them. */
WEFT__HOT void weft__runtime_exit_rules(void) {
  weft__thread_exit_rules();
  weft__pool_exit_rules(); /* after the threads that may still use a pool */
  weft__process_exit_rules();
  weft__shm_exit_rules();
  weft__ls_exit(); /* last: the children have added their figures */
}

static void before_fork(void) {
  weft__pool_before_fork(); /* the highest layer's locks first */
  weft__tid(); /* the child learns which thread it was */
  weft__thread_before_fork();
  weft__process_before_fork();
  weft__dd_before_fork();
  weft__ls_before_fork();
  weft__shm_before_fork();
  weft__shared_before_fork();
  weft__forkserver_before_fork();
  weft__ref_before_fork(); /* the lowest: held for a few instructions, never around another */
  tsan_before_fork();
}

static void after_fork_parent(void) {
  /* From now on this thread's acquisitions are not the child's. */
  weft__tls_forks = (weft__tls_forks + 1) & WEFT__OWNER_FORKS_MASK;
  set_owner_token();
  weft__forkserver_after_fork_parent();
  weft__shared_after_fork_parent();
  weft__ref_after_fork();
  weft__shm_after_fork_parent();
  weft__ls_after_fork_parent();
  weft__dd_after_fork_parent();
  weft__process_after_fork_parent();
  weft__thread_after_fork_parent();
  weft__pool_after_fork_parent();
}

static void at_exit(void) {
  weft__nocancel_begin(); /* the process is ending: nothing to restore */
  weft__runtime_exit_rules();
}

/* A constructor, so the rules hold even for a program whose first weft call
 * comes from a thread; user handlers registered later run before ours, as
 * they run before multiprocessing's in Python. */
__attribute__((constructor)) static void weft__init(void) {
  weft__pid = getpid();
  /* Every fresh image draws its own (see lock.h); never 0, which means any. */
  weft__layout = (uint32_t)(((uint64_t)weft__os_now_ns() ^ (uint64_t)weft__pid << 20) *
                            0x9e3779b97f4a7c15ull >> 32) | 1u;
  weft__process_init();
  weft__thread_init();
  weft__dd_init();
  weft__ls_init();
  weft__dump_init();
  pthread_atfork(before_fork, after_fork_parent, after_fork_child);
  atexit(at_exit);
  weft__forkserver_main();  /* in the forkserver: serves, never returns */
  weft__dump_watch_init();
  weft__spawn_child_main(); /* in a spawned child: runs its target, never returns */
}
