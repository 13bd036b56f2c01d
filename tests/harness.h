/* SPDX-License-Identifier: MIT */
/* Shared test harness: every suite defines weft_test_suite(); harness.c
 * runs it (each test in its own process, with a timeout) and prints
 * "<suite>: N passed, N failed". Helpers for tests of threads and processes. */
#ifndef WEFT_TEST_HARNESS_H
#define WEFT_TEST_HARNESS_H

#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <weft.h>

/* Sanitizers slow contended and byte loops down by up to an order of
 * magnitude: suites divide iteration counts by SLOW so that each test stays
 * well inside its timeout. */
#if defined(WEFT_SANITIZE_THREAD)
#define SLOW 10
#elif defined(WEFT_SANITIZE_ADDRESS)
#define SLOW 2
#else
#define SLOW 1
#endif

/* Defined by each suite file. */
Suite *weft_test_suite(void);

/* A test case with the standard per-test set-up and timeout (seconds). */
TCase *weft_tcase(const char *name, double timeout);

/* Runs the helper program with a scenario name; its stdout and stderr go to a
 * pipe whose read end is stored in *out_fd. Returns the helper's pid. */
pid_t helper_spawn(const char *scenario, int *out_fd);

/* Runs the helper with a scenario to the end (EOF, at most timeout
 * seconds), storing its output in out; returns its raw wait status. */
int helper_run(const char *scenario, char *out, size_t size, double timeout);

/* Reads everything available from fd until EOF or the deadline (seconds
 * from now) into buf (NUL-terminated). Returns the byte count. */
size_t read_all(int fd, char *buf, size_t size, double timeout);

/* Reads from fd into buf (NUL-terminated) until a full line containing
 * needle has arrived, EOF, or the deadline. Returns whether it arrived. */
bool read_until(int fd, char *buf, size_t size, const char *needle, double timeout);

/* Reads what fd holds right now, without waiting for more. */
size_t read_now(int fd, char *buf, size_t size);

/* Waits for pid (a child of the caller) and returns its raw wait status. */
int wait_status(pid_t pid);

/* Whether a process is gone: no /proc entry, or a zombie (state Z), since in
 * containers an orphan's zombie may never be reaped. */
bool pid_gone(pid_t pid);

/* Polls pid_gone until it holds or timeout seconds pass. */
bool wait_pid_gone(pid_t pid, double timeout);

/* Number of open file descriptors of the calling process. */
int count_fds(void);

/* Number of children of the calling process (any state, zombies included). */
int count_children(void);

/* Makes fork() fail with EAGAIN in the calling thread only (seccomp);
 * threads keep working elsewhere. Returns false if the kernel refused. */
bool block_fork_in_this_thread(void);

/* Monotonic time in seconds. */
double test_now(void);

/* Counts occurrences of needle in haystack. */
int count_substr(const char *haystack, const char *needle);

/* ---- threads, processes and polling. Those that fail the test (ck_assert)
 * are for the test's own thread, never for threads or children it starts. */

/* Sleeps s seconds in full, resuming after a signal cuts the sleep short. */
void nap(double s);

/* Sleeps about ms milliseconds, a poll interval (a signal may cut it short). */
void nap_ms(int ms);

/* Acquire load of an int shared with other threads or processes. */
static inline int ld(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

/* Release store of an int shared with other threads or processes. */
static inline void st(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* Atomic increment of a shared int; returns the new value. */
static inline int inc(int *p) { return __atomic_add_fetch(p, 1, __ATOMIC_ACQ_REL); }

/* Polls until *p >= v or the deadline passes; returns whether it held. */
bool wait_ge(const int *p, int v, double timeout);

/* Starts a pthread running fn(arg); fails the test if it cannot. */
pthread_t spawn(void *(*fn)(void *), void *arg);

/* Joins a pthread, dropping its result; fails the test if the join fails. */
void join(pthread_t t);

/* The scheduler state letter of a /proc stat file ('S', 'R', 'T', ...), '?' if unreadable. */
char stat_state(const char *path);

/* stat_state of a thread of the calling process, by its kernel tid. */
char thread_state(pid_t tid);

/* stat_state of a process, by pid. */
char process_state(pid_t pid);

/* Creates and starts a weft process running target(arg); fails the test if it cannot. */
weft_process start_process(weft_process_target target, void *arg);

/* Joins and closes a child within timeout, else kills (and SIGCONTs) it: its exit code, or 1000. */
int finish_process(weft_process p, double timeout);

/* weft_shared_alloc (visible to children forked later) that fails the test if it fails. */
void *shared(size_t size);

#endif
