/* SPDX-License-Identifier: MIT */
/* Processes: Python's multiprocessing.Process over fork and pidfds.
 *
 * Every process object lives in one handle table guarded by one mutex,
 * `registry`. The mutex is only ever held for short, non-blocking work, and
 * the fork handlers take it, so a child never inherits it locked. Blocking
 * waits (join) drop it and hold a reference on the object instead.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "handle.h"
#include "internal.h"
#include "os/os.h"
#include "region.h"
#include "runtime.h"
#include "dump.h"
#include "forkserver.h"
#include "spawn.h"
#include "weft/process.h"

enum kind { KIND_MAIN, KIND_CHILD };
enum method { METHOD_FORK, METHOD_SPAWN, METHOD_FORKSERVER };
enum state { ST_INITIAL, ST_STARTING, ST_STARTED, ST_STOPPED };

struct proc {
  uint64_t id;
  int refs; /* one for the table, one per call in flight */
  enum kind kind;
  enum state state; /* as the creating process sees it */
  bool daemon;
  weft_process_target target;
  void *arg;
  void *args;       /* the bytes of .args, owned; the target's argument when set */
  size_t args_size;
  const void **objects; /* .objects, owned, NULL-terminated; NULL: none */
  enum method method;
  pid_t pid;
  pid_t parent_pid; /* the process that created the object; 0 for MainProcess */
  int pidfd;        /* -1 when none or given up (pidfs_id); kept while threads poll it */
  /* For a running child whose pidfd was given up (see MAX_IDLE_PIDFDS):
   * the number that names the process (weft__os_pidfd_id), checked when a
   * pidfd is opened on its pid again. 0 when it holds its pidfd. */
  uint64_t pidfs_id;
  int status_fd;    /* forkserver children: where the server reports the exit; else -1 */
  bool server_gone; /* the forkserver ended before reporting it: the status is lost */
  int pollers;      /* threads in ppoll on pidfd */
  bool reaping;     /* a thread is blocked in waitid on pidfd */
  bool in_running;  /* on the running list */
  bool holding;     /* on the holders list */
  bool unwaitable;  /* the exit rules failed to wait for it: they leave it */
  /* The process generation (proc_gen) that refs, pidfd, pollers, reaping
   * and the lists' links belong to: an object with an older one was
   * inherited across fork, and those fields are the parent's. */
  uint64_t gen;
  struct proc *run_prev, *run_next; /* the running list */
  struct proc *hold_prev, *hold_next; /* the holders list */
  int exitcode;
  int reap_error;   /* 0, or why the status was lost (WEFT_ECHILD) */
  char identity[48]; /* Python's _identity joined by ':' ("1:2") */
  struct proc *next_spare;
  char name[WEFT_NAME_MAX + 1];
};

static pthread_mutex_t registry = PTHREAD_MUTEX_INITIALIZER;
/* Broadcast whenever a blocked reaper has recorded a child's exit. */
static pthread_cond_t reaped = PTHREAD_COND_INITIALIZER;
static int reaped_waiters; /* threads inside pthread_cond_wait on it */
/* Counts that let the fork child handler and the exit rules skip their
 * work in the common case: in a child, every page of code or data touched
 * is a page fault, and they are most of what a start costs beyond fork. */
static int open_pidfds;      /* objects whose pidfd is open */
static int running_children; /* started children not yet reaped: the running list's length */
/* Bumped in every forked child. The child does not rewrite the objects it
 * inherits -- each write would copy a page, and a start would cost in
 * proportion to the siblings alive -- but refreshes one when it uses it. */
static uint64_t proc_gen;
/* The started children not known to have stopped, so that the calls and
 * exit rules that look at them walk those, not every handle ever made. */
static struct proc *running_head;
/* The fds of the open pidfds, one bit each, so that a forked child closes
 * them with a few close_range calls instead of one close per sibling. Valid
 * in the generation pidfd_bits_gen; a pidfd that found no room (out of
 * memory) is counted in untracked_pidfds and closed by a walk instead. */
static uint64_t first_pidfd_bits[8]; /* fds below 512, with the other small variables */
static uint64_t *pidfd_bits = first_pidfd_bits;
static size_t pidfd_words = WEFT__ARRAY_SIZE(first_pidfd_bits);
static uint64_t pidfd_bits_gen;
static int untracked_pidfds;
/* Every descriptor open in a process is copied by each fork it makes (a
 * reference taken, and dropped again when the child closes it or exits),
 * so a program with hundreds of children alive would pay for all their
 * pidfds in every start. A child's pidfd is kept only while it is among the
 * MAX_IDLE_PIDFDS children started or used last, or while a thread waits
 * on it; the others give theirs up and open a new one when they are next
 * asked about, checking by its pidfs number that the pid still names the
 * same process (weft__os_pidfd_id): a child someone else reaped may have
 * left its pid to another. Where pidfds carry no such number, every child
 * keeps its pidfd. Forkserver children keep theirs: their status socket is
 * one descriptor anyway. */
#define MAX_IDLE_PIDFDS 8
/* The children holding a pidfd they could give up, most recent first. */
static struct proc *holders_head, *holders_tail;
static int n_holders;
static bool pidfds_kept; /* no pidfs numbers here: never give one up */
/* Closed objects kept for reuse: a start-join-close cycle then writes no
 * allocator page, which after a fork would be one more page to copy. */
#define MAX_SPARES 8
static struct proc *spares;
static int n_spares;
static weft__handle_table table;
static struct proc main_proc = {.kind = KIND_MAIN, .state = ST_STARTED, .pidfd = -1,
                                .name = "MainProcess"};
static struct proc *current = &main_proc; /* this process's own object */
static struct proc *parent;               /* its parent's object; NULL in the main process */
/* In a child of the forkserver, whose parent in the kernel's sense is the
 * server: a pidfd on the process that started it. -1 elsewhere. */
static int parent_pidfd = -1;
static unsigned child_counter;            /* numbers the default names of children */
static double daemon_grace = 1.0;
static enum method default_method = METHOD_FORK;
/* The main thread's name, which a child forked by the forker thread would
 * otherwise inherit as "weft-forker". */
static char main_comm[16];

static void read_method_from_environment(void);

void weft__process_init(void) {
  main_proc.pid = weft__pid;
  weft__os_get_thread_name(main_comm, sizeof main_comm);
  main_proc.refs = 1;
  main_proc.id = weft__handle_add(&table, &main_proc);
  read_method_from_environment();
}

/* ---- references and lookup (registry held) ---- */

/* Makes an object inherited across fork this process's: its pidfd was the
 * parent's (closed by the fork handler), and the calls in flight on it
 * belonged to threads that do not exist here. */
static void refresh_locked(struct proc *p) {
  if (p->gen == proc_gen) return;
  p->gen = proc_gen;
  p->pidfd = -1;
  p->status_fd = -1;
  p->server_gone = false;
  p->pollers = 0;
  p->reaping = false;
  p->in_running = false;
  p->run_prev = p->run_next = NULL;
  p->pidfs_id = 0;
  p->holding = false;
  p->unwaitable = false;
  p->hold_prev = p->hold_next = NULL;
  p->refs = 1; /* the table's: objects reached through a handle are in it */
}

