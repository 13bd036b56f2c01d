/* SPDX-License-Identifier: MIT */
/* Lesson 7 (beyond the tutorial): the same process pool on one machine or on
 * MPI ranks. It counts the primes below 2,000,000 in 64 ranges with
 * weft_pool_map, exactly as lesson 6 does on a local pool. The only
 * difference is the first line of main: started as ./lesson7_cluster the
 * pool is local worker processes; started as
 *
 *     mpiexec -n 5 ./lesson7_cluster
 *
 * rank 0 runs main and the pool's tasks run on ranks 1-4 (on as many
 * machines as the hostfile names). The counts are the same either way.
 * Python: mpiexec -n 5 python -m mpi4py.futures lesson7.py with an
 * MPIPoolExecutor in place of the Pool. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <weft.h>
#include <weft/mpi.h>

#define LIMIT 2000000
#define RANGES 64

struct range {
  int64_t lo, hi;
};

static int64_t count_primes(int64_t lo, int64_t hi) {
  int64_t count = 0;
  for (int64_t n = lo < 2 ? 2 : lo; n < hi; n++) {
    int prime = 1;
    for (int64_t d = 2; d * d <= n; d++)
      if (n % d == 0) {
        prime = 0;
        break;
      }
    count += prime;
  }
  return count;
}

/* The task: a range in, its count out. On MPI it runs on another rank,
 * maybe another machine: it gets bytes and gives bytes, nothing else. */
static int count_task(const void *arg, size_t len, void *result, size_t *result_len) {
  struct range r;
  if (len != sizeof r) return 1;
  memcpy(&r, arg, sizeof r);
  int64_t count = count_primes(r.lo, r.hi);
  memcpy(result, &count, sizeof count);
  *result_len = sizeof count;
  return 0;
}

int main(int argc, char **argv) {
  if (weft_mpi_init(&argc, &argv) != 0) { /* ranks other than 0 never return */
    fprintf(stderr, "weft_mpi_init: %s\n", weft_last_error());
    return 1;
  }
  struct range ranges[RANGES];
  for (int i = 0; i < RANGES; i++)
    ranges[i] = (struct range){(int64_t)LIMIT * i / RANGES, (int64_t)LIMIT * (i + 1) / RANGES};
  int64_t counts[RANGES];
  double t0 = weft_monotonic();
  weft_pool pool = weft_process_pool_new();
  if (pool.id == 0 ||
      weft_pool_map(pool, count_task, ranges, sizeof ranges[0], RANGES, counts, sizeof counts[0],
                    .chunksize = 1) != 0) {
    fprintf(stderr, "map: %s\n", weft_last_error());
    return 1;
  }
  weft_pool_close(pool);
  weft_pool_join(pool, WEFT_FOREVER);
  weft_pool_free(pool);
  double s = weft_monotonic() - t0;
  int64_t total = 0;
  for (int i = 0; i < RANGES; i++) total += counts[i];
  if (weft_mpi_active())
    printf("on %d MPI ranks:           %lld primes below %d, in %.2f s\n", weft_mpi_size() - 1,
           (long long)total, LIMIT, s);
  else
    printf("on %d local worker processes: %lld primes below %d, in %.2f s\n", weft_cpu_count(),
           (long long)total, LIMIT, s);
  return total == 148933 ? 0 : 1; /* pi(2,000,000) */
}
