/* SPDX-License-Identifier: MIT */
/* Tests of weft/pipe.h: Python's multiprocessing.Pipe. Round trips on both
 * kinds of pipe, ordering and content of many and of large messages between
 * processes, message boundaries (EMSGSIZE leaves the message), timeouts that
 * consume nothing, a message completed across timed-out recvs and across a
 * cancelled recv, end of file and a peer killed mid-send, EPIPE without
 * SIGPIPE, fileno in poll(2) and epoll, argument checks, and no leaked fds.
 *
 * Threads and child processes never call ck_assert: threads record what
 * they saw and children return an exit code, which the test asserts. A
 * message caught half-sent comes from a child held with SIGSTOP (state T in
 * /proc) while its send is blocked on the full socket, never from a sleep.
 * Every wait has a timeout. */
#define _GNU_SOURCE
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* A recv that should succeed gets this long; hitting it is a failure, not a
 * hang. */
#define LONG 10.0

#define MiB ((size_t)1 << 20)

/* ---- helpers ---- */

/* A byte that depends on the message and on its offset, so a reordered,
 * shifted or mixed-up chunk shows. */
static unsigned char byte_at(uint64_t seed, size_t i) {
  return (unsigned char)((((uint64_t)i ^ (seed << 40)) * 0x9E3779B97F4A7C15ull) >> 56);
}

static void fill(void *buf, size_t len, uint64_t seed) {
  unsigned char *p = buf;
  for (size_t i = 0; i < len; i++) p[i] = byte_at(seed, i);
}

static bool same(const void *buf, size_t len, uint64_t seed) {
  const unsigned char *p = buf;
  for (size_t i = 0; i < len; i++)
    if (p[i] != byte_at(seed, i)) return false;
  return true;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  ck_assert_ptr_nonnull(p);
  return p;
}

static void make_pipe(weft_conn **a, weft_conn **b, bool one_way) {
  ck_assert_int_eq(weft_pipe(a, b, .one_way = one_way), 0);
  ck_assert_ptr_nonnull(*a);
  ck_assert_ptr_nonnull(*b);
}

static bool starts_with(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void send_ok(weft_conn *c, const void *buf, size_t len) {
  ck_assert_int_eq(weft_conn_send(c, buf, len), 0);
}

/* Receives one message and checks its length and content. */
static void recv_expect(weft_conn *c, void *buf, size_t cap, size_t want, uint64_t seed) {
  size_t len = 12345;
  ck_assert_int_eq(weft_conn_recv(c, buf, cap, &len, LONG), 0);
  ck_assert_uint_eq(len, want);
  ck_assert(same(buf, len, seed));
}

static bool wait_state(const char *path, char state, double timeout) {
  double end = test_now() + timeout;
  while (stat_state(path) != state) {
    if (test_now() > end) return false;
    nap(0.001);
  }
  return true;
}

/* Stops a child with SIGSTOP and waits until it is stopped (state T). */
static bool stop_process(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  return kill(pid, SIGSTOP) == 0 && wait_state(path, 'T', LONG);
}

/* Waits until a thread of this process sleeps in the kernel (state S). */
static bool wait_thread_sleeping(pid_t tid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
  return wait_state(path, 'S', LONG);
}

/* What a child process works with: the two ends, and how much to send. */
struct ends {
  weft_conn *mine, *theirs; /* the child closes theirs */
  size_t size;
  int count;
  uint64_t seed;
};

/* ---- duplex and one-way ---- */

START_TEST(duplex_round_trip_both_ways) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  char buf[64];
  size_t len = 0;
  send_ok(a, "ping", 4);
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, LONG), 0);
  ck_assert_uint_eq(len, 4);
  ck_assert(memcmp(buf, "ping", 4) == 0);
  send_ok(b, "pong!", 5);
  ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, LONG), 0);
  ck_assert_uint_eq(len, 5);
  ck_assert(memcmp(buf, "pong!", 5) == 0);
  /* Both directions at once: each end's queue is its own. */
  send_ok(a, "1", 1);
  send_ok(b, "2", 1);
  ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, LONG), 0);
  ck_assert(len == 1 && buf[0] == '2');
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, LONG), 0);
  ck_assert(len == 1 && buf[0] == '1');
  ck_assert_int_ge(weft_conn_fileno(a), 0);
  ck_assert_int_ne(weft_conn_fileno(a), weft_conn_fileno(b));
  weft_conn_close(a);
  weft_conn_close(b);
}
END_TEST