static bool pidfd_tracked(int fd) {
  size_t w = (size_t)fd / 64;
  return pidfd_bits_gen == proc_gen && w < pidfd_words &&
         (pidfd_bits[w] >> ((unsigned)fd % 64) & 1) != 0;
}

/* Records a pidfd just opened: open_pidfds and the bit of its fd. */
static void track_pidfd_locked(int fd) {
  open_pidfds++;
  if (pidfd_bits_gen != proc_gen) { /* the parent's bits: none of them is open here */
    if (pidfd_words > 0) memset(pidfd_bits, 0, pidfd_words * sizeof *pidfd_bits);
    pidfd_bits_gen = proc_gen;
    untracked_pidfds = 0;
  }
  size_t w = (size_t)fd / 64;
  if (w >= pidfd_words) {
    size_t n = pidfd_words * 2 > w + 1 ? pidfd_words * 2 : w + 1;
    uint64_t *bits = pidfd_bits == first_pidfd_bits ? malloc(n * sizeof *bits)
                                                     : realloc(pidfd_bits, n * sizeof *bits);
    if (bits == NULL) {
      untracked_pidfds++;
      return;
    }
    if (pidfd_bits == first_pidfd_bits) memcpy(bits, first_pidfd_bits, sizeof first_pidfd_bits);
    memset(bits + pidfd_words, 0, (n - pidfd_words) * sizeof *bits);
    pidfd_bits = bits;
    pidfd_words = n;
  }
  pidfd_bits[w] |= (uint64_t)1 << ((unsigned)fd % 64);
}

static void close_tracked_locked(int *fd) {
  if (pidfd_tracked(*fd))
    pidfd_bits[(size_t)*fd / 64] &= ~((uint64_t)1 << ((unsigned)*fd % 64));
  else
    untracked_pidfds--;
  weft__os_close(*fd);
  *fd = -1;
  open_pidfds--;
}

static void holders_remove_locked(struct proc *p) {
  if (!p->holding) return;
  if (p->hold_prev != NULL)
    p->hold_prev->hold_next = p->hold_next;
  else
    holders_head = p->hold_next;
  if (p->hold_next != NULL)
    p->hold_next->hold_prev = p->hold_prev;
  else
    holders_tail = p->hold_prev;
  p->hold_prev = p->hold_next = NULL;
  p->holding = false;
  n_holders--;
}

/* Closes the fds that watch a child: its pidfd and, for a forkserver
 * child, its status socket. */
static void close_pidfd_locked(struct proc *p) {
  holders_remove_locked(p);
  close_tracked_locked(&p->pidfd);
  if (p->status_fd >= 0) close_tracked_locked(&p->status_fd);
}

/* Gives up p's pidfd, keeping the number that names its process. */
static bool give_up_pidfd_locked(struct proc *p) {
  uint64_t id = 0;
  int r = weft__os_pidfd_id(p->pidfd, &id);
  if (r == -EOPNOTSUPP) pidfds_kept = true;
  if (r != 0) return false;
  holders_remove_locked(p);
  close_tracked_locked(&p->pidfd);
  p->pidfs_id = id;
  return true;
}

/* Puts p, which holds a pidfd it could give up, first among the holders,
 * and makes the least recent ones beyond MAX_IDLE_PIDFDS give theirs up,
 * except those a thread waits on. */
static void holders_add_locked(struct proc *p) {
  if (pidfds_kept) return;
  p->holding = true;
  p->hold_prev = NULL;
  p->hold_next = holders_head;
  if (holders_head != NULL)
    holders_head->hold_prev = p;
  else
    holders_tail = p;
  holders_head = p;
  n_holders++;
  for (struct proc *q = holders_tail, *prev; q != NULL && n_holders > MAX_IDLE_PIDFDS; q = prev) {
    prev = q->hold_prev;
    if (q != p && q->pollers == 0 && !q->reaping && !give_up_pidfd_locked(q) && pidfds_kept)
      return;
  }
}

/* Makes the least recent holder other than p that no thread waits on give
 * up its pidfd. Returns whether one did. */
static bool give_up_idle_locked(struct proc *p) {
  for (struct proc *q = holders_tail; q != NULL; q = q->hold_prev)
    if (q != p && q->pollers == 0 && !q->reaping) return give_up_pidfd_locked(q);
  return false;
}

static void running_add_locked(struct proc *p) {
  p->in_running = true;
  p->run_prev = NULL;
  p->run_next = running_head;
  if (running_head != NULL) running_head->run_prev = p;
  running_head = p;
  running_children++;
}

static void running_remove_locked(struct proc *p) {
  if (!p->in_running) return;
  if (p->run_prev != NULL)
    p->run_prev->run_next = p->run_next;
  else
    running_head = p->run_next;
  if (p->run_next != NULL) p->run_next->run_prev = p->run_prev;
  p->run_prev = p->run_next = NULL;
  p->in_running = false;
  running_children--;
}

static struct proc *get_locked(weft_process h, const char *fn) {
  struct proc *p = weft__handle_get(&table, h.id);
  if (p == NULL) {
    weft__error(WEFT_ECLOSED, "%s: the process handle is closed or invalid", fn);
    return NULL;
  }
  refresh_locked(p);
  p->refs++;
  return p;
}

static void put_locked(struct proc *p) {
  if (--p->refs == 0 && p != &main_proc) {
    free(p->args);
    p->args = NULL;
    free(p->objects);
    p->objects = NULL;
    if (p->pidfd >= 0) close_pidfd_locked(p);
    running_remove_locked(p); /* never on it when closed: kept in step all the same */
    if (n_spares < MAX_SPARES) {
      p->next_spare = spares;
      spares = p;
      n_spares++;
    } else {
      free(p);
    }
  }
}

/* Read-only, for walks: an inherited object (older generation) is never
 * a child of this process. */
static bool is_child(const struct proc *p) {
  return p->kind == KIND_CHILD && p->gen == proc_gen && p->parent_pid == weft__pid &&
         p != current;
}

/* The common refusals of calls that act on a child: own handle, not started,
 * not ours. Returns 0 if p is a started child of the caller. */
static int check_child(const struct proc *p, const char *fn) {
  if (p == current) return weft__error(WEFT_EDEADLK, "%s: %s is the calling process", fn, p->name);
  if (p->kind != KIND_CHILD || p->parent_pid != weft__pid)
    return weft__error(WEFT_EPERM, "%s: %s is not a child of this process (pid %d)", fn, p->name,
                       (int)weft__pid);
  if (p->state == ST_INITIAL || p->state == ST_STARTING)
    return weft__error(WEFT_ENOTSTARTED, "%s: %s has not been started", fn, p->name);
  return 0;
}

/* ---- reaping ---- */

static void drop_pidfd_locked(struct proc *p) {
  if (p->pollers == 0 && !p->reaping && p->pidfd >= 0) close_pidfd_locked(p);
}

