/* SPDX-License-Identifier: MIT */
/* The forkserver start method (forkserver.h).
 *
 * The server is started as a spawned child is (spawn.c): a fresh run of the
 * program's own image, so it holds none of the program's locks and is only
 * as large as the program's code; weft's constructor finds WEFT_FORKSERVER
 * in its environment and serves instead of returning to the program. Its
 * descriptor 3 is one end of a SOCK_SEQPACKET pair whose other end, the
 * control socket, the program keeps. A start sends one request on it,
 * carrying descriptors only:
 *   - the child's end of a start socket, on which the caller then writes
 *     the request and argument bytes of a spawn (spawn.c);
 *   - the server's end of a status socket (SOCK_SEQPACKET), on which the
 *     server answers with the child's pid and a pidfd on it, and later with
 *     its exit code;
 *   - the caller's standard input, output and error, which become the
 *     child's, so output goes where the caller's goes now.
 * The server forks the child (a fork of a small single-threaded process),
 * keeps a pidfd on it, and reaps it when that turns readable. It ends when
 * the control socket closes -- when the program exits or dies -- and, like
 * a daemon child, by PR_SET_PDEATHSIG; daemon children die with it. */
#define _GNU_SOURCE
#include "forkserver.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "os/os.h"
#include "runtime.h"
#include "weft/process.h"

#define ENV_NAME "WEFT_FORKSERVER" /* its value: the pid of the program served */
#define CONTROL_FD 3
#define MAGIC 0x77667372u /* "wfsr" */

struct request {
  uint32_t magic;
  uint32_t stdio; /* bit i: the caller's fd i is attached, after the two sockets */
  sigset_t mask;  /* the caller's signal mask: the child's */
};

enum { REPLY_STARTED = 1, REPLY_FAILED, REPLY_EXITED };

struct reply {
  int32_t kind;
  int32_t value; /* the pid (a pidfd attached), a negated errno, or the exit code */
};

/* ---- the program's side ---- */

/* mu is held for short work only, and the fork handlers take it: every
 * socket a start makes is created and its far end closed under it, so no
 * fork elsewhere in the program copies an end that would keep the server's
 * death (end of file) from being seen. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* broadcast when a launch ends */
  int cv_waiters;
  bool launching;
  int control; /* -1: no server */
  int pidfd;   /* on the server */
  pid_t pid;
} fs = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .control = -1,
        .pidfd = -1};

struct launch {
  int control, pidfd;
};

/* Runs on a long-lived thread, so PR_SET_PDEATHSIG ties the server to the
 * process rather than to the thread that first needed it. */
static pid_t launch(void *arg) {
  struct launch *l = arg;
  sigset_t none;
  sigemptyset(&none); /* not the forker's mask, which blocks every signal */
  char env[48];
  snprintf(env, sizeof env, ENV_NAME "=%d", (int)weft__pid);
  pthread_mutex_lock(&fs.mu);
  int sv[2];
  pid_t pid = weft__os_seqpacketpair(sv);
  if (pid == 0) {
    pid = weft__os_spawn_self(sv[1], env, &none);
    weft__os_close(sv[1]);
    int fd = pid > 0 ? weft__os_pidfd_open(pid) : -1;
    if (pid > 0 && fd < 0) { /* reaped already (SIGCHLD ignored?): cannot be watched */
      weft__os_kill_and_reap(pid);
      pid = fd;
    }
    if (pid < 0) {
      weft__os_close(sv[0]);
    } else {
      l->control = sv[0];
      l->pidfd = fd;
    }
  }
  pthread_mutex_unlock(&fs.mu);
  return pid;
}

static int ensure_locked(void) {
  while (fs.launching) {
    fs.cv_waiters++;
    pthread_cond_wait(&fs.cv, &fs.mu);
    fs.cv_waiters--;
  }
  if (fs.control >= 0) return 0;
  fs.launching = true;
  pthread_mutex_unlock(&fs.mu);
  struct launch l = {-1, -1};
  pid_t pid = weft__process_long_lived(launch, &l);
  pthread_mutex_lock(&fs.mu);
  fs.launching = false;
  pthread_cond_broadcast(&fs.cv);
  if (pid < 0)
    return weft__error(pid, "could not start the forkserver: %s", weft_strerror(pid));
  fs.control = l.control;
  fs.pidfd = l.pidfd;
  fs.pid = pid;
  return 0;
}

/* The server is gone (killed from outside): forget it, reaping it. */
static void lost_locked(void) {
  weft__os_close(fs.control);
  fs.control = -1;
  weft__os_pidfd_signal(fs.pidfd, SIGKILL);
  int code;
  weft__os_pidfd_reap(fs.pidfd, false, &code);
  weft__os_close(fs.pidfd);
  fs.pidfd = -1;
  fs.pid = 0;
}