START_TEST(one_way_refuses_the_wrong_direction) {
  weft_conn *r, *w;
  make_pipe(&r, &w, true);
  char buf[16];
  size_t len = 0;
  send_ok(w, "abc", 3);
  ck_assert_int_eq(weft_conn_recv(r, buf, sizeof buf, &len, LONG), 0);
  ck_assert_uint_eq(len, 3);
  ck_assert(memcmp(buf, "abc", 3) == 0);

  ck_assert_int_eq(weft_conn_send(r, "x", 1), WEFT_EPERM);
  ck_assert(starts_with(weft_last_error(), "weft_conn_send: "));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EPERM);
  ck_assert_int_eq(weft_conn_send(r, NULL, 0), WEFT_EPERM);
  ck_assert_int_eq(weft_conn_recv(w, buf, sizeof buf, &len, 0), WEFT_EPERM);
  ck_assert(starts_with(weft_last_error(), "weft_conn_recv: "));
  ck_assert_int_eq(weft_conn_recv(w, buf, sizeof buf, &len, LONG), WEFT_EPERM);
  ck_assert_int_eq(weft_conn_poll(w, 0), WEFT_EPERM);
  ck_assert(starts_with(weft_last_error(), "weft_conn_poll: "));

  /* The refused calls changed nothing: the pipe still works. */
  ck_assert_int_eq(weft_conn_poll(r, 0), 0);
  send_ok(w, "de", 2);
  ck_assert_int_eq(weft_conn_poll(r, LONG), 1);
  ck_assert_int_eq(weft_conn_recv(r, buf, sizeof buf, &len, LONG), 0);
  ck_assert(len == 2 && memcmp(buf, "de", 2) == 0);

  /* The sending end learns when the receiving end is gone. */
  weft_conn_close(r);
  ck_assert_int_eq(weft_conn_send(w, "x", 1), WEFT_EPIPE);
  weft_conn_close(w);
}
END_TEST

START_TEST(one_way_reader_sees_eof) {
  weft_conn *r, *w;
  make_pipe(&r, &w, true);
  char buf[8];
  size_t len = 0;
  send_ok(w, "z", 1);
  weft_conn_close(w);
  ck_assert_int_eq(weft_conn_recv(r, buf, sizeof buf, &len, LONG), 0);
  ck_assert(len == 1 && buf[0] == 'z');
  ck_assert_int_eq(weft_conn_poll(r, LONG), 1);
  ck_assert_int_eq(weft_conn_recv(r, buf, sizeof buf, &len, LONG), WEFT_EEOF);
  weft_conn_close(r);
}
END_TEST

/* ---- messages: empty, boundaries, order ---- */

START_TEST(empty_messages_keep_their_place) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  char buf[8];
  size_t len = 99;
  send_ok(a, NULL, 0);
  send_ok(a, "x", 1);
  send_ok(a, buf, 0);
  send_ok(a, NULL, 0);
  ck_assert_int_eq(weft_conn_poll(b, 0), 1);
  ck_assert_int_eq(weft_conn_recv(b, NULL, 0, &len, LONG), 0);
  ck_assert_uint_eq(len, 0);
  /* A message longer than a zero-sized buffer: its length, and it stays. */
  ck_assert_int_eq(weft_conn_recv(b, NULL, 0, &len, LONG), WEFT_EMSGSIZE);
  ck_assert_uint_eq(len, 1);
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, LONG), 0);
  ck_assert(len == 1 && buf[0] == 'x');
  len = 99;
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, LONG), 0);
  ck_assert_uint_eq(len, 0);
  len = 99;
  ck_assert_int_eq(weft_conn_recv(b, buf, 0, &len, 0), 0);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, 0), WEFT_ETIMEDOUT);
  weft_conn_close(a);
  weft_conn_close(b);
}
END_TEST

START_TEST(emsgsize_leaves_the_message) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  char big[100], small[10];
  size_t len = 0;
  fill(big, sizeof big, 1);
  send_ok(a, big, sizeof big);
  fill(big, 7, 2);
  send_ok(a, big, 7);
  memset(big, 0, sizeof big);

  ck_assert_int_eq(weft_conn_recv(b, small, sizeof small, &len, LONG), WEFT_EMSGSIZE);
  ck_assert_uint_eq(len, 100);
  ck_assert(starts_with(weft_last_error(), "weft_conn_recv: the message is 100 bytes"));
  /* Still there: poll sees it, a second small buffer is refused again. */
  ck_assert_int_eq(weft_conn_poll(b, 0), 1);
  ck_assert_int_eq(weft_conn_recv(b, small, 99, &len, 0), WEFT_EMSGSIZE);
  ck_assert_uint_eq(len, 100);
  recv_expect(b, big, sizeof big, 100, 1);
  /* The next message is whole too: the boundary was kept. */
  ck_assert_int_eq(weft_conn_recv(b, small, 6, &len, 0), WEFT_EMSGSIZE);
  ck_assert_uint_eq(len, 7);
  recv_expect(b, small, 7, 7, 2);
  ck_assert_int_eq(weft_conn_poll(b, 0), 0);
  weft_conn_close(a);
  weft_conn_close(b);
}
END_TEST