/* Records the outcome of a waitid: 1 with the exit code, or an error. */
static void record_exit_locked(struct proc *p, int r, int code) {
  if (r == 1)
    p->exitcode = code;
  else
    p->reap_error = WEFT_ECHILD; /* someone else reaped it, e.g. waitpid(-1) */
  p->state = ST_STOPPED;
  running_remove_locked(p);
}

/* The fd that turns readable when p may have stopped: its pidfd, or for a
 * forkserver child the socket on which the server reports its exit. */
static int wait_fd(const struct proc *p) {
  return p->status_fd >= 0 && !p->server_gone ? p->status_fd : p->pidfd;
}

/* Reaps p without blocking: 1 with its exit code, 0 if it runs, or an
 * error. A forkserver child is reaped by the server, which reports the
 * code; if the server ended first, the code is lost (WEFT_ECHILD, as for a
 * child someone else reaped) and its pidfd says when the child ends. */
static int reap_nohang_locked(struct proc *p, int *code) {
  if (p->method != METHOD_FORKSERVER) return weft__os_pidfd_reap(p->pidfd, true, code);
  if (!p->server_gone) {
    int r = weft__forkserver_reap(p->status_fd, code);
    if (r != WEFT_ECHILD) return r;
    p->server_gone = true;
  }
  return weft__os_wait_readable(p->pidfd, 0) == 1 ? WEFT_ECHILD : 0;
}

/* Makes sure p, a started child, has its pidfd open, opening one on its
 * pid again if it gave its up. Returns 0, 1 if p turned out to have been
 * reaped by someone else (recorded), or a negative code. */
static int hold_pidfd_locked(struct proc *p) {
  if (p->pidfd >= 0) {
    if (p->holding && p != holders_head && !pidfds_kept) { /* asked about: the most recent now */
      holders_remove_locked(p);
      holders_add_locked(p);
    }
    return 0;
  }
  if (p->pidfs_id == 0) return WEFT_ESRCH; /* inherited across fork: never ours here */
  int fd = weft__os_pidfd_open(p->pid);
  /* Out of descriptors: an idle pidfd of another child makes room, as the
   * pidfd p gave up once held it. */
  while ((fd == WEFT_EMFILE || fd == -ENFILE) && give_up_idle_locked(p))
    fd = weft__os_pidfd_open(p->pid);
  uint64_t id = 0;
  int r = fd < 0 ? fd : weft__os_pidfd_id(fd, &id);
  if (fd >= 0 && (r != 0 || id != p->pidfs_id)) weft__os_close(fd);
  /* No process has the pid (ESRCH), a thread has it (EINVAL, or ENOENT on
   * newer kernels), or another process does: the child was reaped by
   * someone else, who let its pid be given again. */
  if (fd == WEFT_ESRCH || fd == WEFT_EINVAL || fd == -ENOENT || (r == 0 && id != p->pidfs_id)) {
    record_exit_locked(p, WEFT_ECHILD, 0);
    return 1;
  }
  if (r < 0) return r == -ENFILE ? WEFT_EMFILE : r;
  p->pidfd = fd;
  p->pidfs_id = 0;
  track_pidfd_locked(fd);
  holders_add_locked(p);
  return 0;
}

/* Reaps p if it exited, without blocking. Returns 1 if it has stopped, 0
 * if it runs (or may: another thread is blocked reaping it, and only that
 * thread may call waitid, or it would find the status gone), or a negative
 * code if its pidfd could not be opened again. */
static int poll_checked_locked(struct proc *p) {
  if (p->state == ST_STOPPED) return 1;
  if (p->state != ST_STARTED || p->reaping) return 0;
  int r = hold_pidfd_locked(p);
  if (r != 0) return r;
  int code = 0;
  r = reap_nohang_locked(p, &code);
  if (r == 0) return 0;
  record_exit_locked(p, r, code);
  drop_pidfd_locked(p);
  return 1;
}

/* Whether p has stopped, reaping it if it exited; "no" when it cannot tell. */
static bool poll_locked(struct proc *p) { return poll_checked_locked(p) == 1; }

/* Sends sig to p, a started child, unless it has stopped. */
static int signal_locked(struct proc *p, int sig) {
  int r = poll_checked_locked(p);
  if (r != 0) return r < 0 ? r : 0;
  r = weft__os_pidfd_signal(p->pidfd, sig);
  return r == WEFT_ESRCH ? 0 : r; /* it exited after the poll: nothing to do */
}

/* Waits for a started child until the deadline. Returns 0 once it stopped,
 * WEFT_ETIMEDOUT, or another negative code. Registry held on entry and exit;
 * the caller holds a reference. */
static int wait_child_locked(struct proc *p, weft__deadline deadline) {
  while (p->state != ST_STOPPED) {
    int held = p->reaping ? 0 : hold_pidfd_locked(p);
    if (held < 0) return held;
    if (held > 0) break;
    int fd = wait_fd(p);
    if (deadline == WEFT__NEVER && !p->reaping && p->method != METHOD_FORKSERVER) {
      /* Waiting forever: block in waitid itself, one system call instead
       * of ppoll and waitid. Others wait for this thread's broadcast. */
      p->reaping = true;
      pthread_mutex_unlock(&registry);
      int code = 0;
      int r = weft__os_pidfd_reap(fd, false, &code);
      pthread_mutex_lock(&registry);
      p->reaping = false;
      record_exit_locked(p, r, code);
      pthread_cond_broadcast(&reaped);
      break;
    }
    if (p->reaping) {
      struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
      reaped_waiters++;
      int r = deadline == WEFT__NEVER
                  ? pthread_cond_wait(&reaped, &registry)
                  : pthread_cond_clockwait(&reaped, &registry, CLOCK_MONOTONIC, &ts);
      reaped_waiters--;
      if (r == ETIMEDOUT && p->state != ST_STOPPED) return WEFT_ETIMEDOUT;
      continue;
    }
    if (poll_locked(p)) break;
    if (weft__deadline_passed(deadline)) return WEFT_ETIMEDOUT;
    p->pollers++;
    pthread_mutex_unlock(&registry);
    int r = weft__os_wait_readable(fd, deadline);
    pthread_mutex_lock(&registry);
    p->pollers--;
    if (r < 0) return r;
    if (r == 0 && !poll_locked(p)) return WEFT_ETIMEDOUT;
  }
  drop_pidfd_locked(p);
  return 0;
}

/* ---- the parent's object, as seen from a child ---- */

static bool parent_alive(const struct proc *p) {
  if (parent_pidfd >= 0) return weft__os_wait_readable(parent_pidfd, 0) == 0;
  return weft__os_getppid() == p->pid;
}

/* A child cannot reap its parent; it waits on a pidfd opened on the parent,
 * checking that its pid is still our parent's, so a reused pid is never
 * mistaken for it. */
static int wait_parent(pid_t pid, weft__deadline deadline) {
  if (parent_pidfd >= 0) {
    int r = weft__os_wait_readable(parent_pidfd, deadline);
    if (r < 0) return r;
    return r == 1 ? 0 : WEFT_ETIMEDOUT;
  }
  int fd = weft__os_pidfd_open(pid);
  if (fd < 0 && fd != WEFT_ESRCH) return fd; /* EMFILE, ENOMEM: we cannot tell */
  if (fd < 0 || weft__os_getppid() != pid) {
    if (fd >= 0) weft__os_close(fd);
    return 0;
  }
  int r = weft__os_wait_readable(fd, deadline);
  weft__os_close(fd);
  if (r < 0) return r;
  return r == 1 ? 0 : WEFT_ETIMEDOUT;
}

