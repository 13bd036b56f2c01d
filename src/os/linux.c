/* SPDX-License-Identifier: MIT */
/* Linux implementation of the platform layer (kernel >= 5.10, glibc >= 2.36). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../internal.h"
#include "os.h"

int64_t weft__os_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int weft__os_sleep_until(int64_t deadline_ns) {
  struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000),
                        .tv_nsec = (long)(deadline_ns % 1000000000)};
  int r;
  while ((r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) == EINTR) {
  }
  return -r;
}

int weft__os_futex_wait(uint32_t *addr, uint32_t val, int64_t deadline_ns) {
  struct timespec ts, *tsp = NULL;
  if (deadline_ns != INT64_MAX) {
    ts.tv_sec = (time_t)(deadline_ns / 1000000000);
    ts.tv_nsec = (long)(deadline_ns % 1000000000);
    tsp = &ts;
  }
  /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a
   * retried wait never stretches the timeout. */
  long r = syscall(SYS_futex, addr, FUTEX_WAIT_BITSET, val, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
  return r < 0 ? -errno : 0;
}

int weft__os_futex_wake(uint32_t *addr, int n) {
  long r = syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
  return r < 0 ? -errno : (int)r;
}

bool weft__os_process_gone(pid_t pid) {
  int fd = pidfd_open(pid, 0);
  if (fd < 0) return errno == ESRCH;
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  bool gone = poll(&pfd, 1, 0) > 0;
  close(fd);
  return gone;
}

/* Appends the decimal digits of v (>= 0) at p; returns the end. */
static char *put_decimal(char *p, long v) {
  char digits[24];
  int n = 0;
  do digits[n++] = (char)('0' + v % 10);
  while ((v /= 10) > 0);
  while (n > 0) *p++ = digits[--n];
  return p;
}

/* Reads /proc/<pid>/stat into buf and sets *rest to the ')' that ends the
 * command name (field 2, which may hold spaces and ')'). 0 or -errno.
 * Async-signal-safe (a dump reads start times): the path is built by hand. */
static int read_stat(pid_t pid, char *buf, size_t size, const char **rest) {
  char path[64], *end = path;
  memcpy(end, "/proc/", 6);
  end = put_decimal(end + 6, pid);
  memcpy(end, "/stat", 6);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = read(fd, buf, size - 1);
  weft__os_close(fd);
  if (n <= 0) return -EIO;
  buf[n] = '\0';
  *rest = strrchr(buf, ')');
  return *rest != NULL ? 0 : -EIO;
}

/* A numeric field of /proc/<pid>/stat (fields counted from 1, as proc(5)). */
static int stat_field(pid_t pid, int want, uint64_t *value) {
  char buf[1024];
  const char *p;
  int r = read_stat(pid, buf, sizeof buf, &p);
  if (r != 0) return r;
  for (int field = 2; p != NULL && field < want; field++) p = strchr(p + 1, ' ');
  if (p == NULL) return -EIO;
  uint64_t v = 0; /* by hand, as strtoull is not async-signal-safe */
  for (p++; *p >= '0' && *p <= '9'; p++) v = v * 10 + (uint64_t)(*p - '0');
  *value = v;
  return 0;
}

int weft__os_process_start_time(pid_t pid, uint64_t *ticks) { return stat_field(pid, 22, ticks); }

bool weft__os_peer_closed(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
  int r;
  while ((r = poll(&p, 1, 0)) < 0 && errno == EINTR) {
  }
  return r == 1 && (p.revents & (POLLHUP | POLLRDHUP)) != 0;
}

int weft__os_process_stopped(pid_t pid) {
  char buf[1024];
  const char *p;
  int r = read_stat(pid, buf, sizeof buf, &p);
  if (r != 0) return r;
  if (p[1] != ' ') return -EIO; /* field 3, the state, follows the name */
  return p[2] == 'T' || p[2] == 't';
}

int weft__os_thread_count(void) {
  uint64_t n = 0;
  int r = stat_field(getpid(), 20, &n);
  return r < 0 ? r : (int)n;
}

int weft__os_unmap(void *addr, size_t size) { return munmap(addr, size) < 0 ? -errno : 0; }

