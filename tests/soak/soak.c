/* SPDX-License-Identifier: MIT */
/* weft_soak: randomized fault injection against weft's promise that a process
 * killed at any moment loses nothing and hangs nobody.
 *
 * The controller (this program's first process, never a target) runs one
 * iteration after another. Each iteration forks a driver process that plays
 * one scenario with weft's own APIs, as a user would: a process pool, a
 * process queue with producers and consumers, processes and threads sharing
 * a Lock, RLock, Condition, Semaphore or Barrier, or a parent with daemon
 * children, a pool and a pipeline. Every process of the scenario registers
 * itself in shared memory; a killer thread in the controller sends SIGKILL,
 * SIGSEGV or SIGSTOP (then SIGCONT) to random registered processes at random
 * moments, and records each kill before it sends it.
 *
 * The scenario checks exact invariants as it goes and at the end (results,
 * executions, messages, lock state, counts, leftover processes, fds and
 * threads) and reports each broken one as a failure. The controller runs a
 * watchdog: an iteration past its bound is a hang, reported with every
 * process's threads and their wait channels, and its processes are killed.
 *
 * --inject=NAME breaks one invariant on purpose, to show that its check
 * fails (tests/soak/inject.sh runs them all). Usage: weft_soak --help.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <weft.h>

/* ---- sizes ---- */

enum {
  MAXREG = 512,    /* processes registered in one iteration */
  MAXKILL = 2048,  /* kills recorded in one iteration */
  MAXTASK = 512,   /* pool tasks in one iteration */
  MAXPROD = 32,    /* producer incarnations in one iteration */
  MAXSEQ = 16384,  /* messages per producer */
  MAXSLOT = 96,    /* lock-scenario threads (2 per process) in one iteration */
  MAXMSG = 65536,  /* largest queue message */
};

/* ---- the scenarios, the roles of their processes, the injections ---- */

enum scenario { SC_POOL, SC_QUEUE, SC_LOCK, SC_RLOCK, SC_COND, SC_SEM, SC_BARRIER, SC_PARENT, SC_N };
static const char *const scenario_names[SC_N] = {"pool",      "queue", "lock",    "rlock",
                                                 "condition", "semaphore", "barrier", "parent"};

enum pool_mode { PM_MAP, PM_APPLY, PM_IMAP, PM_MAXTASKS, PM_TERMINATE, PM_CLOSE, PM_N };
static const char *const pool_mode_names[PM_N] = {"map",         "apply_async", "imap_unordered",
                                                  "maxtasksperchild", "terminate", "close"};

enum role { R_DRIVER, R_WORKER, R_PRODUCER, R_CONSUMER, R_LOCKER, R_PARENT, R_CHILD, R_STAGE, R_STRAY };
static const char *const role_names[] = {"driver", "pool worker", "producer", "consumer", "locker",
                                         "parent", "daemon child", "pipeline stage", "stray child"};

/* One injection per invariant: the scenario it needs and what it breaks. */
enum inject {
  INJ_NONE,
  INJ_TORN_MESSAGE,      /* a producer flips a byte after the checksum */
  INJ_DUPLICATE_MESSAGE, /* a producer puts one message twice */
  INJ_INVENTED_MESSAGE,  /* a producer puts a sequence number it never attempted */
  INJ_LOST_MESSAGE,      /* a live consumer drops an acknowledged message */
  INJ_DOUBLE_RUN,        /* a task records two executions */
  INJ_WRONG_RESULT,      /* a task returns a wrong result */
  INJ_EXTRA_FAILURE,     /* a worker exits by itself inside a task: a failure no kill explains */
  INJ_CALLBACK_TWICE,    /* a future's callback is counted twice */
  INJ_MAXTASKS,          /* a worker claims more tasks than maxtasksperchild */
  INJ_TORN_STATE,        /* a lock holder leaves a half-done update and releases */
  INJ_UNREPAIRABLE,      /* a killed lock holder leaves a state no kill could leave */
  INJ_FALSE_OWNERDEAD,   /* a lock holder exits holding the lock, unkilled */
  INJ_BAD_COUNT,         /* a thread bumps its count outside the lock */
  INJ_SLOW_CALL,         /* a lock holder sleeps past the call bound */
  INJ_HANG,              /* a lock holder never releases: the watchdog must report */
  INJ_SEM_LEAK,          /* a thread takes a semaphore unit and never gives it back */
  INJ_BARRIER_BROKEN,    /* a party comes late: the barrier breaks with no fault */
  INJ_ORPHAN,            /* a parent leaves a non-daemon child that outlives it */
  INJ_ZOMBIE,            /* the driver never reaps a child */
  INJ_FD_LEAK,           /* the driver leaves a file descriptor open */
  INJ_THREAD_LEAK,       /* the driver leaves a thread running */
  INJ_N
};
static const struct {
  const char *name;
  int scenario;
  int mode; /* pool mode (for the Lock, 0: the crowd, not the hand-off), or -1 */
} injections[INJ_N] = {
    [INJ_NONE] = {"none", -1, -1},
    [INJ_TORN_MESSAGE] = {"torn-message", SC_QUEUE, -1},
    [INJ_DUPLICATE_MESSAGE] = {"duplicate-message", SC_QUEUE, -1},
    [INJ_INVENTED_MESSAGE] = {"invented-message", SC_QUEUE, -1},
    [INJ_LOST_MESSAGE] = {"lost-message", SC_QUEUE, -1},
    [INJ_DOUBLE_RUN] = {"double-run", SC_POOL, PM_MAP},
    [INJ_WRONG_RESULT] = {"wrong-result", SC_POOL, PM_IMAP},
    [INJ_EXTRA_FAILURE] = {"extra-failure", SC_POOL, PM_APPLY},
    [INJ_CALLBACK_TWICE] = {"callback-twice", SC_POOL, PM_APPLY},
    [INJ_MAXTASKS] = {"maxtasks", SC_POOL, PM_MAXTASKS},
    [INJ_TORN_STATE] = {"torn-state", SC_LOCK, 0},
    [INJ_UNREPAIRABLE] = {"unrepairable", SC_LOCK, 0},
    [INJ_FALSE_OWNERDEAD] = {"false-ownerdead", SC_RLOCK, -1},
    [INJ_BAD_COUNT] = {"bad-count", SC_COND, -1},
    [INJ_SLOW_CALL] = {"slow-call", SC_LOCK, 0},
    [INJ_HANG] = {"hang", SC_LOCK, 0},
    [INJ_SEM_LEAK] = {"sem-leak", SC_SEM, -1},
    [INJ_BARRIER_BROKEN] = {"barrier-broken", SC_BARRIER, -1},
    [INJ_ORPHAN] = {"orphan", SC_PARENT, -1},
    [INJ_ZOMBIE] = {"zombie", SC_POOL, PM_CLOSE},
    [INJ_FD_LEAK] = {"fd-leak", SC_QUEUE, -1},
    [INJ_THREAD_LEAK] = {"thread-leak", SC_POOL, PM_TERMINATE},
};

/* ---- memory shared by every process of the soak ---- */

struct reg {          /* a registered process */
  int32_t pid;
  int32_t role;
  int32_t weight;     /* chance to be picked by the killer; 0: never */
  int32_t pad;
  uint64_t start;     /* its start time (/proc stat field 22): guards against pid reuse */
  uint64_t count;     /* pool workers: tasks begun */
};

struct killrec {      /* a kill, recorded before it is sent */
  int32_t pid;
  int32_t sig;        /* SIGKILL, SIGSEGV or SIGSTOP; 0 if it did not land */
  int32_t role;
  int32_t reg;
  double stop_s;      /* SIGSTOP: how long before SIGCONT */
};

struct pool_area {
  uint32_t exec[MAXTASK];        /* executions begun */
  int32_t exec_pid[MAXTASK][2];  /* by whom */
  uint32_t exec_done[MAXTASK][2];
  int injected;
};

struct queue_area {
  uint32_t attempted[MAXPROD];   /* seq + 1 of the last put begun */
  uint32_t acked[MAXPROD];       /* seq + 1 of the last put that returned 0 */
  uint32_t in_put[MAXPROD];
  uint32_t in_get[MAXPROD];      /* set across get and its recording */
  int32_t nprod;                 /* producer ids handed out */
  int stop;
  int injected;
  uint8_t seen[MAXPROD][MAXSEQ]; /* deliveries of each message */
};

enum { ST_IDLE, ST_ACQ, ST_HELD, ST_REL };

struct lock_area {
  weft_lock lock;
  weft_rlock rlock;
  weft_cond cond;
  weft_semaphore sem;
  weft_barrier barrier;
  /* The record the lock guards: a, the counts, then b, written in that
   * order, so a holder killed part-way leaves a detectable, repairable
   * state: consistent when a == b == the sum of the counts. */
  int64_t a, b;
  int64_t cnt[MAXSLOT];
  int32_t holder;               /* pid that holds the lock, written after acquire */
  int32_t st[MAXSLOT];          /* each thread's ST_* */
  int32_t pid[MAXSLOT];
  int stop;
  int injected;
  int round, round_done; /* the Lock's hand-off mode */
  int32_t sem_units;
  int32_t inside;               /* semaphore holders counted */
  uint32_t ownerdead, repaired, torn_after_wait, ops, timeouts, broken, cycles;
};

struct shared {
  /* set by the controller for the iteration */
  int scenario, mode, inject;
  uint64_t iter_seed;
  double call_bound, phase;
  int kill_gap_ms;
  int kills_on;
  int verbose;
  pid_t controller;
  /* killer handshake */
  int window;       /* the driver lets the killer act */
  int killer_acts;  /* the killer is acting */
  /* registry and kills */
  int nreg;
  struct reg reg[MAXREG];
  int nkill;
  struct killrec kill[MAXKILL];
  int nfail;
  int hangs;    /* failures that are hangs */
  int injected; /* the parent and driver injections' one shot */
  union {
    struct pool_area pool;
    struct queue_area queue;
    struct lock_area lock;
  } u;
};

static struct shared *S;

/* ---- small helpers ---- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static _Thread_local uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = mix64(s); }
static uint64_t rnd(void) { return rng_state = mix64(rng_state); }
static uint32_t rndn(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }
static double rndf(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static void sleep_s(double s) {
  if (s <= 0) return;
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int ld(const int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void st(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

/* Reports a broken invariant: one line on stderr, counted for the iteration. */
WEFT_PRINTF(1, 2) static void fail(const char *fmt, ...) {
  int n = __atomic_add_fetch(&S->nfail, 1, __ATOMIC_SEQ_CST);
  if (strncmp(fmt, "hang", 4) == 0) __atomic_add_fetch(&S->hangs, 1, __ATOMIC_SEQ_CST);
  if (n > 12) return;
  char line[768];
  int k = snprintf(line, sizeof line, "soak: FAIL [%s pid %d] ", scenario_names[S->scenario],
                   (int)getpid());
  va_list ap;
  va_start(ap, fmt);
  k += vsnprintf(line + k, sizeof line - (size_t)k - 1, fmt, ap);
  va_end(ap);
  if (k > (int)sizeof line - 2) k = (int)sizeof line - 2;
  line[k++] = '\n';
  (void)!write(2, line, (size_t)k);
}

/* Whether the iteration's injection is `which`, and takes its one shot now. */
static bool inject_once(int which, int *flag) {
  return S->inject == which && __atomic_exchange_n(flag, 1, __ATOMIC_SEQ_CST) == 0;
}

/* A blocking call must return within its bound. */
static void check_bound(double t0, double bound, const char *what) {
  double took = now_s() - t0;
  if (took > bound) fail("%s took %.2f s, past its bound of %.2f s", what, took, bound);
}