/* Whether the server is dead, waiting for that until the deadline (ns):
 * a server that dies closes its sockets before its pidfd says so. */
static bool server_dead_locked(pid_t server, int64_t deadline) {
  return fs.pid == server && fs.pidfd >= 0 && weft__os_wait_readable(fs.pidfd, deadline) == 1;
}

int weft_forkserver_ensure_running(void) {
  int cancel_state = weft__nocancel_begin();
  pthread_mutex_lock(&fs.mu);
  int err = ensure_locked();
  pthread_mutex_unlock(&fs.mu);
  weft__nocancel_end(cancel_state);
  return err;
}

static bool send_failed_for_death(int err) {
  return err == -EPIPE || err == -ECONNRESET || err == -ECONNREFUSED || err == -ENOTCONN;
}

static void close_pair(int fds[2]) {
  if (fds[0] >= 0) weft__os_close(fds[0]);
  if (fds[1] >= 0) weft__os_close(fds[1]);
  fds[0] = fds[1] = -1;
}

/* Makes the start and status sockets and sends the request, with the
 * caller's standard fds that are open and its signal mask, to a server
 * started if need be; keeps the near ends in ours and the server's pid in
 * *server. 1: the server was found dead (try again); 0; or an error. */
static int send_request(int ours[2], pid_t *server) {
  struct request rq = {.magic = MAGIC};
  pthread_sigmask(SIG_SETMASK, NULL, &rq.mask);
  int start[2] = {-1, -1}, status[2] = {-1, -1};
  pthread_mutex_lock(&fs.mu);
  int err = ensure_locked(); /* its sentence is recorded */
  if (err == 0) {
    err = weft__os_socketpair(start);
    if (err == 0) err = weft__os_seqpacketpair(status);
    if (err < 0) weft__error(err, "could not reach the forkserver: %s", weft_strerror(err));
  }
  if (err == 0) {
    int fds[5] = {start[1], status[1]};
    size_t n = 2;
    for (int i = 0; i < 3; i++) {
      if (!weft__os_fd_valid(i)) continue;
      fds[n++] = i;
      rq.stdio |= 1u << i;
    }
    *server = fs.pid;
    err = weft__os_send_fds(fs.control, &rq, sizeof rq, fds, n);
    if (send_failed_for_death(err)) {
      lost_locked();
      err = 1;
    } else if (err < 0) {
      weft__error(err, "could not reach the forkserver: %s", weft_strerror(err));
    }
  }
  if (start[1] >= 0) weft__os_close(start[1]);
  if (status[1] >= 0) weft__os_close(status[1]);
  pthread_mutex_unlock(&fs.mu);
  if (err != 0) {
    if (start[0] >= 0) weft__os_close(start[0]);
    if (status[0] >= 0) weft__os_close(status[0]);
    return err;
  }
  ours[0] = start[0];
  ours[1] = status[0];
  return 0;
}

/* One try: 1 when the server was found dead (the caller may try again), 0
 * when started, or a negative code. */
static int try_start(const struct weft__spawn_req *req, pid_t *pid, int *pidfd, int *status_fd) {
  int ours[2] = {-1, -1}; /* start, status */
  pid_t server = 0;
  int err = send_request(ours, &server);
  if (err != 0) return err;
  /* A stopped server (SIGSTOP) answers nobody, and a start would wait for
   * it for ever: while no answer comes, look every second whether it is
   * stopped. A running server, however slow, is waited for. */
  while (weft__os_wait_readable(ours[1], weft__os_now_ns() + 1000000000) != 1) {
    if (weft__os_process_stopped(server) == 1) {
      close_pair(ours); /* resumed, it finds the request's sockets closed */
      return weft__error(WEFT_EAGAIN,
                         "could not start %s: the forkserver (pid %d) is stopped; continue it "
                         "(SIGCONT) and start again",
                         req->name, (int)server);
    }
  }
  struct reply rp = {0};
  int fd = -1;
  size_t got = 0;
  ssize_t r = weft__os_recv_fds(ours[1], &rp, sizeof rp, &fd, 1, &got, false);
  if (r == (ssize_t)sizeof rp && rp.kind == REPLY_STARTED && got == 1) {
    err = weft__spawn_send(ours[0], req);
    if (err == 0 || err == WEFT_EPIPE) { /* EPIPE: the child died; its exit code says how */
      weft__os_close(ours[0]);
      *pid = rp.value;
      *pidfd = fd;
      *status_fd = ours[1];
      return 0;
    }
    weft__os_pidfd_signal(fd, SIGKILL); /* it would only fail to read its request */
    weft__os_close(fd);
    close_pair(ours);
    return weft__error(err, "could not start %s: %s", req->name, weft_strerror(err));
  }
  if (got == 1) weft__os_close(fd);
  close_pair(ours); /* a child told of but not taken reads end of file and exits */
  if (r == (ssize_t)sizeof rp && rp.kind == REPLY_FAILED && rp.value < 0)
    return weft__error(rp.value, "could not start %s: the forkserver could not: %s", req->name,
                       weft_strerror(rp.value));
  /* No answer at all (end of file): only a dying server closes the socket
   * without one. Wait for its death to show, not for ever. */
  int64_t deadline = r <= 0 && got == 0 ? weft__os_now_ns() + 2000000000 : 0;
  pthread_mutex_lock(&fs.mu);
  bool dead = server_dead_locked(server, deadline);
  if (dead) lost_locked();
  pthread_mutex_unlock(&fs.mu);
  if (dead) return 1;
  return weft__error(WEFT_EMFILE,
                     "could not start %s: the forkserver's answer lost its descriptors "
                     "(too many open files?)",
                     req->name);
}