pid_t weft__os_gettid(void) { return gettid(); }

int weft__os_pidfd_open(pid_t pid) {
  int fd = pidfd_open(pid, 0);
  return fd < 0 ? -errno : fd;
}

#ifndef PID_FS_MAGIC
#define PID_FS_MAGIC 0x50494446 /* linux/magic.h from 6.9 */
#endif

int weft__os_pidfd_id(int pidfd, uint64_t *id) {
  /* Known once, from the first pidfd: 1 pidfs, -1 not (or not telling).
   * A 32-bit kernel's pidfs numbers wrap, and only a 64-bit process knows
   * its kernel is not one. */
  static int pidfs;
  int known = __atomic_load_n(&pidfs, __ATOMIC_RELAXED);
  if (known == 0) {
    struct statfs fs;
    known = sizeof(void *) >= 8 && fstatfs(pidfd, &fs) == 0 && fs.f_type == PID_FS_MAGIC ? 1 : -1;
    __atomic_store_n(&pidfs, known, __ATOMIC_RELAXED);
  }
  if (known < 0) return -EOPNOTSUPP;
  struct stat st;
  if (fstat(pidfd, &st) != 0) return -errno;
  *id = (uint64_t)st.st_ino;
  return 0;
}

int weft__os_pidfd_signal(int pidfd, int sig) {
  return pidfd_send_signal(pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

int weft__os_pidfd_reap(int pidfd, bool nohang, int *exitcode) {
  siginfo_t info;
  for (;;) {
    memset(&info, 0, sizeof info);
    if (waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED | (nohang ? WNOHANG : 0)) == 0) break;
    if (errno != EINTR) return -errno;
  }
  if (info.si_pid == 0) return 0; /* WNOHANG and still running */
  *exitcode = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
  return 1;
}

int weft__os_wait_readable(int fd, int64_t deadline_ns) {
  return weft__os_wait_fd(fd, true, false, deadline_ns);
}

WEFT__HOT pid_t weft__os_fork(void) {
  pid_t pid = fork();
  return pid < 0 ? -errno : pid;
}

void weft__os_kill_and_reap(pid_t pid) {
  int state;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state); /* waitpid is a cancellation point */
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
  pthread_setcancelstate(state, NULL);
}

WEFT__HOT pid_t weft__os_getppid(void) { return getppid(); }

/* A system call made without the C library, for the calls a forked child
 * makes before its target runs: syscall() would fault in one more page of
 * the library's code there, microseconds per start. The kernel's result:
 * -errno on failure. */
static inline long raw_syscall3(long nr, long a, long b, long c) {
#if defined(__x86_64__)
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
#else
  long r = syscall(nr, a, b, c);
  return r < 0 ? -errno : r;
#endif
}

/* A raw close: glibc's close() is a cancellation point and, in a forked
 * child, its cancellation bookkeeping writes (and so copies) a page.
 * ThreadSanitizer must see each close, or it takes the next fd to get the
 * same number in another thread for a race with the one closed. */
WEFT__HOT void weft__os_close(int fd) {
#if defined(__SANITIZE_THREAD__)
  int state;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
  close(fd);
  pthread_setcancelstate(state, NULL);
#else
  raw_syscall3(SYS_close, fd, 0, 0);
#endif
}

WEFT__HOT int weft__os_set_parent_death_signal(int sig) {
  return prctl(PR_SET_PDEATHSIG, sig) < 0 ? -errno : 0;
}

WEFT__HOT void weft__os_set_thread_name(const char *name) {
  char short_name[16];
  size_t n = strlen(name);
  if (n > 15) {
    n = 15;
    while (n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80) n--; /* not mid-character */
  }
  memcpy(short_name, name, n);
  short_name[n] = '\0';
  prctl(PR_SET_NAME, short_name);
}

void weft__os_get_thread_name(char *buf, size_t size) {
  char name[17] = "";
  prctl(PR_GET_NAME, name);
  snprintf(buf, size, "%s", name);
}