/* ---- creation ---- */

/* ---- start methods ---- */

static const char *const method_names[] = {
    [METHOD_FORK] = "fork", [METHOD_SPAWN] = "spawn", [METHOD_FORKSERVER] = "forkserver"};

static int parse_method(const char *name, enum method *out, const char *call) {
  if (name == NULL) return weft__error(WEFT_EINVAL, "%s: the start method is NULL", call);
  for (size_t i = 0; i < WEFT__ARRAY_SIZE(method_names); i++) {
    if (strcmp(name, method_names[i]) == 0) {
      *out = (enum method)i;
      return 0;
    }
  }
  return weft__error(WEFT_EINVAL,
                     "%s: unknown start method \"%s\" (\"fork\", \"spawn\" or \"forkserver\")",
                     call, name);
}

const char *weft__start_method_name(const char *method, const char *call) {
  enum method m = __atomic_load_n(&default_method, __ATOMIC_RELAXED);
  if (method != NULL && parse_method(method, &m, call) != 0) return NULL;
  return method_names[m];
}

int weft_set_start_method(const char *method) {
  enum method m;
  int err = parse_method(method, &m, "weft_set_start_method");
  if (err != 0) return err;
  __atomic_store_n(&default_method, m, __ATOMIC_RELAXED);
  return 0;
}

const char *weft_get_start_method(void) {
  return method_names[__atomic_load_n(&default_method, __ATOMIC_RELAXED)];
}

/* The program's default from WEFT_START_METHOD; a wrong value is said once
 * on stderr and leaves fork. */
static void read_method_from_environment(void) {
  const char *env = getenv("WEFT_START_METHOD");
  if (env == NULL || *env == '\0') return;
  if (weft_set_start_method(env) != 0)
    fprintf(stderr, "weft: WEFT_START_METHOD: %s\n", weft_last_error());
}

weft_process weft_process_new_opts(weft_process_target target, const weft_process_options *o) {
  static const weft_process_options defaults = {.size_ = sizeof defaults};
  if (o == NULL) o = &defaults;
  weft_process none = {0};
  if (target == NULL) {
    weft__error(WEFT_EINVAL, "weft_process_new: target is NULL");
    return none;
  }
  if (o->name != NULL && strlen(o->name) > WEFT_NAME_MAX) {
    weft__error(WEFT_EINVAL, "weft_process_new: name is longer than %d bytes", WEFT_NAME_MAX);
    return none;
  }
  enum method method = default_method;
  if (o->start_method != NULL && parse_method(o->start_method, &method, "weft_process_new") != 0)
    return none;
  if (o->args_size > 0 && o->args == NULL) {
    weft__error(WEFT_EINVAL, "weft_process_new: .args is NULL but .args_size is %zu", o->args_size);
    return none;
  }
  if (o->args_size > 0 && o->arg != NULL) {
    weft__error(WEFT_EINVAL, "weft_process_new: give .arg or .args, not both");
    return none;
  }
  if (method != METHOD_FORK && o->arg != NULL) {
    weft__error(WEFT_EINVAL,
                "weft_process_new: a child started by %s cannot follow the parent's pointer .arg; "
                "pass the bytes with .args and .args_size",
                method_names[method]);
    return none;
  }
  if (method != METHOD_FORK &&
      weft__spawn_check_target((const void *)target, "weft_process_new") != 0)
    return none;
  if (weft__parcel_check(o->objects, "weft_process_new") != 0) return none;
  const void **objects = NULL;
  if (o->objects != NULL) {
    size_t n = 0;
    while (o->objects[n] != NULL) n++;
    if ((objects = malloc((n + 1) * sizeof *objects)) == NULL) {
      weft__error(WEFT_ENOMEM, "weft_process_new: out of memory for .objects");
      return none;
    }
    memcpy(objects, o->objects, (n + 1) * sizeof *objects);
  }
  void *args = NULL;
  if (o->args_size > 0) {
    if ((args = malloc(o->args_size)) == NULL) {
      free(objects);
      weft__error(WEFT_ENOMEM, "weft_process_new: out of memory for %zu bytes of .args", o->args_size);
      return none;
    }
    memcpy(args, o->args, o->args_size);
  }
  pthread_mutex_lock(&registry);
  struct proc *p = spares;
  if (p != NULL) {
    spares = p->next_spare;
    n_spares--;
    memset(p, 0, sizeof *p);
  } else if ((p = calloc(1, sizeof *p)) == NULL) {
    pthread_mutex_unlock(&registry);
    free(args);
    free(objects);
    weft__error(WEFT_ENOMEM, "weft_process_new: out of memory");
    return none;
  }
  p->kind = KIND_CHILD;
  p->state = ST_INITIAL;
  p->target = target;
  p->arg = args != NULL ? args : o->arg;
  p->args = args;
  p->args_size = o->args_size;
  p->objects = objects;
  p->method = method;
  p->daemon = o->daemon || current->daemon; /* Python copies the creator's config */
  p->pidfd = -1;
  p->status_fd = -1;
  p->refs = 1;
  p->gen = proc_gen;
  p->parent_pid = weft__pid;
  unsigned n = ++child_counter;
  if (current->identity[0] == '\0')
    snprintf(p->identity, sizeof p->identity, "%u", n);
  else
    snprintf(p->identity, sizeof p->identity, "%.36s:%u", current->identity, n);
  if (o->name != NULL)
    snprintf(p->name, sizeof p->name, "%s", o->name);
  else
    snprintf(p->name, sizeof p->name, "Process-%s", p->identity);
  p->id = weft__handle_add(&table, p);
  if (p->id == 0) {
    free(args);
    free(objects);
    free(p);
    pthread_mutex_unlock(&registry);
    weft__error(WEFT_ENOMEM, "weft_process_new: out of memory");
    return none;
  }
  pthread_mutex_unlock(&registry);
  return (weft_process){p->id};
}

/* ---- the child's side of start ---- */

WEFT__HOT static void child_on_exit(int status, void *unused) {
  (void)unused;
  weft__runtime_exit_rules();
  fflush(NULL);
  _exit(status);
}

/* What the child needs from the start that made it. */
struct start_req {
  struct proc *p;
  pid_t parent_pid;
  int spare_fd;      /* reserved by the parent so pidfd_open cannot hit EMFILE */
  bool via_forker;   /* forked by the forker thread: restore mask and name */
  sigset_t mask;     /* the starting thread's signal mask */
  const struct weft__spawn_req *spawn; /* NULL: fork */
};

/* Runs in the new child and never returns. The fork handler has already
 * released the registry and dropped the parent's pidfds. */