START_TEST(timeouts_consume_nothing) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  char buf[32];
  size_t len = 0;
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, 0), WEFT_ETIMEDOUT);
  ck_assert(starts_with(weft_last_error(), "weft_conn_recv: no message within"));
  double t0 = test_now();
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, 0.05), WEFT_ETIMEDOUT);
  double waited = test_now() - t0;
  ck_assert_double_ge(waited, 0.045);
  ck_assert_double_lt(waited, 5.0);
  ck_assert_int_eq(weft_conn_poll(b, 0), 0);
  t0 = test_now();
  ck_assert_int_eq(weft_conn_poll(b, 0.05), 0);
  ck_assert_double_ge(test_now() - t0, 0.045);

  send_ok(a, "first", 5);
  send_ok(a, "second", 6);
  ck_assert_int_eq(weft_conn_poll(b, 0), 1);
  ck_assert_int_eq(weft_conn_poll(b, 0.05), 1); /* poll reads nothing */
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, 0), 0);
  ck_assert(len == 5 && memcmp(buf, "first", 5) == 0);
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, 0), 0);
  ck_assert(len == 6 && memcmp(buf, "second", 6) == 0);
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, 0), WEFT_ETIMEDOUT);
  weft_conn_close(a);
  weft_conn_close(b);
}
END_TEST

static size_t size_of_message(int i) { return i % 7 == 0 ? 0 : ((size_t)i * 7919u) % 70000u; }

/* Echoes count messages back. */
static int echo_child(void *arg) {
  struct ends *e = arg;
  weft_conn_close(e->theirs);
  char *buf = malloc(70000);
  if (buf == NULL) return 9;
  for (int i = 0; i < e->count; i++) {
    size_t len = 0;
    int err = weft_conn_recv(e->mine, buf, 70000, &len, LONG);
    if (err != 0) return 10;
    if (len != size_of_message(i) || !same(buf, len, (uint64_t)i)) return 11;
    if (weft_conn_send(e->mine, buf, len) != 0) return 12;
  }
  free(buf);
  return 0;
}

static void *send_numbered(void *arg) {
  struct ends *e = arg;
  char *buf = malloc(70000);
  intptr_t failures = buf == NULL;
  for (int i = 0; buf != NULL && i < e->count; i++) {
    size_t len = size_of_message(i);
    fill(buf, len, (uint64_t)i);
    if (weft_conn_send(e->mine, buf, len) != 0) failures++;
  }
  free(buf);
  return (void *)failures;
}

START_TEST(many_messages_in_order_between_processes) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  struct ends child = {.mine = b, .theirs = a, .count = 3000 / SLOW};
  weft_process p = start_process(echo_child, &child);
  weft_conn_close(b);
  /* One thread sends while this one receives the echoes on the same end;
   * sending everything first would fill both directions and deadlock. */
  struct ends parent = {.mine = a, .count = child.count};
  pthread_t t = spawn(send_numbered, &parent);
  char *buf = xmalloc(70000);
  int bad = 0;
  for (int i = 0; i < child.count; i++) {
    size_t len = 0;
    int err = weft_conn_recv(a, buf, 70000, &len, LONG);
    if (err != 0 || len != size_of_message(i) || !same(buf, len, (uint64_t)i)) {
      bad = i + 1;
      break;
    }
  }
  void *failures = NULL;
  ck_assert_int_eq(pthread_join(t, &failures), 0);
  ck_assert_int_eq(bad, 0);
  ck_assert_ptr_null(failures);
  ck_assert_int_eq(finish_process(p, LONG), 0);
  /* The child is gone and this process closed its copy: end of file. */
  size_t len = 0;
  ck_assert_int_eq(weft_conn_recv(a, buf, 70000, &len, LONG), WEFT_EEOF);
  free(buf);
  weft_conn_close(a);
}
END_TEST

/* Sends 16 MiB then 1 MiB, then receives 1 MiB and 16 MiB and checks them. */
static int large_child(void *arg) {
  struct ends *e = arg;
  weft_conn_close(e->theirs);
  size_t cap = 16 * MiB, len = 0;
  char *buf = malloc(cap);
  if (buf == NULL) return 9;
  fill(buf, 16 * MiB, 16);
  if (weft_conn_send(e->mine, buf, 16 * MiB) != 0) return 10;
  fill(buf, MiB, 1);
  if (weft_conn_send(e->mine, buf, MiB) != 0) return 11;
  memset(buf, 0, cap);
  if (weft_conn_recv(e->mine, buf, cap, &len, LONG) != 0) return 12;
  if (len != MiB || !same(buf, len, 101)) return 13;
  if (weft_conn_recv(e->mine, buf, cap, &len, LONG) != 0) return 14;
  if (len != 16 * MiB || !same(buf, len, 116)) return 15;
  free(buf);
  return 0;
}

START_TEST(large_messages_between_processes) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  struct ends child = {.mine = b, .theirs = a};
  weft_process p = start_process(large_child, &child);
  weft_conn_close(b);
  size_t cap = 16 * MiB, len = 0;
  char *buf = xmalloc(cap);
  /* A buffer one byte short is refused and the message kept. */
  ck_assert_int_eq(weft_conn_recv(a, buf, 16 * MiB - 1, &len, LONG), WEFT_EMSGSIZE);
  ck_assert_uint_eq(len, 16 * MiB);
  recv_expect(a, buf, cap, 16 * MiB, 16);
  recv_expect(a, buf, cap, MiB, 1);
  fill(buf, MiB, 101);
  send_ok(a, buf, MiB);
  fill(buf, 16 * MiB, 116);
  send_ok(a, buf, 16 * MiB);
  ck_assert_int_eq(finish_process(p, LONG * 3), 0);
  free(buf);
  weft_conn_close(a);
}
END_TEST

