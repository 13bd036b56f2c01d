/* SPDX-License-Identifier: MIT */
/* The platform layer: the only place in weft that makes raw system calls.
 * Every function returns 0 (or a documented non-negative value) on success
 * and a negated errno value on failure; none of them records a last error. */
#ifndef WEFT_OS_H
#define WEFT_OS_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Monotonic time in nanoseconds. */
int64_t weft__os_now_ns(void);

/* Sleeps until the monotonic deadline (ns), resuming after signals. */
int weft__os_sleep_until(int64_t deadline_ns);

/* Waits while *addr == val, until woken or the monotonic deadline (ns,
 * INT64_MAX: never). Works between processes (the futex is not private).
 * Returns 0 when woken (or on a spurious wake-up), -EAGAIN if *addr != val,
 * -ETIMEDOUT, -EINTR. */
int weft__os_futex_wait(uint32_t *addr, uint32_t val, int64_t deadline_ns);

/* Wakes up to n waiters of addr (INT32_MAX: all). Returns how many woke. */
int weft__os_futex_wake(uint32_t *addr, int n);

/* Whether process pid has exited (a zombie counts as exited) or does not
 * exist. A pid reused by a new process reads as alive. Async-signal-safe,
 * as is the next. */
bool weft__os_process_gone(pid_t pid);

/* Stores when process pid started (clock ticks since boot, from /proc) in
 * *ticks: with the pid it names a process for good, as a pid alone does
 * not once the pid is reused. -errno if it cannot be read. */
int weft__os_process_start_time(pid_t pid, uint64_t *ticks);

/* Whether the other end of socket fd was closed (nothing blocks). */
bool weft__os_peer_closed(int fd);

/* Whether process pid is stopped (by a signal, or by a tracer): 1 or 0, or
 * -errno if /proc cannot tell. */
int weft__os_process_stopped(pid_t pid);

/* How many threads the calling process has (the kernel's count), or a
 * negative code. */
int weft__os_thread_count(void);

/* Whether addr lies in a mapping shared with other processes (1), in one
 * private to the caller (0), or cannot be told (a negated errno), from
 * /proc/self/maps. Slow: for diagnostics only. */
int weft__os_mapping_shared(const void *addr);

/* Unmaps a mapping of weft__os_map_fd or weft__os_map_fd_at. */
int weft__os_unmap(void *addr, size_t size);

/* The kernel thread id of the caller. */
pid_t weft__os_gettid(void);

/* Opens a pidfd (close-on-exec) for a child of the caller. */
int weft__os_pidfd_open(pid_t pid);

/* A number that names the process behind pidfd for as long as the system
 * runs -- never given to another process, unlike its pid -- in *id:
 * pidfs's inode number (Linux >= 6.9, 64-bit). -EOPNOTSUPP where pidfds
 * carry no such number (before pidfs, every pidfd shares one inode). */
int weft__os_pidfd_id(int pidfd, uint64_t *id);

/* Sends sig to the process behind pidfd. */
int weft__os_pidfd_signal(int pidfd, int sig);

/* Reaps the process behind pidfd if it has exited. Returns 1 and stores
 * Python's exit code (n, or -signum) in *exitcode once reaped, 0 while it
 * runs (only with nohang), a negated errno (-ECHILD: reaped elsewhere). */
int weft__os_pidfd_reap(int pidfd, bool nohang, int *exitcode);

/* Waits until fd is readable or the deadline (ns, INT64_MAX: never) passes.
 * Returns 1 when readable, 0 on timeout; retries on EINTR. */
int weft__os_wait_readable(int fd, int64_t deadline_ns);

/* Forks. Returns the child's pid in the parent, 0 in the child, or a negated
 * errno (-EAGAIN, -ENOMEM) when no child was made. */
pid_t weft__os_fork(void);

/* Starts a fresh run of the calling program's own image (/proc/self/exe)
 * as a child, without copying the caller's address space (posix_spawn:
 * clone with CLONE_VM | CLONE_VFORK, then exec). The child gets the
 * caller's stdin, stdout and stderr, fd as its descriptor 3 and no other
 * descriptor, and the caller's environment plus the one assignment env
 * ("NAME=value"); its signal mask is *mask (a sigset_t), or the calling thread's when
 * mask is NULL. Returns the child's pid or a negated errno. */
pid_t weft__os_spawn_self(int fd, const char *env, const void *mask);

/* Sends exactly len bytes on socket fd (weft__os_send: no SIGPIPE),
 * retrying on short sends. 0 or -errno (-EPIPE once the peer closed). */
