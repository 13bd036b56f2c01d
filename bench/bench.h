/* The benchmark harness. Every row times weft and its peers in the same run,
 * repeats each measurement and keeps the median, prints a readable table and
 * one machine-readable line per row:
 *     bench <row> <impl>=<ns per op> ...
 * Impl names: weft; c (raw libc/pthreads); python (CPython's stdlib, skipped
 * with a note when python3 is missing). */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdbool.h>

typedef struct bench_config {
  bool quick; /* a short run: the smoke check of make test */
  int reps;   /* repetitions per impl; the median is reported */
} bench_config;

/* Times fn(iters, arg) once and returns nanoseconds per iteration. */
typedef void (*bench_fn)(long iters, void *arg);

/* A measured impl of a row: name and nanoseconds per op (< 0: skipped). */
typedef struct bench_result {
  const char *impl;
  double ns;
  char note[160];
} bench_result;

/* Runs the C impls of a row interleaved (A B A B ...) cfg->reps times, so
 * that noise on this shared machine hits all of them alike; stores each
 * impl's median ns/op in results[i].ns. */
void bench_measure(const bench_config *cfg, long iters, int n, const bench_fn *fns, void *arg,
                   bench_result *results);

/* Runs bench/py/<script> with iteration and repetition counts; it prints the
 * median ns/op. Sets r->ns < 0 and a note if python3 or the script fails. */
void bench_python(const char *script, long iters, int reps, bench_result *r);

/* Prints a row: the table (with each impl's ratio to the first) and the
 * machine-readable line. */
void bench_report(const char *row, int n, const bench_result *results);

/* Rows, one function per concept file. */
void bench_process_rows(const bench_config *cfg);

#endif