/* ---- partial messages ---- */

static void *send_one_big(void *arg) {
  struct ends *e = arg;
  char *buf = malloc(e->size);
  if (buf == NULL) return (void *)1;
  fill(buf, e->size, e->seed);
  intptr_t err = weft_conn_send(e->mine, buf, e->size);
  free(buf);
  return (void *)err;
}

START_TEST(tiny_timeouts_complete_a_large_message) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  for (int round = 0; round < 4; round++) {
    struct ends e = {.mine = b, .size = 4 * MiB, .seed = 40 + (uint64_t)round};
    pthread_t t = spawn(send_one_big, &e);
    char *buf = xmalloc(e.size);
    size_t len = 0;
    int err;
    double end = test_now() + LONG;
    /* Each recv gives up almost at once; what it read must carry over. */
    while ((err = weft_conn_recv(a, buf, e.size, &len, round == 0 ? 0 : 0.0002)) ==
               WEFT_ETIMEDOUT &&
           test_now() < end) {
    }
    void *sent = NULL;
    ck_assert_int_eq(pthread_join(t, &sent), 0);
    ck_assert_ptr_null(sent);
    ck_assert_int_eq(err, 0);
    ck_assert_uint_eq(len, e.size);
    ck_assert(same(buf, len, e.seed));
    free(buf);
  }
  ck_assert_int_eq(weft_conn_poll(a, 0), 0);
  weft_conn_close(a);
  weft_conn_close(b);
}
END_TEST

/* Sends one message of e->size bytes (the parent stops it part-way). */
static int send_big_child(void *arg) {
  struct ends *e = arg;
  weft_conn_close(e->theirs);
  char *buf = malloc(e->size);
  if (buf == NULL) return 9;
  fill(buf, e->size, e->seed);
  int err = weft_conn_send(e->mine, buf, e->size);
  free(buf);
  return err == 0 ? 0 : 10;
}

struct canceller {
  weft_conn *c;
  char *buf;
  size_t cap;
  pid_t tid;
  int err; /* stays 1 if the recv never returned */
};

static void *recv_until_cancelled(void *arg) {
  struct canceller *k = arg;
  pthread_setcanceltype(PTHREAD_CANCEL_DEFERRED, NULL);
  __atomic_store_n(&k->tid, gettid(), __ATOMIC_RELEASE);
  size_t len = 0;
  k->err = weft_conn_recv(k->c, k->buf, k->cap, &len, WEFT_FOREVER);
  return NULL;
}

/* Starts a thread blocked in recv(FOREVER) on c, cancels it once it sleeps,
 * and checks that the cancellation ended it inside the call. */
static void cancel_a_blocked_recv(weft_conn *c, char *buf, size_t cap) {
  struct canceller k = {.c = c, .buf = buf, .cap = cap, .err = 1};
  pthread_t t = spawn(recv_until_cancelled, &k);
  double end = test_now() + LONG;
  while (__atomic_load_n(&k.tid, __ATOMIC_ACQUIRE) == 0 && test_now() < end) nap(0.001);
  ck_assert(wait_thread_sleeping(__atomic_load_n(&k.tid, __ATOMIC_ACQUIRE)));
  ck_assert_int_eq(pthread_cancel(t), 0);
  void *res = NULL;
  ck_assert_int_eq(pthread_join(t, &res), 0);
  ck_assert_ptr_eq(res, PTHREAD_CANCELED);
  ck_assert_int_eq(k.err, 1);
}

START_TEST(partial_message_survives_timeouts_and_cancellation) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  char small[16];
  size_t len = 0;
  /* No message at all: a cancelled recv leaves the end as it was. */
  cancel_a_blocked_recv(a, small, sizeof small);

  struct ends child = {.mine = b, .theirs = a, .size = 4 * MiB, .seed = 77};
  weft_process p = start_process(send_big_child, &child);
  weft_conn_close(b);
  pid_t pid = weft_process_pid(p);
  char *buf = xmalloc(child.size);
  /* Readable: the child has sent the start of the message and, with the
   * socket full long before 4 MiB, is blocked sending the rest. */
  ck_assert_int_eq(weft_conn_poll(a, LONG), 1);
  ck_assert(stop_process(pid));
  ck_assert_int_eq(weft_conn_recv(a, buf, child.size, &len, 0.02), WEFT_ETIMEDOUT);
  ck_assert(starts_with(weft_last_error(), "weft_conn_recv: a message is still arriving"));
  ck_assert_int_eq(weft_conn_recv(a, buf, child.size, &len, 0), WEFT_ETIMEDOUT);
  /* The message keeps its size while half read. */
  ck_assert_int_eq(weft_conn_recv(a, small, sizeof small, &len, 0), WEFT_EMSGSIZE);
  ck_assert_uint_eq(len, child.size);
  /* Cancelled while the part read is kept in the end: nothing is lost. */
  memset(buf, 0, child.size);
  cancel_a_blocked_recv(a, buf, child.size);
  memset(buf, 0, child.size);
  ck_assert_int_eq(kill(pid, SIGCONT), 0);
  recv_expect(a, buf, child.size, child.size, 77);
  ck_assert_int_eq(finish_process(p, LONG), 0);
  ck_assert_int_eq(weft_conn_recv(a, small, sizeof small, &len, LONG), WEFT_EEOF);
  free(buf);
  weft_conn_close(a);
}
END_TEST

