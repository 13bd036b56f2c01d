/* Shared test harness: every suite defines weft_test_suite(); harness.c
 * runs it (each test in its own process, with a timeout) and prints
 * "<suite>: N passed, N failed". Helpers for tests of processes. */
#ifndef WEFT_TEST_HARNESS_H
#define WEFT_TEST_HARNESS_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <weft.h>

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

#endif