/* Field 22 of /proc/PID/stat (start time) and the state letter. */
static bool proc_stat(pid_t pid, char *state, uint64_t *start, pid_t *ppid, char *comm, size_t cs) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  char *open_paren = strchr(buf, '('), *paren = strrchr(buf, ')');
  if (paren == NULL || open_paren == NULL || paren[1] == '\0') return false;
  if (comm != NULL) {
    size_t len = (size_t)(paren - open_paren - 1);
    if (len >= cs) len = cs - 1;
    memcpy(comm, open_paren + 1, len);
    comm[len] = '\0';
  }
  char st_ = paren[2];
  if (state) *state = st_;
  char *p = paren + 2;
  uint64_t fields[24] = {0};
  /* fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt
   * cmajflt utime stime cutime cstime priority nice threads itrealvalue start */
  for (int f = 3; f <= 22 && *p; f++) {
    while (*p == ' ') p++;
    if (f > 3) fields[f] = strtoull(p, NULL, 10);
    while (*p && *p != ' ') p++;
  }
  if (ppid) *ppid = (pid_t)fields[4];
  if (start) *start = fields[22];
  return true;
}

/* Gone: no /proc entry, or a zombie (in a container PID 1 may never reap). */
static bool pid_gone(pid_t pid) {
  char state;
  return !proc_stat(pid, &state, NULL, NULL, NULL, 0) || state == 'Z' || state == 'X';
}

static int reg_self(int role, int weight) {
  int i = __atomic_fetch_add(&S->nreg, 1, __ATOMIC_SEQ_CST);
  if (i >= MAXREG) return -1;
  struct reg *r = &S->reg[i];
  uint64_t start = 0;
  proc_stat(getpid(), NULL, &start, NULL, NULL, 0);
  r->role = role;
  r->start = start;
  r->count = 0;
  __atomic_store_n(&r->weight, weight, __ATOMIC_SEQ_CST);
  __atomic_store_n(&r->pid, (int32_t)getpid(), __ATOMIC_SEQ_CST);
  return i;
}

/* Kills that landed (SIGKILL or SIGSEGV) on pid, and SIGSTOPs on it. */
static int killed(pid_t pid) {
  int n = 0, k = __atomic_load_n(&S->nkill, __ATOMIC_SEQ_CST);
  for (int i = 0; i < k && i < MAXKILL; i++) {
    int sig = __atomic_load_n(&S->kill[i].sig, __ATOMIC_SEQ_CST);
    if (S->kill[i].pid == pid && (sig == SIGKILL || sig == SIGSEGV)) n++;
  }
  return n;
}

static int stopped(pid_t pid) {
  int n = 0, k = __atomic_load_n(&S->nkill, __ATOMIC_SEQ_CST);
  for (int i = 0; i < k && i < MAXKILL; i++)
    if (S->kill[i].pid == pid && S->kill[i].sig == SIGSTOP) n++;
  return n;
}

/* Kills of any kind that landed on processes of a role (or all, role < 0). */
static int kills_on_role(int role, bool stops) {
  int n = 0, k = __atomic_load_n(&S->nkill, __ATOMIC_SEQ_CST);
  for (int i = 0; i < k && i < MAXKILL; i++) {
    int sig = S->kill[i].sig;
    if ((role < 0 || S->kill[i].role == role) &&
        (sig == SIGKILL || sig == SIGSEGV || (stops && sig == SIGSTOP)))
      n++;
  }
  return n;
}

/* Closes the killer's window and waits until it is not acting (so no
 * SIGSTOP is left without its SIGCONT). */
static void close_window(void) {
  st(&S->window, 0);
  while (ld(&S->killer_acts)) sleep_s(0.001);
}

/* ---- /proc views: fds, threads, children, and the hang report ---- */

static int list_fds(int *out, int max) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int n = 0, self = dirfd(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd == self) continue;
    if (n < max) out[n] = fd;
    n++;
  }
  closedir(d);
  return n;
}

static int list_threads(pid_t *tids, char (*names)[32], int max) {
  DIR *d = opendir("/proc/self/task");
  if (d == NULL) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    if (n < max) {
      tids[n] = atoi(e->d_name);
      char path[300];
      snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      ssize_t k = fd >= 0 ? read(fd, names[n], 31) : -1;
      if (fd >= 0) close(fd);
      if (k < 0) k = 0;
      names[n][k] = '\0';
      char *nl = strchr(names[n], '\n');
      if (nl) *nl = '\0';
    }
    n++;
  }
  closedir(d);
  return n;
}

/* Children of pid, from /proc (every state). */
static int list_children(pid_t parent, pid_t *out, int max) {
  DIR *d = opendir("/proc");
  if (d == NULL) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    pid_t pid = atoi(e->d_name), pp = 0;
    if (proc_stat(pid, NULL, NULL, &pp, NULL, 0) && pp == parent) {
      if (n < max) out[n] = pid;
      n++;
    }
  }
  closedir(d);
  return n;
}

static void read_small(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read(fd, buf, size - 1) : -1;
  if (fd >= 0) close(fd);
  if (n < 0) n = 0;
  buf[n] = '\0';
  char *nl = strchr(buf, '\n');
  if (nl) *nl = '\0';
}

/* One process's threads, each with its state and wait channel. */
static void dump_process(pid_t pid, const char *why) {
  char comm[64], state = '?';
  pid_t pp = 0;
  if (!proc_stat(pid, &state, NULL, &pp, comm, sizeof comm)) return;
  fprintf(stderr, "soak:   pid %d (%s) %s, parent %d, state %c\n", (int)pid, comm, why, (int)pp,
          state);
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
  DIR *d = opendir(dir);
  if (d == NULL) return;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    char path[400], wchan[64], tcomm[64], tstat[512];
    snprintf(path, sizeof path, "%s/%s/wchan", dir, e->d_name);
    read_small(path, wchan, sizeof wchan);
    snprintf(path, sizeof path, "%s/%s/comm", dir, e->d_name);
    read_small(path, tcomm, sizeof tcomm);
    snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
    read_small(path, tstat, sizeof tstat);
    char *paren = strrchr(tstat, ')');
    fprintf(stderr, "soak:     thread %s (%s) state %c wchan %s\n", e->d_name, tcomm,
            paren && paren[1] ? paren[2] : '?', wchan[0] ? wchan : "-");
  }
  closedir(d);
}

/* Every process of the tree under root, and every registered one. */
static void dump_tree(pid_t root) {
  pid_t todo[1024];
  int n = 0, at = 0;
  todo[n++] = root;
  while (at < n) {
    pid_t kids[256];
    int k = list_children(todo[at], kids, 256);
    dump_process(todo[at], at == 0 ? "(iteration root)" : "");
    at++;
    for (int i = 0; i < k && i < 256 && n < 1024; i++) todo[n++] = kids[i];
  }
  int nr = ld(&S->nreg);
  for (int i = 0; i < nr && i < MAXREG; i++) {
    pid_t pid = S->reg[i].pid;
    bool seen = false;
    for (int j = 0; j < n; j++) seen |= todo[j] == pid;
    if (!seen && pid > 0 && !pid_gone(pid)) dump_process(pid, role_names[S->reg[i].role]);
  }
}

/* ---- the killer (a thread of the controller) ---- */

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
static int pidfd_signal(int fd, int sig) { return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0); }

static int reg_fd[MAXREG]; /* the killer's pidfds, -1: not open, -2: not to be used */
static atomic_int killer_quit;
static atomic_long total_kills, total_by[3]; /* SIGKILL, SIGSEGV, SIGSTOP/CONT */
static long max_kills;
static pthread_mutex_t killer_mu = PTHREAD_MUTEX_INITIALIZER;

/* A pidfd for registry entry i, if its process is the one that registered. */
static int reg_pidfd(int i) {
  if (reg_fd[i] != -1) return reg_fd[i];
  struct reg *r = &S->reg[i];
  pid_t pid = __atomic_load_n(&r->pid, __ATOMIC_SEQ_CST);
  if (pid <= 0) return -1; /* not yet filled in */
  int fd = pidfd_open_(pid);
  char state;
  uint64_t start;
  if (fd >= 0 && (!proc_stat(pid, &state, &start, NULL, NULL, 0) || start != r->start ||
                  state == 'Z')) {
    close(fd);
    fd = -1;
  }
  reg_fd[i] = fd >= 0 ? fd : -2;
  return reg_fd[i];
}

static void killer_reset(void) {
  for (int i = 0; i < MAXREG; i++) {
    if (reg_fd[i] >= 0) close(reg_fd[i]);
    reg_fd[i] = -1;
  }
}

/* Sends SIGKILL (and SIGCONT, for a stopped one) to every registered process
 * still alive: the end of a hung iteration, or stragglers. */
static int kill_registered(void) {
  int n = 0, nr = ld(&S->nreg);
  for (int i = 0; i < nr && i < MAXREG; i++) {
    struct reg *r = &S->reg[i];
    if (r->pid <= 0 || r->role == R_DRIVER) continue;
    int fd = pidfd_open_(r->pid);
    uint64_t start;
    char state;
    if (fd < 0) continue;
    if (proc_stat(r->pid, &state, &start, NULL, NULL, 0) && start == r->start && state != 'Z') {
      pidfd_signal(fd, SIGKILL);
      pidfd_signal(fd, SIGCONT);
      n++;
    }
    close(fd);
  }
  return n;
}

static atomic_int killer_iteration; /* bumped by the controller for each iteration */

static void *killer_main(void *arg) {
  (void)arg;
  int seen = -1;
  while (!atomic_load(&killer_quit)) {
    if (atomic_load(&killer_iteration) != seen) {
      /* Each iteration's kills follow from its seed, so a run can be replayed. */
      seen = atomic_load(&killer_iteration);
      rng_seed(S->iter_seed ^ 0x6b696c6cull);
    }
    double gap = (double)S->kill_gap_ms / 1000.0 * -log(1.0 - rndf() * 0.999);
    sleep_s(gap > 0.5 ? 0.5 : gap);
    st(&S->killer_acts, 1);
    pthread_mutex_lock(&killer_mu);
    if (!ld(&S->window) || !S->kills_on || (max_kills > 0 && total_kills >= max_kills)) {
      pthread_mutex_unlock(&killer_mu);
      st(&S->killer_acts, 0);
      continue;
    }
    int nr = ld(&S->nreg), total = 0;
    if (nr > MAXREG) nr = MAXREG;
    for (int i = 0; i < nr; i++) total += __atomic_load_n(&S->reg[i].weight, __ATOMIC_SEQ_CST);
    int pick = -1;
    for (int tries = 0; tries < 8 && total > 0 && pick < 0; tries++) {
      int w = (int)rndn((uint32_t)total);
      for (int i = 0; i < nr; i++) {
        w -= __atomic_load_n(&S->reg[i].weight, __ATOMIC_SEQ_CST);
        if (w < 0) {
          char state = 'Z';
          proc_stat(S->reg[i].pid, &state, NULL, NULL, NULL, 0);
          if (reg_pidfd(i) >= 0 && state != 'Z') pick = i; /* a zombie cannot be killed */
          break;
        }
      }
    }
    int k = pick >= 0 ? __atomic_load_n(&S->nkill, __ATOMIC_SEQ_CST) : MAXKILL;
    if (k >= MAXKILL) {
      pthread_mutex_unlock(&killer_mu);
      st(&S->killer_acts, 0);
      continue;
    }
    double u = rndf();
    int sig = u < 0.6 ? SIGKILL : u < 0.8 ? SIGSEGV : SIGSTOP;
    struct killrec *kr = &S->kill[k];
    kr->pid = S->reg[pick].pid;
    kr->role = S->reg[pick].role;
    kr->reg = pick;
    double v = rndf();
    kr->stop_s = sig != SIGSTOP ? 0 : v < 0.7 ? 0.001 + 0.05 * rndf()
                                  : v < 0.97 ? 0.05 + 0.2 * rndf() : 1.2 + 0.4 * rndf();
    __atomic_store_n(&kr->sig, sig, __ATOMIC_SEQ_CST);
    __atomic_store_n(&S->nkill, k + 1, __ATOMIC_SEQ_CST);
    if (pidfd_signal(reg_fd[pick], sig) != 0) {
      __atomic_store_n(&kr->sig, 0, __ATOMIC_SEQ_CST); /* already gone */
      close(reg_fd[pick]);
      reg_fd[pick] = -2;
    } else {
      total_kills++;
      total_by[sig == SIGKILL ? 0 : sig == SIGSEGV ? 1 : 2]++;
      if (sig == SIGSTOP) {
        sleep_s(kr->stop_s);
        pidfd_signal(reg_fd[pick], SIGCONT);
      } else {
        close(reg_fd[pick]);
        reg_fd[pick] = -2;
      }
    }
    pthread_mutex_unlock(&killer_mu);
    st(&S->killer_acts, 0);
  }
  return NULL;
}