/* Sends messages of 1 to 200 KB, numbered, until cancelled. */
static void *send_until_cancelled(void *arg) {
  struct canceller *k = arg;
  char *buf = malloc(200000);
  if (buf == NULL) return NULL;
  pthread_cleanup_push(free, buf);
  __atomic_store_n(&k->tid, gettid(), __ATOMIC_RELEASE);
  for (uint64_t i = 0;; i++) {
    size_t len = 1 + (size_t)(i * 48271u) % 200000u;
    fill(buf, len, i);
    if (weft_conn_send(k->c, buf, len) != 0) break;
    pthread_testcancel(); /* a cancel that came while a send finished its message */
  }
  pthread_cleanup_pop(1);
  return NULL;
}

START_TEST(cancelled_send_never_leaves_half_a_message) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  char *buf = xmalloc(200000);
  for (int round = 0; round < 10 / SLOW + 2; round++) {
    struct canceller k = {.c = b};
    pthread_t t = spawn(send_until_cancelled, &k);
    /* Blocked: the socket is full, the sender sleeps in the kernel. */
    double end = test_now() + LONG;
    while (__atomic_load_n(&k.tid, __ATOMIC_ACQUIRE) == 0 && test_now() < end) nap(0.001);
    ck_assert(wait_thread_sleeping(__atomic_load_n(&k.tid, __ATOMIC_ACQUIRE)));
    ck_assert_int_eq(pthread_cancel(t), 0);
    /* A sender caught mid-message finishes it before the cancellation acts,
     * so keep reading until the thread is gone. */
    uint64_t i = 0;
    bool joined = false;
    int bad = 0;
    while (!joined && test_now() < end) {
      size_t len = 0;
      int err = weft_conn_recv(a, buf, 200000, &len, 0.001);
      if (err == 0) {
        if (len != 1 + (size_t)(i * 48271u) % 200000u || !same(buf, len, i)) bad++;
        i++;
      } else if (err != WEFT_ETIMEDOUT) {
        bad++;
      }
      joined = pthread_tryjoin_np(t, NULL) == 0;
    }
    ck_assert(joined);
    /* Whatever it left in the socket is whole messages, then this one. */
    send_ok(b, "end", 3);
    for (;;) {
      size_t len = 0;
      ck_assert_int_eq(weft_conn_recv(a, buf, 200000, &len, LONG), 0);
      if (len == 3 && memcmp(buf, "end", 3) == 0) break;
      if (len != 1 + (size_t)(i * 48271u) % 200000u || !same(buf, len, i)) bad++;
      i++;
    }
    ck_assert_int_eq(bad, 0);
    ck_assert_uint_gt(i, 0);
  }
  free(buf);
  weft_conn_close(a);
  weft_conn_close(b);
}
END_TEST

/* ---- end of file and closed peers ---- */

static int send_three_and_exit(void *arg) {
  struct ends *e = arg;
  weft_conn_close(e->theirs);
  for (int i = 0; i < 3; i++) {
    char msg[16];
    fill(msg, sizeof msg, (uint64_t)i);
    if (weft_conn_send(e->mine, msg, (size_t)i * 5) != 0) return 10 + i;
  }
  return 0; /* exiting closes the end */
}

START_TEST(eof_after_the_remaining_messages) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  struct ends child = {.mine = b, .theirs = a};
  weft_process p = start_process(send_three_and_exit, &child);
  ck_assert_int_eq(finish_process(p, LONG), 0);
  char buf[32];
  size_t len = 0;
  /* This process still holds a copy of the child's end: no end of file. */
  for (int i = 0; i < 3; i++) recv_expect(a, buf, sizeof buf, (size_t)i * 5, (uint64_t)i);
  ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, 0.02), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_conn_poll(a, 0), 0);
  weft_conn_close(b);
  ck_assert_int_eq(weft_conn_poll(a, 0), 1);
  ck_assert_int_eq(weft_conn_poll(a, LONG), 1);
  ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, 0), WEFT_EEOF);
  ck_assert(starts_with(weft_last_error(), "weft_conn_recv: the other end is closed"));
  ck_assert_int_eq(weft_last_error_code(), WEFT_EEOF);
  ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, LONG), WEFT_EEOF);
  ck_assert_int_eq(weft_conn_recv(a, NULL, 0, &len, WEFT_FOREVER), WEFT_EEOF);
  /* The peer is gone for sending too. */
  ck_assert_int_eq(weft_conn_send(a, "x", 1), WEFT_EPIPE);
  weft_conn_close(a);
}
END_TEST

static void *recv_once(void *arg) {
  struct canceller *k = arg;
  __atomic_store_n(&k->tid, gettid(), __ATOMIC_RELEASE);
  size_t len = 0;
  k->err = weft_conn_recv(k->c, k->buf, k->cap, &len, LONG);
  return NULL;
}

