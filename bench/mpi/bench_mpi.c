/* SPDX-License-Identifier: MIT */
/* The MPI rows' own program, run by weft_bench under mpiexec:
 *   bench_mpi submit ITERS REPS   apply_async + result of ITERS tasks passing
 *                                 an 8-byte integer, all submitted first, on
 *                                 a pool of every rank but 0
 *   bench_mpi map ITERS REPS      weft_pool_map of x*x over ITERS int64 with
 *                                 the default chunk size
 *   bench_mpi c ITERS REPS        the floor: a raw MPI round trip of 8 bytes
 *                                 between ranks 0 and 1 (MPI_Send/MPI_Recv)
 * Rank 0 prints the median ns per task, item or round trip. */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <weft.h>
#include <weft/mpi.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void die(const char *what) {
  fprintf(stderr, "bench_mpi %s: %s\n", what, weft_last_error());
  exit(1);
}

static int copy_task(const void *arg, size_t len, void *result, size_t *result_len) {
  memcpy(result, arg, len);
  *result_len = len;
  return 0;
}

static int square_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int64_t x;
  if (len != sizeof x) return 1;
  memcpy(&x, arg, sizeof x);
  x *= x;
  memcpy(result, &x, sizeof x);
  *result_len = sizeof x;
  return 0;
}

static double submit_sample(weft_pool pool, long iters) {
  weft_future *fs = malloc((size_t)iters * sizeof *fs);
  if (fs == NULL) die("submit");
  double t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    int64_t v = i + 1;
    fs[i] = weft_pool_apply_async(pool, copy_task, &v, sizeof v);
    if (fs[i].id == 0) die("apply_async");
  }
  for (long i = 0; i < iters; i++) {
    const void *data;
    size_t len;
    if (weft_future_result_bytes(fs[i], WEFT_FOREVER, &data, &len) != 0) die("result");
    int64_t v;
    memcpy(&v, data, sizeof v);
    if (len != sizeof v || v != i + 1) die("a wrong result");
    weft_future_close(fs[i]);
  }
  double ns = (now_ns() - t0) / (double)iters;
  free(fs);
  return ns;
}

static double map_sample(weft_pool pool, long iters) {
  int64_t *in = malloc((size_t)iters * sizeof *in), *out = malloc((size_t)iters * sizeof *out);
  if (in == NULL || out == NULL) die("map");
  for (long i = 0; i < iters; i++) in[i] = i;
  double t0 = now_ns();
  if (weft_pool_map(pool, square_task, in, sizeof *in, (size_t)iters, out, sizeof *out) != 0)
    die("map");
  double ns = (now_ns() - t0) / (double)iters;
  for (long i = 0; i < iters; i++)
    if (out[i] != (int64_t)i * i) die("a wrong map result");
  free(in);
  free(out);
  return ns;
}

/* Raw MPI: rank 1 echoes rank 0's 8 bytes. */
static double c_sample(long iters) {
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int64_t v = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    if (rank == 0) {
      v = i;
      MPI_Send(&v, 8, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
      MPI_Recv(&v, 8, MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else if (rank == 1) {
      MPI_Recv(&v, 8, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(&v, 8, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
    }
  }
  return (now_ns() - t0) / (double)iters;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: mpiexec -n N %s submit|map|c ITERS REPS\n", argv[0]);
    return 2;
  }
  const char *mode = argv[1];
  long iters = atol(argv[2]);
  int reps = atoi(argv[3]);
  if (iters < 1 || reps < 1 || reps > 99) return 2;
  double v[99];
  if (strcmp(mode, "c") == 0) {
    MPI_Init(&argc, &argv);
    c_sample(iters / 10 + 1);
    for (int r = 0; r < reps; r++) v[r] = c_sample(iters);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    qsort(v, (size_t)reps, sizeof v[0], cmp);
    if (rank == 0) printf("%.1f\n", v[reps / 2]);
    MPI_Finalize();
    return 0;
  }
  if (weft_mpi_init(&argc, &argv) != 0 || !weft_mpi_active()) {
    fprintf(stderr, "bench_mpi: not on MPI ranks: %s\n", weft_last_error());
    return 1;
  }
  weft_pool pool = weft_process_pool_new();
  if (pool.id == 0) die("pool");
  bool map = strcmp(mode, "map") == 0;
  if (map)
    map_sample(pool, iters / 10 + 1);
  else
    submit_sample(pool, iters / 10 + 1);
  for (int r = 0; r < reps; r++) v[r] = map ? map_sample(pool, iters) : submit_sample(pool, iters);
  qsort(v, (size_t)reps, sizeof v[0], cmp);
  printf("%.1f\n", v[reps / 2]);
  weft_pool_close(pool);
  weft_pool_join(pool, WEFT_FOREVER);
  weft_pool_free(pool);
  return 0;
}