WEFT__HOT static _Noreturn void child_main(const struct start_req *req) {
  struct proc *p = req->p;
  weft__os_close(req->spare_fd);
  if (p->daemon) {
    /* A parent that died before prctl took effect would never signal us. */
    if (weft__os_set_parent_death_signal(SIGKILL) < 0 || weft__os_getppid() != req->parent_pid)
      raise(SIGKILL);
  }
  /* Every page written here is copied (copy-on-write), which is most of
   * what a start costs beyond fork itself: write only what must change.
   * The child's own object keeps the parent's view (state ST_STARTING, no
   * pid); every call treats `current` specially. */
  parent = current;
  if (parent->pid != req->parent_pid) parent->pid = req->parent_pid; /* stale after a raw fork */
  current = p;
  child_counter = 0;
  if (req->via_forker) {
    pthread_sigmask(SIG_SETMASK, &req->mask, NULL);
    weft__os_set_thread_name(main_comm);
  }
  /* on_exit handlers run newest first: this one runs after any the target
   * registers, and before every handler inherited from the parent, which it
   * skips by calling _exit. */
  on_exit(child_on_exit, NULL);
  exit(p->target(p->arg));
}

/* Starts the child by the request's method: the one place that knows them. */
static void describe(struct proc *p, enum kind kind, enum state state, const char *name,
                     const char *identity) {
  p->kind = kind;
  p->state = state;
  p->pidfd = -1;
  p->status_fd = -1;
  p->refs = 1;
  snprintf(p->name, sizeof p->name, "%s", name);
  snprintf(p->identity, sizeof p->identity, "%s", identity);
}

/* A child's start-up under spawn or the forkserver (spawn.c): the objects
 * of the child and its parent, as a forked child inherits them. */
_Noreturn void weft__process_run_spawned(const struct weft__spawned *s) {
  if (s->daemon &&
      (weft__os_set_parent_death_signal(SIGKILL) < 0 || weft__os_getppid() != s->real_parent))
    raise(SIGKILL);
  struct proc *me = calloc(1, sizeof *me), *up = calloc(1, sizeof *up);
  if (me == NULL || up == NULL) {
    fprintf(stderr, "weft: spawned child %d: out of memory\n", (int)weft__pid);
    _exit(255);
  }
  describe(up, s->parent_identity[0] != '\0' ? KIND_CHILD : KIND_MAIN, ST_STARTED,
           s->parent_name, s->parent_identity);
  up->pid = s->parent_pid;
  /* as a forked child's own object: the parent's view */
  describe(me, KIND_CHILD, ST_STARTING, s->name, s->identity);
  me->daemon = s->daemon;
  me->parent_pid = s->parent_pid;
  me->target = s->target;
  me->arg = s->arg;
  pthread_mutex_lock(&registry);
  up->id = weft__handle_add(&table, up);
  me->id = weft__handle_add(&table, me);
  parent = up;
  parent_pidfd = s->parent_pidfd;
  current = me;
  child_counter = 0;
  pthread_mutex_unlock(&registry);
  on_exit(child_on_exit, NULL);
  exit(s->target(s->arg));
}

/* Not inlined into weft_process_start: the child returns here from fork,
 * and this code should sit with the rest of what a child runs. */
WEFT__HOT __attribute__((noinline)) static pid_t fork_child(const struct start_req *req) {
  if (req->spawn != NULL) return weft__spawn_start(req->spawn);
  pid_t pid = weft__os_fork();
  if (pid == 0) child_main(req);
  return pid;
}

/* ---- the forker thread ----
 * PR_SET_PDEATHSIG fires when the *thread* that forked exits. A daemon child
 * started from a short-lived thread would die with that thread, so such
 * starts are forked by one long-lived thread instead. The main thread forks
 * for itself: it lives as long as the process (unless it calls pthread_exit,
 * which the docs warn about). */

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_mutex_t serial; /* one request at a time */
  bool running, pending, done;
  int users; /* threads inside on_forker */
  pid_t (*fn)(void *);
  void *arg;
  pid_t result;
} forker = {.mu = PTHREAD_MUTEX_INITIALIZER,
            .cv = PTHREAD_COND_INITIALIZER,
            .serial = PTHREAD_MUTEX_INITIALIZER};

static void *forker_main(void *unused) {
  (void)unused;
  weft__os_set_thread_name("weft-forker");
  pthread_mutex_lock(&forker.mu);
  for (;;) {
    while (!forker.pending) pthread_cond_wait(&forker.cv, &forker.mu);
    forker.pending = false;
    pid_t (*fn)(void *) = forker.fn;
    void *arg = forker.arg;
    pthread_mutex_unlock(&forker.mu);
    pid_t pid = fn(arg);
    pthread_mutex_lock(&forker.mu);
    forker.result = pid;
    forker.done = true;
    pthread_cond_broadcast(&forker.cv);
  }
  return NULL;
}

static int forker_start_locked(void) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the forker inherits it: no signal lands there */
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int r = pthread_create(&t, &attr, forker_main, NULL);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r != 0) return -r;
  forker.running = true;
  return 0;
}