START_TEST(blocked_recv_wakes_at_eof) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  char buf[8];
  struct canceller k = {.c = a, .buf = buf, .cap = sizeof buf, .err = 1};
  pthread_t t = spawn(recv_once, &k);
  double end = test_now() + LONG;
  while (__atomic_load_n(&k.tid, __ATOMIC_ACQUIRE) == 0 && test_now() < end) nap(0.001);
  ck_assert(wait_thread_sleeping(__atomic_load_n(&k.tid, __ATOMIC_ACQUIRE)));
  double t0 = test_now();
  weft_conn_close(b);
  join(t);
  ck_assert_int_eq(k.err, WEFT_EEOF);
  ck_assert_double_lt(test_now() - t0, LONG / 2);
  weft_conn_close(a);
}
END_TEST

START_TEST(peer_killed_mid_send_gives_eof) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  struct ends child = {.mine = b, .theirs = a, .size = 16 * MiB, .seed = 9};
  weft_process p = start_process(send_big_child, &child);
  weft_conn_close(b);
  char *buf = xmalloc(child.size);
  size_t len = 0;
  ck_assert_int_eq(weft_conn_poll(a, LONG), 1);
  ck_assert(stop_process(weft_process_pid(p)));
  ck_assert_int_eq(weft_conn_recv(a, buf, child.size, &len, 0), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft_process_kill(p), 0);
  ck_assert_int_eq(weft_process_join(p, LONG), 0);
  int code = 0;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, -SIGKILL);
  weft_process_close(p);
  double t0 = test_now();
  ck_assert_int_eq(weft_conn_recv(a, buf, child.size, &len, LONG), WEFT_EEOF);
  ck_assert_double_lt(test_now() - t0, LONG / 2);
  ck_assert_ptr_nonnull(strstr(weft_last_error(), "cut short"));
  ck_assert_int_eq(weft_conn_recv(a, buf, child.size, &len, LONG), WEFT_EEOF);
  ck_assert_ptr_null(strstr(weft_last_error(), "cut short"));
  free(buf);
  weft_conn_close(a);
}
END_TEST

/* Waits for data, then exits without reading it. */
static int exit_when_readable(void *arg) {
  struct ends *e = arg;
  weft_conn_close(e->theirs);
  return weft_conn_poll(e->mine, LONG) == 1 ? 0 : 10;
}

START_TEST(send_to_a_closed_peer_is_epipe_not_sigpipe) {
  signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would end this test's process */
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  weft_conn_close(b);
  ck_assert_int_eq(weft_conn_send(a, "x", 1), WEFT_EPIPE);
  ck_assert_str_eq(weft_last_error(), "weft_conn_send: the other end is closed");
  ck_assert_int_eq(weft_conn_send(a, NULL, 0), WEFT_EPIPE);
  weft_conn_close(a);

  /* The peer closes with a message of ours unread (the kernel reports a
   * reset first): still EPIPE, and the other way round end of file. */
  make_pipe(&a, &b, false);
  send_ok(a, "unread", 6);
  weft_conn_close(b);
  ck_assert_int_eq(weft_conn_send(a, "x", 1), WEFT_EPIPE);
  weft_conn_close(a);
  make_pipe(&a, &b, false);
  send_ok(a, "unread", 6);
  weft_conn_close(b);
  size_t len = 0;
  char buf[8];
  ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, LONG), WEFT_EEOF);
  ck_assert_int_eq(weft_conn_send(a, "x", 1), WEFT_EPIPE);
  weft_conn_close(a);

  /* A send blocked on a full socket returns when the peer process exits. */
  make_pipe(&a, &b, false);
  struct ends child = {.mine = b, .theirs = a};
  weft_process p = start_process(exit_when_readable, &child);
  weft_conn_close(b);
  char *big = xmalloc(16 * MiB);
  fill(big, 16 * MiB, 3);
  ck_assert_int_eq(weft_conn_send(a, big, 16 * MiB), WEFT_EPIPE);
  ck_assert_int_eq(finish_process(p, LONG), 0);
  ck_assert_int_eq(weft_conn_send(a, big, 10), WEFT_EPIPE);
  free(big);
  weft_conn_close(a);
}
END_TEST

/* ---- fileno ---- */