/* ---- the driver's own leftovers: fds, threads, children ---- */

struct baseline {
  int nfd;
  int fds[256];
  int nthr;
  char names[64][32];
  pid_t tids[64];
};

static void take_baseline(struct baseline *b) {
  b->nfd = list_fds(b->fds, 256);
  b->nthr = list_threads(b->tids, b->names, 64);
}

/* No fd, thread or child may be left once the scenario has cleaned up.
 * weft-forker, weft's one long-lived forking thread, may stay. */
static void check_leftovers(const struct baseline *b, double wait) {
  double end = now_s() + wait;
  int fds[256], nfd, nthr, nkid;
  pid_t tids[64], kids[64];
  char names[64][32];
  for (;;) {
    nfd = list_fds(fds, 256);
    nthr = list_threads(tids, names, 64);
    nkid = list_children(getpid(), kids, 64);
    int extra_thr = 0;
    for (int i = 0; i < nthr && i < 64; i++) {
      bool known = strcmp(names[i], "weft-forker") == 0;
      for (int j = 0; j < b->nthr && !known; j++) known = tids[i] == b->tids[j];
      extra_thr += !known;
    }
    if ((nfd <= b->nfd && extra_thr == 0 && nkid == 0) || now_s() > end) {
      if (nfd > b->nfd) {
        for (int i = 0; i < nfd && i < 256; i++) {
          bool known = false;
          for (int j = 0; j < b->nfd && !known; j++) known = fds[i] == b->fds[j];
          if (known) continue;
          char path[64], target[256] = "?";
          snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
          ssize_t k = readlink(path, target, sizeof target - 1);
          if (k > 0) target[k] = '\0';
          fail("fd %d (%s) leaked: %d fds open, %d before", fds[i], target, nfd, b->nfd);
        }
      }
      for (int i = 0; i < nthr && i < 64; i++) {
        bool known = strcmp(names[i], "weft-forker") == 0;
        for (int j = 0; j < b->nthr && !known; j++) known = tids[i] == b->tids[j];
        if (!known) fail("thread %d (%s) leaked", (int)tids[i], names[i]);
      }
      for (int i = 0; i < nkid && i < 64; i++) {
        char state = '?', comm[64] = "?";
        proc_stat(kids[i], &state, NULL, NULL, comm, sizeof comm);
        fail("child %d (%s) left behind in state %c%s", (int)kids[i], comm, state,
             state == 'Z' ? " (a zombie)" : "");
      }
      return;
    }
    sleep_s(0.01);
  }
}

/* The shared primitives' words, for a hang report of the lock scenarios. */
static void describe_sync(void) {
  struct lock_area *L = &S->u.lock;
  const weft_lock *l = S->scenario == SC_LOCK ? &L->lock
                       : S->scenario == SC_RLOCK ? &L->rlock.lock
                       : S->scenario == SC_COND ? &L->cond.own.lock
                                                : &L->barrier.lock;
  fprintf(stderr,
          "soak:   lock word %#x (holder pid %u) waiters %u seq %u; semaphore value %u waiters %u; "
          "barrier count %u generation %u draining %u broken %u\n",
          l->word, l->word & 0x3fffffffu, l->waiters, l->seq, L->sem.value, L->sem.waiters,
          L->barrier.count, L->barrier.generation, L->barrier.draining, L->barrier.broken);
}

/* Joins and closes a weft child within bound; a child that will not end is
 * a hang: reported with its threads, then killed. Returns its exit code. */
static int finish(weft_process p, double bound, const char *what) {
  double t0 = now_s();
  int r = weft_process_join(p, bound);
  if (r == WEFT_ETIMEDOUT) {
    fail("hang: %s (pid %d) did not end within %.1f s; its threads:", what,
         (int)weft_process_pid(p), bound);
    dump_tree(weft_process_pid(p));
    if (S->scenario >= SC_LOCK && S->scenario <= SC_BARRIER) describe_sync();
    weft_process_kill(p);
    kill(weft_process_pid(p), SIGCONT);
    r = weft_process_join(p, WEFT_FOREVER);
  } else {
    check_bound(t0, bound, what);
  }
  int code = -1000;
  if (r == 0) weft_process_exitcode(p, &code);
  weft_process_close(p);
  return code;
}

/* ==== scenario: process pools ==== */

struct task_arg {
  uint32_t id;
  uint32_t sleep_us;
  uint64_t x;
};

static int my_reg = -1; /* a worker's registry entry */
static long maxtasks;

static int worker_init(void *arg) {
  (void)arg;
  my_reg = reg_self(R_WORKER, 1);
  return 0;
}

static uint64_t expect_of(uint64_t x) { return mix64(x ^ 0x5eed); }

static int soak_task(const void *arg, size_t len, void *result, size_t *rlen) {
  struct pool_area *P = &S->u.pool;
  struct task_arg t;
  if (len != sizeof t || *rlen < 8) return 99;
  memcpy(&t, arg, sizeof t);
  if (t.id >= MAXTASK) return 98;
  uint32_t k = __atomic_fetch_add(&P->exec[t.id], 1, __ATOMIC_SEQ_CST);
  if (k < 2) __atomic_store_n(&P->exec_pid[t.id][k], (int32_t)getpid(), __ATOMIC_SEQ_CST);
  if (my_reg >= 0) {
    __atomic_add_fetch(&S->reg[my_reg].count, 1, __ATOMIC_SEQ_CST);
    if (inject_once(INJ_MAXTASKS, &P->injected))
      __atomic_add_fetch(&S->reg[my_reg].count, (uint64_t)maxtasks, __ATOMIC_SEQ_CST);
  }
  if (t.id == 3 && inject_once(INJ_DOUBLE_RUN, &P->injected))
    __atomic_add_fetch(&P->exec[t.id], 1, __ATOMIC_SEQ_CST);
  if (t.id == 5 && inject_once(INJ_EXTRA_FAILURE, &P->injected)) _exit(3);
  sleep_s(t.sleep_us / 1e6);
  uint64_t r = expect_of(t.x);
  if (t.id == 4 && inject_once(INJ_WRONG_RESULT, &P->injected)) r ^= 1;
  if (k < 2) __atomic_store_n(&P->exec_done[t.id][k], 1, __ATOMIC_SEQ_CST);
  memcpy(result, &r, 8);
  *rlen = 8;
  return 0;
}

struct cbc {
  int ok, err;
};

static void cb_ok(weft_future f, void *arg) {
  (void)f;
  struct cbc *c = arg;
  int n = __atomic_add_fetch(&c->ok, 1, __ATOMIC_SEQ_CST);
  if (inject_once(INJ_CALLBACK_TWICE, &S->u.pool.injected))
    n = __atomic_add_fetch(&c->ok, 1, __ATOMIC_SEQ_CST);
  if (n + __atomic_load_n(&c->err, __ATOMIC_SEQ_CST) > 1) fail("a future's callbacks ran %d times", n);
}

static void cb_err(weft_future f, void *arg) {
  (void)f;
  struct cbc *c = arg;
  int n = __atomic_add_fetch(&c->err, 1, __ATOMIC_SEQ_CST);
  if (n + __atomic_load_n(&c->ok, __ATOMIC_SEQ_CST) > 1) fail("a future's callbacks ran %d times", n);
}

struct src {
  struct task_arg *items;
  size_t n, next;
};

static bool imap_source(void *item, void *arg) {
  struct src *s = arg;
  if (s->next >= s->n) return false;
  memcpy(item, &s->items[s->next++], sizeof(struct task_arg));
  return true;
}

/* Checks one task's outcome; counts failures by kind. */
struct pool_tally {
  int died, timedout, cancelled, ok;
};
static struct pool_tally last_tally; /* for the verbose line */

static void check_task(int mode, bool timeouts, const struct task_arg *t, int code,
                       uint64_t got, bool cancel_won, struct pool_tally *tally) {
  struct pool_area *P = &S->u.pool;
  uint32_t ex = __atomic_load_n(&P->exec[t->id], __ATOMIC_SEQ_CST);
  pid_t first = P->exec_pid[t->id][0];
  if (ex > 1) fail("task %u ran %u times (first by pid %d)", t->id, ex, (int)first);
  if (cancel_won && (code != WEFT_ECANCELED || ex != 0))
    fail("task %u: cancel returned 0, yet it ended with %s after %u executions", t->id,
         weft_err_name(code), ex);
  switch (code) {
    case 0:
      tally->ok++;
      if (got != expect_of(t->x)) fail("task %u: wrong result %#llx", t->id, (unsigned long long)got);
      if (ex == 0) fail("task %u has a result but never ran", t->id);
      break;
    case WEFT_EWORKERDIED:
      tally->died++;
      /* Its worker was killed: by the soak, or by the pool for the time
       * limit of the task before it, once the soak had stopped it. */
      if (ex >= 1 && first != 0 && killed(first) == 0 && !(timeouts && stopped(first) > 0))
        fail("task %u failed with WEFT_EWORKERDIED, but its worker %d was never killed "
             "(%u executions, the first %s, that worker %s, stopped %d times)",
             t->id, (int)first, ex, P->exec_done[t->id][0] ? "finished" : "unfinished",
             pid_gone(first) ? "gone" : "alive", stopped(first));
      break;
    case WEFT_ETASKTIMEOUT:
      tally->timedout++;
      if (!timeouts) fail("task %u: WEFT_ETASKTIMEOUT without a time limit", t->id);
      else if (ex >= 1 && first != 0 && stopped(first) == 0)
        fail("task %u timed out, but its worker %d was never stopped", t->id, (int)first);
      break;
    case WEFT_ECANCELED:
      tally->cancelled++;
      if (!cancel_won && mode != PM_TERMINATE) fail("task %u cancelled, yet no cancel won", t->id);
      break;
    default:
      fail("task %u ended with %s: %s", t->id, weft_err_name(code), weft_last_error());
  }
}