int weft__forkserver_start(const struct weft__spawn_req *req, pid_t *pid, int *pidfd,
                           int *status_fd) {
  int err = try_start(req, pid, pidfd, status_fd);
  if (err == 1) err = try_start(req, pid, pidfd, status_fd);
  if (err == 1)
    err = weft__error(WEFT_ECHILD, "could not start %s: the forkserver ended, twice", req->name);
  return err;
}

int weft__forkserver_reap(int status_fd, int *exitcode) {
  struct reply rp;
  ssize_t r = weft__os_recv(status_fd, &rp, sizeof rp, false, true);
  if (r == -EAGAIN) return 0;
  if (r == (ssize_t)sizeof rp && rp.kind == REPLY_EXITED) {
    *exitcode = rp.value;
    return 1;
  }
  return WEFT_ECHILD;
}

WEFT__HOT void weft__forkserver_before_fork(void) { pthread_mutex_lock(&fs.mu); }

WEFT__HOT void weft__forkserver_after_fork_parent(void) { pthread_mutex_unlock(&fs.mu); }

/* The child starts its own server when it needs one: the control socket is
 * the parent's, and a launch in flight belongs to a thread that is gone. */
WEFT__HOT void weft__forkserver_after_fork_child(void) {
  if (fs.control >= 0) {
    weft__os_close(fs.control);
    weft__os_close(fs.pidfd);
    fs.control = fs.pidfd = -1;
    fs.pid = 0;
  }
  fs.launching = false;
  if (fs.cv_waiters != 0) {
    pthread_cond_init(&fs.cv, NULL);
    fs.cv_waiters = 0;
  }
  pthread_mutex_unlock(&fs.mu);
}

/* ---- the server ---- */

/* What the children take back from the server's start-up. */
static char program_comm[16];
static uint64_t program_fd_limit;
static bool program_ignored_sigchld;

/* In the new child: takes the caller's standard fds and signal mask,
 * closes every other fd of the server's, and runs the request it reads
 * from start_fd. */
static _Noreturn void become_child(int start_fd, const int stdio[3], const sigset_t *mask,
                                   int program_pidfd, pid_t server) {
  for (int i = 0; i < 3; i++)
    if (stdio[i] >= 0) weft__os_dup2(stdio[i], i);
  int lo = start_fd < program_pidfd ? start_fd : program_pidfd;
  int hi = start_fd < program_pidfd ? program_pidfd : start_fd;
  weft__os_close_range(3, (unsigned)lo - 1);
  weft__os_close_range((unsigned)lo + 1, (unsigned)hi - 1);
  weft__os_close_range((unsigned)hi + 1, ~0u);
  weft__os_set_thread_name(program_comm);
  weft__os_set_fd_limit(program_fd_limit);
  if (program_ignored_sigchld) weft__os_ignore_sigchld();
  pthread_sigmask(SIG_SETMASK, mask, NULL);
  weft__spawn_run(start_fd, server, program_pidfd);
}

struct kid {
  int pidfd;
  int status_fd;
};

static void reply(int fd, int32_t kind, int32_t value, int pidfd) {
  struct reply rp = {.kind = kind, .value = value};
  weft__os_send_fds(fd, &rp, sizeof rp, &pidfd, pidfd >= 0 ? 1 : 0);
}