int weft__os_reserve_fd(void) {
  int fd = eventfd(0, EFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

void weft__os_yield(void) { sched_yield(); }

int weft__os_affinity_count(void) {
  for (int ncpus = 1024; ncpus <= 1 << 20; ncpus *= 2) {
    cpu_set_t *set = CPU_ALLOC((size_t)ncpus);
    if (set == NULL) return -ENOMEM;
    size_t size = CPU_ALLOC_SIZE((size_t)ncpus);
    if (sched_getaffinity(0, size, set) == 0) {
      int n = CPU_COUNT_S(size, set);
      CPU_FREE(set);
      return n;
    }
    int err = errno;
    CPU_FREE(set);
    if (err != EINVAL) return -err; /* EINVAL: the mask is larger */
  }
  return -EINVAL;
}

static bool read_text(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, size - 1);
  weft__os_close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

/* CPUs allowed by a quota over a period, rounded up; 0 for none. */
static int quota_cpus(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return 0;
  long long n = (quota + period - 1) / period;
  return n > INT_MAX ? INT_MAX : (int)n;
}

int weft__os_cgroup_cpu_limit(void) {
  char cg[4096], path[4352], text[256];
  if (!read_text("/proc/self/cgroup", cg, sizeof cg)) return 0;
  int limit = 0;
  /* cgroup v2: the line "0::/path"; cpu.max is "max 100000" or "50000 100000". */
  char *v2 = strstr(cg, "0::");
  if (v2 != NULL && (v2 == cg || v2[-1] == '\n')) {
    char *dir = v2 + 3;
    dir[strcspn(dir, "\n")] = '\0';
    for (;;) {
      snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", strcmp(dir, "/") == 0 ? "" : dir);
      long long quota, period;
      if (read_text(path, text, sizeof text) && sscanf(text, "%lld %lld", &quota, &period) == 2) {
        int n = quota_cpus(quota, period);
        if (n > 0 && (limit == 0 || n < limit)) limit = n;
      }
      char *slash = strrchr(dir, '/');
      if (slash == NULL || slash == dir) break;
      *slash = '\0';
    }
    if (limit > 0) return limit;
  }
  /* cgroup v1: the line "N:...cpu...:/path"; the controller is mounted at
   * /sys/fs/cgroup/cpu (or cpu,cpuacct), where a container sees its own
   * group as the root. */
  if (!read_text("/proc/self/cgroup", cg, sizeof cg)) return 0;
  const char *dir = "/";
  char *lines = NULL;
  for (char *line = strtok_r(cg, "\n", &lines); line != NULL; line = strtok_r(NULL, "\n", &lines)) {
    char *ctl = strchr(line, ':'), *where = ctl != NULL ? strchr(ctl + 1, ':') : NULL;
    if (where == NULL) continue;
    *where = '\0';
    char *toks = NULL;
    for (char *tok = strtok_r(ctl + 1, ",", &toks); tok != NULL; tok = strtok_r(NULL, ",", &toks))
      if (strcmp(tok, "cpu") == 0) dir = where + 1;
  }
  static const char *const mounts[] = {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"};
  for (size_t m = 0; m < sizeof mounts / sizeof mounts[0]; m++) {
    for (int root = 0; root < 2; root++) {
      const char *sub = root || strcmp(dir, "/") == 0 ? "" : dir;
      long long quota = 0, period = 0;
      snprintf(path, sizeof path, "%s%s/cpu.cfs_quota_us", mounts[m], sub);
      if (!read_text(path, text, sizeof text)) continue;
      quota = atoll(text);
      snprintf(path, sizeof path, "%s%s/cpu.cfs_period_us", mounts[m], sub);
      if (read_text(path, text, sizeof text)) period = atoll(text);
      int n = quota_cpus(quota, period);
      if (n > 0 && (limit == 0 || n < limit)) limit = n;
    }
  }
  return limit;
}

int weft__os_membarrier(void) {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return 0;
  if (errno != EPERM) return -errno; /* EPERM: not registered yet */
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) < 0) return -errno;
  return syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) < 0 ? -errno : 0;
}

int weft__os_membarrier_global_register(void) {
  return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) < 0 ? -errno : 0;
}

int weft__os_membarrier_global(void) {
  return syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) < 0 ? -errno : 0;
}

/* ---- byte streams ---- */

int weft__os_socketpair(int fds[2]) {
  return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0 ? -errno : 0;
}