static int scenario_pool(void) {
  int mode = S->mode;
  int workers = rndn(4) == 0 ? 3 : 2;
  bool timeouts = rndn(5) == 0;
  maxtasks = mode == PM_MAXTASKS ? 1 + (long)rndn(4) : 0;
  double bound = S->call_bound;
  bool use_map = mode == PM_MAP || (mode == PM_MAXTASKS && rndn(2));
  long chunk = use_map && rndn(3) == 0 ? 1 + (long)rndn(3) : 1;
  /* Enough work to last about the phase: tasks sleep 2-30 ms. */
  size_t n = (size_t)(S->phase * workers / 0.016);
  if (n < 20) n = 20;
  if (n > MAXTASK) n = MAXTASK;
  static struct task_arg items[MAXTASK];
  for (size_t i = 0; i < n; i++)
    items[i] = (struct task_arg){(uint32_t)i, 2000 + rndn(28000), rnd()};
  static int codes[MAXTASK];
  static uint64_t got[MAXTASK];
  static bool cancel_won[MAXTASK];
  memset(cancel_won, 0, sizeof cancel_won);
  memset(got, 0, sizeof got);
  for (size_t i = 0; i < n; i++) codes[i] = 1;

  weft_pool pool = weft_process_pool_new(.workers = workers, .initializer = worker_init,
                                         .maxtasksperchild = maxtasks,
                                         .task_timeout = timeouts ? 1.0 : 0);
  if (pool.id == 0) {
    fail("weft_process_pool_new: %s", weft_last_error());
    return 0;
  }
  st(&S->window, 1);
  double t0 = now_s();
  bool joined = false;
  if (use_map) {
    int r = weft_pool_map(pool, soak_task, items, sizeof items[0], n, got, sizeof got[0],
                          .chunksize = chunk, .errors = codes);
    check_bound(t0, bound * 4, "weft_pool_map");
    if (r != 0 && r != WEFT_EWORKERDIED && r != WEFT_ETASKTIMEOUT)
      fail("weft_pool_map returned %s: %s", weft_err_name(r), weft_last_error());
    struct pool_tally tally = {0};
    for (size_t i = 0; i < n; i++) check_task(mode, timeouts, &items[i], codes[i], got[i], false, &tally);
    close_window();
    last_tally = tally;
    int kills = kills_on_role(R_WORKER, false), stops = kills_on_role(R_WORKER, true) - kills;
    int deaths = kills + (timeouts ? stops : 0); /* a stop can cost a limit's kill */
    if (tally.died > deaths * chunk)
      fail("map: %d items failed with WEFT_EWORKERDIED, more than %d worker deaths x chunksize %ld",
           tally.died, deaths, chunk);
    if (tally.timedout > stops * chunk)
      fail("map: %d items timed out, more than %d stops x chunksize %ld", tally.timedout, stops, chunk);
  } else if (mode == PM_IMAP) {
    struct src s = {items, n, 0};
    weft_imap *it = weft_pool_imap_unordered(pool, soak_task, imap_source, &s, sizeof items[0], 8);
    if (it == NULL) {
      fail("weft_pool_imap_unordered: %s", weft_last_error());
    } else {
      size_t count = 0;
      for (;;) {
        size_t index = 0;
        uint64_t res = 0;
        double t1 = now_s();
        int r = weft_imap_next(it, bound, &index, &res);
        check_bound(t1, bound, "weft_imap_next");
        if (r == WEFT_EEOF) break;
        if (r == WEFT_ETIMEDOUT) {
          fail("weft_imap_next: no result within %.1f s", bound);
          break;
        }
        if (index >= n || codes[index] != 1) {
          fail("imap_unordered gave item %zu %s", index, index >= n ? "out of range" : "twice");
          continue;
        }
        codes[index] = r;
        got[index] = res;
        count++;
      }
      weft_imap_free(it);
      if (count != n) fail("imap_unordered gave %zu of %zu items", count, n);
    }
    close_window();
    struct pool_tally tally = {0};
    for (size_t i = 0; i < n; i++)
      if (codes[i] != 1) check_task(mode, timeouts, &items[i], codes[i], got[i], false, &tally);
    last_tally = tally;
    int kills = kills_on_role(R_WORKER, false);
    int deaths = kills + (timeouts ? kills_on_role(R_WORKER, true) - kills : 0);
    if (tally.died > deaths)
      fail("imap: %d items failed with WEFT_EWORKERDIED after %d worker deaths", tally.died, deaths);
  } else {
    /* apply_async with callbacks and cancels; close or terminate in flight */
    static struct cbc cbs[MAXTASK];
    memset(cbs, 0, sizeof cbs);
    static weft_future fs[MAXTASK];
    for (size_t i = 0; i < n; i++) {
      fs[i] = weft_pool_apply_async(pool, soak_task, &items[i], sizeof items[i], .callback = cb_ok,
                                    .error_callback = cb_err, .callback_arg = &cbs[i]);
      if (fs[i].id == 0) fail("weft_pool_apply_async: %s", weft_last_error());
    }
    sleep_s(0.05 + 0.5 * rndf());
    if (mode == PM_APPLY || mode == PM_MAXTASKS) {
      for (size_t i = 0; i < n; i++)
        if (rndn(8) == 0 && fs[i].id) cancel_won[i] = weft_future_cancel(fs[i]) == 0;
    } else if (mode == PM_CLOSE) {
      weft_pool_close(pool);
      double t1 = now_s();
      int r = weft_pool_join(pool, bound * 4);
      check_bound(t1, bound * 4, "weft_pool_join after close");
      if (r != 0) fail("weft_pool_join after close: %s", weft_err_name(r));
      joined = r == 0;
    } else {
      double t1 = now_s();
      int r = weft_pool_terminate(pool);
      check_bound(t1, bound, "weft_pool_terminate");
      if (r != 0) fail("weft_pool_terminate: %s", weft_err_name(r));
    }
    struct pool_tally tally = {0};
    for (size_t i = 0; i < n; i++) {
      if (fs[i].id == 0) continue;
      const void *data = NULL;
      size_t len = 0;
      double t1 = now_s();
      int r = weft_future_result_bytes(fs[i], bound * 4, &data, &len);
      check_bound(t1, bound * 4, "weft_future_result_bytes");
      if (r == WEFT_ETIMEDOUT) {
        fail("task %zu: no outcome within %.1f s", i, bound * 4);
        continue;
      }
      if (r == 0 && len == 8) memcpy(&got[i], data, 8);
      else if (r == 0) fail("task %zu: result of %zu bytes", i, len);
      codes[i] = r;
    }
    close_window();
    for (size_t i = 0; i < n; i++)
      if (fs[i].id) check_task(mode, timeouts, &items[i], codes[i], got[i], cancel_won[i], &tally);
    last_tally = tally;
    int kills = kills_on_role(R_WORKER, false), stops = kills_on_role(R_WORKER, true) - kills;
    int deaths = kills + (timeouts ? stops : 0);
    if (tally.died > deaths)
      fail("%d tasks failed with WEFT_EWORKERDIED after %d worker deaths", tally.died, deaths);
    if (tally.timedout > stops) fail("%d tasks timed out after %d stops", tally.timedout, stops);
    /* Callbacks: exactly one per future, the right kind. */
    double end = now_s() + bound;
    for (size_t i = 0; i < n; i++) {
      if (fs[i].id == 0) continue;
      while (__atomic_load_n(&cbs[i].ok, __ATOMIC_SEQ_CST) + __atomic_load_n(&cbs[i].err, __ATOMIC_SEQ_CST) == 0 &&
             now_s() < end)
        sleep_s(0.002);
      int ok = __atomic_load_n(&cbs[i].ok, __ATOMIC_SEQ_CST), err = __atomic_load_n(&cbs[i].err, __ATOMIC_SEQ_CST);
      if (ok + err != 1 || (ok == 1) != (codes[i] == 0))
        fail("task %zu (%s): %d callbacks and %d error callbacks", i,
             codes[i] == 0 ? "succeeded" : weft_err_name(codes[i]), ok, err);
    }
    for (size_t i = 0; i < n; i++)
      if (fs[i].id) weft_future_close(fs[i]);
  }
  close_window();
  if (!joined) {
    weft_pool_close(pool);
    double t1 = now_s();
    int r = weft_pool_join(pool, bound * 4);
    check_bound(t1, bound * 4, "weft_pool_join");
    if (r != 0) fail("weft_pool_join: %s", weft_err_name(r));
  }
  int r = weft_pool_free(pool);
  if (r != 0) fail("weft_pool_free: %s", weft_err_name(r));
  if (maxtasks > 0) {
    int nr = ld(&S->nreg);
    for (int i = 0; i < nr && i < MAXREG; i++)
      if (S->reg[i].role == R_WORKER && S->reg[i].count > (uint64_t)(maxtasks * chunk))
        fail("worker %d began %llu items, above maxtasksperchild %ld x chunksize %ld",
             (int)S->reg[i].pid, (unsigned long long)S->reg[i].count, maxtasks, chunk);
  }
  if (S->verbose)
    printf("soak:   pool %s: %zu tasks, %d workers%s%s: %d ok, %d worker died, %d timed out, "
           "%d cancelled\n",
           pool_mode_names[mode], n, workers, timeouts ? ", time limit" : "",
           maxtasks ? ", maxtasksperchild" : "", last_tally.ok, last_tally.died, last_tally.timedout,
           last_tally.cancelled);
  return 0;
}

/* ==== scenario: process queues ==== */

struct msg_hdr {
  uint32_t prod, seq, len, csum;
  uint64_t pad;
};

static uint32_t checksum(const struct msg_hdr *h, const unsigned char *payload, size_t n) {
  uint32_t c = 2166136261u;
  uint32_t head[3] = {h->prod, h->seq, h->len};
  const unsigned char *hp = (const unsigned char *)head;
  for (size_t i = 0; i < sizeof head; i++) c = (c ^ hp[i]) * 16777619u;
  for (size_t i = 0; i < n; i++) c = (c ^ payload[i]) * 16777619u;
  return c;
}

static weft_mpqueue *the_queue;
static unsigned char qbuf[MAXMSG + 64];

static size_t pick_len(void) {
  uint32_t u = rndn(100);
  if (u < 70) return sizeof(struct msg_hdr) + rndn(490);
  if (u < 95) return 512 + rndn(8 * 1024 - 512);
  return 8 * 1024 + rndn(MAXMSG - 8 * 1024 + 1);
}

static int producer_main(void *arg) {
  struct queue_area *Q = &S->u.queue;
  int id = (int)(intptr_t)arg;
  reg_self(R_PRODUCER, 1);
  rng_seed(S->iter_seed ^ (uint64_t)id * 7919 ^ 0x70726f64);
  for (uint32_t seq = 0; seq < MAXSEQ && !ld(&Q->stop); seq++) {
    size_t len = pick_len();
    struct msg_hdr h = {(uint32_t)id, seq, (uint32_t)len, 0, 0};
    uint64_t x = mix64(((uint64_t)id << 32) | seq);
    unsigned char *p = qbuf + sizeof h;
    for (size_t i = 0; i < len - sizeof h; i++) {
      if ((i & 7) == 0) x = mix64(x);
      p[i] = (unsigned char)(x >> ((i & 7) * 8));
    }
    h.csum = checksum(&h, p, len - sizeof h);
    bool dup = false;
    if (seq == 5 && len > sizeof h + 8 && inject_once(INJ_TORN_MESSAGE, &Q->injected)) p[3] ^= 0x40;
    if (seq == 5 && inject_once(INJ_DUPLICATE_MESSAGE, &Q->injected)) dup = true;
    if (seq == 5 && inject_once(INJ_INVENTED_MESSAGE, &Q->injected)) h.seq = seq + 1000;
    memcpy(qbuf, &h, sizeof h);
    __atomic_store_n(&Q->attempted[id], seq + 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&Q->in_put[id], 1, __ATOMIC_SEQ_CST);
    for (int copy = 0; copy < (dup ? 2 : 1); copy++) {
      double t0 = now_s();
      int r = weft_mpqueue_put(the_queue, qbuf, len, S->call_bound);
      check_bound(t0, S->call_bound + 0.5, "weft_mpqueue_put");
      if (r != 0) {
        fail("producer %d: put of message %u (%zu bytes): %s", id, seq, len, weft_err_name(r));
        return 1;
      }
    }
    __atomic_store_n(&Q->acked[id], seq + 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&Q->in_put[id], 0, __ATOMIC_SEQ_CST);
    if (rndn(16) == 0) sleep_s(0.0005 * rndf());
  }
  return 0;
}

static void record_message(int consumer, const unsigned char *buf, size_t len) {
  struct queue_area *Q = &S->u.queue;
  struct msg_hdr h;
  if (len < sizeof h) {
    fail("consumer %d: message of %zu bytes, shorter than its header", consumer, len);
    return;
  }
  memcpy(&h, buf, sizeof h);
  int nprod = ld(&Q->nprod);
  if (h.len != len) {
    fail("consumer %d: torn message: %zu bytes, header says %u (producer %u seq %u)", consumer, len,
         h.len, h.prod, h.seq);
    return;
  }
  if ((int)h.prod >= nprod || h.seq >= MAXSEQ ||
      h.seq >= __atomic_load_n(&Q->attempted[h.prod], __ATOMIC_SEQ_CST)) {
    fail("consumer %d: invented message: producer %u seq %u was never put", consumer, h.prod, h.seq);
    return;
  }
  if (checksum(&h, buf + sizeof h, len - sizeof h) != h.csum) {
    fail("consumer %d: torn message: producer %u seq %u (%zu bytes) fails its checksum", consumer,
         h.prod, h.seq, len);
    return;
  }
  if (h.prod == 0 && h.seq == 7 && inject_once(INJ_LOST_MESSAGE, &Q->injected)) return;
  uint8_t old = __atomic_fetch_add(&Q->seen[h.prod][h.seq], 1, __ATOMIC_SEQ_CST);
  if (old != 0) fail("consumer %d: duplicate message: producer %u seq %u delivered %d times", consumer,
                     h.prod, h.seq, old + 1);
}