START_TEST(fileno_in_poll_and_epoll) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  int fd = weft_conn_fileno(a);
  ck_assert_int_ge(fd, 0);
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  ck_assert_int_eq(poll(&pfd, 1, 0), 0);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ck_assert_int_ge(ep, 0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
  ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
  struct epoll_event out[2];
  ck_assert_int_eq(epoll_wait(ep, out, 2, 0), 0);

  send_ok(b, "m1", 2);
  send_ok(b, "m2", 2);
  ck_assert_int_eq(poll(&pfd, 1, (int)(LONG * 1000)), 1);
  ck_assert(pfd.revents & POLLIN);
  ck_assert_int_eq(epoll_wait(ep, out, 2, (int)(LONG * 1000)), 1);
  ck_assert_uint_eq(out[0].data.u64, 42);
  char buf[8];
  size_t len = 0;
  ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, 0), 0);
  /* Readable exactly while a message is pending: weft reads nothing ahead. */
  ck_assert_int_eq(epoll_wait(ep, out, 2, 0), 1);
  ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, 0), 0);
  ck_assert(len == 2 && memcmp(buf, "m2", 2) == 0);
  ck_assert_int_eq(epoll_wait(ep, out, 2, 0), 0);
  pfd.revents = 0;
  ck_assert_int_eq(poll(&pfd, 1, 0), 0);
  /* End of file is readable too. */
  weft_conn_close(b);
  ck_assert_int_eq(epoll_wait(ep, out, 2, (int)(LONG * 1000)), 1);
  ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, 0), WEFT_EEOF);
  close(ep);
  weft_conn_close(a);
  ck_assert_int_eq(weft_conn_fileno(NULL), WEFT_EINVAL);
  ck_assert(starts_with(weft_last_error(), "weft_conn_fileno: "));
}
END_TEST

/* ---- arguments ---- */

START_TEST(invalid_arguments) {
  weft_conn *a = (weft_conn *)&a, *b = (weft_conn *)&b;
  ck_assert_int_eq(weft_pipe(NULL, &b), WEFT_EINVAL);
  ck_assert_ptr_null(b);
  ck_assert(starts_with(weft_last_error(), "weft_pipe: "));
  ck_assert_int_eq(weft_pipe(&a, NULL, .one_way = true), WEFT_EINVAL);
  ck_assert_ptr_null(a);
  ck_assert_int_eq(weft_pipe_opts(&a, &b, NULL), 0); /* NULL options: the defaults */
  send_ok(a, "ok", 2);

  char buf[8] = "";
  size_t len = 7;
  ck_assert_int_eq(weft_conn_send(NULL, "x", 1), WEFT_EINVAL);
  ck_assert(starts_with(weft_last_error(), "weft_conn_send: "));
  ck_assert_int_eq(weft_conn_send(a, NULL, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_conn_send(a, buf, WEFT_MSG_MAX + 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_conn_send(a, buf, (size_t)-1), WEFT_EINVAL);
  int negative = -5;
  ck_assert_int_eq(weft_conn_send(a, buf, (size_t)negative), WEFT_EINVAL);
  ck_assert_int_eq(weft_conn_recv(NULL, buf, sizeof buf, &len, 0), WEFT_EINVAL);
  ck_assert(starts_with(weft_last_error(), "weft_conn_recv: "));
  ck_assert_int_eq(weft_conn_recv(b, NULL, 5, &len, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, NULL, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, NAN), WEFT_EINVAL);
  ck_assert_str_eq(weft_last_error(), "weft_conn_recv: timeout is NaN");
  ck_assert_int_eq(weft_conn_poll(NULL, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_conn_poll(b, NAN), WEFT_EINVAL);
  ck_assert_str_eq(weft_last_error(), "weft_conn_poll: timeout is NaN");
  ck_assert_int_eq(weft_conn_close(NULL), 0);

  /* None of the refused calls sent or consumed anything. */
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, LONG), 0);
  ck_assert(len == 2 && memcmp(buf, "ok", 2) == 0);
  ck_assert_int_eq(weft_conn_poll(b, 0), 0);
  /* A huge timeout is forever, not an overflow. */
  send_ok(a, "t", 1);
  ck_assert_int_eq(weft_conn_recv(b, buf, sizeof buf, &len, 1e300), 0);
  ck_assert_int_eq(weft_conn_poll(b, 1e-12), 0);
  weft_conn_close(a);
  weft_conn_close(b);
}
END_TEST

/* ---- resources ---- */

START_TEST(no_fd_leaks) {
  int before = count_fds();
  char buf[64];
  size_t len = 0;
  for (int i = 0; i < 2000 / SLOW; i++) {
    weft_conn *a, *b;
    make_pipe(&a, &b, i % 2 == 1);
    /* a few error paths on the way */
    ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, 0), WEFT_ETIMEDOUT);
    send_ok(b, buf, sizeof buf);
    ck_assert_int_eq(weft_conn_recv(a, buf, 1, &len, 0), WEFT_EMSGSIZE);
    if (i % 2 == 1) ck_assert_int_eq(weft_conn_send(a, buf, 1), WEFT_EPERM);
    if (i % 3 == 0) {
      weft_conn_close(a);
      ck_assert_int_eq(weft_conn_send(b, buf, 1), WEFT_EPIPE);
      weft_conn_close(b);
    } else {
      weft_conn_close(b);
      ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, 0), 0);
      ck_assert_int_eq(weft_conn_recv(a, buf, sizeof buf, &len, 0), WEFT_EEOF);
      weft_conn_close(a);
    }
  }
  ck_assert_int_eq(count_fds(), before);
}
END_TEST

/* Closing an end with half a message kept in it frees it (LeakSanitizer
 * checks under ASan) and closes its fd. */