/* Runs fn(arg) on the forker thread and returns its result. */
static pid_t on_forker(pid_t (*fn)(void *), void *arg) {
  __atomic_add_fetch(&forker.users, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_lock(&forker.serial);
  pthread_mutex_lock(&forker.mu);
  pid_t result = forker.running ? 0 : forker_start_locked();
  if (result == 0) {
    forker.fn = fn;
    forker.arg = arg;
    forker.pending = true;
    forker.done = false;
    pthread_cond_broadcast(&forker.cv);
    while (!forker.done) pthread_cond_wait(&forker.cv, &forker.mu);
    result = forker.result;
  }
  pthread_mutex_unlock(&forker.mu);
  pthread_mutex_unlock(&forker.serial);
  __atomic_sub_fetch(&forker.users, 1, __ATOMIC_SEQ_CST);
  return result;
}

static pid_t fork_child_fn(void *req) { return fork_child(req); }

static pid_t fork_via_forker(struct start_req *req) {
  req->via_forker = true;
  pthread_sigmask(SIG_SETMASK, NULL, &req->mask);
  return on_forker(fork_child_fn, req);
}

pid_t weft__process_long_lived(pid_t (*fn)(void *), void *arg) {
  if (weft__os_gettid() == weft__pid) return fn(arg);
  int cancel_state = weft__nocancel_begin();
  pid_t r = on_forker(fn, arg);
  weft__nocancel_end(cancel_state);
  return r;
}

/* ---- start ---- */

int weft_process_start(weft_process h) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, __func__);
  if (p == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  int err = 0;
  if (p->kind != KIND_CHILD || p->state != ST_INITIAL)
    err = weft__error(WEFT_EALREADY, "%s was already started", p->name);
  else if (p->parent_pid != weft__pid)
    err = weft__error(WEFT_EPERM, "%s was created by another process (pid %d)", p->name,
                      (int)p->parent_pid);
  else if (current->daemon && !p->daemon)
    err = weft__error(WEFT_EPERM,
                      "%s is a daemon and may only start daemon children, not %s (it would be "
                      "orphaned when %s is terminated)",
                      current->name, p->name, current->name);
  if (err != 0) {
    put_locked(p);
    pthread_mutex_unlock(&registry);
    return err;
  }
  p->state = ST_STARTING;
  pthread_mutex_unlock(&registry);

  /* What a spawned child is given goes in the parcel before it starts: an
   * object that cannot travel (freed since creation) fails the start. */
  struct weft__parcel *parcel = NULL;
  if (p->method != METHOD_FORK &&
      (parcel = weft__parcel_pack(p->objects, "weft_process_start")) == NULL) {
    err = weft_last_error_code();
    pthread_mutex_lock(&registry);
    p->state = ST_INITIAL;
    put_locked(p);
    pthread_mutex_unlock(&registry);
    return err;
  }
  /* Cancellation is off while fflush (a write) or a forker request could be
   * cancelled with the object half-started. It is back on before a direct
   * fork: a page the parent writes after fork is a page copied, and nothing
   * after the fork is a cancellation point (closes are raw system calls). */
  bool via_forker = p->daemon && p->method != METHOD_FORKSERVER && weft__os_gettid() != weft__pid;
  bool forkserver = p->method == METHOD_FORKSERVER;
  int cancel_state = weft__nocancel_begin();
  /* The forkserver opens the pidfd and passes it: no fd to reserve here. */
  struct start_req req = {.p = p,
                          .parent_pid = weft__pid,
                          .spare_fd = forkserver ? -1 : weft__os_reserve_fd()};
  struct weft__spawn_req spawn = {.target = (const void *)p->target,
                                  .args = p->args,
                                  .args_size = p->args_size,
                                  .daemon = p->daemon,
                                  .name = p->name,
                                  .identity = p->identity,
                                  .parent_pid = weft__pid,
                                  .parent_name = current->name,
                                  .parent_identity = current->identity,
                                  .parcel = parcel};
  if (p->method == METHOD_SPAWN) req.spawn = &spawn;
  /* A spawn by the forker, whose mask blocks every signal, gives the child
   * the starting thread's (fork_via_forker fills it in). */
  if (p->method == METHOD_SPAWN && via_forker) spawn.mask = &req.mask;
  pid_t pid = req.spare_fd; /* a failure to reserve is reported before any fork */
  int pidfd = -1, status_fd = -1;
  if (forkserver) {
    fflush(NULL);
    int r = weft__forkserver_start(&spawn, &pid, &pidfd, &status_fd);
    if (r < 0) pid = pidfd = r;
  } else if (req.spare_fd >= 0) {
    fflush(NULL); /* or the child would write the parent's buffered output again */
    if (!via_forker) weft__nocancel_end(cancel_state);
    pid = via_forker ? fork_via_forker(&req) : fork_child(&req);
    weft__os_close(req.spare_fd); /* pidfd_open gets its slot */
    pidfd = pid > 0 ? weft__os_pidfd_open(pid) : (int)pid;
    /* ESRCH: the child already ended and someone else reaped it (SIGCHLD
     * ignored, waitpid(-1)); it did run. Any other failure leaves a child
     * weft cannot track: kill it while it is still ours to kill. */
    if (pid > 0 && pidfd < 0 && pidfd != WEFT_ESRCH) weft__os_kill_and_reap(pid);
  }

  pthread_mutex_lock(&registry);
  if (pid > 0 && pidfd == WEFT_ESRCH) {
    p->pid = pid;
    p->state = ST_STOPPED;
    p->reap_error = WEFT_ECHILD;
  } else if (pidfd < 0) {
    p->state = ST_INITIAL;
    err = forkserver /* its sentence is recorded, and says more */
              ? pidfd
              : weft__error(pidfd, "could not start %s: %s", p->name, weft_strerror(pidfd));
  } else {
    p->pid = pid;
    p->pidfd = pidfd;
    p->status_fd = status_fd;
    p->state = ST_STARTED;
    track_pidfd_locked(pidfd);
    if (status_fd >= 0) track_pidfd_locked(status_fd);
    running_add_locked(p);
    if (status_fd < 0) holders_add_locked(p);
  }
  put_locked(p);
  pthread_mutex_unlock(&registry);
  weft__parcel_free(parcel);
  if (via_forker || req.spare_fd < 0) weft__nocancel_end(cancel_state);
  return err;
}

/* ---- join, poll, signals ---- */

static int join(weft_process h, double timeout, weft__deadline deadline, const char *site) {
  int err;
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, "weft_process_join");
  if (p == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  if (p == parent) {
    pid_t pid = p->pid;
    put_locked(p);
    pthread_mutex_unlock(&registry);
    err = wait_parent(pid, deadline);
    if (err == WEFT_ETIMEDOUT)
      weft__error(err, "weft_process_join: parent %s still running after %g s", p->name, timeout);
    return err;
  }
  err = check_child(p, __func__);
  if (err == 0) {
    /* p->name lives as long as the reference this call holds. */
    bool recorded = timeout > 0 && p->state != ST_STOPPED &&
                    weft__wait_begin(WEFT__WAIT_PROCESS_JOIN, p, p->name, site, p->pid);
    err = wait_child_locked(p, deadline);
    weft__wait_end(recorded);
    if (err == WEFT_ETIMEDOUT)
      weft__error(err, "weft_process_join: %s still running after %g s", p->name, timeout);
    else if (err < 0)
      weft__error(err, "weft_process_join: waiting for %s failed: %s", p->name, weft_strerror(err));
  }
  put_locked(p);
  pthread_mutex_unlock(&registry);
  return err;
}

int(weft_process_join)(weft_process h, double timeout) {
  return weft_process_join_at(h, timeout, NULL);
}

int weft_process_join_at(weft_process h, double timeout, const char *site) {
  weft__deadline deadline;
  int err = weft__deadline_from(timeout, &deadline);
  if (err != 0) return err;
  int cancel_state = weft__nocancel_begin();
  err = join(h, timeout, deadline, site);
  weft__nocancel_end(cancel_state);
  return err;
}

bool weft_process_is_alive(weft_process h) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, __func__);
  bool alive = false;
  if (p != NULL) {
    if (p == current)
      alive = true;
    else if (p == parent)
      alive = parent_alive(p);
    else if (!is_child(p))
      weft__error(WEFT_EPERM, "weft_process_is_alive: %s is not a child of this process",
                  p->name);
    else
      alive = p->state == ST_STARTED && !poll_locked(p);
    put_locked(p);
  }
  pthread_mutex_unlock(&registry);
  return alive;
}

pid_t weft_process_pid(weft_process h) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, __func__);
  pid_t pid = WEFT_ECLOSED;
  if (p != NULL) {
    if (p == current)
      pid = weft__pid;
    else if (p == parent)
      pid = p->pid; /* set by child_main: this object's state is its creator's view */
    else if (p->state == ST_INITIAL || p->state == ST_STARTING)
      pid = weft__error(WEFT_ENOTSTARTED, "weft_process_pid: %s has not been started", p->name);
    else
      pid = p->pid;
    put_locked(p);
  }
  pthread_mutex_unlock(&registry);
  return pid;
}