static unsigned char cbuf[MAXMSG + 64];

static int consumer_main(void *arg) {
  struct queue_area *Q = &S->u.queue;
  int id = (int)(intptr_t)arg;
  reg_self(R_CONSUMER, 1);
  for (;;) {
    __atomic_store_n(&Q->in_get[id], 1, __ATOMIC_SEQ_CST);
    size_t len = 0;
    double t0 = now_s();
    int r = weft_mpqueue_get(the_queue, cbuf, sizeof cbuf, &len, 0.2);
    check_bound(t0, 0.2 + S->call_bound, "weft_mpqueue_get");
    if (r == 0) record_message(id, cbuf, len);
    __atomic_store_n(&Q->in_get[id], 0, __ATOMIC_SEQ_CST);
    if (r == WEFT_ECLOSED) return 0;
    if (r != 0 && r != WEFT_EEMPTY) {
      fail("consumer %d: get: %s", id, weft_err_name(r));
      return 1;
    }
  }
}

enum { NPROD = 2, NCONS = 2 };

static int scenario_queue(void) {
  struct queue_area *Q = &S->u.queue;
  size_t capacity = rndn(2) ? (size_t)256 << 10 : (size_t)1 << 20;
  long maxsize = rndn(3) == 0 ? 8 + (long)rndn(64) : 0;
  the_queue = weft_mpqueue_new(.capacity = capacity, .maxsize = maxsize, .name = "soak");
  if (the_queue == NULL) {
    fail("weft_mpqueue_new: %s", weft_last_error());
    return 0;
  }
  struct slot {
    weft_process p;
    int id;
    bool done;
  } prods[NPROD], cons[NCONS];
  int ncons_ids = 0, put_allowance = 0, get_allowance = 0;
  for (int i = 0; i < NPROD + NCONS; i++) {
    bool is_prod = i < NPROD;
    struct slot *s = is_prod ? &prods[i] : &cons[i - NPROD];
    s->id = is_prod ? __atomic_fetch_add(&Q->nprod, 1, __ATOMIC_SEQ_CST) : ncons_ids++;
    s->done = false;
    s->p = weft_process_new(is_prod ? producer_main : consumer_main, .arg = (void *)(intptr_t)s->id,
                            .daemon = true);
    if (weft_process_start(s->p) != 0) fail("start: %s", weft_last_error());
  }
  st(&S->window, 1);
  double end = now_s() + S->phase;
  bool stopping = false;
  for (;;) {
    if (!stopping && now_s() > end) {
      close_window();
      st(&Q->stop, 1);
      stopping = true;
    }
    int alive = 0;
    for (int i = 0; i < NPROD + NCONS; i++) {
      bool is_prod = i < NPROD;
      struct slot *s = is_prod ? &prods[i] : &cons[i - NPROD];
      if (s->done) continue;
      if (weft_process_is_alive(s->p)) {
        alive += is_prod;
        continue;
      }
      int code = 0;
      weft_process_exitcode(s->p, &code);
      pid_t pid = weft_process_pid(s->p);
      weft_process_close(s->p);
      if (code == -SIGKILL || code == -SIGSEGV) {
        if (killed(pid) == 0) fail("%s %d died with signal %d that no one sent", is_prod ? "producer" : "consumer", (int)pid, -code);
        if (is_prod) put_allowance += (int)__atomic_load_n(&Q->in_put[s->id], __ATOMIC_SEQ_CST);
        else get_allowance += (int)__atomic_load_n(&Q->in_get[s->id], __ATOMIC_SEQ_CST);
      } else if (code != 0) {
        fail("%s %d exited with %d", is_prod ? "producer" : "consumer", (int)pid, code);
      }
      bool again = is_prod ? (code != 0 && !stopping && ld(&Q->nprod) < MAXPROD)
                           : (ncons_ids < MAXPROD && !stopping);
      if (!again) {
        s->done = true;
        continue;
      }
      s->id = is_prod ? __atomic_fetch_add(&Q->nprod, 1, __ATOMIC_SEQ_CST) : ncons_ids++;
      s->p = weft_process_new(is_prod ? producer_main : consumer_main, .arg = (void *)(intptr_t)s->id,
                              .daemon = true);
      if (weft_process_start(s->p) != 0) fail("start: %s", weft_last_error());
      alive += is_prod;
    }
    if (stopping && alive == 0) break;
    if (stopping && now_s() > end + S->call_bound * 2) {
      fail("hang: producers did not finish within %.1f s of the stop", S->call_bound * 2);
      for (int i = 0; i < NPROD; i++)
        if (!prods[i].done) {
          dump_tree(weft_process_pid(prods[i].p));
          finish(prods[i].p, 0.01, "producer");
          prods[i].done = true;
        }
      break;
    }
    sleep_s(0.005);
  }
  weft_mpqueue_close(the_queue);
  for (int i = 0; i < NCONS; i++)
    if (!cons[i].done) {
      pid_t pid = weft_process_pid(cons[i].p);
      int code = finish(cons[i].p, S->call_bound * 2, "consumer");
      if ((code == -SIGKILL || code == -SIGSEGV) && killed(pid) > 0)
        get_allowance += (int)__atomic_load_n(&Q->in_get[cons[i].id], __ATOMIC_SEQ_CST);
      else if (code != 0)
        fail("consumer %d exited with %d", (int)pid, code);
    }
  size_t len;
  while (weft_mpqueue_get(the_queue, cbuf, sizeof cbuf, &len, 0) == 0) record_message(-1, cbuf, len);
  /* Every acknowledged put delivered once, up to one loss per consumer
   * killed inside a get; nothing unacknowledged beyond one per producer
   * killed inside a put. */
  long lost = 0, extra = 0, acked = 0, delivered = 0;
  int nprod = ld(&Q->nprod);
  for (int p = 0; p < nprod; p++) {
    uint32_t ack = Q->acked[p], att = Q->attempted[p];
    acked += ack;
    for (uint32_t s = 0; s < att && s < MAXSEQ; s++) {
      delivered += Q->seen[p][s];
      if (s < ack && Q->seen[p][s] == 0) {
        if (lost < 3 && lost >= get_allowance)
          fail("message producer %d seq %u was acknowledged but never delivered", p, s);
        lost++;
      }
      if (s >= ack && Q->seen[p][s]) extra++;
    }
  }
  if (lost > get_allowance)
    fail("%ld acknowledged messages lost, but only %d consumers were killed inside a get", lost,
         get_allowance);
  if (extra > put_allowance)
    fail("%ld unacknowledged messages delivered, but only %d producers were killed inside a put",
         extra, put_allowance);
  if (delivered != acked - lost + extra)
    fail("counts do not add up: %ld delivered, %ld acknowledged - %ld lost + %ld unacknowledged",
         delivered, acked, lost, extra);
  weft_mpqueue_free(the_queue);
  if (S->verbose)
    printf("soak:   queue: %ld messages from %d producers, %ld lost in killed gets, %ld from killed puts\n",
           delivered, nprod, lost, extra);
  return 0;
}

/* ==== scenarios: Lock, RLock, Condition, Semaphore, Barrier ==== */

static int64_t count_sum(void) {
  struct lock_area *L = &S->u.lock;
  int64_t s = 0;
  for (int i = 0; i < MAXSLOT; i++) s += __atomic_load_n(&L->cnt[i], __ATOMIC_SEQ_CST);
  return s;
}

static bool consistent(void) {
  struct lock_area *L = &S->u.lock;
  return L->a == L->b && L->a == count_sum();
}

/* The lock came with WEFT_EOWNERDEAD (or, after a Condition wait, a torn
 * state appeared): the dead holder must be a process the killer killed,
 * and the state must be one a kill part-way through an update leaves. */
static void repair(int slot, const char *how) {
  struct lock_area *L = &S->u.lock;
  pid_t h = __atomic_load_n(&L->holder, __ATOMIC_SEQ_CST);
  if (h == (pid_t)getpid()) h = 0;
  if (h != 0) {
    if (killed(h) == 0)
      fail("%s names holder %d, which was not killed (slot %d)", how, (int)h, slot);
  } else {
    /* Killed between its acquire and recording itself: one of the killed
     * threads was acquiring or holding. */
    bool found = false;
    for (int i = 0; i < MAXSLOT && !found; i++) {
      int s = __atomic_load_n(&L->st[i], __ATOMIC_SEQ_CST);
      found = (s == ST_ACQ || s == ST_HELD) && L->pid[i] != 0 && killed(L->pid[i]) > 0;
    }
    if (!found) fail("%s with no holder recorded and no killed acquirer (slot %d)", how, slot);
  }
  int64_t sum = count_sum();
  if (L->a == L->b && L->a == sum) return;
  if (L->b == sum && (L->a == sum + 1 || L->a == sum - 1)) {
    L->a = L->b; /* killed after a, before its count: undo */
  } else if (L->a == sum && (L->b == sum - 1 || L->b == sum + 1)) {
    L->b = L->a; /* killed after its count, before b: complete */
  } else {
    fail("%s: unrepairable state a=%lld b=%lld counts=%lld", how, (long long)L->a, (long long)L->b,
         (long long)sum);
    L->a = L->b = sum;
  }
  __atomic_add_fetch(&L->repaired, 1, __ATOMIC_SEQ_CST);
}

/* After an acquire returned r: check or repair, and record the holder. */
static void after_acquire(int slot, int r, const char *what) {
  struct lock_area *L = &S->u.lock;
  if (r == WEFT_EOWNERDEAD) {
    __atomic_add_fetch(&L->ownerdead, 1, __ATOMIC_SEQ_CST);
    repair(slot, what);
  } else if (r != 0) {
    fail("%s: %s", what, weft_err_name(r));
  } else if (!consistent()) {
    fail("%s returned 0 over a half-done update: a=%lld b=%lld counts=%lld (holder %d)", what,
         (long long)L->a, (long long)L->b, (long long)count_sum(), (int)L->holder);
    L->a = L->b = count_sum();
  }
  __atomic_store_n(&L->holder, (int32_t)getpid(), __ATOMIC_SEQ_CST);
  __atomic_store_n(&L->st[slot], ST_HELD, __ATOMIC_SEQ_CST);
}

/* One update of the record, by delta, with the injections that break it. */
static void update(int slot, int delta) {
  struct lock_area *L = &S->u.lock;
  L->a += delta;
  if (rndn(4) == 0) sleep_s(0.0002 * rndf()); /* widen the half-done window */
  __atomic_add_fetch(&L->cnt[slot], delta, __ATOMIC_SEQ_CST);
  if (inject_once(INJ_TORN_STATE, &L->injected)) return;
  if (inject_once(INJ_UNREPAIRABLE, &L->injected)) {
    /* Dies as the killer would kill it, recorded first. */
    L->a += 5;
    int k = __atomic_fetch_add(&S->nkill, 1, __ATOMIC_SEQ_CST);
    if (k < MAXKILL) S->kill[k] = (struct killrec){(int32_t)getpid(), SIGKILL, R_LOCKER, -1, 0};
    raise(SIGKILL);
  }
  L->b += delta;
  if (inject_once(INJ_FALSE_OWNERDEAD, &L->injected)) _exit(0);
  if (inject_once(INJ_SLOW_CALL, &L->injected)) sleep_s(S->call_bound * 1.5);
  if (inject_once(INJ_HANG, &L->injected))
    for (;;) pause();
  __atomic_add_fetch(&L->ops, 1, __ATOMIC_SEQ_CST);
}