START_TEST(close_with_a_partial_message_kept) {
  int before = count_fds();
  for (int i = 0; i < 20; i++) {
    weft_conn *a, *b;
    make_pipe(&a, &b, false);
    struct ends e = {.mine = b, .size = MiB, .seed = (uint64_t)i};
    pthread_t t = spawn(send_one_big, &e);
    char *buf = xmalloc(e.size);
    size_t len = 0;
    ck_assert_int_eq(weft_conn_poll(a, LONG), 1);
    int err = weft_conn_recv(a, buf, e.size, &len, 0);
    ck_assert(err == 0 || err == WEFT_ETIMEDOUT);
    weft_conn_close(a); /* the sender, if still blocked, gets EPIPE */
    void *sent = NULL;
    ck_assert_int_eq(pthread_join(t, &sent), 0);
    ck_assert((intptr_t)sent == 0 || (intptr_t)sent == WEFT_EPIPE);
    weft_conn_close(b);
    free(buf);
  }
  ck_assert_int_eq(count_fds(), before);
}
END_TEST

START_TEST(too_many_open_files) {
  int before = count_fds();
  struct rlimit old;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  struct rlimit low = old;
  low.rlim_cur = (rlim_t)before + 64;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  int fillers[200], n = 0;
  while (n < 200 && (fillers[n] = dup(2)) >= 0) n++;
  ck_assert_int_lt(n, 200);
  weft_conn *a = (weft_conn *)&a, *b = (weft_conn *)&b;
  ck_assert_int_eq(weft_pipe(&a, &b), WEFT_EMFILE);
  ck_assert_ptr_null(a);
  ck_assert_ptr_null(b);
  ck_assert(starts_with(weft_last_error(), "weft_pipe: "));
  /* One free slot is not enough for a pair: nothing is half made. */
  close(fillers[--n]);
  ck_assert_int_eq(weft_pipe(&a, &b, .one_way = true), WEFT_EMFILE);
  ck_assert_ptr_null(a);
  while (n > 0) close(fillers[--n]);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  ck_assert_int_eq(count_fds(), before);
  make_pipe(&a, &b, false);
  weft_conn_close(a);
  weft_conn_close(b);
}
END_TEST

/* ---- threads ---- */

static void *echo_thread(void *arg) {
  struct ends *e = arg;
  char buf[256];
  intptr_t bad = 0;
  for (int i = 0; i < e->count; i++) {
    size_t len = 0;
    if (weft_conn_recv(e->mine, buf, sizeof buf, &len, LONG) != 0 ||
        weft_conn_send(e->mine, buf, len) != 0)
      bad++;
  }
  return (void *)bad;
}

START_TEST(ping_pong_between_threads) {
  weft_conn *a, *b;
  make_pipe(&a, &b, false);
  struct ends e = {.mine = b, .count = 20000 / SLOW};
  pthread_t t = spawn(echo_thread, &e);
  char out[256], in[256];
  int bad = 0;
  for (int i = 0; i < e.count; i++) {
    size_t n = (size_t)i % sizeof out, len = 0;
    fill(out, n, (uint64_t)i);
    if (weft_conn_send(a, out, n) != 0 || weft_conn_recv(a, in, sizeof in, &len, LONG) != 0 ||
        len != n || !same(in, len, (uint64_t)i))
      bad++;
  }
  void *tbad = NULL;
  ck_assert_int_eq(pthread_join(t, &tbad), 0);
  ck_assert_int_eq(bad, 0);
  ck_assert_ptr_null(tbad);
  weft_conn_close(a);
  weft_conn_close(b);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("pipe");

  TCase *tc = weft_tcase("basics", 30);
  tcase_add_test(tc, duplex_round_trip_both_ways);
  tcase_add_test(tc, one_way_refuses_the_wrong_direction);
  tcase_add_test(tc, one_way_reader_sees_eof);
  tcase_add_test(tc, empty_messages_keep_their_place);
  tcase_add_test(tc, emsgsize_leaves_the_message);
  tcase_add_test(tc, timeouts_consume_nothing);
  tcase_add_test(tc, invalid_arguments);
  tcase_add_test(tc, fileno_in_poll_and_epoll);
  suite_add_tcase(s, tc);

  tc = weft_tcase("transfer", 60);
  tcase_add_test(tc, many_messages_in_order_between_processes);
  tcase_add_test(tc, large_messages_between_processes);
  tcase_add_test(tc, ping_pong_between_threads);
  tcase_add_test(tc, tiny_timeouts_complete_a_large_message);
  tcase_add_test(tc, partial_message_survives_timeouts_and_cancellation);
  tcase_add_test(tc, cancelled_send_never_leaves_half_a_message);
  suite_add_tcase(s, tc);

  tc = weft_tcase("closing", 30);
  tcase_add_test(tc, eof_after_the_remaining_messages);
  tcase_add_test(tc, blocked_recv_wakes_at_eof);
  tcase_add_test(tc, peer_killed_mid_send_gives_eof);
  tcase_add_test(tc, send_to_a_closed_peer_is_epipe_not_sigpipe);
  tcase_add_test(tc, no_fd_leaks);
  tcase_add_test(tc, close_with_a_partial_message_kept);
  tcase_add_test(tc, too_many_open_files);
  suite_add_tcase(s, tc);

  return s;
}