/* Serves one request. Returns false when the program has gone. */
static bool serve(struct kid **kids, struct pollfd **polls, size_t *n, size_t *cap,
                  int program_pidfd) {
  struct request rq;
  int fds[5];
  size_t got = 0;
  ssize_t r = weft__os_recv_fds(CONTROL_FD, &rq, sizeof rq, fds, 5, &got, true);
  if (r == -EAGAIN || r == -EINTR) return true;
  if (r <= 0) return false;
  int stdio[3] = {-1, -1, -1};
  size_t next = 2;
  int refuse = 0;
  if (r != (ssize_t)sizeof rq || rq.magic != MAGIC) {
    refuse = WEFT_EINVAL;
  } else {
    for (int i = 0; i < 3; i++)
      if ((rq.stdio >> i & 1) != 0 && next < got) stdio[i] = fds[next++];
    if (got != next || got != 2 + (size_t)__builtin_popcount(rq.stdio))
      refuse = WEFT_EMFILE; /* descriptors were lost on the way: the server's limit */
  }
  if (refuse == 0 && *n == *cap) { /* room first: a child the server cannot watch is never made */
    size_t c = *cap * 2 + 8;
    struct kid *k = realloc(*kids, c * sizeof *k);
    if (k != NULL) *kids = k;
    struct pollfd *p = k != NULL ? realloc(*polls, (c + 1) * sizeof *p) : NULL;
    if (p != NULL) {
      *polls = p;
      *cap = c;
    } else {
      refuse = WEFT_ENOMEM;
    }
  }
  if (refuse != 0 && got >= 2) reply(fds[1], REPLY_FAILED, refuse, -1);
  /* A caller that gave up (the server was stopped meanwhile) closed its
   * ends: no child for it. */
  if (refuse == 0 && weft__os_peer_closed(fds[1])) refuse = WEFT_ECANCELED;
  if (refuse == 0) {
    pid_t server = weft__pid;
    pid_t pid = weft__os_fork();
    if (pid == 0) become_child(fds[0], stdio, &rq.mask, program_pidfd, server);
    int pidfd = pid > 0 ? weft__os_pidfd_open(pid) : pid;
    if (pid > 0 && pidfd < 0) weft__os_kill_and_reap(pid);
    if (pidfd < 0) {
      reply(fds[1], REPLY_FAILED, pidfd, -1);
    } else {
      reply(fds[1], REPLY_STARTED, pid, pidfd);
      (*kids)[*n] = (struct kid){.pidfd = pidfd, .status_fd = fds[1]};
      (*polls)[*n + 1] = (struct pollfd){.fd = pidfd};
      (*n)++;
      fds[1] = -1; /* kept until the child is reaped */
    }
  }
  for (size_t i = 0; i < got; i++)
    if (fds[i] >= 0) weft__os_close(fds[i]);
  return true;
}

/* Reaps each child whose pidfd is readable and reports its exit code. A
 * child whose status cannot be had is reported by closing its socket:
 * the caller then counts its status lost. */
static void reap(struct kid *kids, struct pollfd *polls, size_t *n) {
  for (size_t i = *n; i-- > 0;) {
    if (polls[i + 1].revents == 0) continue;
    int code = 0;
    int r = weft__os_pidfd_reap(kids[i].pidfd, true, &code);
    if (r == 0) continue;
    if (r == 1) reply(kids[i].status_fd, REPLY_EXITED, code, -1);
    weft__os_close(kids[i].status_fd);
    weft__os_close(kids[i].pidfd);
    (*n)--;
    kids[i] = kids[*n];
    polls[i + 1] = polls[*n + 1];
  }
}

void weft__forkserver_main(void) {
  const char *env = getenv(ENV_NAME);
  if (env == NULL) return;
  pid_t program = (pid_t)atol(env);
  unsetenv(ENV_NAME); /* not for the children */
  if (weft__os_set_parent_death_signal(SIGKILL) < 0 || weft__os_getppid() != program) _exit(0);
  weft__os_get_thread_name(program_comm, sizeof program_comm);
  weft__os_set_thread_name("weft-forkserver");
  weft__os_open_std_fds(); /* fds received never take 0-2, which the children's stdio use */
  /* Two fds per child alive: the server may need more than the program. */
  weft__os_raise_fd_limit(&program_fd_limit);
  /* Its children are reaped through their pidfds, never automatically. */
  program_ignored_sigchld = weft__os_default_sigchld();
  int program_pidfd = weft__os_pidfd_open(program);
  if (program_pidfd < 0) _exit(0);
  struct kid *kids = NULL;
  struct pollfd *polls = malloc(sizeof *polls);
  size_t n = 0, cap = 0;
  if (polls == NULL) _exit(1);
  for (;;) {
    polls[0] = (struct pollfd){.fd = CONTROL_FD};
    int r = weft__os_poll_readable(polls, n + 1, INT64_MAX);
    if (r < 0 && r != -EINTR) _exit(1);
    if (r <= 0) continue;
    reap(kids, polls, &n);
    if (polls[0].revents != 0 && !serve(&kids, &polls, &n, &cap, program_pidfd)) _exit(0);
  }
}