static void before_release(int slot) {
  struct lock_area *L = &S->u.lock;
  __atomic_store_n(&L->st[slot], ST_REL, __ATOMIC_SEQ_CST);
  __atomic_store_n(&L->holder, 0, __ATOMIC_SEQ_CST);
}

static bool cond_ready(void *arg) {
  (void)arg;
  return S->u.lock.a > 0 || ld(&S->u.lock.stop);
}

static int barrier_action(void *arg) {
  (void)arg;
  __atomic_add_fetch(&S->u.lock.cycles, 1, __ATOMIC_SEQ_CST);
  return 0;
}

static void locker_loop(int slot) {
  struct lock_area *L = &S->u.lock;
  double bound = S->call_bound;
  __atomic_store_n(&L->pid[slot], (int32_t)getpid(), __ATOMIC_SEQ_CST);
  int rounds = 0;
  while (!ld(&L->stop)) {
    rounds++;
    double t0 = now_s();
    switch (S->scenario) {
      case SC_LOCK: {
        __atomic_store_n(&L->st[slot], ST_ACQ, __ATOMIC_SEQ_CST);
        int r = weft_lock_acquire(&L->lock, WEFT_FOREVER);
        check_bound(t0, bound, "weft_lock_acquire");
        after_acquire(slot, r, "weft_lock_acquire");
        update(slot, 1);
        before_release(slot);
        if ((r = weft_lock_release(&L->lock)) != 0) fail("weft_lock_release: %s", weft_err_name(r));
        break;
      }
      case SC_RLOCK: {
        __atomic_store_n(&L->st[slot], ST_ACQ, __ATOMIC_SEQ_CST);
        int r = weft_rlock_acquire(&L->rlock, WEFT_FOREVER);
        check_bound(t0, bound, "weft_rlock_acquire");
        after_acquire(slot, r, "weft_rlock_acquire");
        if ((r = weft_rlock_acquire(&L->rlock, 0)) != 0) fail("nested weft_rlock_acquire: %s", weft_err_name(r));
        update(slot, 1);
        weft_rlock_release(&L->rlock);
        before_release(slot);
        if ((r = weft_rlock_release(&L->rlock)) != 0) fail("weft_rlock_release: %s", weft_err_name(r));
        break;
      }
      case SC_COND: {
        /* Even slots produce, odd slots consume. */
        __atomic_store_n(&L->st[slot], ST_ACQ, __ATOMIC_SEQ_CST);
        int r = weft_cond_acquire(&L->cond, WEFT_FOREVER);
        check_bound(t0, bound, "weft_cond_acquire");
        after_acquire(slot, r, "weft_cond_acquire");
        if (slot % 2 == 0) {
          if (L->a < 64) update(slot, 1);
          if (slot == 0 && rounds % 50 == 7 && S->inject == INJ_BAD_COUNT)
            __atomic_add_fetch(&L->cnt[slot], 1, __ATOMIC_SEQ_CST); /* outside update: torn for good */
          weft_cond_notify(&L->cond, 1);
        } else {
          double t1 = now_s();
          weft_cond_wait_for(&L->cond, cond_ready, NULL, 0.3);
          check_bound(t1, 0.3 + bound, "weft_cond_wait_for");
          /* weft_cond_wait re-acquires without returning WEFT_EOWNERDEAD:
           * a dead holder's half-done update shows up here instead. */
          if (!consistent()) {
            __atomic_add_fetch(&L->torn_after_wait, 1, __ATOMIC_SEQ_CST);
            repair(slot, "a torn state after weft_cond_wait_for");
          }
          __atomic_store_n(&L->holder, (int32_t)getpid(), __ATOMIC_SEQ_CST);
          if (L->a < 0) fail("condition: took from an empty count (%lld)", (long long)L->a);
          if (L->a > 0) update(slot, -1);
        }
        before_release(slot);
        if ((r = weft_cond_release(&L->cond)) != 0) fail("weft_cond_release: %s", weft_err_name(r));
        break;
      }
      case SC_SEM: {
        __atomic_store_n(&L->st[slot], ST_ACQ, __ATOMIC_SEQ_CST);
        int r = weft_semaphore_acquire(&L->sem, 1.0);
        check_bound(t0, 1.0 + bound, "weft_semaphore_acquire");
        if (r == WEFT_ETIMEDOUT) {
          __atomic_add_fetch(&L->timeouts, 1, __ATOMIC_SEQ_CST);
          __atomic_store_n(&L->st[slot], ST_IDLE, __ATOMIC_SEQ_CST);
          continue;
        }
        if (r != 0) fail("weft_semaphore_acquire: %s", weft_err_name(r));
        int in = __atomic_add_fetch(&L->inside, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&L->st[slot], ST_HELD, __ATOMIC_SEQ_CST);
        if (in > L->sem_units) fail("%d holders of a semaphore of %d", in, L->sem_units);
        if (rndn(2)) sleep_s(0.0005 * rndf());
        if (inject_once(INJ_SEM_LEAK, &L->injected)) {
          __atomic_sub_fetch(&L->inside, 1, __ATOMIC_SEQ_CST);
          __atomic_store_n(&L->st[slot], ST_IDLE, __ATOMIC_SEQ_CST);
          continue;
        }
        __atomic_store_n(&L->st[slot], ST_REL, __ATOMIC_SEQ_CST);
        __atomic_sub_fetch(&L->inside, 1, __ATOMIC_SEQ_CST);
        if ((r = weft_semaphore_release(&L->sem, 1)) != 0) fail("weft_semaphore_release: %s", weft_err_name(r));
        __atomic_store_n(&L->st[slot], ST_IDLE, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&L->ops, 1, __ATOMIC_SEQ_CST);
        break;
      }
      case SC_BARRIER: {
        if (slot == 0 && rounds == 3 && inject_once(INJ_BARRIER_BROKEN, &L->injected)) sleep_s(1.5);
        int r = weft_barrier_wait(&L->barrier, 1.0);
        check_bound(t0, 1.0 + bound, "weft_barrier_wait");
        if (r >= 0) {
          __atomic_add_fetch(&L->ops, 1, __ATOMIC_SEQ_CST);
        } else if (r == WEFT_EBROKEN) {
          __atomic_add_fetch(&L->broken, 1, __ATOMIC_SEQ_CST);
          if (!ld(&L->stop) && kills_on_role(R_LOCKER, true) == 0)
            fail("weft_barrier_wait broke with no fault on any party");
          sleep_s(0.02);
          weft_barrier_reset(&L->barrier);
        } else {
          fail("weft_barrier_wait: %s", weft_err_name(r));
        }
        break;
      }
    }
    __atomic_store_n(&L->st[slot], ST_IDLE, __ATOMIC_SEQ_CST);
    if (rndn(3) == 0) sleep_s(0.0003 * rndf());
  }
}

static void *locker_thread(void *arg) {
  rng_seed(S->iter_seed ^ (uint64_t)(intptr_t)arg * 104729);
  locker_loop((int)(intptr_t)arg);
  return NULL;
}

/* The Lock's hand-off mode, in rounds: the holder (slot 0) takes the lock
 * and opens a round; a waiter thread in its own process (slot 1) and one
 * in each other locker process block on it; the holder releases, and the
 * round ends when its own waiter has had the lock. The killer kills only
 * the other processes, so a wake-up handed to one of them just before it
 * dies must still reach the holder's own waiter, which sleeps with no
 * deadline and no one else to wake it. */
static bool handoff_mode(void) { return S->scenario == SC_LOCK && S->mode % 2 == 1; }

static void handoff_holder(void) {
  struct lock_area *L = &S->u.lock;
  double bound = S->call_bound;
  __atomic_store_n(&L->pid[0], (int32_t)getpid(), __ATOMIC_SEQ_CST);
  for (int r = 1; !ld(&L->stop); r++) {
    __atomic_store_n(&L->st[0], ST_ACQ, __ATOMIC_SEQ_CST);
    double t0 = now_s();
    int e = weft_lock_acquire(&L->lock, WEFT_FOREVER);
    check_bound(t0, bound, "weft_lock_acquire");
    after_acquire(0, e, "weft_lock_acquire");
    update(0, 1);
    st(&L->round, r);
    sleep_s(0.0005 + 0.0015 * rndf()); /* the waiters block meanwhile */
    before_release(0);
    weft_lock_release(&L->lock);
    __atomic_store_n(&L->st[0], ST_IDLE, __ATOMIC_SEQ_CST);
    double t1 = now_s();
    /* Once stopped, the waiter may leave without its round; if it is stuck
     * in the acquire instead, its process never ends, which the driver
     * reports as a hang. */
    while (ld(&L->round_done) < r && !ld(&L->stop) && now_s() - t1 < bound) sleep_s(0.0002);
    if (ld(&L->round_done) < r && !ld(&L->stop)) {
      fail("hang: the waiter in the holder's own process never got the lock released %.1f s "
           "ago (round %d); its threads:", bound, r);
      dump_process(getpid(), "(holder and waiter)");
      describe_sync();
      st(&L->stop, 1);
      return;
    }
  }
}

static void handoff_waiter(int slot) {
  struct lock_area *L = &S->u.lock;
  __atomic_store_n(&L->pid[slot], (int32_t)getpid(), __ATOMIC_SEQ_CST);
  /* The holder's own waiter owes every round; the others join as they come. */
  int last = slot == 1 ? 0 : ld(&L->round);
  while (!ld(&L->stop)) {
    if (ld(&L->round) == last) {
      sleep_s(0.0001);
      continue;
    }
    last = ld(&L->round);
    __atomic_store_n(&L->st[slot], ST_ACQ, __ATOMIC_SEQ_CST);
    double t0 = now_s();
    int e = weft_lock_acquire(&L->lock, WEFT_FOREVER);
    check_bound(t0, S->call_bound, "weft_lock_acquire");
    after_acquire(slot, e, "weft_lock_acquire");
    update(slot, 1);
    before_release(slot);
    weft_lock_release(&L->lock);
    __atomic_store_n(&L->st[slot], ST_IDLE, __ATOMIC_SEQ_CST);
    if (slot == 1) st(&L->round_done, last);
  }
}

static void *handoff_thread(void *arg) {
  rng_seed(S->iter_seed ^ 0x68616e64);
  handoff_waiter((int)(intptr_t)arg);
  return NULL;
}

/* A locker process: two threads (one for a barrier), so waiters sleep in
 * several processes and in the holder's own process. */
static int locker_main(void *arg) {
  int ps = (int)(intptr_t)arg;
  reg_self(R_LOCKER, handoff_mode() && ps == 0 ? 0 : 1);
  rng_seed(S->iter_seed ^ (uint64_t)ps * 1299709);
  weft_thread t = {0};
  if (handoff_mode()) {
    if (ps == 0) {
      t = weft_thread_new(handoff_thread, .arg = (void *)(intptr_t)1, .name = "own waiter");
      if (weft_thread_start(t) != 0) fail("weft_thread_start: %s", weft_last_error());
      handoff_holder();
    } else {
      handoff_waiter(ps * 2);
    }
    if (t.id) {
      weft_thread_join(t, WEFT_FOREVER, NULL);
      weft_thread_close(t);
    }
    return 0;
  }
  if (S->scenario != SC_BARRIER) {
    t = weft_thread_new(locker_thread, .arg = (void *)(intptr_t)(ps * 2 + 1), .name = "locker");
    if (weft_thread_start(t) != 0) fail("weft_thread_start: %s", weft_last_error());
  }
  locker_loop(ps * 2);
  if (t.id) {
    weft_thread_join(t, WEFT_FOREVER, NULL);
    weft_thread_close(t);
  }
  return 0;
}