int weft_process_exitcode(weft_process h, int *exitcode) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, __func__);
  if (p == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  int err;
  if (p == current || p == parent)
    err = weft__error(WEFT_ERUNNING, "weft_process_exitcode: %s is still running", p->name);
  else if ((err = check_child(p, __func__)) == 0) {
    int stopped = poll_checked_locked(p);
    if (stopped < 0)
      err = weft__error(stopped, "weft_process_exitcode: cannot reach %s: %s", p->name,
                        weft_strerror(stopped));
    else if (stopped == 0)
      err = weft__error(WEFT_ERUNNING, "weft_process_exitcode: %s is still running", p->name);
    else if (p->reap_error != 0)
      err = weft__error(p->reap_error,
                        "weft_process_exitcode: the exit status of %s was reaped by someone else",
                        p->name);
    else if (exitcode != NULL)
      *exitcode = p->exitcode;
  }
  put_locked(p);
  pthread_mutex_unlock(&registry);
  return err;
}

static int send_signal(weft_process h, int sig, const char *fn) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, fn);
  if (p == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  int err = check_child(p, fn);
  if (err == 0 && (err = signal_locked(p, sig)) < 0)
    weft__error(err, "%s: %s: %s", fn, p->name, weft_strerror(err));
  put_locked(p);
  pthread_mutex_unlock(&registry);
  return err;
}

int weft_process_terminate(weft_process h) { return send_signal(h, SIGTERM, __func__); }

int weft_process_kill(weft_process h) { return send_signal(h, SIGKILL, __func__); }

int weft_process_close(weft_process h) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, __func__);
  if (p == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  int err = 0;
  if (p == current || p == parent)
    err = weft__error(WEFT_EPERM, "weft_process_close: %s is the %s process", p->name,
                      p == current ? "calling" : "parent");
  else if (p->state == ST_STARTING || (is_child(p) && p->state == ST_STARTED && !poll_locked(p)))
    err = weft__error(WEFT_ERUNNING, "weft_process_close: %s is still running; join it first",
                      p->name);
  if (err == 0) {
    weft__handle_remove(&table, p->id);
    p->refs--; /* the table's reference; ours keeps p alive until put_locked */
  }
  put_locked(p);
  pthread_mutex_unlock(&registry);
  return err;
}

/* ---- attributes ---- */

const char *weft_process_name(weft_process h) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, __func__);
  const char *name = NULL;
  if (p != NULL) {
    name = p->name; /* stays valid until the handle is closed */
    put_locked(p);
  }
  pthread_mutex_unlock(&registry);
  return name;
}

bool weft_process_daemon(weft_process h) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, __func__);
  bool daemon = false;
  if (p != NULL) {
    daemon = p->daemon;
    put_locked(p);
  }
  pthread_mutex_unlock(&registry);
  return daemon;
}

int weft_process_set_daemon(weft_process h, bool daemon) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, __func__);
  if (p == NULL) {
    pthread_mutex_unlock(&registry);
    return WEFT_ECLOSED;
  }
  int err = 0;
  if (p->kind != KIND_CHILD || p->state != ST_INITIAL)
    err = weft__error(WEFT_EALREADY,
                      "weft_process_set_daemon: %s was already started; set daemon before start",
                      p->name);
  else
    p->daemon = daemon;
  put_locked(p);
  pthread_mutex_unlock(&registry);
  return err;
}

/* "-SIGKILL" for a death by signal, as Python's _exitcode_to_name. */
static void exitcode_text(int code, char *buf, size_t size) {
  const char *abbrev = code < 0 ? sigabbrev_np(-code) : NULL;
  if (abbrev != NULL)
    snprintf(buf, size, "-SIG%s", abbrev);
  else
    snprintf(buf, size, "%d", code);
}

char *weft_process_repr(weft_process h, char *buf, size_t size) {
  if (buf == NULL || size == 0) {
    weft__error(WEFT_EINVAL, "weft_process_repr: %s", buf == NULL ? "buf is NULL" : "size is 0");
    return NULL;
  }
  if (h.id == 0) {
    snprintf(buf, size, "None");
    return buf;
  }
  pthread_mutex_lock(&registry);
  struct proc *p = weft__handle_get(&table, h.id);
  if (p == NULL) {
    pthread_mutex_unlock(&registry);
    snprintf(buf, size, "<Process closed>");
    return buf;
  }
  const char *type = p->kind == KIND_MAIN ? "_MainProcess" : "Process";
  char pid[24] = "", parent_pid[24] = "None", code[32] = "";
  const char *status;
  if (p == parent) {
    type = "_ParentProcess";
    status = "unknown";
  } else if (p == current) {
    status = "started";
  } else if (!is_child(p)) {
    status = "unknown";
  } else if (p->state == ST_INITIAL || p->state == ST_STARTING) {
    status = "initial";
  } else {
    status = poll_locked(p) ? "stopped" : "started";
    if (p->state == ST_STOPPED && p->reap_error == 0) {
      code[0] = ' ';
      memcpy(code + 1, "exitcode=", 9);
      exitcode_text(p->exitcode, code + 10, sizeof code - 10);
    }
  }
  if (is_child(p) && p->state >= ST_STARTED) snprintf(pid, sizeof pid, " pid=%d", (int)p->pid);
  if (p->kind == KIND_CHILD && p != parent)
    snprintf(parent_pid, sizeof parent_pid, "%d", (int)p->parent_pid);
  snprintf(buf, size, "<%s name='%s'%s parent=%s %s%s%s>", type, p->name, pid, parent_pid, status,
           code, p->daemon && p != parent ? " daemon" : "");
  pthread_mutex_unlock(&registry);
  return buf;
}

/* ---- the calling process and its family ---- */

weft_process weft_current_process(void) {
  pthread_mutex_lock(&registry);
  weft_process h = {current->id};
  pthread_mutex_unlock(&registry);
  return h;
}

weft_process weft_parent_process(void) {
  pthread_mutex_lock(&registry);
  weft_process h = {parent != NULL ? parent->id : 0};
  pthread_mutex_unlock(&registry);
  return h;
}

/* Walks the running list: the children started and not yet known to have
 * stopped, whose polls may take them off it. */
int weft_active_children(weft_process *out, size_t max) {
  if (out == NULL && max > 0)
    return weft__error(WEFT_EINVAL, "weft_active_children: out is NULL but max is %zu", max);
  int count = 0;
  pthread_mutex_lock(&registry);
  for (struct proc *p = running_head, *next; p != NULL; p = next) {
    next = p->run_next;
    if (poll_locked(p)) continue;
    if ((size_t)count < max) out[count] = (weft_process){p->id};
    count++;
  }
  pthread_mutex_unlock(&registry);
  return count;
}

/* For the dump: the running list read without the registry, each node
 * copied through the kernel, so a node taken off and freed meanwhile is
 * read stale or not at all, never as freed memory. A torn walk stops at
 * max. */
