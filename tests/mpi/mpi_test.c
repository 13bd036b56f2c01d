/* SPDX-License-Identifier: MIT */
/* Tests of the MPI backend (weft/mpi.h), run by tests/mpi.sh under mpiexec:
 * rank 0 runs the checks while the other ranks serve its pools. Not a
 * Check suite: Check runs each test in a forked child, and a fork of an MPI
 * process must not use MPI. Each check prints a line on failure; the end
 * prints "mpi_<mode>: N passed, N failed" as the Check suites do.
 *
 * Modes (argv[1]):
 *   pools     the pool API on MPI ranks (the default)
 *   local     started without mpiexec: pools stay local, MPI pools refused
 *   crash     a task that crashes its rank: the job must end, naming it
 *   inflight  main returns with tasks on the ranks: the job must end
 *   hold      ranks run long tasks (a rank is then killed from outside:
 *             the job must end)
 *   own-mpi   the program initialises MPI itself (MPI_THREAD_MULTIPLE) and
 *             uses MPI_COMM_WORLD beside weft's pools
 *   low-mpi   the program initialises MPI without MPI_THREAD_MULTIPLE:
 *             weft_mpi_init refuses it */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <weft.h>
#include <weft/mpi.h>
#include <mpi.h>

static int passed, failed;
static const char *current = "";

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (cond) {                                                                        \
      passed++;                                                                        \
    } else {                                                                           \
      failed++;                                                                        \
      fprintf(stderr, "%s:%d:F:%s: %s (last error: %s)\n", __FILE__, __LINE__, current, \
              #cond, weft_last_error());                                               \
    }                                                                                  \
  } while (0)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- tasks ---- */

static int square(const void *arg, size_t len, void *result, size_t *result_len) {
  if (len != sizeof(int64_t)) return 1;
  int64_t x;
  memcpy(&x, arg, sizeof x);
  x *= x;
  memcpy(result, &x, sizeof x);
  *result_len = sizeof x;
  return 0;
}

/* The rank (pid and rank) that ran it. */
static int whoami(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  (void)len;
  int32_t who[2] = {weft_mpi_rank(), (int32_t)getpid()};
  memcpy(result, who, sizeof who);
  *result_len = sizeof who;
  return 0;
}

static int fails(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  (void)len;
  (void)result;
  (void)result_len;
  return weft_task_fail(7, "no good on rank %d", weft_mpi_rank());
}

static int sleeps(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)result;
  *result_len = 0;
  double s = 0;
  if (len == sizeof s) memcpy(&s, arg, sizeof s);
  struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
  return 0;
}

static int crashes(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  (void)len;
  (void)result;
  (void)result_len;
  abort();
}

/* Repeats its argument's bytes reversed: a variable-length result. */
static int reverse(const void *arg, size_t len, void *result, size_t *result_len) {
  const char *in = arg;
  char *out = result;
  for (size_t i = 0; i < len; i++) out[i] = in[len - 1 - i];
  *result_len = len;
  return 0;
}

static int64_t init_mark; /* set by the initializer, in each rank */
static int mark_rank(void *arg) {
  (void)arg;
  init_mark = 1000 + weft_mpi_rank();
  return 0;
}

static int read_mark(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg;
  (void)len;
  memcpy(result, &init_mark, sizeof init_mark);
  *result_len = sizeof init_mark;
  return 0;
}

/* An imap's source: the items 0..n-1 of an array. */
struct source {
  const int64_t *items;
  size_t n, next;
};
static bool next_item(void *item, void *arg) {
  struct source *src = arg;
  if (src->next == src->n) return false;
  memcpy(item, &src->items[src->next++], sizeof(int64_t));
  return true;
}

static int count_calls;
static void on_done(weft_future f, void *arg) {
  (void)f;
  (void)arg;
  __atomic_add_fetch(&count_calls, 1, __ATOMIC_RELAXED);
}

static int progress_calls;
static void on_progress(size_t done, size_t total, double elapsed, void *arg) {
  (void)done;
  (void)total;
  (void)elapsed;
  (void)arg;
  progress_calls++;
}

/* ---- checks ---- */