static int scenario_locks(void) {
  struct lock_area *L = &S->u.lock;
  weft_lock_init(&L->lock, .name = "soak lock");
  weft_rlock_init(&L->rlock, .name = "soak rlock");
  weft_cond_init(&L->cond, .name = "soak condition");
  L->sem_units = 2;
  weft_semaphore_init(&L->sem, L->sem_units, .name = "soak semaphore");
  enum { NPROC = 3 };
  weft_barrier_init(&L->barrier, NPROC, .action = barrier_action);
  weft_process ps[NPROC];
  int next = 0, psid[NPROC], unsure = 0;
  for (int i = 0; i < NPROC; i++) {
    psid[i] = next;
    ps[i] = weft_process_new(locker_main, .arg = (void *)(intptr_t)next++, .daemon = true);
    if (weft_process_start(ps[i]) != 0) fail("start: %s", weft_last_error());
  }
  st(&S->window, 1);
  double end = now_s() + S->phase;
  while (now_s() < end) {
    for (int i = 0; i < NPROC; i++) {
      if (ps[i].id == 0 || weft_process_is_alive(ps[i])) continue;
      int code = 0;
      weft_process_exitcode(ps[i], &code);
      pid_t pid = weft_process_pid(ps[i]);
      weft_process_close(ps[i]);
      if ((code == -SIGKILL || code == -SIGSEGV) && killed(pid) == 0)
        fail("locker %d died with signal %d that no one sent", (int)pid, -code);
      else if (code > 0 && S->inject != INJ_FALSE_OWNERDEAD)
        fail("locker %d exited with %d", (int)pid, code);
      /* A Semaphore unit held by a dead process is lost (as in Python):
       * give back those its threads surely held; those it was taking or
       * giving back at its death may or may not be lost. */
      for (int t = 0; S->scenario == SC_SEM && t < 2; t++) {
        int slot = psid[i] * 2 + t, s = __atomic_load_n(&L->st[slot], __ATOMIC_SEQ_CST);
        if (s == ST_HELD) {
          __atomic_sub_fetch(&L->inside, 1, __ATOMIC_SEQ_CST);
          weft_semaphore_release(&L->sem, 1);
        } else if (s == ST_ACQ || s == ST_REL) {
          unsure++;
        }
        __atomic_store_n(&L->st[slot], ST_IDLE, __ATOMIC_SEQ_CST);
      }
      if (next < MAXSLOT / 2) {
        psid[i] = next;
        ps[i] = weft_process_new(locker_main, .arg = (void *)(intptr_t)next++, .daemon = true);
        if (weft_process_start(ps[i]) != 0) fail("start: %s", weft_last_error());
      } else {
        ps[i] = (weft_process){0};
      }
    }
    sleep_s(0.005);
  }
  close_window();
  st(&L->stop, 1);
  if (S->scenario == SC_COND) {
    int r = weft_cond_acquire(&L->cond, S->call_bound);
    if (r == 0 || r == WEFT_EOWNERDEAD) {
      if (r == WEFT_EOWNERDEAD) repair(-1, "weft_cond_acquire (driver)");
      weft_cond_notify_all(&L->cond);
      weft_cond_release(&L->cond);
    } else {
      fail("driver: weft_cond_acquire: %s", weft_err_name(r));
    }
  }
  int hangs_before = ld(&S->nfail);
  for (int i = 0; i < NPROC; i++)
    if (ps[i].id) {
      /* After one hang the others are reported quickly. */
      double b = ld(&S->nfail) > hangs_before ? 0.5 : S->call_bound + 1.5;
      pid_t pid = weft_process_pid(ps[i]);
      int before = ld(&S->nfail);
      int code = finish(ps[i], b, "locker");
      bool hung = ld(&S->nfail) > before; /* finish killed it */
      if ((code == -SIGKILL || code == -SIGSEGV) && !hung && killed(pid) == 0)
        fail("locker %d died with signal %d that no one sent", (int)pid, -code);
      else if (code > 0)
        fail("locker %d exited with %d", (int)pid, code);
    }
  /* Final state: whole, and the counts add up. */
  if (S->scenario == SC_LOCK || S->scenario == SC_RLOCK || S->scenario == SC_COND) {
    int r = S->scenario == SC_LOCK ? weft_lock_acquire(&L->lock, S->call_bound)
            : S->scenario == SC_RLOCK ? weft_rlock_acquire(&L->rlock, S->call_bound)
                                      : weft_cond_acquire(&L->cond, S->call_bound);
    if (r == WEFT_EOWNERDEAD) repair(-1, "final acquire");
    else if (r != 0) fail("final acquire: %s", weft_err_name(r));
    if (!consistent())
      fail("final state a=%lld b=%lld counts=%lld does not add up", (long long)L->a, (long long)L->b,
           (long long)count_sum());
    if (r == 0 || r == WEFT_EOWNERDEAD) {
      if (S->scenario == SC_LOCK) weft_lock_release(&L->lock);
      else if (S->scenario == SC_RLOCK) weft_rlock_release(&L->rlock);
      else weft_cond_release(&L->cond);
    }
  }
  if (S->scenario == SC_SEM) {
    int value = weft_semaphore_value(&L->sem), lost = L->sem_units - value;
    if (lost < 0 || lost > unsure)
      fail("semaphore: %d of %d units missing once the dead holders' were given back, but only "
           "%d threads died taking or giving one back",
           lost, L->sem_units, unsure);
  }
  if (S->scenario == SC_BARRIER && L->ops == 0 && kills_on_role(R_LOCKER, true) == 0)
    fail("barrier: no cycle completed and no fault landed");
  if (S->verbose)
    printf("soak:   %s: %u operations, %u EOWNERDEAD, %u repaired, %u torn after a condition wait, "
           "%u timeouts, %u broken\n",
           scenario_names[S->scenario], L->ops, L->ownerdead, L->repaired, L->torn_after_wait,
           L->timeouts, L->broken);
  return 0;
}

/* ==== scenario: a parent with daemon children, a pool and a pipeline ==== */

static int sleeper_main(void *arg) {
  (void)arg;
  reg_self(R_CHILD, 1);
  for (;;) sleep_s(0.01);
  return 0;
}

static int grandparent_child_main(void *arg) {
  (void)arg;
  reg_self(R_CHILD, 1);
  weft_process g = weft_process_new(sleeper_main, .daemon = true, .name = "soak-grandchild");
  weft_process_start(g);
  for (;;) sleep_s(0.01);
  return 0;
}

static weft_mpqueue *pipe_in, *pipe_out;

static int stage_main(void *arg) {
  (void)arg;
  reg_self(R_STAGE, 1);
  unsigned char buf[256];
  for (;;) {
    size_t len;
    int r = weft_mpqueue_get(pipe_in, buf, sizeof buf, &len, 0.2);
    if (r == WEFT_ECLOSED) return 0;
    if (r == 0) weft_mpqueue_put(pipe_out, buf, len, 1.0);
  }
}

static int parent_main(void *arg) {
  (void)arg;
  reg_self(R_PARENT, 6);
  rng_seed(S->iter_seed ^ 0x706172);
  if (inject_once(INJ_ORPHAN, &S->injected)) {
    pid_t stray = fork();
    if (stray == 0) {
      reg_self(R_STRAY, 0);
      for (;;) pause();
    }
  }
  pipe_in = weft_mpqueue_new(.capacity = 1 << 16);
  pipe_out = weft_mpqueue_new(.capacity = 1 << 16);
  weft_process kids[3] = {
      weft_process_new(sleeper_main, .daemon = true, .name = "soak-daemon"),
      weft_process_new(grandparent_child_main, .daemon = true, .name = "soak-daemon-parent"),
      weft_process_new(stage_main, .daemon = true, .name = "soak-stage"),
  };
  for (int i = 0; i < 3; i++) weft_process_start(kids[i]);
  weft_pool pool = weft_process_pool_new(.workers = 2, .initializer = worker_init);
  uint32_t id = 0;
  for (;;) {
    struct task_arg t = {id++ % MAXTASK, 2000 + rndn(5000), rnd()};
    weft_future f = weft_pool_apply_async(pool, soak_task, &t, sizeof t);
    char m[32];
    snprintf(m, sizeof m, "item %u", id);
    weft_mpqueue_put(pipe_in, m, strlen(m), 0.1);
    size_t len;
    weft_mpqueue_get(pipe_out, m, sizeof m, &len, 0.01);
    weft_future_result(f, 1.0, NULL);
    weft_future_close(f);
  }
  return 0;
}

static int scenario_parent(void) {
  /* Orphans come to the driver, which reaps and counts them. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  weft_process p = weft_process_new(parent_main, .daemon = true, .name = "soak-parent");
  if (weft_process_start(p) != 0) {
    fail("start: %s", weft_last_error());
    return 0;
  }
  pid_t ppid = weft_process_pid(p);
  st(&S->window, 1);
  double end = now_s() + S->phase;
  int r;
  while ((r = weft_process_join(p, 0.01)) == WEFT_ETIMEDOUT && now_s() < end) {
  }
  close_window();
  if (r == WEFT_ETIMEDOUT) {
    /* Not killed at random: the driver kills it, as a user would. */
    int k = __atomic_fetch_add(&S->nkill, 1, __ATOMIC_SEQ_CST);
    if (k < MAXKILL) S->kill[k] = (struct killrec){ppid, SIGKILL, R_PARENT, -1, 0};
    weft_process_kill(p);
  }
  int code = finish(p, S->call_bound, "parent");
  if (code != -SIGKILL && code != -SIGSEGV) fail("parent ended with %d, not killed", code);
  /* Every process it started must go: daemon children, grandchildren,
   * pool workers, pipeline stages. */
  double deadline = now_s() + 2.0;
  int nr;
  for (;;) {
    int alive = 0;
    nr = ld(&S->nreg);
    for (int i = 0; i < nr && i < MAXREG; i++) {
      pid_t pid = S->reg[i].pid;
      if (pid > 0 && pid != getpid() && !pid_gone(pid)) alive++;
    }
    /* Its orphans, registered or killed before they could register, are
     * the driver's now: reap the dead, count the living. */
    pid_t kids[64];
    int nk = list_children(getpid(), kids, 64);
    for (int i = 0; i < nk && i < 64; i++) {
      char state = '?';
      proc_stat(kids[i], &state, NULL, NULL, NULL, 0);
      if (state == 'Z') waitpid(kids[i], NULL, WNOHANG);
      else alive++;
    }
    if (alive == 0) break;
    if (now_s() > deadline) {
      for (int i = 0; i < nk && i < 64; i++) {
        char state = '?', comm[64] = "?";
        proc_stat(kids[i], &state, NULL, NULL, comm, sizeof comm);
        if (state == 'Z') continue;
        fail("orphan: process %d (%s) outlived its killed parent by 2 s", (int)kids[i], comm);
        kill(kids[i], SIGKILL);
        kill(kids[i], SIGCONT);
        waitpid(kids[i], NULL, 0);
      }
      for (int i = 0; i < nr && i < MAXREG; i++) {
        pid_t pid = S->reg[i].pid;
        if (pid > 0 && pid != getpid() && !pid_gone(pid)) {
          char comm[64] = "?";
          proc_stat(pid, NULL, NULL, NULL, comm, sizeof comm);
          fail("orphan: %s %d (%s) outlived its killed parent by 2 s", role_names[S->reg[i].role],
               (int)pid, comm);
          kill(pid, SIGKILL);
          kill(pid, SIGCONT);
          waitpid(pid, NULL, 0);
        }
      }
      break;
    }
    sleep_s(0.005);
  }
  if (S->verbose) printf("soak:   parent: %d processes registered\n", nr);
  return 0;
}

/* ==== the driver: one iteration ==== */

static void *leak_thread(void *arg) {
  (void)arg;
  sleep_s(60);
  return NULL;
}