int weft__os_send_all(int fd, const void *buf, size_t len);

/* Reads exactly len bytes from fd, retrying on EINTR and short reads.
 * 0, -EPIPE at end of file before len bytes, or -errno. */
int weft__os_read_all(int fd, void *buf, size_t len);

/* Kills and reaps a child the caller cannot track (no pidfd could be opened). */
void weft__os_kill_and_reap(pid_t pid);

/* The pid of the caller's parent. */
pid_t weft__os_getppid(void);

/* Closes fd; an error is of no use to the caller (the fd is gone anyway). */
void weft__os_close(int fd);

/* Asks the kernel to send sig to the caller when its parent thread exits. */
int weft__os_set_parent_death_signal(int sig);

/* Names the calling OS thread: its first 15 bytes, cut at a UTF-8
 * character boundary, show in top -H and debuggers. */
void weft__os_set_thread_name(const char *name);

/* Reads the calling OS thread's name into buf (at least 16 bytes). */
void weft__os_get_thread_name(char *buf, size_t size);

/* Opens a cheap close-on-exec file descriptor that holds a slot in the fd
 * table, so that a later open is sure to find one. Returns it or -errno. */
int weft__os_reserve_fd(void);

/* How many CPUs the calling thread's affinity mask holds; -errno on failure. */
int weft__os_affinity_count(void);

/* The CPU quota of the calling process's cgroup (v2 cpu.max or v1
 * cfs_quota_us, the smallest along the way up to the root), in CPUs
 * rounded up; 0 when there is none or it cannot be read. */
int weft__os_cgroup_cpu_limit(void);

/* Gives the CPU to another runnable thread, if any. */
void weft__os_yield(void);

/* An asymmetric memory barrier (membarrier(2), private expedited): when it
 * returns 0, every running thread of the process has executed a full
 * barrier, so threads on the fast side of a Dekker-style handshake need
 * only a compiler barrier. Registers the process on first use (again in a
 * forked child). -errno where the kernel lacks it. */
int weft__os_membarrier(void);

/* The same across processes: weft__os_membarrier_global_register() makes
 * the calling process one that weft__os_membarrier_global() reaches (a
 * forked child must register again). Both return 0 or -errno. */
int weft__os_membarrier_global_register(void);
int weft__os_membarrier_global(void);

/* ---- byte streams (Pipe) ---- */

/* A connected pair of close-on-exec AF_UNIX stream sockets. */
int weft__os_socketpair(int fds[2]);

/* Sends up to len bytes without raising SIGPIPE (a closed peer gives
 * -EPIPE). Returns how many were sent, or -errno; retries on EINTR. */
ssize_t weft__os_send(int fd, const void *buf, size_t len);

/* Receives up to len bytes (peek: leaves them queued). Returns how many, 0
 * at end of file, or -errno; retries on EINTR. Does not block when
 * nonblock is set (-EAGAIN instead). */
ssize_t weft__os_recv(int fd, void *buf, size_t len, bool peek, bool nonblock);

/* shutdown(2): how is SHUT_RD, SHUT_WR or SHUT_RDWR. */
int weft__os_shutdown(int fd, int how);

/* Waits until fd is readable, writable (either, as asked) or the deadline
 * (ns, INT64_MAX: never) passes. Returns 1 when ready, 0 on timeout. */
int weft__os_wait_fd(int fd, bool readable, bool writable, int64_t deadline_ns);

/* Waits until one of n fds is readable (events are set here): the number
 * ready (revents tell which), 0 at the deadline, or -errno. */
struct pollfd;
int weft__os_poll_readable(struct pollfd *fds, size_t n, int64_t deadline_ns);

/* dup(2) with close-on-exec: the new fd, or -errno. */
int weft__os_dup(int fd);

/* Sends a (alen bytes) then b (blen bytes) in one gather write, without
 * raising SIGPIPE. Returns how many bytes of the two were sent, or -errno
 * (-EPIPE for a closed peer; -EAGAIN when nonblock is set and nothing fits);
 * retries on EINTR. */
ssize_t weft__os_send2(int fd, const void *a, size_t alen, const void *b, size_t blen,
                       bool nonblock);

/* ---- descriptors passed between processes ---- */

/* A connected pair of close-on-exec AF_UNIX SOCK_SEQPACKET sockets: each
 * send is one message, received whole. */
int weft__os_seqpacketpair(int fds[2]);

/* Sends len bytes as one message with n (at most WEFT__OS_MAX_FDS) fds
 * attached (SCM_RIGHTS), without raising SIGPIPE. 0 or -errno. */
