/* SPDX-License-Identifier: MIT */
/* The raw C peers of the benchmark rows, in a program that does not link or
 * load weft: `weft_bench_c ROW ITERS` warms up, runs the row ITERS times
 * and prints nanoseconds per op. */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* process_start_join: fork a child that exits at once, and waitpid it. */
static void fork_waitpid(long iters) {
  for (long i = 0; i < iters; i++) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid < 0 || waitpid(pid, NULL, 0) != pid) {
      perror("weft_bench_c: fork");
      exit(1);
    }
  }
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* process_start_join_500: fork_waitpid with 500 idle children alive. They
 * are started by the first (warm-up) run and wait for EOF on a pipe whose
 * write end only this program keeps, so they end with it. */
#define IDLE_CHILDREN 500
static pid_t idle_pids[IDLE_CHILDREN];
static int idle_write_fd = -1;

static void stop_idle_children(void) {
  close(idle_write_fd);
  for (int i = 0; i < IDLE_CHILDREN; i++) waitpid(idle_pids[i], NULL, 0);
}

static void fork_waitpid_500(long iters) {
  if (idle_write_fd < 0) {
    int fd[2];
    if (pipe(fd) != 0) die("pipe");
    idle_write_fd = fd[1];
    for (int i = 0; i < IDLE_CHILDREN; i++) {
      pid_t pid = fork();
      if (pid < 0) die("fork");
      if (pid == 0) {
        char c;
        close(fd[1]);
        _exit(read(fd[0], &c, 1) == 0 ? 0 : 1);
      }
      idle_pids[i] = pid;
    }
    close(fd[0]);
    atexit(stop_idle_children);
  }
  fork_waitpid(iters);
}

/* thread_start_join: pthread_create + pthread_join. */
static void *return_arg(void *arg) { return arg; }

static void create_join(long iters) {
  for (long i = 0; i < iters; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, return_arg, NULL) != 0) die("pthread_create");
    pthread_join(t, NULL);
  }
}

/* lock_uncontended: lock/unlock pairs while a second thread is alive, or
 * glibc would skip the atomic instructions (docs/design.md, Traps). */
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static sem_t idle_stop;

static void *idle(void *arg) {
  (void)arg;
  sem_wait(&idle_stop);
  return NULL;
}

static void lock_pairs(long iters) {
  sem_init(&idle_stop, 0, 0);
  pthread_t t;
  pthread_create(&t, NULL, idle, NULL);
  for (long i = 0; i < iters; i++) {
    pthread_mutex_lock(&mutex);
    pthread_mutex_unlock(&mutex);
  }
  sem_post(&idle_stop);
  pthread_join(t, NULL);
}

/* lock_contended_2t: two threads, each lock/increment/unlock iters/2 times. */
struct counted {
  long iters, value;
};

static void *add_locked(void *arg) {
  struct counted *c = arg;
  for (long i = 0; i < c->iters; i++) {
    pthread_mutex_lock(&mutex);
    c->value++;
    pthread_mutex_unlock(&mutex);
  }
  return NULL;
}

static void contended(long iters) {
  struct counted c = {iters / 2, 0};
  pthread_t a, b;
  pthread_create(&a, NULL, add_locked, &c);
  pthread_create(&b, NULL, add_locked, &c);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  if (c.value != 2 * (iters / 2)) die("lost updates");
}

/* cond_pingpong: a turn variable under a mutex and one condition variable. */
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int turn;
static long rounds;

static void *cond_partner(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mutex);
  for (long i = 0; i < rounds; i++) {
    while (turn != 1) pthread_cond_wait(&cond, &mutex);
    turn = 0;
    pthread_cond_signal(&cond);
  }
  pthread_mutex_unlock(&mutex);
  return NULL;
}

