/* The raw C peers of the benchmark rows, in a program that does not link or
 * load weft: `weft_bench_c ROW ITERS` warms up, runs the row ITERS times
 * and prints nanoseconds per op. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static const struct {
  const char *row;
  void (*run)(long iters);
} rows[] = {
    {"process_start_join", fork_waitpid},
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