#define WEFT__OS_MAX_FDS 8
int weft__os_send_fds(int fd, const void *buf, size_t len, const int *fds, size_t n);

/* Receives one message of at most len bytes and the fds attached to it (at
 * most max, made close-on-exec; *n says how many; any beyond max are
 * closed). Returns its length, 0 at end of file, or -errno; retries on
 * EINTR. Does not block when nonblock is set (-EAGAIN instead). */
ssize_t weft__os_recv_fds(int fd, void *buf, size_t len, int *fds, size_t max, size_t *n,
                          bool nonblock);

/* Closes every fd from first to last (inclusive). */
void weft__os_close_range(unsigned first, unsigned last);

/* dup2(2): newfd becomes a copy of oldfd that exec keeps open. */
int weft__os_dup2(int oldfd, int newfd);

/* Whether fd is open. */
bool weft__os_fd_valid(int fd);

/* Opens /dev/null on whichever of fds 0, 1 and 2 is closed. */
void weft__os_open_std_fds(void);

/* Raises the soft limit on open fds to the hard one; stores the old soft
 * limit in *old, for weft__os_set_fd_limit. */
void weft__os_raise_fd_limit(uint64_t *old);
void weft__os_set_fd_limit(uint64_t soft);

/* Sets SIGCHLD's action to the default (children are then kept until
 * reaped) and returns whether it was ignored; weft__os_ignore_sigchld
 * ignores it again. */
bool weft__os_default_sigchld(void);
void weft__os_ignore_sigchld(void);

/* ---- shared memory segments ---- */

/* An anonymous memory file (memfd), close-on-exec; name shows in
 * /proc/PID/fd. Returns the fd or -errno. */
int weft__os_memfd(const char *name);

/* Opens POSIX shared memory object name ("/x"), read-write, close-on-exec;
 * create: it must not exist yet (O_CREAT|O_EXCL, mode 0600). Returns the fd
 * or -errno (-EEXIST, -ENOENT, ...). */
int weft__os_shm_open(const char *name, bool create);

/* Removes the name of a shared memory object. */
int weft__os_shm_unlink(const char *name);

/* Sets the size of the file behind fd. */
int weft__os_ftruncate(int fd, size_t size);

/* Stores the size of the file behind fd in *size. */
int weft__os_fd_size(int fd, size_t *size);

/* Maps size bytes of the file behind fd, shared and read-write. Returns
 * NULL (errno set) on failure. Unmap with weft__os_unmap. */
void *weft__os_map_fd(int fd, size_t size);

/* The same at addr, which must be free: NULL with errno EEXIST if
 * something is mapped there. Another address than addr if the kernel (or
 * a sanitizer) took addr as a hint only. */
void *weft__os_map_fd_at(int fd, size_t size, void *addr);

/* Stores the device and inode of the file behind fd: what tells an object
 * from a later one that took the same name. */
int weft__os_fd_identity(int fd, uint64_t *dev, uint64_t *ino);

/* Closes an fd from weft__os_memfd or weft__os_shm_open. */
void weft__os_shm_close(int fd);

/* ---- async-signal-safe calls, for the dump's signal path (dump.c) ----
 * Each makes system calls only: no stdio, no allocation, no lock. */

/* Writes all len bytes to fd, going on after short writes and EINTR.
 * 0 or a negated errno. */
int weft__os_write_all(int fd, const void *buf, size_t len);

/* Copies up to len bytes at src, in process pid (the caller's own), into
 * dst through the kernel (process_vm_readv), so that memory freed and
 * unmapped meanwhile reads as an error instead of a fault. Returns how many
 * bytes were copied (fewer when the range runs into unmapped memory), or a
 * negated errno (-EFAULT: nothing mapped at src). */
ssize_t weft__os_peek(pid_t pid, void *dst, const void *src, size_t len);

/* The scheduler state letter ('R', 'S', 'D', 'T', 'Z', ...) of thread tid
 * of the calling process, or of process pid when tid is 0; '?' if it
 * cannot be read (gone). */
char weft__os_task_state(pid_t pid, pid_t tid);

/* Makes handler the action of signal sig (SA_RESTART, so that the calls
 * it interrupts go on), keeping the action it replaces, which
 * weft__os_signal_restore puts back. 0 or a negated errno. Not
 * async-signal-safe: for set-up only. */
int weft__os_signal_handle(int sig, void (*handler)(int));
int weft__os_signal_restore(int sig);

/* The errno of the calling thread, saved and restored around a signal
 * handler. */
int weft__os_errno_get(void);
void weft__os_errno_set(int value);

#endif