static void cond_rounds(long iters) {
  rounds = iters;
  turn = 0;
  pthread_t t;
  pthread_create(&t, NULL, cond_partner, NULL);
  pthread_mutex_lock(&mutex);
  for (long i = 0; i < iters; i++) {
    turn = 1;
    pthread_cond_signal(&cond);
    while (turn != 0) pthread_cond_wait(&cond, &mutex);
  }
  pthread_mutex_unlock(&mutex);
  pthread_join(t, NULL);
}

/* sem_pingpong: two POSIX semaphores. */
static sem_t ping, pong;

static void *sem_partner(void *arg) {
  (void)arg;
  for (long i = 0; i < rounds; i++) {
    sem_wait(&ping);
    sem_post(&pong);
  }
  return NULL;
}

static void sem_rounds(long iters) {
  rounds = iters;
  sem_init(&ping, 0, 0);
  sem_init(&pong, 0, 0);
  pthread_t t;
  pthread_create(&t, NULL, sem_partner, NULL);
  for (long i = 0; i < iters; i++) {
    sem_post(&ping);
    sem_wait(&pong);
  }
  pthread_join(t, NULL);
}

/* event_pingpong: an event is a flag under a mutex with a condition
 * variable (what Python's threading.Event is built from). */
struct event {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int flag;
};
static struct event e_ping = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0},
                    e_pong = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void event_set(struct event *e) {
  pthread_mutex_lock(&e->mu);
  e->flag = 1;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

static void event_wait_clear(struct event *e) {
  pthread_mutex_lock(&e->mu);
  while (!e->flag) pthread_cond_wait(&e->cv, &e->mu);
  e->flag = 0;
  pthread_mutex_unlock(&e->mu);
}

static void *event_partner(void *arg) {
  (void)arg;
  for (long i = 0; i < rounds; i++) {
    event_wait_clear(&e_ping);
    event_set(&e_pong);
  }
  return NULL;
}

static void event_rounds(long iters) {
  rounds = iters;
  pthread_t t;
  pthread_create(&t, NULL, event_partner, NULL);
  for (long i = 0; i < iters; i++) {
    event_set(&e_ping);
    event_wait_clear(&e_pong);
  }
  pthread_join(t, NULL);
}

/* lock_pingpong_processes: two process-shared mutexes handed back and forth
 * as weft's row does; glibc's default mutex type lets another process
 * unlock it. */
static void lock_process_rounds(long iters) {
  pthread_mutex_t *m = mmap(NULL, 2 * sizeof *m, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) die("mmap");
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&m[0], &attr);
  pthread_mutex_init(&m[1], &attr);
  pthread_mutex_lock(&m[0]);
  pthread_mutex_lock(&m[1]);
  pid_t pid = fork();
  if (pid == 0) {
    for (long i = 0; i < iters; i++) {
      pthread_mutex_lock(&m[0]);
      pthread_mutex_unlock(&m[1]);
    }
    _exit(0);
  }
  for (long i = 0; i < iters; i++) {
    pthread_mutex_unlock(&m[0]);
    pthread_mutex_lock(&m[1]);
  }
  waitpid(pid, NULL, 0);
  munmap(m, 2 * sizeof *m);
}

/* queue_threads: the textbook bounded ring under a mutex with two condition
 * variables, one producer thread and one consumer, as weft's row. */
#define RING 1024
static struct {
  pthread_mutex_t m;
  pthread_cond_t not_empty, not_full;
  void *items[RING];
  size_t head, count;
} ring = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0};

static void ring_put(void *item) {
  pthread_mutex_lock(&ring.m);
  while (ring.count == RING) pthread_cond_wait(&ring.not_full, &ring.m);
  ring.items[(ring.head + ring.count) % RING] = item;
  ring.count++;
  pthread_cond_signal(&ring.not_empty);
  pthread_mutex_unlock(&ring.m);
}

static void *ring_get(void) {
  pthread_mutex_lock(&ring.m);
  while (ring.count == 0) pthread_cond_wait(&ring.not_empty, &ring.m);
  void *item = ring.items[ring.head];
  ring.head = (ring.head + 1) % RING;
  ring.count--;
  pthread_cond_signal(&ring.not_full);
  pthread_mutex_unlock(&ring.m);
  return item;
}