static void apply_async_and_ranks(void) {
  current = "apply_async_and_ranks";
  if (getenv("WEFT_MPI_TEST_VERBOSE") != NULL) fprintf(stderr, "== %s\n", current);
  weft_pool pool = weft_process_pool_new();
  CHECK(pool.id != 0);
  enum { N = 2000 };
  static weft_future fs[N];
  for (int64_t i = 0; i < N; i++) fs[i] = weft_pool_apply_async(pool, square, &i, sizeof i);
  bool all = true;
  for (int64_t i = 0; i < N; i++) {
    const void *data;
    size_t len;
    int64_t v = -1;
    if (weft_future_result_bytes(fs[i], 60, &data, &len) != 0 || len != sizeof v) {
      all = false;
    } else {
      memcpy(&v, data, sizeof v);
      all &= v == i * i;
    }
    weft_future_close(fs[i]);
  }
  CHECK(all);
  /* Every worker rank takes tasks, none of them rank 0. */
  int seen[64] = {0};
  for (int i = 0; i < 200; i++) fs[i] = weft_pool_apply_async(pool, whoami, NULL, 0);
  for (int i = 0; i < 200; i++) {
    const void *data;
    size_t len;
    int32_t who[2] = {-1, 0};
    if (weft_future_result_bytes(fs[i], 60, &data, &len) == 0 && len == sizeof who)
      memcpy(who, data, sizeof who);
    if (who[0] >= 0 && who[0] < 64) seen[who[0]]++;
    weft_future_close(fs[i]);
  }
  CHECK(seen[0] == 0);
  if (getenv("WEFT_MPI_TEST_VERBOSE") != NULL)
    for (int r = 0; r < 8; r++) fprintf(stderr, "rank %d ran %d\n", r, seen[r]);
  int ranks = 0;
  for (int r = 1; r < 64; r++) ranks += seen[r] > 0;
  CHECK(ranks == weft_mpi_size() - 1);
  CHECK(weft_pool_close(pool) == 0);
  CHECK(weft_pool_join(pool, 60) == 0);
  CHECK(weft_pool_free(pool) == 0);
}

static void map_same_as_local(void) {
  current = "map_same_as_local";
  if (getenv("WEFT_MPI_TEST_VERBOSE") != NULL) fprintf(stderr, "== %s\n", current);
  enum { N = 100000 };
  int64_t *items = malloc(N * sizeof *items);
  int64_t *on_mpi = malloc(N * sizeof *on_mpi);
  int64_t *on_local = malloc(N * sizeof *on_local);
  for (int64_t i = 0; i < N; i++) items[i] = i - N / 2;
  weft_pool mpi = weft_process_pool_new();
  weft_pool local = weft_process_pool_new(.start_method = "fork");
  progress_calls = 0;
  CHECK(weft_pool_map(mpi, square, items, sizeof(int64_t), N, on_mpi, sizeof(int64_t),
                      .progress = on_progress) == 0);
  CHECK(progress_calls > 0);
  CHECK(weft_pool_map(local, square, items, sizeof(int64_t), N, on_local, sizeof(int64_t)) == 0);
  CHECK(memcmp(on_mpi, on_local, N * sizeof *on_mpi) == 0);
  /* imap, in order and not */
  struct source src = {items, 1000, 0};
  weft_imap *it = weft_pool_imap(mpi, square, next_item, &src, sizeof(int64_t), sizeof(int64_t));
  bool ok = it != NULL;
  for (size_t k = 0; ok && k < 1000; k++) {
    size_t index = 0;
    int64_t v = 0;
    ok = weft_imap_next(it, 60, &index, &v) == 0 && index == k && v == items[k] * items[k];
  }
  CHECK(ok);
  weft_imap_free(it);
  src = (struct source){items, 1000, 0};
  it = weft_pool_imap_unordered(mpi, square, next_item, &src, sizeof(int64_t), sizeof(int64_t));
  int64_t sum = 0, want = 0;
  for (size_t k = 0; k < 1000; k++) want += items[k] * items[k];
  for (size_t k = 0; it != NULL && k < 1000; k++) {
    size_t index = 0;
    int64_t v = 0;
    if (weft_imap_next(it, 60, &index, &v) == 0) sum += v;
  }
  CHECK(it != NULL && sum == want);
  weft_imap_free(it);
  /* Variable-length items and results. */
  const char *words[] = {"alpha", "be", "", "gamma delta", "x"};
  weft_bytes in[5], *out = NULL;
  for (int i = 0; i < 5; i++) in[i] = (weft_bytes){words[i], strlen(words[i])};
  CHECK(weft_pool_map_bytes(mpi, reverse, in, 5, &out) == 0);
  CHECK(out != NULL && out[3].len == 11 && memcmp(out[3].data, "atled ammag", 11) == 0);
  free(out);
  weft_pool_close(mpi);
  weft_pool_close(local);
  CHECK(weft_pool_join(mpi, 60) == 0 && weft_pool_join(local, 60) == 0);
  weft_pool_free(mpi);
  weft_pool_free(local);
  free(items);
  free(on_mpi);
  free(on_local);
}