int weft__process_each_child(void (*fn)(void *ctx, const char *name, pid_t pid, bool daemon),
                             void *ctx, int max) {
  struct proc *p = NULL;
  if (weft__os_peek(weft__pid, &p, &running_head, sizeof p) != (ssize_t)sizeof p) return 0;
  int n = 0;
  static struct proc copy; /* too big for a signal handler's stack; dumps run one at a time */
  while (p != NULL && n < max) {
    if (weft__os_peek(weft__pid, &copy, p, sizeof copy) != (ssize_t)sizeof copy) break;
    copy.name[sizeof copy.name - 1] = '\0';
    if (copy.in_running && copy.gen == proc_gen) {
      fn(ctx, copy.name, copy.pid, copy.daemon);
      n++;
    }
    p = copy.run_next;
  }
  return n;
}

/* For the dump: this process's own name (MainProcess, Process-1, ...). */
const char *weft__process_own_name(void) { return current->name; }

int weft_set_daemon_grace(double seconds) {
  if (seconds != seconds) return weft__error(WEFT_EINVAL, "weft_set_daemon_grace: seconds is NaN");
  pthread_mutex_lock(&registry);
  daemon_grace = seconds;
  pthread_mutex_unlock(&registry);
  return 0;
}

/* ---- exit rules ---- */

static struct proc *find_running_child_locked(bool daemon) {
  for (struct proc *p = running_head, *next; p != NULL; p = next) {
    next = p->run_next;
    if (p->daemon == daemon && !p->unwaitable && !poll_locked(p)) return p;
  }
  return NULL;
}

/* A dup of a started child's pidfd, for a caller that polls many children
 * at once (process pools): readable once the child has exited, whoever
 * reaps it. The fd or a negative code. */
int weft__process_dup_pidfd(weft_process h) {
  pthread_mutex_lock(&registry);
  struct proc *p = get_locked(h, __func__);
  int fd = WEFT_ECLOSED;
  if (p != NULL) {
    int held = is_child(p) && p->state == ST_STARTED ? hold_pidfd_locked(p) : 0;
    fd = held < 0 ? held : p->pidfd >= 0 ? weft__os_dup(p->pidfd) : WEFT_ESRCH;
    put_locked(p);
  }
  pthread_mutex_unlock(&registry);
  return fd;
}

/* Waits for each running child of one kind, one at a time, without holding
 * a list: children stopped meanwhile are skipped by the search. */
static void wait_children_locked(bool daemon, weft__deadline deadline) {
  for (;;) {
    struct proc *p = find_running_child_locked(daemon);
    if (p == NULL) return;
    p->refs++;
    int r = wait_child_locked(p, deadline);
    if (r == WEFT_ETIMEDOUT && (r = signal_locked(p, SIGKILL)) == 0)
      r = wait_child_locked(p, WEFT__NEVER);
    if (r < 0) p->unwaitable = true; /* no descriptor left to wait with: not found again */
    put_locked(p);
  }
}

WEFT__HOT void weft__process_exit_rules(void) {
  pthread_mutex_lock(&registry);
  if (running_children == 0) {
    pthread_mutex_unlock(&registry);
    return;
  }
  for (struct proc *p = running_head, *next; p != NULL; p = next) {
    next = p->run_next;
    if (p->daemon) signal_locked(p, SIGTERM);
  }
  weft__deadline deadline;
  weft__deadline_from(daemon_grace, &deadline); /* WEFT_FOREVER: never escalate */
  wait_children_locked(true, deadline);
  wait_children_locked(false, WEFT__NEVER);
  pthread_mutex_unlock(&registry);
}

/* ---- fork handlers ---- */

WEFT__HOT void weft__process_before_fork(void) { pthread_mutex_lock(&registry); }

WEFT__HOT void weft__process_after_fork_parent(void) { pthread_mutex_unlock(&registry); }

static void close_untracked(void *obj, void *unused) {
  (void)unused;
  struct proc *p = obj;
  if (p->gen == proc_gen && p->pidfd >= 0 && !pidfd_tracked(p->pidfd))
    weft__os_close(p->pidfd);
  if (p->gen == proc_gen && p->status_fd >= 0 && !pidfd_tracked(p->status_fd))
    weft__os_close(p->status_fd);
}

/* The pidfds are the parent's; in the child they would only leak. Each run
 * of consecutive pidfds -- children started one after another get
 * consecutive fds -- is closed by one call, and only bits marked are: the
 * reserve fd, pipes and every fd weft or the program opened between two
 * starts are left alone. Reads the bits and writes nothing: the objects
 * are refreshed when used (refresh_locked). */
WEFT__HOT static void close_inherited_pidfds(void) {
  if (untracked_pidfds != 0) weft__handle_each(&table, close_untracked, NULL);
  size_t n = pidfd_words * 64;
  for (size_t i = 0; i < n;) {
    uint64_t w = pidfd_bits[i / 64] >> (i % 64);
    if (w == 0) {
      i = (i / 64 + 1) * 64;
      continue;
    }
    i += (size_t)__builtin_ctzll(w);
    size_t j = i;
    for (;;) { /* to the end of the run: the first clear bit */
      uint64_t clear = ~(pidfd_bits[j / 64] >> (j % 64));
      if (j % 64 != 0) clear &= ~(uint64_t)0 >> (j % 64); /* bits shifted in are not the fd's */
      if (clear != 0) {
        j += (size_t)__builtin_ctzll(clear);
        break;
      }
      j = (j / 64 + 1) * 64;
      if (j >= n) break;
    }
    weft__os_close_range((unsigned)i, (unsigned)(j - 1));
    i = j;
  }
}

/* Resets only what threads of the parent may have left mid-change: every
 * write here copies a page, in every child (see child_main). Work in
 * proportion to the children alive (the parent's pidfds) is a few
 * close_range calls; no object is written. */
WEFT__HOT void weft__process_after_fork_child(void) {
  /* With no pidfd open no wait was in flight and no child is running. */
  if (open_pidfds != 0) {
    close_inherited_pidfds();
    open_pidfds = 0;
  }
  if (parent_pidfd >= 0) { /* the pidfd on our parent is not the child's parent */
    weft__os_close(parent_pidfd);
    parent_pidfd = -1;
  }
  proc_gen++; /* these: a few words of static data, where the objects were many */
  running_children = 0;
  running_head = NULL;
  holders_head = holders_tail = NULL;
  n_holders = 0;
  /* Counted under the registry, which the fork handler holds: zero means
   * no thread was inside pthread_cond_wait on it. */
  if (reaped_waiters != 0) {
    pthread_cond_init(&reaped, NULL);
    reaped_waiters = 0;
  }
  /* The forker thread does not exist in the child; it, or a thread asking
   * it for a fork, may have held its locks. */
  if (forker.running || __atomic_load_n(&forker.users, __ATOMIC_SEQ_CST) != 0) {
    pthread_mutex_init(&forker.mu, NULL);
    pthread_mutex_init(&forker.serial, NULL);
    pthread_cond_init(&forker.cv, NULL);
    forker.running = forker.pending = forker.done = false;
    forker.users = 0;
  }
  pthread_mutex_unlock(&registry);
}

int weft_cpu_count(void) {
  int n = weft__os_affinity_count();
  if (n < 1) n = 1;
  int limit = weft__os_cgroup_cpu_limit();
  return limit > 0 && limit < n ? limit : n;
}