static void *ring_producer(void *arg) {
  long n = *(long *)arg;
  for (long i = 1; i <= n; i++) ring_put((void *)i);
  return NULL;
}

static void ring_rounds(long iters) {
  pthread_t t;
  if (pthread_create(&t, NULL, ring_producer, &iters) != 0) die("pthread_create");
  long sum = 0;
  for (long i = 0; i < iters; i++) sum += (long)ring_get();
  pthread_join(t, NULL);
  if (sum != iters * (iters + 1) / 2) die("ring lost items");
}

/* queue_processes: an 8-byte message per write(2) and read(2) on a pipe. */
static void pipe_rounds(long iters) {
  int fd[2];
  if (pipe(fd) != 0) die("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    for (long i = 0; i < iters; i++)
      if (write(fd[1], &i, sizeof i) != sizeof i) _exit(1);
    _exit(0);
  }
  close(fd[1]);
  for (long i = 0; i < iters; i++) {
    long v;
    if (read(fd[0], &v, sizeof v) != sizeof v || v != i) die("pipe read");
  }
  close(fd[0]);
  waitpid(pid, NULL, 0);
}

/* queue_processes_sizes: messages of `size` bytes through a pipe from a
 * child to the parent, each written whole and read whole (a loop of write(2)
 * and read(2) calls, as many as the pipe needs). */
static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k <= 0) _exit(1);
    p += k;
    n -= (size_t)k;
  }
}

static void read_all(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t k = read(fd, p, n);
    if (k <= 0) die("pipe read");
    p += k;
    n -= (size_t)k;
  }
}

static void pipe_sized(long iters, size_t size) {
  int fd[2];
  char *buf = calloc(1, size);
  if (buf == NULL || pipe(fd) != 0) die("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    for (long i = 0; i < iters; i++) {
      memcpy(buf, &i, sizeof i);
      write_all(fd[1], buf, size);
    }
    _exit(0);
  }
  close(fd[1]);
  for (long i = 0; i < iters; i++) {
    long v;
    read_all(fd[0], buf, size);
    memcpy(&v, buf, sizeof v);
    if (v != i) die("pipe message out of order");
  }
  close(fd[0]);
  waitpid(pid, NULL, 0);
  free(buf);
}

static void pipe_8(long iters) { pipe_sized(iters, 8); }
static void pipe_512(long iters) { pipe_sized(iters, 512); }
static void pipe_4096(long iters) { pipe_sized(iters, 4096); }
static void pipe_65536(long iters) { pipe_sized(iters, 65536); }
static void pipe_1048576(long iters) { pipe_sized(iters, 1048576); }

static const struct {
  const char *row;
  void (*run)(long iters);
} rows[] = {
    {"process_start_join", fork_waitpid},
    {"process_start_join_500", fork_waitpid_500},
    {"thread_start_join", create_join},
    {"lock_uncontended", lock_pairs},
    {"lock_contended_2t", contended},
    {"cond_pingpong", cond_rounds},
    {"sem_pingpong", sem_rounds},
    {"event_pingpong", event_rounds},
    {"lock_pingpong_processes", lock_process_rounds},
    {"queue_threads", ring_rounds},
    {"queue_processes", pipe_rounds},
    {"pipe_8", pipe_8},
    {"pipe_512", pipe_512},
    {"pipe_4096", pipe_4096},
    {"pipe_65536", pipe_65536},
    {"pipe_1048576", pipe_1048576},
};

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s ROW ITERS\n", argv[0]);
    return 2;
  }
  long iters = atol(argv[2]);
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    if (strcmp(rows[i].row, argv[1]) != 0) continue;
    rows[i].run(iters / 10 + 1);
    double t0 = now_ns();
    rows[i].run(iters);
    printf("%.1f\n", (now_ns() - t0) / (double)iters);
    return 0;
  }
  fprintf(stderr, "weft_bench_c: unknown row %s\n", argv[1]);
  return 2;
}