static void failures_limits_callbacks(void) {
  current = "failures_limits_callbacks";
  if (getenv("WEFT_MPI_TEST_VERBOSE") != NULL) fprintf(stderr, "== %s\n", current);
  weft_pool pool = weft_process_pool_new();
  weft_future f = weft_pool_apply_async(pool, fails, NULL, 0);
  const void *data;
  size_t len;
  CHECK(weft_future_result_bytes(f, 60, &data, &len) == WEFT_ETASKFAILED);
  CHECK(weft_future_task_error(f) == 7);
  CHECK(strstr(weft_future_task_message(f), "no good on rank") != NULL);
  weft_future_close(f);
  /* A time limit fails the task; the pool goes on. */
  double two = 2.0;
  double t0 = now();
  f = weft_pool_apply_async(pool, sleeps, &two, sizeof two, .timeout = 0.2);
  CHECK(weft_future_result_bytes(f, 60, &data, &len) == WEFT_ETASKTIMEOUT);
  CHECK(now() - t0 < 1.5);
  weft_future_close(f);
  int64_t nine = 9;
  f = weft_pool_apply_async(pool, square, &nine, sizeof nine);
  CHECK(weft_future_result_bytes(f, 60, &data, &len) == 0 && *(const int64_t *)data == 81);
  weft_future_close(f);
  /* Callbacks and as_completed. */
  count_calls = 0;
  weft_future many[20];
  for (int64_t i = 0; i < 20; i++) {
    many[i] = weft_pool_apply_async(pool, square, &i, sizeof i, .callback = on_done);
  }
  weft_as_completed *ac = weft_as_completed_new(many, 20);
  int got = 0;
  weft_future g;
  while (ac != NULL && weft_as_completed_next(ac, 60, &g, NULL) == 0) got++;
  CHECK(got == 20);
  weft_as_completed_free(ac);
  double end = now() + 10;
  while (__atomic_load_n(&count_calls, __ATOMIC_RELAXED) < 20 && now() < end) usleep(1000);
  CHECK(__atomic_load_n(&count_calls, __ATOMIC_RELAXED) == 20);
  for (int i = 0; i < 20; i++) weft_future_close(many[i]);
  /* terminate cancels what is pending; later submits are refused. */
  double tenth = 0.1;
  weft_future queued[40];
  for (int i = 0; i < 40; i++) queued[i] = weft_pool_apply_async(pool, sleeps, &tenth, sizeof tenth);
  CHECK(weft_pool_terminate(pool) == 0);
  int cancelled = 0;
  for (int i = 0; i < 40; i++) {
    int r = weft_future_result_bytes(queued[i], 60, &data, &len);
    cancelled += r == WEFT_ECANCELED;
    weft_future_close(queued[i]);
  }
  CHECK(cancelled > 0);
  f = weft_pool_apply_async(pool, square, &nine, sizeof nine);
  CHECK(f.id == 0 && weft_last_error_code() == WEFT_ECLOSED);
  CHECK(weft_pool_join(pool, 60) == 0);
  weft_pool_free(pool);
}

static void initializer_and_misuse(void) {
  current = "initializer_and_misuse";
  if (getenv("WEFT_MPI_TEST_VERBOSE") != NULL) fprintf(stderr, "== %s\n", current);
  weft_pool pool = weft_process_pool_new(.initializer = mark_rank);
  weft_future f = weft_pool_apply_async(pool, read_mark, NULL, 0);
  const void *data;
  size_t len;
  int64_t mark = 0;
  if (weft_future_result_bytes(f, 60, &data, &len) == 0) memcpy(&mark, data, sizeof mark);
  CHECK(mark > 1000 && mark < 1000 + weft_mpi_size());
  weft_future_close(f);
  weft_pool_close(pool);
  weft_pool_join(pool, 60);
  weft_pool_free(pool);
  int x = 0;
  pool = weft_process_pool_new(.initarg = &x, .initializer = mark_rank);
  CHECK(pool.id == 0 && weft_last_error_code() == WEFT_EINVAL);
  pool = weft_process_pool_new();
  void *heap = malloc(16);
  f = weft_pool_apply_async(pool, (weft_bytes_task)heap, NULL, 0);
  CHECK(f.id == 0 && weft_last_error_code() == WEFT_EINVAL);
  free(heap);
  weft_pool_close(pool);
  weft_pool_join(pool, 60);
  weft_pool_free(pool);
  CHECK(weft_mpi_init(NULL, NULL) == WEFT_EALREADY);
}

static int run_pools(void) {
  if (!weft_mpi_active() || weft_mpi_rank() != 0) {
    fprintf(stderr, "mpi_pools: not on MPI ranks (run it with mpiexec -n 4)\n");
    return 1;
  }
  apply_async_and_ranks();
  map_same_as_local();
  failures_limits_callbacks();
  initializer_and_misuse();
  printf("mpi_pools: %d passed, %d failed\n", passed, failed);
  return failed != 0;
}