static int driver_main(void *arg) {
  (void)arg;
  reg_self(R_DRIVER, 0);
  rng_seed(S->iter_seed);
  struct baseline base;
  take_baseline(&base);
  switch (S->scenario) {
    case SC_POOL: scenario_pool(); break;
    case SC_QUEUE: scenario_queue(); break;
    case SC_PARENT: scenario_parent(); break;
    default: scenario_locks(); break;
  }
  close_window();
  if (S->inject == INJ_ZOMBIE && fork() == 0) _exit(0);
  if (S->inject == INJ_FD_LEAK) (void)!open("/dev/null", O_RDONLY);
  if (S->inject == INJ_THREAD_LEAK) {
    weft_thread t = weft_thread_new(leak_thread, .daemon = true, .name = "soak-leak");
    weft_thread_start(t);
    weft_thread_close(t);
  }
  check_leftovers(&base, 2.0);
  fflush(stdout);
  return 0;
}

/* ==== the controller ==== */

static const char *mode_label(int sc, int mode) {
  static char buf[64];
  snprintf(buf, sizeof buf, "%s%s", sc == SC_POOL || (sc == SC_LOCK && mode % 2) ? " " : "",
           sc == SC_POOL ? pool_mode_names[mode] : sc == SC_LOCK && mode % 2 ? "hand-off" : "");
  return buf;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: weft_soak [--seed=N] [--duration=SECS] [--kills=N] [--iterations=N]\n"
          "                 [--scenario=NAME] [--skip=NAME]... [--inject=NAME] [--phase=SECS]\n"
          "                 [--bound=SECS]"
          " [--iter-bound=SECS] [--no-kills] [--verbose]\n"
          "Kills, stops and crashes random processes of weft programs and checks that nothing is\n"
          "lost and no one hangs. Default: about 5 minutes.\n"
          "scenarios:");
  for (int i = 0; i < SC_N; i++) fprintf(f, " %s", scenario_names[i]);
  fprintf(f, "\ninjections (each breaks one invariant; the run must fail):");
  for (int i = 1; i < INJ_N; i++) fprintf(f, " %s", injections[i].name);
  fprintf(f, "\n");
}

static bool opt(const char *arg, const char *name, const char **val) {
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  *val = arg + n + 1;
  return true;
}

int main(int argc, char **argv) {
  uint64_t seed = 0;
  bool have_seed = false, no_kills = false, verbose = false;
  double duration = -1, phase = -1, bound = 5.0, iter_bound = 40.0;
  long iterations = 0;
  int only = -1, inject = INJ_NONE;
  bool skip[SC_N] = {false};
  for (int i = 1; i < argc; i++) {
    const char *v;
    if (opt(argv[i], "--seed", &v)) {
      if (*v) {
        seed = strtoull(v, NULL, 10);
        have_seed = true;
      }
    } else if (opt(argv[i], "--duration", &v)) {
      if (*v) duration = atof(v);
    } else if (opt(argv[i], "--kills", &v)) {
      if (*v) max_kills = atol(v);
    } else if (opt(argv[i], "--iterations", &v)) {
      iterations = atol(v);
    } else if (opt(argv[i], "--phase", &v)) {
      phase = atof(v);
    } else if (opt(argv[i], "--bound", &v)) {
      bound = atof(v);
    } else if (opt(argv[i], "--iter-bound", &v)) {
      iter_bound = atof(v);
    } else if (opt(argv[i], "--scenario", &v)) {
      for (int s = 0; s < SC_N; s++)
        if (strcmp(v, scenario_names[s]) == 0) only = s;
      if (only < 0) {
        usage(stderr);
        return 2;
      }
    } else if (opt(argv[i], "--skip", &v)) {
      bool found = false;
      for (int s = 0; s < SC_N; s++)
        if (strcmp(v, scenario_names[s]) == 0) found = skip[s] = true;
      if (!found) {
        usage(stderr);
        return 2;
      }
    } else if (opt(argv[i], "--inject", &v)) {
      inject = -1;
      for (int s = 1; s < INJ_N; s++)
        if (strcmp(v, injections[s].name) == 0) inject = s;
      if (inject < 0) {
        usage(stderr);
        return 2;
      }
    } else if (strcmp(argv[i], "--no-kills") == 0) {
      no_kills = true;
    } else if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
      verbose = true;
    } else if (strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (!have_seed) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = mix64((uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32) % 1000000000ull;
  }
  if (duration < 0 && max_kills == 0 && iterations == 0) duration = 300;
  if (inject != INJ_NONE) {
    /* One iteration of the scenario the injection breaks, with no kills to
     * excuse it. */
    only = injections[inject].scenario;
    if (iterations == 0) iterations = 1;
    no_kills = true;
    /* The late party must come after the others' timeouts, before the stop. */
    if (inject == INJ_BARRIER_BROKEN && phase < 2.5) phase = 2.5;
  }
  struct rlimit nocore = {0, 0};
  setrlimit(RLIMIT_CORE, &nocore);
  /* Orphans of a driver's tree come here to be reaped and counted. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  weft_set_daemon_grace(0.5);
  S = weft_shared_alloc(sizeof *S);
  if (S == NULL) {
    fprintf(stderr, "soak: weft_shared_alloc: %s\n", weft_last_error());
    return 2;
  }
  S->controller = getpid();
  for (int i = 0; i < MAXREG; i++) reg_fd[i] = -1;
  printf("soak: seed %llu (replay: make soak SEED=%llu)%s%s\n", (unsigned long long)seed,
         (unsigned long long)seed, inject ? ", injecting " : "", inject ? injections[inject].name : "");
  fflush(stdout);
  rng_seed(seed);
  pthread_t killer;
  pthread_create(&killer, NULL, killer_main, NULL);

  long passed = 0, failed = 0, hangs = 0;
  long per_scenario[SC_N] = {0}, failed_scenario[SC_N] = {0};
  double start = now_s(), last_report = start;
  int order[SC_N], at = SC_N;
  for (long it = 0;; it++) {
    if (iterations > 0 && it >= iterations) break;
    if (duration >= 0 && iterations == 0 && now_s() - start >= duration) break;
    if (max_kills > 0 && total_kills >= max_kills) break;
    /* Scenarios in shuffled rounds, so every one comes up often. */
    if (at == SC_N) {
      for (int i = 0; i < SC_N; i++) order[i] = i;
      for (int i = SC_N - 1; i > 0; i--) {
        int j = (int)rndn((uint32_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
      }
      at = 0;
    }
    int sc = only >= 0 ? only : order[at];
    at++;
    if (only < 0 && skip[sc]) {
      it--;
      continue;
    }
    int mode = (int)rndn(PM_N);
    if (inject != INJ_NONE && injections[inject].mode >= 0) mode = injections[inject].mode;
    uint64_t iseed = rnd();
    /* Reset the shared state for this iteration. */
    memset(&S->u, 0, sizeof S->u);
    memset(S->reg, 0, sizeof S->reg);
    memset(S->kill, 0, sizeof S->kill);
    S->nreg = 0;
    S->nkill = 0;
    S->nfail = 0;
    S->hangs = 0;
    S->injected = 0;
    S->window = 0;
    S->scenario = sc;
    S->mode = mode;
    S->inject = inject;
    S->iter_seed = iseed;
    S->call_bound = inject == INJ_SLOW_CALL ? 1.0 : bound;
    S->phase = phase >= 0 ? phase : 1.0 + 1.5 * rndf();
    S->kill_gap_ms = sc == SC_PARENT ? 150 : sc == SC_BARRIER ? 120 : 30;
    S->kills_on = !no_kills;
    S->verbose = verbose;
    killer_reset();
    atomic_fetch_add(&killer_iteration, 1);
    double ib = inject == INJ_HANG ? 8.0 : iter_bound;
    long kills_before = total_kills;

    weft_process d = weft_process_new(driver_main, .daemon = true, .name = "soak-driver");
    double t0 = now_s();
    if (weft_process_start(d) != 0) {
      fprintf(stderr, "soak: cannot start a driver: %s\n", weft_last_error());
      return 2;
    }
    int r = weft_process_join(d, ib);
    bool hung = false;
    if (r == WEFT_ETIMEDOUT) {
      hung = true;
      hangs++;
      __atomic_add_fetch(&S->nfail, 1, __ATOMIC_SEQ_CST);
      fprintf(stderr, "soak: FAIL [%s] hang: iteration %ld passed its bound of %.0f s; its processes:\n",
              scenario_names[sc], it, ib);
      dump_tree(weft_process_pid(d));
      st(&S->window, 0);
      kill_registered();
      weft_process_kill(d);
      r = weft_process_join(d, WEFT_FOREVER);
    }
    int code = -1;
    weft_process_exitcode(d, &code);
    weft_process_close(d);
    st(&S->window, 0);
    while (ld(&S->killer_acts)) sleep_s(0.001);
    if (!hung && code != 0) {
      __atomic_add_fetch(&S->nfail, 1, __ATOMIC_SEQ_CST);
      fprintf(stderr, "soak: FAIL [%s] the driver ended with %d\n", scenario_names[sc], code);
    }
    /* Nothing registered may outlive its iteration. */
    double gone_by = now_s() + 2.0;
    for (;;) {
      int alive = 0, nr = ld(&S->nreg);
      for (int i = 0; i < nr && i < MAXREG; i++) {
        pid_t pid = S->reg[i].pid, pp = 0;
        char state;
        if (pid <= 0) continue;
        if (proc_stat(pid, &state, NULL, &pp, NULL, 0) && state == 'Z' && pp == getpid())
          waitpid(pid, NULL, WNOHANG);
        else if (!pid_gone(pid))
          alive++;
      }
      if (alive == 0) break;
      if (now_s() > gone_by) {
        for (int i = 0; i < nr && i < MAXREG; i++) {
          pid_t pid = S->reg[i].pid;
          if (pid > 0 && !pid_gone(pid) && !hung)
            fprintf(stderr, "soak: FAIL [%s] %s %d outlived its iteration\n", scenario_names[sc],
                    role_names[S->reg[i].role], (int)pid);
        }
        if (!hung) __atomic_add_fetch(&S->nfail, 1, __ATOMIC_SEQ_CST);
        kill_registered();
        gone_by = now_s() + 2.0;
      }
      sleep_s(0.005);
    }
    /* Zombies of orphans reparented here. */
    pid_t kids[64];
    int nk = list_children(getpid(), kids, 64);
    for (int i = 0; i < nk && i < 64; i++) {
      char state;
      if (proc_stat(kids[i], &state, NULL, NULL, NULL, 0) && state == 'Z') waitpid(kids[i], NULL, WNOHANG);
    }
    int nfail = ld(&S->nfail);
    if (!hung && ld(&S->hangs) > 0) hangs++;
    per_scenario[sc]++;
    if (nfail == 0) {
      passed++;
    } else {
      failed++;
      failed_scenario[sc]++;
      fprintf(stderr, "soak: iteration %ld (%s%s) FAILED, %d failures; replay: make soak SEED=%llu\n",
              it, scenario_names[sc], mode_label(sc, mode), nfail, (unsigned long long)seed);
    }
    if (verbose)
      printf("soak: iteration %ld %s%s: %.2f s, %ld kills, %s\n", it, scenario_names[sc],
             mode_label(sc, mode), now_s() - t0, (long)(total_kills - kills_before),
             nfail ? "FAILED" : "passed");
    if (now_s() - last_report > 30) {
      last_report = now_s();
      printf("soak: %.0f s, %ld iterations, %ld kills, %ld failed\n", last_report - start,
             passed + failed, total_kills, failed);
    }
    fflush(stdout);
  }
  atomic_store(&killer_quit, 1);
  pthread_join(killer, NULL);
  killer_reset();
  printf("soak: iterations by scenario:");
  for (int i = 0; i < SC_N; i++)
    if (per_scenario[i]) printf(" %s %ld%s", scenario_names[i], per_scenario[i], failed_scenario[i] ? " (failed)" : "");
  printf("; %.0f s, %ld iterations hung\n", now_s() - start, hangs);
  printf("soak: kills %ld (SIGKILL %ld, SIGSEGV %ld, SIGSTOP/CONT %ld), seed %llu\n", total_kills,
         total_by[0], total_by[1], total_by[2], (unsigned long long)seed);
  printf("soak: %ld passed, %ld failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