ssize_t weft__os_send(int fd, const void *buf, size_t len) {
  ssize_t n;
  while ((n = send(fd, buf, len, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  return n < 0 ? -errno : n;
}

ssize_t weft__os_recv(int fd, void *buf, size_t len, bool peek, bool nonblock) {
  int flags = (peek ? MSG_PEEK : 0) | (nonblock ? MSG_DONTWAIT : 0);
  ssize_t n;
  while ((n = recv(fd, buf, len, flags)) < 0 && errno == EINTR) {
  }
  return n < 0 ? -errno : n;
}

int weft__os_shutdown(int fd, int how) { return shutdown(fd, how) < 0 ? -errno : 0; }

/* ppoll until one of fds is ready or the deadline passes, across EINTR:
 * how many are ready, 0 at the deadline, or -errno. */
static int ppoll_until(struct pollfd *fds, size_t n, int64_t deadline_ns) {
  for (;;) {
    struct timespec ts, *tsp = NULL;
    if (deadline_ns != INT64_MAX) {
      int64_t left = deadline_ns - weft__os_now_ns();
      if (left < 0) left = 0;
      ts.tv_sec = (time_t)(left / 1000000000);
      ts.tv_nsec = (long)(left % 1000000000);
      tsp = &ts;
    }
    int r = ppoll(fds, (nfds_t)n, tsp, NULL);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

int weft__os_wait_fd(int fd, bool readable, bool writable, int64_t deadline_ns) {
  struct pollfd pfd = {.fd = fd, .events = (short)((readable ? POLLIN : 0) | (writable ? POLLOUT : 0))};
  int r = ppoll_until(&pfd, 1, deadline_ns);
  return r > 0 ? 1 : r;
}

int weft__os_poll_readable(struct pollfd *fds, size_t n, int64_t deadline_ns) {
  for (size_t i = 0; i < n; i++) fds[i].events = POLLIN;
  return ppoll_until(fds, n, deadline_ns);
}

int weft__os_dup(int fd) {
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return r < 0 ? -errno : r;
}

ssize_t weft__os_send2(int fd, const void *a, size_t alen, const void *b, size_t blen,
                       bool nonblock) {
  struct iovec iov[2] = {{.iov_base = (void *)a, .iov_len = alen},
                         {.iov_base = (void *)b, .iov_len = blen}};
  struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
  int flags = MSG_NOSIGNAL | (nonblock ? MSG_DONTWAIT : 0);
  ssize_t n;
  while ((n = sendmsg(fd, &msg, flags)) < 0 && errno == EINTR) {
  }
  return n < 0 ? -errno : n;
}

/* ---- descriptors passed between processes ---- */

int weft__os_seqpacketpair(int fds[2]) {
  return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0 ? -errno : 0;
}

int weft__os_send_fds(int fd, const void *buf, size_t len, const int *fds, size_t n) {
  if (n > WEFT__OS_MAX_FDS) return -EINVAL;
  union {
    char buf[CMSG_SPACE(WEFT__OS_MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (n > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
  }
  ssize_t r;
  while ((r = sendmsg(fd, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  return r < 0 ? -errno : 0;
}

ssize_t weft__os_recv_fds(int fd, void *buf, size_t len, int *fds, size_t max, size_t *n,
                          bool nonblock) {
  union {
    char buf[CMSG_SPACE(WEFT__OS_MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                       .msg_controllen = sizeof control.buf};
  ssize_t r;
  while ((r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | (nonblock ? MSG_DONTWAIT : 0))) < 0 &&
         errno == EINTR) {
  }
  *n = 0;
  if (r < 0) return -errno;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int got;
      memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
      if (*n < max)
        fds[(*n)++] = got;
      else
        close(got);
    }
  }
  return r;
}

WEFT__HOT void weft__os_close_range(unsigned first, unsigned last) {
  if (first > last) return;
#ifdef SYS_close_range
  if (raw_syscall3(SYS_close_range, first, last, 0) == 0) return;
#endif
  long max = sysconf(_SC_OPEN_MAX); /* before Linux 5.9 */
  if (max > 0 && last >= (unsigned long)max) last = (unsigned)max - 1;
  for (unsigned fd = first; fd <= last; fd++) close((int)fd);
}

int weft__os_dup2(int oldfd, int newfd) {
  int r;
  while ((r = dup2(oldfd, newfd)) < 0 && errno == EINTR) {
  }
  return r < 0 ? -errno : 0;
}

bool weft__os_fd_valid(int fd) { return fcntl(fd, F_GETFD) >= 0; }

void weft__os_open_std_fds(void) {
  /* open returns the lowest free fd: the one closed, as those below are open */
  for (int fd = 0; fd < 3; fd++)
    if (!weft__os_fd_valid(fd) && open("/dev/null", O_RDWR) < 0) return;
}

void weft__os_raise_fd_limit(uint64_t *old) {
  struct rlimit rl;
  *old = 0;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  *old = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

void weft__os_set_fd_limit(uint64_t soft) {
  struct rlimit rl;
  if (soft == 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rl.rlim_cur = soft;
  setrlimit(RLIMIT_NOFILE, &rl);
}

bool weft__os_default_sigchld(void) {
  struct sigaction sa = {.sa_handler = SIG_DFL}, old;
  sigemptyset(&sa.sa_mask);
  return sigaction(SIGCHLD, &sa, &old) == 0 && old.sa_handler == SIG_IGN;
}

void weft__os_ignore_sigchld(void) {
  struct sigaction sa = {.sa_handler = SIG_IGN};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGCHLD, &sa, NULL);
}

/* ---- shared memory segments ---- */

/* ThreadSanitizer intercepts neither shm_open nor memfd_create, so it does
 * not see their fds created: it takes a later fstat, mmap or close of that
 * number for a race with whatever the number was before (an eventfd that
 * another thread closed, say). Those calls run with its checks off, which
 * also resets the new mapping's shadow instead of imitating a write. */
#if defined(__SANITIZE_THREAD__)
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
#define UNSEEN_FD_BEGIN() __tsan_ignore_thread_begin()
#define UNSEEN_FD_END() __tsan_ignore_thread_end()
#else
#define UNSEEN_FD_BEGIN() ((void)0)
#define UNSEEN_FD_END() ((void)0)
#endif

int weft__os_memfd(const char *name) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

int weft__os_shm_open(const char *name, bool create) {
  int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0);
  int fd = shm_open(name, flags, 0600);
  return fd < 0 ? -errno : fd;
}

int weft__os_shm_unlink(const char *name) { return shm_unlink(name) < 0 ? -errno : 0; }

int weft__os_ftruncate(int fd, size_t size) {
  if (size > (size_t)INT64_MAX) return -EINVAL;
  return ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
}

int weft__os_fd_size(int fd, size_t *size) {
  struct stat st;
  UNSEEN_FD_BEGIN();
  int r = fstat(fd, &st) < 0 ? -errno : 0;
  UNSEEN_FD_END();
  if (r == 0) *size = (size_t)st.st_size;
  return r;
}

void *weft__os_map_fd(int fd, size_t size) {
  UNSEEN_FD_BEGIN();
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  UNSEEN_FD_END();
  errno = err;
  return p == MAP_FAILED ? NULL : p;
}

void *weft__os_map_fd_at(int fd, size_t size, void *addr) {
  UNSEEN_FD_BEGIN();
  void *p = mmap(addr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
  int err = errno;
  UNSEEN_FD_END();
  errno = err;
  return p == MAP_FAILED ? NULL : p;
}

int weft__os_fd_identity(int fd, uint64_t *dev, uint64_t *ino) {
  struct stat st;
  UNSEEN_FD_BEGIN();
  int r = fstat(fd, &st) < 0 ? -errno : 0;
  UNSEEN_FD_END();
  if (r == 0) {
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
  }
  return r;
}

void weft__os_shm_close(int fd) {
  UNSEEN_FD_BEGIN();
  close(fd);
  UNSEEN_FD_END();
}

/* Parses one /proc/self/maps line "lo-hi perms ..."; 1 shared, 0 private,
 * -1 if addr is not inside it. */
static int maps_line_says(const char *line, uintptr_t addr) {
  char *end;
  unsigned long lo = strtoul(line, &end, 16);
  if (*end != '-') return -1;
  unsigned long hi = strtoul(end + 1, &end, 16);
  if (*end != ' ' || addr < lo || addr >= hi) return -1;
  return end[4] == 's' ? 1 : 0; /* perms are "rwxs" or "rwxp" */
}

int weft__os_mapping_shared(const void *addr) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  char buf[4096];
  size_t have = 0;
  int found = -ENOENT;
  for (;;) {
    ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    have += (size_t)n;
    buf[have] = '\0';
    char *line = buf, *nl;
    while (found == -ENOENT && (nl = strchr(line, '\n')) != NULL) {
      *nl = '\0';
      int r = maps_line_says(line, (uintptr_t)addr);
      if (r >= 0) found = r;
      line = nl + 1;
    }
    if (found != -ENOENT) break;
    have = (size_t)(buf + have - line);
    memmove(buf, line, have);
    if (have == sizeof buf - 1) have = 0; /* a line longer than the buffer: skip it */
  }
  close(fd);
  return found;
}

extern char **environ;

pid_t weft__os_spawn_self(int fd, const char *env, const void *mask) {
  size_t n = 0;
  while (environ[n] != NULL) n++;
  char **envp = malloc((n + 2) * sizeof *envp);
  if (envp == NULL) return -ENOMEM;
  memcpy(envp, environ, n * sizeof *envp);
  envp[n] = (char *)env;
  envp[n + 1] = NULL;
  char *argv[] = {program_invocation_name, NULL};
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  int r = posix_spawn_file_actions_init(&fa);
  if (r == 0) r = posix_spawn_file_actions_adddup2(&fa, fd, 3);
  if (r == 0) r = posix_spawn_file_actions_addclosefrom_np(&fa, 4);
  if (r == 0) r = posix_spawnattr_init(&attr);
  if (r == 0 && mask != NULL) {
    r = posix_spawnattr_setsigmask(&attr, mask);
    if (r == 0) r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  }
  pid_t pid = -1;
  if (r == 0) r = posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv, envp);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  free(envp);
  return r != 0 ? -r : pid;
}

int weft__os_send_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = weft__os_send(fd, p, len);
    if (n < 0) return (int)n;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int weft__os_read_all(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return -EPIPE;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* ---- async-signal-safe calls ---- */

int weft__os_write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -errno : -EIO;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

ssize_t weft__os_peek(pid_t pid, void *dst, const void *src, size_t len) {
  struct iovec local = {dst, len}, remote = {(void *)(uintptr_t)src, len};
  ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  return n < 0 ? -errno : n;
}

char weft__os_task_state(pid_t pid, pid_t tid) {
  /* Built by hand: snprintf is not async-signal-safe. */
  char path[64], *p = path;
  memcpy(p, "/proc/", 6);
  p = put_decimal(p + 6, pid);
  if (tid != 0) {
    memcpy(p, "/task/", 6);
    p = put_decimal(p + 6, tid);
  }
  memcpy(p, "/stat", 6);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return '?';
  char buf[512];
  ssize_t n = read(fd, buf, sizeof buf);
  weft__os_close(fd);
  /* "pid (comm) S ...": the name may hold ')' itself, so the last one. */
  const char *close = NULL;
  for (ssize_t i = 0; i < n; i++)
    if (buf[i] == ')') close = &buf[i];
  if (close == NULL || close + 2 >= buf + n || close[1] != ' ') return '?';
  return close[2];
}

/* The actions weft__os_signal_handle replaced, by signal number. */
static struct sigaction replaced[_NSIG] WEFT__COLD_BSS;

int weft__os_signal_handle(int sig, void (*handler)(int)) {
  if (sig <= 0 || sig >= _NSIG) return -EINVAL;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  return sigaction(sig, &sa, &replaced[sig]) < 0 ? -errno : 0;
}

int weft__os_signal_restore(int sig) {
  if (sig <= 0 || sig >= _NSIG) return -EINVAL;
  return sigaction(sig, &replaced[sig], NULL) < 0 ? -errno : 0;
}

int weft__os_errno_get(void) { return errno; }

void weft__os_errno_set(int value) { errno = value; }