static int run_local(void) {
  current = "local";
  CHECK(!weft_mpi_active());
  CHECK(weft_mpi_size() == 1);
  weft_pool pool = weft_mpi_pool_new();
  CHECK(pool.id == 0 && weft_last_error_code() == WEFT_EINVAL);
  CHECK(strstr(weft_last_error(), "mpiexec") != NULL);
  pool = weft_process_pool_new(.workers = 2);
  weft_future f = weft_pool_apply_async(pool, whoami, NULL, 0);
  const void *data;
  size_t len;
  int32_t who[2] = {-1, 0};
  if (weft_future_result_bytes(f, 60, &data, &len) == 0) memcpy(who, data, sizeof who);
  CHECK(who[0] == 0 && who[1] != (int32_t)getpid()); /* a local worker process */
  weft_future_close(f);
  weft_pool_close(pool);
  CHECK(weft_pool_join(pool, 60) == 0);
  weft_pool_free(pool);
  printf("mpi_local: %d passed, %d failed\n", passed, failed);
  return failed != 0;
}

static int run_crash(void) {
  weft_pool pool = weft_process_pool_new();
  weft_future f = weft_pool_apply_async(pool, crashes, NULL, 0);
  const void *data;
  size_t len;
  weft_future_result_bytes(f, 60, &data, &len);
  fprintf(stderr, "mpi_crash: the job survived a crashed rank\n");
  return 0; /* the caller expects the job to end non-zero before this */
}

static int run_inflight(void) {
  weft_pool pool = weft_process_pool_new();
  double s = 0.2;
  for (int i = 0; i < 6; i++) weft_pool_apply_async(pool, sleeps, &s, sizeof s);
  return 0; /* with tasks on the ranks: they finish, the ranks stop, the job ends */
}

static int run_hold(void) {
  weft_pool pool = weft_process_pool_new();
  double s = 60;
  weft_future f[8];
  for (int i = 0; i < 8; i++) f[i] = weft_pool_apply_async(pool, sleeps, &s, sizeof s);
  printf("holding\n");
  fflush(stdout);
  const void *data;
  size_t len;
  weft_future_result_bytes(f[0], 120, &data, &len);
  fprintf(stderr, "mpi_hold: the job survived a killed rank\n");
  return 0;
}

/* Before weft_mpi_init, on every rank: the program's own MPI. */
static int run_own_mpi(int *argc, char ***argv, bool multiple) {
  int provided = 0;
  MPI_Init_thread(argc, argv, multiple ? MPI_THREAD_MULTIPLE : MPI_THREAD_SINGLE, &provided);
  int world_rank = -1, sum = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  int err = weft_mpi_init(argc, argv);
  current = multiple ? "own-mpi" : "low-mpi";
  if (!multiple) {
    CHECK(err == WEFT_EINVAL && strstr(weft_last_error(), "MPI_THREAD_MULTIPLE") != NULL);
    MPI_Finalize();
    printf("mpi_low: %d passed, %d failed\n", passed, failed);
    return failed != 0;
  }
  /* Only rank 0 gets here: the others serve weft's pools. */
  CHECK(err == 0 && world_rank == 0 && weft_mpi_active());
  MPI_Comm self_dup;
  CHECK(MPI_Comm_dup(MPI_COMM_SELF, &self_dup) == MPI_SUCCESS);
  MPI_Allreduce(&world_rank, &sum, 1, MPI_INT, MPI_SUM, self_dup);
  MPI_Comm_free(&self_dup);
  weft_pool pool = weft_process_pool_new();
  int64_t x = 12;
  weft_future f = weft_pool_apply_async(pool, square, &x, sizeof x);
  const void *data;
  size_t len;
  CHECK(weft_future_result_bytes(f, 60, &data, &len) == 0 && *(const int64_t *)data == 144);
  weft_future_close(f);
  printf("mpi_own: %d passed, %d failed\n", passed, failed);
  return failed != 0; /* weft finalises MPI at the end */
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "own-mpi") == 0) return run_own_mpi(&argc, &argv, true);
  if (argc > 1 && strcmp(argv[1], "low-mpi") == 0) return run_own_mpi(&argc, &argv, false);
  if (weft_mpi_init(&argc, &argv) != 0) {
    fprintf(stderr, "weft_mpi_init: %s\n", weft_last_error());
    return 1;
  }
  const char *mode = argc > 1 ? argv[1] : "pools";
  if (strcmp(mode, "local") == 0) return run_local();
  if (strcmp(mode, "crash") == 0) return run_crash();
  if (strcmp(mode, "inflight") == 0) return run_inflight();
  if (strcmp(mode, "hold") == 0) return run_hold();
  return run_pools();
}
